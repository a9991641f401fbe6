//! The server's script hooks, in 2.6's order: `auth-user-pass-verify`
//! (possibly deferred through its control file), then `client-connect`,
//! then `learn-address add` and the push reply; `client-disconnect` and
//! `learn-address delete` when an admitted client goes. Scripts run as
//! tasks of the runtime and report back in [`ScriptDone`]; until a client
//! is admitted its data keys are held back, so it cannot send data on a
//! login that is still being checked.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrovpn_config::ClientConfig;
use ferrovpn_proto::key_method::{Credentials, iv_proto};
use ferrovpn_proto::session::{Event, tls};
use ferrovpn_proto::tls_crypt_v2::Metadata;
use ferrovpn_proto::wire::SessionId;
use tracing::{info, warn};

use super::registry::Peer;
use super::{Client, EXIT_GRACE, Server, Stage, auth_token, unix_now};
use crate::plugin::{self, Plugins};
use crate::scripts::deferred::{self, ConnectResult, Control, ControlFiles};
use crate::scripts::{self, Env, Invocation, ScriptSettings, Status, Tunnel, TunnelHook, run};

/// Key events held for a client not yet admitted, at most (a handful
/// arrive per key exchange; more means something is wrong).
const MAX_HELD: usize = 16;
/// Bytes of a `client-connect` dynamic config file read at most.
const MAX_DYNAMIC_CONFIG: u64 = 64 * 1024;

/// Where a client is on its way in.
#[derive(Default)]
pub(super) enum Admission {
    /// Certificate verified; its key-method-2 credentials not seen yet.
    #[default]
    Authenticating,
    /// `tls-verify` runs over its certificate chain.
    TlsVerifying,
    /// `tls-verify` accepted it; its login comes next.
    TlsVerified,
    /// `auth-user-pass-verify` runs, or (with control files) deferred it.
    Verifying {
        files: Option<ControlFiles>,
        deadline: Instant,
    },
    /// `client-connect` runs.
    Connecting,
    /// `client-connect` exited 0 having written `2` into its
    /// `client_connect_deferred_file`: its answer comes later in that file,
    /// and the dynamic config file is read then.
    ConnectDeferred {
        config: tempfile::TempPath,
        result: tempfile::TempPath,
        deadline: Instant,
    },
    /// A plugin deferred `CLIENT_CONNECT_V2`: it is asked again with
    /// `CLIENT_CONNECT_DEFER_V2` (`asking`: such a call runs) until it answers.
    PluginConnectDeferred {
        deadline: Instant,
        asking: bool,
    },
    Admitted,
    Refused,
}

/// A finished script, for the client it ran for (`cid` tells a client
/// from a later one at the same address).
pub(super) struct ScriptDone {
    addr: SocketAddr,
    cid: u64,
    outcome: Outcome,
}

enum Outcome {
    Verify {
        status: Status,
        files: ControlFiles,
        /// Renegotiation: the client is admitted already.
        again: bool,
    },
    Connect {
        status: Status,
        config: tempfile::TempPath,
        /// `client_connect_deferred_file`.
        result: tempfile::TempPath,
    },
    /// `tls-verify` over the chain in the handshake of `key_id`, whose
    /// key-method-2 reply waits for the verdict; `stage`: the session's
    /// table (a new session from a connected client's address is verified
    /// before it replaces that client).
    TlsVerify {
        verdict: scripts::ChainVerdict,
        key_id: u8,
        stage: Stage,
    },
    /// `tls-crypt-v2-verify` for the new session `sid` from the address.
    TlsCryptV2 { sid: SessionId, accepted: bool },
    /// Nothing to act on (learn-address, client-disconnect).
    Logged,
    /// `CLIENT_CONNECT_V2` (or `CLIENT_CONNECT_DEFER_V2`) answered.
    PluginConnect { reply: plugin::Reply },
    /// `TLS_FINAL` answered; `then` is what comes next when it accepted.
    TlsFinal { ok: bool, then: AfterTlsFinal },
}

/// What waits for `TLS_FINAL` (2.6 calls it at the end of every TLS
/// handshake, after the login check started and unless it failed).
enum AfterTlsFinal {
    /// The login check's verdict (0 or 2), to act on now.
    Verify {
        status: Status,
        files: ControlFiles,
        again: bool,
    },
    /// The login was accepted without a check (token, management only).
    Verified { again: bool },
    /// No login to check: `client-connect` comes next.
    NoLogin,
    /// A renegotiation without a login check: nothing more to do.
    Renegotiation,
}

/// `tls-crypt-v2-verify` runs at most this many at once; a new client
/// arriving meanwhile is dropped (it sends its packet again).
const MAX_TLS_CRYPT_V2_VERIFY: usize = 8;
/// Verdicts kept at most (each for a hand-window): retransmissions of a
/// refused client are dropped without running the script again.
const MAX_TLS_CRYPT_V2_VERDICTS: usize = 1024;

enum V2State {
    /// The script runs; the packet that makes the session waits (one per
    /// client, after its key authenticated, and at most
    /// [`MAX_TLS_CRYPT_V2_VERIFY`] of them).
    Running(Vec<u8>),
    Accepted,
    Refused,
}

/// `tls-crypt-v2-verify` state: per (address, client session id).
#[derive(Default)]
pub(super) struct TlsCryptV2Checks {
    states: std::collections::HashMap<(SocketAddr, SessionId), (V2State, Instant)>,
}

impl TlsCryptV2Checks {
    fn running(&self) -> usize {
        self.states
            .values()
            .filter(|(s, _)| matches!(s, V2State::Running(_)))
            .count()
    }
}

/// Open the `plugin`s at start (as root, before `up`), refusing one that
/// asks for a hook ferrovpn does not call. A plugin and
/// `auth-user-pass-verify` both checking logins is refused too: 2.6 runs
/// them one after the other with separate deferral files, which ferrovpn
/// does not do yet.
pub(super) fn open_plugins(s: &ScriptSettings) -> anyhow::Result<Option<Arc<Plugins>>> {
    let Some(plugins) = Plugins::open(&s.plugins, plugin::SERVER_HOOKS, &s.base_env)? else {
        return Ok(None);
    };
    if plugins.wants(plugin::AUTH_USER_PASS_VERIFY) && s.auth_user_pass_verify.is_some() {
        anyhow::bail!(
            "a plugin checking logins (PLUGIN_AUTH_USER_PASS_VERIFY) together with --auth-user-pass-verify is not supported: use one of them"
        );
    }
    Ok(Some(Arc::new(plugins)))
}

/// `up`: the plugins' `PLUGIN_UP` first, then the script; 2.6 stops when
/// either fails.
pub(super) async fn run_up(
    s: &ScriptSettings,
    plugins: Option<&Plugins>,
    t: &Tunnel,
) -> anyhow::Result<()> {
    run_tunnel_hook(s, plugins, TunnelHook::Up, t)
        .await
        .map_err(anyhow::Error::msg)
}

/// `route-up`, after the server's routes are in place (the plugins'
/// `PLUGIN_ROUTE_UP` first).
pub(super) async fn run_route_up(s: &ScriptSettings, plugins: Option<&Plugins>, t: &Tunnel) {
    // Not fatal: failures are logged.
    let _ = run_tunnel_hook(s, plugins, TunnelHook::RouteUp, t).await;
}

/// `route-pre-down`, at shutdown before the routes go (the plugins'
/// `PLUGIN_ROUTE_PREDOWN` first), with `down`'s arguments. A failing
/// plugin is fatal, as 2.6's `run_up_down`: the plugins are aborted, the
/// script and `down` do not run.
pub(super) async fn run_route_predown(
    s: &ScriptSettings,
    plugins: Option<&Plugins>,
    t: &Tunnel,
) -> anyhow::Result<()> {
    run_tunnel_hook(s, plugins, TunnelHook::RoutePreDown, t)
        .await
        .map_err(anyhow::Error::msg)
}

