//! Keepalive and renegotiation policy for one client, decided from what was
//! observed (idle times, traffic on the current key). Pure: the runtime
//! reads the counters, calls [`Policy::decide`] every housekeeping tick, and
//! acts on the verdict.

use std::time::Duration;

/// `ping`, `ping-restart`, `reneg-bytes`, `reneg-pkts`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    pub ping: Option<Duration>,
    pub ping_restart: Option<Duration>,
    pub reneg_bytes: Option<u64>,
    pub reneg_pkts: Option<u64>,
}

/// What the runtime knows about one client at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Observed {
    /// Since the last authenticated packet from the client, data or control.
    pub rx_idle: Duration,
    /// Since the last data packet to the client.
    pub tx_idle: Duration,
    pub established: bool,
    /// Data-channel bytes and packets (both ways) on the current key.
    pub key_bytes: u64,
    pub key_packets: u64,
    /// The data plane's packet ids are running low.
    pub packet_ids_low: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `ping-restart`: the client has been silent too long.
    Drop,
    Keep {
        ping: bool,
        renegotiate: bool,
    },
}

impl Policy {
    pub fn decide(&self, o: &Observed) -> Verdict {
        if !o.established {
            // The handshake has its own deadline (hand-window).
            return Verdict::Keep {
                ping: false,
                renegotiate: false,
            };
        }
        if self.ping_restart.is_some_and(|limit| o.rx_idle >= limit) {
            return Verdict::Drop;
        }
        Verdict::Keep {
            ping: self.ping.is_some_and(|p| o.tx_idle >= p),
            renegotiate: o.packet_ids_low
                || self.reneg_bytes.is_some_and(|n| o.key_bytes >= n)
                || self.reneg_pkts.is_some_and(|n| o.key_packets >= n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_millis(500);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A client on a virtual clock: when it last sent, when we last sent.
    struct Sim {
        policy: Policy,
        now: Duration,
        last_rx: Duration,
        last_tx: Duration,
        pings: Vec<Duration>,
    }

    impl Sim {
        fn new(policy: Policy) -> Self {
            Sim {
                policy,
                now: Duration::ZERO,
                last_rx: Duration::ZERO,
                last_tx: Duration::ZERO,
                pings: Vec::new(),
            }
        }

        /// Run housekeeping ticks until `until`; the client sends whenever
        /// `client_sends(now)`. Returns when the client was dropped, if it was.
        fn run(
            &mut self,
            until: Duration,
            client_sends: impl Fn(Duration) -> bool,
        ) -> Option<Duration> {
            while self.now < until {
                self.now += TICK;
                if client_sends(self.now) {
                    self.last_rx = self.now;
                }
                let o = Observed {
                    rx_idle: self.now - self.last_rx,
                    tx_idle: self.now - self.last_tx,
                    established: true,
                    key_bytes: 0,
                    key_packets: 0,
                    packet_ids_low: false,
                };
                match self.policy.decide(&o) {
                    Verdict::Drop => return Some(self.now),
                    Verdict::Keep { ping, .. } => {
                        if ping {
                            self.pings.push(self.now);
                            self.last_tx = self.now;
                        }
                    }
                }
            }
            None
        }
    }

    fn keepalive_10_60() -> Policy {
        Policy {
            ping: Some(secs(10)),
            ping_restart: Some(secs(60)),
            ..Policy::default()
        }
    }

    #[test]
    fn pings_after_each_ping_interval_of_silence() {
        let mut sim = Sim::new(keepalive_10_60());
        assert_eq!(sim.run(secs(35), |_| true), None);
        assert_eq!(sim.pings, vec![secs(10), secs(20), secs(30)]);
    }

    #[test]
    fn a_silent_client_is_dropped_at_ping_restart_and_not_before() {
        let mut sim = Sim::new(keepalive_10_60());
        // Talks for 20 s, then goes silent.
        let dropped = sim.run(secs(200), |t| t <= secs(20));
        assert_eq!(dropped, Some(secs(80)));
    }

    #[test]
    fn a_client_that_keeps_talking_stays() {
        let mut sim = Sim::new(keepalive_10_60());
        // One packet every 59 s is enough.
        assert_eq!(sim.run(secs(600), |t| t.as_millis() % 59_000 == 0), None);
        let mut no_limit = Sim::new(Policy::default());
        assert_eq!(no_limit.run(secs(600), |_| false), None);
        assert!(no_limit.pings.is_empty());
    }

    #[test]
    fn nothing_happens_before_the_session_is_up() {
        let o = Observed {
            rx_idle: secs(1000),
            tx_idle: secs(1000),
            established: false,
            key_bytes: u64::MAX,
            key_packets: u64::MAX,
            packet_ids_low: true,
        };
        let policy = Policy {
            reneg_bytes: Some(1),
            ..keepalive_10_60()
        };
        assert_eq!(
            policy.decide(&o),
            Verdict::Keep {
                ping: false,
                renegotiate: false
            }
        );
    }

    #[test]
    fn renegotiates_at_reneg_bytes_reneg_pkts_or_low_packet_ids() {
        let policy = Policy {
            reneg_bytes: Some(1000),
            reneg_pkts: Some(10),
            ..Policy::default()
        };
        let at = |key_bytes, key_packets, packet_ids_low| {
            policy.decide(&Observed {
                rx_idle: Duration::ZERO,
                tx_idle: Duration::ZERO,
                established: true,
                key_bytes,
                key_packets,
                packet_ids_low,
            })
        };
        let renegotiate = |renegotiate| Verdict::Keep {
            ping: false,
            renegotiate,
        };
        assert_eq!(at(999, 9, false), renegotiate(false));
        assert_eq!(at(1000, 0, false), renegotiate(true));
        assert_eq!(at(0, 10, false), renegotiate(true));
        assert_eq!(at(0, 0, true), renegotiate(true));
    }
}
