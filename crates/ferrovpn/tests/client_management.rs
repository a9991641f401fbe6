//! The management interface on a CLIENT, against Debian's stock OpenVPN
//! 2.6 server checking passwords with `auth-user-pass-verify`: the client
//! has `management PATH unix`, `management-hold`,
//! `management-query-passwords` and `auth-user-pass` without a file, and
//! the test's management client drives it the way NetworkManager-openvpn
//! and the GUIs do: release the hold, answer `>PASSWORD:Need 'Auth'
//! username/password`, follow `>STATE:` to CONNECTED, read `>BYTECOUNT:`,
//! then `signal SIGTERM`. Each script runs against the stock 2.6 client
//! too, so the test proves the lines are the same.
//!
//! Needs root, `openvpn`, `ip`, `ping` and `/dev/net/tun`; fails loudly
//! without them. Every wait has a deadline.

use std::path::PathBuf;
use std::time::Duration;

use ferrovpn_testkit::lab::{SERVER_PORT, SERVER_TUN, wait_exit};
use ferrovpn_testkit::mgmt::{Management, same_as_stock, state_names, state_names_and_reasons};
use ferrovpn_testkit::{Implementation, Lab, Proc, ServerConf, ping};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const GOOD_USER: &str = "alice";
const GOOD_PASS: &str = "s3cret pass";

/// A stock server that accepts only [`GOOD_USER`] with [`GOOD_PASS`];
/// clients need no certificate.
fn password_server(lab: &Lab) -> (ServerConf, Proc) {
    let (sc, _calls) = lab.password_server_conf(GOOD_USER, GOOD_PASS);
    let server = lab.stock_server(&sc);
    (sc, server)
}

/// A client of `imp` in namespace 0 with the management interface on a
/// unix socket, held, asking for its credentials over it.
fn managed_client(
    lab: &Lab,
    sc: &ServerConf,
    imp: Implementation,
    name: &str,
    extra: &[&str],
) -> (Proc, PathBuf) {
    let socket = lab.dir.join(format!("{name}.sock"));
    let text = lab.certless_client_text(
        sc.wrap.clone(),
        sc.cipher,
        [
            format!("management {} unix", socket.display()),
            "management-hold".to_string(),
            "management-query-passwords".to_string(),
            "auth-user-pass".to_string(),
        ]
        .into_iter()
        .chain(extra.iter().map(|e| e.to_string())),
    );
    let p = lab.spawn(&lab.clients[0], name, imp, &text);
    (p, socket)
}

/// Wait for the `EXITING` state; returns its line without the time.
fn until_exiting(m: &mut Management) -> String {
    let exiting = m.until("EXITING state", |l| l.contains(",EXITING,"));
    exiting
        .split_once(',')
        .map_or("", |(_, rest)| rest)
        .to_string()
}

/// Run `script` against the ferrovpn client, then against the stock
/// client, both of one stock [`password_server`]: their lines must be the
/// same and hold every line of `expected`.
fn same_lines_as_stock_client(
    tag: &str,
    script: fn(&Lab, &ServerConf, Implementation) -> Vec<String>,
    expected: &[&str],
) {
    let lab = Lab::new(tag, 1, FERROVPN);
    let (sc, _server) = password_server(&lab);
    let ours = same_as_stock(|imp| script(&lab, &sc, imp));
    for line in expected {
        assert!(ours.iter().any(|l| l == line), "{line}: {ours:?}");
    }
}

/// Log in with the right password, follow the states to CONNECTED, read
/// a byte count, ping, read `status`, exit by `signal SIGTERM`. Returns
/// the lines that must be the same for both implementations.
fn good_login_script(lab: &Lab, sc: &ServerConf, imp: Implementation) -> Vec<String> {
    let name = format!("{}-managed", imp.name());
    let (mut client, socket) = managed_client(lab, sc, imp, &name, &[]);
    let mut m = Management::connect_when_listening(&socket, Duration::from_secs(15));
    let mut same = Vec::new();
    same.push(m.until("greeting", |l| l.starts_with(">INFO:")));
    same.push(m.until("hold", |l| l.starts_with(">HOLD:")));
    assert_eq!(same[1], ">HOLD:Waiting for hold release:0");
    // Held: nothing goes to the server before the release.
    assert!(
        !client.log().contains("Initialization Sequence Completed"),
        "{}",
        client.log_tail(20)
    );
    for cmd in [
        "state on",
        "bytecount 1",
        "hold",
        "username Auth x",
        "kill x",
    ] {
        same.push(m.one(cmd));
    }
    same.push(m.one("hold release"));
    same.push(m.until("password query", |l| l.starts_with(">PASSWORD:")));
    // Held: the client asks for its credentials only once released.
    let at = |line: &str| m.seen().iter().position(|l| l.starts_with(line));
    assert!(
        at(">PASSWORD:") > at("SUCCESS: hold release succeeded"),
        "asked before the hold was released:\n{}",
        m.seen().join("\n")
    );
    same.push(m.one(&format!("username \"Auth\" {GOOD_USER}")));
    same.push(m.one(&format!("password \"Auth\" \"{GOOD_PASS}\"")));
    let connected = m.until("CONNECTED state", |l| l.contains(",CONNECTED,"));
    let tail: Vec<&str> = connected.splitn(3, ',').collect();
    // `>STATE:TIME,CONNECTED,SUCCESS,TUNNEL_IP,SERVER_IP,PORT,,`
    let fields: Vec<&str> = tail[2].split(',').collect();
    assert_eq!(fields[0], "SUCCESS", "{connected}");
    assert!(fields[1].starts_with("10.8.0."), "{connected}");
    assert_eq!(fields[2], Lab::server_underlay(0), "{connected}");
    assert_eq!(fields[3], SERVER_PORT.to_string(), "{connected}");
    let states = m.states();
    assert_eq!(
        state_names(&states),
        ["WAIT", "AUTH", "ASSIGN_IP", "CONNECTED"],
        "{states:?}"
    );
    same.extend(states.iter().map(|s| {
        // The tunnel address the server's pool hands out may differ.
        s.split(',').take(2).collect::<Vec<_>>().join(",")
    }));
    let bytecount = m.until("byte count", |l| l.starts_with(">BYTECOUNT:"));
    let counts: Vec<u64> = bytecount
        .trim_start_matches(">BYTECOUNT:")
        .split(',')
        .map(|n| n.parse().unwrap_or_else(|_| panic!("{bytecount}")))
        .collect();
    assert_eq!(counts.len(), 2, "{bytecount}");
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}\n{}", client.log_tail(20));
    same.push(m.one("bytecount 0"));
    let status = m.block("status");
    assert_eq!(status[0], "OpenVPN STATISTICS", "{status:?}");
    assert!(status[1].starts_with("Updated,"), "{status:?}");
    same.extend(status[2..].iter().map(|l| {
        // The counts differ (2.6 counts the link, ferrovpn the data channel).
        l.split(',').next().unwrap_or("").to_string()
    }));
    same.push(m.one("signal SIGTERM"));
    same.push(until_exiting(&mut m));
    let status = wait_exit(&mut client, Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", client.log_tail(20));
    same
}

