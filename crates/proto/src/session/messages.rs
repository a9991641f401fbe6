//! Text control messages after the key exchange: PUSH_REQUEST/PUSH_REPLY,
//! EXIT, RESTART, AUTH_FAILED and the others, received and sent.

use std::io::Write;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use super::key_state::Phase;
use super::{Event, MAX_PUSH_PARTS, PUSH_REPLY_REPEAT_INTERVAL, Session, SessionError};
use crate::data::Side;
use crate::push::{self, ControlMessage};

impl Session {
    pub(super) fn handle_text(&mut self, now: Instant, text: &str) {
        let filtered;
        let text = if self.cfg.side == Side::Client && !self.cfg.pull_filters.is_empty() {
            match push::apply_pull_filters(text, &self.cfg.pull_filters) {
                push::Filtered::Rejected(option) => {
                    warn!("Pushed option rejected by filter: '{option}'. Restarting.");
                    self.close(SessionError::PulledOptionRejected(option));
                    return;
                }
                push::Filtered::Kept { text, ignored } => {
                    for option in ignored {
                        info!("Pushed option removed by filter: '{option}'");
                    }
                    filtered = text;
                    filtered.as_str()
                }
            }
        } else {
            text
        };
        let msg = ControlMessage::parse(text);
        match (self.cfg.side, msg) {
            (Side::Server, ControlMessage::PushRequest) => {
                self.push_requested = true;
                if self.push_reply.is_some() {
                    self.send_push_reply(now);
                } else if self.peer_info.is_some() {
                    self.events.push_back(Event::PushRequested);
                }
            }
            (_, ControlMessage::Exit) => {
                info!("peer announced exit");
                self.events.push_back(Event::PeerExit);
            }
            (Side::Client, ControlMessage::PushReply(part)) => {
                if self.push_received {
                    return;
                }
                // A 2.6 server splits long replies: parts ending
                // `push-continuation 2` are collected until the last one.
                let reply = match self.pending_push.take() {
                    Some(mut so_far) => {
                        so_far.extend(part);
                        so_far
                    }
                    None => part,
                };
                self.pending_push_parts += 1;
                if reply.expects_more() {
                    if self.pending_push_parts >= MAX_PUSH_PARTS {
                        self.close(SessionError::PushReplyTooLarge);
                        return;
                    }
                    self.pending_push_bytes += text.len();
                    self.pending_push = Some(reply);
                    return;
                }
                self.pending_push_bytes = 0;
                if let Err(e) = self.apply_push(&reply) {
                    warn!("rejecting push reply: {e}");
                    self.close(e);
                    return;
                }
                self.push_received = true;
                self.next_push_request = None;
                // The driver configures the peer before the keys for it arrive.
                self.events.push_back(Event::PushReply(reply));
                if let Some(idx) = self.key_index(0) {
                    if let Err(e) = self.install_keys(idx) {
                        self.close(e);
                        return;
                    }
                    self.update_phase(now, idx);
                }
            }
            (Side::Client, ControlMessage::AuthFailed(m)) => {
                self.events.push_back(Event::AuthFailed(m.clone()));
                self.close(SessionError::AuthFailed(m));
            }
            (Side::Client, ControlMessage::Restart(m)) => {
                self.events.push_back(Event::Restart {
                    halt: false,
                    message: m,
                });
            }
            (Side::Client, ControlMessage::Halt(m)) => {
                self.events.push_back(Event::Restart {
                    halt: true,
                    message: m,
                });
            }
            (Side::Server, ControlMessage::Other(text)) if text.starts_with("CR_RESPONSE") => {
                // 2.6 takes what follows `CR_RESPONSE,`, or nothing.
                let response = text["CR_RESPONSE".len()..]
                    .strip_prefix(',')
                    .unwrap_or("")
                    .to_string();
                self.events.push_back(Event::CrResponse {
                    key_id: self.current_key.unwrap_or(0),
                    response,
                });
            }
            (Side::Client, ControlMessage::Other(text)) if text.starts_with("INFO") => {
                // 2.6 (forward.c): `INFO_PRE` first, then any `INFO...`;
                // the text is what follows the name and a comma.
                let rest = text
                    .strip_prefix("INFO_PRE")
                    .unwrap_or_else(|| &text["INFO".len()..]);
                let info = rest.strip_prefix(',').unwrap_or("").to_string();
                self.events.push_back(Event::Info(info));
            }
            (Side::Client, ControlMessage::Other(text)) if text.starts_with("AUTH_PENDING") => {
                let keywords = text["AUTH_PENDING".len()..]
                    .strip_prefix(',')
                    .unwrap_or("")
                    .to_string();
                if !self.cfg.p2p {
                    self.auth_pending_deadline(now, &keywords);
                }
                self.events.push_back(Event::AuthPending(keywords));
            }
            (_, other) => debug!("ignoring control message {other:?}"),
        }
    }

