//! Secret rotation: SecretFile re-read on SIGHUP and periodically with a grace period, and
//! live settings applied on SIGHUP.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use hmac_file_server::auth;
use hmac_file_server::config::Secret;
use reqwest::StatusCode;

use crate::common::{TestServer, client, payload, secret, wait_until};
use crate::helpers::{count, put, write_config};

const OLD_SECRET: &str = "old-rotating-secret-0123456789";
const NEW_SECRET: &str = "new-rotating-secret-9876543210";

/// A `v` URL of `server` signed with a given secret.
fn signed_with(server: &TestServer, secret: &Secret, path: &str, size: u64) -> String {
    format!("{}?v={}", server.url(path), auth::sign_v(secret, path, size))
}

fn start_with_secret_file(extra: &str) -> (TestServer, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{OLD_SECRET}\n")).unwrap();
    let config = write_config(
        dir.path(),
        &format!("SecretFile = \"{}\"\n{extra}", secret_file.display()),
    );
    (TestServer::start_with_config(dir, &config), secret_file)
}

#[tokio::test]
async fn secret_rotation_on_sighup_with_grace() {
    let (server, secret_file) = start_with_secret_file("ReaskSecretInterval = \"3s\"");
    let http = client();
    let (old, new) = (Secret::new(OLD_SECRET), Secret::new(NEW_SECRET));
    let mut n = 0;
    let mut upload = |s: &Secret| {
        n += 1;
        let path = format!("r/{n}.bin");
        let url = signed_with(&server, s, &path, 4);
        let http = http.clone();
        async move { put(&http, &url, b"data".to_vec()).await.status() }
    };
    assert_eq!(upload(&old).await, StatusCode::CREATED, "the file's secret works");
    assert_eq!(upload(&new).await, StatusCode::FORBIDDEN, "the next one not yet");
    assert_eq!(
        upload(&secret()).await,
        StatusCode::FORBIDDEN,
        "the fixture's default secret is not in use"
    );

    std::fs::write(&secret_file, format!("{NEW_SECRET}\n")).unwrap();
    let reloads = count(&server.log(), "configuration reloaded");
    let sent = Instant::now();
    server.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(5), || count(
            &server.log(),
            "configuration reloaded"
        ) > reloads),
        "no reload logged:\n{}",
        server.log()
    );
    assert_eq!(upload(&new).await, StatusCode::CREATED, "the new secret works at once");
    assert_eq!(
        upload(&old).await,
        StatusCode::CREATED,
        "the old one during the grace period"
    );

    // After one ReaskSecretInterval only the new one works.
    let mut expired = None;
    while sent.elapsed() < Duration::from_secs(12) {
        match upload(&old).await {
            StatusCode::CREATED => tokio::time::sleep(Duration::from_millis(100)).await,
            StatusCode::FORBIDDEN => {
                expired = Some(sent.elapsed());
                break;
            }
            other => panic!("old secret during rotation: {other}"),
        }
    }
    let expired = expired.expect("the old secret never expired");
    assert!(
        expired >= Duration::from_millis(2500),
        "the old secret expired after {expired:?}, before ReaskSecretInterval (3 s)"
    );
    assert_eq!(
        upload(&old).await,
        StatusCode::FORBIDDEN,
        "the old secret stays refused"
    );
    assert_eq!(upload(&new).await, StatusCode::CREATED, "the new one keeps working");
}

