//! Fuzz the `ifconfig-pool-persist` file reader: any text gives entries (or
//! skips lines), never a panic, and what it writes back reads the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (entries, _) = ferrovpn_control::pool_persist::parse(text);
    let written = ferrovpn_control::pool_persist::render(&entries);
    let (again, skipped) = ferrovpn_control::pool_persist::parse(&written);
    assert_eq!(skipped, 0, "{written:?}");
    // Names the format cannot hold are left out when writing, nothing else.
    let keepable = entries
        .iter()
        .filter(|(cn, _)| !cn.contains([',', '\n', '\r']))
        .count();
    assert_eq!(again.len(), keepable);
    for (cn, ip) in &again {
        assert_eq!(entries.get(cn), Some(ip));
    }
});
