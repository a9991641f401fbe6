//! Interface and route configuration through iproute2, as OpenVPN itself
//! does on Linux. Only the control plane calls this, never the data path.
//!
//! `ip` and `resolvectl` are looked up once, in the system directories only:
//! `PATH` must not decide what runs as root.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, bail};
use tracing::info;

/// Where system tools are looked for, in order; never `PATH`.
const SYSTEM_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The absolute path of a system tool, if one of the system directories has it.
pub fn system_tool(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    SYSTEM_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `ip(8)`, found on first use and kept for the life of the process.
fn ip_path() -> anyhow::Result<&'static Path> {
    static IP: OnceLock<Option<PathBuf>> = OnceLock::new();
    IP.get_or_init(|| system_tool("ip"))
        .as_deref()
        .with_context(|| {
            format!(
                "ip(8) not found in {} (install iproute2)",
                SYSTEM_DIRS.join(":")
            )
        })
}

/// Find the tools now, so a missing `ip` is reported at start, not at the
/// first push reply.
pub fn check_tools() -> anyhow::Result<()> {
    ip_path().map(|_| ())
}

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

/// Run `ip ARGS`; the error carries ip's own message.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    info!("ip {}", args.join(" "));
    let out = Command::new(ip_path()?)
        .args(args)
        .output()
        .context("running ip(8)")?;
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

/// What [`add_route`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAdded {
    /// The route is new and ours to delete later.
    Added,
    /// An equal prefix was already in the table: it was left as it was and
    /// must not be deleted by us.
    AlreadyPresent,
}

/// `ip route add`, with "File exists" reported as [`RouteAdded::AlreadyPresent`]
/// instead of an error: a pushed route never replaces one that was there.
fn route_add(args: &[&str]) -> anyhow::Result<RouteAdded> {
    match ip(args) {
        Ok(()) => Ok(RouteAdded::Added),
        Err(e) if format!("{e}").contains("File exists") => Ok(RouteAdded::AlreadyPresent),
        Err(e) => Err(e),
    }
}

/// Route `net/mask` into the tunnel, optionally via a gateway.
pub fn add_route(
    dev: &str,
    net: Ipv4Addr,
    mask: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
    metric: Option<u32>,
) -> anyhow::Result<RouteAdded> {
    let dst = format!("{net}/{}", prefix_len(mask));
    let args = route_args("add", &dst, gateway, dev, metric);
    route_add(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// `route VERB DST [via GW] dev DEV [metric M]`.
fn route_args(
    verb: &str,
    dst: &str,
    gateway: Option<Ipv4Addr>,
    dev: &str,
    metric: Option<u32>,
) -> Vec<String> {
    let mut args = vec!["route".to_string(), verb.to_string(), dst.to_string()];
    if let Some(gw) = gateway {
        args.extend(["via".to_string(), gw.to_string()]);
    }
    args.extend(["dev".to_string(), dev.to_string()]);
    if let Some(m) = metric {
        args.extend(["metric".to_string(), m.to_string()]);
    }
    args
}

pub fn del_route(
    net: Ipv4Addr,
    prefix: u32,
    via: Option<Ipv4Addr>,
    dev: &str,
    metric: Option<u32>,
) {
    let dst = format!("{net}/{prefix}");
    let args = route_args("del", &dst, via, dev, metric);
    let _ = ip(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

/// The current gateway and device towards `dst` (for redirect-gateway's host route).
pub fn route_to(dst: Ipv4Addr) -> anyhow::Result<(Option<Ipv4Addr>, String)> {
    let out = Command::new(ip_path()?)
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

/// An `unreachable` IPv6 route: the kernel answers with ICMPv6 unreachable
/// (what 2.6's `block-ipv6` answers from inside the tunnel).
pub fn add_unreachable6(net: Ipv6Addr, prefix: u8) -> anyhow::Result<RouteAdded> {
    route_add(&[
        "-6",
        "route",
        "add",
        "unreachable",
        &format!("{net}/{prefix}"),
    ])
}

/// Remove a route added with [`add_unreachable6`].
pub fn del_unreachable6(net: Ipv6Addr, prefix: u8) {
    let _ = ip(&[
        "-6",
        "route",
        "del",
        "unreachable",
        &format!("{net}/{prefix}"),
    ]);
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

    #[test]
    fn system_tools_are_found_by_absolute_path_only() {
        // `sh` lives in /bin or /usr/bin on every Linux this runs on.
        let sh = system_tool("sh").expect("sh in a system directory");
        assert!(sh.is_absolute(), "{}", sh.display());
        assert!(system_tool("no-such-tool-ferrovpn").is_none());
    }
}
