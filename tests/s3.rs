//! StoreBackend = "s3" against a real single-node Garage started by each test: whole-file
//! PUTs (one request and multipart), no overwrite, downloads with every answer of the local
//! store, DELETE, retention, checksums, resumable uploads completed into the bucket, the
//! metrics and health of the bucket, and an unreachable store.

#![cfg(feature = "s3")]

mod common;
#[path = "common/redis.rs"]
mod redis_fixture;

use common::garage::{self, Garage};
use common::{TestServer, client, payload};
use reqwest::StatusCode;

/// Whether, within 10 s, no multipart upload is under way in the bucket any more (aborts run
/// in the background).
async fn no_uploads_left(garage: &Garage) -> bool {
    for _ in 0..100 {
        if garage.multipart_uploads("").await.is_empty() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_head_and_no_overwrite_in_the_bucket() {
    let garage = Garage::start();
    let server = TestServer::start(&garage.toml("files"));
    let http = client();
    let small = payload(10_000, 61);
    let r = http
        .put(server.signed_v("a/photo.jpg", "a/photo.jpg", 10_000))
        .header("content-type", "image/jpeg")
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", server.log());
    assert_eq!(garage.objects("files/").await, ["files/a/photo.jpg"]);
    let r = http.get(server.url("a/photo.jpg")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.bytes().await.unwrap(), small);
    let again = http
        .put(server.signed_v("a/photo.jpg", "a/photo.jpg", 10_000))
        .body(vec![b'x'; 10_000])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::CONFLICT);
    let r = http.get(server.url("a/photo.jpg")).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), small, "the first file stays");

    // An empty file (Garage refuses an empty part: it is one PutObject at the commit).
    let r = http
        .put(server.signed_v("a/empty.txt", "a/empty.txt", 0))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", server.log());
    let r = http.get(server.url("a/empty.txt")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "0");
    let again = http
        .put(server.signed_v("a/empty.txt", "a/empty.txt", 0))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        StatusCode::CONFLICT,
        "an empty file is not overwritten either"
    );
}

