//! Point-to-point TLS mode (`tls-server` / `tls-client` without `mode
//! server` / `pull`): what ferrovpn accepts, and what it refuses with 2.6's
//! reasons or its own.

use std::net::Ipv4Addr;

use ferrovpn_config::*;

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n";
const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBcert\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIkey\n-----END PRIVATE KEY-----\n";

fn material() -> String {
    format!("<ca>\n{CA}</ca>\n<cert>\n{CERT}</cert>\n<key>\n{KEY}</key>\n")
}

/// The shape of OpenVPN's loopback samples (own text, not the sample).
fn loopback(role: &str) -> String {
    format!(
        "{role}\nremote localhost\nlocal localhost\nlport 16000\nrport 16001\ndev null\nping 1\ninactive 120 10000000\nreneg-sec 10\ncipher AES-256-GCM\n{}",
        material()
    )
}

/// A site-to-site link: tun device, ifconfig, a route via the peer.
fn site(role: &str) -> String {
    format!(
        "{role}\nremote 192.0.2.2\ndev tun\nifconfig 10.9.0.1 10.9.0.2\nroute 10.99.0.0 255.255.0.0\n{}",
        material()
    )
}

fn err(text: &str) -> String {
    match parse_str_no_fs(text, "t.conf") {
        Ok(c) => panic!("expected an error for:\n{text}\ngot {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// `float` in point-to-point mode: the peer's first authenticated packet
/// may come from any address (the runtime follows it), in either TLS role.
#[test]
fn float_is_taken_in_point_to_point_mode() {
    for role in ["tls-server", "tls-client"] {
        let text = format!("float\n{}", site(role));
        let c = parse_str_no_fs(&text, "t.conf").expect("float in p2p mode");
        assert!(c.p2p && c.float, "{role}");
        assert!(c.connection_list().iter().all(|e| e.float), "{role}");
    }
    let c = parse_str_no_fs(&site("tls-server"), "t.conf").unwrap();
    assert!(!c.float && c.connection_list().iter().all(|e| !e.float));
}

/// Without `remote` a point-to-point end waits on its local port for its
/// peer (OpenVPN's `tls-office.conf` sample), in either TLS role, as 2.6:
/// its one connection entry has no host and binds `lport` / `port`.
#[test]
fn an_end_without_remote_waits_for_its_peer() {
    for role in ["tls-server", "tls-client"] {
        let text = format!(
            "lport 1195\n{}",
            site(role).replace("remote 192.0.2.2\n", "")
        );
        let c = parse_str_no_fs(&text, "t.conf").expect("an end without remote");
        assert!(c.p2p, "{role}");
        assert!(c.connection_list().is_empty(), "{role}");
        let entry = c.entry_without_remote();
        assert!(entry.remote.host.is_empty(), "{role}");
        assert_eq!(entry.lport, Some(1195), "{role}");
        assert!(!entry.nobind, "{role}");
    }
    // `float` changes nothing there, and is taken.
    let text = format!(
        "float\n{}",
        site("tls-server").replace("remote 192.0.2.2\n", "")
    );
    assert!(
        parse_str_no_fs(&text, "t.conf")
            .unwrap()
            .entry_without_remote()
            .float
    );
    // A client (`pull`) still needs a server to connect to.
    let text = format!("client\ndev tun\n{}", material());
    assert_eq!(
        err(&text),
        "t.conf: client mode needs at least one 'remote'"
    );
}

#[test]
fn loopback_shape_is_p2p_in_either_tls_role() {
    for role in ["tls-server", "tls-client"] {
        let c = parse_str_no_fs(&loopback(role), "t.conf").expect("loopback shape");
        assert!(c.p2p, "{role}");
        assert!(!c.is_server(), "{role}: the single-peer runtime runs it");
        assert!(c.is_dev_null());
        assert_eq!(c.tls_server, role == "tls-server");
        assert_eq!(c.local_port(), 16000);
        assert_eq!(c.default_remote_port(), 16001);
        assert_eq!(c.ifconfig, None);
        assert_eq!(
            c.inactive,
            Some(Inactive {
                secs: 120,
                min_bytes: 10_000_000
            })
        );
    }
    // `inactive 0` disables it, as 2.6.
    let c = parse_str_no_fs(
        &loopback("tls-client").replace("inactive 120 10000000", "inactive 0"),
        "t.conf",
    )
    .unwrap();
    assert_eq!(c.inactive, None);
}

#[test]
fn ifconfig_in_p2p_mode() {
    let c = parse_str_no_fs(&site("tls-server"), "t.conf").expect("site-to-site");
    assert!(c.p2p);
    assert_eq!(
        c.ifconfig,
        Some(Ifconfig {
            local: Ipv4Addr::new(10, 9, 0, 1),
            remote_or_netmask: Ipv4Addr::new(10, 9, 0, 2),
        })
    );
    // `pull` makes it a client: not point-to-point.
    let c = parse_str_no_fs(
        &format!("client\nremote 192.0.2.2\ndev tun\n{}", material()),
        "t.conf",
    )
    .unwrap();
    assert!(!c.p2p);
}

#[test]
fn refused_combinations_name_line_and_reason() {
    let cases: Vec<(String, &str)> = vec![
        // ifconfig outside p2p mode (ferrovpn: a server's come from `server`,
        // a pulling client's are pushed).
        (
            format!(
                "server 10.8.0.0 255.255.255.0\ndev tun\nifconfig 10.8.0.1 10.8.0.2\n{}",
                material()
            ),
            "t.conf:3: unsupported 'ifconfig': 'ifconfig' is supported in point-to-point mode only ('tls-server' / 'tls-client' without 'server' / 'client'); a server's addresses come from 'server', a pulling client's are pushed",
        ),
        (
            format!(
                "client\nremote 192.0.2.2\ndev tun\nifconfig 10.9.0.2 10.9.0.1\n{}",
                material()
            ),
            "t.conf:4: unsupported 'ifconfig': 'ifconfig' is supported in point-to-point mode only ('tls-server' / 'tls-client' without 'server' / 'client'); a server's addresses come from 'server', a pulling client's are pushed",
        ),
        // 2.6's own checks and words.
        (
            site("tls-client").replace("ifconfig 10.9.0.1 10.9.0.2", "ifconfig 10.9.0.1 10.9.0.1"),
            "t.conf:4: local and remote/netmask --ifconfig addresses must be different",
        ),
        (
            site("tls-client").replace("remote 192.0.2.2", "remote 10.9.0.2"),
            "t.conf:4: --local and --remote addresses must be distinct from --ifconfig addresses",
        ),
        (
            format!("ifconfig-pool 10.9.0.4 10.9.0.8\n{}", site("tls-server")),
            "t.conf:1: --ifconfig-pool/--ifconfig-pool-persist requires --mode server",
        ),
        (
            format!("auth-user-pass\n{}", site("tls-client")),
            "t.conf:1: --auth-user-pass requires --pull",
        ),
        // What ferrovpn does not run in p2p mode.
        // An end without `remote` (it waits for its peer).
        (
            format!(
                "proto udp\nnobind\n{}",
                site("tls-server").replace("remote 192.0.2.2\n", "")
            ),
            "t.conf:2: --nobind doesn't make sense unless used with --remote",
        ),
        (
            format!(
                "proto tcp-server\n{}",
                site("tls-server").replace("remote 192.0.2.2\n", "")
            ),
            "t.conf:1: unsupported 'proto': a point-to-point end without 'remote' (waiting for its peer) over TCP is not supported: point-to-point mode runs over UDP only",
        ),
        (
            format!(
                "persist-remote-ip\n{}",
                site("tls-client").replace("remote 192.0.2.2\n", "")
            ),
            "t.conf:1: unsupported 'persist-remote-ip': a point-to-point end without 'remote' forgets its peer's address on a restart and waits again; keeping it (2.6 sends its next reset there) is not supported",
        ),
        (
            format!(
                "redirect-gateway def1\n{}",
                site("tls-server").replace("remote 192.0.2.2\n", "")
            ),
            "t.conf:1: unsupported 'redirect-gateway': a point-to-point end without 'remote' does not know its peer's address to route around the tunnel",
        ),
        (
            format!("proto tcp-client\n{}", site("tls-client")),
            "t.conf:1: unsupported 'proto': point-to-point mode over TCP is not supported; use UDP",
        ),
        (
            loopback("tls-server").replace("dev null", "dev null\nifconfig 10.9.0.1 10.9.0.2"),
            "t.conf:7: 'ifconfig' needs a tun device; 'dev null' has none",
        ),
        // dev null outside p2p mode.
        (
            format!("client\nremote 192.0.2.2\ndev null\n{}", material()),
            "t.conf:3: unsupported 'dev null': a null device is supported in point-to-point mode only ('tls-server' / 'tls-client' without 'server' / 'client')",
        ),
        // Unchanged refusals.
        (
            format!("mode p2p\n{}", site("tls-server")),
            "t.conf:1: unsupported 'mode p2p': point-to-point mode is not supported; use 'server' / 'client'",
        ),
        (
            format!("secret static.key\n{}", site("tls-server")),
            "t.conf:1: unsupported 'secret': static-key (non-TLS) mode is not supported",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(err(&text), want, "for config:\n{text}");
    }
}
