//! The wait between connection attempts: `connect-retry N MAX` doubles from N
//! up to MAX, a connection that came up starts again from N, and
//! `connect-retry-max` gives up after that many failures in a row.

use std::time::Duration;

/// Reconnect policy; pure, the caller sleeps.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    ceiling: Duration,
    next: Duration,
    failures: u32,
    max_failures: Option<u32>,
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Wait this long, then try the next remote.
    After(Duration),
    /// `connect-retry-max` failures in a row: stop.
    GiveUp { failures: u32 },
}

impl Backoff {
    pub fn new(first: Duration, ceiling: Duration, max_failures: Option<u32>) -> Backoff {
        Backoff {
            first,
            ceiling: ceiling.max(first),
            next: first,
            failures: 0,
            max_failures,
        }
    }

    /// A connection came up, or the user asked for a restart (SIGUSR1):
    /// the next failure waits the first interval again.
    pub fn reset(&mut self) {
        self.next = self.first;
        self.failures = 0;
    }

    /// An attempt failed (or an established connection ended).
    pub fn failed(&mut self) -> Retry {
        self.failures = self.failures.saturating_add(1);
        if self.max_failures.is_some_and(|m| self.failures >= m) {
            return Retry::GiveUp {
                failures: self.failures,
            };
        }
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(self.ceiling);
        Retry::After(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn doubles_up_to_the_ceiling() {
        let mut b = Backoff::new(secs(1), secs(4), None);
        let waits: Vec<_> = (0..5).map(|_| b.failed()).collect();
        assert_eq!(
            waits,
            [1, 2, 4, 4, 4].map(|n| Retry::After(secs(n))).to_vec()
        );
    }

    #[test]
    fn a_connection_that_came_up_starts_over() {
        let mut b = Backoff::new(secs(5), secs(300), None);
        b.failed();
        b.failed();
        b.reset();
        assert_eq!(b.failed(), Retry::After(secs(5)));
    }

    #[test]
    fn gives_up_after_max_failures() {
        let mut b = Backoff::new(secs(1), secs(1), Some(2));
        assert_eq!(b.failed(), Retry::After(secs(1)));
        assert_eq!(b.failed(), Retry::GiveUp { failures: 2 });
    }

    #[test]
    fn ceiling_below_first_is_the_first() {
        let mut b = Backoff::new(secs(10), secs(2), None);
        assert_eq!(b.failed(), Retry::After(secs(10)));
        assert_eq!(b.failed(), Retry::After(secs(10)));
    }
}
