//! `management-client-auth` on a ferrovpn server with Debian's stock
//! OpenVPN 2.6 clients logging in with `auth-user-pass`: the management
//! client accepts one with `client-auth` and an `ifconfig-push` in the
//! block (the client gets that address), denies one with a reason (the
//! client logs AUTH_FAILED with it), and keeps one pending with
//! `client-pending-auth ... WEB_AUTH::...` until it says `client-auth-nt`.
//! Then a third-party management consumer (`openvpn-api` from PyPI) lists
//! the connected clients.
//!
//! Needs root, `openvpn`, `ip`, `ping`, `python3` with `openvpn_api`
//! (`pip install openvpn-api`) and `/dev/net/tun`; fails loudly without
//! them. Every wait has a deadline.

use std::time::{Duration, Instant};

use ferrovpn_testkit::lab::{SERVER_TUN, UP, wait_log};
use ferrovpn_testkit::mgmt::{Management, REPLY_TIMEOUT, openvpn_api_probe, unix_management_conf};
use ferrovpn_testkit::{
    Cipher, Lab, Material, Proc, Wrap, ping, require_root_and_tools, wait_until,
};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

/// Stock client in namespace `i` logging in as `user`/`pass`; not waited on.
fn stock_client(lab: &Lab, i: usize, wrap: &Wrap, user: &str, pass: &str) -> Proc {
    let mut cc = lab.client_conf(
        i,
        &lab.pki.clients[i],
        &format!("fvtun-a{i}"),
        wrap.clone(),
        Cipher::Aes256Gcm,
    );
    cc.extra.push(lab.auth_user_pass(user, user, pass));
    lab.stock_client(i, &format!("openvpn-{user}"), &cc)
}

/// The Python program that reads the client list with `openvpn-api`
/// (PyPI) over the unix socket: `CN VIRTUAL-ADDRESS` per routing entry.
/// openvpn-status 0.2.2 (which `get_status` uses) predates the time format
/// OpenVPN 2.5+ writes in status reports (`2024-01-31 12:00:00`), so it is
/// told that format; stock 2.6 needs the same.
const OPENVPN_API_CLIENTS: &str = r#"
import sys, openvpn_api, openvpn_status.utils
openvpn_status.utils.DATETIME_FORMAT_OPENVPN = "%Y-%m-%d %H:%M:%S"
v = openvpn_api.VPN(socket=sys.argv[1])
with v.connection():
    status = v.get_status()
    for c in status.client_list.values():
        print("client", c.common_name, c.bytes_received > 0)
    for r in status.routing_table.values():
        print("route", r.common_name, r.virtual_address)
"#;

