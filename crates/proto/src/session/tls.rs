//! TLS configuration for the control channel: PEM material to rustls configs,
//! and the certificate checks OpenVPN applies (which differ from the web's).
//!
//! Server side: client certificates must chain to `ca` and carry the
//! clientAuth EKU if they have one (rustls' webpki client verifier); then the
//! OpenVPN policy (`remote-cert-tls client`, `verify-x509-name`,
//! `ns-cert-type`, `remote-cert-ku`/`-eku`) is applied to the leaf.
//! Client side: OpenVPN never checks host names; many real PKIs issue server
//! certificates with a CN and no subjectAltName. So the client verifies the
//! chain with webpki and then applies the same policy itself.
//! Both sides refuse a leaf without a CN, or with one over 64 bytes, as 2.6 does.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use thiserror::Error;

/// Errors building a TLS configuration from PEM material.
#[derive(Debug, Error)]
pub enum TlsConfigError {
    /// A PEM block could not be read.
    #[error("{what}: {reason}")]
    Pem { what: &'static str, reason: String },
    /// The PEM text held no certificate / key.
    #[error(
        "{0}: no PEM block of the expected kind (BEGIN CERTIFICATE, BEGIN PRIVATE KEY, …) found"
    )]
    Empty(&'static str),
    /// The private key is passphrase-protected.
    #[error(
        "key: the private key is passphrase-protected (encrypted PKCS#8 or 'Proc-Type: 4,ENCRYPTED'); decrypt it first (keyfile::decrypt_key)"
    )]
    EncryptedKey,
    /// `key` does not belong to `cert`.
    #[error("key: the private key does not belong to the certificate in 'cert'")]
    KeyMismatch,
    /// rustls refused the configuration.
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client certificate verifier could not be built.
    #[error("client certificate verifier: {0}")]
    Verifier(String),
}

impl TlsConfigError {
    /// The directive whose material is at fault (`ca`, `cert`, `key`,
    /// `extra-certs`, `crl-verify`), when one is.
    pub fn directive(&self) -> Option<&'static str> {
        match self {
            TlsConfigError::Pem { what, .. } | TlsConfigError::Empty(what) => Some(what),
            TlsConfigError::EncryptedKey | TlsConfigError::KeyMismatch => Some("key"),
            TlsConfigError::Rustls(_) | TlsConfigError::Verifier(_) => None,
        }
    }

    /// What is wrong, in words, without the directive's name in front.
    pub fn reason(&self) -> String {
        let full = self.to_string();
        match self.directive() {
            Some(d) => full
                .strip_prefix(d)
                .and_then(|r| r.strip_prefix(": "))
                .map_or(full.clone(), str::to_owned),
            None => full,
        }
    }
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

/// `tls-cert-profile`: which signatures a peer's certificate chain may use.
/// OpenVPN 2.6 maps the profiles to OpenSSL security levels, `legacy`
/// (level 1) being its default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CertProfile {
    /// 2.6's default: RSA keys of 1024 bits and more, SHA-1 signatures allowed.
    #[default]
    Legacy,
    /// RSA keys of 2048 bits and more, no SHA-1 (webpki's own rules).
    Preferred,
}

fn provider_for(profile: CertProfile) -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    if profile == CertProfile::Legacy {
        p.signature_verification_algorithms.all = legacy_algorithms();
    }
    Arc::new(p)
}

/// RSA PKCS#1 signatures by keys down to 1024 bits (aws-lc-rs' legacy
/// parameters), for certificate chains under `tls-cert-profile legacy`.
#[derive(Debug)]
struct LegacyRsa {
    signature_alg_id: rustls::pki_types::AlgorithmIdentifier,
    params: &'static aws_lc_rs::signature::RsaParameters,
}

impl rustls::pki_types::SignatureVerificationAlgorithm for LegacyRsa {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), rustls::pki_types::InvalidSignature> {
        aws_lc_rs::signature::UnparsedPublicKey::new(self.params, public_key)
            .verify(message, signature)
            .map_err(|_| rustls::pki_types::InvalidSignature)
    }

    fn public_key_alg_id(&self) -> rustls::pki_types::AlgorithmIdentifier {
        rustls::pki_types::alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> rustls::pki_types::AlgorithmIdentifier {
        self.signature_alg_id
    }
}

/// sha1WithRSAEncryption (1.2.840.113549.1.1.5) with NULL parameters.
const RSA_PKCS1_SHA1: rustls::pki_types::AlgorithmIdentifier =
    rustls::pki_types::AlgorithmIdentifier::from_slice(&[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05, 0x00,
    ]);

static LEGACY_RSA: [LegacyRsa; 3] = [
    LegacyRsa {
        signature_alg_id: rustls::pki_types::alg_id::RSA_PKCS1_SHA256,
        params: &aws_lc_rs::signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
    },
    LegacyRsa {
        signature_alg_id: rustls::pki_types::alg_id::RSA_PKCS1_SHA512,
        params: &aws_lc_rs::signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
    },
    LegacyRsa {
        signature_alg_id: RSA_PKCS1_SHA1,
        params: &aws_lc_rs::signature::RSA_PKCS1_1024_8192_SHA1_FOR_LEGACY_USE_ONLY,
    },
];

