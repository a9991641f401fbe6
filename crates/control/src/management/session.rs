//! One management connection as a state machine over lines: password
//! prompt, commands, the `client-auth` block, realtime flags. Pure: it
//! answers lines with [`Step`]s, and the I/O task carries them out.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use super::command::{self, Command, HistoryArg, Hold, Parsed};
use super::reply;
use super::{Answer, Query};

/// Wrong passwords before 2.6 closes the connection.
pub const PASSWORD_TRIES: u32 = 3;
/// Most lines kept from one `client-auth` block (2.6 keeps them all; a
/// bound keeps a hostile client from growing memory without end).
pub const MAX_BLOCK_LINES: usize = 1024;

/// 2.6's one answer for every failed `client-pending-auth`.
const PENDING_AUTH_FAILED: &str =
    "ERROR: client-pending-auth command failed. Extra parameter might be too long";

/// Longest command line kept (2.6 reads into a 1024-byte buffer).
pub const MAX_LINE: usize = 1024;

/// A line longer than [`MAX_LINE`]; it is dropped whole.
#[derive(Debug, PartialEq, Eq)]
pub struct LineTooLong;

/// Bytes from the socket into lines: `\n` ends a line, other control
/// bytes (such as the `\r` of CRLF) are dropped as 2.6 drops them, and a
/// line is bounded.
#[derive(Debug, Default)]
pub struct LineBuffer {
    line: Vec<u8>,
    too_long: bool,
}

impl LineBuffer {
    pub fn push(&mut self, data: &[u8]) -> Vec<Result<String, LineTooLong>> {
        let mut out = Vec::new();
        for &b in data {
            if b == b'\n' {
                out.push(if self.too_long {
                    Err(LineTooLong)
                } else {
                    Ok(String::from_utf8_lossy(&self.line).into_owned())
                });
                self.line.clear();
                self.too_long = false;
            } else if b >= 0x20 && b != 0x7f {
                if self.line.len() < MAX_LINE {
                    self.line.push(b);
                } else {
                    self.too_long = true;
                }
            }
        }
        out
    }
}

/// State every connection shares: what `hold`, `state` and `log` show.
#[derive(Debug)]
pub struct Shared {
    pub hold: bool,
    /// Set once a client said `hold release` while the server waited.
    pub hold_released: bool,
    /// Whether the server still waits for `hold release`.
    pub holding: bool,
    pub states: History,
    pub log: History,
    pub verb: u8,
    pub pid: u32,
    /// `management-client-auth`: the `client-*` commands decide about
    /// waiting clients (without it they fail, as in 2.6).
    pub client_auth: bool,
    /// Whether a server or a client runs the interface.
    pub mode: Mode,
    /// The `N` of `>HOLD:Waiting for hold release:N`: the seconds a
    /// client would have paused before this reconnect (0 at start).
    pub hold_wait: u32,
    /// A client waits for `username`/`password` (`>PASSWORD:Need ...`).
    pub password_query: Option<PasswordQuery>,
    /// A client waits for `remote ...` or `proxy ...` about the connection
    /// entry it is about to try.
    pub entry_query: Option<EntryQuery>,
    /// Whether the client's current connection entry is UDP (`proxy HTTP`
    /// fails for one, asked or not, as 2.6).
    pub entry_udp: bool,
    /// A client past its first hold: 2.6 sets up `remote`, `proxy`,
    /// `cr-response` and `remote-entry-*` only then, and calls them
    /// unsupported before.
    pub started: bool,
    /// A client's connection list in the order it walks it (after
    /// `remote-random`), one `HOST,PORT,PROTO,enabled` per entry, for
    /// `remote-entry-count` / `remote-entry-get`.
    pub remote_entries: Vec<String>,
    /// The private key's passphrase once given (2.6's `passbuf`), which
    /// `forget-passwords` drops.
    pub key_passphrase: crate::key_passphrase::PassphraseMemory,
    /// A client's `auth-user-pass` credentials (and auth-token), which
    /// `forget-passwords` drops too; the client runtime holds the same
    /// memory.
    pub credentials: crate::client::credentials::CredentialMemory,
}

/// A client's question about the connection entry it is about to try, as
/// 2.6 asks it (init.c, `ce_management_query_remote` /
/// `ce_management_query_proxy`): the prompt, repeated to each management
/// client that connects while it waits, and the answer once given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryQuery {
    /// `management-query-remote`: `>REMOTE:HOST,PORT,PROTO`.
    Remote {
        prompt: String,
        answer: Option<RemoteAnswer>,
    },
    /// `management-query-proxy`: `>PROXY:N,UDP|TCP,HOST`.
    Proxy {
        prompt: String,
        answer: Option<ProxyAnswer>,
    },
}

impl EntryQuery {
    pub fn remote(prompt: String) -> Self {
        EntryQuery::Remote {
            prompt,
            answer: None,
        }
    }

    pub fn proxy(prompt: String) -> Self {
        EntryQuery::Proxy {
            prompt,
            answer: None,
        }
    }

    /// The notification, without its CRLF.
    pub fn prompt(&self) -> &str {
        match self {
            EntryQuery::Remote { prompt, .. } | EntryQuery::Proxy { prompt, .. } => prompt,
        }
    }

    pub fn answered(&self) -> bool {
        match self {
            EntryQuery::Remote { answer, .. } => answer.is_some(),
            EntryQuery::Proxy { answer, .. } => answer.is_some(),
        }
    }
}

/// `remote ACCEPT`, `remote SKIP [N]`, `remote MOD HOST PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteAnswer {
    Accept,
    /// Skip this entry and the next N-1 (N is at least 1).
    Skip(u32),
    /// Connect to HOST PORT instead, this attempt.
    Modify {
        host: String,
        port: u16,
    },
}

/// `proxy NONE|HTTP|SOCKS ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyAnswer {
    /// `proxy NONE`, or a command 2.6 takes as the end of the question
    /// without a proxy (missing host or port, unknown type): the entry as
    /// configured.
    AsConfigured,
    /// `proxy HTTP HOST PORT [nct]` (TCP entries only).
    Http { host: String, port: u16, nct: bool },
    /// `proxy SOCKS HOST PORT`.
    Socks { host: String, port: u16 },
}

/// 2.6's bounds on a `remote MOD` host and port (`RH_HOST_LEN`,
/// `RH_PORT_LEN`, terminator included).
const MOD_HOST_LEN: usize = 256;
const MOD_PORT_LEN: usize = 20;

/// The longest control-channel message 2.6 sends for `cr-response`
/// (`PUSH_BUNDLE_SIZE`, terminator included).
const MAX_CC_MESSAGE: usize = 1024;

/// Which daemon the interface belongs to: some commands only make sense
/// for one of them, and 2.6 answers the others with an `ERROR:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Server,
    Client,
}

