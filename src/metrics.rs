//! Prometheus metrics (SPEC "Metrics"), in a registry the process owns rather than the crate's
//! global default, so that tests can run several proxies in one process and read each one's
//! counters on its own.
//!
//! Every label value comes from a closed set defined here (or a status code, or a subject read
//! from the operator's own certificate files): nothing from the wire becomes a label, so a
//! hostile client cannot grow the series count. Every label of a closed set is created at start
//! with the value 0, so that `rate()` and `absent()` work before the first event.

use std::io;

use prometheus::{
    Encoder as _, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};
use rustls::{CertificateError, Error as TlsError};

use crate::tls::Material;

/// Why a TLS handshake ended: the `result` label of `hookgate_tls_handshakes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeResult {
    Ok,
    NoClientCert,
    UnknownIssuer,
    Expired,
    NotYetValid,
    Revoked,
    BadUsage,
    NotAllowed,
    SourceDenied,
    ProtocolError,
    Timeout,
    Other,
}

impl HandshakeResult {
    pub const ALL: [Self; 12] = [
        Self::Ok,
        Self::NoClientCert,
        Self::UnknownIssuer,
        Self::Expired,
        Self::NotYetValid,
        Self::Revoked,
        Self::BadUsage,
        Self::NotAllowed,
        Self::SourceDenied,
        Self::ProtocolError,
        Self::Timeout,
        Self::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::NoClientCert => "no_client_cert",
            Self::UnknownIssuer => "unknown_issuer",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::Revoked => "revoked",
            Self::BadUsage => "bad_usage",
            Self::NotAllowed => "not_allowed",
            Self::SourceDenied => "source_denied",
            Self::ProtocolError => "protocol_error",
            Self::Timeout => "timeout",
            Self::Other => "other",
        }
    }

    /// A refusal caused by the client's certificate (as opposed to the network or a client that
    /// does not speak TLS). These are what an operator is paged for.
    pub fn is_certificate_problem(self) -> bool {
        match self {
            Self::NoClientCert
            | Self::UnknownIssuer
            | Self::Expired
            | Self::NotYetValid
            | Self::Revoked
            | Self::BadUsage
            | Self::NotAllowed => true,
            Self::Ok | Self::SourceDenied | Self::ProtocolError | Self::Timeout | Self::Other => {
                false
            }
        }
    }

    /// Classifies a failed `TlsAcceptor::accept`. tokio-rustls wraps the rustls error in the
    /// `io::Error`; anything else is the transport failing under the handshake (a peer that
    /// connects and closes, a reset), which counts as a protocol error.
    pub fn of_accept_error(e: &io::Error) -> Self {
        match e.get_ref().and_then(|i| i.downcast_ref::<TlsError>()) {
            Some(tls) => Self::of_tls_error(tls),
            None => Self::ProtocolError,
        }
    }

    /// Maps a rustls error to its label. Every variant of the pinned rustls version (see
    /// Cargo.toml) is listed so that each one is a decision; rustls marks the enums
    /// `#[non_exhaustive]`, so the final arms only catch variants added by a future version,
    /// and those count as `other` until someone maps them here.
    #[allow(
        clippy::match_same_arms,
        reason = "each variant is listed on purpose; the wildcard is for future ones"
    )]
    pub fn of_tls_error(e: &TlsError) -> Self {
        match e {
            TlsError::NoCertificatesPresented => Self::NoClientCert,
            TlsError::InvalidCertificate(c) => Self::of_cert_error(c),
            // A CRL that cannot be used during verification is a revocation-checking failure.
            TlsError::InvalidCertRevocationList(_) => Self::Revoked,
            TlsError::InappropriateMessage { .. }
            | TlsError::InappropriateHandshakeMessage { .. }
            | TlsError::InvalidEncryptedClientHello(_)
            | TlsError::InvalidMessage(_)
            | TlsError::UnsupportedNameType
            | TlsError::DecryptError
            | TlsError::PeerIncompatible(_)
            | TlsError::PeerMisbehaved(_)
            | TlsError::PeerSentOversizedRecord
            | TlsError::NoApplicationProtocol
            | TlsError::HandshakeNotComplete => Self::ProtocolError,
            // The client refused us (for example it does not trust our server certificate), or
            // something failed on our side.
            TlsError::AlertReceived(_)
            | TlsError::EncryptError
            | TlsError::General(_)
            | TlsError::FailedToGetCurrentTime
            | TlsError::FailedToGetRandomBytes
            | TlsError::BadMaxFragmentSize
            | TlsError::InconsistentKeys(_)
            | TlsError::Other(_) => Self::Other,
            _ => Self::Other,
        }
    }

    #[allow(
        deprecated,
        clippy::match_same_arms,
        reason = "every variant is listed, the deprecated one included; the wildcard is for future ones"
    )]
    fn of_cert_error(e: &CertificateError) -> Self {
        match e {
            CertificateError::UnknownIssuer => Self::UnknownIssuer,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Self::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Self::NotYetValid
            }
            // Revoked, and the fail-closed revocation outcomes: no CRL covers the issuer, or
            // the CRL is past its nextUpdate (tls.crl policy).
            CertificateError::Revoked
            | CertificateError::UnknownRevocationStatus
            | CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => Self::Revoked,
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
                Self::BadUsage
            }
            // rustls sends `access_denied` for this one: the chain is valid, policy said no.
            CertificateError::ApplicationVerificationFailure => Self::NotAllowed,
            CertificateError::BadEncoding
            | CertificateError::UnhandledCriticalExtension
            | CertificateError::BadSignature
            | CertificateError::UnsupportedSignatureAlgorithm
            | CertificateError::UnsupportedSignatureAlgorithmContext { .. }
            | CertificateError::UnsupportedSignatureAlgorithmForPublicKeyContext { .. }
            | CertificateError::NotValidForName
            | CertificateError::NotValidForNameContext { .. }
            | CertificateError::InvalidOcspResponse
            | CertificateError::Other(_) => Self::Other,
            _ => Self::Other,
        }
    }
}

