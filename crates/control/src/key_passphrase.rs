//! A private key whose passphrase comes over the management interface:
//! `management-query-passwords` with an encrypted `key` (or a `pkcs12`
//! file that the empty password does not open) and no `askpass FILE`;
//! and a key opened after the hold from `askpass FILE` (read then, as
//! 2.6), or opened again at a client's reconnect without `persist-key`
//! ([`DeferredKey::local`]).
//!
//! What OpenVPN 2.6 does there (its `pem_password_callback`, called while
//! `init_instance` builds the TLS context), checked with the stock binary:
//! - client and server both ask, after `management-hold` is released and
//!   before anything else happens (`>STATE:` stays at the initial
//!   `CONNECTING` until the key is open): `>PASSWORD:Need 'Private Key'
//!   password`, answered with `password "Private Key" SECRET`;
//! - a wrong passphrase: `>PASSWORD:Verification Failed: 'Private Key'`
//!   (not for a `pkcs12` file, see [`WrongPassphrase::announced`]), then what `auth-retry` says: `none` (the default) `>FATAL:Error:
//!   private key password verification failed` and exit status 1, without
//!   an `EXITING` state; `interact`: `>STATE:...,RECONNECTING,
//!   private-key-password-failure`, hold again (`>HOLD:...:1`, the
//!   connect-retry pause) and ask again; `nointeract`: the same with a 10
//!   second pause, retrying the cached wrong passphrase for ever unless
//!   `auth-nocache` dropped it (then it asks again);
//! - a signal (SIGTERM, SIGUSR1) while the question waits: `>FATAL:ERROR:
//!   could not read Private Key username/password/ok/string from management
//!   interface`, exit status 1; SIGTERM during the hold before a retry:
//!   `EXITING,init_instance`.
//!
//! A SIGHUP opens the key again, and so does a SIGUSR1 without
//! `persist-key` (a client's every reconnect: 2.6 frees its TLS context
//! then, `do_close_free_key_schedule`), but 2.6 kept the passphrase
//! (`pem_password_callback` leaves it in its process-wide `passbuf` unless
//! `auth-nocache`; see [`PassphraseMemory`]), so it asks only with
//! `auth-nocache`, after `forget-passwords`, or when the kept one no
//! longer opens the key (the `auth-retry` rules then, as for a wrong
//! answer).
//!
//! The wait is a select on the runtime, so the management interface (its
//! own task) keeps answering `state`, `pid`, `hold release` meanwhile.

use std::pin::Pin;
use std::time::Duration;

use ferrovpn_config::AuthRetry;
use tokio::sync::Notify;
use tracing::warn;
use zeroize::Zeroizing;

use crate::management::{Management, Notice, PasswordQuery};

/// The type name 2.6 asks with.
pub const KEY_PASSWORD_TYPE: &str = "Private Key";
/// 2.6's notice after a wrong passphrase.
pub const VERIFICATION_FAILED: &str = ">PASSWORD:Verification Failed: 'Private Key'";
/// 2.6's fatal error after a wrong passphrase with `auth-retry none`.
pub const VERIFICATION_FATAL: &str = "Error: private key password verification failed";
/// 2.6's fatal error when a signal ends the wait for the answer.
pub const NOT_ANSWERED_FATAL: &str =
    "ERROR: could not read Private Key username/password/ok/string from management interface";
/// The reason of the `RECONNECTING` state before a retry.
pub const RETRY_REASON: &str = "private-key-password-failure";
/// The reason of the `EXITING` state for a SIGTERM during the pause (2.6
/// names the function it was in).
pub const EXIT_IN_PAUSE_REASON: &str = "init_instance";
/// 2.6's pause before a retry with `auth-retry nointeract`.
const NOINTERACT_PAUSE_SECS: u32 = 10;

/// The error an opener returns when the passphrase is wrong (the key did
/// not decrypt, the PKCS#12 integrity check failed).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct WrongPassphrase {
    /// What is wrong, naming the file.
    pub message: String,
    /// Whether 2.6 tells the management clients
    /// `>PASSWORD:Verification Failed: 'Private Key'`: for a key file, not
    /// for a PKCS#12 file (2.6 looks for PKCS12_R_MAC_VERIFY_FAILURE, which
    /// OpenSSL 3 does not leave on top of its error queue; checked with
    /// Debian's 2.6.14). Either way it is the same failure for `auth-retry`.
    pub announced: bool,
}

/// Opens the key with a passphrase: `T` is what the runtime needs from it
/// (its TLS settings). Errors other than [`WrongPassphrase`] are fatal.
pub type Opener<T> = Box<dyn FnMut(&str) -> anyhow::Result<T> + Send>;

/// Where the passphrase comes from when none is kept (2.6's `passbuf`
/// empty), other than the management interface: `askpass FILE` or the
/// terminal. Called with `config_read` (the opening follows a
/// configuration read: start, SIGHUP); `Ok(None)` means ask over the
/// management interface. An error is fatal.
pub type LocalPassphrase = Box<dyn FnMut(bool) -> anyhow::Result<Option<Zeroizing<String>>> + Send>;

