//! UDP / TCP → TUN: receive a batch (or cut one out of a TCP read),
//! classify, open, check replay and inner source, hand up control packets
//! and OCC, write IP packets to the TUN (or relay them to another peer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ferrovpn_proto::compress::Framing;
use ferrovpn_proto::data::{DataError, OCC_MAGIC, PING_PAYLOAD, parse_data_header};
use ferrovpn_proto::wire::Opcode;

use super::outbound::{Out, Outbound};
use super::{HEAD, IpAddrs, OFF, PKT_MAX, RX_MSGS, RX_OUT, Shared, TUN_BATCH, ip_addrs};
use crate::UpEvent;
use crate::mss;
use crate::peers::{FloatOutcome, KeySet, Peer, Snapshot, now_nanos};
use crate::stream::{OwnedStream, ReadOutcome};
use crate::tun::{Coalescer, TunOffloads, TunQueue};
use crate::udp::{Port, RecvBatch};
use crate::up::MAX_CONTROL_DATAGRAM;

/// Pace the worker only for batches whose packets average at least this
/// many bytes: pure ACKs and pings never merge into super-packets, so
/// waiting for more of them would gain nothing.
const PACE_MIN_AVG_BYTES: u64 = 256;
/// Two wake-ups this close count as one flow for [`worth_pacing`] and
/// [`worth_pacing_acks`], counted from the end of the pace the worker kept
/// after the first one ([`Inbound::paced_until`]): its own wait is no pause
/// in the flow. Counted from the wake-up itself, as it once was, a wake-up
/// after a full pace (1 ms, the same as this) never saw the one before, and
/// a download's wake-up that found the stock peer's ACKs but no new data
/// in the TUN (its sender waiting for the application or its own pacing)
/// stopped the pacing: with one stock client downloading at a moderate
/// rate, 43 % of the worker's wake-ups were such unpaced ones for a few
/// ACKs each (2026-12-04, `bench-stock --matched-rate`, down at OpenVPN's
/// rate).
const FLOWING_WITHIN_NS: u64 = 1_000_000;
/// The shortest time between two wake-ups while a stock peer's data flows
/// (see [`worth_pacing`]): what a packet may wait at most on top of the
/// wake-up itself. Each paced wake-up has a cost of its own, whatever it
/// finds (about 60 µs on the 2-core bench VM, 2026-12-04: the wake-up, one
/// TUN write per flow, each running the local receiver's TCP and waking it,
/// the ACK read back and sent), so a longer pace gathers more datagrams per
/// wake-up and per TUN write. Measured there with `bench-stock --seconds 5`,
/// interleaved runs: 300 µs against 1 ms gave 4.2-5.1 against 2.8-3.2
/// server CPU s/GB with 1 stock client uploading and 3.0-3.8 against
/// 2.2-3.2 with 4; 2 ms gained little more (2.5-3.0 with 1 client) for a
/// higher loaded RTT. A millisecond stays well inside the loaded RTT
/// (milliseconds of queueing either way: 1 client 3-4 ms at 300 µs, 4-6 ms
/// at 1 ms). A lone packet is never paced (an idle tunnel's RTT is as
/// before).
pub(super) const PACE_NS: u64 = 1_000_000;
/// The same for a stock peer's download ([`worth_pacing_acks`]): its TCP
/// ACKs wait in the socket, and the data they release in the TUN. 1 ms
/// since the night of 2026-12-04 (300 µs before): the stock client, not
/// the server, sets a download's rate (it decrypts one datagram per system
/// call, at 95 % of a core in the bench), and the server's CPU use stays
/// near a fixed share of a core whatever the rate, set by how often it
/// wakes: 0.22 of a core at 1 ms against 0.25 at 300 µs (medians, 1 stock
/// client, 10 s runs). Interleaved `bench-stock --seconds 10 --only
/// ferrovpn` runs, server CPU s/GB: 1 client 3.98 against 4.62 (6 pairs,
/// all lower) and 4.11 against 4.95 (5 pairs, 4 lower); 4 clients 4.04
/// against 4.80 (3 pairs, all lower). The cost: the loaded RTT at full
/// load is 8-12 ms against 6-10 (OpenVPN's 9-10 ms at two thirds of the
/// rate; at OpenVPN's rate 1.2 ms against its 10), and the stock client's
/// socket drops more (about 20 k datagrams a run against 2 k, as many TCP
/// retransmissions; under OpenVPN 9-10 k at its lower rate): the ACKs of a
/// millisecond reach the sender's TCP as one, and it answers with a bigger
/// burst.
pub(super) const ACK_PACE_NS: u64 = 1_000_000;

