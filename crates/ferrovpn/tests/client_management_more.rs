//! The management interface on a CLIENT, part three: the connection list
//! (`remote-entry-count`, `remote-entry-get`). Each script runs against the
//! ferrovpn client and Debian's stock 2.6 client with the same stock 2.6
//! server, and the test compares what both show.
//!
//! Needs root, `openvpn`, `ip` and `/dev/net/tun`; fails loudly without
//! them. Every wait has a deadline.

use std::path::PathBuf;
use std::time::Duration;

use ferrovpn_testkit::lab::wait_exit;
use ferrovpn_testkit::mgmt::Management;
use ferrovpn_testkit::{ClientConf, Implementation, Lab, Proc, openvpn_client_conf};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

fn imp_name(imp: Implementation) -> &'static str {
    match imp {
        Implementation::Stock => "stock",
        Implementation::Ferrovpn => "ferrovpn",
    }
}

/// A client of `imp` in namespace 0 from the config `text` plus `extra`,
/// with its management interface on a unix socket and `management-hold`.
fn managed(
    lab: &Lab,
    text: &str,
    imp: Implementation,
    name: &str,
    extra: &[String],
) -> (Proc, Management) {
    let socket: PathBuf = lab.dir.join(format!("{name}.sock"));
    let mut text = text.to_string();
    for l in [
        format!("management {} unix", socket.display()),
        "management-hold".to_string(),
    ]
    .iter()
    .chain(extra)
    {
        text.push_str(l);
        text.push('\n');
    }
    let p = lab.spawn(&lab.clients[0], name, imp, &text);
    let m = Management::connect_when_listening(&socket, Duration::from_secs(15));
    (p, m)
}

/// The lines of `m` that must be the same for both clients: replies,
/// questions and holds, and the state names (times and addresses cut).
fn same_lines(m: &Management) -> Vec<String> {
    m.seen()
        .iter()
        .filter_map(|l| match l.strip_prefix(">STATE:") {
            Some(s) => s.split(',').nth(1).map(|n| format!("STATE {n}")),
            None if l.starts_with(">BYTECOUNT") || l.starts_with(">INFO:") => None,
            None => Some(l.clone()),
        })
        .collect()
}

/// `remote-entry-count` and `remote-entry-get` before the first hold is
/// released (2.6 has no such commands yet then), and once connected: the
/// count, every entry, one, a range, past the end, a negative and a
/// non-numeric index, and a missing one.
fn entries_script(lab: &Lab, cc: &ClientConf, imp: Implementation) -> Vec<String> {
    let name = format!("{}-entries", imp_name(imp));
    let server = Lab::server_underlay(0);
    let extra = [
        format!("remote {server} 1196 tcp"),
        format!("remote {server} 1197 udp4"),
    ];
    let (mut client, mut m) = managed(lab, &openvpn_client_conf(cc), imp, &name, &extra);
    m.until("hold", |l| l.starts_with(">HOLD:"));
    m.one("state on");
    m.one("remote-entry-count");
    m.one("remote-entry-get all");
    m.one("hold release");
    m.until("CONNECTED state", |l| l.contains(",CONNECTED,"));
    m.block("remote-entry-count");
    for cmd in [
        "remote-entry-get all",
        "remote-entry-get 1",
        "remote-entry-get 1 3",
        "remote-entry-get 0 99",
        "remote-entry-get 3",
        "remote-entry-get 2 1",
        "remote-entry-get -1",
        "remote-entry-get x",
    ] {
        m.block(cmd);
    }
    m.one("remote-entry-get");
    m.one("signal SIGTERM");
    m.until("EXITING state", |l| l.contains(",EXITING,"));
    let _ = wait_exit(&mut client, Duration::from_secs(10));
    same_lines(&m)
}

#[test]
fn client_remote_entries_as_2_6() {
    let lab = Lab::new("centries", 1, FERROVPN);
    let (sc, cc) = lab.tls_crypt_confs();
    let _server = lab.stock_server(&sc);
    let ours = entries_script(&lab, &cc, Implementation::Ferrovpn);
    let stock = entries_script(&lab, &cc, Implementation::Stock);
    assert_eq!(
        ours, stock,
        "ferrovpn's lines differ from the stock client's"
    );
    let server = Lab::server_underlay(0);
    for line in [
        "ERROR: The 'remote-entry-count' command is not supported by the current daemon mode"
            .to_string(),
        "3".to_string(),
        format!("0,{server},1194,udp,enabled"),
        format!("1,{server},1196,tcp-client,enabled"),
        format!("2,{server},1197,udp4,enabled"),
        "ERROR: the 'remote-entry-get' command requires at least 1 parameter".to_string(),
    ] {
        assert!(ours.contains(&line), "{line} in {ours:?}");
    }
}

/// `<connection>` blocks (the top-level `remote` line taken out) with
/// `remote-random`: the entries as the client walks them. Returns the
/// count and the entries without their index, sorted (the order is
/// random), and whether the indices ran 0, 1, ...
fn random_connections_script(
    lab: &Lab,
    cc: &ClientConf,
    imp: Implementation,
) -> (Vec<String>, Vec<String>) {
    let name = format!("{}-random", imp_name(imp));
    let server = Lab::server_underlay(0);
    let text: String = openvpn_client_conf(cc)
        .lines()
        .filter(|l| !l.starts_with("remote "))
        .map(|l| format!("{l}\n"))
        .collect();
    let extra = [
        "remote-random".to_string(),
        format!(
            "<connection>\nremote {server} {} udp\n</connection>",
            cc.port
        ),
        format!(
            "<connection>\nremote {server} {} udp4\n</connection>",
            cc.port
        ),
        format!(
            "<connection>\nremote {server} {}\nproto udp\n</connection>",
            cc.port
        ),
    ];
    let (mut client, mut m) = managed(lab, &text, imp, &name, &extra);
    m.until("hold", |l| l.starts_with(">HOLD:"));
    m.one("hold release");
    let count = m.block("remote-entry-count");
    let mut entries = m.block("remote-entry-get all");
    for (i, e) in entries.iter_mut().enumerate() {
        let prefix = format!("{i},");
        *e = e
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{e} is not entry {i}: {:?}", m.seen()))
            .to_string();
    }
    entries.sort();
    m.one("signal SIGTERM");
    let _ = wait_exit(&mut client, Duration::from_secs(10));
    (count, entries)
}

#[test]
fn client_remote_entries_of_connection_blocks_as_2_6() {
    let lab = Lab::new("crandom", 1, FERROVPN);
    let (sc, cc) = lab.tls_crypt_confs();
    let _server = lab.stock_server(&sc);
    let ours = random_connections_script(&lab, &cc, Implementation::Ferrovpn);
    let stock = random_connections_script(&lab, &cc, Implementation::Stock);
    assert_eq!(
        ours, stock,
        "ferrovpn's entries differ from the stock client's"
    );
    assert_eq!(ours.0, ["3"]);
}
