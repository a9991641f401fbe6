use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use ferrovpn_config::*;

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n";
const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIkey\n-----END PRIVATE KEY-----\n";
const STATIC: &str = "#\n# 2048 bit OpenVPN static key\n#\n-----BEGIN OpenVPN Static key V1-----\n00112233\n-----END OpenVPN Static key V1-----\n";

fn inline(tag: &str, body: &str) -> String {
    format!("<{tag}>\n{body}</{tag}>\n")
}

/// A minimal valid server (inline material), 7 lines + 3 blocks.
fn server_base() -> String {
    format!(
        "server 10.8.0.0 255.255.255.0\ndev tun\n{}{}{}",
        inline("ca", CA),
        inline("cert", CERT),
        inline("key", KEY)
    )
}

fn client_base() -> String {
    format!(
        "client\ndev tun\nremote vpn.example.com 1194\n{}{}{}",
        inline("ca", CA),
        inline("cert", CERT),
        inline("key", KEY)
    )
}

/// A fresh directory under the system temp dir.
fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ferrovpn-config-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create temp dir");
    d
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write temp file");
    p
}

fn err(text: &str) -> String {
    match parse_str_no_fs(text, "t.conf") {
        Ok(c) => panic!("expected an error for:\n{text}\ngot {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// Error for one directive line prepended to a valid server config.
fn line_err(line: &str) -> String {
    err(&format!("{line}\n{}", server_base()))
}

#[test]
fn realistic_server_conf() {
    let dir = temp_dir("server");
    let ca = write(&dir, "ca.crt", CA);
    let cert = write(&dir, "server.crt", CERT);
    let key = write(&dir, "server.key", KEY);
    let ta = write(&dir, "ta.key", STATIC);
    let text = format!(
        r#"# OpenVPN 2.6 sample server, lightly edited
port 1194
proto udp
dev tun
ca {ca}
cert {cert}
key {key}  # This file should be kept secret
dh none
topology subnet
server 10.8.0.0 255.255.255.0
ifconfig-pool-persist ipp.txt
push "route 192.168.10.0 255.255.255.0"
push "redirect-gateway def1 bypass-dhcp"
push "dhcp-option DNS 208.67.222.222"
route 192.168.40.0 255.255.255.0 10.8.0.2 5
client-to-client
keepalive 10 120
tls-crypt {ta}
data-ciphers AES-256-GCM:aes-128-gcm:AES-256-CBC
auth SHA256
max-clients 100
user nobody
group nogroup
persist-key
persist-tun
status openvpn-status.log
verb 3
explicit-exit-notify 1
reneg-sec 3600 4000
replay-window 128 30
tls-version-min 1.2
tun-mtu 1500
mssfix 1450
workers 4
cpu-pin
max-packet-size 9000
"#,
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
        ta = ta.display()
    );
    let path = write(&dir, "server.conf", &text);
    let c = parse_file(&path).expect("server.conf parses");
    assert_eq!(c.mode, Some(Mode::Server));
    assert!(c.tls_server && !c.tls_client);
    assert_eq!(c.port, Some(1194));
    assert_eq!(c.local_port(), 1194);
    assert_eq!(c.proto(), Proto::Udp);
    assert_eq!(c.dev.as_deref(), Some("tun"));
    assert_eq!(c.topology(), Topology::Subnet);
    assert_eq!(
        c.server,
        Some(ServerNet {
            network: Ipv4Addr::new(10, 8, 0, 0),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            nopool: false
        })
    );
    assert_eq!(c.server_ip(), Some(Ipv4Addr::new(10, 8, 0, 1)));
    assert_eq!(
        c.push,
        [
            "route 192.168.10.0 255.255.255.0",
            "redirect-gateway def1 bypass-dhcp",
            "dhcp-option DNS 208.67.222.222"
        ]
    );
    assert_eq!(
        c.routes,
        [Route {
            network: Ipv4Addr::new(192, 168, 40, 0),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
            gateway: Some(RouteGateway::Addr(Ipv4Addr::new(10, 8, 0, 2))),
            metric: Some(5),
        }]
    );
    assert!(c.client_to_client);
    assert_eq!(
        c.keepalive,
        Some(Keepalive {
            interval: 10,
            timeout: 120
        })
    );
    assert_eq!(c.ping_interval(), Some(10));
    assert_eq!(
        c.ping_restart_secs(),
        Some(240),
        "server doubles keepalive timeout"
    );
    assert_eq!(
        c.ca,
        Some(Material {
            source: MaterialSource::File(ca.clone()),
            text: CA.into()
        })
    );
    assert_eq!(c.cert.as_ref().map(|m| m.text.as_str()), Some(CERT));
    assert_eq!(c.key.as_ref().map(|m| m.text.as_str()), Some(KEY));
    assert_eq!(c.dh, Some(Dh::None));
    assert_eq!(
        c.tls_crypt.as_ref().map(|m| &m.source),
        Some(&MaterialSource::File(ta.clone()))
    );
    assert_eq!(
        c.data_ciphers(),
        ["AES-256-GCM", "AES-128-GCM", "AES-256-CBC"]
    );
    assert_eq!(c.auth(), "SHA256");
    assert_eq!(c.max_clients(), 100);
    assert!(c.persist_key && c.persist_tun);
    assert_eq!(c.verb(), 3);
    assert_eq!(c.explicit_exit_notify, Some(1));
    assert_eq!(
        c.reneg_sec,
        Some(RenegSec {
            secs: 3600,
            max: Some(4000)
        })
    );
    assert_eq!(
        c.replay_window(),
        ReplayWindow {
            size: 128,
            time: Some(30)
        }
    );
    assert_eq!(
        c.tls_version_min,
        Some(TlsVersionMin {
            version: TlsVersion::V1_2,
            or_highest: false
        })
    );
    assert_eq!(c.tun_mtu(), 1500);
    assert_eq!(c.mssfix().max, 1450);
    assert_eq!(c.workers(), 4);
    assert!(c.cpu_pin);
    assert_eq!(c.max_packet_size(), 9000);
    assert_eq!(
        c.status,
        Some(StatusFile {
            path: "openvpn-status.log".into(),
            interval_secs: 60
        })
    );
    assert_eq!(
        c.ifconfig_pool_persist,
        Some(StatusFile {
            path: "ipp.txt".into(),
            interval_secs: 600
        })
    );
    // user and group are kept for the privilege drop; AES-256-CBC is
    // supported (with the `auth` HMAC), so nothing is dropped or warned about.
    assert_eq!(c.user.as_deref(), Some("nobody"));
    assert_eq!(c.group.as_deref(), Some("nogroup"));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(
        c.data_ciphers(),
        vec!["AES-256-GCM", "AES-128-GCM", "AES-256-CBC"]
    );
    assert_eq!(c.location_of("keepalive").map(|l| l.line), Some(17));
}

#[test]
fn realistic_client_ovpn_with_inline_blocks() {
    let text = format!(
        r#"client
dev tun
proto udp
remote vpn1.example.com 1194
remote 203.0.113.7 1195 udp4
remote-random
resolv-retry infinite
nobind
persist-key
persist-tun
remote-cert-tls server
verify-x509-name "server" name
cipher AES-256-GCM
data-ciphers-fallback AES-128-GCM
auth SHA512
verb 3
key-direction 1
connect-retry 2 30
explicit-exit-notify
setenv opt block-outside-dns
setenv opt some-future-option 1 2
ignore-unknown-option foo-bar
foo-bar baz
{}{}{}{}"#,
        inline("ca", CA),
        inline("cert", CERT),
        inline("key", KEY),
        inline("tls-auth", STATIC)
    );
    let c = parse_str_no_fs(&text, "client.ovpn").expect("client.ovpn parses");
    assert_eq!(c.mode, Some(Mode::Client));
    assert!(c.tls_client && c.pull && c.nobind && c.remote_random);
    assert_eq!(
        c.remotes,
        [
            Remote {
                host: "vpn1.example.com".into(),
                port: Some(1194),
                proto: None
            },
            Remote {
                host: "203.0.113.7".into(),
                port: Some(1195),
                proto: Some(Proto::Udp4)
            }
        ]
    );
    assert_eq!(c.remote_cert_tls, Some(RemoteCertTls::Server));
    assert_eq!(
        c.verify_x509_name,
        Some(VerifyX509Name {
            name: "server".into(),
            kind: X509NameType::Name
        })
    );
    assert_eq!(c.cipher.as_deref(), Some("AES-256-GCM"));
    assert_eq!(c.data_ciphers_fallback.as_deref(), Some("AES-128-GCM"));
    assert_eq!(c.auth(), "SHA512");
    assert_eq!(
        c.ca,
        Some(Material {
            source: MaterialSource::Inline,
            text: CA.into()
        })
    );
    assert_eq!(c.key.as_ref().map(|m| m.text.as_str()), Some(KEY));
    let ta = c.tls_auth.as_ref().expect("tls-auth");
    assert_eq!(ta.material.text, STATIC);
    assert_eq!(ta.direction, None);
    assert_eq!(c.tls_auth_direction(), Some(KeyDirection::One));
    assert_eq!(
        c.connect_retry(),
        ConnectRetry {
            secs: 2,
            max: Some(30)
        }
    );
    assert_eq!(c.explicit_exit_notify, Some(1));
    assert_eq!(c.data_ciphers(), DEFAULT_DATA_CIPHERS);
    assert_eq!(c.remote_port(&c.remotes[0]), 1194);
    // resolv-retry (line 7), block-outside-dns (20), some-future-option (21), foo-bar (23).
    assert_eq!(c.warnings.len(), 4, "{:?}", c.warnings);
    assert!(c.warnings[0].starts_with("client.ovpn:7: 'resolv-retry' ignored"));
    assert!(c.warnings[1].starts_with("client.ovpn:20: 'block-outside-dns' ignored"));
    assert_eq!(
        c.warnings[2],
        "client.ovpn:21: ignoring unknown directive 'some-future-option' (setenv opt)"
    );
    assert_eq!(
        c.warnings[3],
        "client.ovpn:23: ignoring unknown directive 'foo-bar' (ignore-unknown-option)"
    );
}

#[test]
fn syntax_details() {
    // `--` prefix in files, CRLF, BOM, comments, quotes.
    let text = format!(
        "\u{feff}--port 1195\r\n  ; comment\r\n# another\r\nproto 'udp6'\r\npush \"route 10.9.0.0 255.255.0.0\" # trailing\r\n{}",
        server_base()
    );
    let c = parse_str_no_fs(&text, "x").expect("parses");
    assert_eq!(c.port, Some(1195));
    assert_eq!(c.proto(), Proto::Udp6);
    assert_eq!(c.push, ["route 10.9.0.0 255.255.0.0"]);
}

#[test]
fn later_occurrences_override() {
    let c = parse_str_no_fs(
        &format!("port 1\nport 2\nverb 1\nverb 4\n{}", server_base()),
        "x",
    )
    .expect("parses");
    assert_eq!(c.port, Some(2));
    assert_eq!(c.verb, Some(4));
}

#[test]
fn includes_and_loops() {
    let dir = temp_dir("include");
    let common = write(&dir, "common.conf", &server_base());
    let main = write(
        &dir,
        "main.conf",
        &format!("port 4000\nconfig {}\nverb 5\n", common.display()),
    );
    let c = parse_file(&main).expect("include parses");
    assert_eq!(c.port, Some(4000));
    assert_eq!(c.verb, Some(5));
    assert!(c.server.is_some());

    // Loop: a includes b includes a.
    let a = dir.join("a.conf");
    let b = dir.join("b.conf");
    std::fs::write(&a, format!("config {}\n", b.display())).expect("write");
    std::fs::write(&b, format!("verb 1\nconfig {}\n", a.display())).expect("write");
    let e = parse_file(&a).expect_err("loop");
    assert_eq!(
        e.to_string(),
        format!(
            "{}:2: '{}' includes itself (include loop)",
            b.display(),
            a.display()
        )
    );

    // Depth: chain of 12 files.
    for i in 0..12 {
        let next = dir.join(format!("d{}.conf", i + 1));
        std::fs::write(
            dir.join(format!("d{i}.conf")),
            format!("config {}\n", next.display()),
        )
        .expect("write");
    }
    std::fs::write(dir.join("d12.conf"), "verb 1\n").expect("write");
    let e = parse_file(dir.join("d0.conf")).expect_err("too deep");
    assert_eq!(e.reason, Reason::IncludeTooDeep(10));
    assert_eq!(e.file, dir.join("d9.conf").display().to_string());
    assert_eq!(e.line, 1);

    // No file access in parse_str_no_fs.
    assert_eq!(
        err("config other.conf\n"),
        "t.conf:1: 'config other.conf' needs file access, which is disabled for this parse (use an inline block)"
    );
    assert_eq!(
        err("ca ca.crt\n"),
        "t.conf:1: 'ca ca.crt' needs file access, which is disabled for this parse (use an inline block)"
    );
}

#[test]
fn material_read_errors() {
    let dir = temp_dir("material");
    let missing = dir.join("missing.crt");
    let e =
        parse_str(&format!("verb 3\nca {}\n", missing.display()), "s.conf").expect_err("missing");
    assert_eq!(e.file, "s.conf");
    assert_eq!(e.line, 2);
    assert!(
        e.to_string()
            .starts_with(&format!("s.conf:2: cannot read '{}': ", missing.display())),
        "{e}"
    );
    let not_pem = write(&dir, "bad.crt", "hello\n");
    let e = parse_str(&format!("ca {}\n", not_pem.display()), "s.conf").expect_err("not pem");
    assert_eq!(
        e.to_string(),
        format!(
            "s.conf:1: 'ca' expects PEM certificates (-----BEGIN CERTIFICATE-----), none found in '{}'",
            not_pem.display()
        )
    );
    assert_eq!(
        err("<key>\nnope\n</key>\n"),
        "t.conf:1: 'key' expects a PEM private key (PRIVATE KEY-----), none found in inline <key>"
    );
    assert_eq!(
        err("<tls-crypt>\nnope\n</tls-crypt>\n"),
        "t.conf:1: 'tls-crypt' expects an OpenVPN static key (-----BEGIN OpenVPN Static key V1-----), none found in inline <tls-crypt>"
    );
    // A directory is not a readable file.
    let e = parse_str(&format!("cert {}\n", dir.display()), "s.conf").expect_err("dir");
    assert!(e.to_string().starts_with("s.conf:1: cannot read"), "{e}");
}

#[test]
fn dh_file_is_ignored_with_warning() {
    let c = parse_str_no_fs(&format!("dh dh2048.pem\n{}", server_base()), "s.conf").expect("ok");
    assert_eq!(c.dh, Some(Dh::File("dh2048.pem".into())));
    assert_eq!(
        c.warnings,
        ["s.conf:1: 'dh' parameters ignored: ferrovpn only uses ECDHE / TLS 1.3 key exchange"]
    );
}

#[test]
fn line_errors() {
    let cases: &[(&str, &str)] = &[
        (
            "port abc",
            r#"t.conf:1: 'port' expects a number 1-65535, got "abc""#,
        ),
        (
            "port 0",
            r#"t.conf:1: 'port' expects a number 1-65535, got "0""#,
        ),
        (
            "port 65536",
            r#"t.conf:1: 'port' expects a number 1-65535, got "65536""#,
        ),
        ("port", "t.conf:1: 'port' expects a number 1-65535"),
        (
            "port 1 2",
            "t.conf:1: 'port' takes at most 1 argument(s), got 2",
        ),
        ("foo", "t.conf:1: unsupported directive 'foo'"),
        (
            "comp-lzo maybe",
            "t.conf:1: bad comp-lzo option: maybe -- must be 'yes', 'no', or 'adaptive'",
        ),
        (
            "compress zstd",
            "t.conf:1: bad compress option: zstd -- must be stub, stub-v2, lzo, lz4 or lz4-v2",
        ),
        (
            "compress migrate",
            "t.conf:1: unsupported 'compress migrate': pushing compression settings per client is not supported; set 'compress stub-v2' or 'comp-lzo no' and push it",
        ),
        (
            "allow-compression no\nallow-compression yes",
            "t.conf:2: cannot set allow-compression to 'yes' after it was set to 'no'",
        ),
        (
            "compress lz4\nallow-compression no",
            "t.conf:2: '--allow-compression no' conflicts with enabling compression",
        ),
        (
            "proto sctp",
            r#"t.conf:1: 'proto' expects udp, udp4, udp6, tcp, tcp4, tcp6, tcp-client, tcp4-client, tcp6-client, tcp-server, tcp4-server or tcp6-server, got "sctp""#,
        ),
        (
            "connect-timeout 0",
            r#"t.conf:1: 'connect-timeout' expects a number of seconds (at least 1), got "0""#,
        ),
        (
            "dev tap0",
            "t.conf:1: unsupported 'dev tap0': tap (layer 2) devices are not supported, use tun",
        ),
        (
            "dev-type tap",
            "t.conf:1: unsupported 'dev-type tap': tap (layer 2) devices are not supported, use tun",
        ),
        (
            "dev averyveryverylongname",
            r#"t.conf:1: 'dev' expects an interface name of 1-15 characters, got "averyveryverylongname""#,
        ),
        (
            "cryptoapicert \"SUBJ:x\"",
            "t.conf:1: unsupported 'cryptoapicert': Windows certificate store is not supported",
        ),
        (
            "mode p2p",
            "t.conf:1: unsupported 'mode p2p': point-to-point mode is not supported; use 'server' / 'client'",
        ),
        (
            "topology star",
            r#"t.conf:1: 'topology' expects subnet, net30 or p2p, got "star""#,
        ),
        (
            "local \"my host\"",
            r#"t.conf:1: 'local' expects an IP address, * or a host name, got "my host""#,
        ),
        (
            "server 10.8.0.1 255.255.255.0",
            "t.conf:1: 'server' network 10.8.0.1 is not aligned to netmask 255.255.255.0",
        ),
        (
            "server 10.8.0.0 255.0.255.0",
            r#"t.conf:1: 'server' expects a contiguous IPv4 netmask such as 255.255.255.0, got "255.0.255.0""#,
        ),
        (
            "server 10.8.0.300 255.255.255.0",
            r#"t.conf:1: 'server' expects an IPv4 network address, got "10.8.0.300""#,
        ),
        (
            "server 10.8.0.0 255.255.255.0 pool",
            r#"t.conf:1: 'server' expects 'nopool' as third argument, got "pool""#,
        ),
        (
            "server 10.8.0.0 255.255.255.254",
            "t.conf:1: 'server' netmask 255.255.255.254 is too small (at most /30)",
        ),
        (
            "ifconfig-pool 10.8.0.9 10.8.0.5",
            "t.conf:1: 'ifconfig-pool' start 10.8.0.9 is after end 10.8.0.5",
        ),
        (
            "route 10.1.0.0 255.255.0.0 nowhere",
            r#"t.conf:1: 'route' expects an IPv4 gateway, vpn_gateway, net_gateway, remote_host or default, got "nowhere""#,
        ),
        (
            "route 10.1.0.1 255.255.0.0",
            "t.conf:1: 'route' network 10.1.0.1 is not aligned to netmask 255.255.0.0",
        ),
        (
            "route 10.1.0.0 255.255.0.0 vpn_gateway x",
            r#"t.conf:1: 'route' expects a metric number, got "x""#,
        ),
        (
            "keepalive 10",
            "t.conf:1: 'keepalive' expects INTERVAL TIMEOUT (seconds)",
        ),
        (
            "keepalive 10 15",
            "t.conf:1: 'keepalive' timeout (15) must be at least twice the interval (10)",
        ),
        (
            "keepalive -1 15",
            r#"t.conf:1: 'keepalive' expects a number of seconds, got "-1""#,
        ),
        (
            "key-direction 2",
            r#"t.conf:1: 'key-direction' expects a key direction 0 or 1, got "2""#,
        ),
        (
            "data-ciphers BF-CBC:AES-256-CBC",
            "t.conf:1: 'data-ciphers': unsupported cipher BF-CBC (OpenSSL 3 has it only in its legacy provider; OpenVPN 2.6 refuses it too)",
        ),
        (
            "data-ciphers CAMELLIA-256-CBC",
            "t.conf:1: 'data-ciphers' has no supported cipher (supported: AES-128-GCM, AES-256-GCM, CHACHA20-POLY1305, AES-128-CBC, AES-192-CBC, AES-256-CBC)",
        ),
        (
            "data-ciphers-fallback BF-CBC",
            "t.conf:1: 'data-ciphers-fallback BF-CBC': not supported (supported: AES-128-GCM, AES-256-GCM, CHACHA20-POLY1305, AES-128-CBC, AES-192-CBC, AES-256-CBC); OpenSSL 3 has it only in its legacy provider, so OpenVPN 2.6 cannot use it either",
        ),
        (
            "data-ciphers AES-256-GCM::X",
            r#"t.conf:1: 'data-ciphers' expects a colon-separated cipher list such as AES-256-GCM:AES-128-GCM, got "AES-256-GCM::X""#,
        ),
        (
            "auth WHIRLPOOL",
            r#"t.conf:1: 'auth' expects a digest: SHA1, SHA224, SHA256, SHA384, SHA512, MD5 or none, got "WHIRLPOOL""#,
        ),
        (
            "tls-version-min 1.4",
            r#"t.conf:1: 'tls-version-min' expects 1.0, 1.1, 1.2 or 1.3, got "1.4""#,
        ),
        (
            "crl-verify /etc/openvpn/crl dir",
            "t.conf:1: unsupported 'crl-verify DIR dir': a directory of revoked serials is not supported; give a PEM CRL file",
        ),
        (
            "remote-cert-tls peer",
            r#"t.conf:1: 'remote-cert-tls' expects 'server' or 'client', got "peer""#,
        ),
        (
            "verify-x509-name cn=x foo",
            r#"t.conf:1: 'verify-x509-name' expects subject, name or name-prefix, got "foo""#,
        ),
        (
            "verify-client-cert maybe",
            r#"t.conf:1: 'verify-client-cert' expects none, optional or require, got "maybe""#,
        ),
        (
            "tun-mtu 50",
            r#"t.conf:1: 'tun-mtu' expects a number 100-65535, got "50""#,
        ),
        (
            "mssfix 1400 sometimes",
            r#"t.conf:1: 'mssfix' expects 'mtu' or 'fixed', got "sometimes""#,
        ),
        (
            "verb 12",
            r#"t.conf:1: 'verb' expects a level 0-11, got "12""#,
        ),
        (
            "workers 0",
            r#"t.conf:1: 'workers' expects a number of threads 1-1024, got "0""#,
        ),
        (
            "max-packet-size 100",
            r#"t.conf:1: 'max-packet-size' expects a size 576-65535, got "100""#,
        ),
        (
            "redirect-gateway def1 everything",
            r#"t.conf:1: 'redirect-gateway' expects flags from def1, local, autolocal, bypass-dhcp, bypass-dns, block-local, !ipv4, ipv6, got "everything""#,
        ),
        (
            "replay-window 0",
            r#"t.conf:1: 'replay-window' expects a window size 1-65536, got "0""#,
        ),
        (
            "reneg-bytes lots",
            r#"t.conf:1: 'reneg-bytes' expects a number, got "lots""#,
        ),
        (
            "max-clients 0",
            r#"t.conf:1: 'max-clients' expects a number of at least 1, got "0""#,
        ),
        (
            "client-to-client yes",
            "t.conf:1: 'client-to-client' takes at most 0 argument(s), got 1",
        ),
        (
            "push",
            r#"t.conf:1: 'push' expects one quoted option string, e.g. push "route 10.0.0.0 255.0.0.0""#,
        ),
        (
            "push \"\"",
            r#"t.conf:1: 'push' expects a non-empty option string, got """#,
        ),
        (
            "push \"route 10.0.0.0",
            "t.conf:1: unterminated double quote",
        ),
        ("push 'x", "t.conf:1: unterminated single quote"),
        ("dev tun\\", "t.conf:1: backslash at end of line"),
        (
            "ca [inline]",
            "t.conf:1: 'ca [inline]' needs a <ca> block instead",
        ),
        (
            "key-method 1",
            "t.conf:1: unsupported 'key-method 1': only key-method 2 is supported",
        ),
        ("setenv opt", "t.conf:1: 'setenv opt' expects a directive"),
        (
            "setenv opt port x",
            r#"t.conf:1: 'port' expects a number 1-65535, got "x""#,
        ),
        (
            "setenv opt compress zstd",
            "t.conf:1: bad compress option: zstd -- must be stub, stub-v2, lzo, lz4 or lz4-v2",
        ),
        (
            "ignore-unknown-option compress\ncompress zstd",
            "t.conf:2: bad compress option: zstd -- must be stub, stub-v2, lzo, lz4 or lz4-v2",
        ),
        (
            "tls-auth ta.key 2",
            r#"t.conf:1: 'tls-auth' expects a key direction 0 or 1, got "2""#,
        ),
        (
            "connect-retry-max 0",
            r#"t.conf:1: 'connect-retry-max' expects a number of attempts (at least 1), got "0""#,
        ),
        ("--", "t.conf:1: unsupported directive ''"),
    ];
    for (line, want) in cases {
        assert_eq!(&line_err(line), want, "for line {line:?}");
    }
}

#[test]
fn block_errors() {
    assert_eq!(
        err("verb 1\n<ca>\n-----BEGIN CERTIFICATE-----\n"),
        "t.conf:2: inline <ca> block has no closing </ca>"
    );
    assert_eq!(
        err("verb 1\n</ca>\n"),
        "t.conf:2: </ca> without a matching <ca>"
    );
    assert_eq!(
        err("<crl-verify>\nnot a crl\n</crl-verify>\n"),
        "t.conf:1: 'crl-verify' expects a PEM certificate revocation list (-----BEGIN X509 CRL-----), none found in inline <crl-verify>"
    );
    assert_eq!(
        err("<port>\n1194\n</port>\n"),
        "t.conf:1: 'port' cannot be given as an inline block"
    );
    assert_eq!(
        err("<connection>\nremote x\nsndbuf 1\n</connection>\n"),
        "t.conf:3: option 'sndbuf' cannot be used in this context ([CONNECTION-OPTIONS])"
    );
    assert_eq!(
        err("<foo>\n</foo>\n"),
        "t.conf:1: unsupported directive 'foo'"
    );
}

#[test]
fn non_utf8_reports_line() {
    let dir = temp_dir("utf8");
    let p = dir.join("bad.conf");
    std::fs::write(&p, b"verb 1\nport 1\xff\n").expect("write");
    let e = parse_file(&p).expect_err("utf8");
    assert_eq!(
        e.to_string(),
        format!("{}:2: text is not valid UTF-8", p.display())
    );
}

#[test]
fn finalize_errors() {
    let cases: Vec<(String, &str)> = vec![
        (
            "verb 1\n".into(),
            "t.conf: no mode: expected 'server NETWORK NETMASK' (or 'mode server' + 'tls-server') or 'client'",
        ),
        (
            server_base().replace("dev tun\n", ""),
            "t.conf: missing 'dev' (e.g. 'dev tun')",
        ),
        (
            format!("dev vpn0\n{}", server_base().replace("dev tun\n", "")),
            "t.conf:1: 'dev vpn0' does not start with 'tun'; add 'dev-type tun'",
        ),
        (
            format!("tls-client\n{}", server_base()),
            "t.conf:1: both server ('server'/'mode server'/'tls-server') and client ('client'/'tls-client') directives given",
        ),
        (
            "mode server\ndev tun\n".into(),
            "t.conf:1: 'mode server' needs 'tls-server' (static-key mode is not supported)",
        ),
        (
            format!(
                "tls-server\nproto tcp-server\n{}",
                server_base().replace("server 10.8.0.0 255.255.255.0\n", "")
            ),
            "t.conf:2: unsupported 'proto': a point-to-point end without 'remote' (waiting for its peer) over TCP is not supported: point-to-point mode runs over UDP only",
        ),
        (
            format!(
                "tls-client\nnobind\n{}",
                server_base().replace("server 10.8.0.0 255.255.255.0\n", "")
            ),
            "t.conf:2: --nobind doesn't make sense unless used with --remote",
        ),
        (
            server_base()
                .replace(
                    "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n",
                    "",
                )
                .replace("<ca>\n</ca>\n", ""),
            "t.conf: missing 'ca' (file or inline <ca> block)",
        ),
        (
            format!(
                "mode server\ntls-server\ndev tun\n{}{}{}",
                inline("ca", CA),
                inline("cert", CERT),
                inline("key", KEY)
            ),
            "t.conf:1: server mode needs 'server NETWORK NETMASK', or 'server-ipv6 NETWORK/BITS' (or 'ifconfig-ipv6') for IPv6-only clients",
        ),
        (
            format!(
                "{}{}",
                server_base(),
                inline("tls-crypt", STATIC) + &inline("tls-auth", STATIC)
            ),
            "t.conf:18: 'tls-crypt' and 'tls-auth' cannot be used together",
        ),
        (
            format!("ifconfig-pool 10.9.0.2 10.9.0.50\n{}", server_base()),
            "t.conf:1: 'ifconfig-pool' address 10.9.0.2 is outside the 'server' network 10.8.0.0/255.255.255.0",
        ),
        (
            format!("ifconfig-pool 10.8.0.1 10.8.0.50\n{}", server_base()),
            "t.conf:1: 'ifconfig-pool' 10.8.0.1-10.8.0.50 contains the server address 10.8.0.1",
        ),
        (
            format!("remote x\n{}", server_base()),
            "t.conf:1: 'remote' is a client directive, but this is a server configuration",
        ),
        (
            client_base().replace("remote vpn.example.com 1194\n", ""),
            "t.conf: client mode needs at least one 'remote'",
        ),
        (
            format!("{}push \"route 1.2.3.0 255.255.255.0\"\n", client_base()),
            "t.conf:19: 'push' is a server directive, but this is a client configuration",
        ),
        (
            client_base().replace(&inline("key", KEY), ""),
            "t.conf:9: 'cert' given without 'key'",
        ),
        (
            client_base().replace(&inline("cert", CERT), ""),
            "t.conf:9: 'key' given without 'cert'",
        ),
        (
            client_base()
                .replace(&inline("cert", CERT), "")
                .replace(&inline("key", KEY), ""),
            "t.conf: missing 'cert' and 'key' (a client may use 'auth-user-pass' instead)",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(err(&text), want, "for config:\n{text}");
    }
}

#[test]
fn named_dev_with_dev_type() {
    let text = format!(
        "dev-type tun\ndev vpn0\n{}",
        server_base().replace("dev tun\n", "")
    );
    let c = parse_str_no_fs(&text, "x").expect("ok");
    assert_eq!(c.dev.as_deref(), Some("vpn0"));
    assert_eq!(c.dev_type, Some(DevType::Tun));
}

#[test]
fn command_line() {
    let dir = temp_dir("cmdline");
    let conf = write(
        &dir,
        "server.conf",
        &format!("port 1194\nverb 3\n{}", server_base()),
    );
    let args: Vec<String> = [
        "--config",
        &conf.display().to_string(),
        "--port",
        "1200",
        "--push",
        "route 10.1.0.0 255.255.0.0",
        "--client-to-client",
        "--workers",
        "2",
        "--local",
        "192.0.2.1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let c = Config::from_args(&args).expect("args parse");
    assert_eq!(c.port, Some(1200), "later --port overrides the file");
    assert_eq!(c.verb, Some(3));
    assert_eq!(c.push, ["route 10.1.0.0 255.255.0.0"]);
    assert!(c.client_to_client);
    assert_eq!(c.workers, Some(2));
    assert_eq!(c.local, Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))));

    // Options before --config are overridden by the file.
    let args2: Vec<String> = ["--port", "9", "--config", &conf.display().to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(Config::from_args(&args2).expect("ok").port, Some(1194));

    // A lone file name works like `openvpn server.conf`.
    let c = Config::from_args(&[conf.display().to_string()]).expect("lone file");
    assert_eq!(c.port, Some(1194));

    let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let e = Config::from_args(&s(&[
        "--config",
        &conf.display().to_string(),
        "--port",
        "abc",
    ]))
    .expect_err("bad port");
    assert_eq!(
        e.to_string(),
        r#"<command line>:3: 'port' expects a number 1-65535, got "abc""#
    );
    let e = Config::from_args(&s(&["port", "1"])).expect_err("no dashes");
    assert_eq!(
        e.to_string(),
        r#"<command line>:1: option arguments must start with '--', got "port""#
    );
    let e = Config::from_args(&s(&["--port", "1", "--compress", "zstd"])).expect_err("comp");
    assert_eq!(
        e.to_string(),
        "<command line>:3: bad compress option: zstd -- must be stub, stub-v2, lzo, lz4 or lz4-v2"
    );
    let e = Config::from_args(&s(&["--port", "1"])).expect_err("no mode");
    assert_eq!(
        e.to_string(),
        "<command line>: no mode: expected 'server NETWORK NETMASK' (or 'mode server' + 'tls-server') or 'client'"
    );
    let e =
        Config::from_args(&s(&["--config", "/nonexistent/ferrovpn.conf"])).expect_err("missing");
    assert!(
        e.to_string()
            .starts_with("<command line>:1: cannot read '/nonexistent/ferrovpn.conf'"),
        "{e}"
    );
}

#[test]
fn unsupported_reason_is_consistent() {
    assert_eq!(Config::unsupported_reason("comp-lzo"), None);
    assert_eq!(
        Config::unsupported_reason("auth-user-pass"),
        unsupported_reason("auth-user-pass")
    );
    assert_eq!(Config::unsupported_reason("port"), None);
    for d in DIRECTIVES
        .iter()
        .filter(|d| d.support == Support::Unsupported)
    {
        let e = parse_str_no_fs(&format!("{} x\n", d.name), "u.conf").expect_err(d.name);
        assert_eq!(
            e.to_string(),
            format!("u.conf:1: unsupported '{}': {}", d.name, d.note)
        );
    }
    // Every supported directive has a handler (no "unsupported directive" for it).
    for d in DIRECTIVES
        .iter()
        .filter(|d| d.support == Support::Supported)
    {
        if let Err(e) = parse_str_no_fs(&format!("{}\n", d.name), "u.conf") {
            assert_ne!(
                e.reason,
                Reason::UnknownDirective(d.name.into()),
                "{}",
                d.name
            );
        }
    }
    // Ignored ones warn.
    for d in DIRECTIVES.iter().filter(|d| d.support == Support::Ignored) {
        let c =
            parse_str_no_fs(&format!("{} a b\n{}", d.name, server_base()), "u.conf").expect(d.name);
        assert_eq!(
            c.warnings,
            [format!("u.conf:1: '{}' ignored: {}", d.name, d.note)]
        );
    }
}

#[test]
fn compression_directives_follow_2_6() {
    // Nothing configured: 2.6's default allows stub framing only.
    let c = parse_str_no_fs(&server_base(), "s.conf").expect("plain");
    assert_eq!(c.compression.alg, CompressAlg::Undef);
    assert!(c.compression.check().is_ok());
    let mut pushed = c.compression;
    pushed.apply("compress", &["lz4"]).expect("apply");
    assert!(
        pushed.check().is_err(),
        "a pushed real algorithm fails under the default"
    );

    // The docker-openvpn server: comp-lzo no, also pushed.
    let c = parse_str_no_fs(
        &format!("{}comp-lzo no\npush \"comp-lzo no\"\n", server_base()),
        "s.conf",
    )
    .expect("comp-lzo no");
    assert_eq!(
        (c.compression.alg, c.compression.swap()),
        (CompressAlg::Stub, false)
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    let c = parse_str_no_fs(&format!("{}compress\n", client_base()), "c.conf").expect("compress");
    assert_eq!(
        (c.compression.alg, c.compression.swap()),
        (CompressAlg::Stub, true)
    );

    // A real algorithm alone is receive-only, with 2.6's warning.
    let c =
        parse_str_no_fs(&format!("{}compress lz4-v2\n", client_base()), "c.conf").expect("lz4-v2");
    assert_eq!(c.compression.alg, CompressAlg::V2Lz4);
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("c.conf:19") && w.contains("receiving")),
        "{:?}",
        c.warnings
    );

    // allow-compression no + a real algorithm: refused at the algorithm's line.
    let e = parse_str_no_fs(
        &format!("{}allow-compression no\ncomp-lzo yes\n", client_base()),
        "c.conf",
    )
    .expect_err("stub only");
    assert_eq!(
        e.to_string(),
        "c.conf:20: compression is not allowed since allow-compression is set to 'stub-only' ('no', the default without other compression options); 'allow-compression asym' accepts compressed packets"
    );
}

#[test]
fn legacy_directives_as_2_6() {
    // Accepted with a warning: no behaviour ferrovpn would change.
    for line in ["persist-remote-ip", "disable-occ", "key-method 2"] {
        let c = parse_str_no_fs(&format!("{}{line}\n", client_base()), "c.conf")
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        let name = line.split(' ').next().unwrap_or_default();
        if name != "key-method" {
            assert!(
                c.warnings
                    .iter()
                    .any(|w| w.contains(&format!("'{name}' ignored"))),
                "{line}: {:?}",
                c.warnings
            );
        }
    }
    // `tun-mtu-extra`: applied (MSS clamp, OCC link-mtu), as in 2.6.
    let c = parse_str_no_fs(&format!("{}tun-mtu-extra 32\n", client_base()), "c.conf")
        .expect("tun-mtu-extra");
    assert_eq!(c.tun_mtu_extra, Some(32));
    // `lport 0`: an ephemeral port, as in 2.6.
    let c = parse_str_no_fs(&format!("{}lport 0\n", client_base()), "c.conf").expect("lport 0");
    assert_eq!(c.lport, Some(0));
    // route-metric is applied; max-routes is ignored with 2.6's warning.
    let c = parse_str_no_fs(
        &format!("{}route-metric 5\nmax-routes 300\n", client_base()),
        "c.conf",
    )
    .expect("route-metric, max-routes");
    assert_eq!(c.route_metric, Some(5));
    assert!(
        c.warnings.iter().any(|w| w.contains("max-routes")),
        "{:?}",
        c.warnings
    );
    // 2.6.14 refuses keysize and ncp-disable; so does ferrovpn, with the reason.
    for (line, why) in [
        ("keysize 256", "removed in OpenVPN 2.6"),
        ("ncp-disable", "removed in OpenVPN 2.6"),
    ] {
        let e = parse_str_no_fs(&format!("{}{line}\n", client_base()), "c.conf").expect_err(line);
        assert!(
            e.to_string().starts_with("c.conf:19: unsupported"),
            "{line}: {e}"
        );
        assert!(e.to_string().contains(why), "{line}: {e}");
    }
}

#[test]
fn daemon_names_the_syslog_unless_syslog_came_first() {
    let parse =
        |lines: &str| parse_str_no_fs(&format!("{}{lines}", client_base()), "c.conf").expect(lines);
    let c = parse("daemon\n");
    assert!(c.daemon);
    assert_eq!(c.syslog.as_deref(), Some("openvpn"));
    assert!(!parse("verb 3\n").daemon);
    // As in 2.6, the first of `daemon NAME` and `syslog NAME` names the log;
    // a second `daemon NAME` is ignored with a warning.
    let c = parse("daemon vpn1\nsyslog other\n");
    assert_eq!(c.syslog.as_deref(), Some("vpn1"));
    let c = parse("syslog first\ndaemon vpn1\n");
    assert!(c.daemon);
    assert_eq!(c.syslog.as_deref(), Some("first"));
    let c = parse("daemon vpn1\ndaemon vpn2\n");
    assert_eq!(c.syslog.as_deref(), Some("vpn1"));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("ignoring 'daemon vpn2'")),
        "{:?}",
        c.warnings
    );
    let e = parse_str_no_fs(&format!("{}daemon a b\n", client_base()), "c.conf").unwrap_err();
    assert!(e.to_string().starts_with("c.conf:19:"), "{e}");
}

