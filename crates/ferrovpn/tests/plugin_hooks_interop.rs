//! Plugin hooks beyond login checks: a tiny test plugin in C
//! (`tests/plugins/hooklog.c`, compiled here with `cc` against Debian's
//! `openvpn-plugin.h`) logs every call with its arguments and some
//! environment variables, and answers `CLIENT_CONNECT_V2` with an
//! `ifconfig-push`. The stock OpenVPN 2.6 server and ferrovpn load the
//! same object with the same configuration; a stock client connects to
//! each and goes; both must make the same calls in the same order:
//! `UP`, `ROUTE_UP`, `TLS_FINAL`, `CLIENT_CONNECT_V2`, `LEARN_ADDRESS add`,
//! `CLIENT_DISCONNECT`, `LEARN_ADDRESS delete`, `ROUTE_PREDOWN`, `DOWN`. The plugin keeps
//! per-client contexts, so the log also shows when each is made and
//! destroyed and which one every call got. With its TLS_FINAL failing, on
//! the first handshake or on a renegotiation (`reneg-sec` short on the
//! client), both servers must refuse the client (AUTH_FAILED) and make the
//! same calls again.
//!
//! `PLUGIN_TLS_VERIFY`: the plugin reads each certificate of the client's
//! chain from the OpenSSL `X509*` it gets (through libcrypto) and logs it
//! with the certificate variables; both servers must make the same calls
//! with the same certificates. With the plugin refusing one client's CN,
//! both servers must refuse that client in its TLS handshake and make the
//! same calls.
//!
//! Needs root, the lab's tools, `cc`, Debian's openvpn package (its
//! header) and libssl-dev (OpenSSL's headers); every test fails loudly
//! without them. Every wait has a deadline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrovpn_testkit::lab::{UP, wait_exit, wait_log};
use ferrovpn_testkit::{
    Cipher, Lab, Proc, ServerConf, Wrap, compile_plugin, ping, sh_script, wait_for_file_text,
};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const TIMEOUT: Duration = Duration::from_secs(30);
const HOOKS: &str =
    "UP DOWN ROUTE_UP ROUTE_PREDOWN TLS_FINAL CLIENT_CONNECT_V2 CLIENT_DISCONNECT LEARN_ADDRESS";

/// Compile the hook-logging test plugin (`tests/plugins/hooklog.c`) into
/// `dir`.
fn build_plugin(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/plugins/hooklog.c");
    compile_plugin(&source, dir)
}

fn server_conf(lab: &Lab, plugin: &Path, log: &Path, plugin_args: &str) -> ServerConf {
    server_conf_hooks(lab, plugin, log, plugin_args, HOOKS)
}

fn server_conf_hooks(
    lab: &Lab,
    plugin: &Path,
    log: &Path,
    plugin_args: &str,
    hooks: &str,
) -> ServerConf {
    let mut sc = ServerConf::new(&lab.pki, "fvtun-s", Wrap::None, Cipher::Aes256Gcm);
    sc.extra = vec![format!(
        "plugin {} {} CC_PUSH=10.8.0.66 {plugin_args} {hooks}",
        plugin.display(),
        log.display()
    )];
    sc
}

