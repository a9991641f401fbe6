//! The TLS material a start loads: `ca`, `cert`, `key`, `extra-certs`, or
//! a `pkcs12` file, with an encrypted key or PKCS#12 file opened by a
//! passphrase from `askpass FILE` or the terminal, as OpenVPN 2.6 does. It
//! runs while the settings are built, so before `daemon` detaches (2.6 asks
//! before forking too) and under `--check`.
//!
//! With `management-query-passwords` (and no `askpass FILE`, which 2.6
//! prefers) 2.6 asks for the passphrase over the management interface
//! instead, after `management-hold`: [`load_or_defer`] then leaves the key
//! closed, and the runtime opens it with [`load_with_passphrase`] once a
//! management client answered (`ferrovpn_control::key_passphrase`).

use std::path::Path;

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use ferrovpn_config::{Askpass, Config, Material, MaterialSource, Pkcs12};
use ferrovpn_control::key_passphrase::{PassphraseMemory, WrongPassphrase};
use ferrovpn_proto::keyfile::{self, KeyFileError, Pkcs12Error};
use ferrovpn_proto::session::tls::TlsConfigError;
use zeroize::Zeroizing;

/// Where a private key passphrase comes from.
pub trait PassphraseSource {
    /// The passphrase; `what` names the file it opens, for a prompt.
    fn passphrase(&mut self, what: &str) -> anyhow::Result<Zeroizing<String>>;
}

/// `askpass FILE`: the file's first line (read once, at start).
pub struct AskpassFile {
    line: Zeroizing<String>,
}

impl AskpassFile {
    /// Read `path` now, as 2.6 checks it at start even when no key needs it.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("askpass '{}': cannot read the file", path.display()))?,
        );
        let line = text.lines().next().unwrap_or("");
        if line.is_empty() {
            bail!(
                "askpass '{}': the first line is empty (it must hold the passphrase)",
                path.display()
            );
        }
        Ok(AskpassFile {
            line: Zeroizing::new(line.to_owned()),
        })
    }
}

impl PassphraseSource for AskpassFile {
    fn passphrase(&mut self, _what: &str) -> anyhow::Result<Zeroizing<String>> {
        Ok(self.line.clone())
    }
}

/// `askpass` alone, or no `askpass`: ask on the controlling terminal, without
/// echo, with 2.6's prompt; asked once and kept for the start.
#[derive(Default)]
pub struct TerminalPrompt {
    answer: Option<Zeroizing<String>>,
}

impl PassphraseSource for TerminalPrompt {
    fn passphrase(&mut self, what: &str) -> anyhow::Result<Zeroizing<String>> {
        if let Some(a) = &self.answer {
            return Ok(a.clone());
        }
        if !has_terminal() {
            bail!(
                "{what} is protected by a passphrase and there is no terminal to ask for it: give it with 'askpass FILE' (a file whose first line is the passphrase, mode 0600)"
            );
        }
        let a = Zeroizing::new(
            ferrovpn_control::client::credentials::ask_secret("Enter Private Key Password: ")
                .with_context(|| format!("asking for the passphrase of {what}"))?,
        );
        self.answer = Some(a.clone());
        Ok(a)
    }
}

/// The passphrase source `askpass` (or its absence) asks for.
pub fn passphrase_source(cfg: &Config) -> anyhow::Result<Box<dyn PassphraseSource>> {
    Ok(match &cfg.askpass {
        Some(Askpass::File(path)) => Box::new(
            AskpassFile::read(path).map_err(|e| anyhow!("{}{e:#}", where_is(cfg, "askpass")))?,
        ),
        Some(Askpass::Terminal) | None => Box::new(TerminalPrompt::default()),
    })
}

/// The private key's passphrase as 2.6 keeps it: for the life of the
/// process, in ssl.c's static `passbuf`, which `pem_password_setup` fills
/// only while it is empty and which `auth-nocache` (after use) and the
/// management command `forget-passwords` empty. So after a SIGHUP 2.6
/// neither reads `askpass FILE` again nor asks on the terminal, unless
/// one of those emptied it. The running process has one
/// ([`keep_passphrase_for_this_process`]), which its management interface
/// holds too; `--check` and tests have none, so each of their loads asks
/// its own source.
static PROCESS_PASSPHRASE: std::sync::OnceLock<PassphraseMemory> = std::sync::OnceLock::new();

