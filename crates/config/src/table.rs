//! The directive table: every directive ferrovpn knows, with its status.
//! `docs/compatibility.md` is written from it (a unit test checks it lists
//! every entry).

/// How ferrovpn treats a directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Parsed, validated and used (or stored for the caller).
    Supported,
    /// Accepted and ignored; a warning is recorded in `Config::warnings`.
    Ignored,
    /// Rejected with an error that gives the note as the reason.
    Unsupported,
}

impl Support {
    pub fn as_str(self) -> &'static str {
        match self {
            Support::Supported => "supported",
            Support::Ignored => "accepted, ignored (warning)",
            Support::Unsupported => "unsupported (error)",
        }
    }
}

/// One row of the directive table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectiveInfo {
    pub name: &'static str,
    pub support: Support,
    pub note: &'static str,
}

const fn s(name: &'static str, note: &'static str) -> DirectiveInfo {
    DirectiveInfo {
        name,
        support: Support::Supported,
        note,
    }
}
const fn i(name: &'static str, note: &'static str) -> DirectiveInfo {
    DirectiveInfo {
        name,
        support: Support::Ignored,
        note,
    }
}
const fn u(name: &'static str, note: &'static str) -> DirectiveInfo {
    DirectiveInfo {
        name,
        support: Support::Unsupported,
        note,
    }
}

/// Why `ifconfig` is refused outside point-to-point mode.
pub const IFCONFIG_OUTSIDE_P2P_REASON: &str = "'ifconfig' is supported in point-to-point mode only ('tls-server' / 'tls-client' without 'server' / 'client'); a server's addresses come from 'server', a pulling client's are pushed";

/// Why `seal-spread` is refused on a server and with `fragment`: the
/// ordered hand-off is built for a client's one peer over UDP, and the
/// fragmenting path seals on its own.
pub const SEAL_SPREAD_REASON: &str =
    "'seal-spread' is supported on a client over UDP without 'fragment' only";

/// Reason used for `dev tap*` and `dev-type tap`.
pub const TAP_REASON: &str = "tap (layer 2) devices are not supported, use tun";
/// Why a client refuses `chroot`: it reconfigures addresses, routes and DNS
/// on every reconnect, which needs the host's view of the system; OpenVPN
/// 2.6 fails there the same way, only later.
pub const CHROOT_CLIENT_REASON: &str = "'chroot' is not supported in client mode: a client configures addresses and routes again on every reconnect (and asks systemd-resolved, or rewrites /etc/resolv.conf, for pushed DNS), which needs the host's view of the system, not the chroot's (OpenVPN 2.6 fails there too, at the first reconnect)";

