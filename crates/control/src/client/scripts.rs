//! The client's scripts as OpenVPN 2.6 runs them: `tls-verify` and
//! `ipchange` once the server's TLS handshake is done (before its push
//! reply is applied), `up` and `route-up` once the push reply configured
//! the tunnel, `route-pre-down` and `down` when the tunnel goes, each with
//! 2.6's arguments and environment (checked against the stock 2.6.3
//! binary): the server's certificate chain (`X509_*`, `tls_*`,
//! `common_name`), its address (`trusted_ip`/`trusted_port`), the pushed
//! routes (`route_*`) and `dhcp-option`s (`foreign_option_N`, what
//! Debian's `update-resolv-conf` reads).
//!
//! The environments are built by pure functions; the runs are awaited by
//! the connection, as 2.6 waits for them, each bounded by the runner's
//! timeout.

use std::net::SocketAddr;

use super::management::ClientManagement;
use super::plan::{PushPlan, Topology};
use crate::scripts::{self, ChainVerdict, Env, Invocation, ScriptSettings, run};

/// What `up` was run with, for `route-pre-down` and `down` later.
#[derive(Debug, Clone)]
struct UpRecord {
    /// `dev tun_mtu 0 ifconfig_local ifconfig_netmask|ifconfig_remote`.
    args: Vec<String>,
    /// The environment of the scripts after `up` (no `ifconfig_*`).
    env: Env,
    /// What 2.6's environment holds when the routes are in place, for
    /// `>UPDOWN:` (with the `ifconfig_*` variables and `route_net_gateway`).
    updown: Env,
}

/// The client's script state across connections.
pub(super) struct ClientScripts {
    s: ScriptSettings,
    /// Set once the tunnel was configured (whether or not `up` is set):
    /// the tunnel is up as far as scripts are concerned.
    up: Option<UpRecord>,
    /// The gateway of the default route before the tunnel's routes (2.6's
    /// `route_net_gateway`), when it was looked up.
    net_gateway: Option<std::net::Ipv4Addr>,
}

impl ClientScripts {
    pub fn new(s: ScriptSettings) -> Self {
        ClientScripts {
            s,
            up: None,
            net_gateway: None,
        }
    }

    /// The default route's gateway found before the tunnel's routes went
    /// in, for the next `>UPDOWN:UP`.
    pub fn set_net_gateway(&mut self, gateway: std::net::Ipv4Addr) {
        self.net_gateway = Some(gateway);
    }

    /// Whether something must run before the push reply is applied.
    pub fn runs_before_push(&self) -> bool {
        self.s.tls_verify.is_some() || self.s.ipchange.is_some()
    }

    /// The variables of every script of a connection to `server` whose
    /// certificate chain (depth 0 first) is `chain`: 2.6's base variables,
    /// the server's address, its certificates, its common name.
    pub fn connection_env(&self, server: SocketAddr, presented: &[Vec<u8>]) -> Env {
        let chain = scripts::certificate_chain(presented, &self.s.peer_ca);
        let mut env = self.s.base_env.clone();
        for (depth, der) in chain.iter().enumerate() {
            scripts::certificate_env_at(der, depth, &mut env);
        }
        if let Some(cn) = chain
            .first()
            .and_then(|d| ferrovpn_proto::session::tls::peer_common_name(d))
        {
            env.set(
                "common_name",
                ferrovpn_proto::session::tls::sanitize_common_name(&cn),
            );
        }
        env.set_remote(server);
        env
    }

