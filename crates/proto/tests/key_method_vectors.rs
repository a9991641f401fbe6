//! Key-method-2 known answers from a live OpenVPN 2.6.14 run, plus property tests.

use ferrovpn_proto::key_method::{KeyMethod2, KeyMethodError, PeerInfo};
use proptest::prelude::*;
use serde_json::Value;

fn load() -> Value {
    let path = format!(
        "{}/tests/vectors/key_method_2.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hexv(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

/// The vector's string text without its trailing NUL.
fn text(v: &Value) -> String {
    v["text"]
        .as_str()
        .unwrap()
        .trim_end_matches('\0')
        .to_owned()
}

fn check(msg: &Value, from_client: bool) -> KeyMethod2 {
    let bytes = hexv(&msg["bytes"]);
    assert_eq!(bytes.len() as u64, msg["length"].as_u64().unwrap());
    let p = &msg["parsed"];
    let (km, used) = KeyMethod2::decode(&bytes, from_client).unwrap();
    assert_eq!(used, bytes.len());
    assert_eq!(km.pre_master.is_some(), from_client);
    if from_client {
        assert_eq!(km.pre_master.unwrap().to_vec(), hexv(&p["pre_master"]));
    }
    assert_eq!(km.random1.to_vec(), hexv(&p["random1"]));
    assert_eq!(km.random2.to_vec(), hexv(&p["random2"]));
    assert_eq!(km.options, text(&p["options"]));
    assert_eq!(km.username, text(&p["username"]));
    assert_eq!(km.password, text(&p["password"]));
    assert_eq!(km.peer_info, text(&p["peer_info"]));

    let mut again = Vec::new();
    km.encode(&mut again);
    assert_eq!(again, bytes, "re-encoding is byte-identical");

    // Every proper prefix asks for more bytes; trailing data is left alone.
    for n in 0..bytes.len() {
        assert_eq!(
            KeyMethod2::decode(&bytes[..n], from_client),
            Err(KeyMethodError::Incomplete)
        );
    }
    let mut more = bytes.clone();
    more.extend_from_slice(b"PUSH_REPLY\0");
    assert_eq!(
        KeyMethod2::decode(&more, from_client).unwrap(),
        (km.clone(), bytes.len())
    );
    km
}

#[test]
fn server_message() {
    let v = load();
    let km = check(&v["server_message"], false);
    assert!(km.options.ends_with(",tls-server"));
}

#[test]
fn client_message() {
    let v = load();
    let km = check(&v["client_message"], true);
    let pi = PeerInfo::parse(&km.peer_info);
    assert_eq!(pi.version.as_deref(), Some("2.6.14-pyclient"));
    assert_eq!(pi.platform.as_deref(), Some("linux"));
    assert_eq!(pi.proto, 654);
    assert_eq!(pi.mtu, Some(1600));
    assert_eq!(pi.ncp, 2);
    assert_eq!(
        pi.ciphers,
        ["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"]
    );
    assert_eq!(pi.get("IV_TCPNL"), Some("1"));
    // 654 = 2|4|8|128|512
    assert!(pi.supports_data_v2() && pi.request_push() && pi.tls_ekm() && pi.cc_exit());
}

#[test]
fn stock_client_length() {
    let v = load();
    let s = &v["stock_client_message_length"];
    let mut km = KeyMethod2::new_random(
        true,
        s["options"].as_str().unwrap(),
        s["peer_info"].as_str().unwrap(),
    );
    km.username.clear();
    let mut w = Vec::new();
    km.encode(&mut w);
    assert_eq!(w.len() as u64, s["length"].as_u64().unwrap());
    let pi = PeerInfo::parse(&km.peer_info);
    assert_eq!(pi.proto, 990);
    assert_eq!(pi.get("IV_COMP_STUBv2"), Some("1"));
}

fn arb_text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>().prop_filter("no NUL", |c| *c != '\0'), 0..max)
        .prop_map(|v| v.into_iter().collect::<String>())
        .prop_filter("fits", move |s: &String| s.len() < max)
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600), from_client: bool) {
        if let Ok((_, used)) = KeyMethod2::decode(&bytes, from_client) {
            prop_assert!(used <= bytes.len());
        }
    }

    #[test]
    fn decode_never_panics_on_plausible_headers(
        tail in proptest::collection::vec(any::<u8>(), 0..300),
        from_client: bool,
    ) {
        let mut w = vec![0, 0, 0, 0, 2];
        w.extend(std::iter::repeat_n(0x11, if from_client { 112 } else { 64 }));
        w.extend_from_slice(&tail);
        let _ = KeyMethod2::decode(&w, from_client);
    }

    #[test]
    fn roundtrip(
        from_client: bool,
        options in arb_text(200),
        username in arb_text(200),
        password in arb_text(200),
        peer_info in arb_text(400),
    ) {
        let mut km = KeyMethod2::new_random(from_client, options, peer_info);
        // A login of two non-empty strings is a login sent; an empty part
        // is written as absent unless `credentials_sent` (unit-tested in
        // key_method.rs), so the decoder's reading matches this.
        km.credentials_sent = !username.is_empty() && !password.is_empty();
        km.username = username;
        km.password = password;
        let mut w = Vec::new();
        km.encode(&mut w);
        let (d, used) = KeyMethod2::decode(&w, from_client).unwrap();
        prop_assert_eq!(used, w.len());
        prop_assert_eq!(d, km);
    }

    #[test]
    fn peer_info_parse_never_panics(s in ".{0,300}") {
        let _ = PeerInfo::parse(&s);
    }
}
