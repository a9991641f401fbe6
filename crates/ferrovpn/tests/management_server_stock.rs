//! A SERVER's management interface, line for line against Debian's stock
//! OpenVPN 2.6 server: the same management script drives the stock server
//! and the ferrovpn server (same config, same namespace, one after the
//! other), and the transcripts must be equal, only timestamps and the
//! process's own values (`daemon_pid`, `daemon_start_time`, the config
//! file's name) told apart: the start-up `>STATE` lines (`CONNECTING`,
//! `ASSIGN_IP`, `ADD_ROUTES`, `CONNECTED`) live and in `state all`,
//! `management-up-down`'s `>UPDOWN:UP|DOWN` blocks, the replies to
//! `signal`, the `EXITING` state before the interface closes, and the exit
//! status.
//!
//! Needs root, `openvpn`, `ip` and `/dev/net/tun`; fails loudly without
//! them. Every wait has a deadline.

use std::time::{Duration, Instant};

use ferrovpn_testkit::lab::{kill, wait_exit};
use ferrovpn_testkit::mgmt::{Management, REPLY_TIMEOUT};
use ferrovpn_testkit::{Cipher, Implementation, Lab, Material, Wrap, openvpn_server_conf};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

/// A transcript line with what differs per process cut: the time of state
/// entries and the process's own environment values.
fn normalized(line: &str) -> String {
    for name in ["daemon_pid", "daemon_start_time", "config"] {
        let prefix = format!(">UPDOWN:ENV,{name}=");
        if line.starts_with(&prefix) {
            return format!("{prefix}*");
        }
    }
    let (head, entry) = match line.strip_prefix(">STATE:") {
        Some(rest) => (">STATE:", rest),
        None => ("", line),
    };
    match entry.split_once(',') {
        Some((time, rest)) if time.len() >= 9 && time.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{head}T,{rest}")
        }
        _ => line.to_string(),
    }
}

