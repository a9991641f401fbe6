//! Username/password for `auth-user-pass`: what each key exchange sends, the
//! auth-token that replaces the password once the server pushes one (as in
//! 2.6), `auth-nocache`, and the SCRV1 static-challenge format.

use std::path::PathBuf;

use anyhow::Context;

/// Where the credentials came from, so they can be had again after
/// `auth-nocache` dropped the password or `auth-retry interact` asks anew.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `auth-user-pass FILE`: read again when needed.
    File(PathBuf),
    /// `<auth-user-pass>` in the config.
    Inline,
    /// Asked for on the terminal.
    Terminal,
    /// `management-query-passwords`: asked over the management interface
    /// each time they are needed (`>PASSWORD:Need 'Auth' ...`); the user
    /// name too unless the config gave it; `static-challenge` as
    /// `(echo, text)` for the prompt's `SC:` part.
    Management {
        ask_username: bool,
        challenge: Option<(bool, String)>,
    },
}

/// The client's credentials and what the server gave in exchange.
#[derive(Clone)]
pub struct Credentials {
    pub source: CredentialSource,
    username: String,
    /// `None` after `auth-nocache` dropped it.
    password: Option<String>,
    /// The static-challenge answer, sent with the password (SCRV1).
    challenge_response: Option<String>,
    /// A pushed `auth-token`: sent instead of the password from then on.
    token: Option<String>,
    nocache: bool,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("source", &self.source)
            .field("username", &self.username)
            .field("has_password", &self.password.is_some())
            .field("has_token", &self.token.is_some())
            .field("nocache", &self.nocache)
            .finish()
    }
}

impl Credentials {
    pub fn new(
        source: CredentialSource,
        username: String,
        password: String,
        challenge_response: Option<String>,
        nocache: bool,
    ) -> Credentials {
        Credentials {
            source,
            username,
            password: Some(password),
            challenge_response,
            token: None,
            nocache,
        }
    }

    /// What the next key exchange sends: the auth-token when there is one,
    /// else the password (SCRV1-wrapped with a static-challenge answer).
    /// With `auth-nocache` the password is dropped once handed out.
    /// `None`: the password is gone and must be had again ([`Self::set`]).
    pub fn for_key_exchange(&mut self) -> Option<(String, String)> {
        if let Some(t) = &self.token {
            return Some((self.username.clone(), t.clone()));
        }
        let password = if self.nocache {
            self.password.take()?
        } else {
            self.password.clone()?
        };
        let sent = match &self.challenge_response {
            Some(r) => scrv1(&password, r),
            None => password,
        };
        Some((self.username.clone(), sent))
    }

    /// The server pushed `auth-token TOKEN` (and maybe `auth-token-user
    /// BASE64`): renegotiations and reconnects send it instead of the password.
    pub fn token_pushed(&mut self, token: String, user_base64: Option<&str>) {
        if let Some(user) = user_base64.and_then(base64_decode)
            && let Ok(user) = String::from_utf8(user)
        {
            self.username = user;
        }
        self.token = Some(token);
    }

    /// AUTH_FAILED: a token (if any) is no good any more.
    pub fn auth_failed(&mut self) {
        self.token = None;
    }

    /// The password (and any token) is no good: ask for it again.
    pub fn forget_password(&mut self) {
        self.password = None;
        self.token = None;
    }

    /// Whether an auth-token stands in for the password.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The secret is still to be asked over the management interface
    /// (`>PASSWORD:Need 'Auth'`), before the key's passphrase and before
    /// each connection attempt.
    pub fn to_ask_over_management(&self) -> bool {
        !self.has_secret() && matches!(self.source, CredentialSource::Management { .. })
    }

