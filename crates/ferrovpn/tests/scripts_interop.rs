//! ferrovpn's server scripts with Debian's stock OpenVPN 2.6 as the client:
//! `up`/`down`, `learn-address`, `client-connect`/`client-disconnect`
//! (and its dynamic config's `push` and `iroute`), `auth-user-pass-verify`
//! (good, bad, deferred), `tls-verify`, `tls-crypt-v2-verify` and
//! `script-security`.
//! The scripts are small `sh` files the test writes; each appends what it
//! saw (its arguments and some variables) to a record file.
//!
//! Needs root, the lab's tools, `sh` and `/dev/net/tun`; every test
//! fails loudly without them. Every wait has a deadline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrovpn_testkit::lab::{wait_for_count, wait_log};
use ferrovpn_testkit::pki::write_tls_crypt_v2_client_key;
use ferrovpn_testkit::{
    Cipher, Implementation, Lab, Material, Proc, ServerConf, Wrap, openvpn_server_conf, ping,
    sh_script, wait_until,
};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const TIMEOUT: Duration = Duration::from_secs(30);
const UP: &str = "Initialization Sequence Completed";
const SERVER_DEV: &str = "fvtun-s";

/// The shared lab (one client namespace) and the scripts' record file.
struct Scripts {
    lab: Lab,
}

fn lab(tag: &str) -> Scripts {
    Scripts {
        lab: Lab::new(tag, 1, FERROVPN),
    }
}

impl Scripts {
    /// An executable `sh` script `name` with `body`.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        sh_script(self.lab.dir.join(name), &format!("{body}\n"))
    }

    /// A script that appends `TAG args | script_type common_name ...` to
    /// the record file and exits 0.
    fn recorder(&self, tag: &str) -> PathBuf {
        let record = self.record_path();
        self.script(
            &format!("{tag}.sh"),
            &format!(
                r#"echo "{tag} $* | $script_type cn=$common_name ip=$ifconfig_pool_remote_ip trusted=$trusted_ip dev=$dev user=$username bytes=$bytes_received" >> {}"#,
                record.display()
            ),
        )
    }

    fn record_path(&self) -> PathBuf {
        self.lab.dir.join("record.txt")
    }

    fn record(&self) -> String {
        std::fs::read_to_string(self.record_path()).unwrap_or_default()
    }

    fn wait_record(&self, what: &str, server: &Proc) {
        let ok = wait_until(TIMEOUT, Duration::from_millis(50), || {
            self.record().contains(what)
        });
        assert!(
            ok,
            "no '{what}' in the record:\n{}\n--- server ---\n{}",
            self.record(),
            server.log_tail(40)
        );
    }

    fn server_conf(&self, extra: &[String]) -> ServerConf {
        let mut sc = ServerConf::new(&self.lab.pki, SERVER_DEV, Wrap::None, Cipher::Aes256Gcm);
        sc.extra = extra.to_vec();
        sc
    }

    /// ferrovpn server, waited on until it listens.
    fn ferrovpn_server(&self, sc: &ServerConf) -> Proc {
        self.lab.ferrovpn_server(sc)
    }

    /// Stock client `name`; with `login`, it sends that user name and password.
    fn stock_client(&self, name: &str, login: Option<(&str, &str)>) -> Proc {
        let mut cc = self.lab.client_conf(
            0,
            &self.lab.pki.clients[0],
            "fvtun-c",
            Wrap::None,
            Cipher::Aes256Gcm,
        );
        if let Some((user, pass)) = login {
            cc.extra.push(self.lab.auth_user_pass(name, user, pass));
        }
        self.lab.stock_client(0, name, &cc)
    }
}

fn quoted(p: &Path) -> String {
    format!("\"{}\"", p.display())
}

