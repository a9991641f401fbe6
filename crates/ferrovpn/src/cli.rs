//! Command line: OpenVPN's (`--config FILE`, `--directive args`), plus
//! `--genkey`.

use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use ferrovpn_config::Config;
use ferrovpn_control::RestartKind;
use ferrovpn_proto::tls_crypt_v2::{ClientKey, Metadata, ServerKey};
use ferrovpn_proto::wrap::StaticKey;
use tracing::{info, warn};

const USAGE: &str = "\
ferrovpn: OpenVPN-compatible VPN server and client with a batched, multi-core data plane

Usage:
  ferrovpn --config FILE [--directive ARGS ...]   run a server or client (OpenVPN syntax)
  ferrovpn FILE                                   same as --config FILE
  ferrovpn --check --config FILE [...]            load everything (config, certificates, keys, files it
                                                  will write), list every problem, exit 0 if none; no network
  ferrovpn --genkey secret|tls-crypt|tls-auth FILE   write a static key for tls-crypt/tls-auth
  ferrovpn init [DIR] [--endpoint HOST[:PORT]] [--proto udp|tcp] [--subnet NET/PREFIX] [--ipv6 NET6/PREFIX] [--dns IP] [--rsa]
                [--tls-crypt]                     a CA, server certificate, tls-crypt-v2 server key (--tls-crypt:
                                                  a shared tls-crypt key), CRL and server.conf
  ferrovpn client add|revoke|renew|list [NAME] [--dir DIR]   client certificates and inline .ovpn profiles
  ferrovpn status [--dir DIR | --socket PATH] [--json]       connected clients, traffic and rates
  ferrovpn install [--prefix /usr/local] [--root /]          this binary, the systemd unit ferrovpn@.service
                                                  and /etc/ferrovpn
  ferrovpn --genkey tls-crypt-v2-server [FILE]     write a tls-crypt-v2 server key (stdout without FILE)
  ferrovpn --tls-crypt-v2 SERVER_KEY --genkey tls-crypt-v2-client [FILE [BASE64_METADATA]]
                                                  write a client key wrapped by SERVER_KEY, with USER
                                                  metadata if given (else the time, as OpenVPN does)
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
        Some(_) if args.iter().any(|a| a == "--genkey") => genkey(&args),
        Some(_) if crate::admin::is_admin_command(&args) => crate::admin::run(&args),
        Some(_) if args.iter().any(|a| a == "--check") => check_config(&args),
        Some(_) => run_config(&args),
    }
}

/// `--genkey TYPE [FILE [EXTRA]]`, with `--tls-crypt-v2 SERVER_KEY` before
/// or after it (OpenVPN's spelling for client keys).
fn genkey(args: &[String]) -> anyhow::Result<()> {
    const USAGE: &str = "usage: ferrovpn --genkey secret|tls-crypt|tls-auth FILE, \
        ferrovpn --genkey tls-crypt-v2-server [FILE], \
        ferrovpn --tls-crypt-v2 SERVER_KEY --genkey tls-crypt-v2-client [FILE [BASE64_METADATA]]";
    let mut server_key_file = None;
    let mut genkey_args: Vec<&str> = Vec::new();
    let mut it = args.iter().map(String::as_str).peekable();
    while let Some(a) = it.next() {
        match a {
            "--tls-crypt-v2" => {
                server_key_file = Some(it.next().context("--tls-crypt-v2 needs a key file")?);
            }
            "--genkey" => {
                while let Some(arg) = it.next_if(|a| !a.starts_with("--")) {
                    genkey_args.push(arg);
                }
            }
            other => anyhow::bail!("'{other}' cannot be combined with --genkey; {USAGE}"),
        }
    }
    crate::privileges::make_undumpable()?;
    let (file, text) = match genkey_args.as_slice() {
        [kind, file] if matches!(*kind, "secret" | "tls-crypt" | "tls-auth") => {
            (Some(*file), StaticKey::generate().to_file_text())
        }
        [file] if !file.starts_with("tls-crypt-v2") => {
            (Some(*file), StaticKey::generate().to_file_text())
        }
        ["tls-crypt-v2-server", file @ ..] if file.len() <= 1 => {
            (file.first().copied(), ServerKey::generate_file_text())
        }
        ["tls-crypt-v2-client", rest @ ..] if rest.len() <= 2 => {
            let server_file = server_key_file.context(
                "--genkey tls-crypt-v2-client requires a server key to be set via --tls-crypt-v2 to create a client key",
            )?;
            let server = std::fs::read_to_string(server_file)
                .map_err(anyhow::Error::from)
                .and_then(|t| Ok(ServerKey::parse(&t)?))
                .with_context(|| format!("tls-crypt-v2 server key {server_file}"))?;
            let metadata = match rest.get(1) {
                Some(b64) => Metadata::user(
                    &base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .context("metadata is not valid base64")?,
                ),
                None => Metadata::timestamp(
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                ),
            };
            let key = ClientKey::generate(&server, &metadata)?;
            (rest.first().copied(), key.to_file_text())
        }
        _ => anyhow::bail!("{USAGE}"),
    };
    match file {
        Some(file) => write_private(file, &text).with_context(|| format!("writing {file}"))?,
        None => print!("{text}"),
    }
    Ok(())
}

