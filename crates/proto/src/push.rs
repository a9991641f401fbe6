//! Text control messages (docs/protocol.md §11): splitting the TLS plaintext into
//! NUL-terminated messages, PUSH_REPLY parse/build and the other commands.
//!
//! Everything here reads text that came from the peer: parsing never panics
//! and rejects what would be ambiguous (bad addresses, numbers that overflow,
//! non-printable bytes) instead of guessing.

use std::net::Ipv4Addr;

use thiserror::Error;

/// Client asks for its options.
pub const PUSH_REQUEST: &str = "PUSH_REQUEST";
/// Server's option list, `PUSH_REPLY[,opt,...]`.
pub const PUSH_REPLY: &str = "PUSH_REPLY";
/// Authentication rejected, `AUTH_FAILED[,reason]`.
pub const AUTH_FAILED: &str = "AUTH_FAILED";
/// Peer is shutting down (cc-exit).
pub const EXIT: &str = "EXIT";
/// Server asks the client to reconnect, `RESTART[,msg]`.
pub const RESTART: &str = "RESTART";
/// Server asks the client to disconnect for good, `HALT[,msg]`.
pub const HALT: &str = "HALT";
/// Option marking a split reply: 2 = more parts follow, 1 = last part.
pub const PUSH_CONTINUATION: &str = "push-continuation";
/// 2.6 servers split replies at about this many bytes (§11.2).
pub const PUSH_SPLIT_LEN: usize = 1024;
/// 2.6's `PUSH_BUNDLE_SIZE`: the buffer one PUSH_REPLY message is built in.
pub const PUSH_BUNDLE_SIZE: usize = 1024;
/// Room 2.6 keeps free in that buffer "for possible trailing ifconfig and
/// push-continuation" (`extra` in push.c `send_push_reply`).
const PUSH_BUNDLE_RESERVE: usize = 84;

/// Why a control message or push option was rejected.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PushError {
    /// The text does not start with `PUSH_REPLY` followed by `,` or its end.
    #[error("not a PUSH_REPLY message")]
    NotPushReply,
    /// The message bytes are not valid UTF-8.
    #[error("control message is not valid UTF-8")]
    NotUtf8,
    /// The message contains control characters (other than a trailing CR/LF).
    #[error("control message contains non-printable characters")]
    NonPrintable,
    /// An option lacks a required argument.
    #[error("option '{0}' is missing an argument")]
    MissingArgument(String),
    /// An option has more arguments than it takes.
    #[error("option '{0}' has too many arguments")]
    TooManyArguments(String),
    /// An argument that must be an IPv4 address is not one.
    #[error("option '{option}': '{value}' is not an IPv4 address")]
    BadAddress { option: String, value: String },
    /// An argument that must be a number is not one or is out of range.
    #[error("option '{option}': '{value}' is not a valid number")]
    BadNumber { option: String, value: String },
    /// A locally built option would not survive the text form (comma,
    /// whitespace inside an argument, empty name or control characters).
    #[error("option '{0}' cannot be encoded")]
    Unencodable(String),
    /// An option does not fit in one PUSH_REPLY message (2.6: "--push
    /// option is too long").
    #[error("push option too long for one PUSH_REPLY message: '{0}'")]
    OptionTooLong(String),
}

/// One pushed option, parsed where we use it and kept verbatim otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOption {
    /// `ifconfig local netmask` (topology subnet) or `ifconfig local remote` (net30/p2p).
    Ifconfig {
        local: Ipv4Addr,
        netmask_or_remote: Ipv4Addr,
    },
    /// `route network [netmask [gateway [metric]]]`; a missing netmask means a
    /// host route, a missing gateway (or `vpn_gateway`) means the pushed
    /// route-gateway, a missing metric (or `default`) means `route-metric`'s.
    Route {
        network: Ipv4Addr,
        netmask: Ipv4Addr,
        gateway: Option<Ipv4Addr>,
        metric: Option<u32>,
    },
    /// `route-gateway addr`.
    RouteGateway(Ipv4Addr),
    /// `topology subnet|net30|p2p`.
    Topology(String),
    /// `ping n` (seconds).
    Ping(u32),
    /// `ping-restart n` (seconds).
    PingRestart(u32),
    /// `peer-id n` (24 bits).
    PeerId(u32),
    /// `cipher NAME`.
    Cipher(String),
    /// `protocol-flags word...` (§11.3).
    ProtocolFlags(Vec<String>),
    /// `key-derivation tls-ekm`.
    KeyDerivation(String),
    /// `tun-mtu n`.
    TunMtu(u32),
    /// `redirect-gateway [flags...]`.
    RedirectGateway(Vec<String>),
    /// `dhcp-option TYPE [VALUE]`; the value is empty when absent (e.g. `DISABLE-NBT`).
    DhcpOption(String, String),
    /// Anything else: name and space-separated arguments.
    Other(String, Vec<String>),
}

