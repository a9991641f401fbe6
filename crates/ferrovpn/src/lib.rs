//! placeholder

pub mod pki;
pub mod testing;
