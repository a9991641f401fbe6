//! TUN → UDP: read a batch, route, clamp MSS, reserve packet ids per peer,
//! seal in place, send as UDP GSO runs.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferrovpn_proto::wire::DATA_V1_OVERHEAD;

use super::{GlobalCounters, HEAD, MAX_SLOTS, NO_DEST, PKT_MAX, Shared, TUN_BATCH, ipv6_at};
use crate::mss;
use crate::peers::{KeyState, Peer, Snapshot, now_nanos};
use crate::sys::TxMsg;
use crate::tun::{RawFrame, TunQueue};
use crate::udp::{GSO_MAX_BYTES, GSO_MAX_SEGMENTS, Sender};

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
    pub(super) bufs: Vec<Vec<u8>>,
    pub(super) sizes: Vec<usize>,
    dest: Vec<u16>,
    wire: Vec<(usize, usize)>,
    order: Vec<usize>,
    slots: Vec<Slot>,
    msgs: Vec<TxMsg>,
    sender: Sender,
}

pub(super) fn route<'a>(snap: &'a Snapshot, pkt: &[u8]) -> Option<&'a Arc<Peer>> {
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
    pub(super) fn new(gso: bool) -> Self {
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
    pub(super) fn read(&mut self, tun: &TunQueue, counters: &GlobalCounters) -> usize {
        let (n, errors) = tun.read_batch(&mut self.raw, &mut self.bufs, &mut self.sizes, HEAD);
        if errors > 0 {
            counters
                .tun_read_errors
                .fetch_add(errors, Ordering::Relaxed);
        }
        n
    }

    /// Route, seal and send packets `bufs[..n]` (each at `HEAD..HEAD + sizes[i]`).
    pub(super) fn process(&mut self, n: usize, udp: &UdpSocket, sh: &Shared) {
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
            let (start, res) = if s.peer.uses_v1() {
                let st = HEAD - DATA_V1_OVERHEAD;
                (
                    st,
                    k.keys.seal.seal_v1(k.key_id, id, &mut buf[st..HEAD + len]),
                )
            } else {
                (
                    0,
                    k.keys
                        .seal
                        .seal_v2(k.key_id, s.peer.peer_id, id, &mut buf[..HEAD + len]),
                )
            };
            if res.is_err() {
                s.drops += 1;
                continue;
            }
            let wire_len = HEAD + len - start;
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
