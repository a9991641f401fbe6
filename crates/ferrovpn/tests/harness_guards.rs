//! The harness guards clean up after panicking tests: namespaces are
//! deleted, processes (ours and strays inside the namespace) are killed.
//! Needs root and iproute2; fails loudly without.

use std::path::Path;
use std::time::Duration;

use ferrovpn_testkit::{Netns, Proc, TestDir, VethPair, ping, require_root_and_tools, wait_until};

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists() || Path::new("/var/run/netns").join(name).exists()
}

fn pid_alive(pid: u32) -> bool {
    // A zombie still has /proc/PID; count it as dead.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next())
                .is_some_and(|st| st != "Z" && st != "X")
        })
        .unwrap_or(false)
}

#[test]
fn namespaces_and_processes_are_removed_when_a_test_panics() {
    require_root_and_tools(&["ip", "ping", "kill", "sleep"]);
    let dir = TestDir::new("guards").unwrap();
    let log_dir = dir.path().to_path_buf();
    let seen = std::sync::Mutex::new((String::new(), String::new(), 0u32, 0u32));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let a = Netns::unique("guard-a").unwrap();
        let b = Netns::unique("guard-b").unwrap();
        let _veth = VethPair::new(&a, "10.202.0.1/24", &b, "10.202.0.2/24").unwrap();
        ping(&b, "10.202.0.1", 2, Duration::from_secs(5)).unwrap();
        let held = Proc::spawn_in(&a, "held", &log_dir, "sleep", &["60"]).unwrap();
        // A stray nobody holds a guard for: the namespace's Drop must kill it.
        let stray = a.command("sleep", &["61"]).spawn().unwrap();
        assert!(wait_until(
            Duration::from_secs(5),
            Duration::from_millis(20),
            || a.pids().len() >= 2
        ));
        *seen.lock().unwrap() = (
            a.name().to_string(),
            b.name().to_string(),
            held.pid(),
            stray.id(),
        );
        std::mem::forget(stray);
        panic!("deliberate panic to exercise the guards");
    }));
    assert!(result.is_err());
    let (a, b, held, stray) = seen.lock().unwrap().clone();
    assert!(!a.is_empty());
    assert!(!netns_exists(&a), "{a} survived");
    assert!(!netns_exists(&b), "{b} survived");
    assert!(!pid_alive(held), "held process {held} survived");
    assert!(
        wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
            !pid_alive(stray)
        }),
        "stray process {stray} survived"
    );
}

#[test]
fn veth_pair_connects_two_namespaces() {
    require_root_and_tools(&["ip", "ping"]);
    let a = Netns::unique("veth-a").unwrap();
    let b = Netns::unique("veth-b").unwrap();
    let v = VethPair::new(&a, "10.203.0.1/24", &b, "10.203.0.2/24").unwrap();
    let p = ping(&a, &v.addr_b.to_string(), 3, Duration::from_secs(5)).unwrap();
    assert_eq!(p.received, 3, "{p:?}");
    assert!(
        a.exec(&["ip", "-o", "addr"])
            .unwrap()
            .contains("10.203.0.1/24")
    );
    // Nothing routes out of the lab: an address beyond the veth is unreachable.
    assert!(ping(&a, "192.0.2.1", 1, Duration::from_secs(1)).is_err());
}