fn need(name: &str, args: &[&str], min: usize, max: usize) -> Result<(), PushError> {
    if args.len() < min {
        return Err(PushError::MissingArgument(name.to_owned()));
    }
    if args.len() > max {
        return Err(PushError::TooManyArguments(name.to_owned()));
    }
    Ok(())
}

fn arg<'a>(name: &str, args: &[&'a str], i: usize) -> Result<&'a str, PushError> {
    args.get(i)
        .copied()
        .ok_or_else(|| PushError::MissingArgument(name.to_owned()))
}

fn ip(name: &str, v: &str) -> Result<Ipv4Addr, PushError> {
    v.parse().map_err(|_| PushError::BadAddress {
        option: name.to_owned(),
        value: v.to_owned(),
    })
}

/// Digits and dots only: meant as an IPv4 address, so it must parse as one.
fn looks_numeric(v: &str) -> bool {
    !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

fn num(name: &str, v: &str) -> Result<u32, PushError> {
    // `parse` alone accepts a leading '+', which OpenVPN's number check does not.
    if !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PushError::BadNumber {
            option: name.to_owned(),
            value: v.to_owned(),
        });
    }
    v.parse().map_err(|_| PushError::BadNumber {
        option: name.to_owned(),
        value: v.to_owned(),
    })
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

impl PushOption {
    /// Parse one option (the text between two commas).
    pub fn parse(text: &str) -> Result<PushOption, PushError> {
        if text.chars().any(char::is_control) {
            return Err(PushError::NonPrintable);
        }
        let mut words = text.split_ascii_whitespace();
        let Some(name) = words.next() else {
            return Err(PushError::MissingArgument(String::new()));
        };
        let args: Vec<&str> = words.collect();
        let a = |i| arg(name, &args, i);
        Ok(match name {
            "ifconfig" => {
                need(name, &args, 2, 2)?;
                PushOption::Ifconfig {
                    local: ip(name, a(0)?)?,
                    netmask_or_remote: ip(name, a(1)?)?,
                }
            }
            "route" => {
                need(name, &args, 1, 4)?;
                let net = a(0)?;
                let gw = args.get(2).copied();
                let plain_gw = matches!(gw, None | Some("vpn_gateway" | "default"));
                let metric = match args.get(3).copied() {
                    None | Some("default") => None,
                    Some(m) => Some(num(name, m)?),
                };
                // Keywords (remote_host, net_gateway) and host names stay
                // verbatim so a consumer that only knows plain VPN routes
                // cannot misroute; a malformed dotted quad is an error.
                if !looks_numeric(net) || !(plain_gw || gw.is_some_and(looks_numeric)) {
                    for v in [Some(net), args.get(1).copied(), gw].into_iter().flatten() {
                        if looks_numeric(v) {
                            ip(name, v)?;
                        }
                    }
                    return Ok(PushOption::Other(name.to_owned(), strings(&args)));
                }
                let netmask = match args.get(1) {
                    Some(&"default") | None => Ipv4Addr::BROADCAST,
                    Some(m) => ip(name, m)?,
                };
                PushOption::Route {
                    network: ip(name, net)?,
                    netmask,
                    gateway: match gw {
                        Some(g) if looks_numeric(g) => Some(ip(name, g)?),
                        _ => None,
                    },
                    metric,
                }
            }
            "route-gateway" => {
                need(name, &args, 1, 1)?;
                match a(0)? {
                    "dhcp" => PushOption::Other(name.to_owned(), strings(&args)),
                    g => PushOption::RouteGateway(ip(name, g)?),
                }
            }
            "topology" => {
                need(name, &args, 1, 1)?;
                PushOption::Topology(a(0)?.to_owned())
            }
            "ping" => {
                need(name, &args, 1, 1)?;
                PushOption::Ping(num(name, a(0)?)?)
            }
            "ping-restart" => {
                need(name, &args, 1, 1)?;
                PushOption::PingRestart(num(name, a(0)?)?)
            }
            "peer-id" => {
                need(name, &args, 1, 1)?;
                let v = a(0)?;
                let id = num(name, v)?;
                if id > 0x00FF_FFFF {
                    return Err(PushError::BadNumber {
                        option: name.to_owned(),
                        value: v.to_owned(),
                    });
                }
                PushOption::PeerId(id)
            }
            "cipher" => {
                need(name, &args, 1, 1)?;
                PushOption::Cipher(a(0)?.to_owned())
            }
            "protocol-flags" => {
                need(name, &args, 1, usize::MAX)?;
                PushOption::ProtocolFlags(strings(&args))
            }
            "key-derivation" => {
                need(name, &args, 1, 1)?;
                PushOption::KeyDerivation(a(0)?.to_owned())
            }
            "tun-mtu" => {
                need(name, &args, 1, 1)?;
                PushOption::TunMtu(num(name, a(0)?)?)
            }
            "redirect-gateway" => PushOption::RedirectGateway(strings(&args)),
            "dhcp-option" => {
                need(name, &args, 1, 2)?;
                PushOption::DhcpOption(
                    a(0)?.to_owned(),
                    args.get(1).copied().unwrap_or_default().to_owned(),
                )
            }
            _ => PushOption::Other(name.to_owned(), strings(&args)),
        })
    }

