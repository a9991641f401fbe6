//! An in-memory datagram link between two [`Port`](super::Port)s, so that
//! two workers exchange datagrams in a unit test without root or sockets
//! (wireguard-go's `conn/bindtest`).
//!
//! What it keeps of the kernel's UDP: a datagram is delivered whole or not
//! at all, to the end whose address is its destination (others are counted
//! in [`MemoryLink::misrouted`] and dropped); a `UDP_SEGMENT` (GSO) run
//! leaves as its separate datagrams, and with GRO on, consecutive
//! datagrams from one source of one size (the last may be shorter, at most
//! 64 and 64 KiB together) are received as one message with a stride, as
//! `UDP_GRO` hands them over. A port can be told to refuse GSO runs with
//! `EIO`, as a kernel without checksum offload on the egress device does.
//!
//! What it adds: loss and reordering on demand (seeded, so a test is
//! repeatable), and direct access to the datagrams in flight, to duplicate,
//! drop, reorder, inspect or inject them. Each direction holds at most
//! [`WIRE_CAPACITY`] datagrams; more are dropped, as a full socket buffer
//! drops them.
//!
//! It has no descriptor to poll: a worker on it is driven by its test.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::sys::{GSO_MAX_BYTES, GSO_MAX_SEGMENTS, RecvBatch, TxMsg};

/// Datagrams in flight per direction before more are dropped.
pub const WIRE_CAPACITY: usize = 4096;

/// One datagram on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    pub src: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Loss and reordering applied to datagrams as they are sent toward one end.
#[derive(Clone, Copy, Debug, Default)]
pub struct Impairment {
    /// Drop about one datagram in this many (0: none).
    pub loss_one_in: u32,
    /// Swap about one datagram in this many with the one sent before it (0: none).
    pub reorder_one_in: u32,
    /// Seed of the generator that picks them.
    pub seed: u64,
}

/// One direction of the link: what waits for the end at `dst`.
#[derive(Default)]
struct Direction {
    queue: VecDeque<Datagram>,
    impairment: Impairment,
    /// xorshift64 state (from `impairment.seed`).
    rng: u64,
    dropped: u64,
}

impl Direction {
    /// Whether a one-in-`n` event happens (`n` = 0: never).
    fn one_in(&mut self, n: u32) -> bool {
        if n == 0 {
            return false;
        }
        if self.rng == 0 {
            self.rng = self.impairment.seed | 1;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng.is_multiple_of(u64::from(n))
    }

    fn push(&mut self, d: Datagram) {
        if self.queue.len() >= WIRE_CAPACITY || self.one_in(self.impairment.loss_one_in) {
            self.dropped += 1;
            return;
        }
        self.queue.push_back(d);
        if self.queue.len() >= 2 && self.one_in(self.impairment.reorder_one_in) {
            let n = self.queue.len();
            self.queue.swap(n - 1, n - 2);
        }
    }
}

struct Wire {
    /// The two ends' addresses; `toward[i]` is what waits for `ends[i]`.
    ends: [SocketAddr; 2],
    toward: [Direction; 2],
    misrouted: u64,
    /// GSO runs (messages of several datagrams) sent, and refused with `EIO`.
    gso_runs: u64,
    gso_refused: u64,
    /// Per end: `sendmmsg` calls made.
    send_calls: [u64; 2],
    /// Per end: receive GSO runs coalesced (`UDP_GRO`).
    gro: [bool; 2],
    /// Per end: refuse to send GSO runs (`EIO`).
    refuse_gso: [bool; 2],
}

impl Wire {
    fn end(&self, addr: SocketAddr) -> Option<usize> {
        self.ends.iter().position(|e| *e == addr)
    }
}

/// The test's handle on the link: impairments and the datagrams in flight.
#[derive(Clone)]
pub struct MemoryLink {
    wire: Arc<Mutex<Wire>>,
}

/// One end of the link, as a worker's [`Port`](super::Port) holds it
/// (cloned, like a socket dup'ed for several workers).
#[derive(Clone)]
pub struct MemoryPort {
    wire: Arc<Mutex<Wire>>,
    end: usize,
}

/// A link between `a` and `b`: the two ports (GRO on, GSO accepted) and the handle.
pub fn link(a: SocketAddr, b: SocketAddr) -> (MemoryPort, MemoryPort, MemoryLink) {
    let wire = Arc::new(Mutex::new(Wire {
        ends: [a, b],
        toward: Default::default(),
        misrouted: 0,
        gso_runs: 0,
        gso_refused: 0,
        send_calls: [0; 2],
        gro: [true; 2],
        refuse_gso: [false; 2],
    }));
    (
        MemoryPort {
            wire: wire.clone(),
            end: 0,
        },
        MemoryPort {
            wire: wire.clone(),
            end: 1,
        },
        MemoryLink { wire },
    )
}

fn lock(wire: &Mutex<Wire>) -> MutexGuard<'_, Wire> {
    wire.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MemoryLink {
    fn toward<R>(&self, dst: SocketAddr, f: impl FnOnce(&mut Direction) -> R) -> R {
        let mut w = lock(&self.wire);
        let Some(end) = w.end(dst) else {
            panic!("{dst} is not an end of this link");
        };
        f(&mut w.toward[end])
    }

    /// Apply `impairment` to datagrams sent to `dst` from now on.
    pub fn impair(&self, dst: SocketAddr, impairment: Impairment) {
        self.toward(dst, |d| {
            d.impairment = impairment;
            d.rng = 0;
        });
    }

    /// Take every datagram in flight to `dst`, oldest first.
    pub fn take(&self, dst: SocketAddr) -> Vec<Datagram> {
        self.toward(dst, |d| d.queue.drain(..).collect())
    }

    /// Put `datagrams` on the wire to `dst` after those in flight (no impairment).
    pub fn inject(&self, dst: SocketAddr, datagrams: impl IntoIterator<Item = Datagram>) {
        self.toward(dst, |d| d.queue.extend(datagrams));
    }

    /// Datagrams in flight to `dst`.
    pub fn in_flight(&self, dst: SocketAddr) -> usize {
        self.toward(dst, |d| d.queue.len())
    }

    /// Datagrams to `dst` lost to the impairment or a full wire.
    pub fn dropped(&self, dst: SocketAddr) -> u64 {
        self.toward(dst, |d| d.dropped)
    }

    /// Datagrams sent to an address that is neither end.
    pub fn misrouted(&self) -> u64 {
        lock(&self.wire).misrouted
    }

    /// GSO runs (`sendmmsg` messages of several datagrams) sent, and refused with `EIO`.
    pub fn gso_runs(&self) -> (u64, u64) {
        let w = lock(&self.wire);
        (w.gso_runs, w.gso_refused)
    }

    /// `sendmmsg` calls made by the end at `addr` (0 for an address that is neither end).
    pub fn send_calls(&self, addr: SocketAddr) -> u64 {
        let w = lock(&self.wire);
        w.end(addr).map_or(0, |end| w.send_calls[end])
    }

    /// Whether the end at `addr` receives coalesced runs (`UDP_GRO`; on by default).
    pub fn set_gro(&self, addr: SocketAddr, on: bool) {
        let mut w = lock(&self.wire);
        if let Some(end) = w.end(addr) {
            w.gro[end] = on;
        }
    }

    /// Whether the end at `addr` refuses GSO runs with `EIO` (off by default).
    pub fn set_refuse_gso(&self, addr: SocketAddr, on: bool) {
        let mut w = lock(&self.wire);
        if let Some(end) = w.end(addr) {
            w.refuse_gso[end] = on;
        }
    }
}

impl MemoryPort {
    pub fn local_addr(&self) -> SocketAddr {
        lock(&self.wire).ends[self.end]
    }