/// Write a key file readable by its owner only. Like `openvpn --genkey`,
/// an existing file is replaced; unlike it, never through a symlink and
/// never keeping an existing file's wider mode: the key goes to a new file
/// (`O_EXCL|O_NOFOLLOW`, mode 0600) that is then renamed over `path`.
fn write_private(path: &str, text: &str) -> std::io::Result<()> {
    write_replacing(std::path::Path::new(path), text, 0o600)
}

/// Write `text` to a new file (`O_EXCL|O_NOFOLLOW`, `mode`) next to
/// `target`, then rename it over `target`: readers see the old file or the
/// new one, never a part, and a symlink at `target` is replaced, not followed.
pub(crate) fn write_replacing(
    target: &std::path::Path,
    text: impl AsRef<[u8]>,
    mode: u32,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp_name = target.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = target.with_file_name(tmp_name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(&tmp)?;
    let written = f
        .write_all(text.as_ref())
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, target));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// The first config file the command line names (`FILE` alone, or the
/// first `--config FILE`).
fn first_config_file(args: &[String]) -> Option<&str> {
    if let [single] = args
        && !single.starts_with("--")
    {
        return Some(single);
    }
    args.windows(2)
        .find(|w| w[0] == "--config")
        .map(|w| w[1].as_str())
}

fn run_config(args: &[String]) -> anyhow::Result<()> {
    crate::privileges::make_undumpable()?;
    let cfg = Config::from_args(args)?;
    crate::logging::init(&cfg)?;
    for w in &cfg.warnings {
        warn!("{w}");
    }
    let privileges = crate::privileges::Privileges::from_config(&cfg)?;
    let drops_privileges = privileges.is_some();
    // A restart opens the key with the passphrase that opened it (2.6's
    // `passbuf`), unless `auth-nocache` or `forget-passwords` dropped it.
    crate::keys::keep_passphrase_for_this_process();
    // Everything that may ask on the terminal (credentials) or fail on the
    // config happens here, before `daemon` detaches (as in 2.6).
    let mut role = if cfg.is_server() {
        Role::Server(Box::new(crate::settings::server_settings(&cfg)?))
    } else {
        Role::Client(Box::new(crate::settings::client_settings(&cfg)?))
    };
    if let Some(file) = first_config_file(args) {
        // 2.6's `config` variable: the first config file named.
        let env = match &mut role {
            Role::Server(s) => &mut s.scripts.base_env,
            Role::Client(s) => &mut s.scripts.base_env,
        };
        env.set("config", file);
    }
    let detached =
        cfg.daemon && crate::daemon::detach(cfg.log.is_some())? == crate::daemon::Detached::Yes;
    if let (true, Role::Server(settings)) = (detached, &mut role) {
        // Scripts see the detached process's id, as in 2.6.
        (settings.scripts.base_env).set("daemon_pid", std::process::id().to_string());
    }
    // After detaching, as 2.6 does: the file holds the daemon's id.
    let _pid_file = cfg.writepid.as_deref().map(PidFile::write).transpose()?;
    // Once the tunnel is up: drop privileges, then tell systemd (Type=notify)
    // that the service is ready; without NOTIFY_SOCKET that does nothing.
    let setup_done: Option<ferrovpn_control::SetupDone> = Some(Box::new(move || {
        if let Some(p) = privileges {
            p.drop_now()?;
        }
        if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]) {
            warn!("cannot tell systemd that the service is ready: {e}");
        }
        Ok(())
    }));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("ferrovpn-control")
        .build()
        .context("starting the control-plane runtime")?;
    match role {
        Role::Server(mut settings) => {
            settings.setup_done = setup_done;
            let restarts = ServerRestarts {
                args,
                cfg,
                detached,
                drops_privileges,
            };
            runtime.block_on(serve(*settings, restarts))
        }
        Role::Client(mut settings) => {
            settings.setup_done = setup_done;
            let role = match &settings.p2p {
                None => "client",
                Some(p) if p.tls_server => "point-to-point (tls-server)",
                Some(_) => "point-to-point (tls-client)",
            };
            info!(
                "ferrovpn {} {role} starting, {} data-plane workers",
                env!("CARGO_PKG_VERSION"),
                settings.dataplane.workers
            );
            runtime.block_on(run_clients(*settings, args))
        }
    }?;
    info!("ferrovpn stopped");
    Ok(())
}

