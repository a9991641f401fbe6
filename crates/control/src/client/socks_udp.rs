//! `proto udp` through a SOCKS5 proxy (UDP ASSOCIATE), as 2.6 does it:
//! every datagram to the server goes to the proxy's UDP relay behind a
//! 10-byte header naming the server, every datagram from the relay comes
//! with one naming its source.
//!
//! The data plane knows nothing of this. It talks UDP to a loopback socket
//! of this relay task, as it would to a server; the task adds and strips
//! the header (the bytes are [`super::proxy`]'s). So the fast path of a
//! client without a SOCKS proxy is untouched, and a SOCKS client pays one
//! loopback hop per datagram, no more.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use tokio::io::AsyncReadExt;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::link::UdpAssociation;
use super::proxy::{SOCKS_UDP_HEADER_LEN, socks_udp_header, socks_udp_unwrap};

/// The largest datagram carried (a UDP payload), header included.
const MAX_DATAGRAM: usize = 65_535;

/// A running relay between the data plane and a SOCKS5 UDP relay; stops
/// (and closes the association's control connection) when dropped.
pub(super) struct SocksUdpRelay {
    /// Where the data plane sends: the server as the data plane sees it.
    pub local: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for SocksUdpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SocksUdpRelay {
    /// Start relaying datagrams between a loopback socket (the data plane's
    /// server address, [`SocksUdpRelay::local`]) and `assoc`'s relay, for
    /// the OpenVPN server `server`.
    pub async fn start(
        assoc: UdpAssociation,
        server: SocketAddrV4,
    ) -> anyhow::Result<SocksUdpRelay> {
        let inner = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let local = inner.local_addr()?;
        let outer_bind: SocketAddr = match assoc.relay {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let outer = UdpSocket::bind(outer_bind).await?;
        // Only the relay may answer: datagrams from anywhere else are dropped
        // by the kernel.
        outer.connect(assoc.relay).await?;
        info!(
            "SOCKS UDP: relaying {local} <-> {} for server {server}",
            assoc.relay
        );
        let task = tokio::spawn(relay(inner, outer, assoc, server));
        Ok(SocksUdpRelay { local, task })
    }
}

async fn relay(inner: UdpSocket, outer: UdpSocket, assoc: UdpAssociation, server: SocketAddrV4) {
    let UdpAssociation { mut control, relay } = assoc;
    // The header goes in front of the datagram in place: receive after it.
    let mut up = vec![0u8; SOCKS_UDP_HEADER_LEN + MAX_DATAGRAM];
    up[..SOCKS_UDP_HEADER_LEN].copy_from_slice(&socks_udp_header(server));
    let mut down = vec![0u8; SOCKS_UDP_HEADER_LEN + MAX_DATAGRAM];
    // The data plane's socket: the first one to send here. Anything else on
    // the loopback is dropped afterwards.
    let mut data_plane: Option<SocketAddr> = None;
    let mut control_byte = [0u8; 1];
    loop {
        tokio::select! {
            r = inner.recv_from(&mut up[SOCKS_UDP_HEADER_LEN..]) => match r {
                Ok((n, from)) => {
                    if *data_plane.get_or_insert(from) != from {
                        debug!("SOCKS UDP: dropping a datagram from {from}, not the data plane");
                        continue;
                    }
                    if let Err(e) = outer.send(&up[..SOCKS_UDP_HEADER_LEN + n]).await {
                        debug!("SOCKS UDP: send to relay {relay}: {e}");
                    }
                }
                Err(e) => debug!("SOCKS UDP: receive from the data plane: {e}"),
            },
            r = outer.recv(&mut down) => match r {
                Ok(n) => {
                    // 2.6 takes the source from the header; only the
                    // server's datagrams are the tunnel's.
                    let Some((source, payload)) = socks_udp_unwrap(&down[..n]) else {
                        debug!("SOCKS UDP: dropping a datagram without a valid header");
                        continue;
                    };
                    if source != server {
                        debug!("SOCKS UDP: dropping a datagram from {source}, not the server");
                        continue;
                    }
                    if let Some(dp) = data_plane
                        && let Err(e) = inner.send_to(payload, dp).await
                    {
                        debug!("SOCKS UDP: send to the data plane: {e}");
                    }
                }
                Err(e) => debug!("SOCKS UDP: receive from relay {relay}: {e}"),
            },
            r = control.read(&mut control_byte) => {
                // The proxy ends the association by closing this connection;
                // it sends nothing else on it. The tunnel then goes silent
                // and ping-restart reconnects.
                match r {
                    Ok(0) | Err(_) => {
                        warn!("SOCKS proxy closed the UDP association's control connection");
                        return;
                    }
                    Ok(_) => debug!("SOCKS UDP: ignoring a byte on the control connection"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The relay between a "data plane" socket and a stand-in SOCKS relay,
    /// all on loopback (no root): the header goes on every datagram out and
    /// comes off every one in; a datagram from another source than the
    /// server, a fragment, and one from a stranger on the loopback socket
    /// are dropped.
    #[test]
    fn datagrams_get_the_header_out_and_lose_it_in() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let wait = Duration::from_secs(5);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let control = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (_proxy_side, _) = listener.accept().await.unwrap();
            let socks = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let server: SocketAddrV4 = "192.0.2.1:1194".parse().unwrap();
            let relay = SocksUdpRelay::start(
                UdpAssociation {
                    control,
                    relay: socks.local_addr().unwrap(),
                },
                server,
            )
            .await
            .unwrap();
            let dp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            dp.connect(relay.local).await.unwrap();
            dp.send(b"\x38hello").await.unwrap();
            let mut buf = [0u8; 128];
            let (n, relay_out) = tokio::time::timeout(wait, socks.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], b"\0\0\0\x01\xc0\0\x02\x01\x04\xaa\x38hello");
            // From elsewhere than the server, and a fragment: dropped.
            let mut other = socks_udp_header("192.0.2.9:1194".parse().unwrap()).to_vec();
            other.extend_from_slice(b"stranger");
            socks.send_to(&other, relay_out).await.unwrap();
            let mut fragment = socks_udp_header(server).to_vec();
            fragment[2] = 1;
            fragment.extend_from_slice(b"fragment");
            socks.send_to(&fragment, relay_out).await.unwrap();
            let mut answer = socks_udp_header(server).to_vec();
            answer.extend_from_slice(b"\x40reply");
            socks.send_to(&answer, relay_out).await.unwrap();
            let n = tokio::time::timeout(wait, dp.recv(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[..n], b"\x40reply");
            // Another local socket is not the data plane: not relayed.
            let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            stranger.send_to(b"nope", relay.local).await.unwrap();
            dp.send(b"again").await.unwrap();
            let (n, _) = tokio::time::timeout(wait, socks.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(&buf[SOCKS_UDP_HEADER_LEN..n], b"again");
        });
    }
}
