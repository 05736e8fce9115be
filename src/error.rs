//! Errors on the request path, each mapped to the status and error code that SPEC fixes, and to
//! a bounded metric label. The matches are exhaustive on purpose: a new variant must be given a
//! status and a label before it compiles.

use std::fmt::Write as _;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::metrics::{RejectReason, UpstreamErrorKind};

/// Why hookgate answered a request itself instead of relaying the upstream's response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The upstream refused or could not be reached within `upstream.connect_timeout`.
    #[error("upstream unavailable: {0}")]
    UpstreamConnect(String),
    /// The connection to the upstream broke before its response headers arrived.
    #[error("upstream closed the connection: {0}")]
    UpstreamReset(String),
    /// The upstream answered with something that is not HTTP/1.1 hyper can parse.
    #[error("upstream sent an invalid response: {0}")]
    UpstreamProtocol(String),
    /// The upstream did not send response headers within `upstream.request_timeout`.
    #[error("upstream did not answer within {0:?}")]
    UpstreamTimeout(std::time::Duration),
    /// The request body is larger than `limits.max_body`.
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(u64),
    /// The request head is larger than `limits.max_header_bytes`.
    #[error("request headers larger than {0} bytes")]
    HeadersTooLarge(usize),
    /// `shutdown.grace_period` ran out before the upstream answered.
    #[error("hookgate is shutting down; retry")]
    ShuttingDown,
    /// `signature.mode: enforce` and the request carries no signature header.
    #[error("the request has no {0} header")]
    SignatureMissing(String),
    /// `signature.mode: enforce` and no configured key verifies the signature.
    #[error("the {0} signature does not verify against the configured keys")]
    SignatureInvalid(String),
    /// The body to be verified did not arrive within `upstream.request_timeout`.
    #[error("the request body did not arrive within {0:?}")]
    BodyTimeout(std::time::Duration),
    /// The request body could not be read (malformed framing, or the client went away).
    #[error("the request body could not be read: {0}")]
    BadBody(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UpstreamConnect(_) | Self::UpstreamReset(_) | Self::UpstreamProtocol(_) => {
                StatusCode::BAD_GATEWAY
            }
            Self::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Self::SignatureMissing(_) | Self::SignatureInvalid(_) => StatusCode::FORBIDDEN,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::BadBody(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The `error` field of the JSON body (SPEC "Status codes").
    pub fn code(&self) -> &'static str {
        match self {
            Self::UpstreamConnect(_) | Self::UpstreamReset(_) | Self::UpstreamProtocol(_) => {
                "upstream_unavailable"
            }
            Self::UpstreamTimeout(_) => "upstream_timeout",
            Self::BodyTooLarge(_) => "body_too_large",
            Self::HeadersTooLarge(_) => "headers_too_large",
            Self::ShuttingDown => "shutting_down",
            Self::SignatureMissing(_) => "signature_missing",
            Self::SignatureInvalid(_) => "signature_invalid",
            Self::BodyTimeout(_) => "body_timeout",
            Self::BadBody(_) => "bad_request",
        }
    }

    /// The `kind` label of `hookgate_upstream_errors_total`, for upstream failures.
    pub fn upstream_kind(&self) -> Option<UpstreamErrorKind> {
        match self {
            Self::UpstreamConnect(_) => Some(UpstreamErrorKind::Connect),
            Self::UpstreamReset(_) => Some(UpstreamErrorKind::Reset),
            Self::UpstreamProtocol(_) => Some(UpstreamErrorKind::Other),
            Self::UpstreamTimeout(_) => Some(UpstreamErrorKind::Timeout),
            Self::BodyTooLarge(_)
            | Self::HeadersTooLarge(_)
            | Self::ShuttingDown
            | Self::SignatureMissing(_)
            | Self::SignatureInvalid(_)
            | Self::BodyTimeout(_)
            | Self::BadBody(_) => None,
        }
    }

    /// The `reason` label of `hookgate_rejected_requests_total`, for requests hookgate refused.
    pub fn reject_reason(&self) -> Option<RejectReason> {
        match self {
            Self::BodyTooLarge(_) => Some(RejectReason::BodyTooLarge),
            Self::HeadersTooLarge(_) => Some(RejectReason::HeadersTooLarge),
            Self::ShuttingDown => Some(RejectReason::ShuttingDown),
            Self::SignatureMissing(_) => Some(RejectReason::SignatureMissing),
            Self::SignatureInvalid(_) => Some(RejectReason::SignatureInvalid),
            Self::BodyTimeout(_)
            | Self::BadBody(_)
            | Self::UpstreamConnect(_)
            | Self::UpstreamReset(_)
            | Self::UpstreamProtocol(_)
            | Self::UpstreamTimeout(_) => None,
        }
    }

    /// Classifies a failed upstream request: a connect failure, a response hyper cannot parse,
    /// or a connection that broke (reset, closed early).
    pub fn from_client_error(e: &hyper_util::client::legacy::Error) -> Self {
        let text = error_chain(e);
        if e.is_connect() {
            return Self::UpstreamConnect(text);
        }
        let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
        while let Some(c) = cur {
            if let Some(h) = c.downcast_ref::<hyper::Error>() {
                if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
                    return Self::UpstreamProtocol(text);
                }
            }
            cur = c.source();
        }
        Self::UpstreamReset(text)
    }

    pub fn to_response(&self) -> Response<Full<Bytes>> {
        json_response(self.status(), self.code(), &self.to_string())
    }

    /// Whether the connection should close after this answer: the client may still be
    /// sending what was refused, and hookgate will not read all of it.
    pub fn closes_connection(&self) -> bool {
        match self {
            Self::BodyTooLarge(_)
            | Self::HeadersTooLarge(_)
            | Self::ShuttingDown
            | Self::BodyTimeout(_)
            | Self::BadBody(_) => true,
            Self::SignatureMissing(_)
            | Self::SignatureInvalid(_)
            | Self::UpstreamConnect(_)
            | Self::UpstreamReset(_)
            | Self::UpstreamProtocol(_)
            | Self::UpstreamTimeout(_) => false,
        }
    }
}

/// `{"error": "<code>", "message": "..."}` with the given status.
pub fn json_response(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "{{\"error\":\"{}\",\"message\":\"{}\"}}\n",
        json_escape(code),
        json_escape(message)
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// An error and its sources, `: `-separated, for a message that says what actually failed.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes_follow_spec() {
        let cases = [
            (
                ProxyError::UpstreamConnect("x".into()),
                502,
                "upstream_unavailable",
            ),
            (
                ProxyError::UpstreamReset("x".into()),
                502,
                "upstream_unavailable",
            ),
            (
                ProxyError::UpstreamTimeout(std::time::Duration::from_secs(1)),
                504,
                "upstream_timeout",
            ),
            (ProxyError::BodyTooLarge(1), 413, "body_too_large"),
            (ProxyError::HeadersTooLarge(1), 431, "headers_too_large"),
            (ProxyError::ShuttingDown, 503, "shutting_down"),
            (
                ProxyError::SignatureMissing("h".into()),
                403,
                "signature_missing",
            ),
            (
                ProxyError::SignatureInvalid("h".into()),
                403,
                "signature_invalid",
            ),
        ];
        for (e, status, code) in cases {
            assert_eq!(e.status().as_u16(), status);
            assert_eq!(e.code(), code);
        }
    }

    #[test]
    fn json_is_escaped() {
        assert_eq!(json_escape("a \"b\"\n\u{1}"), "a \\\"b\\\"\\n\\u0001");
    }
}
