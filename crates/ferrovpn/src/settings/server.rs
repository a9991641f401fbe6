//! Server settings: `mode server` configs (and their listeners, pool,
//! client-config-dir, auth tokens, management) to [`ServerSettings`].

use super::*;

/// Server settings from a `mode server` / `server NET MASK` config.
pub fn server_settings(cfg: &Config) -> anyhow::Result<ServerSettings> {
    server_settings_opening(cfg, crate::keys::KeyOpening::ConfigRead)
}

/// [`server_settings`], with the key opened at `opening` (a SIGUSR1
/// without `persist-key` does not read `askpass FILE`, as 2.6).
pub fn server_settings_opening(
    cfg: &Config,
    opening: crate::keys::KeyOpening,
) -> anyhow::Result<ServerSettings> {
    refuse_client_queries(cfg)?;
    // `None` on an IPv6-only server (`server-ipv6`, or `ifconfig-ipv6` with
    // or without `ifconfig-ipv6-pool`, no `server`): the config layer
    // checked it has IPv6 then.
    let net = cfg.server;
    if net.is_none() && cfg.tunnel_ipv6().is_none() {
        bail!(
            "server mode needs 'server NETWORK NETMASK' or IPv6 ('server-ipv6' or 'ifconfig-ipv6'; ferrovpn has no IPv4 static-address server mode)"
        );
    }
    if net.is_some() && cfg.topology() != Topology::Subnet {
        warn!(
            "{}ferrovpn servers use 'topology subnet' (pushed to clients); the configured topology is ignored",
            where_is(cfg, "topology")
        );
    }
    audit_common(cfg)?;
    // `proto tcp-client` in a server is an error even when `local` lines name others.
    server_transport(cfg)?;
    if cfg.redirect_gateway.is_some() {
        bail!(
            "{}redirect-gateway in a server config would reroute the server itself; push it to clients with 'push \"redirect-gateway def1\"'",
            where_is(cfg, "redirect-gateway")
        );
    }
    if cfg.route_gateway.is_some() {
        bail!(
            "{}route-gateway in a server config is not supported: a server routes its 'route' networks into the tun device (push route-gateway to clients instead)",
            where_is(cfg, "route-gateway")
        );
    }
    if !cfg.pull_filters.is_empty() {
        // 2.6's own warning: filters apply to what a client pulls.
        warn!(
            "{}--pull-filter ignored for --mode server",
            where_is(cfg, "pull-filter")
        );
    }
    if cfg.inactive.is_some() {
        warn!(
            "{}'inactive' ignored: ferrovpn applies it in client and point-to-point mode only",
            where_is(cfg, "inactive")
        );
    }
    if cfg.ping_exit.is_some() {
        warn!(
            "{}ping-exit is ignored in server mode (a silent client is dropped by keepalive/ping-restart)",
            where_is(cfg, "ping-exit")
        );
    }
    let management = server_management(cfg)?;
    let policy = peer_policy(cfg)?;
    let base = session_base(cfg, Side::Server)?;
    // Decrypts an encrypted key / opens a pkcs12 file (askpass or prompt),
    // or leaves it for the management interface to ask.
    let (session, crl_reload, key_passphrase) = match crate::keys::load_or_defer(cfg, opening)? {
        Some(tls) => {
            let opened = server_tls(cfg, &base, &tls, &policy)?;
            (opened.session, opened.crl_reload, None)
        }
        None => {
            let (cfg2, base2) = (cfg.clone(), base.clone());
            let opener: Opener<OpenedServerKey> = Box::new(move |passphrase| {
                let tls = crate::keys::load_with_passphrase(&cfg2, passphrase)?;
                server_tls(&cfg2, &base2, &tls, &policy)
            });
            let deferred = DeferredKey {
                open: opener,
                retry: cfg.auth_retry.unwrap_or_default(),
                nocache: cfg.auth_nocache,
                local: Some(crate::keys::local_passphrase(cfg, opening)),
            };
            (Arc::new(base), None, Some(deferred))
        }
    };
    if let Some(net) = net {
        let mask = u32::from(net.netmask);
        if mask.leading_ones() + mask.trailing_zeros() != 32 || mask.leading_ones() > 29 {
            bail!(
                "{}server: netmask {} is not a prefix of /29 or shorter",
                where_is(cfg, "server"),
                net.netmask
            );
        }
    }
    for r in &cfg.routes_ipv6 {
        if let Some(gw) = r.gateway {
            bail!(
                "{}route-ipv6 {}/{} {gw}: a server routes IPv6 networks into its tun device; a gateway is not implemented",
                where_is(cfg, "route-ipv6"),
                r.network,
                r.bits
            );
        }
    }
    // `server ... nopool`, or no `server`: no IPv4 pool (2.6's pool then
    // holds IPv6 addresses only).
    // An explicit `ifconfig-pool` defines one even beside `nopool` (which
    // only keeps `server` from adding its own), as in 2.6.
    let pool = match (cfg.ifconfig_pool, net) {
        (Some(p), _) => Some((p.start, p.end)),
        (None, Some(n)) if !n.nopool => {
            let (network, mask) = (u32::from(n.network), u32::from(n.netmask));
            Some((
                Ipv4Addr::from((network & mask) + 2),
                Ipv4Addr::from((network | !mask) - 1),
            ))
        }
        _ => None,
    };
    let (pool, ipv6) = server_tunnel_ipv6(cfg, pool)?;
    let mut dataplane = dataplane_base(cfg);
    let listeners = server_listeners(cfg)?;
    let udp = listeners.iter().find(|l| l.1 == Transport::Udp);
    if cfg.scripts.up_restart && cfg.persist_tun {
        // 2.6 runs `down`/`up` with `restart` when a SIGUSR1 keeps the device.
        warn!(
            "{}up-restart: a server's soft restart (SIGUSR1) that keeps the tun device (persist-tun) runs no up/down hooks in ferrovpn; 2.6 runs them with 'restart'",
            where_is(cfg, "up-restart")
        );
    }
    // 2.6 tells UDP clients only; over TCP the closed connection tells them.
    let explicit_exit_notify = match cfg.explicit_exit_notify {
        Some(_) if udp.is_none() => {
            warn!(
                "{}NOTICE: --explicit-exit-notify ignored for --proto tcp",
                where_is(cfg, "explicit-exit-notify")
            );
            None
        }
        n => n,
    };
    let tcp_listeners: Vec<SocketAddr> = (listeners.iter())
        .filter(|l| l.1 == Transport::Tcp)
        .map(|l| l.0)
        .collect();
    dataplane.bind = udp.or(listeners.first()).map_or_else(
        || SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), cfg.local_port()),
        |l| l.0,
    );
    dataplane.transport = match (udp.is_some(), tcp_listeners.is_empty()) {
        (true, true) => Transport::Udp,
        (true, false) => Transport::UdpAndTcp,
        _ => Transport::Tcp,
    };
    audit_udp_only(cfg, dataplane.transport != Transport::Udp)?;
    Ok(ServerSettings {
        tcp_listeners,
        port_share: match &cfg.port_share {
            Some(p) => Some(PortShare {
                target: SocketAddr::new(port_share_host(cfg, p)?, p.port),
                journal_dir: p.journal_dir.clone(),
            }),
            None => None,
        },
        dataplane,
        ipv4_net: net.map(|n| {
            let network = u32::from(n.network) & u32::from(n.netmask);
            (Ipv4Addr::from(network), n.netmask)
        }),
        pool,
        pushes: cfg.push.clone(),
        ipv6,
        push_tun_ipv6: cfg.server_ipv6.is_some(),
        routes_ipv6: cfg
            .routes_ipv6
            .iter()
            .map(|r| {
                let metric = r.metric.or(cfg.route_metric.filter(|&m| m > 0));
                (r.network, r.bits, metric)
            })
            .collect(),
        route_ipv6_gateways: cfg.routes_ipv6.iter().map(|r| r.gateway).collect(),
        routes: cfg
            .routes
            .iter()
            .map(|r| {
                let metric = r.metric.or(cfg.route_metric.filter(|&m| m > 0));
                (r.network, r.netmask, metric)
            })
            .collect(),
        no_exec: no_exec(cfg),
        ping: cfg.ping_interval().map(secs),
        ping_restart: cfg.ping_restart_secs().map(secs),
        push_keepalive: cfg.keepalive.map(|k| (k.interval, k.timeout)),
        session,
        tls_crypt_v2: tls_crypt_v2_server_key(cfg)?,
        max_clients: cfg.max_clients() as usize,
        connect_freq: cfg.connect_freq(),
        connect_freq_initial: cfg.connect_freq_initial(),
        tun_mtu: cfg.tun_mtu(),
        reneg_bytes: cfg.reneg_bytes.filter(|&n| n > 0),
        reneg_pkts: cfg.reneg_pkts.filter(|&n| n > 0),
        duplicate_cn: cfg.duplicate_cn,
        crl_reload,
        status: status(cfg),
        pool_persist: cfg.ifconfig_pool_persist.as_ref().map(|p| PoolPersist {
            path: p.path.clone(),
            write_every: (p.interval_secs > 0).then(|| secs(p.interval_secs)),
        }),
        compression: ferrovpn_control::compression::framing(&cfg.compression),
        management,
        client_config_dir: client_config_dir(cfg)?,
        metrics: cfg.metrics,
        scripts: {
            refuse_client_only_scripts(cfg)?;
            script_settings(cfg)?
        },
        username_as_common_name: cfg.username_as_common_name,
        auth_user_pass_optional: cfg.auth_user_pass_optional,
        auth_token: auth_token(cfg)?,
        setup_done: None,
        persist_tun: cfg.persist_tun,
        persist_key: cfg.persist_key,
        explicit_exit_notify,
        key_passphrase,
    })
}

