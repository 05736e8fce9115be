//! `hookgate demo`: the embedded default. It mints a throwaway Wise-shaped PKI, runs a built-in
//! echo upstream and the real proxy on free 127.0.0.1 ports, and either waits for Ctrl-C
//! (printing a ready-to-paste `curl` line) or, with `--self-test`, checks the whole path itself.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pki_types::CertificateDer;
use rustls::RootCertStore;
use tokio::net::{TcpListener, UnixListener};

use crate::pki::DemoPki;

// === Echo upstream ===

/// One request as the upstream app saw it.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub uri: String,
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

/// A plain-HTTP app that records every request and answers 200 with a JSON summary of it:
/// the "legacy webhook receiver" of the demo and of the tests.
#[derive(Clone, Default)]
pub struct EchoUpstream {
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    delay: Duration,
}

impl EchoUpstream {
    /// An upstream that waits `delay` before answering (to provoke timeouts).
    pub fn with_delay(delay: Duration) -> Self {
        Self {
            delay,
            ..Self::default()
        }
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Serves on a TCP listener until the task is dropped or aborted.
    pub async fn serve_tcp(self, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(self.clone().serve_io(TokioIo::new(stream)));
        }
    }

    pub async fn serve_unix(self, listener: UnixListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(self.clone().serve_io(TokioIo::new(stream)));
        }
    }

    /// Binds 127.0.0.1:0 and serves in the background; returns the address.
    pub async fn spawn(self) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(self.serve_tcp(listener));
        Ok(addr)
    }

    async fn serve_io<I>(self, io: I)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let svc = service_fn(move |req| self.clone().answer(req));
        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc)
            .await;
    }

    async fn answer(self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
        let (parts, body) = req.into_parts();
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        let body = collected.to_bytes();
        let headers: serde_json::Map<String, serde_json::Value> = parts
            .headers
            .keys()
            .map(|k| {
                let values: Vec<String> = parts
                    .headers
                    .get_all(k)
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                (k.to_string(), serde_json::Value::from(values.join(", ")))
            })
            .collect();
        let summary = serde_json::json!({
            "method": parts.method.as_str(),
            "path": parts.uri.to_string(),
            "headers": headers,
            "body_bytes": body.len(),
        });
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(SeenRequest {
                method: parts.method.to_string(),
                uri: parts.uri.to_string(),
                version: parts.version,
                headers: parts.headers,
                body,
                trailers,
            });
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let mut resp = Response::new(Full::new(Bytes::from(format!("{summary:#}\n"))));
        *resp.status_mut() = StatusCode::OK;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    }
}

// === The demo ===

/// Files the demo writes for the operator to use with curl or `hookgate check`.
pub struct DemoFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    pub client_ca: PathBuf,
    pub server_ca: PathBuf,
    pub signing_key: PathBuf,
}

fn write_files(
    pki: &DemoPki,
    dir: &Path,
    upstream: SocketAddr,
    log_level: &str,
) -> std::io::Result<DemoFiles> {
    std::fs::create_dir_all(dir)?;
    let w = |name: &str, text: &str| -> std::io::Result<PathBuf> {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    };
    // The client sends its leaf and the intermediate, as Wise does; the bundle holds the root.
    let client_cert = w(
        "client.crt",
        &format!("{}{}", pki.client.pem, pki.intermediate.pem()),
    )?;
    let client_key = w("client.key", &pki.client.key_pem)?;
    let client_ca = w("client-ca.pem", &pki.root.pem())?;
    let server_ca = w("server-ca.pem", &pki.server_ca.pem())?;
    w("server.crt", &pki.server.pem)?;
    w("server.key", &pki.server.key_pem)?;
    let signing_key = w("signing.key", &pki.signing_key_pem)?;
    w("signing.pub.pem", &pki.signing_public_pem)?;
    let config = w(
        "config.yaml",
        &format!(
            "# Written by `hookgate demo`; check it with `hookgate check --config <this file>`.\n\
             listen: \"127.0.0.1:0\"\n\
             upstream:\n  url: \"http://{upstream}\"\n  request_timeout: 5s\n\
             tls:\n  cert: server.crt\n  key: server.key\n  client_ca: [client-ca.pem]\n\
             headers:\n  xfcc: true\n\
             signature:\n  mode: enforce\n  keys: [signing.pub.pem]   # the demo's stand-in for wise-production\n\
             admin:\n  listen: \"127.0.0.1:0\"\n\
             shutdown:\n  drain_delay: 0s\n  grace_period: 5s\n\
             log:\n  format: text\n  level: {log_level}\n"
        ),
    )?;
    Ok(DemoFiles {
        dir: dir.to_path_buf(),
        config,
        client_cert,
        client_key,
        client_ca,
        server_ca,
        signing_key,
    })
}

