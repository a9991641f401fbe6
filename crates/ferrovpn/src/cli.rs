//! Command line: OpenVPN's (`--config FILE`, `--directive args`), plus
//! `ferrovpn demo` and `--genkey`.

use std::sync::Arc;

use anyhow::Context;
use ferrovpn_config::Config;
use ferrovpn_proto::wrap::StaticKey;
use tracing::{info, warn};

const USAGE: &str = "\
ferrovpn: OpenVPN-compatible VPN server and client with a batched, multi-core data plane

Usage:
  ferrovpn --config FILE [--directive ARGS ...]   run a server or client (OpenVPN syntax)
  ferrovpn FILE                                   same as --config FILE
  ferrovpn --genkey secret|tls-crypt|tls-auth FILE   write a static key for tls-crypt/tls-auth
  ferrovpn demo [--help]                          tunnel between two network namespaces, with a transfer
  ferrovpn --help | --version

Every OpenVPN directive may be given as --directive; see docs/compatibility.md
for which ones are supported. Logging follows 'verb' (RUST_LOG overrides it).
";

pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        None | Some("--help" | "-h" | "help") => {
            print!("{USAGE}");
            Ok(())
        }
        Some("--version" | "-V") => {
            println!("ferrovpn {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Some("demo") => crate::demo::run(&args),
        Some("--genkey") => genkey(&args[1..]),
        Some(_) => run_config(&args),
    }
}

fn genkey(args: &[String]) -> anyhow::Result<()> {
    let file = match args {
        [kind, file] if matches!(kind.as_str(), "secret" | "tls-crypt" | "tls-auth") => file,
        [file] => file,
        _ => anyhow::bail!("usage: ferrovpn --genkey secret|tls-crypt|tls-auth FILE"),
    };
    let text = StaticKey::generate().to_file_text();
    write_private(file, &text).with_context(|| format!("writing {file}"))?;
    Ok(())
}

fn write_private(path: &str, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// `verb` to a tracing filter: 0 errors, 1-3 what OpenVPN shows at 3, 4 debug, 5+ trace.
fn init_logging(verb: u8) {
    let default = match verb {
        0 => "error",
        1..=3 => "info",
        4 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .finish()
        // The management interface's `log` command shows the same lines.
        .with(ferrovpn_control::management::LogLayer)
        .try_init();
}

fn run_config(args: &[String]) -> anyhow::Result<()> {
    let cfg = Config::from_args(args)?;
    init_logging(cfg.verb());
    for w in &cfg.warnings {
        warn!("{w}");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("ferrovpn-control")
        .build()
        .context("starting the control-plane runtime")?;
    let restart = Arc::new(tokio::sync::Notify::new());
    if cfg.is_server() {
        let settings = crate::settings::server_settings(&cfg)?;
        info!(
            "ferrovpn {} server starting, {} data-plane workers",
            env!("CARGO_PKG_VERSION"),
            settings.dataplane.workers
        );
        runtime.block_on(async {
            let shutdown = shutdown_signal(restart.clone())?;
            ferrovpn_control::server::run_server(settings, shutdown).await
        })
    } else {
        let settings = crate::settings::client_settings(&cfg)?;
        info!(
            "ferrovpn {} client starting, {} data-plane workers",
            env!("CARGO_PKG_VERSION"),
            settings.dataplane.workers
        );
        runtime.block_on(async {
            let shutdown = shutdown_signal(restart.clone())?;
            ferrovpn_control::client::run_client(settings, shutdown, restart).await
        })
    }?;
    info!("ferrovpn stopped");
    Ok(())
}

/// Resolves on SIGINT or SIGTERM; SIGUSR1 notifies `restart`, SIGHUP too
/// (OpenVPN restarts on both; ferrovpn does not re-read the config).
fn shutdown_signal(
    restart: Arc<tokio::sync::Notify>,
) -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = usr1.recv() => restart.notify_one(),
                Some(()) = hup.recv() => restart.notify_one(),
                else => break,
            }
        }
    });
    Ok(async move {
        tokio::select! {
            _ = int.recv() => info!("SIGINT received, shutting down"),
            _ = term.recv() => info!("SIGTERM received, shutting down"),
        }
    })
}
