//! Replay windows: the long form (id + time) for tls-auth/tls-crypt control
//! packets (docs/protocol.md §2.4) and the short form for data-channel packet ids
//! (§8.4).
//!
//! Both split `check` from `commit` so a caller can check cheaply, finish
//! authenticating, and only then record the id: an unauthenticated packet
//! must never move a window.

use crate::wire::WireError;
use crate::wrap::ReplayId;

/// 2.6's default `--replay-window` size for control packets.
pub const DEFAULT_CONTROL_WINDOW: u32 = 64;
/// 2.6's default `--replay-window` time limit in seconds.
pub const DEFAULT_BACKTRACK_SECS: u64 = 15;
/// Our default data-channel window: larger than 2.6's 64 because our sender
/// spreads packets over several queues and reorders more.
pub const DEFAULT_DATA_WINDOW: u32 = 1024;
/// Largest window either type accepts (2.6's own maximum); bigger requests are clamped.
pub const MAX_WINDOW: u32 = 65536;

/// Marks a ring slot of [`ControlReplayWindow`] whose id has not been received.
const UNSEEN: u64 = u64::MAX;

/// Receive window for the long packet ids of tls-auth/tls-crypt (doc §2.4).
#[derive(Clone, Debug)]
pub struct ControlReplayWindow {
    window: u32,
    backtrack_secs: u64,
    /// `(time, highest id)` of the current window; `None` until the first commit.
    high: Option<(u32, u32)>,
    /// Receipt time (caller's seconds) of id `i` at `i % window`, or [`UNSEEN`].
    /// Holds only ids in `(high - window, high]`, which never collide.
    recv_at: Box<[u64]>,
}

impl Default for ControlReplayWindow {
    fn default() -> Self {
        Self::new(DEFAULT_CONTROL_WINDOW, DEFAULT_BACKTRACK_SECS)
    }
}

impl ControlReplayWindow {
    /// `window` ids (clamped to `1..=MAX_WINDOW`) and the time-backtrack limit in seconds.
    pub fn new(window: u32, backtrack_secs: u64) -> Self {
        let window = window.clamp(1, MAX_WINDOW);
        ControlReplayWindow {
            window,
            backtrack_secs,
            high: None,
            recv_at: vec![UNSEEN; window as usize].into_boxed_slice(),
        }
    }

    fn slot(&self, id: u32) -> usize {
        (id % self.window) as usize
    }

    /// Whether `r` is acceptable at `now_secs` (any monotonic seconds clock of the caller's).
    pub fn check(&self, r: ReplayId, now_secs: u64) -> Result<(), WireError> {
        if r.id == 0 {
            return Err(WireError::Replay);
        }
        let Some((time, high)) = self.high else {
            return Ok(());
        };
        if r.time != time {
            return if r.time > time {
                Ok(())
            } else {
                Err(WireError::Replay)
            };
        }
        if r.id > high {
            return Ok(());
        }
        if high - r.id >= self.window {
            return Err(WireError::Replay);
        }
        if self.recv_at.get(self.slot(r.id)) != Some(&UNSEEN) {
            return Err(WireError::Replay);
        }
        // A late packet is only taken while every higher id it overtook is recent;
        // the scan is bounded by the window and only runs for reordered packets.
        let stale = (r.id + 1..=high).any(|i| {
            self.recv_at
                .get(self.slot(i))
                .is_some_and(|&t| t != UNSEEN && now_secs.saturating_sub(t) > self.backtrack_secs)
        });
        if stale {
            return Err(WireError::Replay);
        }
        Ok(())
    }

    /// Record `r` as received at `now_secs`. Call after [`Self::check`] passed
    /// and the packet authenticated; an id the window would refuse is ignored.
    pub fn commit(&mut self, r: ReplayId, now_secs: u64) {
        if self.check(r, now_secs).is_ok() {
            self.record(r, now_secs);
        }
    }

    /// [`Self::check`], and on success [`Self::commit`].
    pub fn check_and_commit(&mut self, r: ReplayId, now_secs: u64) -> Result<(), WireError> {
        self.check(r, now_secs)?;
        self.record(r, now_secs);
        Ok(())
    }

    /// Commit an id that passed [`Self::check`].
    fn record(&mut self, r: ReplayId, now_secs: u64) {
        match self.high {
            Some((time, high)) if r.time == time => {
                if r.id > high {
                    if r.id - high >= self.window {
                        self.recv_at.fill(UNSEEN);
                    } else {
                        // Ids that just left the window share slots with the new ones.
                        for i in high + 1..r.id {
                            let s = self.slot(i);
                            if let Some(t) = self.recv_at.get_mut(s) {
                                *t = UNSEEN;
                            }
                        }
                    }
                    self.high = Some((time, r.id));
                }
            }
            // First packet or a newer time: start a fresh window.
            _ => {
                self.recv_at.fill(UNSEEN);
                self.high = Some((r.time, r.id));
            }
        }
        let s = self.slot(r.id);
        if let Some(t) = self.recv_at.get_mut(s) {
            *t = now_secs;
        }
    }
}

