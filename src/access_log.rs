//! One access-log line and one `hookgate_request_duration_seconds` observation per request,
//! written when the response body has been sent (or the client went away), so that the
//! duration and the byte count cover the whole exchange, as nginx's `$request_time` does.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use hyper::body::{Body, Frame, SizeHint};

use crate::identity::IdentityHeaders;
use crate::listener::InFlight;
use crate::metrics::Metrics;

/// What is known about a request by the time its response starts.
pub struct RequestLog {
    pub started: Instant,
    pub peer: SocketAddr,
    pub identity: Arc<IdentityHeaders>,
    pub method: Method,
    /// The request target; only its path is logged (queries may carry tokens that do not
    /// belong in logs). Kept as the `Uri` (a reference-counted clone) so that nothing is
    /// copied unless a line is written.
    pub uri: http::Uri,
    pub status: StatusCode,
    pub request_id: Option<HeaderValue>,
    pub delivery_id: Option<HeaderValue>,
    /// Request body bytes read from the client (shared with the body on its way upstream).
    pub bytes_in: Arc<AtomicU64>,
    /// Until the upstream's response headers; `None` when the upstream was not reached.
    pub upstream: Option<Duration>,
    pub metrics: Arc<Metrics>,
    /// Keeps the connection from counting as idle until the response is done.
    pub in_flight: InFlight,
}

impl RequestLog {
    fn finish(&self, bytes_out: u64, complete: bool) {
        let total = self.started.elapsed();
        self.metrics.request_duration.observe(total.as_secs_f64());
        let id = &self.identity.identity;
        let cn = id.common_name.as_deref().unwrap_or("");
        let cert = id.sha256.get(..16).unwrap_or("");
        let rid = header_str(self.request_id.as_ref());
        let did = header_str(self.delivery_id.as_ref());
        let bytes_in = self.bytes_in.load(Ordering::Relaxed);
        let total_ms = ms(total);
        // `upstream_ms` is left out when the upstream was never reached (a 413 before
        // forwarding): an absent field cannot be mistaken for a fast upstream.
        if let Some(up) = self.upstream {
            tracing::info!(
                target: "hookgate::access",
                peer = %self.peer, client_cn = cn, client_cert = cert,
                method = %self.method, path = self.uri.path(), status = self.status.as_u16(),
                bytes_in, bytes_out, upstream_ms = ms(up), total_ms,
                request_id = rid, delivery_id = did, complete,
                "request"
            );
        } else {
            tracing::info!(
                target: "hookgate::access",
                peer = %self.peer, client_cn = cn, client_cert = cert,
                method = %self.method, path = self.uri.path(), status = self.status.as_u16(),
                bytes_in, bytes_out, total_ms,
                request_id = rid, delivery_id = did, complete,
                "request"
            );
        }
    }
}

fn header_str(v: Option<&HeaderValue>) -> &str {
    v.and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Milliseconds with microsecond resolution.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// A response body that counts what it sends and writes the access line when it is done: at
/// its end, or when hyper drops it because the client went away.
pub struct LoggedBody<B: Body> {
    inner: B,
    bytes_out: u64,
    ended: bool,
    log: Option<Box<RequestLog>>,
}

impl<B: Body> LoggedBody<B> {
    pub fn new(inner: B, log: RequestLog) -> Self {
        Self {
            inner,
            bytes_out: 0,
            ended: false,
            log: Some(Box::new(log)),
        }
    }

    fn finish(&mut self) {
        if let Some(log) = self.log.take() {
            log.finish(self.bytes_out, self.ended);
        }
    }
}

impl<B> Body for LoggedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes_out += d.len() as u64;
                }
            }
            Poll::Ready(None) => {
                this.ended = true;
                this.finish();
            }
            Poll::Ready(Some(Err(_))) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: Body> Drop for LoggedBody<B> {
    fn drop(&mut self) {
        // hyper does not poll a body that reports itself ended (an empty one): that is a
        // complete response, not an abandoned one.
        self.ended |= self.inner.is_end_stream();
        self.finish();
    }
}
