//! User scripts as OpenVPN 2.6 runs them: `script-security`, commands
//! split like config lines with positional arguments appended, and only
//! 2.6's environment variables. Scripts run on the async runtime with a
//! timeout (see [`run::SCRIPT_TIMEOUT`]): a slow one never holds up the
//! control plane or other clients.

pub mod command;
pub mod deferred;
pub mod env;
pub mod run;

use std::net::Ipv4Addr;
use std::path::PathBuf;

pub use self::command::{ScriptCommand, Security};
pub use self::env::Env;
pub use self::run::{Invocation, Status};

/// `auth-user-pass-verify CMD via-env|via-file`.
#[derive(Debug, Clone)]
pub struct AuthVerify {
    pub command: ScriptCommand,
    pub via_file: bool,
}

/// The configured scripts and what every one of them sees.
#[derive(Debug, Clone)]
pub struct ScriptSettings {
    pub security: Security,
    pub up: Option<ScriptCommand>,
    pub down: Option<ScriptCommand>,
    pub down_pre: bool,
    pub route_up: Option<ScriptCommand>,
    pub learn_address: Option<ScriptCommand>,
    pub client_connect: Option<ScriptCommand>,
    pub client_disconnect: Option<ScriptCommand>,
    pub auth_user_pass_verify: Option<AuthVerify>,
    /// `plugin` lines, opened in order at start.
    pub plugins: Vec<crate::plugin::PluginSpec>,
    /// `ipchange` (clients).
    pub ipchange: Option<ScriptCommand>,
    /// `route-pre-down`.
    pub route_pre_down: Option<ScriptCommand>,
    /// `up-restart` (clients).
    pub up_restart: bool,
    /// `tls-verify`.
    pub tls_verify: Option<ScriptCommand>,
    /// `tls-export-cert DIR`: where the certificate being verified is
    /// written for the `tls-verify` script and `PLUGIN_TLS_VERIFY` plugins.
    pub tls_export_cert: Option<PathBuf>,
    /// `tls-crypt-v2-verify` (servers).
    pub tls_crypt_v2_verify: Option<ScriptCommand>,
    /// DER of the `ca` certificates: a peer's chain, as scripts see it,
    /// runs from its certificate up through these.
    pub peer_ca: Vec<Vec<u8>>,
    /// Variables 2.6 sets for every script (`daemon*`, `config`, `verb`,
    /// `proto_1`, `local_port_1`, `setenv` pairs, ...).
    pub base_env: Env,
    /// Where credential and control files are created (2.6's `tmp-dir`).
    pub tmp_dir: PathBuf,
    /// `down`/`route-pre-down`'s `signal` on a server: 2.6's description
    /// of the signal that closes the tunnel (`sigterm`, `sigint`, `sighup`,
    /// `sigusr1`).
    pub down_signal: &'static str,
}

impl Default for ScriptSettings {
    fn default() -> Self {
        ScriptSettings {
            security: Security::BuiltIn,
            up: None,
            down: None,
            down_pre: false,
            route_up: None,
            learn_address: None,
            client_connect: None,
            client_disconnect: None,
            auth_user_pass_verify: None,
            plugins: Vec::new(),
            ipchange: None,
            route_pre_down: None,
            up_restart: false,
            tls_verify: None,
            tls_export_cert: None,
            tls_crypt_v2_verify: None,
            peer_ca: Vec::new(),
            base_env: Env::new(),
            tmp_dir: deferred::default_tmp_dir(),
            down_signal: "sigterm",
        }
    }
}

/// `up`/`down`: which one, and the tunnel as 2.6 describes it.
#[derive(Debug, Clone)]
pub struct Tunnel {
    pub dev: String,
    pub tun_mtu: u16,
    /// The IPv4 address (`None` on an IPv6-only server: 2.6 then passes
    /// empty arguments and sets no `ifconfig_local`/`ifconfig_netmask`).
    pub local: Option<Ipv4Addr>,
    /// The netmask (`topology subnet`, as ferrovpn always runs).
    pub netmask: Option<Ipv4Addr>,
    /// The server's IPv6 on the device (`server-ipv6`, `ifconfig-ipv6`).
    pub ipv6: Option<ferrovpn_config::TunnelIpv6>,
}

