//! `ifconfig-pool-persist FILE [N]`: remember which tunnel address each
//! common name had, so a client keeps its address across reconnects and
//! server restarts. The file is OpenVPN's: one `CN,IPv4,IPv6` line per
//! pool address that has a common name (ferrovpn leaves the IPv6 field empty).

use std::net::Ipv4Addr;

/// Read the file's text as 2.6's `ifconfig_pool_read` does: every
/// `CN,IPv4[,...]` line in file order (the pool applies them in that order,
/// so a later line for the same address wins, and a common name may name
/// several addresses). Empty lines and lines starting with `#` or `;` are
/// skipped silently. Returns the entries and how many other lines were
/// skipped as malformed (no IPv4 address, or an empty common name).
pub fn parse(text: &str) -> (Vec<(String, Ipv4Addr)>, usize) {
    let mut out = Vec::new();
    let mut skipped = 0;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with(['#', ';']) {
            continue;
        }
        let mut f = line.split(',');
        let (Some(cn), Some(ip)) = (f.next(), f.next()) else {
            skipped += 1;
            continue;
        };
        match ip.trim().parse::<Ipv4Addr>() {
            Ok(ip) if !cn.is_empty() => out.push((cn.to_string(), ip)),
            _ => skipped += 1,
        }
    }
    (out, skipped)
}

/// The file's text for `entries` (in the pool's address order, as 2.6
/// writes it).
pub fn render<'a>(entries: impl IntoIterator<Item = (&'a str, Ipv4Addr)>) -> String {
    entries
        .into_iter()
        // A comma in a CN would break the format for every reader.
        .filter(|(cn, _)| !cn.contains([',', '\n', '\r']))
        .map(|(cn, ip)| format!("{cn},{ip},\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_openvpn_files_and_writes_them_back() {
        let text = "client1,10.8.0.4,\nclient2,10.8.0.5,fd00::5\n\n# comment\n;other\nbad line\nclient3,not-an-ip,\n,10.8.0.6,\nclient4,10.8.0.4,\n";
        let (m, skipped) = parse(text);
        let ip = |n| Ipv4Addr::new(10, 8, 0, n);
        assert_eq!(
            m,
            [
                ("client1".to_string(), ip(4)),
                ("client2".to_string(), ip(5)),
                ("client4".to_string(), ip(4)),
            ]
        );
        // "bad line", "not-an-ip" and the empty common name.
        assert_eq!(skipped, 3);
        let back = |m: &[(String, Ipv4Addr)]| render(m.iter().map(|(c, i)| (c.as_str(), *i)));
        assert_eq!(
            back(&m),
            "client1,10.8.0.4,\nclient2,10.8.0.5,\nclient4,10.8.0.4,\n"
        );
        let mut odd = m.clone();
        odd.push(("a,b".into(), ip(9)));
        assert_eq!(back(&odd), back(&m));
    }

    #[test]
    fn hostile_text_never_panics() {
        for text in [
            "",
            ",",
            ",,",
            "\u{0}",
            "a,",
            "a,,b",
            "é,1.2.3.4",
            "a,1.2.3.4.5",
        ] {
            let _ = parse(text);
        }
    }
}
