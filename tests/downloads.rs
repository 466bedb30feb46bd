//! GET and HEAD (SPEC §3): exact lengths, 404s, validators and conditional requests, byte
//! ranges, and the download headers that keep uploaded content from running in the origin, on
//! each store (local, and a Garage bucket).

mod common;

use std::io::Write;
use std::time::Duration;

use common::{TestServer, assert_cors_reqwest, client, encode_path, payload, put_typed, wait_until};
use reqwest::StatusCode;

on_each_store!(
    get_and_head_of_stored_files_are_200_with_exact_length,
    get_and_head_of_missing_files_are_404,
    unfinished_upload_is_404_until_complete,
    validators_and_conditional_gets,
    byte_ranges,
    empty_file_ranges_are_unsatisfiable,
    if_range,
    media_and_plain_text_stay_inline_with_their_type,
    everything_else_is_an_attachment_with_nosniff_and_csp,
    empty_content_type_is_an_attachment,
    etag_changes_when_a_path_is_deleted_and_uploaded_again,
    large_files_and_ranges_inside_them_are_byte_exact,
);

/// Uploads `body` at the decoded `path` with a `v2` token and the given Content-Type (None =
/// no header).
async fn upload(server: &TestServer, http: &reqwest::Client, path: &str, body: &[u8], content_type: Option<&str>) {
    let signed_type = content_type.unwrap_or("application/octet-stream");
    let url = server.signed_v2(&encode_path(path), path, body.len() as u64, signed_type);
    let mut put = http.put(&url).body(body.to_vec());
    if let Some(t) = content_type {
        put = put.header("content-type", t);
    }
    let put = put.send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CREATED, "upload {path}");
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

// ---------------------------------------------------------------------------------------
// 200 with exact Content-Length and Accept-Ranges; 404 for missing or unfinished
// ---------------------------------------------------------------------------------------

async fn get_and_head_of_stored_files_are_200_with_exact_length(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    for (path, len) in [
        ("len/zero.bin", 0usize),
        ("len/one.bin", 1),
        ("len/odd.bin", 65_537),
        ("len/big.bin", 1 << 20),
    ] {
        let body = payload(len, len as u64);
        upload(&server, &http, path, &body, None).await;
        let get = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(get.status(), StatusCode::OK, "{path}");
        assert_eq!(
            header(&get, "content-length"),
            Some(len.to_string()),
            "{path} GET Content-Length"
        );
        assert_eq!(header(&get, "accept-ranges").as_deref(), Some("bytes"), "{path}");
        assert_cors_reqwest(&get, path);
        assert_eq!(get.bytes().await.unwrap(), body, "{path} bytes");

        let head = http.head(server.url(path)).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::OK, "{path} HEAD");
        assert_eq!(
            header(&head, "content-length"),
            Some(len.to_string()),
            "{path} HEAD Content-Length"
        );
        assert_eq!(header(&head, "accept-ranges").as_deref(), Some("bytes"), "{path} HEAD");
        assert!(header(&head, "etag").is_some(), "{path} HEAD ETag");
        assert!(head.bytes().await.unwrap().is_empty(), "{path} HEAD has no body");
    }
}

async fn get_and_head_of_missing_files_are_404(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    upload(&server, &http, "here/file.txt", b"hello", Some("text/plain")).await;
    for path in [
        "here/other.txt",
        "nothere/file.txt",
        "here",
        "here/file.txt/more",
        "here/FILE.TXT",
    ] {
        let get = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(get.status(), StatusCode::NOT_FOUND, "GET {path}");
        let head = http.head(server.url(path)).send().await.unwrap();
        assert_eq!(head.status(), StatusCode::NOT_FOUND, "HEAD {path}");
    }
    // Nothing outside the prefix is served either.
    for path in [
        "/",
        "/config.toml",
        "/store/upload/here/file.txt",
        "/.hmac-file-server/tmp",
    ] {
        let get = http.get(format!("{}{path}", server.base)).send().await.unwrap();
        assert_eq!(get.status(), StatusCode::NOT_FOUND, "GET {path}");
    }
    let get = http.get(server.url("here/file.txt")).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK, "the stored file itself is found");
}

