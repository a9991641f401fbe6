//! `tls-verify` inside every TLS handshake, as OpenVPN 2.6 runs it
//! (`ssl_verify.c`'s verify callback), on both roles, against Debian's
//! stock 2.6:
//!
//! - a client refusing the server's certificate sends no key-method-2
//!   message, so the server never sees its user name and password (its
//!   log shows no `peer info`), and restarts with `tls-error`; its
//!   management transcript, a SIGTERM while held again included, is the
//!   stock client's;
//! - a server whose script starts refusing an admitted client fails the
//!   client's next renegotiation, keeps the old key for its tran-window,
//!   then lets the client go, as the stock server does;
//! - `tls-exit` (forward.c `check_tls_errors`: the signal of a TLS error
//!   is SIGTERM instead of SIGUSR1): a refused client ends by itself,
//!   status 0, `>STATE:...,EXITING,tls-error`, transcript as the stock
//!   client's; a server with it refuses one client and keeps running.
//!
//! Needs root, `openvpn`, `ip`, `ping`, `sh` and `/dev/net/tun`; fails
//! loudly without them. Every wait has a deadline.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrovpn_testkit::lab::{kill, log_tails, wait_exit, wait_log};
use ferrovpn_testkit::mgmt::Management;
use ferrovpn_testkit::{
    Cipher, Implementation, Lab, Proc, Wrap, openvpn_client_conf, ping, wait_until,
};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const UP: &str = "Initialization Sequence Completed";

