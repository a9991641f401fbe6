//! The socket side of a connection entry: the TCP connect, and the HTTP
//! CONNECT or SOCKS5 handshake through a proxy (the bytes come from
//! [`super::proxy`]). Nothing past a proxy's answer is read: the OpenVPN
//! stream that follows belongs to the data plane.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use ferrovpn_config::{HttpProxy, HttpProxyAuth, ProxyCredentials, SocksProxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::info;
use zeroize::Zeroizing;

use super::proxy::{self, CustomHeader, HttpConnect, MAX_HTTP_HEAD};

/// A proxy between the client and its server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    Http(HttpProxy),
    Socks(SocksProxy),
}

impl Proxy {
    pub fn host(&self) -> &str {
        match self {
            Proxy::Http(p) => &p.host,
            Proxy::Socks(p) => &p.host,
        }
    }
    pub fn port(&self) -> u16 {
        match self {
            Proxy::Http(p) => p.port,
            Proxy::Socks(p) => p.port,
        }
    }
}

/// Open a TCP connection to `addr` (bound to `bind` first if given).
pub(super) async fn connect_tcp(
    addr: SocketAddr,
    bind: Option<SocketAddr>,
) -> anyhow::Result<TcpStream> {
    let socket = match addr.ip() {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    if let Some(local) = bind.map(|b| super::bind_towards(b, addr)) {
        socket.set_reuseaddr(true)?;
        socket
            .bind(local)
            .with_context(|| format!("binding {local}"))?;
    }
    Ok(socket.connect(addr).await?)
}

/// Connect to the proxy at `proxy_addr` and have it open a tunnel to
/// `host:port`, all within `timeout` (2.6's connect-timeout covers the
/// proxy handshake too).
pub(super) async fn through_proxy(
    proxy: &Proxy,
    proxy_addr: SocketAddr,
    bind: Option<SocketAddr>,
    host: &str,
    port: u16,
    timeout: Duration,
) -> anyhow::Result<TcpStream> {
    let work = async {
        match proxy {
            Proxy::Http(p) => http_tunnel(p, proxy_addr, bind, host, port).await,
            Proxy::Socks(p) => {
                let mut stream = connect_tcp(proxy_addr, bind).await?;
                socks_tunnel(&mut stream, p, host, port).await?;
                Ok(stream)
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| anyhow::anyhow!("no tunnel through the proxy within {}s", timeout.as_secs()))?
}

fn credentials(c: &ProxyCredentials) -> (String, Zeroizing<String>) {
    (c.username.clone(), c.password.clone())
}

async fn http_tunnel(
    p: &HttpProxy,
    proxy_addr: SocketAddr,
    bind: Option<SocketAddr>,
    host: &str,
    port: u16,
) -> anyhow::Result<TcpStream> {
    let mut request = HttpConnect {
        host: host.to_string(),
        port,
        version: p.version.clone(),
        user_agent: p.user_agent.clone(),
        custom_headers: p
            .custom_headers
            .iter()
            .map(|(name, content)| CustomHeader {
                name: name.clone(),
                content: content.clone(),
            })
            .collect(),
        basic: match &p.auth {
            HttpProxyAuth::Basic(c) => Some(credentials(c)),
            _ => None,
        },
    };
    // `auto`: a 407 that offers Basic is answered once, on a new connection.
    for _ in 0..2 {
        let mut stream = connect_tcp(proxy_addr, bind).await?;
        stream.write_all(&request.request()).await?;
        let answer = read_http_answer(&mut stream).await?;
        match (answer.status, &p.auth) {
            (200, _) => {
                info!("HTTP proxy {proxy_addr}: tunnel to {host}:{port} open");
                return Ok(stream);
            }
            (
                407,
                HttpProxyAuth::Auto {
                    nct,
                    credentials: c,
                },
            ) if request.basic.is_none() => {
                if !answer.offers_basic() {
                    bail!(
                        "HTTP proxy: do not recognize the authentication method required by proxy ({})",
                        answer.authenticate.join("; ")
                    );
                }
                if *nct {
                    bail!(
                        "HTTP proxy: support for basic auth and other cleartext proxy auth methods is disabled (auto-nct)"
                    );
                }
                let Some(c) = c else {
                    bail!("HTTP proxy asks for credentials, and none were given");
                };
                info!("HTTP proxy {proxy_addr} asks for Basic authentication; trying again");
                request.basic = Some(credentials(c));
            }
            (407, _) => bail!("HTTP proxy refused the credentials (407)"),
            (status, _) => bail!(proxy::ProxyError::BadStatus(status)),
        }
    }
    bail!("HTTP proxy refused the credentials (407)")
}

/// Read the answer head byte by byte: the tunnel's first bytes may follow.
async fn read_http_answer(stream: &mut TcpStream) -> anyhow::Result<proxy::HttpAnswer> {
    let mut buf = Vec::with_capacity(256);
    while buf.len() <= MAX_HTTP_HEAD {
        let b = stream
            .read_u8()
            .await
            .context("HTTP proxy closed the connection")?;
        buf.push(b);
        if let Some((answer, _)) = proxy::parse_http_answer(&buf)? {
            return Ok(answer);
        }
    }
    bail!(proxy::ProxyError::HeadTooLong)
}

async fn socks_tunnel(
    stream: &mut TcpStream,
    p: &SocksProxy,
    host: &str,
    port: u16,
) -> anyhow::Result<()> {
    socks_handshake(stream, p).await?;
    stream.write_all(&proxy::socks_connect(host, port)?).await?;
    read_socks_reply(stream).await?;
    info!("SOCKS proxy: tunnel to {host}:{port} open");
    Ok(())
}

/// The method choice, and the user name and password when the proxy asks
/// for them (2.6's socks_handshake).
async fn socks_handshake(stream: &mut TcpStream, p: &SocksProxy) -> anyhow::Result<()> {
    let greeting = proxy::socks_greeting(p.credentials.is_some());
    stream.write_all(&greeting).await?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await?;
    if proxy::parse_socks_choice(choice, greeting[2])? == proxy::SOCKS_USER_PASS {
        let c = p
            .credentials
            .as_ref()
            .context("SOCKS proxy wants a user name and password; none given")?;
        stream
            .write_all(&proxy::socks_user_pass(&c.username, &c.password)?)
            .await?;
        let mut status = [0u8; 2];
        stream.read_exact(&mut status).await?;
        proxy::parse_socks_auth(status)?;
    }
    Ok(())
}

/// Read a SOCKS5 reply byte by byte: the tunnel's first bytes may follow.
async fn read_socks_reply(stream: &mut TcpStream) -> anyhow::Result<proxy::SocksReply> {
    let mut reply = Vec::with_capacity(32);
    // VER REP RSV ATYP ADDR(<= 256) PORT: bounded by the parser.
    loop {
        reply.push(
            stream
                .read_u8()
                .await
                .context("SOCKS proxy closed the connection")?,
        );
        if let Some((answer, _)) = proxy::parse_socks_reply(&reply)? {
            return Ok(answer);
        }
    }
}

/// A SOCKS5 UDP association, as 2.6 makes one for `proto udp` with
/// `socks-proxy`: the TCP control connection to the proxy (the association
/// lasts as long as it stays open) and the relay's address from the reply.
pub(super) struct UdpAssociation {
    pub control: TcpStream,
    pub relay: SocketAddr,
}

/// Connect to the SOCKS proxy at `proxy_addr` (bound to `bind` first if
/// given: 2.6 binds the control connection, not the UDP socket), and ask
/// for a UDP association, all within `timeout`. A relay address of
/// 0.0.0.0 (or a name) means the proxy's own address.
pub(super) async fn socks_udp_associate(
    p: &SocksProxy,
    proxy_addr: SocketAddr,
    bind: Option<SocketAddr>,
    timeout: Duration,
) -> anyhow::Result<UdpAssociation> {
    let work = async {
        let mut control = connect_tcp(proxy_addr, bind).await?;
        socks_handshake(&mut control, p).await?;
        control.write_all(&proxy::SOCKS_UDP_ASSOCIATE).await?;
        let reply = read_socks_reply(&mut control).await?;
        let relay = match reply.bound {
            Some(a) if !a.ip().is_unspecified() => a,
            Some(a) => SocketAddr::new(proxy_addr.ip(), a.port()),
            None => bail!("SOCKS proxy named its UDP relay by a host name; an address is needed"),
        };
        if relay.port() == 0 {
            bail!("SOCKS proxy gave UDP relay port 0");
        }
        info!("SOCKS proxy wants us to send UDP to {relay}");
        Ok(UdpAssociation { control, relay })
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| {
        anyhow::anyhow!(
            "no UDP association from the SOCKS proxy within {}s",
            timeout.as_secs()
        )
    })?
}
