//! Fuzz the `ifconfig-pool-persist` file reader: any text gives entries (or
//! skips lines), never a panic, and what it writes back reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (entries, _) = ferrovpn_control::server::pool_persist::parse(text);
    let written = ferrovpn_control::server::pool_persist::render(&entries);
    let (again, skipped) = ferrovpn_control::server::pool_persist::parse(&written);
    assert_eq!(skipped, 0, "{written:?}");
    // Names the format cannot hold are left out when writing, nothing else,
    // and the order (which decides between two lines for one address) stays.
    let keepable: Vec<_> = entries
        .iter()
        .filter(|e| !e.common_name.contains([',', '\n', '\r']))
        .cloned()
        .collect();
    assert_eq!(again, keepable, "{written:?}");
});
