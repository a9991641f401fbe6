//! Throwaway PKI for tests, the demo and the benchmark.
//!
//! [`Pki::generate`] writes PEM files into a directory:
//!
//! | file | what |
//! |---|---|
//! | `ca.crt`, `ca.key` | CA (keyCertSign, cRLSign) |
//! | `server.crt`, `server.key` | server: digitalSignature+keyEncipherment, EKU serverAuth, CN `server`, SAN `server` |
//! | `server-nosan.crt`, `server-nosan.key` | the same without any SAN (like easy-rsa PKIs of old) |
//! | `server-noeku.crt`, `server-noeku.key` | CN `server`, key usage but no extended key usage (fails `remote-cert-tls server`) |
//! | `clientN.crt`, `clientN.key` | clients 1..=N: EKU clientAuth, CN `clientN` |
//! | `foreign-ca.crt`, `foreign-ca.key` | an unrelated CA |
//! | `foreign-client.crt`, `foreign-client.key` | a client signed by the foreign CA (must be rejected) |
//! | `crl-empty.pem` | a CRL from the CA that revokes nothing |
//! | `crl-revoking.pem` | a CRL from the CA that revokes the last client and `server-nosan` |
//!
//! Keys are EC P-256 or RSA-2048 (rcgen with aws-lc-rs generates RSA keys).
//! Private keys are PKCS#8 PEM (`BEGIN PRIVATE KEY`).
//!
//! tls-crypt-v2 keys are made apart, by ferrovpn's code
//! ([`write_tls_crypt_v2_server_key`], [`write_tls_crypt_v2_client_key`])
//! or by stock OpenVPN ([`stock_tls_crypt_v2_server_key`],
//! [`stock_tls_crypt_v2_client_key`]), so a test can mix the two.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, RsaKeySize, SerialNumber,
};

/// Key algorithm for every key of the PKI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    /// ECDSA P-256 with SHA-256 (fast; the default).
    #[default]
    EcP256,
    /// RSA-2048 with SHA-256 (PKCS#1 v1.5 signatures).
    Rsa2048,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct PkiOptions {
    /// Key algorithm.
    pub key_type: KeyType,
    /// Number of client certificates (`client1` ..= `clientN`).
    pub clients: usize,
}

impl Default for PkiOptions {
    fn default() -> Self {
        PkiOptions {
            key_type: KeyType::EcP256,
            clients: 2,
        }
    }
}

/// A certificate and its private key, as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertKey {
    /// Common name of the subject.
    pub cn: String,
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8).
    pub key: PathBuf,
}

/// Paths of a generated PKI.
#[derive(Debug, Clone)]
pub struct Pki {
    /// Directory holding all files.
    pub dir: PathBuf,
    /// The CA.
    pub ca: CertKey,
    /// Server certificate with CN `server` and SAN DNS `server`.
    pub server: CertKey,
    /// Server certificate with CN `server` and no SAN extension at all.
    pub server_nosan: CertKey,
    /// Certificate with CN `server`, key usage, and no extended key usage:
    /// chain-valid for a server, rejected by `remote-cert-tls server`.
    pub server_noeku: CertKey,
    /// Client certificates, `client1` first.
    pub clients: Vec<CertKey>,
    /// An unrelated CA.
    pub foreign_ca: CertKey,
    /// A client signed by `foreign_ca` (CN `foreign-client`).
    pub foreign_client: CertKey,
    /// PEM CRL from the CA revoking nothing.
    pub crl_empty: PathBuf,
    /// PEM CRL from the CA revoking the last client and `server_nosan`.
    pub crl_revoking: PathBuf,
}

/// Write a CRL signed by `ca` that revokes `serials`.
fn write_crl(ca: &Ca, path: &Path, serials: &[u64]) -> Result<PathBuf> {
    let params = CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2025, 1, 1),
        next_update: rcgen::date_time_ymd(2099, 1, 1),
        crl_number: SerialNumber::from(serials.len() as u64 + 1),
        issuing_distribution_point: None,
        revoked_certs: serials
            .iter()
            .map(|&s| RevokedCertParams {
                serial_number: SerialNumber::from(s),
                revocation_time: rcgen::date_time_ymd(2025, 1, 2),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&ca.issuer).context("signing a CRL")?;
    std::fs::write(path, crl.pem().context("CRL to PEM")?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

fn new_key(kt: KeyType) -> Result<KeyPair> {
    match kt {
        KeyType::EcP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating an EC P-256 key"),
        KeyType::Rsa2048 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
            .context("generating an RSA-2048 key"),
    }
}

fn base_params(cn: &str, serial: u64) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2049, 12, 31);
    p.serial_number = Some(SerialNumber::from(serial));
    p.use_authority_key_identifier_extension = true;
    p
}

