//! Configuration: YAML text → raw YAML tree → validated, typed [`Config`].
//!
//! The raw tree is walked by hand rather than through `#[derive(Deserialize)]` so that every
//! problem in the file is reported at once, each with the dotted key it belongs to and the file
//! it came from (serde stops at the first error and names no key path). Unknown keys are errors:
//! they are usually typos, and a typo in a security setting must not pass silently.
//!
//! serde_yaml is deprecated upstream; it is pinned in `Cargo.toml` and used only in this module
//! so that replacing it touches nothing else.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;
use serde_yaml::Value;

/// A fully validated configuration. Building one binds nothing and reads only the YAML file;
/// the files it names are loaded by [`crate::tls::Material::load`].
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, for messages.
    pub source: PathBuf,
    pub listen: SocketAddr,
    pub proxy_protocol: ProxyProtocol,
    pub upstream: UpstreamConfig,
    pub tls: TlsConfig,
    pub clients: ClientsConfig,
    pub headers: HeaderConfig,
    pub signature: SignatureConfig,
    pub limits: Limits,
    pub admin: AdminConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    pub reload: ReloadConfig,
}

/// Whether a PROXY protocol header (from an L4 load balancer) precedes the TLS handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyProtocol {
    Off,
    /// Version 2 (binary) only: what AWS NLB and most cloud balancers send.
    V2,
    /// Version 1 (text) or 2.
    Any,
}

/// A network prefix for `clients.source_cidrs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address (a /32 or /128).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (a, p) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0..={max}"))?,
        };
        let cidr = Self { addr, prefix };
        if cidr.network() != addr {
            return Err(format!(
                "{text:?} has host bits set; did you mean {}/{prefix}?",
                cidr.network()
            ));
        }
        Ok(cidr)
    }

    fn mask_v4(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    fn mask_v6(&self) -> u128 {
        u128::MAX
            .checked_shl(128 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    fn network(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & self.mask_v4()).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & self.mask_v6()).into()),
        }
    }

    /// Whether `ip` is inside; an IPv4-mapped IPv6 address counts as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => u32::from(ip) & self.mask_v4() == u32::from(net),
            (IpAddr::V6(net), IpAddr::V6(ip)) => u128::from(ip) & self.mask_v6() == u128::from(net),
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub target: UpstreamTarget,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamTarget {
    /// A TCP upstream; `authority` is the `host:port` written in the config.
    Tcp {
        addr: SocketAddr,
        authority: String,
    },
    Unix(PathBuf),
}

impl fmt::Display for UpstreamTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp { addr, .. } => write!(f, "http://{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Vec<PathBuf>,
    pub crl: Vec<PathBuf>,
    pub crl_scope: CrlScope,
    /// What to do with a certificate in scope whose issuer has no CRL among `crl`.
    pub crl_missing: RevocationFallback,
    /// What to do when the CRL that covers a certificate is past its nextUpdate.
    pub crl_expired: RevocationFallback,
    /// Intermediates allowed between the leaf and the trust anchor.
    pub max_chain_depth: usize,
    pub min_version: TlsVersion,
    pub handshake_timeout: Duration,
    pub session_resumption: bool,
}

/// Which certificates of a client's chain are checked against the CRLs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlScope {
    /// The leaf and every intermediate (as OpenSSL's `X509_V_FLAG_CRL_CHECK_ALL`).
    Chain,
    /// The leaf only.
    Leaf,
}

/// When revocation cannot be decided: refuse the client (fail closed) or let it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationFallback {
    Refuse,
    Allow,
}

/// `clients`: who may connect, beyond holding a valid chain.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientsConfig {
    /// Empty: any source address. Otherwise the TCP (or PROXY) source must be inside one.
    pub source_cidrs: Vec<Cidr>,
    /// `None`: any valid chain. `Some`: the leaf must match one entry (never empty).
    pub allow: Option<Vec<AllowEntry>>,
}

/// One `clients.allow` entry: every field that is set must match (see `policy`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AllowEntry {
    pub subject_cn: Option<String>,
    pub subject_o: Option<String>,
    pub subject_ou: Option<String>,
    /// Lower-cased; may start with `*.` to match exactly one leftmost label.
    pub san_dns: Option<String>,
    pub san_uri: Option<String>,
    pub issuer_cn: Option<String>,
    pub spki_sha256: Option<[u8; 32]>,
    pub cert_sha256: Option<[u8; 32]>,
}

/// `signature`: checking the sender's payload signature (Wise's `X-Signature-SHA256`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureConfig {
    pub mode: SignatureMode,
    pub keys: Vec<SignatureKeySource>,
    pub header: HeaderName,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureMode {
    Off,
    /// Forward everything, with `X-Signature-Verified: valid|invalid|missing`.
    Report,
    /// Refuse a missing or invalid signature with 403; forward only valid ones.
    Enforce,
}

/// Where a signature public key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureKeySource {
    /// Built into the binary from `certs/wise/`.
    WiseProduction,
    WiseSandbox,
    /// A PEM public key file (reloaded like the other files).
    File(PathBuf),
}

/// `reload`: how changes to the config and the files it names are noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Watch the files' directories with inotify.
    pub watch: bool,
    /// Compare content hashes this often, for filesystems without notifications; 0 = never.
    pub check_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::struct_excessive_bools)] // three independent on/off switches from SPEC
