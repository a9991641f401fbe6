//! Two stream workers, a server's and a client's, joined by an in-memory
//! TUN queue each and one in-memory byte-stream connection
//! (`stream::memory`): the TCP worker path (TUN read, GSO split, seal,
//! length prefix, `writev`; read, deframe, open, replay check, TUN write
//! with coalescing; closing) without root. The test drives both workers in
//! turn (`StreamPair::drive`), and may take the bytes off the wire to cut
//! them, or play a hostile peer on a connection of its own.

use std::net::SocketAddr;

use super::*;
use crate::PeerTable;
use crate::stream::memory::{self, MemoryStream};
use crate::tun::{MemoryTun, TunOffloads};
use crate::up::MAX_CONTROL_DATAGRAM;
use crate::worker::pair_tests::{
    CLIENT_TUN_IP, PEER_ID, SERVER_TUN_IP, assert_one_super_packet, no_offloads, peer_tables,
    shared, super_packet_payload, tcp_offloads, tso_frame, udp4,
};

const SERVER_ADDR: &str = "192.0.2.1:1194";
const CLIENT_ADDR: &str = "198.51.100.2:40000";

/// One end: its worker and loop state, the test's side of its TUN queue,
/// its connections and what it reports up.
struct End {
    worker: Worker,
    st: StreamLoop,
    tun: MemoryTun,
    sh: Arc<crate::worker::Shared>,
    streams: Arc<Streams>,
    up: crate::UpReceiver,
}

fn end(peers: PeerTable, offloads: TunOffloads, client: bool) -> End {
    let (streams, mut inboxes) = Streams::new(1).expect("eventfds");
    let streams = Arc::new(streams);
    let inbox = inboxes.pop().expect("one inbox");
    let (sh, up) = shared(peers, Some(streams.clone()), false);
    let (queue, tun) = crate::tun::create_memory(offloads);
    let link = Link::Stream {
        inbox,
        client,
        udp: None,
    };
    End {
        worker: Worker::new(0, queue, link, true, sh.clone()),
        st: StreamLoop::default(),
        tun,
        sh,
        streams,
        up,
    }
}

impl End {
    fn pump(&mut self) {
        self.worker.pump_stream(&mut self.st);
    }

    /// The connections that ended since the last call: peer and reason.
    fn closed(&self) -> Vec<(SocketAddr, String)> {
        let mut out = Vec::new();
        while let Ok(ev) = self.up.try_recv() {
            if let crate::UpEvent::StreamClosed { from, reason } = ev {
                out.push((from, reason));
            }
        }
        out
    }

    fn stats(&self) -> crate::PeerStats {
        self.sh.peers.peer_stats(PEER_ID).expect("the peer exists")
    }

    /// A connection from `peer` whose other end the test holds.
    fn connect_from(&self, peer: SocketAddr) -> MemoryStream {
        let (mine, theirs) = memory::pair();
        self.streams
            .attach_memory(mine, peer, Some(0))
            .expect("the worker is there");
        theirs
    }
}

struct StreamPair {
    server: End,
    client: End,
    /// The connection's server end, for the test to look at or take the
    /// client's bytes off (`take_incoming`, `push_incoming`).
    at_server: MemoryStream,
    server_addr: SocketAddr,
    client_addr: SocketAddr,
}

impl StreamPair {
    /// A server with one client over one connection, both with the same
    /// AEAD key, as a TLS handshake leaves them.
    fn new(offloads: TunOffloads) -> StreamPair {
        let server_addr: SocketAddr = SERVER_ADDR.parse().unwrap();
        let client_addr: SocketAddr = CLIENT_ADDR.parse().unwrap();
        let (server_peers, client_peers) = peer_tables(PEER_ID, server_addr, client_addr);
        let server = end(server_peers, offloads, false);
        let client = end(client_peers, offloads, true);
        let (at_server, at_client) = memory::pair();
        server
            .streams
            .attach_memory(at_server.clone(), client_addr, Some(0))
            .unwrap();
        client
            .streams
            .attach_memory(at_client, server_addr, Some(0))
            .unwrap();
        StreamPair {
            server,
            client,
            at_server,
            server_addr,
            client_addr,
        }
    }

