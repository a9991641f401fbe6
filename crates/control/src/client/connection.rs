//! One connection to one server: the session loop, keepalive, renegotiation
//! on packet-id exhaustion, the goodbye on shutdown and the teardown.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use ferrovpn_dataplane::{DataPlane, PeerTable, UpEvent};
use ferrovpn_proto::data::{DataKeys, OCC_EXIT, OCC_MAGIC, PING_PAYLOAD, Side};
use ferrovpn_proto::session::{Event, Session};
use tracing::{debug, info, warn};

use super::apply::apply_push;
use super::{Applied, ClientSettings, Conn, Ended, unix_now};
use crate::netconfig;
use crate::status::{self, StatusSettings};

#[allow(clippy::too_many_arguments)]
pub(super) async fn run_connection(
    s: &ClientSettings,
    dp: &DataPlane,
    peers: &PeerTable,
    socket: &UdpSocket,
    up: &mut tokio::sync::mpsc::Receiver<UpEvent>,
    server: SocketAddr,
    shutdown: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    restart: &tokio::sync::Notify,
    was_connected: &mut bool,
) -> Ended {
    let now = Instant::now();
    let session = match Session::connect(s.session.clone(), now, unix_now()) {
        Ok(v) => v,
        Err(e) => return Ended::Fatal(format!("cannot start session: {e}")),
    };
    let mut c = Conn {
        session,
        server,
        peer_id: None,
        applied: Applied::default(),
        ping: s.ping,
        ping_restart: s.ping_restart,
        ping_exit: s.ping_exit,
        cc_exit: false,
        last_control_rx: now,
        connected: false,
    };
    let mut next_housekeeping = now + Duration::from_millis(500);
    let mut next_status = now;
    let ended = loop {
        if let Some(end) = drain(s, dp, peers, socket, &mut c) {
            break end;
        }
        let deadline = c
            .session
            .poll_timeout()
            .map_or(next_housekeeping, |t| t.min(next_housekeeping));
        tokio::select! {
            ev = up.recv() => match ev {
                Some(UpEvent::Control { from, packet }) if from == c.server => {
                    c.last_control_rx = Instant::now();
                    c.session.handle_packet(Instant::now(), &packet);
                }
                Some(UpEvent::Control { from, .. }) => debug!("ignoring control packet from {from}"),
                Some(UpEvent::Occ { payload, .. }) => {
                    if payload.get(OCC_MAGIC.len()) == Some(&OCC_EXIT) {
                        break Ended::ServerLeft("server sent exit notification".into());
                    }
                }
                Some(UpEvent::Float { .. }) => {}
                None => break Ended::Fatal("data plane stopped".into()),
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                c.session.handle_timeout(now);
                if now >= next_housekeeping {
                    next_housekeeping = now + Duration::from_millis(500);
                    if let Some(st) = &s.status
                        && now >= next_status
                    {
                        next_status = now + st.interval;
                        write_status(st, peers, &c);
                    }
                    if let Some(end) = housekeeping(dp, peers, &mut c, now) {
                        break end;
                    }
                }
            }
            _ = restart.notified() => break Ended::Restart,
            _ = shutdown.as_mut() => {
                say_goodbye(s, dp, socket, &mut c).await;
                break Ended::Shutdown;
            }
        }
    };
    *was_connected = c.connected;
    teardown(dp, peers, &mut c);
    ended
}

/// The client's status file: tunnel bytes of the current connection.
fn write_status(st: &StatusSettings, peers: &PeerTable, c: &Conn) {
    let (read, written) = c
        .peer_id
        .and_then(|id| peers.peer_stats(id))
        .map_or((0, 0), |s| (s.tx_bytes, s.rx_bytes));
    let text = status::render_client(unix_now(), read, written);
    if let Err(e) = status::write_atomically(&st.path, &text) {
        warn!("status file {}: {e}", st.path.display());
    }
}

