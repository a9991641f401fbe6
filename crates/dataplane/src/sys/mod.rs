//! Raw system calls of the data plane: batched UDP I/O with segmentation
//! offloads (`sendmmsg` + `UDP_SEGMENT`, `recvmmsg` + `UDP_GRO`), `poll`,
//! eventfds for shutdown and wake-ups, and a few socket options that `socket2` lacks.
//!
//! This is the only module of the workspace that may use `unsafe`; every
//! block says why it is sound.
#![allow(unsafe_code)]

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use socket2::SockAddr;

/// The largest UDP payload one GSO send may carry in total (IPv4 limit).
pub const GSO_MAX_BYTES: usize = 65_507;
/// The most segments one `UDP_SEGMENT` send may carry (`UDP_MAX_SEGMENTS` on older kernels).
pub const GSO_MAX_SEGMENTS: usize = 64;
/// Size of one receive buffer: a GRO-coalesced receive is at most 64 KiB.
pub const RX_BUF_LEN: usize = 65_536;

/// Space for two control messages carrying a `u16`/`int` each
/// (`UDP_SEGMENT`, `IP_TOS`), 8-byte aligned.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct CmsgBuf([u8; 48]);

impl Default for CmsgBuf {
    fn default() -> Self {
        CmsgBuf([0; 48])
    }
}

/// One outgoing message of a [`sendmmsg`] batch: packets `first..first+count`
/// of the caller's packet list go to `dst`. With `count > 1` the packets are
/// glued by the kernel into one `UDP_SEGMENT` send of `seg`-byte datagrams:
/// every packet but the last must be exactly `seg` bytes, the last at most `seg`.
#[derive(Clone, Copy, Debug)]
pub struct TxMsg {
    pub dst: SocketAddr,
    pub first: usize,
    pub count: usize,
    pub seg: usize,
    /// The IPv4 TOS byte of these datagrams (`passtos`); 0 sends none, so
    /// the socket's default applies (and IPv6 sockets ignore it for
    /// native IPv6 destinations, as 2.6's `IP_TOS` option does).
    pub tos: u8,
}

/// Preallocated `sendmmsg` scratch: headers, iovecs, addresses and control
/// buffers. Rebuilt on every call, so no pointer outlives one call.
pub struct SendScratch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    names: Vec<SockAddr>,
    ctrl: Vec<CmsgBuf>,
}

// SAFETY: the raw pointers inside `hdrs`/`iovs` are only written and used
// during one `send` call, which borrows every pointee for its whole duration;
// between calls they are dangling-but-unused values, so moving the scratch to
// another thread cannot lead to a data race or use after free.
unsafe impl Send for SendScratch {}

