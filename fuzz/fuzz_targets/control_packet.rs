//! Fuzz the unwrapped control packet codec: arbitrary bytes must parse or give
//! a `WireError`, never panic, and whatever parses must re-emit to the same bytes.
#![no_main]

use ferrovpn_proto::wire::{ControlPacket, parse_prefix};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_prefix(data);
    if let Ok(pkt) = ControlPacket::parse(data) {
        let mut out = Vec::with_capacity(data.len());
        pkt.emit(&mut out);
        assert_eq!(out, data, "parse/emit round trip");
    }
});
