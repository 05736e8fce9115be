//! Command line: `run`, `check`, `send-test` and `demo` (SPEC "Commands"). Exit codes: 0 ok, 64 bad config
//! or arguments (before any port is bound), 1 runtime failure.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::Prepared;

/// EX_USAGE from sysexits.h: bad config or arguments.
pub const EXIT_CONFIG: i32 = 64;
pub const EXIT_RUNTIME: i32 = 1;

#[derive(Debug, Parser)]
#[command(
    name = "hookgate",
    version,
    about = "mTLS-terminating sidecar for webhook receivers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxy until SIGTERM or SIGINT.
    Run {
        #[arg(long, env = "HOOKGATE_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
    /// Load and validate the config and every file it names; print what was loaded.
    Check {
        #[arg(long, env = "HOOKGATE_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
    /// Act as the webhook sender: POST a Wise-shaped test notification with a client
    /// certificate (and a signature when given a key); print the status and timing.
    SendTest(crate::send_test::Options),
    /// Run a throwaway PKI, an echo upstream and the proxy on 127.0.0.1.
    Demo {
        /// Send test requests through, check what the upstream received, exit 0 or 1.
        #[arg(long)]
        self_test: bool,
    },
}

/// Parses the arguments and runs the command; returns the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_CONFIG } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    match cli.command {
        Command::Run { config } => match load(&config) {
            Some(p) => run(p),
            None => EXIT_CONFIG,
        },
        Command::Check { config } => match load(&config) {
            Some(p) => {
                print_check(&p);
                0
            }
            None => EXIT_CONFIG,
        },
        Command::SendTest(opts) => match runtime() {
            Ok(rt) => rt.block_on(crate::send_test::run(opts)),
            Err(e) => {
                eprintln!("error: cannot start the runtime: {e}");
                EXIT_RUNTIME
            }
        },
        Command::Demo { self_test } => match runtime() {
            Ok(rt) => rt.block_on(crate::demo::run(self_test)),
            Err(e) => {
                eprintln!("error: cannot start the runtime: {e}");
                EXIT_RUNTIME
            }
        },
    }
}

fn load(path: &std::path::Path) -> Option<Prepared> {
    match crate::prepare(path) {
        Ok(p) => Some(p),
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} problem(s); nothing was started",
                path.display(),
                errors.0.len()
            );
            None
        }
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn print_check(p: &Prepared) {
    let c = &p.config;
    let m = &p.material;
    println!("config {}: OK", c.source.display());
    println!("listen:   {}", c.listen);
    println!("upstream: {}", c.upstream.target);
    println!("server certificate ({}):", c.tls.cert.display());
    println!("  subject: {}", m.server.subject);
    println!("  issuer:  {}", m.server.issuer);
    println!(
        "  SANs:    {}",
        if m.server.sans.is_empty() {
            "(none)".into()
        } else {
            m.server.sans.join(", ")
        }
    );
    println!("  expires: {}", m.server.not_after);
    println!(
        "  chain:   {} certificate(s); key matches",
        m.server_chain_len
    );
    println!("client CAs ({} certificate(s)):", m.client_cas.len());
    for ca in &m.client_cas {
        println!(
            "  {} [{}]\n    expires {}  sha256 {}  from {}",
            ca.summary.subject,
            if ca.anchor {
                "trust anchor"
            } else {
                "intermediate"
            },
            ca.summary.not_after,
            ca.summary.sha256,
            ca.file.display()
        );
    }
    if m.crls.is_empty() {
        println!("CRLs:     none (revocation is not checked)");
    } else {
        println!(
            "CRLs ({}; scope {:?}; CA without a CRL: {:?}; CRL past nextUpdate: {:?}):",
            m.crls.len(),
            c.tls.crl_scope,
            c.tls.crl_missing,
            c.tls.crl_expired
        );
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        for crl in &m.crls {
            let stale = crl.next_update_unix.is_some_and(|t| t < now);
            println!(
                "  {}: {} revoked; next update {}{}  from {}",
                crl.issuer,
                crl.revoked,
                crl.next_update.as_deref().unwrap_or("(none)"),
                if stale {
                    " (PAST: refreshed CRL needed)"
                } else {
                    ""
                },
                crl.file.display()
            );
            if !crl.issuer_in_bundle {
                println!(
                    "    issuer not in tls.client_ca: applies only to an intermediate that clients send"
                );
            }
        }
    }
    println!("max chain depth: {} intermediate(s)", c.tls.max_chain_depth);
    let sig = &p.signature;
    println!("signature: {:?} (header {})", sig.mode, sig.header);
    for k in &sig.keys {
        println!("  key {}  spki sha256 {}", k.name, k.spki_sha256);
    }
    match &c.clients.allow {
        None => {
            println!("allow-list: none (any client with a valid chain to the CAs above is let in)");
        }
        Some(entries) => {
            println!(
                "allow-list ({} entr{}; a client must match one):",
                entries.len(),
                if entries.len() == 1 { "y" } else { "ies" }
            );
            for e in entries {
                println!("  - {}", describe_entry(e));
            }
        }
    }
}

