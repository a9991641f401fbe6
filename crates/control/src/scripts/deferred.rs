//! Deferred authentication through files, as 2.6 does it for
//! `auth-user-pass-verify`: a script that exits 2 answers later by writing
//! `1` (accept) or `0` (refuse) into `auth_control_file`. Before exiting it
//! may write `auth_pending_file` (three lines: a timeout in seconds, the
//! pending-auth method the client must announce in `IV_SSO`, the text sent
//! with `INFO_PRE,`), and at any time `auth_failed_reason_file` (the
//! reason sent with `AUTH_FAILED`). What is read from them is untrusted and
//! bounded.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::env::Env;

/// Bytes read from any of the files at most.
const MAX_FILE_BYTES: u64 = 4096;
/// 2.6's `PUSH_BUNDLE_SIZE`: `INFO_PRE,` plus the text must fit.
const MAX_INFO_PRE: usize = 1024 - "INFO_PRE,".len() - 1;

/// The answer in `auth_control_file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Pending,
    Accepted,
    Refused,
}

/// 2.6 looks at the first byte only.
pub fn parse_control(bytes: &[u8]) -> Control {
    match bytes.first() {
        Some(b'1') => Control::Accepted,
        Some(b'0') => Control::Refused,
        _ => Control::Pending,
    }
}

/// What a deferred `client-connect` wrote into its
/// `client_connect_deferred_file` (2.6 reads its first byte only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectResult {
    /// Empty or missing: no answer yet.
    Empty,
    /// `2`: the script answers later.
    Deferred,
    /// `1`.
    Accepted,
    /// `0`.
    Refused,
    /// Any other first byte: 2.6 warns and counts it as a refusal.
    Unexpected,
}

pub fn parse_connect_result(bytes: &[u8]) -> ConnectResult {
    match bytes.first() {
        None => ConnectResult::Empty,
        Some(b'2') => ConnectResult::Deferred,
        Some(b'1') => ConnectResult::Accepted,
        Some(b'0') => ConnectResult::Refused,
        Some(_) => ConnectResult::Unexpected,
    }
}

/// The first bytes of the file at `path` as [`parse_connect_result`]
/// reads them; a missing or unreadable file is [`ConnectResult::Empty`].
pub fn read_connect_result(path: &Path) -> ConnectResult {
    parse_connect_result(&read_bounded(path))
}

/// What `auth_pending_file` asks the client to show while it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingAuth {
    pub timeout_secs: u32,
    /// E.g. `webauth` or `crtext`: must be among the client's `IV_SSO`.
    pub method: String,
    /// Sent as `INFO_PRE,<extra>`, e.g. `WEB_AUTH::https://...`.
    pub extra: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PendingError {
    #[error("auth pending control file is not at least three lines long.")]
    TooFewLines,
    #[error("could not parse auth pending file timeout")]
    BadTimeout,
    #[error("auth pending file: the INFO_PRE text is longer than {MAX_INFO_PRE} bytes")]
    TooLong,
    #[error("auth pending file: control characters or invalid UTF-8")]
    BadText,
}

/// Parse `auth_pending_file`; `None` when it is empty (nothing to send).
/// Lines after the third are ignored (2.6: forward compatibility).
pub fn parse_pending(bytes: &[u8]) -> Result<Option<PendingAuth>, PendingError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| PendingError::BadText)?;
    let mut lines = text.lines();
    let (Some(timeout), Some(method), Some(extra)) = (lines.next(), lines.next(), lines.next())
    else {
        return Err(PendingError::TooFewLines);
    };
    // strtol: leading blanks, then digits; what follows is ignored.
    let digits: String = timeout
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let timeout_secs = match digits.parse::<u64>() {
        Ok(0) | Err(_) => return Err(PendingError::BadTimeout),
        Ok(n) => u32::try_from(n).unwrap_or(u32::MAX),
    };
    if extra.len() > MAX_INFO_PRE {
        return Err(PendingError::TooLong);
    }
    if method.chars().chain(extra.chars()).any(char::is_control) {
        return Err(PendingError::BadText);
    }
    Ok(Some(PendingAuth {
        timeout_secs,
        method: method.to_owned(),
        extra: extra.to_owned(),
    }))
}

/// Whether the client announced `method` in its `IV_SSO` list.
pub fn client_supports(iv_sso: Option<&str>, method: &str) -> bool {
    iv_sso.is_some_and(|l| l.split(',').any(|m| m == method))
}

/// The three files of one deferred authentication, created empty in the
/// temporary directory and removed when this is dropped.
pub struct ControlFiles {
    control: tempfile::TempPath,
    pending: tempfile::TempPath,
    failed_reason: tempfile::TempPath,
}

impl ControlFiles {
    /// Create them in `dir` (2.6: `tmp-dir`, by default `$TMPDIR` or `/tmp`).
    pub fn create(dir: &Path) -> std::io::Result<Self> {
        let make = |kind: &str| {
            tempfile::Builder::new()
                .prefix(&format!("openvpn_{kind}_"))
                .suffix(".tmp")
                .tempfile_in(dir)
                .map(tempfile::NamedTempFile::into_temp_path)
        };
        Ok(ControlFiles {
            control: make("acf")?,
            pending: make("apf")?,
            failed_reason: make("afr")?,
        })
    }

