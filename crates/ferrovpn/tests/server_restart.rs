//! A server restarts in place on SIGHUP and SIGUSR1, as OpenVPN 2.6's main
//! loop (`openvpn_main`): SIGHUP reads the config file again, closes the
//! plugins and the tunnel device and opens them again; SIGUSR1 keeps the
//! config as read and the plugins, and the device with `persist-tun`. The
//! management interface stays open across restarts and says
//! `RECONNECTING,SIGNAL`, then the start-up states again.
//!
//! - A config edit (a pushed route) and a real SIGHUP: the stock client,
//!   told `RESTART` (`explicit-exit-notify` on the server), reconnects at
//!   once and gets the new route.
//! - `signal SIGUSR1`, `signal SIGHUP`, `signal SIGTERM` over management:
//!   the transcript (states, `>UPDOWN` blocks, replies) equal to the stock
//!   server's, with and without `persist-tun`.
//! - The test plugin's open/close and UP/DOWN calls across real SIGUSR1
//!   and SIGHUP, equal to the stock server's, with and without `persist-tun`.
//!
//! Needs root, `openvpn`, `ip`, `/dev/net/tun`, `cc` and Debian's
//! `openvpn-plugin.h`; fails loudly without them. Every wait has a deadline.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ferrovpn_testkit::lab::{CLIENT_DEV, UP, kill, wait_exit, wait_for_count};
use ferrovpn_testkit::mgmt::{
    Management, REPLY_TIMEOUT, server_conf_with_management, server_transcripts_as_stock,
    transcript_to_exit, wait_connected_in_state_all,
};
use ferrovpn_testkit::{
    Cipher, Implementation, Lab, Proc, ServerConf, Wrap, compile_plugin, openvpn_server_conf, ping,
    wait_until,
};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const TIMEOUT: Duration = Duration::from_secs(30);

/// The lab's server config text, without `persist-tun` when asked.
fn server_text(sc: &ServerConf, persist_tun: bool) -> String {
    let text = openvpn_server_conf(sc);
    if persist_tun {
        text
    } else {
        let without = text.replace("persist-tun\n", "");
        assert_ne!(without, text, "the lab's server config has no persist-tun");
        without
    }
}

/// The line that says a server instance is up: stock's end of
/// initialization, ferrovpn's listening line.
fn ready_line(imp: Implementation) -> &'static str {
    match imp {
        Implementation::Stock => UP,
        Implementation::Ferrovpn => ferrovpn_testkit::lab::LISTENING,
    }
}

fn wait_instances(server: &Proc, imp: Implementation, n: usize) {
    assert!(
        wait_for_count(server, ready_line(imp), n, TIMEOUT),
        "{}: instance {n} never came up:\n{}",
        server.name(),
        server.log_tail(40)
    );
}

#[test]
fn sighup_reads_the_edited_config_and_the_stock_client_gets_the_new_push() {
    let lab = Lab::new("srvsig-hup", 1, FERROVPN);
    let wrap = lab.tls_crypt();
    let mut sc = lab.server_conf(wrap.clone(), Cipher::Aes256Gcm);
    sc.push.push("route 10.99.1.0 255.255.255.0".into());
    sc.extra.push("explicit-exit-notify 1".into());
    let mut server = lab.spawn(
        &lab.server_ns,
        "hup-server",
        Implementation::Ferrovpn,
        &openvpn_server_conf(&sc),
    );
    let conf = lab.dir.join("hup-server.conf");
    wait_instances(&server, Implementation::Ferrovpn, 1);
    let cc = lab.client_conf(0, &lab.pki.clients[0], CLIENT_DEV, wrap, Cipher::Aes256Gcm);
    let mut client = lab.stock_client_up(0, "stock-client", &cc, &server);
    let routes = |net: &str| -> String {
        let out = lab.clients[0]
            .command("ip", &["-4", "route", "show", net])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(routes("10.99.1.0/24").contains(CLIENT_DEV), "first push");

    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, text.replace("10.99.1.0", "10.99.2.0")).unwrap();
    let restarted_at = Instant::now();
    kill("-HUP", &server);
    wait_instances(&server, Implementation::Ferrovpn, 2);
    let log = server.log();
    for line in [
        "SIGHUP[hard,] received, process restarting",
        "explicit-exit-notify: clients told RESTART",
        "Restart pause, 1 second(s)",
    ] {
        assert!(log.contains(line), "no '{line}' in the server log:\n{log}");
    }
    // Told RESTART, the stock client reconnects at once (no ping-restart).
    assert!(
        wait_for_count(&client, UP, 2, TIMEOUT),
        "the client did not reconnect:\n{}\n--- server ---\n{}",
        client.log_tail(30),
        server.log_tail(30)
    );
    assert!(
        client
            .log()
            .contains("SIGUSR1[soft,server-pushed-connection-reset] received"),
        "{}",
        client.log_tail(30)
    );
    assert!(
        restarted_at.elapsed() < Duration::from_secs(20),
        "reconnect took {:?}",
        restarted_at.elapsed()
    );
    let ok = wait_until(TIMEOUT, Duration::from_millis(100), || {
        routes("10.99.2.0/24").contains(CLIENT_DEV)
    });
    assert!(ok, "new route not pushed:\n{}", client.log_tail(30));
    assert!(routes("10.99.1.0/24").is_empty(), "old route still there");
    let p = ping(&lab.clients[0], "10.8.0.1", 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}\n{}", server.log_tail(30));
    client.stop(Duration::from_secs(5));
    kill("-TERM", &server);
    assert!(wait_exit(&mut server, Duration::from_secs(10)).success());
}

