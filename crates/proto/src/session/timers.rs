//! Timers: retransmissions, hand-window, renegotiation, lame-duck expiry
//! and push requests, and when the next one is due.

use std::time::Instant;

use tracing::{debug, warn};

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
            // A client's first key waiting only for the push reply (2.6
            // has it active by then) is timed by the push-request
            // deadline below, which AUTH_PENDING may extend.
            let awaits_push = ks.phase == Phase::Established
                && !self.push_received
                && self.push_request_deadline.is_some();
            if ks.phase != Phase::Active
                && !awaits_push
                && ks.retire_at.is_none()
                && now >= ks.deadline
            {
                self.fail_key_state(now, i, SessionError::HandWindowExpired);
                return;
            }
            // A peer that stops acknowledging (while perhaps still sending)
            // would keep the session and its buffers for ever. Not while
            // the push reply is awaited: a silent server there is 2.6's
            // "No reply from server to push requests" (below, within
            // hand-window and one push-request interval), not a reset.
            if ks.retire_at.is_none()
                && !awaits_push
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
        self.close_without_keys();
        if self.closed {
            return;
        }
        if self.next_reneg.is_some_and(|t| now >= t)
            && let Err(e) = self.start_renegotiation(now)
        {
            debug!("renegotiation not started: {e}");
            self.next_reneg = None;
        }
        if self.cfg.side == Side::Client && self.next_push_request.is_some_and(|t| now >= t) {
            // 2.6 (push.c send_push_request): give up at the deadline, or
            // when the server stayed silent for hand-window.
            let late = self.push_request_deadline.is_some_and(|d| now >= d);
            if late || now.saturating_duration_since(self.last_peer_packet) >= hand_window {
                let since = self
                    .established_at
                    .map_or(0, |t| now.saturating_duration_since(t).as_secs());
                warn!("No reply from server to push requests in {since}s");
                self.close(SessionError::NoPushReply(since));
                return;
            }
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
