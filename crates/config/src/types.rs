//! The typed configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use crate::error::Location;

/// Server or client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Server,
    Client,
}

/// Outer transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// `udp`: IPv4 or IPv6, whatever the address resolves to.
    Udp,
    Udp4,
    Udp6,
    /// `tcp`, `tcp4`, `tcp6` and their `-client` / `-server` forms; `role`
    /// is `None` for the plain forms, which take the role of the mode
    /// (`server` → server, `client` → client, as 2.6).
    Tcp {
        family: Family,
        role: Option<TcpRole>,
    },
}

impl Proto {
    pub fn is_tcp(self) -> bool {
        matches!(self, Proto::Tcp { .. })
    }
}

/// Address family a `proto` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Any,
    V4,
    V6,
}

/// Which end of the TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpRole {
    Client,
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevType {
    Tun,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Subnet,
    Net30,
    P2p,
}

/// `server NETWORK NETMASK [nopool]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerNet {
    pub network: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub nopool: bool,
}

/// `ifconfig LOCAL REMOTE|NETMASK` (point-to-point mode): the remote end
/// with `topology net30|p2p`, the netmask with `topology subnet`, as 2.6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ifconfig {
    pub local: Ipv4Addr,
    pub remote_or_netmask: Ipv4Addr,
}

/// `inactive SECONDS [BYTES]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inactive {
    pub secs: u32,
    pub min_bytes: u64,
}

/// `ifconfig-pool START END [NETMASK]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfconfigPool {
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub netmask: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteGateway {
    Addr(Ipv4Addr),
    VpnGateway,
    NetGateway,
    RemoteHost,
}

/// `route NETWORK [NETMASK] [GATEWAY] [METRIC]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub network: Ipv4Addr,
    /// Defaults to 255.255.255.255.
    pub netmask: Ipv4Addr,
    /// `None`: default (the VPN gateway).
    pub gateway: Option<RouteGateway>,
    pub metric: Option<u32>,
}

/// `route-ipv6 NETWORK/BITS [GATEWAY] [METRIC]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteIpv6 {
    pub network: Ipv6Addr,
    pub bits: u8,
    /// `None`: into the tunnel device (2.6 routes a tun's IPv6 routes by
    /// interface, the gateway does not matter there).
    pub gateway: Option<Ipv6Addr>,
    pub metric: Option<u32>,
}

/// `server-ipv6 NETWORK/BITS`: what 2.6's helper expands it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerIpv6 {
    pub network: Ipv6Addr,
    pub bits: u8,
}

impl ServerIpv6 {
    /// The server's own address: the network's first address (`+1`).
    pub fn server_address(&self) -> Ipv6Addr {
        Ipv6Addr::from(u128::from(self.network).wrapping_add(1))
    }

    /// The first pool address: `+0x1000` for networks shorter than /112,
    /// else `+2` (2.6's helper; smaller networks cannot reach 0x1000).
    pub fn pool_base(&self) -> Ipv6Addr {
        let offset = if self.bits < 112 { 0x1000 } else { 2 };
        Ipv6Addr::from(u128::from(self.network).wrapping_add(offset))
    }

    /// How many addresses the pool has from [`ServerIpv6::pool_base`] to
    /// the network's last address.
    pub fn pool_size(&self) -> u128 {
        // `bits` is 64..=124 (checked by the parser): the shift is in range.
        let host_mask = (1u128 << (128 - u32::from(self.bits).clamp(1, 127))) - 1;
        let last = u128::from(self.network) | host_mask;
        last.saturating_sub(u128::from(self.pool_base())) + 1
    }
}

/// `ifconfig-ipv6 ADDR/BITS REMOTE`: a server's own IPv6 tunnel address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfconfigIpv6 {
    pub local: Ipv6Addr,
    /// 64..=124, as 2.6 checks.
    pub bits: u8,
    /// The point-to-point peer; unused by a server's tun in subnet mode.
    pub remote: Ipv6Addr,
}

/// `ifconfig-ipv6-pool BASE/BITS`: where clients' IPv6 addresses come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Pool {
    pub base: Ipv6Addr,
    /// 64..=124, as 2.6 checks.
    pub bits: u8,
}

/// 2.6's `IFCONFIG_POOL_MAX`: no pool hands out more addresses.
pub const IFCONFIG_POOL_MAX: u32 = 65536;

