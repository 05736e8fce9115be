//! Wise payload signatures: the published vectors, the proxy in enforce and report modes, and
//! `hookgate send-test` acting as Wise against a running proxy.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod support;

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use hookgate::config::{SignatureConfig, SignatureKeySource, SignatureMode};
use hookgate::metrics::SignatureResult;
use hookgate::pki::{Ca, LeafSpec};
use hookgate::signature::SignatureCheck;
use http::{Request, StatusCode};
use http_body_util::Full;
use support::*;
use time::OffsetDateTime;

const BIN: &str = env!("CARGO_BIN_EXE_hookgate");

/// One vector from `../shared/wise/signature-test-vectors.md`.
struct Vector {
    name: String,
    body: String,
    header: String,
    signature: String,
}

fn vectors() -> Vec<Vector> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/wise/signature-test-vectors.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} (the shared folder beside the repository): {e}",
            path.display()
        )
    });
    let mut out = Vec::new();
    let mut name = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(n) = line.strip_prefix("## ") {
            name = n.split(':').next().unwrap().to_string();
        } else if line == "Body:" {
            let body = lines.next().unwrap().to_string();
            lines.next(); // blank
            let header = lines.next().unwrap().trim_end_matches(':').to_string();
            let signature = lines.next().unwrap().to_string();
            out.push(Vector {
                name: name.clone(),
                body,
                header,
                signature,
            });
        }
    }
    assert_eq!(out.len(), 3, "V1, V2, V3");
    out
}

fn check(keys: Vec<SignatureKeySource>) -> SignatureCheck {
    SignatureCheck::load(
        &SignatureConfig {
            mode: SignatureMode::Enforce,
            keys,
            header: http::HeaderName::from_static("x-signature-sha256"),
        },
        Path::new("/test.yaml"),
    )
    .unwrap()
}

#[test]
fn wise_vectors_verify_with_the_sandbox_key_only() {
    let sandbox = check(vec![SignatureKeySource::WiseSandbox]);
    let production = check(vec![SignatureKeySource::WiseProduction]);
    let vs = vectors();
    for v in vs.iter().filter(|v| v.header == "X-Signature-SHA256") {
        let sig = Some(v.signature.as_bytes());
        assert_eq!(
            sandbox.verify(v.body.as_bytes(), sig),
            SignatureResult::Valid,
            "{}",
            v.name
        );
        assert_eq!(
            production.verify(v.body.as_bytes(), sig),
            SignatureResult::Invalid,
            "{} must not verify with the production key",
            v.name
        );
    }
    // V2's negative cases: a changed subscription_id, and a changed signature character.
    let v2 = vs.iter().find(|v| v.name == "V2").unwrap();
    let tampered_body = v2.body.replace(
        "00000000-0000-0000-0000-000000000000",
        "00000000-0000-0008-8000-000000000000",
    );
    assert_ne!(tampered_body, v2.body);
    assert_eq!(
        sandbox.verify(tampered_body.as_bytes(), Some(v2.signature.as_bytes())),
        SignatureResult::Invalid
    );
    let tampered_sig = v2.signature.replace("ZNtydeT0x+", "ZNtydeT1x+");
    assert_ne!(tampered_sig, v2.signature);
    assert_eq!(
        sandbox.verify(v2.body.as_bytes(), Some(tampered_sig.as_bytes())),
        SignatureResult::Invalid
    );
    // V3 is a legacy SHA-1 `X-Signature`: not a valid X-Signature-SHA256.
    let v3 = vs.iter().find(|v| v.name == "V3").unwrap();
    assert_eq!(v3.header, "X-Signature");
    assert_eq!(
        sandbox.verify(v3.body.as_bytes(), Some(v3.signature.as_bytes())),
        SignatureResult::Invalid
    );
}

