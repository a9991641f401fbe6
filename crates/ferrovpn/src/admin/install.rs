//! `ferrovpn install [--prefix /usr/local] [--root /]`: the running binary
//! as PREFIX/bin/ferrovpn, the systemd unit `ferrovpn@.service` (its
//! `ExecStart` pointing at that binary) in /etc/systemd/system, and the
//! configuration directory /etc/ferrovpn. `--root` puts all of it under
//! another directory (a package build, a test), as `make DESTDIR=` does.
//!
//! A command rather than a list of `install` lines in the README: the unit
//! has to name the binary's real path, the directory needs its owner and
//! mode, and the binary must be replaced without disturbing a running
//! server (a new file renamed over the old one, never written in place);
//! done by hand, each of those is a step to get wrong.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The unit as the repository has it; `ExecStart` names [`UNIT_BINARY`].
const UNIT: &str = include_str!("../../../../contrib/systemd/ferrovpn@.service");
/// The binary the unit in the repository runs.
const UNIT_BINARY: &str = "/usr/local/bin/ferrovpn";
/// Where the unit reads `NAME.conf` from (the unit says so too).
pub const CONFIG_DIR: &str = "etc/ferrovpn";
/// Where the administrator's units go.
const UNIT_DIR: &str = "etc/systemd/system";
/// `/etc/ferrovpn`: root's, and readable by the group the generated config
/// drops to (`group nogroup`): after dropping privileges the server still
/// re-reads its CRL in there and writes to state/. Secrets in it are 0600.
const CONFIG_DIR_MODE: u32 = 0o750;
const CONFIG_DIR_GROUP: &str = "nogroup";

/// What was installed where (paths include the root).
#[derive(Debug)]
pub struct Installed {
    pub binary: PathBuf,
    pub unit: PathBuf,
    pub config_dir: PathBuf,
    /// The config directory existed and was left as it was.
    pub config_dir_kept: bool,
}

/// The unit with `ExecStart` running `binary`.
pub fn unit_text(binary: &Path) -> anyhow::Result<String> {
    let Some(binary) = binary.to_str().filter(|b| !b.contains(char::is_whitespace)) else {
        bail!(
            "{}: the binary's path must be UTF-8 without white space (it goes into ExecStart)",
            binary.display()
        );
    };
    Ok(UNIT.replace(UNIT_BINARY, binary))
}

/// Install the running binary under `root`/`prefix`.
pub fn run(prefix: &Path, root: &Path) -> anyhow::Result<Installed> {
    if !prefix.is_absolute() {
        bail!("--prefix {}: must be an absolute path", prefix.display());
    }
    let under_root = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    let binary_path = prefix.join("bin/ferrovpn");
    let unit = unit_text(&binary_path)?;
    let me = std::env::current_exe().context("finding the running binary")?;
    let binary = std::fs::read(&me).with_context(|| format!("reading {}", me.display()))?;

    let bin_dir = under_root(&prefix.join("bin"));
    std::fs::create_dir_all(&bin_dir).with_context(|| format!("creating {}", bin_dir.display()))?;
    let installed_binary = bin_dir.join("ferrovpn");
    crate::cli::write_replacing(&installed_binary, &binary, 0o755)
        .with_context(|| format!("writing {}", installed_binary.display()))?;

    let unit_dir = root.join(UNIT_DIR);
    std::fs::create_dir_all(&unit_dir)
        .with_context(|| format!("creating {}", unit_dir.display()))?;
    let unit_path = unit_dir.join("ferrovpn@.service");
    crate::cli::write_replacing(&unit_path, unit.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", unit_path.display()))?;

    let config_dir = root.join(CONFIG_DIR);
    let config_dir_kept = config_dir.symlink_metadata().is_ok();
    if !config_dir_kept {
        make_config_dir(&config_dir)?;
    }
    Ok(Installed {
        binary: installed_binary,
        unit: unit_path,
        config_dir,
        config_dir_kept,
    })
}

fn make_config_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::DirBuilder::new()
        .mode(CONFIG_DIR_MODE)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    // The umask may have taken bits away.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(CONFIG_DIR_MODE))
        .with_context(|| format!("setting the mode of {}", dir.display()))?;
    if rustix::process::geteuid().is_root() {
        let group = nix::unistd::Group::from_name(CONFIG_DIR_GROUP)
            .ok()
            .flatten()
            .with_context(|| {
                format!("no group '{CONFIG_DIR_GROUP}': the generated server.conf drops to it")
            })?;
        std::os::unix::fs::chown(dir, Some(0), Some(group.gid.as_raw()))
            .with_context(|| format!("giving {} to root:{CONFIG_DIR_GROUP}", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unit_runs_the_installed_binary() {
        let text = unit_text(Path::new("/opt/vpn/bin/ferrovpn")).unwrap();
        assert!(
            text.lines()
                .any(|l| l == "ExecStart=/opt/vpn/bin/ferrovpn --config /etc/ferrovpn/%i.conf"),
            "{text}"
        );
        assert!(!text.contains(UNIT_BINARY), "{text}");
        assert!(unit_text(Path::new("/opt/my vpn/bin/ferrovpn")).is_err());
        assert!(run(Path::new("relative"), Path::new("/nonexistent")).is_err());
    }
}