impl SendScratch {
    pub fn new(max_msgs: usize, max_pkts: usize) -> Self {
        let any: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 0));
        SendScratch {
            // SAFETY: mmsghdr and iovec are plain C structs for which all-zero is a valid value.
            hdrs: (0..max_msgs).map(|_| unsafe { mem::zeroed() }).collect(),
            // SAFETY: as above.
            iovs: (0..max_pkts).map(|_| unsafe { mem::zeroed() }).collect(),
            names: (0..max_msgs).map(|_| SockAddr::from(any)).collect(),
            ctrl: vec![CmsgBuf::default(); max_msgs],
        }
    }

    /// Send `msgs` with one `sendmmsg`. `pkt(i)` returns packet `i`. Returns
    /// how many messages the kernel accepted (at least 1), or the error of the first message.
    /// Messages beyond the scratch capacity are not sent (the count tells).
    pub fn send<'a>(
        &mut self,
        fd: RawFd,
        msgs: &[TxMsg],
        pkt: &dyn Fn(usize) -> &'a [u8],
    ) -> io::Result<usize> {
        let n = msgs.len().min(self.hdrs.len());
        let mut iov_at = 0usize;
        let mut used = 0usize;
        // First every iovec and address...
        for (m, msg) in msgs[..n].iter().enumerate() {
            if iov_at + msg.count > self.iovs.len() || msg.count == 0 {
                break;
            }
            for p in msg.first..msg.first + msg.count {
                let b = pkt(p);
                self.iovs[iov_at] = libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                };
                iov_at += 1;
            }
            self.names[m] = SockAddr::from(msg.dst);
            used += 1;
        }
        if used == 0 {
            return Ok(0);
        }
        // ...then the headers, from base pointers taken after the last write
        // to those vectors (a later `&mut` to a vector would retag it and
        // invalidate pointers taken before).
        let iovs = self.iovs.as_mut_ptr();
        let ctrl = self.ctrl.as_mut_ptr();
        let mut iov_start = 0usize;
        for (m, msg) in msgs[..used].iter().enumerate() {
            let h = &mut self.hdrs[m];
            h.msg_len = 0;
            h.msg_hdr.msg_name = self.names[m].as_ptr() as *mut libc::c_void;
            h.msg_hdr.msg_namelen = self.names[m].len();
            h.msg_hdr.msg_iov = iovs.wrapping_add(iov_start);
            h.msg_hdr.msg_iovlen = msg.count as _;
            h.msg_hdr.msg_flags = 0;
            iov_start += msg.count;
            let gso = msg.count > 1;
            if gso || msg.tos != 0 {
                h.msg_hdr.msg_control = ctrl.wrapping_add(m) as *mut libc::c_void;
                // SAFETY: CMSG_SPACE is a pure computation.
                h.msg_hdr.msg_controllen = unsafe {
                    (if gso { libc::CMSG_SPACE(2) } else { 0 })
                        + if msg.tos != 0 {
                            libc::CMSG_SPACE(mem::size_of::<libc::c_int>() as u32)
                        } else {
                            0
                        }
                } as _;
                // SAFETY: msg_control points to `ctrl[m]`, 48 aligned bytes, which
                // holds CMSG_SPACE(2) + CMSG_SPACE(4) = 48, so both headers and
                // their payloads lie inside the buffer; CMSG_NXTHDR returns the
                // second header within msg_controllen (non-null, checked).
                unsafe {
                    let mut cm = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                    if gso {
                        (*cm).cmsg_level = libc::SOL_UDP;
                        (*cm).cmsg_type = libc::UDP_SEGMENT;
                        (*cm).cmsg_len = libc::CMSG_LEN(2) as _;
                        std::ptr::write_unaligned(libc::CMSG_DATA(cm) as *mut u16, msg.seg as u16);
                        if msg.tos != 0 {
                            cm = libc::CMSG_NXTHDR(&h.msg_hdr, cm);
                        }
                    }
                    if msg.tos != 0 && !cm.is_null() {
                        (*cm).cmsg_level = libc::IPPROTO_IP;
                        (*cm).cmsg_type = libc::IP_TOS;
                        (*cm).cmsg_len = libc::CMSG_LEN(mem::size_of::<libc::c_int>() as u32) as _;
                        std::ptr::write_unaligned(
                            libc::CMSG_DATA(cm) as *mut libc::c_int,
                            libc::c_int::from(msg.tos),
                        );
                    }
                }
            } else {
                h.msg_hdr.msg_control = std::ptr::null_mut();
                h.msg_hdr.msg_controllen = 0;
            }
        }
        // SAFETY: the first `used` headers are fully initialised above and
        // point into `self.iovs`, `self.names`, `self.ctrl` and the caller's
        // packets, all of which are borrowed until this call returns.
        let r = unsafe { libc::sendmmsg(fd, self.hdrs.as_mut_ptr(), used as _, 0) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as usize)
        }
    }
}

/// Metadata of one received message.
#[derive(Clone, Copy, Debug)]
pub struct RxMeta {
    pub len: usize,
    /// Datagram size of a GRO-coalesced receive (`len` when not coalesced).
    pub stride: usize,
    pub src: Option<SocketAddr>,
}

