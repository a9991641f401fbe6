//! TCP MSS clamping (docs/protocol.md §10.4) with an incremental checksum update
//! (RFC 1624), applied to SYN packets in both directions.

/// Overhead of one P_DATA_V2 packet on the wire: outer IP + UDP + 24 bytes;
/// over TCP, outer IP + TCP + the 2-byte length + 24 bytes (as 2.6 counts).
pub fn outer_overhead(outer_v6: bool, tcp: bool) -> u16 {
    let transport = if tcp {
        20 + ferrovpn_proto::stream::PREFIX_LEN as u16
    } else {
        8
    };
    (if outer_v6 { 40 } else { 20 }) + transport + ferrovpn_proto::wire::DATA_V2_OVERHEAD as u16
}

/// [`mss_limits`] for the CBC data ciphers, as 2.6's `frame_calculate_mssfix`
/// counts them: the header (TCP length, opcode/peer-id, IV, `hmac_len`), the
/// payload rounded down to whole AES blocks less one byte of padding, and the
/// packet id inside the encryption.
pub fn mss_limits_cbc(mssfix: u16, outer_v6: bool, tcp: bool, hmac_len: u16) -> (u16, u16) {
    let encap: u16 = (if outer_v6 { 40 } else { 20 }) + if tcp { 20 } else { 8 };
    let header = (if tcp { 2 } else { 0 }) + 4 + 16 + hmac_len;
    let target = mssfix.saturating_sub(encap + header);
    let payload = (target / 16 * 16).saturating_sub(1).saturating_sub(4);
    (
        payload.saturating_sub(40).max(536),
        payload.saturating_sub(60).max(1220),
    )
}

/// The MSS for inner IPv4 / IPv6 TCP so that an encrypted packet stays within `mssfix` bytes.
pub fn mss_limits(mssfix: u16, outer_v6: bool, tcp: bool) -> (u16, u16) {
    let room = mssfix.saturating_sub(outer_overhead(outer_v6, tcp));
    (
        room.saturating_sub(40).max(536),
        room.saturating_sub(60).max(1220),
    )
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

    #[test]
    fn limits() {
        assert_eq!(mss_limits(1492, false, false), (1400, 1380));
        // 2.6 over TCP with AES-GCM: 1492 - (20 + 20 + 2 + 24) - 40 = 1386.
        assert_eq!(mss_limits(1492, false, true), (1386, 1366));
    }
}
