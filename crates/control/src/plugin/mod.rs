//! `plugin PATH [ARGS]`: OpenVPN plugin shared objects (API v1–v3), such
//! as Debian's `openvpn-plugin-auth-pam.so`. All plugins live on one
//! dedicated thread that opens them, calls them one call at a time (the
//! API is not thread-safe; OpenVPN calls them from its single thread) and
//! closes them; the control runtime only sends it jobs and awaits the
//! answer, so a plugin that blocks (auth-pam waits on its PAM helper
//! process) never holds up other clients. The FFI is in the private `ffi` module.

mod ffi;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use tracing::{info, warn};

use crate::scripts::Env;

/// `OPENVPN_PLUGIN_*` hook types (the numbers are the API's).
pub const UP: u32 = 0;
pub const DOWN: u32 = 1;
pub const ROUTE_UP: u32 = 2;
pub const TLS_VERIFY: u32 = 4;
pub const AUTH_USER_PASS_VERIFY: u32 = 5;
pub const CLIENT_DISCONNECT: u32 = 7;
pub const LEARN_ADDRESS: u32 = 8;
pub const CLIENT_CONNECT_V2: u32 = 9;
pub const TLS_FINAL: u32 = 10;
pub const ENABLE_PF: u32 = 11;
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
/// way), rather than loaded and silently never called: `TLS_VERIFY`
/// (ferrovpn has no certificate object to hand over), the v1
/// `CLIENT_CONNECT`/`CLIENT_CONNECT_DEFER`, `IPCHANGE` (a client
/// hook), `ROUTE_PREDOWN`, and `ENABLE_PF` (2.6 removed packet filtering).
pub const SERVER_HOOKS: u32 = mask(UP)
    | mask(DOWN)
    | mask(ROUTE_UP)
    | mask(AUTH_USER_PASS_VERIFY)
    | mask(CLIENT_DISCONNECT)
    | mask(LEARN_ADDRESS)
    | mask(CLIENT_CONNECT_V2)
    | mask(TLS_FINAL)
    | mask(CLIENT_CONNECT_DEFER_V2);

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

struct Job {
    hook: u32,
    args: Vec<String>,
    envp: Vec<String>,
    reply: tokio::sync::oneshot::Sender<Reply>,
}

/// The opened plugins and their thread. Dropping this closes them (in
/// reverse order of opening, as 2.6 does) and waits for the thread.
pub struct Plugins {
    jobs: Option<mpsc::Sender<Job>>,
    /// Union of the hook types the plugins asked for.
    mask: u32,
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
    /// environment of its scripts). `served` is the mask of hook types the
    /// caller will call. `None` when there is no plugin.
    pub fn open(specs: &[PluginSpec], served: u32, env: &Env) -> anyhow::Result<Option<Self>> {
        if specs.is_empty() {
            return Ok(None);
        }
        let specs = specs.to_vec();
        let envp = env_strings(env);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<u32, String>>();
        let (jobs, job_rx) = mpsc::channel::<Job>();
        let thread = std::thread::Builder::new()
            .name("ferrovpn-plugin".into())
            .spawn(move || serve(&specs, served, &envp, &ready_tx, &job_rx))?;
        let mut plugins = Plugins {
            jobs: Some(jobs),
            mask: 0,
            thread: Some(thread),
        };
        match ready_rx.recv() {
            Ok(Ok(mask)) => plugins.mask = mask,
            Ok(Err(e)) => anyhow::bail!("{e}"),
            Err(_) => anyhow::bail!("the plugin thread ended while opening the plugins"),
        }
        Ok(Some(plugins))
    }

    /// Whether some plugin asked for `hook`.
    pub fn wants(&self, hook: u32) -> bool {
        self.mask & mask(hook) != 0
    }

    /// Call every plugin that asked for `hook`, on the plugin thread, with
    /// `args` after the plugin's name in its `argv` and `env` (every
    /// variable: plugins see passwords, as in 2.6).
    pub async fn call(&self, hook: u32, args: Vec<String>, env: &Env) -> Verdict {
        self.call_returning(hook, args, env).await.verdict
    }

    /// [`Plugins::call`], with what the plugins returned. As 2.6, the
    /// plugins never see `script_type`.
    pub async fn call_returning(&self, hook: u32, args: Vec<String>, env: &Env) -> Reply {
        let error = Reply {
            verdict: Verdict::Error,
            returned: Vec::new(),
        };
        if !self.wants(hook) {
            return Reply {
                verdict: Verdict::Success,
                returned: Vec::new(),
            };
        }
        let mut env = env.clone();
        env.remove("script_type");
        let env = &env;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            hook,
            args,
            envp: env_strings(env),
            reply,
        };
        if self.jobs.as_ref().is_none_or(|j| j.send(job).is_err()) {
            warn!("PLUGIN_CALL: the plugin thread is gone");
            return error;
        }
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

impl Drop for Plugins {
    fn drop(&mut self) {
        // The thread closes the plugins once the job queue is closed.
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `NAME=value` strings; a password in them is wiped when dropped.
fn env_strings(env: &Env) -> Vec<String> {
    env.iter().map(|(n, v)| format!("{n}={v}")).collect()
}

/// The plugin thread: open, answer jobs until the queue closes, close.
fn serve(
    specs: &[PluginSpec],
    served: u32,
    envp: &[String],
    ready: &mpsc::Sender<Result<u32, String>>,
    jobs: &mpsc::Receiver<Job>,
) {
    let mut loaded = Vec::new();
    for spec in specs {
        match ffi::Loaded::open(&spec.path, &spec.argv, envp, served) {
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
    let union = loaded.iter().fold(0, |m, p| m | p.type_mask());
    let _ = ready.send(Ok(union));
    while let Ok(job) = jobs.recv() {
        let mut verdict = Verdict::Success;
        let mut returned = Vec::new();
        for p in loaded
            .iter()
            .filter(|p| p.type_mask() & mask(job.hook) != 0)
        {
            // Every plugin is called, as in 2.6, whatever the earlier answered.
            let (status, list) = p.call(job.hook, &job.args, &job.envp);
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
                        hook_names(mask(job.hook))
                    );
                    verdict = Verdict::Error;
                }
            }
        }
        wipe(job.envp);
        let _ = job.reply.send(Reply { verdict, returned });
    }
    close_all(loaded);
}

fn close_all(mut loaded: Vec<ffi::Loaded>) {
    while let Some(p) = loaded.pop() {
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
}