/// The legacy algorithms first (webpki takes the first one that fits the
/// key type, and these cover 2048+ bit keys too), then the default ones.
fn legacy_algorithms() -> &'static [&'static dyn rustls::pki_types::SignatureVerificationAlgorithm]
{
    static ALL: std::sync::OnceLock<
        Vec<&'static dyn rustls::pki_types::SignatureVerificationAlgorithm>,
    > = std::sync::OnceLock::new();
    ALL.get_or_init(|| {
        LEGACY_RSA
            .iter()
            .map(|a| a as &'static dyn rustls::pki_types::SignatureVerificationAlgorithm)
            .chain(
                rustls::crypto::aws_lc_rs::default_provider()
                    .signature_verification_algorithms
                    .all
                    .iter()
                    .copied(),
            )
            .collect()
    })
}

/// Parse every certificate in a PEM text.
pub fn parse_certs(
    what: &'static str,
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsConfigError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    let certs = certs.map_err(|e| pem_error(what, e))?;
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
    let crls = crls.map_err(|e| pem_error("crl-verify", e))?;
    if crls.is_empty() {
        return Err(TlsConfigError::Empty("crl-verify"));
    }
    // Parse them now so that a broken CRL is a configuration error, not a
    // refusal of every peer later.
    for c in &crls {
        webpki::OwnedCertRevocationList::from_der(c).map_err(|e| TlsConfigError::Pem {
            what: "crl-verify",
            reason: format!("not a valid certificate revocation list ({e:?})"),
        })?;
    }
    Ok(crls)
}

/// Parse a private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, TlsConfigError> {
    if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || pem.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err(TlsConfigError::EncryptedKey);
    }
    PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsConfigError::Pem {
            what: "key",
            reason: "no private key block (BEGIN PRIVATE KEY, BEGIN RSA PRIVATE KEY or BEGIN EC PRIVATE KEY) found".into(),
        },
        e => pem_error("key", e),
    })
}

/// A PEM reading error in words.
fn pem_error(what: &'static str, e: rustls::pki_types::pem::Error) -> TlsConfigError {
    use rustls::pki_types::pem::Error as E;
    let reason = match e {
        E::MissingSectionEnd { end_marker } => format!(
            "a PEM block is cut short: its '{}' line is missing",
            String::from_utf8_lossy(&end_marker)
        ),
        E::IllegalSectionStart { line } => format!(
            "a PEM BEGIN line is malformed: '{}'",
            String::from_utf8_lossy(&line)
        ),
        E::Base64Decode(detail) => {
            format!("the base64 text inside a PEM block is damaged ({detail})")
        }
        E::NoItemsFound => "no PEM block of the expected kind found".into(),
        E::SectionTooLarge => "a PEM block is too large".into(),
        other => other.to_string(),
    };
    TlsConfigError::Pem { what, reason }
}

/// rustls' refusal of our own certificate and key, in words.
fn own_cert_error(e: rustls::Error) -> TlsConfigError {
    match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            TlsConfigError::KeyMismatch
        }
        // The key's DER does not parse as any key type TLS can sign with.
        rustls::Error::General(detail) => TlsConfigError::Pem {
            what: "key",
            reason: format!(
                "the private key cannot be used ({detail}): a damaged file, or a key type TLS cannot sign with"
            ),
        },
        e => TlsConfigError::Rustls(e),
    }
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
    server_config_with_policy(m, PeerCertPolicy::default())
}

/// [`server_config`] that also applies `policy` (`remote-cert-tls client`,
/// `verify-x509-name`, …) to each client certificate after its chain check.
pub fn server_config_with_policy(
    m: &TlsMaterial<'_>,
    policy: PeerCertPolicy,
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    server_config_with_client_cert(m, policy, ClientCertMode::Require)
}

/// `verify-client-cert`: whether the server asks for a client certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientCertMode {
    /// Not asked for (2.6's `SSL_VERIFY_NONE`): no CertificateRequest.
    None,
    /// Asked for; verified with `policy` when sent, a client may send none.
    Optional,
    #[default]
    Require,
}

/// [`server_config_with_policy`] with `verify-client-cert` `mode`.
pub fn server_config_with_client_cert(
    m: &TlsMaterial<'_>,
    policy: PeerCertPolicy,
    mode: ClientCertMode,
) -> Result<Arc<rustls::ServerConfig>, TlsConfigError> {
    let provider = provider_for(policy.profile);
    let roots = Arc::new(root_store(m.ca_pem)?);
    let crls = parse_crls(m.crls_pem)?;
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    if !crls.is_empty() {
        // Like OpenVPN: the client's own certificate is checked against the
        // CRL of its issuer, which must be there (unknown status refuses).
        builder = builder.with_crls(crls).only_check_end_entity_revocation();
    }
    let chain = builder
        .build()
        .map_err(|e| TlsConfigError::Verifier(e.to_string()))?;
    let verifier = Arc::new(OpenVpnClientVerifier {
        chain,
        policy,
        mode,
    });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(m.versions())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(m.chain()?, parse_key(m.key_pem)?)
        .map_err(own_cert_error)?;
    // Every OpenVPN key state is a fresh handshake; tickets would never be used.
    cfg.send_tls13_tickets = 0;
    cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    Ok(Arc::new(cfg))
}

/// How `verify-x509-name` compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum X509NameCheck {
    /// `verify-x509-name NAME name`: the common name equals NAME.
    CommonName(String),
    /// `verify-x509-name NAME name-prefix`: the common name starts with NAME.
    CommonNamePrefix(String),
    /// `verify-x509-name "C=.., CN=.." subject`: the whole subject, in the
    /// form [`PeerIdentity::subject`] describes.
    Subject(String),
}

/// The role `remote-cert-tls` or `ns-cert-type` demands of the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertRole {
    Server,
    Client,
}

