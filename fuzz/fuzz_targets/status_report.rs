//! Fuzz the reading of a status report (`status 3` over the management
//! socket, as `ferrovpn status` and `client list` read it).
#![no_main]

use ferrovpn_control::status::parse_client_list;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_client_list(text);
    }
});
