//! The run-to-completion worker: one thread owns one TUN queue and one UDP
//! socket and moves batches between them.
//!
//! ```text
//!  TUN queue ──read (GSO split)──► route ─► MSS clamp ─► reserve ids per peer ─► seal in place ─► sendmmsg (UDP GSO runs)
//!  UDP socket ─recvmmsg (GRO)───► classify byte 0 ─► peer/key ─► open ─► replay ─► ping/OCC/IP ─► TUN write (GRO coalesce)
//!                                        └─ control opcodes ─► bounded channel (try_send) ─► control plane
//! ```
//!
//! No allocation, lock or system call per packet: buffers are preallocated,
//! the peer table is read from an `ArcSwap` snapshot once per batch, counters
//! are added once per batch and peer, and packet ids are reserved as one
//! contiguous range per batch and peer (`fetch_add`). The batch is sent right
//! after sealing, so ids leave in order from each worker; two workers sending
//! to the same peer at the same moment interleave their ranges, which a stock
//! OpenVPN receiver (64-id window) tolerates as long as one batch stays below
//! ~64 packets per peer ahead of another worker's — see the crate docs.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crossbeam_channel::{Sender as ChanSender, TrySendError};
use ferrovpn_proto::compress;
use ferrovpn_proto::data::{OCC_MAGIC, PING_PAYLOAD};
use ferrovpn_proto::wire::{DATA_V1_OVERHEAD, DATA_V2_OVERHEAD};

use crate::UpEvent;
use crate::mss;
use crate::peers::{KeyState, Peer, PeerTable, Snapshot, now_nanos};
use crate::sys::{self, EventFd, Ready, TxMsg};
use crate::tun::{RawFrame, TunQueue};
use crate::udp::{GSO_MAX_BYTES, GSO_MAX_SEGMENTS, RecvBatch, Sender};

/// Header room in front of every TUN packet: a P_DATA_V2 header and the
/// compression framing are written in place there.
pub(crate) const HEAD: usize = DATA_V2_OVERHEAD + compress::MAX_PREFIX;
/// Offset of plaintext in the TUN write buffers (room for the virtio header).
const OFF: usize = 16;
/// Packets per TUN batch (several super-packets).
const TUN_BATCH: usize = 128;
/// Datagram buffers per `recvmmsg` (each up to 64 KiB with GRO).
const RX_MSGS: usize = 8;
/// Decrypted packets gathered before a TUN write.
const RX_OUT: usize = 128;
const NO_DEST: u16 = u16::MAX;
/// Largest IP packet a buffer holds.
const PKT_MAX: usize = 65_535;
/// Peers per batch with their own id range; packets for more are dropped.
const MAX_SLOTS: usize = 64;

/// Counters of the whole data plane (all workers).
#[derive(Default, Debug)]
pub struct GlobalCounters {
    pub control_dropped: AtomicU64,
    pub events_dropped: AtomicU64,
    pub unknown_peer: AtomicU64,
    pub no_route: AtomicU64,
    pub bad_source: AtomicU64,
    pub tun_read_errors: AtomicU64,
    pub tun_write_errors: AtomicU64,
    pub udp_send_dropped: AtomicU64,
    /// Packets relayed peer-to-peer (client-to-client) without the TUN.
    pub relayed: AtomicU64,
}

/// What all workers share.
pub(crate) struct Shared {
    pub peers: PeerTable,
    pub up: ChanSender<UpEvent>,
    pub counters: Arc<GlobalCounters>,
    pub client_to_client: bool,
    pub mss: Option<(u16, u16)>,
    pub stop: AtomicBool,
    pub wake: EventFd,
}

