//! Control-channel wrapping: tls-auth (docs/protocol.md §2.2, §3), tls-crypt v1
//! (§2.3, §4.1) and tls-crypt with a tls-crypt-v2 client key (§4.3, keys in
//! [`crate::tls_crypt_v2`]), plus the "OpenVPN Static key V1" key file (§3.1).
//!
//! Receiving always authenticates (constant-time compare) before the body is
//! parsed, so nothing unauthenticated reaches the reliability layer. The replay
//! id is returned to the caller, who owns the replay window
//! ([`crate::replay::ControlReplayWindow`]) because its scope is the session,
//! not the key.

use std::fmt;

use aws_lc_rs::cipher::{AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use thiserror::Error;

use crate::data::Side;
use crate::wire::{ControlPacket, SESSION_ID_LEN, WireError, parse_prefix};

/// Size of a static key in bytes (2048 bits).
pub const STATIC_KEY_LEN: usize = 256;
/// Length of the long replay id (`replay_id u32 || replay_time u32`).
pub const REPLAY_ID_LEN: usize = 8;
/// tls-crypt tag length (HMAC-SHA256).
pub const TLS_CRYPT_TAG_LEN: usize = 32;
/// Clear prefix every wrapping leaves in front: header byte and sender session id.
const PREFIX_LEN: usize = 1 + SESSION_ID_LEN;
/// Shortest tls-crypt packet: prefix, replay id and tag (an empty `P`).
pub const TLS_CRYPT_MIN_LEN: usize = PREFIX_LEN + REPLAY_ID_LEN + TLS_CRYPT_TAG_LEN;

const BEGIN_MARKER: &str = "-----BEGIN OpenVPN Static key V1-----";
const END_MARKER: &str = "-----END OpenVPN Static key V1-----";

/// Errors from reading an "OpenVPN Static key V1" file.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyFileError {
    /// The `-----BEGIN OpenVPN Static key V1-----` line is missing.
    #[error("missing '{BEGIN_MARKER}' line")]
    MissingBegin,
    /// The `-----END OpenVPN Static key V1-----` line is missing after BEGIN.
    #[error("missing '{END_MARKER}' line")]
    MissingEnd,
    /// A character between the markers is neither a hex digit nor whitespace.
    #[error("line {line}: invalid character {ch:?} in static key (expected hex digits)")]
    BadChar {
        /// 1-based line number within the parsed text.
        line: usize,
        /// The offending character.
        ch: char,
    },
    /// The key does not hold exactly 512 hex digits (256 bytes).
    #[error("static key has {digits} hex digits, expected 512 (256 bytes)")]
    WrongLength {
        /// Number of hex digits found between the markers.
        digits: usize,
    },
}

/// A 256-byte OpenVPN static key (tls-auth, tls-crypt or a dynamic tls-crypt key).
///
/// Layout (doc §3.1): `keys[0].cipher | keys[0].hmac | keys[1].cipher | keys[1].hmac`,
/// 64 bytes each.
#[derive(Clone, PartialEq, Eq)]
pub struct StaticKey([u8; STATIC_KEY_LEN]);

impl Drop for StaticKey {
    // Key bytes must not outlive the key in freed memory.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Keys end up in logs via `{:?}` of bigger structs; never print them.
        f.write_str("StaticKey(..)")
    }
}

impl StaticKey {
    /// Parse the text of a key file (or of an inline `<tls-crypt>` block).
    ///
    /// Everything outside the marker lines is ignored; between them only hex
    /// digits and whitespace are allowed, and there must be exactly 256 bytes.
    pub fn parse(text: &str) -> Result<StaticKey, KeyFileError> {
        let mut lines = text.lines().enumerate();
        if !lines.by_ref().any(|(_, l)| l.trim() == BEGIN_MARKER) {
            return Err(KeyFileError::MissingBegin);
        }
        let mut key = [0u8; STATIC_KEY_LEN];
        let mut digits = 0usize;
        for (idx, line) in lines {
            if line.trim() == END_MARKER {
                if digits != 2 * STATIC_KEY_LEN {
                    return Err(KeyFileError::WrongLength { digits });
                }
                return Ok(StaticKey(key));
            }
            for ch in line.chars() {
                if ch.is_whitespace() {
                    continue;
                }
                let Some(nibble) = ch.to_digit(16) else {
                    return Err(KeyFileError::BadChar { line: idx + 1, ch });
                };
                // Keep counting past 256 bytes so the error reports the real size.
                if let Some(b) = key.get_mut(digits / 2) {
                    *b = (*b << 4) | nibble as u8;
                }
                digits += 1;
            }
        }
        Err(KeyFileError::MissingEnd)
    }