    /// `tls-verify` over the server's chain (as the peer sent it, completed
    /// from the `ca` file), then `ipchange IP PORT`. A refusal is the error.
    /// Owns all it needs, so the connection can go on meanwhile.
    pub fn before_push(
        &self,
        server: SocketAddr,
        presented: Vec<Vec<u8>>,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
        let verify = self.s.tls_verify.clone();
        let ipchange = self.s.ipchange.clone();
        let security = self.s.security;
        let chain = scripts::certificate_chain(&presented, &self.s.peer_ca);
        let env = self.connection_env(server, &chain);
        async move {
            if let Some(verify) = verify {
                // Before the handshake counted, 2.6 knows the address as
                // untrusted only.
                let mut untrusted = env.clone();
                for name in ["trusted_ip", "trusted_ip6", "trusted_port", "common_name"] {
                    untrusted.remove(name);
                }
                for depth in 0..chain.len() {
                    for name in [
                        format!("tls_id_{depth}"),
                        format!("tls_digest_{depth}"),
                        format!("tls_digest_sha256_{depth}"),
                        format!("tls_serial_{depth}"),
                        format!("tls_serial_hex_{depth}"),
                    ] {
                        untrusted.remove(&name);
                    }
                }
                let untrusted = without_x509(untrusted);
                match scripts::run_tls_verify(&verify, security, &chain, untrusted).await {
                    ChainVerdict::Accepted => {}
                    ChainVerdict::Refused(why) => return Err(why),
                }
            }
            if let Some(command) = ipchange {
                let mut env = env;
                env.set("script_type", "ipchange");
                let addr = match server {
                    SocketAddr::V4(a) => format!("[AF_INET]{}", a.ip()),
                    SocketAddr::V6(a) => format!("[AF_INET6]{}", a.ip()),
                };
                let inv = Invocation {
                    hook: "--ipchange",
                    command,
                    extra: vec![addr, server.port().to_string()],
                    env,
                };
                run::run_reported(inv, security).await;
            }
            Ok(())
        }
    }

    /// The push reply configured the tunnel on `dev`: `up` (with `init`
    /// when the tunnel is new, with `restart` on a kept one under
    /// `up-restart`), then `route-up` on a new one. `foreign` are the
    /// pushed `dhcp-option` lines. An `up` failure is fatal, as in 2.6.
    pub async fn tunnel_up(
        &mut self,
        dev: &str,
        plan: &PushPlan,
        foreign: &[String],
        conn_env: &Env,
        mgmt: Option<&ClientManagement>,
    ) -> Result<(), String> {
        let fresh = self.up.is_none();
        if !fresh && !self.s.up_restart {
            return Ok(());
        }
        let context = if fresh { "init" } else { "restart" };
        let args = up_args(dev, plan);
        let after = after_up_env(conn_env, dev, plan, foreign);
        let mut up_env = after.clone();
        up_env.remove("redirect_gateway");
        up_env.extend(&ifconfig_env(plan));
        up_env.set("script_context", context);
        up_env.set("script_type", "up");
        let mut updown = after.clone();
        updown.extend(&ifconfig_env(plan));
        self.run_up(fresh, context, args, up_env, after, updown, mgmt)
            .await
    }

    /// The variables of the scripts before any peer is known (2.6's
    /// point-to-point mode runs `up` before the handshake): the base ones.
    pub fn device_env(&self) -> Env {
        self.s.base_env.clone()
    }

    /// Point-to-point mode, device opened: with `ifconfig` (`plan`) as
    /// [`Self::tunnel_up`]; without, `up` gets empty addresses
    /// (`dev tun_mtu 0 '' '' init`) and no `ifconfig_*` variables, as 2.6.
    pub async fn device_up(
        &mut self,
        dev: &str,
        tun_mtu: u16,
        plan: Option<&PushPlan>,
        env: &Env,
        mgmt: Option<&ClientManagement>,
    ) -> Result<(), String> {
        if let Some(plan) = plan {
            return self.tunnel_up(dev, plan, &[], env, mgmt).await;
        }
        let fresh = self.up.is_none();
        if !fresh && !self.s.up_restart {
            return Ok(());
        }
        let context = if fresh { "init" } else { "restart" };
        let args = vec![
            dev.to_owned(),
            tun_mtu.to_string(),
            "0".into(),
            String::new(),
            String::new(),
        ];
        let mut after = env.clone();
        after.set("dev", dev);
        after.set("dev_type", "tun");
        after.set("tun_mtu", tun_mtu.to_string());
        after.set("script_context", "init");
        let mut up_env = after.clone();
        up_env.set("script_context", context);
        up_env.set("script_type", "up");
        after.set("redirect_gateway", "0");
        let updown = after.clone();
        self.run_up(fresh, context, args, up_env, after, updown, mgmt)
            .await
    }

