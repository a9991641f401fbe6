//! The management interface on a client (`management` with `client`): the
//! same listener and sessions as a server's ([`crate::management`]), with
//! what 2.6 does on a client: `management-hold` before the first connection
//! and every reconnect, `>PASSWORD:Need 'Auth' ...` for credentials the
//! config does not give (`management-query-passwords`), the client's
//! `>STATE:` sequence, `>BYTECOUNT:IN,OUT`, `status`, `load-stats` and
//! `signal`.
//!
//! The client runtime only publishes: every notification goes out with
//! `try_send`, and the queries are answered by a task of their own from
//! the peer table, so a slow management client never stalls a connection.

use std::sync::{Arc, Mutex};

use ferrovpn_dataplane::PeerTable;
use tokio::sync::Notify;
use tracing::info;

use crate::management::{
    Answer, ClientState, LoadStats, Management, ManagementSettings, Notice, PasswordQuery, Query,
};

/// What the client runtime needs to know of its management interface.
#[derive(Debug, Clone)]
pub struct ClientManagementSettings {
    pub management: ManagementSettings,
    /// `management-query-passwords`.
    pub query_passwords: bool,
}

/// The client's side of the interface.
pub struct ClientManagement {
    mgmt: Management,
    /// `signal SIGTERM`: the client exits.
    exit: Arc<Notify>,
    /// The signal behind the next restart (`SIGUSR1` or `SIGHUP`), for the
    /// `RECONNECTING` state.
    restart_signal: Arc<Mutex<Option<&'static str>>>,
}

/// `(received, sent)` data-channel bytes of the client's peer(s).
fn byte_counts(peers: &PeerTable) -> (u64, u64) {
    let snap = peers.load();
    snap.by_id
        .keys()
        .filter_map(|id| peers.peer_stats(*id))
        .fold((0, 0), |(r, s), st| (r + st.rx_bytes, s + st.tx_bytes))
}

/// The client's `status` report, in 2.6's layout for a client (the same in
/// every `status N`). The counts are the data channel's: ferrovpn does not
/// count the link's control-channel bytes separately.
pub fn status_report(now: u64, received: u64, sent: u64) -> String {
    format!(
        "OpenVPN STATISTICS\nUpdated,{}\nTUN/TAP read bytes,{sent}\nTUN/TAP write bytes,{received}\nTCP/UDP read bytes,{received}\nTCP/UDP write bytes,{sent}\nAuth read bytes,{received}\nEND\n",
        crate::status::utc(now)
    )
}

impl ClientManagement {
    /// Listen, and answer the management clients' queries from `peers`.
    /// `restart` is the runtime's SIGUSR1 notification.
    pub async fn start(
        settings: ManagementSettings,
        peers: PeerTable,
        restart: Arc<Notify>,
    ) -> anyhow::Result<ClientManagement> {
        let mut mgmt = Management::start_for_client(settings).await?;
        info!(
            "management interface listening on {}",
            mgmt.listen_address()
        );
        let exit = Arc::new(Notify::new());
        let restart_signal = Arc::new(Mutex::new(None));
        let mut requests = mgmt.take_requests();
        let (exit2, signal2) = (exit.clone(), restart_signal.clone());
        tokio::spawn(async move {
            while let Some(req) = crate::management::next_request(&mut requests).await {
                let answer = answer(&req.query, &peers, &exit2, &restart, &signal2);
                req.answer(answer);
            }
        });
        Ok(ClientManagement {
            mgmt,
            exit,
            restart_signal,
        })
    }

    /// The interface itself (for the key passphrase question).
    pub fn interface(&self) -> &Management {
        &self.mgmt
    }

    /// Resolves once a management client said `signal SIGTERM`.
    pub async fn exit_requested(&self) {
        self.exit.notified().await;
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
    peers: &PeerTable,
    exit: &Notify,
    restart: &Notify,
    restart_signal: &Mutex<Option<&'static str>>,
) -> Answer {
    match query {
        Query::Status(_) => {
            let (received, sent) = byte_counts(peers);
            Answer::Text(status_report(super::unix_now(), received, sent))
        }
        Query::LoadStats => {
            let (received, sent) = byte_counts(peers);
            Answer::Load(LoadStats {
                clients: 0,
                bytes_in: received,
                bytes_out: sent,
            })
        }
        Query::ByteCounts => {
            let (received, sent) = byte_counts(peers);
            Answer::ClientBytes { received, sent }
        }
        Query::Signal(name) => match name.as_str() {
            "SIGTERM" => {
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
                let (received, sent) = byte_counts(peers);
                info!("SIGUSR2: data channel bytes received {received}, sent {sent}");
                Answer::Done(true)
            }
            _ => Answer::Done(false),
        },
        // The session answers the server-only commands itself on a client.
        _ => Answer::Unavailable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_report_has_2_6_client_layout() {
        let r = status_report(0, 10, 20);
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines[0], "OpenVPN STATISTICS");
        assert!(lines[1].starts_with("Updated,"));
        assert_eq!(
            &lines[2..],
            [
                "TUN/TAP read bytes,20",
                "TUN/TAP write bytes,10",
                "TCP/UDP read bytes,10",
                "TCP/UDP write bytes,20",
                "Auth read bytes,10",
                "END"
            ]
        );
    }
}
