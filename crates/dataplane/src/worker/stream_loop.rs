//! The TCP worker loop: epoll over the TUN queue, the stop and inbox
//! eventfds, the UDP socket of a server that has one, and every connection
//! the worker owns; then the TUN, the UDP socket and the connections that
//! have bytes are drained alternately until all are idle.
//!
//! Costs follow activity, not the number of connections: epoll reports
//! only ready descriptors; connections with bytes to read sit in a ready
//! list until a read would block; other workers hand a connection that
//! needs its owner (closed, or a backlog to flush) through the inbox's
//! attention queue, each at most once until the owner took it. A
//! connection is watched for writing only while its backlog holds bytes.
//!
//! The loop's state lives in [`StreamLoop`] and its work in `take_inbox`
//! and `drain_stream`, apart from epoll, so that a test drives the same
//! code over in-memory connections (`pump_stream`, tests in `tests.rs`).

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::outbound::Out;
use super::{Link, Worker};
use crate::UpEvent;
use crate::stream::{BACKLOG_HIGH, OwnedStream, ReadOutcome, StreamConn, Streams};
use crate::sys::{Epoll, Ready};

const TUN: u64 = 0;
const STOP: u64 = 1;
const INBOX: u64 = 2;
const UDP: u64 = 3;
/// Token of the connection in slot `i`: `FIRST_CONN + i`.
const FIRST_CONN: u64 = 4;
/// Descriptors reported per wait.
const EVENTS: usize = 256;

/// The connections a worker owns, by slot (the epoll token).
#[derive(Default)]
struct Slots {
    slots: Vec<Option<OwnedStream>>,
    free: Vec<usize>,
}

impl Slots {
    fn insert(&mut self, o: OwnedStream) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(o);
                i
            }
            None => {
                self.slots.push(Some(o));
                self.slots.len() - 1
            }
        }
    }

    fn get(&mut self, i: usize) -> Option<&mut OwnedStream> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    /// The owned connection `conn`, if it is still in its slot.
    fn find(&mut self, conn: &Arc<StreamConn>) -> Option<(usize, &mut OwnedStream)> {
        let i = conn.slot.load(Ordering::Relaxed);
        self.get(i)
            .filter(|o| Arc::ptr_eq(&o.conn, conn))
            .map(|o| (i, o))
    }

    fn take(&mut self, i: usize) -> Option<OwnedStream> {
        let o = self.slots.get_mut(i)?.take()?;
        self.free.push(i);
        Some(o)
    }
}

/// What the loop keeps between wake-ups: the connections it owns and the
/// ones with work.
#[derive(Default)]
pub(super) struct StreamLoop {
    slots: Slots,
    /// Slots whose connection may have bytes to read (`readable`).
    ready: Vec<usize>,
    /// Slots to drop, and why.
    closed: Vec<(usize, String)>,
    tun_packets: u64,
}

impl StreamLoop {
    /// A client's one connection: the TUN waits while its backlog is high.
    fn stalled(&self, client: bool) -> bool {
        client && (self.slots.slots.iter().flatten()).any(|o| o.conn.backlog() > BACKLOG_HIGH)
    }

    /// What epoll reported for the connection with token `token`.
    fn on_event(&mut self, token: u64, r: Ready, ep: Option<&Epoll>) {
        let i = (token - FIRST_CONN) as usize;
        let Some(o) = self.slots.get(i) else { return };
        if r.writable {
            o.conn.flush();
            if o.conn.backlog() == 0 && o.writing {
                o.writing = false;
                if let Some(Err(e)) = ep.map(|ep| ep.modify(o.conn.fd(), token, true, false)) {
                    self.closed
                        .push((i, format!("cannot watch the connection: {e}")));
                }
            }
        }
        if (r.readable || r.error) && !o.readable {
            o.readable = true;
            self.ready.push(i);
        }
    }
}

