//! The proxy handshakes of a client connection, sans I/O: what to send to
//! an HTTP proxy (`CONNECT`, as OpenVPN 2.6's proxy.c words it) or a SOCKS5
//! proxy (RFC 1928 with the RFC 1929 user name and password, as 2.6's
//! socks.c does it), and parsers that read the proxy's answers from bytes.
//!
//! Every parser takes the bytes received so far and says "need more",
//! "done after N bytes" or why the answer is wrong; none reads past the
//! answer (the OpenVPN stream follows it), none panics, and every answer is
//! bounded in size. The socket side is `super::link`.

use base64::Engine;
use zeroize::Zeroizing;

/// The longest HTTP proxy answer head read (status line and headers).
pub const MAX_HTTP_HEAD: usize = 8 * 1024;

/// Why a proxy handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("HTTP proxy answer is not HTTP: {0}")]
    NotHttp(String),
    #[error("HTTP proxy answer head is longer than {MAX_HTTP_HEAD} bytes")]
    HeadTooLong,
    #[error("HTTP proxy answer holds a byte that is not printable ASCII")]
    NotAscii,
    #[error("HTTP proxy returned bad status {0} (expected 200)")]
    BadStatus(u16),
    #[error("SOCKS proxy answered with version {0} (expected 5)")]
    SocksVersion(u8),
    #[error("SOCKS proxy chose authentication method {got:#04x}, not the {wanted:#04x} offered")]
    SocksMethod { got: u8, wanted: u8 },
    #[error("SOCKS proxy refused the user name and password")]
    SocksAuthFailed,
    #[error("SOCKS proxy refused the request: {0}")]
    SocksRefused(&'static str),
    #[error("SOCKS proxy returned bad address type {0}")]
    SocksAddressType(u8),
    #[error("{0}")]
    Invalid(String),
}

/// One HTTP header line an `http-proxy-option CUSTOM-HEADER NAME [CONTENT]`
/// adds (a NAME without CONTENT is sent as the whole line, as in 2.6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomHeader {
    pub name: String,
    pub content: Option<String>,
}

/// What an HTTP `CONNECT` request says.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpConnect {
    /// The OpenVPN server, as the `remote` line names it.
    pub host: String,
    pub port: u16,
    /// `http-proxy-option VERSION` (default `1.0`).
    pub version: String,
    /// `http-proxy-option AGENT`.
    pub user_agent: Option<String>,
    pub custom_headers: Vec<CustomHeader>,
    /// `basic` authentication: user name and password.
    pub basic: Option<(String, Zeroizing<String>)>,
}

impl std::fmt::Debug for HttpConnect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConnect")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("version", &self.version)
            .field("basic", &self.basic.as_ref().map(|(u, _)| (u, "***")))
            .finish_non_exhaustive()
    }
}

impl HttpConnect {
    /// The request, CRLF-terminated lines and an empty line, in 2.6's
    /// order: the CONNECT line, custom headers, `Host` (unless a custom
    /// header gave one), `User-Agent`, `Proxy-Authorization`.
    pub fn request(&self) -> Zeroizing<Vec<u8>> {
        let mut out = format!(
            "CONNECT {}:{} HTTP/{}\r\n",
            self.host, self.port, self.version
        );
        let mut host_sent = false;
        for h in &self.custom_headers {
            match &h.content {
                Some(content) => {
                    host_sent |= h.name.eq_ignore_ascii_case("Host");
                    out.push_str(&format!("{}: {content}\r\n", h.name));
                }
                None => {
                    host_sent |= h
                        .name
                        .get(..5)
                        .is_some_and(|p| p.eq_ignore_ascii_case("Host:"));
                    out.push_str(&format!("{}\r\n", h.name));
                }
            }
        }
        if !host_sent {
            out.push_str(&format!("Host: {}\r\n", self.host));
        }
        if let Some(agent) = &self.user_agent {
            out.push_str(&format!("User-Agent: {agent}\r\n"));
        }
        let mut out = Zeroizing::new(out.into_bytes());
        if let Some((user, pass)) = &self.basic {
            let creds = Zeroizing::new(format!("{user}:{}", pass.as_str()));
            let b64 =
                Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(creds.as_bytes()));
            out.extend_from_slice(b"Proxy-Authorization: Basic ");
            out.extend_from_slice(b64.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// What an HTTP proxy answered to `CONNECT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    /// `Proxy-Authenticate` values (what a 407 asks for).
    pub authenticate: Vec<String>,
}

impl HttpAnswer {
    /// The proxy offers `Basic` authentication.
    pub fn offers_basic(&self) -> bool {
        self.authenticate.iter().any(|a| {
            a.split_whitespace()
                .next()
                .is_some_and(|s| s.eq_ignore_ascii_case("basic"))
        })
    }
}

/// Parse an HTTP proxy's answer head from the bytes received so far:
/// `Ok(None)` until the empty line that ends it arrives, then the answer
/// and how many bytes it took (what follows belongs to the tunnel).
pub fn parse_http_answer(buf: &[u8]) -> Result<Option<(HttpAnswer, usize)>, ProxyError> {
    let end = find_head_end(buf);
    let Some(end) = end else {
        if buf.len() >= MAX_HTTP_HEAD {
            return Err(ProxyError::HeadTooLong);
        }
        if buf.iter().any(|&b| !is_head_byte(b)) {
            return Err(ProxyError::NotAscii);
        }
        return Ok(None);
    };
    if end > MAX_HTTP_HEAD {
        return Err(ProxyError::HeadTooLong);
    }
    let head = &buf[..end];
    if head.iter().any(|&b| !is_head_byte(b)) {
        return Err(ProxyError::NotAscii);
    }
    // Checked above: printable ASCII and line ends only.
    let text = std::str::from_utf8(head).map_err(|_| ProxyError::NotAscii)?;
    let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
    let status_line = lines.next().unwrap_or("");
    // 2.6 reads it as "%*s %d": a word, then the status number.
    let mut words = status_line.split_whitespace();
    let proto = words.next().unwrap_or("");
    if !proto.starts_with("HTTP/") {
        return Err(ProxyError::NotHttp(truncate(status_line)));
    }
    let status = words
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| ProxyError::NotHttp(truncate(status_line)))?;
    let authenticate = lines
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("Proxy-Authenticate"))
        .map(|(_, v)| v.trim().to_string())
        .take(16)
        .collect();
    Ok(Some((
        HttpAnswer {
            status,
            authenticate,
        },
        end,
    )))
}