#[test]
fn management_client_accepts_with_config_denies_and_defers_stock_clients() {
    require_root_and_tools(&["python3"]);
    let lab = Lab::new("mg-auth", 2, FERROVPN);
    let (mut sc, wrap, sock) = unix_management_conf(&lab, "");
    sc.extra.push("management-client-auth".into());
    let mut server = lab.ferrovpn_server(&sc);
    let mut m = Management::connect(&sock);
    m.until("welcome", |l| l.starts_with(">INFO:"));

    // Accepted, with an address from the client-auth block.
    let mut alice = stock_client(&lab, 0, &wrap, "alice", "pw-alice");
    let connect = m.client_event("CONNECT");
    assert_eq!(connect.kid, "1", "{:?}", m.seen());
    for (k, v) in [
        ("username", "alice"),
        ("password", "pw-alice"),
        ("common_name", "client1"),
        ("untrusted_ip", Lab::client_underlay(0).as_str()),
        ("IV_PLAT", "linux"),
    ] {
        assert_eq!(
            connect.env.get(k).map(String::as_str),
            Some(v),
            "{k} in {:?}",
            connect.env
        );
    }
    assert!(
        connect
            .env
            .get("IV_VER")
            .is_some_and(|v| v.starts_with("2.6")),
        "{:?}",
        connect.env
    );
    // Nothing goes on before the management client answers.
    assert!(!alice.log().contains(UP));
    m.send(&format!("client-auth {} {}", connect.cid, connect.kid));
    m.send("ifconfig-push 10.8.0.50 255.255.255.0");
    m.send("END");
    m.until("client-auth success", |l| {
        l == "SUCCESS: client-auth command succeeded"
    });
    wait_log(&mut alice, UP, &server);
    wait_log(&mut server, "client client1 connected: 10.8.0.50", &alice);
    assert!(alice.log().contains("10.8.0.50"), "{}", alice.log_tail(30));
    m.until("ADDRESS", |l| {
        l == format!(">CLIENT:ADDRESS,{},10.8.0.50,1", connect.cid)
    });
    let established = m.client_event("ESTABLISHED");
    assert_eq!(established.cid, connect.cid);
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}");
    // A second answer for the same login changes nothing; unknown ones fail.
    assert_eq!(
        m.one("client-auth-nt 999 1"),
        "ERROR: client-auth command failed"
    );
    assert_eq!(
        m.one(&format!("client-deny {} 77 x", connect.cid)),
        "ERROR: client-deny command failed"
    );

    // Denied: the stock client hears the reason meant for it.
    let mut bob = stock_client(&lab, 1, &wrap, "bob", "pw-bob");
    let bob_connect = m.client_event("CONNECT");
    assert_eq!(
        bob_connect.env.get("username").map(String::as_str),
        Some("bob")
    );
    assert_eq!(
        m.one(&format!(
            "client-deny {} {} \"user unknown\" \"Go away bob\"",
            bob_connect.cid, bob_connect.kid
        )),
        "SUCCESS: client-deny command succeeded"
    );
    wait_log(&mut bob, "AUTH_FAILED,Go away bob", &server);
    drop(bob);

    // Deferred: pending with a web-auth URL, accepted later.
    let mut carol = stock_client(&lab, 1, &wrap, "carol", "pw-carol");
    let carol_connect = m.client_event("CONNECT");
    let url = "WEB_AUTH::http://sso.test/login?state=42";
    assert_eq!(
        m.one(&format!(
            "client-pending-auth {} {} \"{url}\" 120",
            carol_connect.cid, carol_connect.kid
        )),
        "SUCCESS: client-pending-auth command succeeded"
    );
    wait_log(
        &mut carol,
        "AUTH_PENDING received, extending handshake timeout",
        &server,
    );
    wait_log(&mut carol, url, &server);
    assert!(!carol.log().contains(UP), "{}", carol.log_tail(20));
    assert_eq!(
        m.one(&format!(
            "client-auth-nt {} {}",
            carol_connect.cid, carol_connect.kid
        )),
        "SUCCESS: client-auth command succeeded"
    );
    wait_log(&mut carol, UP, &server);
    let p = ping(&lab.clients[1], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}");

    // A third-party consumer sees both clients, alice at her address.
    let text = openvpn_api_probe(
        &lab,
        "clients",
        OPENVPN_API_CLIENTS,
        &[sock.to_str().unwrap()],
    );
    for line in [
        "client client1 True",
        "client client2 True",
        "route client1 10.8.0.50",
    ] {
        assert!(text.lines().any(|l| l == line), "no '{line}' in:\n{text}");
    }

    // Leaving: DISCONNECT with the byte counts.
    alice.stop(Duration::from_secs(5));
    let gone = m.client_event("DISCONNECT");
    assert_eq!(gone.cid, connect.cid);
    let received: u64 = gone.env["bytes_received"].parse().unwrap();
    assert!(received > 0, "{:?}", gone.env);
    assert!(gone.env.contains_key("time_duration"), "{:?}", gone.env);
    assert!(server.try_exit().is_none());
}

/// A login the management client never answers is refused at the end of
/// hand-window; one it answers with `client-pending-auth` waits longer.
#[test]
fn an_unanswered_login_times_out_with_hand_window() {
    let lab = Lab::new("mg-auth-to", 1, FERROVPN);
    let (mut sc, wrap, sock) = unix_management_conf(&lab, "");
    sc.extra.push("management-client-auth".into());
    sc.extra.push("hand-window 5".into());
    let mut server = lab.ferrovpn_server(&sc);
    let mut m = Management::connect(&sock);
    m.until("welcome", |l| l.starts_with(">INFO:"));
    let mut dave = stock_client(&lab, 0, &wrap, "dave", "pw-dave");
    let started = Instant::now();
    let connect = m.client_event("CONNECT");
    // The management client leaves without answering: the login stays
    // pending until its deadline, as in 2.6, then is refused.
    drop(m);
    wait_log(&mut dave, "AUTH_FAILED", &server);
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "refused after {:?}",
        started.elapsed()
    );
    server
        .wait_for_log_line("management client authentication timed out", REPLY_TIMEOUT)
        .unwrap();
    let _ = connect;
}

/// A management server with `management-client-auth` over a unix socket.
fn auth_server(lab: &Lab, wrap: &Wrap) -> (Proc, Management) {
    let sock = lab.dir.join("mgmt.sock");
    let mut sc = lab.server_conf(wrap.clone(), Cipher::Aes256Gcm);
    sc.extra.push(format!("management {} unix", sock.display()));
    sc.extra.push("management-client-auth".into());
    let server = lab.ferrovpn_server(&sc);
    let mut m = Management::connect(&sock);
    m.until("welcome", |l| l.starts_with(">INFO:"));
    (server, m)
}