impl Ipv6Pool {
    /// The low 32 bits of the base that are host bits (2.6's pool.c looks
    /// at those only).
    fn host_base(&self) -> u32 {
        let low = u128::from(self.base) as u32;
        if 128 - u32::from(self.bits) < 32 {
            low & ((1u32 << (128 - u32::from(self.bits))) - 1)
        } else {
            low
        }
    }

    /// The first address handed out: the base, or base+1 when its host
    /// part (the last 32 bits) is zero (the subnet-router anycast address).
    pub fn first(&self) -> Ipv6Addr {
        let bump = u128::from(self.host_base() == 0);
        Ipv6Addr::from(u128::from(self.base).wrapping_add(bump))
    }

    /// How many addresses the pool has, as 2.6's pool.c counts: up to the
    /// network's end for /112 and longer, else [`IFCONFIG_POOL_MAX`].
    pub fn size(&self) -> u32 {
        if self.bits >= 112 {
            let base = self.host_base().max(1);
            (1u32 << (128 - u32::from(self.bits))).saturating_sub(base)
        } else {
            IFCONFIG_POOL_MAX
        }
    }
}

/// A server's IPv6 inside the tunnel, from `server-ipv6` or from
/// `ifconfig-ipv6` (+ `ifconfig-ipv6-pool`), the form the helper expands to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelIpv6 {
    /// The server's address on its tun device, pushed as each client's
    /// `ifconfig-ipv6` remote.
    pub local: Ipv6Addr,
    /// The server's netbits, pushed with each client's address.
    pub bits: u8,
    /// `ifconfig-ipv6`'s REMOTE (NETWORK+2 with `server-ipv6`): unused on a
    /// server's device, but 2.6's scripts see it as `ifconfig_ipv6_remote`.
    pub remote: Ipv6Addr,
    /// `None`: clients get IPv6 only from `ifconfig-ipv6-push`.
    pub pool: Option<Ipv6Pool>,
}

impl ServerIpv6 {
    /// What 2.6's helper expands `server-ipv6` to.
    pub fn tunnel(&self) -> TunnelIpv6 {
        TunnelIpv6 {
            local: self.server_address(),
            bits: self.bits,
            remote: Ipv6Addr::from(u128::from(self.network).wrapping_add(2)),
            pool: Some(Ipv6Pool {
                base: self.pool_base(),
                bits: self.bits,
            }),
        }
    }
}

impl Config {
    /// The server's IPv6 inside the tunnel: `server-ipv6`'s expansion (it
    /// overrides `ifconfig-ipv6`, as 2.6's helper does), else `ifconfig-ipv6`
    /// with `ifconfig-ipv6-pool` if given.
    pub fn tunnel_ipv6(&self) -> Option<TunnelIpv6> {
        if let Some(v6) = &self.server_ipv6 {
            return Some(v6.tunnel());
        }
        self.ifconfig_ipv6.map(|l| TunnelIpv6 {
            local: l.local,
            bits: l.bits,
            remote: l.remote,
            pool: self.ifconfig_ipv6_pool,
        })
    }
}

/// What a `pull-filter` line does with the pushed options it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFilterAction {
    Accept,
    Ignore,
    Reject,
}

/// `pull-filter accept|ignore|reject "TEXT"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullFilter {
    pub action: PullFilterAction,
    pub prefix: String,
}

/// `keepalive INTERVAL TIMEOUT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    pub interval: u32,
    pub timeout: u32,
}

/// Where key material came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaterialSource {
    File(PathBuf),
    Inline,
}

/// PEM / static-key text, loaded at parse time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    pub source: MaterialSource,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyDirection {
    /// `0`
    Zero,
    /// `1`
    One,
}

/// `tls-auth FILE [DIR]` or inline `<tls-auth>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsAuth {
    pub material: Material,
    /// From the second argument; see [`Config::tls_auth_direction`] for the
    /// effective value (which also considers `key-direction`).
    pub direction: Option<KeyDirection>,
}

/// `tls-crypt-v2`: a server key (servers) or a client key (clients).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCryptV2 {
    pub material: Material,
    /// Server: `force-cookie` (refuse tls-crypt-v2 clients that cannot do
    /// the stateless handshake); 2.6's default is `allow-noncookie`.
    pub force_cookie: bool,
}

/// `askpass [FILE]`: where the passphrase of an encrypted `key` or a
/// `pkcs12` file comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Askpass {
    /// `askpass` alone (or `askpass stdin`): ask on the terminal at start.
    Terminal,
    /// `askpass FILE`: the file's first line.
    File(PathBuf),
}

