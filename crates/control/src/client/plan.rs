//! What a PUSH_REPLY asks the client to configure, decided without touching
//! the system: [`PushPlan::from_reply`] is pure, `super::tunnel` applies it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ferrovpn_proto::push::{PushOption, PushReply};
use ferrovpn_proto::wire::PEER_ID_UNDEFINED;

/// How the tunnel's IPv4 address is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// `ifconfig LOCAL NETMASK`.
    Subnet,
    /// `net30` / `p2p`: `ifconfig LOCAL REMOTE`.
    PointToPoint,
}

/// One pushed `route`, with the gateway and metric already resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushedRoute {
    pub network: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    /// Its own METRIC, else `route-metric`'s, else none (the kernel's 0).
    pub metric: Option<u32>,
}

/// The pushed `ifconfig-ipv6 ADDR/BITS [REMOTE]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ifconfig6 {
    pub local: Ipv6Addr,
    pub bits: u8,
    /// REMOTE: the default gateway of `route-ipv6` lines (2.6's
    /// `ifconfig_ipv6_remote`), unused on the tun device itself.
    pub remote: Option<Ipv6Addr>,
}

/// One pushed (or own) `route-ipv6`, into the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushedRoute6 {
    pub network: Ipv6Addr,
    pub bits: u8,
    /// Its own GATEWAY, else `route-ipv6-gateway`, else `ifconfig-ipv6`'s
    /// REMOTE (2.6's `init_route_ipv6`): what scripts see as
    /// `route_ipv6_gateway_N`. A tun device routes by interface, so the
    /// installed route names none (as 2.6's `add_route_ipv6` on tun).
    pub gateway: Option<Ipv6Addr>,
    /// Its own METRIC, else `route-metric`'s, else none (the kernel's default).
    pub metric: Option<u32>,
}

/// The networks `redirect-gateway ipv6` routes into the tunnel, as the
/// stock 2.6 client adds them: `::/3`, `2000::/4`, `3000::/4` and
/// `fc00::/7` (the global unicast and unique local space, leaving
/// link-local and multicast on their links).
pub const REDIRECT_IPV6_NETWORKS: [(Ipv6Addr, u8); 4] = [
    (Ipv6Addr::UNSPECIFIED, 3),
    (Ipv6Addr::new(0x2000, 0, 0, 0, 0, 0, 0, 0), 4),
    (Ipv6Addr::new(0x3000, 0, 0, 0, 0, 0, 0, 0), 4),
    (Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 0), 7),
];

/// What `redirect-gateway FLAGS` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redirect {
    /// IPv4 default traffic into the tunnel (all but `!ipv4`).
    pub ipv4: bool,
    /// `local`: server on the same subnet, no host route to it.
    pub local: bool,
    /// `ipv6` with a pushed `ifconfig-ipv6`: IPv6 default traffic into the
    /// tunnel ([`REDIRECT_IPV6_NETWORKS`]).
    pub ipv6: bool,
    /// `block-ipv6`, or `ipv6` without an IPv6 address in the tunnel: IPv6
    /// default traffic must not leave outside the tunnel (unreachable routes).
    pub block_ipv6: bool,
    /// `bypass-dns`: host routes to the pushed DNS servers outside the tunnel.
    pub bypass_dns: bool,
}

/// Pushed name resolution settings (`dhcp-option DNS/DOMAIN/DOMAIN-SEARCH`,
/// 2.6's `dns server N address A` and `dns search-domains D`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsPlan {
    pub servers: Vec<IpAddr>,
    /// `dhcp-option DOMAIN`: the connection's own domain (searched first).
    pub domain: Option<String>,
    pub search: Vec<String>,
    /// The pushed `dns` directives as 2.6 keeps them (servers ordered by
    /// priority), for the link's DNSSEC / DNS-over-TLS mode and the
    /// `dns_*` script variables.
    pub dns: DnsOptions,
    /// The link's DNSSEC mode (systemd-resolved: `SetLinkDNSSEC`).
    pub dnssec: Option<Dnssec>,
    /// The link's transport (systemd-resolved: `SetLinkDNSOverTLS`).
    pub transport: Option<DnsTransport>,
}

/// 2.6's `dns` options: `dns search-domains` lines and `dns server N ...`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsOptions {
    pub search_domains: Vec<String>,
    /// By priority `N` (lowest first), as 2.6 orders them.
    pub servers: Vec<DnsServer>,
}

/// One `dns server N ...` entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsServer {
    pub priority: i8,
    /// Addresses with the port when one was given.
    pub addresses: Vec<(IpAddr, Option<u16>)>,
    pub resolve_domains: Vec<String>,
    pub dnssec: Option<Dnssec>,
    pub transport: Option<DnsTransport>,
    pub sni: Option<String>,
}

/// `dns server N dnssec yes|optional|no`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dnssec {
    Yes,
    Optional,
    No,
}

impl Dnssec {
    /// The word 2.6 uses in `dns_server_N_dnssec`.
    pub fn name(self) -> &'static str {
        match self {
            Dnssec::Yes => "yes",
            Dnssec::Optional => "optional",
            Dnssec::No => "no",
        }
    }
}

/// `dns server N transport plain|DoT|DoH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsTransport {
    Plain,
    Tls,
    Https,
}

impl DnsTransport {
    /// The word 2.6 uses in `dns_server_N_transport`.
    pub fn name(self) -> &'static str {
        match self {
            DnsTransport::Plain => "plain",
            DnsTransport::Tls => "DoT",
            DnsTransport::Https => "DoH",
        }
    }
}

impl DnsOptions {
    /// The `dns_*` variables 2.6 gives scripts: `dns_search_domain_I`,
    /// then per server (numbered by position in priority order)
    /// `dns_server_I_address_J` (`dns_server_I_port_J` when a port was
    /// given), `dns_server_I_resolve_domain_J`, `dns_server_I_dnssec`,
    /// `dns_server_I_transport`, `dns_server_I_sni`.
    pub fn script_env(&self) -> Vec<(String, String)> {
        let mut env = Vec::new();
        for (i, d) in self.search_domains.iter().enumerate() {
            env.push((format!("dns_search_domain_{}", i + 1), d.clone()));
        }
        for (i, s) in self.servers.iter().enumerate() {
            let i = i + 1;
            for (j, (addr, port)) in s.addresses.iter().enumerate() {
                let j = j + 1;
                env.push((format!("dns_server_{i}_address_{j}"), addr.to_string()));
                if let Some(port) = port {
                    env.push((format!("dns_server_{i}_port_{j}"), port.to_string()));
                }
            }
            for (j, d) in s.resolve_domains.iter().enumerate() {
                env.push((
                    format!("dns_server_{i}_resolve_domain_{}", j + 1),
                    d.clone(),
                ));
            }
            if let Some(v) = s.dnssec {
                env.push((format!("dns_server_{i}_dnssec"), v.name().to_owned()));
            }
            if let Some(v) = s.transport {
                env.push((format!("dns_server_{i}_transport"), v.name().to_owned()));
            }
            if let Some(v) = &s.sni {
                env.push((format!("dns_server_{i}_sni"), v.clone()));
            }
        }
        env
    }

