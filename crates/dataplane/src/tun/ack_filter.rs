//! Superseded pure TCP ACKs in one TUN write: when a write holds several
//! pure ACKs of one flow in a row, each one the next fully replaces is left
//! out, and only the last is written.
//!
//! A stock OpenVPN client sends one datagram per packet, so a download
//! through the tunnel brings its TCP ACKs one by one, and a receive batch
//! holds several of the same flow. Written one by one, each ACK is a TUN
//! write that runs the local sender's ACK processing and its next transmit
//! inline; the last ACK of a run acknowledges everything the earlier ones
//! did (TCP ACKs are cumulative), so writing only it moves the same bytes
//! for one write. This is what Linux's CAKE qdisc does with `ack-filter`;
//! the rules here are stricter than its conservative mode in the ways
//! listed below.
//!
//! An earlier ACK `a` is left out for a later `b` only when all of these
//! hold (anything the filter does not understand is written as it came):
//! - both are TCP over IPv4 without IP options and not fragmented, or over
//!   IPv6 with TCP as the first header; same addresses and ports;
//! - both carry no payload, and their flags are exactly ACK: no SYN, FIN,
//!   RST, PSH, URG, ECE, CWR or AE;
//! - their TCP options are none, a timestamp (NOP, NOP, TS), SACK blocks
//!   (NOP, NOP, SACK), or a timestamp then SACK blocks, the way Linux and
//!   most stacks send them; any other option, layout or padding, a SACK
//!   block that does not end after its start, and a D-SACK (RFC 2883: a
//!   first block below the cumulative ACK or inside the second block)
//!   make the ACK one that is always written;
//! - `a` is not marked Congestion Experienced (its ECN mark must reach the
//!   sender);
//! - `b` is the very next packet of that flow in the write (any other
//!   packet of the flow between them keeps `a`), with the same sequence
//!   number, a window no smaller than `a`'s, and timestamps (when they
//!   have them) no older than `a`'s;
//! - `b` says everything `a` said: each SACK block of `a` lies at or below
//!   `b`'s acknowledgement number or inside one of `b`'s SACK blocks;
//! - and `b` says more: an acknowledgement number beyond `a`'s, or the
//!   same one with more bytes SACKed (a duplicate ACK during loss
//!   recovery, which the next one extends). Duplicate ACKs that add
//!   nothing (without SACK, their count drives fast retransmit) and window
//!   updates are all written.
//!
//! The SACK rules are those of CAKE's filter (`cake_ack_filter` and
//! `cake_tcph_sack_compare` in Linux's `sch_cake.c`), except that a block
//! the later ACK acknowledges cumulatively counts as covered. With one
//! stock client downloading and its socket dropping datagrams, 72 % of the
//! ACKs written to the TUN carried SACK blocks (2026-12-04), each one a
//! write that ran the local sender's SACK processing.
//!
//! Nothing is ever delayed or reordered for this: the filter looks only at
//! what one write already holds, and the ACK that is written stays where
//! it came.

/// The addresses and ports of a TCP packet.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct FlowId {
    v6: bool,
    addrs: [u8; 32],
    ports: u32,
}

/// SACK blocks one ACK carries at most: 4 fit in the 40 bytes of TCP
/// options (3 next to a timestamp).
const MAX_SACK_BLOCKS: usize = 4;

/// What a pure ACK says, for comparing it with the next one of its flow.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct PureAck {
    seq: u32,
    ack: u32,
    window: u16,
    /// TSval and TSecr, when it carries the timestamp option.
    timestamps: Option<(u32, u32)>,
    /// Its SACK blocks (start, end), the first `sack_blocks` of them.
    sack: [(u32, u32); MAX_SACK_BLOCKS],
    sack_blocks: u8,
}

impl PureAck {
    fn sack(&self) -> &[(u32, u32)] {
        &self.sack[..usize::from(self.sack_blocks)]
    }

