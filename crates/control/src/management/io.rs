//! Sockets for the management interface: the listener, one task per
//! connection, and the fan-out of notifications.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::{debug, info, warn};

use super::session::{self, LineBuffer, Session, Shared, Step};
use super::{Answer, CLIENT_QUEUE, Listen, MAX_CLIENTS, Notice, Query, Request, lock, reply};

/// A client that takes this long to accept a write is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection waits for the server to answer a query.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

pub(super) struct Context {
    pub password: Option<String>,
    pub client_uid: Option<u32>,
    pub client_gid: Option<u32>,
    pub shared: Arc<Mutex<Shared>>,
    pub requests: mpsc::Sender<Request>,
    pub hold_released: Arc<Notify>,
    pub password_given: Arc<Notify>,
}

pub(super) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    pub async fn bind(listen: &Listen) -> anyhow::Result<Self> {
        Ok(match listen {
            Listen::Tcp(addr) => Listener::Tcp(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("management: cannot listen on {addr}"))?,
            ),
            Listen::Unix(path) => {
                // A socket left by an earlier run would make bind fail.
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    let _ = std::fs::remove_file(path);
                }
                Listener::Unix(
                    UnixListener::bind(path).with_context(|| {
                        format!("management: cannot listen on {}", path.display())
                    })?,
                )
            }
        })
    }
}

/// What the fan-out sends each connection.
enum Broadcast {
    Client(String),
    State(String),
    Log(String),
}

/// Accept connections and hand each the notifications, until the server
/// drops its [`super::Management`].
pub(super) async fn serve(
    listener: Listener,
    mut notices: mpsc::Receiver<Notice>,
    ctx: Arc<Context>,
) {
    let mut clients: Vec<mpsc::Sender<Arc<Broadcast>>> = Vec::new();
    loop {
        tokio::select! {
            accepted = accept(&listener, &ctx) => {
                let Some((stream, peer)) = accepted else { continue };
                clients.retain(|c| !c.is_closed());
                if clients.len() >= MAX_CLIENTS {
                    warn!("management: refusing {peer}: {MAX_CLIENTS} clients already connected");
                    tokio::spawn(refuse(stream));
                    continue;
                }
                info!("management: client connected from {peer}");
                let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
                clients.push(tx);
                tokio::spawn(connection(stream, rx, ctx.clone(), peer));
            }
            notice = notices.recv() => {
                let Some(notice) = notice else { break };
                let b = Arc::new(broadcast(notice, &ctx.shared));
                clients.retain(|c| match c.try_send(b.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        warn!("management: a client does not read its notifications; disconnecting it");
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                });
            }
        }
    }
}

fn broadcast(notice: Notice, shared: &Mutex<Shared>) -> Broadcast {
    match notice {
        Notice::ClientEstablished { cid, env } => {
            Broadcast::Client(reply::client_event("ESTABLISHED", &cid.to_string(), &env))
        }
        Notice::Client { event, args, env } => {
            Broadcast::Client(reply::client_event(event, &args, &env))
        }
        Notice::ClientAddress {
            cid,
            address,
            primary,
        } => Broadcast::Client(reply::line(&format!(
            ">CLIENT:ADDRESS,{cid},{address},{}",
            u8::from(primary)
        ))),
        Notice::State {
            state,
            description,
            local_ip,
            local_ip6,
        } => {
            let entry = reply::state_entry(
                session::unix_now(),
                state,
                &description,
                &local_ip,
                &local_ip6,
            );
            lock(shared).states.push(entry.clone());
            Broadcast::State(reply::line(&format!(">STATE:{entry}")))
        }
        Notice::ClientState(s) => {
            let entry = reply::client_state_entry(session::unix_now(), &s);
            lock(shared).states.push(entry.clone());
            Broadcast::State(reply::line(&format!(">STATE:{entry}")))
        }
        Notice::Line(text) => Broadcast::Client(reply::line(&text)),
        Notice::Block(lines) => Broadcast::Client(lines.iter().map(|l| reply::line(l)).collect()),
        Notice::Log(entry) => {
            let line = reply::line(&format!(">LOG:{entry}"));
            lock(shared).log.push(entry);
            Broadcast::Log(line)
        }
    }
}

/// Both kinds of stream behind one type.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

