//! Minting throwaway PKIs with rcgen: the demo's Wise-shaped chain, and every certificate the
//! tests need (expired, wrong usage, self-signed, ...). Nothing minted here is ever trusted by
//! a real deployment; it lives in memory or in a temp dir.

use std::net::IpAddr;
use std::time::Duration;

use pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SanType, SerialNumber,
};
use time::OffsetDateTime;
use x509_parser::prelude::{FromDer as _, X509Certificate};

pub use rcgen::{Error, ExtendedKeyUsagePurpose as Eku, KeyPair as RcgenKeyPair};

/// A CA that can issue certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    /// A self-signed root CA.
    pub fn root(cn: &str, org: &str) -> Result<Self, Error> {
        let params = ca_params(cn, org, BasicConstraints::Unconstrained);
        Ok(Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate()?)?,
        })
    }

    /// An intermediate CA issued by this one.
    pub fn intermediate(&self, cn: &str, org: &str) -> Result<Self, Error> {
        let params = ca_params(cn, org, BasicConstraints::Constrained(0));
        Ok(Self {
            issuer: CertifiedIssuer::signed_by(params, KeyPair::generate()?, &self.issuer)?,
        })
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// The raw serial number of this CA's certificate.
    pub fn serial(&self) -> Vec<u8> {
        serial_of(self.issuer.der())
    }

    /// A PEM CRL signed by this CA that revokes the given serials, issued an hour ago and
    /// valid until `next_update`.
    pub fn crl(&self, revoked: &[Vec<u8>], next_update: OffsetDateTime) -> Result<String, Error> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::from_secs(3600),
            next_update,
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|serial| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: now - Duration::from_secs(1800),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer)?.pem()
    }

    /// Issues an end-entity certificate as `spec` describes, with a new P-256 key.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Leaf, Error> {
        self.issue_with_key(spec, &KeyPair::generate()?)
    }

    /// Issues an end-entity certificate for the given key (RSA, P-384, Ed25519, ...).
    pub fn issue_with_key(&self, spec: &LeafSpec, key: &KeyPair) -> Result<Leaf, Error> {
        let cert = spec.params()?.signed_by(key, &self.issuer)?;
        Ok(Leaf {
            der: cert.der().clone(),
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        })
    }
}

fn ca_params(cn: &str, org: &str, constraints: BasicConstraints) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    // Most general attribute first, as real CAs encode names (RFC 4514 prints them reversed).
    p.distinguished_name.push(DnType::OrganizationName, org);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(constraints);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::from_secs(86_400);
    p.not_after = now + Duration::from_secs(5 * 365 * 86_400);
    p
}

/// What to put in an end-entity certificate.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub cn: String,
    pub org: Option<String>,
    pub dns: Vec<String>,
    pub uris: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub eku: Vec<ExtendedKeyUsagePurpose>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub serial: Option<Vec<u8>>,
}

impl LeafSpec {
    /// A client certificate (EKU clientAuth), valid from yesterday for 90 days.
    pub fn client(cn: &str) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            cn: cn.to_string(),
            org: None,
            dns: Vec::new(),
            uris: Vec::new(),
            ips: Vec::new(),
            eku: vec![ExtendedKeyUsagePurpose::ClientAuth],
            not_before: now - Duration::from_secs(86_400),
            not_after: now + Duration::from_secs(90 * 86_400),
            serial: None,
        }
    }

    /// A server certificate (EKU serverAuth) for `localhost` and 127.0.0.1.
    pub fn localhost_server() -> Self {
        let mut s = Self::client("localhost");
        s.eku = vec![ExtendedKeyUsagePurpose::ServerAuth];
        s.dns = vec!["localhost".into()];
        s.ips = vec![IpAddr::from([127, 0, 0, 1])];
        s
    }

    /// A self-signed certificate as this spec describes (a client that made up its own
    /// certificate).
    pub fn self_signed(&self) -> Result<Leaf, Error> {
        let key = KeyPair::generate()?;
        let cert = self.params()?.self_signed(&key)?;
        Ok(Leaf {
            der: cert.der().clone(),
            pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        })
    }

    fn params(&self) -> Result<CertificateParams, Error> {
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(o) = &self.org {
            p.distinguished_name
                .push(DnType::OrganizationName, o.as_str());
        }
        p.distinguished_name
            .push(DnType::CommonName, self.cn.as_str());
        for d in &self.dns {
            p.subject_alt_names
                .push(SanType::DnsName(d.as_str().try_into()?));
        }
        for u in &self.uris {
            p.subject_alt_names
                .push(SanType::URI(u.as_str().try_into()?));
        }
        for ip in &self.ips {
            p.subject_alt_names.push(SanType::IpAddress(*ip));
        }
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages.clone_from(&self.eku);
        p.not_before = self.not_before;
        p.not_after = self.not_after;
        p.serial_number = self.serial.as_deref().map(SerialNumber::from_slice);
        p.use_authority_key_identifier_extension = true;
        Ok(p)
    }
}

/// An issued end-entity certificate and its key.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub der: CertificateDer<'static>,
    pub pem: String,
    /// PKCS#8 PEM.
    pub key_pem: String,
    key_der: Vec<u8>,
}

/// The raw serial of a certificate this module minted (so it parses).
fn serial_of(der: &[u8]) -> Vec<u8> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c.raw_serial().to_vec())
        .unwrap_or_default()
}

impl Leaf {
    /// The raw serial number, for revoking it.
    pub fn serial(&self) -> Vec<u8> {
        serial_of(&self.der)
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

/// The demo's PKI, shaped like Wise's: root → intermediate → client leaf, plus a separate
/// server CA and a server certificate for localhost.
pub struct DemoPki {
    pub root: Ca,
    pub intermediate: Ca,
    pub client: Leaf,
    pub server_ca: Ca,
    pub server: Leaf,
    /// An RSA-2048 payload-signing key standing in for Wise's (PKCS#8 PEM) and its public
    /// half (SPKI PEM).
    pub signing_key_pem: String,
    pub signing_public_pem: String,
}

impl DemoPki {
    pub fn mint() -> Result<Self, Error> {
        let root = Ca::root("Demo Wise-like Root CA", "hookgate demo")?;
        let intermediate = root.intermediate("Demo Wise-like Issuing CA", "hookgate demo")?;
        let mut spec = LeafSpec::client("webhooks.demo.invalid");
        spec.org = Some("hookgate demo sender".into());
        spec.dns = vec!["webhooks.demo.invalid".into()];
        let client = intermediate.issue(&spec)?;
        let server_ca = Ca::root("Demo Server CA", "hookgate demo")?;
        let server = server_ca.issue(&LeafSpec::localhost_server())?;
        let signing = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256)?;
        Ok(Self {
            root,
            intermediate,
            client,
            server_ca,
            server,
            signing_key_pem: signing.serialize_pem(),
            signing_public_pem: signing.public_key_pem(),
        })
    }
}
