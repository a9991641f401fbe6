//! Fuzz what a client makes of a server's PUSH_REPLY: the plan (routes,
//! redirect flags, DNS, auth-token), the routes it wants, the resolv.conf it
//! would write (whose kept original must come back exactly), the
//! systemd-resolved calls and `dns_*` script variables of the pushed DNS,
//! and the auth-token-user decoding.
#![no_main]

use std::net::Ipv4Addr;

use ferrovpn_control::client::credentials::{CredentialSource, Credentials};
use ferrovpn_control::client::dns::{original_of, render_resolv_conf};
use ferrovpn_control::client::plan::PushPlan;
use ferrovpn_control::client::resolved::call_plan;
use ferrovpn_control::client::routes::{NetGateway, route_changes, wanted_routes};
use ferrovpn_proto::push::PushReply;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(reply) = PushReply::parse(text) else {
        return;
    };
    let plan = PushPlan::from_reply(&reply, 1500);
    let lan = NetGateway {
        via: Some(Ipv4Addr::new(192, 168, 1, 1)),
        dev: "eth0".into(),
    };
    let wanted = wanted_routes(&plan, "tun0", Ipv4Addr::new(192, 0, 2, 1), Some(&lan));
    let changes = route_changes(&wanted, &wanted);
    assert!(changes.add.is_empty() && changes.delete.is_empty());
    // The fuzz input doubles as the original resolv.conf.
    let written = render_resolv_conf(&plan.dns, text);
    assert_eq!(original_of(&written).as_deref(), Some(text));
    let _ = call_plan(&plan.dns);
    // Pushed priorities are 0..127; a server holds at most 8 addresses.
    assert!(plan.dns.dns.servers.len() <= 128);
    assert!(plan.dns.dns.servers.iter().all(|s| s.addresses.len() <= 8));
    let _ = plan.dns.dns.script_env();
    if let Some(token) = plan.auth_token {
        let mut c = Credentials::new(
            CredentialSource::Inline,
            "u".into(),
            "p".into(),
            None,
            false,
        );
        c.token_pushed(token, plan.auth_token_user.as_deref());
        let _ = c.for_key_exchange();
    }
});
