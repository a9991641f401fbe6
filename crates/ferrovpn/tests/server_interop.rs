//! ferrovpn as the SERVER with Debian's stock OpenVPN 2.6 as the CLIENT(s).
//! The server runs in one network namespace, every client namespace is
//! joined to it by its own veth pair. One config text drives either
//! implementation (`ferrovpn_testkit::openvpn_*_conf`).
//!
//! Needs root, `openvpn`, `iperf3`, `ip`, `ping`, `ss` and `/dev/net/tun`;
//! every test fails loudly without them. Every wait has a deadline.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ferrovpn_testkit::lab::{
    CONNECT_TIMEOUT, SERVER_TUN, UP, connected_ip, count_lines, kill, log_tails, wait_exit,
    wait_for_count, wait_up,
};
use ferrovpn_testkit::{
    Cipher, Iperf3Server, Lab, Material, Netns, Proc, Rng, Wrap, iperf3_report,
    openvpn_server_conf, ping, wait_until,
};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

/// One stock client against a ferrovpn server: connect, ping, iperf3.
fn basic(tag: &str, wrap_of: impl Fn(&Lab) -> Wrap, cipher: Cipher, inline: bool) {
    let lab = Lab::new(tag, 1, FERROVPN);
    let wrap = wrap_of(&lab);
    let mut sc = lab.server_conf(wrap.clone(), cipher);
    let mut cc = lab.client_conf(0, &lab.pki.clients[0], "fvtun-c", wrap, cipher);
    if inline {
        sc = sc.inline().unwrap();
        cc = cc.inline().unwrap();
        let text = openvpn_server_conf(&sc);
        assert!(
            text.contains("<ca>\n") && text.contains("<key>\n"),
            "{text}"
        );
    }
    let server = lab.ferrovpn_server(&sc);
    let client = lab.stock_client_up(0, "openvpn-client", &cc, &server);
    assert_eq!(
        connected_ip(&server, "client1").as_deref(),
        Some("10.8.0.2"),
        "{}",
        log_tails(&client, &server)
    );
    lab.ping_and_iperf3(0, tag, &client, &server);
}

#[test]
fn stock_client_tls_crypt_aes256gcm_ping_iperf3() {
    basic(
        "sv-tc",
        |l| Wrap::TlsCrypt(Material::File(l.static_key("tc.key"))),
        Cipher::Aes256Gcm,
        false,
    );
}

#[test]
fn stock_client_tls_auth_sha256_aes128gcm_inline_ping_iperf3() {
    basic(
        "sv-ta",
        |l| Wrap::TlsAuth(Material::File(l.static_key("ta.key"))),
        Cipher::Aes128Gcm,
        true,
    );
}

#[test]
fn stock_client_no_wrap_chacha20_ping_iperf3() {
    basic("sv-cc", |_| Wrap::None, Cipher::Chacha20Poly1305, false);
}

/// Distinct key ids the server made active ("key_id N active"), in order.
fn active_key_ids(log: &str) -> Vec<u8> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("key_id ")? + "key_id ".len()..];
            let (n, tail) = rest.split_once(' ')?;
            (tail.trim() == "active").then(|| n.parse().ok()).flatten()
        })
        .collect()
}

/// Who starts the renegotiations in [`reneg_under_load`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Initiator {
    /// `reneg-sec 1` on both sides (the stock client fires first); ten
    /// seconds take the key id past 7 and back to 1.
    Both,
    /// `reneg-sec 2` on the server, `reneg-sec 0` (off) on the client.
    Server,
}

/// A 10 s transfer while the key is renegotiated every 1 or 2 s: the transfer
/// never stalls, key ids rotate in order, the tunnel stays up.
fn reneg_under_load(tag: &str, tls_auth: bool, initiator: Initiator) {
    let lab = Lab::new(tag, 1, FERROVPN);
    let (wrap, cipher) = if tls_auth {
        (
            Wrap::TlsAuth(Material::File(lab.static_key("ta.key"))),
            Cipher::Aes128Gcm,
        )
    } else {
        (
            Wrap::TlsCrypt(Material::File(lab.static_key("tc.key"))),
            Cipher::Aes256Gcm,
        )
    };
    let mut sc = lab.server_conf(wrap.clone(), cipher);
    sc.reneg_sec = Some(if initiator == Initiator::Both { 1 } else { 2 });
    let mut cc = lab.client_conf(0, &lab.pki.clients[0], "fvtun-c", wrap, cipher);
    cc.reneg_sec = Some(match initiator {
        Initiator::Both => 1,
        Initiator::Server => 0,
    });
    let server = lab.ferrovpn_server(&sc);
    let client = lab.stock_client_up(0, "openvpn-client", &cc, &server);
    let before = active_key_ids(&server.log());
    assert_eq!(before, vec![0], "{}", log_tails(&client, &server));

    let started = Instant::now();
    let report = lab.iperf3(0, 10);
    let (intervals, total) = (report.intervals, report.bytes);
    let took = started.elapsed();
    let slog = server.log();
    let keys = active_key_ids(&slog);
    eprintln!(
        "{tag}: {} MB in {took:?}, per second (MB): {:?}, key ids active: {keys:?}",
        total / 1_000_000,
        intervals.iter().map(|b| b / 1_000_000).collect::<Vec<_>>()
    );
    let want = match initiator {
        Initiator::Both => 9,
        Initiator::Server => 4,
    };
    assert!(
        keys.len() >= want,
        "expected >= {} renegotiations during 10 s, got key ids {keys:?}\n{}",
        want - 1,
        log_tails(&client, &server)
    );
    // Key ids go 0, 1, 2, ... 7, 1, 2 ... (0 is only used for the first key).
    for w in keys.windows(2) {
        let expected = if w[0] == 7 { 1 } else { w[0] + 1 };
        assert_eq!(w[1], expected, "key ids {keys:?}");
    }
    assert!(intervals.len() >= 9, "{intervals:?}");
    // The transfer never stalls: every second moves data, and the total is
    // far above what a tunnel that keeps breaking would carry.
    for (n, b) in intervals.iter().enumerate() {
        assert!(
            *b > 100_000,
            "second {n} of the transfer moved only {b} bytes: {intervals:?}\n{}",
            log_tails(&client, &server)
        );
    }
    assert!(total > 50_000_000, "{total} bytes in 10 s");
    // The client saw the renegotiations too (one TLS handshake each) and
    // kept the tunnel.
    let clog = client.log();
    assert!(
        count_lines(&clog, "Control Channel: TLS") >= 4,
        "client log shows no renegotiations:\n{}",
        log_tails(&client, &server)
    );
    assert!(
        !slog.contains("disconnected"),
        "{}",
        log_tails(&client, &server)
    );
    assert!(
        count_lines(&slog, "negotiation failed") == 0,
        "{}",
        log_tails(&client, &server)
    );
    if initiator == Initiator::Server {
        assert!(
            count_lines(&slog, "starting renegotiation") >= 3,
            "the server did not start the renegotiations\n{}",
            log_tails(&client, &server)
        );
    }
    let p = ping(&lab.clients[0], SERVER_TUN, 5, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 4, "{p:?}\n{}", log_tails(&client, &server));
}