async fn unfinished_upload_is_404_until_complete(store: &str) {
    let server = TestServer::start(store);
    // 50 000 bytes, and 400 000: more than the 256 KiB an S3 store keeps in memory until the
    // commit, so that there the body streams into a multipart upload.
    for (name, size) in [("wip/file.bin", 50_000usize), ("wip/big.bin", 400_000)] {
        let body = payload(size, 9);
        let target = server.target(&server.signed_v(name, name, size as u64));
        let mut s = server.connect(Duration::from_secs(10));
        s.write_all(format!("PUT {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {size}\r\n\r\n").as_bytes())
            .unwrap();
        s.write_all(&body[..20_000]).unwrap();
        assert!(
            wait_until(Duration::from_secs(10), || server.uploads_in_progress() == 1),
            "{name}: upload under way"
        );
        // A temporary exists (but for a small body in memory on S3).
        if server.s3().is_none() || size > 256 * 1024 {
            assert!(
                wait_until(Duration::from_secs(10), || server.temporaries() == 1),
                "{name}: upload under way"
            );
        }
        for method in ["GET", "HEAD"] {
            let r = server.raw_one(format!("{method} /upload/{name} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
            assert_eq!(r.status, 404, "{name}: {method} while uploading");
        }
        assert_eq!(server.stored(name), None, "{name}: nothing at the final path yet");
        s.write_all(&body[20_000..]).unwrap();
        let r = common::read_response(&mut s, Duration::from_secs(10)).expect("an answer");
        assert_eq!(r.status, 201, "{name}");
        let r = server.raw_one(format!("GET /upload/{name} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200, "{name}");
        assert!(r.body == body, "{name}: the whole body");
    }
}

// ---------------------------------------------------------------------------------------
// ETag, Last-Modified, If-None-Match, If-Modified-Since
// ---------------------------------------------------------------------------------------

async fn validators_and_conditional_gets(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let body = payload(3000, 2);
    upload(&server, &http, "cond/a.jpg", &body, Some("image/jpeg")).await;
    let url = server.url("cond/a.jpg");
    let get = http.get(&url).send().await.unwrap();
    let etag = header(&get, "etag").expect("ETag");
    let last_modified = header(&get, "last-modified").expect("Last-Modified");
    assert!(
        etag.starts_with('"') || etag.starts_with("W/\""),
        "ETag is quoted: {etag}"
    );
    let lm = httpdate::parse_http_date(&last_modified).expect("Last-Modified is an HTTP date");
    let age = std::time::SystemTime::now().duration_since(lm).unwrap_or_default();
    assert!(
        age < Duration::from_secs(300),
        "Last-Modified is the upload time: {last_modified}"
    );
    let head = http.head(&url).send().await.unwrap();
    assert_eq!(header(&head, "etag").as_ref(), Some(&etag), "HEAD has the same ETag");
    assert_eq!(header(&head, "last-modified").as_ref(), Some(&last_modified));

    // If-None-Match with the current ETag (alone, in a list, weak) → 304 without a body.
    let list = format!("\"nope\", {etag}");
    let weak = format!("W/{}", etag.trim_start_matches("W/"));
    for inm in [etag.as_str(), list.as_str(), weak.as_str(), "*"] {
        let r = http.get(&url).header("if-none-match", inm).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "If-None-Match: {inm}");
        assert_cors_reqwest(&r, "304");
        assert_eq!(header(&r, "etag").as_ref(), Some(&etag), "304 carries the ETag");
        assert!(r.bytes().await.unwrap().is_empty());
    }
    let r = http.head(&url).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "HEAD If-None-Match");
    let r = http
        .get(&url)
        .header("if-none-match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "If-None-Match with another ETag");
    assert_eq!(r.bytes().await.unwrap(), body);

    // If-Modified-Since.
    let r = http
        .get(&url)
        .header("if-modified-since", &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED, "If-Modified-Since: Last-Modified");
    let earlier = httpdate::fmt_http_date(lm - Duration::from_secs(3600));
    let r = http
        .get(&url)
        .header("if-modified-since", &earlier)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "If-Modified-Since: earlier");
    assert_eq!(r.bytes().await.unwrap(), body);
    // If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
    let r = http
        .get(&url)
        .header("if-none-match", "\"something-else\"")
        .header("if-modified-since", &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "If-None-Match mismatch beats If-Modified-Since"
    );
}

// ---------------------------------------------------------------------------------------
// Ranges
// ---------------------------------------------------------------------------------------

async fn byte_ranges(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let body = payload(1000, 4);
    upload(&server, &http, "rng/file.ogg", &body, Some("audio/ogg")).await;
    let url = server.url("rng/file.ogg");
    // (Range, first byte, last byte)
    for (range, first, last) in [
        ("bytes=100-", 100usize, 999usize),
        ("bytes=0-", 0, 999),
        ("bytes=10-19", 10, 19),
        ("bytes=999-999", 999, 999),
        ("bytes=900-5000", 900, 999),
        ("bytes=-50", 950, 999),
        ("bytes=-5000", 0, 999),
    ] {
        let r = http.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_cors_reqwest(&r, "206");
        assert_eq!(
            header(&r, "content-range"),
            Some(format!("bytes {first}-{last}/1000")),
            "{range}"
        );
        assert_eq!(
            header(&r, "content-length"),
            Some((last - first + 1).to_string()),
            "{range}"
        );
        assert_eq!(header(&r, "content-type").as_deref(), Some("audio/ogg"), "{range}");
        assert_eq!(r.bytes().await.unwrap(), &body[first..=last], "{range}");
    }
    let r = http.head(&url).header("range", "bytes=10-19").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "HEAD with Range");
    assert_eq!(header(&r, "content-range").as_deref(), Some("bytes 10-19/1000"));
    for range in ["bytes=1000-", "bytes=5000-6000", "bytes=-0"] {
        let r = http.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE, "{range}");
        assert_eq!(header(&r, "content-range").as_deref(), Some("bytes */1000"), "{range}");
        assert_cors_reqwest(&r, "416");
    }
    // Malformed or unsupported units: the whole file.
    for range in ["items=0-5", "bytes=5-3", "bytes=abc"] {
        let r = http.get(&url).header("range", range).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{range}");
        assert_eq!(r.bytes().await.unwrap(), body, "{range}");
    }
}

