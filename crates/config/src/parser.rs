//! Line/block splitting, includes, directive dispatch and `finalize`.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::connection::{
    CONNECTION_DIRECTIVES, ConnectionEntry, HttpProxy, HttpProxyAuth, NOT_PER_CONNECTION,
    ProxyCredentials, SocksProxy,
};
use crate::error::{ConfigError, Location, Reason};
use crate::lexer::tokenize;
use crate::table::{self, Support, TAP_REASON};
use crate::types::*;

/// Deepest `config` nesting allowed (the top-level file counts).
pub const MAX_INCLUDE_DEPTH: usize = 10;
/// Largest config/material file read.
pub const MAX_FILE_SIZE: usize = 1 << 20;
/// Name used in errors for command-line options.
pub const COMMAND_LINE: &str = "<command line>";

pub(crate) struct Parser {
    pub cfg: Config,
    fs: bool,
    /// `setenv FORWARD_COMPATIBLE 1` was seen: unknown directives after it warn.
    forward_compatible: bool,
    /// Canonical paths of the files being parsed (include stack).
    stack: Vec<PathBuf>,
    /// Every error found so far: parsing goes on after one, so that a run
    /// reports them all (at most [`MAX_ERRORS`]).
    errors: Vec<ConfigError>,
    /// Parsing the body of a `<connection>` block: only connection options.
    in_connection: bool,
    /// Added to line numbers (a block's body starts after its tag line).
    line_offset: usize,
}

/// Errors kept per run; hostile input cannot grow the list without bound.
pub const MAX_ERRORS: usize = 100;

type R<T> = Result<T, ConfigError>;

/// One directive with its arguments.
struct Dir<'a> {
    name: &'a str,
    args: &'a [String],
    inline: Option<String>,
    loc: &'a Location,
}

impl Dir<'_> {
    fn err(&self, reason: Reason) -> ConfigError {
        ConfigError::new(self.loc, reason)
    }
    fn bad(&self, expected: &str, got: &str) -> ConfigError {
        self.err(Reason::BadValue {
            directive: self.name.to_string(),
            expected: expected.to_string(),
            got: got.to_string(),
        })
    }
    fn invalid(&self, msg: String) -> ConfigError {
        self.err(Reason::Invalid(msg))
    }
    fn unsupported(&self, what: String, reason: &'static str) -> ConfigError {
        self.err(Reason::Unsupported {
            directive: what,
            reason,
        })
    }
    /// Check the argument count; `expected` describes the arguments.
    fn count(&self, min: usize, max: usize, expected: &str) -> R<()> {
        if self.args.len() < min {
            return Err(self.err(Reason::MissingArg {
                directive: self.name.to_string(),
                expected: expected.to_string(),
            }));
        }
        if self.args.len() > max {
            return Err(self.err(Reason::TooManyArgs {
                directive: self.name.to_string(),
                max,
                got: self.args.len(),
            }));
        }
        Ok(())
    }
    fn arg(&self, i: usize) -> Option<&str> {
        self.args.get(i).map(String::as_str)
    }
    fn num<T: std::str::FromStr + PartialOrd + Copy>(
        &self,
        i: usize,
        lo: T,
        hi: T,
        expected: &str,
    ) -> R<T> {
        let s = self.arg(i).unwrap_or("");
        match s.parse::<T>() {
            Ok(v) if v >= lo && v <= hi => Ok(v),
            _ => Err(self.bad(expected, s)),
        }
    }
    fn u32(&self, i: usize, expected: &str) -> R<u32> {
        self.num(i, 0, u32::MAX, expected)
    }
    fn ipv4(&self, i: usize, what: &str) -> R<Ipv4Addr> {
        let s = self.arg(i).unwrap_or("");
        s.parse()
            .map_err(|_| self.bad(&format!("an IPv4 {what}"), s))
    }
    /// `ADDR[/BITS]` (BITS defaults to 128, as 2.6's `get_ipv6_addr`).
    fn ipv6_prefix(&self, i: usize, what: &str) -> R<(Ipv6Addr, u8)> {
        let s = self.arg(i).unwrap_or("");
        ipv6_and_bits(s).ok_or_else(|| self.bad(&format!("an IPv6 {what} as ADDRESS/BITS"), s))
    }
    /// [`Self::ipv6_prefix`] whose BITS must lie in 64..=124, as 2.6 wants
    /// of a tunnel network; `out_of_range(bits)` is 2.6's message otherwise.
    fn tunnel_ipv6_prefix(
        &self,
        i: usize,
        what: &str,
        out_of_range: impl FnOnce(u8) -> String,
    ) -> R<(Ipv6Addr, u8)> {
        let (addr, bits) = self.ipv6_prefix(i, what)?;
        if !(64..=124).contains(&bits) {
            return Err(self.invalid(out_of_range(bits)));
        }
        Ok((addr, bits))
    }
    /// `SECONDS [MAX]` (`connect-retry`, `reneg-sec`).
    fn secs_and_max(&self) -> R<(u32, Option<u32>)> {
        self.count(1, 2, "SECONDS [MAX]")?;
        let secs = self.u32(0, "a number of seconds")?;
        let max = match self.arg(1) {
            Some(_) => Some(self.u32(1, "a number of seconds")?),
            None => None,
        };
        Ok((secs, max))
    }
    /// A route's optional METRIC argument: absent or `default` is none.
    fn route_metric(&self, i: usize) -> R<Option<u32>> {
        match self.arg(i) {
            None | Some("default") => Ok(None),
            Some(_) => Ok(Some(self.u32(i, "a metric number")?)),
        }
    }
    fn mask(&self, i: usize) -> R<Ipv4Addr> {
        let s = self.arg(i).unwrap_or("");
        match s.parse::<Ipv4Addr>() {
            Ok(m) if is_contiguous(m) => Ok(m),
            _ => Err(self.bad("a contiguous IPv4 netmask such as 255.255.255.0", s)),
        }
    }
    /// A script command: split as 2.6 splits it when it runs, so that a
    /// command that cannot be split (an open quote) fails at start.
    fn script_command(&self, i: usize) -> R<String> {
        let s = self.arg(i).unwrap_or("");
        match tokenize(s) {
            Ok(argv) if !argv.is_empty() => Ok(s.to_string()),
            Ok(_) => Err(self.bad("a command", s)),
            Err(why) => Err(self.err(why)),
        }
    }
    fn no_args(&self) -> R<()> {
        self.count(0, 0, "no arguments")
    }

    /// A directive that takes no arguments and switches `field` on.
    fn flag(&self, field: &mut bool) -> R<()> {
        self.no_args()?;
        *field = true;
        Ok(())
    }

    /// `FILE [SECONDS]`, the period between `min` and a day, `default`
    /// when left out.
    fn file_every(&self, min: u32, default: u32, expected: &str) -> R<StatusFile> {
        self.count(1, 2, "FILE [SECONDS]")?;
        let interval_secs = match self.arg(1) {
            Some(_) => self.num(1, min, 86_400, expected)?,
            None => default,
        };
        Ok(StatusFile {
            path: PathBuf::from(self.arg(0).unwrap_or("")),
            interval_secs,
        })
    }
}

/// `ADDR[/BITS]`, BITS at most 128 and 128 when left out (a host), as
/// 2.6's `get_ipv6_addr` reads it.
pub(crate) fn ipv6_and_bits(s: &str) -> Option<(Ipv6Addr, u8)> {
    let (addr, bits) = s.split_once('/').unwrap_or((s, "128"));
    let addr = addr.parse().ok()?;
    let bits = bits.parse::<u8>().ok().filter(|&b| b <= 128)?;
    Some((addr, bits))
}

fn is_contiguous(m: Ipv4Addr) -> bool {
    let v = u32::from(m);
    v.leading_ones() + v.trailing_zeros() == 32
}

/// What `proto` and `remote` accept, for error messages.
const PROTO_VALUES: &str = "udp, udp4, udp6, tcp, tcp4, tcp6, tcp-client, tcp4-client, tcp6-client, tcp-server, tcp4-server or tcp6-server";

fn proto_of(s: &str) -> Option<Proto> {
    let (family, role) = match s {
        "udp" => return Some(Proto::Udp),
        "udp4" => return Some(Proto::Udp4),
        "udp6" => return Some(Proto::Udp6),
        "tcp" => (Family::Any, None),
        "tcp4" => (Family::V4, None),
        "tcp6" => (Family::V6, None),
        "tcp-client" => (Family::Any, Some(TcpRole::Client)),
        "tcp4-client" => (Family::V4, Some(TcpRole::Client)),
        "tcp6-client" => (Family::V6, Some(TcpRole::Client)),
        "tcp-server" => (Family::Any, Some(TcpRole::Server)),
        "tcp4-server" => (Family::V4, Some(TcpRole::Server)),
        "tcp6-server" => (Family::V6, Some(TcpRole::Server)),
        _ => return None,
    };
    Some(Proto::Tcp { family, role })
}

/// Read a file with a size cap (hostile configs may name /dev/zero).
fn read_limited(path: &Path) -> Result<Vec<u8>, Reason> {
    let read_err = |e: std::io::Error| Reason::Read {
        path: path.to_path_buf(),
        error: e.to_string(),
    };
    let f = std::fs::File::open(path).map_err(read_err)?;
    let mut buf = Vec::new();
    f.take(MAX_FILE_SIZE as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(read_err)?;
    if buf.len() > MAX_FILE_SIZE {
        return Err(Reason::TooLarge {
            path: path.to_path_buf(),
            limit: MAX_FILE_SIZE,
        });
    }
    Ok(buf)
}

/// Bytes to text; the error points at the line of the first bad byte.
pub(crate) fn to_text(bytes: Vec<u8>, file: &str) -> R<String> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let line = e.as_bytes()[..valid]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        ConfigError::new(
            &Location {
                file: file.to_string(),
                line,
            },
            Reason::NotUtf8,
        )
    })
}

