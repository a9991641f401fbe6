//! A ferrovpn client session and server session talking in memory, with
//! virtual time and optional packet loss: handshake, push, key agreement,
//! renegotiation from either side, and refusal of a foreign CA.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrovpn_proto::data::{Cipher, KeyBlock, Side};
use ferrovpn_proto::session::cookie::{self, CookieKey};
use ferrovpn_proto::session::tls::{ServerCertPolicy, TlsMaterial, client_config, server_config};
use ferrovpn_proto::session::{Event, Session, SessionConfig};
use ferrovpn_proto::wire::{Opcode, parse_prefix};
use ferrovpn_proto::wrap::{AuthDigest, ControlWrap, KeyDirection, StaticKey};

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf = |cn: &str, eku: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf("server", ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf("client1", ExtendedKeyUsagePurpose::ClientAuth);
    Pki {
        ca: ca.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

fn configs(
    p: &Pki,
    client_pki: &Pki,
    wrap_s: ControlWrap,
    wrap_c: ControlWrap,
    reneg: Option<Duration>,
) -> (Arc<SessionConfig>, Arc<SessionConfig>) {
    let base = |side, wrap| {
        SessionConfig {
        side,
        wrap: Arc::new(wrap),
        tls_server: None,
        tls_client: None,
        data_ciphers: vec![Cipher::Aes256Gcm, Cipher::Aes128Gcm, Cipher::ChaCha20Poly1305],
        data_ciphers_fallback: None,
        tls_timeout: Duration::from_secs(2),
        hand_window: Duration::from_secs(60),
        reneg_interval: reneg,
        tran_window: Duration::from_secs(3600),
        max_packet_size: 1250,
        options_string: "V4,dev-type tun".into(),
        peer_info: "IV_VER=2.6.14\nIV_PLAT=linux\nIV_PROTO=990\nIV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\n".into(),
    }
    };
    let mut s = base(Side::Server, wrap_s);
    s.tls_server = Some(
        server_config(&TlsMaterial {
            ca_pem: &p.ca,
            cert_pem: &p.server_cert,
            key_pem: &p.server_key,
            extra_certs_pem: "",
            tls13_only: false,
            crls_pem: "",
        })
        .unwrap(),
    );
    let mut c = base(Side::Client, wrap_c);
    c.tls_client = Some(
        client_config(
            &TlsMaterial {
                ca_pem: &p.ca,
                cert_pem: &client_pki.client_cert,
                key_pem: &client_pki.client_key,
                extra_certs_pem: "",
                tls13_only: false,
                crls_pem: "",
            },
            ServerCertPolicy {
                remote_cert_tls_server: true,
                verify_name: None,
            },
        )
        .unwrap(),
    );
    (Arc::new(s), Arc::new(c))
}

#[derive(Default)]
struct Seen {
    keys: Vec<(u8, Cipher, [u8; 256])>,
    send_keys: Vec<u8>,
    closed: Option<String>,
    push: Option<String>,
    authenticated: bool,
    auth_failed: Option<String>,
}

fn drain_events(s: &mut Session, seen: &mut Seen, now: Instant, is_server: bool) {
    while let Some(ev) = s.poll_event() {
        match ev {
            Event::KeysReady {
                key_id,
                cipher,
                block,
            } => {
                let KeyBlock(b) = *block;
                seen.keys.push((key_id, cipher, b));
            }
            Event::SendKey { key_id } => seen.send_keys.push(key_id),
            Event::Closed(r) => seen.closed = Some(r),
            Event::ClientAuthenticated { .. } => {
                seen.authenticated = true;
                assert!(is_server);
                s.set_push_reply(
                    now,
                    "PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 60,ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm".into(),
                );
            }
            Event::PushReply(r) => seen.push = Some(format!("{r:?}")),
            Event::AuthFailed(r) => seen.auth_failed = Some(r),
            _ => {}
        }
    }
}

/// Run both sides until `done` or the virtual deadline; `drop_every` loses every n-th packet.
#[allow(clippy::too_many_arguments)] // test driver: both sides plus their observations
fn run(
    client: &mut Session,
    server: &mut Option<Session>,
    scfg: &Arc<SessionConfig>,
    now: &mut Instant,
    cs: &mut Seen,
    ss: &mut Seen,
    drop_every: usize,
    done: impl Fn(&Seen, &Seen) -> bool,
) {
    let end = *now + Duration::from_secs(600);
    let mut n = 0usize;
    while *now < end && !done(cs, ss) {
        let mut moved = false;
        while let Some(p) = client.poll_transmit() {
            n += 1;
            moved = true;
            if drop_every > 0 && n.is_multiple_of(drop_every) {
                continue;
            }
            match server {
                Some(s) => s.handle_packet(*now, &p),
                None => {
                    let (pkt, replay) = scfg.wrap.unwrap(&p).unwrap();
                    assert!(parse_prefix(&p).is_ok());
                    *server = Some(
                        Session::accept(scfg.clone(), *now, 1_700_000_000, pkt, replay).unwrap(),
                    );
                }
            }
        }
        if let Some(s) = server.as_mut() {
            drain_events(s, ss, *now, true);
            while let Some(p) = s.poll_transmit() {
                n += 1;
                moved = true;
                if drop_every > 0 && n.is_multiple_of(drop_every) {
                    continue;
                }
                client.handle_packet(*now, &p);
            }
        }
        drain_events(client, cs, *now, false);
        if !moved {
            let t = [
                client.poll_timeout(),
                server.as_ref().and_then(|s| s.poll_timeout()),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(*now + Duration::from_secs(1));
            *now = t.max(*now + Duration::from_millis(1));
            client.handle_timeout(*now);
            if let Some(s) = server.as_mut() {
                s.handle_timeout(*now);
            }
        }
    }
}

fn handshake(wrap_s: ControlWrap, wrap_c: ControlWrap, drop_every: usize) {
    handshake_with(wrap_s, wrap_c, drop_every, false);
}

/// A full handshake; `stateless`: the server starts the way a 2.6 server
/// does ([`stateless_start`]).
fn handshake_with(wrap_s: ControlWrap, wrap_c: ControlWrap, drop_every: usize, stateless: bool) {
    let p = pki();
    let (scfg, ccfg) = configs(&p, &p, wrap_s, wrap_c, None);
    let mut now = Instant::now();
    let mut client = Session::connect(ccfg, now, 1_700_000_000).unwrap();
    let mut server = stateless.then(|| stateless_start(&mut client, &scfg, &mut now));
    let (mut cs, mut ss) = (Seen::default(), Seen::default());
    run(
        &mut client,
        &mut server,
        &scfg,
        &mut now,
        &mut cs,
        &mut ss,
        drop_every,
        |c, s| !c.send_keys.is_empty() && !s.send_keys.is_empty(),
    );
    assert!(
        cs.closed.is_none() && ss.closed.is_none(),
        "{:?} {:?}",
        cs.closed,
        ss.closed
    );
    assert!(ss.authenticated);
    assert!(cs.push.is_some());
    assert_eq!(cs.keys.len(), 1);
    assert_eq!(ss.keys.len(), 1);
    assert_eq!(cs.keys[0].0, 0);
    assert_eq!(cs.keys[0].1, Cipher::Aes256Gcm);
    assert_eq!(cs.keys[0].2, ss.keys[0].2, "EKM key blocks differ");
}

#[test]
fn handshake_without_wrapping() {
    handshake(ControlWrap::None, ControlWrap::None, 0);
}

#[test]
fn handshake_tls_crypt_with_loss() {
    let k = StaticKey::generate();
    handshake(
        ControlWrap::tls_crypt(&k, Side::Server),
        ControlWrap::tls_crypt(&k, Side::Client),
        5,
    );
}

#[test]
fn handshake_tls_auth() {
    let k = StaticKey::generate();
    handshake(
        ControlWrap::tls_auth(&k, KeyDirection::Normal, AuthDigest::Sha256),
        ControlWrap::tls_auth(&k, KeyDirection::Inverse, AuthDigest::Sha256),
        0,
    );
}

#[test]
fn renegotiation_rotates_key_ids() {
    let p = pki();
    let (scfg, ccfg) = configs(
        &p,
        &p,
        ControlWrap::None,
        ControlWrap::None,
        Some(Duration::from_secs(30)),
    );
    let mut now = Instant::now();
    let mut client = Session::connect(ccfg, now, 1_700_000_000).unwrap();
    let mut server = None;
    let (mut cs, mut ss) = (Seen::default(), Seen::default());
    run(
        &mut client,
        &mut server,
        &scfg,
        &mut now,
        &mut cs,
        &mut ss,
        0,
        |c, _| c.send_keys.len() >= 9,
    );
    assert!(
        cs.closed.is_none() && ss.closed.is_none(),
        "{:?} {:?}",
        cs.closed,
        ss.closed
    );
    // key_id 0, then 1..7, then wrapping back to 1.
    assert_eq!(&cs.send_keys[..9], &[0, 1, 2, 3, 4, 5, 6, 7, 1]);
    for (c, s) in cs.keys.iter().zip(ss.keys.iter()) {
        assert_eq!(c.0, s.0);
        assert_eq!(c.2, s.2);
    }
}

#[test]
fn foreign_ca_client_is_refused() {
    let p = pki();
    let foreign = pki();
    let (scfg, ccfg) = configs(&p, &foreign, ControlWrap::None, ControlWrap::None, None);
    let mut now = Instant::now();
    let mut client = Session::connect(ccfg, now, 1_700_000_000).unwrap();
    let mut server = None;
    let (mut cs, mut ss) = (Seen::default(), Seen::default());
    run(
        &mut client,
        &mut server,
        &scfg,
        &mut now,
        &mut cs,
        &mut ss,
        0,
        |_, s| s.closed.is_some(),
    );
    assert!(ss.closed.is_some());
    assert!(ss.keys.is_empty() && cs.keys.is_empty());
}

/// Server: AES-256-GCM with fallback AES-256-GCM. A client announcing
/// `client_peer_info` and supporting only CHACHA20-POLY1305: returns what
/// the client and the server saw.
fn cipher_mismatch(client_peer_info: &str) -> (Seen, Seen) {
    let p = pki();
    let (scfg, ccfg) = configs(&p, &p, ControlWrap::None, ControlWrap::None, None);
    let (Ok(mut s), Ok(mut c)) = (Arc::try_unwrap(scfg), Arc::try_unwrap(ccfg)) else {
        panic!("configs are shared");
    };
    s.data_ciphers = vec![Cipher::Aes256Gcm];
    s.data_ciphers_fallback = Some(Cipher::Aes256Gcm);
    c.data_ciphers = vec![Cipher::ChaCha20Poly1305];
    c.peer_info = client_peer_info.into();
    let (scfg, ccfg) = (Arc::new(s), Arc::new(c));
    let mut now = Instant::now();
    let mut client = Session::connect(ccfg, now, 1_700_000_000).unwrap();
    let mut server = None;
    let (mut cs, mut ss) = (Seen::default(), Seen::default());
    run(
        &mut client,
        &mut server,
        &scfg,
        &mut now,
        &mut cs,
        &mut ss,
        0,
        |c, s| s.authenticated || c.auth_failed.is_some() || c.closed.is_some(),
    );
    (cs, ss)
}

#[test]
fn client_listing_ciphers_without_a_shared_one_is_refused_despite_fallback() {
    let (cs, ss) = cipher_mismatch(
        "IV_VER=2.6.14\nIV_PLAT=linux\nIV_PROTO=990\nIV_CIPHERS=CHACHA20-POLY1305\n",
    );
    assert!(!ss.authenticated);
    assert!(
        ss.auth_failed
            .as_deref()
            .is_some_and(|r| r.contains("no shared cipher")),
        "{:?} {:?}",
        ss.auth_failed,
        ss.closed
    );
    assert!(ss.keys.is_empty());
    // The client got the server's key-method-2 message and then the
    // AUTH_FAILED control message, like from OpenVPN.
    assert!(
        cs.auth_failed
            .as_deref()
            .is_some_and(|r| r.contains("no shared cipher")),
        "client saw {:?} {:?}",
        cs.auth_failed,
        cs.closed
    );
}

#[test]
fn client_negotiating_nothing_gets_the_fallback_cipher() {
    let (_, ss) = cipher_mismatch("IV_VER=2.3.18\nIV_PLAT=linux\n");
    assert!(ss.authenticated, "{:?} {:?}", ss.auth_failed, ss.closed);
    assert_eq!(ss.keys[0].1, Cipher::Aes256Gcm);
}

/// The server side of 2.6's stateless handshake: answer the client's reset
/// without a session (the first answer is lost, as a retransmission test),
/// then create the session from the client's next packet once its cookie
/// checks out. Returns the server session.
fn stateless_start(client: &mut Session, scfg: &Arc<SessionConfig>, now: &mut Instant) -> Session {
    const T: u64 = 1_700_000_000;
    let key = CookieKey::random();
    let from: std::net::SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let other: std::net::SocketAddr = "192.0.2.8:40000".parse().unwrap();
    let slot = CookieKey::time_slot(T, scfg.hand_window);
    let answer = |client: &mut Session| {
        let reset = client.poll_transmit().expect("client reset");
        let (pkt, _) = scfg.wrap.unwrap(&reset).unwrap();
        assert_eq!(pkt.opcode, Opcode::HardResetClientV2);
        let sid = key.session_id(slot, from, pkt.session_id);
        (cookie::reset_reply(&scfg.wrap, T, &pkt, sid), sid)
    };
    let (_lost, _) = answer(client);
    // The client resends its reset after tls-timeout; the same cookie comes back.
    *now = client.poll_timeout().unwrap();
    client.handle_timeout(*now);
    let (reply, sid) = answer(client);
    client.handle_packet(*now, &reply);
    let third = client
        .poll_transmit()
        .expect("client's packet after the reset");
    let (pkt, replay) = scfg.wrap.unwrap(&third).unwrap();
    let echoed = pkt.remote_session_id.expect("it acknowledges our reset");
    assert!(key.verify(T, scfg.hand_window, from, pkt.session_id, echoed));
    assert!(!key.verify(T, scfg.hand_window, other, pkt.session_id, echoed));
    assert!(!CookieKey::random().verify(T, scfg.hand_window, from, pkt.session_id, echoed));
    // A forged echo or a later message id makes no session.
    let mut forged = pkt.clone();
    forged.message_id = Some(5);
    assert!(Session::accept_cookie(scfg.clone(), *now, T, sid, forged, None).is_err());
    let mut server = Session::accept_cookie(scfg.clone(), *now, T, sid, pkt, replay).unwrap();
    while let Some(p) = client.poll_transmit() {
        server.handle_packet(*now, &p);
    }
    server
}

#[test]
fn stateless_handshake_without_wrapping() {
    handshake_with(ControlWrap::None, ControlWrap::None, 0, true);
}

#[test]
fn stateless_handshake_tls_crypt() {
    let k = StaticKey::generate();
    handshake_with(
        ControlWrap::tls_crypt(&k, Side::Server),
        ControlWrap::tls_crypt(&k, Side::Client),
        0,
        true,
    );
}

/// The server's session config with `verify-x509-name NAME name` applied.
fn with_verify_name(base: &Arc<SessionConfig>, p: &Pki, name: &str) -> Arc<SessionConfig> {
    use ferrovpn_proto::session::tls::{PeerCertPolicy, X509NameCheck, server_config_with_policy};
    let mut s = (**base).clone();
    s.tls_server = Some(
        server_config_with_policy(
            &TlsMaterial {
                ca_pem: &p.ca,
                cert_pem: &p.server_cert,
                key_pem: &p.server_key,
                extra_certs_pem: "",
                tls13_only: false,
                crls_pem: "",
            },
            PeerCertPolicy {
                verify_name: Some(X509NameCheck::CommonName(name.into())),
                ..PeerCertPolicy::default()
            },
        )
        .unwrap(),
    );
    Arc::new(s)
}

/// `verify-x509-name client1 name` on the server: the client's certificate
/// has CN `client1`, so it passes; the same client is refused when the
/// server wants `client2`.
#[test]
fn server_verify_x509_name_admits_only_the_named_client() {
    let p = pki();
    let (base, ccfg) = configs(&p, &p, ControlWrap::None, ControlWrap::None, None);
    for (wanted, admitted) in [("client1", true), ("client2", false)] {
        let scfg = with_verify_name(&base, &p, wanted);
        let mut now = Instant::now();
        let mut client = Session::connect(ccfg.clone(), now, 1_700_000_000).unwrap();
        let mut server = None;
        let (mut cs, mut ss) = (Seen::default(), Seen::default());
        run(
            &mut client,
            &mut server,
            &scfg,
            &mut now,
            &mut cs,
            &mut ss,
            0,
            |c, s| s.closed.is_some() || (!c.send_keys.is_empty() && !s.send_keys.is_empty()),
        );
        if admitted {
            assert!(ss.closed.is_none(), "{:?}", ss.closed);
            assert!(ss.authenticated && cs.keys.len() == 1);
            let cn = server.as_ref().and_then(Session::peer_common_name);
            assert_eq!(cn.as_deref(), Some("client1"));
        } else {
            let reason = ss.closed.expect("server kept a client it must refuse");
            assert!(reason.contains("verify-x509-name"), "{reason}");
            assert!(!ss.authenticated && ss.keys.is_empty() && cs.keys.is_empty());
        }
    }
}
