//! `ferrovpn init [DIR]`: a CA, the server's certificate, a tls-crypt-v2
//! server key (or, with `--tls-crypt`, one shared tls-crypt key), an empty
//! CRL and a commented `server.conf`, in a directory that has no PKI yet.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ferrovpn_proto::tls_crypt_v2::ServerKey;
use ferrovpn_proto::wrap::StaticKey;

use super::{
    CA_DAYS, Index, KeyType, ProfileSettings, Role, TLS_CRYPT_KEY, TLS_CRYPT_V2_SERVER_KEY,
    write_file,
};

/// Port of the metrics endpoint the generated config turns on (127.0.0.1 only).
pub const METRICS_PORT: u16 = 9176;

/// What `init` was asked for.
#[derive(Debug, Clone)]
pub struct InitOptions {
    pub dir: PathBuf,
    /// `HOST[:PORT]` clients connect to.
    pub endpoint: String,
    pub proto: String,
    /// `NETWORK/PREFIX` of the tunnel.
    pub subnet: String,
    /// `NETWORK/PREFIX` for `server-ipv6`, if IPv6 is wanted inside the tunnel.
    pub ipv6: Option<String>,
    pub dns: Vec<String>,
    pub key_type: KeyType,
    /// A tls-crypt-v2 server key (each client gets its own key); false:
    /// one tls-crypt key shared by every client (`--tls-crypt`).
    pub tls_crypt_v2: bool,
}

/// What the generated server.conf says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfParams {
    pub port: u16,
    pub proto: String,
    pub network: Ipv4Addr,
    pub netmask: Ipv4Addr,
    /// `server-ipv6` NETWORK/PREFIX, validated.
    pub ipv6: Option<String>,
    pub dns: Vec<String>,
    /// The directory `init` wrote into, absolute.
    pub dir: PathBuf,
    /// `tls-crypt-v2` rather than `tls-crypt`.
    pub tls_crypt_v2: bool,
}

/// `--ipv6 NETWORK/PREFIX`: what `server-ipv6` takes (prefix 64-124, the
/// network address itself).
pub fn parse_subnet6(net6: &str) -> anyhow::Result<(std::net::Ipv6Addr, u8)> {
    let bad = || {
        anyhow::anyhow!(
            "--ipv6 {net6:?}: expected an IPv6 NETWORK/PREFIX such as fd00:8::/64 (prefix 64-124)"
        )
    };
    let (net, prefix) = net6.split_once('/').ok_or_else(bad)?;
    let net: std::net::Ipv6Addr = net.parse().map_err(|_| bad())?;
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    if !(64..=124).contains(&prefix) {
        return Err(bad());
    }
    let host_bits = u128::MAX >> prefix;
    if u128::from(net) & host_bits != 0 {
        bail!("--ipv6 {net6}: {net} is not the network address of a /{prefix}");
    }
    Ok((net, prefix))
}

/// `HOST[:PORT]`, `[IPV6]:PORT` or a bare IPv6 address; the port defaults to 1194.
pub fn parse_endpoint(endpoint: &str) -> anyhow::Result<(String, u16)> {
    let bad =
        || anyhow::anyhow!("--endpoint {endpoint:?}: expected HOST, HOST:PORT or [IPV6]:PORT");
    let (host, port) = if let Some(rest) = endpoint.strip_prefix('[') {
        let (h, after) = rest.split_once(']').ok_or_else(bad)?;
        (format!("[{h}]"), after.strip_prefix(':'))
    } else if endpoint.matches(':').count() > 1 {
        (endpoint.to_string(), None)
    } else {
        match endpoint.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (endpoint.to_string(), None),
        }
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
        None => 1194,
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    if !host_ok {
        return Err(bad());
    }
    Ok((host, port))
}

/// `NETWORK/PREFIX` (prefix 8-29, the network aligned to it).
pub fn parse_subnet(subnet: &str) -> anyhow::Result<(Ipv4Addr, Ipv4Addr)> {
    let bad = || {
        anyhow::anyhow!(
            "--subnet {subnet:?}: expected an IPv4 NETWORK/PREFIX such as 10.8.0.0/24 (prefix 8-29)"
        )
    };
    let (net, prefix) = subnet.split_once('/').ok_or_else(bad)?;
    let net: Ipv4Addr = net.parse().map_err(|_| bad())?;
    let prefix: u32 = prefix.parse().map_err(|_| bad())?;
    if !(8..=29).contains(&prefix) {
        return Err(bad());
    }
    let mask = u32::MAX << (32 - prefix);
    if u32::from(net) & !mask != 0 {
        bail!(
            "--subnet {subnet}: {net} is not the network address of a /{prefix} (try {}/{prefix})",
            Ipv4Addr::from(u32::from(net) & mask)
        );
    }
    Ok((net, Ipv4Addr::from(mask)))
}

