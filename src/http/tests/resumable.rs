//! tus and session-token requests in process, where a test needs a state that only a crash or
//! the passing of time makes (an upload complete but not committed, an expired upload).

use super::*;
use crate::auth::sign_v3;
use crate::clock::now_unix;
use crate::resumable::{Append, Keep, NewUpload};
use crate::state::{Concat, UploadKind};

fn new_upload(id: &str, kind: UploadKind, key: &str, length: u64) -> NewUpload {
    NewUpload {
        id: id.to_string(),
        kind,
        key: FileKey::parse_decoded(key).unwrap(),
        length: Some(length),
        content_type: "application/octet-stream".to_string(),
        metadata: None,
        concat: Concat::None,
    }
}

fn keep(expiry: Duration) -> Keep {
    Keep {
        expiry,
        max_unfinished_bytes: 0,
    }
}

fn head(uri: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::builder().method(Method::HEAD).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(Bytes::new())).unwrap()
}

/// A crash between the commit of a finished tus upload and the removal of its record leaves
/// a record with all its bytes and a file at its path. HEAD must not answer 409 (tus clients
/// give up on it): the upload is complete as far as its client can tell.
#[tokio::test]
async fn head_of_an_upload_committed_before_a_crash_answers_complete() {
    let server = server();
    let engine = server.state.engine();
    let id = "0123456789abcdef0123456789abcdef";
    let bytes = pattern(5000);
    let mut record = engine
        .create(
            new_upload(id, UploadKind::Tus, "t/crash.bin", 5000),
            keep(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    let held = engine.lock(id).await.unwrap();
    let bounds = Append {
        max_bytes: 5000,
        checksum: None,
        read_timeout: Duration::from_secs(10),
        expiry: Duration::from_secs(3600),
        max_unfinished_bytes: 0,
    };
    let mut body = Full::new(Bytes::from(bytes.clone()));
    engine.append(&mut record, &held, &mut body, bounds).await.unwrap();
    engine.unlock(held).await;
    assert_eq!(record.offset, 5000);
    // The commit happened; the record's removal did not.
    assert_eq!(server.put("t/crash.bin", &bytes).await.status(), StatusCode::CREATED);

    let uri = format!("/upload/.hmac-file-server/tus/{id}");
    let response = server.send(head(&uri, &[("tus-resumable", "1.0.0")])).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["upload-offset"], "5000");
    assert_eq!(response.headers()["upload-length"], "5000");
    assert_eq!(server.file("t/crash.bin").await, Some(bytes), "the file stays");
    let again = server.send(head(&uri, &[("tus-resumable", "1.0.0")])).await;
    assert_eq!(again.status(), StatusCode::NOT_FOUND, "the upload is over");
}

/// A session HEAD checks the token before it says anything about the upload or removes an
/// expired one.
#[tokio::test]
async fn session_head_checks_the_token_before_removing_an_expired_upload() {
    let server = server();
    let engine = server.state.engine();
    let key = "s/expired.bin";
    let session = crate::http::session::SessionToken {
        value: SESSION.to_string(),
        from_client: true,
    };
    let id = session.upload_id(key);
    let mut staged = server.store.stage_local();
    staged.write(Bytes::from(pattern(100))).await.unwrap();
    let new = new_upload(&id, UploadKind::Session, key, 1000);
    engine.keep_broken_off(staged, new, keep(Duration::ZERO)).await.unwrap();
    // Expired once a second has passed (expiry is in whole seconds).
    let start = now_unix();
    while now_unix() <= start + 1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let wrong = format!("/upload/{key}?v={}", sign_v(&Secret::new("another-secret"), key, 1000));
    let response = server.send(head(&wrong, &[("x-session-token", SESSION)])).await;
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "a wrong token is refused first"
    );
    assert!(
        engine.peek(&id, UploadKind::Session).await.unwrap().is_some(),
        "a request with a wrong token removes nothing"
    );
    assert_eq!(server.session_head(key, 1000).await, Err(StatusCode::NOT_FOUND));
    assert!(
        engine.peek(&id, UploadKind::Session).await.unwrap().is_none(),
        "the right token's HEAD removes the expired upload"
    );
}

/// With no upload kept, a v3 token (which signs no size) is still checked: a forged one gets
/// 403, not a 404 that tells it apart from a real one.
#[tokio::test]
async fn session_head_without_an_upload_checks_a_v3_token() {
    let server = server();
    let key = "s/none.bin";
    let expires = now_unix() + 600;
    let good = sign_v3(&Secret::new(SECRET), "PUT", expires, &format!("/upload/{key}"));
    let forged = sign_v3(&Secret::new("forged"), "PUT", expires, &format!("/upload/{key}"));
    for (mac, status) in [(forged, StatusCode::FORBIDDEN), (good, StatusCode::NOT_FOUND)] {
        let uri = format!("/upload/{key}?v3={mac}&expires={expires}");
        let response = server.send(head(&uri, &[("x-session-token", SESSION)])).await;
        assert_eq!(response.status(), status);
    }
}

/// Found by the `handler` fuzz target: a tus request whose body brings every byte of the
/// upload and then breaks (a chunked body cut before its end) stored the file but answered
/// 400, so a client still listening retried into a 404 and then a 409. Every byte is in: the
/// answer is a success, and the file is whole.
#[tokio::test]
async fn a_body_that_breaks_after_the_last_byte_completes_the_upload() {
    let server = server();
    let bytes = pattern(3000);
    let body = frames(vec![
        data(&bytes[..1000]),
        data(&bytes[1000..]),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "cut after the last byte",
        )),
    ]);
    let request = Request::builder()
        .method(Method::POST)
        .uri(slot("t/broken-after.bin", 3000))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "3000")
        .header("content-type", "application/offset+octet-stream")
        .body(body)
        .unwrap();
    let response = server.send(request).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["upload-offset"], "3000");
    assert_eq!(server.file("t/broken-after.bin").await, Some(bytes.clone()));

    // The same on a PATCH: an upload created empty, then all its bytes in one broken body.
    let request = Request::builder()
        .method(Method::POST)
        .uri(slot("t/patched.bin", 3000))
        .header("tus-resumable", "1.0.0")
        .header("upload-length", "3000")
        .body(frames(vec![]))
        .unwrap();
    let response = server.send(request).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let body = frames(vec![
        data(&bytes),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "cut after the last byte",
        )),
    ]);
    let request = Request::builder()
        .method(Method::PATCH)
        .uri(location)
        .header("tus-resumable", "1.0.0")
        .header("upload-offset", "0")
        .header("content-type", "application/offset+octet-stream")
        .body(body)
        .unwrap();
    let response = server.send(request).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.file("t/patched.bin").await, Some(bytes));
}
