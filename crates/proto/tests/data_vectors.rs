//! Known-answer tests for the AEAD data channel against packets captured from
//! live OpenVPN 2.6.14 runs (tests/vectors/README.md).

use ferrovpn_proto::data::{
    AeadBackend, Cipher, DataError, DataKeys, KeyBlock, OpeningKey, SealingKey, Side, is_ping,
};
use ferrovpn_proto::wire::{DATA_V1_OVERHEAD, DATA_V2_OVERHEAD};
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!("{}/tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn hexv(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn iv8(v: &Value) -> [u8; 8] {
    hexv(v).try_into().unwrap()
}

fn cipher_of(doc: &Value) -> Cipher {
    Cipher::from_name(doc["cipher"].as_str().unwrap()).unwrap()
}

struct Pkt {
    wire: Vec<u8>,
    plaintext: Vec<u8>,
    packet_id: u32,
    c2s: bool,
    kind: String,
    peer_id: u32,
}

fn packets(group: &Value) -> Vec<Pkt> {
    group["packets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let wire = hexv(&p["wire"]);
            Pkt {
                peer_id: u32::from_be_bytes([0, wire[1], wire[2], wire[3]]),
                wire,
                plaintext: hexv(&p["plaintext"]),
                packet_id: p["packet_id"].as_u64().unwrap() as u32,
                c2s: p["direction"] == "c2s",
                kind: p["kind"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

/// Open `p` both ways, reseal its plaintext and compare, and poke at it.
fn check_packet(seal: &SealingKey, open: &OpeningKey, p: &Pkt) {
    let v1 = p.wire[0] >> 3 == 6;
    let overhead = if v1 {
        DATA_V1_OVERHEAD
    } else {
        DATA_V2_OVERHEAD
    };
    let key_id = p.wire[0] & 7;

    let mut out = vec![0u8; p.wire.len()];
    let (pid, n) = open.open(&p.wire, &mut out).unwrap();
    assert_eq!(pid, p.packet_id);
    assert_eq!(&out[..n], &p.plaintext[..]);

    let mut inplace = p.wire.clone();
    let (pid, start) = open.open_in_place(&mut inplace).unwrap();
    assert_eq!((pid, start), (p.packet_id, overhead));
    assert_eq!(&inplace[start..], &p.plaintext[..]);

    let mut buf = vec![0u8; overhead];
    buf.extend_from_slice(&p.plaintext);
    if v1 {
        seal.seal_v1(key_id, p.packet_id, &mut buf).unwrap();
    } else {
        seal.seal_v2(key_id, p.peer_id, p.packet_id, &mut buf)
            .unwrap();
    }
    assert_eq!(buf, p.wire, "reseal reproduces the wire bytes");

    assert_eq!(is_ping(&p.plaintext), p.kind == "ping");

    // Every single-bit flip outside the V1 opcode byte (not authenticated there)
    // must fail authentication, never succeed or panic.
    let first_covered = usize::from(v1);
    for i in first_covered..p.wire.len() {
        for bit in [0x01u8, 0x80] {
            let mut w = p.wire.clone();
            w[i] ^= bit;
            let r = open.open(&w, &mut out);
            assert!(r.is_err(), "flip at byte {i} bit {bit:#x} opened");
            let r2 = open.open_in_place(&mut w);
            assert!(r2.is_err());
        }
    }
    // Truncations: errors, no panics.
    for len in 0..p.wire.len() {
        let mut w = p.wire[..len].to_vec();
        assert!(open.open(&w, &mut out).is_err());
        assert!(open.open_in_place(&mut w).is_err());
    }
    // Short output buffer.
    assert_eq!(
        open.open(&p.wire, &mut out[..p.plaintext.len() - 1]),
        Err(DataError::BufferTooSmall)
    );
}

fn run_file(name: &str) -> usize {
    let doc = load(name);
    let cipher = cipher_of(&doc);
    let mut checked = 0;

    if let Some(group) = doc.get("stock_to_stock").filter(|g| !g.is_null()) {
        for (raw, p) in group["packets"]
            .as_array()
            .unwrap()
            .iter()
            .zip(packets(group))
        {
            let key = hexv(&raw["key"]);
            let iv = iv8(&raw["implicit_iv"]);
            // Both AEAD libraries, whichever the data path picks on this CPU.
            for backend in AeadBackend::ALL {
                let seal = SealingKey::with_backend(cipher, &key, iv, backend).unwrap();
                let open = OpeningKey::with_backend(cipher, &key, iv, backend).unwrap();
                check_packet(&seal, &open, &p);
            }
            checked += 1;
        }
    }

    let group = &doc["with_key_block"];
    let block: [u8; 256] = hexv(&group["key_block"]).try_into().unwrap();
    let block = KeyBlock(block);
    let client = DataKeys::from_key_block(cipher, &block, Side::Client);
    let server = DataKeys::from_key_block(cipher, &block, Side::Server);
    for (raw, p) in group["packets"]
        .as_array()
        .unwrap()
        .iter()
        .zip(packets(group))
    {
        // The per-packet key in the vector is the slice the README describes.
        let (sender, receiver) = if p.c2s {
            (&client, &server)
        } else {
            (&server, &client)
        };
        check_packet(&sender.seal, &receiver.open, &p);
        // And the raw per-packet key agrees with the slicing, on both libraries.
        let key = hexv(&raw["key"]);
        let iv = iv8(&raw["implicit_iv"]);
        let mut out = vec![0u8; p.wire.len()];
        for backend in AeadBackend::ALL {
            let seal = SealingKey::with_backend(cipher, &key, iv, backend).unwrap();
            let open = OpeningKey::with_backend(cipher, &key, iv, backend).unwrap();
            check_packet(&seal, &open, &p);
        }
        // The sender's own opening key is for the other direction.
        assert_eq!(
            sender.open.open(&p.wire, &mut out),
            Err(DataError::AuthFailed)
        );
        checked += 1;
    }
    checked
}

#[test]
fn aes256gcm() {
    assert_eq!(run_file("data_aes256gcm.json"), 5);
}

#[test]
fn aes128gcm() {
    assert_eq!(run_file("data_aes128gcm.json"), 5);
}

#[test]
fn chacha20poly1305() {
    assert_eq!(run_file("data_chacha20poly1305.json"), 7);
}

#[test]
fn data_v1_aes256gcm() {
    assert_eq!(run_file("data_v1_aes256gcm.json"), 3);
}

#[test]
fn wrong_key_length_is_an_error() {
    assert_eq!(
        SealingKey::new(Cipher::Aes256Gcm, &[0u8; 16], [0; 8]).err(),
        Some(DataError::BadKeyLength { need: 32, have: 16 })
    );
    assert!(OpeningKey::new(Cipher::Aes128Gcm, &[0u8; 16], [0; 8]).is_ok());
}

proptest::proptest! {
    #[test]
    fn open_never_panics(mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..120), out_len in 0usize..120) {
        let key = OpeningKey::new(Cipher::ChaCha20Poly1305, &[9; 32], [1; 8]).unwrap();
        let mut out = vec![0u8; out_len];
        proptest::prop_assert!(key.open(&bytes, &mut out).is_err());
        proptest::prop_assert!(key.open_in_place(&mut bytes).is_err());
    }

    #[test]
    fn seal_open_round_trip(payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..200), pid in 1u32.., key_id in 0u8..8, peer in 0u32..0x0100_0000, v1: bool) {
        let block = KeyBlock([0x5a; 256]);
        let c = DataKeys::from_key_block(Cipher::Aes128Gcm, &block, Side::Client);
        let s = DataKeys::from_key_block(Cipher::Aes128Gcm, &block, Side::Server);
        let overhead = if v1 { DATA_V1_OVERHEAD } else { DATA_V2_OVERHEAD };
        let mut p = vec![0u8; overhead];
        p.extend_from_slice(&payload);
        if v1 { c.seal.seal_v1(key_id, pid, &mut p).unwrap() } else { c.seal.seal_v2(key_id, peer, pid, &mut p).unwrap() }
        let (got, start) = s.open.open_in_place(&mut p).unwrap();
        proptest::prop_assert_eq!(got, pid);
        proptest::prop_assert_eq!(&p[start..], &payload[..]);
    }

    /// aws-lc and ring seal any payload, packet id and key to the same bytes,
    /// and each opens the other's packets.
    #[test]
    fn both_aead_libraries_agree(payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..2000), pid in 1u32.., key in proptest::prelude::any::<[u8; 32]>(), iv in proptest::prelude::any::<[u8; 8]>(), cipher_at in 0usize..3) {
        let cipher = Cipher::ALL[cipher_at];
        let key = &key[..cipher.key_len()];
        let [aws_lc, ring] = AeadBackend::ALL.map(|b| SealingKey::with_backend(cipher, key, iv, b).unwrap());
        let mut a = vec![0u8; DATA_V2_OVERHEAD];
        a.extend_from_slice(&payload);
        let mut r = a.clone();
        aws_lc.seal_v2(1, 0x42, pid, &mut a).unwrap();
        ring.seal_v2(1, 0x42, pid, &mut r).unwrap();
        proptest::prop_assert_eq!(&a, &r);
        for backend in AeadBackend::ALL {
            let open = OpeningKey::with_backend(cipher, key, iv, backend).unwrap();
            let mut out = vec![0u8; payload.len()];
            proptest::prop_assert_eq!(open.open(&a, &mut out).unwrap(), (pid, payload.len()));
            proptest::prop_assert_eq!(&out, &payload);
        }
    }
}
