//! Data-channel cipher negotiation as OpenVPN 2.6 does it (ssl_ncp.c's
//! `ncp_get_best_cipher`, multi.c's fallback rules and the client's "poor
//! man's NCP"). Pure functions over the configuration and what the peer sent.

use crate::data::Cipher;
use crate::key_method::PeerInfo;

/// The ciphers a peer can use by its peer-info: `IV_CIPHERS` as sent, or the
/// two GCM ciphers that `IV_NCP=2` implies; empty for a peer that negotiates nothing.
fn peer_cipher_list(peer: &PeerInfo) -> Vec<&str> {
    if !peer.ciphers.is_empty() {
        peer.ciphers.iter().map(String::as_str).collect()
    } else if peer.ncp >= 2 {
        vec!["AES-256-GCM", "AES-128-GCM"]
    } else {
        Vec::new()
    }
}

/// Server: the cipher to push to a client. The first of `data_ciphers` the
/// client lists; a client without `IV_CIPHERS` may also be given the cipher
/// of its OCC options string (`remote_cipher`). Only a client that announced
/// nothing at all (no list, no OCC cipher) gets `fallback`; `None` means the
/// negotiation failed and the client is refused.
pub fn select_for_client(
    data_ciphers: &[Cipher],
    fallback: Option<Cipher>,
    peer: &PeerInfo,
    remote_cipher: Option<&str>,
) -> Option<Cipher> {
    let listed = peer_cipher_list(peer);
    // A client that sends IV_CIPHERS may not accept its OCC cipher.
    let occ = remote_cipher.filter(|_| peer.ciphers.is_empty());
    let best = data_ciphers.iter().copied().find(|c| {
        listed.iter().any(|n| n.eq_ignore_ascii_case(c.name()))
            || occ.is_some_and(|n| n.eq_ignore_ascii_case(c.name()))
    });
    if best.is_some() {
        return best;
    }
    if listed.is_empty() && remote_cipher.is_none() {
        fallback
    } else {
        None
    }
}

/// Client: the cipher to use when the server pushed none: the server's OCC
/// cipher if it is in our `data_ciphers`, else `fallback` when the server
/// announced no cipher at all. `Err` holds the server's cipher we cannot use.
pub fn select_without_push(
    data_ciphers: &[Cipher],
    fallback: Option<Cipher>,
    remote_cipher: Option<&str>,
) -> Result<Option<Cipher>, String> {
    match remote_cipher {
        Some(name) => data_ciphers
            .iter()
            .copied()
            .find(|c| c.name().eq_ignore_ascii_case(name))
            .map(Some)
            .ok_or_else(|| name.to_owned()),
        None => Ok(fallback),
    }
}

/// Point-to-point mode (2.6's `get_p2p_ncp_cipher` and `do_deferred_p2p_ncp`):
/// the first cipher of the TLS server's list that the TLS client lists,
/// the lists being our `data_ciphers` and the peer's `IV_CIPHERS` (the
/// `IV_NCP` shorthand does not count here). Without a common one (or a
/// peer that sent no list), `fallback` (`data-ciphers-fallback`, or
/// `cipher` in p2p mode); `None`: no usable data channel cipher.
pub fn select_p2p(
    data_ciphers: &[Cipher],
    fallback: Option<Cipher>,
    peer: &PeerInfo,
    we_are_tls_server: bool,
) -> Option<Cipher> {
    let named = |c: &Cipher, n: &String| n.eq_ignore_ascii_case(c.name());
    let common = if we_are_tls_server {
        data_ciphers
            .iter()
            .copied()
            .find(|c| peer.ciphers.iter().any(|n| named(c, n)))
    } else {
        peer.ciphers
            .iter()
            .find_map(|n| data_ciphers.iter().copied().find(|c| named(c, n)))
    };
    common.or(fallback)
}

/// What 2.6's `p2p_ncp_set_options` turns on with a peer's IV_PROTO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct P2pOptions {
    /// Data keys from the TLS exporter.
    pub tls_ekm: bool,
    /// P_DATA_V2 with a peer-id both ends compute (else P_DATA_V1).
    pub data_v2: bool,
    /// Say goodbye with the EXIT control message.
    pub cc_exit: bool,
}

/// 2.6 turns these on only for a peer that does P2P NCP itself
/// (`IV_PROTO_NCP_P2P`); an older peer gets none of them.
pub fn p2p_options(peer: &PeerInfo) -> P2pOptions {
    use crate::key_method::iv_proto;
    let ncp_p2p = peer.proto & iv_proto::NCP_P2P != 0;
    P2pOptions {
        tls_ekm: ncp_p2p && peer.tls_ekm(),
        data_v2: ncp_p2p && peer.proto & iv_proto::DATA_V2 != 0,
        cc_exit: ncp_p2p && peer.cc_exit(),
    }
}

