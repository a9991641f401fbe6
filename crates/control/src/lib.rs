//! Control-plane runtime: drives the sans-IO sessions of `ferrovpn-proto`
//! over the network on a single-threaded tokio runtime, configures the tunnel
//! interface, and publishes peers and keys to the data plane.
//!
//! Must not touch: data packets. They stay in `ferrovpn-dataplane`; only
//! control packets and OCC messages come up here, through a bounded queue.

pub mod client;
pub mod management;
pub mod netconfig;
pub mod pool_persist;
mod ratelimit;
pub mod server;
pub mod status;

use ferrovpn_dataplane::UpEvent;

/// Move events from the data plane's blocking queue onto the async runtime.
fn bridge(rx: crossbeam_channel::Receiver<UpEvent>) -> tokio::sync::mpsc::Receiver<UpEvent> {
    let (tx, out) = tokio::sync::mpsc::channel(1024);
    std::thread::Builder::new()
        .name("ferrovpn-up".into())
        .spawn(move || {
            while let Ok(ev) = rx.recv() {
                if tx.blocking_send(ev).is_err() {
                    break;
                }
            }
        })
        .ok();
    out
}
