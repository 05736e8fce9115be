//! Hostile and broken input on the wire, limits, timeouts, PROXY protocol, and the drain: a
//! clear status or a closed connection, never a hang, and a good client is served after.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hookgate::client::metric_value;
use hookgate::demo::EchoUpstream;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full, StreamBody};
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Reads until EOF, an error, or `limit`; returns what arrived and whether the peer closed.
async fn read_until_closed<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    limit: Duration,
) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, r.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (out, true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (out, false),
        }
    }
}

async fn good_client_ok(env: &Env) {
    let leaf = env.client_leaf();
    assert_eq!(
        env.try_get(env.pki.client_config(&leaf, true, &[])).await,
        Ok(StatusCode::OK),
        "a good client is served"
    );
}

#[tokio::test]
async fn garbage_and_plain_http_on_the_tls_port_are_closed() {
    let env = Env::start().await;
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"\x00\xff\x13\x37 random garbage \x16\x03",
        b"\x16\x03\x01\xff\xff",
    ] {
        let mut s = TcpStream::connect(env.addr).await.unwrap();
        s.write_all(junk).await.unwrap();
        let started = Instant::now();
        let (_, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        assert!(closed, "closed within seconds: {junk:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "{junk:?}");
    }
    good_client_ok(&env).await;
    env.wait_metrics(&[(
        "hookgate_tls_handshakes_total{result=\"protocol_error\"}",
        3.0,
    )])
    .await;
    assert_eq!(env.upstream.seen().len(), 1);
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_handshake_timeout() {
    let env = Env::start().await; // tls.handshake_timeout: 2s
    let mut s = TcpStream::connect(env.addr).await.unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(6)).await;
    let took = started.elapsed();
    assert!(closed, "the silent connection was closed");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "closed after the 2 s handshake timeout: {took:?}"
    );
    env.wait_metrics(&[("hookgate_tls_handshakes_total{result=\"timeout\"}", 1.0)])
        .await;
}

#[tokio::test]
async fn a_slow_header_sender_is_closed_after_header_read_timeout() {
    let env = Env::start_with(|_, s| {
        s.extra_yaml = "limits: {header_read_timeout: 1s}\n".into();
    })
    .await;
    let leaf = env.client_leaf();
    let mut tls = env.tls(&leaf, b"http/1.1").await;
    let started = Instant::now();
    // One header byte every 300 ms: never a complete head.
    let mut closed_at = None;
    for b in b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa" {
        if tls.write_all(&[*b]).await.is_err() {
            closed_at = Some(started.elapsed());
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(300), tls.read(&mut buf)).await {
            // A 408 (or an empty read) means hyper gave up on the head.
            if matches!(r, Ok(0) | Err(_)) || r.is_ok() {
                closed_at = Some(started.elapsed());
                break;
            }
        }
    }
    let took = closed_at.expect("the slow sender was never cut off");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "closed after the 1 s header_read_timeout: {took:?}"
    );
    assert!(env.upstream.seen().is_empty());
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_idle_timeout() {
    let env = Env::start_with(|_, s| {
        s.extra_yaml = "limits: {idle_timeout: 1s}\n".into();
    })
    .await;
    let leaf = env.client_leaf();
    let tls = env.tls(&leaf, b"http/1.1").await;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let resp = send.send_request(get("/")).await.unwrap();
    resp.into_body().collect().await.unwrap();
    let idle_from = Instant::now();
    // The server closes the connection: the client's connection task ends.
    tokio::time::timeout(Duration::from_secs(4), conn)
        .await
        .expect("the idle connection was closed by hookgate")
        .unwrap()
        .unwrap();
    let took = idle_from.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "not before idle_timeout: {took:?}"
    );
    env.wait_metrics(&[("hookgate_connections_open", 0.0)])
        .await;
}

