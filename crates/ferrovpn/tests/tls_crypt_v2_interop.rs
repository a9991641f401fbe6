//! tls-crypt-v2 against Debian's stock OpenVPN 2.6, both roles: a stock
//! client with stock-made keys on a ferrovpn server, a ferrovpn client
//! with ferrovpn-made keys (`ferrovpn --genkey`) on a stock server, and a
//! client whose key another server key wrapped, refused by a ferrovpn
//! server without any session. Server and client each run in a network
//! namespace, joined by a veth pair.
//!
//! Needs root, `openvpn`, `iperf3`, `ip`, `ping`, `ss` and `/dev/net/tun`;
//! every test fails loudly without them. Every wait has a deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferrovpn_testkit::pki::{
    Pki, PkiOptions, stock_tls_crypt_v2_client_key, stock_tls_crypt_v2_server_key,
    write_tls_crypt_v2_client_key, write_tls_crypt_v2_server_key,
};
use ferrovpn_testkit::{
    Cipher, ClientConf, Material, Netns, Proc, ServerConf, TestDir, VethPair, Wrap, iperf3_report,
    openvpn_client_conf, openvpn_server_conf, ping, require_root_and_tools, wait_until,
};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const TOOLS: &[&str] = &["openvpn", FERROVPN, "iperf3", "ip", "ping", "ss", "kill"];
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const UP: &str = "Initialization Sequence Completed";
const SERVER_TUN: &str = "10.8.0.1";
const SERVER_UNDERLAY: &str = "10.207.0.1";

/// Two namespaces joined by veth, a throwaway PKI and a scratch directory.
/// Processes are locals of the test declared after this, so they drop
/// (and are killed) before the namespaces go.
struct Net {
    _veth: VethPair,
    client_ns: Netns,
    server_ns: Netns,
    pki: Pki,
    dir: TestDir,
}

fn setup(tag: &str) -> Net {
    require_root_and_tools(TOOLS);
    let dir = TestDir::new(tag).unwrap();
    let pki = Pki::generate(&dir.join("pki"), &PkiOptions::default()).unwrap();
    let server_ns = Netns::unique(&format!("{tag}-s")).unwrap();
    let client_ns = Netns::unique(&format!("{tag}-c")).unwrap();
    let veth = VethPair::new(
        &server_ns,
        &format!("{SERVER_UNDERLAY}/24"),
        &client_ns,
        "10.207.0.2/24",
    )
    .unwrap();
    ping(&client_ns, SERVER_UNDERLAY, 1, Duration::from_secs(5)).unwrap();
    Net {
        _veth: veth,
        client_ns,
        server_ns,
        pki,
        dir,
    }
}

impl Net {
    fn confs(&self, server_key: &Path, client_key: &Path) -> (ServerConf, ClientConf) {
        let sc = ServerConf::new(
            &self.pki,
            "fvtun-s",
            Wrap::TlsCryptV2(Material::File(server_key.to_owned())),
            Cipher::Aes256Gcm,
        );
        let cc = ClientConf::new(
            &self.pki,
            &self.pki.clients[0],
            SERVER_UNDERLAY,
            "fvtun-c",
            Wrap::TlsCryptV2(Material::File(client_key.to_owned())),
            Cipher::Aes256Gcm,
        );
        (sc, cc)
    }

    fn spawn(&self, ns: &Netns, name: &str, program: &str, conf_text: &str) -> Proc {
        let conf = self.dir.join(format!("{name}.conf"));
        std::fs::write(&conf, conf_text).unwrap();
        Proc::spawn_in(
            ns,
            name,
            self.dir.path(),
            program,
            &["--config".as_ref(), conf.as_os_str()],
        )
        .unwrap()
    }

