//! Key states: creating one, starting a renegotiation, driving the TLS
//! handshake and the reliability layer of each, phase changes, failure and
//! closing.

use std::io::Read;
use std::time::Instant;

use tracing::{info, warn};

use super::{
    Event, MAX_PLAINTEXT_BUFFER, MIN_PEER_RENEG_INTERVAL, PEER_RENEG_BURST, Session, SessionError,
    tls,
};
use crate::data::Side;
use crate::key_method::KeyMethod2;
use crate::reliable::Reliable;
use crate::wire::{EarlyNegotiation, Opcode};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    /// Waiting for the peer's hard/soft reset (or, client key 0, for our reset's ACK).
    Reset,
    /// TLS handshake in progress.
    Handshake,
    /// TLS up; key-method-2 messages being exchanged.
    KeyExchange,
    /// Keys exchanged; waiting for our last packets to be acknowledged.
    Established,
    /// Everything acknowledged: the key is the send key.
    Active,
}

pub(super) struct KeyState {
    pub(super) key_id: u8,
    pub(super) phase: Phase,
    pub(super) reliable: Reliable,
    pub(super) tls: rustls::Connection,
    /// TLS bytes produced but not yet cut into CONTROL_V1 packets (send window full).
    pub(super) tls_out: Vec<u8>,
    pub(super) plaintext: Vec<u8>,
    pub(super) local_km: Option<KeyMethod2>,
    pub(super) remote_km: Option<KeyMethod2>,
    pub(super) keys_installed: bool,
    pub(super) deadline: Instant,
    /// When the key state began (its renegotiation started).
    pub(super) started: Instant,
    /// Set when this key became the lame duck.
    pub(super) retire_at: Option<Instant>,
}

impl KeyState {
    /// Move what rustls has to send (handshake records, alerts, data) to
    /// `tls_out`, to be cut into packets.
    pub(super) fn drain_tls_output(&mut self) {
        let mut out = Vec::new();
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut out).is_err() {
                break;
            }
        }
        self.tls_out.extend_from_slice(&out);
    }
}

impl Session {
    pub(super) fn new_key_state(&self, key_id: u8, now: Instant) -> Result<KeyState, SessionError> {
        let tls = match self.cfg.side {
            Side::Server => {
                let c = self
                    .cfg
                    .tls_server
                    .clone()
                    .ok_or(SessionError::NoTlsConfig)?;
                rustls::Connection::Server(rustls::ServerConnection::new(c)?)
            }
            Side::Client => {
                let c = self
                    .cfg
                    .tls_client
                    .clone()
                    .ok_or(SessionError::NoTlsConfig)?;
                rustls::Connection::Client(rustls::ClientConnection::new(
                    c,
                    tls::placeholder_server_name(),
                )?)
            }
        };
        Ok(KeyState {
            key_id,
            phase: Phase::Reset,
            reliable: Reliable::new(self.cfg.tls_timeout),
            tls,
            tls_out: Vec::new(),
            plaintext: Vec::new(),
            local_km: None,
            remote_km: None,
            keys_installed: false,
            deadline: now + self.cfg.hand_window,
            started: now,
            retire_at: None,
        })
    }

    pub(super) fn key_index(&self, key_id: u8) -> Option<usize> {
        self.keys.iter().position(|k| k.key_id == key_id)
    }

    /// The key_id a renegotiation would use now: the one after the current
    /// key (7 wraps to 1; 0 is only for the first key), provided the session
    /// is established and no renegotiation is running.
    pub(super) fn next_key_id(&self) -> Result<u8, SessionError> {
        let current = self.current_key.ok_or(SessionError::NotEstablished)?;
        if self
            .keys
            .iter()
            .any(|k| k.phase != Phase::Active && k.retire_at.is_none())
        {
            return Err(SessionError::RenegotiationInProgress);
        }
        Ok(if current == 7 { 1 } else { current + 1 })
    }

    pub(super) fn accept_soft_reset(
        &mut self,
        now: Instant,
        key_id: u8,
    ) -> Result<(), SessionError> {
        let expected = self.next_key_id()?;
        let due = self.peer_reneg_due.map_or(now, |t| t.max(now));
        if due > now + MIN_PEER_RENEG_INTERVAL * (PEER_RENEG_BURST - 1) {
            return Err(SessionError::SoftResetTooSoon);
        }
        self.peer_reneg_due = Some(due + MIN_PEER_RENEG_INTERVAL);
        if key_id != expected {
            return Err(SessionError::KeyIdOutOfSync {
                got: key_id,
                expected,
            });
        }
        info!("peer started renegotiation, key_id {key_id}");
        self.begin_key_state(now, key_id)
    }