    /// Bytes its SACK blocks name (overlaps counted twice).
    fn sacked_bytes(&self) -> u64 {
        self.sack()
            .iter()
            .map(|&(start, end)| u64::from(end.wrapping_sub(start)))
            .sum()
    }

    /// Whether it says that `block` arrived: `block` lies at or below its
    /// cumulative acknowledgement, or inside one of its SACK blocks.
    fn covers(&self, (start, end): (u32, u32)) -> bool {
        not_before(self.ack, end)
            || self
                .sack()
                .iter()
                .any(|&(s, e)| not_before(start, s) && not_before(e, end))
    }
}

/// A TCP packet as the filter sees it: its flow, and what it says when it
/// is a pure ACK the filter may leave out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) struct TcpPacket {
    pub flow: FlowId,
    pub pure_ack: Option<PureAck>,
}

impl TcpPacket {
    /// A segment with data of the flow with these addresses (as
    /// [`classify`] lays them out) and ports: it keeps an ACK before it.
    pub fn data(v6: bool, addrs: [u8; 32], ports: u32) -> Self {
        TcpPacket {
            flow: FlowId { v6, addrs, ports },
            pure_ack: None,
        }
    }
}

const TCP: u8 = 6;
const TCP_ACK: u8 = 0x10;
const ECN_MASK: u8 = 0x03;
const ECN_CE: u8 = 0x03;
/// The timestamp option as Linux lays it out: NOP, NOP, kind 8, length 10.
const TIMESTAMP_OPTION: [u8; 4] = [1, 1, 8, 10];
/// The SACK option's start as Linux lays it out: NOP, NOP, kind 5 (its
/// length, 2 + 8 per block, follows).
const SACK_OPTION: [u8; 3] = [1, 1, 5];

