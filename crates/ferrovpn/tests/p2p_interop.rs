//! Point-to-point TLS mode (`tls-server` / `tls-client` without `mode
//! server` / `pull`) against Debian's stock OpenVPN 2.6 in both TLS roles,
//! and a ferrovpn pair on `dev null` (the shape of OpenVPN's loopback
//! samples, written here from scratch). The lab's server namespace holds the
//! TLS server, client namespace 0 the TLS client.
//!
//! Needs root, `openvpn`, `iperf3`, `ip`, `ping`, `ss` and `/dev/net/tun`;
//! every test fails loudly without them. Every wait has a deadline.

use std::path::Path;
use std::time::Duration;

use ferrovpn_testkit::lab::{CONNECT_TIMEOUT, UP, log_tails, terminate, wait_exit, wait_for_count};
use ferrovpn_testkit::{Implementation, Lab, Netns, Proc, iperf3_report, ping, sh_script};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

/// Tunnel addresses of the TLS server's and the TLS client's end.
const SERVER_END: &str = "10.9.0.1";
const CLIENT_END: &str = "10.9.0.2";
/// A network behind each end, routed through the tunnel by `route` lines.
const SERVER_SIDE_NET: &str = "10.91.0.1";
const CLIENT_SIDE_NET: &str = "10.92.0.1";
/// Renegotiation interval of the stock-interop pairs.
const RENEG_SECS: u64 = 6;
/// What both 2.6 and ferrovpn log once P2P NCP settled a 2.6-level link.
const NCP_FULL: &str = "P2P mode NCP negotiation result: TLS_export=1, DATA_v2=1";

/// One end of a site-to-site link over `dev tun` + `ifconfig`.
fn site_conf(lab: &Lab, tls_server: bool, key: &Path) -> String {
    let pki = &lab.pki;
    let (role, me, peer, dev, who, keydir, verify, far_net) = if tls_server {
        (
            "tls-server\ndh none",
            SERVER_END,
            CLIENT_END,
            "fvp2p-s",
            &pki.server,
            0,
            "remote-cert-tls client",
            "10.92.0.0",
        )
    } else {
        (
            "tls-client",
            CLIENT_END,
            SERVER_END,
            "fvp2p-c",
            &pki.clients[0],
            1,
            "remote-cert-tls server",
            "10.91.0.0",
        )
    };
    let remote = if tls_server {
        Lab::client_underlay(0)
    } else {
        Lab::server_underlay(0)
    };
    format!(
        "{role}\n\
         dev {dev}\ndev-type tun\n\
         txqueuelen {txqueuelen}\n\
         ifconfig {me} {peer}\n\
         route {far_net} 255.255.255.0\n\
         remote {remote}\nport 1194\n\
         ca {ca}\ncert {cert}\nkey {key_file}\n\
         {verify}\n\
         tls-auth {tls_auth} {keydir}\n\
         data-ciphers AES-256-GCM:AES-128-GCM\n\
         reneg-sec {RENEG_SECS}\n\
         ping 1\nping-restart 10\n\
         verb 3\n",
        ca = pki.ca.cert.display(),
        cert = who.cert.display(),
        key_file = who.key.display(),
        tls_auth = key.display(),
        txqueuelen = site_txqueuelen(tls_server),
    )
}

/// Each end's `txqueuelen`, different so that each device shows its own.
fn site_txqueuelen(tls_server: bool) -> u32 {
    if tls_server { 321 } else { 123 }
}

/// One end of a `dev null` pair: no device, only the data channel's pings.
fn null_conf(lab: &Lab, tls_server: bool, key: &Path) -> String {
    let pki = &lab.pki;
    let (role, who, keydir, remote, lport, rport) = if tls_server {
        (
            "tls-server\ndh none",
            &pki.server,
            0,
            Lab::client_underlay(0),
            16000,
            16001,
        )
    } else {
        (
            "tls-client\nremote-cert-tls server\ninactive 8 1000000",
            &pki.clients[0],
            1,
            Lab::server_underlay(0),
            16001,
            16000,
        )
    };
    format!(
        "{role}\n\
         dev null\n\
         remote {remote}\nlport {lport}\nrport {rport}\n\
         ca {ca}\ncert {cert}\nkey {key_file}\n\
         tls-auth {tls_auth} {keydir}\n\
         cipher AES-256-GCM\n\
         ping 1\nping-restart 4\n\
         verb 3\n",
        ca = pki.ca.cert.display(),
        cert = who.cert.display(),
        key_file = who.key.display(),
        tls_auth = key.display(),
    )
}

