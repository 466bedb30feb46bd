//! Retention: old files are deleted, reported in the deletion report and counted.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

use crate::common::{TestServer, client, payload, put_typed, wait_until};
use crate::helpers::{STORE_BYTES, STORE_FILES, Spawned, count, header, metrics_addr, scrape, write_config};

const RETENTION_DELETIONS: &str = "hmac_file_server_retention_deletions_total";
const UNFINISHED_UPLOADS: &str = "hmac_file_server_unfinished_uploads";
const UNFINISHED_BYTES: &str = "hmac_file_server_unfinished_bytes";

#[tokio::test]
async fn retention_deletes_old_files_and_reports() {
    let reports = tempfile::tempdir().unwrap();
    let report = reports.path().join("deletions.log");
    let server = TestServer::start(&format!(
        "DeleteFiles = true\nDeleteFilesAfterPeriod = \"1h\"\nCleanupInterval = \"1s\"\nDeletionReportFile = \"{}\"",
        report.display()
    ));
    let http = client();
    let maddr = metrics_addr(&server.log());
    for (path, len, seed) in [("old/file.bin", 123usize, 81u64), ("fresh/file.bin", 45, 82)] {
        let r = put_typed(
            &http,
            server.signed_v(path, path, len as u64),
            "text/plain",
            payload(len, seed),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{path}");
    }
    let old = server.files_dir().join("old/file.bin");
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();

    assert!(
        wait_until(Duration::from_secs(10), || !old.exists()),
        "the old file was never deleted:\n{}",
        server.log()
    );
    // Two more passes must leave the fresh file alone.
    let passes = count(&server.log(), "retention pass done");
    assert!(
        wait_until(Duration::from_secs(10), || count(&server.log(), "retention pass done")
            >= passes + 2),
        "no further retention passes:\n{}",
        server.log()
    );
    assert!(
        server.files_dir().join("fresh/file.bin").exists(),
        "the fresh file stays"
    );
    let r = http.get(server.url("fresh/file.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(server.url("old/file.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(server.sidecars(), 1, "the old file's metadata went too");

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
    assert!((7200..7300).contains(&age), "age {age}");
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
#[tokio::test]
async fn unfinished_uploads_count_against_the_store_size() {
    let server = TestServer::start(
        "RetentionPolicyEnabled = true\nMaxRetentionSize = 150000\nCleanupInterval = \"1s\"\nBufferSize = 4096\n",
    );
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
    let gone = server.files_dir().join("keep/old.bin");
    assert!(
        wait_until(Duration::from_secs(10), || !gone.exists()),
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