fn write_pair(dir: &Path, stem: &str, cn: &str, cert_pem: &str, key: &KeyPair) -> Result<CertKey> {
    let cert = dir.join(format!("{stem}.crt"));
    let keyp = dir.join(format!("{stem}.key"));
    std::fs::write(&cert, cert_pem).with_context(|| format!("writing {}", cert.display()))?;
    write_private(&keyp, &key.serialize_pem())?;
    Ok(CertKey {
        cn: cn.to_string(),
        cert,
        key: keyp,
    })
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    files: CertKey,
}

fn make_ca(dir: &Path, stem: &str, cn: &str, kt: KeyType, serial: u64) -> Result<Ca> {
    let key = new_key(kt)?;
    let mut p = base_params(cn, serial);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.use_authority_key_identifier_extension = false;
    let cert = p.self_signed(&key).context("self-signing the CA")?;
    let files = write_pair(dir, stem, cn, &cert.pem(), &key)?;
    Ok(Ca {
        issuer: Issuer::new(p, key),
        files,
    })
}

#[allow(clippy::too_many_arguments)]
fn make_leaf(
    dir: &Path,
    ca: &Ca,
    stem: &str,
    cn: &str,
    sans: &[&str],
    eku: Option<ExtendedKeyUsagePurpose>,
    kt: KeyType,
    serial: u64,
) -> Result<CertKey> {
    let key = new_key(kt)?;
    let mut p = base_params(cn, serial);
    p.subject_alt_names =
        CertificateParams::new(sans.iter().map(|s| (*s).to_string()).collect::<Vec<_>>())
            .context("SAN")?
            .subject_alt_names;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = eku.into_iter().collect();
    let cert = p
        .signed_by(&key, &ca.issuer)
        .with_context(|| format!("signing {cn}"))?;
    write_pair(dir, stem, cn, &cert.pem(), &key)
}

impl Pki {
    /// Generate a fresh PKI into `dir` (created if missing; existing files are overwritten).
    pub fn generate(dir: &Path, opts: &PkiOptions) -> Result<Pki> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let kt = opts.key_type;
        let ca = make_ca(dir, "ca", "ferrovpn test CA", kt, 1)?;
        let server = make_leaf(
            dir,
            &ca,
            "server",
            "server",
            &["server"],
            Some(ExtendedKeyUsagePurpose::ServerAuth),
            kt,
            2,
        )?;
        let server_nosan = make_leaf(
            dir,
            &ca,
            "server-nosan",
            "server",
            &[],
            Some(ExtendedKeyUsagePurpose::ServerAuth),
            kt,
            3,
        )?;
        let server_noeku = make_leaf(dir, &ca, "server-noeku", "server", &[], None, kt, 4)?;
        let mut clients = Vec::with_capacity(opts.clients);
        for i in 1..=opts.clients {
            let cn = format!("client{i}");
            clients.push(make_leaf(
                dir,
                &ca,
                &cn,
                &cn,
                &[],
                Some(ExtendedKeyUsagePurpose::ClientAuth),
                kt,
                100 + i as u64,
            )?);
        }
        let foreign = make_ca(dir, "foreign-ca", "foreign CA", kt, 1)?;
        let foreign_client = make_leaf(
            dir,
            &foreign,
            "foreign-client",
            "foreign-client",
            &[],
            Some(ExtendedKeyUsagePurpose::ClientAuth),
            kt,
            2,
        )?;
        let crl_empty = write_crl(&ca, &dir.join("crl-empty.pem"), &[])?;
        // Serials: server-nosan 3, clients 100 + i.
        let crl_revoking = write_crl(
            &ca,
            &dir.join("crl-revoking.pem"),
            &[3, 100 + opts.clients as u64],
        )?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            crl_empty,
            crl_revoking,
            ca: ca.files,
            server,
            server_nosan,
            server_noeku,
            clients,
            foreign_ca: foreign.files,
            foreign_client,
        })
    }

    /// The client certificate `crl_revoking` revokes (the last one).
    pub fn revoked_client(&self) -> &CertKey {
        self.clients.last().expect("a PKI has at least one client")
    }

    /// A copy of `who`'s key encrypted with `passphrase` as `how` says, as
    /// `file_name` in the PKI's directory; returns its path.
    pub fn encrypted_key(
        &self,
        who: &CertKey,
        file_name: &str,
        passphrase: &str,
        how: KeyEncryption,
    ) -> Result<PathBuf> {
        let out = self.dir.join(file_name);
        encrypt_key(&who.key, &out, passphrase, how)?;
        Ok(out)
    }
}

