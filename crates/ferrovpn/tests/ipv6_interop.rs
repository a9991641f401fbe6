//! IPv6 inside the tunnel with Debian's stock OpenVPN 2.6 as the peer: a
//! stock client gets its address from a ferrovpn `server-ipv6` server; a
//! ferrovpn client applies `ifconfig-ipv6`, `route-ipv6` and
//! `redirect-gateway ipv6` pushed by a stock server exactly as a stock
//! client does. ping and iperf3 over IPv6 both ways. A network behind a
//! stock client is reached through `iroute-ipv6`, and a manual
//! `ifconfig-ipv6` + `ifconfig-ipv6-pool` server hands out the address the
//! stock server hands out.
//!
//! Needs root, the lab's tools, `sysctl` and `/dev/net/tun`; every test
//! fails loudly without them. Every wait has a deadline.

use std::time::Duration;

use ferrovpn_testkit::lab::{CLIENT_DEV, log_tails, ping_and_iperf3_both_ways};
use ferrovpn_testkit::{Lab, Netns, Proc, VethPair, ping, require_root_and_tools, sh_script};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

/// A lab with IPv6 turned on in every namespace.
fn lab(tag: &str, n_clients: usize) -> Lab {
    require_root_and_tools(&["sysctl"]);
    let lab = Lab::new(tag, n_clients, FERROVPN);
    lab.enable_ipv6();
    lab
}

/// `ip -6 -o addr show dev DEV scope global` in `ns`.
fn addr6(ns: &Netns, dev: &str) -> String {
    ns.exec(&[
        "ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "global",
    ])
    .unwrap()
}

/// The IPv6 routes through `dev` in `ns`, one per line, as `ip -6 route`
/// prints them without the fields that differ between ways of adding the
/// same route (`proto`, `pref`).
fn routes6(ns: &Netns, dev: &str) -> Vec<String> {
    ns.routes("-6", dev).unwrap()
}

/// (1) A stock client of a ferrovpn `server-ipv6` server gets the first
/// pool address (NETWORK+0x1000, paired with 10.8.0.2), reaches the server's
/// NETWORK+1 by ping6 and carries iperf3 over IPv6 both ways; the status
/// shows its IPv6 address.
#[test]
fn stock_client_gets_ipv6_from_ferrovpn_server_ipv6() {
    let lab = lab("v6-srv", 1);
    let (mut sc, cc) = lab.tls_crypt_confs();
    let status = lab.dir.join("status.txt");
    sc.extra = vec![
        "server-ipv6 fd00:8::/64".into(),
        format!("status {} 1", status.display()),
        "status-version 2".into(),
    ];
    let server = lab.ferrovpn_server(&sc);
    let client = lab.stock_client_up(0, "openvpn-client", &cc, &server);
    let a = addr6(&lab.clients[0], CLIENT_DEV);
    assert!(
        a.contains("fd00:8::1000/64"),
        "{a}\n{}",
        log_tails(&client, &server)
    );
    assert!(
        client
            .log()
            .contains("ifconfig-ipv6 fd00:8::1000/64 fd00:8::1"),
        "{}",
        log_tails(&client, &server)
    );
    ping_and_iperf3_both_ways(
        "stock client -> ferrovpn server over inner IPv6",
        &lab.clients[0],
        &lab.server_ns,
        "fd00:8::1",
        &client,
        &server,
    );
    let shown =
        ferrovpn_testkit::wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
            std::fs::read_to_string(&status).is_ok_and(|t| {
                t.lines()
                    .any(|l| l.starts_with("CLIENT_LIST,") && l.contains(",10.8.0.2,fd00:8::1000,"))
            })
        });
    assert!(
        shown,
        "status file lacks the IPv6 address:\n{}",
        std::fs::read_to_string(&status).unwrap_or_default()
    );
}

