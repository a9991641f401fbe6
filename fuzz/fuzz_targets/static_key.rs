//! Fuzz the OpenVPN static key file parser (tls-crypt / tls-auth keys come
//! from config files and inline blocks).
#![no_main]

use ferrovpn_proto::wrap::StaticKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(key) = StaticKey::parse(text)
    {
        assert_eq!(
            StaticKey::parse(&key.to_file_text())
                .ok()
                .map(|k| *k.as_bytes()),
            Some(*key.as_bytes())
        );
    }
});
