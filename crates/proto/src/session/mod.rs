//! The control-channel session state machine, server and client (docs/protocol.md
//! §2.5–§2.7, §5, §6, §11, §12).
//!
//! A [`Session`] is one OpenVPN "tls_session": one pair of session ids, one
//! replay counter per direction, and up to three key states (the current key,
//! the lame duck being retired after a renegotiation, and a key being
//! negotiated). Each key state runs its own reliability layer and a fresh TLS
//! handshake through rustls' byte-buffer API.
//!
//! Sans-IO like quinn-proto: feed packets with [`Session::handle_packet`], drive
//! timers with [`Session::handle_timeout`], and drain [`Session::poll_transmit`]
//! (wire datagrams) and [`Session::poll_event`] (keys, push, exit) after each
//! call. Time is always passed in.

pub mod cookie;
pub mod ncp;
pub mod tls;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use crate::data::{Cipher, KeyBlock, Side};
use crate::kdf;
use crate::key_method::{Credentials, KeyMethod2, KeyMethodError, PeerInfo};
use crate::push::{self, ControlMessage, PushReply};
use crate::reliable::{Received, Reliable};
use crate::replay::ControlReplayWindow;
use crate::wire::{
    ControlPacket, EARLY_NEG_START, EarlyNegotiation, MAX_ACKS, MAX_ACKS_ON_RELIABLE, Opcode,
    SessionId, WireError,
};
use crate::wrap::{ControlWrap, ReplayId};

/// Largest IP datagram a control packet may produce (2.6's `tls_mtu` default).
pub const DEFAULT_MAX_PACKET_SIZE: usize = 1250;
/// IPv4 + UDP header bytes counted against [`DEFAULT_MAX_PACKET_SIZE`].
const IPV4_UDP_HEADERS: usize = 28;
/// How often a client repeats PUSH_REQUEST while no reply arrived.
const PUSH_REQUEST_INTERVAL: Duration = Duration::from_secs(5);
/// Bound on plaintext buffered from TLS before a complete message is seen.
pub const MAX_PLAINTEXT_BUFFER: usize = 16 * 1024;
/// Bound on TLS output waiting for room in the send window: a peer that
/// stops acknowledging cannot make us buffer more (the key state fails).
pub const MAX_TLS_BACKLOG: usize = 64 * 1024;
/// A repeated PUSH_REQUEST is answered at most this often, as 2.6 does
/// (`sent_push_reply_expiry` in push.c).
const PUSH_REPLY_REPEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Peer-initiated renegotiations are paced to one per this interval on
/// average, after a burst of [`PEER_RENEG_BURST`]: a soft reset beyond that
/// is dropped unacknowledged, so a peer cannot chain handshakes back to
/// back (each costs a signature and a chain verification). It only defers
/// the renegotiation: the peer retransmits its reset (after tls-timeout)
/// and that one is taken. The delay (seconds) is far below the margin
/// packet-id exhaustion leaves, and a peer with `reneg-sec 1` stays within
/// the pace.
pub const MIN_PEER_RENEG_INTERVAL: Duration = Duration::from_secs(1);
/// Peer soft resets taken back to back before pacing starts.
pub const PEER_RENEG_BURST: u32 = 3;
/// Parts of a split PUSH_REPLY a client accepts (2.6 splits at ~1 KB).
pub const MAX_PUSH_PARTS: usize = 64;
/// Largest control payload taken from the peer: 2.6 never sends more than
/// `TLS_CHANNEL_BUF_SIZE` (2048) bytes per control packet, and larger ones
/// would let out-of-order buffering grow to the window times 64 KiB.
const MAX_CONTROL_PAYLOAD: usize = 2048;

/// Configuration shared by every session of a server, or the one of a client.
#[derive(Clone)]
pub struct SessionConfig {
    pub side: Side,
    pub wrap: Arc<ControlWrap>,
    pub tls_server: Option<Arc<rustls::ServerConfig>>,
    pub tls_client: Option<Arc<rustls::ClientConfig>>,
    /// `data-ciphers`, in preference order.
    pub data_ciphers: Vec<Cipher>,
    /// `data-ciphers-fallback`: used with peers that negotiate nothing.
    pub data_ciphers_fallback: Option<Cipher>,
    /// `auth`: the HMAC digest of the CBC data ciphers (not negotiated, as in 2.6).
    pub data_auth: crate::wrap::AuthDigest,
    /// `tls-timeout`: first retransmission timeout.
    pub tls_timeout: Duration,
    /// `hand-window`: a key negotiation must finish within this.
    pub hand_window: Duration,
    /// `reneg-sec`; `None` disables time-based renegotiation.
    pub reneg_interval: Option<Duration>,
    /// `tran-window`: how long a lame-duck key stays usable.
    pub tran_window: Duration,
    /// `max-packet-size` budget for control packets (IP datagram size).
    pub max_packet_size: usize,
    /// OCC options string sent in key-method-2.
    pub options_string: String,
    /// Client only: peer-info lines sent in key-method-2.
    pub peer_info: String,
    /// Client only: `pull-filter` lines, in config order.
    pub pull_filters: Vec<push::PullFilter>,
}

impl SessionConfig {
    /// TLS payload bytes that fit in one CONTROL_V1 packet.
    fn max_control_payload(&self) -> usize {
        let fixed = 1 + 8 + 1 + 4 * MAX_ACKS_ON_RELIABLE + 8 + 4;
        self.max_packet_size
            .saturating_sub(IPV4_UDP_HEADERS + fixed + self.wrap.overhead())
            .max(64)
    }
}

/// What the session tells its driver.
#[derive(Debug)]
pub enum Event {
    /// Server: a client finished its first key exchange. The driver assigns an
    /// address and peer-id, then calls [`Session::set_push_reply`].
    ClientAuthenticated {
        common_name: Option<String>,
        peer_info: PeerInfo,
        cipher: Cipher,
        /// What the client sent to log in with (empty without `auth-user-pass`).
        credentials: Credentials,
    },
    /// Server: a renegotiation (`key_id` > 0) brought the client's user
    /// name and password (or auth-token) again; the driver checks them as
    /// 2.6 does at every key exchange.
    Reauthenticate {
        key_id: u8,
        credentials: Credentials,
    },
    /// Server: the client asked for its push reply and none is set yet.
    PushRequested,
    /// Client: the server's push reply (already applied to cipher and key derivation).
    PushReply(PushReply),
    /// Data-channel keys for `key_id` are ready: install them for receiving.
    KeysReady {
        key_id: u8,
        cipher: Cipher,
        /// HMAC digest for a CBC `cipher` ([`SessionConfig::data_auth`]).
        auth: crate::wrap::AuthDigest,
        block: Box<KeyBlock>,
    },
    /// Start sending with `key_id` (the peer has everything it needs for it).
    SendKey { key_id: u8 },
    /// `key_id` is no longer valid: remove it from the data plane.
    KeyRetired { key_id: u8 },
    /// The peer sent EXIT (cc-exit) and is going away.
    PeerExit,
    /// Server told the client to reconnect (`RESTART`), or to stop (`HALT`).
    Restart { halt: bool, message: String },
    /// Authentication failed (server: we sent AUTH_FAILED; client: we got it).
    AuthFailed(String),
    /// The session is over; the driver drops it.
    Closed(SessionError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the peer's hard/soft reset (or, client key 0, for our reset's ACK).
    Reset,
    /// TLS handshake in progress.
    Handshake,
    /// TLS up; key-method-2 messages being exchanged.
    KeyExchange,
    /// Keys exchanged; waiting for our last packets to be acknowledged.
    Established,
    /// Everything acknowledged: the key is the send key.
    Active,
}