/// A `recvmmsg` batch: `n` buffers of `RX_BUF_LEN` bytes.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    names: Vec<libc::sockaddr_storage>,
    ctrl: Vec<CmsgBuf>,
    iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
    pub meta: Vec<RxMeta>,
}

// SAFETY: the raw pointers in `iovs`/`hdrs` point into this struct's own heap
// buffers (whose addresses do not change when the struct moves) and are
// refreshed on every `recv` call.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub fn new(n: usize) -> Self {
        RecvBatch {
            bufs: (0..n).map(|_| vec![0u8; RX_BUF_LEN]).collect(),
            // SAFETY: sockaddr_storage, iovec and mmsghdr are plain C structs; all-zero is valid.
            names: (0..n).map(|_| unsafe { mem::zeroed() }).collect(),
            ctrl: vec![CmsgBuf::default(); n],
            // SAFETY: as above.
            iovs: (0..n).map(|_| unsafe { mem::zeroed() }).collect(),
            // SAFETY: as above.
            hdrs: (0..n).map(|_| unsafe { mem::zeroed() }).collect(),
            meta: Vec::with_capacity(n),
        }
    }

    /// Received bytes of message `i` (valid after [`RecvBatch::recv`]).
    pub fn buf(&self, i: usize) -> &[u8] {
        let len = self.meta.get(i).map_or(0, |m| m.len);
        self.bufs.get(i).map_or(&[][..], |b| &b[..len.min(b.len())])
    }

    /// Empty the batch, to fill it by hand ([`RecvBatch::push_with`]).
    pub(crate) fn clear(&mut self) {
        self.meta.clear();
    }

    /// Append a message by hand (the in-memory link): `fill` writes its
    /// bytes into the next buffer and returns their length; `stride` is its
    /// datagram size as `UDP_GRO` reports it. False when the batch is full.
    pub(crate) fn push_with(
        &mut self,
        src: SocketAddr,
        stride: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> bool {
        let Some(buf) = self.bufs.get_mut(self.meta.len()) else {
            return false;
        };
        let len = fill(buf).min(buf.len());
        self.meta.push(RxMeta {
            len,
            stride,
            src: Some(src),
        });
        true
    }

    /// Nonblocking `recvmmsg`: returns the number of messages (0 when none are queued).
    pub fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        let n = self.bufs.len();
        for (iov, buf) in self.iovs.iter_mut().zip(&mut self.bufs) {
            *iov = libc::iovec {
                iov_base: buf.as_mut_ptr() as *mut libc::c_void,
                iov_len: buf.len(),
            };
        }
        // One base pointer per vector, taken after its last write (see `send`).
        let (iovs, names, ctrl) = (
            self.iovs.as_mut_ptr(),
            self.names.as_mut_ptr(),
            self.ctrl.as_mut_ptr(),
        );
        for (i, h) in self.hdrs.iter_mut().enumerate() {
            h.msg_len = 0;
            h.msg_hdr.msg_name = names.wrapping_add(i) as *mut libc::c_void;
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as _;
            h.msg_hdr.msg_iov = iovs.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = ctrl.wrapping_add(i) as *mut libc::c_void;
            h.msg_hdr.msg_controllen = mem::size_of::<CmsgBuf>() as _;
            h.msg_hdr.msg_flags = 0;
        }
        self.meta.clear();
        // SAFETY: every header points at live buffers owned by `self`, with
        // lengths that match those buffers; the timeout pointer may be null.
        let r = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                n as _,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(0);
            }
            return Err(e);
        }
        let r = r as usize;
        for i in 0..r {
            let h = &self.hdrs[i];
            let len = (h.msg_len as usize).min(RX_BUF_LEN);
            let mut stride = len;
            // SAFETY: the kernel filled msg_control up to msg_controllen within
            // our buffer; CMSG_FIRSTHDR/NXTHDR stay inside that range, we read
            // the int payload only when cmsg_len says it is there, and unaligned.
            unsafe {
                let gro_len = libc::CMSG_LEN(mem::size_of::<libc::c_int>() as u32) as usize;
                let mut cm = libc::CMSG_FIRSTHDR(&h.msg_hdr);
                while !cm.is_null() {
                    if (*cm).cmsg_level == libc::SOL_UDP
                        && (*cm).cmsg_type == libc::UDP_GRO
                        && (*cm).cmsg_len as usize >= gro_len
                    {
                        let v = std::ptr::read_unaligned(libc::CMSG_DATA(cm) as *const libc::c_int);
                        if v > 0 {
                            stride = v as usize;
                        }
                    }
                    cm = libc::CMSG_NXTHDR(&h.msg_hdr, cm);
                }
            }
            let src = storage_to_addr(&self.names[i], h.msg_hdr.msg_namelen as usize);
            self.meta.push(RxMeta { len, stride, src });
        }
        Ok(r)
    }
}

