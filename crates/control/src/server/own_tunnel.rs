//! What a server tells its management clients about its own tunnel, as
//! 2.6.14 does (`init.c` `do_open_tun`/`do_route`/`do_close_tun`,
//! `route.c` `init_route_list`/`add_routes`, checked against the stock
//! server's transcript): the start-up `>STATE` lines and, with
//! `management-up-down`, the environment of `>UPDOWN:UP|DOWN`.
//!
//! The lines themselves come from [`crate::management::updown`], the
//! writer the client uses too.

use std::net::Ipv4Addr;

use crate::management::{Management, Notice};
use crate::plugin::{self, Plugins};
use crate::scripts::{Env, ScriptSettings, Tunnel};

use super::ServerSettings;

/// A server `>STATE:` notice (its remote fields are always empty).
pub(super) fn state(m: &Management, state: &'static str, description: &str, t: Option<&Tunnel>) {
    let local_ip = t.and_then(|t| t.local).map(|ip| ip.to_string());
    let local_ip6 = t
        .and_then(|t| t.ipv6.as_ref())
        .map(|v6| v6.local.to_string());
    m.notify(Notice::State {
        state,
        description: description.to_string(),
        local_ip: local_ip.unwrap_or_default(),
        local_ip6: local_ip6.unwrap_or_default(),
    });
}

/// 2.6's route list exists when the config has IPv4 routes: then it looks
/// up the default gateway (`route_net_gateway`) and names the VPN gateway.
pub(super) fn has_route_list(s: &ServerSettings) -> bool {
    !s.routes.is_empty()
}

/// 2.6 says ADD_ROUTES when it adds IPv4 routes.
pub(super) fn adds_routes(s: &ServerSettings) -> bool {
    !s.no_exec.routes && !s.routes.is_empty()
}

/// 2.6's route list in the environment (`do_init_route_list`,
/// `do_init_route_ipv6_list`: set before `up`, so every later script of
/// the server, a client's `client-connect` included, sees it, and
/// `>UPDOWN`): with IPv4 routes `route_net_gateway` (the default gateway,
/// when there is one) and `route_vpn_gateway`, each route's
/// `route_network_N`, `route_netmask_N`, `route_gateway_N` (the VPN
/// gateway: a server takes no other) and `route_metric_N`; each
/// `route-ipv6`'s `route_ipv6_network_N`, `route_ipv6_gateway_N` (its own,
/// else `ifconfig_ipv6_remote`, else `::`) and `route_ipv6_metric_N`; then
/// `redirect_gateway=0`. Nothing of it with `route-noexec`.
pub(super) fn route_env(s: &ServerSettings, net_gateway: Option<Ipv4Addr>) -> Env {
    let mut env = Env::new();
    // The VPN gateway of a `server` network: its third address (2.6's
    // helper sets `route-gateway` to network + 2 with topology subnet).
    let vpn_gateway = s
        .ipv4_net
        .map(|(network, _)| Ipv4Addr::from(u32::from(network).wrapping_add(2)));
    if has_route_list(s) {
        if let Some(gw) = net_gateway {
            env.set("route_net_gateway", gw.to_string());
        }
        if let Some(gw) = vpn_gateway {
            env.set("route_vpn_gateway", gw.to_string());
        }
    }
    if !s.no_exec.routes {
        for (i, &(network, netmask, metric)) in s.routes.iter().enumerate() {
            env.set_route(i + 1, network, netmask, vpn_gateway, metric);
        }
        let default_gateway6 = s.ipv6.as_ref().map(|v6| v6.remote);
        for (i, &(network, bits, metric)) in s.routes_ipv6.iter().enumerate() {
            let own = s.route_ipv6_gateways.get(i).copied().flatten();
            env.set_route_ipv6(i + 1, network, bits, own.or(default_gateway6), metric);
        }
    }
    env
}

/// 2.6 sets `redirect_gateway` when it adds its routes, after `up`: the
/// scripts from `route-up` on (and `>UPDOWN:UP`) see it, unless
/// `route-noexec` (it always has an IPv4 route list).
pub(super) fn after_routes_env(s: &ServerSettings) -> Env {
    let mut env = Env::new();
    if !s.no_exec.routes {
        env.set("redirect_gateway", "0");
    }
    env
}

/// The environment 2.6 holds once its routes are in (what `>UPDOWN:UP`
/// lists, and `>UPDOWN:DOWN` unless a later script changed it): the
/// scripts' base environment, which holds [`route_env`] since start.
pub(super) fn up_env(s: &ServerSettings, plugins: Option<&Plugins>, t: &Tunnel) -> Env {
    let mut env = s.scripts.base_env.clone();
    env.extend(&ScriptSettings::tunnel_env(t));
    // Each plugin call takes `script_type` out of 2.6's environment; each
    // script sets it.
    if plugins.is_some_and(|p| p.wants(plugin::UP)) {
        env.remove("script_type");
    }
    if s.scripts.up.is_some() {
        env.set("script_type", "up");
    }
    env
}

/// The environment of an instance that kept its device across a soft
/// restart (`persist-tun`): 2.6's `do_open_tun` then only sets the
/// `ifconfig_*` variables (`do_ifconfig_setenv`); no route list, no `up`.
pub(super) fn preserved_env(s: &ServerSettings, t: &Tunnel) -> Env {
    let mut env = s.scripts.base_env.clone();
    let tunnel_env = ScriptSettings::tunnel_env(t);
    for (name, value) in tunnel_env.iter() {
        if name.starts_with("ifconfig_") {
            env.set(name, value);
        }
    }
    env
}

/// `>UPDOWN:DOWN`'s environment: `up`'s, after `route-up` (its plugins
/// take `script_type` out, its script sets it and is then the newest).
/// Returns the environment and the variable 2.6 lists first.
pub(super) fn down_env(
    s: &ServerSettings,
    plugins: Option<&Plugins>,
    up: &Env,
) -> (Env, Option<&'static str>) {
    let mut env = up.clone();
    if plugins.is_some_and(|p| p.wants(plugin::ROUTE_UP)) {
        env.remove("script_type");
    }
    if s.scripts.route_up.is_some() {
        env.set("script_type", "route-up");
        return (env, Some("script_type"));
    }
    (env, None)
}
