//! Apply DNS settings to one link through systemd-resolved's D-Bus API, as
//! the client does with pushed DNS, then revert the link: a manual check of
//! `client::resolved` against a real resolved (no test here runs one; see
//! the module's notes).
//!
//! `resolved_link DEV SERVER[,SERVER...] [DOMAIN...]`, with
//! `DBUS_SYSTEM_BUS_ADDRESS` naming the bus if it is not the usual one.
//! Prints `applied` once resolved took the calls, then waits for a line on
//! stdin (so `resolvectl status DEV` can be read meanwhile) and reverts.

use std::io::BufRead;

use ferrovpn_control::client::plan::DnsPlan;
use ferrovpn_control::client::resolved::{Resolved, call_plan};
use ferrovpn_control::netconfig::NetConfig;

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dev, servers, domains @ ..] = args.as_slice() else {
        return Err("usage: resolved_link DEV SERVER[,SERVER...] [DOMAIN...]".into());
    };
    let plan = DnsPlan {
        servers: servers
            .split(',')
            .map(|s| s.parse().map_err(|_| format!("{s}: not an address")))
            .collect::<Result<_, _>>()?,
        domain: None,
        search: domains.to_vec(),
        ..DnsPlan::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let net = NetConfig::connect().map_err(|e| format!("{e:#}"))?;
        let ifindex = net.index(dev).await.map_err(|e| format!("{e:#}"))? as i32;
        let bus = Resolved::connect()
            .await
            .ok_or("systemd-resolved does not answer on the system bus")?;
        bus.apply(ifindex, &call_plan(&plan)).await?;
        println!("applied");
        let _ = std::io::stdin().lock().lines().next();
        bus.revert(ifindex).await?;
        println!("reverted");
        Ok(())
    })
}