    /// The server `dns server N` names, created in priority order.
    fn server(&mut self, priority: i8) -> &mut DnsServer {
        let at = self.servers.partition_point(|s| s.priority < priority);
        if self.servers.get(at).is_none_or(|s| s.priority != priority) {
            self.servers.insert(
                at,
                DnsServer {
                    priority,
                    ..DnsServer::default()
                },
            );
        }
        &mut self.servers[at]
    }

    /// The link-wide DNSSEC mode: the first server (by priority) that sets
    /// one; a warning when servers disagree (resolved has one per link).
    pub fn link_dnssec(&self, warnings: &mut Vec<String>) -> Option<Dnssec> {
        first_and_warn(
            self.servers.iter().filter_map(|s| s.dnssec),
            "dnssec",
            warnings,
        )
    }

    /// The link-wide transport, as [`DnsOptions::link_dnssec`].
    pub fn link_transport(&self, warnings: &mut Vec<String>) -> Option<DnsTransport> {
        first_and_warn(
            self.servers.iter().filter_map(|s| s.transport),
            "transport",
            warnings,
        )
    }
}

fn first_and_warn<T: Copy + PartialEq>(
    mut values: impl Iterator<Item = T>,
    what: &str,
    warnings: &mut Vec<String>,
) -> Option<T> {
    let first = values.next()?;
    if values.any(|v| v != first) {
        warnings.push(format!(
            "pushed dns servers ask for different {what} settings; the link takes the first server's (one setting per link)"
        ));
    }
    Some(first)
}

impl DnsPlan {
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.domain.is_none() && self.search.is_empty()
    }

    /// Domains in search order: the DOMAIN first, then DOMAIN-SEARCH ones.
    pub fn search_domains(&self) -> Vec<String> {
        self.domain
            .iter()
            .chain(self.search.iter())
            .cloned()
            .collect()
    }
}

/// The pushed `ifconfig LOCAL NETMASK|REMOTE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ifconfig4 {
    pub local: Ipv4Addr,
    /// The netmask (subnet) or the remote end (point-to-point).
    pub netmask_or_remote: Ipv4Addr,
}

/// Everything one PUSH_REPLY asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushPlan {
    pub topology: Topology,
    /// `ifconfig`: the tunnel's IPv4 address; `None` when only
    /// `ifconfig-ipv6` is pushed (an IPv6-only tunnel, as 2.6 runs it).
    pub ipv4: Option<Ifconfig4>,
    /// `route-gateway`, or the remote end in point-to-point topologies.
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u16,
    /// The `route` lines with a gateway (their own, `route-gateway`'s or
    /// the point-to-point remote's).
    pub routes: Vec<PushedRoute>,
    /// Whether a `route` line was given at all, even one dropped for want
    /// of a gateway: 2.6 then looks up the default gateway
    /// (`route_net_gateway`) all the same (`init_route_list`).
    pub route_lines: bool,
    /// Whether a `route-ipv6` line (even one that does not parse) or a
    /// `redirect-gateway ipv6` was given: 2.6 then builds its IPv6 route
    /// list and looks up the IPv6 default gateway (`net_gateway_ipv6`,
    /// route.c `init_route_ipv6_list`; options.c `rol6_check_alloc`).
    pub route6_lines: bool,
    /// A `route` line named no gateway and none was set (no
    /// `route-gateway`, no point-to-point `ifconfig`): 2.6 drops it with
    /// a warning, installs the others, and then lists none of the IPv4
    /// routes in the scripts' environment (`do_init_route_list` skips
    /// `setenv_routes` when `init_route_list` fails).
    pub routes_failed: bool,
    /// `redirect-gateway` asked for IPv4 and there is no IPv4 gateway
    /// (no `route-gateway`, no point-to-point `ifconfig`): IPv4 is not
    /// redirected and, as in 2.6, the connection completes with
    /// ROUTE_ERROR.
    pub redirect_failed: bool,
    /// `ifconfig-ipv6`: the tunnel's IPv6 address.
    pub ipv6: Option<Ifconfig6>,
    /// `route-ipv6` lines; without an `ifconfig-ipv6` too, as 2.6 (which
    /// warns, lists them for the scripts and tries to add them).
    pub routes6: Vec<PushedRoute6>,
    pub redirect: Option<Redirect>,
    pub dns: DnsPlan,
    pub ping: Option<Duration>,
    pub ping_restart: Option<Duration>,
    pub peer_id: u32,
    /// `protocol-flags cc-exit`: say goodbye with an EXIT control message.
    pub cc_exit: bool,
    /// `auth-token`: replaces the password from the next authentication on.
    pub auth_token: Option<String>,
    /// `auth-token-user` (base64 of the user name to send with the token).
    pub auth_token_user: Option<String>,
    /// Options that are understood but not applied, or ignored, with the
    /// reason: the caller logs them at WARN so nothing is dropped silently.
    pub warnings: Vec<String>,
}

impl PushPlan {
    /// Decide what `reply` asks for. `default_mtu` is the configured tun-mtu.
    pub fn from_reply(reply: &PushReply, default_mtu: u16) -> PushPlan {
        Self::from_options(&reply.options, default_mtu)
    }