/// Sends `head` and `body` on a fresh mTLS connection as raw bytes and returns the response
/// text (whatever arrived before the connection closed or 5 s passed).
async fn raw_exchange(env: &Env, head: &str, body: &[u8]) -> String {
    let leaf = env.client_leaf();
    let mut tls = env.tls(&leaf, b"http/1.1").await;
    tls.write_all(head.as_bytes()).await.unwrap();
    // Keep sending even after the answer: a client does not stop to read mid-upload. Errors
    // (a closed connection) end the upload.
    let (mut rd, mut wr) = tokio::io::split(tls);
    let body = body.to_vec();
    let writer = tokio::spawn(async move {
        for chunk in body.chunks(16 * 1024) {
            if wr.write_all(chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.flush().await;
        wr
    });
    let (text, _) = read_until_closed(&mut rd, Duration::from_secs(5)).await;
    let _ = writer.await;
    String::from_utf8_lossy(&text).into_owned()
}

#[tokio::test]
async fn an_oversized_body_gets_a_readable_413_and_nothing_reaches_the_app() {
    let env = Env::start_with(|_, s| s.extra_yaml = "limits: {max_body: 64KiB}\n".into()).await;
    let body = vec![b'x'; 1024 * 1024];
    let head = format!(
        "POST /big HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let resp = raw_exchange(&env, &head, &body).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(resp.contains("\"error\":\"body_too_large\""), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("connection: close"),
        "{resp}"
    );
    assert!(env.upstream.seen().is_empty(), "the upstream saw nothing");

    // Chunked: the limit trips mid-stream; the client still reads a 413, and the app never
    // sees a complete request.
    let mut chunked = Vec::new();
    for chunk in body.chunks(32 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend_from_slice(chunk);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = "POST /big HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n";
    let resp = raw_exchange(&env, head, &chunked).await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    assert!(
        env.upstream.seen().is_empty(),
        "the app saw no complete request: {:?}",
        env.upstream
            .seen()
            .iter()
            .map(|r| r.body.len())
            .collect::<Vec<_>>()
    );
    env.wait_metrics(&[(
        "hookgate_rejected_requests_total{reason=\"body_too_large\"}",
        2.0,
    )])
    .await;
    good_client_ok(&env).await;
}

#[tokio::test]
async fn large_headers_get_a_json_431() {
    let env = Env::start().await; // max_header_bytes: 16KiB
    let head = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(32 * 1024)
    );
    let resp = raw_exchange(&env, &head, b"").await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    assert!(resp.contains("\"error\":\"headers_too_large\""), "{resp}");
    // Far past the limit, hyper refuses the head itself (still 431, still counted).
    let head = format!(
        "GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let resp = raw_exchange(&env, &head, b"").await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
    env.wait_metrics(&[
        (
            "hookgate_rejected_requests_total{reason=\"headers_too_large\"}",
            2.0,
        ),
        ("hookgate_requests_total{code=\"431\"}", 2.0),
    ])
    .await;
    assert!(env.upstream.seen().is_empty());
}

/// An upstream that records whether each request body arrived complete.
async fn body_recording_upstream() -> (
    SocketAddr,
    tokio::sync::mpsc::Receiver<Result<usize, String>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let r = req.into_body().collect().await;
                        let _ = tx
                            .send(r.map(|b| b.to_bytes().len()).map_err(|e| e.to_string()))
                            .await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::new(),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn a_client_vanishing_mid_body_aborts_the_upstream_request() {
    let (upstream, mut bodies) = body_recording_upstream().await;
    let env = Env::start_with(|_, s| s.upstream_url = format!("http://{upstream}")).await;
    let leaf = env.client_leaf();
    let mut tls = env.tls(&leaf, b"http/1.1").await;
    tls.write_all(b"POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100000\r\n\r\n")
        .await
        .unwrap();
    tls.write_all(&vec![b'x'; 30_000]).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(tls); // gone, mid-body
    let seen = tokio::time::timeout(Duration::from_secs(5), bodies.recv())
        .await
        .expect("the upstream request ended")
        .unwrap();
    assert!(
        seen.is_err(),
        "the upstream saw an aborted body, not a complete one: {seen:?}"
    );
    good_client_ok(&env).await;
}

#[tokio::test]
async fn an_upstream_dying_mid_response_cuts_the_client_off() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\nonly part of it")
                .await;
            drop(s);
        }
    });
    let env = Env::start_with(|_, s| s.upstream_url = format!("http://{upstream}")).await;
    let leaf = env.client_leaf();
    let mut send = env.h1_connection::<Full<Bytes>>(&leaf).await;
    let resp = send.send_request(get("/")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the headers had arrived");
    let body = resp.into_body().collect().await;
    assert!(body.is_err(), "the body must fail, not complete: {body:?}");
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test]
async fn a_100_mib_response_streams_with_flat_memory() {
    const TOTAL: usize = 100 * 1024 * 1024;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                let chunk = Bytes::from(vec![b'z'; 64 * 1024]);
                let stream = futures_util::stream::iter((0..TOTAL / chunk.len()).map(move |_| {
                    Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk.clone()))
                }));
                Ok::<_, std::convert::Infallible>(http::Response::new(StreamBody::new(stream)))
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc),
            );
        }
    });
    let env = Env::start_with(|_, s| s.upstream_url = format!("http://{upstream}")).await;
    let leaf = env.client_leaf();
    let mut send = env.h1_connection::<Full<Bytes>>(&leaf).await;
    let before = rss_bytes();
    let mut peak = before;
    let mut body = send.send_request(get("/big")).await.unwrap().into_body();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.unwrap().data_ref() {
            total += d.len();
        }
        peak = peak.max(rss_bytes());
    }
    assert_eq!(total, TOTAL);
    let growth = peak.saturating_sub(before);
    eprintln!(
        "RSS before {before} peak {peak}: +{} KiB while streaming 100 MiB",
        growth / 1024
    );
    // Upstream, proxy and client all live in this process; flat means far below the payload.
    assert!(growth < 16 * 1024 * 1024, "RSS grew by {growth} bytes");
}

