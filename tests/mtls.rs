//! End-to-end: real TLS handshakes on loopback against the in-process proxy, a recording
//! upstream, and what each side observes.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod support;

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hookgate::demo::EchoUpstream;
use hookgate::pki::{Ca, Eku, LeafSpec};
use http::{Request, StatusCode, Version};
use http_body_util::Full;
use rustls::AlertDescription;
use support::*;
use time::OffsetDateTime;

fn webhook() -> http::request::Builder {
    Request::post("/hooks/wise?x=1")
        .header("host", "webhooks.example.com")
        .header("content-type", "application/json")
}

fn full(body: impl Into<Bytes>) -> Full<Bytes> {
    Full::new(body.into())
}

#[tokio::test]
async fn valid_chain_gets_through_with_every_spec_header() {
    let env = Env::start_with(|_, s| {
        s.extra_yaml = "headers: {forward_cert: true, rfc9440: true}\n".into();
    })
    .await;
    let mut spec = LeafSpec::client("wise-client");
    spec.org = Some("Wise Test".into());
    spec.dns = vec!["a.wise.test".into(), "b.wise.test".into()];
    spec.uris = vec!["spiffe://wise.test/sender".into()];
    spec.serial = Some(vec![0x00, 0x8f, 0x12, 0x34]);
    spec.not_after = OffsetDateTime::from_unix_timestamp(1_801_439_999).unwrap(); // 2027-01-31T23:59:59Z
    let leaf = env.pki.client(&spec);
    let cfg = env.pki.client_config(&leaf, true, &[b"http/1.1"]);
    let resp = env
        .send(cfg, webhook().body(full(&b"{\"a\":1}"[..])).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    let seen = env.upstream.seen();
    assert_eq!(seen.len(), 1, "the upstream saw the request exactly once");
    let r = &seen[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.uri, "/hooks/wise?x=1");
    assert_eq!(r.body.as_ref(), b"{\"a\":1}");
    let one = |name: &str| -> String {
        let all: Vec<_> = r.headers.get_all(name).iter().collect();
        assert_eq!(all.len(), 1, "{name} appears once: {all:?}");
        all[0].to_str().unwrap().to_string()
    };
    let sha = sha256_hex(&leaf.der);
    assert_eq!(one("host"), "webhooks.example.com", "Host is preserved");
    assert_eq!(one("x-client-cert-verified"), "SUCCESS");
    assert_eq!(one("x-client-cert-subject"), "CN=wise-client,O=Wise Test");
    assert_eq!(
        one("x-client-cert-issuer"),
        "CN=Test Issuing CA,O=Wise Test"
    );
    assert_eq!(one("x-client-cert-serial"), "8F1234");
    assert_eq!(one("x-client-cert-sha256"), sha);
    assert_eq!(one("x-client-cert-not-after"), "2027-01-31T23:59:59Z");
    assert_eq!(one("x-client-cert-san-dns"), "a.wise.test,b.wise.test");
    assert_eq!(one("x-client-cert-san-uri"), "spiffe://wise.test/sender");
    assert_eq!(
        one("x-forwarded-client-cert"),
        format!(
            "Hash={sha};Subject=\"CN=wise-client,O=Wise Test\";URI=spiffe://wise.test/sender;\
             DNS=a.wise.test;DNS=b.wise.test"
        )
    );
    assert_eq!(one("x-forwarded-for"), "127.0.0.1");
    assert_eq!(one("x-forwarded-proto"), "https");
    let rid = one("x-request-id");
    assert_eq!(rid.len(), 36, "{rid}");
    // X-Client-Cert: the URL-encoded PEM of the leaf.
    let forwarded = one("x-client-cert");
    assert!(
        forwarded.starts_with("-----BEGIN%20CERTIFICATE-----%0A"),
        "{forwarded}"
    );
    // RFC 9440: byte sequences of the leaf and of the chain the client sent.
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    assert_eq!(one("client-cert"), format!(":{}:", b64(&leaf.der)));
    assert_eq!(
        one("client-cert-chain"),
        format!(":{}:", b64(&env.pki.intermediate.der()))
    );
}

#[tokio::test]
async fn leaf_only_works_when_the_intermediate_is_in_the_bundle() {
    let env = Env::start().await;
    // With only the root in the bundle, a leaf without its intermediate cannot be chained.
    let leaf = env.client_leaf();
    let cfg = env.pki.client_config(&leaf, false, &[b"http/1.1"]);
    let err = env.send(cfg, get("/")).await.unwrap_err();
    assert_eq!(
        alert_of(err.as_ref()),
        Some(AlertDescription::UnknownCA),
        "{err}"
    );
    assert!(env.upstream.seen().is_empty());

    // Root + intermediate in the bundle (two files): leaf only → 200.
    let env = Env::start_with(|pki, s| {
        s.client_ca_pems = vec![pki.root.pem(), pki.intermediate.pem()];
    })
    .await;
    let mut spec = LeafSpec::client("leaf-only");
    spec.org = Some("Wise Test".into());
    let leaf = env.pki.client(&spec);
    let cfg = env.pki.client_config(&leaf, false, &[b"http/1.1"]);
    let resp = env.send(cfg, get("/")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = env.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].headers["x-client-cert-subject"],
        "CN=leaf-only,O=Wise Test"
    );
    assert_eq!(
        seen[0].headers["x-client-cert-issuer"],
        "CN=Test Issuing CA,O=Wise Test"
    );
    // And leaf + intermediate still works against the same bundle.
    let cfg = env.pki.client_config(&leaf, true, &[b"http/1.1"]);
    let resp = env.send(cfg, get("/")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}

/// Sends a request with `cfg` and asserts the TLS handshake refused it with `alert`, and that
/// nothing reached the upstream.
async fn assert_refused(
    env: &Env,
    cfg: std::sync::Arc<rustls::ClientConfig>,
    alert: AlertDescription,
) {
    let req = webhook().body(full("{}")).unwrap();
    match env.send(cfg, req).await {
        Ok(r) => panic!("expected a refused handshake, got HTTP {}", r.status()),
        Err(e) => assert_eq!(alert_of(e.as_ref()), Some(alert), "{e:?}"),
    }
    assert!(
        env.upstream.seen().is_empty(),
        "nothing may reach the upstream"
    );
}

/// Issues a leaf from the test intermediate as `spec` says, presents it with its intermediate,
/// and asserts the handshake refused it with `alert`.
async fn assert_leaf_refused(env: &Env, spec: &LeafSpec, alert: AlertDescription) {
    let leaf = env.pki.client(spec);
    assert_refused(env, env.pki.client_config(&leaf, true, &[]), alert).await;
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let env = Env::start().await;
    assert_refused(
        &env,
        env.pki.anonymous_config(),
        AlertDescription::CertificateRequired,
    )
    .await;
}

#[tokio::test]
async fn unknown_ca_is_refused() {
    let env = Env::start().await;
    let other = Ca::root("Some Other CA", "Mallory").unwrap();
    let leaf = other.issue(&LeafSpec::client("mallory")).unwrap();
    assert_refused(
        &env,
        env.pki.foreign_config(&leaf),
        AlertDescription::UnknownCA,
    )
    .await;
}

#[tokio::test]
async fn self_signed_client_is_refused() {
    let env = Env::start().await;
    let leaf = LeafSpec::client("self-made").self_signed().unwrap();
    assert_refused(
        &env,
        env.pki.foreign_config(&leaf),
        AlertDescription::UnknownCA,
    )
    .await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_leaves_are_refused() {
    let env = Env::start().await;
    let now = OffsetDateTime::now_utc();
    let mut expired = LeafSpec::client("expired");
    expired.not_before = now - Duration::from_secs(10 * 86_400);
    expired.not_after = now - Duration::from_secs(86_400);
    assert_leaf_refused(&env, &expired, AlertDescription::CertificateExpired).await;

    let mut future = LeafSpec::client("future");
    future.not_before = now + Duration::from_secs(86_400);
    future.not_after = now + Duration::from_secs(10 * 86_400);
    assert_leaf_refused(&env, &future, AlertDescription::CertificateExpired).await;
}

#[tokio::test]
async fn server_auth_only_eku_is_refused() {
    let env = Env::start().await;
    let mut spec = LeafSpec::client("server-only");
    spec.eku = vec![Eku::ServerAuth];
    assert_leaf_refused(&env, &spec, AlertDescription::UnsupportedCertificate).await;
}

#[tokio::test]
async fn tls12_clients_work_and_min_version_13_refuses_them() {
    let env = Env::start().await;
    let leaf = env.client_leaf();
    let tls12 = |roots| {
        let cfg = rustls::ClientConfig::builder_with_provider(hookgate::tls::provider())
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(
                vec![leaf.der.clone(), env.pki.intermediate.der()],
                leaf.key_der(),
            )
            .unwrap();
        std::sync::Arc::new(cfg)
    };
    let resp = env
        .send(tls12(env.pki.server_roots()), get("/"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);

    assert_eq!(env.upstream.seen().len(), 1);

    let env13 = Env::start_with(|_, s| s.tls_yaml = "  min_version: \"1.3\"\n".into()).await;
    let err = env13
        .send(tls12(env13.pki.server_roots()), get("/"))
        .await
        .unwrap_err();
    assert_eq!(
        alert_of(err.as_ref()),
        Some(AlertDescription::ProtocolVersion),
        "{err:?}"
    );
    assert!(env13.upstream.seen().is_empty());
}

#[tokio::test]
async fn spoofed_identity_headers_are_replaced() {
    let env = Env::start().await;
    let leaf = env.client_leaf();
    let cfg = env.pki.client_config(&leaf, true, &[b"http/1.1"]);
    let req = webhook()
        .header("X-Client-Cert-Subject", "CN=admin")
        .header("X_Client_Cert_Subject", "CN=admin")
        .header("X-Forwarded-Client-Cert", "Hash=00;Subject=\"CN=admin\"")
        .header("X-Client-Cert-Verified", "SUCCESS")
        .header("X-Client-Certificate-Whatever", "1")
        .header("Client-Cert", ":AAAA:")
        .header("X-Forwarded-For", "203.0.113.9")
        .header("X-Request-Id", "keep-me")
        .body(full("{}"))
        .unwrap();
    let resp = env.send(cfg, req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let r = &env.upstream.seen()[0];
    let all = |n: &str| {
        r.headers
            .get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(all("x-client-cert-subject"), ["CN=wise-client,O=Wise Test"]);
    assert!(all("x_client_cert_subject").is_empty());
    let xfcc = all("x-forwarded-client-cert");
    assert_eq!(xfcc.len(), 1);
    assert!(
        xfcc[0].starts_with(&format!("Hash={};", sha256_hex(&leaf.der))),
        "{xfcc:?}"
    );
    assert_eq!(all("x-client-cert-verified"), ["SUCCESS"]);
    assert!(all("x-client-certificate-whatever").is_empty());
    assert!(
        all("client-cert").is_empty(),
        "rfc9440 is off: no Client-Cert at all"
    );
    assert_eq!(all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(
        all("x-request-id"),
        ["keep-me"],
        "a sent X-Request-Id is kept"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    let env = Env::start().await;
    let leaf = env.client_leaf();
    let cfg = env.pki.client_config(&leaf, true, &[b"http/1.1"]);
    let req = webhook()
        .header("Connection", "keep-alive, X-Hop")
        .header("X-Hop", "secret")
        .header("Keep-Alive", "timeout=5")
        .header("Proxy-Connection", "keep-alive")
        .header("X-End-To-End", "yes")
        .body(full("{}"))
        .unwrap();
    assert_eq!(env.send(cfg, req).await.unwrap().status(), StatusCode::OK);
    let r = &env.upstream.seen()[0];
    for h in ["x-hop", "keep-alive", "proxy-connection"] {
        assert!(
            !r.headers.contains_key(h),
            "{h} was forwarded: {:?}",
            r.headers
        );
    }
    assert_eq!(r.headers["x-end-to-end"], "yes");
}

fn json_error(resp: &http::Response<Bytes>) -> serde_json::Value {
    assert_eq!(resp.headers()["content-type"], "application/json");
    serde_json::from_slice(resp.body()).unwrap()
}

#[tokio::test]
async fn upstream_down_is_502_json() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let env = Env::start_with(|_, s| s.upstream_url = format!("http://127.0.0.1:{port}")).await;
    let leaf = env.client_leaf();
    let resp = env
        .send(env.pki.client_config(&leaf, true, &[]), get("/"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    let j = json_error(&resp);
    assert_eq!(j["error"], "upstream_unavailable");
    assert!(j["message"].as_str().unwrap().len() > 5);
}

#[tokio::test]
async fn slow_upstream_is_504_json() {
    let slow = EchoUpstream::with_delay(Duration::from_secs(3));
    let addr = slow.clone().spawn().await.unwrap();
    let env = Env::start_with(|_, s| {
        s.upstream_url = format!("http://{addr}");
        s.request_timeout = "300ms";
    })
    .await;
    let leaf = env.client_leaf();
    let started = std::time::Instant::now();
    let resp = env
        .send(env.pki.client_config(&leaf, true, &[]), get("/"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::GATEWAY_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered at the timeout, not after the upstream"
    );
    let j = json_error(&resp);
    assert_eq!(j["error"], "upstream_timeout");
    assert_eq!(slow.seen().len(), 1);
}

#[tokio::test]
async fn http2_through_alpn() {
    let env = Env::start().await;
    let leaf = env.client_leaf();
    let cfg = env.pki.client_config(&leaf, true, &[b"h2"]);
    let tls = hookgate::client::connect(env.addr, "localhost", cfg)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::post("https://webhooks.example.com/h2")
        .version(Version::HTTP_2)
        .body(full("{\"h2\":true}"))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), Version::HTTP_2);
    let r = &env.upstream.seen()[0];
    assert_eq!(r.version, Version::HTTP_11, "the upstream speaks HTTP/1.1");
    assert_eq!(
        r.headers["host"], "webhooks.example.com",
        ":authority becomes Host"
    );
    assert_eq!(r.uri, "/h2");
    assert_eq!(r.body.as_ref(), b"{\"h2\":true}");
    assert_eq!(
        r.headers["x-client-cert-subject"],
        "CN=wise-client,O=Wise Test"
    );
}

#[tokio::test]
async fn sixty_kib_body_arrives_byte_exact() {
    let env = Env::start().await;
    let leaf = env.client_leaf();
    let body: Vec<u8> = (0..60 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let req = webhook().body(full(body.clone())).unwrap();
    let resp = env
        .send(env.pki.client_config(&leaf, true, &[]), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let r = &env.upstream.seen()[0];
    assert_eq!(r.body.len(), body.len());
    assert!(r.body.as_ref() == body.as_slice(), "body differs");
}

#[tokio::test]
async fn unix_socket_upstream() {
    let dir = TempDir::new("unix");
    let sock = dir.path().join("app.sock");
    let upstream = EchoUpstream::default();
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(upstream.clone().serve_unix(listener));
    let env = Env::start_with(|_, s| s.upstream_url = format!("unix:{}", sock.display())).await;
    let leaf = env.client_leaf();
    let resp = env
        .send(env.pki.client_config(&leaf, true, &[]), get("/via-unix"))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].uri, "/via-unix");
    assert_eq!(seen[0].headers["host"], "localhost");
    assert!(env.upstream.seen().is_empty());
}

#[tokio::test]
async fn keep_alive_connection_carries_many_requests_with_one_identity() {
    let env = Env::start().await;
    let leaf = env.client_leaf();
    let mut send = env.h1_connection(&leaf).await;
    for i in 0..5 {
        let resp = send.send_request(get(&format!("/{i}"))).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        http_body_util::BodyExt::collect(resp.into_body())
            .await
            .unwrap();
    }
    let seen = env.upstream.seen();
    assert_eq!(seen.len(), 5);
    let ids: std::collections::HashSet<_> = seen
        .iter()
        .map(|r| r.headers["x-request-id"].clone())
        .collect();
    assert_eq!(ids.len(), 5, "each request gets its own X-Request-Id");
    assert!(
        seen.iter()
            .all(|r| r.headers["x-client-cert-sha256"] == sha256_hex(&leaf.der).as_str())
    );
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_handshake_timeout() {
    use tokio::io::AsyncReadExt;
    let env = Env::start().await; // handshake_timeout: 2s in the harness
    let mut tcp = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(6), tcp.read(&mut buf))
        .await
        .expect("the server must close the connection by itself")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without a byte");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "{took:?}"
    );
}

#[tokio::test]
async fn garbage_instead_of_a_client_hello_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = Env::start().await;
    let mut tcp = tokio::net::TcpStream::connect(env.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(
        !buf.starts_with(b"HTTP/"),
        "no HTTP response to a plaintext client"
    );
    assert!(env.upstream.seen().is_empty());
}

#[tokio::test]
async fn oversized_declared_body_is_413_and_not_forwarded() {
    let env = Env::start().await; // limits.max_body: 1MiB by default
    let leaf = env.client_leaf();
    let body = vec![b'x'; (1 << 20) + 1];
    let req = webhook().body(full(body)).unwrap();
    let resp = env
        .send(env.pki.client_config(&leaf, true, &[]), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_error(&resp)["error"], "body_too_large");
    assert!(env.upstream.seen().is_empty());
}

#[tokio::test]
async fn oversized_request_head_is_431() {
    let env = Env::start().await; // limits.max_header_bytes: 16KiB by default
    let leaf = env.client_leaf();
    let req = webhook()
        .header("x-big", "a".repeat(20 * 1024))
        .body(full("{}"))
        .unwrap();
    let resp = env
        .send(env.pki.client_config(&leaf, true, &[]), req)
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert!(env.upstream.seen().is_empty());
}

/// A body of `chunks` × 64 KiB with no declared length, so HTTP/1.1 sends it chunked.
struct Chunked {
    chunks: usize,
}

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.chunks == 0 {
            return std::task::Poll::Ready(None);
        }
        self.chunks -= 1;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(
            vec![b'y'; 64 * 1024],
        )))))
    }
}