    /// The option's name as it appears on the wire.
    pub fn name(&self) -> &str {
        match self {
            PushOption::Ifconfig { .. } => "ifconfig",
            PushOption::Route { .. } => "route",
            PushOption::RouteGateway(_) => "route-gateway",
            PushOption::Topology(_) => "topology",
            PushOption::Ping(_) => "ping",
            PushOption::PingRestart(_) => "ping-restart",
            PushOption::PeerId(_) => "peer-id",
            PushOption::Cipher(_) => "cipher",
            PushOption::ProtocolFlags(_) => "protocol-flags",
            PushOption::KeyDerivation(_) => "key-derivation",
            PushOption::TunMtu(_) => "tun-mtu",
            PushOption::RedirectGateway(_) => "redirect-gateway",
            PushOption::DhcpOption(..) => "dhcp-option",
            PushOption::Other(n, _) => n,
        }
    }

    /// The option's arguments as they appear on the wire.
    pub fn args(&self) -> Vec<String> {
        match self {
            PushOption::Ifconfig {
                local,
                netmask_or_remote,
            } => vec![local.to_string(), netmask_or_remote.to_string()],
            PushOption::Route {
                network,
                netmask,
                gateway,
                metric,
            } => {
                let mut v = vec![network.to_string(), netmask.to_string()];
                match (gateway, metric) {
                    (Some(g), _) => v.push(g.to_string()),
                    (None, Some(_)) => v.push("vpn_gateway".into()),
                    (None, None) => {}
                }
                v.extend(metric.map(|m| m.to_string()));
                v
            }
            PushOption::RouteGateway(g) => vec![g.to_string()],
            PushOption::Ping(n)
            | PushOption::PingRestart(n)
            | PushOption::PeerId(n)
            | PushOption::TunMtu(n) => vec![n.to_string()],
            PushOption::Topology(s) | PushOption::Cipher(s) | PushOption::KeyDerivation(s) => {
                vec![s.clone()]
            }
            PushOption::ProtocolFlags(v)
            | PushOption::RedirectGateway(v)
            | PushOption::Other(_, v) => v.clone(),
            PushOption::DhcpOption(k, v) if v.is_empty() => vec![k.clone()],
            PushOption::DhcpOption(k, v) => vec![k.clone(), v.clone()],
        }
    }

    /// Check that the text form parses back to a single, equal option:
    /// no commas, no whitespace inside arguments, no control characters.
    pub fn validate(&self) -> Result<(), PushError> {
        let bad = |s: &str| {
            s.is_empty()
                || s.contains(',')
                || s.chars().any(|c| c.is_whitespace() || c.is_control())
        };
        let args = self.args();
        if bad(self.name()) || args.iter().any(|a| bad(a)) {
            return Err(PushError::Unencodable(self.name().to_owned()));
        }
        Ok(())
    }

    /// `name arg1 arg2 ...`. Options built locally should pass [`PushOption::validate`];
    /// if one does not, its commas and control characters become `_`, so it can
    /// never turn into two options on the peer's side.
    pub fn to_text(&self) -> String {
        let mut s = self.name().to_owned();
        for a in self.args() {
            s.push(' ');
            s.push_str(&a);
        }
        s.chars()
            .map(|c| if c == ',' || c.is_control() { '_' } else { c })
            .collect()
    }
}

/// A parsed `PUSH_REPLY` (one message; see [`PushReply::extend`] for split replies).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushReply {
    /// The options in the order the server sent them, without `push-continuation`.
    pub options: Vec<PushOption>,
    /// `push-continuation` value of this part: `Some(2)` = more parts follow,
    /// `Some(1)` = last part of a split reply, `None` = not split.
    pub continuation: Option<u32>,
}

impl PushReply {
    /// A single-part reply.
    pub fn new(options: Vec<PushOption>) -> Self {
        PushReply {
            options,
            continuation: None,
        }
    }

