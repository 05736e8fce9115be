//! `hookgate send-test`: act as Wise for an operator checking a deployment before asking Wise
//! for a test notification. It POSTs a Wise-shaped event with a client certificate (and a
//! signature when given a key), prints the status, the time and the response, and when the
//! handshake fails says in plain words what the likely cause is.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Full;
use pki_types::pem::PemObject;
use pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{AlertDescription, CertificateError, RootCertStore};

use crate::cli::{EXIT_CONFIG, EXIT_RUNTIME};

/// What `send-test` was asked to do (its command-line arguments).
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Where to send it, e.g. https://webhooks.example.com/wise
    #[arg(long)]
    pub url: String,
    /// Client certificate chain (PEM), as Wise presents it.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// CA that issued the server's certificate (default: the system's trusted roots).
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Event type: transfers#state-change, transfers#active-cases, balances#credit,
    /// balances#update.
    #[arg(long, default_value = "transfers#state-change")]
    pub event: String,
    /// RSA private key (PEM) to sign the body with, as X-Signature-SHA256.
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
}

/// Event types `--event` knows, with the `data` Wise sends for each (test-notification
/// values: ids 0, as Wise's own test notifications have).
pub const EVENTS: [&str; 4] = [
    "transfers#state-change",
    "transfers#active-cases",
    "balances#credit",
    "balances#update",
];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs the command; returns the exit code (0: a 2xx answer).
pub async fn run(opts: Options) -> i32 {
    let prepared = match prepare(&opts) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_CONFIG;
        }
    };
    println!("POST {}", opts.url);
    println!(
        "  event {}  delivery {}  signed: {}  client certificate: {}",
        opts.event,
        prepared.delivery_id,
        if prepared.signature.is_some() {
            "yes"
        } else {
            "no"
        },
        opts.cert
            .as_deref()
            .map_or_else(|| "none".to_string(), |p| p.display().to_string())
    );
    let started = Instant::now();
    let mut prepared = prepared;
    match send(&mut prepared).await {
        Ok((status, body)) => {
            let took = started.elapsed();
            println!("  -> {status} in {:.1} ms", took.as_secs_f64() * 1000.0);
            let text = String::from_utf8_lossy(&body);
            let shown: String = text.chars().take(2000).collect();
            if !shown.is_empty() {
                println!("  response: {shown}");
            }
            if took > Duration::from_secs(5) {
                println!("  note: Wise waits about 5 s for an answer; this took longer");
            }
            if status.is_success() {
                0
            } else {
                if let Some(hint) = status_hint(status, &text) {
                    println!("  {hint}");
                }
                EXIT_RUNTIME
            }
        }
        Err(e) => {
            println!("  failed: {}", crate::error::error_chain(e.as_ref()));
            println!(
                "  {}",
                explain(e.as_ref(), &prepared.host, &prepared.addr_text())
            );
            EXIT_RUNTIME
        }
    }
}

struct Prepared {
    host: String,
    port: u16,
    client: std::sync::Arc<rustls::ClientConfig>,
    /// Taken when sent.
    request: Option<Request<Full<Bytes>>>,
    delivery_id: String,
    signature: Option<String>,
}

impl Prepared {
    fn addr_text(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

fn prepare(opts: &Options) -> Result<Prepared, String> {
    let uri: Uri = opts
        .url
        .parse()
        .map_err(|e| format!("--url {:?}: {e}", opts.url))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!("--url must be https://..., got {:?}", opts.url));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("--url {:?} has no host", opts.url))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();

