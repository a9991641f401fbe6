//! Which routes a push plan needs, and what to add and delete to get there
//! from what is installed: pure, so reconnects can keep what stays the same.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::plan::{PushPlan, REDIRECT_IPV6_NETWORKS};
use crate::netconfig::prefix_len;

/// One route the client installs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// An IPv4 route through `dev` (the tunnel, or the underlay for the host
    /// route to the server).
    V4 {
        net: Ipv4Addr,
        prefix: u32,
        via: Option<Ipv4Addr>,
        dev: String,
        metric: Option<u32>,
    },
    /// An `unreachable` IPv6 route (`block-ipv6`).
    Unreachable6 { net: Ipv6Addr, prefix: u8 },
    /// An IPv6 route through `dev` (the tunnel, or the underlay for the host
    /// route to an IPv6 server).
    V6 {
        net: Ipv6Addr,
        prefix: u8,
        via: Option<Ipv6Addr>,
        dev: String,
        metric: Option<u32>,
    },
}

/// [`NetGateway`] for IPv6: how an IPv6 server was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetGateway6 {
    pub via: Option<Ipv6Addr>,
    pub dev: String,
}

/// Whether `addr` is inside `net/prefix`.
pub fn covers6(net: Ipv6Addr, prefix: u8, addr: Ipv6Addr) -> bool {
    let mask = u128::MAX
        .checked_shl(128 - u32::from(prefix.min(128)))
        .unwrap_or(0);
    u128::from(net) & mask == u128::from(addr) & mask
}

/// The IPv6 routes `plan` sends into the tunnel (`route-ipv6` lines, then
/// `redirect-gateway ipv6`'s), as (network, bits, metric): the lines also
/// without an IPv6 address in the tunnel, as 2.6 tries them.
pub fn tunnel_routes6(plan: &PushPlan) -> Vec<(Ipv6Addr, u8, Option<u32>)> {
    let mut out: Vec<_> = plan
        .routes6
        .iter()
        .map(|r| (r.network, r.bits, r.metric))
        .collect();
    if plan.redirect.as_ref().is_some_and(|r| r.ipv6) {
        out.extend(REDIRECT_IPV6_NETWORKS.iter().map(|&(n, b)| (n, b, None)));
    }
    out
}

/// Whether an IPv6 server needs a host route around the tunnel: one of the
/// tunnel's IPv6 routes covers it (2.6's `route_ipv6_match_host`).
pub fn server6_needs_host_route(plan: &PushPlan, server: Ipv6Addr) -> bool {
    tunnel_routes6(plan)
        .iter()
        .any(|&(net, bits, _)| covers6(net, bits, server))
}

/// How the server was reached before the tunnel redirected anything: the
/// gateway and device that the host routes around the tunnel use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetGateway {
    pub via: Option<Ipv4Addr>,
    pub dev: String,
}

/// A /32 to `dst` outside the tunnel.
pub fn host_route(dst: Ipv4Addr, net_gateway: &NetGateway) -> Route {
    Route::V4 {
        net: dst,
        prefix: 32,
        via: net_gateway.via,
        dev: net_gateway.dev.clone(),
        metric: None,
    }
}

/// The routes `plan` asks for, in the order they are added: first the ones
/// that keep the tunnel's own packets outside it, then the redirect.
/// `net_gateway` is needed (and only used) when IPv4 is redirected.
pub fn wanted_routes(
    plan: &PushPlan,
    tun: &str,
    server: Ipv4Addr,
    net_gateway: Option<&NetGateway>,
) -> Vec<Route> {
    wanted_routes_dual(plan, tun, IpAddr::V4(server), net_gateway, None)
}

/// [`wanted_routes`] for a server of either family; `net_gateway6` is needed
/// (and only used) when an IPv6 server is covered by the tunnel's IPv6 routes:
/// it gets a /128 around the tunnel with metric 1, as 2.6 adds it.
pub fn wanted_routes_dual(
    plan: &PushPlan,
    tun: &str,
    server: IpAddr,
    net_gateway: Option<&NetGateway>,
    net_gateway6: Option<&NetGateway6>,
) -> Vec<Route> {
    let mut out = Vec::new();
    if let (IpAddr::V6(server6), Some(ng6)) = (server, net_gateway6)
        && server6_needs_host_route(plan, server6)
    {
        out.push(Route::V6 {
            net: server6,
            prefix: 128,
            via: ng6.via,
            dev: ng6.dev.clone(),
            metric: Some(1),
        });
    }
    let into_tun = |net: Ipv4Addr, prefix: u32, via: Option<Ipv4Addr>, metric| Route::V4 {
        net,
        prefix,
        via,
        dev: tun.to_owned(),
        metric,
    };
    if let Some(r) = &plan.redirect
        && r.ipv4
        && let Some(ng) = net_gateway
    {
        // No IPv4 host route to an IPv6 server (2.6: "remote_host protocol
        // differs from tunneled").
        if !r.local
            && let IpAddr::V4(server) = server
        {
            out.push(host_route(server, ng));
        }
        if r.bypass_dns {
            for dns in &plan.dns.servers {
                if let std::net::IpAddr::V4(v4) = dns {
                    out.push(host_route(*v4, ng));
                }
            }
        }
    }
    for r in &plan.routes {
        out.push(into_tun(
            r.network,
            prefix_len(r.netmask),
            r.gateway,
            r.metric,
        ));
    }
    if let Some(r) = &plan.redirect
        && r.ipv4
    {
        for net in [Ipv4Addr::new(0, 0, 0, 0), Ipv4Addr::new(128, 0, 0, 0)] {
            // No metric, whatever route-metric says (2.6's add_route3).
            out.push(into_tun(net, 1, plan.gateway, None));
        }
    }
    for (net, prefix, metric) in tunnel_routes6(plan) {
        out.push(Route::V6 {
            net,
            prefix,
            via: None,
            dev: tun.to_owned(),
            metric,
        });
    }
    if let Some(r) = &plan.redirect
        && r.block_ipv6
    {
        for net in [
            Ipv6Addr::UNSPECIFIED,
            Ipv6Addr::new(0x8000, 0, 0, 0, 0, 0, 0, 0),
        ] {
            out.push(Route::Unreachable6 { net, prefix: 1 });
        }
    }
    let mut unique = Vec::with_capacity(out.len());
    for r in out {
        if !unique.contains(&r) {
            unique.push(r);
        }
    }
    unique
}

