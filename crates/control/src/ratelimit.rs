//! Rate-limited logging for dropped hostile input: a flood of garbage must not
//! become a flood of log lines, but the operator must still see that it happens.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tracing::warn;

const INTERVAL: Duration = Duration::from_secs(5);

pub struct DropLog {
    what: &'static str,
    last: Option<Instant>,
    suppressed: u64,
}

impl DropLog {
    pub fn new(what: &'static str) -> Self {
        DropLog {
            what,
            last: None,
            suppressed: 0,
        }
    }

    /// Record one dropped packet; logs at most once per interval.
    pub fn note(&mut self, from: SocketAddr, reason: &str) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < INTERVAL) {
            self.suppressed += 1;
            return;
        }
        if self.suppressed > 0 {
            warn!(
                "{from}: {}: {reason} (and {} more since last report)",
                self.what, self.suppressed
            );
        } else {
            warn!("{from}: {}: {reason}", self.what);
        }
        self.last = Some(now);
        self.suppressed = 0;
    }
}