#[test]
fn up_down_learn_address_client_connect_and_disconnect() {
    let lab = lab("fvscr1");
    let extra = vec![
        "script-security 2".into(),
        format!("up {}", quoted(&lab.recorder("up"))),
        format!("down {}", quoted(&lab.recorder("down"))),
        format!("learn-address {}", quoted(&lab.recorder("learn"))),
        format!("client-connect {}", quoted(&lab.recorder("connect"))),
        format!("client-disconnect {}", quoted(&lab.recorder("disconnect"))),
    ];
    let mut server = lab.ferrovpn_server(&lab.server_conf(&extra));
    // 2.6's arguments: dev tun_mtu 0 ifconfig_local netmask init.
    lab.wait_record(
        &format!("up {SERVER_DEV} 1500 0 10.8.0.1 255.255.255.0 init | up"),
        &server,
    );
    let mut client = lab.stock_client("client", None);
    wait_log(&mut client, UP, &server);
    let rec = lab.record();
    let connect = rec
        .lines()
        .find(|l| l.starts_with("connect "))
        .unwrap_or_else(|| panic!("no client-connect call:\n{rec}"));
    // The dynamic config file is the one argument.
    assert!(connect.contains("openvpn_cc_"), "{connect}");
    assert!(
        connect.contains("| client-connect cn=client1 ip=10.8.0.2 trusted=10.210.1.2"),
        "{connect}"
    );
    lab.wait_record(
        "learn add 10.8.0.2 client1 | learn-address cn=client1",
        &server,
    );
    ping(&lab.lab.clients[0], "10.8.0.1", 2, Duration::from_secs(10)).unwrap();
    // explicit-exit-notify: the client says goodbye when stopped.
    client.stop(Duration::from_secs(5));
    lab.wait_record("disconnect  | client-disconnect cn=client1", &server);
    lab.wait_record("learn delete 10.8.0.2 | learn-address cn= ", &server);
    let disconnect = lab
        .record()
        .lines()
        .find(|l| l.starts_with("disconnect"))
        .map(str::to_owned)
        .unwrap_or_default();
    let bytes = disconnect.split("bytes=").nth(1).unwrap_or("");
    assert!(
        bytes.starts_with(|c: char| c.is_ascii_digit()),
        "{disconnect}"
    );
    server.stop(Duration::from_secs(10));
    lab.wait_record(
        &format!("down {SERVER_DEV} 1500 0 10.8.0.1 255.255.255.0 init | down"),
        &server,
    );
}

#[test]
fn client_connect_pins_the_address_and_disable_refuses() {
    let lab = lab("fvscr4");
    // The config file (last argument) pins 10.8.0.77; a second call writes
    // `disable`.
    let connect = lab.script(
        "connect.sh",
        r#"n=$(dirname "$0")/calls; echo x >> "$n"
if [ "$(wc -l < "$n")" -eq 1 ]; then echo "ifconfig-push 10.8.0.77 255.255.255.0" > "$1"; else echo disable > "$1"; fi"#,
    );
    let extra = vec![
        "script-security 2".into(),
        format!("client-connect {}", quoted(&connect)),
    ];
    let mut server = lab.ferrovpn_server(&lab.server_conf(&extra));
    let mut client = lab.stock_client("pinned", None);
    wait_log(&mut client, UP, &server);
    wait_log(&mut server, "client client1 connected: 10.8.0.77", &client);
    ping(&lab.lab.clients[0], "10.8.0.1", 2, Duration::from_secs(10)).unwrap();
    client.stop(Duration::from_secs(5));
    let mut refused = lab.stock_client("refused", None);
    wait_log(&mut refused, "AUTH_FAILED", &server);
}

/// 2.6's deferred `client-connect`: the script writes `2` into
/// `client_connect_deferred_file` and exits 0; a background job answers
/// later. The first client is accepted with an address the job writes into
/// the dynamic config file meanwhile; the second is refused (AUTH_FAILED).
#[test]
fn deferred_client_connect_accepts_later_with_an_address_and_refuses() {
    let lab = lab("fvscr9");
    let connect = lab.script(
        "connect.sh",
        r#"d=$(dirname "$0"); echo x >> "$d/calls"
echo "connect $script_type deferred=$client_connect_deferred_file config=$client_connect_config_file" >> "$d/record.txt"
echo 2 > "$client_connect_deferred_file"
if [ "$(wc -l < "$d/calls")" -eq 1 ]; then
  (sleep 2; echo "ifconfig-push 10.8.0.77 255.255.255.0" > "$1"; echo answered >> "$d/record.txt"; echo 1 > "$client_connect_deferred_file") >/dev/null 2>&1 &
else
  (sleep 2; echo 0 > "$client_connect_deferred_file") >/dev/null 2>&1 &
fi
exit 0"#,
    );
    let extra = vec![
        "script-security 2".into(),
        format!("client-connect {}", quoted(&connect)),
    ];
    let mut server = lab.ferrovpn_server(&lab.server_conf(&extra));
    let mut client = lab.stock_client("deferred", None);
    wait_log(&mut server, "deferred --client-connect", &client);
    // Nothing reaches the client before the job answered.
    assert!(!client.log().contains(UP), "{}", client.log_tail(20));
    wait_log(&mut client, UP, &server);
    assert!(lab.record().contains("answered"), "{}", lab.record());
    assert!(
        client.log().contains("10.8.0.77/24"),
        "the client did not get the deferred ifconfig-push:\n{}",
        client.log_tail(30)
    );
    wait_log(&mut server, "client client1 connected: 10.8.0.77", &client);
    ping(&lab.lab.clients[0], "10.8.0.1", 2, Duration::from_secs(10)).unwrap();
    let rec = lab.record();
    assert!(
        rec.contains("connect client-connect deferred=") && rec.contains("openvpn_ccr_"),
        "{rec}"
    );
    client.stop(Duration::from_secs(5));

    let mut refused = lab.stock_client("refused", None);
    wait_log(
        &mut server,
        "deferred --client-connect script returned CC_RET_FAILED",
        &refused,
    );
    wait_log(&mut refused, "AUTH_FAILED", &server);
    assert!(!refused.log().contains(UP), "{}", refused.log_tail(20));
}

