//! `port-share HOST PORT [DIR]`: a TCP connection to the server that does
//! not start like an OpenVPN client is passed on to another server (an HTTPS
//! site on port 443, say), as OpenVPN 2.6 does.
//!
//! The decision ([`is_openvpn`]) is pure and follows 2.6's rule on the first
//! bytes: a length prefix and a HARD_RESET_CLIENT opcode of a plausible size.
//! The bytes are only peeked, so the proxied server sees the stream from its
//! first byte, and an OpenVPN client's connection goes to the data plane
//! untouched. With `DIR`, each proxied connection gets a journal file named
//! after the proxy's local address (`IP:PORT`) that holds the original
//! client's address, removed when the connection ends (2.6's journal).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::{debug, info, warn};

/// P_CONTROL_HARD_RESET_CLIENT_V2 and _V3 in the opcode bits of byte 0.
const HARD_RESET_CLIENT_V2: u8 = 7 << 3;
const HARD_RESET_CLIENT_V3: u8 = 10 << 3;
/// Bytes the decision looks at.
pub const DECISION_BYTES: usize = 3;
/// How long a new connection may take to send its first bytes before the
/// decision is made on what came (2.6 decides on its first read).
pub const FIRST_BYTES_WAIT: Duration = Duration::from_secs(5);
/// 2.6 gives the port-share server 5 s to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections proxied at once; more are closed (each holds two sockets).
pub const MAX_PROXIED: usize = 1024;

/// Where foreign connections go.
#[derive(Debug, Clone)]
pub struct PortShare {
    pub target: SocketAddr,
    /// `DIR`: journal files of the proxied connections' real sources.
    pub journal_dir: Option<PathBuf>,
}

/// Whether `first` (the first bytes of a connection, at most a few) may be
/// an OpenVPN client: 2.6's `is_openvpn_protocol`. Fewer than two bytes
/// count as OpenVPN, as in 2.6.
pub fn is_openvpn(first: &[u8]) -> bool {
    let len = match first {
        [a, b, ..] => usize::from(u16::from_be_bytes([*a, *b])),
        _ => return true,
    };
    match first.get(2) {
        // tls-crypt-v2: the wrapped client key makes the packet large.
        Some(&op) if op & 0xf8 == HARD_RESET_CLIENT_V3 => (336..1024 + 255).contains(&len),
        Some(&op) => (14..=255).contains(&len) && op & 0xf8 == HARD_RESET_CLIENT_V2,
        None => (14..=255).contains(&len),
    }
}

/// Peek at the first bytes of `stream` (without taking them), waiting up to
/// [`FIRST_BYTES_WAIT`] for [`DECISION_BYTES`] of them.
pub async fn first_bytes(stream: &TcpStream) -> Vec<u8> {
    let mut buf = [0u8; DECISION_BYTES];
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + FIRST_BYTES_WAIT;
    // Bounded: each round waits for more bytes or ends.
    for _ in 0..64 {
        match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                seen = n;
                if n >= DECISION_BYTES {
                    break;
                }
                // Some bytes, not all: wait a moment for the rest.
                if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(20)))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    buf[..seen].to_vec()
}

/// Proxy `client` to the port-share server until either side closes.
/// `active` counts the connections proxied now.
pub async fn proxy(
    mut client: TcpStream,
    from: SocketAddr,
    share: Arc<PortShare>,
    active: Arc<AtomicUsize>,
) {
    struct Slot(Arc<AtomicUsize>);
    impl Drop for Slot {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::Relaxed);
        }
    }
    let _slot = Slot(active);
    let server = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(share.target)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            warn!("{from}: PORT SHARE PROXY: connect to port-share server failed: {e}");
            return;
        }
        Err(_) => {
            warn!("{from}: PORT SHARE PROXY: connect to port-share server timed out");
            return;
        }
    };
    let journal = share
        .journal_dir
        .as_ref()
        .and_then(|dir| write_journal(dir, &server, from));
    let mut server = server;
    match tokio::io::copy_bidirectional(&mut client, &mut server).await {
        Ok((up, down)) => debug!("{from}: port-share connection ended ({up} bytes in, {down} out)"),
        Err(e) => debug!("{from}: port-share connection ended: {e}"),
    }
    if let Some(path) = journal
        && let Err(e) = std::fs::remove_file(&path)
    {
        debug!(
            "PORT SHARE: cannot remove journal file {}: {e}",
            path.display()
        );
    }
}

/// Write the journal file of a proxied connection; its path, if written.
fn write_journal(dir: &std::path::Path, server: &TcpStream, from: SocketAddr) -> Option<PathBuf> {
    let local = server.local_addr().ok()?;
    let path = dir.join(local.to_string());
    match std::fs::write(&path, from.to_string()) {
        Ok(()) => {
            info!(
                "{from}: PORT SHARE PROXY: client origin {} -> {from}",
                path.display()
            );
            Some(path)
        }
        Err(e) => {
            warn!(
                "PORT SHARE: unable to write journal file in {}: {e}",
                path.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn openvpn_resets_pass_web_traffic_does_not() {
        // A stock 2.6 client's first packet with tls-crypt: 0x0036 bytes, opcode 7.
        assert!(is_openvpn(&[0x00, 0x36, 0x38]));
        // tls-auth with SHA-256 HMAC is longer but still below 256.
        assert!(is_openvpn(&[0x00, 0x5a, 0x38, 0x01]));
        // tls-crypt-v2: HARD_RESET_CLIENT_V3 carrying the wrapped key.
        assert!(is_openvpn(&[0x01, 0x80, 0x50]));
        assert!(!is_openvpn(&[0x00, 0x36, 0x50]), "V3 too short for a WKc");
        // Not a reset, or implausible lengths.
        assert!(!is_openvpn(&[0x00, 0x36, 0x20]));
        assert!(!is_openvpn(&[0x00, 0x0d, 0x38]));
        assert!(!is_openvpn(&[0x01, 0x00, 0x38]));
        // HTTP and a TLS ClientHello.
        assert!(!is_openvpn(b"GET / HTTP/1.1\r\n"));
        assert!(!is_openvpn(&[0x16, 0x03, 0x01, 0x02, 0x00]));
        // Too few bytes to tell: 2.6 takes them for OpenVPN.
        assert!(is_openvpn(&[]));
        assert!(is_openvpn(&[0x47]));
        assert!(is_openvpn(&[0x00, 0x36]));
        assert!(!is_openvpn(b"GE"));
    }

    proptest! {
        #[test]
        fn any_bytes_are_decided_without_panic(first in prop::collection::vec(any::<u8>(), 0..8)) {
            let _ = is_openvpn(&first);
        }
    }
}
