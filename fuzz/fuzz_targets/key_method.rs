//! Fuzz the key-method-2 decoder (both directions) and the peer-info parser:
//! the plaintext of a TLS record is whatever an authenticated but hostile
//! peer chooses to send.
#![no_main]

use ferrovpn_proto::key_method::{KeyMethod2, PeerInfo};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for from_client in [true, false] {
        if let Ok((km, used)) = KeyMethod2::decode(data, from_client) {
            assert!(used <= data.len());
            let _ = PeerInfo::parse(&km.peer_info);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = PeerInfo::parse(text);
    }
});
