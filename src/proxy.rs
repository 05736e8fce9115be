//! The HTTP service: sanitise the request, add the verified-client headers, forward it to the
//! upstream and relay the response, streaming bodies both ways.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt as _, Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tokio::sync::watch;

use crate::access_log::{LoggedBody, RequestLog};
use crate::config::SignatureMode;
use crate::error::ProxyError;
use crate::identity::IdentityHeaders;
use crate::listener::Activity;
use crate::metrics::Metrics;
use crate::metrics::SignatureResult;
use crate::signature::SignatureCheck;
use crate::upstream::UpstreamClient;

/// What hookgate sends back: the upstream's streamed body, or its own small JSON body.
pub type ProxyBody = Either<Incoming, Full<Bytes>>;

/// State shared by every connection of one listener.
pub struct Shared {
    pub client: UpstreamClient,
    pub request_timeout: Duration,
    pub max_body: u64,
    pub max_header_bytes: usize,
    pub request_ids: RequestIds,
    pub metrics: Arc<Metrics>,
    /// Turns true when `shutdown.grace_period` has run out.
    pub grace_over: watch::Receiver<bool>,
}

/// State fixed for one client connection: who the client is and where it connects from.
pub struct ConnCtx {
    pub shared: Arc<Shared>,
    pub identity: Arc<IdentityHeaders>,
    pub peer: SocketAddr,
    pub forwarded_for: HeaderValue,
    pub activity: Arc<Activity>,
    /// The signature policy this connection was accepted with.
    pub signature: Arc<SignatureCheck>,
}

/// Handles one request. Never fails: every error becomes a response, and every response is
/// counted and logged once its body is done.
pub async fn handle(
    req: Request<Incoming>,
    ctx: Arc<ConnCtx>,
) -> Result<Response<LoggedBody<ProxyBody>>, Infallible> {
    let metrics = &ctx.shared.metrics;
    let mut log = RequestLog {
        started: Instant::now(),
        peer: ctx.peer,
        identity: ctx.identity.clone(),
        method: req.method().clone(),
        uri: req.uri().clone(),
        status: StatusCode::OK,
        request_id: None,
        delivery_id: req.headers().get(X_DELIVERY_ID).cloned(),
        bytes_in: Arc::new(AtomicU64::new(0)),
        upstream: None,
        metrics: metrics.clone(),
        in_flight: ctx.activity.begin(),
    };
    let http1 = req.version() < Version::HTTP_2;
    // Dropped with the future if the client abandons the request (RST_STREAM, hang-up).
    let abandon = Abandoned(Some(&ctx.activity));
    let resp = match forward(req, &ctx, &mut log).await {
        Ok(resp) => resp,
        Err(e) => {
            tracing::debug!(error = %e, code = e.code(), "request answered by hookgate");
            if let Some(kind) = e.upstream_kind() {
                metrics.upstream_error(kind);
            }
            if let Some(reason) = e.reject_reason() {
                metrics.rejected(reason);
            }
            let mut resp = e.to_response().map(Either::Right);
            if let Some(id) = &log.request_id {
                resp.headers_mut().insert(X_REQUEST_ID, id.clone());
            }
            if http1 && e.closes_connection() {
                // HTTP/2 ends just the stream; HTTP/1 must not reuse a connection whose
                // request was not read to its end.
                resp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            resp
        }
    };
    abandon.disarm();
    log.status = resp.status();
    metrics.request(resp.status());
    Ok(resp.map(|body| LoggedBody::new(body, log)))
}

/// Counts the request as abandoned unless disarmed (see [`Activity::abandoned`]).
struct Abandoned<'a>(Option<&'a Activity>);

impl Abandoned<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if let Some(a) = self.0 {
            a.abandoned();
        }
    }
}

