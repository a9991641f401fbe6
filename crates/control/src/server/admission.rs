//! What to do with a control packet that no session of ours claims: the
//! stateless handshake of 2.6 (see `ferrovpn_proto::session::cookie`).
//! Nothing is kept for a peer until it proves, from its address, that it
//! got our answer. A tls-crypt-v2 client's packets carry its wrapped key,
//! so each is opened (key, then packet) on its own and nothing of the
//! client is kept in between either. Pure: the caller owns the socket, the
//! sessions and the rate limits.

use std::net::SocketAddr;
use std::time::Duration;

use ferrovpn_proto::session::cookie::{self, CookieKey};
use ferrovpn_proto::tls_crypt_v2::{self, ServerKey};
use ferrovpn_proto::wire::{
    ControlPacket, EarlyNegotiation, Opcode, SessionId, announces_early_negotiation, parse_prefix,
};
use ferrovpn_proto::wrap::{ControlWrap, ReplayId};

/// The decision for one packet.
#[derive(Debug)]
pub enum Admit {
    /// It belongs to a session we have: hand it to that session.
    Existing,
    /// A client's first reset: send this answer and keep nothing.
    ResetReply(Vec<u8>),
    /// The client echoed a valid cookie: a session may be made, wrapping
    /// with `client_wrap` (a tls-crypt-v2 client's key) if there is one.
    NewSession {
        ours: SessionId,
        pkt: ControlPacket,
        replay: Option<ReplayId>,
        client_wrap: Option<ControlWrap>,
        /// A tls-crypt-v2 client's key metadata (for `tls-crypt-v2-verify`).
        metadata: Option<tls_crypt_v2::Metadata>,
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
    /// A tls-crypt-v2 client that cannot resend its key (2.4/2.5), which
    /// only a server keeping state on its first packet could take.
    NoEarlyNegotiation,
}

impl Dropped {
    /// Whether it deserves a (rate-limited) warning rather than a debug
    /// line: hostile or broken packets, and clients that can never get in.
    pub fn is_hostile(&self) -> bool {
        matches!(self, Dropped::Malformed(_) | Dropped::NoEarlyNegotiation)
    }
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Dropped::Malformed(why) => f.write_str(why),
            Dropped::NotAStart(op) => write!(f, "{op:?} from unknown session dropped"),
            Dropped::ResetThrottled => f.write_str("reset dropped (connect-freq-initial)"),
            Dropped::BadCookie(op) => write!(f, "{op:?} without a valid cookie dropped"),
            Dropped::NoEarlyNegotiation => f.write_str(
                "tls-crypt-v2 client without early negotiation (OpenVPN before 2.6) dropped: only stateless handshakes are supported",
            ),
        }
    }
}

