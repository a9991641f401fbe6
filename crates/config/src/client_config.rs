//! Per-client configuration: a `client-config-dir` file, or the dynamic
//! config file a `client-connect` script writes. Both are OpenVPN config
//! fragments read at connect time with the same tokenizer and quoting rules
//! as the main config, and hold the directives OpenVPN 2.6 allows in that
//! context (its `CLIENT_CONNECT_OPT_MASK`).
//!
//! OpenVPN 2.6 logs an error for a line it cannot use there and ignores
//! that line; the client still connects with the others. [`ClientConfig::parse`]
//! does the same: it returns what it could use and the problems, which the
//! caller logs. Nothing here touches the file system or panics.
//!
//! What ferrovpn applies: `ifconfig-push`, `ifconfig-ipv6-push`, `iroute`,
//! `iroute-ipv6`, `push`, `push-reset`, `push-remove` and `disable`. The
//! other directives 2.6 allows in this context (per-client timers,
//! compression, ciphers, `config`) are reported as not supported here and ignored; everything else as not
//! allowed in this context, as 2.6 does.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::{ConfigError, Location, Reason};
use crate::lexer::tokenize;
use crate::parser::{MAX_ERRORS, ipv6_and_bits};
use crate::table;

/// Largest per-client config text accepted (read at connect time, on the
/// control plane).
pub const MAX_CLIENT_CONFIG_SIZE: usize = 256 * 1024;

/// `ifconfig-push LOCAL NETMASK [ALIAS]` (topology subnet: the client's
/// address and the tunnel's netmask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfconfigPush {
    /// The client's tunnel address: routed to this client.
    pub local: Ipv4Addr,
    /// Pushed as the second `ifconfig` argument.
    pub netmask: Ipv4Addr,
    /// Pushed in place of `local` when given (2.6's `push_ifconfig_local_alias`).
    pub alias: Option<Ipv4Addr>,
}

/// `iroute NETWORK [NETMASK]`: a network behind this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Iroute {
    /// As written (2.6 compares pushed routes with this form).
    pub network: Ipv4Addr,
    pub prefix_len: u8,
}

impl Iroute {
    /// The network with its host bits cleared (what is routed).
    pub fn masked(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) & prefix_mask(self.prefix_len))
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(prefix_mask(self.prefix_len))
    }
}

fn prefix_mask(len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(len.min(32)))
        .unwrap_or(0)
}

/// `iroute-ipv6 NETWORK/BITS`: an IPv6 network behind this client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrouteIpv6 {
    /// As written (2.6 compares pushed `route-ipv6`s with this form).
    pub network: Ipv6Addr,
    pub bits: u8,
}

impl IrouteIpv6 {
    /// The network with its host bits cleared (what is routed).
    pub fn masked(&self) -> Ipv6Addr {
        let mask = u128::MAX
            .checked_shl(128 - u32::from(self.bits.min(128)))
            .unwrap_or(0);
        Ipv6Addr::from(u128::from(self.network) & mask)
    }
}

/// `ifconfig-ipv6-push ADDR/BITS [REMOTE]`: the client's IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IfconfigIpv6Push {
    /// The client's tunnel IPv6 address: routed to this client.
    pub local: Ipv6Addr,
    pub bits: u8,
    /// Pushed as the server end (default: the server's own IPv6 address).
    pub remote: Option<Ipv6Addr>,
}

/// One change to the list of options pushed to this client, applied in
/// file order to the server's list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEdit {
    /// `push-reset`: drop everything inherited so far.
    Reset,
    /// `push "OPTION"`.
    Add(String),
    /// `push-remove PREFIX`: drop every option starting with PREFIX
    /// (`ifconfig`: do not push the client's address).
    Remove(String),
}

/// What a per-client config says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientConfig {
    /// The last `ifconfig-push` given.
    pub ifconfig_push: Option<IfconfigPush>,
    /// `iroute` lines, in file order.
    pub iroutes: Vec<Iroute>,
    /// The last `ifconfig-ipv6-push` given.
    pub ifconfig_ipv6_push: Option<IfconfigIpv6Push>,
    /// `iroute-ipv6` lines, in file order.
    pub iroutes_ipv6: Vec<IrouteIpv6>,
    /// `push`, `push-reset`, `push-remove`, in file order.
    pub push_edits: Vec<PushEdit>,
    /// `disable`: refuse this client.
    pub disable: bool,
}

