//! tls-crypt-v2 (docs/protocol.md §4.3): client-specific tls-crypt keys.
//!
//! Every client holds its own tls-crypt key `Kc` and `WKc`, the same key
//! (and metadata) encrypted and authenticated with the server key. The
//! client appends `WKc` in clear to its HARD_RESET_CLIENT_V3 and, when the
//! server asks for it (early negotiation, §2.8), to its first CONTROL_WKC_V1;
//! the server recovers `Kc` from it, so it keeps no per-client key and, with
//! the stateless handshake, no state at all before the client proved it
//! holds `Kc` ([`ServerKey::open`]).
//!
//! Construction (OpenVPN's doc/tls-crypt-v2.txt), with `Ke`/`Ka` the server
//! key's AES-256-CTR and HMAC-SHA256 keys and `len` the length of `WKc`:
//! `T = HMAC(Ka, len || Kc || metadata)`,
//! `WKc = T || AES-256-CTR(Ke, IV = T[..16], Kc || metadata) || len`.

use std::fmt;

use aws_lc_rs::cipher::{AES_256, EncryptingKey, EncryptionContext, UnboundCipherKey};
use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use thiserror::Error;

use crate::wire::{ControlPacket, Opcode, WireError, parse_prefix};
use crate::wrap::{ControlWrap, ReplayId, STATIC_KEY_LEN, StaticKey, TLS_CRYPT_TAG_LEN};

/// Largest `WKc` 2.6 makes or takes.
pub const MAX_WKC_LEN: usize = 1024;
/// Size of the server key: one key set (64-byte cipher slot, 64-byte HMAC slot).
pub const SERVER_KEY_LEN: usize = 128;
/// Bytes of the trailing length field of `WKc`.
const WKC_LEN_FIELD: usize = 2;
/// Shortest `WKc`: tag, `Kc` and the length field (no metadata).
pub const MIN_WKC_LEN: usize = TLS_CRYPT_TAG_LEN + STATIC_KEY_LEN + WKC_LEN_FIELD;
/// Largest metadata, type byte included (`MAX_WKC_LEN` minus the fixed parts).
pub const MAX_METADATA_LEN: usize = MAX_WKC_LEN - MIN_WKC_LEN;

const SERVER_PEM_LABEL: &str = "OpenVPN tls-crypt-v2 server key";
const CLIENT_PEM_LABEL: &str = "OpenVPN tls-crypt-v2 client key";

/// Errors from reading a tls-crypt-v2 key file.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyFileError {
    /// No PEM block with the expected label (or the PEM is malformed).
    #[error("no '-----BEGIN {label}-----' block found: {why}")]
    NoBlock { label: &'static str, why: String },
    /// The server key does not hold exactly 128 bytes.
    #[error("tls-crypt-v2 server key has {0} bytes, expected {SERVER_KEY_LEN}")]
    ServerKeyLength(usize),
    /// The client key is too short to hold `Kc` and a `WKc`.
    #[error(
        "tls-crypt-v2 client key has {0} bytes, expected at least {min} (Kc and wrapped key)",
        min = STATIC_KEY_LEN + MIN_WKC_LEN
    )]
    ClientKeyTooShort(usize),
    /// The wrapped key part of a client key is not well-formed.
    #[error("tls-crypt-v2 client key: {0}")]
    BadWrappedKey(WkcError),
}

/// Why a wrapped client key was refused.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum WkcError {
    /// Longer than [`MAX_WKC_LEN`].
    #[error("wrapped client key of {0} bytes, at most {MAX_WKC_LEN} allowed")]
    TooLong(usize),
    /// Too short for tag, `Kc` and length, or the packet too short to hold it.
    #[error("wrapped client key truncated ({0} bytes)")]
    Truncated(usize),
    /// The trailing length field disagrees with the bytes there are.
    #[error("wrapped client key length field says {field}, it has {actual} bytes")]
    LengthMismatch { field: usize, actual: usize },
    /// The tag did not verify: not made with this server key, or altered.
    #[error("wrapped client key authentication failed (made for another server key?)")]
    AuthFailed,
    /// Metadata longer than [`MAX_METADATA_LEN`].
    #[error("metadata of {0} bytes, at most {MAX_METADATA_LEN} allowed")]
    MetadataTooLong(usize),
}