#[tokio::test]
async fn secret_is_re_read_periodically() {
    let (server, secret_file) = start_with_secret_file("ReaskSecretEnabled = true\nReaskSecretInterval = \"2s\"");
    let http = client();
    let (old, new) = (Secret::new(OLD_SECRET), Secret::new(NEW_SECRET));
    let mut n = 0;
    let mut upload = |s: &Secret| {
        n += 1;
        let url = signed_with(&server, s, &format!("q/{n}.bin"), 4);
        let http = http.clone();
        async move { put(&http, &url, b"data".to_vec()).await.status() }
    };
    assert_eq!(upload(&new).await, StatusCode::FORBIDDEN, "not yet");
    std::fs::write(&secret_file, format!("{NEW_SECRET}\n")).unwrap();
    let written = Instant::now();
    let mut rotated = None;
    while written.elapsed() < Duration::from_secs(8) {
        if upload(&new).await == StatusCode::CREATED {
            rotated = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rotated = rotated.unwrap_or_else(|| panic!("the new secret was never picked up:\n{}", server.log()));
    assert_eq!(
        upload(&old).await,
        StatusCode::CREATED,
        "the old one during the grace period"
    );
    let mut expired = None;
    while rotated.elapsed() < Duration::from_secs(8) {
        match upload(&old).await {
            StatusCode::CREATED => tokio::time::sleep(Duration::from_millis(100)).await,
            StatusCode::FORBIDDEN => {
                expired = Some(rotated.elapsed());
                break;
            }
            other => panic!("old secret during rotation: {other}"),
        }
    }
    let expired = expired.expect("the old secret never expired");
    assert!(
        expired >= Duration::from_millis(1500),
        "the old secret expired {expired:?} after the new one was seen (interval 2 s)"
    );
    assert_eq!(upload(&new).await, StatusCode::CREATED);
    assert!(
        wait_until(Duration::from_secs(5), || server.log().contains("secret re-read")),
        "the rotation is logged"
    );
    let log = server.log();
    assert!(
        !log.contains(OLD_SECRET) && !log.contains(NEW_SECRET),
        "no secret in the log"
    );
}

#[tokio::test]
async fn unreadable_secret_file_keeps_the_old_secret() {
    let (server, secret_file) = start_with_secret_file("ReaskSecretInterval = \"3s\"");
    let http = client();
    let old = Secret::new(OLD_SECRET);
    let url = signed_with(&server, &old, "k/before.bin", 3);
    assert_eq!(put(&http, &url, b"abc".to_vec()).await.status(), StatusCode::CREATED);

    std::fs::remove_file(&secret_file).unwrap();
    let hups = count(&server.log(), "SIGHUP");
    server.signal("HUP");
    let failed = wait_until(Duration::from_secs(5), || {
        let log = server.log();
        count(&log, "SIGHUP") > hups && log.lines().any(|l| l.contains("ERROR") && l.contains("SecretFile"))
    });
    assert!(failed, "no error about SecretFile logged:\n{}", server.log());
    let url = signed_with(&server, &old, "k/after.bin", 3);
    assert_eq!(
        put(&http, &url, b"abc".to_vec()).await.status(),
        StatusCode::CREATED,
        "the old secret still works"
    );
    assert!(
        !server.log().contains("configuration reloaded"),
        "a failed reload must not claim success"
    );
    assert!(!server.log().contains(OLD_SECRET), "the secret is never logged");
}

/// A SecretFile replaced by a FIFO (or anything but a small regular file) fails the reload at
/// once with an error naming SecretFile: the server neither hangs opening it nor reads
/// without end, keeps answering on the old secret, and the next good reload works.
#[tokio::test]
async fn secret_file_replaced_by_a_fifo_keeps_the_old_secret() {
    let (server, secret_file) = start_with_secret_file("ReaskSecretInterval = \"60s\"");
    let http = client();
    let old = Secret::new(OLD_SECRET);
    let url = signed_with(&server, &old, "f/before.bin", 3);
    assert_eq!(put(&http, &url, b"abc".to_vec()).await.status(), StatusCode::CREATED);

    std::fs::remove_file(&secret_file).unwrap();
    let made = std::process::Command::new("mkfifo").arg(&secret_file).status().unwrap();
    assert!(made.success(), "mkfifo");
    let errors = |log: &str| {
        log.lines()
            .filter(|l| l.contains("ERROR") && l.contains("SecretFile"))
            .count()
    };
    let before = errors(&server.log());
    server.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(5), || errors(&server.log()) > before),
        "no error about SecretFile logged:\n{}",
        server.log()
    );
    let url = signed_with(&server, &old, "f/after.bin", 3);
    assert_eq!(
        put(&http, &url, b"abc".to_vec()).await.status(),
        StatusCode::CREATED,
        "the old secret still works"
    );
    assert!(!server.log().contains("configuration reloaded"));

    // The reload is not stuck on the FIFO: the next SIGHUP with a good file applies it.
    std::fs::remove_file(&secret_file).unwrap();
    std::fs::write(&secret_file, format!("{NEW_SECRET}\n")).unwrap();
    server.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(5), || server
            .log()
            .contains("configuration reloaded")),
        "the next reload never happened:\n{}",
        server.log()
    );
    let url = signed_with(&server, &Secret::new(NEW_SECRET), "f/new.bin", 3);
    assert_eq!(put(&http, &url, b"abc".to_vec()).await.status(), StatusCode::CREATED);
}

