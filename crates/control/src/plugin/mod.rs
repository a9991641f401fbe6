//! `plugin PATH [ARGS]`: OpenVPN plugin shared objects (API v1–v3), such
//! as Debian's `openvpn-plugin-auth-pam.so`. All plugins live on one
//! dedicated thread that opens them, calls them one call at a time (the
//! API is not thread-safe; OpenVPN calls them from its single thread) and
//! closes them; the control runtime only sends it jobs and awaits the
//! answer, so a plugin that blocks (auth-pam waits on its PAM helper
//! process) never holds up other clients. The FFI is in the private `ffi`
//! module; the OpenSSL certificate objects of `PLUGIN_TLS_VERIFY` come
//! from the private `x509` module (libcrypto, loaded at run time).

mod ffi;
mod x509;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use tracing::{info, warn};

use crate::scripts::Env;

/// `OPENVPN_PLUGIN_*` hook types (the numbers are the API's).
pub const UP: u32 = 0;
pub const DOWN: u32 = 1;
pub const ROUTE_UP: u32 = 2;
pub const IPCHANGE: u32 = 3;
pub const TLS_VERIFY: u32 = 4;
pub const AUTH_USER_PASS_VERIFY: u32 = 5;
pub const CLIENT_DISCONNECT: u32 = 7;
pub const LEARN_ADDRESS: u32 = 8;
pub const CLIENT_CONNECT_V2: u32 = 9;
pub const TLS_FINAL: u32 = 10;
pub const ENABLE_PF: u32 = 11;
pub const ROUTE_PREDOWN: u32 = 12;
pub const CLIENT_CONNECT_DEFER_V2: u32 = 14;

/// Names of the hook types, by number, for messages.
const HOOK_NAMES: [&str; 15] = [
    "PLUGIN_UP",
    "PLUGIN_DOWN",
    "PLUGIN_ROUTE_UP",
    "PLUGIN_IPCHANGE",
    "PLUGIN_TLS_VERIFY",
    "PLUGIN_AUTH_USER_PASS_VERIFY",
    "PLUGIN_CLIENT_CONNECT",
    "PLUGIN_CLIENT_DISCONNECT",
    "PLUGIN_LEARN_ADDRESS",
    "PLUGIN_CLIENT_CONNECT_V2",
    "PLUGIN_TLS_FINAL",
    "PLUGIN_ENABLE_PF",
    "PLUGIN_ROUTE_PREDOWN",
    "PLUGIN_CLIENT_CONNECT_DEFER",
    "PLUGIN_CLIENT_CONNECT_DEFER_V2",
];

/// The hook types a ferrovpn server calls plugins for. A plugin that asks
/// for any other is refused at start (2.6 refuses types it lacks the same
/// way), rather than loaded and silently never called: the v1
/// `CLIENT_CONNECT`/`CLIENT_CONNECT_DEFER`, `IPCHANGE` (2.6 calls it when
/// a client's connection to its server is initiated, never on a server),
/// and `ENABLE_PF` (2.6 removed packet filtering).
pub const SERVER_HOOKS: u32 = mask(UP)
    | mask(DOWN)
    | mask(ROUTE_UP)
    | mask(ROUTE_PREDOWN)
    | mask(TLS_VERIFY)
    | mask(AUTH_USER_PASS_VERIFY)
    | mask(CLIENT_DISCONNECT)
    | mask(LEARN_ADDRESS)
    | mask(CLIENT_CONNECT_V2)
    | mask(TLS_FINAL)
    | mask(CLIENT_CONNECT_DEFER_V2);

/// The hook types a ferrovpn client calls plugins for: those 2.6 calls on
/// a client (`TLS_VERIFY` for each certificate of the server's chain,
/// `TLS_FINAL` after each key exchange, `IPCHANGE` when the connection to
/// the server is initiated, then the tunnel's `UP`, `ROUTE_UP`,
/// `ROUTE_PREDOWN`, `DOWN`). The login, client-instance and address hooks
/// are a server's; 2.6 never calls them on a client.
pub const CLIENT_HOOKS: u32 = mask(UP)
    | mask(DOWN)
    | mask(ROUTE_UP)
    | mask(ROUTE_PREDOWN)
    | mask(IPCHANGE)
    | mask(TLS_VERIFY)
    | mask(TLS_FINAL);

