//! Known-answer tests for tls-auth / tls-crypt wrapping against packets captured
//! from live OpenVPN 2.6.14 runs (tests/vectors/README.md).

use ferrovpn_proto::data::Side;
use ferrovpn_proto::wire::{ControlPacket, Opcode, SessionId, WireError};
use ferrovpn_proto::wrap::{AuthDigest, ControlWrap, KeyDirection, ReplayId, StaticKey};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hexv(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn sid(v: &Value) -> SessionId {
    SessionId(hexv(v).try_into().unwrap())
}

fn key_of(doc: &Value) -> StaticKey {
    let k = StaticKey::parse(doc["static_key_file"].as_str().unwrap()).unwrap();
    assert_eq!(k.as_bytes().as_slice(), hexv(&doc["static_key"]));
    // `openvpn --genkey secret` output is reproduced byte for byte.
    assert_eq!(k.to_file_text(), doc["static_key_file"].as_str().unwrap());
    k
}

/// The logical packet described by a vector's `fields`.
fn fields(f: &Value) -> ControlPacket {
    let opcode = Opcode::from_u8(f["opcode"].as_u64().unwrap() as u8).unwrap();
    let acks: Vec<u32> = f["ack_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(acks.len() as u64, f["ack_count"].as_u64().unwrap());
    ControlPacket {
        opcode,
        key_id: f["key_id"].as_u64().unwrap() as u8,
        session_id: sid(&f["own_sid"]),
        acks,
        remote_session_id: (!f["peer_sid"].is_null()).then(|| sid(&f["peer_sid"])),
        message_id: f["msg_id"].as_u64().map(|m| m as u32),
        payload: hexv(&f["payload"]),
    }
}

fn replay_of(p: &Value) -> ReplayId {
    ReplayId {
        id: p["replay_id"].as_u64().unwrap() as u32,
        time: p["replay_time"].as_u64().unwrap() as u32,
    }
}

fn sender_of(p: &Value) -> Side {
    match p["direction"].as_str().unwrap() {
        "c2s" => Side::Client,
        "s2c" => Side::Server,
        d => panic!("unknown direction {d}"),
    }
}

/// (a) unwrap gives `fields`, (b) wrap reproduces `wire`, (c) every one-bit
/// flip fails authentication, (d) every truncation is an error, not a panic.
fn check_packet(tx: &ControlWrap, rx: &ControlWrap, p: &Value) {
    let wire = hexv(&p["wire"]);
    assert_eq!(wire.len() as u64, p["length"].as_u64().unwrap());
    let want = fields(&p["fields"]);
    let replay = replay_of(p);

    assert_eq!(rx.unwrap(&wire), Ok((want.clone(), Some(replay))));

    let mut out = Vec::new();
    tx.wrap(&want, replay, &mut out);
    assert_eq!(hex::encode(&out), hex::encode(&wire));

    let mut plain = Vec::new();
    want.emit(&mut plain);
    assert_eq!(wire.len(), plain.len() + rx.overhead());

    let mut flipped = wire.clone();
    for byte in 0..wire.len() {
        for bit in 0..8 {
            flipped[byte] ^= 1 << bit;
            let got = rx.unwrap(&flipped);
            if byte == 0 {
                // The opcode byte is checked before authentication; whatever
                // the flip turns it into, the packet must not get through.
                assert!(got.is_err(), "byte 0 bit {bit}");
            } else {
                assert_eq!(got, Err(WireError::AuthFailed), "byte {byte} bit {bit}");
            }
            flipped[byte] ^= 1 << bit;
        }
    }

    for len in 0..wire.len() {
        assert!(rx.unwrap(&wire[..len]).is_err(), "truncated to {len}");
    }
}

#[test]
fn tls_crypt_v1_stock_packets() {
    let doc = load("tls_crypt_v1.json");
    let key = key_of(&doc);
    let client = ControlWrap::tls_crypt(&key, Side::Client);
    let server = ControlWrap::tls_crypt(&key, Side::Server);
    let packets = doc["packets"].as_array().unwrap();
    assert_eq!(packets.len(), 4);
    for p in packets {
        let (tx, rx) = match sender_of(p) {
            Side::Client => (&client, &server),
            Side::Server => (&server, &client),
        };
        check_packet(tx, rx, p);
        // The sender's own receive keys are the other direction's.
        assert_eq!(tx.unwrap(&hexv(&p["wire"])), Err(WireError::AuthFailed));
    }
    assert_eq!(hexv(&packets[0]["wire"]).len(), 54);
    assert_eq!(hexv(&packets[1]["wire"]).len(), 66);
    assert_eq!(client.overhead(), 40);
}

#[test]
fn tls_crypt_key_slices_match_vectors() {
    let doc = load("tls_crypt_v1.json");
    let key = key_of(&doc);
    let k = key.as_bytes();
    for p in doc["packets"].as_array().unwrap() {
        let (ke, ka) = match sender_of(p) {
            Side::Server => (&k[0..32], &k[64..96]),
            Side::Client => (&k[128..160], &k[192..224]),
        };
        assert_eq!(hexv(&p["Ke"]), ke);
        assert_eq!(hexv(&p["Ka"]), ka);
    }
}

#[test]
fn dynamic_tls_crypt_soft_reset_packets() {
    let doc = load("tls_crypt_v1.json");
    let packets = doc["dynamic_tls_crypt_soft_reset"]["packets"]
        .as_array()
        .unwrap();
    // The logged keys are placed where a 256-byte dynamic key holds them
    // (server sends with set 0, client with set 1).
    let mut raw = [0u8; 256];
    for p in packets {
        let (ke_at, ka_at) = match sender_of(p) {
            Side::Server => (0, 64),
            Side::Client => (128, 192),
        };
        raw[ke_at..ke_at + 32].copy_from_slice(&hexv(&p["Ke"]));
        raw[ka_at..ka_at + 32].copy_from_slice(&hexv(&p["Ka"]));
    }
    let key = StaticKey::from_bytes(raw);
    let client = ControlWrap::tls_crypt(&key, Side::Client);
    let server = ControlWrap::tls_crypt(&key, Side::Server);
    for p in packets {
        let (tx, rx) = match sender_of(p) {
            Side::Client => (&client, &server),
            Side::Server => (&server, &client),
        };
        check_packet(tx, rx, p);
        assert_eq!(hexv(&p["wire"])[0], 0x19);
    }
}

#[test]
fn dynamic_tls_crypt_key_layout_matches_server_log() {
    let doc = load("dynamic_tls_crypt.json");
    for v in doc["vectors"].as_array().unwrap() {
        let k = hexv(&v["tls_crypt_key"]);
        let key = StaticKey::from_bytes(k.clone().try_into().unwrap());
        let logged = &v["server_logged"];
        let b = key.as_bytes();
        assert_eq!(hexv(&logged["server_outgoing_cipher"]), b[0..32]);
        assert_eq!(hexv(&logged["server_outgoing_hmac"]), b[64..96]);
        assert_eq!(hexv(&logged["server_incoming_cipher"]), b[128..160]);
        assert_eq!(hexv(&logged["server_incoming_hmac"]), b[192..224]);
        // A packet the client wraps with the dynamic key opens on the server.
        let pkt = ControlPacket {
            opcode: Opcode::SoftResetV1,
            key_id: 1,
            session_id: SessionId([1; 8]),
            acks: vec![],
            remote_session_id: None,
            message_id: Some(0),
            payload: vec![],
        };
        let r = ReplayId { id: 1, time: 7 };
        let mut w = Vec::new();
        ControlWrap::tls_crypt(&key, Side::Client).wrap(&pkt, r, &mut w);
        assert_eq!(w.len(), 54);
        assert_eq!(
            ControlWrap::tls_crypt(&key, Side::Server).unwrap(&w),
            Ok((pkt, Some(r)))
        );
    }
}

fn check_tls_auth_group(doc: &Value, group: &str, digest: AuthDigest, sizes: (usize, usize)) {
    let key = key_of(doc);
    let g = &doc[group];
    assert_eq!(g["H"].as_u64().unwrap() as usize, digest.len());
    assert_eq!(
        AuthDigest::from_name(g["auth"].as_str().unwrap()),
        Some(digest)
    );
    let server = ControlWrap::tls_auth(&key, KeyDirection::Normal, digest);
    let client = ControlWrap::tls_auth(&key, KeyDirection::Inverse, digest);
    assert_eq!(server.overhead(), digest.len() + 8);
    let packets = g["packets"].as_array().unwrap();
    for p in packets {
        let dir = p["sender_key_direction"].as_u64().unwrap();
        let (tx, rx) = match sender_of(p) {
            Side::Client => (&client, &server),
            Side::Server => (&server, &client),
        };
        assert_eq!(dir, if sender_of(p) == Side::Server { 0 } else { 1 });
        check_packet(tx, rx, p);
        // tls-auth is not encrypted: a bidirectional receiver keyed with the
        // sender's key set also accepts, one keyed with the other set does not.
        let wire = hexv(&p["wire"]);
        let bidi = ControlWrap::tls_auth(&key, KeyDirection::Bidirectional, digest);
        assert_eq!(bidi.unwrap(&wire).is_ok(), dir == 0);
    }
    let reset = |op: u64| {
        packets
            .iter()
            .find(|p| p["fields"]["opcode"].as_u64() == Some(op))
            .map(|p| hexv(&p["wire"]).len())
            .unwrap()
    };
    assert_eq!((reset(7), reset(8)), sizes);
}

#[test]
fn tls_auth_sha1_packets() {
    check_tls_auth_group(&load("tls_auth.json"), "sha1", AuthDigest::Sha1, (42, 54));
}

#[test]
fn tls_auth_sha256_packets() {
    check_tls_auth_group(
        &load("tls_auth.json"),
        "sha256",
        AuthDigest::Sha256,
        (54, 66),
    );
}

#[test]
fn unwrapped_reset_sizes_without_wrap() {
    let doc = load("tls_crypt_v1.json");
    let packets = doc["packets"].as_array().unwrap();
    for (p, size) in packets.iter().zip([14, 26]) {
        let pkt = fields(&p["fields"]);
        let mut w = Vec::new();
        ControlWrap::None.wrap(&pkt, replay_of(p), &mut w);
        assert_eq!(w.len(), size);
        assert_eq!(ControlWrap::None.unwrap(&w), Ok((pkt, None)));
    }
}

#[test]
fn garbage_never_panics() {
    let key = StaticKey::generate();
    let wraps = [
        ControlWrap::None,
        ControlWrap::tls_crypt(&key, Side::Server),
        ControlWrap::tls_auth(&key, KeyDirection::Normal, AuthDigest::Sha1),
        ControlWrap::tls_auth(&key, KeyDirection::Inverse, AuthDigest::Sha512),
    ];
    let mut x: u32 = 0x1234_5678;
    for len in 0..200 {
        for first in [0x20u8, 0x28, 0x38, 0x40, 0x48, 0x18, 0xff] {
            let mut junk = vec![first];
            for _ in 1..len {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                junk.push(x as u8);
            }
            junk.truncate(len);
            for w in &wraps {
                let r = w.unwrap(&junk);
                if !w.is_none() {
                    assert!(r.is_err());
                }
            }
        }
    }
}
