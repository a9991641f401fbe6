//! A management-interface client for the tests: one connection over the
//! server's unix socket, reading line by line with deadlines, keeping what
//! it read for failure messages. And the pieces of the tests that run one
//! management script against a stock 2.6 daemon and a ferrovpn one and
//! compare what both showed: [`held_client`], [`client_lines`],
//! [`normalized`], [`same_as_stock`]; for servers,
//! [`server_conf_with_management`], [`wait_connected_in_state_all`],
//! [`transcript_to_exit`], [`server_transcripts_as_stock`].

use std::collections::HashMap;
use std::fmt::Debug;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::lab::wait_exit;
use crate::{Cipher, Implementation, Lab, Material, Proc, ServerConf, Wrap, wait_until};

/// How long one reply may take before a test fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// The lab's server config (tls-crypt with the key file `tc.key`,
/// AES-256-GCM) with its management interface on the unix socket
/// `mgmt.sock` in the lab's directory (`management SOCKET unix`, then
/// `more` when not empty: a password file). Returns the config, the wrap
/// for the clients and the socket's path.
pub fn unix_management_conf(lab: &Lab, more: &str) -> (ServerConf, Wrap, PathBuf) {
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let sock = lab.dir.join("mgmt.sock");
    let mut sc = lab.server_conf(wrap.clone(), Cipher::Aes256Gcm);
    let line = format!("management {} unix {more}", sock.display());
    sc.extra.push(line.trim_end().to_string());
    (sc, wrap, sock)
}

/// The lab's server config (tls-crypt with the key file `tc.key`,
/// AES-256-GCM) with its management interface on the unix socket `socket`.
pub fn server_conf_with_management(lab: &Lab, socket: &Path) -> ServerConf {
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let mut sc = lab.server_conf(wrap, Cipher::Aes256Gcm);
    sc.extra
        .push(format!("management {} unix", socket.display()));
    sc
}