    /// Record what `up` was given (for `down`), run `up` with `context`
    /// appended to `args`, then `route-up` on a fresh device. A failing
    /// `up` is fatal and 2.6 runs neither `route-pre-down` nor `down` then.
    /// `>UPDOWN:UP` goes out between `up` and `route-up`, where 2.6 adds
    /// the routes.
    #[allow(clippy::too_many_arguments)]
    async fn run_up(
        &mut self,
        fresh: bool,
        context: &str,
        args: Vec<String>,
        up_env: Env,
        after: Env,
        mut updown: Env,
        mgmt: Option<&ClientManagement>,
    ) -> Result<(), String> {
        if let Some(gw) = self.net_gateway.take() {
            updown.set("route_net_gateway", gw.to_string());
        }
        if self.s.up.is_some() {
            updown.set("script_type", "up");
        }
        self.up = Some(UpRecord {
            args: args.clone(),
            env: after.clone(),
            updown,
        });
        if let Some(command) = self.s.up.clone() {
            let mut extra = args;
            extra.push(context.into());
            let inv = Invocation {
                hook: "--up/--down",
                command,
                extra,
                env: up_env,
            };
            let status = run::run(inv, self.s.security).await;
            if let Some(failure) = status.failure("--up/--down") {
                // 2.6 exits without `route-pre-down` or `down` then.
                self.up = None;
                return Err(failure);
            }
        }
        // A kept tunnel (persist-tun, up-restart) keeps its routes: 2.6
        // does not add them again, nor says UP.
        if let (true, Some(m), Some(up)) = (fresh, mgmt, &self.up) {
            m.up_down("UP", &up.updown, None);
        }
        if fresh && let Some(command) = self.s.route_up.clone() {
            let mut env = after;
            env.set("script_type", "route-up");
            let inv = Invocation {
                hook: "--route-up",
                command,
                extra: Vec::new(),
                env,
            };
            run::run_reported(inv, self.s.security).await;
        }
        Ok(())
    }

    /// Before the tunnel's routes go: `>UPDOWN:DOWN`, then
    /// `route-pre-down` (`signal` says why).
    pub async fn before_tear_down(&self, signal: &str, mgmt: Option<&ClientManagement>) {
        if let (Some(m), Some(up)) = (mgmt, &self.up) {
            let mut env = up.updown.clone();
            // The last script 2.6 ran named itself in the environment,
            // `route-up` after everything the route step set.
            let newest = self.s.route_up.is_some().then(|| {
                env.set("script_type", "route-up");
                "script_type"
            });
            m.up_down("DOWN", &env, newest);
        }
        let (Some(up), Some(command)) = (&self.up, self.s.route_pre_down.clone()) else {
            return;
        };
        self.run_down_like(
            "--route-pre-down",
            "route-pre-down",
            command,
            up,
            signal,
            "init",
        )
        .await;
    }

    /// The tunnel went: `down` with `init`, and the next configuration
    /// is a new tunnel again.
    pub async fn after_tear_down(&mut self, signal: &str) {
        let Some(up) = self.up.take() else {
            return;
        };
        if let Some(command) = self.s.down.clone() {
            self.run_down_like("--up/--down", "down", command, &up, signal, "init")
                .await;
        }
    }

    /// A reconnect keeps the tunnel (`persist-tun`): with `up-restart`,
    /// `down` runs with `restart`.
    pub async fn tunnel_kept(&self, signal: &str) {
        let (Some(up), Some(command), true) = (&self.up, self.s.down.clone(), self.s.up_restart)
        else {
            return;
        };
        self.run_down_like("--up/--down", "down", command, up, signal, "restart")
            .await;
    }

