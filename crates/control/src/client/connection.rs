//! One connection to one server: the session loop, keepalive, renegotiation
//! on packet-id exhaustion, the goodbye on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ferrovpn_dataplane::{DataPlane, PeerTable, Transport, UpEvent};
use ferrovpn_proto::data::{DataKeys, OCC_EXIT, OCC_MAGIC, PING_PAYLOAD, Side};
use ferrovpn_proto::push::{PushOption, PushReply};
use ferrovpn_proto::session::{Event, Session, SessionError};
use ferrovpn_proto::wire::{Opcode, PEER_ID_UNDEFINED};
use tracing::{debug, info, warn};

use super::credentials::{CredentialMemory, CredentialSource, Credentials};
use super::plan::{PushPlan, dropped_by_route_nopull};
use super::scripts::ClientScripts;
use super::tunnel::Tunnel;
use super::{ClientSettings, Ended, Remote, unix_now};
use crate::fsutil::KeptFile;

/// What one connection works with. The tunnel state outlives it.
pub(super) struct Connection<'a> {
    pub settings: &'a ClientSettings,
    /// The connection entry of this attempt.
    pub remote: &'a Remote,
    pub dp: &'a DataPlane,
    pub peers: &'a PeerTable,
    pub up: &'a mut tokio::sync::mpsc::Receiver<UpEvent>,
    pub server: SocketAddr,
    /// Where the tunnel's packets go outside it (the server, or the proxy
    /// in between): what routes through the tunnel must go around.
    pub outer: std::net::IpAddr,
    pub restart: &'a tokio::sync::Notify,
    pub tunnel: &'a mut Tunnel,
    /// `auth-user-pass` (empty without); a pushed auth-token is stored
    /// here for later renegotiations and reconnects.
    pub credentials: &'a CredentialMemory,
    /// `status FILE`, opened when the client started.
    pub status_file: Option<&'a KeptFile>,
    /// What the status file and the management interface show.
    pub counts: &'a super::counts::ClientCounts,
    /// `tls-verify`, `ipchange`, `up`, `route-up` (and what `down` needs).
    pub scripts: &'a mut ClientScripts,
    /// The management interface, told of each state (`>STATE:`).
    pub management: Option<&'a super::management::ClientManagement>,
}

/// `tls-verify` and `ipchange` running: `Err` refuses the server.
type BeforePush = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// Most key events held while the scripts before the push reply run.
const MAX_HELD_EVENTS: usize = 16;

/// How a connection ended, and whether it came up before.
pub(super) struct Outcome {
    pub ended: Ended,
    /// The data channel was up ("Initialization Sequence Completed").
    pub connected: bool,
}

/// Per-connection state the event handlers change.
struct Live {
    session: Session,
    peer_id: Option<u32>,
    ping: Option<Duration>,
    ping_restart: Duration,
    ping_exit: Option<Duration>,
    cc_exit: bool,
    last_control_rx: Instant,
    /// When the attempt started; the server must answer within `connect_timeout`.
    started: Instant,
    /// A control packet from the server arrived.
    heard_from_server: bool,
    connected: bool,
    /// `inactive`: when its timer last (re)started, the tunnel bytes
    /// counted then, and the keepalive bytes we sent (not traffic).
    inactive_since: Instant,
    inactive_base: u64,
    keepalive_tx_bytes: u64,
    /// `tls-verify`/`ipchange` still running, with the push reply and the
    /// key events that wait for them.
    before_push: Option<BeforePush>,
    held_reply: Option<PushReply>,
    held_events: std::collections::VecDeque<Event>,
    /// The scripts before the push reply ran (once per connection).
    before_push_done: bool,
    /// `tls-verify` over the server's chain in the handshake of a key_id,
    /// whose key-method-2 message waits for it.
    verifying: Option<(u8, BeforePush)>,
    /// The key_id whose key-method-2 message waits for credentials to be
    /// asked over the management interface (the run loop asks).
    credentials_wanted: Option<u8>,
    /// The tunnel address the push reply gave, for the CONNECTED state.
    tunnel_ip: Option<std::net::Ipv4Addr>,
    /// A route of the push reply could not be added: CONNECTED says
    /// ROUTE_ERROR, as 2.6 with netlink.
    route_errors: bool,
    /// The server said AUTH_PENDING: `Some(false)` until the GET_CONFIG
    /// state went out (2.6 shows it when its push-request timer finds the
    /// login still waiting, a second into the attempt, or at the latest
    /// before the pushed config is applied).
    get_config: Option<bool>,
}

/// A plugin vetoed a key exchange: 2.6 ends as on SIGTERM
/// (`auth-control-exit`), running `route-pre-down` and `down` if the
/// tunnel is up.
fn tls_final_refused() -> Ended {
    Ended::Exit(format!(
        "{}: a PLUGIN_TLS_FINAL call failed",
        super::AUTH_CONTROL_EXIT
    ))
}

/// `tls-verify`'s verdict on the server's chain in the handshake of a
/// key_id; never, when none runs.
async fn chain_verdict(f: &mut Option<(u8, BeforePush)>) -> (u8, Result<(), String>) {
    match f {
        Some((key_id, f)) => (*key_id, f.await),
        None => std::future::pending().await,
    }
}

/// A credentials question of a key exchange: the key_id that waits for
/// it, and the question until answered.
type CredentialsQuestion<'a> = (
    u8,
    std::pin::Pin<Box<dyn std::future::Future<Output = ()> + 'a>>,
);

