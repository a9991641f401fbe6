//! The management interface of a ferrovpn server with Debian's stock
//! OpenVPN 2.6 clients connected: a management client drives `status 3`,
//! `kill` by common name, `client-kill`, `bytecount`, and a third-party
//! consumer (the `openvpn-api` package from PyPI) reads it over TCP.
//!
//! Needs root, `openvpn`, `ip`, `ping`, `python3` with `openvpn_api`
//! (`pip install openvpn-api`) and `/dev/net/tun`; every test fails loudly
//! without them. Every wait has a deadline.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrovpn_control::status;
use ferrovpn_proto::wire::SessionId;
use ferrovpn_testkit::lab::{CONNECT_TIMEOUT, LISTENING, SERVER_TUN, wait_exit};
use ferrovpn_testkit::mgmt::{Management, openvpn_api_probe, unix_management_conf};
use ferrovpn_testkit::raw_peer::{client_wrap, half_open};
use ferrovpn_testkit::{
    Cipher, Implementation, Lab, Material, Netns, Proc, ServerConf, Wrap, openvpn_server_conf,
    ping, require_root_and_tools, wait_until,
};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Stock client in namespace `i` with certificate `client{i+1}`, waited on
/// until it is up.
fn stock_client_up(lab: &Lab, i: usize, wrap: &Wrap, server: &Proc) -> Proc {
    let cc = lab.client_conf(
        i,
        &lab.pki.clients[i],
        &format!("fvtun-m{i}"),
        wrap.clone(),
        Cipher::Aes256Gcm,
    );
    lab.stock_client_up(i, &format!("openvpn-client{i}"), &cc, server)
}

/// `status 3` client rows: (common name, client id).
fn status_clients(m: &mut Management) -> Vec<(String, String)> {
    let report = m.block("status 3").join("\n");
    assert!(
        report.contains("HEADER\tCLIENT_LIST\t"),
        "no CLIENT_LIST header: {report}"
    );
    status::parse_client_list(&report)
        .into_iter()
        .map(|c| {
            assert_eq!(c.cipher, "AES-256-GCM", "{c:?}");
            let id = c.client_id.unwrap_or_else(|| panic!("no client id: {c:?}"));
            (c.common_name, id.to_string())
        })
        .collect()
}

/// The server's config with a management socket that asks for a
/// password (`s3cret`; 2.6 reads the first line of the file only), and
/// keepalive 2 10.
fn unix_socket_conf(lab: &Lab) -> (ServerConf, Wrap, PathBuf) {
    let pw = lab.dir.join("mgmt-pw.txt");
    std::fs::write(&pw, "s3cret\nignored second line\n").unwrap();
    let (mut sc, wrap, sock) = unix_management_conf(lab, &pw.display().to_string());
    sc.keepalive = Some((2, 10));
    (sc, wrap, sock)
}

