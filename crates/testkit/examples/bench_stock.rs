//! A server full of stock clients: the same server config under ferrovpn and
//! under Debian's OpenVPN 2.6 (AES-256-GCM, tls-crypt, disable-dco), N stock
//! `openvpn` clients each in its own namespace, one iperf3 TCP stream per
//! client, all at once, up and then down. Run through
//! `scripts/bench-stock.sh`, which builds everything in release mode.
//!
//! Per server and client count it reports the aggregate throughput, the
//! server process's CPU seconds (utime + stime from `/proc/PID/stat`, all
//! threads) per GB moved, the ping RTT from client 0 through the idle tunnel
//! and the ping RTT while the transfer runs (loaded), and from each
//! namespace's `/proc/net/snmp` over the transfer: datagrams dropped for want
//! of socket receive buffer (`RcvbufErrors`) at the server and at the
//! clients, and the TCP segments retransmitted. A server that fails to
//! start or to bring its clients up gets a row of "n/a (reason)" and the
//! logs on stderr; the run goes on.
//!
//! Each row also counts the packets the tun devices dropped because their
//! transmit queue was full (`tx_dropped`, server's and clients'): in upload
//! the queue that fills first is the stock client's own tun queue (500
//! packets, the kernel's default, which 2.6 keeps), where a loaded ping
//! waits. `--matched-rate` measures ferrovpn a second time with every
//! stream capped (`iperf3 -b`) at what the same stream reached under
//! OpenVPN, so the loaded RTTs compare at the same offered load.
//!
//! `--perf DIR` also runs `perf stat` (context switches, migrations, task
//! clock, the data path's system calls) and `perf record -g` on the server
//! process over each transfer;
//! perf's own cost then inflates the CPU figures.
//!
//! `--veth-napi` runs every veth's receive in a threaded NAPI kernel
//! thread (`napi/<dev>-<id>`), as a NIC's would run in its driver's
//! softirq, instead of inside the sender's system call: without NAPI a
//! veth hands a packet to the peer's stack within the sender's
//! `sendmmsg`/`sendto`, so each server was charged its clients' UDP receive
//! (and each client the server's). On Linux 6.18 a veth takes the NAPI path
//! for a datagram when GRO is on at the receiving end and TSO is off at the
//! sending end (`veth_xmit`: with TSO on, only with
//! `rx-udp-gro-forwarding` or `rx-gro-list` on at the receiving end), and threaded NAPI
//! (`/sys/class/net/DEV/threaded`) moves the poll into a kernel thread of
//! its own. Both servers are measured alike; GRO then also gives a socket
//! that asked for it (`UDP_GRO`, as ferrovpn's does) several datagrams of
//! one flow in one message, as a NIC with GRO would. The NAPI threads' own
//! CPU per GB is printed too (server side, client side).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use ferrovpn_testkit::bench::{CpuMeter, cell, load_average};
use ferrovpn_testkit::lab::{CLIENT_DEV, SERVER_DEV, SERVER_TUN};
use ferrovpn_testkit::{
    Cipher, Direction, Implementation, Lab, Netns, PingStats, Proc, Wrap, iperf3_all_at_while,
    ping, wait_until,
};

/// Idle RTT: pings 0.2 s apart. On the 2-core bench VM one ping's wake-ups
/// vary more than the two servers differ (ferrovpn's 20-ping average ranged
/// 0.40-1.00 ms over one day's runs), so the table gives the median of 50
/// and their average.
const IDLE_PINGS: u32 = 50;

