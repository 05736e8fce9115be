//! The verified client's identity, parsed once per connection right after the handshake, and
//! the request headers that describe it (SPEC "Headers added to every forwarded request").
//!
//! Header values are built here once, as ready `HeaderValue`s, so a keep-alive connection that
//! carries many requests pays for x509 parsing and string formatting only once.

use std::fmt::Write as _;

use http::HeaderValue;
use http::header::HeaderName;
use pki_types::CertificateDer;
use x509_parser::der_parser::asn1_rs::{Any, Tag, ToDer};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::X509Name;

use crate::config::HeaderConfig;

/// What the app is told about the client. Only the leaf is described; the chain is only used
/// for the RFC 9440 `Client-Cert-Chain` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// RFC 4514 subject DN, most specific RDN first.
    pub subject: String,
    /// RFC 4514 issuer DN.
    pub issuer: String,
    /// The first subject CN, for logs.
    pub common_name: Option<String>,
    /// Serial in uppercase hex, even length, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// SHA-256 of the leaf DER, lowercase hex.
    pub sha256: String,
    /// Expiry, RFC 3339 UTC, whole seconds.
    pub not_after: String,
    pub san_dns: Vec<String>,
    pub san_uri: Vec<String>,
}

/// Why a verified certificate could not be described. rustls/webpki have already accepted it,
/// so this means x509-parser is stricter than webpki about some detail; the connection is
/// closed rather than forwarded with a partial identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("the client presented no certificate")]
    NoCertificate,
    #[error("cannot parse the client certificate: {0}")]
    Parse(String),
}

impl PeerIdentity {
    pub fn from_der(leaf: &[u8]) -> Result<Self, IdentityError> {
        let (_, cert) =
            X509Certificate::from_der(leaf).map_err(|e| IdentityError::Parse(e.to_string()))?;
        let mut san_dns = Vec::new();
        let mut san_uri = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => san_dns.push((*d).to_string()),
                    GeneralName::URI(u) => san_uri.push((*u).to_string()),
                    _ => {}
                }
            }
        }
        Ok(Self {
            subject: dn_rfc4514(cert.subject()),
            issuer: dn_rfc4514(cert.issuer()),
            common_name: cert
                .subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_string),
            serial: serial_hex(cert.raw_serial()),
            sha256: hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, leaf).as_ref()),
            not_after: rfc3339(cert.validity().not_after.timestamp()),
            san_dns,
            san_uri,
        })
    }

    /// Envoy's `X-Forwarded-Client-Cert` element for this hop:
    /// `Hash=<hex>;Subject="<DN>";URI=<uri>;DNS=<dns>`. Subject is always quoted, as Envoy
    /// does; other values only when they hold `,` `;` `=` or `"`.
    pub fn xfcc(&self) -> String {
        let mut out = format!(
            "Hash={};Subject={}",
            self.sha256,
            quote(&self.subject, true)
        );
        for uri in &self.san_uri {
            let _ = write!(out, ";URI={}", quote(uri, false));
        }
        for dns in &self.san_dns {
            let _ = write!(out, ";DNS={}", quote(dns, false));
        }
        out
    }
}

