//! The multi-queue TUN device (one queue per worker) with `IFF_VNET_HDR` offloads.
//!
//! With offloads (TSO4/TSO6, and USO4/USO6 on kernels ≥ 6.2) one read returns
//! a super-packet of up to 64 KiB that tun-rs splits into MTU-sized packets
//! (userspace GSO), and a batch of writes is coalesced per TCP/UDP flow into
//! super-packets (userspace GRO, `coalesce`, which the worker opens packets
//! straight into). Without them (`offload: false`,
//! or the kernel refused `TUNSETOFFLOAD`) every read and write is one packet.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

mod ack_filter;
mod coalesce;
pub mod memory;

pub use coalesce::Coalescer;
pub use memory::MemoryTun;
use tun_rs::{
    DeviceBuilder, SyncDevice, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    VIRTIO_NET_HDR_GSO_UDP_L4, VirtioNetHdr,
};

pub use tun_rs::{IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

/// Which offloads the device engaged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TunOffloads {
    /// IFF_VNET_HDR with TSO4/TSO6 (TCP super-packets both ways).
    pub tcp: bool,
    /// USO4/USO6 as well (UDP super-packets, kernel ≥ 6.2).
    pub udp: bool,
}

/// One queue of the device, owned by one worker.
pub struct TunQueue {
    dev: Device,
    offloads: TunOffloads,
}

/// What a queue reads and writes. An enum, not a trait object, so the
/// calls stay direct (one predictable branch per system call).
enum Device {
    Kernel(SyncDevice),
    /// The null device (`dev null`): nothing to read, and what is written
    /// is dropped, as 2.6 does; the worker polls no descriptor.
    Null,
    /// Frames in memory ([`memory`]), for unit tests.
    Memory(memory::MemoryQueue),
}

impl Device {
    /// Read one frame (`WouldBlock` when none is queued).
    #[inline]
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Device::Kernel(dev) => dev.recv(buf),
            Device::Null => Err(io::ErrorKind::WouldBlock.into()),
            Device::Memory(queue) => queue.recv(buf),
        }
    }

    /// Write one frame.
    #[inline]
    fn send(&self, frame: &[u8]) -> io::Result<usize> {
        match self {
            Device::Kernel(dev) => dev.send(frame),
            Device::Null => Ok(frame.len()),
            Device::Memory(queue) => queue.send(frame),
        }
    }
}

/// Create the device with `queues` queues (IFF_MULTI_QUEUE), set its MTU and
/// (when asked) its transmit queue length, and bring it up. Returns the
/// queues, the device name and the engaged offloads.
pub fn create(
    name: &str,
    mtu: u16,
    tx_queue_len: Option<u32>,
    queues: usize,
    offload: bool,
) -> io::Result<(Vec<TunQueue>, String, TunOffloads)> {
    let build = |offload: bool| {
        let mut b = DeviceBuilder::new()
            .mtu(mtu)
            .multi_queue(true)
            .offload(offload)
            .enable(true);
        if !name.is_empty() {
            b = b.name(name);
        }
        b.build_sync()
    };
    let first = match build(offload) {
        Ok(d) => d,
        Err(e) if offload => {
            tracing::warn!("TUN offloads unavailable ({e}); falling back to one packet per read");
            build(false)?
        }
        Err(e) => return Err(e),
    };
    let offloads = TunOffloads {
        tcp: first.tcp_gso(),
        udp: first.udp_gso(),
    };
    let name = first.name()?;
    if let Some(len) = tx_queue_len {
        // As 2.6: a queue length the kernel refuses is a note, not a failure.
        match first.set_tx_queue_len(len) {
            Ok(()) => tracing::debug!("TUN/TAP TX queue length set to {len}"),
            Err(e) => tracing::warn!("Note: Cannot set tx queue length on {name}: {e}"),
        }
    }
    let mut devs = Vec::with_capacity(queues.max(1));
    for _ in 1..queues.max(1) {
        devs.push(first.try_clone()?);
    }
    devs.insert(0, first);
    let mut out = Vec::with_capacity(devs.len());
    for dev in devs {
        dev.set_nonblocking(true)?;
        out.push(TunQueue {
            dev: Device::Kernel(dev),
            offloads,
        });
    }
    Ok((out, name, offloads))
}