async fn empty_file_ranges_are_unsatisfiable(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    upload(&server, &http, "rng/empty.txt", b"", Some("text/plain")).await;
    let r = http
        .get(server.url("rng/empty.txt"))
        .header("range", "bytes=0-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "content-range").as_deref(), Some("bytes */0"));
}

async fn if_range(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let body = payload(2000, 5);
    upload(&server, &http, "ifr/video.mp4", &body, Some("video/mp4")).await;
    let url = server.url("ifr/video.mp4");
    let etag = header(&http.head(&url).send().await.unwrap(), "etag").unwrap();

    let r = http
        .get(&url)
        .header("range", "bytes=500-")
        .header("if-range", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::PARTIAL_CONTENT,
        "If-Range with the current ETag"
    );
    assert_eq!(header(&r, "content-range").as_deref(), Some("bytes 500-1999/2000"));
    assert_eq!(r.bytes().await.unwrap(), &body[500..]);

    let r = http
        .get(&url)
        .header("range", "bytes=500-")
        .header("if-range", "\"another-etag\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "If-Range with another ETag: the whole file");
    assert!(header(&r, "content-range").is_none());
    assert_eq!(header(&r, "content-length").as_deref(), Some("2000"));
    assert_eq!(r.bytes().await.unwrap(), body);

    // A stale If-Range also beats an unsatisfiable Range: the whole, changed file.
    let r = http
        .get(&url)
        .header("range", "bytes=9999-")
        .header("if-range", "\"another-etag\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "If-Range mismatch with an unsatisfiable Range"
    );
}

// ---------------------------------------------------------------------------------------
// Download headers: inline media and plain text; everything else as an attachment
// ---------------------------------------------------------------------------------------

fn cache_max_age(r: &reqwest::Response) -> u64 {
    let cc = header(r, "cache-control").expect("Cache-Control");
    cc.split(',')
        .filter_map(|d| d.trim().strip_prefix("max-age="))
        .find_map(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no max-age in Cache-Control: {cc}"))
}

async fn media_and_plain_text_stay_inline_with_their_type(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    for (path, ct) in [
        ("in/photo.jpg", "image/jpeg"),
        ("in/clip.mp4", "video/mp4"),
        ("in/voice.ogg", "audio/ogg"),
        ("in/note.txt", "text/plain"),
        ("in/note-utf8.txt", "text/plain; charset=utf-8"),
        ("in/pic.webp", "image/webp"),
    ] {
        let body = payload(1234, 6);
        upload(&server, &http, path, &body, Some(ct)).await;
        for head in [false, true] {
            let r = if head {
                http.head(server.url(path))
            } else {
                http.get(server.url(path))
            }
            .send()
            .await
            .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(
                header(&r, "content-type").as_deref(),
                Some(ct),
                "{path}: kept Content-Type"
            );
            let disposition = header(&r, "content-disposition");
            assert!(
                disposition
                    .as_deref()
                    .is_none_or(|d| d.trim().to_ascii_lowercase().starts_with("inline")),
                "{path}: shown inline, got {disposition:?}"
            );
            assert!(cache_max_age(&r) >= 86_400, "{path}: long-lived Cache-Control");
            if !head {
                assert_eq!(r.bytes().await.unwrap(), body, "{path}");
            }
        }
    }
}

async fn everything_else_is_an_attachment_with_nosniff_and_csp(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let cases: [(&str, Option<&str>, &str); 8] = [
        ("att/page.html", Some("text/html"), "page.html"),
        ("att/doc.pdf", Some("application/pdf"), "doc.pdf"),
        ("att/logo.svg", Some("image/svg+xml"), "logo.svg"),
        ("att/notype.bin", None, "notype.bin"),
        // OMEMO: encrypted .jpg uploaded as octet-stream is not guessed from the extension.
        ("att/omemo.jpg", Some("application/octet-stream"), "omemo.jpg"),
        ("att/script.js", Some("application/javascript"), "script.js"),
        ("att/x.xhtml", Some("application/xhtml+xml"), "x.xhtml"),
        (
            "att/Résumé été 文件 (1).pdf",
            Some("application/pdf"),
            "R%C3%A9sum%C3%A9%20%C3%A9t%C3%A9%20%E6%96%87%E4%BB%B6%20%281%29.pdf",
        ),
    ];
    for (path, ct, encoded_name) in cases {
        let body = payload(999, 7);
        upload(&server, &http, path, &body, ct).await;
        let url = server.url(&encode_path(path));
        for head in [false, true] {
            let r = if head { http.head(&url) } else { http.get(&url) }
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{path}");
            assert_eq!(
                header(&r, "content-disposition"),
                Some(format!("attachment; filename*=UTF-8''{encoded_name}")),
                "{path}: Content-Disposition"
            );
            assert_eq!(
                header(&r, "x-content-type-options").as_deref(),
                Some("nosniff"),
                "{path}"
            );
            assert_eq!(
                header(&r, "content-security-policy").as_deref(),
                Some("default-src 'none'; frame-ancestors 'none'"),
                "{path}: CSP"
            );
            assert!(cache_max_age(&r) >= 86_400, "{path}: long-lived Cache-Control");
            if ct == Some("application/octet-stream") || ct.is_none() {
                assert_eq!(
                    header(&r, "content-type").as_deref(),
                    Some("application/octet-stream"),
                    "{path}"
                );
            }
            assert_ne!(
                header(&r, "content-type").as_deref(),
                Some("image/jpeg"),
                "{path}: never guessed"
            );
            if !head {
                assert_eq!(r.bytes().await.unwrap(), body, "{path}");
            }
        }
    }
}

async fn empty_content_type_is_an_attachment(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let url = server.signed_v2("att/empty-type.png", "att/empty-type.png", 5, "");
    let put = put_typed(&http, &url, "", b"12345".to_vec()).await;
    assert_eq!(put.status(), StatusCode::CREATED);
    let r = http.get(server.url("att/empty-type.png")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "content-disposition").as_deref(),
        Some("attachment; filename*=UTF-8''empty-type.png")
    );
    assert_eq!(header(&r, "x-content-type-options").as_deref(), Some("nosniff"));
    assert_ne!(
        header(&r, "content-type").as_deref(),
        Some("image/png"),
        "never guessed from the extension"
    );
}

/// The URL is immutable only until a DELETE: a new upload at the same path (same size, other
/// bytes) must get a new strong ETag, or caches and resumed downloads would mix the two.
async fn etag_changes_when_a_path_is_deleted_and_uploaded_again(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let first = payload(3000, 20);
    let second = payload(3000, 21);
    upload(&server, &http, "re/file.jpg", &first, Some("image/jpeg")).await;
    let old = header(&http.head(server.url("re/file.jpg")).send().await.unwrap(), "etag").unwrap();
    let token = hmac_file_server::auth::sign_delete(&common::secret(), "re/file.jpg", &common::secret());
    let r = http
        .delete(format!("{}?token={token}", server.url("re/file.jpg")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    upload(&server, &http, "re/file.jpg", &second, Some("image/jpeg")).await;

    let r = http
        .get(server.url("re/file.jpg"))
        .header("if-none-match", &old)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the old ETag does not match the new file");
    assert_ne!(header(&r, "etag").as_ref(), Some(&old), "new content, new ETag");
    assert_eq!(r.bytes().await.unwrap(), second);
    let r = http
        .get(server.url("re/file.jpg"))
        .header("range", "bytes=1000-")
        .header("if-range", &old)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "If-Range with the old ETag: the whole new file"
    );
    assert_eq!(r.bytes().await.unwrap(), second);
}

// ---------------------------------------------------------------------------------------
// Large bodies: sent from the file (sendfile) in pieces, whole and in ranges
// ---------------------------------------------------------------------------------------

/// A file of several read pieces (1 MiB on a disk, 4 MiB in memory, S3 parts) read whole and
/// in ranges that start and end off page and piece boundaries.
async fn large_files_and_ranges_inside_them_are_byte_exact(store: &str) {
    let server = TestServer::start(store);
    check_large_downloads(&server).await;
}

/// The same with the store on a file system in memory (/dev/shm), where the server maps the
/// pieces as they are sent instead of reading them in on the blocking pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_from_a_store_in_memory_are_byte_exact() {
    let shm = std::path::Path::new("/dev/shm");
    if !shm.is_dir() {
        eprintln!("no /dev/shm here: the store-in-memory case is not run");
        return;
    }
    let server = TestServer::start_in(tempfile::tempdir_in(shm).unwrap(), "");
    check_large_downloads(&server).await;
}

async fn check_large_downloads(server: &TestServer) {
    let http = client();
    // Around the small-file size (read, or mapped, whole at the open) and one page.
    for len in [1usize, 4095, 4097, 65_536, 256 * 1024, 256 * 1024 + 1] {
        let body = payload(len, len as u64);
        let path = format!("edge/{len}.bin");
        upload(server, &http, &path, &body, None).await;
        let get = http.get(server.url(&path)).send().await.unwrap();
        assert_eq!(header(&get, "content-length"), Some(len.to_string()), "{path}");
        assert!(get.bytes().await.unwrap() == body, "{path}: bytes differ");
        let first = len / 3;
        let r = http
            .get(server.url(&path))
            .header("range", format!("bytes={first}-"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{path}");
        assert!(
            r.bytes().await.unwrap() == body[first..],
            "{path} from {first}: bytes differ"
        );
    }
    let len = 9 * 1024 * 1024 + 4097;
    let body = payload(len, 77);
    upload(server, &http, "big/file.bin", &body, None).await;
    let url = server.url("big/file.bin");
    let get = http.get(&url).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(header(&get, "content-length"), Some(len.to_string()));
    assert!(get.bytes().await.unwrap() == body, "whole file differs");
    const MIB: usize = 1024 * 1024;
    for (first, last) in [
        (1, len - 1),
        (4095, 4 * MIB + 4096),
        (MIB - 1, MIB),
        (3 * MIB + 17, 8 * MIB + 4095),
        (len - 300_000, len - 2),
        (8 * MIB, len - 1),
    ] {
        let range = format!("bytes={first}-{last}");
        let r = http.get(&url).header("range", &range).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&r, "content-range"),
            Some(format!("bytes {first}-{last}/{len}")),
            "{range}"
        );
        assert!(r.bytes().await.unwrap() == body[first..=last], "{range}: bytes differ");
    }
    // Many at once: the pieces of concurrent downloads never mix.
    let gets = (0..8).map(|i| {
        let (http, url) = (http.clone(), url.clone());
        let first = i * 1_000_003;
        async move {
            let r = http
                .get(&url)
                .header("range", format!("bytes={first}-"))
                .send()
                .await
                .unwrap();
            (first, r.bytes().await.unwrap())
        }
    });
    for (first, got) in futures_util::future::join_all(gets).await {
        assert!(got == body[first..], "concurrent download from {first} differs");
    }
}

/// A file cut short by hand while it is being sent (the server never changes a finished file)
/// ends that download early, and the server goes on answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_truncated_while_sent_ends_that_download_not_the_server() {
    for in_memory in [false, true] {
        let dir = if in_memory && std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm").unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let server = TestServer::start_in(dir, "");
        let http = client();
        let len = 64 * 1024 * 1024;
        let body = payload(len, 78);
        upload(&server, &http, "cut/file.bin", &body, None).await;
        let mut get = http.get(server.url("cut/file.bin")).send().await.unwrap();
        assert_eq!(get.status(), StatusCode::OK);
        let mut got = get.chunk().await.unwrap().unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(server.files_dir().join("cut/file.bin"))
            .unwrap()
            .set_len(1024 * 1024)
            .unwrap();
        // The body ends early (or the connection breaks off): either stops the loop.
        while let Ok(Some(c)) = get.chunk().await {
            got += c.len();
        }
        assert!(
            got < len,
            "in memory: {in_memory}: the whole length arrived from a cut file"
        );
        let small = payload(100, 79);
        upload(&server, &http, "cut/after.bin", &small, None).await;
        let r = http.get(server.url("cut/after.bin")).send().await.unwrap();
        assert_eq!(
            r.bytes().await.unwrap(),
            small,
            "in memory: {in_memory}: the server answers on"
        );
    }
}