    /// Parse `PUSH_REPLY` or `PUSH_REPLY,opt,...`. A trailing CR/LF or NUL is tolerated;
    /// empty items between commas are skipped, as 2.6 does.
    pub fn parse(text: &str) -> Result<PushReply, PushError> {
        let text = text.trim_end_matches(['\0', '\r', '\n']);
        let rest = text
            .strip_prefix(PUSH_REPLY)
            .ok_or(PushError::NotPushReply)?;
        if rest.is_empty() {
            return Ok(PushReply::default());
        }
        let rest = rest.strip_prefix(',').ok_or(PushError::NotPushReply)?;
        if rest.chars().any(char::is_control) {
            return Err(PushError::NonPrintable);
        }
        let mut reply = PushReply::default();
        for item in rest.split(',') {
            if item.trim().is_empty() {
                continue;
            }
            match PushOption::parse(item)? {
                PushOption::Other(name, args) if name == PUSH_CONTINUATION => {
                    let v = match args.as_slice() {
                        [v] => v,
                        [] => return Err(PushError::MissingArgument(name)),
                        _ => return Err(PushError::TooManyArguments(name)),
                    };
                    let n = num(&name, v)?;
                    if !(1..=2).contains(&n) {
                        return Err(PushError::BadNumber {
                            option: name,
                            value: v.clone(),
                        });
                    }
                    reply.continuation = Some(n);
                }
                o => reply.options.push(o),
            }
        }
        Ok(reply)
    }

    /// Parse raw message bytes (without the NUL), rejecting non-UTF-8.
    pub fn parse_bytes(bytes: &[u8]) -> Result<PushReply, PushError> {
        PushReply::parse(std::str::from_utf8(bytes).map_err(|_| PushError::NotUtf8)?)
    }

    /// Whether more parts of a split reply are still to come.
    pub fn expects_more(&self) -> bool {
        self.continuation == Some(2)
    }

    /// Append the next part of a split reply; its continuation flag becomes ours.
    pub fn extend(&mut self, next: PushReply) {
        self.options.extend(next.options);
        self.continuation = next.continuation;
    }

    /// `PUSH_REPLY,opt1,opt2` with no spaces after commas, including
    /// `push-continuation` when set. See [`PushOption::to_text`] about invalid options.
    pub fn to_text(&self) -> String {
        let mut s = String::from(PUSH_REPLY);
        for o in &self.options {
            s.push(',');
            s.push_str(&o.to_text());
        }
        if let Some(n) = self.continuation {
            s.push_str(&format!(",{PUSH_CONTINUATION} {n}"));
        }
        s
    }

    /// Like [`PushReply::to_text`] but refuses options that would not round-trip.
    pub fn to_text_checked(&self) -> Result<String, PushError> {
        for o in &self.options {
            o.validate()?;
        }
        Ok(self.to_text())
    }

    /// Split into messages of at most about `max_len` bytes (2.6 uses
    /// [`PUSH_SPLIT_LEN`]), each but the last ending `push-continuation 2`, the
    /// last `push-continuation 1`; a reply that fits is one message without it.
    /// An option longer than `max_len` gets a message of its own.
    pub fn to_texts(&self, max_len: usize) -> Vec<String> {
        let whole = PushReply::new(self.options.clone()).to_text();
        if whole.len() <= max_len {
            return vec![whole];
        }
        // Room for ",push-continuation N".
        let budget = max_len.saturating_sub(PUSH_CONTINUATION.len() + 3);
        let mut out = Vec::new();
        let mut cur = String::from(PUSH_REPLY);
        for o in &self.options {
            let t = o.to_text();
            if cur.len() > PUSH_REPLY.len() && cur.len() + 1 + t.len() > budget {
                cur.push_str(&format!(",{PUSH_CONTINUATION} 2"));
                out.push(std::mem::replace(&mut cur, String::from(PUSH_REPLY)));
            }
            cur.push(',');
            cur.push_str(&t);
        }
        cur.push_str(&format!(",{PUSH_CONTINUATION} 1"));
        out.push(cur);
        out
    }
}

/// Cut the text of a whole reply (`PUSH_REPLY,opt,...`, options in the
/// order they are to be sent) into the messages a 2.6 server sends for it
/// (push.c `send_push_reply`/`send_push_options`): options are appended
/// while the message stays under [`PUSH_BUNDLE_SIZE`] less 84 bytes; when
/// the next one would not fit, the message is closed with
/// `,push-continuation 2` and a new `PUSH_REPLY` begins; after a split the
/// last message ends `,push-continuation 1`. A reply that fits is one
/// message without it, and no options give a bare `PUSH_REPLY`. An option
/// that does not fit even an empty message is refused (2.6 then sends no
/// reply at all).
pub fn split_push_reply(text: &str) -> Result<Vec<String>, PushError> {
    let options = command(text, PUSH_REPLY).ok_or(PushError::NotPushReply)?;
    let safe_cap = PUSH_BUNDLE_SIZE - PUSH_BUNDLE_RESERVE;
    let mut messages = Vec::new();
    let mut current = String::from(PUSH_REPLY);
    for option in options.split(',').filter(|o| !o.is_empty()) {
        if current.len() + option.len() >= safe_cap {
            current.push_str(&format!(",{PUSH_CONTINUATION} 2"));
            messages.push(std::mem::replace(&mut current, String::from(PUSH_REPLY)));
        }
        if current.len() + option.len() >= safe_cap {
            return Err(PushError::OptionTooLong(option.to_owned()));
        }
        current.push(',');
        current.push_str(option);
    }
    if !messages.is_empty() {
        current.push_str(&format!(",{PUSH_CONTINUATION} 1"));
    }
    messages.push(current);
    Ok(messages)
}

