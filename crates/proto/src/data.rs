//! Data-channel crypto (protocol doc §7.1, §8): the ciphers, the 256-byte key
//! block and its slicing, and in-place AEAD seal/open of P_DATA_V2 / P_DATA_V1
//! packets. Pure code over caller-owned buffers: no allocation per packet.
//!
//! Layout of a P_DATA_V2 packet: `hdr(4) | packet_id(4) | tag(16) | ciphertext`.
//! AAD = bytes 0..8; nonce = packet_id(4) || implicit_iv(8).
//! P_DATA_V1: `op(1) | packet_id(4) | tag(16) | ciphertext`, AAD = packet_id only.

use thiserror::Error;

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

/// Data-channel ciphers we implement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cipher {
    Aes128Gcm,
    Aes256Gcm,
    ChaCha20Poly1305,
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DataError {
    #[error("data packet truncated")]
    Truncated,
    #[error("data packet failed authentication")]
    AuthFailed,
    #[error("output buffer too small")]
    BufferTooSmall,
    #[error("packet id space exhausted")]
    PacketIdExhausted,
}

/// Which end of the connection we are; decides which key-block slots we send with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Cipher {
    /// OpenSSL-style name as used in `data-ciphers` and `cipher` (upper case).
    pub fn name(self) -> &'static str {
        todo!()
    }
    /// Case-insensitive lookup of an OpenSSL-style name (`aes-256-gcm`, `CHACHA20-POLY1305`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        let _ = name;
        todo!()
    }
    pub fn key_len(self) -> usize {
        todo!()
    }
}

/// The 256-byte key block (§7.1), from TLS-EKM or the legacy PRF.
#[derive(Clone)]
pub struct KeyBlock(pub [u8; 256]);

/// The sealing half of a data-channel key: one direction, one key_id.
pub struct SealingKey {/* aws-lc-rs LessSafeKey + implicit IV */}

/// The opening half of a data-channel key.
pub struct OpeningKey {/* aws-lc-rs LessSafeKey + implicit IV */}

/// Both directions of one key_id, sliced from a [`KeyBlock`] for `side`.
pub struct DataKeys {
    pub cipher: Cipher,
    pub seal: SealingKey,
    pub open: OpeningKey,
}

impl DataKeys {
    /// Slice `block` per §7.1: the client seals with the c2s slots, the server with s2c.
    pub fn from_key_block(cipher: Cipher, block: &KeyBlock, side: Side) -> Self {
        let _ = (cipher, block, side);
        todo!()
    }
}

impl SealingKey {
    /// Seal a P_DATA_V2 packet in place. `packet[..DATA_V2_OVERHEAD]` is header
    /// room that this fills (header, packet id, tag); `packet[DATA_V2_OVERHEAD..]`
    /// holds the plaintext on entry and the ciphertext on return.
    pub fn seal_v2(&self, key_id: u8, peer_id: u32, packet_id: u32, packet: &mut [u8]) -> Result<(), DataError> {
        let _ = (key_id, peer_id, packet_id, packet);
        todo!()
    }
    /// Same for P_DATA_V1 (header room [`crate::wire::DATA_V1_OVERHEAD`]).
    pub fn seal_v1(&self, key_id: u8, packet_id: u32, packet: &mut [u8]) -> Result<(), DataError> {
        let _ = (key_id, packet_id, packet);
        todo!()
    }
}

impl OpeningKey {
    /// Authenticate and decrypt a whole P_DATA_V2 or P_DATA_V1 packet (opcode
    /// taken from byte 0) into `out`, which must be at least as long as the
    /// ciphertext. Returns (packet_id, plaintext length). Replay checking is the
    /// caller's job and must happen after this succeeds.
    pub fn open(&self, packet: &[u8], out: &mut [u8]) -> Result<(u32, usize), DataError> {
        let _ = (packet, out);
        todo!()
    }
    /// Open in place: on success the plaintext is `packet[overhead..]` for the
    /// packet's opcode; returns (packet_id, plaintext range start).
    pub fn open_in_place(&self, packet: &mut [u8]) -> Result<(u32, usize), DataError> {
        let _ = packet;
        todo!()
    }
}
