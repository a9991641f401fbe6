//! Userspace GRO for the TUN write path: consecutive TCP segments (and, with
//! USO, equal-size UDP datagrams) of one flow in a batch become one
//! super-packet, written with one `virtio_net_hdr` and one system call.
//!
//! Unlike a NIC's GRO this does not verify the inner TCP/UDP checksums:
//! every packet here was just authenticated by the data channel's AEAD, so
//! it is exactly what the peer sent (kernel WireGuard marks decrypted
//! packets `CHECKSUM_UNNECESSARY` for the same reason). Coalesced
//! super-packets go up as `CHECKSUM_PARTIAL` with the pseudo-header sum in
//! place; packets written alone keep their own checksum, which the kernel
//! checks as usual.
//!
//! No allocation: the coalescer's tables are sized once, and payloads are
//! appended inside the first packet's buffer, which has room for 64 KiB.

use tun_rs::{
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4,
    VIRTIO_NET_HDR_LEN, VirtioNetHdr,
};

const F_NEEDS_CSUM: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// Largest IP packet (IPv4 total length and IPv6 payload length are 16 bits).
const IP_MAX: usize = 65_535;
/// Segments per super-packet; the kernel's UDP GSO takes at most 64.
const MAX_SEGMENTS: u16 = 64;
/// Flows tracked per batch; a batch with more starts writing the rest alone.
const MAX_FLOWS: usize = 64;

/// What identifies a flow's segments that may merge: addresses, ports, and
/// for TCP the acknowledgement number (segments with a new ack stay apart,
/// as in Linux GRO).
#[derive(Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    proto: u8,
    v6: bool,
    addrs: [u8; 32],
    ports: u32,
    ack: u32,
}

/// One super-packet being built in `bufs[buf]`.
#[derive(Clone, Copy)]
struct Item {
    key: FlowKey,
    buf: usize,
    /// IP header length, and IP + transport header length.
    iph: usize,
    headers: usize,
    /// Payload bytes of the first segment; later ones may not be longer.
    gso_size: usize,
    segments: u16,
    next_seq: u32,
    /// A shorter segment (or PSH) ended it.
    closed: bool,
}

/// A parsed candidate packet.
struct Seg {
    key: FlowKey,
    iph: usize,
    headers: usize,
    payload: usize,
    seq: u32,
    psh: bool,
}

/// Reused across batches by one TUN queue.
pub struct Coalescer {
    items: Vec<Item>,
    /// Buffers to write, in the order their first packet arrived.
    writes: Vec<usize>,
    udp: bool,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Parse `pkt` as a TCP segment or UDP datagram that may merge; `None` for
/// anything else (it is written alone).
fn parse(pkt: &[u8], udp_ok: bool) -> Option<Seg> {
    let (v6, iph, proto) = match pkt.first()? >> 4 {
        4 => {
            // No IP options, not a fragment, total length exact.
            if pkt.len() < 20
                || pkt[0] != 0x45
                || usize::from(be16(pkt, 2)) != pkt.len()
                || be16(pkt, 6) & 0x3FFF != 0
            {
                return None;
            }
            (false, 20, pkt[9])
        }
        6 => {
            // No extension headers, payload length exact.
            if pkt.len() < 40 || usize::from(be16(pkt, 4)) + 40 != pkt.len() {
                return None;
            }
            (true, 40, pkt[6])
        }
        _ => return None,
    };
    let mut addrs = [0u8; 32];
    if v6 {
        addrs.copy_from_slice(&pkt[8..40]);
    } else {
        addrs[..8].copy_from_slice(&pkt[12..20]);
    }
    // (transport header length, ack, seq, psh) per protocol.
    let (th, ack, seq, psh) = match proto {
        TCP => {
            if pkt.len() < iph + 20 {
                return None;
            }
            let th = usize::from(pkt[iph + 12] >> 4) * 4;
            let flags = pkt[iph + 13];
            // Only plain data: ACK (and PSH). SYN/FIN/RST/URG/ECE/CWR go alone.
            if th < 20 || flags & !TCP_PSH != TCP_ACK {
                return None;
            }
            (
                th,
                be32(pkt, iph + 8),
                be32(pkt, iph + 4),
                flags & TCP_PSH != 0,
            )
        }
        UDP if udp_ok => {
            if pkt.len() < iph + 8 || usize::from(be16(pkt, iph + 4)) != pkt.len() - iph {
                return None;
            }
            (8, 0, 0, false)
        }
        _ => return None,
    };
    if pkt.len() <= iph + th {
        return None;
    }
    Some(Seg {
        key: FlowKey {
            proto,
            v6,
            addrs,
            ports: be32(pkt, iph),
            ack,
        },
        iph,
        headers: iph + th,
        payload: pkt.len() - iph - th,
        seq,
        psh,
    })
}

/// Whether the IP and TCP headers of `a` (the super-packet's first
/// segment) and `b` agree on everything the kernel will copy into each
/// segment when it splits them again.
fn headers_match(a: &[u8], b: &[u8], it: &Item) -> bool {
    let ip_same = if it.key.v6 {
        // Version, traffic class, flow label; hop limit.
        a[..4] == b[..4] && a[7] == b[7]
    } else {
        // TOS, DF, TTL.
        a[1] == b[1] && (a[6] & 0x40) == (b[6] & 0x40) && a[8] == b[8]
    };
    // TCP options (timestamps) identical, as Linux GRO requires.
    ip_same && (it.key.proto != TCP || a[it.iph + 20..it.headers] == b[it.iph + 20..it.headers])
}

impl Coalescer {
    /// `udp`: the device accepts UDP super-packets (USO).
    pub fn new(udp: bool) -> Self {
        Coalescer {
            items: Vec::with_capacity(MAX_FLOWS),
            writes: Vec::with_capacity(256),
            udp,
        }
    }

