//! The lab every interop test shares: a server namespace and N client
//! namespaces, each client joined to the server by its own veth pair, a
//! throwaway PKI and a scratch directory; ferrovpn or stock `openvpn` started
//! in either role from one config text, waited on until ready; ping and
//! iperf3 through the tunnel.
//!
//! A test reads like this:
//!
//! ```no_run
//! # const FERROVPN: &str = "target/release/ferrovpn";
//! use ferrovpn_testkit::lab::{Lab, SERVER_TUN};
//! use ferrovpn_testkit::Cipher;
//!
//! let lab = Lab::new("sv-example", 1, FERROVPN); // FERROVPN: env!("CARGO_BIN_EXE_ferrovpn")
//! let (sc, cc) = lab.tls_crypt_confs();
//! let server = lab.ferrovpn_server(&sc);
//! let client = lab.stock_client_up(0, "openvpn-client", &cc, &server);
//! lab.ping_and_iperf3(0, "example", &client, &server);
//! ```
//!
//! Addressing: client namespace `i` reaches the server's underlay at
//! `10.210.<i+1>.1` ([`Lab::server_underlay`]) from `10.210.<i+1>.2`; the
//! tunnel is `10.8.0.0/24` with the server at [`SERVER_TUN`].
//!
//! Everything here is for tests: a failure panics with the logs that explain
//! it. Processes are locals of the test declared after the lab, so they drop
//! (and are killed) before the namespaces go.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::time::Duration;

use crate::conf::{
    Cipher, ClientConf, Material, ServerConf, Transport, Wrap, openvpn_client_conf,
    openvpn_server_conf, write_static_key,
};
use crate::env::{TestDir, require_root_and_tools, unique_name, wait_until};
use crate::net::{Direction, Iperf3Report, iperf3_all_while, iperf3_report, ping};
use crate::netns::{Netns, NetnsResolvConf, VethPair};
use crate::pki::{CertKey, Pki, PkiOptions};
use crate::process::Proc;

/// What a stock client logs when its tunnel is up (ferrovpn's client too).
pub const UP: &str = "Initialization Sequence Completed";
/// What a ferrovpn server logs when it accepts clients.
pub const LISTENING: &str = "server listening";
/// How long a server may take to start and a client to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The server's tunnel address (`server 10.8.0.0 255.255.255.0`).
pub const SERVER_TUN: &str = "10.8.0.1";
/// The server's tunnel device in [`Lab::server_conf`].
pub const SERVER_DEV: &str = "fvtun-s";
/// The client's tunnel device in [`Lab::confs`].
pub const CLIENT_DEV: &str = "fvtun-c";
/// The server's UDP port in every generated config.
pub const SERVER_PORT: u16 = 1194;
/// Every client namespace's own `/etc/resolv.conf` before any VPN runs
/// (see [`Lab::resolv_conf`]).
pub const CLIENT_RESOLV_CONF: &str =
    "# test namespace\nnameserver 192.0.2.53\nsearch lan.test\noptions edns0\n";

/// Tools every lab needs (with the ferrovpn binary and `/dev/net/tun`).
const TOOLS: &[&str] = &["openvpn", "iperf3", "ip", "ping", "ss", "kill"];
/// Client certificates in a lab's PKI at least (`client1`..`client3`); a lab
/// with more client namespaces has one per namespace.
const PKI_CLIENTS: usize = 3;

/// Which implementation runs a side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Implementation {
    /// Debian's stock `openvpn`.
    Stock,
    /// The ferrovpn binary under test.
    Ferrovpn,
}

impl Implementation {
    /// `stock` or `ferrovpn`: a prefix for the names of its processes and
    /// files when a test runs the same script against both.
    pub fn name(self) -> &'static str {
        match self {
            Implementation::Stock => "stock",
            Implementation::Ferrovpn => "ferrovpn",
        }
    }
}

