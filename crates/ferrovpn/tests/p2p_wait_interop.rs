//! A point-to-point TLS end without `remote` waits on its `lport` for its
//! peer (OpenVPN's sample `tls-office.conf`: the office end does not know
//! the home end's dynamic address), against Debian's stock OpenVPN 2.6.
//!
//! What 2.6 does (socket.h `link_socket_verify_incoming_addr` and
//! `link_socket_set_outgoing_addr`, ssl.c `tls_pre_decrypt` and
//! `tls_multi_process`, init.c `do_close_link_socket`): without a remote
//! list every source address passes, a hard reset of the right direction
//! under a new session id that authenticates (tls-auth / tls-crypt) starts
//! a session with its sender, and the data channel goes to the session's
//! address once it is active, so a peer that restarts from a new address
//! is taken there (`float` adds nothing). A restart (ping-restart,
//! SIGUSR1) forgets the address unless `persist-remote-ip`. A TLS client
//! without `remote` never sends first: it answers the TLS server's reset
//! (2.6's TLS server with `remote` sends its reset first).
//!
//! The waiting end runs in the lab's server namespace, its peer in client
//! namespace 0; client namespace 1 holds a stranger.
//!
//! Needs root, `openvpn`, `iperf3`, `ip`, `ping`, `ss` and `/dev/net/tun`;
//! every test fails loudly without them. Every wait has a deadline.

use std::path::Path;
use std::time::Duration;

use ferrovpn_testkit::lab::{
    CONNECT_TIMEOUT, UP, count_lines, log_tails, terminate, wait_for_count,
};
use ferrovpn_testkit::{Implementation, Lab, Netns, Proc, ping, wait_until};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

/// Tunnel addresses of the waiting end and of the end with `remote`.
const WAITING_END: &str = "10.9.0.1";
const CALLING_END: &str = "10.9.0.2";
/// A second address of client namespace 0: the peer restarts from it.
const NEW_PEER_IP: &str = "10.210.1.5";

/// The control channel's wrapping: tls-auth, or tls-crypt.
#[derive(Clone, Copy)]
enum Wrap {
    TlsAuth,
    TlsCrypt,
}

/// One end of a site-to-site link: `tls-server` or `tls-client`, with
/// `remote PEER` or (`peer: None`) without, bound to `local` if given.
fn site_conf(
    lab: &Lab,
    tls_server: bool,
    peer: Option<&str>,
    local: Option<&str>,
    wrap: (Wrap, &Path),
) -> String {
    let pki = &lab.pki;
    let waiting = peer.is_none();
    let (me, other) = if waiting {
        (WAITING_END, CALLING_END)
    } else {
        (CALLING_END, WAITING_END)
    };
    let (role, who, keydir, verify) = if tls_server {
        (
            "tls-server\ndh none",
            &pki.server,
            0,
            "remote-cert-tls client",
        )
    } else {
        ("tls-client", &pki.clients[0], 1, "remote-cert-tls server")
    };
    let wrap = match wrap {
        (Wrap::TlsAuth, key) => format!("tls-auth {} {keydir}", key.display()),
        (Wrap::TlsCrypt, key) => format!("tls-crypt {}", key.display()),
    };
    let dev = if waiting { "fvwait" } else { "fvcall" };
    let mut text = format!(
        "{role}\n\
         dev {dev}\ndev-type tun\n\
         ifconfig {me} {other}\n\
         port 1194\n\
         ca {ca}\ncert {cert}\nkey {key_file}\n\
         {verify}\n\
         {wrap}\n\
         ping 1\nping-restart 10\n\
         verb 3\n",
        ca = pki.ca.cert.display(),
        cert = who.cert.display(),
        key_file = who.key.display(),
    );
    if let Some(peer) = peer {
        text.push_str(&format!("remote {peer}\n"));
    }
    if let Some(local) = local {
        text.push_str(&format!("local {local}\n"));
    }
    text
}