/// `down`, at shutdown (the plugins' `PLUGIN_DOWN` first).
pub(super) async fn run_down(s: &ScriptSettings, plugins: Option<&Plugins>, t: &Tunnel) {
    // Not fatal: failures are logged.
    let _ = run_tunnel_hook(s, plugins, TunnelHook::Down, t).await;
}

/// The plugins' call of `hook`, then its script, with the same arguments
/// and environment. A failing `up` is fatal (the error, 2.6's message), so
/// is a failing `PLUGIN_ROUTE_PREDOWN` (after aborting the plugins); the
/// others' failures are logged.
async fn run_tunnel_hook(
    s: &ScriptSettings,
    plugins: Option<&Plugins>,
    hook: TunnelHook,
    t: &Tunnel,
) -> Result<(), String> {
    let fatal = hook == TunnelHook::Up;
    let (plugin_hook, plugin_name) = match hook {
        TunnelHook::Up => (plugin::UP, "up/down"),
        TunnelHook::RouteUp => (plugin::ROUTE_UP, "route-up"),
        TunnelHook::RoutePreDown => (plugin::ROUTE_PREDOWN, "up/down"),
        TunnelHook::Down => (plugin::DOWN, "up/down"),
    };
    if let Some(p) = plugins.filter(|p| p.wants(plugin_hook)) {
        let (args, env) = s.tunnel_call(hook, t);
        if p.call(plugin_hook, args, &env).await != plugin::Verdict::Success {
            if hook == TunnelHook::RoutePreDown {
                // 2.6's `run_up_down` fails fatally here: the plugins are
                // aborted, neither the script nor `down` runs.
                p.abort();
            }
            if fatal || hook == TunnelHook::RoutePreDown {
                return Err(format!("ERROR: {plugin_name} plugin call failed"));
            }
            warn!("WARNING: {plugin_name} plugin call failed");
        }
    }
    if let Some(inv) = s.tunnel_script(hook, t) {
        if fatal {
            let status = run::run(inv, s.security).await;
            return status.failure(hook.directive()).map_or(Ok(()), Err);
        }
        run::run_reported(inv, s.security).await;
    }
    Ok(())
}

