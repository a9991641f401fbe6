//! The client's scripts as OpenVPN 2.6 runs them: `tls-verify` inside
//! each TLS handshake (our key-method-2 message waits for it), `ipchange`
//! once the first key exchange is done (before the push reply is applied), `up` and `route-up` once the push reply configured
//! the tunnel, `route-pre-down` and `down` when the tunnel goes, each with
//! 2.6's arguments and environment (checked against the stock 2.6.3
//! binary): the server's certificate chain (`X509_*`, `tls_*`,
//! `common_name`), its address (`trusted_ip`/`trusted_port`), the pushed
//! routes (`route_*`) and `dhcp-option`s (`foreign_option_N`, what
//! Debian's `update-resolv-conf` reads).
//!
//! The `plugin`s are called at the same points, each before the script
//! of its point, with the same arguments and environment (less
//! `script_type`), as 2.6's `run_up_down`, `do_route`,
//! `link_socket_connection_initiated` and `key_method_2_read` call them:
//! `PLUGIN_TLS_VERIFY` then `--tls-verify` for each certificate of the
//! server's chain (one [`scripts::verify_chain`] with the server's),
//! `PLUGIN_TLS_FINAL` after each key exchange, `PLUGIN_IPCHANGE` then
//! `--ipchange`, `PLUGIN_UP` then `--up`, `>UPDOWN:UP`, `PLUGIN_ROUTE_UP`
//! then `--route-up`; `>UPDOWN:DOWN`, `PLUGIN_ROUTE_PREDOWN` then
//! `--route-pre-down`, `PLUGIN_DOWN` then `--down`. A failing `UP`,
//! `ROUTE_PREDOWN` or `DOWN` plugin (or `up` script) ends the client as 2.6's
//! `M_FATAL` does: the plugins' abort functions run, nothing else.
//!
//! The environments are built by pure functions; the runs are awaited by
//! the connection, as 2.6 waits for them, each bounded by the runner's
//! timeout.

use std::net::SocketAddr;
use std::sync::Arc;

use tracing::warn;

use super::AUTH_CONTROL_EXIT;
use super::management::ClientManagement;
use super::plan::{PushPlan, Topology};
use crate::plugin::{self, Plugins, Verdict};
use crate::scripts::{self, ChainVerdict, Env, Invocation, ScriptSettings, run};

/// What `up` was run with, for `route-pre-down` and `down` later.
#[derive(Debug, Clone)]
struct UpRecord {
    /// `dev tun_mtu 0 ifconfig_local ifconfig_netmask|ifconfig_remote`.
    args: Vec<String>,
    /// The environment of the scripts and plugins after `up` (2.6 keeps
    /// the `ifconfig_*` and `route_net_gateway` variables in it).
    env: Env,
    /// What 2.6's environment holds when the routes are in place, for
    /// `>UPDOWN:` (with the `ifconfig_*` variables and `route_net_gateway`).
    updown: Env,
}

/// The client's script state across connections.
pub(super) struct ClientScripts {
    s: ScriptSettings,
    /// The `plugin`s, opened at start; `None` too once a fatal failure
    /// aborted them.
    plugins: Option<Arc<Plugins>>,
    /// Set once the tunnel was configured (whether or not `up` is set):
    /// the tunnel is up as far as scripts are concerned.
    up: Option<UpRecord>,
    /// The gateway of the default route before the tunnel's routes (2.6's
    /// `route_net_gateway`), when it was looked up.
    net_gateway: Option<std::net::Ipv4Addr>,
    /// The same for IPv6 (2.6's `net_gateway_ipv6`): the gateway of the
    /// route to `::`, when it was looked up and has one.
    net_gateway6: Option<std::net::Ipv6Addr>,
}

impl ClientScripts {
    pub fn new(s: ScriptSettings, plugins: Option<Plugins>) -> Self {
        ClientScripts {
            s,
            plugins: plugins.map(Arc::new),
            up: None,
            net_gateway: None,
            net_gateway6: None,
        }
    }

    /// The plugins, when one of them asked for `hook`.
    fn plugins_for(&self, hook: u32) -> Option<Arc<Plugins>> {
        self.plugins.clone().filter(|p| p.wants(hook))
    }

    /// Call the plugins that asked for `hook`; `true` when none failed.
    async fn call_plugins(&self, hook: u32, args: Vec<String>, env: &Env) -> bool {
        match self.plugins_for(hook) {
            Some(p) => p.call(hook, args, env).await == Verdict::Success,
            None => true,
        }
    }

    /// A fatal failure (`M_FATAL` in 2.6): the plugins' abort functions
    /// run and none is called again; the client is about to exit.
    fn abort_plugins(&mut self) {
        if let Some(p) = self.plugins.take() {
            p.abort();
        }
    }

