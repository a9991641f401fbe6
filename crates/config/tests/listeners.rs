//! `local HOST|* [PORT] [PROTO]` (OpenVPN 2.7's multi-socket server form)
//! and `port-share HOST PORT [DIR]`.

use std::net::IpAddr;
use std::path::PathBuf;

use ferrovpn_config::*;

const MATERIAL: &str = "<ca>\n-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n</ca>\n<cert>\n-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n</cert>\n<key>\n-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n</key>\n";

fn server(extra: &str) -> Result<Config, ConfigError> {
    parse_str(
        &format!("server 10.8.0.0 255.255.255.0\ndev tun\n{MATERIAL}{extra}"),
        "s.conf",
    )
}

fn client(extra: &str) -> Result<Config, ConfigError> {
    parse_str(
        &format!("client\ndev tun\nremote 192.0.2.1\n{MATERIAL}{extra}"),
        "c.conf",
    )
}

#[test]
fn a_server_keeps_every_local_line() {
    let c = server("local * 1194 udp\nlocal 192.0.2.7 443 tcp\nlocal ::1\n").unwrap();
    let tcp = Proto::Tcp {
        family: Family::Any,
        role: None,
    };
    assert_eq!(
        c.locals,
        vec![
            LocalEntry {
                addr: None,
                port: Some(1194),
                proto: Some(Proto::Udp),
                name: None,
            },
            LocalEntry {
                addr: Some("192.0.2.7".parse().unwrap()),
                port: Some(443),
                proto: Some(tcp),
                name: None,
            },
            LocalEntry {
                addr: Some("::1".parse().unwrap()),
                port: None,
                proto: None,
                name: None,
            },
        ]
    );
    // `local` alone is the last line's address, as 2.6 keeps it.
    assert_eq!(c.local, Some("::1".parse::<IpAddr>().unwrap()));
}

#[test]
fn a_local_line_in_2_7_form_may_name_a_host() {
    let c = server("local vpn.example.com 443 tcp\n").unwrap();
    assert_eq!(c.locals.len(), 1);
    assert_eq!(c.locals[0].name.as_deref(), Some("vpn.example.com"));
    assert_eq!(c.locals[0].addr, None);
    assert_eq!(c.locals[0].port, Some(443));
}

#[test]
fn bad_local_lines_are_refused_with_their_line() {
    for (bad, line) in [
        ("local \"my host\"\n", 18),
        ("local * 70000\n", 18),
        ("local * 443 sctp\n", 18),
        ("local * 443 tcp extra\n", 18),
    ] {
        let e = server(bad).unwrap_err();
        assert_eq!(e.line, line, "{bad}: {e}");
    }
}

#[test]
fn a_client_takes_one_local_address_only() {
    assert!(client("local 192.0.2.9\n").is_ok());
    let e = client("local 192.0.2.9\nlocal 192.0.2.10\n").unwrap_err();
    assert!(e.to_string().contains("multiple --local"), "{e}");
    let e = client("local 192.0.2.9 5000\n").unwrap_err();
    assert!(e.to_string().contains("lport"), "{e}");
}

#[test]
fn port_share_is_kept_and_refused_in_a_client() {
    let c = server("proto tcp\nport-share 127.0.0.1 8443 /run/ps\n").unwrap();
    assert_eq!(
        c.port_share,
        Some(PortShareConf {
            host: "127.0.0.1".parse().unwrap(),
            port: 8443,
            journal_dir: Some(PathBuf::from("/run/ps")),
            host_name: None,
        })
    );
    // A host name is kept, to be resolved at start (as 2.6 does).
    let c = server("proto tcp\nport-share web.example 443\n").unwrap();
    let p = c.port_share.unwrap();
    assert_eq!(p.host_name.as_deref(), Some("web.example"));
    assert!(server("port-share \"bad name\" 443\n").is_err());
    assert!(server("port-share 127.0.0.1\n").is_err());
    let e = client("port-share 127.0.0.1 443\n").unwrap_err();
    assert!(e.to_string().contains("TCP server mode"), "{e}");
}
