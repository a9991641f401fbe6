//! ferrovpn's client scripts with Debian's stock OpenVPN 2.6 as the server:
//! `tls-verify`, `ipchange`, `up`, `route-up`, `route-pre-down` and `down`,
//! with 2.6's arguments and environment — the pushed `dhcp-option`s as
//! `foreign_option_N` (what Debian's `update-resolv-conf` reads), the
//! pushed routes as `route_*`, the server as `trusted_ip`/`common_name` —
//! and a `tls-verify` refusing the server. The scripts are small `sh` files
//! that record their arguments and dump their environment.
//!
//! And against the stock 2.6 client, the same script on both: a server
//! with no address to give (no `ifconfig` from anywhere) and pushed
//! `route` lines, one without a gateway; pushed `route-ipv6` lines with and
//! without their own gateway, `ifconfig-ipv6`'s remote, a pushed
//! `route-ipv6-gateway` and `route-metric` (the `route_ipv6_*` variables,
//! and `net_gateway_ipv6` from the client's own IPv6 default route); a
//! pushed `redirect-gateway` with no `route-gateway` in topology subnet.
//!
//! Needs root, the lab's tools, `sh` and `/dev/net/tun`; every test fails
//! loudly without them. Every wait has a deadline.

use std::path::PathBuf;
use std::time::Duration;

use ferrovpn_testkit::lab::{CONNECT_TIMEOUT, UP, log_tails, wait_exit};
use ferrovpn_testkit::mgmt::{held_client, same_as_stock};
use ferrovpn_testkit::{
    Cipher, Implementation, Lab, Proc, ServerConf, Wrap, openvpn_client_conf, ping, sh_script,
    wait_for_file_text, wait_until,
};

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

/// What one client showed in [`compared_run`]: the script record (`up`,
/// `route-up`, `down` with their arguments), the address and route
/// variables of `up` and `route-up`, the management states with their
/// description and local address, and which of `log_lines` its log holds.
#[derive(Debug, PartialEq)]
struct Seen {
    record: Vec<String>,
    up_env: Vec<String>,
    route_up_env: Vec<String>,
    states: Vec<String>,
    log_lines: Vec<String>,
}

