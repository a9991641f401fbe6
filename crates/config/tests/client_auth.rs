//! `auth-user-pass`, `auth-nocache`, `auth-retry`, `static-challenge`.

use ferrovpn_config::*;

const CA: &str = "<ca>\n-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n</ca>\n";

fn client(extra: &str) -> Result<Config, ConfigError> {
    parse_str(
        &format!("client\ndev tun\nremote vpn.example.com 1194\n{CA}{extra}"),
        "t.ovpn",
    )
}

#[test]
fn inline_credentials_need_no_certificate() {
    let c = client("<auth-user-pass>\nalice\ns3cret pass\n</auth-user-pass>\n").unwrap();
    let a = c.auth_user_pass.unwrap();
    assert_eq!(a.source, Some(MaterialSource::Inline));
    assert_eq!(a.username.as_deref(), Some("alice"));
    assert_eq!(a.password.as_deref(), Some("s3cret pass"));
    assert!(!format!("{a:?}").contains("s3cret"));
}

#[test]
fn file_with_only_a_user_name_and_bare_directive() {
    let dir = std::env::temp_dir().join(format!("ferrovpn-aup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("up.txt");
    std::fs::write(&f, "bob\r\n").unwrap();
    let c = client(&format!("auth-user-pass {}\nauth-nocache\n", f.display())).unwrap();
    let a = c.auth_user_pass.unwrap();
    assert_eq!(a.username.as_deref(), Some("bob"));
    assert_eq!(a.password, None);
    assert!(c.auth_nocache);
    let c = client("auth-user-pass\n").unwrap();
    assert_eq!(c.auth_user_pass.unwrap().source, None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_auth_lines_are_refused_with_their_line() {
    let e = client("<auth-user-pass>\n\nx\n</auth-user-pass>\n").unwrap_err();
    assert!(e.to_string().contains("user name"), "{e}");
    let e = client("auth-retry sometimes\n").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("t.ovpn:") && msg.contains("nointeract"), "{e}");
    let e = client("static-challenge \"PIN\" 2\n").unwrap_err();
    assert!(e.to_string().contains("0 or 1"), "{e}");
    // Without auth-user-pass a client still needs a certificate.
    let e = client("").unwrap_err();
    assert!(e.to_string().contains("missing 'cert' and 'key'"), "{e}");
}

#[test]
fn retry_and_challenge() {
    let c =
        client("auth-user-pass\nauth-retry interact\nstatic-challenge \"Enter PIN\" 1\n").unwrap();
    assert_eq!(c.auth_retry, Some(AuthRetry::Interact));
    assert_eq!(
        c.static_challenge,
        Some(StaticChallenge {
            text: "Enter PIN".into(),
            echo: true
        })
    );
}

#[test]
fn servers_refuse_auth_user_pass() {
    let e = parse_str(
        &format!(
            "server 10.8.0.0 255.255.255.0\ndev tun\n{CA}<cert>\n-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n</cert>\n<key>\n-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n</key>\nauth-user-pass\n"
        ),
        "s.conf",
    )
    .unwrap_err();
    assert!(e.to_string().contains("requires 'pull'"), "{e}");
}

fn server(extra: &str) -> Result<Config, ConfigError> {
    parse_str(
        &format!(
            "server 10.8.0.0 255.255.255.0\ndev tun\n{CA}<cert>\n-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n</cert>\n<key>\n-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n</key>\n{extra}"
        ),
        "s.conf",
    )
}

/// As 2.6's options_postprocess_verify_ce: a server option, and only with
/// something that checks logins (script, plugin or management).
#[test]
fn auth_user_pass_optional_needs_a_login_check_and_a_server() {
    let e = server("auth-user-pass-optional\n").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("s.conf:")
            && msg.contains("--auth-user-pass-optional must be used with --management-client-auth, an --auth-user-pass-verify script, or plugin"),
        "{e}"
    );
    for checker in [
        "auth-user-pass-verify /bin/true via-env",
        "plugin /usr/lib/x.so",
        "management 127.0.0.1 7505\nmanagement-client-auth",
    ] {
        let c = server(&format!("auth-user-pass-optional\n{checker}\n")).unwrap();
        assert!(c.auth_user_pass_optional, "{checker}");
    }
    assert!(!server("").unwrap().auth_user_pass_optional);
    let e = client("auth-user-pass\nauth-user-pass-optional\n").unwrap_err();
    assert!(e.to_string().contains("is a server directive"), "{e}");
    let e = server("auth-user-pass-optional extra\nauth-user-pass-verify /bin/true via-env\n")
        .unwrap_err();
    assert!(e.to_string().contains("s.conf:"), "{e}");
}