/// `queues` queues of the null device (`dev null`): no device at all.
pub fn create_null(queues: usize) -> Vec<TunQueue> {
    (0..queues.max(1))
        .map(|_| TunQueue {
            dev: Device::Null,
            offloads: TunOffloads::default(),
        })
        .collect()
}

/// One in-memory queue that behaves as a real one with `offloads` (see
/// [`memory`]), and the test's side of it.
pub fn create_memory(offloads: TunOffloads) -> (TunQueue, MemoryTun) {
    let (queue, tun) = memory::pair();
    let queue = TunQueue {
        dev: Device::Memory(queue),
        offloads,
    };
    (queue, tun)
}

impl TunQueue {
    pub fn offloads(&self) -> TunOffloads {
        self.offloads
    }

    /// Fill `bufs` with packets from the queue (each at
    /// `bufs[i][offset..offset + sizes[i]]`) until the queue is empty or the
    /// buffers are full. A super-packet that would split into more packets
    /// than there are free buffers stays in `raw` for the next call, so no
    /// data is lost however small the segments are. Returns (packets, errors).
    pub fn read_batch(
        &self,
        raw: &mut RawFrame,
        bufs: &mut [Vec<u8>],
        sizes: &mut [usize],
        offset: usize,
    ) -> (usize, u64) {
        if matches!(self.dev, Device::Null) {
            return (0, 0);
        }
        let dev = &self.dev;
        let mut n = 0;
        let mut errors = 0;
        let max = bufs.len().min(sizes.len());
        while n < max {
            if !self.offloads.tcp {
                let Some(b) = bufs[n].get_mut(offset..) else {
                    break;
                };
                match dev.recv(b) {
                    Ok(0) => {}
                    Ok(len) => {
                        sizes[n] = len;
                        n += 1;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
                continue;
            }
            if raw.len == 0 {
                match dev.recv(&mut raw.buf) {
                    Ok(len) => raw.len = len,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        errors += 1;
                        break;
                    }
                }
            }
            match split_frame(
                &mut raw.buf[..raw.len],
                &mut bufs[n..max],
                &mut sizes[n..max],
                offset,
            ) {
                Ok(k) => {
                    n += k;
                    raw.len = 0;
                }
                Err(SplitError::NeedRoom) if n > 0 => break,
                Err(e) => {
                    tracing::trace!("dropping TUN frame: {e:?}");
                    raw.len = 0;
                    errors += 1;
                }
            }
        }
        (n, errors)
    }

    /// Write frames as [`Coalescer::frames`] returns them (virtio header
    /// first when offloads are on). Every frame is attempted; returns the
    /// number of failed writes and the last error.
    pub fn write_frames<'a>(
        &self,
        frames: impl Iterator<Item = &'a [u8]>,
    ) -> (u64, Option<io::Error>) {
        if matches!(self.dev, Device::Null) {
            return (0, None);
        }
        let dev = &self.dev;
        let mut failed = 0;
        let mut last = None;
        for f in frames {
            if let Err(e) = dev.send(f) {
                failed += 1;
                last = Some(e);
            }
        }
        (failed, last)
    }
}

impl AsRawFd for TunQueue {
    /// -1 for the null and in-memory devices: `poll` ignores a negative descriptor.
    fn as_raw_fd(&self) -> RawFd {
        match &self.dev {
            Device::Kernel(dev) => dev.as_raw_fd(),
            Device::Null | Device::Memory(_) => -1,
        }
    }
}

/// One raw frame read from the TUN (virtio header + packet), kept across
/// batches when it did not fit.
pub struct RawFrame {
    buf: Vec<u8>,
    len: usize,
}

impl Default for RawFrame {
    fn default() -> Self {
        RawFrame {
            buf: vec![0u8; VIRTIO_NET_HDR_LEN + 65_535],
            len: 0,
        }
    }
}

