//! Turns a parsed OpenVPN-style [`Config`] into the settings the control
//! plane runs with: TLS configs, control-channel wrapping, data-plane knobs.
//! Every refusal here names the directive (and, where known, file and line).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use ferrovpn_config::{
    Config, KeyDirection as ConfKeyDirection, Material, MaterialSource, RemoteCertTls, TlsVersion,
    Topology, X509NameType,
};
use ferrovpn_control::client::{ClientSettings, Remote};
use ferrovpn_control::management::{self, ManagementSettings};
use ferrovpn_control::server::{CrlReload, PoolPersist, ServerSettings};
use ferrovpn_control::status::StatusSettings;
use ferrovpn_dataplane::DataPlaneConfig;
use ferrovpn_proto::data::{Cipher, Side};
use ferrovpn_proto::key_method::{client_options_string, server_options_string};
use ferrovpn_proto::session::SessionConfig;
use ferrovpn_proto::session::tls::{
    ServerCertPolicy, TlsMaterial, X509NameCheck, client_config, server_config,
};
use ferrovpn_proto::wrap::{AuthDigest, ControlWrap, KeyDirection, StaticKey};
use tracing::warn;

/// Version announced to servers in IV_VER: the 2.6 protocol level we speak.
const ANNOUNCED_VERSION: &str = "2.6.14";
/// IV_PROTO: DATA_V2 | REQUEST_PUSH | TLS_KEY_EXPORT | CC_EXIT_NOTIFY.
const ANNOUNCED_PROTO: u32 = 2 | 4 | 8 | 128;
/// Receive replay window when the config does not set one: wide enough for
/// what several workers reorder (a stock peer keeps its own default of 64).
const DEFAULT_DATA_REPLAY_WINDOW: u32 = 2048;

fn where_is(cfg: &Config, directive: &str) -> String {
    cfg.location_of(directive)
        .map(|l| format!("{l}: "))
        .unwrap_or_default()
}

fn material<'a>(cfg: &'a Config, m: &'a Option<Material>, name: &str) -> anyhow::Result<&'a str> {
    match m {
        Some(m) => Ok(&m.text),
        None => bail!(
            "'{name}' is required{}",
            if cfg.is_server() {
                " in server mode"
            } else {
                " (ferrovpn clients authenticate with a certificate)"
            }
        ),
    }
}

/// `extra-certs` blocks, concatenated (empty when there are none).
fn extra_certs(cfg: &Config) -> String {
    let texts: Vec<&str> = cfg.extra_certs.iter().map(|m| m.text.as_str()).collect();
    texts.join("\n")
}

/// `management ...` and the `management-*` directives that shape it.
fn management(cfg: &Config) -> anyhow::Result<Option<ManagementSettings>> {
    let Some(m) = &cfg.management else {
        for d in [
            "management-hold",
            "management-log-cache",
            "management-client-user",
            "management-client-group",
        ] {
            if cfg.location_of(d).is_some() {
                bail!("{}{d} needs 'management'", where_is(cfg, d));
            }
        }
        return Ok(None);
    };
    let listen = match &m.listen {
        ferrovpn_config::ManagementListen::Tcp(a) => management::Listen::Tcp(*a),
        ferrovpn_config::ManagementListen::Unix(p) => management::Listen::Unix(p.clone()),
    };
    let unix = matches!(listen, management::Listen::Unix(_));
    let id = |directive: &str, name: &Option<String>, db: &str| -> anyhow::Result<Option<u32>> {
        let Some(name) = name else { return Ok(None) };
        if !unix {
            bail!(
                "{}{directive} can only be used with a unix socket ('management PATH unix')",
                where_is(cfg, directive)
            );
        }
        let text = std::fs::read_to_string(db).unwrap_or_default();
        management::id_by_name(&text, name)
            .map(Some)
            .with_context(|| {
                format!(
                    "{}{directive}: no such name '{name}' in {db}",
                    where_is(cfg, directive)
                )
            })
    };
    let password = match &m.password_file {
        None => None,
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "{}management password file {}",
                    where_is(cfg, "management"),
                    path.display()
                )
            })?;
            Some(text.lines().next().unwrap_or("").to_string())
        }
    };
    if password.is_none() && !unix {
        warn!(
            "management on a TCP port without a password: anyone who can connect controls the server"
        );
    }
    Ok(Some(ManagementSettings {
        listen,
        password,
        hold: cfg.management_hold,
        log_cache: cfg.management_log_cache.map_or(1000, |n| n as usize),
        client_uid: id(
            "management-client-user",
            &cfg.management_client_user,
            "/etc/passwd",
        )?,
        client_gid: id(
            "management-client-group",
            &cfg.management_client_group,
            "/etc/group",
        )?,
        verb: cfg.verb(),
    }))
}

