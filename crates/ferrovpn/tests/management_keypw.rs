//! The private key's passphrase over the management interface
//! (`management-query-passwords` with an encrypted `key` or a `pkcs12`
//! file): `>PASSWORD:Need 'Private Key' password` after `management-hold`
//! is released, answered with `password "Private Key" SECRET`; a wrong one
//! as `auth-retry` says. Each script runs against ferrovpn and against
//! Debian's stock OpenVPN 2.6 in the same role, and the test asserts the
//! same lines (times and pids cut).
//!
//! Needs root, `openvpn`, `openssl`, `ip`, `ping` and `/dev/net/tun`;
//! fails loudly without them. Every wait has a deadline.

use std::path::PathBuf;
use std::time::Duration;

use ferrovpn_testkit::lab::{SERVER_TUN, wait_exit};
use ferrovpn_testkit::mgmt::{
    Management, same_as_stock, same_as_stock_or, state_names, state_names_and_reasons,
};
use ferrovpn_testkit::pki::{KeyEncryption, export_pkcs12};
use ferrovpn_testkit::{
    Implementation, Lab, Material, Proc, ServerConf, openvpn_server_conf, ping,
};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const PASSPHRASE: &str = "correct horse battery";
const NEED: &str = ">PASSWORD:Need 'Private Key' password";
const VERIFICATION_FAILED: &str = ">PASSWORD:Verification Failed: 'Private Key'";
const FATAL_WRONG: &str = ">FATAL:Error: private key password verification failed";

/// `state` (the history) with the time cut.
fn state_now(m: &mut Management) -> Vec<String> {
    m.block("state")
        .iter()
        .map(|s| {
            s.split_once(',')
                .map_or(s.as_str(), |(_, rest)| rest)
                .to_string()
        })
        .collect()
}

/// How the client's key is protected.
#[derive(Clone, Copy)]
enum Protected {
    /// `key FILE`: PKCS#8, AES-256 (easy-rsa's default).
    Key,
    /// `pkcs12 FILE` with a password.
    Pkcs12,
}

/// A client of `imp` in namespace 0 with its key protected by
/// [`PASSPHRASE`], the management interface on a unix socket and
/// `management-query-passwords`, plus `extra` lines.
fn managed_client(
    lab: &Lab,
    sc: &ServerConf,
    imp: Implementation,
    name: &str,
    protected: Protected,
    extra: &[&str],
) -> (Proc, PathBuf) {
    let socket = lab.dir.join(format!("{name}.sock"));
    let who = &lab.pki.clients[0];
    let credentials = match protected {
        Protected::Key => {
            let enc = lab
                .pki
                .encrypted_key(
                    who,
                    &format!("{name}-enc.key"),
                    PASSPHRASE,
                    KeyEncryption::Pkcs8Aes256,
                )
                .unwrap();
            format!("cert {}\nkey {}", who.cert.display(), enc.display())
        }
        Protected::Pkcs12 => {
            let p12 = lab.dir.join(format!("{name}.p12"));
            export_pkcs12(who, Some(&lab.pki.ca.cert), &p12, PASSPHRASE, false).unwrap();
            format!("pkcs12 {}", p12.display())
        }
    };
    let text = lab.certless_client_text(
        sc.wrap.clone(),
        sc.cipher,
        [
            credentials,
            format!("management {} unix", socket.display()),
            "management-query-passwords".to_string(),
        ]
        .into_iter()
        .chain(extra.iter().map(|e| e.to_string())),
    );
    let p = lab.spawn(&lab.clients[0], name, imp, &text);
    (p, socket)
}

/// Held; commands answered while held and while the question waits; the
/// right passphrase; the tunnel carries a ping; `signal SIGTERM`.
fn right_passphrase_script(lab: &Lab, sc: &ServerConf, imp: Implementation) -> Vec<String> {
    let name = format!("{}-keypw", imp.name());
    let (mut client, socket) =
        managed_client(lab, sc, imp, &name, Protected::Key, &["management-hold"]);
    let mut m = Management::connect_when_listening(&socket, Duration::from_secs(15));
    let mut same = vec![
        m.until("greeting", |l| l.starts_with(">INFO:")),
        m.until("hold", |l| l.starts_with(">HOLD:")),
        m.one("state on"),
    ];
    same.extend(state_now(&mut m));
    assert!(m.one("pid").starts_with("SUCCESS: pid="));
    // Nothing is asked before the hold is released.
    same.push(m.one("password \"Private Key\" early"));
    same.push(m.one("hold release"));
    same.push(m.until("key passphrase query", |l| l.starts_with(">PASSWORD:")));
    // The interface answers while the question waits.
    same.extend(state_now(&mut m));
    assert!(m.one("pid").starts_with("SUCCESS: pid="));
    same.push(m.one("password Auth x"));
    same.push(m.one("username \"Private Key\" x"));
    same.push(m.one(&format!("password \"Private Key\" \"{PASSPHRASE}\"")));
    m.until("CONNECTED state", |l| l.contains(",CONNECTED,"));
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}\n{}", client.log_tail(20));
    // Opened once: nothing is asked any more.
    same.push(m.one("password \"Private Key\" again"));
    same.push(m.one("signal SIGTERM"));
    m.until("EXITING state", |l| l.contains(",EXITING,"));
    same.extend(state_names(&m.states()));
    let status = wait_exit(&mut client, Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", client.log_tail(20));
    same
}