#[derive(Debug)]
pub enum SplitError {
    /// More segments than free buffers.
    NeedRoom,
    Bad(&'static str),
    Split(io::Error),
}

const GSO_NONE: u8 = 0;
const F_NEEDS_CSUM: u8 = 1;
const GSO_ECN: u8 = 0x80;

/// Split one `virtio_net_hdr`-prefixed frame into IP packets (userspace GSO),
/// completing a partial checksum of a single packet. Validates everything it
/// reads; the segmentation itself is tun-rs' `gso_split`.
pub fn split_frame(
    frame: &mut [u8],
    bufs: &mut [Vec<u8>],
    sizes: &mut [usize],
    offset: usize,
) -> Result<usize, SplitError> {
    if frame.len() <= VIRTIO_NET_HDR_LEN || bufs.is_empty() || sizes.len() < bufs.len() {
        return Err(SplitError::Bad("short frame or no buffers"));
    }
    let mut hdr = VirtioNetHdr::decode(frame).map_err(SplitError::Split)?;
    let pkt = &mut frame[VIRTIO_NET_HDR_LEN..];
    let len = pkt.len();
    if hdr.gso_type == GSO_NONE {
        if hdr.flags & F_NEEDS_CSUM != 0 {
            let start = usize::from(hdr.csum_start);
            let at = start + usize::from(hdr.csum_offset);
            if at + 2 > len {
                return Err(SplitError::Bad("checksum offset past the packet"));
            }
            let initial = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
            pkt[at] = 0;
            pkt[at + 1] = 0;
            let c = !tun_rs::checksum(&pkt[start..], u64::from(initial));
            pkt[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        let Some(dst) = bufs[0].get_mut(offset..offset + len) else {
            return Err(SplitError::Bad("packet larger than the buffer"));
        };
        dst.copy_from_slice(pkt);
        sizes[0] = len;
        return Ok(1);
    }
    if hdr.gso_size == 0 {
        return Err(SplitError::Bad("zero gso_size"));
    }
    let is_v6 = match pkt[0] >> 4 {
        4 => false,
        6 => true,
        _ => return Err(SplitError::Bad("not IP")),
    };
    let start = usize::from(hdr.csum_start);
    // Like wireguard-go: do not trust hdr_len, derive it from the transport header.
    let hdr_len = match hdr.gso_type & !GSO_ECN {
        VIRTIO_NET_HDR_GSO_UDP_L4 => start + 8,
        VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_TCPV6 => {
            if len <= start + 12 {
                return Err(SplitError::Bad("TCP header truncated"));
            }
            let th = usize::from(pkt[start + 12] >> 4) * 4;
            if !(20..=60).contains(&th) {
                return Err(SplitError::Bad("bad TCP header length"));
            }
            start + th
        }
        _ => return Err(SplitError::Bad("unsupported gso_type")),
    };
    if hdr_len > len || hdr_len > usize::from(u16::MAX) {
        return Err(SplitError::Bad("headers longer than the packet"));
    }
    hdr.hdr_len = hdr_len as u16;
    let segs = (len - hdr_len).div_ceil(usize::from(hdr.gso_size)).max(1);
    if segs > bufs.len() {
        return Err(SplitError::NeedRoom);
    }
    tun_rs::gso_split(pkt, hdr, bufs, sizes, offset, is_v6).map_err(SplitError::Split)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovpn_testkit::Rng;

    /// A TSO frame: IPv4/TCP headers with a pseudo-header partial checksum, `payload` bytes, MSS `mss`.
    fn tso_frame(payload: usize, mss: u16) -> Vec<u8> {
        let total = 40 + payload;
        let mut f = vec![0u8; VIRTIO_NET_HDR_LEN + total];
        let hdr = VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
            hdr_len: 40,
            gso_size: mss,
            csum_start: 20,
            csum_offset: 16,
        };
        hdr.encode(&mut f).unwrap();
        let p = &mut f[VIRTIO_NET_HDR_LEN..];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[32] = 5 << 4;
        p[33] = 0x18;
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = i as u8;
        }
        f
    }

    #[test]
    fn small_segments_wait_for_room_instead_of_being_dropped() {
        let mut bufs: Vec<Vec<u8>> = (0..16).map(|_| vec![0u8; 2048]).collect();
        let mut sizes = vec![0usize; 16];
        let mut f = tso_frame(1000, 100);
        assert!(matches!(
            split_frame(&mut f, &mut bufs[..5], &mut sizes[..5], 24),
            Err(SplitError::NeedRoom)
        ));
        let n = split_frame(&mut f, &mut bufs, &mut sizes, 24).unwrap();
        assert_eq!(n, 10);
        for (i, b) in bufs[..n].iter().enumerate() {
            assert_eq!(sizes[i], 140);
            let ip = &b[24..24 + sizes[i]];
            assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 140);
            assert_eq!(ip[40], (i * 100) as u8);
        }
    }