/// `status FILE [N]` with `status-version`.
fn status(cfg: &Config) -> Option<StatusSettings> {
    cfg.status.as_ref().map(|st| StatusSettings {
        path: st.path.clone(),
        interval: secs(st.interval_secs),
        version: cfg.status_version.unwrap_or(1),
    })
}

/// The `crl-verify` PEM text (empty without the directive).
fn crl_text(cfg: &Config) -> &str {
    cfg.crl_verify.as_ref().map_or("", |m| m.text.as_str())
}

/// A server follows a `crl-verify` file (not an inline block): each new
/// text is turned into a session configuration like the first one.
fn crl_reload(
    cfg: &Config,
    session: &SessionConfig,
    ca: &str,
    cert: &str,
    key: &str,
    extra_certs: &str,
) -> Option<CrlReload> {
    let Some(Material {
        source: MaterialSource::File(path),
        ..
    }) = &cfg.crl_verify
    else {
        return None;
    };
    let base = session.clone();
    let (ca, cert, key, extra) = (
        ca.to_owned(),
        cert.to_owned(),
        key.to_owned(),
        extra_certs.to_owned(),
    );
    let tls13 = tls13_only(cfg);
    Some(CrlReload {
        path: path.clone(),
        rebuild: Box::new(move |crl: &str| {
            let mut s = base.clone();
            s.tls_server = Some(server_config(&TlsMaterial {
                ca_pem: &ca,
                cert_pem: &cert,
                key_pem: &key,
                extra_certs_pem: &extra,
                tls13_only: tls13,
                crls_pem: crl,
            })?);
            Ok(Arc::new(s))
        }),
    })
}

/// `tls-version-min 1.3` (or an unknown version with `or-highest`, which the
/// parser maps to 1.3). Lower minimums change nothing: rustls speaks 1.2+.
fn tls13_only(cfg: &Config) -> bool {
    cfg.tls_version_min
        .is_some_and(|v| v.version == TlsVersion::V1_3)
}

fn ciphers(cfg: &Config) -> anyhow::Result<(Vec<Cipher>, Option<Cipher>)> {
    let mut out = Vec::new();
    for name in cfg.data_ciphers() {
        match Cipher::from_name(&name) {
            Some(c) if !out.contains(&c) => out.push(c),
            Some(_) => {}
            None => warn!(
                "{}data-ciphers: '{name}' is not supported (only AES-128-GCM, AES-256-GCM, CHACHA20-POLY1305); skipped",
                where_is(cfg, "data-ciphers")
            ),
        }
    }
    if out.is_empty() {
        bail!(
            "{}data-ciphers: none of the listed ciphers is supported (AES-128-GCM, AES-256-GCM, CHACHA20-POLY1305)",
            where_is(cfg, "data-ciphers")
        );
    }
    let fallback = match cfg
        .data_ciphers_fallback
        .as_deref()
        .or(cfg.cipher.as_deref())
    {
        None => None,
        Some(name) => match Cipher::from_name(name) {
            Some(c) => Some(c),
            None => {
                warn!(
                    "data-ciphers-fallback/cipher '{name}' is not supported; clients without cipher negotiation will be refused"
                );
                None
            }
        },
    };
    Ok((out, fallback))
}

/// The control-channel wrapping and the OCC key-direction it implies.
fn control_wrap(cfg: &Config, side: Side) -> anyhow::Result<(ControlWrap, Option<u8>)> {
    if let Some(m) = &cfg.tls_crypt {
        let key = StaticKey::parse(&m.text)
            .with_context(|| format!("{}tls-crypt: bad key", where_is(cfg, "tls-crypt")))?;
        if cfg.tls_auth.is_some() {
            bail!("tls-crypt and tls-auth cannot both be used");
        }
        return Ok((ControlWrap::tls_crypt(&key, side), None));
    }
    if let Some(ta) = &cfg.tls_auth {
        let key = StaticKey::parse(&ta.material.text)
            .with_context(|| format!("{}tls-auth: bad key", where_is(cfg, "tls-auth")))?;
        let digest = AuthDigest::from_name(cfg.auth()).with_context(|| {
            format!(
                "{}auth '{}' is not supported for tls-auth (SHA1, SHA256, SHA384, SHA512)",
                where_is(cfg, "auth"),
                cfg.auth()
            )
        })?;
        let (dir, keydir) = match cfg.tls_auth_direction() {
            None => (KeyDirection::Bidirectional, None),
            Some(ConfKeyDirection::Zero) => (KeyDirection::Normal, Some(0)),
            Some(ConfKeyDirection::One) => (KeyDirection::Inverse, Some(1)),
        };
        return Ok((ControlWrap::tls_auth(&key, dir, digest), keydir));
    }
    Ok((ControlWrap::None, None))
}

fn secs(n: u32) -> Duration {
    Duration::from_secs(u64::from(n))
}

