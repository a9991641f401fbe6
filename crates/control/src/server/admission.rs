//! What to do with a control packet that no session of ours claims: the
//! stateless handshake of 2.6 (see `ferrovpn_proto::session::cookie`).
//! Nothing is kept for a peer until it proves, from its address, that it
//! got our answer. Pure: the caller owns the socket, the sessions and the
//! rate limits.

use std::net::SocketAddr;
use std::time::Duration;

use ferrovpn_proto::session::cookie::{self, CookieKey};
use ferrovpn_proto::wire::{ControlPacket, Opcode, SessionId, parse_prefix};
use ferrovpn_proto::wrap::{ControlWrap, ReplayId};

/// The decision for one packet.
#[derive(Debug)]
pub enum Admit {
    /// It belongs to a session we have: hand it to that session.
    Existing,
    /// A client's first reset: send this answer and keep nothing.
    ResetReply(Vec<u8>),
    /// The client echoed a valid cookie: a session may be made.
    NewSession {
        ours: SessionId,
        pkt: ControlPacket,
        replay: Option<ReplayId>,
    },
    Drop(Dropped),
}

/// Why a packet was dropped.
#[derive(Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Not a control packet we can read, or failing the tls-auth/tls-crypt
    /// check: hostile or broken, worth a (rate-limited) warning.
    Malformed(String),
    /// A readable packet that cannot start a session (a late packet of a
    /// session we closed, another key_id, a data packet...).
    NotAStart(Opcode),
    /// A reset beyond `connect-freq-initial`.
    ResetThrottled,
    /// No valid cookie echoed.
    BadCookie(Opcode),
}

impl Dropped {
    /// Whether it deserves a warning (rather than a debug line).
    pub fn is_hostile(&self) -> bool {
        matches!(self, Dropped::Malformed(_))
    }
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dropped::Malformed(why) => f.write_str(why),
            Dropped::NotAStart(op) => write!(f, "{op:?} from unknown session dropped"),
            Dropped::ResetThrottled => f.write_str("reset dropped (connect-freq-initial)"),
            Dropped::BadCookie(op) => write!(f, "{op:?} without a valid cookie dropped"),
        }
    }
}

/// The server's side of the stateless handshake.
pub struct Stateless<'a> {
    pub wrap: &'a ControlWrap,
    pub cookies: &'a CookieKey,
    pub hand_window: Duration,
}