/// Keep the passphrase that opened the key (from `askpass FILE`, the
/// terminal or the management interface) for the key's later openings,
/// as 2.6 does.
pub fn keep_passphrase_for_this_process() {
    PROCESS_PASSPHRASE.get_or_init(PassphraseMemory::default);
}

/// The process's passphrase memory (2.6's `passbuf`), or a memory of
/// its own for a load outside a running process.
pub fn passphrase_memory() -> PassphraseMemory {
    PROCESS_PASSPHRASE.get().cloned().unwrap_or_default()
}

/// When the key is opened: 2.6 reads `askpass FILE` only when it reads
/// its configuration (`init_query_passwords` at start and on SIGHUP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOpening {
    /// Start, SIGHUP (and a server's SIGUSR1 with `persist-key`, where 2.6
    /// keeps the key open and reading the file again gives the same key).
    ConfigRead,
    /// A server's SIGUSR1 without `persist-key`: 2.6 opens the key again
    /// (`do_close_free_key_schedule` freed it) with the kept passphrase,
    /// and without one asks over the management interface
    /// (`management-query-passwords`) or on the terminal, as if there were
    /// no FILE (`pem_password_callback` calls `pem_password_setup(NULL)`).
    SoftRestart,
}

/// A source whose answer goes to `memory`, as 2.6's `passbuf` holds what
/// `askpass FILE` or the terminal gave (until `auth-nocache` purges it
/// once the key is open).
struct Remembered {
    source: Box<dyn PassphraseSource>,
    memory: PassphraseMemory,
}

impl PassphraseSource for Remembered {
    fn passphrase(&mut self, what: &str) -> anyhow::Result<Zeroizing<String>> {
        let answer = self.source.passphrase(what)?;
        self.memory.opened_with(answer.clone(), false);
        Ok(answer)
    }
}

/// A passphrase given by a management client.
struct Given<'a>(&'a str);

impl PassphraseSource for Given<'_> {
    fn passphrase(&mut self, _what: &str) -> anyhow::Result<Zeroizing<String>> {
        Ok(Zeroizing::new(self.0.to_owned()))
    }
}

/// Stops the load at the first passphrase it needs ([`PassphraseWanted`]).
struct Deferring;

/// The load needs a passphrase (see [`load_or_defer`]).
#[derive(Debug)]
struct PassphraseWanted;

impl std::fmt::Display for PassphraseWanted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a passphrase is needed")
    }
}

impl std::error::Error for PassphraseWanted {}

impl PassphraseSource for Deferring {
    fn passphrase(&mut self, _what: &str) -> anyhow::Result<Zeroizing<String>> {
        Err(PassphraseWanted.into())
    }
}

/// [`load`], except that with `management-query-passwords` (and `askpass`
/// without a FILE, or none) a key that needs a passphrase is left closed:
/// `None`, to open with [`load_with_passphrase`] once the management
/// interface got the passphrase. Everything else (the other files, a
/// `pkcs12` file the empty password opens) is checked now.
///
/// With `askpass FILE` too, a running process leaves the key closed at a
/// configuration read: 2.6 reads the file into `passbuf` after the hold
/// and tells the management clients then if it is wrong
/// (`>PASSWORD:Verification Failed: 'Private Key'`, then what
/// `auth-retry` says), which the runtime does, reading the file with
/// [`local_passphrase`].
pub fn load_or_defer(cfg: &Config, opening: KeyOpening) -> anyhow::Result<Option<TlsFiles>> {
    let askpass_file = matches!(cfg.askpass, Some(Askpass::File(_)));
    if let Some(Askpass::File(path)) = &cfg.askpass
        && cfg.management_query_passwords
        && opening == KeyOpening::ConfigRead
        && PROCESS_PASSPHRASE.get().is_some()
        && kept_passphrase(cfg).is_none()
    {
        // 2.6 reads the file after `management-hold` (`openvpn_main`
        // calls `init_query_passwords` once the management interface is
        // open); at start it only checks that the file can be read
        // (options.c `check_file_access`). [`local_passphrase`] reads it
        // once the hold is released.
        check_askpass_readable(cfg, path)?;
        return match load_with(cfg, &mut Deferring) {
            Err(e) if e.downcast_ref::<PassphraseWanted>().is_some() => Ok(None),
            other => other.map(Some),
        };
    }
    let askpass_file_or_kept =
        askpass_file && (opening == KeyOpening::ConfigRead || kept_passphrase(cfg).is_some());
    if !cfg.management_query_passwords || askpass_file_or_kept {
        return match load_opening(cfg, opening) {
            Err(e)
                if cfg.management_query_passwords
                    && askpass_file
                    && PROCESS_PASSPHRASE.get().is_some()
                    && e.downcast_ref::<WrongPassphrase>().is_some() =>
            {
                Ok(None)
            }
            other => other.map(Some),
        };
    }
    match load_with(cfg, &mut Deferring) {
        Err(e) if e.downcast_ref::<PassphraseWanted>().is_some() => Ok(None),
        other => other.map(Some),
    }
}

