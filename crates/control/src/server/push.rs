//! The PUSH_REPLY a server sends one client.

use std::net::{Ipv4Addr, Ipv6Addr};

use ferrovpn_config::ClientConfig;
use ferrovpn_proto::data::Cipher;
use ferrovpn_proto::key_method::PeerInfo;

use super::ServerSettings;

/// The PUSH_REPLY for one client, in the order a 2.6 server uses: its push
/// list (the server's, edited by the client's config), then the options
/// made for this client.
pub fn build_push_reply(
    s: &ServerSettings,
    ip: Option<Ipv4Addr>,
    ip6: Option<Ipv6Addr>,
    peer_id: u32,
    cipher: Cipher,
    info: &PeerInfo,
    client: &ClientConfig,
) -> String {
    let mut opts = client.push_list(&server_push_list(s));
    // 2.6 puts the IPv6 address before the IPv4 one.
    if let (Some(v6), Some(ip6)) = (&s.ipv6, ip6)
        && !client.ifconfig_ipv6_blocked()
    {
        opts.push(super::ipv6::pushed(v6, ip6, client).line());
    }
    if !client.ifconfig_blocked() {
        match (client.ifconfig_push, ip, s.netmask()) {
            (Some(p), _, _) => opts.push(format!(
                "ifconfig {} {}",
                p.alias.unwrap_or(p.local),
                p.netmask
            )),
            (None, Some(ip), Some(mask)) => opts.push(format!("ifconfig {ip} {mask}")),
            // An IPv6-only client: 2.6 pushes no `ifconfig`.
            _ => {}
        }
    }
    if info.supports_data_v2() {
        opts.push(format!("peer-id {peer_id}"));
    }
    opts.push(format!("cipher {}", cipher.name()));
    if info.cc_exit() {
        let mut flags = String::from("protocol-flags cc-exit");
        if info.tls_ekm() {
            flags.push_str(" tls-ekm");
        }
        opts.push(flags);
    } else if info.tls_ekm() {
        opts.push("key-derivation tls-ekm".into());
    }
    if info.mtu.is_some() {
        opts.push(format!("tun-mtu {}", s.tun_mtu));
    }
    let mut text = String::from("PUSH_REPLY");
    for o in opts {
        text.push(',');
        text.push_str(&o);
    }
    text
}

/// What 2.6 keeps in the server's push list (what `push-reset` clears):
/// the lines `server` and `keepalive` add, then the `push` lines.
fn server_push_list(s: &ServerSettings) -> Vec<String> {
    let mut list = Vec::new();
    // `server-ipv6` pushes it first (2.6's helper runs before `server`'s).
    if s.push_tun_ipv6 {
        list.push("tun-ipv6".to_string());
    }
    // `server`'s lines; an IPv6-only server (no `server`) has none.
    if let Some(gateway) = s.server_ip() {
        list.extend([
            format!("route-gateway {gateway}"),
            "topology subnet".to_string(),
        ]);
    }
    if let Some((ping, restart)) = s.push_keepalive {
        list.push(format!("ping {ping}"));
        list.push(format!("ping-restart {restart}"));
    }
    list.extend(s.pushes.iter().cloned());
    list
}
