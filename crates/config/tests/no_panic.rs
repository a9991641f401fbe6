use ferrovpn_config::{ClientConfig, parse_str_no_fs, tokenize};
use proptest::prelude::*;

const WORDS: &[&str] = &[
    "server",
    "client",
    "port",
    "dev",
    "tun",
    "proto",
    "udp",
    "route",
    "push",
    "remote",
    "keepalive",
    "<ca>",
    "</ca>",
    "<tls-auth>",
    "</tls-auth>",
    "\"",
    "'",
    "\\",
    "#",
    ";",
    "--",
    "10.8.0.0",
    "255.255.255.0",
    "1194",
    "-1",
    "99999999999999999999",
    "setenv",
    "opt",
    "ignore-unknown-option",
    "config",
    "ca",
    "tls-auth",
    "1",
    "mode",
    "tls-server",
    "\n",
    "\r\n",
    " ",
    "\t",
    "\u{feff}",
    "ifconfig-pool",
    "mssfix",
    "data-ciphers",
    "AES-256-GCM",
    "dh",
    "none",
    "-----BEGIN CERTIFICATE-----",
    "ifconfig-ipv6",
    "ifconfig-ipv6-pool",
    "server-ipv6",
    "iroute-ipv6",
    "route-ipv6",
    "fd00::1/64",
    "fd00::/124",
    "fd00::2",
    "::/0",
    "fd00::/129",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = parse_str_no_fs(&text, "fuzz");
        let _ = tokenize(&text);
    }

    #[test]
    fn directive_soup_never_panics(words in proptest::collection::vec(proptest::sample::select(WORDS), 0..60)) {
        let text = words.join(" ");
        let _ = parse_str_no_fs(&text, "fuzz");
        let text = words.join("\n");
        let _ = parse_str_no_fs(&text, "fuzz");
    }

    /// Per-client configs (ccd files) with IPv6 iroutes: parsing and
    /// dropping the routes a client owns never panic.
    #[test]
    fn client_config_soup_never_panics(words in proptest::collection::vec(proptest::sample::select(WORDS), 0..60)) {
        let server = ["route-ipv6 fd00::/124".to_string(), "route 10.8.0.0 255.255.255.0".to_string()];
        for sep in [" ", "\n"] {
            let (cfg, _) = ClientConfig::parse(&words.join(sep), "ccd/fuzz");
            let _ = cfg.push_list(&server);
            for ir in &cfg.iroutes_ipv6 {
                let _ = ir.masked();
            }
        }
    }
}

#[test]
fn deep_setenv_nesting_is_an_error_not_a_stack_overflow() {
    let text = "setenv opt ".repeat(200_000) + "port 1\n";
    assert!(parse_str_no_fs(&text, "x").is_err());
}

#[test]
fn huge_line_is_fine() {
    let text = format!("push \"{}\"\n", "a".repeat(1 << 20));
    assert!(parse_str_no_fs(&text, "x").is_err()); // no mode, but no panic
}
