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
pub mod pool_persist;
mod ratelimit;
pub mod scripts;
pub mod server;
pub mod status;

use ferrovpn_dataplane::{UpEvent, UpReceiver, UpRecvError};

/// Run once the tun device, the socket and the routes are set up: the
/// binary drops privileges there (`user`/`group`).
pub type SetupDone = Box<dyn FnOnce() -> anyhow::Result<()>>;

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