/// What one wake-up of the worker received over UDP.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Received {
    /// The sends these datagrams came from, as far as the worker can tell:
    /// one per `recvmmsg` message (a GRO message holds several datagrams,
    /// a ferrovpn peer's GSO run arrives as one), except that a peer known
    /// to send one datagram per packet ([`Peer::reads_one_by_one`]: stock
    /// OpenVPN, which also reads one at a time) made one send per datagram
    /// however many of them the kernel's GRO merged into one message.
    pub sends: u64,
    /// Datagrams.
    pub datagrams: u64,
    /// Plaintext bytes of the packets delivered to the TUN.
    pub delivered_bytes: u64,
    /// Packets delivered to the TUN.
    pub delivered: u64,
    /// Packets read from the TUN in the same wake-up, and their bytes.
    pub tun_packets: u64,
    pub tun_bytes: u64,
}

impl Received {
    /// This wake-up's receipts together with the last one's when that came
    /// within [`FLOWING_WITHIN_NS`] (`since_prev` ns earlier): the same
    /// flow, which one wake-up alone may see only half of.
    fn with_recent(self, prev: Received, since_prev: u64) -> Received {
        if since_prev >= FLOWING_WITHIN_NS {
            return self;
        }
        Received {
            sends: self.sends + prev.sends,
            datagrams: self.datagrams + prev.datagrams,
            delivered_bytes: self.delivered_bytes + prev.delivered_bytes,
            delivered: self.delivered + prev.delivered,
            tun_packets: self.tun_packets + prev.tun_packets,
            tun_bytes: self.tun_bytes + prev.tun_bytes,
        }
    }
}

/// Whether the worker should sleep until [`PACE_NS`] after its last wake-up
/// before it waits for datagrams again, given what this wake-up (`now`) and
/// the one before (`prev`, `since_prev` ns earlier) received.
///
/// A stock OpenVPN peer sends one datagram per packet. Woken for each few
/// of them, the worker pays a wake-up (the dearest thing it does on a VM),
/// a TUN write that runs the inner stack and wakes the local receiver, and
/// the receiver's ACK back out, all for about three packets. Sleeping a
/// little longer lets the datagrams gather in the socket: one wake-up, one
/// super-packet, one ACK for many. Never when nothing flows (a lone packet,
/// an idle tunnel's ping), for pure ACKs, or for a peer that already sends
/// GSO runs (ferrovpn).
///
/// "Unbatched" counts sends, not `recvmmsg` messages: behind a NIC with GRO
/// (and interrupt moderation) a stock client's datagrams arrive merged two
/// to four per message, which by messages looked like a ferrovpn peer's
/// GSO runs and stopped the pacing (bench-stock `--veth-napi
/// --veth-hold-us 50`, 2026-12-04: 2.0 datagrams per message, `ppoll`
/// 29 k → 3 k per GB). No datagrams-per-message threshold separates the
/// two: GRO merges as many as arrive within its hold (a burst of a stock
/// client's sends, 64 at most), and a ferrovpn peer at a moderate rate
/// sends runs of a few. The server knows which peers are stock from their
/// peer info, so their datagrams count one send each (see
/// [`Received::sends`]).
pub(super) fn worth_pacing(now: Received, prev: Received, since_prev: u64) -> bool {
    let both = now.with_recent(prev, since_prev);
    let unbatched = now.sends > 0 && now.datagrams < 2 * now.sends;
    now.delivered > 0
        && both.delivered >= 2
        && both.delivered_bytes >= both.delivered * PACE_MIN_AVG_BYTES
        && unbatched
}

/// Whether the worker should sleep until [`ACK_PACE_NS`] after this wake-up
/// (`now`) with the socket and the TUN left out, because a stock peer is
/// downloading: the socket gave only a stock peer's small packets (its TCP
/// ACKs, one datagram each), at least two, and the TUN gave data, at least
/// two packets (`tun_packets` of `tun_bytes`).
///
/// Woken for each few ACKs, the worker writes them (the local sender's ACK
/// processing and its next transmit run inside that write), reads the
/// small super-packet they released and sends it: a turn of system calls
/// for a few segments. Waiting lets the ACKs gather in the socket, where
/// the ACK filter keeps only the last of each flow's run, and the data in
/// the TUN, read as bigger super-packets. A lone packet, an idle tunnel's
/// ping (its reply is small) or a ferrovpn peer's GSO runs are never
/// paced; a stock peer's ACKs are unbatched however GRO merged them (see
/// [`worth_pacing`]).
pub(super) fn worth_pacing_acks(now: Received, prev: Received, since_prev: u64) -> bool {
    let both = now.with_recent(prev, since_prev);
    let unbatched = both.sends > 0 && both.datagrams < 2 * both.sends;
    let acks = both.delivered >= 1 && both.delivered_bytes < both.delivered * PACE_MIN_AVG_BYTES;
    let data_out = both.tun_packets >= 2 && !tun_may_wait(both.tun_packets, both.tun_bytes);
    unbatched && acks && data_out && now.sends + now.tun_packets > 0
}

