//! Batched UDP socket I/O: one socket per worker bound to the same port with
//! SO_REUSEPORT (server), receives with `recvmmsg` + `UDP_GRO`, sends with
//! `sendmmsg` where each message may be a `UDP_SEGMENT` (GSO) run of
//! equal-size datagrams to one peer. GSO is dropped for the socket's lifetime
//! after the kernel answers EIO (no checksum offload on the egress device),
//! and per message after EINVAL/EMSGSIZE (a segment larger than the path MTU).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::sys::{self, SendScratch, TxMsg};

pub use crate::sys::{GSO_MAX_BYTES, GSO_MAX_SEGMENTS, RecvBatch, RxMeta};

pub mod memory;

/// A worker's datagram port: a kernel UDP socket, or one end of an
/// in-memory link ([`memory`]) in unit tests. An enum, not a trait object,
/// so the per-batch calls stay direct (one predictable branch per
/// `sendmmsg` / `recvmmsg`, none per packet).
pub enum Port {
    Kernel(UdpSocket),
    Memory(memory::MemoryPort),
}

impl Port {
    /// Nonblocking `recvmmsg` into `batch`: the number of messages (0 when none are queued).
    pub fn recv(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        match self {
            Port::Kernel(socket) => batch.recv(socket.as_raw_fd()),
            Port::Memory(port) => Ok(port.recv(batch)),
        }
    }
}

impl AsRawFd for Port {
    /// -1 for an in-memory port: `poll` ignores a negative descriptor.
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Port::Kernel(socket) => socket.as_raw_fd(),
            Port::Memory(_) => -1,
        }
    }
}

/// Socket buffer size asked for (SO_RCVBUF/SO_SNDBUF, forced when we are allowed to).
pub const SOCKET_BUFFER: usize = 8 << 20;

/// What the sockets of this data plane can do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpOffloads {
    pub gso: bool,
    pub gro: bool,
}

fn new_socket(bind: SocketAddr, reuse_port: bool) -> io::Result<Socket> {
    let s = Socket::new(
        Domain::for_address(bind),
        Type::DGRAM.cloexec(),
        Some(Protocol::UDP),
    )?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    if sys::force_buffers(s.as_raw_fd(), SOCKET_BUFFER).is_err() {
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
    }
    s.set_nonblocking(true)?;
    if bind.is_ipv6() {
        // Dual stack, as 2.6 sets it: IPv4 peers arrive as ::ffff:a.b.c.d.
        s.set_only_v6(false)?;
    }
    s.bind(&bind.into())?;
    Ok(s)
}

/// Create the worker sockets. Server (`connect == None`): `n` sockets bound to
/// the same address with SO_REUSEPORT, so the kernel spreads peers over workers
/// by flow hash. Client (`connect == Some(server)`): one socket connected to
/// the server, shared by all workers through `dup` — a single flow would hash
/// to one SO_REUSEPORT socket anyway; the TUN queues still spread the send side.
/// A client's socket is connected only with `connected` (not with `float`,
/// which must hear other addresses; every send names its destination).
pub fn create(
    bind: SocketAddr,
    connect: Option<SocketAddr>,
    connected: bool,
    n: usize,
) -> io::Result<(Vec<UdpSocket>, UdpOffloads)> {
    let n = n.max(1);
    let mut socks: Vec<UdpSocket> = Vec::with_capacity(n);
    match connect {
        Some(server) => {
            let s = new_socket(bind, false)?;
            if connected {
                s.connect(&server.into())?;
            }
            let s: UdpSocket = s.into();
            for _ in 1..n {
                socks.push(s.try_clone()?);
            }
            socks.insert(0, s);
        }
        None => {
            let first = new_socket(bind, n > 1)?;
            let local = first.local_addr()?.as_socket().unwrap_or(bind);
            socks.push(first.into());
            for _ in 1..n {
                socks.push(new_socket(local, true)?.into());
            }
        }
    }
    let mut off = UdpOffloads {
        gso: sys::probe_udp_gso(socks[0].as_raw_fd()),
        gro: true,
    };
    for s in &socks {
        if sys::enable_udp_gro(s.as_raw_fd()).is_err() {
            off.gro = false;
        }
    }
    Ok((socks, off))
}

