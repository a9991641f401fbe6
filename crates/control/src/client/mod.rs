//! The client's control plane: picks a remote, runs the session, applies what
//! the server pushes (addresses, routes, redirect-gateway, DNS, keepalive,
//! peer-id), reconnects with backoff, and restores the system on exit.
//!
//! The pure parts have their own modules: [`plan`] (what a push reply asks
//! for), [`routes`] (which routes to add, keep and delete), [`walk`] (which
//! connection entry next, and the pause before it, as 2.6), [`proxy`] (the
//! HTTP CONNECT and SOCKS5 handshakes as bytes), and
//! `dns::render_resolv_conf`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrovpn_dataplane::{
    DataPlane, DataPlaneConfig, DataPlaneError, PeerTable, Transport, UpEvent,
};
use ferrovpn_proto::session::SessionConfig;
use tracing::{Instrument, info, warn};

use crate::netconfig::NetConfig;
use crate::status::StatusSettings;

mod connection;
pub mod counts;
pub mod credentials;
pub mod dns;
mod entry_query;
mod link;
pub mod management;
pub mod plan;
pub mod proxy;
pub mod resolved;
pub mod routes;
mod scripts;
mod socks_udp;
mod tunnel;
pub mod walk;

use crate::key_passphrase::Opened;
use connection::Connection;
use credentials::{CredentialMemory, CredentialSource, Credentials};
pub use ferrovpn_config::AuthRetry;
pub use link::Proxy;
use management::ClientManagement;
pub use management::ClientManagementSettings;
use tunnel::Tunnel;
use walk::Walk;

/// One entry of the connection list: a `remote HOST PORT` line or a
/// `<connection>` block, with its own transport options.
#[derive(Clone, Debug)]
pub struct Remote {
    pub host: String,
    pub port: u16,
    pub transport: Transport,
    /// UDP: the local address (`local`, `lport`; port 0 = ephemeral).
    pub bind: SocketAddr,
    /// TCP: bind the connection to this address first (`local` / `lport`
    /// given, as 2.6 binds a TCP client only then).
    pub tcp_bind: Option<SocketAddr>,
    /// `connect-retry N MAX`: the pause after an attempt on this entry.
    pub connect_retry: Duration,
    pub connect_retry_max: Duration,
    /// `connect-timeout` / `server-poll-timeout`: how long the TCP connect
    /// and proxy handshake may take, and how long the server may stay
    /// silent after an attempt starts.
    pub connect_timeout: Duration,
    /// `explicit-exit-notify N` (UDP only: 2.6 ignores it over TCP).
    pub explicit_exit_notify: Option<u32>,
    /// `http-proxy` / `socks-proxy`: the connection goes through it.
    pub proxy: Option<Proxy>,
    /// `remote-random-hostname`.
    pub random_hostname: bool,
    /// `udp4`/`tcp4`: `Some(false)`, IPv4 only; `udp6`/`tcp6`: `Some(true)`,
    /// IPv6 only; `None`: whatever the name resolves to, in order.
    pub family: Option<bool>,
    /// `float` (UDP without a proxy): each new session goes to whatever
    /// address the server's first authenticated packet comes from.
    pub float: bool,
}

impl Remote {
    /// A plain UDP remote with 2.6's defaults (tests, simple callers).
    pub fn udp(host: &str, port: u16) -> Remote {
        Remote {
            host: host.to_string(),
            port,
            transport: Transport::Udp,
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            tcp_bind: None,
            connect_retry: Duration::from_secs(1),
            connect_retry_max: Duration::from_secs(300),
            connect_timeout: Duration::from_secs(120),
            explicit_exit_notify: None,
            proxy: None,
            random_hostname: false,
            family: None,
            float: false,
        }
    }

    /// A point-to-point end without `remote`: the UDP socket is bound to
    /// `bind` (`lport`) and the peer is whoever's first authenticated
    /// hard reset arrives, from any address, as 2.6 without a remote list.
    pub fn waiting(bind: SocketAddr) -> Remote {
        Remote {
            host: String::new(),
            port: 0,
            bind,
            float: true,
            ..Remote::udp("", 0)
        }
    }

    /// Whether this entry names no peer and waits for one ([`Remote::waiting`]).
    pub fn waits(&self) -> bool {
        self.host.is_empty()
    }

    /// `float` takes effect: over UDP straight to the server (through a
    /// proxy the relay is the only address there is). A waiting end
    /// always floats: 2.6 lets every address in when it has no remote.
    pub fn floats(&self) -> bool {
        (self.float || self.waits()) && self.transport == Transport::Udp && self.proxy.is_none()
    }

    /// The entry as `remote-entry-get` shows it: `HOST,PORT,PROTO,STATUS`
    /// with 2.6's short protocol name (a client's TCP is `tcp-client`;
    /// `4`/`6` when the entry is bound to a family). Always `enabled`:
    /// 2.6 disables entries only for `http-proxy-override` and
    /// `proto-force`, which ferrovpn refuses.
    fn entry_line(&self) -> String {
        // A client's entry is UDP or TCP (`UdpAndTcp` is a server's).
        let proto = match (self.transport == Transport::Tcp, self.family) {
            (false, None) => "udp",
            (false, Some(false)) => "udp4",
            (false, Some(true)) => "udp6",
            (true, None) => "tcp-client",
            (true, Some(false)) => "tcp4-client",
            (true, Some(true)) => "tcp6-client",
        };
        format!("{},{},{proto},enabled", self.host, self.port)
    }

    /// The server's name for this attempt: with `remote-random-hostname`, a
    /// random label goes before a name (never before an address), as 2.6.
    fn host_for_attempt(&self) -> String {
        if !self.random_hostname || self.host.parse::<IpAddr>().is_ok() {
            return self.host.clone();
        }
        let mut label = [0u8; 6];
        ferrovpn_proto::random::fill(&mut label);
        format!("{}.{}", hex::encode(label), self.host)
    }
}

/// Reads user name and password again from where they came from.
pub type ReloadCredentials =
    Arc<dyn Fn(&CredentialSource) -> anyhow::Result<(String, String)> + Send + Sync>;

