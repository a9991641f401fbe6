//! From nothing to a running server, as an operator does it: `ferrovpn
//! init` and `ferrovpn client add alice` in an empty directory, the server
//! started from the generated config, Debian's stock OpenVPN 2.6 connecting
//! with `alice.ovpn` unchanged and passing traffic; `client list`,
//! `status --json` and the Prometheus endpoint (read with the
//! `prometheus_client` parser from PyPI) show her; `client revoke alice`
//! cuts her session within 5 s and her reconnect is refused. `init` makes
//! a tls-crypt-v2 server key and each profile carries its own client key.
//! A server started with `daemon` detaches, writes its pid file, runs the
//! tunnel (TCP, whose workers' numbers the metrics show) and stops on a
//! SIGTERM sent to that pid; under systemd (`NOTIFY_SOCKET`) it stays in
//! the foreground. `ferrovpn install` fills a scratch root. And the systemd
//! unit passes `systemd-analyze verify`.
//!
//! Needs root, `openvpn`, `ip`, `ping`, `python3` with `prometheus_client`,
//! `systemd-analyze` and `/dev/net/tun`; every test fails loudly without
//! them. Every wait has a deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ferrovpn_testkit::lab::{CONNECT_TIMEOUT, Implementation, Lab, UP, wait_exit};
use ferrovpn_testkit::{
    Cipher, Netns, Proc, TestDir, openvpn_server_conf, ping, require_root_and_tools,
    wait_for_file_text, wait_until,
};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

