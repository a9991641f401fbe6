//! `client-config-dir` on a ferrovpn server with Debian's stock OpenVPN 2.6
//! clients: `ifconfig-push` pins an address (in a chroot, as `nobody`),
//! `push`/`push-remove` per client, `disable` and `ccd-exclusive` refuse a
//! client, and a site-to-site `iroute` carries traffic from a namespace
//! behind the server to a network behind a client.
//!
//! Needs root, the lab's tools (`openvpn`, `ip`, `ping`, ...), `sysctl` and
//! `/dev/net/tun`; every test fails loudly without them. Every wait has a deadline.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use ferrovpn_testkit::lab::{CONNECT_TIMEOUT, UP, log_tails};
use ferrovpn_testkit::{
    Cipher, Lab, Netns, Proc, ServerConf, VethPair, Wrap, ping, require_root_and_tools,
};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const REFUSED: &str = "AUTH_FAILED";

/// The shared lab, and `sysctl` for the site-to-site test's forwarding.
fn lab(tag: &str, n_clients: usize) -> Lab {
    require_root_and_tools(&["sysctl"]);
    Lab::new(tag, n_clients, FERROVPN)
}

/// A server config with `extra` lines.
fn server_conf(lab: &Lab, wrap: &Wrap, extra: &[&str]) -> ServerConf {
    let mut sc = lab.server_conf(wrap.clone(), Cipher::Aes256Gcm);
    sc.extra = extra.iter().map(|l| l.to_string()).collect();
    sc
}

/// Stock client in namespace `i` with certificate `client{cert+1}` on
/// tunnel device `fvtun-c{i}`; not waited on.
fn stock_client(lab: &Lab, i: usize, cert: usize, wrap: &Wrap) -> Proc {
    let cc = lab.client_conf(
        i,
        &lab.pki.clients[cert],
        &format!("fvtun-c{i}"),
        wrap.clone(),
        Cipher::Aes256Gcm,
    );
    lab.stock_client(i, &format!("openvpn-client{i}"), &cc)
}

fn stock_client_up(lab: &Lab, i: usize, cert: usize, wrap: &Wrap, server: &Proc) -> Proc {
    let mut p = stock_client(lab, i, cert, wrap);
    if let Err(e) = p.wait_for_log_line(UP, CONNECT_TIMEOUT) {
        panic!("{e:#}\n{}", log_tails(&p, server));
    }
    p
}

/// `ip -4 -o addr show dev fvtun-c{i}` in client namespace `i`.
fn client_addr(lab: &Lab, i: usize) -> String {
    lab.clients[i]
        .exec(&[
            "ip",
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            &format!("fvtun-c{i}"),
        ])
        .unwrap()
}

/// `ip -4 route show PREFIX` in client namespace `i`.
fn client_route(lab: &Lab, i: usize, prefix: &str) -> String {
    lab.clients[i]
        .exec(&["ip", "-4", "route", "show", prefix])
        .unwrap()
}

