//! TLS: loading the server certificate and key and the client CA bundles, and building the
//! rustls `ServerConfig` that requires and verifies a client certificate.
//!
//! Every file is fully parsed and checked here, before anything is bound, so that a bad file is
//! a config error (exit 64) rather than a listener that refuses everyone.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pki_types::pem::PemObject;
use pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::config::{
    ClientsConfig, ConfigError, CrlScope, RevocationFallback, TlsConfig, TlsVersion,
};
use crate::identity::{dn_rfc4514, hex, rfc3339};
use crate::policy::{CaName, ClientPolicy, PolicyRefusal};
use crate::refusal_log::RefusalLog;

/// The crypto provider, chosen in one place.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The provider's suites with TLS 1.3 AES-128-GCM/SHA-256 first. Senders are servers with AES
/// instructions, where AES-128-GCM is the cheapest AEAD, and SHA-256 makes the TLS 1.3 key
/// schedule cheaper than AES-256-GCM's SHA-384 (about a fifth of a full handshake's
/// instructions went to SHA-384). All three TLS 1.3 suites and the same TLS 1.2 suites stay
/// offered (Mozilla "intermediate" allows each); only the preference changes.
fn server_suite_order(mut provider: CryptoProvider) -> CryptoProvider {
    use rustls::CipherSuite as S;
    provider.cipher_suites.sort_by_key(|s| match s.suite() {
        S::TLS13_AES_128_GCM_SHA256 => 0,
        S::TLS13_AES_256_GCM_SHA384 => 1,
        S::TLS13_CHACHA20_POLY1305_SHA256 => 2,
        _ => 3,
    });
    provider
}

/// A summary of a certificate for `hookgate check` and logs.
#[derive(Debug, Clone)]
pub struct CertSummary {
    pub subject: String,
    pub issuer: String,
    pub sans: Vec<String>,
    pub not_after: String,
    pub not_after_unix: i64,
    pub sha256: String,
}

impl fmt::Display for CertSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (expires {})", self.subject, self.not_after)
    }
}

/// One CA certificate from a `client_ca` bundle, and the role it plays in path building.
#[derive(Debug, Clone)]
pub struct CaEntry {
    pub file: PathBuf,
    pub summary: CertSummary,
    /// A trust anchor (self-issued, or whose issuer is not in any bundle), or an intermediate
    /// that is offered to path building for clients that send only their leaf.
    pub anchor: bool,
}

/// One CRL from `tls.crl`, for `hookgate check` and logs.
#[derive(Debug, Clone)]
pub struct CrlEntry {
    pub file: PathBuf,
    pub issuer: String,
    pub next_update: Option<String>,
    pub next_update_unix: Option<i64>,
    pub revoked: usize,
    /// Whether the issuer is in `tls.client_ca` (otherwise it can only be an intermediate the
    /// client sends).
    pub issuer_in_bundle: bool,
}

/// Everything the TLS listener needs, loaded and checked.
#[derive(Clone)]
pub struct Material {
    pub server: CertSummary,
    pub server_chain_len: usize,
    pub client_cas: Vec<CaEntry>,
    pub crls: Vec<CrlEntry>,
    certified: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    intermediates: Arc<Vec<CertificateDer<'static>>>,
    crl_ders: Vec<CertificateRevocationListDer<'static>>,
    anchor_subjects: HashSet<Vec<u8>>,
    intermediate_names: Vec<CaName>,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("server", &self.server)
            .field("client_cas", &self.client_cas)
            .finish_non_exhaustive()
    }
}

impl Material {
    /// Loads `tls.cert`, `tls.key` and every `tls.client_ca` file, reporting every problem.
    pub fn load(cfg: &TlsConfig, config_file: &Path) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut err = |key: &str, message: String| {
            errors.push(ConfigError {
                file: config_file.to_path_buf(),
                key: key.to_string(),
                message,
            });
            false
        };
        let provider = provider();

