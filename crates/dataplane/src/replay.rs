//! Lock-free receive replay window for data-channel packet ids (docs/protocol.md §8.4).
//!
//! Several workers may open packets of the same key at the same time (the
//! sender's packets are spread over our UDP sockets and TUN queues), so the
//! window is updated with compare-and-swap only.
//!
//! Layout: the id space is cut into 32-id blocks. Each slot is one `AtomicU64`
//! holding `block_number << 32 | bitmap`; block `b` lives in slot
//! `b % slots`. A slot only ever moves forward to a higher block (by CAS), so
//! once it moved past block `b` every id of `b` is rejected for good, and
//! within a block a bit is set by exactly one successful CAS: **no id is ever
//! accepted twice**, whatever the interleaving. `top` (the highest accepted id,
//! updated with `fetch_max`) gives the window its edge: ids `<= top - size`
//! are rejected. With `slots * 32 >= size + 64`, two blocks that both intersect
//! the window never share a slot, so in single-threaded use the window
//! behaves exactly like the textbook bitmap window (tested against a model).

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a packet id was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayError {
    /// Packet id 0 is never valid.
    Zero,
    /// Older than the window.
    TooOld,
    /// Already seen.
    Replayed,
}

/// Lock-free sliding replay window of a configurable size.
pub struct AtomicReplayWindow {
    size: u64,
    top: AtomicU64,
    mask: u64,
    slots: Box<[AtomicU64]>,
}

impl AtomicReplayWindow {
    /// A window accepting ids up to `size - 1` below the highest one seen (size ≥ 32).
    pub fn new(size: u32) -> Self {
        let size = u64::from(size.max(32));
        let n = ((size + 64) / 32 + 1).next_power_of_two();
        AtomicReplayWindow {
            size,
            top: AtomicU64::new(0),
            mask: n - 1,
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn size(&self) -> u32 {
        self.size as u32
    }

    /// Highest id accepted so far (0 if none).
    pub fn top(&self) -> u32 {
        self.top.load(Ordering::Relaxed) as u32
    }

    /// Accept `id` if it is new and inside the window, and record it. Call only
    /// after the packet authenticated.
    pub fn check_and_set(&self, id: u32) -> Result<(), ReplayError> {
        if id == 0 {
            return Err(ReplayError::Zero);
        }
        let id64 = u64::from(id);
        let top = self.top.load(Ordering::Acquire);
        if id64 + self.size <= top {
            return Err(ReplayError::TooOld);
        }
        let block = id64 >> 5;
        let bit = 1u64 << (id64 & 31);
        let slot = &self.slots[(block & self.mask) as usize];
        let mut cur = slot.load(Ordering::Acquire);
        loop {
            let cur_block = cur >> 32;
            let new = if cur_block == block {
                if cur & bit != 0 {
                    return Err(ReplayError::Replayed);
                }
                cur | bit
            } else if cur_block < block {
                (block << 32) | bit
            } else {
                return Err(ReplayError::TooOld);
            };
            match slot.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        self.top.fetch_max(id64, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;
    use std::sync::Arc;

    /// The textbook window: accept unseen non-zero ids newer than `top - size`.
    struct Model {
        size: u64,
        top: u64,
        seen: HashSet<u64>,
    }

    impl Model {
        fn check(&mut self, id: u32) -> bool {
            let id = u64::from(id);
            if id == 0 || id + self.size <= self.top || self.seen.contains(&id) {
                return false;
            }
            self.seen.insert(id);
            self.top = self.top.max(id);
            true
        }
    }

    proptest! {
        #[test]
        fn matches_model(size in prop_oneof![Just(32u32), Just(64), Just(100), Just(2048)],
                         base in 0u32..5000,
                         ops in prop::collection::vec((0u32..6000, any::<bool>()), 1..400)) {
            let w = AtomicReplayWindow::new(size);
            let mut m = Model { size: u64::from(w.size()), top: 0, seen: HashSet::new() };
            for (off, jump) in ops {
                // Mostly near the front, sometimes far ahead.
                let id = if jump { base.saturating_add(off * 7) } else { base.saturating_add(off) };
                prop_assert_eq!(w.check_and_set(id).is_ok(), m.check(id), "id {}", id);
            }
        }
    }

    #[test]
    fn basics() {
        let w = AtomicReplayWindow::new(64);
        assert_eq!(w.check_and_set(0), Err(ReplayError::Zero));
        assert!(w.check_and_set(1).is_ok());
        assert_eq!(w.check_and_set(1), Err(ReplayError::Replayed));
        assert!(w.check_and_set(100).is_ok());
        assert!(w.check_and_set(37).is_ok());
        assert_eq!(w.check_and_set(36), Err(ReplayError::TooOld));
        assert!(w.check_and_set(u32::MAX).is_ok());
        assert_eq!(w.check_and_set(u32::MAX), Err(ReplayError::Replayed));
    }

    #[test]
    fn concurrent_no_double_accept() {
        let w = Arc::new(AtomicReplayWindow::new(2048));
        let hits = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                let hits = hits.clone();
                std::thread::spawn(move || {
                    for id in 1..20_000u32 {
                        if w.check_and_set(id).is_ok() {
                            hits.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // Every id offered by 4 threads; each at most once, and in-window ones exactly once.
        let h = hits.load(Ordering::Relaxed);
        assert!(h <= 19_999, "{h}");
        assert!(h >= 19_999 - 2048, "{h}");
    }
}
