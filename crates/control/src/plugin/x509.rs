//! The OpenSSL certificate objects 2.6 hands to `PLUGIN_TLS_VERIFY`
//! plugins (`current_cert` of `openvpn_plugin_args_func_in`: an `X509*`).
//! ferrovpn's TLS is rustls, so it has none: it loads libcrypto at run
//! time (Debian's `libcrypto.so.3`, the one 2.6 is linked against, so a
//! plugin linked against it shares the same library), and only when a
//! plugin asks for `PLUGIN_TLS_VERIFY` through `openvpn_plugin_func_v3`
//! (v1/v2 functions get no certificate). Each certificate's DER becomes an
//! `X509*` with `d2i_X509` for the call and is freed with `X509_free`
//! after it. ferrovpn does not link OpenSSL at build time.
#![allow(unsafe_code)]

use std::ffi::{c_long, c_void};

/// The library 2.6 on Debian uses (package libssl3).
pub const LIBCRYPTO: &str = "libcrypto.so.3";

/// `X509 *d2i_X509(X509 **a, const unsigned char **pp, long length)`.
type D2iX509 = unsafe extern "C" fn(*mut *mut c_void, *mut *const u8, c_long) -> *mut c_void;
/// `void X509_free(X509 *a)`.
type X509Free = unsafe extern "C" fn(*mut c_void);

/// libcrypto, loaded; the two functions ferrovpn calls.
pub struct Libcrypto {
    d2i_x509: D2iX509,
    x509_free: X509Free,
    /// Dropped last: the function pointers point into it.
    _library: libloading::Library,
}

impl Libcrypto {
    /// Load `name` (see [`LIBCRYPTO`]), or say why not.
    pub fn load(name: &str) -> Result<Self, String> {
        // SAFETY: loading libcrypto runs its initialisers, which only set
        // up its own state (it is the library 2.6 itself runs on).
        let library: libloading::Library = unsafe {
            libloading::os::unix::Library::open(Some(name), libloading::os::unix::RTLD_NOW)
        }
        .map_err(|e| format!("could not load {name}: {e}"))?
        .into();
        // SAFETY: the types are these functions' documented C signatures
        // (OpenSSL 3 `x509.h`); the pointers stay valid while `library`
        // is loaded, and `Libcrypto` keeps it as long as they are used.
        let d2i_x509 = unsafe { library.get::<D2iX509>(b"d2i_X509\0") }
            .map(|s| *s)
            .map_err(|e| format!("{name} has no d2i_X509: {e}"))?;
        // SAFETY: as above.
        let x509_free = unsafe { library.get::<X509Free>(b"X509_free\0") }
            .map(|s| *s)
            .map_err(|e| format!("{name} has no X509_free: {e}"))?;
        Ok(Libcrypto {
            d2i_x509,
            x509_free,
            _library: library,
        })
    }

    /// `der` as an OpenSSL certificate object; `None` when OpenSSL cannot
    /// read it.
    pub fn certificate(&self, der: &[u8]) -> Option<X509<'_>> {
        let len = c_long::try_from(der.len()).ok()?;
        let mut cursor = der.as_ptr();
        // SAFETY: d2i_X509 reads at most `len` bytes from `cursor`, which
        // points at `der` (`len` bytes); with a NULL first argument it
        // allocates a new object (NULL on malformed input) and only moves
        // our local cursor.
        let cert = unsafe { (self.d2i_x509)(std::ptr::null_mut(), &mut cursor, len) };
        (!cert.is_null()).then_some(X509 { cert, lib: self })
    }
}

/// An `X509*` made by [`Libcrypto::certificate`], freed when dropped.
pub struct X509<'a> {
    cert: *mut c_void,
    lib: &'a Libcrypto,
}

impl X509<'_> {
    /// The object, for a plugin call: valid until this value drops.
    pub fn as_ptr(&self) -> *mut c_void {
        self.cert
    }
}

impl Drop for X509<'_> {
    fn drop(&mut self) {
        // SAFETY: `cert` came from d2i_X509 of this library and is freed
        // once, after the calls it was handed to (a plugin gets
        // `current_cert` for the duration of its call only).
        unsafe { (self.lib.x509_free)(self.cert) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_says_which() {
        let e = Libcrypto::load("libcrypto-ferrovpn-missing.so.3")
            .err()
            .unwrap();
        assert!(
            e.contains("could not load libcrypto-ferrovpn-missing.so.3"),
            "{e}"
        );
    }

    #[test]
    fn certificates_are_read_and_garbage_is_not() {
        let lib = Libcrypto::load(LIBCRYPTO).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["x".into()]).unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        assert!(lib.certificate(&der).is_some());
        assert!(lib.certificate(&der[..der.len() / 2]).is_none());
        assert!(lib.certificate(&[]).is_none());
        assert!(lib.certificate(&[0x30, 0x82, 0xff, 0xff]).is_none());
    }
}