async fn forward(
    req: Request<Incoming>,
    ctx: &ConnCtx,
    log: &mut RequestLog,
) -> Result<Response<ProxyBody>, ProxyError> {
    let shared = &ctx.shared;
    if *shared.grace_over.borrow() {
        return Err(ProxyError::ShuttingDown);
    }
    let (mut parts, body) = req.into_parts();

    // The request id is settled first so that even a refused request can be traced.
    let request_id = if let Some(id) = parts.headers.get(X_REQUEST_ID) {
        id.clone()
    } else {
        let id = shared.request_ids.next();
        parts.headers.insert(X_REQUEST_ID, id.clone());
        id
    };
    log.request_id = Some(request_id);

    // hyper's buffer is a few times larger than the limit so that hookgate, not hyper, can
    // refuse a large head with a readable JSON 431.
    if head_size(&parts) > shared.max_header_bytes {
        discard(body);
        return Err(ProxyError::HeadersTooLarge(shared.max_header_bytes));
    }
    // A declared length over the limit is refused before anything is sent upstream.
    if let Some(len) = content_length(&parts.headers) {
        if len > shared.max_body {
            discard(body);
            return Err(ProxyError::BodyTooLarge(shared.max_body));
        }
    }

    // HTTP/2 carries the host in `:authority`; the upstream speaks HTTP/1.1 and needs `Host`.
    if !parts.headers.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
        }
    }

    strip_hop_by_hop(&mut parts.headers);
    strip_reserved(&mut parts.headers);

    let h = &mut parts.headers;
    for (name, value) in &ctx.identity.headers {
        h.append(name.clone(), value.clone());
    }
    h.insert(X_FORWARDED_FOR, ctx.forwarded_for.clone());
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));

    // The URI only keys the connection pool; the connector always dials the configured
    // upstream and the client sends origin-form (`/path?query`).
    let pq = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut uri = Uri::from_parts({
        let mut p = http::uri::Parts::default();
        p.scheme = Some(Scheme::HTTP);
        p.authority = Some(Authority::from_static("upstream"));
        p.path_and_query = Some(pq);
        p
    })
    .unwrap_or_else(|_| Uri::from_static("http://upstream/"));
    std::mem::swap(&mut parts.uri, &mut uri);
    parts.version = Version::HTTP_11;

    let overflow = Arc::new(Mutex::new(None));
    let body = if ctx.signature.mode == SignatureMode::Off {
        Either::Left(RequestBody {
            inner: Some(body),
            remaining: shared.max_body,
            limit: shared.max_body,
            overflow: overflow.clone(),
            bytes: log.bytes_in.clone(),
        })
    } else {
        let bytes = buffer_body(body, shared.max_body, shared.request_timeout).await?;
        log.bytes_in.store(bytes.len() as u64, Ordering::Relaxed);
        check_signature(ctx, &mut parts.headers, &bytes)?;
        Either::Right(Full::new(bytes))
    };
    let upstream_req = Request::from_parts(parts, body);

    let sent = Instant::now();
    let mut grace_over = shared.grace_over.clone();
    let result = tokio::select! {
        r = tokio::time::timeout(shared.request_timeout, shared.client.request(upstream_req)) => {
            r.map_err(|_| ProxyError::UpstreamTimeout(shared.request_timeout))?
        }
        () = flag_set(&mut grace_over) => return Err(ProxyError::ShuttingDown),
    };
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            let cut = overflow.lock().ok().and_then(|mut g| g.take());
            if let Some(rest) = cut {
                // The body passed max_body mid-stream: the upstream saw an aborted request;
                // the client gets 413 while the rest of what it sends is read and dropped.
                discard(rest);
                return Err(ProxyError::BodyTooLarge(shared.max_body));
            }
            return Err(ProxyError::from_client_error(&e));
        }
    };
    let upstream = sent.elapsed();
    log.upstream = Some(upstream);
    shared
        .metrics
        .upstream_duration
        .observe(upstream.as_secs_f64());
    strip_hop_by_hop(resp.headers_mut());
    Ok(resp.map(Either::Left))
}

/// Reads the whole body for the signature check: at most `limit` bytes, within `time`.
/// Trailers are not kept (a buffered body is forwarded with a Content-Length).
async fn buffer_body(body: Incoming, limit: u64, time: Duration) -> Result<Bytes, ProxyError> {
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ProxyError::BadBody(e.to_string()))?;
            if let Some(d) = frame.data_ref() {
                if (buf.len() + d.len()) as u64 > limit {
                    return Err(ProxyError::BodyTooLarge(limit));
                }
                buf.extend_from_slice(d);
            }
        }
        Ok(())
    };
    match tokio::time::timeout(time, read).await {
        Ok(Ok(())) => Ok(buf.freeze()),
        Ok(Err(ProxyError::BodyTooLarge(l))) => {
            discard(body);
            Err(ProxyError::BodyTooLarge(l))
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ProxyError::BodyTimeout(time)),
    }
}

/// Verifies the payload signature (SPEC `signature`): counts the result, refuses in `enforce`
/// mode, or tells the app in `report` mode (the client's own `X-Signature-Verified` was
/// already removed with the other reserved headers).
fn check_signature(ctx: &ConnCtx, headers: &mut HeaderMap, body: &[u8]) -> Result<(), ProxyError> {
    let check = &ctx.signature;
    let result = check.verify(body, headers.get(&check.header).map(HeaderValue::as_bytes));
    ctx.shared.metrics.signature_check(result);
    match (check.mode, result) {
        (SignatureMode::Enforce, SignatureResult::Missing) => {
            Err(ProxyError::SignatureMissing(check.header.to_string()))
        }
        (SignatureMode::Enforce, SignatureResult::Invalid) => {
            Err(ProxyError::SignatureInvalid(check.header.to_string()))
        }
        (SignatureMode::Report, r) => {
            headers.insert(X_SIGNATURE_VERIFIED, HeaderValue::from_static(r.as_str()));
            Ok(())
        }
        (SignatureMode::Enforce, SignatureResult::Valid) | (SignatureMode::Off, _) => Ok(()),
    }
}

