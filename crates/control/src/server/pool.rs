//! The tunnel address pool, with 2.6's rules (pool.c): every address
//! remembers the common name that last held it and when it was given back,
//! with or without `ifconfig-pool-persist`; a client gets the address its
//! common name last held if that is free, else the free address given back
//! longest ago (one never used counts as given back at time 0), the lowest
//! address on a tie. With `duplicate-cn`, simply the lowest free address,
//! and no name is remembered. Pure: the caller passes the clock (whole
//! seconds, as 2.6's `now`; two releases in the same second tie) and reads
//! and writes the persist file; this only turns it into state and back.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::pool_persist::{self, PersistEntry};

/// One pool address, as 2.6's `ifconfig_pool_entry`.
#[derive(Debug, Clone, Default)]
struct Entry {
    in_use: bool,
    /// The common name that holds or last held it.
    common_name: Option<String>,
    /// When it was last given back (0: never used, or forgotten).
    last_release: u64,
    /// From a read-only persist file (`ifconfig-pool-persist FILE 0`): only
    /// its common name gets it.
    fixed: bool,
}

/// A pool's IPv6 addresses: `first` and how many follow it (2.6's
/// `ifconfig-ipv6-pool` base and size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Range {
    pub first: Ipv6Addr,
    pub size: u32,
}

/// 2.6's one pool: entry `n` is the n-th IPv4 address and the n-th IPv6
/// address of whichever families the server has (IPv4 only, IPv6 only for
/// `server-ipv6` alone or `server ... nopool` + `ifconfig-ipv6-pool`, or
/// both paired). A client holds an entry, by its index.
pub struct AddressPool {
    ipv4_start: Option<u32>,
    ipv6: Option<Ipv6Range>,
    entries: Vec<Entry>,
    duplicate_cn: bool,
    /// Offsets of addresses held by `ifconfig-push` clients. 2.6 would hand
    /// them out again; ferrovpn keeps them out of the pool while held and
    /// leaves their entries (name, release time) as they were.
    reserved: HashSet<usize>,
}

