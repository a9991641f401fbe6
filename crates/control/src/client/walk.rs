//! How the client walks its connection list, as OpenVPN 2.6 does it
//! (init.c `next_connection_entry`, `socket_restart_pause`); pure, the
//! caller sleeps and connects.
//!
//! - Each attempt that ends moves on to the next entry, and counts as one
//!   unsuccessful attempt; a connection that came up ("Initialization
//!   Sequence Completed") clears the count, and the next attempt after it
//!   stays on the same entry.
//! - Before every attempt but the first the client pauses: the ended
//!   entry's `connect-retry` seconds (10 with `auth-retry nointeract`);
//!   after five rounds of the whole list without success the pause doubles
//!   per round, up to the entry's `connect-retry` MAX.
//! - `connect-retry-max N`: once every entry failed N times in a row, exit.

use std::time::Duration;

/// The walk over `len` entries.
#[derive(Debug, Clone)]
pub struct Walk {
    /// Entry indices in the order they are tried (`remote-random` shuffles
    /// it once at start).
    order: Vec<usize>,
    /// Position in `order` of the entry in use; `None` before the first.
    current: Option<usize>,
    unsuccessful: u32,
    /// The last attempt came up: try the same entry again.
    no_advance: bool,
    retry_max: Option<u32>,
    /// Times the walk went past the end of the list since the last
    /// [`Walk::next_entry`] (`remote SKIP` past every entry twice is fatal).
    wraps: u32,
}

/// `connect-retry-max` was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GiveUp {
    pub retry_max: u32,
}

impl std::fmt::Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "All connections have been connect-retry-max ({}) times unsuccessful, exiting",
            self.retry_max
        )
    }
}

impl Walk {
    /// `order` holds each entry index once (at least one).
    pub fn new(order: Vec<usize>, connect_retry_max: Option<u32>) -> Walk {
        Walk {
            order,
            current: None,
            unsuccessful: 0,
            no_advance: false,
            retry_max: connect_retry_max.filter(|&n| n > 0),
            wraps: 0,
        }
    }

    /// The position (from 1) of the entry in use in the connection list as
    /// walked (after `remote-random`), as 2.6 numbers `>PROXY:N`.
    pub fn position(&self) -> usize {
        self.current.map_or(0, |p| p + 1)
    }

    /// `remote SKIP n`: the entry `n` places on (2.6 counts each skipped
    /// one as an unsuccessful attempt). Going past the end of the list a
    /// second time since the last [`Walk::next_entry`] ends the walk, as
    /// 2.6 ends with "No usable connection profiles are present".
    pub fn skip(&mut self, n: u32) -> Result<usize, String> {
        self.no_advance = false;
        self.step(n.max(1));
        if self.wraps >= 2 {
            return Err("No usable connection profiles are present".into());
        }
        self.check_retry_max().map_err(|g| g.to_string())
    }

    /// Move `n` entries on, counting them as unsuccessful and noting a
    /// pass over the end of the list.
    fn step(&mut self, n: u32) {
        self.unsuccessful = self.unsuccessful.saturating_add(n);
        let len = self.order.len().max(1);
        let next = match self.current {
            Some(p) => p + n as usize,
            None => n as usize - 1,
        };
        if next >= len {
            self.wraps += 1;
        }
        self.current = Some(next % len);
    }

    fn check_retry_max(&self) -> Result<usize, GiveUp> {
        if let Some(max) = self.retry_max
            && self.unsuccessful > self.len().saturating_mul(max)
        {
            return Err(GiveUp { retry_max: max });
        }
        let pos = self.current.unwrap_or(0);
        Ok(self.order.get(pos).copied().unwrap_or(0))
    }

    fn len(&self) -> u32 {
        u32::try_from(self.order.len()).unwrap_or(u32::MAX).max(1)
    }

    /// The entry to try now, or the end of the walk.
    pub fn next_entry(&mut self) -> Result<usize, GiveUp> {
        self.wraps = 0;
        if self.current.is_some() && self.no_advance {
            self.no_advance = false;
        } else {
            self.step(1);
        }
        self.check_retry_max()
    }

    /// The connection came up.
    pub fn connected(&mut self) {
        self.unsuccessful = 0;
        self.no_advance = true;
    }

