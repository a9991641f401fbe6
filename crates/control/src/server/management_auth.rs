//! `management-client-auth`: every login waits for the management client,
//! as in OpenVPN 2.6 (`verify_user_pass` in ssl_verify.c,
//! `management_client_auth` / `management_client_pending_auth` in multi.c).
//!
//! When a client's user name and password arrive (and no `auth-gen-token`
//! token logs it in without the external checks), the management clients
//! get `>CLIENT:CONNECT,CID,KID` (`REAUTH` on a renegotiation of a client
//! that is established) with the environment, password included. The
//! `auth-user-pass-verify` script or plugin runs at the same time; the
//! client goes on only when all of them accepted, and any refusal refuses
//! it. `client-pending-auth` sends the client `AUTH_PENDING` and
//! `INFO_PRE,EXTRA` and moves the deadline. A management client that goes
//! away leaves waiting clients waiting until their deadline, as in 2.6.
//!
//! [`Table`] is the pure bookkeeping (which key waits, for what, until
//! when), unit-tested here; the `impl Server` below wires it to sessions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ferrovpn_proto::key_method::{Credentials, iv_proto};
use tracing::{info, warn};

use super::hooks::Admission;
use super::{Client, Server, Stage, unix_now};
use crate::management::{Answer, Notice, Query};
use crate::scripts::Env;

/// Longest `INFO_PRE,EXTRA` message 2.6 sends (its PUSH_BUNDLE_SIZE).
const MAX_INFO_PRE: usize = 1024;

/// Where one client stands with the management client.
#[derive(Debug)]
struct Entry {
    /// The KID the next login gets. 2.6 numbers its key states per client
    /// and a client's first login shows KID 1.
    next_kid: u32,
    /// The login waiting for an answer.
    pending: Option<Pending>,
    /// The last login the management client accepted: a repeated
    /// `client-auth` for it succeeds, a `client-deny` for it drops the
    /// client (2.6 marks that key failed).
    decided_kid: Option<u32>,
    /// The config block of the accepted first login, applied when the
    /// client is admitted.
    config: Option<Vec<String>>,
}

#[derive(Debug)]
struct Pending {
    kid: u32,
    /// A renegotiation's login (`REAUTH`): the client is in meanwhile.
    again: bool,
    /// `auth-user-pass-verify` / the plugin accepted (or there is none).
    others_ok: bool,
    /// The management client accepted.
    accepted: bool,
    started: Instant,
    deadline: Instant,
}

/// What an answer of the management client means for the client.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Decision {
    /// No login of this client has this KID: the command fails.
    Unknown,
    /// Taken; the client still waits for the others (or nothing changes).
    Noted,
    /// Everyone accepted: the client goes on (`again`: a renegotiation).
    Proceed { again: bool },
    /// Refused: the client gets AUTH_FAILED and goes.
    Refuse,
}

/// The management client's part in every client's login.
#[derive(Debug, Default)]
pub(super) struct Table {
    entries: HashMap<u64, Entry>,
}

impl Table {
    /// A login of client `cid` starts waiting; returns its KID and whether
    /// it is a renegotiation's. `window`: how long it may wait.
    pub fn begin(&mut self, cid: u64, again: bool, now: Instant, window: Duration) -> u32 {
        let e = self.entries.entry(cid).or_insert(Entry {
            next_kid: 1,
            pending: None,
            decided_kid: None,
            config: None,
        });
        let kid = e.next_kid;
        e.next_kid = e.next_kid.wrapping_add(1);
        e.pending = Some(Pending {
            kid,
            again,
            others_ok: false,
            accepted: false,
            started: now,
            deadline: now + window,
        });
        kid
    }

    /// The script or plugin accepted client `cid`'s login: true when it
    /// must still wait for the management client.
    pub fn others_accepted(&mut self, cid: u64) -> bool {
        let Some(e) = self.entries.get_mut(&cid) else {
            return false;
        };
        let Some(p) = &mut e.pending else {
            return false;
        };
        if p.accepted {
            e.decided_kid = Some(p.kid);
            e.pending = None;
            return false;
        }
        p.others_ok = true;
        true
    }