/// Directives OpenVPN 2.6 honours in a per-client config that ferrovpn
/// does not apply per client (reported and ignored).
const NOT_APPLIED: &[(&str, &str)] = &[
    ("config", "includes are not read from a per-client config"),
    ("echo", "echo messages are not forwarded"),
    ("inactive", "per-client timers are not supported"),
    ("session-timeout", "per-client timers are not supported"),
    ("ping", "per-client timers are not supported"),
    ("ping-exit", "per-client timers are not supported"),
    ("ping-restart", "per-client timers are not supported"),
    ("ping-timer-rem", "per-client timers are not supported"),
    ("comp-lzo", "per-client compression is not supported"),
    ("comp-noadapt", "per-client compression is not supported"),
    ("compress", "per-client compression is not supported"),
    ("cipher", "per-client ciphers are not supported"),
    ("data-ciphers", "per-client ciphers are not supported"),
    (
        "data-ciphers-fallback",
        "per-client ciphers are not supported",
    ),
    ("socket-flags", "per-client socket flags are not supported"),
    ("bind-dev", "per-client socket flags are not supported"),
    ("vlan-pvid", "tap (layer 2) devices are not supported"),
    ("auth-token", "auth tokens are not set per client"),
    ("auth-token-user", "auth tokens are not set per client"),
    (
        "max-routes-per-client",
        "the route quota is not set per client",
    ),
];

impl ClientConfig {
    /// Parse a per-client config; `file_name` names it in the problems.
    /// Returns what could be used and every line that could not, in order
    /// (at most [`MAX_ERRORS`]); 2.6 logs those and goes on.
    pub fn parse(text: &str, file_name: &str) -> (ClientConfig, Vec<ConfigError>) {
        let mut cfg = ClientConfig::default();
        let mut problems = Vec::new();
        let mut record = |e: ConfigError| {
            if problems.len() < MAX_ERRORS {
                problems.push(e);
            }
        };
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text.lines().enumerate();
        while let Some((idx, line)) = lines.next() {
            let loc = Location {
                file: file_name.to_string(),
                line: idx + 1,
            };
            let trimmed = line.trim();
            if let Some(tag) = trimmed
                .strip_prefix('<')
                .and_then(|t| t.strip_suffix('>'))
                .filter(|t| !t.is_empty() && !t.starts_with('/'))
            {
                // Skip the whole block: one problem, not one per line.
                let close = format!("</{tag}>");
                lines.by_ref().find(|(_, l)| l.trim() == close);
                record(ConfigError::new(
                    &loc,
                    Reason::InlineNotAllowed(tag.to_string()),
                ));
                continue;
            }
            let tokens = match tokenize(line) {
                Ok(t) => t,
                Err(r) => {
                    record(ConfigError::new(&loc, r));
                    continue;
                }
            };
            let Some((first, args)) = tokens.split_first() else {
                continue;
            };
            let name = first.strip_prefix("--").unwrap_or(first);
            if let Err(reason) = cfg.apply(name, args) {
                record(ConfigError::new(&loc, reason));
            }
        }
        (cfg, problems)
    }