impl Stateless<'_> {
    /// Decide about `packet` from `from` at Unix time `unix`. `known` says
    /// whether a session of ours at `from` has this client session id;
    /// `allow_reset` is asked (once) before a reset is answered.
    pub fn admit(
        &self,
        unix: u64,
        from: SocketAddr,
        packet: &[u8],
        known: impl FnOnce(SessionId) -> bool,
        allow_reset: impl FnOnce() -> bool,
    ) -> Admit {
        let (opcode, key_id, sid) = match parse_prefix(packet) {
            Ok(p) => p,
            Err(e) => return Admit::Drop(Dropped::Malformed(e.to_string())),
        };
        if known(sid) {
            return Admit::Existing;
        }
        if key_id != 0
            || !matches!(
                opcode,
                Opcode::HardResetClientV2 | Opcode::ControlV1 | Opcode::AckV1
            )
        {
            return Admit::Drop(Dropped::NotAStart(opcode));
        }
        let (pkt, replay) = match self.wrap.unwrap(packet) {
            Ok(v) => v,
            Err(e) => return Admit::Drop(Dropped::Malformed(format!("{opcode:?}: {e}"))),
        };
        if opcode == Opcode::HardResetClientV2 {
            if pkt.message_id != Some(0) || !pkt.acks.is_empty() {
                return Admit::Drop(Dropped::Malformed(
                    "client reset with message id or ACKs".into(),
                ));
            }
            // Checked only for a valid reset, as 2.6 does: garbage does not
            // use up the budget of real clients.
            if !allow_reset() {
                return Admit::Drop(Dropped::ResetThrottled);
            }
            let slot = CookieKey::time_slot(unix, self.hand_window);
            let ours = self.cookies.session_id(slot, from, pkt.session_id);
            return Admit::ResetReply(cookie::reset_reply(self.wrap, unix, &pkt, ours));
        }
        match pkt.remote_session_id.filter(|&echo| {
            self.cookies
                .verify(unix, self.hand_window, from, pkt.session_id, echo)
        }) {
            Some(ours) => Admit::NewSession { ours, pkt, replay },
            None => Admit::Drop(Dropped::BadCookie(opcode)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovpn_proto::wrap::{STATIC_KEY_LEN, StaticKey};

    const UNIX: u64 = 1_800_000_000;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn packet(
        opcode: Opcode,
        sid: u8,
        echo: Option<SessionId>,
        message_id: Option<u32>,
    ) -> Vec<u8> {
        let pkt = ControlPacket {
            opcode,
            key_id: 0,
            session_id: SessionId([sid; 8]),
            acks: echo.map(|_| vec![0]).unwrap_or_default(),
            remote_session_id: echo,
            message_id,
            payload: Vec::new(),
        };
        let mut out = Vec::new();
        ControlWrap::None.wrap(&pkt, ReplayId { id: 1, time: 0 }, &mut out);
        out
    }

    fn stateless<'a>(wrap: &'a ControlWrap, cookies: &'a CookieKey) -> Stateless<'a> {
        Stateless {
            wrap,
            cookies,
            hand_window: Duration::from_secs(60),
        }
    }

    fn answer(admit: Admit) -> ControlPacket {
        match admit {
            Admit::ResetReply(bytes) => ControlPacket::parse(&bytes).unwrap(),
            other => panic!("expected a reset answer, got {other:?}"),
        }
    }

    #[test]
    fn a_reset_is_answered_and_the_echo_makes_a_session() {
        let (wrap, key) = (ControlWrap::None, CookieKey::from_bytes(&[1; 32]));
        let st = stateless(&wrap, &key);
        let from = addr("192.0.2.1:5000");
        let reset = packet(Opcode::HardResetClientV2, 7, None, Some(0));
        let reply = answer(st.admit(UNIX, from, &reset, |_| false, || true));
        assert_eq!(reply.opcode, Opcode::HardResetServerV2);
        assert_eq!(reply.remote_session_id, Some(SessionId([7; 8])));

        let ack = packet(Opcode::AckV1, 7, Some(reply.session_id), None);
        match st.admit(UNIX + 1, from, &ack, |_| false, || panic!("not a reset")) {
            Admit::NewSession { ours, pkt, .. } => {
                assert_eq!(ours, reply.session_id);
                assert_eq!(pkt.session_id, SessionId([7; 8]));
            }
            other => panic!("expected a new session, got {other:?}"),
        }
        // The same echo from another port, or a later time, does not verify.
        let elsewhere = st.admit(UNIX, addr("192.0.2.1:5001"), &ack, |_| false, || true);
        assert!(matches!(
            elsewhere,
            Admit::Drop(Dropped::BadCookie(Opcode::AckV1))
        ));
        let late = st.admit(UNIX + 200, from, &ack, |_| false, || true);
        assert!(matches!(late, Admit::Drop(Dropped::BadCookie(_))));
        // A session that knows the client's id takes the packet.
        let known = st.admit(UNIX, from, &ack, |sid| sid == SessionId([7; 8]), || true);
        assert!(matches!(known, Admit::Existing));
    }

    #[test]
    fn throttled_resets_and_odd_packets_are_dropped() {
        let (wrap, key) = (ControlWrap::None, CookieKey::from_bytes(&[1; 32]));
        let st = stateless(&wrap, &key);
        let from = addr("192.0.2.1:5000");
        let reset = packet(Opcode::HardResetClientV2, 7, None, Some(0));
        let throttled = st.admit(UNIX, from, &reset, |_| false, || false);
        assert!(matches!(throttled, Admit::Drop(Dropped::ResetThrottled)));
        // A reset with a non-zero message id is not answered, nor counted.
        let odd = packet(Opcode::HardResetClientV2, 7, None, Some(3));
        let d = st.admit(UNIX, from, &odd, |_| false, || panic!("counted"));
        assert!(matches!(d, Admit::Drop(ref r) if r.is_hostile()));
        // A soft reset cannot start a session.
        let soft = packet(Opcode::SoftResetV1, 7, None, Some(0));
        let d = st.admit(UNIX, from, &soft, |_| false, || true);
        assert!(matches!(
            d,
            Admit::Drop(Dropped::NotAStart(Opcode::SoftResetV1))
        ));
        // Garbage.
        let d = st.admit(UNIX, from, &[0xff, 1, 2], |_| false, || true);
        assert!(matches!(d, Admit::Drop(ref r) if r.is_hostile()));
        // A CONTROL_V1 with no echo at all.
        let ctl = packet(Opcode::ControlV1, 7, None, Some(1));
        let d = st.admit(UNIX, from, &ctl, |_| false, || true);
        assert!(matches!(
            d,
            Admit::Drop(Dropped::BadCookie(Opcode::ControlV1))
        ));
    }

    #[test]
    fn wrapped_packets_must_pass_the_wrap() {
        let key = CookieKey::from_bytes(&[1; 32]);
        let tls_crypt = ControlWrap::tls_crypt(
            &StaticKey::from_bytes([9; STATIC_KEY_LEN]),
            ferrovpn_proto::data::Side::Server,
        );
        let st = stateless(&tls_crypt, &key);
        let plain = packet(Opcode::HardResetClientV2, 7, None, Some(0));
        let d = st.admit(UNIX, addr("192.0.2.1:5000"), &plain, |_| false, || true);
        assert!(matches!(d, Admit::Drop(ref r) if r.is_hostile()));
    }
}
