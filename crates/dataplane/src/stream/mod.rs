//! TCP transport (`proto tcp-client` / `tcp-server`): OpenVPN packets on a
//! byte stream, each behind a 2-byte length (`ferrovpn_proto::stream`).
//!
//! Each connection is owned by one worker, which alone reads it (large
//! reads, many packets cut out of each, handled like a UDP batch) and polls
//! it for writing when bytes wait. Any worker may write to it: a TUN batch
//! is sealed in place with the length prefix in the head room, and a peer's
//! packets of the batch go out in one `writev` under the connection's
//! lock (one lock per batch and peer, never per packet). The control plane
//! writes its control packets through the same lock, so control and data
//! share the one ordered stream, as on a 2.6 peer.
//!
//! What the socket does not take at once waits in the connection's backlog
//! (whole frames; the first may be partly written), which the owner flushes
//! when the socket is writable. A backlog over [`BACKLOG_LIMIT`] drops new
//! whole frames (counted), like 2.6's `tcp-queue-limit`; a client stops
//! reading its TUN while the backlog is over [`BACKLOG_HIGH`], so a slow
//! link slows the tunnel down instead of dropping.

#[cfg(test)]
pub(crate) mod memory;

use std::collections::HashMap;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use crossbeam_channel::{Receiver, Sender, unbounded};
use ferrovpn_proto::stream::{Deframer, PREFIX_LEN, prefix};

use crate::peers::Snapshot;
use crate::sys::EventFd;
use crate::up::MAX_CONTROL_DATAGRAM;

/// Backlog bytes beyond which new frames are dropped.
pub(crate) const BACKLOG_LIMIT: usize = 1 << 20;
/// Backlog bytes beyond which a client stops reading its TUN.
pub(crate) const BACKLOG_HIGH: usize = 256 << 10;
/// Largest packet accepted from a peer: a full IP packet plus the data
/// channel's headers (2.6 accepts what its buffer holds, about the same).
pub(crate) const MAX_STREAM_PACKET: usize = ferrovpn_proto::stream::MAX_FRAMED_PACKET;
/// Bytes asked for per read.
const READ_CHUNK: usize = 256 << 10;
/// Before its peer authenticated, a server's connection may only carry
/// control packets: its buffer is sized for those (about 6 KiB), so idle or
/// hostile connections cost little. It grows when the peer shows up in the
/// peer table.
const UNAUTHENTICATED_CHUNK: usize = 4096;

/// What a connection reads and writes. An enum, not a trait object, so the
/// calls stay direct (one predictable branch per system call, none per packet).
enum Socket {
    Tcp(TcpStream),
    /// Bytes in memory ([`memory`]), for unit tests.
    #[cfg(test)]
    Memory(memory::MemoryStream),
}

impl Socket {
    #[inline]
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => (&*s).read(buf),
            #[cfg(test)]
            Socket::Memory(s) => s.read(buf),
        }
    }

    #[inline]
    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => (&*s).write(buf),
            #[cfg(test)]
            Socket::Memory(s) => s.write(buf),
        }
    }

    #[inline]
    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => (&*s).write_vectored(bufs),
            #[cfg(test)]
            Socket::Memory(s) => s.write_vectored(bufs),
        }
    }

    fn shutdown(&self) {
        match self {
            Socket::Tcp(s) => {
                let _ = s.shutdown(Shutdown::Both);
            }
            #[cfg(test)]
            Socket::Memory(s) => s.shutdown(),
        }
    }

    /// The descriptor to poll; -1 (nothing to poll) for an in-memory one.
    fn fd(&self) -> RawFd {
        match self {
            Socket::Tcp(s) => s.as_raw_fd(),
            #[cfg(test)]
            Socket::Memory(_) => -1,
        }
    }
}

