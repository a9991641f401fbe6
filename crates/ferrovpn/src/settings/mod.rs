//! Turns a parsed OpenVPN-style [`Config`] into the settings the control
//! plane runs with: TLS configs, control-channel wrapping, data-plane knobs.
//! Every refusal here names the directive (and, where known, file and line).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use ferrovpn_config::{
    Config, KeyDirection as ConfKeyDirection, Material, MaterialSource, MssfixMode, Proto,
    RemoteCertTls, RouteGateway, TcpRole, TlsVersion, Topology, VerifyClientCert, X509NameType,
};
use ferrovpn_config::{Family, LocalEntry};
use ferrovpn_control::client::credentials::CredentialSource;
use ferrovpn_control::client::{ClientSettings, Remote};
use ferrovpn_control::key_passphrase::{DeferredKey, Opener};
use ferrovpn_control::management::{self, ManagementSettings};
use ferrovpn_control::netconfig::NoExec;
use ferrovpn_control::scripts::{AuthVerify, ScriptCommand, ScriptSettings, Security};
use ferrovpn_control::server::auth_token::{Limits, TokenKey};
use ferrovpn_control::server::port_share::PortShare;
use ferrovpn_control::server::{
    AuthTokenSettings, ClientConfigDir, CrlReload, OpenedServerKey, PoolPersist, ServerSettings,
};
use ferrovpn_control::status::StatusSettings;
use ferrovpn_dataplane::mss::MssCount;
use ferrovpn_dataplane::{DataPlaneConfig, Transport};
use ferrovpn_proto::data::{Cipher, Side};
use ferrovpn_proto::key_method::{client_options_string, iv_proto, server_options_string};
use ferrovpn_proto::push::{PullFilter, PullFilterAction, PushOption};
use ferrovpn_proto::session::SessionConfig;
use ferrovpn_proto::session::tls::{
    CertProfile, CertRole, ClientCertMode, KeyUsageCheck, PeerCertPolicy, TlsMaterial,
    X509NameCheck, client_config_with_policy, eku_name_is_known, server_config_with_client_cert,
};
use ferrovpn_proto::tls_crypt_v2::{ClientKey, ServerKey};
use ferrovpn_proto::wrap::{AuthDigest, ControlWrap, KeyDirection, StaticKey};
use tracing::{info, warn};

/// Version announced to servers in IV_VER: the 2.6 protocol level we speak.
const ANNOUNCED_VERSION: &str = "2.6.14";
/// IV_PROTO: the protocol features this client speaks (docs/protocol.md §6.3).
const ANNOUNCED_PROTO: u32 = iv_proto::DATA_V2
    | iv_proto::REQUEST_PUSH
    | iv_proto::TLS_KEY_EXPORT
    | iv_proto::CC_EXIT_NOTIFY
    // The client honours `AUTH_PENDING,timeout N`, as 2.6's does.
    | iv_proto::AUTH_PENDING_KW;
/// Receive replay window when the config does not set one: wide enough for
/// what several workers reorder (a stock peer keeps its own default of 64).
const DEFAULT_DATA_REPLAY_WINDOW: u32 = 2048;

mod client;
mod server;

pub use client::client_settings;
pub use server::{server_settings, server_settings_opening};

/// The local port of a point-to-point peer without `lport`/`port` (2.6's default).
const DEFAULT_P2P_PORT: u16 = 1194;

fn where_is(cfg: &Config, directive: &str) -> String {
    cfg.location_of(directive)
        .map(|l| format!("{l}: "))
        .unwrap_or_default()
}

/// `management ...` and the `management-*` directives that shape it.
fn management(cfg: &Config) -> anyhow::Result<Option<ManagementSettings>> {
    let Some(m) = &cfg.management else {
        for d in [
            "management-hold",
            "management-client-auth",
            "management-log-cache",
            "management-client-user",
            "management-client-group",
            "management-up-down",
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
        // The process's, so that `forget-passwords` reaches what `askpass
        // FILE` or the terminal gave too (2.6 has one `passbuf`).
        key_passphrase: crate::keys::passphrase_memory(),
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
        client_auth: cfg.management_client_auth,
        up_down: cfg.management_up_down,
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
    policy: &PeerCertPolicy,
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
    let policy = policy.clone();
    let client_cert = client_cert_mode(cfg).unwrap_or_default();
    Some(CrlReload {
        path: path.clone(),
        rebuild: Box::new(move |crl: &str| {
            let mut s = base.clone();
            s.tls_server = Some(server_config_with_client_cert(
                &TlsMaterial {
                    ca_pem: &ca,
                    cert_pem: &cert,
                    key_pem: &key,
                    extra_certs_pem: &extra,
                    tls13_only: tls13,
                    crls_pem: crl,
                },
                policy.clone(),
                client_cert,
            )?);
            Ok(Arc::new(s))
        }),
    })
}

/// `verify-client-cert`: as 2.6, `none` and `optional` need something
/// else that checks logins (an `auth-user-pass-verify` script or a plugin).
fn client_cert_mode(cfg: &Config) -> anyhow::Result<ClientCertMode> {
    let mode = match cfg.verify_client_cert {
        VerifyClientCert::Require => return Ok(ClientCertMode::Require),
        VerifyClientCert::Optional => ClientCertMode::Optional,
        VerifyClientCert::None => ClientCertMode::None,
    };
    if cfg.scripts.auth_user_pass_verify.is_none() && cfg.scripts.plugins.is_empty() {
        bail!(
            "{}--verify-client-cert none|optional must be used with an --auth-user-pass-verify script or a plugin",
            where_is(cfg, "verify-client-cert")
        );
    }
    warn!(
        "WARNING: POTENTIALLY DANGEROUS OPTION --verify-client-cert none|optional may accept clients which do not present a certificate"
    );
    Ok(mode)
}

fn role(r: RemoteCertTls) -> CertRole {
    match r {
        RemoteCertTls::Server => CertRole::Server,
        RemoteCertTls::Client => CertRole::Client,
    }
}

/// What the peer's certificate must satisfy beyond its chain to `ca`:
/// `remote-cert-tls`, `remote-cert-ku`, `remote-cert-eku`, `ns-cert-type`
/// and `verify-x509-name`, as OpenVPN 2.6 applies them on either side.
fn peer_policy(cfg: &Config) -> anyhow::Result<PeerCertPolicy> {
    // The chain check (webpki) already demands the EKU of our peer's role
    // when the certificate has one; asking for the other role could never pass.
    let peer_role = if cfg.is_server() || (cfg.p2p && cfg.tls_server) {
        CertRole::Client
    } else {
        CertRole::Server
    };
    for (directive, wanted) in [
        ("remote-cert-tls", cfg.remote_cert_tls),
        ("ns-cert-type", cfg.ns_cert_type),
    ] {
        if let Some(w) = wanted
            && role(w) != peer_role
        {
            bail!(
                "{}{directive} {}: ferrovpn only accepts peers of the other role here ('{directive} {}')",
                where_is(cfg, directive),
                if peer_role == CertRole::Client {
                    "server"
                } else {
                    "client"
                },
                if peer_role == CertRole::Client {
                    "client"
                } else {
                    "server"
                },
            );
        }
    }
    let mut policy = match cfg.remote_cert_tls {
        Some(r) => PeerCertPolicy::remote_cert_tls(role(r)),
        None => PeerCertPolicy::default(),
    };
    if cfg.remote_cert_tls.is_some()
        && (cfg.remote_cert_ku.is_some() || cfg.remote_cert_eku.is_some())
    {
        // In 2.6 whichever comes last overrides part of the other.
        bail!(
            "{}remote-cert-tls cannot be combined with remote-cert-ku/remote-cert-eku; use one or the other",
            where_is(cfg, "remote-cert-tls")
        );
    }
    if let Some(ku) = &cfg.remote_cert_ku {
        policy.key_usage = if ku.is_empty() {
            KeyUsageCheck::Present
        } else {
            KeyUsageCheck::AnyOf(ku.clone())
        };
    }
    if let Some(eku) = &cfg.remote_cert_eku {
        if !eku_name_is_known(eku) {
            bail!(
                "{}remote-cert-eku '{eku}': give the OID in dotted form (e.g. 1.3.6.1.5.5.7.3.1); this name is not known to ferrovpn",
                where_is(cfg, "remote-cert-eku")
            );
        }
        policy.eku = Some(eku.clone());
    }
    policy.ns_cert_type = cfg.ns_cert_type.map(role);
    policy.profile = match cfg.tls_cert_profile.as_deref() {
        Some("preferred") => CertProfile::Preferred,
        _ => CertProfile::Legacy,
    };
    policy.verify_name = cfg.verify_x509_name.as_ref().map(|v| match v.kind {
        X509NameType::Name => X509NameCheck::CommonName(v.name.clone()),
        X509NameType::NamePrefix => X509NameCheck::CommonNamePrefix(v.name.clone()),
        X509NameType::Subject => X509NameCheck::Subject(v.name.clone()),
    });
    Ok(policy)
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
                "{}data-ciphers: '{name}' is not supported (only AES-128-GCM, AES-256-GCM, CHACHA20-POLY1305, AES-128/192/256-CBC); skipped",
                where_is(cfg, "data-ciphers")
            ),
        }
    }
    if out.is_empty() {
        bail!(
            "{}data-ciphers: none of the listed ciphers is supported (AES-128-GCM, AES-256-GCM, CHACHA20-POLY1305, AES-128/192/256-CBC)",
            where_is(cfg, "data-ciphers")
        );
    }
    // As 2.6: `cipher` takes no part in negotiation; only
    // `data-ciphers-fallback` names a fallback (the parser refused the
    // ones ferrovpn cannot run).
    let fallback = match cfg.data_ciphers_fallback.as_deref() {
        None => None,
        Some(name) => Some(Cipher::from_name(name).with_context(|| {
            format!(
                "{}data-ciphers-fallback '{name}' is not supported",
                where_is(cfg, "data-ciphers-fallback")
            )
        })?),
    };
    if let Some(name) = cfg.cipher.as_deref()
        && cfg.data_ciphers_fallback.is_none()
        && !cfg
            .data_ciphers()
            .iter()
            .any(|c| c.eq_ignore_ascii_case(name))
    {
        warn!(
            "{}DEPRECATED OPTION: --cipher set to '{name}' but missing in --data-ciphers ({}). ferrovpn, like OpenVPN 2.6, ignores --cipher for cipher negotiations.",
            where_is(cfg, "cipher"),
            cfg.data_ciphers().join(":")
        );
    }
    Ok((out, fallback))
}

