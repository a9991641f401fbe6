//! The peer/key table: written by the control plane, read by the workers
//! without locks.
//!
//! - The maps (peer id → peer, tunnel IPv4 → peer, remote address → peer,
//!   client default) live in an immutable [`Snapshot`] behind an `ArcSwap`;
//!   writers build a new snapshot under a writer-only mutex and swap it in.
//!   Workers load the snapshot once per batch.
//! - A float (an authenticated packet from a new address) swaps in a snapshot
//!   that shares every map but `by_addr`, at most once per [`FLOAT_INTERVAL`]
//!   per peer, and never onto an address another peer owns: a client sending
//!   from two ports in turn cannot make the workers rebuild the table per packet.
//! - Each [`Peer`] holds its keys in an `ArcSwap<KeySet>` (8 key-id slots plus
//!   the send key), its remote address in an `ArcSwap`, and its counters as
//!   atomics that workers add to once per batch.
//! - Networks behind clients (`iroute`) are a longest-prefix-match table in
//!   the snapshot ([`Iroutes`]), rebuilt with it.
//! - Each [`KeyState`] has an atomic send counter (ids are reserved in
//!   contiguous ranges per batch) and a lock-free [`AtomicReplayWindow`].

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use ferrovpn_proto::compress::Framing;
use ferrovpn_proto::data::{DataError, DataKeys};
use ferrovpn_proto::wire::PEER_ID_UNDEFINED;

use crate::iroutes::{Ipv4Prefix, Ipv6Prefix, Iroutes};
use crate::replay::AtomicReplayWindow;

/// Default receive replay window (ids). A stock OpenVPN peer uses 64; ours is
/// wider because multi-queue senders reorder more.
pub const DEFAULT_REPLAY_WINDOW: u32 = 2048;
/// Send counter value at which the peer is flagged for renegotiation.
pub const RENEGOTIATE_AT: u64 = 0xFF00_0000;
/// Highest packet id that may be sent.
pub const MAX_PACKET_ID: u64 = 0xFFFF_FFFF;
/// Least time between two floats of one peer. A client that really moved
/// floats on its first packet; one that alternates between addresses moves
/// at most this often.
pub const FLOAT_INTERVAL: Duration = Duration::from_secs(1);

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Monotonic nanoseconds since a process-wide base instant.
pub(crate) fn now_nanos() -> u64 {
    base().elapsed().as_nanos() as u64
}

fn nanos_to_instant(n: u64) -> Instant {
    base() + Duration::from_nanos(n)
}

/// One data-channel key (one key_id) of one peer.
pub struct KeyState {
    pub key_id: u8,
    pub keys: DataKeys,
    /// Next packet id to send; starts at 1.
    send_next: AtomicU64,
    pub replay: AtomicReplayWindow,
    /// The order in which batches sealed by several workers leave
    /// (`seal-spread`; see `worker/handoff.rs`).
    pub(crate) order: crate::worker::KeyOrder,
}

impl KeyState {
    fn new(key_id: u8, keys: DataKeys, window: u32) -> Self {
        KeyState {
            key_id,
            keys,
            send_next: AtomicU64::new(1),
            replay: AtomicReplayWindow::new(window),
            order: crate::order::SendOrder::new(crate::worker::ORDER_CAPACITY),
        }
    }

    /// Reserve `n` consecutive packet ids. `None` when the id space is exhausted
    /// (the caller drops the packets). The second value says the counter crossed
    /// the renegotiation threshold.
    pub fn reserve_ids(&self, n: u32) -> (Option<u32>, bool) {
        let start = self.send_next.fetch_add(u64::from(n), Ordering::Relaxed);
        let end = start + u64::from(n); // exclusive
        let reneg = end > RENEGOTIATE_AT;
        if n == 0 || end - 1 > MAX_PACKET_ID {
            return (None, true);
        }
        (Some(start as u32), reneg)
    }

    /// Ids handed out so far.
    pub fn sent_ids(&self) -> u64 {
        self.send_next.load(Ordering::Relaxed) - 1
    }
}

