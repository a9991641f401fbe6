//! The client's control plane: picks a remote, runs the session, applies what
//! the server pushes (addresses, routes, redirect-gateway, DNS, keepalive,
//! peer-id), reconnects with backoff, and restores the system on exit.
//!
//! The pure parts have their own modules: [`plan`] (what a push reply asks
//! for), [`routes`] (which routes to add, keep and delete), [`backoff`]
//! (when to retry), and `dns::render_resolv_conf`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ferrovpn_dataplane::{
    DataPlane, DataPlaneConfig, DataPlaneError, PeerTable, Transport, UpEvent,
};
use ferrovpn_proto::session::SessionConfig;
use tracing::{info, warn};

use crate::netconfig::NetConfig;
use crate::status::StatusSettings;

pub mod backoff;
mod connection;
pub mod credentials;
pub mod dns;
pub mod plan;
pub mod routes;
mod tunnel;

use backoff::{Backoff, Retry};
use connection::Connection;
use credentials::{CredentialSource, Credentials};
pub use ferrovpn_config::AuthRetry;
use tunnel::Tunnel;

/// One `remote HOST PORT` line.
#[derive(Clone, Debug)]
pub struct Remote {
    pub host: String,
    pub port: u16,
    /// `udp4`/`tcp4`: `Some(false)`, IPv4 only; `udp6`/`tcp6`: `Some(true)`,
    /// IPv6 only; `None`: whatever the name resolves to, in order.
    pub family: Option<bool>,
}

/// Reads user name and password again from where they came from.
pub type ReloadCredentials =
    Arc<dyn Fn(&CredentialSource) -> anyhow::Result<(String, String)> + Send + Sync>;

/// Everything the client runtime needs, already validated by the config layer.
pub struct ClientSettings {
    pub dataplane: DataPlaneConfig,
    pub remotes: Vec<Remote>,
    pub remote_random: bool,
    /// `connect-retry N MAX`: first wait and ceiling between attempts.
    pub connect_retry: Duration,
    pub connect_retry_max: Duration,
    /// `connect-timeout` / `server-poll-timeout`: how long a TCP connect may
    /// take, and how long the server may stay silent after an attempt starts.
    pub connect_timeout: Duration,
    /// TCP: bind the connection to this address first (`local` / `lport`
    /// given, as 2.6 binds a TCP client only then).
    pub tcp_bind: Option<SocketAddr>,
    pub session: Arc<SessionConfig>,
    /// Silence after which we reconnect until the server pushes its own value.
    pub ping_restart: Duration,
    /// Local `ping`; pushed values override it.
    pub ping: Option<Duration>,
    /// `ping-exit N`: exit (instead of reconnecting) after this much silence.
    pub ping_exit: Option<Duration>,
    /// `explicit-exit-notify N` (UDP only: 2.6 ignores it over TCP).
    pub explicit_exit_notify: Option<u32>,
    /// `status FILE [N]`: data-channel byte counts.
    pub status: Option<StatusSettings>,
    pub tun_mtu: u16,
    /// Give up after this many failed attempts in a row (tests); `None` = forever.
    pub max_attempts: Option<u32>,
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
    /// The server the plane was started for.
    server: SocketAddr,
    up: tokio::sync::mpsc::Receiver<UpEvent>,
}