/// The P2P peer-id when the TLS exporter is not used (2.6: 'v' 'p' 'n').
pub const P2P_FIXED_PEER_ID: u32 = 0x76706e;

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(text: &str) -> PeerInfo {
        PeerInfo::parse(text)
    }

    const GCM: Cipher = Cipher::Aes256Gcm;
    const CBC: Cipher = Cipher::Aes256Cbc;
    const CBC128: Cipher = Cipher::Aes128Cbc;

    #[test]
    fn server_picks_first_of_its_list_the_client_lists() {
        let p = peer("IV_CIPHERS=AES-128-CBC:AES-256-CBC:AES-256-GCM\n");
        assert_eq!(select_for_client(&[CBC, GCM], None, &p, None), Some(CBC));
        assert_eq!(select_for_client(&[GCM, CBC], None, &p, None), Some(GCM));
        // No shared cipher: refused, even with a fallback.
        assert_eq!(
            select_for_client(
                &[CBC128],
                Some(CBC128),
                &peer("IV_CIPHERS=AES-256-GCM\n"),
                None
            ),
            None
        );
        // IV_NCP=2 means the two GCM ciphers.
        assert_eq!(
            select_for_client(&[CBC, GCM], None, &peer("IV_NCP=2\n"), None),
            Some(GCM)
        );
    }

    #[test]
    fn server_poor_mans_ncp_and_fallback() {
        let old = peer("IV_VER=2.3.18\n");
        // The OCC cipher of a client without IV_CIPHERS, if in data-ciphers.
        assert_eq!(
            select_for_client(&[GCM, CBC128], None, &old, Some("AES-128-CBC")),
            Some(CBC128)
        );
        // An OCC cipher we do not allow: refused, not given the fallback.
        assert_eq!(
            select_for_client(&[GCM], Some(CBC128), &old, Some("AES-128-CBC")),
            None
        );
        // Nothing announced at all: the fallback.
        assert_eq!(
            select_for_client(&[GCM], Some(CBC128), &old, None),
            Some(CBC128)
        );
        assert_eq!(select_for_client(&[GCM], None, &old, None), None);
        // IV_CIPHERS present: the OCC cipher is not considered.
        let new = peer("IV_CIPHERS=AES-256-GCM\n");
        assert_eq!(
            select_for_client(&[CBC128], None, &new, Some("AES-128-CBC")),
            None
        );
    }

    #[test]
    fn p2p_cipher_follows_the_tls_servers_order() {
        let p = peer("IV_CIPHERS=AES-128-GCM:AES-256-GCM:CHACHA20-POLY1305\n");
        let ours = [Cipher::ChaCha20Poly1305, GCM];
        // We are the TLS server: our order decides.
        assert_eq!(
            select_p2p(&ours, None, &p, true),
            Some(Cipher::ChaCha20Poly1305)
        );
        // We are the TLS client: the peer's (server's) order decides.
        assert_eq!(select_p2p(&ours, None, &p, false), Some(GCM));
        // Nothing in common, or no list: the fallback (`cipher`), else none.
        let other = peer("IV_CIPHERS=BF-CBC\n");
        assert_eq!(select_p2p(&ours, Some(CBC), &other, true), Some(CBC));
        assert_eq!(select_p2p(&ours, None, &other, false), None);
        let old = peer("IV_VER=2.4.12\nIV_NCP=2\n");
        assert_eq!(select_p2p(&ours, None, &old, true), None);
        assert_eq!(select_p2p(&ours, Some(CBC128), &old, false), Some(CBC128));
    }

    #[test]
    fn p2p_options_need_a_p2p_ncp_peer() {
        // 2.6.14 in p2p mode: DATA_V2|DNS|CC_EXIT|NCP_P2P|TLS_EKM|DYN_TLS_CRYPT.
        let stock = peer("IV_CIPHERS=AES-256-GCM\nIV_PROTO=746\n");
        assert_eq!(
            p2p_options(&stock),
            P2pOptions {
                tls_ekm: true,
                data_v2: true,
                cc_exit: true
            }
        );
        // The same bits without NCP_P2P (a client/server peer): none.
        let pulling = peer("IV_PROTO=714\n");
        assert_eq!(
            p2p_options(&pulling),
            P2pOptions {
                tls_ekm: false,
                data_v2: false,
                cc_exit: false
            }
        );
    }

    #[test]
    fn client_without_pushed_cipher() {
        assert_eq!(
            select_without_push(&[GCM, CBC], None, Some("AES-256-CBC")),
            Ok(Some(CBC))
        );
        assert_eq!(
            select_without_push(&[GCM], Some(CBC), Some("AES-128-CBC")),
            Err("AES-128-CBC".into())
        );
        assert_eq!(select_without_push(&[GCM], Some(CBC), None), Ok(Some(CBC)));
        assert_eq!(select_without_push(&[GCM], None, None), Ok(None));
    }
}
