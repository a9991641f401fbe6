//! Environment checks, unique names, temp dirs and polling.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `fvpn-<pid>-<n>-<tag>`.
/// Fine for namespaces and directories; too long for interface names
/// (see [`crate::VethPair`], which makes its own short names).
pub fn unique_name(tag: &str) -> String {
    format!(
        "fvpn-{}-{}-{tag}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// Process-unique counter, for short interface names.
pub(crate) fn next_seq() -> u32 {
    SEQ.fetch_add(1, Ordering::Relaxed)
}

/// Write the `sh` script `body` (the lines after `#!/bin/sh`) to `path`,
/// executable by everyone (mode 0755: a daemon under test runs it, perhaps
/// as `nobody`); returns `path`. Panics when it cannot.
pub fn sh_script(path: PathBuf, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(&path, format!("#!/bin/sh\n{body}"))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .unwrap_or_else(|e| panic!("chmod 0755 {}: {e}", path.display()));
    path
}

/// Compile the C plugin `source` (built against Debian's
/// `openvpn-plugin.h`, linked with OpenSSL's libcrypto) into
/// `<dir>/<source's stem>.so`; returns its path. Panics, naming the
/// missing package, when a header or `cc` is missing or the compiler
/// fails.
pub fn compile_plugin(source: &Path, dir: &Path) -> PathBuf {
    let stem = source
        .file_stem()
        .unwrap_or_else(|| panic!("{} has no file name", source.display()));
    let out = dir.join(stem).with_extension("so");
    assert!(
        Path::new("/usr/include/openvpn/openvpn-plugin.h").is_file(),
        "openvpn-plugin.h missing: install Debian's openvpn package"
    );
    assert!(
        Path::new("/usr/include/openssl/x509.h").is_file(),
        "openssl/x509.h missing: install libssl-dev"
    );
    let st = std::process::Command::new("cc")
        .args(["-Wall", "-shared", "-fPIC", "-o"])
        .arg(&out)
        .arg(source)
        .arg("-lcrypto")
        .status()
        .expect("cc (package gcc) must be installed");
    assert!(st.success(), "compiling {} failed", source.display());
    out
}

/// Poll `cond` every `interval` until it returns true or `timeout` passes.
/// Returns whether it became true. The condition is evaluated at least once
/// and at most `timeout / interval + 2` times.
pub fn wait_until(timeout: Duration, interval: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    let interval = interval.max(Duration::from_millis(1));
    let max_iters = timeout.as_millis() / interval.as_millis() + 2;
    for _ in 0..max_iters {
        if cond() {
            return true;
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return false;
        }
        std::thread::sleep(interval.min(timeout - elapsed));
    }
    cond()
}

/// Wait up to `timeout` until the file at `path` exists and holds
/// `pattern` (a plain substring): a log, status or record file another
/// process writes. Returns whether it did.
pub fn wait_for_file_text(path: &Path, pattern: &str, timeout: Duration) -> bool {
    wait_until(timeout, Duration::from_millis(50), || {
        std::fs::read_to_string(path).is_ok_and(|text| text.contains(pattern))
    })
}

/// Look a program up in `PATH`, then in the sbin directories (`openvpn` and
/// `ip` live there and `PATH` of a test runner may lack them).
pub fn find_tool(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(
            ["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .map(PathBuf::from),
        )
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // Uid: real effective saved fs
    line.split_whitespace().nth(2)?.parse().ok()
}

/// Panic with a clear message unless we run as root and every tool in
/// `tools` is installed (and `/dev/net/tun` exists when `openvpn` or
/// `ferrovpn` is asked for). Tests call this first: a test that cannot run
/// must fail loudly, never pass silently.
pub fn require_root_and_tools(tools: &[&str]) {
    let mut problems = Vec::new();
    match effective_uid() {
        Some(0) => {}
        Some(uid) => problems.push(format!(
            "must run as root (effective uid is {uid}); network namespaces and TUN devices need it"
        )),
        None => problems.push("cannot read the effective uid from /proc/self/status".into()),
    }
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| find_tool(t).is_none())
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "missing tools: {} (Debian: apt-get install -y openvpn iperf3 iproute2 iputils-ping openssl; see .ci/run)",
            missing.join(", ")
        ));
    }
    if tools
        .iter()
        .any(|t| *t == "openvpn" || t.ends_with("ferrovpn"))
        && !Path::new("/dev/net/tun").exists()
    {
        problems.push(
            "/dev/net/tun is missing (mkdir -p /dev/net && mknod /dev/net/tun c 10 200)".into(),
        );
    }
    assert!(
        problems.is_empty(),
        "this test needs root and {tools:?}, refusing to skip silently:\n  - {}",
        problems.join("\n  - ")
    );
}

/// A temporary directory removed on drop, except while panicking: then it
/// is kept (logs, configs) and its path printed to stderr.
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
    keep: bool,
}

impl TestDir {
    /// Create `$TMPDIR/fvpn-<pid>-<n>-<tag>`.
    pub fn new(tag: &str) -> Result<TestDir> {
        let path = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(TestDir { path, keep: false })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `self.path().join(name)`.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Keep the directory after drop (for inspection).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Let every user list and enter the directory (mode 0755), for a
    /// process under test that drops to `nobody` and still reads or writes
    /// files here.
    pub fn open_to_everyone(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod 0755 {}", self.path.display()))
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if self.keep || std::thread::panicking() {
            eprintln!("[testing] kept {}", self.path.display());
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_is_bounded() {
        let start = Instant::now();
        let mut n = 0;
        assert!(!wait_until(
            Duration::from_millis(50),
            Duration::from_millis(10),
            || {
                n += 1;
                false
            }
        ));
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!((2..=10).contains(&n), "{n}");
        let mut m = 0;
        assert!(wait_until(
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                m += 1;
                m == 3
            }
        ));
    }

    #[test]
    fn names_are_unique() {
        assert_ne!(unique_name("x"), unique_name("x"));
        assert!(unique_name("t").starts_with(&format!("fvpn-{}-", std::process::id())));
    }

    #[test]
    fn finds_sh() {
        assert!(find_tool("sh").is_some());
        assert!(find_tool("definitely-not-a-tool-xyz").is_none());
    }
}
