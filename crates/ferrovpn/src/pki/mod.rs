//! `ferrovpn init` and `ferrovpn client ...`: a server's own PKI, with no
//! easy-rsa and no shell. Layout of the directory `init` makes:
//!
//! | path | what | mode |
//! |---|---|---|
//! | `server.conf` | the server's config, OpenVPN syntax, commented | 0644 |
//! | `pki/ca.crt`, `pki/ca.key` | the CA (the key never leaves its file) | 0644, 0600 |
//! | `pki/server.crt`, `pki/server.key` | the server's certificate | 0644, 0600 |
//! | `pki/tls-crypt-v2-server.key` | the tls-crypt-v2 server key (default) | 0600 |
//! | `pki/tls-crypt.key` | the shared tls-crypt key (`init --tls-crypt` instead) | 0600 |
//! | `pki/crl.pem` | the CRL, rewritten at each revocation (the server re-reads it) | 0644 |
//! | `pki/index.json` | what was issued and revoked, and the profile settings | 0600 |
//! | `pki/issued/NAME.crt` | each client's current certificate | 0644 |
//! | `clients/NAME.ovpn` | each client's inline profile (holds its key) | 0600 |
//! | `state/` | status file, address pool file, management socket; owned by the unprivileged user | 0750 |
//!
//! Certificates come from rcgen, which loads the CA back from its PEM with
//! x509-parser. Keys are EC P-256, or RSA-3072 when asked.

mod index;
pub mod init;
mod profile;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ferrovpn_proto::tls_crypt_v2::{ClientKey, Metadata, ServerKey};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, RsaKeySize, SerialNumber,
};
use time::OffsetDateTime;

pub use self::index::{Index, Issued, KeyType, ProfileSettings};

/// Days a client certificate is valid unless `--days` says otherwise (easy-rsa's default).
pub const DEFAULT_CLIENT_DAYS: u32 = 825;
/// Days the CA and the server certificate are valid.
pub const CA_DAYS: u32 = 3650;
/// Days until a CRL's nextUpdate. It is rewritten at each revocation; the
/// long period keeps a stock OpenVPN server that uses this PKI from refusing
/// everyone when nobody revoked anything for a while.
const CRL_DAYS: u32 = 3650;
/// The tls-crypt-v2 server key, relative to the directory.
pub const TLS_CRYPT_V2_SERVER_KEY: &str = "pki/tls-crypt-v2-server.key";
/// The shared tls-crypt key (`init --tls-crypt`), relative to the directory.
pub const TLS_CRYPT_KEY: &str = "pki/tls-crypt.key";

