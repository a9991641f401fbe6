//! An in-memory TUN queue, so that a worker runs in a unit test without
//! root (wireguard-go's `tun/tuntest`).
//!
//! It carries frames exactly as the kernel's TUN queue does: with offloads
//! on, each frame starts with a `virtio_net_hdr` (what the worker reads may
//! be a TSO/USO super-packet of up to 64 KiB; what it writes is a
//! coalesced one when its batch allowed), and without them each frame is
//! one bare IP packet. The worker's own code (userspace GSO split, GRO
//! coalescing) runs unchanged on top; only the system calls are replaced.
//! The kernel side (segmenting a written super-packet, checking checksums)
//! is the test's to do with what [`MemoryTun::take_written`] returns.
//!
//! Each direction holds at most [`QUEUE_CAPACITY`] frames; a write to a
//! full queue fails with `WouldBlock`, as a full TUN queue drops. It has no
//! descriptor to poll: a worker on it is driven by its test.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Frames queued per direction before more are refused.
pub const QUEUE_CAPACITY: usize = 4096;

/// What the "kernel" does with each frame the worker writes, at once
/// (inside the write): the frame it routes back into the device, if any.
type OnWrite = Box<dyn FnMut(&[u8]) -> Option<Vec<u8>> + Send>;

#[derive(Default)]
struct Frames {
    /// Frames the "kernel" routed into the device: the worker reads them.
    to_worker: VecDeque<Vec<u8>>,
    /// Frames the worker wrote.
    from_worker: VecDeque<Vec<u8>>,
    on_write: Option<OnWrite>,
}

/// The test's side of an in-memory TUN queue (the kernel's side of a real one).
#[derive(Clone)]
pub struct MemoryTun {
    frames: Arc<Mutex<Frames>>,
}

/// The worker's side, held by its [`TunQueue`](super::TunQueue).
pub(crate) struct MemoryQueue {
    frames: Arc<Mutex<Frames>>,
}

fn lock(frames: &Mutex<Frames>) -> MutexGuard<'_, Frames> {
    frames.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn pair() -> (MemoryQueue, MemoryTun) {
    let frames = Arc::new(Mutex::new(Frames::default()));
    (
        MemoryQueue {
            frames: frames.clone(),
        },
        MemoryTun { frames },
    )
}

impl MemoryTun {
    /// Queue `frame` for the worker to read (with offloads on, a
    /// `virtio_net_hdr` first). False when the queue is full.
    pub fn inject(&self, frame: Vec<u8>) -> bool {
        let mut f = lock(&self.frames);
        if f.to_worker.len() >= QUEUE_CAPACITY {
            return false;
        }
        f.to_worker.push_back(frame);
        true
    }

    /// Every frame the worker wrote since the last call, oldest first.
    pub fn take_written(&self) -> Vec<Vec<u8>> {
        lock(&self.frames).from_worker.drain(..).collect()
    }

    /// Run `hook` on every frame the worker writes from now on, inside its
    /// write, and queue what it returns for the worker to read: the
    /// kernel's part in a real TUN write, where the local TCP receiver
    /// ACKs a super-packet before the write returns.
    pub fn on_write(&self, hook: impl FnMut(&[u8]) -> Option<Vec<u8>> + Send + 'static) {
        lock(&self.frames).on_write = Some(Box::new(hook));
    }

    /// Frames injected and not read by the worker yet.
    pub fn unread(&self) -> usize {
        lock(&self.frames).to_worker.len()
    }
}

impl MemoryQueue {
    /// `read(2)` on the queue: the next frame into `buf`, or `WouldBlock`.
    /// A frame longer than `buf` is an error and dropped (the kernel would
    /// cut it; no frame the worker asks for is ever that long).
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(frame) = lock(&self.frames).to_worker.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let dst = buf
            .get_mut(..frame.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "frame too long"))?;
        dst.copy_from_slice(&frame);
        Ok(frame.len())
    }

    /// `write(2)` on the queue: one frame.
    pub(crate) fn send(&self, frame: &[u8]) -> io::Result<usize> {
        let mut f = lock(&self.frames);
        if f.from_worker.len() >= QUEUE_CAPACITY {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        f.from_worker.push_back(frame.to_vec());
        if let Some(reply) = f.on_write.as_mut().and_then(|hook| hook(frame)) {
            f.to_worker.push_back(reply);
        }
        Ok(frame.len())
    }
}
