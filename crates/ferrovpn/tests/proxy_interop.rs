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
use ferrovpn_testkit::{
    ClientConf, Lab, Netns, Proc, ServerConf, Transport, ping, require_root_and_tools,
    wait_for_tcp_listen,
};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const HTTP_PORT: u16 = 8888;
const SOCKS_PORT: u16 = 1080;

fn lab(tag: &str, tools: &[&str]) -> Lab {
    require_root_and_tools(tools);
    Lab::new(tag, 1, FERROVPN)
}

/// A stock TCP server reachable only on 127.0.0.1 in the server
/// namespace, and a client config that asks for it by that address.
fn confs_behind_proxy(lab: &Lab) -> (ServerConf, ClientConf) {
    let (mut sc, mut cc) = lab.tls_crypt_confs();
    sc.transport = Transport::Tcp;
    sc.extra.push("local 127.0.0.1".into());
    cc.transport = Transport::Tcp;
    cc.remote = "127.0.0.1".into();
    cc.extra.push("connect-retry 1 2".into());
    (sc, cc)
}

/// Wait until something listens on TCP `port` in `ns`.
fn wait_listening(ns: &Netns, port: u16, what: &mut Proc) {
    assert!(
        wait_for_tcp_listen(ns, port, Duration::from_secs(10)),
        "{} does not listen:\n{}",
        what.name(),
        what.log_tail(30)
    );
}

fn tinyproxy(lab: &Lab, basic_auth: Option<(&str, &str)>) -> Proc {
    let conf = lab.dir.join("tinyproxy.conf");
    let mut text = format!(
        "Port {HTTP_PORT}\nListen {}\nTimeout 60\nMaxClients 20\nAllow 10.210.0.0/16\nLogLevel Info\nDisableViaHeader Yes\nUser nobody\nGroup nogroup\n",
        Lab::server_underlay(0)
    );
    if let Some((user, pass)) = basic_auth {
        text.push_str(&format!("BasicAuth {user} {pass}\n"));
    }
    std::fs::write(&conf, text).unwrap();
    let mut p = Proc::spawn_in(
        &lab.server_ns,
        "tinyproxy",
        lab.dir.path(),
        "tinyproxy",
        &["-d".as_ref(), "-c".as_ref(), conf.as_os_str()],
    )
    .unwrap();
    wait_listening(&lab.server_ns, HTTP_PORT, &mut p);
    p
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
    let (sc, mut cc) = confs_behind_proxy(&lab);
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
    let (sc, mut cc) = confs_behind_proxy(&lab);
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

/// Dante in the server namespace, listening on the server's underlay
/// address, relaying to 127.0.0.1 there; `commands` are the SOCKS commands
/// it passes (`connect`, `udpassociate udpreply`).
fn danted(lab: &Lab, commands: &str) -> Proc {
    let conf = lab.dir.join("danted.conf");
    std::fs::write(
        &conf,
        format!(
            "logoutput: stderr\ninternal: {} port = {SOCKS_PORT}\nexternal: 127.0.0.1\nsocksmethod: none\nclientmethod: none\nuser.privileged: root\nuser.unprivileged: nobody\nclient pass {{\n from: 0.0.0.0/0 to: 0.0.0.0/0\n}}\nsocks pass {{\n from: 0.0.0.0/0 to: 0.0.0.0/0\n command: {commands}\n log: connect error\n}}\n",
            Lab::server_underlay(0)
        ),
    )
    .unwrap();
    let pid = lab.dir.join("danted.pid");
    let mut proxy = Proc::spawn_in(
        &lab.server_ns,
        "danted",
        lab.dir.path(),
        "danted",
        &[
            "-f".as_ref(),
            conf.as_os_str(),
            "-p".as_ref(),
            pid.as_os_str(),
            "-N".as_ref(),
            "1".as_ref(),
        ],
    )
    .unwrap();
    wait_listening(&lab.server_ns, SOCKS_PORT, &mut proxy);
    proxy
}

#[test]
fn socks5_proxy_over_tcp() {
    let lab = lab("px-socks", &["danted", "ss"]);
    let (sc, mut cc) = confs_behind_proxy(&lab);
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
