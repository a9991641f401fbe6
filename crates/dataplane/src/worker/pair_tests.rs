//! Two workers, a server's and a client's, joined by the in-memory TUN
//! queues and datagram link (`tun::memory`, `udp::memory`): the whole
//! worker path (TUN read, GSO split, route, seal, `sendmmsg` runs, GRO
//! receive, open, replay check, TUN write with coalescing) without root.
//! The test drives both workers in turn (`Pair::drive`), so nothing here
//! depends on timing. The stream (TCP) pair, over in-memory connections,
//! is in `stream_loop/tests.rs` and shares the helpers here.

use std::net::SocketAddr;

use ferrovpn_proto::data::{Cipher, DataKeys, KeyBlock, Side, parse_data_header};
use tun_rs::{VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_LEN, VirtioNetHdr};

use super::*;
use crate::tun::{MemoryTun, TunOffloads};
use crate::udp::memory::{Datagram, Impairment, MemoryLink};
use crate::udp::{self, Port};

/// The client's peer id on the server (and the one it writes in P_DATA_V2).
pub(super) const PEER_ID: u32 = 1;
pub(super) const SERVER_TUN_IP: [u8; 4] = [10, 8, 0, 1];
pub(super) const CLIENT_TUN_IP: [u8; 4] = [10, 8, 0, 2];

/// One end: its worker, the test's side of its TUN queue, its peer table.
struct Node {
    worker: Worker,
    tun: MemoryTun,
    sh: Arc<Shared>,
    addr: SocketAddr,
    /// The client's peer id (on both ends).
    peer_id: u32,
    _up: crate::UpReceiver,
}

struct Pair {
    server: Node,
    client: Node,
    link: MemoryLink,
}

/// What one worker of a test pair shares: `peers`, and `streams` for a
/// stream worker.
pub(super) fn shared(
    peers: PeerTable,
    streams: Option<Arc<crate::stream::Streams>>,
    server_source_only: bool,
) -> (Arc<Shared>, crate::UpReceiver) {
    let (tx, rx) = crate::up::queues(64, 1);
    let sh = Arc::new(Shared {
        peers,
        up: tx,
        counters: Arc::new(GlobalCounters::default()),
        workers: (0..1).map(|_| WorkerCounters::default()).collect(),
        client_to_client: false,
        mss: None,
        mss_cbc: None,
        stop: AtomicBool::new(false),
        wake: EventFd::new().expect("eventfd"),
        streams,
        fragment: None,
        passtos: false,
        server_source_only,
        link: Some(Arc::new(crate::LinkCounters::default())),
        handoff: None,
    });
    (sh, rx)
}

/// The server's and the client's peer tables: the client known by
/// `peer_id` (and its address), both with one AEAD key (key id 0) from the
/// same key block, as a TLS handshake leaves them.
pub(super) fn peer_tables(
    peer_id: u32,
    server_addr: SocketAddr,
    client_addr: SocketAddr,
) -> (PeerTable, PeerTable) {
    let block = KeyBlock(std::array::from_fn(|i| (i * 7 + 3) as u8));
    let keys = |side| DataKeys::from_key_block(Cipher::Aes256Gcm, &block, side);

    let server_peers = PeerTable::new();
    server_peers.upsert_peer(peer_id, client_addr, Some(CLIENT_TUN_IP.into()));
    server_peers.install_key(peer_id, 0, keys(Side::Server));
    server_peers.set_send_key(peer_id, 0);

    let client_peers = PeerTable::new();
    client_peers.upsert_peer(peer_id, server_addr, None);
    client_peers.install_key(peer_id, 0, keys(Side::Client));
    client_peers.set_send_key(peer_id, 0);
    client_peers.set_client_default(Some(peer_id));
    (server_peers, client_peers)
}

fn node(
    peers: PeerTable,
    port: udp::memory::MemoryPort,
    offloads: TunOffloads,
    peer_id: u32,
    server_source_only: bool,
) -> Node {
    let (sh, rx) = shared(peers, None, server_source_only);
    let addr = port.local_addr();
    let (queue, tun) = crate::tun::create_memory(offloads);
    let link = Link::Udp {
        socket: Port::Memory(port),
        rx: true,
    };
    Node {
        worker: Worker::new(0, queue, link, true, sh.clone()),
        tun,
        sh,
        addr,
        peer_id,
        _up: rx,
    }
}

