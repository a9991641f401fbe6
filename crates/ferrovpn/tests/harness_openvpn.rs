//! Proves the test harness with stock OpenVPN on both ends: a server and a
//! client in two network namespaces joined by veth, then ping and iperf3
//! through the tunnel. Needs root, openvpn, iperf3, ip, ping and ss; fails
//! loudly without them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferrovpn_testkit::pki::{Pki, PkiOptions};
use ferrovpn_testkit::{
    Cipher, ClientConf, Material, Netns, Proc, ServerConf, TestDir, VethPair, Wrap, find_tool,
    iperf3_report, openvpn_client_conf, openvpn_server_conf, ping, require_root_and_tools,
};

const TOOLS: &[&str] = &["openvpn", "iperf3", "ip", "ping", "ss", "kill"];
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const SERVER_TUN: &str = "10.8.0.1";

fn genkey(path: &Path) -> PathBuf {
    let openvpn = find_tool("openvpn").expect("openvpn");
    let out = Command::new(openvpn)
        .args(["--genkey", "secret"])
        .arg(path)
        .output()
        .expect("running openvpn --genkey");
    assert!(
        out.status.success(),
        "openvpn --genkey secret failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    path.to_path_buf()
}

/// The running pair; fields drop in order: processes first, then the
/// veth, then namespaces, then the directory.
struct Tunnel {
    client: Proc,
    server: Proc,
    _veth: VethPair,
    client_ns: Netns,
    server_ns: Netns,
    _dir: TestDir,
}

enum Profile {
    TlsCryptAes256,
    TlsAuthAes128,
    NoWrapChacha,
}

#[derive(Default)]
struct Opts {
    inline: bool,
    /// Server uses the CN-only certificate (no SAN).
    server_nosan: bool,
    /// Client presents the foreign CA's certificate: expect rejection.
    foreign_client: bool,
}

fn start(tag: &str, profile: Profile, opts: Opts, subnet: u8) -> Tunnel {
    require_root_and_tools(TOOLS);
    let dir = TestDir::new(tag).unwrap();
    let pki = Pki::generate(&dir.join("pki"), &PkiOptions::default()).unwrap();
    let (wrap, cipher) = match profile {
        Profile::TlsCryptAes256 => (
            Wrap::TlsCrypt(Material::File(genkey(&dir.join("tc.key")))),
            Cipher::Aes256Gcm,
        ),
        Profile::TlsAuthAes128 => (
            Wrap::TlsAuth(Material::File(genkey(&dir.join("ta.key")))),
            Cipher::Aes128Gcm,
        ),
        Profile::NoWrapChacha => (Wrap::None, Cipher::Chacha20Poly1305),
    };
    let server_ns = Netns::unique(&format!("{tag}-s")).unwrap();
    let client_ns = Netns::unique(&format!("{tag}-c")).unwrap();
    let veth = VethPair::new(
        &server_ns,
        &format!("10.201.{subnet}.1/24"),
        &client_ns,
        &format!("10.201.{subnet}.2/24"),
    )
    .unwrap();
    // The underlay works before any VPN runs.
    ping(
        &client_ns,
        &veth.addr_a.to_string(),
        2,
        Duration::from_secs(5),
    )
    .unwrap();

    let mut sc = ServerConf::new(&pki, "fvtun-s", wrap.clone(), cipher);
    if opts.server_nosan {
        sc.cert = Material::File(pki.server_nosan.cert.clone());
        sc.key = Material::File(pki.server_nosan.key.clone());
    }
    let who = if opts.foreign_client {
        &pki.foreign_client
    } else {
        &pki.clients[0]
    };
    let mut cc = ClientConf::new(&pki, who, &veth.addr_a.to_string(), "fvtun-c", wrap, cipher);
    // verb 4: OpenVPN names the control-channel wrap (tls-crypt or
    // tls-auth) only from verb 4 on.
    sc.verb = 4;
    cc.verb = 4;
    if opts.inline {
        sc = sc.inline().unwrap();
        cc = cc.inline().unwrap();
    }
    std::fs::write(dir.join("server.conf"), openvpn_server_conf(&sc)).unwrap();
    std::fs::write(dir.join("client.conf"), openvpn_client_conf(&cc)).unwrap();

    let mut server = Proc::spawn_in(
        &server_ns,
        "openvpn-server",
        dir.path(),
        "openvpn",
        &["--config", "server.conf"],
    )
    .unwrap();
    server
        .wait_for_log_line("Initialization Sequence Completed", CONNECT_TIMEOUT)
        .unwrap();
    let mut client = Proc::spawn_in(
        &client_ns,
        "openvpn-client",
        dir.path(),
        "openvpn",
        &["--config", "client.conf"],
    )
    .unwrap();
    if opts.foreign_client {
        server
            .wait_for_log_line("VERIFY ERROR", CONNECT_TIMEOUT)
            .unwrap();
    } else {
        client
            .wait_for_log_line("Initialization Sequence Completed", CONNECT_TIMEOUT)
            .unwrap();
    }
    let log = client.log();
    if opts.foreign_client {
        assert!(!log.contains("Initialization Sequence Completed"), "{log}");
        return Tunnel {
            client,
            server,
            _veth: veth,
            client_ns,
            server_ns,
            _dir: dir,
        };
    }
    assert!(
        !log.contains("Initialization Sequence Completed With Errors"),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("Data Channel") && l.contains(cipher.name())),
        "client did not negotiate {}:\n{log}",
        cipher.name()
    );
    Tunnel {
        client,
        server,
        _veth: veth,
        client_ns,
        server_ns,
        _dir: dir,
    }
}

