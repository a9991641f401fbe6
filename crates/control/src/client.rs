//! The client's control plane: picks a remote, runs the session, applies what
//! the server pushes (addresses, routes, redirect-gateway, keepalive,
//! peer-id), reconnects with backoff, and restores the routing table on exit.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ferrovpn_dataplane::{DataPlane, DataPlaneConfig, PeerTable, UpEvent};
use ferrovpn_proto::data::{DataKeys, OCC_EXIT, OCC_MAGIC, PING_PAYLOAD, Side};
use ferrovpn_proto::push::{PushOption, PushReply};
use ferrovpn_proto::session::{Event, Session, SessionConfig};
use ferrovpn_proto::wire::PEER_ID_UNDEFINED;
use tracing::{debug, info, warn};

use crate::netconfig;
use crate::status::{self, StatusSettings};

/// One `remote HOST PORT` line.
#[derive(Clone, Debug)]
pub struct Remote {
    pub host: String,
    pub port: u16,
}

/// Everything the client runtime needs, already validated by the config layer.
pub struct ClientSettings {
    pub dataplane: DataPlaneConfig,
    pub remotes: Vec<Remote>,
    pub remote_random: bool,
    /// `connect-retry N MAX`: first wait and ceiling between attempts.
    pub connect_retry: Duration,
    pub connect_retry_max: Duration,
    pub session: Arc<SessionConfig>,
    /// Silence after which we reconnect until the server pushes its own value.
    pub ping_restart: Duration,
    /// Local `ping`; pushed values override it.
    pub ping: Option<Duration>,
    /// `ping-exit N`: exit (instead of reconnecting) after this much silence.
    pub ping_exit: Option<Duration>,
    /// `explicit-exit-notify N`.
    pub explicit_exit_notify: Option<u32>,
    /// `status FILE [N]`: data-channel byte counts.
    pub status: Option<StatusSettings>,
    pub tun_mtu: u16,
    /// Give up after this many failed attempts in a row (tests); `None` = forever.
    pub max_attempts: Option<u32>,
    /// Called once the first tun device and socket are open.
    pub setup_done: Option<crate::SetupDone>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Routing changes made for one connection, undone when it ends.
#[derive(Default)]
struct Applied {
    routes: Vec<(Ipv4Addr, Ipv4Addr)>,
    host_route: Option<Ipv4Addr>,
    addresses: bool,
}

/// Why a connection ended.
enum Ended {
    Shutdown,
    /// `ping-exit` fired: stop like a shutdown, with a reason in the log.
    Exit(String),
    Reconnect(String),
    /// The server said it is going away (RESTART, exit notification).
    /// Reconnect like [`Ended::Reconnect`], but from a fresh source port: a
    /// server that is still shutting down would take a new session from the
    /// old address as a restart of the old client instance, then exit, and
    /// its successor ignores that session until hand-window runs out.
    ServerLeft(String),
    /// SIGUSR1: reconnect now, without backoff.
    Restart,
    Fatal(String),
}

struct Conn {
    session: Session,
    server: SocketAddr,
    peer_id: Option<u32>,
    applied: Applied,
    ping: Option<Duration>,
    ping_restart: Duration,
    ping_exit: Option<Duration>,
    cc_exit: bool,
    last_control_rx: Instant,
    connected: bool,
}

/// Run the client until `shutdown` resolves or a fatal error (AUTH_FAILED, HALT).
/// `restart` is notified on SIGUSR1: the connection is torn down and made again.
pub async fn run_client(
    mut s: ClientSettings,
    shutdown: impl std::future::Future<Output = ()>,
    restart: Arc<tokio::sync::Notify>,
) -> anyhow::Result<()> {
    if s.remotes.is_empty() {
        anyhow::bail!("no 'remote' given");
    }
    let mut setup_done = s.setup_done.take();
    let peers = PeerTable::new();
    // The data plane's socket is connected to the server, so it is (re)started
    // when the resolved server address changes; reconnecting to the same
    // address keeps the TUN device and its queues.
    let mut plane: Option<(DataPlane, UdpSocket, tokio::sync::mpsc::Receiver<UpEvent>)> = None;
    tokio::pin!(shutdown);

    let mut order: Vec<usize> = (0..s.remotes.len()).collect();
    if s.remote_random {
        shuffle(&mut order);
    }
    let mut attempt: u32 = 0;
    let mut failures: u32 = 0;
    let mut backoff = s.connect_retry;
    // A new data plane (new socket) for the next attempt even to the same address.
    let mut fresh_socket = false;
    let result = loop {
        let remote = &s.remotes[order[attempt as usize % order.len()]];
        attempt = attempt.wrapping_add(1);
        let ended = match resolve(remote).await {
            Ok(server) => {
                info!("connecting to {}:{} ({server})", remote.host, remote.port);
                if std::mem::take(&mut fresh_socket)
                    || plane
                        .as_ref()
                        .is_none_or(|(_, sock, _)| sock.peer_addr().ok() != Some(server))
                {
                    if let Some((old, _, _)) = plane.take() {
                        old.shutdown();
                    }
                    let mut cfg = s.dataplane.clone();
                    cfg.connect = Some(server);
                    let (dp, up_rx) =
                        DataPlane::start(cfg, peers.clone()).context("starting the data plane")?;
                    let socket = dp.control_socket();
                    plane = Some((dp, socket, crate::bridge(up_rx)));
                    if let Some(setup_done) = setup_done.take() {
                        setup_done()?;
                    }
                }
                let (dp, socket, up) = plane.as_mut().expect("started above");
                let mut connected = false;
                let ended = run_connection(
                    &s,
                    dp,
                    &peers,
                    socket,
                    up,
                    server,
                    &mut shutdown,
                    &restart,
                    &mut connected,
                )
                .await;
                if connected {
                    // A connection that came up resets the backoff, like OpenVPN.
                    backoff = s.connect_retry;
                    failures = 0;
                }
                ended
            }
            Err(e) => Ended::Reconnect(format!("cannot resolve {}: {e}", remote.host)),
        };
        let ended = match ended {
            Ended::ServerLeft(reason) => {
                // Only an ephemeral port changes; a fixed lport stays as it is.
                fresh_socket = s.dataplane.bind.port() == 0;
                Ended::Reconnect(reason)
            }
            other => other,
        };
        match ended {
            Ended::Shutdown => break Ok(()),
            Ended::Exit(reason) => {
                warn!("exiting: {reason}");
                break Ok(());
            }
            Ended::Fatal(reason) => break Err(anyhow::anyhow!(reason)),
            Ended::Restart => {
                info!("restarting the connection (SIGUSR1)");
                backoff = s.connect_retry;
                failures = 0;
            }
            Ended::Reconnect(reason) | Ended::ServerLeft(reason) => {
                warn!(
                    "connection ended: {reason}; retrying in {}s",
                    backoff.as_secs_f32()
                );
                failures += 1;
                if s.max_attempts.is_some_and(|m| failures >= m) {
                    break Err(anyhow::anyhow!(
                        "giving up after {failures} attempts: {reason}"
                    ));
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = &mut shutdown => break Ok(()),
                }
                backoff = (backoff * 2).min(s.connect_retry_max);
            }
        }
    };
    if let Some((dp, _, _)) = plane {
        dp.shutdown();
    }
    result
}

async fn resolve(r: &Remote) -> anyhow::Result<SocketAddr> {
    let mut addrs = tokio::net::lookup_host((r.host.as_str(), r.port)).await?;
    addrs
        .find(SocketAddr::is_ipv4)
        .context("no IPv4 address (IPv6 transport is not supported yet)")
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

#[allow(clippy::too_many_arguments)]
async fn run_connection(
    s: &ClientSettings,
    dp: &DataPlane,
    peers: &PeerTable,
    socket: &UdpSocket,
    up: &mut tokio::sync::mpsc::Receiver<UpEvent>,
    server: SocketAddr,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    restart: &tokio::sync::Notify,
    was_connected: &mut bool,
) -> Ended {
    let now = Instant::now();
    let session = match Session::connect(s.session.clone(), now, unix_now()) {
        Ok(v) => v,
        Err(e) => return Ended::Fatal(format!("cannot start session: {e}")),
    };
    let mut c = Conn {
        session,
        server,
        peer_id: None,
        applied: Applied::default(),
        ping: s.ping,
        ping_restart: s.ping_restart,
        ping_exit: s.ping_exit,
        cc_exit: false,
        last_control_rx: now,
        connected: false,
    };
    let mut next_housekeeping = now + Duration::from_millis(500);
    let mut next_status = now;
    let ended = loop {
        if let Some(end) = drain(s, dp, peers, socket, &mut c) {
            break end;
        }
        let deadline = c
            .session
            .poll_timeout()
            .map_or(next_housekeeping, |t| t.min(next_housekeeping));
        tokio::select! {
            ev = up.recv() => match ev {
                Some(UpEvent::Control { from, packet }) if from == c.server => {
                    c.last_control_rx = Instant::now();
                    c.session.handle_packet(Instant::now(), &packet);
                }
                Some(UpEvent::Control { from, .. }) => debug!("ignoring control packet from {from}"),
                Some(UpEvent::Occ { payload, .. }) => {
                    if payload.get(OCC_MAGIC.len()) == Some(&OCC_EXIT) {
                        break Ended::ServerLeft("server sent exit notification".into());
                    }
                }
                Some(UpEvent::Float { .. }) => {}
                None => break Ended::Fatal("data plane stopped".into()),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                c.session.handle_timeout(now);
                if now >= next_housekeeping {
                    next_housekeeping = now + Duration::from_millis(500);
                    if let Some(st) = &s.status
                        && now >= next_status
                    {
                        next_status = now + st.interval;
                        write_status(st, peers, &c);
                    }
                    if let Some(end) = housekeeping(dp, peers, &mut c, now) {
                        break end;
                    }
                }
            }
            _ = restart.notified() => break Ended::Restart,
            _ = shutdown.as_mut() => {
                say_goodbye(s, dp, socket, &mut c).await;
                break Ended::Shutdown;
            }
        }
    };
    *was_connected = c.connected;
    teardown(dp, peers, &mut c);
    ended
}

/// The client's status file: tunnel bytes of the current connection.
fn write_status(st: &StatusSettings, peers: &PeerTable, c: &Conn) {
    let (read, written) = c
        .peer_id
        .and_then(|id| peers.peer_stats(id))
        .map_or((0, 0), |s| (s.tx_bytes, s.rx_bytes));
    let text = status::render_client(unix_now(), read, written);
    if let Err(e) = status::write_atomically(&st.path, &text) {
        warn!("status file {}: {e}", st.path.display());
    }
}

fn housekeeping(dp: &DataPlane, peers: &PeerTable, c: &mut Conn, now: Instant) -> Option<Ended> {
    let peer_id = c.peer_id?;
    let stats = peers.peer_stats(peer_id)?;
    let rx_idle = stats
        .rx_idle()
        .min(now.saturating_duration_since(c.last_control_rx));
    if let Some(limit) = c.ping_exit
        && c.connected
        && rx_idle >= limit
    {
        return Some(Ended::Exit(format!(
            "inactivity timeout (ping-exit {}s)",
            limit.as_secs()
        )));
    }
    if c.connected && rx_idle >= c.ping_restart {
        return Some(Ended::Reconnect(format!(
            "inactivity timeout (ping-restart {}s)",
            c.ping_restart.as_secs()
        )));
    }
    // The data plane's packet ids for the current key are running out:
    // renegotiate before they do (the server side does the same).
    if stats.needs_renegotiation && c.session.is_established() {
        match c.session.start_renegotiation(now) {
            Ok(()) => info!("renegotiating: packet ids of the current key running out"),
            Err(e) => debug!("renegotiation not started: {e}"),
        }
    }
    if let Some(ping) = c.ping
        && c.connected
        && stats.tx_idle() >= ping
        && let Err(e) = dp.send_data(peer_id, &PING_PAYLOAD)
    {
        debug!("keepalive ping not sent: {e}");
    }
    None
}

/// Send session output and act on session events. Returns how the connection ended, if it did.
fn drain(
    s: &ClientSettings,
    dp: &DataPlane,
    peers: &PeerTable,
    socket: &UdpSocket,
    c: &mut Conn,
) -> Option<Ended> {
    loop {
        while let Some(pkt) = c.session.poll_transmit() {
            if let Err(e) = socket.send_to(&pkt, c.server) {
                debug!("control send to {} failed: {e}", c.server);
            }
        }
        let ev = c.session.poll_event()?;
        match ev {
            Event::PushReply(reply) => {
                if let Err(e) = apply_push(s, dp, peers, c, &reply) {
                    warn!("cannot apply push reply: {e:#}");
                    return Some(Ended::Reconnect(format!(
                        "push reply not applicable: {e:#}"
                    )));
                }
            }
            Event::KeysReady {
                key_id,
                cipher,
                block,
            } => {
                let Some(peer_id) = c.peer_id else {
                    return Some(Ended::Reconnect("keys before push reply".into()));
                };
                peers.install_key(
                    peer_id,
                    key_id,
                    DataKeys::from_key_block(cipher, &block, Side::Client),
                );
            }
            Event::SendKey { key_id } => {
                if let Some(peer_id) = c.peer_id {
                    peers.set_send_key(peer_id, key_id);
                    if !c.connected {
                        c.connected = true;
                        info!("Initialization Sequence Completed");
                    }
                }
            }
            Event::KeyRetired { key_id } => {
                if let Some(peer_id) = c.peer_id {
                    peers.retire_key(peer_id, key_id);
                }
            }
            Event::AuthFailed(m) => return Some(Ended::Fatal(format!("AUTH_FAILED: {m}"))),
            Event::Restart {
                halt: true,
                message,
            } => return Some(Ended::Fatal(format!("server sent HALT {message}"))),
            Event::Restart {
                halt: false,
                message,
            } => {
                return Some(Ended::ServerLeft(format!("server sent RESTART {message}")));
            }
            Event::PeerExit => return Some(Ended::ServerLeft("server announced exit".into())),
            Event::Closed(reason) => return Some(Ended::Reconnect(reason.to_string())),
            Event::ClientAuthenticated { .. } | Event::PushRequested => {}
        }
    }
}

fn apply_push(
    s: &ClientSettings,
    dp: &DataPlane,
    peers: &PeerTable,
    c: &mut Conn,
    reply: &PushReply,
) -> anyhow::Result<()> {
    let dev = dp.tun_name().to_owned();
    let mut topology = "net30".to_owned();
    let mut ifconfig = None;
    let mut gateway = None;
    let mut routes = Vec::new();
    let mut redirect = false;
    let mut dns = Vec::new();
    let mut peer_id = PEER_ID_UNDEFINED;
    let mut mtu = s.tun_mtu;
    for o in &reply.options {
        match o {
            PushOption::Topology(t) => topology = t.clone(),
            PushOption::Ifconfig {
                local,
                netmask_or_remote,
            } => ifconfig = Some((*local, *netmask_or_remote)),
            PushOption::RouteGateway(gw) => gateway = Some(*gw),
            PushOption::Route {
                network,
                netmask,
                gateway,
            } => routes.push((*network, *netmask, *gateway)),
            // Every variant is applied the def1 way: two /1 routes that override
            // the default route without deleting it, so exit restores cleanly.
            PushOption::RedirectGateway(_) => redirect = true,
            PushOption::DhcpOption(kind, value) if kind.eq_ignore_ascii_case("DNS") => {
                dns.push(value.clone())
            }
            PushOption::Ping(n) => c.ping = Some(Duration::from_secs(u64::from(*n))),
            PushOption::PingRestart(n) => c.ping_restart = Duration::from_secs(u64::from(*n)),
            PushOption::PeerId(id) => peer_id = *id,
            PushOption::ProtocolFlags(flags) => c.cc_exit = flags.iter().any(|f| f == "cc-exit"),
            PushOption::TunMtu(m) => mtu = u16::try_from(*m).unwrap_or(s.tun_mtu),
            other => debug!("push option not applied: {other:?}"),
        }
    }
    let (local, second) = ifconfig.context("push reply has no ifconfig")?;
    let gateway = match topology.as_str() {
        "subnet" => {
            netconfig::configure_subnet(&dev, local, second, mtu)?;
            gateway
        }
        _ => {
            netconfig::configure_p2p(&dev, local, second, mtu)?;
            gateway.or(Some(second))
        }
    };
    c.applied.addresses = true;
    for (net, mask, gw) in routes {
        netconfig::add_route(&dev, net, mask, gw.or(gateway))?;
        c.applied.routes.push((net, mask));
    }
    if redirect {
        let gw = gateway.context("redirect-gateway needs a route-gateway")?;
        let server_ip = match c.server.ip() {
            std::net::IpAddr::V4(v4) => v4,
            std::net::IpAddr::V6(_) => anyhow::bail!("IPv6 server address"),
        };
        // Keep the tunnel's own packets off the tunnel.
        let (via, out_dev) = netconfig::route_to(server_ip)?;
        netconfig::add_host_route(server_ip, via, &out_dev)?;
        c.applied.host_route = Some(server_ip);
        for net in [Ipv4Addr::new(0, 0, 0, 0), Ipv4Addr::new(128, 0, 0, 0)] {
            netconfig::add_route(&dev, net, Ipv4Addr::new(128, 0, 0, 0), Some(gw))?;
            c.applied.routes.push((net, Ipv4Addr::new(128, 0, 0, 0)));
        }
    }
    if !dns.is_empty() {
        apply_dns(&dev, &dns);
    }
    peers.upsert_peer(peer_id, c.server, None);
    peers.set_client_default(Some(peer_id));
    c.peer_id = Some(peer_id);
    info!("tunnel {dev}: {local} ({topology}), peer-id {peer_id}");
    Ok(())
}

/// DNS servers go to systemd-resolved when it runs; otherwise they are only logged.
fn apply_dns(dev: &str, servers: &[String]) {
    let ok = std::process::Command::new("resolvectl")
        .arg("dns")
        .arg(dev)
        .args(servers)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        info!(
            "DNS servers {} set on {dev} via resolvectl",
            servers.join(" ")
        );
    } else {
        info!(
            "server pushed DNS servers {} (no resolvectl here; not applied)",
            servers.join(" ")
        );
    }
}

async fn say_goodbye(s: &ClientSettings, dp: &DataPlane, socket: &UdpSocket, c: &mut Conn) {
    let (Some(peer_id), Some(n)) = (c.peer_id, s.explicit_exit_notify) else {
        return;
    };
    if c.cc_exit {
        c.session.send_control_message(Instant::now(), "EXIT");
        while let Some(pkt) = c.session.poll_transmit() {
            let _ = socket.send_to(&pkt, c.server);
        }
    } else {
        let mut msg = OCC_MAGIC.to_vec();
        msg.push(OCC_EXIT);
        // 2.6 repeats the OCC exit about once a second for n seconds; we send
        // n copies spaced briefly so shutdown stays quick.
        for _ in 0..n.clamp(1, 5) {
            let _ = dp.send_data(peer_id, &msg);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn teardown(dp: &DataPlane, peers: &PeerTable, c: &mut Conn) {
    if let Some(peer_id) = c.peer_id.take() {
        peers.set_client_default(None);
        peers.remove_peer(peer_id);
    }
    for (net, mask) in c.applied.routes.drain(..) {
        netconfig::del_route(net, mask);
    }
    if let Some(h) = c.applied.host_route.take() {
        netconfig::del_route(h, Ipv4Addr::new(255, 255, 255, 255));
    }
    if std::mem::take(&mut c.applied.addresses)
        && let Err(e) = netconfig::flush_addresses(dp.tun_name())
    {
        debug!("{e:#}");
    }
}
