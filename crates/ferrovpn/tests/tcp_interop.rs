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
