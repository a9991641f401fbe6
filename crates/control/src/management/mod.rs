//! The OpenVPN management interface (`management IP PORT [PW-FILE]`,
//! `management PATH unix`), as OpenVPN 2.6 speaks it.
//!
//! Parts: [`command`] splits and checks command lines, [`reply`] writes the
//! replies and notifications, [`session`] is one connection as a pure state
//! machine, and [`Management`] runs the listener and the connections on the
//! control-plane runtime.
//!
//! How it talks to the server: connections send [`Request`]s (a [`Query`]
//! and a one-shot for its [`Answer`]) through a bounded channel that the
//! server's loop drains, and the server sends [`Notice`]s back with
//! `try_send`. The server never waits on a management client: a slow one
//! only fills its own bounded queue and is disconnected when it overflows.
//!
//! Several clients at once: OpenVPN 2.6 serves one management client at a
//! time and refuses the next until it leaves. ferrovpn serves up to
//! [`MAX_CLIENTS`] at once, because a dashboard, a metrics exporter and an
//! operator's shell commonly want the same server; with one slot the first
//! poller that hangs locks everyone else out. Each connection has its own
//! realtime flags and `bytecount`, exactly as one 2.6 connection would;
//! notifications go to every connection.

pub mod command;
mod io;
mod log;
pub mod reply;
pub mod session;
pub mod updown;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc, oneshot};
use tracing::warn;
use zeroize::Zeroizing;

pub use log::{LogLayer, event_line, peer_line};
pub use session::{EntryQuery, Mode, PasswordQuery, ProxyAnswer, RemoteAnswer};
use session::{History, Shared};

/// Connections served at once.
pub const MAX_CLIENTS: usize = 8;
/// Notifications queued for one connection before it counts as stuck and
/// is closed.
pub const CLIENT_QUEUE: usize = 1024;
/// Requests queued for the server.
const REQUEST_QUEUE: usize = 64;
/// Notices queued from the server to the listener task.
const NOTICE_QUEUE: usize = 1024;

/// Where the interface listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Everything `management*` directives say, already checked.
#[derive(Debug, Clone)]
pub struct ManagementSettings {
    pub listen: Listen,
    /// The password from the PW-FILE, if one was given.
    pub password: Option<String>,
    /// `management-hold`.
    pub hold: bool,
    /// `management-log-cache` (2.6's default is 1000 lines).
    pub log_cache: usize,
    /// `management-client-user` / `-group`, as ids (unix socket only).
    pub client_uid: Option<u32>,
    pub client_gid: Option<u32>,
    /// `verb`, for the `verb` command.
    pub verb: u8,
    /// `management-client-auth`: every client waits for `client-auth`.
    pub client_auth: bool,
    /// `management-up-down`: `>UPDOWN:UP|DOWN` with the environment.
    pub up_down: bool,
    /// The process's private key passphrase memory (2.6's `passbuf`),
    /// which `forget-passwords` empties.
    pub key_passphrase: crate::key_passphrase::PassphraseMemory,
}

