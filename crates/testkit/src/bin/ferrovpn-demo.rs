//! `ferrovpn-demo` (run by `scripts/demo.sh`): the whole thing in one command. Two network namespaces
//! joined by veth, a throwaway PKI and tls-crypt key, a ferrovpn server in
//! one namespace and a ferrovpn client in the other, a ping and an iperf3
//! transfer through the tunnel, the result printed, everything removed.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

use ferrovpn_testkit::pki::{Pki, PkiOptions};
use ferrovpn_testkit::{
    Cipher, ClientConf, Material, Netns, Proc, ServerConf, TestDir, VethPair, Wrap, find_tool,
    iperf3_report, openvpn_client_conf, openvpn_server_conf, ping, unique_name, write_static_key,
};

#[derive(Parser, Debug)]
#[command(
    name = "ferrovpn-demo",
    about = "Tunnel between two fresh network namespaces with a transfer through it (needs root, ip, iperf3)"
)]
struct DemoArgs {
    /// Seconds of iperf3 traffic.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Parallel TCP streams.
    #[arg(long, default_value_t = 1)]
    streams: u32,
    /// Data-channel cipher: AES-256-GCM, AES-128-GCM or CHACHA20-POLY1305.
    #[arg(long, default_value = "AES-256-GCM")]
    cipher: String,
    /// Data-plane workers per side (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Keep the configs and logs directory.
    #[arg(long)]
    keep: bool,
    /// The ferrovpn binary to run (default: the one built next to this demo).
    #[arg(long)]
    ferrovpn: Option<std::path::PathBuf>,
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

fn main() {
    if let Err(e) = run() {
        eprintln!("ferrovpn-demo: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let a = DemoArgs::parse();
    let cipher = match a.cipher.to_ascii_uppercase().as_str() {
        "AES-256-GCM" => Cipher::Aes256Gcm,
        "AES-128-GCM" => Cipher::Aes128Gcm,
        "CHACHA20-POLY1305" => Cipher::Chacha20Poly1305,
        other => bail!("unknown cipher {other}"),
    };
    preflight()?;
    let exe = match a.ferrovpn.clone() {
        Some(p) => p,
        None => std::env::current_exe()
            .context("locating this demo binary")?
            .with_file_name("ferrovpn"),
    };
    if !exe.is_file() {
        bail!(
            "no ferrovpn binary at {} (build it: cargo build --release -p ferrovpn)",
            exe.display()
        );
    }
    let mut dir = TestDir::new("demo")?;
    if a.keep {
        dir.keep();
    }
    println!("== ferrovpn-demo (files in {})", dir.path().display());

    let server_ns = Netns::unique("demo-srv")?;
    let client_ns = Netns::unique("demo-cli")?;
    let _veth = VethPair::new(&server_ns, "192.0.2.1/24", &client_ns, "192.0.2.2/24")?;
    println!(
        "   namespaces {} (server, 192.0.2.1) and {} (client, 192.0.2.2), joined by veth",
        server_ns.name(),
        client_ns.name()
    );

    let pki = Pki::generate(&dir.join("pki"), &PkiOptions::default())?;
    let key = dir.join("tls-crypt.key");
    write_static_key(&key)?;
    let wrap = Wrap::TlsCrypt(Material::File(key));
    let mut server = ServerConf::new(&pki, &unique_name("ts"), wrap.clone(), cipher);
    let mut client = ClientConf::new(
        &pki,
        &pki.clients[0],
        "192.0.2.1",
        &unique_name("tc"),
        wrap,
        cipher,
    );
    if let Some(w) = a.workers {
        server.extra.push(format!("workers {w}"));
        client.extra.push(format!("workers {w}"));
    }
    let server_conf = dir.join("server.conf");
    let client_conf = dir.join("client.conf");
    std::fs::write(&server_conf, openvpn_server_conf(&server))?;
    std::fs::write(&client_conf, openvpn_client_conf(&client))?;
    println!(
        "   throwaway PKI, tls-crypt key, {} ; configs in OpenVPN syntax",
        cipher.name()
    );

    let exe = exe.to_string_lossy().into_owned();
    let mut srv = Proc::spawn_in(
        &server_ns,
        "ferrovpn-server",
        dir.path(),
        &exe,
        &["--config", &server_conf.to_string_lossy()],
    )?;
    srv.wait_for_log_line("server listening", CONNECT_TIMEOUT)
        .with_context(|| format!("server did not start:\n{}", srv.log_tail(30)))?;
    let started = Instant::now();
    let mut cli = Proc::spawn_in(
        &client_ns,
        "ferrovpn-client",
        dir.path(),
        &exe,
        &["--config", &client_conf.to_string_lossy()],
    )?;
    cli.wait_for_log_line("Initialization Sequence Completed", CONNECT_TIMEOUT)
        .with_context(|| {
            format!(
                "client did not connect:\n--- client\n{}\n--- server\n{}",
                cli.log_tail(30),
                srv.log_tail(30)
            )
        })?;
    println!(
        "   tunnel up in {:.2} s: client 10.8.0.2 <-> server 10.8.0.1",
        started.elapsed().as_secs_f64()
    );

    let p = ping(&client_ns, "10.8.0.1", 5, Duration::from_secs(10))?;
    println!(
        "   ping through the tunnel: {}/{} replies, avg RTT {:.3} ms",
        p.received, p.transmitted, p.avg_ms
    );
    let report = iperf3_report(&client_ns, &server_ns, "10.8.0.1", a.seconds, a.streams)?;
    println!(
        "   iperf3 TCP, {} stream(s), {} s: {:.2} Gbit/s ({} MB, {} retransmits)",
        a.streams,
        a.seconds,
        report.gbps,
        report.bytes / 1_000_000,
        report.retransmits
    );
    cli.stop(Duration::from_secs(5));
    srv.stop(Duration::from_secs(5));
    println!("== demo passed; namespaces and processes removed");
    Ok(())
}

fn preflight() -> anyhow::Result<()> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .unwrap_or_default();
    if uid != "0" {
        bail!("the demo creates network namespaces and TUN devices: run it as root (sudo)");
    }
    let missing: Vec<&str> = ["ip", "iperf3", "ping"]
        .into_iter()
        .filter(|t| find_tool(t).is_none())
        .collect();
    if !missing.is_empty() {
        bail!(
            "missing tools: {} (Debian/Ubuntu: apt-get install -y iproute2 iperf3 iputils-ping)",
            missing.join(", ")
        );
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        bail!("/dev/net/tun is missing (mkdir -p /dev/net && mknod /dev/net/tun c 10 200)");
    }
    Ok(())
}