    /// A fresh random key, like `openvpn --genkey secret`.
    pub fn generate() -> StaticKey {
        let mut k = [0u8; STATIC_KEY_LEN];
        crate::random::fill(&mut k);
        StaticKey(k)
    }

    /// Wrap raw bytes, e.g. a dynamic tls-crypt key (doc §4.4).
    pub fn from_bytes(bytes: [u8; STATIC_KEY_LEN]) -> StaticKey {
        StaticKey(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; STATIC_KEY_LEN] {
        &self.0
    }

    /// The file text `openvpn --genkey secret` writes: comment header, 16 bytes per line.
    pub fn to_file_text(&self) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(640);
        s.push_str("#\n# 2048 bit OpenVPN static key\n#\n");
        s.push_str(BEGIN_MARKER);
        s.push('\n');
        for line in self.0.chunks(16) {
            for b in line {
                // Writing into a String cannot fail.
                let _ = write!(s, "{b:02x}");
            }
            s.push('\n');
        }
        s.push_str(END_MARKER);
        s.push('\n');
        s
    }

    /// `len` bytes at `start`; callers only pass constant in-range slots.
    fn slot(&self, start: usize, len: usize) -> &[u8] {
        &self.0[start..start + len]
    }
}

/// tls-auth key direction (`--key-direction` or the 2nd `tls-auth` argument).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyDirection {
    /// No direction: both ways use `keys[0].hmac`.
    Bidirectional,
    /// `0` (conventionally the server): send with `keys[0]`, verify with `keys[1]`.
    Normal,
    /// `1` (conventionally the client): send with `keys[1]`, verify with `keys[0]`.
    Inverse,
}

/// tls-auth digest (`--auth`, default SHA1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthDigest {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl AuthDigest {
    /// Parse an `--auth` name ("SHA1", "sha256", ...).
    pub fn from_name(name: &str) -> Option<Self> {
        [
            ("SHA1", AuthDigest::Sha1),
            ("SHA256", AuthDigest::Sha256),
            ("SHA384", AuthDigest::Sha384),
            ("SHA512", AuthDigest::Sha512),
        ]
        .into_iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, d)| d)
    }

    /// Digest (and tls-auth HMAC key) length in bytes.
    #[allow(clippy::len_without_is_empty)] // a digest length is never zero
    pub fn len(self) -> usize {
        match self {
            AuthDigest::Sha1 => 20,
            AuthDigest::Sha256 => 32,
            AuthDigest::Sha384 => 48,
            AuthDigest::Sha512 => 64,
        }
    }

    pub(crate) fn hmac_algorithm(self) -> hmac::Algorithm {
        match self {
            AuthDigest::Sha1 => hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
            AuthDigest::Sha256 => hmac::HMAC_SHA256,
            AuthDigest::Sha384 => hmac::HMAC_SHA384,
            AuthDigest::Sha512 => hmac::HMAC_SHA512,
        }
    }
}

/// The 8-byte long packet id of tls-auth/tls-crypt (doc §2.4); wire order `id` then `time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayId {
    pub id: u32,
    pub time: u32,
}

impl ReplayId {
    pub fn to_bytes(self) -> [u8; REPLAY_ID_LEN] {
        let mut b = [0u8; REPLAY_ID_LEN];
        b[..4].copy_from_slice(&self.id.to_be_bytes());
        b[4..].copy_from_slice(&self.time.to_be_bytes());
        b
    }

    pub fn from_bytes(b: [u8; REPLAY_ID_LEN]) -> Self {
        let [a0, a1, a2, a3, t0, t1, t2, t3] = b;
        ReplayId {
            id: u32::from_be_bytes([a0, a1, a2, a3]),
            time: u32::from_be_bytes([t0, t1, t2, t3]),
        }
    }
}

/// tls-auth keys, precomputed.
pub struct TlsAuth {
    digest: AuthDigest,
    send: hmac::Key,
    recv: hmac::Key,
}

/// One direction of tls-crypt: AES-256-CTR key and HMAC-SHA256 key.
struct CryptDir {
    enc: EncryptingKey,
    mac: hmac::Key,
}

