//! A two-namespace lab for interop tests: a server namespace and a client
//! namespace joined by veth (10.203.0.1 / 10.203.0.2), a throwaway PKI, a
//! scratch directory, and starters for stock `openvpn` and `ferrovpn` on
//! either side from one config text ([`openvpn_server_conf`] /
//! [`openvpn_client_conf`]).
//!
//! Declare the processes after the lab: they drop (and are killed) before
//! the namespaces go.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::conf::{
    Cipher, ClientConf, Material, ServerConf, Wrap, openvpn_client_conf, openvpn_server_conf,
    write_static_key,
};
use crate::env::{TestDir, require_root_and_tools};
use crate::net::ping;
use crate::netns::{Netns, VethPair};
use crate::pki::{Pki, PkiOptions};
use crate::process::Proc;

/// The server's underlay address.
pub const LAB_SERVER_UNDERLAY: &str = "10.203.0.1";
/// The client's underlay address.
pub const LAB_CLIENT_UNDERLAY: &str = "10.203.0.2";
/// What both implementations log once the tunnel is up.
pub const LAB_UP: &str = "Initialization Sequence Completed";

/// Two namespaces, a PKI and a scratch directory.
pub struct Lab {
    // Field order is drop order: the veth goes before its namespaces.
    _veth: VethPair,
    /// Where clients run.
    pub client_ns: Netns,
    /// Where the server runs.
    pub server_ns: Netns,
    pub pki: Pki,
    pub dir: TestDir,
    /// The `ferrovpn` binary to start.
    ferrovpn: PathBuf,
}

impl Lab {
    /// Set the lab up (`tag` names the namespaces and the directory); fails
    /// loudly without root or without `tools` (add `openvpn`, `iperf3`, ...).
    pub fn new(tag: &str, ferrovpn: &Path, tools: &[&str]) -> Result<Lab> {
        require_root_and_tools(tools);
        let dir = TestDir::new(tag)?;
        let pki = Pki::generate(&dir.join("pki"), &PkiOptions::default())?;
        let server_ns = Netns::unique(&format!("{tag}-s"))?;
        let client_ns = Netns::unique(&format!("{tag}-c"))?;
        let veth = VethPair::new(
            &server_ns,
            &format!("{LAB_SERVER_UNDERLAY}/24"),
            &client_ns,
            &format!("{LAB_CLIENT_UNDERLAY}/24"),
        )?;
        ping(&client_ns, LAB_SERVER_UNDERLAY, 1, Duration::from_secs(5))
            .context("the underlay does not work")?;
        Ok(Lab {
            _veth: veth,
            client_ns,
            server_ns,
            pki,
            dir,
            ferrovpn: ferrovpn.to_path_buf(),
        })
    }

    /// Server and client configs (devices `server_dev` / `client_dev`)
    /// sharing a fresh tls-crypt key, AES-256-GCM; the client uses
    /// `client1`'s certificate and the server's underlay address.
    pub fn tls_crypt_confs(
        &self,
        server_dev: &str,
        client_dev: &str,
    ) -> Result<(ServerConf, ClientConf)> {
        let key = self.dir.join("tc.key");
        write_static_key(&key)?;
        let wrap = Wrap::TlsCrypt(Material::File(key));
        let sc = ServerConf::new(&self.pki, server_dev, wrap.clone(), Cipher::Aes256Gcm);
        let cc = ClientConf::new(
            &self.pki,
            &self.pki.clients[0],
            LAB_SERVER_UNDERLAY,
            client_dev,
            wrap,
            Cipher::Aes256Gcm,
        );
        Ok((sc, cc))
    }

    /// Stock `openvpn` server from `sc`, waited on until it is up.
    pub fn stock_server(&self, name: &str, sc: &ServerConf, timeout: Duration) -> Result<Proc> {
        let mut p = self.spawn(&self.server_ns, name, "openvpn", &openvpn_server_conf(sc))?;
        p.wait_for_log_line(LAB_UP, timeout)?;
        Ok(p)
    }

    /// `ferrovpn` server from `sc`, waited on until it listens.
    pub fn ferrovpn_server(&self, name: &str, sc: &ServerConf, timeout: Duration) -> Result<Proc> {
        let bin = self.ferrovpn.to_string_lossy().into_owned();
        let mut p = self.spawn(&self.server_ns, name, &bin, &openvpn_server_conf(sc))?;
        p.wait_for_log_line("server listening", timeout)?;
        Ok(p)
    }

    /// Stock `openvpn` client from `cc`; not waited on.
    pub fn stock_client(&self, name: &str, cc: &ClientConf) -> Result<Proc> {
        self.spawn(&self.client_ns, name, "openvpn", &openvpn_client_conf(cc))
    }

    /// `ferrovpn` client from `cc`; not waited on.
    pub fn ferrovpn_client(&self, name: &str, cc: &ClientConf) -> Result<Proc> {
        let bin = self.ferrovpn.to_string_lossy().into_owned();
        self.spawn(&self.client_ns, name, &bin, &openvpn_client_conf(cc))
    }

    /// Write `conf` to `NAME.conf` and run `prog --config` it in `ns`.
    fn spawn(&self, ns: &Netns, name: &str, prog: &str, conf: &str) -> Result<Proc> {
        let path = self.dir.join(format!("{name}.conf"));
        std::fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))?;
        Proc::spawn_in(
            ns,
            name,
            self.dir.path(),
            prog,
            &["--config".as_ref(), path.as_os_str()],
        )
    }
}
