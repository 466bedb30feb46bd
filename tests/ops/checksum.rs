//! ChecksumVerification: Content-Digest and Repr-Digest checked on PUT and reported on
//! PUT, GET and HEAD, on each store.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::StatusCode;
use sha2::{Digest, Sha256, Sha512};

use std::time::Duration;

use crate::common::{TestServer, client, payload, wait_until};
use crate::helpers::header;
use crate::on_each_store;

fn sha256_field(body: &[u8]) -> String {
    format!("sha-256=:{}:", B64.encode(Sha256::digest(body)))
}

on_each_store!(checksum_verification);

async fn checksum_verification(store: &str) {
    let server = TestServer::start(&format!("{store}ChecksumVerification = true"));
    let http = client();
    let put_digest = |path: &str, body: Vec<u8>, digest: Option<(&str, String)>| {
        let mut req = http.put(server.signed_v(path, path, body.len() as u64)).body(body);
        if let Some((name, value)) = digest {
            req = req.header(name, value);
        }
        async move { req.send().await.unwrap() }
    };

    // Correct sha-256 Content-Digest.
    let body = payload(5000, 61);
    let field = sha256_field(&body);
    let r = put_digest("c/good.bin", body.clone(), Some(("content-digest", field.clone()))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        header(&r, "repr-digest").as_deref(),
        Some(field.as_str()),
        "201 Repr-Digest"
    );
    let r = http.get(server.url("c/good.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "repr-digest").as_deref(),
        Some(field.as_str()),
        "GET Repr-Digest"
    );
    assert_eq!(r.bytes().await.unwrap(), body);
    let r = http.head(server.url("c/good.bin")).send().await.unwrap();
    assert_eq!(
        header(&r, "repr-digest").as_deref(),
        Some(field.as_str()),
        "HEAD Repr-Digest"
    );
    let sidecars = server.sidecars();

    // Wrong digests (both fields, both algorithms) and malformed ones: 400, nothing stored.
    let other = payload(5000, 62);
    let wrong512 = format!("sha-512=:{}:", B64.encode(Sha512::digest(&other)));
    let cases: Vec<(&str, &str, String)> = vec![
        ("c/wrong.bin", "content-digest", sha256_field(&other)),
        ("c/wrong-repr.bin", "repr-digest", sha256_field(&other)),
        ("c/wrong512.bin", "content-digest", wrong512),
        ("c/malformed.bin", "content-digest", "sha-256=not-base64".into()),
        ("c/malformed2.bin", "content-digest", "sha-256=:AAAA:".into()),
    ];
    for (path, name, value) in cases {
        let r = put_digest(path, body.clone(), Some((name, value.clone()))).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}: {name}: {value}");
        assert_eq!(server.stored(path), None, "{path}: no file");
        assert_eq!(
            http.get(server.url(path)).send().await.unwrap().status(),
            StatusCode::NOT_FOUND,
            "{path}: not served"
        );
        assert!(
            wait_until(Duration::from_secs(10), || server.temporaries() == 0),
            "{path}: no temporaries"
        );
        assert_eq!(server.sidecars(), sidecars, "{path}: no metadata");
    }

    // Correct sha-512: stored; the answer names the SHA-256 the server computed.
    let body512 = payload(3000, 63);
    let field512 = format!("sha-512=:{}:", B64.encode(Sha512::digest(&body512)));
    let r = put_digest("c/good512.bin", body512.clone(), Some(("content-digest", field512))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "repr-digest"), Some(sha256_field(&body512)));

    // No digest at all: stored, SHA-256 computed.
    let plain = payload(777, 64);
    let r = put_digest("c/plain.bin", plain.clone(), None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "repr-digest"), Some(sha256_field(&plain)), "computed on PUT");
    let r = http.get(server.url("c/plain.bin")).send().await.unwrap();
    assert_eq!(header(&r, "repr-digest"), Some(sha256_field(&plain)), "kept for GET");
    assert_eq!(server.temporaries(), 0);
}