/// A server's TLS settings from its opened key: the session settings and
/// how a changed `crl-verify` file rebuilds them.
pub(super) fn server_tls(
    cfg: &Config,
    base: &SessionConfig,
    tls: &crate::keys::TlsFiles,
    policy: &PeerCertPolicy,
) -> anyhow::Result<OpenedServerKey> {
    let (ca, cert, key) = (tls.ca.as_str(), tls.cert.as_str(), tls.key.as_str());
    let mut session = base.clone();
    session.tls_server = Some(
        server_config_with_client_cert(
            &TlsMaterial {
                ca_pem: ca,
                cert_pem: cert,
                key_pem: key,
                extra_certs_pem: &tls.extra_certs,
                tls13_only: tls13_only(cfg),
                crls_pem: crl_text(cfg),
            },
            policy.clone(),
            client_cert_mode(cfg)?,
        )
        .map_err(|e| crate::keys::tls_setup_error(cfg, e))?,
    );
    let crl_reload = crl_reload(cfg, &session, ca, cert, key, &tls.extra_certs, policy);
    Ok(OpenedServerKey {
        session: Arc::new(session),
        crl_reload,
    })
}

/// A server's `management` directives; `management-query-passwords`
/// asks for the key's passphrase (2.6's server asks too).
pub(super) fn server_management(cfg: &Config) -> anyhow::Result<Option<ManagementSettings>> {
    let management = management(cfg)?;
    if management.is_none() && cfg.management_query_passwords {
        bail!(
            "{}management-query-passwords needs 'management'",
            where_is(cfg, "management-query-passwords")
        );
    }
    Ok(management)
}

