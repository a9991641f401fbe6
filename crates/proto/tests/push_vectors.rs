//! PUSH_REPLY texts captured from a live OpenVPN 2.6.14 server, plus property tests.

use std::net::Ipv4Addr;

use ferrovpn_proto::push::{ControlMessage, PushOption, PushReply, split_messages};
use proptest::prelude::*;
use serde_json::Value;

fn replies() -> Vec<(String, String)> {
    let path = format!(
        "{}/tests/vectors/key_method_2.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("push_reply_"))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

#[test]
fn stock_replies_parse_and_round_trip() {
    let all = replies();
    assert_eq!(all.len(), 3);
    for (name, text) in all {
        let r = PushReply::parse(&text).unwrap();
        assert_eq!(r.to_text(), text, "{name}");
        assert_eq!(r.to_text_checked().unwrap(), text);
        assert_eq!(r.continuation, None);
        let o = &r.options;
        assert_eq!(o[0], PushOption::RouteGateway(Ipv4Addr::new(10, 211, 0, 1)));
        assert_eq!(o[1], PushOption::Topology("subnet".into()));
        assert!(o.contains(&PushOption::Ifconfig {
            local: Ipv4Addr::new(10, 211, 0, 2),
            netmask_or_remote: Ipv4Addr::new(255, 255, 255, 0),
        }));
        assert!(o.contains(&PushOption::Cipher("AES-256-GCM".into())));
        assert!(o.contains(&PushOption::TunMtu(1500)));
        let has_peer_id = o.contains(&PushOption::PeerId(0));
        assert_eq!(has_peer_id, name != "push_reply_no_iv_proto", "{name}");
        match name.as_str() {
            "push_reply_stock" => {
                assert!(o.contains(&PushOption::Ping(10)));
                assert!(o.contains(&PushOption::PingRestart(60)));
                assert!(o.contains(&PushOption::ProtocolFlags(vec![
                    "cc-exit".into(),
                    "tls-ekm".into(),
                    "dyn-tls-crypt".into()
                ])));
            }
            _ => {
                assert!(o.contains(&PushOption::Ping(1)));
                assert!(!o.iter().any(|x| matches!(x, PushOption::ProtocolFlags(_))));
            }
        }
        assert_eq!(ControlMessage::parse(&text), ControlMessage::PushReply(r));
        let mut wire = text.clone().into_bytes();
        wire.push(0);
        let (msgs, used) = split_messages(&wire);
        assert_eq!((msgs, used), (vec![Ok(text.as_str())], wire.len()));
    }
}

#[test]
fn malformed_replies_are_errors() {
    for bad in [
        "PUSH_REPLY,ifconfig 10.211.0.2 255.255.255.256",
        "PUSH_REPLY,ifconfig 10.211.0.2",
        "PUSH_REPLY,route-gateway 10.211.0",
        "PUSH_REPLY,ping 4294967296",
        "PUSH_REPLY,ping-restart 99999999999999999999999",
        "PUSH_REPLY,peer-id 99999999",
        "PUSH_REPLY,tun-mtu",
        "PUSH_REPLY,topology subnet\u{7}",
        "PUSH_REPLY ping 10",
        "PUSH_REPLY,push-continuation 0",
    ] {
        assert!(PushReply::parse(bad).is_err(), "{bad}");
        assert!(matches!(
            ControlMessage::parse(bad),
            ControlMessage::BadPushReply(_) | ControlMessage::Other(_)
        ));
    }
    assert!(PushReply::parse_bytes(b"PUSH_REPLY,cipher \xc3\x28").is_err());
    let (msgs, _) = split_messages(b"PUSH_REPLY,cipher \xc3\x28\0");
    assert!(msgs[0].is_err());
}

fn arb_word() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_.:/-]{1,12}"
}

fn arb_option() -> impl Strategy<Value = PushOption> {
    let ip = any::<[u8; 4]>().prop_map(Ipv4Addr::from);
    prop_oneof![
        (ip.clone(), ip.clone()).prop_map(|(local, netmask_or_remote)| PushOption::Ifconfig {
            local,
            netmask_or_remote
        }),
        (
            ip.clone(),
            ip.clone(),
            proptest::option::of(ip.clone()),
            proptest::option::of(any::<u32>())
        )
            .prop_map(|(network, netmask, gateway, metric)| PushOption::Route {
                network,
                netmask,
                gateway,
                metric
            }),
        ip.prop_map(PushOption::RouteGateway),
        any::<u32>().prop_map(PushOption::Ping),
        any::<u32>().prop_map(PushOption::PingRestart),
        (0u32..0x0100_0000).prop_map(PushOption::PeerId),
        any::<u32>().prop_map(PushOption::TunMtu),
        arb_word().prop_map(PushOption::Cipher),
        arb_word().prop_map(PushOption::Topology),
        arb_word().prop_map(PushOption::KeyDerivation),
        proptest::collection::vec(arb_word(), 1..4).prop_map(PushOption::ProtocolFlags),
        proptest::collection::vec(arb_word(), 0..4).prop_map(PushOption::RedirectGateway),
        (arb_word(), proptest::option::of(arb_word()))
            .prop_map(|(k, v)| PushOption::DhcpOption(k, v.unwrap_or_default())),
        ("x-[a-z]{1,8}", proptest::collection::vec(arb_word(), 0..4))
            .prop_map(|(n, a)| PushOption::Other(n, a)),
    ]
}

proptest! {
    #[test]
    fn parse_never_panics_on_strings(s in "PUSH_REPLY(,[ -~]{0,40}){0,6}") {
        let _ = PushReply::parse(&s);
        let _ = ControlMessage::parse(&s);
    }

    #[test]
    fn parse_never_panics_on_any_text(s in "\\PC{0,200}") {
        let _ = PushReply::parse(&s);
        let _ = ControlMessage::parse(&s);
        let _ = PushOption::parse(&s);
    }

    #[test]
    fn split_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let (msgs, used) = split_messages(&bytes);
        prop_assert!(used <= bytes.len());
        prop_assert!(msgs.len() <= bytes.len());
        for m in msgs.into_iter().flatten() {
            let _ = PushReply::parse(m);
        }
    }

    #[test]
    fn round_trip(options in proptest::collection::vec(arb_option(), 0..12)) {
        let r = PushReply::new(options);
        let text = r.to_text_checked().unwrap();
        prop_assert_eq!(PushReply::parse(&text).unwrap(), r.clone());
        // Split form merges back to the same options.
        let mut merged = PushReply::default();
        for part in r.to_texts(120) {
            merged.extend(PushReply::parse(&part).unwrap());
        }
        prop_assert_eq!(merged.options, r.options);
    }
}