#[test]
fn stock_client_renegotiates_during_transfer() {
    reneg_under_load("sv-reneg", false, Initiator::Both);
}

#[test]
fn server_renegotiates_with_stock_client_during_transfer_tls_auth() {
    reneg_under_load("sv-sreneg", true, Initiator::Server);
}

#[test]
fn two_stock_clients_get_distinct_addresses_and_reach_each_other() {
    let lab = Lab::new("sv-c2c", 2, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let cipher = Cipher::Aes256Gcm;
    let mut sc = lab.server_conf(wrap.clone(), cipher);
    sc.client_to_client = true;
    // Operators watch clients through the status file.
    let status = lab.dir.join("status.csv");
    sc.extra.push(format!("status {} 1", status.display()));
    sc.extra.push("status-version 2".into());
    let server = lab.ferrovpn_server(&sc);
    let cc_a = lab.client_conf(0, &lab.pki.clients[0], "fvtun-a", wrap.clone(), cipher);
    let a = lab.stock_client_up(0, "openvpn-client-a", &cc_a, &server);
    let cc_b = lab.client_conf(1, &lab.pki.clients[1], "fvtun-b", wrap, cipher);
    let b = lab.stock_client_up(1, "openvpn-client-b", &cc_b, &server);
    assert_eq!(
        connected_ip(&server, "client1").as_deref(),
        Some("10.8.0.2"),
        "{}",
        log_tails(&a, &server)
    );
    assert_eq!(
        connected_ip(&server, "client2").as_deref(),
        Some("10.8.0.3"),
        "{}",
        log_tails(&b, &server)
    );
    // The clients really configured what they were given.
    let addr_a = lab.clients[0]
        .exec(&["ip", "-4", "-o", "addr", "show", "dev", "fvtun-a"])
        .unwrap();
    assert!(addr_a.contains("10.8.0.2/24"), "{addr_a}");
    let addr_b = lab.clients[1]
        .exec(&["ip", "-4", "-o", "addr", "show", "dev", "fvtun-b"])
        .unwrap();
    assert!(addr_b.contains("10.8.0.3/24"), "{addr_b}");
    // Both reach the server, and A reaches B (and back) through it.
    for (i, c) in [(0, &a), (1, &b)] {
        let p = ping(&lab.clients[i], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
        assert!(p.received >= 2, "{p:?}\n{}", log_tails(c, &server));
    }
    let p = ping(&lab.clients[0], "10.8.0.3", 5, Duration::from_secs(10)).unwrap_or_else(|e| {
        panic!(
            "A -> B: {e:#}\n{}\n{}",
            log_tails(&a, &server),
            b.log_tail(30)
        )
    });
    assert!(p.received >= 4, "A -> B {p:?}");
    let p = ping(&lab.clients[1], "10.8.0.2", 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "B -> A {p:?}");
    // Both clients are listed with their addresses and the bytes they moved.
    let listed = |text: &str, cn: &str, ip: &str| {
        text.lines().any(|l| {
            let f: Vec<&str> = l.split(',').collect();
            f.len() == 13
                && f[0] == "CLIENT_LIST"
                && f[1] == cn
                && f[3] == ip
                && f[5].parse::<u64>().is_ok_and(|rx| rx > 0)
                && f[12] == cipher.name()
        })
    };
    let mut text = String::new();
    let both = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        text = std::fs::read_to_string(&status).unwrap_or_default();
        listed(&text, "client1", "10.8.0.2") && listed(&text, "client2", "10.8.0.3")
    });
    assert!(both, "status file:\n{text}");
    assert!(text.contains("\nROUTING_TABLE,10.8.0.3,client2,"), "{text}");
    assert!(text.ends_with("END\n"), "{text}");
    // With two clients each line about one names it, as 2.6's
    // `client1/10.210.1.2:PORT` prefix does.
    let log = server.log();
    for (i, cn) in [(0, "client1"), (1, "client2")] {
        let prefix = format!(" {cn}/{}:", Lab::client_underlay(i));
        assert!(
            log.lines()
                .any(|l| l.contains(&prefix) && l.contains("connected: 10.8.0.")),
            "no line with '{prefix}':\n{log}"
        );
    }
}

/// 80 pushed routes do not fit in one PUSH_REPLY: the server splits the
/// reply as 2.6 does (push-continuation) and the stock client installs every
/// route. `push-reset` and `push-remove` in the main config take out the
/// `push` lines before them.
#[test]
fn stock_client_installs_80_routes_a_ferrovpn_server_pushes_in_parts() {
    let lab = Lab::new("sv-80r", 1, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let cipher = Cipher::Aes256Gcm;
    let mut sc = lab.server_conf(wrap.clone(), cipher);
    sc.push = vec!["route 10.66.0.0 255.255.0.0".into()];
    sc.extra.extend([
        "push-reset".to_string(),
        "push \"route 10.67.0.0 255.255.0.0\"".to_string(),
        "push-remove \"route 10.67.\"".to_string(),
    ]);
    sc.extra
        .extend((0..80).map(|i| format!("push \"route 10.100.{i}.0 255.255.255.0\"")));
    let server = lab.ferrovpn_server(&sc);
    let cc = lab.client_conf(0, &lab.pki.clients[0], "fvtun-c", wrap, cipher);
    let client = lab.stock_client_up(0, "openvpn-client", &cc, &server);
    let clog = client.log();
    assert!(
        !clog.contains("unknown control message"),
        "{}",
        log_tails(&client, &server)
    );
    let routes = lab.clients[0].exec(&["ip", "-4", "route", "show"]).unwrap();
    let installed = routes
        .lines()
        .filter(|l| l.starts_with("10.100.") && l.contains("fvtun-c"))
        .count();
    assert_eq!(installed, 80, "{routes}\n{}", log_tails(&client, &server));
    assert!(
        !routes.contains("10.66.0.0") && !routes.contains("10.67.0.0"),
        "{routes}"
    );
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}\n{}", log_tails(&client, &server));
}

