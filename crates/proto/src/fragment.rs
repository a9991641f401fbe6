//! OpenVPN's data-channel fragmentation (`--fragment`, fragment.c), sans IO.
//!
//! With `fragment` on, every plaintext data payload (after compression
//! framing, before encryption) starts with a 32-bit big-endian header:
//!
//! ```text
//! bits 0..2   type: 0 whole packet, 1 fragment (not last), 2 last fragment, 3 test (refused)
//! bits 2..10  sequence id of the fragmented packet (mod 256)
//! bits 10..15 fragment index (0..32)
//! bits 15..29 last fragment only: the size of every other fragment / 4
//! ```
//!
//! Each fragment is then encrypted as its own data packet. The receiver keeps
//! at most [`N_FRAG_BUF`] packets under reassembly, in a window of sequence
//! ids, each bounded by the largest packet it accepts, and drops partial
//! packets after [`FRAG_TTL`], as 2.6 does.

use std::time::{Duration, Instant};

use thiserror::Error;

/// Length of the fragment header.
pub const HEADER_LEN: usize = 4;
/// Most fragments per packet (the fragment index has 5 bits).
pub const MAX_FRAGS: usize = 32;
/// Packets under reassembly at once.
pub const N_FRAG_BUF: usize = 25;
/// A partial packet is dropped this long after its last fragment arrived.
pub const FRAG_TTL: Duration = Duration::from_secs(10);

const TYPE_WHOLE: u32 = 0;
const TYPE_NOT_LAST: u32 = 1;
const TYPE_LAST: u32 = 2;
const SEQ_SHIFT: u32 = 2;
const ID_SHIFT: u32 = 10;
const SIZE_SHIFT: u32 = 15;
const SIZE_MASK: u32 = 0x3fff;
/// Fragment sizes are multiples of 4 (the size field counts 4-byte units).
const SIZE_ROUND: usize = 4;
const N_SEQ_ID: i32 = 256;

/// Why a packet could not be fragmented or a fragment not taken.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum FragmentError {
    #[error("fragment header missing")]
    Truncated,
    #[error("whole-packet header with sequence or fragment id set")]
    SpuriousWholeFlags,
    #[error("fragment size is not a multiple of 4")]
    BadSize,
    #[error("fragment lies beyond the largest packet accepted")]
    Overflow,
    #[error("FRAG_TEST fragments are not implemented (nor in OpenVPN)")]
    TestType,
    #[error("packet would need more than 32 fragments")]
    TooManyFragments,
    #[error("maximum fragment size too small")]
    MaxSizeTooSmall,
    #[error("a whole packet where a fragment was expected")]
    NotAFragment,
}

/// The packet of a `FRAG_WHOLE` payload (the header checked and taken off),
/// `None` for a fragment (see [`Reassembler::incoming_fragment`]). Needs no
/// reassembly state.
pub fn parse_whole(payload: &[u8]) -> Result<Option<&[u8]>, FragmentError> {
    let (h, body) = payload
        .split_first_chunk::<HEADER_LEN>()
        .ok_or(FragmentError::Truncated)?;
    let flags = u32::from_be_bytes(*h);
    match flags & 3 {
        TYPE_WHOLE if flags & ((0xff << SEQ_SHIFT) | (0x1f << ID_SHIFT)) != 0 => {
            Err(FragmentError::SpuriousWholeFlags)
        }
        TYPE_WHOLE => Ok(Some(body)),
        TYPE_NOT_LAST | TYPE_LAST => Ok(None),
        _ => Err(FragmentError::TestType),
    }
}

fn header(kind: u32, seq_id: u8, frag_id: usize, last_size: usize) -> [u8; HEADER_LEN] {
    let mut h = kind | (u32::from(seq_id) << SEQ_SHIFT) | (((frag_id as u32) & 0x1f) << ID_SHIFT);
    if kind == TYPE_LAST {
        h |= (((last_size / SIZE_ROUND) as u32) & SIZE_MASK) << SIZE_SHIFT;
    }
    h.to_be_bytes()
}

