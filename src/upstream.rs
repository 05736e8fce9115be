//! The pooled keep-alive HTTP/1.1 client to the app, over TCP or a unix socket.
//!
//! The upstream is one fixed address, resolved when the config was validated, so the connector
//! ignores the request URI and never does DNS on the request path.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpStream, UnixStream};

use crate::config::{UpstreamConfig, UpstreamTarget};
use crate::proxy::RequestBody;

/// What goes upstream: the client's body streamed through, or (when the signature is checked)
/// the body as read.
pub type UpstreamBody = http_body_util::Either<RequestBody, http_body_util::Full<bytes::Bytes>>;

pub type UpstreamClient = Client<UpstreamConnector, UpstreamBody>;

/// Builds the pooled client. Idle upstream connections are kept for 60 s, under the 75 s and
/// longer keep-alive timeouts that common app servers use, so the pool rarely hands out a
/// connection the app is about to close.
pub fn client(cfg: &UpstreamConfig) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1024)
        // Host is the client's own, set by the proxy; never derived from our internal URI.
        .set_host(false)
        .build(UpstreamConnector {
            target: cfg.target.clone(),
            connect_timeout: cfg.connect_timeout,
        })
}

/// Connects to the configured upstream, whatever the URI says.
#[derive(Debug, Clone)]
pub struct UpstreamConnector {
    target: UpstreamTarget,
    connect_timeout: Duration,
}

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = UpstreamIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<UpstreamIo>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let target = self.target.clone();
        let timeout = self.connect_timeout;
        Box::pin(async move {
            let connect = async {
                match target {
                    UpstreamTarget::Tcp { addr, .. } => {
                        let s = TcpStream::connect(addr).await?;
                        // Requests and responses are small and latency-bound.
                        s.set_nodelay(true)?;
                        Ok(UpstreamIo::Tcp(TokioIo::new(s)))
                    }
                    UpstreamTarget::Unix(path) => Ok(UpstreamIo::Unix(TokioIo::new(
                        UnixStream::connect(path).await?,
                    ))),
                }
            };
            tokio::time::timeout(timeout, connect)
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
        })
    }
}

/// A connection to the upstream.
#[derive(Debug)]
pub enum UpstreamIo {
    Tcp(TokioIo<TcpStream>),
    Unix(TokioIo<UnixStream>),
}

impl Connection for UpstreamIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl Write for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
}