/// Whether the TUN may wait with the socket while the worker paces (see
/// [`worth_pacing`]), given the `packets` of `bytes` read from it in this
/// wake-up: yes while it gives only small packets (the inner receiver's
/// TCP ACKs, ping replies) or nothing.
///
/// The local receiver ACKs the data a TUN write hands it when it reads
/// that data, from its own context, some tens of microseconds after the
/// write. A TUN that woke the worker for that ACK cut every paced wait
/// short: the wake-up found the few datagrams that had come in since, wrote
/// them, and its write called for the next ACK, so the worker woke about as
/// often as without pacing (1 stock client uploading, 2026-12-03: 70 % of
/// its wake-ups). Waiting, the ACKs leave together with the next wake-up's,
/// at most [`PACE_NS`] later, like the datagrams. A TUN that gives data
/// (bulk to some peer) still wakes the worker at once.
pub(super) fn tun_may_wait(packets: u64, bytes: u64) -> bool {
    bytes < packets.max(1) * PACE_MIN_AVG_BYTES
}

/// UDP → TUN: receive, open, check, write.
pub(crate) struct Inbound {
    rx: RecvBatch,
    /// Where received packets are opened, and the batch's peers.
    sink: Sink,
    /// Packets held in `gro`, and their plaintext bytes.
    held: usize,
    held_bytes: u64,
    /// This wake-up's receipts, and the last wake-up's with the time
    /// ([`now_nanos`]) from which the next one counts as a new wake-up:
    /// when it woke, or when the pace it kept ended.
    pub(super) now: Received,
    prev: (Received, u64),
    /// That time for this wake-up ([`Inbound::paced_until`]).
    counts_from: u64,
    /// Datagrams (GRO segments counted one by one) or TCP-framed packets
    /// received since the start.
    pub(super) received: u64,
    /// Packets cut out of TCP connections since the start.
    pub(super) stream_received: u64,
    /// The last UDP receive filled the whole batch (more may be queued).
    pub(super) last_batch_full: bool,
}

pub(super) enum Verdict {
    /// Plaintext IP packet at the start of the destination.
    Deliver(usize),
    /// Forward to another peer (client-to-client).
    Relay(usize),
    Consumed,
    /// Fragmented or compression-framed: open it again into a buffer of
    /// its own (nothing was opened or counted yet).
    NeedsBuffer,
}