struct KeyState {
    key_id: u8,
    phase: Phase,
    reliable: Reliable,
    tls: rustls::Connection,
    /// TLS bytes produced but not yet cut into CONTROL_V1 packets (send window full).
    tls_out: Vec<u8>,
    plaintext: Vec<u8>,
    local_km: Option<KeyMethod2>,
    remote_km: Option<KeyMethod2>,
    keys_installed: bool,
    deadline: Instant,
    /// Set when this key became the lame duck.
    retire_at: Option<Instant>,
}

/// One control-channel session.
pub struct Session {
    cfg: Arc<SessionConfig>,
    /// The control-channel wrapping: `cfg.wrap`, except for a tls-crypt-v2
    /// client's session on a server, which uses the client's own key.
    wrap: Arc<ControlWrap>,
    /// Client, tls-crypt-v2: the server asked (early negotiation) for our
    /// wrapped key again, in the msg_id 1 packet of key_id 0.
    resend_wkc: bool,
    local_sid: SessionId,
    remote_sid: Option<SessionId>,
    replay_out: ReplayId,
    replay_in: ControlReplayWindow,
    epoch: Instant,
    keys: Vec<KeyState>,
    /// key_id of the newest key that reached `Active`.
    current_key: Option<u8>,
    outgoing: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    cipher: Option<Cipher>,
    use_ekm: bool,
    peer_info: Option<PeerInfo>,
    /// Server: the push reply, split into messages as 2.6 sends it.
    push_reply: Option<Vec<String>>,
    /// Server: when the push reply last went out (repeats are rate-limited).
    push_reply_sent_at: Option<Instant>,
    push_requested: bool,
    push_received: bool,
    /// Client: parts of a split push reply received so far, and their size.
    pending_push: Option<PushReply>,
    pending_push_parts: usize,
    pending_push_bytes: usize,
    /// SHA-256 of the peer's leaf certificate (`None`: it showed none),
    /// fixed by the first key state; later key states must show the same.
    peer_leaf_sha256: Option<Option<[u8; 32]>>,
    /// Pacing of peer soft resets (GCRA): the earliest time the next one
    /// is due at the average rate; up to a burst ahead of it is taken.
    peer_reneg_due: Option<Instant>,
    next_push_request: Option<Instant>,
    next_reneg: Option<Instant>,
    closed: bool,
    /// Client: user name and password (or auth-token) sent in each
    /// key-method-2 message; see [`Session::set_credentials`].
    credentials: Option<(String, String)>,
}

impl Session {
    fn new(cfg: Arc<SessionConfig>, now: Instant, unix_now: u64) -> Self {
        Session {
            wrap: cfg.wrap.clone(),
            resend_wkc: false,
            local_sid: SessionId::random(),
            remote_sid: None,
            // 2.6 increments before use, so the first id on the wire is 1.
            replay_out: ReplayId {
                id: 0,
                time: unix_now as u32,
            },
            replay_in: ControlReplayWindow::new(64, 15),
            epoch: now,
            keys: Vec::new(),
            current_key: None,
            outgoing: VecDeque::new(),
            events: VecDeque::new(),
            cipher: None,
            use_ekm: false,
            peer_info: None,
            push_reply: None,
            push_reply_sent_at: None,
            push_requested: false,
            push_received: false,
            pending_push: None,
            pending_push_parts: 0,
            pending_push_bytes: 0,
            peer_leaf_sha256: None,
            peer_reneg_due: None,
            next_push_request: None,
            next_reneg: None,
            closed: false,
            credentials: None,
            cfg,
        }
    }

    /// Client: the user name and password to send from the next key
    /// exchange on (renegotiations included). The driver replaces the
    /// password with a pushed auth-token, as 2.6 does.
    pub fn set_credentials(&mut self, username: &str, password: &str) {
        self.credentials = Some((username.to_owned(), password.to_owned()));
    }

    /// Client: start a connection by queueing HARD_RESET_CLIENT_V2, or
    /// with tls-crypt-v2 HARD_RESET_CLIENT_V3 whose replay ids announce
    /// early negotiation (so a 2.6 server can stay stateless, doc §2.8).
    pub fn connect(
        cfg: Arc<SessionConfig>,
        now: Instant,
        unix_now: u64,
    ) -> Result<Self, SessionError> {
        let mut s = Session::new(cfg, now, unix_now);
        let ks = s.new_key_state(0, now)?;
        s.keys.push(ks);
        let reset = if s.wrap.client_wkc().is_some() {
            s.replay_out.id = EARLY_NEG_START;
            Opcode::HardResetClientV3
        } else {
            Opcode::HardResetClientV2
        };
        s.keys[0].reliable.send(now, reset, Vec::new());
        s.flush(now);
        Ok(s)
    }

    /// Server: accept a client whose first packet (already authenticated by
    /// the control wrapping, when there is one) is a HARD_RESET_CLIENT_V2.
    pub fn accept(
        cfg: Arc<SessionConfig>,
        now: Instant,
        unix_now: u64,
        first: ControlPacket,
        replay: Option<ReplayId>,
    ) -> Result<Self, SessionError> {
        if first.opcode != Opcode::HardResetClientV2
            || first.key_id != 0
            || first.message_id != Some(0)
        {
            return Err(SessionError::NotAReset);
        }
        let mut s = Session::new(cfg, now, unix_now);
        s.remote_sid = Some(first.session_id);
        let ks = s.new_key_state(0, now)?;
        s.keys.push(ks);
        s.keys[0]
            .reliable
            .send(now, Opcode::HardResetServerV2, Vec::new());
        s.handle_control(now, first, replay);
        s.flush(now);
        Ok(s)
    }

