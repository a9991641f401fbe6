//! `auth-gen-token`: OpenVPN 2.6's session tokens, so that a stock client
//! renegotiates and reconnects with the token instead of its password.
//!
//! A token is `SESS_ID_AT_` and the base64 of: a 12-byte session id, the
//! initial and the current Unix time (big-endian u64 each), and an
//! HMAC-SHA256 over the user name followed by those 28 bytes. The HMAC key
//! is bytes 64..96 of the 128-byte `OpenVPN auth-token server key`
//! (`auth-gen-token-secret`, or random per start). Pure code over bytes
//! and a clock.

use aws_lc_rs::{constant_time, hmac, rand};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// What every token starts with.
pub const PREFIX: &str = "SESS_ID_AT_";
const SESSION_ID_LEN: usize = 12;
const MAC_LEN: usize = 32;
const DATA_LEN: usize = SESSION_ID_LEN + 8 + 8 + MAC_LEN;
const PEM_NAME: &str = "OpenVPN auth-token server key";
/// `struct key` of 2.6: 64 cipher bytes, then 64 HMAC bytes.
const KEY_FILE_LEN: usize = 128;

/// The HMAC key tokens are made and checked with.
pub struct TokenKey(hmac::Key);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("no '-----BEGIN {PEM_NAME}-----' block")]
    NoBlock,
    #[error("the key is not valid base64")]
    Base64,
    #[error("not enough data in auth-token secret ({0} bytes, 128 needed)")]
    TooShort(usize),
}

impl TokenKey {
    /// From the PEM text of `auth-gen-token-secret`.
    pub fn from_pem(text: &str) -> Result<Self, KeyError> {
        let begin = format!("-----BEGIN {PEM_NAME}-----");
        let end = format!("-----END {PEM_NAME}-----");
        let start = text.find(&begin).ok_or(KeyError::NoBlock)? + begin.len();
        let stop = text[start..].find(&end).ok_or(KeyError::NoBlock)? + start;
        let b64: String = text[start..stop]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        let bytes = STANDARD.decode(b64).map_err(|_| KeyError::Base64)?;
        if bytes.len() < KEY_FILE_LEN {
            return Err(KeyError::TooShort(bytes.len()));
        }
        Ok(TokenKey::from_hmac_bytes(&bytes[64..64 + MAC_LEN]))
    }

    /// A random key (2.6 without `auth-gen-token-secret`): tokens die
    /// with the process.
    pub fn random() -> Self {
        let mut k = [0u8; MAC_LEN];
        // The system RNG does not fail on Linux; a zero key would still
        // only make tokens forgeable, so stop instead.
        rand::fill(&mut k).expect("system random number generator");
        TokenKey::from_hmac_bytes(&k)
    }

    fn from_hmac_bytes(k: &[u8]) -> Self {
        TokenKey(hmac::Key::new(hmac::HMAC_SHA256, k))
    }

    fn mac(&self, username: &str, data: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(username.as_bytes());
        ctx.update(data);
        ctx.sign()
    }
}

/// A session: its id and when it first logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenSession {
    pub id: [u8; SESSION_ID_LEN],
    pub initial: u64,
}

impl TokenSession {
    pub fn new(now: u64) -> Self {
        let mut id = [0u8; SESSION_ID_LEN];
        rand::fill(&mut id).expect("system random number generator");
        TokenSession { id, initial: now }
    }

    /// The token for `username` at `now`.
    pub fn token(&self, key: &TokenKey, username: &str, now: u64) -> String {
        let mut data = Vec::with_capacity(DATA_LEN);
        data.extend_from_slice(&self.id);
        data.extend_from_slice(&self.initial.to_be_bytes());
        data.extend_from_slice(&now.to_be_bytes());
        let tag = key.mac(username, &data);
        data.extend_from_slice(tag.as_ref());
        format!("{PREFIX}{}", STANDARD.encode(&data))
    }

    /// The `session_id` variable 2.6 gives scripts: the id's base64.
    pub fn env_id(&self) -> String {
        STANDARD.encode(self.id)
    }
}

/// A token whose HMAC checked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    pub session: TokenSession,
    /// Made for the empty user name (2.6 then forgets the name sent).
    pub empty_user: bool,
    /// Outside its renewal window or past its lifetime.
    pub expired: bool,
}

/// The limits a token is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub renewal_secs: u64,
    pub lifetime_secs: Option<u64>,
}

/// Whether a password is a token (2.6 then checks it as one).
pub fn is_token(password: &str) -> bool {
    password.starts_with(PREFIX)
}

