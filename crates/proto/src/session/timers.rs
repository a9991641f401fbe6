//! Timers: retransmissions, hand-window, renegotiation, lame-duck expiry
//! and push requests, and when the next one is due.

use std::time::Instant;

use tracing::debug;

use super::key_state::Phase;
use super::{Event, PUSH_REQUEST_INTERVAL, Session, SessionError};
use crate::data::Side;

impl Session {
    /// Drive timers: retransmissions, hand-window, renegotiation, lame-duck expiry, push requests.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closed {
            return;
        }
        let hand_window = self.cfg.hand_window;
        let mut i = 0;
        while i < self.keys.len() {
            let ks = &self.keys[i];
            if ks.phase != Phase::Active && ks.retire_at.is_none() && now >= ks.deadline {
                self.fail_key_state(now, i, SessionError::HandWindowExpired);
                return;
            }
            // A peer that stops acknowledging (while perhaps still sending)
            // would keep the session and its buffers for ever.
            if ks.retire_at.is_none()
                && ks
                    .reliable
                    .oldest_unacked()
                    .is_some_and(|t| now >= t + hand_window)
            {
                self.fail_key_state(now, i, SessionError::Unacknowledged);
                return;
            }
            if ks.retire_at.is_some_and(|t| now >= t) {
                let key_id = ks.key_id;
                self.keys.remove(i);
                self.events.push_back(Event::KeyRetired { key_id });
                continue;
            }
            i += 1;
        }
        if self.next_reneg.is_some_and(|t| now >= t)
            && let Err(e) = self.start_renegotiation(now)
        {
            debug!("renegotiation not started: {e}");
            self.next_reneg = None;
        }
        if self.cfg.side == Side::Client && self.next_push_request.is_some_and(|t| now >= t) {
            self.send_text_on_current(now, "PUSH_REQUEST");
            self.next_push_request = Some(now + PUSH_REQUEST_INTERVAL);
        }
        self.flush(now);
    }

    /// When [`Session::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let mut t: Option<Instant> = None;
        let mut min = |x: Option<Instant>| {
            if let Some(x) = x {
                t = Some(t.map_or(x, |y| y.min(x)));
            }
        };
        for k in &self.keys {
            min(k.reliable.next_timeout());
            if k.retire_at.is_none() {
                if k.phase != Phase::Active {
                    min(Some(k.deadline));
                }
                min(k
                    .reliable
                    .oldest_unacked()
                    .map(|t| t + self.cfg.hand_window));
            }
            min(k.retire_at);
        }
        min(self.next_reneg);
        min(self.next_push_request);
        t
    }
}