/// What the waiting end logs once it waits (before any peer came).
fn waiting_line(imp: Implementation) -> &'static str {
    match imp {
        // 2.6 without a remote: `UDPv4 link remote: [AF_UNSPEC]`.
        Implementation::Stock => "link remote: [AF_UNSPEC]",
        Implementation::Ferrovpn => "waiting for a peer's TLS handshake from any address",
    }
}

/// What an end logs when ping-restart restarts it.
fn ping_restart_line(imp: Implementation) -> &'static str {
    match imp {
        Implementation::Stock => "Inactivity timeout (--ping-restart)",
        Implementation::Ferrovpn => "inactivity timeout (ping-restart",
    }
}

/// What an end logs when its link came up with the peer at `addr`.
fn peer_line(imp: Implementation, addr: &str) -> String {
    match imp {
        Implementation::Stock => format!("Peer Connection Initiated with [AF_INET]{addr}:1194"),
        Implementation::Ferrovpn => format!("no 'remote': the peer is {addr}:1194"),
    }
}

/// The waiting end (`waiting_imp`, TLS role `waiting_tls_server`) in the
/// server namespace, started first and waited on until it waits.
fn start_waiting(
    lab: &Lab,
    imp: Implementation,
    waiting_tls_server: bool,
    wrap: (Wrap, &Path),
) -> Proc {
    let waiting = lab.spawn(
        &lab.server_ns,
        "waiting-end",
        imp,
        &site_conf(lab, waiting_tls_server, None, None, wrap),
    );
    assert!(
        wait_for_count(&waiting, waiting_line(imp), 1, CONNECT_TIMEOUT),
        "the waiting end does not wait:\n{}",
        waiting.log_tail(30)
    );
    waiting
}

/// The end with `remote` (the waiting end's underlay address) in client
/// namespace 0, bound to `local`.
fn start_calling(
    lab: &Lab,
    imp: Implementation,
    tls_server: bool,
    local: &str,
    wrap: (Wrap, &Path),
) -> Proc {
    lab.spawn(
        &lab.clients[0],
        "calling-end",
        imp,
        &site_conf(
            lab,
            tls_server,
            Some(&Lab::server_underlay(0)),
            Some(local),
            wrap,
        ),
    )
}

/// Wait until the waiting end `w` logged the link up `n` times, and its
/// peer `c` once.
fn wait_up(w: &Proc, c: &Proc, n: usize) {
    for (p, n) in [(w, n), (c, 1)] {
        if !wait_for_count(p, UP, n, CONNECT_TIMEOUT) {
            panic!("{} did not come up:\n{}", p.name(), log_tails(w, c));
        }
    }
}

