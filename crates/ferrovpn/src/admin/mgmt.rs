//! A management-interface client for `ferrovpn status` and `ferrovpn
//! client ...`: one command over the unix socket, its answer read up to
//! `END` (or the `SUCCESS:`/`ERROR:` line), with a deadline and a size bound.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use ferrovpn_control::status::MAX_REPORT;

/// Longest the server may take to answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// A connected management session.
pub struct Mgmt {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Mgmt {
    pub fn connect(socket: &Path) -> anyhow::Result<Mgmt> {
        let s = UnixStream::connect(socket)
            .with_context(|| format!("connecting to the management socket {}", socket.display()))?;
        s.set_read_timeout(Some(TIMEOUT))?;
        s.set_write_timeout(Some(TIMEOUT))?;
        let writer = s.try_clone()?;
        let mut m = Mgmt {
            reader: BufReader::new(s),
            writer,
        };
        let greeting = m.line()?;
        if greeting.starts_with("ENTER PASSWORD") {
            bail!(
                "{}: the management interface asks for a password; ferrovpn status does not send one",
                socket.display()
            );
        }
        Ok(m)
    }

    /// One line, without its end; real-time notifications (`>...`) are skipped.
    fn line(&mut self) -> anyhow::Result<String> {
        loop {
            let mut line = String::new();
            let n = std::io::Read::take(&mut self.reader, MAX_REPORT as u64)
                .read_line(&mut line)
                .context("reading from the management socket")?;
            if n == 0 {
                bail!("the management socket closed");
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            if !line.starts_with('>') || line.starts_with(">INFO:") {
                return Ok(line);
            }
        }
    }

    /// `status 3`: the report, without its `END` line.
    pub fn status(&mut self) -> anyhow::Result<String> {
        self.send("status 3")?;
        let mut report = String::new();
        loop {
            let line = self.line()?;
            if line == "END" {
                return Ok(report);
            }
            if line.starts_with(">INFO:") {
                continue;
            }
            if line.starts_with("ERROR:") {
                bail!("management interface: {line}");
            }
            if report.len() + line.len() > MAX_REPORT {
                bail!("the status report is larger than {MAX_REPORT} bytes");
            }
            report += &line;
            report.push('\n');
        }
    }

    /// `kill CN`: how many sessions the server ended.
    pub fn kill(&mut self, common_name: &str) -> anyhow::Result<String> {
        self.send(&format!("kill {common_name}"))?;
        loop {
            let line = self.line()?;
            if let Some(ok) = line.strip_prefix("SUCCESS: ") {
                return Ok(ok.to_string());
            }
            if let Some(e) = line.strip_prefix("ERROR: ") {
                return Ok(e.to_string());
            }
        }
    }

    fn send(&mut self, command: &str) -> anyhow::Result<()> {
        self.writer
            .write_all(format!("{command}\n").as_bytes())
            .context("writing to the management socket")
    }
}