#[test]
fn client_key_passphrase_over_management_after_hold_stock_server() {
    let lab = Lab::new("mkeypw", 1, FERROVPN);
    let (sc, _) = lab.tls_crypt_confs();
    let server = lab.stock_server(&sc);
    let ours = same_as_stock_or(
        |imp| right_passphrase_script(&lab, &sc, imp),
        || server.log_tail(10),
    );
    for expected in [
        NEED,
        "ERROR: no password is currently needed at this time",
        "ERROR: password of type 'Auth' entered, but we need one of type 'Private Key'",
        "ERROR: no username is currently needed at this time",
        "SUCCESS: 'Private Key' password entered, but not yet verified",
    ] {
        assert!(ours.iter().any(|l| l == expected), "{expected}: {ours:?}");
    }
}

/// A wrong passphrase with `auth-retry none` (the default): the failure,
/// `>FATAL:`, exit status 1, no EXITING state.
fn wrong_passphrase_script(
    lab: &Lab,
    sc: &ServerConf,
    imp: Implementation,
    protected: Protected,
) -> Vec<String> {
    let name = format!("{}-wrongkeypw", imp.name());
    let (mut client, socket) = managed_client(lab, sc, imp, &name, protected, &[]);
    let mut m = Management::connect_when_listening(&socket, Duration::from_secs(15));
    // Without management-hold the question comes right away.
    let mut same = vec![
        m.until("greeting", |l| l.starts_with(">INFO:")),
        m.until("key passphrase query", |l| l.starts_with(">PASSWORD:")),
        m.one("state on"),
        m.one("password \"Private Key\" wrong"),
    ];
    let fatal = m.until("fatal error", |l| l.starts_with(">FATAL:"));
    same.extend(
        m.seen()
            .iter()
            .filter(|l| l.starts_with(">PASSWORD:Verification") || l.starts_with(">STATE:"))
            .cloned(),
    );
    same.push(fatal);
    let status = wait_exit(&mut client, Duration::from_secs(10));
    same.push(format!("exit status {:?}", status.code()));
    same
}

#[test]
fn client_wrong_key_passphrase_is_fatal_stock_server() {
    let lab = Lab::new("mkeypwx", 1, FERROVPN);
    let (sc, _) = lab.tls_crypt_confs();
    let _server = lab.stock_server(&sc);
    for protected in [Protected::Key, Protected::Pkcs12] {
        let ours = same_as_stock(|imp| wrong_passphrase_script(&lab, &sc, imp, protected));
        assert_eq!(ours.last().unwrap(), "exit status Some(1)", "{ours:?}");
        assert!(ours.iter().any(|l| l == FATAL_WRONG), "{ours:?}");
        // 2.6 announces the failure for a key file only.
        assert_eq!(
            ours.iter().any(|l| l == VERIFICATION_FAILED),
            matches!(protected, Protected::Key),
            "{ours:?}"
        );
    }
}

/// `auth-retry interact`: wrong, the failure, RECONNECTING, the hold
/// again, the question again, right; SIGUSR1 reconnects without asking.
fn retry_script(lab: &Lab, sc: &ServerConf, imp: Implementation) -> Vec<String> {
    let name = format!("{}-retrykeypw", imp.name());
    let (mut client, socket) = managed_client(
        lab,
        sc,
        imp,
        &name,
        Protected::Key,
        &["management-hold", "auth-retry interact"],
    );
    let mut m = Management::connect_when_listening(&socket, Duration::from_secs(15));
    m.until("hold", |l| l.starts_with(">HOLD:"));
    let mut same = vec![m.one("state on"), m.one("hold release")];
    same.push(m.until("key passphrase query", |l| l.starts_with(">PASSWORD:")));
    same.push(m.one("password \"Private Key\" wrong"));
    same.push(m.until("verification failure", |l| {
        l.starts_with(">PASSWORD:Verification")
    }));
    same.push(m.until("hold again", |l| l.starts_with(">HOLD:")));
    same.extend(state_now(&mut m));
    same.push(m.one("hold release"));
    same.push(m.until("key passphrase query again", |l| {
        l.starts_with(">PASSWORD:")
    }));
    same.push(m.one(&format!("password \"Private Key\" \"{PASSPHRASE}\"")));
    m.until("CONNECTED state", |l| l.contains(",CONNECTED,"));
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}\n{}", client.log_tail(20));
    same.push(m.one("signal SIGUSR1"));
    same.push(m.until("hold after SIGUSR1", |l| l.starts_with(">HOLD:")));
    same.push(m.one("hold release"));
    m.until("CONNECTED state again", |l| l.contains(",CONNECTED,"));
    same.push(m.one("password \"Private Key\" again"));
    same.push(m.one("signal SIGTERM"));
    m.until("EXITING state", |l| l.contains(",EXITING,"));
    same.extend(state_names_and_reasons(&m));
    let status = wait_exit(&mut client, Duration::from_secs(10));
    same.push(format!("exit status {:?}", status.code()));
    same
}

