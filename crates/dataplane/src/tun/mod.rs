//! The multi-queue TUN device (one queue per worker) with `IFF_VNET_HDR` offloads.
//!
//! With offloads (TSO4/TSO6, and USO4/USO6 on kernels ≥ 6.2) one read returns
//! a super-packet of up to 64 KiB that tun-rs splits into MTU-sized packets
//! (userspace GSO), and a batch of writes is coalesced per TCP/UDP flow into
//! super-packets (userspace GRO, `GROTable`). Without them (`offload: false`,
//! or the kernel refused `TUNSETOFFLOAD`) every read and write is one packet.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use tun_rs::{DeviceBuilder, GROTable, SyncDevice};

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
    dev: SyncDevice,
    gro: GROTable,
    offloads: TunOffloads,
}

/// Create the device with `queues` queues (IFF_MULTI_QUEUE), set its MTU and
/// bring it up. Returns the queues, the device name and the engaged offloads.
pub fn create(
    name: &str,
    mtu: u16,
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
    let mut devs = Vec::with_capacity(queues.max(1));
    for _ in 1..queues.max(1) {
        devs.push(first.try_clone()?);
    }
    devs.insert(0, first);
    let mut out = Vec::with_capacity(devs.len());
    for dev in devs {
        dev.set_nonblocking(true)?;
        out.push(TunQueue {
            dev,
            gro: GROTable::new(),
            offloads,
        });
    }
    Ok((out, name, offloads))
}

impl TunQueue {
    pub fn offloads(&self) -> TunOffloads {
        self.offloads
    }

    /// Read one (super-)packet and split it into `bufs`, each packet at
    /// `bufs[i][offset..offset + sizes[i]]`. `Ok(0)` when nothing is queued.
    pub fn read<B: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        raw: &mut [u8],
        bufs: &mut [B],
        sizes: &mut [usize],
        offset: usize,
    ) -> io::Result<usize> {
        match self.dev.recv_multiple(raw, bufs, sizes, offset) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Write a batch of IP packets (`bufs[i][offset..]`, `offset >=
    /// VIRTIO_NET_HDR_LEN`), coalescing TCP/UDP flows when offloads are on.
    /// Buffers of coalesced packets grow within their capacity.
    pub fn write(&mut self, bufs: &mut [Vec<u8>], offset: usize) -> io::Result<usize> {
        self.dev.send_multiple(&mut self.gro, bufs, offset)
    }
}

impl AsRawFd for TunQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.dev.as_raw_fd()
    }
}