/// `pkcs12 FILE` (DER, read at parse time) or an inline `<pkcs12>` block
/// (base64, as 2.6 takes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pkcs12 {
    File { path: PathBuf, der: Vec<u8> },
    Inline { base64: String },
}

/// `dh`: ferrovpn never uses finite-field DH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dh {
    None,
    /// A DH parameter file (not read; ignored with a warning).
    File(PathBuf),
    Inline,
}

/// `reneg-sec N [MAX]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenegSec {
    pub secs: u32,
    pub max: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    V1_0,
    V1_1,
    V1_2,
    V1_3,
}

/// `status FILE [N]`, `ifconfig-pool-persist FILE [N]`: a file and a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusFile {
    pub path: std::path::PathBuf,
    pub interval_secs: u32,
}

/// `log FILE` (truncated at start) or `log-append FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    pub path: PathBuf,
    pub append: bool,
}

/// Where `management` listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagementListen {
    /// `management IP PORT`.
    Tcp(std::net::SocketAddr),
    /// `management PATH unix`.
    Unix(std::path::PathBuf),
}

/// `management IP PORT [PW-FILE]` / `management PATH unix [PW-FILE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Management {
    pub listen: ManagementListen,
    /// The file whose first line is the password a management client must give.
    pub password_file: Option<std::path::PathBuf>,
}

/// `tls-version-min V [or-highest]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsVersionMin {
    pub version: TlsVersion,
    pub or_highest: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MssfixMode {
    /// No `mssfix` line or a bare `mssfix`: 1492 with the outer headers
    /// (or `fragment`'s MAX, or a non-default `tun-mtu`, as 2.6).
    Default,
    /// `mssfix N mtu`: N counts the outer IP and UDP/TCP headers.
    Mtu,
    /// `mssfix N fixed`: N is the inner packet's size.
    Fixed,
    /// `mssfix N`: N is the datagram's payload, outer headers not counted
    /// (2.6's meaning since 2.6.0).
    Payload,
}

/// `mssfix [N] [mtu|fixed]`; `max == 0` disables clamping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mssfix {
    pub max: u16,
    pub mode: MssfixMode,
}

/// `fragment MAX [mtu]`: split data packets inside the tunnel so that no
/// datagram's payload (with `mtu`: the whole IP packet) exceeds `max` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// 68 or more, as 2.6 demands.
    pub max: u16,
    /// `mtu`: `max` counts the outer IP and UDP headers too.
    pub encap: bool,
}

/// `replay-window N [T]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayWindow {
    pub size: u32,
    pub time: Option<u32>,
}

/// `remote HOST [PORT] [PROTO]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub host: String,
    pub port: Option<u16>,
    pub proto: Option<Proto>,
}

/// `local HOST|* [PORT] [PROTO]`, OpenVPN 2.7's form (2.6 takes `HOST` only).
/// A server may have several: one listening socket each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalEntry {
    /// `None` for `*` (any address) and for a host name.
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
    pub proto: Option<Proto>,
    /// A host name in place of the address, resolved once at start.
    pub name: Option<String>,
}

/// `port-share HOST PORT [DIR]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortShareConf {
    /// The address; unspecified when `host_name` is given.
    pub host: IpAddr,
    pub port: u16,
    pub journal_dir: Option<PathBuf>,
    /// A host name in place of the address, resolved once at start to its
    /// first IPv4 address (as 2.6's port_share_open asks for AF_INET).
    pub host_name: Option<String>,
}

/// `connect-retry N [MAX]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectRetry {
    pub secs: u32,
    pub max: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteCertTls {
    Server,
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum X509NameType {
    Subject,
    Name,
    NamePrefix,
}

/// `verify-x509-name NAME [TYPE]` (type defaults to `subject`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyX509Name {
    pub name: String,
    pub kind: X509NameType,
}

/// `dhcp-option TYPE [VALUE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpOption {
    pub kind: String,
    pub value: Option<String>,
}

