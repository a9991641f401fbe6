//! `auth-user-pass-optional` on a server, ferrovpn's and Debian's stock
//! OpenVPN 2.6 side by side, with stock clients that have a certificate
//! and no `auth-user-pass` (they send an empty login):
//! - with the option, the `auth-user-pass-verify` script runs with an
//!   empty `username` and a via-file of two empty lines and decides (its
//!   refusal is AUTH_FAILED); with `username-as-common-name` the common
//!   name becomes empty, so `client-connect` sees no `common_name`;
//! - without it, the server drops such a client after the TLS handshake
//!   without a word ("Auth Username/Password was not provided by peer"):
//!   no script runs, no AUTH_FAILED, the client gives up after its
//!   hand-window;
//! - `management-client-auth` with the option asks about such a client
//!   with an empty `username` (`>CLIENT:CONNECT`), and `client-auth` lets
//!   it in.
//!
//! Needs root, the lab's tools, `sh` and `/dev/net/tun`; fails loudly
//! without them. Every wait has a deadline.

use std::path::PathBuf;
use std::time::Duration;

use ferrovpn_testkit::lab::{UP, log_tails, wait_log};
use ferrovpn_testkit::mgmt::{Management, REPLY_TIMEOUT, unix_management_conf};
use ferrovpn_testkit::{ClientConf, Implementation, Lab, ServerConf, sh_script, wait_until};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const TIMEOUT: Duration = Duration::from_secs(30);
const IMPLEMENTATIONS: [Implementation; 2] = [Implementation::Stock, Implementation::Ferrovpn];

/// The login scripts of one run and the file they append to.
struct Scripts {
    verify: PathBuf,
    connect: PathBuf,
    record: PathBuf,
}

/// `verify` records the user name, the common name and the via-file's two
/// lines, then exits `status`; `connect` records whether `common_name` and
/// `username` are set at all. Named after `imp` so that runs do not mix.
fn scripts(lab: &Lab, imp: Implementation, status: u8) -> Scripts {
    let record = lab.dir.join(format!("{}-{status}-record.txt", imp.name()));
    let write = |name: &str, body: String| {
        let path = lab.dir.join(format!("{}-{status}-{name}.sh", imp.name()));
        sh_script(path, &format!("{body}\n"))
    };
    let verify = write(
        "verify",
        format!(
            "echo \"verify user=[${{username-unset}}] cn=[$common_name] file=[$(sed -n 1p \"$1\")|$(sed -n 2p \"$1\")] lines=$(wc -l < \"$1\")\" >> '{r}'\nexit {status}",
            r = record.display()
        ),
    );
    let connect = write(
        "connect",
        format!(
            "echo \"connect cn=[${{common_name-unset}}] user=[${{username-unset}}]\" >> '{}'",
            record.display()
        ),
    );
    Scripts {
        verify,
        connect,
        record,
    }
}

fn record(s: &Scripts) -> String {
    std::fs::read_to_string(&s.record).unwrap_or_default()
}

/// The lab's tls-crypt profile: the server checks logins with `s`'s
/// scripts (plus `extra`), the client has its certificate and no login.
fn confs(lab: &Lab, s: &Scripts, extra: &[&str]) -> (ServerConf, ClientConf) {
    let (mut sc, cc) = lab.tls_crypt_confs();
    sc.extra.extend([
        "script-security 2".to_string(),
        format!("auth-user-pass-verify {} via-file", s.verify.display()),
        format!("client-connect {}", s.connect.display()),
    ]);
    sc.extra.extend(extra.iter().map(|l| l.to_string()));
    (sc, cc)
}

/// With `auth-user-pass-optional` the script decides about a client
/// without a login, seeing what 2.6 shows it; ferrovpn's record equals
/// stock's. Accepting lets the client in; refusing is AUTH_FAILED.
#[test]
fn empty_login_is_checked_as_stock_checks_it() {
    let lab = Lab::new("aupo-ok", 1, FERROVPN);
    let mut records = Vec::new();
    for imp in IMPLEMENTATIONS {
        let s = scripts(&lab, imp, 0);
        let (sc, cc) = confs(
            &lab,
            &s,
            &["auth-user-pass-optional", "username-as-common-name"],
        );
        let server = lab.server(imp, &sc);
        let client = lab.client_up(Implementation::Stock, 0, "client", &cc, &server);
        lab.ping_server(0, &client, &server);
        let both = wait_until(TIMEOUT, Duration::from_millis(50), || {
            record(&s).lines().count() >= 2
        });
        assert!(
            both,
            "{}: {}\n{}",
            imp.name(),
            record(&s),
            log_tails(&client, &server)
        );
        eprintln!("{}: {}", imp.name(), record(&s));
        records.push(record(&s));
    }
    assert_eq!(
        records[1], records[0],
        "ferrovpn's scripts saw otherwise than stock's"
    );
    // What 2.6 shows: an empty user name and file, the certificate's
    // common name while checking, then none at all.
    assert_eq!(
        records[0],
        "verify user=[] cn=[client1] file=[|] lines=2\nconnect cn=[unset] user=[]\n"
    );

    for imp in IMPLEMENTATIONS {
        let s = scripts(&lab, imp, 1);
        let (sc, cc) = confs(&lab, &s, &["auth-user-pass-optional"]);
        let server = lab.server(imp, &sc);
        let mut client = lab.client(Implementation::Stock, 0, "refused", &cc);
        wait_log(&mut client, "AUTH_FAILED", &server);
        assert!(
            !client.log().contains(UP),
            "{}",
            log_tails(&client, &server)
        );
        assert_eq!(
            record(&s),
            "verify user=[] cn=[client1] file=[|] lines=2\n",
            "{}",
            imp.name()
        );
    }
}

