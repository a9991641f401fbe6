//! What a client asks again after a SIGHUP, as OpenVPN 2.6: the
//! `auth-user-pass` credentials and the private key's passphrase it was
//! given over the management interface (`management-query-passwords`)
//! live in process-wide buffers that a SIGHUP does not clear (ssl.c
//! `auth_user_pass_setup` asks only while `auth_user_pass` is undefined,
//! `pem_password_setup` only while `passbuf` is empty), so they are not
//! asked again; with `auth-nocache` both are wiped after use
//! (misc.c `purge_user_pass`) and both are asked again, the credentials
//! first. And `askpass FILE` is read once: a SIGHUP opens the key with
//! the passphrase read at start. `forget-passwords` empties both buffers
//! (manage.c `man_forget_passwords`), and without `persist-key` every
//! restart of the connection opens the key again: with `passbuf` emptied
//! it reads `askpass FILE` again only with `auth-retry interact`, else
//! asks over management or on the terminal. With
//! `management-query-passwords` the file is read after the hold.
//!
//! Each script runs against the ferrovpn client and Debian's stock 2.6
//! client with the same stock 2.6 server, and the test compares what both
//! showed on their management interfaces.
//!
//! Needs root, `openvpn`, `openssl`, `ip` and `/dev/net/tun`; fails loudly
//! without them. Every wait has a deadline.

use std::time::Duration;

use ferrovpn_testkit::lab::wait_exit;
use ferrovpn_testkit::mgmt::{Management, client_lines, held_client, same_as_stock};
use ferrovpn_testkit::pki::KeyEncryption;
use ferrovpn_testkit::{Cipher, Implementation, Lab, Proc, Wrap};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const USER: &str = "bob";
const PASSWORD: &str = "s3cret";
const PASSPHRASE: &str = "correct horse battery";
const VERIFICATION_FAILED: &str = ">PASSWORD:Verification Failed: 'Private Key'";

/// Answer every password question on `m` until the client is connected
/// (at most three questions: a bounded loop).
fn answer_until_connected(m: &mut Management) {
    for _ in 0..3 {
        let l = m.until("a question or CONNECTED", |l| {
            l.starts_with(">PASSWORD:Need ") || l.contains(",CONNECTED,")
        });
        if l.contains(",CONNECTED,") {
            return;
        }
        if l.contains("'Auth'") {
            m.one(&format!("username \"Auth\" {USER}"));
            m.one(&format!("password \"Auth\" {PASSWORD}"));
        } else {
            m.one(&format!("password \"Private Key\" \"{PASSPHRASE}\""));
        }
    }
    m.until("CONNECTED state", |l| l.contains(",CONNECTED,"));
}

/// A client of `imp` named `name` with client 0's certificate, its key
/// encrypted with [`PASSPHRASE`] into a file of its own, and `more` lines,
/// against the lab's tls-crypt server: started held, `state on` and
/// released.
fn released_client(
    lab: &Lab,
    imp: Implementation,
    name: &str,
    more: impl IntoIterator<Item = String>,
) -> (Proc, Management) {
    let who = &lab.pki.clients[0];
    let key = lab
        .pki
        .encrypted_key(
            who,
            &format!("{name}-enc.key"),
            PASSPHRASE,
            KeyEncryption::Pkcs8Aes256,
        )
        .unwrap();
    let lines = [
        format!("cert {}", who.cert.display()),
        format!("key {}", key.display()),
    ]
    .into_iter()
    .chain(more);
    // A line `-DIRECTIVE` takes DIRECTIVE out of the lab's client config
    // (say `-persist-key`, which the lab's configs carry).
    let (dropped, lines): (Vec<String>, Vec<String>) = lines.partition(|l| l.starts_with('-'));
    let wrap = Wrap::TlsCrypt(ferrovpn_testkit::Material::File(lab.dir.join("tc.key")));
    let text: String = lab
        .certless_client_text(wrap, Cipher::Aes256Gcm, lines)
        .lines()
        .filter(|l| !dropped.iter().any(|d| d[1..] == **l))
        .map(|l| format!("{l}\n"))
        .collect();
    let (client, mut m) = held_client(lab, &text, imp, name, &[]);
    m.until("hold", |l| l.starts_with(">HOLD:"));
    m.one("state on");
    m.one("hold release");
    (client, m)
}

