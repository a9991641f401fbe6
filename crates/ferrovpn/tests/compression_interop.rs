//! Compression framing (`comp-lzo`, `compress`) between ferrovpn and Debian's
//! stock OpenVPN 2.6, in both roles: each side in its own network namespace,
//! joined by a veth pair. Traffic goes both ways (pings of several sizes, a
//! short iperf3), so a framing mismatch in either direction shows as loss.
//!
//! Needs root, `openvpn`, `iperf3`, `ip`, `ping`, `ss` and `/dev/net/tun`;
//! every test fails loudly without them. Every wait has a deadline.

use ferrovpn_testkit::Implementation::{Ferrovpn, Stock};
use ferrovpn_testkit::lab::{CONNECT_TIMEOUT, SERVER_TUN, UP, log_tails};
use ferrovpn_testkit::{Lab, Proc, iperf3_report, ping_sized};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const CLIENT_TUN: &str = "10.8.0.2";

/// Pings of several sizes from both ends (patterned and zero-filled payloads,
/// which a compressing peer compresses), then 2 s of iperf3 from the client
/// to the server (random payload, which it sends uncompressed).
fn traffic_both_ways(lab: &Lab, what: &str, client: &Proc, server: &Proc) {
    for size in [16u32, 56, 500, 1200, 1400] {
        for pattern in ["a5c3", "00"] {
            ping_sized(&lab.clients[0], SERVER_TUN, 4, size, Some(pattern))
                .and_then(|()| ping_sized(&lab.server_ns, CLIENT_TUN, 4, size, Some(pattern)))
                .unwrap_or_else(|e| panic!("{what}: {e}\n{}", log_tails(client, server)));
        }
    }
    let r = iperf3_report(&lab.clients[0], &lab.server_ns, SERVER_TUN, 2, 1)
        .unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", log_tails(client, server)));
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
    let lab = Lab::new("cz-dock", 1, FERROVPN);
    let (mut sc, cc) = lab.tls_crypt_confs();
    sc.extra.push("comp-lzo no".into());
    sc.push.push("comp-lzo no".into());
    let server = lab.server(Ferrovpn, &sc);
    let client = lab.client_up(Stock, 0, "client", &cc, &server);
    traffic_both_ways(&lab, "comp-lzo no pushed by ferrovpn", &client, &server);
}

/// A stock server with `comp-lzo no` pushes it; the ferrovpn client must
/// apply the framing it was pushed.
#[test]
fn stock_server_pushing_comp_lzo_no_to_ferrovpn_client() {
    let lab = Lab::new("cz-push", 1, FERROVPN);
    let (mut sc, cc) = lab.tls_crypt_confs();
    sc.extra.push("comp-lzo no".into());
    sc.push.push("comp-lzo no".into());
    let server = lab.server(Stock, &sc);
    let client = lab.client_up(Ferrovpn, 0, "client", &cc, &server);
    traffic_both_ways(&lab, "comp-lzo no pushed by stock", &client, &server);
}

/// `compress lz4-v2` configured on both ends, ferrovpn as the server.
#[test]
fn lz4_v2_configured_on_both_ferrovpn_server() {
    let lab = Lab::new("cz-lz4v2", 1, FERROVPN);
    let (mut sc, mut cc) = lab.tls_crypt_confs();
    sc.extra.push("compress lz4-v2".into());
    cc.extra.push("compress lz4-v2".into());
    let server = lab.server(Ferrovpn, &sc);
    let client = lab.client_up(Stock, 0, "client", &cc, &server);
    traffic_both_ways(&lab, "compress lz4-v2", &client, &server);
}

/// `compress stub-v2` configured on both ends, ferrovpn as the client.
#[test]
fn stub_v2_configured_on_both_ferrovpn_client() {
    let lab = Lab::new("cz-stubv2", 1, FERROVPN);
    let (mut sc, mut cc) = lab.tls_crypt_confs();
    sc.extra.push("compress stub-v2".into());
    cc.extra.push("compress stub-v2".into());
    let server = lab.server(Stock, &sc);
    let client = lab.client_up(Ferrovpn, 0, "client", &cc, &server);
    traffic_both_ways(&lab, "compress stub-v2", &client, &server);
}

/// A stock server that really compresses (`compress lz4` with
/// `allow-compression yes`, swap framing): the ferrovpn client (receive-only
/// `compress lz4`) decompresses; the zero-filled pings are compressible.
#[test]
fn stock_server_compressing_lz4_to_ferrovpn_client() {
    let lab = Lab::new("cz-lz4", 1, FERROVPN);
    let (mut sc, mut cc) = lab.tls_crypt_confs();
    sc.extra.push("compress lz4".into());
    sc.extra.push("allow-compression yes".into());
    cc.extra.push("compress lz4".into());
    let server = lab.server(Stock, &sc);
    let client = lab.client_up(Ferrovpn, 0, "client", &cc, &server);
    traffic_both_ways(&lab, "compress lz4 from stock", &client, &server);
}

/// A stock client that really compresses with LZO (`comp-lzo yes` with
/// `allow-compression yes`): the ferrovpn server decompresses.
#[test]
fn stock_client_compressing_lzo_to_ferrovpn_server() {
    let lab = Lab::new("cz-lzo", 1, FERROVPN);
    let (mut sc, mut cc) = lab.tls_crypt_confs();
    sc.extra.push("comp-lzo yes".into());
    cc.extra.push("comp-lzo yes".into());
    cc.extra.push("allow-compression yes".into());
    let server = lab.server(Ferrovpn, &sc);
    let client = lab.client_up(Stock, 0, "client", &cc, &server);
    traffic_both_ways(&lab, "comp-lzo yes from stock", &client, &server);
}

/// A server pushing a real algorithm to a client with 2.6's default
/// (`allow-compression no`): the push is refused, as 2.6 refuses it.
#[test]
fn ferrovpn_client_refuses_pushed_compression_by_default() {
    let lab = Lab::new("cz-refuse", 1, FERROVPN);
    let (mut sc, cc) = lab.tls_crypt_confs();
    sc.extra.push("compress lz4-v2".into());
    sc.push.push("compress lz4-v2".into());
    let server = lab.server(Stock, &sc);
    let mut client = lab.client(Ferrovpn, 0, "client", &cc);
    if let Err(e) = client.wait_for_log_line("allow-compression", CONNECT_TIMEOUT) {
        panic!("{e:#}\n{}", log_tails(&client, &server));
    }
    assert!(
        !client.log().contains(UP),
        "{}",
        log_tails(&client, &server)
    );
}