fn housekeeping(dp: &DataPlane, peers: &PeerTable, c: &mut Conn, now: Instant) -> Option<Ended> {
    let peer_id = c.peer_id?;
    let stats = peers.peer_stats(peer_id)?;
    let rx_idle = stats
        .rx_idle()
        .min(now.saturating_duration_since(c.last_control_rx));
    if let Some(limit) = c.ping_exit
        && c.connected
        && rx_idle >= limit
    {
        return Some(Ended::Exit(format!(
            "inactivity timeout (ping-exit {}s)",
            limit.as_secs()
        )));
    }
    if c.connected && rx_idle >= c.ping_restart {
        return Some(Ended::Reconnect(format!(
            "inactivity timeout (ping-restart {}s)",
            c.ping_restart.as_secs()
        )));
    }
    // The data plane's packet ids for the current key are running out:
    // renegotiate before they do (the server side does the same).
    if stats.needs_renegotiation && c.session.is_established() {
        match c.session.start_renegotiation(now) {
            Ok(()) => info!("renegotiating: packet ids of the current key running out"),
            Err(e) => debug!("renegotiation not started: {e}"),
        }
    }
    if let Some(ping) = c.ping
        && c.connected
        && stats.tx_idle() >= ping
        && let Err(e) = dp.send_data(peer_id, &PING_PAYLOAD)
    {
        debug!("keepalive ping not sent: {e}");
    }
    None
}

/// Send session output and act on session events. Returns how the connection ended, if it did.
fn drain(
    s: &ClientSettings,
    dp: &DataPlane,
    peers: &PeerTable,
    socket: &UdpSocket,
    c: &mut Conn,
) -> Option<Ended> {
    loop {
        while let Some(pkt) = c.session.poll_transmit() {
            if let Err(e) = socket.send_to(&pkt, c.server) {
                debug!("control send to {} failed: {e}", c.server);
            }
        }
        let ev = c.session.poll_event()?;
        match ev {
            Event::PushReply(reply) => {
                if let Err(e) = apply_push(s, dp, peers, c, &reply) {
                    warn!("cannot apply push reply: {e:#}");
                    return Some(Ended::Reconnect(format!(
                        "push reply not applicable: {e:#}"
                    )));
                }
            }
            Event::KeysReady {
                key_id,
                cipher,
                block,
            } => {
                let Some(peer_id) = c.peer_id else {
                    return Some(Ended::Reconnect("keys before push reply".into()));
                };
                peers.install_key(
                    peer_id,
                    key_id,
                    DataKeys::from_key_block(cipher, &block, Side::Client),
                );
            }
            Event::SendKey { key_id } => {
                if let Some(peer_id) = c.peer_id {
                    peers.set_send_key(peer_id, key_id);
                    if !c.connected {
                        c.connected = true;
                        info!("Initialization Sequence Completed");
                    }
                }
            }
            Event::KeyRetired { key_id } => {
                if let Some(peer_id) = c.peer_id {
                    peers.retire_key(peer_id, key_id);
                }
            }
            Event::AuthFailed(m) => return Some(Ended::Fatal(format!("AUTH_FAILED: {m}"))),
            Event::Restart {
                halt: true,
                message,
            } => return Some(Ended::Fatal(format!("server sent HALT {message}"))),
            Event::Restart {
                halt: false,
                message,
            } => {
                return Some(Ended::ServerLeft(format!("server sent RESTART {message}")));
            }
            Event::PeerExit => return Some(Ended::ServerLeft("server announced exit".into())),
            Event::Closed(reason) => return Some(Ended::Reconnect(reason)),
            Event::ClientAuthenticated { .. } | Event::PushRequested => {}
        }
    }
}

async fn say_goodbye(s: &ClientSettings, dp: &DataPlane, socket: &UdpSocket, c: &mut Conn) {
    let (Some(peer_id), Some(n)) = (c.peer_id, s.explicit_exit_notify) else {
        return;
    };
    if c.cc_exit {
        c.session.send_control_message(Instant::now(), "EXIT");
        while let Some(pkt) = c.session.poll_transmit() {
            let _ = socket.send_to(&pkt, c.server);
        }
    } else {
        let mut msg = OCC_MAGIC.to_vec();
        msg.push(OCC_EXIT);
        // 2.6 repeats the OCC exit about once a second for n seconds; we send
        // n copies spaced briefly so shutdown stays quick.
        for _ in 0..n.clamp(1, 5) {
            let _ = dp.send_data(peer_id, &msg);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn teardown(dp: &DataPlane, peers: &PeerTable, c: &mut Conn) {
    if let Some(peer_id) = c.peer_id.take() {
        peers.set_client_default(None);
        peers.remove_peer(peer_id);
    }
    for (net, mask) in c.applied.routes.drain(..) {
        netconfig::del_route(net, mask);
    }
    if let Some(h) = c.applied.host_route.take() {
        netconfig::del_route(h, Ipv4Addr::new(255, 255, 255, 255));
    }
    if std::mem::take(&mut c.applied.addresses)
        && let Err(e) = netconfig::flush_addresses(dp.tun_name())
    {
        debug!("{e:#}");
    }
}
