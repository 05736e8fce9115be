//! Client policy in the handshake: the allow-list, CRL revocation and chain depth. A refused
//! client gets the matching TLS alert and nothing reaches the upstream.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod support;

use std::time::Duration;

use hookgate::pki::{Leaf, LeafSpec};
use hookgate::reload::Outcome;
use http::StatusCode;
use rustls::AlertDescription;
use support::*;
use time::OffsetDateTime;

fn leaf_named(pki: &Pki, cn: &str) -> Leaf {
    let mut spec = LeafSpec::client(cn);
    spec.org = Some("Wise Test".into());
    spec.uris = vec![format!("spiffe://wise.test/{cn}")];
    spec.dns = vec![format!("{cn}.hooks.wise.test")];
    pki.client(&spec)
}

async fn outcome(env: &Env, leaf: &Leaf) -> Result<StatusCode, Option<AlertDescription>> {
    env.try_get(env.pki.client_config(leaf, true, &[])).await
}

fn spki_sha256(leaf: &Leaf) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.der.as_ref()).unwrap();
    sha256_hex(cert.public_key().raw)
}

#[tokio::test]
async fn allow_list_by_cn_then_tightened_by_reload() {
    let env = Env::start_with(|_, s| {
        s.extra_yaml = "clients:\n  allow:\n    - subject_cn: wise-client\n".into();
    })
    .await;
    let allowed = leaf_named(&env.pki, "wise-client");
    let other = leaf_named(&env.pki, "someone-else");
    assert_eq!(outcome(&env, &allowed).await, Ok(StatusCode::OK));
    assert_eq!(
        outcome(&env, &other).await,
        Err(Some(AlertDescription::AccessDenied))
    );
    assert_eq!(
        env.upstream.seen().len(),
        1,
        "the refused client sent nothing"
    );

    // The same certificate, refused once the list no longer names it.
    env.edit_config(|y| y.replace("subject_cn: wise-client", "subject_cn: someone-new"));
    assert_eq!(env.server.reload().await, Outcome::Reloaded);
    assert_eq!(
        outcome(&env, &allowed).await,
        Err(Some(AlertDescription::AccessDenied))
    );
    assert_eq!(env.upstream.seen().len(), 1);
    env.wait_metrics(&[
        ("hookgate_tls_handshakes_total{result=\"not_allowed\"}", 2.0),
        ("hookgate_config_reloads_total{result=\"success\"}", 1.0),
    ])
    .await;
}

#[tokio::test]
async fn allow_list_by_san_uri_and_issuer_cn() {
    let env = Env::start_with(|_, s| {
        s.extra_yaml = "clients:\n  allow:\n\
                        \x20   - san_uri: spiffe://wise.test/sender-a\n\
                        \x20   - {issuer_cn: Test Issuing CA, subject_o: Wise Test, subject_cn: sender-b}\n\
                        \x20   - {issuer_cn: Some Other CA, subject_cn: sender-c}\n"
            .into();
    })
    .await;
    assert_eq!(
        outcome(&env, &leaf_named(&env.pki, "sender-a")).await,
        Ok(StatusCode::OK),
        "matched by URI SAN"
    );
    assert_eq!(
        outcome(&env, &leaf_named(&env.pki, "sender-b")).await,
        Ok(StatusCode::OK),
        "matched by issuer CN + O + CN"
    );
    assert_eq!(
        outcome(&env, &leaf_named(&env.pki, "sender-c")).await,
        Err(Some(AlertDescription::AccessDenied)),
        "every key of an entry must match: the issuer CN differs"
    );
    assert_eq!(env.upstream.seen().len(), 2);
}

#[tokio::test]
async fn pins_on_spki_and_certificate() {
    let mut pinned = None;
    let mut cert_pinned = None;
    let env = Env::start_with(|pki, s| {
        let a = leaf_named(pki, "pinned-key");
        let b = leaf_named(pki, "pinned-cert");
        // Upper case with colons for the certificate pin: SPEC allows both.
        let cert_pin = sha256_hex(b.der.as_ref())
            .to_uppercase()
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(":");
        s.extra_yaml = format!(
            "clients:\n  allow:\n    - spki_sha256: \"{}\"\n    - cert_sha256: \"{cert_pin}\"\n",
            spki_sha256(&a)
        );
        pinned = Some(a);
        cert_pinned = Some(b);
    })
    .await;
    let (pinned, cert_pinned) = (pinned.unwrap(), cert_pinned.unwrap());
    assert_eq!(outcome(&env, &pinned).await, Ok(StatusCode::OK));
    assert_eq!(outcome(&env, &cert_pinned).await, Ok(StatusCode::OK));
    // Same name, same CA, another key: the pins do not match.
    let lookalike = leaf_named(&env.pki, "pinned-key");
    assert_eq!(
        outcome(&env, &lookalike).await,
        Err(Some(AlertDescription::AccessDenied))
    );
    assert_eq!(env.upstream.seen().len(), 2);
}

#[tokio::test]
async fn wildcard_san_dns_covers_one_label() {
    let env = Env::start_with(|_, s| {
        s.extra_yaml = "clients: {allow: [{san_dns: \"*.HOOKS.wise.test\"}]}\n".into();
    })
    .await;
    assert_eq!(
        outcome(&env, &leaf_named(&env.pki, "a")).await,
        Ok(StatusCode::OK)
    );
    let mut spec = LeafSpec::client("deep");
    spec.dns = vec!["x.y.hooks.wise.test".into()];
    assert_eq!(
        outcome(&env, &env.pki.client(&spec)).await,
        Err(Some(AlertDescription::AccessDenied))
    );
}

