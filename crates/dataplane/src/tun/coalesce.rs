//! Userspace GRO for the TUN write path: consecutive TCP segments (and, with
//! USO, equal-size UDP datagrams) of one flow become one super-packet,
//! written with one `virtio_net_hdr` and one system call.
//!
//! Unlike a NIC's GRO this does not verify the inner TCP/UDP checksums:
//! every packet here was just authenticated by the data channel's AEAD, so
//! it is exactly what the peer sent (kernel WireGuard marks decrypted
//! packets `CHECKSUM_UNNECESSARY` for the same reason). Coalesced
//! super-packets go up as `CHECKSUM_PARTIAL` with the pseudo-header sum in
//! place; packets written alone keep their own checksum, which the kernel
//! checks as usual.
//!
//! Packets are opened straight into the coalescer's slots (one arena, zeroed
//! once, never resized). The next packet is opened where it most likely
//! belongs: right behind the super-packet the last one joined, its headers
//! overlapping that super-packet's last bytes, so its payload lands at its
//! final offset and joining costs no copy. The overlapped bytes are saved
//! first and put back once the new headers have been read. A packet that
//! turns out to belong elsewhere (another flow, a gap, a new ACK number, a
//! failed authentication) is copied to its place, or dropped, as before.
//!
//! No allocation after [`Coalescer::new`].

use tun_rs::{
    VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4,
    VIRTIO_NET_HDR_LEN, VirtioNetHdr,
};

use super::TunOffloads;
use super::ack_filter::{self, AckFilter, TcpPacket};

const F_NEEDS_CSUM: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;
/// Largest IP packet (IPv4 total length and IPv6 payload length are 16 bits).
const IP_MAX: usize = 65_535;
/// Bytes a slot holds behind its offset: the largest IP packet, or the
/// largest datagram (ciphertext is never longer than the IP packet by more
/// than this slack, and a datagram is at most 65 535 bytes anyway).
pub const SLOT_ROOM: usize = IP_MAX + 256;
/// Segments per super-packet; the kernel's UDP GSO takes at most 64.
const MAX_SEGMENTS: u16 = 64;
/// Flows tracked per batch; a batch with more starts writing the rest alone.
const MAX_FLOWS: usize = 64;
/// Longest IP + transport header of a packet that may merge (IPv6 40 +
/// TCP 60): what opening behind a super-packet overlaps at most.
const MAX_HEADERS: usize = 100;

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

/// One super-packet being built in slot `buf`.
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

/// Where [`Coalescer::spot`] asks for the next packet to be opened: byte
/// `at` of slot `slot`. `behind`: the item whose super-packet ends
/// `saved` bytes after `at` (those bytes are in `Coalescer::saved`).
pub struct Spot {
    slot: usize,
    at: usize,
    behind: Option<usize>,
    saved: usize,
}

/// The packets of one TUN write in the making, reused across writes by
/// one worker: up to `slots` packets or super-packets, each at
/// `off` bytes into its slot of `arena` (room for the virtio header in
/// front), `lens[i]` bytes long.
pub struct Coalescer {
    arena: Vec<u8>,
    stride: usize,
    off: usize,
    lens: Vec<usize>,
    /// Slots holding a packet: `0..used`, in arrival order.
    used: usize,
    items: Vec<Item>,
    /// The item the last merging packet opened or joined.
    last: Option<usize>,
    /// The device takes virtio headers and TCP super-packets (TSO), and
    /// UDP ones (USO).
    vnet: bool,
    udp: bool,
    saved: [u8; MAX_HEADERS],
    /// Pure ACKs superseded by the next packet of their flow in this write
    /// (see `tun::ack_filter`), or `None` when the filter is off.
    acks: Option<AckFilter>,
    /// Slots left out of the write: superseded pure ACKs.
    left_out: Vec<bool>,
    /// Pure ACKs left out since [`Self::take_superseded_acks`].
    superseded: u64,
}

