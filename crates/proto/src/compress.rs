//! Compression framing of data-channel payloads, as OpenVPN 2.6.14 does it
//! (`comp.h`, `compstub.c`, `comp-lz4.c`, `lzo.c`, the compression arms of
//! `options.c`).
//!
//! The framing sits inside the encrypted payload, in front of the IP packet,
//! and also in front of keepalive pings and OCC messages (2.6 runs every
//! outgoing payload through `encrypt_sign(c, true)` and decompresses before it
//! looks for a ping). The byte layouts:
//!
//! | mode | uncompressed | compressed |
//! |---|---|---|
//! | `comp-lzo no` | `FA` + packet | (dropped) |
//! | `comp-lzo [yes\|adaptive]`, `compress lzo` | `FA` + packet | `66` + LZO1X |
//! | `compress stub` | `FB` + `packet[1..]` + `packet[0]` | (dropped) |
//! | `compress lz4` | `FB` + `packet[1..]` + `packet[0]` | `69` + `lz4[1..]` + `lz4[0]` |
//! | `compress stub-v2` | packet (`50 00` + packet if it starts with `50`) | (dropped) |
//! | `compress lz4-v2` | as stub-v2 | `50 01` + LZ4 block |
//!
//! ferrovpn never compresses what it sends (VORACLE: compressing attacker
//! influenced plaintext leaks it through the length), even with
//! `allow-compression yes`: it always sends the "not compressed" framing of
//! the mode, which every 2.6 peer accepts. What the peer compressed is
//! decompressed where 2.6 would, into at most a caller-given size.

use thiserror::Error;

/// `NO_COMPRESS_BYTE`: LZO framing, packet not compressed.
pub const NO_COMPRESS_BYTE: u8 = 0xFA;
/// `NO_COMPRESS_BYTE_SWAP`: swap framing, packet not compressed.
pub const NO_COMPRESS_BYTE_SWAP: u8 = 0xFB;
/// `LZO_COMPRESS_BYTE`.
pub const LZO_COMPRESS_BYTE: u8 = 0x66;
/// `LZ4_COMPRESS_BYTE` (swap framing).
pub const LZ4_COMPRESS_BYTE: u8 = 0x69;
/// `COMP_ALGV2_INDICATOR_BYTE`: the v2 framings' escape (an IP packet never starts with it).
pub const V2_INDICATOR_BYTE: u8 = 0x50;
/// `COMP_ALGV2_UNCOMPRESSED_BYTE`.
pub const V2_UNCOMPRESSED_BYTE: u8 = 0;
/// `COMP_ALGV2_LZ4_BYTE`.
pub const V2_LZ4_BYTE: u8 = 1;

/// The most bytes [`Framing::frame`] puts in front of a payload.
pub const MAX_PREFIX: usize = 2;
/// The most bytes [`Framing::frame`] puts after a payload (the swapped byte).
pub const MAX_SUFFIX: usize = 1;

/// The framing on one data channel (2.6's `compress_alg`, chosen from the
/// algorithm and the swap flag).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Framing {
    /// No compression context: payloads are the packets.
    #[default]
    None,
    /// `comp-lzo no`: `FA` prefix; anything else from the peer is dropped.
    StubLzo,
    /// `comp-lzo [yes|adaptive]`, `compress lzo`: `FA` prefix, `66` = LZO1X from the peer.
    Lzo,
    /// `compress stub`: swap framing with `FB`.
    StubSwap,
    /// `compress lz4`: swap framing, `69` = LZ4 from the peer.
    Lz4,
    /// `compress stub-v2`: `50` escape only.
    StubV2,
    /// `compress lz4-v2`: `50` escape, `50 01` = LZ4 from the peer.
    Lz4V2,
}

impl Framing {
    /// Every framing (tests and fuzzing go through all of them).
    pub const ALL: [Framing; 7] = [
        Framing::None,
        Framing::StubLzo,
        Framing::Lzo,
        Framing::StubSwap,
        Framing::Lz4,
        Framing::StubV2,
        Framing::Lz4V2,
    ];
}

/// Why a received payload was dropped (2.6 drops it too, with `D_COMP_ERRORS`).
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum UnframeError {
    /// The framing byte is not one this mode accepts.
    #[error("bad compression header byte {0:#04x}")]
    BadHeader(u8),
    /// The compressed data is corrupt or expands past the limit.
    #[error("decompression failed")]
    Decompress,
    /// A v2 escape with nothing after it.
    #[error("truncated compression header")]
    Truncated,
}