/// `script-security N` and the scripts run on events: each command as
/// written in the config (one argument; split like a config line when run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scripts {
    /// `script-security 0..3` (default 1: no user scripts).
    pub security: Option<u8>,
    pub up: Option<String>,
    pub down: Option<String>,
    /// `down-pre`: run `down` before the tunnel device closes.
    pub down_pre: bool,
    pub route_up: Option<String>,
    pub learn_address: Option<String>,
    pub client_connect: Option<String>,
    pub client_disconnect: Option<String>,
    pub auth_user_pass_verify: Option<AuthUserPassVerify>,
    /// `plugin PATH [ARGS]` lines, in order.
    pub plugins: Vec<PluginLine>,
    /// `ipchange CMD` (clients).
    pub ipchange: Option<String>,
    /// `route-pre-down CMD` (clients).
    pub route_pre_down: Option<String>,
    /// `up-restart`: `up`/`down` run on restarts that keep the tunnel too.
    pub up_restart: bool,
    /// `tls-verify CMD`.
    pub tls_verify: Option<String>,
    /// `tls-export-cert DIR`: the certificate `tls-verify` checks, as a file.
    pub tls_export_cert: Option<String>,
    /// `tls-crypt-v2-verify CMD` (servers).
    pub tls_crypt_v2_verify: Option<String>,
}

/// `plugin PATH [ARGS]`: the shared object as written and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLine {
    pub path: String,
    pub args: Vec<String>,
}

/// `auth-gen-token [LIFETIME] [RENEWAL] [external-auth]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthGenToken {
    /// Seconds a token is valid after the first login (`None`: no limit).
    pub lifetime: Option<u32>,
    /// Seconds between renewals (`None`: `reneg-sec`).
    pub renewal: Option<u32>,
    /// `external-auth`: a token login runs the checks again.
    pub external_auth: bool,
}

/// `auth-user-pass-verify CMD via-env|via-file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUserPassVerify {
    pub command: String,
    /// `via-file`: the credentials go in a temporary file named as the last
    /// argument; `via-env`: in `username`/`password` (the password only at
    /// `script-security 3`).
    pub via_file: bool,
}

/// `auth-user-pass [FILE]` or an inline `<auth-user-pass>` block: the user
/// name on the first line, the password on the second. What is missing is
/// asked for on the terminal.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthUserPass {
    /// Where the lines came from; `None`: nothing given, ask for both.
    pub source: Option<MaterialSource>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl std::fmt::Debug for AuthUserPass {
    // The password must not reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthUserPass")
            .field("source", &self.source)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// `auth-retry none|nointeract|interact`: what a client does on AUTH_FAILED.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AuthRetry {
    /// Exit (the default).
    #[default]
    None,
    /// Reconnect with the same credentials.
    NoInteract,
    /// Ask for the credentials again, then reconnect.
    Interact,
}

/// `static-challenge TEXT ECHO`: ask a second factor with TEXT at start and
/// send it with the password in the SCRV1 format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticChallenge {
    pub text: String,
    /// The answer is echoed while typed.
    pub echo: bool,
}

/// Data-channel ciphers ferrovpn implements (upper case, OpenSSL names).
pub const SUPPORTED_DATA_CIPHERS: &[&str] = &[
    "AES-128-GCM",
    "AES-256-GCM",
    "CHACHA20-POLY1305",
    "AES-128-CBC",
    "AES-192-CBC",
    "AES-256-CBC",
];
/// Ciphers of OpenSSL 3's legacy provider (Blowfish, DES, ...): OpenVPN 2.6
/// on a stock OpenSSL 3 cannot load them and refuses them in `data-ciphers`.
pub fn is_legacy_provider_cipher(name: &str) -> bool {
    let up = name.to_ascii_uppercase();
    [
        "BF-", "DES", "RC2-", "RC4", "CAST5-", "SEED", "IDEA", "DESX",
    ]
    .iter()
    .any(|p| up.starts_with(p))
}
/// OpenVPN 2.6's default `data-ciphers`.
pub const DEFAULT_DATA_CIPHERS: &[&str] = &["AES-256-GCM", "AES-128-GCM", "CHACHA20-POLY1305"];
/// Default port.
pub const DEFAULT_PORT: u16 = 1194;