    /// `sendmmsg` on the link: every message's datagrams, in order. Returns
    /// the messages sent; `EIO` for a GSO run when this end refuses them
    /// (before anything of it is sent, as the kernel fails the call).
    pub(crate) fn send<'a>(
        &self,
        msgs: &[TxMsg],
        pkt: &dyn Fn(usize) -> &'a [u8],
    ) -> io::Result<usize> {
        let mut w = lock(&self.wire);
        let src = w.ends[self.end];
        w.send_calls[self.end] += 1;
        for (sent, m) in msgs.iter().enumerate() {
            if m.count > 1 && w.refuse_gso[self.end] {
                w.gso_refused += 1;
                return if sent == 0 {
                    Err(io::Error::from_raw_os_error(libc::EIO))
                } else {
                    Ok(sent)
                };
            }
            if m.count > 1 {
                w.gso_runs += 1;
            }
            let Some(end) = w.end(m.dst) else {
                w.misrouted += m.count as u64;
                continue;
            };
            for p in m.first..m.first + m.count {
                w.toward[end].push(Datagram {
                    src,
                    bytes: pkt(p).to_vec(),
                });
            }
        }
        Ok(msgs.len())
    }

    /// `recvmmsg` on the link: fill `batch` with what waits for this end
    /// (coalesced as `UDP_GRO` does when it is on); 0 when nothing does.
    pub(crate) fn recv(&self, batch: &mut RecvBatch) -> usize {
        let mut w = lock(&self.wire);
        let gro = w.gro[self.end];
        let queue = &mut w.toward[self.end].queue;
        batch.clear();
        while let Some(first) = queue.front() {
            let src = first.src;
            let stride = first.bytes.len();
            let pushed = batch.push_with(src, stride, |buf| {
                let mut len = 0;
                let mut segments = 0;
                while let Some(d) = queue.front() {
                    let fits = len + d.bytes.len() <= buf.len().min(GSO_MAX_BYTES);
                    let joins = segments == 0
                        || (gro
                            && d.src == src
                            && d.bytes.len() <= stride
                            && segments < GSO_MAX_SEGMENTS
                            && fits);
                    if !joins {
                        break;
                    }
                    let Some(d) = queue.pop_front() else { break };
                    // A datagram larger than a receive buffer is cut, as recvmsg cuts it.
                    let n = d.bytes.len().min(buf.len() - len);
                    buf[len..len + n].copy_from_slice(&d.bytes[..n]);
                    len += n;
                    segments += 1;
                    // Only the last segment of a GRO message may be short.
                    if n < stride {
                        break;
                    }
                }
                len
            });
            if !pushed {
                break;
            }
        }
        batch.meta.len()
    }
}
