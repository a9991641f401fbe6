//! ferrovpn's client scripts with Debian's stock OpenVPN 2.6 as the server:
//! `tls-verify`, `ipchange`, `up`, `route-up`, `route-pre-down` and `down`,
//! with 2.6's arguments and environment — the pushed `dhcp-option`s as
//! `foreign_option_N` (what Debian's `update-resolv-conf` reads), the
//! pushed routes as `route_*`, the server as `trusted_ip`/`common_name` —
//! and a `tls-verify` refusing the server. The scripts are small `sh` files
//! that record their arguments and dump their environment.
//!
//! Needs root, the lab's tools, `sh` and `/dev/net/tun`; every test fails
//! loudly without them. Every wait has a deadline.

use std::path::PathBuf;
use std::time::Duration;

use ferrovpn_testkit::lab::{CONNECT_TIMEOUT, UP, log_tails};
use ferrovpn_testkit::{Cipher, Lab, Proc, Wrap, ping, sh_script, wait_for_file_text, wait_until};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const CLIENT_DEV: &str = "fvtun-c";

/// A recording script in the lab's directory: appends `TYPE ARGS` to
/// `record.txt` and writes its environment to `TYPE.env`; exits with
/// `exit_code` at `depth` for tls-verify (always 0 otherwise).
fn recorder(lab: &Lab, refuse_depth: Option<u32>) -> PathBuf {
    let dir = lab.dir.path();
    let refuse = match refuse_depth {
        Some(d) => format!(r#"[ "$script_type" = tls-verify ] && [ "$1" = {d} ] && exit 1"#),
        None => String::new(),
    };
    sh_script(
        dir.join("record.sh"),
        &format!(
            "echo \"$script_type $*\" >> {dir}/record.txt\nenv > \"{dir}/$script_type.env\"\n{refuse}\nexit 0\n",
            dir = dir.display()
        ),
    )
}

fn read(lab: &Lab, name: &str) -> String {
    std::fs::read_to_string(lab.dir.join(name)).unwrap_or_default()
}

/// `NAME=value` lines of the environment `script_type` ran with.
fn env_of(lab: &Lab, script_type: &str) -> Vec<String> {
    read(lab, &format!("{script_type}.env"))
        .lines()
        .map(str::to_owned)
        .collect()
}

fn assert_has(env: &[String], line: &str, what: &str) {
    assert!(
        env.iter().any(|l| l == line),
        "{what}: no '{line}' in\n{}",
        env.join("\n")
    );
}

fn wait_record(lab: &Lab, what: &str, client: &Proc, server: &Proc) {
    let ok = wait_for_file_text(&lab.dir.join("record.txt"), what, CONNECT_TIMEOUT);
    assert!(
        ok,
        "no '{what}' in the record:\n{}\n{}",
        read(lab, "record.txt"),
        log_tails(client, server)
    );
}

/// A stock server pushing a route and two dhcp-options, and the ferrovpn
/// client config with every client script set to the recorder.
fn setup(lab: &Lab, refuse_depth: Option<u32>) -> (Proc, ferrovpn_testkit::ClientConf) {
    let mut sc = lab.server_conf(Wrap::None, Cipher::Aes256Gcm);
    sc.push = vec![
        "route 10.77.0.0 255.255.255.0".into(),
        "dhcp-option DNS 10.8.0.1".into(),
        "dhcp-option DOMAIN vpn.test".into(),
    ];
    let server = lab.stock_server(&sc);
    let script = recorder(lab, refuse_depth);
    let mut cc = lab.client_conf(
        0,
        &lab.pki.clients[0],
        CLIENT_DEV,
        Wrap::None,
        Cipher::Aes256Gcm,
    );
    cc.extra.push("script-security 2".into());
    for hook in [
        "up",
        "down",
        "route-up",
        "route-pre-down",
        "ipchange",
        "tls-verify",
    ] {
        cc.extra.push(format!("{hook} \"{}\"", script.display()));
    }
    (server, cc)
}

#[test]
fn client_scripts_get_2_6_arguments_and_the_pushed_dhcp_options() {
    let lab = Lab::new("fvcscr1", 1, FERROVPN);
    let (server, cc) = setup(&lab, None);
    let mut client = lab.ferrovpn_client(0, "ferrovpn-client", &cc);
    if let Err(e) = client.wait_for_log_line(UP, CONNECT_TIMEOUT) {
        panic!("{e:#}\n{}", log_tails(&client, &server));
    }
    wait_record(&lab, "route-up", &client, &server);
    ping(&lab.clients[0], "10.8.0.1", 2, Duration::from_secs(10)).unwrap();
    let record = read(&lab, "record.txt");
    let lines: Vec<&str> = record.lines().collect();
    // 2.6's order and arguments: the chain from the CA down, ipchange with
    // the server's address, up with the tunnel, route-up with nothing.
    let up_line = format!("up {CLIENT_DEV} 1500 0 10.8.0.2 255.255.255.0 init");
    assert_eq!(
        lines,
        [
            "tls-verify 1 CN=ferrovpn test CA",
            "tls-verify 0 CN=server",
            "ipchange [AF_INET]10.210.1.1 1194",
            up_line.as_str(),
            "route-up ",
        ],
        "{record}"
    );
    let up = env_of(&lab, "up");
    for line in [
        "foreign_option_1=dhcp-option DNS 10.8.0.1",
        "foreign_option_2=dhcp-option DOMAIN vpn.test",
        "route_network_1=10.77.0.0",
        "route_netmask_1=255.255.255.0",
        "route_gateway_1=10.8.0.1",
        "route_vpn_gateway=10.8.0.1",
        "trusted_ip=10.210.1.1",
        "trusted_port=1194",
        "common_name=server",
        "X509_0_CN=server",
        &format!("dev={CLIENT_DEV}"),
        "dev_type=tun",
        "tun_mtu=1500",
        "ifconfig_local=10.8.0.2",
        "ifconfig_netmask=255.255.255.0",
        "script_context=init",
        "script_type=up",
        "remote_1=10.210.1.1",
        "remote_port_1=1194",
    ] {
        assert_has(&up, line, "up");
    }
    assert!(up.iter().any(|l| l.starts_with("tls_serial_0=")), "{up:?}");
    let verify = env_of(&lab, "tls-verify");
    assert_has(&verify, "X509_0_CN=server", "tls-verify at depth 0");
    assert_has(&verify, "untrusted_ip=10.210.1.1", "tls-verify at depth 0");
    assert!(
        !verify.iter().any(|l| l.starts_with("trusted_ip=")),
        "{verify:?}"
    );
    let route_up = env_of(&lab, "route-up");
    assert_has(
        &route_up,
        "foreign_option_1=dhcp-option DNS 10.8.0.1",
        "route-up",
    );
    assert_has(&route_up, "redirect_gateway=0", "route-up");

    // Going down: route-pre-down, then down, with up's arguments.
    client.stop(Duration::from_secs(10));
    wait_record(&lab, "down ", &client, &server);
    let record = read(&lab, "record.txt");
    let tail: Vec<&str> = record.lines().skip(5).collect();
    let args = format!("{CLIENT_DEV} 1500 0 10.8.0.2 255.255.255.0 init");
    assert_eq!(
        tail,
        [format!("route-pre-down {args}"), format!("down {args}")],
        "{record}"
    );
    let down = env_of(&lab, "down");
    // The client has explicit-exit-notify: 2.6 names the SIGTERM after it.
    assert_has(&down, "signal=exit-with-notification", "down");
    assert_has(&down, "foreign_option_1=dhcp-option DNS 10.8.0.1", "down");
    // As 2.6.14: the address variables stay once the device is configured.
    assert_has(&down, "ifconfig_local=10.8.0.2", "down");
}

#[test]
fn client_tls_verify_refusing_the_server_keeps_the_tunnel_down() {
    let lab = Lab::new("fvcscr2", 1, FERROVPN);
    let (server, cc) = setup(&lab, Some(0));
    let mut client = lab.ferrovpn_client(0, "ferrovpn-client", &cc);
    if let Err(e) = client.wait_for_log_line("VERIFY SCRIPT ERROR: depth=0", CONNECT_TIMEOUT) {
        panic!("{e:#}\n{}", log_tails(&client, &server));
    }
    // It reconnects (and is refused again), never bringing the tunnel up.
    let again = wait_until(CONNECT_TIMEOUT, Duration::from_millis(100), || {
        read(&lab, "record.txt").matches("tls-verify 0 ").count() >= 2
    });
    assert!(again, "{}", log_tails(&client, &server));
    let record = read(&lab, "record.txt");
    assert!(!record.contains("ipchange"), "{record}");
    assert!(!record.contains("up "), "{record}");
    assert!(!client.log().contains(UP), "{}", client.log_tail(30));
}