/// Wait for the scripts still running (client-disconnect at shutdown),
/// each bounded by its own timeout.
pub(super) async fn finish_scripts(running: &mut tokio::task::JoinSet<ScriptDone>) {
    let all = async { while running.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(run::SCRIPT_TIMEOUT + Duration::from_secs(1), all).await;
}

/// Run `inv` as a task; `outcome` makes the report from its status.
fn spawn(
    srv: &mut Server,
    addr: SocketAddr,
    cid: u64,
    inv: Invocation,
    outcome: impl FnOnce(Status) -> Outcome + Send + 'static,
) {
    let security = srv.s.scripts.security;
    srv.scripts_running.spawn(async move {
        let hook = inv.hook;
        let status = run::run(inv, security).await;
        // 2 defers (auth-user-pass-verify): not a failure.
        if let Some(failure) = status.failure(hook).filter(|_| status != Status::Exited(2)) {
            warn!("{failure}");
        }
        ScriptDone {
            addr,
            cid,
            outcome: outcome(status),
        }
    });
}

/// Call the plugins for a client's `hook` (with its per-client contexts
/// `client`) as a task; `outcome` makes the report from their reply. `false` when no plugin asked for `hook`.
#[allow(clippy::too_many_arguments)]
fn spawn_plugin(
    srv: &mut Server,
    addr: SocketAddr,
    cid: u64,
    hook: u32,
    client: Option<plugin::ClientId>,
    args: Vec<String>,
    env: Env,
    outcome: impl FnOnce(plugin::Reply) -> Outcome + Send + 'static,
) -> bool {
    let Some(plugins) = srv.plugins.clone().filter(|p| p.wants(hook)) else {
        return false;
    };
    // Queued now, so that the plugins see the calls in the order they are
    // made (and before the client's per-client contexts go).
    let reply = plugins.submit(hook, args, &env, client);
    drop(env);
    srv.scripts_running.spawn(async move {
        let reply = reply.await;
        ScriptDone {
            addr,
            cid,
            outcome: outcome(reply),
        }
    });
    true
}

impl Server {
    /// The environment of a client's scripts: 2.6's base variables, what
    /// management's `>CLIENT:` blocks show, and the certificate's.
    fn client_script_env(&self, addr: SocketAddr, c: &Client, script_type: &str) -> Env {
        let mut env = self.s.scripts.env(script_type);
        for (k, v) in self.client_env(addr, c) {
            env.set(&k, v);
        }
        if let Some(der) = c.session.peer_certificate_der() {
            scripts::certificate_env(der, &mut env);
        }
        if let Some(u) = &c.username {
            env.set("username", u.clone());
        }
        env.set("time_unix", c.since.to_string());
        env
    }

    /// A key event of a client not admitted yet is held (`None`).
    pub(super) fn hold_key_event(&mut self, addr: SocketAddr, ev: Event) -> Option<Event> {
        let Some(c) = self.clients.get_mut(&addr) else {
            return Some(ev);
        };
        if matches!(c.admission, Admission::Admitted)
            || !matches!(
                ev,
                Event::KeysReady { .. } | Event::SendKey { .. } | Event::KeyRetired { .. }
            )
        {
            return Some(ev);
        }
        if c.held.len() >= MAX_HELD {
            warn!("{addr}: too many key exchanges before the client was admitted");
            self.refuse(Instant::now(), addr, None);
            return None;
        }
        c.held.push(ev);
        None
    }

    pub(super) fn is_admitted(&self, addr: &SocketAddr) -> bool {
        self.clients
            .get(addr)
            .is_some_and(|c| matches!(c.admission, Admission::Admitted))
    }

    /// The client's first key exchange is done: check its login.
    pub(super) fn on_client_authenticated(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        credentials: Credentials,
    ) {
        if !self.checks_passwords() {
            self.tls_final_then(now, addr, AfterTlsFinal::NoLogin);
            return;
        }
        let username = scripts::remap_username(&credentials.username);
        if let Some(c) = self.clients.get_mut(&addr) {
            c.username = Some(username);
        }
        self.verify(now, addr, &credentials, false);
    }

    /// A renegotiation brought the credentials again: 2.6 checks them
    /// again; the user name may not change.
    pub(super) fn on_reauthenticate(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        credentials: Credentials,
    ) {
        if !self.checks_passwords() {
            self.tls_final_then(now, addr, AfterTlsFinal::Renegotiation);
            return;
        }
        let Some(c) = self.clients.get(&addr) else {
            return;
        };
        let username = scripts::remap_username(&credentials.username);
        if c.username.as_deref() != Some(username.as_str()) {
            warn!(
                "{addr}: {}",
                super::locked::username_changed(c.username.as_deref().unwrap_or(""), &username)
            );
            self.refuse(now, addr, None);
            return;
        }
        self.verify(now, addr, &credentials, true);
    }

    /// Whether the client's chain is verified by a `tls-verify` script or
    /// `PLUGIN_TLS_VERIFY` plugins.
    pub(super) fn verifies_chain(&self) -> bool {
        self.s.scripts.tls_verify.is_some()
            || self
                .plugins
                .as_ref()
                .is_some_and(|p| p.wants(plugin::TLS_VERIFY))
    }

    /// The client finished a TLS handshake (its first, or a
    /// renegotiation's: 2.6 runs the verify callback in every one):
    /// `tls-verify` (plugins and script) over its chain while its session
    /// holds our key-method-2 reply of `key_id` ([`Session::peer_verified`]
    /// gives the verdict).
    pub(super) fn verify_peer(&mut self, addr: SocketAddr, key_id: u8) {
        self.spawn_tls_verify(Stage::Authenticated, addr, key_id);
        if key_id == 0
            && let Some(c) = self.clients.get_mut(&addr)
        {
            c.admission = Admission::TlsVerifying;
        }
    }

    /// [`Server::verify_peer`] for a new session from the address of a
    /// connected client: it stays half-open (the connected one keeps its
    /// session and tunnel) until its handshake completes, as in 2.6.
    pub(super) fn verify_half_open_peer(&mut self, addr: SocketAddr, key_id: u8) {
        self.spawn_tls_verify(Stage::HalfOpen, addr, key_id);
        if let Some(c) = self.half_open.get_mut(&addr) {
            c.admission = Admission::TlsVerifying;
        }
    }

    fn spawn_tls_verify(&mut self, stage: Stage, addr: SocketAddr, key_id: u8) {
        let script = self.s.scripts.tls_verify.clone();
        let export_dir = self.s.scripts.tls_export_cert.clone();
        let Some(c) = self.client_at(stage, addr) else {
            return;
        };
        let plugins = self.plugins.clone().map(|plugins| scripts::VerifyPlugins {
            plugins,
            client: c.plugin_client(),
        });
        let chain =
            scripts::certificate_chain(&c.session.peer_certificates_der(), &self.s.scripts.peer_ca);
        // What 2.6's verify callback sees: the base variables and the
        // client's (untrusted) address; the certificates' come per depth.
        let mut env = self.s.scripts.env("tls-verify");
        env.set("untrusted_ip", addr.ip().to_string());
        env.set("untrusted_port", addr.port().to_string());
        env.extend(&ScriptSettings::tunnel_env(
            &self.s.tunnel(self.dp.tun_name()),
        ));
        let cid = c.cid;
        let security = self.s.scripts.security;
        self.scripts_running.spawn(async move {
            let verdict = scripts::verify_chain(
                script.as_ref(),
                export_dir.as_deref(),
                plugins.as_ref(),
                security,
                &chain,
                env,
            )
            .await;
            ScriptDone {
                addr,
                cid,
                outcome: Outcome::TlsVerify {
                    verdict,
                    key_id,
                    stage,
                },
            }
        });
    }

    /// `tls-verify` (plugins and script) decided on the handshake of
    /// `key_id`: the session sends its key-method-2 reply now, or, refused,
    /// says nothing more of that key: 2.6 fails the TLS handshake. On the
    /// first key the client then gives up after its hand-window; on a
    /// renegotiation the old key serves until its tran-window ran out
    /// (see [`Session::peer_verified`]).
    fn tls_verified(
        &mut self,
        now: Instant,
        stage: Stage,
        addr: SocketAddr,
        verdict: scripts::ChainVerdict,
        key_id: u8,
    ) {
        let accepted = match verdict {
            scripts::ChainVerdict::Accepted => true,
            scripts::ChainVerdict::Refused(why) => {
                warn!("{addr}: {why}");
                warn!("{addr}: TLS Error: TLS handshake failed");
                false
            }
        };
        let Some(c) = self.client_mut(stage, addr) else {
            return;
        };
        if key_id == 0 {
            c.admission = if accepted {
                Admission::TlsVerified
            } else {
                // Never admitted: nothing to undo when it goes.
                c.held.clear();
                Admission::Refused
            };
        }
        c.session.peer_verified(now, key_id, accepted);
        self.drain(now, stage, addr);
    }

    /// `tls-crypt-v2-verify` for a new session from `from` whose wrapped
    /// key authenticated: `true` lets the session be made now. Otherwise
    /// the packet is dropped: the script was started (the packet waits for
    /// its verdict and the session is made then), runs still, refused the
    /// client (dropped silently, as 2.6), or too many run already.
    pub(super) fn tls_crypt_v2_verified(
        &mut self,
        now: Instant,
        from: SocketAddr,
        packet: &[u8],
        sid: SessionId,
        metadata: Metadata,
    ) -> bool {
        let Some(command) = self.s.scripts.tls_crypt_v2_verify.clone() else {
            return true;
        };
        let hand_window = self.s.session.hand_window;
        let checks = &mut self.tls_crypt_v2_checks;
        checks
            .states
            .retain(|_, (_, since)| now.duration_since(*since) < hand_window);
        match checks.states.get(&(from, sid)) {
            Some((V2State::Accepted, _)) => {
                checks.states.remove(&(from, sid));
                return true;
            }
            Some(_) => return false,
            None => {}
        }
        if checks.running() >= MAX_TLS_CRYPT_V2_VERIFY
            || checks.states.len() >= MAX_TLS_CRYPT_V2_VERDICTS
        {
            self.refused.note(
                from,
                "tls-crypt-v2-verify: too many clients being checked at once",
            );
            return false;
        }
        checks
            .states
            .insert((from, sid), (V2State::Running(packet.to_vec()), now));
        let security = self.s.scripts.security;
        let tmp_dir = self.s.scripts.tmp_dir.clone();
        self.scripts_running.spawn(async move {
            let accepted = run_tls_crypt_v2_verify(command, security, &tmp_dir, &metadata).await;
            ScriptDone {
                addr: from,
                cid: 0,
                outcome: Outcome::TlsCryptV2 { sid, accepted },
            }
        });
        false
    }

    /// `tls-crypt-v2-verify` decided: an accepted client's waiting packet
    /// makes its session now.
    fn tls_crypt_v2_done(
        &mut self,
        now: Instant,
        from: SocketAddr,
        sid: SessionId,
        accepted: bool,
    ) {
        let Some((state, _)) = self.tls_crypt_v2_checks.states.get_mut(&(from, sid)) else {
            return;
        };
        if !accepted {
            *state = V2State::Refused;
            return;
        }
        let V2State::Running(packet) = std::mem::replace(state, V2State::Accepted) else {
            return;
        };
        self.on_control(now, from, &packet);
    }

    /// The client's current `auth-gen-token` token, when it has one.
    pub(super) fn current_token(&self, c: &Client) -> Option<String> {
        let key = &self.s.auth_token.as_ref()?.key;
        Some(
            c.token_session?
                .token(key, c.username.as_deref()?, unix_now()),
        )
    }

    /// A password that is an `auth-gen-token` token: `Some(true)` when it
    /// logs the client in without the script, `Some(false)` when it
    /// refuses it, `None` when the script decides (not a token, or
    /// `external-auth`, with `session_state` for the script).
    fn check_token(&mut self, addr: SocketAddr, cred: &Credentials, env: &mut Env) -> Option<bool> {
        let settings = self.s.auth_token.as_ref()?;
        if !auth_token::is_token(&cred.password) {
            env.set("session_state", "Initial");
            return None;
        }
        let checked = auth_token::check(
            &settings.key,
            &cred.username,
            &cred.password,
            unix_now(),
            settings.limits,
        );
        let state = match checked {
            None => "Invalid",
            Some(c) => match (c.empty_user, c.expired) {
                (false, false) => "Authenticated",
                (false, true) => "Expired",
                (true, false) => "AuthenticatedEmptyUser",
                (true, true) => "ExpiredEmptyUser",
            },
        };
        env.set("session_state", state);
        let c = self.clients.get_mut(&addr)?;
        // A client keeps the session of its first login.
        let same_session =
            |s: &auth_token::TokenSession| c.token_session.is_none_or(|o| o.id == s.id);
        match checked {
            Some(ch) if same_session(&ch.session) => {
                env.set("session_id", ch.session.env_id());
                if !ch.expired {
                    c.token_session = Some(ch.session);
                }
                if settings.external_auth {
                    return None;
                }
                if ch.expired {
                    info!("{addr}: --auth-gen-token: auth-token from client expired");
                }
                Some(!ch.expired)
            }
            _ => {
                warn!(
                    "{addr}: --auth-gen-token: HMAC on token from client failed ({})",
                    cred.username
                );
                if settings.external_auth {
                    return None;
                }
                Some(false)
            }
        }
    }

    /// Start `auth-user-pass-verify` for the client at `addr` (or decide
    /// from its `auth-gen-token` token).
    fn verify(&mut self, now: Instant, addr: SocketAddr, cred: &Credentials, again: bool) {
        let plugin = self.password_plugin();
        let script = self.s.scripts.auth_user_pass_verify.clone();
        if plugin.is_none() && script.is_none() && !self.management_client_auth() {
            return;
        }
        let Some(c) = self.clients.get(&addr) else {
            return;
        };
        // 2.6's set_verify_user_pass_env: an empty user name is checked
        // only with auth-user-pass-optional.
        if cred.username.is_empty() && !self.s.auth_user_pass_optional {
            warn!("{addr}: TLS Auth Error: peer provided a blank username");
            self.refuse(now, addr, None);
            return;
        }
        let cid = c.cid;
        let mut env = self.client_script_env(addr, c, "user-pass-verify");
        match self.check_token(addr, cred, &mut env) {
            Some(true) => {
                info!(
                    "{addr}: TLS: Username/auth-token authentication succeeded for username '{}'",
                    cred.username
                );
                self.tls_final_then(now, addr, AfterTlsFinal::Verified { again });
                return;
            }
            Some(false) => {
                info!(
                    "{addr}: TLS: Username/auth-token authentication failed for username '{}'",
                    cred.username
                );
                if let Some(c) = self.clients.get_mut(&addr) {
                    c.token_session = None;
                }
                self.refuse(now, addr, Some("SESSION: token expired"));
                return;
            }
            None => {}
        }
        // As 2.6: the management client hears of the login first, then the
        // plugin and the script run; all must accept.
        if self.management_client_auth() {
            self.ask_management(now, addr, cred, again, &env);
            if plugin.is_none() && script.is_none() {
                self.tls_final_then(now, addr, AfterTlsFinal::Verified { again });
                return;
            }
        }
        let files = match ControlFiles::create(&self.s.scripts.tmp_dir) {
            Ok(f) => f,
            Err(e) => {
                warn!("{addr}: TLS Auth Error: could not create deferred auth control file: {e}");
                self.refuse(now, addr, None);
                return;
            }
        };
        files.set_env(&mut env);
        if let Some(plugin) = plugin {
            self.verify_with_plugin(now, addr, cid, plugin, env, cred, files, again);
            return;
        }
        let Some(verify) = script else {
            return;
        };
        let mut extra = Vec::new();
        let mut cred_file = None;
        if verify.via_file {
            match write_credentials(&self.s.scripts.tmp_dir, cred) {
                Ok(path) => {
                    extra.push(path.to_string_lossy().into_owned());
                    cred_file = Some(path);
                }
                Err(e) => {
                    warn!("{addr}: TLS Auth Error: could not write username/password to file: {e}");
                    self.refuse(now, addr, None);
                    return;
                }
            }
        } else {
            env.set("password", cred.password.clone());
        }
        let inv = Invocation {
            hook: "--auth-user-pass-verify",
            command: verify.command,
            extra,
            env,
        };
        if let Some(c) = self.clients.get_mut(&addr)
            && !again
        {
            c.admission = Admission::Verifying {
                files: None,
                deadline: now + self.s.session.hand_window,
            };
        }
        spawn(self, addr, cid, inv, move |status| {
            // The credentials file goes once the script is done.
            drop(cred_file);
            Outcome::Verify {
                status,
                files,
                again,
            }
        });
    }

    /// Whether logins are checked (by `auth-user-pass-verify` or a plugin).
    pub(super) fn checks_passwords(&self) -> bool {
        self.s.scripts.auth_user_pass_verify.is_some()
            || self.password_plugin().is_some()
            || self.management_client_auth()
    }

    /// The plugins, when one of them checks logins.
    fn password_plugin(&self) -> Option<Arc<Plugins>> {
        self.plugins
            .clone()
            .filter(|p| p.wants(plugin::AUTH_USER_PASS_VERIFY))
    }

    /// `OPENVPN_PLUGIN_AUTH_USER_PASS_VERIFY`: as 2.6, the plugin gets the
    /// password in its environment (whatever `script-security` says) and
    /// its own `auth_control_file` for a deferred answer; its verdict is
    /// then handled as a script's exit status (0, 2, other).
    #[allow(clippy::too_many_arguments)]
    fn verify_with_plugin(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        cid: u64,
        plugins: Arc<Plugins>,
        mut env: Env,
        cred: &Credentials,
        files: ControlFiles,
        again: bool,
    ) {
        env.set("password", cred.password.clone());
        if let Some(c) = self.clients.get_mut(&addr)
            && !again
        {
            c.admission = Admission::Verifying {
                files: None,
                deadline: now + self.s.session.hand_window,
            };
        }
        let client = (self.clients.get(&addr))
            .or_else(|| self.half_open.get(&addr))
            .and_then(Client::plugin_client);
        let reply = plugins.submit(plugin::AUTH_USER_PASS_VERIFY, Vec::new(), &env, client);
        drop(env);
        self.scripts_running.spawn(async move {
            let verdict = reply.await.verdict;
            let status = match verdict {
                plugin::Verdict::Success => Status::Exited(0),
                plugin::Verdict::Deferred => Status::Exited(2),
                plugin::Verdict::Error => Status::Exited(1),
            };
            ScriptDone {
                addr,
                cid,
                outcome: Outcome::Verify {
                    status,
                    files,
                    again,
                },
            }
        });
    }

    /// The login (or a renegotiation's) checked out: with `auth-gen-token`
    /// the client gets a token (a renegotiation a fresh one, as 2.6 sends
    /// it: `PUSH_REPLY,auth-token ...`).
    pub(super) fn verified(&mut self, now: Instant, addr: SocketAddr, again: bool) {
        if self.waits_for_management(addr) {
            return;
        }
        if self.s.auth_token.is_some()
            && let Some(c) = self.clients.get_mut(&addr)
            && c.token_session.is_none()
        {
            c.token_session = Some(auth_token::TokenSession::new(unix_now()));
        }
        if !again {
            self.after_verify(now, addr);
            return;
        }
        let token = self.clients.get(&addr).and_then(|c| self.current_token(c));
        if let (Some(token), Some(c)) = (token, self.clients.get_mut(&addr)) {
            c.session
                .send_control_message(now, &format!("PUSH_REPLY,auth-token {token}"));
            self.drain(now, Stage::Authenticated, addr);
        }
    }

    /// A session that replaced a connected client at its address changed
    /// what that client had locked (see [`super::locked`]): 2.6's message.
    /// `certificate`: the common name and certificate too (once the login
    /// is accepted), not only the user name.
    fn identity_changed(&self, addr: SocketAddr, certificate: bool) -> Option<String> {
        let c = self.clients.get(&addr)?;
        let locked = c.replaced.as_ref()?;
        let username = locked.check_username(c.username.as_deref());
        let checked = if certificate {
            username.and_then(|()| {
                locked.check_certificate(c.common_name.as_deref(), c.session.peer_certificate_der())
            })
        } else {
            username
        };
        checked.err()
    }

    /// Refuse a session that changed a locked identity (2.6 disables the
    /// tunnel: the client hears AUTH_FAILED).
    fn refuse_changed_identity(&mut self, now: Instant, addr: SocketAddr, certificate: bool) {
        if let Some(why) = self.identity_changed(addr, certificate) {
            warn!("{addr}: {why}");
            self.refuse(now, addr, None);
        }
    }

    /// The login is good: `username-as-common-name`, then `client-connect`.
    fn after_verify(&mut self, now: Instant, addr: SocketAddr) {
        let as_cn = self.s.username_as_common_name;
        let Some(c) = self.clients.get_mut(&addr) else {
            return;
        };
        if as_cn && let Some(u) = &c.username {
            // An empty user name (auth-user-pass-optional) leaves no
            // common name: 2.6's scripts then see no `common_name`.
            c.common_name = Some(tls::sanitize_common_name(u)).filter(|cn| !cn.is_empty());
        }
        if self.identity_changed(addr, true).is_some() {
            self.refuse_changed_identity(now, addr, true);
            return;
        }
        let Some(c) = self.clients.get_mut(&addr) else {
            return;
        };
        if let Some(u) = &c.username {
            info!("{addr}: TLS: Username/Password authentication succeeded for username '{u}'");
        }
        let hooked = self.s.scripts.client_connect.is_some()
            || self
                .plugins
                .as_ref()
                .is_some_and(|p| p.wants(plugin::CLIENT_CONNECT_V2));
        if !hooked {
            self.admit(now, addr);
            return;
        }
        // The plugin and the script see the address the client will get
        // (its client-config-dir file first, as in 2.6; a refusal there or
        // an exhausted pool has been answered already).
        if self.ensure_peer(addr).is_none() {
            return;
        }
        if !self.plugin_connect(addr) {
            self.run_client_connect_script(now, addr);
        }
    }

    /// The `client-connect` script, or the admission when there is none.
    fn run_client_connect_script(&mut self, now: Instant, addr: SocketAddr) {
        let Some(command) = self.s.scripts.client_connect.clone() else {
            self.admit(now, addr);
            return;
        };
        let Some(cid) = self.clients.get(&addr).map(|c| c.cid) else {
            return;
        };
        let config = match tempfile::Builder::new()
            .prefix("openvpn_cc_")
            .suffix(".tmp")
            .tempfile_in(&self.s.scripts.tmp_dir)
        {
            Ok(f) => f.into_temp_path(),
            Err(e) => {
                warn!("{addr}: client-connect: cannot create the dynamic config file: {e}");
                self.refuse(now, addr, None);
                return;
            }
        };
        let result = match tempfile::Builder::new()
            .prefix("openvpn_ccr_")
            .suffix(".tmp")
            .tempfile_in(&self.s.scripts.tmp_dir)
        {
            Ok(f) => f.into_temp_path(),
            Err(e) => {
                warn!("{addr}: client-connect: cannot create the deferred result file: {e}");
                self.refuse(now, addr, None);
                return;
            }
        };
        let Some(c) = self.clients.get(&addr) else {
            return;
        };
        let mut env = self.client_script_env(addr, c, "client-connect");
        let path = config.to_string_lossy().into_owned();
        env.set("client_connect_config_file", path.clone());
        env.set(
            "client_connect_deferred_file",
            result.to_string_lossy().into_owned(),
        );
        let inv = Invocation {
            hook: "--client-connect",
            command,
            extra: vec![path],
            env,
        };
        if let Some(c) = self.clients.get_mut(&addr) {
            c.admission = Admission::Connecting;
        }
        spawn(self, addr, cid, inv, |status| Outcome::Connect {
            status,
            config,
            result,
        });
    }

    /// Let the client in: its held keys go to the data plane, learn-address
    /// hears of it, and it gets its push reply.
    fn admit(&mut self, now: Instant, addr: SocketAddr) {
        if let Some(block) = self.take_management_config(addr)
            && let Err(why) = self.apply_management_config(addr, &block)
        {
            warn!("{addr}: client-auth config: {why}, refusing client");
            self.refuse(now, addr, None);
            return;
        }
        let Some(c) = self.clients.get_mut(&addr) else {
            return;
        };
        c.admission = Admission::Admitted;
        c.connect_done = true;
        let held = std::mem::take(&mut c.held);
        for ev in held {
            self.on_session_event(now, addr, ev);
        }
        self.push_reply(now, addr);
        let (Some(c), Some(peer)) = (self.clients.get(&addr), self.clients.peer(&addr)) else {
            return;
        };
        let cn = c.common_name.clone().unwrap_or_default();
        let env = self.client_script_env(addr, c, "learn-address");
        let cid = c.cid;
        // 2.6 learns the IPv4 address, then the IPv6 one: a call for each.
        let c_ctx = c.plugin_client();
        for ip in self.tunnel_addresses(peer) {
            self.learn_address(addr, cid, c_ctx, "add", ip, Some((&cn, &env)));
        }
    }

    /// The client's tunnel addresses as 2.6 learns them: IPv4 (if it has
    /// one), then IPv6 (if it has one).
    pub(super) fn tunnel_addresses(&self, peer: Peer) -> Vec<IpAddr> {
        let ip6 = (self.peers.load().by_id.get(&peer.id)).and_then(|p| p.tunnel_ipv6);
        (peer.ip.map(IpAddr::V4).into_iter())
            .chain(ip6.map(IpAddr::V6))
            .collect()
    }

    /// Refuse the client: AUTH_FAILED (with the reason, when there is one),
    /// then it goes after the grace period.
    pub(super) fn refuse(&mut self, now: Instant, addr: SocketAddr, reason: Option<&str>) {
        let Some(c) = self.clients.get_mut(&addr) else {
            return;
        };
        c.admission = Admission::Refused;
        c.held.clear();
        let msg = match reason {
            Some(r) => format!("AUTH_FAILED,{r}"),
            None => "AUTH_FAILED".to_owned(),
        };
        c.session.send_control_message(now, &msg);
        c.remove_at = Some(now + EXIT_GRACE);
        self.drain(now, Stage::Authenticated, addr);
    }

    /// A script finished.
    pub(super) fn on_script_done(&mut self, now: Instant, done: ScriptDone) {
        let ScriptDone { addr, cid, outcome } = done;
        if let Outcome::TlsCryptV2 { sid, accepted } = outcome {
            self.tls_crypt_v2_done(now, addr, sid, accepted);
            return;
        }
        if let Outcome::TlsVerify {
            verdict,
            key_id,
            stage: Stage::HalfOpen,
        } = outcome
        {
            if self.half_open.get(&addr).is_some_and(|c| c.cid == cid) {
                self.tls_verified(now, Stage::HalfOpen, addr, verdict, key_id);
            }
            return;
        }
        if self.clients.get(&addr).is_none_or(|c| c.cid != cid) {
            return;
        }
        match outcome {
            // Handled above.
            Outcome::Logged | Outcome::TlsCryptV2 { .. } => {}
            Outcome::TlsVerify {
                verdict, key_id, ..
            } => {
                self.tls_verified(now, Stage::Authenticated, addr, verdict, key_id);
            }
            Outcome::Verify {
                status: Status::Exited(0) | Status::Exited(2),
                again: false,
                ..
            } if self.identity_changed(addr, false).is_some() => {
                self.refuse_changed_identity(now, addr, false);
            }
            Outcome::Verify {
                status: status @ (Status::Exited(0) | Status::Exited(2)),
                files,
                again,
            } => self.tls_final_then(
                now,
                addr,
                AfterTlsFinal::Verify {
                    status,
                    files,
                    again,
                },
            ),
            Outcome::TlsFinal { ok: false, .. } => {
                warn!("{addr}: TLS Auth Error: the TLS_FINAL plugin call failed");
                self.refuse(now, addr, None);
            }
            Outcome::TlsFinal { ok: true, then } => self.after_tls_final(now, addr, then),
            Outcome::PluginConnect { reply } => self.plugin_connect_done(now, addr, reply),
            Outcome::Verify {
                status,
                files,
                again,
            } => match status {
                Status::Exited(0) => self.verified(now, addr, again),
                Status::Exited(2) => self.deferred(now, addr, files, again),
                _ => {
                    warn!(
                        "{addr}: TLS Auth Error: Auth Username/Password verification failed for peer"
                    );
                    let reason = files.failed_reason();
                    self.refuse(now, addr, reason.as_deref());
                }
            },
            Outcome::Connect {
                status,
                config,
                result,
            } => {
                if !status.success() {
                    warn!("{addr}: client-connect failed, refusing client");
                    self.refuse(now, addr, None);
                    return;
                }
                // As 2.6: only a `2` defers; anything else in the file
                // (even `0`) after a successful exit is a success.
                if deferred::read_connect_result(&result) == ConnectResult::Deferred {
                    self.connect_deferred(now, addr, config, result);
                    return;
                }
                self.client_connect_done(now, addr, &config);
            }
        }
    }

    /// `PLUGIN_TLS_FINAL`, when a plugin asked for it, then `then`.
    fn tls_final_then(&mut self, now: Instant, addr: SocketAddr, then: AfterTlsFinal) {
        let wanted = self
            .plugins
            .as_ref()
            .is_some_and(|p| p.wants(plugin::TLS_FINAL));
        let Some(c) = self.clients.get(&addr).filter(|_| wanted) else {
            self.after_tls_final(now, addr, then);
            return;
        };
        let env = self.client_script_env(addr, c, "tls-final");
        let cid = c.cid;
        let c_ctx = c.plugin_client();
        spawn_plugin(
            self,
            addr,
            cid,
            plugin::TLS_FINAL,
            c_ctx,
            Vec::new(),
            env,
            |reply| Outcome::TlsFinal {
                ok: reply.verdict == plugin::Verdict::Success,
                then,
            },
        );
    }

    fn after_tls_final(&mut self, now: Instant, addr: SocketAddr, then: AfterTlsFinal) {
        match then {
            AfterTlsFinal::Verify {
                status,
                files,
                again,
            } => {
                if status == Status::Exited(2) {
                    self.deferred(now, addr, files, again);
                } else {
                    self.verified(now, addr, again);
                }
            }
            AfterTlsFinal::Verified { again } => self.verified(now, addr, again),
            AfterTlsFinal::NoLogin => self.after_verify(now, addr),
            AfterTlsFinal::Renegotiation => {}
        }
    }

    /// `PLUGIN_CLIENT_CONNECT_V2` (before the `client-connect` script, as
    /// 2.6 orders them): `false` when no plugin asked for it.
    fn plugin_connect(&mut self, addr: SocketAddr) -> bool {
        if !self
            .plugins
            .as_ref()
            .is_some_and(|p| p.wants(plugin::CLIENT_CONNECT_V2))
        {
            return false;
        }
        let Some(c) = self.clients.get(&addr) else {
            return true;
        };
        let env = self.client_script_env(addr, c, "client-connect");
        let cid = c.cid;
        let c_ctx = c.plugin_client();
        if let Some(c) = self.clients.get_mut(&addr) {
            c.admission = Admission::Connecting;
        }
        spawn_plugin(
            self,
            addr,
            cid,
            plugin::CLIENT_CONNECT_V2,
            c_ctx,
            Vec::new(),
            env,
            |reply| Outcome::PluginConnect { reply },
        )
    }

    /// `CLIENT_CONNECT_V2` or `CLIENT_CONNECT_DEFER_V2` answered: on
    /// success its `config` values are read as a dynamic config file and
    /// the `client-connect` script comes next.
    fn plugin_connect_done(&mut self, now: Instant, addr: SocketAddr, reply: plugin::Reply) {
        let deferrable = self
            .plugins
            .as_ref()
            .is_some_and(|p| p.wants(plugin::CLIENT_CONNECT_DEFER_V2));
        let hand_window = self.s.session.hand_window;
        let Some(c) = self.clients.get_mut(&addr) else {
            return;
        };
        match reply.verdict {
            plugin::Verdict::Success => {
                c.admission = Admission::Connecting;
                let lines: Vec<String> = reply.values("config").map(str::to_owned).collect();
                if !lines.is_empty()
                    && let Err(why) = self.apply_management_config(addr, &lines)
                {
                    warn!("{addr}: client-connect-v2 plugin config: {why}, refusing client");
                    self.refuse(now, addr, None);
                    return;
                }
                self.run_client_connect_script(now, addr);
            }
            plugin::Verdict::Deferred if deferrable => {
                let deadline = match c.admission {
                    Admission::PluginConnectDeferred { deadline, .. } => deadline,
                    _ => now + hand_window,
                };
                c.admission = Admission::PluginConnectDeferred {
                    deadline,
                    asking: false,
                };
            }
            plugin::Verdict::Deferred => {
                warn!(
                    "{addr}: A plugin that defers from the OPENVPN_PLUGIN_CLIENT_CONNECT_V2 call must also declare support for OPENVPN_PLUGIN_CLIENT_CONNECT_DEFER_V2"
                );
                self.refuse(now, addr, None);
            }
            plugin::Verdict::Error => {
                warn!("{addr}: WARNING: client-connect-v2 plugin call failed");
                self.refuse(now, addr, None);
            }
        }
    }

    /// Ask the plugins that deferred `CLIENT_CONNECT_V2` again
    /// (housekeeping), as 2.6 calls `CLIENT_CONNECT_DEFER_V2` each time it
    /// looks at a waiting client; one still waiting after hand-window is
    /// forgotten as for the script.
    fn poll_plugin_connect(&mut self, now: Instant) {
        let mut ask = Vec::new();
        let mut expired = Vec::new();
        for (addr, c) in self.clients.iter() {
            if let Admission::PluginConnectDeferred { deadline, asking } = c.admission {
                if now >= deadline {
                    expired.push(*addr);
                } else if !asking {
                    ask.push(*addr);
                }
            }
        }
        for addr in expired {
            if let Some(c) = self.clients.get_mut(&addr) {
                c.admission = Admission::Refused;
                c.held.clear();
            }
            self.remove_client(
                addr,
                "deferred client-connect plugin gave no answer within hand-window",
            );
        }
        for addr in ask {
            let Some(c) = self.clients.get(&addr) else {
                continue;
            };
            let env = self.client_script_env(addr, c, "client-connect");
            let cid = c.cid;
            let c_ctx = c.plugin_client();
            if let Some(c) = self.clients.get_mut(&addr)
                && let Admission::PluginConnectDeferred { asking, .. } = &mut c.admission
            {
                *asking = true;
            }
            spawn_plugin(
                self,
                addr,
                cid,
                plugin::CLIENT_CONNECT_DEFER_V2,
                c_ctx,
                Vec::new(),
                env,
                |reply| Outcome::PluginConnect { reply },
            );
        }
    }

    /// `client-connect` succeeded: read its dynamic config file, then let
    /// the client in (or refuse it, on `disable` or a file that cannot be read).
    fn client_connect_done(&mut self, now: Instant, addr: SocketAddr, config: &std::path::Path) {
        match self.apply_client_connect_config(addr, config) {
            Ok(()) => self.admit(now, addr),
            Err(why) => {
                warn!("{addr}: client-connect: {why}, refusing client");
                self.refuse(now, addr, None);
            }
        }
    }

    /// `client-connect` deferred its answer. The client gets nothing
    /// meanwhile (as from 2.6: its push requests go unanswered, its data
    /// keys are held); the result file is looked at in housekeeping.
    fn connect_deferred(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        config: tempfile::TempPath,
        result: tempfile::TempPath,
    ) {
        let deadline = now + self.s.session.hand_window;
        let Some(c) = self.clients.get_mut(&addr) else {
            return;
        };
        info!(
            "{addr}: MULTI: deferred --client-connect, waiting for its answer in {}",
            result.display()
        );
        c.admission = Admission::ConnectDeferred {
            config,
            result,
            deadline,
        };
    }

    /// Look at the result files of deferred `client-connect`s
    /// (housekeeping): `1` admits the client with the dynamic config file
    /// as it is now, `0` (or any other byte) refuses it. 2.6 waits without
    /// a limit of its own, but its client gives up after hand-window
    /// without a push reply and starts over; ferrovpn forgets a client
    /// still waiting then.
    pub(super) fn poll_deferred_connect(&mut self, now: Instant) {
        self.poll_plugin_connect(now);
        let mut decided = Vec::new();
        for (addr, c) in self.clients.iter() {
            let Admission::ConnectDeferred {
                result, deadline, ..
            } = &c.admission
            else {
                continue;
            };
            match deferred::read_connect_result(result) {
                ConnectResult::Empty | ConnectResult::Deferred if now < *deadline => {}
                answer => decided.push((*addr, answer)),
            }
        }
        for (addr, answer) in decided {
            let Some(c) = self.clients.get_mut(&addr) else {
                continue;
            };
            let Admission::ConnectDeferred { config, result, .. } =
                std::mem::replace(&mut c.admission, Admission::Connecting)
            else {
                continue;
            };
            drop(result);
            match answer {
                ConnectResult::Accepted => self.client_connect_done(now, addr, &config),
                ConnectResult::Refused => {
                    info!("{addr}: MULTI: deferred --client-connect script returned CC_RET_FAILED");
                    self.refuse(now, addr, None);
                }
                ConnectResult::Unexpected => {
                    warn!(
                        "{addr}: WARNING: Unknown/unexpected value in deferred client-connect resultfile"
                    );
                    self.refuse(now, addr, None);
                }
                ConnectResult::Empty | ConnectResult::Deferred => {
                    // Nothing is sent: the client gave up and starts over.
                    if let Some(c) = self.clients.get_mut(&addr) {
                        c.admission = Admission::Refused;
                        c.held.clear();
                    }
                    self.remove_client(
                        addr,
                        "deferred client-connect gave no answer within hand-window",
                    );
                }
            }
        }
    }

    /// The script deferred its answer: send AUTH_PENDING when it asked for
    /// it, then watch its control file.
    fn deferred(&mut self, now: Instant, addr: SocketAddr, files: ControlFiles, again: bool) {
        let hand_window = self.s.session.hand_window;
        let Some(c) = self.clients.get_mut(&addr) else {
            return;
        };
        match files.pending() {
            Ok(None) => {}
            Ok(Some(p)) => {
                let info = c.peer_info.as_ref();
                let sso = info.and_then(|i| {
                    i.other
                        .iter()
                        .find(|(k, _)| k == "IV_SSO")
                        .map(|(_, v)| v.as_str())
                });
                if !deferred::client_supports(sso, &p.method) {
                    info!(
                        "{addr}: Client does not supported auth pending method '{}'",
                        p.method
                    );
                    let reason = format!(
                        "Authentication failed, required pending auth method '{}' not supported",
                        p.method
                    );
                    self.refuse(now, addr, Some(&reason));
                    return;
                }
                let keyword = info.is_some_and(|i| i.proto & iv_proto::AUTH_PENDING_KW != 0);
                let timeout = p.timeout_secs.min(hand_window.as_secs() as u32);
                if keyword {
                    c.session
                        .send_control_message(now, &format!("AUTH_PENDING,timeout {timeout}"));
                } else {
                    c.session.send_control_message(now, "AUTH_PENDING");
                }
                c.session
                    .send_control_message(now, &format!("INFO_PRE,{}", p.extra));
            }
            Err(e) => {
                warn!("{addr}: {e}");
                self.refuse(now, addr, None);
                return;
            }
        }
        if let Some(u) = &c.username {
            info!("{addr}: TLS: Username/Password authentication deferred for username '{u}'");
        }
        if again {
            // The client stays in on its earlier login meanwhile.
            c.reauth = Some((files, now + hand_window));
            self.drain(now, Stage::Authenticated, addr);
            return;
        }
        let deadline = match c.admission {
            Admission::Verifying { deadline, .. } => deadline,
            _ => now + hand_window,
        };
        c.admission = Admission::Verifying {
            files: Some(files),
            deadline,
        };
        self.drain(now, Stage::Authenticated, addr);
    }

    /// Look at the control files of deferred logins (housekeeping).
    pub(super) fn poll_deferred_auth(&mut self, now: Instant) {
        let mut decided = Vec::new();
        for (addr, c) in self.clients.iter() {
            let (files, deadline, again) = match (&c.admission, &c.reauth) {
                (
                    Admission::Verifying {
                        files: Some(files),
                        deadline,
                    },
                    _,
                ) => (files, deadline, false),
                (Admission::Admitted, Some((files, deadline))) => (files, deadline, true),
                _ => continue,
            };
            {
                match files.control() {
                    Control::Accepted => decided.push((*addr, again, Ok(()))),
                    Control::Refused => decided.push((*addr, again, Err(files.failed_reason()))),
                    Control::Pending if now >= *deadline => {
                        info!("{addr}: deferred authentication timed out");
                        decided.push((*addr, again, Err(None)));
                    }
                    Control::Pending => {}
                }
            }
        }
        for (addr, again, verdict) in decided {
            if let Some(c) = self.clients.get_mut(&addr) {
                c.reauth = None;
            }
            match verdict {
                Ok(()) => self.verified(now, addr, again),
                Err(reason) => {
                    warn!(
                        "{addr}: TLS Auth Error: Auth Username/Password verification failed for peer"
                    );
                    self.refuse(now, addr, reason.as_deref());
                }
            }
        }
    }

    /// What `client-connect` wrote into its dynamic config file (2.6 reads
    /// it as a client-config-dir file, after the client's ccd file):
    /// `disable` refuses the client, `ifconfig-push` fixes its address,
    /// `push`/`push-reset`/`push-remove` edit its push list after the ccd
    /// file's edits, and `iroute` adds internal routes to the ccd file's.
    fn apply_client_connect_config(
        &mut self,
        addr: SocketAddr,
        path: &std::path::Path,
    ) -> Result<(), String> {
        use std::io::Read;
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_DYNAMIC_CONFIG).read_to_end(&mut bytes))
            .map_err(|e| format!("dynamic config file: {e}"))?;
        let text = String::from_utf8_lossy(&bytes);
        let (cfg, errors) = ClientConfig::parse(&text, &path.to_string_lossy());
        for e in errors {
            warn!("{addr}: client-connect: {e} (line ignored)");
        }
        if cfg.disable {
            return Err("client is disabled ('disable' in the dynamic config file)".into());
        }
        if let Some(p) = cfg.ifconfig_push {
            self.clients
                .set_address(addr, p.local)
                .ok_or("no tunnel address to replace")?;
        }
        let new_iroutes = !cfg.iroutes.is_empty() || !cfg.iroutes_ipv6.is_empty();
        let c = self.clients.get_mut(&addr).ok_or("the client is gone")?;
        let merged = c.client_config.get_or_insert_with(ClientConfig::default);
        merged.extend(cfg);
        let merged = merged.clone();
        if new_iroutes && let Some(peer) = self.clients.peer(&addr) {
            self.publish_client_routes(addr, peer.id, &merged);
        }
        Ok(())
    }

    /// `management-client-auth`: the `client-auth` block is read exactly as
    /// a client-connect dynamic config file, and last, as 2.6 applies it
    /// (after the client-config-dir file and client-connect).
    fn apply_management_config(
        &mut self,
        addr: SocketAddr,
        lines: &[String],
    ) -> Result<(), String> {
        use std::io::Write;
        // As before client-connect: the address the block may replace is
        // given out first (an exhausted pool was answered already).
        if self.ensure_peer(addr).is_none() {
            return Err("no tunnel address for the client".into());
        }
        let mut file = tempfile::Builder::new()
            .prefix("openvpn_cc_")
            .suffix(".tmp")
            .tempfile_in(&self.s.scripts.tmp_dir)
            .map_err(|e| format!("cannot create a file for it: {e}"))?;
        for line in lines {
            writeln!(file, "{line}").map_err(|e| format!("cannot write it: {e}"))?;
        }
        let path = file.into_temp_path();
        self.apply_client_connect_config(addr, &path)
    }

    /// A client that was admitted goes: `client-disconnect`, `learn-address delete`.
    pub(super) fn on_client_gone(
        &mut self,
        addr: SocketAddr,
        c: &mut Client,
        peer: Option<super::registry::Peer>,
    ) {
        // 2.6 runs client-disconnect for every client that got through
        // client-connect (multi_state >= CAS_CONNECT_DONE), also one
        // refused later, on a renegotiation.
        if !c.connect_done {
            return;
        }
        let stats = peer.and_then(|p| self.peers.peer_stats(p.id));
        let learned = peer.map(|p| self.tunnel_addresses(p)).unwrap_or_default();
        let mut env = self.client_script_env(addr, c, "client-disconnect");
        // The client has left the registry: its addresses from `peer`.
        for (k, v) in peer.map(|p| self.pool_env(p, c)).unwrap_or_default() {
            env.set(k, v);
        }
        let (rx, tx) = c.link_bytes(stats.as_ref());
        env.set("bytes_received", rx.to_string());
        env.set("bytes_sent", tx.to_string());
        env.set(
            "time_duration",
            unix_now().saturating_sub(c.since).to_string(),
        );
        spawn_plugin(
            self,
            addr,
            c.cid,
            plugin::CLIENT_DISCONNECT,
            c.plugin_client(),
            Vec::new(),
            env.clone(),
            |reply| {
                if reply.verdict != plugin::Verdict::Success {
                    warn!("WARNING: client-disconnect plugin call failed");
                }
                Outcome::Logged
            },
        );
        if let Some(command) = self.s.scripts.client_disconnect.clone() {
            let inv = Invocation {
                hook: "--client-disconnect",
                command,
                extra: Vec::new(),
                env,
            };
            spawn(self, addr, c.cid, inv, |_| Outcome::Logged);
        }
        // 2.6 destroys the per-client plugin contexts when it closes the
        // client instance, right after client-disconnect; the route's
        // `learn-address delete` comes later.
        drop(c.plugin_context.take());
        for ip in learned {
            // 2.6 calls it for the server's context, not the client's.
            self.learn_address(addr, c.cid, None, "delete", ip, None);
        }
    }

    /// `learn-address OP ADDR [CN]` (`client`: the common name and the
    /// client's environment, on `add`): the plugins' call, then the
    /// script, with the same arguments. 2.6 gives the plugins the client's
    /// environment on `add`, an empty one on `delete`.
    fn learn_address(
        &mut self,
        addr: SocketAddr,
        cid: u64,
        plugin_client: Option<plugin::ClientId>,
        op: &str,
        ip: IpAddr,
        client: Option<(&str, &Env)>,
    ) {
        let args = scripts::learn_address_args(op, ip, client.map(|(cn, _)| cn));
        let env = client.map(|(_, env)| env.clone()).unwrap_or_default();
        spawn_plugin(
            self,
            addr,
            cid,
            plugin::LEARN_ADDRESS,
            plugin_client,
            args,
            env,
            |reply| {
                if reply.verdict != plugin::Verdict::Success {
                    warn!("WARNING: learn-address plugin call failed");
                }
                Outcome::Logged
            },
        );
        if let Some(inv) = self.s.scripts.learn_address(op, ip, client) {
            spawn(self, addr, cid, inv, |_| Outcome::Logged);
        }
    }
}

