//! `user` / `group`: ferrovpn gives up root once set up, and keeps working
//! as `nobody` — a server with stock clients (traffic, renegotiation,
//! reconnects, CRL, and the status and ifconfig-pool-persist files in a
//! directory only root may write, kept open from before the switch as in
//! 2.6), a client across server restarts (routes re-applied).
//! `chroot`: a server chroots before switching user, re-reads its CRL
//! inside the chroot, and keeps writing its status file outside it.
//!
//! Needs root, `openvpn`, `ip`, `ping`, `ss` and the users `nobody` and
//! group `nogroup` (Debian); fails loudly without them.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferrovpn_testkit::Implementation::{Ferrovpn, Stock};
use ferrovpn_testkit::lab::{CONNECT_TIMEOUT, UP, log_tails, wait_for_count};
use ferrovpn_testkit::{ClientConf, Lab, Material, Proc, wait_for_file_text, wait_until};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
/// `nobody` and `nogroup` on Debian.
const NOBODY: &str = "65534";

/// A lab with one client namespace whose scratch directory `nobody` may
/// enter but not write.
fn lab(tag: &str) -> Lab {
    let lab = Lab::new(tag, 1, FERROVPN);
    std::fs::set_permissions(lab.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    lab
}

/// A `/proc/<pid>/status` field, e.g. `Uid` -> "65534\t65534\t65534\t65534".
fn proc_status(pid: u32, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

/// Wait until `p` runs as nobody:nogroup, then check what it kept.
fn assert_runs_as_nobody(p: &Proc, cap_eff: &str) {
    let all_nobody = |field: &str| {
        proc_status(p.pid(), field)
            .split_whitespace()
            .all(|id| id == NOBODY)
    };
    assert!(
        wait_until(CONNECT_TIMEOUT, Duration::from_millis(50), || all_nobody(
            "Uid"
        )),
        "{} still runs as Uid {}:\n{}",
        p.name(),
        proc_status(p.pid(), "Uid"),
        p.log()
    );
    assert!(all_nobody("Gid"), "Gid {}", proc_status(p.pid(), "Gid"));
    assert_eq!(proc_status(p.pid(), "Groups"), NOBODY);
    assert_eq!(proc_status(p.pid(), "NoNewPrivs"), "1");
    assert_eq!(proc_status(p.pid(), "CapEff"), cap_eff);
    assert_eq!(proc_status(p.pid(), "CapPrm"), cap_eff);
    // Every thread (the data-plane workers too) switched, not just the caller.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", p.pid())).unwrap();
    for t in tasks {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uid.split_whitespace().skip(1).all(|id| id == NOBODY),
            "a thread kept {uid}"
        );
    }
}

/// `cc` with the certificate the lab's revoking CRL revokes.
fn with_revoked_certificate(lab: &Lab, cc: &ClientConf) -> ClientConf {
    let revoked = lab.pki.revoked_client().clone();
    let mut cc = cc.clone();
    cc.cert = Material::File(revoked.cert);
    cc.key = Material::File(revoked.key);
    cc
}

#[test]
fn server_as_nobody_serves_renegotiates_and_keeps_status_pool_and_crl() {
    let lab = lab("pv-srv");
    let (mut sc, cc) = lab.tls_crypt_confs();
    // In root's directory, which nobody cannot write: written through the
    // descriptors opened before the switch, as OpenVPN 2.6 does.
    let status = lab.dir.join("status.log");
    let pool = lab.dir.join("ipp.txt");
    let crl = lab.dir.join("crl.pem");
    std::fs::copy(&lab.pki.crl_empty, &crl).unwrap();
    sc.reneg_sec = Some(4);
    sc.extra.extend([
        "user nobody".to_string(),
        "group nogroup".to_string(),
        format!("status {} 1", status.display()),
        format!("ifconfig-pool-persist {} 1", pool.display()),
        format!("crl-verify {}", crl.display()),
    ]);
    let mut server = lab.ferrovpn_server(&sc);
    // A server re-applies nothing after start: it keeps no capability.
    assert_runs_as_nobody(&server, "0000000000000000");

    let client = lab.client_up(Stock, 0, "openvpn-client", &cc, &server);
    lab.ping_server(0, &client, &server);
    // reneg-sec 4: a new key comes up and traffic follows it.
    assert!(
        wait_for_count(&server, "key_id 1 active", 1, Duration::from_secs(20)),
        "no renegotiation\n{}",
        log_tails(&client, &server)
    );
    lab.ping_server(0, &client, &server);
    // Both files are still written, by nobody.
    for (file, line) in [(&status, "client1,"), (&pool, "client1,10.8.0.")] {
        assert!(
            wait_for_file_text(file, line, CONNECT_TIMEOUT),
            "{} without {line}\n{}",
            file.display(),
            server.log()
        );
    }
    // The client reconnects (a fresh TLS session, CRL checked again).
    drop(client);
    let client = lab.client_up(Stock, 0, "openvpn-client-2", &cc, &server);
    lab.ping_server(0, &client, &server);
    // A CRL replaced after the switch is read by nobody and enforced:
    // crl-revoking.pem revokes the last client.
    drop(client);
    let tmp = lab.dir.join("crl.pem.new");
    std::fs::copy(&lab.pki.crl_revoking, &tmp).unwrap();
    std::fs::rename(&tmp, &crl).unwrap();
    let cc3 = with_revoked_certificate(&lab, &cc);
    let client = lab.stock_client(0, "openvpn-client-revoked", &cc3);
    assert!(
        wait_for_count(&server, "crl-verify: reloaded", 1, CONNECT_TIMEOUT)
            && wait_for_count(&server, "Revoked", 1, CONNECT_TIMEOUT),
        "{}",
        log_tails(&client, &server)
    );
    assert!(
        !client.log().contains(UP),
        "{}",
        log_tails(&client, &server)
    );
    assert!(server.try_exit().is_none(), "{}", server.log());
}

#[test]
fn client_as_nobody_reapplies_routes_after_a_server_restart() {
    let lab = lab("pv-cli");
    let (mut sc, mut cc) = lab.tls_crypt_confs();
    // Pushed as "ping 1,ping-restart 4": the client notices a dead server
    // and reconnects over the same data plane. (With explicit-exit-notify
    // it would open a new tun device, which needs /dev/net/tun to be
    // writable by nobody: 0666 on Debian, 0600 on some test machines.)
    sc.keepalive = Some((1, 4));
    sc.push = vec!["route 10.99.0.0 255.255.255.0".into()];
    cc.extra.extend([
        "user nobody".to_string(),
        "group nogroup".to_string(),
        "connect-retry 1 2".to_string(),
    ]);
    let mut server = lab.stock_server(&sc);
    let client = lab.client_up(Ferrovpn, 0, "ferrovpn-client", &cc, &server);
    // A client keeps CAP_NET_ADMIN (bit 12), for routes on reconnect.
    assert_runs_as_nobody(&client, "0000000000001000");
    assert_eq!(proc_status(client.pid(), "CapAmb"), "0000000000001000");
    assert_tunnel_route(&lab);

    // The server goes away (without telling the client) and comes back:
    // the client, as nobody, sets the address and the pushed route up again.
    server.stop(Duration::from_secs(15));
    drop(server);
    // (Its log goes to openvpn-server-2.log: the lab never reuses a name.)
    let server = lab.stock_server(&sc);
    assert!(
        wait_for_count(&client, UP, 2, CONNECT_TIMEOUT),
        "client did not reconnect:\n{}",
        log_tails(&client, &server)
    );
    assert_runs_as_nobody(&client, "0000000000001000");
    lab.ping_server(0, &client, &server);
    assert_tunnel_route(&lab);
    assert!(
        !client.log().contains("Operation not permitted"),
        "{}",
        log_tails(&client, &server)
    );
}

/// The pushed route goes into the tunnel.
fn assert_tunnel_route(lab: &Lab) {
    let r = lab.clients[0]
        .exec(&["ip", "route", "get", "10.99.0.7"])
        .unwrap();
    assert!(r.contains("fvtun-c"), "{r}");
}

/// An empty jail for `chroot`, with a copy of `file` at its own path
/// inside (what the server re-reads after the chroot).
fn jail_with(lab: &Lab, file: &Path, content: &Path) -> PathBuf {
    let jail = lab.dir.join("jail");
    let inside = jail.join(file.strip_prefix("/").unwrap());
    std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
    std::fs::copy(content, &inside).unwrap();
    std::fs::canonicalize(&jail).unwrap()
}

#[test]
fn server_in_chroot_as_nobody_serves_reads_its_crl_inside_and_writes_status_outside() {
    let lab = lab("pv-chr");
    let (mut sc, cc) = lab.tls_crypt_confs();
    // Outside the jail: kept open from before the chroot, as in 2.6.
    let status = lab.dir.join("status.log");
    // Read at start from the real path (revokes nobody), then from the
    // jail (revokes the last client), as OpenVPN 2.6 does.
    let crl = lab.dir.join("crl.pem");
    std::fs::copy(&lab.pki.crl_empty, &crl).unwrap();
    let jail = jail_with(&lab, &crl, &lab.pki.crl_revoking);
    sc.extra.extend([
        format!("chroot {}", jail.display()),
        "user nobody".to_string(),
        "group nogroup".to_string(),
        format!("crl-verify {}", crl.display()),
        format!("status {} 1", status.display()),
    ]);
    let mut server = lab.ferrovpn_server(&sc);
    // chroot first (it needs root), then the switch to nobody.
    assert_runs_as_nobody(&server, "0000000000000000");
    let root = std::fs::read_link(format!("/proc/{}/root", server.pid())).unwrap();
    assert_eq!(root, jail, "{}", server.log());
    assert!(
        server.log().contains(&format!(
            "chroot to '{}' and cd to '/' succeeded",
            jail.display()
        )),
        "{}",
        server.log()
    );

    let client = lab.client_up(Stock, 0, "openvpn-client", &cc, &server);
    lab.ping_server(0, &client, &server);
    assert!(
        wait_for_file_text(&status, "client1,", CONNECT_TIMEOUT),
        "status file without client1\n{}",
        server.log()
    );

    // The CRL inside the jail is the one enforced now.
    let cc2 = with_revoked_certificate(&lab, &cc);
    let revoked_client = lab.stock_client(0, "openvpn-client-revoked", &cc2);
    assert!(
        wait_for_count(&server, "Revoked", 1, CONNECT_TIMEOUT),
        "{}",
        log_tails(&revoked_client, &server)
    );
    assert!(
        !revoked_client.log().contains(UP),
        "{}",
        log_tails(&revoked_client, &server)
    );
    assert!(server.try_exit().is_none(), "{}", server.log());
}
