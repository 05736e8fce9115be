//! hookgate: an mTLS-terminating sidecar for webhook receivers.
//!
//! The binary is a thin shell over this library so that tests drive the real proxy in-process:
//! [`prepare`] loads and checks everything (binding nothing), [`start`] binds and serves, and
//! the returned [`Server`] reports its address and shuts down gracefully.

pub mod access_log;
pub mod admin;
pub mod cli;
pub mod client;
pub mod config;
pub mod demo;
pub mod error;
pub mod identity;
pub mod listener;
pub mod logging;
pub mod metrics;
pub mod pki;
pub mod policy;
pub mod proxy;
pub mod proxy_protocol;
pub mod refusal_log;
pub mod reload;
pub mod send_test;
pub mod signature;
pub mod tls;
pub mod upstream;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

pub use config::{Config, ConfigError, ConfigErrors};
pub use tls::Material;

/// A config with every file it names loaded and checked: ready to bind.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub config: Config,
    pub material: Material,
    pub signature: Arc<signature::SignatureCheck>,
    /// The files' hashes from just before they were read, so that a change made between
    /// loading and serving is still seen as a change.
    file_hashes: reload::Hashes,
}

/// Reads the config at `path` and every file it names, reporting all problems at once.
pub fn prepare(path: &Path) -> Result<Prepared, ConfigErrors> {
    let config = Config::load(path)?;
    prepare_config(config)
}

/// Loads the files that an already validated config names.
pub fn prepare_config(config: Config) -> Result<Prepared, ConfigErrors> {
    let file_hashes = reload::hash_files(&config);
    let (material, signature) = load_files(&config).map_err(ConfigErrors)?;
    Ok(Prepared {
        config,
        material,
        signature,
        file_hashes,
    })
}

/// Loads and checks every file `config` names (certificates, keys, bundles, CRLs, signature
/// keys), reporting all problems at once.
pub(crate) fn load_files(
    config: &Config,
) -> Result<(Material, Arc<signature::SignatureCheck>), Vec<ConfigError>> {
    let material = Material::load(&config.tls, &config.source);
    let signature = signature::SignatureCheck::load(&config.signature, &config.source);
    match (material, signature) {
        (Ok(m), Ok(s)) => Ok((m, Arc::new(s))),
        (m, s) => Err(m
            .err()
            .into_iter()
            .flatten()
            .chain(s.err().into_iter().flatten())
            .collect()),
    }
}

/// A running proxy.
pub struct Server {
    local_addr: SocketAddr,
    admin_addr: SocketAddr,
    health: Arc<admin::Health>,
    shutdown: watch::Sender<bool>,
    admin_shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
    admin_task: JoinHandle<()>,
    reloader: Arc<reload::Reloader>,
}

impl Server {
    /// The TLS listener's address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin listener's address (`/metrics`, `/healthz`, `/readyz`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// Reloads the config and every file it names now, as SIGHUP does.
    pub async fn reload(&self) -> reload::Outcome {
        reload::reload_now(&self.reloader, "reload request", true).await
    }

    /// A handle for reloading from elsewhere (the SIGHUP task).
    pub fn reloader(&self) -> Arc<reload::Reloader> {
        self.reloader.clone()
    }

    /// Turns `/readyz` to 503 and keeps serving: the first step of a Kubernetes drain.
    pub fn begin_drain(&self) {
        self.health.set_draining();
    }

    /// Stops accepting, lets in-flight requests finish within `shutdown.grace_period`, and
    /// returns when the listener task is done. The admin listener stops last.
    pub async fn shutdown(self) {
        self.health.set_draining();
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
        let _ = self.admin_shutdown.send(true);
        let _ = self.admin_task.await;
    }
}

/// Binds the admin and TLS listeners and serves in the background. Must be called inside a
/// tokio runtime.
pub async fn start(prepared: Prepared) -> std::io::Result<Server> {
    let Prepared {
        config,
        material,
        signature,
        file_hashes,
    } = prepared;
    let refusals = Arc::new(refusal_log::RefusalLog::default());
    let live = Arc::new(reload::LiveCell::new(
        reload::Live::build(&config, &material, signature, refusals.clone())
            .map_err(|e| std::io::Error::other(format!("building the TLS config: {e}")))?,
    ));
    let metrics = Arc::new(
        metrics::Metrics::new()
            .map_err(|e| std::io::Error::other(format!("registering metrics: {e}")))?,
    );
    metrics.set_certificates(&material);
    let health = Arc::new(admin::Health::default());

    // Admin first: `/readyz` answers 503 until the TLS listener is up.
    let admin_listener = TcpListener::bind(config.admin.listen)
        .await
        .map_err(|e| bind_error("admin.listen", config.admin.listen, &e))?;
    let admin_addr = admin_listener.local_addr()?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| bind_error("listen", config.listen, &e))?;
    let local_addr = listener.local_addr()?;

    let (grace_over_tx, grace_over) = watch::channel(false);
    let shared = Arc::new(proxy::Shared {
        client: upstream::client(&config.upstream),
        request_timeout: config.upstream.request_timeout,
        max_body: config.limits.max_body,
        max_header_bytes: config.limits.max_header_bytes,
        request_ids: proxy::RequestIds::default(),
        metrics: metrics.clone(),
        grace_over,
    });
    let state = Arc::new(listener::ListenerState {
        live: live.clone(),
        shared,
        http: listener::ListenerState::http_builder(&config.limits),
        connections: Arc::new(Semaphore::new(config.limits.max_connections)),
        metrics: metrics.clone(),
        refusals: refusals.clone(),
        proxy_protocol: config.proxy_protocol,
        idle_timeout: config.limits.idle_timeout,
    });
    let (tx, rx) = watch::channel(false);
    let (admin_tx, admin_rx) = watch::channel(false);
    let admin_task = tokio::spawn(admin::serve(
        admin_listener,
        metrics.clone(),
        health.clone(),
        admin_rx,
    ));
    let grace = config.shutdown.grace_period;
    let reloader = Arc::new(reload::Reloader::new(
        config.clone(),
        file_hashes,
        live,
        metrics.clone(),
        refusals,
    ));
    let watcher = reload::start_watching(&reloader);
    tokio::spawn(reload::watch_files(reloader.clone(), watcher, rx.clone()));
    let task = tokio::spawn(listener::serve(listener, state, rx, grace, grace_over_tx));
    health.set_serving();
    // aws-lc seeds its entropy pool (CPU-jitter collection, ~40 ms) on the first use of
    // randomness. Do it now, off the request path, so that the first webhook after a start
    // or a rollout does not pay for it.
    tokio::task::spawn_blocking(|| {
        use aws_lc_rs::rand::SecureRandom as _;
        let _ = aws_lc_rs::rand::SystemRandom::new().fill(&mut [0u8; 1]);
    });
    tracing::info!(
        listen = %local_addr,
        admin = %admin_addr,
        // tokio sizes its pool from std's available_parallelism, which honours the CPU
        // affinity mask and the cgroup (v1 and v2) CPU quota, i.e. the container's limit.
        workers = tokio::runtime::Handle::current().metrics().num_workers(),
        upstream = %config.upstream.target,
        "hookgate listening"
    );
    Ok(Server {
        local_addr,
        admin_addr,
        health,
        shutdown: tx,
        admin_shutdown: admin_tx,
        task,
        admin_task,
        reloader,
    })
}

fn bind_error(key: &str, addr: SocketAddr, e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{key} {addr}: {e}"))
}
