//! Interface and route configuration over rtnetlink, as OpenVPN 2.6 itself
//! does on Linux (its `sitnl` backend). Only the control plane calls this,
//! never the data path; every call is async on the control runtime, so a
//! change never blocks the sessions it serves.
//!
//! The requests say what `ip(8)` would say for the same change: a route
//! without a gateway is link-scoped, routes carry `proto boot`, an address
//! replaces an equal one, and deleting a route matches its prefix, gateway
//! and device only. A route that already exists is reported
//! ([`RouteAdded::AlreadyPresent`]) and never replaced, so it is never
//! deleted by us either.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, bail};
use futures_util::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use rtnetlink::{Handle, LinkUnspec};
use tracing::{debug, info};

/// `ifconfig-noexec` / `route-noexec`: what is left to the administrator
/// (2.6 hands it to scripts in environment variables).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoExec {
    /// The tun device's address, MTU and link state are left alone.
    pub ifconfig: bool,
    /// No route is added.
    pub routes: bool,
}

/// Prefix length of a contiguous IPv4 netmask.
pub fn prefix_len(mask: Ipv4Addr) -> u32 {
    u32::from(mask).leading_ones()
}

/// What [`NetConfig::add_route`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAdded {
    /// The route is new and ours to delete later.
    Added,
    /// An equal prefix was already in the table: it was left as it was and
    /// must not be deleted by us.
    AlreadyPresent,
}

/// A route, as the kernel keys it: destination prefix, gateway, device.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RouteSpec {
    dst: IpAddr,
    prefix: u8,
    via: Option<IpAddr>,
    /// Output device (name, index); `None` for an `unreachable` route.
    dev: Option<(String, u32)>,
    kind: RouteType,
    /// `metric M` (`RTA_PRIORITY`); `None` is the kernel's 0.
    metric: Option<u32>,
}

impl std::fmt::Display for RouteSpec {
    /// In `ip route` words, for logs and errors.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind == RouteType::Unreachable {
            f.write_str("unreachable ")?;
        }
        write!(f, "{}/{}", self.dst, self.prefix)?;
        if let Some(gw) = self.via {
            write!(f, " via {gw}")?;
        }
        if let Some((name, _)) = &self.dev {
            write!(f, " dev {name}")?;
        }
        if let Some(m) = self.metric {
            write!(f, " metric {m}")?;
        }
        Ok(())
    }
}

fn family(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The RTM_NEWROUTE message for `spec`, with `ip route add`'s defaults:
/// main table, `proto boot`, link scope when no gateway.
fn new_route_message(spec: &RouteSpec) -> RouteMessage {
    let mut msg = route_message(spec);
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = if spec.via.is_none() && spec.kind == RouteType::Unicast {
        RouteScope::Link
    } else {
        RouteScope::Universe
    };
    msg
}

/// The RTM_DELROUTE message for `spec`, matching as `ip route del` does:
/// any protocol and scope, the given prefix, gateway and device.
fn del_route_message(spec: &RouteSpec) -> RouteMessage {
    let mut msg = route_message(spec);
    msg.header.protocol = RouteProtocol::Unspec;
    msg.header.scope = RouteScope::NoWhere;
    msg
}

fn route_message(spec: &RouteSpec) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = family(spec.dst);
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.kind = spec.kind;
    msg.header.destination_prefix_length = spec.prefix;
    msg.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(spec.dst)));
    if let Some(gw) = spec.via {
        msg.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    if let Some((_, index)) = spec.dev {
        msg.attributes.push(RouteAttribute::Oif(index));
    }
    if let Some(m) = spec.metric {
        msg.attributes.push(RouteAttribute::Priority(m));
    }
    msg
}

/// The RTM_NEWADDR message `ip addr replace LOCAL[/PREFIX] [peer PEER]`
/// sends: `IFA_LOCAL` is ours, `IFA_ADDRESS` the peer's (ours without a
/// peer), no broadcast.
fn address_message(index: u32, local: IpAddr, prefix: u8, peer: Option<IpAddr>) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = family(local);
    msg.header.prefix_len = prefix;
    msg.header.index = index;
    msg.header.scope = AddressScope::Universe;
    msg.attributes.push(AddressAttribute::Local(local));
    msg.attributes
        .push(AddressAttribute::Address(peer.unwrap_or(local)));
    msg
}

/// Whether a netlink request failed with `kind` (EEXIST, ESRCH, ...).
fn is_errno(e: &rtnetlink::Error, kind: io::ErrorKind) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.to_io().kind() == kind)
}