/// Resolves when the flag turns true; never if its sender is gone without setting it.
async fn flag_set(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|v| *v).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Bytes in the request head as it came over HTTP/1 (request line and fields); for HTTP/2 the
/// same measure of the decoded header list.
fn head_size(parts: &http::request::Parts) -> usize {
    let target = parts.uri.authority().map_or(0, |a| a.as_str().len())
        + parts.uri.path_and_query().map_or(1, |p| p.as_str().len());
    let line = parts.method.as_str().len() + target + 12;
    parts
        .headers
        .iter()
        .fold(line, |n, (k, v)| n + k.as_str().len() + v.len() + 4)
}

/// The most of a refused body hookgate reads (and drops) after answering, so that a client
/// still sending sees the status instead of a reset (SPEC "Status codes").
const DISCARD_LIMIT: u64 = 4 * 1024 * 1024;
const DISCARD_TIME: Duration = Duration::from_secs(5);

/// Reads and drops up to [`DISCARD_LIMIT`] of `body` in the background, for at most
/// [`DISCARD_TIME`]; then the body is dropped and the HTTP layer closes the connection.
fn discard(body: Incoming) {
    tokio::spawn(async move {
        let mut body = body;
        let drain = async {
            let mut seen = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                if seen > DISCARD_LIMIT {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DISCARD_TIME, drain).await;
    });
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_DELIVERY_ID: HeaderName = HeaderName::from_static("x-delivery-id");
const X_SIGNATURE_VERIFIED: HeaderName = HeaderName::from_static("x-signature-verified");

/// Removes hop-by-hop fields: those RFC 9110 §7.6.1 names (Connection, Proxy-Connection,
/// Keep-Alive, TE, Transfer-Encoding, Upgrade) and every field the Connection header lists.
/// hyper frames the body itself on each side, so Transfer-Encoding is never needed here.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the names present, without hashing: most messages carry none of these, and
    // six `remove` calls for absent names were ~4 % of a keep-alive request.
    let has_listed = h.contains_key(header::CONNECTION);
    let doomed: Vec<HeaderName> = h
        .keys()
        .filter(|n| {
            matches!(
                n.as_str(),
                "connection"
                    | "proxy-connection"
                    | "keep-alive"
                    | "te"
                    | "transfer-encoding"
                    | "upgrade"
            )
        })
        .cloned()
        .collect();
    let listed: Vec<HeaderName> = if has_listed {
        h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect()
    } else {
        Vec::new()
    };
    for name in listed.into_iter().chain(doomed) {
        h.remove(name);
    }
}

/// Removes every client-sent copy of a header that hookgate sets, so that the app can trust
/// them. Names match case-insensitively (HeaderMap names are already lower case) and with `_`
/// taken as `-`, since CGI-style apps map both spellings to the same variable.
pub fn strip_reserved(h: &mut HeaderMap) {
    let doomed: Vec<HeaderName> = h
        .keys()
        .filter(|n| is_reserved(n.as_str().as_bytes()))
        .cloned()
        .collect();
    for name in doomed {
        h.remove(name);
    }
}

fn is_reserved(name: &[u8]) -> bool {
    const PREFIXES: [&[u8]; 2] = [b"x-client-cert", b"client-cert"];
    // `Forwarded` and `X-Real-IP` are not set by hookgate, but they claim a client address
    // that no trusted proxy vouched for (nothing in front of a sidecar is one), so an app that
    // reads them would be misled.
    const EXACT: [&[u8]; 6] = [
        b"x-forwarded-client-cert",
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-signature-verified",
        b"forwarded",
        b"x-real-ip",
    ];
    PREFIXES.iter().any(|p| norm_starts_with(name, p))
        || EXACT.iter().any(|e| name.len() == e.len() && norm_starts_with(name, e))
        // X-Request-Id is kept when sent; only its `_` spellings would shadow it.
        || (name.contains(&b'_') && name.len() == 12 && norm_starts_with(name, b"x-request-id"))
}

/// `name` starts with `prefix`, comparing `_` in `name` as `-`.
fn norm_starts_with(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len()
        && name
            .iter()
            .zip(prefix)
            .all(|(&a, &b)| a == b || (a == b'_' && b == b'-'))
}

// === impl RequestBody ===

/// The client's body on its way upstream, cut off with an error once it passes
/// `limits.max_body`. The error aborts the upstream request mid-body, so the app sees a
/// broken request, never a truncated one that looks complete.
pub struct RequestBody {
    /// Taken out (into `overflow`) when the limit trips, so that the rest can be discarded.
    inner: Option<Incoming>,
    remaining: u64,
    limit: u64,
    overflow: Arc<Mutex<Option<Incoming>>>,
    bytes: Arc<AtomicU64>,
}

#[derive(Debug, thiserror::Error)]
#[error("request body larger than {0} bytes")]
pub struct BodyTooLarge(u64);

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(Some(Err(Box::new(BodyTooLarge(this.limit)))));
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) if frame.is_trailers() => {
                // Trailer fields could smuggle an identity header past `strip_reserved` to an
                // app that merges trailers into headers; they get the same cleaning.
                let mut trailers = frame.into_trailers().unwrap_or_default();
                strip_reserved(&mut trailers);
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > this.remaining {
                        if let Ok(mut slot) = this.overflow.lock() {
                            *slot = this.inner.take();
                        }
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(this.limit)))));
                    }
                    this.remaining -= n;
                    this.bytes.fetch_add(n, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_some_and(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(SizeHint::default, Body::size_hint)
    }
}

