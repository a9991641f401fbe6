//! The fast path of ferrovpn: multi-queue TUN with offloads, batched UDP,
//! one run-to-completion worker thread per queue, and a lock-free peer/key
//! table written by the control plane.
//!
//! # Layout
//! - [`tun`]: the multi-queue TUN device with `IFF_VNET_HDR`: TSO/USO
//!   super-packets split in userspace (GSO; a super-packet that does not fit
//!   the free buffers waits for the next batch), TCP/UDP segments coalesced
//!   on write (userspace GRO, [`tun::Coalescer`]: no allocation, and no
//!   inner checksum pass, since the AEAD already authenticated every byte).
//! - [`udp`]: per-worker UDP sockets (SO_REUSEPORT, 8 MiB buffers),
//!   `recvmmsg` + `UDP_GRO`, `sendmmsg` whose messages are `UDP_SEGMENT`
//!   runs of equal-size datagrams to one peer (≤ 64 segments, ≤ 65 507 bytes);
//!   GSO off for good after EIO, per message after EINVAL/EMSGSIZE.
//! - `worker/`: the loop in `mod.rs` — poll(TUN, UDP, eventfd), then turns
//!   of one TUN batch and up to 16 `recvmmsg` batches (while they come back
//!   full) until both sides are idle; `outbound.rs`:
//!   TUN batch → route → MSS clamp → reserve ids → seal in place → one
//!   `sendmmsg` (to a stock peer, which reads one datagram per system call:
//!   rounds of 32 datagrams, the CPU yielded between them, so that a burst
//!   does not overflow its socket buffer); `inbound.rs`: UDP batch → classify byte 0 → open → replay
//!   check → ping / OCC / TUN / c2c relay.
//! - `stream/`: the TCP transport ([`Transport::Tcp`]): connections handed
//!   over with [`DataPlane::attach_stream`], each read by one owning worker
//!   (large reads, many packets cut out of each by
//!   `ferrovpn_proto::stream::Deframer`), written by any worker with one
//!   `writev` per batch and peer under the connection's lock; control
//!   packets ([`DataPlane::send_control`]) take the same lock, so control and
//!   data share the stream in order. A server's connection reads into a
//!   6 KiB buffer until its peer is in the table. The TCP workers wait with
//!   epoll (`worker/stream_loop.rs`): a wake-up costs what is ready, not
//!   the number of connections held. [`Transport::UdpAndTcp`] serves UDP
//!   and TCP peers from the same workers: a peer with a connection is sent
//!   to there, the others by UDP.
//! - [`peers`]: [`PeerTable`], arc-swap snapshots + per-peer atomics.
//! - [`replay`]: the lock-free replay window ([`replay::AtomicReplayWindow`]).
//! - `mss.rs`: TCP MSS clamping with incremental checksum update.
//! - `sys/`: the raw system calls (the only `unsafe` in the workspace).
//! - The I/O seam: a worker reads and writes its TUN queue through
//!   `tun::Device` and its datagrams through [`udp::Port`], enums whose
//!   other variants are in memory ([`tun::memory`], [`udp::memory`]: frames
//!   with the same `virtio_net_hdr` semantics, a datagram link with GSO/GRO,
//!   loss and reordering). `worker/pair_tests.rs` runs a server's and a
//!   client's worker against each other on them, without root. One branch
//!   per system call, none per packet, no `dyn`.
//!
//! Per packet there is no allocation (except control packets and OCC
//! messages, which are copied into the event), no lock and no system call.
//!
//! # Packet-id ordering
//! Each worker reserves one contiguous id range per peer per batch and sends
//! the batch right away, so ids leave each worker in order. On a server a
//! client's datagrams hash to one SO_REUSEPORT socket, hence one worker, and
//! that worker writes them to its TUN queue; the TUN driver then steers the
//! replies of those flows to the same queue (automq flow table), so one
//! peer's traffic is normally sealed by one worker. Remaining risk: a flow
//! that starts on the server side goes to a hashed queue until its first
//! reply arrives (and again after its flow entry expires), so for a moment
//! two workers may send to one peer and interleave id ranges of up to one
//! batch (128 packets). A stock OpenVPN receiver (64-id window) drops what
//! arrives more than 64 ids late; TCP recovers. (The yields between rounds
//! to a stock peer lengthen the moment in which this can happen, not the
//! distance.) Peers running ferrovpn use a
//! 2048-id window (`replay_window`).
//!
//! With [`DataPlaneConfig::seal_spread`] (a client over UDP) every worker
//! seals the tunnel's TUN batches; each batch takes its id range with a
//! ticket of the key's order (`order.rs`), and batches leave in ticket
//! order from whichever worker holds the send turn (`worker/handoff.rs`).
//!
//! # Client mode
//! With `connect: Some(server)` every worker shares one connected UDP socket
//! (dup'ed fds): SO_REUSEPORT would hash one server flow to one socket anyway,
//! and distinct source ports would look like floats to the server. With
//! `float` the shared socket is bound but not connected (every send names
//! its destination anyway), and the workers drop data packets that do not
//! come from the peer's address before opening them. Only
//! worker 0 reads that socket: the TUN driver steers each flow's outgoing
//! packets to the queue its incoming packets were written to, so a single
//! reader keeps every flow on one worker (several readers made flows hop
//! between workers: 45k out-of-order segments and replay drops in 5 s of
//! iperf3). The other workers seal and send flows the kernel hashes to their
//! queues before any reply came back; in practice the client's work runs
//! mostly on worker 0.
//!
//! # Measured (Linux 6.18, 2 vCPU VM, two namespaces over veth, AES-256-GCM, 2 workers each, release)
//! All offloads engaged: TUN TSO4/6 + USO4/6, UDP GSO + GRO. iperf3 single
//! stream 8.8–9.5 Gbit/s client→server and 9.0–9.75 server→client with 0
//! retransmits; 4 streams ≈ 10 Gbit/s; MSS 536: 6 Gbit/s. With
//! `offload: false`: 1.8 Gbit/s. (OpenVPN 2.6 on the same machine: 0.9.)
//!
//! # Known gaps
//! - One peer per peer id: peers without a peer id (DATA_V1, id 0xFFFFFF)
//!   share that id, so at most one V1 peer per table.
//! - Replay check is the window only (no 15 s time limit as in OpenVPN).
//! - No ECN/TOS propagation between inner and outer headers.
//! - Packets to IPv4/IPv6 destinations without a peer route are dropped
//!   (counted in `no_route`); no subnet (iroute) routes.

