//! Key-method-2 messages (docs/protocol.md §6), peer-info (§6.3) and the OCC
//! options strings we send (§13).
//!
//! The message is the first TLS application data in each direction. Decoding
//! is structural only: what the strings mean is the session's business.

use thiserror::Error;

use crate::data::Cipher;
use crate::wire::Reader;

/// Key-method byte; the receiver checks only the low 4 bits.
pub const KEY_METHOD_2: u8 = 2;
/// Receive limit for the options string, including its NUL (§6.2).
pub const MAX_OPTIONS_LEN: usize = 512;
/// Receive limit for username and password, including the NUL (PKCS#11 builds of 2.6).
pub const MAX_CREDENTIAL_LEN: usize = 4096;
/// The whole message must fit in one record of this size (§6.2).
pub const MAX_MESSAGE_LEN: usize = 2048;
/// Length of the client's pre-master secret.
pub const PRE_MASTER_LEN: usize = 48;
/// Length of each random.
pub const RANDOM_LEN: usize = 32;

/// IV_PROTO bits (§6.3).
pub mod iv_proto {
    /// Historical "IV_PROTO >= 2 means DATA_V2"; always set together with [`DATA_V2`].
    pub const RESERVED: u32 = 1 << 0;
    /// Understands P_DATA_V2 and a pushed `peer-id`.
    pub const DATA_V2: u32 = 1 << 1;
    /// Will send PUSH_REQUEST; the server may push right after authentication.
    pub const REQUEST_PUSH: u32 = 1 << 2;
    /// Can derive data keys with the TLS exporter.
    pub const TLS_KEY_EXPORT: u32 = 1 << 3;
    /// Accepts `AUTH_PENDING,timeout N`.
    pub const AUTH_PENDING_KW: u32 = 1 << 4;
    /// P2P-mode negotiation.
    pub const NCP_P2P: u32 = 1 << 5;
    /// Understands the pushed `dns` option (2.6 syntax).
    pub const DNS_OPTION: u32 = 1 << 6;
    /// Sends/receives the `EXIT` control message; accepts `protocol-flags`.
    pub const CC_EXIT_NOTIFY: u32 = 1 << 7;
    /// Understands `AUTH_FAILED,TEMP...`.
    pub const AUTH_FAIL_TEMP: u32 = 1 << 8;
    /// Supports dynamic tls-crypt.
    pub const DYN_TLS_CRYPT: u32 = 1 << 9;
    /// [2.7] epoch data format.
    pub const DATA_EPOCH: u32 = 1 << 10;
    /// [2.7] newer `dns` option handling.
    pub const DNS_OPTION_V2: u32 = 1 << 11;
    /// [2.7] accepts PUSH_UPDATE.
    pub const PUSH_UPDATE: u32 = 1 << 12;
}

/// Why a key-method-2 message could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyMethodError {
    /// The bytes end inside the message; more TLS plaintext may complete it.
    #[error("key-method-2 message incomplete")]
    Incomplete,
    /// The key-method byte's low 4 bits are not 2.
    #[error("unsupported key method byte {0:#04x}")]
    BadKeyMethod(u8),
    /// A string's length field exceeds the receive limit for that field.
    #[error("{field} too long: {len} bytes (max {max})")]
    StringTooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    /// A non-empty string does not end with NUL or contains one before its end.
    #[error("{field} is not a NUL-terminated string")]
    BadString { field: &'static str },
    /// A string is not valid UTF-8.
    #[error("{field} is not valid UTF-8")]
    NotUtf8 { field: &'static str },
    /// The message is longer than [`MAX_MESSAGE_LEN`].
    #[error("key-method-2 message longer than {MAX_MESSAGE_LEN} bytes")]
    TooLong,
}

/// What a client logs in with: the key-method-2 user name and password
/// (the password may be an auth-token). Zeroed when dropped, never logged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// The client sent a login ([`KeyMethod2::credentials_sent`]); without
    /// one, user name and password are empty.
    pub sent: bool,
}

impl Drop for Credentials {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.password.zeroize();
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .finish()
    }
}

