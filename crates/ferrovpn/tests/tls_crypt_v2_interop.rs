//! tls-crypt-v2 against Debian's stock OpenVPN 2.6, both roles: a stock
//! client with stock-made keys on a ferrovpn server, a ferrovpn client
//! with ferrovpn-made keys (`ferrovpn --genkey`) on a stock server, and a
//! client whose key another server key wrapped, refused by a ferrovpn
//! server without any session or answer. Runs in the testkit's lab.
//!
//! Needs root, `openvpn`, `iperf3`, `ip`, `ping`, `ss` and `/dev/net/tun`;
//! every test fails loudly without them. Every wait has a deadline.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ferrovpn_testkit::lab::{Implementation, Lab, UP, log_tails, wait_log};
use ferrovpn_testkit::pki::{
    stock_tls_crypt_v2_client_key, stock_tls_crypt_v2_server_key, write_tls_crypt_v2_client_key,
    write_tls_crypt_v2_server_key,
};
use ferrovpn_testkit::{Cipher, ClientConf, Material, ServerConf, Wrap, wait_until};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

/// Server config with `server_key`, client config (namespace 0) with `client_key`.
fn confs(lab: &Lab, server_key: &Path, client_key: &Path) -> (ServerConf, ClientConf) {
    let (sc, mut cc) = lab.confs(
        Wrap::TlsCryptV2(Material::File(server_key.to_owned())),
        Cipher::Aes256Gcm,
    );
    cc.wrap = Wrap::TlsCryptV2(Material::File(client_key.to_owned()));
    (sc, cc)
}

fn key_paths(lab: &Lab) -> (PathBuf, PathBuf) {
    (lab.dir.join("v2-server.key"), lab.dir.join("v2-client.key"))
}

/// `ferrovpn` run to completion with `args`.
fn ferrovpn(args: &[&str]) {
    let out = Command::new(FERROVPN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ferrovpn {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn stock_client_with_stock_keys_on_ferrovpn_server() {
    let lab = Lab::new("tcv2-fs", 1, FERROVPN);
    let (server_key, client_key) = key_paths(&lab);
    stock_tls_crypt_v2_server_key(&server_key).unwrap();
    stock_tls_crypt_v2_client_key(&server_key, &client_key).unwrap();
    let (mut sc, cc) = confs(&lab, &server_key, &client_key);
    // The server reads its key inline, the client from its file.
    sc.wrap = Wrap::TlsCryptV2(Material::inline_from(&server_key).unwrap());
    let server = lab.ferrovpn_server(&sc);
    let client = lab.stock_client_up(0, "openvpn-client", &cc, &server);
    // The session was made from the client's resent key (CONTROL_WKC_V1).
    assert!(
        server
            .log()
            .contains("new session (tls-crypt-v2 client key)"),
        "{}",
        log_tails(&client, &server)
    );
    lab.ping_and_iperf3(0, "stock client -> ferrovpn server", &client, &server);
}

#[test]
fn ferrovpn_client_with_ferrovpn_keys_on_stock_server() {
    let lab = Lab::new("tcv2-fc", 1, FERROVPN);
    let (server_key, client_key) = key_paths(&lab);
    let (server_arg, client_arg) = (server_key.to_str().unwrap(), client_key.to_str().unwrap());
    ferrovpn(&["--genkey", "tls-crypt-v2-server", server_arg]);
    ferrovpn(&[
        "--tls-crypt-v2",
        server_arg,
        "--genkey",
        "tls-crypt-v2-client",
        client_arg,
        "Y2xpZW50MQ==",
    ]);
    let (sc, cc) = confs(&lab, &server_key, &client_key);
    // The client profile carries everything inline, `<tls-crypt-v2>` too.
    let cc = cc.inline().unwrap();
    let server = lab.stock_server(&sc);
    let client = lab.client_up(Implementation::Ferrovpn, 0, "ferrovpn-client", &cc, &server);
    lab.ping_and_iperf3(0, "ferrovpn client -> stock server", &client, &server);
}

#[test]
fn client_key_of_another_server_key_is_refused_without_a_session() {
    let lab = Lab::new("tcv2-fk", 1, FERROVPN);
    let (server_key, client_key) = key_paths(&lab);
    let other_key = lab.dir.join("v2-other.key");
    write_tls_crypt_v2_server_key(&server_key).unwrap();
    write_tls_crypt_v2_server_key(&other_key).unwrap();
    write_tls_crypt_v2_client_key(&other_key, &client_key, b"mallory").unwrap();
    let (sc, cc) = confs(&lab, &server_key, &client_key);
    let mut server = lab.ferrovpn_server(&sc);
    let client = lab.stock_client(0, "openvpn-client", &cc);
    let refused = "wrapped client key authentication failed";
    wait_log(&mut server, refused, &client);
    // The client keeps resending its reset (every tls-timeout, 2 s): for
    // two more of them nothing may come of it, on either side.
    let admitted = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        server.log().contains("new session")
            || client.log().contains(UP)
            || client.log().contains("Initial packet from")
    });
    assert!(!admitted, "{}", log_tails(&client, &server));
}
