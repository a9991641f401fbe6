//! Hostile input to a ferrovpn TCP server, each case while a good stock
//! OpenVPN 2.6 client gets in: a flood of idle connections from many source
//! addresses, connections that announce a 65535-byte packet and stall, and
//! streams of random bytes; `max-clients` over TCP.
//!
//! The limits under test (control/src/server/tcp.rs): a source address
//! holds at most 8 unauthenticated connections (more are closed at once);
//! at most `max(max-clients, 16)` are held in all (the oldest is closed for
//! a newcomer); each is closed at `hand-window`. Before authentication a
//! connection reads into a 6 KiB buffer and may carry control packets only.
//!
//! Needs root, `openvpn`, `python3`, `ip`, `ping`; fails loudly without them.

use std::time::Duration;

use ferrovpn_testkit::lab::{CONNECT_TIMEOUT, SERVER_TUN, UP};
use ferrovpn_testkit::{Lab, Transport, ping, require_root_and_tools, wait_until};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    ferrovpn_testkit::rss_kib(pid).unwrap()
}

/// Open file descriptors of `pid`.
fn fds(pid: u32) -> usize {
    ferrovpn_testkit::open_fds(pid).unwrap()
}

/// 200 source addresses each open 10 idle connections (2000 in all): each
/// address keeps 8, the table keeps 64 (`max-clients 64`), the server's
/// descriptors and memory stay bounded, a stock client connects meanwhile,
/// and at `hand-window` every idle connection is gone.
#[test]
fn thousands_of_idle_connections_stay_bounded_while_a_good_client_gets_in() {
    require_root_and_tools(&["python3"]);
    let lab = Lab::new("tcph-idle", 1, FERROVPN);
    let (mut sc, cc) = lab.tcp_confs();
    sc.extra.push("hand-window 6".into());
    sc.extra.push("max-clients 64".into());
    let server = lab.ferrovpn_server(&sc);
    let (rss_before, fds_before) = (rss_kib(server.pid()), fds(server.pid()));
    // 200 more addresses on the client's side of the underlay.
    lab.add_client_addresses(0, 10..210);
    let script = format!(
        "import resource, socket, time\n\
         resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))\n\
         conns = []\n\
         for i in range(10, 210):\n\
         \x20   for k in range(10):\n\
         \x20       s = socket.socket()\n\
         \x20       s.bind(('10.210.1.%d' % i, 0))\n\
         \x20       s.settimeout(5)\n\
         \x20       try:\n\
         \x20           s.connect(('{srv}', {port}))\n\
         \x20           conns.append(s)\n\
         \x20       except OSError:\n\
         \x20           s.close()\n\
         print('opened %d' % len(conns), flush=True)\n\
         print('flood done', flush=True)\n\
         time.sleep(40)\n",
        srv = Lab::server_underlay(0),
        port = sc.port
    );
    let flood = lab.python(0, "idle-flood", &script, "flood done");
    eprintln!("{}", flood.log_tail(2));
    // The server holds at most 64 unauthenticated connections (closing
    // the ones it pushed out takes its workers a moment).
    let bounded = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        fds(server.pid()) <= fds_before + 64
    });
    let (rss_peak, fds_peak) = (rss_kib(server.pid()), fds(server.pid()));
    eprintln!(
        "server: {rss_before} KiB / {fds_before} fds before the flood, {rss_peak} KiB / {fds_peak} fds after"
    );
    assert!(bounded, "{fds_peak} descriptors\n{}", server.log_tail(30));
    assert!(
        rss_peak < rss_before + 32 * 1024,
        "memory grew from {rss_before} to {rss_peak} KiB"
    );
    let log = server.log();
    assert!(
        log.contains("too many unauthenticated connections from this address"),
        "{}",
        server.log_tail(30)
    );
    // A good client gets in while the idle connections are held.
    let mut client = lab.stock_client(0, "openvpn-client", &cc);
    client.wait_for_log_line(UP, CONNECT_TIMEOUT).unwrap();
    ping(&lab.clients[0], SERVER_TUN, 2, Duration::from_secs(10)).unwrap();
    // At hand-window every idle one is closed; the client stays.
    assert!(
        wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
            fds(server.pid()) <= fds_before + 3
        }),
        "{} descriptors left\n{}",
        fds(server.pid()),
        server.log_tail(30)
    );
    let p = ping(&lab.clients[0], SERVER_TUN, 2, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 1, "{p:?}");
    assert_eq!(
        client.log().matches(UP).count(),
        1,
        "{}",
        client.log_tail(30)
    );
}