/// Start the TLS server in the server namespace and the TLS client in
/// client namespace 0, and wait until both logged that the link is up.
fn start_pair(
    lab: &Lab,
    server_imp: Implementation,
    client_imp: Implementation,
    conf: impl Fn(&Lab, bool, &Path) -> String,
) -> (Proc, Proc) {
    let key = lab.static_key("p2p-tls-auth.key");
    let server = lab.spawn(
        &lab.server_ns,
        "p2p-tls-server",
        server_imp,
        &conf(lab, true, &key),
    );
    let mut client = lab.spawn(
        &lab.clients[0],
        "p2p-tls-client",
        client_imp,
        &conf(lab, false, &key),
    );
    for p in [&server, &client] {
        if !wait_for_count(p, UP, 1, CONNECT_TIMEOUT) {
            panic!(
                "{} did not come up:\n{}",
                p.name(),
                log_tails(&server, &client)
            );
        }
    }
    assert!(client.try_exit().is_none());
    (server, client)
}

/// Ping `addr` from `ns` through the tunnel (4 of 5 answered).
fn ping_through(ns: &Netns, addr: &str, what: &str, a: &Proc, b: &Proc) {
    let p = ping(ns, addr, 5, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", log_tails(a, b)));
    assert!(p.received >= 4, "{what}: {p:?}\n{}", log_tails(a, b));
}

/// Give `ns` an address in a network the other end routes to us.
fn add_side_net(ns: &Netns, addr: &str) {
    ns.exec(&["ip", "addr", "add", &format!("{addr}/32"), "dev", "lo"])
        .unwrap();
}

/// Pings both ways (tunnel ends and the routed networks), 2 s of iperf3
/// each way, then one renegotiation and pings with the new key.
fn exercise_site_link(lab: &Lab, server: &Proc, client: &Proc, ferrovpn: &Proc) {
    let (sns, cns) = (&lab.server_ns, &lab.clients[0]);
    // `txqueuelen` reached each end's device (ferrovpn and stock alike).
    for (ns, dev, tls_server) in [(sns, "fvp2p-s", true), (cns, "fvp2p-c", false)] {
        let link = ns.exec(&["ip", "-o", "link", "show", "dev", dev]).unwrap();
        let want = format!("qlen {}", site_txqueuelen(tls_server));
        assert!(link.contains(&want), "{dev}: want {want}: {link}");
    }
    ping_through(cns, SERVER_END, "client -> server end", server, client);
    ping_through(sns, CLIENT_END, "server -> client end", server, client);
    // `route` lines go via the peer's end: the far networks answer.
    add_side_net(sns, SERVER_SIDE_NET);
    add_side_net(cns, CLIENT_SIDE_NET);
    ping_through(
        cns,
        SERVER_SIDE_NET,
        "routed to the server side",
        server,
        client,
    );
    ping_through(
        sns,
        CLIENT_SIDE_NET,
        "routed to the client side",
        server,
        client,
    );
    for (from, to, addr, what) in [
        (cns, sns, SERVER_END, "tls-client -> tls-server"),
        (sns, cns, CLIENT_END, "tls-server -> tls-client"),
    ] {
        let r = iperf3_report(from, to, addr, 2, 1)
            .unwrap_or_else(|e| panic!("iperf3 {what}: {e:#}\n{}", log_tails(server, client)));
        eprintln!(
            "p2p {what}: {:.3} Gbit/s, {} bytes, {} retransmits",
            r.gbps, r.bytes, r.retransmits
        );
        assert!(r.bytes > 1_000_000, "{what}: {r:?}");
    }
    // reneg-sec: a second key, and traffic on it.
    let renegotiated = wait_for_count(
        ferrovpn,
        "key_id 1 active",
        1,
        Duration::from_secs(RENEG_SECS + 15),
    );
    assert!(
        renegotiated,
        "no renegotiation:\n{}",
        log_tails(server, client)
    );
    ping_through(cns, SERVER_END, "after renegotiation", server, client);
    ping_through(sns, CLIENT_END, "after renegotiation", server, client);
}

/// Both logs say P2P NCP settled TLS-EKM keys, P_DATA_V2 and the same peer-id.
fn assert_same_ncp(a: &Proc, b: &Proc) {
    let result = |p: &Proc| {
        p.log()
            .lines()
            .find_map(|l| l.find(NCP_FULL).map(|i| l[i..].trim().to_owned()))
            .unwrap_or_else(|| panic!("{} logged no full P2P NCP:\n{}", p.name(), log_tails(a, b)))
    };
    assert_eq!(result(a), result(b), "{}", log_tails(a, b));
}

#[test]
fn ferrovpn_tls_server_with_stock_tls_client() {
    let lab = Lab::new("p2p-fs", 1, FERROVPN);
    let (mut server, mut client) = start_pair(
        &lab,
        Implementation::Ferrovpn,
        Implementation::Stock,
        site_conf,
    );
    assert_same_ncp(&server, &client);
    assert!(
        client
            .log()
            .lines()
            .any(|l| l.contains("Data Channel: cipher 'AES-256-GCM'")),
        "{}",
        log_tails(&server, &client)
    );
    exercise_site_link(&lab, &server, &client, &server);
    terminate(&mut client, Duration::from_secs(10));
    terminate(&mut server, Duration::from_secs(10));
    // The tunnel's address and routes go with ferrovpn.
    let routes = lab.server_ns.exec(&["ip", "-4", "route", "show"]).unwrap();
    assert!(!routes.contains("10.92.0.0"), "{routes}");
}

#[test]
fn stock_tls_server_with_ferrovpn_tls_client() {
    let lab = Lab::new("p2p-fc", 1, FERROVPN);
    let (mut server, mut client) = start_pair(
        &lab,
        Implementation::Stock,
        Implementation::Ferrovpn,
        site_conf,
    );
    assert_same_ncp(&server, &client);
    exercise_site_link(&lab, &server, &client, &client);
    terminate(&mut client, Duration::from_secs(10));
    terminate(&mut server, Duration::from_secs(10));
    let routes = lab.clients[0].exec(&["ip", "-4", "route", "show"]).unwrap();
    assert!(!routes.contains("10.91.0.0"), "{routes}");
}

#[test]
fn ferrovpn_pair_on_dev_null_pings_until_inactive_ends_it() {
    let lab = Lab::new("p2p-null", 1, FERROVPN);
    let (mut server, mut client) = start_pair(
        &lab,
        Implementation::Ferrovpn,
        Implementation::Ferrovpn,
        null_conf,
    );
    assert_same_ncp(&server, &client);
    // No device at all on either side.
    for ns in [&lab.server_ns, &lab.clients[0]] {
        let tuns = ns
            .exec(&["ip", "-o", "link", "show", "type", "tun"])
            .unwrap();
        assert!(tuns.trim().is_empty(), "{tuns}");
    }
    let up_at = std::time::Instant::now();
    // After the handshake only the data channel's keepalives cross the
    // underlay (`ping 1` both ways): each end keeps receiving datagrams.
    let before = [udp_in(&lab.server_ns), udp_in(&lab.clients[0])];
    let pinged =
        ferrovpn_testkit::wait_until(Duration::from_secs(6), Duration::from_millis(100), || {
            udp_in(&lab.server_ns) >= before[0] + 3 && udp_in(&lab.clients[0]) >= before[1] + 3
        });
    assert!(
        pinged,
        "no keepalives over the data channel\n{}",
        log_tails(&server, &client)
    );
    // The client's `inactive 8 1000000`: pings are no tunnel traffic, so
    // it exits after 8 s, as 2.6 does; `ping 1` / `ping-restart 4` on both
    // ends would have restarted the link before that unless the pings got
    // through the data channel.
    let status = wait_exit(&mut client, Duration::from_secs(20));
    let ran = up_at.elapsed();
    assert!(
        status.success(),
        "{status:?}\n{}",
        log_tails(&server, &client)
    );
    assert!(
        count(&client, "Inactivity timeout (--inactive), exiting") == 1,
        "{}",
        log_tails(&server, &client)
    );
    assert!(ran >= Duration::from_secs(5), "exited after {ran:?}");
    for p in [&server, &client] {
        assert_eq!(
            count(p, "ping-restart"),
            0,
            "{}",
            log_tails(&server, &client)
        );
        assert_eq!(count(p, UP), 1, "{}", log_tails(&server, &client));
    }
    terminate(&mut server, Duration::from_secs(10));
}

/// UDP datagrams a namespace received so far (`nstat`, history untouched).
fn udp_in(ns: &Netns) -> u64 {
    let out = ns.exec(&["nstat", "-asz", "UdpInDatagrams"]).unwrap();
    out.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("UdpInDatagrams")).then(|| w.next()?.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no UdpInDatagrams in nstat output:\n{out}"))
}

fn count(p: &Proc, pattern: &str) -> usize {
    p.log().lines().filter(|l| l.contains(pattern)).count()
}

/// A script that appends `script_type`, `[signal]` and its arguments to `record`.
fn recording_script(lab: &Lab, name: &str, record: &Path) -> std::path::PathBuf {
    sh_script(
        lab.dir.join(name),
        &format!(
            "echo \"$script_type [$signal] $*\" >> {}\n",
            record.display()
        ),
    )
}

/// 2.6 opens the device and runs `up` at start in point-to-point mode,
/// before any peer answers: with the default `script-security 1` that is
/// refused and fatal. ferrovpn exits the same way, at the same moment
/// (no peer runs here), and the script never runs.
#[test]
fn p2p_up_disallowed_by_default_script_security_is_fatal_at_start_like_stock() {
    let lab = Lab::new("p2p-upsec", 1, FERROVPN);
    let key = lab.static_key("p2p-tls-auth.key");
    const REFUSED: &str =
        "WARNING: Failed running command (--up/--down): disallowed by script-security setting";
    for imp in [Implementation::Stock, Implementation::Ferrovpn] {
        let record = lab.dir.join(format!("{imp:?}-ran.txt"));
        let script = recording_script(&lab, &format!("{imp:?}-up.sh"), &record);
        let conf = format!("{}up {}\n", site_conf(&lab, true, &key), script.display());
        let mut p = lab.spawn(&lab.server_ns, "p2p-up-refused", imp, &conf);
        let status = wait_exit(&mut p, Duration::from_secs(15));
        assert_eq!(status.code(), Some(1), "{imp:?}:\n{}", p.log_tail(30));
        assert_eq!(count(&p, REFUSED), 1, "{imp:?}:\n{}", p.log_tail(30));
        assert!(!record.exists(), "{imp:?} ran the script");
    }
}

/// With `script-security 2`, point-to-point mode runs `up` (`dev tun_mtu 0
/// local remote init`) and `route-up` at start, before any peer answers,
/// and `route-pre-down` and `down` on exit: the same calls with the same
/// arguments as stock 2.6, run on the same config.
#[test]
fn p2p_scripts_run_at_start_with_stocks_arguments() {
    let lab = Lab::new("p2p-upargs", 1, FERROVPN);
    let key = lab.static_key("p2p-tls-auth.key");
    let mut records = Vec::new();
    for imp in [Implementation::Stock, Implementation::Ferrovpn] {
        let record = lab.dir.join(format!("{imp:?}-calls.txt"));
        let script = recording_script(&lab, &format!("{imp:?}-script.sh"), &record);
        let s = script.display();
        let conf = format!(
            "{}script-security 2\nup {s}\nroute-up {s}\nroute-pre-down {s}\ndown {s}\n",
            site_conf(&lab, true, &key),
        );
        let mut p = lab.spawn(&lab.server_ns, "p2p-up-args", imp, &conf);
        // No peer runs: both calls come from the start alone; then both
        // wait for the peer (a SIGTERM before reads `init_instance` in 2.6).
        let ran = ferrovpn_testkit::wait_until(
            Duration::from_secs(10),
            Duration::from_millis(50),
            || {
                count(&p, waiting_for_peer(imp)) >= 1
                    && std::fs::read_to_string(&record)
                        .is_ok_and(|t| t.lines().any(|l| l.starts_with("route-up")))
            },
        );
        assert!(
            ran,
            "{imp:?} did not run up and route-up at start:\n{}",
            p.log_tail(30)
        );
        let routes = lab.server_ns.exec(&["ip", "-4", "route", "show"]).unwrap();
        assert!(routes.contains("10.92.0.0/24"), "{imp:?}: {routes}");
        assert_eq!(count(&p, UP), 0, "{imp:?}");
        terminate(&mut p, Duration::from_secs(10));
        records.push(std::fs::read_to_string(&record).unwrap());
    }
    let expected = format!(
        "up [] fvp2p-s 1500 0 {SERVER_END} {CLIENT_END} init\n\
         route-up [] \n\
         route-pre-down [sigterm] fvp2p-s 1500 0 {SERVER_END} {CLIENT_END} init\n\
         down [sigterm] fvp2p-s 1500 0 {SERVER_END} {CLIENT_END} init\n"
    );
    assert_eq!(records[0], expected, "stock");
    assert_eq!(records[1], records[0], "ferrovpn differs from stock");
}

/// What `imp` logs once it started and waits for the peer.
fn waiting_for_peer(imp: Implementation) -> &'static str {
    match imp {
        Implementation::Stock => "UDPv4 link remote",
        Implementation::Ferrovpn => "waiting for the peer's TLS handshake",
    }
}