/// Everything the client runtime needs, already validated by the config layer.
pub struct ClientSettings {
    /// The data plane's settings; `transport` and `bind` come from the
    /// connection entry of each attempt.
    pub dataplane: DataPlaneConfig,
    /// The connection list, in config order.
    pub remotes: Vec<Remote>,
    pub remote_random: bool,
    /// `connect-retry-max N`: exit once every entry failed N times in a row.
    pub connect_retry_max: Option<u32>,
    /// The session settings, announcing UDP (`proto UDPv4`); a TCP entry
    /// announces `TCPv4_CLIENT` instead, as 2.6.
    pub session: Arc<SessionConfig>,
    /// Silence after which we reconnect until the server pushes its own value.
    pub ping_restart: Duration,
    /// Local `ping`; pushed values override it.
    pub ping: Option<Duration>,
    /// `ping-exit N`: exit (instead of reconnecting) after this much silence.
    pub ping_exit: Option<Duration>,
    /// `tls-exit`: a failed TLS handshake ends the client, as 2.6's
    /// SIGTERM with `tls-error`, instead of a restart.
    pub tls_exit: bool,
    /// `status FILE [N]`: data-channel byte counts.
    pub status: Option<StatusSettings>,
    pub tun_mtu: u16,
    /// `persist-tun`: keep the tunnel's addresses, routes and DNS across
    /// reconnects (nothing leaks while the client backs off).
    pub persist_tun: bool,
    /// `auth-user-pass`: sent in every key exchange.
    pub credentials: Option<Credentials>,
    /// `auth-retry`: what AUTH_FAILED does.
    pub auth_retry: AuthRetry,
    /// Reads the credentials again (`auth-nocache`, `auth-retry interact`):
    /// re-reads the file or asks on the terminal.
    pub reload_credentials: Option<ReloadCredentials>,
    /// Configured compression settings; pushed ones apply on top per connection.
    pub compression: ferrovpn_config::CompressOptions,
    /// Called once the first tun device and socket are open.
    pub setup_done: Option<crate::SetupDone>,
    /// `route`, `route-gateway`, `route-metric` and `redirect-gateway` lines
    /// of the client's own config, applied with each push reply as if the
    /// server had pushed them first.
    pub local_options: Vec<ferrovpn_proto::push::PushOption>,
    /// `route-nopull`: pushed routes and DNS settings are dropped.
    pub route_nopull: bool,
    /// `route-noexec` / `ifconfig-noexec`.
    pub no_exec: crate::netconfig::NoExec,
    /// `up`, `down`, `route-up`, `route-pre-down`, `ipchange`,
    /// `tls-verify`, `script-security` and the variables of every script.
    pub scripts: crate::scripts::ScriptSettings,
    /// Point-to-point TLS mode: one peer, no push (see [`P2p`]).
    pub p2p: Option<P2p>,
    /// `inactive SECONDS [BYTES]`: exit after SECONDS with less than BYTES
    /// of tunnel traffic (keepalives do not count), as 2.6.
    pub inactive: Option<Inactivity>,
    /// `management ...` on a client (see [`management`]).
    pub management: Option<ClientManagementSettings>,
    /// `persist-key`: the key stays open across restarts of the
    /// connection; without it a key whose passphrase is asked over
    /// management is opened again before the next attempt, as 2.6.
    pub persist_key: bool,
    /// A key that needs a passphrase: opened after the hold when
    /// `key_opened` is false (`management-query-passwords`: `session` has
    /// no TLS settings yet, see [`crate::key_passphrase`]), and opened
    /// again at every reconnect without `persist-key`, as 2.6 (its
    /// `passbuf` first, then `askpass FILE`, the management interface or
    /// the terminal).
    pub key_passphrase: Option<crate::key_passphrase::DeferredKey<Arc<SessionConfig>>>,
    /// `session` has the key's TLS settings already (the key was opened
    /// while the settings were built).
    pub key_opened: bool,
    /// The process's memory of the passphrase that opened the key (2.6's
    /// `passbuf`; the management interface's `forget-passwords` empties it).
    pub key_memory: crate::key_passphrase::PassphraseMemory,
}

/// `inactive`: see [`ClientSettings::inactive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inactivity {
    pub timeout: Duration,
    pub min_bytes: u64,
}

/// Point-to-point TLS mode (`tls-server`/`tls-client` without `mode
/// server`/`pull`), run by this single-peer runtime: the connection list
/// names the peer, and the session (`SessionConfig::p2p`) settles cipher,
/// keys and peer-id with it. What a push reply brings a client comes from
/// the config instead: `ifconfig`/`topology` here, `route` lines in
/// [`ClientSettings::local_options`], `ping`/`ping-restart` as configured.
#[derive(Clone, Debug, Default)]
pub struct P2p {
    /// We hold the TLS server role: wait for the peer's
    /// HARD_RESET_CLIENT_V2 instead of sending one.
    pub tls_server: bool,
    /// `topology` and `ifconfig` as options for [`plan::PushPlan`]; empty
    /// without `ifconfig` (the device is left without an address).
    pub ifconfig: Vec<ferrovpn_proto::push::PushOption>,
}

/// The `signal` variable of `down` and `route-pre-down` after `ended`
/// (2.6's signal description: the signal, or why it restarted).
/// 2.6's signal text when a plugin vetoed a key exchange (`TLS_FINAL`):
/// it ends as on SIGTERM.
pub(super) const AUTH_CONTROL_EXIT: &str = "auth-control-exit";

/// The EXITING description of a SIGTERM during a management hold or a
/// restart pause: 2.6 holds and pauses inside `init_instance`, which names
/// a signal without text after itself (init.c; the stock 2.6.14 client
/// shows `>STATE:...,EXITING,init_instance`).
const EXIT_IN_INIT_INSTANCE: &str = "init_instance";

/// How [`ferrovpn_proto::session::SessionError::NoPushReply`] reads: 2.6
/// restarts with the signal text `no-push-reply` then.
const NO_PUSH_REPLY: &str = "No reply from server to push requests";

/// How a connection whose TLS handshake failed ends (a `tls-verify`
/// refusal, hand-window run out): 2.6 restarts with the signal text
/// `tls-error` then (`SIGUSR1[soft,tls-error]`).
pub(super) const TLS_HANDSHAKE_FAILED: &str = "TLS Error: TLS handshake failed";

fn signal_text(ended: &Ended) -> &'static str {
    match ended {
        Ended::Shutdown | Ended::Fatal(_) => "sigterm",
        Ended::Exit(why) if why.contains(AUTH_CONTROL_EXIT) => AUTH_CONTROL_EXIT,
        Ended::Exit(why) if why.starts_with(TLS_HANDSHAKE_FAILED) => "tls-error",
        Ended::Exit(_) => "ping-exit",
        Ended::Reconnect(why) if why.contains("ping-restart") => "ping-restart",
        Ended::Reconnect(why) if why.starts_with(NO_PUSH_REPLY) => "no-push-reply",
        Ended::Reconnect(why) if why.starts_with(TLS_HANDSHAKE_FAILED) => "tls-error",
        Ended::ServerLeft(_) => "server-pushed-connection-reset",
        Ended::AuthFailed(_) => "auth-failure",
        Ended::Reconnect(_) | Ended::Restart => "sigusr1",
    }
}

