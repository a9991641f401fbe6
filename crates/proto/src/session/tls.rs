//! TLS configuration for the control channel: PEM material to rustls configs,
//! and the certificate checks OpenVPN applies (which differ from the web's).
//!
//! Server side: client certificates must chain to `ca` and carry the
//! clientAuth EKU (rustls' webpki client verifier does exactly that).
//! Client side: OpenVPN never checks host names; many real PKIs issue server
//! certificates with a CN and no subjectAltName. So the client verifies the
//! chain with webpki and then applies `remote-cert-tls server` and
//! `verify-x509-name` itself.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;

/// Errors building a TLS configuration from PEM material.
#[derive(Debug, Error)]
pub enum TlsConfigError {
    /// A PEM block could not be read.
    #[error("{what}: {reason}")]
    Pem { what: &'static str, reason: String },
    /// The PEM text held no certificate / key.
    #[error("{0}: no PEM block found")]
    Empty(&'static str),
    /// rustls refused the configuration.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(String),
}

/// PEM certificates and key as given by `ca`, `cert` and `key`.
pub struct TlsMaterial<'a> {
    pub ca_pem: &'a str,
    pub cert_pem: &'a str,
    pub key_pem: &'a str,
    /// `extra-certs`: intermediates sent after our certificate (may be empty).
    pub extra_certs_pem: &'a str,
    /// `tls-version-min 1.3`: refuse TLS 1.2. (rustls never speaks below 1.2.)
    pub tls13_only: bool,
    /// `crl-verify`: PEM CRLs (may be empty). The peer's certificate must
    /// not be revoked by its issuer's CRL, and that CRL must be present.
    pub crls_pem: &'a str,
}

impl TlsMaterial<'_> {
    fn versions(&self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static BOTH: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        if self.tls13_only { &BOTH[..1] } else { &BOTH }
    }

    /// Our certificate followed by the `extra-certs` chain.
    fn chain(&self) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
        let mut chain = parse_certs("cert", self.cert_pem)?;
        if !self.extra_certs_pem.trim().is_empty() {
            chain.extend(parse_certs("extra-certs", self.extra_certs_pem)?);
        }
        Ok(chain)
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Parse every certificate in a PEM text.
pub fn parse_certs(
    what: &'static str,
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let certs = certs.map_err(|e| TlsConfigError::Pem {
        what,
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsConfigError::Empty(what));
    }
    Ok(certs)
}

/// Parse every CRL in a PEM text (none for empty text).
pub fn parse_crls(pem: &str) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsConfigError> {
    if pem.trim().is_empty() {
        return Ok(Vec::new());
    }
    let crls: Result<Vec<_>, _> =
        CertificateRevocationListDer::pem_slice_iter(pem.as_bytes()).collect();
    let crls = crls.map_err(|e| TlsConfigError::Pem {
        what: "crl-verify",
        reason: e.to_string(),
    })?;
    if crls.is_empty() {
        return Err(TlsConfigError::Empty("crl-verify"));
    }
    // Parse them now so that a broken CRL is a configuration error, not a
    // refusal of every peer later.
    for c in &crls {
        webpki::OwnedCertRevocationList::from_der(c).map_err(|e| TlsConfigError::Pem {
            what: "crl-verify",
            reason: format!("{e:?}"),
        })?;
    }
    Ok(crls)
}

/// Parse a private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| TlsConfigError::Pem {
        what: "key",
        reason: e.to_string(),
    })
}