        let chain = match load_certs(&cfg.cert) {
            Ok(c) if c.is_empty() => {
                err(
                    "tls.cert",
                    format!("{}: no CERTIFICATE PEM block", cfg.cert.display()),
                );
                None
            }
            Ok(c) => Some(c),
            Err(e) => {
                err("tls.cert", e);
                None
            }
        };
        let key = match PrivateKeyDer::from_pem_file(&cfg.key) {
            Ok(k) => Some(k),
            Err(e) => {
                err(
                    "tls.key",
                    format!(
                        "{}: no usable private key (PKCS#8, PKCS#1 or SEC1 PEM): {e}",
                        cfg.key.display()
                    ),
                );
                None
            }
        };
        let mut server = None;
        let mut certified = None;
        if let Some(chain) = &chain {
            match summarize(&chain[0]) {
                Ok(s) => server = Some(s),
                Err(e) => {
                    err("tls.cert", format!("{}: {e}", cfg.cert.display()));
                }
            }
        }
        if let (Some(chain), Some(key)) = (chain.clone(), key) {
            match CertifiedKey::from_der(chain, key, &provider) {
                Ok(ck) => certified = Some(Arc::new(ck)),
                Err(rustls::Error::InconsistentKeys(_)) => {
                    err(
                        "tls.key",
                        format!(
                            "{} does not match the certificate in {} (their public keys differ)",
                            cfg.key.display(),
                            cfg.cert.display()
                        ),
                    );
                }
                Err(e) => {
                    err(
                        "tls.key",
                        format!("{}: unsupported key: {e}", cfg.key.display()),
                    );
                }
            }
        }

        let mut bundle: Vec<BundleCert> = Vec::new();
        for (i, file) in cfg.client_ca.iter().enumerate() {
            let key = format!("tls.client_ca[{i}]");
            let certs = match load_certs(file) {
                Ok(c) => c,
                Err(e) => {
                    err(&key, e);
                    continue;
                }
            };
            let mut cas = 0;
            let mut file_ok = true;
            for (n, der) in certs.into_iter().enumerate() {
                let parsed = match X509Certificate::from_der(&der) {
                    Ok((_, c)) => c,
                    Err(e) => {
                        file_ok = err(
                            &key,
                            format!("{}: certificate #{}: {e}", file.display(), n + 1),
                        );
                        continue;
                    }
                };
                let self_issued = parsed.subject().as_raw() == parsed.issuer().as_raw();
                let is_ca = match parsed.basic_constraints() {
                    Ok(Some(bc)) => bc.value.ca,
                    // A v1 root has no extensions at all; accept it only when self-issued.
                    Ok(None) => self_issued,
                    Err(_) => false,
                };
                let subject_raw = parsed.subject().as_raw().to_vec();
                let issuer_raw = parsed.issuer().as_raw().to_vec();
                let summary = summary_of(&parsed, &der);
                drop(parsed);
                if !is_ca {
                    file_ok = err(
                        &key,
                        format!(
                            "{}: certificate #{} ({}) is not a CA certificate; a client CA \
                             bundle holds only CAs",
                            file.display(),
                            n + 1,
                            summary.subject
                        ),
                    );
                    continue;
                }
                cas += 1;
                bundle.push(BundleCert {
                    file: file.clone(),
                    der,
                    summary,
                    subject: subject_raw,
                    issuer: issuer_raw,
                });
            }
            if cas == 0 && file_ok {
                err(&key, format!("{}: holds no CA certificate", file.display()));
            }
        }

        // Classify: a certificate whose issuer is elsewhere in the bundles is an intermediate;
        // self-issued certificates and those whose issuer is absent are anchors (the latter is
        // OpenSSL's "partial chain": an operator given only an intermediate trusts exactly it).
        let subjects: HashSet<&[u8]> = bundle.iter().map(|b| b.subject.as_slice()).collect();
        let mut roots = RootCertStore::empty();
        let mut intermediates = Vec::new();
        let mut client_cas = Vec::new();
        let mut anchor_subjects = HashSet::new();
        let mut intermediate_names = Vec::new();
        for BundleCert {
            file,
            der,
            summary,
            subject,
            issuer,
        } in &bundle
        {
            let anchor = subject == issuer || !subjects.contains(issuer.as_slice());
            if anchor {
                anchor_subjects.insert(subject.clone());
            } else {
                intermediate_names.push(CaName {
                    subject: subject.clone(),
                    issuer: issuer.clone(),
                });
            }
            if anchor {
                if let Err(e) = roots.add(der.clone()) {
                    err(
                        "tls.client_ca",
                        format!(
                            "{}: {} cannot be a trust anchor: {e}",
                            file.display(),
                            summary.subject
                        ),
                    );
                }
            } else {
                intermediates.push(der.clone());
            }
            client_cas.push(CaEntry {
                file: file.clone(),
                summary: summary.clone(),
                anchor,
            });
        }
        if !bundle.is_empty() && roots.is_empty() {
            err(
                "tls.client_ca",
                "the bundles hold no usable trust anchor".to_string(),
            );
        }