/// The body of the demo's `curl` line.
const CURL_BODY: &str = r#"{"event_type":"transfers#state-change","schema_version":"2.0.0"}"#;

/// Runs the demo; returns the process exit code.
pub async fn run(self_test: bool) -> i32 {
    match run_inner(self_test).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("demo failed: {e}");
            1
        }
    }
}

async fn run_inner(self_test: bool) -> Result<i32, Box<dyn std::error::Error>> {
    let pki = DemoPki::mint()?;
    let upstream = EchoUpstream::default();
    let upstream_addr = upstream.clone().spawn().await?;
    let dir = std::env::temp_dir().join(format!("hookgate-demo-{}", std::process::id()));
    // The self-test prints its own report; the interactive demo shows the access log.
    let log_level = if self_test { "warn" } else { "info" };
    let files = write_files(&pki, &dir, upstream_addr, log_level)?;
    let prepared = crate::prepare(&files.config).map_err(|e| e.to_string())?;
    crate::logging::init(prepared.config.log);
    let server = crate::start(prepared).await?;
    let addr = server.local_addr();
    let admin = server.admin_addr();

    println!("hookgate demo");
    println!("  proxy (mTLS):    https://{addr}");
    println!("  metrics:         http://{admin}/metrics   (also /healthz, /readyz)");
    println!("  echo upstream:   http://{upstream_addr}");
    println!("  files:           {}", files.dir.display());
    println!("  config:          {}", files.config.display());
    println!();
    let signature = crate::signature::sign(pki.signing_key_pem.as_bytes(), CURL_BODY.as_bytes())?;
    println!("Send a webhook as the (demo) sender would, from another terminal:");
    println!();
    println!(
        "  hookgate send-test --url https://{addr}/webhook --ca {} --cert {} --key {} --sign-key {}",
        files.server_ca.display(),
        files.client_cert.display(),
        files.client_key.display(),
        files.signing_key.display(),
    );
    println!();
    println!("or with curl (the body is signed with the demo's key; change a byte and it is 403):");
    println!();
    println!(
        "  curl --cacert {} --cert {} --key {} -H 'Content-Type: application/json' \
         -H 'X-Signature-SHA256: {signature}' --data-binary '{CURL_BODY}' https://{addr}/webhook",
        files.server_ca.display(),
        files.client_cert.display(),
        files.client_key.display(),
    );
    println!();
    println!(
        "Without --cert/--key the TLS handshake is refused; without a valid signature the answer \
         is 403 (signature.mode: enforce). Either way nothing reaches the app."
    );

    let code = if self_test {
        println!();
        self_test_checks(&pki, addr, admin, &upstream).await
    } else {
        println!("Press Ctrl-C to stop.");
        tokio::signal::ctrl_c().await?;
        0
    };
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&files.dir);
    Ok(code)
}

/// One request with a client config that may have failed to build.
async fn send(
    addr: SocketAddr,
    cfg: Result<Arc<rustls::ClientConfig>, rustls::Error>,
    req: http::Result<Request<Full<Bytes>>>,
) -> Result<Response<Bytes>, Box<dyn std::error::Error + Send + Sync>> {
    crate::client::request_once(addr, "localhost", cfg?, req?).await
}