impl Plane {
    fn start(cfg: DataPlaneConfig, peers: &PeerTable) -> Result<Plane, DataPlaneError> {
        let server = cfg
            .connect
            .ok_or_else(|| DataPlaneError::Config("a client data plane needs a server".into()))?;
        let (dp, up_rx) = DataPlane::start(cfg, peers.clone())?;
        Ok(Plane {
            dp,
            server,
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

/// Open the TCP connection to `server` (bound to `bind` first if given)
/// within `timeout`.
async fn connect_tcp(
    server: SocketAddr,
    bind: Option<SocketAddr>,
    timeout: Duration,
) -> anyhow::Result<std::net::TcpStream> {
    let socket = match server.ip() {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if let Some(local) = bind.map(|b| bind_towards(b, server)) {
        socket.set_reuseaddr(true)?;
        socket
            .bind(local)
            .with_context(|| format!("binding {local}"))?;
    }
    let stream = tokio::time::timeout(timeout, socket.connect(server))
        .await
        .map_err(|_| anyhow::anyhow!("no connection within {}s", timeout.as_secs()))??;
    Ok(stream.into_std()?)
}

/// No route to the server (yet): a reason to retry, not to exit.
fn is_unreachable(e: &DataPlaneError) -> bool {
    use std::io::ErrorKind;
    matches!(e, DataPlaneError::Io { source, .. } if matches!(
        source.kind(),
        ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable | ErrorKind::AddrNotAvailable
    ))
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
    // Opened before setup_done drops privileges, and kept (as 2.6 does).
    let status_file = s.status.as_ref().and_then(|st| {
        crate::fsutil::KeptFile::create(&st.path)
            .inspect_err(|e| warn!("cannot open status file {}: {e}", st.path.display()))
            .ok()
    });
    let peers = PeerTable::new();
    let mut tunnel = Tunnel::new(NetConfig::connect()?, dns::DnsBackend::detect(), s.no_exec);
    // The data plane's socket is connected to the server, so it is (re)started
    // when the resolved server address changes; reconnecting to the same
    // address keeps the TUN device and its queues.
    let mut plane: Option<Plane> = None;
    tokio::pin!(shutdown);

    let mut order: Vec<usize> = (0..s.remotes.len()).collect();
    if s.remote_random {
        shuffle(&mut order);
    }
    let mut attempt: u32 = 0;
    let mut backoff = Backoff::new(s.connect_retry, s.connect_retry_max, s.max_attempts);
    let mut credentials = s.credentials.clone();
    // A new data plane (new socket) for the next attempt even to the same address.
    let mut fresh_socket = false;
    // The current remote's addresses not tried yet (last first).
    let mut untried: Vec<SocketAddr> = Vec::new();
    let mut remote_index = 0;
    let result = loop {
        let next_remote = untried.is_empty();
        if next_remote {
            remote_index = order[attempt as usize % order.len()];
            attempt = attempt.wrapping_add(1);
        }
        let remote = &s.remotes[remote_index];
        let server = if next_remote {
            resolve(remote).await.map(|mut addrs| {
                addrs.reverse();
                untried = addrs;
                untried.pop().expect("resolve returns at least one address")
            })
        } else {
            Ok(untried.pop().expect("checked non-empty"))
        };
        let ended = match server {
            Ok(server) => {
                if let Some(c) = credentials.as_mut()
                    && !c.has_secret()
                {
                    // auth-nocache dropped the password after the last use.
                    match reload(&s, c) {
                        Ok(()) => {}
                        Err(e) => break Err(e.context("auth-user-pass")),
                    }
                }
                info!("connecting to {}:{} ({server})", remote.host, remote.port);
                let fresh = std::mem::take(&mut fresh_socket);
                match ensure_plane(&s, &peers, &mut plane, server, fresh, &mut tunnel) {
                    Ok(p) => {
                        if let Some(done) = setup_done.take()
                            && let Err(e) = done()
                        {
                            break Err(e);
                        }
                        tunnel.route_around(server.ip()).await;
                        match open_link(&s, &p.dp, server).await {
                            Ok(server) => {
                                let outcome = Connection {
                                    settings: &s,
                                    dp: &p.dp,
                                    peers: &peers,
                                    up: &mut p.up,
                                    server,
                                    restart: &restart,
                                    tunnel: &mut tunnel,
                                    credentials: credentials.as_mut(),
                                    status_file: status_file.as_ref(),
                                }
                                .run(shutdown.as_mut())
                                .await;
                                // Over TCP the connection ends with the session.
                                p.dp.close_stream(server);
                                if outcome.connected {
                                    // A connection that came up resets the backoff, like OpenVPN.
                                    backoff.reset();
                                    // Its other addresses are not tried: the
                                    // next attempt resolves anew.
                                    untried.clear();
                                }
                                outcome.ended
                            }
                            Err(e) => Ended::Reconnect(format!("TCP connect to {server}: {e:#}")),
                        }
                    }
                    Err(e) if is_unreachable(&e) => {
                        Ended::Reconnect(format!("no way to {server} yet: {e}"))
                    }
                    Err(e) => break Err(anyhow::Error::new(e).context("starting the data plane")),
                }
            }
            Err(e) => Ended::Reconnect(format!("cannot resolve {}: {e:#}", remote.host)),
        };
        if matches!(ended, Ended::ServerLeft(_)) {
            // Only an ephemeral port changes; a fixed lport stays as it is.
            fresh_socket = s.dataplane.bind.port() == 0;
        }
        if !keeps_tunnel(s.persist_tun, &ended) {
            tunnel.tear_down().await;
        } else if tunnel.is_configured() {
            info!("persist-tun: keeping the tunnel's addresses and routes while reconnecting");
        }
        match ended {
            Ended::Shutdown => break Ok(()),
            Ended::Exit(reason) => {
                warn!("exiting: {reason}");
                break Ok(());
            }
            Ended::Fatal(reason) => break Err(anyhow::anyhow!(reason)),
            Ended::AuthFailed(reason) => {
                let token_refused = credentials.as_ref().is_some_and(Credentials::has_token);
                if let Some(c) = credentials.as_mut() {
                    c.auth_failed();
                }
                // A refused auth-token (expired, server restarted) is retried
                // with the password whatever auth-retry says, as 2.6 does.
                let again = token_refused
                    || match s.auth_retry {
                        AuthRetry::None => false,
                        AuthRetry::NoInteract => true,
                        AuthRetry::Interact => match credentials.as_mut() {
                            Some(c) => match reload(&s, c) {
                                Ok(()) => true,
                                Err(e) => break Err(e.context(format!("AUTH_FAILED: {reason}"))),
                            },
                            None => true,
                        },
                    };
                if !again {
                    break Err(anyhow::anyhow!("AUTH_FAILED: {reason}"));
                }
                let wait = match backoff.failed() {
                    Retry::After(wait) => wait,
                    Retry::GiveUp { failures } => {
                        break Err(anyhow::anyhow!(
                            "giving up after {failures} attempts: AUTH_FAILED: {reason}"
                        ));
                    }
                };
                warn!("AUTH_FAILED: {reason}; retrying in {}s", wait.as_secs_f32());
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = &mut shutdown => break Ok(()),
                }
            }
            Ended::Restart => {
                info!("restarting the connection (SIGUSR1)");
                backoff.reset();
            }
            Ended::Reconnect(reason) | Ended::ServerLeft(reason) => {
                let wait = match backoff.failed() {
                    Retry::After(wait) => wait,
                    Retry::GiveUp { failures } => {
                        break Err(anyhow::anyhow!(
                            "giving up after {failures} attempts: {reason}"
                        ));
                    }
                };
                warn!(
                    "connection ended: {reason}; retrying in {}s",
                    wait.as_secs_f32()
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = &mut shutdown => break Ok(()),
                }
            }
        }
    };
    tunnel.tear_down().await;
    if let Some(p) = plane {
        p.dp.shutdown();
    }
    result
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
    peers: &PeerTable,
    plane: &'p mut Option<Plane>,
    server: SocketAddr,
    fresh: bool,
    tunnel: &mut Tunnel,
) -> Result<&'p mut Plane, DataPlaneError> {
    let current = plane.as_ref().is_some_and(|p| !fresh && p.server == server);
    if !current {
        let mut cfg = s.dataplane.clone();
        cfg.bind = bind_towards(cfg.bind, server);
        cfg.connect = Some(server);
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

/// Over TCP, connect and hand the connection to the data plane; the
/// session then talks to the connection's peer address. Over UDP the data
/// plane's socket is connected already.
async fn open_link(
    s: &ClientSettings,
    dp: &DataPlane,
    server: SocketAddr,
) -> anyhow::Result<SocketAddr> {
    if s.dataplane.transport != Transport::Tcp {
        return Ok(server);
    }
    let stream = connect_tcp(server, s.tcp_bind, s.connect_timeout).await?;
    let peer = dp.attach_stream(stream)?;
    info!("TCP connection to {peer} established");
    Ok(peer)
}

/// Every address of `r` its `proto` allows, in the resolver's order
/// (2.6 tries each before it moves to the next remote).
async fn resolve(r: &Remote) -> anyhow::Result<Vec<SocketAddr>> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((r.host.as_str(), r.port))
        .await?
        .filter(|a| r.family.is_none_or(|v6| a.is_ipv6() == v6))
        .collect();
    if addrs.is_empty() {
        anyhow::bail!(
            "no {} address",
            match r.family {
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