/// Poll `state all` on `m` (a server's interface, not held) until
/// CONNECTED is in the history, within [`REPLY_TIMEOUT`]: stock opens its
/// interface before its tunnel, so the first `state all` may not have it.
pub fn wait_connected_in_state_all(m: &mut Management) {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while !m
        .block("state all")
        .iter()
        .any(|l| l.contains(",CONNECTED,"))
    {
        assert!(Instant::now() < deadline, "never CONNECTED: {:?}", m.seen());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Read `m` until the interface closes (it does when the process exits),
/// then wait for `server` to exit successfully. Returns the lines read
/// from index `from` of [`Management::seen`] on, [`normalized`]. `name`
/// says whose transcript it is in failure messages.
pub fn transcript_to_exit(
    m: &mut Management,
    server: &mut Proc,
    from: usize,
    name: &str,
) -> Vec<String> {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    while m.line(deadline).is_some() {}
    assert!(
        Instant::now() < deadline,
        "{name}: the management interface did not close; read:\n{}",
        m.seen().join("\n")
    );
    let status = wait_exit(server, Duration::from_secs(10));
    assert!(
        status.success(),
        "{name}: {status:?}\n{}",
        server.log_tail(20)
    );
    m.seen()[from..].iter().map(|l| normalized(l)).collect()
}

/// Run `transcript` for a stock 2.6 server, then for a ferrovpn one,
/// assert both read the same lines (showing both when not), and return
/// ferrovpn's.
pub fn server_transcripts_as_stock(
    mut transcript: impl FnMut(Implementation) -> Vec<String>,
) -> Vec<String> {
    let stock = transcript(Implementation::Stock);
    let ours = transcript(Implementation::Ferrovpn);
    assert_eq!(
        ours,
        stock,
        "the ferrovpn server's management transcript differs from the stock server's:\nours:\n{}\nstock:\n{}",
        ours.join("\n"),
        stock.join("\n")
    );
    ours
}

/// Run the Python program `script` (a management consumer built on the
/// `openvpn-api` package from PyPI), written to `<name>.py` in the lab's
/// directory, in the server's namespace with `args`. It must succeed;
/// returns what it printed (also echoed to the test's output).
pub fn openvpn_api_probe(lab: &Lab, name: &str, script: &str, args: &[&str]) -> String {
    let probe = lab.dir.join(format!("{name}.py"));
    std::fs::write(&probe, script).unwrap();
    let mut argv = vec![probe.to_str().unwrap()];
    argv.extend(args);
    let out = lab.server_ns.command("python3", &argv).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "openvpn-api probe failed (is `pip install openvpn-api` done?):\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    text
}

/// The state names (`CONNECTED`, ...) of `states` ([`Management::states`]
/// or the lines of `state`, time cut) in order, repeats kept.
pub fn state_names(states: &[String]) -> Vec<String> {
    states
        .iter()
        .map(|s| s.split(',').next().unwrap_or("").to_string())
        .collect()
}

/// The state names of `m` ([`state_names`] of [`Management::states`]),
/// then its `RECONNECTING` and `EXITING` entries whole, for their reasons
/// (`SIGUSR1`, `private-key-password-failure`, ...).
pub fn state_names_and_reasons(m: &Management) -> Vec<String> {
    let states = m.states();
    let mut out = state_names(&states);
    out.extend(
        states
            .into_iter()
            .filter(|s| s.starts_with("RECONNECTING") || s.starts_with("EXITING")),
    );
    out
}

/// A client of `imp` in the lab's first client namespace from the config
/// `text` plus the lines `extra`, with its management interface on the
/// unix socket `<name>.sock` in the lab's directory and `management-hold`.
/// Returns the process and a connection to its management interface.
pub fn held_client(
    lab: &Lab,
    text: &str,
    imp: Implementation,
    name: &str,
    extra: &[String],
) -> (Proc, Management) {
    let socket = lab.dir.join(format!("{name}.sock"));
    let mut text = text.to_string();
    for l in [
        format!("management {} unix", socket.display()),
        "management-hold".to_string(),
    ]
    .iter()
    .chain(extra)
    {
        text.push_str(l);
        text.push('\n');
    }
    let p = lab.spawn(&lab.clients[0], name, imp, &text);
    let m = Management::connect_when_listening(&socket, Duration::from_secs(15));
    (p, m)
}

/// The lines a client's management interface showed on `m` that must be
/// the same for a stock and a ferrovpn client: replies, questions and
/// holds, and the state names (times and addresses cut); byte counts and
/// the greeting left out.
///
/// `GET_CONFIG` is left out too: 2.6 enters it from its once-a-second
/// connection check (forward.c `check_connection_established`), so it shows
/// the state only when the push reply comes later than that tick. Suite runs
/// saw the stock client show it on one connection and not the next: a
/// timing, not a behaviour, to compare.
pub fn client_lines(m: &Management) -> Vec<String> {
    m.seen()
        .iter()
        .filter_map(|l| match l.strip_prefix(">STATE:") {
            Some(s) => s
                .split(',')
                .nth(1)
                .filter(|n| *n != "GET_CONFIG")
                .map(|n| format!("STATE {n}")),
            None if l.starts_with(">BYTECOUNT") || l.starts_with(">INFO:") => None,
            None => Some(l.clone()),
        })
        .collect()
}

/// A transcript line with what differs per process cut: the time of state
/// entries (`>STATE:` lines and the lines of `state all`) and the
/// process's own environment values in `>UPDOWN:ENV` (`daemon_pid`,
/// `daemon_start_time`, the config file's name).
pub fn normalized(line: &str) -> String {
    for name in ["daemon_pid", "daemon_start_time", "config"] {
        let prefix = format!(">UPDOWN:ENV,{name}=");
        if line.starts_with(&prefix) {
            return format!("{prefix}*");
        }
    }
    let (head, entry) = match line.strip_prefix(">STATE:") {
        Some(rest) => (">STATE:", rest),
        None => ("", line),
    };
    match entry.split_once(',') {
        Some((time, rest)) if time.len() >= 9 && time.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{head}T,{rest}")
        }
        _ => line.to_string(),
    }
}

/// Run `script` for ferrovpn, then for stock 2.6 (a client or a server,
/// as the script starts), assert both returned the same, and return
/// ferrovpn's.
pub fn same_as_stock<T: PartialEq + Debug>(script: impl FnMut(Implementation) -> T) -> T {
    same_as_stock_or(script, String::new)
}

/// [`same_as_stock`], with `context` (say, a log's tail) in the failure
/// message.
pub fn same_as_stock_or<T: PartialEq + Debug>(
    mut script: impl FnMut(Implementation) -> T,
    context: impl FnOnce() -> String,
) -> T {
    let ours = script(Implementation::Ferrovpn);
    let stock = script(Implementation::Stock);
    assert_eq!(
        ours,
        stock,
        "ferrovpn's lines differ from stock 2.6's\n{}",
        context()
    );
    ours
}

/// A management connection over a unix socket.
pub struct Management {
    out: UnixStream,
    input: BufReader<UnixStream>,
    /// Everything read so far, for failure messages.
    seen: Vec<String>,
}

/// A `>CLIENT:EVENT,CID,KID` notification and its environment.
pub struct ClientEvent {
    pub cid: String,
    /// Empty for events without a key id (`DISCONNECT`).
    pub kid: String,
    pub env: HashMap<String, String>,
}

impl Management {
    /// Connect to the socket at `path`; panics when nothing listens there.
    pub fn connect(path: &Path) -> Management {
        let s = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", path.display()));
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        Management {
            out: s.try_clone().unwrap(),
            input: BufReader::new(s),
            seen: Vec::new(),
        }
    }

    /// Connect once something listens at `path` (a daemon creates its
    /// socket during start-up), waiting at most `timeout`.
    pub fn connect_when_listening(path: &Path, timeout: Duration) -> Management {
        let listening = wait_until(timeout, Duration::from_millis(50), || {
            UnixStream::connect(path).is_ok()
        });
        assert!(
            listening,
            "no management socket at {} within {timeout:?}",
            path.display()
        );
        Management::connect(path)
    }

    /// Every line read so far (for failure messages).
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// The `>STATE:` lines seen so far as `STATE,DESCRIPTION,...` (the
    /// time field cut, so two daemons' sequences compare equal).
    pub fn states(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|l| l.strip_prefix(">STATE:"))
            .map(|s| s.split_once(',').map_or(s, |(_, rest)| rest).to_string())
            .collect()
    }

    /// Send one command line.
    pub fn send(&mut self, line: &str) {
        self.out.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// The next line (without CRLF), or `None` at the deadline or end of
    /// stream. Every line must end in CRLF, as OpenVPN's do.
    pub fn line(&mut self, deadline: Instant) -> Option<String> {
        let mut buf = Vec::new();
        while Instant::now() < deadline {
            match self.input.read_until(b'\n', &mut buf) {
                Ok(0) => return None,
                Ok(_) if buf.ends_with(b"\n") => {
                    let l = String::from_utf8_lossy(&buf).trim_end().to_string();
                    assert!(buf.ends_with(b"\r\n"), "line without CRLF: {l:?}");
                    self.seen.push(l.clone());
                    return Some(l);
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("management read: {e}"),
            }
        }
        None
    }

    /// Read until a line satisfies `pred`; returns it, or panics after
    /// [`REPLY_TIMEOUT`] naming `what` it waited for.
    pub fn until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + REPLY_TIMEOUT;
        while let Some(l) = self.line(deadline) {
            if pred(&l) {
                return l;
            }
        }
        panic!(
            "no {what} from the management interface; read:\n{}",
            self.seen.join("\n")
        );
    }

    /// Send `cmd` and read its multi-line reply up to `END`, skipping `>`
    /// notifications.
    pub fn block(&mut self, cmd: &str) -> Vec<String> {
        self.send(cmd);
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut out = Vec::new();
        while let Some(l) = self.line(deadline) {
            if l == "END" {
                return out;
            }
            if !l.starts_with('>') {
                out.push(l);
            }
        }
        panic!("'{cmd}' got no END; read:\n{}", self.seen.join("\n"));
    }

    /// Send `cmd` and read its one-line `SUCCESS:`/`ERROR:` reply, skipping
    /// notifications.
    pub fn one(&mut self, cmd: &str) -> String {
        self.send(cmd);
        self.until(&format!("reply to '{cmd}'"), |l| {
            l.starts_with("SUCCESS:") || l.starts_with("ERROR:")
        })
    }

    /// The next `>CLIENT:{event},...` notification with its environment.
    pub fn client_event(&mut self, event: &str) -> ClientEvent {
        let prefix = format!(">CLIENT:{event},");
        let head = self.until(&prefix, |l| l.starts_with(&prefix));
        let args: Vec<&str> = head[prefix.len()..].split(',').collect();
        let mut env = HashMap::new();
        loop {
            let l = self.until("ENV line", |l| l.starts_with(">CLIENT:ENV,"));
            let var = &l[">CLIENT:ENV,".len()..];
            if var == "END" {
                break;
            }
            let (k, v) = var.split_once('=').unwrap_or((var, ""));
            env.insert(k.to_string(), v.to_string());
        }
        ClientEvent {
            cid: args[0].to_string(),
            kid: args.get(1).map_or(String::new(), |k| k.to_string()),
            env,
        }
    }
}