impl CryptDir {
    /// Keys of key set `set` (0 = server -> client, 1 = client -> server).
    fn new(key: &StaticKey, set: usize) -> Self {
        let base = set * 128;
        let enc = UnboundCipherKey::new(&AES_256, key.slot(base, 32))
            .and_then(EncryptingKey::ctr)
            // A 32-byte slice is always a valid AES-256 key; failure would be a library bug.
            .expect("AES-256-CTR key setup failed");
        CryptDir {
            enc,
            mac: hmac::Key::new(hmac::HMAC_SHA256, key.slot(base + 64, 32)),
        }
    }

    /// AES-256-CTR in place; CTR is its own inverse, so this also decrypts.
    fn ctr(&self, iv: &[u8; 16], data: &mut [u8]) {
        // Only fails for a context of the wrong kind, which cannot happen here.
        let _ = self
            .enc
            .less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(*iv)));
    }
}

/// tls-crypt v1 keys, precomputed.
pub struct TlsCrypt {
    send: CryptDir,
    recv: CryptDir,
}

impl TlsCrypt {
    /// Directions are fixed by role (doc §4.1): the server sends with key
    /// set 0, the client with key set 1.
    fn new(key: &StaticKey, side: Side) -> Self {
        let (send, recv) = match side {
            Side::Server => (0, 1),
            Side::Client => (1, 0),
        };
        TlsCrypt {
            send: CryptDir::new(key, send),
            recv: CryptDir::new(key, recv),
        }
    }

    fn wrap(&self, pkt: &ControlPacket, replay: ReplayId, start: usize, out: &mut Vec<u8>) {
        out.extend_from_slice(&replay.to_bytes());
        let tag_at = out.len();
        out.resize(tag_at + TLS_CRYPT_TAG_LEN, 0);
        let body_at = out.len();
        pkt.emit_body(out);
        let mut ctx = hmac::Context::with_key(&self.send.mac);
        ctx.update(&out[start..tag_at]);
        ctx.update(&out[body_at..]);
        let tag = ctx.sign();
        let tag = tag.as_ref();
        out[tag_at..body_at].copy_from_slice(tag);
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&tag[..16]);
        self.send.ctr(&iv, &mut out[body_at..]);
    }

    fn unwrap(&self, wire: &[u8]) -> Result<(ControlPacket, Option<ReplayId>), WireError> {
        let (opcode, key_id, sid) = parse_prefix(wire)?;
        let need = TLS_CRYPT_MIN_LEN;
        let (prefix, rest) = split(wire, PREFIX_LEN, need)?;
        let (replay, rest) = split(rest, REPLAY_ID_LEN, need)?;
        let (tag, ciphertext) = split(rest, TLS_CRYPT_TAG_LEN, need)?;
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&tag[..16]);
        let mut plain = ciphertext.to_vec();
        self.recv.ctr(&iv, &mut plain);
        let mut ctx = hmac::Context::with_key(&self.recv.mac);
        ctx.update(prefix);
        ctx.update(replay);
        ctx.update(&plain);
        verify_slices_are_equal(ctx.sign().as_ref(), tag).map_err(|_| WireError::AuthFailed)?;
        let pkt = ControlPacket::parse_body(opcode, key_id, sid, &plain)?;
        Ok((pkt, Some(replay_of(replay))))
    }
}

/// tls-crypt with a tls-crypt-v2 client key `Kc`.
pub struct TlsCryptV2 {
    crypt: TlsCrypt,
    /// Client: `WKc`, appended to HARD_RESET_CLIENT_V3 and CONTROL_WKC_V1.
    /// Server: `None`; a `WKc` that a client repeats is split off unread,
    /// since the session already has the key (as 2.6 does).
    wkc: Option<Vec<u8>>,
}

/// How control packets are wrapped on the wire.
///
/// The key variants are boxed: expanded AES and HMAC keys are kilobytes.
pub enum ControlWrap {
    /// Plain control packets (doc §2.1).
    None,
    /// `--tls-auth` (doc §2.2).
    TlsAuth(Box<TlsAuth>),
    /// `--tls-crypt` v1 or a dynamic tls-crypt key (doc §2.3).
    TlsCrypt(Box<TlsCrypt>),
    /// `--tls-crypt-v2`: tls-crypt with the client's own key (doc §4.3).
    TlsCryptV2(Box<TlsCryptV2>),
}

