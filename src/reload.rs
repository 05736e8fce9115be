//! Live reload of the config and every file it names (SPEC "Reloading").
//!
//! Three triggers lead to [`Reloader::reload`]: SIGHUP (forced), an inotify watch on the
//! directories of the files (debounced), and a periodic content-hash check for filesystems
//! where notifications do not arrive. A reload parses and validates everything (the YAML, key
//! against certificate, the bundles, the CRLs) and builds the new TLS config before swapping it
//! in; any failure leaves the running material in force ("last good wins"). Connections already
//! open keep the config they were accepted with, so nothing in flight is touched.
//!
//! Watching directories rather than files is what catches every way a file gets replaced: an
//! in-place write (IN_MODIFY/IN_CLOSE_WRITE), an editor's write-then-rename (IN_MOVED_TO), and
//! a Kubernetes Secret or ConfigMap update, which writes a new timestamped directory and then
//! renames the `..data` symlink over the old one (IN_MOVED_TO on `..data`). The event only says
//! "look"; content hashes decide whether anything changed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::config::{Cidr, Config, HeaderConfig};
use crate::metrics::{Metrics, ReloadResult};
use crate::refusal_log::RefusalLog;
use crate::signature::SignatureCheck;
use crate::tls::Material;

/// What a new connection is accepted with; swapped whole by a reload.
pub struct Live {
    pub acceptor: TlsAcceptor,
    pub headers: HeaderConfig,
    pub signature: Arc<SignatureCheck>,
    pub handshake_timeout: Duration,
    pub source_cidrs: Vec<Cidr>,
}

impl Live {
    pub fn build(
        config: &Config,
        material: &Material,
        signature: Arc<SignatureCheck>,
        refusals: Arc<RefusalLog>,
    ) -> Result<Self, rustls::Error> {
        let server_config = material.server_config(&config.tls, &config.clients, refusals)?;
        Ok(Self {
            acceptor: TlsAcceptor::from(server_config),
            headers: config.headers,
            signature,
            handshake_timeout: config.tls.handshake_timeout,
            source_cidrs: config.clients.source_cidrs.clone(),
        })
    }
}

/// The current [`Live`], read once per accepted connection.
pub struct LiveCell(RwLock<Arc<Live>>);

impl LiveCell {
    pub fn new(live: Live) -> Self {
        Self(RwLock::new(Arc::new(live)))
    }

    pub fn get(&self) -> Arc<Live> {
        // A poisoned lock still holds a complete Arc: the writer only ever swaps it.
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set(&self, live: Live) {
        let live = Arc::new(live);
        match self.0.write() {
            Ok(mut g) => *g = live,
            Err(p) => *p.into_inner() = live,
        }
    }
}

/// How a reload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No file changed (only for unforced reloads).
    Unchanged,
    Reloaded,
    /// The previous material stays in force; the message says which file and why.
    Failed(String),
}

/// SHA-256 of each file a reload reads (`None`: unreadable).
pub type Hashes = Vec<(PathBuf, Option<[u8; 32]>)>;

struct State {
    config: Config,
    /// Hashes of the files as of the last attempt, good or bad, so that a broken file is
    /// reported once rather than at every periodic check.
    attempted: Hashes,
}

/// Reloads the config and its files, one reload at a time.
pub struct Reloader {
    state: Mutex<State>,
    live: Arc<LiveCell>,
    metrics: Arc<Metrics>,
    refusals: Arc<RefusalLog>,
}

impl Reloader {
    pub fn new(
        config: Config,
        attempted: Hashes,
        live: Arc<LiveCell>,
        metrics: Arc<Metrics>,
        refusals: Arc<RefusalLog>,
    ) -> Self {
        Self {
            state: Mutex::new(State { config, attempted }),
            live,
            metrics,
            refusals,
        }
    }

