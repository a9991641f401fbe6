//! IPv6 inside the tunnel on a server (`server-ipv6`, or `ifconfig-ipv6` +
//! `ifconfig-ipv6-pool`): which address a client gets and what is pushed
//! for it, with 2.6's pool rules (pool.c). Pure; the runtime applies it.

use std::net::{Ipv4Addr, Ipv6Addr};

use ferrovpn_config::{ClientConfig, Ipv6Pool, TunnelIpv6};

use super::ServerSettings;

/// The IPv6 address paired with pool address `ip`, as 2.6's pool does: the
/// IPv6 pool is indexed like the IPv4 one (the n-th IPv4 address goes with
/// the n-th IPv6 address). `None` outside the IPv4 pool or past the end of
/// the IPv6 pool (a pool cut by [`unified_pool`] never gets there).
pub fn paired_address(v6: &Ipv6Pool, pool: (Ipv4Addr, Ipv4Addr), ip: Ipv4Addr) -> Option<Ipv6Addr> {
    let (first, last) = (u32::from(pool.0), u32::from(pool.1));
    let n = u32::from(ip);
    if !(first..=last).contains(&n) {
        return None;
    }
    let index = n - first;
    (index < v6.size()).then(|| Ipv6Addr::from(u128::from(v6.first()) + u128::from(index)))
}

/// The IPv4 pool cut to what 2.6 hands out when an IPv6 pool is paired with
/// it: 2.6 sizes its one pool by the smaller of the two, so with a smaller
/// IPv6 pool the IPv4 addresses past its size are never given. The second
/// value is 2.6's note (IPv4 smaller) or warning (IPv6 smaller) to log.
pub fn unified_pool(
    v4: (Ipv4Addr, Ipv4Addr),
    v6: Option<&Ipv6Pool>,
) -> ((Ipv4Addr, Ipv4Addr), Option<String>) {
    let Some(v6) = v6 else {
        return (v4, None);
    };
    let v4_size = u32::from(v4.1).saturating_sub(u32::from(v4.0)) + 1;
    let v6_size = v6.size();
    if v4_size < v6_size {
        let note = format!(
            "NOTE: IPv4 pool size is {v4_size}, IPv6 pool size is {v6_size}. IPv4 pool size limits the number of clients that can be served from the pool"
        );
        return (v4, Some(note));
    }
    if v4_size == v6_size {
        return (v4, None);
    }
    let warning = format!(
        "WARNING: IPv4 pool size is {v4_size}, IPv6 pool size is {v6_size}. IPv6 pool size limits the number of clients that can be served from the pool. This is likely a MISTAKE - please check your configuration"
    );
    let end = Ipv4Addr::from(u32::from(v4.0) + v6_size.max(1) - 1);
    ((v4.0, end), Some(warning))
}

/// The IPv6 address a client gets: its client-config-dir file's
/// `ifconfig-ipv6-push`, else `pooled`, the IPv6 address of the pool entry
/// it holds, except when the file pins its IPv4 address with
/// `ifconfig-push` (2.6 then assigns no IPv6 from the pool either).
pub fn client_address(
    s: &ServerSettings,
    pooled: Option<Ipv6Addr>,
    config: &ClientConfig,
) -> Option<Ipv6Addr> {
    s.ipv6.as_ref()?;
    if let Some(p) = config.ifconfig_ipv6_push {
        return Some(p.local);
    }
    if config.ifconfig_push.is_some() {
        return None;
    }
    pooled
}

/// What a client is pushed for IPv6: `ifconfig-ipv6 LOCAL/BITS REMOTE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The client's address.
    pub local: Ipv6Addr,
    pub bits: u8,
    /// The server's end.
    pub remote: Ipv6Addr,
}

impl Pushed {
    /// The `ifconfig-ipv6` line of the push reply.
    pub fn line(&self) -> String {
        format!("ifconfig-ipv6 {}/{} {}", self.local, self.bits, self.remote)
    }
}