/// One key-method-2 message (§6.1 client, §6.2 server).
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMethod2 {
    /// Present exactly in client messages.
    pub pre_master: Option<[u8; PRE_MASTER_LEN]>,
    pub random1: [u8; RANDOM_LEN],
    pub random2: [u8; RANDOM_LEN],
    /// OCC options string (§13), without the NUL.
    pub options: String,
    pub username: String,
    pub password: String,
    /// Whether the message carries a login: 2.6 writes user name and
    /// password as strings with their NUL (`00 01 00` when empty) when it
    /// has `auth-user-pass`, and `00 00` twice when it has none. A server
    /// reads a login as absent when either field is `00 00`
    /// (`key_method_2_read`: "Auth Username/Password was not provided").
    pub credentials_sent: bool,
    /// `NAME=value\n` lines (§6.3); see [`PeerInfo::parse`].
    pub peer_info: String,
}

impl Drop for KeyMethod2 {
    // The pre-master secret and randoms make the data keys (legacy PRF), and
    // the password is a secret: none may outlive the message in freed memory.
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.pre_master.zeroize();
        self.random1.zeroize();
        self.random2.zeroize();
        self.password.zeroize();
    }
}

impl std::fmt::Debug for KeyMethod2 {
    // Secrets (pre-master, randoms, password) must not reach logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMethod2")
            .field("from_client", &self.pre_master.is_some())
            .field("options", &self.options)
            .field("username", &self.username)
            .field(
                "password",
                &if self.password.is_empty() { "" } else { "***" },
            )
            .field("peer_info", &self.peer_info)
            .finish_non_exhaustive()
    }
}

impl KeyMethod2 {
    /// A fresh message with random key material; the client one carries a pre-master.
    pub fn new_random(
        from_client: bool,
        options: impl Into<String>,
        peer_info: impl Into<String>,
    ) -> Self {
        let pre_master = from_client.then(|| {
            let mut p = [0u8; PRE_MASTER_LEN];
            crate::random::fill(&mut p);
            p
        });
        let mut random1 = [0u8; RANDOM_LEN];
        let mut random2 = [0u8; RANDOM_LEN];
        crate::random::fill(&mut random1);
        crate::random::fill(&mut random2);
        KeyMethod2 {
            pre_master,
            random1,
            random2,
            options: options.into(),
            username: String::new(),
            password: String::new(),
            credentials_sent: false,
            peer_info: peer_info.into(),
        }
    }

    /// Append the wire form. Empty strings are written as `00 00`, as 2.6 does,
    /// except a sent login's ([`KeyMethod2::credentials_sent`]), whose empty
    /// user name or password is `00 01 00`, as 2.6's `write_string` writes it.
    /// A string is cut at its first NUL and at 65534 bytes, the most a u16
    /// length with the terminator can describe; our own strings never get near that.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&[0, 0, 0, 0, KEY_METHOD_2]);
        if let Some(p) = &self.pre_master {
            out.extend_from_slice(p);
        }
        out.extend_from_slice(&self.random1);
        out.extend_from_slice(&self.random2);
        put_string(out, &self.options, false);
        put_string(out, &self.username, self.credentials_sent);
        put_string(out, &self.password, self.credentials_sent);
        put_string(out, &self.peer_info, false);
    }

    /// Decode one message from the start of `bytes`. `from_client` says whether
    /// a pre-master is expected (i.e. we are the server). Returns the message and
    /// the number of bytes it used; anything after it (the first text control
    /// message, if the peer was quick) is left for the caller.
    pub fn decode(bytes: &[u8], from_client: bool) -> Result<(KeyMethod2, usize), KeyMethodError> {
        match Self::decode_inner(bytes, from_client) {
            Ok((_, used)) if used > MAX_MESSAGE_LEN => Err(KeyMethodError::TooLong),
            // A message that is still incomplete past the limit can never become valid.
            Err(KeyMethodError::Incomplete) if bytes.len() >= MAX_MESSAGE_LEN => {
                Err(KeyMethodError::TooLong)
            }
            other => other,
        }
    }

    fn decode_inner(
        bytes: &[u8],
        from_client: bool,
    ) -> Result<(KeyMethod2, usize), KeyMethodError> {
        let mut r = Reader(bytes);
        // The leading u32 is a legacy field that receivers ignore.
        r.take(4).map_err(|_| KeyMethodError::Incomplete)?;
        let method = r.u8().map_err(|_| KeyMethodError::Incomplete)?;
        if method & 0x0f != KEY_METHOD_2 {
            return Err(KeyMethodError::BadKeyMethod(method));
        }
        let pre_master = if from_client {
            Some(r.array().map_err(|_| KeyMethodError::Incomplete)?)
        } else {
            None
        };
        let random1 = r.array().map_err(|_| KeyMethodError::Incomplete)?;
        let random2 = r.array().map_err(|_| KeyMethodError::Incomplete)?;
        let (options, _) = get_string(&mut r, "options", MAX_OPTIONS_LEN)?;
        let (username, username_len) = get_string(&mut r, "username", MAX_CREDENTIAL_LEN)?;
        let (password, password_len) = get_string(&mut r, "password", MAX_CREDENTIAL_LEN)?;
        let (peer_info, _) = get_string(&mut r, "peer_info", MAX_MESSAGE_LEN)?;
        let used = bytes.len() - r.0.len();
        Ok((
            KeyMethod2 {
                pre_master,
                random1,
                random2,
                options,
                username,
                password,
                credentials_sent: username_len != 0 && password_len != 0,
                peer_info,
            },
            used,
        ))
    }
}

