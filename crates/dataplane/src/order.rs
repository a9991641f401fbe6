//! The ordered hand-off of one peer's sealed batches: several workers seal
//! batches of one tunnel at once, and the batches still leave in the order
//! their packet-id ranges were reserved.
//!
//! Why: a stock OpenVPN 2.6 receiver accepts a packet id at most 64 below
//! the highest it has seen (`replay-window 64`), and one batch may hold 128
//! packets, so a batch that overtook the one before it on the wire would
//! cost up to a batch of drops (each one a TCP retransmission).
//!
//! How (the model is wireguard-go's per-peer ordered queue, without its
//! blocking wait):
//! - a batch takes a [`Ticket`] under the same lock as its id range
//!   ([`SendOrder::reserve`]), so tickets and id ranges have the same order;
//! - whoever seals it hands it in with its ticket ([`SendOrder::hand_in`]):
//!   when it is due (every earlier ticket has left) and nobody is sending,
//!   the caller becomes the sender; otherwise the batch is parked and the
//!   caller goes back to its own work;
//! - the sender takes due batches one by one ([`SendOrder::next_due`]) and
//!   sends each outside the lock; the call that finds nothing due ends its
//!   turn in the same lock section, so a batch handed in a moment later
//!   makes its own caller the sender.
//!
//! Nobody waits for anybody: the lock is held for a few field updates, never
//! while sealing or sending. Memory is bounded: at most `capacity` tickets
//! are out at once ([`SendOrder::reserve`] refuses more), and the parked
//! batches are at most those tickets.
//!
//! Every ticket must be handed in exactly once, with an empty batch if its
//! packets were dropped: a ticket that never comes back stalls its peer's
//! later batches (the ticket is not `Clone`, and is `#[must_use]`).

use std::collections::VecDeque;
use std::sync::Mutex;

/// The right and the duty to hand in one batch, in its place in the order.
#[must_use = "a ticket not handed in stalls every later batch of its peer"]
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Ticket(u64);

/// What the caller of [`OrderState::hand_in`] does next.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Turn {
    /// It is the sender now: take batches with `next_due` until it says `None`.
    Send,
    /// Its batch is parked (not due yet, or someone else is sending); the
    /// sender will send it.
    Leave,
}

/// The order's state, without the lock (pure: tested on its own).
#[derive(Debug, Clone)]
pub(crate) struct OrderState<T> {
    next_ticket: u64,
    /// Ticket of `parked[0]`: every earlier one has been taken by a sender.
    due: u64,
    /// A caller holds the send turn.
    sending: bool,
    /// `parked[i]` is ticket `due + i`'s batch once handed in; the length is
    /// `next_ticket - due`.
    parked: VecDeque<Option<T>>,
    capacity: usize,
}

impl<T> OrderState<T> {
    /// At most `capacity` (at least 1) tickets out at once.
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        OrderState {
            next_ticket: 0,
            due: 0,
            sending: false,
            // Grows with use up to `capacity`, once (tickets are reused).
            parked: VecDeque::with_capacity(capacity.min(16)),
            capacity,
        }
    }

    /// The next ticket, or `None` while `capacity` tickets are out.
    pub(crate) fn take_ticket(&mut self) -> Option<Ticket> {
        if self.parked.len() >= self.capacity {
            return None;
        }
        let t = self.next_ticket;
        self.next_ticket += 1;
        self.parked.push_back(None);
        Some(Ticket(t))
    }

    /// Hand in the batch of `ticket`. [`Turn::Send`]: the caller is the
    /// sender now (the due batch is parked and nobody else was sending).
    pub(crate) fn hand_in(&mut self, ticket: Ticket, batch: T) -> Turn {
        // A ticket comes from `take_ticket` and is handed in once, so it is
        // at or after `due` and its place is empty.
        let at = usize::try_from(ticket.0 - self.due).unwrap_or(usize::MAX);
        if let Some(place) = self.parked.get_mut(at) {
            debug_assert!(place.is_none(), "ticket {} handed in twice", ticket.0);
            *place = Some(batch);
        } else {
            debug_assert!(false, "ticket {} is not out", ticket.0);
        }
        if !self.sending && matches!(self.parked.front(), Some(Some(_))) {
            self.sending = true;
            Turn::Send
        } else {
            Turn::Leave
        }
    }

    /// The sender's next batch, in ticket order; `None` when the due batch
    /// is not handed in yet (or none is out), which ends the sender's turn.
    pub(crate) fn next_due(&mut self) -> Option<T> {
        debug_assert!(self.sending, "next_due outside a send turn");
        if matches!(self.parked.front(), Some(Some(_))) {
            self.due += 1;
            self.parked.pop_front().flatten()
        } else {
            self.sending = false;
            None
        }
    }

    /// Tickets out (handed in or not) and not yet taken by a sender.
    pub(crate) fn outstanding(&self) -> usize {
        self.parked.len()
    }
}

