//! `script-security`, the script directives, `auth-user-pass-verify`,
//! `username-as-common-name`, `auth-gen-token`.

use ferrovpn_config::*;

const MATERIAL: &str = "<ca>\n-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n</ca>\n<cert>\n-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n</cert>\n<key>\n-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n</key>\n";

fn server(extra: &str) -> Result<Config, ConfigError> {
    parse_str(
        &format!("server 10.8.0.0 255.255.255.0\ndev tun\n{MATERIAL}{extra}"),
        "s.conf",
    )
}

#[test]
fn scripts_are_kept_as_written() {
    let c = server(
        "script-security 2\nup \"/etc/up.sh arg\"\ndown /etc/down.sh\ndown-pre\nlearn-address /l\nclient-connect /cc\nclient-disconnect /cd\nroute-up /r\n",
    )
    .unwrap();
    let s = &c.scripts;
    assert_eq!(s.security, Some(2));
    assert_eq!(s.up.as_deref(), Some("/etc/up.sh arg"));
    assert_eq!(s.down.as_deref(), Some("/etc/down.sh"));
    assert!(s.down_pre);
    assert_eq!(s.learn_address.as_deref(), Some("/l"));
    assert_eq!(s.client_connect.as_deref(), Some("/cc"));
    assert_eq!(s.client_disconnect.as_deref(), Some("/cd"));
    assert_eq!(s.route_up.as_deref(), Some("/r"));
}

#[test]
fn bad_script_lines_are_refused_with_their_line() {
    for bad in [
        "script-security 4\n",
        "script-security x\n",
        "up /a b\n",
        "up \"/a 'b\"\n",
        "auth-user-pass-verify /v\n",
        "auth-user-pass-verify /v via-sms\n",
        "auth-gen-token 60 soon\n",
    ] {
        let e = server(bad).unwrap_err();
        assert!(e.to_string().contains("s.conf:"), "{bad}: {e}");
    }
}

#[test]
fn auth_directives() {
    let c = server(
        "auth-user-pass-verify \"/v x\" via-file\nusername-as-common-name\nauth-gen-token 3600 600 external-auth\n",
    )
    .unwrap();
    let v = c.scripts.auth_user_pass_verify.unwrap();
    assert_eq!(v.command, "/v x");
    assert!(v.via_file);
    assert!(c.username_as_common_name);
    let t = c.auth_gen_token.unwrap();
    assert_eq!(
        (t.lifetime, t.renewal, t.external_auth),
        (Some(3600), Some(600), true)
    );
    let t = server("auth-gen-token\n").unwrap().auth_gen_token.unwrap();
    assert_eq!(
        (t.lifetime, t.renewal, t.external_auth),
        (None, None, false)
    );
    let e = server("auth-gen-token-secret\n").unwrap_err();
    assert!(e.to_string().contains("s.conf:"), "{e}");
}

#[test]
fn server_scripts_are_refused_in_client_mode() {
    let e = parse_str(
        &format!("client\ndev tun\nremote vpn.example.com\n{MATERIAL}learn-address /l\n"),
        "c.ovpn",
    )
    .unwrap_err();
    assert!(e.to_string().contains("server directive"), "{e}");
}

#[test]
fn plugin_lines_split_as_2_6() {
    let c = server(
        "plugin openvpn-plugin-auth-pam.so \"login login USERNAME password PASSWORD\"\nplugin /opt/p.so a 'b c'\nplugin ./q.so\n",
    )
    .unwrap();
    let p = &c.scripts.plugins;
    assert_eq!(p.len(), 3);
    assert_eq!(p[0].path, "openvpn-plugin-auth-pam.so");
    // One argument after the path is split like a config line ...
    assert_eq!(
        p[0].args,
        ["login", "login", "USERNAME", "password", "PASSWORD"]
    );
    // ... several are taken as they are.
    assert_eq!(p[1].args, ["a", "b c"]);
    assert!(p[2].args.is_empty());
    assert!(
        server("plugin\n")
            .unwrap_err()
            .to_string()
            .contains("s.conf:1")
    );
    assert!(
        server(&"plugin /p.so\n".repeat(17))
            .unwrap_err()
            .to_string()
            .contains("at most 16 plugins")
    );
}

#[test]
fn verify_client_cert_modes() {
    assert_eq!(
        server("").unwrap().verify_client_cert,
        VerifyClientCert::Require
    );
    for (line, mode) in [
        ("verify-client-cert none", VerifyClientCert::None),
        ("verify-client-cert optional", VerifyClientCert::Optional),
        (
            "verify-client-cert none\nverify-client-cert",
            VerifyClientCert::Require,
        ),
    ] {
        assert_eq!(
            server(&format!("{line}\n")).unwrap().verify_client_cert,
            mode,
            "{line}"
        );
    }
    let e = server("client-cert-not-required\n").unwrap_err();
    assert!(
        e.to_string().contains("use '--verify-client-cert none'"),
        "{e}"
    );
}

#[test]
fn auth_gen_token_timing_is_checked_as_2_6() {
    // 2.6.14: "--auth-gen-token renewal time needs to be at least two times
    // --hand-window (60)" and "--auth-gen-token needs a non-infinite
    // --renegotiate_seconds setting".
    let e = server("auth-gen-token 0 119\n").unwrap_err().to_string();
    assert!(
        e.starts_with("s.conf:") && e.contains("two times 'hand-window' (60 s)"),
        "{e}"
    );
    assert!(server("auth-gen-token 0 120\n").is_ok());
    assert!(server("hand-window 10\nauth-gen-token 0 20\n").is_ok());
    let e = server("auth-gen-token\nreneg-sec 0\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("non-infinite 'reneg-sec'"), "{e}");
}