/// Writes CRLs into the env's directory and points `tls.crl` at them with `settings` added
/// to the `tls` section.
fn crl_setup(s: &mut Setup, crls: &[(&str, String)], settings: &str) {
    let names: Vec<String> = crls.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    s.tls_yaml = format!("  crl: [{}]\n{settings}", names.join(", "));
    s.extra_files = crls
        .iter()
        .map(|(n, t)| ((*n).to_string(), t.clone()))
        .collect();
}

fn next_week() -> OffsetDateTime {
    OffsetDateTime::now_utc() + Duration::from_secs(7 * 86_400)
}

#[tokio::test]
async fn revoked_leaf_is_refused_and_its_sibling_passes_in_both_scopes() {
    for scope in ["leaf", "chain"] {
        let mut revoked = None;
        let env = Env::start_with(|pki, s| {
            let leaf = leaf_named(pki, "revoked");
            let by_intermediate = pki.intermediate.crl(&[leaf.serial()], next_week()).unwrap();
            // Chain scope checks the intermediate too, so the root's (empty) CRL is needed.
            let by_root = pki.root.crl(&[], next_week()).unwrap();
            crl_setup(
                s,
                &[("int.crl", by_intermediate), ("root.crl", by_root)],
                &format!("  crl_scope: {scope}\n"),
            );
            s.client_ca_pems = vec![pki.root.pem() + &pki.intermediate.pem()];
            revoked = Some(leaf);
        })
        .await;
        assert_eq!(
            outcome(&env, &revoked.unwrap()).await,
            Err(Some(AlertDescription::CertificateRevoked)),
            "scope {scope}"
        );
        assert_eq!(
            outcome(&env, &leaf_named(&env.pki, "sibling")).await,
            Ok(StatusCode::OK),
            "scope {scope}"
        );
        assert_eq!(env.upstream.seen().len(), 1, "scope {scope}");
        env.wait_metrics(&[("hookgate_tls_handshakes_total{result=\"revoked\"}", 1.0)])
            .await;
    }
}

#[tokio::test]
async fn revoked_intermediate_is_refused_with_chain_scope_only() {
    for (scope, want) in [
        ("chain", Err(Some(AlertDescription::CertificateRevoked))),
        ("leaf", Ok(StatusCode::OK)),
    ] {
        let env = Env::start_with(|pki, s| {
            let by_root = pki
                .root
                .crl(&[pki.intermediate.serial()], next_week())
                .unwrap();
            let by_intermediate = pki.intermediate.crl(&[], next_week()).unwrap();
            crl_setup(
                s,
                &[("root.crl", by_root), ("int.crl", by_intermediate)],
                &format!("  crl_scope: {scope}\n"),
            );
            s.client_ca_pems = vec![pki.root.pem() + &pki.intermediate.pem()];
        })
        .await;
        assert_eq!(
            outcome(&env, &leaf_named(&env.pki, "under-revoked-ca")).await,
            want,
            "scope {scope}"
        );
    }
}

#[tokio::test]
async fn a_ca_without_a_crl_refuses_unless_allowed() {
    // Only the intermediate's CRL: with chain scope the intermediate itself cannot be checked.
    for (missing, ok) in [("refuse", false), ("allow", true)] {
        let env = Env::start_with(|pki, s| {
            let crl = pki.intermediate.crl(&[], next_week()).unwrap();
            crl_setup(
                s,
                &[("int.crl", crl)],
                &format!("  crl_scope: chain\n  crl_missing: {missing}\n"),
            );
            s.client_ca_pems = vec![pki.root.pem() + &pki.intermediate.pem()];
        })
        .await;
        let got = outcome(&env, &leaf_named(&env.pki, "c")).await;
        assert_eq!(got.is_ok(), ok, "crl_missing: {missing}: {got:?}");
        if !ok {
            env.wait_metrics(&[("hookgate_tls_handshakes_total{result=\"revoked\"}", 1.0)])
                .await;
        }
    }
}

#[tokio::test]
async fn a_crl_past_next_update_refuses_unless_allowed() {
    for (expired, ok) in [("refuse", false), ("allow", true)] {
        let env = Env::start_with(|pki, s| {
            let stale = pki
                .intermediate
                .crl(&[], OffsetDateTime::now_utc() - Duration::from_secs(60))
                .unwrap();
            crl_setup(
                s,
                &[("int.crl", stale)],
                &format!("  crl_scope: leaf\n  crl_expired: {expired}\n"),
            );
        })
        .await;
        let got = outcome(&env, &leaf_named(&env.pki, "c")).await;
        assert_eq!(got.is_ok(), ok, "crl_expired: {expired}: {got:?}");
        if !ok {
            env.wait_metrics(&[("hookgate_tls_handshakes_total{result=\"revoked\"}", 1.0)])
                .await;
        }
    }
}

#[tokio::test]
async fn chain_depth_is_limited() {
    for (depth, ok) in [(0, false), (1, true)] {
        let env = Env::start_with(|_, s| {
            s.tls_yaml = format!("  max_chain_depth: {depth}\n");
        })
        .await;
        let got = outcome(&env, &leaf_named(&env.pki, "deep")).await;
        assert_eq!(got.is_ok(), ok, "max_chain_depth {depth}: {got:?}");
    }
}