impl AddressPool {
    /// A pool over the inclusive IPv4 range `first..=last` (empty if
    /// `last < first`) and/or the IPv6 range; with both, the smaller one
    /// sizes it (2.6's pool.c). `duplicate_cn` as the server's `duplicate-cn`.
    pub fn new(
        ipv4: Option<(Ipv4Addr, Ipv4Addr)>,
        ipv6: Option<Ipv6Range>,
        duplicate_cn: bool,
    ) -> Self {
        let ipv4_size = ipv4.map(|(first, last)| {
            let (start, end) = (u32::from(first), u32::from(last));
            if end >= start {
                (end - start) as usize + 1
            } else {
                0
            }
        });
        let ipv6_size = ipv6.map(|r| r.size as usize);
        let size = match (ipv4_size, ipv6_size) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(0),
        };
        AddressPool {
            ipv4_start: ipv4.map(|(first, _)| u32::from(first)),
            ipv6,
            entries: vec![Entry::default(); size],
            duplicate_cn,
            reserved: HashSet::new(),
        }
    }

    /// The entry of IPv4 address `ip`, if the pool has IPv4 and it is in range.
    pub fn index_of_ipv4(&self, ip: Ipv4Addr) -> Option<usize> {
        let i = u32::from(ip).checked_sub(self.ipv4_start?)? as usize;
        (i < self.entries.len()).then_some(i)
    }

    /// The entry of IPv6 address `ip`, if the pool has IPv6 and it is in range.
    fn index_of_ipv6(&self, ip: Ipv6Addr) -> Option<usize> {
        let first = u128::from(self.ipv6?.first);
        let i = usize::try_from(u128::from(ip).checked_sub(first)?).ok()?;
        (i < self.entries.len()).then_some(i)
    }

    /// Entry `i`'s IPv4 address (`None` in an IPv6-only pool).
    pub fn ipv4(&self, i: usize) -> Option<Ipv4Addr> {
        let start = self.ipv4_start?;
        (i < self.entries.len()).then(|| Ipv4Addr::from(start + i as u32))
    }

    /// Entry `i`'s IPv6 address (`None` in an IPv4-only pool).
    pub fn ipv6(&self, i: usize) -> Option<Ipv6Addr> {
        let first = self.ipv6?.first;
        (i < self.entries.len()).then(|| Ipv6Addr::from(u128::from(first) + i as u128))
    }

    fn is_free(&self, i: usize) -> bool {
        !self.entries[i].in_use && !self.reserved.contains(&i)
    }

    /// Which free address `cn` gets, as 2.6's `ifconfig_pool_find`.
    fn find(&self, cn: Option<&str>) -> Option<usize> {
        let mut free = (0..self.entries.len()).filter(|&i| self.is_free(i));
        if self.duplicate_cn {
            return free.next();
        }
        let mut released_earliest: Option<usize> = None;
        let mut previous: Option<usize> = None;
        for i in free {
            let e = &self.entries[i];
            if !e.fixed
                && released_earliest.is_none_or(|b| e.last_release < self.entries[b].last_release)
            {
                released_earliest = Some(i);
            }
            if previous.is_none() && cn.is_some() && e.common_name.as_deref() == cn {
                previous = Some(i);
            }
        }
        previous.or(released_earliest)
    }

    /// Whether there is a pool at all (IPv4, IPv6 or both), empty or not.
    pub fn is_configured(&self) -> bool {
        self.ipv4_start.is_some() || self.ipv6.is_some()
    }

    /// Take a free entry for a client with common name `cn` (2.6's
    /// `ifconfig_pool_acquire`); its addresses are [`Self::ipv4`] and
    /// [`Self::ipv6`]. `None` when the pool is exhausted.
    pub fn acquire(&mut self, cn: Option<&str>) -> Option<usize> {
        let i = self.find(cn)?;
        let remembered = if self.duplicate_cn { None } else { cn };
        let e = &mut self.entries[i];
        e.in_use = true;
        e.common_name = remembered.map(str::to_owned);
        e.last_release = 0;
        Some(i)
    }

    /// Keep `ip` (an `ifconfig-push` address) from being handed out while a
    /// client holds it; its entry is left alone. No effect outside the range.
    pub fn reserve(&mut self, ip: Ipv4Addr) {
        if let Some(i) = self.index_of_ipv4(ip) {
            self.reserved.insert(i);
        }
    }

    /// Give entry `i` back at `now` (2.6's soft release when a client goes):
    /// it stays remembered for its common name. A reserved entry is only
    /// unreserved.
    pub fn release(&mut self, i: usize, now: u64) {
        if i >= self.entries.len() {
            return;
        }
        self.reserved.remove(&i);
        let e = &mut self.entries[i];
        if e.in_use {
            e.in_use = false;
            e.last_release = now;
        }
    }

    /// [`Self::release`] by IPv4 address (a pool one or a reserved one).
    pub fn release_ipv4(&mut self, ip: Ipv4Addr, now: u64) {
        if let Some(i) = self.index_of_ipv4(ip) {
            self.release(i, now);
        }
    }

    /// Give entry `i` back and forget who had it (2.6's hard release, when
    /// an `ifconfig-push` replaces the pool address a client was given): it
    /// counts as never used. A reserved entry is only unreserved.
    pub fn forget(&mut self, i: usize) {
        if i >= self.entries.len() || self.reserved.remove(&i) {
            return;
        }
        let e = &mut self.entries[i];
        e.in_use = false;
        e.common_name = None;
        e.last_release = 0;
    }

    /// [`Self::forget`] by IPv4 address.
    pub fn forget_ipv4(&mut self, ip: Ipv4Addr) {
        if let Some(i) = self.index_of_ipv4(ip) {
            self.forget(i);
        }
    }

    /// Apply a persist file's text at `now`, line by line as 2.6's
    /// `ifconfig_pool_read`: each address named gets the line's common name,
    /// counts as given back at `now`, and is `fixed` (for that name only)
    /// with a read-only file. A line's IPv4 address decides its entry, its
    /// IPv6 address when it has no IPv4 one in the pool (2.6 warns when
    /// both name different entries and uses the IPv4 one). Addresses in use
    /// and out of range are left alone. Returns how many lines were
    /// applied and how many skipped.
    pub fn load(&mut self, text: &str, now: u64, fixed: bool) -> (usize, usize) {
        let (lines, mut skipped) = pool_persist::parse(text);
        let mut applied = 0;
        for line in lines {
            let index = (line.ipv4.and_then(|ip| self.index_of_ipv4(ip)))
                .or_else(|| line.ipv6.and_then(|ip| self.index_of_ipv6(ip)));
            match index.filter(|&i| !self.entries[i].in_use) {
                Some(i) => {
                    self.entries[i] = Entry {
                        in_use: false,
                        common_name: Some(line.common_name),
                        last_release: now,
                        fixed,
                    };
                    applied += 1;
                }
                None => skipped += 1,
            }
        }
        (applied, skipped)
    }

    /// The persist file's text: every address that has a common name, in
    /// address order (2.6's `ifconfig_pool_list`: `CN,IPv4,IPv6`, a family
    /// the pool lacks left empty).
    pub fn save(&self) -> String {
        let entries: Vec<PersistEntry> = (self.entries.iter().enumerate())
            .filter_map(|(i, e)| {
                Some(PersistEntry {
                    common_name: e.common_name.clone()?,
                    ipv4: self.ipv4(i),
                    ipv6: self.ipv6(i),
                })
            })
            .collect();
        pool_persist::render(&entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 8, 0, last)
    }

    fn v4pool(first: Ipv4Addr, last: Ipv4Addr, duplicate_cn: bool) -> AddressPool {
        AddressPool::new(Some((first, last)), None, duplicate_cn)
    }

    impl AddressPool {
        /// The IPv4 address of the entry `cn` gets.
        fn pick(&mut self, cn: Option<&str>) -> Option<Ipv4Addr> {
            let i = self.acquire(cn)?;
            self.ipv4(i)
        }
    }

    #[test]
    fn hands_out_each_address_once_until_released() {
        let mut p = v4pool(ip(2), ip(4), false);
        assert_eq!(p.pick(Some("a")), Some(ip(2)));
        assert_eq!(p.pick(None), Some(ip(3)));
        assert_eq!(p.pick(Some("c")), Some(ip(4)));
        assert_eq!(p.pick(Some("d")), None, "the pool is exhausted");
        p.release_ipv4(ip(3), 100);
        assert_eq!(p.pick(Some("d")), Some(ip(3)));
        assert_eq!(p.pick(None), None);
        // Out of range or reversed: nothing happens, nothing is handed out.
        p.release_ipv4(Ipv4Addr::new(192, 0, 2, 1), 101);
        p.forget_ipv4(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(v4pool(ip(4), ip(2), false).pick(Some("a")), None);
    }

    /// The sequence `pool_interop` runs against the stock 2.6.3 server
    /// (`ifconfig-pool 10.8.0.2 10.8.0.4`, CNs client1..client4, each
    /// release in a later second than the one before), with the addresses
    /// stock gave.
    #[test]
    fn stock_sequence_without_persist() {
        let mut p = v4pool(ip(2), ip(4), false);
        assert_eq!(p.pick(Some("client1")), Some(ip(2)));
        assert_eq!(p.pick(Some("client2")), Some(ip(3)));
        assert_eq!(p.pick(Some("client3")), Some(ip(4)));
        p.release_ipv4(ip(4), 1001); // client3 goes
        p.release_ipv4(ip(3), 1002); // client2 goes
        p.release_ipv4(ip(2), 1003); // client1 goes
        // client2 comes back to its own address: not the lowest free one
        // (client1's), not the one given back longest ago (client3's).
        assert_eq!(p.pick(Some("client2")), Some(ip(3)));
        // A newcomer gets the address given back longest ago.
        assert_eq!(p.pick(Some("client4")), Some(ip(4)));
        // client3's address went to client4: client3 gets what is left,
        // client1's, which then forgets client1.
        assert_eq!(p.pick(Some("client3")), Some(ip(2)));
        p.release_ipv4(ip(4), 1004); // client4 goes
        assert_eq!(p.pick(Some("client1")), Some(ip(4)));
    }

    #[test]
    fn a_never_used_address_comes_before_a_released_one() {
        let mut p = v4pool(ip(2), ip(5), false);
        assert_eq!(p.pick(Some("a")), Some(ip(2)));
        assert_eq!(p.pick(Some("b")), Some(ip(3)));
        p.release_ipv4(ip(2), 10);
        assert_eq!(p.pick(Some("c")), Some(ip(4)));
        assert_eq!(p.pick(Some("d")), Some(ip(5)));
        // Only a's is left: a newcomer takes it over.
        assert_eq!(p.pick(Some("e")), Some(ip(2)));
        p.release_ipv4(ip(2), 11);
        p.release_ipv4(ip(5), 11);
        // Released in the same second: the lower address first.
        assert_eq!(p.pick(Some("f")), Some(ip(2)));
        // a was forgotten when e took its address.
        assert_eq!(p.pick(Some("a")), Some(ip(5)));
        assert_eq!(
            p.save(),
            "f,10.8.0.2,\nb,10.8.0.3,\nc,10.8.0.4,\na,10.8.0.5,\n"
        );
    }

    #[test]
    fn duplicate_cn_takes_the_lowest_free_address_and_remembers_nobody() {
        let mut p = v4pool(ip(2), ip(5), true);
        assert_eq!(p.pick(Some("a")), Some(ip(2)));
        assert_eq!(p.pick(Some("a")), Some(ip(3)));
        assert_eq!(p.pick(Some("b")), Some(ip(4)));
        p.release_ipv4(ip(4), 10);
        p.release_ipv4(ip(2), 20);
        assert_eq!(p.pick(Some("b")), Some(ip(2)));
        assert_eq!(p.save(), "");
        // Persisted names do not matter either, fixed or not.
        let mut q = v4pool(ip(2), ip(5), true);
        q.load("b,10.8.0.4,\na,10.8.0.2,\n", 5, true);
        assert_eq!(q.pick(Some("b")), Some(ip(2)));
    }

    #[test]
    fn forget_makes_an_address_as_good_as_new() {
        // 2.6 hands a client with an ifconfig-push the pool address first
        // and then releases it hard: its name and release time are gone.
        let mut p = v4pool(ip(2), ip(4), false);
        assert_eq!(p.pick(Some("a")), Some(ip(2)));
        assert_eq!(p.pick(Some("b")), Some(ip(3)));
        p.release_ipv4(ip(3), 10);
        p.release_ipv4(ip(2), 20);
        assert_eq!(p.pick(Some("b")), Some(ip(3)));
        p.forget_ipv4(ip(3));
        assert_eq!(
            p.pick(Some("c")),
            Some(ip(3)),
            "forgotten counts as never used"
        );
        assert_eq!(p.pick(Some("b")), Some(ip(4)));
        assert_eq!(p.pick(Some("a")), Some(ip(2)));
    }

    #[test]
    fn a_reserved_address_is_not_handed_out_and_keeps_its_entry() {
        let mut p = v4pool(ip(2), ip(3), false);
        assert_eq!(p.pick(Some("a")), Some(ip(2)));
        p.release_ipv4(ip(2), 10);
        p.reserve(ip(2));
        p.reserve(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(p.pick(Some("a")), Some(ip(3)));
        assert_eq!(p.pick(Some("b")), None);
        p.release_ipv4(ip(2), 30);
        // Unreserved: still remembered as a's, released at 10.
        assert_eq!(p.save(), "a,10.8.0.2,\na,10.8.0.3,\n");
        p.release_ipv4(ip(3), 20);
        // a holds two entries: the lower one is its own.
        assert_eq!(p.pick(Some("a")), Some(ip(2)));
        assert_eq!(p.pick(Some("b")), Some(ip(3)));
        // forget on a reserved address only unreserves it.
        p.release_ipv4(ip(3), 50);
        p.reserve(ip(3));
        p.forget_ipv4(ip(3));
        assert_eq!(p.save(), "a,10.8.0.2,\nb,10.8.0.3,\n");
    }

    #[test]
    fn persisted_addresses_go_to_their_names_and_to_others_last() {
        let mut p = v4pool(ip(2), ip(9), false);
        assert_eq!(
            p.load(
                "a,10.8.0.7,\nz,192.0.2.1,\nbad\nb,10.8.0.2,\nc,10.8.0.2,\n",
                100,
                false
            ),
            (3, 2)
        );
        // A later line for the same address wins: b is not remembered.
        assert_eq!(p.save(), "c,10.8.0.2,\na,10.8.0.7,\n");
        assert_eq!(p.pick(Some("b")), Some(ip(3)));
        assert_eq!(p.pick(Some("a")), Some(ip(7)));
        // An address in use is not handed out twice, even to its owner.
        assert_eq!(p.pick(Some("a")), Some(ip(4)));
        let text = p.save();
        let mut q = v4pool(ip(2), ip(9), false);
        assert_eq!(q.load(&text, 200, false), (4, 0));
        assert_eq!(q.save(), text);
        // Newcomers use never-used addresses first, then persisted ones.
        for last in [5, 6, 8, 9] {
            assert_eq!(q.pick(Some("new")), Some(ip(last)));
        }
        assert_eq!(q.pick(Some("newer")), Some(ip(2)));
    }

    #[test]
    fn a_read_only_persist_file_keeps_its_addresses_for_their_names() {
        let mut p = v4pool(ip(2), ip(3), false);
        p.load("a,10.8.0.2,\n", 100, true);
        assert_eq!(p.pick(Some("b")), Some(ip(3)));
        assert_eq!(p.pick(Some("c")), None, "a's fixed address is not for c");
        assert_eq!(p.pick(Some("a")), Some(ip(2)));
        p.release_ipv4(ip(2), 200);
        p.release_ipv4(ip(3), 150);
        // Still fixed after a used it.
        assert_eq!(p.pick(Some("c")), Some(ip(3)));
        assert_eq!(p.pick(Some("d")), None);
    }

    fn v6(text: &str) -> Ipv6Addr {
        text.parse().unwrap()
    }

    /// `server-ipv6` alone (or `server ... nopool` + `ifconfig-ipv6-pool`):
    /// entries carry IPv6 addresses only, with 2.6's pool rules, and the
    /// persist file's lines are `CN,,IPv6`.
    #[test]
    fn an_ipv6_only_pool_hands_out_ipv6_addresses() {
        let range = Ipv6Range {
            first: v6("fd00::1000"),
            size: 3,
        };
        let mut p = AddressPool::new(None, Some(range), false);
        let a = p.acquire(Some("a")).unwrap();
        let b = p.acquire(Some("b")).unwrap();
        assert_eq!((p.ipv4(a), p.ipv6(a)), (None, Some(v6("fd00::1000"))));
        assert_eq!(p.ipv6(b), Some(v6("fd00::1001")));
        assert_eq!(p.ipv6(3), None, "past the end");
        assert_eq!(p.index_of_ipv4(ip(2)), None);
        // Reserving an IPv4 address (an ifconfig-push pin) touches nothing.
        p.reserve(ip(2));
        p.release(a, 10);
        assert_eq!(p.save(), "a,,fd00::1000\nb,,fd00::1001\n");
        // A persist file names its entries by IPv6 address (an IPv4 one, or
        // one out of range, is skipped).
        let mut q = AddressPool::new(None, Some(range), false);
        assert_eq!(
            q.load("b,,fd00::1002\nc,10.8.0.2,\nd,,fd00::9\n", 5, false),
            (1, 2)
        );
        assert_eq!(
            q.acquire(Some("b")).and_then(|i| q.ipv6(i)),
            Some(v6("fd00::1002"))
        );
        assert_eq!(
            q.acquire(Some("x")).and_then(|i| q.ipv6(i)),
            Some(v6("fd00::1000"))
        );
    }

    /// Both families: one entry pairs the n-th IPv4 and IPv6 addresses, the
    /// smaller range sizes the pool, and the file holds both (2.6's format).
    #[test]
    fn a_dual_stack_pool_pairs_and_persists_both_families() {
        let range = Ipv6Range {
            first: v6("fd00::1000"),
            size: 2,
        };
        let mut p = AddressPool::new(Some((ip(2), ip(9))), Some(range), false);
        let a = p.acquire(Some("a")).unwrap();
        let b = p.acquire(Some("b")).unwrap();
        assert_eq!(p.acquire(Some("c")), None, "the IPv6 range limits it");
        assert_eq!(
            (p.ipv4(b), p.ipv6(b)),
            (Some(ip(3)), Some(v6("fd00::1001")))
        );
        p.release(a, 1);
        assert_eq!(p.save(), "a,10.8.0.2,fd00::1000\nb,10.8.0.3,fd00::1001\n");
        // The IPv4 address decides; the IPv6 one only stands in for it.
        let mut q = AddressPool::new(Some((ip(2), ip(9))), Some(range), false);
        assert_eq!(
            q.load("a,10.8.0.3,fd00::1000\nb,,fd00::1000\n", 5, false),
            (2, 0)
        );
        assert_eq!(q.save(), "b,10.8.0.2,fd00::1000\na,10.8.0.3,fd00::1001\n");
    }
}