impl Worker {
    /// Run the TCP (or UDP and TCP) loop until the data plane stops.
    pub(super) fn run_stream(mut self) -> std::io::Result<()> {
        let Some(streams) = self.sh.streams.clone() else {
            return Ok(());
        };
        let Link::Stream { inbox, udp, .. } = &self.link else {
            return Ok(());
        };
        let inbox_fd = inbox.wake.as_raw_fd();
        let udp_fd = udp.as_ref().map(|u| u.as_raw_fd());
        let mut ep = Epoll::new(EVENTS)?;
        ep.add(self.tun.as_raw_fd(), TUN, true, false)?;
        ep.add(self.sh.wake.as_raw_fd(), STOP, true, false)?;
        ep.add(inbox_fd, INBOX, true, false)?;
        if let Some(fd) = udp_fd {
            ep.add(fd, UDP, true, false)?;
        }
        let mut events = Vec::with_capacity(EVENTS);
        let mut st = StreamLoop::default();
        let mut tun_ok = true;
        let mut tun_watched = true;
        let mut busy_nanos = 0u64;
        loop {
            if self.sh.stop.load(Ordering::Relaxed) {
                break;
            }
            let want_tun = tun_ok && !st.stalled(self.is_stream_client());
            if want_tun != tun_watched {
                ep.modify(self.tun.as_raw_fd(), TUN, want_tun, false)?;
                tun_watched = want_tun;
            }
            let (mut stop, mut inbox_ready) = (false, false);
            events.clear();
            events.extend(ep.wait(1000)?);
            for &(token, r) in &events {
                match token {
                    STOP => stop = true,
                    INBOX => inbox_ready = true,
                    TUN => {
                        if r.error && !r.readable {
                            tracing::error!(
                                "worker {}: TUN queue failed; no longer reading it",
                                self.index
                            );
                            tun_ok = false;
                        }
                    }
                    UDP => {}
                    t => st.on_event(t, r, Some(&ep)),
                }
            }
            if stop {
                break;
            }
            if !tun_ok && tun_watched {
                ep.modify(self.tun.as_raw_fd(), TUN, false, false)?;
                tun_watched = false;
            }
            if inbox_ready {
                self.take_inbox(&mut st, Some(&ep));
            }
            let woke = std::time::Instant::now();
            self.drain_stream(&mut st, &streams, tun_ok, Some(&ep));
            busy_nanos += woke.elapsed().as_nanos() as u64;
            let mine = &self.sh.workers[self.index];
            mine.tun_packets.store(st.tun_packets, Ordering::Relaxed);
            mine.udp_packets.store(self.ib.received, Ordering::Relaxed);
            mine.tcp_packets
                .store(self.ib.stream_received, Ordering::Relaxed);
            mine.busy_nanos.store(busy_nanos, Ordering::Relaxed);
        }
        for o in st.slots.slots.into_iter().flatten() {
            o.conn.close();
        }
        Ok(())
    }

    fn is_stream_client(&self) -> bool {
        matches!(self.link, Link::Stream { client: true, .. })
    }

    /// Take the new connections from the inbox, and act on the ones that
    /// asked for attention. `ep`: where descriptors are watched (`None`
    /// when a test drives the loop).
    fn take_inbox(&mut self, st: &mut StreamLoop, ep: Option<&Epoll>) {
        let Link::Stream { inbox, client, .. } = &self.link else {
            return;
        };
        inbox.wake.drain();
        while let Ok(conn) = inbox.rx.try_recv() {
            let mut o = crate::stream::owned(conn, *client);
            o.readable = true;
            let fd = o.conn.fd();
            let conn = o.conn.clone();
            let i = st.slots.insert(o);
            conn.slot.store(i, Ordering::Relaxed);
            if let Some(Err(e)) = ep.map(|ep| ep.add(fd, FIRST_CONN + i as u64, true, false)) {
                st.closed
                    .push((i, format!("cannot watch the connection: {e}")));
                continue;
            }
            st.ready.push(i);
            // Attention asked before it arrived here would be lost.
            attend(&mut st.slots, ep, &conn, &mut st.closed);
        }
        while let Ok(conn) = inbox.attention.try_recv() {
            conn.attended();
            attend(&mut st.slots, ep, &conn, &mut st.closed);
        }
    }