/// A client of `imp` with an encrypted key and `auth-user-pass`, both
/// asked over management (plus `extra`): connect, SIGHUP over
/// management, connect again, SIGTERM. Returns what its interface
/// showed ([`client_lines`]).
fn reload_script(lab: &Lab, imp: Implementation, extra: &[&str]) -> Vec<String> {
    let name = format!("{}-client{}", imp.name(), extra.len());
    let more = ["auth-user-pass", "management-query-passwords"]
        .iter()
        .chain(extra)
        .map(|l| l.to_string());
    let (mut client, mut m) = released_client(lab, imp, &name, more);
    answer_until_connected(&mut m);
    m.one("signal SIGHUP");
    m.until("hold after SIGHUP", |l| l.starts_with(">HOLD:"));
    m.one("hold release");
    answer_until_connected(&mut m);
    m.one("signal SIGTERM");
    m.until("EXITING state", |l| l.contains(",EXITING,"));
    let _ = wait_exit(&mut client, Duration::from_secs(10));
    client_lines(&m)
}

/// The number of password questions in `lines`.
fn questions(lines: &[String]) -> usize {
    lines
        .iter()
        .filter(|l| l.starts_with(">PASSWORD:Need "))
        .count()
}

#[test]
fn sighup_keeps_the_passwords_given_over_management_as_2_6() {
    let lab = Lab::new("fvhuppw", 1, FERROVPN);
    let (mut sc, _) = lab.password_server_conf(USER, PASSWORD);
    sc.wrap = Wrap::TlsCrypt(ferrovpn_testkit::Material::File(lab.static_key("tc.key")));
    let _server = lab.stock_server(&sc);
    let kept = same_as_stock(|imp| reload_script(&lab, imp, &[]));
    assert_eq!(questions(&kept), 2, "{kept:#?}");
    let asked_again = same_as_stock(|imp| reload_script(&lab, imp, &["auth-nocache"]));
    assert_eq!(questions(&asked_again), 4, "{asked_again:#?}");
}

/// A client of `imp` with an encrypted key opened by `askpass FILE`:
/// connect, replace the file's passphrase by a wrong one, SIGHUP over
/// management, connect again, SIGTERM. Returns what its interface showed.
fn askpass_reload_script(lab: &Lab, imp: Implementation) -> Vec<String> {
    let name = format!("{}-askpass", imp.name());
    let askpass = lab.dir.join(format!("{name}.pass"));
    std::fs::write(&askpass, format!("{PASSPHRASE}\n")).unwrap();
    let more = [format!("askpass {}", askpass.display())];
    let (mut client, mut m) = released_client(lab, imp, &name, more);
    m.until("CONNECTED state", |l| l.contains(",CONNECTED,"));
    std::fs::write(&askpass, "not the passphrase\n").unwrap();
    m.one("signal SIGHUP");
    m.until("hold after SIGHUP", |l| l.starts_with(">HOLD:"));
    m.one("hold release");
    m.until("CONNECTED state after SIGHUP", |l| {
        l.contains(",CONNECTED,")
    });
    m.one("signal SIGTERM");
    m.until("EXITING state", |l| l.contains(",EXITING,"));
    let _ = wait_exit(&mut client, Duration::from_secs(10));
    client_lines(&m)
}

/// 2.6 reads `askpass FILE` once: after a SIGHUP it opens the key with the
/// passphrase it read at start (`pem_password_setup` reads only while
/// `passbuf` is empty), even though the file now holds another.
#[test]
fn sighup_keeps_the_askpass_passphrase_as_2_6() {
    let lab = Lab::new("fvhupask", 1, FERROVPN);
    let mut sc = lab.server_conf(Wrap::None, Cipher::Aes256Gcm);
    sc.wrap = Wrap::TlsCrypt(ferrovpn_testkit::Material::File(lab.static_key("tc.key")));
    let _server = lab.stock_server(&sc);
    let lines = same_as_stock(|imp| askpass_reload_script(&lab, imp));
    let connected = lines.iter().filter(|l| *l == "STATE CONNECTED").count();
    assert_eq!(connected, 2, "{lines:#?}");
    assert_eq!(questions(&lines), 0, "{lines:#?}");
}