impl Shared {
    fn up(&self, ev: UpEvent, control: bool) {
        match self.up.try_send(ev) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                let c = if control {
                    &self.counters.control_dropped
                } else {
                    &self.counters.events_dropped
                };
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// One peer's share of an outbound batch.
struct Slot {
    peer: Arc<Peer>,
    dst: SocketAddr,
    key: Option<Arc<KeyState>>,
    count: u32,
    next_id: u32,
    sent: u64,
    bytes: u64,
    drops: u64,
}

/// TUN → UDP: read, route, seal, send.
pub(crate) struct Outbound {
    raw: RawFrame,
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    dest: Vec<u16>,
    wire: Vec<(usize, usize)>,
    order: Vec<usize>,
    slots: Vec<Slot>,
    msgs: Vec<TxMsg>,
    sender: Sender,
}

/// UDP → TUN: receive, open, check, write.
pub(crate) struct Inbound {
    rx: RecvBatch,
    out: Vec<Vec<u8>>,
    acc: Vec<(Arc<Peer>, u64, u64)>,
}

pub(crate) struct Worker {
    pub index: usize,
    /// Whether this worker reads its UDP socket (client mode: only worker 0
    /// reads the shared socket; see `Worker::new`).
    udp_rx: bool,
    tun: TunQueue,
    udp: UdpSocket,
    sh: Arc<Shared>,
    ob: Outbound,
    ib: Inbound,
}

fn ipv6_at(pkt: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&pkt[at..at + 16]);
    Ipv6Addr::from(a)
}

fn route<'a>(snap: &'a Snapshot, pkt: &[u8]) -> Option<&'a Arc<Peer>> {
    if let Some(p) = &snap.client_default {
        return Some(p);
    }
    match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 20 => snap
            .by_ip
            .get(&Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19])),
        Some(6) if pkt.len() >= 40 => snap.by_ip6.get(&ipv6_at(pkt, 24)),
        _ => None,
    }
}

impl Outbound {
    fn new(gso: bool) -> Self {
        Outbound {
            raw: RawFrame::default(),
            bufs: (0..TUN_BATCH).map(|_| vec![0u8; HEAD + PKT_MAX]).collect(),
            sizes: vec![0; TUN_BATCH],
            dest: vec![NO_DEST; TUN_BATCH],
            wire: vec![(0, 0); TUN_BATCH],
            order: Vec::with_capacity(TUN_BATCH),
            slots: Vec::with_capacity(MAX_SLOTS),
            msgs: Vec::with_capacity(TUN_BATCH),
            sender: Sender::new(TUN_BATCH, TUN_BATCH, gso),
        }
    }

    /// Read one TUN batch; returns the packet count.
    fn read(&mut self, tun: &TunQueue, counters: &GlobalCounters) -> usize {
        let (n, errors) = tun.read_batch(&mut self.raw, &mut self.bufs, &mut self.sizes, HEAD);
        if errors > 0 {
            counters
                .tun_read_errors
                .fetch_add(errors, Ordering::Relaxed);
        }
        n
    }

