//! The management interface on a client (`management` with `client`): the
//! same listener and sessions as a server's ([`crate::management`]), with
//! what 2.6 does on a client: `management-hold` before the first connection
//! and every reconnect, `>PASSWORD:Need 'Auth' ...` for credentials the
//! config does not give (`management-query-passwords`), the client's
//! `>STATE:` sequence, `>BYTECOUNT:IN,OUT`, `status`, `load-stats` and
//! `signal`; `>REMOTE:` / `>PROXY:` before each attempt
//! (`management-query-remote` / `-proxy`), answered by `remote` / `proxy`;
//! `>INFOMSG:` for the server's `INFO`/`INFO_PRE` messages, and
//! `cr-response` sending `CR_RESPONSE,...` back.
//!
//! The client runtime only publishes: every notification goes out with
//! `try_send`, and the queries are answered by a task of their own from
//! the peer table, so a slow management client never stalls a connection.

use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};
use tracing::info;

use super::counts::{self, ClientCounts};
use crate::management::{
    Answer, ClientState, EntryQuery, LoadStats, Management, ManagementSettings, Notice,
    PasswordQuery, Query,
};

/// `cr-response` messages waiting for the connection to send them; more
/// are dropped (a management client has no reason to queue many).
const CONTROL_MESSAGES: usize = 8;

/// What the client runtime needs to know of its management interface.
#[derive(Debug, Clone)]
pub struct ClientManagementSettings {
    pub management: ManagementSettings,
    /// `management-query-passwords`.
    pub query_passwords: bool,
    /// `management-query-remote`: `>REMOTE:` before each attempt.
    pub query_remote: bool,
    /// `management-query-proxy`: `>PROXY:` before each attempt (not asked
    /// with `management-query-remote`, as 2.6).
    pub query_proxy: bool,
}

/// The client's side of the interface.
pub struct ClientManagement {
    mgmt: Management,
    /// `signal SIGTERM`: the client exits.
    exit: Arc<Notify>,
    /// The signal behind the next restart (`SIGUSR1` or `SIGHUP`), for the
    /// `RECONNECTING` state.
    restart_signal: Arc<Mutex<Option<&'static str>>>,
    query_remote: bool,
    query_proxy: bool,
    /// `cr-response`: control-channel messages for the connection.
    control_messages: tokio::sync::Mutex<mpsc::Receiver<String>>,
}

impl ClientManagement {
    /// Listen, and answer the management clients' queries from `counts`.
    /// `restart` is the runtime's SIGUSR1 notification; `credentials` the
    /// client's credential memory (`forget-passwords` empties it).
    pub async fn start(
        settings: ClientManagementSettings,
        counts: Arc<ClientCounts>,
        restart: Arc<Notify>,
        credentials: super::credentials::CredentialMemory,
    ) -> anyhow::Result<ClientManagement> {
        let mut mgmt = Management::start_for_client(settings.management, credentials).await?;
        info!(
            "management interface listening on {}",
            mgmt.listen_address()
        );
        let exit = Arc::new(Notify::new());
        let restart_signal = Arc::new(Mutex::new(None));
        let mut requests = mgmt.take_requests();
        let (exit2, signal2) = (exit.clone(), restart_signal.clone());
        let (control_tx, control_rx) = mpsc::channel(CONTROL_MESSAGES);
        tokio::spawn(async move {
            while let Some(req) = crate::management::next_request(&mut requests).await {
                let answer = match &req.query {
                    Query::ControlMessage(text) => {
                        // 2.6 answers success whether a session takes it
                        // now, buffers it, or (none running) drops it.
                        let _ = control_tx.try_send(text.clone());
                        Answer::Done(true)
                    }
                    q => answer(q, &counts, &exit2, &restart, &signal2),
                };
                req.answer(answer);
            }
        });
        Ok(ClientManagement {
            mgmt,
            exit,
            restart_signal,
            query_remote: settings.query_remote,
            query_proxy: settings.query_proxy,
            control_messages: tokio::sync::Mutex::new(control_rx),
        })
    }

    /// The interface itself (for the key passphrase question).
    pub fn interface(&self) -> &Management {
        &self.mgmt
    }

    /// Whether each attempt asks `>REMOTE:` first.
    pub fn queries_remote(&self) -> bool {
        self.query_remote
    }

    /// Whether each attempt asks `>PROXY:` first (never together with
    /// `>REMOTE:`: 2.6 asks one or the other).
    pub fn queries_proxy(&self) -> bool {
        self.query_proxy && !self.query_remote
    }

    /// Ask about the connection entry about to be tried; see
    /// [`Management::ask_entry`].
    pub async fn ask_entry(&self, query: EntryQuery) -> EntryQuery {
        self.mgmt.ask_entry(query).await
    }

    /// Past the first hold: `remote`, `proxy` and `cr-response` work now.
    pub fn started(&self) {
        self.mgmt.client_started();
    }

