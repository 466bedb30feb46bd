//! Health: `/health` on the metrics listener follows the writability of the store.

use reqwest::StatusCode;

use crate::common::{TestServer, client};
use crate::helpers::{metrics_addr, put};

#[tokio::test]
async fn health_follows_the_store() {
    let server = TestServer::start("");
    let http = client();
    let health = format!("http://{}/health", metrics_addr(&server.log()));
    let r = http.get(&health).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap().trim(), "ok");

    // Make the store unwritable. chmod does not stop root, so the temporary folder is
    // replaced by a regular file, which stops everyone.
    let tmp = server.store().join(".hmac-file-server/tmp");
    assert!(tmp.is_dir(), "{} exists", tmp.display());
    std::fs::remove_dir_all(&tmp).unwrap();
    std::fs::write(&tmp, b"in the way").unwrap();
    let r = http.get(&health).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "store not writable");
    let reason = r.text().await.unwrap();
    let lower = reason.to_lowercase();
    assert!(
        lower.trim() != "ok" && (lower.contains("store") || lower.contains("writ")),
        "503 says why: {reason:?}"
    );

    std::fs::remove_file(&tmp).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    let r = http.get(&health).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "writable again");
    assert_eq!(r.text().await.unwrap().trim(), "ok");
    assert_eq!(server.temporaries(), 0, "the probe leaves nothing behind");
}

/// The probe must cover where finished files go, not only the temporary folder: with the
/// upload folder unusable every PUT fails, so the store is not writable.
#[tokio::test]
async fn health_covers_the_upload_folder() {
    let server = TestServer::start("");
    let http = client();
    let health = format!("http://{}/health", metrics_addr(&server.log()));
    assert_eq!(http.get(&health).send().await.unwrap().status(), StatusCode::OK);
    let files = server.files_dir();
    std::fs::remove_dir_all(&files).unwrap();
    std::fs::write(&files, b"in the way").unwrap();
    let put_status = put(&http, &server.signed_v("hc/x.bin", "hc/x.bin", 1), b"x".to_vec())
        .await
        .status();
    assert!(!put_status.is_success(), "uploads fail now: {put_status}");
    let r = http.get(&health).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "uploads fail ({put_status}) but /health says {:?}",
        r.text().await.unwrap()
    );
    std::fs::remove_file(&files).unwrap();
    std::fs::create_dir(&files).unwrap();
    assert_eq!(http.get(&health).send().await.unwrap().status(), StatusCode::OK);
    let r = put(&http, &server.signed_v("hc/x.bin", "hc/x.bin", 1), b"x".to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED, "uploads work again");
}
