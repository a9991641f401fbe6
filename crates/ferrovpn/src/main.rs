//! `ferrovpn`: OpenVPN-compatible server and client.
//!
//! Command line follows OpenVPN: `ferrovpn --config FILE [--directive args ...]`.
//! Extra: `ferrovpn --genkey secret FILE` (a tls-crypt / tls-auth key). The
//! demo tunnel is `ferrovpn-demo` in the testkit crate (`scripts/demo.sh`).

use std::process::ExitCode;

fn main() -> ExitCode {
    abort_on_panic();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match ferrovpn::cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrovpn: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A panic in any thread ends the whole process (SIGABRT) after the usual
/// message, so the service manager restarts it, instead of one data-plane
/// worker dying alone and black-holing its share of peers (audit M5). A hook
/// rather than `panic = "abort"` in the release profile: the tests still
/// unwind, and release builds compile every crate once, not once per
/// panic strategy.
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}
