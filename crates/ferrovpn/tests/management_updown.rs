//! `management-up-down` on a CLIENT, against Debian's stock OpenVPN 2.6
//! server: the same script drives the ferrovpn client and the stock 2.6
//! client (held, released, connected with a pushed route and
//! dhcp-option, then `signal SIGTERM`), and the `>UPDOWN:UP` and
//! `>UPDOWN:DOWN` blocks must be the same lines in the same order, only
//! the process's own values (`daemon_pid`, `daemon_start_time`, the
//! config file's name) told apart.
//!
//! Needs root, `openvpn`, `ip` and `/dev/net/tun`; fails loudly without
//! them. Every wait has a deadline.

use std::time::Duration;

use ferrovpn_testkit::lab::{CLIENT_DEV, wait_exit};
use ferrovpn_testkit::mgmt::{Management, normalized};
use ferrovpn_testkit::{Implementation, Lab, ServerConf, openvpn_client_conf};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

/// The ferrovpn client's `>UPDOWN` lines ([`updown_script`]), asserted
/// equal to the stock client's under the same server and `extra` lines.
fn updown_as_stock(lab: &Lab, sc: &ServerConf, extra: &[String]) -> Vec<String> {
    let stock = updown_script(lab, sc, Implementation::Stock, extra);
    let ours = updown_script(lab, sc, Implementation::Ferrovpn, extra);
    assert_eq!(
        ours,
        stock,
        "ferrovpn's >UPDOWN lines differ from the stock client's:\nours:\n{}\nstock:\n{}",
        ours.join("\n"),
        stock.join("\n")
    );
    ours
}

/// Connect a held client of `imp` with `management-up-down`, release it,
/// read the UP block, send SIGTERM, read the DOWN block; returns every
/// line from the release's answer to the DOWN block's END, normalized.
fn updown_script(lab: &Lab, sc: &ServerConf, imp: Implementation, extra: &[String]) -> Vec<String> {
    let name = imp.name();
    let socket = lab.dir.join(format!("{name}.sock"));
    let mut cc = lab.client_conf(
        0,
        &lab.pki.clients[0],
        CLIENT_DEV,
        sc.wrap.clone(),
        sc.cipher,
    );
    cc.extra.extend([
        format!("management {} unix", socket.display()),
        "management-hold".to_string(),
        "management-up-down".to_string(),
    ]);
    cc.extra.extend(extra.iter().cloned());
    let mut client = lab.spawn(&lab.clients[0], name, imp, &openvpn_client_conf(&cc));
    let mut m = Management::connect_when_listening(&socket, Duration::from_secs(15));
    m.until("hold", |l| l.starts_with(">HOLD:"));
    let released = m.seen().len();
    m.one("hold release");
    m.until("UP block end", |l| l == ">UPDOWN:ENV,END");
    m.send("signal SIGTERM");
    m.until("DOWN block end", |l| l == ">UPDOWN:ENV,END");
    let status = wait_exit(&mut client, Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", client.log_tail(20));
    m.seen()[released..]
        .iter()
        // Log and state lines are not asked for; nothing else may come.
        .map(|l| normalized(l))
        .collect()
}

#[test]
fn client_management_up_down_same_blocks_as_stock_client() {
    let lab = Lab::new("mgmtupd", 1, FERROVPN);
    let (mut sc, _) = lab.tls_crypt_confs();
    sc.extra.extend([
        "push \"route 10.77.0.0 255.255.255.0\"".to_string(),
        "push \"route 10.78.0.0 255.255.0.0\"".to_string(),
        "push \"dhcp-option DNS 10.8.0.1\"".to_string(),
        "push \"dhcp-option DOMAIN vpn.test\"".to_string(),
    ]);
    let _server = lab.stock_server(&sc);
    let ours = updown_as_stock(&lab, &sc, &[]);
    // The blocks are there, framed as 2.6 frames them.
    let at = |l: &str| ours.iter().position(|x| x == l);
    assert!(at(">UPDOWN:UP") < at(">UPDOWN:DOWN"), "{ours:?}");
    assert!(
        ours.contains(&">UPDOWN:ENV,route_network_2=10.78.0.0".to_string()),
        "{ours:?}"
    );
    assert!(
        ours.contains(&">UPDOWN:ENV,foreign_option_2=dhcp-option DOMAIN vpn.test".to_string()),
        "{ours:?}"
    );
}

/// With `up` and `route-up` scripts the environment names the script that
/// ran last (`script_type`), and with a default route in the client's
/// namespace `route_net_gateway` is its gateway.
#[test]
fn client_management_up_down_with_scripts_and_default_route_as_stock() {
    let lab = Lab::new("mgmtupds", 1, FERROVPN);
    let (mut sc, _) = lab.tls_crypt_confs();
    sc.extra
        .push("push \"route 10.77.0.0 255.255.255.0\"".to_string());
    let _server = lab.stock_server(&sc);
    let gateway = Lab::server_underlay(0);
    let out = lab.clients[0]
        .command("ip", &["route", "add", "default", "via", gateway.as_str()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let extra = [
        "script-security 2".to_string(),
        "up /bin/true".to_string(),
        "route-up /bin/true".to_string(),
    ];
    let ours = updown_as_stock(&lab, &sc, &extra);
    for line in [
        format!(">UPDOWN:ENV,route_net_gateway={gateway}"),
        ">UPDOWN:ENV,script_type=up".to_string(),
        ">UPDOWN:ENV,script_type=route-up".to_string(),
    ] {
        assert!(ours.contains(&line), "{line} missing: {ours:?}");
    }
}
