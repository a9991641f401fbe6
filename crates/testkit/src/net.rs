//! Traffic drivers: ping and iperf3 between namespaces.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::env::{TestDir, wait_until};
use crate::netns::{Netns, run_with_timeout};
use crate::process::Proc;

/// Gigabits per second.
pub type Gbps = f64;

/// Result of [`ping`].
#[derive(Debug, Clone, PartialEq)]
pub struct PingStats {
    /// Echo requests sent.
    pub transmitted: u32,
    /// Echo replies received.
    pub received: u32,
    /// Average round-trip time in milliseconds.
    pub avg_ms: f64,
    /// Median round-trip time in milliseconds, over the replies: one late
    /// wake-up on a busy machine moves the average of a few pings, not this.
    pub median_ms: f64,
}

/// `count` pings of `size` bytes from `ns` to `addr`, without DF (`-M
/// dont`: a router may fragment them), with payload `pattern` (ping's `-p`
/// hex bytes) when given; every one must come back (within 10 s). The
/// error holds ping's output.
pub fn ping_sized(
    ns: &Netns,
    addr: &str,
    count: u32,
    size: u32,
    pattern: Option<&str>,
) -> std::result::Result<(), String> {
    let options = match pattern {
        Some(p) => vec!["-p", p],
        None => Vec::new(),
    };
    ping_all(ns, addr, count, size, &options, Duration::from_secs(10))
}