/// Run `ferrovpn ARGS` here; its stdout, or a panic with both outputs.
fn ferrovpn(args: &[&str]) -> String {
    let out = Command::new(FERROVPN)
        .args(args)
        .output()
        .expect("running ferrovpn");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ferrovpn {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(args: &[&str]) -> serde_json::Value {
    let text = ferrovpn(args);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("ferrovpn {args:?}: {e}: {text}"))
}

/// The `status --json` clients named `name`.
fn status_clients(dir: &str, name: &str) -> Vec<serde_json::Value> {
    let v = json(&["status", "--dir", dir, "--json", "--interval", "0"]);
    v["clients"]
        .as_array()
        .expect("clients array")
        .iter()
        .filter(|c| c["common_name"] == name)
        .cloned()
        .collect()
}

/// Scrape the metrics endpoint from inside `ns` with `prometheus_client`'s
/// parser; returns `{metric name: [[labels, value], ...]}`.
fn scrape(ns: &Netns) -> serde_json::Value {
    let script = r#"
import json, urllib.request
from prometheus_client.parser import text_string_to_metric_families
body = urllib.request.urlopen("http://127.0.0.1:9176/metrics", timeout=5).read().decode()
out = {}
for family in text_string_to_metric_families(body):
    for s in family.samples:
        out.setdefault(s.name, []).append([s.labels, s.value])
print(json.dumps(out))
"#;
    let out = ns
        .command("python3", &["-c", script])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "scrape failed (is prometheus_client installed? pip install prometheus_client): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("scrape JSON")
}

/// A lab for `ferrovpn init` and a server run from what it writes: the
/// metrics scrape needs python3, and the directory is open to everyone
/// because the server reads its CRL and writes its state after dropping
/// to nobody, as it does under /etc/ferrovpn.
fn pki_lab(tag: &str) -> Lab {
    require_root_and_tools(&["python3"]);
    let lab = Lab::new(tag, 1, FERROVPN);
    lab.dir.open_to_everyone().unwrap();
    lab
}

#[test]
fn init_client_add_connect_list_metrics_revoke() {
    let lab = pki_lab("ops");
    let (server_ns, client_ns, test_dir) = (&lab.server_ns, &lab.clients[0], &lab.dir);
    let client_addr = format!("{}:", Lab::client_underlay(0));

    let vpn: PathBuf = test_dir.join("vpn");
    let dir = vpn.to_str().unwrap();
    ferrovpn(&["init", dir, "--endpoint", &Lab::server_underlay(0)]);
    let again = Command::new(FERROVPN).args(["init", dir]).output().unwrap();
    assert!(!again.status.success(), "a second init must refuse");
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
    let profile = PathBuf::from(ferrovpn(&["client", "add", "alice", "--dir", dir]).trim());
    assert_eq!(profile, vpn.join("clients/alice.ovpn"));
    // Kept for the reconnect after revocation (revoke removes the profile).
    let alice_ovpn = std::fs::read_to_string(&profile).unwrap();
    // tls-crypt-v2: the server has its key, alice her own client key.
    let server_conf = std::fs::read_to_string(vpn.join("server.conf")).unwrap();
    assert!(server_conf.contains("\ntls-crypt-v2 "), "{server_conf}");
    assert!(
        alice_ovpn.contains("<tls-crypt-v2>\n-----BEGIN OpenVPN tls-crypt-v2 client key-----\n"),
        "{alice_ovpn}"
    );
    let bad = Command::new(FERROVPN)
        .args(["client", "add", "../evil", "--dir", dir])
        .output()
        .unwrap();
    assert!(!bad.status.success(), "names are validated");

    let pid_file = test_dir.join("server.pid");
    let mut server = Proc::spawn_in(
        server_ns,
        "ferrovpn-server",
        test_dir.path(),
        FERROVPN,
        &[
            "--config".as_ref(),
            vpn.join("server.conf").as_os_str(),
            "--writepid".as_ref(),
            pid_file.as_os_str(),
        ],
    )
    .unwrap();
    server
        .wait_for_log_line("server listening", CONNECT_TIMEOUT)
        .unwrap();
    let pid = std::fs::read_to_string(&pid_file).expect("writepid");
    assert_eq!(pid.trim(), server.pid().to_string());
    let mut alice = lab.spawn(
        client_ns,
        "openvpn-alice",
        Implementation::Stock,
        &alice_ovpn,
    );
    if let Err(e) = alice.wait_for_log_line(UP, CONNECT_TIMEOUT) {
        panic!("{e:#}\nserver:\n{}", server.log_tail(30));
    }
    let p = ping(client_ns, "10.8.0.1", 5, Duration::from_secs(10)).unwrap();
    assert_eq!(p.received, 5, "ping through the tunnel: {p:?}");

    // status --json: alice, from her veth address, with traffic.
    let listed = status_clients(dir, "alice");
    assert_eq!(listed.len(), 1, "{listed:?}");
    let c = &listed[0];
    assert!(
        c["real_address"]
            .as_str()
            .unwrap()
            .starts_with(&client_addr),
        "{c}"
    );
    assert_eq!(c["virtual_address"], "10.8.0.2", "{c}");
    assert!(c["bytes_received"].as_u64().unwrap() > 0, "{c}");
    let with_rates = json(&["status", "--dir", dir, "--json", "--interval", "0.2"]);
    assert!(
        with_rates["clients"][0]["receive_rate"].is_number(),
        "{with_rates}"
    );

    // client list: alice, valid, connected from her address.
    let list = json(&["client", "list", "--dir", dir, "--json"]);
    let entry = &list.as_array().unwrap()[0];
    assert_eq!(entry["name"], "alice", "{list}");
    assert_eq!(entry["revoked"], false, "{list}");
    let conns = entry["connected"].as_array().unwrap();
    assert_eq!(conns.len(), 1, "{list}");
    assert!(
        conns[0]["real_address"]
            .as_str()
            .unwrap()
            .starts_with(&client_addr)
    );

    // Metrics, as Prometheus reads them.
    let m = scrape(server_ns);
    let alice_bytes: Vec<&serde_json::Value> = m["ferrovpn_client_received_bytes_total"]
        .as_array()
        .expect("per-client bytes")
        .iter()
        .filter(|s| s[0]["common_name"] == "alice")
        .collect();
    assert_eq!(alice_bytes.len(), 1, "{m}");
    assert!(alice_bytes[0][1].as_f64().unwrap() > 0.0, "{m}");
    assert!(
        alice_bytes[0][0]["real_address"]
            .as_str()
            .unwrap()
            .starts_with(&client_addr),
        "{m}"
    );
    assert_eq!(m["ferrovpn_clients"][0][1], 1.0, "{m}");
    assert_eq!(m["ferrovpn_client_handshakes_total"][0][1], 1.0, "{m}");
    let worker_packets: f64 = (m["ferrovpn_worker_packets_total"]
        .as_array()
        .unwrap()
        .iter())
    .map(|s| s[1].as_f64().unwrap())
    .sum();
    assert!(worker_packets >= 5.0, "{m}");
    let reasons: Vec<&str> = (m["ferrovpn_dropped_packets_total"]
        .as_array()
        .unwrap()
        .iter())
    .map(|s| s[0]["reason"].as_str().unwrap())
    .collect();
    assert_eq!(reasons.len(), 4, "{m}");
    assert!(m["ferrovpn_control_queue_depth"].is_array(), "{m}");

    // Revocation: the session ends within 5 s.
    let revoked_at = Instant::now();
    let out = ferrovpn(&["client", "revoke", "alice", "--dir", dir]);
    assert!(out.contains("revoked alice"), "{out}");
    let gone = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        status_clients(dir, "alice").is_empty()
    });
    assert!(
        gone,
        "alice still connected 5 s after revoke:\n{}",
        server.log_tail(20)
    );
    eprintln!("revoked session gone after {:?}", revoked_at.elapsed());
    assert!(!profile.exists(), "the revoked profile is removed");
    let list = json(&["client", "list", "--dir", dir, "--json"]);
    assert_eq!(list[0]["revoked"], true, "{list}");
    assert!(
        list[0]["connected"].as_array().unwrap().is_empty(),
        "{list}"
    );

    // Her reconnect (a fresh stock client with the same profile) is refused.
    alice.stop(Duration::from_secs(5));
    let mut retry = lab.spawn(
        client_ns,
        "openvpn-alice-again",
        Implementation::Stock,
        &alice_ovpn,
    );
    server
        .wait_for_log_line("invalid peer certificate: Revoked", CONNECT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e:#}\nclient:\n{}", retry.log_tail(20)));
    assert!(!retry.log().contains(UP), "{}", retry.log_tail(20));
    assert!(status_clients(dir, "alice").is_empty());
    retry.stop(Duration::from_secs(5));
    server.stop(Duration::from_secs(5));
}

