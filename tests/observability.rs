//! Admin listener, metrics and health: what an operator's Prometheus and kubelet observe.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod support;

use std::time::Duration;

use bytes::Bytes;
use hookgate::client::{get_plain, metric_value};
use hookgate::pki::{Ca, LeafSpec};
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// An upstream that answers exactly one request (with `Connection: close`, so that hookgate
/// does not pool the connection) and then stops listening: the next request finds it down.
async fn one_shot_upstream() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        drop(listener);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "request ended early");
            buf.extend_from_slice(&chunk[..n]);
        }
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await
            .unwrap();
        s.shutdown().await.unwrap();
    });
    addr
}

#[tokio::test]
async fn counters_move_by_exactly_the_known_sequence() {
    let upstream = one_shot_upstream().await;
    let env = Env::start_with(|_, setup| setup.upstream_url = format!("http://{upstream}")).await;
    let before = env.metrics().await;
    for series in [
        "hookgate_tls_handshakes_total{result=\"ok\"}",
        "hookgate_tls_handshakes_total{result=\"no_client_cert\"}",
        "hookgate_upstream_errors_total{kind=\"connect\"}",
        "hookgate_connections_total",
    ] {
        assert_eq!(
            metric_value(&before, series),
            Some(0.0),
            "{series} starts at 0"
        );
    }

    // 1. A good request.
    let leaf = env.client_leaf();
    let resp = env
        .send(env.pki.client_config(&leaf, true, &[]), get("/ok"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // 2. No client certificate.
    assert!(
        env.send(env.pki.anonymous_config(), get("/"))
            .await
            .is_err()
    );
    // 3. A certificate from an unknown CA.
    let other = Ca::root("Some Other CA", "Mallory").unwrap();
    let mallory = other.issue(&LeafSpec::client("mallory")).unwrap();
    assert!(
        env.send(env.pki.foreign_config(&mallory), get("/"))
            .await
            .is_err()
    );
    // 4. An expired certificate.
    let now = OffsetDateTime::now_utc();
    let mut spec = LeafSpec::client("expired");
    spec.not_before = now - Duration::from_secs(10 * 86_400);
    spec.not_after = now - Duration::from_secs(86_400);
    let expired = env.pki.client(&spec);
    assert!(
        env.send(env.pki.client_config(&expired, true, &[]), get("/"))
            .await
            .is_err()
    );
    // 5. The upstream is down now.
    let resp = env
        .send(env.pki.client_config(&leaf, true, &[]), get("/down"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);

    let text = env
        .wait_metrics(&[
            ("hookgate_tls_handshakes_total{result=\"ok\"}", 2.0),
            (
                "hookgate_tls_handshakes_total{result=\"no_client_cert\"}",
                1.0,
            ),
            (
                "hookgate_tls_handshakes_total{result=\"unknown_issuer\"}",
                1.0,
            ),
            ("hookgate_tls_handshakes_total{result=\"expired\"}", 1.0),
            ("hookgate_tls_handshakes_total{result=\"revoked\"}", 0.0),
            (
                "hookgate_tls_handshakes_total{result=\"protocol_error\"}",
                0.0,
            ),
            ("hookgate_tls_handshakes_total{result=\"other\"}", 0.0),
            ("hookgate_tls_handshake_duration_seconds_count", 5.0),
            ("hookgate_connections_total", 5.0),
            ("hookgate_connections_open", 0.0),
            ("hookgate_requests_total{code=\"200\"}", 1.0),
            ("hookgate_requests_total{code=\"502\"}", 1.0),
            ("hookgate_upstream_errors_total{kind=\"connect\"}", 1.0),
            ("hookgate_upstream_errors_total{kind=\"timeout\"}", 0.0),
            ("hookgate_upstream_errors_total{kind=\"reset\"}", 0.0),
            ("hookgate_upstream_duration_seconds_count", 1.0),
            ("hookgate_request_duration_seconds_count", 2.0),
            (
                "hookgate_rejected_requests_total{reason=\"body_too_large\"}",
                0.0,
            ),
        ])
        .await;
    // No series is labelled with anything taken from the wire.
    assert!(
        !text.contains("mallory") && !text.contains("/down"),
        "{text}"
    );
}

#[tokio::test]
async fn rejected_requests_are_counted_by_reason() {
    let env = Env::start_with(|_, setup| {
        setup.extra_yaml = "limits: {max_body: 10B, max_header_bytes: 8KiB}\n".into();
    })
    .await;
    let leaf = env.client_leaf();
    let big_body = Request::post("/")
        .header("host", "localhost")
        .body(Full::new(Bytes::from_static(b"more than ten bytes")))
        .unwrap();
    let resp = env
        .send(env.pki.client_config(&leaf, true, &[]), big_body)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let big_headers = Request::get("/")
        .header("host", "localhost")
        .header("x-filler", "a".repeat(16 * 1024))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = env
        .send(env.pki.client_config(&leaf, true, &[]), big_headers)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    env.wait_metrics(&[
        (
            "hookgate_rejected_requests_total{reason=\"body_too_large\"}",
            1.0,
        ),
        (
            "hookgate_rejected_requests_total{reason=\"headers_too_large\"}",
            1.0,
        ),
        ("hookgate_requests_total{code=\"413\"}", 1.0),
        ("hookgate_requests_total{code=\"431\"}", 1.0),
        ("hookgate_upstream_duration_seconds_count", 0.0),
    ])
    .await;
    assert!(env.upstream.seen().is_empty());
}

#[tokio::test]
async fn healthz_and_readyz_follow_the_lifecycle() {
    let env = Env::start().await;
    let admin = env.server.admin_addr();
    assert_eq!(
        get_plain(admin, "/healthz").await.unwrap().0,
        StatusCode::OK
    );
    assert_eq!(get_plain(admin, "/readyz").await.unwrap().0, StatusCode::OK);

    // The first shutdown step: not ready, but still serving while endpoints update.
    env.server.begin_drain();
    let (status, body) = get_plain(admin, "/readyz").await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("draining"), "{body}");
    assert_eq!(
        get_plain(admin, "/healthz").await.unwrap().0,
        StatusCode::OK
    );
    let leaf = env.client_leaf();
    let resp = env
        .send(env.pki.client_config(&leaf, true, &[]), get("/"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "draining still serves");
}

#[tokio::test]
async fn expiry_gauges_hold_the_certificates_not_after() {
    let env = Env::start().await;
    let text = env.metrics().await;
    let expect = |der: &[u8], role: &str| {
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        let subject = hookgate::identity::dn_rfc4514(cert.subject());
        let series = format!(
            "hookgate_certificate_expiry_timestamp_seconds{{role=\"{role}\",subject=\"{subject}\"}}"
        );
        #[allow(clippy::cast_precision_loss)]
        let want = cert.validity().not_after.timestamp() as f64;
        assert_eq!(metric_value(&text, &series), Some(want), "{series}\n{text}");
    };
    expect(env.pki.server.der.as_ref(), "server");
    expect(env.pki.root.der().as_ref(), "client_ca");
}