/// Hostile datagrams for the server port: random bytes of every size,
/// truncated control packets of every opcode, client hard resets of the
/// right shape with a wrong tls-crypt HMAC, and data packets for the
/// connected client's peer-id 0 with garbage authentication tags.
fn garbage() -> Vec<Vec<u8>> {
    let mut r = Rng(0x5eed_f00d_dead_beef);
    let mut out = Vec::new();
    // Random bytes, 0..1500 long, and a few oversized (fragmented) ones.
    for i in 0..1500 {
        let len = if i % 100 == 0 { 4000 } else { r.below(1500) };
        out.push(r.bytes(len));
    }
    // Truncated packets of every opcode and key id.
    for i in 0..1000usize {
        let op = (i % 32) as u8;
        let mut p = vec![op << 3 | (r.below(8) as u8)];
        p.extend(r.some_bytes(0, 60));
        out.push(p);
    }
    // HARD_RESET_CLIENT_V2, key id 0: session id, packet id, time, a random
    // 32-byte HMAC and a random encrypted body: the right opcode and shape,
    // the wrong tls-crypt authentication.
    for _ in 0..1000 {
        let mut p = vec![7 << 3];
        p.extend(r.bytes(8)); // session id
        p.extend(1u32.to_be_bytes()); // packet id
        p.extend((r.next_u64() as u32).to_be_bytes()); // time
        p.extend(r.bytes(32)); // HMAC
        p.extend(r.some_bytes(10, 300)); // "ciphertext"
        out.push(p);
    }
    // P_DATA_V2 for peer-id 0 (the good client) with key id 0..7: must not
    // be decrypted, counted as the peer's traffic, or make it float.
    for i in 0..1000usize {
        let mut p = vec![9 << 3 | (i % 8) as u8, 0, 0, 0];
        p.extend((i as u32 + 1).to_be_bytes());
        p.extend(r.some_bytes(16, 1400));
        out.push(p);
    }
    out
}

/// Send every datagram of `pkts` from namespace `ns` (bound to `local_port`)
/// to `to`; returns how many the kernel accepted.
fn blast(ns: &Netns, local_port: u16, to: SocketAddr, pkts: &[Vec<u8>]) -> usize {
    ns.run(|| {
        let sock = UdpSocket::bind(("0.0.0.0", local_port)).expect("bind garbage socket");
        pkts.iter().filter(|p| sock.send_to(p, to).is_ok()).count()
    })
}