fn session_base(cfg: &Config, side: Side) -> anyhow::Result<SessionConfig> {
    let (data_ciphers, data_ciphers_fallback) = ciphers(cfg)?;
    let (wrap, keydir) = control_wrap(cfg, side)?;
    let occ_cipher = data_ciphers_fallback.unwrap_or(data_ciphers[0]);
    let options_string = match side {
        Side::Server => server_options_string(occ_cipher, keydir, cfg.auth()),
        Side::Client => client_options_string(occ_cipher, keydir, cfg.auth()),
    };
    let reneg = cfg.reneg_secs();
    Ok(SessionConfig {
        side,
        wrap: Arc::new(wrap),
        tls_server: None,
        tls_client: None,
        data_ciphers,
        data_ciphers_fallback,
        tls_timeout: secs(cfg.tls_timeout().max(1)),
        hand_window: secs(cfg.hand_window().max(1)),
        reneg_interval: (reneg > 0).then(|| secs(reneg)),
        tran_window: secs(cfg.tran_window().max(1)),
        max_packet_size: usize::from(cfg.max_packet_size()).clamp(576, 1400),
        options_string,
        peer_info: String::new(),
    })
}

fn dataplane_base(cfg: &Config) -> DataPlaneConfig {
    let replay = cfg
        .replay_window
        .map(|r| r.size)
        .unwrap_or(DEFAULT_DATA_REPLAY_WINDOW);
    let mss = cfg.mssfix();
    DataPlaneConfig {
        tun_name: match cfg.dev.as_deref() {
            // `dev tun` means "the next free tunN", like OpenVPN.
            None | Some("tun") => String::new(),
            Some(name) => name.to_owned(),
        },
        mtu: cfg.tun_mtu(),
        workers: cfg.workers(),
        pin_cpus: cfg.cpu_pin,
        client_to_client: cfg.client_to_client,
        replay_window: replay,
        mssfix: (mss.max > 0).then_some(mss.max),
        ..DataPlaneConfig::default()
    }
}

/// Server settings from a `mode server` / `server NET MASK` config.
pub fn server_settings(cfg: &Config) -> anyhow::Result<ServerSettings> {
    let net = cfg.server.with_context(|| {
        "server mode needs 'server NETWORK NETMASK' (ferrovpn has no static-address server mode)"
    })?;
    if cfg.topology() != Topology::Subnet {
        warn!(
            "{}ferrovpn servers use 'topology subnet' (pushed to clients); the configured topology is ignored",
            where_is(cfg, "topology")
        );
    }
    if cfg.ping_exit.is_some() {
        warn!(
            "{}ping-exit is ignored in server mode (a silent client is dropped by keepalive/ping-restart)",
            where_is(cfg, "ping-exit")
        );
    }
    let ca = material(cfg, &cfg.ca, "ca")?;
    let cert = material(cfg, &cfg.cert, "cert")?;
    let key = material(cfg, &cfg.key, "key")?;
    let extra_certs = extra_certs(cfg);
    let mut session = session_base(cfg, Side::Server)?;
    session.tls_server = Some(
        server_config(&TlsMaterial {
            ca_pem: ca,
            cert_pem: cert,
            key_pem: key,
            extra_certs_pem: &extra_certs,
            tls13_only: tls13_only(cfg),
            crls_pem: crl_text(cfg),
        })
        .context("TLS setup (ca/cert/key/crl-verify)")?,
    );
    let crl_reload = crl_reload(cfg, &session, ca, cert, key, &extra_certs);
    let network = u32::from(net.network);
    let mask = u32::from(net.netmask);
    if mask.leading_ones() + mask.trailing_zeros() != 32 || mask.leading_ones() > 29 {
        bail!(
            "{}server: netmask {} is not a prefix of /29 or shorter",
            where_is(cfg, "server"),
            net.netmask
        );
    }
    let pool = match cfg.ifconfig_pool {
        Some(p) => (p.start, p.end),
        None => (
            Ipv4Addr::from((network & mask) + 2),
            Ipv4Addr::from((network | !mask) - 1),
        ),
    };
    let mut dataplane = dataplane_base(cfg);
    let bind_ip = cfg.local.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    dataplane.bind = SocketAddr::new(bind_ip, cfg.local_port());
    Ok(ServerSettings {
        dataplane,
        network: Ipv4Addr::from(network & mask),
        netmask: net.netmask,
        pool,
        pushes: cfg.push.clone(),
        routes: cfg.routes.iter().map(|r| (r.network, r.netmask)).collect(),
        ping: cfg.ping_interval().map(secs),
        ping_restart: cfg.ping_restart_secs().map(secs),
        push_keepalive: cfg.keepalive.map(|k| (k.interval, k.timeout)),
        session: Arc::new(session),
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
        management: management(cfg)?,
        setup_done: None,
    })
}