async fn self_test_checks(
    pki: &DemoPki,
    addr: SocketAddr,
    admin: SocketAddr,
    upstream: &EchoUpstream,
) -> i32 {
    let mut failures = 0;
    let mut check = |ok: bool, what: &str| {
        println!("  {} {what}", if ok { "ok  " } else { "FAIL" });
        if !ok {
            failures += 1;
        }
    };
    let mut roots = RootCertStore::empty();
    let _ = roots.add(pki.server_ca.der());
    let body = crate::send_test::event_body("transfers#state-change", "2026-12-04T00:00:00Z");
    let signature =
        crate::signature::sign(pki.signing_key_pem.as_bytes(), body.as_bytes()).unwrap_or_default();
    // Signed as Wise signs; `body` is what is sent (the signature may be for other bytes).
    let signed_req = |sent: &str, signature: &str| {
        Request::post("/webhook")
            .header("host", "localhost")
            .header("content-type", "application/json")
            .header("x-signature-sha256", signature)
            .header("x-client-cert-subject", "CN=spoofed")
            .header("x_client_cert_subject", "CN=spoofed")
            .header("x-forwarded-for", "203.0.113.66")
            .body(Full::new(Bytes::from(sent.to_string())))
    };
    let req = || signed_req(&body, &signature);

    // 1. The sender with its certificate (leaf + intermediate) and a valid signature gets
    //    through.
    let chain: Vec<CertificateDer<'static>> = vec![pki.client.der.clone(), pki.intermediate.der()];
    let with_cert = crate::client::config(
        roots.clone(),
        Some((chain, pki.client.key_der())),
        &[b"http/1.1"],
    );
    let resp = send(addr, with_cert.clone(), req()).await;
    match &resp {
        Ok(r) => check(
            r.status() == StatusCode::OK,
            &format!(
                "signed delivery with a client certificate: POST /webhook -> {}",
                r.status()
            ),
        ),
        Err(e) => check(false, &format!("signed delivery: request failed: {e}")),
    }
    let seen = upstream.seen();
    check(
        seen.len() == 1,
        &format!("upstream received {} request(s)", seen.len()),
    );
    if let Some(r) = seen.first() {
        println!("\n  what the upstream received:");
        println!("    {} {}", r.method, r.uri);
        for (k, v) in &r.headers {
            println!("    {k}: {}", String::from_utf8_lossy(v.as_bytes()));
        }
        println!("    ({} body bytes)\n", r.body.len());
        let subjects: Vec<_> = r.headers.get_all("x-client-cert-subject").iter().collect();
        check(
            subjects.len() == 1 && subjects[0] == "CN=webhooks.demo.invalid,O=hookgate demo sender",
            "X-Client-Cert-Subject is hookgate's own, once; the spoofed copies are gone",
        );
        check(
            !r.headers.contains_key("x_client_cert_subject"),
            "the _-spelled spoof was removed",
        );
        let sha = crate::identity::hex(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, pki.client.der.as_ref()).as_ref(),
        );
        check(
            r.headers
                .get("x-client-cert-sha256")
                .is_some_and(|v| v == sha.as_str()),
            "X-Client-Cert-Sha256 is the SHA-256 of the client's certificate",
        );
        check(
            r.headers
                .get("x-forwarded-for")
                .is_some_and(|v| v == "127.0.0.1"),
            "X-Forwarded-For is the TCP peer, not the client-sent value",
        );
        check(
            r.body.as_ref() == body.as_bytes(),
            "the body arrived byte-exact",
        );
    }

    // 2. A tampered body (the amount changed after signing) is refused with 403.
    let tampered = body.replace("\"processing\"", "\"outgoing_payment_sent\"");
    let resp = send(addr, with_cert.clone(), signed_req(&tampered, &signature)).await;
    match &resp {
        Ok(r) => check(
            r.status() == StatusCode::FORBIDDEN
                && String::from_utf8_lossy(r.body()).contains("signature_invalid"),
            &format!(
                "tampered delivery: -> {} {}",
                r.status(),
                String::from_utf8_lossy(r.body()).trim()
            ),
        ),
        Err(e) => check(false, &format!("tampered delivery: request failed: {e}")),
    }

    // 3. A client without a certificate is refused in the handshake; nothing is forwarded.
    let without = crate::client::config(roots, None, &[b"http/1.1"]);
    let resp = send(addr, without, req()).await;
    match resp {
        Ok(r) => check(false, &format!("no client cert: got HTTP {}", r.status())),
        Err(e) => check(
            true,
            &format!("no client cert: refused in the TLS handshake ({e})"),
        ),
    }
    let n = upstream.seen().len();
    check(
        n == 1,
        &format!("upstream still received {n} request(s) in all"),
    );

    // 4. The metrics tell the same story.
    match crate::client::get_plain(admin, "/metrics").await {
        Ok((status, text)) => {
            let v = |s: &str| crate::client::metric_value(&text, s).unwrap_or(-1.0);
            for (series, want) in [
                ("hookgate_tls_handshakes_total{result=\"ok\"}", 2.0),
                (
                    "hookgate_tls_handshakes_total{result=\"no_client_cert\"}",
                    1.0,
                ),
                ("hookgate_requests_total{code=\"200\"}", 1.0),
                ("hookgate_requests_total{code=\"403\"}", 1.0),
                ("hookgate_signature_checks_total{result=\"valid\"}", 1.0),
                ("hookgate_signature_checks_total{result=\"invalid\"}", 1.0),
            ] {
                check(
                    status == StatusCode::OK && (v(series) - want).abs() < f64::EPSILON,
                    &format!("metrics: {series} = {} (want {want})", v(series)),
                );
            }
        }
        Err(e) => check(false, &format!("metrics: GET /metrics failed: {e}")),
    }

    println!();
    if failures == 0 {
        println!("self-test passed");
        0
    } else {
        println!("self-test FAILED: {failures} check(s)");
        1
    }
}
