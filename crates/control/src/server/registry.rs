//! The clients the server has, by their real address, with the peer-id and
//! tunnel address each was given. One place keeps the three views (client by
//! address, address by peer-id, the pool's used addresses) consistent:
//! insert, assign, float and remove. Generic over what a client is, so it is
//! tested without sessions.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};

use ferrovpn_proto::wire::PEER_ID_UNDEFINED;

use super::pool::AddressPool;

/// What a client has in the data plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub id: u32,
    /// Its IPv4 tunnel address: from the pool, or pinned by `ifconfig-push`;
    /// `None` for an IPv6-only client (a pool without IPv4).
    pub ip: Option<Ipv4Addr>,
    /// The pool entry it holds (its IPv6 pool address is that entry's);
    /// `None` with a pinned address.
    pub slot: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssignError {
    NoClient,
    NoPeerId,
    PoolExhausted,
}

pub struct Registry<T> {
    clients: HashMap<SocketAddr, T>,
    peers: HashMap<SocketAddr, Peer>,
    by_peer_id: HashMap<u32, SocketAddr>,
    pub pool: AddressPool,
}

impl<T> Registry<T> {
    pub fn new(pool: AddressPool) -> Self {
        Registry {
            clients: HashMap::new(),
            peers: HashMap::new(),
            by_peer_id: HashMap::new(),
            pool,
        }
    }

    pub fn len(&self) -> usize {
        self.clients.len()
    }

    pub fn contains(&self, addr: &SocketAddr) -> bool {
        self.clients.contains_key(addr)
    }

    pub fn get(&self, addr: &SocketAddr) -> Option<&T> {
        self.clients.get(addr)
    }

    pub fn get_mut(&mut self, addr: &SocketAddr) -> Option<&mut T> {
        self.clients.get_mut(addr)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&SocketAddr, &T)> {
        self.clients.iter()
    }

