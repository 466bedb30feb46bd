//! Uploads and downloads through the real binary: the happy paths, odd names, and races, on
//! each store (local, and a Garage bucket).

mod common;

use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use common::{TestServer, client, encode_path, parse_responses, payload, put_typed, read_until_closed, wait_until};
use reqwest::StatusCode;

on_each_store!(
    put_then_get_and_head,
    zero_byte_file,
    odd_names_round_trip_under_every_spelling,
    fifty_racing_puts_to_one_path_give_one_201,
    two_hundred_concurrent_distinct_uploads,
    uploads_stay_whole_while_hundreds_of_connections_share_the_read_budget,
    half_closed_connection_still_gets_its_answers,
);

async fn put_then_get_and_head(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let body = payload(100_000, 1);
    let url = server.signed_v("abc123/photo.jpg", "abc123/photo.jpg", body.len() as u64);
    let put = put_typed(&http, &url, "image/jpeg", body.clone()).await;
    assert_eq!(put.status(), StatusCode::CREATED);

    let get = http.get(server.url("abc123/photo.jpg")).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(get.headers()["content-type"], "image/jpeg");
    assert_eq!(get.headers()["content-length"], "100000");
    assert_eq!(get.headers()["accept-ranges"], "bytes");
    assert!(get.headers().get("content-disposition").is_none(), "images stay inline");
    assert_eq!(get.bytes().await.unwrap(), body);

    let head = http.head(server.url("abc123/photo.jpg")).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], "100000");
    assert!(head.bytes().await.unwrap().is_empty());

    assert_eq!(server.stored("abc123/photo.jpg").unwrap(), body);
    assert_eq!(server.temporaries(), 0);
}

async fn zero_byte_file(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let url = server.signed_v("z/empty.txt", "z/empty.txt", 0);
    let put = put_typed(&http, &url, "text/plain", Vec::new()).await;
    assert_eq!(put.status(), StatusCode::CREATED);
    let get = http.get(server.url("z/empty.txt")).send().await.unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(get.headers()["content-length"], "0");
    assert!(get.bytes().await.unwrap().is_empty());
    let head = http.head(server.url("z/empty.txt")).send().await.unwrap();
    assert_eq!(head.headers()["content-length"], "0");
}

async fn odd_names_round_trip_under_every_spelling(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let names = [
        "u1/name with spaces.txt",
        "u2/ünïcødé 文件 😀.bin",
        "u3/a+b&c=d;e%f#g?h!i.dat",
        "u4/(brackets) [and] 'quotes'.png",
        "u5/deep/er/and/deeper.ogg",
    ];
    for (i, name) in names.iter().enumerate() {
        let body = payload(1000 + i, i as u64);
        let url = server.signed_v(&encode_path(name), name, body.len() as u64);
        let put = http.put(&url).body(body.clone()).send().await.unwrap();
        assert_eq!(put.status(), StatusCode::CREATED, "{name}");
        let got = http.get(server.url(&encode_path(name))).send().await.unwrap();
        assert_eq!(got.status(), StatusCode::OK, "{name}");
        assert_eq!(got.bytes().await.unwrap(), body, "{name}");
    }
    // Other spellings of the same decoded path name the same file.
    let lower = encode_path(names[3]).to_lowercase();
    let got = http.get(server.url(&lower)).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK, "lower-case hex");
    let slash = encode_path(names[4]).replace('/', "%2F");
    let got = http.get(server.url(&slash)).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK, "%2F for /");
    // …and a second upload under another spelling conflicts.
    let body = payload(1000 + 3, 3);
    let url = server.signed_v(
        "u4/%28brackets%29%20%5Band%5D%20%27quotes%27.png",
        names[3],
        body.len() as u64,
    );
    let put = http.put(&url).body(body).send().await.unwrap();
    assert_eq!(put.status(), StatusCode::CONFLICT);
}

