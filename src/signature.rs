//! Payload signatures: Wise signs every webhook body with RSA PKCS#1 v1.5 over SHA-256 and
//! sends the Base64 signature in `X-Signature-SHA256`. It is a public-key signature, not an
//! HMAC: anyone can verify it with Wise's published key, and only Wise can make it.
//!
//! Verification uses aws-lc-rs, the crypto provider rustls already runs on; no other RSA code
//! is in the tree. The two Wise keys are built into the binary from `certs/wise/`.

use std::path::Path;

use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};
use base64::Engine as _;
use http::HeaderName;
use pki_types::SubjectPublicKeyInfoDer;
use pki_types::pem::PemObject;

use crate::config::{ConfigError, SignatureConfig, SignatureKeySource, SignatureMode};
use crate::metrics::SignatureResult;

/// Wise's production signing key (from Wise's public documentation).
pub const WISE_PRODUCTION_PEM: &str =
    include_str!("../certs/wise/production-signing-public-key.pem");
/// Wise's sandbox signing key.
pub const WISE_SANDBOX_PEM: &str = include_str!("../certs/wise/sandbox-signing-public-key.pem");

/// One RSA public key that signatures are checked against.
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// `wise-production`, `wise-sandbox` or the file's path, for logs and `check`.
    pub name: String,
    /// SHA-256 of the DER SubjectPublicKeyInfo, lowercase hex.
    pub spki_sha256: String,
    spki: Vec<u8>,
}

impl PublicKey {
    /// Parses a PEM `PUBLIC KEY` (SubjectPublicKeyInfo) holding an RSA key of 2048 bits or
    /// more; the check runs one verification so that a key aws-lc-rs cannot use is refused
    /// here rather than failing every request.
    pub fn from_pem(name: &str, pem: &[u8]) -> Result<Self, String> {
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem)
            .map_err(|e| format!("no PEM PUBLIC KEY block: {e:?}"))?;
        let key = Self {
            name: name.to_string(),
            spki_sha256: crate::identity::hex(
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki.as_ref()).as_ref(),
            ),
            spki: spki.as_ref().to_vec(),
        };
        // A well-formed RSA key fails this with "bad signature"; anything else cannot parse.
        let probe = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &key.spki);
        match probe.verify(b"probe", &[0u8; 256]) {
            Err(_) if key.is_rsa() => Ok(key),
            _ => Err("not an RSA public key of 2048 to 8192 bits".into()),
        }
    }

    /// Whether the SPKI's algorithm is rsaEncryption (OID 1.2.840.113549.1.1.1).
    fn is_rsa(&self) -> bool {
        const RSA_OID: &[u8] = &[
            0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01,
        ];
        self.spki
            .windows(RSA_OID.len())
            .take(24)
            .any(|w| w == RSA_OID)
    }

    fn verifies(&self, body: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &self.spki)
            .verify(body, signature)
            .is_ok()
    }
}

/// The signature policy in force: mode, header and keys.
#[derive(Debug, Clone)]
pub struct SignatureCheck {
    pub mode: SignatureMode,
    pub header: HeaderName,
    pub keys: Vec<PublicKey>,
}