/// (2) A ferrovpn client of a stock `server-ipv6` server pushing
/// `route-ipv6` and `redirect-gateway ipv6` installs the same IPv6
/// address and routes on its tun as a stock client of the same server,
/// and carries ping6 and iperf3 over IPv6 both ways.
#[test]
fn ferrovpn_client_applies_ipv6_pushed_by_stock_server_like_stock_client() {
    let lab = lab("v6-cli", 2);
    let (mut sc, _) = lab.tls_crypt_confs();
    let wrap = sc.wrap.clone();
    sc.extra = vec!["server-ipv6 fd00:9::/64".into()];
    sc.push = vec![
        "route-ipv6 fd00:99::/64".into(),
        "route-ipv6 fd00:98::/64 fd00:9::1 7".into(),
        "redirect-gateway ipv6 !ipv4".into(),
    ];
    let server = lab.stock_server(&sc);
    let confs = lab.client_confs(&wrap, ferrovpn_testkit::Cipher::Aes256Gcm);
    let stock = lab.stock_client_up(1, "openvpn-client", &confs[1], &server);
    let ferro = lab.client_up(
        ferrovpn_testkit::Implementation::Ferrovpn,
        0,
        "ferrovpn-client",
        &confs[0],
        &server,
    );
    let a = addr6(&lab.clients[0], CLIENT_DEV);
    assert!(a.contains("fd00:9::/64") || a.contains("fd00:9::10"), "{a}");
    let stock_routes = routes6(&lab.clients[1], CLIENT_DEV);
    let ferro_routes = routes6(&lab.clients[0], CLIENT_DEV);
    // The connected /64 aside, the routes are the same.
    assert_eq!(
        ferro_routes,
        stock_routes,
        "\n{}\n{}",
        log_tails(&ferro, &server),
        stock.log_tail(40)
    );
    assert!(
        ferro_routes.iter().any(|r| r.starts_with("fd00:99::/64")),
        "{ferro_routes:?}"
    );
    ping_and_iperf3_both_ways(
        "ferrovpn client -> stock server over inner IPv6",
        &lab.clients[0],
        &lab.server_ns,
        "fd00:9::1",
        &ferro,
        &server,
    );
}

/// A server config with `server-ipv6 NET` and `extra` lines (a later
/// `proto` line overrides the generated one, in both implementations).
fn v6_server_conf(
    lab: &Lab,
    net: &str,
    extra: &[&str],
) -> (
    ferrovpn_testkit::ServerConf,
    Vec<ferrovpn_testkit::ClientConf>,
) {
    let (mut sc, _) = lab.tls_crypt_confs();
    sc.extra = std::iter::once(format!("server-ipv6 {net}"))
        .chain(extra.iter().map(|l| l.to_string()))
        .collect();
    let confs = lab.client_confs(&sc.wrap.clone(), ferrovpn_testkit::Cipher::Aes256Gcm);
    (sc, confs)
}

/// Client `cc` pointed at the server's IPv6 underlay address.
fn over_ipv6(i: usize, mut cc: ferrovpn_testkit::ClientConf) -> ferrovpn_testkit::ClientConf {
    cc.remote = Lab::server_underlay6(i);
    cc
}

/// The server's log shows a client connected from an IPv6 address.
fn assert_outer_ipv6(server: &Proc, client: &Proc, underlay6: &str) {
    assert!(
        server.log().contains(underlay6),
        "the server never saw {underlay6}:\n{}",
        log_tails(client, server)
    );
}

