//! The client's connection list, as OpenVPN 2.6 builds it (options.c): each
//! `<connection>` block is one entry, holding the connection options given
//! before the block plus those inside it; without blocks, each `remote`
//! line is one entry with the connection options of the whole file. An
//! entry carries its own transport: proto, ports, local address, retry and
//! timeout, explicit-exit-notify and proxy.

use std::net::IpAddr;

use zeroize::Zeroizing;

use crate::error::Location;
use crate::types::{Config, ConnectRetry, DEFAULT_PORT, Proto, Remote};

/// Directives 2.6 allows inside a `<connection>` block (`OPT_P_CONNECTION`).
/// Given at the top level after a block, they change nothing (2.6 warns).
pub const CONNECTION_DIRECTIVES: &[&str] = &[
    "remote",
    "proto",
    "port",
    "lport",
    "rport",
    "local",
    "bind",
    "nobind",
    "connect-retry",
    "connect-retry-max",
    "connect-timeout",
    "server-poll-timeout",
    "explicit-exit-notify",
    "float",
    "http-proxy",
    "http-proxy-option",
    "http-proxy-retry",
    "http-proxy-timeout",
    "socks-proxy",
    "socks-proxy-retry",
    "tun-mtu",
    "tun-mtu-extra",
    "link-mtu",
    "mtu-disc",
    "mssfix",
    "fragment",
    "tls-auth",
    "tls-crypt",
    "tls-crypt-v2",
    "key-direction",
];

/// Connection options ferrovpn applies to the whole client, not per entry:
/// refused inside a block (given outside, they apply to every entry).
pub const NOT_PER_CONNECTION: &[(&str, &str)] = &[
    (
        "tun-mtu",
        "per-connection MTU settings are not supported; give 'tun-mtu' outside <connection>",
    ),
    (
        "link-mtu",
        "per-connection MTU settings are not supported; give it outside <connection>",
    ),
    (
        "mssfix",
        "per-connection MTU settings are not supported; give 'mssfix' outside <connection>",
    ),
    (
        "mtu-disc",
        "per-connection MTU settings are not supported; give it outside <connection>",
    ),
    (
        "fragment",
        "per-connection fragmentation is not supported; give 'fragment' outside <connection>",
    ),
    (
        "tls-auth",
        "per-connection control channel keys are not supported; give the key outside <connection>",
    ),
    (
        "tls-crypt",
        "per-connection control channel keys are not supported; give the key outside <connection>",
    ),
    (
        "tls-crypt-v2",
        "per-connection control channel keys are not supported; give the key outside <connection>",
    ),
    (
        "key-direction",
        "per-connection control channel keys are not supported; give it outside <connection>",
    ),
];

/// A proxy user name and password (from a file or an inline block).
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyCredentials {
    pub username: String,
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for ProxyCredentials {
    // The password must not reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ProxyCredentials({}, ***)", self.username)
    }
}

/// How the client authenticates to an HTTP proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpProxyAuth {
    /// No `Proxy-Authorization` (the default).
    None,
    /// `basic`: user name and password, sent with the first request.
    Basic(ProxyCredentials),
    /// `auto` / `auto-nct`: ask without, and answer a 407 that offers
    /// Basic with the `http-proxy-user-pass` credentials (never with
    /// `auto-nct`, which forbids cleartext methods).
    Auto {
        nct: bool,
        credentials: Option<ProxyCredentials>,
    },
}

/// `http-proxy HOST PORT [AUTHFILE|auto|auto-nct] [basic|none]` with its
/// `http-proxy-option` lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpProxy {
    pub host: String,
    pub port: u16,
    pub auth: HttpProxyAuth,
    /// `http-proxy-option VERSION` (2.6's default `1.0`).
    pub version: String,
    /// `http-proxy-option AGENT`.
    pub user_agent: Option<String>,
    /// `http-proxy-option CUSTOM-HEADER|EXT1|EXT2 NAME [CONTENT]`.
    pub custom_headers: Vec<(String, Option<String>)>,
}

/// `socks-proxy HOST [PORT] [AUTHFILE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocksProxy {
    pub host: String,
    /// Default 1080.
    pub port: u16,
    /// From AUTHFILE: user name and password.
    pub credentials: Option<ProxyCredentials>,
}

/// One entry of the connection list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionEntry {
    /// The `remote` line (its own port and proto, if it gave them).
    pub remote: Remote,
    pub proto: Option<Proto>,
    pub port: Option<u16>,
    pub lport: Option<u16>,
    pub rport: Option<u16>,
    pub local: Option<IpAddr>,
    /// `local HOSTNAME`: resolved when the client starts.
    pub local_name: Option<String>,
    pub nobind: bool,
    /// `float`.
    pub float: bool,
    pub connect_retry: Option<ConnectRetry>,
    pub connect_timeout: Option<u32>,
    pub explicit_exit_notify: Option<u32>,
    pub http_proxy: Option<HttpProxy>,
    pub socks_proxy: Option<SocksProxy>,
    /// Where the entry was given: its `<connection>` line or `remote` line.
    pub location: Option<Location>,
}

impl ConnectionEntry {
    /// The entry for `remote` with the connection options `cfg` holds.
    pub(crate) fn new(cfg: &Config, remote: &Remote, location: Option<Location>) -> Self {
        ConnectionEntry {
            remote: remote.clone(),
            proto: cfg.proto,
            port: cfg.port,
            lport: cfg.lport,
            rport: cfg.rport,
            local: cfg.local,
            local_name: cfg.local_name.clone(),
            nobind: cfg.nobind,
            float: cfg.float,
            connect_retry: cfg.connect_retry,
            connect_timeout: cfg.connect_timeout,
            explicit_exit_notify: cfg.explicit_exit_notify,
            http_proxy: cfg.http_proxy.clone(),
            socks_proxy: cfg.socks_proxy.clone(),
            location,
        }
    }

    /// The remote line's PROTO, else `proto`, else UDP.
    pub fn proto(&self) -> Proto {
        self.remote.proto.or(self.proto).unwrap_or(Proto::Udp)
    }
    /// The remote line's PORT, else `rport`, else `port`, else 1194.
    pub fn remote_port(&self) -> u16 {
        self.remote
            .port
            .or(self.rport)
            .or(self.port)
            .unwrap_or(DEFAULT_PORT)
    }
    /// `connect-retry` (default 1 s, at most 300 s).
    pub fn connect_retry(&self) -> ConnectRetry {
        self.connect_retry.unwrap_or(ConnectRetry {
            secs: 1,
            max: Some(300),
        })
    }
    /// `connect-timeout` / `server-poll-timeout` (default 120 s).
    pub fn connect_timeout(&self) -> u32 {
        self.connect_timeout.unwrap_or(120)
    }
}

impl Config {
    /// The one connection entry of a point-to-point end without `remote`
    /// (it waits for its peer): the connection options given, and an
    /// empty host, as 2.6 makes one entry of them when there is no remote.
    pub fn entry_without_remote(&self) -> ConnectionEntry {
        let none = Remote {
            host: String::new(),
            port: None,
            proto: None,
        };
        ConnectionEntry::new(self, &none, None)
    }

    /// The client's connection list, as 2.6 builds it: the `<connection>`
    /// blocks if there are any (then `remote` lines outside them do
    /// nothing), else one entry per `remote` line.
    pub fn connection_list(&self) -> Vec<ConnectionEntry> {
        if !self.connections.is_empty() {
            return self.connections.clone();
        }
        let at = self.location_of("remote").cloned();
        self.remotes
            .iter()
            .map(|r| ConnectionEntry::new(self, r, at.clone()))
            .collect()
    }
}
