//! OpenVPN config writers. The text sticks to directives both stock
//! OpenVPN 2.6 and `ferrovpn --config` understand, so one file drives
//! either implementation.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::pki::{CertKey, Pki};

/// Key or certificate material: a file path or inline text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Material {
    /// `directive /path/to/file`
    File(PathBuf),
    /// `<directive>\ntext\n</directive>`
    Inline(String),
}

impl Material {
    /// Read a file into inline material.
    pub fn inline_from(path: &Path) -> Result<Material> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(Material::Inline(text))
    }

    /// The same material, inline.
    pub fn to_inline(&self) -> Result<Material> {
        match self {
            Material::File(p) => Material::inline_from(p),
            Material::Inline(t) => Ok(Material::Inline(t.clone())),
        }
    }
}

/// Write a fresh static key (tls-crypt / tls-auth) to `path`, in the file
/// format `openvpn --genkey secret` writes.
pub fn write_static_key(path: &Path) -> Result<()> {
    std::fs::write(
        path,
        ferrovpn_proto::wrap::StaticKey::generate().to_file_text(),
    )
    .with_context(|| format!("writing {}", path.display()))
}

/// Control-channel wrapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wrap {
    /// No `tls-auth` / `tls-crypt`.
    None,
    /// `tls-crypt KEY`.
    TlsCrypt(Material),
    /// `tls-auth KEY` with `key-direction 0` (server) / `1` (client).
    TlsAuth(Material),
    /// `tls-crypt-v2 KEY`: the server key in a server's config, a client
    /// key in a client's (see `pki::write_tls_crypt_v2_*`).
    TlsCryptV2(Material),
}

/// Data-channel cipher (the only entry of `data-ciphers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// AES-256-GCM
    Aes256Gcm,
    /// AES-128-GCM
    Aes128Gcm,
    /// CHACHA20-POLY1305
    Chacha20Poly1305,
}

impl Cipher {
    /// OpenVPN's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes256Gcm => "AES-256-GCM",
            Cipher::Aes128Gcm => "AES-128-GCM",
            Cipher::Chacha20Poly1305 => "CHACHA20-POLY1305",
        }
    }
}

/// Outer transport of a generated config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// `proto udp`.
    #[default]
    Udp,
    /// `proto tcp-server` / `proto tcp-client`.
    Tcp,
}

/// Server configuration (`mode server` via the `server` helper directive).
#[derive(Debug, Clone)]
pub struct ServerConf {
    /// UDP or TCP port.
    pub port: u16,
    /// `proto`.
    pub transport: Transport,
    /// TUN device name (explicit, per test).
    pub dev: String,
    /// `server NETWORK NETMASK`; the server takes `.1`. Empty: no `server`
    /// line (an IPv6-only server).
    pub network: String,
    /// Control-channel wrapping.
    pub wrap: Wrap,
    /// Data cipher.
    pub cipher: Cipher,
    /// `auth DIGEST` (HMAC digest for tls-auth), if any.
    pub auth: Option<String>,
    /// CA certificate.
    pub ca: Material,
    /// Server certificate.
    pub cert: Material,
    /// Server key.
    pub key: Material,
    /// `keepalive INTERVAL TIMEOUT`.
    pub keepalive: Option<(u32, u32)>,
    /// `reneg-sec N`.
    pub reneg_sec: Option<u32>,
    /// `client-to-client`.
    pub client_to_client: bool,
    /// `disable-dco` (stock OpenVPN; ferrovpn accepts and ignores it).
    pub disable_dco: bool,
    /// `verb N`.
    pub verb: u8,
    /// `push "..."` options (without quotes).
    pub push: Vec<String>,
    /// Extra raw lines appended at the end.
    pub extra: Vec<String>,
}

/// Client configuration.
#[derive(Debug, Clone)]
pub struct ClientConf {
    /// Server address.
    pub remote: String,
    /// Server port.
    pub port: u16,
    /// `proto`.
    pub transport: Transport,
    /// TUN device name.
    pub dev: String,
    /// Control-channel wrapping (same key as the server).
    pub wrap: Wrap,
    /// Data cipher.
    pub cipher: Cipher,
    /// `auth DIGEST`, if any.
    pub auth: Option<String>,
    /// CA certificate.
    pub ca: Material,
    /// Client certificate.
    pub cert: Material,
    /// Client key.
    pub key: Material,
    /// `reneg-sec N`.
    pub reneg_sec: Option<u32>,
    /// `lport N` (a fixed source port, so a server log names this client)
    /// instead of `nobind`.
    pub lport: Option<u16>,
    /// `disable-dco`.
    pub disable_dco: bool,
    /// `verb N`.
    pub verb: u8,
    /// Extra raw lines appended at the end.
    pub extra: Vec<String>,
}

