//! Passphrase-protected private keys and PKCS#12 files, as OpenVPN 2.6
//! (through OpenSSL 3) reads them: pure code over bytes and a passphrase.
//!
//! - PKCS#8 `ENCRYPTED PRIVATE KEY` (PBES2: PBKDF2 or scrypt, AES-CBC or
//!   DES-EDE3-CBC; what OpenSSL 3, easy-rsa and pivpn write), through
//!   RustCrypto's `pkcs8`.
//! - The traditional OpenSSL PEM (`Proc-Type: 4,ENCRYPTED` + `DEK-Info`) for
//!   RSA and EC keys: AES-128/192/256-CBC and DES-EDE3-CBC with OpenSSL's
//!   `EVP_BytesToKey` (MD5, one round). No maintained crate reads this
//!   format, and the derivation is a few lines.
//! - PKCS#12 through `p12-keystore`: OpenSSL 3's default (PBES2 with
//!   AES-256-CBC, HMAC-SHA256 MAC) and the legacy RC2/3DES files.
//!
//! The decrypted key comes back as unencrypted PEM text, so that every
//! later step (rustls configs, CRL reloads) handles it like a key that was
//! never encrypted. Error messages say what is wrong in words; the caller
//! names the file.

use std::fmt::Write as _;

use aes::cipher::{BlockModeDecrypt, KeyIvInit, block_padding::Pkcs7};
use md5::{Digest, Md5};
use thiserror::Error;

/// What is wrong with a private key file.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyFileError {
    /// The text is not PEM at all, or a PEM block is broken.
    #[error("not a valid PEM file ({0})")]
    NotPem(String),
    /// No private key block in the text.
    #[error(
        "no private key found (expected a PEM block BEGIN PRIVATE KEY, BEGIN ENCRYPTED PRIVATE KEY, BEGIN RSA PRIVATE KEY or BEGIN EC PRIVATE KEY)"
    )]
    NoKey,
    /// Decryption failed: the passphrase does not open the key.
    #[error("the passphrase is wrong (the private key could not be decrypted with it)")]
    WrongPassphrase,
    /// Encrypted with something ferrovpn (and OpenSSL 3 by default) does not do.
    #[error("the private key is encrypted with {0}, which ferrovpn cannot decrypt")]
    Unsupported(String),
    /// The encrypted structure is damaged.
    #[error("the encrypted private key is malformed ({0})")]
    Malformed(String),
}

/// What is wrong with a PKCS#12 file.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Pkcs12Error {
    /// The MAC check or the decryption failed.
    #[error("the password is wrong (the PKCS#12 integrity check failed with it)")]
    WrongPassword,
    /// An algorithm we cannot undo.
    #[error("the PKCS#12 file uses {0}, which ferrovpn cannot read")]
    Unsupported(String),
    /// Not DER PKCS#12.
    #[error("not a PKCS#12 file ({0})")]
    Malformed(String),
    /// No private key bag.
    #[error("the PKCS#12 file holds no private key")]
    NoKey,
    /// No certificate.
    #[error("the PKCS#12 file holds no certificate")]
    NoCert,
}

/// Whether `pem` holds an encrypted private key (and so needs a passphrase).
pub fn is_encrypted(pem: &str) -> bool {
    pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || pem.contains("Proc-Type: 4,ENCRYPTED")
}

/// Decrypt the private key in `pem` with `passphrase`; the result is the
/// same key as unencrypted PEM (`PRIVATE KEY` for PKCS#8, the original
/// `RSA PRIVATE KEY` / `EC PRIVATE KEY` label for traditional keys).
/// An unencrypted key comes back unchanged.
pub fn decrypt_key(pem: &str, passphrase: &[u8]) -> Result<String, KeyFileError> {
    if !is_encrypted(pem) {
        return Ok(pem.to_owned());
    }
    let blocks = pem::parse_many(pem).map_err(|e| KeyFileError::NotPem(e.to_string()))?;
    let block = blocks
        .iter()
        .find(|b| b.tag().ends_with("PRIVATE KEY"))
        .ok_or(KeyFileError::NoKey)?;
    let (tag, der) = if block.tag() == "ENCRYPTED PRIVATE KEY" {
        ("PRIVATE KEY", decrypt_pkcs8(block.contents(), passphrase)?)
    } else {
        (block.tag(), decrypt_traditional(block, passphrase)?)
    };
    // A wrong passphrase that happens to leave valid padding (about one in
    // 256) still yields garbage, which is not a DER SEQUENCE.
    if pkcs8::der::Document::try_from(der.as_slice()).is_err() {
        return Err(KeyFileError::WrongPassphrase);
    }
    Ok(pem::encode(&pem::Pem::new(tag, der)))
}

