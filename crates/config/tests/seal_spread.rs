//! `seal-spread` (a ferrovpn extension): accepted on a client over UDP,
//! refused with file, line and reason where the data plane has no ordered
//! hand-off for it.

use ferrovpn_config::*;

const MATERIAL: &str = "<ca>\n-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n</ca>\n<cert>\n-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n</cert>\n<key>\n-----BEGIN PRIVATE KEY-----\nMIIkey\n-----END PRIVATE KEY-----\n</key>\n";

fn err(text: &str) -> String {
    match parse_str_no_fs(text, "t.conf") {
        Ok(c) => panic!("expected an error for:\n{text}\ngot {c:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_client_takes_seal_spread() {
    let c = parse_str_no_fs(
        &format!("client\nremote 192.0.2.1\ndev tun\nseal-spread\n{MATERIAL}"),
        "t.conf",
    )
    .expect("a client config with seal-spread");
    assert!(c.seal_spread);
    let c = parse_str_no_fs(
        &format!("client\nremote 192.0.2.1\ndev tun\n{MATERIAL}"),
        "t.conf",
    )
    .expect("a client config");
    assert!(!c.seal_spread, "off by default");
}

#[test]
fn a_server_or_fragment_refuses_seal_spread_with_its_line() {
    let reason = "unsupported 'seal-spread': 'seal-spread' is supported on a client over UDP without 'fragment' only";
    assert_eq!(
        err(&format!(
            "server 10.8.0.0 255.255.255.0\ndev tun\nseal-spread\n{MATERIAL}"
        )),
        format!("t.conf:3: {reason}")
    );
    assert_eq!(
        err(&format!(
            "client\nremote 192.0.2.1\ndev tun\nfragment 1300\nseal-spread\n{MATERIAL}"
        )),
        format!("t.conf:5: {reason}")
    );
    assert!(
        err(&format!(
            "client\nremote 192.0.2.1\ndev tun\nseal-spread on\n{MATERIAL}"
        ))
        .starts_with("t.conf:4:")
    );
}
