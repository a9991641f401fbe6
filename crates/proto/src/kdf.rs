//! Data-channel key derivation (docs/protocol.md §7.2, §7.3): the TLS exporter
//! label used with tls-ekm, and the legacy OpenVPN PRF for peers that did not
//! negotiate tls-ekm.

use hmac::{Hmac, Mac};

use crate::data::KeyBlock;
use crate::wire::SessionId;

/// TLS exporter label for the 256-byte data-channel key block (no context).
pub const EKM_LABEL: &str = "EXPORTER-OpenVPN-datakeys";
/// TLS exporter label for the 3-byte peer-id of point-to-point mode.
pub const P2P_PEER_ID_LABEL: &str = "EXPORTER-OpenVPN-p2p-peerid";
/// TLS exporter label for the dynamic tls-crypt key (§4.4).
pub const EKM_DYNAMIC_TLS_CRYPT_LABEL: &str = "EXPORTER-OpenVPN-dynamic-tls-crypt";
/// Length of the key block every derivation produces.
pub const KEY_BLOCK_LEN: usize = 256;
/// Length of the legacy master secret.
pub const MASTER_SECRET_LEN: usize = 48;

const MASTER_LABEL: &[u8] = b"OpenVPN master secret";
const EXPANSION_LABEL: &[u8] = b"OpenVPN key expansion";

/// XOR `P_hash(secret, seed)` into `out` (RFC 2246 §5).
fn p_hash_xor<M: Mac + hmac::digest::KeyInit + Clone>(secret: &[u8], seed: &[u8], out: &mut [u8]) {
    // HMAC takes keys of any length, so construction cannot fail.
    let keyed = <M as Mac>::new_from_slice(secret).expect("HMAC accepts any key length");
    let mut a = {
        let mut m = keyed.clone();
        m.update(seed);
        m.finalize().into_bytes()
    };
    for chunk in out.chunks_mut(a.len()) {
        let mut m = keyed.clone();
        m.update(&a);
        m.update(seed);
        let block = m.finalize().into_bytes();
        for (o, b) in chunk.iter_mut().zip(block.iter()) {
            *o ^= b;
        }
        let mut m = keyed.clone();
        m.update(&a);
        a = m.finalize().into_bytes();
    }
}

/// The TLS 1.0/1.1 PRF: `P_MD5(S1, seed) XOR P_SHA1(S2, seed)` where S1 and S2
/// are the two (for odd lengths overlapping) halves of `secret`. `seed` here is
/// the label followed by the seed proper, as OpenVPN has no separator.
pub fn tls1_prf(secret: &[u8], seed: &[u8], out: &mut [u8]) {
    let half = secret.len().div_ceil(2);
    let (s1, _) = secret.split_at(half);
    let (_, s2) = secret.split_at(secret.len() - half);
    out.fill(0);
    p_hash_xor::<Hmac<md5::Md5>>(s1, seed, out);
    p_hash_xor::<Hmac<sha1::Sha1>>(s2, seed, out);
}

/// `PRF(pre_master, "OpenVPN master secret" || client_random1 || server_random1, 48)`.
pub fn legacy_master_secret(
    pre_master: &[u8; 48],
    client_random1: &[u8; 32],
    server_random1: &[u8; 32],
) -> [u8; MASTER_SECRET_LEN] {
    let mut seed = Vec::with_capacity(MASTER_LABEL.len() + 64);
    seed.extend_from_slice(MASTER_LABEL);
    seed.extend_from_slice(client_random1);
    seed.extend_from_slice(server_random1);
    let mut master = [0u8; MASTER_SECRET_LEN];
    tls1_prf(pre_master, &seed, &mut master);
    master
}

/// `PRF(master, "OpenVPN key expansion" || client_random2 || server_random2 || client_sid || server_sid, 256)`.
pub fn legacy_key_expansion(
    master: &[u8; MASTER_SECRET_LEN],
    client_random2: &[u8; 32],
    server_random2: &[u8; 32],
    client_sid: &SessionId,
    server_sid: &SessionId,
) -> KeyBlock {
    let mut seed = Vec::with_capacity(EXPANSION_LABEL.len() + 80);
    seed.extend_from_slice(EXPANSION_LABEL);
    seed.extend_from_slice(client_random2);
    seed.extend_from_slice(server_random2);
    seed.extend_from_slice(&client_sid.0);
    seed.extend_from_slice(&server_sid.0);
    let mut block = [0u8; KEY_BLOCK_LEN];
    tls1_prf(master, &seed, &mut block);
    KeyBlock(block)
}

/// The legacy OpenVPN key block (§7.3). `client_*` values come from the client's
/// key-method-2 message, `server_*` from the server's; the session ids are the
/// control-channel ids of the TLS client and the TLS server.
pub fn legacy_key_block(
    pre_master: &[u8; 48],
    client_random1: &[u8; 32],
    server_random1: &[u8; 32],
    client_random2: &[u8; 32],
    server_random2: &[u8; 32],
    client_sid: &SessionId,
    server_sid: &SessionId,
) -> KeyBlock {
    let master = legacy_master_secret(pre_master, client_random1, server_random1);
    legacy_key_expansion(
        &master,
        client_random2,
        server_random2,
        client_sid,
        server_sid,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2246 has no vectors; this pins the odd-length split (S1 and S2 share a byte).
    #[test]
    fn odd_secret_halves_overlap() {
        let mut a = [0u8; 20];
        let mut b = [0u8; 20];
        tls1_prf(b"abc", b"seed", &mut a);
        let mut expect = [0u8; 20];
        p_hash_xor::<Hmac<md5::Md5>>(b"ab", b"seed", &mut expect);
        p_hash_xor::<Hmac<sha1::Sha1>>(b"bc", b"seed", &mut expect);
        assert_eq!(a, expect);
        tls1_prf(b"abd", b"seed", &mut b);
        assert_ne!(a, b);
    }

    #[test]
    fn output_longer_than_digest_is_prefix_consistent() {
        let mut short = [0u8; 10];
        let mut long = [0u8; 100];
        tls1_prf(&[7; 48], b"x", &mut short);
        tls1_prf(&[7; 48], b"x", &mut long);
        assert_eq!(short, long[..10]);
    }
}