/// Decode an IPv4/IPv6 socket address the kernel wrote into `ss`.
fn storage_to_addr(ss: &libc::sockaddr_storage, len: usize) -> Option<SocketAddr> {
    match i32::from(ss.ss_family) {
        libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: sockaddr_storage is large enough and suitably aligned for
            // sockaddr_in, and the family says that is what the kernel wrote.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in) };
            Some(SocketAddr::from((
                u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage as *const libc::sockaddr_in6) };
            // Peers are compared by address (floats, DATA_V1 lookup, control
            // sessions): the flow label may differ from packet to packet, so
            // it is dropped. The scope id stays: it is fixed per interface and
            // needed to answer a link-local peer.
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                a.sin6_addr.s6_addr.into(),
                u16::from_be(a.sin6_port),
                0,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

fn setsockopt_int(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: we pass a pointer to a live c_int and its exact size.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            &v as *const libc::c_int as *const libc::c_void,
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Turn on `UDP_GRO` (kernel ≥ 5.0 for UDP sockets): receives may then carry many datagrams.
pub fn enable_udp_gro(fd: RawFd) -> io::Result<()> {
    setsockopt_int(fd, libc::SOL_UDP, libc::UDP_GRO, 1)
}

/// Raise SO_RCVBUF/SO_SNDBUF past `net.core.*mem_max` (needs CAP_NET_ADMIN; errors ignored by callers).
pub fn force_buffers(fd: RawFd, bytes: usize) -> io::Result<()> {
    let b = bytes.min(i32::MAX as usize) as libc::c_int;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, b)?;
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, b)
}

/// Whether the kernel accepts a `UDP_SEGMENT` socket option (GSO support, kernel ≥ 4.18).
pub fn probe_udp_gso(fd: RawFd) -> bool {
    setsockopt_int(fd, libc::SOL_UDP, libc::UDP_SEGMENT, 0).is_ok()
}

/// Readiness of the descriptors passed to [`poll`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    pub readable: bool,
    pub writable: bool,
    pub error: bool,
}

/// The `pollfd` array for the first (at most 4) of `fds`, each polled for
/// reading, or for writing where `write[i]`; and how many of it are used.
fn pollfds(fds: &[RawFd], write: &[bool]) -> ([libc::pollfd; 4], usize) {
    let mut p = [libc::pollfd {
        fd: -1,
        events: 0,
        revents: 0,
    }; 4];
    let n = fds.len().min(4);
    for (i, (slot, &fd)) in p.iter_mut().zip(&fds[..n]).enumerate() {
        slot.fd = fd;
        slot.events = if write.get(i).copied().unwrap_or(false) {
            libc::POLLOUT
        } else {
            libc::POLLIN
        };
    }
    (p, n)
}

/// `poll(2)` on up to 4 descriptors for reading (or writing where `write[i]`).
/// `timeout_ms` < 0 waits forever. EINTR reports nothing ready.
pub fn poll(
    fds: &[RawFd],
    write: &[bool],
    timeout_ms: i32,
    out: &mut [Ready],
) -> io::Result<usize> {
    let (mut p, n) = pollfds(fds, write);
    // SAFETY: `p` is a live array of `n` pollfd structs.
    let r = unsafe { libc::poll(p.as_mut_ptr(), n as libc::nfds_t, timeout_ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    for i in 0..n.min(out.len()) {
        let ev = p[i].revents;
        out[i] = Ready {
            readable: ev & libc::POLLIN != 0,
            writable: ev & libc::POLLOUT != 0,
            error: ev & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0,
        };
    }
    Ok(r as usize)
}

/// `ppoll(2)` for reading on up to 4 descriptors for at most `timeout`
/// (nanosecond resolution, unlike [`poll`]'s milliseconds). Returns how many
/// are ready (0 on timeout or EINTR).
pub fn poll_readable_for(fds: &[RawFd], timeout: std::time::Duration) -> io::Result<usize> {
    let (mut p, n) = pollfds(fds, &[]);
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `p` is a live array of `n` pollfd structs, `ts` a live
    // timespec; a null signal mask leaves the thread's mask as it is.
    let r = unsafe { libc::ppoll(p.as_mut_ptr(), n as libc::nfds_t, &ts, std::ptr::null()) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(0);
        }
        return Err(e);
    }
    Ok(r as usize)
}

/// Set the calling thread's timer slack (how late the kernel may fire its
/// timers to group wake-ups; 50 µs by default), so that a wait of a few
/// tens of microseconds lasts about that long.
pub fn set_thread_timer_slack(nanos: u64) -> io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and no pointers.
    let r = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, nanos as libc::c_ulong, 0, 0, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Let another runnable thread of this CPU run before this one goes on
/// (`sched_yield`); returns at once when there is none.
pub fn yield_cpu() {
    // SAFETY: sched_yield takes no arguments and cannot fail on Linux.
    unsafe {
        libc::sched_yield();
    }
}

/// A nonblocking eventfd, used to wake and stop the workers.
pub struct EventFd(OwnedFd);

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd has no pointer arguments.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Make the eventfd readable (it stays readable: nobody reads it).
    pub fn signal(&self) -> io::Result<()> {
        let one: u64 = 1;
        // SAFETY: we write 8 bytes from a live u64, as eventfd requires.
        let r = unsafe {
            libc::write(
                self.0.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                mem::size_of::<u64>(),
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

impl EventFd {
    /// Reset the counter so the eventfd polls unreadable until the next signal.
    pub fn drain(&self) {
        let mut count: u64 = 0;
        // SAFETY: we read 8 bytes into a live u64, as eventfd requires; a
        // nonblocking eventfd with a zero counter fails with EAGAIN, ignored.
        let _ = unsafe {
            libc::read(
                self.0.as_raw_fd(),
                &mut count as *mut u64 as *mut libc::c_void,
                mem::size_of::<u64>(),
            )
        };
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// Move the calling thread into the network namespace at `path`
/// (e.g. `/var/run/netns/NAME`). Sockets and TUN devices it creates afterwards
/// belong to that namespace, and so do threads it spawns.
pub fn enter_netns(path: &std::path::Path) -> io::Result<()> {
    let f = std::fs::File::open(path)?;
    // SAFETY: setns takes a descriptor we own for the duration of the call.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// A level-triggered `epoll(7)` instance: a worker waiting on many TCP
/// connections pays per ready descriptor, not per watched one (as `poll`).
pub struct Epoll {
    fd: OwnedFd,
    events: Vec<libc::epoll_event>,
}

impl Epoll {
    /// An instance reporting at most `batch` descriptors per wait.
    pub fn new(batch: usize) -> io::Result<Epoll> {
        // SAFETY: epoll_create1 has no pointer arguments.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Epoll {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: vec![libc::epoll_event { events: 0, u64: 0 }; batch.max(1)],
        })
    }

    fn ctl(
        &self,
        op: libc::c_int,
        fd: RawFd,
        token: u64,
        read: bool,
        write: bool,
    ) -> io::Result<()> {
        let mut events = libc::EPOLLRDHUP as u32;
        if read {
            events |= libc::EPOLLIN as u32;
        }
        if write {
            events |= libc::EPOLLOUT as u32;
        }
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` is a live epoll_event; the kernel copies it.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Watch `fd` under `token`.
    pub fn add(&self, fd: RawFd, token: u64, read: bool, write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, read, write)
    }

    /// Change what `fd` is watched for.
    pub fn modify(&self, fd: RawFd, token: u64, read: bool, write: bool) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, read, write)
    }

    /// Stop watching `fd` (before it is closed: another worker may hold it open).
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, false, false)
    }

    /// Wait up to `timeout_ms` (< 0: forever); the ready descriptors'
    /// tokens and readiness. EINTR reports nothing ready.
    pub fn wait(&mut self, timeout_ms: i32) -> io::Result<impl Iterator<Item = (u64, Ready)> + '_> {
        // SAFETY: `events` is a live buffer of `len` epoll_event structs.
        let r = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len() as libc::c_int,
                timeout_ms,
            )
        };
        let n = if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
            0
        } else {
            r as usize
        };
        Ok(self.events[..n].iter().map(|ev| {
            let bits = ev.events;
            let ready = Ready {
                readable: bits & libc::EPOLLIN as u32 != 0,
                writable: bits & libc::EPOLLOUT as u32 != 0,
                error: bits & (libc::EPOLLERR | libc::EPOLLHUP | libc::EPOLLRDHUP) as u32 != 0,
            };
            (ev.u64, ready)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn ipv6_sources_keep_address_port_and_scope_but_not_the_flow_label() {
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut ss: libc::sockaddr_storage = unsafe { mem::zeroed() };
        // SAFETY: sockaddr_storage is large enough and aligned for sockaddr_in6.
        let a =
            unsafe { &mut *(&mut ss as *mut libc::sockaddr_storage as *mut libc::sockaddr_in6) };
        a.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        a.sin6_port = 1194u16.to_be();
        a.sin6_flowinfo = 0x000a_bcde;
        a.sin6_scope_id = 3;
        a.sin6_addr.s6_addr = "fe80::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let got = storage_to_addr(&ss, mem::size_of::<libc::sockaddr_in6>());
        let want = std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 1194, 0, 3);
        assert_eq!(got, Some(SocketAddr::V6(want)));
        if let Some(SocketAddr::V6(v6)) = got {
            assert_eq!(v6.flowinfo(), 0);
        }
        assert_eq!(storage_to_addr(&ss, 8), None);
    }

    #[test]
    fn gso_send_and_gro_receive_on_loopback() {
        // The data plane's speed rests on both offloads (kernel >= 5.0); a
        // kernel without them fails here instead of passing untested.
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_nonblocking(true).unwrap();
        if let Err(e) = enable_udp_gro(rx.as_raw_fd()) {
            panic!("this kernel refuses UDP_GRO (needs Linux >= 5.0): {e}");
        }
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert!(
            probe_udp_gso(tx.as_raw_fd()),
            "this kernel refuses UDP_SEGMENT (GSO needs Linux >= 4.18)"
        );
        let dst = rx.local_addr().unwrap();
        let pkts: Vec<Vec<u8>> = (0..10u8)
            .map(|i| vec![i; if i == 9 { 300 } else { 1000 }])
            .collect();
        let mut scratch = SendScratch::new(4, 16);
        let msgs = [TxMsg {
            dst,
            first: 0,
            count: 10,
            seg: 1000,
            tos: 0,
        }];
        let get = |i: usize| -> &[u8] { &pkts[i] };
        assert_eq!(scratch.send(tx.as_raw_fd(), &msgs, &get).unwrap(), 1);
        let mut batch = RecvBatch::new(4);
        let mut total = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while total.len() < 10 && std::time::Instant::now() < deadline {
            let mut ready = [Ready::default()];
            poll(&[rx.as_raw_fd()], &[false], 100, &mut ready).unwrap();
            let n = batch.recv(rx.as_raw_fd()).unwrap();
            for i in 0..n {
                let m = batch.meta[i];
                assert_eq!(m.src, Some(tx.local_addr().unwrap()));
                for seg in batch.buf(i).chunks(m.stride) {
                    total.push(seg.to_vec());
                }
                assert!(m.stride == 1000 || m.stride == 300, "stride {}", m.stride);
            }
        }
        assert_eq!(total, pkts);
    }

    /// `passtos`: a message's TOS byte reaches the datagrams, a GSO run's
    /// every segment included, and a message without one keeps the default.
    #[test]
    fn tos_control_message_sets_the_datagrams_tos() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        setsockopt_int(rx.as_raw_fd(), libc::IPPROTO_IP, libc::IP_RECVTOS, 1).unwrap();
        rx.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = rx.local_addr().unwrap();
        let pkts: Vec<Vec<u8>> = vec![vec![1; 500], vec![2; 500], vec![3; 200], vec![4; 100]];
        let gso = probe_udp_gso(tx.as_raw_fd());
        let msgs = [
            TxMsg {
                dst,
                first: 0,
                count: if gso { 3 } else { 1 },
                seg: 500,
                tos: 0xb8,
            },
            TxMsg {
                dst,
                first: 3,
                count: 1,
                seg: 0,
                tos: 0,
            },
        ];
        let get = |i: usize| -> &[u8] { &pkts[i] };
        let mut scratch = SendScratch::new(4, 8);
        assert_eq!(scratch.send(tx.as_raw_fd(), &msgs, &get).unwrap(), 2);
        let want: &[(usize, u8)] = if gso {
            &[(500, 0xb8), (500, 0xb8), (200, 0xb8), (100, 0)]
        } else {
            &[(500, 0xb8), (100, 0)]
        };
        for &(len, tos) in want {
            assert_eq!(recv_with_tos(&rx), (len, tos));
        }
    }

    /// One datagram's length and the TOS byte `IP_RECVTOS` reports.
    fn recv_with_tos(rx: &UdpSocket) -> (usize, u8) {
        let mut data = [0u8; 2048];
        let mut ctrl = CmsgBuf::default();
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: msghdr is a plain C struct; all-zero is valid.
        let mut h: libc::msghdr = unsafe { mem::zeroed() };
        h.msg_iov = &mut iov;
        h.msg_iovlen = 1;
        h.msg_control = &mut ctrl as *mut CmsgBuf as *mut libc::c_void;
        h.msg_controllen = mem::size_of::<CmsgBuf>() as _;
        // SAFETY: `h` points to `data` and `ctrl`, both alive for the call.
        let n = unsafe { libc::recvmsg(rx.as_raw_fd(), &mut h, 0) };
        assert!(n >= 0, "{}", io::Error::last_os_error());
        let mut tos = 0;
        // SAFETY: the kernel filled `ctrl` up to msg_controllen; the macros
        // stay inside it and the TOS payload is one byte.
        unsafe {
            let mut cm = libc::CMSG_FIRSTHDR(&h);
            while !cm.is_null() {
                if (*cm).cmsg_level == libc::IPPROTO_IP && (*cm).cmsg_type == libc::IP_TOS {
                    tos = *libc::CMSG_DATA(cm);
                }
                cm = libc::CMSG_NXTHDR(&h, cm);
            }
        }
        (n as usize, tos)
    }
}
