//! Two data planes in two network namespaces joined by a veth pair: a
//! "server" with one peer and a "client" whose default peer is the server.
//! Pings and a TCP transfer cross the tunnel; control packets, pings and OCC
//! messages reach the right places. Needs root and `ip` (iproute2): without
//! them the tests fail and say what is missing, they never pass silently.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use ferrovpn_dataplane::{DataPlane, DataPlaneConfig, PeerTable, UpEvent, UpReceiver, UpRecvError};
use ferrovpn_proto::data::{Cipher, DataKeys, KeyBlock, OCC_EXIT, OCC_MAGIC, PING_PAYLOAD, Side};
use ferrovpn_testkit::{Netns, VethPair, require_root_and_tools, wait_until};

const SERVER_TUN: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
const CLIENT_TUN: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
const PEER_ID: u32 = 1;

/// Namespaces joined to the first one by veth: namespace `i > 0` on subnet
/// 192.168.(76 + i).0/24 (.1 on namespace 0, .2 on namespace i). The veths
/// go before the namespaces; both are removed on drop, whatever happened.
struct Namespaces {
    _veths: Vec<VethPair>,
    ns: Vec<Netns>,
}

impl Namespaces {
    fn new(n: usize) -> Namespaces {
        let ns: Vec<Netns> = (0..n)
            .map(|i| Netns::unique(&format!("lb{i}")).expect("creating a namespace"))
            .collect();
        let veths = (1..n)
            .map(|i| {
                let subnet = 76 + i;
                VethPair::new(
                    &ns[0],
                    &format!("192.168.{subnet}.1/24"),
                    &ns[i],
                    &format!("192.168.{subnet}.2/24"),
                )
                .expect("creating a veth pair")
            })
            .collect();
        Namespaces { _veths: veths, ns }
    }

    fn name(&self, i: usize) -> &str {
        self.ns[i].name()
    }
}

/// Only root can create namespaces and TUN devices, and the namespaces are
/// made with `ip`. Without either the test fails: this project's tests never
/// pass silently (CI runs them as root).
fn require_root_and_ip() {
    require_root_and_tools(&["ip", "ping"]);
}

fn keys(side: Side) -> DataKeys {
    let mut b = [0u8; 256];
    for (i, x) in b.iter_mut().enumerate() {
        *x = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    DataKeys::from_key_block(Cipher::Aes256Gcm, &KeyBlock(b), side)
}

/// Make `peer_id` the client at `client_addr` (tunnel address
/// `client_tun`) in the server's table and the server at `server_addr` the
/// default peer in the client's, with matching keys (key id 0) on both.
fn pair_peers(
    (server_peers, server_addr): (&PeerTable, SocketAddr),
    (client_peers, client_addr, client_tun): (&PeerTable, SocketAddr, Ipv4Addr),
    peer_id: u32,
) {
    server_peers.upsert_peer(peer_id, client_addr, Some(client_tun));
    server_peers.install_key(peer_id, 0, keys(Side::Server));
    server_peers.set_send_key(peer_id, 0);
    client_peers.upsert_peer(peer_id, server_addr, None);
    client_peers.install_key(peer_id, 0, keys(Side::Client));
    client_peers.set_send_key(peer_id, 0);
    client_peers.set_client_default(Some(peer_id));
}

fn wait_for(what: &str, deadline: Duration, f: impl FnMut() -> bool) {
    assert!(
        wait_until(deadline, Duration::from_millis(10), f),
        "timed out waiting for {what}"
    );
}

/// Whether one ping from namespace `ns` to `addr` came back within a second.
fn pinged(ns: &str, addr: &str) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", "1", "-W", "1", addr])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn recv_event(rx: &UpReceiver, mut want: impl FnMut(&UpEvent) -> bool) -> UpEvent {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ev) if want(&ev) => return ev,
            Ok(_) => continue,
            Err(e) => panic!("no matching event: {e}"),
        }
    }
}

fn config(
    tun: &str,
    bind: SocketAddr,
    connect: Option<SocketAddr>,
    workers: usize,
) -> DataPlaneConfig {
    DataPlaneConfig {
        tun_name: tun.into(),
        null_device: false,
        mtu: 1500,
        tx_queue_len: None,
        workers,
        pin_cpus: false,
        bind,
        connect,
        float: false,
        client_to_client: false,
        replay_window: 2048,
        mssfix: Some(1492),
        mssfix_count: Default::default(),
        mss_payload_extra: 0,
        cbc_hmac_len: 20,
        offload: std::env::var_os("FERROVPN_NO_OFFLOAD").is_none(),
        transport: Default::default(),
        fragment: None,
        passtos: false,
        link_counters: None,
        seal_spread: false,
    }
}

