//! Why a session or key state failed, or why a session closed.

use super::{MAX_PLAINTEXT_BUFFER, MAX_PUSH_PARTS, MAX_TLS_BACKLOG, MIN_PEER_RENEG_INTERVAL};
use crate::key_method::KeyMethodError;
use crate::wire::WireError;

/// Why a session or key state could not proceed, or why a session closed
/// (carried by [`Event::Closed`](super::Event::Closed)).
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
    /// Point-to-point mode: no cipher in common and no fallback (2.6's words).
    #[error(
        "failed to negotiate cipher with peer and --data-ciphers-fallback not enabled. No usable data channel cipher"
    )]
    P2pNoCipher,
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
    /// Client: no push reply by the push-request deadline (hand-window
    /// after key 0 was established, or the timeout an AUTH_PENDING set),
    /// or the server silent for hand-window meanwhile; 2.6's words, with
    /// the seconds since key 0 was established.
    #[error("No reply from server to push requests in {0}s")]
    NoPushReply(u64),
    /// Control data stayed unacknowledged for longer than hand-window.
    #[error("control data unacknowledged for longer than hand-window")]
    Unacknowledged,
    /// TLS output piled up beyond [`MAX_TLS_BACKLOG`] (the peer does not ACK).
    #[error("more than {MAX_TLS_BACKLOG} bytes of control data waiting to be sent")]
    ControlBacklog,
    /// The driver's verification (`tls-verify`, `PLUGIN_TLS_VERIFY`)
    /// refused the peer's certificate chain.
    #[error("the peer's certificate chain was refused (tls-verify)")]
    PeerRefused,
    /// Server, with [`super::Session::require_credentials`]: the client's
    /// key-method-2 message carried no user name and password.
    #[error("Auth Username/Password was not provided by peer")]
    CredentialsMissing,
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
