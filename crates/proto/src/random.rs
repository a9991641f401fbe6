//! Cryptographically secure random bytes (aws-lc-rs's system RNG).

/// Fill `buf` with random bytes. The system RNG failing is not recoverable, so it aborts loudly.
pub fn fill(buf: &mut [u8]) {
    use aws_lc_rs::rand::SecureRandom;
    // A failing kernel RNG leaves no safe way to continue: keys would be predictable.
    aws_lc_rs::rand::SystemRandom::new()
        .fill(buf)
        .expect("system random number generator failed");
}
