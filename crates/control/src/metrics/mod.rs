//! `metrics IP:PORT`: a Prometheus endpoint. The server loop only copies its
//! numbers into a [`Snapshot`] when a scrape asks for one; the HTTP side
//! ([`http`]) renders it in the OpenMetrics text format with
//! `prometheus-client` on its own task, so a slow or hostile scraper never
//! holds up the control plane.

pub mod http;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The numbers of one scrape, copied out of the server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub clients: Vec<ClientSample>,
    pub drops: Drops,
    pub workers: Vec<WorkerSample>,
    /// Events queued from the data plane to the control plane.
    pub control_queue_depth: u64,
    /// TLS handshakes completed since the start (first keys and renegotiations).
    pub handshakes: u64,
    pub renegotiations: u64,
}

/// One connected client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSample {
    pub common_name: String,
    /// Its real (outer) address, `IP:PORT`.
    pub real_address: String,
    /// Tunnel payload from and to the client.
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub packets_sent: u64,
    /// Unix seconds.
    pub connected_since: u64,
    /// Data-channel keys negotiated in this session: 1 + renegotiations.
    pub handshakes: u64,
}

/// Data-channel packets dropped since the start, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// A packet id seen before or too old (replay window).
    pub replay: u64,
    /// The AEAD tag did not verify.
    pub bad_tag: u64,
    /// A data packet for a peer-id (or from an address) no session owns.
    pub unknown_peer: u64,
    /// A queue to the control plane was full.
    pub queue_full: u64,
}