/// A parsed configuration. Fields are `None`/empty/false when the directive
/// was absent; accessor methods apply OpenVPN's defaults. Values produced by
/// the `parse_*` functions and [`Config::from_args`] have been checked by
/// [`Config::finalize`], which also sets [`Config::mode`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    pub mode: Option<Mode>,
    pub tls_server: bool,
    pub tls_client: bool,
    pub pull: bool,
    /// Point-to-point TLS mode (2.6's `MODE_POINT_TO_POINT` with TLS):
    /// `tls-server` without `mode server`, or `tls-client` without `pull`.
    /// Set by finalize; the single-peer runtime (`Mode::Client`) runs it,
    /// in the TLS role `tls_server` / `tls_client` names.
    pub p2p: bool,
    /// `ifconfig LOCAL REMOTE|NETMASK` (point-to-point mode only).
    pub ifconfig: Option<Ifconfig>,

    pub port: Option<u16>,
    pub lport: Option<u16>,
    pub rport: Option<u16>,
    pub local: Option<IpAddr>,
    /// Every `local` line, in order (`local` above is the last one's address).
    pub locals: Vec<LocalEntry>,
    pub port_share: Option<PortShareConf>,
    pub proto: Option<Proto>,
    pub dev: Option<String>,
    pub dev_type: Option<DevType>,
    pub topology: Option<Topology>,

    pub server: Option<ServerNet>,
    pub ifconfig_pool: Option<IfconfigPool>,
    pub push: Vec<String>,
    pub routes: Vec<Route>,
    /// `server-ipv6 NETWORK/BITS`.
    pub server_ipv6: Option<ServerIpv6>,
    /// `route-ipv6` lines, in order.
    pub routes_ipv6: Vec<RouteIpv6>,
    /// `ifconfig-ipv6 ADDR/BITS REMOTE` (servers; see [`Config::tunnel_ipv6`]).
    pub ifconfig_ipv6: Option<IfconfigIpv6>,
    /// `ifconfig-ipv6-pool BASE/BITS`.
    pub ifconfig_ipv6_pool: Option<Ipv6Pool>,
    pub client_to_client: bool,
    pub max_clients: Option<u32>,
    pub duplicate_cn: bool,
    /// `connect-freq N SEC`.
    pub connect_freq: Option<(u32, u32)>,
    /// `connect-freq-initial N SEC`.
    pub connect_freq_initial: Option<(u32, u32)>,

    pub remotes: Vec<Remote>,
    pub remote_random: bool,
    /// `local HOSTNAME` (a name, not an address): resolved at start.
    pub local_name: Option<String>,
    /// `remote-random-hostname`: a random label before each remote name.
    pub remote_random_hostname: bool,
    /// `http-proxy ...` with its `http-proxy-option` lines.
    pub http_proxy: Option<crate::connection::HttpProxy>,
    /// `http-proxy-user-pass FILE` or inline: replaces the proxy's AUTHFILE.
    pub http_proxy_user_pass: Option<crate::connection::ProxyCredentials>,
    /// `socks-proxy HOST [PORT] [AUTHFILE]`.
    pub socks_proxy: Option<crate::connection::SocksProxy>,
    /// `<connection>` blocks, in order (see [`Config::connection_list`]).
    pub connections: Vec<crate::connection::ConnectionEntry>,
    pub connect_retry: Option<ConnectRetry>,
    pub connect_retry_max: Option<u32>,
    /// `connect-timeout N` / `server-poll-timeout N`.
    pub connect_timeout: Option<u32>,
    pub nobind: bool,
    /// `float`: a UDP client or point-to-point end takes a new session from
    /// whatever address its peer answers from (authenticated), not only the
    /// `remote` address.
    pub float: bool,
    pub redirect_gateway: Option<Vec<String>>,
    /// `route-gateway GW`: the gateway of routes that name none.
    pub route_gateway: Option<Ipv4Addr>,
    /// `route-metric M`: the metric of routes that name none.
    pub route_metric: Option<u32>,
    /// `route-nopull`: pushed routes, redirect-gateway and DNS are dropped.
    pub route_nopull: bool,
    /// `route-noexec`: no route is added.
    pub route_noexec: bool,
    /// `ifconfig-noexec`: the tun device's address and MTU are not set.
    pub ifconfig_noexec: bool,
    /// `pull-filter` lines, in order.
    pub pull_filters: Vec<PullFilter>,
    pub dhcp_options: Vec<DhcpOption>,
    pub explicit_exit_notify: Option<u32>,

    pub keepalive: Option<Keepalive>,
    pub ping: Option<u32>,
    pub ping_restart: Option<u32>,
    pub ping_exit: Option<u32>,
    /// `inactive N [BYTES]`: exit after N seconds with less than BYTES of
    /// tunnel traffic (0: any), keepalives not counted; N = 0 disables.
    pub inactive: Option<Inactive>,
    pub reneg_sec: Option<RenegSec>,
    pub reneg_bytes: Option<u64>,
    pub reneg_pkts: Option<u64>,
    pub hand_window: Option<u32>,
    pub tran_window: Option<u32>,
    pub tls_timeout: Option<u32>,
    /// `tls-exit`: a failed TLS handshake ends the process (2.6's SIGTERM
    /// with `tls-error`) instead of restarting.
    pub tls_exit: bool,

    pub auth_user_pass: Option<AuthUserPass>,
    pub auth_nocache: bool,
    pub auth_retry: Option<AuthRetry>,
    pub static_challenge: Option<StaticChallenge>,

    pub ca: Option<Material>,
    pub cert: Option<Material>,
    pub key: Option<Material>,
    pub extra_certs: Vec<Material>,
    /// `crl-verify FILE` (or inline): PEM certificate revocation lists.
    pub crl_verify: Option<Material>,
    /// `askpass [FILE]`.
    pub askpass: Option<Askpass>,
    /// `pkcs12 FILE` or `<pkcs12>`: certificate, key and CAs in one file.
    pub pkcs12: Option<Pkcs12>,
    pub dh: Option<Dh>,
    pub tls_crypt: Option<Material>,
    /// `tls-crypt-v2 FILE [force-cookie|allow-noncookie]` or inline.
    pub tls_crypt_v2: Option<TlsCryptV2>,
    pub tls_auth: Option<TlsAuth>,
    pub key_direction: Option<KeyDirection>,
    pub auth: Option<String>,
    /// Supported entries only, upper case, in the configured order.
    pub data_ciphers: Option<Vec<String>>,
    pub data_ciphers_fallback: Option<String>,
    pub cipher: Option<String>,
    pub tls_version_min: Option<TlsVersionMin>,
    pub remote_cert_tls: Option<RemoteCertTls>,
    pub verify_x509_name: Option<VerifyX509Name>,
    /// `ns-cert-type server|client`.
    pub ns_cert_type: Option<RemoteCertTls>,
    /// `remote-cert-ku [HEX...]`: empty means the extension must be present.
    pub remote_cert_ku: Option<Vec<u32>>,
    /// `remote-cert-eku OID|NAME`.
    pub remote_cert_eku: Option<String>,
    /// `tls-cert-profile legacy|preferred`.
    pub tls_cert_profile: Option<String>,
    pub replay_window: Option<ReplayWindow>,

    pub tun_mtu: Option<u16>,
    /// `tun-mtu-extra N`: bytes 2.6 counts beside each packet (it takes them
    /// off the MSS clamp and adds them to the OCC `link-mtu`).
    pub tun_mtu_extra: Option<u16>,
    pub mssfix: Option<Mssfix>,
    /// `fragment MAX [mtu]` (UDP only).
    pub fragment: Option<Fragment>,
    /// `passtos`: copy the TOS byte of inner IPv4 packets to the datagrams.
    pub passtos: bool,
    pub txqueuelen: Option<u32>,

    pub verb: Option<u8>,
    /// `status FILE [N]`: where and how often (seconds, default 60).
    pub status: Option<StatusFile>,
    /// `status-version 1|2|3` (default 1).
    pub status_version: Option<u8>,
    /// `ifconfig-pool-persist FILE [N]` (N seconds, default 600; 0 = read only).
    pub ifconfig_pool_persist: Option<StatusFile>,
    pub persist_key: bool,
    pub persist_tun: bool,
    /// `comp-lzo`, `compress`, `comp-noadapt`, `allow-compression`, with 2.6's
    /// default applied by `finalize`.
    pub compression: crate::compression::CompressOptions,
    /// `user NAME`: run as this user once set up.
    pub user: Option<String>,
    /// `group NAME`: run as this group once set up.
    pub group: Option<String>,
    /// `chroot DIR`: change the root directory once set up (servers only).
    pub chroot: Option<PathBuf>,
    /// `client-config-dir DIR`: per-client config files, read at connect
    /// time (inside the chroot, if any).
    pub client_config_dir: Option<PathBuf>,
    /// `ccd-exclusive`: refuse a client without a file of its own there.
    pub ccd_exclusive: bool,
    /// `setenv NAME VALUE` pairs (not `setenv opt`).
    pub setenv: Vec<(String, String)>,
    /// `script-security` and the scripts run on events.
    pub scripts: Scripts,
    /// `username-as-common-name`: the verified user name replaces the
    /// certificate's common name (server).
    pub username_as_common_name: bool,
    /// `auth-user-pass-optional`: a client that sends no user name and
    /// password is still checked, with both empty (server).
    pub auth_user_pass_optional: bool,
    /// `verify-client-cert none|optional|require` (server).
    pub verify_client_cert: VerifyClientCert,
    /// `auth-gen-token [LIFETIME] [RENEWAL] [external-auth]`.
    pub auth_gen_token: Option<AuthGenToken>,
    /// `auth-gen-token-secret FILE` (or inline).
    pub auth_gen_token_secret: Option<Material>,
    /// Names from `ignore-unknown-option`.
    pub ignore_unknown: BTreeSet<String>,

    /// `management ...`.
    pub management: Option<Management>,
    /// `management-hold`: start only after a management client says `hold release`.
    pub management_hold: bool,
    /// `management-up-down`: `>UPDOWN:UP|DOWN` and the environment.
    pub management_up_down: bool,
    /// `management-client-auth`: every client waits for `client-auth`.
    pub management_client_auth: bool,
    /// `management-log-cache N`.
    pub management_log_cache: Option<u32>,
    /// `management-client-user U` / `management-client-group G` (unix socket only).
    pub management_client_user: Option<String>,
    pub management_client_group: Option<String>,
    /// `management-query-passwords` (clients): missing `auth-user-pass`
    /// credentials are asked over the management interface.
    pub management_query_passwords: bool,
    /// `management-query-remote` (clients): ask `>REMOTE:` before each attempt.
    pub management_query_remote: bool,
    /// `management-query-proxy` (clients): ask `>PROXY:` before each attempt.
    pub management_query_proxy: bool,

    /// ferrovpn: `metrics IP:PORT`, where the Prometheus endpoint listens (servers).
    pub metrics: Option<std::net::SocketAddr>,
    /// `writepid FILE`.
    pub writepid: Option<PathBuf>,
    /// `log FILE` / `log-append FILE`: where log lines go instead of stderr.
    pub log: Option<LogFile>,
    /// `syslog [NAME]`: log to syslog (the journal under systemd) as NAME.
    /// `daemon [NAME]` sets it too; the first of them names the log.
    pub syslog: Option<String>,
    /// `daemon [NAME]`: detach once set up (not under systemd).
    pub daemon: bool,

    /// ferrovpn: data-plane worker threads.
    pub workers: Option<usize>,
    /// ferrovpn: pin workers to CPUs.
    pub cpu_pin: bool,
    /// ferrovpn, clients: every worker seals the tunnel's batches.
    pub seal_spread: bool,
    /// ferrovpn: largest datagram the data plane handles.
    pub max_packet_size: Option<u16>,

    /// `file:line: message` for each accepted-but-ignored directive.
    pub warnings: Vec<String>,

    /// Last location of each directive (for cross-field errors).
    pub(crate) seen: BTreeMap<String, Location>,
}