/// The description of a client's `RECONNECTING`/`EXITING` state after
/// `ended`: 2.6's signal text (the signal, or the reason of a soft one).
/// `restart_signal`: what asked for an [`Ended::Restart`].
fn state_reason(ended: &Ended, restart_signal: &'static str) -> &'static str {
    match ended {
        Ended::Shutdown => "SIGTERM",
        Ended::Exit(why) if why.contains("inactive") => "inactive",
        Ended::Exit(why) if why.contains(AUTH_CONTROL_EXIT) => AUTH_CONTROL_EXIT,
        Ended::Exit(why) if why.starts_with(TLS_HANDSHAKE_FAILED) => "tls-error",
        Ended::Exit(_) => "ping-exit",
        Ended::Reconnect(why) if why.contains("ping-restart") => "ping-restart",
        Ended::Reconnect(why) if why.contains("server poll timeout") => "server_poll",
        Ended::Reconnect(why) if why.starts_with(NO_PUSH_REPLY) => "no-push-reply",
        Ended::Reconnect(why) if why.starts_with(TLS_HANDSHAKE_FAILED) => "tls-error",
        Ended::Reconnect(_) => "connection-reset",
        Ended::ServerLeft(why) if why.contains("RESTART") => "server-pushed-connection-reset",
        Ended::ServerLeft(why) if why.contains("exit") => "remote-exit",
        Ended::ServerLeft(_) => "connection-reset",
        Ended::AuthFailed(_) => "auth-failure",
        Ended::Restart => restart_signal,
        Ended::Fatal(why) if why.contains("HALT") => "server-pushed-halt",
        Ended::Fatal(_) => "SIGTERM",
    }
}

/// `>PASSWORD:Verification Failed: 'Auth'`, with `['REASON']` when the
/// server's AUTH_FAILED gave one, as 2.6 tells its management client.
fn verification_failed(reason: &str) -> String {
    if reason.is_empty() {
        ">PASSWORD:Verification Failed: 'Auth'".to_string()
    } else {
        format!(">PASSWORD:Verification Failed: 'Auth' ['{reason}']")
    }
}

/// `management-query-passwords`: ask the management client for what the
/// config does not give, and keep it in `memory`.
async fn ask_credentials(m: &ClientManagement, memory: &CredentialMemory) {
    let Some(CredentialSource::Management {
        ask_username,
        challenge,
    }) = memory.with(|c| c.as_ref().map(|c| c.source.clone()))
    else {
        return;
    };
    let q = m
        .ask_password(crate::management::PasswordQuery::new(
            "Auth",
            ask_username,
            challenge,
        ))
        .await;
    memory.with(|c| {
        if let Some(c) = c {
            let user = q.username.unwrap_or_else(|| c.username().to_string());
            c.set(user, q.password.unwrap_or_default());
        }
    });
}

/// Whether the credentials are still to be asked over the management
/// interface ([`Credentials::to_ask_over_management`]).
fn credentials_to_ask(memory: &CredentialMemory) -> bool {
    memory.with(|c| c.as_ref().is_some_and(Credentials::to_ask_over_management))
}

/// Open the private key with the passphrase 2.6 kept (the management
/// interface's [`PassphraseMemory`](crate::key_passphrase::PassphraseMemory))
/// or else one asked over management, and keep the one that opened it
/// unless `auth-nocache`.
async fn open_key<S: std::future::Future<Output = ()>>(
    m: Option<&ClientManagement>,
    key: &mut crate::key_passphrase::DeferredKey<Arc<SessionConfig>>,
    memory: &crate::key_passphrase::PassphraseMemory,
    config_read: bool,
    restart: &tokio::sync::Notify,
    connect_retry_secs: u32,
    shutdown: std::pin::Pin<&mut S>,
) -> Opened<Arc<SessionConfig>> {
    let state = |state: &'static str, description: &'static str| {
        if let Some(m) = m {
            m.state(state, description);
        }
    };
    let nocache = key.nocache;
    let kept = memory.recall();
    let opened = crate::key_passphrase::open_over_management(
        m.map(ClientManagement::interface),
        key,
        kept,
        config_read,
        restart,
        connect_retry_secs,
        &state,
        shutdown,
    )
    .await;
    if let Opened::Key(_, passphrase) = &opened {
        memory.opened_with(passphrase.clone(), nocache);
    }
    opened
}

/// The pause before a reconnect in whole seconds, for `>HOLD:...:N`.
fn whole_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Why a connection ended.
#[derive(Debug)]
enum Ended {
    Shutdown,
    /// `ping-exit` fired: stop like a shutdown, with a reason in the log.
    Exit(String),
    Reconnect(String),
    /// The server said it is going away (RESTART, exit notification), or
    /// still holds a session we dropped (a reply `pull-filter` rejected).
    /// Reconnect like [`Ended::Reconnect`], but from a fresh source port: a
    /// server that is still shutting down would take a new session from the
    /// old address as a restart of the old client instance, then exit, and
    /// its successor ignores that session until hand-window runs out.
    ServerLeft(String),
    /// SIGUSR1: reconnect now, without backoff.
    Restart,
    /// The server refused our credentials.
    AuthFailed(String),
    Fatal(String),
}

/// Whether the tunnel's configuration stays in place after a connection
/// ended this way: with `persist-tun`, across every restart (2.6 keeps the
/// tun and its routes unless the process exits; an AUTH_FAILED that is not
/// retried exits, and the exit path tears everything down); without, never.
fn keeps_tunnel(persist_tun: bool, ended: &Ended) -> bool {
    persist_tun
        && matches!(
            ended,
            Ended::Reconnect(_) | Ended::ServerLeft(_) | Ended::Restart | Ended::AuthFailed(_)
        )
}

/// The data plane (TUN device, UDP socket connected to the server or the
/// TCP connection of the moment, workers).
struct Plane {
    dp: DataPlane,
    /// The server (or proxy) the plane was started for.
    server: SocketAddr,
    /// Its socket hears every address ([`Remote::floats`]).
    float: bool,
    transport: Transport,
    bind: SocketAddr,
    up: tokio::sync::mpsc::Receiver<UpEvent>,
}

impl Plane {
    fn start(cfg: DataPlaneConfig, peers: &PeerTable) -> Result<Plane, DataPlaneError> {
        let server = cfg
            .connect
            .ok_or_else(|| DataPlaneError::Config("a client data plane needs a server".into()))?;
        let (transport, bind, float) = (cfg.transport, cfg.bind, cfg.float);
        let (dp, up_rx) = DataPlane::start(cfg, peers.clone())?;
        Ok(Plane {
            dp,
            server,
            float,
            transport,
            bind,
            up: crate::bridge(up_rx),
        })
    }
}

/// The local address to bind for `server`: an unspecified address of the
/// other family becomes the unspecified address of the server's (the port
/// kept), so `nobind`/`lport` work over IPv6 too.
fn bind_towards(bind: SocketAddr, server: SocketAddr) -> SocketAddr {
    match (bind.ip(), server.ip()) {
        (IpAddr::V4(b), IpAddr::V6(_)) if b.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), bind.port())
        }
        (IpAddr::V6(b), IpAddr::V4(_)) if b.is_unspecified() => {
            SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), bind.port())
        }
        _ => bind,
    }
}

