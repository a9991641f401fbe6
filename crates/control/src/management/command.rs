//! Management commands as OpenVPN 2.6 reads them: one line, split into
//! words by the same rules as a config line (double quotes with `\\`, `\"`
//! and `\ ` escapes, single quotes taken literally, `#`/`;` starting a
//! comment), at most 16 words of at most 255 bytes each. Pure code, no I/O.

/// Most words one command line gives (2.6's `MAX_PARMS`).
pub const MAX_WORDS: usize = 16;
/// Longest word (2.6's `OPTION_PARM_SIZE` less its terminator).
pub const MAX_WORD_LEN: usize = 255;

/// Split a command line into words, or give the `ERROR: ...` line 2.6
/// answers for a line it cannot split.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    #[derive(PartialEq)]
    enum State {
        Between,
        Unquoted,
        Double,
        Single,
    }
    let mut words = Vec::new();
    let mut word: Vec<u8> = Vec::new();
    let mut state = State::Between;
    let mut escaped = false;
    // The terminating NUL of the C string ends the last unquoted word.
    for c in line.bytes().chain(std::iter::once(0)) {
        if words.len() >= MAX_WORDS {
            break;
        }
        if !escaped && c == b'\\' && state != State::Single {
            escaped = true;
            continue;
        }
        let is_space = c == 0 || c.is_ascii_whitespace();
        let mut keep = None;
        let mut done = false;
        match state {
            State::Between => {
                if !is_space {
                    if c == b'#' || c == b';' {
                        break;
                    }
                    if !escaped && c == b'"' {
                        state = State::Double;
                    } else if !escaped && c == b'\'' {
                        state = State::Single;
                    } else {
                        keep = Some(c);
                        state = State::Unquoted;
                    }
                }
            }
            State::Unquoted => {
                if !escaped && is_space {
                    done = true;
                } else {
                    keep = Some(c);
                }
            }
            State::Double => {
                if !escaped && c == b'"' {
                    done = true;
                } else {
                    keep = Some(c);
                }
            }
            State::Single => {
                if c == b'\'' {
                    done = true;
                } else {
                    keep = Some(c);
                }
            }
        }
        if done {
            words.push(String::from_utf8_lossy(&word).into_owned());
            word.clear();
            state = State::Between;
        }
        if escaped
            && let Some(k) = keep
            && !(k == b'\\' || k == b'"' || k == 0 || k.is_ascii_whitespace())
        {
            return Err("ERROR: Options warning: Bad backslash ('\\') usage in TCP:0: remember that backslashes are treated as shell-escapes and if you need to pass backslash characters as part of a Windows filename, you should use double backslashes such as \"c:\\\\OpenVPN\\\\static.key\"".into());
        }
        escaped = false;
        if let Some(k) = keep.filter(|&k| k != 0) {
            if word.len() >= MAX_WORD_LEN {
                return Err(format!(
                    "ERROR: Options error: Parameter at TCP:0 is too long ({} chars max): {}",
                    MAX_WORD_LEN + 1,
                    String::from_utf8_lossy(&word)
                ));
            }
            word.push(k);
        }
    }
    match state {
        State::Double => Err("ERROR: Options error: No closing quotation (\") in TCP:0".into()),
        State::Single => {
            Err("ERROR: Options error: No closing single quotation (') in TCP:0".into())
        }
        State::Unquoted if words.len() < MAX_WORDS => {
            Err("ERROR: Options error: Residual parse state (2) in TCP:0".into())
        }
        _ => Ok(words),
    }
}

/// C's `atoi`: optional blanks and sign, then digits; 0 when there are none.
pub fn atoi(s: &str) -> i64 {
    let s = s.trim_start();
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut n: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg { -n } else { n }
}

/// `sscanf("%lu")` as 2.6 reads a client or key id: leading digits, the
/// rest ignored; `None` when there is no digit.
fn leading_number(s: &str) -> Option<u64> {
    let s = s.trim_start();
    let s = s.strip_prefix('+').unwrap_or(s);
    let end = s.bytes().take_while(u8::is_ascii_digit).count();
    if end == 0 {
        return None;
    }
    // Out of range saturates rather than wrapping: no client has such an id.
    Some(s[..end].parse().unwrap_or(u64::MAX))
}

/// One argument of `state`, `log` and `echo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryArg {
    On,
    Off,
    /// `all`, or the last N entries.
    Last(Option<usize>),
    Invalid,
}

impl HistoryArg {
    fn parse(s: &str) -> Self {
        match s {
            "on" => Self::On,
            "off" => Self::Off,
            "all" => Self::Last(None),
            _ => match atoi(s) {
                n if n > 0 => Self::Last(Some(usize::try_from(n).unwrap_or(usize::MAX))),
                _ => Self::Invalid,
            },
        }
    }
}