impl Pair {
    /// A server with one client, both with one AEAD key (key id 0) from the
    /// same key block, as a TLS handshake leaves them.
    fn new(offloads: TunOffloads) -> Pair {
        Pair::with_peer_id(offloads, PEER_ID)
    }

    /// The same with the client known by `peer_id` on both ends
    /// (`PEER_ID_UNDEFINED`: by its address, over P_DATA_V1).
    fn with_peer_id(offloads: TunOffloads, peer_id: u32) -> Pair {
        Pair::build(offloads, peer_id, false)
    }

    /// [`Pair::new`] with a client that has `float` (its socket hears every address).
    fn float_client(offloads: TunOffloads) -> Pair {
        Pair::build(offloads, PEER_ID, true)
    }

    fn build(offloads: TunOffloads, peer_id: u32, float: bool) -> Pair {
        let server_addr: SocketAddr = "192.0.2.1:1194".parse().unwrap();
        let client_addr: SocketAddr = "198.51.100.2:40000".parse().unwrap();
        let (server_port, client_port, link) = udp::memory::link(server_addr, client_addr);
        let (server_peers, client_peers) = peer_tables(peer_id, server_addr, client_addr);

        Pair {
            server: node(server_peers, server_port, offloads, peer_id, false),
            client: node(client_peers, client_port, offloads, peer_id, float),
            link,
        }
    }

    /// Run both workers until neither has anything left to do.
    fn drive(&mut self) {
        for _ in 0..100 {
            self.client.worker.pump();
            self.server.worker.pump();
            let idle = self.client.tun.unread() == 0
                && self.server.tun.unread() == 0
                && self.link.in_flight(self.client.addr) == 0
                && self.link.in_flight(self.server.addr) == 0;
            if idle {
                return;
            }
        }
        panic!("the pair did not settle in 100 rounds");
    }
}

impl Node {
    fn stats(&self) -> crate::PeerStats {
        self.sh
            .peers
            .peer_stats(self.peer_id)
            .expect("the peer exists")
    }

    fn counter(&self, pick: impl Fn(&GlobalCounters) -> &AtomicU64) -> u64 {
        pick(&self.sh.counters).load(Ordering::Relaxed)
    }
}

pub(super) fn no_offloads() -> TunOffloads {
    TunOffloads::default()
}

pub(super) fn tcp_offloads() -> TunOffloads {
    TunOffloads {
        tcp: true,
        udp: false,
    }
}

/// An IPv4 UDP packet from `src` to `dst` carrying `payload` (checksum left 0: allowed for UDP).
pub(super) fn udp4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 28 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&5000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5001u16.to_be_bytes());
    p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    p[28..].copy_from_slice(payload);
    p
}