/// Metadata wrapped with a client key: a type byte and its data.
#[derive(Clone, PartialEq, Eq)]
pub struct Metadata(Vec<u8>);

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Metadata(type {:?}, {} bytes)",
            self.kind(),
            self.0.len()
        )
    }
}

impl Metadata {
    /// Type `USER` (0x00): free-form data given at key generation.
    pub const USER: u8 = 0x00;
    /// Type `TIMESTAMP` (0x01): 64-bit big-endian Unix time of key generation,
    /// 2.6's default when no metadata is given.
    pub const TIMESTAMP: u8 = 0x01;

    pub fn user(data: &[u8]) -> Self {
        let mut m = Vec::with_capacity(1 + data.len());
        m.push(Self::USER);
        m.extend_from_slice(data);
        Metadata(m)
    }

    pub fn timestamp(unix: u64) -> Self {
        let mut m = vec![Self::TIMESTAMP];
        m.extend_from_slice(&unix.to_be_bytes());
        Metadata(m)
    }

    /// The type byte; `None` for empty metadata (which 2.6 can unwrap but
    /// never makes).
    pub fn kind(&self) -> Option<u8> {
        self.0.first().copied()
    }

    /// The data after the type byte.
    pub fn data(&self) -> &[u8] {
        self.0.get(1..).unwrap_or_default()
    }