/// Check `password` as a token of `username` at `now`; `None` when it is
/// not one of ours (wrong size, bad HMAC).
pub fn check(
    key: &TokenKey,
    username: &str,
    password: &str,
    now: u64,
    limits: Limits,
) -> Option<Checked> {
    let b64 = password.strip_prefix(PREFIX)?;
    // Bounded: a token is 80 base64 characters.
    if b64.len() > 128 {
        return None;
    }
    let data = STANDARD.decode(b64).ok()?;
    if data.len() != DATA_LEN {
        return None;
    }
    let (signed, tag) = data.split_at(DATA_LEN - MAC_LEN);
    let matches = |user: &str| {
        constant_time::verify_slices_are_equal(key.mac(user, signed).as_ref(), tag).is_ok()
    };
    let empty_user = if matches(username) {
        false
    } else if matches("") {
        true
    } else {
        return None;
    };
    let mut id = [0u8; SESSION_ID_LEN];
    id.copy_from_slice(&signed[..SESSION_ID_LEN]);
    let be = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or([0; 8]));
    let initial = be(&signed[SESSION_ID_LEN..SESSION_ID_LEN + 8]);
    let stamp = be(&signed[SESSION_ID_LEN + 8..]);
    let in_window = now >= stamp && now < stamp.saturating_add(2 * limits.renewal_secs);
    let past_lifetime = limits
        .lifetime_secs
        .is_some_and(|l| now > initial.saturating_add(l));
    Some(Checked {
        session: TokenSession { id, initial },
        empty_user,
        expired: !in_window || stamp < initial || past_lifetime,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        renewal_secs: 3600,
        lifetime_secs: None,
    };

    #[test]
    fn stock_key_file_loads() {
        // `openvpn --genkey auth-token` output of 2.6.3.
        let pem = "-----BEGIN OpenVPN auth-token server key-----
czGIj0SlMx6MbrpdP6pd0VwhP6zO6MnC8urox0TRTk8tDLhvaO1Uy++YCajuKlYR
xLY4hziefkd/Cs5tNcknlSnjbayhA8AUPU3z32r2vndERAfNSQ9bAqiUlZTeMLsR
ZHqoW1if9BOnq3bJw3bTlxGzyAn6hJwfdl+Wf0Lc79o=
-----END OpenVPN auth-token server key-----
";
        let key = TokenKey::from_pem(pem).unwrap();
        let s = TokenSession::new(1000);
        let t = s.token(&key, "alice", 1000);
        assert!(t.starts_with(PREFIX) && t.len() == PREFIX.len() + 80, "{t}");
        assert_eq!(TokenKey::from_pem("junk").err(), Some(KeyError::NoBlock));
    }

    #[test]
    fn token_round_trip_and_tampering() {
        let key = TokenKey::random();
        let s = TokenSession::new(1000);
        let t = s.token(&key, "alice", 1500);
        let c = check(&key, "alice", &t, 1600, LIMITS).unwrap();
        assert_eq!(c.session, s);
        assert!(!c.expired && !c.empty_user);
        assert!(check(&key, "bob", &t, 1600, LIMITS).is_none());
        assert!(check(&TokenKey::random(), "alice", &t, 1600, LIMITS).is_none());
        let mut bad = t.clone().into_bytes();
        let last = bad.len() - 3;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert!(
            check(
                &key,
                "alice",
                &String::from_utf8(bad).unwrap(),
                1600,
                LIMITS
            )
            .is_none()
        );
        assert!(check(&key, "alice", "SESS_ID_AT_short", 1600, LIMITS).is_none());
        assert!(check(&key, "alice", "password", 1600, LIMITS).is_none());
    }

    #[test]
    fn expiry_as_2_6() {
        let key = TokenKey::random();
        let s = TokenSession::new(1000);
        let t = s.token(&key, "u", 1000);
        // Valid for two renewal intervals after it was made.
        assert!(!check(&key, "u", &t, 1000 + 7199, LIMITS).unwrap().expired);
        assert!(check(&key, "u", &t, 1000 + 7200, LIMITS).unwrap().expired);
        // Made in the future.
        assert!(check(&key, "u", &t, 999, LIMITS).unwrap().expired);
        let lifetime = Limits {
            lifetime_secs: Some(60),
            ..LIMITS
        };
        assert!(check(&key, "u", &t, 1061, lifetime).unwrap().expired);
        let empty = s.token(&key, "", 1000);
        assert!(check(&key, "u", &empty, 1001, LIMITS).unwrap().empty_user);
    }
}