/// `with_nul`: an empty string is `00 01 00` (2.6's `write_string`), else `00 00`.
fn put_string(out: &mut Vec<u8>, s: &str, with_nul: bool) {
    let s = s.split('\0').next().unwrap_or_default().as_bytes();
    let s = s.get(..usize::from(u16::MAX) - 1).unwrap_or(s);
    if s.is_empty() && !with_nul {
        out.extend_from_slice(&[0, 0]);
        return;
    }
    // Fits: s.len() <= u16::MAX - 1 after the cut above.
    let len = u16::try_from(s.len() + 1).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s);
    out.push(0);
}

/// `u16 len | bytes incl. NUL`; both `00 00` and `00 01 00` mean "empty".
/// Returns the string and its length field (0 for an absent string).
fn get_string(
    r: &mut Reader<'_>,
    field: &'static str,
    max: usize,
) -> Result<(String, usize), KeyMethodError> {
    let len = usize::from(r.u16().map_err(|_| KeyMethodError::Incomplete)?);
    if len > max {
        return Err(KeyMethodError::StringTooLong { field, len, max });
    }
    if len == 0 {
        return Ok((String::new(), 0));
    }
    let raw = r.take(len).map_err(|_| KeyMethodError::Incomplete)?;
    let Some((0, text)) = raw.split_last() else {
        return Err(KeyMethodError::BadString { field });
    };
    if text.contains(&0) {
        return Err(KeyMethodError::BadString { field });
    }
    let text = String::from_utf8(text.to_vec()).map_err(|_| KeyMethodError::NotUtf8 { field })?;
    Ok((text, len))
}

/// How a ferrovpn client's `IV_GUI_VER` starts (then its version).
pub const FERROVPN_GUI_VER_PREFIX: &str = "ferrovpn_";

/// Peer-info variables a client announced (§6.3). Unknown variables are kept in `other`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// `IV_VER`.
    pub version: Option<String>,
    /// `IV_PLAT`.
    pub platform: Option<String>,
    /// `IV_PROTO` bits ([`iv_proto`]); 0 when absent or not a number.
    pub proto: u32,
    /// `IV_CIPHERS`, split on `:`, as sent (case not normalised).
    pub ciphers: Vec<String>,
    /// `IV_NCP`; 0 when absent or not a number.
    pub ncp: u32,
    /// `IV_MTU`: largest tun MTU the client accepts by push.
    pub mtu: Option<u32>,
    /// Every other `NAME=value` line, in order. A line without `=` has an empty value.
    pub other: Vec<(String, String)>,
}

impl PeerInfo {
    /// Whether the client announced itself as ferrovpn (`IV_GUI_VER`
    /// starting with [`FERROVPN_GUI_VER_PREFIX`]); stock OpenVPN and
    /// everything else do not.
    pub fn is_ferrovpn(&self) -> bool {
        self.other
            .iter()
            .any(|(name, value)| name == "IV_GUI_VER" && value.starts_with(FERROVPN_GUI_VER_PREFIX))
    }