/// `remote-cert-ku`: what the peer's Key Usage extension must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum KeyUsageCheck {
    /// No check.
    #[default]
    None,
    /// The extension must be present (`remote-cert-tls`, bare `remote-cert-ku`).
    Present,
    /// The extension must hold all bits of at least one of these values, in
    /// OpenVPN's numbering (digitalSignature = 0x80 … encipherOnly = 0x01).
    AnyOf(Vec<u32>),
}

/// The checks OpenVPN 2.6 applies to the peer's leaf certificate once its
/// chain is trusted (`ssl_verify.c: verify_peer_cert`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerCertPolicy {
    /// `remote-cert-ku` / `remote-cert-tls`.
    pub key_usage: KeyUsageCheck,
    /// `remote-cert-eku` / `remote-cert-tls`: an OID in dotted form or
    /// OpenSSL's long name ("TLS Web Client Authentication").
    pub eku: Option<String>,
    /// `ns-cert-type`: OpenSSL's SSL client/server purpose check, or the
    /// Netscape cert type bit when that check fails (as 2.6 does).
    pub ns_cert_type: Option<CertRole>,
    /// `verify-x509-name`.
    pub verify_name: Option<X509NameCheck>,
    /// `tls-cert-profile`.
    pub profile: CertProfile,
}

impl PeerCertPolicy {
    /// `remote-cert-tls server|client`: Key Usage present and the matching EKU.
    pub fn remote_cert_tls(role: CertRole) -> Self {
        PeerCertPolicy {
            key_usage: KeyUsageCheck::Present,
            eku: Some(
                match role {
                    CertRole::Server => "TLS Web Server Authentication",
                    CertRole::Client => "TLS Web Client Authentication",
                }
                .to_owned(),
            ),
            ..PeerCertPolicy::default()
        }
    }

    /// Whether a client with this policy checks the server's identity beyond
    /// the CA (OpenVPN 2.6 warns "No server certificate verification method
    /// has been enabled" otherwise).
    pub fn verifies_server(&self) -> bool {
        self.verify_name.is_some()
            || self.eku.is_some()
            || self.ns_cert_type == Some(CertRole::Server)
    }
}

/// Client-side certificate policy in its short form.
#[derive(Clone, Debug, Default)]
pub struct ServerCertPolicy {
    /// `remote-cert-tls server`: KeyUsage present and EKU serverAuth required.
    pub remote_cert_tls_server: bool,
    pub verify_name: Option<X509NameCheck>,
}

impl From<ServerCertPolicy> for PeerCertPolicy {
    fn from(p: ServerCertPolicy) -> Self {
        let mut out = if p.remote_cert_tls_server {
            PeerCertPolicy::remote_cert_tls(CertRole::Server)
        } else {
            PeerCertPolicy::default()
        };
        out.verify_name = p.verify_name;
        out
    }
}

/// Client-side config presenting our certificate and checking the server the OpenVPN way.
pub fn client_config(
    m: &TlsMaterial<'_>,
    policy: ServerCertPolicy,
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    client_config_with_policy(m, policy.into())
}

/// [`client_config`] with the full policy (`ns-cert-type`, `remote-cert-ku`, …).
pub fn client_config_with_policy(
    m: &TlsMaterial<'_>,
    policy: PeerCertPolicy,
) -> Result<Arc<rustls::ClientConfig>, TlsConfigError> {
    let provider = provider_for(policy.profile);
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
        builder
            .with_client_auth_cert(m.chain()?, parse_key(m.key_pem)?)
            .map_err(own_cert_error)?
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
    policy: PeerCertPolicy,
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
        check_peer_cert(end_entity, &self.policy).map_err(cert_err)?;
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

/// Server side: webpki checks the chain (and CRL), then the OpenVPN policy
/// (`remote-cert-tls client`, `verify-x509-name`, …) is applied to the leaf.
#[derive(Debug)]
struct OpenVpnClientVerifier {
    chain: Arc<dyn ClientCertVerifier>,
    policy: PeerCertPolicy,
    mode: ClientCertMode,
}

impl ClientCertVerifier for OpenVpnClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.mode != ClientCertMode::None && self.chain.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mode == ClientCertMode::Require && self.chain.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)?;
        check_peer_cert(end_entity, &self.policy).map_err(cert_err)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// DER of id-kp-serverAuth (1.3.6.1.5.5.7.3.1).
const EKU_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];

/// Longest common name OpenVPN 2.6 takes from a certificate (`TLS_USERNAME_LEN`);
/// a longer one fails verification there.
pub const MAX_COMMON_NAME_LEN: usize = 64;

/// The names OpenVPN 2.6 derives from a verified peer certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The LAST CN of the subject, control characters replaced by `_`
    /// (what 2.6 calls the common name: logs, status, pool-persist, duplicate-cn).
    pub common_name: String,
    /// The subject as OpenSSL prints it for OpenVPN (`C=US, O=Org, CN=name`,
    /// short attribute names, `, ` between RDNs, ` + ` inside one), control
    /// characters as `\XX`. Unlike 2.6, `\`, `,` and `+`
    /// inside a value are escaped with `\`, so that one attribute cannot pose
    /// as several.
    pub subject: String,
}

/// OpenVPN's `string_mod(CC_PRINT, CC_CRLF, '_')` on a name: control
/// characters (below 0x20, and DEL) become `_`; everything else, UTF-8
/// included, stays. Apply to a common name before any use other than the
/// certificate checks (logs, status files, pool-persist keys).
pub fn sanitize_common_name(name: &str) -> String {
    name.chars()
        .map(|c| if c < ' ' || c == '\x7f' { '_' } else { c })
        .collect()
}