/// Without `ifconfig`, 2.6 still opens the device and runs `up` at start,
/// with empty addresses (`dev tun_mtu 0 '' '' init`).
#[test]
fn p2p_up_without_ifconfig_gets_empty_addresses_like_stock() {
    let lab = Lab::new("p2p-upnoif", 1, FERROVPN);
    let key = lab.static_key("p2p-tls-auth.key");
    let mut records = Vec::new();
    for imp in [Implementation::Stock, Implementation::Ferrovpn] {
        let record = lab.dir.join(format!("{imp:?}-noif.txt"));
        let script = recording_script(&lab, &format!("{imp:?}-noif.sh"), &record);
        let s = script.display();
        let conf: String = site_conf(&lab, true, &key)
            .lines()
            .filter(|l| !l.starts_with("ifconfig ") && !l.starts_with("route "))
            .map(|l| format!("{l}\n"))
            .collect();
        let conf = format!("{conf}script-security 2\nup {s}\ndown {s}\n");
        let mut p = lab.spawn(&lab.server_ns, "p2p-up-noif", imp, &conf);
        let ran = ferrovpn_testkit::wait_until(
            Duration::from_secs(10),
            Duration::from_millis(50),
            || count(&p, waiting_for_peer(imp)) >= 1 && record.exists(),
        );
        assert!(ran, "{imp:?} did not run up at start:\n{}", p.log_tail(30));
        terminate(&mut p, Duration::from_secs(10));
        records.push(std::fs::read_to_string(&record).unwrap());
    }
    assert_eq!(
        records[0], "up [] fvp2p-s 1500 0   init\ndown [sigterm] fvp2p-s 1500 0   init\n",
        "stock"
    );
    assert_eq!(records[1], records[0], "ferrovpn differs from stock");
}