impl fmt::Debug for ControlWrap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlWrap::None => f.write_str("ControlWrap::None"),
            ControlWrap::TlsAuth(a) => write!(f, "ControlWrap::TlsAuth({:?})", a.digest),
            ControlWrap::TlsCrypt(_) => f.write_str("ControlWrap::TlsCrypt"),
            ControlWrap::TlsCryptV2(_) => f.write_str("ControlWrap::TlsCryptV2"),
        }
    }
}

impl ControlWrap {
    /// tls-auth with the given direction and digest (doc §3.2).
    pub fn tls_auth(key: &StaticKey, dir: KeyDirection, digest: AuthDigest) -> Self {
        let h = digest.len();
        let (send_at, recv_at) = match dir {
            KeyDirection::Bidirectional => (64, 64),
            KeyDirection::Normal => (64, 192),
            KeyDirection::Inverse => (192, 64),
        };
        let alg = digest.hmac_algorithm();
        ControlWrap::TlsAuth(Box::new(TlsAuth {
            digest,
            send: hmac::Key::new(alg, key.slot(send_at, h)),
            recv: hmac::Key::new(alg, key.slot(recv_at, h)),
        }))
    }

    /// tls-crypt v1; directions are fixed by role (doc §4.1): the server sends
    /// with key set 0, the client with key set 1. Also used for dynamic
    /// tls-crypt keys (doc §4.4).
    pub fn tls_crypt(key: &StaticKey, side: Side) -> Self {
        ControlWrap::TlsCrypt(Box::new(TlsCrypt::new(key, side)))
    }

    /// A tls-crypt-v2 client: tls-crypt with `Kc`, `WKc` appended to the
    /// packets that carry it.
    pub fn tls_crypt_v2_client(key: &crate::tls_crypt_v2::ClientKey) -> Self {
        ControlWrap::TlsCryptV2(Box::new(TlsCryptV2 {
            crypt: TlsCrypt::new(&key.key, Side::Client),
            wkc: Some(key.wkc.clone()),
        }))
    }

    /// A tls-crypt-v2 server's wrap for one client, with the `Kc` its
    /// `WKc` held.
    pub fn tls_crypt_v2_server(kc: &StaticKey) -> Self {
        ControlWrap::TlsCryptV2(Box::new(TlsCryptV2 {
            crypt: TlsCrypt::new(kc, Side::Server),
            wkc: None,
        }))
    }

    /// Client: the `WKc` this wrap appends to HARD_RESET_CLIENT_V3 and
    /// CONTROL_WKC_V1, if it is a tls-crypt-v2 client's.
    pub fn client_wkc(&self) -> Option<&[u8]> {
        match self {
            ControlWrap::TlsCryptV2(v2) => v2.wkc.as_deref(),
            _ => None,
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, ControlWrap::None)
    }

    /// Bytes the wrapped form adds to the unwrapped form.
    pub fn overhead(&self) -> usize {
        match self {
            ControlWrap::None => 0,
            ControlWrap::TlsAuth(a) => a.digest.len() + REPLAY_ID_LEN,
            ControlWrap::TlsCrypt(_) | ControlWrap::TlsCryptV2(_) => {
                REPLAY_ID_LEN + TLS_CRYPT_TAG_LEN
            }
        }
    }

    /// Append the wire form of `pkt` to `out`. `replay` is ignored for [`ControlWrap::None`].
    pub fn wrap(&self, pkt: &ControlPacket, replay: ReplayId, out: &mut Vec<u8>) {
        let start = out.len();
        pkt.emit_prefix(out);
        match self {
            ControlWrap::None => pkt.emit_body(out),
            ControlWrap::TlsAuth(a) => {
                let h = a.digest.len();
                let hmac_at = out.len();
                out.resize(hmac_at + h, 0);
                out.extend_from_slice(&replay.to_bytes());
                let body_at = out.len();
                pkt.emit_body(out);
                let mut ctx = hmac::Context::with_key(&a.send);
                ctx.update(&replay.to_bytes());
                ctx.update(&out[start..hmac_at]);
                ctx.update(&out[body_at..]);
                let tag = ctx.sign();
                out[hmac_at..hmac_at + h].copy_from_slice(tag.as_ref());
            }
            ControlWrap::TlsCrypt(c) => c.wrap(pkt, replay, start, out),
            ControlWrap::TlsCryptV2(v2) => {
                v2.crypt.wrap(pkt, replay, start, out);
                if let Some(wkc) = &v2.wkc
                    && crate::tls_crypt_v2::carries_wkc(pkt.opcode)
                {
                    out.extend_from_slice(wkc);
                }
            }
        }
    }

