//! The operator's commands: `ferrovpn init`, `ferrovpn client
//! add|revoke|renew|list`, `ferrovpn status`, `ferrovpn install`. The PKI
//! work is in [`crate::pki`]; live data comes from the server's management
//! socket.

mod install;
mod mgmt;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use ferrovpn_control::status::{ListedClient, parse_client_list, utc};
use serde::Serialize;

use self::mgmt::Mgmt;
use crate::pki::{self, DEFAULT_CLIENT_DAYS, KeyType, Pki, init::InitOptions};

#[derive(Parser)]
#[command(name = "ferrovpn", about = "ferrovpn: set up and watch a server")]
struct Admin {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make a CA, the server's certificate and key, a tls-crypt-v2 server key, a
    /// CRL and a commented server.conf in DIR (default: the current directory).
    Init {
        dir: Option<PathBuf>,
        /// HOST[:PORT] clients connect to (default: this machine's host name, port 1194).
        #[arg(long)]
        endpoint: Option<String>,
        /// udp or tcp.
        #[arg(long, default_value = "udp")]
        proto: String,
        /// The tunnel's IPv4 NETWORK/PREFIX.
        #[arg(long, default_value = "10.8.0.0/24")]
        subnet: String,
        /// Also IPv6 inside the tunnel: the server-ipv6 NETWORK/PREFIX
        /// (prefix 64-124), e.g. fd00:8::/64.
        #[arg(long)]
        ipv6: Option<String>,
        /// A DNS server pushed to clients (repeat for more).
        #[arg(long)]
        dns: Vec<String>,
        /// RSA-3072 keys instead of EC P-256.
        #[arg(long)]
        rsa: bool,
        /// One tls-crypt key shared by every client instead of tls-crypt-v2
        /// (a key of its own in each profile); for clients older than OpenVPN 2.6.
        #[arg(long)]
        tls_crypt: bool,
    },
    /// Client certificates and profiles.
    Client {
        #[command(subcommand)]
        action: ClientAction,
        /// The directory 'ferrovpn init' made (default: the current directory).
        #[arg(long, global = true, default_value = ".")]
        dir: PathBuf,
    },
    /// Install this binary as PREFIX/bin/ferrovpn, the systemd unit
    /// ferrovpn@.service (running it) and the directory /etc/ferrovpn.
    Install {
        #[arg(long, default_value = "/usr/local")]
        prefix: PathBuf,
        /// Install everything under this directory instead of / (packaging, tests).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Connected clients, their addresses, traffic and rates, from the management socket.
    Status {
        /// The directory 'ferrovpn init' made (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// The management socket (default: DIR/state/management.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
        /// Seconds between the two samples rates come from (0: no rates).
        #[arg(long, default_value_t = 1.0)]
        interval: f64,
    },
}

#[derive(Subcommand)]
enum ClientAction {
    /// Issue a certificate for NAME and write its inline profile, clients/NAME.ovpn.
    Add {
        name: String,
        #[arg(long, default_value_t = DEFAULT_CLIENT_DAYS)]
        days: u32,
    },
    /// Revoke NAME's certificate (CRL) and end its live session.
    Revoke { name: String },
    /// A new key and certificate for NAME; the old one is revoked.
    Renew {
        name: String,
        #[arg(long, default_value_t = DEFAULT_CLIENT_DAYS)]
        days: u32,
    },
    /// Every client: serial, expiry, revoked, connected now.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// Whether `args` (without the program name) are one of these commands.
pub fn is_admin_command(args: &[String]) -> bool {
    matches!(
        args.first().map(String::as_str),
        Some("init" | "client" | "status" | "install")
    )
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let admin = match Admin::try_parse_from(
        std::iter::once("ferrovpn".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(a) => a,
        Err(e) if !e.use_stderr() => {
            // --help and the like.
            print!("{e}");
            return Ok(());
        }
        Err(e) => anyhow::bail!("{e}"),
    };
    match admin.command {
        Command::Init {
            dir,
            endpoint,
            proto,
            subnet,
            ipv6,
            dns,
            rsa,
            tls_crypt,
        } => {
            let endpoint = match endpoint {
                Some(e) => e,
                None => default_endpoint()?,
            };
            let opts = InitOptions {
                dir: dir.unwrap_or_else(|| PathBuf::from(".")),
                endpoint,
                proto,
                subnet,
                ipv6,
                dns,
                key_type: if rsa { KeyType::Rsa } else { KeyType::Ec },
                tls_crypt_v2: !tls_crypt,
            };
            let dir = pki::init::run(&opts)?;
            let index = Pki::open(&dir)?.index()?;
            println!(
                "PKI and server configuration written to {d}\n\
                 client profiles will connect to {host} port {port} ({proto}) (set with --endpoint and --proto)\n\
                 start the server:  ferrovpn --config {d}/server.conf\n\
                 add a client:      ferrovpn client add NAME --dir {d}",
                d = dir.display(),
                host = index.settings.host,
                port = index.settings.port,
                proto = index.settings.proto,
            );
            Ok(())
        }
        Command::Client { action, dir } => client(&dir, action),
        Command::Install { prefix, root } => {
            let done = install::run(&prefix, &root)?;
            let kept = if done.config_dir_kept {
                " (it existed: left as it was)"
            } else {
                ""
            };
            println!(
                "installed {binary}\ninstalled {unit}\nconfiguration directory {conf}{kept}\n\
                 next:\n  systemctl daemon-reload\n  \
                 ferrovpn init /etc/ferrovpn --endpoint HOST     # writes /etc/ferrovpn/server.conf\n  \
                 ferrovpn client add NAME --dir /etc/ferrovpn\n  \
                 systemctl enable --now ferrovpn@server          # runs /etc/ferrovpn/server.conf",
                binary = done.binary.display(),
                unit = done.unit.display(),
                conf = done.config_dir.display(),
            );
            Ok(())
        }
        Command::Status {
            dir,
            socket,
            json,
            interval,
        } => {
            let socket = socket.unwrap_or_else(|| dir.join("state/management.sock"));
            status(&socket, json, interval)
        }
    }
}

/// This machine's host name, for profiles when `--endpoint` is not given.
fn default_endpoint() -> anyhow::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the host name; give --endpoint HOST")?;
    Ok(name.trim().to_string())
}

fn client(dir: &Path, action: ClientAction) -> anyhow::Result<()> {
    let pki = Pki::open(dir)?;
    match action {
        ClientAction::Add { name, days } => {
            let profile = pki.add_client(&name, days)?;
            println!("{}", profile.display());
        }
        ClientAction::Renew { name, days } => {
            let profile = pki.renew_client(&name, days)?;
            println!("{}", profile.display());
        }
        ClientAction::Revoke { name } => {
            let serial = pki.revoke_client(&name)?;
            println!("revoked {name} (serial {serial}); the CRL is updated");
            // The server drops the session itself once it re-reads the CRL
            // (within a second); the management kill makes it immediate.
            match Mgmt::connect(&pki.management_socket()).and_then(|mut m| m.kill(&name)) {
                Ok(answer) => println!("live session: {answer}"),
                Err(e) => println!(
                    "live session not killed now ({e:#}); the server drops it when it re-reads the CRL"
                ),
            }
        }
        ClientAction::List { json } => list(&pki, json)?,
    }
    Ok(())
}

#[derive(Serialize)]
struct ListedCert {
    name: String,
    serial: String,
    expires: String,
    revoked: bool,
    connected: Vec<Connection>,
}

#[derive(Serialize)]
struct Connection {
    real_address: String,
    virtual_address: String,
    bytes_received: u64,
    bytes_sent: u64,
    connected_since: u64,
}

fn list(pki: &Pki, json: bool) -> anyhow::Result<()> {
    let index = pki.index()?;
    let live = Mgmt::connect(&pki.management_socket()).and_then(|mut m| m.status());
    let clients = match &live {
        Ok(report) => Some(parse_client_list(report)),
        Err(e) => {
            eprintln!("note: connections unknown, the server is not reachable: {e:#}");
            None
        }
    };
    let rows: Vec<ListedCert> = index
        .latest_by_name()
        .into_iter()
        .map(|c| ListedCert {
            name: c.name.clone(),
            serial: c.serial.clone(),
            expires: utc(u64::try_from(c.not_after).unwrap_or(0)),
            revoked: c.revoked_at.is_some(),
            connected: (clients.iter().flatten())
                .filter(|l| l.common_name == c.name)
                .map(connection)
                .collect(),
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<34} {:<20} {:<8} CONNECTED",
        "NAME", "SERIAL", "EXPIRES (UTC)", "REVOKED"
    );
    for r in rows {
        let connected = if r.connected.is_empty() {
            if clients.is_some() {
                "no".to_string()
            } else {
                "?".to_string()
            }
        } else {
            (r.connected.iter())
                .map(|c| {
                    format!(
                        "{} ({} in, {} out)",
                        c.real_address,
                        bytes(c.bytes_received),
                        bytes(c.bytes_sent)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "{:<20} {:<34} {:<20} {:<8} {connected}",
            r.name,
            r.serial,
            r.expires,
            if r.revoked { "yes" } else { "no" }
        );
    }
    Ok(())
}

fn connection(l: &ListedClient) -> Connection {
    Connection {
        real_address: l.real_address.clone(),
        virtual_address: l.virtual_address.clone(),
        bytes_received: l.bytes_received,
        bytes_sent: l.bytes_sent,
        connected_since: l.connected_since,
    }
}

#[derive(Serialize)]
struct StatusRow {
    common_name: String,
    real_address: String,
    virtual_address: String,
    bytes_received: u64,
    bytes_sent: u64,
    connected_since: u64,
    /// Bytes per second over the sampling interval; absent without one.
    receive_rate: Option<f64>,
    send_rate: Option<f64>,
}

fn status(socket: &Path, json: bool, interval: f64) -> anyhow::Result<()> {
    if !(0.0..=60.0).contains(&interval) {
        anyhow::bail!("--interval: 0 to 60 seconds");
    }
    let mut m = Mgmt::connect(socket)?;
    let first = parse_client_list(&m.status()?);
    let t0 = Instant::now();
    let (clients, before) = if interval > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(interval));
        (parse_client_list(&m.status()?), Some(first))
    } else {
        (first, None)
    };
    let elapsed = t0.elapsed().as_secs_f64();
    let rows: Vec<StatusRow> = clients
        .iter()
        .map(|c| {
            let prev = (before.iter().flatten()).find(|p| {
                p.real_address == c.real_address && p.connected_since == c.connected_since
            });
            let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / elapsed;
            StatusRow {
                common_name: c.common_name.clone(),
                real_address: c.real_address.clone(),
                virtual_address: c.virtual_address.clone(),
                bytes_received: c.bytes_received,
                bytes_sent: c.bytes_sent,
                connected_since: c.connected_since,
                receive_rate: prev.map(|p| rate(c.bytes_received, p.bytes_received)),
                send_rate: prev.map(|p| rate(c.bytes_sent, p.bytes_sent)),
            }
        })
        .collect();
    if json {
        println!("{}", serde_json::json!({ "clients": rows }));
        return Ok(());
    }
    println!("{} client(s) connected", rows.len());
    if rows.is_empty() {
        return Ok(());
    }
    println!(
        "{:<20} {:<22} {:<16} {:>10} {:>10} {:>11} {:>11} CONNECTED SINCE (UTC)",
        "NAME", "REAL ADDRESS", "VIRTUAL", "IN", "OUT", "IN/s", "OUT/s"
    );
    for r in rows {
        let per_s = |v: Option<f64>| v.map_or("-".into(), |v| format!("{}/s", bytes(v as u64)));
        println!(
            "{:<20} {:<22} {:<16} {:>10} {:>10} {:>11} {:>11} {}",
            r.common_name,
            r.real_address,
            r.virtual_address,
            bytes(r.bytes_received),
            bytes(r.bytes_sent),
            per_s(r.receive_rate),
            per_s(r.send_rate),
            utc(r.connected_since)
        );
    }
    Ok(())
}

/// `1234567` → `1.2 MB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