/// `hold` and its argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    Show,
    On,
    Off,
    Release,
    Invalid,
}

/// A command, its arguments checked the way 2.6 checks them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Quit,
    Help,
    Version,
    /// `version N`: the client announces which management version it speaks.
    ClientVersion(i64),
    Pid,
    LoadStats,
    NClients,
    /// `status [N]` (`atoi`, so `status x` is version 0).
    Status(i64),
    /// `kill CN` or `kill IP:port`.
    Kill(String),
    Verb(Option<i64>),
    Mute(Option<i64>),
    State(Vec<HistoryArg>),
    Log(Vec<HistoryArg>),
    Echo(Vec<HistoryArg>),
    Hold(Hold),
    Bytecount(i64),
    Signal(String),
    ClientKill {
        cid: u64,
        message: Option<String>,
    },
    /// `client-auth CID KID`: a config block follows, up to a line `END`.
    ClientAuth {
        cid: u64,
        kid: u32,
    },
    ClientAuthNt {
        cid: u64,
        kid: u32,
    },
    ClientDeny {
        cid: u64,
        kid: u32,
        reason: String,
        client_reason: Option<String>,
    },
    ClientPendingAuth {
        cid: u64,
        kid: u32,
        extra: String,
        timeout: u32,
    },
    Username {
        kind: String,
        value: String,
    },
    Password {
        kind: String,
        value: String,
    },
    ForgetPasswords,
    EnvFilter(i64),
    /// `remote ACTION [ARGS]` (the words after `remote`).
    Remote(Vec<String>),
    /// `proxy TYPE [HOST PORT [nct]]` (the words after `proxy`).
    Proxy(Vec<String>),
    /// `cr-response BASE64`: the answer to a `CR_TEXT` challenge.
    CrResponse(String),
    /// `remote-entry-count`: how many connection entries a client has.
    RemoteEntryCount,
    /// `remote-entry-get FROM [TO]`: connection entries FROM..TO (or
    /// FROM alone), or every one for `all`, as the words were given.
    RemoteEntryGet {
        from: String,
        to: Option<String>,
    },
    /// A command 2.6 knows that has no meaning for a ferrovpn server.
    NotInThisMode(String),
}

/// What one line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Nothing to do (an empty line or a comment).
    Nothing,
    Command(Command),
    /// The reply, without running anything (bad arguments, unknown command).
    Reply(String),
}

fn need(words: &[String], n: usize, at_least: bool) -> Result<(), String> {
    if words.len() > n {
        return Ok(());
    }
    Err(format!(
        "ERROR: the '{}' command requires {}{} parameter{}",
        words[0],
        if at_least { "at least " } else { "" },
        n,
        if n > 1 { "s" } else { "" }
    ))
}

fn cid(s: &str) -> Result<u64, String> {
    leading_number(s).ok_or_else(|| "ERROR: cannot parse CID".to_string())
}

fn kid(s: &str) -> Result<u32, String> {
    leading_number(s)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| "ERROR: cannot parse KID".to_string())
}

/// Parse one command line (without its line end).
pub fn parse(line: &str) -> Parsed {
    match split_words(line) {
        Err(reply) => Parsed::Reply(reply),
        Ok(words) if words.is_empty() => Parsed::Nothing,
        Ok(words) => match command(&words) {
            Ok(c) => Parsed::Command(c),
            Err(reply) => Parsed::Reply(reply),
        },
    }
}

