//! What a SERVER asks again after a restart, as OpenVPN 2.6: the private
//! key's passphrase given over the management interface
//! (`management-query-passwords`) lives in ssl.c's process-wide `passbuf`,
//! which `pem_password_setup` fills only while it is empty. So when a
//! restart opens the key again (every SIGHUP; a SIGUSR1 without
//! `persist-key`, init.c `do_close_free_key_schedule`) the kept passphrase
//! opens it without a question; `auth-nocache` empties `passbuf` after
//! each use (`pem_password_callback`) and `forget-passwords` empties it
//! (manage.c `man_forget_passwords`, `ssl_purge_auth`), and then the next
//! opening asks. With `management-hold` 2.6 also holds again on every
//! restart. An `askpass FILE` is read into the same `passbuf`: a SIGHUP
//! opens the key with the passphrase read at start, and reads the file
//! again only after `auth-nocache` or `forget-passwords` emptied it; a
//! SIGUSR1 never reads it (it asks over management then).
//!
//! Each script runs against Debian's stock 2.6 server and the ferrovpn
//! server with the same config, and the test compares their whole
//! management transcripts (times and pids cut).
//!
//! Needs root, `openvpn`, `openssl`, `ip` and `/dev/net/tun`; fails loudly
//! without them. Every wait has a deadline.

use std::time::Instant;

use ferrovpn_testkit::mgmt::{
    Management, REPLY_TIMEOUT, server_conf_with_management, server_transcripts_as_stock,
    transcript_to_exit,
};
use ferrovpn_testkit::pki::KeyEncryption;
use ferrovpn_testkit::{Implementation, Lab, Material, openvpn_server_conf};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");
const PASSPHRASE: &str = "correct horse battery";
const NEED: &str = ">PASSWORD:Need 'Private Key' password";

/// How the server is set up, besides its encrypted key, its management
/// socket and `management-query-passwords`.
#[derive(Clone, Copy)]
struct Setup<'a> {
    /// `management-hold`.
    hold: bool,
    /// `persist-key` (the lab's server config has it; taken out without).
    persist_key: bool,
    /// More config lines.
    extra: &'a [&'a str],
}

/// Read `m` from line `read` of [`Management::seen`] on, answering each
/// hold with `hold release` and each passphrase question with the
/// passphrase, until the server says CONNECTED. Panics on `>FATAL:`, or
/// when CONNECTED does not come within [`REPLY_TIMEOUT`].
fn until_connected(m: &mut Management, read: &mut usize) {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    loop {
        while *read < m.seen().len() {
            let l = m.seen()[*read].clone();
            *read += 1;
            if l.starts_with(">HOLD:") {
                m.send("hold release");
            } else if l == NEED {
                m.send(&format!("password \"Private Key\" \"{PASSPHRASE}\""));
            } else if l.contains(",CONNECTED,") {
                return;
            } else {
                assert!(!l.starts_with(">FATAL:"), "{:#?}", m.seen());
            }
        }
        assert!(
            m.line(deadline).is_some(),
            "never CONNECTED; read:\n{}",
            m.seen().join("\n")
        );
    }
}

/// A server of `imp` set up as `setup` says, with its key encrypted with
/// [`PASSPHRASE`]: started (the hold released, or the first question
/// answered, then `state on`), then `commands` over management, each
/// signal followed until CONNECTED again, then SIGTERM. `between` runs
/// after the first CONNECTED. Returns the whole transcript
/// ([`transcript_to_exit`]).
fn restarts_script(
    lab: &Lab,
    imp: Implementation,
    tag: &str,
    setup: Setup,
    commands: &[&str],
    between: impl Fn(),
) -> Vec<String> {
    let (name, mut server, mut m, mut read) = connected_server(lab, imp, tag, setup);
    between();
    for command in commands {
        m.send(command);
        if command.starts_with("signal ") {
            until_connected(&mut m, &mut read);
        }
    }
    m.send("signal SIGTERM");
    transcript_to_exit(&mut m, &mut server, 0, &name)
}