/// Whether the key (or `pkcs12` file) may need a passphrase, so that 2.6
/// would use its `passbuf` when it opens it again.
pub fn needs_passphrase(cfg: &Config) -> bool {
    cfg.askpass.is_some()
        || cfg.pkcs12.is_some()
        || cfg
            .key
            .as_ref()
            .is_some_and(|k| keyfile::is_encrypted(&k.text))
}

/// Whether opening the key (or `pkcs12` file) asks for a passphrase: an
/// encrypted key, or a `pkcs12` file the empty password does not open.
/// 2.6's `pem_password_callback` runs only then, so only then does a
/// reopening read `askpass FILE` or ask.
pub fn key_asks_passphrase(cfg: &Config) -> bool {
    matches!(load_with(cfg, &mut Deferring), Err(e) if e.downcast_ref::<PassphraseWanted>().is_some())
}

/// Where a key opened at `opening` (again, after the first) gets its
/// passphrase when none is kept (2.6's `passbuf` empty; see
/// [`LocalPassphrase`](ferrovpn_control::key_passphrase::LocalPassphrase)):
/// `askpass FILE` is read at a configuration read (2.6's
/// `init_query_passwords` in `openvpn_main`) and, with `auth-retry
/// interact`, at every opening (`init_instance` calls it then too);
/// otherwise `pem_password_callback` asks as if there were no FILE
/// (`pem_password_setup(NULL)`): over the management interface with
/// `management-query-passwords`, else on the terminal.
pub fn local_passphrase(
    cfg: &Config,
    opening: KeyOpening,
) -> ferrovpn_control::key_passphrase::LocalPassphrase {
    let askpass_file = match &cfg.askpass {
        Some(Askpass::File(path)) => Some(path.clone()),
        _ => None,
    };
    let interact = cfg.auth_retry == Some(ferrovpn_config::AuthRetry::Interact);
    let over_management = cfg.management_query_passwords;
    let at = where_is(cfg, "askpass");
    let what = match (&cfg.pkcs12, &cfg.key) {
        (Some(p12), _) => format!("PKCS#12 file {}", pkcs12_name(p12)),
        (None, Some(key)) => format!("private key {}", source_name("key", key)),
        (None, None) => "the private key".to_owned(),
    };
    Box::new(move |config_read| {
        let config_read = config_read && opening == KeyOpening::ConfigRead;
        match &askpass_file {
            Some(path) if config_read || interact => AskpassFile::read(path)
                .map(|f| Some(f.line))
                .map_err(|e| anyhow!("{at}{e:#}")),
            _ if over_management => Ok(None),
            _ if !has_terminal() => Err(anyhow!("{NO_TERMINAL_2_6}")),
            _ => TerminalPrompt::default().passphrase(&what).map(Some),
        }
    })
}

