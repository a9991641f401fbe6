//! The management interface on a CLIENT, part three: the connection list
//! (`remote-entry-count`, `remote-entry-get`), and how long a login the
//! server keeps pending (`AUTH_PENDING,timeout N`) is waited for. Each
//! script runs against the
//! ferrovpn client and Debian's stock 2.6 client with the same stock 2.6
//! server, and the test compares what both show.
//!
//! Needs root, `openvpn`, `ip` and `/dev/net/tun`; fails loudly without
//! them. Every wait has a deadline.

use std::time::{Duration, Instant};

use ferrovpn_testkit::lab::wait_exit;
use ferrovpn_testkit::mgmt::{Management, client_lines, held_client, same_as_stock};
use ferrovpn_testkit::{ClientConf, Implementation, Lab, openvpn_client_conf};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

/// `remote-entry-count` and `remote-entry-get` before the first hold is
/// released (2.6 has no such commands yet then), and once connected: the
/// count, every entry, one, a range, past the end, a negative and a
/// non-numeric index, and a missing one.
fn entries_script(lab: &Lab, cc: &ClientConf, imp: Implementation) -> Vec<String> {
    let name = format!("{}-entries", imp.name());
    let server = Lab::server_underlay(0);
    let extra = [
        format!("remote {server} 1196 tcp"),
        format!("remote {server} 1197 udp4"),
    ];
    let (mut client, mut m) = held_client(lab, &openvpn_client_conf(cc), imp, &name, &extra);
    m.until("hold", |l| l.starts_with(">HOLD:"));
    m.one("state on");
    m.one("remote-entry-count");
    m.one("remote-entry-get all");
    m.one("hold release");
    m.until("CONNECTED state", |l| l.contains(",CONNECTED,"));
    m.block("remote-entry-count");
    for cmd in [
        "remote-entry-get all",
        "remote-entry-get 1",
        "remote-entry-get 1 3",
        "remote-entry-get 0 99",
        "remote-entry-get 3",
        "remote-entry-get 2 1",
        "remote-entry-get -1",
        "remote-entry-get x",
    ] {
        m.block(cmd);
    }
    m.one("remote-entry-get");
    m.one("signal SIGTERM");
    m.until("EXITING state", |l| l.contains(",EXITING,"));
    let _ = wait_exit(&mut client, Duration::from_secs(10));
    client_lines(&m)
}

#[test]
fn client_remote_entries_as_2_6() {
    let lab = Lab::new("centries", 1, FERROVPN);
    let (sc, cc) = lab.tls_crypt_confs();
    let _server = lab.stock_server(&sc);
    let ours = same_as_stock(|imp| entries_script(&lab, &cc, imp));
    let server = Lab::server_underlay(0);
    for line in [
        "ERROR: The 'remote-entry-count' command is not supported by the current daemon mode"
            .to_string(),
        "3".to_string(),
        format!("0,{server},1194,udp,enabled"),
        format!("1,{server},1196,tcp-client,enabled"),
        format!("2,{server},1197,udp4,enabled"),
        "ERROR: the 'remote-entry-get' command requires at least 1 parameter".to_string(),
    ] {
        assert!(ours.contains(&line), "{line} in {ours:?}");
    }
}

/// `<connection>` blocks (the top-level `remote` line taken out) with
/// `remote-random`: the entries as the client walks them. Returns the
/// count and the entries without their index, sorted (the order is
/// random), and whether the indices ran 0, 1, ...
fn random_connections_script(
    lab: &Lab,
    cc: &ClientConf,
    imp: Implementation,
) -> (Vec<String>, Vec<String>) {
    let name = format!("{}-random", imp.name());
    let server = Lab::server_underlay(0);
    let text: String = openvpn_client_conf(cc)
        .lines()
        .filter(|l| !l.starts_with("remote "))
        .map(|l| format!("{l}\n"))
        .collect();
    let extra = [
        "remote-random".to_string(),
        format!(
            "<connection>\nremote {server} {} udp\n</connection>",
            cc.port
        ),
        format!(
            "<connection>\nremote {server} {} udp4\n</connection>",
            cc.port
        ),
        format!(
            "<connection>\nremote {server} {}\nproto udp\n</connection>",
            cc.port
        ),
    ];
    let (mut client, mut m) = held_client(lab, &text, imp, &name, &extra);
    m.until("hold", |l| l.starts_with(">HOLD:"));
    m.one("hold release");
    let count = m.block("remote-entry-count");
    let mut entries = m.block("remote-entry-get all");
    for (i, e) in entries.iter_mut().enumerate() {
        let prefix = format!("{i},");
        *e = e
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{e} is not entry {i}: {:?}", m.seen()))
            .to_string();
    }
    entries.sort();
    m.one("signal SIGTERM");
    let _ = wait_exit(&mut client, Duration::from_secs(10));
    (count, entries)
}