/// What a management command needs from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// The status report (`status-version` layout 1, 2 or 3), `\n` line ends.
    Status(u8),
    LoadStats,
    NClients,
    KillCommonName(String),
    KillAddress(SocketAddr),
    /// Send `message` (e.g. `RESTART`, `HALT`) to client `cid`, then drop it.
    ClientKill {
        cid: u64,
        message: String,
    },
    /// `(cid, bytes received from it, bytes sent to it)` for every client.
    ByteCounts,
    /// `SIGINT`, `SIGHUP`, `SIGTERM`, `SIGUSR1` or `SIGUSR2`.
    Signal(String),
    /// `client-auth CID KID` with its config block, or `client-auth-nt`
    /// (`config` empty).
    ClientAuth {
        cid: u64,
        kid: u32,
        config: Vec<String>,
    },
    /// `client-deny CID KID REASON [CLIENT-REASON]`.
    ClientDeny {
        cid: u64,
        kid: u32,
        reason: String,
        client_reason: Option<String>,
    },
    /// `client-pending-auth CID KID EXTRA TIMEOUT`.
    ClientPendingAuth {
        cid: u64,
        kid: u32,
        extra: String,
        timeout: u32,
    },
    /// A client sends this text to its server on the control channel
    /// (`cr-response`: `CR_RESPONSE,BASE64`).
    ControlMessage(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadStats {
    pub clients: usize,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// The server's answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Text(String),
    Load(LoadStats),
    /// How many clients a `kill` removed.
    Killed(usize),
    /// Whether `client-kill` found the client / the signal was acted on.
    Done(bool),
    ByteCounts(Vec<(u64, u64, u64)>),
    /// A client's own byte counts, for `>BYTECOUNT:IN,OUT`.
    ClientBytes {
        received: u64,
        sent: u64,
    },
    /// The server did not answer.
    Unavailable,
}

/// A query and where its answer goes.
#[derive(Debug)]
pub struct Request {
    pub query: Query,
    reply: oneshot::Sender<Answer>,
}

impl Request {
    pub fn answer(self, answer: Answer) {
        // The asking connection may have gone meanwhile; nothing to do then.
        let _ = self.reply.send(answer);
    }
}

/// What the server tells management clients without being asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `>CLIENT:ESTABLISHED,CID` and its environment.
    ClientEstablished {
        cid: u64,
        env: Vec<(String, String)>,
    },
    /// A state change (`>STATE:`), e.g. `CONNECTED`/`SUCCESS` with the
    /// tunnel address, or `EXITING`.
    State {
        state: &'static str,
        description: String,
        local_ip: String,
        /// The tunnel's IPv6 address, when it has one (2.6 adds it as a
        /// last field).
        local_ip6: String,
    },
    /// A log entry (`TIME,FLAGS,TEXT`) for `log` and `>LOG:`.
    Log(String),
    /// With `management-client-auth`: `>CLIENT:EVENT,ARGS` (`CONNECT`,
    /// `REAUTH`, `DISCONNECT`, `CR_RESPONSE`) and its environment.
    Client {
        event: &'static str,
        args: String,
        env: Vec<(String, String)>,
    },
    /// `>CLIENT:ADDRESS,CID,ADDR,PRI`: an address (`primary`: its tunnel
    /// address) or an iroute network now routed to client `cid`.
    ClientAddress {
        cid: u64,
        address: String,
        primary: bool,
    },
    /// A client's state change with every field 2.6 fills on a client
    /// (`>STATE:TIME,STATE,DESCRIPTION,LOCAL_IP,REMOTE_IP,REMOTE_PORT,,`).
    ClientState(ClientState),
    /// A notification line sent as it is to every connection (`>PASSWORD:`,
    /// `>HOLD:`, `>FATAL:`), without its CRLF.
    Line(String),
    /// Lines that go out together, none dropped without the others
    /// (`>UPDOWN:` and its environment).
    Block(Vec<String>),
}

/// The fields of one client `>STATE:` line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientState {
    pub state: &'static str,
    pub description: String,
    /// The tunnel address (ASSIGN_IP, CONNECTED).
    pub local_ip: String,
    /// The server's address and port (CONNECTED).
    pub remote_ip: String,
    pub remote_port: String,
}

/// The part of the interface the server holds.
pub struct Management {
    notices: mpsc::Sender<Notice>,
    requests: Option<mpsc::Receiver<Request>>,
    shared: Arc<Mutex<Shared>>,
    hold_released: Arc<Notify>,
    up_down: bool,
    /// Woken when a connection answered a `>PASSWORD:`, `>REMOTE:` or
    /// `>PROXY:` query.
    password_given: Arc<Notify>,
    listen: String,
}

impl Management {
    /// Bind the listener and start serving connections on the current
    /// tokio runtime.
    pub async fn start(settings: ManagementSettings) -> anyhow::Result<Self> {
        Self::start_as(settings, session::Mode::Server, Default::default()).await
    }

    /// [`Management::start`] for a client: client-only replies, and the
    /// client's own `>STATE`, `>HOLD` and `>PASSWORD` notifications.
    /// `credentials` is the client's credential memory, which
    /// `forget-passwords` reaches through the interface.
    pub async fn start_for_client(
        settings: ManagementSettings,
        credentials: crate::client::credentials::CredentialMemory,
    ) -> anyhow::Result<Self> {
        Self::start_as(settings, session::Mode::Client, credentials).await
    }

