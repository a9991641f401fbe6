//! IPv6 inside the tunnel with Debian's stock OpenVPN 2.6 as the peer: a
//! stock client gets its address from a ferrovpn `server-ipv6` server; a
//! ferrovpn client applies `ifconfig-ipv6`, `route-ipv6` and
//! `redirect-gateway ipv6` pushed by a stock server exactly as a stock
//! client does. ping and iperf3 over IPv6 both ways.
//!
//! Needs root, the lab's tools, `sysctl` and `/dev/net/tun`; every test
//! fails loudly without them. Every wait has a deadline.

use std::time::Duration;

use ferrovpn_testkit::lab::{CLIENT_DEV, log_tails};
use ferrovpn_testkit::{Direction, iperf3_all_while};
use ferrovpn_testkit::{Lab, Netns, Proc, ping, require_root_and_tools};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

/// A lab with IPv6 turned on in every namespace.
fn lab(tag: &str, n_clients: usize) -> Lab {
    require_root_and_tools(&["sysctl"]);
    let lab = Lab::new(tag, n_clients, FERROVPN);
    lab.enable_ipv6();
    lab
}

/// `ip -6 -o addr show dev DEV scope global` in `ns`.
fn addr6(ns: &Netns, dev: &str) -> String {
    ns.exec(&["ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "global"])
        .unwrap()
}

/// The IPv6 routes through `dev` in `ns`, one per line, as `ip -6 route`
/// prints them without the fields that differ between ways of adding the
/// same route (`proto`, `pref`).
fn routes6(ns: &Netns, dev: &str) -> Vec<String> {
    let text = ns
        .exec(&["ip", "-6", "route", "show", "dev", dev])
        .unwrap();
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| !l.starts_with("fe80:") && !l.starts_with("multicast"))
        .map(|l| {
            let mut words = Vec::new();
            let mut it = l.split_whitespace();
            while let Some(w) = it.next() {
                if w == "proto" || w == "pref" {
                    it.next();
                } else {
                    words.push(w);
                }
            }
            words.join(" ")
        })
        .collect();
    out.sort();
    out
}

/// ping `addr` from `ns` (5 echoes, 4 answered at least) and 2 s of iperf3
/// each way between `ns` and `server_ns` at `addr`.
fn ping_and_iperf3_both_ways(
    what: &str,
    ns: &Netns,
    server_ns: &Netns,
    addr: &str,
    a: &Proc,
    b: &Proc,
) {
    let p = ping(ns, addr, 5, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{what}: ping {addr}: {e:#}\n{}", log_tails(a, b)));
    assert!(p.received >= 4, "{what}: {p:?}\n{}", log_tails(a, b));
    for direction in [Direction::Upload, Direction::Download] {
        let (reports, ()) = iperf3_all_while(&[ns], server_ns, addr, 2, direction, || ())
            .unwrap_or_else(|e| panic!("{what}: iperf3 {}: {e:#}\n{}", direction.name(), log_tails(a, b)));
        let r = &reports[0];
        eprintln!(
            "{what} {}: {:.3} Gbit/s, {} bytes, {} retransmits, ping avg {:.3} ms",
            direction.name(),
            r.gbps,
            r.bytes,
            r.retransmits,
            p.avg_ms
        );
        assert!(r.bytes > 1_000_000, "{what} {}: {r:?}", direction.name());
    }
}

/// (1) A stock client of a ferrovpn `server-ipv6` server gets the first
/// pool address (NETWORK+0x1000, paired with 10.8.0.2), reaches the server's
/// NETWORK+1 by ping6 and carries iperf3 over IPv6 both ways; the status
/// shows its IPv6 address.
#[test]
fn stock_client_gets_ipv6_from_ferrovpn_server_ipv6() {
    let lab = lab("v6-srv", 1);
    let (mut sc, cc) = lab.tls_crypt_confs();
    let status = lab.dir.join("status.txt");
    sc.extra = vec![
        "server-ipv6 fd00:8::/64".into(),
        format!("status {} 1", status.display()),
        "status-version 2".into(),
    ];
    let server = lab.ferrovpn_server(&sc);
    let client = lab.stock_client_up(0, "openvpn-client", &cc, &server);
    let a = addr6(&lab.clients[0], CLIENT_DEV);
    assert!(a.contains("fd00:8::1000/64"), "{a}\n{}", log_tails(&client, &server));
    assert!(
        client.log().contains("ifconfig-ipv6 fd00:8::1000/64 fd00:8::1"),
        "{}",
        log_tails(&client, &server)
    );
    ping_and_iperf3_both_ways(
        "stock client -> ferrovpn server over inner IPv6",
        &lab.clients[0],
        &lab.server_ns,
        "fd00:8::1",
        &client,
        &server,
    );
    let shown = ferrovpn_testkit::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        std::fs::read_to_string(&status)
            .is_ok_and(|t| t.lines().any(|l| l.starts_with("CLIENT_LIST,") && l.contains(",10.8.0.2,fd00:8::1000,")))
    });
    assert!(
        shown,
        "status file lacks the IPv6 address:\n{}",
        std::fs::read_to_string(&status).unwrap_or_default()
    );
}

/// (2) A ferrovpn client of a stock `server-ipv6` server pushing
/// `route-ipv6` and `redirect-gateway ipv6` installs the same IPv6
/// address and routes on its tun as a stock client of the same server,
/// and carries ping6 and iperf3 over IPv6 both ways.
#[test]
fn ferrovpn_client_applies_ipv6_pushed_by_stock_server_like_stock_client() {
    let lab = lab("v6-cli", 2);
    let (mut sc, _) = lab.tls_crypt_confs();
    let wrap = sc.wrap.clone();
    sc.extra = vec!["server-ipv6 fd00:9::/64".into()];
    sc.push = vec![
        "route-ipv6 fd00:99::/64".into(),
        "route-ipv6 fd00:98::/64 fd00:9::1 7".into(),
        "redirect-gateway ipv6 !ipv4".into(),
    ];
    let server = lab.stock_server(&sc);
    let confs = lab.client_confs(&wrap, ferrovpn_testkit::Cipher::Aes256Gcm);
    let stock = lab.stock_client_up(1, "openvpn-client", &confs[1], &server);
    let ferro = lab.client_up(
        ferrovpn_testkit::Implementation::Ferrovpn,
        0,
        "ferrovpn-client",
        &confs[0],
        &server,
    );
    let a = addr6(&lab.clients[0], CLIENT_DEV);
    assert!(a.contains("fd00:9::/64") || a.contains("fd00:9::10"), "{a}");
    let stock_routes = routes6(&lab.clients[1], CLIENT_DEV);
    let ferro_routes = routes6(&lab.clients[0], CLIENT_DEV);
    // The connected /64 aside, the routes are the same.
    assert_eq!(
        ferro_routes, stock_routes,
        "\n{}\n{}",
        log_tails(&ferro, &server),
        stock.log_tail(40)
    );
    assert!(
        ferro_routes.iter().any(|r| r.starts_with("fd00:99::/64")),
        "{ferro_routes:?}"
    );
    ping_and_iperf3_both_ways(
        "ferrovpn client -> stock server over inner IPv6",
        &lab.clients[0],
        &lab.server_ns,
        "fd00:9::1",
        &ferro,
        &server,
    );
}