#[test]
fn hostile_peers_and_garbage_do_not_disturb_a_connected_client() {
    let lab = Lab::new("sv-hostile", 1, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let cipher = Cipher::Aes256Gcm;
    let sc = lab.server_conf(wrap.clone(), cipher);
    let mut server = lab.ferrovpn_server(&sc);
    let cc = lab.client_conf(0, &lab.pki.clients[0], "fvtun-c", wrap.clone(), cipher);
    let good = lab.stock_client_up(0, "openvpn-good", &cc, &server);
    let ns = &lab.clients[0];
    let server_addr: SocketAddr = Lab::server_addr(0);

    // (a) A client whose certificate comes from a foreign CA (it trusts the
    // server's CA, and knows the tls-crypt key). Fixed source ports make
    // each hostile peer recognisable in the server log.
    let mut fc = lab.client_conf(0, &lab.pki.foreign_client, "fvtun-f", wrap, cipher);
    fc.lport = Some(40001);
    // (c) A client with the wrong tls-crypt key.
    let wrong = Wrap::TlsCrypt(Material::File(lab.static_key("wrong.key")));
    let mut wc = lab.client_conf(0, &lab.pki.clients[1], "fvtun-w", wrong, cipher);
    wc.lport = Some(40002);

    let (pings, sent, foreign, wrongkey) = std::thread::scope(|s| {
        // The good client keeps pinging through all of it: 40 pings, 8 s.
        let pinger = s.spawn(|| ping(ns, SERVER_TUN, 40, Duration::from_secs(15)));
        let foreign = lab.stock_client(0, "openvpn-foreign", &fc);
        let wrongkey = lab.stock_client(0, "openvpn-wrongkey", &wc);
        // (b) A few thousand garbage datagrams, twice.
        let pkts = garbage();
        let mut sent = blast(ns, 40003, server_addr, &pkts);
        assert!(
            wait_for_count(
                &server,
                "10.210.1.2:40001: client ? disconnected",
                1,
                CONNECT_TIMEOUT
            ),
            "the foreign-CA client was not refused\n{}",
            log_tails(&foreign, &server)
        );
        sent += blast(ns, 40003, server_addr, &pkts);
        (pinger.join().unwrap(), sent, foreign, wrongkey)
    });
    let slog = server.log();
    let all = format!(
        "{}\n{}\n--- {} ---\n{}",
        log_tails(&good, &server),
        log_tails(&foreign, &wrongkey),
        good.name(),
        good.log_tail(20)
    );
    eprintln!("hostile: {sent} garbage datagrams sent; good client's pings meanwhile: {pings:?}");
    assert!(sent >= 8000, "only {sent} garbage datagrams went out");
    let pings = pings.unwrap_or_else(|e| panic!("pings during the attack: {e:#}\n{all}"));
    assert!(
        pings.received * 4 >= pings.transmitted * 3,
        "good client lost pings during the attack: {pings:?}\n{all}"
    );
    // (a) refused: the TLS handshake failed on the certificate, no address.
    assert!(
        slog.contains("negotiation failed") || slog.contains("authentication failed"),
        "{all}"
    );
    assert!(!slog.contains("client foreign-client connected"), "{all}");
    assert!(!foreign.log().contains(UP), "{all}");
    // (c) and the garbage: no state for either source port.
    for port in [40002, 40003] {
        assert!(
            !slog.contains(&format!("10.210.1.2:{port}: new session")),
            "port {port} got a session\n{all}"
        );
    }
    assert!(!wrongkey.log().contains(UP), "{all}");
    assert!(
        !wrongkey.log().contains("Peer Connection Initiated"),
        "{all}"
    );
    assert!(slog.contains("control packets dropped"), "{all}");
    // Nobody but client1 got an address, and nothing floated.
    assert_eq!(count_lines(&slog, " connected: 10.8.0."), 1, "{all}");
    assert!(!slog.contains("floated"), "{all}");
    // The server lives and the good client still works.
    assert!(server.try_exit().is_none(), "server exited\n{all}");
    let p = ping(ns, SERVER_TUN, 5, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 4, "{p:?}\n{all}");
    let r = iperf3_report(ns, &lab.server_ns, SERVER_TUN, 2, 1).unwrap();
    assert!(r.bytes > 1_000_000, "{r:?}");
}

/// The server log lines that say `cn` disconnected.
fn disconnects(server: &Proc, cn: &str) -> Vec<String> {
    let pat = format!("client {cn} disconnected");
    server
        .log()
        .lines()
        .filter(|l| l.contains(&pat))
        .map(str::to_owned)
        .collect()
}

#[test]
fn vanished_client_is_dropped_by_ping_restart_and_exit_notify_is_prompt() {
    let lab = Lab::new("sv-keepalive", 2, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let cipher = Cipher::Aes256Gcm;
    let mut sc = lab.server_conf(wrap.clone(), cipher);
    // Server: ping every 1 s, drop after 2 x 3 = 6 s of silence; clients
    // are pushed ping 1 / ping-restart 3.
    sc.keepalive = Some((1, 3));
    let server = lab.ferrovpn_server(&sc);
    // client1 and then client3 in namespace 0, client2 in namespace 1 (two
    // live tunnels in one namespace would share the 10.8.0.0/24 route).
    let ns = &lab.clients[0];

    // client1 connects, then dies without a word (SIGKILL).
    let cc1 = lab.client_conf(0, &lab.pki.clients[0], "fvtun-1", wrap.clone(), cipher);
    let mut c1 = lab.stock_client_up(0, "openvpn-client1", &cc1, &server);
    assert!(
        c1.log().contains("ping-restart 3"),
        "keepalive not pushed\n{}",
        log_tails(&c1, &server)
    );
    assert_eq!(
        connected_ip(&server, "client1").as_deref(),
        Some("10.8.0.2")
    );
    let p = ping(ns, SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}");
    kill("-KILL", &c1);
    wait_exit(&mut c1, Duration::from_secs(5));
    let killed = Instant::now();

    // While client1's session lingers, its address stays taken.
    let cc2 = lab.client_conf(1, &lab.pki.clients[1], "fvtun-2", wrap.clone(), cipher);
    let mut c2 = lab.stock_client_up(1, "openvpn-client2", &cc2, &server);
    assert!(
        disconnects(&server, "client1").is_empty(),
        "client1 dropped before its ping-restart\n{}",
        log_tails(&c2, &server)
    );
    assert_eq!(
        connected_ip(&server, "client2").as_deref(),
        Some("10.8.0.3"),
        "{}",
        log_tails(&c2, &server)
    );

    // The server drops client1 after 6 s of silence, not much later.
    assert!(
        wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
            !disconnects(&server, "client1").is_empty()
        }),
        "client1 never dropped\n{}",
        log_tails(&c2, &server)
    );
    let dropped_after = killed.elapsed();
    let d = disconnects(&server, "client1");
    eprintln!("keepalive: client1 dropped {dropped_after:?} after SIGKILL: {d:?}");
    assert!(d[0].contains("ping-restart"), "{d:?}");
    assert!(
        dropped_after >= Duration::from_secs(4) && dropped_after <= Duration::from_secs(10),
        "dropped {dropped_after:?} after the kill; ping-restart is 6 s\n{}",
        server.log_tail(30)
    );

    // client3 comes next. As in 2.6's pool, a newcomer gets the free
    // address released longest ago, and one never used counts as released
    // first: .4, not client1's .2 (kept for client1's return).
    let cc3 = lab.client_conf(0, &lab.pki.clients[2], "fvtun-3", wrap, cipher);
    let c3 = lab.stock_client_up(0, "openvpn-client3", &cc3, &server);
    assert_eq!(
        connected_ip(&server, "client3").as_deref(),
        Some("10.8.0.4"),
        "not 2.6's pool order\n{}",
        log_tails(&c3, &server)
    );
    let p = ping(ns, SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}");
    let p = ping(&lab.server_ns, "10.8.0.4", 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "server -> client3 {p:?}");

    // client2 leaves with SIGTERM: explicit-exit-notify tells the server,
    // which drops it within seconds, well before any ping-restart.
    kill("-TERM", &c2);
    let termed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
            !disconnects(&server, "client2").is_empty()
        }),
        "client2 never dropped\n{}",
        log_tails(&c2, &server)
    );
    let gone_after = termed.elapsed();
    let d = disconnects(&server, "client2");
    eprintln!("exit-notify: client2 dropped {gone_after:?} after SIGTERM: {d:?}");
    assert!(!d[0].contains("ping-restart"), "{d:?}");
    assert!(
        gone_after < Duration::from_secs(4),
        "exit notification took {gone_after:?}\n{}",
        log_tails(&c2, &server)
    );
    assert!(server.log().contains("client announced exit"));
    wait_exit(&mut c2, Duration::from_secs(10));
    // client3 is unaffected.
    let p = ping(ns, SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}");
}