    /// Parse `NAME=value` lines. Never fails: malformed lines are kept in `other`
    /// or ignored, because 2.6 ignores what it does not understand.
    pub fn parse(text: &str) -> Self {
        let mut p = PeerInfo::default();
        for line in text.split('\n') {
            let line = line.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let (name, value) = line.split_once('=').unwrap_or((line, ""));
            match name {
                "IV_VER" => p.version = Some(value.to_owned()),
                "IV_PLAT" => p.platform = Some(value.to_owned()),
                "IV_PROTO" => p.proto = value.trim().parse().unwrap_or(0),
                "IV_NCP" => p.ncp = value.trim().parse().unwrap_or(0),
                "IV_MTU" => p.mtu = value.trim().parse().ok(),
                "IV_CIPHERS" => {
                    p.ciphers = value
                        .split(':')
                        .filter(|c| !c.is_empty())
                        .map(str::to_owned)
                        .collect();
                }
                _ => p.other.push((name.to_owned(), value.to_owned())),
            }
        }
        p
    }

    /// The `NAME=value\n` text; known variables first, then `other` in order.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: &str| {
            s.push_str(k);
            s.push('=');
            s.push_str(v);
            s.push('\n');
        };
        if let Some(v) = &self.version {
            line("IV_VER", v);
        }
        if let Some(v) = &self.platform {
            line("IV_PLAT", v);
        }
        if let Some(m) = self.mtu {
            line("IV_MTU", &m.to_string());
        }
        if self.ncp != 0 {
            line("IV_NCP", &self.ncp.to_string());
        }
        if !self.ciphers.is_empty() {
            line("IV_CIPHERS", &self.ciphers.join(":"));
        }
        if self.proto != 0 {
            line("IV_PROTO", &self.proto.to_string());
        }
        for (k, v) in &self.other {
            line(k, v);
        }
        s
    }

    /// The value of a variable kept in `other` (the last one if repeated).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.other
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Understands P_DATA_V2 and a pushed `peer-id`.
    pub fn supports_data_v2(&self) -> bool {
        self.proto & iv_proto::DATA_V2 != 0
    }
    /// Wants the PUSH_REPLY without waiting for PUSH_REQUEST.
    pub fn request_push(&self) -> bool {
        self.proto & iv_proto::REQUEST_PUSH != 0
    }
    /// Can derive data keys with the TLS exporter (§7.2).
    pub fn tls_ekm(&self) -> bool {
        self.proto & iv_proto::TLS_KEY_EXPORT != 0
    }
    /// Understands `EXIT` and `protocol-flags`.
    pub fn cc_exit(&self) -> bool {
        self.proto & iv_proto::CC_EXIT_NOTIFY != 0
    }
    /// Supports dynamic tls-crypt (§4.4).
    pub fn dyn_tls_crypt(&self) -> bool {
        self.proto & iv_proto::DYN_TLS_CRYPT != 0
    }

    /// The data ciphers the client offered that we implement, in its order.
    /// `IV_NCP=2` without `IV_CIPHERS` implies the two GCM ciphers (§11.4).
    pub fn offered_ciphers(&self) -> Vec<Cipher> {
        if !self.ciphers.is_empty() {
            self.ciphers
                .iter()
                .filter_map(|n| Cipher::from_name(n))
                .collect()
        } else if self.ncp >= 2 {
            vec![Cipher::Aes256Gcm, Cipher::Aes128Gcm]
        } else {
            Vec::new()
        }
    }
}

/// Link-mtu value we advertise; 2.6 ignores it (§13), it only has to look sane.
const OCC_LINK_MTU: u32 = 1550;
const OCC_TUN_MTU: u32 = 1500;

fn options_string(cipher: Cipher, tls_auth_keydir: Option<u8>, auth: &str, role: &str) -> String {
    let mut s =
        format!("V4,dev-type tun,link-mtu {OCC_LINK_MTU},tun-mtu {OCC_TUN_MTU},proto UDPv4");
    if let Some(d) = tls_auth_keydir {
        s.push_str(&format!(",keydir {d}"));
    }
    s.push_str(&format!(
        ",cipher {},auth {auth},keysize {}",
        cipher.name(),
        cipher.key_len() * 8
    ));
    if tls_auth_keydir.is_some() {
        s.push_str(",tls-auth");
    }
    s.push_str(",key-method 2,");
    s.push_str(role);
    s
}