    async fn start_as(
        settings: ManagementSettings,
        mode: session::Mode,
        credentials: crate::client::credentials::CredentialMemory,
    ) -> anyhow::Result<Self> {
        let shared = Arc::new(Mutex::new(Shared {
            mode,
            hold_wait: 0,
            password_query: None,
            entry_query: None,
            entry_udp: false,
            started: false,
            remote_entries: Vec::new(),
            key_passphrase: settings.key_passphrase.clone(),
            credentials,
            hold: settings.hold,
            hold_released: false,
            holding: settings.hold,
            states: History::new(100),
            log: History::new(settings.log_cache),
            verb: settings.verb,
            pid: std::process::id(),
            client_auth: settings.client_auth,
        }));
        let (notices_tx, notices_rx) = mpsc::channel(NOTICE_QUEUE);
        let (requests_tx, requests_rx) = mpsc::channel(REQUEST_QUEUE);
        let hold_released = Arc::new(Notify::new());
        let password_given = Arc::new(Notify::new());
        log::connect(notices_tx.clone());
        let listen = match &settings.listen {
            Listen::Tcp(a) => a.to_string(),
            Listen::Unix(p) => format!("{} (unix)", p.display()),
        };
        let listener = io::Listener::bind(&settings.listen).await?;
        let ctx = Arc::new(io::Context {
            password: settings.password.clone(),
            client_uid: settings.client_uid,
            client_gid: settings.client_gid,
            shared: shared.clone(),
            requests: requests_tx,
            hold_released: hold_released.clone(),
            password_given: password_given.clone(),
        });
        tokio::spawn(io::serve(listener, notices_rx, ctx));
        Ok(Self {
            notices: notices_tx,
            requests: Some(requests_rx),
            shared,
            hold_released,
            up_down: settings.up_down,
            password_given,
            listen,
        })
    }

    /// Whether `management-hold` is on now (`hold on|off` changes it).
    pub fn hold_flag(&self) -> bool {
        lock(&self.shared).hold
    }

    /// The private key's passphrase kept from the last opening of the key
    /// ([`recall`](crate::key_passphrase::PassphraseMemory::recall)).
    pub fn recall_key_passphrase(&self) -> Option<Zeroizing<String>> {
        lock(&self.shared).key_passphrase.recall()
    }

    /// The key opened with `passphrase` ([`opened_with`](crate::key_passphrase::PassphraseMemory::opened_with)).
    pub fn key_opened_with(&self, passphrase: Zeroizing<String>, nocache: bool) {
        lock(&self.shared)
            .key_passphrase
            .opened_with(passphrase, nocache);
    }

    /// A client about to reconnect: with the hold flag on, hold again and
    /// say `>HOLD:Waiting for hold release:WAIT` (WAIT: the pause the hold
    /// replaces, as 2.6). Returns whether it holds; then
    /// [`Management::wait_for_hold_release`] waits for the release.
    pub fn hold_again(&self, wait_secs: u32) -> bool {
        {
            let mut sh = lock(&self.shared);
            if !sh.hold {
                return false;
            }
            sh.holding = true;
            sh.hold_released = false;
            sh.hold_wait = wait_secs;
        }
        self.notify(Notice::Line(format!(
            ">HOLD:Waiting for hold release:{wait_secs}"
        )));
        true
    }

    /// Ask the management clients for credentials (`>PASSWORD:Need ...`,
    /// repeated to each client that connects meanwhile) and wait for
    /// `username`/`password`; returns the answered query.
    pub async fn ask_password(&self, query: session::PasswordQuery) -> session::PasswordQuery {
        let prompt = query.prompt();
        self.ask(
            prompt,
            query,
            |sh| &mut sh.password_query,
            session::PasswordQuery::complete,
        )
        .await
    }

    /// Drop a query nobody answered (the client stops waiting for it).
    pub fn cancel_password_query(&self) {
        lock(&self.shared).password_query = None;
    }

    /// Ask the management clients about the connection entry a client is
    /// about to try (`>REMOTE:` or `>PROXY:`, repeated to each client that
    /// connects meanwhile) and wait for the answer; returns the answered
    /// query. Dropping the future leaves the question to
    /// [`Management::cancel_entry_query`].
    pub async fn ask_entry(&self, query: session::EntryQuery) -> session::EntryQuery {
        let prompt = query.prompt().to_string();
        self.ask(
            prompt,
            query,
            |sh| &mut sh.entry_query,
            session::EntryQuery::answered,
        )
        .await
    }