#[test]
fn client_remote_entries_of_connection_blocks_as_2_6() {
    let lab = Lab::new("crandom", 1, FERROVPN);
    let (sc, cc) = lab.tls_crypt_confs();
    let _server = lab.stock_server(&sc);
    let ours = same_as_stock(|imp| random_connections_script(&lab, &cc, imp));
    assert_eq!(ours.0, ["3"]);
}

/// A login the server keeps pending for 60 s (`client-pending-auth ...
/// WEB_AUTH::URL 60`), with the client's `hand-window 8` and `reneg-sec
/// 20`: 2.6 waits at most the longer of hand-window and half of reneg-sec
/// (10 s) from the key exchange, notices at its next 5-second push request,
/// and restarts (`RECONNECTING,no-push-reply`, then the hold). Returns the
/// lines up to that hold with the two states' descriptions, and the
/// seconds from `AUTH_PENDING` to `RECONNECTING`.
fn pending_script(
    lab: &Lab,
    cc: &ClientConf,
    server_m: &mut Management,
    imp: Implementation,
) -> (Vec<String>, f64) {
    let name = format!("{}-pending", imp.name());
    let extra = ["hand-window 8".to_string(), "reneg-sec 20".to_string()];
    let (mut client, mut m) = held_client(lab, &openvpn_client_conf(cc), imp, &name, &extra);
    m.until("hold", |l| l.starts_with(">HOLD:"));
    m.one("state on");
    m.one("hold release");
    let connect = server_m.client_event("CONNECT");
    assert_eq!(
        server_m.one(&format!(
            "client-pending-auth {} {} WEB_AUTH::https://sso.example/login 60",
            connect.cid, connect.kid
        )),
        "SUCCESS: client-pending-auth command succeeded"
    );
    let description = |l: &str| l.split(',').take(3).skip(1).collect::<Vec<_>>().join(",");
    let auth_pending = m.until("AUTH_PENDING state", |l| l.contains(",AUTH_PENDING,"));
    let pending = Instant::now();
    let reconnecting = m.until("RECONNECTING state", |l| l.contains(",RECONNECTING,"));
    let waited = pending.elapsed().as_secs_f64();
    m.until("hold after the restart", |l| l.starts_with(">HOLD:"));
    let mut lines = client_lines(&m);
    lines.push(description(&auth_pending));
    lines.push(description(&reconnecting));
    m.send("signal SIGTERM");
    let _ = wait_exit(&mut client, Duration::from_secs(10));
    (lines, waited)
}

#[test]
fn client_gives_up_a_pending_login_as_2_6() {
    let lab = Lab::new("cpending", 1, FERROVPN);
    let (mut sc, mut cc) = lab.tls_crypt_confs();
    // 2.6's management-client-auth wants a user name and password.
    cc.extra
        .push(lab.auth_user_pass("frank", "frank", "pw-frank"));
    let sock = lab.dir.join("server-mgmt.sock");
    sc.extra.push(format!("management {} unix", sock.display()));
    sc.extra.push("management-client-auth".into());
    let _server = lab.stock_server(&sc);
    let mut server_m = Management::connect_when_listening(&sock, Duration::from_secs(15));
    server_m.until("welcome", |l| l.starts_with(">INFO:"));
    let ours = pending_script(&lab, &cc, &mut server_m, Implementation::Ferrovpn);
    let stock = pending_script(&lab, &cc, &mut server_m, Implementation::Stock);
    assert_eq!(
        ours.0, stock.0,
        "ferrovpn's lines differ from the stock client's"
    );
    for line in [
        "STATE AUTH_PENDING",
        "STATE RECONNECTING",
        ">INFOMSG:WEB_AUTH::https://sso.example/login",
        "AUTH_PENDING,timeout 60",
        "RECONNECTING,no-push-reply",
    ] {
        assert!(ours.0.contains(&line.to_string()), "{line} in {ours:?}");
    }
    // 10 s from the key exchange, seen at a 5-second tick; the key
    // exchange is a moment before AUTH_PENDING shows.
    for (who, waited) in [("ferrovpn", ours.1), ("stock", stock.1)] {
        assert!(
            (7.0..=16.0).contains(&waited),
            "{who} waited {waited:.1}s for the pending login"
        );
    }
    assert!(
        (ours.1 - stock.1).abs() <= 4.0,
        "ferrovpn waited {:.1}s, stock {:.1}s",
        ours.1,
        stock.1
    );
}
