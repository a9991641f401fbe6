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
    std::fs::write(&conf, "port 1194\nsecret static.key\n").unwrap();
    let out = ferrovpn(&["--config", conf.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2:", conf.display())) && err.contains("secret"),
        "{err}"
    );
}

#[test]
fn bad_value_on_command_line_is_reported() {
    let out = ferrovpn(&["--port", "notaport"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("port"), "{err}");
}

#[test]
fn missing_key_material_is_a_clear_error() {
    let dir = TestDir::new("cli-nokey").unwrap();
    let conf = dir.join("server.conf");
    std::fs::write(&conf, "server 10.8.0.0 255.255.255.0\ndev tun\n").unwrap();
    let out = ferrovpn(&["--config", conf.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'ca'") || err.contains("ca"), "{err}");
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

#[test]
fn check_lists_every_problem_without_touching_anything() {
    use ferrovpn::pki::{Pki, PkiOptions};
    let dir = TestDir::new("cli-check").unwrap();
    let pki = Pki::generate(&dir.join("pki"), &PkiOptions::default()).unwrap();
    let status = dir.join("status.log");
    let base = format!(
        "server 10.8.0.0 255.255.255.0\ndev tun\nca {}\ncert {}\nkey {}\ndh none\n",
        pki.ca.cert.display(),
        pki.server.cert.display(),
        pki.server.key.display()
    );
    let good = dir.join("good.conf");
    std::fs::write(&good, format!("{base}status {}\n", status.display())).unwrap();
    let out = ferrovpn(&["--check", "--config", good.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK (server)"));
    assert!(!status.exists(), "--check must not write the status file");

    // Every line error at once, each with its file and line.
    let bad = dir.join("bad.conf");
    std::fs::write(&bad, format!("{base}port x\nbogus 1\ncomp-lzo maybe\n")).unwrap();
    let out = ferrovpn(&["--check", "--config", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for line in [7, 8, 9] {
        assert!(err.contains(&format!("{}:{line}:", bad.display())), "{err}");
    }

    // What only loading shows: unreadable key material, an unwritable file.
    let late = dir.join("late.conf");
    std::fs::write(&late, format!("{base}status /nonexistent-dir/status.log\n")).unwrap();
    let out = ferrovpn(&["--check", late.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent-dir/status.log"), "{err}");
}
