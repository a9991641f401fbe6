//! A peer that speaks the real control-channel wire protocol by hand over
//! a UDP socket, for tests of what a server does with hostile or
//! half-done handshakes: resets, cookies, ACKs, and nothing after them.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;

use ferrovpn_proto::data::Side;
use ferrovpn_proto::wire::{ControlPacket, Opcode, SessionId};
use ferrovpn_proto::wrap::{ControlWrap, ReplayId, StaticKey};

/// A client's view of the control wrap: plain, or tls-crypt with the
/// static key in the file `key`.
pub fn client_wrap(key: Option<&Path>) -> ControlWrap {
    match key {
        None => ControlWrap::None,
        Some(k) => {
            let key = StaticKey::parse(&std::fs::read_to_string(k).unwrap()).unwrap();
            ControlWrap::tls_crypt(&key, Side::Client)
        }
    }
}

/// `pkt` wrapped with `wrap`, with replay id `replay_id` at the present
/// time.
pub fn wrapped(wrap: &ControlWrap, pkt: &ControlPacket, replay_id: u32) -> Vec<u8> {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let mut out = Vec::new();
    wrap.wrap(
        pkt,
        ReplayId {
            id: replay_id,
            time,
        },
        &mut out,
    );
    out
}

/// A client's first packet (P_CONTROL_HARD_RESET_CLIENT_V2) for session `sid`.
pub fn client_reset(sid: SessionId) -> ControlPacket {
    ControlPacket {
        opcode: Opcode::HardResetClientV2,
        key_id: 0,
        session_id: sid,
        acks: Vec::new(),
        remote_session_id: None,
        message_id: Some(0),
        payload: Vec::new(),
    }
}

/// From socket `s`, the stateless handshake for session `sid` with the
/// server at `to`: the reset, then the server's reset (its cookie)
/// acknowledged in an ACK_V1, and nothing more, which leaves a half-open
/// session on the server. False when no reset for `sid` came back before
/// the socket's read timeout.
pub fn half_open(s: &UdpSocket, to: SocketAddr, wrap: &ControlWrap, sid: SessionId) -> bool {
    s.send_to(&wrapped(wrap, &client_reset(sid), 1), to)
        .unwrap();
    let mut buf = [0u8; 2048];
    let Ok((len, _)) = s.recv_from(&mut buf) else {
        return false;
    };
    let Ok((reply, _)) = wrap.unwrap(&buf[..len]) else {
        return false;
    };
    if reply.opcode != Opcode::HardResetServerV2 || reply.remote_session_id != Some(sid) {
        return false;
    }
    let ack = ControlPacket {
        opcode: Opcode::AckV1,
        key_id: 0,
        session_id: sid,
        acks: vec![0],
        remote_session_id: Some(reply.session_id),
        message_id: None,
        payload: Vec::new(),
    };
    s.send_to(&wrapped(wrap, &ack, 2), to).unwrap();
    true
}
