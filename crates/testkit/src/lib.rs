//! Test and benchmark harness: network namespaces joined by veth pairs,
//! process guards with log capture, ping / iperf3 drivers and OpenVPN
//! config writers. Used by every integration test, the demo (`ferrovpn-demo`) and the
//! benchmark.
//!
//! Everything here shells out to `ip`, `ping`, `iperf3` and `openvpn`
//! (no `unsafe`); only [`Netns::run`] enters a namespace itself, on a
//! thread of its own. Every guard cleans up in
//! `Drop`, also when a test panics, and every wait has a deadline.
//!
//! `mgmt` is a management-interface client for the tests; `raw_peer` speaks
//! the control channel by hand (hostile and half-open handshakes).
//! `resolved` runs a real systemd-resolved on a private bus without
//! installing it.
//!
//! `proxy` starts tinyproxy and dante for the tests that reach a server
//! only through a proxy.
//!
//! `bench` holds what the benchmark examples share (CPU accounting, load).
//!
//! `lab` is the shared fixture of the interop tests (namespaces, PKI,
//! ferrovpn or stock OpenVPN in either role); `pki` is the throwaway certificate authority the tests and the demo use.
//!
//! Traffic only ever flows between namespaces created here and loopback.

pub mod bench;
mod conf;
mod env;
pub mod lab;
pub mod mgmt;
mod net;
mod netns;
pub mod pki;
mod process;
pub mod proxy;
pub mod raw_peer;
pub mod resolved;
mod rng;

pub use conf::{
    Cipher, ClientConf, Material, ServerConf, Transport, Wrap, openvpn_client_conf,
    openvpn_server_conf, write_static_key,
};
pub use env::{
    TestDir, compile_plugin, find_tool, require_root_and_tools, sh_script, unique_name,
    wait_for_file_text, wait_until,
};
pub use lab::{Implementation, Lab};
pub use net::{
    Direction, Gbps, Iperf3Report, Iperf3Server, PingStats, iperf3, iperf3_all_at_while,
    iperf3_all_while, iperf3_report, ping, ping_all, ping_sized, wait_for_tcp_listen,
};
pub use netns::{Netns, NetnsResolvConf, VethPair};
pub use process::{Proc, cpu_seconds, open_fds, rss_kib};
pub use rng::Rng;