    /// Server, stateless handshake (see [`cookie`]): `pkt`, the client's
    /// first CONTROL_V1, ACK_V1 or (tls-crypt-v2) CONTROL_WKC_V1 after our
    /// stateless reset answer, echoes our session id `local_sid`, which the
    /// caller has checked is the cookie for the sender. Like 2.6, only ACKs
    /// of ids <= 1 and message ids <= 1 are taken. The session starts with
    /// both resets done and wraps with `wrap` (`cfg.wrap`, or the client's
    /// tls-crypt-v2 key).
    pub fn accept_cookie(
        cfg: Arc<SessionConfig>,
        wrap: Arc<ControlWrap>,
        now: Instant,
        unix_now: u64,
        local_sid: SessionId,
        pkt: ControlPacket,
        replay: Option<ReplayId>,
    ) -> Result<Self, SessionError> {
        let fits = pkt.key_id == 0
            && matches!(
                pkt.opcode,
                Opcode::ControlV1 | Opcode::AckV1 | Opcode::ControlWkcV1
            )
            && pkt.remote_session_id == Some(local_sid)
            && pkt.acks.iter().all(|&a| a <= 1)
            && pkt.message_id.is_none_or(|m| m <= 1);
        if !fits {
            return Err(SessionError::NotACookieAnswer);
        }
        let mut s = Session::new(cfg, now, unix_now);
        s.wrap = wrap;
        s.local_sid = local_sid;
        s.remote_sid = Some(pkt.session_id);
        // Our stateless reset went out with replay id 1.
        s.replay_out.id = 1;
        let mut ks = s.new_key_state(0, now)?;
        ks.reliable.resume_after_resets();
        ks.phase = Phase::Handshake;
        s.keys.push(ks);
        s.handle_control(now, pkt, replay);
        s.flush(now);
        Ok(s)
    }

    /// Use `cfg` from now on: key states started later (renegotiations)
    /// take their TLS configuration from it, e.g. after a CRL reload.
    pub fn set_config(&mut self, cfg: Arc<SessionConfig>) {
        self.cfg = cfg;
    }

