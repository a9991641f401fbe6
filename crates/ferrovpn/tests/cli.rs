//! The binary's command line without network access: config errors name
//! file and line, `--genkey` writes a key OpenVPN's format, `--help` works.

use std::process::Command;

use ferrovpn_testkit::TestDir;

fn ferrovpn(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ferrovpn"))
        .args(args)
        .output()
        .expect("running ferrovpn")
}

#[test]
fn unsupported_directive_fails_with_file_and_line() {
    let dir = TestDir::new("cli-bad").unwrap();
    let conf = dir.join("bad.conf");
    std::fs::write(&conf, "port 1194\ncomp-lzo yes\n").unwrap();
    let out = ferrovpn(&["--config", conf.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2:", conf.display())) && err.contains("comp-lzo"),
        "{err}"
    );
}

#[test]
fn bad_value_on_command_line_is_reported() {
    let out = ferrovpn(&["--port", "notaport"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        "ferrovpn: <command line>:1: 'port' expects a number 1-65535, got \"notaport\""
    );
}

#[test]
fn missing_key_material_is_a_clear_error() {
    let dir = TestDir::new("cli-nokey").unwrap();
    let conf = dir.join("server.conf");
    std::fs::write(&conf, "server 10.8.0.0 255.255.255.0\ndev tun\n").unwrap();
    let out = ferrovpn(&["--config", conf.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        err.trim_end(),
        format!(
            "ferrovpn: {}: missing 'ca' (file or inline <ca> block)",
            conf.display()
        )
    );
}

#[test]
fn genkey_writes_a_static_key() {
    let dir = TestDir::new("cli-genkey").unwrap();
    let key = dir.join("ta.key");
    let out = ferrovpn(&["--genkey", "secret", key.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&key).unwrap();
    assert!(text.contains("-----BEGIN OpenVPN Static key V1-----"));
    ferrovpn_proto::wrap::StaticKey::parse(&text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "key must not be readable by others");
}

#[test]
fn genkey_replaces_an_existing_file_as_0600_and_never_follows_a_symlink() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TestDir::new("cli-genkey-over").unwrap();
    // An existing, world-readable file is replaced (as openvpn --genkey
    // does) by one only its owner can read.
    let key = dir.join("ta.key");
    std::fs::write(&key, "old\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = ferrovpn(&["--genkey", "secret", key.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let text = std::fs::read_to_string(&key).unwrap();
    ferrovpn_proto::wrap::StaticKey::parse(&text).unwrap();
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    // A symlink is replaced itself; what it pointed at is left alone.
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let link = dir.join("link.key");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let out = ferrovpn(&["--genkey", "secret", link.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(!std::fs::symlink_metadata(&link).unwrap().is_symlink());
    ferrovpn_proto::wrap::StaticKey::parse(&std::fs::read_to_string(&link).unwrap()).unwrap();
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
}

#[test]
fn user_that_does_not_exist_is_refused_with_file_and_line() {
    let dir = TestDir::new("cli-nouser").unwrap();
    let pki = ferrovpn_testkit::pki::Pki::generate(
        &dir.join("pki"),
        &ferrovpn_testkit::pki::PkiOptions::default(),
    )
    .unwrap();
    let conf = dir.join("server.conf");
    std::fs::write(
        &conf,
        format!(
            "server 10.8.0.0 255.255.255.0\ndev tun\nca {}\ncert {}\nkey {}\ndh none\nuser no-such-user-fvpn\n",
            pki.ca.cert.display(),
            pki.server.cert.display(),
            pki.server.key.display()
        ),
    )
    .unwrap();
    let out = ferrovpn(&["--config", conf.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    // The last line: warnings about the config may come before it.
    assert_eq!(
        err.lines().last().unwrap_or_default(),
        format!(
            "ferrovpn: {}:7: 'user': no user named \"no-such-user-fvpn\"",
            conf.display()
        ),
        "{err}"
    );
}

#[test]
fn help_and_version() {
    let out = ferrovpn(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
    let out = ferrovpn(&["--version"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ferrovpn "));
}
