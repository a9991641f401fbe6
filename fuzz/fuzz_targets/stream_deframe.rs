//! Fuzz the TCP stream deframer: bytes from a peer, delivered in reads of
//! sizes the input picks. Packets come out whole and within the limit, the
//! buffer always has room for the next read, and a broken stream stays broken.
#![no_main]

use ferrovpn_proto::stream::{Deframer, PREFIX_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: the packet limit (in 16-byte steps); second: the read size.
    let [limit, read, stream @ ..] = data else {
        return;
    };
    let max_packet = usize::from(*limit) * 16 + 1;
    let read = usize::from(*read) + 1;
    let mut d = Deframer::new(max_packet, 64);
    let mut consumed = 0;
    let mut at = 0;
    while at < stream.len() {
        let space = d.space();
        assert!(!space.is_empty());
        let n = space.len().min(read).min(stream.len() - at);
        space[..n].copy_from_slice(&stream[at..at + n]);
        d.filled(n);
        at += n;
        loop {
            match d.next_packet() {
                Ok(Some(p)) => {
                    assert!(!p.is_empty() && p.len() <= max_packet);
                    assert_eq!(
                        p,
                        &stream[consumed + PREFIX_LEN..consumed + PREFIX_LEN + p.len()]
                    );
                    consumed += PREFIX_LEN + p.len();
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(d.next_packet(), Err(e));
                    return;
                }
            }
        }
        assert_eq!(consumed + d.buffered(), at);
    }
});