/// A server of `imp` set up as `setup` says (see [`restarts_script`]),
/// CONNECTED: its name, process, management connection and how many of
/// the lines seen [`until_connected`] read.
fn connected_server(
    lab: &Lab,
    imp: Implementation,
    tag: &str,
    setup: Setup,
) -> (String, ferrovpn_testkit::Proc, Management, usize) {
    connected_server_with(lab, imp, tag, setup, || {})
}

/// [`connected_server`], running `at_first` once the first hold or
/// question is there, before it is released or answered.
fn connected_server_with(
    lab: &Lab,
    imp: Implementation,
    tag: &str,
    setup: Setup,
    at_first: impl FnOnce(),
) -> (String, ferrovpn_testkit::Proc, Management, usize) {
    let name = format!("{}-{tag}", imp.name());
    let key = lab
        .pki
        .encrypted_key(
            &lab.pki.server,
            &format!("{name}-enc.key"),
            PASSPHRASE,
            KeyEncryption::Pkcs8Aes256,
        )
        .unwrap();
    let socket = lab.dir.join(format!("{name}.sock"));
    let mut sc = server_conf_with_management(lab, &socket);
    sc.key = Material::File(key);
    sc.extra.push("management-query-passwords".to_string());
    if setup.hold {
        sc.extra.push("management-hold".to_string());
    }
    sc.extra.extend(setup.extra.iter().map(|l| l.to_string()));
    let mut text = openvpn_server_conf(&sc);
    if !setup.persist_key {
        assert!(text.contains("\npersist-key\n"), "{text}");
        text = text.replace("\npersist-key\n", "\n");
    }
    let server = lab.spawn(&lab.server_ns, &name, imp, &text);
    let mut m = Management::connect_when_listening(&socket, REPLY_TIMEOUT);
    // `state on` once the first question or hold is there, so that its
    // reply comes after it in both transcripts.
    let first = m.until("hold or question", |l| l.starts_with(">HOLD:") || l == NEED);
    at_first();
    m.send("state on");
    let mut read = m.seen().len() - 1;
    assert_eq!(m.seen()[read], first);
    until_connected(&mut m, &mut read);
    (name, server, m, read)
}

/// How many lines of `lines` are `line`.
fn count(lines: &[String], line: &str) -> usize {
    lines.iter().filter(|l| *l == line).count()
}

/// SIGUSR1 and SIGHUP, then the same after `forget-passwords`.
const RESTARTS_AND_FORGET: [&str; 5] = [
    "signal SIGUSR1",
    "signal SIGHUP",
    "forget-passwords",
    "signal SIGUSR1",
    "signal SIGHUP",
];

/// The transcript of [`restarts_script`] with [`RESTARTS_AND_FORGET`] for
/// stock 2.6 and ferrovpn, asserted equal; ferrovpn's.
fn as_stock(tag: &str, setup: Setup) -> Vec<String> {
    let lab = Lab::new(tag, 0, FERROVPN);
    server_transcripts_as_stock(|imp| {
        restarts_script(&lab, imp, tag, setup, &RESTARTS_AND_FORGET, || {})
    })
}

/// Without `persist-key` both restarts open the key again, with the
/// passphrase 2.6 kept: asked at start, and once more after
/// `forget-passwords`.
#[test]
fn restarts_keep_the_passphrase_until_forget_passwords_as_2_6() {
    let setup = Setup {
        hold: false,
        persist_key: false,
        extra: &[],
    };
    let ours = as_stock("svpw-kept", setup);
    assert_eq!(count(&ours, NEED), 2, "{ours:#?}");
    assert_eq!(count(&ours, "SUCCESS: Passwords were forgotten"), 1);
}

/// `auth-nocache`: every opening of the key asks (start and the four
/// restarts).
#[test]
fn auth_nocache_asks_on_every_opening_as_2_6() {
    let setup = Setup {
        hold: false,
        persist_key: false,
        extra: &["auth-nocache"],
    };
    let ours = as_stock("svpw-nocache", setup);
    assert_eq!(count(&ours, NEED), 5, "{ours:#?}");
}

