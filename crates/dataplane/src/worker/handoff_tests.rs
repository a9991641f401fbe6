//! `seal-spread` in memory: a client of three workers, one reading the TUN
//! and all three sealing, against a server worker whose replay window is a
//! stock peer's 64 ids. The test runs the workers one wake-up at a time in
//! changing orders, so that batches finish sealing out of order.

use std::net::SocketAddr;

use ferrovpn_proto::data::{Cipher, DataKeys, KeyBlock, Side, parse_data_header};

use super::handoff::JOBS_PER_WORKER;
use super::pair_tests::{CLIENT_TUN_IP, PEER_ID, super_packet_payload, tcp_offloads, tso_frame};
use super::*;
use crate::tun::MemoryTun;
use crate::udp::memory::Datagram;
use crate::udp::{self, Port};
use tun_rs::VIRTIO_NET_HDR_LEN;

const CLIENT_WORKERS: usize = 3;
/// A stock OpenVPN 2.6 peer's default `replay-window`.
const STOCK_REPLAY_WINDOW: u32 = 64;

struct Client {
    workers: Vec<Worker>,
    tun: MemoryTun,
    sh: Arc<Shared>,
    _up: crate::UpReceiver,
}

struct Server {
    worker: Worker,
    tun: MemoryTun,
    sh: Arc<Shared>,
    _up: crate::UpReceiver,
}

fn keys(side: Side) -> DataKeys {
    let block = KeyBlock(std::array::from_fn(|i| (i * 5 + 1) as u8));
    DataKeys::from_key_block(Cipher::Aes256Gcm, &block, side)
}

/// The client's workers share one socket (as `udp::create` dups it in
/// client mode); only worker 0 reads it and only worker 0 has a TUN queue
/// with traffic (the others' queues are empty, as when the kernel steers
/// the one flow to queue 0).
fn client(port: udp::memory::MemoryPort, server_addr: SocketAddr, spread: bool) -> Client {
    let peers = PeerTable::new();
    peers.upsert_peer(PEER_ID, server_addr, None);
    peers.install_key(PEER_ID, 0, keys(Side::Client));
    peers.set_send_key(PEER_ID, 0);
    peers.set_client_default(Some(PEER_ID));
    let (tx, rx) = crate::up::queues(64, 1);
    let sh = Arc::new(Shared {
        peers,
        up: tx,
        counters: Arc::new(GlobalCounters::default()),
        workers: (0..CLIENT_WORKERS)
            .map(|_| WorkerCounters::default())
            .collect(),
        client_to_client: false,
        mss: None,
        mss_cbc: None,
        stop: AtomicBool::new(false),
        wake: EventFd::new().expect("eventfd"),
        streams: None,
        fragment: None,
        passtos: false,
        server_source_only: false,
        link: Some(Arc::new(crate::LinkCounters::default())),
        handoff: spread.then(|| Handoff::new(CLIENT_WORKERS).expect("eventfds")),
    });
    let (queue, tun) = crate::tun::create_memory(tcp_offloads());
    let mut queues = vec![queue];
    queues.extend(crate::tun::create_null(CLIENT_WORKERS - 1));
    let workers = queues
        .into_iter()
        .enumerate()
        .map(|(i, q)| {
            let link = Link::Udp {
                socket: Port::Memory(port.clone()),
                rx: i == 0,
            };
            Worker::new(i, q, link, true, sh.clone())
        })
        .collect();
    Client {
        workers,
        tun,
        sh,
        _up: rx,
    }
}

fn server(port: udp::memory::MemoryPort, client_addr: SocketAddr) -> Server {
    let peers = PeerTable::new();
    peers.set_replay_window(STOCK_REPLAY_WINDOW);
    peers.upsert_peer(PEER_ID, client_addr, Some(CLIENT_TUN_IP.into()));
    peers.install_key(PEER_ID, 0, keys(Side::Server));
    peers.set_send_key(PEER_ID, 0);
    let (sh, rx) = super::pair_tests::shared(peers, None, false);
    let (queue, tun) = crate::tun::create_memory(tcp_offloads());
    let link = Link::Udp {
        socket: Port::Memory(port),
        rx: true,
    };
    Server {
        worker: Worker::new(0, queue, link, true, sh.clone()),
        tun,
        sh,
        _up: rx,
    }
}

