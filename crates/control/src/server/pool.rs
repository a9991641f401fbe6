//! The tunnel address pool: which addresses of the `server` range are in
//! use, and (with `ifconfig-pool-persist`) which common name had which
//! address, so a client gets its address back. Pure: the runtime reads and
//! writes the persist file; this only turns it into state and back.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use crate::pool_persist;

pub struct AddressPool {
    start: u32,
    end: u32,
    used: HashSet<Ipv4Addr>,
    /// Common name → address, from the persist file and every assignment
    /// since. Only kept with `ifconfig-pool-persist`.
    remembered: HashMap<String, Ipv4Addr>,
    remember: bool,
}

impl AddressPool {
    /// The inclusive range `first..=last`; `remember` with `ifconfig-pool-persist`.
    pub fn new(first: Ipv4Addr, last: Ipv4Addr, remember: bool) -> Self {
        AddressPool {
            start: u32::from(first),
            end: u32::from(last),
            used: HashSet::new(),
            remembered: HashMap::new(),
            remember,
        }
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        (self.start..=self.end).contains(&u32::from(ip))
    }

    fn all(&self) -> impl Iterator<Item = Ipv4Addr> + use<> {
        (self.start..=self.end).map(Ipv4Addr::from)
    }

    /// Take a free address for a client: the one its common name had, if it
    /// is free; else one nobody is remembered with; else any free one.
    /// `None` when the pool is exhausted.
    pub fn pick(&mut self, cn: Option<&str>) -> Option<Ipv4Addr> {
        let ip = cn
            .and_then(|cn| self.remembered.get(cn))
            .copied()
            .filter(|&ip| self.contains(ip) && !self.used.contains(&ip))
            .or_else(|| {
                let kept: HashSet<&Ipv4Addr> = self.remembered.values().collect();
                self.all()
                    .find(|ip| !self.used.contains(ip) && !kept.contains(ip))
            })
            .or_else(|| self.all().find(|ip| !self.used.contains(ip)))?;
        self.used.insert(ip);
        if let Some(cn) = cn.filter(|_| self.remember) {
            // An address belongs to one common name at a time: the newest
            // holder takes it over.
            self.remembered
                .retain(|other, old| other == cn || *old != ip);
            self.remembered.insert(cn.to_owned(), ip);
        }
        Some(ip)
    }

    /// Keep `ip` (an `ifconfig-push` address) from being handed out while a
    /// client holds it; not remembered for anyone. No effect outside the range.
    pub fn reserve(&mut self, ip: Ipv4Addr) {
        if self.contains(ip) {
            self.used.insert(ip);
        }
    }

    /// Give an address back (it stays remembered for its common name).
    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }

    /// Replace what is remembered with a persist file's text. Returns how
    /// many entries were loaded and how many lines were skipped as malformed.
    pub fn load(&mut self, text: &str) -> (usize, usize) {
        let (entries, skipped) = pool_persist::parse(text);
        self.remembered = entries;
        (self.remembered.len(), skipped)
    }

    /// The persist file's text for what is remembered.
    pub fn save(&self) -> String {
        pool_persist::render(&self.remembered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 8, 0, last)
    }

    #[test]
    fn hands_out_each_address_once_until_released() {
        let mut p = AddressPool::new(ip(2), ip(4), false);
        assert_eq!(p.pick(Some("a")), Some(ip(2)));
        assert_eq!(p.pick(None), Some(ip(3)));
        assert_eq!(p.pick(Some("c")), Some(ip(4)));
        assert_eq!(p.pick(Some("d")), None, "the pool is exhausted");
        p.release(ip(3));
        assert_eq!(p.pick(Some("d")), Some(ip(3)));
        assert_eq!(p.pick(None), None);
    }

    #[test]
    fn a_reserved_address_is_not_handed_out_nor_remembered() {
        let mut p = AddressPool::new(ip(2), ip(3), true);
        p.reserve(ip(2));
        p.reserve(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(p.pick(Some("a")), Some(ip(3)));
        assert_eq!(p.pick(Some("b")), None);
        p.release(ip(2));
        assert_eq!(p.pick(Some("b")), Some(ip(2)));
        assert_eq!(p.save(), "a,10.8.0.3,\nb,10.8.0.2,\n");
    }

    #[test]
    fn remembers_addresses_only_with_persist() {
        let mut plain = AddressPool::new(ip(2), ip(9), false);
        plain.pick(Some("a"));
        assert_eq!(plain.save(), "");

        let mut p = AddressPool::new(ip(2), ip(9), true);
        assert_eq!(p.pick(Some("a")), Some(ip(2)));
        assert_eq!(p.pick(Some("b")), Some(ip(3)));
        p.release(ip(2));
        // A newcomer does not take a's remembered address while others are free.
        assert_eq!(p.pick(Some("c")), Some(ip(4)));
        p.release(ip(3));
        // a comes back to its own address even though b's is free and lower.
        p.release(ip(2));
        assert_eq!(p.pick(Some("a")), Some(ip(2)));
        assert_eq!(p.save(), "a,10.8.0.2,\nb,10.8.0.3,\nc,10.8.0.4,\n");
    }

    #[test]
    fn remembered_addresses_are_used_when_nothing_else_is_free() {
        let mut p = AddressPool::new(ip(2), ip(3), true);
        p.load("a,10.8.0.2,\nb,10.8.0.3,\n");
        assert_eq!(p.pick(Some("c")), Some(ip(2)));
        // c took a's address over: a is no longer remembered with it.
        assert_eq!(p.save(), "b,10.8.0.3,\nc,10.8.0.2,\n");
        // a's entry is gone, and b's address is still free: a gets it.
        assert_eq!(p.pick(Some("a")), Some(ip(3)));
        assert_eq!(p.pick(Some("b")), None);
    }

    #[test]
    fn persist_round_trip_and_out_of_range_entries() {
        let mut p = AddressPool::new(ip(2), ip(9), true);
        assert_eq!(p.load("a,10.8.0.7,\nz,192.0.2.1,\nbad\n"), (2, 1));
        let text = p.save();
        let mut q = AddressPool::new(ip(2), ip(9), true);
        assert_eq!(q.load(&text), (2, 0));
        assert_eq!(q.save(), text);
        assert_eq!(q.pick(Some("a")), Some(ip(7)));
        // An address outside the range is never handed out.
        assert_eq!(q.pick(Some("z")), Some(ip(2)));
        // An address in use is not handed out twice, even to its owner.
        let mut r = AddressPool::new(ip(2), ip(9), true);
        r.load("a,10.8.0.7,\n");
        assert_eq!(r.pick(Some("b")), Some(ip(2)));
        assert_eq!(r.pick(Some("a")), Some(ip(7)));
        assert_eq!(r.pick(Some("a")), Some(ip(3)));
    }
}