/// Read the identity OpenVPN would: a verification failure when the subject
/// has no CN, or a CN longer than [`MAX_COMMON_NAME_LEN`] bytes.
pub fn peer_identity(der: &[u8]) -> Result<PeerIdentity, String> {
    use x509_parser::prelude::*;
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("certificate unreadable: {e}"))?;
    identity_of(&cert)
}

fn identity_of(
    cert: &x509_parser::certificate::X509Certificate<'_>,
) -> Result<PeerIdentity, String> {
    let subject = subject_openvpn_form(cert);
    let cn = cert
        .subject()
        .iter_common_name()
        .last()
        .ok_or_else(|| format!("certificate subject '{subject}' has no CN"))?;
    let cn = attribute_text(cn)
        .ok_or_else(|| format!("certificate subject '{subject}': CN is not a readable string"))?;
    if cn.len() > MAX_COMMON_NAME_LEN {
        return Err(format!(
            "certificate subject '{subject}': CN is longer than {MAX_COMMON_NAME_LEN} bytes"
        ));
    }
    Ok(PeerIdentity {
        common_name: sanitize_common_name(&cn),
        subject,
    })
}

/// Apply OpenVPN's peer certificate checks to a chain-verified leaf; the
/// identity on success, the reason (for logs) on failure.
pub fn check_peer_cert(der: &[u8], policy: &PeerCertPolicy) -> Result<PeerIdentity, String> {
    use x509_parser::prelude::*;
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| format!("certificate unreadable: {e}"))?;
    let id = identity_of(&cert)?;
    let subject = &id.subject;
    if let Some(role) = policy.ns_cert_type
        && !ns_cert_type_ok(&cert, role)
    {
        return Err(format!(
            "ns-cert-type: certificate '{subject}' is not an SSL {} certificate",
            match role {
                CertRole::Server => "server",
                CertRole::Client => "client",
            }
        ));
    }
    match &policy.key_usage {
        KeyUsageCheck::None => {}
        KeyUsageCheck::Present | KeyUsageCheck::AnyOf(_) => {
            let Ok(Some(ku)) = cert.key_usage() else {
                return Err(format!(
                    "certificate '{subject}' has no Key Usage extension (remote-cert-tls / remote-cert-ku)"
                ));
            };
            if let KeyUsageCheck::AnyOf(wanted) = &policy.key_usage {
                let have = openvpn_key_usage_bits(ku.value);
                if !wanted.iter().any(|&w| w != 0 && have & w == w) {
                    return Err(format!(
                        "remote-cert-ku: certificate '{subject}' has key usage {have:04x}, expected one of {}",
                        wanted
                            .iter()
                            .map(|w| format!("{w:04x}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        }
    }
    if let Some(want) = &policy.eku
        && !eku_oids(&cert).iter().any(|oid| eku_matches(oid, want))
    {
        // Name the directive as the operator wrote it (logs are read by people).
        let directive = match want.as_str() {
            "TLS Web Server Authentication" => "remote-cert-tls server (or remote-cert-eku)",
            "TLS Web Client Authentication" => "remote-cert-tls client (or remote-cert-eku)",
            _ => "remote-cert-eku",
        };
        return Err(format!(
            "{directive}: certificate '{subject}' lacks the extended key usage '{want}'"
        ));
    }
    if let Some(check) = &policy.verify_name {
        let cn = &id.common_name;
        let ok = match check {
            X509NameCheck::CommonName(n) => cn == n,
            X509NameCheck::CommonNamePrefix(p) => cn.starts_with(p.as_str()),
            X509NameCheck::Subject(s) => subject == s,
        };
        if !ok {
            let want = match check {
                X509NameCheck::CommonName(n) => format!("CN {n:?}"),
                X509NameCheck::CommonNamePrefix(p) => format!("a CN starting with {p:?}"),
                X509NameCheck::Subject(s) => format!("subject {s:?}"),
            };
            return Err(format!(
                "verify-x509-name: certificate '{subject}' is not {want}"
            ));
        }
    }
    Ok(id)
}

/// Key Usage bits numbered as OpenVPN prints and compares them:
/// digitalSignature 0x80, nonRepudiation 0x40, keyEncipherment 0x20,
/// dataEncipherment 0x10, keyAgreement 0x08, keyCertSign 0x04, cRLSign 0x02,
/// encipherOnly 0x01 (decipherOnly is not looked at).
fn openvpn_key_usage_bits(ku: &x509_parser::extensions::KeyUsage) -> u32 {
    (0..8)
        .filter(|i| ku.flags >> i & 1 == 1)
        .fold(0, |acc, i| acc | 1 << (7 - i))
}

/// The EKU OIDs of a certificate in dotted form (empty without the extension).
fn eku_oids(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(eku)) = cert.extended_key_usage() else {
        return Vec::new();
    };
    let e = eku.value;
    let known = [
        (e.any, "2.5.29.37.0"),
        (e.server_auth, "1.3.6.1.5.5.7.3.1"),
        (e.client_auth, "1.3.6.1.5.5.7.3.2"),
        (e.code_signing, "1.3.6.1.5.5.7.3.3"),
        (e.email_protection, "1.3.6.1.5.5.7.3.4"),
        (e.time_stamping, "1.3.6.1.5.5.7.3.8"),
        (e.ocsp_signing, "1.3.6.1.5.5.7.3.9"),
    ];
    known
        .iter()
        .filter(|(set, _)| *set)
        .map(|(_, oid)| (*oid).to_owned())
        .chain(e.other.iter().map(|o| o.to_id_string()))
        .collect()
}

/// OpenSSL's long names for the EKU OIDs OpenVPN configs name in words.
const EKU_LONG_NAMES: &[(&str, &str)] = &[
    ("2.5.29.37.0", "Any Extended Key Usage"),
    ("1.3.6.1.5.5.7.3.1", "TLS Web Server Authentication"),
    ("1.3.6.1.5.5.7.3.2", "TLS Web Client Authentication"),
    ("1.3.6.1.5.5.7.3.3", "Code Signing"),
    ("1.3.6.1.5.5.7.3.4", "E-mail Protection"),
    ("1.3.6.1.5.5.7.3.8", "Time Stamping"),
    ("1.3.6.1.5.5.7.3.9", "OCSP Signing"),
    ("1.3.6.1.5.5.7.3.5", "IPSec End System"),
    ("1.3.6.1.5.5.7.3.6", "IPSec Tunnel"),
    ("1.3.6.1.5.5.7.3.7", "IPSec User"),
    ("1.3.6.1.5.5.7.3.17", "ipsec Internet Key Exchange"),
    ("1.3.6.1.4.1.311.10.3.3", "Microsoft Server Gated Crypto"),
    ("2.16.840.1.113730.4.1", "Netscape Server Gated Crypto"),
    ("1.3.6.1.4.1.311.20.2.2", "Microsoft Smartcard Login"),
];

/// Whether `remote-cert-eku` can name this EKU: a dotted OID, or one of the
/// long names ferrovpn knows (OpenSSL knows more; others are refused at
/// start rather than never matching).
pub fn eku_name_is_known(want: &str) -> bool {
    let dotted = !want.is_empty()
        && want.split('.').count() >= 2
        && want
            .split('.')
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    dotted || EKU_LONG_NAMES.iter().any(|(_, name)| *name == want)
}

/// OpenVPN compares the configured text with both the long name and the
/// dotted form of each OID in the certificate.
fn eku_matches(oid: &str, want: &str) -> bool {
    oid == want
        || EKU_LONG_NAMES
            .iter()
            .any(|(o, name)| *o == oid && *name == want)
}

/// OpenSSL's `X509_check_purpose(SSL_CLIENT|SSL_SERVER)` for a leaf, with
/// 2.6's fallback to the Netscape cert type bit alone when that fails.
fn ns_cert_type_ok(cert: &x509_parser::certificate::X509Certificate<'_>, role: CertRole) -> bool {
    use x509_parser::extensions::ParsedExtension;
    let ns = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::NSCertType(t) => Some(*t),
            _ => None,
        });
    let ns_bit = |t: &x509_parser::extensions::NSCertType| match role {
        CertRole::Server => t.ssl_server(),
        CertRole::Client => t.ssl_client(),
    };
    let eku_ok = match cert.extended_key_usage() {
        Ok(Some(eku)) => match role {
            CertRole::Client => eku.value.client_auth,
            CertRole::Server => {
                eku.value.server_auth
                    || eku.value.other.iter().any(|o| {
                        let o = o.to_id_string();
                        o == "1.3.6.1.4.1.311.10.3.3" || o == "2.16.840.1.113730.4.1"
                    })
            }
        },
        _ => true,
    };
    let ku_ok = match cert.key_usage() {
        Ok(Some(ku)) => {
            let k = ku.value;
            match role {
                CertRole::Client => k.digital_signature() || k.key_agreement(),
                CertRole::Server => {
                    k.digital_signature() || k.key_encipherment() || k.key_agreement()
                }
            }
        }
        _ => true,
    };
    let ns_ok = ns.as_ref().is_none_or(ns_bit);
    (eku_ok && ku_ok && ns_ok) || ns.as_ref().is_some_and(ns_bit)
}

/// The text of a name attribute, converted to UTF-8 as OpenSSL's
/// `ASN1_STRING_to_UTF8` does; `None` for non-string or malformed values.
fn attribute_text(atv: &x509_parser::x509::AttributeTypeAndValue<'_>) -> Option<String> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let value = atv.attr_value();
    let data = value.data;
    match value.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_owned),
        // T61 is read as Latin-1, like OpenSSL does.
        Tag::T61String => Some(data.iter().map(|&b| char::from(b)).collect()),
        Tag::BmpString => {
            if data.len() % 2 != 0 {
                return None;
            }
            let units = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        Tag::UniversalString => {
            if data.len() % 4 != 0 {
                return None;
            }
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// OpenSSL's short names (`XN_FLAG_FN_SN`) for the attributes subjects use.
const ATTRIBUTE_SHORT_NAMES: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.4", "SN"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.9", "street"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.12", "title"),
    ("2.5.4.13", "description"),
    ("2.5.4.15", "businessCategory"),
    ("2.5.4.17", "postalCode"),
    ("2.5.4.41", "name"),
    ("2.5.4.42", "GN"),
    ("2.5.4.43", "initials"),
    ("2.5.4.44", "generationQualifier"),
    ("2.5.4.46", "dnQualifier"),
    ("2.5.4.65", "pseudonym"),
    ("2.5.4.97", "organizationIdentifier"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("1.3.6.1.4.1.311.60.2.1.1", "jurisdictionL"),
    ("1.3.6.1.4.1.311.60.2.1.2", "jurisdictionST"),
    ("1.3.6.1.4.1.311.60.2.1.3", "jurisdictionC"),
];

/// The subject's attributes as OpenSSL's short names and their text, in
/// certificate order: what 2.6 exports as `X509_{depth}_{name}` to scripts.
/// Attributes without a known short name or text are left out, as 2.6
/// leaves out those OpenSSL has no name for. `None` when `der` does not
/// parse.
pub fn subject_attributes(der: &[u8]) -> Option<Vec<(&'static str, String)>> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let mut out = Vec::new();
    for atv in cert.subject().iter_attributes() {
        let oid = atv.attr_type().to_id_string();
        let Some((_, name)) = ATTRIBUTE_SHORT_NAMES.iter().find(|(o, _)| *o == oid) else {
            continue;
        };
        if let Some(text) = attribute_text(atv) {
            out.push((*name, text));
        }
    }
    Some(out)
}

/// See [`PeerIdentity::subject`].
fn subject_openvpn_form(cert: &x509_parser::certificate::X509Certificate<'_>) -> String {
    let mut out = String::new();
    for (i, rdn) in cert.subject().iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push_str(" + ");
            }
            let oid = atv.attr_type().to_id_string();
            match ATTRIBUTE_SHORT_NAMES.iter().find(|(o, _)| *o == oid) {
                Some((_, name)) => out.push_str(name),
                None => out.push_str(&oid),
            }
            out.push('=');
            match attribute_text(atv) {
                Some(text) => push_escaped(&mut out, &text),
                // Not a string: its DER as `#hex` (RFC 4514).
                None => {
                    out.push('#');
                    for b in atv.attr_value().data {
                        out.push_str(&format!("{b:02X}"));
                    }
                }
            }
        }
    }
    out
}

fn push_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '\\' | ',' | '+' => {
                out.push('\\');
                out.push(c);
            }
            c if c < ' ' || c == '\x7f' => out.push_str(&format!("\\{:02X}", c as u32)),
            c => out.push(c),
        }
    }
}

