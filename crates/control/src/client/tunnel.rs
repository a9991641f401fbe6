//! The tunnel's system configuration (address, routes, DNS) and what of it
//! ferrovpn owns. It outlives a connection: with `persist-tun` a reconnect
//! keeps it all (as 2.6 keeps the tun and its routes on SIGUSR1 restarts), so
//! traffic meant for the tunnel never leaves outside it during backoff.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context;
use tracing::{info, warn};

use super::dns::{self, AppliedDns, DnsBackend};
use super::plan::{Ifconfig6, PushPlan, Topology};
use super::routes::{
    NetGateway, NetGateway6, Route, host_route, route_changes, server6_needs_host_route,
    wanted_routes_dual,
};
use crate::netconfig::{NetConfig, NoExec, RouteAdded};

/// System state ferrovpn set up for the tunnel.
pub struct Tunnel {
    net: NetConfig,
    dns_backend: DnsBackend,
    no_exec: NoExec,
    /// The device the state below belongs to.
    dev: String,
    address: Option<(Topology, Option<super::plan::Ifconfig4>, u16)>,
    /// The IPv6 address we set (`ifconfig-ipv6`).
    address6: Option<Ifconfig6>,
    /// Routes we added (never ones that were there before us), in order.
    routes: Vec<Route>,
    /// The way to the server before any redirect, found once.
    net_gateway: Option<NetGateway>,
    /// The same for an IPv6 server.
    net_gateway6: Option<NetGateway6>,
    dns: Option<(super::plan::DnsPlan, AppliedDns)>,
    /// A route of the last [`Tunnel::apply`] could not be added: 2.6 logs
    /// it, carries on and reports `CONNECTED,ROUTE_ERROR`.
    route_errors: bool,
}

impl Tunnel {
    pub fn new(net: NetConfig, dns_backend: DnsBackend, no_exec: NoExec) -> Tunnel {
        Tunnel {
            net,
            dns_backend,
            no_exec,
            dev: String::new(),
            address: None,
            address6: None,
            routes: Vec::new(),
            net_gateway: None,
            net_gateway6: None,
            dns: None,
            route_errors: false,
        }
    }

    /// Whether a route of the last [`Tunnel::apply`] failed to be added.
    pub fn route_errors(&self) -> bool {
        self.route_errors
    }

    /// The default route's gateway (0.0.0.0 without one), as 2.6's
    /// `route_net_gateway`.
    pub async fn default_gateway4(&self) -> std::net::Ipv4Addr {
        self.net.default_gateway4().await
    }

    /// The gateway of the route to `::` (2.6's `net_gateway_ipv6`, looked
    /// up as its netlink `net_route_v6_best_gw`: a `::/128` route query),
    /// `None` without one.
    pub async fn default_gateway6(&self) -> Option<std::net::Ipv6Addr> {
        self.net
            .route_to6(std::net::Ipv6Addr::UNSPECIFIED)
            .await
            .ok()
            .and_then(|(via, _)| via)
    }

    /// Whether any route or address is in place.
    pub fn is_configured(&self) -> bool {
        self.address.is_some() || !self.routes.is_empty()
    }

