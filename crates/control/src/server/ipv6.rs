//! IPv6 inside the tunnel on a server (`server-ipv6`): which address a
//! client gets and what is pushed for it. Pure; the runtime applies it.

use std::net::{Ipv4Addr, Ipv6Addr};

use ferrovpn_config::{ClientConfig, ServerIpv6};

use super::ServerSettings;

/// The IPv6 address paired with pool address `ip`, as 2.6's pool does: the
/// IPv6 pool is indexed like the IPv4 one (the n-th IPv4 address goes with
/// the n-th IPv6 address). `None` outside the IPv4 pool, past the end of the
/// IPv6 network, or without `server-ipv6`.
pub fn paired_address(
    v6: &ServerIpv6,
    pool: (Ipv4Addr, Ipv4Addr),
    ip: Ipv4Addr,
) -> Option<Ipv6Addr> {
    let (first, last) = (u32::from(pool.0), u32::from(pool.1));
    let n = u32::from(ip);
    if !(first..=last).contains(&n) {
        return None;
    }
    let index = u128::from(n - first);
    (index < v6.pool_size()).then(|| Ipv6Addr::from(u128::from(v6.pool_base()) + index))
}

/// The IPv6 address a client gets: its client-config-dir file's
/// `ifconfig-ipv6-push`, else its pool pair, except when the file pins its
/// IPv4 address with `ifconfig-push` (2.6 then assigns no IPv6 from the
/// pool either).
pub fn client_address(s: &ServerSettings, ip: Ipv4Addr, config: &ClientConfig) -> Option<Ipv6Addr> {
    let v6 = s.ipv6.as_ref()?;
    if let Some(p) = config.ifconfig_ipv6_push {
        return Some(p.local);
    }
    if config.ifconfig_push.is_some() {
        return None;
    }
    paired_address(v6, s.pool, ip)
}

/// The `ifconfig-ipv6 ADDR/BITS SERVER` line pushed to a client (its
/// `ifconfig-ipv6-push`'s netbits and remote when it has one).
pub fn ifconfig_line(v6: &ServerIpv6, client: Ipv6Addr, config: &ClientConfig) -> String {
    let (bits, remote) = match config.ifconfig_ipv6_push {
        Some(p) => (p.bits, p.remote.unwrap_or_else(|| v6.server_address())),
        None => (v6.bits, v6.server_address()),
    };
    format!("ifconfig-ipv6 {client}/{bits} {remote}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6(net: &str, bits: u8) -> ServerIpv6 {
        ServerIpv6 {
            network: net.parse().unwrap(),
            bits,
        }
    }

    const POOL: (Ipv4Addr, Ipv4Addr) = (Ipv4Addr::new(10, 8, 0, 2), Ipv4Addr::new(10, 8, 0, 254));

    #[test]
    fn pool_pairs_follow_the_ipv4_index() {
        let n = v6("fd00:1::", 64);
        assert_eq!(n.server_address(), "fd00:1::1".parse::<Ipv6Addr>().unwrap());
        let first = paired_address(&n, POOL, Ipv4Addr::new(10, 8, 0, 2)).unwrap();
        assert_eq!(first, "fd00:1::1000".parse::<Ipv6Addr>().unwrap());
        let third = paired_address(&n, POOL, Ipv4Addr::new(10, 8, 0, 4)).unwrap();
        assert_eq!(third, "fd00:1::1002".parse::<Ipv6Addr>().unwrap());
        assert_eq!(paired_address(&n, POOL, Ipv4Addr::new(10, 8, 0, 1)), None);
        assert_eq!(paired_address(&n, POOL, Ipv4Addr::new(10, 8, 1, 1)), None);
        assert_eq!(
            ifconfig_line(&n, first, &ClientConfig::default()),
            "ifconfig-ipv6 fd00:1::1000/64 fd00:1::1"
        );
        let (pinned, _) = ClientConfig::parse("ifconfig-ipv6-push fd00:1::77/112\n", "c");
        assert_eq!(
            ifconfig_line(&n, "fd00:1::77".parse().unwrap(), &pinned),
            "ifconfig-ipv6 fd00:1::77/112 fd00:1::1"
        );
    }

    #[test]
    fn small_networks_start_at_two_and_end_at_the_last_address() {
        let n = v6("fd00::", 124);
        assert_eq!(n.pool_base(), "fd00::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(n.pool_size(), 14);
        let last_ok = Ipv4Addr::new(10, 8, 0, 2 + 13);
        assert_eq!(
            paired_address(&n, POOL, last_ok),
            Some("fd00::f".parse().unwrap())
        );
        assert_eq!(paired_address(&n, POOL, Ipv4Addr::new(10, 8, 0, 16)), None);
        assert_eq!(
            v6("fd00::", 112).pool_base(),
            "fd00::2".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            v6("fd00::", 111).pool_base(),
            "fd00::1000".parse::<Ipv6Addr>().unwrap()
        );
    }
}