    /// After a key exchange with the server: `PLUGIN_TLS_FINAL`, as 2.6
    /// calls it when it read the server's key-method-2 message, with the
    /// environment of that moment: `env` (see [`Self::key_exchange_env`]).
    /// `false`: a plugin vetoed the key; 2.6 ends then (`SIGTERM`, as
    /// `auth-control-exit`).
    pub async fn tls_final(&self, env: &Env) -> bool {
        self.call_plugins(plugin::TLS_FINAL, Vec::new(), env).await
    }

    /// Whether some plugin asked for `PLUGIN_TLS_FINAL`.
    pub fn wants_tls_final(&self) -> bool {
        self.plugins_for(plugin::TLS_FINAL).is_some()
    }

    /// The environment at a later key exchange with `server` (a
    /// renegotiation, or a point-to-point link's first): everything the
    /// tunnel's scripts saw once it is up, else the connection's.
    pub fn key_exchange_env(&self, server: SocketAddr, presented: &[Vec<u8>]) -> Env {
        match &self.up {
            Some(up) => up.env.clone(),
            None => self.connection_env(server, presented),
        }
    }

    /// The default route's gateway found before the tunnel's routes went
    /// in (2.6's `route_net_gateway`), for the next tunnel's scripts,
    /// plugins and `>UPDOWN:`.
    pub fn set_net_gateway(&mut self, gateway: std::net::Ipv4Addr) {
        self.net_gateway = Some(gateway);
    }

    /// The IPv6 default gateway found before the tunnel's routes went in
    /// (2.6's `net_gateway_ipv6`; `None`: no route to `::` through a
    /// gateway, and 2.6 then sets nothing).
    pub fn set_net_gateway6(&mut self, gateway: Option<std::net::Ipv6Addr>) {
        self.net_gateway6 = gateway;
    }

    /// Whether the server's chain is verified by a `tls-verify` script or
    /// `PLUGIN_TLS_VERIFY` plugins (in each handshake, see
    /// [`Self::verify_server`]).
    pub fn verifies_chain(&self) -> bool {
        self.s.tls_verify.is_some() || self.plugins_for(plugin::TLS_VERIFY).is_some()
    }