    /// Make the system match `plan` on device `dev`, changing only what differs
    /// from what is in place.
    pub async fn apply(
        &mut self,
        dev: &str,
        server: IpAddr,
        plan: &PushPlan,
    ) -> anyhow::Result<()> {
        // As 2.6: a redirect-gateway with no IPv4 gateway is a route error.
        self.route_errors = plan.redirect_failed;
        if self.dev != dev {
            // A different device: whatever we set up went away with the old one.
            self.forget();
            self.dev = dev.to_owned();
        }
        if self.no_exec.ifconfig {
            info!(
                "ifconfig-noexec: {dev} left unconfigured ({:?}, mtu {})",
                plan.ipv4, plan.mtu
            );
        } else if self.address != Some(plan.address()) {
            if self.address.is_some() {
                self.net.flush_addresses(dev).await?;
            }
            match (plan.topology, plan.ipv4) {
                (Topology::Subnet, Some(v4)) => {
                    self.net
                        .configure_subnet(dev, v4.local, v4.netmask_or_remote, plan.mtu)
                        .await?
                }
                (Topology::PointToPoint, Some(v4)) => {
                    self.net
                        .configure_p2p(dev, v4.local, v4.netmask_or_remote, plan.mtu)
                        .await?
                }
                // IPv6 only: the link is brought up for the IPv6 address.
                (_, None) if plan.ipv6.is_some() => self.net.link_up(dev, plan.mtu).await?,
                // No address from anywhere: 2.6 configures nothing
                // ("do_ifconfig, ipv4=0, ipv6=0") and the link stays down.
                (_, None) => info!("no ifconfig or ifconfig-ipv6: {dev} is left unconfigured"),
            }
            self.address = Some(plan.address());
        }
        if !self.no_exec.ifconfig && self.address6 != plan.ipv6 {
            if self.address6.take().is_some() {
                self.net.flush_addresses6(dev).await?;
            }
            if let Some(v6) = plan.ipv6 {
                self.net.add_address6(dev, v6.local, v6.bits).await?;
                self.address6 = Some(v6);
            }
        }
        if self.no_exec.routes {
            for r in wanted_routes_dual(plan, dev, server, None, None) {
                info!("route-noexec: not adding route {r:?}");
            }
        } else {
            self.apply_routes(dev, server, plan).await?;
        }
        for w in &plan.warnings {
            warn!("{w}");
        }
        self.apply_dns(plan).await;
        Ok(())
    }

    async fn apply_routes(
        &mut self,
        dev: &str,
        server: IpAddr,
        plan: &PushPlan,
    ) -> anyhow::Result<()> {
        match server {
            IpAddr::V4(server4) => {
                if plan.redirect.as_ref().is_some_and(|r| r.ipv4) && self.net_gateway.is_none() {
                    let (via, dev) = self.net.route_to(server4).await?;
                    self.net_gateway = Some(NetGateway { via, dev });
                }
            }
            IpAddr::V6(server6) => {
                if server6_needs_host_route(plan, server6) && self.net_gateway6.is_none() {
                    match self.net.route_to6(server6).await {
                        Ok((via, dev)) => self.net_gateway6 = Some(NetGateway6 { via, dev }),
                        // 2.6 warns and carries on ("expect failure").
                        Err(e) => warn!(
                            "an IPv6 route covers the server {server6}, but the way to it is unknown ({e:#}): expect failure"
                        ),
                    }
                }
            }
        }
        let wanted = wanted_routes_dual(
            plan,
            dev,
            server,
            self.net_gateway.as_ref(),
            self.net_gateway6.as_ref(),
        );
        let changes = route_changes(&self.routes, &wanted);
        for r in &changes.delete {
            self.delete(r).await;
        }
        self.routes.retain(|r| !changes.delete.contains(r));
        if !plan.routes.is_empty() && plan.ipv4.is_none() {
            // 2.6's notice (route.c `add_routes`), then it tries anyway.
            info!(
                "WARNING: OpenVPN was configured to add an IPv4 route. However, no IPv4 has been configured for {dev}, therefore the route installation may fail or may not work as expected."
            );
        }
        if !plan.routes6.is_empty() && plan.ipv6.is_none() {
            info!(
                "WARNING: OpenVPN was configured to add an IPv6 route. However, no IPv6 has been configured for {dev}, therefore the route installation may fail or may not work as expected."
            );
        }
        for r in changes.add {
            // As 2.6: a route the kernel refuses is logged and the others
            // are still added; the connection completes with ROUTE_ERROR.
            if let Err(e) = self.add(r).await {
                warn!("ERROR: Linux route add command failed: {e:#}");
                self.route_errors = true;
            }
        }
        Ok(())
    }

    async fn add(&mut self, r: Route) -> anyhow::Result<()> {
        let added = match &r {
            Route::V4 {
                net,
                prefix,
                via,
                dev,
                metric,
            } => {
                self.net
                    .add_route(dev, *net, prefix_mask(*prefix), *via, *metric)
                    .await
            }
            Route::Unreachable6 { net, prefix } => self.net.add_unreachable6(*net, *prefix).await,
            Route::V6 {
                net,
                prefix,
                via,
                dev,
                metric,
            } => {
                self.net
                    .add_route6_metric(dev, *net, *prefix, *via, *metric)
                    .await
            }
        }
        .with_context(|| format!("adding route {r:?}"))?;
        match added {
            RouteAdded::Added => self.routes.push(r),
            RouteAdded::AlreadyPresent => {
                warn!(
                    "route {r:?} already exists; left as it is (not replaced, not deleted at exit)"
                )
            }
        }
        Ok(())
    }