/// A server namespace and client namespaces joined by veth pairs, a PKI and a
/// scratch directory. See the module docs.
#[derive(Debug)]
pub struct Lab {
    /// Client namespace `i`'s own resolv.conf (see [`Lab::resolv_conf`]).
    resolv_confs: Vec<NetnsResolvConf>,
    /// The veth pair of client `i`: end A (`if_a`) in the server namespace,
    /// end B (`if_b`) in client namespace `i`.
    pub veths: Vec<VethPair>,
    /// The client namespaces.
    pub clients: Vec<Netns>,
    /// The server namespace.
    pub server_ns: Netns,
    /// CA, server certificates (`server`, `server_nosan`, `server_noeku`),
    /// `client1`..`clientN` (N: 3 or the number of client namespaces, the
    /// larger), a foreign CA and client, two CRLs.
    pub pki: Pki,
    /// Configs, keys and process logs (kept when a test fails).
    pub dir: TestDir,
    ferrovpn: String,
}

impl Lab {
    /// Fail loudly unless root with every tool; then build the lab with
    /// `clients` client namespaces and check the underlay works. `tag` names
    /// the namespaces and the directory; `ferrovpn` is the binary under test
    /// (`env!("CARGO_BIN_EXE_ferrovpn")`).
    pub fn new(tag: &str, clients: usize, ferrovpn: &str) -> Lab {
        let mut tools = TOOLS.to_vec();
        tools.push(ferrovpn);
        require_root_and_tools(&tools);
        let dir = TestDir::new(tag).unwrap();
        let pki = Pki::generate(
            &dir.join("pki"),
            &PkiOptions {
                clients: PKI_CLIENTS.max(clients),
                ..PkiOptions::default()
            },
        )
        .unwrap();
        let server_ns = Netns::unique(&format!("{tag}-s")).unwrap();
        let mut lab = Lab {
            resolv_confs: Vec::new(),
            veths: Vec::new(),
            clients: Vec::new(),
            server_ns,
            pki,
            dir,
            ferrovpn: ferrovpn.to_string(),
        };
        for i in 0..clients {
            let ns = Netns::unique(&format!("{tag}-c{i}")).unwrap();
            let veth = VethPair::new(
                &lab.server_ns,
                &format!("{}/24", Lab::server_underlay(i)),
                &ns,
                &format!("{}/24", Lab::client_underlay(i)),
            )
            .unwrap();
            // The underlay works before any VPN runs.
            ping(&ns, &Lab::server_underlay(i), 1, Duration::from_secs(5)).unwrap();
            // Before any client runs: pushed DNS must never reach the host's file.
            lab.resolv_confs
                .push(NetnsResolvConf::new(&ns, CLIENT_RESOLV_CONF).unwrap());
            lab.clients.push(ns);
            lab.veths.push(veth);
        }
        lab
    }

    /// The server's underlay address as seen from client namespace `i`.
    pub fn server_underlay(i: usize) -> String {
        format!("10.210.{}.1", i + 1)
    }

    /// Client namespace `i`'s underlay address.
    pub fn client_underlay(i: usize) -> String {
        format!("10.210.{}.2", i + 1)
    }

    /// The server's IPv6 underlay address as seen from client namespace `i`
    /// (after [`Lab::enable_ipv6`]).
    pub fn server_underlay6(i: usize) -> String {
        format!("fd00:210:{}::1", i + 1)
    }

    /// Client namespace `i`'s IPv6 underlay address (after [`Lab::enable_ipv6`]).
    pub fn client_underlay6(i: usize) -> String {
        format!("fd00:210:{}::2", i + 1)
    }

    /// Turn IPv6 on in every namespace of the lab (a host may default it
    /// off) and give each veth pair an IPv6 underlay too:
    /// [`Lab::server_underlay6`] / [`Lab::client_underlay6`] in a /64,
    /// without duplicate address detection so they work at once. Checks the
    /// IPv6 underlay answers.
    pub fn enable_ipv6(&self) {
        for (i, (veth, ns)) in self.veths.iter().zip(&self.clients).enumerate() {
            self.server_ns
                .enable_ipv6_on(&veth.if_a, &Lab::server_underlay6(i))
                .and_then(|()| ns.enable_ipv6_on(&veth.if_b, &Lab::client_underlay6(i)))
                .unwrap_or_else(|e| panic!("{e:#}"));
            ping(ns, &Lab::server_underlay6(i), 1, Duration::from_secs(5)).unwrap();
        }
    }

