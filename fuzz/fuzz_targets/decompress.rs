//! Fuzz the compression unframing and decompression of every framing mode:
//! arbitrary decrypted payloads must be unframed or refused without
//! panicking, the result must stay within the output limit, and framing
//! what came out must give back a payload the same mode accepts.
#![no_main]

use ferrovpn_proto::compress::{Framing, MAX_PREFIX, MAX_SUFFIX};
use libfuzzer_sys::fuzz_target;

const LIMIT: usize = 2048;
const AT: usize = 16;

fuzz_target!(|data: &[u8]| {
    for mode in Framing::ALL {
        let mut buf = vec![0u8; AT];
        buf.extend_from_slice(data);
        let Ok(n) = mode.unframe(&mut buf, AT, data.len(), LIMIT) else {
            continue;
        };
        assert!(n <= LIMIT.max(data.len()));
        assert!(buf.len() >= AT + n);
        let packet = buf[AT..AT + n].to_vec();
        let mut out = vec![0u8; MAX_PREFIX + n + MAX_SUFFIX];
        out[MAX_PREFIX..MAX_PREFIX + n].copy_from_slice(&packet);
        let (st, len) = mode.frame(&mut out, MAX_PREFIX, n).expect("room is there");
        let mut back = out[st..st + len].to_vec();
        let m = mode
            .unframe(&mut back, 0, len, LIMIT.max(n))
            .expect("own framing is accepted");
        assert_eq!(back[..m], packet[..]);
    }
});