fn decrypt_pkcs8(der: &[u8], passphrase: &[u8]) -> Result<Vec<u8>, KeyFileError> {
    use pkcs8::der::Decode as _;
    let info = pkcs8::EncryptedPrivateKeyInfoRef::from_der(der)
        .map_err(|e| KeyFileError::Malformed(e.to_string()))?;
    match info.decrypt(passphrase) {
        Ok(doc) => Ok(doc.as_bytes().to_vec()),
        Err(pkcs8::Error::EncryptedPrivateKey(e)) => Err(pbes_error(e)),
        // Decrypted, but the plaintext is not DER: the passphrase was wrong.
        Err(pkcs8::Error::Asn1(_)) => Err(KeyFileError::WrongPassphrase),
        Err(e) => Err(KeyFileError::Malformed(e.to_string())),
    }
}

fn pbes_error(e: pkcs8::pkcs5::Error) -> KeyFileError {
    use pkcs8::pkcs5::Error as E;
    match e {
        E::DecryptFailed => KeyFileError::WrongPassphrase,
        E::NoPbes1CryptSupport => KeyFileError::Unsupported(
            "a PKCS#5 v1.5 / PKCS#12 scheme (openssl pkcs8 -v1); re-encrypt it with 'openssl pkey -in KEY -aes256 -out NEW'"
                .into(),
        ),
        E::UnsupportedAlgorithm { oid } => {
            KeyFileError::Unsupported(format!("algorithm {oid}"))
        }
        other => KeyFileError::Malformed(other.to_string()),
    }
}

/// The ciphers of the traditional format (`DEK-Info: NAME,IV`) that OpenSSL
/// 3's default provider decrypts.
#[derive(Clone, Copy)]
enum PemCipher {
    Aes128,
    Aes192,
    Aes256,
    DesEde3,
}

impl PemCipher {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "AES-128-CBC" => Self::Aes128,
            "AES-192-CBC" => Self::Aes192,
            "AES-256-CBC" => Self::Aes256,
            "DES-EDE3-CBC" => Self::DesEde3,
            _ => return None,
        })
    }
    fn key_len(self) -> usize {
        match self {
            Self::Aes128 => 16,
            Self::Aes192 | Self::DesEde3 => 24,
            Self::Aes256 => 32,
        }
    }
    fn iv_len(self) -> usize {
        match self {
            Self::DesEde3 => 8,
            _ => 16,
        }
    }
    fn decrypt(self, key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>> {
        fn cbc<C>(key: &[u8], iv: &[u8], data: &[u8]) -> Option<Vec<u8>>
        where
            cbc::Decryptor<C>: KeyIvInit + BlockModeDecrypt,
            C: aes::cipher::BlockCipherDecrypt,
        {
            cbc::Decryptor::<C>::new_from_slices(key, iv)
                .ok()?
                .decrypt_padded_vec::<Pkcs7>(data)
                .ok()
        }
        match self {
            Self::Aes128 => cbc::<aes::Aes128>(key, iv, data),
            Self::Aes192 => cbc::<aes::Aes192>(key, iv, data),
            Self::Aes256 => cbc::<aes::Aes256>(key, iv, data),
            Self::DesEde3 => cbc::<des::TdesEde3>(key, iv, data),
        }
    }
}

fn decrypt_traditional(block: &pem::Pem, passphrase: &[u8]) -> Result<Vec<u8>, KeyFileError> {
    let dek = block.headers().get("DEK-Info").ok_or_else(|| {
        KeyFileError::Malformed("'Proc-Type: 4,ENCRYPTED' without a 'DEK-Info' line".into())
    })?;
    let (name, iv_hex) = dek
        .split_once(',')
        .ok_or_else(|| KeyFileError::Malformed(format!("'DEK-Info: {dek}' is not 'CIPHER,IV'")))?;
    let cipher = PemCipher::from_name(name.trim()).ok_or_else(|| {
        KeyFileError::Unsupported(format!(
            "{} (supported: AES-128-CBC, AES-192-CBC, AES-256-CBC, DES-EDE3-CBC)",
            name.trim()
        ))
    })?;
    let iv = decode_hex(iv_hex.trim())
        .filter(|iv| iv.len() == cipher.iv_len())
        .ok_or_else(|| {
            KeyFileError::Malformed(format!(
                "the DEK-Info IV '{}' is not {} hex bytes",
                iv_hex.trim(),
                cipher.iv_len()
            ))
        })?;
    let key = openssl_bytes_to_key(passphrase, &iv[..8], cipher.key_len());
    cipher
        .decrypt(&key, &iv, block.contents())
        .ok_or(KeyFileError::WrongPassphrase)
}

/// OpenSSL's `EVP_BytesToKey` with MD5 and one iteration, as
/// `PEM_do_header` uses it: D_i = MD5(D_{i-1} || passphrase || salt), the
/// salt being the IV's first 8 bytes, until `len` bytes are produced.
fn openssl_bytes_to_key(passphrase: &[u8], salt: &[u8], len: usize) -> Vec<u8> {
    let mut key = Vec::with_capacity(len + 16);
    let mut prev: Option<[u8; 16]> = None;
    while key.len() < len {
        let mut h = Md5::new();
        if let Some(p) = &prev {
            h.update(p);
        }
        h.update(passphrase);
        h.update(salt);
        let d: [u8; 16] = h.finalize().into();
        key.extend_from_slice(&d);
        prev = Some(d);
    }
    key.truncate(len);
    key
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Certificate, key and CA certificates from a PKCS#12 file, as PEM text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pkcs12Contents {
    /// The certificate that belongs to the key.
    pub cert_pem: String,
    /// The key, unencrypted PKCS#8 (`BEGIN PRIVATE KEY`).
    pub key_pem: String,
    /// Every other certificate in the file (empty when there is none).
    pub ca_pem: String,
}

