//! Control-plane runtime: drives the sans-IO sessions of `ferrovpn-proto`
//! over the network on a single-threaded tokio runtime, configures the tunnel
//! interface, and publishes peers and keys to the data plane.
//!
//! Must not touch: data packets. They stay in `ferrovpn-dataplane`; only
//! control packets and OCC messages come up here, through a bounded queue.

pub mod client;
pub mod compression;
pub mod fsutil;
pub mod key_passphrase;
pub mod management;
pub mod metrics;
pub mod netconfig;
pub mod peer_log;
pub mod plugin;
mod ratelimit;
pub mod scripts;
pub mod server;
pub mod status;

use ferrovpn_dataplane::{UpEvent, UpReceiver, UpRecvError};

/// Run once the tun device, the socket and the routes are set up: the
/// binary drops privileges there (`user`/`group`).
pub type SetupDone = Box<dyn FnOnce() -> anyhow::Result<()>>;

/// Which restart a signal asks for (2.6's `SIGHUP` and `SIGUSR1`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartKind {
    /// SIGHUP: a hard restart; the config file is read again and the
    /// plugins are closed and opened again.
    Hard,
    /// SIGUSR1: a soft restart; the config as read at start, the plugins kept.
    Soft,
}

impl RestartKind {
    /// The signal's name, as 2.6 shows it (`>STATE:...,RECONNECTING,SIGHUP`).
    pub fn signal_name(self) -> &'static str {
        match self {
            RestartKind::Hard => "SIGHUP",
            RestartKind::Soft => "SIGUSR1",
        }
    }

    /// The restart a signal name asks for, if it asks for one.
    pub fn from_signal_name(name: &str) -> Option<Self> {
        match name {
            "SIGHUP" => Some(RestartKind::Hard),
            "SIGUSR1" => Some(RestartKind::Soft),
            _ => None,
        }
    }
}

/// Restarts asked by real signals, waiting to be taken: which one, and a
/// wake-up for whoever waits. A SIGHUP and a SIGUSR1 before the runtime
/// looks make one hard restart (the stronger one does both's work).
#[derive(Default)]
pub struct RestartRequests {
    wake: std::sync::Arc<tokio::sync::Notify>,
    pending: std::sync::Mutex<Option<RestartKind>>,
}

impl RestartRequests {
    /// Ask for a restart (from the signal handler task).
    pub fn request(&self, kind: RestartKind) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if *pending != Some(RestartKind::Hard) {
            *pending = Some(kind);
        }
        drop(pending);
        self.wake.notify_one();
    }

    /// Take the restart asked, if any.
    pub fn take(&self) -> Option<RestartKind> {
        (self.pending.lock().unwrap_or_else(|e| e.into_inner())).take()
    }

    /// Wait for the next restart asked (one asked already returns at once).
    pub async fn next(&self) -> RestartKind {
        loop {
            if let Some(kind) = self.take() {
                return kind;
            }
            self.wake.notified().await;
        }
    }

    /// The wake-up alone, for waits that end on any restart signal (and
    /// for management commands that ask for a restart and record their
    /// signal themselves).
    pub fn wake(&self) -> &std::sync::Arc<tokio::sync::Notify> {
        &self.wake
    }
}

/// Move events from the data plane's blocking queues onto the async runtime.
/// The channel is short on purpose: the backlog waits in the data plane's
/// queues, which are served fairly (control packets vs OCC/float events)
/// only as this bridge takes from them. When a data-plane worker fails the
/// bridge ends, the runtimes see the data plane stop and the process exits
/// non-zero, for the service manager to restart it.
fn bridge(rx: UpReceiver) -> tokio::sync::mpsc::Receiver<UpEvent> {
    let (tx, out) = tokio::sync::mpsc::channel(64);
    std::thread::Builder::new()
        .name("ferrovpn-up".into())
        .spawn(move || {
            loop {
                match rx.recv() {
                    Ok(ev) => {
                        if tx.blocking_send(ev).is_err() {
                            break;
                        }
                    }
                    Err(e @ UpRecvError::WorkerFailed { .. }) => {
                        tracing::error!("{e}; stopping");
                        break;
                    }
                    Err(_) => break,
                }
            }
        })
        .ok();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_kinds_by_signal_name() {
        for kind in [RestartKind::Hard, RestartKind::Soft] {
            assert_eq!(
                RestartKind::from_signal_name(kind.signal_name()),
                Some(kind)
            );
        }
        for other in ["SIGTERM", "SIGINT", "SIGUSR2", "sighup", ""] {
            assert_eq!(RestartKind::from_signal_name(other), None);
        }
    }

    #[test]
    fn a_pending_sighup_is_not_weakened_by_a_later_sigusr1() {
        let r = RestartRequests::default();
        assert_eq!(r.take(), None);
        r.request(RestartKind::Soft);
        r.request(RestartKind::Hard);
        r.request(RestartKind::Soft);
        assert_eq!(r.take(), Some(RestartKind::Hard));
        assert_eq!(r.take(), None, "taken once");
        r.request(RestartKind::Soft);
        assert_eq!(r.take(), Some(RestartKind::Soft));
    }

    #[test]
    fn next_returns_a_restart_asked_before_and_waits_for_one_asked_after() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let r = std::sync::Arc::new(RestartRequests::default());
            r.request(RestartKind::Soft);
            assert_eq!(r.next().await, RestartKind::Soft);
            // The permit left by that request wakes `next` once; it must
            // not return without a request.
            let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), r.next());
            assert!(waiting.await.is_err(), "returned without a request");
            let asker = r.clone();
            tokio::spawn(async move { asker.request(RestartKind::Hard) });
            let got = tokio::time::timeout(std::time::Duration::from_secs(5), r.next()).await;
            assert_eq!(got.ok(), Some(RestartKind::Hard));
        });
    }
}