/// A server's scripts (and plugin hooks) around its tunnel device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelHook {
    /// The device is configured.
    Up,
    /// The routes are in place.
    RouteUp,
    /// The server stops, before its routes go (`route-pre-down`).
    RoutePreDown,
    /// The server stops.
    Down,
}

impl TunnelHook {
    pub fn script_type(self) -> &'static str {
        match self {
            TunnelHook::Up => "up",
            TunnelHook::RouteUp => "route-up",
            TunnelHook::RoutePreDown => "route-pre-down",
            TunnelHook::Down => "down",
        }
    }

    /// The directive as 2.6 names it in its messages.
    pub fn directive(self) -> &'static str {
        match self {
            TunnelHook::Up | TunnelHook::Down => "--up/--down",
            TunnelHook::RouteUp => "--route-up",
            TunnelHook::RoutePreDown => "--route-pre-down",
        }
    }
}

impl Tunnel {
    /// The device's addresses as 2.6 sets them for every script once it
    /// is configured (`do_ifconfig_setenv`): `ifconfig_local` and
    /// `ifconfig_netmask`, `ifconfig_ipv6_local`, `ifconfig_ipv6_netbits`
    /// and `ifconfig_ipv6_remote`.
    pub fn ifconfig_env(&self) -> Env {
        let mut env = Env::new();
        if let (Some(local), Some(netmask)) = (self.local, self.netmask) {
            env.set("ifconfig_local", local.to_string());
            env.set("ifconfig_netmask", netmask.to_string());
        }
        if let Some(v6) = &self.ipv6 {
            env.set("ifconfig_ipv6_local", v6.local.to_string());
            env.set("ifconfig_ipv6_netbits", v6.bits.to_string());
            env.set("ifconfig_ipv6_remote", v6.remote.to_string());
        }
        env
    }

    /// 2.6's arguments of `up`/`down` and their plugin calls:
    /// `dev tun_mtu 0 ifconfig_local ifconfig_netmask init`.
    pub fn up_args(&self) -> Vec<String> {
        let text = |a: Option<Ipv4Addr>| a.map(|a| a.to_string()).unwrap_or_default();
        vec![
            self.dev.clone(),
            self.tun_mtu.to_string(),
            "0".into(),
            text(self.local),
            text(self.netmask),
            "init".into(),
        ]
    }
}

impl ScriptSettings {
    /// The base environment plus `script_type`.
    pub fn env(&self, script_type: &str) -> Env {
        let mut env = self.base_env.clone();
        env.set("script_type", script_type);
        env
    }

    /// 2.6's arguments and environment of `hook` on a server, the same
    /// for the script and the plugins' call: `up`/`down` get
    /// `dev tun_mtu 0 ifconfig_local ifconfig_netmask init` (`down` with
    /// `signal` set), `route-up` no arguments.
    pub fn tunnel_call(&self, hook: TunnelHook, t: &Tunnel) -> (Vec<String>, Env) {
        let mut env = self.env(hook.script_type());
        if matches!(hook, TunnelHook::Down | TunnelHook::RoutePreDown) {
            env.set("signal", self.down_signal);
        }
        env.extend(&Self::tunnel_env(t));
        let args = match hook {
            // `route-pre-down` gets `down`'s arguments, as in 2.6.
            TunnelHook::Up | TunnelHook::Down | TunnelHook::RoutePreDown => t.up_args(),
            TunnelHook::RouteUp => Vec::new(),
        };
        (args, env)
    }

    /// The script of `hook`, when one is configured, as [`Self::tunnel_call`]
    /// describes its call.
    pub fn tunnel_script(&self, hook: TunnelHook, t: &Tunnel) -> Option<Invocation> {
        let command = match hook {
            TunnelHook::Up => &self.up,
            TunnelHook::RouteUp => &self.route_up,
            TunnelHook::RoutePreDown => &self.route_pre_down,
            TunnelHook::Down => &self.down,
        }
        .clone()?;
        let (extra, env) = self.tunnel_call(hook, t);
        Some(Invocation {
            hook: hook.directive(),
            command,
            extra,
            env,
        })
    }