/// Waiting for a peer that never comes, `ping-restart 2` restarts the
/// instance as in 2.6: without `persist-tun` the device goes (`route-pre-down`,
/// `down` with signal `ping-restart`) and comes again (`up`, `route-up`);
/// with it, nothing runs until the exit. Same calls as stock on the same config.
#[test]
fn p2p_ping_restart_runs_the_scripts_like_stock_with_and_without_persist_tun() {
    let lab = Lab::new("p2p-uprst", 1, FERROVPN);
    let key = lab.static_key("p2p-tls-auth.key");
    let args = format!("fvp2p-s 1500 0 {SERVER_END} {CLIENT_END} init");
    for persist in [false, true] {
        let mut records = Vec::new();
        for imp in [Implementation::Stock, Implementation::Ferrovpn] {
            let record = lab.dir.join(format!("{imp:?}-{persist}-restart.txt"));
            let script = recording_script(&lab, &format!("{imp:?}-{persist}-r.sh"), &record);
            let s = script.display();
            let conf = format!(
                "{}script-security 2\nup {s}\nroute-up {s}\nroute-pre-down {s}\ndown {s}\n\
                 ping-restart 2\n{}",
                site_conf(&lab, true, &key).replace("ping-restart 10\n", ""),
                if persist { "persist-tun\n" } else { "" },
            );
            let mut p = lab.spawn(&lab.server_ns, "p2p-up-restart", imp, &conf);
            let waiting = waiting_for_peer(imp);
            let restarted = ferrovpn_testkit::wait_until(
                Duration::from_secs(10),
                Duration::from_millis(50),
                // Both waiting for the peer again after the restart (a
                // SIGTERM during 2.6's restart pause reads `init_instance`).
                || count(&p, waiting) >= 2,
            );
            assert!(
                restarted,
                "{imp:?} persist-tun {persist}:\n{}",
                p.log_tail(30)
            );
            terminate(&mut p, Duration::from_secs(10));
            records.push(std::fs::read_to_string(&record).unwrap());
        }
        let once = format!("up [] {args}\nroute-up [] \n");
        let mut expected = once.clone();
        if !persist {
            expected += &format!(
                "route-pre-down [ping-restart] {args}\ndown [ping-restart] {args}\n{once}"
            );
        }
        expected += &format!("route-pre-down [sigterm] {args}\ndown [sigterm] {args}\n");
        assert_eq!(records[0], expected, "stock, persist-tun {persist}");
        assert_eq!(
            records[1], records[0],
            "ferrovpn differs, persist-tun {persist}"
        );
    }
}

