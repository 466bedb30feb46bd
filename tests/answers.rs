//! SPEC §3 "Answers": one test (or more) per row of the table, through the real binary.
//! Status codes, what is (not) left in the store, what is logged, and the CORS headers, on
//! each store (local, and a Garage bucket) where the answer does not depend on a local disk.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    RawResponse, SECRET, TestServer, assert_cors_raw, assert_cors_reqwest, client, files_under, now_unix, payload,
    put_typed, read_response, secret, wait_until,
};
use hmac_file_server::auth;
use hmac_file_server::config::Secret;
use reqwest::{Method, StatusCode};

on_each_store!(
    put_with_v_token_is_201_and_stores_exact_bytes,
    put_with_v2_signs_the_content_type,
    put_with_metronome_token_is_like_v2,
    put_with_v3_valid_is_201_and_expired_is_403,
    highest_token_version_wins,
    missing_malformed_or_wrong_tokens_are_403_and_store_nothing,
    existing_file_is_409_and_untouched,
    chunked_put_without_length_is_411,
    put_without_length_or_body_is_zero_bytes,
    body_shorter_than_length_then_close_stores_nothing,
    body_longer_than_length_stores_only_the_signed_bytes,
    over_max_upload_size_is_413_before_the_body,
    bad_paths_are_refused_and_store_nothing_anywhere,
    other_methods_are_405_with_allow,
    options_on_any_path_without_token_is_2xx_with_cors,
    cors_headers_on_201_403_404_409_413,
    metronome_delete_with_default_delete_secret,
    metronome_delete_with_configured_delete_secret,
    banned_client_gets_429_with_retry_after,
    a_ban_lifts_after_auto_ban_time,
);