/// A host name in OpenVPN 2.7's `local NAME PORT PROTO`, resolved once at
/// start as 2.7 does: the resolver's first address of the family PROTO
/// names (`udp4`/`tcp4`, `udp6`/`tcp6`); for plain `udp`/`tcp`, like
/// `local NAME`, the first IPv4 address, else the first address.
pub(super) fn resolve_local_name(cfg: &Config, name: &str, proto: Proto) -> anyhow::Result<IpAddr> {
    use std::net::ToSocketAddrs;
    let at = where_is(cfg, "local");
    let addrs: Vec<SocketAddr> = (name, 0)
        .to_socket_addrs()
        .with_context(|| format!("{at}local: cannot resolve '{name}'"))?
        .collect();
    let family = match proto {
        Proto::Udp4
        | Proto::Tcp {
            family: Family::V4, ..
        } => Some(false),
        Proto::Udp6
        | Proto::Tcp {
            family: Family::V6, ..
        } => Some(true),
        _ => None,
    };
    let ip = match family {
        Some(v6) => addrs.iter().find(|a| a.is_ipv6() == v6),
        None => addrs.iter().find(|a| a.is_ipv4()).or(addrs.first()),
    }
    .map(SocketAddr::ip)
    .with_context(|| format!("{at}local: '{name}' has no address for {proto:?}"))?;
    info!("local {name} resolved to {ip}");
    Ok(ip)
}