/// The hook types a plugin may ask for on a ferrovpn client: those it
/// calls ([`CLIENT_HOOKS`]) and those 2.6 accepts there but never calls on
/// a client (the server's login, client-instance and address hooks; the
/// removed `ENABLE_PF`), so a plugin made for both roles loads as in 2.6.
pub const CLIENT_SERVED: u32 = (1 << 16) - 1;

/// How long a plugin call may take before ferrovpn stops waiting and
/// counts it as failed (as for scripts).
const CALL_TIMEOUT: Duration = crate::scripts::run::SCRIPT_TIMEOUT;

/// Where 2.6 on Debian looks for a plugin named without a directory.
pub const PLUGIN_LIBDIR: &str = "/usr/lib/x86_64-linux-gnu/openvpn/plugins";

/// `OPENVPN_PLUGIN_MASK(hook)`.
pub const fn mask(hook: u32) -> u32 {
    1 << hook
}

/// The names of the hook types in `mask`, e.g. `PLUGIN_UP|PLUGIN_DOWN`.
pub fn hook_names(mask: u32) -> String {
    (0..32)
        .filter(|b| mask & (1 << b) != 0)
        .map(|b| {
            HOOK_NAMES
                .get(b as usize)
                .map_or_else(|| format!("type {b}"), |n| (*n).to_owned())
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// One `plugin` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSpec {
    /// The shared object to load (see [`resolve_path`]).
    pub path: PathBuf,
    /// The plugin's `argv`: the name as written, then its arguments.
    pub argv: Vec<String>,
}

impl PluginSpec {
    pub fn new(name: &str, args: &[String]) -> Self {
        PluginSpec {
            path: resolve_path(name),
            argv: std::iter::once(name.to_owned())
                .chain(args.iter().cloned())
                .collect(),
        }
    }
}

/// 2.6's rule: a name that is neither absolute nor starts with `.` is
/// looked up in the plugin directory (`auth-pam.so`, `my/x.so`); others
/// are taken as they are (relative to the working directory).
pub fn resolve_path(name: &str) -> PathBuf {
    if Path::new(name).is_absolute() || name.starts_with('.') {
        PathBuf::from(name)
    } else {
        Path::new(PLUGIN_LIBDIR).join(name)
    }
}

/// What the plugins answered (`OPENVPN_PLUGIN_FUNC_*`), all of them
/// together as 2.6 combines them: any error is an error, else any
/// deferral defers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    Deferred,
    Error,
}

/// The plugins' verdict and the name/value pairs they returned (e.g.
/// `config` from `CLIENT_CONNECT_V2`), in plugin order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub verdict: Verdict,
    pub returned: Vec<(String, String)>,
}

impl Reply {
    /// The values returned under `name`, in plugin order.
    pub fn values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.returned
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

enum Job {
    /// Call every plugin that asked for `hook`.
    Call {
        hook: u32,
        args: Vec<String>,
        envp: Vec<String>,
        /// Whose per-client contexts to pass; `None`: the server's own.
        client: Option<ClientId>,
        /// `PLUGIN_TLS_VERIFY`: the certificate being verified.
        certificate: Option<Certificate>,
        reply: tokio::sync::oneshot::Sender<Reply>,
    },
    /// A client instance was created: run the plugins' constructors.
    NewClient(ClientId),
    /// It went: run their destructors.
    ClientGone(ClientId),
    /// Destroy what is left and close the plugins.
    Shutdown,
    /// 2.6's exit on a fatal error: the plugins' abort functions, nothing
    /// destroyed nor closed.
    Abort,
}

/// The certificate a `PLUGIN_TLS_VERIFY` call is about: its depth in the
/// chain (0: the peer's own) and its DER, made an OpenSSL `X509*` for the
/// call on the plugin thread.
struct Certificate {
    depth: u32,
    der: Vec<u8>,
}

/// Names a client's per-client contexts in plugin calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(u64);

/// A client's per-client plugin contexts (`openvpn_plugin_client_constructor_v1`),
/// alive as long as this value: the plugins' constructors run when it is
/// made ([`Plugins::client_context`]), their destructors when it drops.
/// Jobs go to the plugin thread in the order they are made, so every call
/// made for the client before it drops sees the context, as in 2.6.
pub struct ClientContext {
    id: ClientId,
    jobs: mpsc::Sender<Job>,
}

impl ClientContext {
    /// What calls for this client pass (see [`Plugins::submit`]).
    pub fn id(&self) -> ClientId {
        self.id
    }
}

impl std::fmt::Debug for ClientContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ClientContext").field(&self.id.0).finish()
    }
}

