//! Compression framing (`comp-lzo`, `compress`) between ferrovpn and Debian's
//! stock OpenVPN 2.6, in both roles: each side in its own network namespace,
//! joined by a veth pair. Traffic goes both ways (pings of several sizes, a
//! short iperf3), so a framing mismatch in either direction shows as loss.
//!
//! Needs root, `openvpn`, `iperf3`, `ip`, `ping`, `ss` and `/dev/net/tun`;
//! every test fails loudly without them. Every wait has a deadline.

use std::path::PathBuf;
use std::time::Duration;

use ferrovpn_testkit::pki::{Pki, PkiOptions};
use ferrovpn_testkit::{
    Cipher, ClientConf, Material, Netns, Proc, ServerConf, TestDir, VethPair, Wrap, iperf3_report,
    openvpn_client_conf, openvpn_server_conf, ping, require_root_and_tools,
};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const TOOLS: &[&str] = &["openvpn", FERROVPN, "iperf3", "ip", "ping", "ss", "kill"];
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const UP: &str = "Initialization Sequence Completed";
const SERVER_TUN: &str = "10.8.0.1";
const CLIENT_TUN: &str = "10.8.0.2";
const SERVER_UNDERLAY: &str = "10.207.0.1";

/// Which implementation runs a side.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Imp {
    Stock,
    Ferrovpn,
}

/// Two namespaces joined by veth, a throwaway PKI and a scratch directory.
/// Processes are locals declared after this, so they go first.
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
    fn confs(&self) -> (ServerConf, ClientConf) {
        let key: PathBuf = self.dir.join("tc.key");
        ferrovpn_testkit::write_static_key(&key).unwrap();
        let wrap = Wrap::TlsCrypt(Material::File(key));
        (
            ServerConf::new(&self.pki, "fvtun-s", wrap.clone(), Cipher::Aes256Gcm),
            ClientConf::new(
                &self.pki,
                &self.pki.clients[0],
                SERVER_UNDERLAY,
                "fvtun-c",
                wrap,
                Cipher::Aes256Gcm,
            ),
        )
    }

    fn spawn(&self, ns: &Netns, name: &str, imp: Imp, text: &str) -> Proc {
        let conf = self.dir.join(format!("{name}.conf"));
        std::fs::write(&conf, text).unwrap();
        let prog = match imp {
            Imp::Stock => "openvpn",
            Imp::Ferrovpn => FERROVPN,
        };
        Proc::spawn_in(
            ns,
            name,
            self.dir.path(),
            prog,
            &["--config".as_ref(), conf.as_os_str()],
        )
        .unwrap()
    }

    /// Start the server, then the client, and wait until the client is up.
    fn up(&self, server: (Imp, &ServerConf), client: (Imp, &ClientConf)) -> (Proc, Proc) {
        let mut s = self.spawn(
            &self.server_ns,
            "server",
            server.0,
            &openvpn_server_conf(server.1),
        );
        let ready = match server.0 {
            Imp::Stock => UP,
            Imp::Ferrovpn => "server listening",
        };
        s.wait_for_log_line(ready, CONNECT_TIMEOUT).unwrap();
        let mut c = self.spawn(
            &self.client_ns,
            "client",
            client.0,
            &openvpn_client_conf(client.1),
        );
        if let Err(e) = c.wait_for_log_line(UP, CONNECT_TIMEOUT) {
            panic!("{e:#}\n{}", logs(&c, &s));
        }
        (s, c)
    }
}

fn logs(client: &Proc, server: &Proc) -> String {
    format!(
        "--- client ---\n{}\n--- server ---\n{}",
        client.log_tail(40),
        server.log_tail(40)
    )
}

