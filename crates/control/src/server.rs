//! The server's control plane: accepts clients, runs their sessions, hands
//! out addresses and peer-ids, pushes options, and publishes peers and keys
//! to the data plane. Runs on its own single-threaded tokio runtime; the data
//! plane's workers only ever talk to it through a bounded queue.

use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ferrovpn_dataplane::{DataPlane, DataPlaneConfig, PeerTable, UpEvent};
use ferrovpn_proto::data::{Cipher, DataKeys, OCC_EXIT, OCC_MAGIC, PING_PAYLOAD, Side};
use ferrovpn_proto::key_method::PeerInfo;
use ferrovpn_proto::session::cookie::{self, CookieKey};
use ferrovpn_proto::session::{Event, Session, SessionConfig};
use ferrovpn_proto::wire::{Opcode, PEER_ID_UNDEFINED, parse_prefix};
use tracing::{debug, error, info, warn};

use crate::management::{self, Answer, LoadStats, Management, Notice, Query};
use crate::netconfig;
use crate::pool_persist;
use crate::ratelimit::DropLog;
use crate::status::{self, ClientRow, StatusSettings};

/// Everything the server runtime needs, already validated by the config layer.
pub struct ServerSettings {
    pub dataplane: DataPlaneConfig,
    /// `server NET MASK`.
    pub network: Ipv4Addr,
    pub netmask: Ipv4Addr,
    /// Inclusive range of client addresses handed out.
    pub pool: (Ipv4Addr, Ipv4Addr),
    /// `push "..."` lines, in config order.
    pub pushes: Vec<String>,
    /// `route NET MASK` lines: networks behind clients, routed into the tunnel.
    pub routes: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// Local keepalive: send a ping after this much silence.
    pub ping: Option<Duration>,
    /// Local keepalive: drop a client after this much silence.
    pub ping_restart: Option<Duration>,
    /// Pushed keepalive (`ping`, `ping-restart`) values.
    pub push_keepalive: Option<(u32, u32)>,
    pub session: Arc<SessionConfig>,
    pub max_clients: usize,
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
    /// `management ...` and the `management-*` directives.
    pub management: Option<management::ManagementSettings>,
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
    /// The server's own tunnel address: the first host of the network.
    pub fn server_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }
}

struct Client {
    session: Session,
    addr: SocketAddr,
    peer: Option<(u32, Ipv4Addr)>,
    cipher: Option<Cipher>,
    peer_info: Option<PeerInfo>,
    common_name: Option<String>,
    last_control_rx: Instant,
    remove_at: Option<Instant>,
    /// Data-plane (bytes, packets) counters when the current key became the
    /// send key: the baseline for `reneg-bytes` / `reneg-pkts`.
    key_traffic_base: (u64, u64),
    /// Unix seconds when the session was made (the status file's "Connected Since").
    since: u64,
    /// Client ID as the management interface and status show it: never reused.
    cid: u64,
    /// Whether management clients were told it is established.
    announced: bool,
}

