//! Networks behind clients (`iroute`, `iroute-ipv6`): longest-prefix-match
//! tables from inner IPv4 and IPv6 prefixes to the peer that owns them. Built by the peer table's
//! writers with every snapshot (so a route always points at the snapshot's
//! own peer), read by the workers without locks. A lookup walks a
//! compressed binary trie (`prefix-trie`): at most 32 (IPv4) or 128 (IPv6)
//! levels, whatever the number of routes.
//!
//! Host routes (a client's tunnel address) stay in the snapshot's `by_ip`
//! hash map (`by_ip6` for IPv6) and win over any prefix here, as in OpenVPN
//! 2.6, where the /32 (/128) of a client's address is the longest match.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use prefix_trie::PrefixMap;

use crate::peers::Peer;

/// An IPv4 network as (address, prefix length); host bits are ignored.
pub type Ipv4Prefix = (Ipv4Addr, u8);
/// An IPv6 network as (address, prefix length); host bits are ignored.
pub type Ipv6Prefix = (Ipv6Addr, u8);

/// The iroute table of one snapshot.
#[derive(Default)]
pub struct Iroutes {
    v4: PrefixMap<(u32, u8), Arc<Peer>>,
    v6: PrefixMap<(u128, u8), Arc<Peer>>,
}

impl Iroutes {
    /// The table for `peers`, given oldest claim first: a network two peers
    /// claim goes to the later one (2.6: the newest learned route replaces
    /// the old one), and back to the earlier one when the later one leaves.
    pub(crate) fn build<'a>(peers: impl IntoIterator<Item = &'a Arc<Peer>>) -> Self {
        let mut v4 = PrefixMap::new();
        let mut v6 = PrefixMap::new();
        for p in peers {
            for &(net, len) in p.iroutes.iter() {
                let len = len.min(32);
                v4.insert((u32::from(net) & mask(len), len), p.clone());
            }
            for &(net, len) in p.iroutes_v6.iter() {
                let len = len.min(128);
                v6.insert((u128::from(net) & mask_v6(len), len), p.clone());
            }
        }
        Iroutes { v4, v6 }
    }

    /// The peer whose network holds `addr` (the longest prefix).
    #[inline]
    pub fn lookup_v4(&self, addr: Ipv4Addr) -> Option<&Arc<Peer>> {
        if self.v4.is_empty() {
            return None;
        }
        self.v4.get_lpm(&(u32::from(addr), 32)).map(|(_, p)| p)
    }

    /// The peer whose IPv6 network holds `addr` (the longest prefix).
    #[inline]
    pub fn lookup_v6(&self, addr: Ipv6Addr) -> Option<&Arc<Peer>> {
        if self.v6.is_empty() {
            return None;
        }
        self.v6.get_lpm(&(u128::from(addr), 128)).map(|(_, p)| p)
    }

    /// How many networks are routed (IPv4 and IPv6).
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }
}