/// Credentials a client asks its management client for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordQuery {
    /// The type the answers must name (`Auth`).
    pub kind: String,
    /// Whether a user name is wanted too (`username/password`) or only the
    /// password (the config gave the user name).
    pub needs_username: bool,
    /// `static-challenge TEXT ECHO`: `(echo, text)`, announced as
    /// `SC:ECHO,TEXT`; the management client answers in SCRV1 form itself.
    pub challenge: Option<(bool, String)>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl PasswordQuery {
    /// A query for `kind`'s credentials.
    pub fn new(kind: &str, needs_username: bool, challenge: Option<(bool, String)>) -> Self {
        Self {
            kind: kind.to_string(),
            needs_username,
            challenge,
            username: None,
            password: None,
        }
    }

    /// The `>PASSWORD:Need ...` notification, without its CRLF.
    pub fn prompt(&self) -> String {
        let what = if self.needs_username {
            "username/password"
        } else {
            "password"
        };
        let mut s = format!(">PASSWORD:Need '{}' {what}", self.kind);
        if let Some((echo, text)) = &self.challenge {
            s += &format!(" SC:{},{text}", u8::from(*echo));
        }
        s
    }

    /// Every wanted answer is in.
    pub fn complete(&self) -> bool {
        self.password.is_some() && (!self.needs_username || self.username.is_some())
    }
}

/// The last N lines of something, oldest first.
#[derive(Debug)]
pub struct History {
    lines: VecDeque<String>,
    cap: usize,
}

impl History {
    pub fn new(cap: usize) -> Self {
        Self {
            lines: VecDeque::new(),
            cap: cap.max(1),
        }
    }
    pub fn push(&mut self, line: String) {
        if self.lines.len() == self.cap {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
    /// The last `n` lines (all when `None`), oldest first.
    pub fn last(&self, n: Option<usize>) -> impl Iterator<Item = &String> {
        let n = n.unwrap_or(self.lines.len()).min(self.lines.len());
        self.lines.iter().skip(self.lines.len() - n)
    }
}

/// What the I/O task does next for one input line.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to send.
    Nothing,
    /// Send these lines (each ends with CRLF already).
    Send(String),
    /// Ask the server, then send [`Session::answered`]'s text.
    Ask(Query),
    /// Send the text, then close the connection.
    Close(String),
}

/// A `client-auth` block being read.
#[derive(Debug)]
struct ClientAuthBlock {
    cid: u64,
    kid: u32,
    lines: Vec<String>,
}

/// Per-connection state.
#[derive(Debug)]
pub struct Session {
    password: Option<String>,
    failed_tries: u32,
    /// `Some` while reading a `client-auth` block: its client, key and
    /// lines so far.
    block: Option<ClientAuthBlock>,
    pub realtime_log: bool,
    pub realtime_state: bool,
    pub realtime_echo: bool,
    /// `bytecount N`: seconds between `>BYTECOUNT_CLI` reports (0: off).
    pub bytecount: u32,
}

impl Session {
    /// A new connection; `password` is the one it must give first, if any.
    pub fn new(password: Option<String>) -> Self {
        Self {
            password,
            failed_tries: 0,
            block: None,
            realtime_log: false,
            realtime_state: false,
            realtime_echo: false,
            bytecount: 0,
        }
    }

    /// Whether the client has given the password (or none is needed).
    pub fn authenticated(&self) -> bool {
        self.password.is_none()
    }

    /// What to send when the connection opens.
    pub fn greeting(&self, shared: &Shared) -> String {
        if self.password.is_some() {
            return reply::line("ENTER PASSWORD:");
        }
        welcome(shared)
    }