/// One TCP connection, shared by every worker that writes to it.
pub(crate) struct StreamConn {
    pub peer: SocketAddr,
    socket: Socket,
    /// Index of the worker that reads and flushes this connection.
    owner: usize,
    backlog: Mutex<Vec<u8>>,
    /// Backlog bytes, readable without the lock.
    backlog_len: AtomicUsize,
    /// The connection is done (closed by the control plane or a write
    /// failed); the owner drops it and reports it.
    closed: AtomicBool,
    /// Queued for its owner's attention (closed, or bytes wait in the
    /// backlog): set by whoever queues it, cleared by the owner.
    attention: AtomicBool,
    /// Where its owner keeps it (`usize::MAX` until the owner took it).
    pub(crate) slot: AtomicUsize,
}

impl StreamConn {
    pub(crate) fn fd(&self) -> RawFd {
        self.socket.fd()
    }

    pub(crate) fn backlog(&self) -> usize {
        self.backlog_len.load(Ordering::Relaxed)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        self.socket.shutdown();
    }

    /// Write whole `frames` (each a length prefix and its packet) in order;
    /// returns how many were dropped because the backlog is full.
    fn send(&self, frames: &mut [IoSlice<'_>]) -> u64 {
        let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        let mut dropped = 0;
        if backlog.is_empty() {
            let mut rest = &mut frames[..];
            while !rest.is_empty() {
                match self.socket.write_vectored(rest) {
                    Ok(0) => {
                        self.close();
                        break;
                    }
                    Ok(n) => IoSlice::advance_slices(&mut rest, n),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        self.close();
                        break;
                    }
                }
            }
            // The first frame left may be partly written: it goes in whole.
            for (i, f) in rest.iter().enumerate() {
                if i == 0 || backlog.len() + f.len() <= BACKLOG_LIMIT {
                    backlog.extend_from_slice(f);
                } else {
                    dropped += 1;
                }
            }
        } else {
            for f in frames.iter() {
                if backlog.len() + f.len() <= BACKLOG_LIMIT {
                    backlog.extend_from_slice(f);
                } else {
                    dropped += 1;
                }
            }
            self.write_backlog(&mut backlog);
        }
        self.backlog_len.store(backlog.len(), Ordering::Relaxed);
        dropped
    }

    /// Take it off the owner's attention queue (the owner, before it acts).
    pub(crate) fn attended(&self) {
        self.attention.store(false, Ordering::Release);
    }

    /// Write what waits; the owner calls it when the socket is writable.
    pub(crate) fn flush(&self) {
        let mut backlog = self.backlog.lock().unwrap_or_else(|e| e.into_inner());
        self.write_backlog(&mut backlog);
        self.backlog_len.store(backlog.len(), Ordering::Relaxed);
    }

    fn write_backlog(&self, backlog: &mut Vec<u8>) {
        let mut done = 0;
        while done < backlog.len() {
            match self.socket.write(&backlog[done..]) {
                Ok(0) => {
                    self.close();
                    break;
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    self.close();
                    break;
                }
            }
        }
        if self.is_closed() {
            backlog.clear();
        } else {
            backlog.drain(..done);
        }
    }
}

/// A connection as its owner holds it: the shared part and the read side.
pub(crate) struct OwnedStream {
    pub conn: Arc<StreamConn>,
    pub deframer: Deframer,
    /// epoll said readable and no read came back empty since.
    pub readable: bool,
    /// The read buffer is still the small one of an unauthenticated peer.
    pub small: bool,
    /// Watched for writing (its backlog held bytes when last looked at).
    pub writing: bool,
}

/// What reading a connection gave.
pub(crate) enum ReadOutcome {
    /// Bytes came in (packets may be ready in the deframer).
    Data,
    /// Nothing to read now.
    Idle,
    /// The peer closed the connection or it failed.
    Closed(String),
}

impl OwnedStream {
    /// Give the connection the full-size buffer once its peer is in the
    /// peer table (it authenticated).
    pub(crate) fn grow_if_authenticated(&mut self, snap: &Snapshot) {
        if self.small && snap.by_addr.contains_key(&self.conn.peer) {
            self.deframer.resize(MAX_STREAM_PACKET, READ_CHUNK);
            self.small = false;
        }
    }

