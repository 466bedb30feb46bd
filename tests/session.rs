//! The seed's X-Session-Token resumption (SPEC §4.1) through the real binary: tokens made and
//! returned, broken-off PUTs kept invisibly, HEAD with the token, resume with Content-Range,
//! the 409/403 answers, restarts and expiry. Every behaviour runs against both state
//! backends (embedded and a Redis of its own) and both stores (local, and a Garage bucket of
//! its own; see `on_both_backends!`).

mod common;
#[path = "common/redis.rs"]
mod redis_fixture;
#[path = "common/resumable.rs"]
#[macro_use]
mod resumable;

use std::time::Duration;

use common::{TestServer, client, payload};
use reqwest::StatusCode;
use resumable::{Backend, Streaming, eventually, header, partial_count, partial_len, partial_starts_with, session_id};

// Behaviours where the state backend plays no part (no expiry, slot claims, restarts or
// backend-specific branches) run on S3 with the Redis state only (the shape of several
// instances), to keep this binary quick; the others run on S3 with both states.
on_both_backends!(
    token_on_every_put_answer: [embedded, redis, s3_redis],
    broken_off_put_is_kept_and_resumed: [embedded, redis, s3_redis],
    stalled_put_is_kept_after_read_timeout: [embedded, redis, s3_redis],
    bad_resumes_never_damage_anything: [embedded, redis, s3_redis],
    whole_put_replaces_a_partial: [embedded, redis, s3_redis],
    expired_partial_is_gone,
    session_survives_restart,
    resume_never_replaces_a_file: [embedded, redis, s3_redis],
    a_slot_keeps_one_broken_off_upload,
);

fn valid_token(t: &str) -> bool {
    (16..=128).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Sends the head of a PUT of `size` bytes with `token` and the first `sent` bytes of `data`,
/// then cuts the connection: a client that lost its network.
fn broken_off_put(server: &TestServer, url: &str, token: &str, data: &[u8], sent: usize) {
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nX-Session-Token: {token}\r\n\
         Content-Type: application/octet-stream",
        server.target(url),
        server.addr,
        data.len()
    );
    Streaming::start(server.addr, &head, &data[..sent]).cut();
}

/// HEAD with the token: (status, Upload-Offset, Upload-Length).
async fn session_head(url: &str, token: &str) -> (StatusCode, Option<u64>, Option<u64>) {
    let r = client()
        .head(url)
        .header("x-session-token", token)
        .send()
        .await
        .unwrap();
    let num = |n| header(&r, n).map(|v| v.parse::<u64>().unwrap());
    (r.status(), num("upload-offset"), num("upload-length"))
}