/// The `reason` label of `hookgate_rejected_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    BodyTooLarge,
    HeadersTooLarge,
    SignatureInvalid,
    SignatureMissing,
    Overloaded,
    ShuttingDown,
}

impl RejectReason {
    pub const ALL: [Self; 6] = [
        Self::BodyTooLarge,
        Self::HeadersTooLarge,
        Self::SignatureInvalid,
        Self::SignatureMissing,
        Self::Overloaded,
        Self::ShuttingDown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BodyTooLarge => "body_too_large",
            Self::HeadersTooLarge => "headers_too_large",
            Self::SignatureInvalid => "signature_invalid",
            Self::SignatureMissing => "signature_missing",
            Self::Overloaded => "overloaded",
            Self::ShuttingDown => "shutting_down",
        }
    }
}

/// The `kind` label of `hookgate_upstream_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    Connect,
    Timeout,
    Reset,
    Other,
}

impl UpstreamErrorKind {
    pub const ALL: [Self; 4] = [Self::Connect, Self::Timeout, Self::Reset, Self::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Reset => "reset",
            Self::Other => "other",
        }
    }
}

/// The `result` label of `hookgate_signature_checks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureResult {
    Valid,
    Invalid,
    Missing,
}

impl SignatureResult {
    pub const ALL: [Self; 3] = [Self::Valid, Self::Invalid, Self::Missing];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Invalid => "invalid",
            Self::Missing => "missing",
        }
    }
}

/// The `result` label of `hookgate_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadResult {
    Success,
    Failure,
}

impl ReloadResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
        }
    }
}

/// Every metric hookgate exports.
pub struct Metrics {
    registry: Registry,
    handshakes: IntCounterVec,
    pub handshake_duration: Histogram,
    pub connections_open: IntGauge,
    pub connections_total: IntCounter,
    requests: IntCounterVec,
    pub request_duration: Histogram,
    pub upstream_duration: Histogram,
    upstream_errors: IntCounterVec,
    rejected: IntCounterVec,
    signature_checks: IntCounterVec,
    cert_expiry: GaugeVec,
    reloads: IntCounterVec,
}

