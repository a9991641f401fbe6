//! `seal-spread`: one tunnel's TUN batches sealed by several workers, sent
//! in packet-id order (a client over UDP: every batch goes to its one peer).
//!
//! The worker that reads a TUN batch keeps the read and the GSO split, then
//! moves the batch's buffers into a [`Job`] (a swap of two `Vec`s, no copy),
//! reserves the batch's id range together with a ticket of the key's
//! [`SendOrder`], and hands the job round-robin to the workers, itself
//! included, over bounded queues (one per worker, an eventfd to wake it). A
//! worker whose queue is full is skipped: the reader seals that batch
//! itself. Whoever seals a job hands it in to the order; the batches leave
//! (`sendmmsg`, UDP GSO runs) in ticket order from whichever worker holds
//! the send turn, and each job goes back to the worker that read it.
//!
//! Memory is bounded: each worker owns [`JOBS_PER_WORKER`] jobs (made on
//! first use) and reads its TUN only while it holds a spare one; a job is
//! back with its owner once sent.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::{Receiver, Sender as QueueSender, bounded};

use super::outbound::{GsoRuns, Outbound, send_datagrams};
use super::tos::outer_tos;
use super::{HEAD, PKT_MAX, Shared, TAIL, TUN_BATCH};
use crate::mss;
use crate::order::{SendOrder, Ticket};
use crate::peers::{KeyState, Peer, now_nanos};
use crate::sys::{EventFd, TxMsg};
use crate::udp::{Port, Sender};

/// Jobs (TUN batches with their buffers) each worker owns.
pub(crate) const JOBS_PER_WORKER: usize = 4;
/// Tickets out at once per key: above every job of 1024 workers (the most
/// `workers` allows), so a reservation never finds the order full.
pub(crate) const ORDER_CAPACITY: usize = 1024 * JOBS_PER_WORKER;

/// The order of one key's sealed batches.
pub(crate) type KeyOrder = SendOrder<Job>;

/// One TUN batch on its way: its packets, then its sealed datagrams.
pub(crate) struct Job {
    bufs: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    /// Packets in `bufs`.
    n: usize,
    /// Each sealed packet's datagram in its buffer (start, length).
    wire: Vec<(usize, usize)>,
    /// Sealed datagrams in send order (indexes into `bufs`).
    order: Vec<usize>,
    msgs: Vec<TxMsg>,
    peer: Option<Arc<Peer>>,
    key: Option<Arc<KeyState>>,
    ticket: Option<Ticket>,
    first_id: u32,
    dst: SocketAddr,
    /// The worker that read it, and gets it back.
    owner: usize,
}

impl Job {
    fn new(owner: usize) -> Job {
        Job {
            bufs: (0..TUN_BATCH)
                .map(|_| vec![0u8; HEAD + PKT_MAX + TAIL])
                .collect(),
            sizes: vec![0; TUN_BATCH],
            n: 0,
            wire: vec![(0, 0); TUN_BATCH],
            order: Vec::with_capacity(TUN_BATCH),
            msgs: Vec::with_capacity(TUN_BATCH),
            peer: None,
            key: None,
            ticket: None,
            first_id: 0,
            dst: SocketAddr::from(([0, 0, 0, 0], 0)),
            owner,
        }
    }

    /// Drop what refers to the peer before the job waits as a spare.
    fn clear(&mut self) {
        self.peer = None;
        self.key = None;
        self.n = 0;
    }
}

/// One worker's queues: jobs to seal, and its own jobs coming back.
struct Mailbox {
    jobs_tx: QueueSender<Job>,
    jobs: Receiver<Job>,
    returns_tx: QueueSender<Job>,
    returns: Receiver<Job>,
    wake: EventFd,
}

/// Every worker's mailbox.
pub(crate) struct Handoff {
    mailboxes: Box<[Mailbox]>,
}