/// Write a fresh tls-crypt-v2 server key to `path`, as
/// `openvpn --genkey tls-crypt-v2-server` does.
pub fn write_tls_crypt_v2_server_key(path: &Path) -> Result<()> {
    std::fs::write(
        path,
        ferrovpn_proto::tls_crypt_v2::ServerKey::generate_file_text(),
    )
    .with_context(|| format!("writing {}", path.display()))
}

/// Write a fresh tls-crypt-v2 client key wrapped by the server key in
/// `server_key`, with USER metadata `user_metadata`.
pub fn write_tls_crypt_v2_client_key(
    server_key: &Path,
    path: &Path,
    user_metadata: &[u8],
) -> Result<()> {
    use ferrovpn_proto::tls_crypt_v2::{ClientKey, Metadata, ServerKey};
    let text = std::fs::read_to_string(server_key)
        .with_context(|| format!("reading {}", server_key.display()))?;
    let server = ServerKey::parse(&text)?;
    let key = ClientKey::generate(&server, &Metadata::user(user_metadata))?;
    std::fs::write(path, key.to_file_text()).with_context(|| format!("writing {}", path.display()))
}

/// Stock `openvpn --genkey tls-crypt-v2-server PATH`.
pub fn stock_tls_crypt_v2_server_key(path: &Path) -> Result<()> {
    stock_genkey(&[
        "--genkey".as_ref(),
        "tls-crypt-v2-server".as_ref(),
        path.as_os_str(),
    ])
}

/// Stock `openvpn --tls-crypt-v2 SERVER_KEY --genkey tls-crypt-v2-client
/// PATH`, with TIMESTAMP metadata (OpenVPN's default).
pub fn stock_tls_crypt_v2_client_key(server_key: &Path, path: &Path) -> Result<()> {
    stock_genkey(&[
        "--tls-crypt-v2".as_ref(),
        server_key.as_os_str(),
        "--genkey".as_ref(),
        "tls-crypt-v2-client".as_ref(),
        path.as_os_str(),
    ])
}

fn stock_genkey(args: &[&std::ffi::OsStr]) -> Result<()> {
    run_tool("openvpn", "stock openvpn not found", args)
}

/// Run the `openssl` CLI (what easy-rsa and the OpenVPN docs use to make
/// these files), failing with its output.
fn openssl_cli(args: &[&std::ffi::OsStr]) -> Result<()> {
    run_tool(
        "openssl",
        "the openssl CLI is required (apt-get install openssl)",
        args,
    )
}

/// Run `tool` (see [`crate::find_tool`]) with `args` to completion, failing
/// with its stderr; `missing` is the error when it is not installed.
fn run_tool(tool: &str, missing: &'static str, args: &[&std::ffi::OsStr]) -> Result<()> {
    let path = crate::find_tool(tool).context(missing)?;
    let out = std::process::Command::new(path)
        .args(args)
        .output()
        .with_context(|| format!("running {tool}"))?;
    anyhow::ensure!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// How [`encrypt_key`] protects a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyEncryption {
    /// `openssl pkey -aes256`: PKCS#8 `ENCRYPTED PRIVATE KEY`, PBES2 with
    /// PBKDF2-HMAC-SHA256 and AES-256-CBC (OpenSSL 3's and easy-rsa's default).
    Pkcs8Aes256,
    /// `openssl pkey -des3`: PKCS#8 PBES2 with DES-EDE3-CBC (OpenSSL 1.1's
    /// `req` default, found in older easy-rsa PKIs).
    Pkcs8Des3,
    /// `openssl pkey -traditional -aes128`: `Proc-Type: 4,ENCRYPTED` PEM.
    TraditionalAes128,
    /// `openssl pkey -traditional -des3`.
    TraditionalDes3,
}