fn is_head_byte(b: u8) -> bool {
    b == b'\r' || b == b'\n' || b == b'\t' || (0x20..0x7f).contains(&b)
}

/// The index just past the empty line (`\r\n\r\n` or `\n\n`) ending the head.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            let line = &buf[line_start..i];
            if line.is_empty() || line == b"\r" {
                // The status line itself cannot be empty.
                if line_start > 0 {
                    return Some(i + 1);
                }
            }
            line_start = i + 1;
        }
    }
    None
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// SOCKS5 authentication methods.
pub const SOCKS_NO_AUTH: u8 = 0x00;
pub const SOCKS_USER_PASS: u8 = 0x02;

/// The method selection message: 2.6 offers exactly one method, user name
/// and password when it has credentials, none otherwise.
pub fn socks_greeting(with_credentials: bool) -> [u8; 3] {
    [
        0x05,
        0x01,
        if with_credentials {
            SOCKS_USER_PASS
        } else {
            SOCKS_NO_AUTH
        },
    ]
}

/// Check the 2-byte method choice against the one method offered.
pub fn parse_socks_choice(answer: [u8; 2], offered: u8) -> Result<u8, ProxyError> {
    if answer[0] != 0x05 {
        return Err(ProxyError::SocksVersion(answer[0]));
    }
    if answer[1] != offered {
        return Err(ProxyError::SocksMethod {
            got: answer[1],
            wanted: offered,
        });
    }
    Ok(answer[1])
}

/// RFC 1929 user name and password request (each at most 255 bytes).
pub fn socks_user_pass(user: &str, pass: &str) -> Result<Zeroizing<Vec<u8>>, ProxyError> {
    let (Ok(ulen), Ok(plen)) = (u8::try_from(user.len()), u8::try_from(pass.len())) else {
        return Err(ProxyError::Invalid(
            "SOCKS user name and/or password exceeds 255 characters".into(),
        ));
    };
    let mut out = Zeroizing::new(Vec::with_capacity(3 + user.len() + pass.len()));
    out.push(0x01);
    out.push(ulen);
    out.extend_from_slice(user.as_bytes());
    out.push(plen);
    out.extend_from_slice(pass.as_bytes());
    Ok(out)
}

/// The 2-byte answer to [`socks_user_pass`]: status 0 is success.
pub fn parse_socks_auth(answer: [u8; 2]) -> Result<(), ProxyError> {
    if answer[1] != 0 {
        return Err(ProxyError::SocksAuthFailed);
    }
    Ok(())
}

/// `CONNECT` to the server by name (ATYP 3), as 2.6 sends it.
pub fn socks_connect(host: &str, port: u16) -> Result<Vec<u8>, ProxyError> {
    let len = u8::try_from(host.len())
        .map_err(|_| ProxyError::Invalid("SOCKS: host name longer than 255 bytes".into()))?;
    let mut out = Vec::with_capacity(7 + host.len());
    out.extend_from_slice(&[0x05, 0x01, 0x00, 0x03, len]);
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    Ok(out)
}

