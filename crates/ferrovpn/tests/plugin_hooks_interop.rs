//! Plugin hooks beyond login checks: a tiny test plugin in C
//! (`tests/plugins/hooklog.c`, compiled here with `cc` against Debian's
//! `openvpn-plugin.h`) logs every call with its arguments and some
//! environment variables, and answers `CLIENT_CONNECT_V2` with an
//! `ifconfig-push`. The stock OpenVPN 2.6 server and ferrovpn load the
//! same object with the same configuration; a stock client connects to
//! each and goes; both must make the same calls in the same order:
//! `UP`, `ROUTE_UP`, `TLS_FINAL`, `CLIENT_CONNECT_V2`, `LEARN_ADDRESS add`,
//! `CLIENT_DISCONNECT`, `LEARN_ADDRESS delete`, `DOWN`. The plugin keeps
//! per-client contexts, so the log also shows when each is made and
//! destroyed and which one every call got. With its TLS_FINAL failing, on
//! the first handshake or on a renegotiation (`reneg-sec` short on the
//! client), both servers must refuse the client (AUTH_FAILED) and make the
//! same calls again.
//!
//! Needs root, the lab's tools, `cc` and Debian's openvpn package (its
//! header); every test fails loudly without them. Every wait has a deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferrovpn_testkit::lab::{UP, wait_log};
use ferrovpn_testkit::{Cipher, Lab, Proc, ServerConf, Wrap, ping, wait_until};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const TIMEOUT: Duration = Duration::from_secs(30);
const HOOKS: &str = "UP DOWN ROUTE_UP TLS_FINAL CLIENT_CONNECT_V2 CLIENT_DISCONNECT LEARN_ADDRESS";

