//! Data-channel crypto (docs/protocol.md §7.1, §8): the ciphers, the 256-byte key
//! block and its slicing, and in-place AEAD seal/open of P_DATA_V2 / P_DATA_V1
//! packets. Pure code over caller-owned buffers: no allocation per packet.
//!
//! Layout of a P_DATA_V2 packet: `hdr(4) | packet_id(4) | tag(16) | ciphertext`.
//! AAD = bytes 0..8; nonce = packet_id(4) || implicit_iv(8).
//! P_DATA_V1: `op(1) | packet_id(4) | tag(16) | ciphertext`, AAD = packet_id only.
//!
//! The CBC ciphers (with an `auth` HMAC) have their own layout, in [`crate::cbc`];
//! [`SealingKey::seal_at`] and [`OpeningKey::open`] handle both kinds.
//!
//! The AEADs run on aws-lc (aws-lc-rs) or ring, whichever is faster for the
//! cipher on this CPU ([`AeadBackend::for_cipher`]); both compute the same
//! standard algorithms, so the bytes on the wire do not depend on the choice.

use aws_lc_rs::aead as aws_lc;
use thiserror::Error;

use crate::cbc::{self, CbcOpener, CbcSealer};
use crate::wire::{DATA_V1_OVERHEAD, DATA_V2_HEADER_LEN, DATA_V2_OVERHEAD, Opcode};
use crate::wrap::AuthDigest;

/// The 16-byte keepalive ping payload (§10.1).
pub const PING_PAYLOAD: [u8; 16] = [
    0x2a, 0x18, 0x7b, 0xf3, 0x64, 0x1e, 0xb4, 0xcb, 0x07, 0xed, 0x2d, 0x0a, 0x98, 0x1f, 0xc7, 0x48,
];
/// The 16-byte OCC message prefix (§10.2); the type byte follows.
pub const OCC_MAGIC: [u8; 16] = [
    0x28, 0x7f, 0x34, 0x6b, 0xd4, 0xef, 0x7a, 0x81, 0x2d, 0x56, 0xb8, 0xd3, 0xaf, 0xc5, 0x45, 0x9c,
];
/// OCC type byte of an exit notification.
pub const OCC_EXIT: u8 = 6;
/// AEAD tag length for every supported cipher.
pub const TAG_LEN: usize = 16;
/// Length of the implicit IV taken from the key block (12-byte nonce minus the packet id).
pub const IMPLICIT_IV_LEN: usize = 8;
/// 2.6 starts a renegotiation once the send counter reaches this value (§8.5).
pub const PACKET_ID_RENEGOTIATE: u32 = 0xFF00_0000;

/// Data-channel ciphers we implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    ChaCha20Poly1305,
    /// Non-AEAD: AES-CBC with the `auth` HMAC ([`crate::cbc`]).
    Aes128Cbc,
    Aes192Cbc,
    Aes256Cbc,
}

/// Bytes in front of the payload the largest data-packet header needs: a
/// P_DATA_V2 header with a CBC SHA512 HMAC, IV and packet id.
pub const MAX_HEAD_ROOM: usize = 4 + cbc::MAX_HMAC_LEN + cbc::BLOCK_LEN + cbc::PACKET_ID_LEN;
/// Bytes behind the payload sealing may write (CBC padding).
pub const MAX_TAIL_ROOM: usize = cbc::MAX_PADDING;

/// Why a data packet could not be sealed or opened.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DataError {
    /// The packet is shorter than the header, packet id and tag of its format.
    #[error("data packet truncated")]
    Truncated,
    /// The tag did not verify: wrong key, corrupted or forged packet.
    #[error("data packet failed authentication")]
    AuthFailed,
    /// The caller's buffer cannot hold the header room or the plaintext.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// The send counter would have to wrap; a new key must take over (§8.5).
    #[error("packet id space exhausted")]
    PacketIdExhausted,
    /// The packet carries no payload after the tag; 2.6 rejects these too.
    #[error("missing payload")]
    MissingPayload,
    /// Byte 0 does not hold P_DATA_V1 or P_DATA_V2 (the raw 5-bit opcode is given).
    #[error("opcode {0} is not a data opcode")]
    NotData(u8),
    /// Packet id 0 is never valid on the data channel (§8.4).
    #[error("packet id 0 is invalid")]
    InvalidPacketId,
    /// A key given to [`SealingKey::new`] / [`OpeningKey::new`] has the wrong length for the cipher.
    #[error("key length {have} does not match cipher (need {need})")]
    BadKeyLength { need: usize, have: usize },
    /// key_id above 7 or peer_id above 24 bits: they would not fit the header.
    #[error("key id or peer id out of range")]
    HeaderFieldOutOfRange,
    /// The AEAD refused the operation for a reason other than authentication
    /// (e.g. too long input), or an authentic CBC packet had a bad length or padding.
    #[error("data-channel cipher operation failed")]
    Crypto,
    /// An AEAD-only operation was asked of a CBC key.
    #[error("operation needs an AEAD key")]
    NotAead,
}

