//! A ferrovpn client session and server session talking in memory, with
//! virtual time and optional packet loss: handshake, push, key agreement,
//! renegotiation from either side, refusal of a foreign CA, and the limits a
//! hostile or revoked peer runs into (buffer bounds, failed or ignored
//! renegotiations, identity changes, soft-reset pacing, split push replies),
//! and the stateless start of a tls-crypt-v2 client.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrovpn_proto::data::{Cipher, Side};
use ferrovpn_proto::session::cookie::{self, CookieKey};
use ferrovpn_proto::session::tls::{ServerCertPolicy, TlsMaterial, client_config, server_config};
use ferrovpn_proto::session::{Event, Session, SessionConfig, SessionError};
use ferrovpn_proto::tls_crypt_v2::{ClientKey, Metadata, OpenError, ServerKey, WkcError};
use ferrovpn_proto::wire::{
    ControlPacket, EarlyNegotiation, Opcode, announces_early_negotiation, parse_prefix,
};
use ferrovpn_proto::wrap::{AuthDigest, ControlWrap, KeyDirection, StaticKey};

struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
    /// DER of `client_cert`.
    client_der: Vec<u8>,
    /// A second client of the same CA (serial 4).
    client2_cert: String,
    client2_key: String,
    /// Signs CRLs (leaf serials: server 2, client1 3, client2 4).
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

/// `cert_pem` and `key_pem` under the CA `ca_pem`, with `crls_pem`.
fn material<'a>(
    ca_pem: &'a str,
    cert_pem: &'a str,
    key_pem: &'a str,
    crls_pem: &'a str,
) -> TlsMaterial<'a> {
    TlsMaterial {
        ca_pem,
        cert_pem,
        key_pem,
        extra_certs_pem: "",
        tls13_only: false,
        crls_pem,
    }
}

/// Leaf serial of `client1`.
const CLIENT1_SERIAL: u64 = 3;

#[path = "support/crl.rs"]
mod crl_support;

/// A PEM CRL from the test CA revoking `serials`.
fn crl(p: &Pki, serials: &[u64]) -> String {
    crl_support::crl_pem(&p.issuer, serials)
}

/// The server's session configuration with `crls_pem` loaded.
fn server_config_with_crl(p: &Pki, base: &SessionConfig, crls_pem: &str) -> Arc<SessionConfig> {
    let mut s = base.clone();
    s.tls_server =
        Some(server_config(&material(&p.ca, &p.server_cert, &p.server_key, crls_pem)).unwrap());
    Arc::new(s)
}

/// The client's session configuration with another certificate and key.
fn client_config_with_cert(
    p: &Pki,
    base: &SessionConfig,
    cert_pem: &str,
    key_pem: &str,
) -> Arc<SessionConfig> {
    let mut c = base.clone();
    c.tls_client = Some(
        client_config(
            &material(&p.ca, cert_pem, key_pem, ""),
            ServerCertPolicy {
                remote_cert_tls_server: true,
                verify_name: None,
            },
        )
        .unwrap(),
    );
    Arc::new(c)
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
    let leaf = |cn: &str, eku: ExtendedKeyUsagePurpose, serial: u64| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::new()).unwrap();
        p.serial_number = Some(rcgen::SerialNumber::from(serial));
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![eku];
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    };
    let (server_cert, server_key, _) = leaf("server", ExtendedKeyUsagePurpose::ServerAuth, 2);
    let (client_cert, client_key, client_der) = leaf(
        "client1",
        ExtendedKeyUsagePurpose::ClientAuth,
        CLIENT1_SERIAL,
    );
    let (client2_cert, client2_key, _) = leaf("client2", ExtendedKeyUsagePurpose::ClientAuth, 4);
    Pki {
        ca: ca.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
        client_der,
        client2_cert,
        client2_key,
        issuer,
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
        data_auth: ferrovpn_proto::wrap::AuthDigest::Sha1,
        tls_timeout: Duration::from_secs(2),
        hand_window: Duration::from_secs(60),
        reneg_interval: reneg,
        tran_window: Duration::from_secs(3600),
        max_packet_size: 1250,
        options_string: "V4,dev-type tun".into(),
        peer_info: "IV_VER=2.6.14\nIV_PLAT=linux\nIV_PROTO=990\nIV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\n".into(),
        pull_filters: Vec::new(),
        p2p: false,
    }
    };
    (
        server_config_with_crl(p, &base(Side::Server, wrap_s), ""),
        client_config_with_cert(
            p,
            &base(Side::Client, wrap_c),
            &client_pki.client_cert,
            &client_pki.client_key,
        ),
    )
}

#[derive(Default)]
struct Seen {
    keys: Vec<(u8, Cipher, [u8; 256])>,
    send_keys: Vec<u8>,
    retired: Vec<u8>,
    closed: Option<SessionError>,
    push: Option<String>,
    /// Client: every push reply event, in full.
    push_replies: Vec<ferrovpn_proto::push::PushReply>,
    authenticated: bool,
    auth_failed: Option<String>,
    /// Server: the push reply text to set (a small default when `None`).
    reply_text: Option<String>,
    /// The key_ids whose verdict on the peer's chain was asked for
    /// ([`Event::VerifyPeer`]).
    verify_asked: Vec<u8>,
    /// The verdict given at once when asked; `None`: none (held).
    verdict: Option<bool>,
    /// Server: the credentials of the first key exchange.
    credentials: Option<(String, String)>,
}

fn drain_events(s: &mut Session, seen: &mut Seen, now: Instant, is_server: bool) {
    while let Some(ev) = s.poll_event() {
        match ev {
            Event::KeysReady {
                key_id,
                cipher,
                block,
                ..
            } => {
                seen.keys.push((key_id, cipher, block.0));
            }
            Event::SendKey { key_id } => seen.send_keys.push(key_id),
            Event::KeyRetired { key_id } => seen.retired.push(key_id),
            Event::Closed(r) => seen.closed = Some(r),
            Event::ClientAuthenticated { credentials, .. } => {
                seen.authenticated = true;
                seen.credentials =
                    Some((credentials.username.clone(), credentials.password.clone()));
                assert!(is_server);
                let text = seen.reply_text.clone().unwrap_or_else(|| {
                    "PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 60,ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm".into()
                });
                s.set_push_reply(now, text);
            }
            Event::PushReply(r) => {
                seen.push = Some(format!("{r:?}"));
                seen.push_replies.push(r);
            }
            Event::AuthFailed(r) => seen.auth_failed = Some(r),
            Event::VerifyPeer { key_id } => {
                seen.verify_asked.push(key_id);
                if let Some(accepted) = seen.verdict {
                    s.peer_verified(now, key_id, accepted);
                }
            }
            _ => {}
        }
    }
}

fn handshake(wrap_s: ControlWrap, wrap_c: ControlWrap, drop_every: usize) {
    handshake_with(wrap_s, wrap_c, drop_every, false);
}

