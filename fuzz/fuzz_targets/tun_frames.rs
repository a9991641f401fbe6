//! Fuzz both TUN-side parsers: splitting a `virtio_net_hdr` super-packet read
//! from the device (what the kernel hands us) and coalescing a batch of
//! decrypted packets before they are written (what a peer sent us). Neither
//! may panic, and coalescing keeps to its slots (one frame per packet or
//! super-packet written, less the pure ACKs the ACK filter left out).
#![no_main]

use ferrovpn_dataplane::tun::{Coalescer, TunOffloads, split_frame};
use libfuzzer_sys::fuzz_target;

const OFF: usize = 16;
const SLOTS: usize = 32;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let mut frame = rest.to_vec();
        let mut bufs: Vec<Vec<u8>> = (0..8).map(|_| vec![0u8; OFF + 2048]).collect();
        let mut sizes = vec![0usize; 8];
        let _ = split_frame(&mut frame, &mut bufs, &mut sizes, OFF);
        return;
    }
    // Packets separated by 2-byte big-endian lengths, each taken the way
    // the receive path takes it: opened in place at the coalescer's spot
    // (kept, or discarded as a failed authentication would be), or copied
    // in with `push`. The length's top bit picks discard, the next `push`.
    let offloads = TunOffloads {
        tcp: mode & 2 != 0,
        udp: mode & 4 != 0,
    };
    let mut c = Coalescer::new(offloads, SLOTS, OFF);
    if mode & 8 != 0 {
        c = c.filter_acks();
    }
    let mut at = rest;
    let mut kept = 0usize;
    while at.len() >= 2 {
        let word = u16::from_be_bytes([at[0], at[1]]);
        let len = usize::from(word & 0x3fff).min(at.len() - 2);
        let pkt = &at[2..2 + len];
        at = &at[2 + len..];
        if word & 0x4000 != 0 {
            kept += usize::from(c.push(pkt));
            continue;
        }
        let Some(spot) = c.spot(len) else {
            break;
        };
        let Some(w) = c.window(&spot).get_mut(..len) else {
            c.discard(spot);
            continue;
        };
        w.copy_from_slice(pkt);
        if word & 0x8000 != 0 {
            c.discard(spot);
        } else {
            c.commit(spot, len);
            kept += 1;
        }
    }
    c.finish();
    assert!(c.len() <= SLOTS && c.len() <= kept.max(c.len()));
    let left_out = c.take_superseded_acks() as usize;
    assert!(left_out < c.len().max(1));
    assert_eq!(c.frames().count(), c.len() - left_out);
    c.clear();
    assert!(c.is_empty());
});