    /// The key's generation time, for `TIMESTAMP` metadata of the right size.
    pub fn timestamp_value(&self) -> Option<u64> {
        match (self.kind(), <[u8; 8]>::try_from(self.data())) {
            (Some(Self::TIMESTAMP), Ok(b)) => Some(u64::from_be_bytes(b)),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The server key, expanded: AES-256-CTR key `Ke` (first 32 bytes of the
/// cipher slot) and HMAC-SHA256 key `Ka` (first 32 bytes of the HMAC slot).
pub struct ServerKey {
    enc: EncryptingKey,
    mac: hmac::Key,
}

impl fmt::Debug for ServerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerKey(..)")
    }
}

impl ServerKey {
    pub fn from_bytes(bytes: &[u8; SERVER_KEY_LEN]) -> Self {
        let enc = UnboundCipherKey::new(&AES_256, &bytes[..32])
            .and_then(EncryptingKey::ctr)
            // A 32-byte slice is always a valid AES-256 key; failure would be a library bug.
            .expect("AES-256-CTR key setup failed");
        ServerKey {
            enc,
            mac: hmac::Key::new(hmac::HMAC_SHA256, &bytes[64..96]),
        }
    }

    /// Parse the text of a server key file (or an inline `<tls-crypt-v2>` block).
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let mut bytes = zeroize::Zeroizing::new(pem_block(text, SERVER_PEM_LABEL)?);
        let Ok(arr) = <&[u8; SERVER_KEY_LEN]>::try_from(bytes.as_slice()) else {
            return Err(KeyFileError::ServerKeyLength(bytes.len()));
        };
        let key = Self::from_bytes(arr);
        zeroize::Zeroize::zeroize(&mut *bytes);
        Ok(key)
    }

    /// A fresh random server key as file text, like
    /// `openvpn --genkey tls-crypt-v2-server`.
    pub fn generate_file_text() -> String {
        let mut bytes = zeroize::Zeroizing::new([0u8; SERVER_KEY_LEN]);
        crate::random::fill(&mut *bytes);
        pem_text(SERVER_PEM_LABEL, &*bytes)
    }

    /// AES-256-CTR under `Ke`, in place (its own inverse).
    fn ctr(&self, iv: &[u8], data: &mut [u8]) {
        let mut block = [0u8; 16];
        block.copy_from_slice(&iv[..16]);
        // Only fails for a context of the wrong kind, which cannot happen here.
        let _ = self
            .enc
            .less_safe_encrypt(data, EncryptionContext::Iv128(FixedLength::from(block)));
    }

    fn tag(&self, len_field: [u8; 2], plain: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(&len_field);
        ctx.update(plain);
        ctx.sign()
    }

    /// `WKc` for client key `kc` with `metadata`.
    pub fn wrap_client_key(
        &self,
        kc: &StaticKey,
        metadata: &Metadata,
    ) -> Result<Vec<u8>, WkcError> {
        let m = metadata.as_bytes();
        if m.len() > MAX_METADATA_LEN {
            return Err(WkcError::MetadataTooLong(m.len()));
        }
        let total = MIN_WKC_LEN + m.len();
        let len_field = (total as u16).to_be_bytes();
        let mut wkc = Vec::with_capacity(total);
        wkc.extend_from_slice(&[0; TLS_CRYPT_TAG_LEN]);
        wkc.extend_from_slice(kc.as_bytes());
        wkc.extend_from_slice(m);
        let tag = self.tag(len_field, &wkc[TLS_CRYPT_TAG_LEN..]);
        wkc[..TLS_CRYPT_TAG_LEN].copy_from_slice(tag.as_ref());
        let (tag, body) = wkc.split_at_mut(TLS_CRYPT_TAG_LEN);
        self.ctr(tag, body);
        wkc.extend_from_slice(&len_field);
        Ok(wkc)
    }

    /// Authenticate and decrypt `WKc`: the client key and its metadata.
    pub fn unwrap_client_key(&self, wkc: &[u8]) -> Result<(StaticKey, Metadata), WkcError> {
        check_wkc_framing(wkc)?;
        let (rest, len_field) = wkc.split_at(wkc.len() - WKC_LEN_FIELD);
        let (tag, ciphertext) = rest.split_at(TLS_CRYPT_TAG_LEN);
        let mut plain = zeroize::Zeroizing::new(ciphertext.to_vec());
        self.ctr(tag, &mut plain);
        let expected = self.tag([len_field[0], len_field[1]], &plain);
        verify_slices_are_equal(expected.as_ref(), tag).map_err(|_| WkcError::AuthFailed)?;
        let (kc, metadata) = plain.split_at(STATIC_KEY_LEN);
        let mut key = [0u8; STATIC_KEY_LEN];
        key.copy_from_slice(kc);
        let kc = StaticKey::from_bytes(key);
        zeroize::Zeroize::zeroize(&mut key);
        Ok((kc, Metadata(metadata.to_vec())))
    }

    /// Server, a client's HARD_RESET_CLIENT_V3 or CONTROL_WKC_V1 that no
    /// session claims: split off `WKc`, unwrap it, then authenticate and
    /// decrypt the packet with the client key found. Everything is checked
    /// before anything is kept; the returned wrap is the client's for its
    /// session.
    pub fn open(&self, wire: &[u8]) -> Result<Opened, OpenError> {
        let (opcode, _, _) = parse_prefix(wire)?;
        if !carries_wkc(opcode) {
            return Err(OpenError::NoWrappedKey(opcode));
        }
        let (_, wkc) = split_wkc(wire)?;
        let (kc, metadata) = self.unwrap_client_key(wkc)?;
        let wrap = ControlWrap::tls_crypt_v2_server(&kc);
        // The client's wrap splits WKc off again and reads the packet.
        let (pkt, replay) = wrap.unwrap(wire)?;
        Ok(Opened {
            pkt,
            // A tls-crypt wrap always yields the replay id.
            replay: replay.unwrap_or(ReplayId { id: 0, time: 0 }),
            wrap,
            metadata,
        })
    }
}

/// A client packet opened by [`ServerKey::open`].
#[derive(Debug)]
pub struct Opened {
    pub pkt: ControlPacket,
    pub replay: ReplayId,
    /// tls-crypt with the client's key, for its session.
    pub wrap: ControlWrap,
    pub metadata: Metadata,
}

/// Why [`ServerKey::open`] refused a packet.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// Only HARD_RESET_CLIENT_V3 and CONTROL_WKC_V1 carry `WKc`.
    #[error("{0:?} does not carry a wrapped client key")]
    NoWrappedKey(Opcode),
    #[error(transparent)]
    Wkc(#[from] WkcError),
    #[error(transparent)]
    Wire(#[from] WireError),
}

/// Whether packets with `opcode` carry `WKc` after the wrapped packet.
pub fn carries_wkc(opcode: Opcode) -> bool {
    matches!(opcode, Opcode::HardResetClientV3 | Opcode::ControlWkcV1)
}

/// Size, length field and bounds of `WKc`, checked before any crypto.
fn check_wkc_framing(wkc: &[u8]) -> Result<(), WkcError> {
    if wkc.len() > MAX_WKC_LEN {
        return Err(WkcError::TooLong(wkc.len()));
    }
    if wkc.len() < MIN_WKC_LEN {
        return Err(WkcError::Truncated(wkc.len()));
    }
    let n = wkc.len();
    let field = usize::from(u16::from_be_bytes([wkc[n - 2], wkc[n - 1]]));
    if field != n {
        return Err(WkcError::LengthMismatch { field, actual: n });
    }
    Ok(())
}

/// Split a HARD_RESET_CLIENT_V3 / CONTROL_WKC_V1 into the tls-crypt-wrapped
/// packet and the `WKc` after it, located by `WKc`'s trailing length field.
/// The packet part keeps at least its header byte.
pub fn split_wkc(wire: &[u8]) -> Result<(&[u8], &[u8]), WkcError> {
    let n = wire.len();
    if n < 1 + WKC_LEN_FIELD {
        return Err(WkcError::Truncated(n));
    }
    let len = usize::from(u16::from_be_bytes([wire[n - 2], wire[n - 1]]));
    if len > MAX_WKC_LEN {
        return Err(WkcError::TooLong(len));
    }
    if len < MIN_WKC_LEN || len >= n {
        return Err(WkcError::Truncated(len));
    }
    Ok(wire.split_at(n - len))
}

/// A client's tls-crypt-v2 key file: `Kc` and `WKc`.
pub struct ClientKey {
    pub key: StaticKey,
    pub wkc: Vec<u8>,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey(wkc {} bytes)", self.wkc.len())
    }
}

impl ClientKey {
    /// Parse the text of a client key file (or an inline `<tls-crypt-v2>`
    /// block). `WKc` is opaque to the client; its size and length field are
    /// checked here because a server would refuse it anyway.
    pub fn parse(text: &str) -> Result<Self, KeyFileError> {
        let bytes = zeroize::Zeroizing::new(pem_block(text, CLIENT_PEM_LABEL)?);
        if bytes.len() < STATIC_KEY_LEN + MIN_WKC_LEN {
            return Err(KeyFileError::ClientKeyTooShort(bytes.len()));
        }
        let (kc, wkc) = bytes.split_at(STATIC_KEY_LEN);
        check_wkc_framing(wkc).map_err(KeyFileError::BadWrappedKey)?;
        let mut k = [0u8; STATIC_KEY_LEN];
        k.copy_from_slice(kc);
        let key = StaticKey::from_bytes(k);
        zeroize::Zeroize::zeroize(&mut k);
        Ok(ClientKey {
            key,
            wkc: wkc.to_vec(),
        })
    }