    /// The server's UDP address as seen from client namespace `i`.
    pub fn server_addr(i: usize) -> SocketAddr {
        format!("{}:{SERVER_PORT}", Lab::server_underlay(i))
            .parse()
            .unwrap()
    }

    /// The ferrovpn binary under test.
    pub fn ferrovpn_bin(&self) -> &str {
        &self.ferrovpn
    }

    /// The text of client namespace `i`'s `/etc/resolv.conf` (what
    /// `ip netns exec` shows its processes in place of the host's file).
    pub fn resolv_conf(&self, i: usize) -> String {
        std::fs::read_to_string(self.resolv_confs[i].path()).unwrap()
    }

    /// A fresh static key (tls-auth / tls-crypt) file `name` in the lab dir.
    pub fn static_key(&self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        write_static_key(&path).unwrap();
        path
    }

    /// `tls-crypt` with a fresh key (a new file on every call).
    pub fn tls_crypt(&self) -> Wrap {
        Wrap::TlsCrypt(Material::File(
            self.static_key(&format!("{}.key", unique_name("tls-crypt"))),
        ))
    }

    /// `tls-auth` with a fresh key (a new file on every call).
    pub fn tls_auth(&self) -> Wrap {
        Wrap::TlsAuth(Material::File(
            self.static_key(&format!("{}.key", unique_name("tls-auth"))),
        ))
    }

    /// Server config on [`SERVER_DEV`] with the lab's server certificate.
    pub fn server_conf(&self, wrap: Wrap, cipher: Cipher) -> ServerConf {
        ServerConf::new(&self.pki, SERVER_DEV, wrap, cipher)
    }

    /// Config of a client in namespace `i` with `who`'s certificate on
    /// tunnel device `dev`.
    pub fn client_conf(
        &self,
        i: usize,
        who: &CertKey,
        dev: &str,
        wrap: Wrap,
        cipher: Cipher,
    ) -> ClientConf {
        ClientConf::new(&self.pki, who, &Lab::server_underlay(i), dev, wrap, cipher)
    }

    /// The config text of a client in namespace 0 on [`CLIENT_DEV`] that
    /// proves who it is without a certificate (`ca` only, no `cert`/`key`:
    /// a password, or credentials asked over management), then `extra`.
    pub fn certless_client_text<S: AsRef<str>>(
        &self,
        wrap: Wrap,
        cipher: Cipher,
        extra: impl IntoIterator<Item = S>,
    ) -> String {
        let cc = self.client_conf(0, &self.pki.clients[0], CLIENT_DEV, wrap, cipher);
        let mut text: String = openvpn_client_conf(&cc)
            .lines()
            .filter(|l| !l.starts_with("cert ") && !l.starts_with("key "))
            .map(|l| format!("{l}\n"))
            .collect();
        for l in extra {
            text.push_str(l.as_ref());
            text.push('\n');
        }
        text
    }

    /// A server config and the config of a client in namespace 0 with
    /// `client1`'s certificate on [`CLIENT_DEV`].
    pub fn confs(&self, wrap: Wrap, cipher: Cipher) -> (ServerConf, ClientConf) {
        let client = self.client_conf(0, &self.pki.clients[0], CLIENT_DEV, wrap.clone(), cipher);
        (self.server_conf(wrap, cipher), client)
    }

    /// [`Lab::confs`] with a fresh tls-crypt key and AES-256-GCM: the profile
    /// most tests start from.
    pub fn tls_crypt_confs(&self) -> (ServerConf, ClientConf) {
        self.confs(self.tls_crypt(), Cipher::Aes256Gcm)
    }