#[test]
fn stock_client_restart_from_same_port_gets_a_fresh_session() {
    let lab = Lab::new("sv-restart", 1, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let cipher = Cipher::Chacha20Poly1305;
    let server = lab.ferrovpn_server(&lab.server_conf(wrap.clone(), cipher));
    let mut cc = lab.client_conf(0, &lab.pki.clients[0], "fvtun-c", wrap, cipher);
    // A fixed source port: the restarted session comes from the same address.
    cc.lport = Some(40010);
    let mut client = lab.stock_client(0, "openvpn-client", &cc);
    wait_up(&mut client, &server, cipher);
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}");
    // SIGUSR1: the stock client restarts with a new session id.
    kill("-USR1", &client);
    assert!(
        wait_for_count(&client, UP, 2, CONNECT_TIMEOUT),
        "client did not come back after SIGUSR1\n{}",
        log_tails(&client, &server)
    );
    assert!(
        wait_for_count(
            &server,
            "client client1 connected: 10.8.0.2",
            2,
            CONNECT_TIMEOUT
        ),
        "{}",
        log_tails(&client, &server)
    );
    let slog = server.log();
    assert_eq!(
        count_lines(&slog, "10.210.1.2:40010: new session"),
        2,
        "{slog}"
    );
    assert_eq!(count_lines(&slog, " connected: 10.8.0."), 2, "{slog}");
    let p = ping(&lab.clients[0], SERVER_TUN, 5, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", log_tails(&client, &server)));
    assert!(p.received >= 4, "{p:?}\n{}", log_tails(&client, &server));
    let p = ping(&lab.server_ns, "10.8.0.2", 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "server -> client {p:?}");
}

#[test]
fn second_connection_with_the_same_cn_replaces_the_first() {
    // Without `duplicate-cn` (the default) OpenVPN drops a client's earlier
    // session when the same certificate CN connects again.
    let lab = Lab::new("sv-dupcn", 2, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let cipher = Cipher::Aes256Gcm;
    let server = lab.ferrovpn_server(&lab.server_conf(wrap.clone(), cipher));
    let cc_a = lab.client_conf(0, &lab.pki.clients[0], "fvtun-a", wrap.clone(), cipher);
    let a = lab.stock_client_up(0, "openvpn-client-a", &cc_a, &server);
    let cc_b = lab.client_conf(1, &lab.pki.clients[0], "fvtun-b", wrap, cipher);
    let b = lab.stock_client_up(1, "openvpn-client-b", &cc_b, &server);
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
            disconnects(&server, "client1")
                .iter()
                .any(|l| l.contains("10.210.1.2:"))
        }),
        "the first client1 session was not dropped\n{}\n{}",
        log_tails(&a, &server),
        b.log_tail(20)
    );
    let d = disconnects(&server, "client1");
    assert_eq!(d.len(), 1, "{d:?}");
    let p = ping(&lab.clients[1], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}\n{}", log_tails(&b, &server));
}

