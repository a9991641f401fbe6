//! Fuzz the per-client config parser (`client-config-dir` files, client-connect
//! dynamic config): arbitrary text gives a config and a bounded list of
//! problems, never a panic; applying its push edits must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (cfg, problems) = ferrovpn_config::ClientConfig::parse(text, "ccd/fuzz");
    assert!(problems.len() <= ferrovpn_config::MAX_ERRORS);
    for p in &problems {
        let _ = p.to_string();
    }
    let server = [
        "route-gateway 10.8.0.1".to_string(),
        "topology subnet".to_string(),
        "route 192.168.1.0 255.255.255.0".to_string(),
        "route-ipv6 fd00:1::/64".to_string(),
    ];
    let _ = (cfg.push_list(&server), cfg.ifconfig_blocked());
    for ir in &cfg.iroutes {
        let _ = (ir.masked(), ir.netmask());
    }
    for ir in &cfg.iroutes_ipv6 {
        let _ = ir.masked();
    }
});