/// What the client at `client` is pushed: its `ifconfig-ipv6-push`'s
/// netbits and remote when it has one; the server's netbits otherwise,
/// not the pool's, as 2.6 pushes.
pub fn pushed(v6: &TunnelIpv6, client: Ipv6Addr, config: &ClientConfig) -> Pushed {
    let (bits, remote) = match config.ifconfig_ipv6_push {
        Some(p) => (p.bits, p.remote.unwrap_or(v6.local)),
        None => (v6.bits, v6.local),
    };
    Pushed {
        local: client,
        bits,
        remote,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovpn_config::ServerIpv6;

    fn v6(net: &str, bits: u8) -> TunnelIpv6 {
        ServerIpv6 {
            network: net.parse().unwrap(),
            bits,
        }
        .tunnel()
    }

    fn pool(base: &str, bits: u8) -> Ipv6Pool {
        Ipv6Pool {
            base: base.parse().unwrap(),
            bits,
        }
    }

    const POOL: (Ipv4Addr, Ipv4Addr) = (Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(10, 8, 0, 254));

    #[test]
    fn pool_pairs_follow_the_ipv4_index() {
        let n = v6("fd00:1::", 64);
        assert_eq!(n.local, "fd00:1::1".parse::<Ipv6Addr>().unwrap());
        let p = n.pool.unwrap();
        let first = paired_address(&p, POOL, Ipv4Addr::new(10, 8, 0, 2)).unwrap();
        assert_eq!(first, "fd00:1::1000".parse::<Ipv6Addr>().unwrap());
        let third = paired_address(&p, POOL, Ipv4Addr::new(10, 8, 0, 4)).unwrap();
        assert_eq!(third, "fd00:1::1002".parse::<Ipv6Addr>().unwrap());
        assert_eq!(paired_address(&p, POOL, Ipv4Addr::new(10, 8, 0, 1)), None);
        assert_eq!(paired_address(&p, POOL, Ipv4Addr::new(10, 8, 1, 1)), None);
        assert_eq!(
            pushed(&n, first, &ClientConfig::default()).line(),
            "ifconfig-ipv6 fd00:1::1000/64 fd00:1::1"
        );
        let (pinned, _) = ClientConfig::parse("ifconfig-ipv6-push fd00:1::77/112\n", "c");
        assert_eq!(
            pushed(&n, "fd00:1::77".parse().unwrap(), &pinned).line(),
            "ifconfig-ipv6 fd00:1::77/112 fd00:1::1"
        );
    }

    #[test]
    fn small_networks_start_at_two_and_end_at_the_last_address() {
        let n = v6("fd00::", 124).pool.unwrap();
        assert_eq!(n.first(), "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(n.size(), 14);
        let last_ok = Ipv4Addr::new(10, 8, 0, 2 + 13);
        assert_eq!(
            paired_address(&n, POOL, last_ok),
            Some("fd00::f".parse().unwrap())
        );
        assert_eq!(paired_address(&n, POOL, Ipv4Addr::new(10, 8, 0, 16)), None);
        assert_eq!(
            v6("fd00::", 112).pool.unwrap().first(),
            "fd00::2".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            v6("fd00::", 111).pool.unwrap().first(),
            "fd00::1000".parse::<Ipv6Addr>().unwrap()
        );
    }

    /// pool.c: a base whose last 32 bits are zero starts at +1; /112 and
    /// longer end at the network's end, shorter ones hold 65536.
    #[test]
    fn explicit_pools_size_and_start_as_2_6() {
        let p = pool("fd00:5::", 64);
        assert_eq!(p.first(), "fd00:5::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.size(), 65536);
        // Only the last 32 bits count: this base is used as it is.
        let p = pool("fd00:5::1:0:0", 64);
        assert_eq!(p.first(), "fd00:5::1:0:1".parse::<Ipv6Addr>().unwrap());
        let p = pool("fd00:5::1:0:7", 64);
        assert_eq!(p.first(), "fd00:5::1:0:7".parse::<Ipv6Addr>().unwrap());
        let p = pool("fd00:5::", 120);
        assert_eq!((p.first(), p.size()), ("fd00:5::1".parse().unwrap(), 255));
        // Network bits inside the last 32 bits are not host bits.
        let p = pool("fd00:5::1:100", 120);
        assert_eq!(
            (p.first(), p.size()),
            ("fd00:5::1:101".parse().unwrap(), 255)
        );
        let p = pool("fd00:5::f0", 120);
        assert_eq!(p.size(), 256 - 0xf0);
        let p = pool("fd00:5::ffff", 112);
        assert_eq!(p.size(), 1);
    }

    #[test]
    fn the_smaller_pool_limits_both() {
        // 253 IPv4 addresses, 14 IPv6 ones: the IPv4 pool is cut to 14.
        let small = pool("fd00::2", 124);
        let (cut, warning) = unified_pool(POOL, Some(&small));
        assert_eq!(cut, (POOL.0, Ipv4Addr::new(10, 8, 0, 15)));
        assert!(
            warning
                .unwrap()
                .starts_with("WARNING: IPv4 pool size is 253, IPv6 pool size is 14")
        );
        assert_eq!(
            paired_address(&small, cut, cut.1),
            Some("fd00::f".parse().unwrap())
        );
        // A larger IPv6 pool leaves the IPv4 one alone, with 2.6's note.
        let (same, note) = unified_pool(POOL, Some(&pool("fd00::", 64)));
        assert_eq!(same, POOL);
        assert!(
            note.unwrap()
                .starts_with("NOTE: IPv4 pool size is 253, IPv6 pool size is 65536")
        );
        assert_eq!(unified_pool(POOL, None), (POOL, None));
        let equal = (Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(10, 8, 0, 15));
        assert_eq!(unified_pool(equal, Some(&small)), (equal, None));
    }
}