/// The header of an unfragmented packet.
pub const WHOLE_HEADER: [u8; HEADER_LEN] = [0; HEADER_LEN];

/// 2.6's `optimal_fragment_size`: spread a packet evenly over as few
/// fragments as `max_frag_size` allows, in multiples of 4.
fn optimal_fragment_size(len: usize, max_frag_size: usize) -> usize {
    let aligned = max_frag_size & !(SIZE_ROUND - 1);
    let div = len / aligned;
    let rem = len % aligned;
    if div > 0 && rem > 0 && rem < aligned * 3 / 4 {
        let spread = (max_frag_size - (max_frag_size - rem) / (div + 1) + SIZE_ROUND - 1)
            & !(SIZE_ROUND - 1);
        aligned.min(spread)
    } else {
        aligned
    }
}

/// The sending half: numbers the fragmented packets.
#[derive(Debug, Default)]
pub struct Fragmenter {
    seq_id: u8,
}

/// The datagram payloads of one packet: (header, slice of the packet).
#[derive(Debug)]
pub struct Fragments<'a> {
    /// The packet itself when it fits one datagram (`FRAG_WHOLE`).
    whole: Option<&'a [u8]>,
    /// What is left to send of a fragmented packet.
    rest: &'a [u8],
    size: usize,
    seq_id: u8,
    next: usize,
}

impl<'a> Iterator for Fragments<'a> {
    type Item = ([u8; HEADER_LEN], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(packet) = self.whole.take() {
            return Some((WHOLE_HEADER, packet));
        }
        if self.rest.is_empty() {
            return None;
        }
        let take = self.size.min(self.rest.len());
        let (part, rest) = self.rest.split_at(take);
        let kind = if rest.is_empty() {
            TYPE_LAST
        } else {
            TYPE_NOT_LAST
        };
        let h = header(kind, self.seq_id, self.next, self.size);
        self.next += 1;
        self.rest = rest;
        Some((h, part))
    }
}

impl Fragmenter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Split `packet` into datagram payloads of at most `max_frag_size`
    /// bytes (plus the header each): one `FRAG_WHOLE` item when it fits.
    pub fn fragment<'a>(
        &mut self,
        packet: &'a [u8],
        max_frag_size: usize,
    ) -> Result<Fragments<'a>, FragmentError> {
        split(packet, max_frag_size, || {
            self.seq_id = self.seq_id.wrapping_add(1);
            self.seq_id
        })
    }
}

/// [`Fragmenter::fragment`] for a sender whose sequence ids live elsewhere
/// (several threads sending to one peer share an atomic counter):
/// `next_seq_id` is called once, only when `packet` is split.
pub fn split(
    packet: &[u8],
    max_frag_size: usize,
    next_seq_id: impl FnOnce() -> u8,
) -> Result<Fragments<'_>, FragmentError> {
    if max_frag_size < SIZE_ROUND {
        return Err(FragmentError::MaxSizeTooSmall);
    }
    if packet.len() <= max_frag_size {
        return Ok(Fragments {
            whole: Some(packet),
            rest: &[],
            size: 0,
            seq_id: 0,
            next: 0,
        });
    }
    let size = optimal_fragment_size(packet.len(), max_frag_size);
    if packet.len() > size * MAX_FRAGS {
        return Err(FragmentError::TooManyFragments);
    }
    Ok(Fragments {
        whole: None,
        rest: packet,
        size,
        seq_id: next_seq_id(),
        next: 0,
    })
}