/// No route to the server (yet): a reason to retry, not to exit.
fn is_unreachable(e: &DataPlaneError) -> bool {
    use std::io::ErrorKind;
    matches!(e, DataPlaneError::Io { source, .. } if matches!(
        source.kind(),
        ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable | ErrorKind::AddrNotAvailable
    ))
}

/// How a client instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEnded {
    /// SIGTERM, SIGINT, `ping-exit`, ...: the process exits.
    Exit,
    /// SIGHUP (real, or `signal SIGHUP` over management): read the
    /// configuration again and run the next instance with the
    /// [`KeptAcrossReloads`] of this one, as 2.6's `openvpn_main` loop.
    Reload,
}

/// What 2.6 keeps from one client instance to the next across a SIGHUP:
/// the management interface (socket, connected client, `state on`, hold
/// flag, state history: `management_open` opens it once, with the first
/// config's settings) with the private key's passphrase it was given
/// (its [`PassphraseMemory`](crate::key_passphrase::PassphraseMemory),
/// 2.6's `passbuf`), the credentials once given (`auth_user_pass` stays
/// defined, so they are neither read nor asked again), and the counters
/// the interface reports from. The passphrase and the credentials live
/// where the management command `forget-passwords` reaches them, as in
/// 2.6 (`ssl_purge_auth`).
#[derive(Default)]
pub struct KeptAcrossReloads {
    management: Option<ClientManagement>,
    /// The peer table and the counters that read it, kept together.
    peers_and_counts: Option<(PeerTable, Arc<counts::ClientCounts>)>,
    /// The same memory the management interface holds.
    credentials: CredentialMemory,
}

