//! The admin listener (`admin.listen`): plain HTTP, separate from the TLS port, serving
//! `/metrics`, `/healthz` and `/readyz` (SPEC "Metrics"). It stays up while the TLS listener
//! drains, so that Prometheus can scrape the drain and Kubernetes sees `/readyz` turn 503.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// What `/readyz` reports: ready once the TLS listener serves with loaded certificates, not
/// ready again from the first shutdown signal on.
#[derive(Debug, Default)]
pub struct Health {
    serving: AtomicBool,
    draining: AtomicBool,
}

impl Health {
    pub fn set_serving(&self) {
        self.serving.store(true, Ordering::Release);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// `None` when ready, else why not.
    pub fn not_ready_reason(&self) -> Option<&'static str> {
        if self.is_draining() {
            Some("draining")
        } else if !self.serving.load(Ordering::Acquire) {
            Some("starting")
        } else {
            None
        }
    }
}

/// A scrape or probe is small; a client that takes longer than this to send its headers is
/// dropped rather than allowed to hold a task.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the admin endpoints until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let resp = route(&req, &metrics, &health);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            // Errors here are scrapers hanging up; nothing to act on.
            let _ = conn.await;
        });
    }
}

/// Routes one admin request.
pub fn route(req: &Request<Incoming>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    route_parts(req.method(), req.uri().path(), metrics, health)
}

fn route_parts(
    method: &Method,
    path: &str,
    metrics: &Metrics,
    health: &Health,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n".into());
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match path {
        "/metrics" => {
            let mut r = text(StatusCode::OK, metrics.encode());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match health.not_ready_reason() {
            None => text(StatusCode::OK, "ready\n".into()),
            Some(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_follows_the_lifecycle() {
        let m = Metrics::new().unwrap();
        let h = Health::default();
        let ready = |h: &Health| route_parts(&Method::GET, "/readyz", &m, h).status();
        assert_eq!(ready(&h), StatusCode::SERVICE_UNAVAILABLE, "before serving");
        h.set_serving();
        assert_eq!(ready(&h), StatusCode::OK);
        h.set_draining();
        assert_eq!(ready(&h), StatusCode::SERVICE_UNAVAILABLE, "draining");
        assert_eq!(
            route_parts(&Method::GET, "/healthz", &m, &h).status(),
            StatusCode::OK
        );
        assert_eq!(
            route_parts(&Method::POST, "/metrics", &m, &h).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            route_parts(&Method::GET, "/nope", &m, &h).status(),
            StatusCode::NOT_FOUND
        );
    }
}
