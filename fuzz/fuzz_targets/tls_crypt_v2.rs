//! Fuzz the tls-crypt-v2 server side: opening a client's HARD_RESET_CLIENT_V3
//! / CONTROL_WKC_V1 (split WKc, unwrap it, unwrap the packet), WKc unwrap
//! alone, key files and the early-negotiation TLVs. Arbitrary bytes are
//! refused without panicking; a valid WKc (made here) in front of which
//! arbitrary packet bytes stand reaches the packet check under the client
//! key; and whatever metadata is wrapped comes back unchanged.
#![no_main]

use std::sync::LazyLock;

use ferrovpn_proto::tls_crypt_v2::{ClientKey, MAX_METADATA_LEN, Metadata, ServerKey};
use ferrovpn_proto::wire::EarlyNegotiation;
use ferrovpn_proto::wrap::StaticKey;
use libfuzzer_sys::fuzz_target;

static SERVER: LazyLock<ServerKey> = LazyLock::new(|| {
    let mut raw = [0u8; 128];
    for (i, b) in raw.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(97).wrapping_add(3);
    }
    ServerKey::from_bytes(&raw)
});

static CLIENT: LazyLock<ClientKey> =
    LazyLock::new(|| ClientKey::generate(&SERVER, &Metadata::user(b"fuzz")).unwrap());

fuzz_target!(|data: &[u8]| {
    let _ = SERVER.open(data);
    let _ = SERVER.unwrap_client_key(data);
    let _ = EarlyNegotiation::parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = ClientKey::parse(text);
        let _ = ServerKey::parse(text);
    }
    let mut with_wkc = data.to_vec();
    with_wkc.extend_from_slice(&CLIENT.wkc);
    let _ = SERVER.open(&with_wkc);
    let metadata = Metadata::user(&data[..data.len().min(MAX_METADATA_LEN - 1)]);
    let kc = StaticKey::from_bytes([0x5a; 256]);
    let wkc = SERVER.wrap_client_key(&kc, &metadata).unwrap();
    assert_eq!(SERVER.unwrap_client_key(&wkc).unwrap(), (kc, metadata));
});
