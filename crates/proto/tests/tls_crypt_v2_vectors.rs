//! Known-answer tests for tls-crypt-v2 against keys and a packet made by
//! stock OpenVPN 2.6.14 (tests/vectors/README.md, `tls-crypt-v2/`).

use ferrovpn_proto::tls_crypt_v2::{ClientKey, Metadata, ServerKey};
use ferrovpn_proto::wire::{EARLY_NEG_START, Opcode};

fn vector(name: &str) -> String {
    let path = format!(
        "{}/tests/vectors/tls-crypt-v2/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn stock_client_keys_unwrap_with_the_stock_server_key() {
    let server = ServerKey::parse(&vector("server.key")).unwrap();
    let user = ClientKey::parse(&vector("client-user.key")).unwrap();
    let (kc, meta) = server.unwrap_client_key(&user.wkc).unwrap();
    assert_eq!(kc, user.key);
    // `--genkey tls-crypt-v2-client FILE aGVsbG8gd29ybGQ=`: USER metadata.
    assert_eq!(meta.kind(), Some(Metadata::USER));
    assert_eq!(meta.data(), b"hello world");
    assert_eq!(server.wrap_client_key(&kc, &meta).unwrap(), user.wkc);

    let stamped = ClientKey::parse(&vector("client-timestamp.key")).unwrap();
    let (kc, meta) = server.unwrap_client_key(&stamped.wkc).unwrap();
    assert_eq!(kc, stamped.key);
    // No metadata given: a TIMESTAMP of the generation (December 2026).
    assert_eq!(meta.timestamp_value(), Some(1_796_204_037));
    // The construction is deterministic: our wrapping is byte-identical.
    assert_eq!(server.wrap_client_key(&kc, &meta).unwrap(), stamped.wkc);
    // And the file text is what openvpn wrote.
    assert_eq!(stamped.to_file_text(), vector("client-timestamp.key"));
}

#[test]
fn stock_client_reset_opens_with_the_server_key() {
    let server = ServerKey::parse(&vector("server.key")).unwrap();
    let wire = hex::decode(vector("hard-reset-client-v3.hex").trim()).unwrap();
    let opened = server.open(&wire).unwrap();
    assert_eq!(opened.pkt.opcode, Opcode::HardResetClientV3);
    assert_eq!(opened.pkt.key_id, 0);
    assert_eq!(opened.pkt.message_id, Some(0));
    assert!(opened.pkt.acks.is_empty());
    assert!(opened.pkt.payload.is_empty());
    // 2.6 announces early negotiation with its first replay id.
    assert_eq!(opened.replay.id, EARLY_NEG_START + 1);
    assert_eq!(opened.metadata.data(), b"hello world");
    // Flipping any byte of the packet part or of WKc makes it unreadable.
    for at in [0usize, 9, 20, 60, wire.len() - 40, wire.len() - 1] {
        let mut bad = wire.clone();
        bad[at] ^= 0x10;
        assert!(server.open(&bad).is_err(), "byte {at}");
    }
}