/// Every directive ferrovpn knows. Anything else is
/// `unsupported directive 'NAME'` unless listed in `ignore-unknown-option`.
pub const DIRECTIVES: &[DirectiveInfo] = &[
    // --- mode and transport
    s(
        "server",
        "`server NETWORK NETMASK [nopool]`; implies `mode server` + `tls-server`; network must be aligned to the mask. `nopool`: no IPv4 pool, as 2.6 (clients get IPv6 from `ifconfig-ipv6-pool`, IPv4 only from a client-config-dir `ifconfig-push`; a client with neither is refused with AUTH_FAILED, where 2.6 lets it connect without an address). Not required with `server-ipv6` or `ifconfig-ipv6` (an IPv6-only server)",
    ),
    s(
        "mode",
        "`server` only; `mode p2p` is unsupported (point-to-point TLS mode is `tls-server` / `tls-client` alone, see there)",
    ),
    s(
        "tls-server",
        "server side of the TLS handshake. Without `mode server`: point-to-point TLS mode as 2.6 (one peer, no pool, no push): sends its hard reset to `remote` first, as 2.6, and takes the peer's handshake from there, or with `float` from any address (the session then goes there); without `remote` it waits on `lport`/`port` (default 1194) for the first peer whose hard reset authenticates, from any address, as 2.6 (OpenVPN's `tls-office.conf`): a peer that comes back from a new address under a new session is taken there, and a restart (ping-restart, SIGUSR1) forgets the address and waits again (`persist-remote-ip`, `nobind`, `redirect-gateway` and TCP are refused there); data cipher as 2.6's P2P NCP (the first of our `data-ciphers` the peer lists in IV_CIPHERS, else `data-ciphers-fallback` or `cipher`), TLS-EKM keys, P_DATA_V2 and the exported peer-id, EXIT on shutdown with a 2.6 peer; `ifconfig`, `route`, `dev null`; UDP only",
    ),
    s("client", "implies `tls-client` + `pull`"),
    s(
        "tls-client",
        "client side of the TLS handshake; without `pull`: point-to-point TLS mode (see `tls-server`), initiating the handshake to `remote`; without `remote` it waits on `lport`/`port` for the TLS server's hard reset from any address and answers it, as 2.6 (a TLS server with `remote`, 2.6 or ferrovpn, sends its reset first)",
    ),
    s("pull", "client accepts pushed options"),
    s("port", "1-65535; sets local and remote port (default 1194)"),
    s(
        "lport",
        "local port; `0` binds an ephemeral port. A point-to-point end binds `lport`, else `port`, else 1194 (where an end without `remote` waits for its peer)",
    ),
    s("rport", "remote port default for `remote` lines"),
    s(
        "local",
        "`ADDR|HOST|* [PORT] [PROTO]` (OpenVPN 2.7's form; a HOST is resolved once at start: the first address of the family PROTO names, for plain `udp`/`tcp` the first IPv4 address, else the first). A server may repeat it, one listening socket each, as 2.7 allows: UDP and TCP at once share one client table and address pool (at most one UDP socket; TCP ones without limit; `tcp` means `tcp-server`). PORT and PROTO default to `lport`/`port` and `proto`. Clients are told apart by address and port, so a UDP and a TCP client behind one NAT address with the same port number count as one. A client takes one `local` line with an address only (2.7 refuses several). Difference from 2.6, which keeps only the last `local` line of a server: ferrovpn listens on each",
    ),
    s(
        "proto",
        "`udp`, `udp4`, `udp6`, `tcp`, `tcp4`, `tcp6`, `tcp[46]-client`, `tcp[46]-server`; plain `tcp` is the server end with `server`, the client end with `client`, as 2.6. TCP: 2-byte length before every packet, control and data on one connection (see the Features table). `tcp-server` in a client and `tcp-client` in a server are errors, as in 2.6; a server listens on UDP and TCP at once with several `local ADDR PORT PROTO` lines (see `local`). Without `local`, a server binds `udp`/`tcp` to 0.0.0.0 and `udp6`/`tcp6` to [::] dual stack (IPv4 clients as v4-mapped addresses), as the stock 2.6.3 binary does; a client tries every address of a `remote` its family allows, in the resolver's order, before the next `remote`",
    ),
    s(
        "dev",
        "`tun`, `tunN`, or any name with `dev-type tun`; `tap*` is an error. `dev null` (point-to-point mode only): no device at all, the data channel still runs (pings), as 2.6",
    ),
    s("dev-type", "`tun` only"),
    s(
        "topology",
        "`subnet`, `net30`, `p2p` (default `net30`). A ferrovpn client applies what the server pushes (subnet or net30); a ferrovpn server always runs and pushes `subnet`, with a warning when another topology is set",
    ),
    s(
        "ifconfig-pool",
        "`START END [NETMASK]`, must lie inside the `server` network",
    ),
    s("push", "stored list of options pushed to clients"),
    s(
        "route",
        "`NETWORK [NETMASK] [GATEWAY|vpn_gateway|default] [METRIC|default]`: a server routes it into the tun device, a client adds it like a pushed route; `net_gateway`, `remote_host` (and an address gateway on a server) are errors at start",
    ),
    s(
        "route-gateway",
        "`GATEWAY`: the gateway of `route` lines (and pushed routes) that name none; a pushed `route-gateway` overrides it, as in 2.6; `dhcp` is an error (tap only); servers refuse it",
    ),
    s(
        "route-metric",
        "`METRIC`: the metric of `route` lines and pushed routes that give none (redirect-gateway's routes get none, as in 2.6); may be pushed",
    ),
    s(
        "route-nopull",
        "client: pushed `route`, `route-metric`, `redirect-gateway`/`redirect-private`, `block-ipv6`, `client-nat`, `dhcp-option`, `dns` and `block-outside-dns` are dropped (2.6's OPT_P_ROUTE and OPT_P_DHCPDNS classes), everything else is applied",
    ),
    s(
        "route-noexec",
        "no route is added (pushed, configured or redirect-gateway's); the routes are logged",
    ),
    s(
        "ifconfig-noexec",
        "the tun device is left as it is: no address, MTU or link state is set (as 2.6 does without scripts)",
    ),
    s(
        "pull-filter",
        "client: `accept|ignore|reject \"TEXT\"`, in order, on each pushed option's text before it is parsed (prefix match, first match decides, no match accepts); `reject` drops the reply and restarts the connection, as in 2.6",
    ),
    i(
        "max-routes",
        "deprecated in 2.6, which ignores it too (the number of routes is unlimited)",
    ),
    s(
        "push-reset",
        "in the main config, forgets the `push` lines before it (as 2.6 does there)",
    ),
    s(
        "push-remove",
        "`TEXT`: removes the `push` lines before it whose option starts with TEXT; `ifconfig`/`ifconfig-ipv6` are errors in the main config",
    ),
    s(
        "client-to-client",
        "forward traffic between clients inside the server",
    ),
    s(
        "max-clients",
        "at least 1; counts authenticated clients (handshakes in progress are capped apart: a quarter of max-clients, at least 16, at most 8 per source address)",
    ),
    s(
        "connect-freq",
        "`N SEC`: at most N new sessions per SEC seconds (server; over TCP too, where 2.6.3 does not apply it)",
    ),
    s(
        "connect-freq-initial",
        "`N SEC` (default `100 10`): at most N answers to initial resets per SEC seconds (server; no effect on a client, as in OpenVPN)",
    ),
    s(
        "duplicate-cn",
        "allow several clients with the same certificate CN; the pool then hands out its lowest free address and remembers no name, as 2.6",
    ),
    s(
        "remote",
        "`HOST [PORT] [PROTO]` (PROTO only after PORT, as 2.6), may repeat: each line is one entry of the client's connection list, with its own port and transport (UDP and TCP remotes may be mixed); a host name is resolved at each attempt. A point-to-point end without `remote` waits for its peer (see `tls-server`)",
    ),
    s(
        "remote-random",
        "the connection list (remotes or `<connection>` blocks) is shuffled once at start, as 2.6",
    ),
    s(
        "remote-random-hostname",
        "a random 12-hex-digit label is put before each remote host name (not an address) at each resolution, as 2.6",
    ),
    s(
        "connect-retry",
        "`N [MAX]` seconds (default 1, 300), per connection entry: 2.6's restart pause (N, doubled per round of the whole list after the fifth, at most MAX)",
    ),
    s(
        "connect-retry-max",
        "`N`: exit after every connection entry failed N times in a row, as 2.6 (no effect inside `<connection>`, as 2.6)",
    ),
    s(
        "connection",
        "client: `<connection>` blocks, each with exactly one `remote`, hold per-entry `proto`, `port`/`rport`/`lport`, `local`, `nobind`, `connect-retry`, `connect-timeout`, `explicit-exit-notify`, `float`, `http-proxy`, `http-proxy-option`, `socks-proxy`; options given before a block are inherited, connection options after blocks are ignored with 2.6's warning; `remote` lines outside blocks (before them silently, after them with 2.6's warning) are ignored when blocks exist, as 2.6's `options_postprocess_mutate` (the stock 2.6.3 binary lists only the block's entry among its connection profiles). Per-entry `tun-mtu`, `mssfix`, `link-mtu`, `fragment`, `tls-auth`/`tls-crypt`/`tls-crypt-v2`/`key-direction` are refused (give them outside). Entries are tried in order (each with its own transport); a connection that came up is retried on the same entry",
    ),
    s(
        "http-proxy",
        "client, TCP entries only (2.6's rule): `HOST PORT [AUTHFILE|auto|auto-nct] [basic|none]`; HTTP CONNECT to the remote, `basic` sends the file's user name and password up front, `auto` answers a 407 that offers Basic with `http-proxy-user-pass` credentials (`auto-nct` never sends cleartext credentials). NTLM and digest are refused; `stdin` (terminal prompt) is refused",
    ),
    s(
        "http-proxy-option",
        "`VERSION V` (default 1.0), `AGENT TEXT`, `CUSTOM-HEADER`/`EXT1`/`EXT2 NAME [CONTENT]` (at most 10), sent as 2.6 sends them",
    ),
    s(
        "http-proxy-user-pass",
        "`FILE` or inline: user name and password for the HTTP proxy (replace the `http-proxy` AUTHFILE's)",
    ),
    i(
        "http-proxy-retry",
        "deprecated in 2.6: proxy connections are retried like any connection",
    ),
    i(
        "http-proxy-timeout",
        "deprecated in 2.6: `connect-timeout` bounds the whole connect",
    ),
    s(
        "socks-proxy",
        "client: `HOST [PORT] [AUTHFILE]` (port 1080 by default): SOCKS5 CONNECT to the remote by name over TCP, with RFC 1929 user name and password when AUTHFILE is given. Over UDP, 2.6's UDP ASSOCIATE: a TCP control connection to the proxy held open (bound to `local`/`lport` when given, as 2.6 binds it), the relay address from the reply (0.0.0.0 there means the proxy's own address), the remote resolved to its first IPv4 address, and every datagram behind the 10-byte IPv4 SOCKS header (datagrams from the relay that are fragments, not IPv4 or not from the server are dropped)",
    ),
    i(
        "socks-proxy-retry",
        "deprecated in 2.6: proxy connections are retried like any connection",
    ),
    s(
        "connect-timeout",
        "seconds (default 120): limit on each TCP connect, and the client restarts when the server has not answered within it after an attempt started (2.6's server poll); alias `server-poll-timeout`",
    ),
    s("nobind", "client does not bind a fixed local port"),
    s(
        "redirect-gateway",
        "flags: def1, local, autolocal, bypass-dhcp, bypass-dns, block-local, !ipv4, ipv6; a client applies its own like a pushed one; in a server config an error (push it instead)",
    ),
    s(
        "dhcp-option",
        "`TYPE [VALUE]`: useful in `push`; a local one is ignored with a warning (2.6 on Linux only hands it to scripts)",
    ),
    s(
        "explicit-exit-notify",
        "`[N]` (default 1); client: the exit notification to the server; server (UDP): on SIGTERM, SIGINT, SIGHUP or SIGUSR1 every UDP client is sent `RESTART` (`RESTART,[N]` with 2) and the signal acted on 2 s later, as 2.6's `multi_push_restart_schedule_exit` (a second signal meanwhile acts at once); ignored with 2.6's notice over TCP (the closed connection tells the peer)",
    ),
    // --- timers
    s(
        "keepalive",
        "`INTERVAL TIMEOUT`; timeout must be at least twice the interval",
    ),
    s("ping", "seconds"),
    s("ping-restart", "seconds"),
    s(
        "ping-exit",
        "seconds; a client exits after that much silence from the server; ignored with a warning in server mode",
    ),
    s("reneg-sec", "`N [MAX]` seconds (default 3600)"),
    s("reneg-bytes", "bytes"),
    s("reneg-pkts", "packets"),
    s("hand-window", "seconds (default 60)"),
    s("tran-window", "seconds (default 3600)"),
    s("tls-timeout", "seconds (default 2)"),
    s(
        "tls-exit",
        "client (and point-to-point): a failed TLS handshake (the server's certificate refused, `hand-window` run out) ends the process instead of a restart, as 2.6's SIGTERM with `tls-error`: `>STATE:...,EXITING,tls-error`, the `down` script's signal `tls-error`, exit status 0 (forward.c `check_tls_errors`); server: each client's failed handshake ends that client with or without it, and the server keeps running, as 2.6",
    ),
    // --- crypto material
    s("ca", "PEM file or inline `<ca>`"),
    s("cert", "PEM file or inline `<cert>`"),
    s("key", "PEM file or inline `<key>`"),
    s(
        "crl-verify",
        "PEM CRL file or inline `<crl-verify>`: a server refuses client certificates it revokes, a client a revoked server certificate; the leaf's issuer must have a CRL in it; a file is re-read when it changes (servers: at each new session and every 0.5 s, and again on every restart (SIGHUP, SIGUSR1); connected clients it revokes are dropped at once, where OpenVPN waits for their next TLS handshake); `dir` mode unsupported (error); `nextUpdate` not enforced",
    ),
    s(
        "extra-certs",
        "PEM file or inline `<extra-certs>`; sent after `cert` as its chain",
    ),
    s(
        "dh",
        "`dh none` accepted; a DH file is ignored with a warning (ECDHE / TLS 1.3 only). Unlike 2.6, a server without any `dh` line starts (2.6 refuses it: \"You must define DH file\"): ferrovpn never uses finite-field DH, so `dh none` is implied",
    ),
    s("tls-crypt", "static key file or inline `<tls-crypt>`"),
    s(
        "tls-crypt-v2",
        "server key (servers; may be combined with `tls-crypt`/`tls-auth` for clients without their own key) or client key (clients; exclusive with them), file or inline `<tls-crypt-v2>`; servers answer tls-crypt-v2 clients statelessly (2.6's HMAC cookie with WKc resend); `force-cookie`/`allow-noncookie` accepted, but tls-crypt-v2 clients older than 2.6 (no early negotiation) are always refused, as with `force-cookie`",
    ),
    s(
        "tls-auth",
        "`FILE [0|1]` or inline `<tls-auth>` with `key-direction`",
    ),
    s("key-direction", "`0` or `1` (for inline `<tls-auth>`)"),
    s(
        "auth",
        "HMAC digest for tls-auth and for the CBC data ciphers: SHA1 (default), SHA256, SHA384, SHA512; `none`, MD5 and SHA224 are refused when a CBC cipher can be negotiated",
    ),
    s(
        "data-ciphers",
        "`A:B:C`; supported: AES-128-GCM, AES-256-GCM, CHACHA20-POLY1305, AES-128-CBC, AES-192-CBC, AES-256-CBC (CBC with the `auth` HMAC, 2.6's wire layout); `?NAME` optional; BF/DES/other legacy-provider ciphers and `none` refused (as 2.6 on OpenSSL 3); other names dropped with a warning",
    ),
    s("ncp-ciphers", "deprecated alias of `data-ciphers`"),
    s(
        "data-ciphers-fallback",
        "cipher for a peer that announces none (no IV_CIPHERS/IV_NCP and no OCC cipher), as 2.6; any supported cipher; BF-CBC, DES and `none` refused",
    ),
    s(
        "cipher",
        "as 2.6 in client/server mode: not used to negotiate (warning when missing from `data-ciphers`); `data-ciphers-fallback` is the fallback",
    ),
    s(
        "tls-version-min",
        "`1.0`-`1.3` [`or-highest`]; `1.3` refuses TLS 1.2 peers; lower values change nothing (TLS 1.2 is the floor)",
    ),
    s(
        "remote-cert-tls",
        "`server` or `client`: Key Usage present and the serverAuth/clientAuth EKU, on either side",
    ),
    s(
        "verify-x509-name",
        "`NAME [subject|name|name-prefix]`, on both sides; compares the last CN (control characters as `_`) or the subject as `C=US, O=Org, CN=name`, where `\\`, `,` and `+` inside a value must be escaped with `\\` (2.6 leaves them bare, which is ambiguous)",
    ),
    s(
        "ns-cert-type",
        "`server|client` (deprecated, warning): OpenSSL's SSL server/client purpose check, or the Netscape cert type bit, as in 2.6",
    ),
    s(
        "remote-cert-ku",
        "`[HEX ...]`: Key Usage present and, if values are given, holding all bits of one of them; not together with `remote-cert-tls`",
    ),
    s(
        "tls-cert-profile",
        "`legacy` (the default, as in 2.6: peer chains may use RSA keys of 1024 bits and SHA-1 signatures) or `preferred` (RSA 2048+, no SHA-1); `suiteb` and `insecure` are errors",
    ),
    s(
        "remote-cert-eku",
        "`OID` or an OpenSSL long name such as `TLS Web Server Authentication` (unknown names are an error); not together with `remote-cert-tls`",
    ),
    s(
        "verify-client-cert",
        "server: `none` (no certificate asked for: clients log in with username/password only), `optional` (verified when sent), `require` (the default); `none`/`optional` need `auth-user-pass-verify` or a `plugin` checking logins, as in 2.6; a client without certificate is `UNDEF` unless `username-as-common-name`",
    ),
    u(
        "client-cert-not-required",
        "REMOVED OPTION: --client-cert-not-required, use '--verify-client-cert none' instead (as OpenVPN 2.6)",
    ),
    s(
        "replay-window",
        "`N`; the time argument `T` is an error (not implemented)",
    ),
    s(
        "allow-compression",
        "`no` (the 2.6 default: only stub framing, a pushed real algorithm fails the push), `asym`, `yes`; as in 2.6, ferrovpn decompresses what a peer compressed but never compresses what it sends (VORACLE), even with `yes`",
    ),
    s(
        "comp-lzo",
        "`[yes|no|adaptive]`, configured or pushed: framing byte 0xFA in front of every payload; LZO (0x66) from the peer is decompressed unless `no`; unlike 2.6, `mssfix` does not yet subtract the framing byte",
    ),
    s(
        "compress",
        "`[stub|stub-v2|lz4|lz4-v2|lzo]` (bare = stub), configured or pushed, framing as in 2.6; LZ4/LZO from the peer are decompressed, nothing sent is compressed; `migrate` is an error",
    ),
    s(
        "comp-noadapt",
        "clears adaptive LZO (no effect on what ferrovpn sends)",
    ),
    // --- tun
    s(
        "tun-mtu",
        "100-65535 (default 1500); the OCC options string carries it and 2.6's `link-mtu` for it (2.6 compares them at verb 7)",
    ),
    s(
        "mssfix",
        "`[N] [mtu|fixed]`, as 2.6.3 counts it. No line or a bare `mssfix`: 1492 counting the outer IP and UDP/TCP headers (with `fragment`: its MAX, counted the same way; with a `tun-mtu` other than 1500: the tun MTU as the inner packet size, as `fixed`); `mssfix N`: N is the datagram's payload, outer headers not counted; `mssfix N mtu`: N counts them; `mssfix N fixed`: MSS = N - 40 (inner IPv6: N - 60); `0` turns clamping off. Off N come the data-channel header (opcode and peer-id, the AEAD packet id and tag, or CBC's IV and HMAC with the payload rounded down to whole blocks less a padding byte, and its packet id), the `fragment` header and a 1-byte compression header, then the inner IP and TCP headers; SYNs are clamped both ways. 2.6's warnings about `mssfix` beside `fragment` too",
    ),
    s(
        "txqueuelen",
        "`N` (1-1000000): the tun device's transmit queue length, set when the device is made, as 2.6 (without it the kernel's default, 500, stays); a length the kernel refuses is a warning, as 2.6",
    ),
    // --- misc
    s(
        "ifconfig-pool-persist",
        "`FILE [N]` (default 600 s): the pool's memory of which common name last held each address (2.6's `CN,IPv4,IPv6` lines, either address empty when the pool lacks that family, read in order, a later line for an address winning, the IPv4 address deciding and the IPv6 one standing in without it; written in address order) is loaded at start and written every N seconds and at exit, in place through the file opened at start (before `user`/`chroot`), as in 2.6; `0` only reads it, and its addresses then go to their own common names only. Without this directive the pool still remembers names while it runs, as 2.6: a client gets the address its common name last held if free, else the free address given back longest ago (never used first, the lowest on a tie within a second). Difference from 2.6: an `ifconfig-push` address inside the pool is kept out of it while held (2.6 could hand it out twice)",
    ),
    s("verb", "0-11, stored"),
    s(
        "management",
        "`IP PORT [PW-FILE]` or `PATH unix [PW-FILE]`, on servers and clients; OpenVPN 2.6's command set (see docs/management.md); several management clients may be connected at once. A client's interface stays open across a SIGHUP, which reads the config again (`RECONNECTING,SIGHUP`, the hold again with `management-hold`, the first settings kept). A server's interface stays open across its restarts (connections, `state on`, the released hold and the state history kept; the first config's `management` settings kept on SIGHUP, as 2.6's `management_open`; a config without `management` closes it): `RECONNECTING,SIGHUP|SIGUSR1`, then `ASSIGN_IP` (unless the device was kept), `ADD_ROUTES`, `CONNECTED` again; `signal SIGHUP|SIGUSR1` restarts it",
    ),
    s(
        "management-hold",
        "the server starts, or the client connects, only after `hold release`; a client holds again before every reconnect, a server on every restart (`>HOLD:Waiting for hold release:1` after SIGUSR1 in place of its restart pause, `:0` after SIGHUP), as 2.6",
    ),
    s(
        "management-query-passwords",
        "clients: the `auth-user-pass` user name/password the config does not give are asked with `>PASSWORD:Need 'Auth' ...` (with `SC:` for `static-challenge`); clients and servers: the passphrase of an encrypted `key` or `pkcs12` file (without `askpass FILE`) is asked after `management-hold` with `>PASSWORD:Need 'Private Key' password`; a wrong one: `>PASSWORD:Verification Failed: 'Private Key'` (not for `pkcs12`, as 2.6), then `>FATAL:` and exit 1, or with `auth-retry interact`/`nointeract` RECONNECTING, the hold again and the question again, as 2.6 (docs/management.md). After a SIGHUP neither is asked again (2.6 keeps both in memory), except after `auth-nocache` or `forget-passwords` dropped them (both asked right after the hold, the credentials first), as 2.6. The key opens again on every SIGHUP and, without `persist-key`, on every SIGUSR1 (a client: every reconnect), with the passphrase given before, asking again only after `auth-nocache` or `forget-passwords`, as 2.6. A client's credentials dropped that way are asked at a reconnect in the key exchange (after the `WAIT` and `AUTH` states; with `auth-retry interact` before the attempt), as 2.6",
    ),
    s(
        "management-query-remote",
        "clients: before each attempt `>REMOTE:HOST,PORT,PROTO`, answered by `remote ACCEPT`, `remote SKIP [N]` or `remote MOD HOST PORT` (this attempt only), after `management-hold` and before `>PASSWORD:`, as 2.6; difference: `MOD` wants a port number (2.6 takes a service name too); servers: refused",
    ),
    s(
        "management-query-proxy",
        "clients (without `management-query-remote`, as 2.6): before each attempt `>PROXY:N,UDP|TCP,HOST`, answered by `proxy NONE` (as configured), `proxy HTTP HOST PORT [nct]` (TCP only) or `proxy SOCKS HOST PORT`, this attempt only, as 2.6; difference: a proxy set this way asks for no credentials (`nct` accepted, nothing sent); servers: refused",
    ),
    s(
        "management-up-down",
        "clients: `>UPDOWN:UP` once the tunnel's routes are in place (before `route-up`) and `>UPDOWN:DOWN` before they go (not on a reconnect that keeps the tunnel), each with the scripts' environment as `>UPDOWN:ENV,...` lines in 2.6's order and `>UPDOWN:ENV,END`, as 2.6; servers: `>UPDOWN:UP` after the routes are added (before `route-up`), `>UPDOWN:DOWN` at exit after the clients are gone and before `route-pre-down`, with the server's environment (start-up variables, the device, `ifconfig_*`, `route_*` of its `route`s), as 2.6",
    ),
    s("management-log-cache", "lines of log kept for `log N|all`"),
    s(
        "management-client-user",
        "unix socket only: the connecting process must run as this user",
    ),
    s(
        "management-client-group",
        "unix socket only: the connecting process must run with this group",
    ),
    s(
        "status",
        "`FILE [N]` (default 60 s): servers write the client list, routing table and totals (times in UTC); clients write data-channel byte counts; opened at start (before `user`/`chroot`) and rewritten in place, as in 2.6; a symbolic link at the path is refused",
    ),
    s(
        "status-version",
        "`1` (default), `2` (CSV with HEADER lines) or `3` (the same, tab-separated)",
    ),
    s(
        "persist-key",
        "client: without it a key that needs a passphrase is opened again at every reconnect (SIGUSR1, ping-restart, ...) with the kept passphrase, as 2.6 (which frees its TLS context then); after `auth-nocache` or `forget-passwords` dropped it, `askpass FILE` is read again with `auth-retry interact` (a wrong one is told over management, `>PASSWORD:Verification Failed: 'Private Key'`, and the file read again after the connect-retry pause or hold), otherwise it is asked over management (`management-query-passwords`) or on the terminal (without one the client exits), as 2.6; with it the key stays open. A server reads its key and certificates again on every restart (SIGHUP, SIGUSR1), with or without it, but with it a SIGUSR1 does not ask again for a key passphrase given over management (`management-query-passwords`, even with `auth-nocache` or after `forget-passwords`), as 2.6, which keeps its key then",
    ),
    s(
        "persist-tun",
        "client: addresses, routes (redirect-gateway's too) and DNS stay in place while reconnecting, so nothing leaks during backoff; without it they are removed on every reconnect, as in 2.6; a SIGHUP closes the device anyway, as 2.6. Server: a SIGUSR1 keeps the device configured with its routes and runs no up/down hooks (2.6's `Preserving previous TUN/TAP instance`); SIGHUP closes and opens it again. Difference: with `up-restart` 2.6 runs `down`/`up` with `restart` on that SIGUSR1, a ferrovpn server runs none (warned at start)",
    ),
    s(
        "user",
        "`NAME`: once the tun device, socket and routes are set up, run as NAME with no new privileges; a server cannot restart in place after that (SIGHUP/SIGUSR1: it closes its clients and tunnel, logs why, and exits with status 1 for the service manager to start it anew; 2.6 fails the same way to open the device again without `persist-tun`, and keeps running with it); a client keeps CAP_NET_ADMIN for routes on reconnect; the status and ifconfig-pool-persist files are opened before and rewritten in place, as in 2.6 (NAME needs no access to them)",
    ),
    s(
        "chroot",
        "`DIR`, servers only: once set up (before `user`/`group`), chroot to DIR and cd to `/`; a `crl-verify` file is read at start from its real path, then re-read at the same path inside DIR (refused at start if missing there); the `status` and `ifconfig-pool-persist` files are opened before the chroot and kept open, as in 2.6; clients refuse it (see the error)",
    ),
    s(
        "group",
        "`NAME`: with or without 'user', run as group NAME (and no supplementary groups) once set up",
    ),
    s(
        "config",
        "include another file (relative to the working directory), at most 10 levels",
    ),
    s(
        "setenv",
        "`NAME VALUE` stored; `setenv opt DIRECTIVE ...` makes an unknown directive a warning; `setenv FORWARD_COMPATIBLE 1` makes every later unknown directive a warning",
    ),
    s(
        "ignore-unknown-option",
        "listed unknown directives become warnings",
    ),
    s("key-method", "`2` only"),
    // --- ferrovpn extensions
    s(
        "workers",
        "ferrovpn: data-plane worker threads (default: number of CPUs)",
    ),
    s("cpu-pin", "ferrovpn: pin data-plane workers to CPUs"),
    s(
        "seal-spread",
        "ferrovpn, clients over UDP: every data-plane worker seals the tunnel's packets, sent in packet-id order (off by default: no gain on 2 CPUs; see docs/architecture.md); refused on a server and with `fragment`",
    ),
    s(
        "metrics",
        "ferrovpn, servers: `IP:PORT`, a Prometheus endpoint (`GET /metrics`, OpenMetrics text): per client bytes, packets, connected since, handshakes; drops by reason; per worker packets and busy time; control queue depth",
    ),
    s(
        "max-packet-size",
        "ferrovpn: largest datagram handled by the data plane (576-65535)",
    ),
    // --- scripts
    s(
        "script-security",
        "`0..3` as 2.6: below 2 a user script is not run (a warning, and the hook counts as failed); `via-env` passwords only at 3",
    ),
    s(
        "up",
        "`CMD`: run after the tunnel device is configured, with `dev tun_mtu 0 ifconfig_local ifconfig_netmask|ifconfig_remote init` and 2.6's environment; a failure stops ferrovpn, as 2.6. A client runs it when a push reply configured the tunnel anew (every reconnect without `persist-tun`; difference from 2.6: after the pushed routes are added, not before), with the pushed routes (`route_*`), `dhcp-option`s (`foreign_option_N`) and the server's address (`trusted_ip`/`trusted_port`) in its environment; not together with `user`/`group` on a client (2.6 runs the first `up` before dropping privileges, ferrovpn drops them before connecting)",
    ),
    s(
        "down",
        "`CMD`: run when the tunnel goes (server: at shutdown; client: at exit, and at every reconnect without `persist-tun`), after the tunnel device closed (before with `down-pre`), same arguments as `up`, `signal` set. A client runs it with the privileges it has then (after `user`/`group`, as 2.6)",
    ),
    s(
        "up-restart",
        "client: `up`/`down` run with `restart` on a reconnect that keeps the tunnel (`persist-tun`), as 2.6; server: not run on a SIGUSR1 that keeps the device (2.6 runs them with `restart`; warned at start with `persist-tun`)",
    ),
    i(
        "up-delay",
        "a ferrovpn client runs `up` once the connection is established anyway",
    ),
    s(
        "route-pre-down",
        "`CMD`: run before the tunnel's routes are deleted (after PLUGIN_ROUTE_PREDOWN), arguments as `down`; a server runs it at shutdown, after the clients are gone, before `down`",
    ),
    s("down-pre", "run `down` before the tunnel device closes"),
    s(
        "route-up",
        "`CMD`: run after the routes are added, no extra arguments (a client: with `up`, same environment; not together with `user`/`group` on a client, see `up`)",
    ),
    s(
        "ipchange",
        "client: `CMD`: run with the server's address as one argument, `[AF_INET]IP PORT` (as 2.6 formats it), when the connection to it is established (its TLS handshake done, after PLUGIN_IPCHANGE), before the push reply is applied; not together with `user`/`group` (see `up`); servers refuse it",
    ),
    s(
        "learn-address",
        "server: `CMD`: run with `add ADDR CN` when a client gets its tunnel address and `delete ADDR` when it goes",
    ),
    s(
        "client-connect",
        "server: `CMD`: run before the push reply with the dynamic-config file as last argument; non-zero refuses the client. The file is read as a `client-config-dir` file after the client's own: `disable` refuses the client, `ifconfig-push` pins its address, `push`/`push-reset`/`push-remove` edit its push list, `iroute` and `iroute-ipv6` add internal routes. Deferred as 2.6: exit 0 with `2` written to `client_connect_deferred_file` and the answer (`1` accepts with the dynamic-config file as it is then, `0` or any other byte refuses with AUTH_FAILED) written there later; the client gets no push reply meanwhile, and one with no answer after `hand-window` is dropped (the stock client has restarted by then)",
    ),
    s(
        "client-disconnect",
        "server: `CMD`: run when an authenticated client goes, with bytes_received/sent and time_duration",
    ),
    s(
        "auth-user-pass-verify",
        "server: `CMD via-env|via-file`: exit 0 accepts, 2 defers (the script writes 1 or 0 to `auth_control_file` later; `auth_pending_file` sends AUTH_PENDING), other refuses (reason from `auth_failed_reason_file`)",
    ),
    s(
        "username-as-common-name",
        "server: the verified user name replaces the certificate's common name (status, management, scripts, duplicate-cn)",
    ),
    s(
        "auth-gen-token",
        "server: `[LIFETIME] [RENEWAL] [external-auth]`: after a good login the client gets 2.6's HMAC-SHA256 session token (`auth-token` in the push reply, renewed at renegotiation); a valid token logs in without the script; `external-auth` runs it anyway with `session_state`",
    ),
    s(
        "auth-gen-token-secret",
        "server: `FILE` or inline: the PEM key (`openvpn --genkey auth-token`) so that tokens survive restarts and work across servers; without it a random key per start",
    ),
    // --- accepted with a warning
    i("mute", "log rate limiting is not implemented"),
    s(
        "log",
        "`FILE`: log lines go to FILE (truncated at start) instead of stderr",
    ),
    s(
        "log-append",
        "`FILE`: log lines are appended to FILE instead of going to stderr",
    ),
    i(
        "mute-replay-warnings",
        "replay warnings are rate-limited anyway",
    ),
    i(
        "resolv-retry",
        "name resolution is retried on every connect",
    ),
    i("suppress-timestamps", "log format is fixed"),
    i("sndbuf", "socket buffers are sized by ferrovpn"),
    i("rcvbuf", "socket buffers are sized by ferrovpn"),
    i(
        "fast-io",
        "the data plane always uses batched non-blocking I/O",
    ),
    s(
        "auth-nocache",
        "client: the password is dropped from memory once sent; it is read (file) or asked for again when needed. Clients and servers: the private key's passphrase (`askpass`, or asked over management) is dropped once the key is open, and read or asked again when a restart opens the key (SIGHUP; a SIGUSR1 without `persist-key`, for a client every reconnect), as 2.6: a SIGHUP reads `askpass FILE` again, a SIGUSR1 asks over the management interface (or on the terminal) unless `auth-retry interact` (then it reads `askpass FILE` again), as 2.6 (see `persist-key`)",
    ),
    s(
        "float",
        "UDP client and point-to-point end, as 2.6 in TLS mode: the socket hears every address, and a new session goes to the address the peer's first authenticated packet (its hard reset under tls-auth/tls-crypt, or the TLS handshake without them) comes from: data, control, `ipchange` (with that address) and the management state name it. Within a session nothing moves, as in 2.6: data and control packets from another address are dropped (2.6: 'TLS keys are out of sync', 'unexpected IP addr') until ping-restart starts a new session, which then follows the peer; an unauthenticated packet never moves it. Without `float` the client hears only the address it sent to (2.6 also hears the other addresses the `remote` name resolved to). No effect over TCP or through a proxy, nor on a point-to-point end without `remote` (it hears every address anyway, as 2.6). A server lets an authenticated client move to a new address with or without it (2.6 floats DATA_V2 peers by peer id too)",
    ),
    i("ping-timer-rem", "ping timers always run"),
    s(
        "writepid",
        "`FILE`: the process id is written to FILE at start (before privileges are dropped)",
    ),
    i("tls-cipher", "TLS cipher suites are fixed by rustls"),
    i("tls-ciphersuites", "TLS cipher suites are fixed by rustls"),
    i("tls-groups", "key exchange groups are fixed by rustls"),
    i("ecdh-curve", "key exchange groups are fixed by rustls"),
    s(
        "auth-retry",
        "client: on AUTH_FAILED `none` exits (default), `nointeract` reconnects with the same credentials, `interact` asks again",
    ),
    s(
        "static-challenge",
        "client: `TEXT ECHO [scrv1]`, the answer is asked on the terminal at start and sent in the SCRV1 format",
    ),
    i("push-peer-info", "peer info is always sent"),
    i(
        "route-delay",
        "routes are added as soon as the tunnel is up",
    ),
    i("route-method", "Windows only"),
    i("block-outside-dns", "Windows only"),
    i("disable-dco", "ferrovpn does not use kernel DCO"),
    s(
        "inactive",
        "`SECONDS [BYTES]`, client and point-to-point mode: exit after SECONDS without tunnel traffic, or with less than BYTES of it (in + out) since the timer last restarted, as 2.6 (keepalive pings and control traffic do not count; `0` disables). A server accepts it with a warning and does not apply it",
    ),
    s(
        "server-poll-timeout",
        "alias of `connect-timeout`, as in 2.6",
    ),
    i("machine-readable-output", "log format is fixed"),
    i(
        "persist-remote-ip",
        "a remote given as a host name is resolved again at each reconnect (an address behaves the same). Refused on a point-to-point end without `remote` (2.6 would send its next reset to the last peer's address; ferrovpn waits again)",
    ),
    s(
        "tun-mtu-extra",
        "`N`: as 2.6 for a tun device, N bytes are taken off the MSS clamp (with every `mssfix` form but `fixed`) and added to the OCC `link-mtu`; buffers need no change (they hold 64 KiB packets)",
    ),
    s(
        "syslog",
        "`[NAME]` (default `openvpn`): log lines go to syslog (the journal under systemd) as NAME, facility daemon; `log`/`log-append` win over it; the first `syslog`/`daemon` names the log",
    ),
    s(
        "daemon",
        "`[NAME]`: once the config and credentials are read, detach (fork, setsid, chdir `/`, stdin/out/err to /dev/null; with `log`, stdout/err stay on the log file), then `writepid`; logs go to syslog as NAME (default `openvpn`) unless `log` is given. Under systemd (`NOTIFY_SOCKET`) it stays in the foreground, as 2.6 does",
    ),
    i(
        "disable-occ",
        "ferrovpn never acts on a peer's options string (2.6 only warns about mismatches)",
    ),
    // --- unsupported
    s(
        "auth-user-pass",
        "client: `[FILE]` or inline `<auth-user-pass>` (user name, password lines); what is missing is asked on the terminal without echo; `cert`/`key` become optional; a pushed `auth-token` replaces the password for renegotiation and reconnects; the management command `forget-passwords` drops the password and the auth-token, which are then read again (FILE, inline) or asked again over management, as 2.6 (`ssl_purge_auth`, `ssl_clean_auth_token`)",
    ),
    s(
        "auth-user-pass-optional",
        "server, with `auth-user-pass-verify`, a `plugin` or `management-client-auth` (else refused, as 2.6): a client that sends no user name and password (no `auth-user-pass`) is still checked, as 2.6: the script (via-file: two empty lines), PLUGIN_AUTH_USER_PASS_VERIFY and `>CLIENT:CONNECT` get an empty `username` and `password` and decide; with `username-as-common-name` its common name becomes empty (scripts then see no `common_name`, as 2.6). Without it such a client is dropped after the TLS handshake without an answer (2.6: 'Auth Username/Password was not provided by peer'; the client gives up after its hand-window)",
    ),
    u(
        "auth-token",
        "in a config file (2.6 then presets the client's session token from it, sent in place of the password) it is not supported; pushed by a server (`auth-gen-token`) a client takes it as 2.6",
    ),
    s(
        "tls-crypt-v2-verify",
        "server: `CMD`: run with `metadata_type` and `metadata_file` (the client key's metadata, without the type byte) once a client's wrapped key authenticated, before any TLS state is made for it; non-zero drops the client silently, as 2.6. At most 8 run at once; further new clients are dropped meanwhile (they retry)",
    ),
    u("secret", "static-key (non-TLS) mode is not supported"),
    s(
        "ifconfig",
        "`LOCAL REMOTE` (topology `net30`/`p2p`) or `LOCAL NETMASK` (`subnet`), IPv4 addresses (2.6 also takes host names): point-to-point mode only, set on the tun device once the peer is up, with `route` lines via REMOTE (or `route-gateway`); 2.6's checks (the two differ, neither is a `remote`/`local` address). A server (use `server`) and a pulling client (addresses are pushed) refuse it",
    ),
    u(
        "ifconfig-push",
        "only in a per-client config (`client-config-dir` file), as in OpenVPN 2.6",
    ),
    s(
        "client-config-dir",
        "`DIR`, servers only: at connect time the file named after the client's common name (2.6's rules: `/` and non-printable bytes become `_`; `.`/`..` never match), else `DEFAULT`, is read (at most 256 KiB; inside the chroot if any). It may hold `ifconfig-push LOCAL NETMASK [ALIAS]` (the address is kept out of the pool while the client holds it), `ifconfig-ipv6-push ADDR/BITS [REMOTE]` (with `server-ipv6`), `iroute NET [MASK]` (needs a server `route` for the network), `iroute-ipv6 NET/BITS` (needs a server `route-ipv6` or the `server-ipv6` network; routed and source-checked like `iroute`; a pushed `route-ipv6` equal to it is not pushed to that client, as 2.6; both share 2.6's 256-route quota), `push`, `push-reset`, `push-remove`, `disable`; a line ferrovpn cannot use is logged and skipped as in 2.6 (per-client timers, compression, ciphers, `config`: not supported there). An unreadable, oversized or non-UTF-8 file refuses the client. DIR must exist at start, and be readable after `chroot`/`user`/`group`",
    ),
    s(
        "ccd-exclusive",
        "with `client-config-dir`: refuse a client without a file named after its common name (`DEFAULT` does not count), as 2.6",
    ),
    u(
        "iroute",
        "only in a per-client config (`client-config-dir` file), as in OpenVPN 2.6",
    ),
    u(
        "iroute-ipv6",
        "only in a per-client config (`client-config-dir` file or a client-connect script's file), as in OpenVPN 2.6",
    ),
    s(
        "server-ipv6",
        "`NETWORK/BITS` (/64 to /124), implies `mode server` + `tls-server`: expanded as 2.6's helper does: the server takes NETWORK+1, clients get NETWORK+0x1000 onwards (+2 onwards for /112 and longer), paired with their IPv4 pool address when there is `server` (the smaller pool limits both, as in 2.6: see `ifconfig-ipv6-pool`); without `server` an IPv6-only server as 2.6: clients get only `ifconfig-ipv6` (no `ifconfig`, `route-gateway` or `topology` pushed), the status files list an empty IPv4 virtual address, scripts get no `ifconfig_pool_remote_ip`/`ifconfig_local`, `learn-address` names the IPv6 address, the persist file holds `CN,,IPv6` lines; not with `nopool` or `ifconfig-ipv6-pool`; `tun-ipv6` and each client's `ifconfig-ipv6 ADDR/BITS SERVER` are pushed. Every server script and plugin hook sees the server's `ifconfig_ipv6_local`, `ifconfig_ipv6_netbits` and `ifconfig_ipv6_remote` (NETWORK+2), a client's (from `client-connect` on) its `ifconfig_pool_remote_ip6`, `ifconfig_pool_local_ip6` and `ifconfig_pool_ip6_netbits`, as 2.6",
    ),
    s(
        "ifconfig-ipv6",
        "`ADDR/BITS REMOTE` (/64 to /124), servers only: the server's own IPv6 address on its tun device (REMOTE is unused there, as in 2.6's subnet setup); each client's pushed `ifconfig-ipv6` carries BITS and ADDR as the remote. `server-ipv6` overrides it (with a warning), as 2.6's helper does. Scripts see the three as `ifconfig_ipv6_local`, `ifconfig_ipv6_netbits`, `ifconfig_ipv6_remote` (see `server-ipv6`); unlike `server-ipv6` it pushes no `tun-ipv6`, as 2.6. Without `ifconfig-ipv6-pool` clients get IPv6 only from a client-config-dir `ifconfig-ipv6-push`; with no pool at all (`mode server` + `tls-server` + `ifconfig-ipv6`, no `server`) a client without one connects without an address, as 2.6. A client refuses it (its address is pushed; point-to-point setup is not supported)",
    ),
    s(
        "ifconfig-ipv6-pool",
        "`BASE/BITS` (/64 to /124), servers only, needs `ifconfig-ipv6`, not with `server-ipv6` (2.6's rules). Paired with the IPv4 pool as 2.6's pool.c does: the n-th IPv4 pool address goes with BASE+n (BASE+1+n when BASE's last 32 bits are zero); the pool holds 65536 addresses for /111 and shorter, up to the network's end for /112 and longer, and the smaller of the two pools limits both (2.6's warning when IPv6 is the smaller). A client whose IPv4 address is pinned by `ifconfig-push` gets no IPv6 from the pool, as in 2.6. Without an IPv4 pool (`server ... nopool`, or `mode server` + `tls-server` without `server`) the pool holds IPv6 addresses only, as 2.6's: its clients are IPv6-only (see `server-ipv6`), a client-config-dir `ifconfig-push` client gets its IPv4 address and no pool IPv6 address",
    ),
    s(
        "route-ipv6",
        "`NETWORK/BITS [GATEWAY] [METRIC]` (host bits cleared as 2.6 does): a server routes it into its tun device; a client adds it like a pushed one (into the tunnel; the gateway does not matter on tun), with METRIC or `route-metric`'s",
    ),
    i(
        "tun-ipv6",
        "a no-op in 2.6 too (modern systems need no special IPv6 tun handling)",
    ),
    u("server-bridge", TAP_REASON),
    s(
        "pkcs12",
        "`FILE` (DER) or inline `<pkcs12>` (base64): certificate, key and CA certificates, as 2.6: opened with an empty password first, then with the `askpass` one (or a terminal prompt); `ca` given alongside replaces the file's CAs as trust anchors (the file's other certificates are then sent as the chain); not together with `cert`/`key`. OpenSSL 3's default (PBES2/AES-256, HMAC-SHA256) and the legacy RC2/3DES files (which 2.6 only reads with OpenSSL's legacy provider) are read. Unlike 2.6, a `pkcs12` without CA certificates and without `ca` is refused at start (2.6 starts and fails every handshake)",
    ),
    u(
        "cryptoapicert",
        "Windows certificate store is not supported",
    ),
    s(
        "tls-verify",
        "`CMD`: run once per certificate of the peer's chain, from the CA down to depth 0, with `DEPTH SUBJECT` (2.6's subject string) and `X509_{depth}_*`, `tls_id_*`, `tls_serial_*`, `tls_serial_hex_*`, `tls_digest_*`, `tls_digest_sha256_*`; non-zero refuses the peer. 2.6 runs it inside every TLS handshake and stops everything meanwhile; ferrovpn runs it, with PLUGIN_TLS_VERIFY, once each TLS handshake is done (the first and every renegotiation), without blocking other clients, and holds its key-method-2 message of that key until the verdict, so nothing of the key exchange reaches a refused peer, as from 2.6's failed handshake. Server: a refused client hears nothing more and the stock client gives up after its `hand-window` and reconnects (no RESTART, no AUTH_FAILED). Client: a refused server never gets our key method, so neither the `auth-user-pass` user name nor the password; the client restarts as 2.6 (`TLS Error: TLS handshake failed`, `>STATE:...,RECONNECTING,tls-error`) after `connect-retry`. A refused renegotiation (either role) fails as 2.6's (ssl.c `tls_multi_process` with a lame duck): that key goes without a word, the old key keeps the tunnel until `tran-window` after the renegotiation began, then the session ends (a client restarts with `tls-error`); the peer may renegotiate again meanwhile, verified again",
    ),
    s(
        "tls-export-cert",
        "`DIR`: with `tls-verify` or a PLUGIN_TLS_VERIFY plugin, the certificate being checked is written to a file in DIR named in `peer_cert`, removed after the plugins and the script",
    ),
    s(
        "plugin",
        "server: `PATH [ARGS]`: OpenVPN plugin API v1–v3 shared objects (a bare name is looked up in Debian's plugin directory, as 2.6 does); ferrovpn calls, in 2.6's order and with its arguments and environment (never `script_type`): PLUGIN_UP, PLUGIN_ROUTE_UP, PLUGIN_DOWN, PLUGIN_TLS_VERIFY (per certificate of the client's chain, from the CA down to the client, before the `tls-verify` script, with argv `depth subject`, the `X509_{depth}_*`/`tls_id_*`/`tls_serial_*`/`tls_digest_*` variables and `peer_cert` with `tls-export-cert`; a v3 plugin gets the certificate as an OpenSSL `X509*` in `current_cert` and its depth in `current_cert_depth`, made with Debian's `libcrypto.so.3`, loaded at run time only for such a plugin (missing: the plugin is refused at start; a plugin must link libcrypto itself); anything but success refuses the client as a refusing `tls-verify` script does; on every renegotiation too), PLUGIN_AUTH_USER_PASS_VERIFY (success, error, or deferred through `auth_control_file`, e.g. Debian's `openvpn-plugin-auth-pam.so`), PLUGIN_TLS_FINAL (an error refuses the client with AUTH_FAILED, on a renegotiation too: 2.6.14 fails the whole client when any of its keys failed, and runs CLIENT_DISCONNECT for one that was connected), PLUGIN_CLIENT_CONNECT_V2 (its returned `config` values read as a dynamic-config file; deferred: asked again with PLUGIN_CLIENT_CONNECT_DEFER_V2 until it answers, up to `hand-window`), PLUGIN_LEARN_ADDRESS, PLUGIN_CLIENT_DISCONNECT, PLUGIN_ROUTE_PREDOWN (at shutdown, before `route-pre-down` and `down`, with `down`'s arguments; a failure ends the server at once: the plugins' abort functions, no `down`, non-zero status). A plugin asking for any other hook (the v1 CLIENT_CONNECT; IPCHANGE, a client's; ENABLE_PF, which 2.6 removed), is refused at start; plugins are told `ssl_api` OpenSSL, as by Debian's 2.6; per-client contexts (`openvpn_plugin_client_constructor_v1`/`_destructor_v1`) as 2.6: one for the server (made at open, passed to UP/ROUTE_UP/DOWN and `learn-address delete`, destroyed before close) and one per client instance (made when its handshake's cookie verifies, passed to its TLS_FINAL/AUTH_USER_PASS_VERIFY/CLIENT_CONNECT/LEARN_ADDRESS add/CLIENT_DISCONNECT calls, destroyed when it goes, right after CLIENT_DISCONNECT, also when refused); plugins close in the order they were opened; a login-checking plugin not together with `auth-user-pass-verify`; client: loaded after the management hold, before privileges drop, and called as 2.6 calls them on a client, each before the script of its point, with one per-client context for every call: PLUGIN_TLS_FINAL after each key exchange (first one: after `tls-verify`, before PLUGIN_IPCHANGE; a failure ends the client as SIGTERM with signal `auth-control-exit`, running the down hooks), PLUGIN_IPCHANGE (one argument `[AF_INET]ADDR PORT`, once per connection; failure warned), PLUGIN_UP (`dev tun_mtu 0 local netmask init|restart`; a failure ends the client at once: plugins' abort functions, no down hooks, non-zero status), `>UPDOWN:UP`, PLUGIN_ROUTE_UP (failure warned), then `>UPDOWN:DOWN`, PLUGIN_ROUTE_PREDOWN and PLUGIN_DOWN (arguments as UP; a failure is fatal as for UP); the server's hooks (login, client-connect, learn-address...) load but are never called, as in 2.6; PLUGIN_TLS_VERIFY for each certificate of the server's chain (CA first, as on a server: `depth subject`, the certificate variables, an OpenSSL `X509*`; with `tls-export-cert` its file in `peer_cert`), before the `tls-verify` script, in every TLS handshake, our key-method-2 message (and credentials) held until the verdict as described for `tls-verify`; a refusal keeps the tunnel down and the client tries again after `connect-retry`, as 2.6 after its failed handshake (`tls-error`, no AUTH_FAILED; the server never got our key method); together with `user`/`group` refused (2.6 calls the first UP as root, ferrovpn drops privileges before it connects)",
    ),
    s(
        "management-client-auth",
        "server: every client's login waits for the management client (`>CLIENT:CONNECT`/`REAUTH`, answered with `client-auth`, `client-auth-nt`, `client-deny` or `client-pending-auth`), together with `auth-user-pass-verify`/plugin as 2.6 (all must accept); clients must send a user name (`auth-user-pass`), as 2.6 requires, unless `auth-user-pass-optional` (then a client without one is asked about with an empty `username`); see docs/management.md",
    ),
    s(
        "port-share",
        "`HOST PORT [DIR]` (HOST an IP address, or a name resolved once at start to its first IPv4 address, as 2.6): on a TCP server, a connection whose first bytes are not an OpenVPN client's reset (2.6's rule) is proxied to HOST:PORT; `DIR` gets 2.6's journal files (named after the proxy's local IP:PORT, holding the client's address). Up to 1024 proxied connections at once",
    ),
    s(
        "fragment",
        "`MAX [mtu]` (MAX at least 68), UDP only (2.6's error with TCP, a TCP `local`/`remote` included), both roles; a server applies it to every client, as 2.6. On the wire as 2.6's fragment.c: a 4-byte header inside the encrypted payload, in front of the compression framing; a payload larger than 2.6's maximum fragment size (MAX less the data-channel overhead of the key's cipher and, with `mtu`, the outer IP/UDP headers) leaves as up to 32 datagrams, each with its own packet id; received fragments are reassembled per peer (25 packets at once, a partial one dropped 10 s after its last fragment, packets no larger than `tun-mtu` + 128 bytes). Without an `mssfix` line the MSS clamp is derived from MAX as 2.6 derives it, and the clamp subtracts the 4-byte header. The OCC options string carries `mtu-dynamic`, as 2.6; a path-MTU hint does not lower MAX as in 2.6",
    ),
    u("shaper", "traffic shaping is not supported"),
    u("multihome", "multihome is not supported; bind with `local`"),
    s(
        "passtos",
        "each datagram carrying an inner IPv4 packet leaves with that packet's TOS byte (DSCP and ECN), as 2.6 copies it (2.6 sets it with `setsockopt` after the send, so its datagram gets the previous packet's TOS; ferrovpn sets it per datagram). Inner IPv6 packets, pings and control packets keep the socket's default TOS (2.6 reuses the last IPv4 packet's); 2.6 sets `IP_TOS` only, so outer IPv6 datagrams are left alone by both. With a TCP transport it is an error (2.6 sets the TCP socket's TOS; not implemented)",
    ),
    u(
        "keysize",
        "removed in OpenVPN 2.6, which refuses it too; remove the line",
    ),
    u(
        "ncp-disable",
        "removed in OpenVPN 2.6, which refuses it too; use `data-ciphers`",
    ),
    u("cd", "`cd` is not supported; use absolute paths"),
    s(
        "askpass",
        "`[FILE]`: the passphrase of an encrypted `key` (PKCS#8 PBES2 with PBKDF2/scrypt and AES-CBC/3DES, or OpenSSL's traditional `Proc-Type: 4,ENCRYPTED` with AES-*-CBC/DES-EDE3-CBC) or of a `pkcs12` file is the file's first line; no FILE (or `stdin`): asked on the terminal without echo (\"Enter Private Key Password:\") at start, before `daemon` (and under `--check`), as 2.6, but only when a key or `pkcs12` file needs it (2.6 asks even for an unencrypted key). Without `askpass` an encrypted key is asked for the same way; without a terminal that is an error saying to use `askpass FILE`. A wrong passphrase stops the start, naming the file. Not inline (as 2.6). With `management-query-passwords`: `askpass FILE` wins; a passphrase in it that does not open the key is reported over management after the hold (`>PASSWORD:Verification Failed: 'Private Key'`, then what `auth-retry` says), and the file is read after `management-hold` (at start only checked to be readable), as 2.6; `askpass` without FILE asks over the management interface, as 2.6. After a SIGHUP the passphrase read at start is used again, without reading the file or asking on the terminal (the file must still be readable), as 2.6 (its `passbuf` lives as long as the process, and the management interface's `forget-passwords` empties it too); with `auth-nocache` or after `forget-passwords` a SIGHUP reads the file again, and a server's SIGUSR1 without `persist-key` asks over management (or on the terminal) instead, as 2.6",
    ),
    u("engine", "crypto engines are not supported"),
];