    /// The common name in the peer's certificate, once its TLS handshake
    /// has shown one (any key state; the certificate cannot change).
    pub fn peer_common_name(&self) -> Option<String> {
        self.keys.iter().find_map(|k| {
            k.tls
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| tls::peer_common_name(c))
        })
    }

    /// DER of the peer's leaf certificate, once a TLS handshake showed one
    /// (the same in every key state: see [`SessionError::PeerIdentityChanged`]).
    /// The server tests it against a newly loaded CRL to close revoked
    /// sessions at once instead of at their next renegotiation.
    pub fn peer_certificate_der(&self) -> Option<&[u8]> {
        self.keys.iter().find_map(|k| {
            k.tls
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref())
        })
    }

    /// Bytes this session holds for the peer or from it: TLS output not yet
    /// cut into packets, unacknowledged and out-of-order control messages,
    /// incomplete plaintext, unsent datagrams and a partial push reply.
    /// Every part is bounded (see [`MAX_TLS_BACKLOG`], the reliability
    /// windows, [`MAX_PLAINTEXT_BUFFER`], [`MAX_PUSH_PARTS`]); rustls'
    /// own buffers, drained on every call, are capped by rustls.
    pub fn buffered_bytes(&self) -> usize {
        let keys: usize = self
            .keys
            .iter()
            .map(|k| k.tls_out.len() + k.plaintext.len() + k.reliable.buffered_bytes())
            .sum();
        let outgoing: usize = self.outgoing.iter().map(Vec::len).sum();
        keys + outgoing + self.pending_push_bytes
    }

    pub fn local_session_id(&self) -> SessionId {
        self.local_sid
    }

    pub fn remote_session_id(&self) -> Option<SessionId> {
        self.remote_sid
    }

    /// The negotiated data-channel cipher, once known.
    pub fn cipher(&self) -> Option<Cipher> {
        self.cipher
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Whether the first key exchange finished (data can flow).
    pub fn is_established(&self) -> bool {
        self.current_key.is_some()
    }

    fn new_key_state(&self, key_id: u8, now: Instant) -> Result<KeyState, SessionError> {
        let tls = match self.cfg.side {
            Side::Server => {
                let c = self
                    .cfg
                    .tls_server
                    .clone()
                    .ok_or(SessionError::NoTlsConfig)?;
                rustls::Connection::Server(rustls::ServerConnection::new(c)?)
            }
            Side::Client => {
                let c = self
                    .cfg
                    .tls_client
                    .clone()
                    .ok_or(SessionError::NoTlsConfig)?;
                rustls::Connection::Client(rustls::ClientConnection::new(
                    c,
                    tls::placeholder_server_name(),
                )?)
            }
        };
        Ok(KeyState {
            key_id,
            phase: Phase::Reset,
            reliable: Reliable::new(self.cfg.tls_timeout),
            tls,
            tls_out: Vec::new(),
            plaintext: Vec::new(),
            local_km: None,
            remote_km: None,
            keys_installed: false,
            deadline: now + self.cfg.hand_window,
            retire_at: None,
        })
    }

    /// Feed one datagram received from the peer's address. Returns whether
    /// the session accepted it (it passed the tls-auth/tls-crypt check, the
    /// replay window and the session-id checks): only such a packet shows
    /// the peer is alive.
    pub fn handle_packet(&mut self, now: Instant, wire: &[u8]) -> bool {
        if self.closed {
            return false;
        }
        let accepted = match self.wrap.unwrap(wire) {
            Ok((pkt, replay)) => self.handle_control(now, pkt, replay),
            Err(e) => {
                debug!("dropping control packet: {e}");
                false
            }
        };
        self.flush(now);
        accepted
    }

    /// Feed an already unwrapped (and authenticated) control packet. Returns
    /// whether a key state took it (see [`Session::handle_packet`]).
    pub fn handle_control(
        &mut self,
        now: Instant,
        pkt: ControlPacket,
        replay: Option<ReplayId>,
    ) -> bool {
        if self.closed {
            return false;
        }
        if pkt.payload.len() > MAX_CONTROL_PAYLOAD {
            debug!(
                "dropping control packet with a {}-byte payload",
                pkt.payload.len()
            );
            return false;
        }
        if let Some(r) = replay {
            let secs = now.saturating_duration_since(self.epoch).as_secs();
            if let Err(e) = self.replay_in.check_and_commit(r, secs) {
                debug!("dropping control packet: {e}");
                return false;
            }
        }
        match (self.remote_sid, pkt.opcode) {
            (None, Opcode::HardResetServerV2) if self.cfg.side == Side::Client => {
                if pkt.key_id != 0 || pkt.message_id != Some(0) {
                    return false;
                }
                self.remote_sid = Some(pkt.session_id);
            }
            (Some(sid), _) if sid == pkt.session_id => {}
            _ => {
                debug!(
                    "dropping control packet from unknown session {:?}",
                    pkt.session_id
                );
                return false;
            }
        }
        if !pkt.acks.is_empty() && pkt.remote_session_id != Some(self.local_sid) {
            debug!("dropping control packet acknowledging another session");
            return false;
        }
        // A client's V3 reset only ever starts a session (the server's
        // admission takes it); a WKC_V1 goes from client to server.
        let wrong_role = match self.cfg.side {
            Side::Server => pkt.opcode == Opcode::HardResetServerV2,
            Side::Client => matches!(pkt.opcode, Opcode::HardResetClientV2 | Opcode::ControlWkcV1),
        };
        if wrong_role || pkt.opcode == Opcode::HardResetClientV3 {
            debug!("dropping unexpected {:?}", pkt.opcode);
            return false;
        }
        if pkt.opcode == Opcode::SoftResetV1
            && self.key_index(pkt.key_id).is_none()
            && let Err(e) = self.accept_soft_reset(now, pkt.key_id)
        {
            debug!("refusing soft reset: {e}");
            return false;
        }
        let Some(idx) = self.key_index(pkt.key_id) else {
            debug!("dropping control packet for unknown key_id {}", pkt.key_id);
            return false;
        };
        let ks = &mut self.keys[idx];
        for &a in &pkt.acks {
            ks.reliable.ack_received(a);
        }
        if let Some(id) = pkt.message_id {
            let is_reset = matches!(
                pkt.opcode,
                Opcode::HardResetClientV2 | Opcode::HardResetServerV2 | Opcode::SoftResetV1
            );
            if is_reset && id != 0 {
                return false;
            }
            if ks.reliable.receive(id, pkt.opcode, pkt.payload) == Received::OutOfWindow {
                debug!("control message {id} beyond the receive window");
            }
        }
        self.process_key_state(now, idx);
        true
    }

    fn key_index(&self, key_id: u8) -> Option<usize> {
        self.keys.iter().position(|k| k.key_id == key_id)
    }

    /// The key_id a renegotiation would use now: the one after the current
    /// key (7 wraps to 1; 0 is only for the first key), provided the session
    /// is established and no renegotiation is running.
    fn next_key_id(&self) -> Result<u8, SessionError> {
        let current = self.current_key.ok_or(SessionError::NotEstablished)?;
        if self
            .keys
            .iter()
            .any(|k| k.phase != Phase::Active && k.retire_at.is_none())
        {
            return Err(SessionError::RenegotiationInProgress);
        }
        Ok(if current == 7 { 1 } else { current + 1 })
    }

    fn accept_soft_reset(&mut self, now: Instant, key_id: u8) -> Result<(), SessionError> {
        let expected = self.next_key_id()?;
        let due = self.peer_reneg_due.map_or(now, |t| t.max(now));
        if due > now + MIN_PEER_RENEG_INTERVAL * (PEER_RENEG_BURST - 1) {
            return Err(SessionError::SoftResetTooSoon);
        }
        self.peer_reneg_due = Some(due + MIN_PEER_RENEG_INTERVAL);
        if key_id != expected {
            return Err(SessionError::KeyIdOutOfSync {
                got: key_id,
                expected,
            });
        }
        info!("peer started renegotiation, key_id {key_id}");
        self.begin_key_state(now, key_id)
    }

    /// Start a renegotiation ourselves (reneg-sec, packet-id exhaustion, or on request).
    pub fn start_renegotiation(&mut self, now: Instant) -> Result<(), SessionError> {
        let key_id = self.next_key_id()?;
        info!("starting renegotiation, key_id {key_id}");
        self.begin_key_state(now, key_id)?;
        self.flush(now);
        Ok(())
    }

    fn begin_key_state(&mut self, now: Instant, key_id: u8) -> Result<(), SessionError> {
        // Only one lame duck is kept: a key older than the current one goes now.
        let current = self.current_key;
        let mut retired = Vec::new();
        self.keys.retain(|k| {
            let keep = Some(k.key_id) == current;
            if !keep {
                retired.push(k.key_id);
            }
            keep
        });
        for key_id in retired {
            self.events.push_back(Event::KeyRetired { key_id });
        }
        let mut ks = self.new_key_state(key_id, now)?;
        ks.reliable.send(now, Opcode::SoftResetV1, Vec::new());
        // Our own soft reset is in flight; TLS starts at once (the peer buffers it in order).
        ks.phase = Phase::Handshake;
        self.keys.push(ks);
        self.next_reneg = None;
        Ok(())
    }

    /// Run everything a key state can do after new input.
    fn process_key_state(&mut self, now: Instant, idx: usize) {
        if let Err(e) = self.try_process_key_state(now, idx) {
            self.fail_key_state(now, idx, e);
        }
    }

    fn try_process_key_state(&mut self, now: Instant, idx: usize) -> Result<(), SessionError> {
        let side = self.cfg.side;
        let mut resend_wkc = false;
        // Deliver in-order messages.
        loop {
            let ks = &mut self.keys[idx];
            let Some((opcode, payload)) = ks.reliable.pop_received() else {
                break;
            };
            match opcode {
                Opcode::HardResetClientV2 | Opcode::HardResetServerV2 | Opcode::SoftResetV1 => {
                    if opcode != Opcode::SoftResetV1 {
                        // 2.6 reads a hard reset's payload as TLVs and gives
                        // up the handshake on a malformed one.
                        let neg = EarlyNegotiation::parse(&payload)
                            .map_err(SessionError::BadEarlyNegotiation)?;
                        resend_wkc |= neg.resend_wkc && side == Side::Client;
                    }
                    if ks.phase == Phase::Reset {
                        ks.phase = Phase::Handshake;
                    }
                    if side == Side::Client && opcode == Opcode::HardResetServerV2 {
                        // The server's reset answers ours even if its ACK was lost.
                        ks.reliable.ack_received(0);
                    }
                }
                Opcode::ControlV1 | Opcode::ControlWkcV1 => {
                    let mut rd: &[u8] = &payload;
                    while !rd.is_empty() {
                        match ks.tls.read_tls(&mut rd) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) => return Err(SessionError::TlsIo(e)),
                        }
                        ks.tls.process_new_packets()?;
                    }
                }
                _ => {}
            }
        }
        if resend_wkc && self.wrap.client_wkc().is_some() && self.keys[idx].key_id == 0 {
            self.resend_wkc = true;
        }
        let ks = &mut self.keys[idx];
        if ks.phase == Phase::Reset {
            return Ok(());
        }
        ks.tls.process_new_packets()?;
        if ks.phase == Phase::Handshake && !ks.tls.is_handshaking() {
            self.lock_peer_identity(idx)?;
            let ks = &mut self.keys[idx];
            ks.phase = Phase::KeyExchange;
            if side == Side::Client {
                let mut km = KeyMethod2::new_random(
                    true,
                    self.cfg.options_string.clone(),
                    self.cfg.peer_info.clone(),
                );
                if let Some((user, pass)) = &self.credentials {
                    km.username.clone_from(user);
                    km.password.clone_from(pass);
                }
                let mut buf = Vec::new();
                km.encode(&mut buf);
                ks.tls
                    .writer()
                    .write_all(&buf)
                    .map_err(SessionError::TlsIo)?;
                ks.local_km = Some(km);
            }
        }
        let ks = &mut self.keys[idx];
        if matches!(
            ks.phase,
            Phase::KeyExchange | Phase::Established | Phase::Active
        ) {
            let mut buf = [0u8; 4096];
            loop {
                match ks.tls.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        ks.plaintext.extend_from_slice(&buf[..n]);
                        if ks.plaintext.len() > MAX_PLAINTEXT_BUFFER {
                            return Err(SessionError::OversizedControlMessage);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(SessionError::TlsIo(e)),
                }
            }
            self.process_plaintext(now, idx)?;
        }
        self.update_phase(now, idx);
        Ok(())
    }

    /// The first finished handshake fixes the peer's certificate; a later
    /// key state (renegotiation) showing another one fails, so a client
    /// cannot log in as one identity and continue as another.
    fn lock_peer_identity(&mut self, idx: usize) -> Result<(), SessionError> {
        let leaf = self.keys[idx]
            .tls
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| {
                let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, c.as_ref());
                let mut h = [0u8; 32];
                h.copy_from_slice(d.as_ref());
                h
            });
        match self.peer_leaf_sha256 {
            None => {
                self.peer_leaf_sha256 = Some(leaf);
                Ok(())
            }
            Some(locked) if locked == leaf => Ok(()),
            Some(_) => Err(SessionError::PeerIdentityChanged),
        }
    }

    fn process_plaintext(&mut self, now: Instant, idx: usize) -> Result<(), SessionError> {
        let side = self.cfg.side;
        // The key-method-2 message comes first; once the exchange is done
        // (and its secrets dropped) everything is text.
        if self.keys[idx].phase == Phase::KeyExchange && self.keys[idx].remote_km.is_none() {
            let ks = &mut self.keys[idx];
            let (km, used) = match KeyMethod2::decode(&ks.plaintext, side == Side::Server) {
                Ok(v) => v,
                Err(KeyMethodError::Incomplete) => return Ok(()),
                Err(e) => return Err(SessionError::BadKeyMethod(e)),
            };
            ks.plaintext.drain(..used);
            ks.remote_km = Some(km);
            self.on_remote_key_method(now, idx)?;
        }
        // Text messages: NUL-terminated; keep an unterminated tail for later.
        loop {
            let ks = &mut self.keys[idx];
            let Some(end) = ks.plaintext.iter().position(|&b| b == 0) else {
                break;
            };
            let msg: Vec<u8> = ks.plaintext.drain(..=end).collect();
            let text = String::from_utf8_lossy(&msg[..end]);
            let text = text.trim_end_matches(['\r', '\n']);
            if text.is_empty() {
                continue;
            }
            if text.chars().any(|c| c.is_control()) {
                warn!("ignoring control message with non-printable characters");
                continue;
            }
            let text = text.to_owned();
            self.handle_text(now, &text);
        }
        Ok(())
    }

    fn on_remote_key_method(&mut self, now: Instant, idx: usize) -> Result<(), SessionError> {
        let key_id = self.keys[idx].key_id;
        match self.cfg.side {
            Side::Server => {
                let remote = self.keys[idx]
                    .remote_km
                    .as_ref()
                    .ok_or(SessionError::NotEstablished)?;
                if key_id == 0 || self.peer_info.is_none() {
                    // A client announcing compression (`,comp-lzo` in its
                    // options string) is accepted as by 2.6: the framing
                    // follows the server's own `comp-lzo`/`compress`.
                    let peer_info = PeerInfo::parse(&remote.peer_info);
                    let occ_cipher = crate::key_method::options_string_cipher(&remote.options);
                    let Some(cipher) = ncp::select_for_client(
                        &self.cfg.data_ciphers,
                        self.cfg.data_ciphers_fallback,
                        &peer_info,
                        occ_cipher,
                    ) else {
                        return self.auth_failed(
                            now,
                            idx,
                            "Data channel cipher negotiation failed (no shared cipher)",
                        );
                    };
                    self.cipher = Some(cipher);
                    self.use_ekm = peer_info.tls_ekm();
                    self.peer_info = Some(peer_info);
                }
                let credentials = Credentials {
                    username: remote.username.clone(),
                    password: remote.password.clone(),
                };
                let km =
                    KeyMethod2::new_random(false, self.cfg.options_string.clone(), String::new());
                let mut buf = Vec::new();
                km.encode(&mut buf);
                let ks = &mut self.keys[idx];
                ks.tls
                    .writer()
                    .write_all(&buf)
                    .map_err(SessionError::TlsIo)?;
                ks.local_km = Some(km);
                self.install_keys(idx)?;
                if key_id == 0 {
                    let common_name = self.peer_common_name();
                    let (Some(peer_info), Some(cipher)) = (self.peer_info.clone(), self.cipher)
                    else {
                        return Err(SessionError::NotEstablished);
                    };
                    self.events.push_back(Event::ClientAuthenticated {
                        common_name,
                        peer_info,
                        cipher,
                        credentials,
                    });
                } else {
                    self.events.push_back(Event::Reauthenticate {
                        key_id,
                        credentials,
                    });
                }
            }
            Side::Client => {
                // Key 0 waits for the push reply, which names cipher and derivation.
                if key_id != 0 {
                    self.install_keys(idx)?;
                }
            }
        }
        Ok(())
    }

    fn auth_failed(&mut self, now: Instant, idx: usize, reason: &str) -> Result<(), SessionError> {
        warn!("refusing client: {reason}");
        if self.cfg.side == Side::Server && self.keys[idx].local_km.is_none() {
            // The client reads our key-method-2 message before any control
            // message (OpenVPN sends AUTH_FAILED after the key exchange);
            // text in its place reads as a bad key method. No keys follow:
            // `local_km` stays unset so the state never becomes established.
            let km = KeyMethod2::new_random(false, self.cfg.options_string.clone(), String::new());
            let mut buf = Vec::new();
            km.encode(&mut buf);
            let _ = self.keys[idx].tls.writer().write_all(&buf);
        }
        let msg = format!("AUTH_FAILED,{reason}");
        let _ = self.write_text(idx, &msg);
        self.events.push_back(Event::AuthFailed(reason.to_owned()));
        // Let the message go out; hand-window then closes the session.
        self.keys[idx].deadline = self.keys[idx].deadline.min(now + Duration::from_secs(5));
        Ok(())
    }

    /// Derive the data keys of key state `idx` and announce them.
    fn install_keys(&mut self, idx: usize) -> Result<(), SessionError> {
        let cipher = self.cipher.ok_or(SessionError::NotEstablished)?;
        let ks = &self.keys[idx];
        if ks.keys_installed {
            return Ok(());
        }
        let block = if self.use_ekm {
            let mut out = [0u8; 256];
            ks.tls
                .export_keying_material(&mut out, kdf::EKM_LABEL.as_bytes(), None)?;
            KeyBlock(out)
        } else {
            let (Some(local), Some(remote)) = (&ks.local_km, &ks.remote_km) else {
                return Err(SessionError::NotEstablished);
            };
            let (c, s) = match self.cfg.side {
                Side::Client => (local, remote),
                Side::Server => (remote, local),
            };
            let remote_sid = self.remote_sid.ok_or(SessionError::NotEstablished)?;
            let (csid, ssid) = match self.cfg.side {
                Side::Client => (self.local_sid, remote_sid),
                Side::Server => (remote_sid, self.local_sid),
            };
            let pre_master = c.pre_master.ok_or(SessionError::MissingPreMaster)?;
            kdf::legacy_key_block(
                &pre_master,
                &c.random1,
                &s.random1,
                &c.random2,
                &s.random2,
                &csid,
                &ssid,
            )
        };
        let key_id = ks.key_id;
        self.keys[idx].keys_installed = true;
        self.events.push_back(Event::KeysReady {
            key_id,
            cipher,
            auth: self.cfg.data_auth,
            block: Box::new(block),
        });
        Ok(())
    }

    fn handle_text(&mut self, now: Instant, text: &str) {
        let filtered;
        let text = if self.cfg.side == Side::Client && !self.cfg.pull_filters.is_empty() {
            match push::apply_pull_filters(text, &self.cfg.pull_filters) {
                push::Filtered::Rejected(option) => {
                    warn!("Pushed option rejected by filter: '{option}'. Restarting.");
                    self.close(SessionError::PulledOptionRejected(option));
                    return;
                }
                push::Filtered::Kept { text, ignored } => {
                    for option in ignored {
                        info!("Pushed option removed by filter: '{option}'");
                    }
                    filtered = text;
                    filtered.as_str()
                }
            }
        } else {
            text
        };
        let msg = ControlMessage::parse(text);
        match (self.cfg.side, msg) {
            (Side::Server, ControlMessage::PushRequest) => {
                self.push_requested = true;
                if self.push_reply.is_some() {
                    self.send_push_reply(now);
                } else if self.peer_info.is_some() {
                    self.events.push_back(Event::PushRequested);
                }
            }
            (_, ControlMessage::Exit) => {
                info!("peer announced exit");
                self.events.push_back(Event::PeerExit);
            }
            (Side::Client, ControlMessage::PushReply(part)) => {
                if self.push_received {
                    return;
                }
                // A 2.6 server splits long replies: parts ending
                // `push-continuation 2` are collected until the last one.
                let reply = match self.pending_push.take() {
                    Some(mut so_far) => {
                        so_far.extend(part);
                        so_far
                    }
                    None => part,
                };
                self.pending_push_parts += 1;
                if reply.expects_more() {
                    if self.pending_push_parts >= MAX_PUSH_PARTS {
                        self.close(SessionError::PushReplyTooLarge);
                        return;
                    }
                    self.pending_push_bytes += text.len();
                    self.pending_push = Some(reply);
                    return;
                }
                self.pending_push_bytes = 0;
                if let Err(e) = self.apply_push(&reply) {
                    warn!("rejecting push reply: {e}");
                    self.close(e);
                    return;
                }
                self.push_received = true;
                self.next_push_request = None;
                // The driver configures the peer before the keys for it arrive.
                self.events.push_back(Event::PushReply(reply));
                if let Some(idx) = self.key_index(0) {
                    if let Err(e) = self.install_keys(idx) {
                        self.close(e);
                        return;
                    }
                    self.update_phase(now, idx);
                }
            }
            (Side::Client, ControlMessage::AuthFailed(m)) => {
                self.events.push_back(Event::AuthFailed(m.clone()));
                self.close(SessionError::AuthFailed(m));
            }
            (Side::Client, ControlMessage::Restart(m)) => {
                self.events.push_back(Event::Restart {
                    halt: false,
                    message: m,
                });
            }
            (Side::Client, ControlMessage::Halt(m)) => {
                self.events.push_back(Event::Restart {
                    halt: true,
                    message: m,
                });
            }
            (_, other) => debug!("ignoring control message {other:?}"),
        }
    }

    /// Client: take cipher and key derivation from the push reply.
    fn apply_push(&mut self, reply: &PushReply) -> Result<(), SessionError> {
        use crate::push::PushOption;
        let mut cipher = None;
        let mut ekm = false;
        for o in &reply.options {
            match o {
                PushOption::Cipher(name) => {
                    let c = Cipher::from_name(name)
                        .ok_or_else(|| SessionError::UnsupportedPushedCipher(name.clone()))?;
                    if !self.cfg.data_ciphers.contains(&c)
                        && self.cfg.data_ciphers_fallback != Some(c)
                    {
                        return Err(SessionError::PushedCipherNotAllowed(name.clone()));
                    }
                    cipher = Some(c);
                }
                PushOption::KeyDerivation(k) if k == "tls-ekm" => ekm = true,
                PushOption::ProtocolFlags(flags) if flags.iter().any(|f| f == "tls-ekm") => {
                    ekm = true
                }
                _ => {}
            }
        }
        let cipher = match cipher {
            Some(c) => c,
            None => {
                // Nothing pushed: the server's OCC cipher if we allow it,
                // else the fallback if the server announced none (2.6).
                let occ = self
                    .keys
                    .iter()
                    .find(|k| k.key_id == 0)
                    .and_then(|k| k.remote_km.as_ref())
                    .and_then(|km| crate::key_method::options_string_cipher(&km.options));
                ncp::select_without_push(
                    &self.cfg.data_ciphers,
                    self.cfg.data_ciphers_fallback,
                    occ,
                )
                .map_err(SessionError::PushedCipherNotAllowed)?
                .ok_or(SessionError::NoPushedCipher)?
            }
        };
        self.cipher = Some(cipher);
        self.use_ekm = ekm;
        Ok(())
    }

    /// Server: set the whole PUSH_REPLY text (`PUSH_REPLY,...`), options in
    /// the order 2.6 sends them (pushed options, then per-client ones). It
    /// goes out split as 2.6 splits it ([`push::split_push_reply`]), now if
    /// the client asked for it or announced it wants it unasked (IV_PROTO
    /// bit 2). An option too long for one message closes the session.
    pub fn set_push_reply(&mut self, now: Instant, text: String) {
        let parts = match push::split_push_reply(&text) {
            Ok(parts) => parts,
            Err(e) => {
                warn!("cannot send push reply: {e}");
                self.close(SessionError::PushOptionTooLong(e.to_string()));
                return;
            }
        };
        let proactive = self.peer_info.as_ref().is_some_and(|p| p.request_push());
        self.push_reply = Some(parts);
        if proactive || self.push_requested {
            self.send_push_reply(now);
        }
        self.flush(now);
    }

    /// Server: send the push reply unless it went out less than
    /// [`PUSH_REPLY_REPEAT_INTERVAL`] ago (a repeated PUSH_REQUEST is then
    /// ignored, as in 2.6).
    fn send_push_reply(&mut self, now: Instant) {
        if self
            .push_reply_sent_at
            .is_some_and(|t| now < t + PUSH_REPLY_REPEAT_INTERVAL)
        {
            debug!("push reply already sent recently; ignoring PUSH_REQUEST");
            return;
        }
        let Some(parts) = self.push_reply.clone() else {
            return;
        };
        for part in &parts {
            self.send_text_on_current(now, part);
        }
        self.push_reply_sent_at = Some(now);
    }

    /// Send a text control message (EXIT, AUTH_FAILED, RESTART ...) on the newest usable key state.
    pub fn send_control_message(&mut self, now: Instant, text: &str) {
        self.send_text_on_current(now, text);
        self.flush(now);
    }

    fn send_text_on_current(&mut self, now: Instant, text: &str) {
        if self.closed {
            return;
        }
        let idx = self.keys.iter().rposition(|k| {
            matches!(
                k.phase,
                Phase::KeyExchange | Phase::Established | Phase::Active
            )
        });
        if let Some(idx) = idx
            && let Err(e) = self.write_text(idx, text)
        {
            // rustls' buffer is full: the peer is not taking our data.
            self.fail_key_state(now, idx, e);
        }
    }

    fn write_text(&mut self, idx: usize, text: &str) -> Result<(), SessionError> {
        let mut b = Vec::with_capacity(text.len() + 1);
        b.extend_from_slice(text.as_bytes());
        b.push(0);
        self.keys[idx]
            .tls
            .writer()
            .write_all(&b)
            .map_err(SessionError::TlsIo)
    }

    fn update_phase(&mut self, now: Instant, idx: usize) {
        let ks = &mut self.keys[idx];
        if ks.phase == Phase::KeyExchange && ks.local_km.is_some() && ks.remote_km.is_some() {
            ks.phase = Phase::Established;
            if self.cfg.side == Side::Client && ks.key_id == 0 && !self.push_received {
                self.next_push_request = Some(now);
            }
        }
        let ks = &mut self.keys[idx];
        if ks.phase != Phase::KeyExchange && ks.keys_installed {
            // The data keys are derived: the key-method-2 secrets go
            // (zeroized on drop).
            ks.local_km = None;
            ks.remote_km = None;
        }
        let idle = ks.reliable.all_acked() && ks.tls_out.is_empty() && !ks.tls.wants_write();
        if ks.phase == Phase::Established && ks.keys_installed && idle {
            ks.phase = Phase::Active;
            let key_id = ks.key_id;
            let previous = self.current_key.replace(key_id);
            info!("key_id {key_id} active");
            self.events.push_back(Event::SendKey { key_id });
            if let Some(prev) = previous.filter(|&p| p != key_id) {
                let tran = self.cfg.tran_window;
                if let Some(old) = self.keys.iter_mut().find(|k| k.key_id == prev) {
                    old.retire_at = Some(now + tran);
                }
            }
            self.next_reneg = self.cfg.reneg_interval.map(|d| now + d);
        }
    }

    fn fail_key_state(&mut self, now: Instant, idx: usize, e: SessionError) {
        let key_id = self.keys[idx].key_id;
        warn!("key_id {key_id} negotiation failed: {e}");
        // Let rustls' alert (if any) reach the peer before the state goes.
        let ks = &mut self.keys[idx];
        let mut out = Vec::new();
        while ks.tls.wants_write() {
            if ks.tls.write_tls(&mut out).is_err() {
                break;
            }
        }
        ks.tls_out.extend_from_slice(&out);
        self.emit_packets(now, idx);
        // A failed renegotiation ends the session (stricter than 2.6 on
        // purpose): otherwise a client whose certificate was revoked, or
        // that ignores our soft resets, keeps its old key for ever.
        let reason = match self.current_key {
            Some(current) if current != key_id => SessionError::RenegotiationFailed {
                key_id,
                cause: Box::new(e),
            },
            _ => e,
        };
        self.close(reason);
    }

    fn close(&mut self, reason: SessionError) {
        if self.closed {
            return;
        }
        self.closed = true;
        for k in &self.keys {
            if k.keys_installed {
                self.events
                    .push_back(Event::KeyRetired { key_id: k.key_id });
            }
        }
        self.events.push_back(Event::Closed(reason));
    }

    /// Drive timers: retransmissions, hand-window, renegotiation, lame-duck expiry, push requests.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        let hand_window = self.cfg.hand_window;
        let mut i = 0;
        while i < self.keys.len() {
            let ks = &self.keys[i];
            if ks.phase != Phase::Active && ks.retire_at.is_none() && now >= ks.deadline {
                self.fail_key_state(now, i, SessionError::HandWindowExpired);
                return;
            }
            // A peer that stops acknowledging (while perhaps still sending)
            // would keep the session and its buffers for ever.
            if ks.retire_at.is_none()
                && ks
                    .reliable
                    .oldest_unacked()
                    .is_some_and(|t| now >= t + hand_window)
            {
                self.fail_key_state(now, i, SessionError::Unacknowledged);
                return;
            }
            if ks.retire_at.is_some_and(|t| now >= t) {
                let key_id = ks.key_id;
                self.keys.remove(i);
                self.events.push_back(Event::KeyRetired { key_id });
                continue;
            }
            i += 1;
        }
        if self.next_reneg.is_some_and(|t| now >= t)
            && let Err(e) = self.start_renegotiation(now)
        {
            debug!("renegotiation not started: {e}");
            self.next_reneg = None;
        }
        if self.cfg.side == Side::Client && self.next_push_request.is_some_and(|t| now >= t) {
            self.send_text_on_current(now, "PUSH_REQUEST");
            self.next_push_request = Some(now + PUSH_REQUEST_INTERVAL);
        }
        self.flush(now);
    }

    /// When [`Session::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let mut t: Option<Instant> = None;
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |y| y.min(x)));
            }
        };
        for k in &self.keys {
            min(k.reliable.next_timeout());
            if k.retire_at.is_none() {
                if k.phase != Phase::Active {
                    min(Some(k.deadline));
                }
                min(k
                    .reliable
                    .oldest_unacked()
                    .map(|t| t + self.cfg.hand_window));
            }
            min(k.retire_at);
        }
        min(self.next_reneg);
        min(self.next_push_request);
        t
    }

    /// Next datagram to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outgoing.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Cut pending TLS output into packets and emit everything due.
    fn flush(&mut self, now: Instant) {
        for idx in 0..self.keys.len() {
            // TLS output only flows once the peer's reset arrived (we need its sid).
            if self.keys[idx].phase != Phase::Reset {
                let ks = &mut self.keys[idx];
                let mut out = Vec::new();
                while ks.tls.wants_write() {
                    if ks.tls.write_tls(&mut out).is_err() {
                        break;
                    }
                }
                ks.tls_out.extend_from_slice(&out);
                if ks.tls_out.len() > MAX_TLS_BACKLOG {
                    self.fail_key_state(now, idx, SessionError::ControlBacklog);
                    return;
                }
            }
            self.emit_packets(now, idx);
            self.update_phase(now, idx);
        }
    }

    fn next_replay_id(&mut self) -> ReplayId {
        self.replay_out.id = self.replay_out.id.wrapping_add(1);
        self.replay_out
    }

    fn emit_packets(&mut self, now: Instant, idx: usize) {
        let max_payload = self.cfg.max_control_payload();
        let wkc_len = self.wrap.client_wkc().map_or(0, <[u8]>::len);
        let resend_wkc = self.resend_wkc;
        let ks = &mut self.keys[idx];
        // The packet that must carry WKc again: msg_id 1 of key_id 0.
        let wkc_due =
            |ks: &KeyState| resend_wkc && ks.key_id == 0 && ks.reliable.next_send_id() == 1;
        while !ks.tls_out.is_empty() && ks.reliable.can_send() {
            let (opcode, room) = if wkc_due(ks) {
                // WKc travels in the same datagram; 2.6 keeps 16 bytes at least.
                (
                    Opcode::ControlWkcV1,
                    max_payload.saturating_sub(wkc_len).max(16),
                )
            } else {
                (Opcode::ControlV1, max_payload)
            };
            let n = ks.tls_out.len().min(room);
            let chunk: Vec<u8> = ks.tls_out.drain(..n).collect();
            ks.reliable.send(now, opcode, chunk);
        }
        if wkc_due(ks) && ks.reliable.has_pending_acks() && ks.reliable.can_send() {
            // Instead of a bare ACK, which the server could not read
            // without WKc: an empty CONTROL_WKC_V1 carrying the ACK.
            ks.reliable.send(now, Opcode::ControlWkcV1, Vec::new());
        }
        let key_id = ks.key_id;
        let mut sent_any = false;
        let remote = self.remote_sid;
        loop {
            let ks = &mut self.keys[idx];
            let Some((id, opcode, payload)) = ks.reliable.poll_transmit(now) else {
                break;
            };
            let payload = payload.to_vec();
            // A client's first reset cannot carry ACKs (it knows no peer sid yet).
            let acks = if remote.is_some() {
                ks.reliable.take_acks(MAX_ACKS_ON_RELIABLE)
            } else {
                Vec::new()
            };
            let pkt = ControlPacket {
                opcode,
                key_id,
                session_id: self.local_sid,
                remote_session_id: if acks.is_empty() { None } else { remote },
                acks,
                message_id: Some(id),
                payload,
            };
            self.push_wire(&pkt);
            sent_any = true;
        }
        let ks = &mut self.keys[idx];
        if !sent_any && ks.reliable.has_pending_acks() && remote.is_some() {
            let acks = ks.reliable.take_acks(MAX_ACKS);
            let pkt = ControlPacket {
                opcode: Opcode::AckV1,
                key_id,
                session_id: self.local_sid,
                acks,
                remote_session_id: remote,
                message_id: None,
                payload: Vec::new(),
            };
            self.push_wire(&pkt);
        }
    }

    fn push_wire(&mut self, pkt: &ControlPacket) {
        let replay = self.next_replay_id();
        let mut out = Vec::with_capacity(pkt.payload.len() + 128);
        self.wrap.wrap(pkt, replay, &mut out);
        self.outgoing.push_back(out);
    }
}