/// The keys of one peer: slots by key_id, and the one used for sending.
#[derive(Clone, Default)]
pub struct KeySet {
    pub slots: [Option<Arc<KeyState>>; 8],
    pub send: Option<u8>,
}

impl KeySet {
    pub fn get(&self, key_id: u8) -> Option<&Arc<KeyState>> {
        self.slots
            .get(usize::from(key_id & 7))
            .and_then(|s| s.as_ref())
    }
    pub fn send_key(&self) -> Option<&Arc<KeyState>> {
        self.send.and_then(|k| self.get(k))
    }
}

impl PeerCounters {
    /// Count `packets` sent, carrying `bytes` of plaintext in `link_bytes`
    /// on the link, the last at `now` ([`now_nanos`]).
    pub(crate) fn sent(&self, packets: u64, bytes: u64, link_bytes: u64, now: u64) {
        self.tx_packets.fetch_add(packets, Ordering::Relaxed);
        self.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.tx_link_bytes.fetch_add(link_bytes, Ordering::Relaxed);
        self.last_tx.store(now, Ordering::Relaxed);
    }
}

/// Counters of one peer, updated once per batch.
#[derive(Default)]
pub struct PeerCounters {
    pub last_rx: AtomicU64,
    pub last_tx: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub replay_drops: AtomicU64,
    pub auth_failures: AtomicU64,
    pub tx_drops: AtomicU64,
    /// Bytes of keepalive pings and OCC messages among `rx_bytes`: not
    /// tunnel traffic (`inactive` does not count them, as 2.6).
    pub rx_keepalive_bytes: AtomicU64,
    /// The same for what the control plane sent among `tx_bytes`.
    pub tx_keepalive_bytes: AtomicU64,
    /// The datagrams (TCP packets) these data packets were on the link:
    /// headers, tags and padding included, a TCP packet's length prefix
    /// only when sent (as 2.6 counts its link bytes).
    pub rx_link_bytes: AtomicU64,
    pub tx_link_bytes: AtomicU64,
}

/// One peer as the workers see it.
pub struct Peer {
    pub peer_id: u32,
    pub remote: ArcSwap<SocketAddr>,
    pub tunnel_ipv4: Option<Ipv4Addr>,
    pub tunnel_ipv6: Option<Ipv6Addr>,
    pub keys: ArcSwap<KeySet>,
    pub counters: Arc<PeerCounters>,
    pub needs_renegotiation: Arc<AtomicBool>,
    /// Compression framing of this peer's payloads (`comp-lzo`, `compress`).
    pub compression: Framing,
    /// The peer reads its socket one datagram per system call (stock
    /// OpenVPN does): a batch's datagrams to it leave in rounds of at most
    /// 32 (the worker's `ROUND_DATAGRAMS`), with a yield of the CPU between
    /// rounds, so that a burst does not overflow its receive buffer.
    pub reads_one_by_one: bool,
    /// When the peer last floated ([`now_nanos`]; 0: never), for [`FLOAT_INTERVAL`].
    last_float: Arc<AtomicU64>,
    /// Networks behind this peer (`iroute`), routed to it and accepted as
    /// sources from it.
    pub iroutes: Arc<[Ipv4Prefix]>,
    /// IPv6 networks behind this peer (`iroute-ipv6`), as `iroutes`.
    pub iroutes_v6: Arc<[Ipv6Prefix]>,
    /// When this peer last claimed its tunnel address or networks (a
    /// table-wide sequence): of two peers claiming the same, the later wins.
    claim: u64,
    /// `fragment`: sequence ids and reassembly (unused without it).
    pub(crate) fragments: Arc<crate::worker::PeerFragments>,
}

impl Peer {
    /// DATA_V1 is used for peers without a peer id.
    pub fn uses_v1(&self) -> bool {
        self.peer_id == PEER_ID_UNDEFINED
    }