#[test]
fn service_directives_are_stored() {
    let c = parse_str_no_fs(
        &format!(
            "{}syslog myvpn\nwritepid /run/x.pid\nlog-append /var/log/x.log\n",
            client_base()
        ),
        "c.conf",
    )
    .expect("parses");
    assert_eq!(c.syslog.as_deref(), Some("myvpn"));
    assert_eq!(c.writepid, Some(std::path::PathBuf::from("/run/x.pid")));
    let log = c.log.expect("log");
    assert!(log.append);
    assert_eq!(log.path, std::path::PathBuf::from("/var/log/x.log"));
    let c = parse_str_no_fs(&format!("{}syslog\nlog x.log\n", client_base()), "c.conf")
        .expect("parses");
    assert_eq!(c.syslog.as_deref(), Some("openvpn"));
    assert!(!c.log.expect("log").append);
    // `metrics` is a server directive with an IP:PORT.
    let c = parse_str_no_fs(
        &format!("{}metrics 127.0.0.1:9176\n", server_base()),
        "s.conf",
    )
    .expect("server");
    assert_eq!(c.metrics, Some("127.0.0.1:9176".parse().unwrap()));
    let e = parse_str_no_fs(
        &format!("{}metrics 127.0.0.1:9176\n", client_base()),
        "c.conf",
    )
    .expect_err("client");
    assert!(e.to_string().contains("server directive"), "{e}");
    let e = parse_str_no_fs(&format!("{}metrics localhost\n", client_base()), "c.conf")
        .expect_err("bad address");
    assert!(e.to_string().contains("IP:PORT"), "{e}");
}

