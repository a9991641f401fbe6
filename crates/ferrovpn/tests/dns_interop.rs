//! Pushed DNS with Debian's stock OpenVPN 2.6 as the server: applied by the
//! ferrovpn client on a real systemd-resolved (run by hand on a private
//! bus, never installed: see `ferrovpn_testkit::resolved`) over D-Bus and
//! reverted on exit; and the `dns_*` variables an `up` script gets,
//! compared with what the stock 2.6 client gives the same script.
//!
//! Needs root, the lab's tools, `apt-get` (the systemd-resolved package is
//! downloaded), `dbus-daemon`, `busctl`, `unshare` and `/dev/net/tun`;
//! every test fails loudly without them. Every wait has a deadline.

use std::time::Duration;

use ferrovpn_testkit::lab::{CLIENT_DEV, CONNECT_TIMEOUT, UP, log_tails, terminate};
use ferrovpn_testkit::resolved::PrivateResolved;
use ferrovpn_testkit::{
    Cipher, Implementation, Lab, Material, Proc, Wrap, openvpn_client_conf, sh_script, wait_until,
    write_static_key,
};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

/// What the server pushes: 2.6's `dns` options and the older
/// `dhcp-option`s together.
fn pushed_dns() -> Vec<String> {
    [
        "dhcp-option DNS 10.8.0.53",
        "dns server 1 address 10.8.0.1",
        "dns server 1 dnssec optional",
        "dns server 1 transport DoT",
        "dns search-domains corp.example",
        "dhcp-option DOMAIN-SEARCH b.example",
    ]
    .map(String::from)
    .to_vec()
}

/// The value part of resolvectl's `Link N (DEV): VALUE` line for `dev`.
fn link_value(out: &str, dev: &str) -> Option<String> {
    let tag = format!("({dev}):");
    out.lines().find_map(|l| {
        let at = l.find(&tag)?;
        Some(l[at + tag.len()..].trim().to_owned())
    })
}

#[test]
fn client_sets_pushed_dns_on_a_real_systemd_resolved_and_reverts_it() {
    let lab = Lab::new("dnsrs", 1, FERROVPN);
    let host_before = std::fs::read("/etc/resolv.conf").ok();
    let resolved = PrivateResolved::new(&lab.dir.join("resolved"));
    let (mut sc, cc) = lab.tls_crypt_confs();
    sc.push = pushed_dns();
    let server = lab.stock_server(&sc);
    let conf = lab.dir.join("ferrovpn-client.conf");
    std::fs::write(&conf, openvpn_client_conf(&cc)).unwrap();
    let ns = &lab.clients[0];
    let mut client = resolved.spawn(
        ns,
        "ferrovpn-client",
        lab.dir.path(),
        FERROVPN,
        &["--config".as_ref(), conf.as_os_str()],
    );
    if let Err(e) = client.wait_for_log_line(UP, CONNECT_TIMEOUT) {
        panic!("{e:#}\n{}", log_tails(&client, &server));
    }
    let log = client.log();
    assert!(
        log.contains("via systemd-resolved"),
        "the client did not use resolved over D-Bus:\n{}\n--- resolved ---\n{}",
        client.log_tail(30),
        resolved.log()
    );
    let ask = |what: &str| {
        let out = resolved.resolvectl(ns, &[what]);
        link_value(&out, CLIENT_DEV)
            .unwrap_or_else(|| panic!("resolvectl {what}: no {CLIENT_DEV} in\n{out}"))
    };
    // What resolved holds for the tunnel's link, read back over the bus.
    assert_eq!(ask("dns"), "10.8.0.53 10.8.0.1");
    assert_eq!(ask("domain"), "corp.example b.example");
    assert_eq!(ask("default-route"), "yes");
    assert_eq!(ask("dnssec"), "allow-downgrade");
    assert_eq!(ask("dnsovertls"), "yes");

    let st = terminate(&mut client, Duration::from_secs(10));
    assert!(st.success(), "{st}:\n{}", client.log_tail(20));
    assert!(
        client.log().contains(&format!(
            "DNS settings on {CLIENT_DEV} reverted via systemd-resolved"
        )),
        "{}\n--- resolved ---\n{}",
        client.log_tail(20),
        resolved.log()
    );
    let after = resolved.resolvectl(ns, &["dns"]);
    assert!(
        !after.contains("10.8.0.53") && !after.contains(CLIENT_DEV),
        "resolved still has the VPN's servers:\n{after}"
    );
    assert_eq!(std::fs::read("/etc/resolv.conf").ok(), host_before);
}

/// An `up` script that writes the `dns_*` part of its environment, sorted,
/// to `OUT`.
fn dns_env_recorder(lab: &Lab, out: &std::path::Path) -> std::path::PathBuf {
    sh_script(
        lab.dir.join("dns-env.sh"),
        &format!(
            "env | grep '^dns_' | sort > '{}.tmp'\nmv '{0}.tmp' '{0}'\nexit 0\n",
            out.display()
        ),
    )
}

/// Run a client (`imp`) whose `up` script records the `dns_*` variables;
/// returns them once written.
fn dns_env_of(lab: &Lab, imp: Implementation, server: &Proc) -> String {
    let name = imp.name();
    let out = lab.dir.join(format!("{name}.dns.env"));
    let script = dns_env_recorder(lab, &out);
    let mut cc = lab.client_conf(
        0,
        &lab.pki.clients[0],
        CLIENT_DEV,
        shared_wrap(lab),
        Cipher::Aes256Gcm,
    );
    cc.extra.push("script-security 2".into());
    cc.extra.push(format!("up \"{}\"", script.display()));
    let mut client = lab.client(imp, 0, &format!("{name}-client"), &cc);
    let written = wait_until(CONNECT_TIMEOUT, Duration::from_millis(50), || out.exists());
    assert!(written, "no up script run:\n{}", log_tails(&client, server));
    let env = std::fs::read_to_string(&out).unwrap();
    terminate(&mut client, Duration::from_secs(10));
    env
}

/// tls-crypt with the key both sides of a test share.
fn shared_wrap(lab: &Lab) -> Wrap {
    Wrap::TlsCrypt(Material::File(lab.dir.join("shared.key")))
}

#[test]
fn up_script_gets_the_dns_variables_of_the_stock_client() {
    let lab = Lab::new("dnsenv", 1, FERROVPN);
    write_static_key(&lab.dir.join("shared.key")).unwrap();
    let mut sc = lab.server_conf(shared_wrap(&lab), Cipher::Aes256Gcm);
    sc.push = pushed_dns();
    sc.push.extend(
        [
            "dns server 0 address 10.8.0.2 [fd00::53]:5353",
            "dns server 0 resolve-domains a.example b.example",
            "dns server 0 sni dns.example",
            "dns server 3 address 10.8.0.3:53",
            "dns server 3 transport DoH",
            // Refused by both: a pushed priority is 0..127, one bad
            // address drops the line, the keyword is plural.
            "dns server -2 address 10.8.0.9",
            "dns server 4 address 10.8.0.4 not-an-address",
            "dns search-domain wrong.example",
        ]
        .map(String::from),
    );
    let server = lab.stock_server(&sc);
    let stock = dns_env_of(&lab, Implementation::Stock, &server);
    assert!(
        stock.contains("dns_server_1_address_1=10.8.0.2"),
        "the stock client's up script saw no dns_* variables:\n{stock}"
    );
    let ours = dns_env_of(&lab, Implementation::Ferrovpn, &server);
    assert_eq!(ours, stock);
}