/// 2.6's words when it has no terminal to ask on after the start (its
/// console query): a client's reconnect is told this over management
/// (`>FATAL:`) in the same words.
const NO_TERMINAL_2_6: &str = "neither stdin nor stderr are a tty device and you have neither a controlling tty nor systemd - can't ask for 'Enter Private Key Password:'.  If you used --daemon, you need to use --askpass to make passphrase-protected keys work, and you can not use --auth-nocache.";

/// Whether the process has a terminal to ask on.
fn has_terminal() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_ok()
}

/// Load the TLS material with `passphrase` for the key (or `pkcs12` file).
/// A wrong passphrase is a [`WrongPassphrase`] error.
pub fn load_with_passphrase(cfg: &Config, passphrase: &str) -> anyhow::Result<TlsFiles> {
    load_with(cfg, &mut Given(passphrase))
}

/// PEM texts for the TLS setup.
#[derive(Debug, Default)]
pub struct TlsFiles {
    pub ca: String,
    /// Empty for a username/password client without a certificate.
    pub cert: String,
    /// Unencrypted (decrypted here when it was not); empty without `cert`.
    pub key: String,
    /// `extra-certs`, and a `pkcs12` file's CA certificates when `ca` is given.
    pub extra_certs: String,
}

/// Load the TLS material `cfg` names, asking `askpass` (or the terminal)
/// for a passphrase when a key or PKCS#12 file needs one.
pub fn load(cfg: &Config) -> anyhow::Result<TlsFiles> {
    load_opening(cfg, KeyOpening::ConfigRead)
}

/// That `askpass FILE` can be read, without reading it: what 2.6 checks
/// at start (options.c `check_file_access`) when it reads the file later
/// or not at all.
fn check_askpass_readable(cfg: &Config, path: &std::path::Path) -> anyhow::Result<()> {
    std::fs::File::open(path).with_context(|| {
        format!(
            "{}askpass '{}': cannot read the file",
            where_is(cfg, "askpass"),
            path.display()
        )
    })?;
    Ok(())
}

/// The passphrase kept from the key's last opening, unless `auth-nocache`.
fn kept_passphrase(cfg: &Config) -> Option<Zeroizing<String>> {
    passphrase_memory().recall().filter(|_| !cfg.auth_nocache)
}

/// [`load`] at `opening`.
fn load_opening(cfg: &Config, opening: KeyOpening) -> anyhow::Result<TlsFiles> {
    if needs_passphrase(cfg) {
        if let Some(kept) = kept_passphrase(cfg) {
            // 2.6 still checks that the file can be read (options.c
            // `check_file_access`), but does not read it again.
            if let Some(Askpass::File(path)) = &cfg.askpass {
                check_askpass_readable(cfg, path)?;
            }
            return load_with(cfg, &mut Given(&kept));
        }
        let source: Box<dyn PassphraseSource> = match opening {
            KeyOpening::ConfigRead => passphrase_source(cfg)?,
            KeyOpening::SoftRestart => Box::new(TerminalPrompt::default()),
        };
        let memory = passphrase_memory();
        let mut source = Remembered {
            source,
            memory: memory.clone(),
        };
        let loaded = load_with(cfg, &mut source);
        if loaded.is_ok() && cfg.auth_nocache {
            // `pem_password_callback` purges `passbuf` once used.
            memory.forget();
        }
        loaded
    } else {
        load_with(cfg, &mut TerminalPrompt::default())
    }
}

