//! Which pool address a client gets, without `ifconfig-pool-persist`: the
//! same scripted sequence of stock 2.6 clients connecting and leaving runs
//! against the stock 2.6 server and against ferrovpn, and each client must
//! get the same address from both. 2.6's rule (pool.c): the address the
//! client's common name last held if it is free, else the free address
//! given back longest ago (never used first). The pool is three addresses
//! (`ifconfig-pool 10.8.0.2 10.8.0.4`) so every address is reused.
//!
//! Needs root, `openvpn`, `iperf3`, `ip`, `ping`, `ss` and `/dev/net/tun`;
//! fails loudly without them. Every wait has a deadline.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrovpn_testkit::Implementation::{self, Ferrovpn, Stock};
use ferrovpn_testkit::lab::{CLIENT_DEV, CONNECT_TIMEOUT, count_lines, log_tails, terminate};
use ferrovpn_testkit::{Cipher, Lab, Material, Proc, Wrap, wait_until};

const FERROVPN: &str = env!("CARGO_BIN_EXE_ferrovpn");

/// What the client pushed `ifconfig` says: the address the server gave it.
fn pushed_address(client: &Proc) -> Option<String> {
    let log = client.log();
    let line = log.lines().find(|l| l.contains("PUSH_REPLY"))?;
    let rest = &line[line.find(",ifconfig ")? + ",ifconfig ".len()..];
    rest.split(' ').next().map(str::to_owned)
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

struct Run<'a> {
    lab: &'a Lab,
    imp: Implementation,
    server: Proc,
    clients: Vec<Option<Proc>>,
    /// How many times each client has gone (its server log lines).
    gone: Vec<usize>,
    wrap: Wrap,
}

impl Run<'_> {
    /// The server's log line for client `cn` going away.
    fn gone_pattern(&self, cn: &str) -> String {
        match self.imp {
            Stock => format!("{cn}/"),
            Ferrovpn => format!("client {cn} disconnected"),
        }
    }

    fn gone_count(&self, cn: &str) -> usize {
        let pattern = self.gone_pattern(cn);
        let log = self.server.log();
        match self.imp {
            Stock => log
                .lines()
                .filter(|l| l.contains(&pattern) && l.contains("client-instance exiting"))
                .count(),
            Ferrovpn => count_lines(&log, &pattern),
        }
    }

    /// Client `n` (certificate `client<n>`, namespace `n-1`) connects; the
    /// address the server gave it.
    fn up(&mut self, n: usize) -> String {
        let i = n - 1;
        let cipher = Cipher::Aes256Gcm;
        let mut cc = self.lab.client_conf(
            i,
            &self.lab.pki.clients[i],
            CLIENT_DEV,
            self.wrap.clone(),
            cipher,
        );
        cc.extra.push("explicit-exit-notify 1".into());
        let mut p = self.lab.stock_client(i, &format!("client{n}"), &cc);
        if let Err(e) = p.wait_for_log_line("Initialization Sequence Completed", CONNECT_TIMEOUT) {
            panic!("{e:#}\n{}", log_tails(&p, &self.server));
        }
        let ip = pushed_address(&p)
            .unwrap_or_else(|| panic!("no pushed ifconfig\n{}", log_tails(&p, &self.server)));
        self.clients[i] = Some(p);
        ip
    }

    /// Client `n` leaves (explicit-exit-notify); returns once the server
    /// has dropped it and the clock has moved to the next second, so the
    /// next release is in a later second (2.6 counts whole seconds).
    fn down(&mut self, n: usize) {
        let i = n - 1;
        let cn = format!("client{n}");
        let mut p = self.clients[i].take().expect("client is up");
        terminate(&mut p, Duration::from_secs(10));
        self.gone[i] += 1;
        let want = self.gone[i];
        assert!(
            wait_until(CONNECT_TIMEOUT, Duration::from_millis(20), || self
                .gone_count(&cn)
                >= want),
            "the server did not drop {cn}\n{}",
            log_tails(&p, &self.server)
        );
        let seen = unix_secs();
        assert!(wait_until(
            Duration::from_secs(3),
            Duration::from_millis(20),
            || unix_secs() > seen
        ));
    }
}

fn sequence(imp: Implementation, tag: &str) {
    let lab = Lab::new(tag, 4, FERROVPN);
    let wrap = Wrap::TlsCrypt(Material::File(lab.static_key("tc.key")));
    let mut sc = lab.server_conf(wrap.clone(), Cipher::Aes256Gcm);
    sc.network = "10.8.0.0 255.255.255.0 nopool".into();
    sc.extra
        .push("ifconfig-pool 10.8.0.2 10.8.0.4 255.255.255.0".into());
    let server = lab.server(imp, &sc);
    let mut run = Run {
        lab: &lab,
        imp,
        server,
        clients: (0..4).map(|_| None).collect(),
        gone: vec![0; 4],
        wrap,
    };
    let mut got = Vec::new();
    let mut up = |run: &mut Run, n: usize| {
        let ip = run.up(n);
        got.push(format!("client{n} {ip}"));
    };
    up(&mut run, 1);
    up(&mut run, 2);
    up(&mut run, 3);
    run.down(3);
    run.down(2);
    run.down(1);
    // client2 comes back to its own address: not the lowest free one
    // (client1's), not the one given back longest ago (client3's).
    up(&mut run, 2);
    // A newcomer gets the address given back longest ago (client3's).
    up(&mut run, 4);
    // client3's address is client4's now: client3 gets the only free one.
    up(&mut run, 3);
    run.down(4);
    // client1's address went to client3: it gets client4's.
    up(&mut run, 1);
    assert_eq!(
        got,
        [
            "client1 10.8.0.2",
            "client2 10.8.0.3",
            "client3 10.8.0.4",
            "client2 10.8.0.3",
            "client4 10.8.0.4",
            "client3 10.8.0.2",
            "client1 10.8.0.4",
        ],
        "{:?} server:\n{}",
        imp,
        run.server.log_tail(60)
    );
}

/// The reference: what the stock 2.6 server hands out.
#[test]
fn stock_server_pool_sequence() {
    sequence(Stock, "pool-stock");
}

/// ferrovpn hands out the same addresses in the same sequence.
#[test]
fn ferrovpn_server_pool_sequence_matches_stock() {
    sequence(Ferrovpn, "pool-fv");
}
