//! `status FILE [N]`: the files operators' scripts and dashboards read,
//! in OpenVPN's formats. Rendering is pure; the runtimes open the file at
//! start and rewrite it in place every N seconds ([`crate::fsutil::KeptFile`]).
//!
//! Times are UTC (OpenVPN writes local time in the same layout).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Where, how often, and which `status-version` (1, 2 or 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusSettings {
    pub path: PathBuf,
    pub interval: Duration,
    pub version: u8,
}

/// One connected client, as the server's status lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRow {
    pub common_name: String,
    pub real: SocketAddr,
    /// `None` for an IPv6-only client (2.6 leaves the field empty).
    pub virtual_ip: Option<Ipv4Addr>,
    /// `server-ipv6`: the client's IPv6 address in the tunnel.
    pub virtual_ipv6: Option<std::net::Ipv6Addr>,
    /// Tunnel bytes from and to the client.
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Unix seconds.
    pub connected_since: u64,
    pub last_ref: u64,
    pub peer_id: u32,
    /// The management interface's client ID (never reused, unlike peer-ids).
    pub client_id: u64,
    pub cipher: String,
}

impl ClientRow {
    /// The addresses the routing table lists for it: IPv4, then IPv6.
    fn virtual_addresses(&self) -> Vec<String> {
        (self.virtual_ip.map(|a| a.to_string()).into_iter())
            .chain(self.virtual_ipv6.map(|a| a.to_string()))
            .collect()
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC for Unix seconds.
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The server's status text: version 1 (OpenVPN's default layout), or 2/3
/// (one record per line with HEADER lines; 3 separates with tabs).
pub fn render_server(version: u8, now: u64, title: &str, clients: &[ClientRow]) -> String {
    let mut o = String::new();
    if version < 2 {
        o += &format!("OpenVPN CLIENT LIST\nUpdated,{}\n", utc(now));
        o += "Common Name,Real Address,Bytes Received,Bytes Sent,Connected Since\n";
        for c in clients {
            o += &format!(
                "{},{},{},{},{}\n",
                c.common_name,
                c.real,
                c.bytes_received,
                c.bytes_sent,
                utc(c.connected_since)
            );
        }
        o += "ROUTING TABLE\nVirtual Address,Common Name,Real Address,Last Ref\n";
        for c in clients {
            // 2.6 lists every address the client owns, its IPv6 one too.
            for virtual_address in c.virtual_addresses() {
                o += &format!(
                    "{},{},{},{}\n",
                    virtual_address,
                    c.common_name,
                    c.real,
                    utc(c.last_ref)
                );
            }
        }
        o += "GLOBAL STATS\nMax bcast/mcast queue length,0\nEND\n";
        return o;
    }
    let sep = if version == 3 { "\t" } else { "," };
    let mut line = |fields: &[&str]| {
        o += &fields.join(sep);
        o.push('\n');
    };
    line(&["TITLE", title]);
    line(&["TIME", &utc(now), &now.to_string()]);
    line(&[
        "HEADER",
        "CLIENT_LIST",
        "Common Name",
        "Real Address",
        "Virtual Address",
        "Virtual IPv6 Address",
        "Bytes Received",
        "Bytes Sent",
        "Connected Since",
        "Connected Since (time_t)",
        "Username",
        "Client ID",
        "Peer ID",
        "Data Channel Cipher",
    ]);
    for c in clients {
        line(&[
            "CLIENT_LIST",
            &c.common_name,
            &c.real.to_string(),
            &c.virtual_ip.map(|a| a.to_string()).unwrap_or_default(),
            &c.virtual_ipv6.map(|a| a.to_string()).unwrap_or_default(),
            &c.bytes_received.to_string(),
            &c.bytes_sent.to_string(),
            &utc(c.connected_since),
            &c.connected_since.to_string(),
            "UNDEF",
            &c.client_id.to_string(),
            &c.peer_id.to_string(),
            &c.cipher,
        ]);
    }
    line(&[
        "HEADER",
        "ROUTING_TABLE",
        "Virtual Address",
        "Common Name",
        "Real Address",
        "Last Ref",
        "Last Ref (time_t)",
    ]);
    for c in clients {
        for virtual_address in c.virtual_addresses() {
            line(&[
                "ROUTING_TABLE",
                &virtual_address,
                &c.common_name,
                &c.real.to_string(),
                &utc(c.last_ref),
                &c.last_ref.to_string(),
            ]);
        }
    }
    line(&["GLOBAL_STATS", "Max bcast/mcast queue length", "0"]);
    line(&["GLOBAL_STATS", "dco_enabled", "0"]);
    line(&["END"]);
    o
}

/// One `CLIENT_LIST` record of a status report in layout 2 or 3, as a
/// management client reads it (`status 3`). Columns are found by the
/// `HEADER,CLIENT_LIST` line, so OpenVPN's own reports read the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedClient {
    pub common_name: String,
    pub real_address: String,
    pub virtual_address: String,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    /// Unix seconds.
    pub connected_since: u64,
    /// The management interface's client id (`None` in reports without one).
    pub client_id: Option<u64>,
    /// The data-channel cipher (empty in reports without one).
    pub cipher: String,
}

/// Longest report [`parse_client_list`] reads; the rest is ignored.
pub const MAX_REPORT: usize = 4 << 20;