fn describe_entry(e: &crate::config::AllowEntry) -> String {
    let mut parts = Vec::new();
    let mut text = |k: &str, v: &Option<String>| {
        if let Some(v) = v {
            parts.push(format!("{k}={v:?}"));
        }
    };
    text("subject_cn", &e.subject_cn);
    text("subject_o", &e.subject_o);
    text("subject_ou", &e.subject_ou);
    text("san_dns", &e.san_dns);
    text("san_uri", &e.san_uri);
    text("issuer_cn", &e.issuer_cn);
    for (k, pin) in [
        ("spki_sha256", &e.spki_sha256),
        ("cert_sha256", &e.cert_sha256),
    ] {
        if let Some(p) = pin {
            parts.push(format!("{k}={}", crate::identity::hex(p)));
        }
    }
    parts.join(", ")
}

fn run(p: Prepared) -> i32 {
    crate::logging::init(p.config.log);
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return EXIT_RUNTIME;
        }
    };
    rt.block_on(async move {
        let drain_delay = p.config.shutdown.drain_delay;
        let listen = p.config.listen;
        // Handlers first: a SIGTERM that arrives while binding must drain, not kill.
        let mut signals = match Signals::new() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot install signal handlers: {e}");
                return EXIT_RUNTIME;
            }
        };
        let server = match crate::start(p).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%listen, error = %e, "cannot start");
                eprintln!("error: cannot listen on {listen}: {e}");
                return EXIT_RUNTIME;
            }
        };
        // SIGHUP: reload the config and every file it names; a failure keeps the old ones.
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hup) => {
                let reloader = server.reloader();
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        crate::reload::reload_now(&reloader, "SIGHUP", true).await;
                    }
                });
            }
            Err(e) => tracing::warn!(error = %e, "cannot install the SIGHUP handler; reload by file change only"),
        }
        let sig = signals.next().await;
        server.begin_drain();
        tracing::info!(
            signal = sig,
            ?drain_delay,
            "shutting down: /readyz is 503; draining"
        );
        // Keep serving while the endpoints controller takes the pod out of rotation; a second
        // signal skips the wait and exits at once.
        tokio::select! {
            () = tokio::time::sleep(drain_delay) => {}
            s = signals.next() => {
                tracing::warn!(signal = s, "second signal: exiting now");
                return EXIT_RUNTIME;
            }
        }
        tokio::select! {
            () = server.shutdown() => {
                tracing::info!("stopped");
                0
            }
            s = signals.next() => {
                tracing::warn!(signal = s, "second signal: exiting now");
                EXIT_RUNTIME
            }
        }
    })
}

/// SIGTERM and SIGINT as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
