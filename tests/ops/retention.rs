//! Retention: old files are deleted, reported in the deletion report and counted, on each
//! store.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

use crate::common::{TestServer, client, payload, put_typed, wait_until};
use crate::helpers::{STORE_BYTES, STORE_FILES, Spawned, count, header, metrics_addr, scrape, write_config};
use crate::on_each_store;

const RETENTION_DELETIONS: &str = "hmac_file_server_retention_deletions_total";
const UNFINISHED_UPLOADS: &str = "hmac_file_server_unfinished_uploads";
const UNFINISHED_BYTES: &str = "hmac_file_server_unfinished_bytes";

on_each_store!(
    retention_deletes_old_files_and_reports,
    unfinished_uploads_count_against_the_store_size
);

/// An object's modification time cannot be set from outside, so on S3 the period is a few
/// seconds and the old file ages for real; on the local store it is an hour and the old file's
/// modification time is moved two hours back.
async fn retention_deletes_old_files_and_reports(store: &str) {
    let reports = tempfile::tempdir().unwrap();
    let report = reports.path().join("deletions.log");
    let on_s3 = !store.is_empty();
    let (period, ages) = if on_s3 { ("6s", 6..40) } else { ("1h", 7200..7300) };
    let server = TestServer::start(&format!(
        "{store}DeleteFiles = true\nDeleteFilesAfterPeriod = \"{period}\"\nCleanupInterval = \"1s\"\nDeletionReportFile = \"{}\"",
        report.display()
    ));
    let http = client();
    let maddr = metrics_addr(&server.log());
    let put = |path: &'static str, len: usize, seed: u64| {
        let r = put_typed(
            &http,
            server.signed_v(path, path, len as u64),
            "text/plain",
            payload(len, seed),
        );
        async move { assert_eq!(r.await.status(), StatusCode::CREATED, "{path}") }
    };
    put("old/file.bin", 123, 81).await;
    if !on_s3 {
        put("fresh/file.bin", 45, 82).await;
        let old = server.files_dir().join("old/file.bin");
        let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(two_hours_ago)
            .unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(30), || server.stored("old/file.bin").is_none()),
        "the old file was never deleted:\n{}",
        server.log()
    );
    if on_s3 {
        put("fresh/file.bin", 45, 82).await;
    }
    // Two more passes must leave the fresh file alone.
    let passes = count(&server.log(), "retention pass done");
    assert!(
        wait_until(Duration::from_secs(10), || count(&server.log(), "retention pass done")
            >= passes + 2),
        "no further retention passes:\n{}",
        server.log()
    );
    assert!(server.stored("fresh/file.bin").is_some(), "the fresh file stays");
    let r = http.get(server.url("fresh/file.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain",
        "the fresh file keeps its type"
    );
    let r = http.get(server.url("old/file.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The local store keeps a file's type in a sidecar; an object keeps it as its own
    // Content-Type (sidecars there hold digests only).
    let left = if on_s3 { 0 } else { 1 };
    assert_eq!(server.sidecars(), left, "the old file's metadata went too");

    let text = std::fs::read_to_string(&report).expect("a deletion report");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one report line: {text:?}");
    let fields: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(fields.len(), 5, "time path size age reason: {:?}", lines[0]);
    let when = humantime::parse_rfc3339_weak(fields[0]).unwrap_or_else(|e| panic!("time {:?}: {e}", fields[0]));
    let skew = SystemTime::now().duration_since(when).unwrap_or_else(|e| e.duration());
    assert!(skew < Duration::from_secs(60), "report time {:?}", fields[0]);
    assert_eq!(fields[1], "old/file.bin");
    assert_eq!(fields[2], "123");
    let age: u64 = fields[3].parse().expect("age in seconds");
    assert!(ages.contains(&age), "age {age}");
    assert_eq!(fields[4], "delete_files_after_period");

    let m = scrape(&http, &maddr).await;
    assert_eq!(
        m.get(RETENTION_DELETIONS, &[("reason", "delete_files_after_period")]),
        Some(1.0)
    );
    assert_eq!(m.get(STORE_FILES, &[]), Some(1.0), "store_files after retention");
    assert_eq!(m.get(STORE_BYTES, &[]), Some(45.0), "store_bytes after retention");
    assert!(server.log().contains("retention deleted a file"));
}

/// Unfinished uploads' bytes count against MaxRetentionSize with the finished files (the
/// oldest finished file goes to make room), and show in the metrics.
async fn unfinished_uploads_count_against_the_store_size(store: &str) {
    let server = TestServer::start(&format!(
        "{store}RetentionPolicyEnabled = true\nMaxRetentionSize = 150000\nCleanupInterval = \"1s\"\nBufferSize = 4096\n",
    ));
    let http = client();
    let maddr = metrics_addr(&server.log());
    let old = payload(100_000, 83);
    let r = put_typed(
        &http,
        server.signed_v("keep/old.bin", "keep/old.bin", 100_000),
        "text/plain",
        old,
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = http
        .post(server.signed_v("tus/big.bin", "tus/big.bin", 100_000))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "100000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = format!("{}{}", server.base, header(&r, "location").unwrap());
    let big = payload(100_000, 84);
    let patch = |offset: usize, end: usize| {
        http.patch(&location)
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset.to_string())
            .body(big[offset..end].to_vec())
            .send()
    };
    assert_eq!(patch(0, 60_000).await.unwrap().status(), StatusCode::NO_CONTENT);
    // On S3 the unfinished bytes are summed from the bucket at most every 10 s.
    assert!(
        wait_until(Duration::from_secs(25), || server.stored("keep/old.bin").is_none()),
        "100,000 finished + 60,000 unfinished > 150,000: the oldest file goes\n{}",
        server.log()
    );
    let m = scrape(&http, &maddr).await;
    assert_eq!(m.get(UNFINISHED_UPLOADS, &[]), Some(1.0));
    assert_eq!(m.get(UNFINISHED_BYTES, &[]), Some(60_000.0));
    assert_eq!(patch(60_000, 100_000).await.unwrap().status(), StatusCode::NO_CONTENT);
    let r = http.get(server.url("tus/big.bin")).send().await.unwrap();
    assert_eq!(
        r.bytes().await.unwrap(),
        big,
        "the unfinished upload itself is never touched"
    );
}

/// A DeletionReportFile the server could not write used to pass the start and then give a
/// WARN per deleted file, with nothing reported. Now the start is refused with the reason,
/// as check-config says.
#[test]
fn unwritable_deletion_report_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing_folder = dir.path().join("no-such-folder/deletions.log");
    let config = write_config(
        dir.path(),
        &format!(
            "DeleteFiles = true\nDeletionReportFile = \"{}\"",
            missing_folder.display()
        ),
    );
    let mut server = Spawned::start(&config, None);
    let status = server.wait_exit(Duration::from_secs(10));
    let stderr = server.stderr();
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(2),
        "the start is refused:\n{stderr}"
    );
    assert!(
        stderr.contains("config error: DeletionReportFile: ") && stderr.contains("no-such-folder"),
        "the reason names the key and the path:\n{stderr}"
    );
    assert!(!missing_folder.parent().unwrap().exists(), "nothing is created");
}