/// Run the client until `shutdown` resolves or a fatal error (AUTH_FAILED, HALT).
/// `restarts` holds the restarts real signals ask (SIGUSR1, SIGHUP): after
/// SIGUSR1 the connection is torn down and made again; after SIGHUP the
/// instance ends with [`ClientEnded::Reload`], for the caller to read the
/// configuration again and run the next one with the same `restarts` and
/// `kept`.
pub async fn run_client(
    mut s: ClientSettings,
    shutdown: impl std::future::Future<Output = ()>,
    restarts: Arc<crate::RestartRequests>,
    kept: &mut KeptAcrossReloads,
) -> anyhow::Result<ClientEnded> {
    let restart = restarts.wake().clone();
    if s.remotes.is_empty() {
        anyhow::bail!("no 'remote' given");
    }
    let mut setup_done = s.setup_done.take();
    // Opened before setup_done drops privileges, and kept (as 2.6 does).
    let status_file = s.status.as_ref().and_then(|st| {
        crate::fsutil::KeptFile::create(&st.path)
            .inspect_err(|e| warn!("cannot open status file {}: {e}", st.path.display()))
            .ok()
    });
    let (peers, counts) = kept.peers_and_counts.take().unwrap_or_else(|| {
        let peers = PeerTable::new();
        let counts = Arc::new(counts::ClientCounts::new(peers.clone()));
        (peers, counts)
    });
    // One link counter for every data plane the client starts.
    s.dataplane.link_counters = Some(counts.link());
    // After a SIGHUP the interface stays as first opened (its settings
    // are not read again); a config without `management` closes it, and
    // one that gained it opens it (2.6's `open_management`).
    let (management, kept_management) = match (s.management.take(), kept.management.take()) {
        (Some(_), Some(open)) => (Some(open), true),
        (Some(m), None) => (
            Some(
                ClientManagement::start(
                    m,
                    counts.clone(),
                    restart.clone(),
                    kept.credentials.clone(),
                )
                .await?,
            ),
            false,
        ),
        (None, _) => (None, false),
    };
    let mgmt = management.as_ref();
    if let (Some(m), false) = (mgmt, kept_management) {
        m.state("CONNECTING", "");
    }
    // `signal SIGTERM` from a management client ends the client as SIGTERM does.
    let exit_asked = mgmt.map(ClientManagement::exit_notify);
    let shutdown = async move {
        match exit_asked {
            Some(asked) => tokio::select! {
                _ = shutdown => {}
                _ = asked.notified() => {}
            },
            None => shutdown.await,
        }
    };
    let mut tunnel = Tunnel::new(
        NetConfig::connect()?,
        dns::DnsBackend::detect().await,
        s.no_exec,
    );
    // The data plane's socket is connected to the server, so it is (re)started
    // when the resolved server address changes; reconnecting to the same
    // address keeps the TUN device and its queues.
    let mut plane: Option<Plane> = None;
    tokio::pin!(shutdown);

    let mut order: Vec<usize> = (0..s.remotes.len()).collect();
    if s.remote_random {
        shuffle(&mut order);
    }
    if let Some(m) = mgmt {
        m.set_remote_entries(order.iter().map(|&i| s.remotes[i].entry_line()).collect());
    }
    let mut walk = Walk::new(order, s.connect_retry_max);
    let credentials = kept.credentials.clone();
    credentials.with(|had| {
        *had = match (s.credentials.clone(), had.take()) {
            // 2.6 neither reads nor asks again what it has after a SIGHUP.
            (Some(_), Some(had)) => Some(had),
            (configured, _) => configured,
        }
    });
    // A new data plane (new socket) for the next attempt even to the same address.
    let mut fresh_socket = false;
    // The current entry's addresses not tried yet (last first): 2.6 tries
    // each address of a remote before it moves to the next entry.
    let mut untried: Vec<SocketAddr> = Vec::new();
    let mut index = match walk.next_entry() {
        Ok(i) => i,
        Err(give_up) => anyhow::bail!("{give_up}"),
    };
    // The description of the EXITING state when the loop ends.
    let mut exit_reason = "SIGTERM";
    if let Some(m) = mgmt {
        // After a SIGHUP 2.6 holds again (`do_hold(0)` in
        // `open_management`) if the hold flag is still on.
        if !kept_management || m.hold_again(0) {
            info!("Need hold release from management interface, waiting...");
            tokio::select! {
                _ = m.wait_for_hold_release() => {}
                _ = &mut shutdown => {
                    m.state("EXITING", EXIT_IN_INIT_INSTANCE);
                    m.flush().await;
                    return Ok(ClientEnded::Exit);
                }
            }
        }
        m.started();
    }
    // Each configuration read asks for the credentials it lacks right
    // after the hold (2.6's `init_query_passwords` in `openvpn_main`),
    // before the key's passphrase (vectors/client_private_key.txt).
    if let Some(m) = mgmt
        && credentials_to_ask(&credentials)
    {
        tokio::select! {
            _ = ask_credentials(m, &credentials) => {}
            _ = &mut shutdown => {
                m.cancel_password_query();
                m.state("EXITING", exit_reason);
                m.flush().await;
                return Ok(ClientEnded::Exit);
            }
        }
    }
    let mut deferred_key = s.key_passphrase.take();
    let key_memory = s.key_memory.clone();
    if let Some(key) = deferred_key.as_mut().filter(|_| !s.key_opened) {
        let connect_retry = whole_secs(s.remotes[index].connect_retry);
        match open_key(
            mgmt,
            key,
            &key_memory,
            true,
            &restart,
            connect_retry,
            shutdown.as_mut(),
        )
        .await
        {
            Opened::Key(session, _) => s.session = session,
            Opened::Fatal(e) => return Err(e),
            Opened::Shutdown => {
                if let Some(m) = mgmt {
                    m.state("EXITING", crate::key_passphrase::EXIT_IN_PAUSE_REASON);
                    m.flush().await;
                }
                return Ok(ClientEnded::Exit);
            }
        }
    }
    // 2.6 opens its plugins after the hold, as root (privileges are
    // dropped once the data plane runs), with the scripts' environment.
    let plugins = crate::plugin::Plugins::open(
        &s.scripts.plugins,
        crate::plugin::CLIENT_SERVED,
        &s.scripts.base_env,
    )?;
    let mut client_scripts = scripts::ClientScripts::new(s.scripts.clone(), plugins);
    // A SIGHUP ended this instance: the next one reads the config again.
    let mut reloading_next = false;
    // The key is opened again before the next attempt: 2.6 frees its TLS
    // context on every restart of the connection (SIGUSR1, ping-restart,
    // ...) unless `persist-key` (`do_close_free_key_schedule`).
    let mut reopen_key = false;
    // The client ends with `>FATAL:` and without an `EXITING` state.
    let mut fatal_said = false;
    let result = loop {
        exit_reason = "SIGTERM";
        let configured = &s.remotes[index];
        // management-query-remote / -proxy: asked before every attempt.
        let choice = match mgmt {
            Some(m) => tokio::select! {
                c = entry_query::ask(m, configured, walk.position()) => c,
                _ = &mut shutdown => {
                    m.cancel_entry_query();
                    break Ok(());
                }
            },
            None => entry_query::Choice::AsConfigured,
        };
        let changed;
        let remote = match choice {
            entry_query::Choice::AsConfigured => configured,
            entry_query::Choice::Changed(r) => {
                changed = *r;
                &changed
            }
            entry_query::Choice::Skip(n) => {
                // On to the entry's next address, or n entries on, and ask
                // again: no pause, no hold (2.6's next_connection_entry).
                if untried.len() > 1 {
                    untried.pop();
                } else {
                    untried.clear();
                    index = match walk.skip(n) {
                        Ok(i) => i,
                        Err(why) => break Err(anyhow::anyhow!(why)),
                    };
                }
                continue;
            }
        };
        if let Some(m) = mgmt {
            // With `auth-retry interact` 2.6 asks for missing credentials
            // at every restart, before it opens the key (`init_instance`
            // calls `init_query_passwords`); otherwise the key exchange
            // asks for them (`key_method_2_write`, see [`Connection`]).
            if s.auth_retry == AuthRetry::Interact && credentials_to_ask(&credentials) {
                tokio::select! {
                    _ = ask_credentials(m, &credentials) => {}
                    _ = &mut shutdown => {
                        m.cancel_password_query();
                        break Ok(());
                    }
                }
            }
        }
        if let Some(key) = deferred_key.as_mut().filter(|_| reopen_key) {
            let connect_retry = whole_secs(remote.connect_retry);
            match open_key(
                mgmt,
                key,
                &key_memory,
                false,
                &restart,
                connect_retry,
                shutdown.as_mut(),
            )
            .await
            {
                Opened::Key(session, _) => s.session = session,
                Opened::Fatal(e) => {
                    fatal_said = mgmt.is_some();
                    break Err(e);
                }
                Opened::Shutdown => {
                    exit_reason = crate::key_passphrase::EXIT_IN_PAUSE_REASON;
                    break Ok(());
                }
            }
        }
        if let Some(m) = mgmt
            && untried.is_empty()
            && !remote.waits()
            && remote.host.parse::<IpAddr>().is_err()
        {
            m.state("RESOLVE", "");
        }
        let server = if untried.is_empty() {
            resolve(remote).await.map(|mut addrs| {
                addrs.reverse();
                untried = addrs;
                untried.pop().expect("resolve returns at least one address")
            })
        } else {
            Ok(untried.pop().expect("checked non-empty"))
        };
        let mut ended = match server {
            Ok(server) => {
                let reloaded = credentials.with(|c| match c {
                    // auth-nocache or forget-passwords dropped the password
                    // after the last use: read again from where it came
                    // from (the management interface asks in the key
                    // exchange).
                    Some(c)
                        if !c.has_secret()
                            && !matches!(c.source, CredentialSource::Management { .. }) =>
                    {
                        reload(&s, c)
                    }
                    _ => Ok(()),
                });
                if let Err(e) = reloaded {
                    break Err(e.context("auth-user-pass"));
                }
                match &remote.proxy {
                    _ if remote.waits() => {
                        info!("no 'remote': waiting on {} for the peer", remote.bind)
                    }
                    Some(p) => info!(
                        "connecting to {}:{} ({:?}) through proxy {}:{} ({server})",
                        remote.host,
                        remote.port,
                        remote.transport,
                        p.host(),
                        p.port()
                    ),
                    None => info!(
                        "connecting to {}:{} ({server}, {:?})",
                        remote.host, remote.port, remote.transport
                    ),
                }
                let fresh = std::mem::take(&mut fresh_socket);
                // SOCKS over UDP: the association first; the data plane
                // then talks to the relay task as if it were the server.
                match socks_udp_relay(remote, server).await {
                    Err(e) => {
                        Ended::Reconnect(format!("SOCKS UDP association through {server}: {e:#}"))
                    }
                    Ok(socks_relay) => {
                        // The server's (or proxy's) address stays what the
                        // routes go around; the data plane may talk to the relay.
                        let outer = server;
                        let data_server = socks_relay.as_ref().map_or(server, |r| r.local);
                        match ensure_plane(
                            &s,
                            remote,
                            &peers,
                            &mut plane,
                            data_server,
                            fresh,
                            &mut tunnel,
                        ) {
                            Ok(p) => {
                                if let Some(done) = setup_done.take()
                                    && let Err(e) = done()
                                {
                                    break Err(e);
                                }
                                if !remote.waits() {
                                    tunnel.route_around(server.ip()).await;
                                }
                                if let Some(m) = mgmt
                                    && remote.transport == Transport::Tcp
                                {
                                    m.state("TCP_CONNECT", "");
                                }
                                counts.connection_started();
                                match open_link(remote, &p.dp, data_server).await {
                                    Ok(server) => {
                                        let outcome = Connection {
                                            settings: &s,
                                            remote,
                                            dp: &p.dp,
                                            peers: &peers,
                                            up: &mut p.up,
                                            server,
                                            outer: outer.ip(),
                                            restart: &restart,
                                            tunnel: &mut tunnel,
                                            credentials: &credentials,
                                            status_file: status_file.as_ref(),
                                            counts: &counts,
                                            scripts: &mut client_scripts,
                                            management: mgmt,
                                        }
                                        .run(shutdown.as_mut())
                                        .instrument(crate::peer_log::peer_span(None, server))
                                        .await;
                                        // Over TCP the connection ends with the session.
                                        p.dp.close_stream(server);
                                        if outcome.connected {
                                            // The next attempt stays on this entry, and
                                            // the count of failures starts over (2.6).
                                            walk.connected();
                                            // Its other addresses are not tried: the
                                            // next attempt resolves anew.
                                            untried.clear();
                                        }
                                        outcome.ended
                                    }
                                    Err(e) => {
                                        Ended::Reconnect(format!("TCP connect to {server}: {e:#}"))
                                    }
                                }
                            }
                            Err(e) if is_unreachable(&e) => {
                                Ended::Reconnect(format!("no way to {server} yet: {e}"))
                            }
                            Err(e) => {
                                break Err(anyhow::Error::new(e).context("starting the data plane"));
                            }
                        }
                    }
                }
            }
            Err(e) => Ended::Reconnect(format!("cannot resolve {}: {e:#}", remote.host)),
        };
        // Every way this attempt ended restarts the connection (or ends
        // the instance, where the flag no longer matters).
        reopen_key = !s.persist_key;
        if matches!(ended, Ended::ServerLeft(_)) {
            // Only an ephemeral port changes; a fixed lport stays as it is.
            fresh_socket = remote.bind.port() == 0;
        }
        let tls_error =
            matches!(&ended, Ended::Reconnect(why) if why.starts_with(TLS_HANDSHAKE_FAILED));
        let tls_exit = tls_error && s.tls_exit;
        if tls_exit && let Ended::Reconnect(why) = &ended {
            // 2.6 raises SIGTERM in place of SIGUSR1 for its TLS errors
            // with tls-exit (forward.c `check_tls_errors`): the client
            // ends as on a ping-exit, with the reason `tls-error`.
            ended = Ended::Exit(format!("{why} (tls-exit)"));
            if let (Some(m), Some(_)) = (mgmt, remote.explicit_exit_notify) {
                // With explicit-exit-notify that first SIGTERM only starts
                // the notification; 2.6's loop then begins a new TLS
                // session (`>STATE:...,WAIT`) and its still-counted hard
                // error raises SIGTERM `tls-error` again, which ends it.
                m.state("WAIT", "");
            }
        }
        if tls_error || matches!(ended, Ended::Restart | Ended::AuthFailed(_)) {
            // 2.6 closes its socket on these soft restarts too: the server
            // still holds the old session for this address (for its
            // hand-window after AUTH_FAILED), and would take a new session
            // from it for a renegotiation of the old one. After a refused
            // handshake (tls-verify) the server waits for our key method
            // on the old session: the same holds.
            fresh_socket = remote.bind.port() == 0;
        }
        // A real signal's name, else a management client's (or SIGUSR1).
        let from_management = mgmt.map_or("SIGUSR1", ClientManagement::take_restart_signal);
        let restart_signal = restarts
            .take()
            .map_or(from_management, crate::RestartKind::signal_name);
        let why = state_reason(&ended, restart_signal);
        let hard_restart = matches!(ended, Ended::Restart) && restart_signal == "SIGHUP";
        if let (Some(m), Ended::AuthFailed(reason)) = (mgmt, &ended) {
            m.line(verification_failed(reason));
        }
        // With explicit-exit-notify, a SIGTERM (from outside, a ping-exit,
        // an AUTH_FAILED that ends the client) goes out as 2.6's exit
        // notification, which names itself the signal; a vetoed key keeps
        // saying `auth-control-exit` (2.6 raises it again while it waits),
        // and so does a TLS error with tls-exit.
        let vetoed = matches!(&ended, Ended::Exit(why) if why.contains(AUTH_CONTROL_EXIT));
        let signal = if remote.explicit_exit_notify.is_some()
            && !vetoed
            && !tls_exit
            && (matches!(ended, Ended::Shutdown | Ended::Exit(_))
                || matches!(ended, Ended::AuthFailed(_)) && s.auth_retry == AuthRetry::None)
        {
            "exit-with-notification"
        } else if hard_restart {
            "sighup"
        } else {
            signal_text(&ended)
        };
        // 2.6 keeps the device with persist-tun on SIGUSR1 only: a SIGHUP
        // closes it (`do_close_tun`).
        let hooks = if hard_restart || !keeps_tunnel(s.persist_tun, &ended) {
            let before = client_scripts.before_tear_down(signal, mgmt).await;
            tunnel.tear_down().await;
            // After a fatal failure before, nothing runs here.
            let after = client_scripts.after_tear_down(signal).await;
            before.and(after)
        } else if tunnel.is_configured() {
            info!("persist-tun: keeping the tunnel's addresses and routes while reconnecting");
            client_scripts.tunnel_kept(signal).await
        } else {
            Ok(())
        };
        if let Err(fatal) = hooks {
            break Err(anyhow::anyhow!(fatal));
        }
        // With explicit-exit-notify, 2.6 turns a SIGTERM (an AUTH_FAILED
        // that ends the client is one) into its notification first, and
        // exits with that as the reason.
        exit_reason = if remote.explicit_exit_notify.is_some()
            && matches!(ended, Ended::Shutdown | Ended::AuthFailed(_))
        {
            "exit-with-notification"
        } else {
            why
        };
        let reason = match ended {
            Ended::Shutdown => break Ok(()),
            Ended::Exit(reason) => {
                warn!("exiting: {reason}");
                break Ok(());
            }
            Ended::Fatal(reason) => break Err(anyhow::anyhow!(reason)),
            Ended::AuthFailed(reason) => {
                let again = credentials.with(|creds| {
                    let token_refused = creds.as_ref().is_some_and(Credentials::has_token);
                    if let Some(c) = creds.as_mut() {
                        c.auth_failed();
                    }
                    // A refused auth-token (expired, server restarted) is
                    // retried with the password whatever auth-retry says,
                    // as 2.6 does.
                    if token_refused {
                        return Ok(true);
                    }
                    match (s.auth_retry, creds.as_mut()) {
                        (AuthRetry::None, _) => Ok(false),
                        (AuthRetry::NoInteract, _) | (AuthRetry::Interact, None) => Ok(true),
                        // Asked again over the management interface
                        // before the next attempt, as 2.6.
                        (AuthRetry::Interact, Some(c))
                            if matches!(c.source, CredentialSource::Management { .. }) =>
                        {
                            c.forget_password();
                            Ok(true)
                        }
                        (AuthRetry::Interact, Some(c)) => reload(&s, c).map(|()| true),
                    }
                });
                let again = match again {
                    Ok(again) => again,
                    Err(e) => break Err(e.context(format!("AUTH_FAILED: {reason}"))),
                };
                if !again {
                    break Err(anyhow::anyhow!("AUTH_FAILED: {reason}"));
                }
                format!("AUTH_FAILED: {reason}")
            }
            Ended::Restart if hard_restart => {
                // 2.6's main loop: the instance ends (its plugins close,
                // the tun device closes), the config is read again and a
                // new instance starts (`openvpn_main`).
                info!("SIGHUP[hard,] received, process restarting");
                reloading_next = true;
                break Ok(());
            }
            Ended::Restart => {
                info!("restarting the connection ({why})");
                if let Some(m) = mgmt {
                    m.state("RECONNECTING", why);
                    // 2.6 waits connect-retry after SIGUSR1.
                    let pause = whole_secs(remote.connect_retry);
                    if m.hold_again(pause) {
                        tokio::select! {
                            _ = m.wait_for_hold_release() => {}
                            _ = &mut shutdown => {
                                exit_reason = EXIT_IN_INIT_INSTANCE;
                                break Ok(());
                            }
                        }
                    }
                }
                untried.clear();
                index = match walk.next_entry() {
                    Ok(i) => i,
                    Err(give_up) => break Err(anyhow::anyhow!("{give_up}")),
                };
                continue;
            }
            Ended::Reconnect(reason) | Ended::ServerLeft(reason) => reason,
        };
        let wait = walk.pause(
            remote.connect_retry,
            remote.connect_retry_max,
            s.auth_retry == AuthRetry::NoInteract,
        );
        if untried.is_empty() {
            index = match walk.next_entry() {
                Ok(i) => i,
                Err(give_up) => break Err(anyhow::anyhow!("giving up: {give_up}: {reason}")),
            };
        }
        warn!(
            "connection ended: {reason}; retrying in {}s",
            wait.as_secs_f32()
        );
        if let Some(m) = mgmt {
            m.state("RECONNECTING", why);
        }
        // With management-hold the hold takes the pause's place, as 2.6.
        if let Some(m) = mgmt
            && m.hold_again(whole_secs(wait))
        {
            tokio::select! {
                _ = m.wait_for_hold_release() => {}
                _ = &mut shutdown => {
                    exit_reason = EXIT_IN_INIT_INSTANCE;
                    break Ok(());
                }
            }
            continue;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => {
                exit_reason = EXIT_IN_INIT_INSTANCE;
                break Ok(());
            }
        }
    };
    let before = client_scripts.before_tear_down("sigterm", mgmt).await;
    tunnel.tear_down().await;
    let after = client_scripts.after_tear_down("sigterm").await;
    let result = result.and(before.and(after).map_err(|fatal| anyhow::anyhow!(fatal)));
    if let Some(p) = plane {
        p.dp.shutdown();
    }
    if let Some(m) = mgmt {
        if reloading_next {
            // 2.6's `signal_restart_status` before the config is read again.
            m.state("RECONNECTING", "SIGHUP");
        } else if !fatal_said {
            m.state("EXITING", exit_reason);
        }
        m.flush().await;
    }
    result?;
    if !reloading_next {
        return Ok(ClientEnded::Exit);
    }
    // Plugins close now, before the next instance opens them again.
    drop(client_scripts);
    *kept = KeptAcrossReloads {
        management,
        peers_and_counts: Some((peers, counts)),
        credentials,
    };
    Ok(ClientEnded::Reload)
}

