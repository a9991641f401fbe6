//! Applying a PUSH_REPLY: addresses, routes, redirect-gateway, DNS, timers.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Context;
use ferrovpn_dataplane::{DataPlane, PeerTable};
use ferrovpn_proto::push::{PushOption, PushReply};
use ferrovpn_proto::wire::PEER_ID_UNDEFINED;
use tracing::{debug, info};

use super::{ClientSettings, Conn};
use crate::netconfig;

pub(super) fn apply_push(
    s: &ClientSettings,
    dp: &DataPlane,
    peers: &PeerTable,
    c: &mut Conn,
    reply: &PushReply,
) -> anyhow::Result<()> {
    let dev = dp.tun_name().to_owned();
    let mut topology = "net30".to_owned();
    let mut ifconfig = None;
    let mut gateway = None;
    let mut routes = Vec::new();
    let mut redirect = false;
    let mut dns = Vec::new();
    let mut peer_id = PEER_ID_UNDEFINED;
    let mut mtu = s.tun_mtu;
    for o in &reply.options {
        match o {
            PushOption::Topology(t) => topology = t.clone(),
            PushOption::Ifconfig {
                local,
                netmask_or_remote,
            } => ifconfig = Some((*local, *netmask_or_remote)),
            PushOption::RouteGateway(gw) => gateway = Some(*gw),
            PushOption::Route {
                network,
                netmask,
                gateway,
            } => routes.push((*network, *netmask, *gateway)),
            // Every variant is applied the def1 way: two /1 routes that override
            // the default route without deleting it, so exit restores cleanly.
            PushOption::RedirectGateway(_) => redirect = true,
            PushOption::DhcpOption(kind, value) if kind.eq_ignore_ascii_case("DNS") => {
                dns.push(value.clone())
            }
            PushOption::Ping(n) => c.ping = Some(Duration::from_secs(u64::from(*n))),
            PushOption::PingRestart(n) => c.ping_restart = Duration::from_secs(u64::from(*n)),
            PushOption::PeerId(id) => peer_id = *id,
            PushOption::ProtocolFlags(flags) => c.cc_exit = flags.iter().any(|f| f == "cc-exit"),
            PushOption::TunMtu(m) => mtu = u16::try_from(*m).unwrap_or(s.tun_mtu),
            other => debug!("push option not applied: {other:?}"),
        }
    }
    let (local, second) = ifconfig.context("push reply has no ifconfig")?;
    let gateway = match topology.as_str() {
        "subnet" => {
            netconfig::configure_subnet(&dev, local, second, mtu)?;
            gateway
        }
        _ => {
            netconfig::configure_p2p(&dev, local, second, mtu)?;
            gateway.or(Some(second))
        }
    };
    c.applied.addresses = true;
    for (net, mask, gw) in routes {
        netconfig::add_route(&dev, net, mask, gw.or(gateway))?;
        c.applied.routes.push((net, mask));
    }
    if redirect {
        let gw = gateway.context("redirect-gateway needs a route-gateway")?;
        let server_ip = match c.server.ip() {
            std::net::IpAddr::V4(v4) => v4,
            std::net::IpAddr::V6(_) => anyhow::bail!("IPv6 server address"),
        };
        // Keep the tunnel's own packets off the tunnel.
        let (via, out_dev) = netconfig::route_to(server_ip)?;
        netconfig::add_host_route(server_ip, via, &out_dev)?;
        c.applied.host_route = Some(server_ip);
        for net in [Ipv4Addr::new(0, 0, 0, 0), Ipv4Addr::new(128, 0, 0, 0)] {
            netconfig::add_route(&dev, net, Ipv4Addr::new(128, 0, 0, 0), Some(gw))?;
            c.applied.routes.push((net, Ipv4Addr::new(128, 0, 0, 0)));
        }
    }
    if !dns.is_empty() {
        apply_dns(&dev, &dns);
    }
    peers.upsert_peer(peer_id, c.server, None);
    peers.set_client_default(Some(peer_id));
    c.peer_id = Some(peer_id);
    info!("tunnel {dev}: {local} ({topology}), peer-id {peer_id}");
    Ok(())
}

/// DNS servers go to systemd-resolved when it runs; otherwise they are only logged.
fn apply_dns(dev: &str, servers: &[String]) {
    let ok = std::process::Command::new("resolvectl")
        .arg("dns")
        .arg(dev)
        .args(servers)
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        info!(
            "DNS servers {} set on {dev} via resolvectl",
            servers.join(" ")
        );
    } else {
        info!(
            "server pushed DNS servers {} (no resolvectl here; not applied)",
            servers.join(" ")
        );
    }
}