/// After the hold: `state on`, release, and answer the question with
/// the right user but a wrong password, up to the verification failure.
/// Returns the lines that must be the same for both implementations.
fn release_then_wrong_password(m: &mut Management) -> Vec<String> {
    m.until("hold", |l| l.starts_with(">HOLD:"));
    let mut same = vec![m.one("state on"), m.one("hold release")];
    same.push(m.until("password query", |l| l.starts_with(">PASSWORD:")));
    same.push(m.one(&format!("username \"Auth\" {GOOD_USER}")));
    same.push(m.one("password \"Auth\" wrong"));
    same.push(m.until("verification failure", |l| {
        l.starts_with(">PASSWORD:Verification Failed")
    }));
    same
}

/// Answer with a wrong password: `>PASSWORD:Verification Failed: 'Auth'`,
/// then the client exits (`auth-retry none`).
fn wrong_password_script(lab: &Lab, sc: &ServerConf, imp: Implementation) -> Vec<String> {
    let name = format!("{}-wrongpw", imp.name());
    let (mut client, socket) = managed_client(lab, sc, imp, &name, &[]);
    let mut m = Management::connect_when_listening(&socket, Duration::from_secs(15));
    let mut same = release_then_wrong_password(&mut m);
    same.push(until_exiting(&mut m));
    let _ = wait_exit(&mut client, Duration::from_secs(10));
    same
}

#[test]
fn client_management_hold_password_state_bytecount_sigterm_stock_server() {
    same_lines_as_stock_client(
        "cmgmt",
        good_login_script,
        &[
            ">PASSWORD:Need 'Auth' username/password",
            // The lab's clients have explicit-exit-notify: 2.6 exits "with notification".
            "EXITING,exit-with-notification,,,,,",
        ],
    );
}

#[test]
fn client_management_wrong_password_verification_failed_stock_server() {
    same_lines_as_stock_client(
        "cmgmtpw",
        wrong_password_script,
        &[
            ">PASSWORD:Verification Failed: 'Auth'",
            "EXITING,exit-with-notification,,,,,",
        ],
    );
}

/// `auth-retry interact`: a wrong password, the hold again before the
/// next attempt, the question again, the right password; then `signal
/// SIGUSR1` reconnects through another hold without asking again.
fn retry_script(lab: &Lab, sc: &ServerConf, imp: Implementation) -> Vec<String> {
    let name = format!("{}-retry", imp.name());
    let (mut client, socket) = managed_client(lab, sc, imp, &name, &["auth-retry interact"]);
    let mut m = Management::connect_when_listening(&socket, Duration::from_secs(15));
    let mut same = release_then_wrong_password(&mut m);
    same.push(m.until("hold again", |l| l.starts_with(">HOLD:")));
    same.push(m.one("hold release"));
    same.push(m.until("password query again", |l| l.starts_with(">PASSWORD:")));
    same.push(m.one(&format!("username \"Auth\" {GOOD_USER}")));
    same.push(m.one(&format!("password \"Auth\" \"{GOOD_PASS}\"")));
    m.until("CONNECTED state", |l| l.contains(",CONNECTED,"));
    same.push(m.one("signal SIGUSR1"));
    same.push(m.until("hold after SIGUSR1", |l| l.starts_with(">HOLD:")));
    same.push(m.one("hold release"));
    m.until("CONNECTED state again", |l| l.contains(",CONNECTED,"));
    // Cached: no second question after SIGUSR1.
    same.push(m.one("password \"Auth\" x"));
    same.push(m.one("signal SIGTERM"));
    m.until("EXITING state", |l| l.contains(",EXITING,"));
    same.extend(state_names_and_reasons(&m));
    let _ = wait_exit(&mut client, Duration::from_secs(10));
    same
}

#[test]
fn client_management_auth_retry_interact_and_sigusr1_hold_again_stock_server() {
    same_lines_as_stock_client(
        "cmgmtre",
        retry_script,
        &[
            "RECONNECTING,auth-failure,,,,,",
            "RECONNECTING,SIGUSR1,,,,,",
        ],
    );
}
