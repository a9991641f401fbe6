//! Who gets a session on a ferrovpn server, and who keeps one: half-open
//! sessions, `connect-freq-initial`, and revocation of connected clients.
//! Real parts: ferrovpn as the server in a network namespace, Debian's
//! stock OpenVPN 2.6 as the client, hostile peers speaking the real wire
//! protocol from their own namespace.
//!
//! Needs root, `openvpn`, `ip`, `ping` and `/dev/net/tun`; every test fails
//! loudly without them. Every wait has a deadline.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ferrovpn_proto::wire::SessionId;
use ferrovpn_proto::wrap::ControlWrap;
use ferrovpn_testkit::lab::{CONNECT_TIMEOUT, SERVER_TUN, UP, count_lines, log_tails};
use ferrovpn_testkit::raw_peer::{client_reset, client_wrap, half_open, wrapped};
use ferrovpn_testkit::{Cipher, Lab, Material, Netns, Wrap, ping, wait_until};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

/// An attacker that completes `n` stateless handshakes, each from its own
/// source port: reset, read the server's cookie, echo it in an ACK_V1,
/// then never say anything again (a half-open session on the server).
/// Returns how many cookies it got.
///
/// Every socket stays open until the flood ends: a closed one's port may
/// be handed out again to a later one, whose handshake then replaces the
/// first one's half-open session at the same address (as it should), and
/// the flood would hold fewer sessions than it made (CI saw this once).
fn half_open_flood(ns: &Netns, to: SocketAddr, wrap: &ControlWrap, n: u32) -> u32 {
    ns.run(|| {
        let mut cookies = 0;
        let mut open = Vec::with_capacity(n as usize);
        for i in 0..n {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut sid = [0xa0; 8];
            sid[4..].copy_from_slice(&(i + 1).to_be_bytes());
            if half_open(&s, to, wrap, SessionId(sid)) {
                cookies += 1;
            }
            open.push(s);
        }
        cookies
    })
}

/// Audit M3: with `max-clients 4`, an attacker holding 50 half-open
/// sessions (no certificate) must not keep a real client out.
fn half_open_sessions_do_not_lock_out_clients(tag: &str, tls_crypt: bool) {
    let lab = Lab::new(tag, 2, FERROVPN);
    let key = tls_crypt.then(|| lab.static_key("tc.key"));
    let wrap = match &key {
        Some(k) => Wrap::TlsCrypt(Material::File(k.clone())),
        None => Wrap::None,
    };
    let mut sc = lab.server_conf(wrap.clone(), Cipher::Aes256Gcm);
    sc.extra.push("max-clients 4".into());
    let mut server = lab.ferrovpn_server(&sc);

    let cookies = half_open_flood(
        &lab.clients[0],
        Lab::server_addr(0),
        &client_wrap(key.as_deref()),
        50,
    );
    assert_eq!(
        cookies,
        50,
        "every reset got its cookie\n{}",
        server.log_tail(40)
    );
    let started = Instant::now();
    let cc = lab.client_conf(1, &lab.pki.clients[0], "fvtun-c", wrap, Cipher::Aes256Gcm);
    let mut client = lab.stock_client(1, "openvpn-client", &cc);
    if let Err(e) = client.wait_for_log_line(UP, CONNECT_TIMEOUT) {
        panic!("{e:#}\n{}", log_tails(&client, &server));
    }
    eprintln!(
        "{tag}: client up {:?} after 50 half-open sessions",
        started.elapsed()
    );
    let p = ping(&lab.clients[1], SERVER_TUN, 3, Duration::from_secs(10)).unwrap();
    assert!(p.received >= 2, "{p:?}\n{}", log_tails(&client, &server));
    let slog = server.log();
    // The attacker's address holds 8 half-open sessions, not 50.
    let attacker_sessions = slog
        .lines()
        .filter(|l| {
            l.contains(&format!("{}:", Lab::client_underlay(0))) && l.ends_with(": new session")
        })
        .count();
    assert_eq!(attacker_sessions, 8, "{slog}");
    assert!(count_lines(&slog, "(the limit per address)") >= 1, "{slog}");
    assert!(server.try_exit().is_none());
}

#[test]
fn half_open_sessions_do_not_lock_out_clients_without_wrapping() {
    half_open_sessions_do_not_lock_out_clients("adm-ho", false);
}

#[test]
fn half_open_sessions_do_not_lock_out_clients_with_tls_crypt() {
    half_open_sessions_do_not_lock_out_clients("adm-hotc", true);
}

