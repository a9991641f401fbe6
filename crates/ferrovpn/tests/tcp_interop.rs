//! TCP transport (`proto tcp-client` / `tcp-server`): ferrovpn against
//! Debian's stock OpenVPN 2.6 in both roles, ferrovpn against itself, server
//! restarts, and hostile connections to a ferrovpn server, in namespaces
//! joined by veth (`ferrovpn_testkit::Lab`).
//!
//! Needs root, `openvpn`, `iperf3`, `ip`, `ping`, `python3` and
//! `/dev/net/tun`; every test fails loudly without them. Every wait has a
//! deadline.

use std::time::Duration;

use ferrovpn_testkit::lab::{
    CONNECT_TIMEOUT, SERVER_TUN, UP, connected_ip, kill_and_reap, log_tails, wait_for_count,
};
use ferrovpn_testkit::{
    ClientConf, Implementation, Lab, Proc, ServerConf, Transport, iperf3_report, ping,
    require_root_and_tools, wait_until,
};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
/// The client's tunnel address (first of the pool).
const CLIENT_TUN: &str = "10.8.0.2";

fn lab(tag: &str) -> Lab {
    Lab::new(tag, 1, FERROVPN)
}

/// Server and client configs over TCP (tls-crypt, AES-256-GCM).
fn tcp_confs(lab: &Lab) -> (ServerConf, ClientConf) {
    lab.tcp_confs()
}

/// Ping the server's tunnel address, then 2 s of iperf3 each way.
fn ping_and_iperf3_both_ways(lab: &Lab, what: &str) {
    let client_ns = &lab.clients[0];
    let p = ping(client_ns, SERVER_TUN, 5, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 4, "{what}: {p:?}");
    let up = iperf3_report(client_ns, &lab.server_ns, SERVER_TUN, 2, 1).unwrap();
    let down = iperf3_report(&lab.server_ns, client_ns, CLIENT_TUN, 2, 1).unwrap();
    eprintln!(
        "{what}: client->server {:.3} Gbit/s ({} retransmits), server->client {:.3} Gbit/s ({} retransmits), ping avg {:.3} ms",
        up.gbps, up.retransmits, down.gbps, down.retransmits, p.avg_ms
    );
    assert!(up.bytes > 1_000_000, "{what} upstream: {up:?}");
    assert!(down.bytes > 1_000_000, "{what} downstream: {down:?}");
}

/// Wait for the client to come up, then ping the server through the tunnel.
fn up_and_ping(lab: &Lab, client: &mut Proc) {
    client.wait_for_log_line(UP, CONNECT_TIMEOUT).unwrap();
    ping(&lab.clients[0], SERVER_TUN, 2, Duration::from_secs(10)).unwrap();
}

/// After its server restarted: the client comes up a second time and the
/// tunnel carries pings again.
fn comes_up_again(lab: &Lab, client: &Proc) {
    assert!(
        wait_for_count(client, UP, 2, CONNECT_TIMEOUT),
        "{}",
        client.log_tail(40)
    );
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "after reconnect: {p:?}");
}

#[test]
fn ferrovpn_client_stock_tcp_server() {
    let lab = lab("tcp-fc");
    let (sc, mut cc) = tcp_confs(&lab);
    // 2.6 ignores explicit-exit-notify over TCP with a notice; so does ferrovpn.
    cc.extra.push("explicit-exit-notify 2".into());
    let server = lab.stock_server(&sc);
    let mut client = lab.ferrovpn_client(0, "ferrovpn-client", &cc);
    client.wait_for_log_line(UP, CONNECT_TIMEOUT).unwrap();
    assert!(
        client
            .log()
            .contains("NOTICE: --explicit-exit-notify ignored for --proto tcp"),
        "{}",
        client.log_tail(30)
    );
    assert!(
        server.log().contains("TCP connection established"),
        "{}",
        server.log_tail(30)
    );
    ping_and_iperf3_both_ways(&lab, "ferrovpn client -> stock server over TCP");
}

/// The stock server restarts: the client sees its connection close,
/// reconnects with connect-retry and the tunnel works again.
#[test]
fn ferrovpn_client_reconnects_after_tcp_server_restart() {
    let lab = lab("tcp-rs");
    let (sc, mut cc) = tcp_confs(&lab);
    cc.extra.push("connect-retry 1 1".into());
    let mut server = lab.stock_server(&sc);
    let mut client = lab.ferrovpn_client(0, "ferrovpn-client", &cc);
    up_and_ping(&lab, &mut client);
    server.stop(Duration::from_secs(5));
    client
        .wait_for_log_line("connection ended", CONNECT_TIMEOUT)
        .unwrap();
    let _server = lab.stock_server(&sc);
    comes_up_again(&lab, &client);
}