    /// What 2.6 keeps in the environment once the device is up (for
    /// `up`, `down` and the scripts after them).
    pub fn tunnel_env(t: &Tunnel) -> Env {
        let mut env = Env::new();
        env.set("script_context", "init");
        env.set("tun_mtu", t.tun_mtu.to_string());
        env.set("dev", t.dev.clone());
        env.set("dev_type", "tun");
        env.extend(&t.ifconfig_env());
        env
    }

    /// `learn-address OP ADDR [CN]` (2.6 names no CN on `delete`, and the
    /// environment is then only `script_type`).
    pub fn learn_address(
        &self,
        op: &str,
        addr: std::net::IpAddr,
        client: Option<(&str, &Env)>,
    ) -> Option<Invocation> {
        let extra = learn_address_args(op, addr, client.map(|(cn, _)| cn));
        let mut env = match client {
            Some((_, client_env)) => {
                let mut e = self.env("learn-address");
                e.extend(client_env);
                e
            }
            None => Env::new(),
        };
        env.set("script_type", "learn-address");
        Some(Invocation {
            hook: "--learn-address",
            command: self.learn_address.clone()?,
            extra,
            env,
        })
    }

    /// Whether any script is configured (2.6 then logs a note at start).
    pub fn any(&self) -> bool {
        self.up.is_some()
            || self.down.is_some()
            || self.route_up.is_some()
            || self.learn_address.is_some()
            || self.client_connect.is_some()
            || self.client_disconnect.is_some()
            || self.auth_user_pass_verify.is_some()
            || self.ipchange.is_some()
            || self.route_pre_down.is_some()
            || self.tls_verify.is_some()
            || self.tls_crypt_v2_verify.is_some()
    }
}

/// `learn-address`'s arguments, for the script and the plugins alike:
/// `OP ADDR [CN]`.
pub fn learn_address_args(op: &str, addr: std::net::IpAddr, cn: Option<&str>) -> Vec<String> {
    let mut args = vec![op.to_owned(), addr.to_string()];
    args.extend(cn.map(str::to_owned));
    args
}

/// A user name as 2.6 uses it: bytes outside printable ASCII become `_`
/// (`string_mod_remap_name`).
pub fn remap_username(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '_'
            }
        })
        .collect()
}

/// `X509_0_*`, `tls_serial_0`, `tls_serial_hex_0`, `tls_digest_0`,
/// `tls_digest_sha256_0` of a client's certificate (depth 0), as 2.6 sets
/// them; nothing for a certificate that does not parse.
pub fn certificate_env(der: &[u8], env: &mut Env) {
    certificate_env_at(der, 0, env);
}

/// What 2.6's `verify_cert_set_env` sets for the certificate at `depth` of
/// a peer's chain: `X509_{depth}_{field}` (OpenSSL's short names),
/// `tls_id_{depth}` (the subject string), `tls_digest_{depth}` (SHA-1),
/// `tls_digest_sha256_{depth}`, `tls_serial_{depth}` (decimal) and
/// `tls_serial_hex_{depth}`.
pub fn certificate_env_at(der: &[u8], depth: usize, env: &mut Env) {
    use aws_lc_rs::digest;
    use x509_parser::prelude::*;
    let colon_hex = |bytes: &[u8]| {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return;
    };
    for (name, value) in ferrovpn_proto::session::tls::subject_attributes(der).unwrap_or_default() {
        env.set(&format!("X509_{depth}_{name}"), printable(&value));
    }
    if let Some(subject) = subject_string(der) {
        env.set(&format!("tls_id_{depth}"), subject);
    }
    env.set(
        &format!("tls_digest_{depth}"),
        colon_hex(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref()),
    );
    env.set(
        &format!("tls_digest_sha256_{depth}"),
        colon_hex(digest::digest(&digest::SHA256, der).as_ref()),
    );
    env.set(&format!("tls_serial_{depth}"), cert.serial.to_string());
    env.set(
        &format!("tls_serial_hex_{depth}"),
        colon_hex(cert.raw_serial()),
    );
}

