//! `ferrovpn`: OpenVPN-compatible server and client.
//!
//! Command line follows OpenVPN: `ferrovpn --config FILE [--directive args ...]`.
//! Extras: `ferrovpn demo` (a complete tunnel between two network namespaces)
//! and `ferrovpn --genkey secret FILE` (a tls-crypt / tls-auth key).

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
