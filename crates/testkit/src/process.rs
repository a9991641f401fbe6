//! Process guard: a program running in a namespace, output captured to a
//! log file, killed on drop, log tail printed when dropped while panicking.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::env::wait_until;
use crate::netns::{Netns, run_with_timeout};

/// Lines of log printed when a test fails.
const TAIL_LINES: usize = 60;

/// A child process (usually inside a [`Netns`]) with stdout and stderr
/// appended to one log file. Dropping it sends SIGTERM, waits up to 3 s,
/// then SIGKILLs; dropping it during a panic prints the log tail.
#[derive(Debug)]
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Spawn `prog args` inside `ns` (`ip netns exec NS prog args`), with
    /// output going to `log_dir/<name>.log` and the working directory
    /// `log_dir`.
    pub fn spawn_in<S: AsRef<std::ffi::OsStr>>(
        ns: &Netns,
        name: &str,
        log_dir: &Path,
        prog: &str,
        args: &[S],
    ) -> Result<Proc> {
        let cmd = ns.command(prog, args);
        Proc::spawn(name, log_dir, cmd)
    }

    /// Spawn an arbitrary command with output captured to `log_dir/<name>.log`.
    pub fn spawn(name: &str, log_dir: &Path, mut cmd: Command) -> Result<Proc> {
        let log = log_dir.join(format!("{name}.log"));
        let f = std::fs::File::create(&log)
            .with_context(|| format!("creating log {}", log.display()))?;
        let f2 = f.try_clone().context("dup log file")?;
        let child = cmd
            .current_dir(log_dir)
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(f2)
            .spawn()
            .with_context(|| format!("spawning {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log,
        })
    }

    /// Process id (of the program itself: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Whole log so far (lossy UTF-8).
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Exit status if it has exited.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Wait until the log contains `pattern` (a plain substring). Fails
    /// early, with the log tail, when the process exits first.
    pub fn wait_for_log_line(&mut self, pattern: &str, timeout: Duration) -> Result<()> {
        let mut exited = None;
        let found = wait_until(timeout, Duration::from_millis(50), || {
            if self.log().contains(pattern) {
                return true;
            }
            exited = self.child.try_wait().ok().flatten();
            exited.is_some()
        });
        // One more look: the line may have landed right before exit.
        if self.log().contains(pattern) {
            return Ok(());
        }
        let why = match (found, exited) {
            (_, Some(st)) => format!("exited ({st}) before logging"),
            _ => format!("did not log within {timeout:?}"),
        };
        bail!(
            "{} {why} {pattern:?}; last lines of {}:\n{}",
            self.name,
            self.log.display(),
            self.log_tail(TAIL_LINES)
        )
    }

    /// Send SIGTERM and wait up to `grace` for exit; SIGKILL afterwards.
    pub fn stop(&mut self, grace: Duration) {
        if self.try_exit().is_some() {
            return;
        }
        let mut k = Command::new("kill");
        k.args(["-TERM", &self.child.id().to_string()]);
        let _ = run_with_timeout(k, Duration::from_secs(5));
        let exited = wait_until(grace, Duration::from_millis(20), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// CPU seconds (user + system) used so far, from `/proc/PID/stat`.
    pub fn cpu_seconds(&self) -> Result<f64> {
        cpu_seconds(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(3));
        if std::thread::panicking() {
            eprintln!(
                "----- {} ({}), last {TAIL_LINES} lines -----\n{}\n----- end {} -----",
                self.name,
                self.log.display(),
                self.log_tail(TAIL_LINES),
                self.name
            );
        }
    }
}

/// utime + stime of a process in seconds, from `/proc/PID/stat`
/// (clock ticks assumed 100 Hz, the value on every Linux we run on; checked
/// with `getconf CLK_TCK` once when available).
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the ")" that closes comm: state is field 3; utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11).context("utime")?.parse()?;
    let stime: u64 = f.get(12).context("stime")?.parse()?;
    Ok((utime + stime) as f64 / clk_tck())
}

/// Resident memory of process `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// How many file descriptors process `pid` holds open.
pub fn open_fds(pid: u32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .with_context(|| format!("reading /proc/{pid}/fd"))?
        .count())
}

fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        let mut c = Command::new("getconf");
        c.arg("CLK_TCK");
        run_with_timeout(c, Duration::from_secs(5))
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_memory_and_descriptors() {
        let me = std::process::id();
        assert!(rss_kib(me).unwrap() > 0);
        assert!(open_fds(me).unwrap() >= 3);
        assert!(rss_kib(u32::MAX).is_err());
    }

    #[test]
    fn own_cpu_seconds_parse() {
        let s = cpu_seconds(std::process::id()).unwrap();
        assert!(s >= 0.0);
    }

    #[test]
    fn proc_logs_and_is_killed() {
        let dir = crate::TestDir::new("proc").unwrap();
        let mut c = Command::new("sh");
        c.args(["-c", "echo hello-from-child; exec sleep 30"]);
        let mut p = Proc::spawn("sleeper", dir.path(), c).unwrap();
        p.wait_for_log_line("hello-from-child", Duration::from_secs(10))
            .unwrap();
        let err = p
            .wait_for_log_line("never", Duration::from_millis(100))
            .unwrap_err();
        assert!(err.to_string().contains("did not log"), "{err}");
        let pid = p.pid();
        drop(p);
        // Killed and reaped: the /proc entry is gone.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn proc_exit_is_reported() {
        let dir = crate::TestDir::new("procexit").unwrap();
        let mut c = Command::new("sh");
        c.args(["-c", "echo bye; exit 3"]);
        let mut p = Proc::spawn("quitter", dir.path(), c).unwrap();
        let err = p
            .wait_for_log_line("never", Duration::from_secs(10))
            .unwrap_err();
        assert!(err.to_string().contains("exited"), "{err}");
        assert!(err.to_string().contains("bye"), "{err}");
    }
}