async fn fifty_racing_puts_to_one_path_give_one_201(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let url = server.signed_v("race/one.bin", "race/one.bin", 200_000);
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let (http, url) = (http.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let body = payload(200_000, 1000 + i);
            let status = http.put(&url).body(body.clone()).send().await.unwrap().status();
            (status, body)
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::CREATED => winners.push(body),
            StatusCode::CONFLICT => {}
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one 201");
    let stored = http
        .get(server.url("race/one.bin"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(stored, winners[0], "the stored file is the winner's, intact");
    assert_eq!(server.temporaries(), 0, "losers leave nothing behind");
}

async fn two_hundred_concurrent_distinct_uploads(store: &str) {
    let server = TestServer::start(store);
    let http = client();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let http = http.clone();
        let path = format!("many/{i:03}/file {i}.bin");
        let url = server.signed_v(&encode_path(&path), &path, 20_000 + i);
        let get_url = server.url(&encode_path(&path));
        tasks.push(tokio::spawn(async move {
            let body = payload(20_000 + i as usize, i);
            let put = http.put(&url).body(body.clone()).send().await.unwrap();
            assert_eq!(put.status(), StatusCode::CREATED);
            let got = http.get(&get_url).send().await.unwrap().bytes().await.unwrap();
            assert_eq!(got, body, "file {i} reads back byte-exact");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(server.temporaries(), 0);
}

async fn uploads_stay_whole_while_hundreds_of_connections_share_the_read_budget(store: &str) {
    let server = TestServer::start(store);
    // 300 idle connections make every connection's reads capped (server::read_share): the
    // uploads below reach hyper in small reads and must still arrive byte-exact.
    let idle: Vec<_> = (0..300)
        .map(|_| server.connect(std::time::Duration::from_secs(5)))
        .collect();
    let http = client();
    let mut tasks = Vec::new();
    for i in 0..8u64 {
        let http = http.clone();
        let path = format!("shared/{i}.bin");
        let size = 3 * 1024 * 1024 + i as usize * 4099;
        let url = server.signed_v(&path, &path, size as u64);
        let get_url = server.url(&path);
        tasks.push(tokio::spawn(async move {
            let body = payload(size, 100 + i);
            let put = http.put(&url).body(body.clone()).send();
            let put = tokio::time::timeout(std::time::Duration::from_secs(30), put).await;
            assert_eq!(
                put.expect("answered within 30 s").unwrap().status(),
                StatusCode::CREATED
            );
            let got = http.get(&get_url).send().await.unwrap().bytes().await.unwrap();
            assert!(got == body, "file {i} reads back byte-exact");
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    drop(idle);
    assert_eq!(server.temporaries(), 0);
}

/// Sends `request` on a fresh connection, half-closes it (`shutdown(SHUT_WR)`, as `nc -N` and
/// some scripts do) and returns every answer read until the server closes.
fn half_closed_exchange(server: &TestServer, request: &[u8]) -> Vec<common::RawResponse> {
    let mut s = server.connect(Duration::from_secs(10));
    s.write_all(request).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    parse_responses(&read_until_closed(&mut s, Duration::from_secs(10)))
}

/// Issue #14: a client that half-closes its connection after a complete request is still
/// waiting for the answer and must get it, for uploads and downloads, one request or several.
/// A half-close in the middle of a body is still a broken-off upload.
async fn half_closed_connection_still_gets_its_answers(store: &str) {
    let server = TestServer::start(store);
    let body = payload(50_000, 14);
    let put = |path: &str, body: &[u8]| {
        let target = server.target(&server.signed_v(path, path, body.len() as u64));
        let mut r = format!(
            "PUT {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let get = |path: &str| format!("GET /upload/{path} HTTP/1.1\r\nHost: test\r\n\r\n").into_bytes();

    let answers = half_closed_exchange(&server, &put("half/one.bin", &body));
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [201], "PUT then half-close; log:\n{}", server.log());
    assert_eq!(server.stored("half/one.bin").unwrap(), body);

    let answers = half_closed_exchange(&server, &get("half/one.bin"));
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200], "GET then half-close");
    assert_eq!(answers[0].body, body, "the whole body");

    // Two requests on one connection, then the half-close: both answered, in order.
    let mut both = put("half/two.bin", &body[..1000]);
    both.extend_from_slice(&get("half/one.bin"));
    let answers = half_closed_exchange(&server, &both);
    let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [201, 200], "PUT and GET then half-close");
    assert_eq!(answers[1].body, body);
    assert_eq!(server.stored("half/two.bin").unwrap(), &body[..1000]);

    // Half of a body, then the half-close: the upload broke off; nothing is stored.
    let whole = put("half/short.bin", &body);
    let answers = half_closed_exchange(&server, &whole[..whole.len() - body.len() / 2]);
    assert!(
        answers.iter().all(|r| r.status != 201),
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    server.wait_for_access("PUT", "/upload/half/short.bin", Duration::from_secs(10));
    assert!(
        wait_until(Duration::from_secs(10), || server.temporaries() == 0),
        "temporary left behind"
    );
    assert_eq!(server.stored("half/short.bin"), None);
}
