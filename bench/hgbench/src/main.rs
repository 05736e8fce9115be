//! Helpers for `bench/run` that oha cannot do:
//!
//! * `idle`: open N mTLS connections (handshake plus one GET each, then silence), report when
//!   they are all up, and hold them for a while so the harness can read the proxy's RSS;
//! * `startup`: spawn a proxy, time how long until `/readyz` answers 200 and until a first mTLS
//!   request through it answers 200, read the RSS of its process tree, then stop it.
//!
//! Everything targets loopback and stops by itself (`--hold`, `--timeout`).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::client::Resumption;
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const USAGE: &str = "usage:
  hgbench idle --addr IP:PORT --cert CHAIN.pem --key KEY.pem --ca SERVER_ROOT.pem -n N
               [--concurrency 64] [--hold SECS] --ready-file PATH
  hgbench startup [--readyz IP:PORT] --probe IP:PORT --cert .. --key .. --ca ..
               [--timeout SECS] [--settle-ms 300] -- COMMAND ARGS...";

struct Args {
    opts: HashMap<String, String>,
    rest: Vec<String>,
}

impl Args {
    fn parse(args: &[String]) -> Self {
        let mut opts = HashMap::new();
        let mut rest = Vec::new();
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            if a == "--" {
                rest = args[i + 1..].to_vec();
                break;
            }
            if let Some(k) = a.strip_prefix("--").or_else(|| a.strip_prefix('-')) {
                let v = args.get(i + 1).cloned().unwrap_or_default();
                opts.insert(k.to_string(), v);
                i += 2;
            } else {
                die(&format!("unexpected argument {a}"));
            }
        }
        Self { opts, rest }
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.opts.get(k).map(String::as_str)
    }
    fn req(&self, k: &str) -> &str {
        self.get(k)
            .unwrap_or_else(|| die(&format!("--{k} is required")))
    }
    fn num(&self, k: &str, default: u64) -> u64 {
        self.get(k).map_or(default, |v| {
            v.parse().unwrap_or_else(|_| die(&format!("--{k}: not a number")))
        })
    }
}

fn die(msg: &str) -> ! {
    eprintln!("hgbench: {msg}\n{USAGE}");
    std::process::exit(2)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = argv.first() else { die("no command") };
    let args = Args::parse(&argv[1..]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = match cmd.as_str() {
        "idle" => rt.block_on(idle(&args)),
        "startup" => rt.block_on(startup(&args)),
        _ => die(&format!("unknown command {cmd}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hgbench {cmd}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn tls(args: &Args) -> io::Result<TlsConnector> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(args.req("cert"))
        .map_err(io::Error::other)?
        .collect::<Result<_, _>>()
        .map_err(io::Error::other)?;
    let key = PrivateKeyDer::from_pem_file(args.req("key")).map_err(io::Error::other)?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(args.req("ca")).map_err(io::Error::other)? {
        roots.add(c.map_err(io::Error::other)?).map_err(io::Error::other)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(io::Error::other)?;
    // Every connection is a full handshake, as a fresh sender's would be.
    cfg.resumption = Resumption::disabled();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(cfg)))
}

async fn connect(tls: &TlsConnector, addr: SocketAddr) -> io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost").map_err(io::Error::other)?;
    tls.connect(name, tcp).await
}

/// Sends `GET path` and reads the response (head plus a Content-Length body); returns the
/// status code.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, path: &str, close: bool) -> io::Result<u16> {
    let conn = if close { "Connection: close\r\n" } else { "" };
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: hgbench\r\n{conn}\r\n");
    s.write_all(req.as_bytes()).await?;
    s.flush().await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before a response"));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::other("response head too large"));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("no status line"))?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < len {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        have += n;
    }
    Ok(status)
}

