//! The IETF draft "Resumable Uploads for HTTP" through the real binary, request by request as
//! the draft's examples go: creation with and without `Upload-Complete: ?1`, offset retrieval,
//! append, a mismatched offset, completion, cancellation, the OPTIONS limits, the interop
//! versions, and the token rules; then an interrupted upload resumed after `kill -9`. Every
//! behaviour runs on the embedded state and on a Redis of its own, and on a Garage bucket.

mod common;
#[path = "common/redis.rs"]
mod redis_fixture;
#[path = "common/resumable.rs"]
#[macro_use]
mod resumable;

use common::{TestServer, client, now_unix, payload};
use reqwest::{Response, StatusCode};
use resumable::header;

on_both_backends!(
    creation_with_the_whole_file: [embedded, redis, s3, s3_redis],
    creation_then_appends: [embedded, redis, s3, s3_redis],
    cancellation_frees_the_slot: [embedded, redis, s3_redis],
    limits_and_lengths_are_enforced_on_every_request: [embedded, redis],
    interop_versions_3_and_5: [embedded, redis],
    resumed_after_kill: [embedded, redis],
    interim_104_names_the_resource_before_the_content: [embedded, redis, s3_redis],
);

const PREFIX: &str = "/upload/.hmac-file-server/resumable/";

/// A draft request: interop version `interop`, `Upload-Complete: complete` (spelled as that
/// version spells it), extra headers, and a body.
async fn send(
    method: reqwest::Method,
    url: &str,
    interop: u32,
    complete: Option<bool>,
    extra: &[(&str, &str)],
    body: Vec<u8>,
) -> Response {
    let mut req = client()
        .request(method, url)
        .header("upload-draft-interop-version", interop.to_string());
    match (complete, interop) {
        (Some(c), 3) => req = req.header("upload-incomplete", if c { "?0" } else { "?1" }),
        (Some(c), _) => req = req.header("upload-complete", if c { "?1" } else { "?0" }),
        (None, _) => {}
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.body(body).send().await.unwrap()
}

async fn append(server: &TestServer, location: &str, offset: usize, complete: bool, bytes: &[u8]) -> Response {
    send(
        reqwest::Method::PATCH,
        &format!("{}{location}", server.base),
        8,
        Some(complete),
        &[
            ("content-type", "application/partial-upload"),
            ("upload-offset", &offset.to_string()),
        ],
        bytes.to_vec(),
    )
    .await
}

/// Creation by POST with `Upload-Length: total` and `Upload-Complete: ?0`, carrying `first`
/// (tus-js-client's way, with no content).
async fn create(server: &TestServer, path: &str, total: usize, first: &[u8]) -> Response {
    let len = total.to_string();
    send(
        reqwest::Method::POST,
        &server.signed_v(path, path, total as u64),
        8,
        Some(false),
        &[("upload-length", &len)],
        first.to_vec(),
    )
    .await
}

async fn retrieve(server: &TestServer, location: &str) -> Response {
    client()
        .head(format!("{}{location}", server.base))
        .header("upload-draft-interop-version", "8")
        .send()
        .await
        .unwrap()
}

fn location(r: &Response) -> String {
    let l = header(r, "location").expect("Location");
    assert!(l.starts_with(PREFIX), "Location {l}");
    let id = &l[PREFIX.len()..];
    assert!(
        id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "the upload resource is named by 128 random bits: {l}"
    );
    l
}

fn offset(r: &Response) -> usize {
    header(r, "upload-offset").expect("Upload-Offset").parse().unwrap()
}

async fn get(server: &TestServer, path: &str) -> (StatusCode, Vec<u8>) {
    let r = client().get(server.url(path)).send().await.unwrap();
    (r.status(), r.bytes().await.unwrap().to_vec())
}

/// Example 1 of the draft: the whole file in the creation request (what an iOS client sends).
async fn creation_with_the_whole_file(extra: &str) {
    let server = TestServer::start(extra);
    let data = payload(300_000, 1);
    let path = "draft/whole.bin";
    let r = send(
        reqwest::Method::PUT,
        &server.signed_v(path, path, data.len() as u64),
        8,
        Some(true),
        &[],
        data.clone(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "upload-complete").as_deref(), Some("?1"));
    let loc = location(&r);
    assert_eq!(get(&server, path).await, (StatusCode::OK, data.clone()));
    // The resource still answers after completion (a client whose final answer was lost).
    let r = retrieve(&server, &loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "upload-complete").as_deref(), Some("?1"));
    assert_eq!(offset(&r), data.len());
    assert_eq!(header(&r, "upload-length"), Some(data.len().to_string()));
    assert_eq!(header(&r, "cache-control").as_deref(), Some("no-store"));
    // Appending to it is refused; the file stays.
    let r = append(&server, &loc, data.len(), false, b"more").await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(get(&server, path).await.1, data);
    // A plain XEP-0363 PUT without the draft's headers is today's PUT: the path is taken.
    let r = client()
        .put(server.signed_v(path, path, data.len() as u64))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(header(&r, "upload-complete").is_none());
}