fn post(body: &str, signature: Option<&str>) -> Request<Full<Bytes>> {
    let mut r = Request::post("/wise")
        .header("host", "localhost")
        .header("content-type", "application/json")
        .header("x-signature-verified", "valid"); // a spoof: must never reach the app as sent
    if let Some(s) = signature {
        r = r.header("x-signature-sha256", s);
    }
    r.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

#[tokio::test]
async fn enforce_mode_forwards_only_valid_signatures() {
    let env = Env::start_with(|_, s| {
        s.extra_yaml = "signature: {mode: enforce, keys: [wise-production, wise-sandbox]}\n".into();
    })
    .await;
    let v1 = vectors().into_iter().find(|v| v.name == "V1").unwrap();
    let cfg = env.pki.client_config(&env.client_leaf(), true, &[]);
    let resp = env
        .send(cfg.clone(), post(&v1.body, Some(&v1.signature)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let seen = env.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.as_ref(), v1.body.as_bytes(), "the exact bytes");
    assert!(
        !seen[0].headers.contains_key("x-signature-verified"),
        "enforce adds no verdict; the spoof is gone"
    );
    assert_eq!(seen[0].headers["x-signature-sha256"], v1.signature.as_str());

    let tampered = v1.body.replace("49983981", "49983982");
    let resp = env
        .send(cfg.clone(), post(&tampered, Some(&v1.signature)))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(resp.body()).contains("\"error\":\"signature_invalid\""));
    let resp = env.send(cfg.clone(), post(&v1.body, None)).await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(String::from_utf8_lossy(resp.body()).contains("\"error\":\"signature_missing\""));
    assert_eq!(
        env.upstream.seen().len(),
        1,
        "nothing unsigned or tampered was forwarded"
    );
    env.wait_metrics(&[
        ("hookgate_signature_checks_total{result=\"valid\"}", 1.0),
        ("hookgate_signature_checks_total{result=\"invalid\"}", 1.0),
        ("hookgate_signature_checks_total{result=\"missing\"}", 1.0),
        (
            "hookgate_rejected_requests_total{reason=\"signature_invalid\"}",
            1.0,
        ),
        (
            "hookgate_rejected_requests_total{reason=\"signature_missing\"}",
            1.0,
        ),
    ])
    .await;
}

#[tokio::test]
async fn report_mode_tells_the_app_and_replaces_a_spoofed_verdict() {
    let env = Env::start_with(|_, s| {
        s.extra_yaml = "signature: {mode: report, keys: [wise-sandbox]}\n".into();
    })
    .await;
    let v2 = vectors().into_iter().find(|v| v.name == "V2").unwrap();
    let cfg = env.pki.client_config(&env.client_leaf(), true, &[]);
    for (body, sig, want) in [
        (v2.body.clone(), Some(v2.signature.as_str()), "valid"),
        (
            v2.body.replace("processing", "cancelled"),
            Some(v2.signature.as_str()),
            "invalid",
        ),
        (v2.body.clone(), None, "missing"),
    ] {
        let resp = env.send(cfg.clone(), post(&body, sig)).await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "report mode forwards everything"
        );
        let seen = env.upstream.seen();
        let last = seen.last().unwrap();
        let verdicts: Vec<_> = last
            .headers
            .get_all("x-signature-verified")
            .iter()
            .collect();
        assert_eq!(verdicts, vec![want], "one verdict, hookgate's own");
        assert_eq!(last.body.as_ref(), body.as_bytes());
    }
}

