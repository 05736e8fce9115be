//! The built binary, driven the way an operator drives it: `check`, `run` with a real external
//! client (curl), signals, exit codes, and `demo --self-test`.

#![allow(clippy::unwrap_used)] // test code: a panic is a failed test

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hookgate::demo::EchoUpstream;
use hookgate::identity::pem;
use hookgate::pki::{LeafSpec, RcgenKeyPair};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_hookgate");

fn hookgate(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env_remove("HOOKGATE_CONFIG")
        .output()
        .expect("run hookgate")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A config (and its files) with a loopback upstream that need not be running.
fn config_dir(edit: impl FnOnce(&mut Setup)) -> (TempDir, Pki, std::path::PathBuf) {
    let pki = Pki::new();
    let mut setup = Setup::new(&pki, "http://127.0.0.1:9".into());
    edit(&mut setup);
    let dir = TempDir::new("cli");
    let path = write_config(&dir, &pki, &setup);
    (dir, pki, path)
}

#[test]
fn check_prints_crls_and_the_allow_list() {
    let pki = Pki::new();
    let mut setup = Setup::new(&pki, "http://127.0.0.1:8080".into());
    let next = time::OffsetDateTime::now_utc() + Duration::from_secs(86_400);
    let leaf = pki.client(&LeafSpec::client("gone"));
    setup.extra_files = vec![(
        "int.crl".into(),
        pki.intermediate.crl(&[leaf.serial()], next).unwrap(),
    )];
    setup.tls_yaml = "  crl: [int.crl]\n  crl_scope: leaf\n".into();
    setup.extra_yaml = format!(
        "clients: {{allow: [{{subject_cn: wise-client, spki_sha256: \"{}\"}}]}}\n",
        "ab".repeat(32)
    );
    let dir = TempDir::new("check-crl");
    let path = write_config(&dir, &pki, &setup);
    let out = hookgate(&["check", "--config", path.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(
        t.contains("CN=Test Issuing CA,O=Wise Test: 1 revoked; next update 20"),
        "{t}"
    );
    assert!(t.contains("scope Leaf"), "{t}");
    assert!(
        t.contains("issuer not in tls.client_ca: applies only to an intermediate"),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "subject_cn=\"wise-client\", spki_sha256={}",
            "ab".repeat(32)
        )),
        "{t}"
    );

    // A CRL that does not parse is a config error naming the key.
    dir.write(
        "int.crl",
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    );
    let out = hookgate(&["check", "--config", path.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(64), "{t}");
    assert!(t.contains("tls.crl[0]:"), "{t}");
}

#[test]
fn check_prints_what_was_loaded() {
    let (_dir, _pki, path) = config_dir(|_| {});
    let out = hookgate(&["check", "--config", path.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("subject: CN=localhost"), "{t}");
    assert!(
        t.contains("localhost") && t.contains("127.0.0.1"),
        "SANs: {t}"
    );
    assert!(t.contains("expires: 20"), "{t}");
    assert!(
        t.contains("CN=Test Root CA,O=Wise Test [trust anchor]"),
        "{t}"
    );
}

#[test]
fn config_errors_exit_64_naming_key_and_file() {
    // Unknown key.
    let (_d, _p, path) = config_dir(|s| s.extra_yaml = "limits: {max_bodyy: 1MiB}\n".into());
    let out = hookgate(&["check", "--config", path.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(64), "{t}");
    assert!(
        t.contains(path.to_str().unwrap()) && t.contains("limits.max_bodyy: unknown key"),
        "{t}"
    );

    // A missing file is named, with the key that names it.
    let (dir, _p, path) = config_dir(|_| {});
    std::fs::remove_file(dir.path().join("server.crt")).unwrap();
    let out = hookgate(&["check", "--config", path.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(64), "{t}");
    assert!(t.contains("tls.cert") && t.contains("server.crt"), "{t}");

    // A key that does not belong to the certificate.
    let other = hookgate::pki::Ca::root("x", "y")
        .unwrap()
        .issue(&LeafSpec::localhost_server())
        .unwrap();
    let (_d, _p, path) = config_dir(|s| s.server_key_pem = Some(other.key_pem.clone()));
    let out = hookgate(&["check", "--config", path.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(64), "{t}");
    assert!(t.contains("tls.key") && t.contains("does not match"), "{t}");

    // A non-loopback upstream.
    let (_d, _p, path) = config_dir(|s| s.upstream_url = "http://192.0.2.10:8080".into());
    let out = hookgate(&["check", "--config", path.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(64), "{t}");
    assert!(t.contains("upstream.url") && t.contains("loopback"), "{t}");

    // A CA bundle without a CA certificate (a leaf was put there by mistake).
    let (_d, pki, path) = config_dir(|_| {});
    std::fs::write(path.parent().unwrap().join("ca0.pem"), &pki.server.pem).unwrap();
    let out = hookgate(&["check", "--config", path.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(64), "{t}");
    assert!(
        t.contains("tls.client_ca[0]") && t.contains("not a CA certificate"),
        "{t}"
    );

    // Bad arguments are 64 too.
    assert_eq!(hookgate(&["run", "--no-such-flag"]).status.code(), Some(64));
}

#[test]
fn run_refuses_bad_config_before_binding_any_port() {
    // Hold the listen port: if hookgate tried to bind before validating, it would fail with
    // "address in use" (exit 1) instead of reporting the config error (exit 64).
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let (_d, _p, path) = config_dir(|s| s.extra_yaml = "bogus_key: 1\n".into());
    set_port(&path, port, &[]);
    let out = hookgate(&["run", "--config", path.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(64), "{t}");
    assert!(t.contains("bogus_key: unknown key"), "{t}");
    // With the config fixed, the same held port is a runtime failure (exit 1), which shows the
    // 64 above came before any bind.
    let yaml = std::fs::read_to_string(&path)
        .unwrap()
        .replace("bogus_key: 1\n", "");
    std::fs::write(&path, yaml).unwrap();
    let out = hookgate(&["run", "--config", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

#[test]
fn server_keys_in_every_supported_format() {
    let cases: Vec<(&str, &'static rcgen::SignatureAlgorithm, &str)> = vec![
        ("rsa-pkcs8", &rcgen::PKCS_RSA_SHA256, "PRIVATE KEY"),
        ("rsa-pkcs1", &rcgen::PKCS_RSA_SHA256, "RSA PRIVATE KEY"),
        (
            "p256-sec1",
            &rcgen::PKCS_ECDSA_P256_SHA256,
            "EC PRIVATE KEY",
        ),
        ("p384-pkcs8", &rcgen::PKCS_ECDSA_P384_SHA384, "PRIVATE KEY"),
        (
            "p384-sec1",
            &rcgen::PKCS_ECDSA_P384_SHA384,
            "EC PRIVATE KEY",
        ),
        ("ed25519", &rcgen::PKCS_ED25519, "PRIVATE KEY"),
    ];
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (name, alg, label) in cases {
        let key = if name.starts_with("rsa") {
            RcgenKeyPair::generate_rsa_for(alg, rcgen::RsaKeySize::_2048).unwrap()
        } else {
            RcgenKeyPair::generate_for(alg).unwrap()
        };
        let pkcs8 = key.serialize_der();
        let key_pem = if label == "PRIVATE KEY" {
            pem(label, &pkcs8)
        } else {
            pem(label, &pkcs8_inner(&pkcs8))
        };
        rt.block_on(async {
            let env = Env::start_with(|pki, s| {
                let leaf = pki
                    .server_ca
                    .issue_with_key(&LeafSpec::localhost_server(), &key);
                s.server_cert_pem = Some(leaf.unwrap().pem);
                s.server_key_pem = Some(key_pem);
            })
            .await;
            let client = env.client_leaf();
            let resp = env
                .send(env.pki.client_config(&client, true, &[]), get("/"))
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(resp.status(), 200, "{name}");
            assert_eq!(env.upstream.seen().len(), 1, "{name}");
        });
    }
}

/// Finds a port that is free right now (the proxy binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "hookgate did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends `sig` (`-TERM`, `-HUP`, ...) to the child.
fn signal(child: &std::process::Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

/// Waits up to `within` for the child to exit; its exit code.
fn exit_code(child: &mut std::process::Child, within: Duration) -> Option<i32> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        assert!(
            Instant::now() < deadline,
            "hookgate did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Rewrites the config at `path`: `listen` on `port` (the first `127.0.0.1:0`), then `edits`.
fn set_port(path: &std::path::Path, port: u16, edits: &[(&str, &str)]) {
    let mut yaml = std::fs::read_to_string(path).unwrap().replacen(
        "127.0.0.1:0",
        &format!("127.0.0.1:{port}"),
        1,
    );
    for (from, to) in edits {
        assert!(yaml.contains(from), "{from} not in {yaml}");
        yaml = yaml.replacen(from, to, 1);
    }
    std::fs::write(path, yaml).unwrap();
}

/// `hookgate run --config path`, its stderr piped or dropped; returns once `port` accepts.
fn run_binary(path: &std::path::Path, port: u16, stderr: Stdio) -> std::process::Child {
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    wait_for_port(port);
    child
}

#[test]
fn curl_through_the_running_binary_then_sigterm() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = EchoUpstream::default();
    let upstream_addr = rt.block_on(upstream.clone().spawn()).unwrap();
    let pki = Pki::new();
    let setup = Setup::new(&pki, format!("http://{upstream_addr}"));
    let dir = TempDir::new("curl");
    let path = write_config(&dir, &pki, &setup);
    let port = free_port();
    // Access lines are wanted as JSON.
    set_port(
        &path,
        port,
        &[(
            "log: {format: text, level: warn}",
            "log: {format: json, level: info}",
        )],
    );

    let mut spec = LeafSpec::client("curl-client");
    spec.org = Some("Wise Test".into());
    let leaf = pki.client(&spec);
    let cert = dir.write(
        "client.crt",
        &format!("{}{}", leaf.pem, pki.intermediate.pem()),
    );
    let key = dir.write("client.key", &leaf.key_pem);
    let server_ca = dir.write("server-ca.pem", &pki.server_ca.pem());

    // Through HOOKGATE_CONFIG, as the container image runs it.
    let mut child = Command::new(BIN)
        .args(["run"])
        .env("HOOKGATE_CONFIG", &path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_port(port);
    let url = format!("https://localhost:{port}/webhook");
    let curl = |with_cert: bool| {
        let mut c = Command::new("curl");
        c.args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&server_ca);
        c.args(["--resolve", &format!("localhost:{port}:127.0.0.1")]);
        if with_cert {
            c.arg("--cert").arg(&cert).arg("--key").arg(&key);
        }
        c.args([
            "-H",
            "Content-Type: application/json",
            "-H",
            "X-Client-Cert-Subject: CN=forged",
            "-H",
            "X-Delivery-Id: 0f8fad5b-d9cb-469f-a165-70867728950e",
        ]);
        c.args([
            "-d",
            "{\"event_type\":\"transfers#state-change\"}",
            "-w",
            "\n%{http_code}",
            &url,
        ]);
        c.output().expect("curl must be installed (see .ci/run)")
    };
    let ok = curl(true);
    let out = String::from_utf8_lossy(&ok.stdout).to_string();
    assert!(ok.status.success(), "curl failed: {}", text(&ok));
    assert!(out.ends_with("\n200"), "{out}");
    assert!(
        out.contains("CN=curl-client,O=Wise Test"),
        "the echo shows the verified subject: {out}"
    );

    let refused = curl(false);
    assert!(
        !refused.status.success(),
        "curl without a cert must fail: {}",
        text(&refused)
    );
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("200"));
    let seen = upstream.seen();
    assert_eq!(seen.len(), 1, "only the request with a certificate arrived");
    assert_eq!(
        seen[0]
            .headers
            .get_all("x-client-cert-subject")
            .iter()
            .count(),
        1
    );
    assert_eq!(
        seen[0].headers["x-client-cert-subject"],
        "CN=curl-client,O=Wise Test"
    );

    // SIGTERM: drain (0s here), stop, exit 0.
    signal(&child, "-TERM");
    assert_eq!(exit_code(&mut child, Duration::from_secs(10)), Some(0));

    // The access line: one JSON object per line, with every field an operator greps for.
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let access: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {l}"))
        })
        .filter(|v| v["target"] == "hookgate::access")
        .collect();
    assert_eq!(access.len(), 1, "one access line per request: {stderr}");
    let f = &access[0]["fields"];
    assert!(access[0]["timestamp"].is_string(), "{f}");
    assert!(f["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{f}");
    assert_eq!(f["client_cn"], "curl-client");
    assert_eq!(
        f["client_cert"].as_str().unwrap(),
        &sha256_hex(leaf.der.as_ref())[..16]
    );
    assert_eq!(f["method"], "POST");
    assert_eq!(f["path"], "/webhook");
    assert_eq!(f["status"], 200);
    assert_eq!(f["bytes_in"], 39, "the JSON body curl sent");
    assert!(f["bytes_out"].as_u64().unwrap() > 0, "{f}");
    assert!(f["upstream_ms"].as_f64().unwrap() > 0.0, "{f}");
    assert!(f["total_ms"].as_f64().unwrap() >= f["upstream_ms"].as_f64().unwrap());
    assert_eq!(
        f["request_id"].as_str().unwrap().len(),
        36,
        "a generated UUID: {f}"
    );
    assert_eq!(f["delivery_id"], "0f8fad5b-d9cb-469f-a165-70867728950e");
    // The refused curl (no certificate) is logged as a refused handshake with its reason.
    assert!(
        stderr.contains("\"reason\":\"no_client_cert\""),
        "refused handshake logged with its reason: {stderr}"
    );
}

#[test]
fn demo_self_test_passes() {
    let out = Command::new(BIN)
        .args(["demo", "--self-test"])
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("self-test passed"), "{t}");
    assert!(t.contains("curl --cacert"), "prints a curl line: {t}");
    assert!(
        t.contains("hookgate send-test --url"),
        "prints a send-test line: {t}"
    );
    assert!(
        t.contains("ok   signed delivery with a client certificate: POST /webhook -> 200"),
        "{t}"
    );
    assert!(t.contains("ok   tampered delivery: -> 403"), "{t}");
    assert!(!t.contains("FAIL"), "{t}");
}

#[test]
fn sighup_rotates_the_client_ca_in_the_running_process() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = EchoUpstream::default();
    let upstream_addr = rt.block_on(upstream.clone().spawn()).unwrap();
    let pki = Pki::new();
    let mut setup = Setup::new(&pki, format!("http://{upstream_addr}"));
    // No file watch and no periodic check: only the signal can cause the reload.
    setup.extra_yaml = "reload: {watch: false, check_interval: 0s}\n".into();
    let dir = TempDir::new("sighup");
    let path = write_config(&dir, &pki, &setup);
    let port = free_port();
    set_port(&path, port, &[]);
    let mut child = run_binary(&path, port, Stdio::null());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let status = |cfg| {
        rt.block_on(hookgate::client::request_once(
            addr,
            "localhost",
            cfg,
            get("/"),
        ))
        .map(|r| r.status().as_u16())
        .map_err(|e| alert_of(e.as_ref()))
    };
    let mut spec = LeafSpec::client("wise-client");
    spec.org = Some("Wise Test".into());
    let old_cfg = pki.client_config(&pki.client(&spec), true, &[]);
    let new_ca = hookgate::pki::Ca::root("Rotated Root CA", "Wise Test").unwrap();
    let new_cfg = pki.foreign_config(&new_ca.issue(&spec).unwrap());
    assert_eq!(status(old_cfg.clone()), Ok(200));
    assert_eq!(
        status(new_cfg.clone()),
        Err(Some(rustls::AlertDescription::UnknownCA))
    );

    dir.write("ca0.pem", &new_ca.pem());
    let sent = Instant::now();
    signal(&child, "-HUP");
    while status(new_cfg.clone()) != Ok(200) {
        assert!(
            sent.elapsed() < Duration::from_secs(1),
            "the new CA was not accepted within a second of SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        status(old_cfg),
        Err(Some(rustls::AlertDescription::UnknownCA))
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the same process (pid {}) is still serving",
        child.id()
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn sigterm_drains_an_in_flight_request_then_exits_0() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = EchoUpstream::with_delay(Duration::from_secs(2));
    let upstream_addr = rt.block_on(upstream.clone().spawn()).unwrap();
    let pki = Pki::new();
    let setup = Setup::new(&pki, format!("http://{upstream_addr}"));
    let dir = TempDir::new("drain");
    let path = write_config(&dir, &pki, &setup);
    let (port, admin) = (free_port(), free_port());
    set_port(
        &path,
        port,
        &[
            ("127.0.0.1:0", &format!("127.0.0.1:{admin}")),
            (
                "shutdown: {drain_delay: 0s, grace_period: 2s}",
                "shutdown: {drain_delay: 1s, grace_period: 5s}",
            ),
        ],
    );
    let mut child = run_binary(&path, port, Stdio::null());
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    let readyz = |rt: &tokio::runtime::Runtime| {
        rt.block_on(hookgate::client::get_plain(admin, "/readyz"))
            .map(|(s, _)| s.as_u16())
            .ok()
    };
    assert_eq!(readyz(&rt), Some(200));

    let mut spec = LeafSpec::client("wise-client");
    spec.org = Some("Wise Test".into());
    let cfg = pki.client_config(&pki.client(&spec), true, &[]);
    let in_flight = rt.spawn(hookgate::client::request_once(
        addr,
        "localhost",
        cfg,
        get("/slow"),
    ));
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "-TERM");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(readyz(&rt), Some(503), "/readyz turns 503 at once");

    let resp = rt.block_on(in_flight).unwrap().unwrap();
    assert_eq!(resp.status(), 200, "the in-flight request completed");
    assert_eq!(exit_code(&mut child, Duration::from_secs(10)), Some(0));
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "nothing listens after the drain"
    );
    assert_eq!(upstream.seen().len(), 1);
}

#[test]
fn a_second_signal_exits_at_once() {
    let pki = Pki::new();
    let setup = Setup::new(&pki, "http://127.0.0.1:9".into());
    let dir = TempDir::new("second-signal");
    let path = write_config(&dir, &pki, &setup);
    let port = free_port();
    set_port(
        &path,
        port,
        &[(
            "shutdown: {drain_delay: 0s, grace_period: 2s}",
            "shutdown: {drain_delay: 30s, grace_period: 30s}",
        )],
    );
    let mut child = run_binary(&path, port, Stdio::null());
    for sig in ["-TERM", "-INT"] {
        signal(&child, sig);
        std::thread::sleep(Duration::from_millis(200));
    }
    // Well inside the 30 s drain: only the second signal can end it this soon.
    assert_eq!(exit_code(&mut child, Duration::from_secs(3)), Some(1));
}
