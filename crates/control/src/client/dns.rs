//! Pushed DNS settings: through systemd-resolved when it manages
//! /etc/resolv.conf (over D-Bus, see [`super::resolved`]; `resolvectl` only
//! when the system bus cannot be reached), otherwise by rewriting
//! /etc/resolv.conf (the original is kept inside the rewritten file and put
//! back on exit, or at the next start after a crash).

use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::plan::DnsPlan;
use super::resolved::{self, Resolved};
use crate::fsutil::system_tool;

const RESOLV_CONF: &str = "/etc/resolv.conf";
/// First line of a resolv.conf written by ferrovpn.
const HEADER: &str = "# written by ferrovpn for the VPN; the original follows as '#ferrovpn-orig ' lines and is restored on exit";
const ORIG: &str = "#ferrovpn-orig ";

/// How DNS settings are applied on this system, decided once at start.
#[derive(Debug, Clone)]
pub enum DnsBackend {
    /// systemd-resolved manages resolv.conf: per-link settings over D-Bus.
    Resolved(Resolved),
    /// systemd-resolved manages resolv.conf but its bus cannot be reached:
    /// per-link settings via resolvectl.
    Resolvectl(PathBuf),
    /// A plain file is rewritten.
    ResolvConf(PathBuf),
}

impl DnsBackend {
    /// systemd-resolved when /etc/resolv.conf points into its runtime
    /// directory (its stub or its full file): over D-Bus when it answers on
    /// the system bus, else with resolvectl if that exists; otherwise the
    /// file itself. A leftover from a crashed run is restored.
    pub async fn detect() -> DnsBackend {
        let managed_by_resolved =
            std::fs::canonicalize(RESOLV_CONF).is_ok_and(|p| p.starts_with("/run/systemd/resolve"));
        if managed_by_resolved {
            if let Some(bus) = Resolved::connect().await {
                return DnsBackend::Resolved(bus);
            }
            if let Some(ctl) = system_tool("resolvectl") {
                warn!("systemd-resolved does not answer on the system bus; using resolvectl");
                return DnsBackend::Resolvectl(ctl);
            }
        }
        let path = PathBuf::from(RESOLV_CONF);
        recover_leftover(&path);
        DnsBackend::ResolvConf(path)
    }
}

/// DNS settings in effect, to undo on exit.
#[derive(Debug)]
pub enum AppliedDns {
    Resolved {
        bus: Resolved,
        ifindex: i32,
        dev: String,
    },
    Resolvectl {
        ctl: PathBuf,
        dev: String,
    },
    /// What the file held before, and what we wrote (restored only if
    /// nobody changed it since).
    ResolvConf {
        path: PathBuf,
        original: String,
        written: String,
    },
}