/// Get the credentials again from where they came from.
fn reload(s: &ClientSettings, c: &mut Credentials) -> anyhow::Result<()> {
    let Some(reload) = &s.reload_credentials else {
        anyhow::bail!("the credentials cannot be read again");
    };
    let (user, pass) = reload(&c.source)?;
    c.set(user, pass);
    Ok(())
}

/// Start the data plane for `server` unless the running one already talks
/// to it. With the tunnel configured (persist-tun), the new one attaches to
/// the same TUN device before the old one lets go of it, so its addresses
/// and routes stay.
fn ensure_plane<'p>(
    s: &ClientSettings,
    remote: &Remote,
    peers: &PeerTable,
    plane: &'p mut Option<Plane>,
    server: SocketAddr,
    fresh: bool,
    tunnel: &mut Tunnel,
) -> Result<&'p mut Plane, DataPlaneError> {
    let current = plane.as_ref().is_some_and(|p| {
        !fresh
            && p.server == server
            && p.transport == remote.transport
            && p.bind == remote.bind
            && p.float == remote.floats()
    });
    if !current {
        let mut cfg = s.dataplane.clone();
        cfg.connect = Some(server);
        cfg.float = remote.floats();
        cfg.transport = remote.transport;
        cfg.bind = bind_towards(remote.bind, server);
        let old = plane.take();
        let reattached = match &old {
            Some(o) if tunnel.is_configured() => {
                let mut same_dev = cfg.clone();
                same_dev.tun_name = o.dp.tun_name().to_owned();
                Plane::start(same_dev, peers)
                    .inspect_err(|e| {
                        warn!(
                            "cannot reattach to {}: {e}; the tunnel goes down while reconnecting",
                            o.dp.tun_name()
                        )
                    })
                    .ok()
            }
            _ => None,
        };
        if let Some(o) = old {
            o.dp.shutdown();
        }
        let p = match reattached {
            Some(p) => p,
            None => {
                // The old device went away, and its addresses and routes with it.
                tunnel.forget();
                Plane::start(cfg, peers)?
            }
        };
        *plane = Some(p);
    }
    Ok(plane.as_mut().expect("set above"))
}

