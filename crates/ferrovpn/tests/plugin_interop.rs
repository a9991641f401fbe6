//! `plugin` with Debian's stock OpenVPN 2.6 as the client: Debian's own
//! `openvpn-plugin-auth-pam.so` (from the openvpn package) checks logins
//! against PAM's `login` service, with a local Unix user the test creates
//! (useradd + chpasswd) and removes afterwards; synchronously, and deferred
//! (`setenv deferred_auth_pam 1`: the plugin answers through
//! `auth_control_file`). Also `verify-client-cert none|optional`: a stock
//! client with no certificate at all logs in by username/password only.
//!
//! Needs root, the lab's tools, useradd/chpasswd/userdel and the plugin;
//! every test fails loudly without them. Every wait has a deadline.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ferrovpn_testkit::lab::{UP, wait_log};
use ferrovpn_testkit::{Cipher, Implementation, Lab, Proc, ServerConf, Wrap, ping};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const AUTH_PAM: &str = "/usr/lib/x86_64-linux-gnu/openvpn/plugins/openvpn-plugin-auth-pam.so";

/// A local Unix user with a password, removed when dropped.
struct UnixUser {
    name: String,
}

impl UnixUser {
    fn create(name: &str, password: &str) -> Self {
        // A user left over by an interrupted run goes first.
        let _ = Command::new("userdel")
            .arg(name)
            .stderr(Stdio::null())
            .status();
        let st = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/usr/sbin/nologin", name])
            .status()
            .expect("useradd (package passwd) must be installed");
        assert!(st.success(), "useradd {name} failed");
        let user = UnixUser {
            name: name.to_owned(),
        };
        let mut child = Command::new("chpasswd")
            .stdin(Stdio::piped())
            .spawn()
            .expect("chpasswd (package passwd) must be installed");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{name}:{password}\n").as_bytes())
            .unwrap();
        assert!(child.wait().unwrap().success(), "chpasswd failed");
        user
    }
}

impl Drop for UnixUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

fn server_conf(lab: &Lab, extra: &[&str]) -> ServerConf {
    let mut sc = ServerConf::new(&lab.pki, "fvtun-s", Wrap::None, Cipher::Aes256Gcm);
    sc.extra = extra.iter().map(|s| s.to_string()).collect();
    sc
}

/// Stock client `name` logging in as `user` with `pass`.
fn stock_client(lab: &Lab, name: &str, user: &str, pass: &str) -> Proc {
    let mut cc = lab.client_conf(
        0,
        &lab.pki.clients[0],
        "fvtun-c",
        Wrap::None,
        Cipher::Aes256Gcm,
    );
    cc.extra.push(lab.auth_user_pass(name, user, pass));
    lab.stock_client(0, name, &cc)
}

/// Stock client `name` without `cert`/`key` (only `ca`), logging in as
/// `user` with `pass`.
fn stock_client_without_cert(lab: &Lab, name: &str, user: &str, pass: &str) -> Proc {
    let login = lab.auth_user_pass(name, user, pass);
    let text = lab.certless_client_text(Wrap::None, Cipher::Aes256Gcm, [login]);
    assert!(!text.contains("\ncert "), "{text}");
    lab.spawn(&lab.clients[0], name, Implementation::Stock, &text)
}

fn check_plugin_installed() {
    assert!(
        Path::new(AUTH_PAM).is_file(),
        "{AUTH_PAM} missing: install Debian's openvpn package"
    );
}

/// Good password in, wrong password refused (`extra` adds server lines).
fn login_good_and_bad(tag: &str, user: &str, extra: &[&str]) -> (Lab, Proc) {
    check_plugin_installed();
    let lab = Lab::new(tag, 1, FERROVPN);
    let mut lines = vec![
        "plugin openvpn-plugin-auth-pam.so login",
        "username-as-common-name",
    ];
    lines.extend_from_slice(extra);
    let mut server = lab.ferrovpn_server(&server_conf(&lab, &lines));
    // Opened at start, before the server listens.
    assert!(
        server
            .log()
            .contains("intercepted=PLUGIN_AUTH_USER_PASS_VERIFY"),
        "{}",
        server.log_tail(40)
    );

    let mut good = stock_client(&lab, "good", user, "s3cret-pam");
    wait_log(&mut good, UP, &server);
    wait_log(&mut server, &format!("client {user} connected"), &good);
    ping(&lab.clients[0], "10.8.0.1", 2, Duration::from_secs(10)).unwrap();
    good.stop(Duration::from_secs(5));

    let mut bad = stock_client(&lab, "bad", user, "wrong-guess");
    wait_log(&mut bad, "AUTH_FAILED", &server);
    bad.stop(Duration::from_secs(5));
    (lab, server)
}

#[test]
fn auth_pam_plugin_accepts_a_local_user_and_refuses_a_wrong_password() {
    let user = UnixUser::create("fvpam1", "s3cret-pam");
    let (_lab, _server) = login_good_and_bad("fvplg1", &user.name, &[]);
}

#[test]
fn auth_pam_plugin_deferred() {
    let user = UnixUser::create("fvpam2", "s3cret-pam");
    let (_lab, server) = login_good_and_bad("fvplg2", &user.name, &["setenv deferred_auth_pam 1"]);
    let log = server.log();
    assert!(
        log.contains(&format!(
            "authentication deferred for username '{}'",
            user.name
        )),
        "{}",
        server.log_tail(40)
    );
}

#[test]
fn verify_client_cert_none_logs_in_without_a_certificate() {
    check_plugin_installed();
    let user = UnixUser::create("fvpam3", "s3cret-pam");
    let lab = Lab::new("fvplg3", 1, FERROVPN);
    let lines = [
        "plugin openvpn-plugin-auth-pam.so login",
        "verify-client-cert none",
        "username-as-common-name",
    ];
    let mut server = lab.ferrovpn_server(&server_conf(&lab, &lines));
    let mut good = stock_client_without_cert(&lab, "nocert", &user.name, "s3cret-pam");
    wait_log(&mut good, UP, &server);
    // The common name is the user name (username-as-common-name).
    wait_log(&mut server, "client fvpam3 connected", &good);
    ping(&lab.clients[0], "10.8.0.1", 2, Duration::from_secs(10)).unwrap();
    good.stop(Duration::from_secs(5));
    let mut bad = stock_client_without_cert(&lab, "nocert-bad", &user.name, "nope");
    wait_log(&mut bad, "AUTH_FAILED", &server);
}

#[test]
fn verify_client_cert_optional_takes_both() {
    check_plugin_installed();
    let user = UnixUser::create("fvpam4", "s3cret-pam");
    let lab = Lab::new("fvplg4", 1, FERROVPN);
    let lines = [
        "plugin openvpn-plugin-auth-pam.so login",
        "verify-client-cert optional",
    ];
    let mut server = lab.ferrovpn_server(&server_conf(&lab, &lines));
    // With a certificate: its common name.
    let mut with_cert = stock_client(&lab, "withcert", &user.name, "s3cret-pam");
    wait_log(&mut with_cert, UP, &server);
    wait_log(&mut server, "client client1 connected", &with_cert);
    with_cert.stop(Duration::from_secs(5));
    // Without: no common name (2.6 shows UNDEF).
    let mut without = stock_client_without_cert(&lab, "nocert", &user.name, "s3cret-pam");
    wait_log(&mut without, UP, &server);
    ping(&lab.clients[0], "10.8.0.1", 2, Duration::from_secs(10)).unwrap();
}