        // CRLs: each must parse; webpki checks their signatures against the issuing CA when
        // it uses them.
        let mut crls = Vec::new();
        let mut crl_ders = Vec::new();
        for (i, file) in cfg.crl.iter().enumerate() {
            let key = format!("tls.crl[{i}]");
            match load_crls(file) {
                Ok(list) if list.is_empty() => {
                    err(&key, format!("{}: holds no CRL", file.display()));
                }
                Ok(list) => {
                    for der in list {
                        match summarize_crl(file, &der) {
                            Ok((mut entry, issuer_raw)) => {
                                // Not an error: the CA may be an intermediate that clients
                                // send with their leaf. `check` shows it.
                                entry.issuer_in_bundle =
                                    bundle.iter().any(|b| b.subject == issuer_raw);
                                crls.push(entry);
                                crl_ders.push(der);
                            }
                            Err(e) => {
                                err(&key, e);
                            }
                        }
                    }
                }
                Err(e) => {
                    err(&key, e);
                }
            }
        }

        match (server, certified) {
            (Some(server), Some(certified)) if errors.is_empty() => Ok(Self {
                server,
                server_chain_len: certified.cert.len(),
                client_cas,
                crls,
                certified,
                roots: Arc::new(roots),
                intermediates: Arc::new(intermediates),
                crl_ders,
                anchor_subjects,
                intermediate_names,
            }),
            _ => Err(errors),
        }
    }

    /// Builds the rustls server config: TLS 1.2/1.3, client certificate required and verified
    /// against the bundles (EKU clientAuth enforced by webpki) and the CRLs, then against the
    /// `clients` policy; ALPN h2 and http/1.1.
    ///
    /// Each call makes a new session cache (and, with it, new TLS 1.3 ticket state), so a
    /// config built by a reload cannot resume a session made before it: every returning client
    /// is verified again against the new CAs, CRLs and allow-list (SPEC "Reloading").
    pub fn server_config(
        &self,
        cfg: &TlsConfig,
        clients: &ClientsConfig,
        refusals: Arc<RefusalLog>,
    ) -> Result<Arc<ServerConfig>, rustls::Error> {
        let provider = provider();
        let mut builder =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone());
        if !self.crl_ders.is_empty() {
            builder = builder.with_crls(self.crl_ders.iter().cloned());
            if cfg.crl_scope == CrlScope::Leaf {
                builder = builder.only_check_end_entity_revocation();
            }
            if cfg.crl_missing == RevocationFallback::Allow {
                builder = builder.allow_unknown_revocation_status();
            }
            if cfg.crl_expired == RevocationFallback::Refuse {
                builder = builder.enforce_revocation_expiration();
            }
        }
        let inner = builder
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verifier = Arc::new(PolicyVerifier {
            inner,
            intermediates: self.intermediates.clone(),
            policy: ClientPolicy {
                allow: clients.allow.clone(),
                max_chain_depth: cfg.max_chain_depth,
                anchors: self.anchor_subjects.clone(),
                intermediates: self.intermediate_names.clone(),
            },
            refusals,
        });
        let versions: &[&'static rustls::SupportedProtocolVersion] = match cfg.min_version {
            TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V1_3 => &[&rustls::version::TLS13],
        };
        let mut config = ServerConfig::builder_with_provider(Arc::new(server_suite_order(
            provider.as_ref().clone(),
        )))
        .with_protocol_versions(versions)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(SingleCertAndKey::from(self.certified.clone())));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // The server's suite order wins (see `server_suite_order`).
        config.ignore_client_order = true;
        if cfg.session_resumption {
            // Explicit rather than relying on the default, because the reload rule above
            // depends on the cache being new with every config.
            config.session_storage = rustls::server::ServerSessionMemoryCache::new(1024);
        } else {
            config.session_storage = Arc::new(NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        Ok(Arc::new(config))
    }
}

/// A CA certificate read from a bundle, with its raw subject and issuer names for chaining.
struct BundleCert {
    file: PathBuf,
    der: CertificateDer<'static>,
    summary: CertSummary,
    subject: Vec<u8>,
    issuer: Vec<u8>,
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let iter = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {}", path.display(), pem_error(&e)))?;
    iter.collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: bad PEM: {}", path.display(), pem_error(&e)))
}

