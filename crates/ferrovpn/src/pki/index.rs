//! `pki/index.json`: every certificate issued to a client, whether and when
//! it was revoked, and what client profiles need (endpoint, protocol).

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Largest index read: a bound for a hand-edited or damaged file.
const MAX_INDEX: u64 = 16 << 20;

/// The key algorithm of every key the PKI makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// EC P-256 (ECDSA with SHA-256).
    Ec,
    /// RSA-3072.
    Rsa,
}

/// What a client profile says about the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileSettings {
    /// Host name or address clients connect to.
    pub host: String,
    pub port: u16,
    /// `udp` or `tcp`.
    pub proto: String,
    pub key_type: KeyType,
    /// The server has a tls-crypt-v2 key (`pki/tls-crypt-v2-server.key`):
    /// each profile gets its own client key. Otherwise every profile holds
    /// the shared tls-crypt key (indexes from before tls-crypt-v2 lack it).
    #[serde(default)]
    pub tls_crypt_v2: bool,
}

/// One certificate issued to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issued {
    pub name: String,
    /// Hex, as `openssl x509 -serial` shows it (lower case).
    pub serial: String,
    /// Unix seconds.
    pub not_after: i64,
    /// Unix seconds.
    pub revoked_at: Option<i64>,
    /// `revoked` or `superseded` (renewed).
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Index {
    pub settings: ProfileSettings,
    /// The number of the CRL last written.
    pub crl_number: u64,
    pub certs: Vec<Issued>,
}

impl Index {
    pub fn load(path: &Path) -> anyhow::Result<Index> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_INDEX).read_to_string(&mut text))
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{}: not a ferrovpn PKI index", path.display()))
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let text = serde_json::to_string_pretty(self).context("encoding the index")? + "\n";
        super::write_file(path, &text, 0o600)
    }

    /// NAME's certificate that is not revoked, if any.
    pub fn current(&self, name: &str) -> Option<&Issued> {
        self.certs
            .iter()
            .rev()
            .find(|c| c.name == name && c.revoked_at.is_none())
    }

    pub fn current_mut(&mut self, name: &str) -> Option<&mut Issued> {
        self.certs
            .iter_mut()
            .rev()
            .find(|c| c.name == name && c.revoked_at.is_none())
    }

    /// Each client name once, with its latest certificate.
    pub fn latest_by_name(&self) -> Vec<&Issued> {
        let mut out: Vec<&Issued> = Vec::new();
        for c in &self.certs {
            match out.iter_mut().find(|o| o.name == c.name) {
                // A valid certificate wins over a revoked one (renewals).
                Some(o) if c.revoked_at.is_none() || o.revoked_at.is_some() => *o = c,
                Some(_) => {}
                None => out.push(c),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
