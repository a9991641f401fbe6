//! A new session from the address and port of a connected client (a
//! client restarting behind the same NAT mapping, or another one reusing
//! it): ferrovpn as the server must do what stock 2.6 does to the
//! connected client, seen through its tunnel, its scripts and `status`.
//!
//! Two stock clients share one source address and port through a relay
//! in their namespace (as clients behind one NAT mapping would): the
//! relay sends both clients' packets from one socket and hands each
//! server packet to the client whose session it belongs to.
//!
//! Needs root, `openvpn`, `ip`, `ping`, `python3` and `/dev/net/tun`;
//! fails loudly without them. Every wait has a deadline.

use std::path::Path;
use std::time::{Duration, Instant};

use ferrovpn_testkit::lab::{CONNECT_TIMEOUT, SERVER_TUN, UP, log_tails};
use ferrovpn_testkit::mgmt::{Management, same_as_stock, unix_management_conf};
use ferrovpn_testkit::{
    Cipher, Implementation, Lab, Netns, Proc, ping, require_root_and_tools, sh_script, wait_until,
};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

/// The relay's one upstream port: both clients' source port at the server.
const SHARED_PORT: u16 = 40000;
/// Where the relay listens for the first and the second client.
const RELAY_PORTS: [u16; 2] = [50001, 50002];

/// The relay (see the module docs). Control packets carry the sender's
/// session id in clear (byte 1..9, with or without tls-crypt): a server
/// session id seen for the first time belongs to the client that sent the
/// latest hard reset; data packets go to the client that sent data last.
const RELAY: &str = r#"
import select, socket
up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
up.bind(("{client}", {shared}))
server = ("{server}", 1194)
downs = []
for port in ({p0}, {p1}):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    downs.append(s)
peer = [None, None]
sids = [set(), set()]
awaiting = None
data_from = 0
print("relay ready", flush=True)
while True:
    ready, _, _ = select.select([up] + downs, [], [], 1.0)
    for s in ready:
        pkt, addr = s.recvfrom(65535)
        if not pkt:
            continue
        op = pkt[0] >> 3
        if s is up:
            if op in (6, 9):
                to = data_from
            else:
                sid = pkt[1:9]
                to = next((i for i in (0, 1) if sid in sids[i]), None)
                if to is None and awaiting is not None:
                    to = awaiting
                    sids[to].add(sid)
                    print("server session", sid.hex(), "is client", to, flush=True)
            if to is not None and peer[to] is not None:
                downs[to].sendto(pkt, peer[to])
        else:
            i = downs.index(s)
            peer[i] = addr
            if op in (7, 10):
                awaiting = i
            if op in (6, 9):
                data_from = i
            up.sendto(pkt, server)
"#;

/// What one run showed, phase by phase.
#[derive(Debug, PartialEq)]
struct Seen {
    /// The connected client's tunnel answered after tls-verify refused
    /// the new session from its address.
    kept_after_tls_verify_refusal: bool,
    /// Script calls meanwhile, in order.
    tls_verify_refusal: Vec<String>,
    /// `status` then.
    status_after_tls_verify_refusal: Vec<String>,
    /// A new session from there with another user name (and the right
    /// password) heard AUTH_FAILED.
    other_user_refused: bool,
    /// The server said why, in 2.6's words.
    other_user_reason_logged: bool,
    /// The connected client's tunnel answered after that.
    kept_after_other_user: bool,
    /// The login checks of that session (tls-verify, auth), in order.
    other_user_checks: Vec<String>,
}

/// `events`' lines after the first `skip`.
fn lines_from(events: &Path, skip: usize) -> Vec<String> {
    let text = std::fs::read_to_string(events).unwrap_or_default();
    text.lines().skip(skip).map(str::to_string).collect()
}

/// Read management lines for `d`.
fn drain(m: &mut Management, d: Duration) {
    let deadline = Instant::now() + d;
    while m.line(deadline).is_some() {}
}

fn tunnel_answers(ns: &Netns) -> bool {
    ping(ns, SERVER_TUN, 1, Duration::from_secs(1)).is_ok_and(|p| p.received > 0)
}

/// `CN REAL-ADDRESS VIRTUAL-ADDRESS` of `status 2`'s CLIENT_LIST rows.
fn status_clients(m: &mut Management) -> Vec<String> {
    m.block("status 2")
        .iter()
        .filter_map(|l| l.strip_prefix("CLIENT_LIST,"))
        .map(|r| {
            let f: Vec<&str> = r.split(',').collect();
            format!("{} {} {}", f[0], f[1], f[2])
        })
        .collect()
}