/// What a `pull-filter` line does with a pushed option it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullFilterAction {
    /// Keep it (and stop looking at later filters).
    Accept,
    /// Drop it.
    Ignore,
    /// Drop the whole reply and restart the connection.
    Reject,
}

/// `pull-filter accept|ignore|reject "TEXT"` (client): the first filter,
/// in config order, whose TEXT starts the option's text decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullFilter {
    pub action: PullFilterAction,
    pub prefix: String,
}

/// What the pull filters made of one `PUSH_REPLY` message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filtered {
    /// The message without the ignored options, and those options.
    Kept { text: String, ignored: Vec<String> },
    /// This option matched a `reject` filter.
    Rejected(String),
}

/// Apply `filters` to each option of the `PUSH_REPLY` message `text`, as
/// 2.6 does (options.c `apply_pull_filter`): on the option's text with its
/// leading whitespace skipped, before it is parsed, byte-wise prefix match,
/// first match decides, no match keeps the option. Every option goes
/// through the filters (`cipher`, `peer-id` and `push-continuation` too).
/// Other messages are returned unchanged.
pub fn apply_pull_filters(text: &str, filters: &[PullFilter]) -> Filtered {
    let unchanged = || Filtered::Kept {
        text: text.to_owned(),
        ignored: Vec::new(),
    };
    let Some(rest) = command(text, PUSH_REPLY).filter(|r| !r.is_empty()) else {
        return unchanged();
    };
    let mut kept = String::from(PUSH_REPLY);
    let mut ignored = Vec::new();
    for item in rest.split(',') {
        let option = item.trim_start();
        let action = filters
            .iter()
            .find(|f| option.as_bytes().starts_with(f.prefix.as_bytes()))
            .map(|f| f.action);
        match action {
            Some(PullFilterAction::Reject) => return Filtered::Rejected(option.to_owned()),
            Some(PullFilterAction::Ignore) if !option.is_empty() => ignored.push(option.to_owned()),
            _ => {
                kept.push(',');
                kept.push_str(item);
            }
        }
    }
    Filtered::Kept {
        text: kept,
        ignored,
    }
}

/// A text control message (§11.1, §11.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlMessage {
    PushRequest,
    PushReply(PushReply),
    /// Reason text after `AUTH_FAILED,` (empty when none).
    AuthFailed(String),
    Exit,
    /// Text after `RESTART,` (may start with `[flags]`), empty when none.
    Restart(String),
    /// Text after `HALT,`, empty when none.
    Halt(String),
    /// A `PUSH_REPLY` whose options did not parse.
    BadPushReply(PushError),
    /// Anything else (AUTH_PENDING, INFO, CR_RESPONSE, ...), verbatim.
    Other(String),
}

/// `text` is `cmd` alone or `cmd,rest`; returns `rest` (empty for `cmd` alone).
fn command<'a>(text: &'a str, cmd: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(cmd)?;
    if rest.is_empty() {
        Some("")
    } else {
        rest.strip_prefix(',')
    }
}

impl ControlMessage {
    /// Classify one message (without its NUL; a trailing CR/LF is ignored).
    pub fn parse(text: &str) -> ControlMessage {
        let text = text.trim_end_matches(['\0', '\r', '\n']);
        if text == PUSH_REQUEST {
            return ControlMessage::PushRequest;
        }
        if command(text, PUSH_REPLY).is_some() {
            return match PushReply::parse(text) {
                Ok(r) => ControlMessage::PushReply(r),
                Err(e) => ControlMessage::BadPushReply(e),
            };
        }
        if text == EXIT {
            return ControlMessage::Exit;
        }
        if let Some(m) = command(text, AUTH_FAILED) {
            return ControlMessage::AuthFailed(m.to_owned());
        }
        if let Some(m) = command(text, RESTART) {
            return ControlMessage::Restart(m.to_owned());
        }
        if let Some(m) = command(text, HALT) {
            return ControlMessage::Halt(m.to_owned());
        }
        ControlMessage::Other(text.to_owned())
    }