/// Nothing listens: each TCP connect is refused, the client keeps retrying
/// (connect-retry) and logs why, and it comes up once the server starts.
#[test]
fn ferrovpn_client_retries_until_the_tcp_server_listens() {
    let lab = lab("tcp-rt");
    let (sc, mut cc) = tcp_confs(&lab);
    cc.extra.push("connect-retry 1 1".into());
    cc.extra.push("connect-timeout 5".into());
    let mut client = lab.ferrovpn_client(0, "ferrovpn-client", &cc);
    assert!(
        wait_for_count(&client, "TCP connect to", 2, CONNECT_TIMEOUT),
        "{}",
        client.log_tail(30)
    );
    let _server = lab.stock_server(&sc);
    up_and_ping(&lab, &mut client);
}

// ---------------------------------------------------------------------------
// ferrovpn as the TCP server
// ---------------------------------------------------------------------------

#[test]
fn stock_client_ferrovpn_tcp_server() {
    let lab = lab("tcp-fs");
    let (sc, cc) = tcp_confs(&lab);
    let _server = lab.ferrovpn_server(&sc);
    let mut client = lab.stock_client(0, "openvpn-client", &cc);
    client.wait_for_log_line(UP, CONNECT_TIMEOUT).unwrap();
    ping_and_iperf3_both_ways(&lab, "stock client -> ferrovpn server over TCP");
}

#[test]
fn ferrovpn_client_ferrovpn_tcp_server() {
    let lab = lab("tcp-ff");
    let (sc, cc) = tcp_confs(&lab);
    let _server = lab.ferrovpn_server(&sc);
    let mut client = lab.ferrovpn_client(0, "ferrovpn-client", &cc);
    client.wait_for_log_line(UP, CONNECT_TIMEOUT).unwrap();
    ping_and_iperf3_both_ways(&lab, "ferrovpn client -> ferrovpn server over TCP");
}

/// While hostile connections are open, a stock client still gets in: one
/// announcing a 65535-byte packet (more than a control packet may be before
/// authentication) and one sending garbage are dropped at once; one
/// stalling inside a packet and four idle ones are dropped at hand-window
/// (fewer than the 8 unauthenticated connections a source address may hold:
/// the good client comes from the same address).
#[test]
fn hostile_tcp_connections_are_dropped_while_a_good_client_gets_in() {
    require_root_and_tools(&["python3"]);
    let lab = lab("tcp-hx");
    let (mut sc, cc) = tcp_confs(&lab);
    sc.extra.push("hand-window 3".into());
    sc.verb = 4;
    let server = lab.ferrovpn_server(&sc);
    // From the client namespace: a maximal packet, garbage (a zero length
    // breaks the framing), a stalled packet and idle connections, all held
    // open by a python process that exits after 20 s.
    let script = format!(
        "import socket, time\n\
         def c():\n\
         \x20   s = socket.create_connection(('{srv}', {port}))\n\
         \x20   return s\n\
         huge = c(); huge.sendall(b'\\xff\\xff' + b'\\x38' * 100)\n\
         garbage = c(); garbage.sendall(b'\\x00\\x00garbage')\n\
         stalled = c(); stalled.sendall(b'\\x07\\xd0' + b'\\x38' * 100)\n\
         idle = [c() for _ in range(4)]\n\
         print('hostile connections open', flush=True)\n\
         time.sleep(20)\n",
        srv = Lab::server_underlay(0),
        port = sc.port
    );
    let _hostile = lab.python(0, "hostile", &script, "hostile connections open");
    let mut client = lab.stock_client(0, "openvpn-client", &cc);
    up_and_ping(&lab, &mut client);
    let closed = |pat: &str| server.log().matches(pat).count();
    assert!(
        wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
            closed("bad framing from the peer") >= 2
                && closed("no authentication within hand-window") >= 5
        }),
        "{}",
        server.log_tail(60)
    );
    // The good client was never dropped.
    let p = ping(&lab.clients[0], SERVER_TUN, 2, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 1, "{p:?}");
}

/// The ferrovpn server restarts: the stock client sees the connection
/// close, reconnects and the tunnel works again.
#[test]
fn stock_client_reconnects_after_ferrovpn_tcp_server_restart() {
    let lab = lab("tcp-sr");
    let (sc, mut cc) = tcp_confs(&lab);
    cc.extra.push("connect-retry 1 1".into());
    let mut server = lab.ferrovpn_server(&sc);
    let mut client = lab.stock_client(0, "openvpn-client", &cc);
    up_and_ping(&lab, &mut client);
    server.stop(Duration::from_secs(5));
    let _server = lab.ferrovpn_server(&sc);
    comes_up_again(&lab, &client);
}