/// Open a DER PKCS#12 file with `password` (2.6 tries "" first, then asks).
pub fn open_pkcs12(der: &[u8], password: &str) -> Result<Pkcs12Contents, Pkcs12Error> {
    use p12_keystore::error::Error as E;
    let archive = p12_keystore::Pkcs12Archive::from_pkcs12(der, password).map_err(|e| match e {
        E::MacError(_) | E::UnpadError => Pkcs12Error::WrongPassword,
        E::Pkcs5Error(s) if s.contains("decrypt") => Pkcs12Error::WrongPassword,
        E::UnsupportedEncryptionScheme => {
            Pkcs12Error::Unsupported("an unsupported encryption scheme".into())
        }
        E::UnsupportedMacAlgorithm => {
            Pkcs12Error::Unsupported("an unsupported MAC algorithm".into())
        }
        E::UnsupportedContentType => Pkcs12Error::Unsupported(
            "an unsupported content type (public-key integrity mode)".into(),
        ),
        other => Pkcs12Error::Malformed(other.to_string()),
    })?;
    let key = archive.keys.first().ok_or(Pkcs12Error::NoKey)?;
    if archive.certs.is_empty() {
        return Err(Pkcs12Error::NoCert);
    }
    // Like OpenSSL's PKCS12_parse: the certificate with the key's localKeyId,
    // else the first one; the others are CA certificates.
    let own = key
        .local_key_id
        .as_ref()
        .and_then(|id| {
            archive
                .certs
                .iter()
                .position(|c| c.local_key_id.as_deref() == Some(id.as_ref()))
        })
        .unwrap_or(0);
    let cert_pem = pem::encode(&pem::Pem::new(
        "CERTIFICATE",
        archive.certs[own].cert.as_der(),
    ));
    let mut ca_pem = String::new();
    for (i, c) in archive.certs.iter().enumerate() {
        if i != own {
            let _ = write!(
                ca_pem,
                "{}",
                pem::encode(&pem::Pem::new("CERTIFICATE", c.cert.as_der()))
            );
        }
    }
    Ok(Pkcs12Contents {
        cert_pem,
        key_pem: pem::encode(&pem::Pem::new("PRIVATE KEY", key.key.as_der())),
        ca_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_to_key_matches_openssl() {
        // `openssl enc -aes-256-cbc -md md5 -k secret -S 0102030405060708 -P -nosalt`
        // prints key=... for this passphrase and salt.
        let k = openssl_bytes_to_key(b"secret", &[1, 2, 3, 4, 5, 6, 7, 8], 32);
        assert_eq!(k.len(), 32);
        // D_1 is MD5("secret" || salt), the first 16 bytes.
        let mut h = Md5::new();
        h.update(b"secret");
        h.update([1, 2, 3, 4, 5, 6, 7, 8]);
        let d1: [u8; 16] = h.finalize().into();
        assert_eq!(&k[..16], &d1);
    }

    #[test]
    fn unencrypted_key_passes_through() {
        let pem = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert_eq!(decrypt_key(pem, b"x").unwrap(), pem);
    }

    #[test]
    fn hostile_key_texts_are_errors_not_panics() {
        for text in [
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\n!!!\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,zz\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: BF-CBC,0102030405060708\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAAAAAAAAAAAAAAAAAAAA==\n-----END RSA PRIVATE KEY-----\n",
            "Proc-Type: 4,ENCRYPTED but no PEM",
        ] {
            assert!(decrypt_key(text, b"pass").is_err(), "{text}");
        }
    }

    #[test]
    fn hostile_pkcs12_is_an_error_not_a_panic() {
        for der in [&b""[..], b"\x30\x03\x02\x01\x03", b"\x30\x80", &[0xff; 64]] {
            assert!(open_pkcs12(der, "").is_err());
        }
    }

    proptest::proptest! {
        #[test]
        fn decrypt_key_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..512), hdr in "[ -~]{0,40}") {
            let b64 = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", body.clone()));
            let traditional = b64.replacen("\n", &format!("\nProc-Type: 4,ENCRYPTED\nDEK-Info: {hdr}\n\n"), 1);
            let _ = decrypt_key(&traditional, b"pw");
            let _ = decrypt_key(&pem::encode(&pem::Pem::new("ENCRYPTED PRIVATE KEY", body.clone())), b"pw");
            let _ = open_pkcs12(&body, "pw");
        }
    }
}
