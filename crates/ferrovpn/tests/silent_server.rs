//! A server that falls silent after the TLS handshake: Debian's stock
//! OpenVPN 2.6 server blocked in a `client-connect` script (2.6 runs it in
//! its one thread, so it neither acknowledges nor answers PUSH_REQUEST).
//! The stock client and ferrovpn's give up the same way, 2.6's push.c
//! `send_push_request`: "No reply from server to push requests in Ns"
//! after hand-window (at a push-request tick), then
//! `>STATE:...,RECONNECTING,no-push-reply`.
//!
//! Needs root, the lab's tools, `sh` and `/dev/net/tun`; fails loudly
//! without them. Every wait has a deadline.

use std::os::unix::fs::PermissionsExt;

use ferrovpn_testkit::Implementation;
use ferrovpn_testkit::Lab;
use ferrovpn_testkit::lab::wait_log;
use ferrovpn_testkit::mgmt::{Management, REPLY_TIMEOUT};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
/// The clients' hand-window: how long they wait for the push reply.
const HAND_WINDOW: u64 = 8;

#[test]
fn client_gives_up_on_a_silent_server_with_no_push_reply() {
    let lab = Lab::new("silent-srv", 1, FERROVPN);
    let stall = lab.dir.join("stall.sh");
    // Longer than the clients wait, short enough to end with the test.
    std::fs::write(&stall, format!("#!/bin/sh\nsleep {}\n", HAND_WINDOW * 3)).unwrap();
    std::fs::set_permissions(&stall, std::fs::Permissions::from_mode(0o755)).unwrap();
    for imp in [Implementation::Stock, Implementation::Ferrovpn] {
        let (mut sc, mut cc) = lab.tls_crypt_confs();
        sc.extra.extend([
            "script-security 2".to_string(),
            format!("client-connect {}", stall.display()),
        ]);
        let sock = lab.dir.join(format!("{}-client.sock", imp.name()));
        cc.extra.extend([
            format!("hand-window {HAND_WINDOW}"),
            format!("management {} unix", sock.display()),
        ]);
        let server = lab.stock_server(&sc);
        let mut client = lab.client(imp, 0, &format!("{}-client", imp.name()), &cc);
        let mut m = Management::connect_when_listening(&sock, REPLY_TIMEOUT);
        m.send("state on");
        wait_log(
            &mut client,
            "No reply from server to push requests in ",
            &server,
        );
        let log = client.log();
        let line = log
            .lines()
            .find(|l| l.contains("No reply from server to push requests in "))
            .unwrap();
        let secs: u64 = line
            .rsplit(' ')
            .next()
            .and_then(|w| w.strip_suffix('s'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{}: {line}", imp.name()));
        assert!(
            (HAND_WINDOW..HAND_WINDOW + 6).contains(&secs),
            "{}: gave up after {secs}s: {line}",
            imp.name()
        );
        let state = m.until("RECONNECTING", |l| {
            l.starts_with(">STATE:") && l.contains(",RECONNECTING,")
        });
        assert!(
            state.contains(",RECONNECTING,no-push-reply,"),
            "{}: {state}\n{:?}",
            imp.name(),
            m.seen()
        );
        assert!(
            !log.contains("connection-reset"),
            "{}: {}",
            imp.name(),
            client.log_tail(30)
        );
    }
}