/// Builds a PROXY v2 header for a TCP/IPv4 client.
fn proxy_v2(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let (SocketAddr::V4(s), SocketAddr::V4(d)) = (src, dst) else {
        panic!("IPv4 only")
    };
    let mut h = hookgate::proxy_protocol::V2_SIGNATURE.to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0x00, 12]);
    h.extend_from_slice(&s.ip().octets());
    h.extend_from_slice(&d.ip().octets());
    h.extend_from_slice(&s.port().to_be_bytes());
    h.extend_from_slice(&d.port().to_be_bytes());
    h
}

/// An mTLS GET over a TCP stream that first carries `preamble`.
async fn get_after(env: &Env, preamble: &[u8]) -> Result<StatusCode, BoxError> {
    let mut tcp = TcpStream::connect(env.addr).await?;
    tcp.write_all(preamble).await?;
    let leaf = env.client_leaf();
    let cfg = env.pki.client_config(&leaf, true, &[b"http/1.1"]);
    let name = pki_types::ServerName::try_from("localhost")?;
    let tls = tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let resp = send.send_request(get("/")).await?;
    Ok(resp.status())
}

#[tokio::test]
async fn proxy_protocol_sets_the_peer_and_source_cidrs_filter_it() {
    let env = Env::start_with(|_, s| {
        s.extra_yaml = "proxy_protocol: v2\nclients: {source_cidrs: [203.0.113.0/24]}\n".into();
    })
    .await;
    let lb: SocketAddr = "10.0.0.5:443".parse().unwrap();
    let allowed = proxy_v2("203.0.113.9:50000".parse().unwrap(), lb);
    assert_eq!(get_after(&env, &allowed).await.unwrap(), StatusCode::OK);
    let seen = env.upstream.seen();
    assert_eq!(
        seen[0].headers["x-forwarded-for"], "203.0.113.9",
        "the PROXY source"
    );

    let denied = proxy_v2("198.51.100.7:50000".parse().unwrap(), lb);
    assert!(
        get_after(&env, &denied).await.is_err(),
        "outside source_cidrs"
    );
    let malformed = [
        &hookgate::proxy_protocol::V2_SIGNATURE[..],
        &[0x21, 0x11, 0x00, 3, 1, 2, 3],
    ]
    .concat();
    assert!(
        get_after(&env, &malformed).await.is_err(),
        "malformed PROXY header"
    );
    assert!(
        get_after(&env, b"").await.is_err(),
        "no PROXY header at all"
    );
    assert_eq!(env.upstream.seen().len(), 1);
    env.wait_metrics(&[
        (
            "hookgate_tls_handshakes_total{result=\"source_denied\"}",
            1.0,
        ),
        ("hookgate_tls_handshakes_total{result=\"ok\"}", 1.0),
    ])
    .await;
}

#[tokio::test]
async fn source_cidrs_without_proxy_protocol_use_the_tcp_peer() {
    let env = Env::start_with(|_, s| {
        s.extra_yaml = "clients: {source_cidrs: [192.0.2.0/24]}\n".into();
    })
    .await;
    assert!(
        get_after(&env, b"").await.is_err(),
        "127.0.0.1 is not in 192.0.2.0/24"
    );
    env.wait_metrics(&[(
        "hookgate_tls_handshakes_total{result=\"source_denied\"}",
        1.0,
    )])
    .await;
    assert!(env.upstream.seen().is_empty());
}

/// A ClientHello that offers only `version` (no supported_versions extension), as a TLS 1.0 or
/// 1.1 client sends it.
fn legacy_client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version);
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xC0, 0x13, 0x00, 0x2F]); // ECDHE-RSA-AES128-SHA, AES128-SHA
    body.extend_from_slice(&[0x01, 0x00]); // null compression
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&u16::try_from(hs.len()).unwrap().to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[tokio::test]
async fn tls_1_0_and_1_1_clients_are_refused() {
    let env = Env::start().await;
    for version in [[0x03, 0x01], [0x03, 0x02]] {
        let mut s = TcpStream::connect(env.addr).await.unwrap();
        s.write_all(&legacy_client_hello(version)).await.unwrap();
        let (reply, closed) = read_until_closed(&mut s, Duration::from_secs(5)).await;
        assert!(closed, "{version:?}");
        assert_eq!(
            reply.first(),
            Some(&0x15),
            "a TLS alert record, no ServerHello: {reply:?}"
        );
    }
    env.wait_metrics(&[(
        "hookgate_tls_handshakes_total{result=\"protocol_error\"}",
        2.0,
    )])
    .await;
}