#[test]
fn duplicate_cn_lets_one_certificate_connect_twice() {
    let lab = Lab::new("sv-dupcn2", 2, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let cipher = Cipher::Aes256Gcm;
    let mut sc = lab.server_conf(wrap.clone(), cipher);
    sc.extra.push("duplicate-cn".into());
    let server = lab.ferrovpn_server(&sc);
    let cc_a = lab.client_conf(0, &lab.pki.clients[0], "fvtun-a", wrap.clone(), cipher);
    let _a = lab.stock_client_up(0, "openvpn-client-a", &cc_a, &server);
    let cc_b = lab.client_conf(1, &lab.pki.clients[0], "fvtun-b", wrap, cipher);
    let b = lab.stock_client_up(1, "openvpn-client-b", &cc_b, &server);
    assert!(
        wait_for_count(
            &server,
            "client client1 connected: 10.8.0.3",
            1,
            CONNECT_TIMEOUT
        ),
        "{}",
        log_tails(&b, &server)
    );
    for i in 0..2 {
        let p = ping(&lab.clients[i], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
        assert!(
            p.received >= 2,
            "client {i}: {p:?}\n{}",
            server.log_tail(20)
        );
    }
    assert!(
        disconnects(&server, "client1").is_empty(),
        "{}",
        server.log()
    );
}

#[test]
fn server_reneg_bytes_renegotiates_during_transfer() {
    let lab = Lab::new("sv-renegb", 1, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let cipher = Cipher::Aes256Gcm;
    let mut sc = lab.server_conf(wrap.clone(), cipher);
    // Only the byte count triggers renegotiation: 20 MB, time-based off on
    // both sides.
    sc.reneg_sec = Some(0);
    sc.extra.push("reneg-bytes 20000000".into());
    let mut cc = lab.client_conf(0, &lab.pki.clients[0], "fvtun-c", wrap, cipher);
    cc.reneg_sec = Some(0);
    let server = lab.ferrovpn_server(&sc);
    let client = lab.stock_client_up(0, "openvpn-client", &cc, &server);
    let report = lab.iperf3(0, 3);
    let (intervals, total) = (report.intervals, report.bytes);
    let slog = server.log();
    let keys = active_key_ids(&slog);
    eprintln!(
        "reneg-bytes: {} MB, per second (MB): {:?}, key ids active: {keys:?}",
        total / 1_000_000,
        intervals.iter().map(|b| b / 1_000_000).collect::<Vec<_>>()
    );
    assert!(total > 100_000_000, "{total} bytes: too little to judge");
    assert!(
        count_lines(&slog, "starting renegotiation") >= 3 && keys.len() >= 4,
        "{} MB moved, reneg-bytes 20 MB, but the server renegotiated {} times (key ids {keys:?})\n{}",
        total / 1_000_000,
        count_lines(&slog, "starting renegotiation"),
        log_tails(&client, &server)
    );
    for w in keys.windows(2) {
        let expected = if w[0] == 7 { 1 } else { w[0] + 1 };
        assert_eq!(w[1], expected, "key ids {keys:?}");
    }
    assert!(
        !slog.contains("disconnected"),
        "{}",
        log_tails(&client, &server)
    );
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}\n{}", log_tails(&client, &server));
}

/// One tls-crypt-wrapped HARD_RESET_CLIENT_V2 as a stock client sends it
/// first (what an on-path observer can capture and replay).
fn captured_client_reset(key_file: &std::path::Path) -> Vec<u8> {
    use ferrovpn_proto::wire::SessionId;
    use ferrovpn_testkit::raw_peer::{client_reset, client_wrap, wrapped};
    let sid = SessionId([0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    wrapped(&client_wrap(Some(key_file)), &client_reset(sid), 1)
}

#[test]
fn replayed_client_resets_from_many_ports_do_not_lock_out_clients() {
    let lab = Lab::new("sv-replay", 1, FERROVPN);
    let key = lab.static_key("tc.key");
    let wrap = Wrap::TlsCrypt(Material::File(key.clone()));
    let cipher = Cipher::Aes256Gcm;
    let mut server = lab.ferrovpn_server(&lab.server_conf(wrap.clone(), cipher));
    let ns = &lab.clients[0];
    let server_addr: SocketAddr = Lab::server_addr(0);
    let reset = captured_client_reset(&key);
    // The same captured packet replayed from 1100 source ports (more than
    // the default max-clients 1024).
    let sent = ns.run(|| {
        let mut n = 0;
        for _ in 0..1100 {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            if s.send_to(&reset, server_addr).is_ok() {
                n += 1;
            }
        }
        n
    });
    assert_eq!(sent, 1100);
    let started = Instant::now();
    let cc = lab.client_conf(0, &lab.pki.clients[0], "fvtun-c", wrap, cipher);
    let mut client = lab.stock_client(0, "openvpn-client", &cc);
    let up = client
        .wait_for_log_line(UP, Duration::from_secs(20))
        .is_ok();
    let slog = server.log();
    eprintln!(
        "replay: {} sessions created from the replayed reset, client up: {up} after {:?}",
        count_lines(&slog, ": new session"),
        started.elapsed()
    );
    assert!(
        up,
        "a legitimate client could not connect after a replayed reset flood\n{}",
        log_tails(&client, &server)
    );
    // The stateless handshake keeps nothing for a reset: the replays made
    // no session at all (they cannot answer the cookie without the
    // tls-crypt key); the stock client made the only one.
    assert_eq!(
        count_lines(&slog, ": new session"),
        1,
        "{}",
        log_tails(&client, &server)
    );
    assert!(server.try_exit().is_none());
}

#[test]
fn server_follows_a_client_that_changes_address() {
    let lab = Lab::new("sv-float", 1, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let cipher = Cipher::Aes256Gcm;
    let mut sc = lab.server_conf(wrap.clone(), cipher);
    // A server-initiated renegotiation after the move: control packets
    // must follow the client too.
    sc.reneg_sec = Some(4);
    let mut cc = lab.client_conf(0, &lab.pki.clients[0], "fvtun-c", wrap, cipher);
    cc.reneg_sec = Some(0);
    let server = lab.ferrovpn_server(&sc);
    let client = lab.stock_client_up(0, "openvpn-client", &cc, &server);
    let ns = &lab.clients[0];
    let p = ping(ns, SERVER_TUN, 2, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 1, "{p:?}");
    // The client's underlay moves from 10.210.1.2 to 10.210.1.3 (the
    // stock client's unbound socket picks the new source per packet);
    // the old address goes away, so only a server that follows reaches it.
    let dev = lab.veths[0].if_b.clone();
    ns.exec(&["ip", "addr", "add", "10.210.1.3/32", "dev", &dev])
        .unwrap();
    ns.exec(&["ip", "addr", "del", "10.210.1.2/24", "dev", &dev])
        .unwrap();
    ns.exec(&[
        "ip",
        "route",
        "add",
        "10.210.1.0/24",
        "dev",
        &dev,
        "src",
        "10.210.1.3",
    ])
    .unwrap();
    let p = ping(ns, SERVER_TUN, 5, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("after the move: {e:#}\n{}", log_tails(&client, &server)));
    assert!(p.received >= 3, "{p:?}\n{}", log_tails(&client, &server));
    assert!(
        wait_for_count(&server, "to 10.210.1.3:", 1, Duration::from_secs(5)),
        "no float logged\n{}",
        log_tails(&client, &server)
    );
    // Pins the word the hostile-peers test asserts the absence of.
    assert!(
        server
            .log()
            .lines()
            .any(|l| l.contains("floated from 10.210.1.2:") && l.contains("to 10.210.1.3:")),
        "{}",
        server.log()
    );
    // Renegotiation after the move completes over the new address.
    assert!(
        wait_for_count(&server, "key_id 1 active", 1, Duration::from_secs(15)),
        "renegotiation after the float did not complete\n{}",
        log_tails(&client, &server)
    );
    let p = ping(ns, SERVER_TUN, 5, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 4, "{p:?}\n{}", log_tails(&client, &server));
    let p = ping(&lab.server_ns, "10.8.0.2", 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "server -> client {p:?}");
    assert!(!server.log().contains("disconnected"), "{}", server.log());
}

#[test]
fn stock_client_without_a_shared_cipher_is_refused_with_auth_failed() {
    let lab = Lab::new("sv-nocipher", 1, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    // Server: AES-256-GCM only. Client (a 2.6 client, so it announces
    // IV_CIPHERS): CHACHA20-POLY1305 only. OpenVPN 2.6 refuses such a
    // client with AUTH_FAILED instead of falling back to a cipher the
    // client did not offer.
    let mut server = lab.ferrovpn_server(&lab.server_conf(wrap.clone(), Cipher::Aes256Gcm));
    let cc = lab.client_conf(
        0,
        &lab.pki.clients[0],
        "fvtun-c",
        wrap,
        Cipher::Chacha20Poly1305,
    );
    let mut client = lab.stock_client(0, "openvpn-client", &cc);
    if let Err(e) = client.wait_for_log_line("AUTH_FAILED", CONNECT_TIMEOUT) {
        panic!("{e:#}\n{}", log_tails(&client, &server));
    }
    let slog = server.log();
    assert!(
        !client.log().contains(UP),
        "{}",
        log_tails(&client, &server)
    );
    assert!(
        slog.contains("no shared cipher"),
        "{}",
        log_tails(&client, &server)
    );
    assert_eq!(count_lines(&slog, " connected: 10.8.0."), 0, "{slog}");
    // AUTH_FAILED is final for a stock client: it exits instead of retrying.
    wait_exit(&mut client, Duration::from_secs(15));
    assert!(
        client
            .log()
            .contains("Received control message: AUTH_FAILED"),
        "{}",
        log_tails(&client, &server)
    );
    assert!(server.try_exit().is_none());
}

#[test]
fn max_clients_refuses_the_extra_client_until_a_slot_frees() {
    let lab = Lab::new("sv-maxcl", 2, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let cipher = Cipher::Aes256Gcm;
    let mut sc = lab.server_conf(wrap.clone(), cipher);
    sc.extra.push("max-clients 1".into());
    let server = lab.ferrovpn_server(&sc);
    let cc_a = lab.client_conf(0, &lab.pki.clients[0], "fvtun-a", wrap.clone(), cipher);
    let mut a = lab.stock_client_up(0, "openvpn-client-a", &cc_a, &server);
    let cc_b = lab.client_conf(1, &lab.pki.clients[1], "fvtun-b", wrap, cipher);
    let mut b = lab.stock_client(1, "openvpn-client-b", &cc_b);
    assert!(
        wait_for_count(&server, "max-clients 1 reached", 1, CONNECT_TIMEOUT),
        "{}",
        log_tails(&b, &server)
    );
    assert!(!b.log().contains(UP), "{}", log_tails(&b, &server));
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}\n{}", log_tails(&a, &server));
    // A leaves; B's next attempt gets the slot, and (2.6's pool order: a
    // never-used address before one just released) the next address.
    kill("-TERM", &a);
    wait_exit(&mut a, Duration::from_secs(10));
    if let Err(e) = b.wait_for_log_line(UP, Duration::from_secs(45)) {
        panic!("{e:#}\n{}", log_tails(&b, &server));
    }
    assert_eq!(
        connected_ip(&server, "client2").as_deref(),
        Some("10.8.0.3"),
        "{}",
        log_tails(&b, &server)
    );
    let p = ping(&lab.clients[1], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}\n{}", log_tails(&b, &server));
}

/// `ping -s SIZE` (`-M dont`: fragmentation allowed) from `ns`; replies received.
fn big_ping(ns: &Netns, addr: &str, size: u32, count: u32) -> (u32, String) {
    let size = size.to_string();
    let count = count.to_string();
    let out = ns
        .command(
            "ping",
            &[
                "-n", "-q", "-M", "dont", "-s", &size, "-c", &count, "-i", "0.05", "-w", "10", addr,
            ],
        )
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let received = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (received, text)
}

#[test]
fn full_mtu_and_oversized_packets_cross_the_tunnel_both_ways() {
    let lab = Lab::new("sv-mtu", 1, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let cipher = Cipher::Aes256Gcm;
    let server = lab.ferrovpn_server(&lab.server_conf(wrap.clone(), cipher));
    let cc = lab.client_conf(0, &lab.pki.clients[0], "fvtun-c", wrap, cipher);
    let client = lab.stock_client_up(0, "openvpn-client", &cc, &server);
    // 1472 + 28 = 1500-byte tunnel packets (the tun MTU): the encrypted
    // datagrams exceed the 1500-byte underlay and go out as IP fragments.
    // 3000 bytes exceed the tun MTU itself and are fragmented inside.
    for size in [1472, 3000] {
        for (ns, to, dir) in [
            (&lab.clients[0], SERVER_TUN, "client -> server"),
            (&lab.server_ns, "10.8.0.2", "server -> client"),
        ] {
            let (got, text) = big_ping(ns, to, size, 20);
            assert!(
                got >= 18,
                "{dir}, {size}-byte pings: {got}/20 replies\n{text}\n{}",
                log_tails(&client, &server)
            );
        }
    }
    // Bursts of full-size (1500-byte) UDP packets both ways: the server's
    // data plane batches its sends, the underlay fragments them.
    for reverse in [false, true] {
        let (lost, bytes) = iperf3_udp(&lab, 0, 1472, reverse);
        eprintln!("udp 1472 reverse {reverse}: lost {lost:.2}% of {bytes} bytes");
        assert!(
            bytes > 5_000_000 && lost < 10.0,
            "UDP 1472-byte datagrams, server sending: {reverse}: {lost:.2}% lost, {bytes} bytes\n{}",
            log_tails(&client, &server)
        );
    }
}

/// UDP iperf3 from client namespace `i`; `reverse`: the server sends.
/// Returns (receiver's datagram loss in percent, bytes received).
fn iperf3_udp(lab: &Lab, i: usize, len: u32, reverse: bool) -> (f64, u64) {
    let server = Iperf3Server::start(&lab.server_ns, 5201).unwrap();
    let len = len.to_string();
    let mut args = vec![
        "-J", "-u", "-b", "50M", "-l", &len, "-t", "2", "-c", SERVER_TUN, "-p", "5201",
    ];
    if reverse {
        args.push("-R");
    }
    let out = lab.clients[i].command("iperf3", &args).output().unwrap();
    let json = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap_or_else(|e| {
        panic!(
            "iperf3 output is not JSON ({e}): {json}\nserver: {}",
            server.process().log_tail(20)
        )
    });
    assert!(v.get("error").is_none(), "iperf3 failed: {json}");
    let sum = &v["end"]["sum_received"];
    let sum = if sum.is_null() { &v["end"]["sum"] } else { sum };
    (
        sum["lost_percent"].as_f64().unwrap_or(100.0),
        sum["bytes"].as_u64().unwrap_or(0),
    )
}

#[test]
fn tls_version_min_1_3_refuses_a_tls12_stock_client_and_serves_a_default_one() {
    let lab = Lab::new("sv-tls13", 1, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let mut sc = lab.server_conf(wrap.clone(), Cipher::Aes256Gcm);
    sc.extra.push("tls-version-min 1.3".into());
    let server = lab.ferrovpn_server(&sc);
    let mut cc = lab.client_conf(0, &lab.pki.clients[0], "fvtun-c", wrap, Cipher::Aes256Gcm);
    cc.extra.push("tls-version-max 1.2".into());
    let old = lab.stock_client(0, "openvpn-client-tls12", &cc);
    assert!(
        wait_for_count(&old, "TLS handshake failed", 1, CONNECT_TIMEOUT),
        "{}",
        log_tails(&old, &server)
    );
    assert!(!old.log().contains(UP), "{}", log_tails(&old, &server));
    assert_eq!(count_lines(&server.log(), " connected: 10.8.0."), 0);
    drop(old);
    cc.extra.pop();
    let mut client = lab.stock_client(0, "openvpn-client", &cc);
    wait_up(&mut client, &server, Cipher::Aes256Gcm);
    assert!(
        client.log().contains("TLSv1.3"),
        "{}",
        log_tails(&client, &server)
    );
}

#[test]
fn reset_flood_without_wrapping_makes_no_sessions() {
    let lab = Lab::new("sv-flood", 1, FERROVPN);
    let cipher = Cipher::Aes256Gcm;
    let mut sc = lab.server_conf(Wrap::None, cipher);
    sc.extra.push("max-clients 4".into());
    // Every reset is answered here; the default limit of 100 answers per
    // 10 s is tested in server_admission.rs.
    sc.extra.push("connect-freq-initial 1000 10".into());
    let mut server = lab.ferrovpn_server(&sc);
    let server_addr: SocketAddr = Lab::server_addr(0);
    // With no tls-auth/tls-crypt anyone can forge a client reset: 200 of
    // them, each from its own port with its own session id, are 50 times
    // max-clients.
    let answered = lab.clients[0].run(|| {
        let mut answered = 0;
        for i in 0..200u32 {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut reset = vec![0x38];
            reset.extend_from_slice(&u64::from(i + 1).to_be_bytes());
            reset.extend_from_slice(&[0, 0, 0, 0, 0]);
            s.send_to(&reset, server_addr).unwrap();
            let mut buf = [0u8; 256];
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                // HARD_RESET_SERVER_V2 acknowledging exactly our reset.
                if n == 26 && buf[0] == 0x40 && buf[9] == 1 && buf[14..22] == reset[1..9] {
                    answered += 1;
                }
            }
        }
        answered
    });
    assert_eq!(
        answered, 200,
        "every forged reset gets the stateless answer"
    );
    let cc = lab.client_conf(0, &lab.pki.clients[0], "fvtun-c", Wrap::None, cipher);
    let client = lab.stock_client_up(0, "openvpn-client", &cc, &server);
    let slog = server.log();
    assert_eq!(
        count_lines(&slog, ": new session"),
        1,
        "{}",
        log_tails(&client, &server)
    );
    assert!(!slog.contains("max-clients"), "{slog}");
    assert!(server.try_exit().is_none());
}

#[test]
fn crl_verify_refuses_revoked_clients_and_follows_the_file() {
    let lab = Lab::new("sv-crl", 1, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let cipher = Cipher::Aes256Gcm;
    let crl = lab.dir.join("crl.pem");
    std::fs::copy(&lab.pki.crl_empty, &crl).unwrap();
    let mut sc = lab.server_conf(wrap.clone(), cipher);
    sc.extra.push(format!("crl-verify {}", crl.display()));
    let server = lab.ferrovpn_server(&sc);
    // crl-revoking.pem revokes the last client, client3.
    let client3 = lab.pki.clients[2].clone();
    let cc3 = lab.client_conf(0, &client3, "fvtun-a", wrap.clone(), cipher);
    let before = lab.stock_client_up(0, "openvpn-client3", &cc3, &server);
    drop(before);
    // Revoke it the way CA tools publish a CRL: a new file renamed over the old.
    let tmp = lab.dir.join("crl.pem.new");
    std::fs::copy(&lab.pki.crl_revoking, &tmp).unwrap();
    std::fs::rename(&tmp, &crl).unwrap();
    let cc3 = lab.client_conf(0, &client3, "fvtun-b", wrap.clone(), cipher);
    let after = lab.stock_client(0, "openvpn-client3-revoked", &cc3);
    // The server refuses the certificate at the handshake. (2.6.14 clients log
    // the TLS alert they get; 2.6.3 clients do not, so the witness is the
    // server's refusal and the client never coming up.)
    assert!(
        wait_for_count(
            &server,
            "invalid peer certificate: Revoked",
            1,
            CONNECT_TIMEOUT
        ),
        "{}",
        log_tails(&after, &server)
    );
    let slog = server.log();
    assert!(slog.contains("crl-verify: reloaded"), "{slog}");
    assert!(
        !wait_for_count(&after, UP, 1, Duration::from_secs(3)),
        "{}",
        log_tails(&after, &server)
    );
    drop(after);
    // Everyone else still gets in.
    let cc1 = lab.client_conf(0, &lab.pki.clients[0], "fvtun-c", wrap, cipher);
    let _c1 = lab.stock_client_up(0, "openvpn-client1", &cc1, &server);
}

#[test]
fn ifconfig_pool_persist_gives_clients_their_remembered_addresses() {
    let lab = Lab::new("sv-ipp", 2, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let cipher = Cipher::Aes256Gcm;
    let ipp = lab.dir.join("ipp.txt");
    std::fs::write(&ipp, "client1,10.8.0.9,\n").unwrap();
    let mut sc = lab.server_conf(wrap.clone(), cipher);
    sc.extra
        .push(format!("ifconfig-pool-persist {} 1", ipp.display()));
    let server = lab.ferrovpn_server(&sc);
    let cc2 = lab.client_conf(1, &lab.pki.clients[1], "fvtun-b", wrap.clone(), cipher);
    let _c2 = lab.stock_client_up(1, "openvpn-client2", &cc2, &server);
    let cc1 = lab.client_conf(0, &lab.pki.clients[0], "fvtun-a", wrap, cipher);
    let _c1 = lab.stock_client_up(0, "openvpn-client1", &cc1, &server);
    // client1 gets its remembered address even though client2 came first;
    // client2 gets the first address nobody is remembered with.
    assert_eq!(
        connected_ip(&server, "client1").as_deref(),
        Some("10.8.0.9")
    );
    assert_eq!(
        connected_ip(&server, "client2").as_deref(),
        Some("10.8.0.2")
    );
    let p = ping(&lab.clients[0], SERVER_TUN, 2, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 1, "{p:?}");
    // The file is rewritten with both.
    let mut text = String::new();
    assert!(
        wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
            text = std::fs::read_to_string(&ipp).unwrap_or_default();
            // In address order, as 2.6 writes it.
            text == "client2,10.8.0.2,\nclient1,10.8.0.9,\n"
        }),
        "{text:?}"
    );
}

#[test]
fn server_verify_x509_name_admits_only_the_named_stock_client() {
    let lab = Lab::new("sv-x509name", 1, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let cipher = Cipher::Aes256Gcm;
    let mut sc = lab.server_conf(wrap.clone(), cipher);
    sc.extra.push("verify-x509-name client1 name".into());
    sc.extra.push("remote-cert-tls client".into());
    let server = lab.ferrovpn_server(&sc);
    // client2's certificate chains to the CA and has clientAuth: only the
    // name is wrong. The server refuses it in the handshake (the stock
    // client then waits out hand-window, so the server log is the witness).
    let cc2 = lab.client_conf(0, &lab.pki.clients[1], "fvtun-a", wrap.clone(), cipher);
    let refused = lab.stock_client(0, "openvpn-client2", &cc2);
    assert!(
        wait_for_count(&server, "verify-x509-name", 1, CONNECT_TIMEOUT),
        "{}",
        log_tails(&refused, &server)
    );
    assert!(
        !refused.log().contains(UP),
        "{}",
        log_tails(&refused, &server)
    );
    assert_eq!(count_lines(&server.log(), " connected: 10.8.0."), 0);
    drop(refused);
    let cc1 = lab.client_conf(0, &lab.pki.clients[0], "fvtun-b", wrap, cipher);
    let _c1 = lab.stock_client_up(0, "openvpn-client1", &cc1, &server);
}