/// `count` pings of `size` bytes from `ns` to `addr` without DF (`-M
/// dont`), with ping's `options` added (`-p PATTERN`, `-Q TOS`, ...);
/// every one must come back within `deadline`. The error holds ping's
/// output.
pub fn ping_all(
    ns: &Netns,
    addr: &str,
    count: u32,
    size: u32,
    options: &[&str],
    deadline: Duration,
) -> std::result::Result<(), String> {
    let (size, count) = (size.to_string(), count.to_string());
    let w = deadline.as_secs().max(1).to_string();
    let mut args = vec![
        "-n", "-q", "-c", &count, "-i", "0.2", "-w", &w, "-s", &size, "-M", "dont",
    ];
    args.extend(options);
    args.push(addr);
    let out = ns
        .command("ping", &args)
        .output()
        .map_err(|e| format!("ping: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if text.contains(&format!("{count} packets transmitted, {count} received")) {
        Ok(())
    } else {
        Err(format!(
            "ping -s {size} {} {addr}: {text}",
            options.join(" ")
        ))
    }
}

/// `ping -c COUNT -i 0.2 ADDR` from `ns`, giving up after `deadline`.
/// Errors when no reply came back.
pub fn ping(ns: &Netns, addr: &str, count: u32, deadline: Duration) -> Result<PingStats> {
    let w = deadline.as_secs().max(1).to_string();
    let count_s = count.max(1).to_string();
    let cmd = ns.command("ping", &["-n", "-c", &count_s, "-i", "0.2", "-w", &w, addr]);
    let out = run_with_timeout(cmd, deadline + Duration::from_secs(5))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stats = parse_ping(&text).with_context(|| {
        format!(
            "[{}] ping {addr}: {}{}",
            ns.name(),
            text,
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok(stats)
}

fn parse_ping(text: &str) -> Result<PingStats> {
    let line = text
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .context("no summary line")?;
    let mut nums = line.split(',').map(|p| {
        p.split_whitespace()
            .next()
            .and_then(|n| n.parse::<u32>().ok())
    });
    let transmitted = nums.next().flatten().context("transmitted")?;
    let received = nums.next().flatten().context("received")?;
    if received == 0 {
        bail!("no replies ({transmitted} sent)");
    }
    let rtt = text
        .lines()
        .find(|l| l.starts_with("rtt") || l.starts_with("round-trip"))
        .context("no rtt line")?;
    let vals = rtt.split('=').nth(1).context("rtt values")?;
    let avg_ms: f64 = vals
        .trim()
        .split('/')
        .nth(1)
        .context("avg")?
        .trim()
        .parse()
        .context("avg")?;
    // One `time=0.412 ms` per reply (not in `-q` output; then the average).
    let mut times: Vec<f64> = text
        .lines()
        .filter_map(|l| l.split("time=").nth(1))
        .filter_map(|t| t.split_whitespace().next()?.parse().ok())
        .collect();
    times.sort_by(f64::total_cmp);
    let median_ms = match times.len() {
        0 => avg_ms,
        n if n % 2 == 1 => times[n / 2],
        n => (times[n / 2 - 1] + times[n / 2]) / 2.0,
    };
    Ok(PingStats {
        transmitted,
        received,
        avg_ms,
        median_ms,
    })
}

/// Wait until something listens on TCP `port` in `ns` (`ss -ltn`).
pub fn wait_for_tcp_listen(ns: &Netns, port: u16, timeout: Duration) -> bool {
    let filter = format!("sport = :{port}");
    wait_until(timeout, Duration::from_millis(50), || {
        ns.exec(&["ss", "-H", "-l", "-t", "-n", &filter])
            .map(|s| !s.trim().is_empty())
            .unwrap_or(false)
    })
}

/// A one-shot iperf3 server (`iperf3 -s -1`) in a namespace, listening
/// when `start` returns; killed on drop.
#[derive(Debug)]
pub struct Iperf3Server {
    proc_: Proc,
    port: u16,
    // Last field: dropped after the process (its log lives here).
    _dir: TestDir,
}

impl Iperf3Server {
    /// Start `iperf3 -s -1 -p PORT` in `ns` and wait until it listens.
    pub fn start(ns: &Netns, port: u16) -> Result<Iperf3Server> {
        let dir = TestDir::new("iperf3")?;
        let port_s = port.to_string();
        let mut p = Proc::spawn_in(
            ns,
            "iperf3-server",
            dir.path(),
            "iperf3",
            &["-s", "-1", "-p", &port_s],
        )?;
        if !wait_for_tcp_listen(ns, port, Duration::from_secs(10)) {
            let tail = p.log_tail(20);
            p.stop(Duration::from_secs(1));
            bail!(
                "iperf3 server in {} did not listen on {port}: {tail}",
                ns.name()
            );
        }
        Ok(Iperf3Server {
            proc_: p,
            port,
            _dir: dir,
        })
    }

    /// Listening port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server process.
    pub fn process(&self) -> &Proc {
        &self.proc_
    }
}

/// Parsed `iperf3 -J` client result (TCP).
#[derive(Debug, Clone, PartialEq)]
pub struct Iperf3Report {
    /// Receiver-side throughput.
    pub gbps: Gbps,
    /// Bytes received by the server.
    pub bytes: u64,
    /// TCP retransmissions seen by the sender.
    pub retransmits: u64,
    /// Bytes carried in each reporting interval (1 s, iperf3's default), in
    /// order: a stall shows as a zero here even when the total looks fine.
    pub intervals: Vec<u64>,
}

/// Default iperf3 port.
const IPERF_PORT: u16 = 5201;

/// TCP throughput from `client_ns` to an iperf3 server started in
/// `server_ns` listening on `server_addr` (a one-shot server is started
/// and waited on first). `seconds` of traffic over `streams` parallel
/// streams.
pub fn iperf3(
    client_ns: &Netns,
    server_ns: &Netns,
    server_addr: &str,
    seconds: u32,
    streams: u32,
) -> Result<Gbps> {
    Ok(iperf3_report(client_ns, server_ns, server_addr, seconds, streams)?.gbps)
}

/// [`iperf3`] with bytes and retransmits.
pub fn iperf3_report(
    client_ns: &Netns,
    server_ns: &Netns,
    server_addr: &str,
    seconds: u32,
    streams: u32,
) -> Result<Iperf3Report> {
    let server = Iperf3Server::start(server_ns, IPERF_PORT)?;
    run_iperf3_client(
        client_ns,
        &server,
        server_addr,
        seconds,
        streams,
        Direction::Upload,
        None,
    )
}

/// Which way an iperf3 test moves its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the iperf3 client to the server.
    Upload,
    /// From the server to the client (`iperf3 -R`).
    Download,
}

impl Direction {
    /// `up` or `down`.
    pub fn name(self) -> &'static str {
        match self {
            Direction::Upload => "up",
            Direction::Download => "down",
        }
    }
}

/// One-stream TCP iperf3 from every namespace in `clients` at once, each to
/// its own one-shot server in `server_ns` (ports 5201, 5202, ...) at
/// `server_addr`, for `seconds`, moving bytes `direction`. `during` runs on
/// this thread while the transfers run (a loaded ping, a profiler); its result
/// comes back with one report per client, in order.
pub fn iperf3_all_while<T>(
    clients: &[&Netns],
    server_ns: &Netns,
    server_addr: &str,
    seconds: u32,
    direction: Direction,
    during: impl FnOnce() -> T,
) -> Result<(Vec<Iperf3Report>, T)> {
    iperf3_all_at_while(
        clients,
        server_ns,
        server_addr,
        seconds,
        direction,
        None,
        during,
    )
}

/// [`iperf3_all_while`] with each client's stream capped at
/// `bits_per_second` (`iperf3 -b`) when given: a second system measured at
/// the first one's rate sees the same offered load.
pub fn iperf3_all_at_while<T>(
    clients: &[&Netns],
    server_ns: &Netns,
    server_addr: &str,
    seconds: u32,
    direction: Direction,
    bits_per_second: Option<u64>,
    during: impl FnOnce() -> T,
) -> Result<(Vec<Iperf3Report>, T)> {
    let servers = (0..clients.len())
        .map(|i| {
            let port = u16::try_from(i)
                .ok()
                .and_then(|i| IPERF_PORT.checked_add(i))
                .context("too many iperf3 clients for the port range")?;
            Iperf3Server::start(server_ns, port)
        })
        .collect::<Result<Vec<_>>>()?;
    std::thread::scope(|scope| {
        let runs: Vec<_> = clients
            .iter()
            .zip(&servers)
            .map(|(ns, server)| {
                scope.spawn(move || {
                    run_iperf3_client(
                        ns,
                        server,
                        server_addr,
                        seconds,
                        1,
                        direction,
                        bits_per_second,
                    )
                })
            })
            .collect();
        let extra = during();
        let reports = runs
            .into_iter()
            .map(|r| r.join().expect("an iperf3 client thread panicked"))
            .collect::<Result<Vec<_>>>()?;
        Ok((reports, extra))
    })
}

/// Run an iperf3 client from `client_ns` against `server` and parse its
/// report.
fn run_iperf3_client(
    client_ns: &Netns,
    server: &Iperf3Server,
    server_addr: &str,
    seconds: u32,
    streams: u32,
    direction: Direction,
    bits_per_second: Option<u64>,
) -> Result<Iperf3Report> {
    let t = seconds.max(1).to_string();
    let p = streams.max(1).to_string();
    let port = server.port().to_string();
    let mut args = vec![
        "-J",
        "-c",
        server_addr,
        "-p",
        &port,
        "-t",
        &t,
        "-P",
        &p,
        "--connect-timeout",
        "5000",
    ];
    if direction == Direction::Download {
        args.push("-R");
    }
    let rate = bits_per_second.map(|b| b.to_string());
    if let Some(rate) = &rate {
        args.extend(["-b", rate]);
    }
    let cmd = client_ns.command("iperf3", &args);
    let out = run_with_timeout(cmd, Duration::from_secs(u64::from(seconds) + 30))?;
    let json = String::from_utf8_lossy(&out.stdout);
    parse_iperf3_json(&json).with_context(|| {
        format!(
            "iperf3 {} -> {server_addr}:{port} ({}); server log:\n{}\nstderr: {}",
            client_ns.name(),
            out.status,
            server.process().log_tail(20),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Parse the client's `iperf3 -J` output.
pub(crate) fn parse_iperf3_json(json: &str) -> Result<Iperf3Report> {
    let v: serde_json::Value =
        serde_json::from_str(json).context("iperf3 -J output is not JSON")?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        bail!("iperf3 error: {e}");
    }
    let end = v.get("end").context("no `end` in iperf3 JSON")?;
    let recv = end
        .get("sum_received")
        .context("no `end.sum_received` (not a TCP test?)")?;
    let bps = recv
        .get("bits_per_second")
        .and_then(|b| b.as_f64())
        .context("sum_received.bits_per_second")?;
    let bytes = recv.get("bytes").and_then(|b| b.as_u64()).unwrap_or(0);
    let retransmits = end
        .get("sum_sent")
        .and_then(|s| s.get("retransmits"))
        .and_then(|r| r.as_u64())
        .unwrap_or(0);
    let intervals = v
        .get("intervals")
        .and_then(|i| i.as_array())
        .context("no `intervals` in iperf3 JSON")?
        .iter()
        .map(|i| i["sum"]["bytes"].as_u64().unwrap_or(0))
        .collect();
    Ok(Iperf3Report {
        gbps: bps / 1e9,
        bytes,
        retransmits,
        intervals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ping_summary() {
        let t = "PING 10.8.0.1 (10.8.0.1) 56(84) bytes of data.\n\n--- 10.8.0.1 ping statistics ---\n5 packets transmitted, 4 received, 20% packet loss, time 805ms\nrtt min/avg/max/mdev = 0.412/0.533/0.701/0.101 ms\n";
        let s = parse_ping(t).unwrap();
        assert_eq!((s.transmitted, s.received), (5, 4));
        assert!((s.avg_ms - 0.533).abs() < 1e-9);
        assert!(
            (s.median_ms - 0.533).abs() < 1e-9,
            "no reply lines: the average"
        );
        let replies = "64 bytes from 10.8.0.1: icmp_seq=1 ttl=64 time=0.701 ms\n\
                       64 bytes from 10.8.0.1: icmp_seq=2 ttl=64 time=0.412 ms\n\
                       64 bytes from 10.8.0.1: icmp_seq=3 ttl=64 time=9.50 ms\n\
                       64 bytes from 10.8.0.1: icmp_seq=4 ttl=64 time=0.500 ms\n";
        let s = parse_ping(&format!("{replies}{t}")).unwrap();
        assert!((s.median_ms - 0.6005).abs() < 1e-9, "{s:?}");
        let t0 = "--- x ping statistics ---\n3 packets transmitted, 0 received, 100% packet loss, time 2040ms\n";
        assert!(parse_ping(t0).is_err());
    }

    #[test]
    fn parses_iperf3_json() {
        let j = r#"{"start":{},"intervals":[],"end":{"sum_sent":{"bytes":2000000000,"bits_per_second":8.1e9,"retransmits":7},"sum_received":{"bytes":1999000000,"bits_per_second":8.0e9}}}"#;
        let r = parse_iperf3_json(j).unwrap();
        assert!((r.gbps - 8.0).abs() < 1e-9);
        assert_eq!(r.bytes, 1_999_000_000);
        assert_eq!(r.retransmits, 7);
        let e = parse_iperf3_json(r#"{"start":{},"end":{},"error":"unable to connect to server"}"#)
            .unwrap_err();
        assert!(e.to_string().contains("unable to connect"));
    }
}