    /// [`PushPlan::from_reply`] over options in order: the client's own
    /// `route`/`redirect-gateway` lines first, then the pushed ones.
    pub fn from_options<'a>(
        options: impl IntoIterator<Item = &'a PushOption>,
        default_mtu: u16,
    ) -> PushPlan {
        let mut topology = Topology::PointToPoint;
        let mut ifconfig = None;
        let mut route_gateway = None;
        let mut route_metric = None;
        let mut raw_routes = Vec::new();
        let mut ifconfig6 = None;
        let mut raw_routes6: Vec<Route6Line> = Vec::new();
        let mut route6_gateway = None;
        let mut route6_lines = false;
        let mut redirect: Option<Redirect> = None;
        let mut dns = DnsPlan::default();
        let mut plan_warnings = Vec::new();
        let mut ping = None;
        let mut ping_restart = None;
        let mut peer_id = PEER_ID_UNDEFINED;
        let mut cc_exit = false;
        let mut mtu = default_mtu;
        let mut auth_token = None;
        let mut auth_token_user = None;
        for o in options {
            match o {
                PushOption::Topology(t) => {
                    topology = if t == "subnet" {
                        Topology::Subnet
                    } else {
                        Topology::PointToPoint
                    }
                }
                PushOption::Ifconfig {
                    local,
                    netmask_or_remote,
                } => ifconfig = Some((*local, *netmask_or_remote)),
                PushOption::RouteGateway(gw) => route_gateway = Some(*gw),
                PushOption::Route {
                    network,
                    netmask,
                    gateway,
                    metric,
                } => raw_routes.push((*network, *netmask, *gateway, *metric)),
                PushOption::RedirectGateway(flags) => {
                    redirect = Some(redirect_flags(flags, &mut plan_warnings))
                }
                PushOption::DhcpOption(kind, value) => {
                    dhcp_option(kind, value, &mut dns, &mut plan_warnings)
                }
                PushOption::Ping(n) => ping = Some(Duration::from_secs(u64::from(*n))),
                PushOption::PingRestart(n) => {
                    ping_restart = Some(Duration::from_secs(u64::from(*n)))
                }
                PushOption::PeerId(id) => peer_id = *id,
                PushOption::ProtocolFlags(flags) => cc_exit = flags.iter().any(|f| f == "cc-exit"),
                PushOption::TunMtu(m) => mtu = u16::try_from(*m).unwrap_or(default_mtu),
                // Applied by the session (cipher negotiation, key derivation).
                PushOption::Cipher(_) | PushOption::KeyDerivation(_) => {}
                PushOption::Other(name, args) => match name.as_str() {
                    "dns" => dns_option(args, &mut dns, &mut plan_warnings),
                    // As in 2.6 it applies to every route, before or after it
                    // in the reply; 0 is the kernel's default.
                    "route-metric" => match args.as_slice() {
                        [m] if m.bytes().all(|b| b.is_ascii_digit()) => {
                            route_metric = m.parse().ok().filter(|&m| m > 0)
                        }
                        _ => plan_warnings.push(format!(
                            "pushed 'route-metric {}' is not a metric; ignored",
                            args.join(" ")
                        )),
                    },
                    // 2.6 takes it pushed too (options.c checks no
                    // permission for it): the default gateway of the
                    // `route-ipv6` lines, over ifconfig-ipv6's REMOTE.
                    "route-ipv6-gateway" => match args.as_slice() {
                        [gw] if gw.parse::<Ipv6Addr>().is_ok() => route6_gateway = gw.parse().ok(),
                        _ => plan_warnings.push(format!(
                            "pushed 'route-ipv6-gateway {}' is not an IPv6 address; ignored",
                            args.join(" ")
                        )),
                    },
                    "auth-token" => auth_token = args.first().cloned(),
                    "auth-token-user" => auth_token_user = args.first().cloned(),
                    // Applied through `compression::pushed` before the plan.
                    "comp-lzo" | "compress" | "comp-noadapt" => {}
                    // Handled by the session or meaningless to a client here.
                    "ifconfig-ipv6" => match parse_ifconfig6(args) {
                        Some(i) => ifconfig6 = Some(i),
                        None => plan_warnings.push(format!(
                            "pushed 'ifconfig-ipv6 {}' is not ADDRESS/BITS [REMOTE]; ignored",
                            args.join(" ")
                        )),
                    },
                    "route-ipv6" => {
                        route6_lines = true;
                        match parse_route6(args) {
                            Some(r) => raw_routes6.push(r),
                            None => plan_warnings.push(format!(
                                "pushed 'route-ipv6 {}' is not NETWORK/BITS [GATEWAY] [METRIC]; ignored",
                                args.join(" ")
                            )),
                        }
                    }
                    // A no-op in 2.6 too.
                    "push-continuation" | "tun-ipv6" => {}
                    _ => plan_warnings
                        .push(format!("pushed option '{name}' is not supported; ignored")),
                },
            }
        }
        finish_dns(&mut dns, &mut plan_warnings);
        // With neither `ifconfig` nor `ifconfig-ipv6` (a server with no
        // address to give) 2.6 still completes: it opens the device
        // without addresses, runs `up` with empty ones, and routes what
        // it can.
        let ipv4 = ifconfig.map(|(local, netmask_or_remote)| Ifconfig4 {
            local,
            netmask_or_remote,
        });
        let gateway = match (topology, ipv4) {
            (Topology::PointToPoint, Some(v4)) => route_gateway.or(Some(v4.netmask_or_remote)),
            _ => route_gateway,
        };
        // No IPv4 gateway (topology subnet without `route-gateway`, or an
        // IPv6-only tunnel): 2.6 warns, leaves IPv4 alone (no 0/1, 128/1
        // or server route; `redirect_gateway=0`) and completes with
        // ROUTE_ERROR (route.c `redirect_default_route_to_vpn` returns
        // false). IPv6 is still redirected.
        // Before `ipv6` may give way to blocking below.
        let route6_lines = route6_lines || redirect.as_ref().is_some_and(|r| r.ipv6);
        let mut redirect_failed = false;
        if let Some(r) = redirect.as_mut()
            && r.ipv4
            && gateway.is_none()
        {
            r.ipv4 = false;
            redirect_failed = true;
            plan_warnings.push(
                "NOTE: unable to redirect IPv4 default gateway -- VPN gateway parameter (--route-gateway or --ifconfig) is missing".into(),
            );
        }
        if let Some(r) = redirect.as_mut()
            && r.ipv6
            && ifconfig6.is_none()
        {
            r.ipv6 = false;
            r.block_ipv6 = true;
            plan_warnings.push(
                "redirect-gateway ipv6 without a pushed ifconfig-ipv6: IPv6 is blocked instead (unreachable ::/1 and 8000::/1)".into(),
            );
        }
        let default_gateway6 = route6_gateway.or(ifconfig6.and_then(|v6| v6.remote));
        let routes6 = raw_routes6
            .into_iter()
            .map(|r| PushedRoute6 {
                network: r.network,
                bits: r.bits,
                gateway: r.gateway.or(default_gateway6),
                metric: r.metric.or(route_metric),
            })
            .collect();
        let route_lines = !raw_routes.is_empty();
        let mut routes_failed = false;
        let mut routes = Vec::with_capacity(raw_routes.len());
        for (network, netmask, gw, metric) in raw_routes {
            let Some(gateway) = gw.or(gateway) else {
                // 2.6's two warnings, word for word (route.c `init_route`).
                plan_warnings.push(
                    "OpenVPN ROUTE: OpenVPN needs a gateway parameter for a --route option and no default was specified by either --route-gateway or --ifconfig options".into(),
                );
                plan_warnings.push(format!(
                    "OpenVPN ROUTE: failed to parse/resolve route for host/network: {network}"
                ));
                routes_failed = true;
                continue;
            };
            routes.push(PushedRoute {
                network,
                netmask,
                gateway: Some(gateway),
                metric: metric.or(route_metric),
            });
        }
        PushPlan {
            topology,
            ipv4,
            gateway,
            mtu,
            routes,
            route_lines,
            route6_lines,
            routes_failed,
            redirect_failed,
            ipv6: ifconfig6,
            routes6,
            redirect,
            dns,
            ping,
            ping_restart,
            peer_id,
            cc_exit,
            auth_token,
            auth_token_user,
            warnings: plan_warnings,
        }
    }

    /// The part that decides the interface address: when it changes across a
    /// reconnect the address is set again.
    pub fn address(&self) -> (Topology, Option<Ifconfig4>, u16) {
        (self.topology, self.ipv4, self.mtu)
    }

    /// The tunnel's own address as 2.6 reports it (management `ASSIGN_IP`,
    /// logs): the IPv4 one, else the IPv6 one.
    pub fn local_address(&self) -> String {
        match (self.ipv4, self.ipv6) {
            (Some(v4), _) => v4.local.to_string(),
            (None, Some(v6)) => v6.local.to_string(),
            (None, None) => String::new(),
        }
    }
}

