//! The run-to-completion worker: one thread owns one TUN queue and one UDP
//! socket and moves batches between them.
//!
//! ```text
//!  TUN queue ──read (GSO split)──► route ─► MSS clamp ─► reserve ids per peer ─► seal in place ─► sendmmsg (UDP GSO runs)
//!  UDP socket ─recvmmsg (GRO)───► classify byte 0 ─► peer/key ─► open ─► replay ─► ping/OCC/IP ─► TUN write (GRO coalesce)
//!                                        └─ control opcodes (≤ 2048 B) / OCC, floats ─► two bounded queues (try_send) ─► control plane
//! ```
//!
//! No allocation, lock or system call per packet: buffers are preallocated,
//! the peer table is read from an `ArcSwap` snapshot once per batch, each
//! peer's keys and address once per batch too (`inbound::BatchPeers`), counters
//! are added once per batch and peer, and packet ids are reserved as one
//! contiguous range per batch and peer (`fetch_add`). The batch is sent right
//! after sealing, so ids leave in order from each worker; two workers sending
//! to the same peer at the same moment interleave their ranges, which a stock
//! OpenVPN receiver (64-id window) tolerates as long as one batch stays below
//! ~64 packets per peer ahead of another worker's — see the crate docs.

mod fragment;
mod handoff;
#[cfg(test)]
mod handoff_tests;
mod inbound;
mod outbound;
#[cfg(test)]
mod pair_tests;
mod stream_loop;
mod tos;

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ferrovpn_proto::compress;
use ferrovpn_proto::data::{MAX_HEAD_ROOM, MAX_TAIL_ROOM};
use ferrovpn_proto::stream::PREFIX_LEN;

use crate::UpEvent;
use crate::peers::{Peer, PeerTable, Snapshot, now_nanos};
use crate::stream::{Streams, WorkerInbox};
use crate::sys::{self, EventFd, Ready};
use crate::tun::TunQueue;
use crate::udp::Port;
use crate::up::UpSenders;

pub use fragment::Fragment;
pub(crate) use fragment::{FragmentConfig, PeerFragments};
pub(crate) use handoff::{Handoff, KeyOrder, ORDER_CAPACITY};
use inbound::Inbound;
pub(crate) use outbound::Out;
use outbound::Outbound;
#[cfg(test)]
pub(crate) use outbound::ROUND_DATAGRAMS;

/// Header room in front of every TUN packet: the TCP length prefix, a
/// P_DATA_V2 header (AEAD, or CBC's HMAC, IV and packet id) and the
/// compression framing are written in place there.
pub(crate) const HEAD: usize = PREFIX_LEN + MAX_HEAD_ROOM + compress::MAX_PREFIX;
/// Room behind every TUN packet: the compression suffix and CBC padding.
pub(crate) const TAIL: usize = compress::MAX_SUFFIX + MAX_TAIL_ROOM;
/// Offset of plaintext in the TUN write buffers (room for the virtio header).
const OFF: usize = 16;
/// Packets per TUN batch (several super-packets).
const TUN_BATCH: usize = 128;
/// Datagram buffers per `recvmmsg` (each up to 64 KiB with GRO).
const RX_MSGS: usize = 8;
/// Decrypted packets gathered before a TUN write.
const RX_OUT: usize = 128;
/// `recvmmsg` batches a worker takes from its socket per turn of its loop
/// (while each comes back full), against one TUN batch of up to
/// [`TUN_BATCH`] packets: the two directions get about the same number of
/// packets per turn. With one receive batch per turn, a server sending
/// bulk data to stock clients read their ACKs (one datagram each) at 8 per
/// 128 packets sent, and the ACKs and pings queued in its socket for
/// milliseconds (measured with 4 stock clients downloading).
const RX_BATCHES_PER_TURN: usize = TUN_BATCH / RX_MSGS;
const NO_DEST: u16 = u16::MAX;
/// Largest IP packet a buffer holds.
const PKT_MAX: usize = 65_535;
/// Peers per batch with their own id range; packets for more are dropped.
const MAX_SLOTS: usize = 64;

/// Timer slack of a worker that paces its wake-ups (see `inbound::worth_pacing`).
const PACE_TIMER_SLACK_NS: u64 = 5_000;

/// Counters of the whole data plane (all workers).
#[derive(Default, Debug)]
pub struct GlobalCounters {
    /// Control packets dropped because their queue was full.
    pub control_dropped: AtomicU64,
    /// Control-opcode datagrams longer than [`crate::up::MAX_CONTROL_DATAGRAM`], dropped.
    pub control_oversized: AtomicU64,
    /// OCC and float events dropped because their queue was full.
    pub events_dropped: AtomicU64,
    pub unknown_peer: AtomicU64,
    pub no_route: AtomicU64,
    pub bad_source: AtomicU64,
    /// Authenticated packets from a new address that did not move their peer:
    /// it floated less than a second ago, or another peer owns the address.
    pub floats_refused: AtomicU64,
    /// A client with `float` (its socket hears every address): data packets
    /// from an address other than the server's, dropped unopened as 2.6
    /// drops them ("TLS keys are out of sync").
    pub not_from_server: AtomicU64,
    pub tun_read_errors: AtomicU64,
    pub tun_write_errors: AtomicU64,
    pub udp_send_dropped: AtomicU64,
    /// Packets dropped because a TCP connection's backlog was full.
    pub stream_send_dropped: AtomicU64,
    /// Packets relayed peer-to-peer (client-to-client) without the TUN.
    pub relayed: AtomicU64,
    /// Pure TCP ACKs not written to the TUN because the next packet of
    /// their flow in the same write superseded them (`tun::ack_filter`).
    pub acks_superseded: AtomicU64,
}

