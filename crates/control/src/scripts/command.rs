//! Script commands and `script-security`, as 2.6 runs them.

use std::path::PathBuf;

/// `script-security`: which external programs may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Security {
    /// 0: none at all.
    None,
    /// 1 (the default): only built-in programs. ferrovpn configures the
    /// device and routes itself at every level (as 2.6 does over netlink),
    /// so this level runs nothing either.
    BuiltIn,
    /// 2: user scripts too.
    Scripts,
    /// 3: scripts may also see passwords in their environment.
    PasswordEnv,
}

impl Security {
    /// The level from `script-security N` (absent: 1, as 2.6).
    pub fn from_level(level: Option<u8>) -> Self {
        match level.unwrap_or(1) {
            0 => Security::None,
            1 => Security::BuiltIn,
            2 => Security::Scripts,
            _ => Security::PasswordEnv,
        }
    }

    /// Whether a user script may run at all (2.6: level 2 or more).
    pub fn allows_scripts(self) -> bool {
        self >= Security::Scripts
    }

    /// Whether `name` may be passed to a script: 2.6 drops every variable
    /// whose name starts with `password` below level 3.
    pub fn allows_env(self, name: &str) -> bool {
        self >= Security::PasswordEnv || !name.starts_with("password")
    }

    /// The line 2.6 logs at start when a configuration uses scripts.
    pub fn startup_note(self) -> &'static str {
        if self.allows_scripts() {
            "NOTE: the current --script-security setting may allow this configuration to call user-defined scripts"
        } else {
            "NOTE: starting with OpenVPN 2.1, '--script-security 2' or higher is required to call user-defined scripts or executables"
        }
    }
}

/// The warning 2.6 logs when a script is not run because of the level.
pub const NOT_ALLOWED_WARNING: &str = "WARNING: External program may not be called unless '--script-security 2' or higher is enabled. See --help text or man page for detailed info.";

/// A configured command: the config argument split like a config line
/// (quotes, backslashes), as 2.6's `argv_parse_cmd` does when it runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptCommand {
    argv: Vec<String>,
}

impl ScriptCommand {
    /// Split `text`. Text that splits into nothing (a comment) is one
    /// program name, as in 2.6. The config parser has refused unbalanced
    /// quotes already; should one come here anyway, the whole text is the
    /// program, which then fails to run.
    pub fn parse(text: &str) -> Self {
        let argv = match ferrovpn_config::tokenize(text) {
            Ok(v) if !v.is_empty() => v,
            _ => vec![text.to_owned()],
        };
        ScriptCommand { argv }
    }

    /// The program as 2.6 hands it to `execve`: no `PATH` search, a bare
    /// name is relative to the working directory.
    pub fn program(&self) -> PathBuf {
        let first = self.argv.first().map_or("", String::as_str);
        if first.contains('/') {
            PathBuf::from(first)
        } else {
            PathBuf::from(".").join(first)
        }
    }

    /// Arguments after the program: the configured ones, then `extra`.
    pub fn args(&self, extra: &[String]) -> Vec<String> {
        self.argv.iter().skip(1).chain(extra).cloned().collect()
    }

    /// The command line as 2.6 logs it before running it.
    pub fn display(&self, extra: &[String]) -> String {
        let mut all = self.argv.clone();
        all.extend_from_slice(extra);
        all.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_as_2_6() {
        assert_eq!(Security::from_level(None), Security::BuiltIn);
        assert!(!Security::from_level(Some(0)).allows_scripts());
        assert!(!Security::from_level(Some(1)).allows_scripts());
        assert!(Security::from_level(Some(2)).allows_scripts());
        assert!(!Security::Scripts.allows_env("password"));
        assert!(!Security::Scripts.allows_env("password_extra"));
        assert!(Security::Scripts.allows_env("username"));
        assert!(Security::PasswordEnv.allows_env("password"));
    }

    #[test]
    fn split_like_a_config_line() {
        let c = ScriptCommand::parse(r#"/etc/openvpn/hook.sh "a b" c\ d"#);
        assert_eq!(c.program(), PathBuf::from("/etc/openvpn/hook.sh"));
        assert_eq!(c.args(&["tun0".into()]), ["a b", "c d", "tun0"]);
        assert_eq!(c.display(&["x".into()]), "/etc/openvpn/hook.sh a b c d x");
    }

    #[test]
    fn bare_name_is_not_searched_in_path() {
        assert_eq!(
            ScriptCommand::parse("up.sh").program(),
            PathBuf::from("./up.sh")
        );
        assert_eq!(
            ScriptCommand::parse("bin/up.sh").program(),
            PathBuf::from("bin/up.sh")
        );
    }

    #[test]
    fn unsplittable_text_is_one_program() {
        let c = ScriptCommand::parse("# nothing");
        assert_eq!(c.program(), PathBuf::from("./# nothing"));
        assert!(c.args(&[]).is_empty());
    }
}
