//! Per-packet cost of the iroute tables: nanoseconds per destination lookup
//! (`Snapshot::route_v4` / `route_v6`, a tunnel-address miss then the
//! longest-prefix match) with 10 and 10,000 networks behind up to 1,000
//! peers, and its two parts, for IPv4 (`iroute`) and IPv6 (`iroute-ipv6`).
//!
//! `cargo run --release -p ferrovpn-dataplane --example iroute_lookup`

use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use ferrovpn_dataplane::iroutes::{Ipv4Prefix, Ipv6Prefix};
use ferrovpn_dataplane::peers::PeerTable;

const LOOKUPS: u32 = 2_000_000;
const PEERS: u32 = 1_000;

/// A reproducible pseudo-random sequence (xorshift64) from `seed`.
fn xorshift(mut seed: u64) -> impl FnMut() -> u64 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    }
}

/// Peer `id` with an underlay address and the tunnel address 100.64.x.y.
fn upsert_peer(t: &PeerTable, id: u32) {
    t.upsert_peer(
        id,
        format!("192.0.2.{}:{}", id % 250, 1000 + id)
            .parse()
            .unwrap(),
        Some(Ipv4Addr::from(0x6440_0000 + id)),
    );
}

/// A table with `routes` distinct networks (/16 to /28) over up to
/// [`PEERS`] peers, and one address inside each.
fn table(routes: u32) -> (PeerTable, Vec<Ipv4Addr>) {
    let t = PeerTable::new();
    let mut rng = xorshift(0x2545_f491_4f6c_dd1d);
    let mut next = move || rng() as u32;
    let peers = PEERS.min(routes);
    let mut by_peer: Vec<Vec<Ipv4Prefix>> = vec![Vec::new(); peers as usize];
    let mut probes = Vec::new();
    for i in 0..routes {
        // Distinct networks: /24 to /28 inside 10.0.0.0/8 (one /24 each),
        // and every 50th a /16 inside 172.16.0.0/12 up to 172.31.255.255.
        let (net, len) = if i % 50 == 0 && i / 50 < 16 * 256 {
            (0xac10_0000 + ((i / 50) << 16), 16)
        } else {
            let len = 24 + (next() % 5) as u8;
            (0x0a00_0000 | (i << 8) | (next() & 0xff), len)
        };
        by_peer[(i % peers) as usize].push((Ipv4Addr::from(net), len));
        probes.push(Ipv4Addr::from(net));
    }
    for (id, nets) in by_peer.iter().enumerate() {
        let id = id as u32;
        upsert_peer(&t, id);
        t.set_peer_iroutes(id, nets);
    }
    assert_eq!(t.load().iroutes.len() as u32, routes, "networks collide");
    (t, probes)
}

/// The IPv6 counterpart of [`table`]: `routes` distinct networks (/48 to
/// /64 inside fd00::/16, every 50th a /32 inside 2001:db8::/24), each
/// peer with a tunnel IPv6 address, and one address inside each network.
fn table_v6(routes: u32) -> (PeerTable, Vec<Ipv6Addr>) {
    let t = PeerTable::new();
    let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
    let peers = PEERS.min(routes);
    let mut by_peer: Vec<Vec<Ipv6Prefix>> = vec![Vec::new(); peers as usize];
    let mut probes = Vec::new();
    for i in 0..routes {
        let (net, len) = if i % 50 == 0 {
            ((0x2001_0db8_u128 + u128::from(i / 50)) << 96, 32)
        } else {
            // One /48 per route (fd00:0:i::/48), then a random /48../64 in it.
            let len = 48 + (next() % 17) as u8;
            let sub = u128::from(next() as u16) << 64;
            ((0xfd00_u128 << 112) | (u128::from(i) << 80) | sub, len)
        };
        by_peer[(i % peers) as usize].push((Ipv6Addr::from(net), len));
        probes.push(Ipv6Addr::from(net | 0x1234));
    }
    for (id, nets) in by_peer.iter().enumerate() {
        let id = id as u32;
        upsert_peer(&t, id);
        t.set_peer_ipv6(
            id,
            Some(Ipv6Addr::from((0xfd99_u128 << 112) | u128::from(id))),
        );
        t.set_peer_iroutes_v6(id, nets);
    }
    assert_eq!(t.load().iroutes.len() as u32, routes, "networks collide");
    (t, probes)
}

/// Nanoseconds per call of `hit` over the probes, in turn, and how many
/// calls said yes.
fn time_lookups<A: Copy>(probes: &[A], mut hit: impl FnMut(A) -> bool) -> (f64, u32) {
    let mut found = 0u32;
    let start = Instant::now();
    for i in 0..LOOKUPS {
        found += u32::from(hit(black_box(probes[(i as usize) % probes.len()])));
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(LOOKUPS);
    (ns, found)
}

/// Times over `probes` the whole lookup `route`, then its two parts: the
/// longest-prefix match `lpm` and the tunnel-address lookup `tunnel`. Every
/// probe is in a network; none is a tunnel address.
fn report<A: Copy>(
    what: &str,
    probes: &[A],
    route: impl FnMut(A) -> bool,
    lpm: impl FnMut(A) -> bool,
    tunnel: impl FnMut(A) -> bool,
) {
    let (ns, routed) = time_lookups(probes, route);
    let (lpm, matched) = time_lookups(probes, lpm);
    let (hash, tunnel) = time_lookups(probes, tunnel);
    assert_eq!((routed, matched, tunnel), (LOOKUPS, LOOKUPS, 0));
    println!("{what}: {ns:.1} ns/lookup (tunnel-address miss {hash:.1} + prefix match {lpm:.1})");
}

fn measure_v6(routes: u32) {
    let (t, probes) = table_v6(routes);
    let snap = t.load();
    report(
        &format!("{routes:>6} IPv6 routes"),
        &probes,
        |dst| black_box(&snap).route_v6(dst).is_some(),
        |dst| black_box(&snap).iroutes.lookup_v6(dst).is_some(),
        |dst| black_box(&snap).by_ip6.get(&dst).is_some(),
    );
}

fn measure_v4(routes: u32) {
    let (t, probes) = table(routes);
    let snap = t.load();
    report(
        &format!("{routes:>6} routes"),
        &probes,
        |dst| black_box(&snap).route_v4(dst).is_some(),
        |dst| black_box(&snap).iroutes.lookup_v4(dst).is_some(),
        |dst| black_box(&snap).by_ip.get(&dst).is_some(),
    );
}

fn main() {
    for routes in [10, 10_000] {
        measure_v6(routes);
    }
    for routes in [10, 10_000] {
        measure_v4(routes);
    }
}
