//! A ferrovpn client through real proxies to Debian's stock OpenVPN 2.6
//! over TCP: tinyproxy (HTTP CONNECT, without and with basic
//! authentication) and dante (SOCKS5), each started by the test in the
//! server's namespace. The stock server listens on 127.0.0.1 there, so
//! only a connection through the proxy can reach it.
//!
//! Needs root, `openvpn`, `tinyproxy`, `danted`, `iperf3`, `ip`, `ping`
//! and `/dev/net/tun`; every test fails loudly without them. Every wait
//! has a deadline.

use std::time::Duration;

use ferrovpn_testkit::lab::{CONNECT_TIMEOUT, SERVER_TUN, UP};
use ferrovpn_testkit::proxy::{HTTP_PORT, SOCKS_PORT, danted, tcp_confs_behind_proxy, tinyproxy};
use ferrovpn_testkit::{ClientConf, Lab, Proc, ping, require_root_and_tools};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

fn lab(tag: &str, tools: &[&str]) -> Lab {
    require_root_and_tools(tools);
    Lab::new(tag, 1, FERROVPN)
}

fn client_up(lab: &Lab, cc: &ClientConf, proxy: &Proc, server: &Proc) -> Proc {
    let mut client = lab.ferrovpn_client(0, "ferrovpn-client", cc);
    if let Err(e) = client.wait_for_log_line(UP, CONNECT_TIMEOUT) {
        panic!(
            "{e}\n--- client\n{}\n--- proxy\n{}\n--- server\n{}",
            client.log_tail(40),
            proxy.log_tail(20),
            server.log_tail(20)
        );
    }
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}\n{}", client.log_tail(20));
    client
}

#[test]
fn http_proxy_without_authentication() {
    let lab = lab("px-http", &["tinyproxy", "ss"]);
    let (sc, mut cc) = tcp_confs_behind_proxy(&lab);
    let server = lab.stock_server(&sc);
    let proxy = tinyproxy(&lab, None);
    cc.extra.push(format!(
        "http-proxy {} {HTTP_PORT}",
        Lab::server_underlay(0)
    ));
    cc.extra
        .push("http-proxy-option AGENT ferrovpn-test".into());
    cc.extra.push("http-proxy-option VERSION 1.1".into());
    let client = client_up(&lab, &cc, &proxy, &server);
    assert!(
        client.log().contains("HTTP proxy")
            && client.log().contains("tunnel to 127.0.0.1:1194 open"),
        "{}",
        client.log_tail(30)
    );
}

#[test]
fn http_proxy_with_basic_authentication() {
    let lab = lab("px-basic", &["tinyproxy", "ss"]);
    let (sc, mut cc) = tcp_confs_behind_proxy(&lab);
    let server = lab.stock_server(&sc);
    let proxy = tinyproxy(&lab, Some(("fvuser", "fv-pass")));
    // Wrong credentials first: tinyproxy answers 401 (not 407), the client
    // retries, as 2.6 does after "HTTP proxy returned bad status".
    let bad = lab.dir.join("bad-proxy-creds.txt");
    std::fs::write(&bad, "fvuser\nwrong\n").unwrap();
    let mut wrong = cc.clone();
    wrong.extra.push(format!(
        "http-proxy {} {HTTP_PORT} {} basic",
        Lab::server_underlay(0),
        bad.display()
    ));
    let mut refused = lab.ferrovpn_client(0, "ferrovpn-client-wrong", &wrong);
    refused
        .wait_for_log_line("HTTP proxy returned bad status 401", CONNECT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", refused.log_tail(30)));
    refused.stop(Duration::from_secs(5));
    // The right ones, from an inline block replacing the file's.
    cc.extra.push(format!(
        "http-proxy {} {HTTP_PORT} {} basic",
        Lab::server_underlay(0),
        bad.display()
    ));
    cc.extra
        .push("<http-proxy-user-pass>\nfvuser\nfv-pass\n</http-proxy-user-pass>".into());
    client_up(&lab, &cc, &proxy, &server);
}

#[test]
fn socks5_proxy_over_tcp() {
    let lab = lab("px-socks", &["danted", "ss"]);
    let (sc, mut cc) = tcp_confs_behind_proxy(&lab);
    let server = lab.stock_server(&sc);
    let proxy = danted(&lab, "connect");
    cc.extra.push(format!(
        "socks-proxy {} {SOCKS_PORT}",
        Lab::server_underlay(0)
    ));
    let client = client_up(&lab, &cc, &proxy, &server);
    assert!(
        client
            .log()
            .contains("SOCKS proxy: tunnel to 127.0.0.1:1194 open"),
        "{}",
        client.log_tail(30)
    );
}

/// `proto udp` through dante's UDP relay (SOCKS5 UDP ASSOCIATE): the
/// stock UDP server listens on 127.0.0.1 in the server namespace, so only
/// datagrams the relay passes on reach it; ping and iperf3 through the
/// tunnel, and the association's relay address in the client's log.
#[test]
fn socks5_proxy_over_udp() {
    let lab = lab("px-sudp", &["danted", "ss"]);
    let (mut sc, mut cc) = lab.tls_crypt_confs();
    sc.extra.push("local 127.0.0.1".into());
    cc.remote = "127.0.0.1".into();
    cc.extra.push("connect-retry 1 2".into());
    let server = lab.stock_server(&sc);
    let proxy = danted(&lab, "udpassociate udpreply");
    cc.extra.push(format!(
        "socks-proxy {} {SOCKS_PORT}",
        Lab::server_underlay(0)
    ));
    let client = client_up(&lab, &cc, &proxy, &server);
    let relay = format!(
        "SOCKS proxy wants us to send UDP to {}:",
        Lab::server_underlay(0)
    );
    assert!(client.log().contains(&relay), "{}", client.log_tail(30));
    lab.ping_and_iperf3(
        0,
        "ferrovpn client over UDP through dante",
        &client,
        &server,
    );
}