    /// Client: how long an AUTH_PENDING lets the push reply wait, as 2.6's
    /// `receive_auth_pending`: the server's `timeout N` (hand-window
    /// without one), at most the longer of hand-window and half of
    /// reneg-sec, counted from when key 0 was established.
    fn auth_pending_deadline(&mut self, now: Instant, keywords: &str) {
        let hand_window = self.cfg.hand_window;
        let cap = self
            .cfg
            .reneg_interval
            .map_or(Duration::ZERO, |r| r / 2)
            .max(hand_window);
        let asked = auth_pending_timeout(keywords).map_or(hand_window, Duration::from_secs);
        let allowed = asked.min(cap);
        info!(
            "AUTH_PENDING received, extending handshake timeout from {}s to {}s",
            hand_window.as_secs(),
            allowed.as_secs()
        );
        self.push_request_deadline = Some(self.established_at.unwrap_or(now) + allowed);
    }

    /// Server: set the whole PUSH_REPLY text (`PUSH_REPLY,...`), options in
    /// the order 2.6 sends them (pushed options, then per-client ones). It
    /// goes out split as 2.6 splits it ([`push::split_push_reply`]), now if
    /// the client asked for it or announced it wants it unasked (IV_PROTO
    /// bit 2). An option too long for one message closes the session.
    pub fn set_push_reply(&mut self, now: Instant, text: String) {
        let parts = match push::split_push_reply(&text) {
            Ok(parts) => parts,
            Err(e) => {
                warn!("cannot send push reply: {e}");
                self.close(SessionError::PushOptionTooLong(e.to_string()));
                return;
            }
        };
        let proactive = self.peer_info.as_ref().is_some_and(|p| p.request_push());
        self.push_reply = Some(parts);
        if proactive || self.push_requested {
            self.send_push_reply(now);
        }
        self.flush(now);
    }

    /// Server: send the push reply unless it went out less than
    /// [`PUSH_REPLY_REPEAT_INTERVAL`] ago (a repeated PUSH_REQUEST is then
    /// ignored, as in 2.6).
    pub(super) fn send_push_reply(&mut self, now: Instant) {
        if self
            .push_reply_sent_at
            .is_some_and(|t| now < t + PUSH_REPLY_REPEAT_INTERVAL)
        {
            debug!("push reply already sent recently; ignoring PUSH_REQUEST");
            return;
        }
        let Some(parts) = self.push_reply.clone() else {
            return;
        };
        for part in &parts {
            self.send_text_on_current(now, part);
        }
        self.push_reply_sent_at = Some(now);
    }

    /// Send a text control message (EXIT, AUTH_FAILED, RESTART ...) on the newest usable key state.
    pub fn send_control_message(&mut self, now: Instant, text: &str) {
        self.send_text_on_current(now, text);
        self.flush(now);
    }

    pub(super) fn send_text_on_current(&mut self, now: Instant, text: &str) {
        if self.closed {
            return;
        }
        let idx = self.keys.iter().rposition(|k| {
            matches!(
                k.phase,
                Phase::KeyExchange | Phase::Established | Phase::Active
            )
        });
        if let Some(idx) = idx
            && let Err(e) = self.write_text(idx, text)
        {
            // rustls' buffer is full: the peer is not taking our data.
            self.fail_key_state(now, idx, e);
        }
    }

    pub(super) fn write_text(&mut self, idx: usize, text: &str) -> Result<(), SessionError> {
        let mut b = Vec::with_capacity(text.len() + 1);
        b.extend_from_slice(text.as_bytes());
        b.push(0);
        self.keys[idx]
            .tls
            .writer()
            .write_all(&b)
            .map_err(SessionError::TlsIo)
    }
}

/// The `timeout N` among AUTH_PENDING's comma-separated keywords (the
/// last one that reads as such; 2.6 reads each with `sscanf("timeout %u")`
/// and ignores the others).
pub(super) fn auth_pending_timeout(keywords: &str) -> Option<u64> {
    keywords
        .split(',')
        .filter_map(|k| {
            let n = k.strip_prefix("timeout")?.trim_start();
            let digits = n.bytes().take_while(u8::is_ascii_digit).count();
            n[..digits].parse::<u32>().ok().map(u64::from)
        })
        .next_back()
}
