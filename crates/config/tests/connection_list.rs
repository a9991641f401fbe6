//! The client's connection list: `remote` lines, `<connection>` blocks,
//! `http-proxy`, `socks-proxy`, `local HOSTNAME`, as OpenVPN 2.6 reads them.

use ferrovpn_config::*;

const CA: &str = "<ca>\n-----BEGIN CERTIFICATE-----\nMIIBca\n-----END CERTIFICATE-----\n</ca>\n<auth-user-pass>\nu\np\n</auth-user-pass>\n";

fn client(body: &str) -> Result<Config, ConfigError> {
    parse_str(&format!("client\ndev tun\n{CA}{body}"), "t.ovpn")
}

fn tcp() -> Proto {
    Proto::Tcp {
        family: Family::Any,
        role: Some(TcpRole::Client),
    }
}

#[test]
fn remote_lines_mix_transports_and_share_the_global_options() {
    // The access-server profiles' shape.
    let c = client(
        "server-poll-timeout 4\nremote as.example 1194 udp\nremote as.example 443 tcp\nremote as.example\nconnect-retry 2 30\nport 1300\n",
    )
    .unwrap();
    let list = c.connection_list();
    assert_eq!(list.len(), 3);
    assert_eq!(list[0].proto(), Proto::Udp);
    assert!(list[1].proto().is_tcp());
    assert_eq!(
        list.iter().map(|e| e.remote_port()).collect::<Vec<_>>(),
        [1194, 443, 1300]
    );
    // Options anywhere in the file apply to every remote line (2.6 copies
    // the global options once parsing is done).
    for e in &list {
        assert_eq!(e.connect_timeout(), 4);
        assert_eq!(e.connect_retry().secs, 2);
        assert_eq!(e.connect_retry().max, Some(30));
    }
}

