//! TUN → UDP / TCP: read a batch, route, clamp MSS, reserve packet ids per
//! peer, seal in place, send as UDP GSO runs (or, over TCP, each peer's
//! packets with their length prefixes in one `writev`).

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferrovpn_proto::stream::{PREFIX_LEN, prefix};

use super::fragment::FragmentOut;
use super::handoff::Jobs;
use super::tos::outer_tos;
use super::{GlobalCounters, HEAD, MAX_SLOTS, NO_DEST, PKT_MAX, Shared, TAIL, TUN_BATCH, ip_addrs};
use crate::mss;
use crate::peers::{KeyState, Peer, Snapshot, now_nanos};
use crate::stream::Streams;
use crate::sys::TxMsg;
use crate::tun::{RawFrame, TunQueue};
use crate::udp::{GSO_MAX_BYTES, GSO_MAX_SEGMENTS, Port, Sender};

/// One peer's share of an outbound batch.
struct Slot {
    peer: Arc<Peer>,
    dst: SocketAddr,
    key: Option<Arc<KeyState>>,
    count: u32,
    next_id: u32,
    sent: u64,
    bytes: u64,
    /// Its packets' bytes on the link (TCP length prefixes included).
    link_bytes: u64,
    drops: u64,
    /// Its packets go on its TCP connection (length-prefixed), not UDP.
    stream: bool,
    /// Its datagrams leave in rounds ([`Peer::reads_one_by_one`]).
    in_rounds: bool,
    /// Its datagrams planned so far in this batch.
    planned: usize,
}

/// Where sealed packets go.
#[derive(Clone, Copy)]
pub(crate) enum Out<'a> {
    Udp(&'a Port),
    Stream(&'a Streams),
    /// A server with UDP and TCP listeners: a peer with a TCP connection
    /// gets its packets there, the others by UDP.
    Both(&'a Port, &'a Streams),
}

impl<'a> Out<'a> {
    pub(super) fn udp(self) -> Option<&'a Port> {
        match self {
            Out::Udp(u) | Out::Both(u, _) => Some(u),
            Out::Stream(_) => None,
        }
    }

    fn streams(self) -> Option<&'a Streams> {
        match self {
            Out::Stream(s) | Out::Both(_, s) => Some(s),
            Out::Udp(_) => None,
        }
    }
}

/// TUN → UDP / TCP: read, route, seal, send.
pub(crate) struct Outbound {
    raw: RawFrame,
    pub(super) bufs: Vec<Vec<u8>>,
    pub(super) sizes: Vec<usize>,
    dest: Vec<u16>,
    wire: Vec<(usize, usize)>,
    /// Sealed datagrams in UDP send order (indexes into `bufs`).
    order: Vec<usize>,
    /// Sealed frames for TCP connections, in order (indexes into `bufs`).
    stream_order: Vec<usize>,
    slots: Vec<Slot>,
    msgs: Vec<TxMsg>,
    /// The send round of each message of `msgs` (see [`Rounds`]).
    rounds: Rounds,
    pub(super) sender: Sender,
    /// The `fragment` path's buffers, made on its first use.
    fragmenting: Option<Box<FragmentOut>>,
    /// `seal-spread`: this worker's jobs ([`super::handoff`]).
    pub(super) jobs: Jobs,
    /// The index of the worker this belongs to.
    pub(super) worker: usize,
    /// Packets read from the TUN since the worker woke, and their bytes
    /// ([`super::inbound::tun_may_wait`]).
    pub(super) read_since_wake: (u64, u64),
}

pub(super) fn route<'a>(snap: &'a Snapshot, pkt: &[u8]) -> Option<&'a Arc<Peer>> {
    if let Some(p) = &snap.client_default {
        return Some(p);
    }
    ip_addrs(pkt)?.dst_peer(snap)
}