impl Config {
    /// Where a directive was last seen.
    pub fn location_of(&self, directive: &str) -> Option<&Location> {
        self.seen.get(directive)
    }

    /// Why ferrovpn rejects a directive as a whole (same text as in errors
    /// and `docs/compatibility.md`).
    pub fn unsupported_reason(directive: &str) -> Option<&'static str> {
        crate::table::unsupported_reason(directive)
    }

    /// `mode` after finalize; `Server` if called on an unfinalized config
    /// that has no mode.
    pub fn mode(&self) -> Mode {
        self.mode.unwrap_or(Mode::Server)
    }
    pub fn is_server(&self) -> bool {
        self.mode() == Mode::Server
    }
    /// `dev null`: no tun device (point-to-point mode only).
    pub fn is_dev_null(&self) -> bool {
        self.dev.as_deref() == Some("null")
    }
    /// `lport`, else `port`, else 1194.
    pub fn local_port(&self) -> u16 {
        self.lport.or(self.port).unwrap_or(DEFAULT_PORT)
    }
    /// Port for a `remote` without one: `rport`, else `port`, else 1194.
    pub fn default_remote_port(&self) -> u16 {
        self.rport.or(self.port).unwrap_or(DEFAULT_PORT)
    }
    /// Port of a given remote, with defaults applied.
    pub fn remote_port(&self, remote: &Remote) -> u16 {
        remote.port.unwrap_or_else(|| self.default_remote_port())
    }
    pub fn proto(&self) -> Proto {
        self.proto.unwrap_or(Proto::Udp)
    }
    /// OpenVPN 2.6 default: net30.
    pub fn topology(&self) -> Topology {
        self.topology.unwrap_or(Topology::Net30)
    }
    pub fn tun_mtu(&self) -> u16 {
        self.tun_mtu.unwrap_or(1500)
    }
    /// Effective `data-ciphers` (OpenVPN 2.6 default when absent).
    pub fn data_ciphers(&self) -> Vec<String> {
        match &self.data_ciphers {
            Some(v) => v.clone(),
            None => DEFAULT_DATA_CIPHERS.iter().map(|s| s.to_string()).collect(),
        }
    }
    /// tls-auth HMAC digest (default SHA1).
    pub fn auth(&self) -> &str {
        self.auth.as_deref().unwrap_or("SHA1")
    }
    /// Seconds between pings: `ping`, else keepalive interval.
    pub fn ping_interval(&self) -> Option<u32> {
        self.ping.or(self.keepalive.map(|k| k.interval))
    }
    /// Seconds without traffic before restart: `ping-restart`, else the
    /// keepalive timeout (doubled on a server, like OpenVPN).
    pub fn ping_restart_secs(&self) -> Option<u32> {
        self.ping_restart.or_else(|| {
            self.keepalive.map(|k| {
                if self.is_server() {
                    k.timeout.saturating_mul(2)
                } else {
                    k.timeout
                }
            })
        })
    }
    pub fn reneg_secs(&self) -> u32 {
        self.reneg_sec.map(|r| r.secs).unwrap_or(3600)
    }
    pub fn hand_window(&self) -> u32 {
        self.hand_window.unwrap_or(60)
    }
    pub fn tran_window(&self) -> u32 {
        self.tran_window.unwrap_or(3600)
    }
    pub fn tls_timeout(&self) -> u32 {
        self.tls_timeout.unwrap_or(2)
    }
    pub fn verb(&self) -> u8 {
        self.verb.unwrap_or(1)
    }
    pub fn max_clients(&self) -> u32 {
        self.max_clients.unwrap_or(1024)
    }
    /// `connect-freq` (default `0 0`: no limit).
    pub fn connect_freq(&self) -> (u32, u32) {
        self.connect_freq.unwrap_or((0, 0))
    }
    /// `connect-freq-initial` (2.6's default: 100 answers per 10 s).
    pub fn connect_freq_initial(&self) -> (u32, u32) {
        self.connect_freq_initial.unwrap_or((100, 10))
    }
    /// Replay window (default 64 packets, 15 s).
    pub fn replay_window(&self) -> ReplayWindow {
        self.replay_window.unwrap_or(ReplayWindow {
            size: 64,
            time: Some(15),
        })
    }
    /// Effective MSS clamp (default `1492`, OpenVPN-style).
    pub fn mssfix(&self) -> Mssfix {
        self.mssfix.unwrap_or(Mssfix {
            max: 1492,
            mode: MssfixMode::Default,
        })
    }
    /// `connect-timeout` / `server-poll-timeout` (2.6 default 120 s).
    pub fn connect_timeout(&self) -> u32 {
        self.connect_timeout.unwrap_or(120)
    }
    /// Connect retry (default 1 s, max 300 s).
    pub fn connect_retry(&self) -> ConnectRetry {
        self.connect_retry.unwrap_or(ConnectRetry {
            secs: 1,
            max: Some(300),
        })
    }
    /// Direction for tls-auth: the argument, else `key-direction`.
    pub fn tls_auth_direction(&self) -> Option<KeyDirection> {
        self.tls_auth
            .as_ref()
            .and_then(|t| t.direction)
            .or(self.key_direction)
    }
    /// Data-plane workers: `workers`, else the number of CPUs.
    pub fn workers(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
    }
    /// Largest datagram (default 65535).
    pub fn max_packet_size(&self) -> u16 {
        self.max_packet_size.unwrap_or(u16::MAX)
    }
    /// Server tunnel address (first host of the `server` network).
    pub fn server_ip(&self) -> Option<Ipv4Addr> {
        self.server
            .map(|s| Ipv4Addr::from(u32::from(s.network).wrapping_add(1)))
    }
}

/// `verify-client-cert`: whether a server asks clients for a certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum VerifyClientCert {
    /// Not asked for; clients log in with username/password only.
    None,
    /// Asked for and verified when sent; a client may send none.
    Optional,
    /// Required (the default).
    #[default]
    Require,
}
