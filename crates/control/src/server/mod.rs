//! The server's control plane: accepts clients, runs their sessions, hands
//! out addresses and peer-ids, pushes options, and publishes peers and keys
//! to the data plane. Runs on its own single-threaded tokio runtime; the data
//! plane's workers only ever talk to it through a bounded queue.

mod admission;
pub mod auth_token;
mod client_config_dir;
mod hooks;
pub mod ipv6;
mod liveness;
mod locked;
mod management_auth;
mod own_tunnel;
mod pool;
pub mod pool_persist;
pub mod port_share;
mod push;
mod registry;
mod tcp;
mod throttle;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ferrovpn_config::ClientConfig;
use ferrovpn_dataplane::{DataPlane, DataPlaneConfig, PeerTable, Transport, UpEvent};
use ferrovpn_proto::data::{Cipher, DataKeys, OCC_EXIT, OCC_MAGIC, PING_PAYLOAD, Side};
use ferrovpn_proto::key_method::PeerInfo;
use ferrovpn_proto::session::cookie::CookieKey;
use ferrovpn_proto::session::{Event, Session, SessionConfig, tls};
use ferrovpn_proto::tls_crypt_v2::ServerKey;
use tracing::{debug, error, info, warn};
use zeroize::Zeroizing;

use self::admission::{Admit, Stateless};
pub use self::client_config_dir::ClientConfigDir;
use self::liveness::{Observed, Policy, Verdict};
use self::pool::AddressPool;
pub use self::push::build_push_reply;
use self::registry::{AssignError, Registry};
use self::tcp::{Accept, Pending};
use self::throttle::{ConnectFreq, HALF_OPEN_PER_IP, InitialReplies, Reply, half_open_cap};
use crate::fsutil::KeptFile;
use crate::key_passphrase::{self, DeferredKey, Opened};
use crate::management::{self, Answer, LoadStats, Management, Notice, Query};
use crate::metrics::{self, http::ScrapeRequest};
use crate::netconfig::{self, NetConfig};
use crate::ratelimit::DropLog;
use crate::scripts::{self, ScriptSettings};
use crate::status::{self, ClientRow, StatusSettings};

/// Everything the server runtime needs, already validated by the config layer.
pub struct ServerSettings {
    pub dataplane: DataPlaneConfig,
    /// `server NET MASK`: the tunnel's IPv4 network and mask; `None` on an
    /// IPv6-only server (`server-ipv6` or `ifconfig-ipv6` alone).
    pub ipv4_net: Option<(Ipv4Addr, Ipv4Addr)>,
    /// Inclusive range of IPv4 client addresses handed out; `None` without
    /// an IPv4 pool (`server ... nopool`, or an IPv6-only server).
    pub pool: Option<(Ipv4Addr, Ipv4Addr)>,
    /// `push "..."` lines, in config order.
    pub pushes: Vec<String>,
    /// IPv6 inside the tunnel: `server-ipv6 NET/BITS`, or `ifconfig-ipv6`
    /// (+ `ifconfig-ipv6-pool`).
    pub ipv6: Option<ferrovpn_config::TunnelIpv6>,
    /// `tun-ipv6` first in the push list: 2.6's `server-ipv6` helper puts
    /// it there (`ifconfig-ipv6` + `ifconfig-ipv6-pool` by hand do not).
    pub push_tun_ipv6: bool,
    /// `route-ipv6 NET/BITS [GW] [METRIC]` lines: IPv6 networks routed into
    /// the tunnel, with their metric (theirs or `route-metric`'s).
    pub routes_ipv6: Vec<(std::net::Ipv6Addr, u8, Option<u32>)>,
    /// Each `route-ipv6` line's own GATEWAY (as `routes_ipv6`): only the
    /// scripts' `route_ipv6_gateway_N` shows it (a tun routes by device).
    pub route_ipv6_gateways: Vec<Option<std::net::Ipv6Addr>>,
    /// `route NET MASK [GW] [METRIC]` lines: networks behind clients, routed
    /// into the tunnel, with their metric (theirs or `route-metric`'s).
    pub routes: Vec<(Ipv4Addr, Ipv4Addr, Option<u32>)>,
    /// `ifconfig-noexec` / `route-noexec`.
    pub no_exec: netconfig::NoExec,
    /// Local keepalive: send a ping after this much silence.
    pub ping: Option<Duration>,
    /// Local keepalive: drop a client after this much silence.
    pub ping_restart: Option<Duration>,
    /// Pushed keepalive (`ping`, `ping-restart`) values.
    pub push_keepalive: Option<(u32, u32)>,
    pub session: Arc<SessionConfig>,
    /// `tls-crypt-v2` server key: unwraps the keys of clients that have
    /// their own (`session.wrap` serves the others, if any).
    pub tls_crypt_v2: Option<Arc<ServerKey>>,
    /// Authenticated clients at most; half-open sessions are capped apart.
    pub max_clients: usize,
    /// `connect-freq N SEC` (`SEC` 0: no limit).
    pub connect_freq: (u32, u32),
    /// `connect-freq-initial N SEC`.
    pub connect_freq_initial: (u32, u32),
    pub tun_mtu: u16,
    /// `reneg-bytes`: renegotiate after this many data-channel bytes (sent
    /// plus received) on the current key.
    pub reneg_bytes: Option<u64>,
    /// `reneg-pkts`: the same in packets.
    pub reneg_pkts: Option<u64>,
    /// `duplicate-cn`: clients may share a certificate CN. Without it a new
    /// connection drops the earlier sessions of the same CN, like OpenVPN.
    pub duplicate_cn: bool,
    /// `crl-verify FILE`: re-read when the file changes.
    pub crl_reload: Option<CrlReload>,
    /// `status FILE [N]` / `status-version`.
    pub status: Option<StatusSettings>,
    /// `ifconfig-pool-persist FILE [N]`.
    pub pool_persist: Option<PoolPersist>,
    /// `comp-lzo` / `compress`: the framing of every client's payloads.
    pub compression: ferrovpn_proto::compress::Framing,
    /// `management ...` and the `management-*` directives.
    pub management: Option<management::ManagementSettings>,
    /// `client-config-dir DIR` (+ `ccd-exclusive`).
    pub client_config_dir: Option<ClientConfigDir>,
    /// `metrics IP:PORT`: where the Prometheus endpoint listens.
    pub metrics: Option<SocketAddr>,
    /// `script-security` and the scripts.
    pub scripts: ScriptSettings,
    /// `username-as-common-name`.
    pub username_as_common_name: bool,
    /// `auth-user-pass-optional`: a client without a login is checked with
    /// an empty user name and password.
    pub auth_user_pass_optional: bool,
    /// `auth-gen-token` / `auth-gen-token-secret`.
    pub auth_token: Option<AuthTokenSettings>,
    /// Called after setup, before the first client is served.
    pub setup_done: Option<crate::SetupDone>,
    /// `persist-tun`: a soft restart (SIGUSR1) keeps the tunnel device,
    /// configured, and its routes, as 2.6 does.
    pub persist_tun: bool,
    /// `persist-key`: a soft restart (SIGUSR1) does not open the key
    /// again, so it does not ask for its passphrase (2.6 keeps its TLS
    /// context then, `do_close_free_key_schedule`).
    pub persist_key: bool,
    /// `explicit-exit-notify [N]` (UDP): before exiting or restarting, tell
    /// the UDP clients `RESTART` (`RESTART,[N]` with 2) and wait 2 seconds,
    /// as 2.6's `multi_push_restart_schedule_exit`.
    pub explicit_exit_notify: Option<u32>,
    /// TCP listeners (`proto tcp-server`, `local ADDR PORT tcp` lines): all
    /// serve the one client table, next to the data plane's UDP socket
    /// when `dataplane.transport` is `UdpAndTcp`.
    pub tcp_listeners: Vec<SocketAddr>,
    /// `port-share HOST PORT [DIR]`.
    pub port_share: Option<port_share::PortShare>,
    /// `management-query-passwords` with an encrypted key: `session` has
    /// no TLS server settings yet; they (and `crl_reload`) come from the
    /// key opened with the passphrase asked after the hold.
    pub key_passphrase: Option<DeferredKey<OpenedServerKey>>,
}

/// What a server builds from its opened private key.
pub struct OpenedServerKey {
    pub session: Arc<SessionConfig>,
    pub crl_reload: Option<CrlReload>,
}

/// `auth-gen-token`: the key and limits of session tokens.
pub struct AuthTokenSettings {
    pub key: auth_token::TokenKey,
    pub limits: auth_token::Limits,
    /// `external-auth`: a token login runs auth-user-pass-verify anyway.
    pub external_auth: bool,
}

/// Where addresses are remembered, and how often the file is rewritten
/// (`None`: `ifconfig-pool-persist FILE 0`, read only).
pub struct PoolPersist {
    pub path: PathBuf,
    pub write_every: Option<Duration>,
}

/// How to follow a `crl-verify` file: when it changes, `rebuild` makes the
/// session configuration for its new text. New sessions use it, existing
/// ones from their next renegotiation (as in OpenVPN, which checks the CRL
/// at every TLS handshake). An unreadable or broken file refuses new
/// sessions until it is fixed, rather than letting revoked clients in.
pub struct CrlReload {
    pub path: PathBuf,
    #[allow(clippy::type_complexity)] // one closure type, named once
    pub rebuild: Box<dyn Fn(&str) -> anyhow::Result<Arc<SessionConfig>> + Send + Sync>,
}

/// What identifies one version of a file without reading it.
type FileStamp = Option<(Option<SystemTime>, u64, u64)>;

fn file_stamp(path: &Path) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.modified().ok(), m.len(), m.ino()))
}

impl ServerSettings {
    /// The server's own IPv4 tunnel address: the first host of the network.
    pub fn server_ip(&self) -> Option<Ipv4Addr> {
        let (network, _) = self.ipv4_net?;
        Some(Ipv4Addr::from(u32::from(network) + 1))
    }

    /// The IPv4 tunnel netmask (`None` on an IPv6-only server).
    pub fn netmask(&self) -> Option<Ipv4Addr> {
        self.ipv4_net.map(|(_, mask)| mask)
    }

    /// The tunnel device `dev` as the scripts see it.
    pub fn tunnel(&self, dev: &str) -> scripts::Tunnel {
        scripts::Tunnel {
            dev: dev.to_owned(),
            tun_mtu: self.tun_mtu,
            local: self.server_ip(),
            netmask: self.netmask(),
            ipv6: self.ipv6,
        }
    }

