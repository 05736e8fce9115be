//! Shared test harness: a PKI minted per test with rcgen, a recording upstream, and the real
//! proxy started in-process on 127.0.0.1:0 (port 0 so that parallel tests never collide).
#![allow(dead_code)] // each test crate uses a different part of this module
#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use hookgate::demo::EchoUpstream;
use hookgate::pki::{Ca, Leaf, LeafSpec};
use http::{Request, Response};
use http_body_util::Full;
use rustls::{ClientConfig, RootCertStore};

/// A temp dir removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hookgate-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, text).expect("write temp file");
        p
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Wise-shaped PKI: root → intermediate → client leaves, and a server CA + localhost cert.
pub struct Pki {
    pub root: Ca,
    pub intermediate: Ca,
    pub server_ca: Ca,
    pub server: Leaf,
}

impl Pki {
    pub fn new() -> Self {
        let root = Ca::root("Test Root CA", "Wise Test").unwrap();
        let intermediate = root.intermediate("Test Issuing CA", "Wise Test").unwrap();
        let server_ca = Ca::root("Test Server CA", "hookgate tests").unwrap();
        let server = server_ca.issue(&LeafSpec::localhost_server()).unwrap();
        Self {
            root,
            intermediate,
            server_ca,
            server,
        }
    }

    pub fn client(&self, spec: &LeafSpec) -> Leaf {
        self.intermediate.issue(spec).unwrap()
    }

    pub fn server_roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.server_ca.der()).unwrap();
        roots
    }

    /// A client config presenting `chain` (leaf first) with `leaf`'s key.
    pub fn client_config(
        &self,
        leaf: &Leaf,
        send_intermediate: bool,
        alpn: &[&[u8]],
    ) -> Arc<ClientConfig> {
        let mut chain = vec![leaf.der.clone()];
        if send_intermediate {
            chain.push(self.intermediate.der());
        }
        hookgate::client::config(self.server_roots(), Some((chain, leaf.key_der())), alpn).unwrap()
    }

    /// A client config presenting a leaf that did not come from the test PKI.
    pub fn foreign_config(&self, leaf: &Leaf) -> Arc<ClientConfig> {
        hookgate::client::config(
            self.server_roots(),
            Some((vec![leaf.der.clone()], leaf.key_der())),
            &[],
        )
        .unwrap()
    }

    pub fn anonymous_config(&self) -> Arc<ClientConfig> {
        hookgate::client::config(self.server_roots(), None, &[b"http/1.1"]).unwrap()
    }
}

/// How a test wants the proxy set up.
pub struct Setup {
    pub upstream_url: String,
    pub client_ca_pems: Vec<String>,
    pub extra_yaml: String,
    pub server_cert_pem: Option<String>,
    pub server_key_pem: Option<String>,
    /// Extra lines for the `tls:` section, each indented by two spaces.
    pub tls_yaml: String,
    /// More files for the config's directory: (name, content).
    pub extra_files: Vec<(String, String)>,
    pub request_timeout: &'static str,
}

impl Setup {
    pub fn new(pki: &Pki, upstream_url: String) -> Self {
        Self {
            upstream_url,
            client_ca_pems: vec![pki.root.pem()],
            extra_yaml: String::new(),
            server_cert_pem: None,
            server_key_pem: None,
            tls_yaml: String::new(),
            extra_files: Vec::new(),
            request_timeout: "5s",
        }
    }
}

/// Writes the files and the config for `setup`; returns the config path.
pub fn write_config(dir: &TempDir, pki: &Pki, setup: &Setup) -> PathBuf {
    dir.write(
        "server.crt",
        setup.server_cert_pem.as_deref().unwrap_or(&pki.server.pem),
    );
    dir.write(
        "server.key",
        setup
            .server_key_pem
            .as_deref()
            .unwrap_or(&pki.server.key_pem),
    );
    for (name, text) in &setup.extra_files {
        dir.write(name, text);
    }
    let mut cas = Vec::new();
    for (i, pem) in setup.client_ca_pems.iter().enumerate() {
        let name = format!("ca{i}.pem");
        dir.write(&name, pem);
        cas.push(format!("\"{name}\""));
    }
    let yaml = format!(
        "listen: \"127.0.0.1:0\"\n\
         upstream:\n  url: \"{}\"\n  connect_timeout: 1s\n  request_timeout: {}\n\
         tls:\n  cert: server.crt\n  key: server.key\n{}  handshake_timeout: 2s\n{}\
         admin: {{listen: \"127.0.0.1:0\"}}\n\
         shutdown: {{drain_delay: 0s, grace_period: 2s}}\n\
         log: {{format: text, level: warn}}\n{}",
        setup.upstream_url,
        setup.request_timeout,
        // No bundle here means the test's tls_yaml names its own.
        if cas.is_empty() {
            String::new()
        } else {
            format!("  client_ca: [{}]\n", cas.join(", "))
        },
        setup.tls_yaml,
        setup.extra_yaml
    );
    dir.write("config.yaml", &yaml)
}

/// A running proxy with its upstream and PKI.
pub struct Env {
    pub pki: Pki,
    pub upstream: EchoUpstream,
    pub upstream_addr: SocketAddr,
    pub server: hookgate::Server,
    pub addr: SocketAddr,
    pub dir: TempDir,
}