#[test]
fn systemd_unit_verifies() {
    require_root_and_tools(&["systemd-analyze"]);
    let unit =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../contrib/systemd/ferrovpn@.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=notify",
        "ProtectSystem=strict",
        "Restart=on-failure",
        "ExecStart=/usr/local/bin/ferrovpn --config /etc/ferrovpn/%i.conf",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing");
    }
    // verify checks that ExecStart's program exists: point it at the build.
    let dir = TestDir::new("unit").unwrap();
    std::fs::write(
        dir.join("ferrovpn@.service"),
        text.replace("/usr/local/bin/ferrovpn", FERROVPN),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.join("ferrovpn@server.service"))
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "systemd-analyze verify: {said}");
    assert!(
        said.trim().is_empty(),
        "systemd-analyze verify warns: {said}"
    );
}

/// `(state, session id)` of process `pid` from /proc; `None` once it is gone.
fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (in parentheses) may hold spaces: fields follow the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some((
        fields.first()?.chars().next()?,
        fields.get(3)?.parse().ok()?,
    ))
}

/// Exited: gone, or a zombie nobody reaped yet (it holds nothing any more).
fn exited(pid: u32) -> bool {
    proc_state(pid).is_none_or(|(state, _)| state == 'Z')
}

/// A detached server, killed if the test ends before it stopped it.
struct Detached(u32);

impl Drop for Detached {
    fn drop(&mut self) {
        if !exited(self.0) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
            wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
                exited(self.0)
            });
        }
    }
}