/// A client of `imp` with an encrypted key and `auth-user-pass`, both
/// asked over management, plus `extra`: connect, then each of `steps`
/// (`signal SIG...`: wait for the hold, release it and answer until
/// connected again; any other line: a command and its one-line reply),
/// then SIGTERM. Returns what its interface showed ([`client_lines`]).
fn steps_script(
    lab: &Lab,
    imp: Implementation,
    tag: &str,
    extra: &[&str],
    steps: &[&str],
) -> Vec<String> {
    let name = format!("{}-{tag}", imp.name());
    let more = ["auth-user-pass", "management-query-passwords"]
        .iter()
        .chain(extra)
        .map(|l| l.to_string());
    let (mut client, mut m) = released_client(lab, imp, &name, more);
    answer_until_connected(&mut m);
    for step in steps {
        if step.starts_with("signal ") {
            m.one(step);
            m.until("hold after the signal", |l| l.starts_with(">HOLD:"));
            m.one("hold release");
            answer_until_connected(&mut m);
        } else {
            m.one(step);
        }
    }
    m.one("signal SIGTERM");
    m.until("EXITING state", |l| l.contains(",EXITING,"));
    let _ = wait_exit(&mut client, Duration::from_secs(10));
    client_lines(&m)
}

/// `forget-passwords` drops the key's passphrase and the credentials, as
/// 2.6's `man_forget_passwords` (`ssl_purge_auth`: `passbuf` and
/// `auth_user_pass`; `ssl_clean_auth_token`). What asks again, checked
/// with the stock client: a SIGUSR1 without `persist-key` opens the key
/// again (`do_close_free_key_schedule` freed the TLS context) and asks
/// for its passphrase at once, after the hold; with `persist-key` it
/// does not. The credentials are asked in the key exchange
/// (`key_method_2_write`), after the `WAIT` and `AUTH` states. A SIGHUP
/// asks both again before anything else, the credentials first
/// (`init_query_passwords`, then the TLS context).
#[test]
fn forget_passwords_drops_the_passphrase_and_the_credentials_as_2_6() {
    let lab = Lab::new("fvforget", 1, FERROVPN);
    let (mut sc, _) = lab.password_server_conf(USER, PASSWORD);
    sc.wrap = Wrap::TlsCrypt(ferrovpn_testkit::Material::File(lab.static_key("tc.key")));
    let _server = lab.stock_server(&sc);
    let steps = [
        "forget-passwords",
        "signal SIGUSR1",
        "forget-passwords",
        "signal SIGHUP",
    ];
    let fresh_key =
        same_as_stock(|imp| steps_script(&lab, imp, "forget", &["-persist-key"], &steps));
    assert_eq!(questions(&fresh_key), 6, "{fresh_key:#?}");
    let kept_key = same_as_stock(|imp| steps_script(&lab, imp, "forget-pk", &[], &steps));
    assert_eq!(questions(&kept_key), 5, "{kept_key:#?}");
}

/// Without `persist-key` and with `auth-nocache` 2.6 asks for the key's
/// passphrase again at every restart of the connection: the TLS context
/// is freed (`do_close_free_key_schedule`) and `passbuf` was wiped once
/// used. With `persist-key` only the credentials are asked again.
#[test]
fn auth_nocache_without_persist_key_asks_the_passphrase_at_each_restart_as_2_6() {
    let lab = Lab::new("fvnocache", 1, FERROVPN);
    let (mut sc, _) = lab.password_server_conf(USER, PASSWORD);
    sc.wrap = Wrap::TlsCrypt(ferrovpn_testkit::Material::File(lab.static_key("tc.key")));
    let _server = lab.stock_server(&sc);
    let steps = ["signal SIGUSR1", "signal SIGUSR1"];
    let fresh_key = same_as_stock(|imp| {
        steps_script(
            &lab,
            imp,
            "nocache",
            &["-persist-key", "auth-nocache"],
            &steps,
        )
    });
    assert_eq!(questions(&fresh_key), 6, "{fresh_key:#?}");
    let kept_key =
        same_as_stock(|imp| steps_script(&lab, imp, "nocache-pk", &["auth-nocache"], &steps));
    assert_eq!(questions(&kept_key), 4, "{kept_key:#?}");
}