/// One 64-id block of [`DataReplayWindow`]: which block it holds and which ids of it were seen.
#[derive(Clone, Copy, Debug, Default)]
struct Block {
    number: u64,
    bits: u64,
}

/// Receive window for data-channel packet ids (doc §8.4): accepts an unseen,
/// non-zero id if it is newer than `highest - size`.
///
/// The ids are cut into 64-id blocks kept in a ring tagged with their block
/// number, so moving the window forward by any amount is O(1): a slot holding
/// an older block simply counts as empty. With `slots * 64 >= size + 64`, two
/// blocks that both intersect the window never share a slot, which keeps the
/// result exact. The 2.6 time-backtrack rule is not applied: our data plane
/// only bounds reordering by count.
#[derive(Clone, Debug)]
pub struct DataReplayWindow {
    size: u64,
    top: u64,
    mask: u64,
    blocks: Box<[Block]>,
}

impl Default for DataReplayWindow {
    fn default() -> Self {
        Self::new(DEFAULT_DATA_WINDOW)
    }
}

impl DataReplayWindow {
    /// A window of `size` ids (clamped to `1..=MAX_WINDOW`).
    pub fn new(size: u32) -> Self {
        let size = u64::from(size.clamp(1, MAX_WINDOW));
        let n = (size.div_ceil(64) + 1).next_power_of_two();
        DataReplayWindow {
            size,
            top: 0,
            mask: n - 1,
            blocks: vec![Block::default(); n as usize].into_boxed_slice(),
        }
    }

    pub fn size(&self) -> u32 {
        self.size as u32
    }

    /// Highest id committed so far (0 if none).
    pub fn top(&self) -> u32 {
        self.top as u32
    }

    fn locate(&self, id: u64) -> (usize, u64, u64) {
        let number = id >> 6;
        ((number & self.mask) as usize, number, 1u64 << (id & 63))
    }

    /// Whether `id` is new and inside the window.
    pub fn check(&self, id: u32) -> bool {
        let id = u64::from(id);
        if id == 0 || id + self.size <= self.top {
            return false;
        }
        let (slot, number, bit) = self.locate(id);
        match self.blocks.get(slot) {
            Some(b) if b.number == number => b.bits & bit == 0,
            Some(b) => b.number < number,
            None => false,
        }
    }

    /// Record `id` as received. Call only after the packet authenticated; ids
    /// [`Self::check`] would refuse are ignored.
    pub fn commit(&mut self, id: u32) {
        let id = u64::from(id);
        if id == 0 || id + self.size <= self.top {
            return;
        }
        let (slot, number, bit) = self.locate(id);
        if let Some(b) = self.blocks.get_mut(slot) {
            if b.number == number {
                b.bits |= bit;
            } else if b.number < number {
                *b = Block { number, bits: bit };
            } else {
                return;
            }
        }
        self.top = self.top.max(id);
    }