    /// Run both workers until neither has anything left to do.
    fn drive(&mut self) {
        for _ in 0..100 {
            self.client.pump();
            self.server.pump();
            let backlog = |e: &End, peer| e.streams.get(peer).map_or(0, |c| c.backlog());
            let idle = self.client.tun.unread() == 0
                && self.server.tun.unread() == 0
                && self.at_server.in_flight() == 0
                && backlog(&self.server, &self.client_addr) == 0
                && backlog(&self.client, &self.server_addr) == 0;
            if idle {
                return;
            }
        }
        panic!("the pair did not settle in 100 rounds");
    }

    /// The bytes the client's worker writes for `packet` from its TUN.
    fn client_frames(&mut self, packet: Vec<u8>) -> Vec<u8> {
        assert!(self.client.tun.inject(packet));
        self.client.pump();
        self.at_server.take_incoming()
    }
}

#[test]
fn single_packets_cross_both_ways() {
    let mut pair = StreamPair::new(no_offloads());
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
    assert!(pair.server.closed().is_empty() && pair.client.closed().is_empty());
}

#[test]
fn a_64k_super_packet_is_segmented_framed_and_arrives_coalesced() {
    let mut pair = StreamPair::new(tcp_offloads());
    let (mss, segments, payload) = super_packet_payload();
    assert!(pair.client.tun.inject(tso_frame(&payload, mss)));
    pair.drive();
    assert_one_super_packet(&pair.server.tun.take_written(), &payload, mss);
    assert_eq!(pair.server.stats().rx_packets, segments as u64);
    assert_eq!(pair.client.stats().tx_packets, segments as u64);
    assert_eq!(pair.server.worker.ib.stream_received, segments as u64);
}

/// Over TCP the writer counts each packet's 2-byte length prefix, the
/// reader does not (2.6 counts what `send` took and what the deframer
/// gave), so the reader counts 2 bytes fewer per packet.
#[test]
fn link_bytes_count_the_prefix_when_written_only() {
    let mut pair = StreamPair::new(no_offloads());
    let n = 5u64;
    for i in 0..n {
        let p = udp4(CLIENT_TUN_IP, SERVER_TUN_IP, &[i as u8; 100]);
        assert!(pair.client.tun.inject(p));
    }
    pair.drive();
    assert_eq!(pair.server.tun.take_written().len(), n as usize);
    let link = |e: &End| e.sh.link.as_ref().expect("counted").get();
    // P_DATA_V2 with AES-256-GCM: 24 bytes around each 128-byte packet.
    let packets = n * (128 + 24);
    assert_eq!(link(&pair.client), (0, packets + 2 * n));
    assert_eq!(link(&pair.server), (packets, 0));
}

/// More than the connection takes at once: the rest waits in the
/// client's backlog (its TUN is not read while the backlog is high), and
/// goes out as the server reads; nothing is dropped or reordered.
#[test]
fn a_full_connection_backs_up_and_drains_in_order() {
    let mut pair = StreamPair::new(no_offloads());
    let count = 1500usize;
    let packets: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            let tag = (i as u16).to_be_bytes();
            let mut payload = vec![0x77; 1400];
            payload[..2].copy_from_slice(&tag);
            udp4(CLIENT_TUN_IP, SERVER_TUN_IP, &payload)
        })
        .collect();
    for p in &packets {
        assert!(pair.client.tun.inject(p.clone()));
    }
    pair.client.pump();
    let backlog = pair
        .client
        .streams
        .get(&pair.server_addr)
        .unwrap()
        .backlog();
    assert!(
        backlog > crate::stream::BACKLOG_HIGH,
        "the connection is full: {backlog} bytes wait"
    );
    assert_eq!(pair.at_server.in_flight(), memory::STREAM_CAPACITY);
    assert!(
        pair.client.tun.unread() > 0,
        "the TUN waits for the backlog"
    );
    pair.drive();
    assert_eq!(pair.server.tun.take_written(), packets);
    assert_eq!(
        pair.client
            .sh
            .counters
            .stream_send_dropped
            .load(Ordering::Relaxed),
        0
    );
}