impl Item {
    fn first(seg: &Seg, slot: usize) -> Self {
        Item {
            key: seg.key,
            buf: slot,
            iph: seg.iph,
            headers: seg.headers,
            gso_size: seg.payload,
            segments: 1,
            next_seq: seg.seq.wrapping_add(seg.payload as u32),
            closed: seg.psh,
        }
    }
}

impl Coalescer {
    /// `slots` packets per TUN write, each at `off >= VIRTIO_NET_HDR_LEN`
    /// bytes into its slot. Without `offloads.tcp` nothing merges and
    /// frames carry no virtio header.
    pub fn new(offloads: TunOffloads, slots: usize, off: usize) -> Self {
        let off = off.max(VIRTIO_NET_HDR_LEN);
        let slots = slots.max(1);
        let stride = off + SLOT_ROOM;
        Coalescer {
            // Zeroed once here (fresh pages from the allocator), never per packet.
            arena: vec![0; slots * stride],
            stride,
            off,
            lens: vec![0; slots],
            used: 0,
            items: Vec::with_capacity(MAX_FLOWS),
            last: None,
            vnet: offloads.tcp,
            udp: offloads.tcp && offloads.udp,
            saved: [0; MAX_HEADERS],
            acks: None,
            left_out: vec![false; slots],
            superseded: 0,
        }
    }

    /// Leave out of each write the pure TCP ACKs that the next packet of
    /// their flow in the same write supersedes (see `tun::ack_filter`).
    pub fn filter_acks(mut self) -> Self {
        self.acks = Some(AckFilter::new());
        self
    }

    /// Pure ACKs left out of writes since the last call.
    pub fn take_superseded_acks(&mut self) -> u64 {
        std::mem::take(&mut self.superseded)
    }

