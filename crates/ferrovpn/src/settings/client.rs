//! Client settings: client and point-to-point configs (connection list,
//! peer-info, TLS, management, scripts) to [`ClientSettings`].

use super::*;

pub(super) fn peer_info(ciphers: &[Cipher], mtu: u16) -> String {
    let names: Vec<&str> = ciphers.iter().map(|c| c.name()).collect();
    let mut s = format!(
        "IV_VER={ANNOUNCED_VERSION}\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU={}\n",
        mtu.max(1600)
    );
    if ciphers.contains(&Cipher::Aes128Gcm) && ciphers.contains(&Cipher::Aes256Gcm) {
        s.push_str("IV_NCP=2\n");
    }
    s.push_str(&format!(
        "IV_CIPHERS={}\nIV_PROTO={ANNOUNCED_PROTO}\nIV_GUI_VER={}{}\n",
        names.join(":"),
        ferrovpn_proto::key_method::FERROVPN_GUI_VER_PREFIX,
        env!("CARGO_PKG_VERSION")
    ));
    s
}

/// IV_PROTO of a point-to-point peer, as 2.6 announces it without `pull`
/// (`push_peer_info` at detail level 1) less what ferrovpn does not do
/// (the `dns` option, dynamic tls-crypt).
const ANNOUNCED_P2P_PROTO: u32 =
    iv_proto::DATA_V2 | iv_proto::NCP_P2P | iv_proto::TLS_KEY_EXPORT | iv_proto::CC_EXIT_NOTIFY;

/// Peer-info of a point-to-point peer: 2.6 sends only IV_CIPHERS and
/// IV_PROTO there (no version, platform or compression lines).
pub(super) fn p2p_peer_info(ciphers: &[Cipher]) -> String {
    let names: Vec<&str> = ciphers.iter().map(|c| c.name()).collect();
    format!(
        "IV_CIPHERS={}\nIV_PROTO={ANNOUNCED_P2P_PROTO}\n",
        names.join(":")
    )
}

/// Point-to-point TLS mode: the session's P2P settings (2.6's `cipher` is
/// the fallback there, `options_postprocess_cipher`) and the device's.
pub(super) fn p2p_settings(
    cfg: &Config,
    session: &mut SessionConfig,
) -> anyhow::Result<ferrovpn_control::client::P2p> {
    session.p2p = true;
    session.peer_info = p2p_peer_info(&session.data_ciphers);
    if session.data_ciphers_fallback.is_none()
        && let Some(name) = cfg.cipher.as_deref()
    {
        let c = Cipher::from_name(name).with_context(|| {
            format!(
                "{}cipher '{name}': the fallback cipher of point-to-point mode is not supported (AES-128-GCM, AES-256-GCM, CHACHA20-POLY1305, AES-128/192/256-CBC)",
                where_is(cfg, "cipher")
            )
        })?;
        session.data_ciphers_fallback = Some(c);
    }
    let mut ifconfig = Vec::new();
    if let Some(ifc) = cfg.ifconfig {
        if cfg.topology() == Topology::Subnet {
            ifconfig.push(PushOption::Topology("subnet".into()));
        }
        ifconfig.push(PushOption::Ifconfig {
            local: ifc.local,
            netmask_or_remote: ifc.remote_or_netmask,
        });
    } else {
        for d in ["route", "route-ipv6", "redirect-gateway"] {
            if cfg.location_of(d).is_some() {
                bail!(
                    "{}{d} in point-to-point mode needs 'ifconfig' (the tunnel has no address to route through)",
                    where_is(cfg, d)
                );
            }
        }
    }
    Ok(ferrovpn_control::client::P2p {
        tls_server: cfg.tls_server,
        ifconfig,
    })
}