/// Which end of the connection we are; decides which key-block slots we send with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Cipher {
    /// Every cipher, in the order 2.6 lists them in its default `data-ciphers`.
    pub const ALL: [Cipher; 3] = [
        Cipher::Aes256Gcm,
        Cipher::Aes128Gcm,
        Cipher::ChaCha20Poly1305,
    ];

    /// The non-AEAD ciphers, accepted only where listed in `data-ciphers`
    /// or given as `data-ciphers-fallback`.
    pub const CBC: [Cipher; 3] = [Cipher::Aes256Cbc, Cipher::Aes192Cbc, Cipher::Aes128Cbc];

    /// OpenSSL-style name as used in `data-ciphers` and `cipher` (upper case).
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes128Gcm => "AES-128-GCM",
            Cipher::Aes256Gcm => "AES-256-GCM",
            Cipher::ChaCha20Poly1305 => "CHACHA20-POLY1305",
            Cipher::Aes128Cbc => "AES-128-CBC",
            Cipher::Aes192Cbc => "AES-192-CBC",
            Cipher::Aes256Cbc => "AES-256-CBC",
        }
    }
    /// Case-insensitive lookup of an OpenSSL-style name (`aes-256-gcm`, `CHACHA20-POLY1305`, `AES-128-CBC`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .chain(Self::CBC)
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }
    /// Cipher key length in bytes (the prefix of the key-block cipher slot that is used).
    pub fn key_len(self) -> usize {
        match self {
            Cipher::Aes128Gcm | Cipher::Aes128Cbc => 16,
            Cipher::Aes192Cbc => 24,
            Cipher::Aes256Gcm | Cipher::ChaCha20Poly1305 | Cipher::Aes256Cbc => 32,
        }
    }

    /// Whether this is an AEAD cipher (no `auth` HMAC, no padding).
    pub fn is_aead(self) -> bool {
        self.aead_algorithm().is_some()
    }

    /// Bytes a data packet adds in front of its payload (header included)
    /// with this cipher and, for CBC, the `auth` digest.
    pub fn head_room(self, auth: AuthDigest, v1: bool) -> usize {
        match (self.is_aead(), v1) {
            (true, true) => DATA_V1_OVERHEAD,
            (true, false) => DATA_V2_OVERHEAD,
            (false, v1) => usize::from(if v1 { 1u8 } else { 4 }) + cbc::head_len(auth),
        }
    }

    fn aead_algorithm(self) -> Option<&'static aws_lc::Algorithm> {
        match self {
            Cipher::Aes128Gcm => Some(&aws_lc::AES_128_GCM),
            Cipher::Aes256Gcm => Some(&aws_lc::AES_256_GCM),
            Cipher::ChaCha20Poly1305 => Some(&aws_lc::CHACHA20_POLY1305),
            Cipher::Aes128Cbc | Cipher::Aes192Cbc | Cipher::Aes256Cbc => None,
        }
    }

    fn ring_algorithm(self) -> Option<&'static ring::aead::Algorithm> {
        match self {
            Cipher::Aes128Gcm => Some(&ring::aead::AES_128_GCM),
            Cipher::Aes256Gcm => Some(&ring::aead::AES_256_GCM),
            Cipher::ChaCha20Poly1305 => Some(&ring::aead::CHACHA20_POLY1305),
            Cipher::Aes128Cbc | Cipher::Aes192Cbc | Cipher::Aes256Cbc => None,
        }
    }
}

impl std::fmt::Display for Cipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The 256-byte key block (§7.1), from TLS-EKM or the legacy PRF.
#[derive(Clone)]
pub struct KeyBlock(pub [u8; 256]);

impl Drop for KeyBlock {
    // Key material must not outlive the block in freed memory.
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for KeyBlock {
    // Key material must not end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyBlock(..)")
    }
}

/// Key-block offsets of one direction's cipher slot and implicit-IV slot (§7.1).
const C2S_KEY: usize = 0;
const C2S_IV: usize = 64;
const S2C_KEY: usize = 128;
const S2C_IV: usize = 192;

/// The library that runs an AEAD data-channel key. Both compute the same
/// standard AEADs (byte-identical output, checked by the tests and the
/// known-answer vectors); they differ only in speed, by CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AeadBackend {
    /// aws-lc through aws-lc-rs: the fastest AES-GCM where it has its
    /// AVX-512 (VAES) code, and ChaCha20-Poly1305.
    AwsLc,
    /// ring: its AES-GCM has a VAES + AVX2 path that aws-lc 0.47 lacks
    /// (AMD Zen 3, Intel client parts), and less set-up per call.
    Ring,
}

impl AeadBackend {
    /// Both libraries, for tests and benchmarks that compare them.
    pub const ALL: [AeadBackend; 2] = [AeadBackend::AwsLc, AeadBackend::Ring];

    /// The library used for `cipher` on this CPU: ring for AES-GCM where the
    /// CPU has VAES and VPCLMULQDQ with AVX2 but not the AVX-512 set aws-lc
    /// needs for its own VAES code, aws-lc everywhere else (measured in
    /// docs/architecture.md, "The data channel's AEAD: aws-lc or ring, chosen by CPU"; where ring was not
    /// measured to win, the choice stays aws-lc).
    pub fn for_cipher(cipher: Cipher) -> Self {
        match cipher {
            Cipher::Aes128Gcm | Cipher::Aes256Gcm if ring_aes_gcm_is_faster() => AeadBackend::Ring,
            _ => AeadBackend::AwsLc,
        }
    }
}

/// VAES and VPCLMULQDQ with AVX2 (ring's fast AES-GCM) but not the AVX-512
/// features aws-lc requires before it uses its own VAES code
/// (`crypto_gcm_avx512_enabled`: F, DQ, IFMA, BW, VL).
#[cfg(target_arch = "x86_64")]
fn ring_aes_gcm_is_faster() -> bool {
    use std::arch::is_x86_feature_detected as has;
    let ring_vaes = has!("vaes") && has!("vpclmulqdq") && has!("avx2");
    let aws_lc_vaes = has!("vaes")
        && has!("vpclmulqdq")
        && has!("avx512f")
        && has!("avx512dq")
        && has!("avx512ifma")
        && has!("avx512bw")
        && has!("avx512vl");
    ring_vaes && !aws_lc_vaes
}

#[cfg(not(target_arch = "x86_64"))]
fn ring_aes_gcm_is_faster() -> bool {
    false
}