impl Outbound {
    pub(super) fn new(gso: bool) -> Self {
        Outbound {
            raw: RawFrame::default(),
            bufs: (0..TUN_BATCH)
                .map(|_| vec![0u8; HEAD + PKT_MAX + TAIL])
                .collect(),
            sizes: vec![0; TUN_BATCH],
            dest: vec![NO_DEST; TUN_BATCH],
            wire: vec![(0, 0); TUN_BATCH],
            order: Vec::with_capacity(TUN_BATCH),
            stream_order: Vec::with_capacity(TUN_BATCH),
            slots: Vec::with_capacity(MAX_SLOTS),
            msgs: Vec::with_capacity(TUN_BATCH),
            rounds: Rounds::new(),
            sender: Sender::new(TUN_BATCH, TUN_BATCH, gso),
            fragmenting: None,
            jobs: Jobs::default(),
            worker: 0,
            read_since_wake: (0, 0),
        }
    }

    /// Read one TUN batch; returns the packet count.
    pub(super) fn read(&mut self, tun: &TunQueue, counters: &GlobalCounters) -> usize {
        let (n, errors) = tun.read_batch(&mut self.raw, &mut self.bufs, &mut self.sizes, HEAD);
        if errors > 0 {
            counters
                .tun_read_errors
                .fetch_add(errors, Ordering::Relaxed);
        }
        let bytes: usize = self.sizes[..n].iter().sum();
        self.read_since_wake.0 += n as u64;
        self.read_since_wake.1 += bytes as u64;
        n
    }