/// Where [`handle_datagram_into`] opens a packet.
pub(super) enum Dest<'a> {
    /// At `OFF`, grown as needed; reassembly and decompression work here.
    Buffer(&'a mut Vec<u8>),
    /// From its start, which stays put: plain packets only.
    Window(&'a mut [u8]),
}

impl Inbound {
    /// `offloads`: what the worker's TUN queue takes (coalescing needs TSO).
    pub(super) fn new(offloads: TunOffloads) -> Self {
        Inbound {
            rx: RecvBatch::new(RX_MSGS),
            sink: Sink {
                gro: Coalescer::new(offloads, RX_OUT, OFF).filter_acks(),
                scratch: Vec::with_capacity(2 * OFF + PKT_MAX),
                peers: BatchPeers::default(),
            },
            held: 0,
            held_bytes: 0,
            now: Received::default(),
            prev: (Received::default(), 0),
            counts_from: 0,
            received: 0,
            stream_received: 0,
            last_batch_full: false,
        }
    }

    /// Start counting a new wake-up's receipts ([`Inbound::worth_pacing`]).
    pub(super) fn woke(&mut self, at: u64) {
        self.prev = (self.now, self.counts_from);
        self.counts_from = at;
        self.now = Received::default();
    }

    /// The worker paces after this wake-up until `until` ([`now_nanos`]):
    /// the next wake-up's distance from this one counts from then (see
    /// [`FLOWING_WITHIN_NS`]).
    pub(super) fn paced_until(&mut self, until: u64) {
        self.counts_from = until;
    }

    /// Whether this wake-up's receipts call for pacing (see [`worth_pacing`]).
    pub(super) fn worth_pacing(&self, woke_at: u64) -> bool {
        worth_pacing(self.now, self.prev.0, woke_at.saturating_sub(self.prev.1))
    }

    /// Whether this wake-up's receipts and what it read from the TUN call
    /// for pacing a download (see [`worth_pacing_acks`]).
    pub(super) fn worth_pacing_acks(
        &mut self,
        woke_at: u64,
        tun_packets: u64,
        tun_bytes: u64,
    ) -> bool {
        self.now.tun_packets = tun_packets;
        self.now.tun_bytes = tun_bytes;
        worth_pacing_acks(self.now, self.prev.0, woke_at.saturating_sub(self.prev.1))
    }

    /// Write the held packets to the TUN; returns whether there were any.
    pub(super) fn flush(&mut self, tun: &mut TunQueue, sh: &Shared) -> bool {
        if self.sink.gro.is_empty() {
            return false;
        }
        write_tun(tun, &mut self.sink.gro, sh);
        self.held = 0;
        self.held_bytes = 0;
        true
    }

    /// Write what is held when it is small packets (TCP ACKs, pings):
    /// unlike data, which may still merge with the next batch's, they are
    /// held only while the socket is read.
    pub(super) fn flush_small(&mut self, tun: &mut TunQueue, sh: &Shared) {
        if self.held_bytes < self.held as u64 * PACE_MIN_AVG_BYTES {
            self.flush(tun, sh);
        }
    }

    /// Receive and handle one UDP batch; returns false when nothing was
    /// queued and nothing held was written. When the batch was full (more
    /// may be queued) what it opened stays held for the next one, up to
    /// `RX_OUT` packets or super-packets; otherwise it is written to the
    /// TUN. Relayed packets are sent at once.
    pub(super) fn run(
        &mut self,
        udp: &Port,
        tun: &mut TunQueue,
        ob: &mut Outbound,
        sh: &Shared,
        link: Out<'_>,
    ) -> bool {
        self.last_batch_full = false;
        let m = match udp.recv(&mut self.rx) {
            // Drained: what is held goes now (its ACKs make the TUN busy).
            Ok(0) => return self.flush(tun, sh),
            Ok(m) => m,
            Err(e) => {
                // ICMP errors (ECONNREFUSED) on a connected socket and the like.
                tracing::trace!("UDP receive: {e}");
                return true;
            }
        };
        self.last_batch_full = m == RX_MSGS;
        let snap = sh.peers.load();
        let now = now_nanos();
        let mut g = Gather {
            held: self.held,
            held_bytes: self.held_bytes,
            ..Gather::default()
        };
        let segments_before = self.received;
        // Counted before any of it goes up: whoever sees a control packet
        // sees it counted.
        if let Some(counters) = &sh.link {
            counters.read(self.rx.meta[..m].iter().map(|meta| meta.len as u64).sum());
        }
        let mut rx = Rx::new(&mut self.sink, &snap, sh, now);
        let mut sends = m as u64;
        for j in 0..m {
            let meta = self.rx.meta[j];
            let Some(src) = meta.src else { continue };
            let stride = meta.stride.max(1);
            let one_by_one_before = rx.peers.one_by_one;
            let mut at = 0;
            while at < meta.len {
                let end = (at + stride).min(meta.len);
                self.received += 1;
                let seg = &self.rx.buf(j)[at..end];
                at = end;
                g.take(&mut rx, seg, src, tun, ob, link);
            }
            // A stock peer's datagrams that GRO merged: one send each
            // (`Received::sends`); only authentic ones count.
            sends += (rx.peers.one_by_one.wrapping_sub(one_by_one_before)).saturating_sub(1);
        }
        drop(snap);
        self.now.sends += sends;
        self.now.datagrams += self.received - segments_before;
        self.now.delivered += g.count;
        self.now.delivered_bytes += g.bytes;
        self.held = g.held;
        self.held_bytes = g.held_bytes;
        g.send_relays(ob, sh, link);
        // Hold what was opened for the next batch while the socket may have
        // more (a full batch): data to merge into bigger super-packets,
        // ACKs for the ACK filter to see the whole run a stock peer's
        // socket gathered (`Worker::turn` writes held ACKs before it turns
        // to the TUN, so they wait only for these receive calls).
        if m < RX_MSGS {
            self.flush(tun, sh);
        }
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
        let mut g = Gather {
            held: self.held,
            held_bytes: self.held_bytes,
            ..Gather::default()
        };
        let mut rx = Rx::new(&mut self.sink, &snap, sh, now);
        let outcome = loop {
            let seg = match conn.deframer.next_packet() {
                Ok(Some(seg)) => seg,
                Ok(None) => break ReadOutcome::Data,
                Err(e) => break ReadOutcome::Closed(format!("bad framing from the peer: {e}")),
            };
            self.stream_received += 1;
            // A client's one connection: counted as it goes up (see `run`).
            if let Some(counters) = &sh.link {
                counters.read(seg.len() as u64);
            }
            g.take(&mut rx, seg, src, tun, ob, link);
        };
        drop(snap);
        self.held = g.held;
        self.held_bytes = g.held_bytes;
        g.send_relays(ob, sh, link);
        self.flush(tun, sh);
        self.count(now);
        outcome
    }

    /// End the batch: add its per-peer receive counts, and forget the
    /// key sets and addresses it loaded.
    fn count(&mut self, now: u64) {
        self.sink.peers.finish(now);
    }
}

/// Where [`Inbound`] opens received packets, apart from its receive
/// buffers (a batch's packets are read from those while opened into this).
struct Sink {
    /// Opened packets waiting for the next TUN write: datagrams are opened
    /// straight into it.
    gro: Coalescer,
    /// Where a packet that needs reassembly or decompression is opened
    /// before it is copied into `gro`.
    scratch: Vec<u8>,
    /// The peers this batch has heard from.
    peers: BatchPeers,
}

/// What opening one received packet needs, borrowed from [`Inbound`] and
/// the batch: made once per batch, by the UDP and the TCP path alike.
struct Rx<'a> {
    gro: &'a mut Coalescer,
    scratch: &'a mut Vec<u8>,
    peers: &'a mut BatchPeers,
    snap: &'a Snapshot,
    sh: &'a Shared,
    now: u64,
}