/// A SIGHUP whose edited config is broken ends the server, as 2.6's
/// options error does (exit status 1).
#[test]
fn sighup_with_a_broken_config_exits_as_2_6() {
    let lab = Lab::new("srvsig-bad", 0, FERROVPN);
    let sc = lab.server_conf(lab.tls_crypt(), Cipher::Aes256Gcm);
    let mut server = lab.spawn(
        &lab.server_ns,
        "bad-server",
        Implementation::Ferrovpn,
        &openvpn_server_conf(&sc),
    );
    wait_instances(&server, Implementation::Ferrovpn, 1);
    let conf = lab.dir.join("bad-server.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, format!("{text}no-such-directive 1\n")).unwrap();
    kill("-HUP", &server);
    let status = wait_exit(&mut server, Duration::from_secs(15));
    assert_eq!(status.code(), Some(1), "{}", server.log_tail(20));
    assert!(
        server.log().contains("no-such-directive"),
        "{}",
        server.log_tail(20)
    );
}

/// A server of `imp` with a management socket and `management-up-down`:
/// once CONNECTED, `state on`, then `signal SIGUSR1`, `signal SIGHUP` (each
/// waited on until CONNECTED again), `signal SIGTERM`, read until the
/// interface closes. Returns the lines read from `state on` on, normalized.
fn restart_transcript(lab: &Lab, imp: Implementation, persist_tun: bool) -> Vec<String> {
    let name = imp.name();
    let socket = lab.dir.join(format!("{name}-mgmt.sock"));
    let mut sc = server_conf_with_management(lab, &socket);
    sc.extra.extend([
        "management-up-down".into(),
        "route 10.77.0.0 255.255.255.0".into(),
    ]);
    let mut server = lab.spawn(
        &lab.server_ns,
        &format!("{name}-server"),
        imp,
        &server_text(&sc, persist_tun),
    );
    let mut m = Management::connect_when_listening(&socket, REPLY_TIMEOUT);
    m.until("welcome", |l| l.starts_with(">INFO:"));
    wait_connected_in_state_all(&mut m);
    let from = m.seen().len();
    m.one("state on");
    for signal in ["SIGUSR1", "SIGHUP"] {
        assert_eq!(
            m.one(&format!("signal {signal}")),
            format!("SUCCESS: signal {signal} thrown")
        );
        m.until("RECONNECTING", |l| l.contains(",RECONNECTING,"));
        m.until("CONNECTED again", |l| l.contains(",CONNECTED,SUCCESS,"));
    }
    // The interface still answers after both restarts.
    m.block("state all");
    m.send("signal SIGTERM");
    transcript_to_exit(&mut m, &mut server, from, name)
}

fn restart_transcripts_as_stock(tag: &str, persist_tun: bool) -> Vec<String> {
    let lab = Lab::new(tag, 0, FERROVPN);
    server_transcripts_as_stock(|imp| restart_transcript(&lab, imp, persist_tun))
}

#[test]
fn management_signals_restart_with_persist_tun_as_stock() {
    let ours = restart_transcripts_as_stock("srvsig-mp", true);
    for line in [
        ">STATE:T,RECONNECTING,SIGUSR1,,,,,",
        ">STATE:T,RECONNECTING,SIGHUP,,,,,",
    ] {
        assert!(ours.contains(&line.to_string()), "no {line}: {ours:?}");
    }
    // SIGUSR1 kept the device: its only ASSIGN_IP is SIGHUP's.
    let assigns = ours
        .iter()
        .filter(|l| l.starts_with(">STATE:") && l.contains(",ASSIGN_IP,"))
        .count();
    assert_eq!(assigns, 1, "{ours:?}");
}

#[test]
fn management_signals_restart_without_persist_tun_as_stock() {
    let ours = restart_transcripts_as_stock("srvsig-mn", false);
    let assigns = ours
        .iter()
        .filter(|l| l.starts_with(">STATE:") && l.contains(",ASSIGN_IP,"))
        .count();
    assert_eq!(assigns, 2, "{ours:?}");
    assert_eq!(ours.last().unwrap(), ">STATE:T,EXITING,SIGTERM,,,,,");
}

/// Compile the hook-logging test plugin (`tests/plugins/hooklog.c`) into
/// `dir`.
fn build_plugin(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/hooklog.c");
    compile_plugin(&source, dir)
}

/// The plugin's OPEN/CLOSE/UP/DOWN calls of a server of `imp` across a
/// real SIGUSR1, a real SIGHUP and SIGTERM (per-client context calls left
/// out).
fn plugin_calls(lab: &Lab, plugin: &Path, imp: Implementation, persist_tun: bool) -> Vec<String> {
    let name = imp.name();
    let log = lab.dir.join(format!("{name}-plugin.log"));
    let mut sc = lab.server_conf(Wrap::None, Cipher::Aes256Gcm);
    sc.extra.push(format!(
        "plugin {} {} LOG_OPEN_CLOSE UP DOWN",
        plugin.display(),
        log.display()
    ));
    let mut server = lab.spawn(
        &lab.server_ns,
        &format!("{name}-plugin-server"),
        imp,
        &server_text(&sc, persist_tun),
    );
    wait_instances(&server, imp, 1);
    kill("-USR1", &server);
    wait_instances(&server, imp, 2);
    kill("-HUP", &server);
    wait_instances(&server, imp, 3);
    kill("-TERM", &server);
    let status = wait_exit(&mut server, Duration::from_secs(10));
    assert!(
        status.success(),
        "{name}: {status:?}\n{}",
        server.log_tail(20)
    );
    std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        // The server's per-client context differs: 2.6 makes a new one for
        // each instance and leaves the old one undestroyed on SIGUSR1;
        // ferrovpn keeps the one it made with the plugins.
        .filter(|call| ["OPEN", "CLOSE", "UP", "DOWN"].contains(call))
        .map(str::to_string)
        .collect()
}

fn plugin_calls_as_stock(tag: &str, persist_tun: bool) -> Vec<String> {
    let lab = Lab::new(tag, 0, FERROVPN);
    let plugin = build_plugin(lab.dir.path());
    let stock = plugin_calls(&lab, &plugin, Implementation::Stock, persist_tun);
    let ours = plugin_calls(&lab, &plugin, Implementation::Ferrovpn, persist_tun);
    assert_eq!(ours, stock, "plugin calls: ours {ours:?}, stock {stock:?}");
    ours
}

#[test]
fn plugins_closed_and_opened_on_sighup_kept_on_sigusr1_as_stock() {
    // No persist-tun: SIGUSR1 closes the device (DOWN, UP), not the plugin.
    let ours = plugin_calls_as_stock("srvsig-pl", false);
    assert_eq!(
        ours,
        [
            "OPEN", "UP", "DOWN", "UP", "DOWN", "CLOSE", "OPEN", "UP", "DOWN", "CLOSE"
        ],
    );
}

#[test]
fn plugins_with_persist_tun_as_stock() {
    // persist-tun: SIGUSR1 keeps the device too; SIGHUP closes both.
    let ours = plugin_calls_as_stock("srvsig-plp", true);
    assert_eq!(
        ours,
        ["OPEN", "UP", "DOWN", "CLOSE", "OPEN", "UP", "DOWN", "CLOSE"]
    );
}