/// What a server needs to build its next instance on a restart.
struct ServerRestarts<'a> {
    /// The command line, read again on SIGHUP.
    args: &'a [String],
    /// The config as last read: SIGUSR1 builds from it again.
    cfg: Config,
    detached: bool,
    /// `user`/`group`/`chroot`: privileges are gone after the first setup.
    drops_privileges: bool,
}

impl ServerRestarts<'_> {
    /// The settings of the next instance: on SIGHUP from the config read
    /// again (2.6 re-parses its command line and config file; an error
    /// there ends the process, as 2.6's options error), on SIGUSR1 from
    /// the config read last. Either way the key, certificates and
    /// `crl-verify` file are read again.
    fn next_settings(
        &mut self,
        kind: RestartKind,
    ) -> anyhow::Result<ferrovpn_control::server::ServerSettings> {
        if self.drops_privileges {
            // 2.6 would fail too without `persist-tun` (it cannot open the
            // tun device again as the new user); ferrovpn does the same
            // with it, as it closes the device on every restart.
            anyhow::bail!(
                "{}: cannot restart in place after giving up root ('user'/'group'/'chroot'): \
                 the tun device and the socket cannot be opened again; exiting \
                 (a service manager with Restart=on-failure starts it anew)",
                kind.signal_name()
            );
        }
        if kind == RestartKind::Hard {
            info!("{}: reading the configuration again", kind.signal_name());
            self.cfg = Config::from_args(self.args)?;
            for w in &self.cfg.warnings {
                warn!("{w}");
            }
            anyhow::ensure!(
                self.cfg.is_server(),
                "{}: the configuration is no longer a server's; exiting",
                kind.signal_name()
            );
        }
        // 2.6 reads `askpass FILE` at a configuration read only; a SIGUSR1
        // without `persist-key` opens the key with the kept passphrase or
        // asks (see `KeyOpening`).
        let opening = if kind == RestartKind::Soft && !self.cfg.persist_key {
            crate::keys::KeyOpening::SoftRestart
        } else {
            crate::keys::KeyOpening::ConfigRead
        };
        let mut settings = crate::settings::server_settings_opening(&self.cfg, opening)?;
        if let Some(file) = first_config_file(self.args) {
            settings.scripts.base_env.set("config", file);
        }
        if self.detached {
            (settings.scripts.base_env).set("daemon_pid", std::process::id().to_string());
        }
        Ok(settings)
    }
}

/// Run server instances until one exits: SIGHUP and SIGUSR1 (real, or
/// `signal` over management) end an instance and start the next, as
/// 2.6's main loop does (`openvpn_main`).
async fn serve(
    first: ferrovpn_control::server::ServerSettings,
    mut restarts: ServerRestarts<'_>,
) -> anyhow::Result<()> {
    let requests = Arc::new(ferrovpn_control::RestartRequests::default());
    let on_restart = {
        let requests = requests.clone();
        move |kind| requests.request(kind)
    };
    let mut shutdown = Box::pin(shutdown_signal(on_restart)?);
    let mut kept = ferrovpn_control::server::KeptAcrossRestarts::default();
    let mut settings = first;
    loop {
        info!(
            "ferrovpn {} server starting, {} data-plane workers",
            env!("CARGO_PKG_VERSION"),
            settings.dataplane.workers
        );
        let ended = ferrovpn_control::server::run_server(
            settings,
            shutdown.as_mut(),
            requests.clone(),
            &mut kept,
        )
        .await?;
        let ferrovpn_control::server::Ended::Restart(kind) = ended else {
            return Ok(());
        };
        settings = restarts.next_settings(kind)?;
    }
}

