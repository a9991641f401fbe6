//! `client-config-dir DIR` and `ccd-exclusive`: the per-client config file
//! a client gets, read when it connects, as OpenVPN 2.6 does:
//!
//! - the file named after the client's common name (`UNDEF` without one),
//!   made safe the way 2.6's `platform_gen_path` does: every byte that is
//!   not printable ASCII, and `/`, becomes `_`; `.` and `..` name no file;
//! - else the file `DEFAULT`;
//! - with `ccd-exclusive`, a client without a file of its own (or named
//!   `DEFAULT`) is refused.
//!
//! The file is read at most [`MAX_CLIENT_CONFIG_SIZE`] bytes; a file that is
//! there but unreadable past opening, too large or not UTF-8 refuses the
//! client (it may hold a `disable` ferrovpn cannot see), where 2.6 would
//! read it whatever its size. Lines the parser cannot use are logged and
//! skipped, as in 2.6.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ferrovpn_config::{ClientConfig, MAX_CLIENT_CONFIG_SIZE};
use ferrovpn_dataplane::iroutes::{Ipv4Prefix, Ipv6Prefix};
use tracing::{error, info, warn};

use super::{EXIT_GRACE, Server};

/// The file a client without a file of its own gets.
const DEFAULT_FILE: &str = "DEFAULT";
/// The name 2.6 uses for a client without a common name.
const NO_COMMON_NAME: &str = "UNDEF";
/// 2.6's default `max-routes-per-client`: a client's address and its
/// iroutes together.
pub const MAX_ROUTES_PER_CLIENT: usize = 256;

/// `client-config-dir DIR` (+ `ccd-exclusive`).
#[derive(Debug, Clone)]
pub struct ClientConfigDir {
    /// As configured: read inside the chroot, if any, like 2.6.
    pub dir: PathBuf,
    pub exclusive: bool,
}

/// What the directory says about one client.
#[derive(Debug)]
pub enum Lookup {
    /// No file applies: the client gets the server's settings.
    NoFile,
    /// The file that applies, and what it says (with the lines it could not use).
    Found {
        path: PathBuf,
        config: ClientConfig,
        problems: Vec<String>,
    },
    /// Refuse the client, for this reason (logged, not sent).
    Refused(String),
}

/// The file name 2.6 looks for for common name `cn`; `None` for names that
/// would leave the directory (`.`, `..`).
pub fn file_name_for(cn: &str) -> Option<String> {
    let safe: String = cn
        .bytes()
        .map(|b| match b {
            b'/' => '_',
            0x20..=0x7e => char::from(b),
            _ => '_',
        })
        .collect();
    (safe != "." && safe != "..").then_some(safe)
}

impl ClientConfigDir {
    /// Find and read the file for a client with common name `cn`.
    pub fn lookup(&self, cn: Option<&str>) -> Lookup {
        let cn = cn.filter(|c| !c.is_empty()).unwrap_or(NO_COMMON_NAME);
        let own = file_name_for(cn).map(|name| self.dir.join(name));
        let own_text = match own.as_deref().map(read_bounded) {
            Some(Ok(Some(text))) => Some(text),
            Some(Ok(None)) | None => None,
            Some(Err(why)) => return Lookup::Refused(why),
        };
        if self.exclusive && (own_text.is_none() || cn == DEFAULT_FILE) {
            return Lookup::Refused(format!(
                "--client-config-dir authentication failed for common name '{cn}' file='{}' (ccd-exclusive)",
                own.as_deref()
                    .map_or("UNDEF".into(), |p| p.display().to_string())
            ));
        }
        let (path, text) = match (own, own_text) {
            (Some(path), Some(text)) => (path, text),
            _ => {
                let path = self.dir.join(DEFAULT_FILE);
                match read_bounded(&path) {
                    Ok(Some(text)) => (path, text),
                    Ok(None) => return Lookup::NoFile,
                    Err(why) => return Lookup::Refused(why),
                }
            }
        };
        let (config, problems) = ClientConfig::parse(&text, &path.display().to_string());
        Lookup::Found {
            path,
            config,
            problems: problems.iter().map(ToString::to_string).collect(),
        }
    }

    /// Whether the directory can be read and searched now (checked at
    /// start, and after dropping privileges, as 2.6 checks it at start).
    pub fn check_access(dir: &Path) -> Result<(), String> {
        if !dir.is_dir() {
            return Err(format!("'{}' is not a directory", dir.display()));
        }
        std::fs::read_dir(dir)
            .map(drop)
            .map_err(|e| format!("'{}' cannot be read: {e}", dir.display()))
    }
}