#[test]
fn auth_user_pass_verify_good_bad_and_deferred() {
    let lab = lab("fvscr2");
    // via-file: the last argument names a file with the user name and the
    // password. "defer" answers later through auth_control_file.
    let verify = lab.script(
        "verify.sh",
        r#"user=$(sed -n 1p "$1"); pass=$(sed -n 2p "$1")
echo "verify $user $script_type" >> "$(dirname "$0")/record.txt"
case "$user:$pass" in
  good:secret) exit 0 ;;
  defer:secret) (sleep 1; echo 1 > "$auth_control_file") >/dev/null 2>&1 & exit 2 ;;
  *) echo "wrong password" > "$auth_failed_reason_file"; exit 1 ;;
esac"#,
    );
    let extra = vec![
        "script-security 2".into(),
        format!("auth-user-pass-verify {} via-file", quoted(&verify)),
        "username-as-common-name".into(),
    ];
    let mut server = lab.ferrovpn_server(&lab.server_conf(&extra));

    let mut good = lab.stock_client("good", Some(("good", "secret")));
    wait_log(&mut good, UP, &server);
    // username-as-common-name: the server knows the client as "good".
    wait_log(&mut server, "client good connected", &good);
    good.stop(Duration::from_secs(5));

    let mut bad = lab.stock_client("bad", Some(("good", "guess")));
    wait_log(&mut bad, "AUTH_FAILED,wrong password", &server);
    bad.stop(Duration::from_secs(5));

    let mut deferred = lab.stock_client("deferred", Some(("defer", "secret")));
    wait_log(&mut deferred, UP, &server);
    assert!(
        server
            .log()
            .contains("authentication deferred for username 'defer'"),
        "{}",
        server.log_tail(40)
    );
    ping(&lab.lab.clients[0], "10.8.0.1", 2, Duration::from_secs(10)).unwrap();
    let rec = lab.record();
    assert!(rec.contains("verify good user-pass-verify"), "{rec}");
    assert!(rec.contains("verify defer user-pass-verify"), "{rec}");
}

