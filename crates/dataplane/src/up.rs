//! The queues from the workers up to the control plane.
//!
//! Control packets (anyone on the internet can send them) and peer events
//! (OCC messages and floats of authenticated peers) have a bounded queue each,
//! filled with `try_send` (dropped and counted when full), so a flood of one
//! kind cannot crowd out the other; [`UpReceiver`] serves both in random
//! order. A third queue reports workers that stopped on their own.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Select, Sender, bounded};
use thiserror::Error;

use crate::UpEvent;

/// Capacity of each queue to the control plane.
pub const UP_QUEUE: usize = 1024;

/// Largest control-channel datagram the workers hand up. OpenVPN 2.6 keeps a
/// control packet's whole IP datagram at or below `max-packet-size`
/// (`tls_mtu`: 1250 by default, at most 2048), and its receivers drop what
/// exceeds about 1600 bytes. Anything longer is junk: dropping it in the
/// worker spares the single control thread unwrapping up to 64 KiB each, and
/// bounds the queue to `UP_QUEUE` × 2 KiB.
pub const MAX_CONTROL_DATAGRAM: usize = 2048;

/// A worker thread that ended without being asked to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WorkerFailure {
    pub worker: usize,
    pub reason: String,
}

/// Why [`UpReceiver`] returned no event.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum UpRecvError {
    #[error("no event before the deadline")]
    Timeout,
    /// A worker stopped on its own (a panic, a failed `poll`): part of the
    /// traffic is no longer handled, so the process should exit and be restarted.
    #[error("data-plane worker {worker} stopped: {reason}")]
    WorkerFailed { worker: usize, reason: String },
    /// The data plane was shut down.
    #[error("the data plane stopped")]
    Stopped,
}

/// The workers' ends of the queues.
pub(crate) struct UpSenders {
    pub control: Sender<UpEvent>,
    pub events: Sender<UpEvent>,
    pub failures: Sender<WorkerFailure>,
}

/// The control plane's end of the queues.
pub struct UpReceiver {
    control: Receiver<UpEvent>,
    events: Receiver<UpEvent>,
    failures: Receiver<WorkerFailure>,
}

/// Queues of `capacity` control packets and `capacity` peer events.
pub(crate) fn queues(capacity: usize, workers: usize) -> (UpSenders, UpReceiver) {
    let (ctx, crx) = bounded(capacity);
    let (etx, erx) = bounded(capacity);
    let (ftx, frx) = bounded(workers.max(1));
    (
        UpSenders {
            control: ctx,
            events: etx,
            failures: ftx,
        },
        UpReceiver {
            control: crx,
            events: erx,
            failures: frx,
        },
    )
}

impl UpReceiver {
    /// Wait for the next event.
    pub fn recv(&self) -> Result<UpEvent, UpRecvError> {
        self.recv_until(None)
    }

    /// Wait at most `timeout` for the next event.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<UpEvent, UpRecvError> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    /// The next event if one is queued.
    pub fn try_recv(&self) -> Result<UpEvent, UpRecvError> {
        self.recv_until(Some(Instant::now()))
    }

    fn recv_until(&self, deadline: Option<Instant>) -> Result<UpEvent, UpRecvError> {
        let mut sel = Select::new();
        let failures = sel.recv(&self.failures);
        let control = sel.recv(&self.control);
        let events = sel.recv(&self.events);
        let op = match deadline {
            None => sel.select(),
            Some(d) => sel.select_deadline(d).map_err(|_| UpRecvError::Timeout)?,
        };
        // Select picks at random among the ready queues: neither kind waits
        // behind a flood of the other.
        let i = op.index();
        if i == failures {
            Err(match op.recv(&self.failures) {
                Ok(f) => UpRecvError::WorkerFailed {
                    worker: f.worker,
                    reason: f.reason,
                },
                Err(_) => UpRecvError::Stopped,
            })
        } else if i == control {
            op.recv(&self.control).map_err(|_| UpRecvError::Stopped)
        } else {
            debug_assert_eq!(i, events);
            op.recv(&self.events).map_err(|_| UpRecvError::Stopped)
        }
    }
}