/// One step of [`askpass_steps_script`].
enum Step<'a> {
    /// A management command and its one-line reply.
    Command(&'a str),
    /// Wait for a line that contains this.
    Until(&'a str),
    /// The askpass file's first line from now on.
    Askpass(&'a str),
}

/// A client of `imp` with an encrypted key, `askpass FILE` (holding
/// `first` at start) and `extra`, started held with `state on`: each of
/// `steps`, then SIGTERM. Returns what its interface showed
/// ([`client_lines`]) and how it ended.
fn askpass_steps_script(
    lab: &Lab,
    imp: Implementation,
    tag: &str,
    first: &str,
    extra: &[&str],
    steps: &[Step],
) -> (Vec<String>, String) {
    let name = format!("{}-{tag}", imp.name());
    let askpass = lab.dir.join(format!("{name}.pass"));
    std::fs::write(&askpass, format!("{first}\n")).unwrap();
    let who = &lab.pki.clients[0];
    let key = lab
        .pki
        .encrypted_key(
            who,
            &format!("{name}-enc.key"),
            PASSPHRASE,
            KeyEncryption::Pkcs8Aes256,
        )
        .unwrap();
    let lines = [
        format!("cert {}", who.cert.display()),
        format!("key {}", key.display()),
        format!("askpass {}", askpass.display()),
    ]
    .into_iter()
    .chain(extra.iter().map(|l| l.to_string()));
    let (dropped, lines): (Vec<String>, Vec<String>) = lines.partition(|l| l.starts_with('-'));
    let wrap = Wrap::TlsCrypt(ferrovpn_testkit::Material::File(lab.dir.join("tc.key")));
    let text: String = lab
        .certless_client_text(wrap, Cipher::Aes256Gcm, lines)
        .lines()
        .filter(|l| !dropped.iter().any(|d| d[1..] == **l))
        .map(|l| format!("{l}\n"))
        .collect();
    let (mut client, mut m) = held_client(lab, &text, imp, &name, &[]);
    m.until("hold", |l| l.starts_with(">HOLD:"));
    m.one("state on");
    for step in steps {
        match step {
            Step::Command(c) => {
                m.one(c);
            }
            Step::Until(text) => {
                m.until(text, |l| l.contains(text));
            }
            Step::Askpass(line) => std::fs::write(&askpass, format!("{line}\n")).unwrap(),
        }
    }
    // After `>FATAL:` the client exits by itself.
    let ended = if m.seen().iter().any(|l| l.starts_with(">FATAL:")) {
        let status = wait_exit(&mut client, Duration::from_secs(10));
        format!("exited after FATAL: {status}")
    } else {
        m.one("signal SIGTERM");
        m.until("EXITING state", |l| l.contains(",EXITING,"));
        format!("{}", wait_exit(&mut client, Duration::from_secs(10)))
    };
    (client_lines(&m), ended)
}

/// The number of `line`s in `lines`.
fn count(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| *l == line).count()
}

/// With `management-query-passwords` 2.6 reads `askpass FILE` after
/// `management-hold` (`openvpn_main` calls `init_query_passwords` once
/// the management interface is open): a file that holds the passphrase
/// only once the hold started opens the key; a wrong one is told after
/// the hold, and ends the client (`auth-retry none`).
#[test]
fn askpass_file_is_read_after_the_hold_as_2_6() {
    let lab = Lab::new("fvaskhold", 1, FERROVPN);
    let mut sc = lab.server_conf(Wrap::None, Cipher::Aes256Gcm);
    sc.wrap = Wrap::TlsCrypt(ferrovpn_testkit::Material::File(lab.static_key("tc.key")));
    let _server = lab.stock_server(&sc);
    let (lines, _) = same_as_stock(|imp| {
        askpass_steps_script(
            &lab,
            imp,
            "hold-fixed",
            "not the passphrase",
            &["management-query-passwords"],
            &[
                Step::Askpass(PASSPHRASE),
                Step::Command("hold release"),
                Step::Until(",CONNECTED,"),
            ],
        )
    });
    assert_eq!(count(&lines, "STATE CONNECTED"), 1, "{lines:#?}");
    assert_eq!(count(&lines, VERIFICATION_FAILED), 0, "{lines:#?}");
    let (lines, ended) = same_as_stock(|imp| {
        askpass_steps_script(
            &lab,
            imp,
            "hold-broken",
            PASSPHRASE,
            &["management-query-passwords"],
            &[
                Step::Askpass("not the passphrase"),
                Step::Command("hold release"),
                Step::Until(">FATAL:"),
            ],
        )
    });
    assert_eq!(count(&lines, VERIFICATION_FAILED), 1, "{lines:#?}");
    assert!(ended.starts_with("exited after FATAL"), "{ended}");
}

/// Without `persist-key` 2.6 opens the key again at every reconnect
/// (`do_close_free_key_schedule` freed the TLS context). Once
/// `auth-nocache` emptied `passbuf` (`pem_password_callback`), an
/// `askpass FILE` is read again then only with `auth-retry interact`
/// (`init_instance` calls `init_query_passwords`): the file's new
/// contents are used, a wrong passphrase is told
/// (`>PASSWORD:Verification Failed`) and retried after the hold, reading
/// the file again. Otherwise `pem_password_callback` asks as if there
/// were no FILE: over management with `management-query-passwords`.
#[test]
fn a_reconnect_without_persist_key_opens_the_key_again_as_2_6() {
    let lab = Lab::new("fvaskusr1", 1, FERROVPN);
    let mut sc = lab.server_conf(Wrap::None, Cipher::Aes256Gcm);
    sc.wrap = Wrap::TlsCrypt(ferrovpn_testkit::Material::File(lab.static_key("tc.key")));
    let _server = lab.stock_server(&sc);
    let (lines, _) = same_as_stock(|imp| {
        askpass_steps_script(
            &lab,
            imp,
            "usr1-interact",
            PASSPHRASE,
            &["-persist-key", "auth-nocache", "auth-retry interact"],
            &[
                Step::Command("hold release"),
                Step::Until(",CONNECTED,"),
                Step::Askpass("not the passphrase"),
                Step::Command("signal SIGUSR1"),
                Step::Until(">HOLD:"),
                Step::Command("hold release"),
                Step::Until(VERIFICATION_FAILED),
                Step::Until(">HOLD:"),
                Step::Askpass(PASSPHRASE),
                Step::Command("hold release"),
                Step::Until(",CONNECTED,"),
            ],
        )
    });
    assert_eq!(count(&lines, "STATE CONNECTED"), 2, "{lines:#?}");
    assert_eq!(count(&lines, VERIFICATION_FAILED), 1, "{lines:#?}");
    let (lines, _) = same_as_stock(|imp| {
        askpass_steps_script(
            &lab,
            imp,
            "usr1-mqp",
            PASSPHRASE,
            &["-persist-key", "management-query-passwords"],
            &[
                Step::Command("hold release"),
                Step::Until(",CONNECTED,"),
                Step::Command("forget-passwords"),
                Step::Command("signal SIGUSR1"),
                Step::Until(">HOLD:"),
                Step::Command("hold release"),
                Step::Until(">PASSWORD:Need 'Private Key' password"),
                Step::Command(&format!("password \"Private Key\" \"{PASSPHRASE}\"")),
                Step::Until(",CONNECTED,"),
            ],
        )
    });
    assert_eq!(count(&lines, "STATE CONNECTED"), 2, "{lines:#?}");
    assert_eq!(questions(&lines), 1, "{lines:#?}");
}

/// Without `persist-key`, after `auth-nocache` emptied `passbuf` and
/// without `auth-retry interact` or `management-query-passwords`, 2.6's
/// reconnect asks for the key's passphrase on the terminal
/// (`pem_password_setup(NULL)`, as if there were no `askpass FILE`);
/// without one it ends with `>FATAL:` (its console query's words) and
/// exit status 1.
#[test]
fn a_reconnect_without_a_terminal_to_ask_on_ends_the_client_as_2_6() {
    let lab = Lab::new("fvaskterm", 1, FERROVPN);
    let mut sc = lab.server_conf(Wrap::None, Cipher::Aes256Gcm);
    sc.wrap = Wrap::TlsCrypt(ferrovpn_testkit::Material::File(lab.static_key("tc.key")));
    let _server = lab.stock_server(&sc);
    let (lines, ended) = same_as_stock(|imp| {
        askpass_steps_script(
            &lab,
            imp,
            "usr1-terminal",
            PASSPHRASE,
            &["-persist-key", "auth-nocache"],
            &[
                Step::Command("hold release"),
                Step::Until(",CONNECTED,"),
                Step::Command("signal SIGUSR1"),
                Step::Until(">HOLD:"),
                Step::Command("hold release"),
                Step::Until(">FATAL:"),
            ],
        )
    });
    assert_eq!(count(&lines, "STATE CONNECTED"), 1, "{lines:#?}");
    assert_eq!(ended, "exited after FATAL: exit status: 1");
}