#[test]
fn auth_gen_token_reconnect_and_renegotiation_skip_the_script() {
    let lab = lab("fvscr5");
    let calls = lab.lab.dir.join("calls");
    let verify = lab.script(
        "verify.sh",
        &format!(
            r#"echo "$username $session_state" >> {}; [ "$password" = secret ]"#,
            calls.display()
        ),
    );
    let extra = vec![
        "script-security 3".into(),
        format!("auth-user-pass-verify {} via-env", quoted(&verify)),
        "auth-gen-token".into(),
        // Renegotiations every few seconds, with the token as password.
        "reneg-sec 4".into(),
    ];
    let server = lab.ferrovpn_server(&lab.server_conf(&extra));
    let mut client = lab.stock_client("token", Some(("alice", "secret")));
    wait_log(&mut client, UP, &server);
    let calls_text = || std::fs::read_to_string(&calls).unwrap_or_default();
    assert_eq!(calls_text(), "alice Initial\n");
    // A renegotiation logs in with the token and gets a fresh one.
    let token_logins = |p: &Proc| {
        p.log()
            .matches("Username/auth-token authentication succeeded for username 'alice'")
            .count()
    };
    let renegotiated = wait_until(TIMEOUT, Duration::from_millis(100), || {
        token_logins(&server) >= 1
    });
    assert!(renegotiated, "{}", server.log_tail(40));
    // A restart (SIGUSR1) reconnects with the token.
    let st = std::process::Command::new("kill")
        .args(["-USR1", &client.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let reconnected = wait_for_count(&client, UP, 2, TIMEOUT);
    assert!(
        reconnected,
        "{}\n{}",
        client.log_tail(30),
        server.log_tail(30)
    );
    assert!(token_logins(&server) >= 2, "{}", server.log_tail(40));
    // The script ran only for the password login.
    assert_eq!(calls_text(), "alice Initial\n");
    ping(&lab.lab.clients[0], "10.8.0.1", 2, Duration::from_secs(10)).unwrap();
}

#[test]
fn script_security_1_does_not_run_scripts() {
    let lab = lab("fvscr3");
    let extra = vec![format!("up {}", quoted(&lab.recorder("up")))];
    let text = openvpn_server_conf(&lab.server_conf(&extra));
    let mut server = lab.lab.spawn(
        &lab.lab.server_ns,
        "ferrovpn-server",
        Implementation::Ferrovpn,
        &text,
    );
    let exited = wait_until(TIMEOUT, Duration::from_millis(50), || {
        server.try_exit().is_some()
    });
    let log = server.log();
    assert!(exited, "the server should stop when up cannot run:\n{log}");
    assert!(
        log.contains("External program may not be called unless '--script-security 2'"),
        "{log}"
    );
    assert!(lab.record().is_empty(), "{}", lab.record());
}

#[test]
fn tls_verify_accepts_one_client_and_refuses_another_by_common_name() {
    let lab = lab("fvscr6");
    // Called per depth (CA at 1, the client at 0); refuses client2.
    let verify = lab.script(
        "verify.sh",
        &format!(
            r#"echo "verify $1 [$2] $script_type cn=$X509_0_CN ca=$X509_1_CN serial=$tls_serial_0 hex=$tls_serial_hex_0 id=$tls_id_0 common=$common_name ip=$untrusted_ip pem=$(head -1 "$peer_cert")" >> {}
[ "$1" = 0 ] && [ "$X509_0_CN" = client2 ] && exit 1
exit 0"#,
            lab.record_path().display()
        ),
    );
    let export = lab.lab.dir.join("export");
    std::fs::create_dir_all(&export).unwrap();
    let extra = vec![
        "script-security 2".into(),
        format!("tls-verify {}", quoted(&verify)),
        format!("tls-export-cert {}", quoted(&export)),
    ];
    let mut server = lab.ferrovpn_server(&lab.server_conf(&extra));
    let mut good = lab.stock_client("good", None);
    wait_log(&mut good, UP, &server);
    ping(&lab.lab.clients[0], "10.8.0.1", 2, Duration::from_secs(10)).unwrap();
    let rec = lab.record();
    // The CA first, then the client's certificate, with 2.6's variables.
    let ca = rec.find("verify 1 [").unwrap_or_else(|| panic!("{rec}"));
    let leaf = rec
        .find("verify 0 [CN=client1")
        .or_else(|| rec.find("verify 0 ["))
        .unwrap_or_else(|| panic!("{rec}"));
    assert!(ca < leaf, "{rec}");
    let leaf_line = rec[leaf..].lines().next().unwrap_or_default();
    assert!(leaf_line.contains("tls-verify cn=client1"), "{leaf_line}");
    assert!(leaf_line.contains("common=client1"), "{leaf_line}");
    assert!(leaf_line.contains("ip=10.210.1.2"), "{leaf_line}");
    assert!(
        leaf_line.contains("pem=-----BEGIN CERTIFICATE-----"),
        "{leaf_line}"
    );
    let serial = leaf_line.split("serial=").nth(1).unwrap_or("");
    assert!(
        serial.starts_with(|c: char| c.is_ascii_digit()),
        "{leaf_line}"
    );
    assert!(leaf_line.contains("hex="), "{leaf_line}");
    // The exported certificate files are gone after each call.
    assert_eq!(std::fs::read_dir(&export).unwrap().count(), 0);
    good.stop(Duration::from_secs(5));

    // client2 is refused in its handshake: no key method, no data keys,
    // no push reply, nothing at all; the stock client gives up on the
    // handshake after hand-window and reconnects, as with a 2.6 server.
    let mut cc = lab.lab.client_conf(
        0,
        &lab.lab.pki.clients[1],
        "fvtun-c",
        Wrap::None,
        Cipher::Aes256Gcm,
    );
    cc.extra.push("connect-retry 30".into());
    cc.extra.push("hand-window 8".into());
    let mut refused = lab.lab.stock_client(0, "refused", &cc);
    wait_log(&mut server, "VERIFY SCRIPT ERROR: depth=0", &refused);
    wait_log(&mut refused, "SIGUSR1[soft,tls-error]", &server);
    assert!(
        refused
            .log()
            .contains("TLS key negotiation failed to occur within 8 seconds"),
        "{}",
        refused.log_tail(30)
    );
    assert!(!refused.log().contains(UP), "{}", refused.log_tail(30));
    assert!(
        !server.log().contains("client client2 connected"),
        "{}",
        server.log_tail(30)
    );
}

#[test]
fn tls_crypt_v2_verify_refuses_a_client_by_its_key_metadata() {
    let lab = lab("fvscr7");
    let server_key = lab.lab.dir.join("v2-server.key");
    ferrovpn_testkit::pki::stock_tls_crypt_v2_server_key(&server_key).unwrap();
    let keys: Vec<_> = ["alice", "mallory"]
        .iter()
        .map(|who| {
            let path = lab.lab.dir.join(format!("v2-{who}.key"));
            write_tls_crypt_v2_client_key(&server_key, &path, who.as_bytes()).unwrap();
            path
        })
        .collect();
    let verify = lab.script(
        "v2verify.sh",
        &format!(
            r#"who=$(cat "$metadata_file"); echo "v2 $script_type type=$metadata_type who=$who args=$#" >> {}
[ "$metadata_type" = 0 ] && [ "$who" = alice ]"#,
            lab.record_path().display()
        ),
    );
    let mut sc = lab.server_conf(&[
        "script-security 2".into(),
        format!("tls-crypt-v2-verify {}", quoted(&verify)),
    ]);
    sc.wrap = Wrap::TlsCryptV2(Material::File(server_key.clone()));
    let mut server = lab.ferrovpn_server(&sc);
    let client_conf = |key: &Path| {
        let mut cc = lab.lab.client_conf(
            0,
            &lab.lab.pki.clients[0],
            "fvtun-c",
            Wrap::TlsCryptV2(Material::File(key.to_owned())),
            Cipher::Aes256Gcm,
        );
        cc.extra.push("connect-retry 30".into());
        cc
    };
    let mut alice = lab.lab.stock_client(0, "alice", &client_conf(&keys[0]));
    wait_log(&mut alice, UP, &server);
    lab.wait_record("v2 tls-crypt-v2-verify type=0 who=alice args=0", &server);
    alice.stop(Duration::from_secs(5));
    let sessions = |p: &Proc| {
        p.log()
            .matches("new session (tls-crypt-v2 client key)")
            .count()
    };
    assert_eq!(sessions(&server), 1, "{}", server.log_tail(30));

    let mallory = lab.lab.stock_client(0, "mallory", &client_conf(&keys[1]));
    wait_log(&mut server, "TLS CRYPT V2 VERIFY SCRIPT ERROR", &mallory);
    lab.wait_record("v2 tls-crypt-v2-verify type=0 who=mallory", &server);
    // Dropped silently: no session, and the client's resent packets do
    // not run the script again while its verdict holds (a bounded wait
    // for what must not happen).
    let again = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        sessions(&server) > 1 || lab.record().matches("who=mallory").count() > 1
    });
    assert!(!again, "{}\n{}", lab.record(), server.log_tail(30));
    assert!(!mallory.log().contains(UP), "{}", mallory.log_tail(20));
}