#[test]
fn forward_compatible_makes_later_unknown_directives_warnings() {
    let e = parse_str_no_fs(&format!("{}no-such-option 1\n", client_base()), "c.conf")
        .expect_err("unknown");
    assert_eq!(
        e.to_string(),
        "c.conf:19: unsupported directive 'no-such-option'"
    );
    let c = parse_str_no_fs(
        &format!(
            "{}setenv FORWARD_COMPATIBLE 1\nno-such-option 1\n",
            client_base()
        ),
        "c.conf",
    )
    .expect("forward compatible");
    assert!(
        c.warnings
            .iter()
            .any(|w| w.starts_with("c.conf:20:") && w.contains("no-such-option")),
        "{:?}",
        c.warnings
    );
    // Known directives keep their checks.
    let e = parse_str_no_fs(
        &format!("{}setenv FORWARD_COMPATIBLE 1\nport x\n", client_base()),
        "c.conf",
    )
    .expect_err("bad port");
    assert!(e.to_string().starts_with("c.conf:20:"), "{e}");
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|a| a.to_string()).collect()
}

#[test]
fn every_error_of_a_config_is_reported_in_one_run() {
    let text = format!(
        "{}port abc\nno-such-thing\ncomp-lzo maybe\n\"unterminated\nverb 3\n",
        client_base()
    );
    let e = parse_str_no_fs(&text, "c.conf").expect_err("four errors");
    let lines: Vec<String> = e
        .all()
        .map(|e| {
            let mut one = e.clone();
            one.also = Box::default();
            one.to_string()
        })
        .collect();
    assert_eq!(
        lines,
        [
            r#"c.conf:19: 'port' expects a number 1-65535, got "abc""#,
            "c.conf:20: unsupported directive 'no-such-thing'",
            "c.conf:21: bad comp-lzo option: maybe -- must be 'yes', 'no', or 'adaptive'",
            "c.conf:22: unterminated double quote",
        ]
    );
    assert_eq!(e.to_string(), lines.join("\n"));
    // Command-line options are checked one by one too.
    let e = Config::from_args(&s(&["--port", "x", "--bogus", "--verb", "99"])).expect_err("three");
    assert_eq!(e.all().count(), 3, "{e}");
    // Hostile input cannot grow the list without bound.
    let e = parse_str_no_fs(&"bogus\n".repeat(10 * MAX_ERRORS), "h.conf").expect_err("many");
    assert_eq!(e.all().count(), MAX_ERRORS);
}