/// A TSO super-packet as the kernel hands it to a TUN with offloads: a
/// `virtio_net_hdr` (TCPv4, segment size `mss`, partial checksum) and one
/// IPv4/TCP packet from the client's tunnel address with `payload`.
pub(super) fn tso_frame(payload: &[u8], mss: u16) -> Vec<u8> {
    let total = 40 + payload.len();
    let mut f = vec![0u8; VIRTIO_NET_HDR_LEN + total];
    VirtioNetHdr {
        flags: 1, // VIRTIO_NET_HDR_F_NEEDS_CSUM
        gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
        hdr_len: 40,
        gso_size: mss,
        csum_start: 20,
        csum_offset: 16,
    }
    .encode(&mut f)
    .unwrap();
    let p = &mut f[VIRTIO_NET_HDR_LEN..];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&CLIENT_TUN_IP);
    p[16..20].copy_from_slice(&SERVER_TUN_IP);
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&40000u16.to_be_bytes());
    t[2..4].copy_from_slice(&5201u16.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[8..12].copy_from_slice(&77u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x10; // ACK
    t[14..16].copy_from_slice(&1024u16.to_be_bytes());
    p[40..].copy_from_slice(payload);
    f
}

/// The packet id of a sealed datagram (cleartext in front of the ciphertext).
fn packet_id(d: &Datagram) -> u32 {
    parse_data_header(&d.bytes)
        .expect("a data packet")
        .packet_id
}

#[test]
fn single_packets_cross_both_ways() {
    let mut pair = Pair::new(no_offloads());
    let up = udp4(CLIENT_TUN_IP, SERVER_TUN_IP, b"hello server");
    let down = udp4(SERVER_TUN_IP, CLIENT_TUN_IP, b"hello client");
    assert!(pair.client.tun.inject(up.clone()));
    pair.drive();
    assert_eq!(pair.server.tun.take_written(), vec![up]);
    assert!(pair.server.tun.inject(down.clone()));
    pair.drive();
    assert_eq!(pair.client.tun.take_written(), vec![down]);
    let (s, c) = (pair.server.stats(), pair.client.stats());
    assert_eq!((s.rx_packets, s.tx_packets), (1, 1));
    assert_eq!((c.rx_packets, c.tx_packets), (1, 1));
    assert_eq!(s.auth_failures + s.replay_drops + c.auth_failures, 0);
}

/// The link counters count every datagram whole, data and control alike,
/// on both ends: what one side wrote is what the other read.
#[test]
fn link_bytes_count_every_datagram_on_both_ends() {
    let mut pair = Pair::new(no_offloads());
    // Ten of a size (one GSO run) and one smaller.
    for i in 0..10u8 {
        assert!(
            pair.client
                .tun
                .inject(udp4(CLIENT_TUN_IP, SERVER_TUN_IP, &[i; 1000]))
        );
    }
    assert!(
        pair.client
            .tun
            .inject(udp4(CLIENT_TUN_IP, SERVER_TUN_IP, b"x"))
    );
    pair.client.worker.pump();
    let wire = pair.link.take(pair.server.addr);
    assert_eq!(wire.len(), 11);
    let sent: u64 = wire.iter().map(|d| d.bytes.len() as u64).sum();
    let link = |n: &Node| n.sh.link.as_ref().expect("counted").get();
    assert_eq!(link(&pair.client), (0, sent));
    // A control packet (P_CONTROL_V1, key id 0) is read like data.
    let control = Datagram {
        src: pair.client.addr,
        bytes: vec![0x20; 60],
    };
    pair.link
        .inject(pair.server.addr, wire.into_iter().chain([control]));
    pair.drive();
    assert_eq!(link(&pair.server), (sent + 60, 0));
}

#[test]
fn a_64k_super_packet_is_segmented_sealed_and_arrives_coalesced() {
    let mut pair = Pair::new(tcp_offloads());
    let (mss, segments, payload) = super_packet_payload();
    assert!(pair.client.tun.inject(tso_frame(&payload, mss)));
    // One worker round: the frame is split, sealed and sent.
    pair.client.worker.pump();
    let wire = pair.link.take(pair.server.addr);
    assert_eq!(wire.len(), segments, "one datagram per segment");
    // 1424-byte datagrams: 46 fit in one 64 KiB GSO run, 2 in the next.
    assert_eq!(pair.link.gso_runs(), (2, 0));
    assert!(wire.iter().all(|d| d.bytes.len() == wire[0].bytes.len()));
    pair.link.inject(pair.server.addr, wire);
    pair.drive();
    assert_one_super_packet(&pair.server.tun.take_written(), &payload, mss);
    assert_eq!(pair.server.stats().rx_packets, segments as u64);
    assert_eq!(pair.client.stats().tx_packets, segments as u64);
}

/// A 64 KiB TSO payload: its segment size, its segment count and the bytes.
pub(super) fn super_packet_payload() -> (u16, usize, Vec<u8>) {
    let mss = 1360u16;
    let segments = 48;
    let payload = (0..usize::from(mss) * segments)
        .map(|i| (i * 31 % 251) as u8)
        .collect();
    (mss, segments, payload)
}

/// What the receiving TUN got is one TCP super-packet from the client to
/// the server of segment size `mss`, carrying `payload` whole and in order.
pub(super) fn assert_one_super_packet(written: &[Vec<u8>], payload: &[u8], mss: u16) {
    assert_eq!(
        written.len(),
        1,
        "the segments are written as one super-packet"
    );
    let frame = &written[0];
    let hdr = VirtioNetHdr::decode(frame).unwrap();
    assert_eq!(hdr.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
    assert_eq!(hdr.gso_size, mss);
    let ip = &frame[VIRTIO_NET_HDR_LEN..];
    assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), ip.len());
    assert_eq!(&ip[12..20], &[CLIENT_TUN_IP, SERVER_TUN_IP].concat()[..]);
    assert_eq!(&ip[40..], payload, "the payload arrives whole and in order");
}