    /// [`Lab::tls_crypt_confs`] over TCP (`tcp-server` / `tcp-client`).
    pub fn tcp_confs(&self) -> (ServerConf, ClientConf) {
        let (mut sc, mut cc) = self.tls_crypt_confs();
        sc.transport = Transport::Tcp;
        cc.transport = Transport::Tcp;
        (sc, cc)
    }

    /// [`Lab::tls_crypt_confs`]'s server, checking passwords with an
    /// `auth-user-pass-verify` script (via-file) that accepts only `user`
    /// with `password` and appends each username it is asked about to a
    /// file; clients need no certificate (`verify-client-cert none`,
    /// `username-as-common-name`), keepalive 1 10. Returns the config and
    /// the path of the script's call log.
    pub fn password_server_conf(&self, user: &str, password: &str) -> (ServerConf, PathBuf) {
        let calls = self.dir.join("verify-calls");
        let script = crate::sh_script(
            self.dir.join("verify.sh"),
            &format!(
                "echo \"$(head -n1 \"$1\")\" >> '{calls}'\n\
                 [ \"$(head -n1 \"$1\")\" = '{user}' ] && [ \"$(sed -n 2p \"$1\")\" = '{password}' ]\n",
                calls = calls.display()
            ),
        );
        let (mut sc, _) = self.tls_crypt_confs();
        sc.keepalive = Some((1, 10));
        sc.extra.extend([
            "script-security 2".to_string(),
            format!("auth-user-pass-verify {} via-file", script.display()),
            "verify-client-cert none".to_string(),
            "username-as-common-name".to_string(),
        ]);
        (sc, calls)
    }