// ---------------------------------------------------------------------------
// Several listeners, port-share, renegotiation over TCP
// ---------------------------------------------------------------------------

/// One ferrovpn server with a UDP and a TCP listening socket (OpenVPN 2.7's
/// repeated `local ADDR PORT PROTO`): a stock client over UDP and another
/// over TCP are connected at the same time, share the address pool and
/// both carry traffic; then the UDP client comes back over TCP with the
/// same certificate and takes over its session.
#[test]
fn stock_udp_and_tcp_clients_share_one_ferrovpn_server() {
    let lab = Lab::new("tcp-mx", 2, FERROVPN);
    let wrap = lab.tls_crypt();
    let mut sc = lab.server_conf(wrap.clone(), ferrovpn_testkit::Cipher::Aes256Gcm);
    sc.extra.push(format!("local * {} udp", sc.port));
    sc.extra.push(format!("local * {} tcp", sc.port));
    let mut ccs = lab.client_confs(&wrap, ferrovpn_testkit::Cipher::Aes256Gcm);
    ccs[1].transport = Transport::Tcp;
    let server = lab.ferrovpn_server(&sc);
    assert!(
        server.log().contains("UDP 0.0.0.0:1194, TCP 0.0.0.0:1194"),
        "{}",
        server.log_tail(20)
    );
    let clients = lab.stock_clients_up(&ccs, &server);
    lab.ping_and_iperf3(0, "stock client over UDP", &clients[0], &server);
    lab.ping_and_iperf3(1, "stock client over TCP", &clients[1], &server);
    // Both were connected at once: the UDP one still answers.
    let p = ping(&lab.clients[0], SERVER_TUN, 2, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 1, "{p:?}");
    for c in &clients {
        // The options string named the transport each client came by.
        assert!(
            !c.log().contains("is used inconsistently"),
            "{}",
            c.log_tail(40)
        );
    }
    // The UDP client moves to TCP: same certificate, new connection.
    let mut clients = clients;
    clients[0].stop(Duration::from_secs(5));
    let mut moved = ccs[0].clone();
    moved.transport = Transport::Tcp;
    let again = lab.stock_client_up(0, "openvpn-client-0-tcp", &moved, &server);
    lab.ping_and_iperf3(0, "the UDP client, back over TCP", &again, &server);
    let p = ping(&lab.clients[1], SERVER_TUN, 2, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 1, "the other TCP client: {p:?}");
}

/// `port-share localhost 8080`: an HTTP request to the server's TCP port is
/// passed to a real HTTP server (python3 -m http.server) on 127.0.0.1 and
/// curl gets its page, while
/// a stock client connects on the same port and carries traffic.
#[test]
fn port_share_passes_http_on_while_a_stock_client_connects() {
    ferrovpn_testkit::require_root_and_tools(&["python3", "curl"]);
    let lab = lab("tcp-ps");
    let (mut sc, cc) = tcp_confs(&lab);
    let site = lab.dir.join("site");
    let journal = lab.dir.join("journal");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::create_dir_all(&journal).unwrap();
    std::fs::write(site.join("hello.txt"), "port-share works\n").unwrap();
    let mut web = Proc::spawn_in(
        &lab.server_ns,
        "http-server",
        lab.dir.path(),
        "python3",
        &[
            "-u".as_ref(),
            "-m".as_ref(),
            "http.server".as_ref(),
            "8080".as_ref(),
            "--bind".as_ref(),
            "127.0.0.1".as_ref(),
            "--directory".as_ref(),
            site.as_os_str(),
        ],
    )
    .unwrap();
    web.wait_for_log_line("Serving HTTP", CONNECT_TIMEOUT)
        .unwrap();
    // A host name, resolved at start to its first IPv4 address (as 2.6).
    sc.extra
        .push(format!("port-share localhost 8080 {}", journal.display()));
    let server = lab.ferrovpn_server(&sc);
    let url = format!("http://{}:{}/hello.txt", Lab::server_underlay(0), sc.port);
    let page = lab.clients[0]
        .exec(&["curl", "-sS", "--max-time", "10", &url])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", server.log_tail(30)));
    assert_eq!(page, "port-share works\n", "{}", server.log_tail(30));
    let mut client = lab.stock_client(0, "openvpn-client", &cc);
    client.wait_for_log_line(UP, CONNECT_TIMEOUT).unwrap();
    ping_and_iperf3_both_ways(&lab, "stock client on a port-share port");
    // HTTP still works with the client connected.
    let page = lab.clients[0]
        .exec(&["curl", "-sS", "--max-time", "10", &url])
        .unwrap();
    assert_eq!(page, "port-share works\n");
    let log = server.log();
    assert!(
        log.matches("Non-OpenVPN client protocol detected").count() >= 2,
        "{log}"
    );
    // 2.6's journal: the proxy's local address named the client's.
    assert!(log.contains("PORT SHARE PROXY: client origin"), "{log}");
}