#[test]
fn client_wrong_then_right_key_passphrase_auth_retry_interact_stock_server() {
    let lab = Lab::new("mkeypwr", 1, FERROVPN);
    let (sc, _) = lab.tls_crypt_confs();
    let _server = lab.stock_server(&sc);
    let ours = same_as_stock(|imp| retry_script(&lab, &sc, imp));
    for expected in [
        VERIFICATION_FAILED,
        ">HOLD:Waiting for hold release:1",
        "RECONNECTING,private-key-password-failure,,,,,",
        "RECONNECTING,SIGUSR1,,,,,",
    ] {
        assert!(ours.iter().any(|l| l == expected), "{expected}: {ours:?}");
    }
    assert_eq!(
        ours.iter().filter(|l| *l == NEED).count(),
        2,
        "asked twice, not after SIGUSR1: {ours:?}"
    );
}

/// A SERVER of `imp` with an encrypted key, `management-hold` and
/// `management-query-passwords`: the question after the release, a wrong
/// passphrase (`auth-retry interact`: asked again), the right one; then a
/// stock client connects and pings. Returns the lines that must be equal.
fn server_script(lab: &Lab, imp: Implementation) -> Vec<String> {
    let name = format!("{}-server-keypw", imp.name());
    let (mut sc, cc) = lab.tls_crypt_confs();
    let enc = lab
        .pki
        .encrypted_key(
            &lab.pki.server,
            &format!("{name}-enc.key"),
            PASSPHRASE,
            KeyEncryption::TraditionalDes3,
        )
        .unwrap();
    sc.key = Material::File(enc);
    let socket = lab.dir.join(format!("{name}.sock"));
    sc.extra.extend([
        format!("management {} unix", socket.display()),
        "management-hold".to_string(),
        "management-query-passwords".to_string(),
        "auth-retry interact".to_string(),
    ]);
    let mut server = lab.spawn(&lab.server_ns, &name, imp, &openvpn_server_conf(&sc));
    let mut m = Management::connect_when_listening(&socket, Duration::from_secs(15));
    let mut same = vec![
        m.until("greeting", |l| l.starts_with(">INFO:")),
        m.until("hold", |l| l.starts_with(">HOLD:")),
        m.one("state on"),
        m.one("password \"Private Key\" early"),
        m.one("hold release"),
        m.until("key passphrase query", |l| l.starts_with(">PASSWORD:")),
    ];
    assert!(m.one("pid").starts_with("SUCCESS: pid="));
    same.push(m.one("password \"Private Key\" wrong"));
    same.push(m.until("verification failure", |l| {
        l.starts_with(">PASSWORD:Verification")
    }));
    same.push(m.until("hold again", |l| l.starts_with(">HOLD:")));
    same.push(m.one("hold release"));
    same.push(m.until("key passphrase query again", |l| {
        l.starts_with(">PASSWORD:")
    }));
    same.push(m.one(&format!("password \"Private Key\" \"{PASSPHRASE}\"")));
    m.until("CONNECTED state", |l| l.contains(",CONNECTED,"));
    same.extend(
        m.states()
            .into_iter()
            .filter(|s| s.starts_with("RECONNECTING")),
    );
    let client_name = format!("stock-client-of-{name}");
    let client = lab.stock_client_up(0, &client_name, &cc, &server);
    lab.ping_server(0, &client, &server);
    drop(client);
    server.stop(Duration::from_secs(5));
    same
}

#[test]
fn server_key_passphrase_over_management_stock_client() {
    let lab = Lab::new("mkeypws", 1, FERROVPN);
    let ours = same_as_stock(|imp| server_script(&lab, imp));
    for expected in [
        NEED,
        VERIFICATION_FAILED,
        "RECONNECTING,private-key-password-failure,,,,,",
    ] {
        assert!(ours.iter().any(|l| l == expected), "{expected}: {ours:?}");
    }
}