/// Without the option, a client without a login ends in a TLS error on
/// the server: nothing is checked, nothing is said to the client, which
/// gives up after its hand-window, as with stock 2.6.
#[test]
fn without_the_option_an_empty_login_is_dropped_silently() {
    let lab = Lab::new("aupo-no", 1, FERROVPN);
    for imp in IMPLEMENTATIONS {
        let s = scripts(&lab, imp, 0);
        let (sc, mut cc) = confs(&lab, &s, &[]);
        cc.extra.push("hand-window 5".into());
        let mut server = lab.server(imp, &sc);
        let mut client = lab.client(Implementation::Stock, 0, "no-login", &cc);
        wait_log(
            &mut server,
            "Auth Username/Password was not provided by peer",
            &client,
        );
        wait_log(
            &mut client,
            "TLS key negotiation failed to occur within 5 seconds",
            &server,
        );
        let log = client.log();
        assert!(
            !log.contains("AUTH_FAILED") && !log.contains(UP),
            "{}: {}",
            imp.name(),
            log_tails(&client, &server)
        );
        assert_eq!(record(&s), "", "{}: a script ran", imp.name());
    }
}

/// `management-client-auth` with the option: a client without a login is
/// announced with an empty `username` and let in by `client-auth`.
#[test]
fn management_client_auth_admits_a_client_without_login() {
    let lab = Lab::new("aupo-mg", 1, FERROVPN);
    for imp in IMPLEMENTATIONS {
        let (mut sc, wrap, sock) = unix_management_conf(&lab, "");
        sc.extra.extend([
            "management-client-auth".to_string(),
            "auth-user-pass-optional".to_string(),
        ]);
        let server = lab.server(imp, &sc);
        let mut m = Management::connect_when_listening(&sock, REPLY_TIMEOUT);
        let cc = lab.client_conf(
            0,
            &lab.pki.clients[0],
            "fvtun-c",
            wrap,
            ferrovpn_testkit::Cipher::Aes256Gcm,
        );
        let mut client = lab.client(Implementation::Stock, 0, "cert-only", &cc);
        let connect = m.client_event("CONNECT");
        for (k, v) in [("username", ""), ("common_name", "client1")] {
            assert_eq!(
                connect.env.get(k).map(String::as_str),
                Some(v),
                "{}: {k} in {:?}",
                imp.name(),
                connect.env
            );
        }
        assert_eq!(
            m.one(&format!("client-auth-nt {} {}", connect.cid, connect.kid)),
            "SUCCESS: client-auth command succeeded",
            "{}",
            imp.name()
        );
        wait_log(&mut client, UP, &server);
        lab.ping_server(0, &client, &server);
        std::fs::remove_file(&sock).ok();
    }
}

/// `s`'s record with `auth-gen-token` tokens (`SESS_ID_...`) cut: they
/// differ from run to run.
fn record_without_tokens(s: &Scripts) -> String {
    record(s)
        .lines()
        .map(|l| match l.find("SESS_ID_") {
            Some(at) => {
                let rest = &l[at..];
                let end = rest.find(['|', ']']).unwrap_or(rest.len());
                format!("{}SESS_ID_*{}\n", &l[..at], &rest[end..])
            }
            None => format!("{l}\n"),
        })
        .collect()
}

/// `auth-gen-token` for a client that sent no login (2.6's
/// `generate_auth_token` with the empty user name): the client gets a
/// token in its push reply; a stock client without `auth-user-pass` does
/// not use it and sends an empty login again at the server's
/// renegotiation, which the script checks again. ferrovpn's record (and
/// token, and no AUTH_FAILED) equals stock's, and the tunnel works after
/// the renegotiation.
#[test]
fn empty_login_gets_a_token_and_renegotiates_with_it_as_stock() {
    let lab = Lab::new("aupo-tok", 1, FERROVPN);
    let mut seen = Vec::new();
    for imp in IMPLEMENTATIONS {
        let s = scripts(&lab, imp, 0);
        let (mut sc, cc) = confs(
            &lab,
            &s,
            &["auth-user-pass-optional", "auth-gen-token 0 130"],
        );
        sc.reneg_sec = Some(5);
        let server = lab.server(imp, &sc);
        let client = lab.client_up(Implementation::Stock, 0, "tokened", &cc, &server);
        // The client logs each TLS handshake's control channel: the
        // second is the server's renegotiation.
        let renegotiated = ferrovpn_testkit::lab::wait_for_count(
            &client,
            "Control Channel: TLS",
            2,
            Duration::from_secs(20),
        );
        assert!(
            renegotiated,
            "{}: {}",
            imp.name(),
            log_tails(&client, &server)
        );
        lab.ping_server(0, &client, &server);
        let log = client.log();
        let got_token = log
            .lines()
            .any(|l| l.contains("PUSH_REPLY") && l.contains("auth-token"));
        let failed = log.contains("AUTH_FAILED");
        let r = record_without_tokens(&s);
        eprintln!(
            "{}: token {got_token}, AUTH_FAILED {failed}\n{r}",
            imp.name()
        );
        seen.push((got_token, failed, r));
    }
    assert_eq!(
        seen[1], seen[0],
        "ferrovpn differs from stock (stock first)"
    );
}