#[derive(Parser, Debug)]
#[command(about = "ferrovpn vs OpenVPN 2.6 as the server of N stock OpenVPN clients")]
struct Args {
    /// Client counts to measure, each with every server.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    clients: Vec<usize>,
    /// Servers to measure.
    #[arg(long, value_delimiter = ',', default_value = "openvpn,ferrovpn")]
    only: Vec<Server>,
    /// Seconds of iperf3 per figure (each direction).
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// The ferrovpn binary.
    #[arg(long, default_value = "target/release/ferrovpn")]
    ferrovpn: PathBuf,
    /// Record each transfer's server process with `perf stat` and
    /// `perf record -g` into this directory.
    #[arg(long)]
    perf: Option<PathBuf>,
    /// Measure ferrovpn again with each stream capped at the rate the same
    /// stream reached under OpenVPN (needs `openvpn` in `--only`, first).
    #[arg(long)]
    matched_rate: bool,
    /// Run each veth's receive in a threaded NAPI kernel thread (GRO on at
    /// the receiving end, TSO off at the sending end), as a NIC would,
    /// instead of inside the sender's system call: a server-only reading.
    #[arg(long)]
    veth_napi: bool,
    /// With `--veth-napi`: hold received packets in GRO up to this many
    /// microseconds and poll again on a timer instead of being woken by
    /// each packet (`gro_flush_timeout`, `napi_defer_hard_irqs` 1), as a
    /// NIC's interrupt moderation does. 0: off.
    #[arg(long, default_value_t = 0, requires = "veth_napi")]
    veth_hold_us: u32,
    /// Keep the scratch directory (configs, PKI, logs).
    #[arg(long)]
    keep: bool,
}

/// The NAPI kernel threads of the lab's veths after [`VethNapi::enable`]:
/// those receiving at the server's ends (from the clients) and at the
/// clients' ends.
struct VethNapi {
    server_side: Vec<u32>,
    client_side: Vec<u32>,
}

impl VethNapi {
    /// Turn GRO on and TSO off at both ends of every veth pair of `lab`,
    /// then threaded NAPI, one device at a time so that each device's new
    /// `napi/` kernel threads are known (their names are cut to 15 bytes,
    /// which drops the device's last letters). Fails unless every device
    /// shows the settings and got a thread.
    /// `hold_us`: see `--veth-hold-us`.
    fn enable(lab: &Lab, hold_us: u32) -> Result<VethNapi> {
        let ends = |pick: fn(&ferrovpn_testkit::VethPair) -> &String, server: bool| {
            lab.veths
                .iter()
                .zip(&lab.clients)
                .map(move |(veth, client)| {
                    (if server { &lab.server_ns } else { client }, pick(veth))
                })
        };
        let server_ends: Vec<(&Netns, &String)> = ends(|v| &v.if_a, true).collect();
        let client_ends: Vec<(&Netns, &String)> = ends(|v| &v.if_b, false).collect();
        for &(ns, dev) in server_ends.iter().chain(&client_ends) {
            ns.exec(&["ethtool", "-K", dev, "gro", "on", "tso", "off"])?;
            let features = ns.exec(&["ethtool", "-k", dev])?;
            for want in [
                "generic-receive-offload: on",
                "tcp-segmentation-offload: off",
            ] {
                if !features.lines().any(|l| l.trim() == want) {
                    bail!("{dev} in {}: ethtool -k does not show {want:?}", ns.name());
                }
            }
        }
        let threads = |ends: &[(&Netns, &String)]| -> Result<Vec<u32>> {
            let mut pids = Vec::new();
            for &(ns, dev) in ends {
                let before = napi_threads()?;
                let knob = format!("/sys/class/net/{dev}/threaded");
                ns.exec(&["sh", "-c", &format!("echo 1 > {knob}")])?;
                let new: Vec<u32> = napi_threads()?
                    .into_iter()
                    .filter(|p| !before.contains(p))
                    .collect();
                if new.is_empty() {
                    bail!(
                        "{dev} in {}: no napi/ kernel thread after {knob} = 1",
                        ns.name()
                    );
                }
                pids.extend(new);
                if hold_us > 0 {
                    let hold_ns = u64::from(hold_us) * 1000;
                    let set = format!(
                        "echo {hold_ns} > /sys/class/net/{dev}/gro_flush_timeout && \
                         echo 1 > /sys/class/net/{dev}/napi_defer_hard_irqs"
                    );
                    ns.exec(&["sh", "-c", &set])?;
                }
            }
            Ok(pids)
        };
        Ok(VethNapi {
            server_side: threads(&server_ends)?,
            client_side: threads(&client_ends)?,
        })
    }
}

/// The pids of every `napi/…` kernel thread on the machine.
fn napi_threads() -> Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // A process may end between the listing and the read.
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.starts_with("napi/") {
            pids.push(pid);
        }
    }
    Ok(pids)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Server {
    /// Debian's OpenVPN 2.6.
    Openvpn,
    /// ferrovpn.
    Ferrovpn,
}