    /// Act on one line (the line end removed, non-printable bytes dropped).
    pub fn on_line(&mut self, shared: &mut Shared, line: &str) -> Step {
        if let Some(expected) = &self.password {
            // Constant-time enough: the comparison does not stop early.
            let ok = line.len() == expected.len()
                && line
                    .bytes()
                    .zip(expected.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0;
            if ok {
                self.password = None;
                return Step::Send(reply::line("SUCCESS: password is correct") + &welcome(shared));
            }
            self.failed_tries += 1;
            if self.failed_tries >= PASSWORD_TRIES {
                return Step::Close(String::new());
            }
            // 2.6 sends its "bad password" note to the log only; the
            // client sees the prompt again.
            return Step::Send(reply::line("ENTER PASSWORD:"));
        }
        if let Some(block) = &mut self.block {
            if line != "END" {
                if block.lines.len() < MAX_BLOCK_LINES {
                    block.lines.push(line.to_string());
                }
                return Step::Nothing;
            }
            let ClientAuthBlock { cid, kid, lines } = self.block.take().expect("checked above");
            if !shared.client_auth {
                // No client waits for management approval without
                // `management-client-auth`: the CID is not pending.
                return Step::Send(reply::line("ERROR: client-auth command failed"));
            }
            return Step::Ask(Query::ClientAuth {
                cid,
                kid,
                config: lines,
            });
        }
        match command::parse(line) {
            Parsed::Nothing => Step::Nothing,
            Parsed::Reply(r) => Step::Send(reply::line(&r)),
            Parsed::Command(c) => {
                if !matches!(c, Command::Password { .. }) {
                    shared.log.push(reply::log_entry(
                        unix_now(),
                        "D",
                        &format!("MANAGEMENT: CMD '{line}'"),
                    ));
                }
                self.run(shared, c)
            }
        }
    }

    fn run(&mut self, shared: &mut Shared, c: Command) -> Step {
        use Command as C;
        let send = |s: &str| Step::Send(reply::line(s));
        if shared.mode == Mode::Client
            && let Some(step) = client_command(shared, &c)
        {
            return step;
        }
        match c {
            C::Quit => Step::Close(String::new()),
            C::Help => Step::Send(reply::help()),
            C::Version => Step::Send(reply::version()),
            C::ClientVersion(v) => {
                if (1..=i64::from(u32::MAX)).contains(&v) {
                    send(&format!("SUCCESS: Management client version set to {v}"))
                } else {
                    send("ERROR: Invalid value specified for management client version")
                }
            }
            C::Pid => send(&format!("SUCCESS: pid={}", shared.pid)),
            C::LoadStats => Step::Ask(Query::LoadStats),
            C::NClients => Step::Ask(Query::NClients),
            C::Status(v) => Step::Ask(Query::Status(match v {
                2 => 2,
                3 => 3,
                _ => 1,
            })),
            C::Kill(victim) => match kill_target(&victim) {
                Ok(q) => Step::Ask(q),
                Err(e) => send(&e),
            },
            C::Verb(None) => send(&format!("SUCCESS: verb={}", shared.verb)),
            C::Verb(Some(_)) => send("ERROR: ferrovpn cannot change the verb level at run time"),
            C::Mute(None) => send("SUCCESS: mute=0"),
            C::Mute(Some(_)) => send("ERROR: ferrovpn does not mute repeated log lines"),
            C::State(args) => {
                let mut out = String::new();
                for a in args {
                    out += &history(&a, "state", &shared.states, &mut self.realtime_state);
                }
                Step::Send(out)
            }
            C::Log(args) => {
                let mut out = String::new();
                for a in args {
                    out += &history(&a, "log", &shared.log, &mut self.realtime_log);
                }
                Step::Send(out)
            }
            C::Echo(args) => {
                // A server has no `echo` directives: the buffer stays empty.
                let empty = History::new(1);
                let mut out = String::new();
                for a in args {
                    out += &history(&a, "echo", &empty, &mut self.realtime_echo);
                }
                Step::Send(out)
            }
            C::Hold(h) => match h {
                Hold::Show => send(&format!("SUCCESS: hold={}", u8::from(shared.hold))),
                Hold::On => {
                    shared.hold = true;
                    send("SUCCESS: hold flag set to ON")
                }
                Hold::Off => {
                    shared.hold = false;
                    send("SUCCESS: hold flag set to OFF")
                }
                Hold::Release => {
                    shared.hold_released = true;
                    send("SUCCESS: hold release succeeded")
                }
                Hold::Invalid => send("ERROR: bad hold command parameter"),
            },
            C::Bytecount(n) => {
                self.bytecount = u32::try_from(n.max(0)).unwrap_or(u32::MAX);
                send("SUCCESS: bytecount interval changed")
            }
            C::Signal(name) => match name.as_str() {
                "SIGINT" | "SIGHUP" | "SIGTERM" | "SIGUSR1" | "SIGUSR2" => {
                    Step::Ask(Query::Signal(name))
                }
                _ => send(&format!(
                    "ERROR: signal '{name}' is not a known signal type"
                )),
            },
            C::ClientKill { cid, message } => Step::Ask(Query::ClientKill {
                cid,
                message: message.unwrap_or_else(|| "RESTART".into()),
            }),
            C::ClientAuth { cid, kid } => {
                self.block = Some(ClientAuthBlock {
                    cid,
                    kid,
                    lines: Vec::new(),
                });
                Step::Nothing
            }
            C::ClientAuthNt { .. } if !shared.client_auth => {
                send("ERROR: client-auth command failed")
            }
            C::ClientAuthNt { cid, kid } => Step::Ask(Query::ClientAuth {
                cid,
                kid,
                config: Vec::new(),
            }),
            C::ClientDeny { .. } if !shared.client_auth => {
                send("ERROR: client-deny command failed")
            }
            C::ClientDeny {
                cid,
                kid,
                reason,
                client_reason,
            } => Step::Ask(Query::ClientDeny {
                cid,
                kid,
                reason,
                client_reason,
            }),
            C::ClientPendingAuth { .. } if !shared.client_auth => send(PENDING_AUTH_FAILED),
            C::ClientPendingAuth {
                cid,
                kid,
                extra,
                timeout,
            } => Step::Ask(Query::ClientPendingAuth {
                cid,
                kid,
                extra,
                timeout,
            }),
            // A server asks only for its key's passphrase (`Private Key`).
            C::Username { kind, value } => send(&answer_query(shared, "username", &kind, &value)),
            C::Password { kind, value } => send(&answer_query(shared, "password", &kind, &value)),
            C::ForgetPasswords => {
                // 2.6's `ssl_purge_auth` and `ssl_clean_auth_token`: the
                // key's passphrase is asked again the next time the key is
                // opened, a client's credentials at its next key exchange.
                shared.key_passphrase.forget();
                shared.credentials.forget();
                send("SUCCESS: Passwords were forgotten")
            }
            C::EnvFilter(0) => send("SUCCESS: env_filter_level=0"),
            C::EnvFilter(_) => send("ERROR: ferrovpn does not filter >CLIENT:ENV lines"),
            C::NotInThisMode(name) => send(&format!(
                "ERROR: The '{name}' command is not supported by the current daemon mode"
            )),
            C::Remote(_) => {
                send("ERROR: The 'remote' command is not supported by the current daemon mode")
            }
            C::Proxy(_) => {
                send("ERROR: The 'proxy' command is not supported by the current daemon mode")
            }
            // 2.6 misspells the command's name here (manage.c).
            C::CrResponse(_) => {
                send("ERROR: The 'cr-repsonse' command is not supported by the current daemon mode")
            }
            C::RemoteEntryCount => send(
                "ERROR: The 'remote-entry-count' command is not supported by the current daemon mode",
            ),
            C::RemoteEntryGet { .. } => send(
                "ERROR: The 'remote-entry-get' command is not supported by the current daemon mode",
            ),
        }
    }

    /// The reply to a command once the server answered its query.
    pub fn answered(&self, query: &Query, answer: Answer) -> String {
        match (query, answer) {
            (Query::Status(_), Answer::Text(t)) => reply::crlf(&t),
            (Query::LoadStats, Answer::Load(l)) => reply::line(&format!(
                "SUCCESS: nclients={},bytesin={},bytesout={}",
                l.clients, l.bytes_in, l.bytes_out
            )),
            (Query::NClients, Answer::Load(l)) => {
                reply::line(&format!("SUCCESS: nclients={}", l.clients))
            }
            (Query::KillCommonName(cn), Answer::Killed(n)) if n > 0 => reply::line(&format!(
                "SUCCESS: common name '{cn}' found, {n} client(s) killed"
            )),
            (Query::KillCommonName(cn), Answer::Killed(_)) => {
                reply::line(&format!("ERROR: common name '{cn}' not found"))
            }
            (Query::KillAddress(a), Answer::Killed(n)) if n > 0 => reply::line(&format!(
                "SUCCESS: {n} client(s) at address {}:{} killed",
                a.ip(),
                a.port()
            )),
            (Query::KillAddress(a), Answer::Killed(_)) => reply::line(&format!(
                "ERROR: client at address {}:{} not found",
                a.ip(),
                a.port()
            )),
            (Query::ClientKill { .. }, Answer::Done(true)) => {
                reply::line("SUCCESS: client-kill command succeeded")
            }
            (Query::ClientKill { .. }, Answer::Done(false)) => {
                reply::line("ERROR: client-kill command failed")
            }
            (Query::Signal(name), Answer::Done(true)) => {
                reply::line(&format!("SUCCESS: signal {name} thrown"))
            }
            (Query::Signal(name), Answer::Done(false)) => {
                reply::line(&format!("ERROR: signal '{name}' is currently ignored"))
            }
            (Query::ByteCounts, Answer::ClientBytes { received, sent }) => {
                reply::line(&format!(">BYTECOUNT:{received},{sent}"))
            }
            (Query::ByteCounts, Answer::ByteCounts(rows)) => rows
                .iter()
                .map(|(cid, rx, tx)| reply::line(&format!(">BYTECOUNT_CLI:{cid},{rx},{tx}")))
                .collect(),
            (Query::ClientAuth { .. }, Answer::Done(true)) => {
                reply::line("SUCCESS: client-auth command succeeded")
            }
            (Query::ClientAuth { .. }, Answer::Done(false)) => {
                reply::line("ERROR: client-auth command failed")
            }
            (Query::ClientDeny { .. }, Answer::Done(true)) => {
                reply::line("SUCCESS: client-deny command succeeded")
            }
            (Query::ClientDeny { .. }, Answer::Done(false)) => {
                reply::line("ERROR: client-deny command failed")
            }
            (Query::ClientPendingAuth { .. }, Answer::Done(true)) => {
                reply::line("SUCCESS: client-pending-auth command succeeded")
            }
            (Query::ClientPendingAuth { .. }, Answer::Done(false)) => {
                reply::line(PENDING_AUTH_FAILED)
            }
            (Query::ControlMessage(_), Answer::Done(true)) => {
                reply::line("SUCCESS: command succeeded")
            }
            (Query::ControlMessage(_), Answer::Done(false)) => reply::line("ERROR: command failed"),
            (_, Answer::Unavailable) => reply::line("ERROR: the server is not running"),
            (q, a) => reply::line(&format!("ERROR: internal: {q:?} answered with {a:?}")),
        }
    }
}

fn welcome(shared: &Shared) -> String {
    let mut s =
        reply::line(">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info");
    if shared.holding {
        s += &reply::line(&format!(
            ">HOLD:Waiting for hold release:{}",
            shared.hold_wait
        ));
    }
    // A client that waits for an answer asks whoever connects.
    if let Some(q) = &shared.entry_query {
        s += &reply::line(q.prompt());
    }
    if let Some(q) = &shared.password_query {
        s += &reply::line(&q.prompt());
    }
    s
}

/// `remote ACTION [HOST PORT | N]` as 2.6 takes it
/// (`management_callback_remote_cmd`): only while a `>REMOTE:` question
/// waits; a command it cannot take leaves the question waiting.
fn remote_command(shared: &mut Shared, args: &[String]) -> &'static str {
    const FAILED: &str = "ERROR: remote command failed";
    let Some(EntryQuery::Remote { answer, .. }) = &mut shared.entry_query else {
        return FAILED;
    };
    if answer.is_some() {
        return FAILED;
    }
    let arg = |i: usize| args.get(i).map(String::as_str);
    let given = match arg(0) {
        Some("ACCEPT") => RemoteAnswer::Accept,
        Some("SKIP") => {
            // 2.6: `atoi`, and anything below 1 skips one.
            let n = arg(1).map_or(1, command::atoi);
            RemoteAnswer::Skip(u32::try_from(n).ok().filter(|&n| n > 0).unwrap_or(1))
        }
        Some("MOD") => match (arg(1), arg(2)) {
            (Some(host), Some(port)) if host.len() < MOD_HOST_LEN && port.len() < MOD_PORT_LEN => {
                // 2.6 takes any port text and fails when it connects;
                // ferrovpn wants a port number now.
                let Ok(port) = port.parse::<u16>() else {
                    return FAILED;
                };
                RemoteAnswer::Modify {
                    host: host.to_string(),
                    port,
                }
            }
            _ => return FAILED,
        },
        _ => return FAILED,
    };
    *answer = Some(given);
    "SUCCESS: remote command succeeded"
}

/// `proxy TYPE [HOST PORT [nct]]` as 2.6 takes it
/// (`management_callback_proxy_cmd`): it answers a waiting `>PROXY:`
/// question; without one, the reply is the same and nothing changes (2.6
/// changes a copy of the entry in use that the next attempt replaces).
fn proxy_command(shared: &mut Shared, args: &[String]) -> &'static str {
    const FAILED: &str = "ERROR: proxy command failed";
    const DONE: &str = "SUCCESS: proxy command succeeded";
    let arg = |i: usize| args.get(i).map(String::as_str);
    let (given, reply) = match (arg(0), arg(1), arg(2)) {
        (Some("NONE"), _, _) => (ProxyAnswer::AsConfigured, DONE),
        (Some(kind @ ("HTTP" | "SOCKS")), Some(host), Some(port)) => {
            if kind == "HTTP" && shared.entry_udp {
                // 2.6 fails without ending the question.
                return FAILED;
            }
            match port.parse::<u16>() {
                Ok(port) if kind == "HTTP" => (
                    ProxyAnswer::Http {
                        host: host.to_string(),
                        port,
                        nct: arg(3) == Some("nct"),
                    },
                    DONE,
                ),
                Ok(port) => (
                    ProxyAnswer::Socks {
                        host: host.to_string(),
                        port,
                    },
                    DONE,
                ),
                // 2.6 takes any port text and fails when it connects;
                // ferrovpn wants a number now, and keeps asking.
                Err(_) => return FAILED,
            }
        }
        // "Bad proxy command" (or an unknown type): the question ends with
        // the entry as configured, and the command fails.
        _ => (ProxyAnswer::AsConfigured, FAILED),
    };
    if let Some(EntryQuery::Proxy { answer, .. }) = &mut shared.entry_query
        && answer.is_none()
    {
        *answer = Some(given);
    }
    reply
}