#[test]
fn a_duplicated_datagram_is_dropped_and_counted() {
    let mut pair = Pair::new(no_offloads());
    let pkt = udp4(CLIENT_TUN_IP, SERVER_TUN_IP, b"once");
    pair.client.tun.inject(pkt.clone());
    pair.client.worker.pump();
    let wire = pair.link.take(pair.server.addr);
    assert_eq!(wire.len(), 1);
    pair.link
        .inject(pair.server.addr, [wire[0].clone(), wire[0].clone()]);
    pair.drive();
    assert_eq!(pair.server.tun.take_written(), vec![pkt]);
    assert_eq!(pair.server.stats().replay_drops, 1);
    assert_eq!(pair.server.stats().rx_packets, 1);
}

#[test]
fn a_datagram_naming_an_unknown_peer_id_is_dropped() {
    let mut pair = Pair::new(no_offloads());
    pair.client
        .tun
        .inject(udp4(CLIENT_TUN_IP, SERVER_TUN_IP, b"who am I"));
    pair.client.worker.pump();
    let mut wire = pair.link.take(pair.server.addr);
    assert_eq!(wire.len(), 1);
    // P_DATA_V2: opcode and key id, then the 24-bit peer id.
    wire[0].bytes[1..4].copy_from_slice(&[0, 0, 7]);
    pair.link.inject(pair.server.addr, wire);
    pair.drive();
    assert!(pair.server.tun.take_written().is_empty());
    assert_eq!(pair.server.counter(|c| &c.unknown_peer), 1);
    assert_eq!(pair.server.stats().rx_packets, 0);
}

#[test]
fn packet_ids_leave_in_order_and_reordered_ones_are_accepted_once() {
    let mut pair = Pair::new(no_offloads());
    let packets: Vec<Vec<u8>> = (0..30u8)
        .map(|i| udp4(CLIENT_TUN_IP, SERVER_TUN_IP, &[i; 100]))
        .collect();
    // Three batches of ten.
    let mut wire = Vec::new();
    for batch in packets.chunks(10) {
        for p in batch {
            pair.client.tun.inject(p.clone());
        }
        pair.client.worker.pump();
        wire.extend(pair.link.take(pair.server.addr));
    }
    let ids: Vec<u32> = wire.iter().map(packet_id).collect();
    assert_eq!(ids, (1..=30).collect::<Vec<u32>>());
    // Delivered backwards, each once; the first again is a replay.
    let mut backwards = wire.clone();
    backwards.reverse();
    backwards.push(wire[0].clone());
    pair.link.inject(pair.server.addr, backwards);
    pair.drive();
    let mut got = pair.server.tun.take_written();
    assert_eq!(got.len(), 30);
    got.reverse();
    assert_eq!(got, packets);
    assert_eq!(pair.server.stats().replay_drops, 1);
}