/// Whether `route-nopull` drops this pushed option: 2.6 takes a pushed
/// option of the OPT_P_ROUTE or OPT_P_DHCPDNS class only without it (init.c
/// `pull_permission_mask`); `route-gateway` is of another class and stays.
pub fn dropped_by_route_nopull(option: &PushOption) -> bool {
    match option {
        PushOption::Route { .. } | PushOption::RedirectGateway(_) | PushOption::DhcpOption(..) => {
            true
        }
        PushOption::Other(name, _) => matches!(
            name.as_str(),
            "route"
                | "route-ipv6"
                | "route-metric"
                | "redirect-private"
                | "block-ipv6"
                | "client-nat"
                | "dns"
                | "block-outside-dns"
                | "register-dns"
                | "ip-win32"
                | "tap-sleep"
                | "dhcp-renew"
                | "dhcp-pre-release"
        ),
        _ => false,
    }
}

fn redirect_flags(flags: &[String], warnings: &mut Vec<String>) -> Redirect {
    let mut r = Redirect {
        ipv4: true,
        ..Redirect::default()
    };
    for f in flags {
        match f.as_str() {
            // def1 is how ferrovpn always redirects: two /1 routes that
            // override the default route without deleting it.
            "def1" => {}
            "local" => r.local = true,
            "!ipv4" => r.ipv4 = false,
            "ipv6" => r.ipv6 = true,
            "block-ipv6" => r.block_ipv6 = true,
            "bypass-dns" => r.bypass_dns = true,
            // Windows only in 2.6 (the DHCP server's address is not known on Linux).
            "bypass-dhcp" => {}
            other => warnings.push(format!(
                "redirect-gateway flag '{other}' is not supported; ignored"
            )),
        }
    }
    r
}

/// `ADDR/BITS [REMOTE]` of a pushed `ifconfig-ipv6`.
fn parse_ifconfig6(args: &[String]) -> Option<Ifconfig6> {
    let (first, rest) = args.split_first()?;
    if rest.len() > 1 {
        return None;
    }
    let remote = match rest.first() {
        Some(remote) => Some(remote.parse::<Ipv6Addr>().ok()?),
        None => None,
    };
    let (local, bits) = parse_prefix6(first)?;
    Some(Ifconfig6 {
        local,
        bits,
        remote,
    })
}

/// One `route-ipv6` line as written: its own gateway and metric, if any.
struct Route6Line {
    network: Ipv6Addr,
    bits: u8,
    gateway: Option<Ipv6Addr>,
    metric: Option<u32>,
}

/// `NETWORK/BITS [GATEWAY] [METRIC]` of a `route-ipv6`, host bits cleared
/// as 2.6 does; `default` for GATEWAY or METRIC is none given.
fn parse_route6(args: &[String]) -> Option<Route6Line> {
    let (first, rest) = args.split_first()?;
    if rest.len() > 2 {
        return None;
    }
    let (net, bits) = parse_prefix6(first)?;
    let gateway = match rest.first().filter(|g| *g != "default") {
        Some(gw) => Some(gw.parse::<Ipv6Addr>().ok()?),
        None => None,
    };
    let metric = match rest.get(1).map(String::as_str) {
        None | Some("default") => None,
        Some(m) if m.bytes().all(|b| b.is_ascii_digit()) => Some(m.parse().ok()?),
        Some(_) => return None,
    };
    let host = u128::MAX.checked_shr(u32::from(bits)).unwrap_or(0);
    Some(Route6Line {
        network: Ipv6Addr::from(u128::from(net) & !host),
        bits,
        gateway,
        metric,
    })
}

/// `ADDR[/BITS]` (BITS defaults to 128).
fn parse_prefix6(s: &str) -> Option<(Ipv6Addr, u8)> {
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, b.parse::<u8>().ok().filter(|&b| b <= 128)?),
        None => (s, 128),
    };
    Some((addr.parse().ok()?, bits))
}

