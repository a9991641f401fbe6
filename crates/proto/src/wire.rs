//! OpenVPN packet codecs: the opcode/key-id byte, the logical control packet
//! (docs/protocol.md §2.1) and the data packet headers (§8.1, §8.2).
//!
//! Parsing never panics: every length is checked before it is read, and
//! errors name what was wrong. Wrapping (tls-auth / tls-crypt) lives in
//! [`crate::wrap`]; this module only knows the unwrapped layout.

use thiserror::Error;

/// Length of a control-channel session id.
pub const SESSION_ID_LEN: usize = 8;
/// The most ACK ids one control packet may carry (2.6 rejects more).
pub const MAX_ACKS: usize = 8;
/// The most ACK ids 2.6 puts on a reliable (non-ACK_V1) packet.
pub const MAX_ACKS_ON_RELIABLE: usize = 4;
/// Header bytes in front of the AEAD tag of a P_DATA_V2 packet.
pub const DATA_V2_HEADER_LEN: usize = 8;
/// P_DATA_V2 overhead: opcode/peer-id (4) + packet id (4) + tag (16).
pub const DATA_V2_OVERHEAD: usize = 24;
/// P_DATA_V1 overhead: opcode (1) + packet id (4) + tag (16).
pub const DATA_V1_OVERHEAD: usize = 21;
/// peer-id value meaning "no peer id".
pub const PEER_ID_UNDEFINED: u32 = 0x00FF_FFFF;

/// A tls-crypt-v2 client starts its reset's replay ids here (the first on
/// the wire is one more) to announce early negotiation (doc §2.8); a server
/// tests the bits of this value in the top byte.
pub const EARLY_NEG_START: u32 = 0x0f00_0000;
/// TLV type of the early-negotiation flags in a hard reset's payload.
const TLV_EARLY_NEG_FLAGS: u16 = 0x0001;
/// Early-negotiation flag: the client must repeat its wrapped key (WKc).
const EARLY_NEG_FLAG_RESEND_WKC: u16 = 0x0001;

/// Whether a client reset's replay id announces early negotiation.
pub fn announces_early_negotiation(replay_id: u32) -> bool {
    replay_id & 0xff00_0000 & EARLY_NEG_START == EARLY_NEG_START
}

/// The TLVs of a hard reset's payload (doc §2.8) that 2.6 knows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EarlyNegotiation {
    /// The server asks a tls-crypt-v2 client to send its msg_id 1 packet
    /// as CONTROL_WKC_V1.
    pub resend_wkc: bool,
}

impl EarlyNegotiation {
    /// Parse a hard reset's payload: `type u16 | len u16 | value` TLVs,
    /// unknown types skipped, as 2.6 does. A truncated TLV or a flags TLV
    /// that is not 2 bytes long is an error (2.6 aborts the handshake).
    pub fn parse(payload: &[u8]) -> Result<Self, WireError> {
        let mut out = EarlyNegotiation::default();
        let mut r = Reader(payload);
        while !r.0.is_empty() {
            let kind = r.u16()?;
            let len = usize::from(r.u16()?);
            let value = r.take(len)?;
            if kind == TLV_EARLY_NEG_FLAGS {
                let flags: [u8; 2] = value.try_into().map_err(|_| WireError::BadTlv)?;
                out.resend_wkc = u16::from_be_bytes(flags) & EARLY_NEG_FLAG_RESEND_WKC != 0;
            }
        }
        Ok(out)
    }

    /// The payload of a reset carrying these flags (empty when none is set).
    pub fn to_payload(self) -> Vec<u8> {
        if !self.resend_wkc {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(6);
        out.extend_from_slice(&TLV_EARLY_NEG_FLAGS.to_be_bytes());
        out.extend_from_slice(&2u16.to_be_bytes());
        out.extend_from_slice(&EARLY_NEG_FLAG_RESEND_WKC.to_be_bytes());
        out
    }
}

/// Errors from decoding bytes that came from the network.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// The packet is shorter than its fixed fields.
    #[error("packet truncated: need {need} bytes, have {have}")]
    Truncated { need: usize, have: usize },
    /// The opcode is not one 2.6 accepts.
    #[error("unknown or unsupported opcode {0}")]
    BadOpcode(u8),
    /// A data opcode was found where a control packet was expected, or the reverse.
    #[error("opcode {0:?} is not a control opcode")]
    NotControl(Opcode),
    /// More than [`MAX_ACKS`] ACK ids.
    #[error("too many ack ids: {0}")]
    TooManyAcks(u8),
    /// HMAC / tag check of a wrapped control packet failed.
    #[error("control packet authentication failed")]
    AuthFailed,
    /// Replay protection rejected the packet.
    #[error("replayed or too old control packet")]
    Replay,
    /// A malformed early-negotiation TLV in a hard reset.
    #[error("malformed early-negotiation TLV in a hard reset")]
    BadTlv,
}

