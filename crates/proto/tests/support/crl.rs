//! A CRL for the tests: the unit tests of `session::tls` include this file
//! by `#[path]` and the `session_pair` integration test by `mod`, so both
//! build their revocation lists one way.

/// A PEM CRL signed by `issuer` revoking `serials` (issued 2025-01-01,
/// next update 2099-01-01, each revoked 2025-01-02 without a reason).
pub fn crl_pem(issuer: &rcgen::Issuer<'_, rcgen::KeyPair>, serials: &[u64]) -> String {
    use rcgen::{
        CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber,
        date_time_ymd,
    };
    CertificateRevocationListParams {
        this_update: date_time_ymd(2025, 1, 1),
        next_update: date_time_ymd(2099, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|&s| RevokedCertParams {
                serial_number: SerialNumber::from(s),
                revocation_time: date_time_ymd(2025, 1, 2),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(issuer)
    .unwrap()
    .pem()
    .unwrap()
}
