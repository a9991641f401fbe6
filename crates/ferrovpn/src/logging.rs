//! Where log lines go: stderr (the default; the journal under systemd),
//! `log FILE` / `log-append FILE`, or `syslog [NAME]` (`daemon [NAME]`
//! too). As in 2.6, `log` wins over `syslog` whatever their order, and it
//! takes stdout and stderr with it (what scripts print lands in the log).
//! The management interface's `log` command sees the same lines in every
//! case.

use std::os::unix::net::UnixDatagram;
use std::path::Path;

use anyhow::Context;
use ferrovpn_config::Config;
use ferrovpn_control::peer_log::{PeerFormat, PeerLabels};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// The syslog socket of Linux systems (journald's or a syslog daemon's).
const SYSLOG_SOCKET: &str = "/dev/log";
/// Facility `daemon`, as OpenVPN logs.
const FACILITY_DAEMON: u8 = 3;

/// `verb` to a tracing filter: 0 errors, 1-3 what OpenVPN shows at 3, 4
/// debug, 5+ trace; RUST_LOG overrides it.
pub fn init(cfg: &Config) -> anyhow::Result<()> {
    let default = match cfg.verb() {
        0 => "error",
        1..=3 => "info",
        4 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let output: Box<dyn Layer<_> + Send + Sync> = if let Some(log) = &cfg.log {
        use std::os::unix::fs::OpenOptionsExt;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(log.append)
            .truncate(!log.append)
            .mode(0o600)
            .open(&log.path)
            .with_context(|| format!("log file {}", log.path.display()))?;
        crate::daemon::redirect_stdout_stderr(&file).with_context(|| {
            format!("log file {}: redirecting stdout/stderr", log.path.display())
        })?;
        tracing_subscriber::fmt::layer()
            .event_format(PeerFormat)
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .boxed()
    } else if let Some(name) = &cfg.syslog {
        match Syslog::connect(Path::new(SYSLOG_SOCKET), name) {
            Ok(syslog) => Box::new(syslog),
            // 2.6 starts without a syslog daemon and its lines are lost; a
            // `daemon` without `log` does the same here (said while stderr
            // is still the terminal), an explicit `syslog` refuses.
            Err(e) if cfg.daemon => {
                eprintln!(
                    "ferrovpn: warning: {e:#}: log lines are lost once detached (give 'log FILE')"
                );
                Box::new(tracing_subscriber::layer::Identity::new())
            }
            Err(e) => return Err(e),
        }
    } else {
        tracing_subscriber::fmt::layer()
            .event_format(PeerFormat)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .boxed()
    };
    // A subscriber set already (tests that run twice in one process) stays.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(PeerLabels)
        .with(output)
        .with(ferrovpn_control::management::LogLayer)
        .try_init();
    Ok(())
}

/// Log records sent to a syslog socket, one datagram each, in the
/// `<PRI>NAME[PID]: MESSAGE` form journald and syslog daemons read.
struct Syslog {
    socket: UnixDatagram,
    /// The program name; the process id is added at each record (it changes
    /// when `daemon` forks).
    name: String,
}

impl Syslog {
    fn connect(path: &Path, name: &str) -> anyhow::Result<Syslog> {
        let socket = UnixDatagram::unbound().context("syslog: creating a socket")?;
        socket
            .connect(path)
            .with_context(|| format!("syslog: no syslog socket at {}", path.display()))?;
        // A full socket buffer drops the record rather than stall the thread that logs.
        socket.set_nonblocking(true)?;
        Ok(Syslog {
            socket,
            name: name.to_string(),
        })
    }
}

fn severity(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Syslog {
    fn on_event(&self, event: &Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let pri = FACILITY_DAEMON * 8 + severity(event.metadata().level());
        let line = ferrovpn_control::management::peer_line(&ctx, event);
        let _ = self
            .socket
            .send(format!("<{pri}>{}[{}]: {line}", self.name, std::process::id()).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syslog_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let layer = Syslog::connect(&path, "myvpn").unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("client\nleft");
        });
        let mut buf = [0u8; 512];
        let n = receiver.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap();
        assert_eq!(
            text,
            format!("<28>myvpn[{}]: clientleft", std::process::id())
        );
        assert!(Syslog::connect(&dir.path().join("none"), "x").is_err());
    }
}