/// 2.6's `string_mod(CC_PRINT, CC_CRLF, '_')`: control characters become `_`.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c < ' ' || c == '\x7f' { '_' } else { c })
        .collect()
}

/// The subject string 2.6 passes to `tls-verify` and sets as `tls_id_N`
/// (OpenSSL's one-line form, control characters remapped, a leading `-`
/// made `_` so it cannot read as an option).
pub fn subject_string(der: &[u8]) -> Option<String> {
    let id = ferrovpn_proto::session::tls::peer_identity(der)
        .map(|id| id.subject)
        .or_else(|_| subject_without_cn(der))
        .ok()?;
    let id = printable(&id);
    Some(match id.strip_prefix('-') {
        Some(rest) => format!("_{rest}"),
        None => id,
    })
}

/// A CA certificate may have no CN (which `peer_identity` refuses): its
/// subject from the attributes alone, in the same form.
fn subject_without_cn(der: &[u8]) -> Result<String, ()> {
    let attrs = ferrovpn_proto::session::tls::subject_attributes(der).ok_or(())?;
    Ok(attrs
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join(", "))
}

/// Longest chain a `tls-verify` script is called for (2.6's `MAX_CERT_DEPTH`).
pub const MAX_CERT_DEPTH: usize = 16;

/// The peer's chain as 2.6 verifies it, depth 0 first: its certificate,
/// then each issuer, taken from what the peer sent or the `ca` file, up
/// to a self-issued one (or one whose issuer is not known).
pub fn certificate_chain(peer: &[Vec<u8>], ca: &[Vec<u8>]) -> Vec<Vec<u8>> {
    use x509_parser::prelude::*;
    let Some(leaf) = peer.first() else {
        return Vec::new();
    };
    let names = |der: &[u8]| -> Option<(Vec<u8>, Vec<u8>)> {
        let (_, c) = X509Certificate::from_der(der).ok()?;
        Some((c.subject().as_raw().to_vec(), c.issuer().as_raw().to_vec()))
    };
    let mut chain = vec![leaf.clone()];
    while chain.len() < MAX_CERT_DEPTH {
        let Some((subject, issuer)) = chain.last().and_then(|c| names(c)) else {
            break;
        };
        if subject == issuer {
            break;
        }
        let next = peer[1..]
            .iter()
            .chain(ca)
            .find(|c| !chain.contains(c) && names(c).is_some_and(|(s, _)| s == issuer));
        match next {
            Some(c) => chain.push(c.clone()),
            None => break,
        }
    }
    chain
}

/// What `tls-verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainVerdict {
    Accepted,
    /// Refused at this depth, with 2.6's log line.
    Refused(String),
}

/// The `PLUGIN_TLS_VERIFY` plugins a peer's chain is shown to, with the
/// peer's per-client contexts (`None`: the top-level ones).
pub struct VerifyPlugins {
    pub plugins: std::sync::Arc<crate::plugin::Plugins>,
    pub client: Option<crate::plugin::ClientId>,
}