    /// `client-auth` / `client-auth-nt` (`config` empty).
    pub fn accept(&mut self, cid: u64, kid: u32, config: Vec<String>) -> Decision {
        let Some(e) = self.entries.get_mut(&cid) else {
            return Decision::Unknown;
        };
        match &mut e.pending {
            Some(p) if p.kid == kid => {
                p.accepted = true;
                // 2.6 takes the block only for a client not connected yet.
                if !p.again {
                    e.config = Some(config);
                }
                if !p.others_ok {
                    return Decision::Noted;
                }
                let again = p.again;
                e.decided_kid = Some(kid);
                e.pending = None;
                Decision::Proceed { again }
            }
            _ if e.decided_kid == Some(kid) => Decision::Noted,
            _ => Decision::Unknown,
        }
    }

    /// `client-deny`.
    pub fn deny(&mut self, cid: u64, kid: u32) -> Decision {
        let Some(e) = self.entries.get_mut(&cid) else {
            return Decision::Unknown;
        };
        let pending_kid = e.pending.as_ref().map(|p| p.kid);
        if pending_kid == Some(kid) || e.decided_kid == Some(kid) {
            e.pending = None;
            e.config = None;
            return Decision::Refuse;
        }
        Decision::Unknown
    }

    /// `client-pending-auth ... TIMEOUT`: the login may wait `timeout`
    /// seconds from now, but (as 2.6) no longer than `max_window` from its
    /// start; the deadline moves only when `move_deadline`. Returns the
    /// timeout granted, `None` for an unknown login.
    pub fn extend(
        &mut self,
        cid: u64,
        kid: u32,
        timeout: u32,
        now: Instant,
        max_window: Duration,
        move_deadline: bool,
    ) -> Option<u32> {
        let p = self.entries.get_mut(&cid)?.pending.as_mut()?;
        if p.kid != kid {
            return None;
        }
        let left = max_window.saturating_sub(now.saturating_duration_since(p.started));
        let granted = timeout.min(u32::try_from(left.as_secs()).unwrap_or(u32::MAX));
        if move_deadline {
            p.deadline = now + Duration::from_secs(u64::from(granted));
        }
        Some(granted)
    }

    /// Logins past their deadline, taken out: `(cid, again)`.
    pub fn expired(&mut self, now: Instant) -> Vec<u64> {
        let mut out = Vec::new();
        for (cid, e) in &mut self.entries {
            if e.pending.as_ref().is_some_and(|p| now >= p.deadline) {
                e.pending = None;
                out.push(*cid);
            }
        }
        out.sort_unstable();
        out
    }

    /// The accepted first login's config block, once.
    pub fn take_config(&mut self, cid: u64) -> Option<Vec<String>> {
        self.entries.get_mut(&cid)?.config.take()
    }

    /// Whether the management client was asked about client `cid` (2.6
    /// sends `ADDRESS` and `DISCONNECT` only then).
    pub fn asked(&self, cid: u64) -> bool {
        self.entries.contains_key(&cid)
    }

    /// Client `cid` is gone; returns whether the management client knew it.
    pub fn remove(&mut self, cid: u64) -> bool {
        self.entries.remove(&cid).is_some()
    }
}

impl Server {
    /// `management-client-auth` is on.
    pub(super) fn management_client_auth(&self) -> bool {
        self.mgmt.is_some() && self.s.management.as_ref().is_some_and(|m| m.client_auth)
    }

    /// How long a login may wait for deferred authentication: 2.6's
    /// `auth_deferred_expire_window`, the hand-window, or half of
    /// `reneg-sec` when that is shorter.
    fn deferred_window(&self) -> Duration {
        let hand = self.s.session.hand_window;
        match self.s.session.reneg_interval {
            Some(r) if r / 2 < hand => r / 2,
            _ => hand,
        }
    }

    /// How far `client-pending-auth` may push the deadline: the longer of
    /// hand-window and half of `reneg-sec`, from the login's start (2.6).
    fn pending_auth_window(&self) -> Duration {
        let hand = self.s.session.hand_window;
        self.s
            .session
            .reneg_interval
            .map_or(hand, |r| hand.max(r / 2))
    }