#[test]
fn management_client_drives_status_kill_client_kill_and_bytecount() {
    let lab = Lab::new("mg-drive", 2, FERROVPN);
    let (sc, wrap, sock) = unix_socket_conf(&lab);
    let server = lab.ferrovpn_server(&sc);

    let mut m = Management::connect(&sock);
    m.until("password prompt", |l| l == "ENTER PASSWORD:");
    m.send("wrong");
    m.until("second prompt", |l| l == "ENTER PASSWORD:");
    m.send("s3cret");
    m.until("password accepted", |l| l == "SUCCESS: password is correct");
    m.until("welcome", |l| {
        l.starts_with(">INFO:OpenVPN Management Interface Version 5")
    });

    let _c0 = stock_client_up(&lab, 0, &wrap, &server);
    let mut c1 = stock_client_up(&lab, 1, &wrap, &server);
    // Each connection is announced with its environment.
    for cn in ["client1", "client2"] {
        m.until(&format!("ENV common_name={cn}"), |l| {
            l == format!(">CLIENT:ENV,common_name={cn}")
        });
    }

    let clients = status_clients(&mut m);
    let cid = |cn: &str| {
        clients
            .iter()
            .find(|(n, _)| n == cn)
            .map(|(_, id)| id.clone())
            .unwrap_or_else(|| panic!("{cn} not in status 3: {clients:?}"))
    };
    let (cid1, cid2) = (cid("client1"), cid("client2"));
    assert_ne!(cid1, cid2);

    // bytecount: a >BYTECOUNT_CLI line per client, with traffic counted.
    assert_eq!(m.one("bytecount 1"), "SUCCESS: bytecount interval changed");
    let p = ping(&lab.clients[1], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}");
    let line = m.until("BYTECOUNT_CLI for client2", |l| {
        l.strip_prefix(">BYTECOUNT_CLI:")
            .and_then(|r| r.split_once(','))
            .is_some_and(|(id, bytes)| {
                id == cid2
                    && bytes
                        .split(',')
                        .all(|n| n.parse::<u64>().is_ok_and(|n| n > 0))
            })
    });
    eprintln!("bytecount: {line}");
    assert_eq!(m.one("bytecount 0"), "SUCCESS: bytecount interval changed");

    // The server's log, as history and in real time.
    let log = m.block("log all");
    assert!(
        log.iter()
            .any(|l| l.contains(",I,") && l.contains("client client2 connected: 10.8.0.")),
        "{log:?}"
    );
    assert_eq!(
        m.one("log on"),
        "SUCCESS: real-time log notification set to ON"
    );

    // kill by common name: client1's session goes at once.
    assert_eq!(
        m.one("kill client1"),
        "SUCCESS: common name 'client1' found, 1 client(s) killed"
    );
    m.until(">LOG: for the kill", |l| {
        l.starts_with(">LOG:")
            && l.ends_with("client client1 disconnected: killed by the management interface")
    });
    assert!(
        !status_clients(&mut m).iter().any(|(_, id)| *id == cid1),
        "client1's session is still listed"
    );
    assert_eq!(
        m.one("kill nobody"),
        "ERROR: common name 'nobody' not found"
    );

    // client-kill with HALT: the stock client is told to stop, and exits.
    assert_eq!(
        m.one(&format!("client-kill {cid2} HALT")),
        "SUCCESS: client-kill command succeeded"
    );
    // Panics with the client's log when it does not exit.
    wait_exit(&mut c1, CONNECT_TIMEOUT);
    assert!(
        c1.log().contains("Halt command was pushed by server"),
        "{}",
        c1.log_tail(20)
    );
    // The server then drops it as after any exit: no longer listed.
    assert!(
        wait_until(CONNECT_TIMEOUT, Duration::from_millis(200), || {
            !status_clients(&mut m).iter().any(|(_, id)| *id == cid2)
        }),
        "client2 is still listed after client-kill\n{}",
        server.log_tail(20)
    );
    assert_eq!(
        m.one("client-kill 9999"),
        "ERROR: client-kill command failed"
    );
}

/// From inside `ns`: the stateless handshake with the server at `to`
/// (reset, then the server's cookie echoed in an ACK_V1) and nothing more,
/// which leaves a half-open session there. Returns the local address used.
fn half_open_session(ns: &Netns, to: SocketAddr, tls_crypt_key: &Path) -> SocketAddr {
    let wrap = client_wrap(Some(tls_crypt_key));
    ns.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        assert!(
            half_open(&s, to, &wrap, SessionId([0xa5; 8])),
            "no server reset answered ours"
        );
        let local = s.local_addr().unwrap();
        // The server's view of us: our underlay address, this port.
        SocketAddr::new(Lab::client_underlay(1).parse().unwrap(), local.port())
    })
}

/// A session that has not shown a certificate yet is no client: not in
/// `status`, not counted, and `kill` does not find it.
#[test]
fn half_open_sessions_are_not_clients() {
    let lab = Lab::new("mg-half", 2, FERROVPN);
    let (sc, wrap, sock) = unix_socket_conf(&lab);
    let mut server = lab.ferrovpn_server(&sc);
    let _c0 = stock_client_up(&lab, 0, &wrap, &server);

    let peer = half_open_session(
        &lab.clients[1],
        Lab::server_addr(1),
        &lab.dir.join("tc.key"),
    );
    server
        .wait_for_log_line(&format!("{peer}: new session"), REPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", server.log_tail(20)));

    let mut m = Management::connect(&sock);
    m.until("password prompt", |l| l == "ENTER PASSWORD:");
    m.send("s3cret");
    m.until("password accepted", |l| l == "SUCCESS: password is correct");
    let clients = status_clients(&mut m);
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert_eq!(clients[0].0, "client1");
    assert!(
        m.one("load-stats").starts_with("SUCCESS: nclients=1,"),
        "{:?}",
        m.seen()
    );
    assert_eq!(
        m.one(&format!("kill {peer}")),
        format!("ERROR: client at address {peer} not found")
    );
    assert!(server.try_exit().is_none());
}

#[test]
fn a_management_client_that_never_reads_stalls_nothing() {
    let lab = Lab::new("mg-stuck", 1, FERROVPN);
    let (sc, wrap, sock) = unix_socket_conf(&lab);
    let server = lab.ferrovpn_server(&sc);
    let _c0 = stock_client_up(&lab, 0, &wrap, &server);

    // One client asks for a lot and never reads a byte of it.
    let mut stuck = UnixStream::connect(&sock).unwrap();
    stuck.write_all(b"s3cret\nbytecount 1\n").unwrap();
    stuck
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for _ in 0..20_000 {
        if stuck.write_all(b"help\n").is_err() {
            break;
        }
    }

    // Another client is served promptly, and the tunnel carries traffic.
    let mut m = Management::connect(&sock);
    m.until("password prompt", |l| l == "ENTER PASSWORD:");
    m.send("s3cret");
    m.until("password accepted", |l| l == "SUCCESS: password is correct");
    let started = Instant::now();
    let clients = status_clients(&mut m);
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}\n{}", server.log_tail(20));
    drop(stuck);
}