fn link(path: String) -> String {
    std::fs::read_link(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .display()
        .to_string()
}

/// Sum of the samples of `name` whose labels match `label=value`.
fn metric_sum(m: &serde_json::Value, name: &str, label: Option<(&str, &str)>) -> f64 {
    (m[name]
        .as_array()
        .unwrap_or_else(|| panic!("{name} missing: {m}"))
        .iter())
    .filter(|s| label.is_none_or(|(k, v)| s[0][k] == v))
    .map(|s| s[1].as_f64().unwrap())
    .sum()
}

#[test]
fn daemon_detaches_writes_its_pid_and_stops_on_sigterm() {
    let lab = pki_lab("opsd");
    let (server_ns, client_ns, test_dir) = (&lab.server_ns, &lab.clients[0], &lab.dir);
    let vpn = test_dir.join("vpn");
    let dir = vpn.to_str().unwrap();
    ferrovpn(&[
        "init",
        dir,
        "--proto",
        "tcp",
        "--endpoint",
        &Lab::server_underlay(0),
    ]);
    let bob_ovpn =
        std::fs::read_to_string(ferrovpn(&["client", "add", "bob", "--dir", dir]).trim()).unwrap();

    // The pid file in state/, which the server (nobody after start) may remove at exit.
    let pid_file = vpn.join("state/ferrovpn.pid");
    let log = test_dir.join("daemon.log");
    let conf = vpn.join("server.conf");
    let mut starter = Proc::spawn_in(
        server_ns,
        "ferrovpn-daemon-start",
        test_dir.path(),
        FERROVPN,
        &[
            "--config".as_ref(),
            conf.as_os_str(),
            "--daemon".as_ref(),
            "fvpn-test".as_ref(),
            "--writepid".as_ref(),
            pid_file.as_os_str(),
            "--log".as_ref(),
            log.as_os_str(),
        ],
    )
    .unwrap();
    // The command returns at once (the parent of daemon(3) exits 0).
    let status = wait_exit(&mut starter, Duration::from_secs(10));
    assert!(
        status.success(),
        "{status}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let mut pid = None;
    wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok());
        pid.is_some()
    });
    let pid = pid.unwrap_or_else(|| {
        panic!(
            "no pid file; log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    let _guard = Detached(pid);
    assert_ne!(
        pid,
        starter.pid(),
        "the pid file names the detached process"
    );
    let (_, session) = proc_state(pid).expect("the daemon runs");
    assert_eq!(session, pid, "the daemon leads a session of its own");
    assert_eq!(link(format!("/proc/{pid}/cwd")), "/");
    assert_eq!(link(format!("/proc/{pid}/fd/0")), "/dev/null");
    // With `log`, stdout and stderr are the log file (as 2.6).
    assert_eq!(link(format!("/proc/{pid}/fd/2")), log.display().to_string());

    let listening = wait_for_file_text(&log, "server listening", CONNECT_TIMEOUT);
    let daemon_log = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(listening, "{}", daemon_log());
    let mut bob = lab.spawn(client_ns, "openvpn-bob", Implementation::Stock, &bob_ovpn);
    if let Err(e) = bob.wait_for_log_line(UP, CONNECT_TIMEOUT) {
        panic!("{e:#}\nserver:\n{}", daemon_log());
    }
    let p = ping(client_ns, "10.8.0.1", 5, Duration::from_secs(10)).unwrap();
    assert_eq!(p.received, 5, "ping through the tunnel: {p:?}");

    // The TCP workers count what they read and the time they were busy.
    let m = scrape(server_ns);
    let tcp_packets = metric_sum(&m, "ferrovpn_worker_packets_total", Some(("source", "tcp")));
    assert!(tcp_packets >= 5.0, "{m}");
    let tun_packets = metric_sum(&m, "ferrovpn_worker_packets_total", Some(("source", "tun")));
    assert!(tun_packets >= 5.0, "{m}");
    assert_eq!(
        metric_sum(&m, "ferrovpn_worker_packets_total", Some(("source", "udp"))),
        0.0
    );
    assert!(
        metric_sum(&m, "ferrovpn_worker_busy_seconds_total", None) > 0.0,
        "{m}"
    );

    // Stopped through its pid file: gone, nothing left.
    bob.stop(Duration::from_secs(5));
    let killed = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let gone = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        exited(pid)
    });
    assert!(
        gone,
        "the daemon still runs 10 s after SIGTERM:\n{}",
        daemon_log()
    );
    assert!(
        daemon_log().contains("ferrovpn stopped"),
        "{}",
        daemon_log()
    );
    assert!(!pid_file.exists(), "the pid file is removed at exit");
}