    /// Reloads if any file changed, or always when `force`d (SIGHUP). Blocking: file reads,
    /// parsing and key checks; call it from a blocking thread.
    pub fn reload(&self, trigger: &'static str, force: bool) -> Outcome {
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let hashes = hash_all(&files_of(&st.config));
        if !force && hashes == st.attempted {
            return Outcome::Unchanged;
        }
        st.attempted = hashes;
        match self.try_reload(&st.config) {
            Ok((config, material)) => {
                self.metrics.set_certificates(&material);
                self.metrics.reload(ReloadResult::Success);
                tracing::info!(
                    trigger,
                    server_cert = %material.server,
                    client_cas = material.client_cas.len(),
                    crls = material.crls.len(),
                    "reloaded; new connections use the new certificates and policy"
                );
                st.attempted = hash_all(&files_of(&config));
                st.config = config;
                Outcome::Reloaded
            }
            Err(message) => {
                self.metrics.reload(ReloadResult::Failure);
                tracing::error!(
                    trigger,
                    error = %message,
                    "reload failed; the previous certificates and settings stay in force"
                );
                Outcome::Failed(message)
            }
        }
    }

    fn try_reload(&self, running: &Config) -> Result<(Config, Material), String> {
        let new = Config::load(&running.source).map_err(|e| e.to_string())?;
        let config = merge_live(running, new);
        let (material, signature) = crate::load_files(&config).map_err(|e| join_errors(&e))?;
        let live = Live::build(&config, &material, signature, self.refusals.clone())
            .map_err(|e| format!("building the TLS config: {e}"))?;
        self.live.set(live);
        Ok((config, material))
    }

    /// Directories to watch: those of the config file and of every file it names, and of
    /// their symlink targets.
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        for f in files_of(&st.config) {
            let mut add = |p: &Path| {
                if let Some(d) = p.parent() {
                    let d = if d.as_os_str().is_empty() {
                        PathBuf::from(".")
                    } else {
                        d.to_path_buf()
                    };
                    if !dirs.contains(&d) {
                        dirs.push(d);
                    }
                }
            };
            add(&f);
            if let Ok(target) = std::fs::canonicalize(&f) {
                add(&target);
            }
        }
        dirs
    }

    pub fn settings(&self) -> crate::config::ReloadConfig {
        match self.state.lock() {
            Ok(g) => g.config.reload,
            Err(p) => p.into_inner().config.reload,
        }
    }
}

/// The running config with the sections that can change live taken from `new`: `tls` (every
/// file, CRL settings, depth, versions, timeouts), `clients`, `headers` and `signature`. Others need new
/// sockets, pools or subscribers; a change there is logged and left for a restart.
fn merge_live(running: &Config, new: Config) -> Config {
    let mut merged = running.clone();
    let mut needs_restart = Vec::new();
    if new.listen != running.listen {
        needs_restart.push("listen");
    }
    if new.proxy_protocol != running.proxy_protocol {
        needs_restart.push("proxy_protocol");
    }
    if new.upstream != running.upstream {
        needs_restart.push("upstream");
    }
    if new.limits != running.limits {
        needs_restart.push("limits");
    }
    if new.admin != running.admin {
        needs_restart.push("admin");
    }
    if new.shutdown != running.shutdown {
        needs_restart.push("shutdown");
    }
    if new.log != running.log {
        needs_restart.push("log");
    }
    if new.reload != running.reload {
        needs_restart.push("reload");
    }
    if !needs_restart.is_empty() {
        tracing::warn!(
            sections = %needs_restart.join(", "),
            "changed in the config file, but only a restart applies them; running with the old values"
        );
    }
    merged.tls = new.tls;
    merged.clients = new.clients;
    merged.headers = new.headers;
    merged.signature = new.signature;
    merged
}