impl Server {
    fn implementation(self) -> Implementation {
        match self {
            Server::Openvpn => Implementation::Stock,
            Server::Ferrovpn => Implementation::Ferrovpn,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Server::Openvpn => "OpenVPN 2.6",
            Server::Ferrovpn => "ferrovpn",
        }
    }

    fn file_stem(self) -> &'static str {
        match self {
            Server::Openvpn => "openvpn",
            Server::Ferrovpn => "ferrovpn",
        }
    }
}

/// One transfer's figures.
struct Transfer {
    direction: Direction,
    /// Each stream's cap (`iperf3 -b`), when the transfer was capped.
    cap_bits_per_second: Option<u64>,
    gbps: f64,
    cpu_s_per_gb: Option<f64>,
    loaded: PingStats,
    /// Datagrams the server's UDP socket dropped for want of receive buffer.
    server_drops: u64,
    /// The same at the stock clients' sockets (all clients).
    client_drops: u64,
    /// TCP segments the iperf3 senders retransmitted (all namespaces).
    retransmits: u64,
    /// Packets the server's tun device dropped with its queue full.
    server_tun_drops: u64,
    /// The same at the clients' tun devices (all clients).
    client_tun_drops: u64,
    /// With `--veth-napi`: CPU seconds per GB of the veths' NAPI threads
    /// receiving at the server's ends and at the clients' ends.
    napi_s_per_gb: Option<(Option<f64>, Option<f64>)>,
}

/// Counters of one namespace's `/proc/net/snmp` (its whole stack).
#[derive(Clone, Copy, Debug, Default)]
struct Snmp {
    udp_rcvbuf_errors: u64,
    tcp_retrans_segs: u64,
    /// `tx_dropped` of the namespace's tun device.
    tun_tx_dropped: u64,
}

impl Snmp {
    /// Read the counters of the namespace `ns`, whose tun device is `dev`.
    fn read(ns: &Netns, dev: &str) -> Result<Snmp> {
        let text = ns.exec(&["cat", "/proc/net/snmp"])?;
        let dropped = format!("/sys/class/net/{dev}/statistics/tx_dropped");
        let tun_tx_dropped = ns.exec(&["cat", &dropped])?;
        Ok(Snmp {
            udp_rcvbuf_errors: snmp_field(&text, "Udp:", "RcvbufErrors")?,
            tcp_retrans_segs: snmp_field(&text, "Tcp:", "RetransSegs")?,
            tun_tx_dropped: tun_tx_dropped
                .trim()
                .parse()
                .with_context(|| format!("{dropped} in {}: {tun_tx_dropped:?}", ns.name()))?,
        })
    }

    /// Sum over the namespaces.
    fn read_all(namespaces: &[&Netns], dev: &str) -> Result<Snmp> {
        let mut sum = Snmp::default();
        for ns in namespaces {
            let s = Snmp::read(ns, dev)?;
            sum.udp_rcvbuf_errors += s.udp_rcvbuf_errors;
            sum.tcp_retrans_segs += s.tcp_retrans_segs;
            sum.tun_tx_dropped += s.tun_tx_dropped;
        }
        Ok(sum)
    }
}

/// Field `name` of the `/proc/net/snmp` line pair starting with `proto`
/// (a header line of names, then a line of values).
fn snmp_field(text: &str, proto: &str, name: &str) -> Result<u64> {
    let mut lines = text.lines().filter(|l| l.starts_with(proto));
    let (Some(names), Some(values)) = (lines.next(), lines.next()) else {
        bail!("/proc/net/snmp has no {proto} lines");
    };
    let at = names
        .split_whitespace()
        .position(|n| n == name)
        .with_context(|| format!("/proc/net/snmp has no {proto} {name}"))?;
    values
        .split_whitespace()
        .nth(at)
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("/proc/net/snmp: bad {proto} {name} value"))
}

impl Transfer {
    /// `up`, `down`, or `up@OpenVPN` for a transfer capped at OpenVPN's rate.
    fn label(&self) -> String {
        match self.cap_bits_per_second {
            None => self.direction.name().to_string(),
            Some(_) => format!("{}@OpenVPN", self.direction.name()),
        }
    }
}

