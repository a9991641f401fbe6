//! `float` on a UDP client whose server starts answering from a new
//! address mid-transfer, against Debian's stock OpenVPN 2.6 server, with
//! the stock 2.6 client in the same topology as the reference.
//!
//! The server namespace gets a second address, and the route to the client
//! network then names it as its preferred source: the stock server's
//! wildcard socket answers from it at once, the client still sends to the
//! first (which stays up). What 2.6 does (forward.c, ssl.c
//! `handle_data_channel_packet` / `tls_pre_decrypt`, `session_move_active`),
//! seen here with the stock client too: within a session nothing moves,
//! with or without `float` (packets from the new address are dropped:
//! "TLS keys are out of sync" with `float`, "Incoming packet rejected"
//! without), so ping-restart fires; the new session with `float` takes the
//! address the server's first authenticated reply came from ("Peer
//! Connection Initiated with" it, `ipchange` with it) and the tunnel works
//! again; without `float` the replies stay rejected and it never does.
//!
//! Needs root, `openvpn`, `iperf3`, `ip`, `ping`, `ss` and `/dev/net/tun`;
//! every test fails loudly without them. Every wait has a deadline.

use std::time::Duration;

use ferrovpn_testkit::lab::{SERVER_TUN, UP, count_lines, log_tails, wait_for_count};
use ferrovpn_testkit::{Implementation, Lab, Proc, ping, sh_script};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
/// The server's second address, which its replies come from after the move.
const NEW_SERVER_IP: &str = "10.210.1.3";
/// Pushed by `keepalive 1 4`: silence noticed after 4 s.
const KEEPALIVE: (u32, u32) = (1, 4);
/// Longest wait for a restart and a new session after the move.
const FOLLOW_TIMEOUT: Duration = Duration::from_secs(40);

/// Make the server answer from [`NEW_SERVER_IP`]: add it beside the first
/// address, and make it the source the route to the client picks.
fn move_server_source(lab: &Lab) {
    let dev = lab.veths[0].if_a.as_str();
    lab.server_ns
        .add_address(&format!("{NEW_SERVER_IP}/24"), dev)
        .unwrap();
    lab.server_ns
        .exec(&[
            "ip",
            "route",
            "replace",
            "10.210.1.0/24",
            "dev",
            dev,
            "proto",
            "kernel",
            "scope",
            "link",
            "src",
            NEW_SERVER_IP,
        ])
        .unwrap();
}

/// A stock server with tls-crypt and quick keepalive, and a client (`imp`)
/// recording its `ipchange` calls, with `float` or not, up and pinging.
struct Setup {
    lab: Lab,
    server: Proc,
    client: Proc,
}

fn setup(tag: &str, imp: Implementation, float: bool) -> Setup {
    let lab = Lab::new(tag, 1, FERROVPN);
    let (mut sc, mut cc) = lab.tls_crypt_confs();
    sc.keepalive = Some(KEEPALIVE);
    let script = sh_script(
        lab.dir.join("ipchange.sh"),
        &format!(
            "echo \"ipchange $*\" >> {}\n",
            lab.dir.join("record").display()
        ),
    );
    cc.extra.push("script-security 2".into());
    cc.extra.push(format!("ipchange {}", script.display()));
    if float {
        cc.extra.push("float".into());
    }
    let server = lab.stock_server(&sc);
    let client = lab.client_up(imp, 0, "client", &cc, &server);
    let before = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(before.received > 0, "{}", log_tails(&client, &server));
    Setup {
        lab,
        server,
        client,
    }
}

impl Setup {
    fn record(&self) -> String {
        std::fs::read_to_string(self.lab.dir.join("record")).unwrap_or_default()
    }
}

/// What the client logs when ping-restart ends its session.
fn ping_restart_line(imp: Implementation) -> &'static str {
    match imp {
        Implementation::Stock => "Inactivity timeout (--ping-restart)",
        Implementation::Ferrovpn => "inactivity timeout (ping-restart",
    }
}