/// The server's side of the stateless handshake.
pub struct Stateless<'a> {
    pub wrap: &'a ControlWrap,
    /// `tls-crypt-v2` server key: clients with their own keys.
    pub tls_crypt_v2: Option<&'a ServerKey>,
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
                Opcode::HardResetClientV2
                    | Opcode::HardResetClientV3
                    | Opcode::ControlV1
                    | Opcode::AckV1
                    | Opcode::ControlWkcV1
            )
        {
            return Admit::Drop(Dropped::NotAStart(opcode));
        }
        let malformed =
            |e: &dyn std::fmt::Display| Admit::Drop(Dropped::Malformed(format!("{opcode:?}: {e}")));
        let (pkt, replay, client_wrap, metadata) = if tls_crypt_v2::carries_wkc(opcode) {
            let Some(server_key) = self.tls_crypt_v2 else {
                return malformed(&"client wants tls-crypt-v2, but no tls-crypt-v2 key is set");
            };
            match server_key.open(packet) {
                Ok(o) => (o.pkt, Some(o.replay), Some(o.wrap), Some(o.metadata)),
                Err(e) => return malformed(&e),
            }
        } else if self.tls_crypt_v2.is_some() && self.wrap.is_none() {
            // As 2.6: with tls-crypt-v2, every client wraps somehow.
            return malformed(&"not wrapped, and this server requires tls-crypt-v2");
        } else {
            match self.wrap.unwrap(packet) {
                Ok((pkt, replay)) => (pkt, replay, None, None),
                Err(e) => return malformed(&e),
            }
        };
        if matches!(
            opcode,
            Opcode::HardResetClientV2 | Opcode::HardResetClientV3
        ) {
            if pkt.message_id != Some(0) || !pkt.acks.is_empty() {
                return Admit::Drop(Dropped::Malformed(
                    "client reset with message id or ACKs".into(),
                ));
            }
            // A tls-crypt-v2 client must be able to send its key again.
            let neg = EarlyNegotiation {
                resend_wkc: client_wrap.is_some(),
            };
            if neg.resend_wkc && !replay.is_some_and(|r| announces_early_negotiation(r.id)) {
                return Admit::Drop(Dropped::NoEarlyNegotiation);
            }
            // Checked only for a valid reset, as 2.6 does: garbage does not
            // use up the budget of real clients.
            if !allow_reset() {
                return Admit::Drop(Dropped::ResetThrottled);
            }
            let slot = CookieKey::time_slot(unix, self.hand_window);
            let ours = self.cookies.session_id(slot, from, pkt.session_id);
            let wrap = client_wrap.as_ref().unwrap_or(self.wrap);
            return Admit::ResetReply(cookie::reset_reply(wrap, unix, &pkt, ours, neg));
        }
        match pkt.remote_session_id.filter(|&echo| {
            self.cookies
                .verify(unix, self.hand_window, from, pkt.session_id, echo)
        }) {
            Some(ours) => Admit::NewSession {
                ours,
                pkt,
                replay,
                client_wrap,
                metadata,
            },
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
            tls_crypt_v2: None,
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

    /// A tls-crypt-v2 client with `key`: its reset and its CONTROL_WKC_V1
    /// echoing the cookie, wrapped as the client wraps them.
    fn v2_packets(
        key: &ferrovpn_proto::tls_crypt_v2::ClientKey,
        first_replay: u32,
        echo: Option<SessionId>,
    ) -> Vec<u8> {
        let (opcode, message_id) = match echo {
            None => (Opcode::HardResetClientV3, 0),
            Some(_) => (Opcode::ControlWkcV1, 1),
        };
        let pkt = ControlPacket {
            opcode,
            key_id: 0,
            session_id: SessionId([7; 8]),
            acks: echo.map(|_| vec![0]).unwrap_or_default(),
            remote_session_id: echo,
            message_id: Some(message_id),
            payload: Vec::new(),
        };
        let mut out = Vec::new();
        let replay = ReplayId {
            id: first_replay + message_id,
            time: 0,
        };
        ControlWrap::tls_crypt_v2_client(key).wrap(&pkt, replay, &mut out);
        out
    }

    #[test]
    fn tls_crypt_v2_client_is_answered_and_admitted_statelessly() {
        use ferrovpn_proto::tls_crypt_v2::{ClientKey, Metadata};
        use ferrovpn_proto::wire::EARLY_NEG_START;
        let server_key = ServerKey::from_bytes(&[3; 128]);
        let client_key = ClientKey::generate(&server_key, &Metadata::timestamp(UNIX)).unwrap();
        let (wrap, cookies) = (ControlWrap::None, CookieKey::from_bytes(&[1; 32]));
        let st = Stateless {
            tls_crypt_v2: Some(&server_key),
            ..stateless(&wrap, &cookies)
        };
        let from = addr("192.0.2.1:5000");
        let reset = v2_packets(&client_key, EARLY_NEG_START + 1, None);
        let reply = match st.admit(UNIX, from, &reset, |_| false, || true) {
            Admit::ResetReply(bytes) => bytes,
            other => panic!("expected a reset answer, got {other:?}"),
        };
        // Wrapped with the client's key, asking for its key again.
        let (reply, _) = ControlWrap::tls_crypt_v2_client(&client_key)
            .unwrap(&reply)
            .unwrap();
        assert_eq!(reply.opcode, Opcode::HardResetServerV2);
        assert_eq!(
            EarlyNegotiation::parse(&reply.payload),
            Ok(EarlyNegotiation { resend_wkc: true })
        );
        let third = v2_packets(&client_key, EARLY_NEG_START + 1, Some(reply.session_id));
        match st.admit(UNIX, from, &third, |_| false, || panic!("not a reset")) {
            Admit::NewSession {
                ours, client_wrap, ..
            } => {
                assert_eq!(ours, reply.session_id);
                assert!(matches!(client_wrap, Some(ControlWrap::TlsCryptV2(_))));
            }
            other => panic!("expected a new session, got {other:?}"),
        }
        // A client without early negotiation is not answered, nor counted.
        let old = v2_packets(&client_key, 1, None);
        let d = st.admit(UNIX, from, &old, |_| false, || panic!("counted"));
        assert!(matches!(d, Admit::Drop(Dropped::NoEarlyNegotiation)));
        // A key wrapped by another server key, or no tls-crypt-v2 at all:
        // dropped before anything is counted.
        let foreign =
            ClientKey::generate(&ServerKey::from_bytes(&[4; 128]), &Metadata::user(b"x")).unwrap();
        let reset = v2_packets(&foreign, EARLY_NEG_START + 1, None);
        let d = st.admit(UNIX, from, &reset, |_| false, || panic!("counted"));
        assert!(matches!(d, Admit::Drop(ref r) if r.is_hostile()), "{d:?}");
        let plain = packet(Opcode::HardResetClientV2, 7, None, Some(0));
        let d = st.admit(UNIX, from, &plain, |_| false, || panic!("counted"));
        assert!(matches!(d, Admit::Drop(ref r) if r.is_hostile()), "{d:?}");
        let v1_only = stateless(&wrap, &cookies);
        let reset = v2_packets(&client_key, EARLY_NEG_START + 1, None);
        let d = v1_only.admit(UNIX, from, &reset, |_| false, || panic!("counted"));
        assert!(matches!(d, Admit::Drop(ref r) if r.is_hostile()), "{d:?}");
    }
}