    fn apply(&mut self, name: &str, args: &[String]) -> Result<(), Reason> {
        let arg = |i: usize| args.get(i).map(String::as_str);
        match name {
            "ifconfig-push" => {
                count(name, args, 2, 3, "LOCAL NETMASK [ALIAS]")?;
                let local = ipv4(name, arg(0), "an IPv4 address")?;
                let netmask = ipv4(name, arg(1), "an IPv4 netmask")?;
                if local.is_unspecified() || netmask.is_unspecified() {
                    return Err(Reason::Invalid(
                        "cannot parse --ifconfig-push addresses (0.0.0.0)".into(),
                    ));
                }
                let alias = match arg(2) {
                    Some(a) => Some(ipv4(name, Some(a), "an IPv4 address")?),
                    None => None,
                };
                self.ifconfig_push = Some(IfconfigPush {
                    local,
                    netmask,
                    alias,
                });
            }
            "ifconfig-ipv6-push" => {
                count(name, args, 1, 2, "ADDRESS/BITS [REMOTE]")?;
                let given = arg(0).unwrap_or("");
                let (local, bits) = ipv6_and_bits(given)
                    .ok_or_else(|| bad(name, "an IPv6 address as ADDRESS/BITS", given))?;
                let remote = match arg(1) {
                    Some(r) => Some(
                        r.parse::<Ipv6Addr>()
                            .map_err(|_| bad(name, "an IPv6 address", r))?,
                    ),
                    None => None,
                };
                self.ifconfig_ipv6_push = Some(IfconfigIpv6Push {
                    local,
                    bits,
                    remote,
                });
            }
            "iroute" => {
                count(name, args, 1, 2, "NETWORK [NETMASK]")?;
                let network = ipv4(name, arg(0), "an IPv4 network")?;
                let prefix_len = match arg(1) {
                    None => 32,
                    Some(m) => {
                        let mask = ipv4(name, Some(m), "a contiguous IPv4 netmask")?;
                        let bits = u32::from(mask);
                        if bits.leading_ones() + bits.trailing_zeros() != 32 {
                            return Err(bad(name, "a contiguous IPv4 netmask", m));
                        }
                        bits.leading_ones() as u8
                    }
                };
                self.iroutes.push(Iroute {
                    network,
                    prefix_len,
                });
            }
            "iroute-ipv6" => {
                count(name, args, 1, 1, "NETWORK/BITS")?;
                let given = arg(0).unwrap_or("");
                let (network, bits) = ipv6_and_bits(given)
                    .ok_or_else(|| bad(name, "an IPv6 network as NETWORK/BITS", given))?;
                self.iroutes_ipv6.push(IrouteIpv6 { network, bits });
            }
            "push" => {
                count(name, args, 1, 1, "one quoted option string")?;
                let option = arg(0).unwrap_or("");
                if option.trim().is_empty() {
                    return Err(bad(name, "a non-empty option string", option));
                }
                if option.contains(',') {
                    // 2.6: "PUSH OPTION FAILED (illegal comma (',') in string)".
                    return Err(bad(name, "an option without commas", option));
                }
                self.push_edits.push(PushEdit::Add(option.to_string()));
            }
            "push-reset" => {
                count(name, args, 0, 0, "no arguments")?;
                self.push_edits.push(PushEdit::Reset);
            }
            "push-remove" => {
                count(name, args, 1, 1, "one option name")?;
                self.push_edits
                    .push(PushEdit::Remove(arg(0).unwrap_or("").to_string()));
            }
            "disable" => {
                count(name, args, 0, 0, "no arguments")?;
                self.disable = true;
            }
            _ => {
                if let Some((_, why)) = NOT_APPLIED.iter().find(|(n, _)| *n == name) {
                    return Err(Reason::Unsupported {
                        directive: name.to_string(),
                        reason: why,
                    });
                }
                if table::lookup(name).is_some() {
                    return Err(Reason::Invalid(format!(
                        "option '{name}' cannot be used in a per-client config (OpenVPN 2.6 ignores it there too)"
                    )));
                }
                return Err(Reason::UnknownDirective(name.to_string()));
            }
        }
        Ok(())
    }

    /// Add what a later per-client config says: 2.6 applies the
    /// `client-config-dir` file, then a client-connect script's file, to one
    /// option set, so a later `ifconfig-push` replaces an earlier one,
    /// `disable` sticks, and iroutes and push edits accumulate in order.
    pub fn extend(&mut self, later: ClientConfig) {
        if later.ifconfig_push.is_some() {
            self.ifconfig_push = later.ifconfig_push;
        }
        if later.ifconfig_ipv6_push.is_some() {
            self.ifconfig_ipv6_push = later.ifconfig_ipv6_push;
        }
        self.iroutes.extend(later.iroutes);
        self.iroutes_ipv6.extend(later.iroutes_ipv6);
        self.push_edits.extend(later.push_edits);
        self.disable |= later.disable;
    }

    /// The options pushed to this client: the server's list (`route-gateway`,
    /// `topology`, keepalive and `push` lines, as 2.6 keeps them) with this
    /// config's edits applied in order, then, as 2.6 does, without the
    /// `route`s (`route-ipv6`s) that match one of this client's `iroute`s
    /// (`iroute-ipv6`s): the client owns those networks.
    pub fn push_list(&self, server: &[String]) -> Vec<String> {
        let mut list: Vec<String> = server.to_vec();
        for edit in &self.push_edits {
            match edit {
                PushEdit::Reset => list.clear(),
                PushEdit::Add(o) => list.push(o.clone()),
                // `ifconfig` and `ifconfig-ipv6` name the address lines,
                // which are not in the list (see `ifconfig_blocked`).
                PushEdit::Remove(p) if p == "ifconfig" || p == "ifconfig-ipv6" => {}
                PushEdit::Remove(prefix) => list.retain(|o| !o.starts_with(prefix.as_str())),
            }
        }
        list.retain(|o| !self.owns_pushed_route(o));
        list
    }