impl Framing {
    /// Frame `buf[at..at + len]` in place without compressing it. Needs
    /// [`MAX_PREFIX`] bytes before `at` and [`MAX_SUFFIX`] after the payload;
    /// returns the framed payload as `(start, len)`, or `None` when the room
    /// is missing. An empty payload stays as it is (as in 2.6).
    pub fn frame(self, buf: &mut [u8], at: usize, len: usize) -> Option<(usize, usize)> {
        if len == 0 || self == Framing::None {
            return Some((at, len));
        }
        let end = at.checked_add(len)?;
        if end > buf.len() {
            return None;
        }
        match self {
            Framing::None => Some((at, len)),
            Framing::StubLzo | Framing::Lzo => {
                let start = at.checked_sub(1)?;
                buf[start] = NO_COMPRESS_BYTE;
                Some((start, len + 1))
            }
            Framing::StubSwap | Framing::Lz4 => {
                // Move the first byte to the end so the packet keeps its alignment.
                let first = buf[at];
                *buf.get_mut(end)? = first;
                buf[at] = NO_COMPRESS_BYTE_SWAP;
                Some((at, len + 1))
            }
            Framing::StubV2 | Framing::Lz4V2 => {
                if buf[at] != V2_INDICATOR_BYTE {
                    return Some((at, len));
                }
                let start = at.checked_sub(2)?;
                buf[start] = V2_INDICATOR_BYTE;
                buf[start + 1] = V2_UNCOMPRESSED_BYTE;
                Some((start, len + 2))
            }
        }
    }

    /// Undo the peer's framing of the decrypted payload `buf[at..at + len]`.
    /// The packet is left at `buf[at..at + n]` and `n` returned (`buf` may be
    /// resized). Compressed payloads are decompressed to at most `max` bytes.
    pub fn unframe(
        self,
        buf: &mut Vec<u8>,
        at: usize,
        len: usize,
        max: usize,
    ) -> Result<usize, UnframeError> {
        let end = at.checked_add(len).ok_or(UnframeError::Truncated)?;
        if end > buf.len() {
            return Err(UnframeError::Truncated);
        }
        if len == 0 || self == Framing::None {
            return Ok(len);
        }
        let head = buf[at];
        match self {
            Framing::None => Ok(len),
            Framing::StubLzo | Framing::Lzo => {
                if head == NO_COMPRESS_BYTE {
                    buf.copy_within(at + 1..end, at);
                    Ok(len - 1)
                } else if head == LZO_COMPRESS_BYTE && self == Framing::Lzo {
                    decompress(buf, at, at + 1..end, max, Algorithm::Lzo)
                } else {
                    Err(UnframeError::BadHeader(head))
                }
            }
            Framing::StubSwap | Framing::Lz4 => {
                buf[at] = buf[end - 1];
                let len = len - 1;
                if head == NO_COMPRESS_BYTE_SWAP {
                    Ok(len)
                } else if head == LZ4_COMPRESS_BYTE && self == Framing::Lz4 {
                    decompress(buf, at, at..at + len, max, Algorithm::Lz4)
                } else {
                    Err(UnframeError::BadHeader(head))
                }
            }
            Framing::StubV2 | Framing::Lz4V2 => {
                if head != V2_INDICATOR_BYTE {
                    return Ok(len);
                }
                let Some(&kind) = buf.get(at + 1).filter(|_| len >= 2) else {
                    return Err(UnframeError::Truncated);
                };
                if kind == V2_UNCOMPRESSED_BYTE {
                    buf.copy_within(at + 2..end, at);
                    Ok(len - 2)
                } else if kind == V2_LZ4_BYTE && self == Framing::Lz4V2 {
                    decompress(buf, at, at + 2..end, max, Algorithm::Lz4)
                } else {
                    Err(UnframeError::BadHeader(kind))
                }
            }
        }
    }
}

enum Algorithm {
    Lz4,
    Lzo,
}