impl Drop for ClientContext {
    fn drop(&mut self) {
        // The plugin thread is gone only after shutdown, which destroyed
        // every context left.
        let _ = self.jobs.send(Job::ClientGone(self.id));
    }
}

/// What the plugin thread reports once the plugins are open.
struct Opened {
    /// Union of the hook types the plugins asked for.
    mask: u32,
    /// Whether some plugin has a per-client constructor.
    per_client: bool,
}

/// The opened plugins and their thread. Dropping this destroys the
/// per-client contexts left, closes the plugins (in order, as 2.6 does)
/// and waits for the thread.
pub struct Plugins {
    jobs: mpsc::Sender<Job>,
    /// Union of the hook types the plugins asked for.
    mask: u32,
    per_client: bool,
    next_client: std::sync::atomic::AtomicU64,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugins")
            .field("mask", &hook_names(self.mask))
            .finish()
    }
}

impl Plugins {
    /// Open every plugin in order, each with `env` (2.6 passes the
    /// environment of its scripts), then make the server's own per-client
    /// contexts (2.6 makes them for its top-level context too). `served`
    /// is the mask of hook types the caller will call. `None` when there
    /// is no plugin.
    pub fn open(specs: &[PluginSpec], served: u32, env: &Env) -> anyhow::Result<Option<Self>> {
        Self::open_with(specs, served, env, x509::LIBCRYPTO)
    }

    /// [`Plugins::open`], loading libcrypto from `libcrypto` when a plugin
    /// asks for `PLUGIN_TLS_VERIFY`.
    fn open_with(
        specs: &[PluginSpec],
        served: u32,
        env: &Env,
        libcrypto: &'static str,
    ) -> anyhow::Result<Option<Self>> {
        if specs.is_empty() {
            return Ok(None);
        }
        let specs = specs.to_vec();
        let envp = env_strings(env);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Opened, String>>();
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("ferrovpn-plugin".into())
            .spawn(move || serve(&specs, served, libcrypto, &envp, &ready_tx, &job_rx))?;
        let mut plugins = Plugins {
            jobs,
            mask: 0,
            per_client: false,
            next_client: std::sync::atomic::AtomicU64::new(0),
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(opened)) => {
                plugins.mask = opened.mask;
                plugins.per_client = opened.per_client;
            }
            Ok(Err(e)) => anyhow::bail!("{e}"),
            Err(_) => anyhow::bail!("the plugin thread ended while opening the plugins"),
        }
        Ok(Some(plugins))
    }

    /// Whether some plugin asked for `hook`.
    pub fn wants(&self, hook: u32) -> bool {
        self.mask & mask(hook) != 0
    }

    /// A new client instance's per-client contexts (2.6 makes them when it
    /// creates the client instance, and destroys them when it closes it):
    /// `None` when no plugin keeps per-client state.
    pub fn client_context(&self) -> Option<ClientContext> {
        if !self.per_client {
            return None;
        }
        let id = ClientId(
            self.next_client
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        self.jobs.send(Job::NewClient(id)).ok()?;
        Some(ClientContext {
            id,
            jobs: self.jobs.clone(),
        })
    }

    /// Call every plugin that asked for `hook` (with the server's own
    /// per-client contexts), on the plugin thread, with `args` after the
    /// plugin's name in its `argv` and `env` (every variable: plugins see
    /// passwords, as in 2.6).
    pub async fn call(&self, hook: u32, args: Vec<String>, env: &Env) -> Verdict {
        self.submit(hook, args, env, None).await.verdict
    }

    /// Queue the call of every plugin that asked for `hook` now (calls run
    /// in the order they are submitted), with `client`'s per-client
    /// contexts (`None`: the server's own); the future is its reply, with
    /// what the plugins returned. As 2.6, the plugins never see
    /// `script_type`.
    pub fn submit(
        &self,
        hook: u32,
        args: Vec<String>,
        env: &Env,
        client: Option<ClientId>,
    ) -> impl std::future::Future<Output = Reply> + Send + 'static {
        self.submit_job(hook, args, env, client, None)
    }

    /// Queue the `PLUGIN_TLS_VERIFY` call for the certificate `der` at
    /// `depth` of the peer's chain (see [`Plugins::submit`]), with 2.6's
    /// `argv`: `depth subject`. The v3 plugins get it as an OpenSSL `X509*`
    /// in `current_cert`, and `current_cert_depth`. As 2.6, only
    /// [`Verdict::Success`] accepts the certificate.
    pub fn submit_tls_verify(
        &self,
        depth: u32,
        subject: &str,
        der: &[u8],
        env: &Env,
        client: Option<ClientId>,
    ) -> impl std::future::Future<Output = Verdict> + Send + 'static {
        let certificate = Certificate {
            depth,
            der: der.to_vec(),
        };
        let args = vec![depth.to_string(), subject.to_owned()];
        let reply = self.submit_job(TLS_VERIFY, args, env, client, Some(certificate));
        async move { reply.await.verdict }
    }

    fn submit_job(
        &self,
        hook: u32,
        args: Vec<String>,
        env: &Env,
        client: Option<ClientId>,
        certificate: Option<Certificate>,
    ) -> impl std::future::Future<Output = Reply> + Send + 'static {
        let error = Reply {
            verdict: Verdict::Error,
            returned: Vec::new(),
        };
        let answer = if self.wants(hook) {
            let mut env = env.clone();
            env.remove("script_type");
            let (reply, answer) = tokio::sync::oneshot::channel();
            let job = Job::Call {
                hook,
                args,
                envp: env_strings(&env),
                client,
                certificate,
                reply,
            };
            if self.jobs.send(job).is_err() {
                warn!("PLUGIN_CALL: the plugin thread is gone");
                None
            } else {
                Some(answer)
            }
        } else {
            None
        };
        let wanted = self.wants(hook);
        async move {
            let Some(answer) = answer else {
                return if wanted {
                    error
                } else {
                    Reply {
                        verdict: Verdict::Success,
                        returned: Vec::new(),
                    }
                };
            };
            match tokio::time::timeout(CALL_TIMEOUT, answer).await {
                Ok(Ok(v)) => v,
                Ok(Err(_)) => error,
                Err(_) => {
                    warn!(
                        "PLUGIN_CALL: {} took longer than {} seconds, counted as failed",
                        hook_names(mask(hook)),
                        CALL_TIMEOUT.as_secs()
                    );
                    error
                }
            }
        }
    }
}