/// [`load`] with a given passphrase source.
pub fn load_with(cfg: &Config, source: &mut dyn PassphraseSource) -> anyhow::Result<TlsFiles> {
    let mut files = TlsFiles {
        extra_certs: cfg
            .extra_certs
            .iter()
            .map(|m| m.text.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        ..TlsFiles::default()
    };
    if let Some(p12) = &cfg.pkcs12 {
        let contents = open_pkcs12(cfg, p12, source)?;
        files.cert = contents.cert_pem;
        files.key = contents.key_pem;
        match &cfg.ca {
            // As 2.6: `ca` is the trust; the file's CAs may be intermediates.
            Some(ca) => {
                files.ca = ca.text.clone();
                if !contents.ca_pem.is_empty() {
                    files.extra_certs = format!("{}\n{}", contents.ca_pem, files.extra_certs);
                }
            }
            None if contents.ca_pem.is_empty() => bail!(
                "{}pkcs12 {}: the file holds no CA certificate and there is no 'ca': nothing to verify the peer against",
                where_is(cfg, "pkcs12"),
                pkcs12_name(p12)
            ),
            // The file's CAs are trusted and also complete our chain.
            None => {
                files.ca = contents.ca_pem.clone();
                files.extra_certs = format!("{}\n{}", contents.ca_pem, files.extra_certs);
            }
        }
        return Ok(files);
    }
    files.ca = required(cfg, &cfg.ca, "ca")?.text.clone();
    // A username/password client may go without a certificate (empty PEM).
    if cfg.cert.is_none() && cfg.auth_user_pass.is_some() {
        return Ok(files);
    }
    files.cert = required(cfg, &cfg.cert, "cert")?.text.clone();
    let key = required(cfg, &cfg.key, "key")?;
    files.key = if keyfile::is_encrypted(&key.text) {
        let name = source_name("key", key);
        let pass = source.passphrase(&format!("private key {name}"))?;
        keyfile::decrypt_key(&key.text, pass.as_bytes()).map_err(|e| {
            let text = format!("{}key {name}: {e}", where_is(cfg, "key"));
            match e {
                KeyFileError::WrongPassphrase => WrongPassphrase {
                    message: text,
                    announced: true,
                }
                .into(),
                _ => anyhow!(text),
            }
        })?
    } else {
        key.text.clone()
    };
    Ok(files)
}

fn open_pkcs12(
    cfg: &Config,
    p12: &Pkcs12,
    source: &mut dyn PassphraseSource,
) -> anyhow::Result<keyfile::Pkcs12Contents> {
    let name = pkcs12_name(p12);
    let fail = |e: &dyn std::fmt::Display| anyhow!("{}pkcs12 {name}: {e}", where_is(cfg, "pkcs12"));
    let der = match p12 {
        Pkcs12::File { der, .. } => der.clone(),
        Pkcs12::Inline { base64 } => {
            let compact: String = base64.split_whitespace().collect();
            base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|e| fail(&format!("the inline block is not valid base64 ({e})")))?
        }
    };
    // As 2.6: an empty password first, then the asked one.
    match keyfile::open_pkcs12(&der, "") {
        Ok(c) => return Ok(c),
        Err(Pkcs12Error::WrongPassword) => {}
        Err(e) => return Err(fail(&e)),
    }
    let pass = source.passphrase(&format!("PKCS#12 file {name}"))?;
    keyfile::open_pkcs12(&der, &pass).map_err(|e| match e {
        Pkcs12Error::WrongPassword => WrongPassphrase {
            message: fail(&e).to_string(),
            announced: false,
        }
        .into(),
        _ => fail(&e),
    })
}

fn pkcs12_name(p12: &Pkcs12) -> String {
    match p12 {
        Pkcs12::File { path, .. } => format!("'{}'", path.display()),
        Pkcs12::Inline { .. } => "<pkcs12> (inline)".into(),
    }
}

fn required<'a>(
    cfg: &'a Config,
    m: &'a Option<Material>,
    name: &str,
) -> anyhow::Result<&'a Material> {
    m.as_ref().ok_or_else(|| {
        anyhow!(
            "'{name}' is required{}",
            if cfg.is_server() {
                " in server mode"
            } else {
                " (ferrovpn clients authenticate with a certificate)"
            }
        )
    })
}

/// How errors name a file or an inline block: `'/etc/openvpn/ta.key'` or
/// `<tls-crypt> (inline)`.
pub fn material_name(directive: &str, m: &Material) -> String {
    source_name(directive, m)
}

fn source_name(directive: &str, m: &Material) -> String {
    match &m.source {
        MaterialSource::File(p) => format!("'{}'", p.display()),
        MaterialSource::Inline => format!("<{directive}> (inline)"),
    }
}

fn where_is(cfg: &Config, directive: &str) -> String {
    cfg.location_of(directive)
        .map(|l| format!("{l}: "))
        .unwrap_or_default()
}

