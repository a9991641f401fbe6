//! Proves the test kit's lab with stock OpenVPN on both ends: a server and
//! a client in the lab's namespaces, keys made by `openvpn --genkey`, then
//! ping and iperf3 through the tunnel. Needs root, openvpn, iperf3, ip,
//! ping and ss; fails loudly without them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferrovpn_testkit::lab::{CONNECT_TIMEOUT, SERVER_TUN, UP, log_tails};
use ferrovpn_testkit::{Cipher, Lab, Material, Proc, Wrap, find_tool, iperf3_report, ping};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

/// A static key made by stock `openvpn --genkey` (so the harness also
/// proves that keys of OpenVPN's own making work).
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

/// The running pair; fields drop in order: processes first, then the lab
/// (namespaces, directory).
struct Tunnel {
    client: Proc,
    server: Proc,
    lab: Lab,
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

fn start(tag: &str, profile: Profile, opts: Opts) -> Tunnel {
    let lab = Lab::new(tag, 1, FERROVPN);
    let (wrap, cipher) = match profile {
        Profile::TlsCryptAes256 => (
            Wrap::TlsCrypt(Material::File(genkey(&lab.dir.join("tc.key")))),
            Cipher::Aes256Gcm,
        ),
        Profile::TlsAuthAes128 => (
            Wrap::TlsAuth(Material::File(genkey(&lab.dir.join("ta.key")))),
            Cipher::Aes128Gcm,
        ),
        Profile::NoWrapChacha => (Wrap::None, Cipher::Chacha20Poly1305),
    };
    let mut sc = lab.server_conf(wrap.clone(), cipher);
    if opts.server_nosan {
        sc.cert = Material::File(lab.pki.server_nosan.cert.clone());
        sc.key = Material::File(lab.pki.server_nosan.key.clone());
    }
    let who = if opts.foreign_client {
        &lab.pki.foreign_client
    } else {
        &lab.pki.clients[0]
    };
    let mut cc = lab.client_conf(0, who, ferrovpn_testkit::lab::CLIENT_DEV, wrap, cipher);
    // verb 4: OpenVPN names the control-channel wrap (tls-crypt or
    // tls-auth) only from verb 4 on.
    sc.verb = 4;
    cc.verb = 4;
    if opts.inline {
        sc = sc.inline().unwrap();
        cc = cc.inline().unwrap();
    }
    let mut server = lab.stock_server(&sc);
    if opts.foreign_client {
        let client = lab.stock_client(0, "openvpn-client", &cc);
        if let Err(e) = server.wait_for_log_line("VERIFY ERROR", CONNECT_TIMEOUT) {
            panic!("{e:#}\n{}", log_tails(&client, &server));
        }
        assert!(!client.log().contains(UP), "{}", client.log());
        return Tunnel {
            client,
            server,
            lab,
        };
    }
    let client = lab.stock_client_up(0, "openvpn-client", &cc, &server);
    Tunnel {
        client,
        server,
        lab,
    }
}

#[test]
fn openvpn_pair_tls_crypt_aes256gcm_ping_and_iperf3() {
    let t = start("hv-tc", Profile::TlsCryptAes256, Opts::default());
    let p = ping(&t.lab.clients[0], SERVER_TUN, 5, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 4, "{p:?}");
    let r = iperf3_report(&t.lab.clients[0], &t.lab.server_ns, SERVER_TUN, 2, 1).unwrap();
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
        "hv-ta",
        Profile::TlsAuthAes128,
        Opts {
            inline: true,
            ..Opts::default()
        },
    );
    let p = ping(&t.lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}");
    // And back: the server reaches the client's pool address.
    let p = ping(&t.lab.server_ns, "10.8.0.2", 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}");
    assert_control_channel(&t, TLS_AUTH_MARKER);
}

#[test]
fn openvpn_pair_no_wrap_chacha20_nosan_server_ping() {
    let t = start(
        "hv-cc",
        Profile::NoWrapChacha,
        Opts {
            server_nosan: true,
            ..Opts::default()
        },
    );
    let p = ping(&t.lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}");
}

#[test]
fn openvpn_server_rejects_foreign_ca_client() {
    let t = start(
        "hv-fc",
        Profile::TlsCryptAes256,
        Opts {
            foreign_client: true,
            ..Opts::default()
        },
    );
    assert!(ping(&t.lab.clients[0], SERVER_TUN, 1, Duration::from_secs(2)).is_err());
    assert!(!t.server.log().contains("Peer Connection Initiated"));
}