impl Env {
    /// Default: an echo upstream on TCP, the root in the bundle.
    pub async fn start() -> Self {
        Self::start_with(|_, _| {}).await
    }

    /// Like [`Env::start`], after `edit` has changed the setup; it sees the PKI so that it can
    /// put CAs in the bundle or issue a server certificate.
    pub async fn start_with(edit: impl FnOnce(&Pki, &mut Setup)) -> Self {
        let pki = Pki::new();
        let upstream = EchoUpstream::default();
        let upstream_addr = upstream.clone().spawn().await.unwrap();
        let mut setup = Setup::new(&pki, format!("http://{upstream_addr}"));
        edit(&pki, &mut setup);
        let dir = TempDir::new("env");
        let config = write_config(&dir, &pki, &setup);
        let prepared = hookgate::prepare(&config).unwrap_or_else(|e| panic!("{e}"));
        let server = hookgate::start(prepared).await.unwrap();
        let addr = server.local_addr();
        Self {
            pki,
            upstream,
            upstream_addr,
            server,
            addr,
            dir,
        }
    }

    /// A client certificate from the test intermediate with a typical shape.
    pub fn client_leaf(&self) -> Leaf {
        let mut spec = LeafSpec::client("wise-client");
        spec.org = Some("Wise Test".into());
        self.pki.client(&spec)
    }

    /// A TLS connection presenting `leaf` (with the intermediate), offering one ALPN protocol.
    pub async fn tls(
        &self,
        leaf: &Leaf,
        alpn: &[u8],
    ) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let cfg = self.pki.client_config(leaf, true, &[alpn]);
        hookgate::client::connect(self.addr, "localhost", cfg)
            .await
            .unwrap()
    }

    /// A keep-alive HTTP/1.1 connection presenting `leaf` (with the intermediate).
    pub async fn h1_connection<B>(&self, leaf: &Leaf) -> hyper::client::conn::http1::SendRequest<B>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let cfg = self.pki.client_config(leaf, true, &[b"http/1.1"]);
        let tls = hookgate::client::connect(self.addr, "localhost", cfg)
            .await
            .unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .unwrap();
        tokio::spawn(conn);
        send
    }

    /// Sends `GET /` with `cfg`: the status, or the TLS alert that refused the handshake
    /// (`Err(None)` for a failure without an alert).
    pub async fn try_get(
        &self,
        cfg: Arc<ClientConfig>,
    ) -> Result<http::StatusCode, Option<rustls::AlertDescription>> {
        match self.send(cfg, get("/")).await {
            Ok(r) => Ok(r.status()),
            Err(e) => Err(alert_of(e.as_ref())),
        }
    }

    /// The config file the proxy was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Rewrites the config file with `edit` (not reloaded yet).
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let path = self.config_path();
        let yaml = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(yaml)).unwrap();
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let (status, text) = hookgate::client::get_plain(self.server.admin_addr(), "/metrics")
            .await
            .unwrap();
        assert_eq!(status, http::StatusCode::OK);
        text
    }

    /// Waits (up to 5 s) until every series has the wanted value, then returns the exposition;
    /// panics naming the series that never got there. Counters are bumped by connection tasks
    /// that may finish just after the client has seen the outcome, hence the wait.
    pub async fn wait_metrics(&self, want: &[(&str, f64)]) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let text = self.metrics().await;
            let wrong: Vec<String> = want
                .iter()
                .filter_map(|(series, v)| {
                    let got = hookgate::client::metric_value(&text, series);
                    (got != Some(*v)).then(|| format!("{series} = {got:?}, want {v}"))
                })
                .collect();
            if wrong.is_empty() {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "metrics never reached the expected values:\n{}\n\n{text}",
                wrong.join("\n")
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    pub async fn send(
        &self,
        cfg: Arc<ClientConfig>,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Bytes>, BoxError> {
        hookgate::client::request_once(self.addr, "localhost", cfg, req).await
    }
}

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// The TLS alert in an error chain, if the failure was one.
pub fn alert_of(err: &(dyn std::error::Error + 'static)) -> Option<rustls::AlertDescription> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(rustls::Error::AlertReceived(a)) = e.downcast_ref::<rustls::Error>() {
            return Some(*a);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(rustls::Error::AlertReceived(a)) = inner.downcast_ref::<rustls::Error>()
                {
                    return Some(*a);
                }
            }
        }
        cur = e.source();
    }
    None
}

pub fn sha256_hex(der: &[u8]) -> String {
    hookgate::identity::hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref())
}

/// The inner private key of a PKCS#8 document: PKCS#1 for RSA, SEC1 for EC keys.
pub fn pkcs8_inner(pkcs8: &[u8]) -> Vec<u8> {
    fn tlv(b: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = b[0];
        let (len, hdr) = if b[1] < 0x80 {
            (b[1] as usize, 2)
        } else {
            let n = (b[1] & 0x7f) as usize;
            let mut len = 0usize;
            for i in 0..n {
                len = (len << 8) | b[2 + i] as usize;
            }
            (len, 2 + n)
        };
        (tag, &b[hdr..hdr + len], &b[hdr + len..])
    }
    let (_, seq, _) = tlv(pkcs8);
    let (_, _version, rest) = tlv(seq);
    let (_, _alg, rest) = tlv(rest);
    let (tag, key, _) = tlv(rest);
    assert_eq!(tag, 0x04, "PKCS#8 privateKey is an OCTET STRING");
    key.to_vec()
}