    /// The clients' addresses, for loops that may remove some.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.clients.keys().copied().collect()
    }

    /// Add a client; refused (and handed back) if `addr` is taken.
    pub fn insert(&mut self, addr: SocketAddr, client: T) -> Result<(), T> {
        if self.clients.contains_key(&addr) {
            return Err(client);
        }
        self.clients.insert(addr, client);
        Ok(())
    }

    pub fn peer(&self, addr: &SocketAddr) -> Option<Peer> {
        self.peers.get(addr).copied()
    }

    pub fn addr_of_peer(&self, peer_id: u32) -> Option<SocketAddr> {
        self.by_peer_id.get(&peer_id).copied()
    }

    /// The client's peer-id and tunnel address, given now (the lowest free
    /// peer-id; `pinned`, an `ifconfig-push` address, which the pool then
    /// keeps for it, else an address from the pool for `cn`) unless it has them.
    /// With `pinned`, the pool address `cn` would have got is taken and
    /// forgotten first, as 2.6 does (it picks before reading the client's
    /// `ifconfig-push`, then releases hard).
    pub fn assign_peer(
        &mut self,
        addr: SocketAddr,
        cn: Option<&str>,
        pinned: Option<Ipv4Addr>,
    ) -> Result<Peer, AssignError> {
        if !self.clients.contains_key(&addr) {
            return Err(AssignError::NoClient);
        }
        if let Some(p) = self.peers.get(&addr) {
            return Ok(*p);
        }
        let id = (0..PEER_ID_UNDEFINED)
            .find(|id| !self.by_peer_id.contains_key(id))
            .ok_or(AssignError::NoPeerId)?;
        let peer = match pinned {
            Some(ip) => {
                if let Some(picked) = self.pool.acquire(cn) {
                    self.pool.forget(picked);
                }
                self.pool.reserve(ip);
                Peer {
                    id,
                    ip: Some(ip),
                    slot: None,
                }
            }
            // No pool at all (`ifconfig-ipv6` alone): 2.6 gives no address
            // then; a client-config-dir file may give an IPv6 one.
            None if !self.pool.is_configured() => Peer {
                id,
                ip: None,
                slot: None,
            },
            None => {
                let slot = self.pool.acquire(cn).ok_or(AssignError::PoolExhausted)?;
                Peer {
                    id,
                    ip: self.pool.ipv4(slot),
                    slot: Some(slot),
                }
            }
        };
        self.by_peer_id.insert(id, addr);
        self.peers.insert(addr, peer);
        Ok(peer)
    }

    /// The other clients that hold `ip` (a pinned address can be one a
    /// client had before, as in 2.6).
    pub fn holders_of(&self, ip: Ipv4Addr, except: SocketAddr) -> Vec<SocketAddr> {
        (self.peers.iter())
            .filter(|(a, p)| **a != except && p.ip == Some(ip))
            .map(|(a, _)| *a)
            .collect()
    }

    /// Whether a client other than `except` holds what `p` holds: its IPv4
    /// address, or its pool entry when it has no IPv4 address.
    fn held_by_another(&self, p: &Peer, except: SocketAddr) -> bool {
        (self.peers.iter()).any(|(a, other)| {
            *a != except
                && match p.ip {
                    Some(_) => other.ip == p.ip,
                    None => p.slot.is_some() && other.slot == p.slot,
                }
        })
    }

    /// Give back what `p` held (see [`Self::held_by_another`]) at `now`.
    fn give_back(&mut self, p: &Peer, now: u64) {
        match (p.ip, p.slot) {
            (Some(ip), _) => self.pool.release_ipv4(ip, now),
            (None, Some(slot)) => self.pool.release(slot, now),
            (None, None) => {}
        }
    }

    /// Give the client at `addr` a fixed tunnel address (`ifconfig-push`
    /// from its client-connect script) instead of its pool address.
    pub fn set_address(&mut self, addr: SocketAddr, ip: Ipv4Addr) -> Option<Peer> {
        let old = *self.peers.get(&addr)?;
        let peer = Peer {
            ip: Some(ip),
            slot: None,
            ..old
        };
        if old.ip != Some(ip) || old.slot.is_some() {
            // Kept out of the pool while held, as an ifconfig-push pin is.
            self.pool.reserve(ip);
            self.peers.insert(addr, peer);
            if !self.held_by_another(&old, addr) {
                // 2.6 releases the replaced pool address hard: forgotten.
                match (old.ip, old.slot) {
                    (Some(o), _) if o != ip => self.pool.forget_ipv4(o),
                    (None, Some(slot)) => self.pool.forget(slot),
                    _ => {}
                }
            }
        }
        Some(peer)
    }

    /// Move the client with `peer_id` to `new_remote`. Returns its old
    /// address; `None` if there is no such client or `new_remote` belongs
    /// to another client (a float never takes over someone else's address).
    pub fn float(&mut self, peer_id: u32, new_remote: SocketAddr) -> Option<SocketAddr> {
        let old = self.addr_of_peer(peer_id)?;
        if self.clients.contains_key(&new_remote) {
            return None;
        }
        let client = self.clients.remove(&old)?;
        self.clients.insert(new_remote, client);
        if let Some(p) = self.peers.remove(&old) {
            self.peers.insert(new_remote, p);
        }
        self.by_peer_id.insert(peer_id, new_remote);
        Some(old)
    }

    /// Take a client out, freeing its peer-id and address (given back to
    /// the pool at `now`, whole seconds: see [`AddressPool::release`]).
    pub fn remove(&mut self, addr: &SocketAddr, now: u64) -> Option<(T, Option<Peer>)> {
        let client = self.clients.remove(addr)?;
        let peer = self.peers.remove(addr);
        if let Some(p) = peer {
            self.by_peer_id.remove(&p.id);
            // A pinned address may be held twice: free it with its last holder.
            if !self.held_by_another(&p, *addr) {
                self.give_back(&p, now);
            }
        }
        Some((client, peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Clients "a" to "d" at 192.0.2.1 to .4 (port 1), in that order.
    fn insert_four(r: &mut Registry<&'static str>) -> [SocketAddr; 4] {
        let clients = ["a", "b", "c", "d"];
        std::array::from_fn(|i| {
            let x = addr(&format!("192.0.2.{}:1", i + 1));
            r.insert(x, clients[i]).unwrap();
            x
        })
    }

    fn registry(size: u8) -> Registry<&'static str> {
        Registry::new(AddressPool::new(
            Some((
                Ipv4Addr::new(10, 8, 0, 2),
                Ipv4Addr::new(10, 8, 0, 1 + size),
            )),
            None,
            false,
        ))
    }

    #[test]
    fn assigns_once_and_remove_frees_address_and_peer_id() {
        let mut r = registry(2);
        let (a, b, c) = (
            addr("192.0.2.1:1"),
            addr("192.0.2.2:1"),
            addr("192.0.2.3:1"),
        );
        assert_eq!(r.assign_peer(a, None, None), Err(AssignError::NoClient));
        r.insert(a, "a").unwrap();
        assert_eq!(r.insert(a, "again"), Err("again"));
        r.insert(b, "b").unwrap();
        r.insert(c, "c").unwrap();
        let pa = r.assign_peer(a, None, None).unwrap();
        assert_eq!(
            pa,
            Peer {
                id: 0,
                ip: Some(Ipv4Addr::new(10, 8, 0, 2)),
                slot: Some(0),
            }
        );
        assert_eq!(
            r.assign_peer(a, None, None),
            Ok(pa),
            "a second call keeps what was given"
        );
        let pb = r.assign_peer(b, None, None).unwrap();
        assert_eq!(pb.id, 1);
        assert_eq!(
            r.assign_peer(c, None, None),
            Err(AssignError::PoolExhausted)
        );
        assert_eq!(r.addr_of_peer(0), Some(a));

        assert_eq!(r.remove(&a, 1), Some(("a", Some(pa))));
        assert_eq!(r.addr_of_peer(0), None);
        assert_eq!(r.remove(&a, 1), None);
        // c now gets a's peer-id and address.
        assert_eq!(r.assign_peer(c, None, None), Ok(pa));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_pinned_address_stays_out_of_the_pool_until_its_last_holder_leaves() {
        let mut r = registry(2);
        let [a, b, c, d] = insert_four(&mut r);
        let pinned = Ipv4Addr::new(10, 8, 0, 2);
        assert_eq!(
            r.assign_peer(a, None, Some(pinned)).unwrap().ip,
            Some(pinned)
        );
        assert_eq!(
            r.assign_peer(b, None, None).unwrap().ip,
            Some(Ipv4Addr::new(10, 8, 0, 3))
        );
        assert_eq!(
            r.assign_peer(c, None, None),
            Err(AssignError::PoolExhausted)
        );
        // Outside the pool: handed out as given.
        let outside = Ipv4Addr::new(10, 8, 0, 200);
        assert_eq!(
            r.assign_peer(c, None, Some(outside)).unwrap().ip,
            Some(outside)
        );
        // The same pinned address twice (a DEFAULT file): both hold it.
        assert_eq!(
            r.assign_peer(d, None, Some(pinned)).unwrap().ip,
            Some(pinned)
        );
        assert_eq!(r.holders_of(pinned, d), [a]);
        r.remove(&a, 1);
        r.remove(&b, 2);
        // d still holds it: only b's address is free.
        r.insert(a, "a2").unwrap();
        assert_eq!(
            r.assign_peer(a, None, None).unwrap().ip,
            Some(Ipv4Addr::new(10, 8, 0, 3))
        );
        r.remove(&d, 3);
        r.insert(b, "b2").unwrap();
        assert_eq!(r.assign_peer(b, None, None).unwrap().ip, Some(pinned));
    }

    #[test]
    fn float_moves_everything_but_never_onto_another_client() {
        let mut r = registry(4);
        let (a, b, new) = (
            addr("192.0.2.1:1"),
            addr("192.0.2.2:1"),
            addr("198.51.100.7:9"),
        );
        r.insert(a, "a").unwrap();
        r.insert(b, "b").unwrap();
        let pa = r.assign_peer(a, None, None).unwrap();
        let pb = r.assign_peer(b, None, None).unwrap();

        assert_eq!(r.float(pa.id, b), None, "b's address is taken");
        assert_eq!(r.get(&b), Some(&"b"));
        assert_eq!(r.peer(&b), Some(pb));
        assert_eq!(r.addr_of_peer(pa.id), Some(a));

        assert_eq!(r.float(99, new), None, "no such peer");
        assert_eq!(r.float(pa.id, new), Some(a));
        assert_eq!(r.get(&a), None);
        assert_eq!(r.peer(&a), None);
        assert_eq!(r.get(&new), Some(&"a"));
        assert_eq!(r.peer(&new), Some(pa));
        assert_eq!(r.addr_of_peer(pa.id), Some(new));
        // Removing at the new address frees what the client had.
        assert_eq!(r.remove(&new, 4), Some(("a", Some(pa))));
        assert_eq!(r.addr_of_peer(pa.id), None);
    }

    /// An IPv6-only pool: clients hold entries without an IPv4 address;
    /// an `ifconfig-push` client holds its IPv4 address and no entry.
    #[test]
    fn ipv6_only_clients_hold_pool_entries_without_an_ipv4_address() {
        let range = super::super::pool::Ipv6Range {
            first: "fd00::1000".parse().unwrap(),
            size: 2,
        };
        let mut r: Registry<&str> = Registry::new(AddressPool::new(None, Some(range), false));
        let [a, b, c, d] = insert_four(&mut r);
        let pa = r.assign_peer(a, Some("a"), None).unwrap();
        assert_eq!((pa.ip, pa.slot), (None, Some(0)));
        assert_eq!(r.pool.ipv6(0), Some("fd00::1000".parse().unwrap()));
        let pinned = Ipv4Addr::new(10, 9, 0, 5);
        let pb = r.assign_peer(b, Some("b"), Some(pinned)).unwrap();
        assert_eq!((pb.ip, pb.slot), (Some(pinned), None));
        assert_eq!(r.assign_peer(c, Some("c"), None).unwrap().slot, Some(1));
        assert_eq!(
            r.assign_peer(d, Some("d"), None),
            Err(AssignError::PoolExhausted)
        );
        // Gone: its entry is free again (and remembered for a).
        r.remove(&a, 7);
        assert_eq!(r.assign_peer(d, Some("d"), None).unwrap().slot, Some(0));
        r.remove(&d, 8);
        // A client-connect ifconfig-push takes c off its entry (forgotten).
        let moved = r.set_address(c, Ipv4Addr::new(10, 9, 0, 6)).unwrap();
        assert_eq!(
            (moved.ip, moved.slot),
            (Some(Ipv4Addr::new(10, 9, 0, 6)), None)
        );
        assert_eq!(r.pool.save(), "d,,fd00::1000\n");
    }

    /// No pool at all (`ifconfig-ipv6` alone): every client is let in
    /// without an address from it (its client-config-dir file may give it
    /// one); an empty pool that exists is exhausted instead.
    #[test]
    fn without_any_pool_clients_hold_no_entry() {
        let mut r: Registry<&str> = Registry::new(AddressPool::new(None, None, false));
        let [a, b, ..] = insert_four(&mut r);
        let pa = r.assign_peer(a, Some("a"), None).unwrap();
        let pb = r.assign_peer(b, Some("b"), None).unwrap();
        assert_eq!((pa.ip, pa.slot, pb.ip, pb.slot), (None, None, None, None));
        assert_ne!(pa.id, pb.id);
        let mut empty = registry(0);
        let [a, ..] = insert_four(&mut empty);
        assert_eq!(
            empty.assign_peer(a, Some("a"), None),
            Err(AssignError::PoolExhausted)
        );
    }
}
