//! StateDir through the real binary: the embedded state (records of unfinished resumable
//! uploads, the ban list) lives where StateDir says, not under StoreDir, and `unban` finds it.

mod common;

use std::time::Duration;

use common::{TestServer, client, wait_until};
use reqwest::StatusCode;

#[tokio::test]
async fn embedded_state_lives_in_state_dir() {
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("state");
    let server = TestServer::start(&format!(
        "StateDir = \"{}\"\nBlockAfterFails = 1\nBlockDuration = 60\n",
        state_dir.display()
    ));
    let http = client();

    let r = http
        .post(server.signed_v("s/a.bin", "s/a.bin", 10))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "tus creation");
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let id = location.rsplit('/').next().unwrap();
    assert!(
        state_dir.join("uploads").join(format!("{id}.json")).is_file(),
        "the upload's record is in StateDir/uploads"
    );
    assert!(
        !server.store().join(".hmac-file-server/uploads").exists(),
        "and not under StoreDir"
    );

    let bad = format!("{}?v={}", server.url("s/b.bin"), "cd".repeat(32));
    let r = http.put(bad).body("x").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let bans = state_dir.join("bans.json");
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::read_to_string(&bans)
            .is_ok_and(|t| t.contains("127.0.0.1"))),
        "the ban is saved in StateDir/bans.json"
    );
    assert!(!server.store().join(".hmac-file-server/bans.json").exists());

    let unban = std::process::Command::new(env!("CARGO_BIN_EXE_hmac-file-server"))
        .arg("--config")
        .arg(server.dir.path().join("config.toml"))
        .args(["unban", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(unban.status.success(), "{unban:?}");
    assert!(
        String::from_utf8_lossy(&unban.stdout).contains(&bans.display().to_string()),
        "unban edits StateDir/bans.json: {unban:?}"
    );
    assert!(!std::fs::read_to_string(&bans).unwrap().contains("127.0.0.1"));
}