/// Copy an AEAD tag into the packet's tag room; both are [`TAG_LEN`] bytes
/// for every supported cipher.
fn copy_tag(tag: &[u8], tag_out: &mut [u8]) -> Result<(), DataError> {
    if tag.len() != TAG_LEN || tag_out.len() != TAG_LEN {
        return Err(DataError::Crypto);
    }
    tag_out.copy_from_slice(tag);
    Ok(())
}

/// One direction's AEAD key, on the library chosen for it.
enum AeadImpl {
    AwsLc(aws_lc::LessSafeKey),
    // Boxed: ring keeps its key schedule and GHASH table inline (544 bytes);
    // aws-lc-rs's key is already a pointer to its context.
    Ring(Box<ring::aead::LessSafeKey>),
}

/// AEAD key plus implicit IV; shared by both halves so they cannot drift apart.
struct AeadKey {
    key: AeadImpl,
    implicit_iv: [u8; IMPLICIT_IV_LEN],
}

impl AeadKey {
    fn new(
        cipher: Cipher,
        key: &[u8],
        implicit_iv: [u8; IMPLICIT_IV_LEN],
        backend: AeadBackend,
    ) -> Result<Self, DataError> {
        if key.len() != cipher.key_len() {
            return Err(DataError::BadKeyLength {
                need: cipher.key_len(),
                have: key.len(),
            });
        }
        let key = match backend {
            AeadBackend::AwsLc => {
                let algorithm = cipher.aead_algorithm().ok_or(DataError::Crypto)?;
                let unbound =
                    aws_lc::UnboundKey::new(algorithm, key).map_err(|_| DataError::Crypto)?;
                AeadImpl::AwsLc(aws_lc::LessSafeKey::new(unbound))
            }
            AeadBackend::Ring => {
                let algorithm = cipher.ring_algorithm().ok_or(DataError::Crypto)?;
                let unbound =
                    ring::aead::UnboundKey::new(algorithm, key).map_err(|_| DataError::Crypto)?;
                AeadImpl::Ring(Box::new(ring::aead::LessSafeKey::new(unbound)))
            }
        };
        Ok(AeadKey { key, implicit_iv })
    }

    /// Slots are fixed offsets into a 256-byte array and every key length fits
    /// in a 64-byte slot, so this cannot fail for a valid `Cipher`.
    fn from_block(cipher: Cipher, block: &KeyBlock, key_at: usize, iv_at: usize) -> Self {
        let key = &block.0[key_at..key_at + cipher.key_len()];
        let mut iv = [0u8; IMPLICIT_IV_LEN];
        iv.copy_from_slice(&block.0[iv_at..iv_at + IMPLICIT_IV_LEN]);
        // Only a key-length mismatch or an allocation failure inside aws-lc can
        // make this fail; the length is right by construction.
        Self::new(cipher, key, iv, AeadBackend::for_cipher(cipher))
            .expect("key-block slot has the cipher's key length")
    }

    fn backend(&self) -> AeadBackend {
        match self.key {
            AeadImpl::AwsLc(_) => AeadBackend::AwsLc,
            AeadImpl::Ring(_) => AeadBackend::Ring,
        }
    }

    /// packet_id(4) || implicit_iv(8).
    fn nonce(&self, packet_id: [u8; 4]) -> [u8; aws_lc::NONCE_LEN] {
        let mut n = [0u8; aws_lc::NONCE_LEN];
        n[..4].copy_from_slice(&packet_id);
        n[4..].copy_from_slice(&self.implicit_iv);
        n
    }

    /// Encrypt `body` in place and write the tag to `tag_out`.
    ///
    /// The tag goes straight from the library's value into the packet:
    /// returning it as an array through a `Result` first cost about 30 ns
    /// per packet in stalled stack copies (data_seal_bench, 16-byte payloads).
    fn seal(
        &self,
        packet_id: [u8; 4],
        aad: &[u8],
        body: &mut [u8],
        tag_out: &mut [u8],
    ) -> Result<(), DataError> {
        let nonce = self.nonce(packet_id);
        match &self.key {
            AeadImpl::AwsLc(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        aws_lc::Nonce::assume_unique_for_key(nonce),
                        aws_lc::Aad::from(aad),
                        body,
                    )
                    .map_err(|_| DataError::Crypto)?;
                copy_tag(tag.as_ref(), tag_out)
            }
            AeadImpl::Ring(k) => {
                let tag = k
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key(nonce),
                        ring::aead::Aad::from(aad),
                        body,
                    )
                    .map_err(|_| DataError::Crypto)?;
                copy_tag(tag.as_ref(), tag_out)
            }
        }
    }

    /// Authenticate and decrypt `ct` into `out` (same length).
    fn open_to(
        &self,
        packet_id: [u8; 4],
        aad: &[u8],
        ct: &[u8],
        tag: &[u8],
        out: &mut [u8],
    ) -> Result<(), DataError> {
        let nonce = self.nonce(packet_id);
        match &self.key {
            AeadImpl::AwsLc(k) => k
                .open_separate_gather(
                    aws_lc::Nonce::assume_unique_for_key(nonce),
                    aws_lc::Aad::from(aad),
                    ct,
                    tag,
                    out,
                )
                .map_err(|_| DataError::AuthFailed),
            AeadImpl::Ring(_) => {
                // ring opens in place only: decrypt a copy (cheap next to
                // what its faster AES-GCM saves; measured with the copy).
                if out.len() != ct.len() {
                    return Err(DataError::BufferTooSmall);
                }
                out.copy_from_slice(ct);
                self.open_in_place(packet_id, aad, tag, out)
            }
        }
    }

    /// Authenticate and decrypt `in_out` where it lies.
    fn open_in_place(
        &self,
        packet_id: [u8; 4],
        aad: &[u8],
        tag: &[u8],
        in_out: &mut [u8],
    ) -> Result<(), DataError> {
        let nonce = self.nonce(packet_id);
        match &self.key {
            AeadImpl::AwsLc(k) => k
                .open_in_place_separate_tag(
                    aws_lc::Nonce::assume_unique_for_key(nonce),
                    aws_lc::Aad::from(aad),
                    tag,
                    in_out,
                )
                .map(|_| ())
                .map_err(|_| DataError::AuthFailed),
            AeadImpl::Ring(k) => {
                let tag = ring::aead::Tag::try_from(tag).map_err(|_| DataError::Truncated)?;
                k.open_in_place_separate_tag(
                    ring::aead::Nonce::assume_unique_for_key(nonce),
                    ring::aead::Aad::from(aad),
                    tag,
                    in_out,
                    0..,
                )
                .map(|_| ())
                .map_err(|_| DataError::AuthFailed)
            }
        }
    }
}