impl<'a> Rx<'a> {
    fn new(sink: &'a mut Sink, snap: &'a Snapshot, sh: &'a Shared, now: u64) -> Self {
        Rx {
            gro: &mut sink.gro,
            scratch: &mut sink.scratch,
            peers: &mut sink.peers,
            snap,
            sh,
            now,
        }
    }
}

/// Peers whose key set and address a batch keeps at most; a batch naming
/// more (only a server with that many busy clients, or forged packets)
/// loads them per packet, so a lookup never scans more than this.
const BATCH_PEERS_MAX: usize = 16;

/// The peers one receive batch has heard from. Each one's key set and
/// remote address are loaded once, on its first packet of the batch,
/// instead of two `ArcSwap` loads per packet; the packets and bytes it
/// delivered are added to its counters once, at the batch's end
/// ([`BatchPeers::finish`]), which also forgets the loaded sets: a key the
/// control plane installs or retires mid-batch is used from the next batch
/// on. Replay windows live in each [`crate::peers::KeyState`], so they stay
/// per key whichever set the packet was opened with.
pub(super) struct BatchPeers {
    seen: Vec<SeenPeer>,
    /// Authenticated, fresh packets from peers that send one datagram per
    /// packet ([`Peer::reads_one_by_one`]), counted since the worker
    /// started (wrapping): [`Inbound::run`] takes differences.
    one_by_one: u64,
}

impl Default for BatchPeers {
    /// Room for every peer a batch keeps: no allocation on the data path.
    fn default() -> Self {
        BatchPeers {
            seen: Vec::with_capacity(BATCH_PEERS_MAX),
            one_by_one: 0,
        }
    }
}

struct SeenPeer {
    peer: Arc<Peer>,
    keys: Arc<KeySet>,
    /// Where the peer sends from as far as this batch knows (a float
    /// recorded by this batch moves it).
    remote: SocketAddr,
    /// Authenticated, fresh packets, their plaintext bytes and their
    /// bytes on the link.
    packets: u64,
    bytes: u64,
    link_bytes: u64,
}

impl BatchPeers {
    /// `peer`'s place in the batch, loading its keys and address on its
    /// first packet; `None` when the batch is full of other peers.
    fn find_or_load(&mut self, peer: &Arc<Peer>) -> Option<usize> {
        if let Some(i) = self.seen.iter().position(|s| Arc::ptr_eq(&s.peer, peer)) {
            return Some(i);
        }
        if self.seen.len() >= BATCH_PEERS_MAX {
            return None;
        }
        self.seen.push(SeenPeer {
            peer: peer.clone(),
            keys: peer.keys.load_full(),
            remote: **peer.remote.load(),
            packets: 0,
            bytes: 0,
            link_bytes: 0,
        });
        Some(self.seen.len() - 1)
    }

    fn remote(&self, at: Option<usize>, peer: &Peer) -> SocketAddr {
        match at {
            Some(i) => self.seen[i].remote,
            None => **peer.remote.load(),
        }
    }

    /// The peer sends from `src` now (it floated there, or had already).
    fn moved(&mut self, at: Option<usize>, src: SocketAddr) {
        if let Some(i) = at {
            self.seen[i].remote = src;
        }
    }

    /// An authenticated, fresh packet of `bytes` plaintext bytes from `peer`,
    /// `link_bytes` on the link (received at `now`).
    fn received(&mut self, at: Option<usize>, peer: &Peer, bytes: u64, link_bytes: u64, now: u64) {
        if peer.reads_one_by_one {
            self.one_by_one = self.one_by_one.wrapping_add(1);
        }
        match at {
            Some(i) => {
                self.seen[i].packets += 1;
                self.seen[i].bytes += bytes;
                self.seen[i].link_bytes += link_bytes;
            }
            None => {
                let c = &peer.counters;
                c.rx_packets.fetch_add(1, Ordering::Relaxed);
                c.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
                c.rx_link_bytes.fetch_add(link_bytes, Ordering::Relaxed);
                c.last_rx.store(now, Ordering::Relaxed);
            }
        }
    }

    /// End the batch at `now`: count what each peer delivered (a peer that
    /// sent nothing authentic is not alive for it) and forget them all.
    pub(super) fn finish(&mut self, now: u64) {
        for s in self.seen.drain(..) {
            if s.packets == 0 {
                continue;
            }
            let c = &s.peer.counters;
            c.rx_packets.fetch_add(s.packets, Ordering::Relaxed);
            c.rx_bytes.fetch_add(s.bytes, Ordering::Relaxed);
            c.rx_link_bytes.fetch_add(s.link_bytes, Ordering::Relaxed);
            c.last_rx.store(now, Ordering::Relaxed);
        }
    }