/// Decompress `buf[src]` into `buf[at..]`, at most `max` bytes. Only packets
/// a peer really compressed come here (never the default), so the copy of the
/// input is off the common path.
fn decompress(
    buf: &mut Vec<u8>,
    at: usize,
    src: std::ops::Range<usize>,
    max: usize,
    alg: Algorithm,
) -> Result<usize, UnframeError> {
    let input = buf.get(src).ok_or(UnframeError::Truncated)?.to_vec();
    buf.resize(at + max, 0);
    let out = &mut buf[at..at + max];
    let n = match alg {
        Algorithm::Lz4 => lz4_flex::block::decompress_into(&input, out).ok(),
        Algorithm::Lzo => lzokay::decompress::decompress(&input, out).ok(),
    };
    match n {
        Some(n) if n > 0 => {
            buf.truncate(at + n);
            Ok(n)
        }
        _ => Err(UnframeError::Decompress),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Framing; 7] = Framing::ALL;

    fn framed(f: Framing, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; MAX_PREFIX + payload.len() + MAX_SUFFIX];
        buf[MAX_PREFIX..MAX_PREFIX + payload.len()].copy_from_slice(payload);
        let (st, len) = f.frame(&mut buf, MAX_PREFIX, payload.len()).unwrap();
        buf[st..st + len].to_vec()
    }

    fn unframed(f: Framing, wire: &[u8]) -> Result<Vec<u8>, UnframeError> {
        let mut buf = vec![0u8; 7];
        buf.extend_from_slice(wire);
        let n = f.unframe(&mut buf, 7, wire.len(), 2000)?;
        Ok(buf[7..7 + n].to_vec())
    }

    #[test]
    fn sent_framing_bytes_match_2_6() {
        let ip = [0x45, 0, 0, 20, 1, 2];
        assert_eq!(framed(Framing::None, &ip), ip);
        assert_eq!(framed(Framing::StubLzo, &ip), [0xfa, 0x45, 0, 0, 20, 1, 2]);
        assert_eq!(framed(Framing::Lzo, &ip), [0xfa, 0x45, 0, 0, 20, 1, 2]);
        assert_eq!(framed(Framing::StubSwap, &ip), [0xfb, 0, 0, 20, 1, 2, 0x45]);
        assert_eq!(framed(Framing::Lz4, &ip), [0xfb, 0, 0, 20, 1, 2, 0x45]);
        assert_eq!(framed(Framing::StubV2, &ip), ip);
        assert_eq!(framed(Framing::Lz4V2, &ip), ip);
        assert_eq!(framed(Framing::StubV2, &[0x50, 9]), [0x50, 0, 0x50, 9]);
        for f in ALL {
            assert_eq!(framed(f, &[]), Vec::<u8>::new(), "{f:?}");
        }
    }

    #[test]
    fn every_mode_reads_back_what_it_sends() {
        let payloads: [&[u8]; 4] = [&[0x45, 1, 2, 3], &[0x50], &[0x50, 0, 7], &[0x2a; 16]];
        for f in ALL {
            for p in payloads {
                assert_eq!(unframed(f, &framed(f, p)).unwrap(), p, "{f:?} {p:?}");
            }
        }
    }

    #[test]
    fn stubs_drop_compressed_packets_and_bad_bytes() {
        assert_eq!(
            unframed(Framing::StubLzo, &[0x66, 1, 2]),
            Err(UnframeError::BadHeader(0x66))
        );
        assert_eq!(
            unframed(Framing::StubSwap, &[0x69, 1, 2]),
            Err(UnframeError::BadHeader(0x69))
        );
        assert_eq!(
            unframed(Framing::StubV2, &[0x50, 1, 2]),
            Err(UnframeError::BadHeader(1))
        );
        assert_eq!(
            unframed(Framing::Lzo, &[0x45, 1]),
            Err(UnframeError::BadHeader(0x45))
        );
        assert_eq!(
            unframed(Framing::Lz4V2, &[0x50]),
            Err(UnframeError::Truncated)
        );
        // Without the escape a v2 payload is the packet itself.
        assert_eq!(unframed(Framing::Lz4V2, &[0x45, 1]).unwrap(), [0x45, 1]);
    }

    fn packet(n: usize) -> Vec<u8> {
        let mut p = vec![0x45, 0, (n >> 8) as u8, n as u8];
        p.extend((0..n - 4).map(|i| (i % 7) as u8));
        p
    }

    #[test]
    fn lz4_from_the_peer_is_decompressed_in_both_framings() {
        let p = packet(600);
        let z = lz4_flex::block::compress(&p);
        assert!(z.len() < p.len());
        // v2: 50 01 + block.
        let mut v2 = vec![0x50, 0x01];
        v2.extend_from_slice(&z);
        assert_eq!(unframed(Framing::Lz4V2, &v2).unwrap(), p);
        assert!(unframed(Framing::StubV2, &v2).is_err());
        // v1 swap: 69 + z[1..] + z[0].
        let mut v1 = vec![0x69];
        v1.extend_from_slice(&z[1..]);
        v1.push(z[0]);
        assert_eq!(unframed(Framing::Lz4, &v1).unwrap(), p);
        assert!(unframed(Framing::StubSwap, &v1).is_err());
    }

    #[test]
    fn lzo_from_the_peer_is_decompressed() {
        let p = packet(600);
        let z = lzokay::compress::compress(&p).unwrap();
        let mut w = vec![0x66];
        w.extend_from_slice(&z);
        assert_eq!(unframed(Framing::Lzo, &w).unwrap(), p);
        assert!(unframed(Framing::StubLzo, &w).is_err());
    }

    #[test]
    fn decompression_is_bounded() {
        let p = vec![0u8; 60_000];
        let z = lz4_flex::block::compress(&p);
        let mut v2 = vec![0x50, 0x01];
        v2.extend_from_slice(&z);
        let mut buf = v2.clone();
        let len = buf.len();
        assert_eq!(
            Framing::Lz4V2.unframe(&mut buf, 0, len, 1500),
            Err(UnframeError::Decompress)
        );
        assert!(buf.len() <= 1500.max(len));
        let mut garbage = vec![0x66, 0xff, 0xff, 0xff, 0x00];
        let len = garbage.len();
        assert!(Framing::Lzo.unframe(&mut garbage, 0, len, 1500).is_err());
    }
}