async fn idle(args: &Args) -> io::Result<()> {
    let addr: SocketAddr = args.req("addr").parse().map_err(io::Error::other)?;
    let n = args.num("n", 1000);
    let hold = Duration::from_secs(args.num("hold", 60));
    let ready_file = args.req("ready-file").to_string();
    let tls = tls(args)?;
    let sem = Arc::new(Semaphore::new(args.num("concurrency", 64) as usize));
    let started = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..n {
        let permit = sem.clone().acquire_owned().await.map_err(io::Error::other)?;
        let tls = tls.clone();
        set.spawn(async move {
            let _permit = permit;
            let mut s = connect(&tls, addr).await?;
            let status = get(&mut s, "/", false).await?;
            if status != 200 {
                return Err(io::Error::other(format!("status {status}")));
            }
            Ok::<_, io::Error>(s)
        });
    }
    let mut held = Vec::with_capacity(n as usize);
    let mut failed = 0u64;
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        match r.map_err(io::Error::other).and_then(|r| r) {
            Ok(s) => held.push(s),
            Err(e) => {
                failed += 1;
                first_err.get_or_insert(e.to_string());
            }
        }
    }
    let line = format!(
        "{{\"open\":{},\"failed\":{},\"ms\":{},\"error\":{:?}}}\n",
        held.len(),
        failed,
        started.elapsed().as_millis(),
        first_err.unwrap_or_default()
    );
    std::fs::write(&ready_file, line)?;
    tokio::time::sleep(hold).await;
    drop(held);
    Ok(())
}

async fn startup(args: &Args) -> io::Result<()> {
    if args.rest.is_empty() {
        die("startup needs -- COMMAND");
    }
    let probe: SocketAddr = args.req("probe").parse().map_err(io::Error::other)?;
    let readyz: Option<SocketAddr> = match args.get("readyz") {
        Some(a) => Some(a.parse().map_err(io::Error::other)?),
        None => None,
    };
    let timeout = Duration::from_secs(args.num("timeout", 10));
    let settle = Duration::from_millis(args.num("settle-ms", 300));
    let tls = tls(args)?;

    let t0 = Instant::now();
    let mut child = Command::new(&args.rest[0]).args(&args.rest[1..]).spawn()?;
    let pid = child.id();
    let mut ready_at: Option<Duration> = None;
    let mut ok_at: Option<Duration> = None;
    let mut err = None;
    while t0.elapsed() < timeout {
        if let Some(status) = child.try_wait()? {
            err = Some(format!("exited early: {status}"));
            break;
        }
        if let (None, Some(a)) = (ready_at, readyz) {
            if let Ok(Ok(mut s)) =
                tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(a)).await
            {
                if matches!(get(&mut s, "/readyz", true).await, Ok(200)) {
                    ready_at = Some(t0.elapsed());
                }
            }
        }
        if ok_at.is_none() {
            let r = tokio::time::timeout(Duration::from_millis(500), async {
                let mut s = connect(&tls, probe).await?;
                get(&mut s, "/", true).await
            })
            .await;
            if matches!(r, Ok(Ok(200))) {
                ok_at = Some(t0.elapsed());
            }
        }
        if ok_at.is_some() && (readyz.is_none() || ready_at.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_micros(500)).await;
    }
    tokio::time::sleep(settle).await;
    let rss = tree_rss_kib(pid);
    // SIGTERM lets nginx's master take its workers down; hookgate drains (the bench config sets
    // shutdown.drain_delay to 0s).
    let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ms = |d: Option<Duration>| d.map_or("null".to_string(), |d| format!("{:.2}", d.as_secs_f64() * 1000.0));
    println!(
        "{{\"ready_ms\":{},\"first_ok_ms\":{},\"rss_kib\":{},\"error\":{:?}}}",
        ms(ready_at),
        ms(ok_at),
        rss,
        err.unwrap_or_default()
    );
    if ok_at.is_none() {
        return Err(io::Error::other("no 200 through the proxy before the timeout"));
    }
    Ok(())
}

/// VmRSS of a process and all its descendants, in KiB.
fn tree_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let own: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let mut total = own;
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                total += tree_rss_kib(c);
            }
        }
    }
    total
}