/// The TCP options of a pure ACK the filter understands: none; a
/// timestamp (NOP, NOP, TS); SACK blocks (NOP, NOP, SACK); or a timestamp
/// then SACK blocks, the layouts Linux sends. Returns them in a
/// [`PureAck`] with `ack` (its sequence number and window still zero);
/// `None` for anything else: other options, another order or padding, a
/// SACK block that does not end after its start, or a D-SACK (RFC 2883,
/// a report of a duplicate segment), which is always written.
fn understood_options(opts: &[u8], ack: u32) -> Option<PureAck> {
    let mut parsed = PureAck {
        seq: 0,
        ack,
        window: 0,
        timestamps: None,
        sack: [(0, 0); MAX_SACK_BLOCKS],
        sack_blocks: 0,
    };
    let mut rest = opts;
    if rest.len() >= 12 && rest[..4] == TIMESTAMP_OPTION {
        parsed.timestamps = Some((be32(rest, 4), be32(rest, 8)));
        rest = &rest[12..];
    }
    if rest.is_empty() {
        return Some(parsed);
    }
    if rest.len() < 4 || rest[..3] != SACK_OPTION || usize::from(rest[3]) + 2 != rest.len() {
        return None;
    }
    let blocks = &rest[4..];
    if blocks.is_empty() || !blocks.len().is_multiple_of(8) || blocks.len() / 8 > MAX_SACK_BLOCKS {
        return None;
    }
    for (i, block) in blocks.chunks_exact(8).enumerate() {
        let (start, end) = (be32(block, 0), be32(block, 4));
        if (end.wrapping_sub(start) as i32) <= 0 {
            return None;
        }
        parsed.sack[i] = (start, end);
    }
    parsed.sack_blocks = (blocks.len() / 8) as u8;
    // RFC 2883: a first block below the cumulative ACK, or inside the
    // second block, reports a duplicate segment.
    let first = parsed.sack[0];
    let in_second = parsed.sack_blocks > 1 && {
        let (s, e) = parsed.sack[1];
        not_before(first.0, s) && not_before(e, first.1)
    };
    if !not_before(first.0, ack) || in_second {
        return None;
    }
    Some(parsed)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `pkt` as a TCP packet; `None` for anything that is not plainly one
/// (other protocols, IPv4 fragments, IPv6 extension headers, runts).
pub(super) fn classify(pkt: &[u8]) -> Option<TcpPacket> {
    let (v6, iph, plain_ip, ecn) = match pkt.first()? >> 4 {
        4 => {
            if pkt.len() < 20 || pkt[9] != TCP || be16(pkt, 6) & 0x3FFF != 0 {
                return None;
            }
            let iph = usize::from(pkt[0] & 0x0F) * 4;
            let exact = usize::from(be16(pkt, 2)) == pkt.len();
            (false, iph, iph == 20 && exact, pkt[1] & ECN_MASK)
        }
        6 => {
            if pkt.len() < 40 || pkt[6] != TCP {
                return None;
            }
            let exact = usize::from(be16(pkt, 4)) + 40 == pkt.len();
            // Traffic class straddles bytes 0 and 1; ECN is its low 2 bits.
            (true, 40, exact, (pkt[1] >> 4) & ECN_MASK)
        }
        _ => return None,
    };
    if iph < 20 || pkt.len() < iph + 20 {
        return None;
    }
    let mut addrs = [0u8; 32];
    if v6 {
        addrs.copy_from_slice(&pkt[8..40]);
    } else {
        addrs[..8].copy_from_slice(&pkt[12..20]);
    }
    let flow = FlowId {
        v6,
        addrs,
        ports: be32(pkt, iph),
    };
    let tcp = &pkt[iph..];
    let th = usize::from(tcp[12] >> 4) * 4;
    // The low nibble of byte 12 holds the reserved bits and AE (ex-NS).
    let flags_plain_ack = tcp[12] & 0x0F == 0 && tcp[13] == TCP_ACK;
    let understood = if th >= 20 && tcp.len() == th {
        understood_options(&tcp[20..th], be32(tcp, 8))
    } else {
        None
    };
    let pure_ack = match understood {
        Some(parsed) if plain_ip && flags_plain_ack && ecn != ECN_CE => Some(PureAck {
            seq: be32(tcp, 4),
            window: be16(tcp, 14),
            ..parsed
        }),
        _ => None,
    };
    Some(TcpPacket { flow, pure_ack })
}

/// `b` is not older than `a` in sequence space (RFC 1982 arithmetic).
fn not_before(b: u32, a: u32) -> bool {
    (b.wrapping_sub(a) as i32) >= 0
}

/// Whether `later`, the next packet of `earlier`'s flow, makes `earlier`
/// redundant (see the module docs for the rules).
pub(super) fn supersedes(earlier: &PureAck, later: &PureAck) -> bool {
    let timestamps_ok = match (earlier.timestamps, later.timestamps) {
        (None, None) => true,
        (Some((val_a, ecr_a)), Some((val_b, ecr_b))) => {
            not_before(val_b, val_a) && not_before(ecr_b, ecr_a)
        }
        _ => false,
    };
    // Everything `earlier` said arrived, `later` says too...
    let covered = earlier.sack().iter().all(|&block| later.covers(block));
    // ...and more: a further cumulative ACK, or (a duplicate ACK during
    // loss recovery) the same one with more bytes SACKed. Duplicate ACKs
    // that add nothing are all written: without SACK their count is what
    // drives fast retransmit.
    let progress = if later.ack == earlier.ack {
        later.sacked_bytes() > earlier.sacked_bytes()
    } else {
        not_before(later.ack, earlier.ack)
    };
    later.seq == earlier.seq
        && progress
        && covered
        && later.window >= earlier.window
        && timestamps_ok
}

/// Flows a write tracks at most; packets of further flows are all written.
const MAX_FLOWS: usize = 64;

/// The last packet of each TCP flow in the write being built, to leave out
/// the pure ACKs the next packet of their flow supersedes. No allocation
/// after [`AckFilter::new`].
pub(super) struct AckFilter {
    /// (flow, slot of its last packet, that packet when a pure ACK).
    last: Vec<(FlowId, usize, Option<PureAck>)>,
}

impl AckFilter {
    pub fn new() -> Self {
        AckFilter {
            last: Vec::with_capacity(MAX_FLOWS),
        }
    }

    /// `pkt` was put in `slot` (its own, or a super-packet's it joined);
    /// returns the slot of the earlier pure ACK it supersedes, to be left
    /// out of the write.
    pub fn committed(&mut self, pkt: TcpPacket, slot: usize) -> Option<usize> {
        let Some(entry) = self.last.iter_mut().find(|(f, _, _)| *f == pkt.flow) else {
            if self.last.len() < MAX_FLOWS {
                self.last.push((pkt.flow, slot, pkt.pure_ack));
            }
            return None;
        };
        let superseded = match (&entry.2, &pkt.pure_ack) {
            (Some(earlier), Some(later)) if supersedes(earlier, later) => Some(entry.1),
            _ => None,
        };
        *entry = (pkt.flow, slot, pkt.pure_ack);
        superseded
    }

    /// Start the next write.
    pub fn clear(&mut self) {
        self.last.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 pure ACK from 10.8.0.2:`port` to 10.8.0.1:5201 with a
    /// timestamp option.
    fn ack4(port: u16, seq: u32, ack: u32, window: u16, ts: (u32, u32)) -> Vec<u8> {
        let mut p = vec![0u8; 52];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&52u16.to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = TCP;
        p[12..16].copy_from_slice(&[10, 8, 0, 2]);
        p[16..20].copy_from_slice(&[10, 8, 0, 1]);
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&port.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = 8 << 4;
        t[13] = TCP_ACK;
        t[14..16].copy_from_slice(&window.to_be_bytes());
        t[20..24].copy_from_slice(&TIMESTAMP_OPTION);
        t[24..28].copy_from_slice(&ts.0.to_be_bytes());
        t[28..32].copy_from_slice(&ts.1.to_be_bytes());
        p
    }

    /// The same ACK over IPv6 (fd00::2 to fd00::1), no options.
    fn ack6(seq: u32, ack: u32, window: u16) -> Vec<u8> {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&20u16.to_be_bytes());
        p[6] = TCP;
        p[7] = 64;
        p[8] = 0xfd;
        p[23] = 2;
        p[24] = 0xfd;
        p[39] = 1;
        let t = &mut p[40..];
        t[0..2].copy_from_slice(&40000u16.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = TCP_ACK;
        t[14..16].copy_from_slice(&window.to_be_bytes());
        p
    }

    fn pure(p: &[u8]) -> PureAck {
        classify(p).and_then(|t| t.pure_ack).expect("a pure ACK")
    }

    /// Run `pkts` through a filter as one write; the indices left out.
    fn filtered(pkts: &[Vec<u8>]) -> Vec<usize> {
        let mut f = AckFilter::new();
        let mut out: Vec<usize> = pkts
            .iter()
            .enumerate()
            .filter_map(|(slot, p)| f.committed(classify(p)?, slot))
            .collect();
        out.sort_unstable();
        out
    }

    const TS: (u32, u32) = (1000, 500);

    #[test]
    fn a_run_of_advancing_acks_keeps_only_the_last() {
        let run: Vec<_> = (0..4)
            .map(|i| ack4(40000, 7, 1000 + i * 2896, 512, (TS.0 + i, TS.1)))
            .collect();
        assert_eq!(filtered(&run), vec![0, 1, 2]);
        let v6: Vec<_> = (0..3).map(|i| ack6(7, 1000 + i * 1448, 512)).collect();
        assert_eq!(filtered(&v6), vec![0, 1]);
        // Across sequence-number wrap-around.
        let wrap = [
            ack4(40000, 7, u32::MAX - 100, 512, TS),
            ack4(40000, 7, 1000, 512, TS),
        ];
        assert_eq!(filtered(&wrap), vec![0]);
    }

    #[test]
    fn the_rule_table() {
        let base = ack4(40000, 7, 1000, 512, TS);
        let next = ack4(40000, 7, 3896, 512, TS);
        let kept = |earlier: Vec<u8>, later: Vec<u8>, why: &str| {
            assert_eq!(filtered(&[earlier, later]), Vec::<usize>::new(), "{why}");
        };
        assert_eq!(filtered(&[base.clone(), next.clone()]), vec![0]);
        // Duplicate ACKs (fast retransmit) and window updates: all written.
        kept(base.clone(), base.clone(), "duplicate ACK");
        kept(
            base.clone(),
            ack4(40000, 7, 1000, 1024, TS),
            "window update",
        );
        // An older ACK after a newer one (reordered): both written.
        kept(next.clone(), base.clone(), "ack going back");
        kept(
            base.clone(),
            ack4(40000, 7, 3896, 511, TS),
            "window shrinking",
        );
        kept(
            base.clone(),
            ack4(40000, 8, 3896, 512, TS),
            "sequence number moved (data or FIN in between)",
        );
        kept(
            base.clone(),
            ack4(40000, 7, 3896, 512, (TS.0 - 1, TS.1)),
            "older TSval",
        );
        kept(
            base.clone(),
            ack4(40000, 7, 3896, 512, (TS.0, TS.1 - 1)),
            "older TSecr",
        );
        kept(base.clone(), ack4(40001, 7, 3896, 512, TS), "another flow");
        let mut other_addr = next.clone();
        other_addr[15] = 3;
        kept(base.clone(), other_addr, "another source address");
        // Any flag besides ACK, on either side.
        for flag in [0x01, 0x02, 0x04, 0x08, 0x20, 0x40, 0x80] {
            let mut odd = base.clone();
            odd[33] |= flag;
            kept(odd.clone(), next.clone(), "flag on the earlier");
            let mut odd_later = next.clone();
            odd_later[33] |= flag;
            kept(base.clone(), odd_later, "flag on the later");
        }
        let mut ae = base.clone();
        ae[32] |= 0x01;
        kept(ae, next.clone(), "AE bit");
        // Congestion Experienced on the earlier ACK: the mark must arrive.
        let mut ce = base.clone();
        ce[1] |= 0x03;
        kept(ce, next.clone(), "CE mark");
        // A payload byte: not a pure ACK.
        let mut data = base.clone();
        data.push(0);
        data[2..4].copy_from_slice(&53u16.to_be_bytes());
        kept(data, next.clone(), "payload");
        // Any option but the timestamp and SACK: written.
        let mut mss = base.clone();
        mss[40..44].copy_from_slice(&[2, 4, 5, 180]);
        kept(mss, next.clone(), "MSS option");
        // IPv4 options or fragments: not understood, written.
        let mut frag = base.clone();
        frag[6] = 0x20;
        kept(frag, next.clone(), "fragment");
        // Timestamps on one side only.
        let mut bare = next.clone();
        bare.truncate(40);
        bare[2..4].copy_from_slice(&40u16.to_be_bytes());
        bare[32] = 5 << 4;
        assert!(pure(&bare).timestamps.is_none());
        kept(base.clone(), bare, "timestamps on the earlier only");
    }

    #[test]
    fn any_other_packet_of_the_flow_in_between_keeps_the_earlier_ack() {
        let a = ack4(40000, 7, 1000, 512, TS);
        let b = ack4(40000, 7, 3896, 512, TS);
        let mut push = ack4(40000, 7, 2000, 512, TS);
        push[33] |= 0x08;
        assert_eq!(filtered(&[a.clone(), push, b.clone()]), Vec::<usize>::new());
        // Another flow's packets in between do not matter.
        let other = ack4(40001, 9, 50, 512, TS);
        assert_eq!(filtered(&[a, other, b]), vec![0]);
    }

    #[test]
    fn a_dup_ack_run_is_written_whole() {
        // Loss: the receiver repeats ack 1000 (without SACK here).
        let dups: Vec<_> = (0..4).map(|_| ack4(40000, 7, 1000, 512, TS)).collect();
        assert_eq!(filtered(&dups), Vec::<usize>::new());
        // Then recovery moves it on: only the last duplicate goes.
        let mut run = dups.clone();
        run.push(ack4(40000, 7, 9000, 512, TS));
        assert_eq!(filtered(&run), vec![3]);
    }

    /// [`ack4`] with SACK blocks after the timestamp, as Linux sends them.
    fn sack4(ack: u32, ts: (u32, u32), blocks: &[(u32, u32)]) -> Vec<u8> {
        let mut p = ack4(40000, 7, ack, 512, ts);
        if blocks.is_empty() {
            return p;
        }
        p.extend_from_slice(&[1, 1, 5, 2 + 8 * blocks.len() as u8]);
        for (start, end) in blocks {
            p.extend_from_slice(&start.to_be_bytes());
            p.extend_from_slice(&end.to_be_bytes());
        }
        let len = p.len();
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[32] = (((len - 20) / 4) << 4) as u8;
        p
    }

    /// Loss recovery: the receiver repeats its cumulative ACK with a SACK
    /// block that grows with each segment after the hole; each one says
    /// all the one before said, then the hole fills and the ACK moves on.
    #[test]
    fn a_run_of_growing_sacks_keeps_only_the_last() {
        let mut run: Vec<_> = (1..=4)
            .map(|i| sack4(1000, (TS.0 + i, TS.1), &[(2448, 2448 + i * 1448)]))
            .collect();
        assert_eq!(filtered(&run), vec![0, 1, 2]);
        run.push(sack4(9000, (TS.0 + 9, TS.1), &[]));
        assert_eq!(filtered(&run), vec![0, 1, 2, 3]);
        // A second hole: the newest block comes first, the older one after.
        let two = [
            sack4(1000, TS, &[(2448, 3896)]),
            sack4(1000, TS, &[(5344, 6792), (2448, 3896)]),
        ];
        assert_eq!(filtered(&two), vec![0]);
        // SACK blocks without timestamps (NOP, NOP, SACK).
        let mut bare = Vec::new();
        for end in [3896u32, 5344] {
            let mut p = sack4(1000, TS, &[(2448, end)]);
            p.drain(40..52);
            let len = p.len();
            p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            p[32] = (((len - 20) / 4) << 4) as u8;
            assert_eq!(pure(&p).timestamps, None);
            assert_eq!(pure(&p).sack(), &[(2448, end)]);
            bare.push(p);
        }
        assert_eq!(filtered(&bare), vec![0]);
    }

    #[test]
    fn the_sack_rule_table() {
        let kept = |earlier: Vec<u8>, later: Vec<u8>, why: &str| {
            assert_eq!(filtered(&[earlier, later]), Vec::<usize>::new(), "{why}");
        };
        let left_out = |earlier: Vec<u8>, later: Vec<u8>, why: &str| {
            assert_eq!(filtered(&[earlier, later]), vec![0], "{why}");
        };
        let a = sack4(1000, TS, &[(2448, 3896)]);
        kept(a.clone(), a.clone(), "the same SACK again adds nothing");
        kept(
            a.clone(),
            sack4(1000, TS, &[(5344, 6792)]),
            "another block that does not cover the earlier one",
        );
        kept(
            a.clone(),
            sack4(1000, TS, &[(2448, 3000), (3100, 3896), (5344, 6792)]),
            "the earlier block only partly covered",
        );
        kept(
            sack4(1000, TS, &[(5344, 6792), (2448, 3896)]),
            sack4(1000, TS, &[(8240, 9688), (5344, 6792)]),
            "a block the later one no longer reports",
        );
        kept(
            a.clone(),
            sack4(3000, TS, &[]),
            "a cumulative ACK short of the earlier block's end",
        );
        left_out(
            a.clone(),
            sack4(3896, TS, &[]),
            "a cumulative ACK past the earlier block",
        );
        left_out(
            sack4(1000, TS, &[]),
            a.clone(),
            "a plain duplicate ACK, then one with a SACK block",
        );
        kept(
            a.clone(),
            sack4(2000, TS, &[(1500, 1800), (2448, 5344)]),
            "a D-SACK later (below its ACK): written, and keeps the earlier",
        );
        kept(
            sack4(2000, TS, &[(1500, 1800), (2448, 3896)]),
            sack4(2000, TS, &[(2448, 5344)]),
            "a D-SACK earlier (below its ACK)",
        );
        kept(
            sack4(1000, TS, &[(3000, 3500), (2448, 3896)]),
            sack4(1000, TS, &[(2448, 5344)]),
            "a D-SACK earlier (inside its second block)",
        );
        kept(
            a.clone(),
            sack4(1000, (TS.0 - 1, TS.1), &[(2448, 5344)]),
            "older TSval",
        );
        let mut smaller_window = sack4(1000, TS, &[(2448, 5344)]);
        smaller_window[34..36].copy_from_slice(&511u16.to_be_bytes());
        kept(a.clone(), smaller_window, "window shrinking");
        // Blocks the filter does not understand: the ACK is always written.
        let later = sack4(1000, TS, &[(2448, 9688)]);
        let mut backwards = sack4(1000, TS, &[(3896, 2448)]);
        kept(
            backwards.clone(),
            later.clone(),
            "a block ending before its start",
        );
        backwards[56..64].copy_from_slice(&[0, 0, 9, 144, 0, 0, 9, 144]);
        kept(backwards, later.clone(), "an empty block");
        let mut long = sack4(1000, TS, &[(2448, 3896)]);
        long[55] = 18;
        kept(
            long,
            later.clone(),
            "a length that does not match the header",
        );
        let mut sack_first = sack4(1000, TS, &[(2448, 3896)]);
        let options: Vec<u8> = sack_first[52..64]
            .iter()
            .chain(&sack_first[40..52])
            .copied()
            .collect();
        sack_first[40..64].copy_from_slice(&options);
        kept(sack_first, later.clone(), "SACK before the timestamp");
        let mut padded = sack4(1000, TS, &[(2448, 3896)]);
        padded[52] = 0;
        kept(padded, later, "an end-of-options byte in the layout");
    }

    #[test]
    fn more_flows_than_tracked_are_all_written() {
        let mut pkts = Vec::new();
        for port in 0..MAX_FLOWS as u16 + 10 {
            pkts.push(ack4(port, 7, 1000, 512, TS));
        }
        for port in 0..MAX_FLOWS as u16 + 10 {
            pkts.push(ack4(port, 7, 2000, 512, TS));
        }
        let out = filtered(&pkts);
        assert_eq!(out, (0..MAX_FLOWS).collect::<Vec<_>>());
    }

    #[test]
    fn pure_acks_are_recognised() {
        let p = pure(&ack4(1, 2, 3, 4, (5, 6)));
        assert_eq!(
            p,
            PureAck {
                seq: 2,
                ack: 3,
                window: 4,
                timestamps: Some((5, 6)),
                sack: [(0, 0); MAX_SACK_BLOCKS],
                sack_blocks: 0,
            }
        );
        assert_eq!(pure(&ack6(2, 3, 4)).timestamps, None);
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120), v in 0u8..2) {
            let mut d = data;
            if let Some(b) = d.first_mut() { *b = if v == 0 { 0x45 } else { 0x60 }; }
            if d.len() > 9 { d[9] = TCP; }
            if d.len() > 6 && v == 1 { d[6] = TCP; }
            let mut f = AckFilter::new();
            if let Some(t) = classify(&d) {
                let _ = f.committed(t, 0);
                let _ = f.committed(t, 1);
            }
        }
    }
}