    /// Route, seal and send packets `bufs[..n]` (each at `HEAD..HEAD + sizes[i]`).
    pub(super) fn process(&mut self, n: usize, link: Out<'_>, sh: &Shared) {
        if let Some(fragment) = &sh.fragment {
            // `fragment` (UDP only): a path of its own, so that the batch
            // below stays as it is for everyone else.
            let gso = self.sender.gso;
            self.fragmenting
                .get_or_insert_with(|| Box::new(FragmentOut::new(fragment, gso)))
                .process(&mut self.bufs[..n], &self.sizes[..n], link, sh, fragment);
            return;
        }
        if let Out::Udp(udp) = link
            && self.hand_off(n, udp, sh)
        {
            return;
        }
        // Which peers have a TCP connection: only asked when both kinds exist.
        let conns = match link {
            Out::Both(_, streams) => Some(streams.load()),
            _ => None,
        };
        let snap = sh.peers.load();
        self.slots.clear();
        for i in 0..n {
            let len = self.sizes[i];
            let pkt = &self.bufs[i][HEAD..HEAD + len];
            self.dest[i] = NO_DEST;
            let Some(peer) = route(&snap, pkt) else {
                sh.counters.no_route.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let slot = match self.slots.iter().position(|s| Arc::ptr_eq(&s.peer, peer)) {
                Some(s) => s,
                None if self.slots.len() < MAX_SLOTS => {
                    let dst = **peer.remote.load();
                    let stream = match (link, &conns) {
                        (Out::Both(..), Some(c)) => c.contains_key(&dst),
                        _ => matches!(link, Out::Stream(_)),
                    };
                    self.slots.push(Slot {
                        peer: peer.clone(),
                        dst,
                        key: None,
                        count: 0,
                        next_id: 0,
                        sent: 0,
                        bytes: 0,
                        link_bytes: 0,
                        drops: 0,
                        stream,
                        in_rounds: peer.reads_one_by_one,
                        planned: 0,
                    });
                    self.slots.len() - 1
                }
                None => continue,
            };
            self.slots[slot].count += 1;
            self.dest[i] = slot as u16;
        }
        drop(snap);
        drop(conns);
        // One contiguous id range per peer for this batch.
        for s in &mut self.slots {
            let ks = s.peer.keys.load();
            if let Some(k) = ks.send_key()
                && let Some(start) = s.peer.reserve_ids(k, s.count)
            {
                s.next_id = start;
                s.key = Some(k.clone());
            }
        }
        self.order.clear();
        self.stream_order.clear();
        self.msgs.clear();
        self.rounds.clear();
        let mut runs = GsoRuns::default();
        // Link bytes of the batch, prefixes included (as 2.6 counts them).
        let mut written = 0u64;
        for i in 0..n {
            let d = self.dest[i];
            if d == NO_DEST {
                continue;
            }
            let s = &mut self.slots[usize::from(d)];
            let Some(k) = &s.key else {
                s.drops += 1;
                continue;
            };
            let len = self.sizes[i];
            let id = s.next_id;
            s.next_id = s.next_id.wrapping_add(1);
            let buf = &mut self.bufs[i];
            // The clamp depends on the key's cipher (CBC has more overhead).
            let mss = if k.keys.cipher.is_aead() {
                sh.mss
            } else {
                sh.mss_cbc
            };
            if let Some((m4, m6)) = mss {
                mss::clamp(&mut buf[HEAD..HEAD + len], m4, m6);
            }
            let tos = if sh.passtos {
                outer_tos(&buf[HEAD..HEAD + len])
            } else {
                0
            };
            let Some((at, framed)) = s.peer.compression.frame(buf, HEAD, len) else {
                s.drops += 1;
                continue;
            };
            // AEAD or CBC, P_DATA_V2 or V1: the key knows its header room.
            let Ok((start, wire_len)) = s.peer.seal(k, id, buf, at, framed) else {
                s.drops += 1;
                continue;
            };
            let framing = if s.stream {
                prefix(wire_len)
            } else {
                Some([0; PREFIX_LEN])
            };
            let Some(framing) = framing else {
                s.drops += 1;
                continue;
            };
            self.wire[i] = (start, wire_len);
            s.sent += 1;
            s.bytes += len as u64;
            let link_bytes = (wire_len + if s.stream { PREFIX_LEN } else { 0 }) as u64;
            s.link_bytes += link_bytes;
            written += link_bytes;
            if s.stream {
                // HEAD leaves room for the prefix in front of any header.
                buf[start - PREFIX_LEN..start].copy_from_slice(&framing);
                self.stream_order.push(i);
            } else {
                let round = if s.in_rounds {
                    let round = s.planned / ROUND_DATAGRAMS;
                    if s.planned > 0 && s.planned.is_multiple_of(ROUND_DATAGRAMS) {
                        // A GSO run never spans two rounds.
                        runs.close();
                    }
                    round
                } else {
                    0
                };
                s.planned += 1;
                runs.push(&mut self.msgs, self.order.len(), d, s.dst, wire_len, tos);
                self.rounds.planned(self.msgs.len(), round);
                self.order.push(i);
            }
        }
        if let Some(streams) = link.streams()
            && !self.stream_order.is_empty()
        {
            self.send_streams(streams, sh);
        }
        if let Some(udp) = link.udp()
            && !self.msgs.is_empty()
        {
            let bufs = &self.bufs;
            let order = &self.order;
            let wire = &self.wire;
            let get = |j: usize| -> &[u8] {
                let i = order[j];
                let (st, l) = wire[i];
                &bufs[i][st..st + l]
            };
            self.rounds
                .send(&mut self.sender, udp, &self.msgs, &get, &sh.counters);
        }
        if let Some(link) = &sh.link {
            link.written(written);
        }
        let now = now_nanos();
        for s in self.slots.drain(..) {
            let c = &s.peer.counters;
            if s.sent > 0 {
                c.sent(s.sent, s.bytes, s.link_bytes, now);
            }
            if s.drops > 0 {
                c.tx_drops.fetch_add(s.drops, Ordering::Relaxed);
            }
        }
    }
}

impl Outbound {
    /// Each peer's sealed packets of the batch, prefixes included, in one
    /// `writev` on its connection.
    fn send_streams(&mut self, streams: &Streams, sh: &Shared) {
        let conns = streams.load();
        for (si, s) in self.slots.iter_mut().enumerate() {
            if s.sent == 0 || !s.stream {
                continue;
            }
            let Some(conn) = conns.get(&s.dst) else {
                // The connection went away in the meantime.
                s.drops += s.sent;
                continue;
            };
            let mut frames = [IoSlice::new(&[]); TUN_BATCH];
            let mut count = 0;
            for &i in &self.stream_order {
                if usize::from(self.dest[i]) == si {
                    let (start, len) = self.wire[i];
                    frames[count] = IoSlice::new(&self.bufs[i][start - PREFIX_LEN..start + len]);
                    count += 1;
                }
            }
            let lost = streams.send(conn, &mut frames[..count]);
            if lost > 0 {
                s.drops += lost;
                sh.counters
                    .stream_send_dropped
                    .fetch_add(lost, Ordering::Relaxed);
            }
        }
    }
}

/// The most datagrams of one batch that go to a peer which reads one
/// datagram per system call ([`Peer::reads_one_by_one`]) before the worker
/// yields the CPU: the rest of them leave in later rounds of this size.
///
/// A TCP sender behind the TUN hands over 64 KiB super-packets, and a
/// batch of them goes out in microseconds. Stock OpenVPN 2.6 reads its
/// socket one datagram per `recvfrom` into the default 208 KiB receive
/// buffer: on a host where the worker and that client share CPUs, the
/// client does not run until the worker blocks, so a full batch of 128
/// datagrams overflowed its buffer and dropped a quarter of them (each a
/// TCP retransmission, sealed and sent again). Measured with one stock
/// client on the 2-core bench machine (`scripts/bench-stock.sh`, down):
/// rounds of 16, 24 or 32 with a yield between cut the drops by half or
/// more and the server CPU per GB by more than half; without the yield,
/// smaller GSO runs or rounds changed nothing.
pub(crate) const ROUND_DATAGRAMS: usize = 32;

/// The send round of each message of a batch: round 0 holds every peer's
/// first [`ROUND_DATAGRAMS`] datagrams (and all datagrams of peers that
/// take bursts), round 1 the next ones of the peers that read one by one,
/// and so on. Round 0 leaves at once, so a lone packet never waits; the
/// worker yields the CPU before each later round, at most
/// `TUN_BATCH / ROUND_DATAGRAMS - 1` times per batch.
pub(super) struct Rounds {
    /// Round of message `i`.
    of_msg: Vec<u8>,
    last: u8,
    /// Scratch: the messages of one round.
    scratch: Vec<TxMsg>,
}

impl Rounds {
    fn new() -> Self {
        Rounds {
            of_msg: Vec::with_capacity(TUN_BATCH),
            last: 0,
            scratch: Vec::with_capacity(TUN_BATCH),
        }
    }

