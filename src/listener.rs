//! The TLS listener: accept, bound concurrent connections, read the PROXY header, check the
//! source address, handshake with a timeout, describe the verified client once, then serve
//! HTTP/1.1 or HTTP/2 on the connection until it ends, goes idle, or a shutdown closes it.
//!
//! Every phase has a bound: the PROXY header and the TLS handshake share
//! `tls.handshake_timeout`; HTTP/1 request heads `limits.header_read_timeout`; a connection with
//! no request in flight `limits.idle_timeout`; and at shutdown the whole drain
//! `shutdown.grace_period`, after which requests still waiting get 503 `shutting_down` and the
//! remaining connections are dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::{Limits, ProxyProtocol};
use crate::identity::IdentityHeaders;
use crate::metrics::{HandshakeResult, Metrics, RejectReason};
use crate::proxy::{self, ConnCtx, Shared};
use crate::refusal_log::{self, RefusalLog};
use crate::reload::LiveCell;

/// Everything a connection task needs, shared by all of them.
pub struct ListenerState {
    /// The TLS config, headers, source CIDRs and handshake timeout in force; a reload swaps
    /// them.
    pub live: Arc<LiveCell>,
    pub shared: Arc<Shared>,
    pub http: auto::Builder<TokioExecutor>,
    pub connections: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
    pub refusals: Arc<RefusalLog>,
    pub proxy_protocol: ProxyProtocol,
    pub idle_timeout: Duration,
}

/// HTTP/2 streams one client may have open at once (nginx's `http2_max_concurrent_streams`
/// is 128). A webhook sender needs a handful.
const H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// Streams a client may open and reset before hookgate has accepted them; past it the
/// connection gets GOAWAY (the HTTP/2 "rapid reset" attack, CVE-2023-44487).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams hookgate itself may reset for protocol errors before giving up on the connection.
const H2_MAX_LOCAL_RESETS: usize = 256;
/// How much larger than `limits.max_header_bytes` a request head may grow inside hyper before
/// hyper refuses it itself (a bare 431). Up to this size hookgate sees the head and answers
/// 431 with its JSON body; the factor keeps the buffer bounded either way.
pub const HEAD_BUFFER_FACTOR: usize = 4;
/// After `grace_period`, how long requests still waiting have to receive their 503 before
/// the remaining connections are dropped.
const FINAL_FLUSH: Duration = Duration::from_millis(500);
/// After an idle connection is asked to close, how long it may take.
const IDLE_CLOSE: Duration = Duration::from_secs(1);

impl ListenerState {
    pub fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
        let head_buffer = limits.max_header_bytes.saturating_mul(HEAD_BUFFER_FACTOR);
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(head_buffer);
        b.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(head_buffer).unwrap_or(u32::MAX))
            .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_RESETS);
        b
    }
}

/// Accepts until `shutdown` turns true. Then it stops accepting and asks every connection to
/// finish (HTTP/1 gets `Connection: close`, HTTP/2 a GOAWAY, idle ones close at once). When
/// `grace` runs out, `grace_over` turns true, so that requests still waiting are answered 503
/// `shutting_down`, and shortly after the remaining connections are dropped.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ListenerState>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    grace_over: watch::Sender<bool>,
) {
    let (close_tx, close_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut summaries = tokio::time::interval(refusal_log::WINDOW);
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            _ = summaries.tick() => state.refusals.flush(),
            // Reap finished connection tasks so that the set only holds live ones.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    state.metrics.connections_total.inc();
                    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
                        // Over limits.max_connections: shed cheaply, before any TLS work.
                        state.metrics.rejected(RejectReason::Overloaded);
                        tracing::debug!(%peer, "connection limit reached; closing");
                        continue;
                    };
                    tasks.spawn(connection(stream, peer, state.clone(), close_rx.clone(), permit));
                }
                Err(e) => {
                    // EMFILE and friends: log, back off, keep the loop alive.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = close_tx.send(true);
    let open = tasks.len();
    if open > 0 {
        tracing::info!(connections = open, ?grace, "draining open connections");
    }
    let drained = tokio::time::timeout(grace, join_all(&mut tasks))
        .await
        .is_ok();
    if drained {
        tracing::info!("all connections closed");
        return;
    }
    tracing::warn!(
        ?grace,
        connections = tasks.len(),
        "grace period over: answering waiting requests 503 and closing the rest"
    );
    let _ = grace_over.send(true);
    let _ = tokio::time::timeout(FINAL_FLUSH, join_all(&mut tasks)).await;
    tasks.abort_all();
    join_all(&mut tasks).await;
}

async fn join_all(tasks: &mut JoinSet<()>) {
    while tasks.join_next().await.is_some() {}
}