    /// The pause before the next attempt, after an attempt on an entry with
    /// `connect-retry RETRY MAX` ended.
    pub fn pause(&self, retry: Duration, max: Duration, auth_nointeract: bool) -> Duration {
        let mut secs = if auth_nointeract { 10 } else { retry.as_secs() };
        let rounds = self.unsuccessful / self.len();
        if let Some(backoff) = rounds.checked_sub(4).filter(|&b| b > 0) {
            secs = secs.max(1) << backoff.min(15);
        }
        Duration::from_secs(secs.min(max.as_secs()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn skips_move_on_and_end_after_two_passes() {
        let mut w = Walk::new(vec![0, 1, 2], None);
        assert_eq!(w.next_entry(), Ok(0));
        assert_eq!(w.position(), 1);
        assert_eq!(w.skip(1), Ok(1));
        assert_eq!(w.skip(2), Ok(0));
        assert_eq!(w.position(), 1);
        // Past the end a second time since the attempt began: fatal.
        assert_eq!(w.skip(2), Ok(2));
        assert!(w.skip(1).is_err());
        // A new attempt starts counting again; skipped entries count as
        // unsuccessful attempts for connect-retry-max.
        let mut w = Walk::new(vec![0, 1], Some(1));
        assert_eq!(w.next_entry(), Ok(0));
        assert_eq!(w.skip(1), Ok(1));
        assert!(w.skip(1).is_err());
    }

    #[test]
    fn entries_in_order_then_around() {
        let mut w = Walk::new(vec![0, 1, 2], None);
        let tried: Vec<_> = (0..7).map(|_| w.next_entry().unwrap()).collect();
        assert_eq!(tried, [0, 1, 2, 0, 1, 2, 0]);
        let mut w = Walk::new(vec![2, 0, 1], None);
        assert_eq!(w.next_entry(), Ok(2));
        assert_eq!(w.next_entry(), Ok(0));
    }

    #[test]
    fn a_connection_that_came_up_stays_on_its_entry() {
        let mut w = Walk::new(vec![0, 1], None);
        assert_eq!(w.next_entry(), Ok(0));
        assert_eq!(w.next_entry(), Ok(1));
        w.connected();
        // ping-restart: the same entry again, without counting a failure.
        assert_eq!(w.next_entry(), Ok(1));
        assert_eq!(w.pause(secs(5), secs(300), false), secs(5));
        // That one failed: move on.
        assert_eq!(w.next_entry(), Ok(0));
    }

    #[test]
    fn connect_retry_max_counts_every_entry() {
        // 2.6: exit when unsuccessful attempts exceed len * N.
        let mut w = Walk::new(vec![0, 1], Some(2));
        for expect in [0, 1, 0, 1] {
            assert_eq!(w.next_entry(), Ok(expect));
        }
        assert_eq!(w.next_entry(), Err(GiveUp { retry_max: 2 }));
        let mut w = Walk::new(vec![0], Some(1));
        assert_eq!(w.next_entry(), Ok(0));
        w.connected();
        // The reconnect after it does not count; its failure does.
        assert_eq!(w.next_entry(), Ok(0));
        assert_eq!(w.next_entry(), Ok(0));
        assert_eq!(w.next_entry(), Err(GiveUp { retry_max: 1 }));
    }

    #[test]
    fn pause_doubles_after_five_rounds_up_to_max() {
        let mut w = Walk::new(vec![0, 1], None);
        let mut pauses = Vec::new();
        for _ in 0..16 {
            w.next_entry().unwrap();
            pauses.push(w.pause(secs(5), secs(60), false).as_secs());
        }
        // Attempts 1..=9 pause 5 s (rounds 0..4), then 10, 10, 20, 20, 40, 40, 60.
        assert_eq!(
            pauses,
            [5, 5, 5, 5, 5, 5, 5, 5, 5, 10, 10, 20, 20, 40, 40, 60]
        );
        // connect-retry 0 still doubles from 1 s.
        let mut w = Walk::new(vec![0], None);
        for _ in 0..6 {
            w.next_entry().unwrap();
        }
        assert_eq!(w.pause(secs(0), secs(300), false), secs(4));
        // auth-retry nointeract pauses 10 s.
        assert_eq!(
            Walk::new(vec![0], None).pause(secs(1), secs(300), true),
            secs(10)
        );
    }
}