/// `auth`: the HMAC digest of the CBC data ciphers. Checked only when a CBC
/// cipher can be negotiated (AEAD ciphers ignore `auth`, as in 2.6).
fn data_auth(
    cfg: &Config,
    ciphers: &[Cipher],
    fallback: Option<Cipher>,
) -> anyhow::Result<AuthDigest> {
    let cbc = ciphers.iter().chain(fallback.iter()).any(|c| !c.is_aead());
    match AuthDigest::from_name(cfg.auth()) {
        Some(d) => Ok(d),
        None if cbc => bail!(
            "{}auth '{}' with a CBC data cipher is not supported (SHA1, SHA256, SHA384, SHA512){}",
            where_is(cfg, "auth"),
            cfg.auth(),
            if cfg.auth().eq_ignore_ascii_case("none") {
                "; an unauthenticated data channel is refused"
            } else {
                ""
            }
        ),
        // Not used by any cipher we can negotiate.
        None => Ok(AuthDigest::Sha1),
    }
}

/// The control-channel wrapping and the OCC key-direction it implies. A
/// server's tls-crypt-v2 key is apart ([`tls_crypt_v2_server_key`]): its
/// wrapping here serves the clients without their own key.
fn control_wrap(cfg: &Config, side: Side) -> anyhow::Result<(ControlWrap, Option<u8>)> {
    if let Some(v2) = &cfg.tls_crypt_v2
        && side == Side::Client
    {
        let key = ClientKey::parse(&v2.material.text).with_context(|| {
            format!(
                "{}tls-crypt-v2 {}: not a usable tls-crypt-v2 client key",
                where_is(cfg, "tls-crypt-v2"),
                crate::keys::material_name("tls-crypt-v2", &v2.material)
            )
        })?;
        return Ok((ControlWrap::tls_crypt_v2_client(&key), None));
    }
    if let Some(m) = &cfg.tls_crypt {
        let key = StaticKey::parse(&m.text).with_context(|| {
            format!(
                "{}tls-crypt {}: not a usable OpenVPN static key",
                where_is(cfg, "tls-crypt"),
                crate::keys::material_name("tls-crypt", m)
            )
        })?;
        if cfg.tls_auth.is_some() {
            bail!("tls-crypt and tls-auth cannot both be used");
        }
        return Ok((ControlWrap::tls_crypt(&key, side), None));
    }
    if let Some(ta) = &cfg.tls_auth {
        let key = StaticKey::parse(&ta.material.text).with_context(|| {
            format!(
                "{}tls-auth {}: not a usable OpenVPN static key",
                where_is(cfg, "tls-auth"),
                crate::keys::material_name("tls-auth", &ta.material)
            )
        })?;
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

/// A server's `tls-crypt-v2` key, if it has one.
fn tls_crypt_v2_server_key(cfg: &Config) -> anyhow::Result<Option<Arc<ServerKey>>> {
    let Some(v2) = &cfg.tls_crypt_v2 else {
        return Ok(None);
    };
    let key = ServerKey::parse(&v2.material.text).with_context(|| {
        format!(
            "{}tls-crypt-v2 {}: not a usable tls-crypt-v2 server key",
            where_is(cfg, "tls-crypt-v2"),
            crate::keys::material_name("tls-crypt-v2", &v2.material)
        )
    })?;
    if !v2.force_cookie {
        info!(
            "{}tls-crypt-v2: clients older than 2.6 (no stateless handshake) are refused, as with force-cookie",
            where_is(cfg, "tls-crypt-v2")
        );
    }
    Ok(Some(Arc::new(key)))
}

fn secs(n: u32) -> Duration {
    Duration::from_secs(u64::from(n))
}

/// `local ADDRESS|NAME`: a name is resolved once, at start (2.6 resolves
/// it when it binds). `None`: not given.
fn local_address(
    cfg: &Config,
    ip: Option<IpAddr>,
    name: Option<&str>,
) -> anyhow::Result<Option<IpAddr>> {
    use std::net::ToSocketAddrs;
    if let Some(ip) = ip {
        return Ok(Some(ip));
    }
    let Some(name) = name else {
        return Ok(None);
    };
    let addrs: Vec<SocketAddr> = (name, 0)
        .to_socket_addrs()
        .with_context(|| format!("{}local: cannot resolve '{name}'", where_is(cfg, "local")))?
        .collect();
    let ip = addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or(addrs.first())
        .map(SocketAddr::ip)
        .with_context(|| format!("{}local: '{name}' has no address", where_is(cfg, "local")))?;
    info!("local {name} resolved to {ip}");
    Ok(Some(ip))
}

/// The client's connection list: one [`Remote`] per `remote` line or
/// `<connection>` block, each with its own transport.
fn client_remotes(cfg: &Config) -> anyhow::Result<Vec<Remote>> {
    let mut warned_exit_notify = false;
    let mut remotes = Vec::new();
    let mut entries = cfg.connection_list();
    if entries.is_empty() && cfg.p2p {
        // No `remote`: the end waits for its peer ([`Remote::waits`]).
        entries.push(cfg.entry_without_remote());
    }
    for entry in entries {
        let at = entry
            .location
            .as_ref()
            .map(|l| format!("{l}: "))
            .unwrap_or_default();
        let proto = entry.proto();
        if let Proto::Tcp {
            role: Some(TcpRole::Server),
            ..
        } = proto
        {
            bail!(
                "{at}a client connects to its server: use proto tcp-client (or tcp), not tcp-server"
            );
        }
        let tcp = proto.is_tcp();
        let local = local_address(cfg, entry.local, entry.local_name.as_deref())?;
        // `nobind` (what profiles say) and the default both take an
        // ephemeral port; an explicit `lport` binds it.
        let port = if entry.nobind {
            0
        } else if cfg.p2p {
            // A point-to-point peer sends to our `lport` (2.6 binds it,
            // default `port` / 1194, unless `nobind`).
            entry.lport.or(entry.port).unwrap_or(DEFAULT_P2P_PORT)
        } else {
            entry.lport.unwrap_or(0)
        };
        let bind = SocketAddr::new(local.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), port);
        // 2.6 binds a TCP client only when `local` or a local port is given.
        let tcp_bind =
            (tcp && !entry.nobind && (local.is_some() || entry.lport.is_some())).then_some(bind);
        let explicit_exit_notify = match entry.explicit_exit_notify {
            Some(_) if tcp => {
                if !warned_exit_notify {
                    warn!("{at}NOTICE: --explicit-exit-notify ignored for --proto tcp");
                    warned_exit_notify = true;
                }
                None
            }
            n => n,
        };
        let retry = entry.connect_retry();
        let proxy = match (&entry.http_proxy, &entry.socks_proxy) {
            (Some(http), _) => {
                let mut http = http.clone();
                // `http-proxy-user-pass` replaces the AUTHFILE (2.6's auth_file_up).
                if let Some(up) = &cfg.http_proxy_user_pass {
                    match &mut http.auth {
                        ferrovpn_config::HttpProxyAuth::Basic(c) => *c = up.clone(),
                        ferrovpn_config::HttpProxyAuth::Auto { credentials, .. } => {
                            *credentials = Some(up.clone())
                        }
                        ferrovpn_config::HttpProxyAuth::None => {}
                    }
                }
                Some(ferrovpn_control::client::Proxy::Http(http))
            }
            (None, Some(socks)) => Some(ferrovpn_control::client::Proxy::Socks(socks.clone())),
            (None, None) => None,
        };
        remotes.push(Remote {
            host: entry.remote.host.clone(),
            port: entry.remote_port(),
            transport: if tcp { Transport::Tcp } else { Transport::Udp },
            bind,
            tcp_bind,
            connect_retry: secs(retry.secs),
            connect_retry_max: secs(retry.max.unwrap_or(300).max(retry.secs)),
            connect_timeout: secs(entry.connect_timeout()),
            explicit_exit_notify,
            proxy,
            random_hostname: cfg.remote_random_hostname,
            family: match proto_family(proto) {
                Family::Any => None,
                Family::V4 => Some(false),
                Family::V6 => Some(true),
            },
            float: entry.float,
        });
    }
    if remotes.is_empty() {
        bail!("client mode needs at least one 'remote HOST [PORT]'");
    }
    Ok(remotes)
}

/// `proto` of a server: `tcp` is `tcp-server` there, as in 2.6.
fn server_transport(cfg: &Config) -> anyhow::Result<Transport> {
    match cfg.proto() {
        Proto::Tcp {
            role: Some(TcpRole::Client),
            ..
        } => bail!(
            "{}--mode server currently only supports --proto values of udp, tcp-server, tcp4-server, or tcp6-server (as 2.6)",
            where_is(cfg, "proto")
        ),
        Proto::Tcp { .. } => Ok(Transport::Tcp),
        _ => Ok(Transport::Udp),
    }
}

fn session_base(cfg: &Config, side: Side) -> anyhow::Result<SessionConfig> {
    let (data_ciphers, data_ciphers_fallback) = ciphers(cfg)?;
    let data_auth = data_auth(cfg, &data_ciphers, data_ciphers_fallback)?;
    let (wrap, keydir) = control_wrap(cfg, side)?;
    let occ_cipher = data_ciphers_fallback.unwrap_or(data_ciphers[0]);
    let mut options_string = occ_options_string(cfg, side, occ_cipher, keydir);
    if cfg.compression.alg != ferrovpn_config::CompressAlg::Undef {
        // 2.6 announces any compression context as `comp-lzo`, after `proto`.
        options_string = options_string.replacen(",proto UDPv4", ",proto UDPv4,comp-lzo", 1);
    }
    // 2.6 names the TCP ends "TCPv4_CLIENT" / "TCPv4_SERVER" (v4 even over IPv6).
    let tcp_end = match side {
        // A client's TCP entries announce TCPv4_CLIENT (the connection does it).
        Side::Server if server_transport(cfg)? == Transport::Tcp => Some("TCPv4_SERVER"),
        _ => None,
    };
    if let Some(end) = tcp_end {
        options_string = ferrovpn_proto::key_method::occ_over_tcp(&options_string, end);
    }
    let reneg = cfg.reneg_secs();
    Ok(SessionConfig {
        side,
        wrap: Arc::new(wrap),
        tls_server: None,
        tls_client: None,
        data_ciphers,
        data_ciphers_fallback,
        data_auth,
        tls_timeout: secs(cfg.tls_timeout().max(1)),
        hand_window: secs(cfg.hand_window().max(1)),
        reneg_interval: (reneg > 0).then(|| secs(reneg)),
        tran_window: secs(cfg.tran_window().max(1)),
        max_packet_size: usize::from(cfg.max_packet_size()).clamp(576, 1400),
        options_string,
        peer_info: String::new(),
        pull_filters: match side {
            Side::Client => pull_filters(cfg),
            Side::Server => Vec::new(),
        },
        p2p: false,
    })
}

/// A compression framing that puts a 1-byte header in front of every
/// packet (2.6 counts it in the MSS and the OCC `link-mtu`).
fn compression_header(cfg: &Config) -> bool {
    use ferrovpn_config::CompressAlg;
    matches!(
        cfg.compression.alg,
        CompressAlg::Stub | CompressAlg::Lzo | CompressAlg::Lz4
    )
}

/// The OCC options string before compression and TCP: `auth` as 2.6
/// names it (`[null-digest]` with an AEAD cipher or `auth none`), 2.6's
/// `link-mtu` and `tun-mtu`, `mtu-dynamic` with `fragment`.
fn occ_options_string(cfg: &Config, side: Side, cipher: Cipher, keydir: Option<u8>) -> String {
    use ferrovpn_proto::key_method::{OccFrame, with_occ_frame};
    let digest = ferrovpn_proto::wrap::AuthDigest::from_name(cfg.auth());
    let auth = if cipher.is_aead() || cfg.auth().eq_ignore_ascii_case("none") {
        "[null-digest]".to_string()
    } else {
        cfg.auth().to_ascii_uppercase()
    };
    let s = match side {
        Side::Server => server_options_string(cipher, keydir, &auth),
        Side::Client => client_options_string(cipher, keydir, &auth),
    };
    let frame = OccFrame {
        tun_mtu: u32::from(cfg.tun_mtu.unwrap_or(1500)),
        auth: digest,
        tun_mtu_extra: u32::from(cfg.tun_mtu_extra.unwrap_or(0)),
        comp_v1: compression_header(cfg),
        fragment: cfg.fragment.is_some(),
        tcp: false,
        socks_udp: false,
    };
    with_occ_frame(&s, cipher, &frame)
}

/// `pull-filter` lines, in order.
fn pull_filters(cfg: &Config) -> Vec<PullFilter> {
    cfg.pull_filters
        .iter()
        .map(|f| PullFilter {
            action: match f.action {
                ferrovpn_config::PullFilterAction::Accept => PullFilterAction::Accept,
                ferrovpn_config::PullFilterAction::Ignore => PullFilterAction::Ignore,
                ferrovpn_config::PullFilterAction::Reject => PullFilterAction::Reject,
            },
            prefix: f.prefix.clone(),
        })
        .collect()
}

/// `ifconfig-noexec` / `route-noexec`.
fn no_exec(cfg: &Config) -> NoExec {
    NoExec {
        ifconfig: cfg.ifconfig_noexec,
        routes: cfg.route_noexec,
    }
}

/// The address family a `proto` asks for.
fn proto_family(p: Proto) -> Family {
    match p {
        Proto::Udp => Family::Any,
        Proto::Udp4 => Family::V4,
        Proto::Udp6 => Family::V6,
        Proto::Tcp { family, .. } => family,
    }
}

fn dataplane_base(cfg: &Config) -> DataPlaneConfig {
    let replay = cfg
        .replay_window
        .map(|r| r.size)
        .unwrap_or(DEFAULT_DATA_REPLAY_WINDOW);
    let mss = mssfix_with_fragment(cfg);
    DataPlaneConfig {
        tun_name: match cfg.dev.as_deref() {
            // `dev tun` means "the next free tunN", like OpenVPN.
            None | Some("tun") => String::new(),
            Some(name) => name.to_owned(),
        },
        mtu: cfg.tun_mtu(),
        tx_queue_len: cfg.txqueuelen,
        workers: cfg.workers(),
        pin_cpus: cfg.cpu_pin,
        seal_spread: cfg.seal_spread,
        client_to_client: cfg.client_to_client,
        replay_window: replay,
        mssfix: (mss.max > 0).then_some(mss.max),
        mssfix_count: match mss.mode {
            MssfixMode::Default | MssfixMode::Mtu => MssCount::Encap,
            MssfixMode::Payload => MssCount::Payload,
            MssfixMode::Fixed => MssCount::Fixed,
        },
        mss_payload_extra: u16::from(compression_header(cfg))
            .saturating_add(cfg.tun_mtu_extra.unwrap_or(0)),
        cbc_hmac_len: AuthDigest::from_name(cfg.auth()).map_or(20, |d| d.len() as u16),
        fragment: cfg.fragment.map(|f| ferrovpn_dataplane::Fragment {
            max: f.max,
            mtu: f.encap,
        }),
        passtos: cfg.passtos,
        ..DataPlaneConfig::default()
    }
}

/// The MSS clamp as 2.6.3 sets it (options.c): no `mssfix` line or a bare
/// one means `fragment`'s MAX (counting the outer headers) with
/// `fragment`, else 1492 with the outer headers when `tun-mtu` is 1500,
/// else the tun MTU as the inner packet size (`fixed`). 2.6's two
/// warnings about `mssfix` beside `fragment` (init.c) are given too.
fn mssfix_with_fragment(cfg: &Config) -> ferrovpn_config::Mssfix {
    let given = cfg.mssfix.filter(|m| m.mode != MssfixMode::Default);
    let m = match (cfg.fragment, given) {
        (_, Some(m)) => m,
        (Some(f), None) => ferrovpn_config::Mssfix {
            max: f.max,
            mode: MssfixMode::Default,
        },
        (None, None) if cfg.tun_mtu() != 1500 => ferrovpn_config::Mssfix {
            max: cfg.tun_mtu(),
            mode: MssfixMode::Fixed,
        },
        (None, None) => cfg.mssfix(),
    };
    if let Some(f) = cfg.fragment {
        if m.max > f.max {
            warn!(
                "{}WARNING: if you use --mssfix and --fragment, you should set --fragment ({}) larger or equal than --mssfix ({})",
                where_is(cfg, "fragment"),
                f.max,
                m.max
            );
        }
        let mssfix_encap = matches!(m.mode, MssfixMode::Default | MssfixMode::Mtu);
        if m.max > 0 && f.encap != mssfix_encap {
            warn!(
                "{}WARNING: if you use --mssfix and --fragment, you should use the \"mtu\" flag for both or none of of them.",
                where_is(cfg, "fragment")
            );
        }
    }
    m
}

/// `fragment` and `passtos` work on UDP only: 2.6 refuses `fragment` with
/// TCP ("--fragment can only be used with --proto udp"); `passtos` over TCP
/// (2.6 sets the TCP socket's TOS) is not implemented.
fn audit_udp_only(cfg: &Config, tcp: bool) -> anyhow::Result<()> {
    if tcp && cfg.fragment.is_some() {
        bail!(
            "{}--fragment can only be used with --proto udp (as 2.6)",
            where_is(cfg, "fragment")
        );
    }
    if tcp && cfg.passtos {
        bail!(
            "{}passtos with a TCP transport is not implemented (ferrovpn copies the TOS onto UDP datagrams only)",
            where_is(cfg, "passtos")
        );
    }
    Ok(())
}

/// Directives 2.6 accepts in both modes that ferrovpn applies in neither:
/// refused when they would change behaviour, warned about when they only
/// tune something ferrovpn sizes itself.
fn audit_common(cfg: &Config) -> anyhow::Result<()> {
    if cfg.replay_window.is_some_and(|r| r.time.is_some()) {
        bail!(
            "{}replay-window SIZE SECONDS: the time window is not implemented; give the size alone",
            where_is(cfg, "replay-window")
        );
    }
    for r in &cfg.routes {
        match r.gateway {
            None | Some(RouteGateway::VpnGateway) => {}
            Some(RouteGateway::Addr(_)) if !cfg.is_server() => {}
            Some(g) => bail!(
                "{}route {} {}: gateway {} is not implemented (only the VPN gateway{})",
                where_is(cfg, "route"),
                r.network,
                r.netmask,
                match g {
                    RouteGateway::Addr(a) => a.to_string(),
                    RouteGateway::VpnGateway => "vpn_gateway".into(),
                    RouteGateway::NetGateway => "net_gateway".into(),
                    RouteGateway::RemoteHost => "remote_host".into(),
                },
                if cfg.is_server() {
                    ""
                } else {
                    " or an address"
                }
            ),
        }
    }
    if !cfg.dhcp_options.is_empty() {
        warn!(
            "{}dhcp-option in the local config is ignored (OpenVPN 2.6 on Linux only hands it to scripts); push it from the server",
            where_is(cfg, "dhcp-option")
        );
    }
    Ok(())
}

/// A client's own `route-gateway`, `route-metric`, `route` and
/// `redirect-gateway` lines, in the form the server would push them.
fn local_options(cfg: &Config) -> Vec<PushOption> {
    let mut out = Vec::new();
    if let Some(gw) = cfg.route_gateway {
        out.push(PushOption::RouteGateway(gw));
    }
    if let Some(m) = cfg.route_metric {
        out.push(PushOption::Other(
            "route-metric".into(),
            vec![m.to_string()],
        ));
    }
    for r in &cfg.routes {
        out.push(PushOption::Route {
            network: r.network,
            netmask: r.netmask,
            gateway: match r.gateway {
                Some(RouteGateway::Addr(a)) => Some(a),
                _ => None,
            },
            metric: r.metric,
        });
    }
    for r in &cfg.routes_ipv6 {
        let mut args = vec![format!("{}/{}", r.network, r.bits)];
        args.push(
            r.gateway
                .map_or_else(|| "default".to_string(), |g| g.to_string()),
        );
        if let Some(m) = r.metric {
            args.push(m.to_string());
        }
        out.push(PushOption::Other("route-ipv6".into(), args));
    }
    if let Some(flags) = &cfg.redirect_gateway {
        out.push(PushOption::RedirectGateway(flags.clone()));
    }
    out
}

/// `management-query-remote` / `-proxy` are about the connection entry a
/// client tries next; a server has none to ask about.
fn refuse_client_queries(cfg: &Config) -> anyhow::Result<()> {
    for (set, name) in [
        (cfg.management_query_remote, "management-query-remote"),
        (cfg.management_query_proxy, "management-query-proxy"),
    ] {
        if set {
            bail!(
                "{}{name} is for clients (a server has no connection entry to ask about)",
                where_is(cfg, name)
            );
        }
    }
    Ok(())
}

/// `script-security`, the scripts (each must exist and be executable, as
/// 2.6 checks at start), and the variables 2.6 gives every script.
fn script_settings(cfg: &Config) -> anyhow::Result<ScriptSettings> {
    let s = &cfg.scripts;
    let command = |name: &str, text: &Option<String>| -> anyhow::Result<Option<ScriptCommand>> {
        let Some(text) = text else {
            return Ok(None);
        };
        let c = ScriptCommand::parse(text);
        let program = c.program();
        let runnable = std::fs::metadata(&program).and_then(|m| {
            use std::os::unix::fs::PermissionsExt;
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                Ok(())
            } else {
                Err(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
            }
        });
        if let Err(e) = runnable {
            bail!(
                "{}--{name} script fails with '{}': {e}",
                where_is(cfg, name),
                program.display()
            );
        }
        Ok(Some(c))
    };
    let auth_user_pass_verify = match &s.auth_user_pass_verify {
        Some(v) => {
            command("auth-user-pass-verify", &Some(v.command.clone()))?.map(|command| AuthVerify {
                command,
                via_file: v.via_file,
            })
        }
        None => None,
    };
    let mut base_env = ferrovpn_control::scripts::Env::new();
    for (name, value) in &cfg.setenv {
        base_env.set(name, value.clone());
    }
    // As 2.6 sets them: `daemon` and `log` given (a daemon under systemd
    // too), whatever happened; `daemon_pid` is set again after detaching.
    base_env.set("daemon", if cfg.daemon { "1" } else { "0" });
    base_env.set(
        "daemon_log_redirect",
        if cfg.log.is_some() { "1" } else { "0" },
    );
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    base_env.set("daemon_start_time", started.to_string());
    base_env.set("daemon_pid", std::process::id().to_string());
    base_env.set("verb", cfg.verb().to_string());
    // A server's one connection entry (a client's are set per entry).
    base_env.set("proto_1", proto_env_name(cfg.proto(), TcpRole::Server));
    base_env.set("local_port_1", cfg.local_port().to_string());
    // A server's entry has a remote port too (`rport`, else `port`), as 2.6.
    base_env.set("remote_port_1", cfg.default_remote_port().to_string());
    let tls_verify = command("tls-verify", &s.tls_verify)?;
    // The certificates that complete a peer's chain for the scripts' X509_N_*.
    let peer_ca = match &cfg.ca {
        Some(m) => ferrovpn_proto::session::tls::parse_certs("ca", &m.text)
            .map(|certs| certs.iter().map(|c| c.as_ref().to_vec()).collect())
            .unwrap_or_default(),
        None => Vec::new(),
    };
    Ok(ScriptSettings {
        security: Security::from_level(s.security),
        ipchange: command("ipchange", &s.ipchange)?,
        route_pre_down: command("route-pre-down", &s.route_pre_down)?,
        up_restart: s.up_restart,
        tls_verify,
        tls_export_cert: s.tls_export_cert.as_ref().map(std::path::PathBuf::from),
        tls_crypt_v2_verify: command("tls-crypt-v2-verify", &s.tls_crypt_v2_verify)?,
        peer_ca,
        up: command("up", &s.up)?,
        down: command("down", &s.down)?,
        down_pre: s.down_pre,
        route_up: command("route-up", &s.route_up)?,
        learn_address: command("learn-address", &s.learn_address)?,
        client_connect: command("client-connect", &s.client_connect)?,
        client_disconnect: command("client-disconnect", &s.client_disconnect)?,
        auth_user_pass_verify,
        plugins: plugin_specs(cfg)?,
        base_env,
        ..ScriptSettings::default()
    })
}

/// The `plugin` lines; each shared object must exist (it is loaded when
/// the server starts).
fn plugin_specs(cfg: &Config) -> anyhow::Result<Vec<ferrovpn_control::plugin::PluginSpec>> {
    cfg.scripts
        .plugins
        .iter()
        .map(|p| {
            let spec = ferrovpn_control::plugin::PluginSpec::new(&p.path, &p.args);
            if !spec.path.is_file() {
                bail!(
                    "{}plugin: cannot load '{}': no such file",
                    where_is(cfg, "plugin"),
                    spec.path.display()
                );
            }
            Ok(spec)
        })
        .collect()
}

/// A connection entry's `proto_N` as 2.6 sets it (`proto2ascii`, short
/// form): the name of the protocol with its family, plain `tcp` taking the
/// role of `role` (the mode's end), e.g. `udp`, `udp6`, `tcp-server`,
/// `tcp4-client`.
fn proto_env_name(proto: Proto, role: TcpRole) -> &'static str {
    match proto {
        Proto::Udp => "udp",
        Proto::Udp4 => "udp4",
        Proto::Udp6 => "udp6",
        Proto::Tcp { family, role: r } => match (family, r.unwrap_or(role)) {
            (Family::Any, TcpRole::Server) => "tcp-server",
            (Family::Any, TcpRole::Client) => "tcp-client",
            (Family::V4, TcpRole::Server) => "tcp4-server",
            (Family::V4, TcpRole::Client) => "tcp4-client",
            (Family::V6, TcpRole::Server) => "tcp6-server",
            (Family::V6, TcpRole::Client) => "tcp6-client",
        },
    }
}