/// Reads that end inside a length prefix, right after it, or inside the
/// packet: the packet is handed on once, when its last byte arrived.
#[test]
fn a_frame_cut_anywhere_across_reads_arrives_once_whole() {
    let mut pair = StreamPair::new(no_offloads());
    let mut sent = Vec::new();
    for cut in [1usize, 2, 3, 40] {
        let pkt = udp4(CLIENT_TUN_IP, SERVER_TUN_IP, &[cut as u8; 60]);
        let wire = pair.client_frames(pkt.clone());
        let len = usize::from(u16::from_be_bytes([wire[0], wire[1]]));
        assert_eq!(wire.len(), 2 + len, "one frame: length prefix and packet");
        pair.at_server.push_incoming(&wire[..cut]);
        pair.server.pump();
        assert!(pair.server.tun.take_written().is_empty(), "cut at {cut}");
        pair.at_server.push_incoming(&wire[cut..]);
        pair.server.pump();
        assert_eq!(pair.server.tun.take_written(), vec![pkt.clone()]);
        sent.push(pkt);
    }
    // Two frames and the first byte of a third in one read, then the rest.
    let wire: Vec<u8> = sent
        .iter()
        .take(3)
        .flat_map(|p| pair.client_frames(p.clone()))
        .collect();
    // The three frames are the same size.
    let third = wire.len() / 3 * 2;
    pair.at_server.push_incoming(&wire[..third + 1]);
    pair.server.pump();
    assert_eq!(pair.server.tun.take_written(), sent[..2].to_vec());
    pair.at_server.push_incoming(&wire[third + 1..]);
    pair.server.pump();
    assert_eq!(pair.server.tun.take_written(), sent[2..3].to_vec());
    assert_eq!(pair.server.stats().rx_packets, 7);
    assert_eq!(pair.server.stats().replay_drops, 0);
    assert!(pair.server.closed().is_empty());
}

#[test]
fn a_peer_closing_mid_frame_ends_the_connection_without_a_packet() {
    let mut pair = StreamPair::new(no_offloads());
    let wire = pair.client_frames(udp4(CLIENT_TUN_IP, SERVER_TUN_IP, b"half of me"));
    pair.at_server.push_incoming(&wire[..wire.len() - 10]);
    pair.at_server.close_incoming();
    pair.server.pump();
    assert!(pair.server.tun.take_written().is_empty());
    assert_eq!(
        pair.server.closed(),
        vec![(
            pair.client_addr,
            "connection closed by the peer".to_string()
        )]
    );
    assert!(pair.server.streams.get(&pair.client_addr).is_none());
    // The server shut its end down: the client sees the end of the stream.
    pair.client.pump();
    assert_eq!(
        pair.client.closed(),
        vec![(
            pair.server_addr,
            "connection closed by the peer".to_string()
        )]
    );
    assert_eq!(pair.server.stats().rx_packets, 0);
}

/// Hostile length prefixes: longer than a control packet from a peer that
/// has not authenticated (its buffer stays small), and zero (2.6 restarts
/// the connection on both). The connection is closed at once, nothing is
/// buffered for it, and the authenticated client carries on.
#[test]
fn a_hostile_length_prefix_closes_only_that_connection() {
    let mut pair = StreamPair::new(no_offloads());
    let too_long = MAX_CONTROL_DATAGRAM + 1;
    for (i, (prefix, why)) in [
        (u16::MAX.to_be_bytes(), "65535 bytes"),
        (
            (too_long as u16).to_be_bytes(),
            &*format!("{too_long} bytes"),
        ),
        (0u16.to_be_bytes(), "length 0"),
    ]
    .into_iter()
    .enumerate()
    {
        let stranger: SocketAddr = format!("203.0.113.9:{}", 5000 + i).parse().unwrap();
        let theirs = pair.server.connect_from(stranger);
        theirs.write(&prefix).unwrap();
        theirs.write(&[0x38; 100]).unwrap();
        pair.server.pump();
        let closed = pair.server.closed();
        assert_eq!(closed.len(), 1, "{why}");
        assert_eq!(closed[0].0, stranger);
        assert!(
            closed[0].1.starts_with("bad framing from the peer") && closed[0].1.contains(why),
            "{}",
            closed[0].1
        );
        assert!(pair.server.streams.get(&stranger).is_none());
        assert_eq!(theirs.read(&mut [0; 8]).unwrap(), 0, "shut down");
    }
    let pkt = udp4(CLIENT_TUN_IP, SERVER_TUN_IP, b"still here");
    assert!(pair.client.tun.inject(pkt.clone()));
    pair.drive();
    assert_eq!(pair.server.tun.take_written(), vec![pkt]);
    assert_eq!(
        pair.server.sh.counters.unknown_peer.load(Ordering::Relaxed),
        0
    );
}