/// (3) The tunnel carried over outer IPv6 (`proto udp6`), both
/// directions: a stock client of a ferrovpn server and a ferrovpn client of
/// a stock server, each with inner IPv4 and IPv6 traffic.
#[test]
fn tunnel_over_outer_ipv6_udp6_both_directions() {
    let lab = lab("v6-outer", 1);
    let client6 = Lab::client_underlay6(0);
    for server_imp in [
        ferrovpn_testkit::Implementation::Ferrovpn,
        ferrovpn_testkit::Implementation::Stock,
    ] {
        let (sc, confs) = v6_server_conf(&lab, "fd00:a::/64", &["proto udp6"]);
        let server = lab.server(server_imp, &sc);
        let client_imp = match server_imp {
            ferrovpn_testkit::Implementation::Ferrovpn => ferrovpn_testkit::Implementation::Stock,
            ferrovpn_testkit::Implementation::Stock => ferrovpn_testkit::Implementation::Ferrovpn,
        };
        let cc = over_ipv6(0, confs[0].clone());
        let client = lab.client_up(client_imp, 0, "client-over-v6", &cc, &server);
        assert_outer_ipv6(&server, &client, &client6);
        let what = format!("{client_imp:?} client -> {server_imp:?} server over udp6");
        let p = ping(&lab.clients[0], "10.8.0.1", 3, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", log_tails(&client, &server)));
        assert!(p.received >= 2, "{what}: {p:?}");
        ping_and_iperf3_both_ways(
            &what,
            &lab.clients[0],
            &lab.server_ns,
            "fd00:a::1",
            &client,
            &server,
        );
    }
}

/// (4) ferrovpn <-> ferrovpn dual stack: one `proto udp6` server on [::]
/// serves a client over IPv4 (a v4-mapped peer) and one over IPv6; both get
/// IPv4 and IPv6 inside and reach the server and each other's networks.
#[test]
fn ferrovpn_dual_stack_server_serves_ipv4_and_ipv6_clients() {
    let lab = lab("v6-dual", 2);
    let (sc, confs) = v6_server_conf(&lab, "fd00:b::/64", &["proto udp6"]);
    let server = lab.ferrovpn_server(&sc);
    let imp = ferrovpn_testkit::Implementation::Ferrovpn;
    let v4 = lab.client_up(imp, 0, "ferrovpn-client-v4", &confs[0], &server);
    let v6 = lab.client_up(
        imp,
        1,
        "ferrovpn-client-v6",
        &over_ipv6(1, confs[1].clone()),
        &server,
    );
    assert_outer_ipv6(&server, &v6, &Lab::client_underlay6(1));
    for (i, c) in [(0, &v4), (1, &v6)] {
        let a = addr6(&lab.clients[i], CLIENT_DEV);
        assert!(
            a.contains("fd00:b::100"),
            "client {i}: {a}\n{}",
            log_tails(c, &server)
        );
        for addr in ["10.8.0.1", "fd00:b::1"] {
            let p = ping(&lab.clients[i], addr, 3, Duration::from_secs(10)).unwrap_or_else(|e| {
                panic!("client {i} -> {addr}: {e:#}\n{}", log_tails(c, &server))
            });
            assert!(p.received >= 2, "client {i} -> {addr}: {p:?}");
        }
    }
    ping_and_iperf3_both_ways(
        "ferrovpn dual stack, IPv6 client",
        &lab.clients[1],
        &lab.server_ns,
        "fd00:b::1",
        &v6,
        &server,
    );
}

/// (6) `proto tcp6`: a stock client of a ferrovpn `tcp6-server` over outer
/// IPv6, IPv6 inside.
#[test]
fn stock_client_over_tcp6() {
    let lab = lab("v6-tcp", 1);
    let (mut sc, confs) = v6_server_conf(&lab, "fd00:c::/64", &["proto tcp6-server"]);
    sc.transport = ferrovpn_testkit::Transport::Tcp;
    let server = lab.ferrovpn_server(&sc);
    let mut cc = over_ipv6(0, confs[0].clone());
    cc.transport = ferrovpn_testkit::Transport::Tcp;
    let client = lab.stock_client_up(0, "openvpn-client-tcp6", &cc, &server);
    assert_outer_ipv6(&server, &client, &Lab::client_underlay6(0));
    ping_and_iperf3_both_ways(
        "stock client over tcp6",
        &lab.clients[0],
        &lab.server_ns,
        "fd00:c::1",
        &client,
        &server,
    );
}

/// (5) `ifconfig-ipv6-push` in a client-config-dir file pins a stock
/// client's IPv6 address; IPv6 traffic flows to and from it.
#[test]
fn ccd_ifconfig_ipv6_push_pins_the_address() {
    let lab = lab("v6-ccd", 1);
    let ccd = lab.dir.join("ccd");
    std::fs::create_dir_all(&ccd).unwrap();
    let cn = lab.pki.clients[0].cn.clone();
    std::fs::write(ccd.join(&cn), "ifconfig-ipv6-push fd00:d::77/64\n").unwrap();
    let ccd_line = format!("client-config-dir {}", ccd.display());
    let (sc, confs) = v6_server_conf(&lab, "fd00:d::/64", &[&ccd_line]);
    let server = lab.ferrovpn_server(&sc);
    let client = lab.stock_client_up(0, "openvpn-client", &confs[0], &server);
    let a = addr6(&lab.clients[0], CLIENT_DEV);
    assert!(
        a.contains("fd00:d::77/64"),
        "{a}\n{}",
        log_tails(&client, &server)
    );
    ping_and_iperf3_both_ways(
        "stock client pinned by ifconfig-ipv6-push",
        &lab.clients[0],
        &lab.server_ns,
        "fd00:d::1",
        &client,
        &server,
    );
}

/// Add `cidr` (IPv6, no duplicate address detection, so it is usable at
/// once) to `dev` in `ns`.
fn add6(ns: &Netns, dev: &str, cidr: &str) {
    ns.exec(&["ip", "-6", "addr", "add", cidr, "dev", dev, "nodad"])
        .unwrap();
}

/// A namespace with IPv6 on, for a network behind a server or client.
fn v6_netns(tag: &str) -> Netns {
    let ns = Netns::unique(tag).unwrap();
    for key in [
        "net.ipv6.conf.all.disable_ipv6=0",
        "net.ipv6.conf.default.disable_ipv6=0",
    ] {
        ns.exec(&["sysctl", "-q", "-w", key]).unwrap();
    }
    ns
}

/// (6) Site to site over IPv6: `iroute-ipv6` in a client-config-dir file
/// routes a network behind a stock client (fd00:77::/64) to it; a host
/// behind the server (fd00:76::/64) and a host in the site reach each
/// other both ways (the site's packets pass the server's source check
/// because the network is the client's). The pushed `route-ipv6` to the
/// client's own network is not pushed to it, as 2.6 does.
#[test]
fn iroute_ipv6_carries_traffic_between_a_lan_behind_the_server_and_a_site_behind_a_stock_client() {
    let lab = lab("v6-site", 1);
    let lan = v6_netns("v6-site-lan");
    let site = v6_netns("v6-site-site");
    let lan_link = VethPair::new(&lab.server_ns, "10.76.0.1/24", &lan, "10.76.0.2/24").unwrap();
    let site_link =
        VethPair::new(&lab.clients[0], "192.168.76.1/24", &site, "192.168.76.2/24").unwrap();
    add6(&lab.server_ns, &lan_link.if_a, "fd00:76::1/64");
    add6(&lan, &lan_link.if_b, "fd00:76::2/64");
    add6(&lab.clients[0], &site_link.if_a, "fd00:77::1/64");
    add6(&site, &site_link.if_b, "fd00:77::2/64");
    lan.exec(&["ip", "-6", "route", "add", "default", "via", "fd00:76::1"])
        .unwrap();
    site.exec(&["ip", "-6", "route", "add", "default", "via", "fd00:77::1"])
        .unwrap();
    for ns in [&lab.server_ns, &lab.clients[0]] {
        ns.exec(&["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"])
            .unwrap();
    }
    let ccd = lab.dir.join("ccd");
    std::fs::create_dir_all(&ccd).unwrap();
    let cn = lab.pki.clients[0].cn.clone();
    std::fs::write(ccd.join(&cn), "iroute-ipv6 fd00:77::/64\n").unwrap();
    let ccd_line = format!("client-config-dir {}", ccd.display());
    let (mut sc, confs) =
        v6_server_conf(&lab, "fd00:e::/64", &[&ccd_line, "route-ipv6 fd00:77::/64"]);
    sc.push = vec![
        "route-ipv6 fd00:76::/64".into(),
        "route-ipv6 fd00:77::/64".into(),
    ];
    let server = lab.ferrovpn_server(&sc);
    let client = lab.stock_client_up(0, "openvpn-client", &confs[0], &server);
    let routes = routes6(&lab.clients[0], CLIENT_DEV);
    assert!(
        routes.iter().any(|r| r.starts_with("fd00:76::/64")),
        "{routes:?}\n{}",
        log_tails(&client, &server)
    );
    assert!(
        !routes.iter().any(|r| r.starts_with("fd00:77::/64")),
        "the client's own network was pushed to it: {routes:?}\n{}",
        log_tails(&client, &server)
    );
    // lan -> server -> tunnel -> client -> site, and back.
    // (ping keeps sending until 3 answers came; the first ones wait for
    // neighbour discovery on three links, so more may arrive at once.)
    let p = ping(&lan, "fd00:77::2", 3, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", log_tails(&client, &server)));
    assert!(p.received >= 3, "{p:?}\n{}", log_tails(&client, &server));
    // From the site side: its source is the client's iroute-ipv6 network.
    let p = ping(&site, "fd00:76::2", 3, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", log_tails(&client, &server)));
    assert!(p.received >= 3, "{p:?}\n{}", log_tails(&client, &server));
    assert!(
        server.log().contains("internal route fd00:77::/64"),
        "{}",
        server.log_tail(40)
    );
}

/// (7) A server set up by hand as `server-ipv6`'s expansion reads:
/// `ifconfig-ipv6` for itself and `ifconfig-ipv6-pool` for clients. The
/// pool's base has a zero host part (last 32 bits), so 2.6's pool.c starts
/// one address later; the stock server and ferrovpn hand a stock client the
/// same address and push the server's netbits and address with it.
#[test]
fn ifconfig_ipv6_pool_hands_out_what_the_stock_server_hands_out() {
    let lab = lab("v6-pool", 1);
    for server_imp in [
        ferrovpn_testkit::Implementation::Stock,
        ferrovpn_testkit::Implementation::Ferrovpn,
    ] {
        let (mut sc, _) = lab.tls_crypt_confs();
        sc.extra = vec![
            "ifconfig-ipv6 fd00:f::1/64 fd00:f::2".into(),
            "ifconfig-ipv6-pool fd00:f:0:0:1::/80".into(),
        ];
        let confs = lab.client_confs(&sc.wrap.clone(), ferrovpn_testkit::Cipher::Aes256Gcm);
        let server = lab.server(server_imp, &sc);
        let client = lab.stock_client_up(0, "openvpn-client", &confs[0], &server);
        let what = format!("{server_imp:?} server, ifconfig-ipv6-pool");
        let a = addr6(&lab.clients[0], CLIENT_DEV);
        assert!(
            a.contains("fd00:f::1:0:0:1/64"),
            "{what}: {a}\n{}",
            log_tails(&client, &server)
        );
        assert!(
            client
                .log()
                .contains("ifconfig-ipv6 fd00:f::1:0:0:1/64 fd00:f::1"),
            "{what}\n{}",
            log_tails(&client, &server)
        );
        let p = ping(&lab.clients[0], "fd00:f::1", 5, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", log_tails(&client, &server)));
        assert!(
            p.received >= 4,
            "{what}: {p:?}\n{}",
            log_tails(&client, &server)
        );
        drop(client);
        drop(server);
    }
}

/// One server (`imp`) with `network` (its `server` line; empty for none)
/// and `extra` lines, every server script set to one that records the
/// `ifconfig*` variables it sees; a stock client in and out, the server
/// stopped. The calls' records, sorted (the two servers may order
/// `learn-address delete` and `client-disconnect` differently).
fn server_script_ifconfig_env(
    lab: &Lab,
    imp: ferrovpn_testkit::Implementation,
    network: &str,
    extra: &[&str],
) -> Vec<String> {
    let record = lab.dir.join(format!("{imp:?}-env.txt"));
    // One printf: each record lands in one write, even with calls at once.
    let script = sh_script(
        lab.dir.join(format!("{imp:?}-env.sh")),
        &format!(
            "block=$(echo \"== $script_type\"; env | grep '^ifconfig' | sort)\nprintf '%s\\n\\n' \"$block\" >> {}\n",
            record.display()
        ),
    );
    let (mut sc, _) = lab.tls_crypt_confs();
    sc.network = network.to_owned();
    sc.extra = extra.iter().map(|l| l.to_string()).collect();
    sc.extra.push("script-security 2".into());
    for hook in [
        "up",
        "route-up",
        "tls-verify",
        "client-connect",
        "learn-address",
        "client-disconnect",
        "down",
    ] {
        sc.extra.push(format!("{hook} {}", script.display()));
    }
    let confs = lab.client_confs(&sc.wrap.clone(), ferrovpn_testkit::Cipher::Aes256Gcm);
    let read = || std::fs::read_to_string(&record).unwrap_or_default();
    let mut server = lab.server(imp, &sc);
    let mut client = lab.stock_client_up(0, &format!("{imp:?}-client"), &confs[0], &server);
    let calls = |kind: &str| read().matches(&format!("== {kind}\n")).count();
    let wait = |what: &str, ok: &dyn Fn() -> bool, server: &Proc| {
        assert!(
            ferrovpn_testkit::wait_until(Duration::from_secs(30), Duration::from_millis(50), ok),
            "{imp:?}: no {what} recorded:\n{}\n--- server ---\n{}",
            read(),
            server.log_tail(40)
        );
    };
    wait(
        "learn-address add",
        &|| calls("learn-address") >= 1,
        &server,
    );
    client.stop(Duration::from_secs(5));
    wait(
        "client-disconnect",
        &|| calls("client-disconnect") >= 1,
        &server,
    );
    server.stop(Duration::from_secs(10));
    wait("down", &|| calls("down") >= 1, &server);
    let mut blocks: Vec<String> = read()
        .split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .map(str::to_owned)
        .collect();
    blocks.sort();
    blocks
}

/// (8) Every server script (`up`, `route-up`, `tls-verify`,
/// `client-connect`, `learn-address`, `client-disconnect`, `down`) sees
/// the `ifconfig*` variables the stock 2.6 server sets (its tunnel's
/// `ifconfig_ipv6_*`, a client's `ifconfig_pool_*_ip6`), on a dual-stack
/// server, an IPv6-only one and one set up by hand with `ifconfig-ipv6`
/// (its REMOTE is `ifconfig_ipv6_remote`) and `ifconfig-ipv6-pool`.
#[test]
fn server_scripts_see_the_ifconfig_variables_of_a_stock_server() {
    let lab = lab("v6-env", 1);
    let by_hand: &[&str] = &[
        "ifconfig-ipv6 fd00:e::1/64 fd00:e::7",
        "ifconfig-ipv6-pool fd00:e::1000/64",
    ];
    for (network, extra) in [
        ("10.8.0.0 255.255.255.0", &["server-ipv6 fd00:e::/64"][..]),
        ("", &["server-ipv6 fd00:e::/64"][..]),
        ("10.8.0.0 255.255.255.0", by_hand),
    ] {
        let stock = server_script_ifconfig_env(
            &lab,
            ferrovpn_testkit::Implementation::Stock,
            network,
            extra,
        );
        let ours = server_script_ifconfig_env(
            &lab,
            ferrovpn_testkit::Implementation::Ferrovpn,
            network,
            extra,
        );
        assert_eq!(
            ours.join("\n\n"),
            stock.join("\n\n"),
            "server '{network}' {extra:?}: the scripts' ifconfig variables differ (left: ferrovpn, right: stock)"
        );
        for imp in ["Stock", "Ferrovpn"] {
            let _ = std::fs::remove_file(lab.dir.join(format!("{imp}-env.txt")));
        }
    }
}
