//! A ferrovpn client walking its connection list against Debian's stock
//! OpenVPN 2.6: a dead UDP entry first, then a TCP entry that reaches the
//! server, given as `<connection>` blocks and as mixed `remote` lines (the
//! shape of OpenVPN Access Server profiles). The client must fall over to
//! the TCP entry within `connect-timeout`.
//!
//! Needs root, `openvpn`, `iperf3`, `ip`, `ping` and `/dev/net/tun`; every
//! test fails loudly without them. Every wait has a deadline.

use std::time::{Duration, Instant};

use ferrovpn_testkit::lab::{SERVER_PORT, SERVER_TUN, UP};
use ferrovpn_testkit::{ClientConf, Lab, Proc, Transport, ping};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
/// A UDP port nothing listens on.
const DEAD_PORT: u16 = 1195;
/// 2 s of silence on the dead entry, 1 s pause, then the TCP connect.
const FALLOVER: Duration = Duration::from_secs(20);

fn up_over_tcp(lab: &Lab, cc: &ClientConf, server: &Proc) -> (Proc, Duration) {
    let started = Instant::now();
    let mut client = lab.ferrovpn_client(0, "ferrovpn-client", cc);
    if let Err(e) = client.wait_for_log_line(UP, FALLOVER) {
        panic!(
            "{e}\n--- client\n{}\n--- server\n{}",
            client.log_tail(40),
            server.log_tail(20)
        );
    }
    let took = started.elapsed();
    let log = client.log();
    assert!(
        log.contains(&format!(
            "server poll timeout: no answer from {}:{DEAD_PORT} within 2s",
            Lab::server_underlay(0)
        )),
        "{}",
        client.log_tail(40)
    );
    assert!(
        log.contains("TCP connection to") && log.contains("established"),
        "{}",
        client.log_tail(40)
    );
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}\n{}", client.log_tail(20));
    (client, took)
}

#[test]
fn connection_blocks_dead_udp_then_tcp() {
    let lab = Lab::new("cl-blocks", 1, FERROVPN);
    let (mut sc, mut cc) = lab.tls_crypt_confs();
    sc.transport = Transport::Tcp;
    let server = lab.stock_server(&sc);
    // The generated `remote` line stays: with blocks, 2.6 ignores it.
    cc.transport = Transport::Tcp;
    cc.remote = "192.0.2.1".into();
    let host = Lab::server_underlay(0);
    cc.extra.push("connect-retry 1 1".into());
    cc.extra.push(format!(
        "<connection>\nremote {host} {DEAD_PORT} udp\nserver-poll-timeout 2\nexplicit-exit-notify 1\n</connection>"
    ));
    cc.extra.push(format!(
        "<connection>\nremote {host} {SERVER_PORT}\nconnect-timeout 5\n</connection>"
    ));
    let (client, took) = up_over_tcp(&lab, &cc, &server);
    eprintln!("fell over to TCP in {took:?}");
    assert!(
        !client.log().contains("192.0.2.1"),
        "the remote line outside the blocks was used:\n{}",
        client.log_tail(40)
    );
}

#[test]
fn mixed_remote_lines_dead_udp_then_tcp() {
    let lab = Lab::new("cl-remotes", 1, FERROVPN);
    let (mut sc, mut cc) = lab.tls_crypt_confs();
    sc.transport = Transport::Tcp;
    let server = lab.stock_server(&sc);
    let host = Lab::server_underlay(0);
    // Like an Access Server profile: UDP first, TCP as the fallback; the
    // generated `remote` line (TCP, via `proto tcp-client`) comes first,
    // so point it at the dead port over UDP instead.
    cc.transport = Transport::Tcp;
    cc.port = DEAD_PORT;
    cc.extra.push("server-poll-timeout 2".into());
    cc.extra.push("connect-retry 1 1".into());
    cc.extra.push(format!("remote {host} {SERVER_PORT} tcp"));
    let text = ferrovpn_testkit::openvpn_client_conf(&cc).replace(
        &format!("remote {host} {DEAD_PORT}\n"),
        &format!("remote {host} {DEAD_PORT} udp\n"),
    );
    assert!(
        text.contains(&format!("remote {host} {DEAD_PORT} udp\n")),
        "{text}"
    );
    let started = Instant::now();
    let mut client = lab.spawn(
        &lab.clients[0],
        "ferrovpn-client",
        ferrovpn_testkit::Implementation::Ferrovpn,
        &text,
    );
    if let Err(e) = client.wait_for_log_line(UP, FALLOVER) {
        panic!(
            "{e}\n--- client\n{}\n--- server\n{}",
            client.log_tail(40),
            server.log_tail(20)
        );
    }
    eprintln!("fell over to TCP in {:?}", started.elapsed());
    assert!(
        client.log().contains("server poll timeout"),
        "{}",
        client.log_tail(40)
    );
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}\n{}", client.log_tail(20));
}
