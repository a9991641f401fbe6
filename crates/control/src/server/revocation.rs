//! Revocation of clients that are already connected: when the `crl-verify`
//! file changes, every authenticated client whose certificate the new CRL
//! lists is dropped at once, not at its next renegotiation.
//!
//! The CRL text has been checked (parsed, loaded into the TLS verifier) by
//! the time this runs; the file is the operator's, so a listing by issuer
//! and serial number is all that is looked at here.

use x509_parser::prelude::*;

/// Whether any CRL in `crl_pem` revokes the certificate `leaf_der`:
/// same issuer name, same serial number. An unreadable certificate is not
/// revoked here (the TLS handshake already accepted it).
pub fn is_revoked(crl_pem: &str, leaf_der: &[u8]) -> bool {
    let Ok((_, cert)) = X509Certificate::from_der(leaf_der) else {
        return false;
    };
    Pem::iter_from_buffer(crl_pem.as_bytes())
        .filter_map(Result::ok)
        .filter(|pem| pem.label == "X509 CRL")
        .any(|pem| {
            let Ok((_, crl)) = CertificateRevocationList::from_der(&pem.contents) else {
                return false;
            };
            crl.issuer().as_raw() == cert.issuer().as_raw()
                && crl
                    .iter_revoked_certificates()
                    .any(|r| r.serial() == &cert.tbs_certificate.serial)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
        KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
    };

    struct Ca {
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = Issuer::new(p, key);
        Ca { issuer }
    }

    fn leaf(ca: &Ca, cn: &str, serial: u64) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serial_number = Some(SerialNumber::from(serial));
        p.signed_by(&key, &ca.issuer).unwrap().der().to_vec()
    }

    fn crl(ca: &Ca, serials: &[u64]) -> String {
        let now = rcgen::date_time_ymd(2026, 1, 1);
        CertificateRevocationListParams {
            this_update: now,
            next_update: rcgen::date_time_ymd(2036, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|&s| RevokedCertParams {
                    serial_number: SerialNumber::from(s),
                    revocation_time: now,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&ca.issuer)
        .unwrap()
        .pem()
        .unwrap()
    }

    #[test]
    fn listed_serials_of_the_same_issuer_are_revoked() {
        let (a, b) = (ca("CA A"), ca("CA B"));
        let client2 = leaf(&a, "client2", 2);
        let client3 = leaf(&a, "client3", 3);
        let other3 = leaf(&b, "client3", 3);
        let revoking = crl(&a, &[3, 7]);
        assert!(is_revoked(&revoking, &client3));
        assert!(!is_revoked(&revoking, &client2));
        // Same serial, another CA: not this CRL's business.
        assert!(!is_revoked(&revoking, &other3));
        // Several CRLs in one file; an empty one revokes nobody.
        let both = format!("{}{}", crl(&b, &[]), crl(&b, &[3]));
        assert!(is_revoked(&both, &other3));
        assert!(!is_revoked(&crl(&a, &[]), &client3));
        // Garbage never revokes and never panics.
        assert!(!is_revoked("not a crl", &client3));
        assert!(!is_revoked(&revoking, b"not a certificate"));
    }
}