/// The server of `imp` checking logins (password `good`), certificates
/// (`tls-verify`, which refuses every certificate while the file
/// `refuse-tls` exists) and logging every script call to `events`;
/// alice connected through the relay; then the two new sessions from
/// her address (see [`Seen`]).
fn scenario(imp: Implementation) -> Seen {
    let lab = Lab::new(&format!("srep-{}", &imp.name()[..1]), 1, FERROVPN);
    let (mut sc, wrap, sock) = unix_management_conf(&lab, "");
    let events = lab.dir.join("events");
    let refuse_tls = lab.dir.join("refuse-tls");
    let log = format!(">> '{}'", events.display());
    let verify = sh_script(
        lab.dir.join("verify.sh"),
        &format!("echo \"auth $(head -n1 \"$1\")\" {log}\n[ \"$(sed -n 2p \"$1\")\" = good ]\n"),
    );
    let hook = sh_script(
        lab.dir.join("hook.sh"),
        &format!(
            "case \"$script_type\" in\n\
             learn-address) echo \"learn-address $1 $2 $3\" {log} ;;\n\
             tls-verify) [ \"$1\" = 0 ] || exit 0; echo \"tls-verify $X509_0_CN\" {log}; [ ! -e '{refuse}' ] ;;\n\
             *) echo \"$script_type $common_name\" {log} ;;\n\
             esac\n",
            refuse = refuse_tls.display()
        ),
    );
    sc.keepalive = Some((1, 30));
    sc.extra.extend([
        "script-security 2".to_string(),
        format!("auth-user-pass-verify {} via-file", verify.display()),
        format!("tls-verify {}", hook.display()),
        format!("client-connect {}", hook.display()),
        format!("client-disconnect {}", hook.display()),
        format!("learn-address {}", hook.display()),
    ]);
    let server = lab.server(imp, &sc);
    let mut m = Management::connect_when_listening(&sock, Duration::from_secs(10));
    m.until("welcome", |l| l.starts_with(">INFO:"));

    let script = RELAY
        .replace("{client}", &Lab::client_underlay(0))
        .replace("{server}", &Lab::server_underlay(0))
        .replace("{shared}", &SHARED_PORT.to_string())
        .replace("{p0}", &RELAY_PORTS[0].to_string())
        .replace("{p1}", &RELAY_PORTS[1].to_string());
    let relay = lab.python(0, "relay", &script, "relay ready");

    // A stock client with certificate `k` logging in as `user`/`pass`
    // through the relay's `relay_port`.
    let client = |k: usize, user: &str, pass: &str, relay_port: u16| -> Proc {
        let dev = format!("fvtun-{user}");
        let mut cc = lab.client_conf(
            0,
            &lab.pki.clients[k],
            &dev,
            wrap.clone(),
            Cipher::Aes256Gcm,
        );
        cc.remote = "127.0.0.1".into();
        cc.port = relay_port;
        let file = lab.dir.join(format!("{user}.pass"));
        std::fs::write(&file, format!("{user}\n{pass}\n")).unwrap();
        cc.extra.push(format!("auth-user-pass {}", file.display()));
        lab.stock_client(0, &format!("openvpn-{user}"), &cc)
    };
    let logs = |c: &Proc| {
        format!(
            "{}\n--- relay ---\n{}",
            log_tails(c, &server),
            relay.log_tail(20)
        )
    };

    let mut alice = client(0, "alice", "good", RELAY_PORTS[0]);
    if let Err(e) = alice.wait_for_log_line(UP, CONNECT_TIMEOUT) {
        panic!("{e:#}\n{}", logs(&alice));
    }
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            tunnel_answers(&lab.clients[0])
        }),
        "{}",
        logs(&alice)
    );
    drain(&mut m, Duration::from_millis(500));

    // A new session from alice's address and port whose certificate
    // tls-verify refuses.
    let before = lines_from(&events, 0).len();
    std::fs::write(&refuse_tls, "").unwrap();
    let dave = client(1, "dave", "good", RELAY_PORTS[1]);
    let verified = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        lines_from(&events, before)
            .iter()
            .any(|l| l.starts_with("tls-verify"))
    });
    assert!(verified, "{}", logs(&dave));
    drain(&mut m, Duration::from_secs(2));
    let kept_after_tls_verify_refusal = tunnel_answers(&lab.clients[0]);
    let tls_verify_refusal = lines_from(&events, before);
    let status_after_tls_verify_refusal = status_clients(&mut m);
    drop(dave);
    std::fs::remove_file(&refuse_tls).unwrap();

    // A new session from there with the right password for another user.
    let before = lines_from(&events, 0).len();
    let mut carol = client(2, "carol", "good", RELAY_PORTS[1]);
    let other_user_refused = carol
        .wait_for_log_line("AUTH_FAILED", CONNECT_TIMEOUT)
        .is_ok();
    let kept_after_other_user = tunnel_answers(&lab.clients[0]);
    let other_user_reason_logged = server.log().contains(
        "TLS Auth Error: username attempted to change from 'alice' to 'carol' -- tunnel disabled",
    );
    let other_user_checks = lines_from(&events, before)
        .into_iter()
        .filter(|l| l.starts_with("tls-verify") || l.starts_with("auth"))
        .collect();
    eprintln!("{imp:?}:\n{}\n{}", logs(&carol), alice.log_tail(10));
    Seen {
        kept_after_tls_verify_refusal,
        tls_verify_refusal,
        status_after_tls_verify_refusal,
        other_user_refused,
        other_user_reason_logged,
        kept_after_other_user,
        other_user_checks,
    }
}

/// 2.6 runs a new session from a connected client's address in that
/// client's instance: a handshake that fails (tls-verify) leaves the
/// connected client, its tunnel and its scripts alone; one that completes
/// takes the client's place, and may not change its user name.
#[test]
fn a_new_session_from_a_connected_clients_address_is_handled_as_by_stock() {
    require_root_and_tools(&["python3"]);
    let seen = same_as_stock(scenario);
    assert_eq!(
        seen,
        Seen {
            kept_after_tls_verify_refusal: true,
            tls_verify_refusal: vec!["tls-verify client2".into()],
            status_after_tls_verify_refusal: vec![format!(
                "client1 {}:{SHARED_PORT} 10.8.0.2",
                Lab::client_underlay(0)
            )],
            other_user_refused: true,
            other_user_reason_logged: true,
            kept_after_other_user: false,
            other_user_checks: vec!["tls-verify client3".into(), "auth carol".into()],
        }
    );
}