    async fn run_down_like(
        &self,
        hook: &'static str,
        script_type: &str,
        command: scripts::ScriptCommand,
        up: &UpRecord,
        signal: &str,
        context: &str,
    ) {
        let mut env = up.env.clone();
        env.set("script_type", script_type);
        env.set("script_context", context);
        env.set("signal", signal);
        let mut extra = up.args.clone();
        extra.push(context.into());
        let inv = Invocation {
            hook,
            command,
            extra,
            env,
        };
        run::run_reported(inv, self.s.security).await;
    }
}

/// An environment without any `X509_*` variable.
fn without_x509(env: Env) -> Env {
    let mut out = Env::new();
    for (n, v) in env.iter() {
        if !n.starts_with("X509_") {
            out.set(n, v);
        }
    }
    out
}

/// `dev tun_mtu 0 ifconfig_local ifconfig_netmask|ifconfig_remote`.
fn up_args(dev: &str, plan: &PushPlan) -> Vec<String> {
    // IPv6 only: 2.6 passes empty addresses.
    let (local, netmask_or_remote) = match plan.ipv4 {
        Some(v4) => (v4.local.to_string(), v4.netmask_or_remote.to_string()),
        None => (String::new(), String::new()),
    };
    vec![
        dev.to_owned(),
        plan.mtu.to_string(),
        "0".into(),
        local,
        netmask_or_remote,
    ]
}

/// The tunnel's addresses as 2.6 sets them for `up` only.
fn ifconfig_env(plan: &PushPlan) -> Env {
    let mut env = Env::new();
    if let Some(v4) = plan.ipv4 {
        env.set("ifconfig_local", v4.local.to_string());
        match plan.topology {
            Topology::Subnet => env.set("ifconfig_netmask", v4.netmask_or_remote.to_string()),
            Topology::PointToPoint => env.set("ifconfig_remote", v4.netmask_or_remote.to_string()),
        }
    }
    if let Some(v6) = plan.ipv6 {
        env.set("ifconfig_ipv6_local", v6.local.to_string());
        env.set("ifconfig_ipv6_netbits", v6.bits.to_string());
    }
    env
}