    /// Put `query` in its `slot` of the shared state, show `prompt` to the
    /// management clients, and wait (woken by every answer a session
    /// takes) until `done` says the query is answered; returns it, the
    /// slot emptied.
    async fn ask<Q>(
        &self,
        prompt: String,
        query: Q,
        slot: fn(&mut Shared) -> &mut Option<Q>,
        done: fn(&Q) -> bool,
    ) -> Q {
        *slot(&mut lock(&self.shared)) = Some(query);
        self.notify(Notice::Line(prompt));
        loop {
            {
                let mut sh = lock(&self.shared);
                let asked = slot(&mut sh);
                if asked.as_ref().is_some_and(done) {
                    return asked.take().expect("checked above");
                }
            }
            self.password_given.notified().await;
        }
    }

    /// A client is past its first hold (see [`session::Shared::started`]).
    pub fn client_started(&self) {
        lock(&self.shared).started = true;
    }

    /// A client's connection list as `remote-entry-get` shows it (see
    /// [`session::Shared::remote_entries`]).
    pub fn set_remote_entries(&self, entries: Vec<String>) {
        lock(&self.shared).remote_entries = entries;
    }

    /// Drop an entry question nobody answered.
    pub fn cancel_entry_query(&self) {
        lock(&self.shared).entry_query = None;
    }

    /// Whether the connection entry in use is UDP (see [`session::Shared::entry_udp`]).
    pub fn set_entry_udp(&self, udp: bool) {
        lock(&self.shared).entry_udp = udp;
    }

    /// Wait (a bounded time) until the notifications sent so far left the
    /// queue for the connections, so that an exiting client's last
    /// `>STATE:` reaches them before the process ends.
    pub async fn flush(&self) {
        for _ in 0..50 {
            if self.notices.capacity() == self.notices.max_capacity() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // The connection tasks write what they were handed.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    /// Where it listens, for the log.
    pub fn listen_address(&self) -> &str {
        &self.listen
    }

    /// The requests the server must answer; taken once.
    pub fn take_requests(&mut self) -> Option<mpsc::Receiver<Request>> {
        self.requests.take()
    }

    /// Tell the management clients; never waits (dropped when the
    /// listener task is this far behind).
    pub fn notify(&self, notice: Notice) {
        if self.notices.try_send(notice).is_err() {
            warn!("management: notification dropped (queue full)");
        }
    }

    /// With `management-up-down`: `>UPDOWN:EVENT` (`UP`, `DOWN`) and the
    /// environment the scripts see, in 2.6's order (`newest`: see
    /// [`updown::updown_lines`]).
    pub fn up_down(&self, event: &str, env: &crate::scripts::Env, newest: Option<&str>) {
        if self.up_down {
            self.notify(Notice::Block(updown::updown_lines(event, env, newest)));
        }
    }

    /// Whether `management-up-down` is on.
    pub fn reports_up_down(&self) -> bool {
        self.up_down
    }

    /// With `management-hold`: wait until a client says `hold release`.
    pub async fn wait_for_hold_release(&self) {
        loop {
            {
                let mut sh = lock(&self.shared);
                if !sh.holding {
                    return;
                }
                if sh.hold_released {
                    sh.holding = false;
                    return;
                }
            }
            self.hold_released.notified().await;
        }
    }
}

/// The next request, or never when there is no management interface.
pub async fn next_request(rx: &mut Option<mpsc::Receiver<Request>>) -> Option<Request> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The id of a user or group, by number or by name from a `passwd` /
/// `group` style file (`NAME:x:ID:...`).
pub fn id_by_name(database: &str, name: &str) -> Option<u32> {
    if let Ok(id) = name.parse() {
        return Some(id);
    }
    database.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next() == Some(name))
            .then(|| f.nth(1).and_then(|id| id.parse().ok()))
            .flatten()
    })
}

/// The shared state stays usable if a holder panicked: every update to it
/// is a single assignment or push.
fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_by_name() {
        let db = "root:x:0:0:root:/root:/bin/bash\nops:x:1001:1001::/home/ops:/bin/sh\n";
        assert_eq!(super::id_by_name(db, "ops"), Some(1001));
        assert_eq!(super::id_by_name(db, "root"), Some(0));
        assert_eq!(super::id_by_name(db, "42"), Some(42));
        assert_eq!(super::id_by_name(db, "nobody"), None);
    }
}