/// Renegotiation every 3 s (the server's `reneg-sec`) while iperf3 runs
/// through the tunnel over TCP, a server of `server_imp` and a client of
/// the other: no second without traffic, no reconnect, new keys each time
/// (counted in the stock side's log: 2.6 logs every completed handshake).
fn renegotiation_during_a_transfer_over_tcp(tag: &str, server_imp: Implementation) {
    let lab = lab(tag);
    let (mut sc, cc) = tcp_confs(&lab);
    sc.reneg_sec = Some(3);
    let server = lab.server(server_imp, &sc);
    let (client_imp, client_name) = match server_imp {
        Implementation::Ferrovpn => (Implementation::Stock, "openvpn-client"),
        Implementation::Stock => (Implementation::Ferrovpn, "ferrovpn-client"),
    };
    let mut client = lab.client(client_imp, 0, client_name, &cc);
    client.wait_for_log_line(UP, CONNECT_TIMEOUT).unwrap();
    let (stock, ours) = match server_imp {
        Implementation::Ferrovpn => (&client, &server),
        Implementation::Stock => (&server, &client),
    };
    let report = iperf3_report(&lab.clients[0], &lab.server_ns, SERVER_TUN, 10, 1).unwrap();
    eprintln!(
        "renegotiation every 3 s over TCP ({server_imp:?} server): intervals {:?}, {} bytes",
        report.intervals, report.bytes
    );
    assert!(report.intervals.len() >= 9, "{:?}", report.intervals);
    let min = report.intervals.iter().copied().min().unwrap_or(0);
    assert!(
        min > 1_000_000,
        "an interval stalled: {:?}\n{}",
        report.intervals,
        ours.log_tail(40)
    );
    let log = stock.log();
    let handshakes = log.matches("Control Channel: TLS").count();
    assert!(handshakes >= 3, "{handshakes} handshakes:\n{log}");
    assert!(!log.contains("AEAD Decrypt error"), "{log}");
    assert!(!log.contains("TLS Error"), "{log}");
    let client_log = client.log();
    assert_eq!(
        client_log.matches(UP).count(),
        1,
        "the client reconnected:\n{client_log}"
    );
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}\n{}", ours.log_tail(30));
}

#[test]
fn renegotiation_during_a_transfer_over_tcp_with_a_stock_client() {
    renegotiation_during_a_transfer_over_tcp("tcp-rn", Implementation::Ferrovpn);
}

#[test]
fn renegotiation_during_a_transfer_over_tcp_with_a_stock_server() {
    renegotiation_during_a_transfer_over_tcp("tcp-rc", Implementation::Stock);
}

/// `proto tcp6` (the plain keyword: the server end with `server`, the
/// client end with `client`) in both roles over outer IPv6: a ferrovpn
/// server with a stock client, then a stock server with a ferrovpn client.
#[test]
fn proto_tcp6_both_roles_over_outer_ipv6() {
    let lab = lab("tcp-v6");
    lab.enable_ipv6();
    let client6 = Lab::client_underlay6(0);
    for server_imp in [Implementation::Ferrovpn, Implementation::Stock] {
        let client_imp = match server_imp {
            Implementation::Ferrovpn => Implementation::Stock,
            Implementation::Stock => Implementation::Ferrovpn,
        };
        let (mut sc, mut cc) = tcp_confs(&lab);
        // A later `proto` line overrides the generated one in both.
        sc.extra.push("proto tcp6".into());
        cc.extra.push("proto tcp6".into());
        cc.remote = Lab::server_underlay6(0);
        let mut server = lab.server(server_imp, &sc);
        let mut client = lab.client_up(client_imp, 0, "client-tcp6", &cc, &server);
        let what = format!("{client_imp:?} client -> {server_imp:?} server, proto tcp6");
        assert!(
            server.log().contains(&client6),
            "{what}: the server never saw {client6}:\n{}",
            log_tails(&client, &server)
        );
        let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", log_tails(&client, &server)));
        assert!(p.received >= 2, "{what}: {p:?}");
        let r = lab.iperf3(0, 1);
        eprintln!("{what}: {:.3} Gbit/s", r.gbps);
        assert!(r.bytes > 1_000_000, "{what}: {r:?}");
        client.stop(Duration::from_secs(5));
        server.stop(Duration::from_secs(5));
    }
}