/// `remote-entry-get FROM [TO]` as 2.6 answers it (manage.c,
/// `man_remote_entry_get`): entries FROM up to TO-1 (FROM alone without
/// TO, every one for `all`), each as `INDEX,HOST,PORT,PROTO,STATUS`, then
/// `END`. Both numbers are C's `atoi` taken as `unsigned`, so a negative or
/// too large one wraps, and `TO` below `FROM` (or past the list) just
/// shows fewer entries.
fn remote_entries(entries: &[String], from: &str, to: Option<&str>) -> String {
    let count = u32::try_from(entries.len()).unwrap_or(u32::MAX);
    // glibc's atoi is strtol (saturating at the i64 bounds) cut to its
    // low 32 bits.
    let unsigned = |s: &str| command::atoi(s) as u32;
    let (from, to) = if from == "all" {
        (0, count)
    } else {
        let from = unsigned(from);
        (from, to.map_or(from.wrapping_add(1), unsigned))
    };
    let mut out = String::new();
    for i in from..to.min(count) {
        if let Some(entry) = entries.get(i as usize) {
            out += &reply::line(&format!("{i},{entry}"));
        }
    }
    out + &reply::line("END")
}

/// How a client's interface answers what differs from a server's: the
/// server-only commands fail as 2.6 fails them on a client, and
/// `username`/`password` answer a pending `>PASSWORD:Need` query. `None`:
/// as on a server.
fn client_command(shared: &mut Shared, c: &Command) -> Option<Step> {
    use Command as C;
    let send = |s: &str| Some(Step::Send(reply::line(s)));
    let not_here = |name: &str| {
        send(&format!(
            "ERROR: The '{name}' command is not supported by the current daemon mode"
        ))
    };
    match c {
        C::NClients => not_here("nclients"),
        C::Kill(_) => not_here("kill"),
        C::ClientKill { .. } => not_here("client-kill"),
        C::ClientAuth { .. } => not_here("client-auth"),
        C::ClientAuthNt { .. } => not_here("client-auth-nt"),
        C::ClientDeny { .. } => not_here("client-deny"),
        C::ClientPendingAuth { .. } => not_here("client-pending-auth"),
        C::NotInThisMode(name) if name == "needok" => {
            send("ERROR: no needok-confirmation is currently needed at this time")
        }
        C::NotInThisMode(name) if name == "needstr" => {
            send("ERROR: no needstr-string is currently needed at this time")
        }
        C::Remote(_) if !shared.started => not_here("remote"),
        C::Proxy(_) if !shared.started => not_here("proxy"),
        // 2.6 misspells the command's name here (manage.c).
        C::CrResponse(_) if !shared.started => not_here("cr-repsonse"),
        C::RemoteEntryCount if !shared.started => not_here("remote-entry-count"),
        C::RemoteEntryGet { .. } if !shared.started => not_here("remote-entry-get"),
        C::RemoteEntryCount => Some(Step::Send(
            reply::line(&shared.remote_entries.len().to_string()) + &reply::line("END"),
        )),
        C::RemoteEntryGet { from, to } => Some(Step::Send(remote_entries(
            &shared.remote_entries,
            from,
            to.as_deref(),
        ))),
        C::Remote(args) => send(remote_command(shared, args)),
        C::Proxy(args) => send(proxy_command(shared, args)),
        C::CrResponse(answer) => {
            let message = format!("CR_RESPONSE,{answer}");
            if message.len() + 1 > MAX_CC_MESSAGE {
                send("ERROR: command failed")
            } else {
                Some(Step::Ask(Query::ControlMessage(message)))
            }
        }
        C::Username { kind, value } => send(&answer_query(shared, "username", kind, value)),
        C::Password { kind, value } => send(&answer_query(shared, "password", kind, value)),
        _ => None,
    }
}