// === impl RequestIds ===

/// Generates `X-Request-Id` values shaped like UUIDv4. They need to be unique, not secret: a
/// random per-process seed and a counter pushed through a bijective mixer give that without a
/// syscall per request.
pub struct RequestIds {
    seed: (u64, u64),
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        // RandomState is seeded from the OS's randomness; two of them give 128 random bits.
        let a = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let b = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Self {
            seed: (a, b),
            counter: AtomicU64::new(0),
        }
    }
}

impl RequestIds {
    pub fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let hi = splitmix64(self.seed.0 ^ n);
        let lo = splitmix64(self.seed.1.wrapping_add(n));
        let hi = (hi & !0xF000) | 0x4000; // version 4
        let lo = (lo & !(0b11 << 62)) | (0b10 << 62); // RFC 9562 variant
        // 8-4-4-4-12 lowercase hex, written straight into a stack buffer (a `format!` here was
        // ~5 % of a keep-alive request's instructions).
        let mut out = [b'-'; 36];
        let put = |digits: &mut [u8], value: u64| {
            let n = digits.len();
            for (i, d) in digits.iter_mut().enumerate() {
                *d = b"0123456789abcdef"[((value >> (4 * (n - 1 - i))) & 0xF) as usize];
            }
        };
        put(&mut out[0..8], hi >> 32);
        put(&mut out[9..13], (hi >> 16) & 0xFFFF);
        put(&mut out[14..18], hi & 0xFFFF);
        put(&mut out[19..23], lo >> 48);
        put(&mut out[24..36], lo & 0xFFFF_FFFF_FFFF);
        HeaderValue::from_bytes(&out).unwrap_or(HeaderValue::from_static("0"))
    }
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `X-Forwarded-For` for a peer: its IP address only, as nginx's `$remote_addr`. An IPv4 peer
/// on a dual-stack listener is written as IPv4, not `::ffff:a.b.c.d`.
pub fn forwarded_for(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_str(&peer.ip().to_canonical().to_string())
        .unwrap_or(HeaderValue::from_static("unknown"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_match_with_underscores_and_prefixes() {
        for n in [
            "x-client-cert-subject",
            "x_client_cert_subject",
            "x-client-cert",
            "x-client-certificate-anything",
            "client-cert",
            "client_cert_chain",
            "x-forwarded-client-cert",
            "x_forwarded_for",
            "x-forwarded-proto",
            "x-signature-verified",
            "x_request_id",
            "forwarded",
            "x_real_ip",
        ] {
            assert!(is_reserved(n.as_bytes()), "{n}");
        }
        for n in [
            "x-request-id",
            "x-forwarded-host",
            "content-type",
            "x-client",
            "x-forwarded-fort",
        ] {
            assert!(!is_reserved(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_listed_fields_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarded_for_writes_mapped_ipv4_as_ipv4() {
        let v4_mapped: SocketAddr = "[::ffff:192.0.2.7]:443".parse().unwrap();
        assert_eq!(forwarded_for(v4_mapped), "192.0.2.7");
        let v6: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
        assert_eq!(forwarded_for(v6), "2001:db8::1");
    }

    #[test]
    fn request_ids_are_uuid_shaped_and_unique() {
        let ids = RequestIds::default();
        let a = ids.next();
        let b = ids.next();
        assert_ne!(a, b);
        let s = a.to_str().unwrap();
        assert_eq!(s.len(), 36);
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "a" | "b"), "{s}");
    }
}