fn authority_key_id<'a>(
    exts: &'a [x509_parser::extensions::X509Extension<'a>],
) -> Option<&'a [u8]> {
    exts.iter().find_map(|e| match e.parsed_extension() {
        x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(aki) => {
            aki.key_identifier.as_ref().map(|k| k.0)
        }
        _ => None,
    })
}

fn same_authority_key(a: Option<&[u8]>, b: Option<&[u8]>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// The common name of a certificate as OpenVPN 2.6 uses it: the last CN,
/// control characters replaced by `_` (see [`sanitize_common_name`]). For
/// logs, status files, `ifconfig-pool-persist` and `duplicate-cn`.
pub fn peer_common_name(der: &[u8]) -> Option<String> {
    peer_identity(der).ok().map(|id| id.common_name)
}

/// Whether one of `crls` (as read by [`parse_crls`]) revokes this
/// certificate: a CRL from its issuer (same issuer name and, where both
/// carry one, the same authority key identifier) listing its serial.
/// For closing established sessions after a `crl-verify` reload; the CRLs
/// come from the operator's file, their signatures are not checked here
/// (new handshakes check them in full).
pub fn is_revoked(crls: &[CertificateRevocationListDer<'_>], leaf_der: &[u8]) -> bool {
    use x509_parser::prelude::*;
    let Ok((_, leaf)) = X509Certificate::from_der(leaf_der) else {
        return false;
    };
    crls.iter().any(|c| {
        let Ok((_, crl)) = CertificateRevocationList::from_der(c) else {
            return false;
        };
        crl.issuer().as_raw() == leaf.issuer().as_raw()
            && same_authority_key(
                authority_key_id(leaf.extensions()),
                authority_key_id(crl.extensions()),
            )
            && crl
                .iter_revoked_certificates()
                .any(|r| r.raw_serial() == leaf.raw_serial())
    })
}

// The integration tests' CRL builder, shared with the unit tests below
// (declared here: a `#[path]` inside the inline `tests` module would be
// resolved under a `tls/tests/` directory that does not exist).
#[cfg(test)]
#[path = "../../tests/support/crl.rs"]
mod crl_support;

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
        super::crl_support::crl_pem(&ch.mid_issuer, serials)
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
            p.use_authority_key_identifier_extension = true;
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
        let provider = provider_for(CertProfile::default());
        let verifier = Arc::new(OpenVpnServerVerifier {
            roots: root_store(&ch.root).unwrap(),
            policy: PeerCertPolicy::default(),
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

    /// A leaf signed by the chain's intermediate, shaped by `f`; its DER.
    fn leaf_der(ch: &Chain, f: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::new()).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        f(&mut p);
        p.signed_by(&key, &ch.mid_issuer).unwrap().der().to_vec()
    }

    fn named(cn: &str) -> impl FnOnce(&mut CertificateParams) + '_ {
        move |p: &mut CertificateParams| {
            p.distinguished_name.push(DnType::CommonName, cn);
        }
    }

    fn policy_name(check: X509NameCheck) -> PeerCertPolicy {
        PeerCertPolicy {
            verify_name: Some(check),
            ..PeerCertPolicy::default()
        }
    }

    #[test]
    fn the_last_cn_counts_and_control_characters_become_underscores() {
        let ch = chain();
        // Two CN attributes (the second under the same OID written out).
        let der = leaf_der(&ch, |p| {
            p.distinguished_name.push(DnType::CountryName, "US");
            p.distinguished_name.push(DnType::CommonName, "server");
            p.distinguished_name
                .push(DnType::CustomDnType(vec![2, 5, 4, 3]), "evil");
        });
        let id = peer_identity(&der).unwrap();
        assert_eq!(id.common_name, "evil");
        assert_eq!(id.subject, "C=US, CN=server, CN=evil");
        let check = |c| check_peer_cert(&der, &policy_name(c));
        assert!(check(X509NameCheck::CommonName("server".into())).is_err());
        assert!(check(X509NameCheck::CommonName("evil".into())).is_ok());
        assert_eq!(peer_common_name(&der).as_deref(), Some("evil"));

        let der = leaf_der(&ch, named("a\nCLIENT_LIST,b\x7f"));
        let id = peer_identity(&der).unwrap();
        assert_eq!(id.common_name, "a_CLIENT_LIST,b_");
        assert_eq!(id.subject, "CN=a\\0ACLIENT_LIST\\,b\\7F");
        assert_eq!(sanitize_common_name("é\r\tok"), "é__ok");
    }

    #[test]
    fn subjects_escape_what_would_make_them_ambiguous() {
        let ch = chain();
        let der = leaf_der(&ch, |p| {
            p.distinguished_name
                .push(DnType::OrganizationName, "Corp, CN=vpn");
            p.distinguished_name.push(DnType::CommonName, "-x+y\\");
        });
        let id = peer_identity(&der).unwrap();
        assert_eq!(id.subject, "O=Corp\\, CN=vpn, CN=-x\\+y\\\\");
        assert!(
            check_peer_cert(
                &der,
                &policy_name(X509NameCheck::Subject("O=Corp, CN=vpn".into()))
            )
            .is_err()
        );
    }

    #[test]
    fn a_leaf_without_cn_or_with_a_long_one_is_refused() {
        let ch = chain();
        let der = leaf_der(&ch, |p| {
            p.distinguished_name.push(DnType::OrganizationName, "Org");
        });
        assert!(check_peer_cert(&der, &PeerCertPolicy::default()).is_err());
        let der = leaf_der(&ch, named(&"x".repeat(64)));
        assert!(check_peer_cert(&der, &PeerCertPolicy::default()).is_ok());
        let der = leaf_der(&ch, named(&"x".repeat(65)));
        let e = check_peer_cert(&der, &PeerCertPolicy::default()).unwrap_err();
        assert!(e.contains("longer than 64"), "{e}");
    }

    #[test]
    fn verify_x509_name_forms() {
        let ch = chain();
        let der = leaf_der(&ch, |p| {
            p.distinguished_name.push(DnType::CountryName, "DE");
            p.distinguished_name.push(DnType::OrganizationName, "Acme");
            p.distinguished_name.push(DnType::CommonName, "vpn-user-7");
        });
        let ok = |c| check_peer_cert(&der, &policy_name(c)).is_ok();
        assert!(ok(X509NameCheck::CommonName("vpn-user-7".into())));
        assert!(!ok(X509NameCheck::CommonName("vpn-user".into())));
        assert!(ok(X509NameCheck::CommonNamePrefix("vpn-user-".into())));
        assert!(!ok(X509NameCheck::CommonNamePrefix("vpn-admin-".into())));
        assert!(ok(X509NameCheck::Subject(
            "C=DE, O=Acme, CN=vpn-user-7".into()
        )));
        assert!(!ok(X509NameCheck::Subject("C=DE, CN=vpn-user-7".into())));
    }

    #[test]
    fn remote_cert_tls_needs_key_usage_and_the_eku() {
        let ch = chain();
        let client = |ku: bool, eku: Vec<ExtendedKeyUsagePurpose>| {
            leaf_der(&ch, move |p| {
                p.distinguished_name.push(DnType::CommonName, "c");
                if ku {
                    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
                }
                p.extended_key_usages = eku;
            })
        };
        let tls_client = PeerCertPolicy::remote_cert_tls(CertRole::Client);
        let tls_server = PeerCertPolicy::remote_cert_tls(CertRole::Server);
        let good = client(true, vec![ExtendedKeyUsagePurpose::ClientAuth]);
        assert!(check_peer_cert(&good, &tls_client).is_ok());
        let e = check_peer_cert(&good, &tls_server).unwrap_err();
        assert!(e.starts_with("remote-cert-tls server"), "{e}");
        // No EKU at all: webpki lets it through, OpenVPN's check does not.
        assert!(check_peer_cert(&client(true, vec![]), &tls_client).is_err());
        // No Key Usage extension.
        let no_ku = client(false, vec![ExtendedKeyUsagePurpose::ClientAuth]);
        assert!(check_peer_cert(&no_ku, &tls_client).is_err());
        // remote-cert-eku by dotted OID; remote-cert-ku by value.
        let by_oid = PeerCertPolicy {
            eku: Some("1.3.6.1.5.5.7.3.2".into()),
            ..PeerCertPolicy::default()
        };
        assert!(check_peer_cert(&good, &by_oid).is_ok());
        let ku = |v: Vec<u32>| PeerCertPolicy {
            key_usage: KeyUsageCheck::AnyOf(v),
            ..PeerCertPolicy::default()
        };
        assert!(check_peer_cert(&good, &ku(vec![0xa0, 0x80])).is_ok());
        assert!(check_peer_cert(&good, &ku(vec![0xa0])).is_err());
        assert!(eku_name_is_known("TLS Web Client Authentication"));
        assert!(eku_name_is_known("1.2.3.4"));
        assert!(!eku_name_is_known("clientAuth"));
    }

    #[test]
    fn ns_cert_type_is_openssls_purpose_check() {
        let ch = chain();
        // nsCertType 2.16.840.1.113730.1.1: BIT STRING, 0x80 = SSL client, 0x40 = SSL server.
        let ns = |bits: u8| {
            rcgen::CustomExtension::from_oid_content(
                &[2, 16, 840, 1, 113730, 1, 1],
                vec![0x03, 0x02, 0x00, bits],
            )
        };
        let cert = |eku: Vec<ExtendedKeyUsagePurpose>, ns_bits: Option<u8>| {
            leaf_der(&ch, move |p| {
                p.distinguished_name.push(DnType::CommonName, "x");
                p.key_usages = vec![
                    KeyUsagePurpose::DigitalSignature,
                    KeyUsagePurpose::KeyEncipherment,
                ];
                p.extended_key_usages = eku;
                p.custom_extensions = ns_bits.into_iter().map(ns).collect();
            })
        };
        let want = |role| PeerCertPolicy {
            ns_cert_type: Some(role),
            ..PeerCertPolicy::default()
        };
        let server = cert(vec![ExtendedKeyUsagePurpose::ServerAuth], None);
        let client = cert(vec![ExtendedKeyUsagePurpose::ClientAuth], None);
        assert!(check_peer_cert(&server, &want(CertRole::Server)).is_ok());
        assert!(check_peer_cert(&client, &want(CertRole::Server)).is_err());
        assert!(check_peer_cert(&client, &want(CertRole::Client)).is_ok());
        // Neither EKU nor nsCertType: OpenSSL's purpose check passes.
        assert!(check_peer_cert(&cert(vec![], None), &want(CertRole::Server)).is_ok());
        // An easy-rsa 2 style server certificate: nsCertType server only.
        let legacy = cert(vec![], Some(0x40));
        assert!(check_peer_cert(&legacy, &want(CertRole::Server)).is_ok());
        assert!(check_peer_cert(&legacy, &want(CertRole::Client)).is_err());
        // nsCertType rescues a certificate whose EKU says otherwise (2.6's fallback).
        let mixed = cert(vec![ExtendedKeyUsagePurpose::ClientAuth], Some(0x40));
        assert!(check_peer_cert(&mixed, &want(CertRole::Server)).is_ok());
    }

    #[test]
    fn server_applies_the_client_policy_after_the_chain() {
        let ch = chain();
        let server = |policy| {
            server_config_with_policy(
                &TlsMaterial {
                    ca_pem: &ch.root,
                    cert_pem: &ch.server.0,
                    key_pem: &ch.server.1,
                    extra_certs_pem: &ch.intermediate,
                    tls13_only: false,
                    crls_pem: "",
                },
                policy,
            )
            .unwrap()
        };
        let (_, client) = configs(&ch, &ch.intermediate, false, false);
        // The chain's client certificate has CN "client".
        let name = |n: &str| policy_name(X509NameCheck::CommonName(n.into()));
        assert!(handshake(server(name("client")), client.clone()).is_ok());
        let e = handshake(server(name("client1")), client.clone()).unwrap_err();
        assert!(format!("{e}").contains("verify-x509-name"), "{e}");
        assert!(
            handshake(
                server(PeerCertPolicy::remote_cert_tls(CertRole::Client)),
                client.clone()
            )
            .is_ok()
        );
        assert!(
            handshake(
                server(PeerCertPolicy::remote_cert_tls(CertRole::Server)),
                client
            )
            .is_err()
        );
    }

    #[test]
    fn is_revoked_finds_the_leaf_in_its_issuers_crl() {
        let ch = chain();
        let client = parse_certs("c", &ch.client.0).unwrap().remove(0);
        let server = parse_certs("s", &ch.server.0).unwrap().remove(0);
        let crls = parse_crls(&crl(&ch, &[3])).unwrap();
        assert!(is_revoked(&crls, &client));
        assert!(!is_revoked(&crls, &server));
        assert!(!is_revoked(&[], &client));
        // The same serial in another issuer's CRL says nothing.
        let other = chain();
        assert!(!is_revoked(
            &parse_crls(&crl(&other, &[3])).unwrap(),
            &client
        ));
        assert!(!is_revoked(&crls, b"garbage"));
    }

    #[test]
    fn material_errors_say_what_is_wrong() {
        let ch = chain();
        let material = |cert: &'static str, key: String| {
            let m = TlsMaterial {
                ca_pem: &ch.root,
                cert_pem: cert,
                key_pem: &key,
                extra_certs_pem: "",
                tls13_only: false,
                crls_pem: "",
            };
            server_config(&m)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let cert: &'static str = Box::leak(ch.server.0.clone().into_boxed_str());
        let other_key = KeyPair::generate().unwrap().serialize_pem();
        let e = material(cert, other_key);
        assert!(e.contains("does not belong to the certificate"), "{e}");
        let e = material(cert, "nothing here".into());
        assert!(e.contains("no private key block"), "{e}");
        let e = material(
            cert,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n"
                .into(),
        );
        assert!(e.contains("passphrase-protected"), "{e}");
        let e = material(
            cert,
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n".into(),
        );
        assert!(e.contains("passphrase-protected"), "{e}");
        let e = material(
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            ch.server.1.clone(),
        );
        assert!(
            e.contains("cert: the base64 text inside a PEM block is damaged"),
            "{e}"
        );
        let e = material("-----BEGIN CERTIFICATE-----\nAAAA\n", ch.server.1.clone());
        assert!(e.contains("cut short"), "{e}");
    }
}