    /// Start a renegotiation ourselves (reneg-sec, packet-id exhaustion, or on request).
    pub fn start_renegotiation(&mut self, now: Instant) -> Result<(), SessionError> {
        let key_id = self.next_key_id()?;
        info!("starting renegotiation, key_id {key_id}");
        self.begin_key_state(now, key_id)?;
        self.flush(now);
        Ok(())
    }

    pub(super) fn begin_key_state(&mut self, now: Instant, key_id: u8) -> Result<(), SessionError> {
        // Only one lame duck is kept: a key older than the current one goes now.
        let current = self.current_key;
        let mut retired = Vec::new();
        self.keys.retain(|k| {
            let keep = Some(k.key_id) == current;
            if !keep {
                retired.push(k.key_id);
            }
            keep
        });
        for key_id in retired {
            self.events.push_back(Event::KeyRetired { key_id });
        }
        let mut ks = self.new_key_state(key_id, now)?;
        ks.reliable.send(now, Opcode::SoftResetV1, Vec::new());
        // Our own soft reset is in flight; TLS starts at once (the peer buffers it in order).
        ks.phase = Phase::Handshake;
        self.keys.push(ks);
        self.next_reneg = None;
        Ok(())
    }

    /// Run everything a key state can do after new input.
    pub(super) fn process_key_state(&mut self, now: Instant, idx: usize) {
        if let Err(e) = self.try_process_key_state(now, idx) {
            self.fail_key_state(now, idx, e);
        }
    }

    pub(super) fn try_process_key_state(
        &mut self,
        now: Instant,
        idx: usize,
    ) -> Result<(), SessionError> {
        let side = self.cfg.side;
        let mut resend_wkc = false;
        // Deliver in-order messages.
        loop {
            let ks = &mut self.keys[idx];
            let Some((opcode, payload)) = ks.reliable.pop_received() else {
                break;
            };
            match opcode {
                Opcode::HardResetClientV2 | Opcode::HardResetServerV2 | Opcode::SoftResetV1 => {
                    if opcode != Opcode::SoftResetV1 {
                        // 2.6 reads a hard reset's payload as TLVs and gives
                        // up the handshake on a malformed one.
                        let neg = EarlyNegotiation::parse(&payload)
                            .map_err(SessionError::BadEarlyNegotiation)?;
                        resend_wkc |= neg.resend_wkc && side == Side::Client;
                    }
                    if ks.phase == Phase::Reset {
                        ks.phase = Phase::Handshake;
                    }
                    if side == Side::Client && opcode == Opcode::HardResetServerV2 {
                        // The server's reset answers ours even if its ACK was lost.
                        ks.reliable.ack_received(0);
                    }
                }
                Opcode::ControlV1 | Opcode::ControlWkcV1 => {
                    let mut rd: &[u8] = &payload;
                    while !rd.is_empty() {
                        match ks.tls.read_tls(&mut rd) {
                            Ok(0) => break,
                            Ok(_) => {}
                            Err(e) => return Err(SessionError::TlsIo(e)),
                        }
                        ks.tls.process_new_packets()?;
                    }
                }
                _ => {}
            }
        }
        if resend_wkc && self.wrap.client_wkc().is_some() && self.keys[idx].key_id == 0 {
            self.resend_wkc = true;
        }
        let ks = &mut self.keys[idx];
        if ks.phase == Phase::Reset {
            return Ok(());
        }
        ks.tls.process_new_packets()?;
        if ks.phase == Phase::Handshake && !ks.tls.is_handshaking() {
            self.lock_peer_identity(idx)?;
            let ks = &mut self.keys[idx];
            ks.phase = Phase::KeyExchange;
            if side == Side::Client {
                if self.verify_peer {
                    // 2.6 verifies inside the handshake: a refused server
                    // never gets our key method, nor the password in it.
                    let key_id = ks.key_id;
                    self.await_verdict(key_id);
                } else {
                    self.send_client_key_method(idx)?;
                }
            }
        }
        let ks = &mut self.keys[idx];
        if matches!(
            ks.phase,
            Phase::KeyExchange | Phase::Established | Phase::Active
        ) {
            let mut buf = [0u8; 4096];
            loop {
                match ks.tls.reader().read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        ks.plaintext.extend_from_slice(&buf[..n]);
                        if ks.plaintext.len() > MAX_PLAINTEXT_BUFFER {
                            return Err(SessionError::OversizedControlMessage);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(SessionError::TlsIo(e)),
                }
            }
            self.process_plaintext(now, idx)?;
        }
        self.update_phase(now, idx);
        Ok(())
    }