#[test]
fn connection_blocks_inherit_what_came_before_them() {
    let c = client(
        "proto tcp-client\nconnect-timeout 7\nremote ignored.example 1\n\
         <connection>\nremote a.example 1194 udp\nexplicit-exit-notify 2\n</connection>\n\
         <connection>\nremote b.example 443\nconnect-timeout 3\nhttp-proxy proxy.example 3128\nhttp-proxy-option AGENT ferro\n</connection>\n\
         connect-timeout 99\n",
    )
    .unwrap();
    let list = c.connection_list();
    assert_eq!(list.len(), 2, "remote lines outside blocks are not entries");
    assert_eq!(list[0].remote.host, "a.example");
    assert_eq!(list[0].proto(), Proto::Udp);
    assert_eq!(list[0].connect_timeout(), 7);
    assert_eq!(list[0].explicit_exit_notify, Some(2));
    assert_eq!(list[0].location.as_ref().map(|l| l.line), Some(15));
    assert_eq!(list[1].proto(), tcp());
    assert_eq!(list[1].connect_timeout(), 3);
    assert_eq!(list[1].explicit_exit_notify, None);
    let proxy = list[1].http_proxy.as_ref().unwrap();
    assert_eq!((proxy.host.as_str(), proxy.port), ("proxy.example", 3128));
    assert_eq!(proxy.user_agent.as_deref(), Some("ferro"));
    assert_eq!(proxy.version, "1.0");
    assert_eq!(proxy.auth, HttpProxyAuth::None);
    // 2.6's warning for a connection option after the blocks.
    assert!(
        c.warnings
            .iter()
            .any(|w| w.contains("'connect-timeout' is ignored by previous <connection> blocks")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn bad_connection_blocks_are_refused_with_their_line() {
    let e = client("<connection>\nproto udp\n</connection>\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("Each 'connection' block must contain exactly one 'remote'"),
        "{e}"
    );
    let e = client("<connection>\nremote a 1\nsndbuf 1000\n</connection>\n").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with("t.ovpn:14:")
            && msg
                .contains("option 'sndbuf' cannot be used in this context ([CONNECTION-OPTIONS])"),
        "{e}"
    );
    let e = client("<connection>\nremote a 1\ntun-mtu 1400\n</connection>\n").unwrap_err();
    assert!(e.to_string().contains("per-connection MTU"), "{e}");
    let e = client("<connection>\nremote a 1 udp\nhttp-proxy p 8080\n</connection>\n").unwrap_err();
    assert!(
        e.to_string()
            .contains("--http-proxy MUST be used in TCP Client mode"),
        "{e}"
    );
    // UDP through SOCKS (UDP ASSOCIATE) is accepted, as in 2.6.
    let c = client("remote a 1 udp\nsocks-proxy p\n").unwrap();
    assert_eq!(
        c.connection_list()[0].socks_proxy.as_ref().unwrap().port,
        1080
    );
    let e = client("remote a 1 tcp\nsocks-proxy p\nhttp-proxy p 1\n").unwrap_err();
    assert!(e.to_string().contains("together with --socks-proxy"), "{e}");
    let e = client("remote a 1 tcp\nhttp-proxy p 1 creds.txt ntlm\n").unwrap_err();
    assert!(e.to_string().contains("NTLM"), "{e}");
    let e = client("remote a 1 tcp\nhttp-proxy p 1 auto\n").unwrap_err();
    assert!(e.to_string().contains("http-proxy-user-pass"), "{e}");
    let e = client("remote a 1 tcp\nhttp-proxy p 1 stdin basic\n").unwrap_err();
    assert!(e.to_string().contains("terminal"), "{e}");
    let e = parse_str(
        "server 10.8.0.0 255.255.255.0\ndev tun\n<ca>\n-----BEGIN CERTIFICATE-----\n</ca>\n<cert>\n-----BEGIN CERTIFICATE-----\n</cert>\n<key>\n-----BEGIN PRIVATE KEY-----\n</key>\ndh none\n<connection>\nremote a\n</connection>\n",
        "s.conf",
    )
    .unwrap_err();
    assert!(
        e.to_string().contains("cannot be used with --mode server"),
        "{e}"
    );
}

#[test]
fn proxy_credentials_and_options() {
    let dir = std::env::temp_dir().join(format!("ferrovpn-conn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("proxy.txt");
    std::fs::write(&f, "pxuser\r\npx pass\r\n").unwrap();
    let c = client(&format!(
        "remote a 443 tcp\nhttp-proxy-option VERSION 1.1\nhttp-proxy p.example 8080 {} basic\nhttp-proxy-option CUSTOM-HEADER X-A b\nhttp-proxy-option EXT1 \"Host: front\"\n",
        f.display()
    ))
    .unwrap();
    let p = c.connection_list()[0].http_proxy.clone().unwrap();
    assert_eq!(p.version, "1.1");
    assert_eq!(
        p.custom_headers,
        [
            ("X-A".to_string(), Some("b".to_string())),
            ("Host: front".to_string(), None)
        ]
    );
    let HttpProxyAuth::Basic(creds) = &p.auth else {
        panic!("{:?}", p.auth)
    };
    assert_eq!(
        (creds.username.as_str(), creds.password.as_str()),
        ("pxuser", "px pass")
    );
    assert!(!format!("{c:?}").contains("px pass"));
    let c = client(&format!(
        "remote a 443 tcp\nsocks-proxy s.example 1081 {}\n",
        f.display()
    ))
    .unwrap();
    let s = c.connection_list()[0].socks_proxy.clone().unwrap();
    assert_eq!((s.host.as_str(), s.port), ("s.example", 1081));
    assert_eq!(s.credentials.unwrap().username, "pxuser");
    let c = client(
        "remote a 443 tcp\nhttp-proxy p 1 auto\n<http-proxy-user-pass>\nu2\np2\n</http-proxy-user-pass>\nsocks-proxy-retry\nhttp-proxy-retry\n",
    );
    let c = c.unwrap();
    assert!(matches!(
        c.connection_list()[0].http_proxy.as_ref().unwrap().auth,
        HttpProxyAuth::Auto { nct: false, .. }
    ));
    let c = client(
        "remote a 443 tcp\nhttp-proxy p 1 auto-nct\n<http-proxy-user-pass>\nu2\np2\n</http-proxy-user-pass>\nhttp-proxy-retry\n",
    )
    .unwrap();
    assert_eq!(c.http_proxy_user_pass.unwrap().username, "u2");
    assert!(c.warnings.iter().any(|w| w.contains("http-proxy-retry")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn local_takes_a_host_name() {
    let c = client("remote a 1\nlocal localhost\n").unwrap();
    assert_eq!(c.local, None);
    assert_eq!(c.local_name.as_deref(), Some("localhost"));
    assert_eq!(
        c.connection_list()[0].local_name.as_deref(),
        Some("localhost")
    );
    let c = client("remote a 1\nlocal 10.0.0.1\n").unwrap();
    assert_eq!(c.local, Some("10.0.0.1".parse().unwrap()));
    assert!(client("remote a 1\nlocal \"a b\"\n").is_err());
}

#[test]
fn hostile_connection_blocks_stay_bounded() {
    let mut text = String::new();
    for i in 0..300 {
        text.push_str(&format!("<connection>\nremote h{i} 1\n</connection>\n"));
    }
    let e = client(&text).unwrap_err();
    assert!(e.to_string().contains("at most 256"), "{e}");
    // A block inside a block is not a block of blocks.
    let e = client(
        "<connection>\nremote a 1\n<connection>\nremote b 1\n</connection>\n</connection>\n",
    );
    assert!(e.is_err());
}

/// 2.6's `options_postprocess_mutate` makes entries of the `remote` lines
/// only when there are no `<connection>` blocks: with blocks, top-level
/// `remote` lines before and after them are no entries (the stock binary
/// lists only the block's among its "Connection profiles"); 2.6 warns
/// only about one after a block.
#[test]
fn top_level_remotes_are_ignored_beside_connection_blocks() {
    let c = client(
        "remote before.example 1\n<connection>\nremote block.example 2\n</connection>\nremote after.example 3 tcp\n",
    )
    .unwrap();
    let list = c.connection_list();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].remote.host, "block.example");
    assert_eq!(list[0].remote_port(), 2);
    assert_eq!(list[0].proto(), Proto::Udp);
    let warned: Vec<_> = c
        .warnings
        .iter()
        .filter(|w| w.contains("'remote'"))
        .collect();
    assert_eq!(
        warned,
        ["t.ovpn:16: Option 'remote' is ignored by previous <connection> blocks"]
    );
    // Without blocks every `remote` line is an entry, in order.
    let c = client("remote a.example 1\nremote b.example 2 tcp\n").unwrap();
    let hosts: Vec<_> = c
        .connection_list()
        .into_iter()
        .map(|e| e.remote.host)
        .collect();
    assert_eq!(hosts, ["a.example", "b.example"]);
}