impl SignatureCheck {
    /// Loads the keys `cfg` names, reporting every problem with its key and file.
    pub fn load(cfg: &SignatureConfig, config_file: &Path) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut keys = Vec::new();
        for (i, source) in cfg.keys.iter().enumerate() {
            let loaded = match source {
                SignatureKeySource::WiseProduction => {
                    PublicKey::from_pem("wise-production", WISE_PRODUCTION_PEM.as_bytes())
                }
                SignatureKeySource::WiseSandbox => {
                    PublicKey::from_pem("wise-sandbox", WISE_SANDBOX_PEM.as_bytes())
                }
                SignatureKeySource::File(path) => std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
                    .and_then(|pem| {
                        PublicKey::from_pem(&path.display().to_string(), &pem)
                            .map_err(|e| format!("{}: {e}", path.display()))
                    }),
            };
            match loaded {
                Ok(k) => keys.push(k),
                Err(message) => errors.push(ConfigError {
                    file: config_file.to_path_buf(),
                    key: format!("signature.keys[{i}]"),
                    message,
                }),
            }
        }
        if errors.is_empty() {
            Ok(Self {
                mode: cfg.mode,
                header: cfg.header.clone(),
                keys,
            })
        } else {
            Err(errors)
        }
    }

    /// Checks `body` against the signature header's value (`None`: the header was absent).
    /// A value that is not Base64, or that no key verifies, is invalid.
    pub fn verify(&self, body: &[u8], header: Option<&[u8]>) -> SignatureResult {
        let Some(value) = header else {
            return SignatureResult::Missing;
        };
        let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(value.trim_ascii())
        else {
            return SignatureResult::Invalid;
        };
        if self.keys.iter().any(|k| k.verifies(body, &signature)) {
            SignatureResult::Valid
        } else {
            SignatureResult::Invalid
        }
    }
}

/// Signs `body` as Wise does (RSA PKCS#1 v1.5, SHA-256, Base64), with a PKCS#8 or PKCS#1 PEM
/// private key: for `send-test` and the demo.
pub fn sign(private_key_pem: &[u8], body: &[u8]) -> Result<String, String> {
    use aws_lc_rs::signature::{RSA_PKCS1_SHA256, RsaKeyPair};
    let der = pki_types::PrivateKeyDer::from_pem_slice(private_key_pem)
        .map_err(|e| format!("no PEM private key: {e:?}"))?;
    let pair = match &der {
        pki_types::PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()),
        pki_types::PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()),
        _ => return Err("the signing key must be an RSA key (PKCS#8 or PKCS#1 PEM)".into()),
    }
    .map_err(|e| format!("not a usable RSA private key: {e}"))?;
    let mut sig = vec![0u8; pair.public_modulus_len()];
    pair.sign(
        &RSA_PKCS1_SHA256,
        &aws_lc_rs::rand::SystemRandom::new(),
        body,
        &mut sig,
    )
    .map_err(|e| format!("signing failed: {e}"))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(sig))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_keys_load_with_their_published_fingerprints() {
        let p = PublicKey::from_pem("p", WISE_PRODUCTION_PEM.as_bytes()).unwrap();
        let s = PublicKey::from_pem("s", WISE_SANDBOX_PEM.as_bytes()).unwrap();
        assert_eq!(
            p.spki_sha256,
            "e86411cd96968b70488a1c11dcd22907075dfd25299800578c405c9010a0834a"
        );
        assert_eq!(
            s.spki_sha256,
            "30bfe2d6312e1b03eedca03db05ee5d0ba3b57e648757b57d0d89a593f710edf"
        );
    }

    #[test]
    fn non_rsa_keys_are_refused() {
        let ec = rcgen::KeyPair::generate().unwrap();
        assert!(PublicKey::from_pem("ec", ec.public_key_pem().as_bytes()).is_err());
        assert!(PublicKey::from_pem("junk", b"hello").is_err());
    }

    #[test]
    fn sign_then_verify() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        let check = SignatureCheck {
            mode: SignatureMode::Enforce,
            header: HeaderName::from_static("x-signature-sha256"),
            keys: vec![PublicKey::from_pem("k", key.public_key_pem().as_bytes()).unwrap()],
        };
        let sig = sign(key.serialize_pem().as_bytes(), b"{\"a\":1}").unwrap();
        assert_eq!(
            check.verify(b"{\"a\":1}", Some(sig.as_bytes())),
            SignatureResult::Valid
        );
        assert_eq!(
            check.verify(b"{\"a\":2}", Some(sig.as_bytes())),
            SignatureResult::Invalid
        );
        assert_eq!(check.verify(b"x", Some(b"%%%")), SignatureResult::Invalid);
        assert_eq!(check.verify(b"x", None), SignatureResult::Missing);
    }
}