/// The PKI of a directory made by `ferrovpn init`.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// The PKI under `dir`; fails when `dir` was not made by `ferrovpn init`.
    pub fn open(dir: &Path) -> anyhow::Result<Pki> {
        let pki = Pki {
            dir: dir.to_path_buf(),
        };
        if !pki.path("pki/index.json").is_file() {
            bail!(
                "{} has no PKI made by 'ferrovpn init' (no pki/index.json); give the directory with --dir",
                dir.display()
            );
        }
        Ok(pki)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Where `NAME.ovpn` is written.
    pub fn profile_path(&self, name: &str) -> PathBuf {
        self.path(&format!("clients/{name}.ovpn"))
    }

    /// The management socket the generated server.conf opens.
    pub fn management_socket(&self) -> PathBuf {
        self.path("state/management.sock")
    }

    /// Run `f` on the index while holding its lock, and save what it left.
    fn with_index<T>(&self, f: impl FnOnce(&mut Index) -> anyhow::Result<T>) -> anyhow::Result<T> {
        let lock_path = self.path("pki/index.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
            .with_context(|| format!("locking {}", lock_path.display()))?;
        let index_path = self.path("pki/index.json");
        let mut index = Index::load(&index_path)?;
        let out = f(&mut index)?;
        index.save(&index_path)?;
        Ok(out)
    }

    /// A read-only look at the index.
    pub fn index(&self) -> anyhow::Result<Index> {
        Index::load(&self.path("pki/index.json"))
    }

    fn issuer(&self) -> anyhow::Result<Issuer<'static, KeyPair>> {
        let key_path = self.path("pki/ca.key");
        let key_pem = std::fs::read_to_string(&key_path)
            .with_context(|| format!("reading {}", key_path.display()))?;
        let key = KeyPair::from_pem(&key_pem)
            .with_context(|| format!("{}: not a PEM private key", key_path.display()))?;
        let cert_path = self.path("pki/ca.crt");
        let cert_pem = std::fs::read_to_string(&cert_path)
            .with_context(|| format!("reading {}", cert_path.display()))?;
        Issuer::from_ca_cert_pem(&cert_pem, key)
            .with_context(|| format!("{}: cannot use it as the CA", cert_path.display()))
    }

    /// `client add NAME`: a certificate for NAME and its inline profile;
    /// returns the profile's path.
    pub fn add_client(&self, name: &str, days: u32) -> anyhow::Result<PathBuf> {
        validate_name(name)?;
        let issuer = self.issuer()?;
        let (cert_pem, key_pem, issued) = self.with_index(|index| {
            if let Some(c) = index.current(name) {
                bail!(
                    "client {name:?} exists (serial {}); use 'client renew {name}' or 'client revoke {name}' first",
                    c.serial
                );
            }
            let (cert_pem, key_pem, issued) =
                issue_leaf(&issuer, name, Role::Client, index.settings.key_type, days)?;
            index.certs.push(issued.clone());
            Ok((cert_pem, key_pem, issued))
        })?;
        self.write_client_files(name, &cert_pem, &key_pem)?;
        tracing::debug!("issued {name} serial {}", issued.serial);
        Ok(self.profile_path(name))
    }

    /// `client renew NAME`: a new key and certificate; the old certificate
    /// is revoked (superseded), which also ends a session that used it.
    pub fn renew_client(&self, name: &str, days: u32) -> anyhow::Result<PathBuf> {
        validate_name(name)?;
        let issuer = self.issuer()?;
        let (cert_pem, key_pem) = self.with_index(|index| {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let Some(old) = index.current_mut(name) else {
                bail!("no client named {name:?} with a valid certificate");
            };
            old.revoked_at = Some(now);
            old.reason = Some("superseded".into());
            let (cert_pem, key_pem, issued) =
                issue_leaf(&issuer, name, Role::Client, index.settings.key_type, days)?;
            index.certs.push(issued);
            self.write_crl(&issuer, index)?;
            Ok((cert_pem, key_pem))
        })?;
        self.write_client_files(name, &cert_pem, &key_pem)?;
        Ok(self.profile_path(name))
    }

    /// `client revoke NAME`: the CRL revokes NAME's certificate from now on;
    /// the profile is removed. A server running with this PKI's
    /// `crl-verify` drops the session within a second.
    pub fn revoke_client(&self, name: &str) -> anyhow::Result<String> {
        validate_name(name)?;
        let issuer = self.issuer()?;
        let serial = self.with_index(|index| {
            let now = OffsetDateTime::now_utc().unix_timestamp();
            let Some(c) = index.current_mut(name) else {
                bail!("no client named {name:?} with a valid certificate");
            };
            c.revoked_at = Some(now);
            c.reason = Some("revoked".into());
            let serial = c.serial.clone();
            self.write_crl(&issuer, index)?;
            Ok(serial)
        })?;
        for stale in [
            self.profile_path(name),
            self.path(&format!("pki/issued/{name}.crt")),
        ] {
            match std::fs::remove_file(&stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", stale.display()));
                }
                _ => {}
            }
        }
        Ok(serial)
    }

    fn write_client_files(&self, name: &str, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
        let index = self.index()?;
        let read = |rel: &str| {
            let p = self.path(rel);
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
        };
        let tls_crypt = if index.settings.tls_crypt_v2 {
            let server = read(TLS_CRYPT_V2_SERVER_KEY)?;
            let server = ServerKey::parse(&server).with_context(|| {
                format!("{TLS_CRYPT_V2_SERVER_KEY}: not a tls-crypt-v2 server key")
            })?;
            profile::TlsCrypt::V2(client_key_text(&server)?)
        } else {
            profile::TlsCrypt::Shared(read(TLS_CRYPT_KEY)?)
        };
        let text = profile::render(&profile::Profile {
            name,
            settings: &index.settings,
            ca: &read("pki/ca.crt")?,
            cert: cert_pem,
            key: key_pem,
            tls_crypt: &tls_crypt,
        });
        write_file(
            &self.path(&format!("pki/issued/{name}.crt")),
            cert_pem,
            0o644,
        )?;
        write_file(&self.profile_path(name), &text, 0o600)
    }

    /// Rewrite `pki/crl.pem` from the index, with the next CRL number.
    fn write_crl(&self, issuer: &Issuer<'_, KeyPair>, index: &mut Index) -> anyhow::Result<()> {
        index.crl_number += 1;
        let pem = crl_pem(issuer, index)?;
        write_file(&self.path("pki/crl.pem"), &pem, 0o644)
    }
}

