//! Drive an established in-memory server session with what an authenticated
//! but hostile client chooses: TLS plaintext of its choice (control
//! messages, floods, garbage), raw datagrams, renegotiations and time
//! passing. Nothing may panic, and the server's buffers stay bounded.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ferrovpn_proto::data::{Cipher, Side};
use ferrovpn_proto::session::tls::{ServerCertPolicy, TlsMaterial, client_config, server_config};
use ferrovpn_proto::session::{
    Event, MAX_PLAINTEXT_BUFFER, MAX_TLS_BACKLOG, Session, SessionConfig,
};
use ferrovpn_proto::wrap::ControlWrap;
use libfuzzer_sys::fuzz_target;

/// Up to three key states, each within its own bounds, plus slack for the
/// reliability windows and unsent datagrams.
const BUFFER_LIMIT: usize = 3 * (MAX_TLS_BACKLOG + MAX_PLAINTEXT_BUFFER + 64 * 1024);

/// Server and client session configurations over a throwaway PKI, made once.
fn configs() -> &'static (Arc<SessionConfig>, Arc<SessionConfig>) {
    static CONFIGS: OnceLock<(Arc<SessionConfig>, Arc<SessionConfig>)> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Fuzz CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |cn: &str, eku| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(Vec::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            p.extended_key_usages = vec![eku];
            (
                p.signed_by(&key, &issuer).unwrap().pem(),
                key.serialize_pem(),
            )
        };
        let (server_cert, server_key) = leaf("server", ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = leaf("client", ExtendedKeyUsagePurpose::ClientAuth);
        let ca = ca.pem();
        let base = |side| SessionConfig {
            side,
            wrap: Arc::new(ControlWrap::None),
            tls_server: None,
            tls_client: None,
            data_ciphers: vec![Cipher::Aes256Gcm],
            data_ciphers_fallback: None,
            data_auth: ferrovpn_proto::wrap::AuthDigest::Sha1,
            tls_timeout: Duration::from_secs(2),
            hand_window: Duration::from_secs(60),
            reneg_interval: None,
            tran_window: Duration::from_secs(3600),
            max_packet_size: 1250,
            options_string: "V4,dev-type tun".into(),
            peer_info: "IV_VER=2.6.14\nIV_PROTO=990\nIV_CIPHERS=AES-256-GCM\n".into(),
            pull_filters: Vec::new(),
            p2p: false,
        };
        let material = |cert_pem, key_pem| TlsMaterial {
            ca_pem: &ca,
            cert_pem,
            key_pem,
            extra_certs_pem: "",
            tls13_only: false,
            crls_pem: "",
        };
        let mut s = base(Side::Server);
        s.tls_server = Some(server_config(&material(&server_cert, &server_key)).unwrap());
        let mut c = base(Side::Client);
        c.tls_client = Some(
            client_config(
                &material(&client_cert, &client_key),
                ServerCertPolicy {
                    remote_cert_tls_server: true,
                    verify_name: None,
                },
            )
            .unwrap(),
        );
        (Arc::new(s), Arc::new(c))
    })
}

/// Move everything due between the two sessions; the server's events are
/// answered as a server driver would.
fn exchange(client: &mut Session, server: &mut Session, now: Instant, lose_s2c: bool) {
    for _ in 0..64 {
        let mut moved = false;
        while let Some(p) = client.poll_transmit() {
            moved = true;
            server.handle_packet(now, &p);
        }
        while let Some(ev) = server.poll_event() {
            if let Event::ClientAuthenticated { .. } | Event::PushRequested = ev {
                server.set_push_reply(
                    now,
                    "PUSH_REPLY,ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM,protocol-flags cc-exit tls-ekm".into(),
                );
            }
        }
        while let Some(p) = server.poll_transmit() {
            moved = true;
            if !lose_s2c {
                client.handle_packet(now, &p);
            }
        }
        while client.poll_event().is_some() {}
        if !moved {
            break;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (scfg, ccfg) = configs();
    let mut now = Instant::now();
    let mut client = Session::connect(ccfg.clone(), now, 1_700_000_000).unwrap();
    let first = client.poll_transmit().unwrap();
    let Ok((pkt, replay)) = scfg.wrap.unwrap(&first) else {
        return;
    };
    let mut server = Session::accept(scfg.clone(), now, 1_700_000_000, pkt, replay).unwrap();
    for _ in 0..20 {
        exchange(&mut client, &mut server, now, false);
        if client.is_established() && server.is_established() {
            break;
        }
        now += Duration::from_millis(10);
        client.handle_timeout(now);
        server.handle_timeout(now);
    }
    assert!(server.is_established());

    // Each step: one op byte, a length byte, then that many bytes.
    let mut rest = data;
    while let [op, len, tail @ ..] = rest {
        let n = (*len as usize).min(tail.len());
        let (arg, tail) = tail.split_at(n);
        rest = tail;
        let lose_s2c = op & 0x80 != 0;
        match op & 0x07 {
            // Control text (may hold NULs: several messages), repeated.
            0 | 1 => {
                let text = String::from_utf8_lossy(arg);
                for _ in 0..=(op >> 3 & 0x0f) {
                    client.send_control_message(now, &text);
                }
            }
            2 => {
                server.handle_packet(now, arg);
            }
            3 => {
                let _ = client.start_renegotiation(now);
            }
            4 => {
                let _ = server.start_renegotiation(now);
            }
            _ => {
                now += Duration::from_millis(100 * u64::from(arg.first().copied().unwrap_or(1)));
                client.handle_timeout(now);
                server.handle_timeout(now);
            }
        }
        exchange(&mut client, &mut server, now, lose_s2c);
        assert!(
            server.buffered_bytes() <= BUFFER_LIMIT,
            "server buffers {} bytes",
            server.buffered_bytes()
        );
        if server.is_closed() {
            break;
        }
    }
});