/// The Python program the third-party test runs: `openvpn-api` (PyPI)
/// against the server's TCP management port.
const OPENVPN_API_PROBE: &str = r#"
import sys, openvpn_api
v = openvpn_api.VPN("127.0.0.1", int(sys.argv[1]))
with v.connection():
    print("release", v.release)
    print("version", v.version)
    s = v.state
    print("state", s.state_name, s.desc_string, s.local_virtual_v4_addr)
    st = v.get_stats()
    print("stats", st.client_count, st.bytes_in, st.bytes_out)
    print("kill", v.send_command("kill client1"))
"#;

#[test]
fn openvpn_api_from_pypi_reads_version_state_and_stats() {
    require_root_and_tools(&["python3"]);
    let lab = Lab::new("mg-pyapi", 1, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let mut sc = lab.server_conf(wrap.clone(), Cipher::Aes256Gcm);
    sc.extra.push("management 127.0.0.1 7505".into());
    let mut server = lab.ferrovpn_server(&sc);
    let _c0 = stock_client_up(&lab, 0, &wrap, &server);
    let p = ping(&lab.clients[0], SERVER_TUN, 2, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 1, "{p:?}");
    let text = openvpn_api_probe(&lab, "probe", OPENVPN_API_PROBE, &["7505"]);
    let line = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key} ")))
            .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
            .to_string()
    };
    assert_eq!(line("version"), "2.6.14");
    assert_eq!(line("state"), "CONNECTED SUCCESS 10.8.0.1");
    let stats: Vec<u64> = line("stats")
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(stats[0], 1, "{text}");
    assert!(stats[1] > 0 && stats[2] > 0, "{text}");
    server
        .wait_for_log_line(
            "client client1 disconnected: killed by the management interface",
            REPLY_TIMEOUT,
        )
        .unwrap();
}

#[test]
fn management_hold_keeps_the_server_down_until_hold_release() {
    let lab = Lab::new("mg-hold", 1, FERROVPN);
    let (mut sc, wrap, sock) = unix_management_conf(&lab, "");
    sc.extra.push("management-hold".into());
    let mut server = lab.spawn(
        &lab.server_ns,
        "ferrovpn-server",
        Implementation::Ferrovpn,
        &openvpn_server_conf(&sc),
    );
    server
        .wait_for_log_line("management interface listening", CONNECT_TIMEOUT)
        .unwrap();
    let mut m = Management::connect(&sock);
    m.until("welcome", |l| l.starts_with(">INFO:"));
    m.until("hold notice", |l| l == ">HOLD:Waiting for hold release:0");
    assert_eq!(m.one("hold"), "SUCCESS: hold=1");
    // Held: no tunnel, no VPN port.
    assert!(!server.log().contains(LISTENING), "{}", server.log());
    assert_eq!(m.one("hold release"), "SUCCESS: hold release succeeded");
    server
        .wait_for_log_line(LISTENING, CONNECT_TIMEOUT)
        .unwrap();
    let _c0 = stock_client_up(&lab, 0, &wrap, &server);
    let state = m.block("state");
    let [entry] = state.as_slice() else {
        panic!("state: {state:?}")
    };
    let (time, rest) = entry.split_once(',').unwrap();
    assert!(time.parse::<u64>().is_ok(), "{entry}");
    assert_eq!(rest, format!("CONNECTED,SUCCESS,{SERVER_TUN},,,,"));
}