/// Compile the test plugin into `dir`.
fn build_plugin(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/hooklog.c");
    let out = dir.join("hooklog.so");
    assert!(
        Path::new("/usr/include/openvpn/openvpn-plugin.h").is_file(),
        "openvpn-plugin.h missing: install Debian's openvpn package"
    );
    let st = Command::new("cc")
        .args(["-Wall", "-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg(&source)
        .status()
        .expect("cc (package gcc) must be installed");
    assert!(st.success(), "compiling {} failed", source.display());
    out
}

fn server_conf(lab: &Lab, plugin: &Path, log: &Path, plugin_args: &str) -> ServerConf {
    let mut sc = ServerConf::new(&lab.pki, "fvtun-s", Wrap::None, Cipher::Aes256Gcm);
    sc.extra = vec![format!(
        "plugin {} {} CC_PUSH=10.8.0.66 {plugin_args} {HOOKS}",
        plugin.display(),
        log.display()
    )];
    sc
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

fn wait_logged(log: &Path, what: &str, server: &Proc) {
    let ok = wait_until(TIMEOUT, Duration::from_millis(50), || {
        read(log).contains(what)
    });
    assert!(
        ok,
        "no '{what}' in the plugin log:\n{}\n--- server ---\n{}",
        read(log),
        server.log_tail(40)
    );
}

/// One server (stock or ferrovpn) with the plugin, a stock client in and
/// out, the server stopped: the plugin's log.
fn hook_sequence(lab: &Lab, plugin: &Path, stock: bool) -> String {
    let log = lab
        .dir
        .join(if stock { "stock.log" } else { "ferrovpn.log" });
    let sc = server_conf(lab, plugin, &log, "");
    let mut server = if stock {
        lab.stock_server(&sc)
    } else {
        lab.ferrovpn_server(&sc)
    };
    wait_logged(&log, "ROUTE_UP", &server);
    let cc = lab.client_conf(
        0,
        &lab.pki.clients[0],
        "fvtun-c",
        Wrap::None,
        Cipher::Aes256Gcm,
    );
    let name = if stock { "c-stock" } else { "c-ferrovpn" };
    let mut client = lab.stock_client(0, name, &cc);
    wait_log(&mut client, UP, &server);
    // The address the plugin's CLIENT_CONNECT_V2 config pushed.
    assert!(
        client.log().contains("10.8.0.66/24"),
        "no plugin-pushed address:\n{}",
        client.log_tail(30)
    );
    ping(&lab.clients[0], "10.8.0.1", 2, Duration::from_secs(10)).unwrap();
    wait_logged(&log, "LEARN_ADDRESS add", &server);
    client.stop(Duration::from_secs(5));
    // 2.6 closes the client 5 s after its exit notification, and calls
    // `learn-address delete` when it reaps the route (at the latest when
    // it stops): only the order is compared.
    wait_logged(&log, "CLIENT_DISCONNECT", &server);
    server.stop(Duration::from_secs(10));
    wait_logged(&log, "DOWN", &server);
    read(&log)
}

#[test]
fn plugin_hooks_are_called_as_by_stock_openvpn() {
    let lab = Lab::new("fvplh1", 1, FERROVPN);
    let plugin = build_plugin(&lab.dir.join("."));
    let stock = hook_sequence(&lab, &plugin, true);
    let ours = hook_sequence(&lab, &plugin, false);
    let names = |log: &str| -> Vec<String> {
        log.lines()
            .map(|l| l.split(" | ").next().unwrap_or("").to_owned())
            .collect()
    };
    assert_eq!(
        names(&ours),
        names(&stock),
        "hook calls differ\n--- ferrovpn ---\n{ours}\n--- stock ---\n{stock}"
    );
    assert_eq!(ours, stock, "hook environments differ");
}

/// One server (stock or ferrovpn) whose plugin fails its `fail_at`-th
/// TLS_FINAL call; a stock client (renegotiating every `reneg_sec`) comes
/// in and is refused; once its per-client context is gone the server
/// stops: the plugin's log.
fn refusal_sequence(
    lab: &Lab,
    plugin: &Path,
    stock: bool,
    fail_at: u32,
    reneg_sec: Option<u32>,
) -> String {
    let log = lab.dir.join(format!(
        "{}-fail{fail_at}.log",
        if stock { "stock" } else { "ferrovpn" }
    ));
    let sc = server_conf(lab, plugin, &log, &format!("FAIL_TLS_FINAL={fail_at}"));
    let mut server = if stock {
        lab.stock_server(&sc)
    } else {
        lab.ferrovpn_server(&sc)
    };
    wait_logged(&log, "ROUTE_UP", &server);
    let mut cc = lab.client_conf(
        0,
        &lab.pki.clients[0],
        "fvtun-c",
        Wrap::None,
        Cipher::Aes256Gcm,
    );
    cc.reneg_sec = reneg_sec;
    let name = format!("c{fail_at}-{}", if stock { "stock" } else { "ferrovpn" });
    let mut client = lab.stock_client(0, &name, &cc);
    if reneg_sec.is_some() {
        wait_log(&mut client, UP, &server);
    }
    wait_log(&mut client, "AUTH_FAILED", &server);
    // The client instance closes a few seconds after AUTH_FAILED.
    wait_logged(&log, "CLIENT_DESTRUCTOR #2", &server);
    client.stop(Duration::from_secs(5));
    server.stop(Duration::from_secs(10));
    wait_logged(&log, "DOWN", &server);
    read(&log)
}

#[test]
fn tls_final_refusals_as_by_stock_openvpn() {
    let lab = Lab::new("fvplh2", 1, FERROVPN);
    let plugin = build_plugin(&lab.dir.join("."));
    // Refused on the first handshake, then on the first renegotiation.
    for (fail_at, reneg_sec) in [(1, None), (2, Some(5))] {
        let stock = refusal_sequence(&lab, &plugin, true, fail_at, reneg_sec);
        let ours = refusal_sequence(&lab, &plugin, false, fail_at, reneg_sec);
        assert_eq!(
            ours, stock,
            "hook calls differ (TLS_FINAL call {fail_at} failing)\n--- ferrovpn ---\n{ours}\n--- stock ---\n{stock}"
        );
    }
}
