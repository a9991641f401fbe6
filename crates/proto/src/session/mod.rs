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

mod error;
mod key_state;
mod messages;
mod negotiation;
mod packets;
mod timers;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::data::{Cipher, KeyBlock, Side};
use crate::key_method::{Credentials, PeerInfo};
use crate::push::{self, PushReply};
use crate::replay::ControlReplayWindow;
use crate::wire::{ControlPacket, EARLY_NEG_START, MAX_ACKS_ON_RELIABLE, Opcode, SessionId};
use crate::wrap::{ControlWrap, ReplayId};

pub use error::SessionError;
use key_state::{KeyState, Phase};

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
    /// Point-to-point TLS mode (`tls-server`/`tls-client` without `mode
    /// server`/`pull`): both ends send `peer_info`, nothing is pushed, and
    /// cipher, key derivation and peer-id come from 2.6's P2P NCP on key 0
    /// (see [`Session::p2p_link`]).
    pub p2p: bool,
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

/// What point-to-point mode settled with the peer on key 0 (2.6's
/// `p2p_mode_ncp`); it holds for every later key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct P2pLink {
    pub cipher: Cipher,
    pub tls_ekm: bool,
    /// P_DATA_V2 with this peer-id both ways; `None`: P_DATA_V1.
    pub peer_id: Option<u32>,
    /// Say goodbye with the EXIT control message (else OCC exit).
    pub cc_exit: bool,
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
    /// With [`Session::verify_peer_before_key_method`]: the TLS handshake
    /// of `key_id` is done (key 0 and every renegotiation) and our
    /// key-method-2 message (a client's, with its credentials; a server's
    /// reply) waits until the driver says what it found of the peer's
    /// chain ([`Session::peer_verified`]), as 2.6's verify callback decides
    /// inside each handshake.
    VerifyPeer { key_id: u8 },
    /// Server: a renegotiation (`key_id` > 0) brought the client's user
    /// name and password (or auth-token) again; the driver checks them as
    /// 2.6 does at every key exchange.
    Reauthenticate {
        key_id: u8,
        credentials: Credentials,
    },
    /// Server: the client asked for its push reply and none is set yet.
    PushRequested,
    /// Server: the client answered a challenge (`CR_RESPONSE,base64`):
    /// the text after the comma (empty when none, as 2.6 reads it) and the
    /// key_id of the current key.
    CrResponse { key_id: u8, response: String },
    /// Client: the server's push reply (already applied to cipher and key derivation).
    PushReply(PushReply),
    /// Client: `INFO,TEXT` or `INFO_PRE,TEXT` from the server (a
    /// `CR_TEXT:` challenge, a `WEB_AUTH::` URL, ...): TEXT, empty when
    /// the comma is missing, as 2.6 reads it.
    Info(String),
    /// Client: `AUTH_PENDING[,KEYWORDS]`: the server's login waits (for
    /// `client-pending-auth`); KEYWORDS (`timeout N`), empty when none.
    AuthPending(String),
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
    /// Client: when key 0 was established (2.6's `ks->established`).
    established_at: Option<Instant>,
    /// Client: the push reply must have come by then (2.6's
    /// `push_request_timeout`): hand-window after key 0 was established,
    /// or what an AUTH_PENDING allows.
    push_request_deadline: Option<Instant>,
    /// The last packet the session accepted from the peer.
    last_peer_packet: Instant,
    next_reneg: Option<Instant>,
    closed: bool,
    /// Client: user name and password (or auth-token) sent in each
    /// key-method-2 message; see [`Session::set_credentials`].
    credentials: Option<(String, String)>,
    /// Point-to-point mode: what key 0 negotiated.
    p2p_link: Option<P2pLink>,
    /// The driver verifies the peer's chain itself (`tls-verify`,
    /// `PLUGIN_TLS_VERIFY`); see [`Session::verify_peer_before_key_method`].
    verify_peer: bool,
    /// The key_id whose key-method-2 message waits for the verdict.
    awaiting_verdict: Option<u8>,
    /// A renegotiation the verdict refused: its key_id, for the session's
    /// end once the old key expired too.
    refused_key: Option<u8>,
    /// Server: a key-method-2 message without a login closes the session;
    /// see [`Session::require_credentials`].
    require_credentials: bool,
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
            established_at: None,
            push_request_deadline: None,
            last_peer_packet: now,
            next_reneg: None,
            closed: false,
            credentials: None,
            p2p_link: None,
            verify_peer: false,
            awaiting_verdict: None,
            refused_key: None,
            require_credentials: false,
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
        Session::initiate(cfg, now, unix_now, |s| {
            if s.wrap.client_wkc().is_some() {
                s.replay_out.id = EARLY_NEG_START;
                Opcode::HardResetClientV3
            } else {
                Opcode::HardResetClientV2
            }
        })
    }

    /// Point-to-point TLS server with a known peer (`remote`): start by
    /// queueing HARD_RESET_SERVER_V2, as 2.6's TLS server does
    /// (`tls_multi_process` starts its initial session towards the remote
    /// address); the peer's HARD_RESET_CLIENT_V2 then names its session.
    /// A TLS client without `remote` waits for this reset.
    pub fn initiate_p2p_server(
        cfg: Arc<SessionConfig>,
        now: Instant,
        unix_now: u64,
    ) -> Result<Self, SessionError> {
        Session::initiate(cfg, now, unix_now, |_| Opcode::HardResetServerV2)
    }

    /// A session that speaks first: key 0 and its hard reset (the opcode
    /// `reset` picks, after any set-up it needs) queued and flushed.
    fn initiate(
        cfg: Arc<SessionConfig>,
        now: Instant,
        unix_now: u64,
        reset: impl FnOnce(&mut Session) -> Opcode,
    ) -> Result<Self, SessionError> {
        let mut s = Session::new(cfg, now, unix_now);
        let ks = s.new_key_state(0, now)?;
        s.keys.push(ks);
        let reset = reset(&mut s);
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

    /// DER of every certificate the peer presented (its own first, then
    /// the intermediates it sent), once a TLS handshake showed them: what
    /// a `tls-verify` script is run over.
    pub fn peer_certificates_der(&self) -> Vec<Vec<u8>> {
        self.keys
            .iter()
            .find_map(|k| k.tls.peer_certificates())
            .map(|certs| certs.iter().map(|c| c.as_ref().to_vec()).collect())
            .unwrap_or_default()
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

    /// Point-to-point mode: cipher, derivation, peer-id and goodbye agreed
    /// with the peer, once key 0's key-method-2 exchange is done.
    pub fn p2p_link(&self) -> Option<P2pLink> {
        self.p2p_link
    }

    /// Whether the first key exchange finished (data can flow).
    pub fn is_established(&self) -> bool {
        self.current_key.is_some()
    }
}
