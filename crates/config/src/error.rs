//! Error type: every error carries the file (or `<command line>`) and line.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// Where a directive came from: a file name (as given) or `<command line>`,
/// and a 1-based line number (for the command line: the 1-based position of
/// the `--option` argument). Line 0 means "the configuration as a whole".
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.file)
        } else {
            write!(f, "{}:{}", self.file, self.line)
        }
    }
}

/// A configuration error, displayed as `file:line: reason`, followed by the
/// other errors of the same configuration (one per line), if any.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct ConfigError {
    /// File name as given (or `<command line>`).
    pub file: String,
    /// 1-based line (0: applies to the configuration as a whole).
    pub line: usize,
    /// What went wrong / what was expected.
    pub reason: Reason,
    /// The further errors found in the same configuration, in order.
    pub also: Box<[ConfigError]>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), self.reason)?;
        for e in &self.also {
            write!(f, "\n{e}")?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub fn new(loc: &Location, reason: Reason) -> Self {
        Self {
            file: loc.file.clone(),
            line: loc.line,
            reason,
            also: Box::default(),
        }
    }

    /// This error and the further ones, in order.
    pub fn all(&self) -> impl Iterator<Item = &ConfigError> {
        std::iter::once(self).chain(self.also.iter())
    }

    pub fn location(&self) -> Location {
        Location {
            file: self.file.clone(),
            line: self.line,
        }
    }
}

/// Why a configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum Reason {
    /// An argument had the wrong form.
    #[error("'{directive}' expects {expected}, got \"{got}\"")]
    BadValue {
        directive: String,
        expected: String,
        got: String,
    },
    /// A required argument is missing.
    #[error("'{directive}' expects {expected}")]
    MissingArg { directive: String, expected: String },
    /// More arguments than the directive takes.
    #[error("'{directive}' takes at most {max} argument(s), got {got}")]
    TooManyArgs {
        directive: String,
        max: usize,
        got: usize,
    },
    /// A directive neither OpenVPN-compatible code here nor the table knows.
    #[error("unsupported directive '{0}'")]
    UnknownDirective(String),
    /// A known OpenVPN directive (or value) that ferrovpn does not implement.
    #[error("unsupported '{directive}': {reason}")]
    Unsupported {
        directive: String,
        reason: &'static str,
    },
    #[error("unterminated {0} quote")]
    UnterminatedQuote(&'static str),
    #[error("backslash at end of line")]
    TrailingBackslash,
    #[error("inline <{0}> block has no closing </{0}>")]
    UnterminatedInline(String),
    #[error("</{0}> without a matching <{0}>")]
    UnexpectedClosingTag(String),
    #[error("'{0}' cannot be given as an inline block")]
    InlineNotAllowed(String),
    #[error("option arguments must start with '--', got \"{0}\"")]
    ExpectedOption(String),
    #[error("cannot read '{}': {error}", path.display())]
    Read { path: PathBuf, error: String },
    #[error("'{}' is larger than {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: usize },
    #[error("text is not valid UTF-8")]
    NotUtf8,
    #[error(
        "'{directive} {arg}' needs file access, which is disabled for this parse (use an inline block)"
    )]
    NoFileAccess { directive: String, arg: String },
    #[error("'config' files nested deeper than {0} levels")]
    IncludeTooDeep(usize),
    #[error("'{}' includes itself (include loop)", path.display())]
    IncludeLoop { path: PathBuf },
    /// A semantic or cross-directive rule was violated.
    #[error("{0}")]
    Invalid(String),
}