/// The file's text; `None` when it cannot be opened (2.6 then tries the
/// next file); an error when it opens but cannot be used.
fn read_bounded(path: &Path) -> Result<Option<String>, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(_) => return Ok(None),
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Ok(None);
    }
    let mut bytes = Vec::new();
    file.take(MAX_CLIENT_CONFIG_SIZE as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() > MAX_CLIENT_CONFIG_SIZE {
        return Err(format!(
            "{} is larger than {MAX_CLIENT_CONFIG_SIZE} bytes",
            path.display()
        ));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

/// The networks a client's iroutes route to it, within 2.6's route quota
/// (its address counts as one route).
pub fn iroute_prefixes(config: &ClientConfig) -> (Vec<Ipv4Prefix>, usize) {
    let room = MAX_ROUTES_PER_CLIENT - 1;
    let routes: Vec<Ipv4Prefix> = (config.iroutes.iter())
        .take(room)
        .map(|ir| (ir.masked(), ir.prefix_len))
        .collect();
    let dropped = config.iroutes.len() - routes.len();
    (routes, dropped)
}

/// The IPv6 networks a client's iroute-ipv6 lines route to it, within what
/// the quota leaves after its IPv4 routes (`v4_routes` of them).
pub fn iroute_ipv6_prefixes(config: &ClientConfig, v4_routes: usize) -> (Vec<Ipv6Prefix>, usize) {
    let room = (MAX_ROUTES_PER_CLIENT - 1).saturating_sub(v4_routes);
    let routes: Vec<Ipv6Prefix> = (config.iroutes_ipv6.iter())
        .take(room)
        .map(|ir| (ir.masked(), ir.bits))
        .collect();
    let dropped = config.iroutes_ipv6.len() - routes.len();
    (routes, dropped)
}

/// Whether the server sends traffic for `net/bits` into its tun device: a
/// `route-ipv6` or the `server-ipv6` network holds it.
fn ipv6_routed(
    routes: &[(std::net::Ipv6Addr, u8, Option<u32>)],
    net: std::net::Ipv6Addr,
    bits: u8,
) -> bool {
    routes.iter().any(|&(rnet, rbits, _)| {
        let mask = u128::MAX
            .checked_shl(128 - u32::from(rbits.min(128)))
            .unwrap_or(0);
        rbits <= bits && u128::from(net) & mask == u128::from(rnet) & mask
    })
}

impl Server {
    /// The per-client config of the client at `addr`, read once, when it
    /// first needs an address. `None` when the client is refused (then it
    /// is told `AUTH_FAILED`, as 2.6 tells a client its ccd file disables
    /// or `ccd-exclusive` refuses, and dropped after the grace period).
    pub(super) fn client_config(
        &mut self,
        addr: SocketAddr,
        cn: Option<&str>,
    ) -> Option<ClientConfig> {
        let c = self.clients.get(&addr)?;
        if let Some(config) = &c.client_config {
            return (!config.disable).then(|| config.clone());
        }
        let config = match self.s.client_config_dir.as_ref().map(|d| d.lookup(cn)) {
            None | Some(Lookup::NoFile) => Ok(ClientConfig::default()),
            Some(Lookup::Found {
                path,
                config,
                problems,
            }) => {
                info!(
                    "{addr}: OPTIONS IMPORT: reading client specific options from: {}",
                    path.display()
                );
                for p in &problems {
                    error!("{addr}: {p} (line ignored)");
                }
                if config.disable {
                    Err("client has been rejected due to 'disable' directive".to_string())
                } else {
                    Ok(config)
                }
            }
            Some(Lookup::Refused(why)) => Err(why),
        };
        let c = self.clients.get_mut(&addr)?;
        match config {
            Ok(config) => {
                c.client_config = Some(config.clone());
                Some(config)
            }
            Err(why) => {
                warn!("{addr}: {why}, refusing client");
                c.client_config = Some(ClientConfig {
                    disable: true,
                    ..ClientConfig::default()
                });
                let now = Instant::now();
                c.session.send_control_message(now, "AUTH_FAILED");
                c.remove_at = Some(now + EXIT_GRACE);
                None
            }
        }
    }

    /// Publish a newly addressed client's iroutes, and say when its pinned
    /// address is one another client holds (the newer one gets its traffic,
    /// as in 2.6).
    pub(super) fn publish_client_routes(
        &self,
        addr: SocketAddr,
        peer_id: u32,
        config: &ClientConfig,
    ) {
        if let Some(push) = config.ifconfig_push {
            for other in self.clients.holders_of(push.local, addr) {
                warn!(
                    "{addr}: ifconfig-push address {} is also held by {other}; it is routed to {addr} now",
                    push.local
                );
            }
        }
        if config.iroutes.is_empty() && config.iroutes_ipv6.is_empty() {
            return;
        }
        let (routes, dropped) = iroute_prefixes(config);
        self.publish_client_routes_v6(addr, peer_id, config, routes.len());
        if config.iroutes.is_empty() {
            return;
        }
        if dropped > 0 {
            warn!(
                "{addr}: MULTI ROUTE: route quota ({MAX_ROUTES_PER_CLIENT}) exceeded, {dropped} iroute(s) ignored"
            );
        }
        for (net, len) in &routes {
            info!("{addr}: MULTI: internal route {net}/{len}");
            if !self.s.routes.iter().any(|&(rnet, rmask, _)| {
                let m = u32::from(rmask);
                u32::from(*net) & m == u32::from(rnet) & m && m.leading_ones() <= u32::from(*len)
            }) {
                warn!(
                    "{addr}: iroute {net}/{len} has no 'route' in the server config: the kernel does not send its traffic into the tunnel"
                );
            }
        }
        self.peers.set_peer_iroutes(peer_id, &routes);
    }

    /// The `iroute-ipv6` half of [`Server::publish_client_routes`].
    fn publish_client_routes_v6(
        &self,
        addr: SocketAddr,
        peer_id: u32,
        config: &ClientConfig,
        v4_routes: usize,
    ) {
        if config.iroutes_ipv6.is_empty() {
            return;
        }
        let (routes, dropped) = iroute_ipv6_prefixes(config, v4_routes);
        if dropped > 0 {
            warn!(
                "{addr}: MULTI ROUTE: route quota ({MAX_ROUTES_PER_CLIENT}) exceeded, {dropped} iroute-ipv6(s) ignored"
            );
        }
        let mut routed: Vec<_> = self.s.routes_ipv6.clone();
        if let Some(v6) = &self.s.ipv6 {
            routed.push((v6.local, v6.bits, None));
        }
        for &(net, bits) in &routes {
            info!("{addr}: MULTI: internal route {net}/{bits}");
            if !ipv6_routed(&routed, net, bits) {
                warn!(
                    "{addr}: iroute-ipv6 {net}/{bits} has no 'route-ipv6' in the server config: the kernel does not send its traffic into the tunnel"
                );
            }
        }
        self.peers.set_peer_iroutes_v6(peer_id, &routes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        d
    }

    fn ccd(d: &tempfile::TempDir, exclusive: bool) -> ClientConfigDir {
        ClientConfigDir {
            dir: d.path().to_path_buf(),
            exclusive,
        }
    }

    fn found(l: Lookup) -> (String, ClientConfig, Vec<String>) {
        match l {
            Lookup::Found {
                path,
                config,
                problems,
            } => (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                config,
                problems,
            ),
            other => panic!("expected a file, got {other:?}"),
        }
    }

    #[test]
    fn ipv6_iroutes_share_the_route_quota_and_need_a_server_route() {
        let text: String = (0..300)
            .map(|i| format!("iroute-ipv6 fd00:{i:x}::1/64\n"))
            .collect();
        let (config, problems) = ClientConfig::parse(&text, "c");
        assert!(problems.is_empty());
        let (routes, dropped) = iroute_ipv6_prefixes(&config, 0);
        assert_eq!((routes.len(), dropped), (MAX_ROUTES_PER_CLIENT - 1, 45));
        assert_eq!(routes[1], ("fd00:1::".parse().unwrap(), 64));
        let (routes, dropped) = iroute_ipv6_prefixes(&config, 250);
        assert_eq!((routes.len(), dropped), (5, 295));
        let (routes, _) = iroute_ipv6_prefixes(&config, 400);
        assert!(routes.is_empty());
        let server = [("fd00::".parse().unwrap(), 16, None)];
        assert!(ipv6_routed(&server, "fd00:5::".parse().unwrap(), 64));
        assert!(ipv6_routed(&server, "fd00::".parse().unwrap(), 16));
        assert!(!ipv6_routed(&server, "fd00::".parse().unwrap(), 8));
        assert!(!ipv6_routed(&server, "fd01::".parse().unwrap(), 64));
        assert!(ipv6_routed(
            &[("::".parse().unwrap(), 0, None)],
            "fd01::".parse().unwrap(),
            64
        ));
    }

    #[test]
    fn file_names_follow_2_6() {
        assert_eq!(file_name_for("alice").as_deref(), Some("alice"));
        assert_eq!(
            file_name_for("../etc/passwd").as_deref(),
            Some(".._etc_passwd")
        );
        assert_eq!(file_name_for("a b\tc\u{e9}").as_deref(), Some("a b_c__"));
        assert_eq!(file_name_for("."), None);
        assert_eq!(file_name_for(".."), None);
    }

    #[test]
    fn own_file_then_default_then_nothing() {
        let d = dir(&[
            ("alice", "ifconfig-push 10.8.0.50 255.255.255.0\nbogus\n"),
            ("DEFAULT", "push \"dhcp-option DNS 10.8.0.1\"\n"),
        ]);
        let (name, cfg, problems) = found(ccd(&d, false).lookup(Some("alice")));
        assert_eq!(name, "alice");
        assert!(cfg.ifconfig_push.is_some());
        assert_eq!(problems.len(), 1);
        assert!(problems[0].ends_with("alice:2: unsupported directive 'bogus'"));
        let (name, cfg, _) = found(ccd(&d, false).lookup(Some("bob")));
        assert_eq!(name, "DEFAULT");
        assert_eq!(cfg.push_edits.len(), 1);
        // `..` never names the directory's parent: it gets DEFAULT.
        assert_eq!(found(ccd(&d, false).lookup(Some(".."))).0, "DEFAULT");
        std::fs::remove_file(d.path().join("DEFAULT")).unwrap();
        assert!(matches!(ccd(&d, false).lookup(Some("bob")), Lookup::NoFile));
        assert!(matches!(ccd(&d, false).lookup(None), Lookup::NoFile));
    }

    #[test]
    fn ccd_exclusive_needs_a_file_of_the_clients_own() {
        let d = dir(&[("alice", ""), ("DEFAULT", "")]);
        assert_eq!(found(ccd(&d, true).lookup(Some("alice"))).0, "alice");
        for cn in [Some("bob"), Some("DEFAULT"), None, Some("..")] {
            match ccd(&d, true).lookup(cn) {
                Lookup::Refused(why) => assert!(why.contains("ccd-exclusive"), "{why}"),
                other => panic!("{cn:?}: expected a refusal, got {other:?}"),
            }
        }
    }

    #[test]
    fn unusable_files_refuse_the_client() {
        let big = "# x\n".repeat(MAX_CLIENT_CONFIG_SIZE / 4 + 1);
        let d = dir(&[("big", &big)]);
        std::fs::write(d.path().join("latin1"), b"push \"x \xe9\"\n").unwrap();
        std::fs::create_dir(d.path().join("adir")).unwrap();
        for (cn, want) in [("big", "larger than"), ("latin1", "not UTF-8")] {
            match ccd(&d, false).lookup(Some(cn)) {
                Lookup::Refused(why) => assert!(why.contains(want), "{why}"),
                other => panic!("{cn}: expected a refusal, got {other:?}"),
            }
        }
        // A directory is no file: the client gets no file.
        assert!(matches!(
            ccd(&d, false).lookup(Some("adir")),
            Lookup::NoFile
        ));
    }

    #[test]
    fn route_quota_counts_the_address() {
        let text: String = (0..300u32)
            .map(|i| format!("iroute 10.{}.{}.0 255.255.255.0\n", i / 256, i % 256))
            .collect();
        let (cfg, _) = ClientConfig::parse(&text, "x");
        let (routes, dropped) = iroute_prefixes(&cfg);
        assert_eq!(routes.len(), MAX_ROUTES_PER_CLIENT - 1);
        assert_eq!(dropped, 300 - 255);
        assert_eq!(routes[0], (std::net::Ipv4Addr::new(10, 0, 0, 0), 24));
    }

    #[test]
    fn access_check() {
        let d = dir(&[("f", "")]);
        assert!(ClientConfigDir::check_access(d.path()).is_ok());
        assert!(ClientConfigDir::check_access(&d.path().join("f")).is_err());
        assert!(ClientConfigDir::check_access(&d.path().join("missing")).is_err());
    }
}