fn dhcp_option(kind: &str, value: &str, dns: &mut DnsPlan, warnings: &mut Vec<String>) {
    match kind.to_ascii_uppercase().as_str() {
        "DNS" | "DNS6" => match value.parse::<IpAddr>() {
            Ok(ip) => push_unique(&mut dns.servers, ip),
            Err(_) => warnings.push(format!(
                "pushed dhcp-option {kind} '{value}' is not an IP address; ignored"
            )),
        },
        "DOMAIN" if valid_domain(value) => dns.domain = Some(value.to_owned()),
        "DOMAIN-SEARCH" if valid_domain(value) => push_unique(&mut dns.search, value.to_owned()),
        "DOMAIN" | "DOMAIN-SEARCH" => warnings.push(format!(
            "pushed dhcp-option {kind} '{value}' is not a domain name; ignored"
        )),
        // Windows-only options in 2.6 on Linux too (no up script here).
        _ => warnings.push(format!("pushed dhcp-option {kind} is not applied on Linux")),
    }
}

/// 2.6's `dns search-domains D ...` and `dns server N address A[:PORT] ...|
/// resolve-domains D ...|dnssec yes|optional|no|transport plain|DoT|DoH|sni NAME`.
/// Addresses with port 53 (or none) go to the applied servers; every valid
/// part is kept in `dns.dns` for the link mode and the script variables.
fn dns_option(args: &[String], dns: &mut DnsPlan, warnings: &mut Vec<String>) {
    let unsupported = |warnings: &mut Vec<String>| {
        warnings.push(format!(
            "pushed 'dns {}' is not a valid dns option; ignored",
            args.join(" ")
        ))
    };
    match args.first().map(String::as_str) {
        Some("search-domains") if args.len() > 1 => {
            for d in &args[1..] {
                if valid_domain(d) {
                    push_unique(&mut dns.search, d.clone());
                    push_unique(&mut dns.dns.search_domains, d.clone());
                } else {
                    warnings.push(format!(
                        "pushed dns search-domains '{d}' is not a domain name; ignored"
                    ));
                }
            }
        }
        Some("server") => {
            // 2.6 takes -128..127 from the config file, 0..127 pushed.
            let (Some(priority), Some(what)) = (
                args.get(1)
                    .and_then(|n| n.parse::<i8>().ok())
                    .filter(|&n| n >= 0),
                args.get(2).map(String::as_str),
            ) else {
                return unsupported(warnings);
            };
            let values = &args[3..];
            match (what, values) {
                ("address", [_, ..]) if values.len() <= 8 => {
                    // 2.6 stops at the first bad address and keeps the
                    // ones before it; a server holds at most 8 addresses.
                    for a in values {
                        let parsed = parse_dns_server_address(a)
                            .filter(|_| dns.dns.server(priority).addresses.len() < 8);
                        let Some((ip, port)) = parsed else {
                            warnings.push(format!(
                                "pushed dns server {priority} address '{a}' is not an IP address[:PORT] or one more than 8; it and the rest of the line ignored"
                            ));
                            break;
                        };
                        push_unique(&mut dns.dns.server(priority).addresses, (ip, port));
                        if port.is_none_or(|p| p == 53) {
                            push_unique(&mut dns.servers, ip);
                        } else {
                            warnings.push(format!(
                                "pushed dns server address '{a}': a port other than 53 is not supported; not applied"
                            ));
                        }
                    }
                }
                ("resolve-domains", [_, ..]) => {
                    for d in values {
                        if valid_domain(d) {
                            push_unique(&mut dns.dns.server(priority).resolve_domains, d.clone());
                        } else {
                            warnings.push(format!(
                                "pushed dns server resolve-domains '{d}' is not a domain name; ignored"
                            ));
                        }
                    }
                    warnings.push(format!(
                        "pushed 'dns server {priority} resolve-domains' is not applied (split DNS is not supported); all queries go to the pushed servers"
                    ));
                }
                ("dnssec", [v]) => match v.as_str() {
                    "yes" => dns.dns.server(priority).dnssec = Some(Dnssec::Yes),
                    "optional" => dns.dns.server(priority).dnssec = Some(Dnssec::Optional),
                    "no" => dns.dns.server(priority).dnssec = Some(Dnssec::No),
                    _ => unsupported(warnings),
                },
                ("transport", [v]) => match v.as_str() {
                    "plain" => dns.dns.server(priority).transport = Some(DnsTransport::Plain),
                    "DoT" => dns.dns.server(priority).transport = Some(DnsTransport::Tls),
                    "DoH" => dns.dns.server(priority).transport = Some(DnsTransport::Https),
                    _ => unsupported(warnings),
                },
                ("sni", [name]) if valid_domain(name) => {
                    dns.dns.server(priority).sni = Some(name.clone());
                    warnings.push(format!(
                        "pushed 'dns server {priority} sni {name}' is only handed to scripts; not applied"
                    ));
                }
                _ => unsupported(warnings),
            }
        }
        _ => unsupported(warnings),
    }
}

/// The link-wide DNSSEC and transport modes from the `dns server` entries;
/// the addresses of DoH servers are not applied: neither systemd-resolved
/// nor resolv.conf speaks DNS over HTTPS, and sending their queries in
/// plain text instead would leak what the server asked to protect (2.7's
/// dns-updown script refuses DoH the same way; 2.6 itself only hands the
/// `dns` options to scripts on Linux).
fn finish_dns(dns: &mut DnsPlan, warnings: &mut Vec<String>) {
    for s in &dns.dns.servers {
        if s.transport == Some(DnsTransport::Https) {
            dns.servers
                .retain(|ip| !s.addresses.iter().any(|(a, _)| a == ip));
            warnings.push(format!(
                "pushed dns server {} uses DoH, which neither systemd-resolved nor resolv.conf supports: its addresses are not applied",
                s.priority
            ));
        }
    }
    let applied: Vec<&DnsServer> = dns
        .dns
        .servers
        .iter()
        .filter(|s| s.transport != Some(DnsTransport::Https))
        .collect();
    let applied = DnsOptions {
        search_domains: Vec::new(),
        servers: applied.into_iter().cloned().collect(),
    };
    dns.dnssec = applied.link_dnssec(warnings);
    dns.transport = applied.link_transport(warnings);
}

