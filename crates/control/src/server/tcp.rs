//! Which TCP connections a server keeps before they authenticate. Pure:
//! the caller accepts, closes and reads the clock.
//!
//! A connection costs a socket and a small read buffer (control packets
//! only) until its client authenticates. The cost stays bounded: at most
//! [`PER_SOURCE`] unauthenticated connections per source address (more are
//! refused at once), at most `limit` in all (the oldest is closed to make
//! room, so a flood of idle connections cannot lock a good client out),
//! and each is closed when `hand-window` passes without authentication,
//! as 2.6 ends a TCP instance whose TLS handshake did not finish in time.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Unauthenticated connections one source address may hold.
pub const PER_SOURCE: usize = 8;

/// What to do with a new connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Accept {
    Keep,
    /// Keep it and close this older unauthenticated one.
    KeepClosing(SocketAddr),
    Refuse(&'static str),
}

/// The unauthenticated connections, oldest first.
#[derive(Debug)]
pub struct Pending {
    limit: usize,
    hand_window: Duration,
    /// Accept time by address, in accept order (closed ones are skipped lazily).
    order: VecDeque<(SocketAddr, Instant)>,
    open: HashMap<SocketAddr, Instant>,
    per_source: HashMap<IpAddr, usize>,
}

impl Pending {
    pub fn new(limit: usize, hand_window: Duration) -> Pending {
        Pending {
            limit: limit.max(1),
            hand_window,
            order: VecDeque::new(),
            open: HashMap::new(),
            per_source: HashMap::new(),
        }
    }

    /// A connection from `peer` was accepted at `now`.
    pub fn accept(&mut self, peer: SocketAddr, now: Instant) -> Accept {
        if self.per_source.get(&peer.ip()).copied().unwrap_or(0) >= PER_SOURCE {
            return Accept::Refuse("too many unauthenticated connections from this address");
        }
        let evicted = if self.open.len() >= self.limit {
            self.oldest()
        } else {
            None
        };
        if let Some(old) = evicted {
            self.remove(old);
        }
        self.open.insert(peer, now);
        self.order.push_back((peer, now));
        *self.per_source.entry(peer.ip()).or_default() += 1;
        match evicted {
            Some(old) => Accept::KeepClosing(old),
            None => Accept::Keep,
        }
    }

    /// Whether the connection from `peer` is still waiting to authenticate.
    pub fn contains(&self, peer: SocketAddr) -> bool {
        self.open.contains_key(&peer)
    }

    /// The connection's client authenticated (or it closed): it no longer counts.
    pub fn remove(&mut self, peer: SocketAddr) {
        if self.open.remove(&peer).is_none() {
            return;
        }
        if let Some(n) = self.per_source.get_mut(&peer.ip()) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&peer.ip());
            }
        }
        // Drop stale entries at the front so `order` stays short.
        while let Some(&(a, t)) = self.order.front() {
            if self.open.get(&a) == Some(&t) {
                break;
            }
            self.order.pop_front();
        }
    }

    /// Connections past `hand-window` at `now`; they are forgotten here,
    /// the caller closes them.
    pub fn expired(&mut self, now: Instant) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        while let Some(&(a, t)) = self.order.front() {
            if self.open.get(&a) != Some(&t) {
                self.order.pop_front();
                continue;
            }
            if now.saturating_duration_since(t) < self.hand_window {
                break;
            }
            self.remove(a);
            out.push(a);
        }
        out
    }

    fn oldest(&mut self) -> Option<SocketAddr> {
        while let Some(&(a, t)) = self.order.front() {
            if self.open.get(&a) == Some(&t) {
                return Some(a);
            }
            self.order.pop_front();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(ip: u8, port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, ip], port))
    }

    #[test]
    fn one_source_gets_a_few_connections_others_still_get_in() {
        let t = Instant::now();
        let mut p = Pending::new(100, Duration::from_secs(60));
        for port in 0..PER_SOURCE as u16 {
            assert_eq!(p.accept(addr(1, port), t), Accept::Keep);
        }
        assert!(matches!(p.accept(addr(1, 999), t), Accept::Refuse(_)));
        assert_eq!(p.accept(addr(2, 1), t), Accept::Keep);
        // An authenticated one frees its slot.
        p.remove(addr(1, 0));
        assert_eq!(p.accept(addr(1, 999), t), Accept::Keep);
        assert_eq!(p.open.len(), PER_SOURCE + 1);
    }

    #[test]
    fn a_full_table_closes_the_oldest_for_a_newcomer() {
        let t = Instant::now();
        let mut p = Pending::new(3, Duration::from_secs(60));
        for i in 1..=3 {
            assert_eq!(p.accept(addr(i, 1), t), Accept::Keep);
        }
        assert_eq!(p.accept(addr(9, 1), t), Accept::KeepClosing(addr(1, 1)));
        p.remove(addr(2, 1));
        assert_eq!(p.accept(addr(10, 1), t), Accept::Keep);
        assert_eq!(p.accept(addr(11, 1), t), Accept::KeepClosing(addr(3, 1)));
        assert_eq!(p.open.len(), 3);
    }

    #[test]
    fn connections_expire_after_hand_window_unless_authenticated() {
        let t = Instant::now();
        let hw = Duration::from_secs(60);
        let mut p = Pending::new(10, hw);
        p.accept(addr(1, 1), t);
        p.accept(addr(2, 1), t + Duration::from_secs(10));
        p.accept(addr(3, 1), t + Duration::from_secs(20));
        p.remove(addr(2, 1));
        assert!(p.expired(t + Duration::from_secs(59)).is_empty());
        assert_eq!(p.expired(t + hw + Duration::from_secs(5)), vec![addr(1, 1)]);
        assert_eq!(
            p.expired(t + hw + Duration::from_secs(20)),
            vec![addr(3, 1)]
        );
        assert!(p.open.is_empty());
        // The same address may come back later.
        assert_eq!(p.accept(addr(1, 1), t + hw * 2), Accept::Keep);
    }
}