/// What a SOCKS5 reply says: the bound address (the UDP relay for UDP
/// ASSOCIATE), when it is an IPv4 or IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocksReply {
    pub bound: Option<std::net::SocketAddr>,
}

/// Parse a SOCKS5 reply (`VER REP RSV ATYP ADDR PORT`) from the bytes so
/// far: `Ok(None)` until it is complete, then the reply and its length.
pub fn parse_socks_reply(buf: &[u8]) -> Result<Option<(SocksReply, usize)>, ProxyError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let addr_len = match buf[3] {
        0x01 => 4,
        0x03 => usize::from(buf[4]) + 1,
        0x04 => 16,
        t => return Err(ProxyError::SocksAddressType(t)),
    };
    let total = 4 + addr_len + 2;
    if buf.len() < total {
        return Ok(None);
    }
    if buf[0] != 0x05 {
        return Err(ProxyError::SocksVersion(buf[0]));
    }
    if buf[1] != 0x00 {
        return Err(ProxyError::SocksRefused(socks_reply_text(buf[1])));
    }
    let port = u16::from_be_bytes([buf[total - 2], buf[total - 1]]);
    let ip: Option<std::net::IpAddr> = match buf[3] {
        0x01 => <[u8; 4]>::try_from(&buf[4..8])
            .ok()
            .map(|a| std::net::Ipv4Addr::from(a).into()),
        0x04 => <[u8; 16]>::try_from(&buf[4..20])
            .ok()
            .map(|a| std::net::Ipv6Addr::from(a).into()),
        _ => None,
    };
    Ok(Some((
        SocksReply {
            bound: ip.map(|ip| std::net::SocketAddr::new(ip, port)),
        },
        total,
    )))
}

/// The UDP ASSOCIATE request as 2.6 sends it: IPv4, the client's own
/// address left unknown (0.0.0.0:0), so the relay takes datagrams from
/// wherever the client sends them.
pub const SOCKS_UDP_ASSOCIATE: [u8; 10] = [0x05, 0x03, 0x00, 0x01, 0, 0, 0, 0, 0, 0];

/// The length of the header before every datagram through a SOCKS5 UDP
/// relay with an IPv4 address (`RSV RSV FRAG ATYP ADDR(4) PORT(2)`), the
/// only form 2.6 writes or accepts.
pub const SOCKS_UDP_HEADER_LEN: usize = 10;

/// The header before a datagram the relay is to send on to `to`.
pub fn socks_udp_header(to: std::net::SocketAddrV4) -> [u8; SOCKS_UDP_HEADER_LEN] {
    let mut h = [0u8; SOCKS_UDP_HEADER_LEN];
    // RSV (2) and FRAG (1) are zero: 2.6 never fragments.
    h[3] = 0x01;
    h[4..8].copy_from_slice(&to.ip().octets());
    h[8..10].copy_from_slice(&to.port().to_be_bytes());
    h
}

/// Split a datagram from the relay into the address it came from and the
/// payload. `None` (drop it, as 2.6 does) when it is shorter than the
/// header, a fragment, or not from an IPv4 address.
pub fn socks_udp_unwrap(datagram: &[u8]) -> Option<(std::net::SocketAddrV4, &[u8])> {
    let (head, payload) = datagram.split_first_chunk::<SOCKS_UDP_HEADER_LEN>()?;
    if head[2] != 0 || head[3] != 0x01 {
        return None;
    }
    let ip = std::net::Ipv4Addr::new(head[4], head[5], head[6], head[7]);
    let port = u16::from_be_bytes([head[8], head[9]]);
    Some((std::net::SocketAddrV4::new(ip, port), payload))
}

