//! Fuzz the parsers of what a proxy answers a client (HTTP CONNECT answer
//! head, SOCKS5 method choice, authentication status and reply), fed the
//! way the client reads them: one byte more at a time, and a datagram from a
//! SOCKS5 UDP relay. The proxy may be hostile: no panic, no reading past the
//! answer, bounded input.
#![no_main]

use ferrovpn_control::client::proxy::{
    MAX_HTTP_HEAD, parse_http_answer, parse_socks_auth, parse_socks_choice, parse_socks_reply,
    socks_udp_unwrap,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for end in 1..=data.len().min(MAX_HTTP_HEAD + 1) {
        match parse_http_answer(&data[..end]) {
            Ok(Some((_, used))) => {
                assert!(used <= end);
                break;
            }
            Ok(None) => assert!(end < MAX_HTTP_HEAD),
            Err(_) => break,
        }
    }
    for end in 1..=data.len().min(300) {
        match parse_socks_reply(&data[..end]) {
            Ok(Some((_, used))) => {
                assert_eq!(used, end);
                break;
            }
            Ok(None) => assert!(end < 4 + 256 + 2),
            Err(_) => break,
        }
    }
    if let [a, b, ..] = data {
        let _ = parse_socks_choice([*a, *b], 2);
        let _ = parse_socks_auth([*a, *b]);
    }
    if let Some((_, payload)) = socks_udp_unwrap(data) {
        assert_eq!(payload.len() + 10, data.len());
    }
});
