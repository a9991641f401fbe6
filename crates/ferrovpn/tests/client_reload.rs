//! A client's SIGHUP is a hard restart that reads the config file again,
//! as OpenVPN 2.6's main loop (`openvpn_main`): the instance ends (its tun
//! device closes), the command line and config are parsed again, and the
//! next instance starts with the management interface of the last
//! (`management_open` opens it once), which says `RECONNECTING,SIGHUP`
//! and holds again with `management-hold`. A config that no longer reads
//! ends the process with status 1.
//!
//! Each script runs against the ferrovpn client and Debian's stock 2.6
//! client with the same stock 2.6 server, and the test compares what both
//! showed on their management interfaces.
//!
//! Needs root, `openvpn`, `ip` and `/dev/net/tun`; fails loudly without
//! them. Every wait has a deadline.

use std::time::{Duration, Instant};

use ferrovpn_testkit::lab::{CLIENT_DEV, kill, wait_exit};
use ferrovpn_testkit::mgmt::{
    Management, client_lines, held_client, same_as_stock_or, state_names_and_reasons,
};
use ferrovpn_testkit::{ClientConf, Implementation, Lab, openvpn_client_conf, wait_until};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const TIMEOUT: Duration = Duration::from_secs(30);

/// The route the edited config adds.
const ADDED_ROUTE: &str = "10.99.3.0/24";

/// The client namespace's IPv4 routes to `net`, as `ip route` shows them.
fn routes(lab: &Lab, net: &str) -> String {
    let out = lab.clients[0]
        .command("ip", &["-4", "route", "show", net])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every line the interface writes until it closes (the process exited)
/// or `timeout` passes.
fn drain(m: &mut Management, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while m.line(deadline).is_some() {}
}

/// A held client of `imp`, released and connected, with `state on`; the
/// config file it was started from.
fn connected_client(
    lab: &Lab,
    cc: &ClientConf,
    imp: Implementation,
    tag: &str,
) -> (ferrovpn_testkit::Proc, Management, std::path::PathBuf) {
    let name = format!("{}-{tag}", imp.name());
    let (client, mut m) = held_client(lab, &openvpn_client_conf(cc), imp, &name, &[]);
    let conf = lab.dir.join(format!("{name}.conf"));
    assert!(conf.exists(), "{} not where expected", conf.display());
    m.until("hold", |l| l.starts_with(">HOLD:"));
    m.one("state on");
    m.one("hold release");
    m.until("CONNECTED state", |l| l.contains(",CONNECTED,"));
    (client, m, conf)
}

/// The config edited (a `route` added) and a real SIGHUP: 2.6 says
/// `RECONNECTING,SIGHUP`, holds again, and once released connects with
/// the new config (the route is there); both clients show the same.
#[test]
fn sighup_reads_the_edited_config_as_2_6() {
    let lab = Lab::new("cl-hup", 1, FERROVPN);
    let (sc, cc) = lab.tls_crypt_confs();
    let server = lab.stock_server(&sc);
    // The last client's log, for a failure message.
    let last_log = std::cell::RefCell::new(String::new());
    let script = |imp: Implementation| {
        let (mut client, mut m, conf) = connected_client(&lab, &cc, imp, "hup");
        assert!(routes(&lab, ADDED_ROUTE).is_empty(), "route there before");
        let text = std::fs::read_to_string(&conf).unwrap();
        std::fs::write(&conf, format!("{text}route 10.99.3.0 255.255.255.0\n")).unwrap();
        kill("-HUP", &client);
        m.until("RECONNECTING state", |l| l.contains(",RECONNECTING,"));
        m.until("hold again", |l| l.starts_with(">HOLD:"));
        m.one("hold release");
        m.until("CONNECTED state", |l| l.contains(",CONNECTED,"));
        let added = wait_until(TIMEOUT, Duration::from_millis(100), || {
            routes(&lab, ADDED_ROUTE).contains(CLIENT_DEV)
        });
        assert!(
            added,
            "{}: the edited config's route is not there:\n{}",
            imp.name(),
            client.log_tail(30)
        );
        m.one("signal SIGTERM");
        let status = wait_exit(&mut client, Duration::from_secs(15));
        assert!(status.success(), "{status:?}\n{}", client.log_tail(20));
        drain(&mut m, Duration::from_secs(2));
        assert!(routes(&lab, ADDED_ROUTE).is_empty(), "route left behind");
        *last_log.borrow_mut() = client.log_tail(40);
        (client_lines(&m), state_names_and_reasons(&m))
    };
    let (lines, states) = same_as_stock_or(script, || last_log.borrow().clone());
    eprintln!("both clients showed: {lines:#?}\n{states:#?}");
    assert!(
        states.contains(&"RECONNECTING,SIGHUP,,,,,".to_string()),
        "{states:?}"
    );
    drop(server);
}

/// The config broken (an unknown directive) and a real SIGHUP: 2.6 says
/// `RECONNECTING,SIGHUP`, then fails on the options and exits with status
/// 1, naming the directive; both clients show the same on the interface.
#[test]
fn sighup_with_a_broken_config_exits_1_as_2_6() {
    let lab = Lab::new("cl-hup-bad", 1, FERROVPN);
    let (sc, cc) = lab.tls_crypt_confs();
    let server = lab.stock_server(&sc);
    // The last client's log, for a failure message.
    let last_log = std::cell::RefCell::new(String::new());
    let script = |imp: Implementation| {
        let (mut client, mut m, conf) = connected_client(&lab, &cc, imp, "bad");
        let text = std::fs::read_to_string(&conf).unwrap();
        std::fs::write(&conf, format!("{text}no-such-directive 1\n")).unwrap();
        kill("-HUP", &client);
        let status = wait_exit(&mut client, Duration::from_secs(15));
        drain(&mut m, Duration::from_secs(2));
        let log = client.log();
        assert!(
            log.contains("no-such-directive"),
            "{}: the error does not name the directive:\n{}",
            imp.name(),
            client.log_tail(20)
        );
        *last_log.borrow_mut() = client.log_tail(40);
        (status.code(), client_lines(&m), state_names_and_reasons(&m))
    };
    let (code, lines, states) = same_as_stock_or(script, || last_log.borrow().clone());
    eprintln!("both clients exited with {code:?}, having shown: {lines:#?}\n{states:#?}");
    assert_eq!(code, Some(1), "{lines:?}");
    assert!(
        states.contains(&"RECONNECTING,SIGHUP,,,,,".to_string()),
        "{states:?}"
    );
    drop(server);
}
