//! Network namespace and veth guards (via `ip`, removed on drop).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::env::{find_tool, next_seq, unique_name, wait_until};

/// Run a command to completion with a deadline, capturing its output.
/// Killed (and reported as an error) when it outlives `timeout`.
pub(crate) fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<Output> {
    use std::io::Read;
    use std::process::Stdio;
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {desc}"))?;
    let mut so = child.stdout.take();
    let mut se = child.stderr.take();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = so.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        if let Some(s) = se.as_mut() {
            let _ = s.read_to_end(&mut v);
        }
        v
    });
    let mut status = None;
    wait_until(timeout, Duration::from_millis(5), || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    let status = match status {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let _ = t_out.join();
            let _ = t_err.join();
            bail!("{desc} did not finish within {timeout:?}; killed");
        }
    };
    let stdout = t_out.join().unwrap_or_default();
    let stderr = t_err.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

fn ip_bin() -> String {
    find_tool("ip")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|| "ip".into())
}

/// Run `ip ARGS`, failing with its stderr.
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(ip_bin());
    cmd.args(args);
    let out = run_with_timeout(cmd, Duration::from_secs(20))?;
    if !out.status.success() {
        bail!(
            "ip {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A network namespace, deleted on drop together with every process still
/// running in it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// `ip netns add NAME` and bring `lo` up. Use a unique name
    /// ([`Netns::unique`]) so parallel tests never collide.
    pub fn create(name: &str) -> Result<Netns> {
        ip(&["netns", "add", name]).context("creating a network namespace (root needed)")?;
        let ns = Netns {
            name: name.to_string(),
        };
        ip(&["-n", name, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Create a namespace named `fvpn-<pid>-<n>-<tag>`.
    pub fn unique(tag: &str) -> Result<Netns> {
        Netns::create(&unique_name(tag))
    }

    /// The namespace name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run `f` on a thread that has entered the namespace: sockets it
    /// opens live there. A panic in `f` comes back to the caller.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        use std::os::fd::AsFd;
        let path = PathBuf::from("/run/netns").join(&self.name);
        std::thread::scope(|s| {
            s.spawn(move || {
                let ns = std::fs::File::open(&path)
                    .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
                rustix::thread::move_into_link_name_space(
                    ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Network),
                )
                .unwrap_or_else(|e| panic!("entering {}: {e}", path.display()));
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// A `Command` running `prog args` inside the namespace (`ip netns exec`).
    /// `ip netns exec` execs the program, so the child's pid is the program's.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, prog: &str, args: &[S]) -> Command {
        let prog = find_tool(prog)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|| prog.to_string());
        let mut cmd = Command::new(ip_bin());
        cmd.args(["netns", "exec", &self.name, &prog]);
        cmd.args(args);
        cmd
    }

    /// `ip addr add CIDR dev DEV` in this namespace.
    pub fn add_address(&self, cidr: &str, dev: &str) -> Result<()> {
        self.exec(&["ip", "addr", "add", cidr, "dev", dev])
            .map(|_| ())
    }

    /// IPv6 on in this namespace (Debian's test hosts may default it off)
    /// and on its interface `ifname`, with `addr/64` there, without
    /// duplicate address detection so that it works at once.
    pub fn enable_ipv6_on(&self, ifname: &str, addr: &str) -> Result<()> {
        for key in [
            "net.ipv6.conf.all.disable_ipv6=0".to_string(),
            "net.ipv6.conf.default.disable_ipv6=0".to_string(),
            format!("net.ipv6.conf.{ifname}.disable_ipv6=0"),
        ] {
            self.exec(&["sysctl", "-q", "-w", &key])?;
        }
        let cidr = format!("{addr}/64");
        self.exec(&["ip", "addr", "add", &cidr, "dev", ifname, "nodad"])
            .map(|_| ())
    }

    /// Run `cmd[0] cmd[1..]` in the namespace to completion (at most 30 s);
    /// error with its output unless it exits 0. Returns stdout.
    pub fn exec(&self, cmd: &[&str]) -> Result<String> {
        let Some((prog, args)) = cmd.split_first() else {
            bail!("Netns::exec: empty command");
        };
        let out = run_with_timeout(self.command(prog, args), Duration::from_secs(30))?;
        if !out.status.success() {
            bail!(
                "[{}] {} failed ({}): {}{}",
                self.name,
                cmd.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The routes through `dev` of the address `family` (`-4`, `-6`) as
    /// `ip route show` prints them, link-local and multicast left out and
    /// without the fields that differ between ways of adding the same route
    /// (`proto`, `pref`), sorted: for comparing what two daemons installed.
    pub fn routes(&self, family: &str, dev: &str) -> Result<Vec<String>> {
        let text = self.exec(&["ip", family, "route", "show", "dev", dev])?;
        let mut out: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with("fe80:") && !l.starts_with("multicast"))
            .map(|l| {
                let mut words = Vec::new();
                let mut it = l.split_whitespace();
                while let Some(w) = it.next() {
                    if w == "proto" || w == "pref" {
                        it.next();
                    } else {
                        words.push(w);
                    }
                }
                words.join(" ")
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Pids of processes in the namespace.
    pub fn pids(&self) -> Vec<u32> {
        ip(&["netns", "pids", &self.name])
            .map(|s| {
                s.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Bounded: a few rounds of SIGKILL to whatever is left in the namespace.
        for _ in 0..5 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            let mut kill = Command::new("kill");
            kill.arg("-KILL").args(pids.iter().map(|p| p.to_string()));
            let _ = run_with_timeout(kill, Duration::from_secs(5));
            wait_until(Duration::from_secs(2), Duration::from_millis(20), || {
                self.pids().is_empty()
            });
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("[testing] could not delete netns {}: {e:#}", self.name);
        }
    }
}

/// A veth pair between two namespaces, addressed and up. Deleted on drop
/// (and in any case with either namespace).
#[derive(Debug)]
pub struct VethPair {
    /// Namespace of side A.
    pub ns_a: String,
    /// Interface name on side A.
    pub if_a: String,
    /// Address on side A.
    pub addr_a: Ipv4Addr,
    /// Namespace of side B.
    pub ns_b: String,
    /// Interface name on side B.
    pub if_b: String,
    /// Address on side B.
    pub addr_b: Ipv4Addr,
}

fn parse_cidr(cidr: &str) -> Result<Ipv4Addr> {
    let (a, p) = cidr
        .split_once('/')
        .with_context(|| format!("{cidr}: expected A.B.C.D/LEN"))?;
    let _: u8 = p
        .parse()
        .with_context(|| format!("{cidr}: prefix length"))?;
    a.parse().with_context(|| format!("{cidr}: address"))
}

impl VethPair {
    /// Link `a` and `b` with a veth pair; `cidr_a` (e.g. `10.77.1.1/24`) on
    /// the A end and `cidr_b` on the B end; both ends up.
    pub fn new(a: &Netns, cidr_a: &str, b: &Netns, cidr_b: &str) -> Result<VethPair> {
        let addr_a = parse_cidr(cidr_a)?;
        let addr_b = parse_cidr(cidr_b)?;
        // Interface names are at most 15 bytes: "fv" + pid in hex (<= 6) + seq + a/b.
        let tag = format!("fv{:x}x{}", std::process::id(), next_seq());
        let if_a = format!("{tag}a");
        let if_b = format!("{tag}b");
        if if_a.len() > 15 {
            bail!("interface name {if_a} too long");
        }
        ip(&[
            "link",
            "add",
            &if_a,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &if_b,
            "netns",
            b.name(),
        ])?;
        let pair = VethPair {
            ns_a: a.name().to_string(),
            if_a,
            addr_a,
            ns_b: b.name().to_string(),
            if_b,
            addr_b,
        };
        ip(&["-n", a.name(), "addr", "add", cidr_a, "dev", &pair.if_a])?;
        ip(&["-n", b.name(), "addr", "add", cidr_b, "dev", &pair.if_b])?;
        ip(&["-n", a.name(), "link", "set", &pair.if_a, "up"])?;
        ip(&["-n", b.name(), "link", "set", &pair.if_b, "up"])?;
        ip(&["-n", a.name(), "link", "set", "lo", "up"])?;
        ip(&["-n", b.name(), "link", "set", "lo", "up"])?;
        Ok(pair)
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Fails harmlessly when the namespace is already gone.
        let _ = ip(&["-n", &self.ns_a, "link", "del", &self.if_a]);
    }
}

/// A namespace's own `/etc/resolv.conf`: `ip netns exec` bind-mounts
/// `/etc/netns/NAME/resolv.conf` over `/etc/resolv.conf`, so what a VPN
/// client writes there never reaches the host's file. Removed on drop.
#[derive(Debug)]
pub struct NetnsResolvConf {
    dir: PathBuf,
}

impl NetnsResolvConf {
    /// Create `/etc/netns/NAME/resolv.conf` for `ns` holding `text`.
    pub fn new(ns: &Netns, text: &str) -> Result<NetnsResolvConf> {
        let dir = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let resolv = NetnsResolvConf { dir };
        std::fs::write(resolv.path(), text)
            .with_context(|| format!("writing {}", resolv.path().display()))?;
        Ok(resolv)
    }

    /// The file's path on the host.
    pub fn path(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
