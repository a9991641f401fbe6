//! `ferrovpn`: OpenVPN-compatible server and client.
//!
//! Command line follows OpenVPN: `ferrovpn --config FILE [--directive args ...]`.
//! Extra: `ferrovpn --genkey secret FILE` (a tls-crypt / tls-auth key). The
//! demo tunnel is `ferrovpn-demo` in the testkit crate (`scripts/demo.sh`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match ferrovpn::cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrovpn: {e:#}");
            ExitCode::FAILURE
        }
    }
}