/// The generated server.conf.
pub fn server_conf(p: &ServerConfParams) -> String {
    let d = p.dir.display();
    let proto = if p.proto == "udp" {
        "udp"
    } else {
        "tcp-server"
    };
    let mut o = format!(
        "# ferrovpn server configuration, written by 'ferrovpn init' (OpenVPN 2.6 syntax).
# Run it: ferrovpn --config {d}/server.conf   (as root; or: systemctl start ferrovpn@NAME
# with this file as /etc/ferrovpn/NAME.conf). Add clients with 'ferrovpn client add NAME'.

port {port}
proto {proto}
dev tun
# Every client gets one address of the subnet; the server has the first.
topology subnet
server {network} {netmask}
# A client keeps its address across reconnects (the file is rewritten every 600 s).
ifconfig-pool-persist {d}/state/ipp.txt
keepalive 10 60
",
        port = p.port,
        network = p.network,
        netmask = p.netmask,
    );
    if let Some(net6) = &p.ipv6 {
        o += &format!(
            "# IPv6 inside the tunnel: the server has the first address, clients get theirs from the pool.\nserver-ipv6 {net6}\n"
        );
    }
    for dns in &p.dns {
        o += &format!("push \"dhcp-option DNS {dns}\"\n");
    }
    o += &format!(
        "# To send all of the clients' traffic through the VPN, uncomment this (this host
# then needs IP forwarding and NAT for {network}/{prefix}):
;push \"redirect-gateway def1 bypass-dhcp\"

# The PKI 'ferrovpn init' made; 'ferrovpn client revoke' rewrites the CRL, and the
# server re-reads it at once and drops the revoked client's session.
ca {d}/pki/ca.crt
cert {d}/pki/server.crt
key {d}/pki/server.key
dh none
crl-verify {d}/pki/crl.pem
{tls_crypt}remote-cert-tls client
# AEAD ciphers only.
data-ciphers AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305
",
        network = p.network,
        prefix = u32::from(p.netmask).count_ones(),
        tls_crypt = if p.tls_crypt_v2 {
            format!(
                "# Control channel encrypted and authenticated with each client's own key
# (tls-crypt-v2; 'ferrovpn client add' puts it in the profile): the server does
# not answer anyone without one, and keeps no per-client key.
tls-crypt-v2 {d}/{TLS_CRYPT_V2_SERVER_KEY}
"
            )
        } else {
            format!(
                "# Control channel encrypted and authenticated with a pre-shared key: the server does
# not answer anyone without it.
tls-crypt {d}/{TLS_CRYPT_KEY}
"
            )
        },
    );
    if p.proto == "udp" {
        o += "# OpenVPN 2.6 tells its clients when it restarts (UDP has no close); ferrovpn\n\
              # accepts the line with a warning (its clients notice a restart by ping-restart).\n\
              explicit-exit-notify 1\n";
    }
    o += &format!(
        "
# Once set up, run without root.
user nobody
group nogroup
persist-key
persist-tun

# What is going on: the client list every 10 s, a management socket ('ferrovpn status',
# 'ferrovpn client list'), Prometheus metrics on the loopback only.
status {d}/state/status.log 10
status-version 2
management {d}/state/management.sock unix
metrics 127.0.0.1:{METRICS_PORT}
verb 3
"
    );
    o
}