    /// Whether a password is at hand (or a token stands in for it).
    pub fn has_secret(&self) -> bool {
        self.token.is_some() || self.password.is_some()
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    /// New credentials (re-read file, new prompt); the token is dropped.
    pub fn set(&mut self, username: String, password: String) {
        self.username = username;
        self.password = Some(password);
        self.token = None;
    }
}

/// Where a client keeps its credentials between key exchanges, once for
/// the process: 2.6's process-wide `auth_user_pass` and `auth_token`
/// (ssl.c), which a SIGHUP does not clear and which the management
/// command `forget-passwords` purges (`ssl_purge_auth`,
/// `ssl_clean_auth_token`): the client runtime and the management
/// interface hold the same memory. Empty until the first instance puts
/// the configured credentials in.
#[derive(Clone, Default)]
pub struct CredentialMemory(std::sync::Arc<std::sync::Mutex<Option<Credentials>>>);

impl std::fmt::Debug for CredentialMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.with(|c| f.debug_tuple("CredentialMemory").field(c).finish())
    }
}

impl CredentialMemory {
    /// Work on the kept credentials (`None`: the config has no
    /// `auth-user-pass`). Never held across an await.
    pub fn with<R>(&self, f: impl FnOnce(&mut Option<Credentials>) -> R) -> R {
        let mut kept = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut kept)
    }

    /// `forget-passwords`: the password and any auth-token are dropped, so
    /// the next key exchange reads them again or asks for them, as 2.6.
    pub fn forget(&self) {
        self.with(|c| {
            if let Some(c) = c {
                c.forget_password();
            }
        });
    }
}

/// The credentials a config asks for: from its file or inline block, and
/// what is missing from the terminal; a static challenge is asked at start.
pub fn from_config(
    aup: &ferrovpn_config::AuthUserPass,
    nocache: bool,
    challenge: Option<&ferrovpn_config::StaticChallenge>,
) -> anyhow::Result<Credentials> {
    let source = match &aup.source {
        Some(ferrovpn_config::MaterialSource::File(p)) => CredentialSource::File(p.clone()),
        Some(ferrovpn_config::MaterialSource::Inline) => CredentialSource::Inline,
        None => CredentialSource::Terminal,
    };
    let username = match &aup.username {
        Some(u) => u.clone(),
        None => ask("Enter Auth Username: ", true)?,
    };
    let password = match &aup.password {
        Some(p) => p.clone(),
        None => ask("Enter Auth Password: ", false)?,
    };
    let response = challenge
        .map(|c| ask(&format!("CHALLENGE: {} ", c.text), c.echo))
        .transpose()?;
    Ok(Credentials::new(
        source, username, password, response, nocache,
    ))
}

/// Get the credentials again: the file is read again (its first two lines),
/// the terminal asks again. Inline credentials come from the config.
pub fn reload(
    source: &CredentialSource,
    inline: Option<&ferrovpn_config::AuthUserPass>,
) -> anyhow::Result<(String, String)> {
    match source {
        CredentialSource::File(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mut lines = text.lines().map(|l| l.trim_end_matches('\r'));
            let user = lines
                .next()
                .filter(|u| !u.is_empty())
                .with_context(|| format!("{}: no user name on the first line", path.display()))?;
            let pass = match lines.next().filter(|p| !p.is_empty()) {
                Some(p) => p.to_owned(),
                None => ask("Enter Auth Password: ", false)?,
            };
            Ok((user.to_owned(), pass))
        }
        CredentialSource::Inline => {
            let aup = inline.context("inline credentials are gone")?;
            let user = aup.username.clone().context("no user name")?;
            let pass = match &aup.password {
                Some(p) => p.clone(),
                None => ask("Enter Auth Password: ", false)?,
            };
            Ok((user, pass))
        }
        CredentialSource::Terminal => Ok((
            ask("Enter Auth Username: ", true)?,
            ask("Enter Auth Password: ", false)?,
        )),
        // The client runtime asks its management interface instead.
        CredentialSource::Management { .. } => {
            anyhow::bail!("the credentials come from the management interface")
        }
    }
}

/// With `management-query-passwords`: what the config does not give is
/// asked over the management interface when the client connects (2.6 asks
/// after `hold release`, not at start); complete credentials are used as
/// they are ([`from_config`]).
pub fn from_config_or_management(
    aup: &ferrovpn_config::AuthUserPass,
    nocache: bool,
    challenge: Option<&ferrovpn_config::StaticChallenge>,
    query_passwords: bool,
) -> anyhow::Result<Credentials> {
    if !query_passwords || (aup.username.is_some() && aup.password.is_some()) {
        return from_config(aup, nocache, challenge);
    }
    let source = CredentialSource::Management {
        ask_username: aup.username.is_none(),
        challenge: challenge.map(|c| (c.echo, c.text.clone())),
    };
    Ok(Credentials {
        source,
        username: aup.username.clone().unwrap_or_default(),
        password: None,
        // The management client answers a static challenge in SCRV1 form.
        challenge_response: None,
        token: None,
        nocache,
    })
}