#[test]
fn whole_config_errors_name_the_config_file() {
    let dir = temp_dir("whole");
    let conf = dir.join("nomode.conf");
    std::fs::write(&conf, "dev tun\n").expect("write");
    let path = conf.display().to_string();
    for args in [vec!["--config", path.as_str()], vec![path.as_str()]] {
        let e = Config::from_args(&s(&args)).expect_err("no mode");
        assert!(
            e.to_string().starts_with(&format!("{path}: no mode")),
            "{args:?}: {e}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn management_directives() {
    let c = parse_str_no_fs(
        &format!(
            "management 127.0.0.1 7505 pw.txt\nmanagement-hold\nmanagement-log-cache 50\n{}",
            server_base()
        ),
        "t.conf",
    )
    .unwrap();
    assert_eq!(
        c.management,
        Some(Management {
            listen: ManagementListen::Tcp("127.0.0.1:7505".parse().unwrap()),
            password_file: Some(PathBuf::from("pw.txt")),
        })
    );
    assert!(c.management_hold);
    assert_eq!(c.management_log_cache, Some(50));
    let c = parse_str_no_fs(
        &format!(
            "management /run/m.sock unix\nmanagement-client-user ops\n{}",
            server_base()
        ),
        "t.conf",
    )
    .unwrap();
    assert_eq!(
        c.management.map(|m| m.listen),
        Some(ManagementListen::Unix(PathBuf::from("/run/m.sock")))
    );
    assert_eq!(c.management_client_user.as_deref(), Some("ops"));
    for (line, want) in [
        (
            "management 127.0.0.1 0",
            r#"t.conf:1: 'management' expects a port 1-65535 or 'unix', got "0""#,
        ),
        (
            "management host.example 7505",
            r#"t.conf:1: 'management' expects an IP address or 'localhost', got "host.example""#,
        ),
        (
            "management 127.0.0.1 7505 stdin",
            "t.conf:1: unsupported 'management ... stdin': ferrovpn does not prompt on the terminal; give a password file",
        ),
    ] {
        assert_eq!(line_err(line), want, "{line}");
    }
    let c = parse_str_no_fs(
        &format!(
            "management /run/m.sock unix\nmanagement-client-auth\n{}",
            server_base()
        ),
        "t.conf",
    )
    .unwrap();
    assert!(c.management_client_auth);
    let e = line_err("management-client-auth now");
    assert!(e.starts_with("t.conf:1: 'management-client-auth'"), "{e}");
}

#[test]
fn connect_freq_and_connect_freq_initial() {
    let c = parse_str_no_fs(&server_base(), "t.conf").unwrap();
    assert_eq!(c.connect_freq(), (0, 0));
    assert_eq!(c.connect_freq_initial(), (100, 10));
    let text = format!(
        "connect-freq 10 60\nconnect-freq-initial 5 3\n{}",
        server_base()
    );
    let c = parse_str_no_fs(&text, "t.conf").unwrap();
    assert_eq!(c.connect_freq(), (10, 60));
    assert_eq!(c.connect_freq_initial(), (5, 3));
    assert_eq!(
        line_err("connect-freq 10"),
        "t.conf:1: 'connect-freq' expects N SECONDS"
    );
    assert_eq!(
        line_err("connect-freq-initial -1 10"),
        r#"t.conf:1: 'connect-freq-initial' expects a number of answers, got "-1""#
    );
    let client = format!("connect-freq 10 60\n{}", client_base());
    assert!(err(&client).contains("'connect-freq' is a server directive"));
}

#[test]
fn chroot_is_a_server_directive() {
    let c = parse_str_no_fs(&format!("chroot /var/empty\n{}", server_base()), "t.conf").unwrap();
    assert_eq!(c.chroot, Some(PathBuf::from("/var/empty")));
    assert_eq!(c.location_of("chroot").unwrap().to_string(), "t.conf:1");
    assert_eq!(line_err("chroot"), "t.conf:1: 'chroot' expects a directory");
    // A client reconfigures the host on every reconnect: refused, with the reason.
    let client = format!("{}chroot /var/empty\n", client_base());
    let line = client.lines().count();
    let e = err(&client);
    assert!(
        e.starts_with(&format!(
            "t.conf:{line}: 'chroot' is not supported in client mode: a client configures addresses"
        )),
        "{e}"
    );
    assert_eq!(Config::unsupported_reason("chroot"), None);
}

#[test]
fn client_config_dir_is_a_server_directive() {
    let c = parse_str_no_fs(
        &format!("client-config-dir ccd\nccd-exclusive\n{}", server_base()),
        "t.conf",
    )
    .unwrap();
    assert_eq!(c.client_config_dir, Some(PathBuf::from("ccd")));
    assert!(c.ccd_exclusive);
    assert_eq!(
        line_err("client-config-dir"),
        "t.conf:1: 'client-config-dir' expects a directory"
    );
    assert_eq!(
        line_err("ccd-exclusive"),
        "t.conf:1: 'ccd-exclusive' must be used with 'client-config-dir'"
    );
    let e = err(&format!("{}client-config-dir ccd\n", client_base()));
    assert!(
        e.contains("'client-config-dir' is a server directive"),
        "{e}"
    );
    // Per-client directives belong in the per-client files, as in 2.6.
    for d in [
        "iroute 10.0.0.0 255.0.0.0",
        "ifconfig-push 10.8.0.9 255.255.255.0",
    ] {
        let e = line_err(d);
        assert!(e.contains("only in a per-client config"), "{e}");
    }
}

const V2_SERVER: &str = "-----BEGIN OpenVPN tls-crypt-v2 server key-----\nAAAA\n-----END OpenVPN tls-crypt-v2 server key-----\n";
const V2_CLIENT: &str = "-----BEGIN OpenVPN tls-crypt-v2 client key-----\nAAAA\n-----END OpenVPN tls-crypt-v2 client key-----\n";

#[test]
fn tls_crypt_v2_file_inline_and_cookie_mode() {
    let dir = temp_dir("tcv2");
    let key = write(&dir, "v2.key", V2_SERVER);
    for (arg, force) in [
        ("", false),
        (" allow-noncookie", false),
        (" force-cookie", true),
    ] {
        let text = format!("{}tls-crypt-v2 {}{arg}\n", server_base(), key.display());
        let c = parse_str(&text, "t.conf").unwrap();
        let v2 = c.tls_crypt_v2.unwrap();
        assert_eq!(v2.force_cookie, force, "{arg}");
        assert_eq!(v2.material.text, V2_SERVER);
    }
    let c = parse_str_no_fs(
        &(client_base() + &inline("tls-crypt-v2", V2_CLIENT)),
        "t.conf",
    )
    .unwrap();
    assert_eq!(
        c.tls_crypt_v2.unwrap().material.source,
        MaterialSource::Inline
    );
    // A server may serve tls-crypt clients too; a client has one wrapping.
    let both = server_base() + &inline("tls-crypt-v2", V2_SERVER) + &inline("tls-crypt", STATIC);
    assert!(parse_str_no_fs(&both, "t.conf").is_ok());
    let both = client_base() + &inline("tls-crypt-v2", V2_CLIENT) + &inline("tls-auth", STATIC);
    assert_eq!(
        err(&both),
        "t.conf:19: 'tls-crypt-v2', 'tls-auth' and 'tls-crypt' are mutually exclusive in client mode"
    );
    let text = format!(
        "{}tls-crypt-v2 {} sometimes\n",
        server_base(),
        key.display()
    );
    assert!(
        parse_str(&text, "t.conf")
            .unwrap_err()
            .to_string()
            .contains(
                "unsupported tls-crypt-v2 argument 'sometimes' (force-cookie or allow-noncookie)"
            ),
    );
    assert_eq!(
        err(&(server_base() + &inline("tls-crypt-v2", STATIC))),
        "t.conf:18: 'tls-crypt-v2' expects a tls-crypt-v2 server or client key (-----BEGIN OpenVPN tls-crypt-v2 ), none found in inline <tls-crypt-v2>"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn server_ipv6_and_route_ipv6() {
    let text = format!(
        "{}server-ipv6 fd00:1::/64\nroute-ipv6 2001:db8:5::7/48\nroute-ipv6 2001:db8:6::/48 default 9\ntun-ipv6\n",
        server_base()
    );
    let c = parse_str(&text, "s.conf").unwrap();
    let v6 = c.server_ipv6.unwrap();
    assert_eq!(v6.bits, 64);
    assert_eq!(
        v6.server_address(),
        "fd00:1::1".parse::<std::net::Ipv6Addr>().unwrap()
    );
    assert_eq!(
        v6.pool_base(),
        "fd00:1::1000".parse::<std::net::Ipv6Addr>().unwrap()
    );
    // Host bits cleared, as 2.6 does.
    assert_eq!(
        c.routes_ipv6[0],
        RouteIpv6 {
            network: "2001:db8:5::".parse().unwrap(),
            bits: 48,
            gateway: None,
            metric: None
        }
    );
    assert_eq!(c.routes_ipv6[1].metric, Some(9));
    assert!(
        c.warnings.iter().any(|w| w.contains("tun-ipv6")),
        "{:?}",
        c.warnings
    );
    for (line, want) in [
        ("server-ipv6 fd00::/48", "out of range"),
        ("server-ipv6 fd00::/125", "out of range"),
        ("server-ipv6 10.0.0.0/64", "IPv6"),
        ("server-ipv6 fd00::/x", "IPv6"),
        ("route-ipv6 fd00::/129", "IPv6"),
        ("route-ipv6 fd00::/64 nonsense", "gateway"),
        ("ifconfig-ipv6-pool fd00::1000/64", "needs --ifconfig-ipv6"),
    ] {
        let e = err(&format!("{}{line}\n", server_base()));
        assert!(e.contains(want), "{line}: {e}");
    }
}

/// `fragment MAX [mtu]` and `passtos` as 2.6 parses them.
#[test]
fn fragment_and_passtos() {
    let c = parse_str_no_fs(
        &format!("{}fragment 1300\npasstos\n", client_base()),
        "c.conf",
    )
    .unwrap();
    assert_eq!(
        c.fragment,
        Some(Fragment {
            max: 1300,
            encap: false
        })
    );
    assert!(c.passtos);
    let c = parse_str_no_fs(&format!("{}fragment 576 mtu\n", client_base()), "c.conf").unwrap();
    assert_eq!(
        c.fragment,
        Some(Fragment {
            max: 576,
            encap: true
        })
    );
    assert!(!c.passtos);
    // 2.6: "--fragment needs to be at least 68", "Unknown parameter to --fragment".
    for line in [
        "fragment 67",
        "fragment x",
        "fragment 1300 foo",
        "passtos 1",
        "fragment",
    ] {
        let e = parse_str_no_fs(&format!("{}{line}\n", client_base()), "c.conf").expect_err(line);
        assert!(e.to_string().starts_with("c.conf:19"), "{line}: {e}");
    }
}

/// `ifconfig-ipv6` + `ifconfig-ipv6-pool` in a server, 2.6's rules.
#[test]
fn ifconfig_ipv6_and_its_pool_in_a_server() {
    let text = format!(
        "{}ifconfig-ipv6 fd00:f::1/64 fd00:f::2\nifconfig-ipv6-pool fd00:f::1:0:0/80\n",
        server_base()
    );
    let c = parse_str(&text, "s.conf").unwrap();
    let t = c.tunnel_ipv6().unwrap();
    assert_eq!(t.local, "fd00:f::1".parse::<std::net::Ipv6Addr>().unwrap());
    assert_eq!(t.bits, 64);
    let pool = t.pool.unwrap();
    assert_eq!(pool.bits, 80);
    assert_eq!(
        pool.first(),
        "fd00:f::1:0:1".parse::<std::net::Ipv6Addr>().unwrap()
    );
    // Without a pool: the server has an address, clients get theirs from ccd.
    let text = format!("{}ifconfig-ipv6 fd00:f::1/64 fd00:f::2\n", server_base());
    assert_eq!(
        parse_str(&text, "s.conf")
            .unwrap()
            .tunnel_ipv6()
            .unwrap()
            .pool,
        None
    );
    // server-ipv6 wins over ifconfig-ipv6, as its helper sets the address.
    let text = format!(
        "{}ifconfig-ipv6 fd00:f::1/64 fd00:f::2\nserver-ipv6 fd00:1::/64\n",
        server_base()
    );
    let t = parse_str(&text, "s.conf").unwrap().tunnel_ipv6().unwrap();
    assert_eq!(t.local, "fd00:1::1".parse::<std::net::Ipv6Addr>().unwrap());
    for (line, want) in [
        ("ifconfig-ipv6 fd00::1/63 fd00::2", "between 64 and 124"),
        ("ifconfig-ipv6 fd00::1/125 fd00::2", "between 64 and 124"),
        ("ifconfig-ipv6 fd00::1/64", "ADDRESS/BITS REMOTE"),
        ("ifconfig-ipv6 fd00::1/64 10.0.0.1", "IPv6"),
        ("ifconfig-ipv6-pool fd00::/64", "needs --ifconfig-ipv6"),
        (
            "ifconfig-ipv6 fd00::1/64 fd00::2\nifconfig-ipv6-pool fd00::/60",
            "between /64 and /124",
        ),
        (
            "ifconfig-ipv6 fd00::1/64 fd00::2\nifconfig-ipv6-pool fd00::",
            "(not /128)",
        ),
        (
            "server-ipv6 fd00::/64\nifconfig-ipv6 fd00::1/64 fd00::2\nifconfig-ipv6-pool fd00::/64",
            "already defines",
        ),
    ] {
        let e = err(&format!("{}{line}\n", server_base()));
        assert!(e.contains(want), "{line}: {e}");
    }
    let nopool = server_base().replace("255.255.255.0\n", "255.255.255.0 nopool\n");
    // 2.6's IPv6-only pools: `nopool` + an IPv6 pool, `server-ipv6` alone,
    // `mode server` + `ifconfig-ipv6` + `ifconfig-ipv6-pool`.
    let c = parse_str_no_fs(
        &format!("{nopool}ifconfig-ipv6 fd00::1/64 fd00::2\nifconfig-ipv6-pool fd00::/64\n"),
        "t.conf",
    )
    .unwrap();
    assert!(c.server.unwrap().nopool && c.tunnel_ipv6().unwrap().pool.is_some());
    let v6_only = server_base().replace("server 10.8.0.0 255.255.255.0\n", "");
    let c = parse_str_no_fs(&format!("{v6_only}server-ipv6 fd00::/64\n"), "t.conf").unwrap();
    assert!(c.server.is_none() && c.is_server());
    parse_str_no_fs(
        &format!("{v6_only}mode server\ntls-server\nifconfig-ipv6 fd00::1/64 fd00::2\nifconfig-ipv6-pool fd00::1000/64\n"),
        "t.conf",
    )
    .unwrap();
    // Without any pool: clients get IPv6 from their client-config-dir
    // files only, as 2.6.
    let c = parse_str_no_fs(
        &format!("{v6_only}mode server\ntls-server\nifconfig-ipv6 fd00::1/64 fd00::2\n"),
        "t.conf",
    )
    .unwrap();
    assert!(c.tunnel_ipv6().is_some_and(|v6| v6.pool.is_none()));
    // An IPv4 pool without `server`: refused.
    let e = err(&format!(
        "{v6_only}server-ipv6 fd00::/64\nifconfig-pool 10.8.0.2 10.8.0.9\n"
    ));
    assert!(e.contains("needs 'server NETWORK NETMASK'"), "{e}");
    let e = err(&format!("{nopool}server-ipv6 fd00::/64\n"));
    assert!(e.contains("nopool"), "{e}");
    // A client refuses both.
    let e = err(&format!(
        "{}ifconfig-ipv6 fd00::1/64 fd00::2\n",
        client_base()
    ));
    assert!(e.contains("pushed by the server"), "{e}");
    let e = err(&format!("{}ifconfig-ipv6-pool fd00::/64\n", client_base()));
    assert!(e.contains("requires --mode server"), "{e}");
}