    /// One read into the deframer.
    pub(crate) fn read(&mut self) -> ReadOutcome {
        loop {
            let space = self.deframer.space();
            return match self.conn.socket.read(space) {
                Ok(0) => ReadOutcome::Closed("connection closed by the peer".into()),
                Ok(n) => {
                    self.deframer.filled(n);
                    ReadOutcome::Data
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    ReadOutcome::Idle
                }
                Err(e) => ReadOutcome::Closed(format!("connection failed: {e}")),
            };
        }
    }
}

/// Every TCP connection of the data plane, and the way to each worker.
pub(crate) struct Streams {
    by_addr: ArcSwap<HashMap<SocketAddr, Arc<StreamConn>>>,
    /// Serialises changes of `by_addr` (rare: connects and closes).
    change: Mutex<()>,
    inboxes: Vec<Inbox>,
    next_owner: AtomicUsize,
}

/// New connections for one worker, connections that need it (closed, or
/// with a backlog to flush), and its wake-up.
struct Inbox {
    tx: Sender<Arc<StreamConn>>,
    attention: Sender<Arc<StreamConn>>,
    wake: Arc<EventFd>,
}

/// A worker's end of its inbox.
pub(crate) struct WorkerInbox {
    pub rx: Receiver<Arc<StreamConn>>,
    /// Each connection at most once until [`StreamConn::attended`].
    pub attention: Receiver<Arc<StreamConn>>,
    pub wake: Arc<EventFd>,
}

impl Streams {
    pub(crate) fn new(workers: usize) -> io::Result<(Streams, Vec<WorkerInbox>)> {
        let mut inboxes = Vec::with_capacity(workers);
        let mut ends = Vec::with_capacity(workers);
        for _ in 0..workers {
            let (tx, rx) = unbounded();
            let (attention_tx, attention) = unbounded();
            let wake = Arc::new(EventFd::new()?);
            inboxes.push(Inbox {
                tx,
                attention: attention_tx,
                wake: wake.clone(),
            });
            ends.push(WorkerInbox {
                rx,
                attention,
                wake,
            });
        }
        Ok((
            Streams {
                by_addr: ArcSwap::from_pointee(HashMap::new()),
                change: Mutex::new(()),
                inboxes,
                next_owner: AtomicUsize::new(0),
            },
            ends,
        ))
    }

    /// Hand `socket` to a worker (`owner`, else the next in turn).
    pub(crate) fn attach(&self, socket: TcpStream, owner: Option<usize>) -> io::Result<SocketAddr> {
        let peer = socket.peer_addr()?;
        socket.set_nonblocking(true)?;
        // Batches are written whole; Nagle would only add delay to the last packet.
        socket.set_nodelay(true)?;
        self.adopt(Socket::Tcp(socket), peer, owner)?;
        Ok(peer)
    }

    /// Hand an in-memory connection from `peer` to a worker, as [`Streams::attach`].
    #[cfg(test)]
    pub(crate) fn attach_memory(
        &self,
        end: memory::MemoryStream,
        peer: SocketAddr,
        owner: Option<usize>,
    ) -> io::Result<()> {
        self.adopt(Socket::Memory(end), peer, owner)
    }

    fn adopt(&self, socket: Socket, peer: SocketAddr, owner: Option<usize>) -> io::Result<()> {
        let owner = owner.unwrap_or_else(|| self.next_owner.fetch_add(1, Ordering::Relaxed))
            % self.inboxes.len();
        let conn = Arc::new(StreamConn {
            peer,
            socket,
            owner,
            backlog: Mutex::new(Vec::new()),
            backlog_len: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            attention: AtomicBool::new(false),
            slot: AtomicUsize::new(usize::MAX),
        });
        {
            let _g = self.change.lock().unwrap_or_else(|e| e.into_inner());
            let mut map = HashMap::clone(&self.by_addr.load());
            if let Some(old) = map.insert(peer, conn.clone()) {
                old.close();
                self.attend(&old);
            }
            self.by_addr.store(Arc::new(map));
        }
        let inbox = &self.inboxes[owner];
        inbox
            .tx
            .send(conn)
            .map_err(|_| io::Error::other("data-plane worker gone"))?;
        inbox.wake.signal()?;
        Ok(())
    }