/// `ferrovpn init`: refuses a directory that has a PKI or a server.conf.
pub fn run(opts: &InitOptions) -> anyhow::Result<PathBuf> {
    let (host, port) = parse_endpoint(&opts.endpoint)?;
    let (network, netmask) = parse_subnet(&opts.subnet)?;
    if let Some(net6) = &opts.ipv6 {
        parse_subnet6(net6)?;
    }
    for dns in &opts.dns {
        if dns.parse::<std::net::IpAddr>().is_err() {
            bail!("--dns {dns:?}: expected an IP address");
        }
    }
    if !matches!(opts.proto.as_str(), "udp" | "tcp") {
        bail!("--proto {:?}: expected udp or tcp", opts.proto);
    }
    std::fs::create_dir_all(&opts.dir)
        .with_context(|| format!("creating {}", opts.dir.display()))?;
    let dir = opts
        .dir
        .canonicalize()
        .with_context(|| format!("resolving {}", opts.dir.display()))?;
    for existing in ["pki", "server.conf", "clients"] {
        let p = dir.join(existing);
        if p.symlink_metadata().is_ok() {
            bail!(
                "{} exists: refusing to overwrite an existing PKI or configuration (use an empty directory)",
                p.display()
            );
        }
    }
    crate::privileges::make_undumpable()?;
    for (sub, mode) in [
        ("pki", 0o755),
        ("pki/issued", 0o755),
        ("clients", 0o700),
        ("state", 0o750),
    ] {
        create_dir(&dir.join(sub), mode)?;
    }
    give_to_unprivileged_user(&dir.join("state"))?;
    let key_type = opts.key_type;
    let ca_key = super::new_key(key_type)?;
    let (ca_params, _) = super::params("ferrovpn CA", Role::Ca, CA_DAYS);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .context("self-signing the CA")?;
    write_file(&dir.join("pki/ca.key"), &ca_key.serialize_pem(), 0o600)?;
    write_file(&dir.join("pki/ca.crt"), &ca_cert.pem(), 0o644)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let (cert, key, _) = super::issue_leaf(&issuer, "server", Role::Server, key_type, CA_DAYS)?;
    write_file(&dir.join("pki/server.key"), &key, 0o600)?;
    write_file(&dir.join("pki/server.crt"), &cert, 0o644)?;
    if opts.tls_crypt_v2 {
        let server_key = ServerKey::generate_file_text();
        write_file(&dir.join(TLS_CRYPT_V2_SERVER_KEY), &server_key, 0o600)?;
    } else {
        let tls_crypt = StaticKey::generate().to_file_text();
        write_file(&dir.join(TLS_CRYPT_KEY), &tls_crypt, 0o600)?;
    }
    let mut index = Index {
        settings: ProfileSettings {
            host,
            port,
            proto: opts.proto.clone(),
            key_type,
            tls_crypt_v2: opts.tls_crypt_v2,
        },
        crl_number: 0,
        certs: Vec::new(),
    };
    let pki = super::Pki { dir: dir.clone() };
    pki.write_crl(&issuer, &mut index)?;
    index.save(&dir.join("pki/index.json"))?;
    let conf = server_conf(&ServerConfParams {
        port,
        proto: opts.proto.clone(),
        network,
        netmask,
        ipv6: opts.ipv6.clone(),
        dns: opts.dns.clone(),
        dir: dir.clone(),
        tls_crypt_v2: opts.tls_crypt_v2,
    });
    write_file(&dir.join("server.conf"), &conf, 0o644)?;
    Ok(dir)
}