    /// RFC 1071 the plain way, as the reference: big-endian words, an odd
    /// last byte padded, folded with end-around carry.
    fn reference_checksum(parts: &[&[u8]]) -> u16 {
        let mut sum: u64 = parts
            .iter()
            .flat_map(|p| p.chunks(2))
            .map(|w| u64::from(w[0]) << 8 | w.get(1).map_or(0, |&x| u64::from(x)))
            .sum();
        while sum > 0xFFFF {
            sum = (sum >> 16) + (sum & 0xFFFF);
        }
        sum as u16
    }

    /// Whether `pkt`'s transport checksum (and IPv4 header checksum) verify.
    fn checksums_verify(pkt: &[u8], v6: bool, proto: u8, iph: usize) -> bool {
        let addrs = if v6 { &pkt[8..40] } else { &pkt[12..20] };
        let len = ((pkt.len() - iph) as u16).to_be_bytes();
        let pseudo = [0, proto, len[0], len[1]];
        reference_checksum(&[addrs, &pseudo, &pkt[iph..]]) == 0xFFFF
            && (v6 || reference_checksum(&[&pkt[..iph]]) == 0xFFFF)
    }

    /// A random TCP or UDP packet over IPv4 or IPv6 behind a virtio header
    /// with `F_NEEDS_CSUM` and the pseudo-header sum in the checksum field,
    /// as the kernel hands it over: a TSO/USO super-packet when `gso_size`
    /// is not 0. Returns the frame and (v6, proto, IP header length).
    fn partial_frame(rng: &mut Rng, payload: usize, gso_size: u16) -> (Vec<u8>, bool, u8, usize) {
        let v6 = rng.below(2) == 1;
        let tcp = rng.below(3) != 0;
        let iph = if v6 { 40 } else { 20 };
        let (proto, th, csum_offset) = if tcp {
            (6u8, 20 + 4 * rng.below(11), 16)
        } else {
            (17u8, 8, 6)
        };
        let total = iph + th + payload;
        let mut f = vec![0u8; VIRTIO_NET_HDR_LEN + total];
        let gso_type = match (gso_size, tcp, v6) {
            (0, ..) => GSO_NONE,
            (_, false, _) => VIRTIO_NET_HDR_GSO_UDP_L4,
            (_, true, false) => VIRTIO_NET_HDR_GSO_TCPV4,
            (_, true, true) => VIRTIO_NET_HDR_GSO_TCPV6,
        };
        VirtioNetHdr {
            flags: F_NEEDS_CSUM,
            gso_type,
            hdr_len: (iph + th) as u16,
            gso_size,
            csum_start: iph as u16,
            csum_offset,
        }
        .encode(&mut f)
        .unwrap();
        let p = &mut f[VIRTIO_NET_HDR_LEN..];
        for b in p.iter_mut() {
            *b = rng.next_u64() as u8;
        }
        if v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
            p[6] = proto;
        } else {
            p[0] = 0x45;
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
            p[6] = 0x40;
            p[7] = 0;
            p[9] = proto;
            p[10..12].fill(0);
            let ip_sum = !reference_checksum(&[&p[..20]]);
            p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        }
        if tcp {
            p[iph + 12] = ((th / 4) as u8) << 4;
        } else {
            p[iph + 4..iph + 6].copy_from_slice(&((total - iph) as u16).to_be_bytes());
        }
        // What the kernel leaves for the device: the pseudo-header's sum,
        // not complemented.
        let addrs = if v6 { &p[8..40] } else { &p[12..20] };
        let len = ((total - iph) as u16).to_be_bytes();
        let pseudo = reference_checksum(&[addrs, &[0, proto, len[0], len[1]]]);
        let at = iph + usize::from(csum_offset);
        p[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
        (f, v6, proto, iph)
    }