    /// `count` consecutive packet ids of `key` for packets to this peer, the
    /// first returned; `None` when the id space is exhausted (the packets
    /// are dropped). Crossing the renegotiation threshold flags the peer.
    pub(crate) fn reserve_ids(&self, key: &KeyState, count: u32) -> Option<u32> {
        let (start, renegotiate) = key.reserve_ids(count);
        if renegotiate {
            self.needs_renegotiation.store(true, Ordering::Relaxed);
        }
        start
    }

    /// Seal the payload `buf[at..at + len]` in place with `key` as packet
    /// `id`: P_DATA_V2 naming this peer, or P_DATA_V1 for a peer without a
    /// peer id. Returns the datagram's start and length in `buf`.
    pub(crate) fn seal(
        &self,
        key: &KeyState,
        id: u32,
        buf: &mut [u8],
        at: usize,
        len: usize,
    ) -> Result<(usize, usize), DataError> {
        let peer_id = (!self.uses_v1()).then_some(self.peer_id);
        key.keys.seal.seal_at(key.key_id, peer_id, id, buf, at, len)
    }

    /// A copy with new routes/address that shares keys and counters.
    fn with_routes(&self, remote: SocketAddr, v4: Option<Ipv4Addr>, v6: Option<Ipv6Addr>) -> Peer {
        Peer {
            peer_id: self.peer_id,
            remote: ArcSwap::from_pointee(remote),
            tunnel_ipv4: v4,
            tunnel_ipv6: v6,
            keys: ArcSwap::new(self.keys.load_full()),
            counters: self.counters.clone(),
            needs_renegotiation: self.needs_renegotiation.clone(),
            compression: self.compression,
            reads_one_by_one: self.reads_one_by_one,
            last_float: self.last_float.clone(),
            iroutes: self.iroutes.clone(),
            iroutes_v6: self.iroutes_v6.clone(),
            claim: self.claim,
            fragments: self.fragments.clone(),
        }
    }
}

/// Snapshot of a peer's counters.
#[derive(Clone, Copy, Debug)]
pub struct PeerStats {
    /// Last authenticated packet received (or when the peer was added).
    pub last_rx: Instant,
    /// Last data packet sent (or when the peer was added).
    pub last_tx: Instant,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub replay_drops: u64,
    pub auth_failures: u64,
    /// Packets dropped on the way out (no send key, id space exhausted, send error).
    pub tx_drops: u64,
    /// Keepalive ping and OCC bytes among `rx_bytes`.
    pub rx_keepalive_bytes: u64,
    /// Bytes the control plane sent with [`crate::DataPlane::send_data`]
    /// (pings, OCC) among `tx_bytes`: not read from the TUN.
    pub tx_keepalive_bytes: u64,
    /// Link bytes of the data packets received and sent
    /// ([`PeerCounters::rx_link_bytes`]).
    pub rx_link_bytes: u64,
    pub tx_link_bytes: u64,
    /// The send counter passed 0xFF000000 (or ran out): start a soft reset.
    pub needs_renegotiation: bool,
}

impl PeerStats {
    pub fn rx_idle(&self) -> Duration {
        self.last_rx.elapsed()
    }
    pub fn tx_idle(&self) -> Duration {
        self.last_tx.elapsed()
    }
}

/// Immutable view of the table, swapped in whole by writers. The maps sit
/// behind their own `Arc`s so that a float replaces `by_addr` alone.
#[derive(Default)]
pub struct Snapshot {
    /// Counts the snapshots swapped in since the table was created.
    pub generation: u64,
    pub by_id: Arc<HashMap<u32, Arc<Peer>>>,
    pub by_ip: Arc<HashMap<Ipv4Addr, Arc<Peer>>>,
    pub by_ip6: Arc<HashMap<Ipv6Addr, Arc<Peer>>>,
    pub by_addr: Arc<HashMap<SocketAddr, Arc<Peer>>>,
    /// Networks behind peers (`iroute`), longest prefix first.
    pub iroutes: Arc<Iroutes>,
    pub client_default: Option<Arc<Peer>>,
}