    /// One wake-up's work: drain the TUN (when `tun_ok`), the UDP socket
    /// and the connections with bytes alternately until all are idle
    /// (bounded), then drop the connections that ended.
    fn drain_stream(
        &mut self,
        st: &mut StreamLoop,
        streams: &Streams,
        tun_ok: bool,
        ep: Option<&Epoll>,
    ) {
        let Link::Stream { client, udp, .. } = &self.link else {
            return;
        };
        let client = *client;
        let udp = udp.as_ref();
        let link = match udp {
            Some(u) => Out::Both(u, streams),
            None => Out::Stream(streams),
        };
        for _ in 0..256 {
            let mut busy = false;
            if tun_ok && !st.stalled(client) {
                let n = self.ob.read(&self.tun, &self.sh.counters);
                if n > 0 {
                    st.tun_packets += n as u64;
                    self.ob.process(n, link, &self.sh);
                    busy = true;
                }
            }
            if let Some(udp) = udp
                && self
                    .ib
                    .run(udp, &mut self.tun, &mut self.ob, &self.sh, link)
            {
                busy = true;
            }
            let mut k = 0;
            while k < st.ready.len() {
                let i = st.ready[k];
                let Some(o) = st.slots.get(i) else {
                    st.ready.swap_remove(k);
                    continue;
                };
                if o.conn.is_closed() {
                    st.closed
                        .push((i, "closed by the control plane, or a write failed".into()));
                    st.ready.swap_remove(k);
                    continue;
                }
                if !o.readable {
                    st.ready.swap_remove(k);
                    continue;
                }
                if o.small {
                    o.grow_if_authenticated(&self.sh.peers.load());
                }
                match self
                    .ib
                    .run_stream(o, &mut self.tun, &mut self.ob, &self.sh, link)
                {
                    ReadOutcome::Data => {
                        busy = true;
                        k += 1;
                    }
                    ReadOutcome::Idle => {
                        st.ready.swap_remove(k);
                    }
                    ReadOutcome::Closed(reason) => {
                        st.closed.push((i, reason));
                        st.ready.swap_remove(k);
                    }
                }
            }
            for (i, reason) in st.closed.drain(..) {
                let Some(o) = st.slots.take(i) else { continue };
                // Before the descriptor may close (other workers can
                // still hold the connection for a moment).
                if let Some(ep) = ep {
                    let _ = ep.delete(o.conn.fd());
                }
                o.conn.close();
                streams.forget(&o.conn);
                self.sh.up(
                    UpEvent::StreamClosed {
                        from: o.conn.peer,
                        reason,
                    },
                    false,
                );
            }
            if !busy || self.sh.stop.load(Ordering::Relaxed) {
                break;
            }
        }
    }

    /// A test's stand-in for one wake-up of a worker on in-memory
    /// connections (no descriptor to poll): every connection is reported
    /// readable, and writable while it has a backlog, as level-triggered
    /// epoll would.
    #[cfg(test)]
    pub(super) fn pump_stream(&mut self, st: &mut StreamLoop) {
        let Some(streams) = self.sh.streams.clone() else {
            return;
        };
        self.take_inbox(st, None);
        for i in 0..st.slots.slots.len() {
            let Some(o) = st.slots.get(i) else { continue };
            let writable = o.writing;
            let ready = Ready {
                readable: true,
                writable,
                error: false,
            };
            st.on_event(FIRST_CONN + i as u64, ready, None);
        }
        self.drain_stream(st, &streams, true, None);
    }
}

/// Act on a connection another worker (or the control plane) flagged:
/// close it, or flush its backlog and watch it for writing while bytes wait.
fn attend(
    slots: &mut Slots,
    ep: Option<&Epoll>,
    conn: &Arc<StreamConn>,
    closed: &mut Vec<(usize, String)>,
) {
    let Some((i, o)) = slots.find(conn) else {
        return;
    };
    if conn.is_closed() {
        closed.push((i, "closed by the control plane, or a write failed".into()));
        return;
    }
    if conn.backlog() > 0 {
        conn.flush();
    }
    let writing = conn.backlog() > 0;
    if writing != o.writing {
        o.writing = writing;
        if let Some(Err(e)) =
            ep.map(|ep| ep.modify(conn.fd(), FIRST_CONN + i as u64, true, writing))
        {
            closed.push((i, format!("cannot watch the connection: {e}")));
            return;
        }
    }
    if conn.is_closed() {
        closed.push((i, "a write failed".into()));
    }
}

#[cfg(test)]
mod tests;
