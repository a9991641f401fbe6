//! `fragment` on the UDP data path (2.6's fragment.c; the wire format and
//! the reassembly rules live in `ferrovpn_proto::fragment`).
//!
//! Sending: with `fragment` on, every batch takes [`FragmentOut::process`]
//! instead of the in-place path: each packet is framed for compression,
//! then copied with its 4-byte header (whole, or split into up to 32
//! fragments of 2.6's optimal size) into buffers of its own, each datagram
//! sealed with its own packet id, and sent as GSO runs (a packet's equal
//! fragments form one). A data plane without `fragment` never comes here.
//!
//! Receiving: [`defragment`] takes the header off after the payload is
//! opened and its packet id checked, before the compression framing is;
//! fragments go to the peer's [`Reassembler`] (behind a lock taken only for
//! fragments), which keeps 25 packets of at most `tun-mtu` + 128 bytes and
//! drops a partial one 10 s after its last fragment.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ferrovpn_proto::fragment::{self as frag, HEADER_LEN, Reassembler};

use super::outbound::{GsoRuns, Out, route, send_datagrams};
use super::tos::outer_tos;
use super::{HEAD, OFF, Shared, TAIL};
use crate::mss;
use crate::peers::{Peer, now_nanos};
use crate::sys::TxMsg;
use crate::udp::{Port, Sender};

/// `fragment MAX [mtu]`: no datagram's UDP payload (with `mtu`: no outer
/// IP packet) exceeds `max` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    pub max: u16,
    /// `mtu`: `max` counts the outer IP and UDP headers.
    pub mtu: bool,
}

/// [`Fragment`] as the workers use it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FragmentConfig {
    pub max: usize,
    pub mtu: bool,
    /// The largest packet reassembled (bigger ones are dropped, as 2.6
    /// drops what overflows its buffer).
    pub max_packet: usize,
}

/// Room for the compression framing (and slack) on top of the tun MTU in a
/// reassembled packet.
const REASSEMBLY_SLACK: usize = 128;

impl FragmentConfig {
    pub(crate) fn new(f: Fragment, tun_mtu: u16) -> Self {
        FragmentConfig {
            max: usize::from(f.max),
            mtu: f.mtu,
            max_packet: usize::from(tun_mtu) + REASSEMBLY_SLACK,
        }
    }
}

/// How often a peer's partial packets are looked at for expiry (2.6's
/// `FRAG_WAKEUP_INTERVAL`), on the arrival of a fragment.
const REAP_EVERY: Duration = Duration::from_secs(5);

/// One peer's fragmentation state, shared by every worker.
pub(crate) struct PeerFragments {
    /// Sequence id of the last packet split for this peer (2.6 starts at
    /// random, so a restarted sender does not collide with its old ids).
    seq: AtomicU8,
    /// Made at the peer's first fragment.
    reassembly: Mutex<Option<Reassembly>>,
}

struct Reassembly {
    packets: Reassembler,
    reaped: Instant,
}

impl PeerFragments {
    pub(crate) fn new() -> Self {
        PeerFragments {
            seq: AtomicU8::new(now_nanos() as u8),
            reassembly: Mutex::new(None),
        }
    }

    fn next_seq(&self) -> u8 {
        self.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1)
    }
}

/// Take the fragment header off the opened payload `out[OFF..OFF + plen]`:
/// the length of the packet now at `out[OFF..]`, or `None` when the payload
/// was a fragment of a packet not complete yet, or malformed (dropped, as
/// 2.6 drops it).
pub(super) fn defragment(
    cfg: &FragmentConfig,
    peer: &Peer,
    out: &mut Vec<u8>,
    plen: usize,
) -> Option<usize> {
    let payload = out.get(OFF..OFF + plen)?;
    match frag::parse_whole(payload) {
        Ok(Some(body)) => {
            let n = body.len();
            out.copy_within(OFF + HEADER_LEN..OFF + plen, OFF);
            Some(n)
        }
        Ok(None) => {
            let now = Instant::now();
            let mut guard = peer
                .fragments
                .reassembly
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let state = guard.get_or_insert_with(|| Reassembly {
                packets: Reassembler::new(cfg.max_packet, now),
                reaped: now,
            });
            if now.saturating_duration_since(state.reaped) >= REAP_EVERY {
                let dropped = state.packets.reap(now);
                if dropped > 0 {
                    tracing::debug!("peer {}: {dropped} partial packets expired", peer.peer_id);
                }
                state.reaped = now;
            }
            match state.packets.incoming_fragment(payload, now) {
                Ok(Some(packet)) => {
                    let n = packet.len();
                    out.resize(OFF + n, 0);
                    out[OFF..OFF + n].copy_from_slice(packet);
                    Some(n)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::trace!("peer {}: fragment dropped: {e}", peer.peer_id);
                    None
                }
            }
        }
        Err(e) => {
            tracing::trace!("peer {}: payload dropped: {e}", peer.peer_id);
            None
        }
    }
}

/// Datagrams gathered before a send.
const FRAG_BATCH: usize = 256;
/// Where a datagram's payload starts in its buffer: room for the seal's
/// header in front of the fragment header.
const FHEAD: usize = HEAD + HEADER_LEN;

/// The sending side of the `fragment` path (one per worker).
pub(crate) struct FragmentOut {
    bufs: Vec<Vec<u8>>,
    /// `(start, len)` of the sealed datagram in each used buffer.
    wire: Vec<(usize, usize)>,
    used: usize,
    msgs: Vec<TxMsg>,
    runs: GsoRuns,
    sender: Sender,
    /// The peer of the last datagram, and its run slot: a new peer gets a
    /// new slot, so that no GSO run mixes two peers.
    last_peer: usize,
    slot: u16,
}