    fn clear(&mut self) {
        self.of_msg.clear();
        self.last = 0;
    }

    /// A datagram of `round` was just planned, and `msgs` messages exist.
    fn planned(&mut self, msgs: usize, round: usize) {
        let round = u8::try_from(round).unwrap_or(u8::MAX);
        if self.of_msg.len() < msgs {
            self.of_msg.push(round);
            self.last = self.last.max(round);
        }
    }

    /// Send `msgs` round by round, yielding the CPU between rounds.
    fn send<'a>(
        &mut self,
        sender: &mut Sender,
        udp: &Port,
        msgs: &[TxMsg],
        datagram: &dyn Fn(usize) -> &'a [u8],
        counters: &GlobalCounters,
    ) {
        if self.last == 0 {
            send_datagrams(sender, udp, msgs, datagram, counters);
            return;
        }
        for round in 0..=self.last {
            self.scratch.clear();
            self.scratch.extend(
                msgs.iter()
                    .zip(&self.of_msg)
                    .filter(|(_, r)| **r == round)
                    .map(|(m, _)| *m),
            );
            if round > 0 {
                crate::sys::yield_cpu();
            }
            send_datagrams(sender, udp, &self.scratch, datagram, counters);
        }
    }
}

/// Send `msgs` on `udp` (datagram `j` is `datagram(j)`), and count what
/// the kernel refused in `udp_send_dropped`.
pub(super) fn send_datagrams<'a>(
    sender: &mut Sender,
    udp: &Port,
    msgs: &[TxMsg],
    datagram: &dyn Fn(usize) -> &'a [u8],
    counters: &GlobalCounters,
) {
    let before = sender.dropped;
    sender.send(udp, msgs, datagram);
    let lost = sender.dropped - before;
    if lost > 0 {
        counters.udp_send_dropped.fetch_add(lost, Ordering::Relaxed);
    }
}