/// Metronome DELETE tokens are `HMAC(secret, path + "\0" + delete_secret)` with the delete
/// secret defaulting to the secret: across a rotation both pairs stay valid for the grace
/// period, like upload tokens.
#[tokio::test]
async fn delete_tokens_survive_a_rotation_during_the_grace_period() {
    let (server, secret_file) = start_with_secret_file("ReaskSecretInterval = \"60s\"");
    let http = client();
    let (old, new) = (Secret::new(OLD_SECRET), Secret::new(NEW_SECRET));
    for path in ["d/a.bin", "d/b.bin"] {
        let r = put(&http, &signed_with(&server, &old, path, 1), b"x".to_vec()).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{path}");
    }
    std::fs::write(&secret_file, format!("{NEW_SECRET}\n")).unwrap();
    let reloads = count(&server.log(), "configuration reloaded");
    server.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(5), || count(
            &server.log(),
            "configuration reloaded"
        ) > reloads),
        "no reload logged:\n{}",
        server.log()
    );
    let delete = |path: &str, token: String| {
        let req = http.delete(format!("{}?token={token}", server.url(path)));
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(
        delete("d/a.bin", auth::sign_delete(&new, "d/a.bin", &new)).await,
        StatusCode::NO_CONTENT,
        "a delete token of the new secret"
    );
    assert_eq!(
        delete("d/b.bin", auth::sign_delete(&old, "d/b.bin", &old)).await,
        StatusCode::NO_CONTENT,
        "a delete token minted with the old secret, during the grace period"
    );
}

/// SIGHUP applies live settings (limits) and names the keys that need a restart.
#[tokio::test]
async fn sighup_applies_limits_and_names_restart_only_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "MaxUploadSize = 1000");
    let server = TestServer::start_with_config(dir, &config);
    let http = client();
    let body = payload(500, 91);
    let r = put(&http, &server.signed_v("l/a.bin", "l/a.bin", 500), body.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED, "500 bytes under a 1000-byte limit");

    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("MaxUploadSize = 1000", "MaxUploadSize = 100")
        .replace("ListenPort = \"127.0.0.1:0\"", "ListenPort = \"127.0.0.1:1\"");
    std::fs::write(&config, text).unwrap();
    let reloads = count(&server.log(), "configuration reloaded");
    server.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(5), || count(
            &server.log(),
            "configuration reloaded"
        ) > reloads),
        "no reload logged:\n{}",
        server.log()
    );
    let r = put(&http, &server.signed_v("l/b.bin", "l/b.bin", 500), body).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "the new limit applies");
    let warned = server
        .log()
        .lines()
        .any(|l| l.contains("WARN") && l.contains("ListenPort") && l.contains("restart"));
    assert!(
        warned,
        "ListenPort needs a restart and the log says so:\n{}",
        server.log()
    );
    let r = http.get(server.url("l/a.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "still serving on the old port");
}
