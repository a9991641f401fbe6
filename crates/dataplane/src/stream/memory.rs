//! An in-memory byte-stream connection, so that two stream workers (or a
//! worker and a test playing a hostile peer) exchange bytes in a unit test
//! without root or sockets: the TCP counterpart of `udp::memory`.
//!
//! What it keeps of a nonblocking TCP socket: bytes arrive in order and
//! may be cut anywhere (a read returns what is there, up to the buffer); a
//! read with nothing waiting fails with `WouldBlock`, one after the peer
//! shut down and everything was read returns 0; a write takes what fits in
//! the direction's [`STREAM_CAPACITY`] (a partial write), `WouldBlock` when
//! nothing fits, and `BrokenPipe` once either side shut the direction down.
//!
//! What it adds for the test: the bytes waiting for an end can be taken off
//! the wire and put back (cut, changed, or hostile ones), and the peer's
//! shutdown can be played mid-frame. It has no descriptor to poll: a worker
//! on it is driven by its test.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Bytes in flight per direction before writes stop (a socket buffer).
pub(crate) const STREAM_CAPACITY: usize = 1 << 20;

/// One direction of the connection.
#[derive(Default)]
struct Pipe {
    bytes: VecDeque<u8>,
    /// The writing end shut down: the reader sees end of stream after the bytes.
    write_closed: bool,
    /// The reading end shut down: writes fail.
    read_closed: bool,
}

/// Both directions: `pipes[i]` carries the bytes end `i` reads.
struct Wire {
    pipes: [Pipe; 2],
}

/// One end of an in-memory connection.
#[derive(Clone)]
pub(crate) struct MemoryStream {
    wire: Arc<Mutex<Wire>>,
    /// Which end: it reads `pipes[side]` and writes `pipes[1 - side]`.
    side: usize,
}

/// A connected pair of ends.
pub(crate) fn pair() -> (MemoryStream, MemoryStream) {
    let wire = Arc::new(Mutex::new(Wire {
        pipes: [Pipe::default(), Pipe::default()],
    }));
    (
        MemoryStream {
            wire: wire.clone(),
            side: 0,
        },
        MemoryStream { wire, side: 1 },
    )
}

impl MemoryStream {
    fn lock(&self) -> MutexGuard<'_, Wire> {
        self.wire.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// As `read(2)` on a nonblocking socket.
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut wire = self.lock();
        let pipe = &mut wire.pipes[self.side];
        if pipe.read_closed {
            return Ok(0);
        }
        if pipe.bytes.is_empty() {
            return match pipe.write_closed {
                true => Ok(0),
                false => Err(io::ErrorKind::WouldBlock.into()),
            };
        }
        let n = buf.len().min(pipe.bytes.len());
        for (dst, src) in buf.iter_mut().zip(pipe.bytes.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }

    /// As `writev(2)` on a nonblocking socket: what fits, in order.
    pub(crate) fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut wire = self.lock();
        let pipe = &mut wire.pipes[1 - self.side];
        if pipe.write_closed || pipe.read_closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let room = STREAM_CAPACITY - pipe.bytes.len();
        if room == 0 && bufs.iter().any(|b| !b.is_empty()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut written = 0;
        for b in bufs {
            let take = b.len().min(room - written);
            pipe.bytes.extend(&b[..take]);
            written += take;
        }
        Ok(written)
    }

    /// As `write(2)` on a nonblocking socket.
    pub(crate) fn write(&self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// As `shutdown(SHUT_RDWR)`: the peer reads to the end, then sees it;
    /// writes either way fail from now on.
    pub(crate) fn shutdown(&self) {
        let mut wire = self.lock();
        wire.pipes[1 - self.side].write_closed = true;
        wire.pipes[self.side].read_closed = true;
    }

    /// Test side: every byte waiting for this end to read, taken off the wire.
    pub(crate) fn take_incoming(&self) -> Vec<u8> {
        self.lock().pipes[self.side].bytes.drain(..).collect()
    }

    /// Test side: `bytes` for this end to read, as if its peer wrote them
    /// (beyond the capacity if need be).
    pub(crate) fn push_incoming(&self, bytes: &[u8]) {
        self.lock().pipes[self.side].bytes.extend(bytes);
    }

    /// Test side: the peer shut down writing (end of stream after the
    /// bytes waiting).
    pub(crate) fn close_incoming(&self) {
        self.lock().pipes[self.side].write_closed = true;
    }

    /// Bytes waiting in either direction.
    pub(crate) fn in_flight(&self) -> usize {
        let wire = self.lock();
        wire.pipes.iter().map(|p| p.bytes.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_cross_in_order_and_end_of_stream_follows_them() {
        let (a, b) = pair();
        assert_eq!(
            b.read(&mut [0; 4]).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!(
            a.write_vectored(&[IoSlice::new(b"he"), IoSlice::new(b"llo")])
                .unwrap(),
            5
        );
        let mut buf = [0; 3];
        assert_eq!(b.read(&mut buf).unwrap(), 3);
        assert_eq!(&buf, b"hel");
        a.shutdown();
        assert_eq!(b.read(&mut buf).unwrap(), 2);
        assert_eq!(&buf[..2], b"lo");
        assert_eq!(b.read(&mut buf).unwrap(), 0);
        assert_eq!(a.write(b"x").unwrap_err().kind(), io::ErrorKind::BrokenPipe);
        assert_eq!(b.write(b"x").unwrap_err().kind(), io::ErrorKind::BrokenPipe);
    }

    #[test]
    fn a_full_direction_takes_what_fits_then_would_block() {
        let (a, b) = pair();
        let big = vec![7u8; STREAM_CAPACITY - 10];
        assert_eq!(a.write(&big).unwrap(), big.len());
        assert_eq!(a.write(&[1; 20]).unwrap(), 10);
        assert_eq!(a.write(&[1]).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        assert_eq!(b.read(&mut [0; 100]).unwrap(), 100);
        assert_eq!(a.write(&[1; 200]).unwrap(), 100);
        assert_eq!(b.in_flight(), STREAM_CAPACITY);
    }
}