/// 2.6's verify callback for each certificate of `chain` (depth 0 first in
/// `chain`), from the top down to depth 0: write it into `export_dir`
/// (`tls-export-cert`, as `peer_cert`), set its variables, call the
/// `PLUGIN_TLS_VERIFY` plugins, then run the `tls-verify` `script`; each
/// call sees the variables of the depths before it, and the first refusal
/// refuses the chain. `env` holds what the peer's scripts see anyway.
pub async fn verify_chain(
    script: Option<&ScriptCommand>,
    export_dir: Option<&std::path::Path>,
    plugins: Option<&VerifyPlugins>,
    security: Security,
    chain: &[Vec<u8>],
    mut env: Env,
) -> ChainVerdict {
    let plugins = plugins.filter(|p| p.plugins.wants(crate::plugin::TLS_VERIFY));
    env.set("script_type", "tls-verify");
    for depth in (0..chain.len()).rev() {
        let der = &chain[depth];
        certificate_env_at(der, depth, &mut env);
        if depth == 0
            && let Some(cn) = ferrovpn_proto::session::tls::peer_common_name(der)
        {
            env.set(
                "common_name",
                ferrovpn_proto::session::tls::sanitize_common_name(&cn),
            );
        }
        let subject = subject_string(der).unwrap_or_default();
        let mut call_env = env.clone();
        let mut exported = None;
        if let Some(dir) = export_dir {
            match export_certificate(dir, der) {
                Ok(path) => {
                    call_env.set("peer_cert", path.to_string_lossy().into_owned());
                    exported = Some(path);
                }
                Err(e) => {
                    tracing::warn!("Failed to create peer cert file: {e}");
                    return ChainVerdict::Refused(format!(
                        "TLS Error: Failed to export certificate for --tls-export-cert in {}",
                        dir.display()
                    ));
                }
            }
        }
        // The plugins first, as 2.6; the depth fits: chains are short.
        if let Some(p) = plugins {
            let depth_u32 = u32::try_from(depth).unwrap_or(u32::MAX);
            let verdict = p
                .plugins
                .submit_tls_verify(depth_u32, &subject, der, &call_env, p.client)
                .await;
            if verdict != crate::plugin::Verdict::Success {
                return ChainVerdict::Refused(format!(
                    "VERIFY PLUGIN ERROR: depth={depth}, {subject}"
                ));
            }
            tracing::info!("VERIFY PLUGIN OK: depth={depth}, {subject}");
        }
        if let Some(command) = script {
            let inv = Invocation {
                hook: "--tls-verify script",
                command: command.clone(),
                extra: vec![depth.to_string(), subject.clone()],
                env: call_env,
            };
            let status = run::run(inv, security).await;
            if !status.success() {
                return ChainVerdict::Refused(format!(
                    "VERIFY SCRIPT ERROR: depth={depth}, {subject}"
                ));
            }
            tracing::info!("VERIFY SCRIPT OK: depth={depth}, {subject}");
        }
        // The file goes once the plugins and the script are done.
        drop(exported);
    }
    ChainVerdict::Accepted
}

