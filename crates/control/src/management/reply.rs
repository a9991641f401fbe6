//! The text the management interface sends, in OpenVPN 2.6's layout: every
//! line ends with CRLF; multi-line replies end with `END`; notifications
//! start with `>`.

/// One line with its CRLF.
pub fn line(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push_str(s);
    out.push_str("\r\n");
    out
}

/// Text with `\n` line ends (such as a status report) as CRLF lines.
pub fn crlf(text: &str) -> String {
    text.lines().map(line).collect()
}

/// What this build answers to `version` as the daemon's title.
pub fn title() -> String {
    // Dashboards read the OpenVPN version from this line (`OpenVPN X.Y.Z`).
    format!(
        "ferrovpn {} (OpenVPN 2.6.14 compatible)",
        env!("CARGO_PKG_VERSION")
    )
}

pub fn version() -> String {
    line(&format!("OpenVPN Version: {}", title())) + &line("Management Version: 5") + &line("END")
}

/// `help`: the commands ferrovpn's server acts on, in 2.6's layout.
pub fn help() -> String {
    const LINES: &[&str] = &[
        "bytecount n            : Show bytes in/out, update every n secs (0=off).",
        "client-auth CID KID    : Authenticate client-id/key-id CID/KID (MULTILINE)",
        "client-auth-nt CID KID : Authenticate client-id/key-id CID/KID",
        "client-deny CID KID R [CR] : Deny auth client-id/key-id CID/KID with log reason",
        "                             text R and optional client reason text CR",
        "client-pending-auth CID KID MSG timeout : Ask client CID/KID to authenticate out of band",
        "client-kill CID [M]    : Kill client instance CID with message M (def=RESTART)",
        "echo [on|off] [N|all]  : Like log, but only show messages in echo buffer.",
        "exit|quit              : Close management session.",
        "help                   : Print this message.",
        "hold [on|off|release]  : Set/show hold flag to on/off state, or",
        "                         release current hold and start tunnel.",
        "kill cn                : Kill the client instance(s) having common name cn.",
        "kill IP:port           : Kill the client instance connecting from IP:port.",
        "load-stats             : Show global server load stats.",
        "log [on|off] [N|all]   : Turn on/off realtime log display",
        "                         + show last N lines or 'all' for entire history.",
        "mute                   : Show log mute level.",
        "nclients               : Show the number of connected clients.",
        "pid                    : Show process ID of the current OpenVPN process.",
        "signal s               : Send signal s to daemon,",
        "                         s = SIGHUP|SIGTERM|SIGUSR1|SIGUSR2.",
        "state [on|off] [N|all] : Like log, but show state history.",
        "status [n]             : Show current daemon status info using format #n.",
        "verb                   : Show log verbosity level.",
        "version                : Show current version of daemon.",
    ];
    let mut out = line(&format!("Management Interface for {}", title()));
    out += &line("Commands:");
    for l in LINES {
        out += &line(l);
    }
    out + &line("END")
}

/// A log or state history entry: `TIME,FLAGS,TEXT`.
pub fn log_entry(unix: u64, flags: &str, text: &str) -> String {
    format!("{unix},{flags},{text}")
}

/// A server's state history entry:
/// `TIME,STATE,DESCRIPTION,LOCAL_IP,REMOTE_IP,REMOTE_PORT,LOCAL_ADDR,LOCAL_PORT`,
/// then `,LOCAL_IPV6` when `local_ip6` is not empty (2.6's
/// `log_entry_print` adds that field only for a defined address).
pub fn state_entry(
    unix: u64,
    state: &str,
    description: &str,
    local_ip: &str,
    local_ip6: &str,
) -> String {
    let mut entry = format!("{unix},{state},{description},{local_ip},,,,");
    if !local_ip6.is_empty() {
        entry.push(',');
        entry.push_str(local_ip6);
    }
    entry
}

/// A client's state history entry, as 2.6 writes it on a client:
/// `TIME,STATE,DESCRIPTION,LOCAL_IP,REMOTE_IP,REMOTE_PORT,,` (2.6 leaves the
/// local address and port empty for an unbound client socket).
pub fn client_state_entry(unix: u64, s: &super::ClientState) -> String {
    format!(
        "{unix},{},{},{},{},{},,",
        s.state, s.description, s.local_ip, s.remote_ip, s.remote_port
    )
}

/// `>CLIENT:EVENT,ARGS` followed by its `>CLIENT:ENV` block.
pub fn client_event(event: &str, args: &str, env: &[(String, String)]) -> String {
    let mut out = line(&format!(">CLIENT:{event},{args}"));
    for (k, v) in env {
        // One variable per line: a line break inside a value would start a
        // line the consumer takes for a notification of its own.
        let v: String = v.chars().filter(|c| !c.is_control()).collect();
        out += &line(&format!(">CLIENT:ENV,{k}={v}"));
    }
    out + &line(">CLIENT:ENV,END")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        assert_eq!(crlf("a\nb\n"), "a\r\nb\r\n");
        assert!(version().ends_with("\r\nManagement Version: 5\r\nEND\r\n"));
        assert!(help().ends_with("END\r\n"));
        assert_eq!(
            state_entry(1_796_192_368, "CONNECTED", "SUCCESS", "10.9.0.1", ""),
            "1796192368,CONNECTED,SUCCESS,10.9.0.1,,,,"
        );
        assert_eq!(
            state_entry(1_796_192_368, "ASSIGN_IP", "", "10.9.0.1", "fd00::1"),
            "1796192368,ASSIGN_IP,,10.9.0.1,,,,,fd00::1"
        );
        assert_eq!(
            client_event(
                "ESTABLISHED",
                "0",
                &[
                    ("n_clients".into(), "1".into()),
                    ("common_name".into(), "evil\r\n>CLIENT:X".into())
                ]
            ),
            ">CLIENT:ESTABLISHED,0\r\n>CLIENT:ENV,n_clients=1\r\n>CLIENT:ENV,common_name=evil>CLIENT:X\r\n>CLIENT:ENV,END\r\n"
        );
    }
}
