//! `ifconfig-pool-persist FILE [N]`: remember which tunnel address each
//! common name had, so a client keeps its address across reconnects and
//! server restarts. The file is OpenVPN's: one `CN,IPv4,IPv6` line per
//! pool address that has a common name, either address empty when the pool
//! has none of that family (2.6's `ifconfig_pool_list`).

use std::net::{Ipv4Addr, Ipv6Addr};

/// One line of the file: a common name and the pool address(es) it held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistEntry {
    pub common_name: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// Read the file's text as 2.6's `ifconfig_pool_read` does: every
/// `CN,IPv4[,IPv6]` line (`CN,,IPv6` from an IPv6-only pool) in file order
/// (the pool applies them in that order, so a later line for the same
/// address wins, and a common name may name several addresses). An address
/// that does not parse is left out (2.6 warns and uses the other one).
/// Empty lines and lines starting with `#` or `;` are skipped silently.
/// Returns the entries and how many other lines were skipped as malformed
/// (no address of either family, or an empty common name).
pub fn parse(text: &str) -> (Vec<PersistEntry>, usize) {
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
        let ipv4 = ip.trim().parse::<Ipv4Addr>().ok();
        let ipv6 = f.next().and_then(|a| a.trim().parse::<Ipv6Addr>().ok());
        if cn.is_empty() || (ipv4.is_none() && ipv6.is_none()) {
            skipped += 1;
            continue;
        }
        out.push(PersistEntry {
            common_name: cn.to_string(),
            ipv4,
            ipv6,
        });
    }
    (out, skipped)
}

/// The file's text for `entries` (in the pool's address order, as 2.6
/// writes it).
pub fn render<'a>(entries: impl IntoIterator<Item = &'a PersistEntry>) -> String {
    let field = |a: Option<String>| a.unwrap_or_default();
    entries
        .into_iter()
        // A comma in a CN would break the format for every reader.
        .filter(|e| !e.common_name.contains([',', '\n', '\r']))
        .map(|e| {
            format!(
                "{},{},{}\n",
                e.common_name,
                field(e.ipv4.map(|a| a.to_string())),
                field(e.ipv6.map(|a| a.to_string()))
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cn: &str, ipv4: Option<Ipv4Addr>, ipv6: Option<&str>) -> PersistEntry {
        PersistEntry {
            common_name: cn.into(),
            ipv4,
            ipv6: ipv6.map(|a| a.parse().unwrap()),
        }
    }

    #[test]
    fn reads_openvpn_files_and_writes_them_back() {
        let text = "client1,10.8.0.4,\nclient2,10.8.0.5,fd00::5\n\n# comment\n;other\nbad line\nclient3,not-an-ip,\n,10.8.0.6,\nclient4,10.8.0.4,\nv6only,,fd00::1000\nbad4,x,fd00::1001\n";
        let (m, skipped) = parse(text);
        let ip = |n| Some(Ipv4Addr::new(10, 8, 0, n));
        assert_eq!(
            m,
            [
                entry("client1", ip(4), None),
                entry("client2", ip(5), Some("fd00::5")),
                entry("client4", ip(4), None),
                entry("v6only", None, Some("fd00::1000")),
                entry("bad4", None, Some("fd00::1001")),
            ]
        );
        // "bad line", "not-an-ip" and the empty common name.
        assert_eq!(skipped, 3);
        assert_eq!(
            render(&m),
            "client1,10.8.0.4,\nclient2,10.8.0.5,fd00::5\nclient4,10.8.0.4,\nv6only,,fd00::1000\nbad4,,fd00::1001\n"
        );
        let mut odd = m.clone();
        odd.push(entry("a,b", ip(9), None));
        assert_eq!(render(&odd), render(&m));
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
