//! TCP MSS clamping (docs/protocol.md §10.4) with an incremental checksum update
//! (RFC 1624), applied to SYN packets in both directions.

/// What `mssfix N` counts, as 2.6.3 (options.c, mss.c).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MssCount {
    /// N is the largest datagram with its outer IP and UDP/TCP headers:
    /// no `mssfix` line or a bare one (N = 1492), `mssfix N mtu`, and N =
    /// `fragment`'s MAX when there is no `mssfix N`.
    #[default]
    Encap,
    /// `mssfix N`: N is the largest UDP payload (TCP: the stream's share),
    /// the outer headers not counted.
    Payload,
    /// `mssfix N fixed`, and a `tun-mtu` other than 1500 without `mssfix N`
    /// (N = tun-mtu): the inner packet's size, MSS = N - 40 (inner IPv4) or
    /// N - 60 (inner IPv6), nothing else counted.
    Fixed,
}

/// Everything 2.6's `frame_calculate_mssfix` counts besides the cipher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MssRule {
    pub mssfix: u16,
    pub count: MssCount,
    pub outer_v6: bool,
    pub tcp: bool,
    /// Bytes 2.6 counts in front of the inner packet: 4 with `fragment`, 1
    /// more with a 1-byte compression header (`comp-lzo`, `compress`,
    /// `compress stub|lzo|lz4`), and `tun-mtu-extra`.
    pub payload_extra: u16,
}

/// The MSS for inner IPv4 / IPv6 TCP under `rule`, for an AEAD cipher
/// (`cbc_hmac_len: None`) or AES-CBC with an HMAC of that many bytes, as
/// 2.6.3 computes it with a P_DATA_V2 peer: the data header (TCP length,
/// opcode and peer-id, then packet id and tag, or IV and HMAC) and, when
/// `rule.count` is `Encap`, the outer IP and UDP/TCP headers come off N; a
/// CBC payload is rounded down to whole blocks less a padding byte and
/// carries the packet id; then `payload_extra` and the inner IPv4 and TCP
/// headers (IPv6: 20 more).
pub fn limits(rule: &MssRule, cbc_hmac_len: Option<u16>) -> (u16, u16) {
    let n = rule.mssfix;
    if rule.count == MssCount::Fixed {
        return (n.saturating_sub(40), n.saturating_sub(60));
    }
    let stream_len = if rule.tcp { 2 } else { 0 };
    let crypto = match cbc_hmac_len {
        None => 4 + 16,
        Some(hmac) => 16 + hmac,
    };
    let encap = if rule.count == MssCount::Encap {
        (if rule.outer_v6 { 40 } else { 20 }) + if rule.tcp { 20 } else { 8 }
    } else {
        0
    };
    let target = n.saturating_sub(stream_len + 4 + crypto + encap);
    let (payload, packet_id) = match cbc_hmac_len {
        None => (target, 0),
        Some(_) => ((target / 16 * 16).saturating_sub(1), 4),
    };
    let v4 = payload.saturating_sub(rule.payload_extra + packet_id + 40);
    (v4, v4.saturating_sub(20))
}

