//! Fuzz the reading of a peer certificate's names and extensions (OpenVPN's
//! peer policy: last CN, subject string, KU/EKU/nsCertType checks) and the
//! CRL lookup used for live revocation. The DER comes from the peer.
#![no_main]

use ferrovpn_proto::session::tls::{
    CertRole, KeyUsageCheck, PeerCertPolicy, X509NameCheck, check_peer_cert, is_revoked,
    peer_identity,
};
use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateRevocationListDer;

fuzz_target!(|data: &[u8]| {
    // First byte splits the input into a certificate and a CRL.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (cert, crl) = rest.split_at(usize::from(split).min(rest.len()));
    if let Ok(id) = peer_identity(cert) {
        assert!(!id.common_name.chars().any(|c| c.is_control()));
    }
    let policy = PeerCertPolicy {
        key_usage: KeyUsageCheck::AnyOf(vec![0xa0, 0x88]),
        eku: Some("TLS Web Client Authentication".into()),
        ns_cert_type: Some(CertRole::Client),
        verify_name: Some(X509NameCheck::Subject("CN=x".into())),
        ..PeerCertPolicy::default()
    };
    let _ = check_peer_cert(cert, &policy);
    let _ = is_revoked(&[CertificateRevocationListDer::from(crl.to_vec())], cert);
});