/// `tls-export-cert`: the certificate as PEM in a fresh file in `dir`
/// (2.6's `pcf` prefix), removed when the path drops.
fn export_certificate(dir: &std::path::Path, der: &[u8]) -> std::io::Result<tempfile::TempPath> {
    use std::io::Write;
    let mut f = tempfile::Builder::new().prefix("pcf").tempfile_in(dir)?;
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    writeln!(f, "-----BEGIN CERTIFICATE-----")?;
    for line in b64.as_bytes().chunks(64) {
        f.write_all(line)?;
        writeln!(f)?;
    }
    writeln!(f, "-----END CERTIFICATE-----")?;
    f.flush()?;
    Ok(f.into_temp_path())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ScriptSettings {
        let mut base = Env::new();
        base.set("daemon", "0");
        ScriptSettings {
            security: Security::Scripts,
            up: Some(ScriptCommand::parse("/x/up 'first arg'")),
            down: Some(ScriptCommand::parse("/x/down")),
            route_up: Some(ScriptCommand::parse("/x/route-up")),
            learn_address: Some(ScriptCommand::parse("/x/learn")),
            base_env: base,
            ..ScriptSettings::default()
        }
    }

    #[test]
    fn up_down_arguments_as_2_6() {
        let s = settings();
        let t = Tunnel {
            dev: "tun0".into(),
            tun_mtu: 1500,
            local: Some(Ipv4Addr::new(10, 8, 0, 1)),
            netmask: Some(Ipv4Addr::new(255, 255, 255, 0)),
            ipv6: None,
        };
        let up = s.tunnel_script(TunnelHook::Up, &t).unwrap();
        assert_eq!(
            up.command.args(&up.extra),
            [
                "first arg",
                "tun0",
                "1500",
                "0",
                "10.8.0.1",
                "255.255.255.0",
                "init"
            ]
        );
        assert_eq!(up.env.get("script_type"), Some("up"));
        assert_eq!(up.env.get("daemon"), Some("0"));
        assert_eq!(up.env.get("ifconfig_netmask"), Some("255.255.255.0"));
        let down = s.tunnel_script(TunnelHook::Down, &t).unwrap();
        assert_eq!(down.env.get("script_type"), Some("down"));
        assert_eq!(down.env.get("signal"), Some("sigterm"));
        assert_eq!(down.extra, up.extra);
        let route_up = s.tunnel_script(TunnelHook::RouteUp, &t).unwrap();
        assert!(route_up.extra.is_empty());
        assert_eq!(route_up.env.get("script_type"), Some("route-up"));
        assert_eq!(route_up.env.get("dev"), Some("tun0"));
        assert_eq!(route_up.hook, "--route-up");
        // The plugins' calls get what the scripts get.
        assert_eq!(s.tunnel_call(TunnelHook::Up, &t), (up.extra, up.env));
        // An IPv6-only server: empty addresses, no IPv4 ifconfig_*
        // variables, the IPv6 ones (as 2.6 sets them for `server-ipv6`).
        let v6_only = Tunnel {
            local: None,
            netmask: None,
            ipv6: Some(
                ferrovpn_config::ServerIpv6 {
                    network: "fd00:6::".parse().unwrap(),
                    bits: 64,
                }
                .tunnel(),
            ),
            ..t
        };
        let up = s.tunnel_script(TunnelHook::Up, &v6_only).unwrap();
        assert_eq!(
            up.command.args(&up.extra),
            ["first arg", "tun0", "1500", "0", "", "", "init"]
        );
        assert_eq!(up.env.get("ifconfig_local"), None);
        assert_eq!(up.env.get("ifconfig_netmask"), None);
        assert_eq!(up.env.get("ifconfig_ipv6_local"), Some("fd00:6::1"));
        assert_eq!(up.env.get("ifconfig_ipv6_netbits"), Some("64"));
        assert_eq!(up.env.get("ifconfig_ipv6_remote"), Some("fd00:6::2"));
    }

    #[test]
    fn learn_address_add_names_the_client_delete_does_not() {
        let s = settings();
        let mut client = Env::new();
        client.set("common_name", "alice");
        let ip = Ipv4Addr::new(10, 8, 0, 2).into();
        let add = s
            .learn_address("add", ip, Some(("alice", &client)))
            .unwrap();
        assert_eq!(add.extra, ["add", "10.8.0.2", "alice"]);
        assert_eq!(add.env.get("common_name"), Some("alice"));
        let del = s.learn_address("delete", ip, None).unwrap();
        assert_eq!(del.extra, ["delete", "10.8.0.2"]);
        assert_eq!(
            del.env.iter().collect::<Vec<_>>(),
            [("script_type", "learn-address")]
        );
        let ip6 = "fd00::1000".parse::<std::net::Ipv6Addr>().unwrap().into();
        let add = s.learn_address("add", ip6, Some(("bob", &client))).unwrap();
        assert_eq!(add.extra, ["add", "fd00::1000", "bob"]);
    }

    /// A root CA, an intermediate and a leaf (DER each).
    fn chain_of_three() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_params = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p
        };
        let root_key = KeyPair::generate().unwrap();
        let root = ca_params("root").self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(ca_params("root"), root_key);
        let inter_key = KeyPair::generate().unwrap();
        let inter = ca_params("inter")
            .signed_by(&inter_key, &root_issuer)
            .unwrap();
        let inter_issuer = Issuer::new(ca_params("inter"), inter_key);
        let mut leaf_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf_params
            .distinguished_name
            .push(DnType::OrganizationName, "Org");
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "leaf");
        let leaf = leaf_params
            .signed_by(&KeyPair::generate().unwrap(), &inter_issuer)
            .unwrap();
        (
            root.der().to_vec(),
            inter.der().to_vec(),
            leaf.der().to_vec(),
        )
    }

    #[test]
    fn chains_are_completed_from_the_ca_file() {
        let (root, inter, leaf) = chain_of_three();
        let full = vec![leaf.clone(), inter.clone(), root.clone()];
        assert_eq!(
            certificate_chain(&[leaf.clone(), inter.clone()], std::slice::from_ref(&root)),
            full
        );
        assert_eq!(
            certificate_chain(std::slice::from_ref(&leaf), &[root.clone(), inter.clone()]),
            full
        );
        // An unknown issuer ends the chain; garbage is a chain of itself.
        assert_eq!(certificate_chain(std::slice::from_ref(&leaf), &[]), [leaf]);
        assert_eq!(
            certificate_chain(&[vec![1, 2, 3]], &[root]),
            [vec![1, 2, 3]]
        );
        assert!(certificate_chain(&[], &[]).is_empty());
    }

    #[test]
    fn certificate_variables_per_depth() {
        let (_, inter, leaf) = chain_of_three();
        let mut env = Env::new();
        certificate_env_at(&inter, 1, &mut env);
        certificate_env_at(&leaf, 0, &mut env);
        assert_eq!(env.get("X509_1_CN"), Some("inter"));
        assert_eq!(env.get("X509_0_CN"), Some("leaf"));
        assert_eq!(env.get("X509_0_O"), Some("Org"));
        assert_eq!(env.get("tls_id_0"), Some("CN=leaf, O=Org"));
        assert_eq!(env.get("tls_id_1"), Some("CN=inter"));
        for name in [
            "tls_serial_1",
            "tls_serial_hex_0",
            "tls_digest_0",
            "tls_digest_sha256_1",
        ] {
            assert!(env.get(name).is_some_and(|v| !v.is_empty()), "{name}");
        }
        // Not a certificate: nothing.
        let mut none = Env::new();
        certificate_env_at(b"junk", 0, &mut none);
        assert_eq!(none.iter().count(), 0);
    }

    #[test]
    fn tls_verify_runs_from_the_top_down_and_stops_at_a_refusal() {
        use std::os::unix::fs::PermissionsExt;
        let (root, inter, leaf) = chain_of_three();
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("record");
        let script = dir.path().join("verify.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho \"$1 $2 $script_type $X509_1_CN $common_name\" >> {}\n[ \"$1\" != 1 ]\n",
                record.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let verify = ScriptCommand::parse(&script.to_string_lossy());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let chain = [leaf, inter, root];
        let verdict = rt.block_on(verify_chain(
            Some(&verify),
            None,
            None,
            Security::Scripts,
            &chain,
            Env::new(),
        ));
        assert_eq!(
            verdict,
            ChainVerdict::Refused("VERIFY SCRIPT ERROR: depth=1, CN=inter".into())
        );
        assert_eq!(
            std::fs::read_to_string(&record).unwrap(),
            "2 CN=root tls-verify  \n1 CN=inter tls-verify inter \n"
        );
        let two = [chain[0].clone(), chain[2].clone()];
        std::fs::remove_file(&record).unwrap();
        // Depth 1 refuses whatever it is; with the root at 1 too.
        let verdict = rt.block_on(verify_chain(
            Some(&verify),
            None,
            None,
            Security::Scripts,
            &two,
            Env::new(),
        ));
        assert!(matches!(verdict, ChainVerdict::Refused(_)));
        let ok = ScriptCommand::parse("/bin/true");
        let verdict = rt.block_on(verify_chain(
            Some(&ok),
            Some(dir.path()),
            None,
            Security::Scripts,
            &two,
            Env::new(),
        ));
        assert_eq!(verdict, ChainVerdict::Accepted);
        // The exported certificate files are gone.
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("pcf"))
            .collect();
        assert!(left.is_empty());
    }

    #[test]
    fn usernames_are_remapped() {
        assert_eq!(remap_username("al ice\n\u{e9}"), "al ice___");
    }
}