fn create_dir(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// The server writes its status and address files there after dropping to
/// `user nobody` / `group nogroup`.
fn give_to_unprivileged_user(dir: &Path) -> anyhow::Result<()> {
    if !rustix::process::geteuid().is_root() {
        // Only root can give a directory away; a non-root server does not drop privileges.
        return Ok(());
    }
    let uid = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .map(|u| u.uid);
    let gid = nix::unistd::Group::from_name("nogroup")
        .ok()
        .flatten()
        .map(|g| g.gid);
    let (Some(uid), Some(gid)) = (uid, gid) else {
        bail!(
            "no user 'nobody' or no group 'nogroup' on this system: the generated config runs as them"
        );
    };
    std::os::unix::fs::chown(dir, Some(uid.as_raw()), Some(gid.as_raw()))
        .with_context(|| format!("giving {} to nobody:nogroup", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            parse_endpoint("vpn.example.com").unwrap(),
            ("vpn.example.com".into(), 1194)
        );
        assert_eq!(
            parse_endpoint("192.0.2.1:443").unwrap(),
            ("192.0.2.1".into(), 443)
        );
        assert_eq!(
            parse_endpoint("[2001:db8::1]:53").unwrap(),
            ("[2001:db8::1]".into(), 53)
        );
        assert_eq!(
            parse_endpoint("2001:db8::1").unwrap(),
            ("2001:db8::1".into(), 1194)
        );
        for bad in ["", "host:0", "host:x", "[::1", "a b", "h;rm:1"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ipv6_subnets() {
        assert_eq!(
            parse_subnet6("fd00:8::/64").unwrap(),
            ("fd00:8::".parse().unwrap(), 64)
        );
        for bad in [
            "fd00:8::1/64",
            "fd00::/48",
            "fd00::/125",
            "10.8.0.0/24",
            "fd00::",
        ] {
            assert!(parse_subnet6(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subnets() {
        assert_eq!(
            parse_subnet("10.8.0.0/24").unwrap(),
            (Ipv4Addr::new(10, 8, 0, 0), Ipv4Addr::new(255, 255, 255, 0))
        );
        let e = parse_subnet("10.8.0.1/24").unwrap_err().to_string();
        assert!(e.contains("try 10.8.0.0/24"), "{e}");
        for bad in ["10.8.0.0", "10.8.0.0/30", "10.8.0.0/7", "x/24"] {
            assert!(parse_subnet(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn init_writes_a_server_config_that_loads() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            dir: tmp.path().join("vpn"),
            endpoint: "vpn.example.com:1195".into(),
            proto: "udp".into(),
            subnet: "10.9.0.0/16".into(),
            ipv6: Some("fd00:9::/64".into()),
            dns: vec!["192.0.2.53".into()],
            key_type: KeyType::Ec,
            tls_crypt_v2: true,
        };
        let dir = run(&opts).unwrap();
        let cfg = ferrovpn_config::parse_file(dir.join("server.conf")).unwrap();
        assert!(cfg.is_server());
        assert_eq!(cfg.metrics, Some(([127, 0, 0, 1], METRICS_PORT).into()));
        let text = std::fs::read_to_string(dir.join("server.conf")).unwrap();
        assert!(
            text.contains("push \"dhcp-option DNS 192.0.2.53\"\n"),
            "{text}"
        );
        assert!(text.contains("\nserver 10.9.0.0 255.255.0.0\n"), "{text}");
        assert!(text.contains("\nserver-ipv6 fd00:9::/64\n"), "{text}");
        // The server settings (pool, pushed ifconfig-ipv6) build from it.
        crate::settings::server_settings(&cfg).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for (f, mode) in [
            ("pki/ca.key", 0o600),
            ("pki/server.key", 0o600),
            (TLS_CRYPT_V2_SERVER_KEY, 0o600),
            ("pki/ca.crt", 0o644),
            ("pki/crl.pem", 0o644),
        ] {
            let m = std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, mode, "{f}");
        }
        // A second init into the same directory refuses.
        let e = run(&opts).unwrap_err().to_string();
        assert!(e.contains("refusing to overwrite"), "{e}");
        // Clients: add, duplicate refused, renew, revoke.
        let pki = crate::pki::Pki::open(&dir).unwrap();
        let profile = pki.add_client("alice", 30).unwrap();
        let ovpn = std::fs::read_to_string(&profile).unwrap();
        assert!(ovpn.contains("\nremote vpn.example.com 1195\n"), "{ovpn}");
        // Her own tls-crypt-v2 key, which the server's key unwraps.
        let client_key = ferrovpn_proto::tls_crypt_v2::ClientKey::parse(&ovpn).unwrap();
        let server_key = std::fs::read_to_string(dir.join(TLS_CRYPT_V2_SERVER_KEY)).unwrap();
        let (kc, _) = ServerKey::parse(&server_key)
            .unwrap()
            .unwrap_client_key(&client_key.wkc)
            .unwrap();
        assert_eq!(kc.as_bytes(), client_key.key.as_bytes());
        assert!(cfg.tls_crypt_v2.is_some() && cfg.tls_crypt.is_none());
        assert!(pki.add_client("alice", 30).is_err());
        assert!(pki.add_client("../x", 30).is_err());
        pki.renew_client("alice", 30).unwrap();
        let serial = pki.revoke_client("alice").unwrap();
        let index = pki.index().unwrap();
        assert_eq!(index.certs.len(), 2);
        assert!(index.certs.iter().all(|c| c.revoked_at.is_some()));
        assert_eq!(index.certs[1].serial, serial);
        assert!(!profile.exists());
        let crl = std::fs::read_to_string(dir.join("pki/crl.pem")).unwrap();
        let crls = ferrovpn_proto::session::tls::parse_crls(&crl).unwrap();
        assert_eq!(crls.len(), 1);
    }

    #[test]
    fn init_with_a_shared_tls_crypt_key() {
        let tmp = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            dir: tmp.path().to_path_buf(),
            endpoint: "192.0.2.1".into(),
            proto: "tcp".into(),
            subnet: "10.8.0.0/24".into(),
            ipv6: None,
            dns: vec![],
            key_type: KeyType::Ec,
            tls_crypt_v2: false,
        };
        let dir = run(&opts).unwrap();
        let cfg = ferrovpn_config::parse_file(dir.join("server.conf")).unwrap();
        assert!(cfg.tls_crypt.is_some() && cfg.tls_crypt_v2.is_none());
        assert!(!dir.join(TLS_CRYPT_V2_SERVER_KEY).exists());
        let pki = crate::pki::Pki::open(&dir).unwrap();
        let ovpn = std::fs::read_to_string(pki.add_client("bob", 1).unwrap()).unwrap();
        let shared = std::fs::read_to_string(dir.join(TLS_CRYPT_KEY)).unwrap();
        let block = format!("<tls-crypt>\n{}\n</tls-crypt>\n", shared.trim_end());
        assert!(ovpn.contains(&block), "{ovpn}");
        assert!(!ovpn.contains("tls-crypt-v2"), "{ovpn}");
    }
}
