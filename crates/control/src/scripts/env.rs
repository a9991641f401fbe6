//! The environment a script sees: only what OpenVPN 2.6 sets (no `PATH`,
//! nothing inherited from ferrovpn's own environment).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use super::command::Security;

/// Ordered `NAME=value` pairs; setting a name again replaces its value,
/// as 2.6's `setenv_str` does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    vars: Vec<(String, String)>,
}

impl Env {
    pub fn new() -> Self {
        Env::default()
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.vars.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.vars.push((name.to_owned(), value)),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn remove(&mut self, name: &str) {
        self.vars.retain(|(n, _)| n != name);
    }

    /// Add every pair of `other`, replacing names set already.
    pub fn extend(&mut self, other: &Env) {
        for (n, v) in &other.vars {
            self.set(n, v.clone());
        }
    }

    /// `trusted_ip`/`trusted_port` and `untrusted_ip`/`untrusted_port`
    /// (2.6 sets both for a client's real address; `*_ip6` for IPv6).
    pub fn set_remote(&mut self, addr: SocketAddr) {
        let suffix = if addr.is_ipv4() { "ip" } else { "ip6" };
        for side in ["trusted", "untrusted"] {
            self.set(&format!("{side}_{suffix}"), addr.ip().to_string());
            self.set(&format!("{side}_port"), addr.port().to_string());
        }
    }

    /// Route number `n` (from 1) of 2.6's route list:
    /// `route_network_N`, `route_netmask_N`, then `route_gateway_N` and
    /// `route_metric_N` when known, in that order.
    pub fn set_route(
        &mut self,
        n: usize,
        network: Ipv4Addr,
        netmask: Ipv4Addr,
        gateway: Option<Ipv4Addr>,
        metric: Option<u32>,
    ) {
        self.set(&format!("route_network_{n}"), network.to_string());
        self.set(&format!("route_netmask_{n}"), netmask.to_string());
        if let Some(gw) = gateway {
            self.set(&format!("route_gateway_{n}"), gw.to_string());
        }
        if let Some(m) = metric {
            self.set(&format!("route_metric_{n}"), m.to_string());
        }
    }

    /// IPv6 route number `n` (from 1): `route_ipv6_network_N` as
    /// `NETWORK/BITS`, then `route_ipv6_gateway_N` (always: 2.6's
    /// `setenv_route_ipv6` prints the unset address, `::`, when there is no
    /// gateway) and `route_ipv6_metric_N` when known (2.6's order).
    pub fn set_route_ipv6(
        &mut self,
        n: usize,
        network: Ipv6Addr,
        bits: u8,
        gateway: Option<Ipv6Addr>,
        metric: Option<u32>,
    ) {
        self.set(
            &format!("route_ipv6_network_{n}"),
            format!("{network}/{bits}"),
        );
        let gateway = gateway.unwrap_or(Ipv6Addr::UNSPECIFIED);
        self.set(&format!("route_ipv6_gateway_{n}"), gateway.to_string());
        if let Some(m) = metric {
            self.set(&format!("route_ipv6_metric_{n}"), m.to_string());
        }
    }

    /// The pairs a script may see at `security` (passwords only at 3).
    pub fn for_script(&self, security: Security) -> impl Iterator<Item = (&str, &str)> {
        self.vars
            .iter()
            .filter(move |(n, _)| security.allows_env(n))
            .map(|(n, v)| (n.as_str(), v.as_str()))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

impl Drop for Env {
    // A via-env password sits here until the script ran.
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for (n, v) in &mut self.vars {
            if n.starts_with("password") {
                v.zeroize();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_and_keeps_order() {
        let mut e = Env::new();
        e.set("a", "1");
        e.set("b", "2");
        e.set("a", "3");
        assert_eq!(e.iter().collect::<Vec<_>>(), [("a", "3"), ("b", "2")]);
        e.remove("a");
        assert_eq!(e.get("a"), None);
    }

    #[test]
    fn password_only_at_level_3() {
        let mut e = Env::new();
        e.set("username", "u");
        e.set("password", "p");
        let names = |s| e.for_script(s).map(|(n, _)| n).collect::<Vec<_>>();
        assert_eq!(names(Security::Scripts), ["username"]);
        assert_eq!(names(Security::PasswordEnv), ["username", "password"]);
    }

    #[test]
    fn remote_address_both_ways() {
        let mut e = Env::new();
        e.set_remote("192.0.2.7:51000".parse().unwrap());
        assert_eq!(e.get("trusted_ip"), Some("192.0.2.7"));
        assert_eq!(e.get("untrusted_port"), Some("51000"));
        e.set_remote("[2001:db8::1]:5".parse().unwrap());
        assert_eq!(e.get("trusted_ip6"), Some("2001:db8::1"));
    }
}
