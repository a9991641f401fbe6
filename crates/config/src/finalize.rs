//! Cross-directive rules, applied once the whole configuration is read.

use crate::error::{ConfigError, Location, Reason};
use std::net::IpAddr;

use crate::table::{
    CHROOT_CLIENT_REASON, IFCONFIG_OUTSIDE_P2P_REASON, SEAL_SPREAD_REASON, TAP_REASON,
};
use crate::types::*;

impl Config {
    fn loc(&self, directive: &str, fallback: &Location) -> Location {
        self.seen
            .get(directive)
            .cloned()
            .unwrap_or_else(|| fallback.clone())
    }

    fn fail(&self, directive: &str, whole: &Location, msg: String) -> ConfigError {
        ConfigError::new(&self.loc(directive, whole), Reason::Invalid(msg))
    }

    /// Check cross-directive rules and set [`Config::mode`]. `name` is used
    /// for errors that concern the configuration as a whole (line 0).
    /// Idempotent; the `parse_*` functions and `from_args` call it.
    pub fn finalize(&mut self, name: &str) -> Result<(), ConfigError> {
        let whole = Location {
            file: name.to_string(),
            line: 0,
        };
        let server_side = self.mode == Some(Mode::Server) || self.tls_server;
        if server_side && self.tls_client {
            return Err(self.fail(
                "tls-client",
                &whole,
                "both server ('server'/'mode server'/'tls-server') and client ('client'/'tls-client') directives given".into(),
            ));
        }
        // 2.6 runs point-to-point mode (one peer, no pool, no push) for a
        // TLS role without `mode server` / `pull`; the single-peer runtime
        // (`Mode::Client`) drives it in that role.
        let mode = if server_side {
            if self.mode == Some(Mode::Server) {
                if !self.tls_server {
                    return Err(self.fail(
                        "mode",
                        &whole,
                        "'mode server' needs 'tls-server' (static-key mode is not supported)"
                            .into(),
                    ));
                }
                Mode::Server
            } else {
                self.p2p = true;
                Mode::Client
            }
        } else if self.tls_client {
            self.p2p = !self.pull;
            Mode::Client
        } else {
            return Err(ConfigError::new(
                &whole,
                Reason::Invalid(
                    "no mode: expected 'server NETWORK NETMASK' (or 'mode server' + 'tls-server') or 'client'".into(),
                ),
            ));
        };
        self.mode = Some(mode);

        // Device.
        let Some(dev) = &self.dev else {
            return Err(ConfigError::new(
                &whole,
                Reason::Invalid("missing 'dev' (e.g. 'dev tun')".into()),
            ));
        };
        if dev == "null" {
            if !self.p2p {
                return Err(ConfigError::new(
                    &self.loc("dev", &whole),
                    Reason::Unsupported {
                        directive: "dev null".into(),
                        reason: "a null device is supported in point-to-point mode only ('tls-server' / 'tls-client' without 'server' / 'client')",
                    },
                ));
            }
        } else if !dev.starts_with("tun") && self.dev_type.is_none() {
            return Err(self.fail(
                "dev",
                &whole,
                format!("'dev {dev}' does not start with 'tun'; add 'dev-type tun'"),
            ));
        }
        if dev.starts_with("tap") {
            return Err(ConfigError::new(
                &self.loc("dev", &whole),
                Reason::Unsupported {
                    directive: format!("dev {dev}"),
                    reason: TAP_REASON,
                },
            ));
        }

        // Certificates.
        if self.pkcs12.is_some() {
            // As 2.6: the file gives both; `ca` stays optional (the file's
            // CA certificates are the trust anchors without it).
            for d in ["cert", "key"] {
                if self.location_of(d).is_some() {
                    return Err(self.fail(
                        d,
                        &whole,
                        format!("'{d}' cannot be used when 'pkcs12' is also specified"),
                    ));
                }
            }
        } else if self.ca.is_none() {
            return Err(ConfigError::new(
                &whole,
                Reason::Invalid("missing 'ca' (file or inline <ca> block)".into()),
            ));
        }
        match (&self.cert, &self.key) {
            (Some(_), Some(_)) => {}
            (None, None) if self.pkcs12.is_some() => {}
            (Some(_), None) => {
                return Err(self.fail("cert", &whole, "'cert' given without 'key'".into()));
            }
            (None, Some(_)) => {
                return Err(self.fail("key", &whole, "'key' given without 'cert'".into()));
            }
            // Username/password clients authenticate without a certificate.
            (None, None) if mode == Mode::Client && self.auth_user_pass.is_some() => {}
            (None, None) => {
                return Err(ConfigError::new(
                    &whole,
                    Reason::Invalid(
                        "missing 'cert' and 'key' (a client may use 'auth-user-pass' instead)"
                            .into(),
                    ),
                ));
            }
        }
        if mode == Mode::Server && self.auth_user_pass.is_some() {
            return Err(self.fail(
                "auth-user-pass",
                &whole,
                "'auth-user-pass' requires 'pull' (it is a client option)".into(),
            ));
        }
        if self.tls_crypt.is_some() && self.tls_auth.is_some() {
            return Err(self.fail(
                "tls-crypt",
                &whole,
                "'tls-crypt' and 'tls-auth' cannot be used together".into(),
            ));
        }
        // A server may serve both kinds of clients; a client uses one.
        if mode == Mode::Client
            && self.tls_crypt_v2.is_some()
            && (self.tls_crypt.is_some() || self.tls_auth.is_some())
        {
            return Err(self.fail(
                "tls-crypt-v2",
                &whole,
                "'tls-crypt-v2', 'tls-auth' and 'tls-crypt' are mutually exclusive in client mode"
                    .into(),
            ));
        }

        self.finalize_compression(&whole)?;
        self.finalize_manual_ipv6(mode, &whole)?;

        self.finalize_ifconfig(&whole)?;
        if self.p2p {
            self.finalize_p2p(&whole)?;
        }
        match mode {
            Mode::Server => self.finalize_server(&whole)?,
            Mode::Client => {
                // A point-to-point end without one waits for its peer.
                if !self.p2p && self.remotes.is_empty() && self.connections.is_empty() {
                    return Err(ConfigError::new(
                        &whole,
                        Reason::Invalid("client mode needs at least one 'remote'".into()),
                    ));
                }
                self.finalize_connections(&whole)?;
                if self.seal_spread && self.fragment.is_some() {
                    return Err(ConfigError::new(
                        &self.loc("seal-spread", &whole),
                        Reason::Unsupported {
                            directive: "seal-spread".into(),
                            reason: SEAL_SPREAD_REASON,
                        },
                    ));
                }
                for key in [
                    "server",
                    "ifconfig-pool",
                    "push",
                    "client-to-client",
                    "duplicate-cn",
                    "max-clients",
                    "connect-freq",
                    "learn-address",
                    "client-connect",
                    "client-disconnect",
                    "tls-crypt-v2-verify",
                    "auth-user-pass-verify",
                    "username-as-common-name",
                    "auth-user-pass-optional",
                    "auth-gen-token",
                    "auth-gen-token-secret",
                    "client-config-dir",
                    "ccd-exclusive",
                    "metrics",
                ] {
                    if self.seen.contains_key(key) {
                        return Err(self.fail(
                            key,
                            &whole,
                            format!(
                                "'{key}' is a server directive, but this is a client configuration"
                            ),
                        ));
                    }
                }
                if self.chroot.is_some() {
                    return Err(self.fail("chroot", &whole, CHROOT_CLIENT_REASON.into()));
                }
                if self.port_share.is_some() {
                    return Err(self.fail(
                        "port-share",
                        &whole,
                        "--port-share only works in TCP server mode (--proto values of tcp-server, tcp4-server, or tcp6-server), as in 2.6".into(),
                    ));
                }
                if self.locals.len() > 1 {
                    return Err(self.fail(
                        "local",
                        &whole,
                        "multiple --local statements only allowed in --server mode (as in 2.7)"
                            .into(),
                    ));
                }
                if self
                    .locals
                    .iter()
                    .any(|l| l.port.is_some() || l.proto.is_some())
                {
                    return Err(self.fail(
                        "local",
                        &whole,
                        "a client's 'local' takes an address only; set its port with 'lport'"
                            .into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// 2.6's default (stubs only unless a compression flag was set) and its
    /// `check_compression_settings_valid`, reported at the directive that
    /// enabled the algorithm.
    fn finalize_compression(&mut self, whole: &Location) -> Result<(), ConfigError> {
        self.compression.finish();
        if let Err(e) = self.compression.check() {
            let at = ["compress", "comp-lzo", "allow-compression"]
                .iter()
                .filter_map(|d| self.seen.get(*d))
                .max_by_key(|l| l.line)
                .cloned()
                .unwrap_or_else(|| whole.clone());
            return Err(ConfigError::new(&at, Reason::Invalid(e.to_string())));
        }
        Ok(())
    }

    fn finalize_server(&self, whole: &Location) -> Result<(), ConfigError> {
        if self.seal_spread {
            return Err(ConfigError::new(
                &self.loc("seal-spread", whole),
                Reason::Unsupported {
                    directive: "seal-spread".into(),
                    reason: SEAL_SPREAD_REASON,
                },
            ));
        }
        // An IPv6-only server needs no `server`: its clients get IPv6 from
        // its pool (2.6's pool with IPv6 only) or, without one, from their
        // client-config-dir files.
        if self.server.is_none() && self.tunnel_ipv6().is_none() {
            return Err(self.fail(
                "mode",
                whole,
                "server mode needs 'server NETWORK NETMASK', or 'server-ipv6 NETWORK/BITS' (or 'ifconfig-ipv6') for IPv6-only clients".into(),
            ));
        }
        if !self.remotes.is_empty() {
            return Err(self.fail(
                "remote",
                whole,
                "'remote' is a client directive, but this is a server configuration".into(),
            ));
        }
        // 2.6's options_postprocess_verify_ce: a login must be checked by
        // something for the option to mean anything.
        if self.auth_user_pass_optional
            && self.scripts.auth_user_pass_verify.is_none()
            && self.scripts.plugins.is_empty()
            && !self.management_client_auth
        {
            return Err(self.fail(
                "auth-user-pass-optional",
                whole,
                "--auth-user-pass-optional must be used with --management-client-auth, an --auth-user-pass-verify script, or plugin".into(),
            ));
        }
        for (key, what) in [
            (
                "connection",
                "<connection> cannot be used with --mode server",
            ),
            (
                "http-proxy",
                "--http-proxy cannot be used with --mode server",
            ),
            (
                "socks-proxy",
                "--socks-proxy cannot be used with --mode server",
            ),
        ] {
            if self.seen.contains_key(key) {
                return Err(self.fail(key, whole, what.into()));
            }
        }
        if let Some(pool) = self.ifconfig_pool {
            let Some(srv) = self.server else {
                return Err(ConfigError::new(
                    &self.loc("ifconfig-pool", whole),
                    Reason::Unsupported {
                        directive: "ifconfig-pool".into(),
                        reason: "an IPv4 pool needs 'server NETWORK NETMASK' in ferrovpn (a server's own 'ifconfig' is not supported)",
                    },
                ));
            };
            let net = u32::from(srv.network);
            let mask = u32::from(srv.netmask);
            for a in [pool.start, pool.end] {
                if u32::from(a) & mask != net {
                    return Err(self.fail(
                        "ifconfig-pool",
                        whole,
                        format!(
                            "'ifconfig-pool' address {a} is outside the 'server' network {}/{}",
                            srv.network, srv.netmask
                        ),
                    ));
                }
            }
            if let Some(ip) = self.server_ip()
                && pool.start <= ip
                && ip <= pool.end
            {
                return Err(self.fail(
                    "ifconfig-pool",
                    whole,
                    format!(
                        "'ifconfig-pool' {}-{} contains the server address {ip}",
                        pool.start, pool.end
                    ),
                ));
            }
        }
        if let Some(token) = &self.auth_gen_token {
            // 2.6 refuses both at start (options.c, server checks): a token
            // lives by renegotiations, and a renewal must leave room for
            // the handshake that carries the new token.
            if self.reneg_secs() == 0 {
                return Err(self.fail(
                    "auth-gen-token",
                    whole,
                    "'auth-gen-token' needs a non-infinite 'reneg-sec'".into(),
                ));
            }
            if let Some(renewal) = token.renewal
                && u64::from(renewal) < 2 * u64::from(self.hand_window())
            {
                return Err(self.fail(
                    "auth-gen-token",
                    whole,
                    format!(
                        "'auth-gen-token' renewal time {renewal} s is less than two times 'hand-window' ({} s)",
                        self.hand_window()
                    ),
                ));
            }
        }
        if self.ccd_exclusive && self.client_config_dir.is_none() {
            // 2.6: "--ccd-exclusive must be used with --client-config-dir".
            return Err(self.fail(
                "ccd-exclusive",
                whole,
                "'ccd-exclusive' must be used with 'client-config-dir'".into(),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// `ifconfig-ipv6` and `ifconfig-ipv6-pool`, 2.6's rules: the pool
    /// needs `mode server` and the server's own `ifconfig-ipv6`, and cannot
    /// be given beside `server-ipv6` (which defines one).
    fn finalize_manual_ipv6(&self, mode: Mode, whole: &Location) -> Result<(), ConfigError> {
        if mode != Mode::Server {
            if self.ifconfig_ipv6_pool.is_some() {
                return Err(self.fail(
                    "ifconfig-ipv6-pool",
                    whole,
                    "--ifconfig-ipv6-pool requires --mode server".into(),
                ));
            }
            if self.ifconfig_ipv6.is_some() {
                return Err(ConfigError::new(
                    &self.loc("ifconfig-ipv6", whole),
                    Reason::Unsupported {
                        directive: "ifconfig-ipv6".into(),
                        reason: "a client gets its IPv6 address pushed by the server; a static one (point-to-point setup) is not supported",
                    },
                ));
            }
            return Ok(());
        }
        if self.ifconfig_ipv6_pool.is_some() {
            if self.server_ipv6.is_some() {
                return Err(self.fail(
                    "ifconfig-ipv6-pool",
                    whole,
                    "--server-ipv6 already defines an ifconfig-ipv6-pool, so you can't also specify --ifconfig-ipv6-pool explicitly".into(),
                ));
            }
            if self.ifconfig_ipv6.is_none() {
                return Err(self.fail(
                    "ifconfig-ipv6-pool",
                    whole,
                    "--ifconfig-ipv6-pool needs --ifconfig-ipv6".into(),
                ));
            }
        }
        if self.server_ipv6.is_some() && self.server.is_some_and(|s| s.nopool) {
            return Err(self.fail(
                "server-ipv6",
                whole,
                "--server-ipv6 is incompatible with 'nopool' option".into(),
            ));
        }
        Ok(())
    }

    /// `ifconfig`: point-to-point mode only (a server's addresses come from
    /// `server`, a pulling client's from the push), and 2.6's address
    /// checks (`options_postprocess_verify_ce`).
    fn finalize_ifconfig(&self, whole: &Location) -> Result<(), ConfigError> {
        let Some(ifc) = self.ifconfig else {
            return Ok(());
        };
        if !self.p2p {
            return Err(ConfigError::new(
                &self.loc("ifconfig", whole),
                Reason::Unsupported {
                    directive: "ifconfig".into(),
                    reason: IFCONFIG_OUTSIDE_P2P_REASON,
                },
            ));
        }
        if ifc.local == ifc.remote_or_netmask {
            return Err(self.fail(
                "ifconfig",
                whole,
                "local and remote/netmask --ifconfig addresses must be different".into(),
            ));
        }
        if self.is_dev_null() {
            return Err(self.fail(
                "ifconfig",
                whole,
                "'ifconfig' needs a tun device; 'dev null' has none".into(),
            ));
        }
        let ifconfig_addr =
            |a: IpAddr| a == IpAddr::V4(ifc.local) || a == IpAddr::V4(ifc.remote_or_netmask);
        if self
            .remotes
            .iter()
            .any(|r| r.host.parse::<IpAddr>().is_ok_and(ifconfig_addr))
        {
            return Err(self.fail(
                "ifconfig",
                whole,
                "--local and --remote addresses must be distinct from --ifconfig addresses".into(),
            ));
        }
        if self.local.is_some_and(ifconfig_addr) {
            return Err(self.fail(
                "ifconfig",
                whole,
                "--local addresses must be distinct from --ifconfig addresses".into(),
            ));
        }
        Ok(())
    }

    /// Point-to-point TLS mode: what ferrovpn runs of it, and 2.6's rules.
    fn finalize_p2p(&self, whole: &Location) -> Result<(), ConfigError> {
        let unsupported = |directive: &str, reason: &'static str| {
            ConfigError::new(
                &self.loc(directive, whole),
                Reason::Unsupported {
                    directive: directive.into(),
                    reason,
                },
            )
        };
        // Without `remote` the end waits on its `lport` for the peer (2.6:
        // no remote list, so `link_socket_verify_incoming_addr` lets any
        // address in and the first authenticated hard reset sets it).
        let waits = self.remotes.is_empty() && self.connections.is_empty();
        if waits && self.proto().is_tcp() {
            return Err(unsupported(
                "proto",
                "a point-to-point end without 'remote' (waiting for its peer) over TCP is not supported: point-to-point mode runs over UDP only",
            ));
        }
        if waits && self.nobind {
            // 2.6's check and words (options.c).
            return Err(self.fail(
                "nobind",
                whole,
                "--nobind doesn't make sense unless used with --remote".into(),
            ));
        }
        if waits && self.seen.contains_key("redirect-gateway") {
            return Err(unsupported(
                "redirect-gateway",
                "a point-to-point end without 'remote' does not know its peer's address to route around the tunnel",
            ));
        }
        if waits && self.seen.contains_key("persist-remote-ip") {
            return Err(unsupported(
                "persist-remote-ip",
                "a point-to-point end without 'remote' forgets its peer's address on a restart and waits again; keeping it (2.6 sends its next reset there) is not supported",
            ));
        }
        if self.proto().is_tcp() {
            return Err(unsupported(
                "proto",
                "point-to-point mode over TCP is not supported; use UDP",
            ));
        }
        if self.connections.iter().any(|c| c.proto().is_tcp()) {
            return Err(unsupported(
                "connection",
                "point-to-point mode over TCP is not supported; use UDP",
            ));
        }
        if self.tls_crypt_v2.is_some() {
            return Err(unsupported(
                "tls-crypt-v2",
                "tls-crypt-v2 in point-to-point mode is not supported; use 'tls-crypt' or 'tls-auth'",
            ));
        }
        // 2.6's wording (options.c).
        for (key, what) in [
            ("auth-user-pass", "--auth-user-pass requires --pull"),
            (
                "ifconfig-pool",
                "--ifconfig-pool/--ifconfig-pool-persist requires --mode server",
            ),
        ] {
            if self.seen.contains_key(key) {
                return Err(self.fail(key, whole, what.into()));
            }
        }
        Ok(())
    }

    /// 2.6's per-entry checks (`options_postprocess_verify_ce`), at the
    /// entry's `<connection>` or `remote` line.
    fn finalize_connections(&self, whole: &Location) -> Result<(), ConfigError> {
        for entry in self.connection_list() {
            let at = entry.location.clone().unwrap_or_else(|| whole.clone());
            let fail = |msg: &str| ConfigError::new(&at, Reason::Invalid(msg.into()));
            if let Some(p) = &entry.http_proxy {
                if p.host.is_empty() {
                    return Err(fail(
                        "--http-proxy not specified but other http proxy options present",
                    ));
                }
                if !entry.proto().is_tcp() {
                    return Err(fail(
                        "--http-proxy MUST be used in TCP Client mode (i.e. --proto tcp-client)",
                    ));
                }
                if entry.socks_proxy.is_some() {
                    return Err(fail(
                        "--http-proxy can not be used together with --socks-proxy",
                    ));
                }
                if let crate::connection::HttpProxyAuth::Auto { nct: false, .. } = p.auth
                    && self.http_proxy_user_pass.is_none()
                {
                    return Err(fail(
                        "'http-proxy ... auto' needs 'http-proxy-user-pass' (ferrovpn does not ask for proxy credentials on the terminal)",
                    ));
                }
            }
        }
        Ok(())
    }
}
