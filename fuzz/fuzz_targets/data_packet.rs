//! Fuzz data-channel opening with fixed keys for every cipher (AEAD and CBC): arbitrary
//! datagrams must be rejected without panicking.
#![no_main]

use std::sync::LazyLock;

use ferrovpn_proto::data::{Cipher, DataKeys, KeyBlock, Side, parse_data_header};
use ferrovpn_proto::wrap::AuthDigest;
use libfuzzer_sys::fuzz_target;

static KEYS: LazyLock<Vec<DataKeys>> = LazyLock::new(|| {
    let mut block = [0u8; 256];
    for (i, b) in block.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    // Every AEAD cipher, and the CBC ciphers with SHA1 and SHA512 HMACs.
    let mut keys: Vec<DataKeys> = Cipher::ALL
        .iter()
        .map(|&c| DataKeys::from_key_block(c, &KeyBlock(block), Side::Server))
        .collect();
    for c in Cipher::CBC {
        for auth in [AuthDigest::Sha1, AuthDigest::Sha512] {
            keys.push(DataKeys::new(c, auth, &KeyBlock(block), Side::Server).unwrap());
        }
    }
    keys
});

fuzz_target!(|data: &[u8]| {
    let _ = parse_data_header(data);
    let mut out = vec![0u8; data.len() + 64];
    for k in KEYS.iter() {
        let _ = k.open.open(data, &mut out);
        let mut copy = data.to_vec();
        let _ = k.open.open_in_place(&mut copy);
    }
});