    /// Merge what can be merged in `bufs` (each packet at `bufs[i][off..]`,
    /// `off >= VIRTIO_NET_HDR_LEN`), write each buffer's virtio header, and
    /// return the buffers to write, in arrival order. Buffers whose packet
    /// was merged into another are left out.
    pub fn plan(&mut self, bufs: &mut [Vec<u8>], off: usize) -> &[usize] {
        self.items.clear();
        self.writes.clear();
        for i in 0..bufs.len() {
            if bufs[i].len() <= off {
                continue;
            }
            let merged = match parse(&bufs[i][off..], self.udp) {
                Some(seg) => self.try_merge(bufs, off, i, &seg),
                None => false,
            };
            if !merged {
                // A plain header; a super-packet's is written below.
                VirtioNetHdr::default()
                    .encode(&mut bufs[i][off - VIRTIO_NET_HDR_LEN..off])
                    .ok();
                self.writes.push(i);
            }
        }
        for it in &self.items {
            if it.segments > 1 {
                finish_super_packet(&mut bufs[it.buf], off, it);
            }
        }
        &self.writes
    }

    /// Append segment `bufs[i]` to its flow's open super-packet, or open one
    /// for it. Returns true when it was appended (nothing left to write).
    fn try_merge(&mut self, bufs: &mut [Vec<u8>], off: usize, i: usize, seg: &Seg) -> bool {
        let open = self.items.iter().rposition(|it| it.key == seg.key);
        if let Some(n) = open {
            let it = self.items[n];
            let fits = !it.closed
                && it.headers == seg.headers
                && seg.payload <= it.gso_size
                && (seg.key.proto != TCP || seg.seq == it.next_seq)
                && it.segments < MAX_SEGMENTS
                && bufs[it.buf].len() - off + seg.payload <= IP_MAX
                && bufs[it.buf].len() + seg.payload + off <= bufs[it.buf].capacity()
                && headers_match(&bufs[it.buf][off..], &bufs[i][off..], &it);
            if fits {
                let (head, tail) = if it.buf < i {
                    let (a, b) = bufs.split_at_mut(i);
                    (&mut a[it.buf], &b[0])
                } else {
                    // Items are opened by earlier packets only.
                    return false;
                };
                let from = off + seg.headers;
                head.extend_from_slice(&tail[from..from + seg.payload]);
                let it = &mut self.items[n];
                it.segments += 1;
                it.next_seq = it.next_seq.wrapping_add(seg.payload as u32);
                if seg.psh {
                    head[off + it.iph + 13] |= TCP_PSH;
                }
                it.closed = seg.payload < it.gso_size || seg.psh;
                return true;
            }
        }
        if self.items.len() < MAX_FLOWS {
            self.items.push(Item {
                key: seg.key,
                buf: i,
                iph: seg.iph,
                headers: seg.headers,
                gso_size: seg.payload,
                segments: 1,
                next_seq: seg.seq.wrapping_add(seg.payload as u32),
                closed: seg.psh,
            });
        }
        false
    }
}

/// Fold a one's-complement sum to 16 bits.
fn fold(mut sum: u32) -> u16 {
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

/// Fix lengths and checksums of a super-packet and write its virtio header.
fn finish_super_packet(buf: &mut [u8], off: usize, it: &Item) {
    let pkt_len = buf.len() - off;
    let l4_len = pkt_len - it.iph;
    let (pkt_head, pkt) = buf.split_at_mut(off);
    let mut pseudo: u32 = u32::from(it.key.proto) + l4_len as u32;
    let addrs = if it.key.v6 { 32 } else { 8 };
    for w in it.key.addrs[..addrs].chunks_exact(2) {
        pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    let gso_type = if it.key.v6 {
        pkt[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        VIRTIO_NET_HDR_GSO_TCPV6
    } else {
        pkt[2..4].copy_from_slice(&(pkt_len as u16).to_be_bytes());
        pkt[10..12].fill(0);
        let c = !tun_rs::checksum(&pkt[..20], 0);
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
        VIRTIO_NET_HDR_GSO_TCPV4
    };
    let (gso_type, csum_offset) = if it.key.proto == UDP {
        pkt[it.iph + 4..it.iph + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        (VIRTIO_NET_HDR_GSO_UDP_L4, 6u16)
    } else {
        (gso_type, 16u16)
    };
    let at = it.iph + usize::from(csum_offset);
    // Not inverted: the kernel adds the header and payload and inverts.
    pkt[at..at + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
    VirtioNetHdr {
        flags: F_NEEDS_CSUM,
        gso_type,
        hdr_len: it.headers as u16,
        gso_size: it.gso_size as u16,
        csum_start: it.iph as u16,
        csum_offset,
    }
    .encode(&mut pkt_head[off - VIRTIO_NET_HDR_LEN..])
    .ok();
}

#[cfg(test)]
mod tests {
    use super::*;

    const OFF: usize = 16;

    fn csum(data: &[u8], init: u32) -> u16 {
        let mut s = init;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                [c[0], c[1]]
            } else {
                [c[0], 0]
            };
            s += u32::from(u16::from_be_bytes(w));
        }
        !fold(s)
    }

    /// An IPv4 TCP segment with valid checksums (timestamp option included).
    fn tcp4(src_port: u16, seq: u32, ack: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
        let th = 32;
        let total = 20 + th + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[6] = 0x40;
        p[8] = 64;
        p[9] = TCP;
        p[12..16].copy_from_slice(&[10, 8, 0, 2]);
        p[16..20].copy_from_slice(&[10, 8, 0, 1]);
        let c = csum(&p[..20], 0);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let t = &mut p[20..];
        t[0..2].copy_from_slice(&src_port.to_be_bytes());
        t[2..4].copy_from_slice(&5201u16.to_be_bytes());
        t[4..8].copy_from_slice(&seq.to_be_bytes());
        t[8..12].copy_from_slice(&ack.to_be_bytes());
        t[12] = ((th / 4) as u8) << 4;
        t[13] = flags;
        t[14..16].copy_from_slice(&512u16.to_be_bytes());
        t[20..32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9]);
        p[20 + th..].copy_from_slice(payload);
        set_l4_csum(&mut p, 20, 16);
        p
    }

    fn set_l4_csum(p: &mut [u8], iph: usize, at: usize) {
        let l4 = (p.len() - iph) as u32;
        let mut pseudo = u32::from(p[9]) + l4;
        for w in p[12..20].chunks(2) {
            pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        p[iph + at..iph + at + 2].fill(0);
        let c = csum(&p[iph..], pseudo);
        p[iph + at..iph + at + 2].copy_from_slice(&c.to_be_bytes());
    }

    fn udp4(src_port: u16, payload: &[u8]) -> Vec<u8> {
        let total = 28 + payload.len();
        let mut p = vec![0u8; total];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = UDP;
        p[12..16].copy_from_slice(&[10, 8, 0, 2]);
        p[16..20].copy_from_slice(&[10, 8, 0, 1]);
        p[20..22].copy_from_slice(&src_port.to_be_bytes());
        p[22..24].copy_from_slice(&9u16.to_be_bytes());
        p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        p[28..].copy_from_slice(payload);
        set_l4_csum(&mut p, 20, 6);
        p
    }

    fn batch(pkts: &[Vec<u8>]) -> Vec<Vec<u8>> {
        pkts.iter()
            .map(|p| {
                let mut b = Vec::with_capacity(2 * OFF + IP_MAX);
                b.resize(OFF, 0);
                b.extend_from_slice(p);
                b
            })
            .collect()
    }

    fn hdr(b: &[u8]) -> VirtioNetHdr {
        VirtioNetHdr::decode(&b[OFF - VIRTIO_NET_HDR_LEN..]).unwrap()
    }

    /// What the kernel does with a super-packet: split it at gso_size and
    /// complete each checksum. Returns the segments' payloads.
    fn kernel_split(b: &[u8]) -> Vec<Vec<u8>> {
        let h = hdr(b);
        let p = &b[OFF..];
        let hl = usize::from(h.hdr_len);
        p[hl..]
            .chunks(usize::from(h.gso_size))
            .map(|c| c.to_vec())
            .collect()
    }

    #[test]
    fn consecutive_segments_of_one_flow_become_one_super_packet() {
        let seg = |i: u32, flags| tcp4(40000, 1000 + i * 100, 77, flags, &[i as u8; 100]);
        let mut bufs = batch(&[
            seg(0, TCP_ACK),
            seg(1, TCP_ACK),
            seg(2, TCP_ACK | TCP_PSH),
            seg(3, TCP_ACK),
        ]);
        let mut c = Coalescer::new(true);
        let w = c.plan(&mut bufs, OFF).to_vec();
        // The PSH segment closes the first super-packet.
        assert_eq!(w, vec![0, 3]);
        let h = hdr(&bufs[0]);
        assert_eq!(h.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!((h.flags, h.hdr_len, h.gso_size), (F_NEEDS_CSUM, 52, 100));
        assert_eq!((h.csum_start, h.csum_offset), (20, 16));
        let p = &bufs[0][OFF..];
        assert_eq!(p.len(), 52 + 300);
        assert_eq!(usize::from(be16(p, 2)), p.len());
        assert_eq!(csum(&p[..20], 0), 0, "IPv4 header checksum");
        assert_ne!(p[33] & TCP_PSH, 0);
        let segs = kernel_split(&bufs[0]);
        assert_eq!(segs, vec![vec![0u8; 100], vec![1u8; 100], vec![2u8; 100]]);
        // Pseudo-header sum for the new length, not inverted.
        let mut pseudo = u32::from(TCP) + (p.len() - 20) as u32;
        for w in p[12..20].chunks(2) {
            pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        assert_eq!(be16(p, 36), fold(pseudo));
        // Written alone: plain header, packet untouched.
        assert_eq!(hdr(&bufs[3]).gso_type, 0);
        assert_eq!(&bufs[3][OFF..], &seg(3, TCP_ACK)[..]);
    }

    #[test]
    fn gaps_new_acks_other_flows_and_short_segments_stay_apart() {
        let mut bufs = batch(&[
            tcp4(40000, 0, 1, TCP_ACK, &[1; 100]),
            tcp4(40001, 0, 1, TCP_ACK, &[2; 100]), // other flow
            tcp4(40000, 100, 1, TCP_ACK, &[3; 60]), // short: closes
            tcp4(40000, 160, 1, TCP_ACK, &[4; 100]), // after a short one
            tcp4(40001, 100, 2, TCP_ACK, &[5; 100]), // new ack
            tcp4(40001, 300, 2, TCP_ACK, &[6; 100]), // gap
            tcp4(40000, 260, 1, TCP_ACK | 0x01, &[7; 100]), // FIN
            tcp4(40000, 0, 1, TCP_ACK, &[]),       // pure ACK
        ]);
        let snapshot = bufs.clone();
        let mut c = Coalescer::new(true);
        let w = c.plan(&mut bufs, OFF).to_vec();
        assert_eq!(w, vec![0, 1, 3, 4, 5, 6, 7]);
        assert_eq!(kernel_split(&bufs[0]), vec![vec![1u8; 100], vec![3u8; 60]]);
        for i in [1, 3, 4, 5, 6, 7] {
            assert_eq!(bufs[i][OFF..], snapshot[i][OFF..], "packet {i} untouched");
            assert_eq!(hdr(&bufs[i]).gso_type, 0);
        }
    }

    #[test]
    fn different_ttl_or_options_do_not_merge() {
        let a = tcp4(40000, 0, 1, TCP_ACK, &[1; 100]);
        let mut b = tcp4(40000, 100, 1, TCP_ACK, &[2; 100]);
        b[8] = 63;
        let mut c2 = tcp4(40000, 100, 1, TCP_ACK, &[2; 100]);
        c2[20 + 31] = 10; // timestamp echo differs
        for other in [b, c2] {
            let mut bufs = batch(&[a.clone(), other]);
            assert_eq!(Coalescer::new(true).plan(&mut bufs, OFF), &[0, 1]);
        }
    }

    #[test]
    fn equal_udp_datagrams_merge_only_with_uso() {
        let pkts = [
            udp4(5000, &[1; 200]),
            udp4(5000, &[2; 200]),
            udp4(5000, &[3; 50]),
        ];
        let mut bufs = batch(&pkts);
        assert_eq!(Coalescer::new(false).plan(&mut bufs, OFF), &[0, 1, 2]);
        let mut bufs = batch(&pkts);
        assert_eq!(Coalescer::new(true).plan(&mut bufs, OFF), &[0]);
        let h = hdr(&bufs[0]);
        assert_eq!(h.gso_type, VIRTIO_NET_HDR_GSO_UDP_L4);
        assert_eq!((h.hdr_len, h.gso_size, h.csum_offset), (28, 200, 6));
        let p = &bufs[0][OFF..];
        assert_eq!(usize::from(be16(p, 24)), p.len() - 20);
        assert_eq!(kernel_split(&bufs[0]).len(), 3);
    }

    #[test]
    fn super_packets_stop_at_64_kib() {
        let pkts: Vec<Vec<u8>> = (0..60)
            .map(|i| tcp4(40000, i * 1400, 1, TCP_ACK, &[i as u8; 1400]))
            .collect();
        let mut bufs = batch(&pkts);
        let w = Coalescer::new(true).plan(&mut bufs, OFF).to_vec();
        assert_eq!(w.len(), 2);
        for &i in &w {
            assert!(bufs[i].len() - OFF <= IP_MAX);
        }
        let total: usize = w.iter().map(|&i| kernel_split(&bufs[i]).len()).sum();
        assert_eq!(total, 60);
    }

    #[test]
    fn garbage_is_written_alone_and_never_panics() {
        let mut rng = 0x1234_5678u32;
        for round in 0..500 {
            let pkts: Vec<Vec<u8>> = (0..8)
                .map(|k| {
                    let mut p = tcp4(40000, k * 10, 1, TCP_ACK, &[0; 10]);
                    let cut = (rng % 70) as usize;
                    p.truncate(cut.max(1));
                    for b in p.iter_mut().skip(round % 3) {
                        rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        if rng.is_multiple_of(7) {
                            *b = (rng >> 16) as u8;
                        }
                    }
                    p
                })
                .collect();
            let mut bufs = batch(&pkts);
            let _ = Coalescer::new(true).plan(&mut bufs, OFF);
        }
    }
}
