//! A client's inline `.ovpn` profile: one file that stock OpenVPN 2.6 (and
//! ferrovpn) use as is.

use super::ProfileSettings;

pub struct Profile<'a> {
    pub name: &'a str,
    pub settings: &'a ProfileSettings,
    pub ca: &'a str,
    pub cert: &'a str,
    pub key: &'a str,
    pub tls_crypt: &'a TlsCrypt,
}

/// The control channel's key in the profile.
pub enum TlsCrypt {
    /// The server's one tls-crypt key, the same in every profile.
    Shared(String),
    /// This client's own tls-crypt-v2 client key.
    V2(String),
}

impl TlsCrypt {
    fn block(&self) -> (&'static str, &str) {
        match self {
            TlsCrypt::Shared(text) => ("tls-crypt", text),
            TlsCrypt::V2(text) => ("tls-crypt-v2", text),
        }
    }
}

/// `remote` wants an IPv6 address without brackets.
fn remote_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

pub fn render(p: &Profile<'_>) -> String {
    let s = p.settings;
    let udp = s.proto == "udp";
    let mut o = format!(
        "# OpenVPN client profile for {name}, written by 'ferrovpn client add'.\n\
         # Use it as is: openvpn --config {name}.ovpn (OpenVPN 2.6), ferrovpn --config {name}.ovpn,\n\
         # or import it into an OpenVPN app. It holds {name}'s private key: keep it secret.\n\
         client\n\
         dev tun\n\
         proto {proto}\n\
         remote {host} {port}\n\
         nobind\n\
         persist-key\n\
         persist-tun\n\
         # The server must show a certificate made for a server by this PKI's CA.\n\
         remote-cert-tls server\n\
         data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\n",
        name = p.name,
        proto = if udp { "udp" } else { "tcp-client" },
        host = remote_host(&s.host),
        port = s.port,
    );
    if udp {
        o += "# Tell the server at once when disconnecting (UDP has no close).\nexplicit-exit-notify 1\n";
    }
    o += "verb 3\n";
    for (tag, text) in [
        ("ca", p.ca),
        ("cert", p.cert),
        ("key", p.key),
        p.tls_crypt.block(),
    ] {
        o += &format!("<{tag}>\n{}\n</{tag}>\n", text.trim_end());
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::KeyType;

    #[test]
    fn inline_profile() {
        let settings = ProfileSettings {
            host: "[2001:db8::1]".into(),
            port: 1194,
            proto: "udp".into(),
            key_type: KeyType::Ec,
            tls_crypt_v2: false,
        };
        let text = render(&Profile {
            name: "alice",
            settings: &settings,
            ca: "CA\n",
            cert: "CERT",
            key: "KEY\n",
            tls_crypt: &TlsCrypt::Shared("TC\n".into()),
        });
        assert!(text.contains("\nremote 2001:db8::1 1194\n"), "{text}");
        assert!(text.contains("\nexplicit-exit-notify 1\n"), "{text}");
        assert!(
            text.ends_with("<key>\nKEY\n</key>\n<tls-crypt>\nTC\n</tls-crypt>\n"),
            "{text}"
        );
        let tcp = ProfileSettings {
            proto: "tcp".into(),
            ..settings
        };
        let text = render(&Profile {
            name: "bob",
            settings: &tcp,
            ca: "",
            cert: "",
            key: "",
            tls_crypt: &TlsCrypt::V2("V2\n".into()),
        });
        assert!(text.contains("\nproto tcp-client\n"), "{text}");
        assert!(!text.contains("explicit-exit-notify"), "{text}");
        assert!(
            text.ends_with("<tls-crypt-v2>\nV2\n</tls-crypt-v2>\n"),
            "{text}"
        );
    }
}
