//! Fuzz `fragment` reassembly: a stream of arbitrary decrypted payloads must
//! be taken or refused without panicking, and nothing reassembled may exceed
//! the bound the reassembler was given.
#![no_main]

use std::time::{Duration, Instant};

use ferrovpn_proto::fragment::{Incoming, Reassembler};
use libfuzzer_sys::fuzz_target;

const MAX_PACKET: usize = 1600;

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let mut r = Reassembler::new(MAX_PACKET, start);
    // First byte of each record: its length; the time moves a second per record.
    let mut rest = data;
    let mut t = start;
    while let Some((&len, tail)) = rest.split_first() {
        let take = usize::from(len).min(tail.len());
        let (d, tail) = tail.split_at(take);
        if let Ok(Incoming::Complete(p)) = r.incoming(d, t) {
            assert!(p.len() <= MAX_PACKET);
        }
        t += Duration::from_secs(1);
        let _ = r.reap(t);
        rest = tail;
    }
});