/// `port-share HOST`: an address, or a host name resolved once at start to
/// its first IPv4 address, as 2.6's port_share_open resolves it (AF_INET,
/// fatal when there is none).
pub(super) fn port_share_host(
    cfg: &Config,
    p: &ferrovpn_config::PortShareConf,
) -> anyhow::Result<IpAddr> {
    use std::net::ToSocketAddrs;
    let Some(name) = &p.host_name else {
        return Ok(p.host);
    };
    let at = where_is(cfg, "port-share");
    let ip = (name.as_str(), p.port)
        .to_socket_addrs()
        .with_context(|| format!("{at}port-share: cannot resolve '{name}'"))?
        .find(SocketAddr::is_ipv4)
        .map(|a| a.ip())
        .with_context(|| format!("{at}port-share: '{name}' has no IPv4 address"))?;
    info!("port-share {name} resolved to {ip}");
    Ok(ip)
}

/// The server's listening sockets and their transports: one per `local`
/// line (OpenVPN 2.7's multi-socket server), else the one that `local`,
/// `lport`/`port` and `proto` name.
pub(super) fn server_listeners(cfg: &Config) -> anyhow::Result<Vec<(SocketAddr, Transport)>> {
    let lines = if cfg.locals.is_empty() {
        vec![LocalEntry {
            addr: local_address(cfg, cfg.local, cfg.local_name.as_deref())?,
            port: None,
            proto: None,
            name: None,
        }]
    } else {
        if cfg.local_name.is_some() {
            bail!(
                "{}local: a host name cannot be combined with other `local` lines; give addresses",
                where_is(cfg, "local")
            );
        }
        cfg.locals.clone()
    };
    let mut out: Vec<(SocketAddr, Transport)> = Vec::with_capacity(lines.len());
    for line in lines {
        let proto = line.proto.unwrap_or(cfg.proto());
        let transport = match proto {
            Proto::Tcp {
                role: Some(TcpRole::Client),
                ..
            } => bail!(
                "{}--mode server currently only supports --proto values of udp, tcp-server, tcp4-server, or tcp6-server (as 2.6)",
                where_is(
                    cfg,
                    if line.proto.is_some() {
                        "local"
                    } else {
                        "proto"
                    }
                )
            ),
            Proto::Tcp { .. } => Transport::Tcp,
            _ => Transport::Udp,
        };
        let v6 = matches!(
            proto,
            Proto::Udp6
                | Proto::Tcp {
                    family: Family::V6,
                    ..
                }
        );
        let any = if v6 {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        };
        let addr = match &line.name {
            Some(name) => Some(resolve_local_name(cfg, name, proto)?),
            None => line.addr,
        };
        let bind = SocketAddr::new(addr.unwrap_or(any), line.port.unwrap_or(cfg.local_port()));
        if out.contains(&(bind, transport)) {
            bail!(
                "{}{bind} ({transport:?}) is listed twice",
                where_is(cfg, "local")
            );
        }
        out.push((bind, transport));
    }
    if out.iter().filter(|l| l.1 == Transport::Udp).count() > 1 {
        bail!(
            "{}more than one UDP listening socket is not supported (a server takes one UDP 'local' line and any number of TCP ones)",
            where_is(cfg, "local")
        );
    }
    if cfg.port_share.is_some() && !out.iter().any(|l| l.1 == Transport::Tcp) {
        bail!(
            "{}--port-share only works in TCP server mode (--proto values of tcp-server, tcp4-server, or tcp6-server), as in 2.6",
            where_is(cfg, "port-share")
        );
    }
    Ok(out)
}