    /// Authenticated, fresh packets counted so far in this batch.
    #[cfg(test)]
    pub(super) fn packets(&self) -> u64 {
        self.seen.iter().map(|s| s.packets).sum()
    }
}

/// The packets of one receive batch on their way out: plaintext held in
/// the coalescer for the TUN, relays in the outbound buffers.
#[derive(Default)]
struct Gather {
    /// Packets held for the TUN and not yet written, and their bytes.
    held: usize,
    held_bytes: u64,
    relayed: usize,
    /// Packets and plaintext bytes delivered by this batch.
    count: u64,
    bytes: u64,
}

impl Gather {
    /// Open `seg` where the coalescer wants it (behind the super-packet it
    /// most likely joins) and act on the verdict.
    fn take(
        &mut self,
        rx: &mut Rx<'_>,
        seg: &[u8],
        src: SocketAddr,
        tun: &mut TunQueue,
        ob: &mut Outbound,
        link: Out<'_>,
    ) {
        let sh = rx.sh;
        if rx.gro.is_full() {
            write_tun(tun, rx.gro, sh);
            self.held = 0;
            self.held_bytes = 0;
        }
        let Some(spot) = rx.gro.spot(seg.len()) else {
            return;
        };
        let window = Dest::Window(rx.gro.window(&spot));
        match handle_datagram_into(seg, src, window, rx.snap, sh, rx.peers, rx.now) {
            Verdict::Deliver(len) => {
                rx.gro.commit(spot, len);
                self.delivered(len, rx.gro, tun, sh);
            }
            Verdict::Relay(len) => {
                self.relay(rx.gro.opened(&spot, len), ob, sh, link);
                rx.gro.discard(spot);
            }
            Verdict::Consumed => rx.gro.discard(spot),
            Verdict::NeedsBuffer => {
                rx.gro.discard(spot);
                let out = &mut *rx.scratch;
                match handle_datagram(seg, src, out, rx.snap, sh, rx.peers, rx.now) {
                    Verdict::Deliver(len) => {
                        if rx.gro.push(&out[OFF..OFF + len]) {
                            self.delivered(len, rx.gro, tun, sh);
                        }
                    }
                    Verdict::Relay(len) => self.relay(&out[OFF..OFF + len], ob, sh, link),
                    Verdict::Consumed | Verdict::NeedsBuffer => {}
                }
            }
        }
    }

    /// A packet of `len` bytes joined the held ones; at `RX_OUT` packets
    /// they are written, however few super-packets they make.
    fn delivered(&mut self, len: usize, gro: &mut Coalescer, tun: &mut TunQueue, sh: &Shared) {
        self.held += 1;
        self.count += 1;
        self.bytes += len as u64;
        self.held_bytes += len as u64;
        if self.held >= RX_OUT {
            write_tun(tun, gro, sh);
            self.held = 0;
            self.held_bytes = 0;
        }
    }

    fn relay(&mut self, plain: &[u8], ob: &mut Outbound, sh: &Shared, link: Out<'_>) {
        sh.counters.relayed.fetch_add(1, Ordering::Relaxed);
        let len = plain.len();
        let dst = &mut ob.bufs[self.relayed];
        dst[HEAD..HEAD + len].copy_from_slice(plain);
        ob.sizes[self.relayed] = len;
        self.relayed += 1;
        if self.relayed == TUN_BATCH {
            ob.process(self.relayed, link, sh);
            self.relayed = 0;
        }
    }

    /// Send the relayed packets that are left (delivered ones stay held).
    fn send_relays(&self, ob: &mut Outbound, sh: &Shared, link: Out<'_>) {
        if self.relayed > 0 {
            ob.process(self.relayed, link, sh);
        }
    }
}

fn write_tun(tun: &mut TunQueue, gro: &mut Coalescer, sh: &Shared) {
    gro.finish();
    let (failed, last) = tun.write_frames(gro.frames());
    gro.clear();
    let superseded = gro.take_superseded_acks();
    if superseded > 0 {
        sh.counters
            .acks_superseded
            .fetch_add(superseded, Ordering::Relaxed);
    }
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
    peers: &mut BatchPeers,
    now: u64,
) -> Verdict {
    handle_datagram_into(seg, src, Dest::Buffer(out), snap, sh, peers, now)
}

