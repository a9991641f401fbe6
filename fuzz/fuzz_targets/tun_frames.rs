//! Fuzz both TUN-side parsers: splitting a `virtio_net_hdr` super-packet read
//! from the device (what the kernel hands us) and coalescing a batch of
//! decrypted packets before they are written (what a peer sent us). Neither
//! may panic, and coalescing must keep every buffer inside its capacity.
#![no_main]

use ferrovpn_dataplane::tun::{Coalescer, split_frame};
use libfuzzer_sys::fuzz_target;

const OFF: usize = 16;

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
    // Packets separated by 2-byte big-endian lengths.
    let mut bufs = Vec::new();
    let mut at = rest;
    while at.len() >= 2 && bufs.len() < 32 {
        let len = usize::from(u16::from_be_bytes([at[0], at[1]])).min(at.len() - 2);
        let mut b = Vec::with_capacity(2 * OFF + 65_535);
        b.resize(OFF, 0);
        b.extend_from_slice(&at[2..2 + len]);
        bufs.push(b);
        at = &at[2 + len..];
    }
    let caps: Vec<usize> = bufs.iter().map(Vec::capacity).collect();
    let mut c = Coalescer::new(mode & 2 != 0);
    let writes = c.plan(&mut bufs, OFF).to_vec();
    for (i, b) in bufs.iter().enumerate() {
        assert_eq!(b.capacity(), caps[i], "a buffer reallocated");
    }
    let mut seen = vec![false; bufs.len()];
    for i in writes {
        assert!(!seen[i], "buffer {i} written twice");
        seen[i] = true;
    }
});
