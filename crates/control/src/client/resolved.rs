//! Pushed DNS through systemd-resolved's D-Bus API
//! (`org.freedesktop.resolve1.Manager` on the system bus), the calls
//! `resolvectl dns|domain|default-route|revert` make, without running a
//! program and without blocking the control runtime (zbus on tokio).
//!
//! [`call_plan`] is the pure part: which calls a pushed [`DnsPlan`] turns
//! into. [`Resolved`] sends them for one link and reverts the link on exit.
//!
//! The system bus is the one `DBUS_SYSTEM_BUS_ADDRESS` names when it is set
//! (zbus honours it, as sd-bus does), else the standard socket; the tests
//! point it at a private bus with a real systemd-resolved on it.

use std::net::IpAddr;
use std::time::Duration;

use zbus::Connection;

use super::plan::{DnsPlan, DnsTransport, Dnssec};

const RESOLVED: &str = "org.freedesktop.resolve1";
const RESOLVED_PATH: &str = "/org/freedesktop/resolve1";
const MANAGER: &str = "org.freedesktop.resolve1.Manager";
/// Longest wait for the bus or for resolved to answer one call: a hung bus
/// must not hold a reconnect up for long.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// `AF_INET` / `AF_INET6` as resolved's `a(iay)` address lists name them.
const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;

/// One `org.freedesktop.resolve1.Manager` call for the tunnel's link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkCall {
    /// `SetLinkDNS(i ifindex, a(iay) addresses)`: (address family, address bytes).
    SetDns(Vec<(i32, Vec<u8>)>),
    /// `SetLinkDomains(i ifindex, a(sb) domains)`: (domain, routing-only).
    SetDomains(Vec<(String, bool)>),
    /// `SetLinkDefaultRoute(i ifindex, b enable)`.
    SetDefaultRoute(bool),
    /// `SetLinkDNSSEC(i ifindex, s mode)`: `yes`, `allow-downgrade`, `no`.
    SetDnssec(&'static str),
    /// `SetLinkDNSOverTLS(i ifindex, s mode)`: `yes` (strict) or `no`.
    SetDnsOverTls(&'static str),
}

impl LinkCall {
    fn method(&self) -> &'static str {
        match self {
            LinkCall::SetDns(_) => "SetLinkDNS",
            LinkCall::SetDomains(_) => "SetLinkDomains",
            LinkCall::SetDefaultRoute(_) => "SetLinkDefaultRoute",
            LinkCall::SetDnssec(_) => "SetLinkDNSSEC",
            LinkCall::SetDnsOverTls(_) => "SetLinkDNSOverTLS",
        }
    }
}

/// The calls that apply `plan` to the tunnel's link: the pushed servers
/// (in pushed order), the link as the default route for names no other
/// link claims (the pushed servers answer every query, as they do when
/// they replace resolv.conf's), and the search domains (DOMAIN first, none
/// of them routing-only). Nothing for an empty part.
pub fn call_plan(plan: &DnsPlan) -> Vec<LinkCall> {
    let mut calls = Vec::new();
    if !plan.servers.is_empty() {
        let servers = plan
            .servers
            .iter()
            .map(|ip| match ip {
                IpAddr::V4(a) => (AF_INET, a.octets().to_vec()),
                IpAddr::V6(a) => (AF_INET6, a.octets().to_vec()),
            })
            .collect();
        calls.push(LinkCall::SetDns(servers));
        calls.push(LinkCall::SetDefaultRoute(true));
        if let Some(mode) = plan.dnssec {
            calls.push(LinkCall::SetDnssec(dnssec_mode(mode)));
        }
        if let Some(mode) = plan.transport.and_then(dns_over_tls_mode) {
            calls.push(LinkCall::SetDnsOverTls(mode));
        }
    }
    let domains = plan.search_domains();
    if !domains.is_empty() {
        calls.push(LinkCall::SetDomains(
            domains.into_iter().map(|d| (d, false)).collect(),
        ));
    }
    calls
}

/// resolved's DNSSEC mode for 2.6's `dnssec yes|optional|no`: `optional`
/// validates when the server supports it, which is resolved's
/// `allow-downgrade`.
pub fn dnssec_mode(mode: Dnssec) -> &'static str {
    match mode {
        Dnssec::Yes => "yes",
        Dnssec::Optional => "allow-downgrade",
        Dnssec::No => "no",
    }
}

/// resolved's DNS-over-TLS mode for 2.6's `transport`: DoT is strict
/// (`yes`: no plain-text fallback), plain is `no`; DoH has none (its
/// servers are not applied, see the plan).
pub fn dns_over_tls_mode(transport: DnsTransport) -> Option<&'static str> {
    match transport {
        DnsTransport::Tls => Some("yes"),
        DnsTransport::Plain => Some("no"),
        DnsTransport::Https => None,
    }
}

/// A system-bus connection on which systemd-resolved answers.
#[derive(Clone, Debug)]
pub struct Resolved {
    bus: Connection,
}

