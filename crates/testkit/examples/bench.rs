//! Throughput / latency / CPU benchmark between two network namespaces.
//! Run through `scripts/bench.sh`, which builds everything in release mode.
//!
//! Rows: bare veth, stock OpenVPN <-> OpenVPN (AES-256-GCM, tls-crypt,
//! disable-dco) and ferrovpn <-> ferrovpn with the same config files, each
//! VPN over UDP and over TCP (`proto tcp-server` / `tcp-client`), and
//! ferrovpn <-> ferrovpn with inner IPv6 over outer IPv6 (`server-ipv6`,
//! `proto udp6`; iperf3 to the server's tunnel IPv6 address).
//! A system that does not pass a ping through its tunnel within 20 s gets a
//! row of "n/a (reason)" instead of aborting the run.
//!
//! ```text
//! bench [--only veth|openvpn|ferrovpn|openvpn-tcp|ferrovpn-tcp|ferrovpn-ipv6]... [--workers N] [--ferrovpn PATH]
//!       [--seconds N] [--keep]
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrovpn_testkit::bench::{CpuMeter, cell};
use ferrovpn_testkit::pki::{Pki, PkiOptions};
use ferrovpn_testkit::{
    Cipher, ClientConf, Material, Netns, Proc, ServerConf, TestDir, Transport, VethPair, Wrap,
    iperf3_report, openvpn_client_conf, openvpn_server_conf, ping, require_root_and_tools,
    wait_until,
};

/// What `--only` may name.
const SYSTEMS: &[&str] = &[
    "veth",
    "openvpn",
    "ferrovpn",
    "openvpn-tcp",
    "ferrovpn-tcp",
    "ferrovpn-ipv6",
];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const SERVER_TUN: &str = "10.8.0.1";
/// The server's tunnel IPv6 address in the IPv6 row (`server-ipv6 fd00:8::/64`).
const SERVER_TUN6: &str = "fd00:8::1";
/// The veth's IPv6 addresses in the IPv6 row (server end, client end).
const UNDERLAY6: (&str, &str) = ("fd00:77::1", "fd00:77::2");

struct Args {
    only: Vec<String>,
    workers: Option<u32>,
    ferrovpn: PathBuf,
    seconds: u32,
    keep: bool,
    /// Also measure the UDP ferrovpn row with `seal-spread` in the client
    /// (several workers seal one tunnel's TUN batches; off by default).
    seal_spread: bool,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        only: Vec::new(),
        workers: None,
        ferrovpn: PathBuf::from("target/release/ferrovpn"),
        seconds: 5,
        keep: false,
        seal_spread: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--only" => {
                let v = val("--only")?;
                for s in v.split(',') {
                    if !SYSTEMS.contains(&s) {
                        bail!("--only: unknown system {s:?} ({})", SYSTEMS.join(", "));
                    }
                    a.only.push(s.to_string());
                }
            }
            "--workers" => a.workers = Some(val("--workers")?.parse().context("--workers")?),
            "--ferrovpn" => a.ferrovpn = PathBuf::from(val("--ferrovpn")?),
            "--seconds" => a.seconds = val("--seconds")?.parse().context("--seconds")?,
            "--keep" => a.keep = true,
            "--seal-spread" => a.seal_spread = true,
            "-h" | "--help" => {
                println!(
                    "bench [--only veth|openvpn|ferrovpn|openvpn-tcp|ferrovpn-tcp|ferrovpn-ipv6] [--workers N] [--seal-spread] [--ferrovpn PATH] [--seconds N] [--keep]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}"),
        }
    }
    Ok(a)
}

#[derive(Default)]
struct Row {
    system: String,
    tcp1: Option<f64>,
    tcp4: Option<f64>,
    rtt_ms: Option<f64>,
    cpu_s_per_gb: Option<f64>,
    na: Option<String>,
}

struct Lab {
    server_ns: Netns,
    client_ns: Netns,
    veth: VethPair,
}

/// Measure from the client namespace to `addr` in the server namespace;
/// CPU accounting over `cpu_pids` (the VPN processes) across both iperf3 runs.
fn measure(lab: &Lab, system: &str, addr: &str, cpu_pids: &[u32], seconds: u32) -> Result<Row> {
    let rtt = ping(&lab.client_ns, addr, 20, Duration::from_secs(10))?;
    let cpu = CpuMeter::start(cpu_pids)?;
    let r1 = iperf3_report(&lab.client_ns, &lab.server_ns, addr, seconds, 1)?;
    let r4 = iperf3_report(&lab.client_ns, &lab.server_ns, addr, seconds, 4)?;
    Ok(Row {
        system: system.to_string(),
        tcp1: Some(r1.gbps),
        tcp4: Some(r4.gbps),
        rtt_ms: Some(rtt.avg_ms),
        cpu_s_per_gb: cpu.seconds_per_gb(r1.bytes + r4.bytes)?,
        na: None,
    })
}