    /// `push-remove ifconfig` was given: the client's `ifconfig` line is not
    /// pushed. Anywhere in the file: the line is not part of the push list,
    /// so `push-reset` does not bring it back (as in 2.6).
    pub fn ifconfig_blocked(&self) -> bool {
        self.push_edits
            .iter()
            .any(|e| matches!(e, PushEdit::Remove(p) if p == "ifconfig"))
    }

    /// `push-remove ifconfig-ipv6` was given: the client's `ifconfig-ipv6`
    /// line is not pushed (as [`ClientConfig::ifconfig_blocked`]).
    pub fn ifconfig_ipv6_blocked(&self) -> bool {
        self.push_edits
            .iter()
            .any(|e| matches!(e, PushEdit::Remove(p) if p == "ifconfig-ipv6"))
    }

    /// Whether `option` is `route NETWORK [NETMASK]` for one of the
    /// iroutes, or `route-ipv6 NETWORK/BITS` (no gateway) for one of the
    /// IPv6 ones, compared as written, as 2.6 does.
    fn owns_pushed_route(&self, option: &str) -> bool {
        if self.iroutes.is_empty() && self.iroutes_ipv6.is_empty() {
            return false;
        }
        let Ok(tokens) = tokenize(option) else {
            return false;
        };
        if let [route, prefix] = tokens.as_slice()
            && route == "route-ipv6"
        {
            let Some((net, bits)) = ipv6_and_bits(prefix) else {
                return false;
            };
            return self
                .iroutes_ipv6
                .iter()
                .any(|ir| ir.network == net && ir.bits == bits);
        }
        let (network, netmask) = match tokens.as_slice() {
            [route, net] if route == "route" => (net.as_str(), "255.255.255.255"),
            [route, net, mask] if route == "route" => (net.as_str(), mask.as_str()),
            _ => return false,
        };
        let (Ok(network), Ok(netmask)) = (network.parse::<Ipv4Addr>(), netmask.parse::<Ipv4Addr>())
        else {
            return false;
        };
        self.iroutes
            .iter()
            .any(|ir| ir.network == network && ir.netmask() == netmask)
    }
}

fn count(
    name: &str,
    args: &[String],
    min: usize,
    max: usize,
    expected: &str,
) -> Result<(), Reason> {
    if args.len() < min {
        return Err(Reason::MissingArg {
            directive: name.to_string(),
            expected: expected.to_string(),
        });
    }
    if args.len() > max {
        return Err(Reason::TooManyArgs {
            directive: name.to_string(),
            max,
            got: args.len(),
        });
    }
    Ok(())
}

fn bad(name: &str, expected: &str, got: &str) -> Reason {
    Reason::BadValue {
        directive: name.to_string(),
        expected: expected.to_string(),
        got: got.to_string(),
    }
}