impl ServerConf {
    /// Port 1194, `server 10.8.0.0 255.255.255.0`, `keepalive 10 60`,
    /// certificate files from `pki`; `auth SHA256` with tls-auth.
    pub fn new(pki: &Pki, dev: &str, wrap: Wrap, cipher: Cipher) -> ServerConf {
        let auth = matches!(wrap, Wrap::TlsAuth(_)).then(|| "SHA256".to_string());
        ServerConf {
            port: 1194,
            transport: Transport::Udp,
            dev: dev.to_string(),
            network: "10.8.0.0 255.255.255.0".into(),
            wrap,
            cipher,
            auth,
            ca: Material::File(pki.ca.cert.clone()),
            cert: Material::File(pki.server.cert.clone()),
            key: Material::File(pki.server.key.clone()),
            keepalive: Some((10, 60)),
            reneg_sec: None,
            client_to_client: false,
            disable_dco: true,
            verb: 3,
            push: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// Make every certificate, key and static key inline.
    pub fn inline(mut self) -> Result<ServerConf> {
        inline_all(
            [&mut self.ca, &mut self.cert, &mut self.key],
            &mut self.wrap,
        )?;
        Ok(self)
    }
}

impl ClientConf {
    /// Client of `remote:1194` using `who`'s certificate from `pki`.
    pub fn new(
        pki: &Pki,
        who: &CertKey,
        remote: &str,
        dev: &str,
        wrap: Wrap,
        cipher: Cipher,
    ) -> ClientConf {
        let auth = matches!(wrap, Wrap::TlsAuth(_)).then(|| "SHA256".to_string());
        ClientConf {
            remote: remote.to_string(),
            port: 1194,
            transport: Transport::Udp,
            dev: dev.to_string(),
            wrap,
            cipher,
            auth,
            ca: Material::File(pki.ca.cert.clone()),
            cert: Material::File(who.cert.clone()),
            key: Material::File(who.key.clone()),
            reneg_sec: None,
            lport: None,
            disable_dco: true,
            verb: 3,
            extra: Vec::new(),
        }
    }

    /// Make every certificate, key and static key inline.
    pub fn inline(mut self) -> Result<ClientConf> {
        inline_all(
            [&mut self.ca, &mut self.cert, &mut self.key],
            &mut self.wrap,
        )?;
        Ok(self)
    }
}

/// `ca`, `cert`, `key` and the wrapping key, inline.
fn inline_all(materials: [&mut Material; 3], wrap: &mut Wrap) -> Result<()> {
    for m in materials {
        *m = m.to_inline()?;
    }
    *wrap = inline_wrap(wrap)?;
    Ok(())
}

fn inline_wrap(w: &Wrap) -> Result<Wrap> {
    Ok(match w {
        Wrap::None => Wrap::None,
        Wrap::TlsCrypt(m) => Wrap::TlsCrypt(m.to_inline()?),
        Wrap::TlsAuth(m) => Wrap::TlsAuth(m.to_inline()?),
        Wrap::TlsCryptV2(m) => Wrap::TlsCryptV2(m.to_inline()?),
    })
}

fn quote_path(p: &Path) -> String {
    let s = p.to_string_lossy();
    if s.chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        s.into_owned()
    }
}

fn material(out: &mut String, directive: &str, m: &Material) {
    match m {
        Material::File(p) => {
            let _ = writeln!(out, "{directive} {}", quote_path(p));
        }
        Material::Inline(t) => {
            let _ = writeln!(out, "<{directive}>\n{}\n</{directive}>", t.trim_end());
        }
    }
}

fn common(
    out: &mut String,
    dev: &str,
    proto: &str,
    wrap: &Wrap,
    cipher: Cipher,
    auth: &Option<String>,
    key_direction: u8,
) {
    let _ = writeln!(out, "dev {dev}\ndev-type tun\nproto {proto}");
    let _ = writeln!(
        out,
        "data-ciphers {c}\ndata-ciphers-fallback {c}",
        c = cipher.name()
    );
    if let Some(a) = auth {
        let _ = writeln!(out, "auth {a}");
    }
    match wrap {
        Wrap::None => {}
        Wrap::TlsCrypt(m) => material(out, "tls-crypt", m),
        Wrap::TlsCryptV2(m) => material(out, "tls-crypt-v2", m),
        Wrap::TlsAuth(m) => {
            let _ = writeln!(out, "key-direction {key_direction}");
            material(out, "tls-auth", m);
        }
    }
}

/// `ca`, `cert` and `key`.
fn credentials(out: &mut String, ca: &Material, cert: &Material, key: &Material) {
    material(out, "ca", ca);
    material(out, "cert", cert);
    material(out, "key", key);
}

/// `disable-dco`, `verb` and the extra lines: the end of either config.
fn ending(out: &mut String, disable_dco: bool, verb: u8, extra: &[String]) {
    if disable_dco {
        out.push_str("disable-dco\n");
    }
    let _ = writeln!(out, "verb {verb}");
    for l in extra {
        let _ = writeln!(out, "{l}");
    }
}

/// OpenVPN server config text.
pub fn openvpn_server_conf(c: &ServerConf) -> String {
    let mut o = String::from("# generated by ferrovpn-testkit\n");
    let _ = writeln!(o, "port {}", c.port);
    let proto = match c.transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp-server",
    };
    common(&mut o, &c.dev, proto, &c.wrap, c.cipher, &c.auth, 0);
    // An empty network: no `server` line (an IPv6-only server's `extra`
    // lines carry `server-ipv6`, or `mode server` + `ifconfig-ipv6-pool`).
    if !c.network.is_empty() {
        let _ = writeln!(o, "topology subnet\nserver {}", c.network);
    }
    if c.client_to_client {
        o.push_str("client-to-client\n");
    }
    if let Some((i, t)) = c.keepalive {
        let _ = writeln!(o, "keepalive {i} {t}");
    }
    if let Some(r) = c.reneg_sec {
        let _ = writeln!(o, "reneg-sec {r}");
    }
    for p in &c.push {
        let _ = writeln!(o, "push \"{p}\"");
    }
    credentials(&mut o, &c.ca, &c.cert, &c.key);
    o.push_str("dh none\npersist-key\npersist-tun\n");
    ending(&mut o, c.disable_dco, c.verb, &c.extra);
    o
}

