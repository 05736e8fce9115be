//! A small mTLS HTTP client: what the demo's self-test (and a webhook sender) uses to reach
//! hookgate the way Wise does.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::tls::provider;

/// Builds a client config trusting `roots`, presenting `identity` (chain, key) when given, and
/// offering the given ALPN protocols.
pub fn config(
    roots: RootCertStore,
    identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut cfg = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key)?,
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// Connects and completes the TLS handshake.
pub async fn connect(
    addr: SocketAddr,
    server_name: &str,
    cfg: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    TlsConnector::from(cfg).connect(name, tcp).await
}

/// Sends one HTTP/1.1 request on a fresh connection and reads the whole response.
///
/// In TLS 1.3 the server checks the client certificate after the client has sent its last
/// handshake message, so a refused client may see `connect` succeed and learn of the refusal
/// (the TLS alert) only here, when reading.
pub async fn request_once(
    addr: SocketAddr,
    server_name: &str,
    cfg: Arc<ClientConfig>,
    req: Request<Full<Bytes>>,
) -> Result<Response<Bytes>, Box<dyn std::error::Error + Send + Sync>> {
    let tls = connect(addr, server_name, cfg).await?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    let conn = tokio::spawn(conn);
    let resp = match send.send_request(req).await {
        Ok(r) => r,
        // If the connection died first (a TLS alert on the first read), the request only
        // learns "canceled"; the connection task holds the real reason.
        Err(e) => {
            return Err(match conn.await {
                Ok(Err(conn_err)) => conn_err.into(),
                _ => e.into(),
            });
        }
    };
    let (parts, body) = resp.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Response::from_parts(parts, body))
}

/// A plain-HTTP `GET` on a fresh connection (the admin endpoints): status and body.
pub async fn get_plain(
    addr: SocketAddr,
    path: &str,
) -> Result<(http::StatusCode, String), Box<dyn std::error::Error + Send + Sync>> {
    let tcp = TcpStream::connect(addr).await?;
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let resp = send.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The value of one sample in a Prometheus text exposition, e.g.
/// `metric_value(text, "hookgate_requests_total{code=\"200\"}")`; `None` when absent.
pub fn metric_value(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}