/// While a stock client connects: connections that announce a 65535-byte
/// packet and stall after a few bytes (closed at once: before
/// authentication only control packets fit), connections stalling inside
/// a plausible 250-byte packet (closed at hand-window), and connections
/// sending a megabyte of random bytes (closed at their first impossible
/// length). Memory stays flat and the client never notices.
#[test]
fn stalled_giant_packets_and_random_streams_are_dropped() {
    require_root_and_tools(&["python3"]);
    let lab = Lab::new("tcph-junk", 1, FERROVPN);
    let (mut sc, cc) = lab.tcp_confs();
    sc.extra.push("hand-window 4".into());
    sc.verb = 4;
    let server = lab.ferrovpn_server(&sc);
    let rss_before = rss_kib(server.pid());
    let script = format!(
        "import os, socket, time\n\
         def c():\n\
         \x20   return socket.create_connection(('{srv}', {port}))\n\
         held = []\n\
         for _ in range(3):\n\
         \x20   s = c(); s.sendall(b'\\xff\\xff' + os.urandom(10)); held.append(s)\n\
         for _ in range(3):\n\
         \x20   s = c(); s.sendall(b'\\x00\\xfa' + os.urandom(10)); held.append(s)\n\
         junk = []\n\
         for _ in range(3):\n\
         \x20   s = c(); s.settimeout(5)\n\
         \x20   try:\n\
         \x20       for _ in range(256):\n\
         \x20           s.sendall(os.urandom(4096))\n\
         \x20   except OSError as e:\n\
         \x20       print('random stream cut: %s' % e, flush=True)\n\
         \x20   junk.append(s)\n\
         print('hostile connections open', flush=True)\n\
         time.sleep(30)\n",
        srv = Lab::server_underlay(0),
        port = sc.port
    );
    let _hostile = lab.python(0, "junk", &script, "hostile connections open");
    let mut client = lab.stock_client(0, "openvpn-client", &cc);
    client.wait_for_log_line(UP, CONNECT_TIMEOUT).unwrap();
    let closed = |pat: &str| server.log().matches(pat).count();
    assert!(
        wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
            closed("bad framing from the peer") >= 6
                && closed("no authentication within hand-window") >= 3
        }),
        "{}",
        server.log_tail(60)
    );
    let rss_after = rss_kib(server.pid());
    eprintln!("server memory {rss_before} KiB before, {rss_after} KiB after");
    assert!(rss_after < rss_before + 32 * 1024, "{rss_after} KiB");
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}");
    assert_eq!(
        client.log().matches(UP).count(),
        1,
        "{}",
        client.log_tail(30)
    );
}

/// `max-clients 1` over TCP: a second stock client is refused while the
/// first stays connected.
#[test]
fn max_clients_applies_to_tcp_clients() {
    let lab = Lab::new("tcph-max", 2, FERROVPN);
    let (mut sc, _) = lab.tcp_confs();
    sc.extra.push("max-clients 1".into());
    let wrap = sc.wrap.clone();
    let mut ccs = lab.client_confs(&wrap, sc.cipher);
    for cc in &mut ccs {
        cc.transport = Transport::Tcp;
    }
    let mut server = lab.ferrovpn_server(&sc);
    let mut first = lab.stock_client(0, "openvpn-client-0", &ccs[0]);
    first.wait_for_log_line(UP, CONNECT_TIMEOUT).unwrap();
    let second = lab.stock_client(1, "openvpn-client-1", &ccs[1]);
    server
        .wait_for_log_line("max-clients 1 reached", Duration::from_secs(15))
        .unwrap();
    assert!(!second.log().contains(UP), "{}", second.log_tail(30));
    let p = ping(&lab.clients[0], SERVER_TUN, 2, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 1, "{p:?}");
}

/// A stock client's iperf3 throughput before and while 1000 idle
/// connections (125 source addresses × 8) are held open: each worker
/// waits on its share of them, which must not slow the busy connection
/// down much. Prints both figures.
#[test]
fn a_busy_client_keeps_its_speed_with_a_thousand_idle_connections_open() {
    require_root_and_tools(&["python3", "iperf3"]);
    let lab = Lab::new("tcph-many", 1, FERROVPN);
    let (sc, cc) = lab.tcp_confs();
    let server = lab.ferrovpn_server(&sc);
    let fds_before = fds(server.pid());
    let mut client = lab.stock_client(0, "openvpn-client", &cc);
    client.wait_for_log_line(UP, CONNECT_TIMEOUT).unwrap();
    let quiet = lab.iperf3(0, 3);
    lab.add_client_addresses(0, 10..135);
    let script = format!(
        "import resource, socket, time\n\
         resource.setrlimit(resource.RLIMIT_NOFILE, (8192, 8192))\n\
         conns = []\n\
         for i in range(10, 135):\n\
         \x20   for k in range(8):\n\
         \x20       s = socket.create_connection(('{srv}', {port}), 5, ('10.210.1.%d' % i, 0))\n\
         \x20       conns.append(s)\n\
         print('opened %d' % len(conns), flush=True)\n\
         time.sleep(40)\n",
        srv = Lab::server_underlay(0),
        port = sc.port
    );
    let _flood = lab.python(0, "idle-1000", &script, "opened 1000");
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            fds(server.pid()) >= fds_before + 1000
        }),
        "{} descriptors\n{}",
        fds(server.pid()),
        server.log_tail(20)
    );
    let busy = lab.iperf3(0, 3);
    eprintln!(
        "stock client over TCP: {:.3} Gbit/s alone, {:.3} Gbit/s with 1000 idle connections open ({} server descriptors)",
        quiet.gbps,
        busy.gbps,
        fds(server.pid())
    );
    assert!(
        busy.gbps > quiet.gbps * 0.25,
        "{:.3} against {:.3} Gbit/s",
        busy.gbps,
        quiet.gbps
    );
    assert_eq!(
        client.log().matches(UP).count(),
        1,
        "{}",
        client.log_tail(30)
    );
}