use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use ferrovpn_proto::data::DataError;
use thiserror::Error;

pub mod iroutes;
pub mod mss;
mod order;
pub mod peers;
pub mod replay;
mod stream;
mod sys;
pub mod tun;
pub mod udp;
mod up;
mod worker;

pub use peers::{DEFAULT_REPLAY_WINDOW, PeerStats, PeerTable};
pub use up::{MAX_CONTROL_DATAGRAM, UP_QUEUE, UpReceiver, UpRecvError};
pub use worker::{Fragment, GlobalCounters, LinkCounters, WorkerCounters};

/// Test hook, read once per [`DataPlane::start`] (never per packet):
/// `N` makes worker N stop right after start as if `poll` had failed,
/// `N:panic` makes it panic. Tests use it to watch a worker failure reach
/// the control plane.
pub const FAIL_WORKER_ENV: &str = "FERROVPN_TEST_FAIL_WORKER";

/// The worker [`FAIL_WORKER_ENV`] asks to fail, and whether by panicking.
fn worker_to_fail() -> Option<(usize, bool)> {
    let v = std::env::var(FAIL_WORKER_ENV).ok()?;
    let (n, panic) = match v.strip_suffix(":panic") {
        Some(n) => (n, true),
        None => (v.as_str(), false),
    };
    let n = n.parse().ok()?;
    tracing::warn!("{FAIL_WORKER_ENV} is set: data-plane worker {n} will fail on purpose");
    Some((n, panic))
}

/// Reports a worker that ends without being asked to (a failed `poll`, a
/// panic unwinding through it) on the failure queue, from which the control
/// plane learns it and stops the process: a dead worker would otherwise
/// black-hole its share of the peers while the server looks healthy. (Release
/// builds abort on panic, which ends the process just the same.)
struct ExitWatch {
    worker: usize,
    shared: Arc<worker::Shared>,
    reason: String,
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        if self.shared.stop.load(Ordering::Relaxed) {
            return;
        }
        tracing::error!("data-plane worker {} stopped: {}", self.worker, self.reason);
        let failure = up::WorkerFailure {
            worker: self.worker,
            reason: std::mem::take(&mut self.reason),
        };
        // One message per worker fits the queue; the control plane may be gone.
        let _ = self.shared.up.failures.try_send(failure);
    }
}

