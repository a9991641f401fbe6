//! `daemon [NAME]`, as OpenVPN 2.6 does it: once the configuration is read
//! (and credentials asked for on the terminal), the process detaches with
//! daemon(3) — fork, the parent exits 0, the child starts a new session —
//! then changes to `/`; stdin, stdout and stderr go to /dev/null, except
//! that with `log`/`log-append` stdout and stderr stay on the log file.
//! `writepid` is written after this, by the detached process.
//!
//! Under systemd (`NOTIFY_SOCKET` set and a `READY=0` sent to it) nothing
//! is forked, as in 2.6: the unit is `Type=notify` and the service manager
//! watches the process it started.
//!
//! fork(2) keeps only the calling thread, so this must run before any
//! thread starts (tokio's runtime, the data plane): [`detach`] checks that
//! the process has one thread and refuses otherwise.
//!
//! A thin syscall layer (daemon(3), dup2(2) through libc), the only unsafe
//! code of this crate; every block says why it is sound.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use anyhow::{Context, bail};

/// Whether a service manager watches this process (`NOTIFY_SOCKET`): told
/// as 2.6 tells it, by sending `READY=0`.
fn supervised_by_systemd() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
        && sd_notify::notify(false, &[sd_notify::NotifyState::Custom("READY=0")]).is_ok()
}

/// The threads of this process, from `/proc/self/task`.
fn thread_count() -> anyhow::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")
        .context("reading /proc/self/task")?
        .count())
}

/// What [`detach`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// Forked: this is the child, in a session of its own.
    Yes,
    /// Under systemd: still the process systemd started.
    Supervised,
}

/// Detach as `daemon` does; `log_file`: whether `log`/`log-append` is set
/// (stdout and stderr then stay where [`redirect_stdout_stderr`] put them).
pub fn detach(log_file: bool) -> anyhow::Result<Detached> {
    if supervised_by_systemd() {
        tracing::info!("daemon: running under systemd (NOTIFY_SOCKET): not detaching");
        return Ok(Detached::Supervised);
    }
    let threads = thread_count()?;
    if threads != 1 {
        bail!("daemon: {threads} threads run already; the process can only fork with one");
    }
    // SAFETY: daemon(3) forks and the parent _exit()s at once; with a single
    // thread (checked just above) the child's memory and locks are consistent.
    // nochdir = 1: the chdir to / follows, as in 2.6; noclose = log_file.
    let rc = unsafe { libc::daemon(1, libc::c_int::from(log_file)) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("daemon: daemon(3) failed");
    }
    if log_file {
        let null = std::fs::File::open("/dev/null").context("daemon: opening /dev/null")?;
        dup_onto(null.as_fd(), &[libc::STDIN_FILENO]).context("daemon: stdin")?;
    }
    std::env::set_current_dir("/").context("daemon: chdir /")?;
    Ok(Detached::Yes)
}

/// `log FILE`, as 2.6 does it: stdout and stderr become the log file, so that
/// what scripts and plugins print lands there too.
pub fn redirect_stdout_stderr(file: &std::fs::File) -> std::io::Result<()> {
    dup_onto(file.as_fd(), &[libc::STDOUT_FILENO, libc::STDERR_FILENO])
}

/// Make each of `targets` a copy of `fd`.
fn dup_onto(fd: BorrowedFd<'_>, targets: &[libc::c_int]) -> std::io::Result<()> {
    for &target in targets {
        // SAFETY: dup2 on an open descriptor we borrow, onto one of the
        // standard descriptors; it touches no memory.
        if unsafe { libc::dup2(fd.as_raw_fd(), target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