/// `count` pings of `size` bytes filled with `pattern` from `ns` to `addr`;
/// every one must come back.
fn ping_sized(ns: &Netns, addr: &str, size: u32, pattern: &str) -> Result<(), String> {
    let (size, count) = (size.to_string(), "4");
    let out = ns
        .command(
            "ping",
            &[
                "-n", "-q", "-c", count, "-i", "0.2", "-w", "10", "-s", &size, "-p", pattern, "-M",
                "dont", addr,
            ],
        )
        .output()
        .map_err(|e| format!("ping: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.contains(&format!("{count} packets transmitted, {count} received")) {
        Ok(())
    } else {
        Err(format!("ping -s {size} {addr}: {text}"))
    }
}

/// Pings of several sizes from both ends (patterned and zero-filled payloads,
/// which a compressing peer compresses), then 2 s of iperf3 from the client
/// to the server (random payload, which it sends uncompressed).
fn traffic_both_ways(net: &Net, what: &str, client: &Proc, server: &Proc) {
    for size in [16u32, 56, 500, 1200, 1400] {
        for pattern in ["a5c3", "00"] {
            ping_sized(&net.client_ns, SERVER_TUN, size, pattern)
                .and_then(|()| ping_sized(&net.server_ns, CLIENT_TUN, size, pattern))
                .unwrap_or_else(|e| panic!("{what}: {e}\n{}", logs(client, server)));
        }
    }
    let r = iperf3_report(&net.client_ns, &net.server_ns, SERVER_TUN, 2, 1)
        .unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", logs(client, server)));
    eprintln!(
        "{what}: {:.3} Gbit/s, {} bytes, {} retransmits",
        r.gbps, r.bytes, r.retransmits
    );
    assert!(r.bytes > 1_000_000, "{what}: {r:?}");
}

/// The docker-openvpn server: `comp-lzo no` in its own config and pushed;
/// a stock client then frames every payload with 0xFA.
#[test]
fn ferrovpn_server_pushing_comp_lzo_no_to_stock_client() {
    let net = setup("cz-dock");
    let (mut sc, cc) = net.confs();
    sc.extra.push("comp-lzo no".into());
    sc.push.push("comp-lzo no".into());
    let (server, client) = net.up((Imp::Ferrovpn, &sc), (Imp::Stock, &cc));
    traffic_both_ways(&net, "comp-lzo no pushed by ferrovpn", &client, &server);
}

/// A stock server with `comp-lzo no` pushes it; the ferrovpn client must
/// apply the framing it was pushed.
#[test]
fn stock_server_pushing_comp_lzo_no_to_ferrovpn_client() {
    let net = setup("cz-push");
    let (mut sc, cc) = net.confs();
    sc.extra.push("comp-lzo no".into());
    sc.push.push("comp-lzo no".into());
    let (server, client) = net.up((Imp::Stock, &sc), (Imp::Ferrovpn, &cc));
    traffic_both_ways(&net, "comp-lzo no pushed by stock", &client, &server);
}

/// `compress lz4-v2` configured on both ends, ferrovpn as the server.
#[test]
fn lz4_v2_configured_on_both_ferrovpn_server() {
    let net = setup("cz-lz4v2");
    let (mut sc, mut cc) = net.confs();
    sc.extra.push("compress lz4-v2".into());
    cc.extra.push("compress lz4-v2".into());
    let (server, client) = net.up((Imp::Ferrovpn, &sc), (Imp::Stock, &cc));
    traffic_both_ways(&net, "compress lz4-v2", &client, &server);
}

/// `compress stub-v2` configured on both ends, ferrovpn as the client.
#[test]
fn stub_v2_configured_on_both_ferrovpn_client() {
    let net = setup("cz-stubv2");
    let (mut sc, mut cc) = net.confs();
    sc.extra.push("compress stub-v2".into());
    cc.extra.push("compress stub-v2".into());
    let (server, client) = net.up((Imp::Stock, &sc), (Imp::Ferrovpn, &cc));
    traffic_both_ways(&net, "compress stub-v2", &client, &server);
}

/// A stock server that really compresses (`compress lz4` with
/// `allow-compression yes`, swap framing): the ferrovpn client (receive-only
/// `compress lz4`) decompresses; the zero-filled pings are compressible.
#[test]
fn stock_server_compressing_lz4_to_ferrovpn_client() {
    let net = setup("cz-lz4");
    let (mut sc, mut cc) = net.confs();
    sc.extra.push("compress lz4".into());
    sc.extra.push("allow-compression yes".into());
    cc.extra.push("compress lz4".into());
    let (server, client) = net.up((Imp::Stock, &sc), (Imp::Ferrovpn, &cc));
    traffic_both_ways(&net, "compress lz4 from stock", &client, &server);
}

/// A stock client that really compresses with LZO (`comp-lzo yes` with
/// `allow-compression yes`): the ferrovpn server decompresses.
#[test]
fn stock_client_compressing_lzo_to_ferrovpn_server() {
    let net = setup("cz-lzo");
    let (mut sc, mut cc) = net.confs();
    sc.extra.push("comp-lzo yes".into());
    cc.extra.push("comp-lzo yes".into());
    cc.extra.push("allow-compression yes".into());
    let (server, client) = net.up((Imp::Ferrovpn, &sc), (Imp::Stock, &cc));
    traffic_both_ways(&net, "comp-lzo yes from stock", &client, &server);
}

/// A server pushing a real algorithm to a client with 2.6's default
/// (`allow-compression no`): the push is refused, as 2.6 refuses it.
#[test]
fn ferrovpn_client_refuses_pushed_compression_by_default() {
    let net = setup("cz-refuse");
    let (mut sc, cc) = net.confs();
    sc.extra.push("compress lz4-v2".into());
    sc.push.push("compress lz4-v2".into());
    let mut server = net.spawn(
        &net.server_ns,
        "server",
        Imp::Stock,
        &openvpn_server_conf(&sc),
    );
    server.wait_for_log_line(UP, CONNECT_TIMEOUT).unwrap();
    let mut client = net.spawn(
        &net.client_ns,
        "client",
        Imp::Ferrovpn,
        &openvpn_client_conf(&cc),
    );
    if let Err(e) = client.wait_for_log_line("allow-compression", CONNECT_TIMEOUT) {
        panic!("{e:#}\n{}", logs(&client, &server));
    }
    assert!(!client.log().contains(UP), "{}", logs(&client, &server));
}