/// `client-config-dir`: the directory must be there at start (inside the
/// chroot, where it is read), as 2.6 checks it; readable after
/// `user`/`group` is checked when they apply.
pub(super) fn client_config_dir(cfg: &Config) -> anyhow::Result<Option<ClientConfigDir>> {
    let Some(dir) = &cfg.client_config_dir else {
        return Ok(None);
    };
    let seen_from_here = match &cfg.chroot {
        Some(root) => root.join(dir.strip_prefix("/").unwrap_or(dir)),
        None => dir.clone(),
    };
    if let Err(e) = ClientConfigDir::check_access(&seen_from_here) {
        bail!(
            "{}client-config-dir: {e}",
            where_is(cfg, "client-config-dir")
        );
    }
    Ok(Some(ClientConfigDir {
        dir: dir.clone(),
        exclusive: cfg.ccd_exclusive,
    }))
}

/// `auth-gen-token`: the secret (or a random one), the renewal interval
/// (default `reneg-sec`, as 2.6) and the lifetime.
pub(super) fn auth_token(cfg: &Config) -> anyhow::Result<Option<AuthTokenSettings>> {
    let Some(t) = &cfg.auth_gen_token else {
        return Ok(None);
    };
    let key = match &cfg.auth_gen_token_secret {
        Some(m) => TokenKey::from_pem(&m.text).with_context(|| {
            format!(
                "{}ERROR: Cannot load auth-token secret",
                where_is(cfg, "auth-gen-token-secret")
            )
        })?,
        None => TokenKey::random(),
    };
    let reneg = cfg.reneg_sec.map_or(3600, |r| r.secs);
    Ok(Some(AuthTokenSettings {
        key,
        limits: Limits {
            renewal_secs: u64::from(t.renewal.unwrap_or(reneg)),
            lifetime_secs: t.lifetime.map(u64::from),
        },
        external_auth: t.external_auth,
    }))
}

/// Scripts a server does not run (2.6 runs them in point-to-point modes).
pub(super) fn refuse_client_only_scripts(cfg: &Config) -> anyhow::Result<()> {
    refuse_scripts(
        cfg,
        &[
            ("ipchange", cfg.scripts.ipchange.is_some()),
            ("up-restart", cfg.scripts.up_restart),
        ],
        |_| " is supported on clients only in ferrovpn".into(),
    )
}

/// The server's IPv6 inside the tunnel (`server-ipv6`, or `ifconfig-ipv6` +
/// `ifconfig-ipv6-pool`) and the IPv4 pool as 2.6 uses it beside an IPv6
/// pool (the smaller pool limits both).
pub(super) fn server_tunnel_ipv6(
    cfg: &Config,
    pool: Option<Ipv4Range>,
) -> anyhow::Result<(Option<Ipv4Range>, Option<ferrovpn_config::TunnelIpv6>)> {
    if cfg.server_ipv6.is_some() && cfg.ifconfig_ipv6.is_some() {
        // 2.6's helper sets the server's address over it, without a word.
        warn!(
            "{}ifconfig-ipv6 ignored: 'server-ipv6' sets the server's IPv6 address",
            where_is(cfg, "ifconfig-ipv6")
        );
    }
    let ipv6 = cfg.tunnel_ipv6();
    let v6_pool = ipv6.as_ref().and_then(|v| v.pool);
    if let Some(p) = &v6_pool
        && p.size() < 2
    {
        bail!(
            "{}IPv6 pool size is too small ({}), must be at least 2",
            where_is(cfg, "ifconfig-ipv6-pool"),
            p.size()
        );
    }
    let Some(pool) = pool else {
        return Ok((None, ipv6));
    };
    let (pool, note) = ferrovpn_control::server::ipv6::unified_pool(pool, v6_pool.as_ref());
    if let Some(note) = note {
        warn!("{note}");
    }
    Ok((Some(pool), ipv6))
}