impl Handoff {
    pub(crate) fn new(workers: usize) -> std::io::Result<Handoff> {
        let mailboxes = (0..workers.max(1))
            .map(|_| {
                let (jobs_tx, jobs) = bounded(JOBS_PER_WORKER);
                // Never full: it holds at most the jobs its worker owns.
                let (returns_tx, returns) = bounded(JOBS_PER_WORKER);
                Ok(Mailbox {
                    jobs_tx,
                    jobs,
                    returns_tx,
                    returns,
                    wake: EventFd::new()?,
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Handoff { mailboxes })
    }

    fn workers(&self) -> usize {
        self.mailboxes.len()
    }

    /// The descriptor that polls readable when worker `w` has mail.
    pub(crate) fn wake_fd(&self, w: usize) -> RawFd {
        self.mailboxes.get(w).map_or(-1, |m| m.wake.as_raw_fd())
    }

    /// Reset worker `w`'s wake-up (it is about to read its queues).
    pub(crate) fn woken(&self, w: usize) {
        if let Some(m) = self.mailboxes.get(w) {
            m.wake.drain();
        }
    }

    fn signal(&self, w: usize) {
        if let Some(m) = self.mailboxes.get(w)
            && let Err(e) = m.wake.signal()
        {
            tracing::warn!("waking worker {w}: {e}");
        }
    }

    /// Queue `job` for worker `w`; the job back when its queue is full.
    fn hand_to(&self, w: usize, job: Job) -> Option<Job> {
        let Some(m) = self.mailboxes.get(w) else {
            return Some(job);
        };
        if let Err(e) = m.jobs_tx.try_send(job) {
            return Some(e.into_inner());
        }
        self.signal(w);
        None
    }

    /// A job to seal for worker `w`, if one is queued.
    pub(crate) fn next_job(&self, w: usize) -> Option<Job> {
        self.mailboxes.get(w)?.jobs.try_recv().ok()
    }

    /// Send a job back to the worker that owns it.
    fn give_back(&self, mut job: Job) {
        job.clear();
        let owner = job.owner;
        if let Some(m) = self.mailboxes.get(owner) {
            if m.returns_tx.try_send(job).is_err() {
                // Cannot happen (the queue holds every job its owner has);
                // the owner would read with one job fewer.
                tracing::error!("worker {owner}: a returned job did not fit its queue");
            }
            self.signal(owner);
        }
    }
}

/// A worker's jobs at hand and where its next one goes.
#[derive(Default)]
pub(crate) struct Jobs {
    spares: Vec<Job>,
    made: usize,
    next_target: usize,
    /// Jobs this worker sealed (its own and others').
    sealed: u64,
}

#[cfg(test)]
impl Jobs {
    pub(super) fn made(&self) -> usize {
        self.made
    }
    pub(super) fn spares(&self) -> usize {
        self.spares.len()
    }
    pub(super) fn sealed(&self) -> u64 {
        self.sealed
    }
}

impl Jobs {
    /// Whether the worker holds a spare job (taking back the ones returned
    /// and making one while it owns fewer than [`JOBS_PER_WORKER`]).
    fn has_spare(&mut self, me: usize, h: &Handoff) -> bool {
        if let Some(m) = h.mailboxes.get(me) {
            while let Ok(job) = m.returns.try_recv() {
                self.spares.push(job);
            }
        }
        if self.spares.is_empty() && self.made < JOBS_PER_WORKER {
            self.spares.push(Job::new(me));
            self.made += 1;
        }
        !self.spares.is_empty()
    }
}

impl Outbound {
    /// Whether the worker may read a TUN batch now: always, unless the
    /// batches are handed off and it holds no spare job.
    pub(super) fn can_read(&mut self, sh: &Shared) -> bool {
        match &sh.handoff {
            Some(h) => self.jobs.has_spare(self.worker, h),
            None => true,
        }
    }

    /// Take packets `bufs[..n]` as a job when batches are handed off and a
    /// client's one peer gets them all: reserve its ids and ticket, then
    /// queue it for the next worker in turn or seal it here. `false` (the
    /// batch left as it is) otherwise.
    pub(super) fn hand_off(&mut self, n: usize, udp: &Port, sh: &Shared) -> bool {
        let Some(h) = &sh.handoff else {
            return false;
        };
        let Some(peer) = sh.peers.load().client_default.clone() else {
            return false;
        };
        if !self.jobs.has_spare(self.worker, h) {
            return false;
        }
        let Some(mut job) = self.jobs.spares.pop() else {
            return false;
        };
        std::mem::swap(&mut self.bufs, &mut job.bufs);
        std::mem::swap(&mut self.sizes, &mut job.sizes);
        job.n = n;
        let reserved = {
            let ks = peer.keys.load();
            ks.send_key().and_then(|k| {
                let count = u32::try_from(n).ok()?;
                k.order
                    .reserve(|| peer.reserve_ids(k, count))
                    .map(|(ticket, first)| (k.clone(), ticket, first))
            })
        };
        let Some((key, ticket, first_id)) = reserved else {
            // No send key (or no ids left): dropped, as the batch path does.
            peer.counters
                .tx_drops
                .fetch_add(n as u64, Ordering::Relaxed);
            job.clear();
            self.jobs.spares.push(job);
            return true;
        };
        job.dst = **peer.remote.load();
        job.peer = Some(peer);
        job.key = Some(key);
        job.ticket = Some(ticket);
        job.first_id = first_id;
        let target = self.jobs.next_target % h.workers();
        self.jobs.next_target = (target + 1) % h.workers();
        let job = if target == self.worker {
            job
        } else {
            match h.hand_to(target, job) {
                None => return true,
                Some(job) => job,
            }
        };
        self.seal_job(job, udp, sh);
        true
    }

    /// Seal a job (any worker's), hand it in to its key's order, and send
    /// what is due when that makes this worker the sender.
    pub(super) fn seal_job(&mut self, mut job: Job, udp: &Port, sh: &Shared) {
        let Some(h) = &sh.handoff else {
            return;
        };
        let (Some(peer), Some(key), Some(ticket)) =
            (job.peer.clone(), job.key.clone(), job.ticket.take())
        else {
            // Only a job with a ticket is ever queued.
            h.give_back(job);
            return;
        };
        self.jobs.sealed += 1;
        let mss = if key.keys.cipher.is_aead() {
            sh.mss
        } else {
            sh.mss_cbc
        };
        job.msgs.clear();
        job.order.clear();
        let mut runs = GsoRuns::default();
        let (mut sent, mut bytes, mut drops, mut written) = (0u64, 0u64, 0u64, 0u64);
        let job_ref = &mut job;
        for i in 0..job_ref.n {
            let len = job_ref.sizes[i];
            let id = job_ref.first_id.wrapping_add(i as u32);
            let buf = &mut job_ref.bufs[i];
            if let Some((m4, m6)) = mss {
                mss::clamp(&mut buf[HEAD..HEAD + len], m4, m6);
            }
            let tos = if sh.passtos {
                outer_tos(&buf[HEAD..HEAD + len])
            } else {
                0
            };
            let Some((at, framed)) = peer.compression.frame(buf, HEAD, len) else {
                drops += 1;
                continue;
            };
            let Ok((start, wire_len)) = peer.seal(&key, id, buf, at, framed) else {
                drops += 1;
                continue;
            };
            job_ref.wire[i] = (start, wire_len);
            sent += 1;
            bytes += len as u64;
            written += wire_len as u64;
            let index = job_ref.order.len();
            runs.push(&mut job_ref.msgs, index, 0, job_ref.dst, wire_len, tos);
            job_ref.order.push(i);
        }
        if sent > 0 {
            // UDP only (seal-spread is refused over TCP): the link bytes are
            // the datagrams as written.
            peer.counters.sent(sent, bytes, written, now_nanos());
        }
        if drops > 0 {
            peer.counters.tx_drops.fetch_add(drops, Ordering::Relaxed);
        }
        if let Some(link) = &sh.link {
            link.written(written);
        }
        let me = self.worker;
        let sender = &mut self.sender;
        let spares = &mut self.jobs.spares;
        key.order.hand_in_and_send(ticket, job, |done| {
            send_job(sender, udp, sh, &done);
            if done.owner == me {
                let mut done = done;
                done.clear();
                spares.push(done);
            } else {
                h.give_back(done);
            }
        });
    }
}

/// A sealed job's datagrams, in one `sendmmsg`.
fn send_job(sender: &mut Sender, udp: &Port, sh: &Shared, job: &Job) {
    if job.msgs.is_empty() {
        return;
    }
    let datagram = |j: usize| -> &[u8] {
        let i = job.order[j];
        let (start, len) = job.wire[i];
        &job.bufs[i][start..start + len]
    };
    send_datagrams(sender, udp, &job.msgs, &datagram, &sh.counters);
}