/// Apply `plan` for tunnel `dev` (kernel index `ifindex`, which resolved
/// names links by). Failures are WARNs: the tunnel works, but the user must
/// know their DNS does not go where the server wants.
pub async fn apply(
    backend: &DnsBackend,
    dev: &str,
    ifindex: Option<u32>,
    plan: &DnsPlan,
) -> Option<AppliedDns> {
    let servers: Vec<String> = plan.servers.iter().map(ToString::to_string).collect();
    match backend {
        DnsBackend::Resolved(bus) => {
            let Some(ifindex) = ifindex.and_then(|i| i32::try_from(i).ok()) else {
                warn!("no interface index for {dev}: pushed DNS settings not applied");
                return None;
            };
            let applied = AppliedDns::Resolved {
                bus: bus.clone(),
                ifindex,
                dev: dev.to_owned(),
            };
            match bus.apply(ifindex, &resolved::call_plan(plan)).await {
                Ok(()) => info!(
                    "DNS servers {} (search {}) set on {dev} via systemd-resolved",
                    servers.join(" "),
                    plan.search_domains().join(" ")
                ),
                Err(e) => warn!("systemd-resolved: {e}: pushed DNS settings not applied"),
            }
            // Reverted on exit even after a partial failure.
            Some(applied)
        }
        DnsBackend::Resolvectl(ctl) => {
            let run = |what: &str, args: &[String]| {
                let ok = std::process::Command::new(ctl)
                    .arg(what)
                    .arg(dev)
                    // Values are validated already; `--` keeps them from ever
                    // being read as options.
                    .arg("--")
                    .args(args)
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    warn!(
                        "resolvectl {what} {dev} {} failed: pushed DNS settings not applied",
                        args.join(" ")
                    );
                }
                ok
            };
            let mut ok = servers.is_empty() || run("dns", &servers);
            if !servers.is_empty() {
                if let Some(mode) = plan.dnssec {
                    ok &= run("dnssec", &[resolved::dnssec_mode(mode).to_owned()]);
                }
                if let Some(mode) = plan.transport.and_then(resolved::dns_over_tls_mode) {
                    ok &= run("dnsovertls", &[mode.to_owned()]);
                }
            }
            let domains = plan.search_domains();
            ok &= domains.is_empty() || run("domain", &domains);
            if ok {
                info!(
                    "DNS servers {} (search {}) set on {dev} via resolvectl",
                    servers.join(" "),
                    domains.join(" ")
                );
            }
            Some(AppliedDns::Resolvectl {
                ctl: ctl.clone(),
                dev: dev.to_owned(),
            })
        }
        DnsBackend::ResolvConf(path) => {
            warn_unenforceable(plan, path);
            let current = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(e) => {
                    warn!(
                        "cannot read {}: {e}; pushed DNS servers {} not applied",
                        path.display(),
                        servers.join(" ")
                    );
                    return None;
                }
            };
            // Reconnects rewrite our own file: the original stays the first one.
            let original = original_of(&current).unwrap_or(current);
            let written = render_resolv_conf(plan, &original);
            // In place, not by rename: /etc/resolv.conf may be a bind mount
            // (`ip netns exec`) or a symlink that must stay one.
            if let Err(e) = std::fs::write(path, &written) {
                warn!(
                    "cannot write {}: {e}; pushed DNS servers {} not applied",
                    path.display(),
                    servers.join(" ")
                );
                return None;
            }
            info!(
                "DNS servers {} (search {}) written to {}",
                servers.join(" "),
                plan.search_domains().join(" "),
                path.display()
            );
            Some(AppliedDns::ResolvConf {
                path: path.clone(),
                original,
                written,
            })
        }
    }
}

/// resolv.conf has no way to ask for DNSSEC validation or DNS over TLS:
/// say so when the server asked for them (the servers are still used).
fn warn_unenforceable(plan: &DnsPlan, path: &Path) {
    if plan.servers.is_empty() {
        return;
    }
    if plan.dnssec.is_some_and(|d| d != super::plan::Dnssec::No) {
        warn!(
            "pushed 'dns server ... dnssec' cannot be applied through {} (only systemd-resolved validates DNSSEC here)",
            path.display()
        );
    }
    if plan.transport == Some(super::plan::DnsTransport::Tls) {
        warn!(
            "pushed 'dns server ... transport DoT' cannot be applied through {}: the servers are queried in plain DNS",
            path.display()
        );
    }
}

/// Undo [`apply`].
pub async fn restore(applied: AppliedDns) {
    match applied {
        AppliedDns::Resolved { bus, ifindex, dev } => match bus.revert(ifindex).await {
            Ok(()) => info!("DNS settings on {dev} reverted via systemd-resolved"),
            Err(e) => warn!("systemd-resolved: {e}"),
        },
        AppliedDns::Resolvectl { ctl, dev } => {
            let _ = std::process::Command::new(ctl)
                .args(["revert", &dev])
                .status();
        }
        AppliedDns::ResolvConf {
            path,
            original,
            written,
        } => match std::fs::read_to_string(&path) {
            Ok(now) if now == written => match std::fs::write(&path, &original) {
                Ok(()) => info!("{} restored", path.display()),
                Err(e) => warn!("cannot restore {}: {e}", path.display()),
            },
            _ => warn!(
                "{} was changed by someone else while the VPN ran; left as it is",
                path.display()
            ),
        },
    }
}