/// Ask for a secret on the controlling terminal without echo (the private
/// key passphrase prompt uses it too).
pub fn ask_secret(prompt: &str) -> anyhow::Result<String> {
    ask(prompt, false)
}

/// Ask on the controlling terminal; without `echo` the answer is not shown
/// (`stty -echo`, found by absolute path, and echo is put back even on errors).
fn ask(prompt: &str, echo: bool) -> anyhow::Result<String> {
    use std::io::{BufRead, Write};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context(
            "no terminal to ask for the credentials (give them in a file or an inline block)",
        )?;
    let stty = |arg: &str| -> anyhow::Result<()> {
        let path = crate::fsutil::system_tool("stty").context("stty(1) not found")?;
        let ok = std::process::Command::new(path)
            .arg(arg)
            .stdin(tty.try_clone()?)
            .status()
            .is_ok_and(|s| s.success());
        anyhow::ensure!(ok, "stty {arg} failed");
        Ok(())
    };
    struct EchoBack<F: Fn(&str) -> anyhow::Result<()>>(F);
    impl<F: Fn(&str) -> anyhow::Result<()>> Drop for EchoBack<F> {
        fn drop(&mut self) {
            let _ = (self.0)("echo");
        }
    }
    (&tty).write_all(prompt.as_bytes())?;
    let _restore = if echo {
        None
    } else {
        stty("-echo")?;
        Some(EchoBack(stty))
    };
    let mut line = String::new();
    std::io::BufReader::new(&tty).read_line(&mut line)?;
    if !echo {
        (&tty).write_all(b"\n")?;
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// The static-challenge password format: `SCRV1:base64(password):base64(response)`.
pub fn scrv1(password: &str, response: &str) -> String {
    format!(
        "SCRV1:{}:{}",
        base64_encode(password.as_bytes()),
        base64_encode(response.as_bytes())
    )
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(nocache: bool) -> Credentials {
        Credentials::new(
            CredentialSource::Inline,
            "alice".into(),
            "secret".into(),
            None,
            nocache,
        )
    }

    #[test]
    fn password_until_a_token_is_pushed() {
        let mut c = creds(false);
        assert_eq!(
            c.for_key_exchange(),
            Some(("alice".into(), "secret".into()))
        );
        c.token_pushed("SESS_ID_AT_x".into(), None);
        assert_eq!(
            c.for_key_exchange(),
            Some(("alice".into(), "SESS_ID_AT_x".into()))
        );
        // A refused token falls back to the password.
        c.auth_failed();
        assert_eq!(
            c.for_key_exchange(),
            Some(("alice".into(), "secret".into()))
        );
    }

    #[test]
    fn nocache_hands_the_password_out_once() {
        let mut c = creds(true);
        assert!(c.for_key_exchange().is_some());
        assert!(!c.has_secret());
        assert_eq!(c.for_key_exchange(), None);
        c.token_pushed("T".into(), None);
        assert_eq!(c.for_key_exchange(), Some(("alice".into(), "T".into())));
    }

    #[test]
    fn auth_token_user_renames() {
        let mut c = creds(false);
        c.token_pushed("T".into(), Some("Ym9i"));
        assert_eq!(c.username(), "bob");
    }

    #[test]
    fn scrv1_format() {
        // base64("pass") = cGFzcw==, base64("123456") = MTIzNDU2
        assert_eq!(scrv1("pass", "123456"), "SCRV1:cGFzcw==:MTIzNDU2");
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"a"), "YQ==");
        assert_eq!(base64_encode(b"ab"), "YWI=");
        for s in ["", "a", "ab", "abc", "hello world"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(base64_decode("!!"), None);
    }
}