/// One data-plane worker.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WorkerSample {
    pub tun_packets: u64,
    pub udp_packets: u64,
    /// Packets read from TCP connections.
    pub tcp_packets: u64,
    pub busy_seconds: f64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClientLabels {
    common_name: String,
    real_address: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerPacketLabels {
    worker: String,
    source: &'static str,
}

/// A counter family filled with one value per label set.
fn counters<L, I>(values: I) -> Family<L, Counter>
where
    L: Clone + std::hash::Hash + Eq + EncodeLabelSet + std::fmt::Debug,
    I: IntoIterator<Item = (L, u64)>,
{
    let family = Family::<L, Counter>::default();
    for (labels, v) in values {
        family.get_or_create(&labels).inc_by(v);
    }
    family
}

/// One per-client value, read from its sample.
type ClientValue = fn(&ClientSample) -> u64;

/// `s` in the OpenMetrics text format (ends with `# EOF`).
pub fn render(s: &Snapshot) -> String {
    let mut r = Registry::with_prefix("ferrovpn");
    let labels = |c: &ClientSample| ClientLabels {
        common_name: c.common_name.clone(),
        real_address: c.real_address.clone(),
    };
    let per_client =
        |f: fn(&ClientSample) -> u64| counters(s.clients.iter().map(|c| (labels(c), f(c))));
    let clients = Gauge::<i64>::default();
    clients.set(i64::try_from(s.clients.len()).unwrap_or(i64::MAX));
    r.register("clients", "Connected (authenticated) clients", clients);
    let per_client_counters: [(&str, &str, ClientValue); 6] = [
        (
            "client_received_bytes",
            "Tunnel payload bytes received from the client",
            |c| c.bytes_received,
        ),
        (
            "client_sent_bytes",
            "Tunnel payload bytes sent to the client",
            |c| c.bytes_sent,
        ),
        (
            "client_received_packets",
            "Tunnel packets received from the client",
            |c| c.packets_received,
        ),
        (
            "client_sent_packets",
            "Tunnel packets sent to the client",
            |c| c.packets_sent,
        ),
        (
            "client_handshakes",
            "TLS handshakes of the client's session (the first and each renegotiation)",
            |c| c.handshakes,
        ),
        (
            "client_renegotiations",
            "TLS renegotiations of the client's session",
            |c| c.handshakes.saturating_sub(1),
        ),
    ];
    for (name, help, value) in per_client_counters {
        r.register(name, help, per_client(value));
    }
    let since = Family::<ClientLabels, Gauge>::default();
    for c in &s.clients {
        since
            .get_or_create(&labels(c))
            .set(i64::try_from(c.connected_since).unwrap_or(i64::MAX));
    }
    r.register(
        "client_connected_since_seconds",
        "When the client's session started, in Unix seconds",
        since,
    );
    for (name, help, value) in [
        (
            "handshakes",
            "TLS handshakes completed, all clients, since the start",
            s.handshakes,
        ),
        (
            "renegotiations",
            "TLS renegotiations completed, all clients, since the start",
            s.renegotiations,
        ),
    ] {
        let total = Counter::<u64>::default();
        total.inc_by(value);
        r.register(name, help, total);
    }
    let d = s.drops;
    r.register(
        "dropped_packets",
        "Data-channel packets dropped, by reason",
        counters([
            (DropLabels { reason: "replay" }, d.replay),
            (DropLabels { reason: "bad_tag" }, d.bad_tag),
            (
                DropLabels {
                    reason: "unknown_peer",
                },
                d.unknown_peer,
            ),
            (
                DropLabels {
                    reason: "queue_full",
                },
                d.queue_full,
            ),
        ]),
    );
    let worker_packets = s.workers.iter().enumerate().flat_map(|(i, w)| {
        [
            ("tun", w.tun_packets),
            ("udp", w.udp_packets),
            ("tcp", w.tcp_packets),
        ]
        .map(|(source, v)| {
            let labels = WorkerPacketLabels {
                worker: i.to_string(),
                source,
            };
            (labels, v)
        })
    });
    r.register(
        "worker_packets",
        "Packets a data-plane worker read, from the TUN device, the UDP socket or TCP connections",
        counters(worker_packets),
    );
    let busy = Family::<WorkerLabels, Counter<f64, AtomicU64>>::default();
    for (i, w) in s.workers.iter().enumerate() {
        busy.get_or_create(&WorkerLabels {
            worker: i.to_string(),
        })
        .inc_by(w.busy_seconds);
    }
    r.register(
        "worker_busy_seconds",
        "Time a data-plane worker spent handling packets",
        busy,
    );
    let depth = Gauge::<i64>::default();
    depth.set(i64::try_from(s.control_queue_depth).unwrap_or(i64::MAX));
    r.register(
        "control_queue_depth",
        "Events queued from the data plane to the control plane",
        depth,
    );
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_clients_drops_and_workers() {
        let s = Snapshot {
            clients: vec![ClientSample {
                common_name: "alice \"x\"".into(),
                real_address: "192.0.2.2:1194".into(),
                bytes_received: 1234,
                bytes_sent: 99,
                packets_received: 3,
                packets_sent: 2,
                connected_since: 1_700_000_000,
                handshakes: 2,
            }],
            drops: Drops {
                replay: 5,
                bad_tag: 6,
                unknown_peer: 7,
                queue_full: 8,
            },
            workers: vec![WorkerSample {
                tun_packets: 10,
                udp_packets: 11,
                tcp_packets: 12,
                busy_seconds: 0.5,
            }],
            control_queue_depth: 4,
            handshakes: 3,
            renegotiations: 1,
        };
        let text = render(&s);
        for line in [
            "ferrovpn_clients 1",
            "ferrovpn_client_received_bytes_total{common_name=\"alice \\\"x\\\"\",real_address=\"192.0.2.2:1194\"} 1234",
            "ferrovpn_client_renegotiations_total{common_name=\"alice \\\"x\\\"\",real_address=\"192.0.2.2:1194\"} 1",
            "ferrovpn_client_connected_since_seconds{common_name=\"alice \\\"x\\\"\",real_address=\"192.0.2.2:1194\"} 1700000000",
            "ferrovpn_dropped_packets_total{reason=\"bad_tag\"} 6",
            "ferrovpn_dropped_packets_total{reason=\"queue_full\"} 8",
            "ferrovpn_worker_packets_total{worker=\"0\",source=\"udp\"} 11",
            "ferrovpn_worker_packets_total{worker=\"0\",source=\"tcp\"} 12",
            "ferrovpn_worker_busy_seconds_total{worker=\"0\"} 0.5",
            "ferrovpn_control_queue_depth 4",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }

    #[test]
    fn tcp_workers_count_their_connections_packets() {
        let s = Snapshot {
            workers: vec![
                WorkerSample {
                    tun_packets: 3,
                    tcp_packets: 7,
                    busy_seconds: 0.25,
                    ..WorkerSample::default()
                },
                WorkerSample::default(),
            ],
            ..Snapshot::default()
        };
        let text = render(&s);
        for line in [
            "ferrovpn_worker_packets_total{worker=\"0\",source=\"tun\"} 3",
            "ferrovpn_worker_packets_total{worker=\"0\",source=\"tcp\"} 7",
            "ferrovpn_worker_packets_total{worker=\"1\",source=\"tcp\"} 0",
            "ferrovpn_worker_busy_seconds_total{worker=\"0\"} 0.25",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
    }
}