    /// The connection list in the order it is walked, for
    /// `remote-entry-count` / `remote-entry-get`.
    pub fn set_remote_entries(&self, entries: Vec<String>) {
        self.mgmt.set_remote_entries(entries);
    }

    pub fn cancel_entry_query(&self) {
        self.mgmt.cancel_entry_query();
    }

    /// The connection entry about to be tried is UDP (or not).
    pub fn set_entry_udp(&self, udp: bool) {
        self.mgmt.set_entry_udp(udp);
    }

    /// The next `cr-response` message for the running connection.
    pub async fn next_control_message(&self) -> String {
        let mut rx = self.control_messages.lock().await;
        match rx.recv().await {
            Some(m) => m,
            // The answering task is gone: nothing more will come.
            None => std::future::pending().await,
        }
    }

    /// Drop messages given while no connection ran (2.6 drops them too).
    pub fn drop_control_messages(&self) {
        if let Ok(mut rx) = self.control_messages.try_lock() {
            while rx.try_recv().is_ok() {}
        }
    }

    /// Notified once a management client said `signal SIGTERM` (shared, so
    /// that a wait on it does not borrow the interface, which a SIGHUP
    /// hands on to the next client instance).
    pub fn exit_notify(&self) -> Arc<Notify> {
        self.exit.clone()
    }

    /// `>STATE:` (with `state on`) and the state history.
    pub fn state(&self, state: &'static str, description: &str) {
        self.full_state(ClientState {
            state,
            description: description.to_string(),
            ..ClientState::default()
        });
    }

    pub fn full_state(&self, s: ClientState) {
        self.mgmt.notify(Notice::ClientState(s));
    }

    /// With `management-up-down`: `>UPDOWN:EVENT` and `env`.
    pub fn up_down(&self, event: &str, env: &crate::scripts::Env, newest: Option<&str>) {
        self.mgmt.up_down(event, env, newest);
    }

    /// Whether `management-up-down` is on.
    pub fn reports_up_down(&self) -> bool {
        self.mgmt.reports_up_down()
    }

    /// A notification line (`>PASSWORD:...`, `>FATAL:...`).
    pub fn line(&self, text: String) {
        self.mgmt.notify(Notice::Line(text));
    }

    /// With `management-hold`: wait for `hold release` (the first time
    /// the hold set at start, later one [`Self::hold_again`] set).
    pub async fn wait_for_hold_release(&self) {
        self.mgmt.wait_for_hold_release().await;
    }

    /// Before a reconnect: hold again when the hold flag is on; see
    /// [`Management::hold_again`].
    pub fn hold_again(&self, wait_secs: u32) -> bool {
        self.mgmt.hold_again(wait_secs)
    }

    /// Ask for credentials and wait for them.
    pub async fn ask_password(&self, query: PasswordQuery) -> PasswordQuery {
        self.mgmt.ask_password(query).await
    }

    pub fn cancel_password_query(&self) {
        self.mgmt.cancel_password_query();
    }

    /// The signal that asked for the restart now under way (`SIGUSR1`
    /// unless a management client sent `SIGHUP`).
    pub fn take_restart_signal(&self) -> &'static str {
        self.restart_signal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .unwrap_or("SIGUSR1")
    }

    pub async fn flush(&self) {
        self.mgmt.flush().await;
    }
}

fn answer(
    query: &Query,
    counts: &ClientCounts,
    exit: &Notify,
    restart: &Notify,
    restart_signal: &Mutex<Option<&'static str>>,
) -> Answer {
    match query {
        Query::Status(_) => Answer::Text(counts::render(super::unix_now(), &counts.statistics())),
        Query::LoadStats => {
            let (received, sent) = counts.link_totals();
            Answer::Load(LoadStats {
                clients: 0,
                bytes_in: received,
                bytes_out: sent,
            })
        }
        Query::ByteCounts => {
            let (received, sent) = counts.link_totals();
            Answer::ClientBytes { received, sent }
        }
        Query::Signal(name) => match name.as_str() {
            // 2.6 ends on SIGINT as on SIGTERM.
            "SIGTERM" | "SIGINT" => {
                exit.notify_one();
                Answer::Done(true)
            }
            "SIGUSR1" | "SIGHUP" => {
                // ferrovpn does not re-read its config on SIGHUP: both
                // restart the connection, as the OS signals do.
                *restart_signal
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(if name == "SIGHUP" {
                        "SIGHUP"
                    } else {
                        "SIGUSR1"
                    });
                restart.notify_one();
                Answer::Done(true)
            }
            "SIGUSR2" => {
                let st = counts.statistics();
                info!(
                    "SIGUSR2: TUN/TAP read bytes {}, TUN/TAP write bytes {}, TCP/UDP read bytes {}, TCP/UDP write bytes {}, Auth read bytes {}",
                    st.tun_read, st.tun_written, st.link_read, st.link_written, st.auth_read
                );
                Answer::Done(true)
            }
            _ => Answer::Done(false),
        },
        // The session answers the server-only commands itself on a client.
        _ => Answer::Unavailable,
    }
}
