//! The management interface of a ferrovpn server with Debian's stock
//! OpenVPN 2.6 clients connected: a management client drives `status 3`,
//! `kill` by common name, `client-kill`, `bytecount`, and a third-party
//! consumer (the `openvpn-api` package from PyPI) reads it over TCP.
//!
//! Needs root, `openvpn`, `ip`, `ping`, `python3` with `openvpn_api`
//! (`pip install openvpn-api`) and `/dev/net/tun`; every test fails loudly
//! without them. Every wait has a deadline.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrovpn_control::status;
use ferrovpn_proto::data::Side;
use ferrovpn_proto::wire::{ControlPacket, Opcode, SessionId};
use ferrovpn_proto::wrap::{ControlWrap, ReplayId, StaticKey};
use ferrovpn_testkit::lab::{CONNECT_TIMEOUT, LISTENING, SERVER_TUN};
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

/// A management connection over the unix socket, reading with deadlines.
struct Mgmt {
    out: UnixStream,
    input: BufReader<UnixStream>,
    /// Everything read so far, for failure messages.
    seen: Vec<String>,
}

impl Mgmt {
    fn connect(path: &Path) -> Mgmt {
        let s = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Mgmt {
            out: s.try_clone().unwrap(),
            input: BufReader::new(s),
            seen: Vec::new(),
        }
    }