/// Refuses the first of `scripts` (directive, whether the config sets it)
/// that is set: its file and line, its name, then `why(name)`.
fn refuse_scripts(
    cfg: &Config,
    scripts: &[(&str, bool)],
    why: impl Fn(&str) -> String,
) -> anyhow::Result<()> {
    match scripts.iter().find(|(_, set)| *set) {
        Some((name, _)) => bail!("{}{name}{}", where_is(cfg, name), why(name)),
        None => Ok(()),
    }
}

/// An inclusive IPv4 address range (a pool).
type Ipv4Range = (Ipv4Addr, Ipv4Addr);

#[cfg(test)]
mod tests {
    use super::client::*;
    use super::*;

    #[test]
    fn peer_info_announces_what_the_session_does() {
        let p = peer_info(&[Cipher::Aes256Gcm, Cipher::Aes128Gcm], 1500);
        assert!(p.contains("IV_PROTO=158\n"));
        assert!(p.contains("IV_NCP=2\n"));
        assert!(p.contains("IV_CIPHERS=AES-256-GCM:AES-128-GCM\n"));
        let p = peer_info(&[Cipher::ChaCha20Poly1305], 1500);
        assert!(!p.contains("IV_NCP"));
    }

    use ferrovpn_proto::session::tls::placeholder_server_name;
    use ferrovpn_testkit::pki::{Pki, PkiOptions};