/// 2.6's `frame_calculate_fragment`: the largest payload one datagram may
/// carry (compression framing included, the fragment header not) so that
/// the datagram stays within `fragment` bytes. `head_room` is what the
/// data-channel seal puts in front of the payload (opcode/peer id, packet
/// id and tag; CBC: HMAC, IV and the encrypted packet id); `encap` the
/// outer IP and UDP headers with `fragment N mtu`, else 0. For CBC the
/// payload is rounded down to whole cipher blocks less one byte of
/// padding, and the packet id inside the encryption counts against it.
/// 0 when nothing fits (every packet is then dropped).
pub fn max_fragment_size(fragment: usize, head_room: usize, cbc: bool, encap: usize) -> usize {
    const CBC_BLOCK: usize = crate::cbc::BLOCK_LEN;
    const CBC_PACKET_ID: usize = crate::cbc::PACKET_ID_LEN;
    let header = if cbc {
        head_room.saturating_sub(CBC_PACKET_ID)
    } else {
        head_room
    };
    let target = fragment.saturating_sub(header + encap);
    if cbc {
        (target / CBC_BLOCK * CBC_BLOCK).saturating_sub(1 + HEADER_LEN + CBC_PACKET_ID)
    } else {
        target.saturating_sub(HEADER_LEN)
    }
}

impl<'a> Fragments<'a> {
    /// How many datagrams are left to come.
    pub fn remaining(&self) -> usize {
        if self.whole.is_some() {
            1
        } else if self.size == 0 {
            0
        } else {
            self.rest.len().div_ceil(self.size)
        }
    }
}

/// One packet under reassembly.
#[derive(Debug)]
struct Slot {
    defined: bool,
    max_frag_size: usize,
    map: u32,
    buf: Vec<u8>,
    len: usize,
    touched: Instant,
}