    /// The client config line `auth-user-pass FILE`, FILE being
    /// `<name>.pass` in the lab's directory, written here with `user` and
    /// `password` on a line each.
    pub fn auth_user_pass(&self, name: &str, user: &str, password: &str) -> String {
        let file = self.dir.join(format!("{name}.pass"));
        std::fs::write(&file, format!("{user}\n{password}\n"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        format!("auth-user-pass {}", file.display())
    }

    /// Add `10.210.<i+1>.<k>/24` for every `k` in `hosts` to client
    /// namespace `i`'s underlay (in one `ip -batch`): more source
    /// addresses on the same link, for tests of per-address limits.
    pub fn add_client_addresses(&self, i: usize, hosts: std::ops::Range<u8>) {
        let batch: String = hosts
            .map(|k| {
                format!(
                    "addr add 10.210.{}.{k}/24 dev {}\n",
                    i + 1,
                    self.veths[i].if_b
                )
            })
            .collect();
        let path = self.dir.join(format!("{}.batch", unique_name("addrs")));
        std::fs::write(&path, batch).unwrap();
        self.clients[i]
            .exec(&["ip", "-batch", path.to_str().unwrap()])
            .unwrap();
    }

    /// Run `script` with python3 in client namespace `i` (written to
    /// `<name>.py`); returns the process once its output holds `ready`.
    pub fn python(&self, i: usize, name: &str, script: &str, ready: &str) -> Proc {
        let path = self.dir.join(format!("{name}.py"));
        std::fs::write(&path, script).unwrap();
        let mut p = Proc::spawn_in(
            &self.clients[i],
            name,
            self.dir.path(),
            "python3",
            &[path.as_os_str()],
        )
        .unwrap();
        if let Err(e) = p.wait_for_log_line(ready, CONNECT_TIMEOUT) {
            panic!("{e:#}\n{}", p.log_tail(20));
        }
        p
    }

    /// Write `text` to `<name>.conf` and run `imp --config` on it in `ns`;
    /// not waited on. A name used before in this lab gets a `-2`, `-3`, ...
    /// suffix, so a restarted process never overwrites the old log.
    pub fn spawn(&self, ns: &Netns, name: &str, imp: Implementation, text: &str) -> Proc {
        let name = self.fresh_name(name);
        let conf = self.dir.join(format!("{name}.conf"));
        std::fs::write(&conf, text).unwrap();
        let program = match imp {
            Implementation::Stock => "openvpn",
            Implementation::Ferrovpn => &self.ferrovpn,
        };
        Proc::spawn_in(
            ns,
            &name,
            self.dir.path(),
            program,
            &["--config".as_ref(), conf.as_os_str()],
        )
        .unwrap()
    }

    fn fresh_name(&self, name: &str) -> String {
        let taken = |n: &str| self.dir.join(format!("{n}.log")).exists();
        if !taken(name) {
            return name.to_string();
        }
        (2..)
            .map(|k| format!("{name}-{k}"))
            .find(|n| !taken(n))
            .expect("an unused name")
    }

    /// A server from `sc` in the server namespace, waited on until it is
    /// ready (ferrovpn: listening; stock: its initialization completed).
    pub fn server(&self, imp: Implementation, sc: &ServerConf) -> Proc {
        let (name, ready) = match imp {
            Implementation::Stock => ("openvpn-server", UP),
            Implementation::Ferrovpn => ("ferrovpn-server", LISTENING),
        };
        let mut p = self.spawn(&self.server_ns, name, imp, &openvpn_server_conf(sc));
        p.wait_for_log_line(ready, CONNECT_TIMEOUT).unwrap();
        p
    }

    /// `ferrovpn` server from `sc`, waited on until it listens.
    pub fn ferrovpn_server(&self, sc: &ServerConf) -> Proc {
        self.server(Implementation::Ferrovpn, sc)
    }

    /// Stock `openvpn` server from `sc`, waited on until it is up.
    pub fn stock_server(&self, sc: &ServerConf) -> Proc {
        self.server(Implementation::Stock, sc)
    }

    /// A client from `cc` in client namespace `i`; not waited on.
    pub fn client(&self, imp: Implementation, i: usize, name: &str, cc: &ClientConf) -> Proc {
        self.spawn(&self.clients[i], name, imp, &openvpn_client_conf(cc))
    }

    /// Stock `openvpn` client from `cc` in client namespace `i`; not waited on.
    pub fn stock_client(&self, i: usize, name: &str, cc: &ClientConf) -> Proc {
        self.client(Implementation::Stock, i, name, cc)
    }

    /// `ferrovpn` client from `cc` in client namespace `i`; not waited on.
    pub fn ferrovpn_client(&self, i: usize, name: &str, cc: &ClientConf) -> Proc {
        self.client(Implementation::Ferrovpn, i, name, cc)
    }

    /// A client from `cc` in namespace `i`, waited on until it is up; on
    /// failure the panic shows both logs.
    pub fn client_up(
        &self,
        imp: Implementation,
        i: usize,
        name: &str,
        cc: &ClientConf,
        server: &Proc,
    ) -> Proc {
        let mut p = self.client(imp, i, name, cc);
        if let Err(e) = p.wait_for_log_line(UP, CONNECT_TIMEOUT) {
            panic!("{e:#}\n{}", log_tails(&p, server));
        }
        p
    }

    /// One client config per client namespace: namespace `i` with
    /// certificate `client<i+1>` on [`CLIENT_DEV`].
    pub fn client_confs(&self, wrap: &Wrap, cipher: Cipher) -> Vec<ClientConf> {
        (0..self.clients.len())
            .map(|i| self.client_conf(i, &self.pki.clients[i], CLIENT_DEV, wrap.clone(), cipher))
            .collect()
    }

    /// Stock `openvpn` clients from `ccs`, `ccs[i]` in namespace `i`, all
    /// started before any is waited on, then each waited on until it is up
    /// with its cipher ([`wait_up`]).
    pub fn stock_clients_up(&self, ccs: &[ClientConf], server: &Proc) -> Vec<Proc> {
        let mut clients: Vec<Proc> = ccs
            .iter()
            .enumerate()
            .map(|(i, cc)| self.stock_client(i, &format!("openvpn-client-{i}"), cc))
            .collect();
        for (p, cc) in clients.iter_mut().zip(ccs) {
            wait_up(p, server, cc.cipher);
        }
        clients
    }

    /// Stock `openvpn` client from `cc` in namespace `i`, waited on until it
    /// is up with `cc`'s cipher ([`wait_up`]).
    pub fn stock_client_up(&self, i: usize, name: &str, cc: &ClientConf, server: &Proc) -> Proc {
        let mut p = self.stock_client(i, name, cc);
        wait_up(&mut p, server, cc.cipher);
        p
    }

    /// Ping the server's tunnel address from client namespace `i` and push
    /// 2 s of iperf3 through the tunnel; `what` labels the figures printed.
    pub fn ping_and_iperf3(&self, i: usize, what: &str, client: &Proc, server: &Proc) {
        let p = ping(&self.clients[i], SERVER_TUN, 5, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{what}: {e:#}\n{}", log_tails(client, server)));
        assert!(
            p.received >= 4,
            "{what}: {p:?}\n{}",
            log_tails(client, server)
        );
        let r = self.iperf3(i, 2);
        eprintln!(
            "{what}: {:.3} Gbit/s, {} bytes, {} retransmits, ping avg {:.3} ms",
            r.gbps, r.bytes, r.retransmits, p.avg_ms
        );
        assert!(r.bytes > 1_000_000, "{what}: {r:?}");
        assert!(r.gbps > 0.01, "{what}: {r:?}");
    }

    /// Three pings from client namespace `i` to the server's tunnel
    /// address; at least two must come back (the panic shows both logs).
    pub fn ping_server(&self, i: usize, client: &Proc, server: &Proc) {
        let p = ping(&self.clients[i], SERVER_TUN, 3, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", log_tails(client, server)));
        assert!(p.received >= 2, "{p:?}\n{}", log_tails(client, server));
    }

    /// 2 s of iperf3 each way between client namespace 0 and the server,
    /// through the tunnel, whose client end is `client_tun`; each direction
    /// must carry over 1 MB. `what` labels the figures printed and the
    /// failures (which show both logs).
    pub fn iperf3_both_ways(&self, what: &str, client_tun: &str, client: &Proc, server: &Proc) {
        for (from, to, addr, dir) in [
            (
                &self.clients[0],
                &self.server_ns,
                SERVER_TUN,
                "client to server",
            ),
            (
                &self.server_ns,
                &self.clients[0],
                client_tun,
                "server to client",
            ),
        ] {
            let r = iperf3_report(from, to, addr, 2, 1)
                .unwrap_or_else(|e| panic!("{what}, {dir}: {e:#}\n{}", log_tails(client, server)));
            eprintln!(
                "{what}, {dir}: {:.3} Gbit/s, {} bytes, {} retransmits",
                r.gbps, r.bytes, r.retransmits
            );
            assert!(
                r.bytes > 1_000_000,
                "{what}, {dir}: {r:?}\n{}",
                log_tails(client, server)
            );
        }
    }

    /// `seconds` of one-stream TCP iperf3 from client namespace `i` to the
    /// server's tunnel address (per-second bytes in `intervals`).
    pub fn iperf3(&self, i: usize, seconds: u32) -> Iperf3Report {
        iperf3_report(&self.clients[i], &self.server_ns, SERVER_TUN, seconds, 1)
            .unwrap_or_else(|e| panic!("iperf3 through the tunnel: {e:#}"))
    }
}

/// Wait for a stock client to come up and check that it negotiated `cipher`
/// (its "Data Channel" log line names it).
pub fn wait_up(client: &mut Proc, server: &Proc, cipher: Cipher) {
    if let Err(e) = client.wait_for_log_line(UP, CONNECT_TIMEOUT) {
        panic!("{e:#}\n{}", log_tails(client, server));
    }
    let log = client.log();
    assert!(
        !log.contains("Initialization Sequence Completed With Errors"),
        "{}",
        log_tails(client, server)
    );
    assert!(
        log.lines()
            .any(|l| l.contains("Data Channel") && l.contains(cipher.name())),
        "client did not negotiate {}:\n{}",
        cipher.name(),
        log_tails(client, server)
    );
}

/// The last 40 lines of both logs, for failure messages.
pub fn log_tails(a: &Proc, b: &Proc) -> String {
    format!(
        "--- {} ---\n{}\n--- {} ---\n{}",
        a.name(),
        a.log_tail(40),
        b.name(),
        b.log_tail(40)
    )
}

/// ping `addr` from `ns` (5 echoes, 4 answered at least) and 2 s of iperf3
/// each way between `ns` and `server_ns` at `addr`.
pub fn ping_and_iperf3_both_ways(
    what: &str,
    ns: &Netns,
    server_ns: &Netns,
    addr: &str,
    a: &Proc,
    b: &Proc,
) {
    let p = ping(ns, addr, 5, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{what}: ping {addr}: {e:#}\n{}", log_tails(a, b)));
    assert!(p.received >= 4, "{what}: {p:?}\n{}", log_tails(a, b));
    for direction in [Direction::Upload, Direction::Download] {
        let (reports, ()) = iperf3_all_while(&[ns], server_ns, addr, 2, direction, || ())
            .unwrap_or_else(|e| {
                panic!(
                    "{what}: iperf3 {}: {e:#}\n{}",
                    direction.name(),
                    log_tails(a, b)
                )
            });
        let r = &reports[0];
        eprintln!(
            "{what} {}: {:.3} Gbit/s, {} bytes, {} retransmits, ping avg {:.3} ms",
            direction.name(),
            r.gbps,
            r.bytes,
            r.retransmits,
            p.avg_ms
        );
        assert!(r.bytes > 1_000_000, "{what} {}: {r:?}", direction.name());
    }
}

/// Wait up to [`CONNECT_TIMEOUT`] for `p` to log a line containing
/// `pattern`; on failure the panic shows `p`'s and `other`'s logs.
pub fn wait_log(p: &mut Proc, pattern: &str, other: &Proc) {
    if let Err(e) = p.wait_for_log_line(pattern, CONNECT_TIMEOUT) {
        panic!("{e:#}\n{}", log_tails(p, other));
    }
}

/// Lines of `log` containing `pattern`.
pub fn count_lines(log: &str, pattern: &str) -> usize {
    log.lines().filter(|l| l.contains(pattern)).count()
}

/// Wait until `p`'s log holds `n` lines containing `pattern`.
pub fn wait_for_count(p: &Proc, pattern: &str, n: usize, timeout: Duration) -> bool {
    wait_until(timeout, Duration::from_millis(50), || {
        count_lines(&p.log(), pattern) >= n
    })
}

/// Send `signal` (`-TERM`, `-KILL`, `-USR1`, ...) to `p`.
pub fn kill(signal: &str, p: &Proc) {
    let st = Command::new("kill")
        .args([signal, &p.pid().to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "kill {signal} {}", p.pid());
}

/// Wait up to `grace` for `p` to exit; panics with its log otherwise.
pub fn wait_exit(p: &mut Proc, grace: Duration) -> ExitStatus {
    let mut status = None;
    let exited = wait_until(grace, Duration::from_millis(20), || {
        status = p.try_exit();
        status.is_some()
    });
    assert!(
        exited,
        "{} did not exit within {grace:?}:\n{}",
        p.name(),
        p.log_tail(40)
    );
    status.expect("exited")
}

/// SIGTERM `p` and wait up to `grace` for it to exit on its own.
pub fn terminate(p: &mut Proc, grace: Duration) -> ExitStatus {
    kill("-TERM", p);
    wait_exit(p, grace)
}

/// SIGKILL `p` and wait until it is gone.
pub fn kill_and_reap(p: &mut Proc) {
    kill("-KILL", p);
    wait_exit(p, Duration::from_secs(5));
}

/// The tunnel address a ferrovpn server announced for `cn` (its latest
/// "client CN connected: IP, ..." line).
pub fn connected_ip(server: &Proc, cn: &str) -> Option<String> {
    let pattern = format!("client {cn} connected: ");
    server.log().lines().rev().find_map(|l| {
        let rest = &l[l.find(&pattern)? + pattern.len()..];
        rest.split(',').next().map(|s| s.trim().to_owned())
    })
}
