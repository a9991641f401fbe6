//! Keys and certificates as OpenVPN 2.6 accepts them, against Debian's stock
//! OpenVPN 2.6: passphrase-protected keys (`askpass FILE`), `pkcs12` files,
//! and a chain signed by an RSA-1024 CA under the default `tls-cert-profile
//! legacy`. The files are made at test time with the openssl CLI, as
//! easy-rsa makes them. Plus the refusals at start: a wrong passphrase, and
//! an encrypted key with neither `askpass FILE` nor a terminal.
//!
//! Needs root, `openvpn`, `openssl`, `setsid`, `iperf3`, `ip`, `ping` and
//! `/dev/net/tun`; every test fails loudly without them. Every wait has a
//! deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferrovpn_testkit::lab::{CONNECT_TIMEOUT, SERVER_TUN, UP, wait_exit};
use ferrovpn_testkit::pki::{KeyEncryption, Pki, PkiOptions, export_pkcs12, rsa1024_pki};
use ferrovpn_testkit::{Implementation, Lab, Material, Proc, openvpn_client_conf, ping};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const PASSPHRASE: &str = "correct horse battery";

/// A file whose first line is `pass` (what `askpass FILE` reads).
fn askpass_file(dir: &Path, name: &str, pass: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("{pass}\nthis second line is not read\n")).unwrap();
    p
}