/// `username TYPE VALUE` / `password TYPE VALUE` against the pending query.
fn answer_query(shared: &mut Shared, what: &str, kind: &str, value: &str) -> String {
    let wanted = shared
        .password_query
        .as_mut()
        .filter(|q| what == "password" || q.needs_username);
    let Some(q) = wanted else {
        return format!("ERROR: no {what} is currently needed at this time");
    };
    if q.kind != kind {
        return format!(
            "ERROR: {what} of type '{kind}' entered, but we need one of type '{}'",
            q.kind
        );
    }
    if what == "username" {
        q.username = Some(value.to_string());
    } else {
        q.password = Some(value.to_string());
    }
    format!("SUCCESS: '{kind}' {what} entered, but not yet verified")
}

/// `kill CN` or `kill IP:port`, split as 2.6 splits it (on the first two
/// colons: an IPv6 address is taken for a common name).
fn kill_target(victim: &str) -> Result<Query, String> {
    let mut parts = victim.splitn(3, ':');
    let host = parts.next().unwrap_or("");
    let port = parts.next().unwrap_or("");
    if host.is_empty() {
        return Err("ERROR: kill parse".into());
    }
    if port.is_empty() {
        return Ok(Query::KillCommonName(host.to_string()));
    }
    let ip: IpAddr = host
        .parse::<std::net::Ipv4Addr>()
        .map(IpAddr::V4)
        .map_err(|_| format!("ERROR: error parsing IP address: {host}"))?;
    match command::atoi(port) {
        p @ 1..=65535 => Ok(Query::KillAddress(SocketAddr::new(ip, p as u16))),
        _ => Err(format!("ERROR: port number is out of range: {port}")),
    }
}

fn history(arg: &HistoryArg, kind: &str, h: &History, realtime: &mut bool) -> String {
    match arg {
        HistoryArg::On => {
            *realtime = true;
            reply::line(&format!("SUCCESS: real-time {kind} notification set to ON"))
        }
        HistoryArg::Off => {
            *realtime = false;
            reply::line(&format!(
                "SUCCESS: real-time {kind} notification set to OFF"
            ))
        }
        HistoryArg::Last(n) => {
            let mut out: String = h.last(*n).map(|l| reply::line(l)).collect();
            out += &reply::line("END");
            out
        }
        HistoryArg::Invalid => reply::line(&format!(
            "ERROR: {kind} parameter must be 'on' or 'off' or some number n or 'all'"
        )),
    }
}

pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::super::LoadStats;
    use super::*;

    fn shared() -> Shared {
        Shared {
            hold: false,
            hold_released: false,
            holding: false,
            states: History::new(100),
            log: History::new(100),
            verb: 3,
            pid: 4242,
            client_auth: false,
            mode: Mode::Server,
            hold_wait: 0,
            key_passphrase: Default::default(),
            credentials: Default::default(),
            password_query: None,
            entry_query: None,
            entry_udp: false,
            started: false,
            remote_entries: Vec::new(),
        }
    }

    fn text(step: Step) -> String {
        match step {
            Step::Send(t) => t,
            other => panic!("expected text, got {other:?}"),
        }
    }

    #[test]
    fn password_prompt_as_in_openvpn() {
        // vectors/password.txt
        let mut sh = shared();
        let mut s = Session::new(Some("s3cret".into()));
        assert_eq!(s.greeting(&sh), "ENTER PASSWORD:\r\n");
        assert_eq!(text(s.on_line(&mut sh, "wrong")), "ENTER PASSWORD:\r\n");
        assert!(!s.authenticated());
        assert_eq!(
            text(s.on_line(&mut sh, "s3cret")),
            "SUCCESS: password is correct\r\n>INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info\r\n"
        );
        assert!(s.authenticated());
        let mut s = Session::new(Some("s3cret".into()));
        s.on_line(&mut sh, "a");
        s.on_line(&mut sh, "b");
        assert_eq!(s.on_line(&mut sh, "c"), Step::Close(String::new()));
    }

    #[test]
    fn local_replies_as_in_openvpn() {
        // vectors/p2p_hold.txt and vectors/server_commands.txt
        let mut sh = shared();
        sh.holding = true;
        sh.hold = true;
        let mut s = Session::new(None);
        assert_eq!(
            s.greeting(&sh),
            ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info\r\n>HOLD:Waiting for hold release:0\r\n"
        );
        let mut say = |l: &str| text(s.on_line(&mut sh, l));
        assert_eq!(say("pid"), "SUCCESS: pid=4242\r\n");
        assert_eq!(say("hold"), "SUCCESS: hold=1\r\n");
        assert_eq!(say("hold off"), "SUCCESS: hold flag set to OFF\r\n");
        assert_eq!(say("hold"), "SUCCESS: hold=0\r\n");
        assert_eq!(say("hold release"), "SUCCESS: hold release succeeded\r\n");
        assert_eq!(say("verb"), "SUCCESS: verb=3\r\n");
        assert_eq!(say("mute"), "SUCCESS: mute=0\r\n");
        assert_eq!(say("echo all"), "END\r\n");
        assert_eq!(
            say("echo on"),
            "SUCCESS: real-time echo notification set to ON\r\n"
        );
        assert_eq!(
            say("bytecount 0"),
            "SUCCESS: bytecount interval changed\r\n"
        );
        assert_eq!(
            say("state bar"),
            "ERROR: state parameter must be 'on' or 'off' or some number n or 'all'\r\n"
        );
        assert_eq!(
            say("log on all").lines().next(),
            Some("SUCCESS: real-time log notification set to ON")
        );
        assert!(say("log 2").ends_with("MANAGEMENT: CMD 'log 2'\r\nEND\r\n"));
        assert_eq!(
            say("signal SIGFOO"),
            "ERROR: signal 'SIGFOO' is not a known signal type\r\n"
        );
        assert_eq!(
            say("username Auth x"),
            "ERROR: no username is currently needed at this time\r\n"
        );
        assert_eq!(
            say("password Auth x"),
            "ERROR: no password is currently needed at this time\r\n"
        );
        assert_eq!(
            say("client-pending-auth 0 0 WEB_AUTH::x 30"),
            "ERROR: client-pending-auth command failed. Extra parameter might be too long\r\n"
        );
        assert_eq!(
            say("client-auth-nt 5 0"),
            "ERROR: client-auth command failed\r\n"
        );
        assert!(sh.hold_released);
        assert_eq!(s.on_line(&mut sh, "quit"), Step::Close(String::new()));
    }

    #[test]
    fn client_auth_block_read_to_end() {
        let mut sh = shared();
        let mut s = Session::new(None);
        assert_eq!(s.on_line(&mut sh, "client-auth 0 1"), Step::Nothing);
        assert_eq!(
            s.on_line(&mut sh, "push \"route 10.10.0.0 255.255.0.0\""),
            Step::Nothing
        );
        // Inside the block a command is only a line of it.
        assert_eq!(s.on_line(&mut sh, "quit"), Step::Nothing);
        assert_eq!(
            text(s.on_line(&mut sh, "END")),
            "ERROR: client-auth command failed\r\n"
        );
        assert_eq!(text(s.on_line(&mut sh, "pid")), "SUCCESS: pid=4242\r\n");
        // A hostile block is bounded.
        s.on_line(&mut sh, "client-auth 1 1");
        for _ in 0..5000 {
            s.on_line(&mut sh, "x");
        }
        assert_eq!(
            s.block.as_ref().map(|b| b.lines.len()),
            Some(MAX_BLOCK_LINES)
        );
    }

    #[test]
    fn forget_passwords_drops_the_kept_key_passphrase() {
        let mut sh = shared();
        sh.key_passphrase
            .opened_with(zeroize::Zeroizing::new("secret".into()), false);
        let mut s = Session::new(None);
        assert_eq!(
            s.on_line(&mut sh, "forget-passwords"),
            Step::Send(reply::line("SUCCESS: Passwords were forgotten"))
        );
        assert!(sh.key_passphrase.recall().is_none());
    }

    #[test]
    fn client_auth_commands_go_to_the_server_with_management_client_auth() {
        let mut sh = Shared {
            client_auth: true,
            ..shared()
        };
        let mut s = Session::new(None);
        assert_eq!(s.on_line(&mut sh, "client-auth 3 1"), Step::Nothing);
        assert_eq!(
            s.on_line(&mut sh, "ifconfig-push 10.8.0.50 255.255.255.0"),
            Step::Nothing
        );
        assert_eq!(
            s.on_line(&mut sh, "push \"route 10.9.0.0 255.255.0.0\""),
            Step::Nothing
        );
        let step = s.on_line(&mut sh, "END");
        let Step::Ask(q) = step else {
            panic!("{step:?}")
        };
        assert_eq!(
            q,
            Query::ClientAuth {
                cid: 3,
                kid: 1,
                config: vec![
                    "ifconfig-push 10.8.0.50 255.255.255.0".into(),
                    "push \"route 10.9.0.0 255.255.0.0\"".into()
                ]
            }
        );
        assert_eq!(
            s.answered(&q, Answer::Done(true)),
            "SUCCESS: client-auth command succeeded\r\n"
        );
        assert_eq!(
            s.answered(&q, Answer::Done(false)),
            "ERROR: client-auth command failed\r\n"
        );
        let cases = [
            (
                "client-auth-nt 4 2",
                Query::ClientAuth {
                    cid: 4,
                    kid: 2,
                    config: Vec::new(),
                },
                "SUCCESS: client-auth command succeeded",
            ),
            (
                "client-deny 5 1 \"bad password\" \"go away\"",
                Query::ClientDeny {
                    cid: 5,
                    kid: 1,
                    reason: "bad password".into(),
                    client_reason: Some("go away".into()),
                },
                "SUCCESS: client-deny command succeeded",
            ),
            (
                "client-pending-auth 6 1 WEB_AUTH::https://sso.example/x 120",
                Query::ClientPendingAuth {
                    cid: 6,
                    kid: 1,
                    extra: "WEB_AUTH::https://sso.example/x".into(),
                    timeout: 120,
                },
                "SUCCESS: client-pending-auth command succeeded",
            ),
        ];
        for (line, query, ok) in cases {
            assert_eq!(s.on_line(&mut sh, line), Step::Ask(query.clone()), "{line}");
            assert_eq!(s.answered(&query, Answer::Done(true)), format!("{ok}\r\n"));
        }
        let pending = Query::ClientPendingAuth {
            cid: 1,
            kid: 1,
            extra: String::new(),
            timeout: 1,
        };
        assert_eq!(
            s.answered(&pending, Answer::Done(false)),
            "ERROR: client-pending-auth command failed. Extra parameter might be too long\r\n"
        );
    }

    #[test]
    fn server_answers_as_in_openvpn() {
        // vectors/server_commands.txt and vectors/server_kill.txt
        let mut sh = shared();
        let mut s = Session::new(None);
        let load = LoadStats {
            clients: 1,
            bytes_in: 2035,
            bytes_out: 2012,
        };
        let cases = [
            (
                "kill client1",
                Answer::Killed(1),
                "SUCCESS: common name 'client1' found, 1 client(s) killed",
            ),
            (
                "kill nobody",
                Answer::Killed(0),
                "ERROR: common name 'nobody' not found",
            ),
            (
                "kill 1.2.3.4",
                Answer::Killed(0),
                "ERROR: common name '1.2.3.4' not found",
            ),
            (
                "kill 127.0.0.1:59990",
                Answer::Killed(1),
                "SUCCESS: 1 client(s) at address 127.0.0.1:59990 killed",
            ),
            (
                "kill 1.2.3.4:5",
                Answer::Killed(0),
                "ERROR: client at address 1.2.3.4:5 not found",
            ),
            (
                "kill 1.2.3.4:0",
                Answer::Killed(0),
                "ERROR: port number is out of range: 0",
            ),
            (
                "kill x.y:5",
                Answer::Killed(0),
                "ERROR: error parsing IP address: x.y",
            ),
            (
                "client-kill 99",
                Answer::Done(false),
                "ERROR: client-kill command failed",
            ),
            (
                "client-kill 2 HALT",
                Answer::Done(true),
                "SUCCESS: client-kill command succeeded",
            ),
            (
                "load-stats",
                Answer::Load(load),
                "SUCCESS: nclients=1,bytesin=2035,bytesout=2012",
            ),
            (
                "status 3",
                Answer::Text("TITLE\tx\nEND\n".into()),
                "TITLE\tx\r\nEND",
            ),
            (
                "signal SIGTERM",
                Answer::Done(true),
                "SUCCESS: signal SIGTERM thrown",
            ),
        ];
        for (line, answer, expected) in cases {
            let reply = match s.on_line(&mut sh, line) {
                Step::Ask(q) => s.answered(&q, answer),
                Step::Send(t) => t,
                other => panic!("{line}: {other:?}"),
            };
            assert_eq!(reply, format!("{expected}\r\n"), "{line}");
        }
    }

    fn client_shared() -> Shared {
        Shared {
            mode: Mode::Client,
            hold: true,
            holding: true,
            ..shared()
        }
    }

    fn reply_to(s: &mut Session, sh: &mut Shared, line: &str) -> String {
        match s.on_line(sh, line) {
            Step::Send(t) => t.trim_end().to_string(),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn client_commands_as_the_stock_client() {
        // vectors/client_commands.txt
        let mut sh = client_shared();
        let mut s = Session::new(None);
        assert_eq!(
            s.greeting(&sh),
            ">INFO:OpenVPN Management Interface Version 5 -- type 'help' for more info\r\n>HOLD:Waiting for hold release:0\r\n"
        );
        for (line, expected) in [
            ("hold", "SUCCESS: hold=1"),
            (
                "username Auth x",
                "ERROR: no username is currently needed at this time",
            ),
            (
                "password Auth y",
                "ERROR: no password is currently needed at this time",
            ),
            (
                "needok x ok",
                "ERROR: no needok-confirmation is currently needed at this time",
            ),
            (
                "needstr x y",
                "ERROR: no needstr-string is currently needed at this time",
            ),
            (
                "kill x",
                "ERROR: The 'kill' command is not supported by the current daemon mode",
            ),
            (
                "client-kill 1",
                "ERROR: The 'client-kill' command is not supported by the current daemon mode",
            ),
            (
                "nclients",
                "ERROR: The 'nclients' command is not supported by the current daemon mode",
            ),
            (
                "client-auth 1 2",
                "ERROR: The 'client-auth' command is not supported by the current daemon mode",
            ),
            ("bytecount 1", "SUCCESS: bytecount interval changed"),
            ("hold release", "SUCCESS: hold release succeeded"),
        ] {
            assert_eq!(reply_to(&mut s, &mut sh, line), expected, "{line}");
        }
        assert!(sh.hold_released);
        // A client's byte counts and status come from the runtime.
        assert_eq!(s.on_line(&mut sh, "status"), Step::Ask(Query::Status(1)));
        assert_eq!(
            s.answered(
                &Query::ByteCounts,
                Answer::ClientBytes {
                    received: 1854,
                    sent: 1029
                }
            ),
            ">BYTECOUNT:1854,1029\r\n"
        );
        assert_eq!(
            s.on_line(&mut sh, "load-stats"),
            Step::Ask(Query::LoadStats)
        );
    }

    /// `remote` and `proxy` as 2.6 takes them (init.c,
    /// `management_callback_remote_cmd` / `_proxy_cmd`).
    #[test]
    fn remote_and_proxy_answer_the_entry_question() {
        let mut sh = client_shared();
        let mut s = Session::new(None);
        // Before the first hold is released 2.6 has no such commands yet.
        assert_eq!(
            reply_to(&mut s, &mut sh, "cr-response x"),
            "ERROR: The 'cr-repsonse' command is not supported by the current daemon mode"
        );
        sh.started = true;
        // Nothing asked: `remote` fails, `proxy` answers but changes nothing.
        assert_eq!(
            reply_to(&mut s, &mut sh, "remote ACCEPT"),
            "ERROR: remote command failed"
        );
        assert_eq!(
            reply_to(&mut s, &mut sh, "proxy NONE"),
            "SUCCESS: proxy command succeeded"
        );
        sh.entry_query = Some(EntryQuery::remote(">REMOTE:h,1194,udp".into()));
        assert!(welcome(&sh).contains(">REMOTE:h,1194,udp\r\n"));
        for (bad, reply) in [
            ("remote FOO", "ERROR: remote command failed"),
            ("remote MOD h", "ERROR: remote command failed"),
            ("remote MOD h http", "ERROR: remote command failed"),
            ("proxy NONE", "SUCCESS: proxy command succeeded"),
        ] {
            assert_eq!(reply_to(&mut s, &mut sh, bad), reply, "{bad}");
            assert!(!sh.entry_query.as_ref().unwrap().answered(), "{bad}");
        }
        assert_eq!(
            reply_to(&mut s, &mut sh, "remote MOD other.example 1234"),
            "SUCCESS: remote command succeeded"
        );
        assert_eq!(
            sh.entry_query,
            Some(EntryQuery::Remote {
                prompt: ">REMOTE:h,1194,udp".into(),
                answer: Some(RemoteAnswer::Modify {
                    host: "other.example".into(),
                    port: 1234
                })
            })
        );
        // Answered: a second answer fails.
        assert_eq!(
            reply_to(&mut s, &mut sh, "remote ACCEPT"),
            "ERROR: remote command failed"
        );
        for (skip, n) in [
            ("remote SKIP", 1),
            ("remote SKIP 3", 3),
            ("remote SKIP -2", 1),
        ] {
            sh.entry_query = Some(EntryQuery::remote(String::new()));
            assert_eq!(
                reply_to(&mut s, &mut sh, skip),
                "SUCCESS: remote command succeeded"
            );
            assert!(
                matches!(&sh.entry_query, Some(EntryQuery::Remote { answer: Some(RemoteAnswer::Skip(k)), .. }) if *k == n),
                "{skip}"
            );
        }
        // `proxy HTTP` on a UDP entry fails and the question waits.
        sh.entry_udp = true;
        sh.entry_query = Some(EntryQuery::proxy(">PROXY:1,UDP,h".into()));
        assert_eq!(
            reply_to(&mut s, &mut sh, "proxy HTTP p 8080"),
            "ERROR: proxy command failed"
        );
        assert!(!sh.entry_query.as_ref().unwrap().answered());
        assert_eq!(
            reply_to(&mut s, &mut sh, "proxy SOCKS p 1080"),
            "SUCCESS: proxy command succeeded"
        );
        assert!(matches!(
            &sh.entry_query,
            Some(EntryQuery::Proxy {
                answer: Some(ProxyAnswer::Socks { port: 1080, .. }),
                ..
            })
        ));
        // A bad `proxy` fails and ends the question as configured.
        sh.entry_query = Some(EntryQuery::proxy(String::new()));
        assert_eq!(
            reply_to(&mut s, &mut sh, "proxy HTTP"),
            "ERROR: proxy command failed"
        );
        assert!(matches!(
            &sh.entry_query,
            Some(EntryQuery::Proxy {
                answer: Some(ProxyAnswer::AsConfigured),
                ..
            })
        ));
        sh.entry_udp = false;
        sh.entry_query = Some(EntryQuery::proxy(String::new()));
        assert_eq!(
            reply_to(&mut s, &mut sh, "proxy HTTP p 8080 nct"),
            "SUCCESS: proxy command succeeded"
        );
        assert!(matches!(
            &sh.entry_query,
            Some(EntryQuery::Proxy {
                answer: Some(ProxyAnswer::Http { nct: true, .. }),
                ..
            })
        ));
        // cr-response goes to the client's session; on a server 2.6
        // misspells the command in its refusal.
        assert_eq!(
            s.on_line(&mut sh, "cr-response NDcxMQ=="),
            Step::Ask(Query::ControlMessage("CR_RESPONSE,NDcxMQ==".into()))
        );
        let mut server = shared();
        for (line, reply) in [
            (
                "cr-response x",
                "ERROR: The 'cr-repsonse' command is not supported by the current daemon mode",
            ),
            (
                "remote ACCEPT",
                "ERROR: The 'remote' command is not supported by the current daemon mode",
            ),
            (
                "proxy NONE",
                "ERROR: The 'proxy' command is not supported by the current daemon mode",
            ),
        ] {
            assert_eq!(reply_to(&mut Session::new(None), &mut server, line), reply);
        }
    }

    /// `remote-entry-count` / `remote-entry-get` as 2.6.14 answers them
    /// (manage.c `man_remote_entry_*`, init.c
    /// `management_callback_remote_entry_get`).
    #[test]
    fn remote_entries_as_the_stock_client() {
        let mut sh = client_shared();
        sh.remote_entries = vec![
            "10.0.0.1,1194,udp,enabled".into(),
            "vpn.example,443,tcp-client,enabled".into(),
            "10.0.0.3,1196,udp6,enabled".into(),
        ];
        let mut s = Session::new(None);
        let lines = |s: &mut Session, sh: &mut Shared, l: &str| text(s.on_line(sh, l));
        // Before the first hold is released 2.6 has no such commands yet.
        for name in ["remote-entry-count", "remote-entry-get all"] {
            let cmd = name.split(' ').next().unwrap();
            assert_eq!(
                lines(&mut s, &mut sh, name),
                format!(
                    "ERROR: The '{cmd}' command is not supported by the current daemon mode\r\n"
                )
            );
        }
        sh.started = true;
        assert_eq!(lines(&mut s, &mut sh, "remote-entry-count"), "3\r\nEND\r\n");
        let all = "0,10.0.0.1,1194,udp,enabled\r\n1,vpn.example,443,tcp-client,enabled\r\n2,10.0.0.3,1196,udp6,enabled\r\nEND\r\n";
        for (line, expected) in [
            ("remote-entry-get all", all),
            ("remote-entry-get all 1", all),
            ("remote-entry-get 0 99", all),
            (
                "remote-entry-get 1",
                "1,vpn.example,443,tcp-client,enabled\r\nEND\r\n",
            ),
            (
                "remote-entry-get 1 3",
                "1,vpn.example,443,tcp-client,enabled\r\n2,10.0.0.3,1196,udp6,enabled\r\nEND\r\n",
            ),
            // atoi: no digits is 0, trailing junk ignored.
            (
                "remote-entry-get x",
                "0,10.0.0.1,1194,udp,enabled\r\nEND\r\n",
            ),
            (
                "remote-entry-get 2abc",
                "2,10.0.0.3,1196,udp6,enabled\r\nEND\r\n",
            ),
            // Past the end, backwards, negative (a huge unsigned), and
            // the largest index (FROM+1 wraps to 0): only END.
            ("remote-entry-get 3", "END\r\n"),
            ("remote-entry-get 2 1", "END\r\n"),
            ("remote-entry-get -1", "END\r\n"),
            ("remote-entry-get 4294967295", "END\r\n"),
            // Past i64: strtol saturates, and the low 32 bits are all ones.
            ("remote-entry-get 99999999999999999999 3", "END\r\n"),
            // 2^32 cut to 32 bits is 0.
            (
                "remote-entry-get 4294967296",
                "0,10.0.0.1,1194,udp,enabled\r\nEND\r\n",
            ),
        ] {
            assert_eq!(lines(&mut s, &mut sh, line), expected, "{line}");
        }
        assert_eq!(
            lines(&mut s, &mut sh, "remote-entry-get"),
            "ERROR: the 'remote-entry-get' command requires at least 1 parameter\r\n"
        );
        // A server has none of them.
        let mut server = shared();
        for (line, cmd) in [
            ("remote-entry-count", "remote-entry-count"),
            ("remote-entry-get all", "remote-entry-get"),
        ] {
            assert_eq!(
                lines(&mut Session::new(None), &mut server, line),
                format!(
                    "ERROR: The '{cmd}' command is not supported by the current daemon mode\r\n"
                )
            );
        }
    }

    #[test]
    fn client_password_query_as_the_stock_client() {
        // vectors/client_connect_restart.txt, client_private_key.txt
        let mut sh = client_shared();
        sh.password_query = Some(PasswordQuery::new("Auth", true, None));
        let q = sh.password_query.clone().unwrap();
        assert_eq!(q.prompt(), ">PASSWORD:Need 'Auth' username/password");
        assert_eq!(
            PasswordQuery::new("Auth", true, Some((true, "Enter PIN".into()))).prompt(),
            ">PASSWORD:Need 'Auth' username/password SC:1,Enter PIN"
        );
        assert_eq!(
            PasswordQuery::new("Auth", false, None).prompt(),
            ">PASSWORD:Need 'Auth' password"
        );
        let mut s = Session::new(None);
        // Whoever connects while the client waits is asked.
        assert!(
            s.greeting(&sh)
                .ends_with(">PASSWORD:Need 'Auth' username/password\r\n")
        );
        assert_eq!(
            reply_to(&mut s, &mut sh, "password \"Private Key\" keypw"),
            "ERROR: password of type 'Private Key' entered, but we need one of type 'Auth'"
        );
        assert_eq!(
            reply_to(&mut s, &mut sh, "password Auth \"s3cret pass\""),
            "SUCCESS: 'Auth' password entered, but not yet verified"
        );
        assert!(!sh.password_query.as_ref().unwrap().complete());
        assert_eq!(
            reply_to(&mut s, &mut sh, "username \"Auth\" alice"),
            "SUCCESS: 'Auth' username entered, but not yet verified"
        );
        let q = sh.password_query.as_ref().unwrap();
        assert!(q.complete());
        assert_eq!(q.username.as_deref(), Some("alice"));
        assert_eq!(q.password.as_deref(), Some("s3cret pass"));
        // Only the password wanted: a user name is not taken.
        sh.password_query = Some(PasswordQuery::new("Auth", false, None));
        assert_eq!(
            reply_to(&mut s, &mut sh, "username Auth bob"),
            "ERROR: no username is currently needed at this time"
        );
        // The password command is never written to the log history.
        assert!(sh.log.last(None).all(|l| !l.contains("s3cret")));
    }

    #[test]
    fn lines_split_and_bounded() {
        let mut b = LineBuffer::default();
        assert_eq!(b.push(b"pi"), vec![]);
        assert_eq!(
            b.push(b"d\r\nsta\x01tus 3\n"),
            vec![Ok("pid".to_string()), Ok("status 3".to_string())]
        );
        let long = vec![b'x'; MAX_LINE + 10];
        assert_eq!(b.push(&long), vec![]);
        assert_eq!(b.push(b"\npid\n"), vec![Err(LineTooLong), Ok("pid".into())]);
    }

    #[test]
    fn status_versions() {
        let mut sh = shared();
        let mut s = Session::new(None);
        for (cmd, v) in [
            ("status", 1),
            ("status 2", 2),
            ("status 3", 3),
            ("status 9", 1),
        ] {
            assert_eq!(s.on_line(&mut sh, cmd), Step::Ask(Query::Status(v)));
        }
    }
}
