//! Fuzz the reading of encrypted private keys (PKCS#8 PBES2 and OpenSSL's
//! traditional `Proc-Type: 4,ENCRYPTED` PEM) and of PKCS#12 files: the text
//! or bytes of a `key` / `pkcs12` file may be anything.
#![no_main]

use ferrovpn_proto::keyfile::{decrypt_key, open_pkcs12};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = open_pkcs12(data, "");
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = decrypt_key(text, b"passphrase");
    }
});
