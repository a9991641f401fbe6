//! Networks behind clients (`iroute`): a longest-prefix-match table from
//! inner IPv4 prefixes to the peer that owns them. Built by the peer table's
//! writers with every snapshot (so a route always points at the snapshot's
//! own peer), read by the workers without locks. A lookup walks a
//! compressed binary trie (`prefix-trie`): at most 32 levels, whatever the
//! number of routes.
//!
//! Host routes (a client's tunnel address) stay in the snapshot's `by_ip`
//! hash map and win over any prefix here, as in OpenVPN 2.6, where the /32
//! of a client's address is the longest match.

use std::net::Ipv4Addr;
use std::sync::Arc;

use prefix_trie::PrefixMap;

use crate::peers::Peer;

/// An IPv4 network as (address, prefix length); host bits are ignored.
pub type Ipv4Prefix = (Ipv4Addr, u8);

/// The iroute table of one snapshot.
#[derive(Default)]
pub struct Iroutes {
    v4: PrefixMap<(u32, u8), Arc<Peer>>,
    // `iroute-ipv6` goes here: a `PrefixMap<(u128, u8), Arc<Peer>>` filled
    // from a per-peer IPv6 list in `build`, with a `lookup_v6` beside `lookup_v4`.
}

impl Iroutes {
    /// The table for `peers`, given oldest claim first: a network two peers
    /// claim goes to the later one (2.6: the newest learned route replaces
    /// the old one), and back to the earlier one when the later one leaves.
    pub(crate) fn build<'a>(peers: impl IntoIterator<Item = &'a Arc<Peer>>) -> Self {
        let mut v4 = PrefixMap::new();
        for p in peers {
            for &(net, len) in p.iroutes.iter() {
                let len = len.min(32);
                v4.insert((u32::from(net) & mask(len), len), p.clone());
            }
        }
        Iroutes { v4 }
    }

    /// The peer whose network holds `addr` (the longest prefix).
    #[inline]
    pub fn lookup_v4(&self, addr: Ipv4Addr) -> Option<&Arc<Peer>> {
        if self.v4.is_empty() {
            return None;
        }
        self.v4.get_lpm(&(u32::from(addr), 32)).map(|(_, p)| p)
    }

    /// How many networks are routed.
    pub fn len(&self) -> usize {
        self.v4.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty()
    }
}

