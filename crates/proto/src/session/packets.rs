//! Packets in and out: unwrapping and dispatching received control
//! packets to key states, cutting TLS output into packets, wrapping them.

use std::time::Instant;

use tracing::debug;

use super::key_state::{KeyState, Phase};
use super::{Event, MAX_CONTROL_PAYLOAD, MAX_TLS_BACKLOG, Session, SessionError};
use crate::data::Side;
use crate::reliable::Received;
use crate::wire::{ControlPacket, MAX_ACKS, MAX_ACKS_ON_RELIABLE, Opcode};
use crate::wrap::ReplayId;

impl Session {
    /// Feed one datagram received from the peer's address. Returns whether
    /// the session accepted it (it passed the tls-auth/tls-crypt check, the
    /// replay window and the session-id checks): only such a packet shows
    /// the peer is alive.
    pub fn handle_packet(&mut self, now: Instant, wire: &[u8]) -> bool {
        if self.closed {
            return false;
        }
        let accepted = match self.wrap.unwrap(wire) {
            Ok((pkt, replay)) => self.handle_control(now, pkt, replay),
            Err(e) => {
                debug!("dropping control packet: {e}");
                false
            }
        };
        if accepted {
            self.last_peer_packet = now;
        }
        self.flush(now);
        accepted
    }

    /// Feed an already unwrapped (and authenticated) control packet. Returns
    /// whether a key state took it (see [`Session::handle_packet`]).
    pub fn handle_control(
        &mut self,
        now: Instant,
        pkt: ControlPacket,
        replay: Option<ReplayId>,
    ) -> bool {
        if self.closed {
            return false;
        }
        if pkt.payload.len() > MAX_CONTROL_PAYLOAD {
            debug!(
                "dropping control packet with a {}-byte payload",
                pkt.payload.len()
            );
            return false;
        }
        if let Some(r) = replay {
            let secs = now.saturating_duration_since(self.epoch).as_secs();
            if let Err(e) = self.replay_in.check_and_commit(r, secs) {
                debug!("dropping control packet: {e}");
                return false;
            }
        }
        match (self.remote_sid, pkt.opcode) {
            (None, Opcode::HardResetServerV2) if self.cfg.side == Side::Client => {
                if pkt.key_id != 0 || pkt.message_id != Some(0) {
                    return false;
                }
                self.remote_sid = Some(pkt.session_id);
            }
            // A point-to-point TLS server that sent its reset first
            // ([`Session::initiate_p2p_server`]) learns the peer's session
            // from the peer's reset.
            (None, Opcode::HardResetClientV2) if self.cfg.side == Side::Server => {
                if pkt.key_id != 0 || pkt.message_id != Some(0) {
                    return false;
                }
                self.remote_sid = Some(pkt.session_id);
            }
            (Some(sid), _) if sid == pkt.session_id => {}
            _ => {
                debug!(
                    "dropping control packet from unknown session {:?}",
                    pkt.session_id
                );
                return false;
            }
        }
        if !pkt.acks.is_empty() && pkt.remote_session_id != Some(self.local_sid) {
            debug!("dropping control packet acknowledging another session");
            return false;
        }
        // A client's V3 reset only ever starts a session (the server's
        // admission takes it); a WKC_V1 goes from client to server.
        let wrong_role = match self.cfg.side {
            Side::Server => pkt.opcode == Opcode::HardResetServerV2,
            Side::Client => matches!(pkt.opcode, Opcode::HardResetClientV2 | Opcode::ControlWkcV1),
        };
        if wrong_role || pkt.opcode == Opcode::HardResetClientV3 {
            debug!("dropping unexpected {:?}", pkt.opcode);
            return false;
        }
        if pkt.opcode == Opcode::SoftResetV1
            && self.key_index(pkt.key_id).is_none()
            && let Err(e) = self.accept_soft_reset(now, pkt.key_id)
        {
            debug!("refusing soft reset: {e}");
            return false;
        }
        let Some(idx) = self.key_index(pkt.key_id) else {
            debug!("dropping control packet for unknown key_id {}", pkt.key_id);
            return false;
        };
        let ks = &mut self.keys[idx];
        for &a in &pkt.acks {
            ks.reliable.ack_received(a);
        }
        if let Some(id) = pkt.message_id {
            let is_reset = matches!(
                pkt.opcode,
                Opcode::HardResetClientV2 | Opcode::HardResetServerV2 | Opcode::SoftResetV1
            );
            if is_reset && id != 0 {
                return false;
            }
            if ks.reliable.receive(id, pkt.opcode, pkt.payload) == Received::OutOfWindow {
                debug!("control message {id} beyond the receive window");
            }
        }
        self.process_key_state(now, idx);
        true
    }