/// The sealing half of a data-channel key: one direction, one key_id.
pub struct SealingKey {
    cipher: Cipher,
    kind: SealKind,
}

enum SealKind {
    Aead(AeadKey),
    // Boxed: the HMAC contexts make it much larger than the AEAD key.
    Cbc(Box<CbcSealer>),
}

/// The opening half of a data-channel key.
pub struct OpeningKey {
    cipher: Cipher,
    kind: OpenKind,
}

enum OpenKind {
    Aead(AeadKey),
    Cbc(Box<CbcOpener>),
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealingKey")
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for OpeningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpeningKey")
            .field("cipher", &self.cipher)
            .finish_non_exhaustive()
    }
}

/// The CBC key and HMAC key of one direction from the key block: the cipher
/// slot's prefix and the HMAC slot's first digest-length bytes (2.6's `key2`).
fn cbc_slots(
    cipher: Cipher,
    auth: AuthDigest,
    block: &KeyBlock,
    key_at: usize,
    hmac_at: usize,
) -> Result<(&[u8], &[u8]), DataError> {
    let key = block
        .0
        .get(key_at..key_at + cipher.key_len())
        .ok_or(DataError::Crypto)?;
    let mac = block
        .0
        .get(hmac_at..hmac_at + auth.len())
        .ok_or(DataError::Crypto)?;
    Ok((key, mac))
}

/// Both directions of one key_id, sliced from a [`KeyBlock`] for `side`.
#[derive(Debug)]
pub struct DataKeys {
    pub cipher: Cipher,
    pub seal: SealingKey,
    pub open: OpeningKey,
}

impl DataKeys {
    /// Slice `block` per §7.1: the client seals with the c2s slots, the server with s2c.
    /// A CBC cipher gets `auth SHA1` (2.6's default); use [`DataKeys::new`] to give the digest.
    pub fn from_key_block(cipher: Cipher, block: &KeyBlock, side: Side) -> Self {
        // Slots are fixed offsets into the 256-byte block and every key and
        // HMAC length fits a 64-byte slot, so this cannot fail.
        Self::new(cipher, AuthDigest::Sha1, block, side)
            .expect("key-block slots have the cipher's key lengths")
    }

    /// Slice `block` per §7.1 for `cipher`; `auth` is the HMAC digest of the
    /// CBC ciphers (ignored by AEAD ones). The second 64 bytes of each
    /// direction's slot are the AEAD implicit IV or the CBC HMAC key.
    pub fn new(
        cipher: Cipher,
        auth: AuthDigest,
        block: &KeyBlock,
        side: Side,
    ) -> Result<Self, DataError> {
        let (seal_at, open_at) = match side {
            Side::Client => ((C2S_KEY, C2S_IV), (S2C_KEY, S2C_IV)),
            Side::Server => ((S2C_KEY, S2C_IV), (C2S_KEY, C2S_IV)),
        };
        let (seal, open) = if cipher.is_aead() {
            (
                SealKind::Aead(AeadKey::from_block(cipher, block, seal_at.0, seal_at.1)),
                OpenKind::Aead(AeadKey::from_block(cipher, block, open_at.0, open_at.1)),
            )
        } else {
            let (k, m) = cbc_slots(cipher, auth, block, seal_at.0, seal_at.1)?;
            let seal = SealKind::Cbc(Box::new(CbcSealer::new(k, auth, m)?));
            let (k, m) = cbc_slots(cipher, auth, block, open_at.0, open_at.1)?;
            (seal, OpenKind::Cbc(Box::new(CbcOpener::new(k, auth, m)?)))
        };
        Ok(DataKeys {
            cipher,
            seal: SealingKey { cipher, kind: seal },
            open: OpeningKey { cipher, kind: open },
        })
    }
}

/// The clear fields in front of the tag of a data packet, readable before decryption
/// (e.g. to find the peer by peer-id and the key by key_id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataHeader {
    /// [`Opcode::DataV1`] or [`Opcode::DataV2`].
    pub opcode: Opcode,
    pub key_id: u8,
    /// 24-bit peer id; `None` for P_DATA_V1.
    pub peer_id: Option<u32>,
    /// Not authenticated yet: only trust it after a successful open.
    pub packet_id: u32,
}

impl DataHeader {
    /// Bytes in front of the ciphertext for this packet's format.
    pub fn overhead(&self) -> usize {
        overhead_of(self.opcode)
    }
}

fn overhead_of(opcode: Opcode) -> usize {
    if opcode == Opcode::DataV1 {
        DATA_V1_OVERHEAD
    } else {
        DATA_V2_OVERHEAD
    }
}

