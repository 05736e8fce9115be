//! Client policy beyond "a valid chain": the `clients.allow` list and `tls.max_chain_depth`.
//! Both run inside the TLS handshake, after rustls' WebPKI verifier has accepted the chain, so
//! that a refused client gets a TLS alert and never an HTTP exchange.
//!
//! Matching rules (README "Allow-list"): every key given in an entry must match and a client
//! must match at least one entry. Strings match exactly and case-sensitively, against any of
//! the certificate's values for that attribute (a subject may carry several OUs). `san_dns` is
//! compared case-insensitively (DNS names are, RFC 4343) and may be `*.example.com`, which
//! matches a SAN with exactly one more label in front (`a.example.com`, not `example.com` nor
//! `a.b.example.com`); a SAN that is itself a wildcard matches only the same wildcard written
//! in the entry. Pins compare SHA-256 digests: of the DER SubjectPublicKeyInfo, or of the whole
//! DER certificate.

use std::collections::{HashSet, VecDeque};

use pki_types::CertificateDer;
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

use crate::config::AllowEntry;

/// Why a chain that WebPKI accepted is refused anyway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRefusal {
    #[error("client certificate {subject} matches no clients.allow entry")]
    NotAllowed { subject: String },
    #[error("chain needs {found} intermediates; tls.max_chain_depth allows {max}")]
    ChainTooLong { found: usize, max: usize },
    #[error("client certificate cannot be parsed for the policy check: {0}")]
    Unparsable(String),
}

/// A CA certificate's raw names, for path-length counting.
#[derive(Debug, Clone)]
pub struct CaName {
    pub subject: Vec<u8>,
    pub issuer: Vec<u8>,
}

/// The policy in force, rebuilt on every reload.
#[derive(Debug, Default)]
pub struct ClientPolicy {
    pub allow: Option<Vec<AllowEntry>>,
    pub max_chain_depth: usize,
    /// Raw subjects of the trust anchors.
    pub anchors: HashSet<Vec<u8>>,
    /// Intermediates from the CA bundles.
    pub intermediates: Vec<CaName>,
}

