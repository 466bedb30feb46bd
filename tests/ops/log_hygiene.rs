//! Log hygiene: neither logs nor answers ever show the secret, tokens or query strings.

use std::time::Duration;

use hmac_file_server::auth;
use hmac_file_server::config::Secret;

use crate::common::{SECRET, TestServer, client, now_unix, secret};
use crate::helpers::put;

#[tokio::test]
async fn logs_never_show_secrets_tokens_or_queries() {
    let server = TestServer::start("");
    let http = client();
    let wrong = Secret::new("wrong-secret-for-hygiene-0000");
    let mut sent: Vec<String> = Vec::new(); // every token and query string we send
    let check = |r: reqwest::Response, want: u16, what: &str, sent: &[String]| {
        let what = what.to_string();
        let sent = sent.to_vec();
        async move {
            assert_eq!(r.status().as_u16(), want, "{what}");
            let body = r.text().await.unwrap();
            assert!(!body.contains(SECRET), "{what}: answer has the secret");
            for s in &sent {
                assert!(!body.contains(s.as_str()), "{what}: answer has {s}");
            }
        }
    };
    let body = b"hygiene!".to_vec();
    let len = body.len() as u64;

    // v, good and bad.
    for (path, s, want) in [("h/v-good", secret(), 201), ("h/v-bad", wrong.clone(), 403)] {
        let t = auth::sign_v(&s, path, len);
        sent.push(t.clone());
        let r = put(&http, &format!("{}?v={t}", server.url(path)), body.clone()).await;
        check(r, want, path, &sent).await;
    }
    // v2 and Metronome token, good and bad.
    for param in ["v2", "token"] {
        for (s, want, tag) in [(secret(), 201, "good"), (wrong.clone(), 403, "bad")] {
            let path = format!("h/{param}-{tag}");
            let t = auth::sign_v2(&s, &path, len, "text/plain");
            sent.push(t.clone());
            let r = http
                .put(format!("{}?{param}={t}", server.url(&path)))
                .header("content-type", "text/plain")
                .body(body.clone())
                .send()
                .await
                .unwrap();
            check(r, want, &path, &sent).await;
        }
    }
    // v3: good, wrong secret, expired.
    let exp = now_unix() + 600;
    for (path, s, expires, want) in [
        ("h/v3-good", secret(), exp, 201),
        ("h/v3-bad", wrong.clone(), exp, 403),
        ("h/v3-expired", secret(), now_unix() - 60, 403),
    ] {
        let t = auth::sign_v3(&s, "PUT", expires, &format!("/upload/{path}"));
        sent.push(t.clone());
        let r = put(
            &http,
            &format!("{}?v3={t}&expires={expires}", server.url(path)),
            body.clone(),
        )
        .await;
        check(r, want, path, &sent).await;
    }
    // Malformed token and a conflict with a valid one.
    sent.push("zz-not-hex-token-4711".into());
    let r = put(
        &http,
        &format!("{}?v=zz-not-hex-token-4711", server.url("h/malformed")),
        body.clone(),
    )
    .await;
    check(r, 403, "malformed", &sent).await;
    let t = auth::sign_v(&secret(), "h/v-good", len);
    let r = put(&http, &format!("{}?v={t}", server.url("h/v-good")), body.clone()).await;
    check(r, 409, "conflict", &sent).await;
    // A body that breaks off: the server logs the cause.
    let t = auth::sign_v(&secret(), "h/broken", 100);
    sent.push(t.clone());
    let req = format!("PUT /upload/h/broken?v={t} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-ten!!");
    let _ = server.raw(req.as_bytes(), Duration::from_millis(300));
    // DELETE, bad then good.
    for (s, want) in [(wrong.clone(), 403), (secret(), 204)] {
        let t = auth::sign_delete(&s, "h/v2-good", &secret());
        sent.push(t.clone());
        let r = http
            .delete(format!("{}?token={t}", server.url("h/v2-good")))
            .send()
            .await
            .unwrap();
        check(r, want, "delete", &sent).await;
    }
    // GET and HEAD with query strings.
    let q = "cache-buster=hygiene-query-91827";
    sent.push(q.into());
    let r = http
        .get(format!("{}?{q}", server.url("h/v-good")))
        .send()
        .await
        .unwrap();
    check(r, 200, "GET with a query", &sent).await;
    let r = http
        .head(format!("{}?{q}", server.url("h/v3-good")))
        .send()
        .await
        .unwrap();
    check(r, 200, "HEAD with a query", &sent).await;
    let r = http
        .get(format!("{}?{q}", server.url("h/nothing")))
        .send()
        .await
        .unwrap();
    check(r, 404, "GET 404 with a query", &sent).await;

    server.wait_for_access("GET", "/upload/h/nothing", Duration::from_secs(5));
    server.wait_for_access("PUT", "/upload/h/broken", Duration::from_secs(5));
    let log = server.log();
    assert!(
        log.lines().filter(|l| l.contains("method=PUT")).count() >= 9,
        "the access log is there:\n{log}"
    );
    assert!(!log.contains(SECRET), "the secret is in the log:\n{log}");
    for s in &sent {
        assert!(!log.contains(s.as_str()), "{s} is in the log:\n{log}");
    }
    for marker in ["?v=", "?v2=", "?v3=", "?token=", "expires=", "?cache-buster"] {
        assert!(!log.contains(marker), "a query ({marker}) is in the log:\n{log}");
    }
}