/// An executable `sh` script `name` in the lab's directory.
fn script(lab: &Lab, name: &str, body: &str) -> PathBuf {
    let path = lab.dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A tls-verify script that refuses the peer's own certificate (depth 0)
/// while `deny` exists.
fn refusing_verify_script(lab: &Lab, name: &str, deny: &Path) -> PathBuf {
    script(
        lab,
        name,
        &format!(
            "[ \"$1\" = 0 ] && [ -e \"{}\" ] && exit 1\nexit 0",
            deny.display()
        ),
    )
}

/// The management lines both clients must show alike: replies, holds,
/// and each state's name and description (times and addresses cut).
fn same_lines(m: &Management) -> Vec<String> {
    m.seen()
        .iter()
        .filter_map(|l| match l.strip_prefix(">STATE:") {
            Some(s) => {
                let f: Vec<&str> = s.split(',').collect();
                Some(format!(
                    "STATE {},{}",
                    f.get(1).unwrap_or(&""),
                    f.get(2).unwrap_or(&"")
                ))
            }
            None if l.starts_with(">BYTECOUNT") || l.starts_with(">INFO:") => None,
            None if l.starts_with(">LOG:") => None,
            None => Some(l.clone()),
        })
        .collect()
}

/// A client of `imp` whose tls-verify refuses the server's certificate,
/// with a password to log in with, held by `management-hold`: released,
/// it is refused in the handshake, restarts, is held again, and gets
/// SIGTERM there. Returns its management lines and its log.
fn refusing_client(lab: &Lab, server: &Proc, imp: Implementation) -> (Vec<String>, String) {
    let name = format!("{}-refusing", imp.name());
    let verify = script(
        lab,
        &format!("{name}.sh"),
        r#"[ "$1" = 0 ] && exit 1
exit 0"#,
    );
    let socket = lab.dir.join(format!("{name}.sock"));
    let mut cc = lab.client_conf(
        0,
        &lab.pki.clients[0],
        "fvtun-c",
        Wrap::None,
        Cipher::Aes256Gcm,
    );
    cc.extra.extend([
        "script-security 2".to_string(),
        format!("tls-verify \"{}\"", verify.display()),
        lab.auth_user_pass(&name, "alice", "secret-password"),
        "connect-retry 3".to_string(),
        format!("management {} unix", socket.display()),
        "management-hold".to_string(),
    ]);
    let mut client = lab.spawn(&lab.clients[0], &name, imp, &openvpn_client_conf(&cc));
    let mut m = Management::connect_when_listening(&socket, Duration::from_secs(15));
    m.until("hold", |l| l.starts_with(">HOLD:"));
    m.one("state on");
    m.one("hold release");
    m.until("RECONNECTING state", |l| l.contains(",RECONNECTING,"));
    m.until("hold again", |l| l.starts_with(">HOLD:"));
    // SIGTERM while held: the last lines before the interface closes.
    kill("-TERM", &client);
    let deadline = Instant::now() + Duration::from_secs(15);
    while m.line(deadline).is_some() {}
    wait_exit(&mut client, Duration::from_secs(15));
    let lines = same_lines(&m);
    assert!(
        lines.iter().any(|l| l.starts_with("STATE EXITING,")),
        "{imp:?} showed no EXITING:\n{}\n{}",
        m.seen().join("\n"),
        log_tails(&client, server)
    );
    (lines, client.log())
}

/// Lines of `log` that show the server read a client's key-method-2
/// message (2.6 logs the client's peer info from it at verb 1).
fn key_methods_read(log: &str) -> usize {
    log.lines().filter(|l| l.contains("peer info:")).count()
}

#[test]
fn client_refusing_the_server_sends_no_key_method_and_exits_from_hold_as_stock() {
    let lab = Lab::new("fvhold1", 1, FERROVPN);
    let server = lab.stock_server(&lab.server_conf(Wrap::None, Cipher::Aes256Gcm));
    let (stock, stock_log) = refusing_client(&lab, &server, Implementation::Stock);
    assert_eq!(
        key_methods_read(&server.log()),
        0,
        "the stock client sent its key method:\n{}",
        server.log_tail(40)
    );
    let (ours, our_log) = refusing_client(&lab, &server, Implementation::Ferrovpn);
    assert_eq!(
        key_methods_read(&server.log()),
        0,
        "ferrovpn sent its key method (and password) to a refused server:\n{}",
        server.log_tail(40)
    );
    assert!(!server.log().contains("alice"), "{}", server.log_tail(40));
    assert_eq!(
        ours, stock,
        "ferrovpn's management lines differ from the stock client's"
    );
    for line in [
        "STATE RECONNECTING,tls-error",
        "STATE EXITING,init_instance",
    ] {
        assert!(ours.iter().any(|l| l == line), "{line}: {ours:?}");
    }
    // 2.6's log lines of the refusal.
    for log in [&stock_log, &our_log] {
        assert!(log.contains("VERIFY SCRIPT ERROR: depth=0"), "{log}");
        assert!(log.contains("TLS Error: TLS handshake failed"), "{log}");
        assert!(!log.contains(UP), "{log}");
    }
}

/// A server of `imp` whose tls-verify refuses once a deny file exists;
/// a stock client is admitted, then the file appears: the client's next
/// renegotiation is refused, the old key still carries traffic, and once
/// the server's tran-window ran out it carries none.
fn renegotiation_refused(lab: &Lab, imp: Implementation) {
    let deny = lab.dir.join(format!("{}-deny", imp.name()));
    let verify = refusing_verify_script(lab, &format!("{}-verify.sh", imp.name()), &deny);
    let mut sc = lab.server_conf(Wrap::None, Cipher::Aes256Gcm);
    sc.extra = vec![
        "script-security 2".into(),
        format!("tls-verify \"{}\"", verify.display()),
        "tran-window 15".into(),
    ];
    let mut server = lab.server(imp, &sc);
    let mut cc = lab.client_conf(
        0,
        &lab.pki.clients[0],
        "fvtun-c",
        Wrap::None,
        Cipher::Aes256Gcm,
    );
    cc.reneg_sec = Some(8);
    cc.extra.push("hand-window 45".into());
    let mut client = lab.client_up(
        Implementation::Stock,
        0,
        &format!("stock-of-{}", imp.name()),
        &cc,
        &server,
    );
    ping(&lab.clients[0], "10.8.0.1", 2, Duration::from_secs(10)).unwrap();
    std::fs::write(&deny, "").unwrap();
    wait_log(&mut server, "VERIFY SCRIPT ERROR: depth=0", &client);
    let refused_at = Instant::now();
    // The old key still carries the tunnel (the client is not dropped).
    if let Err(e) = ping(&lab.clients[0], "10.8.0.1", 2, Duration::from_secs(5)) {
        panic!(
            "{imp:?}: no traffic on the old key after the refusal: {e:#}\n{}",
            log_tails(&client, &server)
        );
    }
    assert!(
        !client.log().contains("TLS Error"),
        "{}",
        client.log_tail(30)
    );
    // After tran-window (15 s from the renegotiation's start) it carries none.
    let gone = wait_until(Duration::from_secs(30), Duration::from_millis(500), || {
        ping(&lab.clients[0], "10.8.0.1", 1, Duration::from_secs(1)).is_err()
    });
    assert!(
        gone,
        "{imp:?}: traffic after tran-window\n{}",
        log_tails(&client, &server)
    );
    let after = refused_at.elapsed();
    assert!(
        after >= Duration::from_secs(8),
        "{imp:?}: the old key went {after:?} after the refusal\n{}",
        log_tails(&client, &server)
    );
    client.stop(Duration::from_secs(5));
    server.stop(Duration::from_secs(5));
}

#[test]
fn server_refusing_a_renegotiation_keeps_the_old_key_for_tran_window_as_stock() {
    let lab = Lab::new("fvhold2", 1, FERROVPN);
    renegotiation_refused(&lab, Implementation::Stock);
    renegotiation_refused(&lab, Implementation::Ferrovpn);
}

/// The testkit client config's line (UDP).
const EXIT_NOTIFY: &str = "explicit-exit-notify 1\n";

/// A client of `imp` with `tls-exit` (and `explicit-exit-notify 1` if
/// `exit_notify`) whose tls-verify refuses the server, held by
/// `management-hold`, released: it must end by itself. Returns its
/// management lines, its exit status's code and its log.
fn client_ending_on_tls_error(
    lab: &Lab,
    server: &Proc,
    imp: Implementation,
    exit_notify: bool,
) -> (Vec<String>, Option<i32>, String) {
    let name = format!("{}-tls-exit-{exit_notify}", imp.name());
    let deny = lab.dir.join(format!("{name}.deny"));
    std::fs::write(&deny, "").unwrap();
    let verify = refusing_verify_script(lab, &format!("{name}.sh"), &deny);
    let socket = lab.dir.join(format!("{name}.sock"));
    let mut cc = lab.client_conf(
        0,
        &lab.pki.clients[0],
        "fvtun-c",
        Wrap::None,
        Cipher::Aes256Gcm,
    );
    cc.extra.extend([
        "script-security 2".to_string(),
        format!("tls-verify \"{}\"", verify.display()),
        "tls-exit".to_string(),
        "connect-retry 1".to_string(),
        format!("management {} unix", socket.display()),
        "management-hold".to_string(),
    ]);
    let mut text = openvpn_client_conf(&cc);
    assert!(text.contains(EXIT_NOTIFY), "{text}");
    if !exit_notify {
        text = text.replace(EXIT_NOTIFY, "");
    }
    let mut client = lab.spawn(&lab.clients[0], &name, imp, &text);
    let mut m = Management::connect_when_listening(&socket, Duration::from_secs(15));
    m.until("hold", |l| l.starts_with(">HOLD:"));
    m.one("state on");
    m.one("hold release");
    // No signal from here on: the refused handshake alone ends it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while m.line(deadline).is_some() {}
    let status = wait_exit(&mut client, Duration::from_secs(15));
    let lines = same_lines(&m);
    assert!(
        lines.iter().any(|l| l.starts_with("STATE EXITING,")),
        "{imp:?} showed no EXITING:\n{}\n{}",
        m.seen().join("\n"),
        log_tails(&client, server)
    );
    (lines, status.code(), client.log())
}

#[test]
fn client_with_tls_exit_ends_on_a_refused_handshake_as_stock() {
    let lab = Lab::new("fvtlsx1", 1, FERROVPN);
    let server = lab.stock_server(&lab.server_conf(Wrap::None, Cipher::Aes256Gcm));
    for exit_notify in [false, true] {
        let (stock, stock_code, stock_log) =
            client_ending_on_tls_error(&lab, &server, Implementation::Stock, exit_notify);
        let (ours, our_code, our_log) =
            client_ending_on_tls_error(&lab, &server, Implementation::Ferrovpn, exit_notify);
        assert_eq!(
            ours, stock,
            "explicit-exit-notify {exit_notify}: ferrovpn's management lines differ from the stock client's"
        );
        assert_eq!(
            ours.last().map(String::as_str),
            Some("STATE EXITING,tls-error"),
            "{ours:?}"
        );
        assert!(
            !ours.iter().any(|l| l.starts_with("STATE RECONNECTING")),
            "{ours:?}"
        );
        assert_eq!(stock_code, Some(0), "{stock_log}");
        assert_eq!(our_code, Some(0), "{our_log}");
        for log in [&stock_log, &our_log] {
            assert!(log.contains("TLS Error: TLS handshake failed"), "{log}");
        }
    }
}

/// A server of `imp` with `tls-exit` refuses a stock client's handshake
/// (tls-verify, while a deny file exists), keeps running, and lets the
/// same client in once the file is gone.
fn server_survives_a_refused_handshake(lab: &Lab, imp: Implementation) {
    let deny = lab.dir.join(format!("{}-server.deny", imp.name()));
    std::fs::write(&deny, "").unwrap();
    let verify = refusing_verify_script(lab, &format!("{}-server-verify.sh", imp.name()), &deny);
    let mut sc = lab.server_conf(Wrap::None, Cipher::Aes256Gcm);
    sc.extra = vec![
        "script-security 2".into(),
        format!("tls-verify \"{}\"", verify.display()),
        "tls-exit".into(),
    ];
    let mut server = lab.server(imp, &sc);
    let mut cc = lab.client_conf(
        0,
        &lab.pki.clients[0],
        "fvtun-c",
        Wrap::None,
        Cipher::Aes256Gcm,
    );
    cc.extra
        .extend(["hand-window 4".into(), "connect-retry 1".into()]);
    let mut client = lab.spawn(
        &lab.clients[0],
        &format!("stock-of-{}", imp.name()),
        Implementation::Stock,
        &openvpn_client_conf(&cc),
    );
    wait_log(&mut server, "VERIFY SCRIPT ERROR: depth=0", &client);
    // The client gives up on that handshake after its hand-window.
    wait_log(&mut client, "TLS Error: TLS handshake failed", &server);
    assert!(
        server.try_exit().is_none(),
        "{imp:?}: the server ended on a client's TLS error\n{}",
        log_tails(&client, &server)
    );
    std::fs::remove_file(&deny).unwrap();
    wait_log(&mut client, UP, &server);
    if let Err(e) = ping(&lab.clients[0], "10.8.0.1", 2, Duration::from_secs(10)) {
        panic!("{imp:?}: {e:#}\n{}", log_tails(&client, &server));
    }
    assert!(server.try_exit().is_none(), "{}", server.log_tail(30));
    client.stop(Duration::from_secs(5));
    server.stop(Duration::from_secs(5));
}

#[test]
fn server_with_tls_exit_keeps_running_after_a_refused_handshake_as_stock() {
    let lab = Lab::new("fvtlsx2", 1, FERROVPN);
    server_survives_a_refused_handshake(&lab, Implementation::Stock);
    server_survives_a_refused_handshake(&lab, Implementation::Ferrovpn);
}