#[test]
fn tunnel_between_namespaces() {
    // Only root can create namespaces and TUN devices.
    require_root_and_ip();
    let ns = Namespaces::new(2);
    let (ns_a, ns_b) = (ns.name(0).to_owned(), ns.name(1).to_owned());
    let workers = 2;

    let server_peers = PeerTable::new();
    let sp = server_peers.clone();
    let (server, server_rx) = ns.ns[0]
        .run(move || {
            DataPlane::start(
                config("fvtun0", "192.168.77.1:0".parse().unwrap(), None, workers),
                sp,
            )
        })
        .expect("server data plane");
    let server_addr = server.local_addr();

    let client_peers = PeerTable::new();
    let cp = client_peers.clone();
    let (client, client_rx) = ns.ns[1]
        .run(move || {
            DataPlane::start(
                config(
                    "fvtun0",
                    "0.0.0.0:0".parse().unwrap(),
                    Some(server_addr),
                    workers,
                ),
                cp,
            )
        })
        .expect("client data plane");
    let client_addr = SocketAddr::new("192.168.77.2".parse().unwrap(), client.local_addr().port());
    eprintln!(
        "offloads: server {:?}, client {:?}",
        server.offloads(),
        client.offloads()
    );

    pair_peers(
        (&server_peers, server_addr),
        (&client_peers, client_addr, CLIENT_TUN),
        PEER_ID,
    );
    ns.ns[0]
        .add_address("10.99.0.1/24", server.tun_name())
        .unwrap();
    ns.ns[1]
        .add_address("10.99.0.2/24", client.tun_name())
        .unwrap();

    // Control packets go up with their source address.
    let ctl = client.control_socket().expect("a UDP data plane");
    let hard_reset = [7u8 << 3, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0];
    ctl.send_to(&hard_reset, server_addr).unwrap();
    let ev = recv_event(&server_rx, |e| matches!(e, UpEvent::Control { .. }));
    assert_eq!(
        ev,
        UpEvent::Control {
            from: client_addr,
            packet: hard_reset.to_vec()
        }
    );

    // Junk from the network is dropped and counted, never fatal: empty, short,
    // a forged DATA_V2 for peer 1 (auth failure), DATA_V2 for an unknown peer.
    let mut forged = vec![0x48, 0, 0, 1];
    forged.extend_from_slice(&[0xA5; 60]);
    let mut unknown = vec![0x48, 0, 0, 9];
    unknown.extend_from_slice(&[0x5A; 60]);
    for junk in [
        &[][..],
        &[0x48][..],
        &[0x48, 0, 0, 1, 0][..],
        &forged[..],
        &unknown[..],
    ] {
        ctl.send_to(junk, server_addr).unwrap();
    }
    wait_for("forged packet rejected", Duration::from_secs(5), || {
        server_peers.peer_stats(PEER_ID).unwrap().auth_failures == 1
    });

    // Keepalive ping: counted as liveness, not written to the TUN.
    client.send_data(PEER_ID, &PING_PAYLOAD).unwrap();
    wait_for("ping at server", Duration::from_secs(5), || {
        server_peers.peer_stats(PEER_ID).unwrap().rx_packets >= 1
    });
    // OCC exit goes up as an event.
    let mut occ = OCC_MAGIC.to_vec();
    occ.push(OCC_EXIT);
    client.send_data(PEER_ID, &occ).unwrap();
    let ev = recv_event(&server_rx, |e| matches!(e, UpEvent::Occ { .. }));
    assert_eq!(
        ev,
        UpEvent::Occ {
            peer_id: PEER_ID,
            payload: occ.clone()
        }
    );

    // ICMP across the tunnel, both directions.
    wait_for("ping client -> server", Duration::from_secs(10), || {
        pinged(&ns_b, "10.99.0.1")
    });
    let ok = Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns_a,
            "ping",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "10.99.0.2",
        ])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "ping server -> client: {}",
        String::from_utf8_lossy(&ok.stdout)
    );

    // TCP bulk transfer client -> server with content check.
    let total: usize = 64 << 20;
    let listener = ns.ns[0].run(|| TcpListener::bind((SERVER_TUN, 5201)).unwrap());
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut buf = vec![0u8; 1 << 16];
        let (mut got, mut sum) = (0usize, 0u64);
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter().enumerate() {
                sum = sum.wrapping_add(u64::from(*b) * (((got + i) % 251) as u64 + 1));
            }
            got += n;
        }
        (got, sum)
    });
    let start = Instant::now();
    let expected = ns.ns[1].run(move || {
        let mut s = TcpStream::connect_timeout(
            &SocketAddr::from((SERVER_TUN, 5201)),
            Duration::from_secs(5),
        )
        .unwrap();
        s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut chunk = vec![0u8; 1 << 16];
        let mut sum = 0u64;
        let mut sent = 0usize;
        while sent < total {
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = ((sent + i) as u32)
                    .wrapping_mul(2_654_435_761)
                    .to_be_bytes()[0];
                sum = sum.wrapping_add(u64::from(*b) * (((sent + i) % 251) as u64 + 1));
            }
            s.write_all(&chunk).unwrap();
            sent += chunk.len();
        }
        sum
    });
    let (got, sum) = reader.join().unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(got, total);
    assert_eq!(sum, expected, "TCP content corrupted");
    eprintln!(
        "TCP client->server: {} MiB in {secs:.2}s = {:.2} Gbit/s",
        total >> 20,
        total as f64 * 8.0 / secs / 1e9
    );

    let ss = server_peers.peer_stats(PEER_ID).unwrap();
    let cs = client_peers.peer_stats(PEER_ID).unwrap();
    eprintln!("server peer stats {ss:?}\nclient peer stats {cs:?}");
    eprintln!(
        "server counters {:?}\nclient counters {:?}",
        server.counters(),
        client.counters()
    );
    assert_eq!(ss.auth_failures, 1);
    assert_eq!(cs.auth_failures, 0);
    assert!(ss.rx_packets > 1000 && cs.tx_packets > 1000);
    assert!(cs.rx_idle() < Duration::from_secs(5));

    // Optional: iperf3 numbers when installed.
    if std::env::var_os("FERROVPN_IPERF").is_some() {
        let mut srv = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns_a,
                "iperf3",
                "-s",
                "-1",
                "-B",
                "10.99.0.1",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut out = None;
        let extra = std::env::var("FERROVPN_IPERF_ARGS").unwrap_or_default();
        wait_for("iperf3 run", Duration::from_secs(30), || {
            let o = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ns_b,
                    "iperf3",
                    "-c",
                    "10.99.0.1",
                    "-t",
                    "5",
                    "-f",
                    "g",
                ])
                .args(extra.split_whitespace())
                .output()
                .unwrap();
            let ok = o.status.success();
            out = Some(o);
            ok
        });
        let _ = srv.wait();
        if let Some(o) = out {
            eprintln!("{}", String::from_utf8_lossy(&o.stdout));
        }
        eprintln!("server peer stats {:?}", server_peers.peer_stats(PEER_ID));
        eprintln!(
            "server counters {:?}\nclient counters {:?}",
            server.counters(),
            client.counters()
        );
        for n in [&ns_a, &ns_b] {
            for args in [
                vec![
                    "netns",
                    "exec",
                    n.as_str(),
                    "ip",
                    "-s",
                    "link",
                    "show",
                    "fvtun0",
                ],
                vec![
                    "netns",
                    "exec",
                    n.as_str(),
                    "nstat",
                    "-az",
                    "UdpRcvbufErrors",
                    "UdpSndbufErrors",
                    "UdpInErrors",
                    "TcpExtTCPOFOQueue",
                ],
            ] {
                let o = Command::new("ip").args(&args).output().unwrap();
                eprintln!("{n}: {}", String::from_utf8_lossy(&o.stdout));
            }
        }
    }

    drop(client_rx);
    client.shutdown();
    server.shutdown();
    drop(ns);
}

