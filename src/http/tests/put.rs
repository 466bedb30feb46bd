//! The whole-file PUT ([`crate::http::put`]) in process.

use super::*;

#[tokio::test]
async fn a_whole_put_answers_201_and_stores_exactly_the_body() {
    let server = server();
    let bytes = pattern(10_000);
    let response = server.put("a/photo.jpg", &bytes).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(
        response.headers().contains_key("x-session-token"),
        "every PUT answer has one"
    );
    assert_eq!(server.file("a/photo.jpg").await, Some(bytes));
    assert_eq!(
        server.store.sweep_staging(Duration::ZERO).await.unwrap(),
        0,
        "no temporary left"
    );
}

#[tokio::test]
async fn a_second_put_to_a_key_answers_409_and_leaves_the_first_file() {
    let server = server();
    // Small bodies are refused by the commit, large ones before their body is read.
    for (key, len) in [("small", 100), ("large", BUFFER_BYTES + 1)] {
        let first = pattern(len);
        assert_eq!(server.put(key, &first).await.status(), StatusCode::CREATED);
        let second = vec![b'x'; len];
        assert_eq!(server.put(key, &second).await.status(), StatusCode::CONFLICT, "{key}");
        assert_eq!(server.file(key).await, Some(first), "{key}");
    }
    assert_eq!(
        server.store.sweep_staging(Duration::ZERO).await.unwrap(),
        0,
        "no temporary left"
    );
}

#[tokio::test]
async fn a_wrong_token_answers_403_and_stores_nothing() {
    let server = server();
    let bytes = pattern(1000);
    let v = |secret: &str, key: &str, size: u64| sign_v(&Secret::new(secret), key, size);
    let wrong = [
        ("size", v(SECRET, "secret/file", 999)),
        ("path", v(SECRET, "other/file", 1000)),
        ("secret", v("another-secret-0123456789", "secret/file", 1000)),
    ];
    for (what, token) in wrong {
        let uri = format!("/upload/secret/file?v={token}");
        let body = Full::new(Bytes::copy_from_slice(&bytes));
        let response = server.send(put_request(&uri, 1000, Some(SESSION), body)).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "wrong {what}");
    }
    server.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_put_over_max_upload_size_answers_413_and_stores_nothing() {
    let server = server();
    let bytes = pattern(MAX_UPLOAD_BYTES as usize + 1);
    let response = server.put("too/big", &bytes).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    server.assert_nothing_stored().await;
    let at_limit = pattern(MAX_UPLOAD_BYTES as usize);
    assert_eq!(server.put("at/limit", &at_limit).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_body_shorter_than_content_length_answers_400_and_stores_nothing() {
    let server = server();
    let bytes = pattern(5000);
    let ends_early = frames(vec![data(&bytes[..3000])]);
    let fails = frames(vec![data(&bytes[..3000]), Err(io::Error::other("connection reset"))]);
    for body in [ends_early, fails] {
        let response = server.send(put_request(&slot("short", 5000), 5000, None, body)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        // Without a token of its own the client cannot come back for the bytes.
        server.assert_nothing_stored().await;
    }
}

#[tokio::test]
async fn a_broken_off_put_with_a_session_token_is_kept_and_resumed_with_content_range() {
    let server = server();
    let bytes = pattern(20_000);
    let body = frames(vec![
        data(&bytes[..6000]),
        data(&bytes[6000..7000]),
        Err(io::Error::other("connection reset")),
    ]);
    let response = server
        .send(put_request(&slot("resumed/file", 20_000), 20_000, Some(SESSION), body))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()["x-session-token"], SESSION);
    assert_eq!(server.file("resumed/file").await, None, "nothing at the key");
    assert_eq!(
        server.store.sweep_staging(Duration::ZERO).await.unwrap(),
        0,
        "no temporary left"
    );
    assert_eq!(server.session_head("resumed/file", 20_000).await, Ok((7000, 20_000)));

    let rest = Full::new(Bytes::copy_from_slice(&bytes[7000..]));
    let mut resume = put_request(&slot("resumed/file", 20_000), 13_000, Some(SESSION), rest);
    resume
        .headers_mut()
        .insert("content-range", "bytes 7000-19999/20000".parse().unwrap());
    assert_eq!(server.send(resume).await.status(), StatusCode::CREATED);
    assert_eq!(server.file("resumed/file").await, Some(bytes));
    assert_eq!(
        server.session_head("resumed/file", 20_000).await,
        Err(StatusCode::NOT_FOUND),
        "the partial upload is forgotten"
    );
    assert_eq!(
        server.store.partials().sweep(Duration::ZERO).await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_put_that_ends_early_with_a_session_token_keeps_its_bytes_for_resumption() {
    let server = server();
    let bytes = pattern(5000);
    let body = frames(vec![data(&bytes[..1234])]);
    let response = server
        .send(put_request(&slot("early", 5000), 5000, Some(SESSION), body))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.session_head("early", 5000).await, Ok((1234, 5000)));
    // A whole PUT of the same session replaces the partial upload.
    let whole = Full::new(Bytes::copy_from_slice(&bytes));
    let response = server
        .send(put_request(&slot("early", 5000), 5000, Some(SESSION), whole))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(server.file("early").await, Some(bytes));
    assert_eq!(server.session_head("early", 5000).await, Err(StatusCode::NOT_FOUND));
}