/// A resolv.conf with the pushed servers and search list, keeping the
/// original's `options` lines and the original itself as comments.
pub fn render_resolv_conf(plan: &DnsPlan, original: &str) -> String {
    let mut out = format!("{HEADER}\n");
    for s in &plan.servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    let domains = plan.search_domains();
    if !domains.is_empty() {
        out.push_str(&format!("search {}\n", domains.join(" ")));
    }
    let has_servers = !plan.servers.is_empty();
    for line in original.lines() {
        let word = line.split_whitespace().next().unwrap_or("");
        // Pushed servers replace the local ones: a fallback to them would
        // send queries outside the tunnel.
        let replaced = (word == "nameserver" && has_servers)
            || ((word == "search" || word == "domain") && !domains.is_empty());
        if !replaced && !line.starts_with('#') && !word.is_empty() {
            out.push_str(line);
            out.push('\n');
        }
    }
    // Split on '\n' alone so every byte (a '\r', a missing last newline)
    // comes back exactly.
    for piece in original.split('\n') {
        out.push_str(ORIG);
        out.push_str(piece);
        out.push('\n');
    }
    out
}

/// The original file kept in a resolv.conf we wrote, if `text` is one.
pub fn original_of(text: &str) -> Option<String> {
    let mut lines = text.split('\n');
    if lines.next() != Some(HEADER) {
        return None;
    }
    let pieces: Vec<&str> = lines.filter_map(|l| l.strip_prefix(ORIG)).collect();
    Some(pieces.join("\n"))
}

/// A resolv.conf left by a ferrovpn that was killed: put the original back.
fn recover_leftover(path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    if let Some(original) = original_of(&text) {
        match std::fs::write(path, original) {
            Ok(()) => warn!(
                "{} still had an earlier run's VPN settings; original restored",
                path.display()
            ),
            Err(e) => warn!(
                "{} still has an earlier run's VPN settings and cannot be restored: {e}",
                path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> DnsPlan {
        DnsPlan {
            servers: vec!["10.8.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            domain: Some("corp.example".into()),
            search: vec!["b.example".into()],
            ..DnsPlan::default()
        }
    }

    #[test]
    fn pushed_servers_replace_local_ones_and_options_stay() {
        let original = "# local\nnameserver 192.168.1.1\nsearch home.lan\noptions edns0\n";
        let text = render_resolv_conf(&plan(), original);
        let live: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            live,
            vec![
                "nameserver 10.8.0.1",
                "nameserver fd00::1",
                "search corp.example b.example",
                "options edns0"
            ]
        );
        assert_eq!(original_of(&text).as_deref(), Some(original));
    }

    #[test]
    fn the_original_is_kept_exactly() {
        for original in [
            "",
            "nameserver 1.1.1.1",
            "nameserver 1.1.1.1\n\n# x\n",
            "a\r\nb\r\n",
            "#ferrovpn-orig x\n",
        ] {
            let text = render_resolv_conf(&plan(), original);
            assert_eq!(original_of(&text).as_deref(), Some(original), "{text}");
            // A second rewrite (reconnect) keeps the first original.
            let again = render_resolv_conf(&plan(), &original_of(&text).unwrap());
            assert_eq!(again, text);
        }
    }

    #[test]
    fn domains_only_keep_the_local_servers() {
        let p = DnsPlan {
            search: vec!["vpn.example".into()],
            ..DnsPlan::default()
        };
        let text = render_resolv_conf(&p, "nameserver 192.168.1.1\nsearch home.lan\n");
        assert!(text.contains("\nnameserver 192.168.1.1\n"), "{text}");
        assert!(text.contains("\nsearch vpn.example\n"), "{text}");
        assert!(!text.contains("\nsearch home.lan"), "{text}");
    }

    #[test]
    fn foreign_files_have_no_original() {
        assert_eq!(original_of("nameserver 1.1.1.1\n"), None);
    }
}