/// [`OrderState`] behind a lock, shared by the workers that seal one key's
/// batches.
#[derive(Debug)]
pub(crate) struct SendOrder<T>(Mutex<OrderState<T>>);

impl<T> SendOrder<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        SendOrder(Mutex::new(OrderState::new(capacity)))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OrderState<T>> {
        // A panic aborts the process (see DEVELOPERS.md), so a poisoned lock
        // is never seen by a worker that goes on; the state is consistent
        // after each method anyway.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A ticket and an id range taken together, so that their orders agree:
    /// `reserve_ids` runs under the lock and only when a ticket is free.
    /// `None` (no ticket taken) when `capacity` tickets are out or when
    /// `reserve_ids` gives nothing.
    pub(crate) fn reserve<R>(
        &self,
        reserve_ids: impl FnOnce() -> Option<R>,
    ) -> Option<(Ticket, R)> {
        let mut st = self.state();
        if st.outstanding() >= st.capacity {
            return None;
        }
        let ids = reserve_ids()?;
        st.take_ticket().map(|t| (t, ids))
    }

    /// See [`OrderState::hand_in`].
    pub(crate) fn hand_in(&self, ticket: Ticket, batch: T) -> Turn {
        self.state().hand_in(ticket, batch)
    }

    /// See [`OrderState::next_due`].
    pub(crate) fn next_due(&self) -> Option<T> {
        self.state().next_due()
    }