    fn send(&mut self, line: &str) {
        self.out.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// The next line (without CRLF), or `None` at the deadline.
    fn line(&mut self, deadline: Instant) -> Option<String> {
        let mut buf = Vec::new();
        while Instant::now() < deadline {
            match self.input.read_until(b'\n', &mut buf) {
                Ok(0) => return None,
                Ok(_) if buf.ends_with(b"\n") => {
                    let l = String::from_utf8_lossy(&buf).trim_end().to_string();
                    assert!(buf.ends_with(b"\r\n"), "line without CRLF: {l:?}");
                    self.seen.push(l.clone());
                    return Some(l);
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("management read: {e}"),
            }
        }
        None
    }

    /// Read until a line satisfies `pred`; returns it, or panics at the deadline.
    fn until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while let Some(l) = self.line(deadline) {
            if pred(&l) {
                return l;
            }
        }
        panic!(
            "no {what} from the management interface; read:\n{}",
            self.seen.join("\n")
        );
    }

    /// A multi-line reply up to `END`, skipping `>` notifications.
    fn block(&mut self, cmd: &str) -> Vec<String> {
        self.send(cmd);
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut out = Vec::new();
        while let Some(l) = self.line(deadline) {
            if l == "END" {
                return out;
            }
            if !l.starts_with('>') {
                out.push(l);
            }
        }
        panic!("'{cmd}' got no END; read:\n{}", self.seen.join("\n"));
    }

    /// A one-line `SUCCESS:`/`ERROR:` reply, skipping notifications.
    fn one(&mut self, cmd: &str) -> String {
        self.send(cmd);
        self.until(&format!("reply to '{cmd}'"), |l| {
            l.starts_with("SUCCESS:") || l.starts_with("ERROR:")
        })
    }
}

/// `status 3` client rows: (common name, client id).
fn status_clients(m: &mut Mgmt) -> Vec<(String, String)> {
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

fn unix_socket_conf(lab: &Lab, wrap: &Wrap, sock: &Path) -> ServerConf {
    let pw = lab.dir.join("mgmt-pw.txt");
    std::fs::write(&pw, "s3cret\nignored second line\n").unwrap();
    let mut sc = lab.server_conf(wrap.clone(), Cipher::Aes256Gcm);
    sc.keepalive = Some((2, 10));
    sc.extra.push(format!(
        "management {} unix {}",
        sock.display(),
        pw.display()
    ));
    sc
}

#[test]
fn management_client_drives_status_kill_client_kill_and_bytecount() {
    let lab = Lab::new("mg-drive", 2, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let sock = lab.dir.join("mgmt.sock");
    let server = lab.ferrovpn_server(&unix_socket_conf(&lab, &wrap, &sock));

    let mut m = Mgmt::connect(&sock);
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
    assert!(
        wait_until(CONNECT_TIMEOUT, Duration::from_millis(100), || c1
            .try_exit()
            .is_some()),
        "the stock client did not exit after client-kill HALT\n{}",
        c1.log_tail(20)
    );
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
    let key = StaticKey::parse(&std::fs::read_to_string(tls_crypt_key).unwrap()).unwrap();
    let wrap = ControlWrap::tls_crypt(&key, Side::Client);
    let wrapped = |pkt: &ControlPacket, id: u32| {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32;
        let mut out = Vec::new();
        wrap.wrap(pkt, ReplayId { id, time }, &mut out);
        out
    };
    ns.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect(to).unwrap();
        s.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        let sid = SessionId([0xa5; 8]);
        let reset = ControlPacket {
            opcode: Opcode::HardResetClientV2,
            key_id: 0,
            session_id: sid,
            acks: Vec::new(),
            remote_session_id: None,
            message_id: Some(0),
            payload: Vec::new(),
        };
        s.send(&wrapped(&reset, 1)).unwrap();
        let mut buf = [0u8; 2048];
        let len = s.recv(&mut buf).expect("no answer to the reset");
        let (reply, _) = wrap.unwrap(&buf[..len]).unwrap();
        assert_eq!(reply.opcode, Opcode::HardResetServerV2);
        let ack = ControlPacket {
            opcode: Opcode::AckV1,
            key_id: 0,
            session_id: sid,
            acks: vec![0],
            remote_session_id: Some(reply.session_id),
            message_id: None,
            payload: Vec::new(),
        };
        s.send(&wrapped(&ack, 2)).unwrap();
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
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let sock = lab.dir.join("mgmt.sock");
    let mut server = lab.ferrovpn_server(&unix_socket_conf(&lab, &wrap, &sock));
    let _c0 = stock_client_up(&lab, 0, &wrap, &server);

    let peer = half_open_session(
        &lab.clients[1],
        Lab::server_addr(1),
        &lab.dir.join("tc.key"),
    );
    server
        .wait_for_log_line(&format!("{peer}: new session"), REPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", server.log_tail(20)));

    let mut m = Mgmt::connect(&sock);
    m.until("password prompt", |l| l == "ENTER PASSWORD:");
    m.send("s3cret");
    m.until("password accepted", |l| l == "SUCCESS: password is correct");
    let clients = status_clients(&mut m);
    assert_eq!(clients.len(), 1, "{clients:?}");
    assert_eq!(clients[0].0, "client1");
    assert!(
        m.one("load-stats").starts_with("SUCCESS: nclients=1,"),
        "{:?}",
        m.seen
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
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let sock = lab.dir.join("mgmt.sock");
    let server = lab.ferrovpn_server(&unix_socket_conf(&lab, &wrap, &sock));
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
    let mut m = Mgmt::connect(&sock);
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
    let server = lab.ferrovpn_server(&sc);
    let _c0 = stock_client_up(&lab, 0, &wrap, &server);
    let p = ping(&lab.clients[0], SERVER_TUN, 2, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 1, "{p:?}");
    let probe: PathBuf = lab.dir.join("probe.py");
    std::fs::write(&probe, OPENVPN_API_PROBE).unwrap();
    let out = lab
        .server_ns
        .command("python3", &[probe.to_str().unwrap(), "7505"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "openvpn-api probe failed (is `pip install openvpn-api` done?):\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
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
    assert!(
        wait_until(REPLY_TIMEOUT, Duration::from_millis(50), || server
            .log()
            .contains(
                "client client1 disconnected: killed by the management interface"
            )),
        "{}",
        server.log_tail(20)
    );
}

#[test]
fn management_hold_keeps_the_server_down_until_hold_release() {
    let lab = Lab::new("mg-hold", 1, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let sock = lab.dir.join("mgmt.sock");
    let mut sc = lab.server_conf(wrap.clone(), Cipher::Aes256Gcm);
    sc.extra.push(format!("management {} unix", sock.display()));
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
    let mut m = Mgmt::connect(&sock);
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