/// The bytes a data plane read from and wrote to its link, control and
/// data channel alike, as OpenVPN 2.6 counts its `TCP/UDP read bytes` and
/// `write bytes` (`c2.link_read_bytes`/`link_write_bytes`): a UDP
/// datagram's payload, or a TCP packet without its 2-byte length prefix
/// when read but with it when written (2.6 counts what `recv` gives after
/// the stream framing, and what `send` took). Given to a data plane in
/// [`crate::DataPlaneConfig::link_counters`]: workers add to it once per
/// batch; a data plane without it counts nothing.
#[derive(Debug, Default)]
pub struct LinkCounters {
    pub read_bytes: AtomicU64,
    pub written_bytes: AtomicU64,
}

impl LinkCounters {
    pub fn read(&self, bytes: u64) {
        if bytes > 0 {
            self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }
    pub fn written(&self, bytes: u64) {
        if bytes > 0 {
            self.written_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }
    /// `(read, written)` so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.read_bytes.load(Ordering::Relaxed),
            self.written_bytes.load(Ordering::Relaxed),
        )
    }
}

/// One worker's own counters. Only that worker writes them (a relaxed
/// store of its running totals once per wake-up), and each sits on cache
/// lines of its own, so workers never contend on them.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerCounters {
    /// Packets read from the TUN device (to seal and send).
    pub tun_packets: AtomicU64,
    /// Datagrams read from the UDP socket.
    pub udp_packets: AtomicU64,
    /// Packets read from TCP connections.
    pub tcp_packets: AtomicU64,
    /// Nanoseconds spent handling packets (from a wake-up until idle again).
    pub busy_nanos: AtomicU64,
}

/// A worker's running totals since it started.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    tun_packets: u64,
    /// Datagrams read from the UDP socket.
    link_packets: u64,
    busy_nanos: u64,
}

impl WorkerCounters {
    /// Publish a UDP worker's totals after a wake-up (only that worker
    /// calls this; relaxed stores, read by the metrics scrape). TCP
    /// workers store theirs in `stream_loop`.
    fn publish(&self, totals: Totals) {
        self.tun_packets
            .store(totals.tun_packets, Ordering::Relaxed);
        self.udp_packets
            .store(totals.link_packets, Ordering::Relaxed);
        self.busy_nanos.store(totals.busy_nanos, Ordering::Relaxed);
    }
}

/// What all workers share.
pub(crate) struct Shared {
    pub peers: PeerTable,
    pub up: UpSenders,
    pub counters: Arc<GlobalCounters>,
    /// One entry per worker, by index.
    pub workers: Box<[WorkerCounters]>,
    pub client_to_client: bool,
    pub mss: Option<(u16, u16)>,
    /// The same for peers whose key uses a CBC cipher (larger overhead).
    pub mss_cbc: Option<(u16, u16)>,
    pub stop: AtomicBool,
    pub wake: EventFd,
    /// TCP transport: every connection (`None` over UDP).
    pub streams: Option<Arc<Streams>>,
    /// `fragment` (UDP only): every packet takes the fragmenting path.
    pub fragment: Option<FragmentConfig>,
    /// `passtos`: datagrams take the TOS byte of the IPv4 packet they carry.
    pub passtos: bool,
    /// A client whose socket is not connected (`float`): data packets count
    /// only from the peer's current address.
    pub server_source_only: bool,
    /// Link bytes, when the owner wants them counted.
    pub link: Option<Arc<LinkCounters>>,
    /// `seal-spread` (a client over UDP): every worker seals the tunnel's
    /// TUN batches, which leave in packet-id order (`handoff.rs`).
    pub handoff: Option<Handoff>,
}

