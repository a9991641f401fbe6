//! UDP / TCP → TUN: receive a batch (or cut one out of a TCP read),
//! classify, open, check replay and inner source, hand up control packets
//! and OCC, write IP packets to the TUN (or relay them to another peer).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferrovpn_proto::data::{DataError, OCC_MAGIC, PING_PAYLOAD, parse_data_header};
use ferrovpn_proto::wire::Opcode;

use super::outbound::{Out, Outbound};
use super::{HEAD, IpAddrs, OFF, PKT_MAX, RX_MSGS, RX_OUT, Shared, TUN_BATCH, ip_addrs};
use crate::UpEvent;
use crate::mss;
use crate::peers::{FloatOutcome, Peer, Snapshot, now_nanos};
use crate::stream::{OwnedStream, ReadOutcome};
use crate::tun::TunQueue;
use crate::udp::RecvBatch;
use crate::up::MAX_CONTROL_DATAGRAM;

/// UDP → TUN: receive, open, check, write.
pub(crate) struct Inbound {
    rx: RecvBatch,
    out: Vec<Vec<u8>>,
    acc: Vec<(Arc<Peer>, u64, u64)>,
    /// Datagrams received since the start (GRO segments counted one by one).
    pub(super) received: u64,
}

pub(super) enum Verdict {
    /// Plaintext IP packet left in the buffer.
    Deliver(usize),
    /// Forward to another peer (client-to-client).
    Relay(usize),
    Consumed,
}

impl Inbound {
    pub(super) fn new() -> Self {
        Inbound {
            rx: RecvBatch::new(RX_MSGS),
            out: (0..RX_OUT)
                .map(|_| Vec::with_capacity(2 * OFF + PKT_MAX))
                .collect(),
            acc: Vec::with_capacity(16),
            received: 0,
        }
    }

    /// Receive and handle one UDP batch; returns false when nothing was queued.
    pub(super) fn run(
        &mut self,
        udp: &UdpSocket,
        tun: &mut TunQueue,
        ob: &mut Outbound,
        sh: &Shared,
    ) -> bool {
        let m = match self.rx.recv(udp.as_raw_fd()) {
            Ok(0) => return false,
            Ok(m) => m,
            Err(e) => {
                // ICMP errors (ECONNREFUSED) on a connected socket and the like.
                tracing::trace!("UDP receive: {e}");
                return true;
            }
        };
        let link = Out::Udp(udp);
        let snap = sh.peers.load();
        let now = now_nanos();
        let mut g = Gather::default();
        for j in 0..m {
            let meta = self.rx.meta[j];
            let Some(src) = meta.src else { continue };
            let stride = meta.stride.max(1);
            let mut at = 0;
            while at < meta.len {
                let end = (at + stride).min(meta.len);
                self.received += 1;
                let seg = &self.rx.buf(j)[at..end];
                let out = &mut self.out[g.delivered];
                let verdict = handle_datagram(seg, src, out, &snap, sh, &mut self.acc, now);
                at = end;
                g.take(verdict, &mut self.out, tun, ob, sh, link);
            }
        }
        drop(snap);
        g.finish(&mut self.out, tun, ob, sh, link);
        self.count(now);
        true
    }

    /// Read a TCP connection once and handle every packet that completed.
    pub(super) fn run_stream(
        &mut self,
        conn: &mut OwnedStream,
        tun: &mut TunQueue,
        ob: &mut Outbound,
        sh: &Shared,
        link: Out<'_>,
    ) -> ReadOutcome {
        let read = conn.read();
        if !matches!(read, ReadOutcome::Data) {
            return read;
        }
        let snap = sh.peers.load();
        let now = now_nanos();
        let src = conn.conn.peer;
        let mut g = Gather::default();
        let outcome = loop {
            let seg = match conn.deframer.next_packet() {
                Ok(Some(seg)) => seg,
                Ok(None) => break ReadOutcome::Data,
                Err(e) => break ReadOutcome::Closed(format!("bad framing from the peer: {e}")),
            };
            let out = &mut self.out[g.delivered];
            let verdict = handle_datagram(seg, src, out, &snap, sh, &mut self.acc, now);
            g.take(verdict, &mut self.out, tun, ob, sh, link);
        };
        drop(snap);
        g.finish(&mut self.out, tun, ob, sh, link);
        self.count(now);
        outcome
    }

    /// Add the batch's per-peer receive counts.
    fn count(&mut self, now: u64) {
        for (p, pkts, bytes) in self.acc.drain(..) {
            let c = &p.counters;
            c.rx_packets.fetch_add(pkts, Ordering::Relaxed);
            c.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
            c.last_rx.store(now, Ordering::Relaxed);
        }
    }
}

/// The packets of one receive batch on their way out: plaintext for the
/// TUN (`out[..delivered]`), relays in the outbound buffers.
#[derive(Default)]
struct Gather {
    delivered: usize,
    relayed: usize,
}