/// Server in namespace 0 with client-to-client on; client B (DATA_V2, peer
/// id 1) in namespace 1 and client C (DATA_V1, no peer id) in namespace 2.
/// B pings C through the server, which relays without its TUN.
#[test]
fn client_to_client_relay_and_data_v1() {
    require_root_and_ip();
    let ns = Namespaces::new(3);
    let (ns_b, ns_c) = (ns.name(1).to_owned(), ns.name(2).to_owned());
    let v1 = ferrovpn_proto::wire::PEER_ID_UNDEFINED;

    let sp = PeerTable::new();
    let sp2 = sp.clone();
    let (server, _srx) = ns.ns[0]
        .run(move || {
            let mut c = config("fvtun0", "0.0.0.0:0".parse().unwrap(), None, 2);
            c.client_to_client = true;
            DataPlane::start(c, sp2)
        })
        .expect("server");
    let port = server.local_addr().port();
    let mut clients = Vec::new();
    for (i, peer_id, tun_ip) in [(1, PEER_ID, "10.99.0.2/24"), (2, v1, "10.99.0.3/24")] {
        let srv: SocketAddr = format!("192.168.{}.1:{port}", 76 + i).parse().unwrap();
        let cp = PeerTable::new();
        let cp2 = cp.clone();
        let (dp, rx) = ns.ns[i]
            .run(move || {
                DataPlane::start(
                    config("fvtun0", "0.0.0.0:0".parse().unwrap(), Some(srv), 1),
                    cp2,
                )
            })
            .expect("client");
        let me: SocketAddr = format!("192.168.{}.2:{}", 76 + i, dp.local_addr().port())
            .parse()
            .unwrap();
        let my_ip: Ipv4Addr = tun_ip.split('/').next().unwrap().parse().unwrap();
        pair_peers((&sp, srv), (&cp, me, my_ip), peer_id);
        ns.ns[i].add_address(tun_ip, dp.tun_name()).unwrap();
        clients.push((dp, rx, cp));
    }
    ns.ns[0]
        .add_address("10.99.0.1/24", server.tun_name())
        .unwrap();

    // C (DATA_V1) reaches the server.
    wait_for("ping C -> server", Duration::from_secs(10), || {
        pinged(&ns_c, "10.99.0.1")
    });
    // B reaches C through the relay.
    wait_for("ping B -> C", Duration::from_secs(10), || {
        pinged(&ns_b, "10.99.0.3")
    });
    let relayed = server
        .counters()
        .relayed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(relayed >= 2, "relayed {relayed}");
    let c_stats = sp.peer_stats(v1).unwrap();
    assert!(
        c_stats.rx_packets >= 2 && c_stats.tx_packets >= 2,
        "{c_stats:?}"
    );
    assert_eq!(c_stats.auth_failures, 0);
    for (dp, _rx, _cp) in clients {
        dp.shutdown();
    }
    // Deleting the device under running workers must neither crash nor hang them.
    ns.ns[0]
        .exec(&["ip", "link", "del", server.tun_name()])
        .unwrap();
    let t = Instant::now();
    server.shutdown();
    assert!(t.elapsed() < Duration::from_secs(5));
    drop(ns);
}

