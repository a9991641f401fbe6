//! TCP transport (`proto tcp-client` / `tcp-server`): ferrovpn against
//! Debian's stock OpenVPN 2.6 in both roles, ferrovpn against itself, server
//! restarts, and hostile connections to a ferrovpn server, in namespaces
//! joined by veth (`ferrovpn_testkit::Lab`).
//!
//! Needs root, `openvpn`, `iperf3`, `ip`, `ping`, `python3` and
//! `/dev/net/tun`; every test fails loudly without them. Every wait has a
//! deadline.

use std::time::Duration;

use ferrovpn_testkit::lab::{CONNECT_TIMEOUT, SERVER_TUN, UP};
use ferrovpn_testkit::{
    ClientConf, Lab, Proc, ServerConf, Transport, iperf3_report, ping, require_root_and_tools,
    wait_until,
};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
/// The client's tunnel address (first of the pool).
const CLIENT_TUN: &str = "10.8.0.2";

fn lab(tag: &str) -> Lab {
    Lab::new(tag, 1, FERROVPN)
}

/// Server and client configs over TCP (tls-crypt, AES-256-GCM).
fn tcp_confs(lab: &Lab) -> (ServerConf, ClientConf) {
    let (mut sc, mut cc) = lab.tls_crypt_confs();
    sc.transport = Transport::Tcp;
    cc.transport = Transport::Tcp;
    (sc, cc)
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
        wait_until(CONNECT_TIMEOUT, Duration::from_millis(100), || client
            .log()
            .matches(UP)
            .count()
            >= 2),
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
    assert!(
        wait_until(CONNECT_TIMEOUT, Duration::from_millis(50), || client
            .log()
            .contains("connection ended")),
        "{}",
        client.log_tail(30)
    );
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
        wait_until(CONNECT_TIMEOUT, Duration::from_millis(50), || client
            .log()
            .matches("TCP connect to")
            .count()
            >= 2),
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
    let script_path = lab.dir.join("hostile.py");
    std::fs::write(&script_path, script).unwrap();
    let mut hostile = Proc::spawn_in(
        &lab.clients[0],
        "hostile",
        lab.dir.path(),
        "python3",
        &[script_path.as_os_str()],
    )
    .unwrap();
    hostile
        .wait_for_log_line("hostile connections open", CONNECT_TIMEOUT)
        .unwrap();
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

/// `port-share`: an HTTP request to the server's TCP port is passed to a
/// real HTTP server (python3 -m http.server) and curl gets its page, while
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
    sc.extra
        .push(format!("port-share 127.0.0.1 8080 {}", journal.display()));
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

/// Renegotiation every 3 s (server side) while iperf3 runs through a stock
/// client over TCP: no second without traffic, no reconnect, new keys.
#[test]
fn renegotiation_during_a_transfer_over_tcp_with_a_stock_client() {
    let lab = lab("tcp-rn");
    let (mut sc, cc) = tcp_confs(&lab);
    sc.reneg_sec = Some(3);
    let server = lab.ferrovpn_server(&sc);
    let mut client = lab.stock_client(0, "openvpn-client", &cc);
    client.wait_for_log_line(UP, CONNECT_TIMEOUT).unwrap();
    let report = iperf3_report(&lab.clients[0], &lab.server_ns, SERVER_TUN, 10, 1).unwrap();
    eprintln!(
        "renegotiation every 3 s over TCP: intervals {:?}, {} bytes",
        report.intervals, report.bytes
    );
    assert!(report.intervals.len() >= 9, "{:?}", report.intervals);
    let min = report.intervals.iter().copied().min().unwrap_or(0);
    assert!(
        min > 1_000_000,
        "an interval stalled: {:?}",
        report.intervals
    );
    let log = client.log();
    let handshakes = log.matches("Control Channel: TLS").count();
    assert!(handshakes >= 3, "{handshakes} handshakes:\n{log}");
    assert!(!log.contains("AEAD Decrypt error"), "{log}");
    assert!(!log.contains("TLS Error"), "{log}");
    assert_eq!(log.matches(UP).count(), 1, "the client reconnected:\n{log}");
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}\n{}", server.log_tail(30));
}
