//! Interface and route configuration through iproute2, as OpenVPN itself
//! does on Linux. Only the control plane calls this, never the data path.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, bail};
use tracing::info;

/// Prefix length of a contiguous IPv4 netmask.
pub fn prefix_len(mask: Ipv4Addr) -> u32 {
    u32::from(mask).leading_ones()
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    info!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip(8) (is iproute2 installed?)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Bring the tunnel up with an address in `topology subnet` form.
pub fn configure_subnet(dev: &str, addr: Ipv4Addr, mask: Ipv4Addr, mtu: u16) -> anyhow::Result<()> {
    ip(&["link", "set", "dev", dev, "up", "mtu", &mtu.to_string()])?;
    ip(&[
        "addr",
        "replace",
        &format!("{addr}/{}", prefix_len(mask)),
        "dev",
        dev,
    ])
}

/// `topology net30` / p2p: a point-to-point address pair.
pub fn configure_p2p(dev: &str, local: Ipv4Addr, remote: Ipv4Addr, mtu: u16) -> anyhow::Result<()> {
    ip(&["link", "set", "dev", dev, "up", "mtu", &mtu.to_string()])?;
    ip(&[
        "addr",
        "replace",
        &local.to_string(),
        "peer",
        &remote.to_string(),
        "dev",
        dev,
    ])
}

/// Remove every IPv4 address from the tunnel (client reconnects).
pub fn flush_addresses(dev: &str) -> anyhow::Result<()> {
    ip(&["-4", "addr", "flush", "dev", dev])
}

/// Route `net/mask` into the tunnel, optionally via a gateway.
pub fn add_route(
    dev: &str,
    net: Ipv4Addr,
    mask: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
) -> anyhow::Result<()> {
    let dst = format!("{net}/{}", prefix_len(mask));
    match gateway {
        Some(gw) => ip(&["route", "replace", &dst, "via", &gw.to_string(), "dev", dev]),
        None => ip(&["route", "replace", &dst, "dev", dev]),
    }
}

/// Remove a route added with [`add_route`]; missing routes are not an error.
pub fn del_route(net: Ipv4Addr, mask: Ipv4Addr) {
    let dst = format!("{net}/{}", prefix_len(mask));
    let _ = ip(&["route", "del", &dst]);
}

/// The current gateway and device towards `dst` (for redirect-gateway's host route).
pub fn route_to(dst: Ipv4Addr) -> anyhow::Result<(Option<Ipv4Addr>, String)> {
    let out = Command::new("ip")
        .args(["-4", "route", "get", &dst.to_string()])
        .output()
        .context("running ip route get")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let via = words
        .windows(2)
        .find(|w| w[0] == "via")
        .and_then(|w| w[1].parse().ok());
    let dev = words
        .windows(2)
        .find(|w| w[0] == "dev")
        .map(|w| w[1].to_owned())
        .context("no route to the server")?;
    Ok((via, dev))
}

/// Add a host route (redirect-gateway's route to the server itself).
pub fn add_host_route(dst: Ipv4Addr, via: Option<Ipv4Addr>, dev: &str) -> anyhow::Result<()> {
    let dst = format!("{dst}/32");
    match via {
        Some(gw) => ip(&["route", "replace", &dst, "via", &gw.to_string(), "dev", dev]),
        None => ip(&["route", "replace", &dst, "dev", dev]),
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
}