/// One server with `clients` stock clients, or why it could not be measured.
struct Row {
    server: Server,
    clients: usize,
    figures: std::result::Result<(PingStats, Vec<Transfer>), String>,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let Some(&most) = args.clients.iter().max() else {
        bail!("--clients: give at least one count");
    };
    if args.clients.contains(&0) {
        bail!("--clients: a count of 0 measures nothing");
    }
    if args.seconds < 2 {
        bail!("--seconds: at least 2 (the loaded ping needs the transfer running)");
    }
    let ferrovpn = std::fs::canonicalize(&args.ferrovpn)
        .with_context(|| format!("ferrovpn binary {}", args.ferrovpn.display()))?;
    if let Some(dir) = &args.perf {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut lab = Lab::new("stk", most, &ferrovpn.to_string_lossy());
    if args.keep {
        lab.dir.keep();
        eprintln!("[bench-stock] keeping {}", lab.dir.path().display());
    }
    let wrap = lab.tls_crypt();
    let napi = args
        .veth_napi
        .then(|| VethNapi::enable(&lab, args.veth_hold_us))
        .transpose()?;
    let load_before = load_average()?;

    if args.matched_rate && args.only.first() != Some(&Server::Openvpn) {
        bail!("--matched-rate: OpenVPN must be measured first (--only openvpn,ferrovpn)");
    }
    let mut rows: Vec<Row> = Vec::new();
    for &n in &args.clients {
        for &server in &args.only {
            eprintln!("[bench-stock] {} with {n} stock clients", server.label());
            // Each stream's rate under OpenVPN, per direction, to cap at.
            let caps: Vec<(Direction, u64)> = if args.matched_rate && server == Server::Ferrovpn {
                rows.iter()
                    .filter(|r| r.server == Server::Openvpn && r.clients == n)
                    .filter_map(|r| r.figures.as_ref().ok())
                    .flat_map(|(_, transfers)| transfers)
                    .map(|t| (t.direction, (t.gbps * 1e9 / n as f64) as u64))
                    .collect()
            } else {
                Vec::new()
            };
            let measured = catch_unwind(AssertUnwindSafe(|| {
                measure(&lab, &wrap, server, n, &caps, &args, napi.as_ref())
            }));
            let figures = match measured {
                Ok(Ok(f)) => Ok(f),
                Ok(Err(e)) => Err(format!("{e:#}")),
                Err(panic) => Err(panic_message(&*panic)),
            };
            rows.push(Row {
                server,
                clients: n,
                figures,
            });
        }
    }
    print_tables(&args, &rows, &load_before, &load_average()?);
    Ok(())
}

/// Start `server` with `n` stock clients, measure idle RTT, then upload and
/// download; everything started here stops when it returns.
fn measure(
    lab: &Lab,
    wrap: &Wrap,
    server: Server,
    n: usize,
    caps: &[(Direction, u64)],
    args: &Args,
    napi: Option<&VethNapi>,
) -> Result<(PingStats, Vec<Transfer>)> {
    let (seconds, perf) = (args.seconds, args.perf.as_deref());
    let cipher = Cipher::Aes256Gcm;
    let sc = lab.server_conf(wrap.clone(), cipher);
    let ccs = lab.client_confs(wrap, cipher);
    // Declared before the clients: dropped (stopped) after them.
    let server_proc = lab.server(server.implementation(), &sc);
    let _clients = lab.stock_clients_up(&ccs[..n], &server_proc);
    let namespaces: Vec<&Netns> = lab.clients[..n].iter().collect();
    for ns in &namespaces {
        // The client logs "up" before the server has its route: wait for it.
        let through = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
            ping(ns, SERVER_TUN, 1, Duration::from_secs(1)).is_ok()
        });
        if !through {
            bail!("no ping from {} through the tunnel within 10 s", ns.name());
        }
    }
    let idle = ping(
        &lab.clients[0],
        SERVER_TUN,
        IDLE_PINGS,
        Duration::from_secs(u64::from(IDLE_PINGS) / 5 + 10),
    )?;
    let mut transfers = Vec::new();
    let uncapped = [Direction::Upload, Direction::Download].map(|d| (d, None));
    let capped = caps.iter().map(|&(d, cap)| (d, Some(cap)));
    for (direction, cap) in uncapped.into_iter().chain(capped) {
        let server_before = Snmp::read(&lab.server_ns, SERVER_DEV)?;
        let clients_before = Snmp::read_all(&namespaces, CLIENT_DEV)?;
        let cpu = CpuMeter::start(&[server_proc.pid()])?;
        let napi_cpu = napi
            .map(|t| -> Result<_> {
                Ok((
                    CpuMeter::start(&t.server_side)?,
                    CpuMeter::start(&t.client_side)?,
                ))
            })
            .transpose()?;
        let (reports, loaded) = iperf3_all_at_while(
            &namespaces,
            &lab.server_ns,
            SERVER_TUN,
            seconds,
            direction,
            cap,
            || {
                let profile = perf
                    .map(|dir| {
                        let capped = if cap.is_some() { "-capped" } else { "" };
                        let stem =
                            format!("{}-{n}-{}{capped}", server.file_stem(), direction.name());
                        Profile::start(lab, dir, &stem, server_proc.pid(), seconds - 1)
                    })
                    .transpose();
                // From the start to about a second before the end.
                let count = (seconds * 5).saturating_sub(4).max(1);
                let loaded = ping(
                    &lab.clients[0],
                    SERVER_TUN,
                    count,
                    Duration::from_secs(u64::from(seconds) + 5),
                );
                profile?.map(Profile::finish).transpose()?;
                loaded
            },
        )?;
        let bytes = reports.iter().map(|r| r.bytes).sum();
        let cpu_s_per_gb = cpu.seconds_per_gb(bytes)?;
        let napi_s_per_gb = napi_cpu
            .map(|(server_side, client_side)| -> Result<_> {
                Ok((
                    server_side.seconds_per_gb(bytes)?,
                    client_side.seconds_per_gb(bytes)?,
                ))
            })
            .transpose()?;
        let server_after = Snmp::read(&lab.server_ns, SERVER_DEV)?;
        let clients_after = Snmp::read_all(&namespaces, CLIENT_DEV)?;
        let delta = |after: u64, before: u64| after.saturating_sub(before);
        transfers.push(Transfer {
            direction,
            cap_bits_per_second: cap,
            gbps: reports.iter().map(|r| r.gbps).sum(),
            cpu_s_per_gb,
            loaded: loaded.context("ping through the loaded tunnel")?,
            server_drops: delta(
                server_after.udp_rcvbuf_errors,
                server_before.udp_rcvbuf_errors,
            ),
            client_drops: delta(
                clients_after.udp_rcvbuf_errors,
                clients_before.udp_rcvbuf_errors,
            ),
            retransmits: delta(
                server_after.tcp_retrans_segs + clients_after.tcp_retrans_segs,
                server_before.tcp_retrans_segs + clients_before.tcp_retrans_segs,
            ),
            server_tun_drops: delta(server_after.tun_tx_dropped, server_before.tun_tx_dropped),
            client_tun_drops: delta(clients_after.tun_tx_dropped, clients_before.tun_tx_dropped),
            napi_s_per_gb,
        });
    }
    Ok((idle, transfers))
}

