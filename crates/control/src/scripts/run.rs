//! Running one script: on the async runtime, never blocking it, bounded in
//! time and in the output kept.

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tracing::{info, warn};

use super::command::{NOT_ALLOWED_WARNING, ScriptCommand, Security};
use super::env::Env;

/// How long a script may run before it is killed and counts as failed.
/// 2.6 waits without limit (and stops everything meanwhile); ferrovpn
/// stops waiting after the default `hand-window`, the time a client's
/// handshake may take anyway.
pub const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);
/// Output logged per stream and script; the rest is read and dropped so
/// that a chatty script never blocks on a full pipe.
const OUTPUT_LOGGED: usize = 16 * 1024;
/// How long the output of a finished script is still read (a background
/// child may hold the pipe open).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// How a script ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Signaled(i32),
    /// `script-security` below 2.
    NotAllowed,
    /// It could not be started.
    NotStarted(String),
    TimedOut,
}

impl Status {
    pub fn success(&self) -> bool {
        *self == Status::Exited(0)
    }

    /// 2.6's message for a script of `directive` (`--up/--down`, ...) that
    /// did not succeed; `None` when it did.
    pub fn failure(&self, directive: &str) -> Option<String> {
        (!self.success()).then(|| format!("WARNING: Failed running command ({directive}): {self}"))
    }
}

impl std::fmt::Display for Status {
    // 2.6's wording where it has one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Exited(0) => write!(f, "external program exited normally"),
            Status::Exited(n) => write!(f, "external program exited with error status: {n}"),
            Status::Signaled(n) => write!(f, "external program received signal {n}"),
            Status::NotAllowed => write!(f, "disallowed by script-security setting"),
            Status::NotStarted(e) => write!(f, "could not execute external program: {e}"),
            Status::TimedOut => write!(
                f,
                "external program killed after {} seconds",
                SCRIPT_TIMEOUT.as_secs()
            ),
        }
    }
}

/// One call of a script: which hook, the command, arguments appended to
/// the configured ones, and the environment.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The directive, as 2.6 names it in its messages (`--up/--down`, ...).
    pub hook: &'static str,
    pub command: ScriptCommand,
    pub extra: Vec<String>,
    pub env: Env,
}

/// 2.6 warns once per process when the level stops a script.
static WARNED_NOT_ALLOWED: AtomicBool = AtomicBool::new(false);

/// Run `inv` to its end (or [`SCRIPT_TIMEOUT`]).
pub async fn run(inv: Invocation, security: Security) -> Status {
    run_with_timeout(inv, security, SCRIPT_TIMEOUT).await
}

/// Run `inv` as [`run`] does, logging 2.6's warning when it fails.
pub async fn run_reported(inv: Invocation, security: Security) -> Status {
    let directive = inv.hook;
    let status = run(inv, security).await;
    if let Some(failure) = status.failure(directive) {
        warn!("{failure}");
    }
    status
}

pub(crate) async fn run_with_timeout(
    inv: Invocation,
    security: Security,
    timeout: Duration,
) -> Status {
    if !security.allows_scripts() {
        if !WARNED_NOT_ALLOWED.swap(true, Ordering::Relaxed) {
            warn!("{NOT_ALLOWED_WARNING}");
        }
        return Status::NotAllowed;
    }
    info!("{}", inv.command.display(&inv.extra));
    let mut cmd = tokio::process::Command::new(inv.command.program());
    cmd.args(inv.command.args(&inv.extra))
        .env_clear()
        .envs(inv.env.for_script(security))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Status::NotStarted(e.to_string()),
    };
    let readers = [
        child
            .stdout
            .take()
            .map(|s| tokio::spawn(log_output(inv.hook, s))),
        child
            .stderr
            .take()
            .map(|s| tokio::spawn(log_output(inv.hook, s))),
    ];
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) => {
            use std::os::unix::process::ExitStatusExt;
            match (st.code(), st.signal()) {
                (Some(code), _) => Status::Exited(code),
                (None, Some(sig)) => Status::Signaled(sig),
                (None, None) => Status::NotStarted("no exit status".into()),
            }
        }
        Ok(Err(e)) => Status::NotStarted(e.to_string()),
        Err(_) => {
            // Killed (and reaped) when `child` drops.
            let _ = child.start_kill();
            let _ = child.wait().await;
            Status::TimedOut
        }
    };
    for r in readers.into_iter().flatten() {
        let abort = r.abort_handle();
        if tokio::time::timeout(OUTPUT_GRACE, r).await.is_err() {
            abort.abort();
        }
    }
    status
}

/// Log a script's output line by line, up to [`OUTPUT_LOGGED`] bytes;
/// read and drop the rest.
async fn log_output(hook: &'static str, mut stream: impl AsyncRead + Unpin) {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    let mut dropped = 0usize;
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_LOGGED.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
                dropped += n - room;
            }
        }
    }
    for line in String::from_utf8_lossy(&kept).lines() {
        info!("{hook} script: {line}");
    }
    if dropped > 0 {
        warn!("{hook} script: {dropped} more bytes of output not logged");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(script: &str, extra: &[&str], env: Env) -> (tempfile::TempDir, Invocation) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let inv = Invocation {
            hook: "--test",
            command: ScriptCommand::parse(&format!("{} fixed", path.display())),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env,
        };
        (dir, inv)
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn arguments_environment_and_exit_code() {
        let mut env = Env::new();
        env.set("script_type", "up");
        env.set("password", "secret");
        // Exit code 3 when all is as expected, 1 otherwise.
        let (_d, i) = inv(
            r#"[ "$1 $2" = "fixed tun0" ] && [ "$script_type" = up ] && [ -z "$password" ] && ! env | grep -q ^PATH= || exit 1; exit 3"#,
            &["tun0"],
            env,
        );
        assert_eq!(block_on(run(i, Security::Scripts)), Status::Exited(3));
    }

    #[test]
    fn level_1_runs_nothing() {
        let (_d, i) = inv("exit 0", &[], Env::new());
        assert_eq!(block_on(run(i, Security::BuiltIn)), Status::NotAllowed);
    }

    #[test]
    fn missing_program_is_not_started() {
        let (_d, mut i) = inv("exit 0", &[], Env::new());
        i.command = ScriptCommand::parse("/nonexistent/ferrovpn-script");
        assert!(matches!(
            block_on(run(i, Security::Scripts)),
            Status::NotStarted(_)
        ));
    }

    #[test]
    fn a_hanging_script_is_killed() {
        let (_d, i) = inv("exec sleep 30", &[], Env::new());
        let t = std::time::Instant::now();
        let st = block_on(run_with_timeout(
            i,
            Security::Scripts,
            Duration::from_millis(300),
        ));
        assert_eq!(st, Status::TimedOut);
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn flood_of_output_does_not_block() {
        let (_d, i) = inv("head -c 1000000 /dev/zero; exit 0", &[], Env::new());
        assert_eq!(block_on(run(i, Security::Scripts)), Status::Exited(0));
    }
}