pub struct HeaderConfig {
    pub xfcc: bool,
    pub forward_cert: bool,
    pub rfc9440: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_body: u64,
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownConfig {
    pub drain_delay: Duration,
    pub grace_period: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: LogLevel,
}

// === Defaults (SPEC.md) ===

const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
const DEFAULT_ADMIN_LISTEN: &str = "0.0.0.0:9090";
const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
const DEFAULT_MAX_BODY: u64 = 1024 * 1024;
const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// hyper's HTTP/1 read buffer cannot be smaller than this, so neither can the header limit.
pub const MIN_HEADER_BYTES: usize = 8192;
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
const DEFAULT_MAX_CHAIN_DEPTH: u64 = 4;
/// webpki refuses paths with more intermediates than this whatever the config says.
const WEBPKI_MAX_CHAIN_DEPTH: u64 = 6;
const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(60);

/// A SHA-256 pin: 64 hex digits, either case, colons allowed between bytes (SPEC "Formats").
pub fn parse_pin(text: &str) -> Option<[u8; 32]> {
    let digits: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        let hex = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}

// === Errors ===

/// One problem in a config file: which file, which key, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted key path (`tls.cert`), or empty for problems with the file as a whole.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

/// Every problem found, in file order as far as it can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// === Loading ===

impl Config {
    /// Reads and validates `path`. Relative file paths inside the config are taken relative
    /// to the directory of the config file, as nginx does for its includes.
    pub fn load(path: &Path) -> Result<Self, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                key: String::new(),
                message: format!("cannot read config file: {e}"),
            }])
        })?;
        Self::from_yaml(&text, path)
    }

    /// Validates YAML `text` that came from `path` (used for messages and relative paths).
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigErrors> {
        let root: Value = serde_yaml::from_str(text).map_err(|e| {
            let message = match e.location() {
                Some(loc) => format!(
                    "invalid YAML at line {} column {}: {e}",
                    loc.line(),
                    loc.column()
                ),
                None => format!("invalid YAML: {e}"),
            };
            ConfigErrors(vec![ConfigError {
                file: path.to_path_buf(),
                key: String::new(),
                message,
            }])
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut w = Walker {
            file: path.to_path_buf(),
            base,
            errors: Vec::new(),
        };
        let config = w.config(&root);
        match config {
            Some(c) if w.errors.is_empty() => Ok(c),
            _ => Err(ConfigErrors(w.errors)),
        }
    }
}

/// Walks the YAML tree, collecting every error instead of stopping at the first.
struct Walker {
    file: PathBuf,
    base: PathBuf,
    errors: Vec<ConfigError>,
}

/// The keys of one mapping, consumed as they are read so that the rest can be reported as
/// unknown.
struct Section<'v> {
    path: String,
    entries: Vec<(String, &'v Value)>,
}

impl<'v> Section<'v> {
    fn key(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn take(&mut self, name: &str) -> Option<&'v Value> {
        let i = self.entries.iter().position(|(k, _)| k == name)?;
        Some(self.entries.remove(i).1)
    }
}

impl Walker {
    fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            key: key.into(),
            message: message.into(),
        });
    }

    /// Opens a mapping. A missing or `null` section is an empty one.
    fn section<'v>(&mut self, value: Option<&'v Value>, path: &str) -> Section<'v> {
        let mut section = Section {
            path: path.to_string(),
            entries: Vec::new(),
        };
        match value {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(m)) => {
                for (k, v) in m {
                    if let Some(k) = k.as_str() {
                        section.entries.push((k.to_string(), v));
                    } else {
                        let key = section.key(&format!("{k:?}"));
                        self.err(key, "keys must be strings");
                    }
                }
            }
            Some(other) => {
                let what = if path.is_empty() {
                    "the config"
                } else {
                    "this key"
                };
                self.err(
                    path,
                    format!("{what} must be a mapping, found {}", kind(other)),
                );
            }
        }
        section
    }

    /// Reports whatever a section has left as unknown keys.
    fn finish(&mut self, section: &Section<'_>, known: &[&str]) {
        for (k, _) in &section.entries {
            let key = section.key(k);
            self.err(
                key,
                format!("unknown key (known keys here: {})", known.join(", ")),
            );
        }
    }

    fn string(&mut self, s: &mut Section<'_>, name: &str) -> Option<String> {
        let v = s.take(name)?;
        match v {
            Value::String(x) => Some(x.clone()),
            // `min_version: 1.2` and `level: 1` style scalars are read as text.
            Value::Number(n) => Some(n.to_string()),
            Value::Null => None,
            other => {
                self.err(
                    s.key(name),
                    format!("expected a string, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn bool(&mut self, s: &mut Section<'_>, name: &str, default: bool) -> bool {
        match s.take(name) {
            None | Some(Value::Null) => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.err(
                    s.key(name),
                    format!("expected true or false, found {}", kind(other)),
                );
                default
            }
        }
    }

    fn duration(&mut self, s: &mut Section<'_>, name: &str, default: Duration) -> Duration {
        match self.string(s, name) {
            None => default,
            Some(text) => match parse_duration(&text) {
                Ok(d) => d,
                Err(e) => {
                    self.err(s.key(name), e);
                    default
                }
            },
        }
    }

    fn size(&mut self, s: &mut Section<'_>, name: &str, default: u64) -> u64 {
        match self.string(s, name) {
            None => default,
            Some(text) => match parse_size(&text) {
                Ok(n) => n,
                Err(e) => {
                    self.err(s.key(name), e);
                    default
                }
            },
        }
    }

    /// `refuse` (the default: fail closed) or `allow`.
    fn fallback(&mut self, s: &mut Section<'_>, name: &str) -> RevocationFallback {
        match self.string(s, name).as_deref() {
            None | Some("refuse") => RevocationFallback::Refuse,
            Some("allow") => RevocationFallback::Allow,
            Some(other) => {
                self.err(
                    s.key(name),
                    format!("expected refuse or allow, found {other:?}"),
                );
                RevocationFallback::Refuse
            }
        }
    }

    fn count(&mut self, s: &mut Section<'_>, name: &str, default: u64) -> u64 {
        match s.take(name) {
            None | Some(Value::Null) => default,
            Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(default),
            Some(other) => {
                self.err(
                    s.key(name),
                    format!("expected a whole number, found {}", kind(other)),
                );
                default
            }
        }
    }

    fn socket_addr(&mut self, s: &mut Section<'_>, name: &str, default: &str) -> SocketAddr {
        let text = self.string(s, name).unwrap_or_else(|| default.to_string());
        match resolve_one(&text) {
            Ok(a) => a,
            Err(e) => {
                self.err(s.key(name), e);
                // Unreachable as a result: errors are reported and nothing is bound.
                SocketAddr::from(([127, 0, 0, 1], 0))
            }
        }
    }

    fn path(&self, text: &str) -> PathBuf {
        let p = PathBuf::from(text);
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }

    /// A list of strings; a single string is taken as a list of one.
    fn string_list(&mut self, s: &mut Section<'_>, name: &str) -> Option<Vec<String>> {
        let v = s.take(name)?;
        match v {
            Value::Null => None,
            Value::String(x) => Some(vec![x.clone()]),
            Value::Sequence(items) => {
                let mut out = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(x) => out.push(x.clone()),
                        other => self.err(
                            format!("{}[{i}]", s.key(name)),
                            format!("expected a string, found {}", kind(other)),
                        ),
                    }
                }
                Some(out)
            }
            other => {
                self.err(
                    s.key(name),
                    format!("expected a list of strings, found {}", kind(other)),
                );
                None
            }
        }
    }

    fn config(&mut self, root: &Value) -> Option<Config> {
        let mut top = self.section(Some(root), "");
        if matches!(root, Value::Null) {
            self.err("", "the config file is empty");
        }
        let listen = self.socket_addr(&mut top, "listen", DEFAULT_LISTEN);

        // `off` is also what YAML 1.1 readers call `false`; accept the boolean spelling too.
        let proxy_protocol = match top.take("proxy_protocol") {
            None | Some(Value::Null | Value::Bool(false)) => ProxyProtocol::Off,
            Some(Value::String(pp)) => match pp.as_str() {
                "off" => ProxyProtocol::Off,
                "v2" => ProxyProtocol::V2,
                "any" => ProxyProtocol::Any,
                _ => {
                    self.err(
                        top.key("proxy_protocol"),
                        format!("expected off, v2 or any, found {pp:?}"),
                    );
                    ProxyProtocol::Off
                }
            },
            Some(other) => {
                self.err(
                    top.key("proxy_protocol"),
                    format!("expected off, v2 or any, found {}", kind(other)),
                );
                ProxyProtocol::Off
            }
        };

        let upstream_v = top.take("upstream");
        let upstream = self.upstream(upstream_v);
        let tls_v = top.take("tls");
        let tls = self.tls(tls_v);
        let clients_v = top.take("clients");
        let clients = self.clients(clients_v);
        let headers_v = top.take("headers");
        let headers = self.headers(headers_v);
        let signature_v = top.take("signature");
        let signature = self.signature(signature_v);
        let limits_v = top.take("limits");
        let limits = self.limits(limits_v);

        let admin_v = top.take("admin");
        let mut admin_s = self.section(admin_v, "admin");
        let admin = AdminConfig {
            listen: self.socket_addr(&mut admin_s, "listen", DEFAULT_ADMIN_LISTEN),
        };
        self.finish(&admin_s, &["listen"]);
        if admin.listen == listen && listen.port() != 0 {
            self.err(
                "admin.listen",
                format!(
                    "{} is also the TLS listener (listen); use another port",
                    admin.listen
                ),
            );
        }

        let shutdown_v = top.take("shutdown");
        let mut sh = self.section(shutdown_v, "shutdown");
        let shutdown = ShutdownConfig {
            drain_delay: self.duration(&mut sh, "drain_delay", Duration::from_secs(5)),
            grace_period: self.duration(&mut sh, "grace_period", Duration::from_secs(25)),
        };
        self.finish(&sh, &["drain_delay", "grace_period"]);

        let log_v = top.take("log");
        let log = self.log(log_v);

        let reload_v = top.take("reload");
        let mut rs = self.section(reload_v, "reload");
        let reload = ReloadConfig {
            watch: self.bool(&mut rs, "watch", true),
            check_interval: self.duration(&mut rs, "check_interval", DEFAULT_CHECK_INTERVAL),
        };
        self.finish(&rs, &["watch", "check_interval"]);

        self.finish(
            &top,
            &[
                "listen",
                "proxy_protocol",
                "upstream",
                "tls",
                "clients",
                "headers",
                "signature",
                "limits",
                "admin",
                "shutdown",
                "log",
                "reload",
            ],
        );

        Some(Config {
            source: self.file.clone(),
            listen,
            proxy_protocol,
            upstream: upstream?,
            tls: tls?,
            clients,
            headers,
            signature,
            limits,
            admin,
            shutdown,
            log,
            reload,
        })
    }

    fn upstream(&mut self, v: Option<&Value>) -> Option<UpstreamConfig> {
        let mut s = self.section(v, "upstream");
        let url = self.string(&mut s, "url");
        let connect_timeout = self.duration(&mut s, "connect_timeout", Duration::from_secs(2));
        let request_timeout = self.duration(&mut s, "request_timeout", Duration::from_secs(30));
        let allow_non_loopback = self.bool(&mut s, "allow_non_loopback", false);
        let url_key = s.key("url");
        self.finish(
            &s,
            &[
                "url",
                "connect_timeout",
                "request_timeout",
                "allow_non_loopback",
            ],
        );
        for (name, d) in [
            ("connect_timeout", connect_timeout),
            ("request_timeout", request_timeout),
        ] {
            if d.is_zero() {
                self.err(format!("upstream.{name}"), "must be greater than 0s");
            }
        }
        let Some(url) = url else {
            self.err(url_key, "required: where the app listens, e.g. \"http://127.0.0.1:8080\" or \"unix:/run/app/app.sock\"");
            return None;
        };
        let target = match parse_upstream_url(&url, &self.base) {
            Ok(t) => t,
            Err(e) => {
                self.err(url_key, e);
                return None;
            }
        };
        if let UpstreamTarget::Tcp { addr, .. } = &target {
            if !addr.ip().is_loopback() && !allow_non_loopback {
                self.err(
                    url_key,
                    format!(
                        "{url} resolves to {addr}, which is not a loopback address; a sidecar's \
                         app listens on loopback. Set upstream.allow_non_loopback: true if this is \
                         really meant"
                    ),
                );
            }
        }
        Some(UpstreamConfig {
            target,
            connect_timeout,
            request_timeout,
        })
    }

    fn tls(&mut self, v: Option<&Value>) -> Option<TlsConfig> {
        let mut s = self.section(v, "tls");
        let cert = self.string(&mut s, "cert");
        let key = self.string(&mut s, "key");
        let client_ca = self.string_list(&mut s, "client_ca");
        let crl = self.string_list(&mut s, "crl");
        let crl_scope = self.string(&mut s, "crl_scope");
        let depth = self.count(&mut s, "max_chain_depth", DEFAULT_MAX_CHAIN_DEPTH);
        let min_version = self.string(&mut s, "min_version");
        let handshake_timeout = self.duration(&mut s, "handshake_timeout", Duration::from_secs(10));
        let session_resumption = self.bool(&mut s, "session_resumption", true);

        let crl_scope = match crl_scope.as_deref() {
            None | Some("chain") => CrlScope::Chain,
            Some("leaf") => CrlScope::Leaf,
            Some(other) => {
                self.err(
                    s.key("crl_scope"),
                    format!("expected chain or leaf, found {other:?}"),
                );
                CrlScope::Chain
            }
        };
        let crl_missing = self.fallback(&mut s, "crl_missing");
        let crl_expired = self.fallback(&mut s, "crl_expired");
        if depth > WEBPKI_MAX_CHAIN_DEPTH {
            self.err(
                s.key("max_chain_depth"),
                format!(
                    "at most {WEBPKI_MAX_CHAIN_DEPTH} (the path builder's own limit), found {depth}"
                ),
            );
        }
        let min_version = match min_version.as_deref() {
            None | Some("1.2") => TlsVersion::V1_2,
            Some("1.3") => TlsVersion::V1_3,
            Some(other) => {
                self.err(
                    s.key("min_version"),
                    format!("expected \"1.2\" or \"1.3\", found {other:?}"),
                );
                TlsVersion::V1_2
            }
        };
        if handshake_timeout.is_zero() {
            self.err(s.key("handshake_timeout"), "must be greater than 0s");
        }
        let (cert_key, key_key, ca_key) = (s.key("cert"), s.key("key"), s.key("client_ca"));
        self.finish(
            &s,
            &[
                "cert",
                "key",
                "client_ca",
                "crl",
                "crl_scope",
                "crl_missing",
                "crl_expired",
                "max_chain_depth",
                "min_version",
                "handshake_timeout",
                "session_resumption",
            ],
        );
        if cert.is_none() {
            self.err(cert_key, "required: the server certificate chain (PEM)");
        }
        if key.is_none() {
            self.err(key_key, "required: the server private key (PEM)");
        }
        let client_ca = client_ca.unwrap_or_default();
        if client_ca.is_empty() {
            // Fail closed: there is no "no client auth" mode.
            self.err(
                ca_key,
                "required: one or more PEM files with the CA certificates that client \
                 certificates must chain to",
            );
        }
        Some(TlsConfig {
            cert: self.path(&cert?),
            key: self.path(&key?),
            client_ca: client_ca.iter().map(|p| self.path(p)).collect(),
            crl: crl
                .unwrap_or_default()
                .iter()
                .map(|p| self.path(p))
                .collect(),
            crl_scope,
            crl_missing,
            crl_expired,
            max_chain_depth: usize::try_from(depth.min(WEBPKI_MAX_CHAIN_DEPTH)).unwrap_or(4),
            min_version,
            handshake_timeout,
            session_resumption,
        })
    }

    fn clients(&mut self, v: Option<&Value>) -> ClientsConfig {
        let mut s = self.section(v, "clients");
        let source_cidrs = self
            .string_list(&mut s, "source_cidrs")
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match Cidr::parse(c) {
                Ok(c) => Some(c),
                Err(e) => {
                    self.err(format!("{}[{i}]", s.key("source_cidrs")), e);
                    None
                }
            })
            .collect();
        let allow = match s.take("allow") {
            None | Some(Value::Null) => None,
            Some(Value::Sequence(items)) if items.is_empty() => {
                self.err(
                    s.key("allow"),
                    "an empty allow-list would refuse every client; remove the key to let in \
                     any client with a valid chain",
                );
                None
            }
            Some(Value::Sequence(items)) => Some(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.allow_entry(item, &format!("{}[{i}]", s.key("allow"))))
                    .collect(),
            ),
            Some(other) => {
                self.err(
                    s.key("allow"),
                    format!("must be a list of entries, found {}", kind(other)),
                );
                None
            }
        };
        self.finish(&s, &["source_cidrs", "allow"]);
        ClientsConfig {
            source_cidrs,
            allow,
        }
    }

    fn allow_entry(&mut self, v: &Value, path: &str) -> AllowEntry {
        const KEYS: [&str; 8] = [
            "subject_cn",
            "subject_o",
            "subject_ou",
            "san_dns",
            "san_uri",
            "issuer_cn",
            "spki_sha256",
            "cert_sha256",
        ];
        let mut s = self.section(Some(v), path);
        let mut text = |w: &mut Self, name: &str| -> Option<String> {
            let t = w.string(&mut s, name)?;
            if t.is_empty() {
                w.err(format!("{path}.{name}"), "must not be empty");
                return None;
            }
            Some(t)
        };
        let subject_cn = text(self, "subject_cn");
        let subject_o = text(self, "subject_o");
        let subject_ou = text(self, "subject_ou");
        let san_dns = text(self, "san_dns").map(|d| d.to_ascii_lowercase());
        let san_uri = text(self, "san_uri");
        let issuer_cn = text(self, "issuer_cn");
        let spki = text(self, "spki_sha256");
        let cert = text(self, "cert_sha256");
        let pin = |w: &mut Self, name: &str, t: Option<String>| {
            let t = t?;
            let parsed = parse_pin(&t);
            if parsed.is_none() {
                w.err(
                    format!("{path}.{name}"),
                    format!("expected a SHA-256 as 64 hex digits (colons allowed), found {t:?}"),
                );
            }
            parsed
        };
        let spki_sha256 = pin(self, "spki_sha256", spki);
        let cert_sha256 = pin(self, "cert_sha256", cert);
        if let Some(d) = &san_dns {
            if d.contains('*') && !(d.starts_with("*.") && !d[2..].contains('*') && d.len() > 2) {
                self.err(
                    format!("{path}.san_dns"),
                    format!("a wildcard is only allowed as the whole leftmost label (*.example.com), found {d:?}"),
                );
            }
        }
        let known_left = s.entries.iter().any(|(k, _)| KEYS.contains(&k.as_str()));
        self.finish(&s, &KEYS);
        let entry = AllowEntry {
            subject_cn,
            subject_o,
            subject_ou,
            san_dns,
            san_uri,
            issuer_cn,
            spki_sha256,
            cert_sha256,
        };
        if entry == AllowEntry::default() && !known_left && matches!(v, Value::Mapping(_)) {
            self.err(
                path,
                format!(
                    "an entry needs at least one of {}; an empty entry would let in every client",
                    KEYS.join(", ")
                ),
            );
        }
        entry
    }

    fn headers(&mut self, v: Option<&Value>) -> HeaderConfig {
        let mut s = self.section(v, "headers");
        let h = HeaderConfig {
            xfcc: self.bool(&mut s, "xfcc", true),
            forward_cert: self.bool(&mut s, "forward_cert", false),
            rfc9440: self.bool(&mut s, "rfc9440", false),
        };
        self.finish(&s, &["xfcc", "forward_cert", "rfc9440"]);
        h
    }

    fn signature(&mut self, v: Option<&Value>) -> SignatureConfig {
        let mut s = self.section(v, "signature");
        let mode = match self.string(&mut s, "mode").as_deref() {
            None | Some("off") => SignatureMode::Off,
            Some("report") => SignatureMode::Report,
            Some("enforce") => SignatureMode::Enforce,
            Some(other) => {
                self.err(
                    s.key("mode"),
                    format!("expected off, report or enforce, found {other:?}"),
                );
                SignatureMode::Off
            }
        };
        let keys_key = s.key("keys");
        let keys: Vec<SignatureKeySource> = self
            .string_list(&mut s, "keys")
            .unwrap_or_else(|| vec!["wise-production".to_string()])
            .iter()
            .map(|k| match k.as_str() {
                "wise-production" => SignatureKeySource::WiseProduction,
                "wise-sandbox" => SignatureKeySource::WiseSandbox,
                path => SignatureKeySource::File(self.path(path)),
            })
            .collect();
        if keys.is_empty() {
            self.err(
                keys_key,
                "needs at least one key: wise-production, wise-sandbox or a PEM public key file",
            );
        }
        let header = match self.string(&mut s, "header") {
            None => HeaderName::from_static("x-signature-sha256"),
            Some(h) => HeaderName::from_bytes(h.as_bytes()).unwrap_or_else(|_| {
                self.err(s.key("header"), format!("{h:?} is not a valid header name"));
                HeaderName::from_static("x-signature-sha256")
            }),
        };
        self.finish(&s, &["mode", "keys", "header"]);
        SignatureConfig { mode, keys, header }
    }

    fn limits(&mut self, v: Option<&Value>) -> Limits {
        let mut s = self.section(v, "limits");
        let max_connections = self.count(&mut s, "max_connections", DEFAULT_MAX_CONNECTIONS as u64);
        let max_body = self.size(&mut s, "max_body", DEFAULT_MAX_BODY);
        let max_header_bytes =
            self.size(&mut s, "max_header_bytes", DEFAULT_MAX_HEADER_BYTES as u64);
        let header_read_timeout =
            self.duration(&mut s, "header_read_timeout", Duration::from_secs(10));
        let idle_timeout = self.duration(&mut s, "idle_timeout", DEFAULT_IDLE_TIMEOUT);
        if max_connections == 0 {
            self.err(s.key("max_connections"), "must be at least 1");
        }
        if max_header_bytes < MIN_HEADER_BYTES as u64 {
            self.err(
                s.key("max_header_bytes"),
                format!("must be at least {MIN_HEADER_BYTES} bytes (8KiB)"),
            );
        }
        if header_read_timeout.is_zero() {
            self.err(s.key("header_read_timeout"), "must be greater than 0s");
        }
        if idle_timeout.is_zero() {
            self.err(s.key("idle_timeout"), "must be greater than 0s");
        }
        self.finish(
            &s,
            &[
                "max_connections",
                "max_body",
                "max_header_bytes",
                "header_read_timeout",
                "idle_timeout",
            ],
        );
        Limits {
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            max_body,
            max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
            header_read_timeout,
            idle_timeout,
        }
    }

    fn log(&mut self, v: Option<&Value>) -> LogConfig {
        let mut s = self.section(v, "log");
        let format = match self.string(&mut s, "format").as_deref() {
            None | Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                self.err(
                    s.key("format"),
                    format!("expected json or text, found {other:?}"),
                );
                LogFormat::Json
            }
        };
        let level = match self.string(&mut s, "level").as_deref() {
            None | Some("info") => LogLevel::Info,
            Some("error") => LogLevel::Error,
            Some("warn") => LogLevel::Warn,
            Some("debug") => LogLevel::Debug,
            Some("trace") => LogLevel::Trace,
            Some(other) => {
                self.err(
                    s.key("level"),
                    format!("expected error, warn, info, debug or trace, found {other:?}"),
                );
                LogLevel::Info
            }
        };
        self.finish(&s, &["format", "level"]);
        LogConfig { format, level }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