impl Shared {
    /// Queue `ev` for the control plane: control packets and peer events
    /// have separate queues, so neither kind can crowd out the other.
    fn up(&self, ev: UpEvent, control: bool) {
        let (queue, dropped) = if control {
            (&self.up.control, &self.counters.control_dropped)
        } else {
            (&self.up.events, &self.counters.events_dropped)
        };
        if queue.try_send(ev).is_err() {
            dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub(crate) struct Worker {
    pub index: usize,
    tun: TunQueue,
    link: Link,
    sh: Arc<Shared>,
    ob: Outbound,
    ib: Inbound,
}

/// A worker's side of the transport.
pub(crate) enum Link {
    Udp {
        socket: Port,
        /// Whether this worker reads the socket (client mode: only worker 0
        /// reads the shared socket; see `Worker::new`).
        rx: bool,
    },
    Stream {
        inbox: WorkerInbox,
        /// Client mode: one connection, to the server it chose (full-size
        /// read buffer at once), and the TUN is not read while its backlog
        /// is high, so a slow link slows the tunnel down instead of dropping.
        client: bool,
        /// A server listening on UDP too: this worker's UDP socket.
        udp: Option<Port>,
    },
}

/// IPv4 header: source and destination address offsets, shortest header.
const IPV4_SRC: usize = 12;
const IPV4_DST: usize = 16;
const IPV4_HEADER_LEN: usize = 20;
/// IPv6 header: source and destination address offsets, header length.
const IPV6_SRC: usize = 8;
const IPV6_DST: usize = 24;
const IPV6_HEADER_LEN: usize = 40;

/// Source and destination of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IpAddrs {
    V4 { src: Ipv4Addr, dst: Ipv4Addr },
    V6 { src: Ipv6Addr, dst: Ipv6Addr },
}

/// The addresses of an IPv4 or IPv6 packet; `None` for anything else or a runt.
fn ip_addrs(pkt: &[u8]) -> Option<IpAddrs> {
    match pkt.first()? >> 4 {
        4 if pkt.len() >= IPV4_HEADER_LEN => Some(IpAddrs::V4 {
            src: Ipv4Addr::from(addr_at::<4>(pkt, IPV4_SRC)),
            dst: Ipv4Addr::from(addr_at::<4>(pkt, IPV4_DST)),
        }),
        6 if pkt.len() >= IPV6_HEADER_LEN => Some(IpAddrs::V6 {
            src: Ipv6Addr::from(addr_at::<16>(pkt, IPV6_SRC)),
            dst: Ipv6Addr::from(addr_at::<16>(pkt, IPV6_DST)),
        }),
        _ => None,
    }
}

/// `N` bytes at `at`; the caller checked the length.
fn addr_at<const N: usize>(pkt: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&pkt[at..at + N]);
    a
}

impl IpAddrs {
    /// The peer that owns the destination address.
    fn dst_peer<'a>(&self, snap: &'a Snapshot) -> Option<&'a Arc<Peer>> {
        match self {
            IpAddrs::V4 { dst, .. } => snap.route_v4(*dst),
            IpAddrs::V6 { dst, .. } => snap.route_v6(*dst),
        }
    }
}

impl Worker {
    /// `Link::Udp { rx: false }` for workers that share worker 0's socket
    /// (client mode). The TUN driver steers a flow's outgoing packets to the
    /// queue its last incoming packet was written to (automq flow table), so
    /// if several workers read one socket, flows hop between workers and get
    /// reordered; with one reader every flow sticks to one worker. The same
    /// holds for a client's TCP connection: worker 0 owns it.
    pub(crate) fn new(index: usize, tun: TunQueue, link: Link, gso: bool, sh: Arc<Shared>) -> Self {
        let ib = Inbound::new(tun.offloads());
        let mut ob = Outbound::new(gso);
        ob.worker = index;
        Worker {
            index,
            tun,
            link,
            sh,
            ob,
            ib,
        }
    }

    /// Run until the data plane stops (`Ok`), or until `poll` fails.
    pub(crate) fn run(self) -> std::io::Result<()> {
        match self.link {
            Link::Udp { .. } => self.run_udp(),
            Link::Stream { .. } => self.run_stream(),
        }
    }

    fn run_udp(mut self) -> std::io::Result<()> {
        let Link::Udp { socket: udp, rx } = &self.link else {
            return Ok(());
        };
        let udp_rx = *rx;
        // poll ignores negative descriptors: a side we do not (or no longer) read is -1.
        let tun_fd = self.tun.as_raw_fd();
        let mut tun_alive = true;
        let mail_fd = self
            .sh
            .handoff
            .as_ref()
            .map_or(-1, |h| h.wake_fd(self.index));
        let mut fds = [
            tun_fd,
            if udp_rx { udp.as_raw_fd() } else { -1 },
            self.sh.wake.as_raw_fd(),
            mail_fd,
        ];
        let mut ready = [Ready::default(); 4];
        let mut totals = Totals::default();
        // Whether the last wake-up found a stock peer's data flowing (and
        // paced the worker): this one then reads the socket once.
        let mut paced = false;
        // Whether the last wake-up found a stock peer downloading (and
        // paced the worker): this one reads the socket once.
        let mut acks_paced = false;
        // Pacing sleeps for a few hundred microseconds; keep the kernel
        // from stretching them by its default 50 µs slack.
        if let Err(e) = sys::set_thread_timer_slack(PACE_TIMER_SLACK_NS) {
            tracing::debug!("worker {}: timer slack: {e}", self.index);
        }
        loop {
            if self.sh.stop.load(Ordering::Relaxed) {
                break;
            }
            // With `seal-spread`, the TUN is read only while a spare job is
            // at hand; a job coming back wakes the worker (`mail_fd`).
            fds[0] = if tun_alive && self.ob.can_read(&self.sh) {
                tun_fd
            } else {
                -1
            };
            match sys::poll(&fds, &[false; 4], 1000, &mut ready) {
                Ok(0) => continue,
                Ok(_) => {}
                Err(e) => return Err(e),
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
                tun_alive = false;
            }
            if ready[3].readable
                && let Some(h) = &self.sh.handoff
            {
                h.woken(self.index);
            }
            let tun_ok = tun_alive;
            let woke = std::time::Instant::now();
            let woke_at = now_nanos();
            self.ib.woke(woke_at);
            self.ob.read_since_wake = (0, 0);
            self.drain(tun_ok, udp_rx, paced, acks_paced, &mut totals);
            totals.busy_nanos += woke.elapsed().as_nanos() as u64;
            totals.link_packets = self.ib.received;
            self.sh.workers[self.index].publish(totals);
            // A stock peer's data is flowing: let its next datagrams gather
            // in the socket instead of waking for each few (see
            // `inbound::worth_pacing`), and the inner receiver's ACKs in
            // the TUN (`inbound::tun_may_wait`). A TUN with data and the
            // stop signal still wake the worker at once.
            let (packets, bytes) = self.ob.read_since_wake;
            paced = udp_rx && self.ib.worth_pacing(woke_at);
            // A stock peer downloading: its ACKs and the data they release
            // gather for one turn per pace (`inbound::worth_pacing_acks`).
            acks_paced = udp_rx && !paced && self.ib.worth_pacing_acks(woke_at, packets, bytes);
            if paced || acks_paced {
                // Uploads and downloads each have a pace of their own,
                // measured apart (both 1 ms now; see the two constants).
                let pace_ns = if paced {
                    inbound::PACE_NS
                } else {
                    inbound::ACK_PACE_NS
                };
                let until = woke_at + pace_ns;
                self.ib.paced_until(until);
                let now = now_nanos();
                if now < until {
                    let tun_wakes = if acks_paced || inbound::tun_may_wait(packets, bytes) {
                        -1
                    } else {
                        fds[0]
                    };
                    sys::poll_readable_for(
                        &[tun_wakes, fds[2], fds[3]],
                        Duration::from_nanos(until - now),
                    )?;
                }
            }
        }
        Ok(())
    }

