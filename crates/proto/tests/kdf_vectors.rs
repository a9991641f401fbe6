//! Legacy OpenVPN PRF against key material from live OpenVPN 2.6.14 runs.

use ferrovpn_proto::data::{Cipher, DataKeys, Side};
use ferrovpn_proto::kdf::{EKM_LABEL, legacy_key_block, legacy_master_secret};
use ferrovpn_proto::wire::SessionId;
use serde_json::Value;

fn arr<const N: usize>(v: &Value) -> [u8; N] {
    hex::decode(v.as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap()
}

#[test]
fn legacy_prf_vectors() {
    let path = format!(
        "{}/tests/vectors/legacy_prf.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    assert!(!vectors.is_empty());
    for v in vectors {
        let pre: [u8; 48] = arr(&v["client_pre_master"]);
        let cr1: [u8; 32] = arr(&v["client_random1"]);
        let cr2: [u8; 32] = arr(&v["client_random2"]);
        let sr1: [u8; 32] = arr(&v["server_random1"]);
        let sr2: [u8; 32] = arr(&v["server_random2"]);
        let csid = SessionId(arr(&v["client_sid"]));
        let ssid = SessionId(arr(&v["server_sid"]));
        let master = legacy_master_secret(&pre, &cr1, &sr1);
        assert_eq!(master, arr::<48>(&v["master_secret"]), "{}", v["run"]);
        let block = legacy_key_block(&pre, &cr1, &sr1, &cr2, &sr2, &csid, &ssid);
        assert_eq!(block.0, arr::<256>(&v["key_block"]), "{}", v["run"]);
        assert_eq!(block.0[..32], arr::<32>(&v["server_logged_c2s_cipher_key"]));
        assert_eq!(
            block.0[128..160],
            arr::<32>(&v["server_logged_s2c_cipher_key"])
        );
        // Swapping the session ids must change the keys (they are ordered inputs).
        let swapped = legacy_key_block(&pre, &cr1, &sr1, &cr2, &sr2, &ssid, &csid);
        assert_ne!(swapped.0, block.0);
        let cipher = Cipher::from_name(v["cipher"].as_str().unwrap()).unwrap();
        let _ = DataKeys::from_key_block(cipher, &block, Side::Server);
    }
}

/// The legacy-PRF run whose data packets are in data_v1_aes256gcm.json: the
/// block derived here must be the one those packets were sealed with.
#[test]
fn legacy_prf_matches_v1_data_run() {
    let prf: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/tests/vectors/legacy_prf.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(format!(
            "{}/tests/vectors/data_v1_aes256gcm.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap(),
    )
    .unwrap();
    let want = data["with_key_block"]["key_block"].as_str().unwrap();
    let found = prf["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["key_block"].as_str() == Some(want));
    assert!(found, "data_v1 key block is one of the PRF vectors");
}

#[test]
fn ekm_label() {
    assert_eq!(EKM_LABEL, "EXPORTER-OpenVPN-datakeys");
}