/// What every script sees once the tunnel is configured (2.6 keeps these
/// for `route-up`, `route-pre-down` and `down`): the device, the pushed
/// `dhcp-option`s as `foreign_option_N`, the routes as `route_*_N`.
fn after_up_env(conn_env: &Env, dev: &str, plan: &PushPlan, foreign: &[String]) -> Env {
    let mut env = conn_env.clone();
    env.set("dev", dev);
    env.set("dev_type", "tun");
    env.set("tun_mtu", plan.mtu.to_string());
    env.set("script_context", "init");
    for (i, option) in foreign.iter().enumerate() {
        env.set(&format!("foreign_option_{}", i + 1), option.clone());
    }
    // 2.6's `dns_*` variables for the pushed `dns` options.
    for (name, value) in plan.dns.dns.script_env() {
        env.set(&name, value);
    }
    if let Some(gw) = plan.gateway {
        env.set("route_vpn_gateway", gw.to_string());
    }
    for (i, r) in plan.routes.iter().enumerate() {
        let n = i + 1;
        env.set(&format!("route_network_{n}"), r.network.to_string());
        env.set(&format!("route_netmask_{n}"), r.netmask.to_string());
        if let Some(gw) = r.gateway.or(plan.gateway) {
            env.set(&format!("route_gateway_{n}"), gw.to_string());
        }
        if let Some(m) = r.metric {
            env.set(&format!("route_metric_{n}"), m.to_string());
        }
    }
    for (i, r) in plan.routes6.iter().enumerate() {
        let n = i + 1;
        env.set(
            &format!("route_ipv6_network_{n}"),
            format!("{}/{}", r.network, r.bits),
        );
    }
    let redirected = plan.redirect.as_ref().is_some_and(|r| r.ipv4);
    env.set("redirect_gateway", if redirected { "1" } else { "0" });
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovpn_proto::push::PushReply;

    fn plan(text: &str) -> PushPlan {
        let reply = PushReply::parse(text).unwrap();
        PushPlan::from_reply(&reply, 1500).unwrap()
    }

    #[test]
    fn environment_after_up_as_2_6() {
        let p = plan(
            "PUSH_REPLY,route 10.77.0.0 255.255.255.0,dhcp-option DNS 10.8.0.1,route-gateway 10.8.0.1,topology subnet,ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM",
        );
        let foreign = vec!["dhcp-option DNS 10.8.0.1".to_owned()];
        let mut conn = Env::new();
        conn.set_remote("10.199.1.1:1194".parse().unwrap());
        let env = after_up_env(&conn, "tun0", &p, &foreign);
        let get = |n| env.get(n).unwrap_or("-");
        assert_eq!(get("foreign_option_1"), "dhcp-option DNS 10.8.0.1");
        assert_eq!(get("route_network_1"), "10.77.0.0");
        assert_eq!(get("route_netmask_1"), "255.255.255.0");
        assert_eq!(get("route_gateway_1"), "10.8.0.1");
        assert_eq!(get("route_vpn_gateway"), "10.8.0.1");
        assert_eq!(get("redirect_gateway"), "0");
        assert_eq!(get("trusted_ip"), "10.199.1.1");
        assert_eq!(get("dev"), "tun0");
        assert_eq!(env.get("ifconfig_local"), None);
        assert_eq!(
            up_args("tun0", &p),
            ["tun0", "1500", "0", "10.8.0.2", "255.255.255.0"]
        );
        let ifc = ifconfig_env(&p);
        assert_eq!(ifc.get("ifconfig_netmask"), Some("255.255.255.0"));
    }

    /// An IPv6-only tunnel: `up` gets empty IPv4 arguments and only the
    /// `ifconfig_ipv6_*` variables, as 2.6.
    #[test]
    fn ipv6_only_up_as_2_6() {
        let p = plan(
            "PUSH_REPLY,tun-ipv6,ifconfig-ipv6 fd00:6::1000/64 fd00:6::1,peer-id 0,cipher AES-256-GCM",
        );
        assert_eq!(up_args("tun0", &p), ["tun0", "1500", "0", "", ""]);
        let ifc = ifconfig_env(&p);
        assert_eq!(ifc.get("ifconfig_local"), None);
        assert_eq!(ifc.get("ifconfig_netmask"), None);
        assert_eq!(ifc.get("ifconfig_ipv6_local"), Some("fd00:6::1000"));
        assert_eq!(ifc.get("ifconfig_ipv6_netbits"), Some("64"));
    }

    #[test]
    fn dns_variables_as_2_6() {
        let p = plan(
            "PUSH_REPLY,topology subnet,ifconfig 10.8.0.2 255.255.255.0,dns server 5 address 10.8.0.5,dns server 0 address 10.8.0.1 [fd00::53]:5353,dns server 0 dnssec optional,dns server 0 transport DoT,dns server 0 sni dns.example,dns server 5 resolve-domains a.example b.example,dns search-domains corp.example",
        );
        let env = after_up_env(&Env::new(), "tun0", &p, &[]);
        let get = |n| env.get(n).unwrap_or("-");
        assert_eq!(get("dns_search_domain_1"), "corp.example");
        // Numbered by position in priority order, not by N.
        assert_eq!(get("dns_server_1_address_1"), "10.8.0.1");
        assert_eq!(get("dns_server_1_port_1"), "-");
        assert_eq!(get("dns_server_1_address_2"), "fd00::53");
        assert_eq!(get("dns_server_1_port_2"), "5353");
        assert_eq!(get("dns_server_1_dnssec"), "optional");
        assert_eq!(get("dns_server_1_transport"), "DoT");
        assert_eq!(get("dns_server_1_sni"), "dns.example");
        assert_eq!(get("dns_server_2_address_1"), "10.8.0.5");
        assert_eq!(get("dns_server_2_resolve_domain_2"), "b.example");
        assert_eq!(get("dns_server_2_dnssec"), "-");
    }
}