/// A ferrovpn row from the server and client config files `confs`, with
/// `--workers` when asked for and the client's extra directives
/// `client_extra` (command-line form); n/a when the `--ferrovpn` binary is not
/// built.
fn ferrovpn_row(
    lab: &Lab,
    dir: &Path,
    args: &Args,
    name: String,
    confs: (String, String),
    client_extra: &[&str],
    target: &str,
) -> Row {
    let bin = std::fs::canonicalize(&args.ferrovpn)
        .ok()
        .map(|b| b.to_string_lossy().into_owned());
    let Some(bin) = bin.as_deref() else {
        return Row {
            system: name,
            na: Some(format!("binary {} not built", args.ferrovpn.display())),
            ..Row::default()
        };
    };
    let mut s = vec!["--config".to_string(), confs.0];
    let mut c = vec!["--config".to_string(), confs.1];
    if let Some(w) = args.workers {
        for v in [&mut s, &mut c] {
            v.push("--workers".into());
            v.push(w.to_string());
        }
    }
    c.extend(client_extra.iter().map(|x| x.to_string()));
    vpn_row(lab, dir, &name, (bin, s), (bin, c), args.seconds, target)
}

/// Start a server in ns A and a client in ns B, wait until a ping crosses
/// the tunnel, measure to `target` (the server's tunnel address to use),
/// stop both.
fn vpn_row(
    lab: &Lab,
    dir: &Path,
    system: &str,
    server_cmd: (&str, Vec<String>),
    client_cmd: (&str, Vec<String>),
    seconds: u32,
    target: &str,
) -> Row {
    let run = || -> Result<Row> {
        let mut server = Proc::spawn_in(
            &lab.server_ns,
            &format!("{system}-server"),
            dir,
            server_cmd.0,
            &server_cmd.1,
        )?;
        let mut client = Proc::spawn_in(
            &lab.client_ns,
            &format!("{system}-client"),
            dir,
            client_cmd.0,
            &client_cmd.1,
        )?;
        let start = Instant::now();
        let mut exited = None;
        let up = wait_until(CONNECT_TIMEOUT, Duration::from_millis(200), || {
            if let Some(s) = server.try_exit() {
                exited = Some(format!("server exited ({s})"));
                return true;
            }
            if let Some(s) = client.try_exit() {
                exited = Some(format!("client exited ({s})"));
                return true;
            }
            ping(&lab.client_ns, SERVER_TUN, 1, Duration::from_secs(1)).is_ok()
        });
        if let Some(why) = exited {
            let tail = if why.starts_with("server") {
                server.log_tail(3)
            } else {
                client.log_tail(3)
            };
            bail!("{why}: {}", tail.replace('\n', " / "));
        }
        if !up {
            bail!(
                "no ping through the tunnel within {CONNECT_TIMEOUT:?}; logs in {}",
                dir.display()
            );
        }
        eprintln!("[bench] {system}: tunnel up after {:?}", start.elapsed());
        let row = measure(lab, system, target, &[server.pid(), client.pid()], seconds)?;
        client.stop(Duration::from_secs(3));
        server.stop(Duration::from_secs(3));
        Ok(row)
    };
    run().unwrap_or_else(|e| Row {
        system: system.to_string(),
        na: Some(format!("{e:#}")),
        ..Row::default()
    })
}

/// IPv6 on in both namespaces and on the veth, with [`UNDERLAY6`] (no
/// duplicate address detection, so they work at once).
fn enable_ipv6(lab: &Lab) -> Result<()> {
    for (ns, ifname, addr) in [
        (&lab.server_ns, &lab.veth.if_a, UNDERLAY6.0),
        (&lab.client_ns, &lab.veth.if_b, UNDERLAY6.1),
    ] {
        ns.enable_ipv6_on(ifname, addr)?;
    }
    ping(&lab.client_ns, UNDERLAY6.0, 1, Duration::from_secs(5))?;
    Ok(())
}

