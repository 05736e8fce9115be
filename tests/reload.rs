//! Live reload: last good wins, every trigger (explicit, inotify on a Kubernetes-style mount,
//! in-place writes), no stale TLS sessions, nothing in flight disturbed.

#![allow(clippy::unwrap_used)]
// test code: a panic is a failed test
// Metric values are small integers and Unix timestamps, exact in an f64.
#![allow(clippy::cast_precision_loss, clippy::float_cmp)]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hookgate::client::metric_value;
use hookgate::demo::EchoUpstream;
use hookgate::pki::{Ca, Leaf, LeafSpec};
use hookgate::reload::Outcome;
use http::{Request, StatusCode};
use http_body_util::{BodyExt as _, Full};
use rustls::AlertDescription;
use support::*;
use time::OffsetDateTime;

/// A second CA, root-issued leaves, as after Wise rotates its CA.
fn new_ca() -> (Ca, Leaf) {
    let ca = Ca::root("Rotated Root CA", "Wise Test").unwrap();
    let leaf = ca.issue(&LeafSpec::client("wise-client")).unwrap();
    (ca, leaf)
}

/// Polls until `f` is true or `within` passes; returns how long it took.
async fn eventually<F, Fut>(within: Duration, what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if f().await {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn ca_rotation_by_reload_then_bad_files_keep_the_last_good() {
    let env = Env::start().await;
    let old_leaf = env.client_leaf();
    let old_cfg = env.pki.client_config(&old_leaf, true, &[]);
    assert_eq!(env.try_get(old_cfg.clone()).await, Ok(StatusCode::OK));

    let (ca, new_leaf) = new_ca();
    let new_cfg = env.pki.foreign_config(&new_leaf);
    assert_eq!(
        env.try_get(new_cfg.clone()).await,
        Err(Some(AlertDescription::UnknownCA))
    );
    env.dir.write("ca0.pem", &ca.pem());
    assert_eq!(env.server.reload().await, Outcome::Reloaded);
    assert_eq!(env.try_get(new_cfg.clone()).await, Ok(StatusCode::OK));
    assert_eq!(
        env.try_get(old_cfg.clone()).await,
        Err(Some(AlertDescription::UnknownCA))
    );

    // Each broken state fails the reload and leaves the rotated CA in force.
    let other_key = env
        .pki
        .server_ca
        .issue(&LeafSpec::localhost_server())
        .unwrap()
        .key_pem;
    let ca_pem = ca.pem();
    let breakages: [(&str, String); 3] = [
        ("ca0.pem", "this is not a certificate\n".into()),
        ("server.key", other_key),
        // A half-written bundle: the PEM block is cut short.
        ("ca0.pem", ca_pem[..ca_pem.len() / 2].to_string()),
    ];
    let good_key = std::fs::read_to_string(env.dir.path().join("server.key")).unwrap();
    for (i, (file, text)) in breakages.iter().enumerate() {
        env.dir.write(file, text);
        match env.server.reload().await {
            Outcome::Failed(msg) => assert!(msg.contains(file), "{file}: {msg}"),
            other => panic!("{file}: expected a failed reload, got {other:?}"),
        }
        assert_eq!(
            env.try_get(new_cfg.clone()).await,
            Ok(StatusCode::OK),
            "the last good material serves on"
        );
        env.wait_metrics(&[
            (
                "hookgate_config_reloads_total{result=\"failure\"}",
                (i + 1) as f64,
            ),
            ("hookgate_config_reloads_total{result=\"success\"}", 1.0),
        ])
        .await;
        // Undo, so that the next breakage is the only one.
        env.dir.write("ca0.pem", &ca_pem);
        env.dir.write("server.key", &good_key);
    }
    let admin = env.server.admin_addr();
    assert_eq!(
        hookgate::client::get_plain(admin, "/readyz")
            .await
            .unwrap()
            .0,
        StatusCode::OK,
        "failed reloads do not make the proxy unready"
    );
}

/// Lays out `dir` the way the kubelet mounts a Secret: files are symlinks through `..data`,
/// which points at a timestamped directory and is swapped atomically on update.
fn kubelet_write(dir: &Path, generation: u32, files: &[(&str, &str)]) {
    let ts = format!("..2026_12_04_00_00_0{generation}.123");
    let target = dir.join(&ts);
    std::fs::create_dir_all(&target).unwrap();
    for (name, text) in files {
        std::fs::write(target.join(name), text).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts, &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for (name, _) in files {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).unwrap();
        }
    }
    // The kubelet then removes the old generation.
    if generation > 0 {
        let old = dir.join(format!("..2026_12_04_00_00_0{}.123", generation - 1));
        let _ = std::fs::remove_dir_all(old);
    }
}

#[tokio::test]
async fn a_kubernetes_secret_update_is_picked_up_without_a_signal() {
    let mut mount = None;
    let env = Env::start_with(|pki, s| {
        let dir = TempDir::new("secret");
        kubelet_write(dir.path(), 0, &[("ca.crt", &pki.root.pem())]);
        s.tls_yaml = format!("  client_ca: [\"{}/ca.crt\"]\n", dir.path().display());
        s.client_ca_pems.clear();
        mount = Some(dir);
    })
    .await;
    let mount = mount.unwrap();
    let old_cfg = env.pki.client_config(&env.client_leaf(), true, &[]);
    assert_eq!(env.try_get(old_cfg.clone()).await, Ok(StatusCode::OK));

    let (ca, new_leaf) = new_ca();
    let new_cfg = env.pki.foreign_config(&new_leaf);
    kubelet_write(mount.path(), 1, &[("ca.crt", &ca.pem())]);
    let took = eventually(Duration::from_secs(10), "new CA accepted", || {
        let env = &env;
        let cfg = new_cfg.clone();
        async move { env.try_get(cfg).await == Ok(StatusCode::OK) }
    })
    .await;
    eprintln!("Secret update picked up in {took:?}");
    assert_eq!(
        env.try_get(old_cfg).await,
        Err(Some(AlertDescription::UnknownCA))
    );
    env.wait_metrics(&[("hookgate_config_reloads_total{result=\"success\"}", 1.0)])
        .await;
}

#[tokio::test]
async fn a_crl_gaining_an_entry_is_picked_up_without_a_signal() {
    let next_week = OffsetDateTime::now_utc() + Duration::from_secs(7 * 86_400);
    let env = Env::start_with(|pki, s| {
        let empty = pki.intermediate.crl(&[], next_week).unwrap();
        s.extra_files = vec![("int.crl".into(), empty)];
        s.tls_yaml = "  crl: [int.crl]\n  crl_scope: leaf\n".into();
    })
    .await;
    let leaf = env.client_leaf();
    let cfg = env.pki.client_config(&leaf, true, &[]);
    assert_eq!(env.try_get(cfg.clone()).await, Ok(StatusCode::OK));

    // Written in place, as a cron job with `curl -o` would.
    let crl = env
        .pki
        .intermediate
        .crl(&[leaf.serial()], next_week)
        .unwrap();
    std::fs::write(env.dir.path().join("int.crl"), crl).unwrap();
    eventually(Duration::from_secs(10), "revocation applied", || {
        let env = &env;
        let cfg = cfg.clone();
        async move { env.try_get(cfg).await == Err(Some(AlertDescription::CertificateRevoked)) }
    })
    .await;
}

#[tokio::test]
async fn an_editors_write_then_rename_is_picked_up_without_a_signal() {
    let env = Env::start().await;
    let (ca, new_leaf) = new_ca();
    let new_cfg = env.pki.foreign_config(&new_leaf);
    // vim and most editors: write a temp file next to the target, then rename it over.
    let tmp = env.dir.write(".ca0.pem.swp", &ca.pem());
    std::fs::rename(tmp, env.dir.path().join("ca0.pem")).unwrap();
    eventually(Duration::from_secs(10), "renamed bundle applied", || {
        let env = &env;
        let cfg = new_cfg.clone();
        async move { env.try_get(cfg).await == Ok(StatusCode::OK) }
    })
    .await;
}

#[tokio::test]
async fn the_periodic_check_catches_what_no_event_reports() {
    let env = Env::start_with(|_, s| {
        s.extra_yaml = "reload: {watch: false, check_interval: 1s}\n".into();
    })
    .await;
    let (ca, new_leaf) = new_ca();
    let new_cfg = env.pki.foreign_config(&new_leaf);
    env.dir.write("ca0.pem", &ca.pem());
    eventually(Duration::from_secs(5), "periodic check reloaded", || {
        let env = &env;
        let cfg = new_cfg.clone();
        async move { env.try_get(cfg).await == Ok(StatusCode::OK) }
    })
    .await;
    // An unchanged file is not reloaded again and again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let text = env.metrics().await;
    assert_eq!(
        metric_value(&text, "hookgate_config_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn a_session_from_before_a_ca_removal_cannot_resume() {
    let env = Env::start().await;
    let leaf = env.client_leaf();
    let cfg = env.pki.client_config(&leaf, true, &[b"http/1.1"]);

    // Returns the handshake kind, then completes one request (which also delivers the TLS 1.3
    // session ticket to the client).
    let connect = |cfg| async move {
        let tls = hookgate::client::connect(env.addr, "localhost", cfg).await?;
        let kind = tls.get_ref().1.handshake_kind();
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let resp = send.send_request(get("/")).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        Ok::<_, BoxError>((kind, status))
    };
    let (kind, status) = connect(cfg.clone()).await.unwrap();
    assert_eq!(
        (kind, status),
        (Some(rustls::HandshakeKind::Full), StatusCode::OK)
    );
    let (kind, status) = connect(cfg.clone()).await.unwrap();
    assert_eq!(
        (kind, status),
        (Some(rustls::HandshakeKind::Resumed), StatusCode::OK),
        "resumption works before the reload (otherwise this test proves nothing)"
    );

    // Remove the client's CA; the ticket the client holds must not let it back in.
    let (other, _) = new_ca();
    env.dir.write("ca0.pem", &other.pem());
    assert_eq!(env.server.reload().await, Outcome::Reloaded);
    let err = connect(cfg).await.unwrap_err();
    assert_eq!(
        alert_of(err.as_ref()),
        Some(AlertDescription::UnknownCA),
        "{err:?}"
    );
}

#[tokio::test]
async fn requests_in_flight_and_open_connections_survive_a_reload() {
    let slow = EchoUpstream::with_delay(Duration::from_millis(800));
    let slow_addr = slow.clone().spawn().await.unwrap();
    let env = Env::start_with(|_, s| s.upstream_url = format!("http://{slow_addr}")).await;
    let leaf = env.client_leaf();
    let mut conn = env.h1_connection::<Full<Bytes>>(&leaf).await;

    let in_flight = {
        let cfg = env.pki.client_config(&leaf, true, &[]);
        let addr = env.addr;
        tokio::spawn(async move {
            let req = Request::post("/slow")
                .header("host", "localhost")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap();
            hookgate::client::request_once(addr, "localhost", cfg, req).await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A reload that removes the client's CA, while the request waits on the upstream.
    let (other, _) = new_ca();
    env.dir.write("ca0.pem", &other.pem());
    assert_eq!(env.server.reload().await, Outcome::Reloaded);
    let resp = in_flight.await.unwrap().unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the in-flight request completed"
    );

    // The keep-alive connection opened before the reload keeps working.
    let resp = conn.send_request(get("/again")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // New connections get the new policy.
    assert_eq!(
        env.try_get(env.pki.client_config(&leaf, true, &[])).await,
        Err(Some(AlertDescription::UnknownCA))
    );
    assert_eq!(slow.seen().len(), 2);
}

#[tokio::test]
async fn expiry_gauges_follow_a_reload() {
    let env = Env::start().await;
    let series = |role: &str, der: &[u8]| {
        let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
        (
            format!(
                "hookgate_certificate_expiry_timestamp_seconds{{role=\"{role}\",subject=\"{}\"}}",
                hookgate::identity::dn_rfc4514(cert.subject())
            ),
            cert.validity().not_after.timestamp() as f64,
        )
    };
    let (old_server, old_server_ts) = series("server", env.pki.server.der.as_ref());
    let text = env.metrics().await;
    assert_eq!(metric_value(&text, &old_server), Some(old_server_ts));

    // A renewed server certificate (other expiry) and a rotated client CA.
    let mut spec = LeafSpec::localhost_server();
    spec.not_after = OffsetDateTime::now_utc() + Duration::from_secs(30 * 86_400);
    let renewed = env.pki.server_ca.issue(&spec).unwrap();
    env.dir.write("server.crt", &renewed.pem);
    env.dir.write("server.key", &renewed.key_pem);
    let (ca, _) = new_ca();
    env.dir.write("ca0.pem", &ca.pem());
    assert_eq!(env.server.reload().await, Outcome::Reloaded);

    let (new_server, new_server_ts) = series("server", renewed.der.as_ref());
    assert_eq!(new_server, old_server, "same subject");
    assert_ne!(new_server_ts, old_server_ts);
    let (new_ca_series, new_ca_ts) = series("client_ca", ca.der().as_ref());
    let (old_ca_series, _) = series("client_ca", env.pki.root.der().as_ref());
    let text = env.metrics().await;
    assert_eq!(metric_value(&text, &new_server), Some(new_server_ts));
    assert_eq!(metric_value(&text, &new_ca_series), Some(new_ca_ts));
    assert_eq!(
        metric_value(&text, &old_ca_series),
        None,
        "a removed CA is no longer reported"
    );
}

#[tokio::test]
async fn settings_that_need_a_restart_are_kept_and_the_rest_applies() {
    let env = Env::start().await;
    let leaf = env.client_leaf();
    // A new listen address (needs a restart) and a header switch (live) in one edit.
    env.edit_config(|y| {
        y.replacen("listen: \"127.0.0.1:0\"", "listen: \"127.0.0.1:1\"", 1)
            + "headers: {xfcc: false}\n"
    });
    assert_eq!(env.server.reload().await, Outcome::Reloaded);
    assert_eq!(
        env.try_get(env.pki.client_config(&leaf, true, &[])).await,
        Ok(StatusCode::OK),
        "still listening where it started"
    );
    let seen = env.upstream.seen();
    assert!(
        !seen[0].headers.contains_key("x-forwarded-client-cert"),
        "headers.xfcc: false applied live"
    );
}
