//! The control channel's reliability layer (docs/protocol.md §2.5): message ids,
//! acknowledgements, retransmission with exponential backoff, in-order
//! delivery and the send/receive windows a stock 2.6 peer expects.
//!
//! One [`Reliable`] exists per key state (key_id): message ids restart at 0
//! with every hard or soft reset. Time is passed in; nothing here reads a clock.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::wire::Opcode;

/// Unacknowledged packets we may have in flight (2.6: TLS_RELIABLE_N_SEND_BUFFERS).
pub const SEND_WINDOW: usize = 6;
/// Out-of-order packets we buffer ahead of the next expected id (2.6 uses 12;
/// ids at or beyond `next + RECV_WINDOW` are dropped without an ACK).
pub const RECV_WINDOW: u32 = 12;
/// Pending ACKs we remember; older ones are dropped (the peer retransmits).
const MAX_PENDING_ACKS: usize = 8;
/// Fast retransmit after this many ACKs for later ids.
const FAST_RETRANSMIT_ACKS: u8 = 3;
/// Backoff ceiling: a dead peer is detected by hand-window, not by waiting longer.
const MAX_RETRANSMIT_TIMEOUT: Duration = Duration::from_secs(16);

struct Outgoing {
    id: u32,
    opcode: Opcode,
    payload: Vec<u8>,
    /// When it was first queued: the age of unacknowledged data.
    queued_at: Instant,
    next_send: Instant,
    timeout: Duration,
    later_acks: u8,
}

/// What happened to an incoming reliable packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Stored for in-order delivery (and will be acknowledged).
    Stored,
    /// Already delivered or already buffered; acknowledged again.
    Duplicate,
    /// Beyond the receive window: dropped without acknowledgement.
    OutOfWindow,
}

/// Per-key-state reliability layer.
pub struct Reliable {
    initial_timeout: Duration,
    next_send_id: u32,
    in_flight: VecDeque<Outgoing>,
    next_recv_id: u32,
    recv_buf: BTreeMap<u32, (Opcode, Vec<u8>)>,
    pending_acks: VecDeque<u32>,
}

impl Reliable {
    /// `initial_timeout` is `--tls-timeout` (2.6 default 2 s); it doubles per resend.
    pub fn new(initial_timeout: Duration) -> Self {
        Reliable {
            initial_timeout,
            next_send_id: 0,
            in_flight: VecDeque::new(),
            next_recv_id: 0,
            recv_buf: BTreeMap::new(),
            pending_acks: VecDeque::new(),
        }
    }

    /// Continue as if both hard resets (message 0 each way) had been
    /// exchanged and acknowledged: a session made by the stateless
    /// handshake, whose reset answer was sent before it existed.
    pub fn resume_after_resets(&mut self) {
        self.next_send_id = 1;
        self.next_recv_id = 1;
    }

    /// The message id the next [`Reliable::send`] gets.
    pub fn next_send_id(&self) -> u32 {
        self.next_send_id
    }

    /// Whether a new message may be queued without exceeding the send window.
    pub fn can_send(&self) -> bool {
        self.in_flight.len() < SEND_WINDOW
    }

    /// Queue a new reliable message; it is due for transmission at once.
    /// Callers check [`Reliable::can_send`] first; the window is not enforced here
    /// so a reset can always be queued.
    pub fn send(&mut self, now: Instant, opcode: Opcode, payload: Vec<u8>) -> u32 {
        let id = self.next_send_id;
        self.next_send_id = self.next_send_id.wrapping_add(1);
        self.in_flight.push_back(Outgoing {
            id,
            opcode,
            payload,
            queued_at: now,
            next_send: now,
            timeout: self.initial_timeout,
            later_acks: 0,
        });
        id
    }

    /// Treat message `id` as acknowledged without an ACK (used when a peer's
    /// reply implies it, e.g. the server's reset answering ours).
    pub fn ack_received(&mut self, id: u32) {
        let Some(pos) = self.in_flight.iter().position(|o| o.id == id) else {
            // ACKs for unknown or already-acked ids are normal (2.6 repeats ACKs).
            return;
        };
        self.in_flight.remove(pos);
        for o in self.in_flight.iter_mut().filter(|o| o.id < id) {
            o.later_acks = o.later_acks.saturating_add(1);
        }
    }

    /// Everything we sent has been acknowledged.
    pub fn all_acked(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Next message (id, opcode, payload) due for (re)transmission at `now`.
    /// Advances its retransmit timer with exponential backoff.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(u32, Opcode, &[u8])> {
        let o = self
            .in_flight
            .iter_mut()
            .find(|o| o.next_send <= now || o.later_acks >= FAST_RETRANSMIT_ACKS)?;
        o.later_acks = 0;
        o.next_send = now + o.timeout;
        o.timeout = (o.timeout * 2).min(MAX_RETRANSMIT_TIMEOUT);
        Some((o.id, o.opcode, &o.payload))
    }

    /// When the oldest message still unacknowledged was queued.
    pub fn oldest_unacked(&self) -> Option<Instant> {
        self.in_flight.iter().map(|o| o.queued_at).min()
    }

    /// Payload bytes held: in flight (unacknowledged) plus received out of order.
    pub fn buffered_bytes(&self) -> usize {
        self.in_flight
            .iter()
            .map(|o| o.payload.len())
            .sum::<usize>()
            + self.recv_buf.values().map(|(_, p)| p.len()).sum::<usize>()
    }

    /// Earliest retransmission deadline.
    pub fn next_timeout(&self) -> Option<Instant> {
        self.in_flight.iter().map(|o| o.next_send).min()
    }