/// How the script ends the server.
#[derive(Clone, Copy)]
enum End {
    /// `signal NAME` over the management interface.
    Command(&'static str),
    /// The operating system's signal (`-TERM`, `-INT`).
    Process(&'static str),
}

/// Run a server of `imp` with `extra` config lines and a management
/// socket; with `hold`, read the hold notice, turn `state on`, read
/// `state all`, release the hold; without, turn `state on` once
/// CONNECTED is in `state`. Then `state all`, `signal SIGUSR2` (a
/// status to the log, no state), then end it as `end` says, and read
/// until the interface closes. Returns every line read (normalized)
/// and whether the process exited successfully.
fn transcript(lab: &Lab, imp: Implementation, extra: &[&str], hold: bool, end: End) -> Vec<String> {
    let name = match imp {
        Implementation::Stock => "stock",
        Implementation::Ferrovpn => "ferrovpn",
    };
    let socket = lab.dir.join(format!("{name}-mgmt.sock"));
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let mut sc = lab.server_conf(wrap, Cipher::Aes256Gcm);
    sc.extra
        .push(format!("management {} unix", socket.display()));
    if hold {
        sc.extra.push("management-hold".into());
    }
    sc.extra.extend(extra.iter().map(|l| l.to_string()));
    let mut server = lab.spawn(
        &lab.server_ns,
        &format!("{name}-server"),
        imp,
        &openvpn_server_conf(&sc),
    );
    let mut m = Management::connect_when_listening(&socket, REPLY_TIMEOUT);
    m.until("welcome", |l| l.starts_with(">INFO:"));
    if hold {
        m.until("hold", |l| l.starts_with(">HOLD:"));
        m.one("state on");
        m.block("state all");
        m.one("hold release");
        m.until("CONNECTED", |l| l.contains(",CONNECTED,SUCCESS,"));
    } else {
        // Up when CONNECTED is in the history (stock opens its interface
        // before its tunnel).
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while !m
            .block("state all")
            .iter()
            .any(|l| l.contains(",CONNECTED,"))
        {
            assert!(Instant::now() < deadline, "never CONNECTED: {:?}", m.seen());
            std::thread::sleep(Duration::from_millis(100));
        }
        m.one("state on");
    }
    m.block("state all");
    assert_eq!(m.one("signal SIGUSR2"), "SUCCESS: signal SIGUSR2 thrown");
    match end {
        End::Command(signal) => m.send(&format!("signal {signal}")),
        End::Process(signal) => kill(signal, &server),
    }
    // Everything up to the end of the stream: the interface closes when
    // the process exits.
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while m.line(deadline).is_some() {}
    assert!(
        Instant::now() < deadline,
        "{name}: the management interface did not close; read:\n{}",
        m.seen().join("\n")
    );
    let status = wait_exit(&mut server, Duration::from_secs(10));
    assert!(
        status.success(),
        "{name}: {status:?}\n{}",
        server.log_tail(20)
    );
    m.seen().iter().map(|l| normalized(l)).collect()
}

/// The ferrovpn server's transcript, asserted equal to the stock server's.
fn as_stock(tag: &str, extra: &[&str], hold: bool, end: End) -> Vec<String> {
    let lab = Lab::new(tag, 0, FERROVPN);
    let stock = transcript(&lab, Implementation::Stock, extra, hold, end);
    let ours = transcript(&lab, Implementation::Ferrovpn, extra, hold, end);
    assert_eq!(
        ours,
        stock,
        "the ferrovpn server's management transcript differs from the stock server's:\nours:\n{}\nstock:\n{}",
        ours.join("\n"),
        stock.join("\n")
    );
    ours
}

/// Held, with routes, `up`/`route-up` scripts and `management-up-down`,
/// ended by `signal SIGTERM`.
#[test]
fn server_up_down_start_states_and_signal_sigterm_as_stock() {
    let ours = as_stock(
        "mgsrv-ud",
        &[
            "management-up-down",
            "route 10.77.0.0 255.255.255.0",
            "route 10.78.0.0 255.255.0.0 vpn_gateway 7",
            "script-security 2",
            "up /bin/true",
            "route-up /bin/true",
        ],
        true,
        End::Command("SIGTERM"),
    );
    let at = |l: &str| {
        ours.iter()
            .position(|x| x == l)
            .unwrap_or_else(|| panic!("no {l}: {ours:?}"))
    };
    // What the comparison covers, in 2.6's order.
    let order = [
        at("T,CONNECTING,,,,,,"),
        at(">STATE:T,ASSIGN_IP,,10.8.0.1,,,,"),
        at(">STATE:T,ADD_ROUTES,,,,,,"),
        at(">UPDOWN:UP"),
        at(">STATE:T,CONNECTED,SUCCESS,10.8.0.1,,,,"),
        at("SUCCESS: signal SIGTERM thrown"),
        at(">UPDOWN:DOWN"),
        at(">STATE:T,EXITING,SIGTERM,,,,,"),
    ];
    assert!(order.is_sorted(), "{ours:?}");
    assert!(ours.contains(&">UPDOWN:ENV,route_metric_2=7".to_string()));
    assert!(ours.contains(&">UPDOWN:ENV,script_type=route-up".to_string()));
}

/// Not held, no scripts or routes: `signal SIGINT` ends it as SIGINT.
#[test]
fn server_states_and_signal_sigint_as_stock() {
    let ours = as_stock("mgsrv-int", &[], false, End::Command("SIGINT"));
    assert_eq!(ours.last().unwrap(), ">STATE:T,EXITING,SIGINT,,,,,");
}

/// The operating system's SIGTERM says EXITING,SIGTERM too, and the
/// `management-up-down` block of a server without routes or scripts.
#[test]
fn server_process_sigterm_as_stock() {
    let ours = as_stock(
        "mgsrv-term",
        &["management-up-down"],
        true,
        End::Process("-TERM"),
    );
    assert_eq!(ours.last().unwrap(), ">STATE:T,EXITING,SIGTERM,,,,,");
}
