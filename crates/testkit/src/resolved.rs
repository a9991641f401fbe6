//! A real systemd-resolved for tests, without installing it.
//!
//! Installing Debian's `systemd-resolved` package rewrites the host's
//! `/etc/resolv.conf` (its postinst), so it is never installed: the package
//! of the installed systemd's version is downloaded (`apt-get download`)
//! and unpacked (`dpkg -x`) into a scratch directory, and its daemon runs
//! by hand on a private `dbus-daemon` (a system-type bus on a socket in the
//! scratch directory, every user allowed), inside a private mount namespace
//! of a test network namespace where:
//!
//! - `/etc` is an overlay whose upper layer is a tmpfs: `/etc/resolv.conf`
//!   becomes the symlink into `/run/systemd/resolve` that a system using
//!   resolved has, and the `systemd-resolve` user the daemon drops to is
//!   added when the host lacks it; the host's `/etc` is never written;
//! - `/run/systemd` (or `/run` when the host has no `/run/systemd`) is a
//!   fresh tmpfs holding the daemon's runtime directory.
//!
//! The program under test runs last in that namespace
//! ([`PrivateResolved::spawn`]) with `DBUS_SYSTEM_BUS_ADDRESS` pointing at
//! the private bus (zbus, sd-bus and busctl all honour it), so it finds
//! resolved exactly as on a host where resolved manages DNS.
//! [`PrivateResolved::resolvectl`] reads the daemon's state back over the
//! same bus. The daemons are killed on drop (and with their network
//! namespace in any case).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::env::{find_tool, require_root_and_tools, wait_until};
use crate::netns::{Netns, run_with_timeout};
use crate::process::Proc;

/// Tools the private resolved needs besides the lab's.
const TOOLS: &[&str] = &[
    "apt-get",
    "dpkg",
    "dpkg-query",
    "dbus-daemon",
    "busctl",
    "unshare",
    "mount",
    "getent",
    "bash",
];

/// The bus configuration: a system-type bus on `SOCKET`, every user may
/// own any name and talk to anyone (the test is the only client).
const BUS_CONF: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=SOCKET</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#;

/// Sets up the mount namespace, starts the bus and resolved, waits until
/// resolved holds its bus name, then execs the program under test.
/// Arguments: DIR (scratch), ROOT (unpacked package), PROGRAM ARGS...
const WRAPPER: &str = r#"#!/bin/bash
set -euo pipefail
D=$1; R=$2; shift 2
fail() { echo "private systemd-resolved: $*" >&2; exit 1; }
mkdir -p "$D/ovl"
mount -t tmpfs tmpfs "$D/ovl"
mkdir "$D/ovl/upper" "$D/ovl/work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$D/ovl/upper,workdir=$D/ovl/work" /etc
if ! getent passwd systemd-resolve >/dev/null; then
    uid=
    for u in $(seq 64990 -1 64900); do
        if ! getent passwd "$u" >/dev/null && ! getent group "$u" >/dev/null; then uid=$u; break; fi
    done
    [[ -n $uid ]] || fail "no free uid for systemd-resolve"
    echo "systemd-resolve:x:$uid:$uid:test resolver:/:/usr/sbin/nologin" >> /etc/passwd
    echo "systemd-resolve:x:$uid:" >> /etc/group
fi
if [[ -d /run/systemd ]]; then
    mount -t tmpfs -o mode=0755 tmpfs /run/systemd
else
    mount -t tmpfs -o mode=0755 tmpfs /run
    mkdir /run/systemd
fi
mkdir /run/systemd/resolve
chown systemd-resolve:systemd-resolve /run/systemd/resolve
rm -f /etc/resolv.conf
ln -s /run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
export DBUS_SYSTEM_BUS_ADDRESS="unix:path=$D/bus.sock"
dbus-daemon --config-file="$D/bus.conf" --nofork --nopidfile >"$D/dbus-daemon.log" 2>&1 &
echo $! >> "$D/pids"
for _ in $(seq 100); do [[ -S $D/bus.sock ]] && break; sleep 0.05; done
[[ -S $D/bus.sock ]] || fail "dbus-daemon did not listen: $(cat "$D/dbus-daemon.log")"
"$R/lib/systemd/systemd-resolved" >"$D/systemd-resolved.log" 2>&1 &
echo $! >> "$D/pids"
owned=
for _ in $(seq 200); do
    if busctl --address="$DBUS_SYSTEM_BUS_ADDRESS" call org.freedesktop.DBus /org/freedesktop/DBus \
        org.freedesktop.DBus NameHasOwner s org.freedesktop.resolve1 2>/dev/null | grep -q true \
        && [[ -e /run/systemd/resolve/stub-resolv.conf ]]; then
        owned=1; break
    fi
    sleep 0.05
done
[[ -n $owned ]] || fail "systemd-resolved did not come up: $(cat "$D/systemd-resolved.log")"
echo "private systemd-resolved ready"
exec "$@"
"#;

/// An unpacked systemd-resolved with its private bus; see the module docs.
#[derive(Debug)]
pub struct PrivateResolved {
    dir: PathBuf,
    root: PathBuf,
}