/// What a received datagram payload gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// An unfragmented packet: the payload after the header.
    Whole(&'a [u8]),
    /// A fragment was stored; the packet is not complete yet.
    Partial,
    /// The last missing fragment arrived: the reassembled packet.
    Complete(&'a [u8]),
}

/// The receiving half: reassembles up to [`N_FRAG_BUF`] packets of at most
/// `max_packet` bytes each. Memory is bounded by `N_FRAG_BUF * max_packet`.
#[derive(Debug)]
pub struct Reassembler {
    max_packet: usize,
    seq_id: u8,
    index: usize,
    slots: Vec<Slot>,
}

fn modulo_subtract(a: i32, b: i32) -> i32 {
    let half = N_SEQ_ID / 2;
    let d = a - b;
    if d > half {
        d - N_SEQ_ID
    } else if d < -half {
        d + N_SEQ_ID
    } else {
        d
    }
}

impl Reassembler {
    pub fn new(max_packet: usize, now: Instant) -> Self {
        Reassembler {
            max_packet,
            seq_id: 0,
            index: 0,
            slots: (0..N_FRAG_BUF)
                .map(|_| Slot {
                    defined: false,
                    max_frag_size: 0,
                    map: 0,
                    buf: Vec::new(),
                    len: 0,
                    touched: now,
                })
                .collect(),
        }
    }

    /// The slot for `seq_id`, moving the window forward as 2.6's
    /// `fragment_list_get_buf` does (a jump of 25 or more clears it).
    fn slot_for(&mut self, seq_id: u8) -> usize {
        let n = N_FRAG_BUF as i32;
        let mut diff = modulo_subtract(i32::from(seq_id), i32::from(self.seq_id));
        if diff.abs() >= n {
            for s in &mut self.slots {
                s.defined = false;
            }
            self.index = 0;
            self.seq_id = seq_id;
            diff = 0;
        }
        while diff > 0 {
            self.index = (self.index + 1) % N_FRAG_BUF;
            self.slots[self.index].defined = false;
            self.seq_id = self.seq_id.wrapping_add(1);
            diff -= 1;
        }
        // diff is in (-25, 0] here.
        (self.index as i32 + diff).rem_euclid(n) as usize
    }

    /// Take one decrypted datagram payload (header first) received at `now`.
    pub fn incoming<'a>(
        &'a mut self,
        payload: &'a [u8],
        now: Instant,
    ) -> Result<Incoming<'a>, FragmentError> {
        if let Some(body) = parse_whole(payload)? {
            return Ok(Incoming::Whole(body));
        }
        Ok(match self.incoming_fragment(payload, now)? {
            Some(packet) => Incoming::Complete(packet),
            None => Incoming::Partial,
        })
    }

    /// Take one fragment (a payload [`parse_whole`] said is no whole
    /// packet) received at `now`: the reassembled packet once complete.
    /// The packet borrows only the reassembler, not `payload`.
    pub fn incoming_fragment(
        &mut self,
        payload: &[u8],
        now: Instant,
    ) -> Result<Option<&[u8]>, FragmentError> {
        let (h, body) = payload
            .split_first_chunk::<HEADER_LEN>()
            .ok_or(FragmentError::Truncated)?;
        let flags = u32::from_be_bytes(*h);
        let kind = flags & 3;
        match kind {
            TYPE_NOT_LAST | TYPE_LAST => {
                let seq_id = ((flags >> SEQ_SHIFT) & 0xff) as u8;
                let n = ((flags >> ID_SHIFT) & 0x1f) as usize;
                let size = if kind == TYPE_LAST {
                    (((flags >> SIZE_SHIFT) & SIZE_MASK) as usize) * SIZE_ROUND
                } else {
                    body.len()
                };
                if size % SIZE_ROUND != 0 {
                    return Err(FragmentError::BadSize);
                }
                let max_packet = self.max_packet;
                let i = self.slot_for(seq_id);
                let slot = &mut self.slots[i];
                if !slot.defined || slot.max_frag_size != size {
                    slot.defined = true;
                    slot.max_frag_size = size;
                    slot.map = 0;
                    slot.len = 0;
                }
                let at = n * size;
                let end = at + body.len();
                if end > max_packet {
                    return Err(FragmentError::Overflow);
                }
                if slot.buf.len() < end {
                    slot.buf.resize(end, 0);
                }
                slot.buf[at..end].copy_from_slice(body);
                slot.len = slot.len.max(end);
                slot.map |= (if kind == TYPE_LAST { u32::MAX } else { 1 }) << n;
                slot.touched = now;
                if slot.map == u32::MAX {
                    slot.defined = false;
                    Ok(Some(&slot.buf[..slot.len]))
                } else {
                    Ok(None)
                }
            }
            TYPE_WHOLE => Err(FragmentError::NotAFragment),
            // TYPE_TEST, the only value left of the two bits.
            _ => Err(FragmentError::TestType),
        }
    }

    /// Drop partial packets older than [`FRAG_TTL`]; returns how many.
    pub fn reap(&mut self, now: Instant) -> usize {
        let mut dropped = 0;
        for s in &mut self.slots {
            if s.defined && now.saturating_duration_since(s.touched) >= FRAG_TTL {
                s.defined = false;
                dropped += 1;
            }
        }
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn header_layout() {
        // Last fragment, sequence 1, index 2, fragments of 500 bytes.
        assert_eq!(header(TYPE_LAST, 1, 2, 500), 0x003e_8806u32.to_be_bytes());
        // Not-last fragments carry no size.
        assert_eq!(
            header(TYPE_NOT_LAST, 255, 31, 500),
            (1u32 | 255 << 2 | 31 << 10).to_be_bytes()
        );
    }

    #[test]
    fn optimal_sizes_as_openvpn() {
        // Fits evenly or leaves a big remainder: the aligned maximum.
        assert_eq!(optimal_fragment_size(2000, 1000), 1000);
        assert_eq!(optimal_fragment_size(1900, 1000), 1000);
        assert_eq!(optimal_fragment_size(1001, 1000), 504);
        // A small remainder is spread: 1100 as 552 + 548, 1001 as 504 + 497.
        assert_eq!(optimal_fragment_size(1100, 1000), 552);
    }

    /// The sizes 2.6.14 computes (`max_frag` of its `--verb 4` frame dump).
    #[test]
    fn max_fragment_sizes_as_openvpn() {
        // AES-256-GCM, P_DATA_V2: 24 bytes of header and tag.
        assert_eq!(max_fragment_size(1300, 24, false, 0), 1272);
        // `fragment 1300 mtu` over IPv4: 28 bytes of IP and UDP too.
        assert_eq!(max_fragment_size(1300, 24, false, 28), 1244);
        // AES-256-CBC with SHA256: 4 + 32 + 16 + 4 of head room;
        // 1300 - 52 = 1248 = 78 blocks, less padding, header and packet id.
        assert_eq!(max_fragment_size(1300, 56, true, 0), 1239);
        assert_eq!(max_fragment_size(68, 120, true, 0), 0);
    }

    #[test]
    fn remaining_counts_the_datagrams() {
        let packet = [0u8; 3000];
        let mut f = Fragmenter::new();
        let mut it = f.fragment(&packet, 1000).unwrap();
        assert_eq!(it.remaining(), 3);
        it.next();
        assert_eq!(it.remaining(), 2);
        assert_eq!(f.fragment(&packet[..10], 1000).unwrap().remaining(), 1);
        let mut seqs = 0;
        let items: Vec<_> = split(&packet, 1000, || {
            seqs += 1;
            7
        })
        .unwrap()
        .collect();
        assert_eq!((items.len(), seqs), (3, 1));
        assert_eq!(items[2].0, header(TYPE_LAST, 7, 2, 1000));
        split(&packet[..10], 1000, || unreachable!()).unwrap();
    }

    #[test]
    fn small_packets_are_whole() {
        let mut f = Fragmenter::new();
        let items: Vec<_> = f.fragment(b"hello", 100).unwrap().collect();
        assert_eq!(items, vec![(WHOLE_HEADER, &b"hello"[..])]);
        let mut r = Reassembler::new(2000, t0());
        let mut d = WHOLE_HEADER.to_vec();
        d.extend_from_slice(b"hello");
        assert_eq!(r.incoming(&d, t0()), Ok(Incoming::Whole(&b"hello"[..])));
    }

    fn datagrams(f: &mut Fragmenter, packet: &[u8], max: usize) -> Vec<Vec<u8>> {
        f.fragment(packet, max)
            .unwrap()
            .map(|(h, p)| {
                let mut d = h.to_vec();
                d.extend_from_slice(p);
                d
            })
            .collect()
    }

    #[test]
    fn roundtrip_in_any_order() {
        let packet: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        let mut f = Fragmenter::new();
        let ds = datagrams(&mut f, &packet, 1000);
        assert_eq!(ds.len(), 3);
        assert!(ds.iter().all(|d| d.len() <= 1000 + HEADER_LEN));
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let mut r = Reassembler::new(4000, t0());
            for (k, &i) in order.iter().enumerate() {
                let got = r.incoming(&ds[i], t0()).unwrap();
                if k < 2 {
                    assert_eq!(got, Incoming::Partial);
                } else {
                    assert_eq!(got, Incoming::Complete(&packet[..]));
                }
            }
        }
    }

    #[test]
    fn interleaved_packets_and_sequence_window() {
        let mut f = Fragmenter::new();
        let a: Vec<u8> = vec![1; 1500];
        let b: Vec<u8> = vec![2; 1700];
        let da = datagrams(&mut f, &a, 1000);
        let db = datagrams(&mut f, &b, 1000);
        let mut r = Reassembler::new(2000, t0());
        assert_eq!(r.incoming(&da[0], t0()), Ok(Incoming::Partial));
        assert_eq!(r.incoming(&db[0], t0()), Ok(Incoming::Partial));
        assert_eq!(r.incoming(&db[1], t0()), Ok(Incoming::Complete(&b[..])));
        assert_eq!(r.incoming(&da[1], t0()), Ok(Incoming::Complete(&a[..])));
        // A jump of 25 sequence ids or more forgets every partial packet.
        let first = datagrams(&mut f, &a, 1000);
        assert_eq!(r.incoming(&first[0], t0()), Ok(Incoming::Partial));
        for _ in 0..N_FRAG_BUF {
            let _ = datagrams(&mut f, &a, 1000);
        }
        let far = datagrams(&mut f, &b, 1000);
        assert_eq!(r.incoming(&far[0], t0()), Ok(Incoming::Partial));
        assert_eq!(r.incoming(&first[1], t0()), Ok(Incoming::Partial));
    }

    #[test]
    fn ttl_drops_partial_packets() {
        let mut f = Fragmenter::new();
        let ds = datagrams(&mut f, &[9; 1500], 1000);
        let start = t0();
        let mut r = Reassembler::new(2000, start);
        assert_eq!(r.incoming(&ds[0], start), Ok(Incoming::Partial));
        assert_eq!(r.reap(start + Duration::from_secs(9)), 0);
        assert_eq!(r.reap(start + FRAG_TTL), 1);
        assert_eq!(r.incoming(&ds[1], start + FRAG_TTL), Ok(Incoming::Partial));
    }

    #[test]
    fn refusals() {
        let mut r = Reassembler::new(2000, t0());
        assert_eq!(r.incoming(&[0, 0, 0], t0()), Err(FragmentError::Truncated));
        assert_eq!(
            r.incoming(&[0, 0, 0, 4, 1], t0()),
            Err(FragmentError::SpuriousWholeFlags)
        );
        assert_eq!(
            r.incoming(&[0, 0, 0, 3], t0()),
            Err(FragmentError::TestType)
        );
        // Fragment index 31 of 1000-byte fragments lies far beyond 2000 bytes.
        let h = header(TYPE_LAST, 1, 31, 1000);
        let mut d = h.to_vec();
        d.extend_from_slice(&[0; 10]);
        assert_eq!(r.incoming(&d, t0()), Err(FragmentError::Overflow));
        // A not-last fragment whose length is not a multiple of 4.
        let mut d = header(TYPE_NOT_LAST, 1, 0, 0).to_vec();
        d.extend_from_slice(&[0; 10]);
        assert_eq!(r.incoming(&d, t0()), Err(FragmentError::BadSize));
        let mut f = Fragmenter::new();
        assert_eq!(
            f.fragment(&[0; 5000], 100).map(|_| ()),
            Err(FragmentError::TooManyFragments)
        );
        assert_eq!(
            f.fragment(&[0; 5], 3).map(|_| ()),
            Err(FragmentError::MaxSizeTooSmall)
        );
    }

    proptest::proptest! {
        #[test]
        fn reassembler_never_panics(
            datagrams in proptest::collection::vec(
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..64)
        ) {
            let mut r = Reassembler::new(512, Instant::now());
            for d in &datagrams {
                if let Ok(Incoming::Complete(p)) = r.incoming(d, Instant::now()) {
                    proptest::prop_assert!(p.len() <= 512);
                }
            }
        }

        #[test]
        fn fragment_then_reassemble(len in 1usize..6000, max in 4usize..1500) {
            let packet: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut f = Fragmenter::new();
            let Ok(items) = f.fragment(&packet, max) else {
                proptest::prop_assert!(len > (max & !3) * MAX_FRAGS);
                return Ok(());
            };
            let ds: Vec<Vec<u8>> = items.map(|(h, p)| [&h[..], p].concat()).collect();
            let mut r = Reassembler::new(6000, Instant::now());
            let mut done = None;
            for d in ds.iter().rev() {
                match r.incoming(d, Instant::now()).unwrap() {
                    Incoming::Whole(p) | Incoming::Complete(p) => done = Some(p.to_vec()),
                    Incoming::Partial => {}
                }
            }
            proptest::prop_assert_eq!(done, Some(packet));
        }
    }
}
