//! What a new session from the address of a connected client may not
//! change. 2.6 runs such a session inside that client's instance (its
//! untrusted slot, `TM_INITIAL`), and the instance has locked the user
//! name at its first accepted login (`tls_lock_username`) and the common
//! name and certificate once it connected (`tls_lock_common_name`,
//! `tls_lock_cert_hash_set`, from `multi_connection_established`). A new
//! session with another user name, common name or certificate is refused
//! then ("... attempted to change ... -- tunnel disabled"), its login
//! script having run, as in `verify_user_pass` and
//! `verify_final_auth_checks`.

/// 2.6's refusal of a user name that changed within one client instance,
/// by a replacing session or a renegotiation (`verify_user_pass`).
pub(super) fn username_changed(locked: &str, new: &str) -> String {
    format!(
        "TLS Auth Error: username attempted to change from '{locked}' to '{new}' -- tunnel disabled"
    )
}

/// The identity of the connected client a new session replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Locked {
    /// Its user name (remapped as 2.6 does), if it logged in with one.
    pub username: Option<String>,
    /// Its common name as the scripts saw it (after
    /// `username-as-common-name`).
    pub common_name: Option<String>,
    /// Its certificate (DER), if it showed one.
    pub certificate: Option<Vec<u8>>,
}

impl Locked {
    /// The new session's user name against the locked one: 2.6's message
    /// when it changed. Checked once the login script accepted (or
    /// deferred) it; a session without a user name is not checked here.
    pub fn check_username(&self, username: Option<&str>) -> Result<(), String> {
        match (&self.username, username) {
            (Some(locked), Some(new)) if locked != new => Err(username_changed(locked, new)),
            _ => Ok(()),
        }
    }

    /// The new session's common name and certificate against the locked
    /// ones, after its login was accepted: 2.6's message when either
    /// changed.
    pub fn check_certificate(
        &self,
        common_name: Option<&str>,
        certificate: Option<&[u8]>,
    ) -> Result<(), String> {
        if let (Some(locked), Some(new)) = (&self.common_name, common_name)
            && locked != new
        {
            return Err(format!(
                "TLS Auth Error: TLS object CN attempted to change from '{locked}' to '{new}' -- tunnel disabled"
            ));
        }
        if let (Some(locked), Some(new)) = (&self.certificate, certificate)
            && locked.as_slice() != new
        {
            return Err(format!(
                "TLS Auth Error: TLS object CN={} client-provided SSL certs unexpectedly changed during mid-session reauth",
                common_name.unwrap_or("")
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Locked {
        Locked {
            username: Some("alice".into()),
            common_name: Some("client1".into()),
            certificate: Some(vec![1, 2, 3]),
        }
    }

    #[test]
    fn the_same_client_again_passes() {
        let l = alice();
        assert_eq!(l.check_username(Some("alice")), Ok(()));
        assert_eq!(
            l.check_certificate(Some("client1"), Some(&[1, 2, 3])),
            Ok(())
        );
    }

    #[test]
    fn another_user_name_is_refused_with_2_6_message() {
        assert_eq!(
            alice().check_username(Some("carol")),
            Err(
                "TLS Auth Error: username attempted to change from 'alice' to 'carol' -- tunnel disabled"
                    .into()
            )
        );
    }

    #[test]
    fn another_common_name_or_certificate_is_refused() {
        let l = alice();
        assert_eq!(
            l.check_certificate(Some("client2"), Some(&[9])),
            Err(
                "TLS Auth Error: TLS object CN attempted to change from 'client1' to 'client2' -- tunnel disabled"
                    .into()
            )
        );
        assert_eq!(
            l.check_certificate(Some("client1"), Some(&[9])),
            Err(
                "TLS Auth Error: TLS object CN=client1 client-provided SSL certs unexpectedly changed during mid-session reauth"
                    .into()
            )
        );
    }

    #[test]
    fn nothing_locked_locks_nothing() {
        let l = Locked::default();
        assert_eq!(l.check_username(Some("x")), Ok(()));
        assert_eq!(l.check_certificate(Some("y"), Some(&[1])), Ok(()));
        // A certless new session has no certificate to compare.
        assert_eq!(alice().check_certificate(Some("client1"), None), Ok(()));
    }
}