#[test]
fn daemon_under_systemd_stays_in_the_foreground() {
    require_root_and_tools(&[]);
    let lab = Lab::new("opsn", 1, FERROVPN);
    let sc = lab.server_conf(lab.tls_crypt(), Cipher::Aes256Gcm);
    let conf = lab.dir.join("notified-server.conf");
    let log = lab.dir.join("notified-server-own.log");
    std::fs::write(
        &conf,
        format!(
            "{}daemon\nlog {}\n",
            openvpn_server_conf(&sc),
            log.display()
        ),
    )
    .unwrap();
    let notify = lab.dir.join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut cmd = lab
        .server_ns
        .command(FERROVPN, &["--config".as_ref(), conf.as_os_str()]);
    cmd.env("NOTIFY_SOCKET", &notify);
    let mut server = Proc::spawn("notified-server", lab.dir.path(), cmd).unwrap();
    // As 2.6: READY=0 first (which tells it systemd watches), READY=1 once up.
    let mut said = String::new();
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    while !said.contains("READY=1") && Instant::now() < deadline {
        let mut buf = [0u8; 256];
        if let Ok(n) = socket.recv(&mut buf) {
            said += &String::from_utf8_lossy(&buf[..n]);
        }
    }
    let daemon_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(said.starts_with("READY=0\n"), "{said:?}\n{daemon_log}");
    assert!(said.contains("READY=1"), "{said:?}\n{daemon_log}");
    assert!(
        server.try_exit().is_none(),
        "it stays the process systemd started"
    );
    assert!(daemon_log.contains("not detaching"), "{daemon_log}");
    server.stop(Duration::from_secs(5));
}

#[test]
fn install_fills_a_scratch_root() {
    require_root_and_tools(&[]);
    let root = TestDir::new("install").unwrap();
    let out = ferrovpn(&[
        "install",
        "--prefix",
        "/opt/fvpn",
        "--root",
        root.path().to_str().unwrap(),
    ]);
    assert!(
        out.contains("systemctl enable --now ferrovpn@server"),
        "{out}"
    );
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    let binary = root.join("opt/fvpn/bin/ferrovpn");
    assert_eq!(mode(&binary), 0o755);
    assert_eq!(
        std::fs::read(&binary).unwrap(),
        std::fs::read(FERROVPN).unwrap()
    );
    let version = Command::new(&binary).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("ferrovpn "));
    let unit = root.join("etc/systemd/system/ferrovpn@.service");
    assert_eq!(mode(&unit), 0o644);
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "ExecStart=/opt/fvpn/bin/ferrovpn --config /etc/ferrovpn/%i.conf"),
        "{text}"
    );
    let conf_dir = root.join("etc/ferrovpn");
    assert_eq!(mode(&conf_dir), 0o750);
    let meta = std::fs::metadata(&conf_dir).unwrap();
    let nogroup = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
    assert_eq!((meta.uid(), meta.gid()), (0, nogroup.gid.as_raw()));
    // Again: the binary and unit are replaced, the directory is kept as it is.
    std::fs::set_permissions(&conf_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = ferrovpn(&[
        "install",
        "--prefix",
        "/opt/fvpn",
        "--root",
        root.path().to_str().unwrap(),
    ]);
    assert!(out.contains("left as it was"), "{out}");
    assert_eq!(mode(&conf_dir), 0o700);
    // `init` into it works as the README says.
    ferrovpn(&[
        "init",
        conf_dir.to_str().unwrap(),
        "--endpoint",
        "vpn.example.com",
    ]);
    assert!(conf_dir.join("server.conf").is_file());
}