/// A raw PUT request with a Content-Length body and extra header lines (each ending in CRLF).
fn raw_put(target: &str, body: &[u8], extra_headers: &str) -> Vec<u8> {
    let mut r = format!(
        "PUT {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// The `v` token (hex) for a path and size.
fn v(path: &str, size: u64) -> String {
    auth::sign_v(&secret(), path, size)
}

/// The log lines (lower-cased) that mention `needle`, once `ready` holds for them (the log
/// is read from a pipe, so a line can arrive a little after the answer) or 10 s have passed.
fn log_lines_with(server: &TestServer, needle: &str, ready: impl Fn(&str) -> bool) -> String {
    let lines = || {
        server
            .log()
            .lines()
            .filter(|l| l.contains(needle))
            .collect::<Vec<_>>()
            .join("\n")
            .to_lowercase()
    };
    wait_until(Duration::from_secs(10), || ready(&lines()));
    lines()
}

/// Makes one more request and waits for its access-log line: everything logged before it is
/// then in `server.log()`.
fn log_barrier(server: &TestServer) {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let path = format!(
        "/upload/log-barrier/{}",
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let r = server.raw_one(format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes());
    assert_eq!(r.status, 404);
    server.wait_for_access("GET", &path, Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------
// PUT stored → 201, for every token kind
// ---------------------------------------------------------------------------------------

async fn put_with_v_token_is_201_and_stores_exact_bytes(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let body = payload(12_345, 7);
    let url = server.signed_v("v1/file%20one.bin", "v1/file one.bin", body.len() as u64);
    let put = put_typed(&http, &url, "image/png", body.clone()).await;
    assert_eq!(put.status(), StatusCode::CREATED);
    assert_eq!(server.stored("v1/file one.bin").unwrap(), body);
    // Locally the metadata is a sidecar beside the file; on S3 the object's own Content-Type
    // (a sidecar there only holds a SHA-256, with ChecksumVerification).
    match server.s3() {
        None => assert_eq!(server.sidecars(), 1, "metadata kept beside the file"),
        Some(s3) => {
            assert_eq!(
                s3.content_type("v1/file one.bin").as_deref(),
                Some("image/png"),
                "metadata kept with the object"
            );
            assert_eq!(server.sidecars(), 0, "no sidecar object without a digest");
        }
    }
    // application/octet-stream (every OMEMO upload) needs no sidecar: GET's default.
    let url = server.signed_v("v1/plain.bin", "v1/plain.bin", 3);
    assert_eq!(
        http.put(&url).body(vec![1, 2, 3]).send().await.unwrap().status(),
        StatusCode::CREATED
    );
    match server.s3() {
        None => assert_eq!(server.sidecars(), 1, "no sidecar for the default type"),
        Some(_) => assert_eq!(server.sidecars(), 0, "no sidecar for the default type"),
    }
    assert_eq!(server.temporaries(), 0);
}

async fn put_with_v2_signs_the_content_type(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let body = payload(2000, 1);
    let n = body.len() as u64;

    // With a Content-Type: signed as sent.
    let url = server.signed_v2("v2/a.jpg", "v2/a.jpg", n, "image/jpeg");
    let put = put_typed(&http, &url, "image/jpeg", body.clone()).await;
    assert_eq!(put.status(), StatusCode::CREATED, "v2 with image/jpeg");

    // Signed for another type than sent → 403.
    let url = server.signed_v2("v2/b.jpg", "v2/b.jpg", n, "image/jpeg");
    let put = put_typed(&http, &url, "image/png", body.clone()).await;
    assert_eq!(put.status(), StatusCode::FORBIDDEN, "v2 signs the content type");
    assert_eq!(server.stored("v2/b.jpg"), None);

    // Without a Content-Type: signed as application/octet-stream.
    let url = server.signed_v2("v2/c.bin", "v2/c.bin", n, "application/octet-stream");
    let put = http.put(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(
        put.status(),
        StatusCode::CREATED,
        "v2 without Content-Type signs application/octet-stream"
    );
    // …and not as "".
    let url = server.signed_v2("v2/d.bin", "v2/d.bin", n, "");
    let put = http.put(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(
        put.status(),
        StatusCode::FORBIDDEN,
        "absent Content-Type is not signed as \"\""
    );

    // Present but empty: signs "" (raw, so nothing fills the header in).
    let target = server.target(&server.signed_v2("v2/e.bin", "v2/e.bin", n, ""));
    let r = server.raw_one(&raw_put(&target, &body, "Content-Type:\r\n"));
    assert_eq!(r.status, 201, "empty Content-Type signs \"\"");
    let target = server.target(&server.signed_v2("v2/f.bin", "v2/f.bin", n, "application/octet-stream"));
    let r = server.raw_one(&raw_put(&target, &body, "Content-Type:\r\n"));
    assert_eq!(r.status, 403, "empty Content-Type is not application/octet-stream");

    let mut stored = server.stored_files();
    stored.sort();
    let expected: Vec<PathBuf> = ["v2/a.jpg", "v2/c.bin", "v2/e.bin"].iter().map(PathBuf::from).collect();
    assert_eq!(stored, expected);
    for name in &expected {
        assert_eq!(
            server.stored(name.to_str().unwrap()).unwrap(),
            body,
            "{}",
            name.display()
        );
    }
    assert_eq!(server.temporaries(), 0);
}

async fn put_with_metronome_token_is_like_v2(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let body = payload(777, 2);
    let n = body.len() as u64;
    let url = server.signed_token("mt/a.png", "mt/a.png", n, "image/png");
    let put = put_typed(&http, &url, "image/png", body.clone()).await;
    assert_eq!(put.status(), StatusCode::CREATED);
    let url = server.signed_token("mt/b.bin", "mt/b.bin", n, "application/octet-stream");
    let put = http.put(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED, "token without Content-Type");
    let url = server.signed_token("mt/c.png", "mt/c.png", n, "image/png");
    let put = put_typed(&http, &url, "image/gif", body.clone()).await;
    assert_eq!(put.status(), StatusCode::FORBIDDEN, "token signs the content type");
    // A `v`-style message under the `token` name is refused.
    let url = format!("{}?token={}", server.url("mt/d.bin"), v("mt/d.bin", n));
    let put = http.put(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::FORBIDDEN, "token is not v");
    let get = http.get(server.url("mt/a.png")).send().await.unwrap();
    assert_eq!(get.headers()["content-type"], "image/png");
    assert_eq!(get.bytes().await.unwrap(), body);
    assert_eq!(server.stored_files().len(), 2);
}

async fn put_with_v3_valid_is_201_and_expired_is_403(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let body = payload(3000, 3);
    let decoded = "v3dir/my photo.jpg";
    let raw = "v3dir/my%20photo.jpg";

    // Expired (one second ago: no grace period) → 403, nothing stored.
    let expired = server.signed_v3(raw, decoded, now_unix() - 2);
    let put = http.put(&expired).body(body.clone()).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::FORBIDDEN, "expired v3");
    server.assert_nothing_stored("expired v3");
    assert!(
        log_lines_with(&server, "/upload/v3dir/my%20photo.jpg", |l| l.contains("expired")).contains("expired"),
        "{}",
        server.log()
    );

    // Signed over the path without the prefix, or over the encoded spelling → 403.
    let future = now_unix() + 600;
    let sig = auth::sign_v3(&secret(), "PUT", future, &format!("/{decoded}"));
    let put = http
        .put(format!("{}?v3={sig}&expires={future}", server.url(raw)))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(
        put.status(),
        StatusCode::FORBIDDEN,
        "v3 signs the full path with the prefix"
    );
    let sig = auth::sign_v3(&secret(), "PUT", future, &format!("/upload/{raw}"));
    let put = http
        .put(format!("{}?v3={sig}&expires={future}", server.url(raw)))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::FORBIDDEN, "v3 signs the decoded path");
    let sig = auth::sign_v3(&secret(), "GET", future, &format!("/upload/{decoded}"));
    let put = http
        .put(format!("{}?v3={sig}&expires={future}", server.url(raw)))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::FORBIDDEN, "v3 signs the method");
    // A valid signature, but `expires` moved later.
    let sig = auth::sign_v3(&secret(), "PUT", future, &format!("/upload/{decoded}"));
    let later = future + 1000;
    let put = http
        .put(format!("{}?v3={sig}&expires={later}", server.url(raw)))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::FORBIDDEN, "v3 signs expires");
    server.assert_nothing_stored("bad v3 tokens");

    // Valid: full decoded path `/upload/<decoded>`; the size is not signed.
    let url = server.signed_v3(raw, decoded, future);
    let put = put_typed(&http, &url, "image/jpeg", body.clone()).await;
    assert_eq!(put.status(), StatusCode::CREATED, "valid v3");
    assert_eq!(server.stored(decoded).unwrap(), body);
}

async fn highest_token_version_wins(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let body = payload(500, 4);
    let n = body.len() as u64;
    let bogus = "ab".repeat(32);
    let ct = "application/octet-stream";
    let future = now_unix() + 600;
    let cases: Vec<(&str, String, StatusCode)> = vec![
        ("hv/1", format!("v={}&v2={bogus}", v("hv/1", n)), StatusCode::FORBIDDEN),
        (
            "hv/2",
            format!("v={bogus}&v2={}", auth::sign_v2(&secret(), "hv/2", n, ct)),
            StatusCode::CREATED,
        ),
        (
            "hv/3",
            format!("v2={}&v={bogus}", auth::sign_v2(&secret(), "hv/3", n, ct)),
            StatusCode::CREATED,
        ),
        (
            "hv/4",
            format!(
                "v2={}&v3={bogus}&expires={future}",
                auth::sign_v2(&secret(), "hv/4", n, ct)
            ),
            StatusCode::FORBIDDEN,
        ),
        (
            "hv/5",
            format!(
                "v3={}&expires={future}&v={bogus}",
                auth::sign_v3(&secret(), "PUT", future, "/upload/hv/5")
            ),
            StatusCode::CREATED,
        ),
        (
            "hv/6",
            format!("v={}&token={bogus}", v("hv/6", n)),
            StatusCode::FORBIDDEN,
        ),
        (
            "hv/7",
            format!("v={bogus}&token={}", auth::sign_v2(&secret(), "hv/7", n, ct)),
            StatusCode::CREATED,
        ),
    ];
    for (path, query, want) in &cases {
        let put = http
            .put(format!("{}?{query}", server.url(path)))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), *want, "{path}: {query}");
        assert_eq!(server.stored(path).is_some(), *want == StatusCode::CREATED, "{path}");
    }
    assert_eq!(server.temporaries(), 0);
}

// ---------------------------------------------------------------------------------------
// Token missing, malformed or wrong → 403, nothing stored, a log line that says why and
// never the token or the secret
// ---------------------------------------------------------------------------------------

async fn missing_malformed_or_wrong_tokens_are_403_and_store_nothing(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let body = payload(1000, 5);
    let n = body.len() as u64;
    let other = Secret::new("not-the-server-secret-at-all-0000");
    // (path, query, what the log must say: any of these words)
    let cases: Vec<(&str, String, &[&str])> = vec![
        ("t/missing", String::new(), &["no token", "missing"]),
        ("t/unrelated", "x=1&y=2".into(), &["no token", "missing"]),
        ("t/empty", "v=".into(), &["malformed"]),
        ("t/nothex", format!("v={}", "zz".repeat(32)), &["malformed"]),
        ("t/short", format!("v={}", &v("t/short", n)[..62]), &["malformed"]),
        ("t/long", format!("v={}00", v("t/long", n)), &["malformed"]),
        (
            "t/v3noexp",
            format!("v3={}", auth::sign_v3(&secret(), "PUT", 0, "/upload/t/v3noexp")),
            &["malformed"],
        ),
        (
            "t/secret",
            format!("v={}", auth::sign_v(&other, "t/secret", n)),
            &["match", "wrong", "invalid"],
        ),
        (
            "t/size",
            format!("v={}", v("t/size", n + 1)),
            &["match", "wrong", "invalid"],
        ),
        (
            "t/path",
            format!("v={}", v("t/other-path", n)),
            &["match", "wrong", "invalid"],
        ),
        (
            "t/v2secret",
            format!(
                "v2={}",
                auth::sign_v2(&other, "t/v2secret", n, "application/octet-stream")
            ),
            &["match", "wrong", "invalid"],
        ),
    ];
    let mut tokens = Vec::new();
    for (path, query, why) in &cases {
        let url = if query.is_empty() {
            server.url(path)
        } else {
            format!("{}?{query}", server.url(path))
        };
        let put = http.put(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(put.status(), StatusCode::FORBIDDEN, "{path}: {query}");
        assert_cors_reqwest(&put, path);
        let answer = put.text().await.unwrap();
        server.assert_nothing_stored(path);
        let lines = log_lines_with(&server, &format!("/upload/{path}"), |l| {
            l.contains("403") && why.iter().any(|w| l.contains(w))
        });
        assert!(lines.contains("403"), "{path}: no log line with the status:\n{lines}");
        assert!(
            why.iter().any(|w| lines.contains(w)),
            "{path}: the log does not say why ({why:?}):\n{lines}"
        );
        if let Some(token) = query
            .split('=')
            .nth(1)
            .map(|t| t.split('&').next().unwrap())
            .filter(|t| t.len() > 8)
        {
            assert!(!answer.contains(token), "{path}: the answer echoes the token");
            tokens.push(token.to_string());
        }
    }
    // The same uploads with good tokens work: the refusals were about the tokens only.
    let good = v("t/size", n);
    tokens.push(good.clone());
    let put = http
        .put(format!("{}?v={good}", server.url("t/size")))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);

    log_barrier(&server);
    let log = server.log();
    assert!(!log.contains(SECRET), "the secret is in the log");
    for t in &tokens {
        assert!(!log.contains(t.as_str()), "a token is in the log: {t}");
    }
}

// ---------------------------------------------------------------------------------------
// Valid token, file exists → 409, existing file untouched; the token comes first
// ---------------------------------------------------------------------------------------

async fn existing_file_is_409_and_untouched(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let first = payload(4000, 10);
    let url = server.signed_v2("ex/f.png", "ex/f.png", 4000, "image/png");
    let put = put_typed(&http, &url, "image/png", first.clone()).await;
    assert_eq!(put.status(), StatusCode::CREATED);
    let stamp = server.stored_stamp("ex/f.png").expect("stored");

    // Same size, other bytes and type; then another size; then another token kind.
    let second = payload(4000, 11);
    let url = server.signed_v2("ex/f.png", "ex/f.png", 4000, "text/html");
    let put = put_typed(&http, &url, "text/html", second).await;
    assert_eq!(put.status(), StatusCode::CONFLICT);
    assert_cors_reqwest(&put, "409");
    let put = http
        .put(server.signed_v("ex/f.png", "ex/f.png", 10))
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CONFLICT);
    let put = http
        .put(server.signed_v3("ex/f.png", "ex/f.png", now_unix() + 60))
        .body(vec![1u8; 3])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CONFLICT);
    // Another spelling of the same decoded path is the same file.
    let put = http
        .put(server.signed_v("ex%2Ff%2Epng", "ex/f.png", 10))
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CONFLICT, "another spelling");
    // A wrong token on an existing file is 403, not 409: the token is checked first.
    let put = http
        .put(server.signed_v("ex/f.png", "ex/f.png", 11))
        .body(vec![0u8; 10])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::FORBIDDEN, "token before existence");

    assert_eq!(server.stored("ex/f.png").unwrap(), first, "bytes untouched");
    assert_eq!(
        server.stored_stamp("ex/f.png").expect("stored"),
        stamp,
        "mtime (on S3: ETag and last-modified) untouched"
    );
    let get = http.get(server.url("ex/f.png")).send().await.unwrap();
    assert_eq!(get.headers()["content-type"], "image/png", "metadata untouched");
    assert_eq!(get.bytes().await.unwrap(), first);
    assert_eq!(server.stored_files(), vec![PathBuf::from("ex/f.png")]);
    assert_eq!(server.temporaries(), 0);
}