/// Sender or receiver session id of the control channel.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct SessionId(pub [u8; SESSION_ID_LEN]);

impl SessionId {
    /// A random, non-zero session id.
    pub fn random() -> Self {
        loop {
            let mut b = [0u8; SESSION_ID_LEN];
            crate::random::fill(&mut b);
            if b != [0u8; SESSION_ID_LEN] {
                return SessionId(b);
            }
        }
    }
}

/// Packet opcodes (high 5 bits of byte 0).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
#[repr(u8)]
pub enum Opcode {
    SoftResetV1 = 3,
    ControlV1 = 4,
    AckV1 = 5,
    DataV1 = 6,
    HardResetClientV2 = 7,
    HardResetServerV2 = 8,
    DataV2 = 9,
    HardResetClientV3 = 10,
    ControlWkcV1 = 11,
}

impl Opcode {
    /// Opcodes a 2.6 peer accepts; everything else (incl. the obsolete V1 resets) is `None`.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            3 => Opcode::SoftResetV1,
            4 => Opcode::ControlV1,
            5 => Opcode::AckV1,
            6 => Opcode::DataV1,
            7 => Opcode::HardResetClientV2,
            8 => Opcode::HardResetServerV2,
            9 => Opcode::DataV2,
            10 => Opcode::HardResetClientV3,
            11 => Opcode::ControlWkcV1,
            _ => return None,
        })
    }

    pub fn is_data(self) -> bool {
        matches!(self, Opcode::DataV1 | Opcode::DataV2)
    }

    pub fn is_control(self) -> bool {
        !self.is_data()
    }

    /// Whether packets with this opcode carry a reliability-layer message id.
    pub fn has_message_id(self) -> bool {
        self.is_control() && self != Opcode::AckV1
    }

    /// Byte 0 of a packet: `(opcode << 3) | key_id`.
    pub fn header_byte(self, key_id: u8) -> u8 {
        ((self as u8) << 3) | (key_id & 7)
    }
}

/// Split byte 0 into (opcode, key_id).
pub fn parse_header_byte(b: u8) -> Result<(Opcode, u8), WireError> {
    let op = b >> 3;
    Opcode::from_u8(op)
        .map(|o| (o, b & 7))
        .ok_or(WireError::BadOpcode(op))
}

/// The logical control packet of docs/protocol.md §2.1, independent of wrapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlPacket {
    pub opcode: Opcode,
    pub key_id: u8,
    /// Sender's session id.
    pub session_id: SessionId,
    /// Message ids acknowledged by this packet (at most [`MAX_ACKS`]).
    pub acks: Vec<u32>,
    /// Receiver's session id; present exactly when `acks` is non-empty.
    pub remote_session_id: Option<SessionId>,
    /// Reliability-layer id; `None` only for ACK_V1.
    pub message_id: Option<u32>,
    /// TLS bytes (CONTROL_V1), TLVs (hard resets) or empty.
    pub payload: Vec<u8>,
}

impl ControlPacket {
    /// Bytes `[1..9]`: the header byte and sender session id, the part every wrapping leaves in clear.
    pub fn emit_prefix(&self, out: &mut Vec<u8>) {
        out.push(self.opcode.header_byte(self.key_id));
        out.extend_from_slice(&self.session_id.0);
    }

    /// The part after the session id (and after the wrapping's own fields):
    /// `ack_count || ack_ids || [remote_sid] || [msg_id] || payload`.
    pub fn emit_body(&self, out: &mut Vec<u8>) {
        debug_assert!(self.acks.len() <= MAX_ACKS);
        out.push(self.acks.len() as u8);
        for a in &self.acks {
            out.extend_from_slice(&a.to_be_bytes());
        }
        if !self.acks.is_empty() {
            out.extend_from_slice(&self.remote_session_id.unwrap_or_default().0);
        }
        if let Some(id) = self.message_id {
            out.extend_from_slice(&id.to_be_bytes());
        }
        out.extend_from_slice(&self.payload);
    }

    /// Unwrapped wire form.
    pub fn emit(&self, out: &mut Vec<u8>) {
        self.emit_prefix(out);
        self.emit_body(out);
    }

    /// Parse the unwrapped wire form.
    pub fn parse(wire: &[u8]) -> Result<Self, WireError> {
        let (opcode, key_id, session_id) = parse_prefix(wire)?;
        Self::parse_body(opcode, key_id, session_id, &wire[1 + SESSION_ID_LEN..])
    }

    /// Parse the body (see [`ControlPacket::emit_body`]) given the clear prefix fields.
    pub fn parse_body(
        opcode: Opcode,
        key_id: u8,
        session_id: SessionId,
        body: &[u8],
    ) -> Result<Self, WireError> {
        if !opcode.is_control() {
            return Err(WireError::NotControl(opcode));
        }
        let mut r = Reader(body);
        let n = r.u8()?;
        if n as usize > MAX_ACKS {
            return Err(WireError::TooManyAcks(n));
        }
        let mut acks = Vec::with_capacity(n as usize);
        for _ in 0..n {
            acks.push(r.u32()?);
        }
        let remote_session_id = if n > 0 {
            Some(SessionId(r.array()?))
        } else {
            None
        };
        let message_id = if opcode.has_message_id() {
            Some(r.u32()?)
        } else {
            None
        };
        Ok(ControlPacket {
            opcode,
            key_id,
            session_id,
            acks,
            remote_session_id,
            message_id,
            payload: r.0.to_vec(),
        })
    }
}

