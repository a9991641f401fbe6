//! The binary's command line without network access: config errors name
//! file and line, `--genkey` writes a key OpenVPN's format, `--help` works.

use std::process::Command;

use ferrovpn::testing::TestDir;

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
fn help_and_version() {
    let out = ferrovpn(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
    let out = ferrovpn(&["--version"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ferrovpn "));
}