#[tokio::test]
async fn connections_past_max_connections_are_shed_and_counted() {
    let env = Env::start_with(|_, s| s.extra_yaml = "limits: {max_connections: 2}\n".into()).await;
    let leaf = env.client_leaf();
    let mut held = Vec::new();
    for _ in 0..2 {
        let tls = env.tls(&leaf, b"http/1.1").await;
        held.push(tls);
    }
    let mut extra = TcpStream::connect(env.addr).await.unwrap();
    let (_, closed) = read_until_closed(&mut extra, Duration::from_secs(2)).await;
    assert!(closed, "the third connection is closed at once");
    let text = env
        .wait_metrics(&[
            (
                "hookgate_rejected_requests_total{reason=\"overloaded\"}",
                1.0,
            ),
            ("hookgate_connections_open", 2.0),
        ])
        .await;
    assert_eq!(metric_value(&text, "hookgate_connections_total"), Some(3.0));
    drop(held);
    env.wait_metrics(&[("hookgate_connections_open", 0.0)])
        .await;
    good_client_ok(&env).await;
}

#[tokio::test]
async fn after_the_grace_period_a_waiting_request_gets_503_shutting_down() {
    let slow = EchoUpstream::with_delay(Duration::from_secs(5));
    let slow_addr = slow.clone().spawn().await.unwrap();
    let env = Env::start_with(|_, s| {
        s.upstream_url = format!("http://{slow_addr}");
        s.request_timeout = "10s";
        // write_config sets grace_period 2s.
    })
    .await;
    let leaf = env.client_leaf();
    let cfg = env.pki.client_config(&leaf, true, &[]);
    let addr = env.addr;
    let waiting = tokio::spawn(async move {
        hookgate::client::request_once(addr, "localhost", cfg, get("/slow")).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let Env { server, .. } = env;
    let started = Instant::now();
    server.shutdown().await;
    let resp = waiting.await.unwrap().unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        String::from_utf8_lossy(resp.body()).contains("\"error\":\"shutting_down\""),
        "{resp:?}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(4),
        "answered when the 2 s grace ran out: {took:?}"
    );
}

#[tokio::test]
async fn an_http2_rapid_reset_flood_closes_the_connection() {
    let env = Env::start().await;
    let leaf = env.client_leaf();
    let tls = env.tls(&leaf, b"h2").await;
    let (mut client, conn) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(conn);
    let mut sent = 0;
    for _ in 0..2000 {
        let req = http::Request::get("https://localhost/").body(()).unwrap();
        let Ok(ready) = client.clone().ready().await else {
            break;
        };
        client = ready;
        let Ok((_resp, mut stream)) = client.send_request(req, false) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
    }
    // The client still holds its handle, so only the server can end the connection.
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    eprintln!(
        "sent {sent} streams; connection ended: {ended:?}; upstream saw {}",
        env.upstream.seen().len()
    );
    assert!(
        ended.is_ok(),
        "hookgate closed the flooding connection (sent {sent} streams)"
    );
    assert!(
        env.upstream.seen().len() < 500,
        "the flood was cut short: the app saw {} requests",
        env.upstream.seen().len()
    );
    good_client_ok(&env).await;
}

#[tokio::test]
async fn streams_abandoned_after_they_were_accepted_also_close_the_connection() {
    // A slower flood than h2's own guard catches: each stream is accepted (the request is
    // waiting on the slow app) before the client resets it.
    let slow = EchoUpstream::with_delay(Duration::from_secs(2));
    let slow_addr = slow.clone().spawn().await.unwrap();
    let env = Env::start_with(|_, s| s.upstream_url = format!("http://{slow_addr}")).await;
    let leaf = env.client_leaf();
    let tls = env.tls(&leaf, b"h2").await;
    let (mut client, conn) = h2::client::handshake(tls).await.unwrap();
    let conn = tokio::spawn(conn);
    let limit = hookgate::listener::MAX_ABANDONED_REQUESTS as usize;
    let mut sent = 0;
    for _ in 0..limit * 2 {
        let req = http::Request::get("https://localhost/").body(()).unwrap();
        let Ok(ready) = client.clone().ready().await else {
            break;
        };
        client = ready;
        let Ok((_resp, mut stream)) = client.send_request(req, true) else {
            break;
        };
        tokio::time::sleep(Duration::from_millis(5)).await;
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
        if conn.is_finished() {
            break;
        }
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), conn).await;
    assert!(
        ended.is_ok(),
        "hookgate closed the connection after {sent} abandoned streams"
    );
    assert!(
        (limit..limit + 20).contains(&sent),
        "closed at about {limit} abandoned requests, after {sent}"
    );
    good_client_ok(&env).await;
}
