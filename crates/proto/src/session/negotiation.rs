//! Key-method-2 exchange and data-channel negotiation: cipher choice from
//! peer info, AUTH_FAILED, key derivation and the client's use of the
//! push reply.

use std::io::Write;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::key_state::Phase;
use super::{Event, Session, SessionError, ncp};
use crate::data::{Cipher, KeyBlock, Side};
use crate::kdf;
use crate::key_method::{Credentials, KeyMethod2, KeyMethodError, PeerInfo};
use crate::push::PushReply;

impl Session {
    pub(super) fn process_plaintext(
        &mut self,
        now: Instant,
        idx: usize,
    ) -> Result<(), SessionError> {
        let side = self.cfg.side;
        // The key-method-2 message comes first; once the exchange is done
        // (and its secrets dropped) everything is text.
        if self.keys[idx].phase == Phase::KeyExchange && self.keys[idx].remote_km.is_none() {
            let ks = &mut self.keys[idx];
            let (km, used) = match KeyMethod2::decode(&ks.plaintext, side == Side::Server) {
                Ok(v) => v,
                Err(KeyMethodError::Incomplete) => return Ok(()),
                Err(e) => return Err(SessionError::BadKeyMethod(e)),
            };
            ks.plaintext.drain(..used);
            ks.remote_km = Some(km);
            self.on_remote_key_method(now, idx)?;
        }
        // Text messages: NUL-terminated; keep an unterminated tail for later.
        loop {
            let ks = &mut self.keys[idx];
            let Some(end) = ks.plaintext.iter().position(|&b| b == 0) else {
                break;
            };
            let msg: Vec<u8> = ks.plaintext.drain(..=end).collect();
            let text = String::from_utf8_lossy(&msg[..end]);
            let text = text.trim_end_matches(['\r', '\n']);
            if text.is_empty() {
                continue;
            }
            if text.chars().any(|c| c.is_control()) {
                warn!("ignoring control message with non-printable characters");
                continue;
            }
            let text = text.to_owned();
            self.handle_text(now, &text);
        }
        Ok(())
    }

    pub(super) fn on_remote_key_method(
        &mut self,
        now: Instant,
        idx: usize,
    ) -> Result<(), SessionError> {
        let key_id = self.keys[idx].key_id;
        match self.cfg.side {
            Side::Server => {
                if self.cfg.p2p
                    && key_id == 0
                    && let Err(e) = self.p2p_negotiate(idx)
                {
                    // 2.6 fails in do_up and restarts; the peer's
                    // hand-window runs out without our key method.
                    self.close(e);
                    return Ok(());
                }
                let remote = self.keys[idx]
                    .remote_km
                    .as_ref()
                    .ok_or(SessionError::NotEstablished)?;
                if self.require_credentials && !remote.credentials_sent {
                    // 2.6's key_method_2_read fails: a TLS error, no reply
                    // (the client gives up after its hand-window).
                    warn!("TLS Error: Auth Username/Password was not provided by peer");
                    self.close(SessionError::CredentialsMissing);
                    return Ok(());
                }
                // (P2P mode negotiated above, its own way.)
                if !self.cfg.p2p && (key_id == 0 || self.peer_info.is_none()) {
                    // A client announcing compression (`,comp-lzo` in its
                    // options string) is accepted as by 2.6: the framing
                    // follows the server's own `comp-lzo`/`compress`.
                    let peer_info = PeerInfo::parse(&remote.peer_info);
                    let occ_cipher = crate::key_method::options_string_cipher(&remote.options);
                    let Some(cipher) = ncp::select_for_client(
                        &self.cfg.data_ciphers,
                        self.cfg.data_ciphers_fallback,
                        &peer_info,
                        occ_cipher,
                    ) else {
                        return self.auth_failed(
                            now,
                            idx,
                            "Data channel cipher negotiation failed (no shared cipher)",
                        );
                    };
                    self.cipher = Some(cipher);
                    self.use_ekm = peer_info.tls_ekm();
                    self.peer_info = Some(peer_info);
                }
                if self.verify_peer {
                    // Nothing goes out before the verdict: a refused
                    // client hears no more, as from 2.6's failed handshake.
                    self.await_verdict(key_id);
                    return Ok(());
                }
                self.send_key_reply(idx)?;
            }
            Side::Client => {
                // Key 0 waits for the push reply, which names cipher and
                // derivation; in P2P mode the peer's key method does.
                if key_id == 0 && self.cfg.p2p {
                    if let Err(e) = self.p2p_negotiate(idx) {
                        self.close(e);
                        return Ok(());
                    }
                    self.install_keys(idx)?;
                } else if key_id != 0 {
                    self.install_keys(idx)?;
                }
            }
        }
        Ok(())
    }