/// What `perf stat` counts: scheduling, and the system calls of the
/// data path (a worker's loop is `poll`, TUN `read`/`write`, `recvmmsg`,
/// `sendmmsg`, `ppoll` while it paces, `sched_yield` between send rounds).
const PERF_STAT_EVENTS: &str = "context-switches,cpu-migrations,task-clock,\
syscalls:sys_enter_poll,syscalls:sys_enter_ppoll,syscalls:sys_enter_read,\
syscalls:sys_enter_write,syscalls:sys_enter_recvmmsg,syscalls:sys_enter_sendmmsg,\
syscalls:sys_enter_sched_yield";

/// `perf stat` and `perf record -g` attached to one process for a while.
struct Profile {
    stat: Proc,
    record: Proc,
    seconds: u32,
}

impl Profile {
    /// Attach to `pid` for `seconds`; output in `dir/<stem>.stat` and
    /// `dir/<stem>.data`, perf's own messages in the lab's logs.
    fn start(lab: &Lab, dir: &Path, stem: &str, pid: u32, seconds: u32) -> Result<Profile> {
        let pid = pid.to_string();
        let sleep = seconds.max(1).to_string();
        let perf = |args: &[&str], out: PathBuf| {
            let mut cmd = Command::new("perf");
            cmd.args(args)
                .arg("-o")
                .arg(out)
                .args(["-p", &pid, "--", "sleep", &sleep]);
            cmd
        };
        let stat = perf(
            &["stat", "-e", PERF_STAT_EVENTS],
            dir.join(format!("{stem}.stat")),
        );
        let record = perf(&["record", "-g"], dir.join(format!("{stem}.data")));
        Ok(Profile {
            stat: Proc::spawn(&format!("perf-stat-{stem}"), lab.dir.path(), stat)?,
            record: Proc::spawn(&format!("perf-record-{stem}"), lab.dir.path(), record)?,
            seconds,
        })
    }