    let identity = match (&opts.cert, &opts.key) {
        (Some(cert), Some(key)) => Some(load_identity(cert, key)?),
        (None, None) => None,
        _ => return Err("--cert and --key go together".into()),
    };
    let mut roots = RootCertStore::empty();
    if let Some(ca) = &opts.ca {
        for der in CertificateDer::pem_file_iter(ca)
            .map_err(|e| format!("--ca {}: {e:?}", ca.display()))?
        {
            let der = der.map_err(|e| format!("--ca {}: {e:?}", ca.display()))?;
            roots
                .add(der)
                .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
        }
    } else {
        // The system's roots: Wise, too, only trusts publicly trusted server certificates.
        for der in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(der);
        }
    }
    if roots.is_empty() {
        return Err("no trusted roots: pass --ca with the server's CA".into());
    }
    let client = crate::client::config(roots, identity, &[b"http/1.1"])
        .map_err(|e| format!("TLS client config: {e}"))?;

    if !EVENTS.contains(&opts.event.as_str()) {
        return Err(format!(
            "--event {:?}: expected one of {}",
            opts.event,
            EVENTS.join(", ")
        ));
    }
    let delivery_id = crate::proxy::RequestIds::default()
        .next()
        .to_str()
        .unwrap_or("00000000-0000-4000-8000-000000000000")
        .to_string();
    let body = event_body(&opts.event, &crate::identity::rfc3339(now_unix()));
    let signature = match &opts.sign_key {
        Some(path) => {
            let pem =
                std::fs::read(path).map_err(|e| format!("--sign-key {}: {e}", path.display()))?;
            Some(
                crate::signature::sign(&pem, body.as_bytes())
                    .map_err(|e| format!("--sign-key {}: {e}", path.display()))?,
            )
        }
        None => None,
    };
    let authority = if port == 443 {
        host.clone()
    } else {
        format!("{host}:{port}")
    };
    let mut req = Request::post(path)
        .header(http::header::HOST, authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("hookgate-send-test/", env!("CARGO_PKG_VERSION")),
        )
        .header("x-delivery-id", &delivery_id)
        .header("x-test-notification", "true");
    if let Some(sig) = &signature {
        req = req.header("x-signature-sha256", sig);
    }
    let request = req
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("building the request: {e}"))?;
    Ok(Prepared {
        host,
        port,
        client,
        request: Some(request),
        delivery_id,
        signature,
    })
}

fn load_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("--cert {}: {e:?}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("--cert {}: {e:?}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("--cert {}: no CERTIFICATE block", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("--key {}: no usable private key: {e:?}", key.display()))?;
    Ok((chain, key))
}

async fn send(
    p: &mut Prepared,
) -> Result<(http::StatusCode, Bytes), Box<dyn std::error::Error + Send + Sync>> {
    let request = p.request.take().ok_or("the request was already sent")?;
    let addr: SocketAddr = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::lookup_host((p.host.as_str(), p.port)),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "DNS lookup timed out"))??
    .next()
    .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "the host has no address"))?;
    let resp = tokio::time::timeout(
        CONNECT_TIMEOUT + RESPONSE_TIMEOUT,
        crate::client::request_once(addr, &p.host, p.client.clone(), request),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))??;
    Ok((resp.status(), resp.into_body()))
}

/// A plain sentence for a failed exchange: the likely cause and what to check.
pub fn explain(err: &(dyn std::error::Error + 'static), host: &str, addr: &str) -> String {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return explain_tls(tls, host);
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if let Some(tls) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
                return explain_tls(tls, host);
            }
            match io.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    return format!(
                        "nothing listens at {addr}: is hookgate running, and is this its `listen` port?"
                    );
                }
                std::io::ErrorKind::TimedOut => {
                    return format!(
                        "no answer from {addr} in time: a firewall, or the wrong address?"
                    );
                }
                _ => {}
            }
        }
        cur = e.source();
    }
    "the exchange failed; see the error above".into()
}