/// Handshakes take well under a millisecond on loopback with ECDSA and a few milliseconds with
/// RSA on a busy core; the tail up to the handshake timeout is what a slow client looks like.
const HANDSHAKE_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0,
];
/// Requests: from a sub-millisecond echo to the 30 s default `upstream.request_timeout`. Wise
/// gives up after 5 s, so there is a bucket edge there.
const REQUEST_BUCKETS: &[f64] = &[
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    /// Registers everything. Registration only fails on a duplicate or malformed name, which is
    /// a bug in this function, so the error is not recoverable at run time.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(None, None)?;
        let r = &registry;

        let handshakes = counter_vec(
            r,
            "hookgate_tls_handshakes_total",
            "TLS handshakes on the listener, by outcome.",
            "result",
        )?;
        for h in HandshakeResult::ALL {
            handshakes.with_label_values(&[h.as_str()]);
        }
        let handshake_duration = histogram(
            r,
            "hookgate_tls_handshake_duration_seconds",
            "Time from TCP accept to the end of the TLS handshake, successful or not.",
            HANDSHAKE_BUCKETS,
        )?;
        let connections_open = IntGauge::new(
            "hookgate_connections_open",
            "TCP connections open on the listener.",
        )?;
        r.register(Box::new(connections_open.clone()))?;
        let connections_total = IntCounter::new(
            "hookgate_connections_total",
            "TCP connections accepted on the listener, including those shed or refused.",
        )?;
        r.register(Box::new(connections_total.clone()))?;
        let requests = counter_vec(
            r,
            "hookgate_requests_total",
            "HTTP requests answered, by status code (the upstream's or hookgate's own).",
            "code",
        )?;
        let request_duration = histogram(
            r,
            "hookgate_request_duration_seconds",
            "Whole request: from its headers arriving to the last byte of the response.",
            REQUEST_BUCKETS,
        )?;
        let upstream_duration = histogram(
            r,
            "hookgate_upstream_duration_seconds",
            "Upstream part: from sending the request to the upstream's response headers.",
            REQUEST_BUCKETS,
        )?;
        let upstream_errors = counter_vec(
            r,
            "hookgate_upstream_errors_total",
            "Requests that failed on the way to or from the upstream, by kind.",
            "kind",
        )?;
        for k in UpstreamErrorKind::ALL {
            upstream_errors.with_label_values(&[k.as_str()]);
        }
        let rejected = counter_vec(
            r,
            "hookgate_rejected_requests_total",
            "Requests or connections refused by hookgate itself, by reason.",
            "reason",
        )?;
        for k in RejectReason::ALL {
            rejected.with_label_values(&[k.as_str()]);
        }
        let signature_checks = counter_vec(
            r,
            "hookgate_signature_checks_total",
            "Payload signature checks (signature.mode report or enforce), by result.",
            "result",
        )?;
        for k in SignatureResult::ALL {
            signature_checks.with_label_values(&[k.as_str()]);
        }
        let cert_expiry = GaugeVec::new(
            Opts::new(
                "hookgate_certificate_expiry_timestamp_seconds",
                "notAfter of the server certificate and of each client CA, as a Unix timestamp.",
            ),
            &["role", "subject"],
        )?;
        r.register(Box::new(cert_expiry.clone()))?;
        let reloads = counter_vec(
            r,
            "hookgate_config_reloads_total",
            "Reloads of the config and the files it names, by result.",
            "result",
        )?;
        for k in [ReloadResult::Success, ReloadResult::Failure] {
            reloads.with_label_values(&[k.as_str()]);
        }
        let build_info = IntGaugeVec::new(
            Opts::new(
                "hookgate_build_info",
                "Always 1; the version is in the label.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        r.register(Box::new(build_info))?;
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        Ok(Self {
            registry,
            handshakes,
            handshake_duration,
            connections_open,
            connections_total,
            requests,
            request_duration,
            upstream_duration,
            upstream_errors,
            rejected,
            signature_checks,
            cert_expiry,
            reloads,
        })
    }

    pub fn handshake(&self, result: HandshakeResult) {
        self.handshakes.with_label_values(&[result.as_str()]).inc();
    }

    pub fn request(&self, status: http::StatusCode) {
        self.requests.with_label_values(&[status.as_str()]).inc();
    }

    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        self.upstream_errors
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    pub fn rejected(&self, reason: RejectReason) {
        self.rejected.with_label_values(&[reason.as_str()]).inc();
    }

    pub fn signature_check(&self, result: SignatureResult) {
        self.signature_checks
            .with_label_values(&[result.as_str()])
            .inc();
    }

    pub fn reload(&self, result: ReloadResult) {
        self.reloads.with_label_values(&[result.as_str()]).inc();
    }

    /// Replaces the expiry gauges with those of `material`, so that a CA removed by a reload
    /// stops being reported.
    pub fn set_certificates(&self, material: &Material) {
        self.cert_expiry.reset();
        #[allow(clippy::cast_precision_loss)] // Unix seconds fit f64's 53-bit mantissa
        let ts = |unix: i64| unix as f64;
        self.cert_expiry
            .with_label_values(&["server", &material.server.subject])
            .set(ts(material.server.not_after_unix));
        for ca in &material.client_cas {
            self.cert_expiry
                .with_label_values(&["client_ca", &ca.summary.subject])
                .set(ts(ca.summary.not_after_unix));
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut buf = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec only fails on a malformed family, which registration rules out.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

fn counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    label: &str,
) -> Result<IntCounterVec, prometheus::Error> {
    let c = IntCounterVec::new(Opts::new(name, help), &[label])?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: &[f64],
) -> Result<Histogram, prometheus::Error> {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_closed_label_is_exported_at_zero() {
        let m = Metrics::new().unwrap();
        let text = m.encode();
        for h in HandshakeResult::ALL {
            let line = format!(
                "hookgate_tls_handshakes_total{{result=\"{}\"}} 0",
                h.as_str()
            );
            assert!(text.contains(&line), "{line} missing");
        }
        for r in RejectReason::ALL {
            let line = format!(
                "hookgate_rejected_requests_total{{reason=\"{}\"}} 0",
                r.as_str()
            );
            assert!(text.contains(&line), "{line} missing");
        }
        assert!(text.contains("hookgate_build_info{version=\""));
        assert!(text.contains("process_resident_memory_bytes"));
    }

    #[test]
    fn certificate_errors_map_to_spec_labels() {
        use HandshakeResult as H;
        let cases = [
            (TlsError::NoCertificatesPresented, H::NoClientCert),
            (
                TlsError::InvalidCertificate(CertificateError::UnknownIssuer),
                H::UnknownIssuer,
            ),
            (
                TlsError::InvalidCertificate(CertificateError::Expired),
                H::Expired,
            ),
            (
                TlsError::InvalidCertificate(CertificateError::NotValidYet),
                H::NotYetValid,
            ),
            (
                TlsError::InvalidCertificate(CertificateError::Revoked),
                H::Revoked,
            ),
            (
                TlsError::InvalidCertificate(CertificateError::InvalidPurpose),
                H::BadUsage,
            ),
            (
                TlsError::InvalidCertificate(CertificateError::ApplicationVerificationFailure),
                H::NotAllowed,
            ),
            (TlsError::DecryptError, H::ProtocolError),
            (
                TlsError::AlertReceived(rustls::AlertDescription::UnknownCA),
                H::Other,
            ),
        ];
        for (e, want) in cases {
            let io = io::Error::new(io::ErrorKind::InvalidData, e.clone());
            assert_eq!(HandshakeResult::of_accept_error(&io), want, "{e:?}");
        }
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(HandshakeResult::of_accept_error(&eof), H::ProtocolError);
    }
}