fn genkey(path: &Path) -> Result<()> {
    ferrovpn_testkit::write_static_key(path)
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let want = |s: &str| args.only.is_empty() || args.only.iter().any(|o| o == s);
    let mut tools = vec!["ip", "ping", "iperf3", "ss", "kill"];
    if want("ferrovpn-ipv6") {
        tools.push("sysctl");
    }
    let vpn = SYSTEMS[1..].iter().any(|s| want(s));
    if vpn {
        tools.push("openvpn");
    }
    require_root_and_tools(&tools);

    let mut dir = TestDir::new("bench")?;
    if args.keep {
        dir.keep();
    }
    let pki = Pki::generate(&dir.join("pki"), &PkiOptions::default())?;
    let tc = dir.join("tc.key");
    if vpn {
        genkey(&tc)?;
    }
    let server_ns = Netns::unique("bench-a")?;
    let client_ns = Netns::unique("bench-b")?;
    let veth = VethPair::new(&server_ns, "10.77.0.1/24", &client_ns, "10.77.0.2/24")?;
    let lab = Lab {
        server_ns,
        client_ns,
        veth,
    };
    let wrap = Wrap::TlsCrypt(Material::File(tc.clone()));
    let sc = ServerConf::new(&pki, "fvtun-s", wrap.clone(), Cipher::Aes256Gcm);
    let cc = ClientConf::new(
        &pki,
        &pki.clients[0],
        &lab.veth.addr_a.to_string(),
        "fvtun-c",
        wrap,
        Cipher::Aes256Gcm,
    );
    std::fs::write(dir.join("server.conf"), openvpn_server_conf(&sc))?;
    std::fs::write(dir.join("client.conf"), openvpn_client_conf(&cc))?;
    let (mut sc_tcp, mut cc_tcp) = (sc.clone(), cc.clone());
    sc_tcp.transport = Transport::Tcp;
    cc_tcp.transport = Transport::Tcp;
    std::fs::write(dir.join("server-tcp.conf"), openvpn_server_conf(&sc_tcp))?;
    std::fs::write(dir.join("client-tcp.conf"), openvpn_client_conf(&cc_tcp))?;
    let conf = |f: &str| dir.join(f).to_string_lossy().into_owned();
    if want("ferrovpn-ipv6") {
        enable_ipv6(&lab)?;
        let (mut sc6, mut cc6) = (sc.clone(), cc.clone());
        sc6.extra = vec!["server-ipv6 fd00:8::/64".into(), "proto udp6".into()];
        cc6.remote = UNDERLAY6.0.to_string();
        std::fs::write(dir.join("server-ipv6.conf"), openvpn_server_conf(&sc6))?;
        std::fs::write(dir.join("client-ipv6.conf"), openvpn_client_conf(&cc6))?;
    }

    let mut rows = Vec::new();
    if want("veth") {
        let addr = lab.veth.addr_a.to_string();
        rows.push(
            measure(&lab, "veth (no VPN)", &addr, &[], args.seconds).unwrap_or_else(|e| Row {
                system: "veth (no VPN)".into(),
                na: Some(format!("{e:#}")),
                ..Row::default()
            }),
        );
    }
    for (transport, suffix) in [("", ""), ("-tcp", " over TCP")] {
        let server_conf = conf(&format!("server{transport}.conf"));
        let client_conf = conf(&format!("client{transport}.conf"));
        if want(&format!("openvpn{transport}")) {
            rows.push(vpn_row(
                &lab,
                dir.path(),
                &format!("OpenVPN 2.6 (Debian, disable-dco){suffix}"),
                ("openvpn", vec!["--config".into(), server_conf.clone()]),
                ("openvpn", vec!["--config".into(), client_conf.clone()]),
                args.seconds,
                SERVER_TUN,
            ));
        }
        if want(&format!("ferrovpn{transport}")) {
            let name = match args.workers {
                Some(w) => format!("ferrovpn (workers {w}){suffix}"),
                None => format!("ferrovpn{suffix}"),
            };
            let confs = (server_conf, client_conf);
            if args.seal_spread && transport.is_empty() {
                rows.push(ferrovpn_row(
                    &lab,
                    dir.path(),
                    &args,
                    format!("{name}, client seal-spread"),
                    confs.clone(),
                    &["--seal-spread"],
                    SERVER_TUN,
                ));
            }
            rows.push(ferrovpn_row(
                &lab,
                dir.path(),
                &args,
                name,
                confs,
                &[],
                SERVER_TUN,
            ));
        }
    }
    if want("ferrovpn-ipv6") {
        let name = "ferrovpn, IPv6 inside and outside (udp6)".to_string();
        let confs = (conf("server-ipv6.conf"), conf("client-ipv6.conf"));
        rows.push(ferrovpn_row(
            &lab,
            dir.path(),
            &args,
            name,
            confs,
            &[],
            SERVER_TUN6,
        ));
    }

    println!();
    println!(
        "iperf3 TCP -t {s} client ns -> server ns; idle RTT: 20 pings, 0.2 s apart; CPU: utime+stime of both VPN processes over both iperf3 runs / GB received",
        s = args.seconds
    );
    println!();
    println!("| system | TCP x1 Gbit/s | TCP x4 Gbit/s | idle RTT ms | CPU s/GB |");
    println!("|---|---|---|---|---|");
    for r in &rows {
        match &r.na {
            Some(why) => {
                let why: String = why.chars().take(160).collect();
                println!("| {} | n/a ({why}) | n/a | n/a | n/a |", r.system);
            }
            None => println!(
                "| {} | {} | {} | {} | {} |",
                r.system,
                cell(r.tcp1, 2),
                cell(r.tcp4, 2),
                cell(r.rtt_ms, 3),
                cell(r.cpu_s_per_gb, 2)
            ),
        }
    }
    Ok(())
}