/// With `float`: the session that was up drops the server's packets from
/// the new address until ping-restart; the next session goes to the new
/// address (ipchange names it) and the tunnel carries traffic again.
fn follows_with_float(tag: &str, imp: Implementation) {
    let s = setup(tag, imp, true);
    assert_eq!(s.record(), "ipchange [AF_INET]10.210.1.1 1194\n");
    move_server_source(&s.lab);
    // Within the session nothing moves: the replies from the new address
    // are dropped and the restart comes.
    let restarted = wait_for_count(&s.client, ping_restart_line(imp), 1, FOLLOW_TIMEOUT);
    assert!(restarted, "{}", log_tails(&s.client, &s.server));
    assert_eq!(
        count_lines(&s.client.log(), UP),
        1,
        "no new session before the restart"
    );
    let up = wait_for_count(&s.client, UP, 2, FOLLOW_TIMEOUT);
    assert!(up, "{}", log_tails(&s.client, &s.server));
    let after = ping(&s.lab.clients[0], SERVER_TUN, 5, Duration::from_secs(10)).unwrap();
    assert!(
        after.received > 0,
        "{after:?}\n{}",
        log_tails(&s.client, &s.server)
    );
    assert_eq!(
        s.record(),
        format!("ipchange [AF_INET]10.210.1.1 1194\nipchange [AF_INET]{NEW_SERVER_IP} 1194\n"),
        "{}",
        log_tails(&s.client, &s.server)
    );
    let log = s.client.log();
    if imp == Implementation::Ferrovpn {
        assert!(
            log.contains(&format!(
                "float: the peer answers from {NEW_SERVER_IP}:1194"
            )),
            "{log}"
        );
    } else {
        assert!(log.contains("TLS keys are out of sync"), "{log}");
        assert!(
            log.contains(&format!(
                "Peer Connection Initiated with [AF_INET]{NEW_SERVER_IP}:1194"
            )),
            "{log}"
        );
    }
}

/// Without `float`: the replies from the new address are dropped, ping
/// restarts, and the new session never comes up (its replies come from
/// the new address too).
fn stays_without_float(tag: &str, imp: Implementation) {
    let mut s = setup(tag, imp, false);
    move_server_source(&s.lab);
    let restarted = wait_for_count(&s.client, ping_restart_line(imp), 1, FOLLOW_TIMEOUT);
    assert!(restarted, "{}", log_tails(&s.client, &s.server));
    // The new session's reset goes out after a 1 s pause and the server
    // answers it at once (from the new address): over 6 s of pings the
    // client had every chance to take it.
    let after = ping(&s.lab.clients[0], SERVER_TUN, 30, Duration::from_secs(6));
    let silent = matches!(&after, Err(e) if format!("{e:#}").contains("no replies"));
    assert!(silent, "{after:?}\n{}", log_tails(&s.client, &s.server));
    let log = s.client.log();
    assert_eq!(count_lines(&log, UP), 1, "{log}");
    assert_eq!(s.record(), "ipchange [AF_INET]10.210.1.1 1194\n");
    if imp == Implementation::Stock {
        assert!(log.contains("Incoming packet rejected from"), "{log}");
    }
    if let Some(status) = s.client.try_exit() {
        panic!("the client exited ({status}):\n{log}");
    }
}

#[test]
fn ferrovpn_client_with_float_follows_the_server_with_the_next_session() {
    follows_with_float("fl-ff", Implementation::Ferrovpn);
}

#[test]
fn stock_client_with_float_follows_the_server_with_the_next_session() {
    follows_with_float("fl-sf", Implementation::Stock);
}

#[test]
fn ferrovpn_client_without_float_does_not_follow() {
    stays_without_float("fl-fn", Implementation::Ferrovpn);
}

#[test]
fn stock_client_without_float_does_not_follow() {
    stays_without_float("fl-sn", Implementation::Stock);
}