/// Example 2: creation with part of the file, appends, a wrong offset, completion.
async fn creation_then_appends(extra: &str) {
    let server = TestServer::start(&format!("{extra}MaxUploadSize = 5000000\nUploadExpiry = \"2h\"\n"));
    let data = payload(1_000_000, 2);
    let path = "draft/parts.bin";
    let len = data.len().to_string();
    let r = create(&server, path, data.len(), &data[..200_000]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "upload-complete").as_deref(), Some("?0"));
    assert_eq!(offset(&r), 200_000);
    let limit = header(&r, "upload-limit").expect("Upload-Limit on creation");
    assert!(limit.starts_with("max-size=5000000, min-size=0, max-age="), "{limit}");
    let age: u64 = limit.rsplit('=').next().unwrap().parse().unwrap();
    assert!((7000..=7200).contains(&age), "max-age {age} from UploadExpiry");
    let loc = location(&r);
    assert_eq!(
        get(&server, path).await.0,
        StatusCode::NOT_FOUND,
        "unfinished: invisible"
    );

    let r = retrieve(&server, &loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset(&r), 200_000);
    assert_eq!(header(&r, "upload-complete").as_deref(), Some("?0"));
    assert_eq!(header(&r, "upload-length"), Some(len.clone()));
    assert_eq!(header(&r, "cache-control").as_deref(), Some("no-store"));
    assert!(header(&r, "upload-limit").is_some());

    // A wrong offset: 409 with the problem type and the right offset.
    let r = append(&server, &loc, 300_000, false, &data[300_000..400_000]).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(offset(&r), 200_000);
    assert_eq!(header(&r, "upload-complete").as_deref(), Some("?0"));
    assert_eq!(header(&r, "content-type").as_deref(), Some("application/problem+json"));
    let problem: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(
        problem["type"],
        "https://iana.org/assignments/http-problem-types#mismatching-upload-offset"
    );
    assert_eq!(problem["expected-offset"], 200_000);
    assert_eq!(problem["provided-offset"], 300_000);
    // Appends need application/partial-upload.
    let r = send(
        reqwest::Method::PATCH,
        &format!("{}{loc}", server.base),
        8,
        Some(false),
        &[
            ("upload-offset", "200000"),
            ("content-type", "application/octet-stream"),
        ],
        data[200_000..300_000].to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let r = append(&server, &loc, 200_000, false, &data[200_000..700_000]).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "upload-complete").as_deref(), Some("?0"));
    assert_eq!(offset(&r), 700_000);
    // The last bytes, not said to complete it: the declared length is reached, no byte can
    // follow, and the upload is stored (tus-js-client's draft modes count on it).
    let r = append(&server, &loc, 700_000, false, &data[700_000..]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "upload-complete").as_deref(), Some("?1"));
    assert_eq!(get(&server, path).await, (StatusCode::OK, data.clone()));
    // An empty append with Upload-Complete: ?1 (a strict client completing it) gets the
    // answer again; anything else is refused.
    let r = append(&server, &loc, data.len(), true, &[]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "upload-complete").as_deref(), Some("?1"));
    let r = append(&server, &loc, data.len(), true, b"x").await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(get(&server, path).await, (StatusCode::OK, data));
}