/// Read the clear header of a data packet, enforcing the same structural rules
/// as [`OpeningKey::open`] (data opcode, room for the tag, non-empty payload).
pub fn parse_data_header(packet: &[u8]) -> Result<DataHeader, DataError> {
    let (&b0, _) = packet.split_first().ok_or(DataError::Truncated)?;
    let op = b0 >> 3;
    let opcode = match Opcode::from_u8(op) {
        Some(o) if o.is_data() => o,
        _ => return Err(DataError::NotData(op)),
    };
    let overhead = overhead_of(opcode);
    if packet.len() < overhead {
        return Err(DataError::Truncated);
    }
    if packet.len() == overhead {
        return Err(DataError::MissingPayload);
    }
    let (peer_id, pid_at) = match opcode {
        Opcode::DataV2 => (Some(u32::from_be_bytes(read4(packet, 0)?) & 0x00FF_FFFF), 4),
        _ => (None, 1),
    };
    Ok(DataHeader {
        opcode,
        key_id: b0 & 7,
        peer_id,
        packet_id: u32::from_be_bytes(read4(packet, pid_at)?),
    })
}

fn read4(b: &[u8], at: usize) -> Result<[u8; 4], DataError> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .ok_or(DataError::Truncated)
}

/// AAD of a packet: bytes 0..8 for V2, the packet id (1..5) for V1. Copied out
/// so the packet buffer can be borrowed mutably while the AEAD runs.
struct AadBuf {
    bytes: [u8; DATA_V2_HEADER_LEN],
    len: usize,
}

impl AadBuf {
    fn of(hdr: &DataHeader, packet: &[u8]) -> Result<Self, DataError> {
        let range = match hdr.opcode {
            Opcode::DataV1 => 1..5,
            _ => 0..DATA_V2_HEADER_LEN,
        };
        let src = packet.get(range).ok_or(DataError::Truncated)?;
        let mut bytes = [0u8; DATA_V2_HEADER_LEN];
        let len = src.len();
        bytes
            .get_mut(..len)
            .ok_or(DataError::Truncated)?
            .copy_from_slice(src);
        Ok(AadBuf { bytes, len })
    }

    fn aad(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}

/// A CBC cipher and a key of its length (what `new_cbc` of both directions needs).
fn check_cbc_key(cipher: Cipher, key: &[u8]) -> Result<(), DataError> {
    if cipher.is_aead() || key.len() != cipher.key_len() {
        return Err(DataError::BadKeyLength {
            need: cipher.key_len(),
            have: key.len(),
        });
    }
    Ok(())
}

impl SealingKey {
    /// A sealing key from raw material (e.g. keys logged by OpenVPN, or test vectors).
    pub fn new(
        cipher: Cipher,
        key: &[u8],
        implicit_iv: [u8; IMPLICIT_IV_LEN],
    ) -> Result<Self, DataError> {
        Self::with_backend(cipher, key, implicit_iv, AeadBackend::for_cipher(cipher))
    }

    /// [`Self::new`] on a chosen library, for tests and benchmarks that
    /// compare them (the data path uses [`AeadBackend::for_cipher`]).
    pub fn with_backend(
        cipher: Cipher,
        key: &[u8],
        implicit_iv: [u8; IMPLICIT_IV_LEN],
        backend: AeadBackend,
    ) -> Result<Self, DataError> {
        Ok(SealingKey {
            cipher,
            kind: SealKind::Aead(AeadKey::new(cipher, key, implicit_iv, backend)?),
        })
    }

    /// A CBC sealing key from raw material: the cipher key and the HMAC key.
    pub fn new_cbc(
        cipher: Cipher,
        key: &[u8],
        auth: AuthDigest,
        hmac_key: &[u8],
    ) -> Result<Self, DataError> {
        check_cbc_key(cipher, key)?;
        Ok(SealingKey {
            cipher,
            kind: SealKind::Cbc(Box::new(CbcSealer::new(key, auth, hmac_key)?)),
        })
    }

    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The library running this key's AEAD; `None` for a CBC key.
    pub fn aead_backend(&self) -> Option<AeadBackend> {
        self.aead().ok().map(AeadKey::backend)
    }

    /// Bytes a sealed packet has in front of its payload (header included).
    pub fn head_room(&self, v1: bool) -> usize {
        match &self.kind {
            SealKind::Aead(_) => self.cipher.head_room(AuthDigest::Sha1, v1),
            SealKind::Cbc(c) => self.cipher.head_room(c.digest(), v1),
        }
    }

    /// Seal the payload `buf[at..at + len]` in place as P_DATA_V2 (with
    /// `peer_id`) or P_DATA_V1 (`None`), whatever the cipher. Needs
    /// [`Self::head_room`] bytes before `at` and, for CBC, up to
    /// [`MAX_TAIL_ROOM`] bytes after the payload. Returns the packet's
    /// (start, length) in `buf`.
    pub fn seal_at(
        &self,
        key_id: u8,
        peer_id: Option<u32>,
        packet_id: u32,
        buf: &mut [u8],
        at: usize,
        len: usize,
    ) -> Result<(usize, usize), DataError> {
        let start = at
            .checked_sub(self.head_room(peer_id.is_none()))
            .ok_or(DataError::BufferTooSmall)?;
        let end = at
            .checked_add(len)
            .filter(|&e| e <= buf.len())
            .ok_or(DataError::BufferTooSmall)?;
        match (&self.kind, peer_id) {
            (SealKind::Aead(_), Some(peer_id)) => {
                self.seal_v2(key_id, peer_id, packet_id, &mut buf[start..end])?;
                Ok((start, end - start))
            }
            (SealKind::Aead(_), None) => {
                self.seal_v1(key_id, packet_id, &mut buf[start..end])?;
                Ok((start, end - start))
            }
            (SealKind::Cbc(c), peer_id) => {
                if key_id > 7 || peer_id.is_some_and(|p| p > 0x00FF_FFFF) {
                    return Err(DataError::HeaderFieldOutOfRange);
                }
                match peer_id {
                    Some(p) => {
                        let hdr =
                            u32::from_be_bytes([Opcode::DataV2.header_byte(key_id), 0, 0, 0]) | p;
                        c.seal(&hdr.to_be_bytes(), packet_id, buf, at, len)
                    }
                    None => c.seal(
                        &[Opcode::DataV1.header_byte(key_id)],
                        packet_id,
                        buf,
                        at,
                        len,
                    ),
                }
            }
        }
    }