impl Gather {
    /// Act on the verdict for the packet just opened into `out[self.delivered]`.
    fn take(
        &mut self,
        verdict: Verdict,
        out: &mut [Vec<u8>],
        tun: &mut TunQueue,
        ob: &mut Outbound,
        sh: &Shared,
        link: Out<'_>,
    ) {
        match verdict {
            Verdict::Consumed => {}
            Verdict::Deliver(len) => {
                out[self.delivered].truncate(OFF + len);
                self.delivered += 1;
                if self.delivered == RX_OUT {
                    write_tun(tun, &mut out[..self.delivered], sh);
                    self.delivered = 0;
                }
            }
            Verdict::Relay(len) => {
                sh.counters.relayed.fetch_add(1, Ordering::Relaxed);
                let dst = &mut ob.bufs[self.relayed];
                dst[HEAD..HEAD + len].copy_from_slice(&out[self.delivered][OFF..OFF + len]);
                ob.sizes[self.relayed] = len;
                self.relayed += 1;
                if self.relayed == TUN_BATCH {
                    ob.process(self.relayed, link, sh);
                    self.relayed = 0;
                }
            }
        }
    }

    /// Write and send what is left.
    fn finish(
        self,
        out: &mut [Vec<u8>],
        tun: &mut TunQueue,
        ob: &mut Outbound,
        sh: &Shared,
        link: Out<'_>,
    ) {
        if self.delivered > 0 {
            write_tun(tun, &mut out[..self.delivered], sh);
        }
        if self.relayed > 0 {
            ob.process(self.relayed, link, sh);
        }
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

/// Classify, open and check one datagram received at `now` ([`now_nanos`]).
/// Plaintext lands in `out[OFF..]`.
pub(super) fn handle_datagram(
    seg: &[u8],
    src: SocketAddr,
    out: &mut Vec<u8>,
    snap: &Snapshot,
    sh: &Shared,
    acc: &mut Vec<(Arc<Peer>, u64, u64)>,
    now: u64,
) -> Verdict {
    let header = match parse_data_header(seg) {
        Ok(h) => h,
        Err(DataError::NotData(_)) if seg.len() > MAX_CONTROL_DATAGRAM => {
            sh.counters
                .control_oversized
                .fetch_add(1, Ordering::Relaxed);
            return Verdict::Consumed;
        }
        Err(DataError::NotData(_)) => {
            sh.up(
                UpEvent::Control {
                    from: src,
                    packet: seg.to_vec(),
                },
                true,
            );
            return Verdict::Consumed;
        }
        // A data packet too short to hold its header, tag and a payload.
        Err(_) => return Verdict::Consumed,
    };
    // P_DATA_V2 names its peer; P_DATA_V1 peers are known by address.
    let peer = match header.peer_id {
        Some(id) => snap.by_id.get(&id),
        None => snap.by_addr.get(&src),
    };
    let Some(peer) = peer else {
        sh.counters.unknown_peer.fetch_add(1, Ordering::Relaxed);
        return Verdict::Consumed;
    };
    let ks = peer.keys.load();
    let Some(key) = ks.get(header.key_id) else {
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
    let mss = if key.keys.cipher.is_aead() {
        sh.mss
    } else {
        sh.mss_cbc
    };
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
    if header.opcode == Opcode::DataV2
        && snap.client_default.is_none()
        && **peer.remote.load() != src
    {
        if sh.streams.is_some() {
            // Over TCP the connection is the peer's address: no floating.
            sh.counters.floats_refused.fetch_add(1, Ordering::Relaxed);
            return Verdict::Consumed;
        }
        match sh.peers.record_float(peer.peer_id, src, now) {
            FloatOutcome::Moved => sh.up(
                UpEvent::Float {
                    peer_id: peer.peer_id,
                    new_remote: src,
                },
                false,
            ),
            FloatOutcome::Unchanged => {}
            FloatOutcome::RateLimited => {
                sh.counters.floats_refused.fetch_add(1, Ordering::Relaxed);
            }
            FloatOutcome::AddressTaken => {
                // As OpenVPN 2.6 does for a client with another certificate:
                // drop the packet, the address stays with its owner.
                sh.counters.floats_refused.fetch_add(1, Ordering::Relaxed);
                return Verdict::Consumed;
            }
        }
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
    let Some(addrs) = ip_addrs(plain) else {
        return Verdict::Consumed;
    };
    let source_ok = match addrs {
        // Server mode: its own address, or one its iroutes own (and no other
        // peer's address), as 2.6 checks the source's route.
        IpAddrs::V4 { src, .. } => peer.tunnel_ipv4.is_none_or(|ip| {
            ip == src
                || snap
                    .route_v4(src)
                    .is_some_and(|owner| owner.peer_id == peer.peer_id)
        }),
        IpAddrs::V6 { src, .. } => {
            // Server mode (the peer has tunnel addresses): IPv6 only from its own address.
            let server_mode = peer.tunnel_ipv4.is_some() || peer.tunnel_ipv6.is_some();
            !server_mode || peer.tunnel_ipv6 == Some(src)
        }
    };
    if !source_ok {
        sh.counters.bad_source.fetch_add(1, Ordering::Relaxed);
        return Verdict::Consumed;
    }
    if let Some((m4, m6)) = mss {
        mss::clamp(plain, m4, m6);
    }
    if sh.client_to_client
        && snap.client_default.is_none()
        && addrs
            .dst_peer(snap)
            .is_some_and(|other| !Arc::ptr_eq(other, peer))
    {
        return Verdict::Relay(plen);
    }
    Verdict::Deliver(plen)
}