/// Why a session or key state could not proceed, or why a session closed
/// (carried by [`Event::Closed`]).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The first packet of a new session was not a valid client hard reset.
    #[error("first packet is not a HARD_RESET_CLIENT_V2 with key_id 0 and message id 0")]
    NotAReset,
    /// A packet echoing a cookie is not a plausible third handshake packet.
    #[error(
        "not a CONTROL_V1/ACK_V1/CONTROL_WKC_V1 answering the stateless reset (key_id 0, ids <= 1)"
    )]
    NotACookieAnswer,
    /// A hard reset's early-negotiation TLVs are malformed.
    #[error("hard reset: {0}")]
    BadEarlyNegotiation(WireError),
    /// The role's TLS configuration is missing.
    #[error("no TLS configuration for this side")]
    NoTlsConfig,
    /// rustls refused the handshake or a record (bad certificate, alert, ...).
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// Moving bytes into or out of rustls failed (e.g. its buffer is full).
    #[error("TLS I/O: {0}")]
    TlsIo(std::io::Error),
    /// The peer's TLS plaintext holds a control message longer than we buffer.
    #[error("control message longer than {MAX_PLAINTEXT_BUFFER} bytes")]
    OversizedControlMessage,
    /// The peer's key-method-2 message is malformed.
    #[error("bad key-method-2 message: {0}")]
    BadKeyMethod(KeyMethodError),
    /// A client key-method-2 message lacks its pre-master secret.
    #[error("client key-method-2 without pre_master")]
    MissingPreMaster,
    /// The server pushed a cipher this build does not implement.
    #[error("pushed cipher {0} is not supported")]
    UnsupportedPushedCipher(String),
    /// The server pushed a cipher outside `data-ciphers`/`data-ciphers-fallback`.
    #[error("pushed cipher {0} is not in data-ciphers")]
    PushedCipherNotAllowed(String),
    /// The server pushed no cipher and no fallback is configured.
    #[error("server pushed no cipher and no data-ciphers-fallback is set")]
    NoPushedCipher,
    /// A pushed option matched a `pull-filter reject` line (2.6 restarts).
    #[error("pushed option '{0}' rejected by pull-filter")]
    PulledOptionRejected(String),
    /// A split push reply has more parts than we accept.
    #[error("push reply split into more than {MAX_PUSH_PARTS} parts")]
    PushReplyTooLarge,
    /// A push option does not fit in one PUSH_REPLY message.
    #[error("push option longer than a PUSH_REPLY message can carry: {0}")]
    PushOptionTooLong(String),
    /// The server sent AUTH_FAILED (client side).
    #[error("AUTH_FAILED {0}")]
    AuthFailed(String),
    /// An operation needs an established session.
    #[error("session not established yet")]
    NotEstablished,
    /// A renegotiation is already running.
    #[error("a renegotiation is already in progress")]
    RenegotiationInProgress,
    /// A soft reset named an unexpected key_id.
    #[error("key IDs out of sync: got {got}, expected {expected}")]
    KeyIdOutOfSync { got: u8, expected: u8 },
    /// The peer asks for renegotiations faster than we take them.
    #[error("peer soft resets faster than one per {MIN_PEER_RENEG_INTERVAL:?}")]
    SoftResetTooSoon,
    /// The key negotiation did not finish within hand-window.
    #[error("key negotiation did not finish within hand-window")]
    HandWindowExpired,
    /// Control data stayed unacknowledged for longer than hand-window.
    #[error("control data unacknowledged for longer than hand-window")]
    Unacknowledged,
    /// TLS output piled up beyond [`MAX_TLS_BACKLOG`] (the peer does not ACK).
    #[error("more than {MAX_TLS_BACKLOG} bytes of control data waiting to be sent")]
    ControlBacklog,
    /// A renegotiation presented a different certificate than the first key.
    #[error("peer certificate changed across renegotiation")]
    PeerIdentityChanged,
    /// A renegotiation of an established session failed; the session ends
    /// rather than keep a key that was not re-verified.
    #[error("renegotiation of key_id {key_id} failed: {cause}")]
    RenegotiationFailed {
        key_id: u8,
        cause: Box<SessionError>,
    },
}