    /// [`Self::seal_at`] for a CBC key with a chosen IV, for known-answer tests
    /// only: a predictable IV breaks CBC.
    #[doc(hidden)]
    pub fn seal_cbc_with_iv(
        &self,
        prefix: &[u8],
        packet_id: u32,
        buf: &mut [u8],
        at: usize,
        len: usize,
        iv: [u8; 16],
    ) -> Result<(usize, usize), DataError> {
        match &self.kind {
            SealKind::Cbc(c) => c.seal_with_iv(prefix, packet_id, buf, at, len, iv),
            SealKind::Aead(_) => Err(DataError::NotAead),
        }
    }

    fn aead(&self) -> Result<&AeadKey, DataError> {
        match &self.kind {
            SealKind::Aead(k) => Ok(k),
            SealKind::Cbc(_) => Err(DataError::NotAead),
        }
    }

    /// Seal a P_DATA_V2 packet in place. `packet[..DATA_V2_OVERHEAD]` is header
    /// room that this fills (header, packet id, tag); `packet[DATA_V2_OVERHEAD..]`
    /// holds the plaintext on entry and the ciphertext on return.
    pub fn seal_v2(
        &self,
        key_id: u8,
        peer_id: u32,
        packet_id: u32,
        packet: &mut [u8],
    ) -> Result<(), DataError> {
        if key_id > 7 || peer_id > 0x00FF_FFFF {
            return Err(DataError::HeaderFieldOutOfRange);
        }
        let hdr = u32::from_be_bytes([Opcode::DataV2.header_byte(key_id), 0, 0, 0]) | peer_id;
        self.seal(hdr.to_be_bytes().as_slice(), packet_id, packet)
    }

    /// Same for P_DATA_V1 (header room [`crate::wire::DATA_V1_OVERHEAD`]).
    pub fn seal_v1(&self, key_id: u8, packet_id: u32, packet: &mut [u8]) -> Result<(), DataError> {
        if key_id > 7 {
            return Err(DataError::HeaderFieldOutOfRange);
        }
        self.seal(&[Opcode::DataV1.header_byte(key_id)], packet_id, packet)
    }

    /// Common V1/V2 path: `prefix` is the opcode byte (V1) or the 4-byte V2 header.
    fn seal(&self, prefix: &[u8], packet_id: u32, packet: &mut [u8]) -> Result<(), DataError> {
        if packet_id == 0 {
            return Err(DataError::InvalidPacketId);
        }
        let overhead = prefix.len() + 4 + TAG_LEN;
        if packet.len() < overhead {
            return Err(DataError::BufferTooSmall);
        }
        if packet.len() == overhead {
            return Err(DataError::MissingPayload);
        }
        let pid = packet_id.to_be_bytes();
        let (head, body) = packet.split_at_mut(overhead);
        let (hdr, tag_room) = head.split_at_mut(prefix.len() + 4);
        let (op, pid_room) = hdr.split_at_mut(prefix.len());
        op.copy_from_slice(prefix);
        pid_room.copy_from_slice(&pid);
        // V2 authenticates the whole 8-byte header, V1 only the packet id (§8.2).
        let aad: &[u8] = if prefix.len() == 1 { pid_room } else { hdr };
        self.aead()?.seal(pid, aad, body, tag_room)
    }
}

impl OpeningKey {
    /// An opening key from raw material (e.g. keys logged by OpenVPN, or test vectors).
    pub fn new(
        cipher: Cipher,
        key: &[u8],
        implicit_iv: [u8; IMPLICIT_IV_LEN],
    ) -> Result<Self, DataError> {
        Self::with_backend(cipher, key, implicit_iv, AeadBackend::for_cipher(cipher))
    }

    /// [`Self::new`] on a chosen library, for tests and benchmarks that
    /// compare them (the data path uses [`AeadBackend::for_cipher`]).
    pub fn with_backend(
        cipher: Cipher,
        key: &[u8],
        implicit_iv: [u8; IMPLICIT_IV_LEN],
        backend: AeadBackend,
    ) -> Result<Self, DataError> {
        Ok(OpeningKey {
            cipher,
            kind: OpenKind::Aead(AeadKey::new(cipher, key, implicit_iv, backend)?),
        })
    }

    /// A CBC opening key from raw material: the cipher key and the HMAC key.
    pub fn new_cbc(
        cipher: Cipher,
        key: &[u8],
        auth: AuthDigest,
        hmac_key: &[u8],
    ) -> Result<Self, DataError> {
        check_cbc_key(cipher, key)?;
        Ok(OpeningKey {
            cipher,
            kind: OpenKind::Cbc(Box::new(CbcOpener::new(key, auth, hmac_key)?)),
        })
    }

    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// The library running this key's AEAD; `None` for a CBC key.
    pub fn aead_backend(&self) -> Option<AeadBackend> {
        self.aead().ok().map(AeadKey::backend)
    }

    fn aead(&self) -> Result<&AeadKey, DataError> {
        match &self.kind {
            OpenKind::Aead(k) => Ok(k),
            OpenKind::Cbc(_) => Err(DataError::NotAead),
        }
    }

