//! The non-AEAD data channel of OpenVPN 2.6 (`cipher`/`data-ciphers`
//! AES-*-CBC with an `auth` HMAC), as crypto.c's `openvpn_encrypt_v1` /
//! `openvpn_decrypt_v1` put it on the wire in TLS mode:
//!
//! ```text
//! header (1: P_DATA_V1 | 4: P_DATA_V2) | HMAC(H) | IV(16) | AES-CBC( packet_id(4) | payload | PKCS#7 padding(1..16) )
//! ```
//!
//! * The HMAC covers `IV | ciphertext` only: the opcode / peer-id header is
//!   not authenticated (unlike AEAD's V2 AAD).
//! * TLS mode uses the short packet id (4 bytes, no time stamp) and puts it
//!   inside the encryption.
//! * The IV is random per packet.
//! * Keys: the cipher key is the prefix of the key-block cipher slot, the HMAC
//!   key the first H bytes of the HMAC slot (H = digest length), as 2.6's
//!   `init_key_ctx` takes them.
//!
//! The HMAC is verified (constant time) before anything is decrypted.

use aws_lc_rs::cipher::{
    AES_128, AES_192, AES_256, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
    UnboundCipherKey,
};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;

use crate::data::DataError;
use crate::wrap::AuthDigest;

/// AES block (and IV) length.
pub const BLOCK_LEN: usize = 16;
/// The short packet id inside the encryption.
pub const PACKET_ID_LEN: usize = 4;
/// Most bytes sealing writes behind the payload (a whole padding block).
pub const MAX_PADDING: usize = BLOCK_LEN;
/// Longest HMAC ([`AuthDigest::Sha512`]).
pub const MAX_HMAC_LEN: usize = 64;

/// Bytes between the header and the payload: HMAC, IV and packet id.
pub fn head_len(digest: AuthDigest) -> usize {
    digest.len() + BLOCK_LEN + PACKET_ID_LEN
}

fn aes(key_len: usize) -> Result<&'static aws_lc_rs::cipher::Algorithm, DataError> {
    match key_len {
        16 => Ok(&AES_128),
        24 => Ok(&AES_192),
        32 => Ok(&AES_256),
        have => Err(DataError::BadKeyLength { need: 32, have }),
    }
}

fn hmac_key(digest: AuthDigest, key: &[u8]) -> Result<hmac::Key, DataError> {
    if key.len() != digest.len() {
        return Err(DataError::BadKeyLength {
            need: digest.len(),
            have: key.len(),
        });
    }
    Ok(hmac::Key::new(digest.hmac_algorithm(), key))
}

/// One direction's AES-CBC key (made by `cbc`: [`EncryptingKey::cbc`] or
/// [`DecryptingKey::cbc`]) and HMAC key.
fn cbc_keys<K>(
    cipher_key: &[u8],
    digest: AuthDigest,
    hmac_key_bytes: &[u8],
    cbc: impl FnOnce(UnboundCipherKey) -> Result<K, aws_lc_rs::error::Unspecified>,
) -> Result<(K, hmac::Key), DataError> {
    let key = UnboundCipherKey::new(aes(cipher_key.len())?, cipher_key)
        .and_then(cbc)
        .map_err(|_| DataError::Crypto)?;
    Ok((key, hmac_key(digest, hmac_key_bytes)?))
}

/// The sealing half of one direction.
pub(crate) struct CbcSealer {
    enc: EncryptingKey,
    mac: hmac::Key,
    digest: AuthDigest,
}

/// The opening half of one direction.
pub(crate) struct CbcOpener {
    dec: DecryptingKey,
    mac: hmac::Key,
    digest: AuthDigest,
}

impl CbcSealer {
    pub(crate) fn new(
        cipher_key: &[u8],
        digest: AuthDigest,
        hmac_key_bytes: &[u8],
    ) -> Result<Self, DataError> {
        let (enc, mac) = cbc_keys(cipher_key, digest, hmac_key_bytes, EncryptingKey::cbc)?;
        Ok(CbcSealer { enc, mac, digest })
    }

    pub(crate) fn digest(&self) -> AuthDigest {
        self.digest
    }

    /// Seal the payload `buf[at..at + len]` in place with a random IV.
    /// `prefix` (the opcode byte or the V2 header) goes in front of the HMAC;
    /// returns the packet's range as (start, length). Needs
    /// `prefix.len() + head_len()` bytes before `at` and up to
    /// [`MAX_PADDING`] after the payload.
    pub(crate) fn seal(
        &self,
        prefix: &[u8],
        packet_id: u32,
        buf: &mut [u8],
        at: usize,
        len: usize,
    ) -> Result<(usize, usize), DataError> {
        let mut iv = [0u8; BLOCK_LEN];
        crate::random::fill(&mut iv);
        self.seal_with_iv(prefix, packet_id, buf, at, len, iv)
    }

