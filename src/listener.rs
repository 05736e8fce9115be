//! The TLS listener: accept, bound concurrent connections, handshake with a timeout, describe
//! the verified client once, then serve HTTP/1.1 or HTTP/2 on the connection until it ends or
//! a graceful shutdown closes it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::config::Limits;
use crate::identity::IdentityHeaders;
use crate::metrics::{HandshakeResult, Metrics, RejectReason};
use crate::proxy::{self, ConnCtx, Shared};
use crate::refusal_log::{self, RefusalLog};
use crate::reload::LiveCell;

/// Everything a connection task needs, shared by all of them.
pub struct ListenerState {
    /// The TLS config, headers and handshake timeout in force; a reload swaps them.
    pub live: Arc<LiveCell>,
    pub shared: Arc<Shared>,
    pub http: auto::Builder<TokioExecutor>,
    pub connections: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
    pub refusals: Arc<RefusalLog>,
}

impl ListenerState {
    pub fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
        let mut b = auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes);
        b.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
        b
    }
}

/// Accepts until `shutdown` turns true, then stops accepting and lets open connections finish
/// their in-flight requests (HTTP/1 gets `Connection: close`, HTTP/2 a GOAWAY) for at most
/// `grace`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ListenerState>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
) {
    let graceful = GracefulShutdown::new();
    let mut summaries = tokio::time::interval(refusal_log::WINDOW);
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            _ = summaries.tick() => state.refusals.flush(),
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    state.metrics.connections_total.inc();
                    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
                        // Over limits.max_connections: shed cheaply, before any TLS work.
                        state.metrics.rejected(RejectReason::Overloaded);
                        tracing::debug!(%peer, "connection limit reached; closing");
                        continue;
                    };
                    let watcher = graceful.watcher();
                    tokio::spawn(connection(stream, peer, state.clone(), watcher, permit));
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
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!(?grace, "grace period over; closing remaining connections"),
    }
}

/// Resolves once the shutdown flag is set (or its sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<ListenerState>,
    watcher: Watcher,
    _permit: OwnedSemaphorePermit,
) {
    let _open = OpenConnection::new(&state.metrics);
    let _ = stream.set_nodelay(true);
    // This connection keeps the config it was accepted with, whatever a reload does later.
    let live = state.live.get();
    let started = std::time::Instant::now();
    let accepted = tokio::time::timeout(live.handshake_timeout, live.acceptor.accept(stream)).await;
    state
        .metrics
        .handshake_duration
        .observe(started.elapsed().as_secs_f64());
    let tls = match accepted {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            let result = HandshakeResult::of_accept_error(&e);
            state.metrics.handshake(result);
            state.refusals.refused(peer, result, &e.to_string());
            return;
        }
        Err(_) => {
            state.metrics.handshake(HandshakeResult::Timeout);
            state.refusals.refused(
                peer,
                HandshakeResult::Timeout,
                "no complete handshake within tls.handshake_timeout",
            );
            return;
        }
    };
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
    let ctx = Arc::new(ConnCtx {
        shared: state.shared.clone(),
        identity,
        peer,
        forwarded_for: proxy::forwarded_for(peer),
    });
    let svc = service_fn(move |req| proxy::handle(req, ctx.clone()));
    let conn = state
        .http
        .serve_connection(TokioIo::new(tls), svc)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        // hyper answers an oversized header block with 431 itself, outside the service; it is
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
