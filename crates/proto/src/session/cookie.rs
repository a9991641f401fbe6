//! The stateless server handshake of OpenVPN 2.6 (the "HMAC cookie").
//!
//! A server that allocated a session for every client reset could be filled
//! by resets from spoofed addresses (or, with no control-channel wrapping,
//! from anyone). Instead the server answers a reset without keeping
//! anything: its session id is an HMAC over the client's address and
//! session id and a time slot. Only a packet that echoes that id from the
//! same address, proving the client received the answer, creates a session
//! ([`super::Session::accept_cookie`]). A client cannot tell this server
//! from a stateful one.

use std::net::SocketAddr;
use std::time::Duration;

use aws_lc_rs::hmac;

use crate::wire::{ControlPacket, EarlyNegotiation, Opcode, SESSION_ID_LEN, SessionId};
use crate::wrap::{ControlWrap, ReplayId};

/// How many earlier time slots a cookie stays valid in (besides the current
/// one): with 2.6's slot of half the hand-window, 60–90 s by default.
const EARLIER_SLOTS: u64 = 2;

/// The server's secret for cookies; random per process.
pub struct CookieKey(hmac::Key);

impl CookieKey {
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        crate::random::fill(&mut k);
        Self::from_bytes(&k)
    }

    pub fn from_bytes(key: &[u8; 32]) -> Self {
        CookieKey(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// Time slot of `unix_now`: half the hand-window long, as in 2.6.
    pub fn time_slot(unix_now: u64, hand_window: Duration) -> u64 {
        unix_now / hand_window.as_secs().div_ceil(2).max(1)
    }

    /// Our session id for `client_sid` at `from` in time slot `slot`.
    pub fn session_id(&self, slot: u64, from: SocketAddr, client_sid: SessionId) -> SessionId {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(&slot.to_be_bytes());
        match from {
            SocketAddr::V4(a) => ctx.update(&a.ip().octets()),
            SocketAddr::V6(a) => ctx.update(&a.ip().octets()),
        }
        ctx.update(&from.port().to_be_bytes());
        ctx.update(&client_sid.0);
        let tag = ctx.sign();
        let mut sid = [0u8; SESSION_ID_LEN];
        sid.copy_from_slice(&tag.as_ref()[..SESSION_ID_LEN]);
        SessionId(sid)
    }

    /// Whether `sid` is the cookie for `client_sid` at `from` in the
    /// current time slot or one of the two before it.
    pub fn verify(
        &self,
        unix_now: u64,
        hand_window: Duration,
        from: SocketAddr,
        client_sid: SessionId,
        sid: SessionId,
    ) -> bool {
        let now = Self::time_slot(unix_now, hand_window);
        (0..=EARLIER_SLOTS).any(|back| {
            let expected = self.session_id(now.wrapping_sub(back), from, client_sid);
            aws_lc_rs::constant_time::verify_slices_are_equal(&expected.0, &sid.0).is_ok()
        })
    }
}

/// The stateless answer to a client's hard reset (already unwrapped and
/// checked: key_id 0, message id 0): a HARD_RESET_SERVER_V2 with session id
/// `server_sid` that acknowledges it, wrapped with replay id 1 (2.6 does
/// the same; the session made later continues from 2). Its payload holds
/// the early-negotiation TLVs `neg` (doc §2.8): a tls-crypt-v2 client is
/// asked to send its wrapped key again, since nothing of it is kept here.
/// Never retransmitted: a client that misses it resends its reset.
pub fn reset_reply(
    wrap: &ControlWrap,
    unix_now: u64,
    reset: &ControlPacket,
    server_sid: SessionId,
    neg: EarlyNegotiation,
) -> Vec<u8> {
    let pkt = ControlPacket {
        opcode: Opcode::HardResetServerV2,
        key_id: 0,
        session_id: server_sid,
        acks: vec![0],
        remote_session_id: Some(reset.session_id),
        message_id: Some(0),
        payload: neg.to_payload(),
    };
    let mut out = Vec::new();
    wrap.wrap(
        &pkt,
        ReplayId {
            id: 1,
            time: unix_now as u32,
        },
        &mut out,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cookies_bind_address_port_session_and_time() {
        let k = CookieKey::from_bytes(&[7; 32]);
        let hw = Duration::from_secs(60);
        let a = addr("192.0.2.1:1194");
        let sid = SessionId([1; 8]);
        let t = 1_700_000_000;
        let c = k.session_id(CookieKey::time_slot(t, hw), a, sid);
        assert!(k.verify(t, hw, a, sid, c));
        // Valid for two more slots (30 s each), then not.
        assert!(k.verify(t + 60, hw, a, sid, c));
        assert!(!k.verify(t + 91, hw, a, sid, c));
        assert!(!k.verify(t, hw, addr("192.0.2.1:1195"), sid, c));
        assert!(!k.verify(t, hw, addr("192.0.2.2:1194"), sid, c));
        assert!(!k.verify(t, hw, a, SessionId([2; 8]), c));
        assert!(!k.verify(t, hw, a, sid, SessionId([0; 8])));
        // Another key (another server process) does not know it.
        assert!(!CookieKey::from_bytes(&[8; 32]).verify(t, hw, a, sid, c));
        // IPv6 works the same.
        let a6 = addr("[2001:db8::1]:1194");
        let c6 = k.session_id(CookieKey::time_slot(t, hw), a6, sid);
        assert!(k.verify(t, hw, a6, sid, c6));
        assert_ne!(c6, c);
    }

    #[test]
    fn reset_reply_acknowledges_the_reset() {
        let reset = ControlPacket {
            opcode: Opcode::HardResetClientV2,
            key_id: 0,
            session_id: SessionId([9; 8]),
            acks: Vec::new(),
            remote_session_id: None,
            message_id: Some(0),
            payload: Vec::new(),
        };
        let wire = reset_reply(
            &ControlWrap::None,
            0,
            &reset,
            SessionId([4; 8]),
            EarlyNegotiation::default(),
        );
        let p = ControlPacket::parse(&wire).unwrap();
        assert_eq!(p.opcode, Opcode::HardResetServerV2);
        assert_eq!(p.session_id, SessionId([4; 8]));
        assert_eq!(p.acks, vec![0]);
        assert_eq!(p.remote_session_id, Some(SessionId([9; 8])));
        assert_eq!(p.message_id, Some(0));
        assert_eq!(p.payload, b"");
        let ask = EarlyNegotiation { resend_wkc: true };
        let wire = reset_reply(&ControlWrap::None, 0, &reset, SessionId([4; 8]), ask);
        let p = ControlPacket::parse(&wire).unwrap();
        assert_eq!(EarlyNegotiation::parse(&p.payload), Ok(ask));
    }
}