    /// Tell the management clients that the client at `addr` logs in:
    /// `>CLIENT:CONNECT` (or `REAUTH` once it is established) with the
    /// login's environment and password, as 2.6 sends them.
    pub(super) fn ask_management(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        credentials: &Credentials,
        again: bool,
        env: &Env,
    ) {
        let window = self.deferred_window();
        let established = self.clients.iter().filter(|(_, c)| c.announced).count();
        let Some(c) = self.clients.get(&addr) else {
            return;
        };
        let (cid, reauth) = (c.cid, c.announced);
        let kid = self.mgmt_auth.begin(cid, again, now, window);
        let event = if reauth { "REAUTH" } else { "CONNECT" };
        let mut vars = vec![
            ("n_clients".to_string(), established.to_string()),
            ("password".to_string(), credentials.password.clone()),
        ];
        vars.extend(
            env.iter()
                .filter(|(k, _)| *k != "script_type")
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        info!("{addr}: waiting for the management client to authenticate (CID {cid}, KID {kid})");
        self.notify_management(|_| Notice::Client {
            event,
            args: format!("{cid},{kid}"),
            env: vars,
        });
    }

    /// The script or plugin accepted the login at `addr`: true when it
    /// still waits for the management client.
    pub(super) fn waits_for_management(&mut self, addr: SocketAddr) -> bool {
        let Some(cid) = self.clients.get(&addr).map(|c| c.cid) else {
            return false;
        };
        self.mgmt_auth.others_accepted(cid)
    }

    /// A waiting client by its CID (not one refused meanwhile).
    fn waiting_client(&self, cid: u64) -> Option<SocketAddr> {
        self.clients
            .iter()
            .find(|(_, c)| c.cid == cid && !matches!(c.admission, Admission::Refused))
            .map(|(a, _)| *a)
    }

    /// `client-auth`, `client-auth-nt`, `client-deny` and
    /// `client-pending-auth`: `None` for any other query.
    pub(super) fn answer_client_auth(&mut self, now: Instant, query: &Query) -> Option<Answer> {
        let (cid, kid) = match query {
            Query::ClientAuth { cid, kid, .. }
            | Query::ClientDeny { cid, kid, .. }
            | Query::ClientPendingAuth { cid, kid, .. } => (*cid, *kid),
            _ => return None,
        };
        let Some(addr) = self.waiting_client(cid) else {
            return Some(Answer::Done(false));
        };
        let _peer = self.peer_span(addr).entered();
        let done = match query {
            Query::ClientAuth { config, .. } => {
                match self.mgmt_auth.accept(cid, kid, config.clone()) {
                    Decision::Unknown => false,
                    Decision::Noted | Decision::Refuse => true,
                    Decision::Proceed { again } => {
                        info!("{addr}: the management client accepted the login (CID {cid})");
                        self.verified(now, addr, again);
                        true
                    }
                }
            }
            Query::ClientDeny {
                reason,
                client_reason,
                ..
            } => match self.mgmt_auth.deny(cid, kid) {
                Decision::Unknown => false,
                _ => {
                    info!(
                        "{addr}: MULTI: connection rejected: {reason}, CLI:{}",
                        client_reason.as_deref().unwrap_or("[NULL]")
                    );
                    self.refuse(now, addr, client_reason.as_deref());
                    true
                }
            },
            Query::ClientPendingAuth { extra, timeout, .. } => {
                self.send_auth_pending(now, addr, cid, kid, extra, *timeout)
            }
            _ => false,
        };
        Some(Answer::Done(done))
    }

    /// `client-pending-auth`: AUTH_PENDING (with the timeout, to a client
    /// that understands it), then `INFO_PRE,EXTRA`, and the new deadline.
    /// As 2.6, the client's IV_SSO is not checked here (the management
    /// client reads it from `>CLIENT:ENV`), and an EXTRA too long for one
    /// message fails the command after AUTH_PENDING went out.
    fn send_auth_pending(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        cid: u64,
        kid: u32,
        extra: &str,
        timeout: u32,
    ) -> bool {
        let max_window = self.pending_auth_window();
        // The deadline moves only when the message fits, as in 2.6.
        // 2.6 counts `INFO_PRE,`, its NUL and one more byte with EXTRA.
        let fits = "INFO_PRE,".len() + 2 + extra.len() <= MAX_INFO_PRE;
        let Some(granted) = self
            .mgmt_auth
            .extend(cid, kid, timeout, now, max_window, fits)
        else {
            return false;
        };
        let Some(c) = self.clients.get_mut(&addr) else {
            return false;
        };
        let keyword = c
            .peer_info
            .as_ref()
            .is_some_and(|i| i.proto & iv_proto::AUTH_PENDING_KW != 0);
        if keyword {
            c.session
                .send_control_message(now, &format!("AUTH_PENDING,timeout {granted}"));
        } else {
            c.session.send_control_message(now, "AUTH_PENDING");
        }
        if fits {
            c.session
                .send_control_message(now, &format!("INFO_PRE,{extra}"));
            info!("{addr}: authentication pending (management), up to {granted} s: {extra}");
        }
        self.drain(now, Stage::Authenticated, addr);
        fits
    }

    /// Refuse the logins the management client did not answer in time.
    pub(super) fn poll_management_auth(&mut self, now: Instant) {
        for cid in self.mgmt_auth.expired(now) {
            if let Some(addr) = self.waiting_client(cid) {
                let _peer = self.peer_span(addr).entered();
                info!("{addr}: management client authentication timed out (CID {cid})");
                warn!(
                    "{addr}: TLS Auth Error: Auth Username/Password verification failed for peer"
                );
                self.refuse(now, addr, None);
            }
        }
    }

    /// The accepted first login's `client-auth` block, once.
    pub(super) fn take_management_config(&mut self, addr: SocketAddr) -> Option<Vec<String>> {
        let cid = self.clients.get(&addr)?.cid;
        self.mgmt_auth
            .take_config(cid)
            .filter(|lines| !lines.is_empty())
    }

    /// `>CLIENT:ADDRESS` for the addresses and iroutes now routed to the
    /// client at `addr`, before its `ESTABLISHED` (2.6's order).
    pub(super) fn notify_client_addresses(
        &self,
        c: &Client,
        ip: Option<std::net::Ipv4Addr>,
        ip6: Option<std::net::Ipv6Addr>,
    ) {
        if !self.mgmt_auth.asked(c.cid) {
            return;
        }
        let mut addresses: Vec<(String, bool)> =
            ip.map(|ip| (ip.to_string(), true)).into_iter().collect();
        if let Some(ip6) = ip6 {
            addresses.push((ip6.to_string(), true));
        }
        if let Some(cfg) = &c.client_config {
            for r in &cfg.iroutes {
                addresses.push((format!("{}/{}", r.network, r.prefix_len), false));
            }
        }
        for (address, primary) in addresses {
            self.notify_management(|_| Notice::ClientAddress {
                cid: c.cid,
                address,
                primary,
            });
        }
    }

    /// `>CLIENT:CR_RESPONSE,CID,KEY_ID,RESPONSE`: the client answered a
    /// challenge (`client-pending-auth ... CR_TEXT:...`). 2.6 sends it with
    /// any management interface, `management-client-auth` or not.
    pub(super) fn notify_cr_response(&self, addr: SocketAddr, key_id: u8, response: String) {
        let Some(c) = self.clients.get(&addr) else {
            return;
        };
        info!("{addr}: CR response was sent by client");
        // A line break in it would start a notification of its own.
        let response: String = response.chars().filter(|c| !c.is_control()).collect();
        self.notify_management(|s| Notice::Client {
            event: "CR_RESPONSE",
            args: format!("{},{key_id},{response}", c.cid),
            env: s.client_env(addr, c),
        });
    }

    /// `>CLIENT:DISCONNECT` for an established client the management
    /// client was asked about, with its byte counts and time connected.
    pub(super) fn notify_client_disconnect(
        &mut self,
        addr: SocketAddr,
        c: &Client,
        peer: Option<super::registry::Peer>,
    ) {
        if !self.mgmt_auth.remove(c.cid) || !c.announced {
            return;
        }
        let stats = peer.and_then(|p| self.peers.peer_stats(p.id));
        let (rx, tx) = c.link_bytes(stats.as_ref());
        let mut env = self.client_env(addr, c);
        if let Some(u) = &c.username {
            env.push(("username".into(), u.clone()));
        }
        env.push(("bytes_received".into(), rx.to_string()));
        env.push(("bytes_sent".into(), tx.to_string()));
        env.push((
            "time_duration".into(),
            unix_now().saturating_sub(c.since).to_string(),
        ));
        self.notify_management(|_| Notice::Client {
            event: "DISCONNECT",
            args: c.cid.to_string(),
            env,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(60);

    #[test]
    fn a_login_goes_on_only_when_management_and_script_both_accept() {
        let now = Instant::now();
        let mut t = Table::default();
        assert_eq!(t.begin(7, false, now, WINDOW), 1);
        // Management first, script second.
        assert_eq!(
            t.accept(7, 1, vec!["ifconfig-push 10.8.0.9 255.255.255.0".into()]),
            Decision::Noted
        );
        assert!(
            !t.others_accepted(7),
            "the management client accepted already"
        );
        assert_eq!(
            t.take_config(7),
            Some(vec!["ifconfig-push 10.8.0.9 255.255.255.0".into()])
        );
        assert_eq!(t.take_config(7), None);
        // A repeated answer for the same key is no error, and changes nothing.
        assert_eq!(t.accept(7, 1, Vec::new()), Decision::Noted);
        // A renegotiation: script first, management second; the block is
        // not taken for a connected client.
        assert_eq!(t.begin(7, true, now, WINDOW), 2);
        assert!(t.others_accepted(7));
        assert_eq!(
            t.accept(7, 2, vec!["push-reset".into()]),
            Decision::Proceed { again: true }
        );
        assert_eq!(t.take_config(7), None);
        // Unknown keys and clients fail.
        assert_eq!(t.accept(7, 9, Vec::new()), Decision::Unknown);
        assert_eq!(t.accept(8, 1, Vec::new()), Decision::Unknown);
        assert_eq!(t.deny(8, 1), Decision::Unknown);
        assert!(t.asked(7) && !t.asked(8));
        assert!(t.remove(7));
        assert!(!t.remove(7));
    }

    #[test]
    fn a_client_without_a_waiting_login_passes_the_gate() {
        let mut t = Table::default();
        assert!(!t.others_accepted(3));
        t.begin(3, false, Instant::now(), WINDOW);
        assert!(t.others_accepted(3));
        assert_eq!(
            t.accept(3, 1, Vec::new()),
            Decision::Proceed { again: false }
        );
        // Decided: a later script verdict (token renewal) does not wait.
        assert!(!t.others_accepted(3));
    }

    #[test]
    fn deny_refuses_a_waiting_login_and_an_accepted_one() {
        let now = Instant::now();
        let mut t = Table::default();
        t.begin(1, false, now, WINDOW);
        assert_eq!(t.deny(1, 2), Decision::Unknown);
        assert_eq!(t.deny(1, 1), Decision::Refuse);
        assert_eq!(t.accept(1, 1, Vec::new()), Decision::Unknown);
        t.begin(2, false, now, WINDOW);
        assert!(t.others_accepted(2));
        assert_eq!(
            t.accept(2, 1, Vec::new()),
            Decision::Proceed { again: false }
        );
        assert_eq!(t.deny(2, 1), Decision::Refuse);
    }

    #[test]
    fn deadlines_expire_and_pending_auth_extends_them_within_the_cap() {
        let start = Instant::now();
        let mut t = Table::default();
        t.begin(1, false, start, WINDOW);
        t.begin(2, false, start, WINDOW);
        assert!(t.expired(start + Duration::from_secs(59)).is_empty());
        // client-pending-auth 2 1 ... 300, 10 s in, cap 120 s from start.
        let ten = start + Duration::from_secs(10);
        assert_eq!(
            t.extend(2, 1, 300, ten, Duration::from_secs(120), true),
            Some(110)
        );
        assert_eq!(
            t.extend(2, 5, 300, ten, Duration::from_secs(120), true),
            None
        );
        assert_eq!(
            t.extend(9, 1, 300, ten, Duration::from_secs(120), true),
            None
        );
        assert_eq!(t.expired(start + Duration::from_secs(60)), vec![1]);
        assert!(t.expired(start + Duration::from_secs(119)).is_empty());
        assert_eq!(t.expired(start + Duration::from_secs(120)), vec![2]);
        // Expired logins are gone: answering them fails.
        assert_eq!(t.accept(2, 1, Vec::new()), Decision::Unknown);
        // A shorter timeout than the window shortens the wait.
        t.begin(3, false, start, WINDOW);
        assert_eq!(
            t.extend(3, 1, 5, start, Duration::from_secs(120), true),
            Some(5)
        );
        assert_eq!(t.expired(start + Duration::from_secs(5)), vec![3]);
    }

    #[test]
    fn kids_count_up_per_client() {
        let now = Instant::now();
        let mut t = Table::default();
        assert_eq!(t.begin(1, false, now, WINDOW), 1);
        assert_eq!(t.begin(2, false, now, WINDOW), 1);
        assert_eq!(t.begin(1, true, now, WINDOW), 2);
        assert_eq!(t.begin(1, true, now, WINDOW), 3);
    }
}
