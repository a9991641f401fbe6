//! Fuzz the management interface's input side: bytes from a client through
//! the line splitter, the word splitter and a connection's state machine.
//! Never a panic; every reply is whole CRLF lines; words stay bounded.
#![no_main]

use ferrovpn_control::management::command::{MAX_WORD_LEN, MAX_WORDS, split_words};
use ferrovpn_control::management::session::{
    EntryQuery, History, LineBuffer, Mode, PasswordQuery, Session, Shared, Step,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let client = data.get(2).is_some_and(|b| b & 1 == 1);
    let mut shared = Shared {
        hold: true,
        hold_released: false,
        holding: true,
        states: History::new(4),
        log: History::new(4),
        verb: 3,
        pid: 1,
        // The second byte picks whether `management-client-auth` is on.
        client_auth: data.get(1).is_some_and(|b| b & 1 == 1),
        // The third byte picks a client's interface (with a password
        // question open) or a server's.
        mode: if client { Mode::Client } else { Mode::Server },
        hold_wait: 0,
        // `forget-passwords` drops a kept key passphrase and credentials.
        key_passphrase: Default::default(),
        credentials: Default::default(),
        password_query: client.then(|| PasswordQuery::new("Auth", true, None)),
        // The fourth byte picks which entry question a client has open
        // (`remote`, `proxy` answer it; `cr-response` goes to the session)
        // and whether its entry is UDP.
        entry_query: match data.get(3).map(|b| b % 3) {
            Some(1) if client => Some(EntryQuery::remote(">REMOTE:h,1194,udp".into())),
            Some(2) if client => Some(EntryQuery::proxy(">PROXY:1,TCP,h".into())),
            _ => None,
        },
        entry_udp: data.get(3).is_some_and(|b| b & 4 == 4),
        started: data.get(3).is_some_and(|b| b & 8 == 8),
        // `remote-entry-count` / `remote-entry-get` read the list.
        remote_entries: if client {
            vec![
                "h,1194,udp,enabled".into(),
                "h,443,tcp-client,enabled".into(),
            ]
        } else {
            Vec::new()
        },
    };
    // The first byte picks whether a password is asked first.
    let password = data
        .first()
        .is_some_and(|b| b & 1 == 1)
        .then(|| "pw".to_string());
    let mut session = Session::new(password);
    let mut lines = LineBuffer::default();
    for line in lines.push(data).into_iter().flatten() {
        if let Ok(words) = split_words(&line) {
            assert!(words.len() <= MAX_WORDS);
            assert!(words.iter().all(|w| w.len() <= MAX_WORD_LEN));
        }
        let text = match session.on_line(&mut shared, &line) {
            Step::Send(t) | Step::Close(t) => t,
            Step::Nothing | Step::Ask(_) => continue,
        };
        assert!(text.is_empty() || text.ends_with("\r\n"), "{text:?}");
        assert_eq!(
            text.matches('\n').count(),
            text.matches("\r\n").count(),
            "{text:?}"
        );
    }
});