async fn cancellation_frees_the_slot(extra: &str) {
    let server = TestServer::start(extra);
    let data = payload(50_000, 3);
    let path = "draft/cancel.bin";
    let url = server.signed_v(path, path, data.len() as u64);
    let len = data.len().to_string();
    let r = send(
        reqwest::Method::POST,
        &url,
        8,
        Some(false),
        &[("upload-length", &len)],
        vec![],
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "creation with no content (tus-js-client's way)"
    );
    assert_eq!(offset(&r), 0);
    let loc = location(&r);
    let r = client().delete(format!("{}{loc}", server.base)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(retrieve(&server, &loc).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        append(&server, &loc, 0, true, &data).await.status(),
        StatusCode::NOT_FOUND
    );
    let r = send(reqwest::Method::PUT, &url, 8, Some(true), &[], data.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(get(&server, path).await, (StatusCode::OK, data));
    // A resource nobody created.
    let made_up = format!("{PREFIX}{}", "0123456789abcdef".repeat(2));
    assert_eq!(retrieve(&server, &made_up).await.status(), StatusCode::NOT_FOUND);
}

async fn limits_and_lengths_are_enforced_on_every_request(extra: &str) {
    let server = TestServer::start(&format!("{extra}MaxUploadSize = 100000\n"));
    let path = "draft/limits.bin";
    // OPTIONS announces the limits.
    let r = client()
        .request(reqwest::Method::OPTIONS, server.url(path))
        .send()
        .await
        .unwrap();
    let limit = header(&r, "upload-limit").expect("Upload-Limit on OPTIONS");
    assert!(
        limit.starts_with("max-size=100000, min-size=0, max-age=86400"),
        "{limit}"
    );

    // No token, a wrong token, a token for another size: no upload resource.
    for url in [
        server.url(path),
        format!("{}?v={}", server.url(path), "ab".repeat(32)),
        server.signed_v(path, path, 999),
    ] {
        let r = send(
            reqwest::Method::POST,
            &url,
            8,
            Some(false),
            &[("upload-length", "1000")],
            vec![],
        )
        .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{url}");
        assert!(header(&r, "location").is_none());
    }
    // A size-signing token needs the length up front.
    let r = send(
        reqwest::Method::POST,
        &server.signed_v(path, path, 1000),
        8,
        Some(false),
        &[],
        vec![],
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Over MaxUploadSize.
    let r = send(
        reqwest::Method::POST,
        &server.signed_v(path, path, 200_000),
        8,
        Some(false),
        &[("upload-length", "200000")],
        vec![],
    )
    .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Upload-Length and Content-Length that disagree.
    let r = send(
        reqwest::Method::POST,
        &server.signed_v(path, path, 1000),
        8,
        Some(true),
        &[("upload-length", "1000")],
        vec![0; 900],
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let problem: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(
        problem["type"],
        "https://iana.org/assignments/http-problem-types#inconsistent-upload-length"
    );
    // An append past the length: 413, the offset stays, and the upload can still finish.
    let data = payload(1000, 4);
    let r = create(&server, path, 1000, &data[..400]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let loc = location(&r);
    let r = append(&server, &loc, 400, false, &payload(5000, 5)).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(offset(&retrieve(&server, &loc).await), 400);
    // Completing with fewer bytes than the length: the inconsistency is refused.
    let r = append(&server, &loc, 400, true, &data[400..900]).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(get(&server, path).await.0, StatusCode::NOT_FOUND);
    let r = append(&server, &loc, offset(&retrieve(&server, &loc).await), true, &[]).await;
    assert!(
        r.status().is_client_error(),
        "still short of its length: {}",
        r.status()
    );
    let at = offset(&retrieve(&server, &loc).await);
    let r = append(&server, &loc, at, true, &data[at..]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(get(&server, path).await, (StatusCode::OK, data));
    // Unsupported interop versions are refused, not guessed.
    let r = send(
        reqwest::Method::PUT,
        &server.signed_v("draft/v9.bin", "draft/v9.bin", 3),
        9,
        Some(true),
        &[],
        vec![1, 2, 3],
    )
    .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A v3 slot (signs method and path, not size) may leave the length open.
    let url = server.signed_v3("draft/v3.bin", "draft/v3.bin", now_unix() + 600);
    let r = send(reqwest::Method::PUT, &url, 8, Some(false), &[], vec![7; 100]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(header(&r, "upload-length").is_none());
    let loc = location(&r);
    let r = append(&server, &loc, 100, true, &[8; 50]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let mut want = vec![7; 100];
    want.extend([8; 50]);
    assert_eq!(get(&server, "draft/v3.bin").await, (StatusCode::OK, want));
}

/// URLSession on iOS 17 (interop version 3, `Upload-Incomplete`) and tus-js-client's
/// `ietf-draft-03` (interop version 5: appends without a media type, no Upload-Limit).
async fn interop_versions_3_and_5(extra: &str) {
    let server = TestServer::start(extra);
    for interop in [3u32, 5] {
        let data = payload(20_000, interop as u64);
        let path = format!("draft/v{interop}.bin");
        let len = data.len().to_string();
        let r = send(
            reqwest::Method::PUT,
            &server.signed_v(&path, &path, data.len() as u64),
            interop,
            Some(false),
            &[("upload-length", &len)],
            data[..5000].to_vec(),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED, "interop {interop}");
        assert!(header(&r, "upload-limit").is_none(), "no Upload-Limit before version 6");
        if interop == 3 {
            assert_eq!(header(&r, "upload-incomplete").as_deref(), Some("?1"));
        } else {
            assert_eq!(header(&r, "upload-complete").as_deref(), Some("?0"));
        }
        let loc = location(&r);
        let r = send(
            reqwest::Method::PATCH,
            &format!("{}{loc}", server.base),
            interop,
            Some(true),
            &[("upload-offset", "5000")],
            data[5000..].to_vec(),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED, "interop {interop}");
        assert_eq!(get(&server, &path).await, (StatusCode::OK, data));
    }
}

/// An append cut off by `kill -9`: after the restart the offset is at most what was sent and
/// its bytes are right; the upload resumes from there on the same resource.
async fn resumed_after_kill(extra: &str) {
    let server = TestServer::start(&format!("{extra}BufferSize = 4096\n"));
    let data = payload(2_000_000, 6);
    let path = "draft/killed.bin";
    let len = data.len().to_string();
    let loc = location(&create(&server, path, data.len(), &[]).await);
    // Half the file in an append that never ends, then the server dies.
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nUpload-Draft-Interop-Version: 8\r\nUpload-Complete: ?1\r\n\
         Upload-Offset: 0\r\nContent-Type: application/partial-upload\r\nContent-Length: {len}",
        server.addr
    );
    let mut streaming = resumable::Streaming::start(server.addr, &head, &data[..1_000_000]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let dir = server.stop_keep_dir("KILL");
    let _ = streaming.send(b"x");
    let server = TestServer::start_in(dir, &format!("{extra}BufferSize = 4096\n"));
    let r = retrieve(&server, &loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let at = offset(&r);
    assert!(at <= 1_000_000, "offset {at} past what was sent");
    assert_eq!(header(&r, "upload-complete").as_deref(), Some("?0"));
    // On Redis the dead instance's lock on the upload lasts its TTL: 423 with Retry-After
    // until then, as a client retries.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let r = loop {
        let r = append(&server, &loc, at, true, &data[at..]).await;
        if r.status() != StatusCode::LOCKED || std::time::Instant::now() > deadline {
            break r;
        }
        assert_eq!(header(&r, "retry-after").as_deref(), Some("1"));
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    };
    assert_eq!(r.status(), StatusCode::CREATED, "resumed at {at}");
    assert_eq!(get(&server, path).await, (StatusCode::OK, data));
}

/// Example 1 of the draft as an iOS client lives it: the whole file in the creation request,
/// the `104 (Upload Resumption Supported)` with the upload resource arriving while the content
/// is still being sent, the connection lost, then offset retrieval and the rest appended. Then
/// a creation that completes, with its 104 and its 201 on one keep-alive connection that
/// serves another request after them; and no 104 without the draft's headers or on HTTP/1.0.
async fn interim_104_names_the_resource_before_the_content(extra: &str) {
    use std::time::Duration;
    let server = TestServer::start(extra);
    let data = payload(400_000, 7);
    let path = "draft/interim.bin";
    let url = server.signed_v(path, path, data.len() as u64);
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nUpload-Draft-Interop-Version: 8\r\nUpload-Complete: ?1\r\n\
         Content-Length: {}",
        server.target(&url),
        server.addr,
        data.len()
    );
    let mut streaming = resumable::Streaming::start(server.addr, &head, &data[..10_000]);
    let interim = streaming
        .response(Duration::from_secs(10))
        .expect("an interim answer while sending");
    assert_eq!(interim.status, 104);
    assert_eq!(interim.header("upload-draft-interop-version"), Some("8"));
    let loc = interim.header("location").expect("Location in the 104").to_string();
    assert!(loc.starts_with(PREFIX), "{loc}");
    assert!(
        interim
            .header("upload-limit")
            .is_some_and(|l| l.starts_with("max-size="))
    );
    streaming.cut();

    // The upload resource the 104 named: its offset, and the rest appended.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let at = loop {
        let r = retrieve(&server, &loc).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        // The broken-off request saves what it got once the server notices the cut.
        let at = offset(&r);
        if at > 0 || std::time::Instant::now() > deadline {
            break at;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(at <= 10_000, "offset {at} past what was sent");
    let r = append(&server, &loc, at, true, &data[at..]).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(get(&server, path).await, (StatusCode::OK, data.clone()));

    // 104 then 201 on one connection, and the connection still serves the next request.
    let other = "draft/interim-2.bin";
    let url = server.signed_v(other, other, 5);
    let request = format!(
        "PUT {} HTTP/1.1\r\nHost: h\r\nUpload-Draft-Interop-Version: 6\r\nUpload-Complete: ?1\r\n\
         Content-Length: 5\r\n\r\nhello\
         GET /upload/{other} HTTP/1.1\r\nHost: h\r\n\r\n",
        server.target(&url),
    );
    let answers = server.raw_responses(request.as_bytes(), Duration::from_secs(2));
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [104, 201, 200], "{answers:?}");
    assert_eq!(answers[0].header("upload-draft-interop-version"), Some("6"));
    assert!(
        answers[0]
            .header("upload-limit")
            .is_some_and(|l| l.contains("expires="))
    );
    assert_eq!(answers[2].body, b"hello");

    // Without the draft's headers, on HTTP/1.0, or through a proxy (which may not forward
    // interim answers): no interim answer.
    let draft_headers = "Upload-Draft-Interop-Version: 8\r\nUpload-Complete: ?1\r\n";
    let proxied = "Upload-Draft-Interop-Version: 8\r\nUpload-Complete: ?1\r\nX-Forwarded-For: 192.0.2.1\r\n";
    for (version, extra) in [("1.1", ""), ("1.0", draft_headers), ("1.1", proxied)] {
        let name = format!("draft/plain-{version}-{}.bin", extra.len());
        let url = server.signed_v(&name, &name, 3);
        let request = format!(
            "PUT {} HTTP/{version}\r\nHost: h\r\n{extra}Content-Length: 3\r\nConnection: close\r\n\r\nabc",
            server.target(&url)
        );
        let answers = server.raw_responses(request.as_bytes(), Duration::from_secs(2));
        let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
        assert_eq!(statuses, [201], "HTTP/{version}, {extra:?}: {answers:?}");
    }
}