// ---------------------------------------------------------------------------------------
// Length: chunked → 411; no length and no body → 0 bytes; short and long bodies
// ---------------------------------------------------------------------------------------

async fn chunked_put_without_length_is_411(store: &str) {
    let server = TestServer::start(store);
    for (name, target) in [
        ("v", server.target(&server.signed_v("ch/a.bin", "ch/a.bin", 5))),
        (
            "v3",
            server.target(&server.signed_v3("ch/b.bin", "ch/b.bin", now_unix() + 60)),
        ),
    ] {
        let request =
            format!("PUT {target} HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        let r = server.raw_one(request.as_bytes());
        assert_eq!(r.status, 411, "{name}: chunked PUT");
        assert_cors_raw(&r, "411");
    }
    server.assert_nothing_stored("chunked PUT");
}

async fn put_without_length_or_body_is_zero_bytes(store: &str) {
    let server = TestServer::start(store);
    let target = server.target(&server.signed_v("zero/none.bin", "zero/none.bin", 0));
    let r = server.raw_one(format!("PUT {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    assert_eq!(r.status, 201);
    assert_eq!(server.stored("zero/none.bin"), Some(Vec::new()), "an empty file");
    assert_eq!(server.stored_files(), vec![PathBuf::from("zero/none.bin")]);
    // A token for any other size does not match an absent body.
    let target = server.target(&server.signed_v("zero/one.bin", "zero/one.bin", 1));
    let r = server.raw_one(format!("PUT {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    assert_eq!(r.status, 403);
    assert_eq!(server.stored("zero/one.bin"), None);
    assert_eq!(server.temporaries(), 0);
}

async fn body_shorter_than_length_then_close_stores_nothing(store: &str) {
    let server = TestServer::start(store);
    // 100 000 bytes, and 400 000: more than the 256 KiB an S3 store keeps in memory until the
    // commit, so that there the body streams into a multipart upload.
    for (name, size) in [("short/x.bin", 100_000usize), ("short/y.bin", 400_000)] {
        let body = payload(size, 20);
        let target = server.target(&server.signed_v(name, name, size as u64));
        let mut s = server.connect(Duration::from_secs(10));
        let head = format!("PUT {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {size}\r\n\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body[..40_000]).unwrap();
        // The upload is under way: a temporary exists (but for a small body in memory on S3)…
        assert!(
            wait_until(Duration::from_secs(10), || server.uploads_in_progress() == 1),
            "{name}: no upload in progress"
        );
        if server.s3().is_none() || size > 256 * 1024 {
            assert!(
                wait_until(Duration::from_secs(10), || server.temporaries() == 1),
                "{name}: no temporary while uploading"
            );
        }
        // …and the client goes away.
        drop(s);
        let line = server.wait_for_access("PUT", &format!("/upload/{name}"), Duration::from_secs(10));
        assert!(!line.contains("status=201"), "{line}");
        assert!(
            wait_until(Duration::from_secs(10), || server.temporaries() == 0),
            "{name}: temporary left behind"
        );
        server.assert_nothing_stored(name);
        let r = server
            .raw_one(format!("GET /upload/{name} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes());
        assert_eq!(r.status, 404, "{name}");
    }
}

/// HTTP/1.1 framing: the server reads exactly Content-Length bytes as the body; whatever
/// follows is the next request on the connection, which here is garbage → 400. The stored
/// file has exactly the signed bytes.
async fn body_longer_than_length_stores_only_the_signed_bytes(store: &str) {
    let server = TestServer::start(store);
    let body = payload(1000, 21);
    let target = server.target(&server.signed_v("long/x.bin", "long/x.bin", 1000));
    let mut request = raw_put(&target, &body, "");
    request.extend_from_slice(b"EXTRA bytes past the body\r\n\r\n");
    let responses = server.raw_responses(&request, Duration::from_secs(10));
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.first(),
        Some(&201),
        "the signed bytes are stored: {statuses:?}"
    );
    assert_eq!(
        statuses.get(1),
        Some(&400),
        "the extra bytes are a bad next request: {statuses:?}"
    );
    assert_eq!(server.stored("long/x.bin").unwrap(), body);
    assert_eq!(server.stored_files().len(), 1);
    assert_eq!(server.temporaries(), 0);
}

// ---------------------------------------------------------------------------------------
// Size over MaxUploadSize → 413 before the body is read
// ---------------------------------------------------------------------------------------

async fn over_max_upload_size_is_413_before_the_body(store: &str) {
    let server = TestServer::start(&format!("{store}MaxUploadSize = \"1KiB\"\n"));
    // Headers only, with Expect: 100-continue: the answer is 413, not an invitation.
    let target = server.target(&server.signed_v("big/a.bin", "big/a.bin", 4096));
    let mut s = server.connect(Duration::from_secs(10));
    let head = format!("PUT {target} HTTP/1.1\r\nHost: test\r\nContent-Length: 4096\r\nExpect: 100-continue\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let r = read_response(&mut s, Duration::from_secs(10)).expect("an answer without sending the body");
    assert_eq!(r.status, 413, "first answer to Expect: 100-continue");
    assert_cors_raw(&r, "413");
    drop(s);
    // Headers only, without Expect: still answered without waiting for the body.
    let target = server.target(&server.signed_v("big/b.bin", "big/b.bin", 1025));
    let mut s = server.connect(Duration::from_secs(10));
    let head = format!("PUT {target} HTTP/1.1\r\nHost: test\r\nContent-Length: 1025\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let r = read_response(&mut s, Duration::from_secs(10)).expect("an answer without sending the body");
    assert_eq!(r.status, 413, "one byte over");
    drop(s);
    server.assert_nothing_stored("413");
    // Exactly the limit is fine.
    let target = server.target(&server.signed_v("big/c.bin", "big/c.bin", 1024));
    let r = server.raw_one(&raw_put(&target, &payload(1024, 1), "Connection: close\r\n"));
    assert_eq!(r.status, 201, "exactly MaxUploadSize");
    // The token is still checked first.
    let target = format!("/upload/big/d.bin?v={}", "00".repeat(32));
    let r = server.raw_one(format!("PUT {target} HTTP/1.1\r\nHost: test\r\nContent-Length: 4096\r\n\r\n").as_bytes());
    assert_eq!(r.status, 403, "bad token and too large");
}

// ---------------------------------------------------------------------------------------
// Bad paths → 400 or 403, nothing stored anywhere
// ---------------------------------------------------------------------------------------

async fn bad_paths_are_refused_and_store_nothing_anywhere(store: &str) {
    let server = TestServer::start(store);
    let tag = format!("escape-{}-{}", std::process::id(), now_unix());
    let long_segment = "s".repeat(256);
    // (raw path after /upload/, the decoded path the XMPP server would have signed)
    let cases: Vec<(String, String)> = vec![
        (format!("../{tag}"), format!("../{tag}")),
        (format!("../../{tag}"), format!("../../{tag}")),
        (format!("a/../../{tag}"), format!("a/../../{tag}")),
        (format!("%2e%2e/{tag}"), format!("../{tag}")),
        (format!("%2E%2E/%2e%2e/{tag}"), format!("../../{tag}")),
        (format!("a%2F..%2F..%2F{tag}"), format!("a/../../{tag}")),
        (format!("a/%2F..%2F..%2F{tag}"), format!("a//../../{tag}")),
        (format!("..%5c..%5c{tag}"), format!("..\\..\\{tag}")),
        (format!("a%5c{tag}"), format!("a\\{tag}")),
        (format!("a/{tag}%00.jpg"), format!("a/{tag}\0.jpg")),
        (format!("a//{tag}"), format!("a//{tag}")),
        (format!("a/./{tag}"), format!("a/./{tag}")),
        (format!("./{tag}"), format!("./{tag}")),
        (format!("%2Ftmp%2F{tag}"), format!("/tmp/{tag}")),
        (format!("/tmp/{tag}"), format!("/tmp/{tag}")),
        (format!("a/{tag}/"), format!("a/{tag}/")),
        (String::new(), String::new()),
        (format!("a/{long_segment}"), format!("a/{long_segment}")),
        (format!("a/{tag}%ff%fe"), format!("a/{tag}\u{fffd}\u{fffd}")),
        (
            format!("a/%c0%ae%c0%ae/{tag}"),
            format!("a/\u{fffd}\u{fffd}\u{fffd}\u{fffd}/{tag}"),
        ),
        (
            format!(".hmac-file-server/tmp/{tag}"),
            format!(".hmac-file-server/tmp/{tag}"),
        ),
        (
            format!(".hmac-file-server/meta/{tag}"),
            format!(".hmac-file-server/meta/{tag}"),
        ),
    ];
    let body = b"evil";
    for (raw, decoded) in &cases {
        let target = format!("/upload/{raw}?v={}", v(decoded, body.len() as u64));
        let r = server.raw_one(&raw_put(&target, body, "Connection: close\r\n"));
        assert!(matches!(r.status, 400 | 403), "{raw:?}: got {}", r.status);
    }
    // Raw bytes that are not UTF-8 (not percent-encoded) in the request target.
    let mut request = b"PUT /upload/a/\xff\xfe".to_vec();
    request.extend_from_slice(
        format!(
            "{tag}?v={} HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\nConnection: close\r\n\r\nevil",
            "00".repeat(32)
        )
        .as_bytes(),
    );
    let responses = server.raw_responses(&request, Duration::from_secs(10));
    assert!(
        matches!(responses.first().map(|r| r.status), Some(400 | 403)),
        "raw invalid UTF-8: {responses:?}"
    );

    // Nothing anywhere: the temp dir holds only the config and the store's (empty) folders…
    let everything = files_under(server.dir.path());
    assert_eq!(
        everything,
        vec![server.dir.path().join("config.toml")],
        "files appeared"
    );
    server.assert_nothing_stored("bad paths");
    // …and nothing escaped above it.
    let mut dir: Option<&Path> = Some(server.dir.path());
    while let Some(d) = dir {
        assert!(!d.join(&tag).exists(), "escaped into {}", d.display());
        dir = d.parent();
    }
    assert!(!Path::new("/tmp").join(&tag).exists());
    // On S3, nothing escaped S3Prefix either (a key is not normalised: `files/../x` is a key).
    if let Some(s3) = server.s3() {
        let keys = s3.bucket_keys();
        assert!(
            keys.iter().all(|k| k.starts_with(&s3.prefix) && !k.contains(&tag)),
            "objects appeared: {keys:?}"
        );
    }
}

/// SPEC §6: nothing is written through a symlink that points out of the store (one an
/// operator left there, or one planted by someone with access to the disk).
// Local only: a symlink inside the store is a local-filesystem thing (S3 keys have none).
#[tokio::test]
async fn put_through_a_symlink_out_of_the_store_writes_nothing_outside() {
    let server = TestServer::start("");
    let http = client();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), server.files_dir().join("link")).unwrap();
    let body = payload(100, 70);
    let put = http
        .put(server.signed_v("link/x.bin", "link/x.bin", 100))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    let written_outside = files_under(outside.path());
    assert!(
        put.status().is_client_error() && written_outside.is_empty(),
        "PUT through an outward symlink: {}, written outside the store: {written_outside:?}",
        put.status()
    );
    let put = http
        .put(server.signed_v("link/deeper/y.bin", "link/deeper/y.bin", 100))
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(
        put.status().is_client_error(),
        "PUT below an outward symlink: {}",
        put.status()
    );
    assert!(
        !outside.path().join("deeper").exists(),
        "a folder was made outside the store"
    );
    assert_eq!(server.temporaries(), 0);
    let get = http.get(server.url("link/x.bin")).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::NOT_FOUND);
}

/// SPEC §6: nothing outside the store is deleted through a symlink that points out of it.
// Local only: a symlink inside the store is a local-filesystem thing (S3 keys have none).
#[tokio::test]
async fn delete_through_a_symlink_out_of_the_store_removes_nothing_outside() {
    let server = TestServer::start("");
    let http = client();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), server.files_dir().join("link")).unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, b"not the store's").unwrap();
    let token = auth::sign_delete(&secret(), "link/victim.txt", &secret());
    let r = http
        .delete(format!("{}?token={token}", server.url("link/victim.txt")))
        .send()
        .await
        .unwrap();
    assert!(
        victim.exists() && r.status().is_client_error(),
        "DELETE through an outward symlink: {}, file outside the store removed: {}",
        r.status(),
        !victim.exists()
    );
}

// ---------------------------------------------------------------------------------------
// Other methods → 405 with Allow
// ---------------------------------------------------------------------------------------

async fn other_methods_are_405_with_allow(store: &str) {
    let server = TestServer::start(store);
    let target = server.target(&server.signed_v("m/x.bin", "m/x.bin", 3));
    // POST is tus creation on a slot URL (tests/tus.rs); PATCH only acts on tus uploads.
    for method in ["PATCH", "PROPFIND", "TRACE", "MKCOL", "COPY"] {
        let request = format!("{method} {target} HTTP/1.1\r\nHost: test\r\nContent-Length: 3\r\n\r\nabc");
        let r = server.raw_one(request.as_bytes());
        assert_eq!(r.status, 405, "{method}");
        let allow = r
            .header("allow")
            .unwrap_or_else(|| panic!("{method}: 405 without Allow"));
        let allowed: Vec<String> = allow.split(',').map(|m| m.trim().to_ascii_uppercase()).collect();
        for m in ["GET", "HEAD", "PUT", "OPTIONS"] {
            assert!(allowed.iter().any(|a| a == m), "{method}: Allow lacks {m}: {allow}");
        }
        assert!(
            !allowed.iter().any(|a| a == method),
            "{method}: Allow lists the refused method: {allow}"
        );
        assert_cors_raw(&r, method);
    }
    server.assert_nothing_stored("other methods");
}

// ---------------------------------------------------------------------------------------
// CORS: OPTIONS anywhere without a token; the headers on every kind of answer
// ---------------------------------------------------------------------------------------

async fn options_on_any_path_without_token_is_2xx_with_cors(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let paths = [
        "/upload/some/file.jpg",
        "/upload/",
        "/",
        "/not/the/prefix",
        "/upload/x/y.bin?v=zz",
        "/upload/a/../b",
    ];
    for path in paths {
        let url = format!("{}{path}", server.base);
        let plain = http.request(Method::OPTIONS, &url).send().await.unwrap();
        assert!(plain.status().is_success(), "{path}: {}", plain.status());
        assert_cors_reqwest(&plain, path);
        let preflight = http
            .request(Method::OPTIONS, &url)
            .header("origin", "https://chat.example")
            .header("access-control-request-method", "PUT")
            .header("access-control-request-headers", "content-type, x-session-token")
            .send()
            .await
            .unwrap();
        assert!(
            preflight.status().is_success(),
            "{path} preflight: {}",
            preflight.status()
        );
        assert_cors_reqwest(&preflight, path);
    }
    server.assert_nothing_stored("OPTIONS");
}

async fn cors_headers_on_201_403_404_409_413(store: &str) {
    let server = TestServer::start(&format!("{store}MaxUploadSize = \"1KiB\"\n"));
    let http = client();
    let body = payload(100, 30);
    let url = server.signed_v("c/x.bin", "c/x.bin", 100);
    let r = http.put(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_cors_reqwest(&r, "201");
    let r = http.put(server.url("c/y.bin")).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_cors_reqwest(&r, "403");
    let r = http.get(server.url("c/missing.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_cors_reqwest(&r, "404");
    let r = http.head(server.url("c/missing.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_cors_reqwest(&r, "404 HEAD");
    let r = http.put(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_cors_reqwest(&r, "409");
    let big = payload(2048, 31);
    let r = http
        .put(server.signed_v("c/big.bin", "c/big.bin", 2048))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_cors_reqwest(&r, "413");
    let r = http.get(server.url("c/x.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_cors_reqwest(&r, "200");
    // Refusals that come before routing carry them too (raw: reqwest would normalise `..`).
    let target = format!("/upload/c/../x?v={}", v("c/../x", 3));
    let r = server.raw_one(&raw_put(&target, b"abc", "Connection: close\r\n"));
    assert!(matches!(r.status, 400 | 403), "bad path: {}", r.status);
    assert_cors_raw(&r, "400");
    let r = server.raw_one(b"DELETE /upload/c/x.bin HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 403, "DELETE without a token");
    assert_cors_raw(&r, "DELETE 403");
}

// ---------------------------------------------------------------------------------------
// Metronome DELETE
// ---------------------------------------------------------------------------------------

async fn metronome_delete_with_default_delete_secret(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let body = payload(5000, 40);
    let path = "del/some file.jpg";
    let raw = "del/some%20file.jpg";
    let put = put_typed(&http, server.signed_v(raw, path, 5000), "image/jpeg", body.clone()).await;
    assert_eq!(put.status(), StatusCode::CREATED);
    let keep = put_typed(
        &http,
        server.signed_v("del/keep.bin", "del/keep.bin", 3),
        "text/plain",
        vec![1, 2, 3],
    )
    .await;
    assert_eq!(keep.status(), StatusCode::CREATED);

    let good = auth::sign_delete(&secret(), path, &secret());
    let wrong = [
        String::new(),
        "token=".to_string(),
        format!("token={}", "zz".repeat(32)),
        format!(
            "token={}",
            auth::sign_delete(&secret(), path, &Secret::new("other-delete-secret"))
        ),
        format!(
            "token={}",
            auth::sign_delete(&Secret::new("other-secret-0123456789"), path, &secret())
        ),
        format!("token={}", auth::sign_delete(&secret(), "del/keep.bin", &secret())),
        format!("v={}", v(path, 5000)),
        format!(
            "token={}",
            auth::sign_v2(&secret(), path, 5000, "application/octet-stream")
        ),
    ];
    for query in &wrong {
        let r = http
            .delete(format!("{}?{query}", server.url(raw)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "DELETE ?{query}");
        assert_cors_reqwest(&r, "DELETE 403");
        assert_eq!(server.stored(path).unwrap(), body, "kept after ?{query}");
    }
    // The token of one file does not delete another.
    let r = http
        .delete(format!("{}?token={good}", server.url("del/keep.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        server.stored("del/keep.bin").unwrap(),
        [1, 2, 3],
        "the other file is kept"
    );
    // Locally each type is a sidecar; on S3 the object's own Content-Type (no sidecar object).
    match server.s3() {
        None => assert_eq!(server.sidecars(), 2),
        Some(s3) => {
            assert_eq!(s3.content_type(path).as_deref(), Some("image/jpeg"));
            assert_eq!(s3.content_type("del/keep.bin").as_deref(), Some("text/plain"));
            assert_eq!(server.sidecars(), 0);
        }
    }

    let r = http
        .delete(format!("{}?token={good}", server.url(raw)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_cors_reqwest(&r, "204");
    let r = http.get(server.url(raw)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "GET after DELETE");
    let r = http.head(server.url(raw)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "HEAD after DELETE");
    assert_eq!(
        server.stored_files(),
        vec![PathBuf::from("del/keep.bin")],
        "only the other file is left"
    );
    match server.s3() {
        None => assert_eq!(server.sidecars(), 1, "its metadata went too"),
        Some(s3) => {
            assert_eq!(s3.content_type(path), None, "its metadata went too");
            assert_eq!(s3.content_type("del/keep.bin").as_deref(), Some("text/plain"));
            assert_eq!(server.sidecars(), 0);
        }
    }

    // Deleting a missing file (valid token) → 404.
    let r = http
        .delete(format!("{}?token={good}", server.url(raw)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let gone = auth::sign_delete(&secret(), "del/never.bin", &secret());
    let r = http
        .delete(format!("{}?token={gone}", server.url("del/never.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // The slot can be used again.
    let put = http
        .put(server.signed_v(raw, path, 5000))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED, "upload after delete");

    log_barrier(&server);
    let log = server.log();
    assert!(!log.contains(&good), "the delete token is in the log");
    assert!(!log.contains(SECRET));
}

async fn metronome_delete_with_configured_delete_secret(store: &str) {
    let server = TestServer::start(&format!("{store}DeleteSecret = \"metronome-delete-secret-xyz\"\n"));
    let http = client();
    let put = http
        .put(server.signed_v("ds/a.bin", "ds/a.bin", 4))
        .body(vec![9u8; 4])
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::CREATED);
    let with_default = auth::sign_delete(&secret(), "ds/a.bin", &secret());
    let r = http
        .delete(format!("{}?token={with_default}", server.url("ds/a.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "the upload secret is not the delete secret when one is set"
    );
    assert!(server.stored("ds/a.bin").is_some());
    let good = auth::sign_delete(&secret(), "ds/a.bin", &Secret::new("metronome-delete-secret-xyz"));
    let r = http
        .delete(format!("{}?token={good}", server.url("ds/a.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.stored("ds/a.bin"), None);
    log_barrier(&server);
    assert!(!server.log().contains("metronome-delete-secret-xyz"));
}

// ---------------------------------------------------------------------------------------
// Banned client → 429 with Retry-After
// ---------------------------------------------------------------------------------------

/// A raw request from a given loopback source address (127.0.0.x), answered once.
async fn raw_from(server: &TestServer, source: &str, request: &[u8]) -> RawResponse {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let mut s = stream.into_std().unwrap();
    s.set_nonblocking(false).unwrap();
    s.write_all(request).unwrap();
    read_response(&mut s, Duration::from_secs(10)).unwrap_or_else(|| panic!("no answer; log:\n{}", server.log()))
}

fn retry_after_secs(r: &RawResponse) -> u64 {
    let value = r.header("retry-after").expect("429 without Retry-After");
    value.trim().parse().unwrap_or_else(|_| {
        let at = httpdate::parse_http_date(value).expect("Retry-After is seconds or an HTTP date");
        at.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            .as_secs()
    })
}

async fn banned_client_gets_429_with_retry_after(store: &str) {
    // A proxy is trusted, but not 127.0.0.1: its forwarding headers are spoofs, and it is
    // banned like any client. (With no proxy trusted at all, a loopback peer that sends
    // forwarding headers is taken for an unlisted local proxy and not banned: tests/ops/bans.rs.)
    let server = TestServer::start(&format!(
        "{store}BlockAfterFails = 3\nBlockDuration = 300\nAutoBanTime = 600\nTrustedProxies = [\"192.0.2.1/32\"]\n",
    ));
    let body = payload(100, 60);
    // Three failed authentications from 127.0.0.1. Each claims another address in
    // X-Forwarded-For, which an untrusted peer cannot make the server believe.
    for i in 0..3 {
        let target = format!("/upload/ban/x{i}.bin?v={}", "00".repeat(32));
        let xff = format!("X-Forwarded-For: 203.0.113.{i}\r\nX-Real-IP: 203.0.113.{i}\r\n");
        let r = raw_from(&server, "127.0.0.1", &raw_put(&target, &body, &xff)).await;
        assert_eq!(r.status, 403, "failure {i} is still a 403");
    }
    // Now even a valid upload from that address is refused.
    let target = server.target(&server.signed_v("ban/good.bin", "ban/good.bin", 100));
    let r = raw_from(&server, "127.0.0.1", &raw_put(&target, &body, "")).await;
    assert_eq!(r.status, 429, "banned client");
    let retry = retry_after_secs(&r);
    assert!((1..=600).contains(&retry), "Retry-After {retry} within AutoBanTime");
    assert_cors_raw(&r, "429");
    server.assert_nothing_stored("banned client");
    // Another address is not banned.
    let r = raw_from(&server, "127.0.0.2", &raw_put(&target, &body, "")).await;
    assert_eq!(r.status, 201, "another client address");
    assert_eq!(server.stored("ban/good.bin").unwrap(), body);
    log_barrier_from(&server, "127.0.0.2").await;
    assert!(server.log().to_lowercase().contains("ban"), "bans are logged");
}

async fn a_ban_lifts_after_auto_ban_time(store: &str) {
    let server = TestServer::start(&format!(
        "{store}BlockAfterFails = 2\nBlockDuration = 300\nAutoBanTime = 2\n"
    ));
    let body = payload(10, 61);
    for i in 0..2 {
        let target = format!("/upload/lift/x{i}.bin?v={}", "11".repeat(32));
        assert_eq!(
            raw_from(&server, "127.0.0.3", &raw_put(&target, &body, ""))
                .await
                .status,
            403
        );
    }
    let target = server.target(&server.signed_v("lift/good.bin", "lift/good.bin", 10));
    let r = raw_from(&server, "127.0.0.3", &raw_put(&target, &body, "")).await;
    assert_eq!(r.status, 429);
    assert!(retry_after_secs(&r) <= 2, "Retry-After within AutoBanTime = 2");
    // Poll (with a deadline) until the ban has lifted.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = raw_from(&server, "127.0.0.3", &raw_put(&target, &body, "")).await;
        if r.status == 201 {
            break;
        }
        assert_eq!(r.status, 429);
        assert!(std::time::Instant::now() < deadline, "the ban did not lift");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(server.stored("lift/good.bin").unwrap(), body);
}

async fn log_barrier_from(server: &TestServer, source: &str) {
    let path = format!("/upload/log-barrier/from-{source}");
    let r = raw_from(
        server,
        source,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 404);
    server.wait_for_access("GET", &path, Duration::from_secs(10));
}

// ---------------------------------------------------------------------------------------
// Disk full → 507, the partial file removed
// ---------------------------------------------------------------------------------------

/// Unmounts (and removes) a tmpfs mount when dropped, also when the test fails.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn tmpfs(size: &str) -> Result<Mount, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !status.success() {
            return Err(format!("mount -t tmpfs failed: {status}"));
        }
        Ok(Mount { dir })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(self.dir.path()).status();
    }
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Skips (prints why) unless CI=true, where a missing prerequisite is a failure.
fn skip_or_fail(reason: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("cannot run under CI: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// Sends a PUT of `size` bytes over a raw connection (the body from a second thread, errors
/// ignored: the server may answer and close early) and returns the answer.
fn put_streaming(server: &TestServer, target: &str, size: usize) -> Option<RawResponse> {
    let mut s = server.connect(Duration::from_secs(30));
    let head = format!("PUT {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {size}\r\n\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut writer = s.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![0x5au8; 64 * 1024];
        let mut left = size;
        while left > 0 {
            let n = left.min(chunk.len());
            if writer.write_all(&chunk[..n]).is_err() {
                return;
            }
            left -= n;
        }
    });
    let r = read_response(&mut s, Duration::from_secs(30));
    drop(s);
    let _ = sender.join();
    r
}

// Local only: a full local file system (a small tmpfs) is what it is about.
#[test]
fn disk_full_is_507_and_the_partial_file_is_removed() {
    if !is_root() {
        return skip_or_fail("mounting a small tmpfs needs root");
    }
    // Declared before the server, so it is dropped (unmounted) after the server has exited.
    let mount = match Mount::tmpfs("2m") {
        Ok(m) => m,
        Err(e) => return skip_or_fail(&e),
    };
    let dir = tempfile::tempdir().unwrap();
    // The fixture's store path is a symlink to the small file system.
    std::os::unix::fs::symlink(mount.dir.path(), dir.path().join("store")).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "ListenPort = \"127.0.0.1:0\"\nMetricsPort = \"127.0.0.1:0\"\nBlockAfterFails = 0\nSecret = \"{SECRET}\"\nStoreDir = \"{}\"\n",
            dir.path().join("store").display()
        ),
    )
    .unwrap();
    let server = TestServer::start_with_config(dir, &config);

    let size = 4 << 20;
    let target = server.target(&server.signed_v("full/big.bin", "full/big.bin", size as u64));
    let r = put_streaming(&server, &target, size).unwrap_or_else(|| panic!("no answer; log:\n{}", server.log()));
    assert_eq!(r.status, 507, "disk full");
    assert_cors_raw(&r, "507");
    assert!(
        wait_until(Duration::from_secs(10), || server.temporaries() == 0),
        "the partial file is left"
    );
    assert!(!server.files_dir().join("full/big.bin").exists());
    assert_eq!(server.stored_files(), Vec::<PathBuf>::new());

    // The space is back: a small upload works.
    let small = payload(100_000, 50);
    let target = server.target(&server.signed_v("full/small.bin", "full/small.bin", small.len() as u64));
    let r = server.raw_one(&raw_put(&target, &small, "Connection: close\r\n"));
    assert_eq!(r.status, 201, "small upload after the full disk");
    assert_eq!(std::fs::read(server.files_dir().join("full/small.bin")).unwrap(), small);
    assert_eq!(server.temporaries(), 0);
    drop(server);
    drop(mount);
}
