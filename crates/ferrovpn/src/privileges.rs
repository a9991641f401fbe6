//! `user` / `group`: give up root once the tun device, the socket and the
//! routes are set up, as OpenVPN 2.6 does; and keep key material out of core
//! dumps.
//!
//! uid, gid and supplementary groups change through glibc (`nix`), whose
//! wrappers apply the change to every thread of the process (the data-plane
//! workers are running by then); a raw syscall would change only the caller.
//! Capabilities are per thread: only the control thread (the caller) keeps
//! `CAP_NET_ADMIN`, and only in a client, which re-applies addresses and
//! routes with `ip` on every reconnect (so the capability is also made
//! ambient, for `ip` to inherit). A server applies nothing after start and
//! keeps no capability.

use std::path::Path;

use anyhow::{Context, bail};
use ferrovpn_config::Config;
use nix::unistd::{Gid, Group, Uid, User, setgid, setgroups, setuid};
use rustix::thread::{CapabilitySet, CapabilitySets};
use tracing::{info, warn};

/// Make the process non-dumpable: no core files, no ptrace by the same
/// user, `/proc/<pid>/mem` closed to others. Keys live in this memory.
pub fn make_undumpable() -> anyhow::Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .context("prctl(PR_SET_DUMPABLE, 0)")
}

/// The identity to take once set up, resolved when the config is read (as
/// OpenVPN does) so that an unknown name fails before anything starts.
pub struct Privileges {
    user: Option<(String, Uid)>,
    group: Option<(String, Gid)>,
    /// Keep `CAP_NET_ADMIN` (clients: routes on reconnect).
    keep_net_admin: bool,
    /// Files written after start, as (directive, location, path): their
    /// directories must stay writable after the switch.
    written: Vec<(&'static str, String, std::path::PathBuf)>,
    /// Files read after start (`crl-verify`).
    read: Vec<(&'static str, String, std::path::PathBuf)>,
}

impl Privileges {
    /// `None` when the config has neither `user` nor `group`.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Option<Self>> {
        if cfg.user.is_none() && cfg.group.is_none() {
            return Ok(None);
        }
        let at = |d: &str| {
            cfg.location_of(d)
                .map_or_else(|| d.to_string(), |l| l.to_string())
        };
        let user = match &cfg.user {
            Some(name) => match User::from_name(name) {
                Ok(Some(u)) => Some((name.clone(), u.uid)),
                Ok(None) => bail!("{}: 'user': no user named {name:?}", at("user")),
                Err(e) => bail!("{}: 'user': looking up {name:?}: {e}", at("user")),
            },
            None => None,
        };
        let group = match &cfg.group {
            Some(name) => match Group::from_name(name) {
                Ok(Some(g)) => Some((name.clone(), g.gid)),
                Ok(None) => bail!("{}: 'group': no group named {name:?}", at("group")),
                Err(e) => bail!("{}: 'group': looking up {name:?}: {e}", at("group")),
            },
            None => None,
        };
        let mut written = Vec::new();
        if let Some(st) = &cfg.status {
            written.push(("status", at("status"), st.path.clone()));
        }
        if let Some(p) = &cfg.ifconfig_pool_persist
            && p.interval_secs > 0
        {
            written.push((
                "ifconfig-pool-persist",
                at("ifconfig-pool-persist"),
                p.path.clone(),
            ));
        }
        let mut read = Vec::new();
        if let Some(ferrovpn_config::Material {
            source: ferrovpn_config::MaterialSource::File(path),
            ..
        }) = &cfg.crl_verify
        {
            read.push(("crl-verify", at("crl-verify"), path.clone()));
        }
        Ok(Some(Self {
            user,
            group,
            keep_net_admin: !cfg.is_server(),
            written,
            read,
        }))
    }

    /// Switch group, supplementary groups and user, keep `CAP_NET_ADMIN` if
    /// asked, forbid regaining privileges through exec, then check that the
    /// files used after start are still reachable.
    pub fn drop_now(self) -> anyhow::Result<()> {
        rustix::thread::set_keep_capabilities(self.keep_net_admin)
            .context("prctl(PR_SET_KEEPCAPS)")?;
        let gid = self.group.as_ref().map_or_else(Gid::current, |g| g.1);
        setgroups(&[gid]).context("setgroups")?;
        if let Some((name, gid)) = &self.group {
            setgid(*gid).with_context(|| format!("setgid({name})"))?;
            info!("GID set to {name}");
        }
        if let Some((name, uid)) = &self.user {
            setuid(*uid).with_context(|| format!("setuid({name})"))?;
            info!("UID set to {name}");
        }
        rustix::thread::set_keep_capabilities(false).context("prctl(PR_SET_KEEPCAPS, 0)")?;
        let kept = if self.keep_net_admin {
            CapabilitySet::NET_ADMIN
        } else {
            CapabilitySet::empty()
        };
        rustix::thread::set_capabilities(
            None,
            CapabilitySets {
                effective: kept,
                permitted: kept,
                inheritable: kept,
            },
        )
        .context("capset")?;
        if self.keep_net_admin {
            // `ip` is exec'd without file capabilities: only an ambient
            // capability survives that as a non-root user.
            rustix::thread::configure_capability_in_ambient_set(
                rustix::thread::CapabilitySet::NET_ADMIN,
                true,
            )
            .context("prctl(PR_CAP_AMBIENT_RAISE, CAP_NET_ADMIN)")?;
            info!("Capabilities retained: CAP_NET_ADMIN");
        }
        rustix::thread::set_no_new_privs(true).context("prctl(PR_SET_NO_NEW_PRIVS)")?;
        let who = match (&self.user, &self.group) {
            (Some((user, _)), _) => format!("user {user}"),
            (None, Some((group, _))) => format!("group {group}"),
            (None, None) => "the new identity".to_string(),
        };
        for (directive, at, path) in &self.written {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            if rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_err() {
                bail!(
                    "{at}: '{directive} {}': directory {} is not writable by {who}; ferrovpn replaces the file after dropping privileges (OpenVPN keeps it open), so make the directory writable or remove 'user'/'group'",
                    path.display(),
                    dir.display()
                );
            }
        }
        for (directive, at, path) in &self.read {
            if rustix::fs::access(path.as_path(), rustix::fs::Access::READ_OK).is_err() {
                warn!(
                    "{at}: '{directive} {}' is not readable by {who}; new clients will be refused until it is",
                    path.display()
                );
            }
        }
        Ok(())
    }
}