/// The via-file credentials: user name and password lines in a file only
/// ferrovpn's user can read, removed when the returned path drops.
fn write_credentials(
    dir: &std::path::Path,
    cred: &Credentials,
) -> std::io::Result<tempfile::TempPath> {
    use std::io::Write;
    // tempfile creates it with mode 0600.
    let mut f = tempfile::Builder::new()
        .prefix("openvpn_up_")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    writeln!(f, "{}", cred.username)?;
    writeln!(f, "{}", cred.password)?;
    f.flush()?;
    Ok(f.into_temp_path())
}

/// Run `tls-crypt-v2-verify` as 2.6 does: the metadata after its type
/// byte in a temporary file, and only `script_type`, `metadata_type` and
/// `metadata_file` in the environment. `true` when it exits 0.
async fn run_tls_crypt_v2_verify(
    command: scripts::ScriptCommand,
    security: scripts::Security,
    tmp_dir: &std::path::Path,
    metadata: &Metadata,
) -> bool {
    use std::io::Write;
    let Some(kind) = metadata.kind() else {
        warn!("ERROR: no metadata type");
        return false;
    };
    let file = tempfile::Builder::new()
        .prefix("tls_crypt_v2_metadata_")
        .tempfile_in(tmp_dir)
        .and_then(|mut f| {
            f.write_all(metadata.data())?;
            f.flush()?;
            Ok(f.into_temp_path())
        });
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            warn!("ERROR: could not write metadata to file: {e}");
            return false;
        }
    };
    let mut env = Env::new();
    env.set("script_type", "tls-crypt-v2-verify");
    env.set("metadata_type", kind.to_string());
    env.set("metadata_file", file.to_string_lossy().into_owned());
    let inv = Invocation {
        hook: "--tls-crypt-v2-verify",
        command,
        extra: Vec::new(),
        env,
    };
    let status = run::run_reported(inv, security).await;
    drop(file);
    if status.success() {
        info!("TLS CRYPT V2 VERIFY SCRIPT OK");
        true
    } else {
        info!("TLS CRYPT V2 VERIFY SCRIPT ERROR");
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_config_edits_follow_the_ccd_file() {
        let (mut base, _) = ClientConfig::parse(
            "push \"route 10.1.0.0 255.255.0.0\"\niroute 192.168.1.0 255.255.255.0\n",
            "ccd",
        );
        let (dynamic, errors) = ClientConfig::parse(
            "push-reset\npush \"route 10.2.0.0 255.255.0.0\"\niroute 192.168.2.0 255.255.255.0\niroute-ipv6 fd00:2::/64\nifconfig-push 10.8.0.9 255.255.255.0\n",
            "cc",
        );
        assert!(errors.is_empty(), "{errors:?}");
        base.extend(dynamic);
        assert_eq!(
            base.push_list(&["route 10.3.0.0 255.255.0.0".into()]),
            ["route 10.2.0.0 255.255.0.0"]
        );
        assert_eq!(base.iroutes.len(), 2);
        assert_eq!(base.iroutes_ipv6.len(), 1);
        assert_eq!(
            base.ifconfig_push.map(|p| p.local),
            Some(std::net::Ipv4Addr::new(10, 8, 0, 9))
        );
    }
}
