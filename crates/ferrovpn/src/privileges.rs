//! `chroot` / `user` / `group`: once the tun device, the socket and the
//! routes are set up, chroot (then cd to `/`) and give up root, in that
//! order, as OpenVPN 2.6 does; and keep key material out of core dumps.
//!
//! The `status` and `ifconfig-pool-persist` files are opened before this and
//! kept open (rewritten in place through the descriptor, as in 2.6), so
//! neither the new user nor the chroot needs to reach their directories.
//! After the chroot, paths opened later resolve inside it: the `crl-verify`
//! file (read at start from its real path, re-read inside the chroot, as in
//! 2.6). The `client-config-dir` directory, read at every connect (inside
//! the chroot, as in 2.6), must be readable there and by the new user.
//! Clients refuse `chroot` (config crate): they reconfigure routes on every
//! reconnect.
//!
//! uid, gid and supplementary groups change through glibc (`nix`), whose
//! wrappers apply the change to every thread of the process (the data-plane
//! workers are running by then); a raw syscall would change only the caller.
//! Capabilities are per thread: only the control thread (the caller) keeps
//! `CAP_NET_ADMIN`, and only in a client, which re-applies addresses and
//! routes over netlink on every reconnect (the capability is also made
//! ambient, for `resolvectl` to inherit). A server applies nothing after
//! start and keeps no capability.

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
    /// `chroot DIR`, as (location, directory).
    chroot: Option<(String, std::path::PathBuf)>,
    user: Option<(String, Uid)>,
    group: Option<(String, Gid)>,
    /// Keep `CAP_NET_ADMIN` (clients: routes on reconnect).
    keep_net_admin: bool,
    /// Files read after start (`crl-verify`).
    read: Vec<(&'static str, String, std::path::PathBuf)>,
    /// Directories read after start (`client-config-dir`), as (location, path).
    read_dirs: Vec<(String, std::path::PathBuf)>,
}

impl Privileges {
    /// `None` when the config has none of `chroot`, `user` and `group`.
    pub fn from_config(cfg: &Config) -> anyhow::Result<Option<Self>> {
        if cfg.user.is_none() && cfg.group.is_none() && cfg.chroot.is_none() {
            return Ok(None);
        }
        let at = |d: &str| {
            cfg.location_of(d)
                .map_or_else(|| d.to_string(), |l| l.to_string())
        };
        let chroot = match &cfg.chroot {
            // Checked now so that a typo fails before anything is set up.
            Some(dir) if !dir.is_dir() => bail!(
                "{}: 'chroot {}': not a directory",
                at("chroot"),
                dir.display()
            ),
            Some(dir) => Some((at("chroot"), dir.clone())),
            None => None,
        };
        if chroot.is_some() && cfg.user.is_none() && cfg.group.is_none() {
            // OpenVPN 2.6's warning: root can leave a chroot.
            warn!(
                "you are using chroot without specifying user and group -- this may cause the chroot jail to be insecure"
            );
        }
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
        let mut read = Vec::new();
        if let Some(ferrovpn_config::Material {
            source: ferrovpn_config::MaterialSource::File(path),
            ..
        }) = &cfg.crl_verify
        {
            read.push(("crl-verify", at("crl-verify"), path.clone()));
        }
        let read_dirs = (cfg.client_config_dir.iter())
            .map(|d| (at("client-config-dir"), d.clone()))
            .collect();
        Ok(Some(Self {
            chroot,
            user,
            group,
            keep_net_admin: !cfg.is_server(),
            read,
            read_dirs,
        }))
    }

    /// chroot (it needs root, so first), then switch group, supplementary
    /// groups and user, keep `CAP_NET_ADMIN` if asked, forbid regaining
    /// privileges through exec, and check that the file read after start
    /// is still reachable.
    pub fn drop_now(self) -> anyhow::Result<()> {
        if let Some((at, dir)) = &self.chroot {
            self.enter_chroot(at, dir)?;
        }
        if self.user.is_some() || self.group.is_some() {
            self.switch_identity()?;
        }
        Ok(())
    }

    /// chroot to `dir`, cd to `/`, then check that the `crl-verify` file
    /// exists at its path inside.
    fn enter_chroot(&self, at: &str, dir: &Path) -> anyhow::Result<()> {
        rustix::process::chroot(dir)
            .with_context(|| format!("{at}: 'chroot {}': chroot", dir.display()))?;
        rustix::process::chdir("/")
            .with_context(|| format!("{at}: 'chroot {}': chdir(\"/\")", dir.display()))?;
        info!("chroot to '{}' and cd to '/' succeeded", dir.display());
        for (directive, file_at, path) in &self.read {
            if std::fs::metadata(path).is_err() {
                bail!(
                    "{file_at}: '{directive} {}': not found inside 'chroot {}' ({at}); it is re-read there after start (as in OpenVPN 2.6), so put a copy at {}",
                    path.display(),
                    dir.display(),
                    dir.join(path.strip_prefix("/").unwrap_or(path)).display()
                );
            }
        }
        self.check_read_dirs("inside the chroot")
    }

    /// The `client-config-dir` directory is read at every connect: refuse
    /// to start when it cannot be (`whose`: from where it is seen).
    fn check_read_dirs(&self, whose: &str) -> anyhow::Result<()> {
        for (at, dir) in &self.read_dirs {
            let access = rustix::fs::Access::READ_OK | rustix::fs::Access::EXEC_OK;
            let usable =
                ferrovpn_control::server::ClientConfigDir::check_access(dir).and_then(|()| {
                    rustix::fs::access(dir.as_path(), access)
                        .map_err(|e| format!("'{}' cannot be searched: {e}", dir.display()))
                });
            if let Err(e) = usable {
                bail!(
                    "{at}: 'client-config-dir {}': {e} ({whose}); it is read at every client connect",
                    dir.display()
                );
            }
        }
        Ok(())
    }

    /// The identity part of [`Self::drop_now`].
    fn switch_identity(&self) -> anyhow::Result<()> {
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
            // `resolvectl` is exec'd without file capabilities: only an
            // ambient capability survives that as a non-root user.
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
        self.check_read_dirs(&format!("as {who}"))?;
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