fn join_errors(errors: &[crate::config::ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every file a reload reads.
fn files_of(config: &Config) -> Vec<PathBuf> {
    let mut files = vec![
        config.source.clone(),
        config.tls.cert.clone(),
        config.tls.key.clone(),
    ];
    files.extend(config.tls.client_ca.iter().cloned());
    files.extend(config.tls.crl.iter().cloned());
    files.extend(config.signature.keys.iter().filter_map(|k| match k {
        crate::config::SignatureKeySource::File(p) => Some(p.clone()),
        _ => None,
    }));
    files
}

/// The hashes of every file `config` makes a reload read.
pub fn hash_files(config: &Config) -> Hashes {
    hash_all(&files_of(config))
}

fn hash_all(files: &[PathBuf]) -> Hashes {
    files
        .iter()
        .map(|f| {
            let digest = std::fs::read(f).ok().map(|bytes| {
                let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
                let mut out = [0u8; 32];
                out.copy_from_slice(d.as_ref());
                out
            });
            (f.clone(), digest)
        })
        .collect()
}

// === Triggers ===

/// How long the files must be quiet after an event before they are read: a Secret update or
/// an editor's save is a burst of events, and a half-written file should be read whole.
const DEBOUNCE: Duration = Duration::from_millis(250);
/// A burst that never goes quiet is read after this long anyway.
const DEBOUNCE_MAX: Duration = Duration::from_secs(2);

/// Runs a reload on a blocking thread.
pub async fn reload_now(reloader: &Arc<Reloader>, trigger: &'static str, force: bool) -> Outcome {
    let r = reloader.clone();
    tokio::task::spawn_blocking(move || r.reload(trigger, force))
        .await
        .unwrap_or_else(|e| Outcome::Failed(format!("reload task failed: {e}")))
}

/// Starts watching the files' directories now (so that no change after `start` returns is
/// missed), unless `reload.watch` is off or inotify is unavailable.
pub fn start_watching(reloader: &Reloader) -> Option<DirWatcher> {
    if !reloader.settings().watch {
        return None;
    }
    match DirWatcher::new() {
        Ok(w) => {
            w.add(&reloader.watch_dirs());
            Some(w)
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "cannot watch the files (inotify); relying on reload.check_interval and SIGHUP"
            );
            None
        }
    }
}

/// Reloads on file events and periodic checks until `shutdown` turns true.
pub async fn watch_files(
    reloader: Arc<Reloader>,
    mut watcher: Option<DirWatcher>,
    mut shutdown: watch::Receiver<bool>,
) {
    let settings = reloader.settings();
    let period = if settings.check_interval.is_zero() {
        // Never fires in practice; keeps the select below uniform.
        Duration::from_secs(365 * 86_400)
    } else {
        settings.check_interval
    };
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        let event = async {
            match watcher.as_mut() {
                Some(w) => w.next().await,
                None => std::future::pending().await,
            }
        };
        let trigger = tokio::select! {
            () = stopped(&mut shutdown) => return,
            r = event => match r {
                Ok(()) => {
                    if let Some(w) = watcher.as_mut() {
                        w.debounce().await;
                    }
                    "file change"
                }
                Err(e) => {
                    tracing::warn!(error = %e, "file watch stopped; the periodic check remains");
                    watcher = None;
                    continue;
                }
            },
            _ = ticker.tick() => "periodic check",
        };
        if reload_now(&reloader, trigger, false).await == Outcome::Reloaded {
            if let Some(w) = &watcher {
                // The config may name files in new directories now.
                w.add(&reloader.watch_dirs());
            }
        }
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// inotify on directories, read through the runtime's reactor (no thread of its own; gone
/// when the task is).
pub struct DirWatcher {
    events: inotify::EventStream<Vec<u8>>,
    watches: inotify::Watches,
}

impl DirWatcher {
    fn new() -> std::io::Result<Self> {
        let ino = inotify::Inotify::init()?;
        let watches = ino.watches();
        Ok(Self {
            events: ino.into_event_stream(vec![0; 4096])?,
            watches,
        })
    }

    fn add(&self, dirs: &[PathBuf]) {
        use inotify::WatchMask;
        let mask = WatchMask::CREATE
            | WatchMask::MODIFY
            | WatchMask::CLOSE_WRITE
            | WatchMask::MOVED_TO
            | WatchMask::MOVED_FROM
            | WatchMask::DELETE
            | WatchMask::ATTRIB;
        for d in dirs {
            // Adding a directory that is already watched returns the same watch.
            if let Err(e) = self.watches.clone().add(d, mask) {
                tracing::warn!(dir = %d.display(), error = %e, "cannot watch directory for changes");
            }
        }
    }

    /// Waits for the next event.
    async fn next(&mut self) -> std::io::Result<()> {
        use futures_util::StreamExt as _;
        match self.events.next().await {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(e),
            None => Err(std::io::Error::other("inotify closed")),
        }
    }

    /// Returns once no event has arrived for [`DEBOUNCE`] (or after [`DEBOUNCE_MAX`]).
    async fn debounce(&mut self) {
        let until = tokio::time::Instant::now() + DEBOUNCE_MAX;
        while tokio::time::Instant::now() < until {
            match tokio::time::timeout(DEBOUNCE, self.next()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return,
            }
        }
    }
}