/// The `CLIENT_LIST` records of a layout 2 (comma) or 3 (tab) report; lines
/// that do not fit the header are skipped.
pub fn parse_client_list(report: &str) -> Vec<ListedClient> {
    let report = match report.char_indices().nth(MAX_REPORT) {
        Some((end, _)) => &report[..end],
        None => report,
    };
    let sep = if report.contains('\t') { '\t' } else { ',' };
    let mut columns: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for line in report.lines() {
        let fields: Vec<&str> = line.split(sep).collect();
        match fields.first().copied() {
            Some("HEADER") if fields.get(1) == Some(&"CLIENT_LIST") => {
                columns = fields[1..].to_vec()
            }
            Some("CLIENT_LIST") => {
                let get = |name: &str| {
                    let at = columns.iter().position(|c| *c == name)?;
                    fields.get(at).copied()
                };
                let num = |name: &str| get(name).and_then(|v| v.parse::<u64>().ok());
                let (Some(cn), Some(real), Some(rx), Some(tx), Some(since)) = (
                    get("Common Name"),
                    get("Real Address"),
                    num("Bytes Received"),
                    num("Bytes Sent"),
                    num("Connected Since (time_t)"),
                ) else {
                    continue;
                };
                out.push(ListedClient {
                    common_name: cn.to_string(),
                    real_address: real.to_string(),
                    virtual_address: get("Virtual Address").unwrap_or_default().to_string(),
                    bytes_received: rx,
                    bytes_sent: tx,
                    connected_since: since,
                    client_id: num("Client ID"),
                    cipher: get("Data Channel Cipher").unwrap_or_default().to_string(),
                });
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> ClientRow {
        ClientRow {
            common_name: "client1".into(),
            real: "192.0.2.5:40000".parse().unwrap(),
            virtual_ip: Some(Ipv4Addr::new(10, 8, 0, 2)),
            virtual_ipv6: None,
            bytes_received: 1234,
            bytes_sent: 5678,
            connected_since: 1_763_836_200,
            last_ref: 1_763_836_230,
            peer_id: 0,
            client_id: 0,
            cipher: "AES-256-GCM".into(),
        }
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(1_763_836_200), "2025-11-22 18:30:00");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59");
    }

    #[test]
    fn version_1_layout() {
        let t = render_server(1, 1_763_836_260, "x", &[row()]);
        assert_eq!(
            t,
            "OpenVPN CLIENT LIST\n\
             Updated,2025-11-22 18:31:00\n\
             Common Name,Real Address,Bytes Received,Bytes Sent,Connected Since\n\
             client1,192.0.2.5:40000,1234,5678,2025-11-22 18:30:00\n\
             ROUTING TABLE\n\
             Virtual Address,Common Name,Real Address,Last Ref\n\
             10.8.0.2,client1,192.0.2.5:40000,2025-11-22 18:30:30\n\
             GLOBAL STATS\n\
             Max bcast/mcast queue length,0\n\
             END\n"
        );
    }

    #[test]
    fn version_2_and_3_layouts() {
        let t = render_server(2, 1_763_836_260, "ferrovpn 0.1.0", &[row()]);
        assert!(t.starts_with("TITLE,ferrovpn 0.1.0\nTIME,2025-11-22 18:31:00,1763836260\n"));
        assert!(t.contains(
            "\nCLIENT_LIST,client1,192.0.2.5:40000,10.8.0.2,,1234,5678,2025-11-22 18:30:00,1763836200,UNDEF,0,0,AES-256-GCM\n"
        ));
        assert!(t.contains(
            "\nROUTING_TABLE,10.8.0.2,client1,192.0.2.5:40000,2025-11-22 18:30:30,1763836230\n"
        ));
        assert!(t.ends_with("GLOBAL_STATS,dco_enabled,0\nEND\n"));
        // The columns, named as OpenVPN 2.6 names them (clients find them by name).
        assert!(t.contains(
            "\nHEADER,CLIENT_LIST,Common Name,Real Address,Virtual Address,Virtual IPv6 Address,Bytes Received,Bytes Sent,Connected Since,Connected Since (time_t),Username,Client ID,Peer ID,Data Channel Cipher\n"
        ));
        // Every HEADER names as many fields as its records carry.
        for (head, rec) in [
            ("HEADER,CLIENT_LIST,", "CLIENT_LIST,"),
            ("HEADER,ROUTING_TABLE,", "ROUTING_TABLE,"),
        ] {
            let h = t.lines().find(|l| l.starts_with(head)).unwrap();
            let r = t.lines().find(|l| l.starts_with(rec)).unwrap();
            assert_eq!(h.split(',').count() - 1, r.split(',').count());
        }
        let t3 = render_server(3, 1_763_836_260, "ferrovpn 0.1.0", &[row()]);
        assert_eq!(t3, t.replace(',', "\t"));
    }

    #[test]
    fn client_list_reads_back_what_render_writes() {
        let row = ClientRow {
            common_name: "alice".into(),
            real: "192.0.2.2:51000".parse().unwrap(),
            virtual_ip: Some(Ipv4Addr::new(10, 8, 0, 2)),
            virtual_ipv6: None,
            bytes_received: 1000,
            bytes_sent: 2000,
            connected_since: 1_700_000_000,
            last_ref: 1_700_000_100,
            peer_id: 0,
            client_id: 3,
            cipher: "AES-256-GCM".into(),
        };
        for version in [2, 3] {
            let text = render_server(version, 1_700_000_200, "t", std::slice::from_ref(&row));
            let listed = parse_client_list(&text);
            assert_eq!(
                listed,
                vec![ListedClient {
                    common_name: "alice".into(),
                    real_address: "192.0.2.2:51000".into(),
                    virtual_address: "10.8.0.2".into(),
                    bytes_received: 1000,
                    bytes_sent: 2000,
                    connected_since: 1_700_000_000,
                    client_id: Some(3),
                    cipher: "AES-256-GCM".into(),
                }],
                "{text}"
            );
        }
        assert!(parse_client_list("CLIENT_LIST\tx\n").is_empty());
        assert!(parse_client_list("HEADER,CLIENT_LIST,Common Name\nCLIENT_LIST,a\n").is_empty());
    }
}