    /// Authenticate and decrypt a whole P_DATA_V2 or P_DATA_V1 packet (opcode
    /// taken from byte 0) into `out`, which must be at least as long as the
    /// ciphertext. Returns (packet_id, plaintext length). Replay checking is the
    /// caller's job and must happen after this succeeds.
    ///
    /// On [`DataError::AuthFailed`] the first `ciphertext length` bytes of `out`
    /// may hold garbage; they must not be used.
    pub fn open(&self, packet: &[u8], out: &mut [u8]) -> Result<(u32, usize), DataError> {
        let hdr = parse_data_header(packet)?;
        if let OpenKind::Cbc(c) = &self.kind {
            // The clear header is the opcode (V1) or opcode and peer id (V2);
            // the packet id travels encrypted.
            let body = packet
                .get(if hdr.opcode == Opcode::DataV1 { 1 } else { 4 }..)
                .ok_or(DataError::Truncated)?;
            return c.open(body, out);
        }
        if hdr.packet_id == 0 {
            return Err(DataError::InvalidPacketId);
        }
        let aad = AadBuf::of(&hdr, packet)?;
        let overhead = hdr.overhead();
        let (head, ct) = packet
            .split_at_checked(overhead)
            .ok_or(DataError::Truncated)?;
        let tag = head.get(overhead - TAG_LEN..).ok_or(DataError::Truncated)?;
        let out = out.get_mut(..ct.len()).ok_or(DataError::BufferTooSmall)?;
        self.aead()?
            .open_to(hdr.packet_id.to_be_bytes(), aad.aad(), ct, tag, out)?;
        Ok((hdr.packet_id, ct.len()))
    }