/// Audit M5: a worker that stops on its own (a failed `poll`, a panic) is
/// reported on the up-queue within two seconds, so the control plane can end
/// the process instead of black-holing that worker's peers. The test reruns
/// itself in a child process with the hook `FERROVPN_TEST_FAIL_WORKER` set
/// (read once at data-plane start), once per failure kind.
#[test]
fn worker_failure_reaches_the_control_plane() {
    require_root_and_ip();
    if std::env::var_os(ferrovpn_dataplane::FAIL_WORKER_ENV).is_some() {
        let ns = Namespaces::new(1);
        let started = Instant::now();
        let (dp, rx) = ns.ns[0]
            .run(|| {
                DataPlane::start(
                    config("fvtun0", "127.0.0.1:0".parse().unwrap(), None, 2),
                    PeerTable::new(),
                )
            })
            .expect("data plane");
        match rx.recv_timeout(Duration::from_secs(2)) {
            Err(UpRecvError::WorkerFailed { worker: 0, reason }) => {
                println!("REPORTED worker 0 after {:?}: {reason}", started.elapsed());
            }
            other => panic!("expected worker 0's failure within 2 s, got {other:?}"),
        }
        dp.shutdown();
        return;
    }
    let exe = std::env::current_exe().expect("path of this test binary");
    for mode in ["0", "0:panic"] {
        let out = Command::new(&exe)
            .args([
                "--exact",
                "worker_failure_reaches_the_control_plane",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ferrovpn_dataplane::FAIL_WORKER_ENV, mode)
            .output()
            .expect("running this test binary again");
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!(
            "child ({mode}): {}",
            stdout
                .lines()
                .find(|l| l.starts_with("REPORTED"))
                .unwrap_or("-")
        );
        assert!(
            out.status.success() && stdout.contains("REPORTED worker 0"),
            "hook {mode}: worker failure not reported\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