#[test]
fn loss_and_reordering_on_the_link_deliver_each_packet_at_most_once() {
    let mut pair = Pair::new(no_offloads());
    pair.link.impair(
        pair.server.addr,
        Impairment {
            loss_one_in: 7,
            reorder_one_in: 3,
            seed: 42,
        },
    );
    let sent = 200usize;
    for i in 0..sent {
        let tag = (i as u16).to_be_bytes();
        pair.client
            .tun
            .inject(udp4(CLIENT_TUN_IP, SERVER_TUN_IP, &[tag[0], tag[1], 0xee]));
    }
    pair.drive();
    let lost = pair.link.dropped(pair.server.addr) as usize;
    assert!(lost > 0, "the impairment dropped something");
    let got = pair.server.tun.take_written();
    assert_eq!(got.len(), sent - lost);
    let mut tags: Vec<u16> = got
        .iter()
        .map(|p| u16::from_be_bytes([p[28], p[29]]))
        .collect();
    tags.sort_unstable();
    tags.dedup();
    assert_eq!(tags.len(), sent - lost, "no packet arrived twice");
    assert_eq!(pair.server.stats().replay_drops, 0);
}

/// A kernel that refuses UDP GSO (EIO): the sender falls back to one
/// datagram per message and nothing is lost.
#[test]
fn a_link_refusing_gso_still_carries_every_datagram() {
    let mut pair = Pair::new(tcp_offloads());
    pair.link.set_refuse_gso(pair.client.addr, true);
    let payload = vec![0x5a; 1360 * 10];
    pair.client.tun.inject(tso_frame(&payload, 1360));
    pair.drive();
    let written = pair.server.tun.take_written();
    assert_eq!(written.len(), 1);
    assert_eq!(&written[0][VIRTIO_NET_HDR_LEN + 40..], &payload[..]);
    assert_eq!(pair.client.counter(|c| &c.udp_send_dropped), 0);
    // Refused once; the sender then stops trying GSO on this port.
    assert_eq!(pair.link.gso_runs(), (0, 1));
}

/// A peer without a peer id is known by its address and gets P_DATA_V1.
#[test]
fn a_peer_without_a_peer_id_exchanges_p_data_v1_both_ways() {
    let mut pair = Pair::with_peer_id(no_offloads(), ferrovpn_proto::wire::PEER_ID_UNDEFINED);
    let up = udp4(CLIENT_TUN_IP, SERVER_TUN_IP, b"v1 up");
    let down = udp4(SERVER_TUN_IP, CLIENT_TUN_IP, b"v1 down");
    let (server_addr, client_addr) = (pair.server.addr, pair.client.addr);
    for (from, to, pkt) in [
        (&mut pair.client, server_addr, &up),
        (&mut pair.server, client_addr, &down),
    ] {
        from.tun.inject(pkt.clone());
        from.worker.pump();
        let wire = pair.link.take(to);
        assert_eq!(wire.len(), 1);
        let header = parse_data_header(&wire[0].bytes).unwrap();
        assert_eq!(header.opcode, ferrovpn_proto::wire::Opcode::DataV1);
        assert_eq!(header.peer_id, None);
        pair.link.inject(to, wire);
    }
    pair.drive();
    assert_eq!(pair.server.tun.take_written(), vec![up]);
    assert_eq!(pair.client.tun.take_written(), vec![down]);
}

/// `count` packets from the client, sealed and taken off the link unsent.
fn client_datagrams(pair: &mut Pair, count: u8, tag: u8) -> Vec<Datagram> {
    for i in 0..count {
        pair.client
            .tun
            .inject(udp4(CLIENT_TUN_IP, SERVER_TUN_IP, &[tag, i]));
    }
    pair.client.worker.pump();
    let wire = pair.link.take(pair.server.addr);
    assert_eq!(wire.len(), usize::from(count));
    wire
}