fn mask(len: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask_v6(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
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

    fn owner6(t: &PeerTable, addr: &str) -> Option<u32> {
        t.load().route_v6(addr.parse().unwrap()).map(|p| p.peer_id)
    }

    fn net6(s: &str) -> Ipv6Prefix {
        let (a, b) = s.split_once('/').unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    }

    #[test]
    fn ipv6_networks_route_by_longest_prefix_beside_the_tunnel_addresses() {
        let t = table(&[(1, &[]), (2, &[])]);
        t.set_peer_ipv6(1, Some("fd00::1000".parse().unwrap()));
        t.set_peer_iroutes_v6(1, &[net6("fd01:2::/32"), net6("fd02::7/128")]);
        // Host bits of the network are ignored.
        t.set_peer_iroutes_v6(2, &[net6("fd01:2:3::99/48"), net6("::/0")]);
        assert_eq!(owner6(&t, "fd01:2:3:4::1"), Some(2));
        assert_eq!(owner6(&t, "fd01:2:4::1"), Some(1));
        assert_eq!(owner6(&t, "fd02::7"), Some(1));
        assert_eq!(owner6(&t, "fd02::8"), Some(2), "default route");
        // A tunnel address wins over any network.
        assert_eq!(owner6(&t, "fd00::1000"), Some(1));
        assert_eq!(t.load().iroutes.len(), 4);
        // IPv4 and IPv6 networks are set apart and kept apart.
        t.set_peer_iroutes(1, &[(Ipv4Addr::new(10, 0, 0, 0), 8)]);
        assert_eq!(owner6(&t, "fd02::7"), Some(1));
        assert_eq!(owner(&t, [10, 1, 1, 1]), Some(1));
        assert_eq!(t.load().iroutes.len(), 5);
        t.remove_peer(2);
        assert_eq!(owner6(&t, "fd02::8"), None);
        assert_eq!(owner6(&t, "fd01:2:3:4::1"), Some(1));
        // Routes stay with the peer when its address changes (a float).
        t.upsert_peer(
            1,
            "198.51.100.1:5".parse().unwrap(),
            Some(Ipv4Addr::new(10, 8, 0, 1)),
        );
        assert_eq!(owner6(&t, "fd01:2::1"), Some(1));
        t.set_peer_iroutes_v6(1, &[]);
        assert_eq!(owner6(&t, "fd01:2::1"), None);
        assert_eq!(t.load().iroutes.len(), 1);
    }

    #[test]
    fn the_newest_claim_owns_an_ipv6_network() {
        let net = [net6("fd05::/64")];
        let t = table(&[(1, &[]), (2, &[])]);
        t.set_peer_iroutes_v6(1, &net);
        t.set_peer_iroutes_v6(2, &net);
        assert_eq!(owner6(&t, "fd05::1"), Some(2));
        t.set_peer_iroutes_v6(1, &net);
        assert_eq!(owner6(&t, "fd05::1"), Some(1));
        t.remove_peer(1);
        assert_eq!(owner6(&t, "fd05::1"), Some(2));
    }

    /// The linear scan's table for the property tests: `routes` as
    /// `(address, bits, peer)` claimed peer by peer in id order (as the
    /// tests set them), networks masked, a later claim of the same prefix
    /// replacing the earlier.
    fn claimed_in_id_order<T>(routes: &[(T, u8, u32)], mask: fn(u8) -> T) -> Vec<(T, u8, u32)>
    where
        T: Copy + Eq + std::ops::BitAnd<Output = T>,
    {
        let mut claimed: Vec<(T, u8, u32)> = Vec::new();
        for id in 1..5u32 {
            for r in routes.iter().filter(|r| r.2 == id) {
                let net = r.0 & mask(r.1);
                claimed.retain(|e| (e.0, e.1) != (net, r.1));
                claimed.push((net, r.1, id));
            }
        }
        claimed
    }

    /// The peer of the longest prefix in `claimed` that holds `probe`.
    fn longest_match<T>(claimed: &[(T, u8, u32)], probe: T, mask: fn(u8) -> T) -> Option<u32>
    where
        T: Copy + Eq + std::ops::BitAnd<Output = T>,
    {
        claimed
            .iter()
            .filter(|e| probe & mask(e.1) == e.0)
            .max_by_key(|e| e.1)
            .map(|e| e.2)
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
            let claimed = claimed_in_id_order(&routes, mask);
            for probe in probes.iter().copied().chain(routes.iter().map(|r| r.0)) {
                let want = longest_match(&claimed, probe, mask);
                let got = snap.iroutes.lookup_v4(Ipv4Addr::from(probe)).map(|p| p.peer_id);
                prop_assert_eq!(got, want, "probe {}", Ipv4Addr::from(probe));
            }
        }
    }

    proptest! {
        /// The IPv6 trie answers as a linear scan for the longest matching prefix.
        #[test]
        fn ipv6_matches_a_linear_scan(
            routes in prop::collection::vec((any::<u128>(), 0u8..=128, 1u32..5), 0..64),
            probes in prop::collection::vec(any::<u128>(), 1..64),
        ) {
            let t = PeerTable::new();
            for id in 1..5u32 {
                let nets: Vec<Ipv6Prefix> = routes
                    .iter()
                    .filter(|r| r.2 == id)
                    .map(|r| (Ipv6Addr::from(r.0), r.1))
                    .collect();
                t.upsert_peer(id, format!("192.0.2.{id}:1").parse().unwrap(), None);
                t.set_peer_iroutes_v6(id, &nets);
            }
            let snap = t.load();
            let claimed = claimed_in_id_order(&routes, mask_v6);
            for probe in probes.iter().copied().chain(routes.iter().map(|r| r.0)) {
                let want = longest_match(&claimed, probe, mask_v6);
                let got = snap.iroutes.lookup_v6(Ipv6Addr::from(probe)).map(|p| p.peer_id);
                prop_assert_eq!(got, want, "probe {}", Ipv6Addr::from(probe));
            }
        }
    }
}
