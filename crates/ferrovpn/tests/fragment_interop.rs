//! `fragment` and `passtos` between ferrovpn and Debian's stock OpenVPN 2.6,
//! in both roles, and between two ferrovpn ends: each side in its own
//! network namespace, joined by a veth pair.
//!
//! `fragment`: pings of up to 3000 bytes (over the tun MTU, so the inner IP
//! packets are fragmented too, and every one of them is split by
//! `fragment`) and a short iperf3 each way; nftables counters in each
//! namespace's prerouting hook see every data datagram that arrives (after
//! any GSO segmentation) and prove none exceeds the `fragment` size.
//! `passtos`: pings with TOS 0xb8 (DSCP EF) through the tunnel; the
//! counters see the outer datagrams arrive with DSCP EF, and without it
//! when the pings carry none.
//!
//! Needs root, `openvpn`, `iperf3`, `ip`, `ping`, `ss`, `nft` and
//! `/dev/net/tun`; every test fails loudly without them. Every wait has a
//! deadline.

use std::time::Duration;

use ferrovpn_testkit::Implementation::{self, Ferrovpn, Stock};
use ferrovpn_testkit::lab::{SERVER_PORT, SERVER_TUN, log_tails};
use ferrovpn_testkit::{Lab, Netns, Proc, ping_all, require_root_and_tools};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const CLIENT_TUN: &str = "10.8.0.2";

/// Counters, in a namespace's prerouting hook, over the P_DATA_V2
/// datagrams (first payload byte 0x48..0x4f) arriving from the peer's
/// port `sport` or at port `dport`.
struct Counters<'a> {
    ns: &'a Netns,
}

/// What [`Counters::read`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Seen {
    /// Data datagrams.
    data: u64,
    /// Data datagrams with a UDP payload over the limit.
    oversized: u64,
    /// Data datagrams with DSCP EF (TOS 0xb8).
    ef: u64,
}