    /// Route, seal and send packets `bufs[..n]` (each at `HEAD..HEAD + sizes[i]`).
    fn process(&mut self, n: usize, udp: &UdpSocket, sh: &Shared) {
        let snap = sh.peers.load();
        self.slots.clear();
        for i in 0..n {
            let len = self.sizes[i];
            let pkt = &mut self.bufs[i][HEAD..HEAD + len];
            if let Some((m4, m6)) = sh.mss {
                mss::clamp(pkt, m4, m6);
            }
            self.dest[i] = NO_DEST;
            let Some(peer) = route(&snap, pkt) else {
                sh.counters.no_route.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let slot = match self.slots.iter().position(|s| Arc::ptr_eq(&s.peer, peer)) {
                Some(s) => s,
                None if self.slots.len() < MAX_SLOTS => {
                    self.slots.push(Slot {
                        peer: peer.clone(),
                        dst: **peer.remote.load(),
                        key: None,
                        count: 0,
                        next_id: 0,
                        sent: 0,
                        bytes: 0,
                        drops: 0,
                    });
                    self.slots.len() - 1
                }
                None => continue,
            };
            self.slots[slot].count += 1;
            self.dest[i] = slot as u16;
        }
        drop(snap);
        // One contiguous id range per peer for this batch.
        for s in &mut self.slots {
            let ks = s.peer.keys.load();
            if let Some(k) = ks.send_key() {
                let (start, reneg) = k.reserve_ids(s.count);
                if reneg {
                    s.peer.needs_renegotiation.store(true, Ordering::Relaxed);
                }
                if let Some(start) = start {
                    s.next_id = start;
                    s.key = Some(k.clone());
                }
            }
        }
        self.order.clear();
        self.msgs.clear();
        let mut last_closed = true;
        let mut last_slot = NO_DEST;
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
            let Some((at, framed)) = s.peer.compression.frame(buf, HEAD, len) else {
                s.drops += 1;
                continue;
            };
            let (start, res) = if s.peer.uses_v1() {
                let st = at - DATA_V1_OVERHEAD;
                (
                    st,
                    k.keys.seal.seal_v1(k.key_id, id, &mut buf[st..at + framed]),
                )
            } else {
                let st = at - DATA_V2_OVERHEAD;
                (
                    st,
                    k.keys
                        .seal
                        .seal_v2(k.key_id, s.peer.peer_id, id, &mut buf[st..at + framed]),
                )
            };
            if res.is_err() {
                s.drops += 1;
                continue;
            }
            let wire_len = at + framed - start;
            self.wire[i] = (start, wire_len);
            s.sent += 1;
            s.bytes += len as u64;
            let j = self.order.len();
            self.order.push(i);
            let append = match self.msgs.last() {
                Some(m) => {
                    !last_closed
                        && last_slot == d
                        && wire_len <= m.seg
                        && m.count < GSO_MAX_SEGMENTS
                        && (m.count + 1) * m.seg <= GSO_MAX_BYTES
                }
                None => false,
            };
            if append {
                if let Some(m) = self.msgs.last_mut() {
                    m.count += 1;
                    last_closed = wire_len < m.seg;
                }
            } else {
                self.msgs.push(TxMsg {
                    dst: s.dst,
                    first: j,
                    count: 1,
                    seg: wire_len,
                });
                last_closed = false;
                last_slot = d;
            }
        }
        if !self.msgs.is_empty() {
            let bufs = &self.bufs;
            let order = &self.order;
            let wire = &self.wire;
            let get = |j: usize| -> &[u8] {
                let i = order[j];
                let (st, l) = wire[i];
                &bufs[i][st..st + l]
            };
            let before = self.sender.dropped;
            self.sender.send(udp.as_raw_fd(), &self.msgs, &get);
            let lost = self.sender.dropped - before;
            if lost > 0 {
                sh.counters
                    .udp_send_dropped
                    .fetch_add(lost, Ordering::Relaxed);
            }
        }
        let now = now_nanos();
        for s in self.slots.drain(..) {
            let c = &s.peer.counters;
            if s.sent > 0 {
                c.tx_packets.fetch_add(s.sent, Ordering::Relaxed);
                c.tx_bytes.fetch_add(s.bytes, Ordering::Relaxed);
                c.last_tx.store(now, Ordering::Relaxed);
            }
            if s.drops > 0 {
                c.tx_drops.fetch_add(s.drops, Ordering::Relaxed);
            }
        }
    }
}

enum Verdict {
    /// Plaintext IP packet left in the buffer.
    Deliver(usize),
    /// Forward to another peer (client-to-client).
    Relay(usize),
    Consumed,
}

impl Inbound {
    fn new() -> Self {
        Inbound {
            rx: RecvBatch::new(RX_MSGS),
            out: (0..RX_OUT)
                .map(|_| Vec::with_capacity(2 * OFF + PKT_MAX))
                .collect(),
            acc: Vec::with_capacity(16),
        }
    }

    /// Receive and handle one UDP batch; returns false when nothing was queued.
    fn run(&mut self, udp: &UdpSocket, tun: &mut TunQueue, ob: &mut Outbound, sh: &Shared) -> bool {
        let m = match self.rx.recv(udp.as_raw_fd()) {
            Ok(0) => return false,
            Ok(m) => m,
            Err(e) => {
                // ICMP errors (ECONNREFUSED) on a connected socket and the like.
                tracing::trace!("UDP receive: {e}");
                return true;
            }
        };
        let snap = sh.peers.load();
        let mut k = 0usize;
        let mut relay = 0usize;
        for j in 0..m {
            let meta = self.rx.meta[j];
            let Some(src) = meta.src else { continue };
            let stride = meta.stride.max(1);
            let mut at = 0;
            while at < meta.len {
                let end = (at + stride).min(meta.len);
                let verdict = {
                    let seg = &self.rx.buf(j)[at..end];
                    let out = &mut self.out[k];
                    handle_datagram(seg, src, out, &snap, sh, &mut self.acc)
                };
                at = end;
                match verdict {
                    Verdict::Consumed => {}
                    Verdict::Deliver(len) => {
                        self.out[k].truncate(OFF + len);
                        k += 1;
                        if k == RX_OUT {
                            write_tun(tun, &mut self.out[..k], sh);
                            k = 0;
                        }
                    }
                    Verdict::Relay(len) => {
                        sh.counters.relayed.fetch_add(1, Ordering::Relaxed);
                        let dst = &mut ob.bufs[relay];
                        dst[HEAD..HEAD + len].copy_from_slice(&self.out[k][OFF..OFF + len]);
                        ob.sizes[relay] = len;
                        relay += 1;
                        if relay == TUN_BATCH {
                            ob.process(relay, udp, sh);
                            relay = 0;
                        }
                    }
                }
            }
        }
        drop(snap);
        if k > 0 {
            write_tun(tun, &mut self.out[..k], sh);
        }
        if relay > 0 {
            ob.process(relay, udp, sh);
        }
        let now = now_nanos();
        for (p, pkts, bytes) in self.acc.drain(..) {
            let c = &p.counters;
            c.rx_packets.fetch_add(pkts, Ordering::Relaxed);
            c.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
            c.last_rx.store(now, Ordering::Relaxed);
        }
        true
    }
}