    /// Wait until both perf processes have written their files.
    fn finish(mut self) -> Result<()> {
        let grace = Duration::from_secs(u64::from(self.seconds) + 20);
        for p in [&mut self.stat, &mut self.record] {
            let mut status = None;
            wait_until(grace, Duration::from_millis(50), || {
                status = p.try_exit();
                status.is_some()
            });
            match status {
                Some(s) if s.success() => {}
                Some(s) => bail!("{} failed ({s}): {}", p.name(), p.log_tail(5)),
                None => bail!("{} did not finish within {grace:?}", p.name()),
            }
        }
        Ok(())
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panicked".into())
}

fn print_tables(args: &Args, rows: &[Row], load_before: &str, load_after: &str) {
    println!();
    println!(
        "N stock OpenVPN 2.6 clients (one namespace each, AES-256-GCM, tls-crypt), one iperf3 TCP stream per client, all at once, -t {}; \
         CPU: server process utime+stime / GB received; idle RTT: {IDLE_PINGS} pings from client 0, 0.2 s apart; \
         loaded RTT: pings from client 0 during the transfer; RTTs: median (average); UDP drops: datagrams dropped for want of socket receive buffer \
         (RcvbufErrors) at the server and at the clients; tun drops: packets the tun devices dropped with their \
         transmit queue full (tx_dropped), server and clients; retrans: TCP segments retransmitted; \
         direction@OpenVPN: each stream capped at its rate under OpenVPN (--matched-rate). \
         Load average before {load_before}, after {load_after}.",
        args.seconds
    );
    println!();
    println!("{}", veth_mode(args.veth_napi, args.veth_hold_us));
    println!();
    let napi_header = if args.veth_napi {
        " veth NAPI CPU s/GB server side / client side |"
    } else {
        ""
    };
    let napi_rule = if args.veth_napi { "---|" } else { "" };
    println!(
        "| server | clients | direction | Gbit/s | server CPU s/GB | idle RTT ms | loaded RTT ms | UDP drops server / clients | tun drops server / clients | retrans |{napi_header}"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|{napi_rule}");
    for row in rows {
        let (server, n) = (row.server.label(), row.clients);
        match &row.figures {
            Err(why) => {
                let why: String = why.lines().next().unwrap_or("").chars().take(160).collect();
                let napi = if args.veth_napi { " n/a |" } else { "" };
                println!(
                    "| {server} | {n} | - | n/a ({why}) | n/a | n/a | n/a | n/a | n/a | n/a |{napi}"
                );
            }
            Ok((idle, transfers)) => {
                for t in transfers {
                    let napi = t
                        .napi_s_per_gb
                        .map(|(s, c)| format!(" {} / {} |", cell(s, 2), cell(c, 2)))
                        .unwrap_or_default();
                    println!(
                        "| {server} | {n} | {} | {:.3} | {} | {} | {} | {} / {} | {} / {} | {} |{napi}",
                        t.label(),
                        t.gbps,
                        cell(t.cpu_s_per_gb, 2),
                        rtt_with_loss(idle),
                        rtt_with_loss(&t.loaded),
                        t.server_drops,
                        t.client_drops,
                        t.server_tun_drops,
                        t.client_tun_drops,
                        t.retransmits,
                    );
                }
            }
        }
    }
    print_ratios(args, rows);
}

/// The table header's line on where the veths' receive runs.
fn veth_mode(napi: bool, hold_us: u32) -> String {
    if !napi {
        return "veth mode: default: a veth runs the receiving end's stack inside the sender's system call, so the server CPU \
         column holds its clients' UDP receive (download) as well; --veth-napi gives the server-only reading."
            .into();
    }
    let hold = if hold_us > 0 {
        format!(
            " Received packets wait in GRO up to {hold_us} us (--veth-hold-us: gro_flush_timeout, napi_defer_hard_irqs 1)."
        )
    } else {
        String::new()
    };
    format!(
        "veth mode: --veth-napi (server-only reading): each veth's receive runs in a threaded NAPI kernel thread \
         (GRO on, TSO off), not inside the sender's system call; the server CPU column no longer holds its clients' receive.{hold}"
    )
}

/// ferrovpn's figures over OpenVPN's for each client count and direction
/// both were measured at (the targets are ratios).
fn print_ratios(args: &Args, rows: &[Row]) {
    let transfers = |server: Server, n: usize| {
        rows.iter()
            .find(|r| r.server == server && r.clients == n)
            .and_then(|r| r.figures.as_ref().ok())
    };
    let mut lines = Vec::new();
    for row in rows.iter().filter(|r| r.server == Server::Ferrovpn) {
        let (Some((f_idle, f)), Some((o_idle, o))) = (
            transfers(Server::Ferrovpn, row.clients),
            transfers(Server::Openvpn, row.clients),
        ) else {
            continue;
        };
        for ft in f {
            // Capped or not, against OpenVPN's uncapped transfer that way.
            let Some(ot) = o
                .iter()
                .find(|t| t.direction == ft.direction && t.cap_bits_per_second.is_none())
            else {
                continue;
            };
            let cpu = ft.cpu_s_per_gb.zip(ot.cpu_s_per_gb).map(|(a, b)| a / b);
            lines.push(format!(
                "| {} | {} | {:.2} | {} | {:.2} ({:.2}) | {:.2} ({:.2}) |",
                row.clients,
                ft.label(),
                ft.gbps / ot.gbps,
                cell(cpu, 2),
                f_idle.median_ms / o_idle.median_ms,
                f_idle.avg_ms / o_idle.avg_ms,
                ft.loaded.median_ms / ot.loaded.median_ms,
                ft.loaded.avg_ms / ot.loaded.avg_ms,
            ));
        }
    }
    if lines.is_empty() {
        return;
    }
    println!();
    let mode = if args.veth_napi {
        "--veth-napi"
    } else {
        "default veth"
    };
    println!("ferrovpn / OpenVPN, {mode} (targets: CPU <= 0.20, RTTs <= 1):");
    println!();
    println!(
        "| clients | direction | Gbit/s | server CPU s/GB | idle RTT median (avg) | loaded RTT median (avg) |"
    );
    println!("|---|---|---|---|---|---|");
    for l in lines {
        println!("{l}");
    }
}

fn rtt_with_loss(p: &PingStats) -> String {
    let lost = p.transmitted.saturating_sub(p.received);
    if lost == 0 {
        format!("{:.3} ({:.3})", p.median_ms, p.avg_ms)
    } else {
        format!(
            "{:.3} ({:.3}; {lost}/{} lost)",
            p.median_ms, p.avg_ms, p.transmitted
        )
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Args, snmp_field};

    #[test]
    fn a_veth_hold_needs_the_napi_mode() {
        let parse = |args: &[&str]| Args::try_parse_from([&["bench_stock"], args].concat());
        assert!(parse(&["--veth-hold-us", "50"]).is_err());
        let args = parse(&["--veth-napi", "--veth-hold-us", "50"]).unwrap();
        assert!(args.veth_napi);
        assert_eq!(args.veth_hold_us, 50);
        let args = parse(&[]).unwrap();
        assert!(!args.veth_napi);
        assert_eq!(args.veth_hold_us, 0);
    }

    const SNMP: &str = "\
Ip: Forwarding DefaultTTL
Ip: 1 64
Tcp: RtoAlgorithm ActiveOpens RetransSegs InErrs
Tcp: 1 5 1234 0
Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors
Udp: 900 0 7 880 7 0
UdpLite: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors
UdpLite: 0 0 0 0 0 0
";

    #[test]
    fn snmp_fields_are_read_by_name_from_their_protocol() {
        assert_eq!(snmp_field(SNMP, "Udp:", "RcvbufErrors").unwrap(), 7);
        assert_eq!(snmp_field(SNMP, "Tcp:", "RetransSegs").unwrap(), 1234);
        assert_eq!(snmp_field(SNMP, "UdpLite:", "RcvbufErrors").unwrap(), 0);
        assert!(snmp_field(SNMP, "Udp:", "NoSuchField").is_err());
        assert!(snmp_field(SNMP, "Icmp:", "InMsgs").is_err());
        assert!(snmp_field("Udp: RcvbufErrors\nUdp: x\n", "Udp:", "RcvbufErrors").is_err());
    }
}