/// The server loads a peer's keys once per receive batch: a key installed
/// or retired between two batches is in force for the whole next batch, and
/// one batch opening packets under two keys checks each against its own
/// replay window (the same packet id under another key is no replay).
#[test]
fn a_key_change_between_batches_holds_for_the_next_batch_and_replay_stays_per_key() {
    let mut pair = Pair::new(no_offloads());
    let key0 = client_datagrams(&mut pair, 4, 0);
    // Batch 1: key 0 only.
    pair.link.inject(pair.server.addr, key0[..2].to_vec());
    pair.server.worker.pump();
    assert_eq!(pair.server.tun.take_written().len(), 2);

    // Rekey to key 1 (another key block) on both ends, the client sends with it.
    let block = KeyBlock(std::array::from_fn(|i| (i * 13 + 5) as u8));
    let keys = |side| DataKeys::from_key_block(Cipher::Aes256Gcm, &block, side);
    pair.server
        .sh
        .peers
        .install_key(PEER_ID, 1, keys(Side::Server));
    pair.client
        .sh
        .peers
        .install_key(PEER_ID, 1, keys(Side::Client));
    pair.client.sh.peers.set_send_key(PEER_ID, 1);
    let key1 = client_datagrams(&mut pair, 3, 1);
    let ids: Vec<u32> = key1.iter().map(packet_id).collect();
    assert_eq!(ids, [1, 2, 3], "a new key counts from 1");

    // Batch 2: key 1's packets, a late one of key 0 with an id key 1 used
    // too, and a duplicate of key 1's first.
    pair.link.inject(
        pair.server.addr,
        [
            key1[0].clone(),
            key0[2].clone(),
            key1[1].clone(),
            key1[2].clone(),
            key1[0].clone(),
        ],
    );
    pair.server.worker.pump();
    assert_eq!(pair.server.tun.take_written().len(), 4);
    let s = pair.server.stats();
    assert_eq!((s.rx_packets, s.replay_drops, s.auth_failures), (6, 1, 0));

    // Key 0 retired between batches: its last packet is refused.
    pair.server.sh.peers.retire_key(PEER_ID, 0);
    pair.link.inject(pair.server.addr, [key0[3].clone()]);
    pair.server.worker.pump();
    assert!(pair.server.tun.take_written().is_empty());
    let s = pair.server.stats();
    assert_eq!((s.rx_packets, s.auth_failures), (6, 1));
}

/// A client with `float` hears every address, but takes data packets only
/// from the server's: one from anywhere else is dropped unopened, authentic
/// or forged, and never moves the server's address (2.6 moves a client only
/// with a new session, never on data).
#[test]
fn a_float_client_takes_data_only_from_the_servers_address() {
    let mut pair = Pair::float_client(no_offloads());
    let down = udp4(SERVER_TUN_IP, CLIENT_TUN_IP, b"from the server");
    assert!(pair.server.tun.inject(down.clone()));
    pair.server.worker.pump();
    let wire = pair.link.take(pair.client.addr);
    assert_eq!(wire.len(), 1);
    let elsewhere: SocketAddr = "203.0.113.9:1194".parse().unwrap();
    let replayed = Datagram {
        src: elsewhere,
        bytes: wire[0].bytes.clone(),
    };
    let mut forged = replayed.clone();
    let last = forged.bytes.len() - 1;
    forged.bytes[last] ^= 1;
    pair.link.inject(pair.client.addr, [replayed, forged]);
    pair.drive();
    assert!(pair.client.tun.take_written().is_empty());
    assert_eq!(pair.client.counter(|c| &c.not_from_server), 2);
    let server_addr = pair.server.addr;
    let remote = || **pair.client.sh.peers.load().by_id[&PEER_ID].remote.load();
    assert_eq!(remote(), server_addr, "the server's address did not move");
    // From the server's address the same datagram still counts: the
    // dropped copy used up neither its packet id nor anything else.
    pair.link.inject(pair.client.addr, wire);
    pair.drive();
    assert_eq!(pair.client.tun.take_written(), vec![down]);
    let c = pair.client.stats();
    assert_eq!((c.rx_packets, c.auth_failures, c.replay_drops), (1, 0, 0));
    assert_eq!(pair.client.counter(|c| &c.floats_refused), 0);
}