impl Snapshot {
    /// The peer an IPv4 packet to `addr` goes to: the one with that tunnel
    /// address, else the one whose `iroute` network holds it.
    #[inline]
    pub fn route_v4(&self, addr: Ipv4Addr) -> Option<&Arc<Peer>> {
        self.by_ip
            .get(&addr)
            .or_else(|| self.iroutes.lookup_v4(addr))
    }

    /// The peer an IPv6 packet to `addr` goes to: the one with that tunnel
    /// address, else the one whose `iroute-ipv6` network holds it.
    #[inline]
    pub fn route_v6(&self, addr: Ipv6Addr) -> Option<&Arc<Peer>> {
        self.by_ip6
            .get(&addr)
            .or_else(|| self.iroutes.lookup_v6(addr))
    }
}

/// What [`PeerTable::record_float`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FloatOutcome {
    /// The peer now sends to the new address (report it to the control plane).
    Moved,
    /// Unknown peer, or the address did not change.
    Unchanged,
    /// The peer floated less than [`FLOAT_INTERVAL`] ago.
    RateLimited,
    /// Another peer owns the address.
    AddressTaken,
}

struct Inner {
    snap: ArcSwap<Snapshot>,
    /// Serialises writers (control plane, and workers recording a float). Never taken by the data path.
    write: Mutex<Option<u32>>,
    replay_window: AtomicU32,
    /// The last [`Peer::claim`] handed out (changed under `write`).
    last_claim: AtomicU64,
}

/// Peer and key table shared by the control plane (writer) and the workers (readers). Cheap to clone.
#[derive(Clone)]
pub struct PeerTable {
    inner: Arc<Inner>,
}

impl Default for PeerTable {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PeerTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTable")
            .field("peers", &self.inner.snap.load().by_id.len())
            .finish()
    }
}

impl PeerTable {
    pub fn new() -> Self {
        PeerTable {
            inner: Arc::new(Inner {
                snap: ArcSwap::from_pointee(Snapshot::default()),
                write: Mutex::new(None),
                replay_window: AtomicU32::new(DEFAULT_REPLAY_WINDOW),
                last_claim: AtomicU64::new(0),
            }),
        }
    }

    /// Replay window size for keys installed from now on.
    pub fn set_replay_window(&self, ids: u32) {
        self.inner
            .replay_window
            .store(ids.max(32), Ordering::Relaxed);
    }