/// Resolves once the flag is set (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn connection(
    mut stream: TcpStream,
    tcp_peer: SocketAddr,
    state: Arc<ListenerState>,
    mut close: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let _open = OpenConnection::new(&state.metrics);
    let _ = stream.set_nodelay(true);
    // This connection keeps the config it was accepted with, whatever a reload does later.
    let live = state.live.get();
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + live.handshake_timeout;
    let refuse = |peer: SocketAddr, result: HandshakeResult, detail: &str| {
        state
            .metrics
            .handshake_duration
            .observe(started.elapsed().as_secs_f64());
        state.metrics.handshake(result);
        state.refusals.refused(peer, result, detail);
    };

    // The PROXY header (when configured) names the real client; it shares the handshake's
    // time budget.
    let peer = if state.proxy_protocol == ProxyProtocol::Off {
        tcp_peer
    } else {
        let read = crate::proxy_protocol::read_header(&mut stream, state.proxy_protocol);
        match tokio::time::timeout_at(deadline, read).await {
            Ok(Ok(source)) => source.unwrap_or(tcp_peer),
            Ok(Err(e)) => {
                return refuse(tcp_peer, HandshakeResult::ProtocolError, &e.to_string());
            }
            Err(_) => {
                return refuse(
                    tcp_peer,
                    HandshakeResult::Timeout,
                    "no PROXY header within tls.handshake_timeout",
                );
            }
        }
    };
    if !live.source_cidrs.is_empty() && !live.source_cidrs.iter().any(|c| c.contains(peer.ip())) {
        return refuse(
            peer,
            HandshakeResult::SourceDenied,
            "source address not in clients.source_cidrs",
        );
    }

    let tls = match tokio::time::timeout_at(deadline, live.acceptor.accept(stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            return refuse(peer, HandshakeResult::of_accept_error(&e), &e.to_string());
        }
        Err(_) => {
            return refuse(
                peer,
                HandshakeResult::Timeout,
                "no complete handshake within tls.handshake_timeout",
            );
        }
    };
    state
        .metrics
        .handshake_duration
        .observe(started.elapsed().as_secs_f64());
    state.metrics.handshake(HandshakeResult::Ok);
    let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
    let identity = match IdentityHeaders::build(chain, live.headers) {
        Ok(i) => Arc::new(i),
        Err(e) => {
            tracing::warn!(%peer, error = %e, "verified client certificate cannot be described; closing");
            return;
        }
    };
    tracing::debug!(%peer, subject = %identity.identity.subject, "client verified");
    let activity = Arc::new(Activity::new());
    let ctx = Arc::new(ConnCtx {
        shared: state.shared.clone(),
        identity,
        peer,
        forwarded_for: proxy::forwarded_for(peer),
        activity: activity.clone(),
        signature: live.signature.clone(),
    });
    let svc = service_fn(move |req| proxy::handle(req, ctx.clone()));
    let conn = state.http.serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);

    let mut closing = false;
    let mut close_by = None;
    let result = loop {
        tokio::select! {
            r = conn.as_mut() => break r,
            () = stopped(&mut close), if !closing => {
                // Shutdown: HTTP/1 finishes its request with `Connection: close`, HTTP/2 gets
                // a GOAWAY; an idle connection closes now.
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = idle(&activity, state.idle_timeout), if !closing => {
                tracing::debug!(%peer, "idle timeout; closing");
                conn.as_mut().graceful_shutdown();
                closing = true;
                close_by = Some(tokio::time::Instant::now() + IDLE_CLOSE);
            }
            () = activity.abuse.notified() => {
                tracing::warn!(
                    %peer,
                    abandoned = MAX_ABANDONED_REQUESTS,
                    "client abandoned too many requests (HTTP/2 rapid reset?); closing the connection"
                );
                return;
            }
            () = sleep_until(close_by), if close_by.is_some() => {
                // An idle connection that did not close when asked (a client that never
                // finished sending a request head) is dropped.
                return;
            }
        }
    };
    if let Err(e) = result {
        // hyper answers a head past its buffer with 431 itself, outside the service; it is
        // counted here, where the connection reports why it ended.
        if e.downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_parse_too_large)
        {
            state.metrics.rejected(RejectReason::HeadersTooLarge);
            state
                .metrics
                .request(http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        }
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Resolves once the connection has had no request in flight for `timeout`.
async fn idle(activity: &Activity, timeout: Duration) {
    loop {
        let wait = match activity.idle_for() {
            None => timeout,
            Some(d) if d >= timeout => return,
            Some(d) => timeout.saturating_sub(d),
        };
        tokio::time::sleep(wait).await;
    }
}

/// Requests a client may abandon (an HTTP/2 RST_STREAM, or hanging up) on one connection
/// while hookgate is still working on them. Past this the connection is closed: opening and
/// resetting streams costs the client nothing and hookgate (and the app) real work, which is
/// the HTTP/2 "rapid reset" attack (CVE-2023-44487). h2's own limit only covers streams reset
/// before they are accepted.
pub const MAX_ABANDONED_REQUESTS: u32 = 100;

/// Requests in flight on one connection, and since when it has had none.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `epoch` when the last request finished (or the connection began).
    idle_since_ms: AtomicU64,
    abandoned: std::sync::atomic::AtomicU32,
    abuse: tokio::sync::Notify,
}

impl Activity {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            abandoned: std::sync::atomic::AtomicU32::new(0),
            abuse: tokio::sync::Notify::new(),
        }
    }

    /// Counts a request the client gave up on before its response; wakes the connection task
    /// once there have been too many.
    pub fn abandoned(&self) {
        if self.abandoned.fetch_add(1, Ordering::AcqRel) + 1 == MAX_ABANDONED_REQUESTS {
            self.abuse.notify_one();
        }
    }

    /// Marks a request as in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let since = Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire));
        Some(self.epoch.elapsed().saturating_sub(since))
    }
}

/// A request in flight (see [`Activity::begin`]).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = u64::try_from(self.0.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.idle_since_ms.store(now, Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Holds `hookgate_connections_open` up for as long as a connection task lives.
struct OpenConnection<'a>(&'a Metrics);

impl<'a> OpenConnection<'a> {
    fn new(metrics: &'a Metrics) -> Self {
        metrics.connections_open.inc();
        Self(metrics)
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections_open.dec();
    }
}