fn resolve_one(text: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = text.parse::<SocketAddr>() {
        return Ok(a);
    }
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| format!("{text:?} is not a host:port address: {e}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// Parses `http://host[:port][/]` or `unix:/path` (also `unix:///path`).
fn parse_upstream_url(url: &str, base: &Path) -> Result<UpstreamTarget, String> {
    if let Some(rest) = url.strip_prefix("unix:") {
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if path.is_empty() {
            return Err(format!("{url:?} names no socket path"));
        }
        let p = PathBuf::from(path);
        return Ok(UpstreamTarget::Unix(if p.is_absolute() {
            p
        } else {
            base.join(p)
        }));
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return Err(format!(
            "{url:?}: expected http://host:port or unix:/path (the upstream is plain HTTP on \
             loopback; hookgate does not re-encrypt)"
        ));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@']) {
        return Err(format!(
            "{url:?}: only scheme, host and port are allowed (no path, query or user info)"
        ));
    }
    let with_port = if has_port(authority) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addrs: Vec<SocketAddr> = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{url:?}: cannot resolve {with_port}: {e}"))?
        .collect();
    // Prefer a loopback address; if any resolved address is not loopback, report that one so
    // that a name resolving to several places is never taken for loopback.
    let addr = addrs
        .iter()
        .find(|a| !a.ip().is_loopback())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| format!("{url:?}: {with_port} resolves to no address"))?;
    Ok(UpstreamTarget::Tcp {
        addr,
        authority: with_port,
    })
}

fn has_port(authority: &str) -> bool {
    if let Some(v6) = authority.strip_prefix('[') {
        return v6.contains("]:");
    }
    authority.contains(':')
}

/// Parses durations such as `10s`, `500ms`, `1m30s`, `2h`, `0s`. A unit is required.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a duration (use e.g. 500ms, 10s, 1m30s, 2h)");
    if t.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(d);
    }
    Ok(total)
}