    /// Current snapshot (workers: once per batch).
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.inner.snap.load()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<u32>> {
        self.inner.write.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How many snapshots writers have swapped in so far.
    pub fn generation(&self) -> u64 {
        self.inner.snap.load().generation
    }

    /// A new [`Peer::claim`]. Caller holds the writer lock.
    fn next_claim(&self) -> u64 {
        self.inner.last_claim.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Rebuild the snapshot from a peer list. Caller holds the writer lock.
    fn publish(&self, mut peers: Vec<Arc<Peer>>, client_default: Option<u32>) {
        // Later claims overwrite earlier ones in `by_ip` and the iroutes.
        peers.sort_unstable_by_key(|p| p.claim);
        let iroutes = Iroutes::build(&peers);
        let mut by_id = HashMap::with_capacity(peers.len());
        let mut by_ip = HashMap::new();
        let mut by_ip6 = HashMap::new();
        let mut by_addr = HashMap::with_capacity(peers.len());
        for p in peers {
            if let Some(ip) = p.tunnel_ipv4 {
                by_ip.insert(ip, p.clone());
            }
            if let Some(ip) = p.tunnel_ipv6 {
                by_ip6.insert(ip, p.clone());
            }
            by_addr.insert(**p.remote.load(), p.clone());
            by_id.insert(p.peer_id, p);
        }
        let client_default = client_default.and_then(|id| by_id.get(&id).cloned());
        let generation = self.inner.snap.load().generation + 1;
        self.inner.snap.store(Arc::new(Snapshot {
            generation,
            by_id: Arc::new(by_id),
            by_ip: Arc::new(by_ip),
            by_ip6: Arc::new(by_ip6),
            by_addr: Arc::new(by_addr),
            iroutes: Arc::new(iroutes),
            client_default,
        }));
    }

    fn current(&self) -> Vec<Arc<Peer>> {
        self.inner.snap.load().by_id.values().cloned().collect()
    }

    /// Add a peer or replace its remote address and IPv4 route (keys,
    /// counters and an IPv6 route set with [`PeerTable::set_peer_ipv6`] are kept).
    pub fn upsert_peer(&self, peer_id: u32, remote: SocketAddr, tunnel_ipv4: Option<Ipv4Addr>) {
        let def = self.lock();
        let mut peers = self.current();
        let now = now_nanos();
        let new = match peers.iter().position(|p| p.peer_id == peer_id) {
            Some(i) => {
                let old = peers.swap_remove(i);
                let mut new = old.with_routes(remote, tunnel_ipv4, old.tunnel_ipv6);
                if tunnel_ipv4 != old.tunnel_ipv4 {
                    new.claim = self.next_claim();
                }
                new
            }
            None => {
                let c = PeerCounters::default();
                c.last_rx.store(now, Ordering::Relaxed);
                c.last_tx.store(now, Ordering::Relaxed);
                Peer {
                    peer_id,
                    remote: ArcSwap::from_pointee(remote),
                    tunnel_ipv4,
                    tunnel_ipv6: None,
                    keys: ArcSwap::from_pointee(KeySet::default()),
                    counters: Arc::new(c),
                    needs_renegotiation: Arc::new(AtomicBool::new(false)),
                    compression: Framing::None,
                    reads_one_by_one: false,
                    last_float: Arc::new(AtomicU64::new(0)),
                    iroutes: Arc::new([]),
                    iroutes_v6: Arc::new([]),
                    claim: self.next_claim(),
                    fragments: Arc::new(crate::worker::PeerFragments::new()),
                }
            }
        };
        peers.push(Arc::new(new));
        self.publish(peers, *def);
    }

    /// Route IPv6 packets for `addr` to this peer, and accept IPv6 packets from
    /// it only with that source (`None`: the peer sends and receives no IPv6 in
    /// server mode). No effect on unknown peers.
    pub fn set_peer_ipv6(&self, peer_id: u32, addr: Option<Ipv6Addr>) {
        self.replace_peer(peer_id, |p| p.tunnel_ipv6 = addr);
    }

    /// Route these networks (`iroute`) to the peer and accept them as
    /// sources from it, replacing the ones it had; the peer claims them
    /// (and its address) anew. No effect on unknown peers.
    pub fn set_peer_iroutes(&self, peer_id: u32, networks: &[Ipv4Prefix]) {
        self.replace_peer(peer_id, |p| {
            p.iroutes = networks.into();
            p.claim = self.next_claim();
        });
    }

    /// Route these IPv6 networks (`iroute-ipv6`) to the peer and accept
    /// them as sources from it, replacing the ones it had; the peer claims
    /// them (and its addresses) anew, as [`PeerTable::set_peer_iroutes`].
    /// No effect on unknown peers.
    pub fn set_peer_iroutes_v6(&self, peer_id: u32, networks: &[Ipv6Prefix]) {
        self.replace_peer(peer_id, |p| {
            p.iroutes_v6 = networks.into();
            p.claim = self.next_claim();
        });
    }

    /// Frame this peer's payloads with `framing` from now on; set it before
    /// the peer's first key so that no packet leaves without it.
    pub fn set_compression(&self, peer_id: u32, framing: Framing) {
        self.replace_peer(peer_id, |p| p.compression = framing);
    }

    /// Whether this peer reads one datagram per system call
    /// ([`Peer::reads_one_by_one`]; false for a new peer).
    pub fn set_reads_one_by_one(&self, peer_id: u32, one_by_one: bool) {
        self.replace_peer_where(
            peer_id,
            |p| p.reads_one_by_one != one_by_one,
            |p| p.reads_one_by_one = one_by_one,
        );
    }

    /// Publish a copy of peer `peer_id` (sharing its keys and counters)
    /// that `change` altered. No effect on unknown peers.
    fn replace_peer(&self, peer_id: u32, change: impl FnOnce(&mut Peer)) {
        self.replace_peer_where(peer_id, |_| true, change);
    }

    /// [`PeerTable::replace_peer`] only when the peer as it is now is
    /// `wanted` (nothing is published otherwise).
    fn replace_peer_where(
        &self,
        peer_id: u32,
        wanted: impl FnOnce(&Peer) -> bool,
        change: impl FnOnce(&mut Peer),
    ) {
        let def = self.lock();
        let mut peers = self.current();
        let Some(i) = peers.iter().position(|p| p.peer_id == peer_id) else {
            return;
        };
        if !wanted(&peers[i]) {
            return;
        }
        let old = peers.swap_remove(i);
        let mut new = old.with_routes(**old.remote.load(), old.tunnel_ipv4, old.tunnel_ipv6);
        change(&mut new);
        peers.push(Arc::new(new));
        self.publish(peers, *def);
    }

    pub fn remove_peer(&self, peer_id: u32) {
        let def = self.lock();
        let mut peers = self.current();
        peers.retain(|p| p.peer_id != peer_id);
        self.publish(peers, *def);
    }

    /// Install (or replace) key `key_id`: packets under it are accepted at once.
    pub fn install_key(&self, peer_id: u32, key_id: u8, keys: DataKeys) {
        let _g = self.lock();
        let window = self.inner.replay_window.load(Ordering::Relaxed);
        if let Some(p) = self.inner.snap.load().by_id.get(&peer_id) {
            let mut ks = KeySet::clone(&p.keys.load());
            ks.slots[usize::from(key_id & 7)] =
                Some(Arc::new(KeyState::new(key_id & 7, keys, window)));
            p.keys.store(Arc::new(ks));
        }
    }

    /// Send with `key_id` from now on (it must have been installed).
    pub fn set_send_key(&self, peer_id: u32, key_id: u8) {
        let _g = self.lock();
        if let Some(p) = self.inner.snap.load().by_id.get(&peer_id) {
            let mut ks = KeySet::clone(&p.keys.load());
            ks.send = Some(key_id & 7);
            p.needs_renegotiation.store(false, Ordering::Relaxed);
            p.keys.store(Arc::new(ks));
        }
    }

    /// Forget `key_id` (it is neither accepted nor used for sending afterwards).
    pub fn retire_key(&self, peer_id: u32, key_id: u8) {
        let _g = self.lock();
        if let Some(p) = self.inner.snap.load().by_id.get(&peer_id) {
            let mut ks = KeySet::clone(&p.keys.load());
            ks.slots[usize::from(key_id & 7)] = None;
            if ks.send == Some(key_id & 7) {
                ks.send = None;
            }
            p.keys.store(Arc::new(ks));
        }
    }

    pub fn peer_stats(&self, peer_id: u32) -> Option<PeerStats> {
        let snap = self.inner.snap.load();
        let p = snap.by_id.get(&peer_id)?;
        let c = &p.counters;
        Some(PeerStats {
            last_rx: nanos_to_instant(c.last_rx.load(Ordering::Relaxed)),
            last_tx: nanos_to_instant(c.last_tx.load(Ordering::Relaxed)),
            rx_bytes: c.rx_bytes.load(Ordering::Relaxed),
            rx_packets: c.rx_packets.load(Ordering::Relaxed),
            tx_bytes: c.tx_bytes.load(Ordering::Relaxed),
            tx_packets: c.tx_packets.load(Ordering::Relaxed),
            replay_drops: c.replay_drops.load(Ordering::Relaxed),
            auth_failures: c.auth_failures.load(Ordering::Relaxed),
            tx_drops: c.tx_drops.load(Ordering::Relaxed),
            rx_keepalive_bytes: c.rx_keepalive_bytes.load(Ordering::Relaxed),
            tx_keepalive_bytes: c.tx_keepalive_bytes.load(Ordering::Relaxed),
            rx_link_bytes: c.rx_link_bytes.load(Ordering::Relaxed),
            tx_link_bytes: c.tx_link_bytes.load(Ordering::Relaxed),
            needs_renegotiation: p.needs_renegotiation.load(Ordering::Relaxed),
        })
    }

    /// Client mode: send every TUN packet to this peer (`None`: route by tunnel address).
    pub fn set_client_default(&self, peer_id: Option<u32>) {
        let mut def = self.lock();
        *def = peer_id;
        let peers = self.current();
        self.publish(peers, peer_id);
    }

    /// A worker saw an authenticated DATA_V2 packet of `peer_id` from
    /// `new_remote` at `now` ([`now_nanos`]). The checks run on the current
    /// snapshot without the writer lock, so refused floats cost no more than
    /// a few map lookups; a float that passes them replaces `by_addr` only.
    pub(crate) fn record_float(
        &self,
        peer_id: u32,
        new_remote: SocketAddr,
        now: u64,
    ) -> FloatOutcome {
        {
            let snap = self.inner.snap.load();
            let Some(p) = snap.by_id.get(&peer_id) else {
                return FloatOutcome::Unchanged;
            };
            if let Some(refused) = float_refused(&snap, p, new_remote) {
                return refused;
            }
            // Claim this interval's float; of two workers racing, one wins.
            let last = p.last_float.load(Ordering::Relaxed);
            if last != 0 && now.saturating_sub(last) < FLOAT_INTERVAL.as_nanos() as u64 {
                return FloatOutcome::RateLimited;
            }
            if p.last_float
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
            {
                return FloatOutcome::RateLimited;
            }
        }
        let _def = self.lock();
        // The control plane may have changed the table since: check again.
        let old = self.inner.snap.load_full();
        let Some(p) = old.by_id.get(&peer_id) else {
            return FloatOutcome::Unchanged;
        };
        if let Some(refused) = float_refused(&old, p, new_remote) {
            return refused;
        }
        let prev = **p.remote.load();
        let mut by_addr = HashMap::clone(&old.by_addr);
        if by_addr.get(&prev).is_some_and(|o| Arc::ptr_eq(o, p)) {
            by_addr.remove(&prev);
        }
        by_addr.insert(new_remote, p.clone());
        p.remote.store(Arc::new(new_remote));
        self.inner.snap.store(Arc::new(Snapshot {
            generation: old.generation + 1,
            by_id: old.by_id.clone(),
            by_ip: old.by_ip.clone(),
            by_ip6: old.by_ip6.clone(),
            by_addr: Arc::new(by_addr),
            iroutes: old.iroutes.clone(),
            client_default: old.client_default.clone(),
        }));
        FloatOutcome::Moved
    }
}

/// Why `peer` may not float to `new_remote`, if it may not.
fn float_refused(snap: &Snapshot, peer: &Peer, new_remote: SocketAddr) -> Option<FloatOutcome> {
    if **peer.remote.load() == new_remote {
        return Some(FloatOutcome::Unchanged);
    }
    if snap
        .by_addr
        .get(&new_remote)
        .is_some_and(|other| other.peer_id != peer.peer_id)
    {
        return Some(FloatOutcome::AddressTaken);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovpn_proto::data::{Cipher, KeyBlock, Side};

    fn keys() -> DataKeys {
        DataKeys::from_key_block(Cipher::Aes256Gcm, &KeyBlock([7; 256]), Side::Server)
    }

    #[test]
    fn upsert_routes_and_remove() {
        let t = PeerTable::new();
        let a: SocketAddr = "192.0.2.1:1194".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:1194".parse().unwrap();
        t.upsert_peer(1, a, Some(Ipv4Addr::new(10, 8, 0, 2)));
        t.upsert_peer(2, b, Some(Ipv4Addr::new(10, 8, 0, 3)));
        let s = t.load();
        assert_eq!(s.by_ip[&Ipv4Addr::new(10, 8, 0, 2)].peer_id, 1);
        assert_eq!(s.by_addr[&b].peer_id, 2);
        drop(s);
        // Replacing routes drops the old address route.
        t.upsert_peer(1, a, Some(Ipv4Addr::new(10, 8, 0, 9)));
        let s = t.load();
        assert!(!s.by_ip.contains_key(&Ipv4Addr::new(10, 8, 0, 2)));
        assert_eq!(s.by_ip[&Ipv4Addr::new(10, 8, 0, 9)].peer_id, 1);
        drop(s);
        t.set_client_default(Some(2));
        assert_eq!(t.load().client_default.as_ref().map(|p| p.peer_id), Some(2));
        t.remove_peer(2);
        assert!(t.load().client_default.is_none());
        assert!(t.peer_stats(2).is_none());
        let st = t.peer_stats(1).unwrap();
        assert!(st.rx_idle() < Duration::from_secs(5));
        assert!(!st.needs_renegotiation);
        t.set_peer_ipv6(1, Some("fd00::2".parse().unwrap()));
        assert_eq!(
            t.load().by_ip6[&"fd00::2".parse::<Ipv6Addr>().unwrap()].peer_id,
            1
        );
        t.upsert_peer(1, a, Some(Ipv4Addr::new(10, 8, 0, 9)));
        assert_eq!(
            t.load().by_id[&1].tunnel_ipv6,
            Some("fd00::2".parse().unwrap())
        );
        // b belongs to peer 2: refused, peer 2 keeps it.
        t.upsert_peer(2, b, None);
        assert_eq!(t.record_float(1, b, 1), FloatOutcome::AddressTaken);
        assert_eq!(t.load().by_addr[&b].peer_id, 2);
        t.remove_peer(2);
        let gen_before = t.generation();
        assert_eq!(t.record_float(1, b, 1), FloatOutcome::Moved);
        assert_eq!(t.generation(), gen_before + 1);
        assert_eq!(t.load().by_addr[&b].peer_id, 1);
        assert!(!t.load().by_addr.contains_key(&a));
        assert_eq!(t.record_float(1, b, 2), FloatOutcome::Unchanged);
        // Back to a within the interval: refused; after it: moves.
        assert_eq!(t.record_float(1, a, 2), FloatOutcome::RateLimited);
        let later = 1 + FLOAT_INTERVAL.as_nanos() as u64;
        assert_eq!(t.record_float(1, a, later), FloatOutcome::Moved);
        assert_eq!(**t.load().by_id[&1].remote.load(), a);
    }

    #[test]
    fn keys_install_send_retire_and_counter() {
        let k = keys();
        let t = PeerTable::new();
        t.upsert_peer(5, "192.0.2.1:1".parse().unwrap(), None);
        t.install_key(5, 1, k);
        let p = t.load().by_id[&5].clone();
        assert!(p.keys.load().get(1).is_some());
        assert!(p.keys.load().send_key().is_none());
        t.set_send_key(5, 1);
        let ks = p.keys.load_full();
        let key = ks.send_key().unwrap();
        assert_eq!(key.reserve_ids(3), (Some(1), false));
        assert_eq!(key.reserve_ids(1), (Some(4), false));
        key.send_next.store(RENEGOTIATE_AT - 1, Ordering::Relaxed);
        assert_eq!(key.reserve_ids(2), (Some(0xFEFF_FFFF), true));
        key.send_next.store(MAX_PACKET_ID, Ordering::Relaxed);
        assert_eq!(key.reserve_ids(1), (Some(u32::MAX), true));
        assert_eq!(key.reserve_ids(1), (None, true));
        // Upsert keeps keys.
        t.upsert_peer(5, "192.0.2.1:2".parse().unwrap(), None);
        assert!(t.load().by_id[&5].keys.load().send_key().is_some());
        t.retire_key(5, 1);
        assert!(t.load().by_id[&5].keys.load().get(1).is_none());
        assert!(t.load().by_id[&5].keys.load().send.is_none());
    }
}