    /// One wake-up's work over UDP: drain the TUN (when `tun_ok`) and the
    /// socket (when `udp_rx`) alternately until both are idle (bounded),
    /// then write what is held to the TUN.
    ///
    /// `paced`: a stock peer's data is flowing and the worker waited for
    /// it to gather (see `run_udp`). Then the socket is read first and,
    /// once found empty, not again in this wake-up while the TUN gives only
    /// ACKs ([`inbound::tun_may_wait`]): the datagrams that come in
    /// meanwhile wait for the next paced wake-up, at most
    /// [`inbound::PACE_NS`] after this one. Read again at once, each few of
    /// them made a small TUN write that woke the local receiver, which
    /// preempted the worker, and called for an ACK of its own: with one
    /// stock client uploading, a wake-up ran up to a dozen such rounds.
    ///
    /// `acks_paced`: a stock peer is downloading and the worker waited for
    /// its ACKs to gather ([`inbound::worth_pacing_acks`]). Then the socket
    /// is read first, until found empty, and not again in this wake-up: the
    /// TUN is read until empty (the data the ACKs released), and the ACKs
    /// that come in meanwhile wait for the next wake-up.
    fn drain(
        &mut self,
        tun_ok: bool,
        udp_rx: bool,
        paced: bool,
        acks_paced: bool,
        totals: &mut Totals,
    ) {
        if !matches!(self.link, Link::Udp { .. }) {
            return;
        }
        let mut socket_read = false;
        for _ in 0..256 {
            let (packets, bytes) = self.ob.read_since_wake;
            let read_socket = udp_rx
                && !(socket_read && (acks_paced || paced && inbound::tun_may_wait(packets, bytes)));
            let (busy, drained) = self.turn(tun_ok, read_socket, paced || acks_paced, totals);
            socket_read |= drained;
            if !busy || self.sh.stop.load(Ordering::Relaxed) {
                break;
            }
        }
        // After the bound on the loop above: nothing waits for a later wake-up.
        self.ib.flush(&mut self.tun, &self.sh);
    }

    /// One turn of [`Worker::drain`]: a TUN batch (when `tun_ok`) and
    /// receive batches from the socket (when `udp_rx`) while they come back
    /// full, at most [`RX_BATCHES_PER_TURN`]; the socket first when
    /// `udp_first`, so that the ACKs its TUN write calls for leave with
    /// those that gathered in the TUN, in one send. Returns whether there
    /// was anything to do, and whether the socket was read until a short
    /// batch.
    fn turn(
        &mut self,
        tun_ok: bool,
        udp_rx: bool,
        udp_first: bool,
        totals: &mut Totals,
    ) -> (bool, bool) {
        let Link::Udp { socket: udp, .. } = &self.link else {
            return (false, false);
        };
        let mut busy = false;
        if let Some(h) = &self.sh.handoff {
            // Other workers' batches to seal (bounded: the queue holds a few).
            while let Some(job) = h.next_job(self.index) {
                self.ob.seal_job(job, udp, &self.sh);
                busy = true;
            }
        }
        let mut drained = false;
        for step in [!udp_first, udp_first] {
            if step {
                busy |= tun_ok && tun_batch(&mut self.ob, &self.tun, udp, &self.sh, totals);
                continue;
            }
            if !udp_rx {
                continue;
            }
            for _ in 0..RX_BATCHES_PER_TURN {
                if !self
                    .ib
                    .run(udp, &mut self.tun, &mut self.ob, &self.sh, Out::Udp(udp))
                {
                    drained = true;
                    break;
                }
                busy = true;
                if !self.ib.last_batch_full {
                    drained = true;
                    break;
                }
            }
            // ACKs held across full receive batches (for the ACK filter)
            // do not wait for the TUN batch too.
            if !drained {
                self.ib.flush_small(&mut self.tun, &self.sh);
            }
        }
        (busy, drained)
    }