/// Lines of `log` that show it read its peer's key-method-2 message (2.6
/// logs the peer info in it, which both P2P roles send).
fn peer_infos_read(log: &str) -> usize {
    log.lines().filter(|l| l.contains("peer info:")).count()
}

/// A P2P TLS pair whose `refuser` end (the TLS server or the TLS client,
/// of `imp`) refuses its peer with `tls-verify`; the other end is stock
/// 2.6 with `hand-window 5`. Returns how many peer-info lines the stock
/// end logged (key-method-2 messages it read) before it gave up.
fn p2p_tls_verify_refusal(lab: &Lab, refuser_is_server: bool, imp: Implementation) -> usize {
    let key = lab.static_key(&format!("refusal-{refuser_is_server}-{}.key", imp.name()));
    let refuse = sh_script(lab.dir.join("refuse.sh"), "exit 1\n");
    let refuser_conf = format!(
        "{}script-security 2\ntls-verify {}\n",
        site_conf(lab, refuser_is_server, &key),
        refuse.display()
    );
    let peer_conf = format!(
        "{}hand-window 5\n",
        site_conf(lab, !refuser_is_server, &key)
    );
    let (server_imp, server_conf, client_imp, client_conf) = if refuser_is_server {
        (imp, refuser_conf, Implementation::Stock, peer_conf)
    } else {
        (Implementation::Stock, peer_conf, imp, refuser_conf)
    };
    let server = lab.spawn(&lab.server_ns, "refusal-server", server_imp, &server_conf);
    let client = lab.spawn(&lab.clients[0], "refusal-client", client_imp, &client_conf);
    let (refuser, peer) = if refuser_is_server {
        (&server, &client)
    } else {
        (&client, &server)
    };
    let refused = wait_for_count(refuser, "VERIFY SCRIPT ERROR", 1, CONNECT_TIMEOUT);
    assert!(refused, "{}", log_tails(refuser, peer));
    let gave_up = wait_for_count(
        peer,
        "TLS key negotiation failed to occur within 5 seconds",
        1,
        CONNECT_TIMEOUT,
    );
    assert!(gave_up, "{}", log_tails(refuser, peer));
    let read = peer_infos_read(&peer.log());
    eprintln!(
        "{} refusing as TLS {}: the stock peer read {read} peer-info lines",
        imp.name(),
        if refuser_is_server {
            "server"
        } else {
            "client"
        }
    );
    read
}

/// The verify hold in P2P TLS mode, both roles: 2.6 verifies the peer
/// inside the TLS handshake, so an end whose `tls-verify` refuses its
/// peer sends it no key-method-2 message (the stock peer reads none and
/// gives up after its hand-window), with stock 2.6 as the refusing end
/// and with ferrovpn.
#[test]
fn p2p_tls_verify_refusal_sends_no_key_method_in_either_role_as_stock() {
    let lab = Lab::new("p2p-vref", 1, FERROVPN);
    for refuser_is_server in [true, false] {
        for imp in [Implementation::Stock, Implementation::Ferrovpn] {
            assert_eq!(
                p2p_tls_verify_refusal(&lab, refuser_is_server, imp),
                0,
                "{} refusing as TLS server: {refuser_is_server}",
                imp.name()
            );
        }
    }
}