/// The identity headers for one connection, built once at handshake time.
#[derive(Debug, Clone)]
pub struct IdentityHeaders {
    pub identity: PeerIdentity,
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl IdentityHeaders {
    /// `chain` is what the client sent: the leaf first, then any intermediates.
    pub fn build(chain: &[CertificateDer<'_>], cfg: HeaderConfig) -> Result<Self, IdentityError> {
        let leaf = chain.first().ok_or(IdentityError::NoCertificate)?;
        let identity = PeerIdentity::from_der(leaf)?;
        let mut headers = Vec::with_capacity(12);
        let mut add = |name: &'static str, value: &str| {
            headers.push((HeaderName::from_static(name), header_value(value)));
        };
        add("x-client-cert-verified", "SUCCESS");
        add("x-client-cert-subject", &identity.subject);
        add("x-client-cert-issuer", &identity.issuer);
        add("x-client-cert-serial", &identity.serial);
        add("x-client-cert-sha256", &identity.sha256);
        add("x-client-cert-not-after", &identity.not_after);
        if !identity.san_dns.is_empty() {
            add("x-client-cert-san-dns", &join_sans(&identity.san_dns));
        }
        if !identity.san_uri.is_empty() {
            add("x-client-cert-san-uri", &join_sans(&identity.san_uri));
        }
        if cfg.xfcc {
            add("x-forwarded-client-cert", &identity.xfcc());
        }
        if cfg.forward_cert {
            add("x-client-cert", &url_encode(&pem("CERTIFICATE", leaf)));
        }
        if cfg.rfc9440 {
            // RFC 9440 §2: each certificate is an RFC 8941 Byte Sequence (`:base64:`); the
            // chain header lists the certificates after the leaf, in the order sent.
            add("client-cert", &sf_binary(leaf));
            let rest: Vec<String> = chain[1..].iter().map(|c| sf_binary(c)).collect();
            if !rest.is_empty() {
                add("client-cert-chain", &rest.join(", "));
            }
        }
        Ok(Self { identity, headers })
    }
}

// === Formatting ===

/// Comma-separated SANs. A comma inside one value (never valid in a DNS name, possible in a
/// URI) is written `%2C`, so one SAN can never read as two.
fn join_sans(values: &[String]) -> String {
    values
        .iter()
        .map(|v| v.replace(',', "%2C"))
        .collect::<Vec<_>>()
        .join(",")
}

/// RFC 4514 string form of a DN: RDNs in reverse order of the encoding (most specific first),
/// multi-valued RDNs joined with `+`, values escaped per §2.4.
pub fn dn_rfc4514(name: &X509Name<'_>) -> String {
    let rdns: Vec<_> = name.iter_rdn().collect();
    let mut out = String::new();
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = atv.attr_type().to_id_string();
            // RFC 4514 §3: only these short names are defined; anything else is written as
            // its dotted OID with a hex-encoded BER value (§2.4).
            let short = match oid.as_str() {
                "2.5.4.3" => Some("CN"),
                "2.5.4.7" => Some("L"),
                "2.5.4.8" => Some("ST"),
                "2.5.4.10" => Some("O"),
                "2.5.4.11" => Some("OU"),
                "2.5.4.6" => Some("C"),
                "2.5.4.9" => Some("STREET"),
                "0.9.2342.19200300.100.1.25" => Some("DC"),
                "0.9.2342.19200300.100.1.1" => Some("UID"),
                _ => None,
            };
            match (short, attr_string(atv.attr_value())) {
                (Some(s), Some(v)) => {
                    out.push_str(s);
                    out.push('=');
                    escape_dn_value(&v, &mut out);
                }
                (s, _) => {
                    out.push_str(s.unwrap_or(&oid));
                    out.push_str("=#");
                    let der = atv.attr_value().to_der_vec().unwrap_or_default();
                    out.push_str(&hex(&der));
                }
            }
        }
    }
    out
}