    /// Whether something must run before the push reply is applied.
    pub fn runs_before_push(&self) -> bool {
        self.s.ipchange.is_some()
            || self.plugins_for(plugin::IPCHANGE).is_some()
            || self.wants_tls_final()
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

    /// `PLUGIN_TLS_VERIFY` then `tls-verify` over the server's chain (as
    /// the peer sent it, completed from the `ca` file), run as 2.6's verify
    /// callback inside each TLS handshake: the session holds our
    /// key-method-2 message meanwhile. A refusal is the error. Owns all it
    /// needs, so the connection can go on meanwhile.
    pub fn verify_server(
        &self,
        server: SocketAddr,
        presented: Vec<Vec<u8>>,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
        let verify_script = self.s.tls_verify.clone();
        let verify_plugins =
            self.plugins_for(plugin::TLS_VERIFY)
                .map(|plugins| scripts::VerifyPlugins {
                    plugins,
                    // A client's calls all get its one top-level context.
                    client: None,
                });
        let export_dir = self.s.tls_export_cert.clone();
        let security = self.s.security;
        let chain = scripts::certificate_chain(&presented, &self.s.peer_ca);
        let env = self.connection_env(server, &chain);
        async move {
            match scripts::verify_chain(
                verify_script.as_ref(),
                export_dir.as_deref(),
                verify_plugins.as_ref(),
                security,
                &chain,
                untrusted_env(&env, chain.len()),
            )
            .await
            {
                ChainVerdict::Accepted => Ok(()),
                ChainVerdict::Refused(why) => Err(why),
            }
        }
    }

    /// After the first key exchange: `PLUGIN_TLS_FINAL` for the first key,
    /// then `PLUGIN_IPCHANGE` and `ipchange IP PORT`. A failed `TLS_FINAL`
    /// (the error, starting with [`AUTH_CONTROL_EXIT`]) still runs the
    /// ipchange hooks, as 2.6 moves the key to active all
    /// the same before it stops. Owns all it needs, so the connection can
    /// go on meanwhile.
    pub fn before_push(
        &self,
        server: SocketAddr,
        presented: Vec<Vec<u8>>,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
        let ipchange = self.s.ipchange.clone();
        let ipchange_plugins = self.plugins_for(plugin::IPCHANGE);
        let tls_final_plugins = self.plugins_for(plugin::TLS_FINAL);
        let security = self.s.security;
        let chain = scripts::certificate_chain(&presented, &self.s.peer_ca);
        let env = self.connection_env(server, &chain);
        async move {
            let mut refused = Ok(());
            if let Some(p) = tls_final_plugins {
                // The server's address is not trusted yet; its certificate
                // (and common name) is known.
                let mut env = env.clone();
                for name in ["trusted_ip", "trusted_ip6", "trusted_port"] {
                    env.remove(name);
                }
                if p.call(plugin::TLS_FINAL, Vec::new(), &env).await != Verdict::Success {
                    refused = Err(format!(
                        "{AUTH_CONTROL_EXIT}: a PLUGIN_TLS_FINAL call failed"
                    ));
                }
            }
            let addr = match server {
                SocketAddr::V4(a) => format!("[AF_INET]{}", a.ip()),
                SocketAddr::V6(a) => format!("[AF_INET6]{}", a.ip()),
            };
            // 2.6 formats "ADDRESS PORT" as one argument, for the plugin
            // and the script alike.
            let addr = format!("{addr} {}", server.port());
            if let Some(p) = ipchange_plugins
                && p.call(plugin::IPCHANGE, vec![addr.clone()], &env).await != Verdict::Success
            {
                warn!("WARNING: ipchange plugin call failed");
            }
            if let Some(command) = ipchange {
                let mut env = env;
                env.set("script_type", "ipchange");
                let inv = Invocation {
                    hook: "--ipchange",
                    command,
                    extra: vec![addr],
                    env,
                };
                run::run_reported(inv, security).await;
            }
            refused
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
        let mut after = after_up_env(conn_env, dev, plan, foreign);
        // 2.6 looks the default gateway up when it has routes to add.
        if let Some(gw) = self.net_gateway.take()
            && (plan.route_lines || plan.redirect.is_some())
        {
            after.set("route_net_gateway", gw.to_string());
        }
        if let Some(gw) = self.net_gateway6.take()
            && plan.route6_lines
        {
            after.set("net_gateway_ipv6", gw.to_string());
        }
        after.extend(&ifconfig_env(plan));
        let mut up_env = after.clone();
        up_env.remove("redirect_gateway");
        up_env.set("script_context", context);
        up_env.set("script_type", "up");
        let updown = after.clone();
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
        self.net_gateway = None;
        // Each plugin call takes `script_type` out of 2.6's environment;
        // each script sets it.
        if self.plugins_for(plugin::UP).is_some() {
            updown.remove("script_type");
        }
        if self.s.up.is_some() {
            updown.set("script_type", "up");
        }
        self.up = Some(UpRecord {
            args: args.clone(),
            env: after.clone(),
            updown,
        });
        let mut plugin_args = args.clone();
        plugin_args.push(context.into());
        if !self.call_plugins(plugin::UP, plugin_args, &up_env).await {
            // 2.6 exits without `route-pre-down` or `down` then.
            self.up = None;
            self.abort_plugins();
            return Err("ERROR: up/down plugin call failed".into());
        }
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
                self.abort_plugins();
                return Err(failure);
            }
        }
        // A kept tunnel (persist-tun, up-restart) keeps its routes: 2.6
        // does not add them again, nor says UP.
        if let (true, Some(m), Some(up)) = (fresh, mgmt, &self.up) {
            m.up_down("UP", &up.updown, None);
        }
        if fresh
            && !self
                .call_plugins(plugin::ROUTE_UP, Vec::new(), &after)
                .await
        {
            warn!("WARNING: route-up plugin call failed");
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
    /// `PLUGIN_ROUTE_PREDOWN` and `route-pre-down` (`signal` says why). A
    /// failing plugin is fatal, as in 2.6: the error, and nothing more runs.
    pub async fn before_tear_down(
        &mut self,
        signal: &str,
        mgmt: Option<&ClientManagement>,
    ) -> Result<(), String> {
        if let (Some(m), Some(up)) = (mgmt, &self.up) {
            let mut env = up.updown.clone();
            // The last script 2.6 ran named itself in the environment,
            // `route-up` after everything the route step set.
            let newest = self.s.route_up.is_some().then(|| {
                env.set("script_type", "route-up");
                "script_type"
            });
            if newest.is_none() && self.plugins_for(plugin::ROUTE_UP).is_some() {
                env.remove("script_type");
            }
            m.up_down("DOWN", &env, newest);
        }
        let Some(up) = &self.up else {
            return Ok(());
        };
        let up = up.clone();
        self.down_like(
            plugin::ROUTE_PREDOWN,
            ("--route-pre-down", "route-pre-down"),
            self.s.route_pre_down.clone(),
            &up,
            signal,
            "init",
        )
        .await
    }

    /// The tunnel went: `PLUGIN_DOWN` and `down` with `init`, and the
    /// next configuration is a new tunnel again. A failing plugin is
    /// fatal, as in 2.6.
    pub async fn after_tear_down(&mut self, signal: &str) -> Result<(), String> {
        let Some(up) = self.up.take() else {
            return Ok(());
        };
        self.down_like(
            plugin::DOWN,
            ("--up/--down", "down"),
            self.s.down.clone(),
            &up,
            signal,
            "init",
        )
        .await
    }

    /// A reconnect keeps the tunnel (`persist-tun`): with `up-restart`,
    /// `PLUGIN_DOWN` and `down` run with `restart`.
    pub async fn tunnel_kept(&mut self, signal: &str) -> Result<(), String> {
        let (Some(up), true) = (&self.up, self.s.up_restart) else {
            return Ok(());
        };
        let up = up.clone();
        self.down_like(
            plugin::DOWN,
            ("--up/--down", "down"),
            self.s.down.clone(),
            &up,
            signal,
            "restart",
        )
        .await
    }

    /// 2.6's `run_up_down` for `route-pre-down` and `down`: the plugins
    /// that asked for `hook` (a failure is fatal: the plugins are aborted
    /// and the error returned, the script not run), then the script
    /// (`hook_name`, `script_type`), with the arguments of `up` and
    /// `context`, `signal` in the environment.
    async fn down_like(
        &mut self,
        hook: u32,
        (hook_name, script_type): (&'static str, &str),
        command: Option<scripts::ScriptCommand>,
        up: &UpRecord,
        signal: &str,
        context: &str,
    ) -> Result<(), String> {
        let mut env = up.env.clone();
        env.set("script_context", context);
        env.set("signal", signal);
        let mut extra = up.args.clone();
        extra.push(context.into());
        if !self.call_plugins(hook, extra.clone(), &env).await {
            self.up = None;
            self.abort_plugins();
            return Err("ERROR: up/down plugin call failed".into());
        }
        let Some(command) = command else {
            return Ok(());
        };
        env.set("script_type", script_type);
        let inv = Invocation {
            hook: hook_name,
            command,
            extra,
            env,
        };
        run::run_reported(inv, self.s.security).await;
        Ok(())
    }
}

/// What 2.6's verify callback on a client sees of `env` (the
/// connection's, for a chain of `depth` certificates): before the
/// handshake counted, the server's address is untrusted only, and the
/// certificates' variables come per depth as they are verified.
fn untrusted_env(env: &Env, depth: usize) -> Env {
    let mut untrusted = env.clone();
    for name in ["trusted_ip", "trusted_ip6", "trusted_port", "common_name"] {
        untrusted.remove(name);
    }
    for depth in 0..depth {
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
    without_x509(untrusted)
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

/// The tunnel's addresses as 2.6 sets them when it configures the device
/// (they stay for the later scripts).
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
        if let Some(remote) = v6.remote {
            env.set("ifconfig_ipv6_remote", remote.to_string());
        }
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
    // 2.6 names it with its IPv4 route list, which only `route` and
    // `redirect-gateway` lines make (options.c `rol_check_alloc`).
    if let Some(gw) = plan.gateway
        && (plan.route_lines || plan.redirect.is_some())
    {
        env.set("route_vpn_gateway", gw.to_string());
    }
    // A route without a gateway makes 2.6 list none (see `routes_failed`).
    if !plan.routes_failed {
        for (i, r) in plan.routes.iter().enumerate() {
            let gateway = r.gateway.or(plan.gateway);
            env.set_route(i + 1, r.network, r.netmask, gateway, r.metric);
        }
    }
    for (i, r) in plan.routes6.iter().enumerate() {
        env.set_route_ipv6(i + 1, r.network, r.bits, r.gateway, r.metric);
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
        PushPlan::from_reply(&reply, 1500)
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

    /// As stock 2.6.14's env dumps: a `route` without a gateway takes
    /// every IPv4 route out of the environment; `route-ipv6` gateways are
    /// always named (`::` for none), metrics when set.
    #[test]
    fn route_variables_as_2_6() {
        let p = plan(
            "PUSH_REPLY,route 10.77.0.0 255.255.255.0,route 10.78.0.0 255.255.255.0 10.8.0.9,route-ipv6 fd77::/64,route-ipv6 fd78::/64 fd00::9 5,ping 10",
        );
        let env = after_up_env(&Env::new(), "tun0", &p, &[]);
        let names: Vec<&str> = env.iter().map(|(n, _)| n).collect();
        assert!(
            !names.iter().any(|n| n.starts_with("route_network_")),
            "{names:?}"
        );
        assert!(!names.contains(&"route_vpn_gateway"), "{names:?}");
        assert_eq!(env.get("route_ipv6_gateway_1"), Some("::"));
        assert_eq!(env.get("route_ipv6_metric_1"), None);
        assert_eq!(env.get("route_ipv6_gateway_2"), Some("fd00::9"));
        assert_eq!(env.get("route_ipv6_metric_2"), Some("5"));
        assert_eq!(up_args("tun0", &p), ["tun0", "1500", "0", "", ""]);
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