fn peer_info(ciphers: &[Cipher], mtu: u16) -> String {
    let names: Vec<&str> = ciphers.iter().map(|c| c.name()).collect();
    let mut s = format!(
        "IV_VER={ANNOUNCED_VERSION}\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU={}\n",
        mtu.max(1600)
    );
    if ciphers.contains(&Cipher::Aes128Gcm) && ciphers.contains(&Cipher::Aes256Gcm) {
        s.push_str("IV_NCP=2\n");
    }
    s.push_str(&format!(
        "IV_CIPHERS={}\nIV_PROTO={ANNOUNCED_PROTO}\nIV_GUI_VER=ferrovpn_{}\n",
        names.join(":"),
        env!("CARGO_PKG_VERSION")
    ));
    s
}

/// Client settings from a `client` / profile config.
pub fn client_settings(cfg: &Config) -> anyhow::Result<ClientSettings> {
    if cfg.remotes.is_empty() {
        bail!("client mode needs at least one 'remote HOST [PORT]'");
    }
    if management(cfg)?.is_some() {
        bail!(
            "{}management: ferrovpn's management interface serves servers only, not clients",
            where_is(cfg, "management")
        );
    }
    let ca = material(cfg, &cfg.ca, "ca")?;
    let cert = material(cfg, &cfg.cert, "cert")?;
    let key = material(cfg, &cfg.key, "key")?;
    let extra_certs = extra_certs(cfg);
    let verify_name = cfg.verify_x509_name.as_ref().map(|v| match v.kind {
        X509NameType::Name => X509NameCheck::CommonName(v.name.clone()),
        X509NameType::NamePrefix => X509NameCheck::CommonNamePrefix(v.name.clone()),
        X509NameType::Subject => X509NameCheck::Subject(v.name.clone()),
    });
    let policy = ServerCertPolicy {
        remote_cert_tls_server: cfg.remote_cert_tls == Some(RemoteCertTls::Server),
        verify_name,
    };
    if cfg.remote_cert_tls == Some(RemoteCertTls::Client) {
        bail!(
            "{}remote-cert-tls client makes no sense on a client",
            where_is(cfg, "remote-cert-tls")
        );
    }
    let mut session = session_base(cfg, Side::Client)?;
    session.tls_client = Some(
        client_config(
            &TlsMaterial {
                ca_pem: ca,
                cert_pem: cert,
                key_pem: key,
                extra_certs_pem: &extra_certs,
                tls13_only: tls13_only(cfg),
                crls_pem: crl_text(cfg),
            },
            policy,
        )
        .context("TLS setup (ca/cert/key)")?,
    );
    session.peer_info = peer_info(&session.data_ciphers, cfg.tun_mtu());
    let mut dataplane = dataplane_base(cfg);
    let bind_ip = cfg.local.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    // `nobind` (what profiles say) and the default both take an ephemeral
    // port; an explicit `lport` binds it.
    let port = if cfg.nobind {
        0
    } else {
        cfg.lport.unwrap_or(0)
    };
    dataplane.bind = SocketAddr::new(bind_ip, port);
    let retry = cfg.connect_retry();
    let retry_max = retry.max.unwrap_or(300);
    Ok(ClientSettings {
        dataplane,
        remotes: cfg
            .remotes
            .iter()
            .map(|r| Remote {
                host: r.host.clone(),
                port: cfg.remote_port(r),
            })
            .collect(),
        remote_random: cfg.remote_random,
        connect_retry: secs(retry.secs.max(1)),
        connect_retry_max: secs(retry_max.max(retry.secs.max(1))),
        session: Arc::new(session),
        // Without ping-restart (configured or pushed) silence never restarts.
        ping_restart: secs(cfg.ping_restart_secs().unwrap_or(u32::MAX)),
        ping: cfg.ping_interval().map(secs),
        ping_exit: cfg.ping_exit.map(secs),
        status: status(cfg),
        explicit_exit_notify: cfg.explicit_exit_notify,
        tun_mtu: cfg.tun_mtu(),
        // `connect-retry-max N`: each remote is tried N times, then give up.
        max_attempts: cfg
            .connect_retry_max
            .map(|n| n.saturating_mul(cfg.remotes.len() as u32).max(1)),
        setup_done: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_info_announces_what_the_session_does() {
        let p = peer_info(&[Cipher::Aes256Gcm, Cipher::Aes128Gcm], 1500);
        assert!(p.contains("IV_PROTO=142\n"));
        assert!(p.contains("IV_NCP=2\n"));
        assert!(p.contains("IV_CIPHERS=AES-256-GCM:AES-128-GCM\n"));
        let p = peer_info(&[Cipher::ChaCha20Poly1305], 1500);
        assert!(!p.contains("IV_NCP"));
    }
}