    /// [`Self::seal`] with a given IV: for known-answer tests only; a
    /// predictable IV breaks CBC.
    pub(crate) fn seal_with_iv(
        &self,
        prefix: &[u8],
        packet_id: u32,
        buf: &mut [u8],
        at: usize,
        len: usize,
        iv: [u8; BLOCK_LEN],
    ) -> Result<(usize, usize), DataError> {
        if packet_id == 0 {
            return Err(DataError::InvalidPacketId);
        }
        if len == 0 {
            return Err(DataError::MissingPayload);
        }
        let h = self.digest.len();
        let pid_at = at
            .checked_sub(PACKET_ID_LEN)
            .ok_or(DataError::BufferTooSmall)?;
        let iv_at = pid_at
            .checked_sub(BLOCK_LEN)
            .ok_or(DataError::BufferTooSmall)?;
        let mac_at = iv_at.checked_sub(h).ok_or(DataError::BufferTooSmall)?;
        let start = mac_at
            .checked_sub(prefix.len())
            .ok_or(DataError::BufferTooSmall)?;
        // PKCS#7: 1..=16 bytes, a whole block when already aligned.
        let pad = BLOCK_LEN - (PACKET_ID_LEN + len) % BLOCK_LEN;
        let end = at
            .checked_add(len + pad)
            .filter(|&e| e <= buf.len())
            .ok_or(DataError::BufferTooSmall)?;
        buf[at + len..end].fill(pad as u8);
        buf[pid_at..at].copy_from_slice(&packet_id.to_be_bytes());
        buf[iv_at..pid_at].copy_from_slice(&iv);
        self.enc
            .less_safe_encrypt(
                &mut buf[pid_at..end],
                EncryptionContext::Iv128(FixedLength::from(iv)),
            )
            .map_err(|_| DataError::Crypto)?;
        let tag = hmac::sign(&self.mac, &buf[iv_at..end]);
        let tag = tag.as_ref();
        if tag.len() != h {
            return Err(DataError::Crypto);
        }
        buf[mac_at..iv_at].copy_from_slice(tag);
        buf[start..mac_at].copy_from_slice(prefix);
        Ok((start, end - start))
    }
}

impl CbcOpener {
    pub(crate) fn new(
        cipher_key: &[u8],
        digest: AuthDigest,
        hmac_key_bytes: &[u8],
    ) -> Result<Self, DataError> {
        let (dec, mac) = cbc_keys(cipher_key, digest, hmac_key_bytes, DecryptingKey::cbc)?;
        Ok(CbcOpener { dec, mac, digest })
    }

    /// Verify and decrypt `body` (the packet after its 1- or 4-byte header)
    /// into `out`, which must hold the ciphertext length minus 4 bytes.
    /// Returns (packet id, payload length); the payload is `out[..len]`.
    pub(crate) fn open(&self, body: &[u8], out: &mut [u8]) -> Result<(u32, usize), DataError> {
        let h = self.digest.len();
        if body.len() < h + 2 * BLOCK_LEN {
            return Err(DataError::Truncated);
        }
        let (tag, signed) = body.split_at(h);
        hmac::verify(&self.mac, signed, tag).map_err(|_| DataError::AuthFailed)?;
        let (iv, ct) = signed.split_at(BLOCK_LEN);
        if ct.len() % BLOCK_LEN != 0 {
            // Authentic but malformed: the peer's bug, not a forgery.
            return Err(DataError::Crypto);
        }
        let (first, rest) = ct.split_at(BLOCK_LEN);
        let plain_len = ct.len() - PACKET_ID_LEN;
        let out = out.get_mut(..plain_len).ok_or(DataError::BufferTooSmall)?;
        // The first block holds the packet id and 12 payload bytes; decrypting
        // it apart lets the rest land in `out` without a memmove.
        let mut block = [0u8; BLOCK_LEN];
        block.copy_from_slice(first);
        self.dec
            .decrypt(&mut block, DecryptionContext::Iv128(iv_of(iv)?))
            .map_err(|_| DataError::Crypto)?;
        let head = BLOCK_LEN - PACKET_ID_LEN;
        out[..head].copy_from_slice(&block[PACKET_ID_LEN..]);
        if !rest.is_empty() {
            let tail = &mut out[head..];
            tail.copy_from_slice(rest);
            self.dec
                .decrypt(tail, DecryptionContext::Iv128(iv_of(first)?))
                .map_err(|_| DataError::Crypto)?;
        }
        let pad = usize::from(out[plain_len - 1]);
        if pad == 0 || pad > BLOCK_LEN || pad > plain_len {
            return Err(DataError::Crypto);
        }
        if out[plain_len - pad..]
            .iter()
            .any(|&b| usize::from(b) != pad)
        {
            return Err(DataError::Crypto);
        }
        let packet_id = u32::from_be_bytes([block[0], block[1], block[2], block[3]]);
        if packet_id == 0 {
            return Err(DataError::InvalidPacketId);
        }
        let len = plain_len - pad;
        if len == 0 {
            return Err(DataError::MissingPayload);
        }
        Ok((packet_id, len))
    }
}