/// The OCC options string a server sends in its key-method-2 message (§13).
/// Keep `cipher` right: clients fall back to it when nothing is pushed.
/// `auth` is `[null-digest]` for AEAD ciphers.
pub fn server_options_string(cipher: Cipher, tls_auth_keydir: Option<u8>, auth: &str) -> String {
    options_string(cipher, tls_auth_keydir, auth, "tls-server")
}

/// The OCC options string a client sends (§13).
pub fn client_options_string(cipher: Cipher, tls_auth_keydir: Option<u8>, auth: &str) -> String {
    options_string(cipher, tls_auth_keydir, auth, "tls-client")
}

/// What 2.6 counts into the OCC options string's `link-mtu` besides the
/// cipher (mtu.c's `calc_options_string_link_mtu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OccFrame {
    /// `tun-mtu` (default 1500).
    pub tun_mtu: u32,
    /// `tun-mtu-extra` (default 0).
    pub tun_mtu_extra: u32,
    /// The digest `auth` names (`None`: `auth none` or an unknown name);
    /// counted with a CBC cipher only.
    pub auth: Option<crate::wrap::AuthDigest>,
    /// A compression framing with a 1-byte header (`comp-lzo` in any form,
    /// `compress`, `compress stub|lzo|lz4`; not the `-v2` ones).
    pub comp_v1: bool,
    /// `fragment` (its 4-byte header).
    pub fragment: bool,
    /// A TCP transport (the 2-byte length).
    pub tcp: bool,
    /// UDP through a SOCKS proxy (its 10-byte header).
    pub socks_udp: bool,
}

/// The `link-mtu` 2.6 writes into its OCC options string for `cipher` (the
/// one the string names), in TLS mode: the tun MTU plus the payload and
/// header overhead as 2.6's frame calculation counts it for "old clients"
/// (an AEAD cipher's IV and a block size counted although not sent;
/// block sizes of the CBC equivalent, as OpenVPN reports them: 16 for GCM,
/// 1 for ChaCha20). The peer only compares it (a mismatch is logged at
/// verb 7), so it has to match 2.6's number, not the real packet.
pub fn occ_link_mtu(cipher: Cipher, f: &OccFrame) -> u32 {
    const OPCODE: u32 = 1; // no peer-id in the OCC calculation
    const PACKET_ID: u32 = 4; // short form in TLS mode
    let mut payload =
        f.tun_mtu + f.tun_mtu_extra + u32::from(f.comp_v1) + if f.fragment { 4 } else { 0 };
    let mut header = OPCODE + if f.tcp { 2 } else { 0 } + if f.socks_udp { 10 } else { 0 };
    if cipher.is_aead() {
        let block = match cipher {
            Cipher::ChaCha20Poly1305 => 1,
            _ => 16,
        };
        // packet id, tag, IV, block.
        header += PACKET_ID + 16 + 12 + block;
    } else {
        // CBC: the packet id is inside the encrypted payload; block, IV and HMAC.
        payload += PACKET_ID;
        header += 16 + 16 + f.auth.map_or(0, |d| d.len() as u32);
    }
    payload + header
}

/// `options` (as [`server_options_string`] or [`client_options_string`]
/// make it) with 2.6's `link-mtu` and `tun-mtu` values, and `mtu-dynamic`
/// after `proto` when `fragment` is on (2.6 writes it after `comp-lzo`, so
/// add this before the compression entry).
pub fn with_occ_frame(options: &str, cipher: Cipher, f: &OccFrame) -> String {
    let old = format!(",link-mtu {OCC_LINK_MTU},tun-mtu {OCC_TUN_MTU},");
    let new = format!(
        ",link-mtu {},tun-mtu {},",
        occ_link_mtu(cipher, f),
        f.tun_mtu
    );
    let mut s = options.replacen(&old, &new, 1);
    if f.fragment {
        s = s.replacen(",proto UDPv4", ",proto UDPv4,mtu-dynamic", 1);
    }
    s
}

/// `options` for a TCP transport: `proto` names the TCP end (`TCPv4_CLIENT`
/// or `TCPv4_SERVER`, v4 even over IPv6, as 2.6) and `link-mtu` counts the
/// 2-byte length in front of every packet.
pub fn occ_over_tcp(options: &str, end: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    for item in options.split(',') {
        match item
            .strip_prefix("link-mtu ")
            .and_then(|v| v.parse::<u32>().ok())
        {
            Some(v) => out.push(format!("link-mtu {}", v + 2)),
            None if item == "proto UDPv4" => out.push(format!("proto {end}")),
            None => out.push(item.to_string()),
        }
    }
    out.join(",")
}