/// OpenVPN client config text.
pub fn openvpn_client_conf(c: &ClientConf) -> String {
    let mut o = String::from("# generated by ferrovpn-testkit\nclient\n");
    match c.lport {
        Some(port) => {
            let _ = writeln!(o, "lport {port}");
        }
        None => o.push_str("nobind\n"),
    }
    let _ = writeln!(o, "remote {} {}", c.remote, c.port);
    let proto = match c.transport {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp-client",
    };
    common(&mut o, &c.dev, proto, &c.wrap, c.cipher, &c.auth, 1);
    o.push_str("remote-cert-tls server\n");
    if let Some(r) = c.reneg_sec {
        let _ = writeln!(o, "reneg-sec {r}");
    }
    credentials(&mut o, &c.ca, &c.cert, &c.key);
    o.push_str("persist-key\npersist-tun\n");
    if c.transport == Transport::Udp {
        // 2.6 ignores it over TCP, with a notice.
        o.push_str("explicit-exit-notify 1\n");
    }
    ending(&mut o, c.disable_dco, c.verb, &c.extra);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_pki() -> Pki {
        let ck = |n: &str| CertKey {
            cn: n.into(),
            cert: PathBuf::from(format!("/p/{n}.crt")),
            key: PathBuf::from(format!("/p/{n}.key")),
        };
        Pki {
            dir: "/p".into(),
            ca: ck("ca"),
            server: ck("server"),
            server_nosan: ck("server-nosan"),
            server_noeku: ck("server-noeku"),
            clients: vec![ck("client1")],
            foreign_ca: ck("foreign-ca"),
            foreign_client: ck("foreign-client"),
            crl_empty: "/p/crl-empty.pem".into(),
            crl_revoking: "/p/crl-revoking.pem".into(),
        }
    }

    #[test]
    fn server_tls_auth_text() {
        let pki = fake_pki();
        let mut s = ServerConf::new(
            &pki,
            "fvt0",
            Wrap::TlsAuth(Material::File("/p/ta.key".into())),
            Cipher::Aes128Gcm,
        );
        s.client_to_client = true;
        s.reneg_sec = Some(60);
        let t = openvpn_server_conf(&s);
        for l in [
            "port 1194",
            "dev fvt0",
            "data-ciphers AES-128-GCM",
            "auth SHA256",
            "key-direction 0",
            "tls-auth /p/ta.key",
            "topology subnet",
            "server 10.8.0.0 255.255.255.0",
            "client-to-client",
            "keepalive 10 60",
            "reneg-sec 60",
            "ca /p/ca.crt",
            "dh none",
            "disable-dco",
            "verb 3",
        ] {
            assert!(t.lines().any(|x| x == l), "missing {l:?} in\n{t}");
        }
    }

    #[test]
    fn client_inline_text() {
        let pki = fake_pki();
        let mut c = ClientConf::new(
            &pki,
            &pki.clients[0],
            "10.1.1.1",
            "fvt1",
            Wrap::TlsCrypt(Material::Inline("KEYTEXT\n".into())),
            Cipher::Chacha20Poly1305,
        );
        c.ca = Material::Inline("CA PEM\n".into());
        let t = openvpn_client_conf(&c);
        assert!(t.contains("<tls-crypt>\nKEYTEXT\n</tls-crypt>\n"), "{t}");
        assert!(t.contains("<ca>\nCA PEM\n</ca>\n"), "{t}");
        assert!(t.contains("remote 10.1.1.1 1194\n"), "{t}");
        assert!(t.contains("data-ciphers CHACHA20-POLY1305\n"), "{t}");
        assert!(!t.contains("auth SHA256"), "{t}");
        assert!(!t.contains("key-direction"), "{t}");
    }
}