    /// Record an incoming reliable message.
    pub fn receive(&mut self, id: u32, opcode: Opcode, payload: Vec<u8>) -> Received {
        if id < self.next_recv_id {
            // Already delivered: re-ACK so the peer stops retransmitting.
            self.queue_ack(id);
            return Received::Duplicate;
        }
        if id - self.next_recv_id >= RECV_WINDOW {
            // Like 2.6: too far ahead is dropped without an ACK.
            return Received::OutOfWindow;
        }
        self.queue_ack(id);
        if self.recv_buf.contains_key(&id) {
            return Received::Duplicate;
        }
        self.recv_buf.insert(id, (opcode, payload));
        Received::Stored
    }

    /// Next message in order, if it has arrived.
    pub fn pop_received(&mut self) -> Option<(Opcode, Vec<u8>)> {
        let v = self.recv_buf.remove(&self.next_recv_id)?;
        self.next_recv_id = self.next_recv_id.wrapping_add(1);
        Some(v)
    }

    fn queue_ack(&mut self, id: u32) {
        if self.pending_acks.contains(&id) {
            return;
        }
        if self.pending_acks.len() == MAX_PENDING_ACKS {
            self.pending_acks.pop_front();
        }
        self.pending_acks.push_back(id);
    }

    /// Whether ACKs are waiting to be sent.
    pub fn has_pending_acks(&self) -> bool {
        !self.pending_acks.is_empty()
    }

    /// Take up to `max` pending ACK ids, newest first (as 2.6 writes them).
    pub fn take_acks(&mut self, max: usize) -> Vec<u32> {
        let n = max.min(self.pending_acks.len());
        let start = self.pending_acks.len() - n;
        let mut v: Vec<u32> = self.pending_acks.drain(start..).collect();
        v.reverse();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn send_window_and_acks() {
        let now = t0();
        let mut r = Reliable::new(Duration::from_secs(2));
        for i in 0..SEND_WINDOW {
            assert!(r.can_send());
            assert_eq!(r.send(now, Opcode::ControlV1, vec![i as u8]), i as u32);
        }
        assert!(!r.can_send());
        r.ack_received(3);
        r.ack_received(3);
        r.ack_received(99);
        assert!(r.can_send());
        assert!(!r.all_acked());
    }

    #[test]
    fn retransmit_backoff() {
        let now = t0();
        let mut r = Reliable::new(Duration::from_secs(2));
        r.send(now, Opcode::ControlV1, b"x".to_vec());
        assert_eq!(r.poll_transmit(now).map(|p| p.0), Some(0));
        assert!(r.poll_transmit(now).is_none());
        assert_eq!(r.next_timeout(), Some(now + Duration::from_secs(2)));
        let t = now + Duration::from_secs(2);
        assert!(r.poll_transmit(t).is_some());
        assert_eq!(r.next_timeout(), Some(t + Duration::from_secs(4)));
    }

    #[test]
    fn age_and_size_of_unacknowledged_data() {
        let now = t0();
        let later = now + Duration::from_secs(3);
        let mut r = Reliable::new(Duration::from_secs(2));
        assert_eq!(r.oldest_unacked(), None);
        r.send(now, Opcode::ControlV1, vec![0; 100]);
        r.send(later, Opcode::ControlV1, vec![0; 50]);
        r.receive(3, Opcode::ControlV1, vec![0; 7]);
        // Retransmission does not make data younger.
        while r.poll_transmit(later + Duration::from_secs(60)).is_some() {}
        assert_eq!(r.oldest_unacked(), Some(now));
        assert_eq!(r.buffered_bytes(), 157);
        r.ack_received(0);
        assert_eq!(r.oldest_unacked(), Some(later));
        assert_eq!(r.buffered_bytes(), 57);
    }

    #[test]
    fn fast_retransmit_after_three_later_acks() {
        let now = t0();
        let mut r = Reliable::new(Duration::from_secs(2));
        for _ in 0..5 {
            r.send(now, Opcode::ControlV1, vec![]);
        }
        while r.poll_transmit(now).is_some() {}
        r.ack_received(1);
        r.ack_received(2);
        assert!(r.poll_transmit(now).is_none());
        r.ack_received(3);
        assert_eq!(r.poll_transmit(now).map(|p| p.0), Some(0));
    }

    #[test]
    fn in_order_delivery_and_duplicates() {
        let mut r = Reliable::new(Duration::from_secs(2));
        assert_eq!(
            r.receive(1, Opcode::ControlV1, b"b".to_vec()),
            Received::Stored
        );
        assert!(r.pop_received().is_none());
        assert_eq!(
            r.receive(0, Opcode::ControlV1, b"a".to_vec()),
            Received::Stored
        );
        assert_eq!(r.pop_received().unwrap().1, b"a");
        assert_eq!(r.pop_received().unwrap().1, b"b");
        assert_eq!(r.receive(0, Opcode::ControlV1, vec![]), Received::Duplicate);
        assert_eq!(r.receive(1, Opcode::ControlV1, vec![]), Received::Duplicate);
        assert_eq!(
            r.receive(2 + RECV_WINDOW, Opcode::ControlV1, vec![]),
            Received::OutOfWindow
        );
        assert_eq!(r.take_acks(4), vec![0, 1]);
        assert!(!r.has_pending_acks());
    }

    #[test]
    fn ack_list_is_bounded() {
        let mut r = Reliable::new(Duration::from_secs(2));
        for i in 0..RECV_WINDOW {
            r.receive(i, Opcode::ControlV1, vec![]);
        }
        assert_eq!(r.take_acks(4), vec![11, 10, 9, 8]);
        assert_eq!(r.take_acks(8), vec![7, 6, 5, 4]);
    }
}
