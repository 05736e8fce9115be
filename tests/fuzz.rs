//! Property tests standing in for fuzz targets (this toolchain is stable-only, so cargo-fuzz's
//! libFuzzer harness cannot run here): the config parser, the PROXY header parser, identity
//! headers from hostile certificate DER, and header sanitising. Each runs a bounded number of
//! cases in `cargo test`; raise `PROPTEST_CASES` for a longer run. The property is the same as a
//! fuzzer's: no panic, and the invariants hold on whatever input arrives.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod support;

use std::path::Path;

use hookgate::config::{Config, HeaderConfig};
use hookgate::identity::IdentityHeaders;
use hookgate::pki::LeafSpec;
use hookgate::proxy_protocol::{V2_SIGNATURE, parse_v1, parse_v2, v2_body_len};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use pki_types::CertificateDer;
use proptest::prelude::*;
use support::Pki;

const EXAMPLE: &str = include_str!("../deploy/config.yaml");

fn all_headers() -> HeaderConfig {
    HeaderConfig {
        xfcc: true,
        forward_cert: true,
        rfc9440: true,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn config_parser_never_panics_on_arbitrary_text(text in ".{0,400}") {
        let _ = Config::from_yaml(&text, Path::new("/fuzz/config.yaml"));
    }

    #[test]
    fn config_parser_never_panics_on_mutated_configs(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..8)
    ) {
        let mut bytes = EXAMPLE.as_bytes().to_vec();
        for (at, byte, op) in edits {
            let i = at.index(bytes.len().max(1));
            match op {
                0 if i < bytes.len() => bytes[i] = byte,
                1 => bytes.insert(i.min(bytes.len()), byte),
                _ if i < bytes.len() => { bytes.remove(i); }
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        if let Err(errors) = Config::from_yaml(&text, Path::new("/fuzz/config.yaml")) {
            // Every problem names the file, as the CLI promises.
            for e in errors.0 {
                prop_assert_eq!(e.file, Path::new("/fuzz/config.yaml"));
            }
        }
    }

    #[test]
    fn proxy_v1_parser_never_panics(line in prop::collection::vec(any::<u8>(), 0..120)) {
        let _ = parse_v1(&line);
    }

    #[test]
    fn proxy_v1_parser_on_near_valid_lines(
        proto in prop::sample::select(vec!["TCP4", "TCP6", "UNKNOWN", "TCP5", ""]),
        a in "[0-9a-f.:]{0,20}", b in "[0-9a-f.:]{0,20}", p in "[0-9]{0,6}", q in "[0-9]{0,6}",
    ) {
        let line = format!("PROXY {proto} {a} {b} {p} {q}\r\n");
        if let Ok(Some(addr)) = parse_v1(line.as_bytes()) {
            prop_assert_eq!(addr.port().to_string(), p);
        }
    }

    #[test]
    fn proxy_v2_parser_never_panics(
        ver_cmd in any::<u8>(), fam in any::<u8>(), body in prop::collection::vec(any::<u8>(), 0..300)
    ) {
        let mut fixed = [0u8; 16];
        fixed[..12].copy_from_slice(&V2_SIGNATURE);
        fixed[12] = ver_cmd;
        fixed[13] = fam;
        fixed[14..].copy_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        if v2_body_len(&fixed).is_ok() {
            let _ = parse_v2(&fixed, &body);
        }
    }

    #[test]
    fn proxy_v2_round_trips_ipv4(a in any::<[u8; 4]>(), port in any::<u16>(), tlvs in prop::collection::vec((any::<u8>(), prop::collection::vec(any::<u8>(), 0..20)), 0..4)) {
        let mut body = a.to_vec();
        body.extend_from_slice(&[10, 0, 0, 1]);
        body.extend_from_slice(&port.to_be_bytes());
        body.extend_from_slice(&443u16.to_be_bytes());
        for (t, v) in &tlvs {
            body.push(*t);
            body.extend_from_slice(&u16::try_from(v.len()).unwrap().to_be_bytes());
            body.extend_from_slice(v);
        }
        let mut fixed = [0u8; 16];
        fixed[..12].copy_from_slice(&V2_SIGNATURE);
        fixed[12] = 0x21;
        fixed[13] = 0x11;
        fixed[14..].copy_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        let got = parse_v2(&fixed, &body).unwrap().unwrap();
        prop_assert_eq!(got, std::net::SocketAddr::from((a, port)));
    }

    #[test]
    fn identity_from_arbitrary_der_never_panics(der in prop::collection::vec(any::<u8>(), 0..600)) {
        let chain = [CertificateDer::from(der)];
        let _ = IdentityHeaders::build(&chain, all_headers());
    }

    #[test]
    fn header_sanitising_leaves_no_reserved_name(
        names in prop::collection::vec("[a-zA-Z_-]{1,30}", 0..20),
        prefixes in prop::collection::vec(prop::sample::select(vec![
            "x-client-cert", "X_Client_Cert", "client-cert", "CLIENT_CERT-chain", "x-forwarded-for",
            "X_FORWARDED_PROTO", "x-forwarded-client-cert", "forwarded", "x_real_ip",
            "x-signature-verified", "x_request_id", "x-request-id",
        ]), 0..6),
    ) {
        let mut h = HeaderMap::new();
        for n in names.iter().map(String::as_str).chain(prefixes.iter().copied()) {
            if let Ok(name) = HeaderName::from_bytes(n.as_bytes()) {
                h.append(name, HeaderValue::from_static("v"));
            }
        }
        hookgate::proxy::strip_reserved(&mut h);
        for name in h.keys() {
            let norm = name.as_str().replace('_', "-");
            prop_assert!(!norm.starts_with("x-client-cert"), "{}", name);
            prop_assert!(!norm.starts_with("client-cert"), "{}", name);
            for exact in ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-client-cert",
                          "forwarded", "x-real-ip", "x-signature-verified"] {
                prop_assert_ne!(norm.as_str(), exact);
            }
            if norm == "x-request-id" {
                prop_assert_eq!(name.as_str(), "x-request-id", "only the canonical spelling is kept");
            }
        }
    }
}

/// Mutations of a real certificate reach deeper into x509-parser than random bytes do.
#[test]
fn identity_from_mutated_certificates_never_panics() {
    let pki = Pki::new();
    let mut spec = LeafSpec::client("fuzz,\"me\";=\\");
    spec.uris = vec!["spiffe://x/\u{0}y".into()];
    spec.dns = vec!["a.example".into()];
    let leaf = pki.client(&spec);
    let der = leaf.der.to_vec();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut parsed = 0;
    for _ in 0..4000 {
        let mut m = der.clone();
        for _ in 0..=(next() % 4) {
            let i = usize::try_from(next() % m.len() as u64).unwrap();
            m[i] = u8::try_from(next() & 0xFF).unwrap();
        }
        let chain = [CertificateDer::from(m)];
        if let Ok(id) = IdentityHeaders::build(&chain, all_headers()) {
            parsed += 1;
            // Whatever the certificate holds, every header value is visible ASCII (control
            // bytes and non-ASCII are percent-encoded), so nothing can split a header.
            for (name, v) in &id.headers {
                assert!(v.to_str().is_ok(), "{name}: {v:?}");
                assert!(
                    !v.as_bytes().iter().any(|b| *b < 0x20 && *b != b'\t'),
                    "{name}"
                );
            }
        }
    }
    assert!(
        parsed > 0,
        "some mutations still parse, so the header path was exercised"
    );
}
