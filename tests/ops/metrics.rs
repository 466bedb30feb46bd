//! Metrics: the Prometheus exposition counts exactly the uploads, errors,
//! downloads, bytes and auth failures that happened.

use std::time::{Duration, Instant};

use hmac_file_server::auth;
use hmac_file_server::config::Secret;
use reqwest::StatusCode;

use crate::common::{SECRET, TestServer, client, payload, secret};
use crate::helpers::{
    AUTH_FAILURES, STORE_BYTES, STORE_FILES, metrics_addr, parse_prometheus, put, scrape, scrape_text,
};

const UPLOADS: &str = "hmac_file_server_uploads_total";
const UPLOAD_ERRORS: &str = "hmac_file_server_upload_errors_total";
const DOWNLOADS: &str = "hmac_file_server_downloads_total";
const UPLOAD_BYTES: &str = "hmac_file_server_upload_bytes_total";
const DOWNLOAD_BYTES: &str = "hmac_file_server_download_bytes_total";
const UPLOAD_DURATION_COUNT: &str = "hmac_file_server_upload_duration_seconds_count";
const UPLOAD_DURATION_BUCKET: &str = "hmac_file_server_upload_duration_seconds_bucket";
const REQUEST_DURATION_COUNT: &str = "hmac_file_server_request_duration_seconds_count";
const GOROUTINES: &str = "hmac_file_server_goroutines";
const ACTIVE_UPLOADS: &str = "hmac_file_server_active_uploads";