/// Move the calling thread into the network namespace at `path` (for tests
/// and tools: create the data plane from that thread and it lives there).
pub fn enter_netns(path: &std::path::Path) -> std::io::Result<()> {
    sys::enter_netns(path)
}

/// Data-plane settings.
#[derive(Clone, Debug)]
pub struct DataPlaneConfig {
    /// TUN device name (empty: let the kernel pick `tunN`).
    pub tun_name: String,
    /// `dev null`: no TUN device; packets from the peer are dropped after
    /// decryption, pings and control traffic still flow (UDP only).
    pub null_device: bool,
    pub mtu: u16,
    /// `txqueuelen`: the TUN device's transmit queue length, set right after
    /// the device is made as 2.6 does (`None` keeps the kernel's, 500); a
    /// failure to set it is a warning, as in 2.6.
    pub tx_queue_len: Option<u32>,
    /// Worker threads = TUN queues = UDP sockets (server).
    pub workers: usize,
    /// Pin worker `i` to core `i % cores`.
    pub pin_cpus: bool,
    /// Local UDP address (port 0 picks one; the client usually binds `0.0.0.0:0`).
    pub bind: SocketAddr,
    /// Client mode: connect the (shared) socket to this server.
    pub connect: Option<SocketAddr>,
    /// Client mode with `float`: leave the socket unconnected, so that
    /// packets from any address reach the workers (and control packets the
    /// control plane, which decides whether a new session may come from
    /// there). Data packets are still taken only from the peer's current
    /// address, as 2.6 binds a session's data channel to the address the
    /// session came up with.
    pub float: bool,
    /// Relay packets between peers inside the data plane instead of via the TUN.
    pub client_to_client: bool,
    /// Receive replay window in packet ids (default 2048).
    pub replay_window: u32,
    /// Clamp TCP SYN MSS in both directions so an encrypted datagram incl. outer
    /// IP/UDP fits this many bytes (OpenVPN default 1492).
    pub mssfix: Option<u16>,
    /// What `mssfix` counts (2.6.3's `mssfix N`, `mssfix N mtu`, `fixed`).
    pub mssfix_count: mss::MssCount,
    /// Bytes 2.6 counts in front of each inner packet besides the fragment
    /// header, taken off the MSS: 1 for a compression framing with a 1-byte
    /// header, plus `tun-mtu-extra`.
    pub mss_payload_extra: u16,
    /// HMAC length of the `auth` digest, for the MSS of peers using a CBC cipher.
    pub cbc_hmac_len: u16,
    /// Ask for TUN and UDP segmentation offloads (falls back cleanly).
    pub offload: bool,
    /// UDP sockets, or TCP connections handed over with
    /// [`DataPlane::attach_stream`] (`bind` is then not used).
    pub transport: Transport,
    /// `fragment`: split packets inside the tunnel (UDP only).
    pub fragment: Option<Fragment>,
    /// `passtos`: each datagram takes the TOS byte of the IPv4 packet it carries (UDP only).
    pub passtos: bool,
    /// Count the link's bytes here (a client's `status`, `>BYTECOUNT`);
    /// one counter may be handed to each data plane in turn, so that it
    /// keeps counting across them.
    pub link_counters: Option<Arc<LinkCounters>>,
    /// `seal-spread`: a client over UDP with several workers has all of
    /// them seal the tunnel's TUN batches, which leave in packet-id order
    /// (an ordered hand-off, so a stock server's 64-id replay window sees
    /// no reordering). Over TCP or with one worker it does nothing; a
    /// server or `fragment` is refused by [`DataPlane::start`].
    pub seal_spread: bool,
}

/// The outer transport of a data plane.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    /// A server listening on UDP (`bind`) and TCP at once: every worker
    /// reads its UDP socket and its share of the connections; a peer with
    /// a TCP connection is sent to there, the others by UDP.
    UdpAndTcp,
}

