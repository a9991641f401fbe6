//! `ferrovpn`: the binary's pieces. `cli` reads OpenVPN's command line and
//! `settings` turns a parsed config into control-plane settings. The demo,
//! the benchmark and the integration tests' lab live in `ferrovpn-testkit`.

mod admin;
pub mod cli;
mod daemon;
pub mod keys;
mod logging;
mod pki;
mod privileges;
pub mod settings;
