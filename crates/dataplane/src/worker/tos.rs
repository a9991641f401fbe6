//! `passtos`: the TOS byte an outgoing datagram takes from the packet it
//! carries, as 2.6's `link_socket_extract_tos` takes it.

/// The TOS byte (DSCP and ECN) of an IPv4 packet; 0 for anything else.
/// 2.6 copies IPv4 TOS only (its help: "applies to IPv4 only").
pub(super) fn outer_tos(pkt: &[u8]) -> u8 {
    match pkt {
        [b0, tos, ..] if b0 >> 4 == 4 => *tos,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_tos_only() {
        // IPv4, DSCP EF (46) with ECT(0).
        assert_eq!(outer_tos(&[0x45, 0xba, 0, 20]), 0xba);
        assert_eq!(outer_tos(&[0x45, 0x00, 0, 20]), 0);
        // IPv6 with traffic class 0xb8: 2.6 leaves it alone.
        assert_eq!(outer_tos(&[0x6b, 0x80, 0, 0]), 0);
        // Runts and garbage.
        assert_eq!(outer_tos(&[]), 0);
        assert_eq!(outer_tos(&[0x45]), 0);
        assert_eq!(outer_tos(&[0x15, 0xff]), 0);
    }
}