fn command(w: &[String]) -> Result<Command, String> {
    let arg = |i: usize| w.get(i).map(String::as_str);
    let history = || {
        w[1..w.len().min(3)]
            .iter()
            .map(|a| HistoryArg::parse(a))
            .collect()
    };
    Ok(match w[0].as_str() {
        "exit" | "quit" => Command::Quit,
        "help" => Command::Help,
        "version" => match arg(1) {
            Some(v) => Command::ClientVersion(atoi(v)),
            None => Command::Version,
        },
        "pid" => Command::Pid,
        "load-stats" => Command::LoadStats,
        "nclients" => Command::NClients,
        "status" => Command::Status(arg(1).map_or(0, atoi)),
        "kill" => {
            need(w, 1, false)?;
            Command::Kill(w[1].clone())
        }
        "verb" => Command::Verb(arg(1).map(atoi)),
        "mute" => Command::Mute(arg(1).map(atoi)),
        "state" => {
            if w.len() == 1 {
                Command::State(vec![HistoryArg::Last(Some(1))])
            } else {
                Command::State(history())
            }
        }
        "log" => {
            need(w, 1, true)?;
            Command::Log(history())
        }
        "echo" => {
            need(w, 1, true)?;
            Command::Echo(history())
        }
        "hold" => Command::Hold(match arg(1) {
            None => Hold::Show,
            Some("on") => Hold::On,
            Some("off") => Hold::Off,
            Some("release") => Hold::Release,
            Some(_) => Hold::Invalid,
        }),
        "bytecount" => {
            need(w, 1, false)?;
            Command::Bytecount(atoi(&w[1]))
        }
        "signal" => {
            need(w, 1, false)?;
            Command::Signal(w[1].clone())
        }
        "client-kill" => {
            need(w, 1, true)?;
            Command::ClientKill {
                cid: cid(&w[1])?,
                message: arg(2).map(String::from),
            }
        }
        "client-auth" | "client-auth-nt" => {
            need(w, 2, false)?;
            let (cid, kid) = (cid(&w[1])?, kid(&w[2])?);
            if w[0] == "client-auth" {
                Command::ClientAuth { cid, kid }
            } else {
                Command::ClientAuthNt { cid, kid }
            }
        }
        "client-deny" => {
            need(w, 3, true)?;
            Command::ClientDeny {
                cid: cid(&w[1])?,
                kid: kid(&w[2])?,
                reason: w[3].clone(),
                client_reason: arg(4).map(String::from),
            }
        }
        "client-pending-auth" => {
            need(w, 4, false)?;
            Command::ClientPendingAuth {
                cid: cid(&w[1])?,
                kid: kid(&w[2])?,
                extra: w[3].clone(),
                timeout: leading_number(&w[4])
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| "ERROR: cannot parse TIMEOUT".to_string())?,
            }
        }
        "username" | "password" => {
            need(w, 2, false)?;
            let (kind, value) = (w[1].clone(), w[2].clone());
            if w[0] == "username" {
                Command::Username { kind, value }
            } else {
                Command::Password { kind, value }
            }
        }
        "forget-passwords" => Command::ForgetPasswords,
        "env-filter" => Command::EnvFilter(arg(1).map_or(0, atoi)),
        "remote" | "proxy" => {
            need(w, 1, true)?;
            if w[0] == "remote" {
                Command::Remote(w[1..].to_vec())
            } else {
                Command::Proxy(w[1..].to_vec())
            }
        }
        "cr-response" => {
            need(w, 1, false)?;
            Command::CrResponse(w[1].clone())
        }
        "remote-entry-count" => Command::RemoteEntryCount,
        "remote-entry-get" => {
            need(w, 1, true)?;
            Command::RemoteEntryGet {
                from: w[1].clone(),
                to: arg(2).map(String::from),
            }
        }
        name @ ("auth-retry" | "needok" | "needstr" | "net" | "rsa-sig" | "pk-sig"
        | "certificate" | "pkcs11-id-count" | "pkcs11-id-get" | "test") => {
            Command::NotInThisMode(name.to_string())
        }
        _ => return Err("ERROR: unknown command, enter 'help' for more options".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<String> {
        split_words(line).unwrap()
    }

    #[test]
    fn quoting_as_in_openvpn() {
        assert_eq!(words("kill  client1 "), ["kill", "client1"]);
        assert_eq!(
            words(r#"client-deny 3 1 "bad \"guy\"" 'a \ b'"#),
            ["client-deny", "3", "1", "bad \"guy\"", "a \\ b"]
        );
        assert_eq!(words(r"kill a\ b"), ["kill", "a b"]);
        assert_eq!(words(r#"echo "" x"#), ["echo", "", "x"]);
        assert_eq!(words("  # a comment"), Vec::<String>::new());
        assert_eq!(words("kill x ;rest"), ["kill", "x"]);
        assert_eq!(words("kill x#y"), ["kill", "x#y"]);
        // At most 16 words; the rest of the line is dropped.
        let many = (0..20).map(|i| i.to_string()).collect::<Vec<_>>().join(" ");
        assert_eq!(words(&many).len(), MAX_WORDS);
    }

    #[test]
    fn tokenizer_errors_as_in_openvpn() {
        assert_eq!(
            split_words(r#"kill "abc"#).unwrap_err(),
            "ERROR: Options error: No closing quotation (\") in TCP:0"
        );
        assert_eq!(
            split_words("kill 'abc").unwrap_err(),
            "ERROR: Options error: No closing single quotation (') in TCP:0"
        );
        assert!(
            split_words(r"kill a\b")
                .unwrap_err()
                .starts_with("ERROR: Options warning: Bad backslash")
        );
        let long = format!("kill {}", "x".repeat(300));
        assert!(split_words(&long).unwrap_err().starts_with(
            "ERROR: Options error: Parameter at TCP:0 is too long (256 chars max): xxx"
        ));
        assert_eq!(words(&format!("kill {}", "x".repeat(255)))[1].len(), 255);
    }

    #[test]
    fn arguments_checked_as_in_openvpn() {
        // Replies recorded from OpenVPN 2.6.3 (vectors/*.txt).
        let reply = |l: &str| match parse(l) {
            Parsed::Reply(r) => r,
            other => panic!("{l}: {other:?}"),
        };
        assert_eq!(
            reply("foo"),
            "ERROR: unknown command, enter 'help' for more options"
        );
        assert_eq!(
            reply("bytecount"),
            "ERROR: the 'bytecount' command requires 1 parameter"
        );
        assert_eq!(
            reply("client-kill"),
            "ERROR: the 'client-kill' command requires at least 1 parameter"
        );
        assert_eq!(
            reply("signal"),
            "ERROR: the 'signal' command requires 1 parameter"
        );
        assert_eq!(
            reply("client-deny 1 2"),
            "ERROR: the 'client-deny' command requires at least 3 parameters"
        );
        assert_eq!(reply("client-auth x 1"), "ERROR: cannot parse CID");
        assert_eq!(
            reply("remote"),
            "ERROR: the 'remote' command requires at least 1 parameter"
        );
        assert_eq!(
            reply("proxy"),
            "ERROR: the 'proxy' command requires at least 1 parameter"
        );
        assert_eq!(
            reply("cr-response"),
            "ERROR: the 'cr-response' command requires 1 parameter"
        );
        assert_eq!(reply("client-auth 1 y"), "ERROR: cannot parse KID");
        assert_eq!(
            reply("remote-entry-get"),
            "ERROR: the 'remote-entry-get' command requires at least 1 parameter"
        );
        assert_eq!(parse(""), Parsed::Nothing);
    }

    #[test]
    fn commands() {
        let cmd = |l: &str| match parse(l) {
            Parsed::Command(c) => c,
            other => panic!("{l}: {other:?}"),
        };
        assert_eq!(cmd("status"), Command::Status(0));
        assert_eq!(cmd("status 3"), Command::Status(3));
        assert_eq!(
            cmd("state"),
            Command::State(vec![HistoryArg::Last(Some(1))])
        );
        assert_eq!(
            cmd("log on all"),
            Command::Log(vec![HistoryArg::On, HistoryArg::Last(None)])
        );
        assert_eq!(cmd("state bar"), Command::State(vec![HistoryArg::Invalid]));
        assert_eq!(cmd("hold release"), Command::Hold(Hold::Release));
        assert_eq!(
            cmd("client-kill 12 HALT"),
            Command::ClientKill {
                cid: 12,
                message: Some("HALT".into())
            }
        );
        assert_eq!(
            cmd(r#"client-deny 4 0 "bad password" "go away""#),
            Command::ClientDeny {
                cid: 4,
                kid: 0,
                reason: "bad password".into(),
                client_reason: Some("go away".into()),
            }
        );
        assert_eq!(
            cmd("client-pending-auth 1 2 WEB_AUTH::https://example.com/x 30"),
            Command::ClientPendingAuth {
                cid: 1,
                kid: 2,
                extra: "WEB_AUTH::https://example.com/x".into(),
                timeout: 30
            }
        );
        assert_eq!(
            cmd(r#"password "Auth" "p a\"ss""#),
            Command::Password {
                kind: "Auth".into(),
                value: "p a\"ss".into()
            }
        );
        assert_eq!(
            cmd("kill 10.0.0.1:1194"),
            Command::Kill("10.0.0.1:1194".into())
        );
        assert_eq!(cmd("bytecount 5x"), Command::Bytecount(5));
        assert_eq!(cmd("quit"), Command::Quit);
        assert_eq!(
            cmd("remote MOD vpn.example.com 1234"),
            Command::Remote(vec!["MOD".into(), "vpn.example.com".into(), "1234".into()])
        );
        assert_eq!(
            cmd("proxy HTTP proxy.intranet 8080 nct"),
            Command::Proxy(vec![
                "HTTP".into(),
                "proxy.intranet".into(),
                "8080".into(),
                "nct".into()
            ])
        );
        assert_eq!(
            cmd("cr-response SGFsbG8gV2VsdCE="),
            Command::CrResponse("SGFsbG8gV2VsdCE=".into())
        );
    }

    #[test]
    fn atoi_like_c() {
        assert_eq!(atoi("12abc"), 12);
        assert_eq!(atoi(" -3"), -3);
        assert_eq!(atoi("x"), 0);
        assert_eq!(atoi("99999999999999999999999"), i64::MAX);
    }
}
