//! `management-query-remote` and `management-query-proxy`: before each
//! attempt 2.6 asks the management client about the connection entry it
//! is about to try (init.c, `next_connection_entry`), after the hold and
//! before the password query. The answer changes this attempt only: the
//! next one asks about the entry as configured again.

use ferrovpn_config::{HttpProxy, HttpProxyAuth, SocksProxy};
use ferrovpn_dataplane::Transport;

use super::management::ClientManagement;
use super::{Proxy, Remote};
use crate::management::{EntryQuery, ProxyAnswer, RemoteAnswer};

/// What the management client decided about an entry.
#[derive(Debug, Clone)]
pub(super) enum Choice {
    /// Try it as configured.
    AsConfigured,
    /// Try this instead (`remote MOD`, `proxy HTTP|SOCKS`).
    Changed(Box<Remote>),
    /// `remote SKIP N`.
    Skip(u32),
}

/// 2.6's name of an entry's protocol in `>REMOTE:` (`proto2ascii`, short
/// form: a client's TCP is `tcp-client`).
fn proto_name(r: &Remote) -> &'static str {
    match (r.transport, r.family) {
        (Transport::Udp, None) => "udp",
        (Transport::Udp, Some(false)) => "udp4",
        (Transport::Udp, Some(true)) => "udp6",
        (_, None) => "tcp-client",
        (_, Some(false)) => "tcp4-client",
        (_, Some(true)) => "tcp6-client",
    }
}

/// `>REMOTE:HOST,PORT,PROTO`.
pub(super) fn remote_prompt(r: &Remote) -> String {
    format!(">REMOTE:{},{},{}", r.host, r.port, proto_name(r))
}

/// `>PROXY:N,UDP|TCP,HOST`, N counting the connection list from 1.
pub(super) fn proxy_prompt(position: usize, r: &Remote) -> String {
    let proto = if r.transport == Transport::Udp {
        "UDP"
    } else {
        "TCP"
    };
    format!(">PROXY:{position},{proto},{}", r.host)
}

/// The entry with the proxy a `proxy` command gave.
pub(super) fn with_proxy(r: &Remote, answer: ProxyAnswer) -> Choice {
    let proxy = match answer {
        ProxyAnswer::AsConfigured => return Choice::AsConfigured,
        ProxyAnswer::Http { host, port, .. } => {
            // 2.6 reuses the entry's HTTP proxy settings (headers, version)
            // and sets the server; a new one has 2.6's defaults. `nct` only
            // limits which credentials it may send, and none are asked.
            let mut p = match &r.proxy {
                Some(Proxy::Http(p)) => p.clone(),
                _ => HttpProxy {
                    host: String::new(),
                    port: 0,
                    auth: HttpProxyAuth::None,
                    version: "1.0".to_string(),
                    user_agent: None,
                    custom_headers: Vec::new(),
                },
            };
            p.host = host;
            p.port = port;
            Proxy::Http(p)
        }
        ProxyAnswer::Socks { host, port } => Proxy::Socks(SocksProxy {
            host,
            port,
            credentials: None,
        }),
    };
    Choice::Changed(Box::new(Remote {
        proxy: Some(proxy),
        ..r.clone()
    }))
}

/// Ask about `r`, the entry at `position` (from 1) of the connection list,
/// when the management interface is to be asked; waits for the answer.
pub(super) async fn ask(m: &ClientManagement, r: &Remote, position: usize) -> Choice {
    m.set_entry_udp(r.transport == Transport::Udp);
    if m.queries_remote() {
        let q = m.ask_entry(EntryQuery::remote(remote_prompt(r))).await;
        return match q {
            EntryQuery::Remote {
                answer: Some(RemoteAnswer::Skip(n)),
                ..
            } => Choice::Skip(n),
            EntryQuery::Remote {
                answer: Some(RemoteAnswer::Modify { host, port }),
                ..
            } => Choice::Changed(Box::new(Remote {
                host,
                port,
                ..r.clone()
            })),
            _ => Choice::AsConfigured,
        };
    }
    if m.queries_proxy() {
        let q = m
            .ask_entry(EntryQuery::proxy(proxy_prompt(position, r)))
            .await;
        if let EntryQuery::Proxy {
            answer: Some(a), ..
        } = q
        {
            return with_proxy(r, a);
        }
    }
    Choice::AsConfigured
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_as_2_6() {
        let mut r = Remote::udp("vpn.example.com", 1194);
        assert_eq!(remote_prompt(&r), ">REMOTE:vpn.example.com,1194,udp");
        assert_eq!(proxy_prompt(1, &r), ">PROXY:1,UDP,vpn.example.com");
        r.family = Some(false);
        assert_eq!(remote_prompt(&r), ">REMOTE:vpn.example.com,1194,udp4");
        r.transport = Transport::Tcp;
        r.family = None;
        assert_eq!(remote_prompt(&r), ">REMOTE:vpn.example.com,1194,tcp-client");
        r.family = Some(true);
        assert_eq!(
            remote_prompt(&r),
            ">REMOTE:vpn.example.com,1194,tcp6-client"
        );
        assert_eq!(proxy_prompt(3, &r), ">PROXY:3,TCP,vpn.example.com");
    }

    #[test]
    fn proxy_answers_change_the_entry() {
        let r = Remote::udp("vpn.example.com", 1194);
        assert!(matches!(
            with_proxy(&r, ProxyAnswer::AsConfigured),
            Choice::AsConfigured
        ));
        let Choice::Changed(socks) = with_proxy(
            &r,
            ProxyAnswer::Socks {
                host: "fe00::1".into(),
                port: 1080,
            },
        ) else {
            panic!("SOCKS changes the entry")
        };
        assert_eq!(socks.host, "vpn.example.com");
        assert!(
            matches!(&socks.proxy, Some(Proxy::Socks(p)) if p.host == "fe00::1" && p.port == 1080)
        );
        let Choice::Changed(http) = with_proxy(
            &r,
            ProxyAnswer::Http {
                host: "proxy.intranet".into(),
                port: 8080,
                nct: true,
            },
        ) else {
            panic!("HTTP changes the entry")
        };
        assert!(
            matches!(&http.proxy, Some(Proxy::Http(p)) if p.host == "proxy.intranet" && p.port == 8080 && p.version == "1.0")
        );
    }
}