    /// Open in place: on success the plaintext is `packet[overhead..]` for the
    /// packet's opcode; returns (packet_id, plaintext range start).
    /// AEAD keys only ([`DataError::NotAead`] for CBC, whose padding changes
    /// the length): use [`Self::open`].
    ///
    /// No memmove: both libraries' `open_in_place_separate_tag` take the tag
    /// from a separate slice, so the ciphertext is decrypted where it lies and the
    /// tag is read from the header room in front of it. On failure the
    /// ciphertext bytes may have been overwritten.
    pub fn open_in_place(&self, packet: &mut [u8]) -> Result<(u32, usize), DataError> {
        let hdr = parse_data_header(packet)?;
        if hdr.packet_id == 0 {
            return Err(DataError::InvalidPacketId);
        }
        let aad = AadBuf::of(&hdr, packet)?;
        let overhead = hdr.overhead();
        let (head, ct) = packet
            .split_at_mut_checked(overhead)
            .ok_or(DataError::Truncated)?;
        let tag = head.get(overhead - TAG_LEN..).ok_or(DataError::Truncated)?;
        self.aead()?
            .open_in_place(hdr.packet_id.to_be_bytes(), aad.aad(), tag, ct)?;
        Ok((hdr.packet_id, overhead))
    }
}

/// Whether a decrypted payload is the keepalive ping (exact match, §10.1).
pub fn is_ping(payload: &[u8]) -> bool {
    payload == PING_PAYLOAD
}

/// The OCC type byte of a decrypted payload that starts with [`OCC_MAGIC`] (§10.2).
pub fn occ_type(payload: &[u8]) -> Option<u8> {
    payload.strip_prefix(&OCC_MAGIC)?.first().copied()
}

/// The payload of an OCC_EXIT message: magic followed by the type byte.
pub fn occ_exit_payload() -> [u8; 17] {
    let mut p = [0u8; 17];
    p[..16].copy_from_slice(&OCC_MAGIC);
    p[16] = OCC_EXIT;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (DataKeys, DataKeys) {
        let mut b = [0u8; 256];
        for (i, x) in b.iter_mut().enumerate() {
            *x = i as u8;
        }
        let kb = KeyBlock(b);
        (
            DataKeys::from_key_block(Cipher::Aes256Gcm, &kb, Side::Client),
            DataKeys::from_key_block(Cipher::Aes256Gcm, &kb, Side::Server),
        )
    }

    #[test]
    fn names() {
        for c in Cipher::ALL {
            assert_eq!(Cipher::from_name(&c.name().to_lowercase()), Some(c));
        }
        assert_eq!(Cipher::from_name("aes-256-cbc"), Some(Cipher::Aes256Cbc));
        assert_eq!(Cipher::from_name("BF-CBC"), None);
        assert_eq!(Cipher::Aes128Gcm.key_len(), 16);
    }

    #[test]
    fn roundtrip_both_formats_both_ways() {
        let (c, s) = keys();
        let mut p = vec![0u8; DATA_V2_OVERHEAD];
        p.extend_from_slice(b"hello world");
        c.seal.seal_v2(3, 0x123456, 7, &mut p).unwrap();
        assert_eq!(&p[..4], &[0x4b, 0x12, 0x34, 0x56]);
        let mut out = [0u8; 64];
        assert_eq!(s.open.open(&p, &mut out).unwrap(), (7, 11));
        assert_eq!(&out[..11], b"hello world");
        assert_eq!(s.open.open_in_place(&mut p).unwrap(), (7, DATA_V2_OVERHEAD));
        assert_eq!(&p[DATA_V2_OVERHEAD..], b"hello world");

        let mut p = vec![0u8; DATA_V1_OVERHEAD];
        p.extend_from_slice(b"x");
        s.seal.seal_v1(1, 9, &mut p).unwrap();
        assert_eq!(p[0], 0x31);
        assert_eq!(c.open.open(&p, &mut out).unwrap(), (9, 1));
        // The V1 opcode byte is not authenticated; the key_id bits must not matter.
        p[0] = 0x30;
        assert_eq!(c.open.open(&p, &mut out).unwrap(), (9, 1));
        // Same side's keys do not open its own packets.
        assert_eq!(s.open.open(&p, &mut out), Err(DataError::AuthFailed));
    }

    #[test]
    fn seal_rejects() {
        let (c, _) = keys();
        let mut p = [0u8; 40];
        assert_eq!(
            c.seal.seal_v2(0, 0, 0, &mut p),
            Err(DataError::InvalidPacketId)
        );
        assert_eq!(
            c.seal.seal_v2(0, 0, 1, &mut p[..24]),
            Err(DataError::MissingPayload)
        );
        assert_eq!(
            c.seal.seal_v2(0, 0, 1, &mut p[..23]),
            Err(DataError::BufferTooSmall)
        );
        assert_eq!(
            c.seal.seal_v2(8, 0, 1, &mut p),
            Err(DataError::HeaderFieldOutOfRange)
        );
        assert_eq!(
            c.seal.seal_v2(0, 1 << 24, 1, &mut p),
            Err(DataError::HeaderFieldOutOfRange)
        );
        assert_eq!(
            c.seal.seal_v1(0, 1, &mut p[..21]),
            Err(DataError::MissingPayload)
        );
    }

    #[test]
    fn open_rejects_structure() {
        let (_, s) = keys();
        let mut out = [0u8; 64];
        assert_eq!(s.open.open(&[], &mut out), Err(DataError::Truncated));
        assert_eq!(
            s.open.open(&[0x48; 24], &mut out),
            Err(DataError::MissingPayload)
        );
        assert_eq!(
            s.open.open(&[0x48; 23], &mut out),
            Err(DataError::Truncated)
        );
        assert_eq!(
            s.open.open(&[0x30; 21], &mut out),
            Err(DataError::MissingPayload)
        );
        assert_eq!(
            s.open.open(&[0x20; 40], &mut out),
            Err(DataError::NotData(4))
        );
        assert_eq!(
            s.open.open(&[0xf8; 40], &mut out),
            Err(DataError::NotData(31))
        );
        let mut p = [0x48u8; 40];
        p[4..8].copy_from_slice(&[0; 4]);
        assert_eq!(s.open.open(&p, &mut out), Err(DataError::InvalidPacketId));
        assert_eq!(
            s.open.open(&[0x48; 40], &mut out[..15]),
            Err(DataError::BufferTooSmall)
        );
        assert_eq!(
            s.open.open(&[0x48; 40], &mut out),
            Err(DataError::AuthFailed)
        );
    }

    /// Raw key material for `cipher`, the same for both libraries.
    fn raw_key(cipher: Cipher) -> Vec<u8> {
        (0..cipher.key_len()).map(|i| (i as u8) ^ 0xa5).collect()
    }

    /// aws-lc and ring seal every length to the same bytes (V1 and V2), each
    /// opens the other's packets both ways, and both refuse a forged tag.
    #[test]
    fn both_libraries_agree_byte_for_byte() {
        let iv = [3, 1, 4, 1, 5, 9, 2, 6];
        for cipher in Cipher::ALL {
            let key = raw_key(cipher);
            let seal =
                AeadBackend::ALL.map(|b| SealingKey::with_backend(cipher, &key, iv, b).unwrap());
            let open =
                AeadBackend::ALL.map(|b| OpeningKey::with_backend(cipher, &key, iv, b).unwrap());
            assert_eq!(seal[1].aead_backend(), Some(AeadBackend::Ring));
            for len in [1usize, 15, 16, 17, 31, 64, 100, 287, 288, 1400, 1500, 9000] {
                let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
                for v1 in [false, true] {
                    let overhead = if v1 {
                        DATA_V1_OVERHEAD
                    } else {
                        DATA_V2_OVERHEAD
                    };
                    let sealed = seal.each_ref().map(|k| {
                        let mut p = vec![0u8; overhead];
                        p.extend_from_slice(&payload);
                        if v1 {
                            k.seal_v1(2, 0x0102_0304 + len as u32, &mut p).unwrap();
                        } else {
                            k.seal_v2(2, 0xabcdef, 0x0102_0304 + len as u32, &mut p)
                                .unwrap();
                        }
                        p
                    });
                    assert_eq!(sealed[0], sealed[1], "{cipher} len {len} v1 {v1}");
                    for o in &open {
                        let mut out = vec![0u8; len + 5];
                        let (_, n) = o.open(&sealed[0], &mut out).unwrap();
                        assert_eq!(&out[..n], &payload[..]);
                        let mut inplace = sealed[0].clone();
                        assert_eq!(o.open_in_place(&mut inplace).unwrap().1, overhead);
                        assert_eq!(&inplace[overhead..], &payload[..]);
                        let mut forged = sealed[0].clone();
                        forged[overhead - 1] ^= 1;
                        assert_eq!(o.open(&forged, &mut out), Err(DataError::AuthFailed));
                        assert_eq!(o.open_in_place(&mut forged), Err(DataError::AuthFailed));
                        assert_eq!(
                            o.open(&sealed[0], &mut out[..len - 1]),
                            Err(DataError::BufferTooSmall)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn chosen_library_per_cipher() {
        assert_eq!(
            AeadBackend::for_cipher(Cipher::ChaCha20Poly1305),
            AeadBackend::AwsLc
        );
        assert_eq!(
            AeadBackend::for_cipher(Cipher::Aes128Gcm),
            AeadBackend::for_cipher(Cipher::Aes256Gcm)
        );
        let (c, _) = keys();
        assert_eq!(
            c.seal.aead_backend(),
            Some(AeadBackend::for_cipher(Cipher::Aes256Gcm))
        );
    }

    #[test]
    fn ping_and_occ() {
        assert!(is_ping(&PING_PAYLOAD));
        assert!(!is_ping(&PING_PAYLOAD[..15]));
        assert_eq!(occ_type(&occ_exit_payload()), Some(OCC_EXIT));
        assert_eq!(occ_type(&OCC_MAGIC), None);
        assert_eq!(occ_type(&PING_PAYLOAD), None);
    }
}
