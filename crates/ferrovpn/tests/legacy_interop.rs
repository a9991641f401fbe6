//! Legacy data channels between ferrovpn and Debian's stock OpenVPN 2.6, in
//! both roles: the CBC ciphers with an `auth` HMAC (`data-ciphers
//! AES-256-CBC` + `auth SHA256`; old profiles' `cipher AES-128-CBC` + `auth
//! SHA1` with tls-auth and `data-ciphers-fallback`). Pings of several sizes
//! from both ends and iperf3 in both directions, so a layout, key-slicing,
//! padding or MSS mistake in either direction shows as loss.
//!
//! Needs root, `openvpn`, `iperf3`, `ip`, `ping`, `ss` and `/dev/net/tun`;
//! every test fails loudly without them. Every wait has a deadline.

use std::time::Duration;

use ferrovpn_testkit::Implementation::{self, Ferrovpn, Stock};
use ferrovpn_testkit::lab::{SERVER_TUN, log_tails};
use ferrovpn_testkit::{ClientConf, Lab, Proc, ServerConf, ping_sized};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const CLIENT_TUN: &str = "10.8.0.2";

/// Pings of several sizes (every CBC padding length is hit by some) from
/// both ends, then 2 s of iperf3 each way (MSS-clamped full-size segments).
fn traffic_both_ways(lab: &Lab, what: &str, client: &Proc, server: &Proc) {
    for size in [1u32, 16, 27, 56, 500, 1200, 1300] {
        ping_sized(&lab.clients[0], SERVER_TUN, 3, size, None)
            .and_then(|()| ping_sized(&lab.server_ns, CLIENT_TUN, 3, size, None))
            .unwrap_or_else(|e| panic!("{what}: {e}\n{}", log_tails(client, server)));
    }
    lab.iperf3_both_ways(what, CLIENT_TUN, client, server);
}

/// The stock end's log must show the CBC cipher and the HMAC digest in use
/// (2.6 logs `Data Channel: cipher 'X', auth 'Y'`, a server maybe a little
/// after its client is up).
fn assert_stock_uses(stock: &mut Proc, other: &Proc, cipher: &str, digest: &str) {
    let line = format!("Data Channel: cipher '{cipher}', auth '{digest}'");
    if let Err(e) = stock.wait_for_log_line(&line, Duration::from_secs(10)) {
        panic!("{e:#}\n{}", log_tails(stock, other));
    }
}

/// tls-crypt configs with `data-ciphers AES-256-CBC` + `auth SHA256` (tunnelbear's shape).
fn aes256_sha256_confs(lab: &Lab) -> (ServerConf, ClientConf) {
    let (mut sc, mut cc) = lab.tls_crypt_confs();
    for extra in [&mut sc.extra, &mut cc.extra] {
        extra.push("data-ciphers AES-256-CBC".into());
        extra.push("data-ciphers-fallback AES-256-CBC".into());
    }
    sc.auth = Some("SHA256".into());
    cc.auth = Some("SHA256".into());
    (sc, cc)
}

/// tls-auth configs with `auth SHA1` (both the tls-auth and the data HMAC),
/// `cipher AES-128-CBC` and `data-ciphers-fallback AES-128-CBC`; the server
/// prefers GCM but the client offers only AES-128-CBC.
fn aes128_sha1_confs(lab: &Lab) -> (ServerConf, ClientConf) {
    let (mut sc, mut cc) = lab.confs(lab.tls_auth(), ferrovpn_testkit::Cipher::Aes256Gcm);
    sc.auth = Some("SHA1".into());
    cc.auth = Some("SHA1".into());
    sc.extra.push("data-ciphers AES-256-GCM:AES-128-CBC".into());
    cc.extra.push("data-ciphers AES-128-CBC".into());
    for extra in [&mut sc.extra, &mut cc.extra] {
        extra.push("cipher AES-128-CBC".into());
        extra.push("data-ciphers-fallback AES-128-CBC".into());
    }
    (sc, cc)
}

fn run(
    tag: &str,
    server_imp: Implementation,
    confs: fn(&Lab) -> (ServerConf, ClientConf),
    cipher: &str,
    digest: &str,
) {
    let lab = Lab::new(tag, 1, FERROVPN);
    let (sc, cc) = confs(&lab);
    let mut server = lab.server(server_imp, &sc);
    let client_imp = if server_imp == Stock { Ferrovpn } else { Stock };
    let mut client = lab.client_up(client_imp, 0, "client", &cc, &server);
    if server_imp == Stock {
        assert_stock_uses(&mut server, &client, cipher, digest);
    } else {
        assert_stock_uses(&mut client, &server, cipher, digest);
    }
    traffic_both_ways(&lab, &format!("{cipher}/{digest}"), &client, &server);
}

#[test]
fn aes256_cbc_sha256_ferrovpn_server_stock_client() {
    run(
        "lg-cbc256s",
        Ferrovpn,
        aes256_sha256_confs,
        "AES-256-CBC",
        "SHA256",
    );
}

#[test]
fn aes256_cbc_sha256_stock_server_ferrovpn_client() {
    run(
        "lg-cbc256c",
        Stock,
        aes256_sha256_confs,
        "AES-256-CBC",
        "SHA256",
    );
}

#[test]
fn aes128_cbc_sha1_tls_auth_ferrovpn_server_stock_client() {
    run(
        "lg-cbc128s",
        Ferrovpn,
        aes128_sha1_confs,
        "AES-128-CBC",
        "SHA1",
    );
}

#[test]
fn aes128_cbc_sha1_tls_auth_stock_server_ferrovpn_client() {
    run(
        "lg-cbc128c",
        Stock,
        aes128_sha1_confs,
        "AES-128-CBC",
        "SHA1",
    );
}