/// Waits until the broken-off PUT's bytes are recorded; returns the offset. Locally the
/// bytes are kept in one go when the PUT breaks off, so the first answer with an offset is
/// the one to check. On S3 a PUT with the client's token is an unfinished upload from its
/// first byte (offset 0 while it runs, its bytes durable when it ends), so there this waits
/// (up to the same deadline) for the offset to reach the `sent` bytes, and returns the last
/// one seen.
async fn wait_kept(server: &TestServer, url: &str, token: &str, sent: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut seen = None;
    loop {
        if let (StatusCode::OK, Some(offset), _) = session_head(url, token).await {
            if server.s3().is_none() || offset >= sent {
                return offset;
            }
            seen = Some(offset);
        }
        if std::time::Instant::now() >= deadline
            && let Some(offset) = seen
        {
            return offset;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the broken-off upload is kept; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// PUT of `body` resuming at `first` of `total` with `token`.
async fn resume(url: &str, token: &str, first: u64, total: u64, body: Vec<u8>) -> reqwest::Response {
    client()
        .put(url)
        .header("x-session-token", token)
        .header("content-range", format!("bytes {first}-{}/{total}", total - 1))
        .body(body)
        .send()
        .await
        .unwrap()
}

async fn token_on_every_put_answer(extra: &str) {
    let server = TestServer::start(&format!("{extra}MaxUploadSize = 100000\n"));
    let http = client();
    let data = payload(1000, 30);
    let path = "tok/a.bin";
    let url = server.signed_v(path, path, 1000);

    // Made when absent, and different each time.
    let r = http.put(&url).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let made = header(&r, "x-session-token").expect("X-Session-Token on 201");
    assert!(valid_token(&made), "made token {made:?}");
    let r = http.put(&url).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let again = header(&r, "x-session-token").expect("X-Session-Token on 409");
    assert!(valid_token(&again));
    assert_ne!(made, again, "a fresh token per upload");

    // The client's is echoed on every answer: success and refusals.
    let token = "client-Token_0123456789";
    let fresh = server.signed_v("tok/b.bin", "tok/b.bin", 1000);
    let cases = [
        (fresh.clone(), data.clone(), StatusCode::CREATED),
        (fresh, data.clone(), StatusCode::CONFLICT),
        (
            format!("{}?v={}", server.url("tok/c.bin"), "0".repeat(64)),
            data.clone(),
            StatusCode::FORBIDDEN,
        ),
        (
            server.signed_v("tok/d.bin", "tok/d.bin", 100_001),
            vec![0; 100_001],
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (url, body, want) in cases {
        let r = http
            .put(&url)
            .header("x-session-token", token)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
        assert_eq!(header(&r, "x-session-token").as_deref(), Some(token), "on {want}");
    }
    let r = resume(
        &server.signed_v("tok/e.bin", "tok/e.bin", 1000),
        token,
        500,
        1000,
        data[500..].to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT, "resume without a partial");
    assert_eq!(
        header(&r, "x-session-token").as_deref(),
        Some(token),
        "on a resume's 409"
    );

    // A malformed token is refused, not silently replaced.
    for bad in ["short", "has spaces in it 0123456", &"x".repeat(129)] {
        let url = server.signed_v("tok/f.bin", "tok/f.bin", 1000);
        let r = http
            .put(&url)
            .header("x-session-token", bad)
            .body(data.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "token {bad:?}");
    }
    assert_eq!(
        http.get(server.url("tok/f.bin")).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
}

async fn broken_off_put_is_kept_and_resumed(extra: &str) {
    let server = TestServer::start(extra);
    let backend = Backend::of(extra);
    let data = payload(300_000, 31);
    let total = data.len() as u64;
    let path = "sess/photo.jpg";
    let url = server.signed_v(path, path, total);
    let token = "resume-token-0123456789abcdef";
    broken_off_put(&server, &url, token, &data, 120_000);

    let offset = wait_kept(&server, &url, token, 120_000).await;
    assert_eq!(offset, 120_000, "every byte received is kept");
    let (_, _, length) = session_head(&url, token).await;
    assert_eq!(length, Some(total), "Upload-Length is the signed total");
    let id = session_id(token, path);
    assert_eq!(
        partial_len(&server, &id),
        Some(120_000),
        "the offset is the bytes on disk"
    );
    assert!(partial_starts_with(&server, &id, &data[..120_000]));
    assert!(backend.record(&server, &id).is_some());

    // Invisible at the GET URL, and to other tokens.
    let http = client();
    assert_eq!(
        http.get(server.url(path)).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        http.head(server.url(path)).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        http.head(&url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "HEAD without token"
    );
    assert!(server.stored_files().is_empty());
    let (status, ..) = session_head(&url, "another-token-0123456789").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "another session sees nothing");

    let r = resume(&url, token, offset, total, data[offset as usize..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "x-session-token").as_deref(), Some(token));
    let got = http.get(server.url(path)).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert!(got.bytes().await.unwrap() == data, "byte-identical");
    assert_eq!(
        session_head(&url, token).await.0,
        StatusCode::NOT_FOUND,
        "the partial is gone"
    );
    assert_eq!(partial_len(&server, &id), None);
    assert!(backend.record(&server, &id).is_none());
    assert_eq!(server.temporaries(), 0);
}

async fn stalled_put_is_kept_after_read_timeout(extra: &str) {
    let server = TestServer::start(&format!("{extra}ReadTimeout = 1\n"));
    let data = payload(50_000, 32);
    let total = data.len() as u64;
    let path = "sess/stalled.bin";
    let url = server.signed_v(path, path, total);
    let token = "stalled-token-0123456789";
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {total}\r\nX-Session-Token: {token}",
        server.target(&url),
        server.addr
    );
    let mut put = Streaming::start(server.addr, &head, &data[..20_000]);
    let answer = put
        .response(Duration::from_secs(10))
        .expect("an answer after ReadTimeout");
    assert_eq!(answer.status, 408);
    assert_eq!(answer.header("x-session-token"), Some(token));
    assert_eq!(wait_kept(&server, &url, token, 20_000).await, 20_000);
    let r = resume(&url, token, 20_000, total, data[20_000..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = client().get(server.url(path)).send().await.unwrap();
    assert!(got.bytes().await.unwrap() == data);
}

async fn bad_resumes_never_damage_anything(extra: &str) {
    let server = TestServer::start(extra);
    let data = payload(100_000, 33);
    let total = data.len() as u64;
    let path = "sess/bad.bin";
    let url = server.signed_v(path, path, total);
    let token = "bad-resume-token-0123456789";
    broken_off_put(&server, &url, token, &data, 40_000);
    assert_eq!(wait_kept(&server, &url, token, 40_000).await, 40_000);
    let id = session_id(token, path);
    let intact = |what: String| {
        let url = url.clone();
        let server = &server;
        let id = id.clone();
        let data = &data;
        async move {
            assert_eq!(
                session_head(&url, token).await,
                (StatusCode::OK, Some(40_000), Some(total)),
                "{what}: partial unchanged"
            );
            assert_eq!(
                partial_len(server, &id),
                Some(40_000),
                "{what}: bytes on disk unchanged"
            );
            assert!(partial_starts_with(server, &id, &data[..40_000]), "{what}");
            assert!(server.stored_files().is_empty(), "{what}: nothing stored");
        }
    };

    // Wrong offsets: 409 with the real one.
    for first in [0u64, 39_999, 40_001, 99_999] {
        let r = resume(&url, token, first, total, data[first as usize..].to_vec()).await;
        assert_eq!(r.status(), StatusCode::CONFLICT, "offset {first}");
        assert_eq!(
            header(&r, "upload-offset").as_deref(),
            Some("40000"),
            "409 tells the offset"
        );
        intact(format!("offset {first}")).await;
    }
    // A total other than the signed size: the HMAC fails.
    for other in [total + 1, total - 1] {
        let r = resume(&url, token, 40_000, other, vec![0; (other - 40_000) as usize]).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "total {other}");
        intact(format!("total {other}")).await;
    }
    // HEAD with the token but a wrong signature.
    let forged = format!("{}?v={}", server.url(path), "0".repeat(64));
    assert_eq!(session_head(&forged, token).await.0, StatusCode::FORBIDDEN);
    let r = resume(&forged, token, 40_000, total, data[40_000..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    intact("forged token".into()).await;
    // Malformed Content-Range; body longer or shorter than the range.
    for range in [
        "bytes 40000-99998/100000",
        "bytes */100000",
        "bytes=40000-99999/100000",
        "40000-99999/100000",
    ] {
        let r = client()
            .put(&url)
            .header("x-session-token", token)
            .header("content-range", range)
            .body(data[40_000..].to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "Content-Range {range:?}");
        intact(format!("Content-Range {range:?}")).await;
    }
    let r = resume(&url, token, 40_000, total, data[40_000..90_000].to_vec()).await;
    assert!(r.status().is_client_error(), "short body: {}", r.status());
    let (status, offset, _) = session_head(&url, token).await;
    assert_eq!(status, StatusCode::OK);
    let offset = offset.unwrap();
    assert!(
        (40_000..100_000).contains(&offset),
        "a short resume keeps at most what came"
    );
    assert!(partial_starts_with(&server, &id, &data[..offset as usize]));
    assert!(server.stored_files().is_empty());

    let r = resume(&url, token, offset, total, data[offset as usize..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = client().get(server.url(path)).send().await.unwrap();
    assert!(got.bytes().await.unwrap() == data);

    // A stored file withstands resumes aimed at it.
    let r = resume(&url, token, 40_000, total, data[40_000..].to_vec()).await;
    assert!(
        r.status().is_client_error(),
        "resume onto a stored file: {}",
        r.status()
    );
    let got = client().get(server.url(path)).send().await.unwrap();
    assert!(got.bytes().await.unwrap() == data, "the stored file is untouched");
}

async fn whole_put_replaces_a_partial(extra: &str) {
    let server = TestServer::start(extra);
    let data = payload(60_000, 34);
    let path = "sess/whole.bin";
    let url = server.signed_v(path, path, 60_000);
    let token = "whole-put-token-0123456789";
    broken_off_put(&server, &url, token, &data, 10_000);
    assert_eq!(wait_kept(&server, &url, token, 10_000).await, 10_000);
    let r = client()
        .put(&url)
        .header("x-session-token", token)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(session_head(&url, token).await.0, StatusCode::NOT_FOUND);
    assert_eq!(partial_count(&server), 0, "the older partial is forgotten");
    let got = client().get(server.url(path)).send().await.unwrap();
    assert!(got.bytes().await.unwrap() == data);
}

async fn expired_partial_is_gone(extra: &str) {
    let server = TestServer::start(&format!("{extra}UploadExpiry = \"1h\"\n"));
    let backend = Backend::of(extra);
    let data = payload(30_000, 35);
    let path = "sess/expired.bin";
    let url = server.signed_v(path, path, 30_000);
    let token = "expiring-token-0123456789";
    broken_off_put(&server, &url, token, &data, 10_000);
    assert_eq!(wait_kept(&server, &url, token, 10_000).await, 10_000);
    let id = session_id(token, path);
    if let Backend::Redis(c) = &backend {
        let ttl = c.cmd(&["PTTL", &resumable::redis_record_key(&id)]).int();
        assert!(
            (3_500_000..=3_600_000).contains(&ttl),
            "record expires after UploadExpiry: {ttl} ms"
        );
    }
    backend.age_record(&server, &id);

    // Past UploadExpiry the partial cannot be resumed …
    let r = resume(&url, token, 10_000, 30_000, data[10_000..].to_vec()).await;
    assert!(
        r.status() == StatusCode::NOT_FOUND || r.status() == StatusCode::CONFLICT,
        "resuming an expired partial: {}",
        r.status()
    );
    assert_eq!(
        client().get(server.url(path)).send().await.unwrap().status(),
        StatusCode::NOT_FOUND,
        "an expired partial never becomes the file"
    );
    // … nor found.
    assert_eq!(session_head(&url, token).await.0, StatusCode::NOT_FOUND);
    assert_eq!(partial_len(&server, &id), None, "its bytes are removed");
    // Uploading again from scratch works.
    let r = client()
        .put(&url)
        .header("x-session-token", token)
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

async fn session_survives_restart(extra: &str) {
    let backend = Backend::of(extra);
    let server = TestServer::start(extra);
    let data = payload(90_000, 36);
    let total = data.len() as u64;
    let path = "sess/restart.bin";
    let url_path = |s: &TestServer| s.signed_v(path, path, total);
    let token = "restart-token-0123456789";
    broken_off_put(&server, &url_path(&server), token, &data, 30_000);
    assert_eq!(wait_kept(&server, &url_path(&server), token, 30_000).await, 30_000);

    let dir = server.stop_keep_dir("TERM");
    let server = TestServer::start_in(dir, extra);
    let (status, offset, length) = session_head(&url_path(&server), token).await;
    assert_eq!(
        (status, offset, length),
        (StatusCode::OK, Some(30_000), Some(total)),
        "after SIGTERM"
    );

    let server = if backend.is_embedded() {
        // Resume partly, break off again, then kill -9.
        let url = url_path(&server);
        let head = format!(
            "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\nX-Session-Token: {token}\r\n\
             Content-Range: bytes 30000-{}/{total}",
            server.target(&url),
            server.addr,
            total - 30_000,
            total - 1
        );
        Streaming::start(server.addr, &head, &data[30_000..50_000]).cut();
        let moved = eventually(Duration::from_secs(10), || {
            let url = url.clone();
            async move { session_head(&url, token).await.1 == Some(50_000) }
        })
        .await;
        assert!(moved, "a broken-off resume keeps its bytes; log:\n{}", server.log());
        let dir = server.stop_keep_dir("KILL");
        let server = TestServer::start_in(dir, extra);
        let (status, offset, _) = session_head(&url_path(&server), token).await;
        assert_eq!((status, offset), (StatusCode::OK, Some(50_000)), "after kill -9");
        server
    } else {
        server
    };
    let url = url_path(&server);
    let offset = session_head(&url, token).await.1.unwrap();
    let r = resume(&url, token, offset, total, data[offset as usize..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = client().get(server.url(path)).send().await.unwrap();
    assert!(got.bytes().await.unwrap() == data);
}

/// A file that reached the path while the session's upload was broken off is never replaced.
async fn resume_never_replaces_a_file(extra: &str) {
    let server = TestServer::start(extra);
    let data = payload(40_000, 37);
    let other = payload(40_000, 38);
    let path = "sess/taken.bin";
    let url = server.signed_v(path, path, 40_000);
    let token = "taken-path-token-0123456789";
    broken_off_put(&server, &url, token, &data, 15_000);
    assert_eq!(wait_kept(&server, &url, token, 15_000).await, 15_000);
    let r = client().put(&url).body(other.clone()).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "a PUT without the token takes the path"
    );
    let r = resume(&url, token, 15_000, 40_000, data[15_000..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let got = client().get(server.url(path)).send().await.unwrap();
    assert!(got.bytes().await.unwrap() == other, "the stored file is untouched");
    assert_eq!(server.temporaries(), 0);
}

/// One slot keeps one unfinished upload: a broken-off PUT with another session token replaces
/// the bytes the first one kept (one slot token cannot pile up partial files).
async fn a_slot_keeps_one_broken_off_upload(extra: &str) {
    let server = TestServer::start(extra);
    let data = payload(100_000, 35);
    let total = data.len() as u64;
    let path = "sess/one-per-slot.bin";
    let url = server.signed_v(path, path, total);
    let first = "first-session-token-0123456789";
    let second = "second-session-token-0123456789";
    broken_off_put(&server, &url, first, &data, 40_000);
    assert_eq!(wait_kept(&server, &url, first, 40_000).await, 40_000);
    broken_off_put(&server, &url, second, &data, 30_000);
    assert_eq!(wait_kept(&server, &url, second, 30_000).await, 30_000);
    assert_eq!(session_head(&url, first).await.0, StatusCode::NOT_FOUND, "replaced");
    assert_eq!(partial_count(&server), 1, "one partial file for the slot");
    // Another slot keeps its own.
    let other = server.signed_v("sess/other.bin", "sess/other.bin", total);
    broken_off_put(&server, &other, first, &data, 20_000);
    assert_eq!(wait_kept(&server, &other, first, 20_000).await, 20_000);
    assert_eq!(partial_count(&server), 2);
    let r = resume(&url, second, 30_000, total, data[30_000..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let got = client()
        .get(server.url(path))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got, data);
}