fn ipv4(name: &str, s: Option<&str>, expected: &str) -> Result<Ipv4Addr, Reason> {
    let s = s.unwrap_or("");
    s.parse().map_err(|_| bad(name, expected, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (ClientConfig, Vec<String>) {
        let (cfg, problems) = ClientConfig::parse(text, "ccd/alice");
        (cfg, problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn ifconfig_ipv6_push_is_parsed() {
        let (cfg, problems) = ClientConfig::parse(
            "ifconfig-ipv6-push fd00::77/64 fd00::1\nifconfig-ipv6-push nonsense\niroute-ipv6 fd00:5::/64\n",
            "c",
        );
        assert_eq!(
            cfg.ifconfig_ipv6_push,
            Some(IfconfigIpv6Push {
                local: "fd00::77".parse().unwrap(),
                bits: 64,
                remote: Some("fd00::1".parse().unwrap()),
            })
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(
            cfg.iroutes_ipv6,
            vec![IrouteIpv6 {
                network: "fd00:5::".parse().unwrap(),
                bits: 64
            }]
        );
    }

    #[test]
    fn iroute_ipv6_parses_as_2_6_and_drops_the_matching_pushed_route() {
        let (cfg, problems) = parse(
            "iroute-ipv6 fd00:7::1/48
             iroute-ipv6 fd00:8::9
             iroute-ipv6 fd00::/129
             iroute-ipv6 10.0.0.0/8
             iroute-ipv6 fd00::/64 extra
             iroute-ipv6
",
        );
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert_eq!(cfg.iroutes_ipv6.len(), 2);
        assert_eq!(
            cfg.iroutes_ipv6[0].masked(),
            "fd00:7::".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(cfg.iroutes_ipv6[1].bits, 128);
        // Compared as written: the same network spelled with host bits
        // cleared is still pushed, as in 2.6; a gateway keeps it too.
        let server: Vec<String> = [
            "route-ipv6 fd00:7::1/48",
            "route-ipv6 fd00:7::/48",
            "route-ipv6 fd00:8::9",
            "route-ipv6 fd00:8::9/128",
            "route-ipv6 fd00:7::1/48 fd00::1",
            "route 10.0.0.0 255.0.0.0",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            cfg.push_list(&server),
            vec![
                "route-ipv6 fd00:7::/48",
                "route-ipv6 fd00:7::1/48 fd00::1",
                "route 10.0.0.0 255.0.0.0"
            ]
        );
        // A client-connect file adds to the ccd file's networks.
        let mut both = cfg.clone();
        both.extend(
            parse(
                "iroute-ipv6 fd00:9::/64
",
            )
            .0,
        );
        assert_eq!(both.iroutes_ipv6.len(), 3);
    }

    #[test]
    fn the_directives_2_6_allows() {
        let (cfg, problems) = parse(
            "# pinned\n\
             ifconfig-push 10.8.0.50 255.255.255.0\n\
             iroute 192.168.50.0 255.255.255.0\n\
             iroute 192.168.60.7\n\
             push \"route 172.16.0.0 255.240.0.0\"\n\
             push-remove dhcp-option\n\
             --push-reset\n\
             disable\n",
        );
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(
            cfg.ifconfig_push,
            Some(IfconfigPush {
                local: Ipv4Addr::new(10, 8, 0, 50),
                netmask: Ipv4Addr::new(255, 255, 255, 0),
                alias: None
            })
        );
        assert_eq!(
            cfg.iroutes,
            [
                Iroute {
                    network: Ipv4Addr::new(192, 168, 50, 0),
                    prefix_len: 24
                },
                Iroute {
                    network: Ipv4Addr::new(192, 168, 60, 7),
                    prefix_len: 32
                }
            ]
        );
        assert_eq!(
            cfg.push_edits,
            [
                PushEdit::Add("route 172.16.0.0 255.240.0.0".into()),
                PushEdit::Remove("dhcp-option".into()),
                PushEdit::Reset
            ]
        );
        assert!(cfg.disable);
    }

    #[test]
    fn bad_lines_are_reported_with_their_line_and_skipped() {
        let (cfg, problems) = parse(
            "ifconfig-push 10.8.0.50\n\
             ifconfig-push 10.8.0.50 nonsense\n\
             ifconfig-push 0.0.0.0 255.255.255.0\n\
             iroute 10.1.0.0 255.0.255.0\n\
             iroute 10.2.0.0 255.255.0.0 extra\n\
             push \"a,b\"\n\
             push \"unterminated\n\
             disable now\n\
             port 1194\n\
             frobnicate\n\
             compress lz4\n\
             <ca>\n-----BEGIN CERTIFICATE-----\n</ca>\n\
             iroute 10.3.0.0 255.255.0.0\n",
        );
        assert_eq!(problems.len(), 12, "{problems:#?}");
        assert!(problems[0].starts_with("ccd/alice:1: 'ifconfig-push' expects"));
        assert!(problems[1].contains("got \"nonsense\""));
        assert!(problems[2].contains("0.0.0.0"));
        assert!(problems[3].starts_with("ccd/alice:4:") && problems[3].contains("contiguous"));
        assert!(problems[4].contains("at most 2"));
        assert!(problems[5].contains("without commas"));
        assert!(problems[6].contains("unterminated double quote"));
        assert!(problems[7].starts_with("ccd/alice:8:"));
        assert!(problems[8].contains("option 'port' cannot be used in a per-client config"));
        assert_eq!(
            problems[9],
            "ccd/alice:10: unsupported directive 'frobnicate'"
        );
        assert!(problems[10].contains("per-client compression"));
        assert!(problems[11].starts_with("ccd/alice:12: 'ca' cannot be given"));
        // The good line after the bad ones still counts.
        assert_eq!(cfg.ifconfig_push, None);
        assert!(!cfg.disable);
        assert_eq!(
            cfg.iroutes,
            [Iroute {
                network: Ipv4Addr::new(10, 3, 0, 0),
                prefix_len: 16
            }]
        );
    }

    #[test]
    fn inline_block_is_one_problem() {
        let (cfg, problems) = parse("<ca>\nx\ny\n</ca>\ndisable\n");
        assert_eq!(
            problems,
            ["ccd/alice:1: 'ca' cannot be given as an inline block"]
        );
        assert!(cfg.disable);
    }

    #[test]
    fn push_edits_apply_in_order_as_2_6() {
        let server: Vec<String> = [
            "route-gateway 10.8.0.1",
            "topology subnet",
            "ping 10",
            "route 192.168.50.0 255.255.255.0",
            "dhcp-option DNS 10.8.0.1",
        ]
        .map(String::from)
        .to_vec();
        let (cfg, _) = parse("push-remove route\npush \"route 10.9.0.0 255.255.0.0\"\n");
        assert_eq!(
            cfg.push_list(&server),
            [
                "topology subnet",
                "ping 10",
                "dhcp-option DNS 10.8.0.1",
                "route 10.9.0.0 255.255.0.0"
            ]
        );
        let (cfg, _) = parse("push \"x 1\"\npush-reset\npush \"dhcp-option DNS 1.1.1.1\"\n");
        assert_eq!(cfg.push_list(&server), ["dhcp-option DNS 1.1.1.1"]);
        assert!(!cfg.ifconfig_blocked());
        let (cfg, _) = parse("push-remove ifconfig\npush-reset\n");
        assert!(cfg.ifconfig_blocked());
        let (cfg, _) = parse("push \"ifconfig-ipv6 fd00::2/64 fd00::1\"\npush-remove ifconfig\n");
        assert_eq!(cfg.push_list(&[]), ["ifconfig-ipv6 fd00::2/64 fd00::1"]);
        // A route to the client's own iroute network is not pushed to it.
        let (cfg, _) = parse("iroute 192.168.50.0 255.255.255.0\n");
        assert_eq!(cfg.push_list(&server).len(), 4);
        assert!(
            !cfg.push_list(&server)
                .iter()
                .any(|o| o.starts_with("route 192"))
        );
        assert_eq!(ClientConfig::default().push_list(&server), server);
    }

    #[test]
    fn a_later_config_extends_an_earlier_one() {
        let (mut ccd, _) = parse(
            "ifconfig-push 10.8.0.50 255.255.255.0\niroute 10.1.0.0 255.255.0.0\npush-reset\n",
        );
        let (script, _) = parse(
            "ifconfig-push 10.8.0.60 255.255.255.0\niroute 10.2.0.0 255.255.0.0\npush \"x\"\n",
        );
        ccd.extend(script);
        assert_eq!(
            ccd.ifconfig_push.map(|p| p.local),
            Some(Ipv4Addr::new(10, 8, 0, 60))
        );
        assert_eq!(ccd.iroutes.len(), 2);
        assert_eq!(ccd.push_list(&["y".to_string()]), ["x"]);
        let (disabled, _) = parse("disable\n");
        ccd.extend(disabled);
        ccd.extend(ClientConfig::default());
        assert!(ccd.disable);
        assert_eq!(
            ccd.ifconfig_push.map(|p| p.local),
            Some(Ipv4Addr::new(10, 8, 0, 60))
        );
    }

    #[test]
    fn iroute_masks_host_bits_for_routing() {
        let ir = Iroute {
            network: Ipv4Addr::new(10, 1, 2, 3),
            prefix_len: 24,
        };
        assert_eq!(ir.masked(), Ipv4Addr::new(10, 1, 2, 0));
        assert_eq!(ir.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        let all = Iroute {
            network: Ipv4Addr::new(10, 1, 2, 3),
            prefix_len: 0,
        };
        assert_eq!(all.masked(), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn problems_are_bounded() {
        let text = "bogus\n".repeat(10 * MAX_ERRORS);
        let (_, problems) = ClientConfig::parse(&text, "x");
        assert_eq!(problems.len(), MAX_ERRORS);
    }
}