    fn key(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

/// Both logs' tails, for failure messages.
fn logs(a: &Proc, b: &Proc) -> String {
    format!(
        "--- {} ---\n{}\n--- {} ---\n{}",
        a.name(),
        a.log_tail(40),
        b.name(),
        b.log_tail(40)
    )
}

/// Ping the server's tunnel address and push 1 s of iperf3 through it.
fn ping_and_transfer(net: &Net, what: &str, client: &Proc, server: &Proc) {
    let p = ping(&net.client_ns, SERVER_TUN, 3, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", logs(client, server)));
    assert!(p.received >= 2, "{what}: {p:?}\n{}", logs(client, server));
    let r = iperf3_report(&net.client_ns, &net.server_ns, SERVER_TUN, 1, 1)
        .unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", logs(client, server)));
    eprintln!(
        "{what}: {:.3} Gbit/s, {} bytes, ping avg {:.3} ms",
        r.gbps, r.bytes, p.avg_ms
    );
    assert!(r.bytes > 1_000_000, "{what}: {r:?}");
}

/// `ferrovpn` run to completion with `args`.
fn ferrovpn(args: &[&str]) {
    let out = Command::new(FERROVPN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ferrovpn {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn stock_client_with_stock_keys_on_ferrovpn_server() {
    let net = setup("tcv2-fs");
    let (server_key, client_key) = (net.key("v2-server.key"), net.key("v2-client.key"));
    stock_tls_crypt_v2_server_key(&server_key).unwrap();
    stock_tls_crypt_v2_client_key(&server_key, &client_key).unwrap();
    let (sc, cc) = net.confs(&server_key, &client_key);
    // The server reads its key inline, the client from its file.
    let sc = ServerConf {
        wrap: Wrap::TlsCryptV2(Material::inline_from(&server_key).unwrap()),
        ..sc
    };
    let mut server = net.spawn(
        &net.server_ns,
        "ferrovpn-server",
        FERROVPN,
        &openvpn_server_conf(&sc),
    );
    server
        .wait_for_log_line("server listening", CONNECT_TIMEOUT)
        .unwrap();
    let mut client = net.spawn(
        &net.client_ns,
        "openvpn-client",
        "openvpn",
        &openvpn_client_conf(&cc),
    );
    if let Err(e) = client.wait_for_log_line(UP, CONNECT_TIMEOUT) {
        panic!("{e:#}\n{}", logs(&client, &server));
    }
    // The session was made from the client's resent key (CONTROL_WKC_V1).
    assert!(
        server.log().contains("new session (tls-crypt-v2 client key)"),
        "{}",
        logs(&client, &server)
    );
    ping_and_transfer(&net, "stock client -> ferrovpn server", &client, &server);
}

#[test]
fn ferrovpn_client_with_ferrovpn_keys_on_stock_server() {
    let net = setup("tcv2-fc");
    let (server_key, client_key) = (net.key("v2-server.key"), net.key("v2-client.key"));
    ferrovpn(&["--genkey", "tls-crypt-v2-server", server_key.to_str().unwrap()]);
    ferrovpn(&[
        "--tls-crypt-v2",
        server_key.to_str().unwrap(),
        "--genkey",
        "tls-crypt-v2-client",
        client_key.to_str().unwrap(),
        "Y2xpZW50MQ==",
    ]);
    let (sc, cc) = net.confs(&server_key, &client_key);
    // The client profile carries everything inline, `<tls-crypt-v2>` too.
    let cc = cc.inline().unwrap();
    let mut server = net.spawn(
        &net.server_ns,
        "openvpn-server",
        "openvpn",
        &openvpn_server_conf(&sc),
    );
    server.wait_for_log_line(UP, CONNECT_TIMEOUT).unwrap();
    let mut client = net.spawn(
        &net.client_ns,
        "ferrovpn-client",
        FERROVPN,
        &openvpn_client_conf(&cc),
    );
    if let Err(e) = client.wait_for_log_line(UP, CONNECT_TIMEOUT) {
        panic!("{e:#}\n{}", logs(&client, &server));
    }
    ping_and_transfer(&net, "ferrovpn client -> stock server", &client, &server);
}

#[test]
fn client_key_of_another_server_key_is_refused_without_a_session() {
    let net = setup("tcv2-fk");
    let (server_key, other_key, client_key) = (
        net.key("v2-server.key"),
        net.key("v2-other.key"),
        net.key("v2-client.key"),
    );
    write_tls_crypt_v2_server_key(&server_key).unwrap();
    write_tls_crypt_v2_server_key(&other_key).unwrap();
    write_tls_crypt_v2_client_key(&other_key, &client_key, b"mallory").unwrap();
    let (sc, cc) = net.confs(&server_key, &client_key);
    let mut server = net.spawn(
        &net.server_ns,
        "ferrovpn-server",
        FERROVPN,
        &openvpn_server_conf(&sc),
    );
    server
        .wait_for_log_line("server listening", CONNECT_TIMEOUT)
        .unwrap();
    let client = net.spawn(
        &net.client_ns,
        "openvpn-client",
        "openvpn",
        &openvpn_client_conf(&cc),
    );
    let refused = "wrapped client key authentication failed";
    assert!(
        wait_until(CONNECT_TIMEOUT, Duration::from_millis(50), || server
            .log()
            .contains(refused)),
        "{}",
        logs(&client, &server)
    );
    // The client keeps resending its reset (every tls-timeout, 2 s): for
    // two more of them nothing may come of it, on either side.
    let admitted = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        server.log().contains("new session")
            || client.log().contains(UP)
            || client.log().contains("Initial packet from")
    });
    assert!(!admitted, "{}", logs(&client, &server));
}