    /// Authenticate, decrypt and parse one wire packet. Returns the replay id
    /// (none for [`ControlWrap::None`]) for the caller's replay window.
    pub fn unwrap(&self, wire: &[u8]) -> Result<(ControlPacket, Option<ReplayId>), WireError> {
        let (opcode, key_id, sid) = parse_prefix(wire)?;
        match self {
            ControlWrap::None => ControlPacket::parse(wire).map(|p| (p, None)),
            ControlWrap::TlsAuth(a) => {
                let h = a.digest.len();
                let need = PREFIX_LEN + h + REPLAY_ID_LEN;
                let (prefix, rest) = split(wire, PREFIX_LEN, need)?;
                let (tag, rest) = split(rest, h, need)?;
                let (replay, body) = split(rest, REPLAY_ID_LEN, need)?;
                let mut ctx = hmac::Context::with_key(&a.recv);
                ctx.update(replay);
                ctx.update(prefix);
                ctx.update(body);
                verify_slices_are_equal(ctx.sign().as_ref(), tag)
                    .map_err(|_| WireError::AuthFailed)?;
                let pkt = ControlPacket::parse_body(opcode, key_id, sid, body)?;
                Ok((pkt, Some(replay_of(replay))))
            }
            ControlWrap::TlsCrypt(c) => c.unwrap(wire),
            ControlWrap::TlsCryptV2(v2) => {
                let packet = if crate::tls_crypt_v2::carries_wkc(opcode) {
                    crate::tls_crypt_v2::split_wkc(wire)
                        .map_err(|_| WireError::AuthFailed)?
                        .0
                } else {
                    wire
                };
                v2.crypt.unwrap(packet)
            }
        }
    }
}

/// `split_at` that reports a truncated packet (of minimum size `need`) instead of panicking.
fn split(b: &[u8], at: usize, need: usize) -> Result<(&[u8], &[u8]), WireError> {
    b.split_at_checked(at).ok_or(WireError::Truncated {
        need,
        have: b.len(),
    })
}