/// What to change in the routing table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RouteChanges {
    /// Installed routes no longer wanted, deleted first.
    pub delete: Vec<Route>,
    /// Wanted routes not installed yet, added in this order.
    pub add: Vec<Route>,
}

/// The changes from `installed` (routes we added and still own) to `wanted`;
/// routes in both are kept untouched, so nothing leaks while they would be
/// deleted and added again.
pub fn route_changes(installed: &[Route], wanted: &[Route]) -> RouteChanges {
    RouteChanges {
        delete: installed
            .iter()
            .filter(|r| !wanted.contains(r))
            .cloned()
            .collect(),
        add: wanted
            .iter()
            .filter(|r| !installed.contains(r))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovpn_proto::push::PushReply;

    const SERVER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    fn plan(text: &str) -> PushPlan {
        PushPlan::from_reply(&PushReply::parse(text).unwrap(), 1500)
    }

    fn lan() -> NetGateway {
        NetGateway {
            via: Some(Ipv4Addr::new(192, 168, 1, 1)),
            dev: "eth0".into(),
        }
    }

    fn v4(net: [u8; 4], prefix: u32, via: Option<[u8; 4]>, dev: &str) -> Route {
        Route::V4 {
            net: net.into(),
            prefix,
            via: via.map(Ipv4Addr::from),
            dev: dev.into(),
            metric: None,
        }
    }

    const BASE: &str =
        "PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ifconfig 10.8.0.2 255.255.255.0";

    #[test]
    fn redirect_gateway_routes_around_and_into_the_tunnel() {
        let p = plan(&format!(
            "{BASE},route 10.99.0.0 255.255.255.0,redirect-gateway def1 block-ipv6"
        ));
        let w = wanted_routes(&p, "tun0", SERVER, Some(&lan()));
        assert_eq!(
            w,
            vec![
                v4([192, 0, 2, 1], 32, Some([192, 168, 1, 1]), "eth0"),
                v4([10, 99, 0, 0], 24, Some([10, 8, 0, 1]), "tun0"),
                v4([0, 0, 0, 0], 1, Some([10, 8, 0, 1]), "tun0"),
                v4([128, 0, 0, 0], 1, Some([10, 8, 0, 1]), "tun0"),
                Route::Unreachable6 {
                    net: Ipv6Addr::UNSPECIFIED,
                    prefix: 1
                },
                Route::Unreachable6 {
                    net: "8000::".parse().unwrap(),
                    prefix: 1
                },
            ]
        );
    }

    #[test]
    fn local_and_bypass_dns_flags() {
        let p = plan(&format!(
            "{BASE},dhcp-option DNS 9.9.9.9,redirect-gateway def1 local bypass-dns"
        ));
        let w = wanted_routes(&p, "tun0", SERVER, Some(&lan()));
        assert_eq!(w[0], v4([9, 9, 9, 9], 32, Some([192, 168, 1, 1]), "eth0"));
        assert_eq!(w.len(), 3, "{w:?}");
    }

    #[test]
    fn reconnect_with_the_same_push_changes_nothing() {
        let p = plan(&format!(
            "{BASE},route 10.99.0.0 255.255.255.0,redirect-gateway def1"
        ));
        let w = wanted_routes(&p, "tun0", SERVER, Some(&lan()));
        assert_eq!(route_changes(&w, &w), RouteChanges::default());
    }

    #[test]
    fn changed_push_deletes_only_what_went_away() {
        let old = plan(&format!(
            "{BASE},route 10.99.0.0 255.255.255.0,redirect-gateway def1"
        ));
        let new = plan(&format!(
            "{BASE},route 10.98.0.0 255.255.255.0,redirect-gateway def1"
        ));
        let installed = wanted_routes(&old, "tun0", SERVER, Some(&lan()));
        // Another server of the same profile: a new host route as well.
        let other = Ipv4Addr::new(192, 0, 2, 2);
        let c = route_changes(
            &installed,
            &wanted_routes(&new, "tun0", other, Some(&lan())),
        );
        assert_eq!(
            c.delete,
            vec![
                v4([192, 0, 2, 1], 32, Some([192, 168, 1, 1]), "eth0"),
                v4([10, 99, 0, 0], 24, Some([10, 8, 0, 1]), "tun0"),
            ]
        );
        assert_eq!(
            c.add,
            vec![
                v4([192, 0, 2, 2], 32, Some([192, 168, 1, 1]), "eth0"),
                v4([10, 98, 0, 0], 24, Some([10, 8, 0, 1]), "tun0"),
            ]
        );
    }

    #[test]
    fn first_connection_adds_everything() {
        let p = plan(&format!("{BASE},route 10.99.0.0 255.255.255.0"));
        let w = wanted_routes(&p, "tun0", SERVER, None);
        let c = route_changes(&[], &w);
        assert!(c.delete.is_empty());
        assert_eq!(c.add, w);
    }
}