impl Resolved {
    /// The system bus, if it can be reached and resolved holds its name
    /// there; `None` otherwise (the caller falls back).
    pub async fn connect() -> Option<Resolved> {
        let bus = tokio::time::timeout(CALL_TIMEOUT, Connection::system())
            .await
            .ok()?
            .ok()?;
        let reply = tokio::time::timeout(
            CALL_TIMEOUT,
            bus.call_method(
                Some("org.freedesktop.DBus"),
                "/org/freedesktop/DBus",
                Some("org.freedesktop.DBus"),
                "NameHasOwner",
                &(RESOLVED,),
            ),
        )
        .await
        .ok()?
        .ok()?;
        let owned: bool = reply.body().deserialize().ok()?;
        owned.then_some(Resolved { bus })
    }

    /// Send `calls` for link `ifindex`, in order; the first failure stops.
    pub async fn apply(&self, ifindex: i32, calls: &[LinkCall]) -> Result<(), String> {
        for call in calls {
            let sent = match call {
                LinkCall::SetDns(servers) => self.call(call.method(), &(ifindex, servers)).await,
                LinkCall::SetDomains(domains) => {
                    self.call(call.method(), &(ifindex, domains)).await
                }
                LinkCall::SetDefaultRoute(on) => self.call(call.method(), &(ifindex, *on)).await,
                LinkCall::SetDnssec(mode) | LinkCall::SetDnsOverTls(mode) => {
                    self.call(call.method(), &(ifindex, *mode)).await
                }
            };
            sent.map_err(|e| format!("{} on link {ifindex}: {e}", call.method()))?;
        }
        Ok(())
    }

    /// `RevertLink(i ifindex)`: drop everything set on the link.
    pub async fn revert(&self, ifindex: i32) -> Result<(), String> {
        self.call("RevertLink", &(ifindex,))
            .await
            .map_err(|e| format!("RevertLink on link {ifindex}: {e}"))
    }

    async fn call<B>(&self, method: &str, body: &B) -> Result<(), String>
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        let sent = self
            .bus
            .call_method(Some(RESOLVED), RESOLVED_PATH, Some(MANAGER), method, body);
        match tokio::time::timeout(CALL_TIMEOUT, sent).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {CALL_TIMEOUT:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(servers: &[&str], domain: Option<&str>, search: &[&str]) -> DnsPlan {
        DnsPlan {
            servers: servers.iter().map(|s| s.parse().unwrap()).collect(),
            domain: domain.map(String::from),
            search: search.iter().map(|s| s.to_string()).collect(),
            ..DnsPlan::default()
        }
    }

    #[test]
    fn servers_in_order_with_their_family_then_the_search_domains() {
        let calls = call_plan(&plan(
            &["10.8.0.1", "fd00::53"],
            Some("corp.example"),
            &["a.example", "b.example"],
        ));
        let mut v6 = vec![0xfd, 0];
        v6.extend([0; 13]);
        v6.push(0x53);
        assert_eq!(
            calls,
            vec![
                LinkCall::SetDns(vec![(AF_INET, vec![10, 8, 0, 1]), (AF_INET6, v6)]),
                LinkCall::SetDefaultRoute(true),
                LinkCall::SetDomains(vec![
                    ("corp.example".into(), false),
                    ("a.example".into(), false),
                    ("b.example".into(), false),
                ]),
            ]
        );
        assert_eq!(
            calls.iter().map(LinkCall::method).collect::<Vec<_>>(),
            ["SetLinkDNS", "SetLinkDefaultRoute", "SetLinkDomains"]
        );
    }

    #[test]
    fn an_empty_part_makes_no_call() {
        assert!(call_plan(&plan(&[], None, &[])).is_empty());
        assert_eq!(
            call_plan(&plan(&[], None, &["x.example"])),
            vec![LinkCall::SetDomains(vec![("x.example".into(), false)])]
        );
        assert_eq!(call_plan(&plan(&["192.0.2.53"], None, &[])).len(), 2);
    }

    #[test]
    fn dnssec_and_dns_over_tls_follow_the_servers() {
        let mut p = plan(&["10.8.0.1"], None, &[]);
        p.dnssec = Some(Dnssec::Optional);
        p.transport = Some(DnsTransport::Tls);
        assert_eq!(
            call_plan(&p)[2..],
            [
                LinkCall::SetDnssec("allow-downgrade"),
                LinkCall::SetDnsOverTls("yes")
            ]
        );
        p.dnssec = Some(Dnssec::No);
        p.transport = Some(DnsTransport::Plain);
        assert_eq!(
            call_plan(&p)[2..],
            [LinkCall::SetDnssec("no"), LinkCall::SetDnsOverTls("no")]
        );
        p.transport = Some(DnsTransport::Https);
        assert_eq!(call_plan(&p)[2..], [LinkCall::SetDnssec("no")]);
        // Without servers there is nothing to validate or encrypt.
        p.servers.clear();
        assert!(call_plan(&p).is_empty());
    }
}