async fn accept(listener: &Listener, ctx: &Context) -> Option<(Box<dyn Stream>, String)> {
    match listener {
        Listener::Tcp(l) => match l.accept().await {
            Ok((s, peer)) => Some((Box::new(s), peer.to_string())),
            Err(e) => {
                accept_failed(e).await;
                None
            }
        },
        Listener::Unix(l) => match l.accept().await {
            Ok((s, _)) => {
                let cred = s.peer_cred().ok();
                let (uid, gid) = (cred.map(|c| c.uid()), cred.map(|c| c.gid()));
                if ctx.client_uid.is_some_and(|want| uid != Some(want))
                    || ctx.client_gid.is_some_and(|want| gid != Some(want))
                {
                    warn!(
                        "management: refusing unix socket client uid {uid:?} gid {gid:?} (management-client-user/group)"
                    );
                    return None;
                }
                Some((Box::new(s), format!("unix socket (uid {uid:?})")))
            }
            Err(e) => {
                accept_failed(e).await;
                None
            }
        },
    }
}

/// Out of file descriptors and similar: wait a little instead of spinning.
async fn accept_failed(e: std::io::Error) {
    warn!("management: accept failed: {e}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn refuse(mut stream: Box<dyn Stream>) {
    let text = reply::line(&format!(
        "ERROR: too many management clients ({MAX_CLIENTS} connected)"
    ));
    let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(text.as_bytes())).await;
}

async fn write(w: &mut (impl AsyncWrite + Unpin), text: &str) -> bool {
    if text.is_empty() {
        return true;
    }
    matches!(
        tokio::time::timeout(WRITE_TIMEOUT, w.write_all(text.as_bytes())).await,
        Ok(Ok(()))
    )
}

async fn ask(ctx: &Context, query: Query) -> Answer {
    let (tx, rx) = oneshot::channel();
    let request = Request { query, reply: tx };
    if ctx.requests.send(request).await.is_err() {
        return Answer::Unavailable;
    }
    match tokio::time::timeout(ANSWER_TIMEOUT, rx).await {
        Ok(Ok(a)) => a,
        _ => Answer::Unavailable,
    }
}

async fn bytecount_tick(period: Option<&mut tokio::time::Interval>) {
    match period {
        Some(p) => {
            p.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn connection(
    stream: Box<dyn Stream>,
    mut notices: mpsc::Receiver<Arc<Broadcast>>,
    ctx: Arc<Context>,
    peer: String,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut session = Session::new(ctx.password.clone());
    let greeting = session.greeting(&lock(&ctx.shared));
    if !write(&mut wr, &greeting).await {
        return;
    }
    let mut lines = LineBuffer::default();
    let mut buf = vec![0u8; 4096];
    let mut bytecount: (u32, Option<tokio::time::Interval>) = (0, None);
    'conn: loop {
        tokio::select! {
            n = rd.read(&mut buf) => {
                let n = match n {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                for line in lines.push(&buf[..n]) {
                    let step = match line {
                        Ok(l) => session.on_line(&mut lock(&ctx.shared), &l),
                        Err(session::LineTooLong) => Step::Send(reply::line("ERROR: command line too long")),
                    };
                    let (released, answered) = {
                        let sh = lock(&ctx.shared);
                        (
                            sh.hold_released,
                            sh.password_query.as_ref().is_some_and(|q| q.complete())
                                || sh.entry_query.as_ref().is_some_and(|q| q.answered()),
                        )
                    };
                    if released {
                        ctx.hold_released.notify_one();
                    }
                    if answered {
                        ctx.password_given.notify_one();
                    }
                    let ok = match step {
                        Step::Nothing => true,
                        Step::Send(t) => write(&mut wr, &t).await,
                        Step::Ask(q) => {
                            let a = ask(&ctx, q.clone()).await;
                            write(&mut wr, &session.answered(&q, a)).await
                        }
                        Step::Close(t) => {
                            write(&mut wr, &t).await;
                            break 'conn;
                        }
                    };
                    if !ok {
                        break 'conn;
                    }
                }
                if session.bytecount != bytecount.0 {
                    let secs = session.bytecount;
                    bytecount = (secs, (secs > 0).then(|| {
                        let period = Duration::from_secs(u64::from(secs));
                        tokio::time::interval_at(tokio::time::Instant::now() + period, period)
                    }));
                }
            }
            b = notices.recv() => {
                // None: the fan-out dropped this connection for falling behind.
                let Some(b) = b else { break };
                if !session.authenticated() {
                    continue;
                }
                let text = match &*b {
                    Broadcast::Client(t) => t,
                    Broadcast::State(t) if session.realtime_state => t,
                    Broadcast::Log(t) if session.realtime_log => t,
                    Broadcast::State(_) | Broadcast::Log(_) => continue,
                };
                if !write(&mut wr, text).await {
                    break;
                }
            }
            _ = bytecount_tick(bytecount.1.as_mut()) => {
                let q = Query::ByteCounts;
                let a = ask(&ctx, q.clone()).await;
                if !write(&mut wr, &session.answered(&q, a)).await {
                    break;
                }
            }
        }
    }
    let _ = wr.shutdown().await;
    debug!("management: client {peer} disconnected");
}
