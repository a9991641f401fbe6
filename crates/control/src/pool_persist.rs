//! `ifconfig-pool-persist FILE [N]`: remember which tunnel address each
//! common name had, so a client keeps its address across reconnects and
//! server restarts. The file is OpenVPN's: one `CN,IPv4,IPv6` line per
//! client (ferrovpn leaves the IPv6 field empty).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

/// Read the file's text: CN → address, first claim of an address wins.
/// Returns the entries and how many lines were skipped as malformed.
pub fn parse(text: &str) -> (HashMap<String, Ipv4Addr>, usize) {
    let mut out: HashMap<String, Ipv4Addr> = HashMap::new();
    let mut taken: HashSet<Ipv4Addr> = HashSet::new();
    let mut skipped = 0;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut f = line.split(',');
        let (Some(cn), Some(ip)) = (f.next(), f.next()) else {
            skipped += 1;
            continue;
        };
        match ip.trim().parse::<Ipv4Addr>() {
            Ok(ip) if !cn.is_empty() && !out.contains_key(cn) && taken.insert(ip) => {
                out.insert(cn.to_string(), ip);
            }
            _ => skipped += 1,
        }
    }
    (out, skipped)
}

/// The file's text for `entries`, sorted by common name.
pub fn render(entries: &HashMap<String, Ipv4Addr>) -> String {
    let sorted: BTreeMap<&String, &Ipv4Addr> = entries.iter().collect();
    sorted
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
        let text = "client1,10.8.0.4,\nclient2,10.8.0.5,fd00::5\n\nbad line\nclient3,not-an-ip,\nclient4,10.8.0.4,\n";
        let (m, skipped) = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m["client1"], Ipv4Addr::new(10, 8, 0, 4));
        assert_eq!(m["client2"], Ipv4Addr::new(10, 8, 0, 5));
        // Malformed lines, and a second claim of 10.8.0.4.
        assert_eq!(skipped, 3);
        assert_eq!(render(&m), "client1,10.8.0.4,\nclient2,10.8.0.5,\n");
        let mut odd = m.clone();
        odd.insert("a,b".into(), Ipv4Addr::new(10, 8, 0, 9));
        assert_eq!(render(&odd), render(&m));
    }
}