/// A key waiting for its passphrase, or to be opened again.
pub struct DeferredKey<T> {
    pub open: Opener<T>,
    /// `auth-retry`.
    pub retry: AuthRetry,
    /// `auth-nocache`: a passphrase is not kept for the next attempt.
    pub nocache: bool,
    /// See [`LocalPassphrase`]; `None`: always asked over management.
    pub local: Option<LocalPassphrase>,
}

impl<T> std::fmt::Debug for DeferredKey<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeferredKey")
            .field("retry", &self.retry)
            .field("nocache", &self.nocache)
            .finish_non_exhaustive()
    }
}

/// What follows a wrong passphrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterWrongPassphrase {
    /// `>FATAL:`, exit status 1.
    Exit,
    /// Pause (or hold), then ask again.
    AskAgain,
    /// Pause (or hold), then try the same passphrase again (2.6 caches it
    /// and `nointeract` does not purge it).
    TrySameAgain,
}

/// 2.6's choice after a wrong passphrase.
pub fn after_wrong_passphrase(retry: AuthRetry, nocache: bool) -> AfterWrongPassphrase {
    match retry {
        AuthRetry::None => AfterWrongPassphrase::Exit,
        AuthRetry::Interact => AfterWrongPassphrase::AskAgain,
        AuthRetry::NoInteract if nocache => AfterWrongPassphrase::AskAgain,
        AuthRetry::NoInteract => AfterWrongPassphrase::TrySameAgain,
    }
}

/// The pause before a retry, in seconds: `connect_retry` (the `>HOLD:`
/// number too), 10 with `auth-retry nointeract`.
pub fn retry_pause_secs(retry: AuthRetry, connect_retry: u32) -> u32 {
    if retry == AuthRetry::NoInteract {
        NOINTERACT_PAUSE_SECS
    } else {
        connect_retry
    }
}

/// 2.6's `passbuf` (ssl.c), one for the process: the passphrase that
/// opened the key (read from `askpass FILE`, asked on the terminal or over
/// the management interface) is kept for the next time the key is opened
/// (a SIGHUP; a SIGUSR1 without `persist-key`), which tries it before
/// reading or asking, as `pem_password_setup` reads or asks only while
/// `passbuf` is empty. `auth-nocache` drops it once used
/// (`purge_user_pass(&passbuf, false)` in `pem_password_callback`), and the
/// management command `forget-passwords` drops it (`ssl_purge_auth`).
/// Clones share the memory: the process's key loading and its management
/// interface (where `forget-passwords` reaches it) hold the same one.
#[derive(Clone, Default)]
pub struct PassphraseMemory {
    kept: std::sync::Arc<std::sync::Mutex<Option<Zeroizing<String>>>>,
}

impl std::fmt::Debug for PassphraseMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassphraseMemory")
            .field("kept", &self.recall().is_some())
            .finish()
    }
}

impl PassphraseMemory {
    fn kept(&self) -> std::sync::MutexGuard<'_, Option<Zeroizing<String>>> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The passphrase to try before asking (the `kept` of
    /// [`open_over_management`]), if one is kept.
    pub fn recall(&self) -> Option<Zeroizing<String>> {
        self.kept().clone()
    }

    /// `passphrase` opened the key: kept, unless `nocache`.
    pub fn opened_with(&self, passphrase: Zeroizing<String>, nocache: bool) {
        *self.kept() = (!nocache).then_some(passphrase);
    }

    /// `forget-passwords`: the next opening reads or asks again.
    pub fn forget(&self) {
        *self.kept() = None;
    }
}

/// How the wait for the passphrase ended.
#[derive(Debug)]
pub enum Opened<T> {
    /// The key, and the passphrase that opened it (to keep across a
    /// SIGHUP).
    Key(T, Zeroizing<String>),
    /// A fatal error, already told the management clients with `>FATAL:`;
    /// the process exits with status 1 and no `EXITING` state.
    Fatal(anyhow::Error),
    /// SIGTERM during a pause before a retry: exit normally, with the
    /// `EXITING` state ([`EXIT_IN_PAUSE_REASON`]).
    Shutdown,
}