/// Ping `addr` from `ns` through the tunnel (4 of 5 answered).
fn ping_through(ns: &Netns, addr: &str, what: &str, a: &Proc, b: &Proc) {
    let p = ping(ns, addr, 5, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", log_tails(a, b)));
    assert!(p.received >= 4, "{what}: {p:?}\n{}", log_tails(a, b));
}

/// Pings both ways through the link.
fn pings_both_ways(lab: &Lab, waiting: &Proc, calling: &Proc) {
    ping_through(
        &lab.clients[0],
        WAITING_END,
        "calling -> waiting end",
        waiting,
        calling,
    );
    ping_through(
        &lab.server_ns,
        CALLING_END,
        "waiting -> calling end",
        waiting,
        calling,
    );
}

/// The waiting end (`waiting`) and its peer with `remote` (`calling`) in
/// the TLS roles given, up and pinging both ways; the waiting end names
/// the peer's address.
fn link_comes_up(tag: &str, waiting: Implementation, calling: Implementation, tls_server: bool) {
    let lab = Lab::new(tag, 1, FERROVPN);
    let key = lab.static_key("p2p-tls-auth.key");
    let wrap = (Wrap::TlsAuth, key.as_path());
    let mut w = start_waiting(&lab, waiting, tls_server, wrap);
    let mut c = start_calling(&lab, calling, !tls_server, &Lab::client_underlay(0), wrap);
    wait_up(&w, &c, 1);
    pings_both_ways(&lab, &w, &c);
    let named = peer_line(waiting, &Lab::client_underlay(0));
    assert_eq!(count_lines(&w.log(), &named), 1, "{}", log_tails(&w, &c));
    terminate(&mut c, Duration::from_secs(10));
    terminate(&mut w, Duration::from_secs(10));
}

#[test]
fn ferrovpn_tls_server_without_remote_waits_for_stock_tls_client() {
    link_comes_up(
        "pw-fs",
        Implementation::Ferrovpn,
        Implementation::Stock,
        true,
    );
}

#[test]
fn stock_tls_server_without_remote_waits_for_ferrovpn_tls_client() {
    link_comes_up(
        "pw-sf",
        Implementation::Stock,
        Implementation::Ferrovpn,
        true,
    );
}

/// 2.6's TLS server with `remote` sends its reset first (ferrovpn's too):
/// a TLS client without `remote` answers it.
#[test]
fn ferrovpn_tls_client_without_remote_answers_stock_tls_server() {
    link_comes_up(
        "pw-fc",
        Implementation::Ferrovpn,
        Implementation::Stock,
        false,
    );
}

/// ferrovpn's TLS server with `remote` sends its reset first too.
#[test]
fn stock_tls_client_without_remote_answers_ferrovpn_tls_server() {
    link_comes_up(
        "pw-sfc",
        Implementation::Stock,
        Implementation::Ferrovpn,
        false,
    );
}

/// Both ends ferrovpn, the TLS client waiting.
#[test]
fn ferrovpn_tls_client_without_remote_answers_ferrovpn_tls_server() {
    link_comes_up(
        "pw-ffc",
        Implementation::Ferrovpn,
        Implementation::Ferrovpn,
        false,
    );
}

/// The reference for the tests above: stock on both ends.
#[test]
fn stock_tls_client_without_remote_answers_stock_tls_server() {
    link_comes_up("pw-sc", Implementation::Stock, Implementation::Stock, false);
}

/// The peer goes away and comes back from another address (a new dynamic
/// IP): the waiting end takes the new session there, and the tunnel works
/// again; the old address is not used any more.
fn takes_the_peer_again_from_a_new_address(tag: &str, waiting: Implementation) {
    let lab = Lab::new(tag, 1, FERROVPN);
    let key = lab.static_key("p2p-tls-auth.key");
    let wrap = (Wrap::TlsAuth, key.as_path());
    let mut w = start_waiting(&lab, waiting, true, wrap);
    let calling = Implementation::Stock;
    let mut c = start_calling(&lab, calling, false, &Lab::client_underlay(0), wrap);
    wait_up(&w, &c, 1);
    pings_both_ways(&lab, &w, &c);
    terminate(&mut c, Duration::from_secs(10));
    lab.clients[0]
        .add_address(&format!("{NEW_PEER_IP}/24"), &lab.veths[0].if_b)
        .unwrap();
    let mut c = start_calling(&lab, calling, false, NEW_PEER_IP, wrap);
    wait_up(&w, &c, 2);
    pings_both_ways(&lab, &w, &c);
    let log = w.log();
    assert_eq!(
        count_lines(&log, &peer_line(waiting, NEW_PEER_IP)),
        1,
        "{}",
        log_tails(&w, &c)
    );
    // Taken at once, as 2.6 takes a new session: not after ping-restart.
    assert_eq!(
        count_lines(&log, ping_restart_line(waiting)),
        0,
        "{}",
        log_tails(&w, &c)
    );
    terminate(&mut c, Duration::from_secs(10));
    terminate(&mut w, Duration::from_secs(10));
}

#[test]
fn ferrovpn_waiting_end_takes_the_peer_again_from_a_new_address() {
    takes_the_peer_again_from_a_new_address("pw-fm", Implementation::Ferrovpn);
}

/// 2.6 against itself, the reference for the ferrovpn case above. Not in
/// the suite: 2.6's waiting end does not always take the new address. In
/// 2 of 8 runs (2026-12-04, one on an idle machine) it logged the
/// new peer's `Initial packet`, went on pinging the old address
/// (`ECONNREFUSED` each second), sent the new peer an ACK that peer could
/// not route (`Unroutable control packet ... op=P_ACK_V1`), and had not
/// come up 30 s later through two of the new peer's ping-restarts. No
/// ferrovpn process takes part, so the race is 2.6's; run it with
/// `--ignored` to look at it.
#[test]
#[ignore = "2.6 against itself: its waiting end sometimes never takes the new address (see the comment)"]
fn stock_waiting_end_takes_the_peer_again_from_a_new_address() {
    takes_the_peer_again_from_a_new_address("pw-sm", Implementation::Stock);
}

/// UDP datagrams a namespace sent so far (`nstat`, history untouched).
fn udp_out(ns: &Netns) -> u64 {
    let out = ns.exec(&["nstat", "-asz", "UdpOutDatagrams"]).unwrap();
    out.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("UdpOutDatagrams")).then(|| w.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no UdpOutDatagrams in nstat output:\n{out}"))
}

/// A stranger whose resets do not authenticate (another tls-crypt key)
/// reaches the waiting end first and keeps trying: it never becomes the
/// peer; the real peer, coming later, does, and the link stays up while
/// the stranger keeps sending.
fn stranger_does_not_capture(tag: &str, waiting: Implementation) {
    let lab = Lab::new(tag, 2, FERROVPN);
    let key = lab.static_key("p2p-tls-crypt.key");
    let strangers_key = lab.static_key("stranger-tls-crypt.key");
    let mut w = start_waiting(&lab, waiting, true, (Wrap::TlsCrypt, &key));
    let before = udp_out(&lab.clients[1]);
    let stranger_conf = site_conf(
        &lab,
        false,
        Some(&Lab::server_underlay(1)),
        None,
        (Wrap::TlsCrypt, &strangers_key),
    );
    let mut stranger = lab.spawn(
        &lab.clients[1],
        "stranger",
        Implementation::Stock,
        &stranger_conf,
    );
    // Its first reset and a retransmission went out.
    let reached = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        udp_out(&lab.clients[1]) >= before + 2
    });
    assert!(reached, "{}", log_tails(&w, &stranger));
    assert_eq!(count_lines(&w.log(), UP), 0, "{}", log_tails(&w, &stranger));
    let mut c = start_calling(
        &lab,
        Implementation::Stock,
        false,
        &Lab::client_underlay(0),
        (Wrap::TlsCrypt, &key),
    );
    wait_up(&w, &c, 1);
    pings_both_ways(&lab, &w, &c);
    // The stranger is still at it (a reset every few seconds), and the
    // link with the real peer stays as it is.
    let still = udp_out(&lab.clients[1]);
    let reached = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        udp_out(&lab.clients[1]) >= still + 2
    });
    assert!(reached, "{}", log_tails(&w, &stranger));
    pings_both_ways(&lab, &w, &c);
    let log = w.log();
    assert_eq!(count_lines(&log, UP), 1, "{}", log_tails(&w, &c));
    let taken = peer_line(waiting, &Lab::client_underlay(1));
    assert_eq!(
        count_lines(&log, &taken),
        0,
        "the stranger was taken:\n{log}"
    );
    assert_eq!(
        count_lines(&stranger.log(), UP),
        0,
        "{}",
        stranger.log_tail(30)
    );
    terminate(&mut stranger, Duration::from_secs(10));
    terminate(&mut c, Duration::from_secs(10));
    terminate(&mut w, Duration::from_secs(10));
}

#[test]
fn ferrovpn_waiting_end_is_not_captured_by_a_stranger() {
    stranger_does_not_capture("pw-fx", Implementation::Ferrovpn);
}

#[test]
fn stock_waiting_end_is_not_captured_by_a_stranger() {
    stranger_does_not_capture("pw-sx", Implementation::Stock);
}