/// The answer to a credentials question in a key exchange: the key_id
/// that waits for it; never, when none is asked.
async fn credentials_answered(f: &mut Option<CredentialsQuestion<'_>>) -> u8 {
    match f {
        Some((key_id, f)) => {
            f.await;
            *key_id
        }
        None => std::future::pending().await,
    }
}

/// Whether a session that closed for `reason` failed as 2.6's TLS
/// handshake does (`tls-error`): the server's chain refused (on a
/// renegotiation too, once the old key ran out), or hand-window over.
fn tls_error(reason: &SessionError) -> bool {
    match reason {
        SessionError::PeerRefused | SessionError::HandWindowExpired => true,
        SessionError::RenegotiationFailed { cause, .. } => tls_error(cause),
        _ => false,
    }
}

/// The verdict of the scripts before the push reply; never, when none run.
async fn before_push_verdict(f: &mut Option<BeforePush>) -> Result<(), String> {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

impl Connection<'_> {
    /// Whether the key exchanges ask the management interface for
    /// credentials they lack (`management-query-passwords` for
    /// `auth-user-pass`): after `auth-nocache` or `forget-passwords`
    /// dropped them, as 2.6's `key_method_2_write`.
    fn asks_credentials_in_key_exchange(&self) -> bool {
        self.management.is_some()
            && self.credentials.with(|c| {
                c.as_ref()
                    .is_some_and(|c| matches!(c.source, CredentialSource::Management { .. }))
            })
    }

    /// Key `key_id`'s handshake is done (and the server's chain accepted):
    /// our key-method-2 message goes out with the credentials, unless they
    /// must be asked over the management interface first (then the run
    /// loop asks, and calls this again with the answer kept).
    fn key_method_may_go(&mut self, c: &mut Live, key_id: u8) {
        if self.management.is_some() && super::credentials_to_ask(self.credentials) {
            c.credentials_wanted = Some(key_id);
            return;
        }
        if let Some((user, secret)) = self
            .credentials
            .with(|c| c.as_mut().and_then(Credentials::for_key_exchange))
        {
            c.session.set_credentials(&user, &secret);
        }
        c.session.peer_verified(Instant::now(), key_id, true);
    }

    /// Run until the connection ends; `shutdown` resolving ends it with a goodbye.
    pub async fn run(
        mut self,
        mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Outcome {
        let s = self.settings;
        let now = Instant::now();
        let session_config = if self.remote.transport == Transport::Tcp {
            // 2.6 names the TCP client end in the options string.
            let mut tcp = (*s.session).clone();
            tcp.options_string =
                ferrovpn_proto::key_method::occ_over_tcp(&tcp.options_string, "TCPv4_CLIENT");
            Arc::new(tcp)
        } else {
            s.session.clone()
        };
        if let Some(ended) = self.p2p_device_up().await {
            return Outcome {
                ended,
                connected: false,
            };
        }
        let p2p_tls_server = s.p2p.as_ref().is_some_and(|p| p.tls_server);
        // An end without `remote` hears the peer's reset first.
        let waits_for_peer = s.p2p.is_some() && self.remote.waits();
        // The peer's reset a waiting TLS client answers with its own.
        let mut first_reset = None;
        let started = if waits_for_peer {
            match self
                .await_peer_reset(session_config, shutdown.as_mut())
                .await
            {
                Ok((session, reset)) => {
                    first_reset = reset;
                    Ok(session)
                }
                Err(ended) => {
                    return Outcome {
                        ended,
                        connected: false,
                    };
                }
            }
        } else if p2p_tls_server {
            // 2.6's TLS server with `remote` sends its reset first
            // (`tls_multi_process`), so that a TLS client without
            // `remote` can answer it; the peer's own reset may cross it.
            info!(
                "waiting for the peer's TLS handshake from {}, our reset sent there first",
                self.server
            );
            Session::initiate_p2p_server(session_config, now, unix_now())
        } else {
            Session::connect(session_config, now, unix_now())
        };
        let session = match started {
            Ok(mut v) => {
                if self.scripts.verifies_chain() || self.asks_credentials_in_key_exchange() {
                    // 2.6 verifies inside each TLS handshake: our key
                    // method (and the password in it) waits for the
                    // verdict. It also asks for credentials it lacks in
                    // the key exchange (`key_method_2_write` calls
                    // `auth_user_pass_setup`): the credentials are taken
                    // then ([`Self::key_method_may_go`]).
                    v.verify_peer_before_key_method();
                } else if let Some((user, secret)) = self
                    .credentials
                    .with(|c| c.as_mut().and_then(Credentials::for_key_exchange))
                {
                    v.set_credentials(&user, &secret);
                }
                v
            }
            Err(e) => {
                return Outcome {
                    ended: Ended::Fatal(format!("cannot start session: {e}")),
                    connected: false,
                };
            }
        };
        let mut c = Live {
            session,
            peer_id: None,
            ping: s.ping,
            ping_restart: s.ping_restart,
            ping_exit: s.ping_exit,
            cc_exit: false,
            last_control_rx: now,
            started: now,
            heard_from_server: waits_for_peer,
            connected: false,
            inactive_since: now,
            inactive_base: 0,
            keepalive_tx_bytes: 0,
            before_push: None,
            held_reply: None,
            held_events: std::collections::VecDeque::new(),
            before_push_done: false,
            verifying: None,
            credentials_wanted: None,
            tunnel_ip: None,
            route_errors: false,
            get_config: None,
        };
        if let Some(m) = self.management {
            m.state("WAIT", "");
            m.drop_control_messages();
        }
        if let Some(reset) = first_reset {
            c.session.handle_packet(Instant::now(), &reset);
        }
        let mut next_housekeeping = now + Duration::from_millis(500);
        let mut next_status = now;
        // A credentials question of a key exchange, while it waits.
        let mut asking: Option<CredentialsQuestion<'_>> = None;
        let ended = loop {
            if let Some(end) = self.drain(&mut c).await {
                break end;
            }
            if let (Some(key_id), Some(m)) = (c.credentials_wanted.take(), self.management) {
                asking = Some((
                    key_id,
                    Box::pin(super::ask_credentials(m, self.credentials)),
                ));
            }
            let deadline = c
                .session
                .poll_timeout()
                .map_or(next_housekeeping, |t| t.min(next_housekeeping));
            tokio::select! {
                ev = self.up.recv() => match ev {
                    Some(UpEvent::Control { from, packet })
                        if from == self.server || self.may_float_to(&c, &packet) =>
                    {
                        if from != self.server {
                            self.float_to(from);
                        }
                        if let Some(why) = self.p2p_peer_restarted(&c, &packet) {
                            break Ended::Reconnect(why);
                        }
                        c.last_control_rx = Instant::now();
                        if !c.heard_from_server
                            && let Some(m) = self.management
                        {
                            m.state("AUTH", "");
                        }
                        c.heard_from_server = true;
                        c.session.handle_packet(Instant::now(), &packet);
                    }
                    Some(UpEvent::Control { from, packet }) => {
                        // 2.6 with `float`: an authentic reset under a new
                        // session id from anywhere starts a new session.
                        if self.remote.floats()
                            && let Some(why) = self.p2p_peer_restarted(&c, &packet)
                        {
                            break Ended::Reconnect(format!("{why} from {from}"));
                        }
                        debug!("ignoring control packet from {from}");
                    }
                    Some(UpEvent::Occ { payload, .. }) => {
                        if payload.get(OCC_MAGIC.len()) == Some(&OCC_EXIT) {
                            break Ended::ServerLeft("server sent exit notification".into());
                        }
                    }
                    Some(UpEvent::Float { .. }) => {}
                    Some(UpEvent::StreamClosed { from, reason }) if from == self.server => {
                        break Ended::Reconnect(format!("connection to {from} ended: {reason}"));
                    }
                    Some(UpEvent::StreamClosed { .. }) => {}
                    None => break Ended::Fatal("data plane stopped".into()),
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    c.session.handle_timeout(now);
                    if now >= next_housekeeping {
                        next_housekeeping = now + Duration::from_millis(500);
                        if let (Some(st), Some(file)) = (&s.status, self.status_file)
                            && now >= next_status
                        {
                            next_status = now + st.interval;
                            write_status(file, self.counts);
                        }
                        if let Some(end) = self.housekeeping(&mut c, now) {
                            break end;
                        }
                    }
                }
                verdict = before_push_verdict(&mut c.before_push) => {
                    c.before_push = None;
                    c.before_push_done = true;
                    if let Err(why) = verdict {
                        warn!("{why}");
                        if why.starts_with(super::AUTH_CONTROL_EXIT) {
                            break Ended::Exit(why);
                        }
                        // The server thinks this session is up: start
                        // afresh from a new port, as after a rejected reply.
                        break Ended::ServerLeft(format!("the server was refused: {why}"));
                    }
                    if let Some(reply) = c.held_reply.take()
                        && let Some(end) = self.pushed(&mut c, &reply).await
                    {
                        break end;
                    }
                }
                (key_id, verdict) = chain_verdict(&mut c.verifying) => {
                    c.verifying = None;
                    if let Err(why) = &verdict {
                        // 2.6's verify callback fails the handshake.
                        warn!("{why}");
                        warn!("{}", super::TLS_HANDSHAKE_FAILED);
                    }
                    if verdict.is_ok() {
                        self.key_method_may_go(&mut c, key_id);
                    } else {
                        c.session.peer_verified(Instant::now(), key_id, false);
                    }
                }
                key_id = credentials_answered(&mut asking) => {
                    asking = None;
                    self.key_method_may_go(&mut c, key_id);
                }
                text = control_message(self.management) => {
                    c.session.send_control_message(Instant::now(), &text);
                }
                _ = self.restart.notified() => break Ended::Restart,
                _ = shutdown.as_mut() => {
                    self.say_goodbye(&mut c).await;
                    break Ended::Shutdown;
                }
            }
        };
        if let (Some(_), Some(m)) = (asking, self.management) {
            // The connection ended while the question waited.
            m.cancel_password_query();
        }
        if let Some(peer_id) = c.peer_id.take() {
            self.peers.set_client_default(None);
            self.peers.remove_peer(peer_id);
        }
        Outcome {
            ended,
            connected: c.connected,
        }
    }

    /// The GET_CONFIG state after AUTH_PENDING, once (see [`Live::get_config`]).
    fn get_config_state(&self, c: &mut Live) {
        if c.get_config == Some(false) {
            c.get_config = Some(true);
            if let Some(m) = self.management {
                m.state("GET_CONFIG", "");
            }
        }
    }

    fn housekeeping(&self, c: &mut Live, now: Instant) -> Option<Ended> {
        if let Some(end) = self.check_inactivity(c, now) {
            return Some(end);
        }
        if now.saturating_duration_since(c.started) >= Duration::from_secs(1) {
            self.get_config_state(c);
        }
        // `connect-timeout` (alias `server-poll-timeout`), as 2.6: restart
        // when the server has not answered at all within it.
        if !c.heard_from_server
            && now.saturating_duration_since(c.started) >= self.remote.connect_timeout
        {
            return Some(Ended::Reconnect(format!(
                "server poll timeout: no answer from {} within {}s",
                self.server,
                self.remote.connect_timeout.as_secs()
            )));
        }
        // Point-to-point mode: 2.6's ping-restart / ping-exit count from
        // the start, before the peer ever answered (our reset sent, or
        // waiting for its); zero disables them, as in 2.6.
        if self.settings.p2p.is_some() && !c.connected {
            let silent = now.saturating_duration_since(c.last_control_rx);
            if let Some(limit) = c.ping_exit.filter(|l| !l.is_zero())
                && silent >= limit
            {
                return Some(Ended::Exit(format!(
                    "inactivity timeout (ping-exit {}s)",
                    limit.as_secs()
                )));
            }
            if !c.ping_restart.is_zero() && silent >= c.ping_restart {
                return Some(Ended::Reconnect(format!(
                    "inactivity timeout (ping-restart {}s)",
                    c.ping_restart.as_secs()
                )));
            }
        }
        let peer_id = c.peer_id?;
        let stats = self.peers.peer_stats(peer_id)?;
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
        {
            match self.dp.send_data(peer_id, &PING_PAYLOAD) {
                Ok(()) => c.keepalive_tx_bytes += PING_PAYLOAD.len() as u64,
                Err(e) => debug!("keepalive ping not sent: {e}"),
            }
        }
        None
    }

    /// `inactive`, as 2.6's `register_activity`: the timer restarts once
    /// BYTES (any, for 0) of tunnel traffic passed since it last did;
    /// running out ends the process. It runs from the start of each
    /// connection, connected or not.
    fn check_inactivity(&self, c: &mut Live, now: Instant) -> Option<Ended> {
        let limit = self.settings.inactive?;
        let traffic = c
            .peer_id
            .and_then(|id| self.peers.peer_stats(id))
            .map_or(0, |st| {
                st.rx_bytes.saturating_sub(st.rx_keepalive_bytes)
                    + st.tx_bytes.saturating_sub(c.keepalive_tx_bytes)
            });
        let new = traffic.saturating_sub(c.inactive_base);
        if new > 0 && new >= limit.min_bytes {
            c.inactive_base = traffic;
            c.inactive_since = now;
        }
        if now.saturating_duration_since(c.inactive_since) >= limit.timeout {
            info!("Inactivity timeout (--inactive), exiting");
            return Some(Ended::Exit(format!(
                "inactivity timeout (inactive {}s)",
                limit.timeout.as_secs()
            )));
        }
        None
    }

    /// Send session output and act on session events. Returns how the connection ended, if it did.
    async fn drain(&mut self, c: &mut Live) -> Option<Ended> {
        loop {
            while let Some(pkt) = c.session.poll_transmit() {
                if let Err(e) = self.dp.send_control(self.server, &pkt) {
                    debug!("control send to {} failed: {e}", self.server);
                }
            }
            let waiting = c.held_reply.is_some();
            let ev = match c.held_events.pop_front() {
                Some(ev) if !waiting => ev,
                held => {
                    if let Some(ev) = held {
                        c.held_events.push_front(ev);
                    }
                    c.session.poll_event()?
                }
            };
            if waiting
                && matches!(
                    ev,
                    Event::KeysReady { .. } | Event::SendKey { .. } | Event::KeyRetired { .. }
                )
            {
                if c.held_events.len() >= MAX_HELD_EVENTS {
                    return Some(Ended::Reconnect(
                        "too many key exchanges while scripts ran".into(),
                    ));
                }
                c.held_events.push_back(ev);
                continue;
            }
            match ev {
                // A later reply of an established session (2.6 renews the
                // auth-token this way) carries only what changed.
                Event::PushReply(reply) if c.peer_id.is_some() => self.push_update(c, &reply),
                Event::PushReply(_) if waiting => {
                    debug!("push reply while the scripts before it run: ignored");
                }
                Event::PushReply(reply)
                    if !c.before_push_done && self.scripts.runs_before_push() =>
                {
                    // tls-verify and ipchange first; the reply and the keys
                    // wait (no data key is used before the verdict).
                    let presented = c.session.peer_certificates_der();
                    c.before_push =
                        Some(Box::pin(self.scripts.before_push(self.server, presented)));
                    c.held_reply = Some(reply);
                }
                Event::PushReply(reply) => {
                    if let Some(end) = self.pushed(c, &reply).await {
                        return Some(end);
                    }
                }
                // A renegotiation's key (or a point-to-point link's first).
                Event::KeysReady { key_id, .. }
                    if (key_id != 0 || self.settings.p2p.is_some())
                        && !self.tls_final(c, key_id).await =>
                {
                    return Some(tls_final_refused());
                }
                Event::KeysReady {
                    key_id,
                    cipher,
                    auth,
                    block,
                } => {
                    if c.peer_id.is_none()
                        && self.settings.p2p.is_some()
                        && let Err(e) = self.p2p_up(c).await
                    {
                        warn!("cannot set up the point-to-point link: {e:#}");
                        return Some(Ended::Reconnect(format!(
                            "point-to-point setup failed: {e:#}"
                        )));
                    }
                    let Some(peer_id) = c.peer_id else {
                        return Some(Ended::Reconnect("keys before push reply".into()));
                    };
                    // A point-to-point TLS server holds the server's half of the key block.
                    let side = if self.settings.p2p.as_ref().is_some_and(|p| p.tls_server) {
                        Side::Server
                    } else {
                        Side::Client
                    };
                    let keys = match DataKeys::new(cipher, auth, &block, side) {
                        Ok(k) => k,
                        Err(e) => {
                            return Some(Ended::Fatal(format!(
                                "cannot set up {cipher} data keys: {e}"
                            )));
                        }
                    };
                    self.peers.install_key(peer_id, key_id, keys);
                }
                Event::SendKey { key_id } => {
                    if let Some(peer_id) = c.peer_id {
                        self.peers.set_send_key(peer_id, key_id);
                        if !c.connected {
                            c.connected = true;
                            // The server's certificate is known now.
                            crate::peer_log::relabel_current(
                                c.session.peer_common_name().as_deref(),
                                self.server,
                            );
                            info!("Initialization Sequence Completed");
                            if let Some(m) = self.management {
                                m.full_state(crate::management::ClientState {
                                    state: "CONNECTED",
                                    description: if c.route_errors {
                                        "ROUTE_ERROR"
                                    } else {
                                        "SUCCESS"
                                    }
                                    .into(),
                                    local_ip: c
                                        .tunnel_ip
                                        .map(|a| a.to_string())
                                        .unwrap_or_default(),
                                    remote_ip: self.server.ip().to_string(),
                                    remote_port: self.server.port().to_string(),
                                });
                            }
                        }
                    }
                }
                Event::KeyRetired { key_id } => {
                    if let Some(peer_id) = c.peer_id {
                        self.peers.retire_key(peer_id, key_id);
                    }
                }
                Event::AuthFailed(m) => return Some(Ended::AuthFailed(m)),
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
                Event::Closed(reason @ SessionError::PulledOptionRejected(_)) => {
                    // The server thinks this session is up: start afresh
                    // from a new port, as after RESTART.
                    return Some(Ended::ServerLeft(reason.to_string()));
                }
                Event::Closed(
                    reason @ (SessionError::PeerRefused
                    | SessionError::HandWindowExpired
                    | SessionError::RenegotiationFailed { .. }),
                ) if tls_error(&reason) => {
                    return Some(Ended::Reconnect(format!(
                        "{}: {reason}",
                        super::TLS_HANDSHAKE_FAILED
                    )));
                }
                Event::Closed(reason) => return Some(Ended::Reconnect(reason.to_string())),
                Event::VerifyPeer { key_id } if self.scripts.verifies_chain() => {
                    let presented = c.session.peer_certificates_der();
                    c.verifying = Some((
                        key_id,
                        Box::pin(self.scripts.verify_server(self.server, presented)),
                    ));
                }
                Event::VerifyPeer { key_id } => self.key_method_may_go(c, key_id),
                Event::AuthPending(keywords) => {
                    info!("AUTH_PENDING received ('{keywords}')");
                    if let Some(m) = self.management {
                        m.state("AUTH_PENDING", &keywords);
                    }
                    c.get_config.get_or_insert(false);
                }
                Event::Info(text) => {
                    info!("Info command was pushed by server ('{text}')");
                    if let Some(m) = self.management {
                        m.line(format!(">INFOMSG:{text}"));
                    }
                }
                Event::ClientAuthenticated { .. }
                | Event::Reauthenticate { .. }
                | Event::CrResponse { .. }
                | Event::PushRequested => {}
            }
        }
    }

    /// `PLUGIN_TLS_FINAL` for the key exchange of `key_id`; `false`: a
    /// plugin vetoed it.
    async fn tls_final(&self, c: &Live, key_id: u8) -> bool {
        if !self.scripts.wants_tls_final() {
            return true;
        }
        let env = self
            .scripts
            .key_exchange_env(self.server, &c.session.peer_certificates_der());
        let ok = self.scripts.tls_final(&env).await;
        if !ok {
            warn!("TLS_FINAL plugin refused key {key_id}");
        }
        ok
    }

    /// Apply the first push reply; the ending it calls for, if any.
    async fn pushed(&mut self, c: &mut Live, reply: &PushReply) -> Option<Ended> {
        match self.apply_push(c, reply).await {
            Ok(None) => None,
            Ok(Some(fatal)) => Some(Ended::Fatal(fatal)),
            Err(e) => {
                warn!("cannot apply push reply: {e:#}");
                Some(Ended::Reconnect(format!(
                    "push reply not applicable: {e:#}"
                )))
            }
        }
    }

    /// Configure the tunnel as `reply` says and run `up`/`route-up`; a
    /// failing `up` is the `Ok(Some(reason))` to stop for, as in 2.6.
    async fn apply_push(
        &mut self,
        c: &mut Live,
        reply: &PushReply,
    ) -> anyhow::Result<Option<String>> {
        let framing = crate::compression::pushed(&self.settings.compression, &reply.options)
            .context(
                "server pushed compression settings that are not allowed (see allow-compression)",
            )?;
        let nopull = self.settings.route_nopull;
        let pulled: Vec<&PushOption> = reply
            .options
            .iter()
            .filter(|o| {
                let dropped = nopull && dropped_by_route_nopull(o);
                if dropped {
                    info!("route-nopull: pushed '{}' not applied", o.to_text());
                }
                !dropped
            })
            .collect();
        let plan = PushPlan::from_options(
            self.settings
                .local_options
                .iter()
                .chain(pulled.iter().copied()),
            self.settings.tun_mtu,
        );
        let dev = self.dp.tun_name().to_owned();
        // persist-tun kept the device configured across the restart: 2.6
        // preserves the TUN instance and neither assigns nor routes again.
        let preserved = self.tunnel.is_configured();
        self.get_config_state(c);
        if let Some(m) = self.management
            && !preserved
        {
            m.full_state(crate::management::ClientState {
                state: "ASSIGN_IP",
                local_ip: plan.local_address(),
                ..Default::default()
            });
            // 2.6 enters it for its IPv4 route list only (route.c
            // `add_routes`: `rl->routes`, the `route` lines that have a
            // gateway); IPv6 routes and the redirect routes go without it.
            if !plan.routes.is_empty() {
                m.state("ADD_ROUTES", "");
            }
        }
        c.tunnel_ip = plan.ipv4.map(|v4| v4.local);
        if !preserved && (plan.route_lines || plan.redirect.is_some()) {
            // 2.6 looks the default route up before adding its own, and
            // hands it to the scripts, plugins and management.
            self.scripts
                .set_net_gateway(self.tunnel.default_gateway4().await);
        }
        if !preserved && plan.route6_lines {
            self.scripts
                .set_net_gateway6(self.tunnel.default_gateway6().await);
        }
        self.tunnel.apply(&dev, self.outer, &plan).await?;
        c.route_errors = self.tunnel.route_errors();
        // 2.6 hands every pulled dhcp-option to the scripts.
        let foreign: Vec<String> = pulled
            .iter()
            .filter(|o| o.name() == "dhcp-option")
            .map(|o| o.to_text())
            .collect();
        let conn_env = self
            .scripts
            .connection_env(self.server, &c.session.peer_certificates_der());
        if let Err(fatal) = self
            .scripts
            .tunnel_up(&dev, &plan, &foreign, &conn_env, self.management)
            .await
        {
            return Ok(Some(fatal));
        }
        if let Some(p) = plan.ping {
            c.ping = Some(p);
        }
        if let Some(p) = plan.ping_restart {
            c.ping_restart = p;
        }
        c.cc_exit = plan.cc_exit;
        if let Some(token) = &plan.auth_token {
            if self.adopt_auth_token(c, token, plan.auth_token_user.as_deref()) {
                info!("auth-token received; used instead of the password from now on");
                if let Some(m) = self.management {
                    m.line(format!(">PASSWORD:Auth-Token:{token}"));
                }
            } else {
                debug!("auth-token pushed without auth-user-pass; ignored");
            }
        }
        self.peers.upsert_peer(plan.peer_id, self.server, None);
        self.peers.set_compression(plan.peer_id, framing);
        self.peers.set_client_default(Some(plan.peer_id));
        c.peer_id = Some(plan.peer_id);
        info!(
            "tunnel {dev}: {} ({:?}), peer-id {}",
            plan.local_address(),
            plan.topology,
            plan.peer_id
        );
        Ok(None)
    }

    /// Point-to-point mode, an end without `remote`: a TLS server waits
    /// for the peer's HARD_RESET_CLIENT_V2 and answers it; a TLS client
    /// waits for the server's HARD_RESET_SERVER_V2 (2.6's TLS server with
    /// `remote` sends its reset first) and starts its own session with it,
    /// the reset to be handled then. The reset must be authentic under the
    /// control wrapping; it may come from any address (the session then
    /// goes there, as 2.6 takes a new session's address from its first
    /// packet).
    async fn await_peer_reset(
        &mut self,
        cfg: Arc<ferrovpn_proto::session::SessionConfig>,
        mut shutdown: std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> Result<(Session, Option<Vec<u8>>), Ended> {
        let tls_server = cfg.side == Side::Server;
        let want = peers_hard_reset(cfg.side);
        info!("waiting for a peer's TLS handshake from any address");
        // 2.6's ping-restart / ping-exit count from the start: a peer that
        // never comes restarts (or ends) the wait, its device and scripts
        // with it. Zero disables them, as in 2.6.
        let after = |limit: Option<Duration>| async move {
            match limit.filter(|l| !l.is_zero()) {
                Some(l) => tokio::time::sleep(l).await,
                None => std::future::pending().await,
            }
        };
        let restart_timer = after(Some(self.settings.ping_restart));
        let exit_timer = after(self.settings.ping_exit);
        tokio::pin!(restart_timer, exit_timer);
        loop {
            tokio::select! {
                _ = &mut exit_timer => {
                    return Err(Ended::Exit(format!(
                        "inactivity timeout (ping-exit {}s)",
                        self.settings.ping_exit.unwrap_or_default().as_secs()
                    )));
                }
                _ = &mut restart_timer => {
                    return Err(Ended::Reconnect(format!(
                        "inactivity timeout (ping-restart {}s)",
                        self.settings.ping_restart.as_secs()
                    )));
                }
                ev = self.up.recv() => match ev {
                    Some(UpEvent::Control { from, packet })
                        if from == self.server || self.remote.floats() =>
                    {
                        let Ok((pkt, replay)) = cfg.wrap.unwrap(&packet) else {
                            debug!("dropping unauthenticated control packet from {from}");
                            continue;
                        };
                        if pkt.opcode != want {
                            debug!("waiting for a reset, ignoring {:?} from {from}", pkt.opcode);
                            continue;
                        }
                        let now = Instant::now();
                        let started = if tls_server {
                            Session::accept(cfg.clone(), now, unix_now(), pkt, replay)
                                .map(|session| (session, None))
                        } else {
                            Session::connect(cfg.clone(), now, unix_now())
                                .map(|session| (session, Some(packet)))
                        };
                        match started {
                            Ok(started) => {
                                if from != self.server {
                                    self.float_to(from);
                                }
                                info!("peer {from} started a TLS session");
                                return Ok(started);
                            }
                            Err(e) => debug!("reset from {from} not taken: {e}"),
                        }
                    }
                    Some(_) => {}
                    None => return Err(Ended::Fatal("data plane stopped".into())),
                },
                _ = self.restart.notified() => return Err(Ended::Restart),
                _ = shutdown.as_mut() => return Err(Ended::Shutdown),
            }
        }
    }

    /// `float`: whether a control packet from an address other than the
    /// server's starts this session there. As in 2.6, only the first
    /// packet of a session can ([`opens_session_elsewhere`]); later
    /// packets from elsewhere are dropped (2.6: "unexpected IP addr").
    fn may_float_to(&self, c: &Live, packet: &[u8]) -> bool {
        self.remote.floats()
            && !c.heard_from_server
            && opens_session_elsewhere(
                &self.settings.session.wrap,
                self.settings.session.side,
                packet,
            )
    }

    /// Talk to `to` from now on: control packets, the data channel (the
    /// peer enters the table with it), `ipchange` and the management
    /// interface's CONNECTED state all name it, as 2.6 sets the session's
    /// address to where its first packet came from.
    fn float_to(&mut self, to: SocketAddr) {
        if self.remote.waits() {
            info!("no 'remote': the peer is {to}; the session goes there");
        } else {
            info!(
                "float: the peer answers from {to} (we sent to {}); the session goes there",
                self.server
            );
        }
        if self.outer == self.server.ip() {
            self.outer = to.ip();
        }
        self.server = to;
    }

    /// Point-to-point mode: a hard reset under a new session id means the
    /// peer restarted; 2.6 then starts over with it, and so do we (the
    /// peer repeats its reset, or our new session sends ours).
    fn p2p_peer_restarted(&self, c: &Live, packet: &[u8]) -> Option<String> {
        let p2p = self.settings.p2p.as_ref()?;
        let reset = if p2p.tls_server {
            Opcode::HardResetClientV2
        } else {
            Opcode::HardResetServerV2
        };
        let (opcode, _, sid) = ferrovpn_proto::wire::parse_prefix(packet).ok()?;
        let known = c.session.remote_session_id()?;
        if opcode != reset || sid == known {
            return None;
        }
        // Only an authentic reset counts.
        self.settings.session.wrap.unwrap(packet).ok()?;
        Some("the peer started a new session".into())
    }

    /// Point-to-point mode, before any handshake (2.6 opens and configures
    /// the device and runs `up` at start, then adds the routes and runs
    /// `route-up`): the device from the config (`ifconfig`, `route`), `up`
    /// with `init`, `route-up`. Kept as it is across restarts under
    /// `persist-tun` (`up` again only with `up-restart`). A failing or
    /// disallowed `up` is fatal, as in 2.6; the ending, if any.
    async fn p2p_device_up(&mut self) -> Option<Ended> {
        let p2p = self.settings.p2p.as_ref()?;
        let dev = self.dp.tun_name().to_owned();
        let plan = (!p2p.ifconfig.is_empty()).then(|| {
            PushPlan::from_options(
                p2p.ifconfig
                    .iter()
                    .chain(self.settings.local_options.iter()),
                self.settings.tun_mtu,
            )
        });
        if let Some(plan) = &plan {
            if let Err(e) = self.tunnel.apply(&dev, self.outer, plan).await {
                warn!("cannot set up the point-to-point link: {e:#}");
                return Some(Ended::Reconnect(format!(
                    "point-to-point setup failed: {e:#}"
                )));
            }
            info!("tunnel {dev}: {:?} ({:?})", plan.ipv4, plan.topology);
        }
        let env = self.scripts.device_env();
        self.scripts
            .device_up(
                &dev,
                self.settings.tun_mtu,
                plan.as_ref(),
                &env,
                self.management,
            )
            .await
            .err()
            .map(Ended::Fatal)
    }

    /// Point-to-point mode, key 0 negotiated: enter the peer with the
    /// negotiated peer-id (P_DATA_V1 without one); the device was
    /// configured at start.
    async fn p2p_up(&mut self, c: &mut Live) -> anyhow::Result<()> {
        if self.settings.p2p.is_none() {
            anyhow::bail!("not in point-to-point mode");
        }
        let Some(link) = c.session.p2p_link() else {
            anyhow::bail!("keys before the P2P negotiation");
        };
        let framing = crate::compression::pushed(&self.settings.compression, &[])
            .context("compression settings")?;
        let peer_id = link.peer_id.unwrap_or(PEER_ID_UNDEFINED);
        self.peers.upsert_peer(peer_id, self.server, None);
        self.peers.set_compression(peer_id, framing);
        self.peers.set_client_default(Some(peer_id));
        c.peer_id = Some(peer_id);
        c.cc_exit = link.cc_exit;
        Ok(())
    }

    /// A pushed auth-token replaces the password from now on: kept with
    /// the credentials (with `auth-token-user`'s name, base64, if pushed)
    /// for reconnects, and sent by this session's renegotiations. False
    /// when there are no credentials to keep it with (no `auth-user-pass`).
    fn adopt_auth_token(&self, c: &mut Live, token: &str, user_base64: Option<&str>) -> bool {
        let user = self.credentials.with(|creds| {
            creds.as_mut().map(|creds| {
                creds.token_pushed(token.to_owned(), user_base64);
                creds.username().to_owned()
            })
        });
        match user {
            Some(user) => {
                c.session.set_credentials(&user, token);
                true
            }
            None => false,
        }
    }

    fn push_update(&mut self, c: &mut Live, reply: &PushReply) {
        for o in &reply.options {
            match o {
                PushOption::Other(name, args) if name == "auth-token" => {
                    let Some(token) = args.first() else { continue };
                    if self.adopt_auth_token(c, token, None) {
                        info!("auth-token renewed");
                    }
                }
                other => debug!("later push option not applied: {}", other.name()),
            }
        }
    }

    async fn say_goodbye(&self, c: &mut Live) {
        let (Some(peer_id), Some(n)) = (c.peer_id, self.remote.explicit_exit_notify) else {
            return;
        };
        if c.cc_exit {
            c.session.send_control_message(Instant::now(), "EXIT");
            while let Some(pkt) = c.session.poll_transmit() {
                let _ = self.dp.send_control(self.server, &pkt);
            }
        } else {
            let mut msg = OCC_MAGIC.to_vec();
            msg.push(OCC_EXIT);
            // 2.6 repeats the OCC exit about once a second for n seconds; we send
            // n copies spaced briefly so shutdown stays quick.
            for _ in 0..n.clamp(1, 5) {
                let _ = self.dp.send_data(peer_id, &msg);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Whether `packet`, from an address other than the one we sent our reset
/// to, may start the session there (`float`): the peer's hard reset (the
/// server's, or in point-to-point mode a TLS server's the client's),
/// authentic under the control channel's wrapping (tls-auth / tls-crypt;
/// without one, the TLS handshake that follows authenticates the peer), as
/// 2.6 takes a new session's address from its first authenticated packet.
fn opens_session_elsewhere(
    wrap: &ferrovpn_proto::wrap::ControlWrap,
    side: Side,
    packet: &[u8],
) -> bool {
    matches!(wrap.unwrap(packet), Ok((pkt, _)) if pkt.opcode == peers_hard_reset(side))
}

/// The hard reset that starts a session from the peer of an end on `side`.
fn peers_hard_reset(side: Side) -> Opcode {
    match side {
        Side::Client => Opcode::HardResetServerV2,
        Side::Server => Opcode::HardResetClientV2,
    }
}

/// The next `cr-response` message to send, or never without a management
/// interface.
async fn control_message(m: Option<&super::management::ClientManagement>) -> String {
    match m {
        Some(m) => m.next_control_message().await,
        None => std::future::pending().await,
    }
}

/// The client's status file: 2.6's statistics of the current connection.
fn write_status(file: &KeptFile, counts: &super::counts::ClientCounts) {
    let text = super::counts::render(unix_now(), &counts.statistics());
    if let Err(e) = file.rewrite(&text) {
        warn!("status file {}: {e}", file.path().display());
    }
}

#[cfg(test)]
mod tests {
    use ferrovpn_proto::wire::{ControlPacket, SessionId};
    use ferrovpn_proto::wrap::{AuthDigest, ControlWrap, KeyDirection, ReplayId, StaticKey};

    use super::*;

    fn packet(opcode: Opcode) -> ControlPacket {
        ControlPacket {
            opcode,
            key_id: 0,
            session_id: SessionId([5; 8]),
            acks: vec![0],
            remote_session_id: Some(SessionId([6; 8])),
            message_id: Some(0),
            payload: Vec::new(),
        }
    }

    fn wire(wrap: &ControlWrap, pkt: &ControlPacket) -> Vec<u8> {
        let mut out = Vec::new();
        wrap.wrap(pkt, ReplayId { id: 1, time: 1 }, &mut out);
        out
    }

    /// Only an authentic reset of the peer moves a `float` end's new
    /// session: forged, foreign-keyed or other packets never do.
    #[test]
    fn only_an_authentic_server_reset_opens_a_session_elsewhere() {
        let key = StaticKey::generate();
        let pairs = [
            (
                ControlWrap::tls_crypt(&key, Side::Server),
                ControlWrap::tls_crypt(&key, Side::Client),
                ControlWrap::tls_crypt(&StaticKey::generate(), Side::Server),
            ),
            (
                ControlWrap::tls_auth(&key, KeyDirection::Normal, AuthDigest::Sha256),
                ControlWrap::tls_auth(&key, KeyDirection::Inverse, AuthDigest::Sha256),
                ControlWrap::tls_auth(
                    &StaticKey::generate(),
                    KeyDirection::Normal,
                    AuthDigest::Sha256,
                ),
            ),
        ];
        for (server, client, stranger) in pairs {
            let reset = wire(&server, &packet(Opcode::HardResetServerV2));
            assert!(opens_session_elsewhere(&client, Side::Client, &reset));
            let mut forged = reset.clone();
            let last = forged.len() - 1;
            forged[last] ^= 1;
            assert!(!opens_session_elsewhere(&client, Side::Client, &forged));
            let foreign = wire(&stranger, &packet(Opcode::HardResetServerV2));
            assert!(!opens_session_elsewhere(&client, Side::Client, &foreign));
            for other in [Opcode::ControlV1, Opcode::AckV1, Opcode::SoftResetV1] {
                let authentic = wire(&server, &packet(other));
                assert!(
                    !opens_session_elsewhere(&client, Side::Client, &authentic),
                    "{other:?}"
                );
            }
            assert!(!opens_session_elsewhere(&client, Side::Client, &[]));
            assert!(!opens_session_elsewhere(
                &client,
                Side::Client,
                &reset[..reset.len() / 2]
            ));
            // A point-to-point TLS server with `float` takes the client's
            // reset, authentic, and nothing else.
            let client_reset = wire(&client, &packet(Opcode::HardResetClientV2));
            assert!(opens_session_elsewhere(
                &server,
                Side::Server,
                &client_reset
            ));
            let mut forged = client_reset.clone();
            let end = forged.len() - 1;
            forged[end] ^= 1;
            assert!(!opens_session_elsewhere(&server, Side::Server, &forged));
            let authentic = wire(&client, &packet(Opcode::ControlV1));
            assert!(!opens_session_elsewhere(&server, Side::Server, &authentic));
        }
    }
}
