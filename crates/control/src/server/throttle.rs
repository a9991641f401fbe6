//! Limits on new connections, before anyone has authenticated:
//! `connect-freq` and `connect-freq-initial` with OpenVPN 2.6's exact
//! counting (whole seconds of Unix time), and the caps on half-open
//! sessions (cookie verified, certificate not yet shown).

/// `connect-freq N SEC`: at most N new sessions per SEC seconds (2.6's
/// `frequency_limit`: a window that restarts at the first event after it
/// ended). `SEC` 0 (the default) means no limit.
#[derive(Debug, Clone)]
pub struct ConnectFreq {
    max: u32,
    per: u64,
    n: u64,
    reset: u64,
}

impl ConnectFreq {
    pub fn new(max: u32, per: u32) -> Self {
        ConnectFreq {
            max,
            per: u64::from(per),
            n: 0,
            reset: 0,
        }
    }

    /// Count one new session at Unix second `now`; whether it is allowed.
    pub fn allow(&mut self, now: u64) -> bool {
        if self.per == 0 {
            return true;
        }
        if now >= self.reset.saturating_add(self.per) {
            self.reset = now;
            self.n = 0;
        }
        self.n += 1;
        self.n <= u64::from(self.max)
    }
}

/// `connect-freq-initial N SEC` (default 100 per 10 s): at most N answers
/// to initial resets per SEC seconds, so the server is no reflector. A
/// handshake that completes gives its answer back (2.6's `reflect_filter`).
#[derive(Debug, Clone)]
pub struct InitialReplies {
    max: u64,
    per: u64,
    count: u64,
    last_reset: u64,
    warned: bool,
}

/// The answer for one reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Allowed,
    /// Over the limit; `first` for the first drop of this period (log it).
    Dropped {
        first: bool,
    },
}

impl InitialReplies {
    pub fn new(max: u32, per: u32) -> Self {
        InitialReplies {
            max: u64::from(max),
            per: u64::from(per),
            count: 0,
            last_reset: 0,
            warned: false,
        }
    }

    pub fn check(&mut self, now: u64) -> Reply {
        if now > self.last_reset.saturating_add(self.per) {
            self.last_reset = now;
            self.count = 0;
            self.warned = false;
        }
        self.count += 1;
        if self.count <= self.max {
            return Reply::Allowed;
        }
        let first = !self.warned;
        self.warned = true;
        Reply::Dropped { first }
    }

    /// A three-way handshake completed: its answer does not count.
    pub fn give_back(&mut self) {
        self.count = self.count.saturating_sub(1);
    }
}

/// At most this many half-open sessions from one IP address.
pub const HALF_OPEN_PER_IP: usize = 8;

/// At most this many half-open sessions in all: a quarter of
/// `max-clients`, but never fewer than twice what one address may hold, so
/// one address alone cannot fill the table.
pub fn half_open_cap(max_clients: usize) -> usize {
    (max_clients / 4).max(2 * HALF_OPEN_PER_IP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_freq_counts_per_window() {
        let mut f = ConnectFreq::new(2, 10);
        assert!(f.allow(100));
        assert!(f.allow(105));
        assert!(!f.allow(109));
        // The window started at 100 and ended at 110.
        assert!(f.allow(110));
        assert!(f.allow(110));
        assert!(!f.allow(119));
        assert!(f.allow(120));
    }

    #[test]
    fn connect_freq_zero_seconds_means_unlimited_and_zero_max_none() {
        let mut off = ConnectFreq::new(0, 0);
        assert!((0..1000).all(|t| off.allow(t)));
        let mut none = ConnectFreq::new(0, 10);
        assert!(!none.allow(5));
    }

    #[test]
    fn initial_replies_are_limited_and_completed_handshakes_give_back() {
        let mut r = InitialReplies::new(3, 10);
        assert_eq!(r.check(1000), Reply::Allowed);
        assert_eq!(r.check(1000), Reply::Allowed);
        assert_eq!(r.check(1001), Reply::Allowed);
        assert_eq!(r.check(1002), Reply::Dropped { first: true });
        assert_eq!(r.check(1003), Reply::Dropped { first: false });
        // Dropped resets count too (as in 2.6): three handshakes must
        // complete before another answer fits.
        r.give_back();
        r.give_back();
        assert_eq!(r.check(1004), Reply::Dropped { first: false });
        r.give_back();
        r.give_back();
        r.give_back();
        assert_eq!(r.check(1005), Reply::Allowed);
        assert_eq!(r.check(1010), Reply::Allowed);
        // 2.6 restarts the period only after more than SEC seconds.
        assert_eq!(r.check(1010), Reply::Dropped { first: false });
        assert_eq!(r.check(1011), Reply::Allowed);
    }

    #[test]
    fn the_default_allows_a_hundred_answers_per_ten_seconds() {
        let mut r = InitialReplies::new(100, 10);
        let allowed = (0..1000)
            .filter(|i| r.check(50 + i / 100) == Reply::Allowed)
            .count();
        // Seconds 50..=60 are one period; 61 starts the next.
        assert_eq!(allowed, 100);
        assert_eq!(r.check(61), Reply::Allowed);
    }

    #[test]
    fn one_address_cannot_fill_the_half_open_table() {
        assert_eq!(half_open_cap(4), 16);
        assert_eq!(half_open_cap(1024), 256);
        assert!(half_open_cap(1) > HALF_OPEN_PER_IP);
    }
}