    /// [`Self::check`], and if it passed [`Self::commit`].
    pub fn check_and_commit(&mut self, id: u32) -> bool {
        let ok = self.check(id);
        if ok {
            self.commit(id);
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    fn r(id: u32, time: u32) -> ReplayId {
        ReplayId { id, time }
    }

    #[test]
    fn control_rules() {
        let mut w = ControlReplayWindow::default();
        assert!(w.check(r(0, 100), 0).is_err());
        assert!(w.check_and_commit(r(5, 100), 0).is_ok());
        assert!(w.check(r(5, 100), 0).is_err(), "same id twice");
        assert!(w.check_and_commit(r(3, 100), 0).is_ok(), "late, unseen");
        assert!(w.check(r(3, 100), 0).is_err());
        assert!(w.check_and_commit(r(70, 100), 0).is_ok());
        assert!(w.check(r(6, 100), 0).is_err(), "64 ids behind the highest");
        assert!(w.check_and_commit(r(7, 100), 0).is_ok(), "63 ids behind");
        assert!(w.check(r(71, 99), 0).is_err(), "older time");
        assert!(
            w.check_and_commit(r(1, 101), 0).is_ok(),
            "newer time restarts"
        );
        assert!(w.check(r(70, 100), 0).is_err());
        assert!(w.check_and_commit(r(2, 101), 0).is_ok());
        assert!(w.check(r(0, 101), 0).is_err());
    }

    #[test]
    fn control_time_backtrack() {
        let mut w = ControlReplayWindow::new(64, 15);
        w.check_and_commit(r(1, 7), 100).unwrap();
        w.check_and_commit(r(3, 7), 110).unwrap();
        w.check_and_commit(r(5, 7), 120).unwrap();
        // id 4 overtaken only by 5 (received 5 s ago): fine.
        assert!(w.check(r(4, 7), 125).is_ok());
        // id 2 was overtaken by 3, received 16 s ago: too late.
        assert!(w.check(r(2, 7), 126).is_err());
        assert!(w.check(r(2, 7), 125).is_ok());
        // Newer ids are never subject to the time rule.
        assert!(w.check(r(6, 7), 10_000).is_ok());
    }

    #[test]
    fn control_check_does_not_commit() {
        let mut w = ControlReplayWindow::default();
        assert!(w.check(r(1, 1), 0).is_ok());
        assert!(w.check(r(1, 1), 0).is_ok());
        w.commit(r(1, 1), 0);
        assert!(w.check(r(1, 1), 0).is_err());
        // Committing something check refuses changes nothing.
        w.commit(r(9, 0), 0);
        w.commit(r(0, 5), 0);
        assert!(w.check(r(2, 1), 0).is_ok());
    }

    #[test]
    fn data_basics() {
        let mut w = DataReplayWindow::new(64);
        assert!(!w.check(0));
        assert!(w.check_and_commit(1));
        assert!(!w.check_and_commit(1));
        assert!(w.check_and_commit(100));
        assert!(!w.check(36), "64 behind");
        assert!(w.check_and_commit(37), "63 behind");
        assert!(w.check_and_commit(u32::MAX));
        assert!(!w.check(u32::MAX));
        assert!(w.check(u32::MAX - 63));
        assert!(!w.check(u32::MAX - 64));
        assert_eq!(w.top(), u32::MAX);
    }

    #[test]
    fn data_sizes_clamped() {
        assert_eq!(DataReplayWindow::new(0).size(), 1);
        assert_eq!(DataReplayWindow::new(u32::MAX).size(), MAX_WINDOW);
        assert_eq!(DataReplayWindow::default().size(), 1024);
        let mut w = DataReplayWindow::new(MAX_WINDOW);
        assert!(w.check_and_commit(70_000));
        assert!(w.check_and_commit(70_000 - 65_535));
        assert!(!w.check(70_000 - 65_536));
    }

    /// The textbook data window.
    struct DataModel {
        size: u64,
        top: u64,
        seen: HashSet<u64>,
    }

    impl DataModel {
        fn check(&self, id: u32) -> bool {
            let id = u64::from(id);
            id != 0 && id + self.size > self.top && !self.seen.contains(&id)
        }
        fn commit(&mut self, id: u32) {
            if self.check(id) {
                self.seen.insert(u64::from(id));
                self.top = self.top.max(u64::from(id));
            }
        }
    }

    /// Straight transcription of doc §2.4 over a map of every id ever received.
    struct ControlModel {
        window: u32,
        backtrack: u64,
        time: Option<u32>,
        seen: HashMap<u32, u64>,
    }

    impl ControlModel {
        fn check(&self, r: ReplayId, now: u64) -> bool {
            if r.id == 0 {
                return false;
            }
            let Some(time) = self.time else { return true };
            if r.time != time {
                return r.time > time;
            }
            let high = self.seen.keys().copied().max().unwrap_or(0);
            if r.id > high {
                return true;
            }
            high - r.id < self.window
                && !self.seen.contains_key(&r.id)
                && !self
                    .seen
                    .iter()
                    .any(|(&i, &t)| i > r.id && now.saturating_sub(t) > self.backtrack)
        }
        fn commit(&mut self, r: ReplayId, now: u64) {
            if !self.check(r, now) {
                return;
            }
            if self.time != Some(r.time) {
                self.time = Some(r.time);
                self.seen.clear();
            }
            self.seen.insert(r.id, now);
        }
    }

    proptest! {
        #[test]
        fn data_matches_model(
            size in prop_oneof![Just(64u32), Just(65), Just(1024), 1u32..300, Just(MAX_WINDOW)],
            steps in proptest::collection::vec((0u32..3000, any::<bool>()), 1..400),
            base in prop_oneof![Just(0u32), Just(u32::MAX - 4000)],
        ) {
            let mut w = DataReplayWindow::new(size);
            let mut m = DataModel { size: u64::from(w.size()), top: 0, seen: HashSet::new() };
            for (off, commit) in steps {
                let id = base.saturating_add(off);
                prop_assert_eq!(w.check(id), m.check(id), "id {}", id);
                if commit {
                    w.commit(id);
                    m.commit(id);
                }
                prop_assert_eq!(u64::from(w.top()), m.top);
            }
        }

        #[test]
        fn control_matches_model(
            window in prop_oneof![Just(64u32), 1u32..80],
            steps in proptest::collection::vec((0u32..200, 0u32..3, 0u64..4, any::<bool>()), 1..300),
        ) {
            let mut w = ControlReplayWindow::new(window, 15);
            let mut m = ControlModel { window, backtrack: 15, time: None, seen: HashMap::new() };
            let mut now = 0u64;
            for (id, time, dt, commit) in steps {
                now += dt;
                let rid = r(id, time);
                prop_assert_eq!(w.check(rid, now).is_ok(), m.check(rid, now), "{:?} at {}", rid, now);
                if commit {
                    w.commit(rid, now);
                    m.commit(rid, now);
                }
            }
        }
    }
}
