//! The PUSH_REPLY a server sends one client.

use std::net::Ipv4Addr;

use ferrovpn_proto::data::Cipher;
use ferrovpn_proto::key_method::PeerInfo;

use super::ServerSettings;

/// The PUSH_REPLY for one client, in the order a 2.6 server uses.
pub fn build_push_reply(
    s: &ServerSettings,
    ip: Ipv4Addr,
    peer_id: u32,
    cipher: Cipher,
    info: &PeerInfo,
) -> String {
    let mut opts: Vec<String> = Vec::new();
    opts.push(format!("route-gateway {}", s.server_ip()));
    opts.push("topology subnet".into());
    if let Some((ping, restart)) = s.push_keepalive {
        opts.push(format!("ping {ping}"));
        opts.push(format!("ping-restart {restart}"));
    }
    opts.extend(s.pushes.iter().cloned());
    opts.push(format!("ifconfig {ip} {}", s.netmask));
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
