//! Writing files the server and client keep up to date (status, pool-persist),
//! and finding the system tools a client runs.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where system tools are looked for, in order; never `PATH`.
const SYSTEM_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The absolute path of a system tool, if one of the system directories has it.
pub fn system_tool(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    SYSTEM_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Replace `path` with `text`, so a reader sees the old file or the new
/// one, never half of it. The text goes to a new file with a random name in
/// the same directory, created exclusively (never through an existing file
/// or symlink someone planted there: this runs as root) with mode 0600,
/// synced, then renamed over `path`.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(path.file_name().unwrap_or_default());
    prefix.push(".");
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(text.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_tools_are_found_by_absolute_path_only() {
        // `sh` lives in /bin or /usr/bin on every Linux this runs on.
        let sh = system_tool("sh").expect("sh in a system directory");
        assert!(sh.is_absolute(), "{}", sh.display());
        assert!(system_tool("no-such-tool-ferrovpn").is_none());
    }
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("fvpn-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn files_are_replaced_whole() {
        let dir = scratch("replace");
        let p = dir.join("status.log");
        write_atomically(&p, "one\n").unwrap();
        write_atomically(&p, "two\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two\n");
        // Nothing is left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn planted_symlinks_are_not_followed_and_the_file_is_private() {
        let dir = scratch("symlink");
        let canary = dir.join("canary");
        std::fs::write(&canary, "precious\n").unwrap();
        std::fs::set_permissions(&canary, std::fs::Permissions::from_mode(0o644)).unwrap();
        let p = dir.join("status.log");
        std::os::unix::fs::symlink(&canary, dir.join("status.log.tmp")).unwrap();
        // An existing world-readable file at the path is replaced, not reused.
        std::fs::write(&p, "old\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();

        write_atomically(&p, "CLIENT_LIST\n").unwrap();

        assert_eq!(std::fs::read_to_string(&canary).unwrap(), "precious\n");
        let canary_mode = std::fs::metadata(&canary).unwrap().permissions().mode();
        assert_eq!(canary_mode & 0o777, 0o644);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "CLIENT_LIST\n");
        let meta = std::fs::symlink_metadata(&p).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_symlink_at_the_path_itself_is_replaced_not_followed() {
        let dir = scratch("pathlink");
        let canary = dir.join("canary");
        std::fs::write(&canary, "precious\n").unwrap();
        let p = dir.join("ipp.txt");
        std::os::unix::fs::symlink(&canary, &p).unwrap();
        write_atomically(&p, "a,10.8.0.2,\n").unwrap();
        assert_eq!(std::fs::read_to_string(&canary).unwrap(), "precious\n");
        assert!(std::fs::symlink_metadata(&p).unwrap().file_type().is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