#[tokio::test]
async fn metrics_count_exactly_what_happened() {
    let server = TestServer::start("MaxUploadSize = 1000");
    let http = client();
    let maddr = metrics_addr(&server.log());

    // The start-up pass counts the (empty) store; wait for it so it cannot race the uploads.
    let deadline = Instant::now() + Duration::from_secs(5);
    let before = loop {
        let s = scrape(&http, &maddr).await;
        if s.get(STORE_FILES, &[]).is_some() || Instant::now() >= deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let counted = before.get(STORE_FILES, &[]).is_some();
    assert!(counted, "store_files gauge never appeared: {before:?}");
    assert_eq!(before.get(STORE_FILES, &[]), Some(0.0), "empty store at start");
    assert_eq!(before.get(STORE_BYTES, &[]), Some(0.0), "empty store at start");
    for name in [
        UPLOADS,
        UPLOAD_ERRORS,
        DOWNLOADS,
        UPLOAD_BYTES,
        DOWNLOAD_BYTES,
        AUTH_FAILURES,
    ] {
        assert_eq!(
            before.get(name, &[]),
            Some(0.0),
            "{name} is exported at 0 from the start"
        );
    }

    // N = 3 uploads.
    let files = [("m/one.bin", 100usize), ("m/two.bin", 200), ("m/three.bin", 300)];
    for (i, (path, len)) in files.iter().enumerate() {
        let r = put(
            &http,
            &server.signed_v(path, path, *len as u64),
            payload(*len, i as u64),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{path}");
    }
    let uploaded: f64 = files.iter().map(|(_, l)| *l as f64).sum();
    let mid = scrape(&http, &maddr).await;
    assert_eq!(mid.get(STORE_FILES, &[]), Some(3.0), "store_files after 3 uploads");
    assert_eq!(mid.get(STORE_BYTES, &[]), Some(uploaded), "store_bytes after 3 uploads");

    // M = 3 failed uploads.
    let bad = format!("{}?v={}", server.url("m/bad.bin"), "ab".repeat(32));
    assert_eq!(put(&http, &bad, payload(50, 9)).await.status(), StatusCode::FORBIDDEN);
    let again = server.signed_v("m/one.bin", "m/one.bin", 100);
    assert_eq!(put(&http, &again, payload(100, 0)).await.status(), StatusCode::CONFLICT);
    let big = server.signed_v("m/big.bin", "m/big.bin", 2000);
    assert_eq!(
        put(&http, &big, payload(2000, 3)).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );

    // K = 3 downloads (two whole, one range), plus a HEAD and a 404 that are not downloads.
    for (path, len) in &files[..2] {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().len(), *len);
    }
    let r = http
        .get(server.url("m/three.bin"))
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().len(), 10);
    let r = http.head(server.url("m/one.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(server.url("m/missing.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A DELETE with a wrong token (an auth failure) and a Metronome DELETE that works.
    let wrong = auth::sign_delete(&Secret::new("not-the-secret-000000"), "m/one.bin", &secret());
    let r = http
        .delete(format!("{}?token={wrong}", server.url("m/one.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "DELETE with a wrong token");
    let token = auth::sign_delete(&secret(), "m/one.bin", &secret());
    let r = http
        .delete(format!("{}?token={token}", server.url("m/one.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "Metronome DELETE");

    let text = scrape_text(&http, &maddr).await;
    assert!(!text.contains(SECRET), "no secret in the metrics");
    let after = parse_prometheus(&text);
    let delta = |name: &str, labels: &[(&str, &str)]| after.val(name, labels) - before.val(name, labels);
    assert_eq!(delta(UPLOADS, &[]), 3.0, "{UPLOADS}");
    assert_eq!(delta(UPLOAD_ERRORS, &[]), 3.0, "{UPLOAD_ERRORS}: 403, 409, 413");
    assert_eq!(
        delta(DOWNLOADS, &[]),
        3.0,
        "{DOWNLOADS}: 200, 200, 206 (not HEAD, not 404)"
    );
    // The 409 of a body below BufferSize is found at the no-replace commit, after its 100
    // bytes came in; refused tokens and oversize uploads are answered before the body.
    assert_eq!(
        delta(UPLOAD_BYTES, &[]),
        uploaded + 100.0,
        "{UPLOAD_BYTES}: bodies received (stored ones and the small 409)"
    );
    assert_eq!(delta(DOWNLOAD_BYTES, &[]), 100.0 + 200.0 + 10.0, "{DOWNLOAD_BYTES}");
    assert_eq!(
        delta(AUTH_FAILURES, &[]),
        2.0,
        "{AUTH_FAILURES}: bad PUT and bad DELETE"
    );
    assert_eq!(delta(UPLOAD_DURATION_COUNT, &[]), 6.0, "{UPLOAD_DURATION_COUNT}");
    let by = |m: &str, s: &str| delta(REQUEST_DURATION_COUNT, &[("method", m), ("status", s)]);
    assert_eq!(by("PUT", "201"), 3.0, "request duration PUT 201");
    assert_eq!(by("PUT", "403"), 1.0, "request duration PUT 403");
    assert_eq!(by("PUT", "409"), 1.0, "request duration PUT 409");
    assert_eq!(by("PUT", "413"), 1.0, "request duration PUT 413");
    assert_eq!(by("GET", "200"), 2.0, "request duration GET 200");
    assert_eq!(by("GET", "206"), 1.0, "request duration GET 206");
    assert_eq!(by("GET", "404"), 1.0, "request duration GET 404");
    assert_eq!(by("HEAD", "200"), 1.0, "request duration HEAD 200");
    assert_eq!(by("DELETE", "403"), 1.0, "request duration DELETE 403");
    assert_eq!(by("DELETE", "204"), 1.0, "request duration DELETE 204");

    assert_eq!(after.get(STORE_FILES, &[]), Some(2.0), "store_files after the DELETE");
    assert_eq!(
        after.get(STORE_BYTES, &[]),
        Some(uploaded - 100.0),
        "store_bytes after the DELETE"
    );
    let tasks = after.get(GOROUTINES, &[]).expect("goroutines gauge present");
    assert!(tasks > 0.0, "goroutines = {tasks}");
    assert_eq!(after.get(ACTIVE_UPLOADS, &[]), Some(0.0), "no upload running");

    // Upload duration buckets: 10 ms to 10 min, then +Inf equal to the count.
    let buckets = after.all(UPLOAD_DURATION_BUCKET);
    let finite: Vec<f64> = buckets
        .iter()
        .map(|s| s.labels["le"].as_str())
        .filter(|le| *le != "+Inf")
        .map(|le| le.parse::<f64>().unwrap())
        .collect();
    assert!(finite.len() >= 5, "upload duration buckets: {finite:?}");
    let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let max = finite.iter().copied().fold(0.0, f64::max);
    assert_eq!((min, max), (0.01, 600.0), "upload duration buckets: {finite:?}");
    let inf = after
        .get(UPLOAD_DURATION_BUCKET, &[("le", "+Inf")])
        .expect("+Inf bucket");
    assert_eq!(inf, after.val(UPLOAD_DURATION_COUNT, &[]), "+Inf bucket = count");
}

/// Issue #11: every series that has no labels, and the retention counter for each reason, is
/// exported from the start with zero values, so a fresh server's dashboards and alert rules
/// see 0 and not "no data" (the upload duration histogram used to appear with the first
/// upload).
#[tokio::test]
async fn every_series_is_exported_at_zero_from_the_start() {
    let server = TestServer::start("");
    let http = client();
    let maddr = metrics_addr(&server.log());
    let text = scrape_text(&http, &maddr).await;
    let fresh = parse_prometheus(&text);
    for name in [
        UPLOADS,
        UPLOAD_ERRORS,
        DOWNLOADS,
        UPLOAD_BYTES,
        DOWNLOAD_BYTES,
        AUTH_FAILURES,
        UPLOAD_DURATION_COUNT,
        "hmac_file_server_upload_duration_seconds_sum",
        ACTIVE_UPLOADS,
        "hmac_file_server_banned_clients",
        "hmac_file_server_bans_total",
        "hmac_file_server_bans_withheld_total",
        "hmac_file_server_untrusted_forwarded_total",
        "hmac_file_server_unfinished_uploads",
        "hmac_file_server_unfinished_bytes",
    ] {
        assert_eq!(fresh.get(name, &[]), Some(0.0), "{name} at 0 from the start:\n{text}");
    }
    assert_eq!(
        fresh.get(UPLOAD_DURATION_BUCKET, &[("le", "+Inf")]),
        Some(0.0),
        "the histogram's buckets are there:\n{text}"
    );
    assert!(text.contains("# TYPE hmac_file_server_upload_duration_seconds histogram"));
    for reason in ["delete_files_after_period", "max_retention_time", "max_retention_size"] {
        assert_eq!(
            fresh.get("hmac_file_server_retention_deletions_total", &[("reason", reason)]),
            Some(0.0),
            "retention deletions for {reason}:\n{text}"
        );
    }
}