fn explain_tls(e: &rustls::Error, host: &str) -> String {
    match e {
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::UnknownCA => "the server did not accept our certificate: unknown CA — does tls.client_ca hold the CA that issued it?".into(),
            AlertDescription::CertificateExpired => "the server did not accept our certificate: it is expired or not yet valid — check its dates (openssl x509 -noout -dates -in <cert>)".into(),
            AlertDescription::CertificateRequired => "the server requires a client certificate and we sent none — pass --cert and --key".into(),
            AlertDescription::HandshakeFailure => "the handshake failed: the server probably requires a client certificate we did not send (TLS 1.2), or we share no cipher suite".into(),
            AlertDescription::AccessDenied => "the server accepted our certificate's chain but its allow-list (clients.allow) does not admit it".into(),
            AlertDescription::CertificateRevoked => "the server did not accept our certificate: it is revoked by a CRL the server loaded (tls.crl)".into(),
            AlertDescription::UnsupportedCertificate => "the server did not accept our certificate: wrong key usage (it needs the clientAuth extended key usage)".into(),
            AlertDescription::BadCertificate => "the server could not use our certificate (malformed, or its revocation status cannot be checked: tls.crl_missing / crl_expired)".into(),
            AlertDescription::ProtocolVersion => "the server refused our TLS version".into(),
            other => format!("the server ended the handshake with the alert {other:?}"),
        },
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("wrong host: the server's certificate is not valid for {host:?} — use the name it was issued for")
            }
            CertificateError::UnknownIssuer => "we do not trust the server's certificate: pass --ca with the CA that issued it (Wise requires a publicly trusted one)".into(),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "the server's certificate has expired — renew it (Wise will refuse it too)".into(),
            other => format!("we could not verify the server's certificate: {other:?}"),
        },
        rustls::Error::NoCertificatesPresented => "the server presented no certificate".into(),
        other => format!("TLS failed: {other}"),
    }
}

fn status_hint(status: http::StatusCode, body: &str) -> Option<&'static str> {
    if body.contains("signature_missing") {
        Some("hookgate wants a signature (signature.mode: enforce): pass --sign-key")
    } else if body.contains("signature_invalid") {
        Some(
            "the signature did not verify: does signature.keys hold the public half of --sign-key?",
        )
    } else if status == http::StatusCode::BAD_GATEWAY || status == http::StatusCode::GATEWAY_TIMEOUT
    {
        Some(
            "hookgate accepted us but could not get an answer from the app behind it (upstream.url)",
        )
    } else {
        None
    }
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

/// A Wise-shaped event envelope (schema 2.0.0) for `event`, sent at `sent_at`.
pub fn event_body(event: &str, sent_at: &str) -> String {
    let data = match event {
        "transfers#active-cases" => format!(
            r#"{{"resource":{{"id":0,"profile_id":0,"account_id":0,"type":"transfer"}},"active_cases":["deposit_amount_less_invoice"],"occurred_at":"{sent_at}"}}"#
        ),
        "balances#credit" => format!(
            r#"{{"resource":{{"id":0,"profile_id":0,"type":"balance-account"}},"transaction_type":"credit","amount":0.01,"currency":"EUR","post_transaction_balance_amount":0.01,"occurred_at":"{sent_at}"}}"#
        ),
        "balances#update" => format!(
            r#"{{"resource":{{"id":0,"profile_id":0,"type":"balance-account"}},"amount":0.01,"balance_id":0,"channel_name":"TRANSFER","currency":"EUR","post_transaction_balance_amount":0.01,"transaction_type":"credit","occurred_at":"{sent_at}"}}"#
        ),
        // transfers#state-change, the default.
        _ => format!(
            r#"{{"resource":{{"id":0,"profile_id":0,"account_id":0,"type":"transfer"}},"current_state":"processing","previous_state":"incoming_payment_waiting","occurred_at":"{sent_at}"}}"#
        ),
    };
    format!(
        r#"{{"data":{data},"subscription_id":"00000000-0000-0000-0000-000000000000","event_type":"{event}","schema_version":"2.0.0","sent_at":"{sent_at}"}}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_body_is_json_with_the_envelope() {
        for event in EVENTS {
            let v: serde_json::Value =
                serde_json::from_str(&event_body(event, "2026-12-04T00:00:00Z")).unwrap();
            assert_eq!(v["event_type"], event);
            assert_eq!(v["schema_version"], "2.0.0");
            assert!(v["data"]["resource"].is_object(), "{event}");
            assert!(v["subscription_id"].is_string());
            assert_eq!(v["sent_at"], "2026-12-04T00:00:00Z");
        }
    }
}