fn ping_through(lab: &Lab, what: &str) {
    let p = ping(&lab.clients[0], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{what}: {p:?}");
}

// ---------------------------------------------------------------------------
// Encrypted keys
// ---------------------------------------------------------------------------

/// easy-rsa's default: a PKCS#8 key encrypted with PBES2 / AES-256-CBC,
/// opened with `askpass FILE`; the stock server sees the right client.
#[test]
fn client_encrypted_pkcs8_key_askpass_stock_server() {
    let lab = Lab::new("keys-c8", 1, FERROVPN);
    let (sc, mut cc) = lab.tls_crypt_confs();
    let enc = lab
        .pki
        .encrypted_key(
            &lab.pki.clients[0],
            "client1-enc.key",
            PASSPHRASE,
            KeyEncryption::Pkcs8Aes256,
        )
        .unwrap();
    assert!(
        std::fs::read_to_string(&enc)
            .unwrap()
            .contains("BEGIN ENCRYPTED PRIVATE KEY")
    );
    cc.key = Material::File(enc);
    let pass = askpass_file(lab.dir.path(), "client.pass", PASSPHRASE);
    cc.extra.push(format!("askpass {}", pass.display()));
    let server = lab.stock_server(&sc);
    let mut client = lab.ferrovpn_client(0, "ferrovpn-client", &cc);
    client.wait_for_log_line(UP, CONNECT_TIMEOUT).unwrap();
    assert!(
        server.log().contains("client1/") || server.log().contains("[client1]"),
        "{}",
        server.log_tail(20)
    );
    ping_through(&lab, "ferrovpn client with an encrypted PKCS#8 key");
}

/// A ferrovpn server whose key is in the traditional OpenSSL format
/// (`Proc-Type: 4,ENCRYPTED`, DES-EDE3-CBC), inline, with `askpass FILE`;
/// a stock client connects.
#[test]
fn server_encrypted_traditional_key_stock_client() {
    let lab = Lab::new("keys-s", 1, FERROVPN);
    let (mut sc, cc) = lab.tls_crypt_confs();
    let enc = lab
        .pki
        .encrypted_key(
            &lab.pki.server,
            "server-enc.key",
            PASSPHRASE,
            KeyEncryption::TraditionalDes3,
        )
        .unwrap();
    let text = std::fs::read_to_string(&enc).unwrap();
    assert!(
        text.contains("Proc-Type: 4,ENCRYPTED") && text.contains("DES-EDE3-CBC"),
        "{text}"
    );
    sc.key = Material::Inline(text);
    let pass = askpass_file(lab.dir.path(), "server.pass", PASSPHRASE);
    sc.extra.push(format!("askpass {}", pass.display()));
    let server = lab.ferrovpn_server(&sc);
    let mut client = lab.stock_client(0, "stock-client", &cc);
    client.wait_for_log_line(UP, CONNECT_TIMEOUT).unwrap();
    ping_through(
        &lab,
        "stock client to a ferrovpn server with an encrypted key",
    );
    assert!(!server.log().contains("ERROR"), "{}", server.log_tail(20));
}

// ---------------------------------------------------------------------------
// PKCS#12
// ---------------------------------------------------------------------------

/// The client config of `cc` with `pkcs12 ...` (and `askpass`) in place of
/// its `cert`/`key` (and `ca` unless `keep_ca`).
fn pkcs12_client_text(cc: &ferrovpn_testkit::ClientConf, p12_lines: &str, keep_ca: bool) -> String {
    let text: String = openvpn_client_conf(cc)
        .lines()
        .filter(|l| {
            !(l.starts_with("cert ") || l.starts_with("key ") || (!keep_ca && l.starts_with("ca ")))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    format!("{text}{p12_lines}\n")
}

/// A ferrovpn client in namespace 0 from `text`: up, a ping through, stopped.
fn up_ping_stop(lab: &Lab, name: &str, text: &str, what: &str) {
    let mut client = lab.spawn(&lab.clients[0], name, Implementation::Ferrovpn, text);
    client.wait_for_log_line(UP, CONNECT_TIMEOUT).unwrap();
    ping_through(lab, what);
    client.stop(Duration::from_secs(5));
}

/// `pkcs12 FILE` as OpenSSL 3 writes it by default (PBES2 AES-256, SHA-256
/// MAC), its CA the trust anchor; then a legacy (RC2/3DES, SHA-1 MAC) file
/// inline, with `ca` given alongside as 2.6 allows.
#[test]
fn client_pkcs12_stock_server() {
    let lab = Lab::new("keys-p12", 1, FERROVPN);
    let (sc, cc) = lab.tls_crypt_confs();
    let who = &lab.pki.clients[0];
    let p12 = lab.dir.path().join("client1.p12");
    export_pkcs12(who, Some(&lab.pki.ca.cert), &p12, PASSPHRASE, false).unwrap();
    let pass = askpass_file(lab.dir.path(), "p12.pass", PASSPHRASE);
    let server = lab.stock_server(&sc);

    let text = pkcs12_client_text(
        &cc,
        &format!("pkcs12 {}\naskpass {}", p12.display(), pass.display()),
        false,
    );
    up_ping_stop(
        &lab,
        "ferrovpn-p12",
        &text,
        "ferrovpn client with pkcs12 (OpenSSL 3 default)",
    );

    // Legacy file, no password (2.6 tries the empty one first: no askpass
    // needed), inline as base64, `ca` alongside.
    let legacy = lab.dir.path().join("client1-legacy.p12");
    export_pkcs12(who, Some(&lab.pki.ca.cert), &legacy, "", true).unwrap();
    let b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(std::fs::read(&legacy).unwrap())
    };
    let text = pkcs12_client_text(&cc, &format!("<pkcs12>\n{b64}\n</pkcs12>"), true);
    up_ping_stop(
        &lab,
        "ferrovpn-p12-legacy",
        &text,
        "ferrovpn client with an inline legacy pkcs12",
    );
    drop(server);
}

// ---------------------------------------------------------------------------
// Refusals at start (no network needed)
// ---------------------------------------------------------------------------

fn temp_pki(tag: &str) -> Pki {
    let dir = std::env::temp_dir().join(format!("fvpn-keys-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Pki::generate(&dir, &PkiOptions::default()).unwrap()
}

/// Run `ferrovpn ARGS` without a controlling terminal (`setsid`), stdin
/// closed; whether it succeeded, and its output. Bounded by a deadline.
fn run_detached(dir: &Path, args: &[&str]) -> (bool, String) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let setsid = ferrovpn_testkit::find_tool("setsid").expect("setsid (util-linux) is required");
    let mut cmd = Command::new(setsid);
    cmd.arg("--wait").arg(FERROVPN).args(args);
    let name = format!(
        "run-{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut p = Proc::spawn(&name, dir, cmd).unwrap();
    let status = wait_exit(&mut p, Duration::from_secs(20));
    (status.success(), p.log())
}

fn client_text(pki: &Pki, key: &Path, extra: &str) -> String {
    format!(
        "client\ndev tun\nremote 192.0.2.1\nca {}\ncert {}\nkey {}\n{extra}\n",
        pki.ca.cert.display(),
        pki.clients[0].cert.display(),
        key.display()
    )
}

/// A wrong passphrase stops the start (and `--check`) with the key file
/// named and the reason in words; without `askpass FILE` and without a
/// terminal, the error says how to give the passphrase; with the right one
/// `--check` passes without asking anything.
#[test]
fn encrypted_key_refusals_at_start_name_the_file() {
    let pki = temp_pki("refuse");
    let enc = pki
        .encrypted_key(
            &pki.clients[0],
            "client1-enc.key",
            PASSPHRASE,
            KeyEncryption::Pkcs8Aes256,
        )
        .unwrap();
    let wrong = askpass_file(&pki.dir, "wrong.pass", "not the passphrase");
    let right = askpass_file(&pki.dir, "right.pass", PASSPHRASE);
    let conf = pki.dir.join("client.conf");
    let enc_name = enc.display().to_string();

    // Wrong passphrase: a real start and --check both refuse.
    std::fs::write(
        &conf,
        client_text(&pki, &enc, &format!("askpass {}", wrong.display())),
    )
    .unwrap();
    for args in [
        &["--config", conf.to_str().unwrap()][..],
        &["--check", "--config", conf.to_str().unwrap()][..],
    ] {
        let (ok, out) = run_detached(&pki.dir, args);
        assert!(!ok, "{args:?} accepted a wrong passphrase:\n{out}");
        assert!(
            out.contains(&enc_name) && out.contains("passphrase is wrong"),
            "{args:?}:\n{out}"
        );
    }

    // No askpass, no terminal: a clear error, not a hang.
    std::fs::write(&conf, client_text(&pki, &enc, "")).unwrap();
    let (ok, out) = run_detached(&pki.dir, &["--check", "--config", conf.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&enc_name) && out.contains("no terminal") && out.contains("askpass FILE"),
        "{out}"
    );

    // The right passphrase: --check passes, nothing asked.
    std::fs::write(
        &conf,
        client_text(&pki, &enc, &format!("askpass {}", right.display())),
    )
    .unwrap();
    let (ok, out) = run_detached(&pki.dir, &["--check", "--config", conf.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(!out.contains("Enter Private Key Password"), "{out}");

    // A PKCS#12 file with a wrong password names the file too.
    let p12 = pki.dir.join("client1.p12");
    export_pkcs12(&pki.clients[0], Some(&pki.ca.cert), &p12, PASSPHRASE, false).unwrap();
    std::fs::write(
        &conf,
        format!(
            "client\ndev tun\nremote 192.0.2.1\npkcs12 {}\naskpass {}\n",
            p12.display(),
            wrong.display()
        ),
    )
    .unwrap();
    let (ok, out) = run_detached(&pki.dir, &["--check", "--config", conf.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&p12.display().to_string()) && out.contains("password is wrong"),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&pki.dir);
}

// ---------------------------------------------------------------------------
// RSA-1024 CA
// ---------------------------------------------------------------------------

/// A stock server whose chain is signed by an RSA-1024 CA: a ferrovpn client
/// connects under the default `tls-cert-profile legacy` (as 2.6 does) and
/// refuses it under `tls-cert-profile preferred`.
#[test]
fn rsa1024_ca_chain_legacy_profile_accepts_preferred_refuses() {
    let lab = Lab::new("keys-1024", 1, FERROVPN);
    let old = rsa1024_pki(&lab.dir.path().join("pki1024")).unwrap();
    let (mut sc, mut cc) = lab.tls_crypt_confs();
    sc.ca = Material::File(old.ca.clone());
    sc.cert = Material::File(old.server.cert.clone());
    sc.key = Material::File(old.server.key.clone());
    cc.ca = Material::File(old.ca.clone());
    cc.cert = Material::File(old.client.cert.clone());
    cc.key = Material::File(old.client.key.clone());
    let server = lab.stock_server(&sc);
    let mut client = lab.ferrovpn_client(0, "ferrovpn-legacy", &cc);
    client.wait_for_log_line(UP, CONNECT_TIMEOUT).unwrap();
    ping_through(&lab, "RSA-1024 CA chain under tls-cert-profile legacy");
    client.stop(Duration::from_secs(5));

    cc.extra.push("tls-cert-profile preferred".into());
    let mut client = lab.ferrovpn_client(0, "ferrovpn-preferred", &cc);
    client
        .wait_for_log_line("connection ended", CONNECT_TIMEOUT)
        .unwrap();
    let log = client.log();
    eprintln!(
        "tls-cert-profile preferred: {}",
        log.lines()
            .find(|l| l.contains("connection ended"))
            .unwrap_or_default()
    );
    assert!(!log.contains(UP), "{log}");
    assert!(
        log.contains("server certificate not trusted by ca"),
        "{log}"
    );
    client.stop(Duration::from_secs(5));
    drop(server);
}