/// Run client instances until one exits: SIGHUP (real, or `signal
/// SIGHUP` over management) ends an instance, the command line and config
/// file are read again and the next instance starts with the management
/// interface (and the credentials) of the last, as 2.6's main loop does
/// (`openvpn_main`). A config that no longer reads, or that is no longer a
/// client's, ends the process with status 1, as 2.6's options error.
async fn run_clients(
    first: ferrovpn_control::client::ClientSettings,
    args: &[String],
) -> anyhow::Result<()> {
    let restarts = Arc::new(ferrovpn_control::RestartRequests::default());
    let on_restart = {
        let restarts = restarts.clone();
        move |kind| restarts.request(kind)
    };
    let shutdown = shutdown_signal(on_restart)?;
    let mut shutdown = Box::pin(async move {
        shutdown.await;
    });
    let mut kept = ferrovpn_control::client::KeptAcrossReloads::default();
    let mut settings = first;
    loop {
        let ended = ferrovpn_control::client::run_client(
            settings,
            shutdown.as_mut(),
            restarts.clone(),
            &mut kept,
        )
        .await?;
        if ended == ferrovpn_control::client::ClientEnded::Exit {
            return Ok(());
        }
        info!("SIGHUP: reading the configuration again");
        let cfg = Config::from_args(args)?;
        for w in &cfg.warnings {
            warn!("{w}");
        }
        anyhow::ensure!(
            !cfg.is_server(),
            "SIGHUP: the configuration is no longer a client's; exiting"
        );
        settings = crate::settings::client_settings(&cfg)?;
        if let Some(file) = first_config_file(args) {
            settings.scripts.base_env.set("config", file);
        }
    }
}

/// What the config runs.
enum Role {
    Server(Box<ferrovpn_control::server::ServerSettings>),
    Client(Box<ferrovpn_control::client::ClientSettings>),
}

/// `writepid FILE`: the process id, written at start and removed at exit
/// (best effort: after `user` the directory may not allow it), as 2.6 does.
struct PidFile(std::path::PathBuf);

impl PidFile {
    fn write(path: &std::path::Path) -> anyhow::Result<PidFile> {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("writepid {}", path.display()))?;
        Ok(PidFile(path.to_path_buf()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            warn!("writepid: cannot remove {}: {e}", self.0.display());
        }
    }
}

/// `--check`: everything a start loads, without touching the network or
/// writing anything; every problem is listed, and the exit status says
/// whether there was one.
fn check_config(args: &[String]) -> anyhow::Result<()> {
    let args: Vec<String> = args.iter().filter(|a| *a != "--check").cloned().collect();
    let cfg = match Config::from_args(&args) {
        Ok(cfg) => cfg,
        Err(e) => {
            let n = e.all().count();
            anyhow::bail!("{n} problem(s) in the configuration:\n{e}");
        }
    };
    let mut problems = Vec::new();
    let role = if cfg.is_server() {
        if let Err(e) = crate::settings::server_settings(&cfg) {
            problems.push(format!("{e:#}"));
        }
        "server"
    } else {
        if let Err(e) = crate::settings::client_settings(&cfg) {
            problems.push(format!("{e:#}"));
        }
        "client"
    };
    // `user`/`group`: the same lookups and checks a start makes before setup.
    if let Err(e) = crate::privileges::Privileges::from_config(&cfg) {
        problems.push(format!("{e:#}"));
    }
    let written = [
        ("status", cfg.status.as_ref()),
        ("ifconfig-pool-persist", cfg.ifconfig_pool_persist.as_ref()),
    ];
    for (directive, file) in written {
        let Some(file) = file else { continue };
        if let Err(why) = writable(&file.path) {
            problems.push(format!(
                "'{directive} {}': cannot be written: {why}",
                file.path.display()
            ));
        }
    }
    for w in &cfg.warnings {
        println!("warning: {w}");
    }
    if problems.is_empty() {
        println!("configuration OK ({role})");
        Ok(())
    } else {
        anyhow::bail!(
            "{} problem(s) in the configuration:\n{}",
            problems.len(),
            problems.join("\n")
        )
    }
}

/// Whether `path` could be written, checked without changing anything: an
/// existing file must open for appending, a new one needs its directory.
fn writable(path: &std::path::Path) -> Result<(), String> {
    if path.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(drop)
            .map_err(|e| e.to_string());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() && !m.permissions().readonly() => Ok(()),
        Ok(m) if m.is_dir() => Err(format!("directory '{}' is read-only", dir.display())),
        Ok(_) => Err(format!("'{}' is not a directory", dir.display())),
        Err(e) => Err(format!("directory '{}': {e}", dir.display())),
    }
}

/// Resolves on SIGINT or SIGTERM; SIGHUP and SIGUSR1 call `on_restart`
/// (a client reconnects, a server restarts in place).
fn shutdown_signal(
    on_restart: impl Fn(RestartKind) + Send + 'static,
) -> anyhow::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(()) = usr1.recv() => on_restart(RestartKind::Soft),
                Some(()) = hup.recv() => on_restart(RestartKind::Hard),
                else => break,
            }
        }
    });
    Ok(async move {
        let signal = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        info!("{signal} received, shutting down");
        signal
    })
}