/// A full handshake; `stateless`: the server starts the way a 2.6 server
/// does ([`stateless_start`]).
fn handshake_with(wrap_s: ControlWrap, wrap_c: ControlWrap, drop_every: usize, stateless: bool) {
    let mut pair = Pair::start_with(wrap_s, wrap_c, None, |_| {});
    if stateless {
        pair.server = Some(stateless_start(&mut pair.client, &pair.scfg, &mut pair.now));
    }
    pair.run_to_keys(drop_every);
    let (cs, ss) = (&pair.cs, &pair.ss);
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
    let mut pair = Pair::start_with(
        ControlWrap::None,
        ControlWrap::None,
        Some(Duration::from_secs(30)),
        |_| {},
    );
    pair.run(|c, _| c.send_keys.len() >= 9);
    pair.assert_open();
    let (cs, ss) = (&pair.cs, &pair.ss);
    // key_id 0, then 1..7, then wrapping back to 1.
    assert_eq!(&cs.send_keys[..9], &[0, 1, 2, 3, 4, 5, 6, 7, 1]);
    // Both sides installed the same keys (the server may be one ahead).
    assert!(cs.keys.len() >= 9);
    assert!(
        ss.keys.len() == cs.keys.len() || ss.keys.len() == cs.keys.len() + 1,
        "client installed {} keys, server {}",
        cs.keys.len(),
        ss.keys.len()
    );
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
    let mut pair = Pair::connect(Rc::new(p), scfg, ccfg);
    pair.run(|_, s| s.closed.is_some());
    assert!(pair.ss.closed.is_some());
    assert!(pair.ss.keys.is_empty() && pair.cs.keys.is_empty());
}