#[test]
fn openvpn_pair_tls_crypt_aes256gcm_ping_and_iperf3() {
    let t = start("tc", Profile::TlsCryptAes256, Opts::default(), 1);
    let p = ping(&t.client_ns, SERVER_TUN, 5, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 4, "{p:?}");
    let r = iperf3_report(&t.client_ns, &t.server_ns, SERVER_TUN, 2, 1).unwrap();
    eprintln!(
        "openvpn<->openvpn tls-crypt AES-256-GCM: {:.3} Gbit/s, {} bytes, {} retransmits, ping avg {:.3} ms",
        r.gbps, r.bytes, r.retransmits, p.avg_ms
    );
    assert!(r.gbps > 0.01, "{r:?}");
    assert!(r.bytes > 1_000_000, "{r:?}");
    assert!(
        t.server.log().contains("client1"),
        "server never saw client1"
    );
    assert_control_channel(&t, TLS_CRYPT_MARKER);
}

/// What OpenVPN 2.6 logs (verb 4) when tls-crypt protects the control channel.
const TLS_CRYPT_MARKER: &str = "Outgoing Control Channel Encryption: Cipher 'AES-256-CTR'";
/// What OpenVPN 2.6 logs (verb 4) when tls-auth protects the control channel.
const TLS_AUTH_MARKER: &str = "Outgoing Control Channel Authentication: Using";

/// Both ends wrap their control channel the way the test's name says.
fn assert_control_channel(t: &Tunnel, marker: &str) {
    for (who, log) in [("server", t.server.log()), ("client", t.client.log())] {
        assert!(log.contains(marker), "{who} did not log {marker:?}:\n{log}");
    }
}

#[test]
fn openvpn_pair_tls_auth_aes128gcm_inline_ping() {
    let t = start(
        "ta",
        Profile::TlsAuthAes128,
        Opts {
            inline: true,
            ..Opts::default()
        },
        2,
    );
    let p = ping(&t.client_ns, SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}");
    // And back: the server reaches the client's pool address.
    let p = ping(&t.server_ns, "10.8.0.2", 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}");
    assert_control_channel(&t, TLS_AUTH_MARKER);
}

#[test]
fn openvpn_pair_no_wrap_chacha20_nosan_server_ping() {
    let t = start(
        "cc",
        Profile::NoWrapChacha,
        Opts {
            server_nosan: true,
            ..Opts::default()
        },
        3,
    );
    let p = ping(&t.client_ns, SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}");
}

#[test]
fn openvpn_server_rejects_foreign_ca_client() {
    let t = start(
        "fc",
        Profile::TlsCryptAes256,
        Opts {
            foreign_client: true,
            ..Opts::default()
        },
        4,
    );
    assert!(ping(&t.client_ns, SERVER_TUN, 1, Duration::from_secs(2)).is_err());
    assert!(!t.server.log().contains("Peer Connection Initiated"));
}
