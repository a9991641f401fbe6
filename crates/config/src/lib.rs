//! OpenVPN 2.6 configuration language -> typed [`Config`].
//!
//! Entry points:
//! - [`parse_file`]: a config file; `config` includes and key material files
//!   are read (paths relative to the working directory, like OpenVPN).
//! - [`parse_str`]: text with a display name; includes/material files are read.
//! - [`parse_str_no_fs`]: pure; any directive that would touch the file system
//!   is an error (inline blocks work). Used by the fuzz target.
//! - [`Config::from_args`]: command-line `--name args...` groups.
//!
//! All of them apply [`Config::finalize`] (cross-directive rules). Errors are
//! [`ConfigError`]s displayed as `file:line: reason`. Nothing here panics on
//! any input.
//!
//! [`ClientConfig::parse`] reads a per-client config (a `client-config-dir`
//! file, a client-connect script's dynamic config): pure, and like OpenVPN
//! 2.6 it keeps the usable lines and reports the others.

mod client_config;
mod compression;
mod connection;
mod error;
mod finalize;
mod lexer;
mod parser;
mod table;
mod types;

pub use client_config::{
    ClientConfig, IfconfigIpv6Push, IfconfigPush, Iroute, IrouteIpv6, MAX_CLIENT_CONFIG_SIZE,
    PushEdit,
};
pub use compression::{Alg as CompressAlg, CompressError, CompressOptions, RECEIVE_ONLY_WARNING};
pub use connection::{
    CONNECTION_DIRECTIVES, ConnectionEntry, HttpProxy, HttpProxyAuth, ProxyCredentials, SocksProxy,
};
pub use error::{ConfigError, Location, Reason};
pub use lexer::tokenize;
pub use parser::{COMMAND_LINE, MAX_ERRORS, MAX_FILE_SIZE, MAX_INCLUDE_DEPTH};
pub use table::{
    DIRECTIVES, DirectiveInfo, Support, TAP_REASON, markdown_table, unsupported_reason,
};
pub use types::*;

use std::path::Path;

use parser::Parser;

/// Parse a configuration file (reading includes and material files).
pub fn parse_file(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
    let path = path.as_ref();
    let mut p = Parser::new(true);
    p.include(path, None)?;
    p.finish(&path.display().to_string())
}

/// Parse configuration text; `name` is used in error messages. `config`
/// includes and material files (`ca FILE`, ...) are read from disk.
pub fn parse_str(text: &str, name: &str) -> Result<Config, ConfigError> {
    let mut p = Parser::new(true);
    p.parse_text(text, name)?;
    p.finish(name)
}

/// Like [`parse_str`] but never touches the file system: `config FILE` and
/// material given as a file name are errors ([`Reason::NoFileAccess`]).
pub fn parse_str_no_fs(text: &str, name: &str) -> Result<Config, ConfigError> {
    let mut p = Parser::new(false);
    p.parse_text(text, name)?;
    p.finish(name)
}

impl Config {
    /// Parse command-line options (without the program name): groups of
    /// `--name args...` where args run up to the next `--` token. `--config
    /// FILE` loads the file at that point; later options override earlier
    /// ones (list directives such as `remote`/`push`/`route` accumulate).
    /// A single argument not starting with `--` is taken as a config file,
    /// like `openvpn server.conf`. Errors on the command line are reported
    /// as `<command line>:N` where N is the 1-based argument position.
    /// Errors about the configuration as a whole (a missing `ca`) name the
    /// config file when exactly one was given, `<command line>` otherwise.
    pub fn from_args(args: &[String]) -> Result<Config, ConfigError> {
        let mut p = Parser::new(true);
        p.parse_args(args)?;
        p.finish(&whole_config_name(args))
    }
}

/// The one config file named in `args` (`FILE` alone or `--config FILE`),
/// or `<command line>` when there are none or several.
fn whole_config_name(args: &[String]) -> String {
    if let [single] = args
        && !single.starts_with("--")
    {
        return single.clone();
    }
    let mut files = args
        .windows(2)
        .filter(|w| w[0] == "--config")
        .map(|w| &w[1]);
    match (files.next(), files.next()) {
        (Some(file), None) => file.clone(),
        _ => COMMAND_LINE.to_string(),
    }
}
