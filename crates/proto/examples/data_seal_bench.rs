//! Nanoseconds per packet of the data channel's AEAD seal and open, done the
//! way the dataplane worker does them (`SealingKey::seal_at` on a buffer with
//! head room, `OpeningKey::open` into a separate window), on each AEAD
//! library ([`AeadBackend`]), next to the bare aws-lc-rs call underneath, so
//! our wrapper's cost, each library's per-call set-up and the bulk cipher can
//! be told apart (16-byte payloads are nearly all set-up).
//!
//! `cargo run --release -p ferrovpn-proto --example data_seal_bench [rounds]`
//! prints the median and minimum over `rounds` (default 9) of the mean time
//! per packet. This VM's speed swings between runs: compare rows of one run,
//! and prefer the minimum. `DATA_SEAL_BENCH_ONLY=<cipher>:<len>` (e.g.
//! `AES-256-GCM:100`) runs one case, for `perf record`.

use std::hint::black_box;
use std::time::Instant;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ferrovpn_proto::data::{AeadBackend, Cipher, MAX_HEAD_ROOM, OpeningKey, SealingKey};

/// Packets per timed round.
const PACKETS: u32 = 20_000;

/// Median and minimum ns per packet of `rounds` rounds of `PACKETS` calls.
fn time(rounds: usize, mut one: impl FnMut(u32)) -> (f64, f64) {
    // Warm-up: page in the buffers, settle the clock.
    for i in 0..PACKETS {
        one(i + 1);
    }
    let mut per: Vec<f64> = (0..rounds.max(1))
        .map(|_| {
            let t = Instant::now();
            for i in 0..PACKETS {
                one(i + 1);
            }
            t.elapsed().as_nanos() as f64 / f64::from(PACKETS)
        })
        .collect();
    per.sort_by(f64::total_cmp);
    (per[per.len() / 2], per[0])
}

fn report(name: &str, len: usize, (median, min): (f64, f64)) {
    println!(
        "{name:<40} {len:>5} B  median {median:7.1} ns  min {min:7.1} ns  ({:.2} GB/s at min)",
        len as f64 / min
    );
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(9);
    let only = std::env::var("DATA_SEAL_BENCH_ONLY").ok();
    let iv = [9, 8, 7, 6, 5, 4, 3, 2];
    for cipher in Cipher::ALL {
        let key: Vec<u8> = (0..cipher.key_len()).map(|i| i as u8 ^ 0x3c).collect();
        println!(
            "== {cipher} (data path uses {:?})",
            AeadBackend::for_cipher(cipher)
        );
        for len in [1400usize, 100, 16] {
            if only
                .as_ref()
                .is_some_and(|o| *o != format!("{cipher}:{len}"))
            {
                continue;
            }
            for backend in AeadBackend::ALL {
                let seal = SealingKey::with_backend(cipher, &key, iv, backend).unwrap();
                let open = OpeningKey::with_backend(cipher, &key, iv, backend).unwrap();
                // As the worker: the payload sits at MAX_HEAD_ROOM in a larger buffer.
                let at = MAX_HEAD_ROOM;
                let mut buf = vec![0x5au8; at + len + 64];
                report(
                    &format!("{backend:?} seal_at (worker's seal)"),
                    len,
                    time(rounds, |id| {
                        let r = seal.seal_at(0, Some(7), id, &mut buf, at, len);
                        black_box(r.unwrap());
                    }),
                );
                // One sealed packet, opened again and again into a window.
                let (start, plen) = seal.seal_at(0, Some(7), 1, &mut buf, at, len).unwrap();
                let packet = buf[start..start + plen].to_vec();
                let mut window = vec![0u8; 2048];
                report(
                    &format!("{backend:?} open (worker's open)"),
                    len,
                    time(rounds, |_| {
                        black_box(open.open(black_box(&packet), &mut window).unwrap());
                    }),
                );
            }
            if cipher == Cipher::Aes256Gcm {
                bare_aws_lc_rs(rounds, &key, len);
            }
        }
    }
}

/// The aws-lc-rs calls our wrapper makes, with nothing around them: what
/// any wrapper over aws-lc-rs' safe API could at best reach.
fn bare_aws_lc_rs(rounds: usize, key: &[u8], len: usize) {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).unwrap());
    let mut body = vec![0x5au8; len];
    let aad = [0x48u8, 0, 0, 7, 0, 0, 0, 1];
    report(
        "  bare aws-lc-rs seal_in_place_separate_tag",
        len,
        time(rounds, |id| {
            let mut n = [0u8; 12];
            n[..4].copy_from_slice(&id.to_be_bytes());
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(n),
                    Aad::from(&aad),
                    &mut body,
                )
                .unwrap();
            black_box(tag.as_ref()[0]);
        }),
    );
    let n = [0u8; 12];
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(n), Aad::from(&aad), &mut body)
        .unwrap();
    let mut out = vec![0u8; len];
    report(
        "  bare aws-lc-rs open_separate_gather",
        len,
        time(rounds, |_| {
            key.open_separate_gather(
                Nonce::assume_unique_for_key(n),
                Aad::from(&aad),
                &body,
                tag.as_ref(),
                &mut out,
            )
            .unwrap();
            black_box(&out);
        }),
    );
}