impl<'a> Counters<'a> {
    /// `direction`: `udp dport 1194` (a server's namespace) or `udp sport
    /// 1194` (a client's); `max_payload`: the largest UDP payload allowed.
    fn install(lab: &Lab, ns: &'a Netns, direction: &str, max_payload: usize) -> Counters<'a> {
        let data = format!("{direction} @th,64,8 & 0xf8 == 0x48");
        let rules = format!(
            "table inet fvtest {{\n chain pre {{\n  type filter hook prerouting priority -300;\n  \
             {data} counter\n  {data} udp length > {} counter\n  {data} ip dscp ef counter\n }}\n}}\n",
            (max_payload + 8).min(65_535)
        );
        let path = lab.dir.join(format!("{}.nft", ns.name()));
        std::fs::write(&path, rules).unwrap();
        ns.exec(&["nft", "-f", path.to_str().unwrap()])
            .unwrap_or_else(|e| panic!("nft: {e:#}"));
        Counters { ns }
    }

    fn read(&self) -> Seen {
        let out = self
            .ns
            .exec(&["nft", "list", "chain", "inet", "fvtest", "pre"])
            .unwrap_or_else(|e| panic!("nft: {e:#}"));
        let packets: Vec<u64> = out
            .split("counter packets ")
            .skip(1)
            .map(|rest| {
                let n = rest.split_whitespace().next().unwrap_or("");
                n.parse().unwrap_or_else(|_| panic!("nft output: {out}"))
            })
            .collect();
        assert_eq!(packets.len(), 3, "nft output: {out}");
        Seen {
            data: packets[0],
            oversized: packets[1],
            ef: packets[2],
        }
    }
}

/// `count` pings of `size` bytes with TOS `tos` from `ns` to `addr`, IP
/// fragmentation allowed; every one must come back.
fn ping(ns: &Netns, addr: &str, size: u32, tos: u8, count: u32) -> Result<(), String> {
    let tos = format!("{tos:#x}");
    ping_all(
        ns,
        addr,
        count,
        size,
        &["-Q", &tos],
        Duration::from_secs(15),
    )
}

/// The server and a client, both with `line` (`fragment ...`/`passtos`).
fn tunnel(lab: &Lab, server: Implementation, client: Implementation, line: &str) -> (Proc, Proc) {
    require_root_and_tools(&["nft"]);
    // A UDP GSO send crosses a veth pair as one packet, segmented only at
    // the receiving socket: make each end segment what it sends, so that
    // the counters see the datagrams a real link carries.
    let veth = &lab.veths[0];
    for (ns, dev) in [(&lab.server_ns, &veth.if_a), (&lab.clients[0], &veth.if_b)] {
        ns.exec(&["ip", "link", "set", "dev", dev, "gso_max_segs", "1"])
            .unwrap_or_else(|e| panic!("{e:#}"));
    }
    let (mut sc, mut cc) = lab.tls_crypt_confs();
    sc.extra.push(line.into());
    cc.extra.push(line.into());
    let s = lab.server(server, &sc);
    let c = lab.client_up(client, 0, "client", &cc, &s);
    (s, c)
}

/// Pings across fragmentation both ways and iperf3 both ways; no data
/// datagram may carry more than `max_payload` bytes of UDP payload, in
/// either direction.
fn fragmented_traffic(
    lab: &Lab,
    server: Implementation,
    client: Implementation,
    line: &str,
    max_payload: usize,
) {
    let what = format!("{line}, {server:?} server, {client:?} client");
    let (s, c) = tunnel(lab, server, client, line);
    let at_server = Counters::install(
        lab,
        &lab.server_ns,
        &format!("udp dport {SERVER_PORT}"),
        max_payload,
    );
    let at_client = Counters::install(
        lab,
        &lab.clients[0],
        &format!("udp sport {SERVER_PORT}"),
        max_payload,
    );
    for size in [56u32, 1400, 3000] {
        ping(&lab.clients[0], SERVER_TUN, size, 0, 3)
            .and_then(|()| ping(&lab.server_ns, CLIENT_TUN, size, 0, 3))
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", log_tails(&c, &s)));
    }
    lab.iperf3_both_ways(&what, CLIENT_TUN, &c, &s);
    for (side, seen) in [("server", at_server.read()), ("client", at_client.read())] {
        eprintln!("{what}: data datagrams received by the {side}: {seen:?}");
        assert!(seen.data > 1000, "{what}: {side} saw {seen:?}");
        assert_eq!(
            seen.oversized, 0,
            "{what}: the {side} received datagrams over {max_payload} bytes: {seen:?}"
        );
    }
}

/// `fragment 1300` with `comp-lzo no` (expressvpn's profile: the fragment
/// header goes in front of the compression framing) on a ferrovpn server
/// and a stock client.
#[test]
fn fragment_1300_ferrovpn_server_stock_client() {
    let lab = Lab::new("fr-1300", 1, FERROVPN);
    fragmented_traffic(&lab, Ferrovpn, Stock, "fragment 1300\ncomp-lzo no", 1300);
}

/// `fragment 576` on a stock server and a ferrovpn client: a 3000-byte
/// ping leaves as 3 IP fragments of 3 `fragment` pieces each.
#[test]
fn fragment_576_stock_server_ferrovpn_client() {
    let lab = Lab::new("fr-576", 1, FERROVPN);
    fragmented_traffic(&lab, Stock, Ferrovpn, "fragment 576", 576);
}

/// `fragment 576 mtu` between two ferrovpn ends: the outer IP and UDP
/// headers (28 bytes) count against the 576.
#[test]
fn fragment_576_mtu_ferrovpn_both_ends() {
    let lab = Lab::new("fr-ff", 1, FERROVPN);
    fragmented_traffic(&lab, Ferrovpn, Ferrovpn, "fragment 576 mtu", 576 - 28);
}

/// `passtos` on both ends: pings with TOS 0xb8 (and their replies, which
/// keep it) cross the underlay with DSCP EF in both directions; pings
/// without a TOS do not.
fn passtos_both_ways(lab: &Lab, server: Implementation, client: Implementation) {
    let what = format!("passtos, {server:?} server, {client:?} client");
    let (s, c) = tunnel(lab, server, client, "passtos");
    let at_server = Counters::install(
        lab,
        &lab.server_ns,
        &format!("udp dport {SERVER_PORT}"),
        65_535,
    );
    let at_client = Counters::install(
        lab,
        &lab.clients[0],
        &format!("udp sport {SERVER_PORT}"),
        65_535,
    );
    ping(&lab.clients[0], SERVER_TUN, 56, 0, 4)
        .unwrap_or_else(|e| panic!("{what}: {e}\n{}", log_tails(&c, &s)));
    let (plain_s, plain_c) = (at_server.read(), at_client.read());
    assert_eq!(
        (plain_s.ef, plain_c.ef),
        (0, 0),
        "{what}: EF without a TOS: {plain_s:?} {plain_c:?}"
    );
    ping(&lab.clients[0], SERVER_TUN, 56, 0xb8, 5)
        .and_then(|()| ping(&lab.server_ns, CLIENT_TUN, 56, 0xb8, 5))
        .unwrap_or_else(|e| panic!("{what}: {e}\n{}", log_tails(&c, &s)));
    let (seen_s, seen_c) = (at_server.read(), at_client.read());
    eprintln!("{what}: server saw {seen_s:?}, client saw {seen_c:?}");
    // 10 packets each way carry TOS 0xb8 (requests one way, replies the
    // other); 2.6 applies a new TOS from the next datagram on, so allow one
    // late per burst.
    assert!(seen_s.ef >= 8, "{what}: server saw {seen_s:?}");
    assert!(seen_c.ef >= 8, "{what}: client saw {seen_c:?}");
}

#[test]
fn passtos_ferrovpn_server_stock_client() {
    let lab = Lab::new("tos-fs", 1, FERROVPN);
    passtos_both_ways(&lab, Ferrovpn, Stock);
}

#[test]
fn passtos_stock_server_ferrovpn_client() {
    let lab = Lab::new("tos-sf", 1, FERROVPN);
    passtos_both_ways(&lab, Stock, Ferrovpn);
}

/// Lines of a stock peer's log (verb 7) where its options consistency
/// check (OCC) found our options string different from what it expects.
fn occ_warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains("is used inconsistently")
                || (l.contains("WARNING: '") && l.contains("config but missing in"))
                || l.contains("Options consistency check may be skewed")
        })
        .collect()
}