/// PEM (any number of `X509 CRL` blocks) or a single DER CRL.
fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.trim_ascii_start().starts_with(b"-----BEGIN") {
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: bad PEM: {}", path.display(), pem_error(&e)))
    } else {
        Ok(vec![CertificateRevocationListDer::from(bytes)])
    }
}

/// Parses a CRL for its summary and raw issuer name.
fn summarize_crl(
    file: &Path,
    der: &CertificateRevocationListDer<'_>,
) -> Result<(CrlEntry, Vec<u8>), String> {
    use x509_parser::revocation_list::CertificateRevocationList;
    let (rest, crl) = CertificateRevocationList::from_der(der.as_ref())
        .map_err(|e| format!("{}: not a CRL: {e}", file.display()))?;
    if !rest.is_empty() {
        return Err(format!("{}: trailing data after the CRL", file.display()));
    }
    let next = crl.next_update().map(|t| t.timestamp());
    Ok((
        CrlEntry {
            file: file.to_path_buf(),
            issuer: dn_rfc4514(crl.issuer()),
            next_update: next.map(rfc3339),
            next_update_unix: next,
            revoked: crl.iter_revoked_certificates().count(),
            issuer_in_bundle: false,
        },
        crl.issuer().as_raw().to_vec(),
    ))
}

fn pem_error(e: &pki_types::pem::Error) -> String {
    match e {
        pki_types::pem::Error::Io(io) => io.to_string(),
        other => format!("{other:?}"),
    }
}

fn summarize(der: &CertificateDer<'_>) -> Result<CertSummary, String> {
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    Ok(summary_of(&cert, der))
}

fn summary_of(cert: &X509Certificate<'_>, der: &[u8]) -> CertSummary {
    let mut sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            sans.push(name.to_string());
        }
    }
    let not_after_unix = cert.validity().not_after.timestamp();
    CertSummary {
        subject: dn_rfc4514(cert.subject()),
        issuer: dn_rfc4514(cert.issuer()),
        sans,
        not_after: rfc3339(not_after_unix),
        not_after_unix,
        sha256: hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref()),
    }
}

// === impl PolicyVerifier ===

/// Wraps rustls' WebPKI client verifier (chain, validity, EKU, CRLs) and adds two things:
/// intermediates from the CA bundles are offered to path building, so that a client that sends
/// only its leaf still validates and the intermediate is checked on the way to a real anchor
/// instead of being trusted as one; and the `clients` policy (allow-list, chain depth) is
/// applied to a chain WebPKI accepted. A policy refusal is `ApplicationVerificationFailure`,
/// which rustls sends as the `access_denied` alert.
#[derive(Debug)]
struct PolicyVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    intermediates: Arc<Vec<CertificateDer<'static>>>,
    policy: ClientPolicy,
    refusals: Arc<RefusalLog>,
}

impl PolicyVerifier {
    fn apply_policy(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        self.policy
            .check(end_entity, intermediates)
            .map_err(|refusal| {
                self.refusals.policy_refused(&refusal);
                let e = match refusal {
                    PolicyRefusal::NotAllowed { .. } => {
                        rustls::CertificateError::ApplicationVerificationFailure
                    }
                    PolicyRefusal::ChainTooLong { .. } | PolicyRefusal::Unparsable(_) => {
                        rustls::CertificateError::Other(rustls::OtherError(Arc::new(refusal)))
                    }
                };
                rustls::Error::InvalidCertificate(e)
            })
    }
}

impl ClientCertVerifier for PolicyVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    // Fail closed: a client without a certificate never completes the handshake.
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.intermediates.is_empty() {
            let verified = self
                .inner
                .verify_client_cert(end_entity, intermediates, now)?;
            self.apply_policy(end_entity, intermediates)?;
            return Ok(verified);
        }
        let mut all: Vec<CertificateDer<'_>> =
            Vec::with_capacity(intermediates.len() + self.intermediates.len());
        all.extend(
            intermediates
                .iter()
                .map(|c| CertificateDer::from(c.as_ref())),
        );
        all.extend(
            self.intermediates
                .iter()
                .map(|c| CertificateDer::from(c.as_ref())),
        );
        let verified = self.inner.verify_client_cert(end_entity, &all, now)?;
        self.apply_policy(end_entity, intermediates)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