impl Default for DataPlaneConfig {
    fn default() -> Self {
        DataPlaneConfig {
            tun_name: String::new(),
            null_device: false,
            mtu: 1500,
            tx_queue_len: None,
            workers: 1,
            pin_cpus: false,
            bind: SocketAddr::from(([0, 0, 0, 0], 1194)),
            connect: None,
            float: false,
            client_to_client: false,
            replay_window: DEFAULT_REPLAY_WINDOW,
            mssfix: Some(1492),
            mssfix_count: mss::MssCount::Encap,
            mss_payload_extra: 0,
            cbc_hmac_len: 20,
            offload: true,
            transport: Transport::Udp,
            seal_spread: false,
            fragment: None,
            passtos: false,
            link_counters: None,
        }
    }
}

/// What the data plane hands up to the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpEvent {
    /// A control-channel packet (any non-data opcode, at most
    /// [`MAX_CONTROL_DATAGRAM`] bytes), unparsed.
    Control { from: SocketAddr, packet: Vec<u8> },
    /// A decrypted OCC message (magic included).
    Occ { peer_id: u32, payload: Vec<u8> },
    /// An authenticated DATA_V2 packet of `peer_id` came from a new address;
    /// the table already sends to `new_remote`.
    Float {
        peer_id: u32,
        new_remote: SocketAddr,
    },
    /// The TCP connection from `from` ended (the peer closed it, it failed,
    /// its framing broke, or [`DataPlane::close_stream`] closed it).
    StreamClosed { from: SocketAddr, reason: String },
}

#[derive(Debug, Error)]
pub enum DataPlaneError {
    #[error("{context}: {source}")]
    Io {
        context: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("unknown peer {0}")]
    UnknownPeer(u32),
    #[error("peer {0} has no send key")]
    NoSendKey(u32),
    #[error("packet id space exhausted for peer {0}")]
    PacketIdExhausted(u32),
    #[error("data channel crypto: {0}")]
    Crypto(#[from] DataError),
}

fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> DataPlaneError {
    move |source| DataPlaneError::Io { context, source }
}

/// Offloads that engaged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    pub tun: tun::TunOffloads,
    pub udp: udp::UdpOffloads,
}

/// A running data plane. Dropping it stops the workers too.
pub struct DataPlane {
    tun_name: String,
    local: SocketAddr,
    /// UDP: a dup of worker 0's socket; `None` over TCP.
    control: Option<UdpSocket>,
    peers: PeerTable,
    shared: Arc<worker::Shared>,
    workers: Vec<JoinHandle<()>>,
    offloads: Offloads,
    /// `connect` was set: one server, one connection (owned by worker 0).
    client_mode: bool,
}