/// One turn of a server's loop sends a TUN batch and reads every datagram
/// queued for it up to about as many (one `recvmmsg` batch per turn left
/// stock clients' ACKs and pings waiting in the socket behind the bulk data).
#[test]
fn a_turn_reads_as_many_datagrams_as_it_sends() {
    let mut pair = Pair::new(no_offloads());
    // A stock client's datagrams arrive one by one (no GRO runs).
    pair.link.set_gro(pair.server.addr, false);
    let acks: Vec<Vec<u8>> = (0..8 * RX_MSGS)
        .map(|i| udp4(CLIENT_TUN_IP, SERVER_TUN_IP, &[i as u8; 12]))
        .collect();
    for p in &acks {
        assert!(pair.client.tun.inject(p.clone()));
    }
    pair.client.worker.pump();
    assert_eq!(pair.link.in_flight(pair.server.addr), acks.len());
    for i in 0..TUN_BATCH {
        let bulk = udp4(SERVER_TUN_IP, CLIENT_TUN_IP, &[i as u8; 1000]);
        assert!(pair.server.tun.inject(bulk));
    }
    let mut totals = Totals::default();
    assert!(pair.server.worker.turn(true, true, false, &mut totals).0);
    assert_eq!(pair.link.in_flight(pair.client.addr), TUN_BATCH);
    assert_eq!(
        pair.link.in_flight(pair.server.addr),
        0,
        "all read in one turn"
    );
    assert_eq!(pair.server.tun.take_written(), acks);
}

/// A server paced for a stock client's upload, as `run_udp` leaves it: each
/// TUN write of the client's data calls for an ACK at once (the kernel's
/// TCP receive inside the write), and the client sends one more datagram
/// meanwhile. Returns the datagrams left in the server's socket after one
/// wake-up, the server's `sendmmsg` calls, and the datagrams that reached
/// the client. `reply_len`: the size of what each write calls for, and of
/// the packet that waited in the TUN.
fn paced_upload_wake_up(paced: bool, reply_len: usize) -> (usize, u64, usize) {
    paced_wake_up(paced, false, reply_len)
}

/// [`paced_upload_wake_up`], paced as for a download when `acks_paced`.
fn paced_wake_up(paced: bool, acks_paced: bool, reply_len: usize) -> (usize, u64, usize) {
    let mut pair = Pair::new(no_offloads());
    pair.link.set_gro(pair.server.addr, false);
    let data = |i: usize| udp4(CLIENT_TUN_IP, SERVER_TUN_IP, &[i as u8; 1000]);
    // Twelve sealed datagrams: six queued at the wake-up, six arriving
    // during it, one per TUN write.
    for i in 0..12 {
        assert!(pair.client.tun.inject(data(i)));
    }
    pair.client.worker.pump();
    let mut sealed = pair.link.take(pair.server.addr);
    assert_eq!(sealed.len(), 12);
    let later: Vec<_> = sealed.split_off(6);
    pair.link.inject(pair.server.addr, sealed);
    let link = pair.link.clone();
    let server_addr = pair.server.addr;
    let mut later = later.into_iter();
    pair.server.tun.on_write(move |_| {
        link.inject(server_addr, later.next());
        Some(udp4(SERVER_TUN_IP, CLIENT_TUN_IP, &vec![0; reply_len - 28]))
    });
    // An ACK that gathered in the TUN while the worker waited.
    assert!(
        pair.server
            .tun
            .inject(udp4(SERVER_TUN_IP, CLIENT_TUN_IP, &vec![0; reply_len - 28]))
    );
    let sends_before = pair.link.send_calls(pair.server.addr);
    let mut totals = Totals::default();
    pair.server.worker.ib.woke(now_nanos());
    pair.server
        .worker
        .drain(true, true, paced, acks_paced, &mut totals);
    (
        pair.link.in_flight(pair.server.addr),
        pair.link.send_calls(pair.server.addr) - sends_before,
        pair.link.take(pair.client.addr).len(),
    )
}

/// Paced, a wake-up reads the socket once: the datagrams that come in
/// while it works wait for the next one, and the ACKs its writes called
/// for leave together, in one send.
#[test]
fn a_paced_wake_up_reads_the_socket_once_and_sends_the_acks_together() {
    let (left, sends, acks) = paced_upload_wake_up(true, 52);
    assert_eq!(
        left, 6,
        "the datagrams that came in during the wake-up wait"
    );
    assert_eq!(acks, 7);
    assert_eq!(sends, 1, "the waiting ACK and six new ones in one sendmmsg");
    // Unpaced (no stock peer's data flowing), every datagram is read at once.
    let (left, sends, acks) = paced_upload_wake_up(false, 52);
    assert_eq!((left, acks), (0, 13));
    assert!(sends > 1);
}

