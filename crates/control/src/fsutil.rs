//! Files the server and client keep up to date (status, ifconfig-pool-persist),
//! and finding the system tools a client runs.
//!
//! As in OpenVPN 2.6, each file is opened once when the runtime starts,
//! before `chroot`, `user` and `group` take effect, and is then rewritten in
//! place through that descriptor (back to offset 0, write, truncate to the
//! new length). So the unprivileged user needs no access to the directory,
//! and the path need not exist inside the chroot. A reader can see a
//! half-written file for a moment, as with OpenVPN.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

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

/// The most of an `ifconfig-pool-persist` file read back at start: a
/// planted huge file must not exhaust memory (a line per client, each well
/// under 100 bytes).
pub const MAX_READ: u64 = 16 << 20;

/// An open file the runtime rewrites in place.
#[derive(Debug)]
pub struct KeptFile {
    path: PathBuf,
    file: File,
}

impl KeptFile {
    /// `status FILE`: created, or emptied when it exists (OpenVPN opens it
    /// `O_CREAT|O_TRUNC|O_WRONLY`, mode 0600).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Self::open(path, OFlags::CREATE | OFlags::TRUNC | OFlags::WRONLY)
    }

    /// `ifconfig-pool-persist FILE`: read at start, rewritten later; created
    /// when missing (OpenVPN: `O_CREAT|O_RDWR`, mode 0600).
    pub fn open_read_write(path: &Path) -> std::io::Result<Self> {
        Self::open(path, OFlags::CREATE | OFlags::RDWR)
    }

    /// `ifconfig-pool-persist FILE 0`: only read.
    pub fn open_read_only(path: &Path) -> std::io::Result<Self> {
        Self::open(path, OFlags::RDONLY)
    }

    /// The kept file's path: only for messages, the file is never reopened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// This runs as root, often on a path in a directory others can write:
    /// a symlink planted at the path is not followed (OpenVPN would follow
    /// it), and anything but a regular file (a FIFO, a device) is refused.
    fn open(path: &Path, flags: OFlags) -> std::io::Result<Self> {
        let fd = rustix::fs::open(
            path,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK,
            Mode::RUSR | Mode::WUSR,
        )
        .map_err(|e| {
            if e == rustix::io::Errno::LOOP {
                std::io::Error::other("is a symbolic link, which ferrovpn does not write through")
            } else {
                e.into()
            }
        })?;
        let file = File::from(fd);
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok(Self {
            path: path.to_path_buf(),
            file,
        })
    }

    /// The whole text, from the start, at most [`MAX_READ`] bytes.
    pub fn read_text(&self) -> std::io::Result<String> {
        let mut f = &self.file;
        f.seek(SeekFrom::Start(0))?;
        let mut bytes = Vec::new();
        f.take(MAX_READ + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_READ {
            return Err(std::io::Error::other(format!(
                "larger than {MAX_READ} bytes"
            )));
        }
        String::from_utf8(bytes).map_err(|_| std::io::Error::other("not UTF-8 text"))
    }

    /// Replace the content with `text`.
    pub fn rewrite(&self, text: &str) -> std::io::Result<()> {
        let mut f = &self.file;
        f.seek(SeekFrom::Start(0))?;
        f.write_all(text.as_bytes())?;
        self.file.set_len(text.len() as u64)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fvpn-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn rewrites_in_place_shorter_and_longer() {
        let dir = scratch("rewrite");
        let p = dir.join("status.log");
        std::fs::write(&p, "stale content from the last run\n").unwrap();
        let f = KeptFile::create(&p).unwrap();
        // Emptied at open, as OpenVPN's O_TRUNC does.
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
        f.rewrite("a longer first version\n").unwrap();
        f.rewrite("short\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "short\n");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_open_file_is_written_after_the_directory_is_closed_to_us() {
        let dir = scratch("kept");
        let p = dir.join("ipp.txt");
        std::fs::write(&p, "client1,10.8.0.4,\n").unwrap();
        let f = KeptFile::open_read_write(&p).unwrap();
        assert_eq!(f.read_text().unwrap(), "client1,10.8.0.4,\n");
        // What a chroot or a lost write permission does to the path: the
        // descriptor still reaches the file.
        let moved = dir.join("moved");
        std::fs::rename(&p, &moved).unwrap();
        f.rewrite("client2,10.8.0.5,\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&moved).unwrap(),
            "client2,10.8.0.5,\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn new_files_are_private() {
        let dir = scratch("private");
        let p = dir.join("status.log");
        KeptFile::create(&p).unwrap().rewrite("x\n").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn planted_symlinks_and_fifos_are_refused() {
        let dir = scratch("symlink");
        let canary = dir.join("canary");
        std::fs::write(&canary, "precious\n").unwrap();
        let p = dir.join("status.log");
        std::os::unix::fs::symlink(&canary, &p).unwrap();
        let e = KeptFile::create(&p).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert!(KeptFile::open_read_write(&p).is_err());
        assert_eq!(std::fs::read_to_string(&canary).unwrap(), "precious\n");
        let fifo = dir.join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::RUSR | Mode::WUSR,
            0,
        )
        .unwrap();
        let e = KeptFile::open_read_write(&fifo).unwrap_err();
        assert!(e.to_string().contains("regular file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn oversized_files_are_not_read() {
        let dir = scratch("huge");
        let p = dir.join("ipp.txt");
        let f = KeptFile::open_read_write(&p).unwrap();
        f.file.set_len(MAX_READ + 1).unwrap();
        assert!(f.read_text().is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