/// Per-worker sender: a `sendmmsg` scratch plus the GSO state of its socket.
pub struct Sender {
    scratch: SendScratch,
    split: Vec<TxMsg>,
    pub gso: bool,
    /// Datagrams dropped because the kernel refused them.
    pub dropped: u64,
}

impl Sender {
    pub fn new(max_msgs: usize, max_pkts: usize, gso: bool) -> Self {
        Sender {
            scratch: SendScratch::new(max_msgs, max_pkts),
            split: Vec::with_capacity(max_pkts),
            gso,
            dropped: 0,
        }
    }

    /// Send every message; messages with `count > 1` are GSO runs. Waits (up
    /// to 100 ms per stall) for socket buffer space instead of dropping.
    pub fn send<'a>(&mut self, port: &Port, msgs: &[TxMsg], pkt: &dyn Fn(usize) -> &'a [u8]) {
        let fd = port.as_raw_fd();
        if !self.gso {
            self.split_all(msgs);
            let split = std::mem::take(&mut self.split);
            self.send_plain(port, &split, pkt);
            self.split = split;
            return;
        }
        let mut at = 0;
        while at < msgs.len() {
            match self.transmit(port, &msgs[at..], pkt) {
                Ok(0) => break,
                Ok(n) => at += n,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => {
                        if !wait_writable(fd) {
                            self.dropped += count(&msgs[at..]);
                            return;
                        }
                    }
                    Some(libc::EIO) if msgs[at].count > 1 => {
                        tracing::info!(
                            "UDP GSO refused by the kernel (EIO); sending datagrams one by one"
                        );
                        self.gso = false;
                        self.split_all(&msgs[at..]);
                        let split = std::mem::take(&mut self.split);
                        self.send_plain(port, &split, pkt);
                        self.split = split;
                        return;
                    }
                    Some(libc::EINVAL | libc::EMSGSIZE) if msgs[at].count > 1 => {
                        self.split_all(&msgs[at..at + 1]);
                        let split = std::mem::take(&mut self.split);
                        self.send_plain(port, &split, pkt);
                        self.split = split;
                        at += 1;
                    }
                    _ => {
                        tracing::trace!("UDP send to {} failed: {e}", msgs[at].dst);
                        self.dropped += msgs[at].count as u64;
                        at += 1;
                    }
                },
            }
        }
    }

    fn split_all(&mut self, msgs: &[TxMsg]) {
        self.split.clear();
        for m in msgs {
            for p in m.first..m.first + m.count {
                self.split.push(TxMsg {
                    dst: m.dst,
                    first: p,
                    count: 1,
                    seg: 0,
                    tos: m.tos,
                });
            }
        }
    }

    fn send_plain<'a>(&mut self, port: &Port, msgs: &[TxMsg], pkt: &dyn Fn(usize) -> &'a [u8]) {
        let fd = port.as_raw_fd();
        let mut at = 0;
        while at < msgs.len() {
            match self.transmit(port, &msgs[at..], pkt) {
                Ok(0) => break,
                Ok(n) => at += n,
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {
                    if !wait_writable(fd) {
                        self.dropped += (msgs.len() - at) as u64;
                        return;
                    }
                }
                Err(e) => {
                    tracing::trace!("UDP send to {} failed: {e}", msgs[at].dst);
                    self.dropped += 1;
                    at += 1;
                }
            }
        }
    }
}

impl Sender {
    /// One `sendmmsg` (or its in-memory equivalent): the messages sent.
    #[inline]
    fn transmit<'a>(
        &mut self,
        port: &Port,
        msgs: &[TxMsg],
        pkt: &dyn Fn(usize) -> &'a [u8],
    ) -> io::Result<usize> {
        match port {
            Port::Kernel(socket) => self.scratch.send(socket.as_raw_fd(), msgs, pkt),
            Port::Memory(port) => port.send(msgs, pkt),
        }
    }
}

fn count(msgs: &[TxMsg]) -> u64 {
    msgs.iter().map(|m| m.count as u64).sum()
}

fn wait_writable(fd: RawFd) -> bool {
    let mut r = [sys::Ready::default()];
    matches!(sys::poll(&[fd], &[true], Duration::from_millis(100).as_millis() as i32, &mut r), Ok(n) if n > 0)
}