fn iv_of(bytes: &[u8]) -> Result<FixedLength<BLOCK_LEN>, DataError> {
    FixedLength::try_from(bytes).map_err(|_| DataError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::{BLOCK_LEN, PACKET_ID_LEN};
    use crate::data::{Cipher, DataError, DataKeys, KeyBlock, OpeningKey, SealingKey, Side};
    use crate::wrap::AuthDigest;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    const IV: [u8; 16] = [
        0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xab, 0xac, 0xad, 0xae,
        0xaf,
    ];

    /// Seal `payload` behind `prefix` with packet id `pid` and [`IV`] under
    /// `cipher`/`digest` with the keys `key` and `mac`: the packet must be
    /// `prefix | HMAC (hex) | IV | ciphertext (hex)`, and open to `payload`.
    #[allow(clippy::too_many_arguments)] // one known answer, spelled out
    fn known_answer(
        cipher: Cipher,
        digest: AuthDigest,
        key: &[u8],
        mac: &[u8],
        prefix: &[u8],
        pid: u32,
        payload: &[u8],
        (hmac_hex, ciphertext_hex): (&str, &str),
    ) {
        let seal = SealingKey::new_cbc(cipher, key, digest, mac).unwrap();
        let open = OpeningKey::new_cbc(cipher, key, digest, mac).unwrap();
        let at = prefix.len() + digest.len() + BLOCK_LEN + PACKET_ID_LEN;
        let mut buf = vec![0u8; at + payload.len() + BLOCK_LEN];
        buf[at..at + payload.len()].copy_from_slice(payload);
        let (start, len) = seal
            .seal_cbc_with_iv(prefix, pid, &mut buf, at, payload.len(), IV)
            .unwrap();
        let mut want = prefix.to_vec();
        want.extend(unhex(hmac_hex));
        want.extend(IV);
        want.extend(unhex(ciphertext_hex));
        assert_eq!(start, 0);
        assert_eq!(&buf[start..start + len], &want[..]);
        let mut out = [0u8; 64];
        assert_eq!(open.open(&want, &mut out), Ok((pid, payload.len())));
        assert_eq!(&out[..payload.len()], payload);
    }

    /// Known answers computed with the openssl CLI (`openssl enc -aes-256-cbc`
    /// over `packet_id | payload`, `openssl dgst -sha256 -mac HMAC` over
    /// `IV | ciphertext`), laid out as 2.6's `openvpn_encrypt_v1` does.
    #[test]
    fn known_answer_aes256_sha256_v2() {
        let key: Vec<u8> = (0..32).collect();
        let mac: Vec<u8> = (0x40..0x60).collect();
        known_answer(
            Cipher::Aes256Cbc,
            AuthDigest::Sha256,
            &key,
            &mac,
            &[0x48, 0x00, 0x01, 0x02],
            1,
            b"hello, legacy world",
            (
                "fcb9d2c96041164a43b188cdfa3fc0fe991000008f1a842d0d9c2924d3b25d9b",
                "dcfc4e186dab7b87f6d75eafaa5bf7ff4bc6250cf0542f0d02ed49692e2e8b1b",
            ),
        );
    }

    /// A payload that fills the block exactly gets a whole padding block (V1, SHA1).
    #[test]
    fn known_answer_aes128_sha1_v1_full_padding_block() {
        let key: Vec<u8> = (0x10..0x20).collect();
        let mac: Vec<u8> = (0x50..0x64).collect();
        known_answer(
            Cipher::Aes128Cbc,
            AuthDigest::Sha1,
            &key,
            &mac,
            &[0x30],
            0x100,
            b"twelve bytes",
            (
                "78c28923324200f204e0fcf8c76337a5f16759b3",
                "73b437019bffc95ccb1c009f69f5261ed503f45d80667e4e91eaafd89207483b",
            ),
        );
    }

    fn pair(cipher: Cipher, auth: AuthDigest) -> (DataKeys, DataKeys) {
        let mut b = [0u8; 256];
        for (i, x) in b.iter_mut().enumerate() {
            *x = (i * 7) as u8;
        }
        let kb = KeyBlock(b);
        (
            DataKeys::new(cipher, auth, &kb, Side::Client).unwrap(),
            DataKeys::new(cipher, auth, &kb, Side::Server).unwrap(),
        )
    }

    #[test]
    fn roundtrip_every_cipher_digest_and_length() {
        for cipher in Cipher::CBC {
            for auth in [
                AuthDigest::Sha1,
                AuthDigest::Sha256,
                AuthDigest::Sha384,
                AuthDigest::Sha512,
            ] {
                let (c, s) = pair(cipher, auth);
                for v1 in [false, true] {
                    let head = c.seal.head_room(v1);
                    assert_eq!(head, cipher.head_room(auth, v1));
                    for len in [1usize, 11, 12, 13, 27, 28, 29, 1400] {
                        let mut buf = vec![0u8; head + len + crate::data::MAX_TAIL_ROOM];
                        for (i, x) in buf[head..head + len].iter_mut().enumerate() {
                            *x = i as u8;
                        }
                        let peer = (!v1).then_some(0x0a0b0c);
                        let (st, wl) = c.seal.seal_at(5, peer, 42, &mut buf, head, len).unwrap();
                        let pkt = &buf[st..st + wl];
                        assert_eq!((wl - head + 4) % 16, 0, "ciphertext is whole blocks");
                        let hdr = crate::data::parse_data_header(pkt).unwrap();
                        assert_eq!((hdr.key_id, hdr.peer_id), (5, peer));
                        let mut out = vec![0u8; wl];
                        let (pid, plen) = s.open.open(pkt, &mut out).unwrap();
                        assert_eq!((pid, plen), (42, len));
                        assert!(out[..len].iter().enumerate().all(|(i, &x)| x == i as u8));
                        // The sender's own keys do not open it.
                        assert_eq!(c.open.open(pkt, &mut out), Err(DataError::AuthFailed));
                        // Any flipped bit after the header fails the HMAC.
                        let mut bad = pkt.to_vec();
                        let last = bad.len() - 1;
                        bad[last] ^= 1;
                        assert_eq!(s.open.open(&bad, &mut out), Err(DataError::AuthFailed));
                    }
                }
            }
        }
    }

    #[test]
    fn seal_and_open_reject() {
        let (c, s) = pair(Cipher::Aes256Cbc, AuthDigest::Sha256);
        let head = c.seal.head_room(false);
        let mut buf = vec![0u8; head + 20];
        // No room for the padding.
        assert_eq!(
            c.seal.seal_at(0, Some(1), 1, &mut buf, head, 20),
            Err(DataError::BufferTooSmall)
        );
        assert_eq!(
            c.seal.seal_at(0, Some(1), 1, &mut buf, head - 1, 4),
            Err(DataError::BufferTooSmall)
        );
        assert_eq!(
            c.seal.seal_at(0, Some(1), 0, &mut buf, head, 4),
            Err(DataError::InvalidPacketId)
        );
        assert_eq!(
            c.seal.seal_at(8, Some(1), 1, &mut buf, head, 4),
            Err(DataError::HeaderFieldOutOfRange)
        );
        assert_eq!(c.seal.seal_v2(0, 1, 1, &mut buf), Err(DataError::NotAead));
        let mut out = [0u8; 128];
        // Too short for HMAC + IV + one block.
        assert_eq!(
            s.open.open(&[0x48; 60], &mut out),
            Err(DataError::Truncated)
        );
        assert_eq!(
            s.open.open(&[0x48; 120], &mut out),
            Err(DataError::AuthFailed)
        );
        let (st, wl) = c
            .seal
            .seal_at(0, Some(1), 7, &mut [0u8; 200], head, 100)
            .unwrap();
        assert_eq!((st, wl), (0, head + 100 + 8));
        assert_eq!(
            s.open.open_in_place(&mut [0x48; 120]),
            Err(DataError::NotAead)
        );
    }

    #[test]
    fn out_buffer_too_small_is_an_error() {
        let (c, s) = pair(Cipher::Aes128Cbc, AuthDigest::Sha1);
        let head = c.seal.head_room(true);
        let mut buf = vec![0u8; head + 40 + 16];
        let (st, wl) = c.seal.seal_at(0, None, 3, &mut buf, head, 40).unwrap();
        let mut out = [0u8; 8];
        assert_eq!(
            s.open.open(&buf[st..st + wl], &mut out),
            Err(DataError::BufferTooSmall)
        );
    }

    proptest::proptest! {
        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let (_, s) = pair(Cipher::Aes192Cbc, AuthDigest::Sha512);
            let mut out = vec![0u8; 300];
            proptest::prop_assert!(s.open.open(&bytes, &mut out).is_err());
        }
    }
}