fn root_store(ca_pem: &str) -> Result<RootCertStore, TlsConfigError> {
    let mut roots = RootCertStore::empty();
    for c in parse_certs("ca", ca_pem)? {
        roots.add(c).map_err(|e| TlsConfigError::Pem {
            what: "ca",
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Server-side config: TLS 1.2 and 1.3 (or 1.3 only), client certificate required and
/// verified against `ca` with the clientAuth EKU.
pub fn server_config(m: &TlsMaterial<'_>) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let provider = provider();
    let roots = Arc::new(root_store(m.ca_pem)?);
    let crls = parse_crls(m.crls_pem)?;
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    if !crls.is_empty() {
        // Like OpenVPN: the client's own certificate is checked against the
        // CRL of its issuer, which must be there (unknown status refuses).
        builder = builder.with_crls(crls).only_check_end_entity_revocation();
    }
    let verifier = builder
        .build()
        .map_err(|e| TlsConfigError::Verifier(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(m.versions())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(m.chain()?, parse_key(m.key_pem)?)?;
    // Every OpenVPN key state is a fresh handshake; tickets would never be used.
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(cfg))
}

/// How `verify-x509-name` compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum X509NameCheck {
    /// `verify-x509-name NAME name`: the subject CN equals NAME.
    CommonName(String),
    /// `verify-x509-name NAME name-prefix`: the subject CN starts with NAME.
    CommonNamePrefix(String),
    /// `verify-x509-name "C=.., CN=.." subject`: the whole subject DN, in OpenVPN's form.
    Subject(String),
}

/// Client-side certificate policy.
#[derive(Clone, Debug, Default)]
pub struct ServerCertPolicy {
    /// `remote-cert-tls server`: KeyUsage present and EKU serverAuth required.
    pub remote_cert_tls_server: bool,
    pub verify_name: Option<X509NameCheck>,
}

/// Client-side config presenting our certificate and checking the server the OpenVPN way.
pub fn client_config(
    m: &TlsMaterial<'_>,
    policy: ServerCertPolicy,
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let provider = provider();
    let crls = parse_crls(m.crls_pem)?
        .iter()
        .map(|c| {
            webpki::OwnedCertRevocationList::from_der(c)
                .map(webpki::CertRevocationList::from)
                .map_err(|e| TlsConfigError::Pem {
                    what: "crl-verify",
                    reason: format!("{e:?}"),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let verifier = Arc::new(OpenVpnServerVerifier {
        roots: root_store(m.ca_pem)?,
        policy,
        provider: provider.clone(),
        crls,
    });
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(m.versions())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    // No certificate (empty `cert_pem`): a username/password client.
    let mut cfg = if m.cert_pem.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder.with_client_auth_cert(m.chain()?, parse_key(m.key_pem)?)?
    };
    // OpenVPN sends no SNI; the name we give rustls is a placeholder.
    cfg.enable_sni = false;
    cfg.resumption = rustls::client::Resumption::disabled();
    Ok(Arc::new(cfg))
}

/// Placeholder server name for rustls (never sent, never checked).
pub fn placeholder_server_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())
}

#[derive(Debug)]
struct OpenVpnServerVerifier {
    roots: RootCertStore,
    policy: ServerCertPolicy,
    provider: Arc<CryptoProvider>,
    crls: Vec<webpki::CertRevocationList<'static>>,
}

fn cert_err(msg: impl Into<String>) -> rustls::Error {
    rustls::Error::General(msg.into())
}

impl ServerCertVerifier for OpenVpnServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ee = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|e| cert_err(format!("server certificate unreadable: {e}")))?;
        // Chain only: OpenVPN does no host-name check. serverAuth is enforced
        // below when `remote-cert-tls server` asks for it.
        let usage = webpki::KeyUsage::required_if_present(EKU_SERVER_AUTH);
        let crls: Vec<&webpki::CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = webpki::RevocationOptionsBuilder::new(&crls).ok().map(|b| {
            b.with_depth(webpki::RevocationCheckDepth::EndEntity)
                .with_status_policy(webpki::UnknownStatusPolicy::Deny)
                .build()
        });
        ee.verify_for_usage(
            self.provider.signature_verification_algorithms.all,
            &self.roots.roots,
            intermediates,
            now,
            usage,
            revocation,
            None,
        )
        .map_err(|e| cert_err(format!("server certificate not trusted by ca: {e}")))?;
        check_server_cert_policy(end_entity, &self.policy).map_err(cert_err)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// DER of id-kp-serverAuth (1.3.6.1.5.5.7.3.1).
const EKU_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];

/// Apply `remote-cert-tls server` and `verify-x509-name` to a chain-verified certificate.
pub fn check_server_cert_policy(der: &[u8], policy: &ServerCertPolicy) -> Result<(), String> {
    use x509_parser::prelude::*;
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("certificate unreadable: {e}"))?;
    if policy.remote_cert_tls_server {
        match cert.key_usage() {
            Ok(Some(_)) => {}
            _ => {
                return Err(
                    "remote-cert-tls server: certificate has no Key Usage extension".into(),
                );
            }
        }
        let server_auth =
            matches!(cert.extended_key_usage(), Ok(Some(eku)) if eku.value.server_auth);
        if !server_auth {
            return Err("remote-cert-tls server: certificate lacks TLS Web Server Authentication (serverAuth) usage".into());
        }
    }
    if let Some(check) = &policy.verify_name {
        let cn = common_name(&cert).unwrap_or_default();
        let ok = match check {
            X509NameCheck::CommonName(n) => cn == *n,
            X509NameCheck::CommonNamePrefix(p) => cn.starts_with(p.as_str()),
            X509NameCheck::Subject(s) => subject_openvpn_form(&cert) == *s,
        };
        if !ok {
            return Err(format!(
                "verify-x509-name: server certificate name {cn:?} does not match {check:?}"
            ));
        }
    }
    Ok(())
}

fn common_name(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_owned)
}

/// OpenVPN prints subjects as `C=US, ST=.., CN=name` (RFC 2253-ish, comma+space).
fn subject_openvpn_form(cert: &x509_parser::certificate::X509Certificate<'_>) -> String {
    let mut parts = Vec::new();
    for rdn in cert.subject().iter() {
        for atv in rdn.iter() {
            let key = x509_parser::objects::oid2abbrev(
                atv.attr_type(),
                x509_parser::objects::oid_registry(),
            )
            .map(str::to_owned)
            .unwrap_or_else(|_| atv.attr_type().to_id_string());
            let val = atv.as_str().unwrap_or("");
            parts.push(format!("{key}={val}"));
        }
    }
    parts.join(", ")
}

/// Common name of the first certificate in a DER chain, for logs and `--duplicate-cn` checks.
pub fn peer_common_name(der: &[u8]) -> Option<String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    common_name(&cert)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use rustls::{ClientConnection, ServerConnection};

    struct Chain {
        root: String,
        intermediate: String,
        server: (String, String),
        client: (String, String),
        /// Signs CRLs for the leaves (serials: server 2, client 3).
        mid_issuer: Issuer<'static, KeyPair>,
    }

    /// A PEM CRL from the intermediate revoking `serials`.
    fn crl(ch: &Chain, serials: &[u64]) -> String {
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
        .signed_by(&ch.mid_issuer)
        .unwrap()
        .pem()
        .unwrap()
    }

    /// root → intermediate → server and client leaves.
    fn chain() -> Chain {
        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            p.distinguished_name.push(DnType::CommonName, cn);
            p
        };
        let root_key = KeyPair::generate().unwrap();
        let root_params = ca("Root");
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let mid_key = KeyPair::generate().unwrap();
        let mid_params = ca("Intermediate");
        let mid = mid_params.signed_by(&mid_key, &root_issuer).unwrap();
        let mid_issuer = Issuer::new(mid_params, mid_key);
        let leaf = |cn: &str, eku, serial: u64| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::new()).unwrap();
            p.serial_number = Some(rcgen::SerialNumber::from(serial));
            p.distinguished_name.push(DnType::CommonName, cn);
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            p.extended_key_usages = vec![eku];
            let cert = p.signed_by(&key, &mid_issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        Chain {
            root: root.pem(),
            intermediate: mid.pem(),
            server: leaf("server", ExtendedKeyUsagePurpose::ServerAuth, 2),
            client: leaf("client", ExtendedKeyUsagePurpose::ClientAuth, 3),
            mid_issuer,
        }
    }

    /// Run a handshake in memory; the negotiated version, or the first error.
    fn handshake(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
    ) -> Result<rustls::ProtocolVersion, rustls::Error> {
        let mut s = ServerConnection::new(server)?;
        let mut c = ClientConnection::new(client, placeholder_server_name())?;
        for _ in 0..20 {
            let mut buf = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
                s.process_new_packets()?;
            }
            let mut buf = Vec::new();
            while s.wants_write() {
                s.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
                c.process_new_packets()?;
            }
            if !s.is_handshaking() && !c.is_handshaking() {
                return Ok(c.protocol_version().unwrap());
            }
        }
        panic!("handshake did not finish");
    }

    fn configs(
        ch: &Chain,
        extra: &str,
        server_13: bool,
        client_13: bool,
    ) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        configs_with_crls(ch, extra, server_13, client_13, "", "")
    }

    fn configs_with_crls(
        ch: &Chain,
        extra: &str,
        server_13: bool,
        client_13: bool,
        server_crls: &str,
        client_crls: &str,
    ) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let s = server_config(&TlsMaterial {
            ca_pem: &ch.root,
            cert_pem: &ch.server.0,
            key_pem: &ch.server.1,
            extra_certs_pem: extra,
            tls13_only: server_13,
            crls_pem: server_crls,
        })
        .unwrap();
        let c = client_config(
            &TlsMaterial {
                ca_pem: &ch.root,
                cert_pem: &ch.client.0,
                key_pem: &ch.client.1,
                extra_certs_pem: extra,
                tls13_only: client_13,
                crls_pem: client_crls,
            },
            ServerCertPolicy {
                remote_cert_tls_server: true,
                verify_name: None,
            },
        )
        .unwrap();
        (s, c)
    }

    #[test]
    fn extra_certs_carry_the_intermediate() {
        let ch = chain();
        let (s, c) = configs(&ch, &ch.intermediate, false, false);
        assert_eq!(handshake(s, c), Ok(rustls::ProtocolVersion::TLSv1_3));
        // Without the intermediate neither side can build a path to the root.
        let (s, c) = configs(&ch, "", false, false);
        assert!(handshake(s, c).is_err());
    }

    #[test]
    fn tls13_only_refuses_a_tls12_peer() {
        let ch = chain();
        let (s, _) = configs(&ch, &ch.intermediate, true, false);
        let (_, c13) = configs(&ch, &ch.intermediate, false, true);
        assert_eq!(
            handshake(s.clone(), c13),
            Ok(rustls::ProtocolVersion::TLSv1_3)
        );
        // A client that only offers TLS 1.2.
        let provider = provider();
        let verifier = Arc::new(OpenVpnServerVerifier {
            roots: root_store(&ch.root).unwrap(),
            policy: ServerCertPolicy::default(),
            provider: provider.clone(),
            crls: Vec::new(),
        });
        let rebuilt = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        assert!(handshake(s, Arc::new(rebuilt)).is_err());
    }

    #[test]
    fn garbage_extra_certs_is_an_error() {
        let ch = chain();
        let m = TlsMaterial {
            ca_pem: &ch.root,
            cert_pem: &ch.server.0,
            key_pem: &ch.server.1,
            extra_certs_pem: "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
            tls13_only: false,
            crls_pem: "",
        };
        assert!(server_config(&m).is_err());
    }

    #[test]
    fn crl_verify_refuses_revoked_peers_on_both_sides() {
        let ch = chain();
        let mid = ch.intermediate.clone();
        let ok = |sc: &str, cc: &str| {
            let (s, c) = configs_with_crls(&ch, &mid, false, false, sc, cc);
            handshake(s, c)
        };
        let none = crl(&ch, &[]);
        let client_revoked = crl(&ch, &[3]);
        let server_revoked = crl(&ch, &[2]);
        assert!(ok(&none, &none).is_ok());
        assert!(
            ok(&server_revoked, "").is_ok(),
            "server's CRL names only itself"
        );
        let e = ok(&client_revoked, "").unwrap_err();
        assert!(format!("{e:?}").contains("Revoked"), "{e:?}");
        let e = ok("", &server_revoked).unwrap_err();
        assert!(format!("{e:?}").contains("Revoked"), "{e:?}");
        // A CRL from another issuer says nothing about these leaves: refused.
        let other = chain();
        let e = ok(&crl(&other, &[]), "").unwrap_err();
        assert!(format!("{e:?}").contains("Revocation"), "{e:?}");
    }

    #[test]
    fn broken_crls_are_configuration_errors() {
        assert!(parse_crls("").unwrap().is_empty());
        assert!(parse_crls("no pem here").is_err());
        assert!(parse_crls("-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n").is_err());
    }
}