/// `persist-key` with `auth-nocache`: a SIGUSR1 does not open the key,
/// so only the start and the SIGHUPs ask.
#[test]
fn persist_key_keeps_the_key_over_sigusr1_as_2_6() {
    let setup = Setup {
        hold: false,
        persist_key: true,
        extra: &["auth-nocache"],
    };
    let ours = as_stock("svpw-pk", setup);
    assert_eq!(count(&ours, NEED), 3, "{ours:#?}");
}

/// `management-hold` with `persist-key`: 2.6 holds again on every restart
/// (`>HOLD:...:1` in place of SIGUSR1's restart pause, `:0` after
/// SIGHUP); `forget-passwords` then SIGUSR1 asks nothing (the key stays
/// open), the SIGHUP after it asks.
#[test]
fn management_hold_holds_again_on_every_restart_as_2_6() {
    let setup = Setup {
        hold: true,
        persist_key: true,
        extra: &[],
    };
    let ours = as_stock("svpw-hold", setup);
    assert_eq!(count(&ours, NEED), 2, "{ours:#?}");
    assert_eq!(
        count(&ours, ">HOLD:Waiting for hold release:0"),
        3,
        "{ours:#?}"
    );
    assert_eq!(
        count(&ours, ">HOLD:Waiting for hold release:1"),
        2,
        "{ours:#?}"
    );
}

/// `askpass FILE` (2.6 prefers it to asking over management): read once;
/// the restarts open the key with the passphrase read at start, though
/// the file now holds another, and nothing is asked.
#[test]
fn askpass_file_is_read_once_as_2_6() {
    let lab = Lab::new("svpw-askpass", 0, FERROVPN);
    let ours = server_transcripts_as_stock(|imp| {
        let askpass = lab.dir.join(format!("{}.pass", imp.name()));
        std::fs::write(&askpass, format!("{PASSPHRASE}\n")).unwrap();
        let line = format!("askpass {}", askpass.display());
        let setup = Setup {
            hold: true,
            persist_key: false,
            extra: &[&line],
        };
        let restarts = ["signal SIGUSR1", "signal SIGHUP"];
        restarts_script(&lab, imp, "askpass", setup, &restarts, || {
            std::fs::write(&askpass, "not the passphrase\n").unwrap()
        })
    });
    assert_eq!(count(&ours, NEED), 0, "{ours:#?}");
    assert_eq!(
        count(&ours, ">STATE:T,CONNECTED,SUCCESS,10.8.0.1,,,,"),
        3,
        "{ours:#?}"
    );
}

/// `askpass FILE` and `forget-passwords`: 2.6's `passbuf` holds what the
/// file gave, and `forget-passwords` empties it (`ssl_purge_auth`). A
/// SIGUSR1 without `persist-key` then opens the key without reading the
/// file (`pem_password_callback` calls `pem_password_setup(NULL)`): it
/// asks over the management interface; the SIGHUP after it opens the key
/// with that answer, kept.
#[test]
fn forget_passwords_empties_what_askpass_file_gave_as_2_6() {
    let lab = Lab::new("svpw-askforget", 0, FERROVPN);
    let ours = server_transcripts_as_stock(|imp| {
        let askpass = lab.dir.join(format!("{}-askforget.pass", imp.name()));
        std::fs::write(&askpass, format!("{PASSPHRASE}\n")).unwrap();
        let line = format!("askpass {}", askpass.display());
        let setup = Setup {
            hold: true,
            persist_key: false,
            extra: &[&line],
        };
        let commands = ["forget-passwords", "signal SIGUSR1", "signal SIGHUP"];
        restarts_script(&lab, imp, "askforget", setup, &commands, || {})
    });
    assert_eq!(count(&ours, NEED), 1, "{ours:#?}");
}