/// A new tls-crypt-v2 client key wrapped by `server`, as file text. Its
/// metadata is the time of issue, as `openvpn --genkey tls-crypt-v2-client`
/// writes when given none.
fn client_key_text(server: &ServerKey) -> anyhow::Result<String> {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let metadata = Metadata::timestamp(u64::try_from(now).unwrap_or(0));
    let key =
        ClientKey::generate(server, &metadata).context("wrapping a tls-crypt-v2 client key")?;
    Ok(key.to_file_text())
}

/// A client name: what becomes its certificate's CN and its file names.
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if name.is_empty()
        || name.len() > 64
        || !ok_chars
        || !name.as_bytes()[0].is_ascii_alphanumeric()
    {
        bail!(
            "invalid client name {name:?}: 1-64 characters among A-Z a-z 0-9 . _ -, starting with a letter or digit"
        );
    }
    if name == "server" || name == "ca" {
        bail!("invalid client name {name:?}: reserved for the PKI's own certificates");
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Ca,
    Server,
    Client,
}

fn new_key(kt: KeyType) -> anyhow::Result<KeyPair> {
    match kt {
        KeyType::Ec => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating an EC P-256 key"),
        KeyType::Rsa => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_3072)
            .context("generating an RSA-3072 key"),
    }
}

/// 16 random bytes, the top bit clear (a positive DER integer).
fn random_serial() -> Vec<u8> {
    let mut s = vec![0u8; 16];
    ferrovpn_proto::random::fill(&mut s);
    s[0] &= 0x7f;
    s[0] |= 0x01;
    s
}

fn params(cn: &str, role: Role, days: u32) -> (CertificateParams, Vec<u8>) {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    // An hour back: clocks of the peers may lag a little.
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(i64::from(days));
    let serial = random_serial();
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    match role {
        Role::Ca => {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        }
        Role::Server | Role::Client => {
            p.use_authority_key_identifier_extension = true;
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            p.extended_key_usages = vec![if role == Role::Server {
                ExtendedKeyUsagePurpose::ServerAuth
            } else {
                ExtendedKeyUsagePurpose::ClientAuth
            }];
        }
    }
    if role == Role::Server {
        // A name too (rustls-based clients want one); the CN is ASCII.
        p.subject_alt_names = CertificateParams::new(vec![cn.to_string()])
            .map(|n| n.subject_alt_names)
            .unwrap_or_default();
    }
    (p, serial)
}

/// A certificate for `cn` signed by `issuer`: (cert PEM, key PEM, record).
fn issue_leaf(
    issuer: &Issuer<'_, KeyPair>,
    cn: &str,
    role: Role,
    kt: KeyType,
    days: u32,
) -> anyhow::Result<(String, String, Issued)> {
    let key = new_key(kt)?;
    let (p, serial) = params(cn, role, days);
    let not_after = p.not_after.unix_timestamp();
    let cert = p
        .signed_by(&key, issuer)
        .with_context(|| format!("signing the certificate of {cn}"))?;
    let issued = Issued {
        name: cn.to_string(),
        serial: hex::encode(&serial),
        not_after,
        revoked_at: None,
        reason: None,
    };
    Ok((cert.pem(), key.serialize_pem(), issued))
}

/// The CRL of `index`: every revoked certificate, signed by `issuer`.
fn crl_pem(issuer: &Issuer<'_, KeyPair>, index: &Index) -> anyhow::Result<String> {
    let now = OffsetDateTime::now_utc();
    let revoked = index
        .certs
        .iter()
        .filter_map(|c| {
            let at = c.revoked_at?;
            let serial = hex::decode(&c.serial).ok()?;
            Some(RevokedCertParams {
                serial_number: SerialNumber::from_slice(&serial),
                revocation_time: OffsetDateTime::from_unix_timestamp(at).unwrap_or(now),
                reason_code: Some(if c.reason.as_deref() == Some("superseded") {
                    RevocationReason::Superseded
                } else {
                    RevocationReason::Unspecified
                }),
                invalidity_date: None,
            })
        })
        .collect();
    let params = CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(i64::from(CRL_DAYS)),
        crl_number: SerialNumber::from(index.crl_number),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(issuer).context("signing the CRL")?;
    crl.pem().context("encoding the CRL")
}

/// Write `text` to `path` with `mode`, replacing what is there atomically
/// (a reader such as the server's CRL reload sees the old or the new file,
/// never half of one); never through a symlink.
pub(crate) fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    crate::cli::write_replacing(path, text, mode)
        .with_context(|| format!("writing {}", path.display()))
}