impl Plugins {
    /// What 2.6 does to its plugins when a fatal error ends it (a failing
    /// `up`, `route-pre-down` or `down` plugin or script): their abort
    /// functions (`openvpn_plugin_abort_v1`) run, and nothing more; the
    /// process is about to exit. Later calls answer as failed.
    pub fn abort(&self) {
        let _ = self.jobs.send(Job::Abort);
    }
}

impl Drop for Plugins {
    fn drop(&mut self) {
        // Client contexts still alive hold senders too: the thread stops
        // on this message, not when the queue closes.
        let _ = self.jobs.send(Job::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `NAME=value` strings; a password in them is wiped when dropped.
fn env_strings(env: &Env) -> Vec<String> {
    env.iter().map(|(n, v)| format!("{n}={v}")).collect()
}

/// One context per plugin, in plugin order.
type Contexts = Vec<ffi::ClientContextPtr>;

fn construct(loaded: &[ffi::Loaded]) -> Contexts {
    loaded.iter().map(ffi::Loaded::new_client_context).collect()
}

fn destroy(loaded: &[ffi::Loaded], contexts: Contexts) {
    for (p, c) in loaded.iter().zip(contexts) {
        p.drop_client_context(c);
    }
}

/// The plugin thread: open, answer jobs until shutdown (or until the
/// queue closes), destroy the contexts left, close.
fn serve(
    specs: &[PluginSpec],
    served: u32,
    libcrypto_name: &str,
    envp: &[String],
    ready: &mpsc::Sender<Result<Opened, String>>,
    jobs: &mpsc::Receiver<Job>,
) {
    let mut loaded = Vec::new();
    // Loaded once, when the first plugin needs it, for every call.
    let mut libcrypto: Option<x509::Libcrypto> = None;
    for spec in specs {
        let opened = ffi::Loaded::open(&spec.path, &spec.argv, envp, served).and_then(|p| {
            if p.takes_certificates() && libcrypto.is_none() {
                libcrypto = Some(x509::Libcrypto::load(libcrypto_name).map_err(|e| {
                    format!(
                        "PLUGIN_INIT: the plugin asks for PLUGIN_TLS_VERIFY, whose calls hand it each certificate as an OpenSSL X509 object, and ferrovpn makes those with OpenSSL's libcrypto, which is missing ({e}; Debian's package libssl3 has it)"
                    )
                })?);
            }
            Ok(p)
        });
        match opened {
            Ok(p) => {
                info!(
                    "PLUGIN_INIT: POST {} '{}' intercepted={}",
                    spec.path.display(),
                    spec.argv.join(" "),
                    hook_names(p.type_mask())
                );
                loaded.push(p);
            }
            Err(e) => {
                let _ = ready.send(Err(format!("plugin {}: {e}", spec.path.display())));
                close_all(loaded);
                return;
            }
        }
    }
    // 2.6's top-level context gets per-client contexts too, made once
    // every plugin is open.
    let server_contexts = construct(&loaded);
    let mut clients: std::collections::HashMap<ClientId, Contexts> =
        std::collections::HashMap::new();
    let _ = ready.send(Ok(Opened {
        mask: loaded.iter().fold(0, |m, p| m | p.type_mask()),
        per_client: loaded.iter().any(ffi::Loaded::has_client_constructor),
    }));
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Call {
                hook,
                args,
                envp,
                client,
                certificate,
                reply,
            } => {
                let contexts = match client {
                    Some(id) => clients.get(&id),
                    None => Some(&server_contexts),
                };
                let answer = match certificate {
                    None => call_all(&loaded, hook, &args, &envp, contexts, None),
                    Some(cert) => call_with_certificate(
                        &loaded,
                        libcrypto.as_ref(),
                        &cert,
                        &args,
                        &envp,
                        contexts,
                    ),
                };
                wipe(envp);
                let _ = reply.send(answer);
            }
            Job::NewClient(id) => {
                clients.insert(id, construct(&loaded));
            }
            Job::ClientGone(id) => {
                if let Some(contexts) = clients.remove(&id) {
                    destroy(&loaded, contexts);
                }
            }
            Job::Shutdown => break,
            Job::Abort => {
                for p in &loaded {
                    p.abort();
                }
                // As 2.6's exit after a fatal error: per-client contexts
                // are not destroyed, the plugins not closed.
                for c in clients.into_values() {
                    std::mem::forget(c);
                }
                std::mem::forget(server_contexts);
                for p in loaded {
                    p.forget();
                }
                return;
            }
        }
    }
    let mut left: Vec<_> = clients.into_iter().collect();
    left.sort_by_key(|(id, _)| id.0);
    for (_, contexts) in left {
        destroy(&loaded, contexts);
    }
    destroy(&loaded, server_contexts);
    close_all(loaded);
}

/// Call every plugin in `loaded` that asked for `hook`, each with its
/// context in `contexts` (none: NULL), and combine their answers.
fn call_all(
    loaded: &[ffi::Loaded],
    hook: u32,
    args: &[String],
    envp: &[String],
    contexts: Option<&Contexts>,
    current_cert: Option<(i32, &x509::X509<'_>)>,
) -> Reply {
    let none = ffi::ClientContextPtr::none();
    let mut verdict = Verdict::Success;
    let mut returned = Vec::new();
    for (i, p) in loaded.iter().enumerate() {
        if p.type_mask() & mask(hook) == 0 {
            continue;
        }
        let context = contexts.and_then(|c| c.get(i)).unwrap_or(&none);
        // Every plugin is called, as in 2.6, whatever the earlier answered.
        let (status, list) = p.call(hook, args, envp, context, current_cert);
        returned.extend(list);
        match status {
            ffi::FUNC_SUCCESS => {}
            ffi::FUNC_DEFERRED => {
                if verdict == Verdict::Success {
                    verdict = Verdict::Deferred;
                }
            }
            status => {
                warn!(
                    "PLUGIN_CALL: plugin function {} failed with status {status}",
                    hook_names(mask(hook))
                );
                verdict = Verdict::Error;
            }
        }
    }
    Reply { verdict, returned }
}

/// `PLUGIN_TLS_VERIFY` with `cert` as one OpenSSL object that every
/// plugin gets (as 2.6 passes the one it verifies), freed after the last
/// call. Without libcrypto (no plugin takes certificate objects: v1 and v2
/// functions only) the plugins get none.
fn call_with_certificate(
    loaded: &[ffi::Loaded],
    libcrypto: Option<&x509::Libcrypto>,
    cert: &Certificate,
    args: &[String],
    envp: &[String],
    contexts: Option<&Contexts>,
) -> Reply {
    let Some(libcrypto) = libcrypto else {
        return call_all(loaded, TLS_VERIFY, args, envp, contexts, None);
    };
    let (Some(object), Ok(depth)) = (libcrypto.certificate(&cert.der), i32::try_from(cert.depth))
    else {
        // rustls accepted it, OpenSSL cannot read it: refused, never
        // handed to a plugin as NULL that expects an object.
        warn!(
            "VERIFY PLUGIN ERROR: depth={}, OpenSSL could not read the certificate",
            cert.depth
        );
        return Reply {
            verdict: Verdict::Error,
            returned: Vec::new(),
        };
    };
    call_all(
        loaded,
        TLS_VERIFY,
        args,
        envp,
        contexts,
        Some((depth, &object)),
    )
}

/// 2.6 closes its plugins in the order they were opened.
fn close_all(loaded: Vec<ffi::Loaded>) {
    for p in loaded {
        drop(p);
    }
}

/// The environment may hold a password.
fn wipe(mut envp: Vec<String>) {
    for s in &mut envp {
        zeroize::Zeroize::zeroize(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_as_2_6_resolves_them() {
        assert_eq!(
            resolve_path("openvpn-plugin-auth-pam.so"),
            Path::new(PLUGIN_LIBDIR).join("openvpn-plugin-auth-pam.so")
        );
        assert_eq!(resolve_path("/opt/x.so"), Path::new("/opt/x.so"));
        assert_eq!(resolve_path("./x.so"), Path::new("./x.so"));
        let spec = PluginSpec::new("auth-pam.so", &["login".into()]);
        assert_eq!(spec.argv, ["auth-pam.so", "login"]);
    }

    #[test]
    fn hook_names_for_messages() {
        assert_eq!(
            hook_names(mask(UP) | mask(AUTH_USER_PASS_VERIFY)),
            "PLUGIN_UP|PLUGIN_AUTH_USER_PASS_VERIFY"
        );
        assert_eq!(hook_names(1 << 20), "type 20");
    }

    #[test]
    fn a_missing_shared_object_is_refused() {
        let e = Plugins::open(
            &[PluginSpec::new("/nonexistent/ferrovpn-plugin.so", &[])],
            SERVER_HOOKS,
            &Env::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("could not load"), "{e}");
    }

    /// Debian's auth-pam plugin (openvpn package): it opens, asks for
    /// AUTH_USER_PASS_VERIFY only, and refuses an unknown user.
    #[test]
    fn debian_auth_pam_opens_and_refuses_an_unknown_user() {
        let path = Path::new(PLUGIN_LIBDIR).join("openvpn-plugin-auth-pam.so");
        assert!(
            path.exists(),
            "{} missing: install Debian's openvpn package",
            path.display()
        );
        let plugins = Plugins::open(
            &[PluginSpec::new(
                "openvpn-plugin-auth-pam.so",
                &["login".into()],
            )],
            SERVER_HOOKS,
            &Env::new(),
        )
        .unwrap()
        .unwrap();
        assert!(plugins.wants(AUTH_USER_PASS_VERIFY));
        assert!(!plugins.wants(UP));
        let mut env = Env::new();
        env.set("username", "ferrovpn-no-such-user");
        env.set("password", "wrong");
        let verdict = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(plugins.call(AUTH_USER_PASS_VERIFY, Vec::new(), &env));
        assert_eq!(verdict, Verdict::Error);
    }

    /// A plugin asking for a hook ferrovpn does not call is refused.
    #[test]
    fn unserved_hook_types_are_refused() {
        let e = Plugins::open(
            &[PluginSpec::new(
                "openvpn-plugin-auth-pam.so",
                &["login".into()],
            )],
            mask(UP),
            &Env::new(),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("PLUGIN_AUTH_USER_PASS_VERIFY"),
            "{e}"
        );
    }

    /// A v3 plugin asking for PLUGIN_TLS_VERIFY only, which writes what
    /// it reads from `current_cert` (through libcrypto) into the file
    /// named by its first argument, compiled with `cc` into `dir`.
    fn cert_reading_plugin(dir: &Path) -> PathBuf {
        const SOURCE: &str = r#"
#include <stdio.h>
#include <openssl/x509.h>
#include <openvpn/openvpn-plugin.h>
static char path[512];
OPENVPN_EXPORT int openvpn_plugin_open_v3(const int v, struct openvpn_plugin_args_open_in const *a,
                                          struct openvpn_plugin_args_open_return *r)
{
    snprintf(path, sizeof path, "%s", a->argv[1]);
    r->type_mask = OPENVPN_PLUGIN_MASK(OPENVPN_PLUGIN_TLS_VERIFY);
    FILE *f = fopen(path, "a");
    fprintf(f, "ssl_api=%d\n", a->ssl_api);
    fclose(f);
    return OPENVPN_PLUGIN_FUNC_SUCCESS;
}
OPENVPN_EXPORT int openvpn_plugin_func_v3(const int v, struct openvpn_plugin_args_func_in const *a,
                                          struct openvpn_plugin_args_func_return *r)
{
    char subject[256] = "";
    if (a->current_cert)
        X509_NAME_oneline(X509_get_subject_name(a->current_cert), subject, sizeof subject);
    FILE *f = fopen(path, "a");
    fprintf(f, "%s %s depth=%d subject=%s\n", a->argv[1], a->argv[2], a->current_cert_depth, subject);
    fclose(f);
    return OPENVPN_PLUGIN_FUNC_SUCCESS;
}
OPENVPN_EXPORT void openvpn_plugin_close_v1(openvpn_plugin_handle_t h) {}
"#;
        let source = dir.join("certlog.c");
        let out = dir.join("certlog.so");
        std::fs::write(&source, SOURCE).unwrap();
        let st = std::process::Command::new("cc")
            .args(["-shared", "-fPIC", "-o"])
            .arg(&out)
            .arg(&source)
            .arg("-lcrypto")
            .status()
            .expect("cc (package gcc) must be installed");
        assert!(
            st.success(),
            "compiling the test plugin failed: it needs Debian's openvpn (openvpn-plugin.h) and libssl-dev"
        );
        out
    }

    /// The plugin gets each certificate as an OpenSSL object with its
    /// depth, and 2.6's argv; one OpenSSL cannot read is refused, never
    /// handed over as NULL.
    #[test]
    fn tls_verify_plugins_read_the_certificate_through_openssl() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = cert_reading_plugin(dir.path());
        let log = dir.path().join("log");
        let spec = PluginSpec::new(
            plugin.to_str().unwrap(),
            &[log.to_str().unwrap().to_owned()],
        );
        let plugins = Plugins::open(&[spec], SERVER_HOOKS, &Env::new())
            .unwrap()
            .unwrap();
        assert!(plugins.wants(TLS_VERIFY));
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "leaf");
        let der = params
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let verify = |depth: u32, der: &[u8]| {
            rt.block_on(plugins.submit_tls_verify(depth, "CN=leaf", der, &Env::new(), None))
        };
        assert_eq!(verify(3, &der), Verdict::Success);
        assert_eq!(verify(0, &der[..20]), Verdict::Error);
        drop(plugins);
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "ssl_api=1\n3 CN=leaf depth=3 subject=/CN=leaf\n"
        );
    }

    /// Without libcrypto, a plugin that would get certificate objects is
    /// refused at start, saying why.
    #[test]
    fn tls_verify_plugins_without_libcrypto_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = cert_reading_plugin(dir.path());
        let spec = PluginSpec::new(
            plugin.to_str().unwrap(),
            &[dir.path().join("log").to_str().unwrap().to_owned()],
        );
        let e = Plugins::open_with(&[spec], SERVER_HOOKS, &Env::new(), "libcrypto-missing.so.3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("PLUGIN_TLS_VERIFY"), "{e}");
        assert!(e.contains("could not load libcrypto-missing.so.3"), "{e}");
    }
}