    /// Packets (and super-packets) to write.
    pub fn len(&self) -> usize {
        self.used
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// No slot left: write before the next [`Self::spot`].
    pub fn is_full(&self) -> bool {
        self.used == self.lens.len()
    }

    /// Where to open a packet of at most `max` bytes: behind the
    /// super-packet the last packet joined while it is open and would still
    /// hold it, else at the start of a free slot. `None` when full. Every
    /// spot must end in [`Self::commit`] or [`Self::discard`] before the
    /// next one.
    pub fn spot(&mut self, max: usize) -> Option<Spot> {
        if self.is_full() {
            return None;
        }
        if let Some(n) = self.last {
            let it = self.items[n];
            let len = self.lens[it.buf];
            if !it.closed
                && it.segments < MAX_SEGMENTS
                && it.headers <= MAX_HEADERS.min(len)
                && len + max <= IP_MAX + it.headers
            {
                let at = self.off + len - it.headers;
                let from = it.buf * self.stride + at;
                self.saved[..it.headers].copy_from_slice(&self.arena[from..from + it.headers]);
                return Some(Spot {
                    slot: it.buf,
                    at,
                    behind: Some(n),
                    saved: it.headers,
                });
            }
        }
        Some(Spot {
            slot: self.used,
            at: self.off,
            behind: None,
            saved: 0,
        })
    }

    /// The bytes to open into at `spot` (at least `max` of [`Self::spot`]).
    pub fn window(&mut self, spot: &Spot) -> &mut [u8] {
        let base = spot.slot * self.stride;
        &mut self.arena[base + spot.at..base + self.stride]
    }

    /// The first `len` bytes at `spot`, as [`Self::window`] left them.
    pub fn opened(&self, spot: &Spot, len: usize) -> &[u8] {
        let base = spot.slot * self.stride;
        let end = (spot.at + len).min(self.stride);
        &self.arena[base + spot.at..base + end]
    }

    /// Nothing to keep was opened at `spot` (a failed authentication, a
    /// ping, a relayed packet): put back what it overlapped.
    pub fn discard(&mut self, spot: Spot) {
        self.restore(&spot);
    }

    /// A `len`-byte IP packet now lies at `spot`: let it join its flow's
    /// super-packet (in place when it was opened right behind it, else by
    /// copying its payload there), or keep it as a packet of its own.
    pub fn commit(&mut self, spot: Spot, len: usize) {
        let start = spot.slot * self.stride + spot.at;
        let end = start + len.min(self.stride - spot.at);
        let seg = if self.vnet {
            parse(&self.arena[start..end], self.udp)
        } else {
            None
        };
        let target = seg
            .as_ref()
            .and_then(|s| self.merge_target(s, start, spot.behind));
        // Read before the copies below move it or put saved bytes over it.
        let tcp = match (&self.acks, &seg) {
            (None, _) => None,
            (Some(_), Some(s)) if s.key.proto != TCP => None,
            // A data segment: never a pure ACK, only its flow matters.
            (Some(_), Some(s)) => Some(TcpPacket::data(s.key.v6, s.key.addrs, s.key.ports)),
            (Some(_), None) => ack_filter::classify(&self.arena[start..end]),
        };
        let slot = match (seg, target) {
            (Some(seg), Some(t)) => {
                let head = self.items[t].buf;
                let to = head * self.stride + self.off + self.lens[head];
                let from = start + seg.headers;
                // Equal exactly when it was opened right behind `t`.
                if from != to {
                    self.arena.copy_within(from..from + seg.payload, to);
                }
                self.restore(&spot);
                self.joined(t, &seg);
                head
            }
            (seg, _) => {
                // A slot of its own: `spot()` saw one free.
                let slot = self.used;
                if spot.behind.is_some() {
                    self.arena
                        .copy_within(start..end, slot * self.stride + self.off);
                    self.restore(&spot);
                }
                self.lens[slot] = end - start;
                self.used += 1;
                if let Some(seg) = seg
                    && self.items.len() < MAX_FLOWS
                {
                    self.items.push(Item::first(&seg, slot));
                    self.last = Some(self.items.len() - 1);
                }
                slot
            }
        };
        if let (Some(acks), Some(tcp)) = (&mut self.acks, tcp)
            && let Some(earlier) = acks.committed(tcp, slot)
        {
            self.left_out[earlier] = true;
            self.superseded += 1;
        }
    }

    /// Copy in a packet opened elsewhere, as [`Self::commit`] would take it;
    /// false (dropped) when full or longer than a slot.
    pub fn push(&mut self, pkt: &[u8]) -> bool {
        let Some(spot) = self.spot(pkt.len()) else {
            return false;
        };
        let Some(w) = self.window(&spot).get_mut(..pkt.len()) else {
            self.discard(spot);
            return false;
        };
        w.copy_from_slice(pkt);
        self.commit(spot, pkt.len());
        true
    }

    /// Write every slot's virtio header (a super-packet's with its lengths
    /// and checksum fixed); then [`Self::frames`] are ready to write.
    pub fn finish(&mut self) {
        if !self.vnet {
            return;
        }
        let off = self.off;
        for i in 0..self.used {
            let at = i * self.stride + off - VIRTIO_NET_HDR_LEN;
            VirtioNetHdr::default()
                .encode(&mut self.arena[at..at + VIRTIO_NET_HDR_LEN])
                .ok();
        }
        for it in &self.items {
            if it.segments > 1 {
                let base = it.buf * self.stride;
                let end = base + off + self.lens[it.buf];
                finish_super_packet(&mut self.arena[base..end], off, it);
            }
        }
    }

    /// The frames to write after [`Self::finish`], in arrival order
    /// (virtio header included when the device takes one), without the
    /// superseded pure ACKs.
    pub fn frames(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let from = if self.vnet {
            self.off - VIRTIO_NET_HDR_LEN
        } else {
            self.off
        };
        (0..self.used)
            .filter(move |&i| !self.left_out[i])
            .map(move |i| {
                let base = i * self.stride;
                &self.arena[base + from..base + self.off + self.lens[i]]
            })
    }

    /// Start the next write.
    pub fn clear(&mut self) {
        self.left_out[..self.used].fill(false);
        self.used = 0;
        self.items.clear();
        self.last = None;
        if let Some(acks) = &mut self.acks {
            acks.clear();
        }
    }

    /// The super-packet `seg` (opened at arena byte `start`, behind item
    /// `behind`) may join: its flow's latest one, if still open, contiguous
    /// and alike.
    fn merge_target(&self, seg: &Seg, start: usize, behind: Option<usize>) -> Option<usize> {
        // The last item joined is its flow's latest: no search when the
        // guess was right.
        let n = match behind {
            Some(n) if self.items[n].key == seg.key => n,
            _ => self.items.iter().rposition(|it| it.key == seg.key)?,
        };
        let it = &self.items[n];
        let head = it.buf * self.stride + self.off;
        let fits = !it.closed
            && it.headers == seg.headers
            && seg.payload <= it.gso_size
            && (seg.key.proto != TCP || seg.seq == it.next_seq)
            && it.segments < MAX_SEGMENTS
            && self.lens[it.buf] + seg.payload <= IP_MAX
            && headers_match(
                &self.arena[head..head + it.headers],
                &self.arena[start..start + seg.headers],
                it,
            );
        fits.then_some(n)
    }

    /// `seg`'s payload now ends item `t`'s super-packet.
    fn joined(&mut self, t: usize, seg: &Seg) {
        let it = &mut self.items[t];
        it.segments += 1;
        it.next_seq = it.next_seq.wrapping_add(seg.payload as u32);
        if seg.psh {
            self.arena[it.buf * self.stride + self.off + it.iph + 13] |= TCP_PSH;
        }
        it.closed = seg.payload < it.gso_size || seg.psh;
        self.lens[it.buf] += seg.payload;
        self.last = Some(t);
    }

    /// Put back the super-packet bytes a spot behind it overlapped.
    fn restore(&mut self, spot: &Spot) {
        if spot.behind.is_some() {
            let at = spot.slot * self.stride + spot.at;
            self.arena[at..at + spot.saved].copy_from_slice(&self.saved[..spot.saved]);
        }
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

    const BOTH: TunOffloads = TunOffloads {
        tcp: true,
        udp: true,
    };

    fn coalescer(offloads: TunOffloads) -> Coalescer {
        Coalescer::new(offloads, 16, OFF)
    }

    /// Open each packet where the coalescer asks (as the worker does) and
    /// return the frames of one write.
    fn run(c: &mut Coalescer, pkts: &[Vec<u8>]) -> Vec<Vec<u8>> {
        for p in pkts {
            let spot = c.spot(p.len()).expect("a free slot");
            c.window(&spot)[..p.len()].copy_from_slice(p);
            c.commit(spot, p.len());
        }
        c.finish();
        let frames = c.frames().map(<[u8]>::to_vec).collect();
        c.clear();
        frames
    }

    fn hdr(f: &[u8]) -> VirtioNetHdr {
        VirtioNetHdr::decode(f).unwrap()
    }

    fn packet(f: &[u8]) -> &[u8] {
        &f[VIRTIO_NET_HDR_LEN..]
    }

    /// What the kernel does with a super-packet: split it at gso_size and
    /// complete each checksum. Returns the segments' payloads.
    fn kernel_split(f: &[u8]) -> Vec<Vec<u8>> {
        let h = hdr(f);
        let p = packet(f);
        let hl = usize::from(h.hdr_len);
        if h.gso_type == 0 {
            let (iph, th) = (20, usize::from(p[32] >> 4) * 4);
            return vec![p[iph + th..].to_vec()];
        }
        p[hl..]
            .chunks(usize::from(h.gso_size))
            .map(|c| c.to_vec())
            .collect()
    }

    #[test]
    fn superseded_pure_acks_are_left_out_only_with_the_filter() {
        let ack_at = |seq: u32, n: u32| tcp4(40000, seq, n, TCP_ACK, &[]);
        let ack = |n: u32| ack_at(7, n);
        // Data the other way on the same connection, then its next ACK.
        let data = tcp4(40000, 7, 2000, TCP_ACK, &[1; 100]);
        let pkts = [ack(1000), ack(2000), data, ack_at(107, 3000)];
        let mut plain = coalescer(BOTH);
        assert_eq!(run(&mut plain, &pkts).len(), 4);
        assert_eq!(plain.take_superseded_acks(), 0);
        let mut filtering = coalescer(BOTH).filter_acks();
        let frames = run(&mut filtering, &pkts);
        assert_eq!(filtering.take_superseded_acks(), 1);
        // ack(1000) left out; the data segment in between keeps ack(2000).
        let acks: Vec<u32> = frames.iter().map(|f| be32(packet(f), 28)).collect();
        assert_eq!(acks, vec![2000, 2000, 3000]);
        // A new write starts afresh: nothing from the last one is left out.
        assert_eq!(run(&mut filtering, &[ack(5000)]).len(), 1);
        // Without offloads (no virtio header) the same.
        let mut bare = coalescer(TunOffloads::default()).filter_acks();
        let frames = run(&mut bare, &[ack(1000), ack(2000), ack(3000)]);
        assert_eq!(frames.len(), 1);
        assert_eq!(be32(&frames[0], 28), 3000);
    }

    #[test]
    fn consecutive_segments_of_one_flow_become_one_super_packet() {
        let seg = |i: u32, flags| tcp4(40000, 1000 + i * 100, 77, flags, &[i as u8; 100]);
        let frames = run(
            &mut coalescer(BOTH),
            &[
                seg(0, TCP_ACK),
                seg(1, TCP_ACK),
                seg(2, TCP_ACK | TCP_PSH),
                seg(3, TCP_ACK),
            ],
        );
        // The PSH segment closes the first super-packet.
        assert_eq!(frames.len(), 2);
        let h = hdr(&frames[0]);
        assert_eq!(h.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!((h.flags, h.hdr_len, h.gso_size), (F_NEEDS_CSUM, 52, 100));
        assert_eq!((h.csum_start, h.csum_offset), (20, 16));
        let p = packet(&frames[0]);
        assert_eq!(p.len(), 52 + 300);
        assert_eq!(usize::from(be16(p, 2)), p.len());
        assert_eq!(csum(&p[..20], 0), 0, "IPv4 header checksum");
        assert_ne!(p[33] & TCP_PSH, 0);
        let segs = kernel_split(&frames[0]);
        assert_eq!(segs, vec![vec![0u8; 100], vec![1u8; 100], vec![2u8; 100]]);
        // Pseudo-header sum for the new length, not inverted.
        let mut pseudo = u32::from(TCP) + (p.len() - 20) as u32;
        for w in p[12..20].chunks(2) {
            pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        assert_eq!(be16(p, 36), fold(pseudo));
        // Written alone: plain header, packet untouched.
        assert_eq!(hdr(&frames[1]).gso_type, 0);
        assert_eq!(packet(&frames[1]), &seg(3, TCP_ACK)[..]);
    }

    #[test]
    fn gaps_new_acks_other_flows_and_short_segments_stay_apart() {
        let pkts = [
            tcp4(40000, 0, 1, TCP_ACK, &[1; 100]),
            tcp4(40001, 0, 1, TCP_ACK, &[2; 100]), // other flow
            tcp4(40000, 100, 1, TCP_ACK, &[3; 60]), // short: closes
            tcp4(40000, 160, 1, TCP_ACK, &[4; 100]), // after a short one
            tcp4(40001, 100, 2, TCP_ACK, &[5; 100]), // new ack
            tcp4(40001, 300, 2, TCP_ACK, &[6; 100]), // gap
            tcp4(40000, 260, 1, TCP_ACK | 0x01, &[7; 100]), // FIN
            tcp4(40000, 0, 1, TCP_ACK, &[]),       // pure ACK
        ];
        let frames = run(&mut coalescer(BOTH), &pkts);
        assert_eq!(frames.len(), 7);
        assert_eq!(
            kernel_split(&frames[0]),
            vec![vec![1u8; 100], vec![3u8; 60]]
        );
        for (f, i) in frames[1..].iter().zip([1, 3, 4, 5, 6, 7]) {
            assert_eq!(packet(f), &pkts[i][..], "packet {i} untouched");
            assert_eq!(hdr(f).gso_type, 0);
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
            let frames = run(&mut coalescer(BOTH), &[a.clone(), other.clone()]);
            assert_eq!(frames.len(), 2);
            // The second was opened behind the first: both intact.
            assert_eq!(packet(&frames[0]), &a[..]);
            assert_eq!(packet(&frames[1]), &other[..]);
        }
    }

    #[test]
    fn equal_udp_datagrams_merge_only_with_uso() {
        let pkts = [
            udp4(5000, &[1; 200]),
            udp4(5000, &[2; 200]),
            udp4(5000, &[3; 50]),
        ];
        let tso_only = TunOffloads {
            tcp: true,
            udp: false,
        };
        assert_eq!(run(&mut coalescer(tso_only), &pkts).len(), 3);
        let frames = run(&mut coalescer(BOTH), &pkts);
        assert_eq!(frames.len(), 1);
        let h = hdr(&frames[0]);
        assert_eq!(h.gso_type, VIRTIO_NET_HDR_GSO_UDP_L4);
        assert_eq!((h.hdr_len, h.gso_size, h.csum_offset), (28, 200, 6));
        let p = packet(&frames[0]);
        assert_eq!(usize::from(be16(p, 24)), p.len() - 20);
        assert_eq!(kernel_split(&frames[0]).len(), 3);
    }

    #[test]
    fn without_offloads_packets_go_alone_without_a_header() {
        let pkts = [
            tcp4(40000, 0, 1, TCP_ACK, &[1; 100]),
            tcp4(40000, 100, 1, TCP_ACK, &[2; 100]),
        ];
        let frames = run(&mut coalescer(TunOffloads::default()), &pkts);
        assert_eq!(frames, pkts.to_vec());
    }

    #[test]
    fn super_packets_stop_at_64_kib() {
        let pkts: Vec<Vec<u8>> = (0..60)
            .map(|i| tcp4(40000, i * 1400, 1, TCP_ACK, &[i as u8; 1400]))
            .collect();
        let frames = run(&mut coalescer(BOTH), &pkts);
        assert_eq!(frames.len(), 2);
        for f in &frames {
            assert!(packet(f).len() <= IP_MAX);
        }
        let segs: Vec<Vec<u8>> = frames.iter().flat_map(|f| kernel_split(f)).collect();
        let want: Vec<Vec<u8>> = (0..60).map(|i| vec![i as u8; 1400]).collect();
        assert_eq!(segs, want);
    }

    #[test]
    fn the_next_segment_is_opened_where_its_payload_belongs() {
        let seg = |i: u32| tcp4(40000, i * 100, 1, TCP_ACK, &[i as u8; 100]);
        let mut c = coalescer(BOTH);
        let first = c.spot(200).unwrap();
        assert_eq!((first.slot, first.at, first.behind), (0, OFF, None));
        c.discard(first);
        assert!(c.push(&seg(0)));
        // Headers over the super-packet's last 52 bytes, payload at its end.
        let next = c.spot(200).unwrap();
        assert_eq!(
            (next.slot, next.at, next.behind),
            (0, OFF + 152 - 52, Some(0))
        );
        c.discard(next);
        assert!(c.push(&seg(1)));
        assert_eq!((c.len(), c.lens[0]), (1, 252));
        // Closed by a short segment: the next one gets a slot of its own.
        assert!(c.push(&tcp4(40000, 200, 1, TCP_ACK, &[2; 50])));
        let after = c.spot(200).unwrap();
        assert_eq!((after.slot, after.at, after.behind), (1, OFF, None));
        c.discard(after);
    }

    #[test]
    fn packets_dropped_behind_a_super_packet_leave_it_intact() {
        let seg = |i: u32| tcp4(40000, i * 100, 1, TCP_ACK, &[i as u8; 100]);
        let mut c = coalescer(BOTH);
        for i in 0..2 {
            let p = seg(i);
            let spot = c.spot(p.len()).unwrap();
            c.window(&spot)[..p.len()].copy_from_slice(&p);
            c.commit(spot, p.len());
            // A forgery opened behind it: garbage written, then dropped.
            let spot = c.spot(1500).unwrap();
            c.window(&spot)[..1500].fill(0xEE);
            c.discard(spot);
        }
        assert!(c.push(&seg(2)));
        c.finish();
        let frames: Vec<Vec<u8>> = c.frames().map(<[u8]>::to_vec).collect();
        assert_eq!(frames.len(), 1);
        let want: Vec<Vec<u8>> = (0..3).map(|i| vec![i as u8; 100]).collect();
        assert_eq!(kernel_split(&frames[0]), want);
    }

    #[test]
    fn a_full_coalescer_asks_for_a_write() {
        let mut c = Coalescer::new(BOTH, 2, OFF);
        assert!(c.push(&tcp4(40000, 0, 1, TCP_ACK, &[])));
        assert!(c.push(&tcp4(40001, 0, 1, TCP_ACK, &[])));
        assert!(c.is_full());
        assert!(c.spot(100).is_none());
        assert!(!c.push(&tcp4(40002, 0, 1, TCP_ACK, &[])));
        c.clear();
        assert!(c.is_empty() && c.spot(100).is_some());
    }

    /// Interleaved flows with random sizes, gaps and dropped packets: each
    /// flow's bytes come out whole and in order, however they merged.
    #[test]
    fn every_flows_bytes_come_out_in_order() {
        let mut rng = 0x9E37_79B9u32;
        let mut next = move || {
            rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12345);
            rng >> 8
        };
        for _ in 0..200 {
            let mut c = Coalescer::new(BOTH, 32, OFF);
            let mut seq = [0u32; 3];
            let mut sent: [Vec<u8>; 3] = Default::default();
            let mut n = 0;
            while n < 30 && !c.is_full() {
                let flow = (next() % 3) as usize;
                if next() % 5 == 0 {
                    let spot = c.spot(1500).unwrap();
                    c.window(&spot)[..1500].fill(0xEE);
                    c.discard(spot);
                    continue;
                }
                let size = [1400, 1400, 1400, 700, 1][(next() % 5) as usize];
                if next() % 7 == 0 {
                    seq[flow] += 10; // a gap: the bytes still arrive, apart
                }
                let payload: Vec<u8> = (0..size).map(|_| next() as u8).collect();
                let p = tcp4(40000 + flow as u16, seq[flow], 1, TCP_ACK, &payload);
                seq[flow] += size as u32;
                sent[flow].extend_from_slice(&payload);
                assert!(c.push(&p));
                n += 1;
            }
            c.finish();
            let mut got: [Vec<u8>; 3] = Default::default();
            for f in c.frames() {
                let port = usize::from(be16(packet(f), 20)) - 40000;
                for s in kernel_split(f) {
                    got[port].extend_from_slice(&s);
                }
            }
            assert_eq!(got, sent);
        }
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
            let mut c = coalescer(BOTH);
            for p in &pkts {
                assert!(c.push(p));
            }
            c.finish();
            assert_eq!(c.frames().count(), c.len());
        }
    }
}
