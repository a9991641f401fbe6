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
    /// Variables 2.6 sets for every script (`daemon*`, `config`, `verb`,
    /// `proto_1`, `local_port_1`, `setenv` pairs, ...).
    pub base_env: Env,
    /// Where credential and control files are created (2.6's `tmp-dir`).
    pub tmp_dir: PathBuf,
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
            base_env: Env::new(),
            tmp_dir: deferred::default_tmp_dir(),
        }
    }
}

/// `up`/`down`: which one, and the tunnel as 2.6 describes it.
#[derive(Debug, Clone)]
pub struct Tunnel {
    pub dev: String,
    pub tun_mtu: u16,
    pub local: Ipv4Addr,
    /// The netmask (`topology subnet`, as ferrovpn always runs).
    pub netmask: Ipv4Addr,
}

impl ScriptSettings {
    /// The base environment plus `script_type`.
    pub fn env(&self, script_type: &str) -> Env {
        let mut env = self.base_env.clone();
        env.set("script_type", script_type);
        env
    }

    /// `up` or `down` (`down` is `script_type=down`, `signal` set), with
    /// 2.6's arguments `dev tun_mtu 0 ifconfig_local ifconfig_netmask init`.
    pub fn up_down(&self, down: bool, t: &Tunnel) -> Option<Invocation> {
        let command = if down { &self.down } else { &self.up }.clone()?;
        let mut env = self.env(if down { "down" } else { "up" });
        if down {
            env.set("signal", "sigterm");
        }
        env.extend(&Self::tunnel_env(t));
        Some(Invocation {
            hook: "--up/--down",
            command,
            extra: vec![
                t.dev.clone(),
                t.tun_mtu.to_string(),
                "0".into(),
                t.local.to_string(),
                t.netmask.to_string(),
                "init".into(),
            ],
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
        env.set("ifconfig_local", t.local.to_string());
        env.set("ifconfig_netmask", t.netmask.to_string());
        env
    }

    /// `route-up`: no arguments.
    pub fn route_up(&self, t: &Tunnel) -> Option<Invocation> {
        let mut env = self.env("route-up");
        env.extend(&Self::tunnel_env(t));
        Some(Invocation {
            hook: "--route-up",
            command: self.route_up.clone()?,
            extra: Vec::new(),
            env,
        })
    }

    /// `learn-address OP ADDR [CN]` (2.6 names no CN on `delete`, and the
    /// environment is then only `script_type`).
    pub fn learn_address(
        &self,
        op: &str,
        addr: Ipv4Addr,
        client: Option<(&str, &Env)>,
    ) -> Option<Invocation> {
        let mut extra = vec![op.to_owned(), addr.to_string()];
        let mut env = match client {
            Some((cn, client_env)) => {
                extra.push(cn.to_owned());
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
    }
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
    use aws_lc_rs::digest;
    use x509_parser::prelude::*;
    let colon_hex = |bytes: &[u8]| {
        bytes
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    env.set(
        "tls_digest_0",
        colon_hex(digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, der).as_ref()),
    );
    env.set(
        "tls_digest_sha256_0",
        colon_hex(digest::digest(&digest::SHA256, der).as_ref()),
    );
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return;
    };
    env.set("tls_serial_0", cert.serial.to_string());
    env.set("tls_serial_hex_0", colon_hex(cert.raw_serial()));
    let registry = oid_registry();
    for attr in cert.subject().iter_attributes() {
        let name = x509_parser::objects::oid2sn(attr.attr_type(), registry)
            .map(str::to_owned)
            .unwrap_or_else(|_| attr.attr_type().to_id_string());
        if let Ok(value) = attr.as_str() {
            env.set(&format!("X509_0_{name}"), value);
        }
    }
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
            local: Ipv4Addr::new(10, 8, 0, 1),
            netmask: Ipv4Addr::new(255, 255, 255, 0),
        };
        let up = s.up_down(false, &t).unwrap();
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
        let down = s.up_down(true, &t).unwrap();
        assert_eq!(down.env.get("script_type"), Some("down"));
        assert_eq!(down.env.get("signal"), Some("sigterm"));
    }

    #[test]
    fn learn_address_add_names_the_client_delete_does_not() {
        let s = settings();
        let mut client = Env::new();
        client.set("common_name", "alice");
        let ip = Ipv4Addr::new(10, 8, 0, 2);
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
    }

    #[test]
    fn usernames_are_remapped() {
        assert_eq!(remap_username("al ice\n\u{e9}"), "al ice___");
    }
}