/// A netlink connection to the kernel's routing subsystem, in the network
/// namespace the process runs in. Cheap to clone; the connection closes when
/// the last clone goes.
#[derive(Clone)]
pub struct NetConfig {
    handle: Handle,
}

impl NetConfig {
    /// Open the connection; its I/O runs as a task on the current tokio
    /// runtime (must be called inside one).
    pub fn connect() -> anyhow::Result<NetConfig> {
        let (connection, handle, _) =
            rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(connection);
        Ok(NetConfig { handle })
    }

    /// The index of device `dev` (in this process's network namespace,
    /// which /sys may not show).
    pub async fn index(&self, dev: &str) -> anyhow::Result<u32> {
        let link = self
            .handle
            .link()
            .get()
            .match_name(dev.to_owned())
            .execute()
            .try_next()
            .await
            .with_context(|| format!("looking up device {dev}"))?;
        match link {
            Some(l) => Ok(l.header.index),
            None => bail!("no device {dev}"),
        }
    }

    /// The name of the device with index `index`.
    async fn name(&self, index: u32) -> anyhow::Result<String> {
        let link = self
            .handle
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_next()
            .await
            .with_context(|| format!("looking up device {index}"))?
            .with_context(|| format!("no device with index {index}"))?;
        link.attributes
            .into_iter()
            .find_map(|a| match a {
                LinkAttribute::IfName(name) => Some(name),
                _ => None,
            })
            .with_context(|| format!("device {index} has no name"))
    }

    /// `ip link set dev DEV up mtu MTU`.
    pub async fn link_up(&self, dev: &str, mtu: u16) -> anyhow::Result<()> {
        info!("link {dev} up mtu {mtu}");
        let index = self.index(dev).await?;
        self.handle
            .link()
            .set(
                LinkUnspec::new_with_index(index)
                    .up()
                    .mtu(u32::from(mtu))
                    .build(),
            )
            .execute()
            .await
            .with_context(|| format!("setting {dev} up with mtu {mtu}"))
    }

    async fn replace_address(
        &self,
        dev: &str,
        local: IpAddr,
        prefix: u8,
        peer: Option<IpAddr>,
    ) -> anyhow::Result<()> {
        let what = match peer {
            Some(p) => format!("{local} peer {p}"),
            None => format!("{local}/{prefix}"),
        };
        info!("address {what} on {dev}");
        let index = self.index(dev).await?;
        let mut request = self.handle.address().add(index, local, prefix).replace();
        *request.message_mut() = address_message(index, local, prefix, peer);
        request
            .execute()
            .await
            .with_context(|| format!("adding address {what} to {dev}"))
    }

    /// Bring the tunnel up with an address in `topology subnet` form.
    pub async fn configure_subnet(
        &self,
        dev: &str,
        addr: Ipv4Addr,
        mask: Ipv4Addr,
        mtu: u16,
    ) -> anyhow::Result<()> {
        self.link_up(dev, mtu).await?;
        // A contiguous IPv4 mask has at most 32 leading ones.
        let prefix = prefix_len(mask) as u8;
        self.replace_address(dev, addr.into(), prefix, None).await
    }

    /// `topology net30` / p2p: a point-to-point address pair.
    pub async fn configure_p2p(
        &self,
        dev: &str,
        local: Ipv4Addr,
        remote: Ipv4Addr,
        mtu: u16,
    ) -> anyhow::Result<()> {
        self.link_up(dev, mtu).await?;
        self.replace_address(dev, local.into(), 32, Some(remote.into()))
            .await
    }

    /// Put `addr/prefix` on `dev` (replacing an equal one): `ip -6 addr
    /// replace`. The link must be up ([`NetConfig::link_up`]).
    pub async fn add_address6(&self, dev: &str, addr: Ipv6Addr, prefix: u8) -> anyhow::Result<()> {
        self.replace_address(dev, addr.into(), prefix, None).await
    }

    /// Remove every address of `family` from `dev` (IPv6: the global ones;
    /// link-local addresses belong to the kernel).
    async fn flush(&self, dev: &str, family: AddressFamily) -> anyhow::Result<()> {
        info!("flush {family:?} addresses of {dev}");
        let index = self.index(dev).await?;
        let addresses: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .with_context(|| format!("listing the addresses of {dev}"))?;
        for a in addresses {
            let kernels =
                family == AddressFamily::Inet6 && a.header.scope != AddressScope::Universe;
            if a.header.family != family || kernels {
                continue;
            }
            match self.handle.address().del(a).execute().await {
                // Gone meanwhile: what we wanted.
                Err(e) if is_errno(&e, io::ErrorKind::AddrNotAvailable) => {}
                r => r.with_context(|| format!("removing an address from {dev}"))?,
            }
        }
        Ok(())
    }