    /// A lone packet with `F_NEEDS_CSUM` leaves with checksums that verify
    /// against the reference, for TCP and UDP over IPv4 and IPv6, at every
    /// length up to a full MTU.
    #[test]
    fn a_lone_packets_partial_checksum_is_completed() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut bufs = vec![vec![0u8; 2048]];
        let mut sizes = vec![0usize];
        for payload in 0..1400 {
            let (mut f, v6, proto, iph) = partial_frame(&mut rng, payload, 0);
            assert_eq!(split_frame(&mut f, &mut bufs, &mut sizes, 16).unwrap(), 1);
            let pkt = &bufs[0][16..16 + sizes[0]];
            assert_eq!(pkt.len(), f.len() - VIRTIO_NET_HDR_LEN);
            assert!(
                checksums_verify(pkt, v6, proto, iph),
                "payload {payload}, v6 {v6}, proto {proto}"
            );
        }
    }

    /// Every segment of a random TSO/USO super-packet (any segment size,
    /// IPv4 and IPv6, TCP with options) has checksums that verify against
    /// the reference, and the segments carry the payload in order.
    #[test]
    fn every_segment_of_a_super_packet_has_valid_checksums() {
        const OFF: usize = 24;
        let mut rng = Rng(0xD1B5_4A32_D192_ED03);
        let mut bufs: Vec<Vec<u8>> = (0..64).map(|_| vec![0u8; OFF + 9200]).collect();
        let mut sizes = vec![0usize; 64];
        for case in 0..300 {
            let gso_size = match rng.below(3) {
                0 => 1 + rng.below(100),
                1 => 1200 + rng.below(300),
                _ => 1 + rng.below(9000),
            };
            let segs = 1 + rng.below(64);
            let payload = (gso_size * (segs - 1) + 1 + rng.below(gso_size)).min(65_000);
            let (mut f, v6, proto, iph) = partial_frame(&mut rng, payload, gso_size as u16);
            let frame = f.clone();
            let n = split_frame(&mut f, &mut bufs, &mut sizes, OFF).unwrap();
            assert_eq!(n, payload.div_ceil(gso_size), "case {case}");
            let th = if proto == 6 {
                usize::from(frame[VIRTIO_NET_HDR_LEN + iph + 12] >> 4) * 4
            } else {
                8
            };
            let mut data = Vec::with_capacity(payload);
            for i in 0..n {
                let pkt = &bufs[i][OFF..OFF + sizes[i]];
                assert!(
                    checksums_verify(pkt, v6, proto, iph),
                    "case {case} segment {i}: v6 {v6}, proto {proto}, gso_size {gso_size}"
                );
                data.extend_from_slice(&pkt[iph + th..]);
            }
            assert_eq!(data, frame[VIRTIO_NET_HDR_LEN + iph + th..], "case {case}");
        }
    }

    #[test]
    fn garbage_frames_are_errors_not_panics() {
        let mut bufs: Vec<Vec<u8>> = (0..4).map(|_| vec![0u8; 256]).collect();
        let mut sizes = vec![0usize; 4];
        for seed in 0..2000u32 {
            let len = (seed % 97) as usize;
            let mut f: Vec<u8> = (0..len)
                .map(|i| (seed.wrapping_mul(2654435761).rotate_left(i as u32) >> 3) as u8)
                .collect();
            if f.len() > 1 {
                f[1] = [0, 1, 4, 5, 0x81][seed as usize % 5];
            }
            let _ = split_frame(&mut f, &mut bufs, &mut sizes, 16);
        }
    }
}
