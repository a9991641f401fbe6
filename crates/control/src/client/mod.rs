//! The client's control plane: picks a remote, runs the session, applies what
//! the server pushes (addresses, routes, redirect-gateway, keepalive,
//! peer-id), reconnects with backoff, and restores the routing table on exit.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ferrovpn_dataplane::{DataPlane, DataPlaneConfig, PeerTable, UpEvent};
use ferrovpn_proto::session::{Session, SessionConfig};
use tracing::{info, warn};

use crate::status::StatusSettings;

mod apply;
mod connection;

use connection::run_connection;

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
    s: ClientSettings,
    shutdown: impl std::future::Future<Output = ()>,
    restart: Arc<tokio::sync::Notify>,
) -> anyhow::Result<()> {
    if s.remotes.is_empty() {
        anyhow::bail!("no 'remote' given");
    }
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