    /// The server's pool: its IPv4 range and the IPv6 pool paired with it.
    pub fn address_pool(&self) -> AddressPool {
        let ipv6 = (self.ipv6.as_ref())
            .and_then(|v6| v6.pool.as_ref())
            .map(|p| pool::Ipv6Range {
                first: p.first(),
                size: p.size(),
            });
        AddressPool::new(self.pool, ipv6, self.duplicate_cn)
    }
}

struct Client {
    session: Session,
    cipher: Option<Cipher>,
    peer_info: Option<PeerInfo>,
    common_name: Option<String>,
    last_control_rx: Instant,
    remove_at: Option<Instant>,
    /// Data-plane (bytes, packets) counters when the current key became the
    /// send key: the baseline for `reneg-bytes` / `reneg-pkts`.
    key_traffic_base: (u64, u64),
    /// Link bytes of its control packets (received, sent), from the one
    /// that made its session on: 2.6 counts a client's link bytes from its
    /// instance on, and the stateless answer to the first reset makes none.
    control_link_bytes: (u64, u64),
    /// Unix seconds when the session was made (the status file's "Connected Since").
    since: u64,
    /// Client ID as the management interface and status show it: never reused.
    cid: u64,
    /// Whether management clients were told it is established.
    announced: bool,
    /// Its `client-config-dir` file, once read (`disable`d when refused).
    client_config: Option<ClientConfig>,
    /// Data-channel keys negotiated: the first handshake and each renegotiation.
    handshakes: u64,
    /// Its way through the login scripts.
    admission: hooks::Admission,
    /// Key events held until it is admitted.
    held: Vec<Event>,
    /// The user name it logged in with (remapped as 2.6 does).
    username: Option<String>,
    /// `auth-gen-token`: its token session, once it logged in.
    token_session: Option<auth_token::TokenSession>,
    /// A renegotiation's deferred login: its control files and deadline.
    reauth: Option<(crate::scripts::deferred::ControlFiles, Instant)>,
    /// Whether it was admitted once (2.6's `CAS_CONNECT_DONE`): then its
    /// leaving runs client-disconnect, even after a later refusal.
    connect_done: bool,
    /// Its per-client plugin contexts, made with the client instance (as
    /// 2.6 makes them in `multi_create_instance`) and destroyed when it goes.
    plugin_context: Option<crate::plugin::ClientContext>,
    /// What the connected client this session replaced at its address
    /// had locked, which this one may not change (see [`locked`]).
    replaced: Option<locked::Locked>,
}

impl Client {
    /// Its (received, sent) bytes as 2.6 counts them for `status`,
    /// `bytes_received`/`bytes_sent` and `>BYTECOUNT_CLI`: every datagram
    /// (TCP packet) on the link, control channel included; `data`: its
    /// data-plane counters, if it has a peer.
    fn link_bytes(&self, data: Option<&ferrovpn_dataplane::PeerStats>) -> (u64, u64) {
        let (rx, tx) = data.map_or((0, 0), |s| (s.rx_link_bytes, s.tx_link_bytes));
        (
            rx + self.control_link_bytes.0,
            tx + self.control_link_bytes.1,
        )
    }

    /// What its plugin calls pass for its per-client contexts.
    fn plugin_client(&self) -> Option<crate::plugin::ClientId> {
        self.plugin_context
            .as_ref()
            .map(crate::plugin::ClientContext::id)
    }
}

struct Server {
    s: ServerSettings,
    liveness: Policy,
    peers: PeerTable,
    /// Authenticated clients.
    clients: Registry<Client>,
    /// Sessions whose cookie verified but whose client has not shown a
    /// certificate yet. Kept apart and capped apart, so they never count
    /// against max-clients nor replace an authenticated client at the same
    /// address (it goes only when the new session authenticates).
    half_open: HashMap<SocketAddr, Client>,
    /// `connect-freq`.
    new_sessions: ConnectFreq,
    /// `connect-freq-initial`.
    reset_answers: InitialReplies,
    dp: DataPlane,
    bad_packets: DropLog,
    refused: DropLog,
    /// Secret for the stateless handshake's session ids.
    cookies: CookieKey,
    /// The `crl-verify` file as last loaded, and whether that load worked.
    crl_stamp: FileStamp,
    crl_ok: bool,
    /// `status FILE`, open since start (see [`crate::fsutil`]), and when it is due next.
    status_file: Option<KeptFile>,
    next_status: Instant,
    /// `ifconfig-pool-persist FILE`, open since start.
    persist_file: Option<KeptFile>,
    next_persist: Instant,
    mgmt: Option<Management>,
    /// `management-client-auth`: the logins waiting for the management client.
    mgmt_auth: management_auth::Table,
    next_cid: u64,
    /// TCP: the connections whose client has not authenticated yet.
    unauthenticated: Option<Pending>,
    /// Handshakes and renegotiations of all sessions since the start.
    handshakes: u64,
    renegotiations: u64,
    /// Replay and bad-tag drops of the clients that left (their data-plane
    /// counters go with them), so that the totals never go down.
    departed_drops: metrics::Drops,
    /// Scripts running for clients; each reports when done.
    scripts_running: tokio::task::JoinSet<hooks::ScriptDone>,
    /// `tls-crypt-v2-verify` verdicts, and the packets that wait for them.
    tls_crypt_v2_checks: hooks::TlsCryptV2Checks,
    /// The `plugin`s, open since start.
    plugins: Option<Arc<crate::plugin::Plugins>>,
    /// `port-share`: where a connection's first bytes are reported once
    /// peeked, and the connections proxied now.
    port_share_decisions: tokio::sync::mpsc::Sender<PortShareDecision>,
    proxied: Arc<std::sync::atomic::AtomicUsize>,
    /// `explicit-exit-notify`: clients were told RESTART and the server
    /// exits or restarts soon; new connections are ignored meanwhile, as
    /// 2.6's `handle_connection_attempt` does.
    exit_notified: bool,
}

/// A connection's first bytes were looked at (`port-share`).
struct PortShareDecision {
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    openvpn: bool,
}

/// How often keepalive and liveness are checked.
const HOUSEKEEPING: Duration = Duration::from_millis(500);
/// Grace period after EXIT so final ACKs get through (2.6 uses 5 s).
const EXIT_GRACE: Duration = Duration::from_secs(2);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Before the server runs (while it waits for its key's passphrase):
/// answer management queries, and resolve once a management client sent
/// a signal (SIGTERM, SIGHUP, SIGUSR1), which ends the wait as in 2.6.
async fn signalled_over_management(
    rx: &mut Option<tokio::sync::mpsc::Receiver<management::Request>>,
) {
    loop {
        let Some(req) = management::next_request(rx).await else {
            return std::future::pending().await;
        };
        match &req.query {
            Query::Signal(sig) if sig != "SIGUSR2" => {
                info!("{sig} from the management interface");
                req.answer(Answer::Done(true));
                return;
            }
            Query::Signal(_) => req.answer(Answer::Done(true)),
            _ => req.answer(Answer::Unavailable),
        }
    }
}

/// How a server instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// SIGTERM / SIGINT: the process exits.
    Exit,
    /// SIGHUP / SIGUSR1: the process starts a new instance, with
    /// [`KeptAcrossRestarts`] from this one.
    Restart(crate::RestartKind),
}

/// What 2.6 keeps from one server instance to the next: its management
/// interface (listening socket, connected client, `state on`, the released
/// hold, the state history; opened once with the first config's settings,
/// `management_open`), and on a soft restart (SIGUSR1) its plugins
/// (`do_close_plugins` leaves them open then).
#[derive(Default)]
pub struct KeptAcrossRestarts {
    mgmt: Option<Management>,
    mgmt_rx: Option<tokio::sync::mpsc::Receiver<management::Request>>,
    plugins: Option<Arc<crate::plugin::Plugins>>,
    /// How the last instance ended; `None` before the first one.
    last: Option<crate::RestartKind>,
    /// `persist-tun` on a soft restart: the configured device (and the
    /// data plane that owns it).
    tunnel: Option<KeptTunnel>,
    /// `persist-key` on a soft restart: the passphrase that opened the key
    /// asked over management, which 2.6 would not open again (whatever
    /// `auth-nocache` or `forget-passwords` did to its `passbuf`).
    persisted_key_passphrase: Option<Zeroizing<String>>,
}

/// A tunnel device kept configured across a soft restart (`persist-tun`).
struct KeptTunnel {
    dev: String,
    dp: DataPlane,
    up: tokio::sync::mpsc::Receiver<UpEvent>,
    peers: PeerTable,
}

impl KeptAcrossRestarts {
    /// Whether the next instance is a restart (the first one is not).
    pub fn restarting(&self) -> Option<crate::RestartKind> {
        self.last
    }
}

/// 2.6's pause before a server instance starts again (`socket_restart_pause`
/// for the top-level context: 1 second).
const RESTART_PAUSE: Duration = Duration::from_secs(1);

/// How long 2.6 lets its `RESTART` messages get through before it acts on
/// the signal (`explicit-exit-notify` on a server).
const EXIT_NOTIFY_GRACE: Duration = Duration::from_secs(2);

/// The control message 2.6 sends UDP clients before it exits or restarts
/// (`explicit-exit-notify N`: 2 asks them to try their next remote).
fn exit_notify_message(explicit_exit_notify: u32) -> &'static str {
    if explicit_exit_notify == 2 {
        "RESTART,[N]"
    } else {
        "RESTART"
    }
}

/// Wait for `wait` (a hold release, the restart pause); a shutdown signal
/// meanwhile ends it as 2.6 does there: `>STATE:...,EXITING,<signal>`, the
/// management queue flushed, and `false` (the server exits).
async fn wait_unless_shut_down<S>(
    m: &Management,
    wait: impl std::future::Future<Output = ()>,
    shutdown: std::pin::Pin<&mut S>,
) -> bool
where
    S: std::future::Future<Output = &'static str>,
{
    tokio::select! {
        _ = wait => true,
        signal = shutdown => {
            own_tunnel::state(m, "EXITING", signal, None);
            m.flush().await;
            false
        }
    }
}

