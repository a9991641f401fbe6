//! Sans-IO OpenVPN protocol core.
//!
//! Owns: packet codecs, control-channel wrapping (tls-auth, tls-crypt, tls-crypt-v2), replay
//! windows, the reliability layer, the TLS session state machine (over rustls'
//! byte-buffer API), key-method-2, key derivation, push options and
//! data-channel crypto. Everything is pure code over byte buffers and a clock
//! passed in by the caller.
//!
//! Must not touch: sockets, TUN devices, threads, the system clock, the file system.
//!
//! A bare `§N.M` in this crate's comments is a section of `docs/protocol.md`,
//! the project's protocol reference.

pub mod cbc;
pub mod compress;
pub mod data;
pub mod fragment;
pub mod kdf;
pub mod key_method;
pub mod keyfile;
pub mod push;
pub mod random;
pub mod reliable;
pub mod replay;
pub mod session;
pub mod stream;
pub mod tls_crypt_v2;
pub mod wire;
pub mod wrap;