struct Server {
    s: ServerSettings,
    peers: PeerTable,
    socket: UdpSocket,
    clients: HashMap<SocketAddr, Client>,
    used_ips: HashMap<Ipv4Addr, SocketAddr>,
    used_peer_ids: HashMap<u32, SocketAddr>,
    dp: DataPlane,
    bad_packets: DropLog,
    /// Secret for the stateless handshake's session ids.
    cookies: CookieKey,
    /// The `crl-verify` file as last loaded, and whether that load worked.
    crl_stamp: FileStamp,
    crl_ok: bool,
    /// When the status file is due next.
    next_status: Instant,
    /// Common name → address, from `ifconfig-pool-persist` and every
    /// assignment since (only with that directive).
    remembered: HashMap<String, Ipv4Addr>,
    next_persist: Instant,
    mgmt: Option<Management>,
    next_cid: u64,
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

/// Run the server until `shutdown` resolves.
pub async fn run_server(
    s: ServerSettings,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut mgmt = match s.management.clone() {
        Some(m) => Some(Management::start(m).await?),
        None => None,
    };
    let mut mgmt_rx = mgmt.as_mut().and_then(Management::take_requests);
    tokio::pin!(shutdown);
    if let Some(m) = &mgmt {
        info!("management interface listening on {}", m.listen_address());
        tokio::select! {
            _ = m.wait_for_hold_release() => {}
            _ = &mut shutdown => return Ok(()),
        }
    }
    let peers = PeerTable::new();
    let (dp, up_rx) =
        DataPlane::start(s.dataplane.clone(), peers.clone()).context("starting the data plane")?;
    let dev = dp.tun_name().to_owned();
    netconfig::configure_subnet(&dev, s.server_ip(), s.netmask, s.tun_mtu)?;
    for &(net, mask) in &s.routes {
        netconfig::add_route(&dev, net, mask, None)?;
    }
    info!(
        "server listening on {} (tunnel {dev} {}/{}), {} data-plane workers",
        dp.local_addr(),
        s.server_ip(),
        netconfig::prefix_len(s.netmask),
        s.dataplane.workers
    );
    let socket = dp.control_socket();
    let mut up = crate::bridge(up_rx);
    let mut srv = Server {
        s,
        peers,
        socket,
        clients: HashMap::new(),
        used_ips: HashMap::new(),
        used_peer_ids: HashMap::new(),
        dp,
        bad_packets: DropLog::new("control packets dropped"),
        cookies: CookieKey::random(),
        crl_stamp: None,
        crl_ok: true,
        next_status: Instant::now(),
        remembered: HashMap::new(),
        next_persist: Instant::now(),
        mgmt,
        next_cid: 0,
    };
    srv.notify_management(|s| Notice::State {
        state: "CONNECTED",
        description: "SUCCESS".into(),
        local_ip: s.s.server_ip().to_string(),
    });
    srv.load_pool_persist();
    // The file was read with the config; remember which version that was.
    if let Some(r) = &srv.s.crl_reload {
        srv.crl_stamp = file_stamp(&r.path);
    }
    let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
    loop {
        let deadline = srv
            .next_deadline()
            .map_or(next_housekeeping, |t| t.min(next_housekeeping));
        tokio::select! {
            ev = up.recv() => {
                let Some(ev) = ev else { anyhow::bail!("data plane stopped") };
                srv.on_up_event(Instant::now(), ev);
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                srv.on_timeout(now);
                if now >= next_housekeeping {
                    srv.housekeeping(now);
                    next_housekeeping = now + HOUSEKEEPING;
                }
            }
            Some(req) = management::next_request(&mut mgmt_rx) => {
                if !srv.handle_management(Instant::now(), req) {
                    break;
                }
            }
            _ = &mut shutdown => break,
        }
    }
    info!("server shutting down");
    srv.save_pool_persist();
    let addrs: Vec<SocketAddr> = srv.clients.keys().copied().collect();
    for a in addrs {
        srv.remove_client(a, "server shutdown");
    }
    srv.dp.shutdown();
    Ok(())
}

impl Server {
    fn next_deadline(&self) -> Option<Instant> {
        self.clients
            .values()
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
                    && let Some(&addr) = self.used_peer_ids.get(&peer_id)
                {
                    info!("{addr}: client sent exit notification");
                    self.remove_client(addr, "client exited (OCC exit)");
                }
            }
            UpEvent::Float {
                peer_id,
                new_remote,
            } => self.on_float(peer_id, new_remote),
        }
    }

    fn on_float(&mut self, peer_id: u32, new_remote: SocketAddr) {
        let Some(&old) = self.used_peer_ids.get(&peer_id) else {
            return;
        };
        if self.clients.contains_key(&new_remote) {
            return;
        }
        if let Some(mut c) = self.clients.remove(&old) {
            info!("peer-id {peer_id} floated from {old} to {new_remote}");
            c.addr = new_remote;
            if let Some((_, ip)) = c.peer {
                self.used_ips.insert(ip, new_remote);
            }
            self.used_peer_ids.insert(peer_id, new_remote);
            self.clients.insert(new_remote, c);
        }
    }

    fn on_control(&mut self, now: Instant, from: SocketAddr, packet: &[u8]) {
        let (opcode, key_id, sid) = match parse_prefix(packet) {
            Ok(p) => p,
            Err(e) => {
                self.bad_packets.note(from, &e.to_string());
                return;
            }
        };
        if let Some(c) = self.clients.get_mut(&from)
            && c.session.remote_session_id() == Some(sid)
        {
            c.last_control_rx = now;
            c.session.handle_packet(now, packet);
            self.drain(now, from);
            return;
        }
        // A session we do not have: the stateless handshake (see
        // `ferrovpn_proto::session::cookie`). Nothing is kept for a peer
        // until it proves, from its address, that it got our answer.
        if key_id != 0
            || !matches!(
                opcode,
                Opcode::HardResetClientV2 | Opcode::ControlV1 | Opcode::AckV1
            )
        {
            debug!("{from}: {opcode:?} from unknown session dropped");
            return;
        }
        let (pkt, replay) = match self.s.session.wrap.unwrap(packet) {
            Ok(v) => v,
            Err(e) => {
                self.bad_packets.note(from, &format!("{opcode:?}: {e}"));
                return;
            }
        };
        let unix = unix_now();
        let hand_window = self.s.session.hand_window;
        if opcode == Opcode::HardResetClientV2 {
            if pkt.message_id != Some(0) || !pkt.acks.is_empty() {
                self.bad_packets
                    .note(from, "client reset with message id or ACKs");
                return;
            }
            let ours = self.cookies.session_id(
                CookieKey::time_slot(unix, hand_window),
                from,
                pkt.session_id,
            );
            let reply = cookie::reset_reply(&self.s.session.wrap, unix, &pkt, ours);
            if let Err(e) = self.socket.send_to(&reply, from) {
                debug!("{from}: reset answer not sent: {e}");
            }
            return;
        }
        let Some(ours) = pkt.remote_session_id.filter(|&echo| {
            self.cookies
                .verify(unix, hand_window, from, pkt.session_id, echo)
        }) else {
            debug!("{from}: {opcode:?} without a valid cookie dropped");
            return;
        };
        self.refresh_crl();
        if !self.crl_ok {
            warn!("{from}: refusing new client: the crl-verify file could not be loaded");
            return;
        }
        if self.clients.contains_key(&from) {
            self.remove_client(from, "client restarted its session");
        }
        if self.clients.len() >= self.s.max_clients {
            warn!(
                "{from}: refusing new client, max-clients {} reached",
                self.s.max_clients
            );
            return;
        }
        match Session::accept_cookie(self.s.session.clone(), now, unix, ours, pkt, replay) {
            Ok(session) => {
                info!("{from}: new session");
                self.clients.insert(
                    from,
                    Client {
                        session,
                        addr: from,
                        peer: None,
                        cipher: None,
                        peer_info: None,
                        common_name: None,
                        last_control_rx: now,
                        remove_at: None,
                        key_traffic_base: (0, 0),
                        since: unix,
                        cid: self.next_cid,
                        announced: false,
                    },
                );
                self.next_cid += 1;
                self.drain(now, from);
            }
            Err(e) => debug!("{from}: cannot start session: {e}"),
        }
    }

    fn on_timeout(&mut self, now: Instant) {
        let addrs: Vec<SocketAddr> = self.clients.keys().copied().collect();
        for a in addrs {
            let Some(c) = self.clients.get_mut(&a) else {
                continue;
            };
            if c.remove_at.is_some_and(|t| now >= t) {
                self.remove_client(a, "exit");
                continue;
            }
            if c.session.poll_timeout().is_some_and(|t| now >= t) {
                c.session.handle_timeout(now);
                self.drain(now, a);
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
            .and_then(|text| (r.rebuild)(&text));
        match loaded {
            Ok(cfg) => {
                info!("crl-verify: reloaded {}", r.path.display());
                for c in self.clients.values_mut() {
                    c.session.set_config(cfg.clone());
                }
                self.s.session = cfg;
                self.crl_ok = true;
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

    /// Rewrite the status file when it is due.
    fn write_status(&mut self, now: Instant) {
        let Some(st) = &self.s.status else {
            return;
        };
        if now < self.next_status {
            return;
        }
        self.next_status = now + st.interval;
        let unix = unix_now();
        let text = self.status_text(st.version, unix);
        if let Err(e) = status::write_atomically(&st.path, &text) {
            warn!("status file {}: {e}", st.path.display());
        }
    }

    /// The status report in layout 1, 2 or 3.
    fn status_text(&self, version: u8, unix: u64) -> String {
        let mut rows: Vec<ClientRow> = self
            .clients
            .values()
            .filter_map(|c| {
                let (peer_id, ip) = c.peer?;
                let stats = self.peers.peer_stats(peer_id)?;
                Some(ClientRow {
                    common_name: c.common_name.clone().unwrap_or_else(|| "UNDEF".into()),
                    real: c.addr,
                    virtual_ip: ip,
                    bytes_received: stats.rx_bytes,
                    bytes_sent: stats.tx_bytes,
                    connected_since: c.since,
                    last_ref: unix.saturating_sub(stats.rx_idle().as_secs()),
                    peer_id,
                    client_id: c.cid,
                    cipher: c.cipher.map_or("none", Cipher::name).to_string(),
                })
            })
            .collect();
        rows.sort_by_key(|r| r.virtual_ip);
        let title = format!("ferrovpn {}", env!("CARGO_PKG_VERSION"));
        status::render_server(version, unix, &title, &rows)
    }

    /// Answer a management command; false when the server should stop.
    fn handle_management(&mut self, now: Instant, req: management::Request) -> bool {
        let established = |c: &&Client| c.peer.is_some();
        let answer = match &req.query {
            Query::Status(v) => Answer::Text(self.status_text(*v, unix_now())),
            Query::LoadStats | Query::NClients => {
                let (mut bytes_in, mut bytes_out) = (0, 0);
                for (peer_id, _) in self.clients.values().filter_map(|c| c.peer) {
                    if let Some(st) = self.peers.peer_stats(peer_id) {
                        bytes_in += st.rx_bytes;
                        bytes_out += st.tx_bytes;
                    }
                }
                Answer::Load(LoadStats {
                    clients: self.clients.values().filter(established).count(),
                    bytes_in,
                    bytes_out,
                })
            }
            Query::KillCommonName(cn) => {
                let victims: Vec<SocketAddr> = (self.clients.values())
                    .filter(|c| c.common_name.as_deref() == Some(cn.as_str()))
                    .map(|c| c.addr)
                    .collect();
                for a in &victims {
                    self.remove_client(*a, "killed by the management interface");
                }
                Answer::Killed(victims.len())
            }
            Query::KillAddress(addr) => {
                let found = self.clients.contains_key(addr);
                self.remove_client(*addr, "killed by the management interface");
                Answer::Killed(usize::from(found))
            }
            Query::ClientKill { cid, message } => {
                let c = self.clients.values_mut().find(|c| c.cid == *cid);
                let found = c.is_some();
                if let Some(c) = c {
                    // As 2.6: tell the client (RESTART, HALT, ...), then drop it.
                    info!(
                        "{}: client-kill from the management interface: {message}",
                        c.addr
                    );
                    c.session.send_control_message(now, message);
                    c.remove_at = Some(now + EXIT_GRACE);
                    let addr = c.addr;
                    self.drain(now, addr);
                }
                Answer::Done(found)
            }
            Query::ByteCounts => {
                let mut rows: Vec<(u64, u64, u64)> = (self.clients.values())
                    .filter_map(|c| {
                        let st = self.peers.peer_stats(c.peer?.0)?;
                        Some((c.cid, st.rx_bytes, st.tx_bytes))
                    })
                    .collect();
                rows.sort_unstable();
                Answer::ByteCounts(rows)
            }
            Query::Signal(sig) => match sig.as_str() {
                "SIGTERM" => {
                    info!("SIGTERM from the management interface, shutting down");
                    req.answer(Answer::Done(true));
                    return false;
                }
                "SIGUSR2" => {
                    for line in self.status_text(1, unix_now()).lines() {
                        info!("{line}");
                    }
                    Answer::Done(true)
                }
                // The server does not restart in place (neither on a real
                // SIGHUP/SIGUSR1): say so instead of pretending.
                _ => Answer::Done(false),
            },
        };
        req.answer(answer);
        true
    }

    /// Tell management clients, when there is a management interface.
    fn notify_management(&self, notice: impl FnOnce(&Self) -> Notice) {
        if let Some(m) = &self.mgmt {
            m.notify(notice(self));
        }
    }

    /// The environment 2.6 lists with `>CLIENT:ESTABLISHED` (what ferrovpn knows of it).
    fn client_env(&self, c: &Client) -> Vec<(String, String)> {
        let unix = unix_now();
        let mut env: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: String| env.push((k.to_string(), v));
        set("n_clients", self.clients.len().to_string());
        set("time_unix", unix.to_string());
        set("time_ascii", status::utc(unix));
        set("ifconfig_pool_netmask", self.s.netmask.to_string());
        if let Some((_, ip)) = c.peer {
            set("ifconfig_pool_remote_ip", ip.to_string());
        }
        set("trusted_port", c.addr.port().to_string());
        set("trusted_ip", c.addr.ip().to_string());
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
        set("untrusted_port", c.addr.port().to_string());
        set("untrusted_ip", c.addr.ip().to_string());
        if let Some(cn) = &c.common_name {
            set("X509_0_CN", cn.clone());
        }
        set("daemon_pid", std::process::id().to_string());
        set("ifconfig_local", self.s.server_ip().to_string());
        set("ifconfig_netmask", self.s.netmask.to_string());
        set("tun_mtu", self.s.tun_mtu.to_string());
        set("dev", self.dp.tun_name().to_string());
        set("dev_type", "tun".into());
        env
    }

    fn housekeeping(&mut self, now: Instant) {
        self.refresh_crl();
        self.write_status(now);
        if let Some(every) = self.s.pool_persist.as_ref().and_then(|p| p.write_every)
            && now >= self.next_persist
        {
            self.next_persist = now + every;
            self.save_pool_persist();
        }
        let addrs: Vec<SocketAddr> = self.clients.keys().copied().collect();
        for a in addrs {
            let Some(c) = self.clients.get(&a) else {
                continue;
            };
            let Some((peer_id, _)) = c.peer else {
                continue;
            };
            let Some(stats) = self.peers.peer_stats(peer_id) else {
                continue;
            };
            let rx_idle = stats
                .rx_idle()
                .min(now.saturating_duration_since(c.last_control_rx));
            if let Some(limit) = self.s.ping_restart
                && rx_idle >= limit
                && c.session.is_established()
            {
                info!(
                    "{a}: inactivity timeout (ping-restart {}s), dropping client",
                    limit.as_secs()
                );
                self.remove_client(a, "ping-restart");
                continue;
            }
            if let Some(ping) = self.s.ping
                && stats.tx_idle() >= ping
                && c.session.is_established()
                && let Err(e) = self.dp.send_data(peer_id, &PING_PAYLOAD)
            {
                debug!("{a}: keepalive ping not sent: {e}");
            }
            // Soft reset when the data plane's packet ids run low or the
            // current key carried reneg-bytes / reneg-pkts.
            let (base_bytes, base_pkts) = c.key_traffic_base;
            let bytes = (stats.rx_bytes + stats.tx_bytes).saturating_sub(base_bytes);
            let pkts = (stats.rx_packets + stats.tx_packets).saturating_sub(base_pkts);
            let due = stats.needs_renegotiation
                || self.s.reneg_bytes.is_some_and(|n| bytes >= n)
                || self.s.reneg_pkts.is_some_and(|n| pkts >= n);
            if due
                && c.session.is_established()
                && let Some(c) = self.clients.get_mut(&a)
            {
                match c.session.start_renegotiation(now) {
                    Ok(()) => {
                        debug!("{a}: renegotiating after {bytes} bytes, {pkts} packets");
                        self.drain(now, a);
                    }
                    Err(e) => debug!("{a}: renegotiation not started: {e}"),
                }
            }
        }
    }

    /// Send what the session produced and act on its events, until both are empty.
    fn drain(&mut self, now: Instant, addr: SocketAddr) {
        loop {
            let Some(c) = self.clients.get_mut(&addr) else {
                return;
            };
            let mut progressed = false;
            while let Some(pkt) = c.session.poll_transmit() {
                progressed = true;
                if let Err(e) = self.socket.send_to(&pkt, c.addr) {
                    debug!("{addr}: control send failed: {e}");
                }
            }
            let Some(ev) = c.session.poll_event() else {
                if !progressed {
                    return;
                }
                continue;
            };
            self.on_session_event(now, addr, ev);
        }
    }

    fn on_session_event(&mut self, now: Instant, addr: SocketAddr, ev: Event) {
        match ev {
            Event::KeysReady {
                key_id,
                cipher,
                block,
            } => {
                let Some(peer_id) = self.ensure_peer(addr) else {
                    return;
                };
                let keys = DataKeys::from_key_block(cipher, &block, Side::Server);
                self.peers.install_key(peer_id, key_id, keys);
                debug!("{addr}: data keys for key_id {key_id} installed");
            }
            Event::SendKey { key_id } => {
                if let Some(c) = self.clients.get_mut(&addr)
                    && let Some((peer_id, _)) = c.peer
                {
                    if let Some(st) = self.peers.peer_stats(peer_id) {
                        c.key_traffic_base =
                            (st.rx_bytes + st.tx_bytes, st.rx_packets + st.tx_packets);
                    }
                    self.peers.set_send_key(peer_id, key_id);
                }
            }
            Event::KeyRetired { key_id } => {
                if let Some((peer_id, _)) = self.clients.get(&addr).and_then(|c| c.peer) {
                    self.peers.retire_key(peer_id, key_id);
                }
            }
            Event::ClientAuthenticated {
                common_name,
                peer_info,
                cipher,
            } => {
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
                if let Some(c) = self.clients.get_mut(&addr) {
                    c.common_name = common_name;
                    c.peer_info = Some(peer_info);
                    c.cipher = Some(cipher);
                }
                self.push_reply(now, addr);
            }
            Event::PushRequested => self.push_reply(now, addr),
            Event::PeerExit => {
                if let Some(c) = self.clients.get_mut(&addr) {
                    info!("{addr}: client announced exit");
                    c.remove_at = Some(now + EXIT_GRACE);
                }
            }
            Event::AuthFailed(reason) => warn!("{addr}: authentication failed: {reason}"),
            Event::Closed(reason) => self.remove_client(addr, &reason),
            Event::PushReply(_) | Event::Restart { .. } => {}
        }
    }

    /// A free pool address for a client: the one its common name had, if it
    /// is free; else one nobody is remembered with; else any free one.
    fn pick_address(&self, cn: Option<&str>) -> Option<Ipv4Addr> {
        let (start, end) = (u32::from(self.s.pool.0), u32::from(self.s.pool.1));
        let in_pool = |ip: &Ipv4Addr| (start..=end).contains(&u32::from(*ip));
        let free = |ip: &Ipv4Addr| !self.used_ips.contains_key(ip);
        let pool = || (start..=end).map(Ipv4Addr::from);
        cn.and_then(|cn| self.remembered.get(cn))
            .copied()
            .filter(|ip| in_pool(ip) && free(ip))
            .or_else(|| {
                let kept: HashSet<&Ipv4Addr> = self.remembered.values().collect();
                pool().find(|ip| free(ip) && !kept.contains(ip))
            })
            .or_else(|| pool().find(free))
    }

    /// An address belongs to one common name at a time: the newest holder
    /// takes it over.
    fn remember(&mut self, cn: String, ip: Ipv4Addr) {
        self.remembered
            .retain(|other, old| other == &cn || *old != ip);
        self.remembered.insert(cn, ip);
    }

    fn load_pool_persist(&mut self) {
        let Some(p) = &self.s.pool_persist else {
            return;
        };
        let text = match std::fs::read_to_string(&p.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                warn!("ifconfig-pool-persist {}: {e}", p.path.display());
                return;
            }
        };
        let (entries, skipped) = pool_persist::parse(&text);
        if skipped > 0 {
            warn!(
                "ifconfig-pool-persist {}: {skipped} malformed line(s) skipped",
                p.path.display()
            );
        }
        info!(
            "ifconfig-pool-persist: {} remembered address(es) from {}",
            entries.len(),
            p.path.display()
        );
        self.remembered = entries;
    }

    fn save_pool_persist(&self) {
        let Some(p) = &self.s.pool_persist else {
            return;
        };
        if p.write_every.is_none() {
            return;
        }
        let text = pool_persist::render(&self.remembered);
        if let Err(e) = status::write_atomically(&p.path, &text) {
            warn!("ifconfig-pool-persist {}: {e}", p.path.display());
        }
    }

    /// Give an authenticated client a peer-id and a tunnel address.
    fn ensure_peer(&mut self, addr: SocketAddr) -> Option<u32> {
        let c = self.clients.get(&addr)?;
        if let Some((id, _)) = c.peer {
            return Some(id);
        }
        let peer_id = (0..PEER_ID_UNDEFINED).find(|id| !self.used_peer_ids.contains_key(id))?;
        // Keys can be ready before the authenticated event names the CN.
        let cn = c
            .common_name
            .clone()
            .or_else(|| c.session.peer_common_name());
        let Some(ip) = self.pick_address(cn.as_deref()) else {
            warn!("{addr}: address pool exhausted, refusing client");
            if let Some(c) = self.clients.get_mut(&addr) {
                c.session
                    .send_control_message(Instant::now(), "AUTH_FAILED,address pool exhausted");
                c.remove_at = Some(Instant::now() + EXIT_GRACE);
            }
            return None;
        };
        self.used_peer_ids.insert(peer_id, addr);
        self.used_ips.insert(ip, addr);
        if let Some(cn) = cn.filter(|_| self.s.pool_persist.is_some()) {
            self.remember(cn, ip);
        }
        self.peers.upsert_peer(peer_id, addr, Some(ip));
        if let Some(c) = self.clients.get_mut(&addr) {
            c.peer = Some((peer_id, ip));
        }
        Some(peer_id)
    }

    fn push_reply(&mut self, now: Instant, addr: SocketAddr) {
        let Some(peer_id) = self.ensure_peer(addr) else {
            return;
        };
        let Some(c) = self.clients.get(&addr) else {
            return;
        };
        let (Some((_, ip)), Some(cipher), Some(info)) = (c.peer, c.cipher, c.peer_info.as_ref())
        else {
            return;
        };
        let text = build_push_reply(&self.s, ip, peer_id, cipher, info);
        info!(
            "{addr}: client {} connected: {ip}, peer-id {peer_id}, {}",
            c.common_name.as_deref().unwrap_or("?"),
            cipher.name()
        );
        debug!("{addr}: {text}");
        if !c.announced {
            self.notify_management(|s| Notice::ClientEstablished {
                cid: c.cid,
                env: s.client_env(c),
            });
        }
        if let Some(c) = self.clients.get_mut(&addr) {
            c.announced = true;
            c.session.set_push_reply(now, text);
        }
    }

    fn remove_client(&mut self, addr: SocketAddr, reason: &str) {
        let Some(c) = self.clients.remove(&addr) else {
            return;
        };
        info!(
            "{addr}: client {} disconnected: {reason}",
            c.common_name.as_deref().unwrap_or("?")
        );
        if let Some((peer_id, ip)) = c.peer {
            self.peers.remove_peer(peer_id);
            self.used_peer_ids.remove(&peer_id);
            self.used_ips.remove(&ip);
        }
    }
}

/// The PUSH_REPLY for one client, in the order a 2.6 server uses.
pub fn build_push_reply(
    s: &ServerSettings,
    ip: Ipv4Addr,
    peer_id: u32,
    cipher: Cipher,
    info: &PeerInfo,
) -> String {
    let mut opts: Vec<String> = Vec::new();
    opts.push(format!("route-gateway {}", s.server_ip()));
    opts.push("topology subnet".into());
    if let Some((ping, restart)) = s.push_keepalive {
        opts.push(format!("ping {ping}"));
        opts.push(format!("ping-restart {restart}"));
    }
    opts.extend(s.pushes.iter().cloned());
    opts.push(format!("ifconfig {ip} {}", s.netmask));
    if info.supports_data_v2() {
        opts.push(format!("peer-id {peer_id}"));
    }
    opts.push(format!("cipher {}", cipher.name()));
    if info.cc_exit() {
        let mut flags = String::from("protocol-flags cc-exit");
        if info.tls_ekm() {
            flags.push_str(" tls-ekm");
        }
        opts.push(flags);
    } else if info.tls_ekm() {
        opts.push("key-derivation tls-ekm".into());
    }
    if info.mtu.is_some() {
        opts.push(format!("tun-mtu {}", s.tun_mtu));
    }
    let mut text = String::from("PUSH_REPLY");
    for o in opts {
        text.push(',');
        text.push_str(&o);
    }
    text
}