    /// A test's stand-in for one wake-up: everything queued on both sides
    /// is handled (the in-memory TUN and link have no descriptor to poll).
    #[cfg(test)]
    fn pump(&mut self) {
        let mut totals = Totals::default();
        self.ib.woke(now_nanos());
        self.drain(true, true, false, false, &mut totals);
    }
}

/// Read, seal and send one TUN batch (with `seal-spread`, only while a
/// spare job is at hand); whether there was one.
fn tun_batch(
    ob: &mut Outbound,
    tun: &TunQueue,
    udp: &Port,
    sh: &Shared,
    totals: &mut Totals,
) -> bool {
    if !ob.can_read(sh) {
        return false;
    }
    let n = ob.read(tun, &sh.counters);
    if n > 0 {
        totals.tun_packets += n as u64;
        ob.process(n, Out::Udp(udp), sh);
    }
    n > 0
}

#[cfg(test)]
mod tests {
    use super::inbound::{BatchPeers, Verdict, handle_datagram};
    use super::outbound::{Outbound, route};
    use super::*;
    use crate::up::MAX_CONTROL_DATAGRAM;
    use ferrovpn_proto::data::{Cipher, DataKeys, KeyBlock, Side};
    use ferrovpn_proto::data::{OCC_MAGIC, PING_PAYLOAD};
    use ferrovpn_proto::wire::{DATA_V1_OVERHEAD, DATA_V2_OVERHEAD};
    use proptest::prelude::*;
    use std::net::{Ipv4Addr, SocketAddr};