#[test]
fn client_connect_file_pushes_a_route_and_an_iroute_carries_traffic() {
    let lab = lab("fvscr8");
    // The dynamic config file (the last argument) pushes a route and
    // routes a network behind the client to it.
    let connect = lab.script(
        "connect.sh",
        r#"printf 'push "route 10.66.0.0 255.255.255.0"\niroute 192.168.77.0 255.255.255.0\n' > "$1""#,
    );
    let extra = vec![
        "script-security 2".into(),
        format!("client-connect {}", quoted(&connect)),
        "route 192.168.77.0 255.255.255.0".into(),
    ];
    let server = lab.ferrovpn_server(&lab.server_conf(&extra));
    let mut client = lab.stock_client("site", None);
    wait_log(&mut client, UP, &server);
    let client_ns = &lab.lab.clients[0];
    let route = client_ns
        .exec(&["ip", "-4", "route", "show", "10.66.0.0/24"])
        .unwrap();
    assert!(
        route.contains("fvtun-c"),
        "{route}\n{}",
        server.log_tail(30)
    );
    // The network behind the client: an address of its namespace.
    client_ns
        .exec(&["ip", "addr", "add", "192.168.77.1/32", "dev", "lo"])
        .unwrap();
    let stats = ping(
        &lab.lab.server_ns,
        "192.168.77.1",
        3,
        Duration::from_secs(15),
    )
    .unwrap_or_else(|e| panic!("{e:#}\n{}\n{}", server.log_tail(30), client.log_tail(20)));
    assert_eq!(stats.received, 3, "{}", server.log_tail(30));
    assert!(
        server.log().contains("internal route 192.168.77.0/24"),
        "{}",
        server.log_tail(40)
    );
}