/// `A`, `A:PORT`, `[A6]` or `[A6]:PORT` (2.6's forms), with the port if given.
fn parse_dns_server_address(s: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(ip) = s.parse() {
        return Some((ip, None));
    }
    let (host, port): (IpAddr, &str) = if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let h: std::net::Ipv6Addr = h.parse().ok()?;
        if after.is_empty() {
            return Some((h.into(), None));
        }
        (h.into(), after.strip_prefix(':')?)
    } else {
        // `A:PORT` is IPv4 only: a bare IPv6 address parsed above.
        let (h, p) = s.rsplit_once(':')?;
        (h.parse::<Ipv4Addr>().ok()?.into(), p)
    };
    let port = port.parse::<u16>().ok().filter(|&p| p > 0)?;
    Some((host, Some(port)))
}

/// A DNS name as resolv.conf and resolvectl take it: letters, digits,
/// hyphens, dots, underscores; no leading `-` (never option-looking).
fn valid_domain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && !s.starts_with(['-', '.'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
}

fn push_unique<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> PushPlan {
        let reply = PushReply::parse(text).expect("valid push reply");
        PushPlan::from_reply(&reply, 1500)
    }

    #[test]
    fn subnet_reply_with_routes_dns_and_timers() {
        let p = plan(
            "PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 60,ifconfig 10.8.0.2 255.255.255.0,route 10.99.0.0 255.255.255.0,route 10.98.0.0 255.255.0.0 10.8.0.9,dhcp-option DNS 10.8.0.1,dhcp-option DOMAIN corp.example,dhcp-option DOMAIN-SEARCH b.example,peer-id 3,protocol-flags cc-exit tls-ekm,tun-mtu 1400,cipher AES-256-GCM",
        );
        assert_eq!(p.topology, Topology::Subnet);
        assert_eq!(p.ipv4.unwrap().local, Ipv4Addr::new(10, 8, 0, 2));
        assert_eq!(p.gateway, Some(Ipv4Addr::new(10, 8, 0, 1)));
        assert_eq!(p.mtu, 1400);
        assert_eq!(p.peer_id, 3);
        assert!(p.cc_exit);
        assert_eq!(p.ping, Some(Duration::from_secs(10)));
        assert_eq!(p.ping_restart, Some(Duration::from_secs(60)));
        assert_eq!(
            p.routes,
            vec![
                PushedRoute {
                    network: Ipv4Addr::new(10, 99, 0, 0),
                    netmask: Ipv4Addr::new(255, 255, 255, 0),
                    gateway: Some(Ipv4Addr::new(10, 8, 0, 1)),
                    metric: None,
                },
                PushedRoute {
                    network: Ipv4Addr::new(10, 98, 0, 0),
                    netmask: Ipv4Addr::new(255, 255, 0, 0),
                    gateway: Some(Ipv4Addr::new(10, 8, 0, 9)),
                    metric: None,
                },
            ]
        );
        assert_eq!(p.dns.servers, vec![IpAddr::from([10, 8, 0, 1])]);
        assert_eq!(p.dns.search_domains(), vec!["corp.example", "b.example"]);
        assert!(p.redirect.is_none());
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn route_metric_applies_to_routes_without_their_own() {
        let p = plan(
            "PUSH_REPLY,topology subnet,route-gateway 10.8.0.1,route 10.1.0.0 255.255.0.0,route 10.2.0.0 255.255.0.0 vpn_gateway 7,ifconfig 10.8.0.2 255.255.255.0,route-metric 50",
        );
        let metrics: Vec<_> = p.routes.iter().map(|r| r.metric).collect();
        assert_eq!(metrics, vec![Some(50), Some(7)]);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    #[test]
    fn route_nopull_drops_routes_and_dns_but_not_the_rest() {
        let reply = PushReply::parse("PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,route 10.1.0.0 255.255.0.0,route 10.2.0.0 255.255.0.0 net_gateway,route-metric 5,redirect-gateway def1,dhcp-option DNS 10.8.0.1,dns search-domain x.example,block-outside-dns,ifconfig 10.8.0.2 255.255.255.0,ping 10,peer-id 1,cipher AES-256-GCM").unwrap();
        let kept: Vec<String> = reply
            .options
            .iter()
            .filter(|o| !dropped_by_route_nopull(o))
            .map(PushOption::to_text)
            .collect();
        assert_eq!(
            kept,
            vec![
                "route-gateway 10.8.0.1",
                "topology subnet",
                "ifconfig 10.8.0.2 255.255.255.0",
                "ping 10",
                "peer-id 1",
                "cipher AES-256-GCM"
            ]
        );
    }

    #[test]
    fn net30_gateway_is_the_remote_end() {
        let p = plan("PUSH_REPLY,ifconfig 10.8.0.6 10.8.0.5,redirect-gateway def1");
        assert_eq!(p.topology, Topology::PointToPoint);
        assert_eq!(p.gateway, Some(Ipv4Addr::new(10, 8, 0, 5)));
        assert_eq!(
            p.redirect,
            Some(Redirect {
                ipv4: true,
                ..Redirect::default()
            })
        );
    }

    /// A 2.6 `server-ipv6` server without `server` pushes `ifconfig-ipv6`
    /// only: an IPv6-only tunnel, IPv6 redirected, IPv4 left alone.
    #[test]
    fn ipv6_only_push_gives_an_ipv6_only_plan() {
        let p = plan(
            "PUSH_REPLY,tun-ipv6,route-ipv6 fd00:99::/64,redirect-gateway def1 ipv6,ping 10,ping-restart 60,ifconfig-ipv6 fd00:6::1000/64 fd00:6::1,peer-id 0,cipher AES-256-GCM",
        );
        assert_eq!(p.ipv4, None);
        assert_eq!(p.gateway, None);
        assert_eq!(
            p.ipv6.unwrap().local,
            "fd00:6::1000".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(p.local_address(), "fd00:6::1000");
        assert_eq!(p.routes6.len(), 1);
        let r = p.redirect.as_ref().unwrap();
        assert!(r.ipv6 && !r.ipv4, "{r:?}");
        assert!(
            p.warnings.iter().any(|w| w.contains("gateway parameter")),
            "{:?}",
            p.warnings
        );
    }

    /// 2.6 completes with no address from anywhere: an empty plan, and
    /// its `route` lines without a gateway dropped with its warnings.
    #[test]
    fn no_address_at_all_is_a_plan_without_one() {
        let p = plan("PUSH_REPLY,tun-ipv6,ping 10");
        assert_eq!((p.ipv4, p.ipv6, p.gateway), (None, None, None));
        assert_eq!(p.local_address(), "");
        assert!(!p.route_lines && !p.routes_failed);
        let p = plan(
            "PUSH_REPLY,route 10.77.0.0 255.255.255.0,route 10.78.0.0 255.255.255.0 10.8.0.9 3,ping 10",
        );
        assert!(p.route_lines && p.routes_failed);
        assert_eq!(
            p.routes,
            vec![PushedRoute {
                network: Ipv4Addr::new(10, 78, 0, 0),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                gateway: Some(Ipv4Addr::new(10, 8, 0, 9)),
                metric: Some(3),
            }]
        );
        assert_eq!(
            p.warnings,
            [
                "OpenVPN ROUTE: OpenVPN needs a gateway parameter for a --route option and no default was specified by either --route-gateway or --ifconfig options",
                "OpenVPN ROUTE: failed to parse/resolve route for host/network: 10.77.0.0",
            ]
        );
        // Topology subnet without route-gateway: the same in 2.6.
        let p = plan(
            "PUSH_REPLY,topology subnet,ifconfig 10.8.0.2 255.255.255.0,route 10.77.0.0 255.255.255.0",
        );
        assert!(p.routes.is_empty() && p.routes_failed);
    }

    /// 2.6 looks up `net_gateway_ipv6` once it has an IPv6 route list:
    /// any `route-ipv6` line (a broken one too) or `redirect-gateway ipv6`.
    #[test]
    fn ipv6_route_list_as_2_6() {
        let base =
            "PUSH_REPLY,topology subnet,route-gateway 10.8.0.1,ifconfig 10.8.0.2 255.255.255.0";
        for (extra, listed) in [
            ("", false),
            (",route-ipv6 fd77::/64", true),
            (",route-ipv6 nonsense", true),
            (",redirect-gateway def1 ipv6", true),
            (",redirect-gateway def1", false),
            (",redirect-gateway block-ipv6", false),
            (",route-ipv6-gateway fd00::1", false),
        ] {
            assert_eq!(
                plan(&format!("{base}{extra}")).route6_lines,
                listed,
                "{extra}"
            );
        }
    }

    /// 2.6's `redirect_default_route_to_vpn` without a VPN gateway: a
    /// warning, IPv4 left alone, ROUTE_ERROR; IPv6 still redirected.
    #[test]
    fn redirect_without_an_ipv4_gateway_warns_and_fails_the_routes() {
        let p = plan(
            "PUSH_REPLY,topology subnet,ifconfig 10.8.0.2 255.255.255.0,ifconfig-ipv6 fd00:6::2/64 fd00:6::1,redirect-gateway def1 ipv6",
        );
        let r = p.redirect.as_ref().unwrap();
        assert!(!r.ipv4 && r.ipv6 && p.redirect_failed);
        assert_eq!(
            p.warnings,
            [
                "NOTE: unable to redirect IPv4 default gateway -- VPN gateway parameter (--route-gateway or --ifconfig) is missing"
            ]
        );
        // An IPv6-only tunnel: the same.
        let p = plan("PUSH_REPLY,ifconfig-ipv6 fd00:6::2/64 fd00:6::1,redirect-gateway def1 ipv6");
        assert!(p.redirect_failed && !p.redirect.unwrap().ipv4);
        // A gateway from route-gateway or a point-to-point ifconfig: redirected.
        for text in [
            "PUSH_REPLY,topology subnet,route-gateway 10.8.0.1,ifconfig 10.8.0.2 255.255.255.0,redirect-gateway def1",
            "PUSH_REPLY,ifconfig 10.8.0.6 10.8.0.5,redirect-gateway def1",
        ] {
            let p = plan(text);
            assert!(p.redirect.unwrap().ipv4 && !p.redirect_failed, "{text}");
        }
        // !ipv4 needs no IPv4 gateway.
        let p = plan(
            "PUSH_REPLY,topology subnet,ifconfig 10.8.0.2 255.255.255.0,redirect-gateway !ipv4 block-ipv6",
        );
        assert!(!p.redirect_failed);
        let r = p.redirect.unwrap();
        assert!(!r.ipv4 && r.block_ipv6);
    }

    #[test]
    fn redirect_ipv6_blocks_ipv6_with_a_warning() {
        let p = plan(
            "PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ifconfig 10.8.0.2 255.255.255.0,redirect-gateway def1 ipv6 bypass-dns local",
        );
        let r = p.redirect.unwrap();
        assert!(r.ipv4 && r.block_ipv6 && !r.ipv6 && r.bypass_dns && r.local);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0].contains("IPv6 is blocked"));
    }

    #[test]
    fn ipv6_address_routes_and_redirect() {
        let p = plan(
            "PUSH_REPLY,tun-ipv6,route-gateway 10.8.0.1,topology subnet,route-ipv6 fd00:99::1/64,route-ipv6 2001:db8::/32 fd00::1 7,route-metric 20,redirect-gateway ipv6 !ipv4,ifconfig-ipv6 fd00::1000/64 fd00::1,ifconfig 10.8.0.2 255.255.255.0",
        );
        assert_eq!(
            p.ipv6,
            Some(Ifconfig6 {
                local: "fd00::1000".parse().unwrap(),
                bits: 64,
                remote: Some("fd00::1".parse().unwrap()),
            })
        );
        assert_eq!(
            p.routes6,
            vec![
                PushedRoute6 {
                    network: "fd00:99::".parse().unwrap(),
                    bits: 64,
                    gateway: Some("fd00::1".parse().unwrap()),
                    metric: Some(20)
                },
                PushedRoute6 {
                    network: "2001:db8::".parse().unwrap(),
                    bits: 32,
                    gateway: Some("fd00::1".parse().unwrap()),
                    metric: Some(7)
                },
            ]
        );
        let r = p.redirect.unwrap();
        assert!(r.ipv6 && !r.ipv4 && !r.block_ipv6);
        assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    }

    /// 2.6's `init_route_ipv6`: a route's own gateway, else a (pushed)
    /// `route-ipv6-gateway`, else ifconfig-ipv6's REMOTE, else none.
    #[test]
    fn ipv6_route_gateways_as_2_6() {
        let base = "PUSH_REPLY,route-ipv6 fd77::/64,route-ipv6 fd78::/64 fd00:6::9 5,ifconfig-ipv6 fd00:6::1000/64";
        let gateways = |text: &str| -> Vec<Option<String>> {
            plan(text)
                .routes6
                .iter()
                .map(|r| r.gateway.map(|g| g.to_string()))
                .collect()
        };
        let s = |a: &str| Some(a.to_owned());
        assert_eq!(gateways(base), [None, s("fd00:6::9")]);
        assert_eq!(
            gateways(&format!("{base} fd00:6::1")),
            [s("fd00:6::1"), s("fd00:6::9")]
        );
        assert_eq!(
            gateways(&format!("{base} fd00:6::1,route-ipv6-gateway fd00:6::7")),
            [s("fd00:6::7"), s("fd00:6::9")]
        );
        let p = plan(&format!("{base},route-ipv6-gateway nonsense"));
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    }

    #[test]
    fn ipv6_routes_without_an_address_are_kept_as_2_6() {
        let p = plan(
            "PUSH_REPLY,topology subnet,route-ipv6 fd00:99::/64,ifconfig 10.8.0.2 255.255.255.0,ifconfig-ipv6 nonsense",
        );
        assert!(p.ipv6.is_none());
        assert_eq!(p.routes6.len(), 1);
        assert_eq!(p.routes6[0].gateway, None);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    }

    #[test]
    fn dns_values_are_validated() {
        let p = plan(
            "PUSH_REPLY,topology subnet,ifconfig 10.8.0.2 255.255.255.0,dhcp-option DNS --set-evil,dhcp-option DNS 1.1.1.1,dhcp-option DNS 1.1.1.1,dhcp-option DOMAIN -x,dhcp-option NBT 2",
        );
        assert_eq!(p.dns.servers, vec![IpAddr::from([1, 1, 1, 1])]);
        assert_eq!(p.dns.domain, None);
        assert_eq!(p.warnings.len(), 3, "{:?}", p.warnings);
    }

    #[test]
    fn dns_option_of_2_6() {
        let p = plan(
            "PUSH_REPLY,topology subnet,ifconfig 10.8.0.2 255.255.255.0,dns server 0 address 10.8.0.1 [fd00::1]:53 9.9.9.9:5353,dns search-domains a.example b.example",
        );
        assert_eq!(
            p.dns.servers,
            vec![IpAddr::from([10, 8, 0, 1]), "fd00::1".parse().unwrap()]
        );
        assert_eq!(p.dns.search, vec!["a.example", "b.example"]);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    }

    #[test]
    fn auth_token_is_kept() {
        let p = plan(
            "PUSH_REPLY,topology subnet,ifconfig 10.8.0.2 255.255.255.0,auth-token SESS_ID_AT_abc,auth-token-user dXNlcg==",
        );
        assert_eq!(p.auth_token.as_deref(), Some("SESS_ID_AT_abc"));
        assert_eq!(p.auth_token_user.as_deref(), Some("dXNlcg=="));
    }

    #[test]
    fn dns_server_dnssec_and_transport() {
        let p = plan(
            "PUSH_REPLY,topology subnet,ifconfig 10.8.0.2 255.255.255.0,dns server 2 address 10.8.0.2,dns server 2 dnssec no,dns server 1 address 10.8.0.1,dns server 1 dnssec yes,dns server 1 transport DoT",
        );
        // Pushed order for the addresses; priority order for the link modes.
        assert_eq!(
            p.dns.servers,
            vec![IpAddr::from([10, 8, 0, 2]), IpAddr::from([10, 8, 0, 1])]
        );
        assert_eq!(p.dns.dnssec, Some(Dnssec::Yes));
        assert_eq!(p.dns.transport, Some(DnsTransport::Tls));
        assert_eq!(
            p.dns
                .dns
                .servers
                .iter()
                .map(|s| s.priority)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        // The servers disagree on dnssec: one warning.
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    }

    #[test]
    fn doh_servers_are_not_applied() {
        let p = plan(
            "PUSH_REPLY,topology subnet,ifconfig 10.8.0.2 255.255.255.0,dns server 1 address 10.8.0.1,dns server 1 transport DoH,dns server 2 address 10.8.0.2,dns server 2 transport plain",
        );
        assert_eq!(p.dns.servers, vec![IpAddr::from([10, 8, 0, 2])]);
        assert_eq!(p.dns.transport, Some(DnsTransport::Plain));
        assert!(
            p.warnings.iter().any(|w| w.contains("DoH")),
            "{:?}",
            p.warnings
        );
        // Still handed to scripts as 2.6 does.
        let env = p.dns.dns.script_env();
        assert!(env.contains(&("dns_server_1_transport".into(), "DoH".into())));
    }

    #[test]
    fn bad_dns_server_options_are_warned_about() {
        for bad in [
            "dns server x address 10.8.0.1",
            "dns server 1 dnssec maybe",
            "dns server 1 transport QUIC",
            "dns server 1 address",
            "dns server 300 address 10.8.0.1",
            "dns server 1 sni -x",
            "dns server 1 address 10.8.0.1:0",
            "dns server 1 address nonsense 10.8.0.1",
            "dns server -1 address 10.8.0.1",
            "dns search-domain x.example",
            "dns search-domains",
            "dns frobnicate",
        ] {
            let p = plan(&format!(
                "PUSH_REPLY,topology subnet,ifconfig 10.8.0.2 255.255.255.0,{bad}"
            ));
            assert!(p.dns.servers.is_empty(), "{bad}");
            assert_eq!(p.warnings.len(), 1, "{bad}: {:?}", p.warnings);
        }
    }

    #[test]
    fn a_bad_dns_server_address_ends_the_line_as_in_2_6() {
        let p = plan(
            "PUSH_REPLY,topology subnet,ifconfig 10.8.0.2 255.255.255.0,dns server 4 address 10.8.0.4 bad 10.8.0.5",
        );
        assert_eq!(p.dns.servers, vec![IpAddr::from([10, 8, 0, 4])]);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    }

    #[test]
    fn a_dns_server_holds_at_most_8_addresses() {
        let nine: Vec<String> = (1..=9).map(|i| format!("10.8.1.{i}")).collect();
        let p = plan(&format!(
            "PUSH_REPLY,topology subnet,ifconfig 10.8.0.2 255.255.255.0,dns server 1 address {},dns server 1 address {}",
            nine[..5].join(" "),
            nine[5..].join(" ")
        ));
        assert_eq!(p.dns.dns.servers[0].addresses.len(), 8);
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    }
}