/// With `fragment` (and compression framing), a stock peer at verb 7 finds
/// ferrovpn's OCC options string as it expects (`mtu-dynamic`, 2.6's
/// `link-mtu` and `tun-mtu`, `auth` of an AEAD cipher): no OCC warning, in
/// both roles.
#[test]
fn stock_peer_finds_no_occ_mismatch_with_fragment() {
    let lab = Lab::new("fr-occ", 1, FERROVPN);
    for (server, client, line) in [
        (Ferrovpn, Stock, "fragment 1300\ncomp-lzo no"),
        (Stock, Ferrovpn, "fragment 576"),
        (Stock, Ferrovpn, "fragment 1300\ntun-mtu 1400\ncompress lz4"),
    ] {
        let (mut sc, mut cc) = lab.tls_crypt_confs();
        sc.extra.push(line.into());
        cc.extra.push(line.into());
        if server == Stock {
            sc.verb = 7;
        } else {
            cc.verb = 7;
        }
        let s = lab.server(server, &sc);
        let c = lab.client_up(client, 0, "client", &cc, &s);
        let stock = if server == Stock { &s } else { &c };
        let log = stock.log();
        assert!(
            log.contains("Expected Remote Options String"),
            "{line}: the stock peer did not log its OCC strings\n{}",
            log_tails(&c, &s)
        );
        let warnings = occ_warnings(&log);
        assert!(
            warnings.is_empty(),
            "{line}, {server:?} server, {client:?} client: {warnings:#?}"
        );
        drop(c);
        drop(s);
    }
}