    /// Remove every IPv4 address from the tunnel (client reconnects).
    pub async fn flush_addresses(&self, dev: &str) -> anyhow::Result<()> {
        self.flush(dev, AddressFamily::Inet).await
    }

    /// Remove every global IPv6 address from the tunnel.
    pub async fn flush_addresses6(&self, dev: &str) -> anyhow::Result<()> {
        self.flush(dev, AddressFamily::Inet6).await
    }

    /// Add `spec`; an existing equal route is left alone and reported.
    async fn add(&self, spec: RouteSpec) -> anyhow::Result<RouteAdded> {
        info!("route add {spec}");
        match self
            .handle
            .route()
            .add(new_route_message(&spec))
            .execute()
            .await
        {
            Ok(()) => Ok(RouteAdded::Added),
            Err(e) if is_errno(&e, io::ErrorKind::AlreadyExists) => Ok(RouteAdded::AlreadyPresent),
            Err(e) => Err(e).with_context(|| format!("adding route {spec}")),
        }
    }

    /// Delete `spec`; a route already gone (with its device, say) is not an
    /// error.
    async fn delete(&self, spec: RouteSpec) {
        info!("route del {spec}");
        if let Err(e) = self
            .handle
            .route()
            .del(del_route_message(&spec))
            .execute()
            .await
        {
            debug!("route del {spec}: {e}");
        }
    }

    /// A unicast route `dst/prefix` into `dev`, optionally via a gateway,
    /// with a metric (`None`: the kernel's default).
    async fn unicast(
        &self,
        dev: &str,
        dst: IpAddr,
        prefix: u8,
        via: Option<IpAddr>,
        metric: Option<u32>,
    ) -> anyhow::Result<RouteSpec> {
        Ok(RouteSpec {
            dst,
            prefix,
            via,
            dev: Some((dev.to_owned(), self.index(dev).await?)),
            kind: RouteType::Unicast,
            metric,
        })
    }

    /// Add the unicast route [`NetConfig::unicast`] describes.
    async fn add_unicast(
        &self,
        dev: &str,
        dst: IpAddr,
        prefix: u8,
        via: Option<IpAddr>,
        metric: Option<u32>,
    ) -> anyhow::Result<RouteAdded> {
        let spec = self.unicast(dev, dst, prefix, via, metric).await?;
        self.add(spec).await
    }

    /// Remove the unicast route [`NetConfig::unicast`] describes, if `dev`
    /// is still there.
    async fn delete_unicast(
        &self,
        dev: &str,
        dst: IpAddr,
        prefix: u8,
        via: Option<IpAddr>,
        metric: Option<u32>,
    ) {
        if let Ok(spec) = self.unicast(dev, dst, prefix, via, metric).await {
            self.delete(spec).await;
        }
    }

    /// Route `net/mask` into `dev`, optionally via a gateway, with a metric.
    pub async fn add_route(
        &self,
        dev: &str,
        net: Ipv4Addr,
        mask: Ipv4Addr,
        gateway: Option<Ipv4Addr>,
        metric: Option<u32>,
    ) -> anyhow::Result<RouteAdded> {
        let prefix = prefix_len(mask) as u8;
        let gateway = gateway.map(IpAddr::from);
        self.add_unicast(dev, net.into(), prefix, gateway, metric)
            .await
    }

    /// Route `net/prefix` into `dev`, optionally via a gateway (IPv6).
    pub async fn add_route6(
        &self,
        dev: &str,
        net: Ipv6Addr,
        prefix: u8,
        gateway: Option<Ipv6Addr>,
    ) -> anyhow::Result<RouteAdded> {
        self.add_route6_metric(dev, net, prefix, gateway, None)
            .await
    }

    /// Remove a route added with [`NetConfig::add_route`], matched exactly
    /// (prefix, gateway, device) so a route someone else added for the same
    /// prefix stays; a missing route or device is not an error.
    pub async fn del_route(
        &self,
        net: Ipv4Addr,
        prefix: u32,
        via: Option<Ipv4Addr>,
        dev: &str,
        metric: Option<u32>,
    ) {
        // Prefixes come from masks and pushed routes: at most 32.
        let prefix = prefix.min(32) as u8;
        let via = via.map(IpAddr::from);
        self.delete_unicast(dev, net.into(), prefix, via, metric)
            .await;
    }

