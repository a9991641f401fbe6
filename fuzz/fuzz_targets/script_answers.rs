//! Fuzz what scripts hand back: the deferred-auth files (`auth_control_file`,
//! `auth_pending_file`) and `auth-gen-token` tokens sent as passwords.
//! Arbitrary bytes give an answer or an error, never a panic; accepted
//! pending text is bounded and free of control characters.
#![no_main]

use std::sync::OnceLock;

use ferrovpn_control::scripts::deferred::{parse_control, parse_pending};
use ferrovpn_control::server::auth_token::{self, Limits, TokenKey};
use libfuzzer_sys::fuzz_target;

fn key() -> &'static TokenKey {
    static KEY: OnceLock<TokenKey> = OnceLock::new();
    KEY.get_or_init(TokenKey::random)
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_control(data);
    if let Ok(Some(p)) = parse_pending(data) {
        assert!(p.extra.len() < 1024 && p.timeout_secs > 0);
        assert!(!p.extra.chars().chain(p.method.chars()).any(char::is_control));
    }
    let text = String::from_utf8_lossy(data);
    let limits = Limits {
        renewal_secs: 3600,
        lifetime_secs: Some(60),
    };
    // Forging a token without the key must not work.
    assert!(auth_token::check(key(), "user", &text, 1_700_000_000, limits).is_none());
    let _ = TokenKey::from_pem(&text);
});