fn socks_reply_text(rep: u8) -> &'static str {
    match rep {
        0x01 => "general SOCKS server failure",
        0x02 => "connection not allowed by ruleset",
        0x03 => "network unreachable",
        0x04 => "host unreachable",
        0x05 => "connection refused",
        0x06 => "TTL expired",
        0x07 => "command not supported",
        0x08 => "address type not supported",
        _ => "unassigned reply code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect() -> HttpConnect {
        HttpConnect {
            host: "vpn.example.org".into(),
            port: 443,
            version: "1.0".into(),
            user_agent: None,
            custom_headers: Vec::new(),
            basic: None,
        }
    }

    #[test]
    fn connect_request_as_2_6_sends_it() {
        assert_eq!(
            connect().request().as_slice(),
            b"CONNECT vpn.example.org:443 HTTP/1.0\r\nHost: vpn.example.org\r\n\r\n"
        );
        let mut c = connect();
        c.version = "1.1".into();
        c.user_agent = Some("Mozilla/5.0".into());
        c.custom_headers = vec![
            CustomHeader {
                name: "X-Test".into(),
                content: Some("yes".into()),
            },
            CustomHeader {
                name: "Host: front.example.com".into(),
                content: None,
            },
        ];
        c.basic = Some(("alice".into(), Zeroizing::new("s3cret".into())));
        assert_eq!(
            String::from_utf8(c.request().to_vec()).unwrap(),
            "CONNECT vpn.example.org:443 HTTP/1.1\r\nX-Test: yes\r\nHost: front.example.com\r\nUser-Agent: Mozilla/5.0\r\nProxy-Authorization: Basic YWxpY2U6czNjcmV0\r\n\r\n"
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn http_answers() {
        assert_eq!(parse_http_answer(b"HTTP/1.0 200 Conn"), Ok(None));
        let ok = b"HTTP/1.0 200 Connection established\r\nProxy-agent: tinyproxy\r\n\r\n\x00\x2a";
        let (a, n) = parse_http_answer(&ok[..]).unwrap().unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(n, ok.len() - 2);
        let lf = b"HTTP/1.1 407 Proxy Authentication Required\nProxy-Authenticate: Basic realm=\"x\"\n\n";
        let (a, n) = parse_http_answer(lf).unwrap().unwrap();
        assert_eq!((a.status, n), (407, lf.len()));
        assert!(a.offers_basic());
        assert!(matches!(
            parse_http_answer(b"SSH-2.0-OpenSSH\r\n\r\n"),
            Err(ProxyError::NotHttp(_))
        ));
        assert!(matches!(
            parse_http_answer(b"HTTP/1.0 abc\r\n\r\n"),
            Err(ProxyError::NotHttp(_))
        ));
        assert_eq!(
            parse_http_answer(b"HTTP/1.0 200 \xff\r\n\r\n"),
            Err(ProxyError::NotAscii)
        );
        assert_eq!(
            parse_http_answer(&vec![b'a'; MAX_HTTP_HEAD]),
            Err(ProxyError::HeadTooLong)
        );
    }

    #[test]
    fn socks_messages() {
        assert_eq!(socks_greeting(false), [5, 1, 0]);
        assert_eq!(socks_greeting(true), [5, 1, 2]);
        assert_eq!(parse_socks_choice([5, 2], 2), Ok(2));
        assert!(parse_socks_choice([5, 0xff], 2).is_err());
        assert!(parse_socks_choice([4, 0], 0).is_err());
        assert_eq!(
            socks_user_pass("bob", "pw").unwrap().as_slice(),
            b"\x01\x03bob\x02pw"
        );
        assert!(socks_user_pass(&"x".repeat(256), "pw").is_err());
        assert!(parse_socks_auth([1, 0]).is_ok());
        assert!(parse_socks_auth([1, 1]).is_err());
        assert_eq!(
            socks_connect("h.example", 1194).unwrap(),
            b"\x05\x01\x00\x03\x09h.example\x04\xaa"
        );
        let v4 = [5, 0, 0, 1, 10, 0, 0, 1, 0x04, 0xaa, 0x16];
        let (r, n) = parse_socks_reply(&v4).unwrap().unwrap();
        assert_eq!(n, 10);
        assert_eq!(r.bound, Some("10.0.0.1:1194".parse().unwrap()));
        assert_eq!(parse_socks_reply(&v4[..9]), Ok(None));
        let name = b"\x05\x00\x00\x03\x01x\x00\x50";
        assert_eq!(
            parse_socks_reply(name).unwrap().unwrap(),
            (SocksReply { bound: None }, 8)
        );
        assert!(parse_socks_reply(&[5, 5, 0, 1, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(parse_socks_reply(&[5, 0, 0, 9, 0]).is_err());
    }

    #[test]
    fn socks_udp_header_round_trip() {
        let to: std::net::SocketAddrV4 = "127.0.0.1:1194".parse().unwrap();
        let h = socks_udp_header(to);
        assert_eq!(h, [0, 0, 0, 1, 127, 0, 0, 1, 0x04, 0xaa]);
        let mut datagram = h.to_vec();
        datagram.extend_from_slice(b"\x38payload");
        assert_eq!(socks_udp_unwrap(&datagram), Some((to, &b"\x38payload"[..])));
        // Empty payload: still a datagram.
        assert_eq!(socks_udp_unwrap(&h), Some((to, &b""[..])));
        assert_eq!(socks_udp_unwrap(&h[..9]), None);
        let mut fragment = datagram.clone();
        fragment[2] = 1;
        assert_eq!(socks_udp_unwrap(&fragment), None);
        let mut v6 = datagram.clone();
        v6[3] = 4;
        assert_eq!(socks_udp_unwrap(&v6), None);
        assert_eq!(
            SOCKS_UDP_ASSOCIATE,
            *b"\x05\x03\x00\x01\x00\x00\x00\x00\x00\x00"
        );
    }

    proptest::proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse_http_answer(&bytes);
            let _ = parse_socks_reply(&bytes);
            let _ = socks_udp_unwrap(&bytes);
        }
    }
}