/// Plans the `sendmmsg` messages of a batch from its sealed datagrams, in
/// send order: consecutive datagrams to one peer share a `UDP_SEGMENT` run
/// while each is exactly the run's segment size. A shorter one is the run's
/// last (the kernel lets only the last segment be short); a longer one, a
/// peer change, another TOS byte (`passtos`), `GSO_MAX_SEGMENTS` or
/// `GSO_MAX_BYTES` start a new message.
#[derive(Default)]
pub(super) struct GsoRuns {
    /// The last message may take more segments.
    open: bool,
    /// Peer slot of the last message.
    slot: u16,
}

impl GsoRuns {
    /// The next datagram starts a new message.
    pub(super) fn close(&mut self) {
        self.open = false;
    }

    /// Add datagram `index` (`len` bytes for `slot`, whose address is
    /// `dst`, with TOS byte `tos`) to `msgs`.
    pub(super) fn push(
        &mut self,
        msgs: &mut Vec<TxMsg>,
        index: usize,
        slot: u16,
        dst: SocketAddr,
        len: usize,
        tos: u8,
    ) {
        if let Some(m) = msgs.last_mut()
            && self.open
            && self.slot == slot
            && m.tos == tos
            && len <= m.seg
            && m.count < GSO_MAX_SEGMENTS
            && (m.count + 1) * m.seg <= GSO_MAX_BYTES
        {
            m.count += 1;
            self.open = len == m.seg;
            return;
        }
        msgs.push(TxMsg {
            dst,
            first: index,
            count: 1,
            seg: len,
            tos,
        });
        self.open = true;
        self.slot = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (count, seg) of each message for datagrams given as (slot, len).
    fn plan(datagrams: &[(u16, usize)]) -> Vec<(usize, usize)> {
        let dst: SocketAddr = "192.0.2.1:1194".parse().unwrap();
        let mut runs = GsoRuns::default();
        let mut msgs = Vec::new();
        for (i, &(slot, len)) in datagrams.iter().enumerate() {
            runs.push(&mut msgs, i, slot, dst, len, 0);
        }
        let mut first = 0;
        for m in &msgs {
            assert_eq!(m.first, first, "messages cover the datagrams in order");
            first += m.count;
        }
        assert_eq!(first, datagrams.len());
        msgs.iter().map(|m| (m.count, m.seg)).collect()
    }

    #[test]
    fn equal_datagrams_to_one_peer_share_a_run() {
        assert_eq!(plan(&[(0, 1000); 5]), vec![(5, 1000)]);
        assert_eq!(plan(&[]), vec![]);
    }

    #[test]
    fn a_short_datagram_ends_the_run_and_a_longer_one_starts_another() {
        let p = plan(&[
            (0, 1000),
            (0, 1000),
            (0, 300),
            (0, 1000),
            (0, 500),
            (0, 900),
        ]);
        assert_eq!(p, vec![(3, 1000), (2, 1000), (1, 900)]);
    }

    /// `passtos`: a run holds datagrams of one TOS byte.
    #[test]
    fn another_tos_starts_a_new_message() {
        let dst: SocketAddr = "192.0.2.1:1194".parse().unwrap();
        let mut runs = GsoRuns::default();
        let mut msgs = Vec::new();
        for (i, tos) in [0xb8u8, 0xb8, 0, 0, 0xb8].into_iter().enumerate() {
            runs.push(&mut msgs, i, 0, dst, 1000, tos);
        }
        let got: Vec<(usize, u8)> = msgs.iter().map(|m| (m.count, m.tos)).collect();
        assert_eq!(got, vec![(2, 0xb8), (2, 0), (1, 0xb8)]);
    }

    #[test]
    fn another_peer_starts_a_new_message() {
        let p = plan(&[(0, 1000), (1, 1000), (1, 1000), (0, 1000)]);
        assert_eq!(p, vec![(1, 1000), (2, 1000), (1, 1000)]);
    }

    #[test]
    fn runs_stop_at_the_segment_and_byte_limits() {
        // 64 segments at most.
        assert_eq!(plan(&[(0, 100); 100]), vec![(64, 100), (36, 100)]);
        // 65 507 bytes at most: 46 × 1400 fits, 47 × 1400 does not.
        assert_eq!(
            plan(&[(0, 1400); 100]),
            vec![(46, 1400), (46, 1400), (8, 1400)]
        );
    }
}