/// Parses sizes such as `1MiB`, `16KiB`, `512B`, `1000` (bytes), `1MB` (10^6).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let bad = || format!("{text:?} is not a size (use e.g. 512B, 16KiB, 1MiB)");
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if digits == 0 {
        return Err(bad());
    }
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let mult: u64 = match t[digits..].trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(mult).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(yaml: &str) -> Vec<String> {
        match Config::from_yaml(yaml, Path::new("/etc/hookgate/config.yaml")) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    fn config(yaml: &str) -> Config {
        Config::from_yaml(yaml, Path::new("/etc/hookgate/config.yaml")).unwrap()
    }

    const MINIMAL: &str = "upstream: {url: \"http://127.0.0.1:8080\"}\n\
                           tls: {cert: c.pem, key: k.pem, client_ca: [ca.pem]}\n";

    #[test]
    fn durations_and_sizes_parse_as_in_spec() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("10 sec").is_err());
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("16KiB"), Ok(16 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("1 lot").is_err());
        assert!(parse_size("99999999999999GiB").is_err());
    }

    #[test]
    fn minimal_config_gets_spec_defaults_and_relative_paths() {
        let c = Config::from_yaml(MINIMAL, Path::new("/etc/hookgate/config.yaml")).unwrap();
        assert_eq!(c.listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(c.tls.cert, PathBuf::from("/etc/hookgate/c.pem"));
        assert_eq!(c.tls.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.upstream.request_timeout, Duration::from_secs(30));
        assert!(c.headers.xfcc && !c.headers.forward_cert && !c.headers.rfc9440);
        assert_eq!(c.limits.max_body, 1 << 20);
        assert_eq!(c.log.format, LogFormat::Json);
    }

    #[test]
    fn every_error_is_reported_at_once_with_key_and_file() {
        let e = errors(
            "lisen: 1\nupstream: {url: \"http://127.0.0.1:1\", connect_timeout: fast}\n\
             tls: {cert: c, key: k, client_ca: [], bogus: 1}\nlog: {level: loud}\n",
        );
        let all = e.join("\n");
        assert!(
            all.contains("/etc/hookgate/config.yaml: lisen: unknown key"),
            "{all}"
        );
        assert!(
            all.contains("upstream.connect_timeout: \"fast\" is not a duration"),
            "{all}"
        );
        assert!(all.contains("tls.client_ca: required"), "{all}");
        assert!(all.contains("tls.bogus: unknown key"), "{all}");
        assert!(all.contains("log.level: expected"), "{all}");
        assert_eq!(e.len(), 5, "{all}");
    }

    #[test]
    fn signature_settings_parse() {
        let c = config(MINIMAL);
        assert_eq!(c.signature.mode, SignatureMode::Off);
        assert_eq!(c.signature.keys, vec![SignatureKeySource::WiseProduction]);
        assert_eq!(c.signature.header, "x-signature-sha256");
        let c = config(&format!(
            "{MINIMAL}signature: {{mode: enforce, keys: [wise-sandbox, keys/extra.pem], header: X-Sig}}\n"
        ));
        assert_eq!(c.signature.mode, SignatureMode::Enforce);
        assert_eq!(
            c.signature.keys,
            vec![
                SignatureKeySource::WiseSandbox,
                SignatureKeySource::File("/etc/hookgate/keys/extra.pem".into())
            ]
        );
        assert_eq!(c.signature.header, "x-sig");
        let e = errors(&format!(
            "{MINIMAL}signature: {{mode: strict, keys: [], header: \"bad header\"}}\n"
        ))
        .join("\n");
        assert!(
            e.contains("signature.mode: expected off, report or enforce"),
            "{e}"
        );
        assert!(e.contains("signature.keys: needs at least one key"), "{e}");
        assert!(
            e.contains("signature.header: \"bad header\" is not a valid header name"),
            "{e}"
        );
    }

    #[test]
    fn source_cidrs_and_proxy_protocol() {
        let c = config(&format!(
            "{MINIMAL}proxy_protocol: v2\nclients: {{source_cidrs: [10.0.0.0/8, \"2001:db8::/32\", 192.0.2.7]}}\n"
        ));
        assert_eq!(c.proxy_protocol, ProxyProtocol::V2);
        let cidrs = &c.clients.source_cidrs;
        let inside = |ip: &str| cidrs.iter().any(|c| c.contains(ip.parse().unwrap()));
        assert!(inside("10.1.2.3"));
        assert!(inside("::ffff:10.1.2.3"), "IPv4-mapped counts as IPv4");
        assert!(inside("2001:db8:1::5"));
        assert!(inside("192.0.2.7"));
        assert!(!inside("192.0.2.8"));
        assert!(!inside("11.0.0.1"));
        assert_eq!(
            config(&format!("{MINIMAL}proxy_protocol: off\n")).proxy_protocol,
            ProxyProtocol::Off
        );
        let e = errors(&format!(
            "{MINIMAL}proxy_protocol: v1\nclients: {{source_cidrs: [10.0.0.1/8, 10.0.0.0/33, nope]}}\n"
        ))
        .join("\n");
        assert!(e.contains("proxy_protocol: expected off, v2 or any"), "{e}");
        assert!(
            e.contains("clients.source_cidrs[0]: \"10.0.0.1/8\" has host bits set"),
            "{e}"
        );
        assert!(e.contains("clients.source_cidrs[1]:"), "{e}");
        assert!(e.contains("clients.source_cidrs[2]:"), "{e}");
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
    }

    #[test]
    fn allow_lists_parse_strictly() {
        let with = |extra: &str| errors(&format!("{MINIMAL}{extra}"));
        let e = with("clients: {allow: []}\n").join("");
        assert!(e.contains("clients.allow: an empty allow-list"), "{e}");
        let e = with("clients: {allow: [{}]}\n").join("");
        assert!(
            e.contains("clients.allow[0]: an entry needs at least one of"),
            "{e}"
        );
        let e = with("clients: {allow: [{subject_cn: a}, {subjct_cn: b}]}\n").join("");
        assert!(e.contains("clients.allow[1].subjct_cn: unknown key"), "{e}");
        let e = with("clients: {allow: [{spki_sha256: abc}]}\n").join("");
        assert!(
            e.contains("clients.allow[0].spki_sha256: expected a SHA-256"),
            "{e}"
        );
        let e = with("clients: {allow: [{san_dns: \"a.*.com\"}]}\n").join("");
        assert!(e.contains("clients.allow[0].san_dns: a wildcard"), "{e}");
        let e = with("clients: {allow: [{subject_cn: \"\"}]}\n").join("");
        assert!(
            e.contains("clients.allow[0].subject_cn: must not be empty"),
            "{e}"
        );

        let pin = "AB:".repeat(31) + "ab";
        let c = config(&format!(
            "{MINIMAL}clients:\n  allow:\n    - {{subject_cn: wise, issuer_cn: Wise CA}}\n    \
             - {{cert_sha256: \"{pin}\", san_dns: \"*.Wise.com\"}}\n"
        ));
        let allow = c.clients.allow.unwrap();
        assert_eq!(allow.len(), 2);
        assert_eq!(allow[0].subject_cn.as_deref(), Some("wise"));
        assert_eq!(allow[1].cert_sha256, Some([0xab; 32]));
        assert_eq!(allow[1].san_dns.as_deref(), Some("*.wise.com"));
    }

    #[test]
    fn revocation_settings_parse() {
        let c = config(&format!(
            "{}\n",
            MINIMAL.replace(
                "client_ca: [ca.pem]",
                "client_ca: [ca.pem], crl: [a.crl, b.pem], crl_scope: leaf, crl_missing: allow, max_chain_depth: 2"
            )
        ));
        assert_eq!(c.tls.crl.len(), 2);
        assert_eq!(c.tls.crl_scope, CrlScope::Leaf);
        assert_eq!(c.tls.crl_missing, RevocationFallback::Allow);
        assert_eq!(c.tls.crl_expired, RevocationFallback::Refuse);
        assert_eq!(c.tls.max_chain_depth, 2);
        let e = errors(&MINIMAL.replace(
            "client_ca: [ca.pem]",
            "client_ca: [ca.pem], max_chain_depth: 9",
        ))
        .join("");
        assert!(e.contains("tls.max_chain_depth: at most 6"), "{e}");
        let e = errors(&MINIMAL.replace(
            "client_ca: [ca.pem]",
            "client_ca: [ca.pem], crl_expired: maybe",
        ))
        .join("");
        assert!(
            e.contains("tls.crl_expired: expected refuse or allow"),
            "{e}"
        );
    }

    #[test]
    fn upstream_urls() {
        let base = Path::new("/x");
        assert!(matches!(
            parse_upstream_url("http://127.0.0.1:8080", base),
            Ok(UpstreamTarget::Tcp { .. })
        ));
        assert_eq!(
            parse_upstream_url("unix:/run/app.sock", base),
            Ok(UpstreamTarget::Unix("/run/app.sock".into()))
        );
        assert_eq!(
            parse_upstream_url("unix:///run/app.sock", base),
            Ok(UpstreamTarget::Unix("/run/app.sock".into()))
        );
        assert!(parse_upstream_url("https://127.0.0.1", base).is_err());
        assert!(parse_upstream_url("http://127.0.0.1:80/app", base).is_err());
        let e = errors(
            "upstream: {url: \"http://192.0.2.1:8080\"}\ntls: {cert: c, key: k, client_ca: [ca]}\n",
        );
        assert!(
            e[0].contains("upstream.url") && e[0].contains("not a loopback"),
            "{e:?}"
        );
        let ok = "upstream: {url: \"http://192.0.2.1:8080\", allow_non_loopback: true}\n\
                  tls: {cert: c, key: k, client_ca: [ca]}\n";
        assert!(errors(ok).is_empty());
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/config.yaml");
        let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.tls.client_ca.len(), 1);
        assert_eq!(c.shutdown.grace_period, Duration::from_secs(25));
    }

    #[test]
    fn yaml_syntax_errors_name_the_line() {
        let e = errors("upstream:\n  url: [\n");
        assert!(e[0].contains("line"), "{e:?}");
    }
}