impl DataPlane {
    /// Create the TUN device (up, without address), the sockets and the worker
    /// threads, in the caller's network namespace.
    pub fn start(
        cfg: DataPlaneConfig,
        peers: PeerTable,
    ) -> Result<(DataPlane, UpReceiver), DataPlaneError> {
        if cfg.workers == 0 {
            return Err(DataPlaneError::Config("workers must be at least 1".into()));
        }
        if cfg.mtu < 576 {
            return Err(DataPlaneError::Config(format!("mtu {} too small", cfg.mtu)));
        }
        if cfg.transport != Transport::Udp && (cfg.fragment.is_some() || cfg.passtos) {
            return Err(DataPlaneError::Config(
                "fragment and passtos need the UDP transport".into(),
            ));
        }
        if cfg.seal_spread && (cfg.connect.is_none() || cfg.fragment.is_some()) {
            return Err(DataPlaneError::Config(
                "seal-spread is for a client without fragment".into(),
            ));
        }
        // Over TCP one connection is written by one worker, and one worker
        // has nobody to hand batches to: nothing to spread.
        let seal_spread = cfg.seal_spread && cfg.transport == Transport::Udp && cfg.workers > 1;
        peers.set_replay_window(cfg.replay_window);
        let (queues, tun_name, tun_off) = if cfg.null_device {
            if cfg.transport != Transport::Udp {
                return Err(DataPlaneError::Config(
                    "the null device runs over UDP only".into(),
                ));
            }
            (
                tun::create_null(cfg.workers),
                "null".to_owned(),
                tun::TunOffloads::default(),
            )
        } else {
            tun::create(
                &cfg.tun_name,
                cfg.mtu,
                cfg.tx_queue_len,
                cfg.workers,
                cfg.offload,
            )
            .map_err(io("creating the TUN device"))?
        };
        let tcp = cfg.transport != Transport::Udp;
        let (socks, local, control, udp_off) = if cfg.transport == Transport::Tcp {
            (Vec::new(), cfg.bind, None, udp::UdpOffloads::default())
        } else {
            let (socks, mut udp_off) = udp::create(cfg.bind, cfg.connect, !cfg.float, cfg.workers)
                .map_err(io("creating the UDP sockets"))?;
            if !cfg.offload {
                udp_off = udp::UdpOffloads::default();
            }
            let local = socks[0]
                .local_addr()
                .map_err(io("reading the local address"))?;
            let control = socks[0]
                .try_clone()
                .map_err(io("duplicating the UDP socket"))?;
            (socks, local, Some(control), udp_off)
        };
        let (links, streams) = if tcp {
            let (streams, inboxes) =
                stream::Streams::new(cfg.workers).map_err(io("creating the eventfds"))?;
            let mut socks = socks.into_iter();
            let links: Vec<worker::Link> = inboxes
                .into_iter()
                .map(|inbox| worker::Link::Stream {
                    inbox,
                    client: cfg.connect.is_some(),
                    udp: socks.next().map(udp::Port::Kernel),
                })
                .collect();
            (links, Some(Arc::new(streams)))
        } else {
            let links = socks
                .into_iter()
                .enumerate()
                .map(|(i, socket)| worker::Link::Udp {
                    socket: udp::Port::Kernel(socket),
                    rx: cfg.connect.is_none() || i == 0,
                })
                .collect();
            (links, None)
        };
        let (tx, rx) = up::queues(UP_QUEUE, cfg.workers);
        let outer_v6 = cfg.connect.unwrap_or(cfg.bind).is_ipv6();
        let shared = Arc::new(worker::Shared {
            peers: peers.clone(),
            up: tx,
            counters: Arc::new(GlobalCounters::default()),
            workers: (0..cfg.workers)
                .map(|_| WorkerCounters::default())
                .collect(),
            client_to_client: cfg.client_to_client,
            mss: cfg
                .mssfix
                .map(|m| mss::limits(&mss_rule(m, outer_v6, tcp, &cfg), None)),
            mss_cbc: cfg
                .mssfix
                .map(|m| mss::limits(&mss_rule(m, outer_v6, tcp, &cfg), Some(cfg.cbc_hmac_len))),
            stop: AtomicBool::new(false),
            wake: sys::EventFd::new().map_err(io("creating the eventfd"))?,
            streams,
            fragment: cfg
                .fragment
                .map(|f| worker::FragmentConfig::new(f, cfg.mtu)),
            passtos: cfg.passtos,
            server_source_only: cfg.connect.is_some() && cfg.float,
            link: cfg.link_counters.clone(),
            handoff: if seal_spread {
                Some(worker::Handoff::new(cfg.workers).map_err(io("creating the eventfds"))?)
            } else {
                None
            },
        });
        let fail = worker_to_fail();
        let cores = if cfg.pin_cpus {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let mut dp = DataPlane {
            tun_name,
            local,
            control,
            peers,
            shared: shared.clone(),
            workers: Vec::with_capacity(cfg.workers),
            offloads: Offloads {
                tun: tun_off,
                udp: udp_off,
            },
            client_mode: cfg.connect.is_some(),
        };
        for (i, (q, link)) in queues.into_iter().zip(links).enumerate() {
            let w = worker::Worker::new(i, q, link, udp_off.gso, shared.clone());
            let core = if cores.is_empty() {
                None
            } else {
                Some(cores[i % cores.len()])
            };
            let watched = shared.clone();
            let fail_on_purpose = fail.filter(|&(n, _)| n == i).map(|(_, panic)| panic);
            let h = std::thread::Builder::new()
                .name(format!("ferrovpn-dp{i}"))
                .spawn(move || {
                    let mut watch = ExitWatch {
                        worker: i,
                        shared: watched,
                        reason: "panicked".into(),
                    };
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    match fail_on_purpose {
                        Some(true) => panic!("worker {i} panics on purpose ({FAIL_WORKER_ENV})"),
                        Some(false) => {
                            watch.reason = format!("stopped on purpose ({FAIL_WORKER_ENV})");
                            return;
                        }
                        None => {}
                    }
                    if let Err(e) = w.run() {
                        watch.reason = format!("poll failed: {e}");
                    }
                })
                .map_err(io("spawning a worker thread"))?;
            dp.workers.push(h);
        }
        tracing::info!(
            "data plane up: {} on {}, {} workers, offloads {:?}",
            dp.tun_name,
            dp.local,
            cfg.workers,
            dp.offloads
        );
        Ok((dp, rx))
    }

    pub fn tun_name(&self) -> &str {
        &self.tun_name
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Which offloads engaged on this kernel.
    pub fn offloads(&self) -> Offloads {
        self.offloads
    }

    /// Data-plane wide counters (drops, errors).
    pub fn counters(&self) -> &GlobalCounters {
        &self.shared.counters
    }

    /// Each worker's packets and busy time, by worker index.
    pub fn worker_counters(&self) -> &[WorkerCounters] {
        &self.shared.workers
    }

    /// Events waiting in the queues from the workers to the control plane.
    pub fn up_queue_depth(&self) -> usize {
        self.shared.up.control.len() + self.shared.up.events.len()
    }

    /// A dup of worker 0's socket (same local port) for sending control
    /// packets; `None` over TCP (use [`DataPlane::send_control`]). It is
    /// nonblocking (the flag is shared with the worker's fd).
    /// `dup` only fails when the process is out of file descriptors; then this
    /// retries for a second and aborts the process (a socket with another
    /// source port would silently break the protocol).
    pub fn control_socket(&self) -> Option<UdpSocket> {
        let control = self.control.as_ref()?;
        for _ in 0..100 {
            match control.try_clone() {
                Ok(s) => return Some(s),
                Err(e) => {
                    tracing::error!("cannot duplicate the data-plane socket: {e}");
                    let mut r = [sys::Ready::default()];
                    let _ = sys::poll(&[], &[], 10, &mut r);
                }
            }
        }
        std::process::abort()
    }

    /// Hand a connected TCP socket to a worker (TCP transport). A client's
    /// connection goes to worker 0 (see the crate docs), a server's to the
    /// workers in turn. Packets from it go up with its peer address as
    /// `from`; its end comes up as [`UpEvent::StreamClosed`]. A connection
    /// from the same address replaces the old one.
    pub fn attach_stream(&self, socket: TcpStream) -> Result<SocketAddr, DataPlaneError> {
        let streams = self.streams()?;
        let owner = self.client_mode.then_some(0);
        streams
            .attach(socket, owner)
            .map_err(io("attaching a TCP connection"))
    }

    /// Close the TCP connection to `peer` (TCP transport); false if there is none.
    pub fn close_stream(&self, peer: SocketAddr) -> bool {
        self.shared.streams.as_ref().is_some_and(|s| s.close(&peer))
    }

    /// Whether `peer` is reached by a TCP connection (always false over UDP).
    pub fn has_stream(&self, peer: SocketAddr) -> bool {
        (self.shared.streams.as_ref()).is_some_and(|s| s.get(&peer).is_some())
    }

    fn streams(&self) -> Result<&stream::Streams, DataPlaneError> {
        self.shared
            .streams
            .as_deref()
            .ok_or_else(|| DataPlaneError::Config("not a TCP data plane".into()))
    }

    /// Send a control packet to `to`: a datagram, or a frame on its TCP
    /// connection, in order with the data packets.
    /// Returns its bytes on the link (with a TCP packet's length prefix).
    pub fn send_control(&self, to: SocketAddr, packet: &[u8]) -> Result<u64, DataPlaneError> {
        let framing = match &self.control {
            Some(udp) if !self.has_stream(to) => {
                udp.send_to(packet, to)
                    .map_err(io("sending a control packet"))?;
                0
            }
            _ => {
                self.streams()?
                    .send_packet(&to, packet)
                    .map_err(io("sending a control packet"))?;
                ferrovpn_proto::stream::PREFIX_LEN
            }
        };
        self.count_written(packet.len() + framing);
        Ok((packet.len() + framing) as u64)
    }

    /// Count a packet the control plane sent (with its TCP prefix).
    fn count_written(&self, bytes: usize) {
        if let Some(link) = &self.shared.link {
            link.written(bytes as u64);
        }
    }

    /// Seal `payload` with the peer's send key and send it now (keepalive
    /// pings, OCC exit). Not for bulk traffic.
    pub fn send_data(&self, peer_id: u32, payload: &[u8]) -> Result<(), DataPlaneError> {
        let snap = self.peers.load();
        let peer = snap
            .by_id
            .get(&peer_id)
            .ok_or(DataPlaneError::UnknownPeer(peer_id))?;
        let ks = peer.keys.load();
        let key = ks.send_key().ok_or(DataPlaneError::NoSendKey(peer_id))?;
        let id = peer
            .reserve_ids(key, 1)
            .ok_or(DataPlaneError::PacketIdExhausted(peer_id))?;
        // Room for the fragment header in front of the compression framing.
        let head = worker::HEAD + ferrovpn_proto::fragment::HEADER_LEN;
        let mut buf = vec![0u8; head + payload.len() + worker::TAIL];
        buf[head..head + payload.len()].copy_from_slice(payload);
        let (mut at, mut len) = peer
            .compression
            .frame(&mut buf, head, payload.len())
            .ok_or(DataError::BufferTooSmall)?;
        if self.shared.fragment.is_some() {
            // Pings and OCC messages are small: always one whole packet.
            let header = ferrovpn_proto::fragment::WHOLE_HEADER;
            at -= header.len();
            len += header.len();
            buf[at..at + header.len()].copy_from_slice(&header);
        }
        let (start, wire_len) = peer.seal(key, id, &mut buf, at, len)?;
        let end = start + wire_len;
        let dst = **peer.remote.load();
        let framing = match &self.control {
            Some(udp) if !self.has_stream(dst) => {
                send_datagram(udp, &buf[start..end], dst)?;
                0
            }
            _ => {
                self.streams()?
                    .send_packet(&dst, &buf[start..end])
                    .map_err(io("sending a data packet"))?;
                ferrovpn_proto::stream::PREFIX_LEN
            }
        };
        self.count_written(wire_len + framing);
        peer.counters.sent(
            1,
            payload.len() as u64,
            (wire_len + framing) as u64,
            peers::now_nanos(),
        );
        peer.counters
            .tx_keepalive_bytes
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Stop the workers and wait for them; the TUN device goes away with its last queue.
    pub fn shutdown(mut self) {
        self.stop();
    }

    /// Stop the workers, closing the tun device and their sockets (the
    /// control socket goes when the value is dropped); stopping again does
    /// nothing more.
    pub fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(streams) = &self.shared.streams {
            streams.close_all();
        }
        if let Err(e) = self.shared.wake.signal() {
            tracing::warn!("cannot wake the workers: {e}");
        }
        for h in self.workers.drain(..) {
            if h.join().is_err() {
                tracing::error!("a data-plane worker panicked");
            }
        }
    }
}

/// With `fragment`, the MSS clamp leaves room for the 4-byte fragment
/// header, as 2.6 counts it (`frame_calculate_payload_overhead`).
/// 2.6's MSS rule for `mssfix` N: the fragment header and a 1-byte
/// compression header count as payload overhead.
fn mss_rule(mssfix: u16, outer_v6: bool, tcp: bool, cfg: &DataPlaneConfig) -> mss::MssRule {
    let fragment = if cfg.fragment.is_some() {
        ferrovpn_proto::fragment::HEADER_LEN as u16
    } else {
        0
    };
    mss::MssRule {
        mssfix,
        count: cfg.mssfix_count,
        outer_v6,
        tcp,
        payload_extra: fragment + cfg.mss_payload_extra,
    }
}

/// Send one datagram; when the socket buffer is full, wait (bounded) for room once.
fn send_datagram(udp: &UdpSocket, datagram: &[u8], dst: SocketAddr) -> Result<(), DataPlaneError> {
    match udp.send_to(datagram, dst) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
            let mut r = [sys::Ready::default()];
            let _ = sys::poll(&[udp.as_raw_fd()], &[true], 10, &mut r);
            udp.send_to(datagram, dst)
                .map(drop)
                .map_err(io("sending a data packet"))
        }
        Err(e) => Err(DataPlaneError::Io {
            context: "sending a data packet",
            source: e,
        }),
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Let an IPv6 socket carry IPv4 too (`IPV6_V6ONLY` off), as OpenVPN 2.6
/// sets its IPv6 sockets: a server on `[::]` then serves IPv4 clients as
/// v4-mapped addresses.
pub fn allow_ipv4_mapped(socket: &impl std::os::fd::AsFd) -> std::io::Result<()> {
    socket2::SockRef::from(socket).set_only_v6(false)
}