fn replay_of(b: &[u8]) -> ReplayId {
    let mut a = [0u8; REPLAY_ID_LEN];
    a.copy_from_slice(b);
    ReplayId::from_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Opcode, SessionId};

    fn key() -> StaticKey {
        let mut k = [0u8; STATIC_KEY_LEN];
        for (i, b) in k.iter_mut().enumerate() {
            *b = i as u8;
        }
        StaticKey(k)
    }

    fn pkt() -> ControlPacket {
        ControlPacket {
            opcode: Opcode::ControlV1,
            key_id: 1,
            session_id: SessionId([7; 8]),
            acks: vec![3],
            remote_session_id: Some(SessionId([8; 8])),
            message_id: Some(4),
            payload: vec![0x16; 300],
        }
    }

    #[test]
    fn key_file_roundtrip() {
        let k = StaticKey::generate();
        let text = k.to_file_text();
        assert_eq!(text.lines().count(), 3 + 1 + 16 + 1);
        assert_eq!(StaticKey::parse(&text), Ok(k));
    }

    #[test]
    fn key_file_errors() {
        let good = key().to_file_text();
        assert_eq!(StaticKey::parse(""), Err(KeyFileError::MissingBegin));
        let no_end = good.replace(END_MARKER, "");
        assert_eq!(StaticKey::parse(&no_end), Err(KeyFileError::MissingEnd));
        // Line 6 is the second hex line (3 comment lines, BEGIN, first hex line).
        let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
        lines[5].replace_range(3..4, "g");
        assert_eq!(
            StaticKey::parse(&lines.join("\n")),
            Err(KeyFileError::BadChar { line: 6, ch: 'g' })
        );
        let short = good.replacen("000102", "", 1);
        assert_eq!(
            StaticKey::parse(&short),
            Err(KeyFileError::WrongLength { digits: 506 })
        );
        let long = good.replace(END_MARKER, &format!("ab\n{END_MARKER}"));
        assert_eq!(
            StaticKey::parse(&long),
            Err(KeyFileError::WrongLength { digits: 514 })
        );
        let odd = good.replace(END_MARKER, &format!("a\n{END_MARKER}"));
        assert!(matches!(
            StaticKey::parse(&odd),
            Err(KeyFileError::WrongLength { digits: 513 })
        ));
    }

    #[test]
    fn key_file_whitespace_and_comments() {
        let hex: String = key().0.iter().map(|b| format!("{b:02X}")).collect();
        let (a, b) = hex.split_at(100);
        let text = format!(
            "junk before\r\n  {BEGIN_MARKER}  \r\n{a} \t\r\n\n {b}\r\n{END_MARKER}\r\ntrailing ! junk"
        );
        assert_eq!(StaticKey::parse(&text), Ok(key()));
    }

    #[test]
    fn digest_names() {
        assert_eq!(AuthDigest::from_name("sha256"), Some(AuthDigest::Sha256));
        assert_eq!(AuthDigest::from_name("SHA1"), Some(AuthDigest::Sha1));
        assert_eq!(
            AuthDigest::from_name("Sha512").map(AuthDigest::len),
            Some(64)
        );
        assert_eq!(AuthDigest::from_name("MD5"), None);
    }

    #[test]
    fn roundtrips_all_wraps() {
        let k = key();
        let r = ReplayId { id: 5, time: 99 };
        // (sender, receiver, whether the sender's own keys verify its packets)
        let mut pairs = vec![
            (ControlWrap::None, ControlWrap::None, true),
            (
                ControlWrap::tls_crypt(&k, Side::Client),
                ControlWrap::tls_crypt(&k, Side::Server),
                false,
            ),
        ];
        for d in [
            AuthDigest::Sha1,
            AuthDigest::Sha256,
            AuthDigest::Sha384,
            AuthDigest::Sha512,
        ] {
            pairs.push((
                ControlWrap::tls_auth(&k, KeyDirection::Inverse, d),
                ControlWrap::tls_auth(&k, KeyDirection::Normal, d),
                false,
            ));
            pairs.push((
                ControlWrap::tls_auth(&k, KeyDirection::Bidirectional, d),
                ControlWrap::tls_auth(&k, KeyDirection::Bidirectional, d),
                true,
            ));
        }
        let p = pkt();
        let mut plain = Vec::new();
        p.emit(&mut plain);
        for (tx, rx, symmetric) in &pairs {
            let mut w = vec![0xEE]; // wrap appends: existing bytes must be kept
            tx.wrap(&p, r, &mut w);
            assert_eq!(w[0], 0xEE);
            let w = &w[1..];
            assert_eq!(w.len(), plain.len() + tx.overhead(), "{tx:?}");
            let want_replay = (!rx.is_none()).then_some(r);
            assert_eq!(rx.unwrap(w), Ok((p.clone(), want_replay)), "{tx:?}");
            if !symmetric {
                assert_eq!(tx.unwrap(w), Err(WireError::AuthFailed), "{tx:?}");
            }
        }
    }

    #[test]
    fn ctr_carries_over_128_bits() {
        let c = CryptDir::new(&key(), 0);
        // Low 64 bits all ones: the second block must use a counter with a carry into the high half.
        let iv = [
            0, 0, 0, 0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ];
        let mut two = [0u8; 32];
        c.ctr(&iv, &mut two);
        let next = [0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut one = [0u8; 16];
        c.ctr(&next, &mut one);
        assert_eq!(two[16..], one);
        // And the whole 128-bit counter wraps to zero.
        let mut two = [0u8; 32];
        c.ctr(&[0xff; 16], &mut two);
        let mut one = [0u8; 16];
        c.ctr(&[0; 16], &mut one);
        assert_eq!(two[16..], one);
    }

    #[test]
    fn short_and_data_packets_rejected() {
        let k = key();
        let w = ControlWrap::tls_crypt(&k, Side::Server);
        assert!(matches!(
            w.unwrap(&[0x38; 48]),
            Err(WireError::Truncated { need: 49, .. })
        ));
        assert!(matches!(
            w.unwrap(&[0x48; 60]),
            Err(WireError::NotControl(Opcode::DataV2))
        ));
        let a = ControlWrap::tls_auth(&k, KeyDirection::Normal, AuthDigest::Sha1);
        assert!(matches!(
            a.unwrap(&[0x38; 36]),
            Err(WireError::Truncated { need: 37, .. })
        ));
        // Exactly the fixed part: authenticates nothing and fails, never panics.
        assert_eq!(a.unwrap(&[0x38; 37]), Err(WireError::AuthFailed));
        assert_eq!(w.unwrap(&[0x38; 49]), Err(WireError::AuthFailed));
    }
}