    /// [`NetConfig::add_route6`] with a metric (`None`: the kernel's default).
    pub async fn add_route6_metric(
        &self,
        dev: &str,
        net: Ipv6Addr,
        prefix: u8,
        gateway: Option<Ipv6Addr>,
        metric: Option<u32>,
    ) -> anyhow::Result<RouteAdded> {
        let gateway = gateway.map(IpAddr::from);
        self.add_unicast(dev, net.into(), prefix, gateway, metric)
            .await
    }

    /// [`NetConfig::del_route6`] matching a metric as well.
    pub async fn del_route6_metric(
        &self,
        net: Ipv6Addr,
        prefix: u8,
        via: Option<Ipv6Addr>,
        dev: &str,
        metric: Option<u32>,
    ) {
        let via = via.map(IpAddr::from);
        self.delete_unicast(dev, net.into(), prefix, via, metric)
            .await;
    }

    /// [`NetConfig::del_route`] for IPv6.
    pub async fn del_route6(&self, net: Ipv6Addr, prefix: u8, via: Option<Ipv6Addr>, dev: &str) {
        self.del_route6_metric(net, prefix, via, dev, None).await;
    }

    /// The gateway of the main table's IPv4 default route, `0.0.0.0` when
    /// there is none or it has no gateway: what 2.6 reports as
    /// `route_net_gateway` (its `net_route_v4_best_gw` looks for the
    /// default route the same way and reports 0.0.0.0 without one).
    pub async fn default_gateway4(&self) -> Ipv4Addr {
        let mut query = RouteMessage::default();
        query.header.address_family = AddressFamily::Inet;
        // No destination attribute: the request is a dump of every route.
        let mut routes = self.handle.route().get(query).execute();
        // Bounded by the kernel's table; a read error ends the search.
        while let Ok(Some(route)) = routes.try_next().await {
            let main = route.header.table == RouteHeader::RT_TABLE_MAIN
                || route
                    .attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Table(t) if *t == 254));
            if route.header.destination_prefix_length != 0
                || !main
                || route.header.kind != RouteType::Unicast
            {
                continue;
            }
            for a in &route.attributes {
                if let RouteAttribute::Gateway(RouteAddress::Inet(gw)) = a {
                    return *gw;
                }
            }
            return Ipv4Addr::UNSPECIFIED;
        }
        Ipv4Addr::UNSPECIFIED
    }

    /// The gateway and device the kernel uses towards `dst` (`ip route get`).
    async fn route_get(&self, dst: IpAddr) -> anyhow::Result<(Option<IpAddr>, String)> {
        let host = match dst {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let mut query = route_message(&RouteSpec {
            dst,
            prefix: host,
            via: None,
            dev: None,
            kind: RouteType::Unspec,
            metric: None,
        });
        query.header.table = RouteHeader::RT_TABLE_UNSPEC;
        let route = self
            .handle
            .route()
            .get(query)
            .execute()
            .try_next()
            .await
            .with_context(|| format!("no route to {dst}"))?
            .with_context(|| format!("no route to {dst}"))?;
        let mut via = None;
        let mut oif = None;
        for a in route.attributes {
            match a {
                RouteAttribute::Gateway(RouteAddress::Inet(gw)) => via = Some(gw.into()),
                RouteAttribute::Gateway(RouteAddress::Inet6(gw)) => via = Some(gw.into()),
                RouteAttribute::Oif(index) => oif = Some(index),
                _ => {}
            }
        }
        let oif = oif.with_context(|| format!("no route to {dst}"))?;
        Ok((via, self.name(oif).await?))
    }

    /// The current gateway and device towards `dst` (for redirect-gateway's host route).
    pub async fn route_to(&self, dst: Ipv4Addr) -> anyhow::Result<(Option<Ipv4Addr>, String)> {
        let (via, dev) = self.route_get(dst.into()).await?;
        let via = via.and_then(|v| match v {
            IpAddr::V4(v) => Some(v),
            IpAddr::V6(_) => None,
        });
        Ok((via, dev))
    }

    /// [`NetConfig::route_to`] for IPv6.
    pub async fn route_to6(&self, dst: Ipv6Addr) -> anyhow::Result<(Option<Ipv6Addr>, String)> {
        let (via, dev) = self.route_get(dst.into()).await?;
        let via = via.and_then(|v| match v {
            IpAddr::V6(v) => Some(v),
            IpAddr::V4(_) => None,
        });
        Ok((via, dev))
    }

    fn unreachable6(net: Ipv6Addr, prefix: u8) -> RouteSpec {
        RouteSpec {
            dst: net.into(),
            prefix,
            via: None,
            dev: None,
            kind: RouteType::Unreachable,
            metric: None,
        }
    }

    /// An `unreachable` IPv6 route: the kernel answers with ICMPv6 unreachable
    /// (what 2.6's `block-ipv6` answers from inside the tunnel).
    pub async fn add_unreachable6(&self, net: Ipv6Addr, prefix: u8) -> anyhow::Result<RouteAdded> {
        self.add(NetConfig::unreachable6(net, prefix)).await
    }

    /// Remove a route added with [`NetConfig::add_unreachable6`].
    pub async fn del_unreachable6(&self, net: Ipv6Addr, prefix: u8) {
        self.delete(NetConfig::unreachable6(net, prefix)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_lengths() {
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 0)), 24);
        assert_eq!(prefix_len(Ipv4Addr::new(255, 255, 255, 252)), 30);
        assert_eq!(prefix_len(Ipv4Addr::new(0, 0, 0, 0)), 0);
    }

    fn spec(via: Option<IpAddr>) -> RouteSpec {
        RouteSpec {
            dst: Ipv4Addr::new(10, 99, 0, 0).into(),
            prefix: 24,
            via,
            dev: Some(("tun0".into(), 7)),
            kind: RouteType::Unicast,
            metric: None,
        }
    }

    #[test]
    fn new_routes_say_what_ip_route_add_says() {
        let direct = new_route_message(&spec(None));
        assert_eq!(direct.header.address_family, AddressFamily::Inet);
        assert_eq!(direct.header.table, RouteHeader::RT_TABLE_MAIN);
        assert_eq!(direct.header.protocol, RouteProtocol::Boot);
        assert_eq!(direct.header.scope, RouteScope::Link);
        assert_eq!(direct.header.kind, RouteType::Unicast);
        assert_eq!(direct.header.destination_prefix_length, 24);
        assert_eq!(
            direct.attributes,
            vec![
                RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(10, 99, 0, 0))),
                RouteAttribute::Oif(7),
            ]
        );
        let gw = Ipv4Addr::new(10, 8, 0, 1);
        let via = new_route_message(&spec(Some(gw.into())));
        assert_eq!(via.header.scope, RouteScope::Universe);
        assert!(
            via.attributes
                .contains(&RouteAttribute::Gateway(RouteAddress::Inet(gw)))
        );
    }

    #[test]
    fn deletes_match_any_protocol_and_scope() {
        let del = del_route_message(&spec(None));
        assert_eq!(del.header.protocol, RouteProtocol::Unspec);
        assert_eq!(del.header.scope, RouteScope::NoWhere);
        assert!(del.attributes.contains(&RouteAttribute::Oif(7)));
    }

    #[test]
    fn unreachable6_routes_have_no_device() {
        let net: Ipv6Addr = "2000::".parse().unwrap();
        let msg = new_route_message(&NetConfig::unreachable6(net, 3));
        assert_eq!(msg.header.address_family, AddressFamily::Inet6);
        assert_eq!(msg.header.kind, RouteType::Unreachable);
        assert_eq!(msg.header.scope, RouteScope::Universe);
        assert_eq!(
            msg.attributes,
            vec![RouteAttribute::Destination(RouteAddress::Inet6(net))]
        );
    }

    #[test]
    fn addresses_are_local_with_an_optional_peer() {
        let local = Ipv4Addr::new(10, 8, 0, 6);
        let peer = Ipv4Addr::new(10, 8, 0, 5);
        let p2p = address_message(3, local.into(), 32, Some(peer.into()));
        assert_eq!(p2p.header.index, 3);
        assert_eq!(p2p.header.prefix_len, 32);
        assert_eq!(
            p2p.attributes,
            vec![
                AddressAttribute::Local(local.into()),
                AddressAttribute::Address(peer.into())
            ]
        );
        let v6: Ipv6Addr = "fd00::2".parse().unwrap();
        let subnet = address_message(3, v6.into(), 64, None);
        assert_eq!(subnet.header.family, AddressFamily::Inet6);
        assert_eq!(
            subnet.attributes,
            vec![
                AddressAttribute::Local(v6.into()),
                AddressAttribute::Address(v6.into())
            ]
        );
    }
}