    /// Server: answer the client's key-method-2 message of key state `idx`
    /// with ours, derive the data keys and tell the driver who logged in.
    fn send_key_reply(&mut self, idx: usize) -> Result<(), SessionError> {
        let key_id = self.keys[idx].key_id;
        let remote = self.keys[idx]
            .remote_km
            .as_ref()
            .ok_or(SessionError::NotEstablished)?;
        // 2.6 clears both when either is absent.
        let credentials = if remote.credentials_sent {
            Credentials {
                username: remote.username.clone(),
                password: remote.password.clone(),
                sent: true,
            }
        } else {
            Credentials::default()
        };
        // A P2P TLS server announces itself as 2.6 does (IV_CIPHERS,
        // IV_PROTO with NCP_P2P); a multi-client server sends none.
        let peer_info = if self.cfg.p2p {
            self.cfg.peer_info.clone()
        } else {
            String::new()
        };
        let km = KeyMethod2::new_random(false, self.cfg.options_string.clone(), peer_info);
        self.write_key_method(idx, km)?;
        self.install_keys(idx)?;
        if key_id == 0 {
            let common_name = self.peer_common_name();
            let (Some(peer_info), Some(cipher)) = (self.peer_info.clone(), self.cipher) else {
                return Err(SessionError::NotEstablished);
            };
            self.events.push_back(Event::ClientAuthenticated {
                common_name,
                peer_info,
                cipher,
                credentials,
            });
        } else {
            self.events.push_back(Event::Reauthenticate {
                key_id,
                credentials,
            });
        }
        Ok(())
    }

    /// Client: our key-method-2 message of key state `idx`, with the
    /// credentials to log in with (renegotiations included, as 2.6).
    pub(super) fn send_client_key_method(&mut self, idx: usize) -> Result<(), SessionError> {
        let mut km = KeyMethod2::new_random(
            true,
            self.cfg.options_string.clone(),
            self.cfg.peer_info.clone(),
        );
        if let Some((user, pass)) = &self.credentials {
            km.username.clone_from(user);
            km.password.clone_from(pass);
            km.credentials_sent = true;
        }
        self.write_key_method(idx, km)
    }

    /// Our key-method-2 message `km` into key state `idx`'s TLS stream,
    /// kept as that key state's own.
    fn write_key_method(&mut self, idx: usize, km: KeyMethod2) -> Result<(), SessionError> {
        let mut buf = Vec::new();
        km.encode(&mut buf);
        let ks = &mut self.keys[idx];
        ks.tls
            .writer()
            .write_all(&buf)
            .map_err(SessionError::TlsIo)?;
        ks.local_km = Some(km);
        Ok(())
    }

    /// Sets that the driver verifies the peer's chain itself (`tls-verify`,
    /// `PLUGIN_TLS_VERIFY`): in every key exchange, our key-method-2
    /// message (a client's, with its credentials; a server's reply) waits
    /// for [`Session::peer_verified`] ([`Event::VerifyPeer`] asks for it),
    /// as 2.6 verifies inside each TLS handshake and so sends nothing of
    /// the key exchange to a peer it refuses.
    pub fn verify_peer_before_key_method(&mut self) {
        self.verify_peer = true;
    }

    /// Server: a client's key-method-2 message must carry a login (2.6's
    /// rule when logins are checked without `auth-user-pass-optional`);
    /// one without closes the session with
    /// [`SessionError::CredentialsMissing`] before our reply, at every key
    /// exchange, as 2.6's `key_method_2_read` fails then.
    pub fn require_credentials(&mut self) {
        self.require_credentials = true;
    }

    /// Hold key `key_id`'s key-method-2 message and ask for the verdict.
    pub(super) fn await_verdict(&mut self, key_id: u8) {
        self.awaiting_verdict = Some(key_id);
        self.events.push_back(Event::VerifyPeer { key_id });
    }