/// Run one server instance until `shutdown` resolves (to the name of the
/// signal that ended it, for `>STATE:...,EXITING,NAME`), or a restart is
/// asked (`restart`, or `signal SIGHUP|SIGUSR1` over management). `kept`
/// carries what 2.6 keeps across restarts; give the same one to the next
/// instance after [`Ended::Restart`].
pub async fn run_server(
    mut s: ServerSettings,
    shutdown: impl std::future::Future<Output = &'static str>,
    restart: Arc<crate::RestartRequests>,
    kept: &mut KeptAcrossRestarts,
) -> anyhow::Result<Ended> {
    let restarting = kept.last.take();
    let reload = restart.wake();
    if restarting.is_none() {
        if let Some(m) = s.management.clone() {
            let mut started = Management::start(m).await?;
            kept.mgmt_rx = started.take_requests();
            kept.mgmt = Some(started);
        }
    } else if s.management.is_none() {
        // 2.6's `open_management`: a config without `management` closes it.
        kept.mgmt = None;
        kept.mgmt_rx = None;
    }
    let mgmt = kept.mgmt.take();
    let mut mgmt_rx = kept.mgmt_rx.take();
    // A hard restart closed the plugins; a soft one kept them.
    let kept_plugins = kept.plugins.take();
    let persisted_key_passphrase = kept.persisted_key_passphrase.take();
    tokio::pin!(shutdown);
    if let (Some(m), Some(kind)) = (&mgmt, restarting) {
        // With the hold flag on 2.6 holds again on every restart (closing
        // the server instance undid the release, `management_clear_callback`):
        // after SIGUSR1 in place of the restart pause (`socket_restart_pause`,
        // `>HOLD:Waiting for hold release:1`), after SIGHUP before it
        // (`open_management`'s `do_hold(0)`). Management commands wait
        // until the pause is over.
        let held = match kind {
            crate::RestartKind::Soft => m.hold_again(RESTART_PAUSE.as_secs() as u32),
            crate::RestartKind::Hard => m.hold_again(0),
        };
        if held {
            info!("Need hold release from management interface, waiting...");
            if !wait_unless_shut_down(m, m.wait_for_hold_release(), shutdown.as_mut()).await {
                return Ok(Ended::Exit);
            }
        }
        if !held || kind == crate::RestartKind::Hard {
            info!("Restart pause, {} second(s)", RESTART_PAUSE.as_secs());
            let pause = tokio::time::sleep(RESTART_PAUSE);
            if !wait_unless_shut_down(m, pause, shutdown.as_mut()).await {
                return Ok(Ended::Exit);
            }
        }
    } else if restarting.is_some() {
        info!("Restart pause, {} second(s)", RESTART_PAUSE.as_secs());
        tokio::select! {
            _ = tokio::time::sleep(RESTART_PAUSE) => {}
            _ = &mut shutdown => return Ok(Ended::Exit),
        }
    } else if let Some(m) = &mgmt {
        // 2.6's first state, set when its management interface opens.
        own_tunnel::state(m, "CONNECTING", "", None);
        info!("management interface listening on {}", m.listen_address());
        if !wait_unless_shut_down(m, m.wait_for_hold_release(), shutdown.as_mut()).await {
            return Ok(Ended::Exit);
        }
    }
    // The passphrase that opened the key, while `persist-key` keeps the
    // key for a soft restart.
    let mut opened_key_passphrase = None;
    if let Some(mut key) = s.key_passphrase.take() {
        let Some(m) = &mgmt else {
            anyhow::bail!(
                "the private key's passphrase is asked over the management interface, and there is none"
            );
        };
        let state = |state: &'static str, description: &'static str| {
            own_tunnel::state(m, state, description, None);
        };
        // SIGTERM, or a signal from a management client, ends the wait.
        let interrupted = async {
            tokio::select! {
                _ = &mut shutdown => {}
                _ = signalled_over_management(&mut mgmt_rx) => {}
            }
        };
        tokio::pin!(interrupted);
        let nocache = key.nocache;
        // A soft restart with `persist-key` does not open the key in 2.6;
        // any other opening tries the passphrase 2.6 kept before asking.
        let persisted = persisted_key_passphrase
            .filter(|_| s.persist_key && restarting == Some(crate::RestartKind::Soft));
        let reopened = persisted.is_none();
        let first_try = persisted.or_else(|| m.recall_key_passphrase());
        // A server's connect-retry pause (2.6: 1 second over UDP and TCP).
        match key_passphrase::open_over_management(
            Some(m),
            &mut key,
            first_try,
            true,
            reload,
            1,
            &state,
            interrupted,
        )
        .await
        {
            Opened::Key(k, passphrase) => {
                s.session = k.session;
                s.crl_reload = k.crl_reload;
                if s.persist_key {
                    opened_key_passphrase = Some(passphrase.clone());
                }
                // Not opened again, 2.6's `passbuf` stays as it was.
                if reopened {
                    m.key_opened_with(passphrase, nocache);
                }
            }
            Opened::Fatal(e) => return Err(e),
            Opened::Shutdown => {
                state("EXITING", key_passphrase::EXIT_IN_PAUSE_REASON);
                m.flush().await;
                return Ok(Ended::Exit);
            }
        }
    }
    let plugins = match kept_plugins {
        Some(open) => Some(open),
        None => hooks::open_plugins(&s.scripts)?,
    };
    let (peers, dp, up, up_env, dev) = match kept.tunnel.take() {
        Some(t) => {
            // 2.6's `do_open_tun` after a soft restart with `persist-tun`:
            // the device stays configured, with its routes; no up hooks.
            info!("Preserving previous TUN/TAP instance: {}", t.dev);
            let up_env = own_tunnel::preserved_env(&s, &s.tunnel(&t.dev));
            (t.peers, t.dp, t.up, up_env, t.dev)
        }
        None => {
            let peers = PeerTable::new();
            let (dp, up_rx) = DataPlane::start(s.dataplane.clone(), peers.clone())
                .context("starting the data plane")?;
            let dev = dp.tun_name().to_owned();
            let tunnel = s.tunnel(&dev);
            let up_env = set_up_tunnel(&mut s, mgmt.as_ref(), plugins.as_deref(), &tunnel).await?;
            (peers, dp, crate::bridge(up_rx), up_env, dev)
        }
    };
    let tunnel = s.tunnel(&dev);
    let mut listening: Vec<String> = Vec::new();
    if s.dataplane.transport != Transport::Tcp {
        listening.push(format!("UDP {}", dp.local_addr()));
    }
    listening.extend(s.tcp_listeners.iter().map(|a| format!("TCP {a}")));
    let mut tunnel_addresses: Vec<String> = Vec::new();
    if let (Some(ip), Some(mask)) = (s.server_ip(), s.netmask()) {
        tunnel_addresses.push(format!("{ip}/{}", netconfig::prefix_len(mask)));
    }
    if let Some(v6) = &s.ipv6 {
        tunnel_addresses.push(format!("{}/{}", v6.local, v6.bits));
    }
    info!(
        "server listening on {} (tunnel {dev} {}), {} data-plane workers",
        listening.join(", "),
        tunnel_addresses.join(" "),
        s.dataplane.workers
    );
    let mut scrapes = match s.metrics {
        Some(addr) => Some(metrics::http::start(addr).await?.1),
        None => None,
    };
    let mut up = up;
    let listeners = (s.tcp_listeners.iter())
        .map(|&bind| listen_tcp(bind).with_context(|| format!("listening on TCP {bind}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let unauthenticated =
        (!listeners.is_empty()).then(|| Pending::new(s.max_clients.max(16), s.session.hand_window));
    let (port_share_decisions, mut decided) = tokio::sync::mpsc::channel(64);
    let pool = s.address_pool();
    // Opened now, before setup_done drops privileges, and kept (as 2.6 does).
    let status_file = s.status.as_ref().and_then(|st| {
        KeptFile::create(&st.path)
            .inspect_err(|e| warn!("cannot open status file {}: {e}", st.path.display()))
            .ok()
    });
    let persist_file = s.pool_persist.as_ref().and_then(|p| {
        let opened = if p.write_every.is_some() {
            KeptFile::open_read_write(&p.path)
        } else {
            KeptFile::open_read_only(&p.path)
        };
        opened
            .inspect_err(|e| {
                warn!(
                    "cannot open ifconfig-pool-persist file {}: {e}",
                    p.path.display()
                )
            })
            .ok()
    });
    let liveness = Policy {
        ping: s.ping,
        ping_restart: s.ping_restart,
        reneg_bytes: s.reneg_bytes,
        reneg_pkts: s.reneg_pkts,
    };
    let new_sessions = ConnectFreq::new(s.connect_freq.0, s.connect_freq.1);
    let reset_answers = InitialReplies::new(s.connect_freq_initial.0, s.connect_freq_initial.1);
    let mut srv = Server {
        s,
        liveness,
        peers,
        clients: Registry::new(pool),
        half_open: HashMap::new(),
        new_sessions,
        reset_answers,
        dp,
        bad_packets: DropLog::new("control packets dropped"),
        refused: DropLog::new("new session refused"),
        cookies: CookieKey::random(),
        crl_stamp: None,
        crl_ok: true,
        status_file,
        next_status: Instant::now(),
        persist_file,
        next_persist: Instant::now(),
        mgmt,
        mgmt_auth: management_auth::Table::default(),
        next_cid: 0,
        unauthenticated,
        handshakes: 0,
        renegotiations: 0,
        departed_drops: metrics::Drops::default(),
        scripts_running: tokio::task::JoinSet::new(),
        tls_crypt_v2_checks: hooks::TlsCryptV2Checks::default(),
        plugins,
        port_share_decisions,
        proxied: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        exit_notified: false,
    };
    srv.load_pool_persist();
    // The file was read with the config; remember which version that was.
    if let Some(r) = &srv.s.crl_reload {
        srv.crl_stamp = file_stamp(&r.path);
    }
    if let Some(setup_done) = srv.s.setup_done.take() {
        setup_done()?;
    }
    if let Some(m) = &srv.mgmt {
        own_tunnel::state(m, "CONNECTED", "SUCCESS", Some(&tunnel));
    }
    let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
    // What ended the loop: a signal's name, for `>STATE:...,EXITING,SIGNAL`
    // or `RECONNECTING,SIGNAL`.
    let mut exit_signal: &'static str;
    // `explicit-exit-notify`: the signal held while the clients are told.
    let mut deferred: Option<(Instant, &'static str)> = None;
    // Whether `shutdown` resolved (it must not be polled again).
    let mut shut_down = false;
    loop {
        let deadline = srv
            .next_deadline()
            .map_or(next_housekeeping, |t| t.min(next_housekeeping));
        let deferred_until = deferred.map(|(at, _)| at);
        tokio::select! {
            ev = up.recv() => {
                let Some(ev) = ev else { anyhow::bail!("data plane stopped") };
                srv.on_up_event(Instant::now(), ev);
            }
            accepted = accept_tcp(&listeners) => srv.on_accept(Instant::now(), accepted),
            Some(d) = decided.recv() => srv.on_port_share_decision(Instant::now(), d),
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                srv.on_timeout(now);
                if now >= next_housekeeping {
                    srv.housekeeping(now);
                    next_housekeeping = now + HOUSEKEEPING;
                }
            }
            Some(scrape) = metrics::http::next_scrape(&mut scrapes) => srv.answer_scrape(scrape),
            kind = restart.next() => {
                exit_signal = kind.signal_name();
                if !srv.defer_for_exit_notify(Instant::now(), exit_signal, &mut deferred) {
                    break;
                }
            }
            Some(req) = management::next_request(&mut mgmt_rx) => {
                if let Some(signal) = srv.handle_management(Instant::now(), req) {
                    exit_signal = signal;
                    if !srv.defer_for_exit_notify(Instant::now(), exit_signal, &mut deferred) {
                        break;
                    }
                }
            }
            _ = tokio::time::sleep_until(deferred_until.unwrap_or(next_housekeeping).into()), if deferred_until.is_some() => {
                if let Some((_, signal)) = deferred {
                    exit_signal = signal;
                    break;
                }
            }
            Some(done) = srv.scripts_running.join_next(), if !srv.scripts_running.is_empty() => {
                match done {
                    Ok(done) => srv.on_script_done(Instant::now(), done),
                    Err(e) => warn!("script task failed: {e}"),
                }
            }
            signal = &mut shutdown, if !shut_down => {
                shut_down = true;
                exit_signal = signal;
                if !srv.defer_for_exit_notify(Instant::now(), exit_signal, &mut deferred) {
                    break;
                }
            }
        }
    }
    let ended = match crate::RestartKind::from_signal_name(exit_signal) {
        Some(kind) => {
            // 2.6's `print_signal`: the source is "hard" for real signals
            // and the management interface's `signal` alike.
            info!("{exit_signal}[hard,] received, process restarting");
            Ended::Restart(kind)
        }
        None => Ended::Exit,
    };
    info!("server shutting down");
    // 2.6's `signal_description`: the down hooks see which signal it was.
    srv.s.scripts.down_signal = match exit_signal {
        "SIGINT" => "sigint",
        "SIGHUP" => "sighup",
        "SIGUSR1" => "sigusr1",
        _ => "sigterm",
    };
    srv.save_pool_persist();
    for a in srv.clients.addrs() {
        srv.remove_client(a, "server shutdown");
    }
    // 2.6 closes every client instance (destroying its per-client plugin
    // contexts) before its own `down`.
    srv.half_open.clear();
    hooks::finish_scripts(&mut srv.scripts_running).await;
    if ended == Ended::Restart(crate::RestartKind::Soft) && srv.s.persist_tun {
        // 2.6's `do_close_tun` on SIGUSR1 with `persist-tun`: the device
        // stays, configured, with its routes; no down hooks.
        kept.tunnel = Some(KeptTunnel {
            dev: tunnel.dev.clone(),
            dp: srv.dp,
            up,
            peers: srv.peers,
        });
    } else {
        close_tunnel(&mut srv, &tunnel, &up_env).await?;
    }
    let mgmt = srv.mgmt.take();
    if let Some(m) = &mgmt {
        // 2.6's `signal_restart_status`: its last word before it closes the
        // interface and exits, or before the next instance starts.
        let state = if ended == Ended::Exit {
            "EXITING"
        } else {
            "RECONNECTING"
        };
        own_tunnel::state(m, state, exit_signal, None);
        m.flush().await;
    }
    if let Ended::Restart(kind) = ended {
        kept.mgmt = mgmt;
        kept.mgmt_rx = mgmt_rx;
        kept.last = Some(kind);
        if kind == crate::RestartKind::Soft {
            kept.plugins = srv.plugins.take();
            kept.persisted_key_passphrase = opened_key_passphrase;
        }
    }
    // The instance's plugins (unless kept) close as it returns, before the
    // next instance opens them again, as in 2.6's `close_instance`.
    Ok(ended)
}

/// Close the tunnel device as 2.6's `do_close_tun`: `>UPDOWN:DOWN`,
/// `route-pre-down`, `down` (before or after the device closes).
async fn close_tunnel(
    srv: &mut Server,
    tunnel: &scripts::Tunnel,
    up_env: &scripts::Env,
) -> anyhow::Result<()> {
    if let Some(m) = &srv.mgmt {
        // Before the routes go, as 2.6's `do_close_tun`.
        let (env, newest) = own_tunnel::down_env(&srv.s, srv.plugins.as_deref(), up_env);
        m.up_down("DOWN", &env, newest);
    }
    if let Err(fatal) =
        hooks::run_route_predown(&srv.s.scripts, srv.plugins.as_deref(), tunnel).await
    {
        srv.dp.stop();
        return Err(fatal);
    }
    if srv.s.scripts.down_pre {
        hooks::run_down(&srv.s.scripts, srv.plugins.as_deref(), tunnel).await;
    }
    srv.dp.stop();
    if !srv.s.scripts.down_pre {
        hooks::run_down(&srv.s.scripts, srv.plugins.as_deref(), tunnel).await;
    }
    Ok(())
}

/// Configure a new tunnel device as 2.6's `do_open_tun` and `do_route`
/// do: its addresses, `up`, the routes, `>UPDOWN:UP`, `route-up`. Returns
/// the environment `>UPDOWN:UP` showed (`>UPDOWN:DOWN` shows it again).
async fn set_up_tunnel(
    s: &mut ServerSettings,
    mgmt: Option<&Management>,
    plugins: Option<&crate::plugin::Plugins>,
    tunnel: &scripts::Tunnel,
) -> anyhow::Result<scripts::Env> {
    let dev = tunnel.dev.as_str();
    let net_config = NetConfig::connect()?;
    // 2.6 looks the default gateway up with its route list, before `up`.
    let net_gateway = if own_tunnel::has_route_list(s) {
        Some(net_config.default_gateway4().await)
    } else {
        None
    };
    // 2.6 puts its route list into the environment before `up`: every
    // script from then on sees it (not after a restart that kept the
    // device: 2.6's route list is set when the device is opened).
    let routes_env = own_tunnel::route_env(s, net_gateway);
    s.scripts.base_env.extend(&routes_env);
    if s.no_exec.ifconfig {
        info!("ifconfig-noexec: {dev} left unconfigured");
    } else {
        if let Some(m) = mgmt {
            own_tunnel::state(m, "ASSIGN_IP", "", Some(tunnel));
        }
        if let (Some(ip), Some(mask)) = (s.server_ip(), s.netmask()) {
            net_config
                .configure_subnet(dev, ip, mask, s.tun_mtu)
                .await?;
        } else {
            // IPv6 only: the device still needs its MTU and to be up.
            net_config.link_up(dev, s.tun_mtu).await?;
        }
        if let Some(v6) = &s.ipv6 {
            net_config.add_address6(dev, v6.local, v6.bits).await?;
        }
    }
    if s.scripts.any() {
        warn!("{}", s.scripts.security.startup_note());
    }
    hooks::run_up(&s.scripts, plugins, tunnel).await?;
    let after_routes = own_tunnel::after_routes_env(s);
    s.scripts.base_env.extend(&after_routes);
    if let (Some(m), true) = (mgmt, own_tunnel::adds_routes(s)) {
        own_tunnel::state(m, "ADD_ROUTES", "", None);
    }
    for &(net, mask, metric) in &s.routes {
        if s.no_exec.routes {
            info!("route-noexec: not adding route {net}/{mask} metric {metric:?}");
        } else {
            net_config.add_route(dev, net, mask, None, metric).await?;
        }
    }
    for &(net, bits, metric) in &s.routes_ipv6 {
        if s.no_exec.routes {
            info!("route-noexec: not adding route {net}/{bits} metric {metric:?}");
        } else {
            net_config
                .add_route6_metric(dev, net, bits, None, metric)
                .await?;
        }
    }
    // Between the routes and `route-up`, as 2.6's `do_route`.
    let up_env = own_tunnel::up_env(s, plugins, tunnel);
    if let Some(m) = mgmt {
        m.up_down("UP", &up_env, None);
    }
    hooks::run_route_up(&s.scripts, plugins, tunnel).await;
    Ok(up_env)
}

/// Which table a session is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    HalfOpen,
    Authenticated,
}

impl Server {
    /// The span for work on the peer at `addr`: its log lines then carry
    /// `common_name/address` (see [`crate::peer_log`]).
    fn peer_span(&self, addr: SocketAddr) -> tracing::Span {
        let client = self
            .clients
            .get(&addr)
            .or_else(|| self.half_open.get(&addr));
        let common_name = client.and_then(|c| {
            c.common_name
                .clone()
                .or_else(|| c.session.peer_common_name())
        });
        crate::peer_log::peer_span(common_name.as_deref(), addr)
    }

    fn client_at(&self, stage: Stage, addr: SocketAddr) -> Option<&Client> {
        match stage {
            Stage::HalfOpen => self.half_open.get(&addr),
            Stage::Authenticated => self.clients.get(&addr),
        }
    }

    fn client_mut(&mut self, stage: Stage, addr: SocketAddr) -> Option<&mut Client> {
        match stage {
            Stage::HalfOpen => self.half_open.get_mut(&addr),
            Stage::Authenticated => self.clients.get_mut(&addr),
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.clients
            .iter()
            .map(|(_, c)| c)
            .chain(self.half_open.values())
            .filter_map(|c| match (c.session.poll_timeout(), c.remove_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            })
            .min()
    }

    fn on_up_event(&mut self, now: Instant, ev: UpEvent) {
        match ev {
            UpEvent::Control { from, packet } => self.on_control(now, from, &packet),
            UpEvent::Occ { peer_id, payload } => {
                if payload.len() > OCC_MAGIC.len()
                    && payload[OCC_MAGIC.len()] == OCC_EXIT
                    && let Some(addr) = self.clients.addr_of_peer(peer_id)
                {
                    info!("{addr}: client sent exit notification");
                    self.remove_client(addr, "client exited (OCC exit)");
                }
            }
            UpEvent::Float {
                peer_id,
                new_remote,
            } => {
                if let Some(old) = self.clients.float(peer_id, new_remote) {
                    info!("peer-id {peer_id} floated from {old} to {new_remote}");
                }
            }
            UpEvent::StreamClosed { from, reason } => {
                debug!("{from}: TCP connection ended: {reason}");
                if let Some(p) = self.unauthenticated.as_mut() {
                    p.remove(from);
                }
                if self.half_open.remove(&from).is_some() {
                    info!("{from}: client ? disconnected: {reason}");
                }
                self.remove_client(from, &reason);
            }
        }
    }

    fn on_control(&mut self, now: Instant, from: SocketAddr, packet: &[u8]) {
        let _peer = self.peer_span(from).entered();
        let unix = unix_now();
        let stateless = Stateless {
            wrap: &self.s.session.wrap,
            tls_crypt_v2: self.s.tls_crypt_v2.as_deref(),
            cookies: &self.cookies,
            hand_window: self.s.session.hand_window,
        };
        let (clients, half_open) = (&self.clients, &self.half_open);
        let mut stage = None;
        let known = |sid| {
            let has =
                |c: Option<&Client>| c.is_some_and(|c| c.session.remote_session_id() == Some(sid));
            stage = if has(clients.get(&from)) {
                Some(Stage::Authenticated)
            } else if has(half_open.get(&from)) {
                Some(Stage::HalfOpen)
            } else {
                None
            };
            stage.is_some()
        };
        let reset_answers = &mut self.reset_answers;
        let exit_notified = self.exit_notified;
        let allow_reset = || match reset_answers.check(unix) {
            _ if exit_notified => {
                debug!("{from}: connection attempt ignored while the server is shutting down");
                false
            }
            Reply::Allowed => true,
            Reply::Dropped { first } => {
                if first {
                    let (n, per) = self.s.connect_freq_initial;
                    warn!(
                        "connect-freq-initial {n} {per} rate limit exceeded, dropping initial handshake packets for the rest of {per} seconds"
                    );
                }
                false
            }
        };
        let (ours, pkt, replay, client_wrap, metadata) =
            match stateless.admit(unix, from, packet, known, allow_reset) {
                Admit::Existing => {
                    let stage = stage.unwrap_or(Stage::Authenticated);
                    if let Some(c) = self.client_mut(stage, from) {
                        c.control_link_bytes.0 += packet.len() as u64;
                        // Only a packet the session accepted shows the client is
                        // alive: spoofed ones must not keep a dead session.
                        if c.session.handle_packet(now, packet) {
                            c.last_control_rx = now;
                        }
                        self.drain(now, stage, from);
                    }
                    return;
                }
                Admit::ResetReply(reply) => {
                    if let Err(e) = self.dp.send_control(from, &reply) {
                        debug!("{from}: reset answer not sent: {e}");
                    }
                    return;
                }
                Admit::Drop(why) => {
                    if why.is_hostile() {
                        self.bad_packets.note(from, &why.to_string());
                    } else {
                        debug!("{from}: {why}");
                    }
                    return;
                }
                Admit::NewSession {
                    ours,
                    pkt,
                    replay,
                    client_wrap,
                    metadata,
                } => (ours, pkt, replay, client_wrap, metadata),
            };
        if self.exit_notified {
            debug!("{from}: connection attempt ignored while the server is shutting down");
            return;
        }
        // tls-crypt-v2-verify: the key authenticated, no TLS state yet.
        if let Some(metadata) = metadata
            && !self.tls_crypt_v2_verified(now, from, packet, pkt.session_id, metadata)
        {
            return;
        }
        self.refresh_crl();
        if !self.crl_ok {
            warn!("{from}: refusing new client: the crl-verify file could not be loaded");
            return;
        }
        if let Err(why) = self.half_open_admits(from) {
            self.refused.note(from, &why);
            return;
        }
        if !self.new_sessions.allow(unix) {
            self.refused.note(
                from,
                "it would exceed the new connection frequency limit (connect-freq)",
            );
            return;
        }
        // A completed three-way handshake counts against connect-freq, not
        // connect-freq-initial (as in 2.6).
        self.reset_answers.give_back();
        let kind = if client_wrap.is_some() {
            " (tls-crypt-v2 client key)"
        } else {
            ""
        };
        let wrap = client_wrap.map_or_else(|| self.s.session.wrap.clone(), Arc::new);
        let config = self.session_config_for(from);
        match Session::accept_cookie(config, wrap, now, unix, ours, pkt, replay) {
            Ok(mut session) => {
                if self.verifies_chain() {
                    // 2.6 verifies inside the handshake: our key method
                    // waits for tls-verify's verdict.
                    session.verify_peer_before_key_method();
                }
                if self.checks_passwords() && !self.s.auth_user_pass_optional {
                    // 2.6 ends the TLS session of a client that sends no
                    // login when logins are checked.
                    session.require_credentials();
                }
                info!("{from}: new session{kind}");
                let client = Client {
                    session,
                    cipher: None,
                    peer_info: None,
                    common_name: None,
                    last_control_rx: now,
                    remove_at: None,
                    key_traffic_base: (0, 0),
                    control_link_bytes: (packet.len() as u64, 0),
                    since: unix,
                    cid: self.next_cid,
                    announced: false,
                    client_config: None,
                    handshakes: 0,
                    admission: hooks::Admission::default(),
                    held: Vec::new(),
                    username: None,
                    token_session: None,
                    reauth: None,
                    connect_done: false,
                    plugin_context: self.plugins.as_ref().and_then(|p| p.client_context()),
                    replaced: None,
                };
                self.next_cid += 1;
                // A newer handshake from the same address replaces an
                // unfinished one; an authenticated client there stays.
                self.half_open.insert(from, client);
                self.drain(now, Stage::HalfOpen, from);
            }
            Err(e) => debug!("{from}: cannot start session: {e}"),
        }
    }

    /// The session configuration for a new session from `from`. With UDP and
    /// TCP listeners, its options string names the transport the client came
    /// by (as 2.7 does per listening socket), so a stock client sees no
    /// "proto used inconsistently" warning.
    fn session_config_for(&self, from: SocketAddr) -> Arc<SessionConfig> {
        let s = &self.s.session;
        if self.s.dataplane.transport == Transport::Udp {
            return s.clone();
        }
        let tcp = self.dp.has_stream(from);
        let want = if tcp {
            ",proto TCPv4_SERVER"
        } else {
            ",proto UDPv4"
        };
        if s.options_string.contains(want) {
            return s.clone();
        }
        let mut config = SessionConfig::clone(s);
        // 2.6 counts the TCP length in `link-mtu`.
        config.options_string = if tcp {
            ferrovpn_proto::key_method::occ_over_tcp(&s.options_string, "TCPv4_SERVER")
        } else {
            ferrovpn_proto::key_method::occ_over_udp(&s.options_string, "TCPv4_SERVER")
        };
        Arc::new(config)
    }

    /// Whether one more half-open session from `from` fits: the server is
    /// not full, the table of half-open sessions is not, and `from`'s
    /// address does not hold its share already.
    fn half_open_admits(&self, from: SocketAddr) -> Result<(), String> {
        if self.clients.len() >= self.s.max_clients {
            return Err(format!("max-clients {} reached", self.s.max_clients));
        }
        if self.half_open.contains_key(&from) {
            return Ok(());
        }
        let cap = half_open_cap(self.s.max_clients);
        if self.half_open.len() >= cap {
            return Err(format!("{cap} handshakes in progress"));
        }
        let same_ip = self
            .half_open
            .keys()
            .filter(|a| a.ip() == from.ip())
            .count();
        if same_ip >= HALF_OPEN_PER_IP {
            return Err(format!(
                "{same_ip} handshakes in progress from {} (the limit per address)",
                from.ip()
            ));
        }
        Ok(())
    }

    /// The half-open session at `addr` authenticated: it takes its place
    /// among the clients, replacing a session at the same address. False
    /// (and the session is gone) when the server is full.
    fn promote(&mut self, addr: SocketAddr) -> bool {
        let Some(mut c) = self.half_open.remove(&addr) else {
            return false;
        };
        if let Some(old) = self.clients.get(&addr) {
            // 2.6's instance keeps what it locked (a client still leaving
            // locks nothing: its successor is a new client).
            if old.connect_done && old.remove_at.is_none() {
                c.replaced = Some(locked::Locked {
                    username: old.username.clone(),
                    common_name: old.common_name.clone(),
                    certificate: old.session.peer_certificate_der().map(<[u8]>::to_vec),
                });
            }
            self.remove_client(addr, "client restarted its session");
        }
        if self.clients.len() >= self.s.max_clients {
            warn!(
                "{addr}: refusing new client, max-clients {} reached",
                self.s.max_clients
            );
            return false;
        }
        let ok = self.clients.insert(addr, c).is_ok();
        if ok && let Some(p) = self.unauthenticated.as_mut() {
            // Its connection may grow and stay: it is a client now.
            p.remove(addr);
        }
        ok
    }

    /// A TCP connection came in: keep it (within the limits of [`Pending`])
    /// and hand it to the data plane.
    fn on_accept(
        &mut self,
        now: Instant,
        accepted: std::io::Result<(tokio::net::TcpStream, SocketAddr)>,
    ) {
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors and the like: the next accept may work.
                warn!("TCP accept failed: {e}");
                return;
            }
        };
        let Some(pending) = self.unauthenticated.as_mut() else {
            return;
        };
        match pending.accept(peer, now) {
            Accept::Refuse(why) => {
                self.refused.note(peer, why);
                return;
            }
            Accept::KeepClosing(old) => {
                debug!("{old}: closing the oldest unauthenticated connection for {peer}");
                self.dp.close_stream(old);
            }
            Accept::Keep => {}
        }
        debug!("{peer}: TCP connection accepted");
        if self.s.port_share.is_some() {
            // Look at its first bytes before the data plane takes it.
            let report = self.port_share_decisions.clone();
            tokio::spawn(async move {
                let first = port_share::first_bytes(&stream).await;
                let openvpn = port_share::is_openvpn(&first);
                // The server may be shutting down: the connection goes then.
                let _ = (report.send(PortShareDecision {
                    stream,
                    peer,
                    openvpn,
                }))
                .await;
            });
            return;
        }
        self.attach_stream(peer, stream);
    }

    /// `port-share`: a connection's first bytes were seen. An OpenVPN client
    /// goes to the data plane, anything else to the port-share server.
    fn on_port_share_decision(&mut self, _now: Instant, d: PortShareDecision) {
        let PortShareDecision {
            stream,
            peer,
            openvpn,
        } = d;
        // Closed meanwhile (hand-window, or pushed out by newer ones).
        let Some(pending) = self.unauthenticated.as_mut() else {
            return;
        };
        if !pending.contains(peer) {
            debug!("{peer}: connection closed before its first bytes were seen");
            return;
        }
        if openvpn {
            self.attach_stream(peer, stream);
            return;
        }
        pending.remove(peer);
        let Some(share) = self.s.port_share.clone() else {
            return;
        };
        use std::sync::atomic::Ordering;
        if self.proxied.load(Ordering::Relaxed) >= port_share::MAX_PROXIED {
            self.refused.note(
                peer,
                &format!(
                    "port-share: {} connections proxied already",
                    port_share::MAX_PROXIED
                ),
            );
            return;
        }
        info!(
            "{peer}: Non-OpenVPN client protocol detected, passing the connection to {}",
            share.target
        );
        self.proxied.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(port_share::proxy(
            stream,
            peer,
            Arc::new(share),
            self.proxied.clone(),
        ));
    }

    /// Hand an accepted connection to the data plane.
    fn attach_stream(&mut self, peer: SocketAddr, stream: tokio::net::TcpStream) {
        let attached = stream
            .into_std()
            .map_err(anyhow::Error::from)
            .and_then(|s| self.dp.attach_stream(s).map_err(anyhow::Error::from));
        if let Err(e) = attached {
            warn!("{peer}: TCP connection not taken: {e:#}");
            if let Some(p) = self.unauthenticated.as_mut() {
                p.remove(peer);
            }
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        for a in self.clients.addrs() {
            let _peer = self.peer_span(a).entered();
            let Some(c) = self.clients.get_mut(&a) else {
                continue;
            };
            if c.remove_at.is_some_and(|t| now >= t) {
                self.remove_client(a, "exit");
                continue;
            }
            if c.session.poll_timeout().is_some_and(|t| now >= t) {
                c.session.handle_timeout(now);
                self.drain(now, Stage::Authenticated, a);
            }
        }
        let half_open: Vec<SocketAddr> = self.half_open.keys().copied().collect();
        for a in half_open {
            let _peer = self.peer_span(a).entered();
            if let Some(c) = self.half_open.get_mut(&a)
                && c.session.poll_timeout().is_some_and(|t| now >= t)
            {
                c.session.handle_timeout(now);
                self.drain(now, Stage::HalfOpen, a);
            }
        }
    }

    /// Reload the `crl-verify` file if it changed since the last look.
    fn refresh_crl(&mut self) {
        let Some(r) = &self.s.crl_reload else {
            return;
        };
        let stamp = file_stamp(&r.path);
        if stamp == self.crl_stamp {
            return;
        }
        self.crl_stamp = stamp;
        let loaded = std::fs::read_to_string(&r.path)
            .map_err(anyhow::Error::from)
            .and_then(|text| (r.rebuild)(&text).map(|cfg| (cfg, text)));
        match loaded {
            Ok((cfg, text)) => {
                info!("crl-verify: reloaded {}", r.path.display());
                for a in self.clients.addrs() {
                    if let Some(c) = self.clients.get_mut(&a) {
                        c.session.set_config(cfg.clone());
                    }
                }
                for c in self.half_open.values_mut() {
                    c.session.set_config(cfg.clone());
                }
                self.s.session = cfg;
                self.crl_ok = true;
                self.drop_revoked(&text);
            }
            Err(e) => {
                error!(
                    "crl-verify: {}: {e:#}; new clients are refused until it is fixed",
                    r.path.display()
                );
                self.crl_ok = false;
            }
        }
    }

    /// Drop the authenticated clients whose certificate `crl_pem` revokes,
    /// now rather than at their next renegotiation.
    fn drop_revoked(&mut self, crl_pem: &str) {
        // The text was loaded into the TLS verifier already, so it parses.
        let crls = tls::parse_crls(crl_pem).unwrap_or_default();
        let revoked: Vec<SocketAddr> = self
            .clients
            .iter()
            .filter(|(_, c)| {
                c.session
                    .peer_certificate_der()
                    .is_some_and(|der| tls::is_revoked(&crls, der))
            })
            .map(|(a, _)| *a)
            .collect();
        for a in revoked {
            warn!("{a}: certificate revoked by the reloaded crl-verify file");
            self.remove_client(a, "certificate revoked");
        }
    }

    /// Rewrite the status file when it is due.
    fn write_status(&mut self, now: Instant) {
        let (Some(st), Some(file)) = (&self.s.status, &self.status_file) else {
            return;
        };
        if now < self.next_status {
            return;
        }
        self.next_status = now + st.interval;
        let unix = unix_now();
        let text = self.status_text(st.version, unix);
        if let Err(e) = file.rewrite(&text) {
            warn!("status file {}: {e}", file.path().display());
        }
    }

    /// The status report in layout 1, 2 or 3.
    fn status_text(&self, version: u8, unix: u64) -> String {
        let mut rows: Vec<ClientRow> = self
            .clients
            .iter()
            .filter_map(|(addr, c)| {
                let peer = self.clients.peer(addr)?;
                let stats = self.peers.peer_stats(peer.id)?;
                let (bytes_received, bytes_sent) = c.link_bytes(Some(&stats));
                Some(ClientRow {
                    common_name: c.common_name.clone().unwrap_or_else(|| "UNDEF".into()),
                    real: *addr,
                    virtual_ip: peer.ip,
                    virtual_ipv6: self
                        .peers
                        .load()
                        .by_id
                        .get(&peer.id)
                        .and_then(|p| p.tunnel_ipv6),
                    bytes_received,
                    bytes_sent,
                    connected_since: c.since,
                    last_ref: unix.saturating_sub(stats.rx_idle().as_secs()),
                    peer_id: peer.id,
                    client_id: c.cid,
                    cipher: c.cipher.map_or("none", Cipher::name).to_string(),
                })
            })
            .collect();
        rows.sort_by_key(|r| r.virtual_ip);
        let title = format!("ferrovpn {}", env!("CARGO_PKG_VERSION"));
        status::render_server(version, unix, &title, &rows)
    }

    /// Answer a management command; the signal's name when it stops the
    /// server (`signal SIGTERM` or `SIGINT`).
    /// Only authenticated clients (the registry) are listed, counted or
    /// killed: a half-open session has shown no certificate, so it is no
    /// client yet.
    fn handle_management(
        &mut self,
        now: Instant,
        req: management::Request,
    ) -> Option<&'static str> {
        let answer = match &req.query {
            Query::Status(v) => Answer::Text(self.status_text(*v, unix_now())),
            Query::LoadStats | Query::NClients => {
                let (mut clients, mut bytes_in, mut bytes_out) = (0, 0, 0);
                for (addr, c) in self.clients.iter() {
                    let Some(peer) = self.clients.peer(addr) else {
                        continue;
                    };
                    clients += 1;
                    let (rx, tx) = c.link_bytes(self.peers.peer_stats(peer.id).as_ref());
                    bytes_in += rx;
                    bytes_out += tx;
                }
                Answer::Load(LoadStats {
                    clients,
                    bytes_in,
                    bytes_out,
                })
            }
            Query::KillCommonName(cn) => {
                let victims: Vec<SocketAddr> = (self.clients.iter())
                    .filter(|(_, c)| c.common_name.as_deref() == Some(cn.as_str()))
                    .map(|(a, _)| *a)
                    .collect();
                for a in &victims {
                    self.remove_client(*a, "killed by the management interface");
                }
                Answer::Killed(victims.len())
            }
            Query::KillAddress(addr) => {
                let found = self.clients.contains(addr);
                self.remove_client(*addr, "killed by the management interface");
                Answer::Killed(usize::from(found))
            }
            Query::ClientKill { cid, message } => {
                let addr = (self.clients.iter())
                    .find(|(_, c)| c.cid == *cid)
                    .map(|(a, _)| *a);
                if let Some(addr) = addr
                    && let Some(c) = self.clients.get_mut(&addr)
                {
                    // As 2.6: tell the client (RESTART, HALT, ...), then
                    // drop it after the grace period, as after an exit.
                    info!("{addr}: client-kill from the management interface: {message}");
                    c.session.send_control_message(now, message);
                    c.remove_at = Some(now + EXIT_GRACE);
                    self.drain(now, Stage::Authenticated, addr);
                }
                Answer::Done(addr.is_some())
            }
            Query::ByteCounts => {
                let mut rows: Vec<(u64, u64, u64)> = (self.clients.iter())
                    .filter_map(|(addr, c)| {
                        let st = self.peers.peer_stats(self.clients.peer(addr)?.id)?;
                        let (rx, tx) = c.link_bytes(Some(&st));
                        Some((c.cid, rx, tx))
                    })
                    .collect();
                rows.sort_unstable();
                Answer::ByteCounts(rows)
            }
            Query::Signal(sig) => match sig.as_str() {
                "SIGTERM" | "SIGINT" => {
                    let signal = if sig == "SIGINT" { "SIGINT" } else { "SIGTERM" };
                    info!("{signal} from the management interface, shutting down");
                    req.answer(Answer::Done(true));
                    return Some(signal);
                }
                "SIGUSR2" => {
                    for line in self.status_text(1, unix_now()).lines() {
                        info!("{line}");
                    }
                    Answer::Done(true)
                }
                "SIGHUP" | "SIGUSR1" => {
                    let signal = if sig == "SIGHUP" { "SIGHUP" } else { "SIGUSR1" };
                    info!("{signal} from the management interface, restarting");
                    req.answer(Answer::Done(true));
                    return Some(signal);
                }
                _ => Answer::Done(false),
            },
            Query::ClientAuth { .. }
            | Query::ClientDeny { .. }
            | Query::ClientPendingAuth { .. } => {
                (self.answer_client_auth(now, &req.query)).unwrap_or(Answer::Done(false))
            }
            // Only a client's session asks this.
            Query::ControlMessage(_) => Answer::Unavailable,
        };
        req.answer(answer);
        None
    }

    /// `explicit-exit-notify` on a UDP server, as 2.6's `multi_process_signal`:
    /// at the first exit or restart signal tell every UDP client `RESTART`
    /// and hold the signal for 2 seconds (`deferred`), so that they hear
    /// it; false when the signal is to be acted on now (no notify, no UDP,
    /// or a second signal while one is held).
    fn defer_for_exit_notify(
        &mut self,
        now: Instant,
        signal: &'static str,
        deferred: &mut Option<(Instant, &'static str)>,
    ) -> bool {
        let Some(n) = self.s.explicit_exit_notify else {
            return false;
        };
        if deferred.is_some() || self.s.dataplane.transport == Transport::Tcp {
            return false;
        }
        let message = exit_notify_message(n);
        let udp_clients: Vec<SocketAddr> = (self.clients.addrs().into_iter())
            .filter(|&a| !self.dp.has_stream(a))
            .collect();
        for addr in udp_clients {
            if let Some(c) = self.clients.get_mut(&addr) {
                c.session.send_control_message(now, message);
            }
            self.drain(now, Stage::Authenticated, addr);
        }
        info!(
            "{signal}: explicit-exit-notify: clients told {message}, acting on the signal in {}s",
            EXIT_NOTIFY_GRACE.as_secs()
        );
        *deferred = Some((now + EXIT_NOTIFY_GRACE, signal));
        self.exit_notified = true;
        true
    }

    /// Tell management clients, when there is a management interface.
    fn notify_management(&self, notice: impl FnOnce(&Self) -> Notice) {
        if let Some(m) = &self.mgmt {
            m.notify(notice(self));
        }
    }

    /// The environment 2.6 lists with `>CLIENT:ESTABLISHED` (what ferrovpn knows of it).
    fn client_env(&self, addr: SocketAddr, c: &Client) -> Vec<(String, String)> {
        let unix = unix_now();
        let mut env: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: String| env.push((k.to_string(), v));
        set("n_clients", self.clients.len().to_string());
        set("time_unix", unix.to_string());
        set("time_ascii", status::utc(unix));
        if let Some(mask) = self.s.netmask() {
            set("ifconfig_pool_netmask", mask.to_string());
        }
        if let Some(peer) = self.clients.peer(&addr) {
            for (k, v) in self.pool_env(peer, c) {
                set(k, v);
            }
        }
        set("trusted_port", addr.port().to_string());
        set("trusted_ip", addr.ip().to_string());
        if let Some(cn) = &c.common_name {
            set("common_name", cn.clone());
        }
        if let Some(info) = &c.peer_info {
            for (k, v) in info.other.iter().rev() {
                set(k, v.clone());
            }
            set("IV_PROTO", info.proto.to_string());
            if !info.ciphers.is_empty() {
                set("IV_CIPHERS", info.ciphers.join(":"));
            }
            set("IV_NCP", info.ncp.to_string());
            if let Some(mtu) = info.mtu {
                set("IV_MTU", mtu.to_string());
            }
            if let Some(p) = &info.platform {
                set("IV_PLAT", p.clone());
            }
            if let Some(v) = &info.version {
                set("IV_VER", v.clone());
            }
        }
        set("untrusted_port", addr.port().to_string());
        set("untrusted_ip", addr.ip().to_string());
        if let Some(cn) = &c.common_name {
            set("X509_0_CN", cn.clone());
        }
        set("daemon_pid", std::process::id().to_string());
        for (k, v) in self.s.tunnel(self.dp.tun_name()).ifconfig_env().iter() {
            set(k, v.to_owned());
        }
        set("tun_mtu", self.s.tun_mtu.to_string());
        set("dev", self.dp.tun_name().to_string());
        set("dev_type", "tun".into());
        env
    }

    /// The client's addresses as 2.6 sets them for its scripts once it
    /// has them (`multi_set_virtual_addr_env`): `ifconfig_pool_remote_ip`,
    /// and with IPv6 `ifconfig_pool_remote_ip6`, `ifconfig_pool_local_ip6`
    /// and `ifconfig_pool_ip6_netbits` (the server's end and the netbits
    /// pushed with it).
    fn pool_env(&self, peer: registry::Peer, c: &Client) -> Vec<(&'static str, String)> {
        let mut env = Vec::new();
        if let Some(ip) = peer.ip {
            env.push(("ifconfig_pool_remote_ip", ip.to_string()));
        }
        let ip6 = (self.peers.load().by_id.get(&peer.id)).and_then(|p| p.tunnel_ipv6);
        if let (Some(v6), Some(ip6)) = (&self.s.ipv6, ip6) {
            let config = c.client_config.clone().unwrap_or_default();
            let pushed = ipv6::pushed(v6, ip6, &config);
            env.push(("ifconfig_pool_remote_ip6", pushed.local.to_string()));
            env.push(("ifconfig_pool_local_ip6", pushed.remote.to_string()));
            env.push(("ifconfig_pool_ip6_netbits", pushed.bits.to_string()));
        }
        env
    }

    fn housekeeping(&mut self, now: Instant) {
        if let Some(p) = self.unauthenticated.as_mut() {
            for a in p.expired(now) {
                info!("{a}: TCP connection closed: no authentication within hand-window");
                self.dp.close_stream(a);
            }
        }
        self.refresh_crl();
        self.poll_deferred_auth(now);
        self.poll_deferred_connect(now);
        self.poll_management_auth(now);
        self.write_status(now);
        if let Some(every) = self.s.pool_persist.as_ref().and_then(|p| p.write_every)
            && now >= self.next_persist
        {
            self.next_persist = now + every;
            self.save_pool_persist();
        }
        for a in self.clients.addrs() {
            let _peer = self.peer_span(a).entered();
            let (Some(c), Some(peer)) = (self.clients.get(&a), self.clients.peer(&a)) else {
                continue;
            };
            let Some(stats) = self.peers.peer_stats(peer.id) else {
                continue;
            };
            let (base_bytes, base_pkts) = c.key_traffic_base;
            let observed = Observed {
                rx_idle: stats
                    .rx_idle()
                    .min(now.saturating_duration_since(c.last_control_rx)),
                tx_idle: stats.tx_idle(),
                established: c.session.is_established(),
                key_bytes: (stats.rx_bytes + stats.tx_bytes).saturating_sub(base_bytes),
                key_packets: (stats.rx_packets + stats.tx_packets).saturating_sub(base_pkts),
                packet_ids_low: stats.needs_renegotiation,
            };
            match self.liveness.decide(&observed) {
                Verdict::Drop => {
                    info!(
                        "{a}: inactivity timeout (ping-restart {}s), dropping client",
                        self.liveness.ping_restart.unwrap_or_default().as_secs()
                    );
                    self.remove_client(a, "ping-restart");
                }
                Verdict::Keep { ping, renegotiate } => {
                    if ping && let Err(e) = self.dp.send_data(peer.id, &PING_PAYLOAD) {
                        debug!("{a}: keepalive ping not sent: {e}");
                    }
                    if renegotiate && let Some(c) = self.clients.get_mut(&a) {
                        match c.session.start_renegotiation(now) {
                            Ok(()) => {
                                debug!(
                                    "{a}: renegotiating after {} bytes, {} packets",
                                    observed.key_bytes, observed.key_packets
                                );
                                self.drain(now, Stage::Authenticated, a);
                            }
                            Err(e) => debug!("{a}: renegotiation not started: {e}"),
                        }
                    }
                }
            }
        }
    }

    /// Send what the session produced and act on its events, until both are empty.
    fn drain(&mut self, now: Instant, mut stage: Stage, addr: SocketAddr) {
        let _peer = self.peer_span(addr).entered();
        loop {
            let c = match stage {
                Stage::HalfOpen => self.half_open.get_mut(&addr),
                Stage::Authenticated => self.clients.get_mut(&addr),
            };
            let Some(c) = c else {
                return;
            };
            let mut progressed = false;
            while let Some(pkt) = c.session.poll_transmit() {
                progressed = true;
                match self.dp.send_control(addr, &pkt) {
                    Ok(link_bytes) => c.control_link_bytes.1 += link_bytes,
                    Err(e) => debug!("{addr}: control send failed: {e}"),
                }
            }
            let Some(ev) = c.session.poll_event() else {
                if !progressed {
                    return;
                }
                continue;
            };
            stage = match stage {
                Stage::HalfOpen => self.on_half_open_event(now, addr, ev),
                Stage::Authenticated => {
                    self.on_session_event(now, addr, ev);
                    Stage::Authenticated
                }
            };
        }
    }

    /// An event of a session that has not authenticated yet; returns where
    /// the session is now.
    fn on_half_open_event(&mut self, now: Instant, addr: SocketAddr, ev: Event) -> Stage {
        match ev {
            // A new session from the address of a connected client: 2.6
            // runs its handshake in the untrusted slot (`TM_INITIAL`) of
            // that client's instance, verify callback included; the
            // connected session and its tunnel stay unless the handshake
            // completes (`tls_multi_process` moves it to `TM_ACTIVE` once
            // the key method is read). So tls-verify runs on it here.
            Event::VerifyPeer { key_id } if self.clients.contains(&addr) => {
                self.verify_half_open_peer(addr, key_id);
            }
            // Its certificate is verified: the session is a client now.
            Event::KeysReady { .. }
            | Event::ClientAuthenticated { .. }
            | Event::VerifyPeer { .. } => {
                if self.promote(addr) {
                    self.on_session_event(now, addr, ev);
                    return Stage::Authenticated;
                }
            }
            Event::AuthFailed(reason) => warn!("{addr}: authentication failed: {reason}"),
            Event::Closed(reason) => {
                info!("{addr}: client ? disconnected: {reason}");
                self.half_open.remove(&addr);
            }
            other => debug!("{addr}: {other:?} before authentication ignored"),
        }
        Stage::HalfOpen
    }

    fn on_session_event(&mut self, now: Instant, addr: SocketAddr, ev: Event) {
        let Some(ev) = self.hold_key_event(addr, ev) else {
            return;
        };
        match ev {
            Event::KeysReady {
                key_id,
                cipher,
                auth,
                block,
            } => {
                let Some(peer_id) = self.ensure_peer(addr) else {
                    return;
                };
                let keys = match DataKeys::new(cipher, auth, &block, Side::Server) {
                    Ok(k) => k,
                    Err(e) => {
                        warn!("{addr}: cannot set up {cipher} data keys: {e}");
                        return;
                    }
                };
                self.peers.install_key(peer_id, key_id, keys);
                if let Some(c) = self.clients.get_mut(&addr) {
                    c.handshakes += 1;
                    self.handshakes += 1;
                    if c.handshakes > 1 {
                        self.renegotiations += 1;
                    }
                }
                debug!("{addr}: data keys for key_id {key_id} installed");
            }
            Event::SendKey { key_id } => {
                if let Some(peer) = self.clients.peer(&addr)
                    && let Some(c) = self.clients.get_mut(&addr)
                {
                    if let Some(st) = self.peers.peer_stats(peer.id) {
                        c.key_traffic_base =
                            (st.rx_bytes + st.tx_bytes, st.rx_packets + st.tx_packets);
                    }
                    self.peers.set_send_key(peer.id, key_id);
                }
            }
            Event::KeyRetired { key_id } => {
                if let Some(peer) = self.clients.peer(&addr) {
                    self.peers.retire_key(peer.id, key_id);
                }
            }
            Event::ClientAuthenticated {
                common_name,
                peer_info,
                cipher,
                credentials,
            } => {
                let common_name = common_name.as_deref().map(tls::sanitize_common_name);
                if !self.s.duplicate_cn
                    && let Some(cn) = common_name.as_deref()
                {
                    let earlier: Vec<SocketAddr> = self
                        .clients
                        .iter()
                        .filter(|(a, c)| **a != addr && c.common_name.as_deref() == Some(cn))
                        .map(|(a, _)| *a)
                        .collect();
                    for old in earlier {
                        info!(
                            "{addr}: new connection by client {cn} drops its session from {old} (no duplicate-cn)"
                        );
                        self.remove_client(old, "replaced by a new connection with the same CN");
                    }
                }
                // Keys may have made the peer before this (no hooks to
                // wait for): now its peer info says how it reads.
                if let Some(peer) = self.clients.peer(&addr) {
                    self.peers
                        .set_reads_one_by_one(peer.id, !peer_info.is_ferrovpn());
                }
                if let Some(c) = self.clients.get_mut(&addr) {
                    c.common_name = common_name;
                    c.peer_info = Some(peer_info);
                    c.cipher = Some(cipher);
                }
                self.on_client_authenticated(now, addr, credentials);
            }
            Event::VerifyPeer { key_id } => self.verify_peer(addr, key_id),
            Event::Reauthenticate { credentials, .. } => {
                self.on_reauthenticate(now, addr, credentials);
            }
            Event::CrResponse { key_id, response } => {
                self.notify_cr_response(addr, key_id, response);
            }
            // A client still logging in waits (it asks again).
            Event::PushRequested if self.is_admitted(&addr) => self.push_reply(now, addr),
            Event::PushRequested => {}
            Event::PeerExit => {
                if let Some(c) = self.clients.get_mut(&addr) {
                    info!("{addr}: client announced exit");
                    c.remove_at = Some(now + EXIT_GRACE);
                }
            }
            Event::AuthFailed(reason) => warn!("{addr}: authentication failed: {reason}"),
            Event::Closed(reason) => self.remove_client(addr, &reason.to_string()),
            Event::PushReply(_)
            | Event::Restart { .. }
            | Event::Info(_)
            | Event::AuthPending(_) => {}
        }
    }

    fn load_pool_persist(&mut self) {
        let Some(file) = &self.persist_file else {
            return;
        };
        let text = match file.read_text() {
            Ok(t) => t,
            Err(e) => {
                warn!("ifconfig-pool-persist {}: {e}", file.path().display());
                return;
            }
        };
        let fixed = (self.s.pool_persist.as_ref()).is_some_and(|p| p.write_every.is_none());
        let (loaded, skipped) = self.clients.pool.load(&text, unix_now(), fixed);
        if skipped > 0 {
            warn!(
                "ifconfig-pool-persist {}: {skipped} malformed line(s) skipped",
                file.path().display()
            );
        }
        info!(
            "ifconfig-pool-persist: {loaded} remembered address(es) from {}",
            file.path().display()
        );
    }

    fn save_pool_persist(&self) {
        let (Some(p), Some(file)) = (&self.s.pool_persist, &self.persist_file) else {
            return;
        };
        if p.write_every.is_none() {
            return;
        }
        let text = self.clients.pool.save();
        if let Err(e) = file.rewrite(&text) {
            warn!("ifconfig-pool-persist {}: {e}", file.path().display());
        }
    }

    /// Give an authenticated client a peer-id and a tunnel address.
    fn ensure_peer(&mut self, addr: SocketAddr) -> Option<u32> {
        let c = self.clients.get(&addr)?;
        // A stock client reads one datagram per system call; until its
        // peer info is known, assume it is one.
        let one_by_one = !c.peer_info.as_ref().is_some_and(PeerInfo::is_ferrovpn);
        // Keys can be ready before the authenticated event names the CN.
        let cn = c.common_name.clone().or_else(|| {
            c.session
                .peer_common_name()
                .as_deref()
                .map(tls::sanitize_common_name)
        });
        let config = self.client_config(addr, cn.as_deref())?;
        let fresh = self.clients.peer(&addr).is_none();
        let pinned = config.ifconfig_push.map(|p| p.local);
        match self.clients.assign_peer(addr, cn.as_deref(), pinned) {
            Ok(peer) => {
                self.peers.upsert_peer(peer.id, addr, peer.ip);
                if fresh && config.ifconfig_ipv6_push.is_some() && self.s.ipv6.is_none() {
                    warn!(
                        "{addr}: ifconfig-ipv6-push ignored: the server has no IPv6 ('server-ipv6' or 'ifconfig-ipv6')"
                    );
                }
                let pool_ip6 = peer.slot.and_then(|i| self.clients.pool.ipv6(i));
                let ip6 = ipv6::client_address(&self.s, pool_ip6, &config);
                self.peers.set_peer_ipv6(peer.id, ip6);
                self.peers.set_compression(peer.id, self.s.compression);
                self.peers.set_reads_one_by_one(peer.id, one_by_one);
                if fresh {
                    self.publish_client_routes(addr, peer.id, &config);
                }
                Some(peer.id)
            }
            Err(AssignError::NoClient) => None,
            Err(e) => {
                let why = match e {
                    AssignError::PoolExhausted => "address pool exhausted",
                    _ => "no free peer-id",
                };
                warn!("{addr}: {why}, refusing client");
                if let Some(c) = self.clients.get_mut(&addr) {
                    c.session
                        .send_control_message(Instant::now(), &format!("AUTH_FAILED,{why}"));
                    c.remove_at = Some(Instant::now() + EXIT_GRACE);
                }
                None
            }
        }
    }

    fn push_reply(&mut self, now: Instant, addr: SocketAddr) {
        let _peer = self.peer_span(addr).entered();
        let Some(peer_id) = self.ensure_peer(addr) else {
            return;
        };
        let (Some(c), Some(peer)) = (self.clients.get(&addr), self.clients.peer(&addr)) else {
            return;
        };
        let (Some(cipher), Some(info), Some(config)) =
            (c.cipher, c.peer_info.as_ref(), c.client_config.as_ref())
        else {
            return;
        };
        let ip6 = self
            .peers
            .load()
            .by_id
            .get(&peer_id)
            .and_then(|p| p.tunnel_ipv6);
        let mut text = build_push_reply(&self.s, peer.ip, ip6, peer_id, cipher, info, config);
        if let Some(token) = self.current_token(c) {
            text.push_str(&format!(",auth-token {token}"));
        }
        let addresses: Vec<String> = (peer.ip.map(|a| a.to_string()).into_iter())
            .chain(ip6.map(|a| a.to_string()))
            .collect();
        info!(
            "{addr}: client {} connected: {}, peer-id {peer_id}, {}",
            c.common_name.as_deref().unwrap_or("?"),
            addresses.join(" "),
            cipher.name()
        );
        debug!(
            "{addr}: {}",
            text.split(",auth-token ").next().unwrap_or_default()
        );
        if !c.announced {
            self.notify_client_addresses(c, peer.ip, ip6);
            self.notify_management(|s| Notice::ClientEstablished {
                cid: c.cid,
                env: s.client_env(addr, c),
            });
        }
        if let Some(c) = self.clients.get_mut(&addr) {
            c.announced = true;
            c.session.set_push_reply(now, text);
        }
    }

    fn remove_client(&mut self, addr: SocketAddr, reason: &str) {
        let _peer = self.peer_span(addr).entered();
        let Some((c, peer)) = self.clients.remove(&addr, unix_now()) else {
            return;
        };
        // Over TCP the connection ends with its client (no-op over UDP).
        self.dp.close_stream(addr);
        info!(
            "{addr}: client {} disconnected: {reason}",
            c.common_name.as_deref().unwrap_or("?")
        );
        let mut c = c;
        self.notify_client_disconnect(addr, &c, peer);
        self.on_client_gone(addr, &mut c, peer);
        if let Some(peer) = peer {
            if let Some(st) = self.peers.peer_stats(peer.id) {
                self.departed_drops.replay += st.replay_drops;
                self.departed_drops.bad_tag += st.auth_failures;
            }
            self.peers.remove_peer(peer.id);
        }
    }

    /// Copy the numbers a metrics scrape shows.
    fn answer_scrape(&self, scrape: ScrapeRequest) {
        let mut drops = self.departed_drops;
        let mut clients = Vec::with_capacity(self.clients.len());
        for (addr, c) in self.clients.iter() {
            let Some(st) = (self.clients.peer(addr)).and_then(|p| self.peers.peer_stats(p.id))
            else {
                continue;
            };
            drops.replay += st.replay_drops;
            drops.bad_tag += st.auth_failures;
            clients.push(metrics::ClientSample {
                common_name: c.common_name.clone().unwrap_or_else(|| "UNDEF".into()),
                real_address: addr.to_string(),
                bytes_received: st.rx_bytes,
                bytes_sent: st.tx_bytes,
                packets_received: st.rx_packets,
                packets_sent: st.tx_packets,
                connected_since: c.since,
                handshakes: c.handshakes,
            });
        }
        let g = self.dp.counters();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        drops.unknown_peer = load(&g.unknown_peer);
        drops.queue_full = load(&g.control_dropped) + load(&g.events_dropped);
        let workers = (self.dp.worker_counters().iter())
            .map(|w| metrics::WorkerSample {
                tun_packets: load(&w.tun_packets),
                udp_packets: load(&w.udp_packets),
                tcp_packets: load(&w.tcp_packets),
                busy_seconds: load(&w.busy_nanos) as f64 / 1e9,
            })
            .collect();
        // A scraper that gave up has dropped its end: nothing to do then.
        let _ = scrape.send(metrics::Snapshot {
            clients,
            drops,
            workers,
            control_queue_depth: self.dp.up_queue_depth() as u64,
            handshakes: self.handshakes,
            renegotiations: self.renegotiations,
        });
    }
}

/// The TCP listener of a `proto tcp-server` server (SO_REUSEADDR, as 2.6,
/// so a restarted server binds while old connections linger in TIME_WAIT).
fn listen_tcp(bind: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = match bind {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => {
            let s = tokio::net::TcpSocket::new_v6()?;
            ferrovpn_dataplane::allow_ipv4_mapped(&s)?;
            s
        }
    };
    socket.set_reuseaddr(true)?;
    socket.bind(bind)?;
    socket.listen(1024)
}

/// The next connection on any of `listeners`; never resolves without one (UDP).
async fn accept_tcp(
    listeners: &[tokio::net::TcpListener],
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    if listeners.is_empty() {
        return std::future::pending().await;
    }
    let accepted = std::future::poll_fn(|cx| {
        for l in listeners {
            if let std::task::Poll::Ready(r) = l.poll_accept(cx) {
                return std::task::Poll::Ready(r);
            }
        }
        std::task::Poll::Pending
    })
    .await;
    if accepted.is_err() {
        // Out of descriptors: give closing connections a moment
        // instead of spinning on the same error.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    accepted
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2.6's `multi_push_restart_schedule_exit`: `RESTART,[N]` for
    /// `explicit-exit-notify 2` (try the next server), `RESTART` otherwise.
    #[test]
    fn exit_notify_messages_as_2_6() {
        assert_eq!(exit_notify_message(1), "RESTART");
        assert_eq!(exit_notify_message(2), "RESTART,[N]");
        assert_eq!(exit_notify_message(3), "RESTART");
    }

    #[test]
    fn nothing_is_kept_before_the_first_instance() {
        let kept = KeptAcrossRestarts::default();
        assert_eq!(kept.restarting(), None);
        assert!(kept.mgmt.is_none() && kept.plugins.is_none() && kept.tunnel.is_none());
    }
}