/// Write `key` encrypted with `passphrase` to `out` (mode 0600).
pub fn encrypt_key(key: &Path, out: &Path, passphrase: &str, how: KeyEncryption) -> Result<()> {
    let pass = format!("pass:{passphrase}");
    let how_args: &[&str] = match how {
        KeyEncryption::Pkcs8Aes256 => &["-aes256"],
        KeyEncryption::Pkcs8Des3 => &["-des3"],
        KeyEncryption::TraditionalAes128 => &["-traditional", "-aes128"],
        KeyEncryption::TraditionalDes3 => &["-traditional", "-des3"],
    };
    let mut args: Vec<&std::ffi::OsStr> = vec!["pkey".as_ref(), "-in".as_ref(), key.as_os_str()];
    args.extend(how_args.iter().map(std::ffi::OsStr::new));
    args.extend([
        std::ffi::OsStr::new("-passout"),
        pass.as_ref(),
        "-out".as_ref(),
        out.as_os_str(),
    ]);
    openssl_cli(&args)?;
    let text = std::fs::read_to_string(out)?;
    write_private(out, &text)
}

/// `openssl pkcs12 -export` of `who`'s certificate and key with the CA
/// certificate `ca` (if any) to `out`, protected by `password` (may be
/// empty). `legacy`: the RC2-40/3DES + SHA-1 MAC file OpenSSL 1.1 wrote
/// (`-legacy`); otherwise OpenSSL 3's default (PBES2 AES-256-CBC, SHA-256 MAC).
pub fn export_pkcs12(
    who: &CertKey,
    ca: Option<&Path>,
    out: &Path,
    password: &str,
    legacy: bool,
) -> Result<()> {
    let pass = format!("pass:{password}");
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "pkcs12".as_ref(),
        "-export".as_ref(),
        "-in".as_ref(),
        who.cert.as_os_str(),
        "-inkey".as_ref(),
        who.key.as_os_str(),
        "-passout".as_ref(),
        pass.as_ref(),
        "-out".as_ref(),
        out.as_os_str(),
    ];
    if let Some(ca) = ca {
        args.extend([std::ffi::OsStr::new("-certfile"), ca.as_os_str()]);
    }
    if legacy {
        args.push("-legacy".as_ref());
    }
    openssl_cli(&args)
}

/// A CA with a 1024-bit RSA key (what old PKIs still have; webpki refuses
/// it, OpenVPN 2.6's default `tls-cert-profile legacy` accepts it), and a
/// server and a client certificate it signs (RSA-2048, SHA-256), made with
/// the openssl CLI in `dir`.
pub struct Rsa1024Pki {
    pub ca: PathBuf,
    pub server: CertKey,
    pub client: CertKey,
}