/// Client settings from a `client` / profile config.
pub fn client_settings(cfg: &Config) -> anyhow::Result<ClientSettings> {
    let remotes = client_remotes(cfg)?;
    audit_common(cfg)?;
    audit_udp_only(cfg, remotes.iter().any(|r| r.transport == Transport::Tcp))?;
    let dropping = cfg.user.is_some() || cfg.group.is_some();
    if dropping {
        refuse_scripts(
            cfg,
            &[
                ("plugin", !cfg.scripts.plugins.is_empty()),
                ("up", cfg.scripts.up.is_some()),
                ("route-up", cfg.scripts.route_up.is_some()),
                ("ipchange", cfg.scripts.ipchange.is_some()),
                ("tls-verify", cfg.scripts.tls_verify.is_some()),
            ],
            |name| {
                format!(
                    " together with user/group is not supported on a client: OpenVPN 2.6 runs the first {name} with root's privileges, before it drops them, while ferrovpn drops them before it connects"
                )
            },
        )?;
    }
    let scripts = client_script_settings(cfg, &remotes)?;
    if cfg.verify_client_cert != VerifyClientCert::Require {
        // 2.6's wording.
        bail!(
            "{}--verify-client-cert requires --mode server",
            where_is(cfg, "verify-client-cert")
        );
    }
    let client_management = client_management(cfg)?;
    // Empty cert/key for a username/password client without a certificate;
    // decrypts an encrypted key / opens a pkcs12 file (askpass or prompt),
    // or leaves it for the management interface to ask.
    let tls = if client_management.is_some() {
        crate::keys::load_or_defer(cfg, crate::keys::KeyOpening::ConfigRead)?
    } else {
        Some(crate::keys::load(cfg)?)
    };
    let credentials = cfg
        .auth_user_pass
        .as_ref()
        .map(|aup| {
            ferrovpn_control::client::credentials::from_config_or_management(
                aup,
                cfg.auth_nocache,
                cfg.static_challenge.as_ref(),
                cfg.management_query_passwords,
            )
        })
        .transpose()
        .with_context(|| format!("{}auth-user-pass", where_is(cfg, "auth-user-pass")))?;
    let inline_credentials = cfg.auth_user_pass.clone();
    let policy = peer_policy(cfg)?;
    // A point-to-point TLS server verifies its peer as a server verifies clients.
    let verifies_a_client = cfg.p2p && cfg.tls_server;
    if !verifies_a_client && !policy.verifies_server() {
        warn!(
            "WARNING: No server certificate verification method has been enabled: any certificate from this CA, another client's included, is accepted as the server. Add 'remote-cert-tls server' or 'verify-x509-name'."
        );
    }
    let mut session = session_base(
        cfg,
        if verifies_a_client {
            Side::Server
        } else {
            Side::Client
        },
    )?;
    session.peer_info = peer_info(&session.data_ciphers, cfg.tun_mtu());
    session.peer_info.push_str(cfg.compression.peer_info());
    let p2p = if cfg.p2p {
        Some(p2p_settings(cfg, &mut session)?)
    } else {
        None
    };
    let key_opened = tls.is_some();
    // Without `persist-key` 2.6 opens the key again at every reconnect
    // (`do_close_free_key_schedule` freed its TLS context), with the
    // passphrase in its `passbuf`, else reading or asking again.
    let reopened = !cfg.persist_key && crate::keys::key_asks_passphrase(cfg);
    let key_passphrase = (!key_opened || reopened).then(|| {
        let (cfg2, base, policy) = (cfg.clone(), session.clone(), policy.clone());
        let opener: Opener<Arc<SessionConfig>> = Box::new(move |passphrase| {
            let tls = crate::keys::load_with_passphrase(&cfg2, passphrase)?;
            client_tls(&cfg2, &base, &tls, &policy)
        });
        DeferredKey {
            open: opener,
            retry: cfg.auth_retry.unwrap_or_default(),
            nocache: cfg.auth_nocache,
            local: Some(crate::keys::local_passphrase(
                cfg,
                crate::keys::KeyOpening::ConfigRead,
            )),
        }
    });
    let session = match tls {
        Some(tls) => client_tls(cfg, &session, &tls, &policy)?,
        None => Arc::new(session),
    };
    let mut dataplane = dataplane_base(cfg);
    dataplane.null_device = cfg.is_dev_null();
    // The first entry's; each attempt sets its own entry's.
    dataplane.bind = remotes[0].bind;
    dataplane.transport = remotes[0].transport;
    Ok(ClientSettings {
        dataplane,
        remotes,
        remote_random: cfg.remote_random,
        connect_retry_max: cfg.connect_retry_max,
        session,
        // Without ping-restart (configured or pushed) silence never restarts.
        ping_restart: secs(cfg.ping_restart_secs().unwrap_or(u32::MAX)),
        ping: cfg.ping_interval().map(secs),
        ping_exit: cfg.ping_exit.map(secs),
        tls_exit: cfg.tls_exit,
        status: status(cfg),
        tun_mtu: cfg.tun_mtu(),
        compression: cfg.compression,
        setup_done: None,
        local_options: local_options(cfg),
        route_nopull: cfg.route_nopull,
        no_exec: no_exec(cfg),
        persist_tun: cfg.persist_tun,
        p2p,
        inactive: cfg.inactive.map(|i| ferrovpn_control::client::Inactivity {
            timeout: secs(i.secs),
            min_bytes: i.min_bytes,
        }),
        credentials,
        auth_retry: cfg.auth_retry.unwrap_or_default(),
        reload_credentials: Some(Arc::new(move |source: &CredentialSource| {
            ferrovpn_control::client::credentials::reload(source, inline_credentials.as_ref())
        })),
        scripts,
        management: client_management,
        persist_key: cfg.persist_key,
        key_passphrase,
        key_opened,
        key_memory: crate::keys::passphrase_memory(),
    })
}