#[tokio::test]
async fn a_signature_key_file_is_loaded_and_reloaded() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let pub_pem = key.public_key_pem();
    let env = Env::start_with(|_, s| {
        s.extra_files = vec![("signer.pem".into(), pub_pem.clone())];
        s.extra_yaml = "signature: {mode: enforce, keys: [signer.pem]}\n".into();
    })
    .await;
    let body = "{\"a\":1}";
    let sig = hookgate::signature::sign(key.serialize_pem().as_bytes(), body.as_bytes()).unwrap();
    let cfg = env.pki.client_config(&env.client_leaf(), true, &[]);
    assert_eq!(
        env.send(cfg.clone(), post(body, Some(&sig)))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // The key is rotated: the old signature no longer verifies.
    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    env.dir.write("signer.pem", &other.public_key_pem());
    assert_eq!(
        env.server.reload().await,
        hookgate::reload::Outcome::Reloaded
    );
    assert_eq!(
        env.send(cfg, post(body, Some(&sig)))
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    // A broken key file fails the reload and keeps the last good key.
    env.dir.write("signer.pem", "not a key");
    assert!(
        matches!(env.server.reload().await, hookgate::reload::Outcome::Failed(m) if m.contains("signature.keys[0]"))
    );
}

/// Runs `hookgate send-test` against the env; returns (exit code, stdout+stderr).
async fn send_test(env: &Env, url_host: &str, args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(BIN);
    cmd.arg("send-test")
        .arg("--url")
        .arg(format!("https://{url_host}:{}/wise", env.addr.port()))
        .arg("--ca")
        .arg(env.dir.path().join("server-ca.pem"))
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn send_test_succeeds_and_explains_each_failure() {
    let signer = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let pub_pem = signer.public_key_pem();
    let env = Env::start_with(|pki, s| {
        s.extra_files = vec![
            ("signer.pem".into(), pub_pem.clone()),
            ("server-ca.pem".into(), pki.server_ca.pem()),
        ];
        s.extra_yaml = "signature: {mode: enforce, keys: [signer.pem]}\n".into();
    })
    .await;
    let write_leaf = |name: &str, leaf: &hookgate::pki::Leaf, chain: &str| {
        let cert = env
            .dir
            .write(&format!("{name}.crt"), &format!("{}{chain}", leaf.pem));
        let key = env.dir.write(&format!("{name}.key"), &leaf.key_pem);
        (cert.display().to_string(), key.display().to_string())
    };
    let sign_key = env
        .dir
        .write("signer.key", &signer.serialize_pem())
        .display()
        .to_string();
    let (cert, key) = write_leaf("good", &env.client_leaf(), &env.pki.intermediate.pem());

    // Success, signed, as Wise would send it.
    let (code, out) = send_test(
        &env,
        "localhost",
        &[
            "--cert",
            &cert,
            "--key",
            &key,
            "--sign-key",
            &sign_key,
            "--event",
            "balances#credit",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("-> 200 OK in "), "{out}");
    let seen = env.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["x-test-notification"], "true");
    assert_eq!(seen[0].headers["x-delivery-id"].len(), 36);
    let event: serde_json::Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(event["event_type"], "balances#credit");
    assert_eq!(event["schema_version"], "2.0.0");

    // Unsigned against enforce mode: a 403 and the hint.
    let (code, out) = send_test(&env, "localhost", &["--cert", &cert, "--key", &key]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("403") && out.contains("pass --sign-key"),
        "{out}"
    );

    // Unknown CA.
    let other = Ca::root("Some Other CA", "Mallory").unwrap();
    let (c, k) = write_leaf("foreign", &other.issue(&LeafSpec::client("m")).unwrap(), "");
    let (code, out) = send_test(
        &env,
        "localhost",
        &["--cert", &c, "--key", &k, "--sign-key", &sign_key],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        out.contains("the server did not accept our certificate: unknown CA — does tls.client_ca hold the CA that issued it?"),
        "{out}"
    );

    // Expired.
    let now = OffsetDateTime::now_utc();
    let mut spec = LeafSpec::client("old");
    spec.not_before = now - std::time::Duration::from_secs(10 * 86_400);
    spec.not_after = now - std::time::Duration::from_secs(86_400);
    let (c, k) = write_leaf(
        "expired",
        &env.pki.client(&spec),
        &env.pki.intermediate.pem(),
    );
    let (code, out) = send_test(&env, "localhost", &["--cert", &c, "--key", &k]).await;
    assert_eq!(code, 1);
    assert!(out.contains("expired or not yet valid"), "{out}");

    // No client certificate.
    let (code, out) = send_test(&env, "localhost", &["--sign-key", &sign_key]).await;
    assert_eq!(code, 1);
    assert!(out.contains("requires a client certificate"), "{out}");

    assert_eq!(
        env.upstream.seen().len(),
        1,
        "no failed attempt reached the app"
    );
}

#[tokio::test]
async fn send_test_explains_a_wrong_host() {
    // The server's certificate names another host than the URL does.
    let env = Env::start_with(|pki, s| {
        let mut spec = LeafSpec::localhost_server();
        spec.dns = vec!["webhooks.example.com".into()];
        spec.ips.clear();
        let other = pki.server_ca.issue(&spec).unwrap();
        s.server_cert_pem = Some(other.pem);
        s.server_key_pem = Some(other.key_pem);
        s.extra_files = vec![("server-ca.pem".into(), pki.server_ca.pem())];
    })
    .await;
    let leaf = env.client_leaf();
    let cert = env.dir.write(
        "c.crt",
        &format!("{}{}", leaf.pem, env.pki.intermediate.pem()),
    );
    let key = env.dir.write("c.key", &leaf.key_pem);
    let (code, out) = send_test(
        &env,
        "localhost",
        &[
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
        ],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        out.contains("wrong host: the server's certificate is not valid for \"localhost\""),
        "{out}"
    );
    assert!(env.upstream.seen().is_empty());
}