/// Audit L2, as 2.6's `connect-freq-initial` (default 100 answers per
/// 10 s): a burst of forged resets gets at most that many answers, so the
/// server is no reflector; a real client still gets in once the period
/// ends.
#[test]
fn reset_answers_follow_connect_freq_initial() {
    let lab = Lab::new("adm-cfi", 2, FERROVPN);
    let sc = lab.server_conf(Wrap::None, Cipher::Aes256Gcm);
    let mut server = lab.ferrovpn_server(&sc);
    let to = Lab::server_addr(0);
    let answered = lab.clients[0].run(|| {
        let sockets: Vec<UdpSocket> = (0..200u32)
            .map(|i| {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                let mut sid = [0xb0; 8];
                sid[4..].copy_from_slice(&(i + 1).to_be_bytes());
                s.send_to(
                    &wrapped(&ControlWrap::None, &client_reset(SessionId(sid)), 1),
                    to,
                )
                .unwrap();
                s
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut answered = 0;
        for s in &sockets {
            let left = deadline.saturating_duration_since(Instant::now());
            s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut buf = [0u8; 256];
            if s.recv_from(&mut buf).is_ok() {
                answered += 1;
            }
        }
        answered
    });
    assert_eq!(answered, 100, "{}", server.log_tail(20));
    assert!(
        server
            .log()
            .contains("connect-freq-initial 100 10 rate limit exceeded"),
        "{}",
        server.log_tail(20)
    );
    // A stock client from elsewhere gets in once the period is over (its
    // resets are retransmitted).
    let cc = lab.client_conf(
        1,
        &lab.pki.clients[0],
        "fvtun-c",
        Wrap::None,
        Cipher::Aes256Gcm,
    );
    let mut client = lab.stock_client(1, "openvpn-client", &cc);
    if let Err(e) = client.wait_for_log_line(UP, CONNECT_TIMEOUT) {
        panic!("{e:#}\n{}", log_tails(&client, &server));
    }
    assert!(server.try_exit().is_none());
}

/// Whether one ping through the tunnel from `ns` gets an answer within 1 s.
fn tunnel_answers(ns: &Netns) -> bool {
    ping(ns, SERVER_TUN, 1, Duration::from_secs(1)).is_ok_and(|p| p.received > 0)
}

/// A connected client whose certificate a rewritten `crl-verify` file
/// revokes stops passing traffic within seconds, not at its next
/// renegotiation; other clients stay.
#[test]
fn a_connected_client_revoked_by_a_new_crl_is_dropped_within_seconds() {
    let lab = Lab::new("adm-crl", 2, FERROVPN);
    let key = lab.static_key("tc.key");
    let wrap = Wrap::TlsCrypt(Material::File(key));
    let crl = lab.dir.join("crl.pem");
    std::fs::copy(&lab.pki.crl_empty, &crl).unwrap();
    let mut sc = lab.server_conf(wrap.clone(), Cipher::Aes256Gcm);
    sc.extra.push(format!("crl-verify {}", crl.display()));
    let mut server = lab.ferrovpn_server(&sc);
    // crl-revoking.pem revokes the PKI's last client; client2 here holds it.
    let cc1 = lab.client_conf(
        0,
        &lab.pki.clients[0],
        "fvtun-a",
        wrap.clone(),
        Cipher::Aes256Gcm,
    );
    let mut client1 = lab.stock_client(0, "openvpn-client1", &cc1);
    let revoked = lab.pki.revoked_client();
    let cc2 = lab.client_conf(1, revoked, "fvtun-b", wrap, Cipher::Aes256Gcm);
    let mut client2 = lab.stock_client(1, "openvpn-client2", &cc2);
    for c in [&mut client1, &mut client2] {
        if let Err(e) = c.wait_for_log_line(UP, CONNECT_TIMEOUT) {
            panic!("{e:#}\n{}", log_tails(c, &server));
        }
    }
    for (i, c) in [&client1, &client2].into_iter().enumerate() {
        assert!(
            wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
                tunnel_answers(&lab.clients[i])
            }),
            "{}",
            log_tails(c, &server)
        );
    }
    // Revoke client2 the way CA tools publish a CRL: a new file renamed over the old.
    let tmp = lab.dir.join("crl.pem.new");
    std::fs::copy(&lab.pki.crl_revoking, &tmp).unwrap();
    let revoked_at = Instant::now();
    std::fs::rename(&tmp, &crl).unwrap();
    let cut = wait_until(Duration::from_secs(5), Duration::from_millis(100), || {
        !tunnel_answers(&lab.clients[1])
    });
    let took = revoked_at.elapsed();
    assert!(
        cut && took <= Duration::from_secs(6),
        "client2 still passes traffic {took:?} after its revocation\n{}",
        log_tails(&client2, &server)
    );
    eprintln!("revoked client cut off after {took:?}");
    let slog = server.log();
    assert_eq!(
        count_lines(&slog, "revoked by the reloaded crl-verify file"),
        1,
        "{slog}"
    );
    // client1 is not revoked and keeps its tunnel.
    assert!(
        tunnel_answers(&lab.clients[0]),
        "{}",
        log_tails(&client1, &server)
    );
    assert!(server.try_exit().is_none());
}