/// A client's (or point-to-point end's) session settings with the TLS
/// settings of its opened key.
pub(super) fn client_tls(
    cfg: &Config,
    base: &SessionConfig,
    tls: &crate::keys::TlsFiles,
    policy: &PeerCertPolicy,
) -> anyhow::Result<Arc<SessionConfig>> {
    let material = TlsMaterial {
        ca_pem: &tls.ca,
        cert_pem: &tls.cert,
        key_pem: &tls.key,
        extra_certs_pem: &tls.extra_certs,
        tls13_only: tls13_only(cfg),
        crls_pem: crl_text(cfg),
    };
    let mut session = base.clone();
    if cfg.p2p && cfg.tls_server {
        session.tls_server = Some(
            server_config_with_client_cert(&material, policy.clone(), client_cert_mode(cfg)?)
                .map_err(|e| crate::keys::tls_setup_error(cfg, e))?,
        );
    } else {
        session.tls_client = Some(
            client_config_with_policy(&material, policy.clone())
                .map_err(|e| crate::keys::tls_setup_error(cfg, e))?,
        );
    }
    Ok(Arc::new(session))
}

/// `management` on a client, with `management-query-passwords`; the
/// directives only a server acts on are refused.
pub(super) fn client_management(
    cfg: &Config,
) -> anyhow::Result<Option<ferrovpn_control::client::ClientManagementSettings>> {
    if cfg.management_client_auth {
        // 2.6's wording.
        bail!(
            "{}--management-client-auth requires --mode server",
            where_is(cfg, "management-client-auth")
        );
    }
    let Some(management) = management(cfg)? else {
        for (set, name) in [
            (cfg.management_query_passwords, "management-query-passwords"),
            (cfg.management_query_remote, "management-query-remote"),
            (cfg.management_query_proxy, "management-query-proxy"),
        ] {
            if set {
                bail!("{}{name} needs 'management'", where_is(cfg, name));
            }
        }
        return Ok(None);
    };
    Ok(Some(ferrovpn_control::client::ClientManagementSettings {
        management,
        query_passwords: cfg.management_query_passwords,
        query_remote: cfg.management_query_remote,
        query_proxy: cfg.management_query_proxy,
    }))
}

/// A client's scripts: as a server's, with 2.6's client variables
/// (`remote_N`, `remote_port_N`, `proto_N` of each connection entry).
pub(super) fn client_script_settings(
    cfg: &Config,
    remotes: &[Remote],
) -> anyhow::Result<ScriptSettings> {
    let mut scripts = script_settings(cfg)?;
    let env = &mut scripts.base_env;
    env.remove("proto_1");
    env.remove("remote_port_1");
    if cfg.nobind {
        env.remove("local_port_1");
    }
    // `client_remotes` made one remote per entry, in order.
    for (i, (r, entry)) in remotes.iter().zip(cfg.connection_list()).enumerate() {
        let n = i + 1;
        env.set(
            &format!("proto_{n}"),
            proto_env_name(entry.proto(), TcpRole::Client),
        );
        env.set(&format!("remote_{n}"), r.host.clone());
        env.set(&format!("remote_port_{n}"), r.port.to_string());
    }
    Ok(scripts)
}