    /// The driver's verdict on the peer's chain, after
    /// [`Event::VerifyPeer`] for `key_id`. Accepted: our key-method-2
    /// message goes out and the exchange goes on (a server's keys and
    /// [`Event::ClientAuthenticated`] / [`Event::Reauthenticate`] follow).
    /// Refused, on the first key: the session closes
    /// ([`SessionError::PeerRefused`]) without another word to the peer,
    /// which gives up after its hand-window as after 2.6's failed
    /// handshake. Refused on a renegotiation: the new key goes without a
    /// word to the peer and the old one keeps the tunnel until the
    /// renegotiation's start + `tran-window`, as 2.6's lame duck. Without that verdict pending
    /// (hand-window ran out meanwhile, or another key_id): nothing.
    pub fn peer_verified(&mut self, now: Instant, key_id: u8, accepted: bool) {
        if self.closed || self.awaiting_verdict != Some(key_id) {
            return;
        }
        self.awaiting_verdict = None;
        let Some(idx) = self.key_index(key_id) else {
            return;
        };
        if !accepted {
            if self.current_key.is_none_or(|current| current == key_id) {
                self.close(SessionError::PeerRefused);
            } else {
                self.refuse_renegotiation(idx);
            }
            return;
        }
        let sent = match self.cfg.side {
            Side::Server => self.send_key_reply(idx),
            Side::Client => self.send_client_key_method(idx),
        };
        match sent {
            Ok(()) => self.update_phase(now, idx),
            Err(e) => self.fail_key_state(now, idx, e),
        }
        self.flush(now);
    }

    /// A renegotiation whose peer chain was refused, as 2.6's failed TLS
    /// handshake of a session with a lame duck (ssl.c `tls_multi_process`:
    /// the session moves to `TM_LAME_DUCK`, no hard error): the new key
    /// state goes without a word to the peer, and the old key keeps the
    /// tunnel until the `must_die` its renegotiation gave it (start +
    /// `tran-window`, `key_state_soft_reset`); then, with no key left, the
    /// session ends ([`SessionError::RenegotiationFailed`] of
    /// [`SessionError::PeerRefused`]). The peer may renegotiate again
    /// meanwhile; that one is verified again.
    fn refuse_renegotiation(&mut self, idx: usize) {
        let refused = self.keys.remove(idx);
        warn!(
            "key_id {} negotiation failed: {}",
            refused.key_id,
            SessionError::PeerRefused
        );
        let must_die = refused.started + self.cfg.tran_window;
        self.refused_key = Some(refused.key_id);
        for k in &mut self.keys {
            k.retire_at = Some(k.retire_at.map_or(must_die, |t| t.min(must_die)));
        }
        self.close_without_keys();
    }

    /// A refused renegotiation left no key: the session ends.
    pub(super) fn close_without_keys(&mut self) {
        if let Some(key_id) = self.refused_key
            && self.keys.is_empty()
        {
            self.close(SessionError::RenegotiationFailed {
                key_id,
                cause: Box::new(SessionError::PeerRefused),
            });
        }
    }

    /// P2P NCP on key 0, as 2.6's `p2p_mode_ncp` (the TLS server runs it
    /// before writing its key method, the client after reading the
    /// server's): the cipher from both `IV_CIPHERS` lists, and with a peer
    /// that does P2P NCP, TLS-EKM keys, P_DATA_V2 with a peer-id from the
    /// exporter (or 'vpn' without it) and the EXIT goodbye.
    fn p2p_negotiate(&mut self, idx: usize) -> Result<(), SessionError> {
        let remote = self.keys[idx]
            .remote_km
            .as_ref()
            .ok_or(SessionError::NotEstablished)?;
        let peer_info = PeerInfo::parse(&remote.peer_info);
        let we_are_tls_server = self.cfg.side == Side::Server;
        let cipher = ncp::select_p2p(
            &self.cfg.data_ciphers,
            self.cfg.data_ciphers_fallback,
            &peer_info,
            we_are_tls_server,
        )
        .ok_or(SessionError::P2pNoCipher)?;
        let options = ncp::p2p_options(&peer_info);
        let peer_id = if !options.data_v2 {
            None
        } else if options.tls_ekm {
            let mut id = [0u8; 3];
            self.keys[idx].tls.export_keying_material(
                &mut id,
                kdf::P2P_PEER_ID_LABEL.as_bytes(),
                None,
            )?;
            Some(u32::from_be_bytes([0, id[0], id[1], id[2]]))
        } else {
            Some(ncp::P2P_FIXED_PEER_ID)
        };
        let link = super::P2pLink {
            cipher,
            tls_ekm: options.tls_ekm,
            peer_id,
            cc_exit: options.cc_exit,
        };
        info!(
            "P2P mode NCP negotiation result: TLS_export={}, DATA_v2={}, peer-id {}, cipher={}",
            u8::from(link.tls_ekm),
            u8::from(peer_id.is_some()),
            peer_id.map_or(-1, i64::from),
            cipher.name()
        );
        self.cipher = Some(cipher);
        self.use_ekm = link.tls_ekm;
        self.peer_info = Some(peer_info);
        self.p2p_link = Some(link);
        Ok(())
    }