impl FragmentOut {
    pub(super) fn new(cfg: &FragmentConfig, gso: bool) -> Self {
        // A datagram's payload (header and part) is at most `max` bytes (the
        // maximum fragment size is `max` less the seal's overhead and the
        // header), and no more than a packet from the tun device takes.
        let len = FHEAD + cfg.max.min(cfg.max_packet) + TAIL;
        FragmentOut {
            bufs: (0..FRAG_BATCH).map(|_| vec![0u8; len]).collect(),
            wire: vec![(0, 0); FRAG_BATCH],
            used: 0,
            msgs: Vec::with_capacity(FRAG_BATCH),
            runs: GsoRuns::default(),
            sender: Sender::new(FRAG_BATCH, FRAG_BATCH, gso),
            last_peer: 0,
            slot: 0,
        }
    }

    /// Route, frame, split, seal and send the packets `bufs[i][HEAD..HEAD + sizes[i]]`.
    pub(super) fn process(
        &mut self,
        bufs: &mut [Vec<u8>],
        sizes: &[usize],
        link: Out<'_>,
        sh: &Shared,
        cfg: &FragmentConfig,
    ) {
        // `fragment` is refused with TCP at start (as 2.6 refuses it).
        let Some(udp) = link.udp() else {
            return;
        };
        let snap = sh.peers.load();
        let now = now_nanos();
        for (buf, &len) in bufs.iter_mut().zip(sizes) {
            let Some(peer) = route(&snap, &buf[HEAD..HEAD + len]) else {
                sh.counters.no_route.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let c = &peer.counters;
            match self.packet(buf, len, peer, sh, cfg, udp) {
                Some(link_bytes) => c.sent(1, len as u64, link_bytes, now),
                None => {
                    c.tx_drops.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.flush(udp, sh);
    }

    /// Queue the datagrams of one packet; false when it is dropped.
    fn packet(
        &mut self,
        buf: &mut [u8],
        len: usize,
        peer: &Arc<Peer>,
        sh: &Shared,
        cfg: &FragmentConfig,
        udp: &Port,
    ) -> Option<u64> {
        let ks = peer.keys.load();
        let k = ks.send_key()?;
        let aead = k.keys.cipher.is_aead();
        if let Some((m4, m6)) = if aead { sh.mss } else { sh.mss_cbc } {
            mss::clamp(&mut buf[HEAD..HEAD + len], m4, m6);
        }
        let tos = if sh.passtos {
            outer_tos(&buf[HEAD..HEAD + len])
        } else {
            0
        };
        let (at, framed) = peer.compression.frame(buf, HEAD, len)?;
        let dst = **peer.remote.load();
        let v1 = peer.uses_v1();
        let max = frag::max_fragment_size(
            cfg.max,
            k.keys.seal.head_room(v1),
            !aead,
            if cfg.mtu { ip_udp_overhead(dst) } else { 0 },
        );
        let items = match frag::split(&buf[at..at + framed], max, || peer.fragments.next_seq()) {
            Ok(items) => items,
            Err(e) => {
                tracing::trace!("peer {}: {framed}-byte packet not sent: {e}", peer.peer_id);
                return None;
            }
        };
        let count = items.remaining();
        if self.used + count > FRAG_BATCH {
            self.flush(udp, sh);
        }
        let mut id = u32::try_from(count)
            .ok()
            .and_then(|count| peer.reserve_ids(k, count))?;
        let peer_addr = Arc::as_ptr(peer) as usize;
        if peer_addr != self.last_peer {
            self.last_peer = peer_addr;
            self.slot = self.slot.wrapping_add(1);
        }
        let mut link_bytes = 0;
        for (header, part) in items {
            let j = self.used;
            let d = &mut self.bufs[j];
            let start = FHEAD - HEADER_LEN;
            let Some(room) = d.get_mut(FHEAD..FHEAD + part.len() + TAIL) else {
                // Larger than any packet the tun device gives (a relayed
                // packet from a peer with a larger MTU): dropped.
                return None;
            };
            room[..part.len()].copy_from_slice(part);
            d[start..FHEAD].copy_from_slice(&header);
            let sealed = peer.seal(k, id, d, start, HEADER_LEN + part.len());
            id = id.wrapping_add(1);
            let Ok((st, wire_len)) = sealed else {
                // The rest of the packet is useless to the peer.
                return None;
            };
            self.wire[j] = (st, wire_len);
            if let Some(link) = &sh.link {
                link.written(wire_len as u64);
            }
            link_bytes += wire_len as u64;
            self.runs
                .push(&mut self.msgs, j, self.slot, dst, wire_len, tos);
            self.used += 1;
        }
        Some(link_bytes)
    }

    fn flush(&mut self, udp: &Port, sh: &Shared) {
        if !self.msgs.is_empty() {
            let bufs = &self.bufs;
            let wire = &self.wire;
            let get = |j: usize| -> &[u8] {
                let (st, l) = wire[j];
                &bufs[j][st..st + l]
            };
            send_datagrams(&mut self.sender, udp, &self.msgs, &get, &sh.counters);
        }
        self.msgs.clear();
        self.used = 0;
        self.runs = GsoRuns::default();
    }
}

/// 2.6's `datagram_overhead` for UDP: the outer IP and UDP headers.
fn ip_udp_overhead(dst: SocketAddr) -> usize {
    if dst.is_ipv6() { 40 + 8 } else { 20 + 8 }
}