    /// `auth_control_file`, `auth_pending_file`, `auth_failed_reason_file`.
    pub fn set_env(&self, env: &mut Env) {
        env.set("auth_control_file", path_text(&self.control));
        env.set("auth_pending_file", path_text(&self.pending));
        env.set("auth_failed_reason_file", path_text(&self.failed_reason));
    }

    pub fn control(&self) -> Control {
        parse_control(&read_bounded(&self.control))
    }

    pub fn pending(&self) -> Result<Option<PendingAuth>, PendingError> {
        parse_pending(&read_bounded(&self.pending))
    }

    /// The reason for AUTH_FAILED, when the script wrote one.
    pub fn failed_reason(&self) -> Option<String> {
        let bytes = read_bounded(&self.failed_reason);
        let text = String::from_utf8_lossy(&bytes);
        let line = text.lines().next().unwrap_or("").trim();
        (!line.is_empty() && !line.chars().any(char::is_control)).then(|| line.to_owned())
    }
}

fn path_text(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The file's first bytes; a missing or unreadable file reads empty.
fn read_bounded(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(MAX_FILE_BYTES).read_to_end(&mut out);
    }
    out
}

/// Where 2.6 creates its temporary files without `tmp-dir`.
pub fn default_tmp_dir() -> PathBuf {
    std::env::var_os("TMPDIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_first_byte() {
        assert_eq!(parse_control(b"1\n"), Control::Accepted);
        assert_eq!(parse_control(b"0"), Control::Refused);
        assert_eq!(parse_control(b""), Control::Pending);
        assert_eq!(parse_control(b"x1"), Control::Pending);
    }

    #[test]
    fn connect_result_first_byte() {
        assert_eq!(parse_connect_result(b""), ConnectResult::Empty);
        assert_eq!(parse_connect_result(b"2\n"), ConnectResult::Deferred);
        assert_eq!(parse_connect_result(b"1"), ConnectResult::Accepted);
        assert_eq!(parse_connect_result(b"0\n"), ConnectResult::Refused);
        assert_eq!(parse_connect_result(b" 1"), ConnectResult::Unexpected);
        assert_eq!(
            read_connect_result(Path::new("/nonexistent/ferrovpn-ccr")),
            ConnectResult::Empty
        );
    }

    proptest::proptest! {
        /// Any content reads as one of the answers, without a panic.
        #[test]
        fn connect_result_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let r = parse_connect_result(&bytes);
            proptest::prop_assert_eq!(r == ConnectResult::Empty, bytes.is_empty());
        }
    }

    #[test]
    fn pending_file() {
        assert_eq!(parse_pending(b""), Ok(None));
        let p = parse_pending(b"120\nwebauth\nWEB_AUTH::https://sso.example/x\nmore\n")
            .unwrap()
            .unwrap();
        assert_eq!(p.timeout_secs, 120);
        assert_eq!(p.method, "webauth");
        assert_eq!(p.extra, "WEB_AUTH::https://sso.example/x");
        assert_eq!(
            parse_pending(b"120\nwebauth\n"),
            Err(PendingError::TooFewLines)
        );
        assert_eq!(parse_pending(b"0\nm\nx"), Err(PendingError::BadTimeout));
        assert_eq!(parse_pending(b"abc\nm\nx"), Err(PendingError::BadTimeout));
        assert_eq!(
            parse_pending(b" 30s\nm\nx").unwrap().unwrap().timeout_secs,
            30
        );
        assert_eq!(
            parse_pending(format!("5\nm\n{}", "a".repeat(2000)).as_bytes()),
            Err(PendingError::TooLong)
        );
        assert_eq!(parse_pending(b"5\nm\na\x01b"), Err(PendingError::BadText));
        assert_eq!(parse_pending(b"5\nm\n\xff"), Err(PendingError::BadText));
    }

    #[test]
    fn sso_methods() {
        assert!(client_supports(Some("webauth,crtext"), "crtext"));
        assert!(!client_supports(Some("webauth"), "crtext"));
        assert!(!client_supports(None, "webauth"));
    }

    #[test]
    fn files_are_created_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let files = ControlFiles::create(dir.path()).unwrap();
        let mut env = Env::new();
        files.set_env(&mut env);
        let acf = PathBuf::from(env.get("auth_control_file").unwrap());
        assert!(
            acf.file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("openvpn_acf_")
        );
        assert_eq!(files.control(), Control::Pending);
        std::fs::write(&acf, "1").unwrap();
        assert_eq!(files.control(), Control::Accepted);
        let afr = PathBuf::from(env.get("auth_failed_reason_file").unwrap());
        std::fs::write(&afr, "expired account\n").unwrap();
        assert_eq!(files.failed_reason().as_deref(), Some("expired account"));
        drop(files);
        assert!(!acf.exists());
    }
}