/// REAUTH: the stock client renegotiates (`reneg-sec 6`) and sends its
/// login again; the management client hears `>CLIENT:REAUTH,CID,KID` with
/// the new key id and the login, answers `client-auth-nt`, and the client
/// stays in on the new key.
#[test]
fn a_stock_client_renegotiating_is_asked_about_with_reauth() {
    let lab = Lab::new("mg-reauth", 1, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let (mut server, mut m) = auth_server(&lab, &wrap);
    let mut cc = lab.client_conf(
        0,
        &lab.pki.clients[0],
        "fvtun-a0",
        wrap.clone(),
        Cipher::Aes256Gcm,
    );
    cc.extra.push(lab.auth_user_pass("erin", "erin", "pw-erin"));
    cc.extra.push("reneg-sec 6".into());
    let mut erin = lab.stock_client(0, "openvpn-erin", &cc);
    let connect = m.client_event("CONNECT");
    assert_eq!(
        m.one(&format!("client-auth-nt {} {}", connect.cid, connect.kid)),
        "SUCCESS: client-auth command succeeded"
    );
    wait_log(&mut erin, UP, &server);
    let reauth = m.client_event("REAUTH");
    assert_eq!(reauth.cid, connect.cid, "{:?}", m.seen());
    assert_ne!(reauth.kid, connect.kid, "{:?}", m.seen());
    assert_eq!(reauth.env.get("username").map(String::as_str), Some("erin"));
    assert_eq!(
        reauth.env.get("password").map(String::as_str),
        Some("pw-erin")
    );
    assert_eq!(
        m.one(&format!("client-auth-nt {} {}", reauth.cid, reauth.kid)),
        "SUCCESS: client-auth command succeeded"
    );
    // The renegotiation completed on the client and traffic flows.
    wait_log(&mut erin, "TLS: soft reset", &server);
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}");
    assert!(!erin.log().contains("AUTH_FAILED"), "{}", erin.log_tail(30));
    assert!(server.try_exit().is_none());
}

/// CR_RESPONSE: `client-pending-auth CID KID "CR_TEXT:E,R:Enter code" 60`
/// reaches the stock client, which shows it on its own management
/// interface (`>INFOMSG:CR_TEXT:...`); the answer given there with
/// `cr-response BASE64` reaches the server's management client as
/// `>CLIENT:CR_RESPONSE,CID,KEY_ID,BASE64`, which then accepts the login.
#[test]
fn a_challenge_answered_on_the_stock_clients_management_reaches_cr_response() {
    let lab = Lab::new("mg-crresp", 1, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let (server, mut m) = auth_server(&lab, &wrap);
    let client_sock = lab.dir.join("client-mgmt.sock");
    let mut cc = lab.client_conf(
        0,
        &lab.pki.clients[0],
        "fvtun-a0",
        wrap.clone(),
        Cipher::Aes256Gcm,
    );
    cc.extra
        .push(lab.auth_user_pass("frank", "frank", "pw-frank"));
    cc.extra
        .push(format!("management {} unix", client_sock.display()));
    // 2.6 clients announce the pending-auth methods their UI handles.
    cc.extra.push("setenv IV_SSO crtext".into());
    let mut frank = lab.stock_client(0, "openvpn-frank", &cc);
    let connect = m.client_event("CONNECT");
    assert_eq!(
        connect.env.get("IV_SSO").map(String::as_str),
        Some("crtext")
    );
    assert!(
        wait_until(REPLY_TIMEOUT, Duration::from_millis(50), || client_sock
            .exists()),
        "the stock client made no management socket"
    );
    let mut client_m = Management::connect(&client_sock);
    client_m.until("client welcome", |l| l.starts_with(">INFO:"));
    assert_eq!(
        m.one(&format!(
            "client-pending-auth {} {} \"CR_TEXT:E,R:Enter code\" 60",
            connect.cid, connect.kid
        )),
        "SUCCESS: client-pending-auth command succeeded"
    );
    client_m.until("CR_TEXT on the client", |l| {
        l == ">INFOMSG:CR_TEXT:E,R:Enter code"
    });
    // base64("4711")
    client_m.send("cr-response NDcxMQ==");
    client_m.until("cr-response reply", |l| l.starts_with("SUCCESS:"));
    let answer = m.until("CR_RESPONSE", |l| l.starts_with(">CLIENT:CR_RESPONSE,"));
    // As 2.6 (push.c, receive_cr_response): the key field is the TLS key
    // id of the client's primary key (0 on the first session), not the
    // KID of `>CLIENT:CONNECT`; `client-auth` takes the latter.
    assert_eq!(
        answer,
        format!(">CLIENT:CR_RESPONSE,{},0,NDcxMQ==", connect.cid)
    );
    assert_eq!(
        m.one(&format!("client-auth-nt {} {}", connect.cid, connect.kid)),
        "SUCCESS: client-auth command succeeded"
    );
    wait_log(&mut frank, UP, &server);
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}");
}
