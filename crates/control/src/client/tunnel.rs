//! The tunnel's system configuration (address, routes, DNS) and what of it
//! ferrovpn owns. It outlives a connection: with `persist-tun` a reconnect
//! keeps it all (as 2.6 keeps the tun and its routes on SIGUSR1 restarts), so
//! traffic meant for the tunnel never leaves outside it during backoff.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context;
use tracing::{info, warn};

use super::dns::{self, AppliedDns, DnsBackend};
use super::plan::{PushPlan, Topology};
use super::routes::{NetGateway, Route, host_route, route_changes, wanted_routes};
use crate::netconfig::{NetConfig, NoExec, RouteAdded};

/// System state ferrovpn set up for the tunnel.
pub struct Tunnel {
    net: NetConfig,
    dns_backend: DnsBackend,
    no_exec: NoExec,
    /// The device the state below belongs to.
    dev: String,
    address: Option<(Topology, Ipv4Addr, Ipv4Addr, u16)>,
    /// Routes we added (never ones that were there before us), in order.
    routes: Vec<Route>,
    /// The way to the server before any redirect, found once.
    net_gateway: Option<NetGateway>,
    dns: Option<(super::plan::DnsPlan, AppliedDns)>,
}

impl Tunnel {
    pub fn new(net: NetConfig, dns_backend: DnsBackend, no_exec: NoExec) -> Tunnel {
        Tunnel {
            net,
            dns_backend,
            no_exec,
            dev: String::new(),
            address: None,
            routes: Vec::new(),
            net_gateway: None,
            dns: None,
        }
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
        if self.dev != dev {
            // A different device: whatever we set up went away with the old one.
            self.forget();
            self.dev = dev.to_owned();
        }
        let IpAddr::V4(server) = server else {
            anyhow::bail!("IPv6 server address");
        };
        if self.no_exec.ifconfig {
            info!(
                "ifconfig-noexec: {dev} left unconfigured ({} {}, mtu {})",
                plan.local, plan.netmask_or_remote, plan.mtu
            );
        } else if self.address != Some(plan.address()) {
            if self.address.is_some() {
                self.net.flush_addresses(dev).await?;
            }
            match plan.topology {
                Topology::Subnet => {
                    self.net
                        .configure_subnet(dev, plan.local, plan.netmask_or_remote, plan.mtu)
                        .await?
                }
                Topology::PointToPoint => {
                    self.net
                        .configure_p2p(dev, plan.local, plan.netmask_or_remote, plan.mtu)
                        .await?
                }
            }
            self.address = Some(plan.address());
        }
        if self.no_exec.routes {
            for r in wanted_routes(plan, dev, server, None) {
                info!("route-noexec: not adding route {r:?}");
            }
        } else {
            self.apply_routes(dev, server, plan).await?;
        }
        for w in &plan.warnings {
            warn!("{w}");
        }
        self.apply_dns(plan);
        Ok(())
    }

    async fn apply_routes(
        &mut self,
        dev: &str,
        server: Ipv4Addr,
        plan: &PushPlan,
    ) -> anyhow::Result<()> {
        if plan.redirect.as_ref().is_some_and(|r| r.ipv4) && self.net_gateway.is_none() {
            let (via, dev) = self.net.route_to(server).await?;
            self.net_gateway = Some(NetGateway { via, dev });
        }
        let wanted = wanted_routes(plan, dev, server, self.net_gateway.as_ref());
        let changes = route_changes(&self.routes, &wanted);
        for r in &changes.delete {
            self.delete(r).await;
        }
        self.routes.retain(|r| !changes.delete.contains(r));
        for r in changes.add {
            self.add(r).await?;
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

    fn apply_dns(&mut self, plan: &PushPlan) {
        if self.dns.as_ref().is_some_and(|(p, _)| *p == plan.dns) {
            return;
        }
        if let Some((_, applied)) = self.dns.take() {
            dns::restore(applied);
        }
        if !plan.dns.is_empty()
            && let Some(applied) = dns::apply(&self.dns_backend, &self.dev, &plan.dns)
        {
            self.dns = Some((plan.dns.clone(), applied));
        }
    }

    /// Before connecting to `server`: when the redirect routes are kept
    /// (persist-tun), the handshake must still go around the tunnel.
    pub async fn route_around(&mut self, server: IpAddr) {
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
        let r = host_route(server, &ng);
        if !self.routes.contains(&r)
            && let Err(e) = self.add(r).await
        {
            warn!("no host route to the server outside the tunnel: {e:#}");
        }
    }

    /// Undo everything: routes in reverse order, DNS, addresses.
    pub async fn tear_down(&mut self) {
        if let Some((_, applied)) = self.dns.take() {
            dns::restore(applied);
        }
        while let Some(r) = self.routes.pop() {
            self.delete(&r).await;
        }
        if self.address.take().is_some()
            && let Err(e) = self.net.flush_addresses(&self.dev).await
        {
            info!("{e:#}");
        }
        self.net_gateway = None;
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
        }
    }

    /// The device is gone and took its routes and addresses with it; host
    /// routes over the underlay and DNS are still ours to undo.
    pub fn forget(&mut self) {
        let dev = std::mem::take(&mut self.dev);
        self.routes.retain(|r| match r {
            Route::V4 { dev: d, .. } => *d != dev,
            Route::Unreachable6 { .. } => true,
        });
        self.address = None;
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