impl ClientPolicy {
    /// Checks a chain that WebPKI has already verified: leaf first, then what the client sent.
    pub fn check(
        &self,
        leaf: &CertificateDer<'_>,
        sent: &[CertificateDer<'_>],
    ) -> Result<(), PolicyRefusal> {
        // Without an allow-list, a path can only be too long if there are more intermediates
        // to build it from than the depth allows; usually there are not, and the leaf need not
        // be parsed at all (it is, once, for the identity headers).
        if self.allow.is_none() && self.intermediates.len() + sent.len() <= self.max_chain_depth {
            return Ok(());
        }
        let (_, cert) = X509Certificate::from_der(leaf)
            .map_err(|e| PolicyRefusal::Unparsable(e.to_string()))?;
        self.check_depth(&cert, sent)?;
        if let Some(allow) = &self.allow {
            let facts = Facts::of(&cert, leaf);
            if !allow.iter().any(|e| facts.matches(e)) {
                return Err(PolicyRefusal::NotAllowed {
                    subject: crate::identity::dn_rfc4514(cert.subject()),
                });
            }
        }
        Ok(())
    }

    /// The fewest intermediates any path from the leaf to an anchor needs, matching issuer to
    /// subject names as the path builder does. WebPKI has already found a path, so one exists;
    /// if a longer one was taken, the shortest still decides, since a client cannot be blamed
    /// for the builder's choice.
    fn check_depth(
        &self,
        leaf: &X509Certificate<'_>,
        sent: &[CertificateDer<'_>],
    ) -> Result<(), PolicyRefusal> {
        // Fast path: the leaf's issuer is an anchor (no intermediates at all).
        let start = leaf.issuer().as_raw();
        if self.anchors.contains(start) {
            return Ok(());
        }
        let mut cas: Vec<CaName> = self.intermediates.clone();
        for der in sent {
            if let Ok((_, c)) = X509Certificate::from_der(der) {
                cas.push(CaName {
                    subject: c.subject().as_raw().to_vec(),
                    issuer: c.issuer().as_raw().to_vec(),
                });
            }
        }
        // Breadth-first over names: a node is "a CA named N", its depth the intermediates so far.
        let mut seen: HashSet<&[u8]> = HashSet::new();
        let mut queue: VecDeque<(&[u8], usize)> = VecDeque::from([(start, 0)]);
        let mut shortest = None;
        while let Some((name, depth)) = queue.pop_front() {
            if !seen.insert(name) {
                continue;
            }
            for ca in cas.iter().filter(|c| c.subject == name) {
                let d = depth + 1;
                if self.anchors.contains(ca.issuer.as_slice()) {
                    shortest = Some(shortest.map_or(d, |s: usize| s.min(d)));
                } else if ca.issuer != ca.subject {
                    queue.push_back((ca.issuer.as_slice(), d));
                }
            }
            if shortest.is_some() {
                break;
            }
        }
        // An intermediate that is itself an anchor in the bundle ends the path too.
        let found = shortest.unwrap_or(0);
        if found > self.max_chain_depth {
            return Err(PolicyRefusal::ChainTooLong {
                found,
                max: self.max_chain_depth,
            });
        }
        Ok(())
    }
}

/// What an allow-list entry can test, read once from the leaf.
struct Facts<'a> {
    cn: Vec<&'a str>,
    o: Vec<&'a str>,
    ou: Vec<&'a str>,
    issuer_cn: Vec<&'a str>,
    san_dns: Vec<String>,
    san_uri: Vec<&'a str>,
    spki_der: &'a [u8],
    cert_der: &'a [u8],
}

impl<'a> Facts<'a> {
    fn of(cert: &'a X509Certificate<'a>, der: &'a [u8]) -> Self {
        let strings = |it: &mut dyn Iterator<
            Item = &'a x509_parser::x509::AttributeTypeAndValue<'a>,
        >| { it.filter_map(|a| a.as_str().ok()).collect::<Vec<&'a str>>() };
        let mut san_dns = Vec::new();
        let mut san_uri = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(d) => san_dns.push(d.to_ascii_lowercase()),
                    GeneralName::URI(u) => san_uri.push(*u),
                    _ => {}
                }
            }
        }
        Self {
            cn: strings(&mut cert.subject().iter_common_name()),
            o: strings(&mut cert.subject().iter_organization()),
            ou: strings(&mut cert.subject().iter_organizational_unit()),
            issuer_cn: strings(&mut cert.issuer().iter_common_name()),
            san_dns,
            san_uri,
            spki_der: cert.public_key().raw,
            cert_der: der,
        }
    }

    fn matches(&self, e: &AllowEntry) -> bool {
        let any = |values: &[&str], want: &Option<String>| {
            want.as_deref().is_none_or(|w| values.contains(&w))
        };
        any(&self.cn, &e.subject_cn)
            && any(&self.o, &e.subject_o)
            && any(&self.ou, &e.subject_ou)
            && any(&self.issuer_cn, &e.issuer_cn)
            && any(&self.san_uri, &e.san_uri)
            && e.san_dns
                .as_deref()
                .is_none_or(|p| self.san_dns.iter().any(|d| dns_matches(p, d)))
            && e.spki_sha256.is_none_or(|pin| sha256(self.spki_der) == pin)
            && e.cert_sha256.is_none_or(|pin| sha256(self.cert_der) == pin)
    }
}

/// `pattern` (lower case, maybe `*.rest`) against a lower-cased SAN.
fn dns_matches(pattern: &str, san: &str) -> bool {
    if pattern == san {
        return true;
    }
    match pattern.strip_prefix("*.") {
        Some(rest) => san
            .split_once('.')
            .is_some_and(|(label, tail)| !label.is_empty() && label != "*" && tail == rest),
        None => false,
    }
}

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_wildcards_cover_exactly_one_label() {
        assert!(dns_matches("*.wise.com", "hooks.wise.com"));
        assert!(!dns_matches("*.wise.com", "wise.com"));
        assert!(!dns_matches("*.wise.com", "a.hooks.wise.com"));
        assert!(!dns_matches("*.wise.com", "*.wise.com.evil"));
        assert!(dns_matches("*.wise.com", "*.wise.com"), "literal equality");
        assert!(!dns_matches("*.wise.com", ".wise.com"));
        assert!(!dns_matches("hooks.wise.com", "other.wise.com"));
    }
}