#[tokio::test]
async fn chunked_body_growing_past_the_limit_is_413_and_never_arrives_complete() {
    let env = Env::start().await; // limits.max_body: 1MiB
    let leaf = env.client_leaf();
    let mut send = env.h1_connection(&leaf).await;
    // 20 × 64 KiB = 1.25 MiB, with no Content-Length.
    let req = Request::post("/big")
        .header("host", "localhost")
        .body(Chunked { chunks: 20 })
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // The upstream never saw a complete request: it records only bodies that ended cleanly.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        env.upstream.seen().is_empty(),
        "a truncated body must not look complete"
    );

    // Under the limit, the same kind of body goes through whole.
    let leaf = env.client_leaf();
    let mut send = env.h1_connection(&leaf).await;
    let req = Request::post("/ok")
        .header("host", "localhost")
        .body(Chunked { chunks: 4 })
        .unwrap();
    assert_eq!(
        send.send_request(req).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(env.upstream.seen()[0].body.len(), 4 * 64 * 1024);
}

/// A chunked body with one data frame and then trailers.
struct WithTrailers {
    sent_data: bool,
    trailers: Option<http::HeaderMap>,
}

impl hyper::body::Body for WithTrailers {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if !self.sent_data {
            self.sent_data = true;
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
                b"{}",
            )))));
        }
        std::task::Poll::Ready(
            self.trailers
                .take()
                .map(|t| Ok(hyper::body::Frame::trailers(t))),
        )
    }
}

#[tokio::test]
async fn identity_headers_cannot_be_smuggled_in_trailers() {
    let env = Env::start().await;
    let leaf = env.client_leaf();
    let mut send = env.h1_connection(&leaf).await;
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-client-cert-subject", "CN=admin".parse().unwrap());
    trailers.insert("x-checksum", "abc".parse().unwrap());
    let req = Request::post("/t")
        .header("host", "localhost")
        .header("te", "trailers")
        .header("trailer", "X-Client-Cert-Subject, X-Checksum")
        .body(WithTrailers {
            sent_data: false,
            trailers: Some(trailers),
        })
        .unwrap();
    assert_eq!(
        send.send_request(req).await.unwrap().status(),
        StatusCode::OK
    );
    let r = &env.upstream.seen()[0];
    let t = r.trailers.clone().unwrap_or_default();
    assert!(!t.contains_key("x-client-cert-subject"), "smuggled: {t:?}");
    assert_eq!(
        t.get("x-checksum").map(|v| v.to_str().unwrap()),
        Some("abc"),
        "other trailers pass: {t:?}"
    );
    assert_eq!(
        r.headers["x-client-cert-subject"],
        "CN=wise-client,O=Wise Test"
    );
}