/// Paced, a TUN that gives data (not just ACKs) keeps the socket read in
/// the same wake-up, as before.
#[test]
fn a_paced_wake_up_reads_the_socket_again_while_the_tun_gives_data() {
    let (left, _, sent) = paced_upload_wake_up(true, 1028);
    assert_eq!((left, sent), (0, 13));
}

/// Paced for a download (`inbound::worth_pacing_acks`), a wake-up reads
/// the socket once even while the TUN gives data: what comes in meanwhile
/// waits for the next one; the TUN is still read until empty.
#[test]
fn a_download_paced_wake_up_reads_the_socket_once() {
    let (left, _, sent) = paced_wake_up(false, true, 1028);
    assert_eq!(
        left, 6,
        "the datagrams that came in during the wake-up wait"
    );
    assert_eq!(sent, 7, "every packet the TUN gave was sent");
}

/// What one wake-up of a server makes of six data datagrams of its client
/// that the link's GRO merged into one message, when the client is known
/// to send one datagram per packet (`stock`) or not: the sends it counts,
/// and whether it paces.
fn gro_merged_upload(stock: bool) -> (u64, bool) {
    let mut pair = Pair::new(no_offloads());
    pair.server.sh.peers.set_reads_one_by_one(PEER_ID, stock);
    for i in 0..6 {
        let data = udp4(CLIENT_TUN_IP, SERVER_TUN_IP, &[i as u8; 1000]);
        assert!(pair.client.tun.inject(data));
    }
    pair.client.worker.pump();
    assert_eq!(pair.link.in_flight(pair.server.addr), 6);
    let woke_at = now_nanos();
    pair.server.worker.ib.woke(woke_at);
    let mut totals = Totals::default();
    pair.server
        .worker
        .drain(true, true, false, false, &mut totals);
    assert_eq!(pair.server.tun.take_written().len(), 6);
    let now = pair.server.worker.ib.now;
    assert_eq!((now.datagrams, now.delivered), (6, 6));
    (now.sends, pair.server.worker.ib.worth_pacing(woke_at))
}

/// Behind a NIC with GRO a stock client's datagrams arrive merged, a few
/// per message: still one send each, and its upload is still paced. The
/// same message from a ferrovpn peer is one GSO run, never paced.
#[test]
fn a_stock_peers_gro_merged_datagrams_count_one_send_each_and_are_paced() {
    assert_eq!(gro_merged_upload(true), (6, true));
    assert_eq!(gro_merged_upload(false), (1, false));
}

/// A pure TCP ACK (IPv4, no options) from the client's tunnel address,
/// acknowledging `ack`.
fn tcp_ack(ack: u32) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&CLIENT_TUN_IP);
    p[16..20].copy_from_slice(&SERVER_TUN_IP);
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&5201u16.to_be_bytes());
    p[24..28].copy_from_slice(&7u32.to_be_bytes());
    p[28..32].copy_from_slice(&ack.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x10;
    p[34..36].copy_from_slice(&512u16.to_be_bytes());
    p
}

/// A stock client's run of ACKs, one datagram each and more than one
/// receive batch of them, reaches the ACK filter whole: the ACKs stay held
/// while the batches come back full, and only the last is written (written
/// after each full batch, one ACK per 8 went).
#[test]
fn a_run_of_acks_over_several_receive_batches_is_written_as_its_last() {
    let mut pair = Pair::new(no_offloads());
    pair.link.set_gro(pair.server.addr, false);
    let n = 3 * RX_MSGS + 2;
    let acks: Vec<Vec<u8>> = (0..n).map(|i| tcp_ack(1000 + 1448 * i as u32)).collect();
    for p in &acks {
        assert!(pair.client.tun.inject(p.clone()));
    }
    pair.client.worker.pump();
    assert_eq!(pair.link.in_flight(pair.server.addr), n);
    pair.server.worker.pump();
    assert_eq!(pair.server.tun.take_written(), vec![acks[n - 1].clone()]);
    assert_eq!(pair.server.counter(|c| &c.acks_superseded), n as u64 - 1);
}