/// Look a directive up in [`DIRECTIVES`].
pub fn lookup(name: &str) -> Option<&'static DirectiveInfo> {
    DIRECTIVES.iter().find(|d| d.name == name)
}

/// Why a directive is rejected, if ferrovpn rejects it as a whole.
pub fn unsupported_reason(name: &str) -> Option<&'static str> {
    lookup(name)
        .filter(|d| d.support == Support::Unsupported)
        .map(|d| d.note)
}

/// The Markdown table (`directive | status | notes`) written into
/// `docs/compatibility.md`.
pub fn markdown_table() -> String {
    let mut out = String::from("| directive | status | notes |\n|---|---|---|\n");
    for d in DIRECTIVES {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            d.name,
            d.support.as_str(),
            d.note.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const DOC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/compatibility.md");
    const BEGIN: &str =
        "<!-- BEGIN DIRECTIVE TABLE (generated from crates/config/src/table.rs) -->\n";
    const END: &str = "<!-- END DIRECTIVE TABLE -->";

    #[test]
    fn names_are_unique() {
        let mut seen = HashSet::new();
        for d in DIRECTIVES {
            assert!(seen.insert(d.name), "duplicate table entry {}", d.name);
        }
    }

    /// Every directive in the table appears in docs/compatibility.md, and the
    /// generated table there is current. Regenerate with
    /// `FERROVPN_BLESS_DOCS=1 cargo test -p ferrovpn-config`.
    #[test]
    fn compatibility_doc_is_current() {
        let doc = std::fs::read_to_string(DOC).unwrap_or_default();
        let table = markdown_table();
        let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
            panic!("{DOC} lacks the table markers");
        };
        if std::env::var_os("FERROVPN_BLESS_DOCS").is_some() {
            let new = format!("{}{BEGIN}{table}{}", &doc[..b], &doc[e..]);
            std::fs::write(DOC, new).unwrap_or_else(|err| panic!("write {DOC}: {err}"));
            return;
        }
        for d in DIRECTIVES {
            assert!(
                doc.contains(&format!("| `{}` |", d.name)),
                "docs/compatibility.md does not list '{}'",
                d.name
            );
        }
        assert_eq!(
            &doc[b + BEGIN.len()..e],
            table,
            "docs/compatibility.md is stale; run FERROVPN_BLESS_DOCS=1 cargo test -p ferrovpn-config"
        );
    }

    #[test]
    fn unsupported_reason_matches_table() {
        assert_eq!(unsupported_reason("comp-lzo"), None);
        assert_eq!(unsupported_reason("port"), None);
        assert_eq!(unsupported_reason("user"), None);
        assert_eq!(unsupported_reason("no-such-thing"), None);
    }
}