fn write_tun(tun: &mut TunQueue, bufs: &mut [Vec<u8>], sh: &Shared) {
    let (failed, last) = tun.write(bufs, OFF);
    if failed > 0 {
        sh.counters
            .tun_write_errors
            .fetch_add(failed, Ordering::Relaxed);
        tracing::trace!("TUN write: {last:?}");
    }
}

/// Classify, open and check one datagram. Plaintext lands in `out[OFF..]`.
fn handle_datagram(
    seg: &[u8],
    src: SocketAddr,
    out: &mut Vec<u8>,
    snap: &Snapshot,
    sh: &Shared,
    acc: &mut Vec<(Arc<Peer>, u64, u64)>,
) -> Verdict {
    let Some(&b0) = seg.first() else {
        return Verdict::Consumed;
    };
    let (op, key_id) = (b0 >> 3, b0 & 7);
    let peer = match op {
        9 => {
            if seg.len() < DATA_V2_OVERHEAD {
                return Verdict::Consumed;
            }
            let id = u32::from_be_bytes([0, seg[1], seg[2], seg[3]]);
            snap.by_id.get(&id)
        }
        6 => {
            if seg.len() < DATA_V1_OVERHEAD {
                return Verdict::Consumed;
            }
            snap.by_addr.get(&src)
        }
        _ => {
            sh.up(
                UpEvent::Control {
                    from: src,
                    packet: seg.to_vec(),
                },
                true,
            );
            return Verdict::Consumed;
        }
    };
    let Some(peer) = peer else {
        sh.counters.unknown_peer.fetch_add(1, Ordering::Relaxed);
        return Verdict::Consumed;
    };
    let ks = peer.keys.load();
    let Some(key) = ks.get(key_id) else {
        peer.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
        return Verdict::Consumed;
    };
    let need = OFF + seg.len();
    if out.len() > need {
        out.truncate(need);
    } else {
        out.resize(need, 0);
    }
    let (pid, plen) = match key.keys.open.open(seg, &mut out[OFF..]) {
        Ok(r) => r,
        Err(_) => {
            peer.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
            return Verdict::Consumed;
        }
    };
    if key.replay.check_and_set(pid).is_err() {
        peer.counters.replay_drops.fetch_add(1, Ordering::Relaxed);
        return Verdict::Consumed;
    }
    drop(ks);
    let Ok(plen) = peer.compression.unframe(out, OFF, plen, PKT_MAX) else {
        return Verdict::Consumed;
    };
    // Authenticated and fresh: the peer is alive.
    match acc.iter_mut().find(|a| Arc::ptr_eq(&a.0, peer)) {
        Some(a) => {
            a.1 += 1;
            a.2 += plen as u64;
        }
        None => acc.push((peer.clone(), 1, plen as u64)),
    }
    if op == 9
        && snap.client_default.is_none()
        && **peer.remote.load() != src
        && sh.peers.record_float(peer.peer_id, src)
    {
        sh.up(
            UpEvent::Float {
                peer_id: peer.peer_id,
                new_remote: src,
            },
            false,
        );
    }
    let Some(plain) = out.get_mut(OFF..OFF + plen) else {
        return Verdict::Consumed;
    };
    if plain == PING_PAYLOAD {
        return Verdict::Consumed;
    }
    if plain.len() >= OCC_MAGIC.len() && plain[..OCC_MAGIC.len()] == OCC_MAGIC {
        sh.up(
            UpEvent::Occ {
                peer_id: peer.peer_id,
                payload: plain.to_vec(),
            },
            false,
        );
        return Verdict::Consumed;
    }
    let Some(&v) = plain.first() else {
        return Verdict::Consumed;
    };
    match v >> 4 {
        4 if plain.len() >= 20 => {
            let s = Ipv4Addr::new(plain[12], plain[13], plain[14], plain[15]);
            if peer.tunnel_ipv4.is_some_and(|ip| ip != s) {
                sh.counters.bad_source.fetch_add(1, Ordering::Relaxed);
                return Verdict::Consumed;
            }
            if let Some((m4, m6)) = sh.mss {
                mss::clamp(plain, m4, m6);
            }
            if sh.client_to_client && snap.client_default.is_none() {
                let d = Ipv4Addr::new(plain[16], plain[17], plain[18], plain[19]);
                if snap
                    .by_ip
                    .get(&d)
                    .is_some_and(|other| !Arc::ptr_eq(other, peer))
                {
                    return Verdict::Relay(plen);
                }
            }
            Verdict::Deliver(plen)
        }
        6 if plain.len() >= 40 => {
            // Server mode (the peer has tunnel addresses): IPv6 only from its own address.
            let server_mode = peer.tunnel_ipv4.is_some() || peer.tunnel_ipv6.is_some();
            if server_mode && peer.tunnel_ipv6 != Some(ipv6_at(plain, 8)) {
                sh.counters.bad_source.fetch_add(1, Ordering::Relaxed);
                return Verdict::Consumed;
            }
            if let Some((m4, m6)) = sh.mss {
                mss::clamp(plain, m4, m6);
            }
            if sh.client_to_client
                && snap.client_default.is_none()
                && snap
                    .by_ip6
                    .get(&ipv6_at(plain, 24))
                    .is_some_and(|other| !Arc::ptr_eq(other, peer))
            {
                return Verdict::Relay(plen);
            }
            Verdict::Deliver(plen)
        }
        _ => Verdict::Consumed,
    }
}