/// Over TCP, connect (through the entry's proxy, if any) and hand the
/// connection to the data plane; the session then talks to the
/// connection's peer address. Over UDP the data plane's socket is
/// connected already.
async fn open_link(
    remote: &Remote,
    dp: &DataPlane,
    server: SocketAddr,
) -> anyhow::Result<SocketAddr> {
    if remote.transport != Transport::Tcp {
        return Ok(server);
    }
    let stream = match &remote.proxy {
        Some(proxy) => {
            link::through_proxy(
                proxy,
                server,
                remote.tcp_bind,
                &remote.host_for_attempt(),
                remote.port,
                remote.connect_timeout,
            )
            .await?
        }
        None => tokio::time::timeout(
            remote.connect_timeout,
            link::connect_tcp(server, remote.tcp_bind),
        )
        .await
        .map_err(|_| {
            anyhow::anyhow!("no connection within {}s", remote.connect_timeout.as_secs())
        })??,
    };
    let peer = dp.attach_stream(stream.into_std()?)?;
    info!("TCP connection to {peer} established");
    Ok(peer)
}

/// For a UDP entry through a SOCKS proxy at `proxy_addr`: the UDP
/// association, then (as 2.6, after it) the server's IPv4 address, which
/// every datagram's header names, and a relay task the data plane sends to.
/// `None` for every other entry.
async fn socks_udp_relay(
    remote: &Remote,
    proxy_addr: SocketAddr,
) -> anyhow::Result<Option<socks_udp::SocksUdpRelay>> {
    let (Transport::Udp, Some(Proxy::Socks(p))) = (remote.transport, &remote.proxy) else {
        return Ok(None);
    };
    let bind = (remote.bind != SocketAddr::from(([0, 0, 0, 0], 0))).then_some(remote.bind);
    let assoc = link::socks_udp_associate(p, proxy_addr, bind, remote.connect_timeout).await?;
    let host = remote.host_for_attempt();
    let server = tokio::net::lookup_host((host.as_str(), remote.port))
        .await?
        .find_map(|a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .ok_or_else(|| {
            anyhow::anyhow!("no IPv4 address for {host}: a SOCKS UDP header names an IPv4 server")
        })?;
    Ok(Some(socks_udp::SocksUdpRelay::start(assoc, server).await?))
}

/// The addresses an attempt may connect to: the entry's proxy's, else
/// every address of its server that its `proto` allows, in the resolver's
/// order (2.6 tries each before it moves to the next remote).
async fn resolve(r: &Remote) -> anyhow::Result<Vec<SocketAddr>> {
    if r.waits() {
        // No peer to resolve: the unspecified address of the bound
        // family stands for it until the peer's first packet names it.
        let unspecified = match r.bind.ip() {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        return Ok(vec![SocketAddr::new(unspecified, 0)]);
    }
    let (host, port, family) = match &r.proxy {
        Some(p) => (p.host().to_string(), p.port(), None),
        None => (r.host_for_attempt(), r.port, r.family),
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await?
        .filter(|a| family.is_none_or(|v6: bool| a.is_ipv6() == v6))
        .collect();
    if addrs.is_empty() {
        anyhow::bail!(
            "no {} address for {host}",
            match family {
                Some(true) => "IPv6",
                Some(false) => "IPv4",
                None => "usable",
            }
        );
    }
    Ok(addrs)
}

/// Poor man's shuffle for `remote-random`: the order only needs to vary.
fn shuffle(v: &mut [usize]) {
    let mut seed = [0u8; 8];
    ferrovpn_proto::random::fill(&mut seed);
    let mut x = u64::from_le_bytes(seed) | 1;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_reasons_as_2_6() {
        // vectors/client_connect_restart.txt, client_wrong_password.txt
        let cases = [
            (Ended::Shutdown, "SIGTERM"),
            (Ended::AuthFailed(String::new()), "auth-failure"),
            (Ended::Restart, "SIGHUP"),
            (
                Ended::Reconnect("inactivity timeout (ping-restart 10s)".into()),
                "ping-restart",
            ),
            (
                Ended::Exit("inactivity timeout (ping-exit 5s)".into()),
                "ping-exit",
            ),
            (
                Ended::Exit("inactivity timeout (inactive 5s)".into()),
                "inactive",
            ),
            (
                Ended::ServerLeft("server sent RESTART ".into()),
                "server-pushed-connection-reset",
            ),
            (
                Ended::ServerLeft("server sent exit notification".into()),
                "remote-exit",
            ),
            (
                Ended::Fatal("server sent HALT ".into()),
                "server-pushed-halt",
            ),
            (
                Ended::Reconnect("connection to x ended: reset".into()),
                "connection-reset",
            ),
            (
                Ended::Reconnect(
                    ferrovpn_proto::session::SessionError::NoPushReply(10).to_string(),
                ),
                "no-push-reply",
            ),
            (
                Ended::Reconnect(format!(
                    "{TLS_HANDSHAKE_FAILED}: {}",
                    ferrovpn_proto::session::SessionError::PeerRefused
                )),
                "tls-error",
            ),
            // tls-exit: 2.6's SIGTERM[soft,tls-error].
            (
                Ended::Exit(format!("{TLS_HANDSHAKE_FAILED}: hand-window (tls-exit)")),
                "tls-error",
            ),
        ];
        for (ended, reason) in cases {
            assert_eq!(state_reason(&ended, "SIGHUP"), reason, "{ended:?}");
        }
        let tls_exit = Ended::Exit(format!("{TLS_HANDSHAKE_FAILED}: x (tls-exit)"));
        assert_eq!(signal_text(&tls_exit), "tls-error");
        assert_eq!(
            verification_failed(""),
            ">PASSWORD:Verification Failed: 'Auth'"
        );
        assert_eq!(
            verification_failed("CRV1:R,E:state:dXNlcg==:Enter code"),
            ">PASSWORD:Verification Failed: 'Auth' ['CRV1:R,E:state:dXNlcg==:Enter code']"
        );
    }

    #[test]
    fn entry_lines_as_2_6() {
        let mut r = Remote::udp("vpn.example", 1194);
        assert_eq!(r.entry_line(), "vpn.example,1194,udp,enabled");
        r.family = Some(true);
        assert_eq!(r.entry_line(), "vpn.example,1194,udp6,enabled");
        r.transport = Transport::Tcp;
        r.family = None;
        r.port = 443;
        assert_eq!(r.entry_line(), "vpn.example,443,tcp-client,enabled");
        r.family = Some(false);
        assert_eq!(r.entry_line(), "vpn.example,443,tcp4-client,enabled");
    }

    #[test]
    fn persist_tun_keeps_the_tunnel_across_restarts_only() {
        let restarts = [
            Ended::Reconnect("ping-restart".into()),
            Ended::ServerLeft("RESTART".into()),
            Ended::Restart,
            Ended::AuthFailed("token expired".into()),
        ];
        let exits = [
            Ended::Shutdown,
            Ended::Exit("ping-exit".into()),
            Ended::Fatal("HALT".into()),
        ];
        for e in &restarts {
            assert!(keeps_tunnel(true, e), "{e:?}");
            assert!(!keeps_tunnel(false, e), "{e:?}");
        }
        for e in &exits {
            assert!(!keeps_tunnel(true, e), "{e:?}");
        }
    }
}