    pub(super) fn auth_failed(
        &mut self,
        now: Instant,
        idx: usize,
        reason: &str,
    ) -> Result<(), SessionError> {
        warn!("refusing client: {reason}");
        if self.cfg.side == Side::Server && self.keys[idx].local_km.is_none() {
            // The client reads our key-method-2 message before any control
            // message (OpenVPN sends AUTH_FAILED after the key exchange);
            // text in its place reads as a bad key method. No keys follow:
            // `local_km` stays unset so the state never becomes established.
            let km = KeyMethod2::new_random(false, self.cfg.options_string.clone(), String::new());
            let mut buf = Vec::new();
            km.encode(&mut buf);
            let _ = self.keys[idx].tls.writer().write_all(&buf);
        }
        let msg = format!("AUTH_FAILED,{reason}");
        let _ = self.write_text(idx, &msg);
        self.events.push_back(Event::AuthFailed(reason.to_owned()));
        // Let the message go out; hand-window then closes the session.
        self.keys[idx].deadline = self.keys[idx].deadline.min(now + Duration::from_secs(5));
        Ok(())
    }

    /// Derive the data keys of key state `idx` and announce them.
    pub(super) fn install_keys(&mut self, idx: usize) -> Result<(), SessionError> {
        let cipher = self.cipher.ok_or(SessionError::NotEstablished)?;
        let ks = &self.keys[idx];
        if ks.keys_installed {
            return Ok(());
        }
        let block = if self.use_ekm {
            let mut out = [0u8; 256];
            ks.tls
                .export_keying_material(&mut out, kdf::EKM_LABEL.as_bytes(), None)?;
            KeyBlock(out)
        } else {
            let (Some(local), Some(remote)) = (&ks.local_km, &ks.remote_km) else {
                return Err(SessionError::NotEstablished);
            };
            let (c, s) = match self.cfg.side {
                Side::Client => (local, remote),
                Side::Server => (remote, local),
            };
            let remote_sid = self.remote_sid.ok_or(SessionError::NotEstablished)?;
            let (csid, ssid) = match self.cfg.side {
                Side::Client => (self.local_sid, remote_sid),
                Side::Server => (remote_sid, self.local_sid),
            };
            let pre_master = c.pre_master.ok_or(SessionError::MissingPreMaster)?;
            kdf::legacy_key_block(
                &pre_master,
                &c.random1,
                &s.random1,
                &c.random2,
                &s.random2,
                &csid,
                &ssid,
            )
        };
        let key_id = ks.key_id;
        self.keys[idx].keys_installed = true;
        self.events.push_back(Event::KeysReady {
            key_id,
            cipher,
            auth: self.cfg.data_auth,
            block: Box::new(block),
        });
        Ok(())
    }

    /// Client: take cipher and key derivation from the push reply.
    pub(super) fn apply_push(&mut self, reply: &PushReply) -> Result<(), SessionError> {
        use crate::push::PushOption;
        let mut cipher = None;
        let mut ekm = false;
        for o in &reply.options {
            match o {
                PushOption::Cipher(name) => {
                    let c = Cipher::from_name(name)
                        .ok_or_else(|| SessionError::UnsupportedPushedCipher(name.clone()))?;
                    if !self.cfg.data_ciphers.contains(&c)
                        && self.cfg.data_ciphers_fallback != Some(c)
                    {
                        return Err(SessionError::PushedCipherNotAllowed(name.clone()));
                    }
                    cipher = Some(c);
                }
                PushOption::KeyDerivation(k) if k == "tls-ekm" => ekm = true,
                PushOption::ProtocolFlags(flags) if flags.iter().any(|f| f == "tls-ekm") => {
                    ekm = true
                }
                _ => {}
            }
        }
        let cipher = match cipher {
            Some(c) => c,
            None => {
                // Nothing pushed: the server's OCC cipher if we allow it,
                // else the fallback if the server announced none (2.6).
                let occ = self
                    .keys
                    .iter()
                    .find(|k| k.key_id == 0)
                    .and_then(|k| k.remote_km.as_ref())
                    .and_then(|km| crate::key_method::options_string_cipher(&km.options));
                ncp::select_without_push(
                    &self.cfg.data_ciphers,
                    self.cfg.data_ciphers_fallback,
                    occ,
                )
                .map_err(SessionError::PushedCipherNotAllowed)?
                .ok_or(SessionError::NoPushedCipher)?
            }
        };
        self.cipher = Some(cipher);
        self.use_ekm = ekm;
        Ok(())
    }
}
