//! StoreBackend = "s3" against a real single-node Garage started by each test: whole-file
//! PUTs (one request and multipart), no overwrite, downloads with every answer of the local
//! store, DELETE, retention, checksums, resumable uploads completed into the bucket, the
//! metrics and health of the bucket, and an unreachable store.

mod common;
#[path = "common/garage.rs"]
mod garage;

use common::{TestServer, client, payload};
use garage::Garage;
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