/// A TLS setup error, naming the file at fault (or the `pkcs12` file the
/// certificate or key came from) and saying what is wrong.
pub fn tls_setup_error(cfg: &Config, e: TlsConfigError) -> anyhow::Error {
    let Some(directive) = e.directive() else {
        return anyhow!("TLS setup: {e}");
    };
    let from_pkcs12 = cfg.pkcs12.as_ref().filter(|_| match directive {
        "cert" | "key" => true,
        "ca" => cfg.ca.is_none(),
        _ => false,
    });
    let name = if let Some(p12) = from_pkcs12 {
        format!("pkcs12 {} ({directive})", pkcs12_name(p12))
    } else {
        let m = match directive {
            "ca" => cfg.ca.as_ref(),
            "cert" => cfg.cert.as_ref(),
            "key" => cfg.key.as_ref(),
            "crl-verify" => cfg.crl_verify.as_ref(),
            // Several blocks may be concatenated; name them all.
            "extra-certs" if cfg.extra_certs.len() == 1 => cfg.extra_certs.first(),
            _ => None,
        };
        match m {
            Some(m) => format!("{directive} {}", source_name(directive, m)),
            None if directive == "extra-certs" => format!(
                "extra-certs {}",
                cfg.extra_certs
                    .iter()
                    .map(|m| source_name(directive, m))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => directive.to_owned(),
        }
    };
    let at = if from_pkcs12.is_some() {
        where_is(cfg, "pkcs12")
    } else {
        where_is(cfg, directive)
    };
    let mut msg = format!("{at}{name}: {}", e.reason());
    if matches!(e, TlsConfigError::KeyMismatch)
        && from_pkcs12.is_none()
        && let Some(cert) = &cfg.cert
    {
        msg.push_str(&format!(" ({})", source_name("cert", cert)));
    }
    anyhow!(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrovpn_testkit::pki::{
        KeyEncryption, KeyType, Pki, PkiOptions, encrypt_key, export_pkcs12,
    };
    use std::path::PathBuf;

    fn pki(tag: &str, key_type: KeyType) -> Pki {
        let dir = std::env::temp_dir().join(format!("fvpn-keys-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Pki::generate(
            &dir,
            &PkiOptions {
                key_type,
                ..PkiOptions::default()
            },
        )
        .unwrap()
    }

    /// A server config: the PKI's ca/cert/key unless `lines` gives its own.
    fn server(p: &Pki, lines: &str) -> anyhow::Result<ferrovpn_control::server::ServerSettings> {
        let mut text = String::from("server 10.8.0.0 255.255.255.0\ndev tun\ndh none\n");
        for (d, path) in [
            ("ca", &p.ca.cert),
            ("cert", &p.server.cert),
            ("key", &p.server.key),
        ] {
            let given = lines
                .lines()
                .any(|l| l.starts_with(&format!("{d} ")) || l.starts_with(&format!("<{d}>")));
            if !given && !lines.contains("pkcs12") {
                text.push_str(&format!("{d} {}\n", path.display()));
            }
        }
        text.push_str(lines);
        text.push('\n');
        let cfg = ferrovpn_config::parse_str(&text, "server.conf")?;
        crate::settings::server_settings(&cfg)
    }

    fn refusal(r: anyhow::Result<ferrovpn_control::server::ServerSettings>) -> String {
        match r {
            Ok(_) => panic!("accepted"),
            Err(e) => format!("{e:#}"),
        }
    }

    fn pem_block(label: &str, der: &[u8]) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        format!("-----BEGIN {label}-----\n{b64}\n-----END {label}-----\n")
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// Every load path: each bad input is refused with the file named and
    /// the reason in words (issue 10: not `key: no items found`,
    /// `base64 decode error` or `KeyMismatch`).
    #[test]
    fn tls_material_errors_name_the_file_and_say_what_is_wrong() {
        let p = pki("errors", KeyType::EcP256);
        let d = p.dir.clone();
        let damaged_cert = write(
            &d,
            "damaged.crt",
            "-----BEGIN CERTIFICATE-----\nMIIB!!!notbase64\n-----END CERTIFICATE-----\n",
        );
        let not_pem = write(&d, "not-pem.txt", "hello, I am not a certificate\n");
        let garbage_key = write(
            &d,
            "garbage.key",
            &pem_block("PRIVATE KEY", &[0x30, 0x03, 0x02, 0x01, 0x00]),
        );
        let garbage_crl = write(&d, "garbage.crl", &pem_block("X509 CRL", &[0x30, 0x00]));
        let bad_static = write(
            &d,
            "bad-static.key",
            "-----BEGIN OpenVPN Static key V1-----\n00112233\n-----END OpenVPN Static key V1-----\n",
        );
        let bad_v2 = write(
            &d,
            "bad-v2.key",
            "-----BEGIN OpenVPN tls-crypt-v2 server key-----\nAAAA\n-----END OpenVPN tls-crypt-v2 server key-----\n",
        );
        let garbage_p12 = write(&d, "garbage.p12", "not DER at all");
        let p12 = d.join("server.p12");
        export_pkcs12(&p.server, Some(&p.ca.cert), &p12, "right", false).unwrap();
        let enc = d.join("server-enc.key");
        encrypt_key(&p.server.key, &enc, "right", KeyEncryption::Pkcs8Aes256).unwrap();
        let wrong = write(&d, "wrong.pass", "wrong\n");
        let missing = d.join("missing.pass");
        let missing_ca = d.join("missing-ca.crt");
        let show = |p: &Path| p.display().to_string();

        let cases: Vec<(String, String, &str)> = vec![
            (
                format!("ca {}", show(&not_pem)),
                show(&not_pem),
                "expects PEM certificates",
            ),
            (
                format!("ca {}", show(&missing_ca)),
                show(&missing_ca),
                "No such file",
            ),
            (
                format!("ca {}", show(&damaged_cert)),
                show(&damaged_cert),
                "base64 text inside a PEM block is damaged",
            ),
            (
                format!("cert {}", show(&damaged_cert)),
                show(&damaged_cert),
                "base64 text inside a PEM block is damaged",
            ),
            (
                format!("cert {}", show(&p.foreign_client.cert)),
                show(&p.server.key),
                "the private key does not belong to the certificate",
            ),
            (
                format!("key {}", show(&garbage_key)),
                show(&garbage_key),
                "the private key cannot be used",
            ),
            (
                format!("key {}", show(&p.server.cert)),
                show(&p.server.cert),
                "expects a PEM private key",
            ),
            (
                format!("key {}\naskpass {}", show(&enc), show(&wrong)),
                show(&enc),
                "the passphrase is wrong",
            ),
            (
                format!("key {}\naskpass {}", show(&enc), show(&missing)),
                show(&missing),
                "cannot read the file",
            ),
            (
                format!("extra-certs {}", show(&damaged_cert)),
                show(&damaged_cert),
                "base64 text inside a PEM block is damaged",
            ),
            (
                format!("crl-verify {}", show(&garbage_crl)),
                show(&garbage_crl),
                "not a valid certificate revocation list",
            ),
            (
                format!("tls-auth {} 0", show(&bad_static)),
                show(&bad_static),
                "not a usable OpenVPN static key",
            ),
            (
                format!("tls-crypt {}", show(&bad_static)),
                show(&bad_static),
                "not a usable OpenVPN static key",
            ),
            (
                format!("tls-crypt-v2 {}", show(&bad_v2)),
                show(&bad_v2),
                "not a usable tls-crypt-v2 server key",
            ),
            (
                format!("tls-auth {} 0", show(&not_pem)),
                show(&not_pem),
                "expects an OpenVPN static key",
            ),
            (
                format!("pkcs12 {}", show(&garbage_p12)),
                show(&garbage_p12),
                "not a PKCS#12 file",
            ),
            (
                format!("pkcs12 {}\naskpass {}", show(&p12), show(&wrong)),
                show(&p12),
                "the password is wrong",
            ),
        ];
        for (lines, file, reason) in cases {
            let e = refusal(server(&p, &lines));
            assert!(
                e.contains(&file) && e.contains(reason),
                "for\n{lines}\nexpected the file {file} and '{reason}' in:\n{e}"
            );
            for jargon in ["no items found", "KeyMismatch", "base64 decode error"] {
                assert!(!e.contains(jargon), "{lines}: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Each encryption OpenSSL writes opens with the right passphrase (the
    /// TLS setup then checks that the key matches the certificate).
    #[test]
    fn encrypted_keys_open_with_the_right_passphrase() {
        for kt in [KeyType::EcP256, KeyType::Rsa2048] {
            let p = pki(&format!("open-{kt:?}"), kt);
            let pass = write(&p.dir, "right.pass", "right pass phrase\nignored\n");
            for how in [
                KeyEncryption::Pkcs8Aes256,
                KeyEncryption::Pkcs8Des3,
                KeyEncryption::TraditionalAes128,
                KeyEncryption::TraditionalDes3,
            ] {
                let enc = p.dir.join(format!("enc-{how:?}.key"));
                encrypt_key(&p.server.key, &enc, "right pass phrase", how).unwrap();
                let text = std::fs::read_to_string(&enc).unwrap();
                assert!(keyfile::is_encrypted(&text), "{how:?}: {text}");
                server(
                    &p,
                    &format!("key {}\naskpass {}", enc.display(), pass.display()),
                )
                .unwrap_or_else(|e| panic!("{kt:?} {how:?}: {e:#}"));
                // Inline too.
                server(
                    &p,
                    &format!("<key>\n{text}</key>\naskpass {}", pass.display()),
                )
                .unwrap_or_else(|e| panic!("{kt:?} {how:?} inline: {e:#}"));
            }
            let _ = std::fs::remove_dir_all(&p.dir);
        }
    }

    /// PKCS#12: OpenSSL 3's default and the legacy format, with a password or
    /// none (2.6 tries the empty one first), inline as base64; `ca` given
    /// alongside replaces the file's CAs; without `ca` or CAs: refused.
    #[test]
    fn pkcs12_files_open_as_2_6_opens_them() {
        use base64::Engine as _;
        let p = pki("p12", KeyType::EcP256);
        let pass = write(&p.dir, "p12.pass", "pw\n");
        for legacy in [false, true] {
            for password in ["", "pw"] {
                let f = p.dir.join(format!("s-{legacy}-{}.p12", password.len()));
                export_pkcs12(&p.server, Some(&p.ca.cert), &f, password, legacy).unwrap();
                let what = format!("legacy={legacy} password={password:?}");
                let askpass = format!("askpass {}", pass.display());
                let s = server(&p, &format!("pkcs12 {}\n{askpass}", f.display()))
                    .unwrap_or_else(|e| panic!("{what}: {e:#}"));
                assert!(s.session.tls_server.is_some());
                let b64 =
                    base64::engine::general_purpose::STANDARD.encode(std::fs::read(&f).unwrap());
                server(&p, &format!("<pkcs12>\n{b64}\n</pkcs12>\n{askpass}"))
                    .unwrap_or_else(|e| panic!("{what} inline: {e:#}"));
                server(
                    &p,
                    &format!(
                        "pkcs12 {}\nca {}\n{askpass}",
                        f.display(),
                        p.ca.cert.display()
                    ),
                )
                .unwrap_or_else(|e| panic!("{what} with ca: {e:#}"));
            }
        }
        // No CA in the file and no `ca`: nothing to verify peers against.
        let bare = p.dir.join("bare.p12");
        export_pkcs12(&p.server, None, &bare, "", false).unwrap();
        let e = refusal(server(&p, &format!("pkcs12 {}", bare.display())));
        assert!(
            e.contains("holds no CA certificate") && e.contains("bare.p12"),
            "{e}"
        );
        server(
            &p,
            &format!("pkcs12 {}\nca {}", bare.display(), p.ca.cert.display()),
        )
        .unwrap();
        // 2.6: not together with cert/key.
        let e = refusal(server(
            &p,
            &format!(
                "pkcs12 {}\ncert {}",
                bare.display(),
                p.server.cert.display()
            ),
        ));
        assert!(e.contains("'cert' cannot be used when 'pkcs12'"), "{e}");
        let _ = std::fs::remove_dir_all(&p.dir);
    }
}
