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
use tokio_rustls::TlsAcceptor;

use crate::config::{HeaderConfig, Limits};
use crate::identity::IdentityHeaders;
use crate::proxy::{self, ConnCtx, Shared};

/// Everything a connection task needs, shared by all of them.
pub struct ListenerState {
    pub acceptor: TlsAcceptor,
    pub shared: Arc<Shared>,
    pub handshake_timeout: Duration,
    pub headers: HeaderConfig,
    pub http: auto::Builder<TokioExecutor>,
    pub connections: Arc<Semaphore>,
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
    loop {
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(permit) = state.connections.clone().try_acquire_owned() else {
                        // Over limits.max_connections: shed cheaply, before any TLS work.
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
    let _ = stream.set_nodelay(true);
    let tls =
        match tokio::time::timeout(state.handshake_timeout, state.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake refused");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
    let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
    let identity = match IdentityHeaders::build(chain, state.headers) {
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
        forwarded_for: proxy::forwarded_for(peer),
    });
    let svc = service_fn(move |req| proxy::handle(req, ctx.clone()));
    let conn = state
        .http
        .serve_connection(TokioIo::new(tls), svc)
        .into_owned();
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