    fn shared() -> (Arc<Shared>, crate::UpReceiver) {
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
        let (tx, rx) = crate::up::queues(4, 1);
        let sh = Shared {
            peers,
            up: tx,
            counters: Arc::new(GlobalCounters::default()),
            workers: (0..2).map(|_| WorkerCounters::default()).collect(),
            client_to_client: true,
            mss: Some((1400, 1380)),
            mss_cbc: Some((1350, 1330)),
            stop: AtomicBool::new(false),
            wake: EventFd::new().unwrap(),
            streams: None,
            fragment: None,
            passtos: false,
            server_source_only: false,
            link: Some(Arc::new(LinkCounters::default())),
            handoff: None,
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

    /// A batch's datagrams to a peer that reads one datagram per system
    /// call leave in rounds of `ROUND_DATAGRAMS` (one `sendmmsg` each),
    /// the first at once and all in packet-id order; a peer that takes
    /// bursts gets the whole batch in one `sendmmsg`.
    #[test]
    fn datagrams_to_a_one_by_one_reader_leave_in_rounds() {
        let server: SocketAddr = "192.0.2.100:1194".parse().unwrap();
        let client: SocketAddr = "192.0.2.1:1194".parse().unwrap();
        let full = ROUND_DATAGRAMS;
        for (one_by_one, n, calls) in [
            (true, 3 * full + 4, 4),
            (true, full, 1),
            (true, full + 1, 2),
            (true, 1, 1),
            (false, 3 * full + 4, 1),
        ] {
            let (sh, _rx) = shared();
            sh.peers.set_reads_one_by_one(1, one_by_one);
            assert_eq!(sh.peers.load().by_id[&1].reads_one_by_one, one_by_one);
            let (port, _client_port, link) = crate::udp::memory::link(server, client);
            let port = Port::Memory(port);
            let mut ob = Outbound::new(true);
            let pkt = ipv4([10, 8, 0, 1], [10, 8, 0, 2]);
            for i in 0..n {
                ob.bufs[i][HEAD..HEAD + pkt.len()].copy_from_slice(&pkt);
                ob.sizes[i] = pkt.len();
            }
            ob.process(n, Out::Udp(&port), &sh);
            let case = format!("one by one: {one_by_one}, {n} datagrams");
            assert_eq!(link.send_calls(server), calls, "{case}");
            let got = link.take(client);
            assert_eq!(got.len(), n, "{case}");
            // P_DATA_V2: opcode and key id, peer id (3 bytes), packet id.
            let ids: Vec<u32> = got
                .iter()
                .map(|d| u32::from_be_bytes([d.bytes[4], d.bytes[5], d.bytes[6], d.bytes[7]]))
                .collect();
            assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{case}: {ids:?}");
        }
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
        let mut acc = BatchPeers::default();
        let pkt = ipv4([10, 8, 0, 2], [10, 8, 0, 1]);
        let mut framed = vec![compress::NO_COMPRESS_BYTE];
        framed.extend_from_slice(&pkt);
        let w = client_packet(1, 1, &framed);
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc, 1),
            Verdict::Deliver(28)
        ));
        assert_eq!(&out[OFF..OFF + 28], &pkt[..]);
        let mut ping = vec![compress::NO_COMPRESS_BYTE];
        ping.extend_from_slice(&PING_PAYLOAD);
        let w = client_packet(1, 2, &ping);
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc, 1),
            Verdict::Consumed
        ));
        // Unframed (or LZO-compressed) payloads are dropped, as by 2.6.
        let w = client_packet(1, 3, &pkt);
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc, 1),
            Verdict::Consumed
        ));
    }

    /// `fragment`: the header comes off after opening, and a packet split
    /// over three datagrams is delivered once the last one arrives.
    #[test]
    fn fragment_headers_are_removed_and_fragments_reassembled() {
        use ferrovpn_proto::fragment::{WHOLE_HEADER, split};
        let (sh, _rx) = shared();
        let Ok(mut inner) = Arc::try_unwrap(sh) else {
            panic!("shared() keeps no other reference")
        };
        inner.fragment = Some(FragmentConfig::new(
            Fragment {
                max: 1300,
                mtu: false,
            },
            1500,
        ));
        let sh = Arc::new(inner);
        let snap = sh.peers.load();
        let a: SocketAddr = "192.0.2.1:1194".parse().unwrap();
        let mut out = Vec::with_capacity(70_000);
        let mut acc = BatchPeers::default();
        let pkt = ipv4([10, 8, 0, 2], [10, 8, 0, 1]);
        let w = client_packet(1, 1, &[&WHOLE_HEADER[..], &pkt].concat());
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc, 1),
            Verdict::Deliver(28)
        ));
        assert_eq!(&out[OFF..OFF + 28], &pkt[..]);
        // A payload without the header is dropped.
        let w = client_packet(1, 2, &pkt[..3]);
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc, 1),
            Verdict::Consumed
        ));
        let mut big = ipv4([10, 8, 0, 2], [10, 8, 0, 1]);
        big.resize(1000, 0x5a);
        big[2..4].copy_from_slice(&1000u16.to_be_bytes());
        let pieces: Vec<Vec<u8>> = split(&big, 400, || 9)
            .unwrap()
            .map(|(h, part)| [&h[..], part].concat())
            .collect();
        assert_eq!(pieces.len(), 3);
        for (i, piece) in pieces.iter().enumerate() {
            let w = client_packet(1, 3 + i as u32, piece);
            let v = handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc, 1);
            if i < 2 {
                assert!(matches!(v, Verdict::Consumed));
            } else {
                assert!(matches!(v, Verdict::Deliver(1000)));
                assert_eq!(&out[OFF..OFF + 1000], &big[..]);
            }
        }
    }

    #[test]
    fn classify_data_ping_occ_control_replay_and_relay() {
        let (sh, rx) = shared();
        let snap = sh.peers.load();
        let a: SocketAddr = "192.0.2.1:1194".parse().unwrap();
        let v1src: SocketAddr = "192.0.2.2:1194".parse().unwrap();
        let mut out = Vec::with_capacity(70_000);
        let mut acc = BatchPeers::default();
        let pkt = ipv4([10, 8, 0, 2], [10, 8, 0, 1]);
        let w = client_packet(1, 1, &pkt);
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc, 1),
            Verdict::Deliver(28)
        ));
        assert_eq!(&out[OFF..OFF + 28], &pkt[..]);
        // Replay.
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc, 1),
            Verdict::Consumed
        ));
        assert_eq!(sh.peers.peer_stats(1).unwrap().replay_drops, 1);
        // Spoofed inner source.
        let w = client_packet(1, 2, &ipv4([10, 8, 0, 9], [10, 8, 0, 1]));
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc, 1),
            Verdict::Consumed
        ));
        assert_eq!(sh.counters.bad_source.load(Ordering::Relaxed), 1);
        // Client-to-client relay to the V1 peer.
        let w = client_packet(1, 3, &ipv4([10, 8, 0, 2], [10, 8, 0, 3]));
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc, 1),
            Verdict::Relay(28)
        ));
        // DATA_V1 from the V1 peer's address.
        let w = client_packet(0x00FF_FFFF, 1, &ipv4([10, 8, 0, 3], [10, 8, 0, 1]));
        assert!(matches!(
            handle_datagram(&w, v1src, &mut out, &snap, &sh, &mut acc, 1),
            Verdict::Deliver(28)
        ));
        // DATA_V1 from an unknown address.
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc, 1),
            Verdict::Consumed
        ));
        // Ping: liveness only.
        let w = client_packet(1, 4, &PING_PAYLOAD);
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc, 1),
            Verdict::Consumed
        ));
        // OCC goes up.
        let mut occ = OCC_MAGIC.to_vec();
        occ.push(6);
        let w = client_packet(1, 5, &occ);
        assert!(matches!(
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc, 1),
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
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc, 1),
            Verdict::Consumed
        ));
        assert_eq!(sh.peers.peer_stats(1).unwrap().auth_failures, 1);
        // Float: valid packet from a new address.
        let b: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let w = client_packet(1, 7, &pkt);
        assert!(matches!(
            handle_datagram(&w, b, &mut out, &snap, &sh, &mut acc, 1),
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
            handle_datagram(&[0x38, 1, 2], a, &mut out, &snap, &sh, &mut acc, 1);
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
            handle_datagram(&w, b, &mut out, &snap, &sh, &mut acc, 1),
            Verdict::Consumed
        ));
        sh.peers.set_peer_ipv6(1, Some("fd00::2".parse().unwrap()));
        sh.peers
            .set_peer_ipv6(0x00FF_FFFF, Some("fd00::3".parse().unwrap()));
        let snap = sh.peers.load();
        let w = client_packet(1, 9, &v6);
        assert!(matches!(
            handle_datagram(&w, b, &mut out, &snap, &sh, &mut acc, 1),
            Verdict::Relay(40)
        ));
        assert_eq!(route(&snap, &v6).map(|p| p.peer_id), Some(0x00FF_FFFF));
        // From a network behind the peer: dropped until it is its `iroute-ipv6`.
        v6[8..24].copy_from_slice(&"fd07::5".parse::<std::net::Ipv6Addr>().unwrap().octets());
        let w = client_packet(1, 10, &v6);
        let bad_before = sh.counters.bad_source.load(Ordering::Relaxed);
        assert!(matches!(
            handle_datagram(&w, b, &mut out, &snap, &sh, &mut acc, 1),
            Verdict::Consumed
        ));
        assert_eq!(
            sh.counters.bad_source.load(Ordering::Relaxed),
            bad_before + 1
        );
        sh.peers
            .set_peer_iroutes_v6(1, &[("fd07::".parse().unwrap(), 64)]);
        let snap = sh.peers.load();
        let w = client_packet(1, 11, &v6);
        assert!(matches!(
            handle_datagram(&w, b, &mut out, &snap, &sh, &mut acc, 1),
            Verdict::Relay(40)
        ));
        // Stats accumulate per batch.
        // Every authenticated, fresh packet counts (the spoofed ones too).
        assert_eq!(acc.packets(), 11);
    }

    /// A batch from more peers than it keeps (`BATCH_PEERS_MAX`) opens
    /// and counts every one of them, and a peer is counted alive only for
    /// authentic packets.
    #[test]
    fn a_batch_from_many_peers_counts_each_one() {
        let (sh, _rx) = shared();
        let block = KeyBlock([3; 256]);
        let ids = 2..40u32;
        for id in ids.clone() {
            let addr = SocketAddr::from(([198, 18, 0, id as u8], 1194));
            sh.peers
                .upsert_peer(id, addr, Some(Ipv4Addr::from(0x0a09_0000 + id)));
            sh.peers.install_key(
                id,
                0,
                DataKeys::from_key_block(Cipher::Aes256Gcm, &block, Side::Server),
            );
        }
        let snap = sh.peers.load();
        let before = |id: u32| sh.peers.peer_stats(id).unwrap().last_rx;
        let last_rx_before: Vec<_> = ids.clone().map(before).collect();
        let mut out = Vec::with_capacity(70_000);
        let mut batch = BatchPeers::default();
        let now = 1 << 40;
        // First a forged packet from peer 1 (bad tag): it takes a place in
        // the batch but is neither counted nor makes the peer alive.
        let peer1_before = sh.peers.peer_stats(1).unwrap().last_rx;
        let mut forged = client_packet(1, 1, &PING_PAYLOAD);
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let src: SocketAddr = "192.0.2.1:1194".parse().unwrap();
        handle_datagram(&forged, src, &mut out, &snap, &sh, &mut batch, now);
        for round in 1..=2u32 {
            for id in ids.clone() {
                let src = SocketAddr::from(([198, 18, 0, id as u8], 1194));
                let w = client_packet(id, round, &PING_PAYLOAD);
                handle_datagram(&w, src, &mut out, &snap, &sh, &mut batch, now);
            }
        }
        batch.finish(now);
        for (id, was) in ids.zip(last_rx_before) {
            let s = sh.peers.peer_stats(id).unwrap();
            assert_eq!(s.rx_packets, 2, "peer {id}");
            assert_eq!(s.rx_bytes, 2 * PING_PAYLOAD.len() as u64, "peer {id}");
            assert!(s.last_rx > was, "peer {id} is alive");
        }
        let peer1 = sh.peers.peer_stats(1).unwrap();
        assert_eq!((peer1.rx_packets, peer1.auth_failures), (0, 1));
        assert_eq!(
            peer1.last_rx, peer1_before,
            "a forged packet is no sign of life"
        );
    }

    /// Audit M2: one client alternating between a free address and another
    /// peer's address, 10 000 times among 1000 peers, moves once.
    #[test]
    fn float_storm_moves_once_and_never_onto_another_peers_address() {
        let (sh, rx) = shared();
        let block = KeyBlock([3; 256]);
        for id in 2..1000u32 {
            let addr = SocketAddr::from(([198, 18, (id >> 8) as u8, id as u8], 1194));
            sh.peers
                .upsert_peer(id, addr, Some(Ipv4Addr::from(0x0a09_0000 + id)));
            sh.peers.install_key(
                id,
                0,
                DataKeys::from_key_block(Cipher::Aes256Gcm, &block, Side::Server),
            );
        }
        let taken: SocketAddr = "198.18.0.2:1194".parse().unwrap();
        let free: SocketAddr = "203.0.113.9:40000".parse().unwrap();
        let before = sh.peers.generation();
        let mut out = Vec::with_capacity(70_000);
        let mut acc = BatchPeers::default();
        let pkt = ipv4([10, 8, 0, 2], [10, 8, 0, 1]);
        let mut delivered = 0;
        for i in 0..10_000u32 {
            let src = if i % 2 == 0 { free } else { taken };
            let w = client_packet(1, i + 1, &pkt);
            let snap = sh.peers.load();
            // 10 µs apart: the whole storm lasts 0.1 s.
            let now = 1_000_000_000 + u64::from(i) * 10_000;
            if let Verdict::Deliver(_) =
                handle_datagram(&w, src, &mut out, &snap, &sh, &mut acc, now)
            {
                delivered += 1;
            }
        }
        let republished = sh.peers.generation() - before;
        assert!(
            republished <= 2,
            "{republished} snapshots for one floating peer"
        );
        let snap = sh.peers.load();
        assert_eq!(snap.by_addr[&taken].peer_id, 2, "peer 2 lost its address");
        assert_eq!(snap.by_addr[&free].peer_id, 1);
        assert_eq!(**snap.by_id[&1].remote.load(), free);
        // Packets from the other peer's address are dropped, the rest delivered.
        assert_eq!(delivered, 5_000);
        let floats: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter(|e| matches!(e, UpEvent::Float { .. }))
            .collect();
        assert_eq!(
            floats,
            vec![UpEvent::Float {
                peer_id: 1,
                new_remote: free
            }]
        );
        assert_eq!(sh.counters.floats_refused.load(Ordering::Relaxed), 5_000);
    }

    /// Floats between two free addresses: one per FLOAT_INTERVAL.
    #[test]
    fn floats_are_rate_limited_per_peer() {
        let (sh, _rx) = shared();
        let (x, y): (SocketAddr, SocketAddr) = (
            "203.0.113.1:1000".parse().unwrap(),
            "203.0.113.2:2000".parse().unwrap(),
        );
        let mut out = Vec::with_capacity(70_000);
        let mut acc = BatchPeers::default();
        let pkt = ipv4([10, 8, 0, 2], [10, 8, 0, 1]);
        let start = 5_000_000_000u64;
        let second = crate::peers::FLOAT_INTERVAL.as_nanos() as u64;
        for (id, src, now) in [
            (1, x, start),
            (2, y, start + 1),
            (3, x, start + 2),
            (4, y, start + second),
        ] {
            let snap = sh.peers.load();
            let w = client_packet(1, id, &pkt);
            assert!(matches!(
                handle_datagram(&w, src, &mut out, &snap, &sh, &mut acc, now),
                Verdict::Deliver(28)
            ));
        }
        assert_eq!(**sh.peers.load().by_id[&1].remote.load(), y);
        // The packet from y at start + 1 could not move the peer; the one from
        // x at start + 2 came from where the peer already was.
        assert_eq!(sh.counters.floats_refused.load(Ordering::Relaxed), 1);
    }

    /// Audit M4: oversized control datagrams never go up, and a flood of
    /// one kind of event does not push out the other.
    #[test]
    fn control_and_peer_events_have_their_own_bounded_queues() {
        let (sh, rx) = shared();
        let snap = sh.peers.load();
        let a: SocketAddr = "192.0.2.1:1194".parse().unwrap();
        let junk_from: SocketAddr = "198.51.100.1:999".parse().unwrap();
        let mut out = Vec::with_capacity(70_000);
        let mut acc = BatchPeers::default();
        // 9000 bytes of HARD_RESET_CLIENT_V2 (opcode 7): dropped at once.
        let mut big = vec![0u8; 9000];
        big[0] = 7 << 3;
        handle_datagram(&big, junk_from, &mut out, &snap, &sh, &mut acc, 1);
        assert_eq!(rx.try_recv(), Err(crate::UpRecvError::Timeout));
        assert_eq!(sh.counters.control_oversized.load(Ordering::Relaxed), 1);
        // The largest control packet OpenVPN may send (2048-byte IP datagram) goes up.
        let mut max = vec![0u8; MAX_CONTROL_DATAGRAM];
        max[0] = 7 << 3;
        handle_datagram(&max, a, &mut out, &snap, &sh, &mut acc, 1);
        assert!(
            matches!(rx.try_recv(), Ok(UpEvent::Control { packet, .. }) if packet.len() == MAX_CONTROL_DATAGRAM)
        );
        // A control flood fills its queue; the OCC message after it still goes up.
        for _ in 0..100 {
            handle_datagram(&[0x38, 1, 2], junk_from, &mut out, &snap, &sh, &mut acc, 1);
        }
        let mut occ = OCC_MAGIC.to_vec();
        occ.push(6);
        let w = client_packet(1, 1, &occ);
        handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc, 1);
        assert_eq!(sh.counters.control_dropped.load(Ordering::Relaxed), 96);
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert_eq!(got.len(), 5);
        assert!(got.contains(&UpEvent::Occ {
            peer_id: 1,
            payload: occ.clone()
        }));
        // And the other way round: an OCC flood does not drop a control packet.
        for id in 2..100 {
            let w = client_packet(1, id, &occ);
            handle_datagram(&w, a, &mut out, &snap, &sh, &mut acc, 1);
        }
        handle_datagram(&[0x38, 7, 7], a, &mut out, &snap, &sh, &mut acc, 1);
        assert_eq!(sh.counters.events_dropped.load(Ordering::Relaxed), 94);
        let got: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert!(got.contains(&UpEvent::Control {
            from: a,
            packet: vec![0x38, 7, 7]
        }));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(data in prop::collection::vec(any::<u8>(), 0..200), op in 0u8..16, key in 0u8..8) {
            let (sh, _rx) = shared();
            let snap = sh.peers.load();
            let mut out = Vec::new();
            let mut acc = BatchPeers::default();
            let mut d = data;
            if let Some(b) = d.first_mut() { *b = (op << 3) | key; }
            if d.len() >= 4 && op == 9 { d[1] = 0; d[2] = 0; d[3] = 1; }
            let _ = handle_datagram(&d, "192.0.2.2:1194".parse().unwrap(), &mut out, &snap, &sh, &mut acc, 1);
        }
    }
}