/// Parse the clear prefix common to all control packets: header byte and sender session id.
pub fn parse_prefix(wire: &[u8]) -> Result<(Opcode, u8, SessionId), WireError> {
    let mut r = Reader(wire);
    let (opcode, key_id) = parse_header_byte(r.u8()?)?;
    if !opcode.is_control() {
        return Err(WireError::NotControl(opcode));
    }
    let sid = SessionId(r.array()?);
    Ok((opcode, key_id, sid))
}

/// First four bytes of a P_DATA_V2 packet.
pub fn data_v2_header(key_id: u8, peer_id: u32) -> [u8; 4] {
    let v = ((Opcode::DataV2.header_byte(key_id) as u32) << 24) | (peer_id & 0x00FF_FFFF);
    v.to_be_bytes()
}

/// Bounds-checked big-endian reader over a byte slice.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError::Truncated {
                need: n,
                have: self.0.len(),
            });
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    pub(crate) fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }
    pub(crate) fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub(crate) fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_control() {
        let p = ControlPacket {
            opcode: Opcode::ControlV1,
            key_id: 2,
            session_id: SessionId([1; 8]),
            acks: vec![5, 4],
            remote_session_id: Some(SessionId([9; 8])),
            message_id: Some(7),
            payload: b"hello".to_vec(),
        };
        let mut w = Vec::new();
        p.emit(&mut w);
        assert_eq!(w[0], 0x22);
        assert_eq!(ControlPacket::parse(&w).unwrap(), p);
    }

    #[test]
    fn unwrapped_reset_sizes() {
        let c = ControlPacket {
            opcode: Opcode::HardResetClientV2,
            key_id: 0,
            session_id: SessionId([1; 8]),
            acks: vec![],
            remote_session_id: None,
            message_id: Some(0),
            payload: vec![],
        };
        let mut w = Vec::new();
        c.emit(&mut w);
        assert_eq!(w.len(), 14);
        let s = ControlPacket {
            opcode: Opcode::HardResetServerV2,
            acks: vec![0],
            remote_session_id: Some(SessionId([2; 8])),
            ..c
        };
        w.clear();
        s.emit(&mut w);
        assert_eq!(w.len(), 26);
    }

    #[test]
    fn truncated_and_garbage_do_not_panic() {
        for len in 0..40 {
            let junk: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
            let _ = ControlPacket::parse(&junk);
        }
        assert!(matches!(
            ControlPacket::parse(&[0x28, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
            Err(WireError::TooManyAcks(9))
        ));
        assert!(matches!(
            ControlPacket::parse(&[0x08; 20]),
            Err(WireError::BadOpcode(1))
        ));
    }

    #[test]
    fn early_negotiation_tlvs() {
        let ask = EarlyNegotiation { resend_wkc: true };
        assert_eq!(ask.to_payload(), [0, 1, 0, 2, 0, 1]);
        assert_eq!(EarlyNegotiation::parse(&ask.to_payload()), Ok(ask));
        assert_eq!(EarlyNegotiation::default().to_payload(), b"");
        assert_eq!(
            EarlyNegotiation::parse(b""),
            Ok(EarlyNegotiation::default())
        );
        // Unknown types are skipped, flags without the bit mean nothing.
        assert_eq!(
            EarlyNegotiation::parse(&[0, 9, 0, 1, 7, 0, 1, 0, 2, 0, 1]),
            Ok(ask)
        );
        assert_eq!(
            EarlyNegotiation::parse(&[0, 1, 0, 2, 0, 2]),
            Ok(EarlyNegotiation::default())
        );
        assert_eq!(
            EarlyNegotiation::parse(&[0, 1, 0, 3, 0, 0, 1]),
            Err(WireError::BadTlv)
        );
        assert!(matches!(
            EarlyNegotiation::parse(&[0, 1, 0, 2, 0]),
            Err(WireError::Truncated { .. })
        ));
        assert!(matches!(
            EarlyNegotiation::parse(&[0, 1, 0]),
            Err(WireError::Truncated { .. })
        ));
        assert!(announces_early_negotiation(EARLY_NEG_START + 1));
        assert!(announces_early_negotiation(0xff00_0001));
        assert!(!announces_early_negotiation(1));
        assert!(!announces_early_negotiation(0x0e00_0001));
    }

    #[test]
    fn data_v2_header_layout() {
        assert_eq!(data_v2_header(2, 7), [0x4a, 0, 0, 7]);
    }
}