fn read(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

fn wait_logged(log: &Path, what: &str, server: &Proc) {
    let ok = wait_for_file_text(log, what, TIMEOUT);
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

/// The hooks of the TLS_VERIFY tests: TLS_FINAL shows where the
/// verification stands among the other calls.
const VERIFY_HOOKS: &str = "TLS_VERIFY TLS_FINAL CLIENT_CONNECT_V2";

/// One server (stock or ferrovpn) whose plugin verifies certificates
/// (refusing the CN `refuse_cn`, if any; with `tls-export-cert`); the
/// stock client `client` (index into the PKI's clients) comes in, is
/// admitted (or refused: `refused`) and goes; the server stops: the
/// plugin's log and the client's.
fn verify_sequence(
    lab: &Lab,
    plugin: &Path,
    stock: bool,
    client: usize,
    refuse_cn: Option<&str>,
) -> (String, String) {
    let who = if stock { "stock" } else { "ferrovpn" };
    let log = lab.dir.join(format!("verify-{who}-{client}.log"));
    let export = lab.dir.join(format!("export-{who}-{client}"));
    std::fs::create_dir_all(&export).unwrap();
    let args = refuse_cn.map_or(String::new(), |cn| format!("FAIL_TLS_VERIFY_CN={cn}"));
    let mut sc = server_conf_hooks(lab, plugin, &log, &args, VERIFY_HOOKS);
    sc.extra
        .push(format!("tls-export-cert {}", export.display()));
    let mut server = if stock {
        lab.stock_server(&sc)
    } else {
        lab.ferrovpn_server(&sc)
    };
    wait_logged(&log, "CLIENT_CONSTRUCTOR #1", &server);
    let mut cc = lab.client_conf(
        0,
        &lab.pki.clients[client],
        "fvtun-c",
        Wrap::None,
        Cipher::Aes256Gcm,
    );
    // One try: a refused client waits before its next (under 2.6 it hears
    // nothing and gives up on the handshake after `hand-window`).
    cc.extra.push("connect-retry 30".into());
    cc.extra.push("hand-window 8".into());
    let mut c = lab.stock_client(0, &format!("v{client}-{who}"), &cc);
    if refuse_cn.is_some() {
        wait_log(&mut server, "VERIFY PLUGIN ERROR: depth=0", &c);
        // Refused in its TLS handshake: the client starts over.
        wait_log(&mut c, "process restarting", &server);
        assert!(!c.log().contains(UP), "{}", c.log_tail(30));
    } else {
        wait_log(&mut c, UP, &server);
        wait_log(&mut server, "VERIFY PLUGIN OK: depth=0", &c);
    }
    c.stop(Duration::from_secs(5));
    wait_logged(&log, "CLIENT_DESTRUCTOR #2", &server);
    server.stop(Duration::from_secs(10));
    wait_logged(&log, "CLIENT_DESTRUCTOR #1", &server);
    // The certificate files are gone after each call.
    assert_eq!(std::fs::read_dir(&export).unwrap().count(), 0);
    (read(&log), c.log())
}

#[test]
fn tls_verify_plugin_reads_the_certificates_as_under_stock_openvpn() {
    let lab = Lab::new("fvplh3", 1, FERROVPN);
    let plugin = build_plugin(&lab.dir.join("."));
    let (stock, _) = verify_sequence(&lab, &plugin, true, 0, None);
    let (ours, _) = verify_sequence(&lab, &plugin, false, 0, None);
    assert_eq!(
        ours, stock,
        "TLS_VERIFY calls differ\n--- ferrovpn ---\n{ours}\n--- stock ---\n{stock}"
    );
    // The plugin read the CA (depth 1), then the client (depth 0), from
    // OpenSSL objects: their subjects, serials and digests are those of
    // the environment.
    let depth1 = ours
        .find("cert depth=1 object=X509")
        .unwrap_or_else(|| panic!("{ours}"));
    let depth0 = ours
        .find("cert depth=0 object=X509")
        .unwrap_or_else(|| panic!("{ours}"));
    assert!(depth1 < depth0, "{ours}");
    let leaf = &ours[depth0..];
    assert!(leaf.contains("subject=/CN=client1"), "{ours}");
    let field = |text: &str, name: &str| -> String {
        text.split(&format!(" {name}="))
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .to_owned()
    };
    assert_eq!(field(leaf, "serial"), field(leaf, "tls_serial_0"), "{ours}");
    assert_eq!(
        field(leaf, "sha256"),
        field(leaf, "tls_digest_sha256_0").to_uppercase(),
        "{ours}"
    );
}

#[test]
fn tls_verify_plugin_refusals_as_by_stock_openvpn() {
    let lab = Lab::new("fvplh4", 1, FERROVPN);
    let plugin = build_plugin(&lab.dir.join("."));
    let (stock, stock_client) = verify_sequence(&lab, &plugin, true, 1, Some("client2"));
    let (ours, our_client) = verify_sequence(&lab, &plugin, false, 1, Some("client2"));
    assert_eq!(
        ours, stock,
        "TLS_VERIFY calls differ\n--- ferrovpn ---\n{ours}\n--- stock ---\n{stock}"
    );
    assert!(!ours.contains("TLS_FINAL"), "{ours}");
    // Refused inside the handshake: no key method, no RESTART, no
    // AUTH_FAILED; the client gives up on the handshake after hand-window.
    for log in [&stock_client, &our_client] {
        assert!(
            log.contains("TLS key negotiation failed to occur within 8 seconds"),
            "{log}"
        );
        assert!(log.contains("SIGUSR1[soft,tls-error]"), "{log}");
        assert!(!log.contains("server-pushed-connection-reset"), "{log}");
        assert!(!log.contains("AUTH_FAILED"), "{log}");
    }
}

/// The hooks 2.6 calls on a client; the client-side tests log every
/// environment variable of each call.
const CLIENT_HOOKS: &str = "UP DOWN ROUTE_UP ROUTE_PREDOWN IPCHANGE TLS_FINAL";

/// A plugin log with the values that differ per process cut (the pid,
/// start time, config file's name).
fn normalized(log: &str) -> String {
    log.lines()
        .map(|l| {
            for name in ["daemon_pid", "daemon_start_time", "config"] {
                let prefix = format!("    {name}=");
                if l.starts_with(&prefix) {
                    return format!("{prefix}*\n");
                }
            }
            format!("{l}\n")
        })
        .collect()
}

/// A stock server pushing a route and a DNS server.
fn client_test_server(lab: &Lab) -> Proc {
    let mut sc = ServerConf::new(&lab.pki, "fvtun-s", Wrap::None, Cipher::Aes256Gcm);
    sc.extra = vec![
        "push \"route 10.77.0.0 255.255.255.0\"".into(),
        "push \"dhcp-option DNS 10.8.0.1\"".into(),
    ];
    lab.stock_server(&sc)
}

/// A client of `imp` (named `name`) with the plugin (`plugin_args` after
/// its log file) and scripts at the same points logging their arguments
/// and a few variables;
/// `cc_edit` changes its config, `run` drives it (with the plugin's log)
/// and leaves it stopped. The plugin's log and the script's.
fn client_hook_log(
    lab: &Lab,
    plugin: &Path,
    imp: ferrovpn_testkit::Implementation,
    name: &str,
    plugin_args: &str,
    cc_edit: impl FnOnce(&mut ferrovpn_testkit::ClientConf),
    run: impl FnOnce(&mut Proc, &Path),
) -> (String, String) {
    let log = lab.dir.join(format!("{name}-plugin.log"));
    let script_log = lab.dir.join(format!("{name}-scripts.log"));
    let script = sh_script(
        lab.dir.join(format!("{name}-script.sh")),
        &format!(
            "echo \"$script_type $# [$1] [$2] ifconfig_local=$ifconfig_local signal=$signal\" >> {}\n",
            script_log.display()
        ),
    );
    let mut cc = lab.client_conf(
        0,
        &lab.pki.clients[0],
        "fvtun-c",
        Wrap::None,
        Cipher::Aes256Gcm,
    );
    cc.extra = vec![
        format!(
            "plugin {} {} QUOTE_ARGS ENV=* {plugin_args} {CLIENT_HOOKS}",
            plugin.display(),
            log.display()
        ),
        "script-security 2".into(),
        format!("ipchange {}", script.display()),
        format!("up {}", script.display()),
        format!("route-up {}", script.display()),
        format!("route-pre-down {}", script.display()),
        format!("down {}", script.display()),
    ];
    cc_edit(&mut cc);
    let mut client = lab.client(imp, 0, name, &cc);
    run(&mut client, &log);
    (normalized(&read(&log)), read(&script_log))
}

/// Both clients' logs must be the same, line for line.
fn assert_same(what: &str, ours: &(String, String), stock: &(String, String)) {
    assert_eq!(
        ours.0, stock.0,
        "{what}: plugin calls differ\n--- ferrovpn ---\n{}\n--- stock ---\n{}",
        ours.0, stock.0
    );
    assert_eq!(
        ours.1, stock.1,
        "{what}: script runs differ\n--- ferrovpn ---\n{}\n--- stock ---\n{}",
        ours.1, stock.1
    );
}

#[test]
fn client_plugin_hooks_are_called_as_by_stock_openvpn() {
    use ferrovpn_testkit::Implementation::{Ferrovpn, Stock};
    let lab = Lab::new("fvplh5", 1, FERROVPN);
    let plugin = build_plugin(&lab.dir.join("."));
    let server = client_test_server(&lab);
    let run = |imp, name: &str| {
        client_hook_log(
            &lab,
            &plugin,
            imp,
            name,
            "",
            |_| {},
            |c, log| {
                wait_log(c, UP, &server);
                wait_logged(log, "ROUTE_UP", &server);
                ping(&lab.clients[0], "10.8.0.1", 2, Duration::from_secs(10)).unwrap();
                c.stop(Duration::from_secs(10));
                wait_logged(log, "CLIENT_DESTRUCTOR", &server);
            },
        )
    };
    let stock = run(Stock, "stock-client");
    let ours = run(Ferrovpn, "ferrovpn-client");
    assert!(stock.0.contains("ROUTE_PREDOWN"), "{}", stock.0);
    assert_same("connect, SIGTERM", &ours, &stock);
}

/// A failing `UP` plugin ends the client at once (2.6's `M_FATAL`: the
/// plugins' abort functions, no `ROUTE_PREDOWN`/`DOWN`, no destructor, a
/// failure status); a `TLS_FINAL` failing on the first renegotiation ends
/// it as SIGTERM would (`auth-control-exit`, here turned into the exit
/// notification): the tunnel's down hooks run and the plugin is closed.
#[test]
fn client_plugin_failures_as_by_stock_openvpn() {
    use ferrovpn_testkit::Implementation::{Ferrovpn, Stock};
    let lab = Lab::new("fvplh6", 1, FERROVPN);
    let plugin = build_plugin(&lab.dir.join("."));
    let server = client_test_server(&lab);
    let failing_up = |imp, name: &str| {
        client_hook_log(
            &lab,
            &plugin,
            imp,
            name,
            "FAIL=UP",
            |_| {},
            |c, log| {
                wait_logged(log, "UP", &server);
                let status = wait_exit(c, Duration::from_secs(10));
                assert!(!status.success(), "{status:?}\n{}", c.log_tail(20));
            },
        )
    };
    let stock = failing_up(Stock, "stock-failing-up");
    let ours = failing_up(Ferrovpn, "ferrovpn-failing-up");
    assert!(!stock.0.contains("CLIENT_DESTRUCTOR"), "{}", stock.0);
    assert_same("failing UP", &ours, &stock);

    let vetoed_renegotiation = |imp, name: &str| {
        client_hook_log(
            &lab,
            &plugin,
            imp,
            name,
            "FAIL_TLS_FINAL=2",
            |cc| cc.reneg_sec = Some(5),
            |c, log| {
                wait_log(c, UP, &server);
                wait_logged(log, "CLIENT_DESTRUCTOR", &server);
                let status = wait_exit(c, Duration::from_secs(10));
                assert!(status.success(), "{status:?}\n{}", c.log_tail(20));
            },
        )
    };
    let stock = vetoed_renegotiation(Stock, "stock-vetoed");
    let ours = vetoed_renegotiation(Ferrovpn, "ferrovpn-vetoed");
    assert!(stock.0.contains("ROUTE_PREDOWN"), "{}", stock.0);
    assert_same("TLS_FINAL failing on a renegotiation", &ours, &stock);
}

/// `PLUGIN_TLS_VERIFY` on a client, against a stock server: the plugin is
/// called for each certificate of the server's chain (the CA, then the
/// server, each as an OpenSSL object) with 2.6's environment, before
/// `TLS_FINAL` and `IPCHANGE`. Refusing the server's certificate, the
/// client never brings the tunnel up and, as 2.6 after its failed TLS
/// handshake, tries again later (no AUTH_FAILED, no exit); the plugin
/// sees the same calls.
#[test]
fn client_tls_verify_plugin_as_by_stock_openvpn() {
    use ferrovpn_testkit::Implementation::{Ferrovpn, Stock};
    let lab = Lab::new("fvplh7", 1, FERROVPN);
    let plugin = build_plugin(&lab.dir.join("."));
    let server = client_test_server(&lab);
    let accepted = |imp, name: &str| {
        client_hook_log(
            &lab,
            &plugin,
            imp,
            name,
            "TLS_VERIFY",
            |_| {},
            |c, log| {
                wait_log(c, UP, &server);
                wait_logged(log, "ROUTE_UP", &server);
                c.stop(Duration::from_secs(10));
                wait_logged(log, "CLIENT_DESTRUCTOR", &server);
            },
        )
    };
    let stock = accepted(Stock, "stock-verifying");
    let ours = accepted(Ferrovpn, "ferrovpn-verifying");
    for depth in ["cert depth=1 object=X509", "cert depth=0 object=X509"] {
        assert!(stock.0.contains(depth), "{}", stock.0);
    }
    assert_same("TLS_VERIFY accepting the server", &ours, &stock);

    // The next attempt waits connect-retry: one refusal each.
    let refused = |imp, name: &str, restarting: &'static str| {
        client_hook_log(
            &lab,
            &plugin,
            imp,
            name,
            "TLS_VERIFY FAIL_TLS_VERIFY_CN=server",
            |cc| cc.extra.push("connect-retry 30".into()),
            |c, log| {
                wait_logged(log, "cert depth=0", &server);
                wait_log(c, restarting, &server);
                let log_text = c.log();
                assert!(!log_text.contains(UP), "{}", c.log_tail(30));
                assert!(!log_text.contains("AUTH_FAILED"), "{}", c.log_tail(30));
                assert!(c.try_exit().is_none(), "{}", c.log_tail(30));
                c.stop(Duration::from_secs(10));
                wait_logged(log, "CLIENT_DESTRUCTOR", &server);
            },
        )
    };
    let stock = refused(Stock, "stock-refusing", "SIGUSR1[soft,tls-error]");
    let ours = refused(Ferrovpn, "ferrovpn-refusing", "retrying in");
    assert!(!stock.0.contains("TLS_FINAL"), "{}", stock.0);
    assert_same("TLS_VERIFY refusing the server", &ours, &stock);
}