fn mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peers::PeerTable;
    use proptest::prelude::*;

    fn table(routes: &[(u32, &[Ipv4Prefix])]) -> PeerTable {
        let t = PeerTable::new();
        for (id, nets) in routes {
            let remote = format!("192.0.2.{id}:1194").parse().unwrap();
            t.upsert_peer(*id, remote, Some(Ipv4Addr::new(10, 8, 0, *id as u8)));
            t.set_peer_iroutes(*id, nets);
        }
        t
    }

    fn owner(t: &PeerTable, addr: [u8; 4]) -> Option<u32> {
        t.load()
            .iroutes
            .lookup_v4(Ipv4Addr::from(addr))
            .map(|p| p.peer_id)
    }

    #[test]
    fn longest_prefix_wins_and_host_bits_are_ignored() {
        let t = table(&[
            (1, &[(Ipv4Addr::new(10, 0, 0, 0), 8)]),
            (
                2,
                &[
                    (Ipv4Addr::new(10, 1, 2, 3), 24),
                    (Ipv4Addr::new(192, 168, 7, 7), 32),
                ],
            ),
            (3, &[(Ipv4Addr::new(0, 0, 0, 0), 0)]),
        ]);
        assert_eq!(owner(&t, [10, 1, 2, 200]), Some(2));
        assert_eq!(owner(&t, [10, 1, 3, 1]), Some(1));
        assert_eq!(owner(&t, [192, 168, 7, 7]), Some(2));
        assert_eq!(owner(&t, [192, 168, 7, 8]), Some(3), "default route");
        assert_eq!(t.load().iroutes.len(), 4);
        t.remove_peer(3);
        assert_eq!(owner(&t, [192, 168, 7, 8]), None);
        t.remove_peer(2);
        assert_eq!(owner(&t, [10, 1, 2, 200]), Some(1));
        // Routes stay with the peer when its address changes (a float).
        t.upsert_peer(
            1,
            "198.51.100.1:5".parse().unwrap(),
            Some(Ipv4Addr::new(10, 8, 0, 1)),
        );
        assert_eq!(owner(&t, [10, 9, 9, 9]), Some(1));
        t.set_peer_iroutes(1, &[]);
        assert!(t.load().iroutes.is_empty());
    }

    #[test]
    fn the_newest_claim_owns_a_network_and_an_address() {
        let net = [(Ipv4Addr::new(172, 16, 0, 0), 12)];
        let t = table(&[(1, &net), (2, &net)]);
        assert_eq!(owner(&t, [172, 16, 1, 1]), Some(2));
        // Publishing for another reason keeps the order.
        t.upsert_peer(
            7,
            "192.0.2.7:1".parse().unwrap(),
            Some(Ipv4Addr::new(10, 8, 0, 7)),
        );
        assert_eq!(owner(&t, [172, 16, 1, 1]), Some(2));
        t.set_peer_iroutes(1, &net);
        assert_eq!(owner(&t, [172, 16, 1, 1]), Some(1));
        // When the newer claimer leaves, the network goes back to the other.
        t.remove_peer(1);
        assert_eq!(owner(&t, [172, 16, 1, 1]), Some(2));
        // Two peers with one tunnel address: the later one gets the traffic.
        let pinned = Ipv4Addr::new(10, 8, 0, 50);
        t.upsert_peer(8, "192.0.2.8:1".parse().unwrap(), Some(pinned));
        t.upsert_peer(9, "192.0.2.9:1".parse().unwrap(), Some(pinned));
        t.upsert_peer(
            7,
            "192.0.2.7:2".parse().unwrap(),
            Some(Ipv4Addr::new(10, 8, 0, 7)),
        );
        assert_eq!(t.load().by_ip[&pinned].peer_id, 9);
    }

    proptest! {
        /// The trie answers as a linear scan for the longest matching prefix.
        #[test]
        fn matches_a_linear_scan(
            routes in prop::collection::vec((any::<u32>(), 0u8..=32, 1u32..5), 0..64),
            probes in prop::collection::vec(any::<u32>(), 1..64),
        ) {
            let t = PeerTable::new();
            for id in 1..5u32 {
                let nets: Vec<Ipv4Prefix> = routes
                    .iter()
                    .filter(|r| r.2 == id)
                    .map(|r| (Ipv4Addr::from(r.0), r.1))
                    .collect();
                t.upsert_peer(id, format!("192.0.2.{id}:1").parse().unwrap(), None);
                t.set_peer_iroutes(id, &nets);
            }
            let snap = t.load();
            let mut expected_routes: Vec<(u32, u8, u32)> = Vec::new();
            // Later claims win: peers were claimed in id order.
            for id in 1..5u32 {
                for r in routes.iter().filter(|r| r.2 == id) {
                    let net = r.0 & mask(r.1);
                    expected_routes.retain(|e| (e.0, e.1) != (net, r.1));
                    expected_routes.push((net, r.1, id));
                }
            }
            for probe in probes.iter().copied().chain(routes.iter().map(|r| r.0)) {
                let want = expected_routes
                    .iter()
                    .filter(|e| probe & mask(e.1) == e.0)
                    .max_by_key(|e| e.1)
                    .map(|e| e.2);
                let got = snap.iroutes.lookup_v4(Ipv4Addr::from(probe)).map(|p| p.peer_id);
                prop_assert_eq!(got, want, "probe {}", Ipv4Addr::from(probe));
            }
        }
    }
}