/// Open the key with a passphrase read from [`DeferredKey::local`] or
/// asked of the management clients, retrying as `auth-retry` says.
/// `state` sends a `>STATE:` line (client and server fill it
/// differently); `restart` is the SIGUSR1 notification, which ends the
/// wait for an answer as 2.6 does; `connect_retry_secs` is the pause
/// before a retry. `kept` is the passphrase that opened the key before
/// (2.6's `passbuf`): tried first, without reading or asking.
/// `config_read`: this opening follows a configuration read (see
/// [`LocalPassphrase`]); a retry after a wrong passphrase never does.
/// Without a management interface `m` is `None`: nothing is told, and
/// the pause is a sleep.
#[allow(clippy::too_many_arguments)]
pub async fn open_over_management<T, S>(
    m: Option<&Management>,
    key: &mut DeferredKey<T>,
    kept: Option<Zeroizing<String>>,
    mut config_read: bool,
    restart: &Notify,
    connect_retry_secs: u32,
    state: &dyn Fn(&'static str, &'static str),
    mut shutdown: Pin<&mut S>,
) -> Opened<T>
where
    S: std::future::Future<Output = ()>,
{
    let after_wrong = after_wrong_passphrase(key.retry, key.nocache);
    let pause = retry_pause_secs(key.retry, connect_retry_secs);
    let mut cached = kept;
    loop {
        let local = match (cached.is_some(), key.local.as_mut()) {
            (false, Some(read)) => read(config_read),
            _ => Ok(None),
        };
        let passphrase = match (cached.take(), local) {
            (Some(p), _) => p,
            (None, Err(e)) => {
                tell_fatal(m, &format!("{e:#}")).await;
                return Opened::Fatal(e);
            }
            (None, Ok(Some(p))) => p,
            (None, Ok(None)) => {
                let Some(m) = m else {
                    return Opened::Fatal(anyhow::anyhow!(
                        "the private key's passphrase is asked over the management interface, and there is none"
                    ));
                };
                let query = PasswordQuery::new(KEY_PASSWORD_TYPE, false, None);
                tokio::select! {
                    q = m.ask_password(query) => Zeroizing::new(q.password.unwrap_or_default()),
                    _ = restart.notified() => return fatal(Some(m), NOT_ANSWERED_FATAL).await,
                    _ = &mut shutdown => return fatal(Some(m), NOT_ANSWERED_FATAL).await,
                }
            }
        };
        // A retry is a new instance of 2.6's, not a configuration read.
        config_read = false;
        let e = match (key.open)(&passphrase) {
            Ok(opened) => return Opened::Key(opened, passphrase),
            Err(e) => e,
        };
        let Some(wrong) = e.downcast_ref::<WrongPassphrase>() else {
            tell_fatal(m, &format!("{e:#}")).await;
            return Opened::Fatal(e);
        };
        warn!("{e:#}");
        if let Some(m) = m.filter(|_| wrong.announced) {
            m.notify(Notice::Line(VERIFICATION_FAILED.to_string()));
        }
        match after_wrong {
            AfterWrongPassphrase::Exit => return fatal(m, VERIFICATION_FATAL).await,
            AfterWrongPassphrase::AskAgain => drop(passphrase),
            AfterWrongPassphrase::TrySameAgain => cached = Some(passphrase),
        }
        warn!("SIGUSR1[soft,{RETRY_REASON}] received, process restarting");
        state("RECONNECTING", RETRY_REASON);
        if let Some(m) = m.filter(|m| m.hold_again(pause)) {
            tokio::select! {
                _ = m.wait_for_hold_release() => {}
                _ = &mut shutdown => return Opened::Shutdown,
            }
        } else {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(pause.into())) => {}
                _ = &mut shutdown => return Opened::Shutdown,
            }
        }
    }
}

/// `>FATAL:TEXT` to the management clients, and the error to exit with.
async fn fatal<T>(m: Option<&Management>, text: &str) -> Opened<T> {
    tell_fatal(m, text).await;
    Opened::Fatal(anyhow::anyhow!("{text}"))
}

/// `>FATAL:TEXT`, flushed: the process exits next.
async fn tell_fatal(m: Option<&Management>, text: &str) {
    let Some(m) = m else { return };
    m.cancel_password_query();
    m.notify(Notice::Line(format!(">FATAL:{text}")));
    m.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_keeps_a_passphrase_until_nocache_or_forget_passwords() {
        let m = PassphraseMemory::default();
        assert!(m.recall().is_none(), "nothing before the first answer");
        m.opened_with(Zeroizing::new("secret".into()), false);
        assert_eq!(m.recall().as_deref().map(String::as_str), Some("secret"));
        assert!(m.recall().is_some(), "recalling does not use it up");
        m.forget();
        assert!(m.recall().is_none(), "forget-passwords empties it");
        m.opened_with(Zeroizing::new("secret".into()), false);
        m.opened_with(Zeroizing::new("other".into()), true);
        assert!(m.recall().is_none(), "auth-nocache drops it once used");
        m.opened_with(Zeroizing::new("shared".into()), false);
        let clone = m.clone();
        clone.forget();
        assert!(m.recall().is_none(), "clones share one memory");
    }

    #[test]
    fn wrong_passphrase_follows_auth_retry_and_nocache_as_2_6() {
        use AfterWrongPassphrase as A;
        for nocache in [false, true] {
            assert_eq!(after_wrong_passphrase(AuthRetry::None, nocache), A::Exit);
            assert_eq!(
                after_wrong_passphrase(AuthRetry::Interact, nocache),
                A::AskAgain
            );
        }
        assert_eq!(
            after_wrong_passphrase(AuthRetry::NoInteract, false),
            A::TrySameAgain
        );
        assert_eq!(
            after_wrong_passphrase(AuthRetry::NoInteract, true),
            A::AskAgain
        );
        assert_eq!(retry_pause_secs(AuthRetry::Interact, 1), 1);
        assert_eq!(retry_pause_secs(AuthRetry::Interact, 5), 5);
        assert_eq!(retry_pause_secs(AuthRetry::NoInteract, 1), 10);
    }
}