impl Parser {
    pub fn new(fs: bool) -> Self {
        Self {
            cfg: Config::default(),
            fs,
            forward_compatible: false,
            stack: Vec::new(),
            errors: Vec::new(),
            in_connection: false,
            line_offset: 0,
        }
    }

    fn record(&mut self, e: ConfigError) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(e);
        }
    }

    /// Every error recorded, as one [`ConfigError`]; else the finalized config.
    /// Whole-config errors name the top-level file if there is one.
    pub fn finish(mut self, name: &str) -> R<Config> {
        if !self.errors.is_empty() {
            let mut first = self.errors.remove(0);
            first.also = self.errors.into_boxed_slice();
            return Err(first);
        }
        self.cfg.finalize(name)?;
        Ok(self.cfg)
    }

    /// Parse the text of one file (`name` is used in errors).
    pub fn parse_text(&mut self, text: &str, name: &str) -> R<()> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text.lines().enumerate();
        while let Some((idx, line)) = lines.next() {
            let loc = Location {
                file: name.to_string(),
                line: idx + 1 + self.line_offset,
            };
            let trimmed = line.trim();
            if let Some(tag) = trimmed.strip_prefix("</").and_then(|t| t.strip_suffix('>')) {
                self.record(ConfigError::new(
                    &loc,
                    Reason::UnexpectedClosingTag(tag.to_string()),
                ));
                continue;
            }
            if let Some(tag) = trimmed
                .strip_prefix('<')
                .and_then(|t| t.strip_suffix('>'))
                .filter(|t| !t.is_empty() && !t.contains(char::is_whitespace))
            {
                let close = format!("</{tag}>");
                let mut body = String::new();
                let mut closed = false;
                for (_, l) in lines.by_ref() {
                    if l.trim() == close {
                        closed = true;
                        break;
                    }
                    body.push_str(l);
                    body.push('\n');
                }
                if !closed {
                    self.record(ConfigError::new(
                        &loc,
                        Reason::UnterminatedInline(tag.to_string()),
                    ));
                    continue;
                }
                if tag == "connection" && !self.in_connection {
                    self.connection_block(&body, &loc);
                    continue;
                }
                if let Err(e) = self.apply(Dir {
                    name: tag,
                    args: &[],
                    inline: Some(body),
                    loc: &loc,
                }) {
                    self.record(e);
                }
                continue;
            }
            let tokens = match tokenize(line) {
                Ok(t) => t,
                Err(r) => {
                    self.record(ConfigError::new(&loc, r));
                    continue;
                }
            };
            let Some((first, rest)) = tokens.split_first() else {
                continue;
            };
            // OpenVPN also accepts `--name` inside files.
            let name = first.strip_prefix("--").unwrap_or(first);
            if let Err(e) = self.apply(Dir {
                name,
                args: rest,
                inline: None,
                loc: &loc,
            }) {
                self.record(e);
            }
        }
        Ok(())
    }

    /// `config FILE` / `--config FILE` / top-level file.
    pub fn include(&mut self, path: &Path, loc: Option<&Location>) -> R<()> {
        let at = |r: Reason| match loc {
            Some(l) => ConfigError::new(l, r),
            None => ConfigError::new(
                &Location {
                    file: path.display().to_string(),
                    line: 0,
                },
                r,
            ),
        };
        if !self.fs {
            return Err(at(Reason::NoFileAccess {
                directive: "config".into(),
                arg: path.display().to_string(),
            }));
        }
        if self.stack.len() >= MAX_INCLUDE_DEPTH {
            return Err(at(Reason::IncludeTooDeep(MAX_INCLUDE_DEPTH)));
        }
        let canon = std::fs::canonicalize(path).map_err(|e| {
            at(Reason::Read {
                path: path.to_path_buf(),
                error: e.to_string(),
            })
        })?;
        if self.stack.contains(&canon) {
            return Err(at(Reason::IncludeLoop {
                path: path.to_path_buf(),
            }));
        }
        let bytes = read_limited(path).map_err(at)?;
        let name = path.display().to_string();
        let text = to_text(bytes, &name)?;
        self.stack.push(canon);
        let r = self.parse_text(&text, &name);
        self.stack.pop();
        r
    }

    /// `ca`/`cert`/... : file (loaded now) or inline block.
    fn material(&self, d: &Dir<'_>, max_args: usize) -> R<Material> {
        let (source, text) = match &d.inline {
            Some(body) => (MaterialSource::Inline, body.clone()),
            None => {
                d.count(1, max_args, "a file name or an inline block")?;
                let file = d.arg(0).unwrap_or("");
                if file == "[inline]" {
                    return Err(d.invalid(format!(
                        "'{} [inline]' needs a <{}> block instead",
                        d.name, d.name
                    )));
                }
                self.read_text_file(d, file)?
            }
        };
        let (marker, what) = match d.name {
            "ca" | "cert" | "extra-certs" => ("-----BEGIN CERTIFICATE-----", "PEM certificates"),
            "crl-verify" => (
                "-----BEGIN X509 CRL-----",
                "a PEM certificate revocation list",
            ),
            "key" => ("PRIVATE KEY-----", "a PEM private key"),
            "tls-crypt-v2" => (
                "-----BEGIN OpenVPN tls-crypt-v2 ",
                "a tls-crypt-v2 server or client key",
            ),
            "auth-gen-token-secret" => (
                "-----BEGIN OpenVPN auth-token server key-----",
                "an OpenVPN auth-token server key (openvpn --genkey auth-token FILE)",
            ),
            _ => (
                "-----BEGIN OpenVPN Static key V1-----",
                "an OpenVPN static key",
            ),
        };
        if !text.contains(marker) {
            let src = match &source {
                MaterialSource::File(p) => format!("'{}'", p.display()),
                MaterialSource::Inline => format!("inline <{}>", d.name),
            };
            return Err(d.invalid(format!(
                "'{}' expects {what} ({marker}), none found in {src}",
                d.name
            )));
        }
        Ok(Material { source, text })
    }

    /// `pkcs12 FILE` (DER bytes, read now) or `<pkcs12>` (base64 text,
    /// decoded when the TLS setup reads it).
    fn pkcs12(&self, d: &Dir<'_>) -> R<Pkcs12> {
        if let Some(body) = &d.inline {
            return Ok(Pkcs12::Inline {
                base64: body.clone(),
            });
        }
        d.count(1, 1, "a PKCS#12 file name or an inline <pkcs12> block")?;
        let file = d.arg(0).unwrap_or("");
        if file == "[inline]" {
            return Err(d.invalid("'pkcs12 [inline]' needs a <pkcs12> block instead".into()));
        }
        let (path, der) = self.read_file(d, file)?;
        Ok(Pkcs12::File { path, der })
    }

    /// The bytes of `file`, named by directive `d` (size-limited; an error
    /// when this parse may not touch the file system).
    fn read_file(&self, d: &Dir<'_>, file: &str) -> R<(PathBuf, Vec<u8>)> {
        if !self.fs {
            return Err(d.err(Reason::NoFileAccess {
                directive: d.name.to_string(),
                arg: file.to_string(),
            }));
        }
        let path = PathBuf::from(file);
        let bytes = read_limited(&path).map_err(|r| d.err(r))?;
        Ok((path, bytes))
    }

    /// The UTF-8 text of `file`, named by directive `d` (size-limited; an
    /// error when this parse may not touch the file system).
    fn read_text_file(&self, d: &Dir<'_>, file: &str) -> R<(MaterialSource, String)> {
        let (path, bytes) = self.read_file(d, file)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            d.err(Reason::Read {
                path: path.clone(),
                error: "not valid UTF-8 text".into(),
            })
        })?;
        Ok((MaterialSource::File(path), text))
    }

    /// `auth-user-pass FILE` or `<auth-user-pass>`: user name, then password.
    fn auth_user_pass(&self, d: &Dir<'_>) -> R<AuthUserPass> {
        let (source, text) = match &d.inline {
            Some(body) => (MaterialSource::Inline, body.clone()),
            None => {
                d.count(1, 1, "[FILE] or an inline block")?;
                let file = d.arg(0).unwrap_or("");
                self.read_text_file(d, file)?
            }
        };
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        let username = lines.next().unwrap_or("");
        if username.is_empty() {
            return Err(d.invalid("'auth-user-pass' needs the user name on the first line".into()));
        }
        let password = lines.next().filter(|p| !p.is_empty());
        if username.len() > 4095 || password.is_some_and(|p| p.len() > 4095) {
            return Err(d.invalid(
                "'auth-user-pass': user name and password are limited to 4095 bytes".into(),
            ));
        }
        Ok(AuthUserPass {
            source: Some(source),
            username: Some(username.to_string()),
            password: password.map(str::to_string),
        })
    }

    /// A `<connection>` block: the connection options given so far, then
    /// those of the block, make one entry of the connection list (2.6's
    /// `[CONNECTION-OPTIONS]`).
    fn connection_block(&mut self, body: &str, loc: &Location) {
        self.cfg.seen.insert("connection".into(), loc.clone());
        if self.cfg.connections.len() >= MAX_CONNECTIONS {
            self.record(ConfigError::new(
                loc,
                Reason::Invalid(format!(
                    "at most {MAX_CONNECTIONS} <connection> blocks are allowed"
                )),
            ));
            return;
        }
        let mut block = Parser::new(self.fs);
        block.cfg = self.cfg.clone();
        block.cfg.remotes.clear();
        block.cfg.connections.clear();
        block.forward_compatible = self.forward_compatible;
        block.stack = self.stack.clone();
        block.in_connection = true;
        block.line_offset = loc.line;
        let _ = block.parse_text(body, &loc.file);
        for e in std::mem::take(&mut block.errors) {
            self.record(e);
        }
        self.cfg.warnings = std::mem::take(&mut block.cfg.warnings);
        // 2.6 keeps the last `remote` of a block.
        match block.cfg.remotes.last() {
            Some(remote) => {
                let entry = ConnectionEntry::new(&block.cfg, remote, Some(loc.clone()));
                self.cfg.connections.push(entry);
            }
            None => self.record(ConfigError::new(
                loc,
                Reason::Invalid(
                    "Each 'connection' block must contain exactly one 'remote' directive".into(),
                ),
            )),
        }
    }

    /// `http-proxy-user-pass FILE` / `socks-proxy ... AUTHFILE` / the
    /// `http-proxy` AUTHFILE: user name and password lines.
    fn proxy_credentials(&self, d: &Dir<'_>, file: Option<&str>) -> R<ProxyCredentials> {
        let text = match (&d.inline, file) {
            (Some(body), _) => body.clone(),
            (None, Some("stdin")) => {
                return Err(d.unsupported(
                    format!("{} stdin", d.name),
                    "ferrovpn does not ask for proxy credentials on the terminal; give a file with the user name and password lines",
                ));
            }
            (None, Some(f)) => self.read_text_file(d, f)?.1,
            (None, None) => return Err(d.bad("a credentials file", "")),
        };
        let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
        let username = lines.next().unwrap_or("").to_string();
        let password = lines.next().unwrap_or("").to_string();
        if username.is_empty() || password.is_empty() {
            return Err(d.invalid(format!(
                "'{}' needs the user name on the first line and the password on the second (ferrovpn does not ask for proxy credentials on the terminal)",
                d.name
            )));
        }
        if username.len() > 4095 || password.len() > 4095 {
            return Err(d.invalid(format!(
                "'{}': user name and password are limited to 4095 bytes",
                d.name
            )));
        }
        Ok(ProxyCredentials {
            username,
            password: zeroize::Zeroizing::new(password),
        })
    }

    fn warn(&mut self, loc: &Location, msg: String) {
        tracing::warn!("{loc}: {msg}");
        self.cfg.warnings.push(format!("{loc}: {msg}"));
    }

    fn apply(&mut self, d: Dir<'_>) -> R<()> {
        if self.in_connection {
            if !CONNECTION_DIRECTIVES.contains(&d.name) {
                return Err(d.invalid(format!(
                    "option '{}' cannot be used in this context ([CONNECTION-OPTIONS])",
                    d.name
                )));
            }
            if let Some((_, why)) = NOT_PER_CONNECTION.iter().find(|(n, _)| *n == d.name) {
                return Err(d.unsupported(format!("{} in <connection>", d.name), why));
            }
            if d.name == "connect-retry-max" {
                self.warn(
                    d.loc,
                    "'connect-retry-max' inside <connection> has no effect (as in OpenVPN 2.6); give it outside the blocks".into(),
                );
                return Ok(());
            }
        } else if !self.cfg.connections.is_empty() && CONNECTION_DIRECTIVES.contains(&d.name) {
            self.warn(
                d.loc,
                format!(
                    "Option '{}' is ignored by previous <connection> blocks",
                    d.name
                ),
            );
        }
        let info = table::lookup(d.name);
        match info {
            None => {
                if self.forward_compatible {
                    self.warn(
                        d.loc,
                        format!(
                            "ignoring unknown directive '{}' (setenv FORWARD_COMPATIBLE 1)",
                            d.name
                        ),
                    );
                    return Ok(());
                }
                if self.cfg.ignore_unknown.contains(d.name) {
                    self.warn(
                        d.loc,
                        format!(
                            "ignoring unknown directive '{}' (ignore-unknown-option)",
                            d.name
                        ),
                    );
                    return Ok(());
                }
                return Err(d.err(Reason::UnknownDirective(d.name.to_string())));
            }
            Some(i) if i.support == Support::Unsupported => {
                return Err(d.unsupported(d.name.to_string(), i.note));
            }
            Some(i) if i.support == Support::Ignored => {
                self.warn(d.loc, format!("'{}' ignored: {}", d.name, i.note));
                // Still located: a mode that cannot ignore it may refuse
                // it at finalize.
                self.cfg.seen.insert(d.name.to_string(), d.loc.clone());
                return Ok(());
            }
            Some(_) => {}
        }
        let material_like = matches!(
            d.name,
            "ca" | "cert"
                | "key"
                | "extra-certs"
                | "crl-verify"
                | "tls-crypt"
                | "tls-crypt-v2"
                | "tls-auth"
                | "dh"
                | "pkcs12"
                | "auth-user-pass"
                | "auth-gen-token-secret"
                | "http-proxy-user-pass"
        );
        if d.inline.is_some() && !material_like {
            return Err(d.err(Reason::InlineNotAllowed(d.name.to_string())));
        }
        self.cfg.seen.insert(d.name.to_string(), d.loc.clone());
        let c = &mut self.cfg;
        match d.name {
            "server" => {
                d.count(2, 3, "NETWORK NETMASK [nopool]")?;
                let network = d.ipv4(0, "network address")?;
                let netmask = d.mask(1)?;
                if u32::from(network) & !u32::from(netmask) != 0 {
                    return Err(d.invalid(format!(
                        "'server' network {network} is not aligned to netmask {netmask}"
                    )));
                }
                if netmask.to_bits().trailing_zeros() < 2 {
                    return Err(d.invalid(format!(
                        "'server' netmask {netmask} is too small (at most /30)"
                    )));
                }
                let nopool = match d.arg(2) {
                    None => false,
                    Some("nopool") => true,
                    Some(x) => return Err(d.bad("'nopool' as third argument", x)),
                };
                c.server = Some(ServerNet {
                    network,
                    netmask,
                    nopool,
                });
                c.mode = Some(Mode::Server);
                c.tls_server = true;
            }
            "mode" => {
                d.count(1, 1, "'server'")?;
                match d.arg(0).unwrap_or("") {
                    "server" => c.mode = Some(Mode::Server),
                    "p2p" => {
                        return Err(d.unsupported(
                            "mode p2p".into(),
                            "point-to-point mode is not supported; use 'server' / 'client'",
                        ));
                    }
                    x => return Err(d.bad("'server' or 'p2p'", x)),
                }
            }
            "tls-server" => d.flag(&mut c.tls_server)?,
            "client" => {
                d.no_args()?;
                c.tls_client = true;
                c.pull = true;
            }
            "tls-client" => d.flag(&mut c.tls_client)?,
            "pull" => d.flag(&mut c.pull)?,
            "port" | "lport" | "rport" => {
                // `lport 0` asks for an ephemeral port, as in 2.6.
                let (lo, expected) = match d.name {
                    "lport" => (0u16, "a number 0-65535"),
                    _ => (1u16, "a number 1-65535"),
                };
                d.count(1, 1, expected)?;
                let p = d.num(0, lo, u16::MAX, expected)?;
                match d.name {
                    "port" => c.port = Some(p),
                    "lport" => c.lport = Some(p),
                    _ => c.rport = Some(p),
                }
            }
            "local" => {
                // OpenVPN 2.7's `local HOST|* [PORT] [PROTO]`; a server may repeat it.
                d.count(1, 3, "HOST|* [PORT] [PROTO]")?;
                let s = d.arg(0).unwrap_or("");
                // A host name is resolved once, at start (see the binary's settings/);
                // it only comes alone (`local NAME`), not in 2.7's form.
                if d.args.len() == 1 && s != "*" && s.parse::<IpAddr>().is_err() {
                    if !is_host_name(s) {
                        return Err(d.bad("an IP address, * or a host name", s));
                    }
                    c.local = None;
                    c.local_name = Some(s.to_string());
                    return Ok(());
                }
                // 2.7's form: a host name is resolved once at start too.
                let (addr, name) = if s == "*" {
                    (None, None)
                } else if let Ok(ip) = s.parse::<IpAddr>() {
                    (Some(ip), None)
                } else if is_host_name(s) {
                    (None, Some(s.to_string()))
                } else {
                    return Err(d.bad("an IP address, * or a host name", s));
                };
                let port = if d.args.len() > 1 {
                    Some(d.num(1, 0u16, u16::MAX, "a port number 0-65535")?)
                } else {
                    None
                };
                let proto = match d.arg(2) {
                    None => None,
                    Some(p) => Some(proto_of(p).ok_or_else(|| d.bad(PROTO_VALUES, p))?),
                };
                c.local = addr;
                c.local_name = None;
                c.locals.push(LocalEntry {
                    addr,
                    port,
                    proto,
                    name,
                });
            }
            "port-share" => {
                d.count(2, 3, "HOST PORT [DIR]")?;
                let h = d.arg(0).unwrap_or("");
                // A host name is resolved at start, as 2.6 does.
                let (host, host_name) = match h.parse::<IpAddr>() {
                    Ok(ip) => (ip, None),
                    Err(_) if is_host_name(h) => {
                        (IpAddr::V4(Ipv4Addr::UNSPECIFIED), Some(h.to_string()))
                    }
                    Err(_) => return Err(d.bad("an IP address or a host name", h)),
                };
                let port = d.num(1, 1u16, u16::MAX, "a port number 1-65535")?;
                c.port_share = Some(PortShareConf {
                    host,
                    port,
                    journal_dir: d.arg(2).map(PathBuf::from),
                    host_name,
                });
            }
            "proto" => {
                d.count(1, 1, PROTO_VALUES)?;
                let s = d.arg(0).unwrap_or("");
                c.proto = Some(proto_of(s).ok_or_else(|| d.bad(PROTO_VALUES, s))?);
            }
            "dev" => {
                d.count(1, 1, "a device name such as tun or tun0")?;
                let s = d.arg(0).unwrap_or("");
                if s.starts_with("tap") {
                    return Err(d.unsupported(format!("dev {s}"), TAP_REASON));
                }
                if s.is_empty()
                    || s.len() > 15
                    || s.contains(['/', '\0'])
                    || s.contains(char::is_whitespace)
                {
                    return Err(d.bad("an interface name of 1-15 characters", s));
                }
                // `dev null` (no device) is checked against the mode in finalize.
                c.dev = Some(s.to_string());
            }
            "dev-type" => {
                d.count(1, 1, "'tun'")?;
                match d.arg(0).unwrap_or("") {
                    "tun" => c.dev_type = Some(DevType::Tun),
                    "tap" => return Err(d.unsupported("dev-type tap".into(), TAP_REASON)),
                    x => return Err(d.bad("'tun'", x)),
                }
            }
            "topology" => {
                d.count(1, 1, "subnet, net30 or p2p")?;
                c.topology = Some(match d.arg(0).unwrap_or("") {
                    "subnet" => Topology::Subnet,
                    "net30" => Topology::Net30,
                    "p2p" => Topology::P2p,
                    x => return Err(d.bad("subnet, net30 or p2p", x)),
                });
            }
            "inactive" => {
                d.count(1, 2, "SECONDS [BYTES]")?;
                let secs = d.num(0, 0u32, u32::MAX, "a number of seconds")?;
                let min_bytes = match d.arg(1) {
                    None => 0,
                    Some(_) => d.num(1, 0u64, u64::MAX, "a number of bytes")?,
                };
                c.inactive = (secs > 0).then_some(Inactive { secs, min_bytes });
            }
            "ifconfig" => {
                // 2.6 also takes host names here; ferrovpn wants addresses.
                d.count(2, 2, "LOCAL REMOTE|NETMASK (IPv4 addresses)")?;
                let local = d.ipv4(0, "local address")?;
                let remote_or_netmask = d.ipv4(1, "remote address or netmask")?;
                c.ifconfig = Some(Ifconfig {
                    local,
                    remote_or_netmask,
                });
            }
            "ifconfig-pool" => {
                d.count(2, 3, "START END [NETMASK]")?;
                let start = d.ipv4(0, "start address")?;
                let end = d.ipv4(1, "end address")?;
                if start > end {
                    return Err(
                        d.invalid(format!("'ifconfig-pool' start {start} is after end {end}"))
                    );
                }
                let netmask = if d.args.len() > 2 {
                    Some(d.mask(2)?)
                } else {
                    None
                };
                c.ifconfig_pool = Some(IfconfigPool {
                    start,
                    end,
                    netmask,
                });
            }
            "push" => {
                d.count(
                    1,
                    1,
                    "one quoted option string, e.g. push \"route 10.0.0.0 255.0.0.0\"",
                )?;
                let s = d.arg(0).unwrap_or("");
                if s.trim().is_empty() {
                    return Err(d.bad("a non-empty option string", s));
                }
                c.push.push(s.to_string());
            }
            "route" => {
                d.count(1, 4, "NETWORK [NETMASK] [GATEWAY] [METRIC]")?;
                let network = d.ipv4(0, "network address")?;
                let netmask = match d.arg(1) {
                    None | Some("default") => Ipv4Addr::BROADCAST,
                    Some(_) => d.mask(1)?,
                };
                if u32::from(network) & !u32::from(netmask) != 0 {
                    return Err(d.invalid(format!(
                        "'route' network {network} is not aligned to netmask {netmask}"
                    )));
                }
                let gateway = match d.arg(2) {
                    None | Some("default") => None,
                    Some("vpn_gateway") => Some(RouteGateway::VpnGateway),
                    Some("net_gateway") => Some(RouteGateway::NetGateway),
                    Some("remote_host") => Some(RouteGateway::RemoteHost),
                    Some(g) => Some(RouteGateway::Addr(g.parse().map_err(|_| {
                        d.bad(
                            "an IPv4 gateway, vpn_gateway, net_gateway, remote_host or default",
                            g,
                        )
                    })?)),
                };
                let metric = d.route_metric(3)?;
                c.routes.push(Route {
                    network,
                    netmask,
                    gateway,
                    metric,
                });
            }
            "server-ipv6" => {
                d.count(1, 1, "NETWORK/BITS")?;
                let (network, bits) = d.tunnel_ipv6_prefix(0, "network", |bits| {
                    format!(
                        "'server-ipv6' netbits {bits} out of range: OpenVPN 2.6 needs /64 to /124"
                    )
                })?;
                c.server_ipv6 = Some(ServerIpv6 { network, bits });
                c.mode = Some(Mode::Server);
                c.tls_server = true;
            }
            "ifconfig-ipv6" => {
                d.count(2, 2, "ADDRESS/BITS REMOTE")?;
                let (local, bits) = d.tunnel_ipv6_prefix(0, "address", |bits| {
                    format!("ifconfig-ipv6: /netbits must be between 64 and 124, not '/{bits}'")
                })?;
                let remote = d.arg(1).unwrap_or("");
                let remote: Ipv6Addr = remote
                    .parse()
                    .map_err(|_| d.bad("an IPv6 address", remote))?;
                c.ifconfig_ipv6 = Some(IfconfigIpv6 {
                    local,
                    bits,
                    remote,
                });
            }
            "ifconfig-ipv6-pool" => {
                d.count(1, 1, "BASE/BITS")?;
                let (base, bits) = d.tunnel_ipv6_prefix(0, "pool base", |bits| {
                    format!(
                        "--ifconfig-ipv6-pool settings: network must be between /64 and /124 (not /{bits})"
                    )
                })?;
                c.ifconfig_ipv6_pool = Some(Ipv6Pool { base, bits });
            }
            "route-ipv6" => {
                d.count(1, 3, "NETWORK/BITS [GATEWAY] [METRIC]")?;
                let (network, bits) = d.ipv6_prefix(0, "network")?;
                // 2.6 clears the host bits of a route's network.
                let host = u128::MAX.checked_shr(u32::from(bits)).unwrap_or(0);
                let network = Ipv6Addr::from(u128::from(network) & !host);
                let gateway = match d.arg(1) {
                    None | Some("default") => None,
                    Some(g) => Some(
                        g.parse::<Ipv6Addr>()
                            .map_err(|_| d.bad("an IPv6 gateway or default", g))?,
                    ),
                };
                let metric = d.route_metric(2)?;
                c.routes_ipv6.push(RouteIpv6 {
                    network,
                    bits,
                    gateway,
                    metric,
                });
            }
            "route-gateway" => {
                d.count(1, 1, "GATEWAY")?;
                if d.arg(0) == Some("dhcp") {
                    return Err(d.unsupported(
                        "route-gateway dhcp".into(),
                        "the gateway is learnt by DHCP only on tap devices, which ferrovpn does not support",
                    ));
                }
                c.route_gateway = Some(d.ipv4(0, "gateway address or dhcp")?);
            }
            "route-metric" => {
                d.count(1, 1, "METRIC")?;
                c.route_metric = Some(d.u32(0, "a metric number")?);
            }
            "route-nopull" => d.flag(&mut c.route_nopull)?,
            "route-noexec" => d.flag(&mut c.route_noexec)?,
            "ifconfig-noexec" => d.flag(&mut c.ifconfig_noexec)?,
            "pull-filter" => {
                d.count(2, 2, "accept|ignore|reject \"TEXT\"")?;
                let action = match d.arg(0).unwrap_or("") {
                    "accept" => PullFilterAction::Accept,
                    "ignore" => PullFilterAction::Ignore,
                    "reject" => PullFilterAction::Reject,
                    other => return Err(d.bad("accept, ignore or reject", other)),
                };
                c.pull_filters.push(PullFilter {
                    action,
                    prefix: d.arg(1).unwrap_or("").to_string(),
                });
            }
            "push-reset" => {
                d.no_args()?;
                c.push.clear();
            }
            "push-remove" => {
                d.count(1, 1, "an option name, e.g. push-remove \"route\"")?;
                let prefix = d.arg(0).unwrap_or("");
                if prefix == "ifconfig" || prefix == "ifconfig-ipv6" {
                    return Err(d.unsupported(
                        format!("push-remove {prefix}"),
                        "in the main config it would leave every client without an address (2.6 means it for client-config-dir files)",
                    ));
                }
                c.push.retain(|p| !p.starts_with(prefix));
            }
            "client-to-client" => d.flag(&mut c.client_to_client)?,
            "duplicate-cn" => d.flag(&mut c.duplicate_cn)?,
            "client-config-dir" => {
                d.count(1, 1, "a directory")?;
                c.client_config_dir = d.arg(0).map(PathBuf::from);
            }
            "ccd-exclusive" => d.flag(&mut c.ccd_exclusive)?,
            "max-clients" => {
                d.count(1, 1, "a number of at least 1")?;
                c.max_clients = Some(d.num(0, 1, u32::MAX, "a number of at least 1")?);
            }
            "connect-freq" => {
                d.count(2, 2, "N SECONDS")?;
                c.connect_freq = Some((
                    d.u32(0, "a number of new connections")?,
                    d.u32(1, "a number of seconds")?,
                ));
            }
            "connect-freq-initial" => {
                d.count(2, 2, "N SECONDS")?;
                c.connect_freq_initial = Some((
                    d.u32(0, "a number of answers")?,
                    d.u32(1, "a number of seconds")?,
                ));
            }
            "remote" => {
                d.count(1, 3, "HOST [PORT] [PROTO]")?;
                let host = d.arg(0).unwrap_or("");
                if host.is_empty() {
                    return Err(d.bad("a host name or address", host));
                }
                let port = if d.args.len() > 1 {
                    Some(d.num(1, 1u16, u16::MAX, "a port number 1-65535")?)
                } else {
                    None
                };
                let proto = match d.arg(2) {
                    None => None,
                    Some(s) => Some(proto_of(s).ok_or_else(|| d.bad(PROTO_VALUES, s))?),
                };
                c.remotes.push(Remote {
                    host: host.to_string(),
                    port,
                    proto,
                });
            }
            "remote-random" => d.flag(&mut c.remote_random)?,
            "remote-random-hostname" => d.flag(&mut c.remote_random_hostname)?,
            "connection" => {
                return Err(d.invalid(
                    "'connection' is given as a <connection> ... </connection> block".into(),
                ));
            }
            "http-proxy" => {
                d.count(2, 4, "HOST PORT [AUTHFILE|auto|auto-nct] [basic|none]")?;
                let host = d.arg(0).unwrap_or("");
                if !is_host_name(host) {
                    return Err(d.bad("a proxy host name or address", host));
                }
                let port = d.num(1, 1u16, u16::MAX, "a port number 1-65535")?;
                let auth = match (d.arg(2), d.arg(3)) {
                    (None, _) => HttpProxyAuth::None,
                    (Some(a @ ("auto" | "auto-nct")), None) => HttpProxyAuth::Auto {
                        nct: a == "auto-nct",
                        credentials: None,
                    },
                    (Some(_), Some("none")) => HttpProxyAuth::None,
                    (Some(file), None | Some("basic")) => {
                        HttpProxyAuth::Basic(self.proxy_credentials(&d, Some(file))?)
                    }
                    (Some(_), Some(m @ ("ntlm" | "ntlm2" | "digest"))) => {
                        return Err(d.unsupported(
                            format!("http-proxy ... {m}"),
                            "NTLM and digest proxy authentication are not supported; use basic",
                        ));
                    }
                    (Some(_), Some(m)) => {
                        // 2.6: "ERROR: unknown HTTP authentication method".
                        return Err(d.bad("an HTTP authentication method basic or none", m));
                    }
                };
                let c = &mut self.cfg;
                let old = c.http_proxy.take();
                c.http_proxy = Some(HttpProxy {
                    host: host.to_string(),
                    port,
                    auth,
                    // `http-proxy-option` lines given before it stay, as in 2.6.
                    version: old
                        .as_ref()
                        .map_or_else(|| "1.0".into(), |o| o.version.clone()),
                    user_agent: old.as_ref().and_then(|o| o.user_agent.clone()),
                    custom_headers: old.map(|o| o.custom_headers).unwrap_or_default(),
                });
            }
            "http-proxy-option" => {
                d.count(2, 3, "VERSION V | AGENT A | CUSTOM-HEADER NAME [CONTENT]")?;
                let proxy = c.http_proxy.get_or_insert_with(|| HttpProxy {
                    host: String::new(),
                    port: 0,
                    auth: HttpProxyAuth::None,
                    version: "1.0".into(),
                    user_agent: None,
                    custom_headers: Vec::new(),
                });
                let value = d.arg(1).unwrap_or("").to_string();
                if value.contains(['\r', '\n'])
                    || d.arg(2).is_some_and(|v| v.contains(['\r', '\n']))
                {
                    return Err(d.bad("a value without line breaks", &value));
                }
                match (d.arg(0).unwrap_or(""), d.args.len()) {
                    ("VERSION", 2) => proxy.version = value,
                    ("AGENT", 2) => proxy.user_agent = Some(value),
                    ("EXT1" | "EXT2" | "CUSTOM-HEADER", _) => {
                        if proxy.custom_headers.len() >= 10 {
                            return Err(d.invalid(
                                "Cannot use more than 10 http-proxy-option CUSTOM-HEADER".into(),
                            ));
                        }
                        proxy
                            .custom_headers
                            .push((value, d.arg(2).map(str::to_string)));
                    }
                    (other, _) => {
                        return Err(d.invalid(format!(
                            "Bad http-proxy-option or missing or extra parameter: '{other}'"
                        )));
                    }
                }
            }
            "http-proxy-user-pass" => {
                if d.inline.is_none() {
                    d.count(1, 1, "a file name or an inline block")?;
                }
                let creds = self.proxy_credentials(&d, d.arg(0))?;
                self.cfg.http_proxy_user_pass = Some(creds);
            }
            "http-proxy-retry" | "socks-proxy-retry" => {
                self.warn(
                    d.loc,
                    "DEPRECATED OPTION: http-proxy-retry and socks-proxy-retry: proxy connections are retried like regular connections (as in OpenVPN 2.6); use connect-retry-max 1 for the old behaviour".into(),
                );
            }
            "http-proxy-timeout" => {
                d.count(1, 1, "a number of seconds")?;
                self.warn(
                    d.loc,
                    "DEPRECATED OPTION: http-proxy-timeout: the time until the server answers is set by connect-timeout alone (as in OpenVPN 2.6)".into(),
                );
            }
            "socks-proxy" => {
                d.count(1, 3, "HOST [PORT] [AUTHFILE]")?;
                let host = d.arg(0).unwrap_or("");
                if !is_host_name(host) {
                    return Err(d.bad("a proxy host name or address", host));
                }
                let port = match d.arg(1) {
                    Some(_) => d.num(1, 1u16, u16::MAX, "a port number 1-65535")?,
                    None => 1080,
                };
                let credentials = match d.arg(2) {
                    Some(f) => Some(self.proxy_credentials(&d, Some(f))?),
                    None => None,
                };
                self.cfg.socks_proxy = Some(SocksProxy {
                    host: host.to_string(),
                    port,
                    credentials,
                });
            }
            "connect-retry" => {
                let (secs, max) = d.secs_and_max()?;
                c.connect_retry = Some(ConnectRetry { secs, max });
            }
            "connect-retry-max" => {
                d.count(1, 1, "a number of attempts")?;
                c.connect_retry_max =
                    Some(d.num(0, 1, u32::MAX, "a number of attempts (at least 1)")?);
            }
            "connect-timeout" | "server-poll-timeout" => {
                d.count(1, 1, "a number of seconds")?;
                c.connect_timeout =
                    Some(d.num(0, 1, u32::MAX, "a number of seconds (at least 1)")?);
            }
            "nobind" => d.flag(&mut c.nobind)?,
            "float" => d.flag(&mut c.float)?,
            "redirect-gateway" => {
                const FLAGS: &[&str] = &[
                    "def1",
                    "local",
                    "autolocal",
                    "bypass-dhcp",
                    "bypass-dns",
                    "block-local",
                    "!ipv4",
                    "ipv6",
                ];
                for f in d.args {
                    if !FLAGS.contains(&f.as_str()) {
                        return Err(d.bad(
                            "flags from def1, local, autolocal, bypass-dhcp, bypass-dns, block-local, !ipv4, ipv6",
                            f,
                        ));
                    }
                }
                c.redirect_gateway = Some(d.args.to_vec());
            }
            "dhcp-option" => {
                d.count(1, 2, "TYPE [VALUE]")?;
                c.dhcp_options.push(DhcpOption {
                    kind: d.arg(0).unwrap_or("").to_string(),
                    value: d.arg(1).map(str::to_string),
                });
            }
            "explicit-exit-notify" => {
                d.count(0, 1, "[N]")?;
                c.explicit_exit_notify = Some(if d.args.is_empty() {
                    1
                } else {
                    d.u32(0, "a number of attempts")?
                });
            }
            "keepalive" => {
                d.count(2, 2, "INTERVAL TIMEOUT (seconds)")?;
                let interval = d.u32(0, "a number of seconds")?;
                let timeout = d.u32(1, "a number of seconds")?;
                if u64::from(timeout) < 2 * u64::from(interval) {
                    return Err(d.invalid(format!(
                        "'keepalive' timeout ({timeout}) must be at least twice the interval ({interval})"
                    )));
                }
                c.keepalive = Some(Keepalive { interval, timeout });
            }
            "ping" | "ping-restart" | "ping-exit" | "hand-window" | "tran-window"
            | "tls-timeout" => {
                d.count(1, 1, "a number of seconds")?;
                let v = d.u32(0, "a number of seconds")?;
                match d.name {
                    "ping" => c.ping = Some(v),
                    "ping-restart" => c.ping_restart = Some(v),
                    "ping-exit" => c.ping_exit = Some(v),
                    "hand-window" => c.hand_window = Some(v),
                    "tran-window" => c.tran_window = Some(v),
                    _ => c.tls_timeout = Some(v),
                }
            }
            "reneg-sec" => {
                let (secs, max) = d.secs_and_max()?;
                c.reneg_sec = Some(RenegSec { secs, max });
            }
            "reneg-bytes" | "reneg-pkts" => {
                d.count(1, 1, "a number")?;
                let v = d.num(0, 0u64, u64::MAX, "a number")?;
                if d.name == "reneg-bytes" {
                    c.reneg_bytes = Some(v);
                } else {
                    c.reneg_pkts = Some(v);
                }
            }
            "ca" => {
                let m = self.material(&d, 1)?;
                self.cfg.ca = Some(m);
            }
            "cert" => {
                let m = self.material(&d, 1)?;
                self.cfg.cert = Some(m);
            }
            "key" => {
                let m = self.material(&d, 1)?;
                self.cfg.key = Some(m);
            }
            "extra-certs" => {
                let m = self.material(&d, 1)?;
                self.cfg.extra_certs.push(m);
            }
            "pkcs12" => {
                let p12 = self.pkcs12(&d)?;
                self.cfg.pkcs12 = Some(p12);
            }
            "askpass" => {
                // 2.6: `askpass` alone means the terminal ("stdin").
                d.count(0, 1, "[FILE]")?;
                self.cfg.askpass = Some(match d.arg(0) {
                    None | Some("stdin") => Askpass::Terminal,
                    Some(file) => Askpass::File(PathBuf::from(file)),
                });
            }
            "crl-verify" => {
                if d.arg(1) == Some("dir") {
                    return Err(d.unsupported(
                        "crl-verify DIR dir".into(),
                        "a directory of revoked serials is not supported; give a PEM CRL file",
                    ));
                }
                let m = self.material(&d, 1)?;
                self.cfg.crl_verify = Some(m);
            }
            "tls-crypt" => {
                let m = self.material(&d, 1)?;
                self.cfg.tls_crypt = Some(m);
            }
            "tls-crypt-v2" => {
                let force_cookie = match d.inline.is_none().then(|| d.arg(1)).flatten() {
                    None | Some("allow-noncookie") => false,
                    Some("force-cookie") => true,
                    Some(other) => {
                        return Err(d.invalid(format!(
                            "unsupported tls-crypt-v2 argument '{other}' (force-cookie or allow-noncookie)"
                        )));
                    }
                };
                let material = self.material(&d, 2)?;
                self.cfg.tls_crypt_v2 = Some(TlsCryptV2 {
                    material,
                    force_cookie,
                });
            }
            "tls-auth" => {
                let direction = match d.arg(1) {
                    None => None,
                    Some(s) => Some(key_direction(&d, s)?),
                };
                let material = self.material(&d, 2)?;
                self.cfg.tls_auth = Some(TlsAuth {
                    material,
                    direction,
                });
            }
            "key-direction" => {
                d.count(1, 1, "0 or 1")?;
                c.key_direction = Some(key_direction(&d, d.arg(0).unwrap_or(""))?);
            }
            "dh" => {
                let dh = if d.inline.is_some() {
                    Dh::Inline
                } else {
                    d.count(1, 1, "'none' or a file name")?;
                    match d.arg(0).unwrap_or("") {
                        "none" => Dh::None,
                        f => Dh::File(PathBuf::from(f)),
                    }
                };
                if dh != Dh::None {
                    self.warn(
                        d.loc,
                        "'dh' parameters ignored: ferrovpn only uses ECDHE / TLS 1.3 key exchange"
                            .into(),
                    );
                }
                self.cfg.dh = Some(dh);
            }
            "auth" => {
                d.count(1, 1, "a digest name such as SHA256")?;
                let s = d.arg(0).unwrap_or("").to_ascii_uppercase();
                const DIGESTS: &[&str] = &[
                    "SHA1", "SHA224", "SHA256", "SHA384", "SHA512", "MD5", "NONE",
                ];
                if !DIGESTS.contains(&s.as_str()) {
                    return Err(d.bad(
                        "a digest: SHA1, SHA224, SHA256, SHA384, SHA512, MD5 or none",
                        d.arg(0).unwrap_or(""),
                    ));
                }
                c.auth = Some(s);
            }
            "data-ciphers" | "ncp-ciphers" => {
                d.count(
                    1,
                    1,
                    "a colon-separated cipher list such as AES-256-GCM:AES-128-GCM",
                )?;
                let raw = d.arg(0).unwrap_or("");
                let mut list = Vec::new();
                let mut dropped = Vec::new();
                for name in raw.split(':') {
                    // `?NAME`: optional, skipped where unavailable (2.6).
                    let (optional, name) = match name.trim().strip_prefix('?') {
                        Some(n) => (true, n),
                        None => (false, name.trim()),
                    };
                    let up = name.to_ascii_uppercase();
                    if up.is_empty() {
                        return Err(d.bad(
                            "a colon-separated cipher list such as AES-256-GCM:AES-128-GCM",
                            raw,
                        ));
                    }
                    if up == "NONE" {
                        return Err(d.unsupported(
                            format!("{} none", d.name),
                            "an unencrypted data channel is not supported",
                        ));
                    }
                    if !optional && crate::types::is_legacy_provider_cipher(&up) {
                        return Err(d.invalid(format!(
                            "'{}': unsupported cipher {up} (OpenSSL 3 has it only in its legacy provider; OpenVPN 2.6 refuses it too)",
                            d.name
                        )));
                    }
                    if SUPPORTED_DATA_CIPHERS.contains(&up.as_str()) {
                        if !list.contains(&up) {
                            list.push(up);
                        }
                    } else {
                        dropped.push(up);
                    }
                }
                if list.is_empty() {
                    return Err(d.invalid(format!(
                        "'{}' has no supported cipher (supported: {})",
                        d.name,
                        SUPPORTED_DATA_CIPHERS.join(", ")
                    )));
                }
                c.data_ciphers = Some(list);
                if !dropped.is_empty() {
                    self.warn(
                        d.loc,
                        format!(
                            "'{}': dropping unsupported cipher(s) {}",
                            d.name,
                            dropped.join(", ")
                        ),
                    );
                }
            }
            "cipher" => {
                // As in 2.6 (client or server): not used to negotiate, only
                // announced; `data-ciphers-fallback` is the fallback.
                d.count(1, 1, "a cipher name such as AES-256-GCM")?;
                let up = d.arg(0).unwrap_or("").to_ascii_uppercase();
                c.cipher = Some(up);
            }
            "data-ciphers-fallback" => {
                d.count(1, 1, "a cipher name such as AES-256-CBC")?;
                let up = d.arg(0).unwrap_or("").to_ascii_uppercase();
                if up == "NONE" {
                    return Err(d.unsupported(
                        "data-ciphers-fallback none".into(),
                        "an unencrypted data channel is not supported",
                    ));
                }
                if !SUPPORTED_DATA_CIPHERS.contains(&up.as_str()) {
                    return Err(d.invalid(format!(
                        "'data-ciphers-fallback {up}': not supported (supported: {}){}",
                        SUPPORTED_DATA_CIPHERS.join(", "),
                        if crate::types::is_legacy_provider_cipher(&up) {
                            "; OpenSSL 3 has it only in its legacy provider, so OpenVPN 2.6 cannot use it either"
                        } else {
                            ""
                        }
                    )));
                }
                c.data_ciphers_fallback = Some(up);
            }
            "tls-version-min" => {
                d.count(1, 2, "1.0, 1.1, 1.2 or 1.3 [or-highest]")?;
                let or_highest = match d.arg(1) {
                    None => false,
                    Some("or-highest") => true,
                    Some(x) => return Err(d.bad("'or-highest' as second argument", x)),
                };
                let version = match d.arg(0).unwrap_or("") {
                    "1.0" => TlsVersion::V1_0,
                    "1.1" => TlsVersion::V1_1,
                    "1.2" => TlsVersion::V1_2,
                    "1.3" => TlsVersion::V1_3,
                    // As in OpenVPN: an unknown version with or-highest means
                    // the highest this implementation has.
                    _ if or_highest => TlsVersion::V1_3,
                    x => return Err(d.bad("1.0, 1.1, 1.2 or 1.3", x)),
                };
                c.tls_version_min = Some(TlsVersionMin {
                    version,
                    or_highest,
                });
            }
            "remote-cert-tls" => {
                d.count(1, 1, "'server' or 'client'")?;
                c.remote_cert_tls = Some(match d.arg(0).unwrap_or("") {
                    "server" => RemoteCertTls::Server,
                    "client" => RemoteCertTls::Client,
                    x => return Err(d.bad("'server' or 'client'", x)),
                });
            }
            "verify-x509-name" => {
                d.count(1, 2, "NAME [subject|name|name-prefix]")?;
                let name = d.arg(0).unwrap_or("");
                if name.is_empty() {
                    return Err(d.bad("a non-empty name", name));
                }
                let kind = match d.arg(1) {
                    None | Some("subject") => X509NameType::Subject,
                    Some("name") => X509NameType::Name,
                    Some("name-prefix") => X509NameType::NamePrefix,
                    Some(x) => return Err(d.bad("subject, name or name-prefix", x)),
                };
                c.verify_x509_name = Some(VerifyX509Name {
                    name: name.to_string(),
                    kind,
                });
            }
            "ns-cert-type" => {
                d.count(1, 1, "'server' or 'client'")?;
                c.ns_cert_type = Some(match d.arg(0).unwrap_or("") {
                    "server" => RemoteCertTls::Server,
                    "client" => RemoteCertTls::Client,
                    x => return Err(d.bad("'server' or 'client'", x)),
                });
                self.warn(
                    d.loc,
                    "'ns-cert-type' is deprecated (as in OpenVPN 2.6); use 'remote-cert-tls'"
                        .into(),
                );
            }
            "tls-cert-profile" => {
                d.count(1, 1, "legacy or preferred")?;
                match d.arg(0).unwrap_or("") {
                    x @ ("legacy" | "preferred") => c.tls_cert_profile = Some(x.to_string()),
                    x @ ("suiteb" | "insecure") => {
                        return Err(d.unsupported(
                            format!("tls-cert-profile {x}"),
                            "only the legacy and preferred certificate profiles are implemented",
                        ));
                    }
                    x => return Err(d.bad("legacy or preferred", x)),
                }
            }
            "remote-cert-ku" => {
                // Hex values as OpenVPN reads them (`%x`); none means "present".
                let mut values = Vec::new();
                for (i, raw) in d.args.iter().enumerate() {
                    let hex = raw.trim_start_matches("0x").trim_start_matches("0X");
                    match u32::from_str_radix(hex, 16) {
                        Ok(v) if v <= 0xffff => values.push(v),
                        _ => {
                            return Err(d.bad(
                                "hexadecimal key usage values such as a0 or 88",
                                d.arg(i).unwrap_or(""),
                            ));
                        }
                    }
                }
                c.remote_cert_ku = Some(values);
            }
            "remote-cert-eku" => {
                d.count(1, 1, "an OID such as 1.3.6.1.5.5.7.3.1 or a name such as \"TLS Web Server Authentication\"")?;
                c.remote_cert_eku = Some(d.arg(0).unwrap_or("").to_string());
            }
            "verify-client-cert" => {
                // 2.6: no argument resets it to `require`.
                d.count(0, 1, "none, optional or require")?;
                c.verify_client_cert = match d.arg(0).unwrap_or("require") {
                    "none" => VerifyClientCert::None,
                    "optional" => VerifyClientCert::Optional,
                    "require" => VerifyClientCert::Require,
                    x => return Err(d.bad("none, optional or require", x)),
                };
            }
            "replay-window" => {
                d.count(1, 2, "SIZE [SECONDS]")?;
                let size = d.num(0, 1, 65536, "a window size 1-65536")?;
                let time = if d.args.len() > 1 {
                    Some(d.u32(1, "a number of seconds")?)
                } else {
                    None
                };
                c.replay_window = Some(ReplayWindow { size, time });
            }
            "comp-lzo" | "compress" | "comp-noadapt" | "allow-compression" => {
                let args: Vec<&str> = d.args.iter().map(String::as_str).collect();
                match c.compression.apply(d.name, &args) {
                    Ok(Some(warning)) => self.warn(d.loc, format!("'{}': {warning}", d.name)),
                    Ok(None) if d.name == "allow-compression" && d.arg(0) == Some("yes") => {
                        self.warn(
                            d.loc,
                            "'allow-compression yes': ferrovpn still never compresses what it sends (VORACLE); peers decode its packets either way".into(),
                        );
                    }
                    Ok(None) => {}
                    Err(crate::CompressError::Migrate) => {
                        return Err(d.unsupported(
                            "compress migrate".into(),
                            "pushing compression settings per client is not supported; set 'compress stub-v2' or 'comp-lzo no' and push it",
                        ));
                    }
                    Err(e) => return Err(d.invalid(e.to_string())),
                }
            }
            "tun-mtu" => {
                d.count(1, 1, "a number 100-65535")?;
                c.tun_mtu = Some(d.num(0, 100u16, u16::MAX, "a number 100-65535")?);
            }
            "mssfix" => {
                d.count(0, 2, "[SIZE] [mtu|fixed]")?;
                let max = match d.arg(0) {
                    None => 1492,
                    Some(_) => d.num(0, 0u16, u16::MAX, "a size 0-65535")?,
                };
                let mode = match d.arg(1) {
                    None if d.arg(0).is_none() => MssfixMode::Default,
                    None => MssfixMode::Payload,
                    Some("mtu") => MssfixMode::Mtu,
                    Some("fixed") => MssfixMode::Fixed,
                    Some(x) => return Err(d.bad("'mtu' or 'fixed'", x)),
                };
                c.mssfix = Some(Mssfix { max, mode });
            }
            "fragment" => {
                d.count(1, 2, "MAX [mtu]")?;
                let max = d.arg(0).unwrap_or("");
                // 2.6: `--fragment needs to be at least 68`.
                let max = match max.parse::<u32>() {
                    Ok(m) if m >= 68 => u16::try_from(m).unwrap_or(u16::MAX),
                    _ => return Err(d.bad("a size of at least 68", max)),
                };
                let encap = match d.arg(1) {
                    None => false,
                    Some("mtu") => true,
                    Some(x) => return Err(d.bad("'mtu'", x)),
                };
                c.fragment = Some(Fragment { max, encap });
            }
            "passtos" => d.flag(&mut c.passtos)?,
            "tun-mtu-extra" => {
                d.count(1, 1, "a number of bytes")?;
                c.tun_mtu_extra = Some(d.num(0, 0u16, u16::MAX, "a number of bytes 0-65535")?);
            }
            "txqueuelen" => {
                d.count(1, 1, "a queue length")?;
                c.txqueuelen = Some(d.num(0, 1, 1_000_000, "a queue length 1-1000000")?);
            }
            "status" => {
                c.status = Some(d.file_every(1, 60, "an update interval of 1-86400 seconds")?);
            }
            "ifconfig-pool-persist" => {
                c.ifconfig_pool_persist =
                    Some(d.file_every(0, 600, "a period of 0-86400 seconds")?);
            }
            "status-version" => {
                d.count(1, 1, "1, 2 or 3")?;
                c.status_version = Some(d.num(0, 1u8, 3, "1, 2 or 3")?);
            }
            "management" => {
                d.count(2, 3, "IP PORT [PW-FILE] or PATH unix [PW-FILE]")?;
                let (first, second) = (d.arg(0).unwrap_or(""), d.arg(1).unwrap_or(""));
                let listen = if second == "unix" {
                    ManagementListen::Unix(PathBuf::from(first))
                } else {
                    let ip: IpAddr = match first {
                        "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
                        x => x
                            .parse()
                            .map_err(|_| d.bad("an IP address or 'localhost'", x))?,
                    };
                    ManagementListen::Tcp(std::net::SocketAddr::new(
                        ip,
                        d.num(1, 1u16, u16::MAX, "a port 1-65535 or 'unix'")?,
                    ))
                };
                let password_file = match d.arg(2) {
                    Some("stdin") => {
                        return Err(d.unsupported(
                            "management ... stdin".into(),
                            "ferrovpn does not prompt on the terminal; give a password file",
                        ));
                    }
                    other => other.map(PathBuf::from),
                };
                c.management = Some(Management {
                    listen,
                    password_file,
                });
            }
            "management-hold" => d.flag(&mut c.management_hold)?,
            "management-up-down" => d.flag(&mut c.management_up_down)?,
            "management-client-auth" => d.flag(&mut c.management_client_auth)?,
            "management-query-passwords" => d.flag(&mut c.management_query_passwords)?,
            "management-query-remote" => d.flag(&mut c.management_query_remote)?,
            "management-query-proxy" => d.flag(&mut c.management_query_proxy)?,
            "management-log-cache" => {
                d.count(1, 1, "a number of lines")?;
                c.management_log_cache = Some(d.num(0, 1u32, 1_000_000, "1-1000000 lines")?);
            }
            "management-client-user" => {
                d.count(1, 1, "a user name")?;
                c.management_client_user = d.arg(0).map(String::from);
            }
            "management-client-group" => {
                d.count(1, 1, "a group name")?;
                c.management_client_group = d.arg(0).map(String::from);
            }
            "verb" => {
                d.count(1, 1, "a level 0-11")?;
                c.verb = Some(d.num(0, 0u8, 11, "a level 0-11")?);
            }
            "persist-key" => d.flag(&mut c.persist_key)?,
            "persist-tun" => d.flag(&mut c.persist_tun)?,
            "user" => {
                d.count(1, 1, "a user name")?;
                c.user = d.arg(0).map(str::to_string);
            }
            "group" => {
                d.count(1, 1, "a group name")?;
                c.group = d.arg(0).map(str::to_string);
            }
            "metrics" => {
                d.count(1, 1, "IP:PORT")?;
                let a = d.arg(0).unwrap_or("");
                c.metrics = Some(
                    a.parse()
                        .map_err(|_| d.bad("an address IP:PORT such as 127.0.0.1:9176", a))?,
                );
            }
            "writepid" => {
                d.count(1, 1, "a file")?;
                c.writepid = d.arg(0).map(PathBuf::from);
            }
            "log" | "log-append" => {
                d.count(1, 1, "a file")?;
                c.log = Some(LogFile {
                    path: PathBuf::from(d.arg(0).unwrap_or("")),
                    append: d.name == "log-append",
                });
            }
            "syslog" => {
                d.count(0, 1, "[PROGRAM-NAME]")?;
                // As in 2.6, the first `syslog` or `daemon` names the log.
                if c.syslog.is_none() {
                    c.syslog = Some(d.arg(0).unwrap_or("openvpn").to_string());
                }
            }
            "daemon" => {
                d.count(0, 1, "[PROGRAM-NAME]")?;
                if !self.cfg.daemon {
                    self.cfg.daemon = true;
                    if self.cfg.syslog.is_none() {
                        self.cfg.syslog = Some(d.arg(0).unwrap_or("openvpn").to_string());
                    }
                } else if let Some(name) = d.arg(0) {
                    self.warn(
                        d.loc,
                        format!("'daemon' given again: ignoring 'daemon {name}' (as OpenVPN 2.6)"),
                    );
                }
            }
            "chroot" => {
                d.count(1, 1, "a directory")?;
                c.chroot = d.arg(0).map(PathBuf::from);
            }
            "auth-user-pass" => {
                let aup = if d.inline.is_none() && d.args.is_empty() {
                    AuthUserPass {
                        source: None,
                        username: None,
                        password: None,
                    }
                } else {
                    self.auth_user_pass(&d)?
                };
                self.cfg.auth_user_pass = Some(aup);
            }
            "auth-nocache" => d.flag(&mut c.auth_nocache)?,
            "tls-exit" => d.flag(&mut c.tls_exit)?,
            "script-security" => {
                d.count(1, 1, "a level 0..3")?;
                c.scripts.security = Some(d.num(0, 0, 3, "a level 0..3")?);
            }
            "up"
            | "down"
            | "route-up"
            | "learn-address"
            | "client-connect"
            | "client-disconnect"
            | "ipchange"
            | "route-pre-down"
            | "tls-verify"
            | "tls-crypt-v2-verify" => {
                d.count(1, 1, "a command (quote it when it has arguments)")?;
                let command = d.script_command(0)?;
                let s = &mut c.scripts;
                let slot = match d.name {
                    "up" => &mut s.up,
                    "down" => &mut s.down,
                    "route-up" => &mut s.route_up,
                    "learn-address" => &mut s.learn_address,
                    "client-connect" => &mut s.client_connect,
                    "ipchange" => &mut s.ipchange,
                    "route-pre-down" => &mut s.route_pre_down,
                    "tls-verify" => &mut s.tls_verify,
                    "tls-crypt-v2-verify" => &mut s.tls_crypt_v2_verify,
                    _ => &mut s.client_disconnect,
                };
                *slot = Some(command);
            }
            "down-pre" => d.flag(&mut c.scripts.down_pre)?,
            "up-restart" => d.flag(&mut c.scripts.up_restart)?,
            "tls-export-cert" => {
                d.count(1, 1, "a directory")?;
                c.scripts.tls_export_cert = Some(d.arg(0).unwrap_or("").to_string());
            }
            "plugin" => {
                d.count(1, 15, "a shared object and its arguments")?;
                // 2.6's MAX_PLUGINS.
                if c.scripts.plugins.len() >= 16 {
                    return Err(d.invalid("at most 16 plugins may be loaded".into()));
                }
                // As 2.6: a single argument after the path is split like a
                // config line; several are passed as they are.
                let args = match d.args.get(1..).unwrap_or_default() {
                    [one] => tokenize(one).map_err(|why| d.err(why))?,
                    many => many.to_vec(),
                };
                c.scripts.plugins.push(PluginLine {
                    path: d.arg(0).unwrap_or("").to_string(),
                    args,
                });
            }
            "auth-user-pass-verify" => {
                d.count(2, 2, "a command and 'via-env' or 'via-file'")?;
                let command = d.script_command(0)?;
                let via_file = match d.arg(1).unwrap_or("") {
                    "via-file" => true,
                    "via-env" => false,
                    x => return Err(d.bad("'via-env' or 'via-file'", x)),
                };
                c.scripts.auth_user_pass_verify = Some(AuthUserPassVerify { command, via_file });
            }
            "username-as-common-name" => d.flag(&mut c.username_as_common_name)?,
            "auth-user-pass-optional" => d.flag(&mut c.auth_user_pass_optional)?,
            "auth-gen-token" => {
                d.count(0, 3, "[LIFETIME] [RENEWAL] [external-auth]")?;
                // 2.6's positive_atoi: anything but a positive number is 0.
                let positive = |s: &str| s.parse::<u32>().ok().filter(|&n| n > 0);
                let mut token = AuthGenToken {
                    lifetime: d.arg(0).and_then(positive),
                    ..AuthGenToken::default()
                };
                for (i, a) in d.args.iter().enumerate().skip(1) {
                    if i == 1
                        && let Some(n) = positive(a)
                    {
                        token.renewal = Some(n);
                    } else if a == "external-auth" {
                        token.external_auth = true;
                    } else {
                        return Err(d.bad("a renewal time in seconds or 'external-auth'", a));
                    }
                }
                c.auth_gen_token = Some(token);
            }
            "auth-gen-token-secret" => {
                let m = self.material(&d, 1)?;
                self.cfg.auth_gen_token_secret = Some(m);
            }
            "auth-retry" => {
                d.count(1, 1, "none, nointeract or interact")?;
                c.auth_retry = Some(match d.arg(0).unwrap_or("") {
                    "none" => AuthRetry::None,
                    "nointeract" => AuthRetry::NoInteract,
                    "interact" => AuthRetry::Interact,
                    x => return Err(d.bad("none, nointeract or interact", x)),
                });
            }
            "static-challenge" => {
                d.count(2, 3, "TEXT ECHO [scrv1]")?;
                let echo = match d.arg(1).unwrap_or("") {
                    "0" => false,
                    "1" => true,
                    x => return Err(d.bad("0 or 1", x)),
                };
                if let Some(f) = d.arg(2)
                    && f != "scrv1"
                {
                    return Err(d.bad("'scrv1' (the only format supported)", f));
                }
                c.static_challenge = Some(StaticChallenge {
                    text: d.arg(0).unwrap_or("").to_string(),
                    echo,
                });
            }
            "key-method" => {
                d.count(1, 1, "2")?;
                if d.arg(0) != Some("2") {
                    return Err(d.unsupported(
                        format!("key-method {}", d.arg(0).unwrap_or("")),
                        "only key-method 2 is supported",
                    ));
                }
            }
            "config" => {
                d.count(1, 1, "a file name")?;
                let path = PathBuf::from(d.arg(0).unwrap_or(""));
                self.include(&path, Some(d.loc))?;
            }
            "setenv" => {
                d.count(1, usize::MAX, "NAME [VALUE] or opt DIRECTIVE ...")?;
                if d.arg(0) == Some("opt") {
                    let Some((name, rest)) = d.args[1..].split_first() else {
                        return Err(d.err(Reason::MissingArg {
                            directive: "setenv opt".into(),
                            expected: "a directive".into(),
                        }));
                    };
                    if name == "setenv" {
                        // Also bounds recursion on hostile input.
                        return Err(d.bad("a directive other than 'setenv'", name));
                    }
                    if table::lookup(name).is_none() {
                        self.warn(
                            d.loc,
                            format!("ignoring unknown directive '{name}' (setenv opt)"),
                        );
                        return Ok(());
                    }
                    return self.apply(Dir {
                        name,
                        args: rest,
                        inline: None,
                        loc: d.loc,
                    });
                }
                d.count(1, 2, "NAME [VALUE]")?;
                if d.arg(0) == Some("FORWARD_COMPATIBLE") && d.arg(1) == Some("1") {
                    self.forward_compatible = true;
                }
                let c = &mut self.cfg;
                c.setenv.push((
                    d.arg(0).unwrap_or("").to_string(),
                    d.arg(1).unwrap_or("").to_string(),
                ));
            }
            "ignore-unknown-option" => {
                d.count(1, usize::MAX, "one or more directive names")?;
                c.ignore_unknown.extend(d.args.iter().cloned());
            }
            "workers" => {
                d.count(1, 1, "a number of threads 1-1024")?;
                c.workers = Some(d.num(0, 1usize, 1024, "a number of threads 1-1024")?);
            }
            "cpu-pin" => d.flag(&mut c.cpu_pin)?,
            "seal-spread" => d.flag(&mut c.seal_spread)?,
            "max-packet-size" => {
                d.count(1, 1, "a size 576-65535")?;
                c.max_packet_size = Some(d.num(0, 576u16, u16::MAX, "a size 576-65535")?);
            }
            other => {
                // Table says supported but no handler: a bug here, not a panic.
                return Err(d.err(Reason::UnknownDirective(other.to_string())));
            }
        }
        Ok(())
    }

    /// `--name args` groups from the command line.
    pub fn parse_args(&mut self, args: &[String]) -> R<()> {
        if let [single] = args
            && !single.starts_with("--")
        {
            return self.include(Path::new(single), None);
        }
        let mut i = 0;
        while i < args.len() {
            let loc = Location {
                file: COMMAND_LINE.to_string(),
                line: i + 1,
            };
            let end = args[i + 1..]
                .iter()
                .position(|a| a.starts_with("--"))
                .map_or(args.len(), |p| i + 1 + p);
            let Some(name) = args[i].strip_prefix("--").filter(|n| !n.is_empty()) else {
                self.record(ConfigError::new(
                    &loc,
                    Reason::ExpectedOption(args[i].clone()),
                ));
                i = end;
                continue;
            };
            if let Err(e) = self.apply(Dir {
                name,
                args: &args[i + 1..end],
                inline: None,
                loc: &loc,
            }) {
                self.record(e);
            }
            i = end;
        }
        Ok(())
    }
}

/// At most this many `<connection>` blocks (hostile configs stay small).
pub const MAX_CONNECTIONS: usize = 256;

/// A DNS name or address as `remote`, `local` and proxies take it: no
/// spaces, quotes or control bytes, never option-looking.
fn is_host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.starts_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
}

fn key_direction(d: &Dir<'_>, s: &str) -> R<KeyDirection> {
    match s {
        "0" => Ok(KeyDirection::Zero),
        "1" => Ok(KeyDirection::One),
        x => Err(d.bad("a key direction 0 or 1", x)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_and_bits_reads_addr_slash_bits_as_2_6() {
        let net = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        assert_eq!(ipv6_and_bits("fd00::1/64"), Some((net("fd00::1"), 64)));
        // No `/BITS`: a host.
        assert_eq!(ipv6_and_bits("fd00::1"), Some((net("fd00::1"), 128)));
        assert_eq!(ipv6_and_bits("::/0"), Some((net("::"), 0)));
        for bad in ["fd00::/129", "fd00::/", "fd00::/x", "10.0.0.0/8", "", "/64"] {
            assert_eq!(ipv6_and_bits(bad), None, "{bad}");
        }
    }
}
