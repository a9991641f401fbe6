//! Real proxies in a lab's server namespace, for the tests that reach a
//! server only through one: tinyproxy (HTTP CONNECT) and dante (SOCKS5),
//! both on the server's underlay address, both relaying to 127.0.0.1
//! there, where [`tcp_confs_behind_proxy`]'s server listens.

use std::time::Duration;

use crate::conf::{ClientConf, ServerConf, Transport};
use crate::lab::Lab;
use crate::net::wait_for_tcp_listen;
use crate::netns::Netns;
use crate::process::Proc;

/// tinyproxy's port.
pub const HTTP_PORT: u16 = 8888;
/// dante's port.
pub const SOCKS_PORT: u16 = 1080;

/// A TCP server reachable only on 127.0.0.1 in the server namespace, and
/// a client config that asks for it by that address (so only a proxy
/// there reaches it).
pub fn tcp_confs_behind_proxy(lab: &Lab) -> (ServerConf, ClientConf) {
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

/// tinyproxy in the server namespace on [`HTTP_PORT`], asking for
/// `basic_auth` (user, password) when given; returns once it listens.
pub fn tinyproxy(lab: &Lab, basic_auth: Option<(&str, &str)>) -> Proc {
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

/// Dante in the server namespace on [`SOCKS_PORT`], passing the SOCKS
/// `commands` (`connect`, `udpassociate udpreply`); returns once it
/// listens.
pub fn danted(lab: &Lab, commands: &str) -> Proc {
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
