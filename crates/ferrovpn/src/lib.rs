//! `ferrovpn`: the binary's pieces. `cli` reads OpenVPN's command line,
//! `settings` turns a parsed config into control-plane settings, `demo`
//! runs a complete tunnel between two network namespaces. `pki` and
//! `testing` are the throwaway PKI and network-namespace harness used by the
//! demo, the integration tests and the benchmark.

pub mod cli;
mod demo;
pub mod pki;
mod privileges;
pub mod settings;
pub mod testing;