    fn pki(tag: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("fvpn-settings-{}-{tag}", std::process::id()));
        Pki::generate(&dir, &PkiOptions::default()).unwrap()
    }

    fn refusal<T>(r: anyhow::Result<T>) -> String {
        match r {
            Ok(_) => panic!("the configuration was accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    #[derive(Clone, Copy, Debug)]
    enum Role {
        Server,
        /// Client 1 of the PKI.
        Client,
    }
    use Role::{Client, Server};

    /// Each `(role, extra, says)`: the server's or client's config with the
    /// `extra` lines is refused, and the error says `says`.
    fn assert_refused(p: &Pki, cases: &[(Role, &str, &str)]) {
        for &(role, extra, says) in cases {
            let e = match role {
                Server => refusal(server_cfg(p, extra)),
                Client => refusal(client_cfg(p, 1, extra)),
            };
            assert!(e.contains(says), "{role:?} {extra:?}: {e}");
        }
    }

    fn server_cfg(p: &Pki, extra: &str) -> anyhow::Result<ServerSettings> {
        let text = format!(
            "server 10.8.0.0 255.255.255.0\ndev tun\nca {}\ncert {}\nkey {}\ndh none\n{extra}\n",
            p.ca.cert.display(),
            p.server.cert.display(),
            p.server.key.display()
        );
        server_settings(&ferrovpn_config::parse_str(&text, "server.conf")?)
    }

    /// `server-ipv6` without `server`, and `server ... nopool` with an IPv6
    /// pool: no IPv4 pool, and the PUSH_REPLY of an IPv6-only client as a
    /// stock 2.6 server sends it (no `ifconfig`, no `route-gateway` or
    /// `topology` without `server`).
    #[test]
    fn ipv6_only_servers_have_no_ipv4_pool_and_push_no_ifconfig() {
        use ferrovpn_control::server::build_push_reply;
        use ferrovpn_proto::key_method::PeerInfo;
        let p = pki("v6only");
        let text = format!(
            "server-ipv6 fd00:6::/64\ndev tun\nca {}\ncert {}\nkey {}\ndh none\nkeepalive 10 60\n",
            p.ca.cert.display(),
            p.server.cert.display(),
            p.server.key.display()
        );
        let s =
            server_settings(&ferrovpn_config::parse_str(&text, "server.conf").unwrap()).unwrap();
        assert_eq!((s.pool, s.ipv4_net, s.server_ip()), (None, None, None));
        let info = PeerInfo::parse("IV_PROTO=30\nIV_NCP=2\n");
        let client: std::net::Ipv6Addr = "fd00:6::1000".parse().unwrap();
        let reply = build_push_reply(
            &s,
            None,
            Some(client),
            0,
            Cipher::Aes256Gcm,
            &info,
            &ferrovpn_config::ClientConfig::default(),
        );
        assert_eq!(
            reply,
            "PUSH_REPLY,tun-ipv6,ping 10,ping-restart 60,ifconfig-ipv6 fd00:6::1000/64 fd00:6::1,peer-id 0,cipher AES-256-GCM,key-derivation tls-ekm"
        );
        let nopool = server_cfg(
            &p,
            "ifconfig-ipv6 fd00:7::1/64 fd00:7::2\nifconfig-ipv6-pool fd00:7::1000/64",
        )
        .unwrap();
        assert!(nopool.pool.is_some());
        let text = format!(
            "{}\nserver 10.8.0.0 255.255.255.0 nopool\nifconfig-ipv6 fd00:7::1/64 fd00:7::2\nifconfig-ipv6-pool fd00:7::1000/64\n",
            text.replace("server-ipv6 fd00:6::/64\n", "")
        );
        let s =
            server_settings(&ferrovpn_config::parse_str(&text, "server.conf").unwrap()).unwrap();
        assert_eq!(s.pool, None);
        assert_eq!(s.server_ip(), Some(Ipv4Addr::new(10, 8, 0, 1)));
        let reply = build_push_reply(
            &s,
            None,
            Some("fd00:7::1000".parse().unwrap()),
            1,
            Cipher::Aes256Gcm,
            &info,
            &ferrovpn_config::ClientConfig::default(),
        );
        assert!(
            // `tun-ipv6` only comes with `server-ipv6`, as from 2.6's helper.
            reply.starts_with("PUSH_REPLY,route-gateway 10.8.0.1,topology subnet,ping 10,ping-restart 60,ifconfig-ipv6 fd00:7::1000/64 fd00:7::1,peer-id 1"),
            "{reply}"
        );
        assert!(!reply.contains(",ifconfig "), "{reply}");
    }

    #[test]
    fn host_names_in_local_and_port_share_are_resolved_at_start() {
        let p = pki("names");
        let s = server_cfg(
            &p,
            "local localhost 1443 tcp4\nlocal * 1194 udp\nport-share localhost 8443",
        )
        .unwrap();
        assert_eq!(s.tcp_listeners, vec!["127.0.0.1:1443".parse().unwrap()]);
        assert_eq!(
            s.port_share.unwrap().target,
            "127.0.0.1:8443".parse().unwrap()
        );
        assert_refused(
            &p,
            &[
                (
                    Server,
                    "local no-such-host.invalid 1443 tcp\nport-share localhost 8443",
                    "cannot resolve 'no-such-host.invalid'",
                ),
                (
                    Server,
                    "proto tcp\nport-share no-such-host.invalid 8443",
                    "port-share: cannot resolve",
                ),
            ],
        );
    }

    #[test]
    fn verify_client_cert_none_needs_a_login_check_and_a_server() {
        let p = pki("vcc");
        assert_refused(
            &p,
            &[
                (Server, "verify-client-cert none", "server.conf:"),
                (
                    Server,
                    "verify-client-cert none",
                    "must be used with an --auth-user-pass-verify script or a plugin",
                ),
                (
                    Server,
                    "verify-client-cert optional\nplugin /nonexistent/p.so",
                    "cannot load '/nonexistent/p.so'",
                ),
                (Client, "verify-client-cert none", "requires --mode server"),
                (
                    Client,
                    "plugin /nonexistent/p.so",
                    "cannot load '/nonexistent/p.so'",
                ),
                // 2.6 calls a client's first UP as root; ferrovpn drops
                // privileges before it connects.
                (
                    Client,
                    "user nobody\nplugin /nonexistent/p.so",
                    "plugin together with user/group is not supported on a client",
                ),
            ],
        );
    }

    fn client_cfg(p: &Pki, client: usize, extra: &str) -> anyhow::Result<ClientSettings> {
        let c = &p.clients[client - 1];
        let text = format!(
            "client\ndev tun\nremote 192.0.2.1\nca {}\ncert {}\nkey {}\n{extra}\n",
            p.ca.cert.display(),
            c.cert.display(),
            c.key.display()
        );
        client_settings(&ferrovpn_config::parse_str(&text, "client.conf")?)
    }

    /// An in-memory handshake between the two settings' TLS configs.
    fn handshake(s: &ServerSettings, c: &ClientSettings) -> Result<(), rustls::Error> {
        let mut srv = rustls::ServerConnection::new(s.session.tls_server.clone().unwrap())?;
        let mut cli = rustls::ClientConnection::new(
            c.session.tls_client.clone().unwrap(),
            placeholder_server_name(),
        )?;
        for _ in 0..20 {
            let mut buf = Vec::new();
            while cli.wants_write() {
                cli.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                srv.read_tls(&mut rd).unwrap();
                srv.process_new_packets()?;
            }
            let mut buf = Vec::new();
            while srv.wants_write() {
                srv.write_tls(&mut buf).unwrap();
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                cli.read_tls(&mut rd).unwrap();
                cli.process_new_packets()?;
            }
            if !srv.is_handshaking() && !cli.is_handshaking() {
                return Ok(());
            }
        }
        panic!("handshake did not finish");
    }

    #[test]
    fn server_applies_verify_x509_name_and_remote_cert_tls_client() {
        let p = pki("x509name");
        let s = server_cfg(&p, "verify-x509-name client1 name\nremote-cert-tls client").unwrap();
        let c1 = client_cfg(&p, 1, "remote-cert-tls server").unwrap();
        let c2 = client_cfg(&p, 2, "remote-cert-tls server").unwrap();
        assert!(handshake(&s, &c1).is_ok());
        let e = handshake(&s, &c2).unwrap_err();
        assert!(format!("{e}").contains("verify-x509-name"), "{e}");
        let s = server_cfg(&p, "verify-x509-name client name-prefix").unwrap();
        assert!(handshake(&s, &c2).is_ok());
        let subject = server_cfg(&p, "verify-x509-name CN=client2").unwrap();
        assert!(handshake(&subject, &c2).is_ok());
        assert!(handshake(&subject, &c1).is_err());
        let _ = std::fs::remove_dir_all(&p.dir);
    }

    #[test]
    fn client_applies_ns_cert_type_and_remote_cert_eku() {
        let p = pki("nscert");
        let s = server_cfg(&p, "").unwrap();
        assert!(handshake(&s, &client_cfg(&p, 1, "ns-cert-type server").unwrap()).is_ok());
        let eku = "remote-cert-eku \"TLS Web Server Authentication\"";
        assert!(handshake(&s, &client_cfg(&p, 1, eku).unwrap()).is_ok());
        let ku = "remote-cert-ku 80 08";
        assert!(handshake(&s, &client_cfg(&p, 1, ku).unwrap()).is_ok());
        let ku = "remote-cert-ku 02";
        assert!(handshake(&s, &client_cfg(&p, 1, ku).unwrap()).is_err());
        // The server's certificate is no client certificate.
        let sv = server_cfg(&p, "remote-cert-eku 1.3.6.1.5.5.7.3.1").unwrap();
        assert!(handshake(&sv, &client_cfg(&p, 1, "").unwrap()).is_err());
        let _ = std::fs::remove_dir_all(&p.dir);
    }

    #[test]
    fn contradictory_or_unknown_policies_are_refused_with_their_line() {
        let p = pki("refuse");
        assert_refused(
            &p,
            &[
                (Server, "remote-cert-tls server", "server.conf:7"),
                (Client, "ns-cert-type client", "client.conf:7"),
                (
                    Client,
                    "remote-cert-tls server\nremote-cert-ku",
                    "cannot be combined",
                ),
                (
                    Client,
                    "remote-cert-eku serverAuth",
                    "client.conf:7: remote-cert-eku",
                ),
            ],
        );
        let _ = std::fs::remove_dir_all(&p.dir);
    }

    #[test]
    fn behaviour_changing_directives_are_applied_or_refused() {
        let p = pki("audit");
        // A client's own route and redirect-gateway reach the runtime.
        let c = client_cfg(
            &p,
            1,
            "route 192.168.7.0 255.255.255.0\nredirect-gateway def1",
        )
        .unwrap();
        assert_eq!(c.local_options.len(), 2, "{:?}", c.local_options);
        assert!(matches!(
            c.local_options[0],
            PushOption::Route { network, gateway: None, .. } if network == Ipv4Addr::new(192, 168, 7, 0)
        ));
        assert!(matches!(&c.local_options[1], PushOption::RedirectGateway(f) if f == &["def1"]));
        // route-gateway and route-metric go first, as if pushed before the routes.
        let c = client_cfg(
            &p,
            1,
            "route-gateway 10.8.0.9\nroute-metric 20\nroute 192.168.7.0 255.255.255.0 vpn_gateway 5",
        )
        .unwrap();
        let texts: Vec<String> = c.local_options.iter().map(PushOption::to_text).collect();
        assert_eq!(
            texts,
            [
                "route-gateway 10.8.0.9",
                "route-metric 20",
                "route 192.168.7.0 255.255.255.0 vpn_gateway 5"
            ]
        );
        assert_refused(
            &p,
            &[
                (
                    Server,
                    "push \"route 10.1.0.0 255.255.0.0\"\nredirect-gateway def1",
                    "server.conf:8: redirect-gateway",
                ),
                (
                    Server,
                    "route 10.9.0.0 255.255.0.0 10.8.0.5",
                    "server.conf:7: route",
                ),
                (
                    Client,
                    "route 10.9.0.0 255.255.0.0 net_gateway",
                    "client.conf:7: route",
                ),
                (
                    Server,
                    "route-gateway 10.8.0.5",
                    "server.conf:7: route-gateway",
                ),
                (
                    Client,
                    "replay-window 128 30",
                    "client.conf:7: replay-window",
                ),
            ],
        );
        assert!(
            server_cfg(
                &p,
                "route 10.9.0.0 255.255.0.0 vpn_gateway\nmssfix 1400\nreplay-window 128"
            )
            .is_ok()
        );
        let _ = std::fs::remove_dir_all(&p.dir);
    }

    /// Each way of writing `mssfix` reaches the data plane as 2.6.3 reads it.
    #[test]
    fn mssfix_modes_as_2_6_3() {
        let p = pki("mssmodes");
        for (extra, want) in [
            ("", (Some(1492), MssCount::Encap)),
            ("mssfix", (Some(1492), MssCount::Encap)),
            ("mssfix 1400", (Some(1400), MssCount::Payload)),
            ("mssfix 1400 mtu", (Some(1400), MssCount::Encap)),
            ("mssfix 1400 fixed", (Some(1400), MssCount::Fixed)),
            ("mssfix 0", (None, MssCount::Payload)),
            ("tun-mtu 1400", (Some(1400), MssCount::Fixed)),
            ("tun-mtu 1400\nmssfix", (Some(1400), MssCount::Fixed)),
            ("tun-mtu 1400\nmssfix 1450", (Some(1450), MssCount::Payload)),
            ("fragment 1300", (Some(1300), MssCount::Encap)),
            ("fragment 1300\nmssfix", (Some(1300), MssCount::Encap)),
            (
                "fragment 1300\nmssfix 1200",
                (Some(1200), MssCount::Payload),
            ),
        ] {
            let c = client_cfg(&p, 1, extra).unwrap();
            assert_eq!(
                (c.dataplane.mssfix, c.dataplane.mssfix_count),
                want,
                "{extra}"
            );
        }
        let c = client_cfg(&p, 1, "comp-lzo no").unwrap();
        assert_eq!(c.dataplane.mss_payload_extra, 1);
        let c = client_cfg(&p, 1, "compress stub-v2").unwrap();
        assert_eq!(c.dataplane.mss_payload_extra, 0);
        let c = client_cfg(&p, 1, "tun-mtu-extra 32\ncomp-lzo").unwrap();
        assert_eq!(c.dataplane.mss_payload_extra, 33);
        let _ = std::fs::remove_dir_all(&p.dir);
    }

    /// `fragment` and `passtos` reach the data plane (with 2.6's mssfix
    /// default from `fragment`), on UDP only.
    #[test]
    fn fragment_and_passtos_reach_the_data_plane_on_udp_only() {
        let p = pki("frag");
        let c = client_cfg(&p, 1, "fragment 1300\npasstos").unwrap();
        let want = ferrovpn_dataplane::Fragment {
            max: 1300,
            mtu: false,
        };
        assert_eq!(c.dataplane.fragment, Some(want));
        assert!(c.dataplane.passtos);
        assert_eq!(c.dataplane.mssfix, Some(1300));
        let c = client_cfg(&p, 1, "fragment 1300\nmssfix 1200").unwrap();
        assert_eq!(c.dataplane.mssfix, Some(1200));
        assert!(!c.dataplane.passtos);
        let s = server_cfg(&p, "fragment 576 mtu").unwrap();
        let want = ferrovpn_dataplane::Fragment {
            max: 576,
            mtu: true,
        };
        assert_eq!(s.dataplane.fragment, Some(want));
        assert_eq!(s.dataplane.mssfix, Some(576));
        let no_frag = client_cfg(&p, 1, "").unwrap();
        assert_eq!(
            (no_frag.dataplane.fragment, no_frag.dataplane.passtos),
            (None, false)
        );
        assert_refused(
            &p,
            &[
                (
                    Client,
                    "proto tcp\nfragment 1300",
                    "client.conf:8: --fragment can only be used with --proto udp",
                ),
                (
                    Server,
                    "proto tcp\nfragment 1300",
                    "server.conf:8: --fragment can only be used with --proto udp",
                ),
                (
                    Server,
                    "local 0.0.0.0 1194 udp\nlocal 0.0.0.0 443 tcp\nfragment 1300",
                    "--fragment can only be used with --proto udp",
                ),
                (Client, "proto tcp\npasstos", "client.conf:8: passtos"),
                (Server, "proto tcp\npasstos", "server.conf:8: passtos"),
            ],
        );
        let _ = std::fs::remove_dir_all(&p.dir);
    }

    /// Run the openssl CLI in `dir`; a missing openssl fails the test.
    fn openssl(dir: &std::path::Path, args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("these tests need the openssl command-line tool");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A CA with an RSA-1024 key (as old easy-rsa PKIs have) and an EC
    /// server and client signed by it.
    fn old_pki(dir: &std::path::Path) {
        std::fs::create_dir_all(dir).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:1024",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "30",
                "-sha256",
                "-subj",
                "/CN=old CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        for (name, eku) in [("server", "serverAuth"), ("client1", "clientAuth")] {
            std::fs::write(
                dir.join(format!("{name}.ext")),
                format!("keyUsage=digitalSignature,keyAgreement\nextendedKeyUsage={eku}\n"),
            )
            .unwrap();
            openssl(
                dir,
                &[
                    "req",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                    "-nodes",
                    "-keyout",
                    &format!("{name}.key"),
                    "-out",
                    &format!("{name}.csr"),
                    "-subj",
                    &format!("/CN={name}"),
                ],
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-days",
                    "30",
                    "-sha256",
                    "-out",
                    &format!("{name}.crt"),
                    "-extfile",
                    &format!("{name}.ext"),
                ],
            );
        }
    }

    fn conf_in(
        dir: &std::path::Path,
        server: bool,
        key: &str,
        extra: &str,
    ) -> anyhow::Result<(Option<ServerSettings>, Option<ClientSettings>)> {
        let d = dir.display();
        if server {
            let text = format!(
                "server 10.8.0.0 255.255.255.0\ndev tun\nca {d}/ca.crt\ncert {d}/server.crt\nkey {d}/{key}\ndh none\n{extra}\n"
            );
            Ok((
                Some(server_settings(&ferrovpn_config::parse_str(
                    &text,
                    "server.conf",
                )?)?),
                None,
            ))
        } else {
            let text = format!(
                "client\ndev tun\nremote 192.0.2.1\nca {d}/ca.crt\ncert {d}/client1.crt\nkey {d}/{key}\nremote-cert-tls server\n{extra}\n"
            );
            Ok((
                None,
                Some(client_settings(&ferrovpn_config::parse_str(
                    &text,
                    "client.conf",
                )?)?),
            ))
        }
    }

    #[test]
    fn an_rsa_1024_ca_works_under_the_legacy_profile_only() {
        let dir =
            std::env::temp_dir().join(format!("fvpn-settings-{}-rsa1024", std::process::id()));
        old_pki(&dir);
        let server = |extra| conf_in(&dir, true, "server.key", extra).unwrap().0.unwrap();
        let client = |extra| {
            conf_in(&dir, false, "client1.key", extra)
                .unwrap()
                .1
                .unwrap()
        };
        // 2.6's default profile is legacy, on both sides.
        assert!(handshake(&server(""), &client("")).is_ok());
        assert!(
            handshake(
                &server("tls-cert-profile legacy"),
                &client("tls-cert-profile legacy")
            )
            .is_ok()
        );
        let e = handshake(&server(""), &client("tls-cert-profile preferred")).unwrap_err();
        assert!(format!("{e}").contains("not trusted by ca"), "{e}");
        assert!(handshake(&server("tls-cert-profile preferred"), &client("")).is_err());
        let e = refusal(conf_in(&dir, true, "server.key", "tls-cert-profile suiteb"));
        assert!(e.contains("server.conf:7"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn key_errors_name_the_file_and_say_what_is_wrong() {
        let dir = std::env::temp_dir().join(format!("fvpn-settings-{}-keys", std::process::id()));
        old_pki(&dir);
        openssl(
            &dir,
            &[
                "pkey",
                "-in",
                "server.key",
                "-aes256",
                "-passout",
                "pass:secret",
                "-out",
                "server-enc.key",
            ],
        );
        // Encrypted keys are read now (crate::keys); a wrong `askpass`
        // passphrase names the key file. (No askpass at all would ask on
        // the terminal, which a unit test must not do.)
        std::fs::write(dir.join("wrong.pass"), "not-secret\n").unwrap();
        let askpass = format!("askpass {}", dir.join("wrong.pass").display());
        let e = refusal(conf_in(&dir, true, "server-enc.key", &askpass));
        assert!(
            e.contains("server-enc.key") && e.contains("the passphrase is wrong"),
            "{e}"
        );
        let e = refusal(conf_in(&dir, true, "client1.key", ""));
        assert!(
            e.contains("client1.key") && e.contains("does not belong to the certificate"),
            "{e}"
        );
        std::fs::write(dir.join("empty.key"), "# nothing\n").unwrap();
        let e = refusal(conf_in(&dir, false, "empty.key", ""));
        assert!(e.contains("empty.key") && e.contains("none found"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn connection_entries_carry_their_own_transport() {
        let p = pki("conn-list");
        // With a block, only the block is an entry (2.6).
        let s = client_cfg(
            &p,
            1,
            "connect-retry-max 2\n<connection>\nremote only.example\n</connection>\n",
        )
        .unwrap();
        assert_eq!(s.remotes.len(), 1);
        assert_eq!(s.remotes[0].host, "only.example");
        assert_eq!(s.connect_retry_max, Some(2));
        let s = client_cfg(
            &p,
            1,
            "remote 192.0.2.2 443 tcp\nlocal 127.0.0.1\nlport 5000\nconnect-retry 3 9\nserver-poll-timeout 4\nexplicit-exit-notify 2\n",
        )
        .unwrap();
        let [udp, tcp] = &s.remotes[..] else {
            panic!("{:?}", s.remotes)
        };
        assert_eq!((udp.transport, udp.port), (Transport::Udp, 1194));
        assert_eq!((tcp.transport, tcp.port), (Transport::Tcp, 443));
        assert_eq!(udp.bind, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(tcp.tcp_bind, Some("127.0.0.1:5000".parse().unwrap()));
        assert_eq!(udp.tcp_bind, None);
        assert_eq!(udp.connect_retry, Duration::from_secs(3));
        assert_eq!(tcp.connect_retry_max, Duration::from_secs(9));
        assert_eq!(udp.connect_timeout, Duration::from_secs(4));
        // 2.6 ignores explicit-exit-notify over TCP.
        assert_eq!(udp.explicit_exit_notify, Some(2));
        assert_eq!(tcp.explicit_exit_notify, None);
        assert!(udp.proxy.is_none());
        // A proxy on TCP entries; `http-proxy-user-pass` gives `auto` its
        // credentials; `local` takes a name.
        let s = client_cfg(
            &p,
            1,
            "proto tcp\nlocal localhost\nhttp-proxy 192.0.2.9 3128 auto\n<http-proxy-user-pass>\nu\np\n</http-proxy-user-pass>\n",
        )
        .unwrap();
        assert!(s.remotes[0].bind.ip().is_loopback());
        match &s.remotes[0].proxy {
            Some(ferrovpn_control::client::Proxy::Http(h)) => assert!(matches!(
                &h.auth,
                ferrovpn_config::HttpProxyAuth::Auto { nct: false, credentials: Some(c) } if c.username == "u"
            )),
            other => panic!("{other:?}"),
        }
    }
}
