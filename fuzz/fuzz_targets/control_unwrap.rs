//! Fuzz control-channel unwrapping under tls-crypt and tls-auth with a fixed
//! key: arbitrary bytes must be rejected (a valid tag is out of reach for a
//! fuzzer) without panicking, whatever length or opcode they carry.
#![no_main]

use std::sync::LazyLock;

use ferrovpn_proto::data::Side;
use ferrovpn_proto::wrap::{AuthDigest, ControlWrap, KeyDirection, StaticKey};
use libfuzzer_sys::fuzz_target;

/// Receivers for the same fixed key: tls-crypt both roles, tls-auth per digest.
static WRAPS: LazyLock<Vec<ControlWrap>> = LazyLock::new(|| {
    let mut raw = [0u8; 256];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(151).wrapping_add(7);
    }
    let key = StaticKey::from_bytes(raw);
    vec![
        ControlWrap::tls_crypt(&key, Side::Server),
        ControlWrap::tls_crypt(&key, Side::Client),
        ControlWrap::tls_auth(&key, KeyDirection::Normal, AuthDigest::Sha1),
        ControlWrap::tls_auth(&key, KeyDirection::Inverse, AuthDigest::Sha256),
        ControlWrap::tls_auth(&key, KeyDirection::Bidirectional, AuthDigest::Sha512),
    ]
});

fuzz_target!(|data: &[u8]| {
    for w in WRAPS.iter() {
        let _ = w.unwrap(data);
    }
});