    /// The message text to send (without the NUL the sender appends).
    pub fn to_text(&self) -> String {
        let with = |cmd: &str, m: &str| {
            if m.is_empty() {
                cmd.to_owned()
            } else {
                format!("{cmd},{m}")
            }
        };
        match self {
            ControlMessage::PushRequest => PUSH_REQUEST.to_owned(),
            ControlMessage::PushReply(r) => r.to_text(),
            ControlMessage::AuthFailed(m) => with(AUTH_FAILED, m),
            ControlMessage::Exit => EXIT.to_owned(),
            ControlMessage::Restart(m) => with(RESTART, m),
            ControlMessage::Halt(m) => with(HALT, m),
            ControlMessage::BadPushReply(_) => PUSH_REPLY.to_owned(),
            ControlMessage::Other(t) => t.clone(),
        }
    }
}

/// Split TLS plaintext into NUL-terminated messages. Returns each complete
/// message (trailing CR/LF stripped, empty ones skipped) or why it was
/// rejected, and how many bytes were consumed; an unterminated tail is left
/// for when more plaintext arrives.
pub fn split_messages(buf: &[u8]) -> (Vec<Result<&str, PushError>>, usize) {
    let mut out = Vec::new();
    let mut consumed = 0;
    let mut rest = buf;
    while let Some(end) = rest.iter().position(|&b| b == 0) {
        let (msg, tail) = rest.split_at(end);
        consumed += end + 1;
        rest = tail.get(1..).unwrap_or_default();
        let msg = match std::str::from_utf8(msg) {
            Ok(s) => s.trim_end_matches(['\r', '\n']),
            Err(_) => {
                out.push(Err(PushError::NotUtf8));
                continue;
            }
        };
        if msg.is_empty() {
            continue;
        }
        if msg.chars().any(char::is_control) {
            out.push(Err(PushError::NonPrintable));
            continue;
        }
        out.push(Ok(msg));
    }
    (out, consumed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(action: PullFilterAction, prefix: &str) -> PullFilter {
        PullFilter {
            action,
            prefix: prefix.into(),
        }
    }

    #[test]
    fn pull_filters_in_order_first_match_decides() {
        use PullFilterAction::*;
        let text = "PUSH_REPLY,route 10.1.0.0 255.255.0.0,route 10.2.0.0 255.255.0.0, redirect-gateway def1,dhcp-option DNS 10.8.0.1,ping 10";
        let filters = [
            filter(Accept, "route 10.1."),
            filter(Ignore, "route"),
            filter(Ignore, "redirect-gateway"),
        ];
        assert_eq!(
            apply_pull_filters(text, &filters),
            Filtered::Kept {
                text: "PUSH_REPLY,route 10.1.0.0 255.255.0.0,dhcp-option DNS 10.8.0.1,ping 10"
                    .into(),
                ignored: vec![
                    "route 10.2.0.0 255.255.0.0".into(),
                    "redirect-gateway def1".into()
                ],
            }
        );
        // `route` is a prefix of `route-gateway` too, as in 2.6.
        let r = apply_pull_filters(
            "PUSH_REPLY,route-gateway 10.8.0.1,route 10.3.0.0 255.255.0.0",
            &[filter(Reject, "route 10.3."), filter(Ignore, "route")],
        );
        assert_eq!(r, Filtered::Rejected("route 10.3.0.0 255.255.0.0".into()));
        let r = apply_pull_filters(
            "PUSH_REPLY,route-gateway 10.8.0.1",
            &[filter(Ignore, "route")],
        );
        assert!(matches!(r, Filtered::Kept { text, .. } if text == "PUSH_REPLY"));
        // No filter, or another message: unchanged.
        assert!(
            matches!(apply_pull_filters(text, &[]), Filtered::Kept { text: t, .. } if t == text)
        );
        assert!(matches!(
            apply_pull_filters("AUTH_FAILED,route", &[filter(Reject, "")]),
            Filtered::Kept { text, .. } if text == "AUTH_FAILED,route"
        ));
    }

    #[test]
    fn options() {
        assert_eq!(
            PushOption::parse("route 10.0.0.0 255.0.0.0 10.8.0.1").unwrap(),
            PushOption::Route {
                network: Ipv4Addr::new(10, 0, 0, 0),
                netmask: Ipv4Addr::new(255, 0, 0, 0),
                gateway: Some(Ipv4Addr::new(10, 8, 0, 1)),
                metric: None,
            }
        );
        assert_eq!(
            PushOption::parse("route 10.0.0.5").unwrap(),
            PushOption::Route {
                network: Ipv4Addr::new(10, 0, 0, 5),
                netmask: Ipv4Addr::BROADCAST,
                gateway: None,
                metric: None,
            }
        );
        assert!(matches!(
            PushOption::parse("route 10.0.0.0 255.0.0.0 net_gateway").unwrap(),
            PushOption::Other(..)
        ));
        assert!(matches!(
            PushOption::parse("route remote_host 255.255.255.255 net_gateway").unwrap(),
            PushOption::Other(..)
        ));
        let with_metric = PushOption::parse("route 10.0.0.0 255.0.0.0 vpn_gateway 5").unwrap();
        assert_eq!(
            with_metric,
            PushOption::Route {
                network: Ipv4Addr::new(10, 0, 0, 0),
                netmask: Ipv4Addr::new(255, 0, 0, 0),
                gateway: None,
                metric: Some(5),
            }
        );
        assert_eq!(
            with_metric.to_text(),
            "route 10.0.0.0 255.0.0.0 vpn_gateway 5"
        );
        assert!(PushOption::parse("route 10.0.0.0 255.0.0.0 10.8.0.1 x").is_err());
        assert_eq!(
            PushOption::parse("redirect-gateway def1 bypass-dhcp").unwrap(),
            PushOption::RedirectGateway(vec!["def1".into(), "bypass-dhcp".into()])
        );
        assert_eq!(
            PushOption::parse("dhcp-option DNS 10.8.0.1").unwrap(),
            PushOption::DhcpOption("DNS".into(), "10.8.0.1".into())
        );
        assert_eq!(
            PushOption::parse("dhcp-option DISABLE-NBT")
                .unwrap()
                .to_text(),
            "dhcp-option DISABLE-NBT"
        );
        assert_eq!(
            PushOption::parse("route-gateway dhcp").unwrap(),
            PushOption::Other("route-gateway".into(), vec!["dhcp".into()])
        );
    }

    #[test]
    fn option_errors() {
        for bad in [
            "ifconfig 10.8.0.300 255.255.255.0",
            "ifconfig 10.8.0.2",
            "ifconfig 10.8.0.2 255.255.255.0 x",
            "route-gateway",
            "route 10.0.0.256",
            "route 10.0.0.0 255.0.0",
            "route 10.0.0.0 255.0.0.0 10.8.0.1.1",
            "route remote_host 255.255.300.0 net_gateway",
            "ping 99999999999",
            "ping -1",
            "ping +1",
            "ping",
            "peer-id 16777216",
            "tun-mtu 1e3",
            "topology",
            "protocol-flags",
            "cipher",
            "",
        ] {
            assert!(PushOption::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn split_push_reply_like_2_6() {
        // Fits: one message, no continuation; nothing pushed: a bare reply.
        let small = "PUSH_REPLY,route-gateway 10.8.0.1,ping 10,ifconfig 10.8.0.2 255.255.255.0";
        assert_eq!(split_push_reply(small).unwrap(), vec![small.to_owned()]);
        assert_eq!(split_push_reply("PUSH_REPLY").unwrap(), vec!["PUSH_REPLY"]);
        assert!(split_push_reply("PUSH_REQUEST").is_err());

        // 80 routes: 2.6 fills each message while len + option < 940.
        let routes: Vec<String> = (0..80)
            .map(|i| format!("route 10.{}.{}.0 255.255.255.0", 100 + i / 10, i % 10))
            .collect();
        let mut text = String::from("PUSH_REPLY,topology subnet");
        for r in &routes {
            text.push(',');
            text.push_str(r);
        }
        text.push_str(",ifconfig 10.8.0.2 255.255.255.0,peer-id 0,cipher AES-256-GCM");
        let parts = split_push_reply(&text).unwrap();
        assert!(parts.len() >= 3, "{parts:?}");
        for (i, part) in parts.iter().enumerate() {
            assert!(part.len() < PUSH_BUNDLE_SIZE, "{}", part.len());
            let last = i + 1 == parts.len();
            let marker = if last {
                ",push-continuation 1"
            } else {
                ",push-continuation 2"
            };
            assert!(part.ends_with(marker), "{part}");
            // Without its marker, a part is at most 2.6's safe_cap (the
            // check leaves out the comma), and the next option would not
            // have fitted.
            let body = part.strip_suffix(marker).unwrap();
            assert!(body.len() <= PUSH_BUNDLE_SIZE - PUSH_BUNDLE_RESERVE);
            if !last {
                let next_first = parts[i + 1]
                    .strip_prefix("PUSH_REPLY,")
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap();
                assert!(body.len() + next_first.len() >= PUSH_BUNDLE_SIZE - PUSH_BUNDLE_RESERVE);
            }
        }
        // Reassembled by a client, the options and their order survive.
        let mut whole = PushReply::parse(&parts[0]).unwrap();
        for p in &parts[1..] {
            assert!(whole.expects_more());
            whole.extend(PushReply::parse(p).unwrap());
        }
        assert!(!whole.expects_more());
        assert_eq!(whole.options, PushReply::parse(&text).unwrap().options);

        // An option no message can hold is refused.
        let huge = format!("PUSH_REPLY,ping 10,setenv X {}", "a".repeat(1000));
        assert!(matches!(
            split_push_reply(&huge),
            Err(PushError::OptionTooLong(_))
        ));
    }

    #[test]
    fn reply_and_continuation() {
        assert_eq!(
            PushReply::parse("PUSH_REPLY").unwrap(),
            PushReply::default()
        );
        assert_eq!(
            PushReply::parse("PUSH_REPLYX"),
            Err(PushError::NotPushReply)
        );
        assert_eq!(
            PushReply::parse("PUSH_REQUEST"),
            Err(PushError::NotPushReply)
        );
        assert_eq!(
            PushReply::parse("PUSH_REPLY,ping 1\x01"),
            Err(PushError::NonPrintable)
        );
        assert_eq!(
            PushReply::parse_bytes(b"PUSH_REPLY,\xff"),
            Err(PushError::NotUtf8)
        );
        let mut a = PushReply::parse("PUSH_REPLY,ping 1,,push-continuation 2").unwrap();
        assert!(a.expects_more());
        assert_eq!(a.options, vec![PushOption::Ping(1)]);
        a.extend(PushReply::parse("PUSH_REPLY,ping-restart 5,push-continuation 1").unwrap());
        assert!(!a.expects_more());
        assert_eq!(a.options.len(), 2);
        assert!(PushReply::parse("PUSH_REPLY,push-continuation 3").is_err());
    }

    #[test]
    fn split_long_reply() {
        let opts: Vec<PushOption> = (0..200u8)
            .map(|i| PushOption::Route {
                network: Ipv4Addr::new(10, i, 0, 0),
                netmask: Ipv4Addr::new(255, 255, 0, 0),
                gateway: None,
                metric: None,
            })
            .collect();
        let r = PushReply::new(opts.clone());
        let parts = r.to_texts(PUSH_SPLIT_LEN);
        assert!(parts.len() > 1);
        let mut merged = PushReply::default();
        for (i, p) in parts.iter().enumerate() {
            assert!(p.len() <= PUSH_SPLIT_LEN, "{}", p.len());
            let part = PushReply::parse(p).unwrap();
            assert_eq!(part.expects_more(), i + 1 < parts.len());
            merged.extend(part);
        }
        assert_eq!(merged.options, opts);
        assert_eq!(
            PushReply::new(opts[..2].to_vec())
                .to_texts(PUSH_SPLIT_LEN)
                .len(),
            1
        );
    }

    #[test]
    fn unencodable_options_cannot_inject() {
        let r = PushReply::new(vec![PushOption::Cipher("AES-256-GCM,route 1.2.3.4".into())]);
        assert!(r.to_text_checked().is_err());
        assert!(!matches!(PushReply::parse(&r.to_text()), Ok(b) if b.options.len() > 1));
        let r = PushReply::new(vec![PushOption::Other("x".into(), vec!["a,b\0".into()])]);
        assert!(r.to_text_checked().is_err());
        assert_eq!(PushReply::parse(&r.to_text()).unwrap().options.len(), 1);
    }

    #[test]
    fn control_messages() {
        use ControlMessage as C;
        assert_eq!(C::parse("PUSH_REQUEST"), C::PushRequest);
        assert_eq!(C::parse("EXIT"), C::Exit);
        assert_eq!(C::parse("AUTH_FAILED"), C::AuthFailed(String::new()));
        assert_eq!(
            C::parse("AUTH_FAILED,TEMP[backoff 5]:x"),
            C::AuthFailed("TEMP[backoff 5]:x".into())
        );
        assert_eq!(C::parse("RESTART,[N]bye"), C::Restart("[N]bye".into()));
        assert_eq!(C::parse("HALT"), C::Halt(String::new()));
        assert_eq!(C::parse("HALTED"), C::Other("HALTED".into()));
        assert!(matches!(C::parse("PUSH_REPLY,ping x"), C::BadPushReply(_)));
        assert!(matches!(C::parse("PUSH_REPLY,ping 5\n"), C::PushReply(_)));
        for m in [
            "PUSH_REQUEST",
            "EXIT",
            "AUTH_FAILED,x",
            "RESTART",
            "HALT,y",
            "INFO,z",
        ] {
            assert_eq!(C::parse(m).to_text(), m);
        }
    }

    #[test]
    fn splitting() {
        let buf = b"PUSH_REQUEST\0\0EXIT\r\n\0bad\x01\0\xff\0PUSH_RE";
        let (msgs, used) = split_messages(buf);
        assert_eq!(used, buf.len() - 7);
        assert_eq!(
            msgs,
            vec![
                Ok("PUSH_REQUEST"),
                Ok("EXIT"),
                Err(PushError::NonPrintable),
                Err(PushError::NotUtf8)
            ]
        );
        assert_eq!(split_messages(b"abc"), (vec![], 0));
    }
}