impl Worker {
    /// `udp_rx: false` for workers that share worker 0's socket (client mode).
    /// The TUN driver steers a flow's outgoing packets to the queue its last
    /// incoming packet was written to (automq flow table), so if several
    /// workers read one socket, flows hop between workers and get reordered;
    /// with one reader every flow sticks to one worker.
    pub(crate) fn new(
        index: usize,
        tun: TunQueue,
        udp: UdpSocket,
        udp_rx: bool,
        gso: bool,
        sh: Arc<Shared>,
    ) -> Self {
        Worker {
            index,
            udp_rx,
            tun,
            udp,
            sh,
            ob: Outbound::new(gso),
            ib: Inbound::new(),
        }
    }

    /// Run until the data plane stops.
    pub(crate) fn run(mut self) {
        // poll ignores negative descriptors: a side we do not (or no longer) read is -1.
        let mut fds = [
            self.tun.as_raw_fd(),
            if self.udp_rx {
                self.udp.as_raw_fd()
            } else {
                -1
            },
            self.sh.wake.as_raw_fd(),
        ];
        let mut ready = [Ready::default(); 3];
        loop {
            if self.sh.stop.load(Ordering::Relaxed) {
                break;
            }
            match sys::poll(&fds, &[false; 3], 1000, &mut ready) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(e) => {
                    tracing::error!("worker {}: poll failed: {e}", self.index);
                    break;
                }
            }
            if ready[2].readable {
                break;
            }
            if ready[0].error && !ready[0].readable {
                // The device went away (or the queue was detached): stop
                // reading it instead of spinning; control traffic still flows.
                tracing::error!(
                    "worker {}: TUN queue failed; no longer reading it",
                    self.index
                );
                fds[0] = -1;
            }
            let tun_ok = fds[0] >= 0;
            // Drain both sides alternately until both are idle, then poll again.
            for _ in 0..256 {
                let mut busy = false;
                if tun_ok {
                    let n = self.ob.read(&self.tun, &self.sh.counters);
                    if n > 0 {
                        self.ob.process(n, &self.udp, &self.sh);
                        busy = true;
                    }
                }
                if self.udp_rx
                    && self
                        .ib
                        .run(&self.udp, &mut self.tun, &mut self.ob, &self.sh)
                {
                    busy = true;
                }
                if !busy || self.sh.stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovpn_proto::data::{Cipher, DataKeys, KeyBlock, Side};
    use proptest::prelude::*;

    fn shared() -> (Arc<Shared>, crossbeam_channel::Receiver<UpEvent>) {
        let peers = PeerTable::new();
        let block = KeyBlock([3; 256]);
        for (id, addr, ip) in [
            (1u32, "192.0.2.1:1194", [10, 8, 0, 2]),
            (0x00FF_FFFF, "192.0.2.2:1194", [10, 8, 0, 3]),
        ] {
            peers.upsert_peer(id, addr.parse().unwrap(), Some(Ipv4Addr::from(ip)));
            peers.install_key(
                id,
                0,
                DataKeys::from_key_block(Cipher::Aes256Gcm, &block, Side::Server),
            );
            peers.set_send_key(id, 0);
        }
        let (tx, rx) = crossbeam_channel::bounded(4);
        let sh = Shared {
            peers,
            up: tx,
            counters: Arc::new(GlobalCounters::default()),
            client_to_client: true,
            mss: Some((1400, 1380)),
            stop: AtomicBool::new(false),
            wake: EventFd::new().unwrap(),
        };
        (Arc::new(sh), rx)
    }

    /// Seal `payload` as the client side would (same key block, client slots).
    fn client_packet(peer_id: u32, id: u32, payload: &[u8]) -> Vec<u8> {
        let k = DataKeys::from_key_block(Cipher::Aes256Gcm, &KeyBlock([3; 256]), Side::Client);
        let mut buf = vec![0u8; HEAD + payload.len()];
        buf[HEAD..].copy_from_slice(payload);
        if peer_id == 0x00FF_FFFF {
            k.seal
                .seal_v1(0, id, &mut buf[HEAD - DATA_V1_OVERHEAD..])
                .unwrap();
            buf.drain(..HEAD - DATA_V1_OVERHEAD);
        } else {
            k.seal
                .seal_v2(0, peer_id, id, &mut buf[HEAD - DATA_V2_OVERHEAD..])
                .unwrap();
            buf.drain(..HEAD - DATA_V2_OVERHEAD);
        }
        buf
    }

    fn ipv4(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[3] = 28;
        p[9] = 17;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst);
        p
    }

    /// A peer with compression framing: the framing byte is taken off after
    /// opening (pings included), a payload with the wrong framing is dropped.
    #[test]
    fn compression_framing_is_removed_after_open() {
        let (sh, _rx) = shared();
        sh.peers
            .set_compression(1, ferrovpn_proto::compress::Framing::StubLzo);
        let snap = sh.peers.load();
        let a: SocketAddr = "192.0.2.1:1194".parse().unwrap();
        let mut out = Vec::with_capacity(70_000);
        let mut acc = Vec::new();
        let pkt = ipv4([10, 8, 0, 2], [10, 8, 0, 1]);
        let mut framed = vec![compress::NO_COMPRESS_BYTE];
        framed.extend_from_slice(&pkt);
        let w = client_packet(1, 1, &framed);
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc),
            Verdict::Deliver(28)
        ));
        assert_eq!(&out[OFF..OFF + 28], &pkt[..]);
        let mut ping = vec![compress::NO_COMPRESS_BYTE];
        ping.extend_from_slice(&PING_PAYLOAD);
        let w = client_packet(1, 2, &ping);
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc),
            Verdict::Consumed
        ));
        // Unframed (or LZO-compressed) payloads are dropped, as by 2.6.
        let w = client_packet(1, 3, &pkt);
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc),
            Verdict::Consumed
        ));
    }

    #[test]
    fn classify_data_ping_occ_control_replay_and_relay() {
        let (sh, rx) = shared();
        let snap = sh.peers.load();
        let a: SocketAddr = "192.0.2.1:1194".parse().unwrap();
        let v1src: SocketAddr = "192.0.2.2:1194".parse().unwrap();
        let mut out = Vec::with_capacity(70_000);
        let mut acc = Vec::new();
        let pkt = ipv4([10, 8, 0, 2], [10, 8, 0, 1]);
        let w = client_packet(1, 1, &pkt);
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc),
            Verdict::Deliver(28)
        ));
        assert_eq!(&out[OFF..OFF + 28], &pkt[..]);
        // Replay.
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc),
            Verdict::Consumed
        ));
        assert_eq!(sh.peers.peer_stats(1).unwrap().replay_drops, 1);
        // Spoofed inner source.
        let w = client_packet(1, 2, &ipv4([10, 8, 0, 9], [10, 8, 0, 1]));
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc),
            Verdict::Consumed
        ));
        assert_eq!(sh.counters.bad_source.load(Ordering::Relaxed), 1);
        // Client-to-client relay to the V1 peer.
        let w = client_packet(1, 3, &ipv4([10, 8, 0, 2], [10, 8, 0, 3]));
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc),
            Verdict::Relay(28)
        ));
        // DATA_V1 from the V1 peer's address.
        let w = client_packet(0x00FF_FFFF, 1, &ipv4([10, 8, 0, 3], [10, 8, 0, 1]));
        assert!(matches!(
            handle_datagram(&w, v1src, &mut out, &snap, &sh, &mut acc),
            Verdict::Deliver(28)
        ));
        // DATA_V1 from an unknown address.
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc),
            Verdict::Consumed
        ));
        // Ping: liveness only.
        let w = client_packet(1, 4, &PING_PAYLOAD);
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc),
            Verdict::Consumed
        ));
        // OCC goes up.
        let mut occ = OCC_MAGIC.to_vec();
        occ.push(6);
        let w = client_packet(1, 5, &occ);
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc),
            Verdict::Consumed
        ));
        assert_eq!(
            rx.try_recv().unwrap(),
            UpEvent::Occ {
                peer_id: 1,
                payload: occ
            }
        );
        // Tampered packet.
        let mut w = client_packet(1, 6, &pkt);
        let last = w.len() - 1;
        w[last] ^= 1;
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc),
            Verdict::Consumed
        ));
        assert_eq!(sh.peers.peer_stats(1).unwrap().auth_failures, 1);
        // Float: valid packet from a new address.
        let b: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let w = client_packet(1, 7, &pkt);
        assert!(matches!(
            handle_datagram(&w, b, &mut out, &snap, &sh, &mut acc),
            Verdict::Deliver(28)
        ));
        assert_eq!(
            rx.try_recv().unwrap(),
            UpEvent::Float {
                peer_id: 1,
                new_remote: b
            }
        );
        assert_eq!(**sh.peers.load().by_id[&1].remote.load(), b);
        // Control opcode goes up unparsed; when the queue is full it is dropped and counted.
        for _ in 0..6 {
            handle_datagram(&[0x38, 1, 2], a, &mut out, &snap, &sh, &mut acc);
        }
        assert_eq!(
            rx.try_recv().unwrap(),
            UpEvent::Control {
                from: a,
                packet: vec![0x38, 1, 2]
            }
        );
        assert_eq!(sh.counters.control_dropped.load(Ordering::Relaxed), 2);
        // IPv6: dropped from a peer without an IPv6 address, relayed once routes exist.
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        v6[6] = 59;
        v6[8..24].copy_from_slice(&"fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
        v6[24..40].copy_from_slice(&"fd00::3".parse::<std::net::Ipv6Addr>().unwrap().octets());
        let w = client_packet(1, 8, &v6);
        assert!(matches!(
            handle_datagram(&w, b, &mut out, &snap, &sh, &mut acc),
            Verdict::Consumed
        ));
        sh.peers.set_peer_ipv6(1, Some("fd00::2".parse().unwrap()));
        sh.peers
            .set_peer_ipv6(0x00FF_FFFF, Some("fd00::3".parse().unwrap()));
        let snap = sh.peers.load();
        let w = client_packet(1, 9, &v6);
        assert!(matches!(
            handle_datagram(&w, b, &mut out, &snap, &sh, &mut acc),
            Verdict::Relay(40)
        ));
        assert_eq!(route(&snap, &v6).map(|p| p.peer_id), Some(0x00FF_FFFF));
        // Stats accumulate per batch.
        // Every authenticated, fresh packet counts (the spoofed one too).
        assert_eq!(acc.iter().map(|a| a.1).sum::<u64>(), 9);
    }

    proptest! {
        #[test]
        fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..200), op in 0u8..16, key in 0u8..8) {
            let (sh, _rx) = shared();
            let snap = sh.peers.load();
            let mut out = Vec::new();
            let mut acc = Vec::new();
            let mut d = data;
            if let Some(b) = d.first_mut() { *b = (op << 3) | key; }
            if d.len() >= 4 && op == 9 { d[1] = 0; d[2] = 0; d[3] = 1; }
            let _ = handle_datagram(&d, "192.0.2.2:1194".parse().unwrap(), &mut out, &snap, &sh, &mut acc);
        }
    }
}
