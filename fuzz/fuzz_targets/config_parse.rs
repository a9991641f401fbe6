//! Fuzz the OpenVPN config parser: arbitrary text must produce a `Config` or a
//! `ConfigError`, never a panic. Uses the file-system-free entry point so
//! runs are deterministic (includes and material files are errors there;
//! inline blocks are parsed).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = ferrovpn_config::tokenize(text);
    match ferrovpn_config::parse_str_no_fs(text, "fuzz.conf") {
        Ok(cfg) => {
            // Accessors must not panic either.
            let _ = (cfg.local_port(), cfg.topology(), cfg.data_ciphers());
            let _ = (
                cfg.ping_restart_secs(),
                cfg.server_ip(),
                cfg.tls_auth_direction(),
            );
            for r in &cfg.remotes {
                let _ = cfg.remote_port(r);
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