/// The inverse of [`occ_over_tcp`]: `proto UDPv4` and 2 bytes less
/// `link-mtu` (a server with UDP and TCP listeners whose base string is TCP).
pub fn occ_over_udp(options: &str, tcp_end: &str) -> String {
    let tcp_proto = format!("proto {tcp_end}");
    if !options.split(',').any(|i| i == tcp_proto) {
        return options.to_string();
    }
    options
        .split(',')
        .map(|item| {
            match item
                .strip_prefix("link-mtu ")
                .and_then(|v| v.parse::<u32>().ok())
            {
                Some(v) => format!("link-mtu {}", v.saturating_sub(2)),
                None if item == tcp_proto => "proto UDPv4".to_string(),
                None => item.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The `cipher X` entry of a peer's OCC options string, if any (fallback NCP, §11.4).
pub fn options_string_cipher(options: &str) -> Option<&str> {
    options
        .split(',')
        .find_map(|o| o.strip_prefix("cipher "))
        .map(str::trim)
}

/// Whether a peer's OCC options string announces compression framing (§10.5).
pub fn options_string_compression(options: &str) -> bool {
    options
        .split(',')
        .any(|o| o == "comp-lzo" || o.starts_with("comp-lzo ") || o.starts_with("compress"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_ferrovpn_client_is_told_by_its_gui_version() {
        assert!(PeerInfo::parse("IV_VER=2.6.14\nIV_GUI_VER=ferrovpn_0.1.0\n").is_ferrovpn());
        assert!(!PeerInfo::parse("IV_VER=2.6.14\nIV_PLAT=linux\nIV_PROTO=990\n").is_ferrovpn());
        assert!(!PeerInfo::parse("IV_GUI_VER=OpenVPN_GUI_11\n").is_ferrovpn());
        assert!(!PeerInfo::parse("IV_SSO=ferrovpn_x\n").is_ferrovpn());
    }

    use super::*;

    /// The `link-mtu` values of stock 2.6.3's OCC strings (verb 7, "Local
    /// Options String"), two stock peers in TLS mode over UDP.
    #[test]
    fn occ_link_mtu_matches_stock_2_6() {
        use crate::wrap::AuthDigest;
        let f = |tun_mtu, auth, comp_v1, fragment| OccFrame {
            tun_mtu,
            tun_mtu_extra: 0,
            auth,
            comp_v1,
            fragment,
            tcp: false,
            socks_udp: false,
        };
        let sha1 = Some(AuthDigest::Sha1);
        let sha256 = Some(AuthDigest::Sha256);
        for (cipher, frame, stock) in [
            (Cipher::Aes256Gcm, f(1500, sha1, false, false), 1549),
            (
                Cipher::Aes256Gcm,
                f(1500, Some(AuthDigest::Sha512), false, false),
                1549,
            ),
            (Cipher::Aes256Gcm, f(1500, sha1, false, true), 1553),
            (Cipher::Aes256Gcm, f(1500, sha1, true, false), 1550),
            (Cipher::Aes256Gcm, f(1500, sha1, true, true), 1554),
            (Cipher::Aes128Gcm, f(1400, sha1, false, false), 1449),
            (Cipher::ChaCha20Poly1305, f(1500, sha1, false, false), 1534),
            (Cipher::Aes256Cbc, f(1500, sha256, false, false), 1569),
            (Cipher::Aes256Cbc, f(1500, sha256, false, true), 1573),
        ] {
            assert_eq!(occ_link_mtu(cipher, &frame), stock, "{cipher:?} {frame:?}");
        }
        let tcp = OccFrame {
            tcp: true,
            ..f(1500, sha1, false, false)
        };
        assert_eq!(occ_link_mtu(Cipher::Aes256Gcm, &tcp), 1551);
        let extra = OccFrame {
            tun_mtu_extra: 32,
            ..f(1500, sha1, false, false)
        };
        assert_eq!(occ_link_mtu(Cipher::Aes256Gcm, &extra), 1581);
        let udp = server_options_string(Cipher::Aes256Gcm, None, "[null-digest]");
        let udp = with_occ_frame(&udp, Cipher::Aes256Gcm, &f(1500, sha1, false, false));
        assert_eq!(
            occ_over_tcp(&udp, "TCPv4_SERVER"),
            "V4,dev-type tun,link-mtu 1551,tun-mtu 1500,proto TCPv4_SERVER,cipher AES-256-GCM,auth [null-digest],keysize 256,key-method 2,tls-server"
        );
        let tcp = occ_over_tcp(&udp, "TCPv4_SERVER");
        assert_eq!(occ_over_udp(&tcp, "TCPv4_SERVER"), udp);
        assert_eq!(occ_over_udp(&udp, "TCPv4_SERVER"), udp);
    }

    #[test]
    fn occ_frame_rewrites_mtus_and_adds_mtu_dynamic() {
        let f = OccFrame {
            tun_mtu: 1500,
            tun_mtu_extra: 0,
            auth: None,
            comp_v1: false,
            fragment: true,
            tcp: false,
            socks_udp: false,
        };
        let s = server_options_string(Cipher::Aes256Gcm, None, "[null-digest]");
        assert_eq!(
            with_occ_frame(&s, Cipher::Aes256Gcm, &f),
            "V4,dev-type tun,link-mtu 1553,tun-mtu 1500,proto UDPv4,mtu-dynamic,cipher AES-256-GCM,auth [null-digest],keysize 256,key-method 2,tls-server"
        );
    }

    fn sample(from_client: bool) -> KeyMethod2 {
        let mut k = KeyMethod2::new_random(from_client, "V4,x", "IV_VER=1\nIV_PROTO=990\n");
        k.username = "u".into();
        k
    }

    #[test]
    fn roundtrip_and_prefixes_are_incomplete() {
        for from_client in [false, true] {
            let k = sample(from_client);
            let mut w = Vec::new();
            k.encode(&mut w);
            w.extend_from_slice(b"PUSH_REQUEST\0");
            let (d, used) = KeyMethod2::decode(&w, from_client).unwrap();
            assert_eq!(d, k);
            assert_eq!(&w[used..], b"PUSH_REQUEST\0");
            for n in 0..used {
                assert_eq!(
                    KeyMethod2::decode(&w[..n], from_client),
                    Err(KeyMethodError::Incomplete)
                );
            }
        }
    }

    #[test]
    fn empty_string_forms() {
        let mut w = vec![0, 0, 0, 0, 2];
        w.extend_from_slice(&[7; 64]);
        w.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 0, 0, 0]);
        let (k, used) = KeyMethod2::decode(&w, false).unwrap();
        assert_eq!(used, w.len());
        assert!(k.options.is_empty() && k.password.is_empty());
        // Re-encoding normalises to 2.6's `00 00`.
        let mut e = Vec::new();
        k.encode(&mut e);
        assert_eq!(e.len(), w.len() - 2);
    }

    /// 2.6's two forms of a login: written with `write_string` (`00 01 00`
    /// for an empty field) when the client has `auth-user-pass`, `00 00`
    /// twice without; a server reads it as absent when either field is
    /// `00 00`, and clears both then.
    #[test]
    fn login_sent_or_absent() {
        let mut k = KeyMethod2::new_random(true, "V4", "");
        k.credentials_sent = true;
        let mut w = Vec::new();
        k.encode(&mut w);
        let mut absent = KeyMethod2::new_random(true, "V4", "");
        absent.pre_master = k.pre_master;
        absent.random1 = k.random1;
        absent.random2 = k.random2;
        let mut a = Vec::new();
        absent.encode(&mut a);
        // Empty user name and password: `00 01 00` each, not `00 00`.
        assert_eq!(w.len(), a.len() + 2);
        let (d, _) = KeyMethod2::decode(&w, true).unwrap();
        assert!(d.credentials_sent && d.username.is_empty() && d.password.is_empty());
        assert_eq!(d, k);
        let (d, _) = KeyMethod2::decode(&a, true).unwrap();
        assert!(!d.credentials_sent);
        assert_eq!(d, absent);
        // A user name without a password field is no login either.
        let mut half = KeyMethod2::new_random(false, "V4", "");
        half.username = "u".into();
        let mut h = Vec::new();
        half.encode(&mut h);
        let (d, _) = KeyMethod2::decode(&h, false).unwrap();
        assert!(!d.credentials_sent && d.username == "u");
    }

    #[test]
    fn rejects() {
        let mut w = vec![0, 0, 0, 0, 1];
        w.extend_from_slice(&[0; 80]);
        assert_eq!(
            KeyMethod2::decode(&w, false),
            Err(KeyMethodError::BadKeyMethod(1))
        );
        w[4] = 0x12; // high bits are ignored by 2.6
        assert!(KeyMethod2::decode(&w, false).is_ok());

        let mut w = vec![0, 0, 0, 0, 2];
        w.extend_from_slice(&[0; 64]);
        w.extend_from_slice(&[0x02, 0x01]);
        assert!(matches!(
            KeyMethod2::decode(&w, false),
            Err(KeyMethodError::StringTooLong {
                field: "options",
                ..
            })
        ));
        let mut bad = w[..69].to_vec();
        bad.extend_from_slice(&[0, 2, b'a', b'b', 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            KeyMethod2::decode(&bad, false),
            Err(KeyMethodError::BadString { field: "options" })
        );
        let mut bad = w[..69].to_vec();
        bad.extend_from_slice(&[0, 2, 0xff, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            KeyMethod2::decode(&bad, false),
            Err(KeyMethodError::NotUtf8 { field: "options" })
        );
        // Never completes within the limit.
        let mut big = w[..69].to_vec();
        big.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x07, 0xff]);
        big.resize(MAX_MESSAGE_LEN, b'a');
        assert_eq!(
            KeyMethod2::decode(&big, false),
            Err(KeyMethodError::TooLong)
        );
    }

    #[test]
    fn peer_info_parse() {
        let p = PeerInfo::parse(
            "IV_VER=2.6.14\nIV_PLAT=linux\nIV_TCPNL=1\nIV_MTU=1600\nIV_NCP=2\n\
             IV_CIPHERS=AES-256-GCM:AES-128-GCM:CHACHA20-POLY1305\nIV_PROTO=990\nIV_LZO_STUB=1\r\nJUNK\n",
        );
        assert_eq!(p.version.as_deref(), Some("2.6.14"));
        assert_eq!(p.platform.as_deref(), Some("linux"));
        assert_eq!(p.mtu, Some(1600));
        assert_eq!(p.ncp, 2);
        assert_eq!(p.proto, 990);
        assert_eq!(p.ciphers.len(), 3);
        assert_eq!(p.get("IV_LZO_STUB"), Some("1"));
        assert_eq!(p.get("JUNK"), Some(""));
        assert!(p.supports_data_v2() && p.request_push() && p.tls_ekm() && p.cc_exit());
        assert_eq!(
            p.offered_ciphers(),
            vec![
                Cipher::Aes256Gcm,
                Cipher::Aes128Gcm,
                Cipher::ChaCha20Poly1305
            ]
        );
        assert_eq!(PeerInfo::parse(&p.to_text()), p);
        let none = PeerInfo::parse("IV_PROTO=99999999999999\n");
        assert_eq!(none.proto, 0);
        assert!(!none.supports_data_v2());
    }

    #[test]
    fn options_strings() {
        assert_eq!(
            server_options_string(Cipher::Aes256Gcm, None, "[null-digest]"),
            "V4,dev-type tun,link-mtu 1550,tun-mtu 1500,proto UDPv4,cipher AES-256-GCM,auth [null-digest],keysize 256,key-method 2,tls-server"
        );
        assert_eq!(
            client_options_string(Cipher::Aes128Gcm, Some(1), "[null-digest]"),
            "V4,dev-type tun,link-mtu 1550,tun-mtu 1500,proto UDPv4,keydir 1,cipher AES-128-GCM,auth [null-digest],keysize 128,tls-auth,key-method 2,tls-client"
        );
        let s = server_options_string(Cipher::ChaCha20Poly1305, None, "[null-digest]");
        assert_eq!(options_string_cipher(&s), Some("CHACHA20-POLY1305"));
        assert!(!options_string_compression(&s));
        assert!(options_string_compression(
            "V4,dev-type tun,comp-lzo,tls-client"
        ));
    }
}