/// Write per-client files into `dir` (created, readable by everyone).
fn ccd(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

/// Wait until the client was refused with AUTH_FAILED.
fn wait_refused(client: &mut Proc, server: &Proc) {
    if let Err(e) = client.wait_for_log_line(REFUSED, CONNECT_TIMEOUT) {
        panic!("{e:#}\n{}", log_tails(client, server));
    }
    assert!(!client.log().contains(UP), "{}", log_tails(client, server));
}

#[test]
fn ccd_pins_an_address_edits_pushes_per_client_and_disables_one_in_a_chroot_as_nobody() {
    let lab = lab("ccd-pin", 3);
    let wrap = lab.tls_crypt();
    // The directory is read inside the chroot, after dropping to nobody.
    let jail = lab.dir.join("jail");
    std::fs::create_dir_all(&jail).unwrap();
    std::fs::set_permissions(&jail, std::fs::Permissions::from_mode(0o755)).unwrap();
    ccd(
        &jail.join("ccd"),
        &[
            (
                "client1",
                "# pinned, with its own route\n\
                 ifconfig-push 10.8.0.50 255.255.255.0\n\
                 push \"route 10.99.0.0 255.255.0.0\"\n\
                 ping-timer-rem\n",
            ),
            ("client3", "disable\n"),
            ("DEFAULT", "push-remove \"route 10.97.\"\n"),
        ],
    );
    let mut sc = server_conf(
        &lab,
        &wrap,
        &[
            "client-config-dir /ccd",
            "chroot jail",
            "user nobody",
            "group nogroup",
        ],
    );
    sc.push = vec!["route 10.97.0.0 255.255.0.0".into()];
    // The pool starts at 10.8.0.2; pinning .50 must not hand it out.
    let mut server = lab.ferrovpn_server(&sc);
    let c1 = stock_client_up(&lab, 0, 0, &wrap, &server);
    let c2 = stock_client_up(&lab, 1, 1, &wrap, &server);

    let a1 = client_addr(&lab, 0);
    assert!(
        a1.contains("10.8.0.50/24"),
        "{a1}\n{}",
        log_tails(&c1, &server)
    );
    let a2 = client_addr(&lab, 1);
    assert!(
        a2.contains("10.8.0.2/24"),
        "{a2}\n{}",
        log_tails(&c2, &server)
    );
    for (i, c) in [(0, &c1), (1, &c2)] {
        ping(&lab.clients[i], "10.8.0.1", 2, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", log_tails(c, &server)));
    }
    // client1's own file adds a route and keeps the global one; DEFAULT
    // (client2) removes the global one.
    assert!(
        !client_route(&lab, 0, "10.99.0.0/16").is_empty(),
        "{}",
        log_tails(&c1, &server)
    );
    assert!(
        !client_route(&lab, 0, "10.97.0.0/16").is_empty(),
        "{}",
        log_tails(&c1, &server)
    );
    assert!(
        client_route(&lab, 1, "10.99.0.0/16").is_empty(),
        "{}",
        log_tails(&c2, &server)
    );
    assert!(
        client_route(&lab, 1, "10.97.0.0/16").is_empty(),
        "{}",
        log_tails(&c2, &server)
    );
    // A line ferrovpn cannot use is logged with its place, the rest applies.
    let log = server.log();
    assert!(
        log.contains("/ccd/client1:4: unsupported 'ping-timer-rem'"),
        "{}",
        server.log_tail(40)
    );

    // `disable` refuses client3.
    let mut c3 = stock_client(&lab, 2, 2, &wrap);
    wait_refused(&mut c3, &server);
    server
        .wait_for_log_line("rejected due to 'disable' directive", CONNECT_TIMEOUT)
        .unwrap();
}

#[test]
fn ccd_exclusive_refuses_a_client_without_a_file_of_its_own() {
    let lab = lab("ccd-excl", 2);
    let wrap = lab.tls_crypt();
    ccd(&lab.dir.join("ccd"), &[("client1", ""), ("DEFAULT", "")]);
    let sc = server_conf(&lab, &wrap, &["client-config-dir ccd", "ccd-exclusive"]);
    let server = lab.ferrovpn_server(&sc);
    let _c1 = stock_client_up(&lab, 0, 0, &wrap, &server);
    let mut c2 = stock_client(&lab, 1, 1, &wrap);
    wait_refused(&mut c2, &server);
    assert!(
        server
            .log()
            .contains("authentication failed for common name 'client2'"),
        "{}",
        server.log_tail(40)
    );
}

#[test]
fn iroute_carries_traffic_from_behind_the_server_to_a_site_behind_a_client() {
    let lab = lab("ccd-site", 1);
    let wrap = lab.tls_crypt();
    // lan (behind the server) 10.77.0.2 <-> server 10.77.0.1;
    // client 192.168.77.1 <-> site (behind the client) 192.168.77.2.
    let lan = Netns::unique("ccd-site-lan").unwrap();
    let site = Netns::unique("ccd-site-site").unwrap();
    let _lan_link = VethPair::new(&lab.server_ns, "10.77.0.1/24", &lan, "10.77.0.2/24").unwrap();
    let _site_link =
        VethPair::new(&lab.clients[0], "192.168.77.1/24", &site, "192.168.77.2/24").unwrap();
    lan.exec(&["ip", "route", "add", "default", "via", "10.77.0.1"])
        .unwrap();
    site.exec(&["ip", "route", "add", "default", "via", "192.168.77.1"])
        .unwrap();
    for ns in [&lab.server_ns, &lab.clients[0]] {
        ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])
            .unwrap();
    }
    ccd(
        &lab.dir.join("ccd"),
        &[("client1", "iroute 192.168.77.0 255.255.255.0\n")],
    );
    let mut sc = server_conf(
        &lab,
        &wrap,
        &["client-config-dir ccd", "route 192.168.77.0 255.255.255.0"],
    );
    // The client reaches the server's LAN; the pushed route to its own
    // site network is not pushed to it (2.6 drops routes matching iroutes).
    sc.push = vec![
        "route 10.77.0.0 255.255.255.0".into(),
        "route 192.168.77.0 255.255.255.0".into(),
    ];
    let server = lab.ferrovpn_server(&sc);
    let c1 = stock_client_up(&lab, 0, 0, &wrap, &server);
    assert!(
        !client_route(&lab, 0, "10.77.0.0/24").is_empty(),
        "{}",
        log_tails(&c1, &server)
    );
    let own = client_route(&lab, 0, "192.168.77.0/24");
    assert!(!own.contains("fvtun"), "{own}\n{}", log_tails(&c1, &server));
    // lan -> server -> tunnel -> client -> site, and back.
    let stats = ping(&lan, "192.168.77.2", 3, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", log_tails(&c1, &server)));
    assert_eq!(stats.received, 3, "{}", log_tails(&c1, &server));
    // And from the site side (its source is an iroute network).
    ping(&site, "10.77.0.2", 2, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", log_tails(&c1, &server)));
    assert!(
        server.log().contains("internal route 192.168.77.0/24"),
        "{}",
        server.log_tail(40)
    );
}
