//! Fuzz the metrics endpoint's request-head parser: the bytes come from
//! whoever connects to `metrics IP:PORT`.
#![no_main]

use ferrovpn_control::metrics::http::parse_request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_request(data);
});