fn csum_fold_update(csum: u16, old: u16, new: u16) -> u16 {
    // HC' = ~(~HC + ~m + m')
    let mut sum = u32::from(!csum) + u32::from(!old) + u32::from(new);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Clamp the MSS option of a TCP SYN inside IP packet `pkt` to at most
/// `max_v4` (IPv4) / `max_v6` (IPv6). Returns true if the packet changed.
/// Anything that is not a well-formed, unfragmented TCP SYN is left alone.
pub fn clamp(pkt: &mut [u8], max_v4: u16, max_v6: u16) -> bool {
    let Some(&b0) = pkt.first() else { return false };
    let (l4, max) = match b0 >> 4 {
        4 => {
            if pkt.len() < 20 || pkt[9] != 6 {
                return false;
            }
            // Not a later fragment.
            if u16::from_be_bytes([pkt[6], pkt[7]]) & 0x1fff != 0 {
                return false;
            }
            (usize::from(b0 & 0x0f) * 4, max_v4)
        }
        6 => {
            // No extension headers: next header must be TCP.
            if pkt.len() < 40 || pkt[6] != 6 {
                return false;
            }
            (40, max_v6)
        }
        _ => return false,
    };
    if l4 < 20 || pkt.len() < l4 + 20 {
        return false;
    }
    let flags = pkt[l4 + 13];
    if flags & 0x02 == 0 {
        return false;
    }
    let doff = usize::from(pkt[l4 + 12] >> 4) * 4;
    if doff < 20 || pkt.len() < l4 + doff {
        return false;
    }
    let mut i = l4 + 20;
    let end = l4 + doff;
    while i < end {
        match pkt[i] {
            0 => break,
            1 => i += 1,
            kind => {
                if i + 1 >= end {
                    break;
                }
                let len = usize::from(pkt[i + 1]);
                if len < 2 || i + len > end {
                    break;
                }
                if kind == 2 && len == 4 {
                    let at = i + 2;
                    let old = u16::from_be_bytes([pkt[at], pkt[at + 1]]);
                    if old <= max {
                        return false;
                    }
                    // Checksum words are aligned to the TCP header start (even offset).
                    let w0 = l4 + ((at - l4) & !1);
                    let words = if (at - l4) % 2 == 0 { 1 } else { 2 };
                    let mut olds = [0u16; 2];
                    for (k, o) in olds.iter_mut().enumerate().take(words) {
                        *o = u16::from_be_bytes([pkt[w0 + 2 * k], pkt[w0 + 2 * k + 1]]);
                    }
                    pkt[at..at + 2].copy_from_slice(&max.to_be_bytes());
                    let cs_at = l4 + 16;
                    let mut cs = u16::from_be_bytes([pkt[cs_at], pkt[cs_at + 1]]);
                    for (k, o) in olds.iter().enumerate().take(words) {
                        let n = u16::from_be_bytes([pkt[w0 + 2 * k], pkt[w0 + 2 * k + 1]]);
                        cs = csum_fold_update(cs, *o, n);
                    }
                    pkt[cs_at..cs_at + 2].copy_from_slice(&cs.to_be_bytes());
                    return true;
                }
                i += len;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sum(data: &[u8], mut acc: u32) -> u32 {
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from(c[0]) << 8
            };
            acc += u32::from(w);
        }
        acc
    }

    fn fold(mut s: u32) -> u16 {
        while s >> 16 != 0 {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    fn tcp_csum(pkt: &[u8]) -> u16 {
        let (l4, pseudo) = if pkt[0] >> 4 == 4 {
            let l4 = usize::from(pkt[0] & 15) * 4;
            let len = (pkt.len() - l4) as u32;
            (l4, sum(&pkt[12..20], 6 + len))
        } else {
            let len = (pkt.len() - 40) as u32;
            (40, sum(&pkt[8..40], 6 + len))
        };
        let mut t = pkt[l4..].to_vec();
        t[16] = 0;
        t[17] = 0;
        fold(sum(&t, pseudo))
    }

    fn syn(v6: bool, pad_nops: usize, mss: u16, payload: usize) -> Vec<u8> {
        let mut opts = vec![1u8; pad_nops];
        opts.extend_from_slice(&[2, 4]);
        opts.extend_from_slice(&mss.to_be_bytes());
        opts.extend_from_slice(&[4, 2]); // SACK permitted
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        let tcp_len = 20 + opts.len();
        let mut tcp = vec![0u8; tcp_len];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&443u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        tcp[12] = ((tcp_len / 4) as u8) << 4;
        tcp[13] = 0x02;
        tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
        tcp[20..].copy_from_slice(&opts);
        tcp.extend((0..payload).map(|i| i as u8));
        let mut p = if v6 {
            let mut h = vec![0u8; 40];
            h[0] = 0x60;
            h[4..6].copy_from_slice(&(tcp.len() as u16).to_be_bytes());
            h[6] = 6;
            h[7] = 64;
            h[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            h[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            h
        } else {
            let mut h = vec![0u8; 20];
            h[0] = 0x45;
            h[2..4].copy_from_slice(&((20 + tcp.len()) as u16).to_be_bytes());
            h[8] = 64;
            h[9] = 6;
            h[12..16].copy_from_slice(&[10, 8, 0, 2]);
            h[16..20].copy_from_slice(&[10, 8, 0, 1]);
            h
        };
        p.extend_from_slice(&tcp);
        let c = tcp_csum(&p);
        let l4 = if v6 { 40 } else { 20 };
        p[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        p
    }

    proptest! {
        #[test]
        fn clamp_keeps_checksum_valid(v6 in any::<bool>(), nops in 0usize..4, mss in 500u16..9000, max in 536u16..1460, payload in 0usize..5) {
            let mut p = syn(v6, nops, mss, payload);
            let changed = clamp(&mut p, max, max);
            prop_assert_eq!(changed, mss > max);
            let l4 = if v6 { 40 } else { 20 };
            let got = u16::from_be_bytes([p[l4 + 16], p[l4 + 17]]);
            prop_assert_eq!(got, tcp_csum(&p));
            let at = l4 + 20 + nops + 2;
            prop_assert_eq!(u16::from_be_bytes([p[at], p[at + 1]]), mss.min(max));
        }

        #[test]
        fn clamp_never_panics(mut data in prop::collection::vec(any::<u8>(), 0..120), v in 0u8..3) {
            if let Some(b) = data.first_mut() {
                *b = (*b & 0x0f) | if v == 0 { 0x40 } else if v == 1 { 0x60 } else { *b & 0xf0 };
            }
            let _ = clamp(&mut data, 1000, 1000);
        }
    }

    #[test]
    fn non_syn_untouched() {
        let mut p = syn(false, 0, 1460, 0);
        p[20 + 13] = 0x10; // ACK only
        let before = p.clone();
        assert!(!clamp(&mut p, 1000, 1000));
        assert_eq!(p, before);
    }

    /// Stock 2.6.3's MSS (its "mss_fix" in the MTU parms line after the
    /// data keys, verb 4, two stock peers over UDP on 127.0.0.1 / ::1, data
    /// cipher AES-256-GCM or AES-256-CBC with `auth SHA256`) for each way
    /// of writing mssfix; inner IPv6 is 20 less (mss_fixup_ipv6).
    #[test]
    fn limits_match_stock_2_6_3() {
        use MssCount::{Encap, Fixed, Payload};
        let rule = |mssfix, count, outer_v6, payload_extra| MssRule {
            mssfix,
            count,
            outer_v6,
            tcp: false,
            payload_extra,
        };
        let sha256 = Some(32);
        for (what, r, cbc, stock_v4) in [
            ("GCM v4 default", rule(1492, Encap, false, 0), None, 1400),
            (
                "GCM v4 mssfix 1400",
                rule(1400, Payload, false, 0),
                None,
                1336,
            ),
            (
                "GCM v4 mssfix 1400 mtu",
                rule(1400, Encap, false, 0),
                None,
                1308,
            ),
            (
                "GCM v4 mssfix 1400 fixed",
                rule(1400, Fixed, false, 0),
                None,
                1360,
            ),
            (
                "GCM v4 tun-mtu 1400",
                rule(1400, Fixed, false, 0),
                None,
                1360,
            ),
            (
                "GCM v4 fragment 1300",
                rule(1300, Encap, false, 4),
                None,
                1204,
            ),
            (
                "GCM v4 fragment 1300 mssfix 1200",
                rule(1200, Payload, false, 4),
                None,
                1132,
            ),
            (
                "GCM v4 comp-lzo no",
                rule(1492, Encap, false, 1),
                None,
                1399,
            ),
            (
                "GCM v4 mssfix 1000",
                rule(1000, Payload, false, 0),
                None,
                936,
            ),
            (
                "GCM v4 tun-mtu-extra 32",
                rule(1492, Encap, false, 32),
                None,
                1368,
            ),
            ("GCM v6 default", rule(1492, Encap, true, 0), None, 1380),
            (
                "GCM v6 mssfix 1400",
                rule(1400, Payload, true, 0),
                None,
                1336,
            ),
            (
                "GCM v6 mssfix 1400 mtu",
                rule(1400, Encap, true, 0),
                None,
                1288,
            ),
            (
                "GCM v6 fragment 1300",
                rule(1300, Encap, true, 4),
                None,
                1184,
            ),
            ("GCM v6 comp-lzo no", rule(1492, Encap, true, 1), None, 1379),
            ("CBC v4 default", rule(1492, Encap, false, 0), sha256, 1363),
            (
                "CBC v4 mssfix 1400",
                rule(1400, Payload, false, 0),
                sha256,
                1299,
            ),
            (
                "CBC v4 mssfix 1400 mtu",
                rule(1400, Encap, false, 0),
                sha256,
                1267,
            ),
            (
                "CBC v4 mssfix 1400 fixed",
                rule(1400, Fixed, false, 0),
                sha256,
                1360,
            ),
            (
                "CBC v4 fragment 1300",
                rule(1300, Encap, false, 4),
                sha256,
                1167,
            ),
            (
                "CBC v4 fragment 1300 mssfix 1200",
                rule(1200, Payload, false, 4),
                sha256,
                1087,
            ),
            (
                "CBC v4 comp-lzo no",
                rule(1492, Encap, false, 1),
                sha256,
                1362,
            ),
            (
                "CBC v4 mssfix 1000",
                rule(1000, Payload, false, 0),
                sha256,
                899,
            ),
            ("CBC v6 default", rule(1492, Encap, true, 0), sha256, 1347),
            (
                "CBC v6 mssfix 1400",
                rule(1400, Payload, true, 0),
                sha256,
                1299,
            ),
            (
                "CBC v6 mssfix 1400 mtu",
                rule(1400, Encap, true, 0),
                sha256,
                1251,
            ),
            (
                "CBC v6 fragment 1300",
                rule(1300, Encap, true, 4),
                sha256,
                1151,
            ),
            (
                "CBC v6 comp-lzo no",
                rule(1492, Encap, true, 1),
                sha256,
                1346,
            ),
        ] {
            assert_eq!(limits(&r, cbc), (stock_v4, stock_v4 - 20), "{what}");
        }
    }

    #[test]
    fn limits_over_tcp_and_cbc_sizes() {
        // 2.6 over TCP with AES-GCM: 1492 - (20 + 20 + 2 + 24) - 40 = 1386.
        let tcp = MssRule {
            mssfix: 1492,
            count: MssCount::Encap,
            outer_v6: false,
            tcp: true,
            payload_extra: 0,
        };
        assert_eq!(limits(&tcp, None), (1386, 1366));
        // Nothing underflows.
        let tiny = MssRule { mssfix: 10, ..tcp };
        assert_eq!(limits(&tiny, None), (0, 0));
        assert_eq!(limits(&tiny, Some(64)), (0, 0));
        let fixed = MssRule {
            count: MssCount::Fixed,
            ..tiny
        };
        assert_eq!(limits(&fixed, None), (0, 0));
    }
}