    /// The connection to `peer`, if there is one.
    pub(crate) fn get(&self, peer: &SocketAddr) -> Option<Arc<StreamConn>> {
        self.by_addr.load().get(peer).cloned()
    }

    /// The table for a batch (one atomic load).
    pub(crate) fn load(&self) -> arc_swap::Guard<Arc<HashMap<SocketAddr, Arc<StreamConn>>>> {
        self.by_addr.load()
    }

    /// Close the connection to `peer`; its owner drops it.
    pub(crate) fn close(&self, peer: &SocketAddr) -> bool {
        match self.get(peer) {
            Some(c) => {
                c.close();
                self.attend(&c);
                true
            }
            None => false,
        }
    }

    /// Forget `conn` (its owner dropped it), unless a newer one took its address.
    pub(crate) fn forget(&self, conn: &Arc<StreamConn>) {
        let _g = self.change.lock().unwrap_or_else(|e| e.into_inner());
        let map = self.by_addr.load();
        if map.get(&conn.peer).is_some_and(|c| Arc::ptr_eq(c, conn)) {
            let mut map = HashMap::clone(&map);
            map.remove(&conn.peer);
            self.by_addr.store(Arc::new(map));
        }
    }

    /// Send whole frames on `conn`; wakes its owner when bytes wait. Returns
    /// the frames dropped.
    pub(crate) fn send(&self, conn: &Arc<StreamConn>, frames: &mut [IoSlice<'_>]) -> u64 {
        let dropped = conn.send(frames);
        if conn.backlog() > 0 || conn.is_closed() {
            self.attend(conn);
        }
        dropped
    }

    /// Queue `conn` for its owner (once until the owner attends to it) and
    /// wake the owner.
    fn attend(&self, conn: &Arc<StreamConn>) {
        if conn.attention.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(inbox) = self.inboxes.get(conn.owner) {
            // The owner holds its receiver as long as it runs.
            let _ = inbox.attention.send(conn.clone());
        }
        self.wake(conn.owner);
    }

    /// Send one packet (control plane: control packets, pings).
    pub(crate) fn send_packet(&self, peer: &SocketAddr, packet: &[u8]) -> io::Result<()> {
        let conn = self
            .get(peer)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotConnected, "no connection"))?;
        let head = prefix(packet.len()).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "packet too long for TCP")
        })?;
        let mut frame = Vec::with_capacity(PREFIX_LEN + packet.len());
        frame.extend_from_slice(&head);
        frame.extend_from_slice(packet);
        if self.send(&conn, &mut [IoSlice::new(&frame)]) > 0 {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "connection backlog full",
            ));
        }
        Ok(())
    }

    fn wake(&self, owner: usize) {
        if let Some(i) = self.inboxes.get(owner)
            && let Err(e) = i.wake.signal()
        {
            tracing::warn!("cannot wake data-plane worker {owner}: {e}");
        }
    }

    /// Close every connection (data-plane shutdown).
    pub(crate) fn close_all(&self) {
        for c in self.by_addr.load().values() {
            c.close();
        }
    }
}

/// A fresh read side for a connection: a client's is full size at once
/// (it chose its server), a server's starts small.
pub(crate) fn owned(conn: Arc<StreamConn>, client: bool) -> OwnedStream {
    let deframer = if client {
        Deframer::new(MAX_STREAM_PACKET, READ_CHUNK)
    } else {
        Deframer::new(MAX_CONTROL_DATAGRAM, UNAUTHENTICATED_CHUNK)
    };
    OwnedStream {
        conn,
        deframer,
        readable: true,
        small: !client,
        writing: false,
    }
}