impl PrivateResolved {
    /// Fail loudly unless root with the tools; download and unpack the
    /// `systemd-resolved` package matching the installed systemd into
    /// `dir` (created), and write the bus configuration and the wrapper.
    pub fn new(dir: &Path) -> PrivateResolved {
        require_root_and_tools(TOOLS);
        std::fs::create_dir_all(dir).unwrap();
        let out = run_with_timeout(
            {
                let mut c = Command::new("dpkg-query");
                c.args(["-W", "-f=${Version}", "systemd"]);
                c
            },
            Duration::from_secs(30),
        )
        .unwrap();
        let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            out.status.success() && !version.is_empty(),
            "systemd is not installed (dpkg-query: {})",
            String::from_utf8_lossy(&out.stderr)
        );
        // The download runs as root in a directory `_apt` may not enter;
        // apt warns about that and goes on.
        let mut download = Command::new("apt-get");
        download
            .args(["download", &format!("systemd-resolved={version}")])
            .current_dir(dir);
        let out = run_with_timeout(download, Duration::from_secs(120)).unwrap();
        let deb = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension() == Some(OsStr::new("deb")));
        let Some(deb) = deb else {
            panic!(
                "apt-get download systemd-resolved={version} failed (the test needs the package, never installed): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let root = dir.join("root");
        let st = Command::new("dpkg")
            .arg("-x")
            .arg(&deb)
            .arg(&root)
            .status()
            .unwrap();
        assert!(st.success(), "dpkg -x {}", deb.display());
        assert!(
            root.join("lib/systemd/systemd-resolved").exists(),
            "no lib/systemd/systemd-resolved in {}",
            deb.display()
        );
        let socket = dir.join("bus.sock");
        std::fs::write(
            dir.join("bus.conf"),
            BUS_CONF.replace("SOCKET", socket.to_str().unwrap()),
        )
        .unwrap();
        std::fs::write(dir.join("wrapper.sh"), WRAPPER).unwrap();
        PrivateResolved {
            dir: dir.to_owned(),
            root,
        }
    }

    /// `DBUS_SYSTEM_BUS_ADDRESS` of the private bus.
    pub fn bus_address(&self) -> String {
        format!("unix:path={}", self.dir.join("bus.sock").display())
    }

    /// Run `prog args` in `ns` (output to `log_dir/<name>.log`) in a
    /// private mount namespace where resolved runs and manages
    /// /etc/resolv.conf; returns once resolved is up (the wrapper then
    /// execs `prog`, so the process's pid is `prog`'s).
    pub fn spawn<S: AsRef<OsStr>>(
        &self,
        ns: &Netns,
        name: &str,
        log_dir: &Path,
        prog: &str,
        args: &[S],
    ) -> Proc {
        let prog = find_tool(prog).unwrap_or_else(|| PathBuf::from(prog));
        let mut all: Vec<&OsStr> = vec![
            OsStr::new("-m"),
            OsStr::new("--propagation"),
            OsStr::new("private"),
            OsStr::new("bash"),
        ];
        let wrapper = self.dir.join("wrapper.sh");
        all.push(wrapper.as_os_str());
        all.push(self.dir.as_os_str());
        all.push(self.root.as_os_str());
        all.push(prog.as_os_str());
        all.extend(args.iter().map(AsRef::as_ref));
        let mut cmd = ns.command("unshare", &all);
        cmd.env("DBUS_SYSTEM_BUS_ADDRESS", self.bus_address());
        let mut p = Proc::spawn(name, log_dir, cmd).unwrap();
        if let Err(e) =
            p.wait_for_log_line("private systemd-resolved ready", Duration::from_secs(30))
        {
            panic!(
                "{e:#}\n{}\n--- systemd-resolved ---\n{}",
                p.log_tail(30),
                self.log()
            );
        }
        p
    }

    /// `resolvectl ARGS` (the package's own) in `ns`, over the private
    /// bus; its standard output.
    pub fn resolvectl(&self, ns: &Netns, args: &[&str]) -> String {
        let ctl = self.root.join("usr/bin/resolvectl");
        let mut all = vec![ctl.to_str().unwrap()];
        all.extend(args);
        let mut cmd = ns.command(all[0], &all[1..]);
        cmd.env("DBUS_SYSTEM_BUS_ADDRESS", self.bus_address());
        let out = run_with_timeout(cmd, Duration::from_secs(10)).unwrap();
        assert!(
            out.status.success(),
            "resolvectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// systemd-resolved's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("systemd-resolved.log")).unwrap_or_default()
    }
}

impl Drop for PrivateResolved {
    fn drop(&mut self) {
        let pids = std::fs::read_to_string(self.dir.join("pids")).unwrap_or_default();
        let pids: Vec<&str> = pids.split_whitespace().collect();
        if pids.is_empty() {
            return;
        }
        let mut kill = Command::new("kill");
        kill.arg("-TERM").args(&pids);
        let _ = run_with_timeout(kill, Duration::from_secs(5));
        let gone = || {
            pids.iter()
                .all(|p| !Path::new("/proc").join(p).exists() || is_zombie(p))
        };
        if !wait_until(Duration::from_secs(3), Duration::from_millis(20), gone) {
            let mut kill = Command::new("kill");
            kill.arg("-KILL").args(&pids);
            let _ = run_with_timeout(kill, Duration::from_secs(5));
        }
    }
}

fn is_zombie(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
    })
}