    /// Hand in `batch` and, when that makes the caller the sender, call
    /// `send` on every due batch in order (outside the lock) until none is
    /// due. Returns how many batches the caller sent.
    pub(crate) fn hand_in_and_send(
        &self,
        ticket: Ticket,
        batch: T,
        mut send: impl FnMut(T),
    ) -> usize {
        if self.hand_in(ticket, batch) == Turn::Leave {
            return 0;
        }
        let mut sent = 0;
        while let Some(b) = self.next_due() {
            send(b);
            sent += 1;
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    #[test]
    fn batches_in_order_leave_at_once() {
        let mut st = OrderState::new(4);
        for i in 0..10 {
            let t = st.take_ticket().unwrap();
            assert_eq!(st.hand_in(t, i), Turn::Send);
            assert_eq!(st.next_due(), Some(i));
            assert_eq!(st.next_due(), None);
        }
        assert_eq!(st.outstanding(), 0);
    }

    #[test]
    fn an_early_batch_waits_for_the_one_before_it() {
        let mut st = OrderState::new(4);
        let (t0, t1, t2) = (
            st.take_ticket().unwrap(),
            st.take_ticket().unwrap(),
            st.take_ticket().unwrap(),
        );
        assert_eq!(st.hand_in(t2, 'c'), Turn::Leave);
        assert_eq!(st.hand_in(t1, 'b'), Turn::Leave);
        assert_eq!(st.hand_in(t0, 'a'), Turn::Send);
        assert_eq!(
            std::iter::from_fn(|| st.next_due()).collect::<String>(),
            "abc"
        );
        assert_eq!(st.outstanding(), 0);
    }

    /// While a sender sends (outside the lock), a due batch handed in is
    /// left for it, and it picks it up before its turn ends.
    #[test]
    fn the_sender_takes_what_comes_in_during_its_turn() {
        let mut st = OrderState::new(4);
        let (t0, t1) = (st.take_ticket().unwrap(), st.take_ticket().unwrap());
        assert_eq!(st.hand_in(t0, 0), Turn::Send);
        assert_eq!(st.next_due(), Some(0));
        assert_eq!(st.hand_in(t1, 1), Turn::Leave);
        assert_eq!(st.next_due(), Some(1));
        assert_eq!(st.next_due(), None);
        // The turn ended: the next batch makes its caller the sender.
        let t2 = st.take_ticket().unwrap();
        assert_eq!(st.hand_in(t2, 2), Turn::Send);
    }

    #[test]
    fn no_more_than_capacity_tickets_are_out() {
        let order = SendOrder::new(2);
        let mut ids = 1u32..;
        let a = order.reserve(|| ids.next()).unwrap();
        let b = order.reserve(|| ids.next()).unwrap();
        assert!(order.reserve(|| ids.next()).is_none());
        // The refused reservation took no ids.
        assert_eq!((a.1, b.1, ids.next()), (1, 2, Some(3)));
        assert_eq!(order.hand_in_and_send(b.0, 'b', |_| {}), 0);
        assert!(
            order.reserve(|| Some(())).is_none(),
            "b is parked, not sent"
        );
        let mut wire = String::new();
        assert_eq!(order.hand_in_and_send(a.0, 'a', |c| wire.push(c)), 2);
        assert_eq!(wire, "ab");
        assert!(order.reserve(|| Some(())).is_some());
    }

    #[test]
    fn no_ids_no_ticket() {
        let order: SendOrder<()> = SendOrder::new(2);
        assert!(order.reserve(|| None::<u32>).is_none());
        let (t, ()) = order.reserve(|| Some(())).unwrap();
        assert_eq!(t, Ticket(0));
        assert_eq!(order.hand_in_and_send(t, (), |_| {}), 1);
    }

    /// One step of a worker in the exhaustive model below.
    #[derive(Clone, Debug)]
    enum Step {
        /// About to hand in batch `.0` (sealed) with its ticket.
        HandIn(u64),
        /// The sender, about to call `next_due`.
        NextDue,
        /// The sender, between `next_due` and the `sendmmsg` of batch `.0`
        /// (outside the lock: another worker may run here).
        Send(u64),
        Done,
    }

    #[derive(Clone)]
    struct Model {
        st: OrderState<u64>,
        workers: Vec<Step>,
        wire: Vec<u64>,
        most_parked: usize,
    }

    impl Model {
        fn step(&mut self, w: usize) {
            self.workers[w] = match self.workers[w].clone() {
                Step::HandIn(b) => match self.st.hand_in(Ticket(b), b) {
                    Turn::Send => Step::NextDue,
                    Turn::Leave => Step::Done,
                },
                Step::NextDue => match self.st.next_due() {
                    Some(b) => Step::Send(b),
                    None => Step::Done,
                },
                Step::Send(b) => {
                    self.wire.push(b);
                    Step::NextDue
                }
                Step::Done => Step::Done,
            };
            self.most_parked = self.most_parked.max(self.st.outstanding());
        }
    }

    /// Every interleaving of `n` workers' steps, one batch each (tickets
    /// taken in order by the reading worker, then sealed in parallel): the
    /// batches leave in ticket order, each exactly once, and nothing is
    /// left parked when every worker is done.
    fn explore(m: Model, n: usize, runs: &mut u64) {
        let live: Vec<usize> = (0..m.workers.len())
            .filter(|&w| !matches!(m.workers[w], Step::Done))
            .collect();
        if live.is_empty() {
            *runs += 1;
            assert_eq!(m.wire, (0..n as u64).collect::<Vec<_>>());
            assert_eq!(m.st.outstanding(), 0, "nothing left parked");
            assert!(!m.st.sending, "the send turn ended");
            assert!(m.most_parked <= n);
            return;
        }
        for w in live {
            let mut next = m.clone();
            next.step(w);
            explore(next, n, runs);
        }
    }

    #[test]
    fn every_interleaving_sends_in_ticket_order_exactly_once() {
        for n in 1..=5usize {
            let mut st = OrderState::new(n);
            for _ in 0..n {
                let _ticket_kept_by_the_model = st.take_ticket().unwrap();
            }
            let m = Model {
                st,
                workers: (0..n as u64).map(Step::HandIn).collect(),
                wire: Vec::new(),
                most_parked: 0,
            };
            let mut runs = 0;
            explore(m, n, &mut runs);
            assert!(runs > 0);
        }
    }

    proptest! {
        /// Batches handed in in any order, in rounds with new tickets taken
        /// between them: the wire sees every ticket once, in order, and
        /// never more than `capacity` are out.
        #[test]
        fn any_hand_in_order_leaves_in_ticket_order(
            capacity in 1usize..8,
            rounds in prop::collection::vec(prop::collection::vec(any::<prop::sample::Index>(), 0..8), 1..20),
        ) {
            let mut st = OrderState::new(capacity);
            let mut out: Vec<Ticket> = Vec::new();
            let mut wire = Vec::new();
            let mut issued = 0u64;
            for picks in rounds {
                while let Some(t) = st.take_ticket() {
                    out.push(t);
                    issued += 1;
                }
                prop_assert!(st.outstanding() <= capacity);
                for pick in picks {
                    if out.is_empty() {
                        break;
                    }
                    let t = out.swap_remove(pick.index(out.len()));
                    let b = t.0;
                    if st.hand_in(t, b) == Turn::Send {
                        while let Some(b) = st.next_due() {
                            wire.push(b);
                        }
                    }
                }
            }
            // The rest, last first.
            while let Some(t) = out.pop() {
                let b = t.0;
                if st.hand_in(t, b) == Turn::Send {
                    while let Some(b) = st.next_due() {
                        wire.push(b);
                    }
                }
            }
            prop_assert_eq!(wire, (0..issued).collect::<Vec<_>>());
            prop_assert_eq!(st.outstanding(), 0);
        }
    }

    /// Real threads: each reserves a ticket and an id range under the lock,
    /// "seals" (spins a varying while), and hands in; the wire sees id
    /// ranges in order with no gap and no repeat.
    #[test]
    fn threads_sealing_at_once_send_id_ranges_in_order() {
        const THREADS: usize = 4;
        const BATCHES: usize = 2_000;
        let order = Arc::new(SendOrder::<(u32, u32)>::new(THREADS));
        let next_id = Arc::new(std::sync::atomic::AtomicU32::new(1));
        let wire = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..THREADS)
            .map(|w| {
                let (order, next_id, wire) = (order.clone(), next_id.clone(), wire.clone());
                std::thread::spawn(move || {
                    let mut done = 0;
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                    while done < BATCHES {
                        let len = 1 + ((done + w) % 128) as u32;
                        let Some((ticket, start)) = order.reserve(|| {
                            Some(next_id.fetch_add(len, std::sync::atomic::Ordering::Relaxed))
                        }) else {
                            // Every ticket is out: the others will send them.
                            assert!(
                                std::time::Instant::now() < deadline,
                                "no ticket came back in 30 s: the order stalled"
                            );
                            std::thread::yield_now();
                            continue;
                        };
                        for _ in 0..(done * 7 + w) % 50 {
                            std::hint::spin_loop();
                        }
                        order.hand_in_and_send(ticket, (start, len), |(s, l)| {
                            let mut wire = wire.lock().unwrap();
                            wire.push((s, l));
                        });
                        done += 1;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let wire = wire.lock().unwrap();
        assert_eq!(wire.len(), THREADS * BATCHES);
        let mut expect = 1;
        for &(start, len) in wire.iter() {
            assert_eq!(start, expect, "ranges leave in order, none lost");
            expect += len;
        }
    }
}