/// A stock client over UDP vanishes without a goodbye (SIGKILL) and comes
/// back over the TCP listener of the same ferrovpn server with the same
/// certificate: the server drops the stale UDP session (no duplicate-cn,
/// as 2.6 deletes the earlier instance of a common name before it picks
/// an address), the client gets the address it had (ifconfig-pool-persist,
/// as in the sample server.conf) and the tunnel works.
#[test]
fn a_client_moves_from_the_udp_to_the_tcp_listener_and_keeps_its_address() {
    let lab = lab("tcp-mv");
    let (mut sc, cc) = lab.tls_crypt_confs();
    sc.extra.push(format!("local * {} udp", sc.port));
    sc.extra.push(format!("local * {} tcp", sc.port));
    sc.extra.push(format!(
        "ifconfig-pool-persist {} 1",
        lab.dir.join("ipp.txt").display()
    ));
    let server = lab.ferrovpn_server(&sc);
    let cn = &lab.pki.clients[0].cn;
    let mut udp = lab.stock_client_up(0, "openvpn-client-udp", &cc, &server);
    let before = connected_ip(&server, cn).expect("the server logs the client's address");
    ping(&lab.clients[0], SERVER_TUN, 2, Duration::from_secs(10)).unwrap();
    kill_and_reap(&mut udp);
    let mut moved = cc.clone();
    moved.transport = Transport::Tcp;
    let tcp = lab.stock_client_up(0, "openvpn-client-tcp", &moved, &server);
    assert!(
        server.log().contains(&format!(
            "new connection by client {cn} drops its session from"
        )),
        "{}",
        log_tails(&tcp, &server)
    );
    assert_eq!(
        connected_ip(&server, cn).as_deref(),
        Some(before.as_str()),
        "{}",
        log_tails(&tcp, &server)
    );
    lab.ping_and_iperf3(0, "the UDP client, back over TCP", &tcp, &server);
}

/// `connect-freq 1 8` applies to TCP connections too: of two stock clients
/// connecting at once, one gets in and the other's session is refused;
/// once the window has passed (a refused connection is closed at
/// hand-window and the client connects again) it gets in as well.
#[test]
fn connect_freq_refuses_a_tcp_burst_and_admits_a_later_connection() {
    let lab = Lab::new("tcp-cf", 2, FERROVPN);
    let wrap = lab.tls_crypt();
    let mut sc = lab.server_conf(wrap.clone(), ferrovpn_testkit::Cipher::Aes256Gcm);
    sc.transport = Transport::Tcp;
    sc.extra.push("connect-freq 1 8".into());
    sc.extra.push("hand-window 3".into());
    let mut ccs = lab.client_confs(&wrap, ferrovpn_testkit::Cipher::Aes256Gcm);
    for cc in &mut ccs {
        cc.transport = Transport::Tcp;
        cc.extra.push("connect-retry 1 1".into());
    }
    let mut server = lab.ferrovpn_server(&sc);
    let mut clients: Vec<Proc> = ccs
        .iter()
        .enumerate()
        .map(|(i, cc)| lab.stock_client(i, &format!("openvpn-client-{i}"), cc))
        .collect();
    // One is in before the window ends; the other was refused.
    assert!(
        wait_until(Duration::from_secs(7), Duration::from_millis(50), || {
            clients.iter().any(|c| c.log().contains(UP))
        }),
        "{}",
        log_tails(&clients[0], &server)
    );
    let refused = "exceed the new connection frequency limit (connect-freq)";
    assert!(
        server
            .wait_for_log_line(refused, Duration::from_secs(7))
            .is_ok(),
        "{}",
        server.log_tail(40)
    );
    assert_eq!(
        clients.iter().filter(|c| c.log().contains(UP)).count(),
        1,
        "both got in within one connect-freq window:\n{}",
        server.log_tail(40)
    );
    // The later connection gets in.
    for c in &mut clients {
        if let Err(e) = c.wait_for_log_line(UP, CONNECT_TIMEOUT) {
            panic!("{e:#}\n{}", log_tails(c, &server));
        }
    }
    for i in 0..2 {
        let p = ping(&lab.clients[i], SERVER_TUN, 2, Duration::from_secs(10)).unwrap();
        assert!(p.received >= 1, "client {i}: {p:?}");
    }
}