/// Server: AES-256-GCM with fallback AES-256-GCM. A client announcing
/// `client_peer_info` and supporting only CHACHA20-POLY1305: returns what
/// the client and the server saw.
fn cipher_mismatch(client_peer_info: &str) -> (Seen, Seen) {
    let mut pair = Pair::start_with(ControlWrap::None, ControlWrap::None, None, |c| {
        if c.side == Side::Server {
            c.data_ciphers = vec![Cipher::Aes256Gcm];
            c.data_ciphers_fallback = Some(Cipher::Aes256Gcm);
        } else {
            c.data_ciphers = vec![Cipher::ChaCha20Poly1305];
            c.peer_info = client_peer_info.into();
        }
    });
    pair.run(|c, s| s.authenticated || c.auth_failed.is_some() || c.closed.is_some());
    (pair.cs, pair.ss)
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
        (
            cookie::reset_reply(&scfg.wrap, T, &pkt, sid, EarlyNegotiation::default()),
            sid,
        )
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
    let wrap = scfg.wrap.clone();
    assert!(
        Session::accept_cookie(scfg.clone(), wrap.clone(), *now, T, sid, forged, None).is_err()
    );
    let mut server = Session::accept_cookie(scfg.clone(), wrap, *now, T, sid, pkt, replay).unwrap();
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

/// The stateless start of a 2.6 server for a tls-crypt-v2 client: the V3
/// reset is opened with the server key (WKc, then the packet), answered
/// with a request to resend WKc and forgotten; the client's CONTROL_WKC_V1
/// is opened the same way and makes the session, with the client's key.
fn stateless_start_v2(
    client: &mut Session,
    server_key: &ServerKey,
    scfg: &Arc<SessionConfig>,
    now: Instant,
) -> Session {
    const T: u64 = 1_700_000_000;
    let cookies = CookieKey::random();
    let from: std::net::SocketAddr = "192.0.2.7:40000".parse().unwrap();
    let slot = CookieKey::time_slot(T, scfg.hand_window);
    let reset = client.poll_transmit().expect("client reset");
    assert!(client.poll_transmit().is_none());
    let opened = server_key.open(&reset).unwrap();
    assert_eq!(opened.pkt.opcode, Opcode::HardResetClientV3);
    assert!(announces_early_negotiation(opened.replay.id));
    // tls-crypt with the client's key alone cannot read it: WKc is appended.
    assert!(scfg.wrap.unwrap(&reset).is_err());
    let sid = cookies.session_id(slot, from, opened.pkt.session_id);
    let ask = EarlyNegotiation { resend_wkc: true };
    let reply = cookie::reset_reply(&opened.wrap, T, &opened.pkt, sid, ask);
    drop(opened);
    client.handle_packet(now, &reply);
    let third = client
        .poll_transmit()
        .expect("client's packet after the reset");
    let opened = server_key.open(&third).unwrap();
    assert_eq!(opened.pkt.opcode, Opcode::ControlWkcV1);
    assert_eq!(opened.pkt.acks, vec![0]);
    assert_eq!(opened.pkt.message_id, Some(1));
    assert!(
        !opened.pkt.payload.is_empty(),
        "the ClientHello comes along"
    );
    assert!(third.len() <= 1250 - 28, "{} bytes", third.len());
    let echoed = opened.pkt.remote_session_id.unwrap();
    assert!(cookies.verify(T, scfg.hand_window, from, opened.pkt.session_id, echoed));
    let mut server = Session::accept_cookie(
        scfg.clone(),
        Arc::new(opened.wrap),
        now,
        T,
        sid,
        opened.pkt,
        Some(opened.replay),
    )
    .unwrap();
    while let Some(p) = client.poll_transmit() {
        // Later packets are plain CONTROL_V1 under the client's key.
        assert_ne!(parse_prefix(&p).unwrap().0, Opcode::ControlWkcV1);
        server.handle_packet(now, &p);
    }
    server
}

#[test]
fn stateless_handshake_tls_crypt_v2() {
    let server_key = ServerKey::from_bytes(&[5; 128]);
    let ck = ClientKey::generate(&server_key, &Metadata::user(b"alice")).unwrap();
    // The server's own wrap is unused for tls-crypt-v2 clients.
    let mut pair = Pair::start_with(
        ControlWrap::None,
        ControlWrap::tls_crypt_v2_client(&ck),
        None,
        |_| {},
    );
    pair.server = Some(stateless_start_v2(
        &mut pair.client,
        &server_key,
        &pair.scfg,
        pair.now,
    ));
    pair.run_to_keys(7);
    assert!(pair.ss.authenticated);
    assert_eq!(
        pair.cs.keys[0].2, pair.ss.keys[0].2,
        "EKM key blocks differ"
    );
}

#[test]
fn tls_crypt_v2_client_of_another_server_key_gets_nothing() {
    let server_key = ServerKey::from_bytes(&[5; 128]);
    let foreign =
        ClientKey::generate(&ServerKey::from_bytes(&[6; 128]), &Metadata::timestamp(1)).unwrap();
    let p = pki();
    let (_, ccfg) = configs(
        &p,
        &p,
        ControlWrap::None,
        ControlWrap::tls_crypt_v2_client(&foreign),
        None,
    );
    let client = Session::connect(ccfg, Instant::now(), 1_700_000_000);
    let reset = client.unwrap().poll_transmit().unwrap();
    assert_eq!(
        server_key.open(&reset).unwrap_err(),
        OpenError::Wkc(WkcError::AuthFailed)
    );
}

/// A client and a server session with their configurations and
/// observations, driven in memory on virtual time.
struct Pair {
    pki: Rc<Pki>,
    scfg: Arc<SessionConfig>,
    ccfg: Arc<SessionConfig>,
    client: Session,
    server: Option<Session>,
    now: Instant,
    cs: Seen,
    ss: Seen,
    /// The server session (made by [`Pair::drive`]) verifies the client's
    /// chain through its driver ([`Session::verify_peer_before_key_method`]).
    server_verifies: bool,
}

impl Pair {
    /// A client connecting with `ccfg` to a server with `scfg` (made when
    /// the client's first packet arrives); nothing has run yet.
    fn connect(pki: Rc<Pki>, scfg: Arc<SessionConfig>, ccfg: Arc<SessionConfig>) -> Pair {
        let now = Instant::now();
        let client = Session::connect(ccfg.clone(), now, 1_700_000_000).unwrap();
        Pair {
            pki,
            scfg,
            ccfg,
            client,
            server: None,
            now,
            cs: Seen::default(),
            ss: Seen::default(),
            server_verifies: false,
        }
    }

    /// [`Pair::connect`] over a fresh PKI with [`configs`], each side's
    /// config changed by `adjust` first.
    fn start_with(
        wrap_s: ControlWrap,
        wrap_c: ControlWrap,
        reneg: Option<Duration>,
        adjust: impl Fn(&mut SessionConfig),
    ) -> Pair {
        let pki = pki();
        let (scfg, ccfg) = configs(&pki, &pki, wrap_s, wrap_c, reneg);
        let adjusted = |cfg: Arc<SessionConfig>| {
            let mut cfg = Arc::unwrap_or_clone(cfg);
            adjust(&mut cfg);
            Arc::new(cfg)
        };
        Pair::connect(Rc::new(pki), adjusted(scfg), adjusted(ccfg))
    }

    /// Handshake (no wrapping, no loss), with `reply_text` as the push reply.
    fn establish(reply_text: Option<String>) -> Pair {
        let mut pair = Pair::start(reply_text);
        pair.run_to_keys(0);
        pair
    }

    /// A client connecting to a server whose push reply is `reply_text`;
    /// nothing has run yet.
    fn start(reply_text: Option<String>) -> Pair {
        let mut pair = Pair::start_with(ControlWrap::None, ControlWrap::None, None, |_| {});
        pair.ss.reply_text = reply_text;
        pair
    }

    /// Run until both sides send with a key; neither may close.
    fn run_to_keys(&mut self, drop_every: usize) {
        self.run_lossy(drop_every, |c, s| {
            !c.send_keys.is_empty() && !s.send_keys.is_empty()
        });
        self.assert_open();
    }

    fn assert_open(&self) {
        assert!(
            self.cs.closed.is_none() && self.ss.closed.is_none(),
            "{:?} {:?}",
            self.cs.closed,
            self.ss.closed
        );
    }

    fn run(&mut self, done: impl Fn(&Seen, &Seen) -> bool) {
        self.run_lossy(0, done);
    }

    /// Like [`Pair::run`], but every `drop_every`-th packet (either way)
    /// is lost; 0 loses none.
    fn run_lossy(&mut self, drop_every: usize, done: impl Fn(&Seen, &Seen) -> bool) {
        let mut n = 0usize;
        self.drive(
            |_, _| {
                n += 1;
                drop_every > 0 && n.is_multiple_of(drop_every)
            },
            done,
        );
    }

    fn server(&mut self) -> &mut Session {
        self.server.as_mut().expect("server session")
    }

    /// Like [`Pair::run`], but server->client packets for which `drop_s2c`
    /// says so are lost.
    fn run_dropping(
        &mut self,
        drop_s2c: impl Fn(&ControlPacket) -> bool,
        done: impl Fn(&Seen, &Seen) -> bool,
    ) {
        let wrap = self.scfg.wrap.clone();
        self.drive(
            |to_client, p| to_client && drop_s2c(&wrap.unwrap(p).unwrap().0),
            done,
        );
    }

    /// Run both sides until `done` or 600 s of virtual time; a packet is
    /// lost when `lose(to_client, packet)` says so. The server session is
    /// made from the client's first packet that arrives, if there is none.
    fn drive(
        &mut self,
        mut lose: impl FnMut(bool, &[u8]) -> bool,
        done: impl Fn(&Seen, &Seen) -> bool,
    ) {
        let end = self.now + Duration::from_secs(600);
        while self.now < end && !done(&self.cs, &self.ss) {
            let mut moved = false;
            while let Some(p) = self.client.poll_transmit() {
                moved = true;
                if lose(false, &p) {
                    continue;
                }
                match self.server.as_mut() {
                    Some(s) => {
                        s.handle_packet(self.now, &p);
                    }
                    None => {
                        let (pkt, replay) = self.scfg.wrap.unwrap(&p).unwrap();
                        assert!(parse_prefix(&p).is_ok());
                        let mut server = Session::accept(
                            self.scfg.clone(),
                            self.now,
                            1_700_000_000,
                            pkt,
                            replay,
                        )
                        .unwrap();
                        if self.server_verifies {
                            server.verify_peer_before_key_method();
                        }
                        self.server = Some(server);
                    }
                }
            }
            if let Some(s) = self.server.as_mut() {
                drain_events(s, &mut self.ss, self.now, true);
                while let Some(p) = s.poll_transmit() {
                    moved = true;
                    if lose(true, &p) {
                        continue;
                    }
                    self.client.handle_packet(self.now, &p);
                }
            }
            drain_events(&mut self.client, &mut self.cs, self.now, false);
            if !moved {
                let t = [
                    self.client.poll_timeout(),
                    self.server.as_ref().and_then(|s| s.poll_timeout()),
                ]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(self.now + Duration::from_secs(1));
                self.now = t.max(self.now + Duration::from_millis(1));
                self.client.handle_timeout(self.now);
                if let Some(s) = self.server.as_mut() {
                    s.handle_timeout(self.now);
                }
            }
        }
    }
}

/// Audit H1: an authenticated client floods PUSH_REQUESTs and never
/// acknowledges anything the server sends. The server answers at most once
/// per 30 s, its buffers stay bounded, and the unacknowledged reply ends
/// the session after hand-window.
#[test]
fn push_request_flood_is_bounded() {
    const LIMIT: usize = 256 * 1024;
    let mut pair = Pair::establish(None);
    let flood = vec!["PUSH_REQUEST"; 80].join("\0");
    let start = pair.now;
    let mut peak = 0;
    for _ in 0..2000 {
        let now = pair.now;
        pair.client.send_control_message(now, &flood);
        let server = pair.server.as_mut().unwrap();
        while let Some(p) = pair.client.poll_transmit() {
            server.handle_packet(now, &p);
        }
        drain_events(server, &mut pair.ss, now, true);
        // Server->client data is lost; only the ACKs it carries reach the
        // client, so the client keeps sending but never acknowledges.
        while let Some(p) = server.poll_transmit() {
            let (pkt, _) = pair.scfg.wrap.unwrap(&p).unwrap();
            if pkt.acks.is_empty() {
                continue;
            }
            let ack = ControlPacket {
                opcode: Opcode::AckV1,
                message_id: None,
                payload: Vec::new(),
                ..pkt
            };
            pair.client.handle_control(now, ack, None);
        }
        peak = peak.max(server.buffered_bytes());
        assert!(
            server.buffered_bytes() <= LIMIT || server.is_closed(),
            "server buffers {} bytes",
            server.buffered_bytes()
        );
        if server.is_closed() {
            break;
        }
        pair.now += Duration::from_millis(100);
        pair.client.handle_timeout(pair.now);
        server.handle_timeout(pair.now);
        while pair.client.poll_event().is_some() {}
    }
    drain_events(pair.server.as_mut().unwrap(), &mut pair.ss, pair.now, true);
    assert!(
        matches!(pair.ss.closed, Some(SessionError::Unacknowledged)),
        "{:?} after {:?}, peak {peak} bytes",
        pair.ss.closed,
        pair.now - start
    );
    assert!(pair.now - start <= Duration::from_secs(30 + 60 + 5));
    assert_eq!(pair.ss.retired, vec![0]);
}

/// Audit H2: the server loads a CRL revoking the connected client and
/// renegotiates; the failed renegotiation ends the session and retires key 0.
#[test]
fn revoked_client_is_closed_at_renegotiation() {
    let mut pair = Pair::establish(None);
    let revoking = crl(&pair.pki, &[CLIENT1_SERIAL]);
    let cfg = server_config_with_crl(&pair.pki, &pair.scfg, &revoking);
    let now = pair.now;
    pair.server().set_config(cfg);
    pair.server().start_renegotiation(now).unwrap();
    pair.run(|_, s| s.closed.is_some());
    assert!(
        matches!(
            &pair.ss.closed,
            Some(SessionError::RenegotiationFailed { key_id: 1, cause })
                if matches!(**cause, SessionError::Tls(_))
        ),
        "{:?}",
        pair.ss.closed
    );
    assert_eq!(pair.ss.retired, vec![0]);
    assert!(pair.server().is_closed());
}

/// Audit H2: a client that silently drops the server's soft reset loses
/// the session once hand-window has passed.
#[test]
fn ignored_soft_reset_closes_the_session() {
    let mut pair = Pair::establish(None);
    let start = pair.now;
    pair.server().start_renegotiation(start).unwrap();
    pair.run_dropping(|pkt| pkt.key_id != 0, |_, s| s.closed.is_some());
    assert!(
        matches!(
            &pair.ss.closed,
            Some(SessionError::RenegotiationFailed { key_id: 1, cause })
                if matches!(**cause, SessionError::HandWindowExpired)
        ),
        "{:?}",
        pair.ss.closed
    );
    let took = pair.now - start;
    assert!(
        took >= pair.scfg.hand_window && took <= pair.scfg.hand_window + Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(pair.ss.retired, vec![0]);
}

/// Audit L4: a client that logged in as client1 cannot renegotiate as
/// client2 (same CA); the server reports client1's certificate throughout.
#[test]
fn renegotiation_with_another_certificate_closes_the_session() {
    let mut pair = Pair::establish(None);
    let der = pair.server().peer_certificate_der().map(<[u8]>::to_vec);
    assert_eq!(der.as_deref(), Some(pair.pki.client_der.as_slice()));
    let other = client_config_with_cert(
        &pair.pki,
        &pair.ccfg,
        &pair.pki.client2_cert,
        &pair.pki.client2_key,
    );
    pair.client.set_config(other);
    let now = pair.now;
    pair.client.start_renegotiation(now).unwrap();
    pair.run(|_, s| s.closed.is_some());
    assert!(
        matches!(
            &pair.ss.closed,
            Some(SessionError::RenegotiationFailed { key_id: 1, cause })
                if matches!(**cause, SessionError::PeerIdentityChanged)
        ),
        "{:?}",
        pair.ss.closed
    );
    assert_eq!(pair.ss.retired, vec![0]);
    assert_eq!(pair.server().peer_common_name().as_deref(), Some("client1"));
}

/// Audit L7: a peer chaining renegotiations back to back gets a burst of
/// them at once, then one per interval: the soft reset beyond the burst is
/// not taken at once, the peer's retransmission after the interval is. After
/// a pause, renegotiations go through without delay again.
#[test]
fn back_to_back_peer_soft_resets_are_paced() {
    use ferrovpn_proto::session::{MIN_PEER_RENEG_INTERVAL, PEER_RENEG_BURST};
    let mut pair = Pair::establish(None);
    let renegotiate = |pair: &mut Pair, key_id: u8| {
        let start = pair.now;
        pair.client.start_renegotiation(start).unwrap();
        pair.run(|c, s| c.send_keys.contains(&key_id) && s.send_keys.contains(&key_id));
        pair.assert_open();
        pair.now - start
    };
    for key_id in 1..=PEER_RENEG_BURST as u8 {
        let took = renegotiate(&mut pair, key_id);
        assert!(took < MIN_PEER_RENEG_INTERVAL, "key {key_id} took {took:?}");
    }
    let key_id = PEER_RENEG_BURST as u8 + 1;
    let took = renegotiate(&mut pair, key_id);
    assert!(
        took >= MIN_PEER_RENEG_INTERVAL,
        "key {key_id} accepted after {took:?}"
    );

    pair.now += MIN_PEER_RENEG_INTERVAL * (PEER_RENEG_BURST + 1);
    let took = renegotiate(&mut pair, key_id + 1);
    assert!(took < MIN_PEER_RENEG_INTERVAL, "took {took:?}");
}

/// Issue 13: a push reply too long for one message goes out in parts the
/// way 2.6 splits it, and the client applies it once, whole.
#[test]
fn long_push_reply_arrives_whole() {
    let mut text = String::from("PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ping 10");
    for i in 0..80 {
        text.push_str(&format!(
            ",route 10.{}.{}.0 255.255.255.0",
            100 + i / 10,
            i % 10
        ));
    }
    text.push_str(",ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM");
    text.push_str(",protocol-flags cc-exit tls-ekm");
    let pair = Pair::establish(Some(text.clone()));
    assert_eq!(pair.cs.push_replies.len(), 1);
    let got = &pair.cs.push_replies[0];
    // It came split: the joined reply carries the last part's marker.
    assert_eq!(got.continuation, Some(1));
    let want = ferrovpn_proto::push::PushReply::parse(&text).unwrap();
    assert_eq!(got.options, want.options);
    assert_eq!(pair.cs.keys[0].2, pair.ss.keys[0].2);
}

/// A server that never ends its split push reply does not make the client
/// buffer without bound.
#[test]
fn endless_push_continuation_closes_the_client() {
    let open_ended = "PUSH_REPLY,ping 10,push-continuation 2";
    let mut pair = Pair::establish_unfinished(open_ended);
    let now = pair.now;
    for _ in 0..100 {
        pair.server().send_control_message(now, open_ended);
    }
    pair.run(|c, _| c.closed.is_some());
    assert!(
        matches!(pair.cs.closed, Some(SessionError::PushReplyTooLarge)),
        "{:?}",
        pair.cs.closed
    );
    assert!(pair.cs.push_replies.is_empty());
}

impl Pair {
    /// Like [`Pair::establish`], but the server's push reply is `reply`,
    /// which leaves the client waiting for more parts.
    fn establish_unfinished(reply: &str) -> Pair {
        let mut pair = Pair::start(Some(reply.to_owned()));
        pair.run(|_, s| !s.send_keys.is_empty());
        assert!(pair.cs.push_replies.is_empty() && pair.cs.closed.is_none());
        pair
    }
}
/// `handle_packet` says whether the session took the packet: only then may
/// the driver count it as a sign of life (a spoofer who knows the session
/// ids but not the tls-crypt key, or who replays, must not keep a dead
/// session alive).
#[test]
fn handle_packet_reports_only_packets_the_session_accepts() {
    let k = StaticKey::generate();
    let p = pki();
    let (scfg, ccfg) = configs(
        &p,
        &p,
        ControlWrap::tls_crypt(&k, Side::Server),
        ControlWrap::tls_crypt(&k, Side::Client),
        None,
    );
    let mut now = Instant::now();
    let mut client = Session::connect(ccfg, now, 1_700_000_000).unwrap();
    let mut server = stateless_start(&mut client, &scfg, &mut now);
    // The client's next flight: accepted once, refused when replayed.
    let server_out: Vec<Vec<u8>> = std::iter::from_fn(|| server.poll_transmit()).collect();
    assert!(!server_out.is_empty());
    for pkt in &server_out {
        assert!(client.handle_packet(now, pkt), "a fresh server packet");
    }
    for pkt in &server_out {
        assert!(!client.handle_packet(now, pkt), "a replayed server packet");
    }
    let fresh: Vec<Vec<u8>> = std::iter::from_fn(|| client.poll_transmit()).collect();
    let first = fresh.first().expect("the client answers").clone();
    // The same bytes with one bit flipped fail the tls-crypt check.
    let mut forged = first.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert!(!server.handle_packet(now, &forged));
    assert!(!server.handle_packet(now, &[0x20, 1, 2, 3]));
    assert!(server.handle_packet(now, &first));
}

/// The server's session config with `verify-x509-name NAME name` applied.
fn with_verify_name(base: &Arc<SessionConfig>, p: &Pki, name: &str) -> Arc<SessionConfig> {
    use ferrovpn_proto::session::tls::{PeerCertPolicy, X509NameCheck, server_config_with_policy};
    let mut s = (**base).clone();
    s.tls_server = Some(
        server_config_with_policy(
            &material(&p.ca, &p.server_cert, &p.server_key, ""),
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
    let p = Rc::new(p);
    for (wanted, admitted) in [("client1", true), ("client2", false)] {
        let scfg = with_verify_name(&base, &p, wanted);
        let mut pair = Pair::connect(p.clone(), scfg, ccfg.clone());
        pair.run(|c, s| s.closed.is_some() || (!c.send_keys.is_empty() && !s.send_keys.is_empty()));
        let Pair { server, cs, ss, .. } = pair;
        if admitted {
            assert!(ss.closed.is_none(), "{:?}", ss.closed);
            assert!(ss.authenticated && cs.keys.len() == 1);
            let cn = server.as_ref().and_then(Session::peer_common_name);
            assert_eq!(cn.as_deref(), Some("client1"));
        } else {
            let reason = ss.closed.expect("server kept a client it must refuse");
            assert!(
                matches!(reason, SessionError::Tls(_))
                    && reason.to_string().contains("verify-x509-name"),
                "{reason}"
            );
            assert!(!ss.authenticated && ss.keys.is_empty() && cs.keys.is_empty());
        }
    }
}

/// A client's `CR_RESPONSE,...` reaches the server's driver (for
/// `>CLIENT:CR_RESPONSE`) with the key it came on; 2.6 reads nothing after
/// a bare `CR_RESPONSE`.
#[test]
fn cr_response_is_reported_to_the_server() {
    let mut pair = Pair::establish(None);
    let now = pair.now;
    pair.client
        .send_control_message(now, "CR_RESPONSE,aGVsbG8gd29ybGQ=");
    pair.client.send_control_message(now, "CR_RESPONSE");
    let server = pair.server.as_mut().unwrap();
    let mut responses = Vec::new();
    for _ in 0..10 {
        while let Some(p) = pair.client.poll_transmit() {
            server.handle_packet(now, &p);
        }
        while let Some(ev) = server.poll_event() {
            if let Event::CrResponse { key_id, response } = ev {
                responses.push((key_id, response));
            }
        }
        while let Some(p) = server.poll_transmit() {
            pair.client.handle_packet(now, &p);
        }
        if responses.len() == 2 {
            break;
        }
    }
    assert_eq!(
        responses,
        vec![(0, "aGVsbG8gd29ybGQ=".to_string()), (0, String::new())]
    );
}

/// A server's `INFO_PRE,...`, `INFO,...` and `AUTH_PENDING,...` reach the
/// client's driver (for `>INFOMSG:` and the `AUTH_PENDING` state) with
/// the text after the comma; 2.6 reads nothing when the comma is missing.
#[test]
fn info_and_auth_pending_are_reported_to_the_client() {
    let mut pair = Pair::establish(None);
    let now = pair.now;
    let server = pair.server.as_mut().unwrap();
    for m in [
        "AUTH_PENDING,timeout 60",
        "INFO_PRE,CR_TEXT:E,R:Enter code",
        "INFO,OPEN_URL:x",
        "INFOX",
        "AUTH_PENDING",
    ] {
        server.send_control_message(now, m);
    }
    let mut infos = Vec::new();
    for _ in 0..10 {
        while let Some(p) = server.poll_transmit() {
            pair.client.handle_packet(now, &p);
        }
        while let Some(ev) = pair.client.poll_event() {
            match ev {
                Event::Info(text) => infos.push(text),
                Event::AuthPending(k) => infos.push(format!("pending {k}")),
                _ => {}
            }
        }
        while let Some(p) = pair.client.poll_transmit() {
            server.handle_packet(now, &p);
        }
        if infos.len() == 5 {
            break;
        }
    }
    assert_eq!(
        infos,
        [
            "pending timeout 60",
            "CR_TEXT:E,R:Enter code",
            "OPEN_URL:x",
            "",
            "pending "
        ]
    );
}

/// Point-to-point mode: both ends announce themselves, then settle cipher,
/// key derivation and peer-id from each other's peer-info, with nothing
/// pushed. Returns both sessions' links and what each saw.
fn p2p_pair(
    server_ciphers: &[Cipher],
    server_info: &str,
    client_ciphers: &[Cipher],
    client_info: &str,
) -> [(Option<ferrovpn_proto::session::P2pLink>, Seen); 2] {
    let mut pair = Pair::start_with(ControlWrap::None, ControlWrap::None, None, |c| {
        let (ciphers, info) = match c.side {
            Side::Server => (server_ciphers, server_info),
            Side::Client => (client_ciphers, client_info),
        };
        c.p2p = true;
        c.data_ciphers = ciphers.to_vec();
        c.peer_info = info.into();
    });
    pair.run_to_keys(0);
    let Pair {
        client,
        server,
        cs,
        ss,
        ..
    } = pair;
    assert!(cs.push.is_none(), "nothing is pushed in p2p mode");
    assert_eq!((cs.keys.len(), ss.keys.len()), (1, 1));
    assert_eq!(cs.keys[0].1, ss.keys[0].1, "ciphers differ");
    assert_eq!(cs.keys[0].2, ss.keys[0].2, "key blocks differ");
    let server = server.expect("server session");
    [(client.p2p_link(), cs), (server.p2p_link(), ss)]
}

#[test]
fn p2p_mode_with_a_2_6_peer_uses_ekm_data_v2_and_the_servers_cipher_order() {
    // 2.6's p2p IV_PROTO: DATA_V2|NCP_P2P|TLS_KEY_EXPORT|CC_EXIT_NOTIFY (170).
    let [(c, cs), (s, _)] = p2p_pair(
        &[Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm],
        "IV_CIPHERS=CHACHA20-POLY1305:AES-256-GCM\nIV_PROTO=170\n",
        &[Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305],
        "IV_CIPHERS=AES-256-GCM:CHACHA20-POLY1305\nIV_PROTO=170\n",
    );
    assert_eq!(
        cs.keys[0].1,
        Cipher::ChaCha20Poly1305,
        "the TLS server's order"
    );
    let (c, s) = (c.expect("client link"), s.expect("server link"));
    assert_eq!(c, s);
    assert!(c.tls_ekm && c.cc_exit);
    assert!(c.peer_id.is_some_and(|id| id < 1 << 24), "{c:?}");
}

#[test]
fn p2p_mode_without_p2p_ncp_uses_data_v1_and_the_legacy_prf() {
    // Peers announcing no NCP_P2P (2.4/2.5 style): IV_CIPHERS still picks
    // the cipher, but keys come from the PRF and data goes as P_DATA_V1.
    let [(c, cs), (s, _)] = p2p_pair(
        &[Cipher::Aes256Gcm],
        "IV_CIPHERS=AES-256-GCM\nIV_PROTO=2\n",
        &[Cipher::Aes128Gcm, Cipher::Aes256Gcm],
        "IV_CIPHERS=AES-128-GCM:AES-256-GCM\nIV_PROTO=2\n",
    );
    assert_eq!(cs.keys[0].1, Cipher::Aes256Gcm);
    let (c, s) = (c.expect("client link"), s.expect("server link"));
    assert_eq!(c, s);
    assert!(!c.tls_ekm && !c.cc_exit && c.peer_id.is_none(), "{c:?}");
}

/// A server whose driver verifies the client's chain itself
/// (`tls-verify`, `PLUGIN_TLS_VERIFY`): run until it asks for the verdict.
/// Nothing of our key-method-2 reply has reached the client by then.
fn held_for_verdict() -> Pair {
    let mut pair = Pair::start(None);
    let now = pair.now;
    let scfg = pair.scfg.clone();
    let mut verify_asked = false;
    for _ in 0..50 {
        while let Some(p) = pair.client.poll_transmit() {
            if pair.server.is_none() {
                let (pkt, replay) = scfg.wrap.unwrap(&p).unwrap();
                let mut s = Session::accept(scfg.clone(), now, 1_700_000_000, pkt, replay).unwrap();
                s.verify_peer_before_key_method();
                pair.server = Some(s);
            } else {
                pair.server().handle_packet(now, &p);
            }
        }
        drain_events(&mut pair.client, &mut pair.cs, now, false);
        if let Some(server) = pair.server.as_mut() {
            while let Some(ev) = server.poll_event() {
                match ev {
                    Event::VerifyPeer { key_id: 0 } => verify_asked = true,
                    Event::ClientAuthenticated { .. } => pair.ss.authenticated = true,
                    Event::Closed(r) => pair.ss.closed = Some(r),
                    _ => {}
                }
            }
            while let Some(p) = server.poll_transmit() {
                pair.client.handle_packet(now, &p);
            }
        }
        if verify_asked {
            break;
        }
    }
    assert!(verify_asked, "the server never asked for a verdict");
    assert!(!pair.ss.authenticated);
    pair
}

/// Exchange packets for a while (at the same instant: no timer fires).
fn exchange(pair: &mut Pair, rounds: usize) -> (usize, usize) {
    let now = pair.now;
    let (mut to_server, mut to_client) = (0, 0);
    for _ in 0..rounds {
        while let Some(p) = pair.client.poll_transmit() {
            to_server += 1;
            pair.server().handle_packet(now, &p);
        }
        drain_events(&mut pair.client, &mut pair.cs, now, false);
        let server = pair.server.as_mut().unwrap();
        drain_events(server, &mut pair.ss, now, true);
        while let Some(p) = server.poll_transmit() {
            to_client += 1;
            pair.client.handle_packet(now, &p);
        }
    }
    (to_server, to_client)
}

#[test]
fn key_reply_waits_for_the_verdict_then_goes_out() {
    let mut pair = held_for_verdict();
    // Held: the client gets no key method, so no keys and no push reply.
    exchange(&mut pair, 5);
    assert!(
        pair.cs.keys.is_empty(),
        "client has keys before the verdict"
    );
    assert!(
        pair.ss.keys.is_empty(),
        "server has keys before the verdict"
    );
    assert!(pair.cs.push.is_none());
    let now = pair.now;
    pair.server().peer_verified(now, 0, true);
    pair.run_to_keys(0);
    assert!(pair.ss.authenticated);
    assert_eq!(pair.cs.keys[0].2, pair.ss.keys[0].2);
    // A second verdict changes nothing.
    pair.server().peer_verified(now, 0, false);
    exchange(&mut pair, 2);
    pair.assert_open();
}

#[test]
fn refused_peer_hears_nothing_more() {
    let mut pair = held_for_verdict();
    let now = pair.now;
    pair.server().peer_verified(now, 0, false);
    let (_, to_client) = exchange(&mut pair, 5);
    assert!(
        matches!(pair.ss.closed, Some(SessionError::PeerRefused)),
        "{:?}",
        pair.ss.closed
    );
    // Neither a key method nor RESTART nor AUTH_FAILED: nothing at all.
    assert_eq!(to_client, 0);
    assert!(pair.cs.keys.is_empty() && pair.cs.push.is_none());
    assert!(pair.cs.auth_failed.is_none() && pair.cs.closed.is_none());
}

/// The client gives up waiting for the push reply as 2.6's
/// `send_push_request` does: at its push-request tick (every 5 s) once
/// hand-window passed since key 0 was established, or the deadline an
/// AUTH_PENDING set (the server's `timeout N`, hand-window without one, at
/// most the longer of hand-window and half of reneg-sec, all from when
/// key 0 was established). The server keeps acknowledging meanwhile, and
/// its reply never completes.
#[test]
fn push_reply_wait_ends_as_2_6() {
    // (what the server sends, hand-window, reneg-sec, earliest second the
    // client may give up)
    let cases: [(Option<&str>, u64, Option<u64>, u64); 5] = [
        (None, 60, None, 60),
        (Some("AUTH_PENDING,timeout 12"), 60, None, 12),
        (Some("AUTH_PENDING,timeout 300"), 8, Some(20), 10),
        (Some("AUTH_PENDING,timeout 300"), 8, None, 8),
        (Some("AUTH_PENDING,foo,timeout 31,bar"), 60, Some(3600), 31),
    ];
    for (pending, hand_window, reneg, earliest) in cases {
        let mut pair = Pair::start_with(
            ControlWrap::None,
            ControlWrap::None,
            reneg.map(Duration::from_secs),
            |c| c.hand_window = Duration::from_secs(hand_window),
        );
        // A reply that leaves the client waiting for its other parts.
        pair.ss.reply_text = Some("PUSH_REPLY,ping 10,push-continuation 2".into());
        pair.run(|_, s| !s.send_keys.is_empty());
        pair.assert_open();
        let t0 = pair.now;
        let server = pair.server.as_mut().unwrap();
        let client = &mut pair.client;
        if let Some(m) = pending {
            server.send_control_message(t0, m);
        }
        let mut closed = None;
        for s in 0..=120u64 {
            let now = t0 + Duration::from_secs(s);
            client.handle_timeout(now);
            server.handle_timeout(now);
            for _ in 0..3 {
                while let Some(p) = server.poll_transmit() {
                    client.handle_packet(now, &p);
                }
                while let Some(p) = client.poll_transmit() {
                    server.handle_packet(now, &p);
                }
            }
            while server.poll_event().is_some() {}
            while let Some(ev) = client.poll_event() {
                if let Event::Closed(e) = ev {
                    closed = Some((s, e.to_string()));
                }
            }
            if closed.is_some() {
                break;
            }
        }
        let (at, why) = closed.unwrap_or_else(|| panic!("{pending:?}: the client waits for ever"));
        assert!(
            (earliest..earliest + 5).contains(&at),
            "{pending:?}, hand-window {hand_window}: gave up at {at}s"
        );
        assert_eq!(
            why,
            format!("No reply from server to push requests in {at}s")
        );
    }
}

/// A server that goes silent once the keys are up (no acknowledgement, no
/// reply) is given up on as 2.6's `send_push_request` does: "No reply from
/// server to push requests" at the first push-request tick after
/// hand-window of silence, not as a reset for the unacknowledged
/// PUSH_REQUESTs (which would be due at the same time).
#[test]
fn silent_server_is_no_push_reply() {
    for hand_window in [10u64, 60] {
        let mut pair = Pair::start_with(ControlWrap::None, ControlWrap::None, None, |c| {
            c.hand_window = Duration::from_secs(hand_window)
        });
        pair.ss.reply_text = Some("PUSH_REPLY,ping 10,push-continuation 2".into());
        pair.run(|_, s| !s.send_keys.is_empty());
        pair.assert_open();
        let t0 = pair.now;
        let client = &mut pair.client;
        let mut closed = None;
        // Every 100 ms, so that neither deadline is met late.
        for tick in 0..=1800u64 {
            let now = t0 + Duration::from_millis(tick * 100);
            client.handle_timeout(now);
            // Everything the client sends is lost with the server.
            while client.poll_transmit().is_some() {}
            while let Some(ev) = client.poll_event() {
                if let Event::Closed(e) = ev {
                    closed = Some((tick / 10, e));
                }
            }
            if closed.is_some() {
                break;
            }
        }
        let (at, why) = closed.expect("the client waits for ever");
        assert!(
            matches!(why, SessionError::NoPushReply(_)),
            "hand-window {hand_window}: closed with {why} at {at}s"
        );
        assert!(
            (hand_window..hand_window + 6).contains(&at),
            "hand-window {hand_window}: gave up at {at}s"
        );
    }
}

/// The server session of `pair` made from the client's first packet, with
/// [`Session::require_credentials`].
fn server_requiring_login(pair: &mut Pair) {
    let p = pair.client.poll_transmit().unwrap();
    let (pkt, replay) = pair.scfg.wrap.unwrap(&p).unwrap();
    let mut s = Session::accept(pair.scfg.clone(), pair.now, 1_700_000_000, pkt, replay).unwrap();
    s.require_credentials();
    pair.server = Some(s);
}

/// A server that requires a login (2.6 checking logins without
/// `auth-user-pass-optional`) ends the session of a client that sends
/// none before its key-method-2 reply, as 2.6's failing
/// `key_method_2_read`; an empty login (`auth-user-pass` with empty
/// fields) is a login.
#[test]
fn server_requiring_a_login_drops_a_client_without_one() {
    let mut pair = Pair::start(None);
    server_requiring_login(&mut pair);
    pair.run(|_, s| s.closed.is_some());
    assert!(
        matches!(pair.ss.closed, Some(SessionError::CredentialsMissing)),
        "{:?}",
        pair.ss.closed
    );
    assert!(!pair.ss.authenticated && pair.cs.keys.is_empty());

    let mut pair = Pair::start(None);
    pair.client.set_credentials("", "");
    server_requiring_login(&mut pair);
    pair.run_to_keys(0);
    assert!(pair.ss.authenticated);
}

/// A client whose driver verifies the server's chain (`tls-verify`,
/// `PLUGIN_TLS_VERIFY`) sends nothing of its key-method-2 message, nor
/// the password in it, before the verdict, as 2.6 verifies inside the
/// handshake; accepted, the exchange goes on; refused, it ends there and
/// the server never saw the credentials.
#[test]
fn client_key_method_and_password_wait_for_the_verdict() {
    for accepted in [true, false] {
        let mut pair = Pair::start(None);
        pair.client.verify_peer_before_key_method();
        pair.client.set_credentials("alice", "secret-password");
        pair.run(|c, _| !c.verify_asked.is_empty());
        assert_eq!(pair.cs.verify_asked, vec![0]);
        // Held: the server's TLS handshake is done, no key method came.
        exchange(&mut pair, 5);
        assert!(!pair.ss.authenticated && pair.ss.credentials.is_none());
        assert!(pair.ss.keys.is_empty() && pair.cs.keys.is_empty());
        let now = pair.now;
        pair.client.peer_verified(now, 0, accepted);
        if accepted {
            pair.run_to_keys(0);
            assert_eq!(
                pair.ss.credentials,
                Some(("alice".into(), "secret-password".into()))
            );
            assert!(pair.cs.push.is_some());
            pair.assert_open();
        } else {
            // The client gives up; the server hears nothing more of it and
            // its hand-window ends the session.
            pair.run(|_, s| s.closed.is_some());
            assert!(
                matches!(pair.cs.closed, Some(SessionError::PeerRefused)),
                "{:?}",
                pair.cs.closed
            );
            assert!(
                matches!(pair.ss.closed, Some(SessionError::HandWindowExpired)),
                "{:?}",
                pair.ss.closed
            );
            assert!(!pair.ss.authenticated && pair.ss.credentials.is_none());
            assert!(pair.ss.keys.is_empty());
        }
    }
}

/// A pair whose server verifies the client's chain in every handshake,
/// established (key 0 accepted), with `tran-window` `tran` and no verdict
/// given from now on.
fn established_with_verifying_server(tran: Duration) -> Pair {
    let mut pair = Pair::start_with(ControlWrap::None, ControlWrap::None, None, |c| {
        c.tran_window = tran;
    });
    pair.server_verifies = true;
    pair.ss.verdict = Some(true);
    pair.run_to_keys(0);
    assert_eq!(pair.ss.verify_asked, vec![0]);
    pair.ss.verdict = None;
    pair
}

/// 2.6 runs the verify callback in every TLS handshake: a renegotiation
/// (started by either side) waits for the verdict like the first key, and
/// goes on when it accepts.
#[test]
fn renegotiation_waits_for_the_verdict() {
    for client_starts in [true, false] {
        let mut pair = established_with_verifying_server(Duration::from_secs(3600));
        let now = pair.now;
        if client_starts {
            pair.client.start_renegotiation(now).unwrap();
        } else {
            pair.server().start_renegotiation(now).unwrap();
        }
        pair.run(|_, s| s.verify_asked.len() == 2);
        assert_eq!(pair.ss.verify_asked, vec![0, 1]);
        exchange(&mut pair, 5);
        assert_eq!(pair.cs.keys.len(), 1, "client has key 1 before the verdict");
        assert_eq!(pair.ss.keys.len(), 1, "server has key 1 before the verdict");
        let now = pair.now;
        pair.server().peer_verified(now, 1, true);
        pair.run(|c, s| c.send_keys.contains(&1) && s.send_keys.contains(&1));
        pair.assert_open();
        assert_eq!(pair.cs.keys[1].2, pair.ss.keys[1].2);
    }
}

/// A renegotiation whose chain is refused fails as 2.6's failed handshake
/// of a session with a lame duck (ssl.c `tls_multi_process`): nothing more
/// of that key goes to the peer, the old key keeps the tunnel until
/// tran-window after the renegotiation began (`key_state_soft_reset`'s
/// `must_die`), and then, with no key left, the session ends.
#[test]
fn refused_renegotiation_keeps_the_old_key_for_tran_window() {
    let tran = Duration::from_secs(30);
    let mut pair = established_with_verifying_server(tran);
    let began = pair.now;
    pair.client.start_renegotiation(began).unwrap();
    pair.run(|_, s| s.verify_asked.len() == 2);
    let now = pair.now;
    assert!(now - began < Duration::from_secs(1), "{:?}", now - began);
    pair.server().peer_verified(now, 1, false);
    // Up to just before the old key's end: open, key 0 kept, no key 1.
    let step = |pair: &mut Pair, at: Instant| {
        pair.now = at;
        pair.client.handle_timeout(at);
        pair.server().handle_timeout(at);
        exchange(pair, 3);
    };
    step(&mut pair, began + tran - Duration::from_secs(1));
    pair.assert_open();
    assert!(pair.ss.retired.is_empty(), "{:?}", pair.ss.retired);
    step(&mut pair, began + tran);
    assert!(
        matches!(
            &pair.ss.closed,
            Some(SessionError::RenegotiationFailed { key_id: 1, cause })
                if matches!(**cause, SessionError::PeerRefused)
        ),
        "{:?}",
        pair.ss.closed
    );
    assert_eq!(pair.ss.retired, vec![0]);
    assert_eq!(pair.ss.keys.len(), 1);
    assert_eq!(pair.cs.keys.len(), 1, "the client got key 1 all the same");
    // The client is still in (its own hand-window is 60 s).
    assert!(pair.cs.closed.is_none(), "{:?}", pair.cs.closed);
}

/// The same on a client that verifies the server's chain: a refused
/// renegotiation sends the server no key method (no credentials) for it.
#[test]
fn client_refusing_a_renegotiation_sends_no_key_method() {
    let mut pair = Pair::start_with(ControlWrap::None, ControlWrap::None, None, |c| {
        c.tran_window = Duration::from_secs(30);
    });
    pair.client.verify_peer_before_key_method();
    pair.cs.verdict = Some(true);
    pair.run_to_keys(0);
    pair.cs.verdict = Some(false);
    let began = pair.now;
    pair.server().start_renegotiation(began).unwrap();
    pair.run(|c, _| c.closed.is_some());
    assert_eq!(pair.cs.verify_asked, vec![0, 1]);
    assert!(
        matches!(
            &pair.cs.closed,
            Some(SessionError::RenegotiationFailed { key_id: 1, cause })
                if matches!(**cause, SessionError::PeerRefused)
        ),
        "{:?}",
        pair.cs.closed
    );
    assert!(pair.now >= began + Duration::from_secs(30));
    // The server never got the client's key method for key 1.
    assert_eq!(pair.ss.keys.len(), 1);
}

/// A point-to-point TLS server with `remote` sends its reset first, as
/// 2.6's does: a TLS client without `remote` starts its session from that
/// reset (the driver creates it then), and both get the same keys.
#[test]
fn p2p_tls_server_sends_its_reset_first_and_a_waiting_client_answers_it() {
    let mut pair = Pair::start_with(ControlWrap::None, ControlWrap::None, None, |c| {
        c.p2p = true;
    });
    let mut server =
        Session::initiate_p2p_server(pair.scfg.clone(), pair.now, 1_700_000_000).unwrap();
    let reset = server.poll_transmit().expect("the server's reset");
    let (opcode, _, _) = parse_prefix(&reset).unwrap();
    assert_eq!(opcode, Opcode::HardResetServerV2);
    assert!(server.poll_transmit().is_none(), "one reset, nothing else");
    pair.client = Session::connect(pair.ccfg.clone(), pair.now, 1_700_000_000).unwrap();
    assert!(pair.client.handle_packet(pair.now, &reset));
    pair.server = Some(server);
    pair.run_to_keys(0);
    assert_eq!(pair.cs.keys[0].2, pair.ss.keys[0].2, "key blocks differ");
}

/// Both ends have `remote`: their resets cross (2.6's TLS client and
/// server both send first), under loss too, and the session comes up.
#[test]
fn p2p_resets_that_cross_make_one_session() {
    for drop_every in [0, 3] {
        let mut pair = Pair::start_with(ControlWrap::None, ControlWrap::None, None, |c| {
            c.p2p = true;
        });
        pair.server =
            Some(Session::initiate_p2p_server(pair.scfg.clone(), pair.now, 1_700_000_000).unwrap());
        pair.run_to_keys(drop_every);
        assert_eq!(pair.cs.keys[0].2, pair.ss.keys[0].2, "key blocks differ");
    }
}
