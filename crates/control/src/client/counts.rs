//! What a client counts, as OpenVPN 2.6 counts it (`forward.c`,
//! `print_status` in `sig.c`, `manage.c`):
//!
//! - the link: every datagram (or TCP packet) read from and written to the
//!   server, control channel included, since the process started
//!   (`>BYTECOUNT:IN,OUT` and `load-stats` show these totals, 2.6's
//!   `man->persist.bytes_*` and `link_*_bytes_global`), and since the
//!   current connection started (`status`: 2.6 clears its per-connection
//!   `c2` counters with each restart);
//! - the TUN device: IP packets read from it (sent to the server) and
//!   written to it, this connection;
//! - `Auth read bytes`: the plaintext of every authentic data-channel
//!   packet, keepalive pings and OCC messages included, this connection.
//!
//! The link bytes come from the data plane ([`LinkCounters`], one for the
//! client's whole life, handed to each data plane it starts); the TUN and
//! authenticated bytes from the peer's counters (a connection's peer is
//! new with each connection).

use std::sync::{Arc, Mutex};

use ferrovpn_dataplane::{LinkCounters, PeerTable};

/// The counts of a client, shared by its runtime and its management task.
pub struct ClientCounts {
    peers: PeerTable,
    link: Arc<LinkCounters>,
    /// The link counts when the current connection started.
    base: Mutex<(u64, u64)>,
}

/// One `status` report's numbers (2.6's `print_status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Statistics {
    pub tun_read: u64,
    pub tun_written: u64,
    pub link_read: u64,
    pub link_written: u64,
    pub auth_read: u64,
}

impl ClientCounts {
    pub fn new(peers: PeerTable) -> ClientCounts {
        ClientCounts {
            peers,
            link: Arc::new(LinkCounters::default()),
            base: Mutex::new((0, 0)),
        }
    }

    /// The counter to hand to each data plane.
    pub fn link(&self) -> Arc<LinkCounters> {
        self.link.clone()
    }

    /// A new connection starts: `status` counts the link from here.
    pub fn connection_started(&self) {
        *self.lock_base() = self.link.get();
    }

    /// `(read, written)` link bytes since the client started.
    pub fn link_totals(&self) -> (u64, u64) {
        self.link.get()
    }

    /// The numbers of the current connection.
    pub fn statistics(&self) -> Statistics {
        let (read, written) = self.link.get();
        let (base_read, base_written) = *self.lock_base();
        let mut st = Statistics {
            link_read: read.saturating_sub(base_read),
            link_written: written.saturating_sub(base_written),
            ..Statistics::default()
        };
        let snap = self.peers.load();
        for s in snap
            .by_id
            .keys()
            .filter_map(|id| self.peers.peer_stats(*id))
        {
            st.tun_read += s.tx_bytes.saturating_sub(s.tx_keepalive_bytes);
            st.tun_written += s.rx_bytes.saturating_sub(s.rx_keepalive_bytes);
            st.auth_read += s.rx_bytes;
        }
        st
    }

    fn lock_base(&self) -> std::sync::MutexGuard<'_, (u64, u64)> {
        self.base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The client's status report in 2.6's layout (the `status` command in
/// every version, and the `status` file), `\n` line ends.
pub fn render(now: u64, st: &Statistics) -> String {
    format!(
        "OpenVPN STATISTICS\nUpdated,{}\nTUN/TAP read bytes,{}\nTUN/TAP write bytes,{}\nTCP/UDP read bytes,{}\nTCP/UDP write bytes,{}\nAuth read bytes,{}\nEND\n",
        crate::status::utc(now),
        st.tun_read,
        st.tun_written,
        st.link_read,
        st.link_written,
        st.auth_read,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_report_has_2_6_client_layout() {
        let st = Statistics {
            tun_read: 1,
            tun_written: 2,
            link_read: 3,
            link_written: 4,
            auth_read: 5,
        };
        let r = render(0, &st);
        let lines: Vec<&str> = r.lines().collect();
        assert_eq!(lines[0], "OpenVPN STATISTICS");
        assert!(lines[1].starts_with("Updated,"));
        assert_eq!(
            &lines[2..],
            [
                "TUN/TAP read bytes,1",
                "TUN/TAP write bytes,2",
                "TCP/UDP read bytes,3",
                "TCP/UDP write bytes,4",
                "Auth read bytes,5",
                "END"
            ]
        );
    }

    #[test]
    fn status_counts_the_link_of_this_connection_only() {
        let counts = ClientCounts::new(PeerTable::new());
        counts.link.read(100);
        counts.link.written(50);
        counts.connection_started();
        counts.link.read(7);
        counts.link.written(3);
        let st = counts.statistics();
        assert_eq!((st.link_read, st.link_written), (7, 3));
        assert_eq!(counts.link_totals(), (107, 53));
    }
}
