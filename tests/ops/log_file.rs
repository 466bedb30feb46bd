//! LogFile, reopening on SIGHUP, and JSON log lines (LogFormat = "json").

use std::path::Path;
use std::time::Duration;

use hmac_file_server::auth;
use reqwest::StatusCode;

use crate::common::{client, secret, wait_until};
use crate::helpers::{Spawned, put, write_config};

/// The address in a `listening on ADDR` log line (text or JSON).
fn listen_addr(log: &str) -> Option<String> {
    let start = log.find("listening on ")? + "listening on ".len();
    let addr: String = log[start..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    (!addr.is_empty()).then_some(addr)
}

#[tokio::test]
async fn log_file_is_reopened_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("hfs.log");
    let config = write_config(dir.path(), &format!("LogFile = \"{}\"", log_path.display()));
    let server = Spawned::start(&config, None);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(20), || listen_addr(&read(&log_path)).is_some()),
        "no listening line in the log file; stderr:\n{}",
        server.stderr()
    );
    let base = format!("http://{}", listen_addr(&read(&log_path)).unwrap());
    let http = client();
    let r = http.get(format!("{base}/upload/lf/before")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        wait_until(Duration::from_secs(5), || read(&log_path)
            .contains("path=/upload/lf/before")),
        "access line in the log file:\n{}",
        read(&log_path)
    );

    let rotated = dir.path().join("hfs.log.1");
    std::fs::rename(&log_path, &rotated).unwrap();
    server.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(5), || read(&log_path).contains("reopened")),
        "a new file at the original path after SIGHUP; rotated:\n{}",
        read(&rotated)
    );
    let r = http.get(format!("{base}/upload/lf/after")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        wait_until(Duration::from_secs(5), || read(&log_path)
            .contains("path=/upload/lf/after")),
        "the new access line goes to the new file:\n{}",
        read(&log_path)
    );
    assert!(!read(&rotated).contains("/upload/lf/after"), "not to the rotated one");
    assert!(!read(&log_path).contains("/upload/lf/before"));
    assert!(
        !server.stderr().contains("/upload/lf/"),
        "access lines go to the file only:\n{}",
        server.stderr()
    );
}

#[tokio::test]
async fn json_log_lines_all_parse() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "LogFormat = \"json\"");
    let mut server = Spawned::start(&config, Some("debug,hyper=warn"));
    assert!(
        wait_until(Duration::from_secs(20), || listen_addr(&server.stderr()).is_some()),
        "did not start:\n{}",
        server.stderr()
    );
    let base = format!("http://{}", listen_addr(&server.stderr()).unwrap());
    let http = client();
    let t = auth::sign_v(&secret(), "j/a.txt", 5);
    let r = put(&http, &format!("{base}/upload/j/a.txt?v={t}"), b"hello".to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = put(
        &http,
        &format!("{base}/upload/j/b.txt?v={}", "00".repeat(32)),
        b"hello".to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http.get(format!("{base}/upload/j/a.txt")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(format!("{base}/upload/j/none")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(15)).expect("exits").success());

    let out = server.stderr();
    let mut statuses = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nall:\n{out}"));
        assert!(v.is_object(), "{line}");
        if v["fields"]["message"] == "request"
            && v["fields"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/upload/j/"))
            && let Some(s) = v["fields"]["status"].as_u64()
        {
            for key in ["client", "method", "path", "status", "bytes_in", "bytes_out", "ms"] {
                assert!(!v["fields"][key].is_null(), "access line without {key}: {line}");
            }
            statuses.push(s);
        }
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 201, 403, 404],
        "access lines with structured fields:\n{out}"
    );
}