    /// Next datagram to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.outgoing.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Cut pending TLS output into packets and emit everything due.
    pub(super) fn flush(&mut self, now: Instant) {
        for idx in 0..self.keys.len() {
            // TLS output only flows once the peer's reset arrived (we need its sid).
            if self.keys[idx].phase != Phase::Reset {
                let ks = &mut self.keys[idx];
                ks.drain_tls_output();
                if ks.tls_out.len() > MAX_TLS_BACKLOG {
                    self.fail_key_state(now, idx, SessionError::ControlBacklog);
                    return;
                }
            }
            self.emit_packets(now, idx);
            self.update_phase(now, idx);
        }
    }

    pub(super) fn next_replay_id(&mut self) -> ReplayId {
        self.replay_out.id = self.replay_out.id.wrapping_add(1);
        self.replay_out
    }

    pub(super) fn emit_packets(&mut self, now: Instant, idx: usize) {
        let max_payload = self.cfg.max_control_payload();
        let wkc_len = self.wrap.client_wkc().map_or(0, <[u8]>::len);
        let resend_wkc = self.resend_wkc;
        let ks = &mut self.keys[idx];
        // The packet that must carry WKc again: msg_id 1 of key_id 0.
        let wkc_due =
            |ks: &KeyState| resend_wkc && ks.key_id == 0 && ks.reliable.next_send_id() == 1;
        while !ks.tls_out.is_empty() && ks.reliable.can_send() {
            let (opcode, room) = if wkc_due(ks) {
                // WKc travels in the same datagram; 2.6 keeps 16 bytes at least.
                (
                    Opcode::ControlWkcV1,
                    max_payload.saturating_sub(wkc_len).max(16),
                )
            } else {
                (Opcode::ControlV1, max_payload)
            };
            let n = ks.tls_out.len().min(room);
            let chunk: Vec<u8> = ks.tls_out.drain(..n).collect();
            ks.reliable.send(now, opcode, chunk);
        }
        if wkc_due(ks) && ks.reliable.has_pending_acks() && ks.reliable.can_send() {
            // Instead of a bare ACK, which the server could not read
            // without WKc: an empty CONTROL_WKC_V1 carrying the ACK.
            ks.reliable.send(now, Opcode::ControlWkcV1, Vec::new());
        }
        let key_id = ks.key_id;
        let mut sent_any = false;
        let remote = self.remote_sid;
        loop {
            let ks = &mut self.keys[idx];
            let Some((id, opcode, payload)) = ks.reliable.poll_transmit(now) else {
                break;
            };
            let payload = payload.to_vec();
            // A client's first reset cannot carry ACKs (it knows no peer sid yet).
            let acks = if remote.is_some() {
                ks.reliable.take_acks(MAX_ACKS_ON_RELIABLE)
            } else {
                Vec::new()
            };
            let pkt = ControlPacket {
                opcode,
                key_id,
                session_id: self.local_sid,
                remote_session_id: if acks.is_empty() { None } else { remote },
                acks,
                message_id: Some(id),
                payload,
            };
            self.push_wire(&pkt);
            sent_any = true;
        }
        let ks = &mut self.keys[idx];
        if !sent_any && ks.reliable.has_pending_acks() && remote.is_some() {
            let acks = ks.reliable.take_acks(MAX_ACKS);
            let pkt = ControlPacket {
                opcode: Opcode::AckV1,
                key_id,
                session_id: self.local_sid,
                acks,
                remote_session_id: remote,
                message_id: None,
                payload: Vec::new(),
            };
            self.push_wire(&pkt);
        }
    }

    pub(super) fn push_wire(&mut self, pkt: &ControlPacket) {
        let replay = self.next_replay_id();
        let mut out = Vec::with_capacity(pkt.payload.len() + 128);
        self.wrap.wrap(pkt, replay, &mut out);
        self.outgoing.push_back(out);
    }
}