    /// The first finished handshake fixes the peer's certificate; a later
    /// key state (renegotiation) showing another one fails, so a client
    /// cannot log in as one identity and continue as another.
    pub(super) fn lock_peer_identity(&mut self, idx: usize) -> Result<(), SessionError> {
        let leaf = self.keys[idx]
            .tls
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| {
                let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, c.as_ref());
                let mut h = [0u8; 32];
                h.copy_from_slice(d.as_ref());
                h
            });
        match self.peer_leaf_sha256 {
            None => {
                self.peer_leaf_sha256 = Some(leaf);
                Ok(())
            }
            Some(locked) if locked == leaf => Ok(()),
            Some(_) => Err(SessionError::PeerIdentityChanged),
        }
    }

    pub(super) fn update_phase(&mut self, now: Instant, idx: usize) {
        let ks = &mut self.keys[idx];
        if ks.phase == Phase::KeyExchange && ks.local_km.is_some() && ks.remote_km.is_some() {
            ks.phase = Phase::Established;
            if self.cfg.side == Side::Client
                && !self.cfg.p2p
                && ks.key_id == 0
                && !self.push_received
            {
                self.next_push_request = Some(now);
                self.established_at = Some(now);
                // An AUTH_PENDING that came first keeps its deadline (2.6's
                // check_connection_established).
                if self.push_request_deadline.is_none_or(|d| d < now) {
                    self.push_request_deadline = Some(now + self.cfg.hand_window);
                }
            }
        }
        let ks = &mut self.keys[idx];
        if ks.phase != Phase::KeyExchange && ks.keys_installed {
            // The data keys are derived: the key-method-2 secrets go
            // (zeroized on drop).
            ks.local_km = None;
            ks.remote_km = None;
        }
        let idle = ks.reliable.all_acked() && ks.tls_out.is_empty() && !ks.tls.wants_write();
        if ks.phase == Phase::Established && ks.keys_installed && idle {
            ks.phase = Phase::Active;
            let key_id = ks.key_id;
            let previous = self.current_key.replace(key_id);
            self.refused_key = None;
            info!("key_id {key_id} active");
            self.events.push_back(Event::SendKey { key_id });
            if let Some(prev) = previous.filter(|&p| p != key_id) {
                let tran = self.cfg.tran_window;
                if let Some(old) = self.keys.iter_mut().find(|k| k.key_id == prev) {
                    old.retire_at = Some(now + tran);
                }
            }
            self.next_reneg = self.cfg.reneg_interval.map(|d| now + d);
        }
    }

    pub(super) fn fail_key_state(&mut self, now: Instant, idx: usize, e: SessionError) {
        let key_id = self.keys[idx].key_id;
        warn!("key_id {key_id} negotiation failed: {e}");
        // Let rustls' alert (if any) reach the peer before the state goes.
        self.keys[idx].drain_tls_output();
        self.emit_packets(now, idx);
        // A failed renegotiation ends the session (stricter than 2.6 on
        // purpose): otherwise a client whose certificate was revoked, or
        // that ignores our soft resets, keeps its old key for ever.
        let reason = match self.current_key {
            Some(current) if current != key_id => SessionError::RenegotiationFailed {
                key_id,
                cause: Box::new(e),
            },
            _ => e,
        };
        self.close(reason);
    }

    pub(super) fn close(&mut self, reason: SessionError) {
        if self.closed {
            return;
        }
        self.closed = true;
        for k in &self.keys {
            if k.keys_installed {
                self.events
                    .push_back(Event::KeyRetired { key_id: k.key_id });
            }
        }
        self.events.push_back(Event::Closed(reason));
    }
}