    /// A fresh client key wrapped by `server`, like
    /// `openvpn --tls-crypt-v2 SERVER --genkey tls-crypt-v2-client`.
    pub fn generate(server: &ServerKey, metadata: &Metadata) -> Result<Self, WkcError> {
        let key = StaticKey::generate();
        let wkc = server.wrap_client_key(&key, metadata)?;
        Ok(ClientKey { key, wkc })
    }

    /// The file text: `Kc || WKc` as PEM.
    pub fn to_file_text(&self) -> String {
        let mut bytes =
            zeroize::Zeroizing::new(Vec::with_capacity(STATIC_KEY_LEN + self.wkc.len()));
        bytes.extend_from_slice(self.key.as_bytes());
        bytes.extend_from_slice(&self.wkc);
        pem_text(CLIENT_PEM_LABEL, &bytes)
    }
}

/// The contents of the first PEM block labelled `label` in `text`.
fn pem_block(text: &str, label: &'static str) -> Result<Vec<u8>, KeyFileError> {
    let no_block = |why: String| KeyFileError::NoBlock { label, why };
    let blocks = pem::parse_many(text).map_err(|e| no_block(e.to_string()))?;
    let mut found = blocks.into_iter().filter(|b| b.tag() == label);
    match found.next() {
        Some(b) => Ok(b.into_contents()),
        None => Err(no_block("not in the text".into())),
    }
}

/// PEM with 64-character lines, as OpenSSL writes it for 2.6.
fn pem_text(label: &str, contents: &[u8]) -> String {
    let block = pem::Pem::new(label, contents);
    pem::encode_config(
        &block,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Side;
    use crate::wire::SessionId;

    fn server() -> ServerKey {
        let mut b = [0u8; SERVER_KEY_LEN];
        for (i, x) in b.iter_mut().enumerate() {
            *x = i as u8;
        }
        ServerKey::from_bytes(&b)
    }

    #[test]
    fn roundtrip_and_file_text() {
        let srv = server();
        let ck = ClientKey::generate(&srv, &Metadata::user(b"serial 42")).unwrap();
        let text = ck.to_file_text();
        assert!(text.starts_with("-----BEGIN OpenVPN tls-crypt-v2 client key-----\n"));
        assert!(
            text.lines()
                .all(|l| l.len() <= 64 || l.starts_with("-----"))
        );
        let back = ClientKey::parse(&format!("# comment\n{text}trailing\n")).unwrap();
        assert_eq!(back.key, ck.key);
        assert_eq!(back.wkc, ck.wkc);
        let (kc, meta) = srv.unwrap_client_key(&back.wkc).unwrap();
        assert_eq!(kc, ck.key);
        assert_eq!(meta, Metadata::user(b"serial 42"));
        let srv_text = ServerKey::generate_file_text();
        assert!(ServerKey::parse(&srv_text).is_ok());
        // A server key is not a client key and the reverse.
        assert!(matches!(
            ClientKey::parse(&srv_text),
            Err(KeyFileError::NoBlock { .. })
        ));
        assert!(matches!(
            ServerKey::parse(&text),
            Err(KeyFileError::NoBlock { .. })
        ));
    }

    #[test]
    fn wkc_errors() {
        let srv = server();
        let ck = ClientKey::generate(&srv, &Metadata::timestamp(1)).unwrap();
        let mut bad = ck.wkc.clone();
        bad[40] ^= 1;
        assert_eq!(
            srv.unwrap_client_key(&bad).unwrap_err(),
            WkcError::AuthFailed
        );
        let other = ServerKey::from_bytes(&[9; SERVER_KEY_LEN]);
        assert_eq!(
            other.unwrap_client_key(&ck.wkc).unwrap_err(),
            WkcError::AuthFailed
        );
        assert_eq!(
            srv.unwrap_client_key(&ck.wkc[1..]).unwrap_err(),
            WkcError::LengthMismatch {
                field: ck.wkc.len(),
                actual: ck.wkc.len() - 1
            }
        );
        assert_eq!(
            srv.unwrap_client_key(&[0; 10]).unwrap_err(),
            WkcError::Truncated(10)
        );
        assert_eq!(
            srv.unwrap_client_key(&[0; 1025]).unwrap_err(),
            WkcError::TooLong(1025)
        );
        let longest = Metadata::user(&[7; MAX_METADATA_LEN - 1]);
        let wkc = srv.wrap_client_key(&ck.key, &longest).unwrap();
        assert_eq!(wkc.len(), MAX_WKC_LEN);
        assert_eq!(srv.unwrap_client_key(&wkc).unwrap().1, longest);
        assert_eq!(
            srv.wrap_client_key(&ck.key, &Metadata::user(&[7; MAX_METADATA_LEN]))
                .unwrap_err(),
            WkcError::MetadataTooLong(MAX_METADATA_LEN + 1)
        );
    }

    #[test]
    fn split_wkc_bounds() {
        assert_eq!(split_wkc(&[]).unwrap_err(), WkcError::Truncated(0));
        assert_eq!(
            split_wkc(&[0x50, 0, 5]).unwrap_err(),
            WkcError::Truncated(5)
        );
        assert_eq!(
            split_wkc(&[0x50, 4, 1]).unwrap_err(),
            WkcError::TooLong(1025)
        );
        let mut w = vec![0x50; 400];
        w[398..].copy_from_slice(&400u16.to_be_bytes());
        // WKc may not swallow the whole packet.
        assert_eq!(split_wkc(&w).unwrap_err(), WkcError::Truncated(400));
        w[398..].copy_from_slice(&399u16.to_be_bytes());
        let (p, k) = split_wkc(&w).unwrap();
        assert_eq!((p.len(), k.len()), (1, 399));
    }

    #[test]
    fn open_authenticates_wkc_then_packet() {
        let srv = server();
        let ck = ClientKey::generate(&srv, &Metadata::timestamp(5)).unwrap();
        let client = ControlWrap::tls_crypt_v2_client(&ck);
        let reset = ControlPacket {
            opcode: Opcode::HardResetClientV3,
            key_id: 0,
            session_id: SessionId([3; 8]),
            acks: vec![],
            remote_session_id: None,
            message_id: Some(0),
            payload: vec![],
        };
        let replay = ReplayId {
            id: crate::wire::EARLY_NEG_START + 1,
            time: 77,
        };
        let mut wire = Vec::new();
        client.wrap(&reset, replay, &mut wire);
        assert!(wire.ends_with(&ck.wkc));
        let opened = srv.open(&wire).unwrap();
        assert_eq!(opened.pkt, reset);
        assert_eq!(opened.replay, replay);
        assert_eq!(opened.metadata.timestamp_value(), Some(5));
        // The server's wrap talks to the client.
        let answer = ControlPacket {
            opcode: Opcode::HardResetServerV2,
            ..reset.clone()
        };
        let mut wire_answer = Vec::new();
        opened.wrap.wrap(&answer, replay, &mut wire_answer);
        assert_eq!(client.unwrap(&wire_answer), Ok((answer, Some(replay))));
        // Another server key, a flipped packet byte, a foreign Kc: refused.
        let other = ServerKey::from_bytes(&[9; SERVER_KEY_LEN]);
        assert_eq!(
            other.open(&wire).unwrap_err(),
            OpenError::Wkc(WkcError::AuthFailed)
        );
        let mut flipped = wire.clone();
        flipped[20] ^= 1;
        assert_eq!(
            srv.open(&flipped).unwrap_err(),
            OpenError::Wire(WireError::AuthFailed)
        );
        let stolen_wkc = ClientKey {
            key: StaticKey::generate(),
            wkc: ck.wkc.clone(),
        };
        let mut forged = Vec::new();
        ControlWrap::tls_crypt_v2_client(&stolen_wkc).wrap(&reset, replay, &mut forged);
        assert_eq!(
            srv.open(&forged).unwrap_err(),
            OpenError::Wire(WireError::AuthFailed)
        );
        // Only the two opcodes that carry WKc.
        let v1 = ControlWrap::tls_crypt(&ck.key, Side::Client);
        let mut plain = Vec::new();
        v1.wrap(
            &ControlPacket {
                opcode: Opcode::HardResetClientV2,
                ..reset
            },
            replay,
            &mut plain,
        );
        assert_eq!(
            srv.open(&plain).unwrap_err(),
            OpenError::NoWrappedKey(Opcode::HardResetClientV2)
        );
    }

    #[test]
    fn metadata_accessors() {
        assert_eq!(
            Metadata::timestamp(0x0102).as_bytes(),
            &[1, 0, 0, 0, 0, 0, 0, 1, 2]
        );
        assert_eq!(Metadata::user(b"x").timestamp_value(), None);
        assert_eq!(Metadata(Vec::new()).kind(), None);
        assert_eq!(Metadata(Vec::new()).data(), b"");
    }
}