    async fn apply_dns(&mut self, plan: &PushPlan) {
        if self.dns.as_ref().is_some_and(|(p, _)| *p == plan.dns) {
            return;
        }
        if let Some((_, applied)) = self.dns.take() {
            dns::restore(applied).await;
        }
        if plan.dns.is_empty() {
            return;
        }
        let ifindex = self.net.index(&self.dev).await.ok();
        if let Some(applied) = dns::apply(&self.dns_backend, &self.dev, ifindex, &plan.dns).await {
            self.dns = Some((plan.dns.clone(), applied));
        }
    }

    /// Before connecting to `server`: when the redirect routes are kept
    /// (persist-tun), the handshake must still go around the tunnel.
    pub async fn route_around(&mut self, server: IpAddr) {
        if let (IpAddr::V6(server6), Some(ng6)) = (server, self.net_gateway6.clone()) {
            let covered = self.routes.iter().any(|r| {
                matches!(r, Route::V6 { net, prefix, dev, .. }
                    if *dev == self.dev && super::routes::covers6(*net, *prefix, server6))
            });
            let r = Route::V6 {
                net: server6,
                prefix: 128,
                via: ng6.via,
                dev: ng6.dev,
                metric: Some(1),
            };
            if covered {
                self.add_server_host_route(r).await;
            }
            return;
        }
        let (IpAddr::V4(server), Some(ng)) = (server, self.net_gateway.clone()) else {
            return;
        };
        if !self
            .routes
            .iter()
            .any(|r| matches!(r, Route::V4 { prefix: 1, .. }))
        {
            return;
        }
        self.add_server_host_route(host_route(server, &ng)).await;
    }

    /// Add `r`, the host route to the server outside the tunnel, unless it
    /// is in place; without it the handshake may still find its way, so a
    /// failure is only warned about.
    async fn add_server_host_route(&mut self, r: Route) {
        if !self.routes.contains(&r)
            && let Err(e) = self.add(r).await
        {
            warn!("no host route to the server outside the tunnel: {e:#}");
        }
    }

    /// Undo everything: routes in reverse order, DNS, addresses.
    pub async fn tear_down(&mut self) {
        if let Some((_, applied)) = self.dns.take() {
            dns::restore(applied).await;
        }
        while let Some(r) = self.routes.pop() {
            self.delete(&r).await;
        }
        if self.address.take().is_some()
            && let Err(e) = self.net.flush_addresses(&self.dev).await
        {
            info!("{e:#}");
        }
        if self.address6.take().is_some()
            && let Err(e) = self.net.flush_addresses6(&self.dev).await
        {
            info!("{e:#}");
        }
        self.net_gateway = None;
        self.net_gateway6 = None;
    }

    async fn delete(&self, r: &Route) {
        match r {
            Route::V4 {
                net,
                prefix,
                via,
                dev,
                metric,
            } => self.net.del_route(*net, *prefix, *via, dev, *metric).await,
            Route::Unreachable6 { net, prefix } => self.net.del_unreachable6(*net, *prefix).await,
            Route::V6 {
                net,
                prefix,
                via,
                dev,
                metric,
            } => {
                self.net
                    .del_route6_metric(*net, *prefix, *via, dev, *metric)
                    .await
            }
        }
    }

    /// The device is gone and took its routes and addresses with it; host
    /// routes over the underlay and DNS are still ours to undo.
    pub fn forget(&mut self) {
        let dev = std::mem::take(&mut self.dev);
        self.routes.retain(|r| match r {
            Route::V4 { dev: d, .. } | Route::V6 { dev: d, .. } => *d != dev,
            Route::Unreachable6 { .. } => true,
        });
        self.address = None;
        self.address6 = None;
    }
}

fn prefix_mask(prefix: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix.min(32)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_masks() {
        assert_eq!(prefix_mask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(prefix_mask(1), Ipv4Addr::new(128, 0, 0, 0));
        assert_eq!(prefix_mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(prefix_mask(32), Ipv4Addr::new(255, 255, 255, 255));
    }
}