/// `askpass FILE`, `forget-passwords`, then SIGHUP: 2.6 reads the file
/// again (`init_query_passwords` at each configuration read fills the
/// emptied `passbuf` from it); it now holds a wrong passphrase, so the
/// key does not open: `>PASSWORD:Verification Failed`, `>FATAL:` and
/// exit status 1.
#[test]
fn sighup_after_forget_passwords_reads_askpass_file_again_as_2_6() {
    let lab = Lab::new("svpw-askreread", 0, FERROVPN);
    let ours = server_transcripts_as_stock(|imp| {
        let askpass = lab.dir.join(format!("{}-askreread.pass", imp.name()));
        std::fs::write(&askpass, format!("{PASSPHRASE}\n")).unwrap();
        let line = format!("askpass {}", askpass.display());
        let setup = Setup {
            hold: true,
            persist_key: false,
            extra: &[&line],
        };
        let (name, mut server, mut m, _) = connected_server(&lab, imp, "askreread", setup);
        std::fs::write(&askpass, "not the passphrase\n").unwrap();
        m.send("forget-passwords");
        m.send("signal SIGHUP");
        let deadline = Instant::now() + REPLY_TIMEOUT;
        let mut read = m.seen().len();
        while m.line(deadline).is_some() {
            // Release the hold after the SIGHUP.
            while read < m.seen().len() {
                if m.seen()[read].starts_with(">HOLD:") {
                    m.send("hold release");
                }
                read += 1;
            }
        }
        let status =
            ferrovpn_testkit::lab::wait_exit(&mut server, std::time::Duration::from_secs(10));
        assert_eq!(status.code(), Some(1), "{name}: {status:?}");
        m.seen()
            .iter()
            .map(|l| ferrovpn_testkit::mgmt::normalized(l))
            .collect()
    });
    assert_eq!(count(&ours, NEED), 0, "{ours:#?}");
    assert_eq!(
        count(&ours, ">PASSWORD:Verification Failed: 'Private Key'"),
        1,
        "{ours:#?}"
    );
}

/// `askpass FILE` with `auth-nocache` and without `persist-key`: the key
/// opens at every restart and `passbuf` was emptied after each use. A
/// SIGUSR1 does not read the file: it asks over the management interface
/// (2.6's `pem_password_setup(NULL)`); a SIGHUP reads the file again.
#[test]
fn askpass_file_with_auth_nocache_asks_on_sigusr1_as_2_6() {
    let lab = Lab::new("svpw-asknc", 0, FERROVPN);
    let ours = server_transcripts_as_stock(|imp| {
        let askpass = lab.dir.join(format!("{}-asknc.pass", imp.name()));
        std::fs::write(&askpass, format!("{PASSPHRASE}\n")).unwrap();
        let line = format!("askpass {}", askpass.display());
        let setup = Setup {
            hold: true,
            persist_key: false,
            extra: &[&line, "auth-nocache"],
        };
        let commands = ["signal SIGUSR1", "signal SIGHUP", "signal SIGUSR1"];
        restarts_script(&lab, imp, "asknc", setup, &commands, || {})
    });
    assert_eq!(count(&ours, NEED), 2, "{ours:#?}");
}

/// With `management-query-passwords` 2.6 reads `askpass FILE` after
/// `management-hold` (`openvpn_main` calls `init_query_passwords` once
/// the management interface is open; at start it only checks that the
/// file can be read): a file that holds the right passphrase only once
/// the hold started opens the key, with nothing told or asked.
#[test]
fn askpass_file_is_read_after_the_hold_as_2_6() {
    let lab = Lab::new("svpw-askhold", 0, FERROVPN);
    let ours = server_transcripts_as_stock(|imp| {
        let askpass = lab.dir.join(format!("{}-askhold.pass", imp.name()));
        std::fs::write(&askpass, "not the passphrase\n").unwrap();
        let line = format!("askpass {}", askpass.display());
        let setup = Setup {
            hold: true,
            persist_key: true,
            extra: &[&line],
        };
        let (name, mut server, mut m, _) =
            connected_server_with(&lab, imp, "askhold", setup, || {
                std::fs::write(&askpass, format!("{PASSPHRASE}\n")).unwrap()
            });
        m.send("signal SIGTERM");
        transcript_to_exit(&mut m, &mut server, 0, &name)
    });
    assert_eq!(count(&ours, NEED), 0, "{ours:#?}");
    assert!(
        !ours
            .iter()
            .any(|l| l.starts_with(">PASSWORD:Verification Failed")),
        "{ours:#?}"
    );
    assert_eq!(
        count(&ours, ">STATE:T,CONNECTED,SUCCESS,10.8.0.1,,,,"),
        1,
        "{ours:#?}"
    );
}