/// A body larger than one part (5 MiB here) goes up as a multipart upload, streamed; every
/// download answer of the local store holds: exact length, ranges across parts, ETag and 304,
/// If-Range, attachment headers for other types.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_uploads_and_every_download_answer() {
    let garage = Garage::start();
    let server = TestServer::start(&garage.toml(""));
    let http = client();
    let big = payload(12 << 20, 62);
    let path = "big/archive.zip";
    let r = http
        .put(server.signed_v(path, path, big.len() as u64))
        .header("content-type", "application/zip")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", server.log());
    assert!(
        garage.multipart_uploads("").await.is_empty(),
        "completed, none left under way"
    );

    let head = http.head(server.url(path)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], (12u64 << 20).to_string().as_str());
    assert_eq!(head.headers()["accept-ranges"], "bytes");
    assert!(
        head.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with("attachment"),
        "a zip is an attachment"
    );
    let etag = head.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with('"'), "{etag}");

    let r = http.get(server.url(path)).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap(), big, "the whole file, byte for byte");
    let (start, end) = ((5 << 20) - 100, (5 << 20) + 100);
    let r = http
        .get(server.url(path))
        .header("range", format!("bytes={start}-{end}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes {start}-{end}/{}", big.len()).as_str()
    );
    assert_eq!(r.bytes().await.unwrap(), big[start..=end], "a range across two parts");
    let r = http
        .get(server.url(path))
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), big[big.len() - 10..]);
    let r = http
        .get(server.url(path))
        .header("range", format!("bytes={}-", big.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    let r = http
        .get(server.url(path))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    let r = http
        .get(server.url(path))
        .header("range", "bytes=0-9")
        .header("if-range", "\"another\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "If-Range with another ETag: the whole file");
    assert_eq!(r.bytes().await.unwrap().len(), big.len());
    let r = http.get(server.url("big/none.zip")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

/// Of racing PUTs to one path exactly one gets 201, the others 409, and the file is the
/// winner's, whole (Garage ignores If-None-Match: *, so this is the shared lock's doing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_puts_give_one_201() {
    let garage = Garage::start();
    let server = TestServer::start(&garage.toml(""));
    let bodies: Vec<Vec<u8>> = (0..6).map(|i| payload(300_000, 70 + i)).collect();
    let url = server.signed_v("race/one.bin", "race/one.bin", 300_000);
    let puts = bodies.iter().map(|body| {
        let (http, url, body) = (client(), url.clone(), body.clone());
        tokio::spawn(async move { http.put(url).body(body).send().await.unwrap().status() })
    });
    let mut statuses = Vec::new();
    for put in puts {
        statuses.push(put.await.unwrap());
    }
    let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    let conflicts = statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count();
    assert_eq!((created, conflicts), (1, 5), "{statuses:?}\n{}", server.log());
    let stored = client()
        .get(server.url("race/one.bin"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(bodies.iter().any(|b| *b == stored), "one whole body, not a mix");
    assert!(
        no_uploads_left(&garage).await,
        "the losers' multipart uploads are aborted"
    );
}

/// A PUT overtaken mid-body by another PUT of its path (through a second instance without
/// Redis, so no shared lock) gets 409 and the winner's file stays. Garage drops a key's
/// other multipart uploads when one completes: the loser's next part finds its upload gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_overtaken_mid_body_gets_409() {
    let garage = Garage::start();
    let a = TestServer::start(&garage.toml(""));
    let b = TestServer::start(&garage.toml(""));
    let path = "race/slow.bin";
    let len = 6usize << 20;
    let slow = payload(len, 131);
    let url = a.signed_v(path, path, len as u64);
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {len}\r\n\r\n",
        a.target(&url),
        a.addr
    );
    let mut stream = std::net::TcpStream::connect(a.addr).unwrap();
    use std::io::Write;
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&slow[..5 << 20]).unwrap();
    let s3 = garage.client();
    let mut first_part_in = false;
    for _ in 0..200 {
        let uploads = s3.list_multipart_uploads().bucket(garage::BUCKET).send().await.unwrap();
        if let Some(id) = uploads.uploads().first().and_then(|u| u.upload_id()) {
            let parts = s3
                .list_parts()
                .bucket(garage::BUCKET)
                .key(path)
                .upload_id(id)
                .send()
                .await
                .unwrap();
            if !parts.parts().is_empty() {
                first_part_in = true;
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(first_part_in, "A's first part is in the bucket\n{}", a.log());

    let fast = payload(len, 132);
    let r = client()
        .put(b.signed_v(path, path, len as u64))
        .body(fast.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", b.log());

    let _ = stream.write_all(&slow[5 << 20..]);
    let answer =
        common::read_response(&mut stream, std::time::Duration::from_secs(20)).expect("A answers the overtaken PUT");
    assert_eq!(answer.status, 409, "{}", a.log());
    let got = client().get(a.url(path)).send().await.unwrap().bytes().await.unwrap();
    assert!(got == fast, "the winner's file, whole");
    assert!(
        no_uploads_left(&garage).await,
        "{:?}",
        garage.multipart_uploads("").await
    );
}

/// A PUT whose client goes away leaves nothing at its path and no multipart upload behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_off_put_leaves_nothing() {
    let garage = Garage::start();
    let server = TestServer::start(&garage.toml(""));
    for (path, len, sent) in [
        ("cut/small.bin", 100_000usize, 40_000usize),
        ("cut/big.bin", 8 << 20, 6 << 20),
    ] {
        let data = payload(len, 80);
        let url = server.signed_v(path, path, len as u64);
        let head = format!(
            "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {len}",
            server.target(&url),
            server.addr
        );
        let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
        use std::io::Write;
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(b"\r\n\r\n").unwrap();
        stream.write_all(&data[..sent]).unwrap();
        drop(stream);
        server.wait_for_access("PUT", &format!("/upload/{path}"), std::time::Duration::from_secs(10));
        let r = client().get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
    }
    assert!(
        no_uploads_left(&garage).await,
        "aborted: {:?}",
        garage.multipart_uploads("").await
    );
    assert!(garage.objects("").await.is_empty(), "no object at all");
}

/// Metronome's DELETE removes the object; retention lists the bucket and deletes the oldest
/// files over MaxRetentionSize; the store gauges count the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_and_retention_in_the_bucket() {
    let garage = Garage::start();
    let server = TestServer::start(&format!(
        "{}RetentionPolicyEnabled = true\nMaxRetentionSize = 150000\nCleanupInterval = \"1s\"\n",
        garage.toml("r")
    ));
    let http = client();
    let put = |path: &'static str, seed: u64| {
        let req = http
            .put(server.signed_v(path, path, 60_000))
            .body(payload(60_000, seed));
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(put("d/gone.bin", 90).await, StatusCode::CREATED);
    let token = hmac_file_server::auth::sign_delete(&common::secret(), "d/gone.bin", &common::secret());
    let r = http
        .delete(format!("{}?token={token}", server.url("d/gone.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(garage.objects("r/").await.is_empty(), "the object is gone");
    let r = http
        .delete(format!("{}?token={token}", server.url("d/gone.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // Objects carry their time in whole seconds: one second between them orders them.
    assert_eq!(put("old/a.bin", 91).await, StatusCode::CREATED);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(put("new/b.bin", 92).await, StatusCode::CREATED);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(put("new/c.bin", 93).await, StatusCode::CREATED);
    let mut left = Vec::new();
    for _ in 0..100 {
        left = garage.objects("r/").await;
        if left.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        left,
        ["r/new/b.bin", "r/new/c.bin"],
        "the oldest went:\n{}",
        server.log()
    );
    assert!(server.log().contains("retention deleted a file"));
}

/// ChecksumVerification on the bucket: a matching digest stores the file and GET and HEAD
/// answer its Repr-Digest (kept in a sidecar object); a wrong one stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checksums_on_the_bucket() {
    use base64::Engine;
    use sha2::Digest;
    let garage = Garage::start();
    let server = TestServer::start(&format!("{}ChecksumVerification = true\n", garage.toml("")));
    let http = client();
    let body = payload(70_000, 94);
    let field = format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&body))
    );
    let r = http
        .put(server.signed_v("sum/ok.bin", "sum/ok.bin", 70_000))
        .header("repr-digest", &field)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", server.log());
    assert_eq!(r.headers()["repr-digest"], field.as_str());
    for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
        let r = http
            .request(method.clone(), server.url("sum/ok.bin"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["repr-digest"], field.as_str(), "{method}");
    }
    let r = http
        .put(server.signed_v("sum/bad.bin", "sum/bad.bin", 70_000))
        .header("repr-digest", &field)
        .body(payload(70_000, 95))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        client().get(server.url("sum/bad.bin")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert!(no_uploads_left(&garage).await, "its multipart upload is aborted");

    let empty = format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(b""))
    );
    let r = http
        .put(server.signed_v("sum/empty.bin", "sum/empty.bin", 0))
        .header("repr-digest", &empty)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", server.log());
    let r = http.head(server.url("sum/empty.bin")).send().await.unwrap();
    assert_eq!(r.headers()["repr-digest"], empty.as_str(), "an empty file's digest too");
}

/// tus and session uploads on an S3 backend: their bytes wait in the bucket as a multipart
/// upload (parts of S3PartSize and a tail) and become the file, whole, when complete; a
/// whole PUT with X-Session-Token that breaks off keeps every byte that came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumable_uploads_complete_into_the_bucket() {
    let garage = Garage::start();
    let server = TestServer::start(&format!("{}BufferSize = 4096\n", garage.toml("")));
    let http = client();
    let data = payload(7 << 20, 96);
    let len = data.len() as u64;
    let r = http
        .post(server.signed_v("tus/big.bin", "tus/big.bin", len))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", len.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = format!("{}{}", server.base, r.headers()["location"].to_str().unwrap());
    for (start, end) in [(0, 3 << 20), (3 << 20, data.len())] {
        let r = http
            .patch(&location)
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", start.to_string())
            .body(data[start..end].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", server.log());
    }
    assert_eq!(garage.objects("").await, ["tus/big.bin"]);
    let got = http
        .get(server.url("tus/big.bin"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got, data);

    // A session PUT with Content-Range finishes an upload into the bucket too.
    let total = 200_000u64;
    let session = payload(total as usize, 97);
    let url = server.signed_v("sess/s.bin", "sess/s.bin", total);
    let token = "s3-session-token-0123456789";
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {total}\r\nX-Session-Token: {token}",
        server.target(&url),
        server.addr
    );
    {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(b"\r\n\r\n").unwrap();
        stream.write_all(&session[..50_000]).unwrap();
    }
    server.wait_for_access("PUT", "/upload/sess/s.bin", std::time::Duration::from_secs(10));
    let r = http.head(&url).header("x-session-token", token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "kept for a resume:\n{}", server.log());
    assert_eq!(r.headers()["upload-offset"], "50000", "every byte that came");
    let r = http
        .put(&url)
        .header("x-session-token", token)
        .header("content-range", format!("bytes 50000-{}/{total}", total - 1))
        .body(session[50_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", server.log());
    let got = http
        .get(server.url("sess/s.bin"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got, session);
    assert!(no_uploads_left(&garage).await, "no multipart upload left behind");
    let mut objects = garage.objects("").await;
    objects.sort();
    assert_eq!(objects, ["sess/s.bin", "tus/big.bin"], "no partial object or tail left");
}

/// /health covers the bucket; the S3 requests are counted by operation; with the store
/// down, uploads and downloads answer 503 with Retry-After and /health 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_an_unreachable_store() {
    let mut garage = Garage::start();
    let server = TestServer::start(&garage.toml(""));
    let http = client();
    let metrics = server.metrics_addr();
    let health = format!("http://{metrics}/health");
    assert_eq!(http.get(&health).send().await.unwrap().status(), StatusCode::OK);
    let r = http
        .put(server.signed_v("m/a.bin", "m/a.bin", 1000))
        .body(payload(1000, 98))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let text = server.metrics_text();
    // A small body on Garage: looked for under the lock (not there), then one PutObject.
    assert!(text.contains("hmac_file_server_s3_requests_total{operation=\"HeadObject\",outcome=\"not_found\"}"));
    for operation in ["PutObject", "HeadBucket"] {
        let line = format!("hmac_file_server_s3_requests_total{{operation=\"{operation}\",outcome=\"ok\"}}");
        assert!(text.contains(&line), "no {line} in:\n{text}");
    }
    assert!(text.contains("hmac_file_server_s3_request_duration_seconds_bucket{operation=\"PutObject\""));

    garage.stop();
    let r = http
        .put(server.signed_v("m/b.bin", "m/b.bin", 1000))
        .body(payload(1000, 99))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{}", server.log());
    assert!(r.headers().contains_key("retry-after"));
    let r = http.get(server.url("m/a.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        http.get(&health).send().await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(server.log().contains("S3 request failed"), "the log names the failure");
}

fn capabilities_logged(log: &str) -> bool {
    log.contains("store opened capabilities=backend=s3 no_overwrite=shared_lock")
}

/// Garage ignores If-None-Match: *, and the start-up probe finds that out and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_finds_what_garage_honours() {
    let garage = Garage::start();
    let server = TestServer::start(&garage.toml("p"));
    assert!(capabilities_logged(&server.log()), "{}", server.log());
    assert!(garage.objects("p/").await.is_empty(), "the probe object is removed");
}

/// The S3 store of a server configured for `garage` with S3Prefix `prefix`, in this process
/// (with the embedded state and a local folder for gathering parts, in the returned folder).
async fn connect_in_process(
    garage: &Garage,
    prefix: &str,
) -> (tempfile::TempDir, hmac_file_server::store::s3::S3Store) {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("c.toml");
    std::fs::write(
        &config_file,
        format!(
            "Secret = \"{}\"\nStoreDir = \"{}\"\n{}",
            common::SECRET,
            dir.path().display(),
            garage.toml(prefix)
        ),
    )
    .unwrap();
    let config = hmac_file_server::config::Config::load(&hmac_file_server::config::Sources {
        file: Some(config_file),
        ..Default::default()
    })
    .unwrap();
    let state = hmac_file_server::state::UploadState::Embedded(
        hmac_file_server::state::embedded::EmbeddedState::open(&dir.path().join("state")).unwrap(),
    );
    let local = hmac_file_server::store::LocalStore::open(
        dir.path(),
        "upload",
        4096,
        hmac_file_server::store::RetryPolicy::NONE,
    )
    .unwrap();
    let store =
        hmac_file_server::store::s3::S3Store::connect(config.s3.as_ref().unwrap(), std::sync::Arc::new(state), local)
            .await
            .unwrap();
    (dir, store)
}

/// The cleanup pass aborts multipart uploads under the prefix older than UploadExpiry (left
/// by a crash), and leaves others alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_aborts_stale_multipart_uploads() {
    let garage = Garage::start();
    let client = garage.client();
    for key in ["sw/stale.bin", "other/stale.bin"] {
        client
            .create_multipart_upload()
            .bucket(garage::BUCKET)
            .key(key)
            .send()
            .await
            .unwrap();
    }
    let (_dir, store) = connect_in_process(&garage, "sw").await;
    assert_eq!(
        store.sweep_staging(std::time::Duration::from_secs(3600)).await.unwrap(),
        0,
        "young"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(store.sweep_staging(std::time::Duration::ZERO).await.unwrap(), 1);
    assert_eq!(
        garage.multipart_uploads("").await,
        ["other/stale.bin"],
        "only under the prefix"
    );
}

/// An object store that is down when the server starts does not stop it: uploads answer 503
/// with Retry-After, /health 503, and once the store is back the server uses it without a
/// restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_down_at_start_then_back() {
    let mut garage = Garage::start();
    garage.stop();
    let server = TestServer::start(&garage.toml(""));
    assert!(
        server.log().contains("THE OBJECT STORE IS NOT REACHABLE"),
        "{}",
        server.log()
    );
    let http = client();
    let put = || {
        let req = http
            .put(server.signed_v("back/a.bin", "back/a.bin", 5000))
            .body(payload(5000, 100));
        async move { req.send().await.unwrap() }
    };
    let r = put().await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(r.headers().contains_key("retry-after"));
    garage.restart();
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..100 {
        status = put().await.status();
        if status != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, StatusCode::CREATED, "{}", server.log());
    let got = http
        .get(server.url("back/a.bin"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got, payload(5000, 100));
}

/// Two instances with no shared folder, one Redis and one bucket act as one: a tus upload
/// begun on one is continued and finished on the other, a session upload broken off on one is
/// resumed on the other, racing PUTs through both give one 201, and an instance killed in the
/// middle of a PATCH leaves nothing partial visible and the upload resumable on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_without_a_shared_folder_act_as_one() {
    let garage = Garage::start();
    let redis = redis_fixture::RedisServer::start();
    let extra = format!(
        "{}{}BufferSize = 4096\nReadTimeout = 120\n",
        garage.toml("multi"),
        redis.toml()
    );
    let a = TestServer::start(&extra);
    let b = TestServer::start(&extra);
    assert_ne!(a.store(), b.store(), "no shared folder");
    let http = client();

    // tus: begun on A, continued and finished on B.
    let data = payload(12 << 20, 110);
    let len = data.len() as u64;
    let r = http
        .post(a.signed_v("m/tus.bin", "m/tus.bin", len))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", len.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let patch = |server: &TestServer, start: usize, end: usize| {
        let req = http
            .patch(format!("{}{location}", server.base))
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", start.to_string())
            .body(data[start..end].to_vec());
        async move { req.send().await.unwrap() }
    };
    assert_eq!(
        patch(&a, 0, 7 << 20).await.status(),
        StatusCode::NO_CONTENT,
        "{}",
        a.log()
    );
    let r = http
        .head(format!("{}{location}", b.base))
        .header("tus-resumable", "1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["upload-offset"],
        (7u64 << 20).to_string().as_str(),
        "B sees A's bytes"
    );
    assert_eq!(
        patch(&b, 7 << 20, data.len()).await.status(),
        StatusCode::NO_CONTENT,
        "{}",
        b.log()
    );
    for server in [&a, &b] {
        let got = http
            .get(server.url("m/tus.bin"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert!(got == data, "served whole by both");
    }

    // Session: broken off on A, resumed on B.
    let total = 300_000u64;
    let session = payload(total as usize, 111);
    let token = "multi-s3-session-0123456789";
    let url_a = a.signed_v("m/sess.bin", "m/sess.bin", total);
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {total}\r\nX-Session-Token: {token}",
        a.target(&url_a),
        a.addr
    );
    {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(a.addr).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(b"\r\n\r\n").unwrap();
        stream.write_all(&session[..120_000]).unwrap();
    }
    a.wait_for_access("PUT", "/upload/m/sess.bin", std::time::Duration::from_secs(10));
    let url_b = b.signed_v("m/sess.bin", "m/sess.bin", total);
    let r = http.head(&url_b).header("x-session-token", token).send().await.unwrap();
    assert_eq!(r.headers()["upload-offset"], "120000", "B sees what A kept");
    let r = http
        .put(&url_b)
        .header("x-session-token", token)
        .header("content-range", format!("bytes 120000-{}/{total}", total - 1))
        .body(session[120_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", b.log());
    let got = http
        .get(a.url("m/sess.bin"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got, session);

    // Racing PUTs through both instances: one 201.
    let bodies: Vec<Vec<u8>> = (0..6).map(|i| payload(200_000, 120 + i)).collect();
    let puts = bodies.iter().enumerate().map(|(i, body)| {
        let server = if i % 2 == 0 { &a } else { &b };
        let req = client()
            .put(server.signed_v("m/race.bin", "m/race.bin", 200_000))
            .body(body.clone());
        tokio::spawn(async move { req.send().await.unwrap().status() })
    });
    let mut statuses = Vec::new();
    for put in puts.collect::<Vec<_>>() {
        statuses.push(put.await.unwrap());
    }
    let created = statuses.iter().filter(|s| **s == StatusCode::CREATED).count();
    assert_eq!(created, 1, "{statuses:?}");
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::CREATED || *s == StatusCode::CONFLICT)
    );

    // kill -9 of A in the middle of a PATCH: nothing visible, B continues.
    let data = payload(11 << 20, 130);
    let len = data.len() as u64;
    let r = http
        .post(a.signed_v("m/killed.bin", "m/killed.bin", len))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", len.to_string())
        .send()
        .await
        .unwrap();
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let head_patch = format!(
        "PATCH {location} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: 1.0.0\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: 0\r\nContent-Length: {len}",
        a.addr
    );
    let mut stream = std::net::TcpStream::connect(a.addr).unwrap();
    {
        use std::io::Write;
        stream.write_all(head_patch.as_bytes()).unwrap();
        stream.write_all(b"\r\n\r\n").unwrap();
        stream.write_all(&data[..6 << 20]).unwrap();
    }
    // One part (5 MiB) went up and was checkpointed once a second passed.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    {
        use std::io::Write;
        stream.write_all(&data[6 << 20..(6 << 20) + 65_536]).unwrap();
    }
    let head_b = || {
        let req = http
            .head(format!("{}{location}", b.base))
            .header("tus-resumable", "1.0.0");
        async move { req.send().await.unwrap() }
    };
    let mut offset = 0u64;
    for _ in 0..100 {
        offset = head_b().await.headers()["upload-offset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        if offset > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(offset, 5 << 20, "the uploaded part is durable and seen by B");
    a.signal("KILL");
    drop(stream);
    let r = http.get(b.url("m/killed.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "nothing partial is visible");
    // B takes the upload over once A's lock has expired (10 s at most).
    let mut status = StatusCode::LOCKED;
    for _ in 0..30 {
        let r = http
            .patch(format!("{}{location}", b.base))
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset.to_string())
            .body(data[offset as usize..].to_vec())
            .send()
            .await
            .unwrap();
        status = r.status();
        if status != StatusCode::LOCKED {
            break;
        }
    }
    assert_eq!(status, StatusCode::NO_CONTENT, "{}", b.log());
    let got = http
        .get(b.url("m/killed.bin"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(got == data, "whole after the takeover");
}

/// `migrate-to-s3` copies a local store into the bucket: content types, digests, an empty
/// file and a multipart-sized one, byte for byte; a different object already at a key is a
/// conflict left alone (exit 1); a second run copies only what is missing (exit 0); the
/// server then serves every file from the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_to_s3_copies_the_local_store() {
    use base64::Engine;
    use sha2::Digest;
    let garage = Garage::start();
    let local = TestServer::start("ChecksumVerification = true\n");
    let http = client();
    let photo = payload(10_000, 140);
    let big = payload((12 << 20) + 3, 141);
    let summed = payload(70_000, 142);
    let other = payload(1000, 143);
    let r = common::put_typed(
        &http,
        local.signed_v2("m/photo.jpg", "m/photo.jpg", 10_000, "image/jpeg"),
        "image/jpeg",
        photo.clone(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    for (path, body) in [
        ("m/big.bin", &big),
        ("m/deep/er/empty.txt", &Vec::new()),
        ("m/other.bin", &other),
    ] {
        let r = http
            .put(local.signed_v(path, path, body.len() as u64))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{path}");
    }
    let field = format!(
        "sha-256=:{}:",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&summed))
    );
    let r = http
        .put(local.signed_v("m/sum.bin", "m/sum.bin", 70_000))
        .header("repr-digest", &field)
        .body(summed.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let dir = local.stop_keep_dir("TERM");

    // Another object already at one key.
    garage
        .client()
        .put_object()
        .bucket(garage::BUCKET)
        .key("m/other.bin")
        .body(b"not it".to_vec().into())
        .send()
        .await
        .unwrap();

    let mut config: toml::Table = std::fs::read_to_string(dir.path().join("config.toml"))
        .unwrap()
        .parse()
        .unwrap();
    config.extend(garage.toml("").parse::<toml::Table>().unwrap());
    let s3_config = dir.path().join("s3.toml");
    std::fs::write(&s3_config, toml::to_string(&config).unwrap()).unwrap();
    let migrate = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hmac-file-server"))
            .arg("-config")
            .arg(&s3_config)
            .arg("migrate-to-s3")
            .output()
            .unwrap()
    };
    let first = migrate();
    let out = String::from_utf8_lossy(&first.stdout).to_string();
    assert_eq!(
        first.status.code(),
        Some(1),
        "{out}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        out.contains("CONFLICT m/other.bin: 1000 bytes here, another object of 6 bytes"),
        "{out}"
    );
    assert!(out.contains("4 files copied"), "{out}");
    assert!(out.contains("1 conflicts, 0 failed"), "{out}");

    garage
        .client()
        .delete_object()
        .bucket(garage::BUCKET)
        .key("m/other.bin")
        .send()
        .await
        .unwrap();
    let second = migrate();
    let out = String::from_utf8_lossy(&second.stdout).to_string();
    assert_eq!(
        second.status.code(),
        Some(0),
        "{out}\n{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        out.contains("1 files copied (1000 bytes), 4 already in the bucket"),
        "{out}"
    );
    assert!(no_uploads_left(&garage).await);

    let server = TestServer::start_with_config(dir, &s3_config);
    assert!(server.log().contains("files in the bucket"), "{}", server.log());
    for (path, body) in [
        ("m/photo.jpg", &photo),
        ("m/big.bin", &big),
        ("m/deep/er/empty.txt", &Vec::new()),
        ("m/other.bin", &other),
        ("m/sum.bin", &summed),
    ] {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        if path == "m/photo.jpg" {
            assert_eq!(r.headers()["content-type"], "image/jpeg");
        }
        if path == "m/sum.bin" {
            assert_eq!(r.headers()["repr-digest"], field.as_str(), "the digest came along");
        }
        assert!(r.bytes().await.unwrap() == *body, "{path} byte for byte");
    }
    // Served from the bucket, not from the local files left behind.
    std::fs::remove_dir_all(server.store().join("upload/m")).unwrap();
    let r = http.get(server.url("m/big.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

/// tus concatenation on the bucket: two partial uploads, one larger than a part and one of a
/// few bytes, become one file, streamed out of their multipart uploads in the final's order;
/// nothing of the parts is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tus_concatenation_in_the_bucket() {
    let garage = Garage::start();
    let server = TestServer::start(&garage.toml(""));
    let http = client();
    let path = "cat/joined.bin";
    let slot = server.signed_v3(path, path, common::now_unix() + 3600);
    let a = payload((6 << 20) + 5, 150);
    let b = payload(1000, 151);
    let mut locations = Vec::new();
    for part in [&a, &b] {
        let r = http
            .post(&slot)
            .header("tus-resumable", "1.0.0")
            .header("upload-concat", "partial")
            .header("upload-length", part.len().to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{}", server.log());
        let location = r.headers()["location"].to_str().unwrap().to_string();
        let r = http
            .patch(format!("{}{location}", server.base))
            .header("tus-resumable", "1.0.0")
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", "0")
            .body(part.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{}", server.log());
        locations.push(location);
    }
    let r = http
        .post(&slot)
        .header("tus-resumable", "1.0.0")
        .header("upload-concat", format!("final;{} {}", locations[1], locations[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", server.log());
    let got = http.get(server.url(path)).send().await.unwrap().bytes().await.unwrap();
    let mut want = b.clone();
    want.extend_from_slice(&a);
    assert!(got == want, "b then a, byte for byte");
    assert_eq!(garage.objects("").await, [path], "no part, no tail left");
    assert!(
        no_uploads_left(&garage).await,
        "{:?}",
        garage.multipart_uploads("").await
    );
}

/// Keys beyond ASCII (accents, Cyrillic, spaces, `+`, `%`) arrive in the bucket as the same
/// UTF-8 key, not mangled, and come back by GET with their content type.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_keys_round_trip() {
    let garage = Garage::start();
    let server = TestServer::start(&garage.toml("p/"));
    let http = client();
    let decoded = "ü/файл 1+2 %.txt";
    let raw = common::encode_path(decoded);
    let body = payload(3000, 160);
    let r = common::put_typed(&http, server.signed_v(&raw, decoded, 3000), "text/plain", body.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", server.log());
    assert_eq!(
        garage.objects("p/").await,
        [format!("p/{decoded}")],
        "the key as sent, in UTF-8"
    );
    let r = http.get(server.url(&raw)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/plain");
    assert!(r.bytes().await.unwrap() == body);
}

/// With Redis down, files in the bucket are still served; an upload, which needs the shared
/// commit lock on a store like Garage, gets 503 with Retry-After and stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_go_on_while_redis_is_down() {
    let garage = Garage::start();
    let mut redis = redis_fixture::RedisServer::start();
    let server = TestServer::start(&format!("{}{}", garage.toml(""), redis.toml()));
    let http = client();
    let body = payload(400_000, 161);
    let r = http
        .put(server.signed_v("r/kept.bin", "r/kept.bin", 400_000))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", server.log());
    redis.stop();
    let r = http.get(server.url("r/kept.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", server.log());
    assert!(r.bytes().await.unwrap() == body);
    let r = http
        .get(server.url("r/kept.bin"))
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), body[10..20]);
    let r = http
        .put(server.signed_v("r/new.bin", "r/new.bin", 1000))
        .body(payload(1000, 162))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{}", server.log());
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(garage.objects("").await, ["r/kept.bin"], "nothing new in the bucket");
    assert!(no_uploads_left(&garage).await);
}

/// An unfinished upload's appends shorter than a part write only its tail object: the sweep
/// counts them as touches (it used to age the upload by its multipart upload's start and
/// parts alone, and swept an upload a client was still appending to once UploadExpiry had
/// passed since its creation). What unfinished uploads hold follows this instance's own
/// appends and removals between two counts of the bucket (MaxUnfinishedSize is checked on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_uploads_touched_by_their_tails_are_not_swept() {
    use bytes::Bytes;
    use hmac_file_server::store::{Hashing, PartialHandle};
    use std::time::Duration;

    let garage = Garage::start();
    let (_dir, store) = connect_in_process(&garage, "t/").await;
    let id = "0123456789abcdef0123456789abcdef";
    let append = |handle: PartialHandle, offset: u64, seed: u64| {
        let store = store.clone();
        async move {
            let PartialHandle::S3(handle) = handle else {
                panic!("an S3 handle")
            };
            let mut appender = store.append_partial(id, &handle, offset, Hashing::NONE).await.unwrap();
            appender.write(Bytes::from(payload(1000, seed))).await.unwrap();
            appender.persist().await.unwrap()
        }
    };
    let handle = store.create_partial(id).await.unwrap();
    let (len, handle) = append(handle, 0, 1).await;
    assert_eq!(len, 1000);
    let usage = store.partials_usage().await.unwrap();
    assert_eq!((usage.uploads, usage.bytes), (1, 1000), "counted from the bucket");
    let (len, handle) = append(handle, len, 2).await;
    assert_eq!(len, 2000);
    let usage = store.partials_usage().await.unwrap();
    assert_eq!(
        (usage.uploads, usage.bytes),
        (1, 2000),
        "this instance's append counted at once"
    );

    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (len, handle) = append(handle, len, 3).await;
    assert_eq!(len, 3000);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // Created 3.5 s ago, no part, its tail written 1.3 s ago.
    assert_eq!(
        store.sweep_partials(Duration::from_secs(3)).await.unwrap(),
        Vec::<String>::new(),
        "an upload appended to within the age is not swept"
    );
    assert_eq!(garage.multipart_uploads("t/").await.len(), 1);

    // Another upload, removed: the count follows.
    let other = "fedcba9876543210fedcba9876543210";
    let PartialHandle::S3(h) = store.create_partial(other).await.unwrap() else {
        unreachable!()
    };
    let usage = store.partials_usage().await.unwrap();
    assert_eq!((usage.uploads, usage.bytes), (2, 3000));
    store.remove_partial(other, &h).await.unwrap();
    let usage = store.partials_usage().await.unwrap();
    assert_eq!((usage.uploads, usage.bytes), (1, 3000), "a removal counted at once");

    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert_eq!(
        store.sweep_partials(Duration::from_secs(3)).await.unwrap(),
        [id],
        "untouched for 3 s"
    );
    assert!(garage.multipart_uploads("t/").await.is_empty());
    assert!(garage.objects("t/").await.is_empty(), "its tails went with it");
    drop(handle);
}