/// Decodes the directory string types to text; `None` for anything else.
fn attr_string(any: &Any<'_>) -> Option<String> {
    let data = any.data;
    match any.tag() {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => std::str::from_utf8(data).ok().map(str::to_string),
        Tag::BmpString => {
            if data.len() % 2 != 0 {
                return None;
            }
            let units: Vec<u16> = data
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16(&units).ok()
        }
        Tag::UniversalString => {
            if data.len() % 4 != 0 {
                return None;
            }
            data.chunks_exact(4)
                .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        _ => None,
    }
}

/// RFC 4514 §2.4 escaping. Beyond what the RFC requires, control characters and non-ASCII
/// bytes are written as `\XX` hex pairs (which §2.4 allows for any character), so the result
/// is always a valid, plain-ASCII HTTP header value whatever a certificate holds.
fn escape_dn_value(v: &str, out: &mut String) {
    let last = v.len().saturating_sub(1);
    for (i, c) in v.char_indices() {
        let must = matches!(c, '"' | '+' | ',' | ';' | '<' | '>' | '\\')
            || (i == 0 && (c == ' ' || c == '#'))
            || (i == last && c == ' ');
        if must {
            out.push('\\');
            out.push(c);
        } else if c.is_ascii_control() || !c.is_ascii() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "\\{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
}

/// XFCC value quoting (Envoy): double-quote when the value holds `,` `;` `=` or `"`, and
/// backslash-escape `"` and `\` inside the quotes.
fn quote(v: &str, always: bool) -> String {
    if !always && !v.contains([',', ';', '=', '"']) {
        return v.to_string();
    }
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The serial as `openssl x509 -serial` prints it: the integer's bytes in uppercase hex, without
/// DER's leading sign byte, at least one byte.
pub fn serial_hex(raw: &[u8]) -> String {
    let mut bytes = raw;
    while bytes.len() > 1 && bytes[0] == 0 {
        bytes = &bytes[1..];
    }
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02X}");
        s
    })
}

pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Unix seconds → RFC 3339 UTC with whole seconds (`2027-01-31T23:59:59Z`).
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// PEM text for one DER block, 64 columns.
pub fn pem(label: &str, der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

/// Percent-encodes everything but RFC 3986 unreserved characters, as nginx's
/// `$ssl_client_escaped_cert` does.
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn sf_binary(der: &[u8]) -> String {
    use base64::Engine as _;
    format!(
        ":{}:",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

/// Builds a header value; bytes that a header cannot carry are percent-encoded so that a
/// hostile certificate can never produce an invalid or split header.
fn header_value(v: &str) -> HeaderValue {
    HeaderValue::from_str(v).unwrap_or_else(|_| {
        let mut out = String::with_capacity(v.len());
        for b in v.bytes() {
            if (0x20..0x7f).contains(&b) && b != b'%' {
                out.push(char::from(b));
            } else {
                let _ = write!(out, "%{b:02X}");
            }
        }
        HeaderValue::from_str(&out).unwrap_or(HeaderValue::from_static("invalid"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_801_439_999), "2027-01-31T23:59:59Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn serial_drops_sign_byte_only() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8F01");
        assert_eq!(serial_hex(&[0x01, 0x00]), "0100");
        assert_eq!(serial_hex(&[0x00]), "00");
    }

    #[test]
    fn dn_escaping_follows_rfc4514() {
        let mut s = String::new();
        escape_dn_value(" a,b+c\"d\\e;<f># ", &mut s);
        assert_eq!(s, "\\ a\\,b\\+c\\\"d\\\\e\\;\\<f\\>#\\ ");
        let mut s = String::new();
        escape_dn_value("#x\né", &mut s);
        assert_eq!(s, "\\#x\\0A\\C3\\A9");
    }

    #[test]
    fn xfcc_quotes_as_envoy_does() {
        let id = PeerIdentity {
            subject: "CN=a \"b\",O=c\\d".into(),
            issuer: String::new(),
            common_name: None,
            serial: String::new(),
            sha256: "ab".into(),
            not_after: String::new(),
            san_dns: vec!["x.example".into()],
            san_uri: vec!["spiffe://t/a;b".into()],
        };
        assert_eq!(
            id.xfcc(),
            "Hash=ab;Subject=\"CN=a \\\"b\\\",O=c\\\\d\";URI=\"spiffe://t/a;b\";DNS=x.example"
        );
    }

    #[test]
    fn a_comma_inside_a_san_cannot_split_it() {
        let sans = vec!["https://a.example/x,y".to_string(), "b".to_string()];
        assert_eq!(join_sans(&sans), "https://a.example/x%2Cy,b");
    }

    #[test]
    fn header_values_never_carry_control_bytes() {
        assert_eq!(header_value("a\r\nb").to_str().unwrap(), "a%0D%0Ab");
        assert_eq!(header_value("plain").to_str().unwrap(), "plain");
    }
}
