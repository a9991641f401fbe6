//! `management-up-down`: `>UPDOWN:UP` when the tunnel's routes are in
//! place, `>UPDOWN:DOWN` before they go, each followed by the scripts'
//! environment as `>UPDOWN:ENV,NAME=VALUE` lines and `>UPDOWN:ENV,END`.
//!
//! 2.6 prints its environment list as it holds it: newest first, a
//! variable set again moving to the front, and the start-up variables
//! (`config`, `verb`, `daemon*`, the connection entries) in the order they
//! were set (2.6 copies that part once, which reverses it). ferrovpn keeps
//! its [`Env`] in its own order, so the lines are put into 2.6's order
//! here, by the kind of each variable (checked against the stock 2.6.14
//! client's transcript).

use crate::scripts::Env;

/// The notification lines (without CRLF) for `event` (`UP` or `DOWN`)
/// with `env`; `newest`: a variable set after all others (`script_type`
/// once `route-up` ran after the routes went in), listed first.
pub fn updown_lines(event: &str, env: &Env, newest: Option<&str>) -> Vec<String> {
    let mut lines = vec![format!(">UPDOWN:{event}")];
    let mut pairs = in_2_6_order(env);
    if let Some(at) = newest.and_then(|name| pairs.iter().position(|(n, _)| *n == name)) {
        let pair = pairs.remove(at);
        pairs.insert(0, pair);
    }
    lines.extend(
        pairs
            .into_iter()
            .map(|(n, v)| format!(">UPDOWN:ENV,{n}={v}")),
    );
    lines.push(">UPDOWN:ENV,END".to_string());
    lines
}

/// (group, position within the group, sub-position): smaller first.
type Rank = (u32, u64, u32);

/// `env`'s pairs in the order 2.6 lists them.
pub fn in_2_6_order(env: &Env) -> Vec<(&str, &str)> {
    let mut keyed: Vec<(Rank, usize, (&str, &str))> = env
        .iter()
        .enumerate()
        .map(|(i, (n, v))| (rank(n), i, (n, v)))
        .collect();
    // Variables of one rank (the `ifconfig_*`, one certificate's `X509_*`,
    // unknown ones): newest first. Every start-up variable has a rank of
    // its own, so they come in 2.6's order whatever ferrovpn's was.
    keyed.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
    keyed.into_iter().map(|(_, _, pair)| pair).collect()
}

/// Groups, in the order 2.6 lists them.
const OTHER: u32 = 9;
const CERTS: u32 = 12;
const BASE: u32 = 13;

/// `name_N` → (`name`, N).
fn numbered(name: &str) -> Option<(&str, u64)> {
    let (stem, n) = name.rsplit_once('_')?;
    Some((stem, n.parse().ok()?))
}