/// Make an [`Rsa1024Pki`] in `dir`.
pub fn rsa1024_pki(dir: &Path) -> Result<Rsa1024Pki> {
    std::fs::create_dir_all(dir)?;
    let p = |n: &str| dir.join(n);
    let ca_key = p("ca1024.key");
    let ca = p("ca1024.crt");
    openssl_cli(&[
        "req".as_ref(),
        "-x509".as_ref(),
        "-newkey".as_ref(),
        "rsa:1024".as_ref(),
        "-nodes".as_ref(),
        "-sha256".as_ref(),
        "-days".as_ref(),
        "30".as_ref(),
        "-subj".as_ref(),
        "/CN=RSA-1024 CA".as_ref(),
        "-addext".as_ref(),
        "basicConstraints=critical,CA:TRUE".as_ref(),
        "-addext".as_ref(),
        "keyUsage=critical,keyCertSign,cRLSign".as_ref(),
        "-keyout".as_ref(),
        ca_key.as_os_str(),
        "-out".as_ref(),
        ca.as_os_str(),
    ])?;
    let leaf = |stem: &str, cn: &str, eku: &str| -> Result<CertKey> {
        let key = p(&format!("{stem}.key"));
        let csr = p(&format!("{stem}.csr"));
        let cert = p(&format!("{stem}.crt"));
        let ext = p(&format!("{stem}.ext"));
        std::fs::write(
            &ext,
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={eku}\n"
            ),
        )?;
        openssl_cli(&[
            "req".as_ref(),
            "-new".as_ref(),
            "-newkey".as_ref(),
            "rsa:2048".as_ref(),
            "-nodes".as_ref(),
            "-subj".as_ref(),
            format!("/CN={cn}").as_ref(),
            "-keyout".as_ref(),
            key.as_os_str(),
            "-out".as_ref(),
            csr.as_os_str(),
        ])?;
        openssl_cli(&[
            "x509".as_ref(),
            "-req".as_ref(),
            "-in".as_ref(),
            csr.as_os_str(),
            "-CA".as_ref(),
            ca.as_os_str(),
            "-CAkey".as_ref(),
            ca_key.as_os_str(),
            "-CAcreateserial".as_ref(),
            "-sha256".as_ref(),
            "-days".as_ref(),
            "30".as_ref(),
            "-extfile".as_ref(),
            ext.as_os_str(),
            "-out".as_ref(),
            cert.as_os_str(),
        ])?;
        let text = std::fs::read_to_string(&key)?;
        write_private(&key, &text)?;
        Ok(CertKey {
            cn: cn.into(),
            cert,
            key,
        })
    };
    let server = leaf("server1024", "server", "serverAuth")?;
    let client = leaf("client1024", "client1", "clientAuth")?;
    Ok(Rsa1024Pki { ca, server, client })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn tmpdir(tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "fvpn-pki-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn openssl(args: &[&str]) -> (bool, String) {
        let out = Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl CLI is required for the PKI tests (apt-get install openssl)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success() && text.contains(": OK"), text)
    }

    fn verify(ca: &Path, purpose: &str, cert: &Path) -> (bool, String) {
        openssl(&[
            "verify",
            "-purpose",
            purpose,
            "-CAfile",
            ca.to_str().unwrap(),
            cert.to_str().unwrap(),
        ])
    }

    fn text(cert: &Path) -> String {
        let out = Command::new("openssl")
            .args(["x509", "-noout", "-text", "-in", cert.to_str().unwrap()])
            .output()
            .expect("openssl CLI");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn check(kt: KeyType) {
        let dir = tmpdir(&format!("{kt:?}"));
        let pki = Pki::generate(
            &dir,
            &PkiOptions {
                key_type: kt,
                clients: 3,
            },
        )
        .unwrap();
        let ca = &pki.ca.cert;
        for s in [&pki.server, &pki.server_nosan] {
            let (ok, t) = verify(ca, "sslserver", &s.cert);
            assert!(ok, "{}: {t}", s.cert.display());
            let (ok, _) = verify(ca, "sslclient", &s.cert);
            assert!(!ok, "server cert must not pass as a client cert");
        }
        assert_eq!(pki.clients.len(), 3);
        for (i, c) in pki.clients.iter().enumerate() {
            assert_eq!(c.cn, format!("client{}", i + 1));
            let (ok, t) = verify(ca, "sslclient", &c.cert);
            assert!(ok, "{}: {t}", c.cert.display());
            let (ok, _) = verify(ca, "sslserver", &c.cert);
            assert!(!ok, "client cert must not pass as a server cert");
        }
        let (ok, t) = verify(&pki.foreign_ca.cert, "sslclient", &pki.foreign_client.cert);
        assert!(ok, "{t}");
        let (ok, _) = verify(ca, "sslclient", &pki.foreign_client.cert);
        assert!(!ok, "foreign client must not verify against the CA");

        let st = text(&pki.server.cert);
        assert!(st.contains("Subject: CN = server"), "{st}");
        assert!(st.contains("DNS:server"), "{st}");
        assert!(st.contains("Digital Signature, Key Encipherment"), "{st}");
        assert!(st.contains("TLS Web Server Authentication"), "{st}");
        let et = text(&pki.server_noeku.cert);
        assert!(!et.contains("Extended Key Usage"), "{et}");
        assert!(et.contains("Digital Signature, Key Encipherment"), "{et}");
        let (ok, t) = verify(ca, "sslserver", &pki.server_noeku.cert);
        assert!(ok, "no EKU is chain-valid for a server: {t}");
        let nt = text(&pki.server_nosan.cert);
        assert!(!nt.contains("Subject Alternative Name"), "{nt}");
        let ct = text(&pki.ca.cert);
        assert!(ct.contains("CA:TRUE"), "{ct}");
        assert!(ct.contains("Certificate Sign, CRL Sign"), "{ct}");
        let algo = match kt {
            KeyType::EcP256 => "id-ecPublicKey",
            KeyType::Rsa2048 => "(2048 bit)",
        };
        assert!(st.contains(algo), "{st}");
        // Keys parse and match their certificates.
        for c in [&pki.server, &pki.clients[0]] {
            let out = Command::new("openssl")
                .args(["pkey", "-in", c.key.to_str().unwrap(), "-pubout"])
                .output()
                .unwrap();
            let out2 = Command::new("openssl")
                .args(["x509", "-in", c.cert.to_str().unwrap(), "-noout", "-pubkey"])
                .output()
                .unwrap();
            assert!(out.status.success());
            assert_eq!(out.stdout, out2.stdout, "key/cert mismatch for {}", c.cn);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ec_pki_verifies_with_openssl() {
        check(KeyType::EcP256);
    }

    #[test]
    fn rsa_pki_verifies_with_openssl() {
        check(KeyType::Rsa2048);
    }
}