/// One wake-up of a client worker (reading the socket only if it is its reader).
fn wake(w: &mut Worker) {
    let rx = matches!(w.link, Link::Udp { rx: true, .. });
    let mut totals = Totals::default();
    w.ib.woke(now_nanos());
    w.drain(true, rx, false, false, &mut totals);
}

/// Run the client's workers in changing orders until the TUN is read and
/// no job is left anywhere: the datagrams sent, in the order they left.
fn send_all(
    client: &mut Client,
    link: &udp::memory::MemoryLink,
    server_addr: SocketAddr,
) -> Vec<Datagram> {
    const ORDERS: [[usize; CLIENT_WORKERS]; 6] = [
        [0, 2, 1],
        [2, 0, 1],
        [0, 1, 2],
        [1, 2, 0],
        [2, 1, 0],
        [0, 0, 2],
    ];
    let mut wire = Vec::new();
    for round in 0..1000 {
        for &w in &ORDERS[round % ORDERS.len()] {
            wake(&mut client.workers[w]);
            wire.extend(link.take(server_addr));
        }
        let jobs_home = client.workers.iter_mut().all(|w| {
            let made = w.ob.jobs.made();
            w.ob.can_read(&client.sh);
            w.ob.jobs.spares() == made
        });
        if client.tun.unread() == 0 && jobs_home {
            return wire;
        }
    }
    panic!("the client did not settle in 1000 rounds");
}

/// The datagrams leave in packet-id order, none lost or repeated, however
/// the three workers' sealing interleaves; a server with a stock peer's
/// 64-id replay window takes every one; every job goes back to the worker
/// that owns it, and none owns more than its share.
#[test]
fn batches_sealed_by_three_workers_leave_in_packet_id_order() {
    let server_addr: SocketAddr = "192.0.2.1:1194".parse().unwrap();
    let client_addr: SocketAddr = "198.51.100.2:40000".parse().unwrap();
    let (server_port, client_port, link) = udp::memory::link(server_addr, client_addr);
    let mut client = client(client_port, server_addr, true);
    let mut server = server(server_port, client_addr);
    let (mss, segments, payload) = super_packet_payload();
    const FRAMES: usize = 40;
    for _ in 0..FRAMES {
        assert!(client.tun.inject(tso_frame(&payload, mss)));
    }
    let wire = send_all(&mut client, &link, server_addr);
    let ids: Vec<u32> = wire
        .iter()
        .map(|d| {
            parse_data_header(&d.bytes)
                .expect("a data packet")
                .packet_id
        })
        .collect();
    let total = FRAMES * segments;
    assert_eq!(ids.len(), total);
    assert_eq!(ids.first(), Some(&1));
    if let Some(at) = ids.windows(2).position(|w| w[1] != w[0] + 1) {
        panic!("id {} left after id {}", ids[at + 1], ids[at]);
    }
    // Every worker sealed some of the batches.
    let tx = client.sh.peers.peer_stats(PEER_ID).unwrap().tx_packets;
    assert_eq!(tx, total as u64);
    for w in &client.workers {
        assert!(w.ob.jobs.made() <= JOBS_PER_WORKER);
    }
    assert!(
        client.workers[1].ob.jobs.sealed() > 0 && client.workers[2].ob.jobs.sealed() > 0,
        "the batches were spread: {:?}",
        client
            .workers
            .iter()
            .map(|w| w.ob.jobs.sealed())
            .collect::<Vec<_>>()
    );
    // A server with a stock peer's replay window takes them all, in order.
    link.inject(server_addr, wire);
    for _ in 0..100 {
        server.worker.pump();
        if link.in_flight(server_addr) == 0 {
            break;
        }
    }
    assert_eq!(link.in_flight(server_addr), 0);
    let got = server.sh.peers.peer_stats(PEER_ID).unwrap();
    assert_eq!((got.rx_packets, got.replay_drops), (total as u64, 0));
    let delivered: usize = server
        .tun
        .take_written()
        .iter()
        .map(|f| f.len() - VIRTIO_NET_HDR_LEN - 40)
        .sum();
    assert_eq!(delivered, FRAMES * payload.len());
}