/// Where `name` goes in 2.6's list.
fn rank(name: &str) -> Rank {
    // Set last by 2.6, so listed first: the route step's, then the up
    // step's (script_type, dev_type, dev, tun_mtu, script_context, signal).
    const FIXED: [&str; 7] = [
        "redirect_gateway",
        "script_type",
        "dev_type",
        "dev",
        "tun_mtu",
        "script_context",
        "signal",
    ];
    if let Some(i) = FIXED.iter().position(|f| *f == name) {
        return (0, i as u64, 0);
    }
    if let Some((stem, n)) = numbered(name) {
        // Routes: the highest number first; per route the reverse of 2.6's
        // network, netmask, gateway, metric.
        let route6 = [
            "route_ipv6_metric",
            "route_ipv6_gateway",
            "route_ipv6_network",
        ];
        if let Some(i) = route6.iter().position(|s| *s == stem) {
            return (1, u64::MAX - n, i as u32);
        }
        let route = [
            "route_metric",
            "route_gateway",
            "route_netmask",
            "route_network",
        ];
        if let Some(i) = route.iter().position(|s| *s == stem) {
            return (2, u64::MAX - n, i as u32);
        }
        if stem == "foreign_option" {
            return (6, u64::MAX - n, 0);
        }
        // A connection entry's: in order of N, then 2.6's order per entry.
        let entry = [
            "proto",
            "local",
            "local_port",
            "remote",
            "remote_port",
            "http_proxy_server",
            "http_proxy_port",
            "socks_proxy_server",
            "socks_proxy_port",
        ];
        if let Some(i) = entry.iter().position(|s| *s == stem) {
            return (BASE, 100 + n, i as u32);
        }
        // A certificate's: depth 0 first; per depth the reverse of 2.6's
        // X509_*, tls_id, tls_digest, tls_digest_sha256, tls_serial,
        // tls_serial_hex.
        let cert = [
            "tls_serial_hex",
            "tls_serial",
            "tls_digest_sha256",
            "tls_digest",
            "tls_id",
        ];
        if let Some(i) = cert.iter().position(|s| *s == stem) {
            return (CERTS, n, i as u32);
        }
    }
    if let Some(rest) = name.strip_prefix("X509_")
        && let Some((depth, _)) = rest.split_once('_')
        && let Ok(depth) = depth.parse::<u64>()
    {
        return (CERTS, depth, 10);
    }
    let after_routes = [
        "route_vpn_gateway",
        "route_net_gateway",
        "route_ipv6_vpn_gateway",
    ];
    if let Some(i) = after_routes.iter().position(|s| *s == name) {
        return (3, i as u64, 0);
    }
    if name.starts_with("ifconfig_") {
        // Newest first among them (2.6 sets local, then netmask/remote,
        // then the IPv6 ones).
        return (4, 0, 0);
    }
    if name.starts_with("dns_") {
        return (5, 0, 0);
    }
    let peer = [
        "common_name",
        "trusted_port",
        "trusted_ip",
        "trusted_ip6",
        "untrusted_port",
        "untrusted_ip",
        "untrusted_ip6",
    ];
    if let Some(i) = peer.iter().position(|s| *s == name) {
        return (7 + u32::from(i > 0), i as u64, 0);
    }
    let base = [
        "config",
        "verb",
        "daemon",
        "daemon_log_redirect",
        "daemon_start_time",
        "daemon_pid",
    ];
    if let Some(i) = base.iter().position(|s| *s == name) {
        return (BASE, i as u64, 0);
    }
    (OTHER, 0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stock 2.6.14 client's `>UPDOWN:UP` block (pushed route and
    /// dhcp-option, no scripts), names and values shortened where long.
    const STOCK: &str = "redirect_gateway=0
dev_type=tun
dev=fvtun-c
tun_mtu=1500
script_context=init
route_gateway_1=10.8.0.1
route_netmask_1=255.255.255.0
route_network_1=10.77.0.0
route_vpn_gateway=10.8.0.1
route_net_gateway=0.0.0.0
ifconfig_netmask=255.255.255.0
ifconfig_local=10.8.0.2
foreign_option_1=dhcp-option DNS 10.8.0.1
common_name=server
trusted_port=1194
trusted_ip=10.210.1.1
untrusted_port=1194
untrusted_ip=10.210.1.1
tls_serial_hex_0=02
tls_serial_0=2
tls_digest_sha256_0=cc
tls_digest_0=00
tls_id_0=CN=server
X509_0_CN=server
tls_serial_hex_1=01
tls_serial_1=1
tls_digest_sha256_1=2d
tls_digest_1=ae
tls_id_1=CN=ferrovpn test CA
X509_1_CN=ferrovpn test CA
config=/tmp/c.conf
verb=3
daemon=0
daemon_log_redirect=0
daemon_start_time=1796271943
daemon_pid=18854
proto_1=udp
remote_1=10.210.1.1
remote_port_1=1194";

    #[test]
    fn ferrovpn_set_order_comes_out_in_2_6_order() {
        let pairs: Vec<(&str, &str)> = STOCK.lines().map(|l| l.split_once('=').unwrap()).collect();
        let value = |name: &str| pairs.iter().find(|(n, _)| *n == name).unwrap().1;
        // 2.6's own order (oldest first), and the order ferrovpn builds
        // its environment in: start-up variables, certificates from depth
        // 0, the server, then the tunnel and its routes.
        let reversed: Vec<&str> = pairs.iter().rev().map(|(n, _)| *n).collect();
        let ferrovpn_order = [
            "config",
            "daemon",
            "daemon_log_redirect",
            "daemon_start_time",
            "daemon_pid",
            "verb",
            "proto_1",
            "remote_1",
            "remote_port_1",
            "X509_0_CN",
            "tls_id_0",
            "tls_digest_0",
            "tls_digest_sha256_0",
            "tls_serial_0",
            "tls_serial_hex_0",
            "X509_1_CN",
            "tls_id_1",
            "tls_digest_1",
            "tls_digest_sha256_1",
            "tls_serial_1",
            "tls_serial_hex_1",
            "common_name",
            "trusted_ip",
            "trusted_port",
            "untrusted_ip",
            "untrusted_port",
            "dev",
            "dev_type",
            "tun_mtu",
            "script_context",
            "foreign_option_1",
            "route_vpn_gateway",
            "route_network_1",
            "route_netmask_1",
            "route_gateway_1",
            "redirect_gateway",
            "ifconfig_local",
            "ifconfig_netmask",
            "route_net_gateway",
        ];
        assert_eq!(ferrovpn_order.len(), pairs.len());
        for order in [reversed.as_slice(), &ferrovpn_order] {
            let mut env = Env::new();
            // The start-up variables come in the order they were set.
            for n in order.iter().filter(|n| rank(n).0 != BASE) {
                env.set(n, value(n));
            }
            for (n, v) in pairs.iter().filter(|(n, _)| rank(n).0 == BASE) {
                env.set(n, *v);
            }
            assert_eq!(in_2_6_order(&env), pairs);
        }
    }

    #[test]
    fn several_routes_certificates_and_entries() {
        let mut env = Env::new();
        for n in ["proto_1", "remote_1", "proto_2", "remote_2"] {
            env.set(n, "x");
        }
        for n in [
            "X509_1_CN",
            "tls_id_1",
            "X509_0_C",
            "X509_0_CN",
            "tls_id_0",
            "route_network_1",
            "route_netmask_1",
            "route_network_2",
            "route_netmask_2",
            "route_metric_2",
            "foreign_option_1",
            "foreign_option_2",
            "ifconfig_local",
            "ifconfig_remote",
        ] {
            env.set(n, "x");
        }
        let names: Vec<&str> = in_2_6_order(&env).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "route_metric_2",
                "route_netmask_2",
                "route_network_2",
                "route_netmask_1",
                "route_network_1",
                "ifconfig_remote",
                "ifconfig_local",
                "foreign_option_2",
                "foreign_option_1",
                "tls_id_0",
                "X509_0_CN",
                "X509_0_C",
                "tls_id_1",
                "X509_1_CN",
                "proto_1",
                "remote_1",
                "proto_2",
                "remote_2",
            ]
        );
    }

    #[test]
    fn block_is_framed_by_event_and_end() {
        let mut env = Env::new();
        env.set("dev", "tun0");
        assert_eq!(
            updown_lines("DOWN", &env, None),
            [">UPDOWN:DOWN", ">UPDOWN:ENV,dev=tun0", ">UPDOWN:ENV,END"]
        );
        assert_eq!(
            updown_lines("UP", &Env::new(), Some("script_type")),
            [">UPDOWN:UP", ">UPDOWN:ENV,END"]
        );
        env.set("redirect_gateway", "0");
        env.set("script_type", "route-up");
        assert_eq!(
            updown_lines("DOWN", &env, Some("script_type"))[1..3],
            [
                ">UPDOWN:ENV,script_type=route-up",
                ">UPDOWN:ENV,redirect_gateway=0"
            ]
        );
        assert_eq!(
            updown_lines("DOWN", &env, None)[1..3],
            [
                ">UPDOWN:ENV,redirect_gateway=0",
                ">UPDOWN:ENV,script_type=route-up"
            ]
        );
    }
}