/// [`handle_datagram`] into `dest`; a [`Dest::Window`] at least as long as
/// `seg` gets [`Verdict::NeedsBuffer`] for a packet that needs reassembly
/// or decompression.
pub(super) fn handle_datagram_into(
    seg: &[u8],
    src: SocketAddr,
    mut dest: Dest<'_>,
    snap: &Snapshot,
    sh: &Shared,
    batch: &mut BatchPeers,
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
    // The batch's copy of the peer's keys and address; a per-packet load
    // only past `BATCH_PEERS_MAX` peers.
    let at = batch.find_or_load(peer);
    // A client that hears every address (`float`) takes data only from the
    // server's: 2.6 moves a client only with a new session, never on data.
    if sh.server_source_only && batch.remote(at, peer) != src {
        sh.counters.not_from_server.fetch_add(1, Ordering::Relaxed);
        return Verdict::Consumed;
    }
    let loaded;
    let ks: &KeySet = match at {
        Some(i) => &batch.seen[i].keys,
        None => {
            loaded = peer.keys.load();
            &loaded
        }
    };
    let Some(key) = ks.get(header.key_id) else {
        peer.counters.auth_failures.fetch_add(1, Ordering::Relaxed);
        return Verdict::Consumed;
    };
    let window = match &mut dest {
        Dest::Buffer(out) => {
            let need = OFF + seg.len();
            if out.len() > need {
                out.truncate(need);
            } else {
                out.resize(need, 0);
            }
            &mut out[OFF..]
        }
        Dest::Window(_) if sh.fragment.is_some() || peer.compression != Framing::None => {
            return Verdict::NeedsBuffer;
        }
        Dest::Window(w) => &mut **w,
    };
    let (pid, plen) = match key.keys.open.open(seg, window) {
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
    let plen = match &mut dest {
        Dest::Window(_) => plen,
        Dest::Buffer(out) => {
            let plen = match &sh.fragment {
                None => plen,
                Some(cfg) => match super::fragment::defragment(cfg, peer, out, plen) {
                    Some(plen) => plen,
                    None => return Verdict::Consumed,
                },
            };
            let Ok(plen) = peer.compression.unframe(out, OFF, plen, PKT_MAX) else {
                return Verdict::Consumed;
            };
            plen
        }
    };
    // Authenticated and fresh: the peer is alive.
    batch.received(at, peer, plen as u64, seg.len() as u64, now);
    if header.opcode == Opcode::DataV2
        && snap.client_default.is_none()
        && batch.remote(at, peer) != src
    {
        if sh.streams.is_some() {
            // Over TCP the connection is the peer's address: no floating.
            sh.counters.floats_refused.fetch_add(1, Ordering::Relaxed);
            return Verdict::Consumed;
        }
        match sh.peers.record_float(peer.peer_id, src, now) {
            FloatOutcome::Moved => {
                batch.moved(at, src);
                sh.up(
                    UpEvent::Float {
                        peer_id: peer.peer_id,
                        new_remote: src,
                    },
                    false,
                );
            }
            // Another worker moved it there already (or it is gone).
            FloatOutcome::Unchanged => batch.moved(at, src),
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
    let plain = match dest {
        Dest::Buffer(out) => out.get_mut(OFF..OFF + plen),
        Dest::Window(w) => w.get_mut(..plen),
    };
    let Some(plain) = plain else {
        return Verdict::Consumed;
    };
    if plain == PING_PAYLOAD {
        peer.counters
            .rx_keepalive_bytes
            .fetch_add(plen as u64, Ordering::Relaxed);
        return Verdict::Consumed;
    }
    if plain.len() >= OCC_MAGIC.len() && plain[..OCC_MAGIC.len()] == OCC_MAGIC {
        peer.counters
            .rx_keepalive_bytes
            .fetch_add(plen as u64, Ordering::Relaxed);
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
            // Server mode (the peer has tunnel addresses): IPv6 only from its
            // own address or its `iroute-ipv6` networks, as 2.6 checks the
            // source's route (a link-local source is dropped there too).
            let server_mode = peer.tunnel_ipv4.is_some() || peer.tunnel_ipv6.is_some();
            !server_mode
                || peer.tunnel_ipv6 == Some(src)
                || snap
                    .route_v6(src)
                    .is_some_and(|owner| owner.peer_id == peer.peer_id)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `datagrams` of `size` bytes each from `sends` sends.
    fn got(sends: u64, datagrams: u64, size: u64) -> Received {
        Received {
            sends,
            datagrams,
            delivered_bytes: datagrams * size,
            delivered: datagrams,
            ..Received::default()
        }
    }

    #[test]
    fn a_stock_peers_flowing_data_is_paced() {
        assert!(worth_pacing(got(3, 3, 1400), got(0, 0, 0), u64::MAX));
        // One packet now, more in the wake-up just before.
        assert!(worth_pacing(got(1, 1, 1400), got(4, 4, 1400), 200_000));
    }

    #[test]
    fn a_lone_packet_acks_and_gro_batches_are_not_paced() {
        // An idle tunnel's ping, or one packet long after the last ones.
        assert!(!worth_pacing(got(1, 1, 84), got(0, 0, 0), u64::MAX));
        assert!(!worth_pacing(got(1, 1, 1400), got(4, 4, 1400), 5_000_000));
        // Pure ACKs (download through the tunnel).
        assert!(!worth_pacing(got(8, 8, 52), got(8, 8, 52), 50_000));
        // A ferrovpn peer's GSO runs, long or (at a moderate rate) short.
        assert!(!worth_pacing(got(2, 56, 1400), got(2, 56, 1400), 50_000));
        assert!(!worth_pacing(got(2, 6, 1400), got(0, 0, 0), u64::MAX));
        // Nothing delivered in this wake-up (TUN traffic only).
        assert!(!worth_pacing(got(0, 0, 0), got(4, 4, 1400), 50_000));
    }

    /// `acks` pure ACKs (52 bytes) from the socket and `data` full
    /// segments from the TUN in one wake-up of a stock peer.
    fn download(acks: u64, data: u64) -> Received {
        Received {
            tun_packets: data,
            tun_bytes: data * 1400,
            ..got(acks, acks, 52)
        }
    }

    #[test]
    fn a_stock_peers_download_is_paced() {
        let none = Received::default();
        assert!(worth_pacing_acks(download(2, 6), none, u64::MAX));
        // One ACK now, data sent in the wake-up just before.
        assert!(worth_pacing_acks(download(1, 0), download(0, 4), 200_000));
        assert!(worth_pacing_acks(download(0, 3), download(2, 0), 200_000));
    }

    #[test]
    fn an_idle_ping_a_lone_ack_and_gro_batches_do_not_pace_a_download() {
        let none = Received::default();
        // A ping and its reply (small both ways).
        let ping = Received {
            tun_packets: 1,
            tun_bytes: 84,
            ..got(1, 1, 84)
        };
        assert!(!worth_pacing_acks(ping, none, u64::MAX));
        assert!(!worth_pacing_acks(ping, ping, 100_000));
        // One ACK and one segment out: a lone exchange.
        assert!(!worth_pacing_acks(download(1, 1), none, u64::MAX));
        // The data went out long before.
        assert!(!worth_pacing_acks(
            download(1, 0),
            download(0, 8),
            5_000_000
        ));
        // Data one way only (nothing from the socket), or the upload's data.
        assert!(!worth_pacing_acks(download(0, 8), none, u64::MAX));
        let upload = Received {
            tun_packets: 4,
            tun_bytes: 4 * 1400,
            ..got(8, 8, 1400)
        };
        assert!(!worth_pacing_acks(upload, none, u64::MAX));
        // A ferrovpn peer's ACKs in GRO batches.
        let gro = Received {
            tun_packets: 40,
            tun_bytes: 40 * 1400,
            ..got(1, 20, 52)
        };
        assert!(!worth_pacing_acks(gro, none, u64::MAX));
        // Nothing at all in this wake-up.
        assert!(!worth_pacing_acks(none, download(4, 8), 100_000));
    }

    /// The worker's own pace is no pause in the flow: right after a paced
    /// wake-up, one that finds only a stock peer's ACKs (download) or one
    /// datagram of its data (upload) is paced again; the same distance
    /// after an unpaced wake-up is a new flow, not paced.
    #[test]
    fn a_flow_stays_paced_across_the_workers_own_pace() {
        let t0 = 10_000_000;
        let next = t0 + ACK_PACE_NS.max(PACE_NS) + 50_000;
        for paced in [true, false] {
            let mut ib = Inbound::new(TunOffloads::default());
            ib.woke(t0);
            ib.now = got(2, 2, 52);
            assert!(ib.worth_pacing_acks(t0, 6, 6 * 1400));
            if paced {
                ib.paced_until(t0 + ACK_PACE_NS);
            }
            ib.woke(next);
            ib.now = got(2, 2, 52);
            assert_eq!(ib.worth_pacing_acks(next, 0, 0), paced, "download");

            let mut ib = Inbound::new(TunOffloads::default());
            ib.woke(t0);
            ib.now = got(4, 4, 1400);
            assert!(ib.worth_pacing(t0));
            if paced {
                ib.paced_until(t0 + PACE_NS);
            }
            ib.woke(next);
            ib.now = got(1, 1, 1400);
            assert_eq!(ib.worth_pacing(next), paced, "upload");
        }
    }

    #[test]
    fn acks_from_the_tun_wait_for_the_pace_and_data_does_not() {
        // Nothing read, one ACK, three ACKs and a ping reply.
        assert!(tun_may_wait(0, 0));
        assert!(tun_may_wait(1, 52));
        assert!(tun_may_wait(4, 3 * 52 + 84));
        // Data for some peer, alone or among ACKs.
        assert!(!tun_may_wait(1, 1400));
        assert!(!tun_may_wait(45, 45 * 1388));
        assert!(!tun_may_wait(3, 2 * 52 + 1400));
    }
}