/// The variables 2.6 sets from the tunnel's addresses and routes.
fn address_and_route_vars(env: Vec<String>) -> Vec<String> {
    let mut vars: Vec<String> = env
        .into_iter()
        .filter(|l| {
            ["route_", "ifconfig_", "redirect_gateway=", "net_gateway"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .collect();
    vars.sort();
    vars
}

/// Run a client of `imp` (the lab's client config, `up`, `route-up` and
/// `down` set to the recorder, a held management interface) against the
/// running server until it is connected and `route-up` ran, then SIGTERM
/// it over management and wait for `down`. Returns what it showed.
fn compared_run(lab: &Lab, imp: Implementation, server: &Proc, log_lines: &[&str]) -> Seen {
    let name = format!("{}-client", imp.name());
    // A socket left by the run before would take no connection.
    let _ = std::fs::remove_file(lab.dir.join(format!("{name}.sock")));
    for f in ["record.txt", "up.env", "route-up.env", "down.env"] {
        let _ = std::fs::remove_file(lab.dir.join(f));
    }
    let script = recorder(lab, None);
    let cc = lab.client_conf(
        0,
        &lab.pki.clients[0],
        CLIENT_DEV,
        Wrap::None,
        Cipher::Aes256Gcm,
    );
    let mut extra = vec!["script-security 2".to_string()];
    for hook in ["up", "route-up", "down"] {
        extra.push(format!("{hook} \"{}\"", script.display()));
    }
    let (mut client, mut m) = held_client(lab, &openvpn_client_conf(&cc), imp, &name, &extra);
    m.until("hold", |l| l.starts_with(">HOLD:"));
    m.one("state on");
    m.one("hold release");
    m.until("CONNECTED state", |l| l.contains(",CONNECTED,"));
    wait_record(lab, "route-up", &client, server);
    m.one("signal SIGTERM");
    wait_record(lab, "down ", &client, server);
    let _ = wait_exit(&mut client, Duration::from_secs(10));
    let log = client.log();
    Seen {
        record: read(lab, "record.txt").lines().map(str::to_owned).collect(),
        up_env: address_and_route_vars(env_of(lab, "up")),
        route_up_env: address_and_route_vars(env_of(lab, "route-up")),
        states: m
            .states()
            .iter()
            .map(|s| s.split(',').take(3).collect::<Vec<_>>().join(","))
            .filter(|s| !s.starts_with("GET_CONFIG"))
            .collect(),
        log_lines: log_lines
            .iter()
            .filter(|l| log.contains(**l))
            .map(|l| l.to_string())
            .collect(),
    }
}

/// A stock server in topology subnet set up without the `server` helper
/// (`mode server`, `tls-server`, its own `ifconfig`), so that it pushes
/// no `route-gateway` and gives addresses only as `more` says.
fn manual_subnet_server(lab: &Lab, more: &[&str]) -> ServerConf {
    let mut sc = lab.server_conf(Wrap::None, Cipher::Aes256Gcm);
    sc.network = String::new();
    sc.extra.extend(
        [
            "mode server",
            "tls-server",
            "topology subnet",
            "ifconfig 10.8.0.1 255.255.255.0",
        ]
        .iter()
        .chain(more)
        .map(|l| l.to_string()),
    );
    sc
}

/// A server that has no address to give (`mode server` + `tls-server`
/// with its own `ifconfig`, no pool, no `ifconfig-push`) pushing two
/// routes, one without a gateway, and a `route-ipv6`. 2.6's client
/// completes all the same: the
/// device gets no address (and stays down), `up` gets empty address
/// arguments, the route without a gateway is dropped with a warning, and
/// then no IPv4 route is listed in the scripts' environment; the other
/// routes cannot be added on a device without an address, so CONNECTED
/// says ROUTE_ERROR (init.c `do_init_route_list`,
/// `initialization_sequence_completed`; route.c `init_route_list`).
#[test]
fn client_without_any_address_completes_as_2_6() {
    let lab = Lab::new("fvcnoaddr", 1, FERROVPN);
    let mut sc = manual_subnet_server(&lab, &[]);
    sc.push = vec![
        "route 10.77.0.0 255.255.255.0".into(),
        "route 10.78.0.0 255.255.255.0 10.8.0.9".into(),
        "route-ipv6 fd77::/64".into(),
    ];
    let server = lab.stock_server(&sc);
    let log_lines = [
        UP,
        "Initialization Sequence Completed With Errors",
        "OpenVPN ROUTE: failed to parse/resolve route for host/network: 10.77.0.0",
    ];
    let ours = same_as_stock(|imp| compared_run(&lab, imp, &server, &log_lines));
    let up_line = format!("up {CLIENT_DEV} 1500 0   init");
    let down_line = format!("down {CLIENT_DEV} 1500 0   init");
    assert_eq!(
        ours.record,
        [up_line.as_str(), "route-up ", down_line.as_str()]
    );
    let routes6 = ["route_ipv6_gateway_1=::", "route_ipv6_network_1=fd77::/64"];
    assert_eq!(
        ours.route_up_env,
        [
            &["redirect_gateway=0"],
            &routes6[..],
            &["route_net_gateway=0.0.0.0"]
        ]
        .concat()
    );
    assert_eq!(
        ours.up_env,
        [&routes6[..], &["route_net_gateway=0.0.0.0"]].concat()
    );
    assert!(
        ours.states.iter().any(|s| s == "CONNECTED,ROUTE_ERROR,"),
        "{:?}",
        ours.states
    );
    assert_eq!(ours.log_lines, [log_lines[0], log_lines[2]]);
}

/// A stock server pushing `route-ipv6` lines, one with its own gateway and
/// metric, with `ifconfig-ipv6` (remote `fd00:6::1`); then the same with
/// a pushed `route-ipv6-gateway` and `route-metric`. 2.6 lists each route's
/// gateway as its own, else route-ipv6-gateway's, else the ifconfig-ipv6
/// remote, and its metric as its own, else route-metric's (route.c
/// `init_route_ipv6`, `setenv_route_ipv6`). The client's namespace has an
/// IPv6 default route, which 2.6 lists as `net_gateway_ipv6`.
#[test]
fn client_ipv6_route_variables_as_2_6() {
    let lab = Lab::new("fvcr6env", 1, FERROVPN);
    lab.enable_ipv6();
    // An IPv6 default route with a gateway: 2.6 lists it as
    // `net_gateway_ipv6` when it has IPv6 routes to add (route.c
    // `init_route_ipv6_list`).
    let gw6 = Lab::server_underlay6(0);
    lab.clients[0]
        .exec(&["ip", "-6", "route", "add", "default", "via", &gw6])
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut sc = lab.server_conf(Wrap::None, Cipher::Aes256Gcm);
    sc.extra.push("server-ipv6 fd00:6::/64".into());
    sc.push = vec![
        "route-ipv6 fd77::/64".into(),
        "route-ipv6 fd78::/64 fd00:6::9 5".into(),
    ];
    let first = {
        let server = lab.stock_server(&sc);
        same_as_stock(|imp| compared_run(&lab, imp, &server, &[UP]))
    };
    let net_gateway6 = format!("net_gateway_ipv6={gw6}");
    for line in [
        net_gateway6.as_str(),
        "ifconfig_ipv6_remote=fd00:6::1",
        "route_ipv6_network_1=fd77::/64",
        "route_ipv6_gateway_1=fd00:6::1",
        "route_ipv6_network_2=fd78::/64",
        "route_ipv6_gateway_2=fd00:6::9",
        "route_ipv6_metric_2=5",
    ] {
        assert_has(&first.route_up_env, line, "route-up");
    }
    assert!(
        !first
            .route_up_env
            .iter()
            .any(|l| l.starts_with("route_ipv6_metric_1=")),
        "{:?}",
        first.route_up_env
    );
    sc.push.extend([
        "route-ipv6-gateway fd00:6::7".to_string(),
        "route-metric 9".to_string(),
    ]);
    let server = lab.stock_server(&sc);
    let second = same_as_stock(|imp| compared_run(&lab, imp, &server, &[UP]));
    for line in [
        "route_ipv6_gateway_1=fd00:6::7",
        "route_ipv6_metric_1=9",
        "route_ipv6_gateway_2=fd00:6::9",
        "route_ipv6_metric_2=5",
    ] {
        assert_has(&second.route_up_env, line, "route-up");
    }
}

/// A stock server in topology subnet that pushes `redirect-gateway def1`
/// but no `route-gateway` (`mode server` with its own `ifconfig` and
/// pool, not the `server` helper, which would push one). 2.6's client has
/// no VPN gateway to route 0/1 and 128/1 through: it warns, leaves IPv4
/// alone (`redirect_gateway=0`, no routes) and completes with
/// ROUTE_ERROR (route.c `redirect_default_route_to_vpn` returns false,
/// init.c `initialization_sequence_completed`).
#[test]
fn redirect_without_route_gateway_as_2_6() {
    let lab = Lab::new("fvcrgw", 1, FERROVPN);
    let mut sc = manual_subnet_server(&lab, &["ifconfig-pool 10.8.0.10 10.8.0.20 255.255.255.0"]);
    sc.push = vec!["topology subnet".into(), "redirect-gateway def1".into()];
    let server = lab.stock_server(&sc);
    let log_lines = [
        UP,
        "Initialization Sequence Completed With Errors",
        "NOTE: unable to redirect IPv4 default gateway -- VPN gateway parameter (--route-gateway or --ifconfig) is missing",
    ];
    let ours = same_as_stock(|imp| compared_run(&lab, imp, &server, &log_lines));
    // A route error is no "With Errors" in 2.6's log, only in the state.
    assert_eq!(ours.log_lines, [log_lines[0], log_lines[2]]);
    assert!(
        ours.route_up_env.iter().any(|l| l == "redirect_gateway=0"),
        "{:?}",
        ours.route_up_env
    );
    assert!(
        ours.states
            .iter()
            .any(|s| s == "CONNECTED,ROUTE_ERROR,10.8.0.10"),
        "{:?}",
        ours.states
    );
    assert!(
        !ours
            .route_up_env
            .iter()
            .any(|l| l.starts_with("route_network_")),
        "{:?}",
        ours.route_up_env
    );
}
