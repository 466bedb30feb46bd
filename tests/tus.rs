//! tus 1.0.0 (SPEC §4.2) through the real binary, authorised by the slot token: core,
//! creation, creation-with-upload, creation-defer-length, expiration, checksum, termination,
//! concatenation, OPTIONS discovery, one writer per upload, restarts, the sweeper and bad
//! input. Every behaviour runs against both state backends (embedded and a Redis of its own)
//! and both stores (local, and a Garage bucket of its own; see `on_both_backends!`).

mod common;
#[path = "common/redis.rs"]
mod redis_fixture;
#[path = "common/resumable.rs"]
#[macro_use]
mod resumable;

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{TestServer, client, payload};
use reqwest::{Method, StatusCode};
use resumable::{
    Backend, TUS, TUS_PREFIX, Tus, assert_served, eventually, gathering_files, header, id_of, location_of, offset_of,
    partial_count, partial_len, partial_starts_with,
};

// Behaviours where the state backend plays no part (no locks, expiry, slot claims, restarts or
// backend-specific branches) run on S3 with the Redis state only (the shape of several
// instances), to keep this binary quick; the others run on S3 with both states.
on_both_backends!(
    options_advertise_tus: [embedded, redis, s3_redis],
    core_protocol: [embedded, redis, s3_redis],
    creation_with_upload: [embedded, redis, s3_redis],
    creation_defer_length: [embedded, redis, s3_redis],
    checksums: [embedded, redis, s3_redis],
    termination: [embedded, redis, s3_redis],
    concatenation: [embedded, redis, s3_redis],
    expiration,
    // With Redis the sweeper goes by how long the bytes were untouched, and a test cannot
    // move the bucket's timestamps back: on S3 only with the embedded state.
    sweeper_removes_expired_uploads: [embedded, redis, s3],
    bad_input_never_damages_anything: [embedded, redis, s3_redis],
    second_patch_stops_a_hanging_one,
    second_patch_stops_a_trickling_one,
    racing_writers_never_interleave,
    restart_resumes,
    patch_cut_after_its_last_byte_still_completes: [embedded, redis, s3_redis],
    completion_never_replaces_a_file: [embedded, redis, s3_redis],
    kill_mid_patch_keeps_checkpointed_bytes,
    a_new_creation_replaces_the_unfinished_upload_of_its_slot,
    unfinished_uploads_are_bounded_by_max_unfinished_size: [embedded, redis, s3_redis],
);

fn b64(s: &str) -> String {
    B64.encode(s)
}

#[track_caller]
fn http_date(value: &str) -> u64 {
    httpdate::parse_http_date(value)
        .unwrap_or_else(|_| panic!("not an HTTP date: {value:?}"))
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn options_advertise_tus(extra: &str) {
    let server = TestServer::start(&format!("{extra}MaxUploadSize = 5000000\n"));
    for url in [
        server.url(""),
        server.url("any/where.bin"),
        format!("{}{TUS_PREFIX}0123", server.base),
    ] {
        let r = client().request(Method::OPTIONS, &url).send().await.unwrap();
        assert!(
            r.status() == StatusCode::OK || r.status() == StatusCode::NO_CONTENT,
            "{url}: {}",
            r.status()
        );
        let list = |name: &str| -> Vec<String> {
            header(&r, name)
                .unwrap_or_else(|| panic!("OPTIONS lacks {name}"))
                .split(',')
                .map(|s| s.trim().to_string())
                .collect()
        };
        assert!(list("tus-version").contains(&TUS.to_string()));
        for ext in [
            "creation",
            "creation-with-upload",
            "creation-defer-length",
            "expiration",
            "checksum",
            "termination",
            "concatenation",
        ] {
            assert!(
                list("tus-extension").contains(&ext.to_string()),
                "Tus-Extension lacks {ext}"
            );
        }
        assert_eq!(header(&r, "tus-max-size").as_deref(), Some("5000000"));
        for algo in ["sha1", "sha256", "md5"] {
            assert!(
                list("tus-checksum-algorithm").contains(&algo.to_string()),
                "Tus-Checksum-Algorithm lacks {algo}"
            );
        }
    }
}

async fn core_protocol(extra: &str) {
    let server = TestServer::start(extra);
    let tus = Tus::new(&server);
    let backend = Backend::of(extra);
    let data = payload(2_300_000, 11);
    let len = data.len() as u64;
    let path = "core/movie.mp4";
    let meta = format!("filename {},filetype {}", b64("movie.mp4"), b64("video/mp4"));
    let r = tus
        .create(
            &server.signed_v(path, path, len),
            Some(len),
            &[("upload-metadata", &meta)],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "tus-resumable").as_deref(), Some(TUS));
    let loc = location_of(&r);
    let id = id_of(&loc);
    assert!(backend.record(&server, &id).is_some(), "the upload has a record");

    let head = tus.head(&loc).await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "tus-resumable").as_deref(), Some(TUS));
    assert_eq!(offset_of(&head), 0);
    assert_eq!(header(&head, "upload-length"), Some(len.to_string()));
    assert_eq!(header(&head, "upload-metadata"), Some(meta.clone()));
    assert_eq!(header(&head, "cache-control").as_deref(), Some("no-store"));

    let r = tus.patch(&loc, 0, data[..300_000].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "tus-resumable").as_deref(), Some(TUS));
    assert_eq!(offset_of(&r), 300_000);
    assert_eq!(tus.offset(&loc).await, 300_000);
    assert_eq!(
        partial_len(&server, &id),
        Some(300_000),
        "the offset is the bytes on disk"
    );
    // Unfinished: invisible at the slot's URL.
    assert_eq!(tus.get(&server.url(path)).await.0, StatusCode::NOT_FOUND);
    let r = client().head(server.url(path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(server.stored_files().is_empty());

    // The last chunk: readers polling the URL meanwhile see 404 or the whole file, never part.
    let watcher = {
        let url = server.url(path);
        let want = data.len();
        tokio::spawn(async move {
            let http = client();
            let mut seen = 0;
            loop {
                let r = http.get(&url).send().await.unwrap();
                match r.status() {
                    StatusCode::NOT_FOUND => seen += 1,
                    StatusCode::OK => {
                        let body = r.bytes().await.unwrap();
                        assert_eq!(body.len(), want, "a reader saw a partial file");
                        return seen;
                    }
                    other => panic!("GET during completion: {other}"),
                }
            }
        })
    };
    let r = tus.patch(&loc, 300_000, data[300_000..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&r), len);
    tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .expect("the file appears")
        .unwrap();

    let got = client().get(server.url(path)).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert_eq!(
        header(&got, "content-type").as_deref(),
        Some("video/mp4"),
        "type from filetype"
    );
    assert!(got.bytes().await.unwrap() == data, "byte-identical");
    assert!(server.stored(path).unwrap() == data);
    assert_eq!(partial_len(&server, &id), None, "the partial bytes are gone");
    assert!(backend.record(&server, &id).is_none(), "the record is gone");
    assert_eq!(server.temporaries(), 0);
}

async fn creation_with_upload(extra: &str) {
    let server = TestServer::start(extra);
    let tus = Tus::new(&server);
    let data = payload(120_000, 12);
    let len = data.len() as u64;

    // Part of the file with the POST, the rest with a PATCH.
    let path = "cwu/first.bin";
    let r = tus
        .create(
            &server.signed_v(path, path, len),
            Some(len),
            &[],
            Some(data[..50_000].to_vec()),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(offset_of(&r), 50_000);
    let loc = location_of(&r);
    assert_eq!(tus.offset(&loc).await, 50_000);
    assert!(partial_starts_with(&server, &id_of(&loc), &data[..50_000]));
    assert_eq!(tus.get(&server.url(path)).await.0, StatusCode::NOT_FOUND);
    let r = tus.patch(&loc, 50_000, data[50_000..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_served(&tus, &server.url(path), &data, "served").await;

    // The whole file with the POST.
    let path = "cwu/whole.bin";
    let r = tus
        .create(&server.signed_v(path, path, len), Some(len), &[], Some(data.clone()))
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(offset_of(&r), len);
    assert_served(&tus, &server.url(path), &data, "served").await;
    assert_eq!(partial_count(&server), 0);
}

/// A v3 slot (signs path and expiry, not size), as the Go server 3.x mints them.
fn signed_v3(server: &TestServer, path: &str) -> String {
    let expires = hmac_file_server::clock::now_unix() + 3600;
    let mac = hmac_file_server::auth::sign_v3(&common::secret(), "PUT", expires, &format!("/upload/{path}"));
    format!("{}?v3={mac}&expires={expires}", server.url(path))
}

async fn creation_defer_length(extra: &str) {
    let server = TestServer::start(extra);
    let tus = Tus::new(&server);
    let data = payload(50_000, 13);
    let len = data.len() as u64;
    let path = "defer/later.bin";
    // A v token signs the size: with it the length cannot be deferred (nothing to check it
    // against later), so nobody can write with a token-shaped string.
    let r = tus
        .create(
            &server.signed_v(path, path, len),
            None,
            &[("upload-defer-length", "1")],
            None,
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "deferred length with a size-signing token"
    );
    let bogus = format!("{}?v={}", server.url(path), "ab".repeat(32));
    let r = tus.create(&bogus, None, &[("upload-defer-length", "1")], None).await;
    assert!(
        r.status().is_client_error(),
        "a token-shaped string opens nothing: {}",
        r.status()
    );
    assert_eq!(partial_count(&server), 0);

    // A v3 slot signs no size: the length may come later.
    let slot = signed_v3(&server, path);
    let r = tus.create(&slot, None, &[("upload-defer-length", "1")], None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let loc = location_of(&r);
    let head = tus.head(&loc).await;
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "upload-defer-length").as_deref(), Some("1"));
    assert_eq!(header(&head, "upload-length"), None);

    let r = tus.patch(&loc, 0, data[..20_000].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&r), 20_000);

    // A length below what arrived, or over MaxUploadSize: refused, upload unharmed.
    let r = tus
        .patch_with(&loc, 20_000, data[20_000..30_000].to_vec(), &[("upload-length", "10")])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "length below the offset");
    let huge = (200u64 << 20).to_string();
    let r = tus
        .patch_with(&loc, 20_000, data[20_000..30_000].to_vec(), &[("upload-length", &huge)])
        .await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "length over MaxUploadSize");
    let head = tus.head(&loc).await;
    assert_eq!(offset_of(&head), 20_000);
    assert_eq!(header(&head, "upload-defer-length").as_deref(), Some("1"));
    assert_eq!(partial_len(&server, &id_of(&loc)), Some(20_000));

    let right = len.to_string();
    let r = tus
        .patch_with(&loc, 20_000, data[20_000..].to_vec(), &[("upload-length", &right)])
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&r), len);
    assert_served(&tus, &server.url(path), &data, "served").await;
}

fn digest(algorithm: &str, bytes: &[u8]) -> String {
    use sha2::Digest;
    let raw = match algorithm {
        "sha1" => sha1::Sha1::digest(bytes).to_vec(),
        "sha256" => sha2::Sha256::digest(bytes).to_vec(),
        "md5" => md5::Md5::digest(bytes).to_vec(),
        _ => unreachable!(),
    };
    format!("{algorithm} {}", B64.encode(raw))
}

async fn checksums(extra: &str) {
    let server = TestServer::start(extra);
    let tus = Tus::new(&server);
    let data = payload(30_000, 14);
    let path = "sums/checked.bin";
    let loc = tus.create_ok(&server.signed_v(path, path, 30_000), 30_000).await;
    let id = id_of(&loc);

    let r = tus
        .patch_with(&loc, 0, data[..1000].to_vec(), &[("upload-checksum", "crc32 AAAAAA==")])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "unsupported algorithm");
    assert_eq!(tus.offset(&loc).await, 0);

    for (i, algo) in ["sha1", "sha256", "md5"].into_iter().enumerate() {
        let (start, end) = (i * 10_000, (i + 1) * 10_000);
        let chunk = data[start..end].to_vec();
        let wrong = digest(algo, &data[..10]);
        let r = tus
            .patch_with(&loc, start as u64, chunk.clone(), &[("upload-checksum", &wrong)])
            .await;
        assert_eq!(r.status().as_u16(), 460, "{algo} mismatch");
        assert_eq!(tus.offset(&loc).await, start as u64, "{algo}: the chunk is discarded");
        assert_eq!(
            partial_len(&server, &id),
            Some(start as u64),
            "{algo}: nothing kept on disk"
        );

        let right = digest(algo, &chunk);
        let r = tus
            .patch_with(&loc, start as u64, chunk, &[("upload-checksum", &right)])
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{algo} match");
        assert_eq!(offset_of(&r), end as u64);
    }
    assert_served(&tus, &server.url(path), &data, "served").await;
}

async fn termination(extra: &str) {
    let server = TestServer::start(extra);
    let tus = Tus::new(&server);
    let backend = Backend::of(extra);
    let data = payload(20_000, 15);
    let path = "term/gone.bin";
    let slot = server.signed_v(path, path, 20_000);
    let loc = tus.create_ok(&slot, 20_000).await;
    let id = id_of(&loc);
    assert_eq!(
        tus.patch(&loc, 0, data[..5000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );

    let r = tus.delete(&loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "tus-resumable").as_deref(), Some(TUS));
    assert_eq!(tus.head(&loc).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        tus.patch(&loc, 5000, data[5000..].to_vec()).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(tus.delete(&loc).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(partial_len(&server, &id), None, "bytes removed");
    assert!(backend.record(&server, &id).is_none(), "record removed");
    assert_eq!(tus.get(&server.url(path)).await.0, StatusCode::NOT_FOUND);

    // The slot is free again.
    let loc = tus.create_ok(&slot, 20_000).await;
    assert_eq!(tus.patch(&loc, 0, data.clone()).await.status(), StatusCode::NO_CONTENT);
    assert_served(&tus, &server.url(path), &data, "served").await;
}

async fn concatenation(extra: &str) {
    let server = TestServer::start(extra);
    let tus = Tus::new(&server);
    let a = payload(12_000, 16);
    let b = payload(18_000, 17);
    let total = (a.len() + b.len()) as u64;
    let path = "concat/joined.bin";
    let slot = server.signed_v(path, path, total);
    // Parts need a token that can be checked without the size: v3. With the v slot (which
    // signs the total) a part is refused.
    let r = tus
        .create(
            &slot,
            None,
            &[("upload-concat", "partial"), ("upload-length", "10")],
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "a part with a size-signing token");
    let part_slot = signed_v3(&server, path);
    let part = |n: usize| {
        let n = n.to_string();
        let slot = part_slot.clone();
        let tus = tus.clone();
        async move {
            let r = tus
                .create(
                    &slot,
                    None,
                    &[("upload-concat", "partial"), ("upload-length", &n)],
                    None,
                )
                .await;
            assert_eq!(r.status(), StatusCode::CREATED, "partial creation");
            location_of(&r)
        }
    };
    let loc_a = part(a.len()).await;
    let loc_b = part(b.len()).await;
    assert_eq!(
        header(&tus.head(&loc_a).await, "upload-concat").as_deref(),
        Some("partial")
    );
    assert_eq!(tus.patch(&loc_a, 0, a.clone()).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        tus.patch(&loc_b, 0, b[..9000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        tus.get(&server.url(path)).await.0,
        StatusCode::NOT_FOUND,
        "parts are not the file"
    );

    // Final order b, a: the order of the list, not of creation. Absolute URLs work too.
    let final_list = format!("final;{}{loc_b} {loc_a}", server.base);
    let r = tus.create(&slot, None, &[("upload-concat", &final_list)], None).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "a part is unfinished");
    assert_eq!(tus.get(&server.url(path)).await.0, StatusCode::NOT_FOUND);

    assert_eq!(
        tus.patch(&loc_b, 9000, b[9000..].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    let wrong_slot = server.signed_v(path, path, total + 1);
    let r = tus
        .create(&wrong_slot, None, &[("upload-concat", &final_list)], None)
        .await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "the token signs the sum of the parts"
    );
    assert_eq!(tus.get(&server.url(path)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(tus.offset(&loc_a).await, a.len() as u64, "parts unharmed");

    let r = tus.create(&slot, None, &[("upload-concat", &final_list)], None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let loc_final = location_of(&r);
    let want: Vec<u8> = b.iter().chain(a.iter()).copied().collect();
    assert_served(&tus, &server.url(path), &want, "served").await;
    assert_eq!(tus.head(&loc_a).await.status(), StatusCode::NOT_FOUND, "parts used up");
    assert_eq!(partial_count(&server), 0);
    assert_eq!(server.temporaries(), 0);

    // The final upload's Location is a tus resource (tus 1.0, concatenation): HEAD gives its
    // offset = length and the parts; PATCH is forbidden.
    let r = tus.head(&loc_final).await;
    assert_eq!(r.status(), StatusCode::OK, "HEAD on the final upload");
    assert_eq!(header(&r, "upload-offset"), Some(total.to_string()));
    assert_eq!(header(&r, "upload-length"), Some(total.to_string()));
    let parts_of = |l: &str| l.rsplit('/').next().unwrap().to_string();
    let listed = header(&r, "upload-concat").expect("Upload-Concat on the final upload");
    let listed: Vec<String> = listed
        .strip_prefix("final;")
        .expect("final;")
        .split(' ')
        .map(parts_of)
        .collect();
    assert_eq!(listed, [parts_of(&loc_b), parts_of(&loc_a)], "the parts, in order");
    assert_eq!(header(&r, "tus-resumable").as_deref(), Some("1.0.0"));
    let r = tus.patch(&loc_final, total, b"x".to_vec()).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "PATCH on a final upload");
    assert_eq!(header(&r, "tus-resumable").as_deref(), Some("1.0.0"));
    assert_served(&tus, &server.url(path), &want, "unchanged").await;
}

async fn expiration(extra: &str) {
    let server = TestServer::start(&format!("{extra}UploadExpiry = \"1h\"\n"));
    let tus = Tus::new(&server);
    let backend = Backend::of(extra);
    let data = payload(10_000, 18);
    let path = "exp/a.bin";
    let slot = server.signed_v(path, path, 10_000);
    let now = common::now_unix();
    let r = tus.create(&slot, Some(10_000), &[], None).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let expires = http_date(&header(&r, "upload-expires").expect("Upload-Expires on creation"));
    assert!(expires.abs_diff(now + 3600) <= 60, "expires {expires}, now {now}");
    let loc = location_of(&r);
    let r = tus.patch(&loc, 0, data[..4000].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let expires = http_date(&header(&r, "upload-expires").expect("Upload-Expires on PATCH"));
    assert!(expires.abs_diff(now + 3600) <= 60);
    assert!(
        header(&tus.head(&loc).await, "upload-expires").is_some(),
        "Upload-Expires on HEAD"
    );

    // Past its expiry: 410 on HEAD, and the upload is gone with its bytes.
    let id = id_of(&loc);
    backend.age_record(&server, &id);
    assert_eq!(tus.head(&loc).await.status(), StatusCode::GONE);
    assert_eq!(partial_len(&server, &id), None);
    assert!(backend.record(&server, &id).is_none());

    // The same through PATCH; nothing written.
    let loc = tus.create_ok(&slot, 10_000).await;
    let id = id_of(&loc);
    assert_eq!(
        tus.patch(&loc, 0, data[..4000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    backend.age_record(&server, &id);
    assert_eq!(
        tus.patch(&loc, 4000, data[4000..].to_vec()).await.status(),
        StatusCode::GONE
    );
    assert_eq!(partial_len(&server, &id), None);
    assert_eq!(tus.get(&server.url(path)).await.0, StatusCode::NOT_FOUND);
    assert!(server.stored_files().is_empty());

    // The slot still works.
    let loc = tus.create_ok(&slot, 10_000).await;
    assert_eq!(tus.patch(&loc, 0, data.clone()).await.status(), StatusCode::NO_CONTENT);
    assert_served(&tus, &server.url(path), &data, "served").await;
}

async fn sweeper_removes_expired_uploads(extra: &str) {
    let server = TestServer::start(&format!("{extra}UploadExpiry = \"1h\"\nCleanupInterval = \"1s\"\n"));
    let tus = Tus::new(&server);
    let backend = Backend::of(extra);
    let data = payload(3000, 19);
    let mut locs = Vec::new();
    for name in ["old", "fresh"] {
        let path = format!("sweep/{name}.bin");
        let loc = tus.create_ok(&server.signed_v(&path, &path, 3000), 3000).await;
        assert_eq!(
            tus.patch(&loc, 0, data[..1000].to_vec()).await.status(),
            StatusCode::NO_CONTENT
        );
        locs.push(loc);
    }
    let (old, fresh) = (id_of(&locs[0]), id_of(&locs[1]));
    backend.expire_fully(&server, &old, Duration::from_secs(7200));
    assert!(
        eventually(Duration::from_secs(10), || async {
            partial_len(&server, &old).is_none() && backend.record(&server, &old).is_none()
        })
        .await,
        "the sweeper removes the expired upload; log:\n{}",
        server.log()
    );
    let status = tus.head(&locs[0]).await.status();
    assert!(
        status == StatusCode::NOT_FOUND || status == StatusCode::GONE,
        "swept upload: {status}"
    );
    assert_eq!(tus.offset(&locs[1]).await, 1000, "a fresh upload is kept");
    assert_eq!(partial_len(&server, &fresh), Some(1000));
}

async fn bad_input_never_damages_anything(extra: &str) {
    let server = TestServer::start(&format!("{extra}MaxUploadSize = 1000000\n"));
    let tus = Tus::new(&server);
    let backend = Backend::of(extra);
    let http = client();
    let data = payload(20_000, 20);
    let len = data.len() as u64;
    let path = "bad/input.bin";
    let slot = server.signed_v(path, path, len);

    // Creation refused: nothing created.
    let r = tus.create(&slot, Some(len + 1), &[], None).await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "Upload-Length other than the signed size"
    );
    let r = tus.create(&slot, Some(len - 1), &[], None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let bad_token = format!("{}?v={}", server.url(path), "0".repeat(64));
    assert_eq!(
        tus.create(&bad_token, Some(len), &[], None).await.status(),
        StatusCode::FORBIDDEN
    );
    for version in [None, Some("0.2.2"), Some("2.0.0")] {
        let mut req = http.post(&slot).header("upload-length", len.to_string());
        if let Some(v) = version {
            req = req.header("tus-resumable", v);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED, "Tus-Resumable {version:?}");
        assert!(
            header(&r, "tus-version").is_some_and(|v| v.contains(TUS)),
            "412 carries Tus-Version"
        );
    }
    for meta in ["filename !!!notbase64", "a b c", "k YQ==,k YQ=="] {
        let r = tus.create(&slot, Some(len), &[("upload-metadata", meta)], None).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "Upload-Metadata {meta:?}");
    }
    let r = tus.create(&slot, None, &[], None).await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "neither Upload-Length nor Upload-Defer-Length"
    );
    let big = server.signed_v(path, path, 2_000_000);
    assert_eq!(
        tus.create(&big, Some(2_000_000), &[], None).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );
    assert_eq!(partial_count(&server), 0, "refused creations leave no bytes");
    assert!(server.stored_files().is_empty());

    // An empty Upload-Metadata (tuspy) is fine.
    let r = tus.create(&slot, Some(len), &[("upload-metadata", "")], None).await;
    assert_eq!(r.status(), StatusCode::CREATED, "empty Upload-Metadata tolerated");
    let loc = location_of(&r);
    let id = id_of(&loc);
    assert_eq!(
        tus.patch(&loc, 0, data[..5000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    let url = format!("{}{loc}", server.base);

    // PATCHes refused; each leaves the upload as it was.
    let intact = |what: &'static str| {
        let tus = tus.clone();
        let loc = loc.clone();
        let server = &server;
        let id = id.clone();
        let data = &data;
        async move {
            assert_eq!(tus.offset(&loc).await, 5000, "{what}: offset unchanged");
            assert_eq!(partial_len(server, &id), Some(5000), "{what}: bytes on disk unchanged");
            assert!(
                partial_starts_with(server, &id, &data[..5000]),
                "{what}: bytes unchanged"
            );
        }
    };
    for ct in [Some("application/octet-stream"), None] {
        let mut req = http
            .patch(&url)
            .header("tus-resumable", TUS)
            .header("upload-offset", "5000");
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let r = req.body(data[5000..6000].to_vec()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "Content-Type {ct:?}");
        intact("415").await;
    }
    let r = http
        .patch(&url)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "5000")
        .body(data[5000..6000].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert!(header(&r, "tus-version").is_some_and(|v| v.contains(TUS)));
    intact("PATCH without Tus-Resumable").await;
    let r = http.head(&url).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::PRECONDITION_FAILED,
        "HEAD without Tus-Resumable"
    );
    let r = http.delete(&url).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::PRECONDITION_FAILED,
        "DELETE without Tus-Resumable"
    );
    intact("DELETE without Tus-Resumable").await;

    for claimed in [0u64, 4999, 5001, 20_000] {
        let r = tus.patch(&loc, claimed, data[5000..6000].to_vec()).await;
        assert_eq!(r.status(), StatusCode::CONFLICT, "offset {claimed}");
        assert_eq!(
            header(&r, "upload-offset").as_deref(),
            Some("5000"),
            "409 tells the offset"
        );
        intact("409").await;
    }
    for bad in [Some("abc"), Some("-1"), Some(""), None] {
        let mut req = http
            .patch(&url)
            .header("tus-resumable", TUS)
            .header("content-type", "application/offset+octet-stream");
        if let Some(v) = bad {
            req = req.header("upload-offset", v);
        }
        let r = req.body(data[5000..6000].to_vec()).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "Upload-Offset {bad:?}");
        intact("malformed Upload-Offset").await;
    }
    let changed = (len + 5).to_string();
    let r = tus
        .patch_with(&loc, 5000, data[5000..6000].to_vec(), &[("upload-length", &changed)])
        .await;
    assert!(
        r.status().is_client_error(),
        "Upload-Length cannot change: {}",
        r.status()
    );
    intact("changed Upload-Length").await;

    // Past Upload-Length: 413, nothing beyond kept (declared, and streamed without a length).
    let mut too_long = data[5000..].to_vec();
    too_long.extend_from_slice(b"one byte too many");
    let r = tus.patch(&loc, 5000, too_long.clone()).await;
    assert_eq!(
        r.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "Content-Length past Upload-Length"
    );
    intact("413").await;
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = too_long
        .chunks(4096)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let r = http
        .patch(&url)
        .header("tus-resumable", TUS)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", "5000")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "chunked body past Upload-Length"
    );
    intact("chunked 413").await;
    assert!(server.stored_files().is_empty(), "no file from a refused chunk");

    // Unknown uploads.
    let unknown = format!("{TUS_PREFIX}{}", "0123456789abcdef".repeat(2));
    assert_eq!(tus.head(&unknown).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        tus.patch(&unknown, 0, vec![1, 2, 3]).await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(tus.delete(&unknown).await.status(), StatusCode::NOT_FOUND);
    for odd in ["nothex", "..%2F..%2Fetc", "0123456789ABCDEF0123456789ABCDEF"] {
        let loc = format!("{TUS_PREFIX}{odd}");
        let status = tus.head(&loc).await.status();
        assert_eq!(status, StatusCode::NOT_FOUND, "{odd}");
    }
    intact("after everything").await;

    // The upload still finishes; then the stored file withstands more bad requests.
    let r = tus.patch(&loc, 5000, data[5000..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_served(&tus, &server.url(path), &data, "served").await;
    assert_eq!(
        tus.create(&slot, Some(len), &[], None).await.status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        tus.create(&slot, Some(len + 1), &[], None).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(tus.patch(&loc, len, vec![0; 10]).await.status(), StatusCode::NOT_FOUND);
    assert_served(&tus, &server.url(path), &data, "served").await;
    assert!(backend.record(&server, &id).is_none());
}

async fn second_patch_stops_a_hanging_one(extra: &str) {
    let server = TestServer::start(&format!("{extra}BufferSize = 4096\nReadTimeout = 120\n"));
    resumable::second_patch_stops_first(&server, &server, false, 21).await;
}

async fn second_patch_stops_a_trickling_one(extra: &str) {
    let server = TestServer::start(&format!("{extra}BufferSize = 4096\nReadTimeout = 120\n"));
    resumable::second_patch_stops_first(&server, &server, true, 22).await;
}

async fn racing_writers_never_interleave(extra: &str) {
    let server = TestServer::start(&format!("{extra}BufferSize = 4096\n"));
    resumable::contend(&[&server], 3, 300_000, "race/one.bin").await;
}

async fn restart_resumes(extra: &str) {
    let extra = format!("{extra}BufferSize = 4096\nReadTimeout = 120\n");
    let server = TestServer::start(&extra);
    let data = payload(150_000, 23);
    let len = data.len() as u64;
    let path = "restart/r.bin";
    let tus = Tus::new(&server);
    let loc = tus.create_ok(&server.signed_v(path, path, len), len).await;
    let id = id_of(&loc);
    assert_eq!(
        tus.patch(&loc, 0, data[..40_000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );

    // SIGTERM between requests.
    let dir = server.stop_keep_dir("TERM");
    let server = TestServer::start_in(dir, &extra);
    let tus = Tus::new(&server);
    assert_eq!(tus.offset(&loc).await, 40_000, "state survives a restart");
    assert_eq!(
        tus.patch(&loc, 40_000, data[40_000..80_000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );

    let server = if Backend::of(&extra).is_embedded() {
        // kill -9 in the middle of a PATCH: after the restart the offset is a durable count.
        // Waits until the PATCH writes: its bytes reach the partial file, or on S3 (where they
        // are gathered in a local file, through a 1 MiB buffer) that file is open.
        let a = resumable::Streaming::patch(server.addr, &loc, 80_000, len - 80_000, &data[80_000..100_000]);
        assert!(
            eventually(Duration::from_secs(10), || async {
                match server.s3() {
                    None => partial_len(&server, &id).unwrap_or(0) >= 84_096,
                    Some(_) => !gathering_files(&server).is_empty(),
                }
            })
            .await
        );
        let dir = server.stop_keep_dir("KILL");
        drop(a);
        let server = TestServer::start_in(dir, &extra);
        let o = Tus::new(&server).offset(&loc).await;
        assert!((80_000..=100_000).contains(&o), "offset after kill -9: {o}");
        assert!(
            partial_len(&server, &id).unwrap() >= o,
            "the offset never exceeds the bytes on disk"
        );
        assert!(partial_starts_with(&server, &id, &data[..o as usize]));
        server
    } else {
        server
    };
    let tus = Tus::new(&server);
    let o = tus.offset(&loc).await;
    let r = tus.patch(&loc, o, data[o as usize..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_served(&tus, &server.url(path), &data, "served").await;
}

/// A PATCH whose connection breaks after the last byte arrived (chunked, before the final
/// empty chunk): the bytes are durable and the offset reaches the length, which tells a tus
/// client the upload is complete; so the file must then be at the slot's URL.
async fn patch_cut_after_its_last_byte_still_completes(extra: &str) {
    let server = TestServer::start(extra);
    let tus = Tus::new(&server);
    let data = payload(10_000, 24);
    let path = "cut/last-byte.bin";
    let loc = tus.create_ok(&server.signed_v(path, path, 10_000), 10_000).await;
    assert_eq!(
        tus.patch(&loc, 0, data[..4000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    let head = format!(
        "PATCH {loc} HTTP/1.1\r\nHost: {}\r\nTus-Resumable: {TUS}\r\n\
         Content-Type: application/offset+octet-stream\r\nUpload-Offset: 4000\r\n\
         Transfer-Encoding: chunked",
        server.addr
    );
    let mut body = format!("{:x}\r\n", 6000).into_bytes();
    body.extend_from_slice(&data[4000..]);
    body.extend_from_slice(b"\r\n");
    resumable::Streaming::start(server.addr, &head, &body).cut();

    // Wait until the server has dealt with the cut-off request.
    let done = eventually(Duration::from_secs(10), || async {
        let r = tus.head(&loc).await;
        r.status() == StatusCode::NOT_FOUND || (r.status() == StatusCode::OK && offset_of(&r) == 10_000)
    })
    .await;
    assert!(done, "the bytes of the cut-off PATCH are kept; log:\n{}", server.log());
    assert_served(
        &tus,
        &server.url(path),
        &data,
        &format!(
            "the upload has all its bytes (HEAD says complete) but its file is not there; log:\n{}",
            server.log()
        ),
    )
    .await;
}

/// A file that reached the slot's path while the upload ran (a plain PUT) is never replaced:
/// the completing PATCH answers 409 and the stored file stays as it was.
async fn completion_never_replaces_a_file(extra: &str) {
    let server = TestServer::start(extra);
    let tus = Tus::new(&server);
    let backend = Backend::of(extra);
    let data = payload(40_000, 25);
    let other = payload(40_000, 26);
    let path = "race/taken.bin";
    let slot = server.signed_v(path, path, 40_000);
    let loc = tus.create_ok(&slot, 40_000).await;
    assert_eq!(
        tus.patch(&loc, 0, data[..10_000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    let r = client().put(&slot).body(other.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "a plain PUT takes the path first");
    let r = tus.patch(&loc, 10_000, data[10_000..].to_vec()).await;
    assert_eq!(
        r.status(),
        StatusCode::CONFLICT,
        "the completing PATCH finds the path taken"
    );
    assert_served(&tus, &server.url(path), &other, "the first file stays").await;
    assert_eq!(
        partial_len(&server, &id_of(&loc)),
        None,
        "the upload's bytes are dropped"
    );
    assert!(backend.record(&server, &id_of(&loc)).is_none());
    assert_eq!(server.temporaries(), 0);
}

/// tus clients read Tus-Resumable on every answer, errors included.
#[tokio::test]
async fn error_answers_carry_tus_resumable() {
    let server = TestServer::start("");
    let http = common::client();
    let url = format!("{}/upload/.hmac-file-server/tus/{}", server.base, "0".repeat(32));
    let r = http.head(&url).header("tus-resumable", "1.0.0").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        r.headers().get("tus-resumable").and_then(|v| v.to_str().ok()),
        Some("1.0.0")
    );
    let r = http.patch(&url).header("tus-resumable", "0.2.2").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        r.headers().get("tus-version").and_then(|v| v.to_str().ok()),
        Some("1.0.0")
    );
}

/// A `kill -9` in the middle of one long PATCH keeps what the PATCH brought up to its last
/// checkpoint (the offset moves during a PATCH, at most once a second), and the next PATCH
/// gets through: with Redis once the dead writer's lock has expired (10 s), not 30 s later.
/// On S3 a checkpoint keeps the parts uploaded so far (S3PartSize, 5 MiB each), not the bytes
/// of the part being gathered: there the PATCH is longer and the checkpoint is one part.
async fn kill_mid_patch_keeps_checkpointed_bytes(extra: &str) {
    let extra = format!("{extra}ReadTimeout = 120\nMaxUploadSize = \"8MiB\"\n");
    let server = TestServer::start(&extra);
    let (len, first, checkpointed) = match server.s3() {
        None => (3 << 20, 3 << 19, 3 << 19),
        Some(_) => (7 << 20, 11 << 19, 5 << 20),
    };
    let data = payload(len, 44);
    let path = "kill/long.bin";
    let tus = Tus::new(&server);
    let loc = tus
        .create_ok(&server.signed_v(path, path, len as u64), len as u64)
        .await;
    let id = id_of(&loc);
    let mut patch = resumable::Streaming::patch(server.addr, &loc, 0, len as u64, &data[..first]);
    // A checkpoint needs a MiB and a second since the PATCH began, then a frame.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(patch.send(&data[first..first + 65_536]));
    let saved = eventually(Duration::from_secs(10), || async {
        tus.offset(&loc).await >= checkpointed as u64
    })
    .await;
    assert!(saved, "the offset moves during a long PATCH:\n{}", server.log());

    let dir = server.stop_keep_dir("KILL");
    drop(patch);
    let server = TestServer::start_in(dir, &extra);
    let tus = Tus::new(&server);
    let o = tus.offset(&loc).await as usize;
    assert!(o >= checkpointed, "kept after kill -9: {o}");
    assert!(partial_starts_with(&server, &id, &data[..o]));
    let started = std::time::Instant::now();
    let finished = eventually(Duration::from_secs(25), || async {
        tus.patch(&loc, o as u64, data[o..].to_vec()).await.status() == StatusCode::NO_CONTENT
    })
    .await;
    assert!(finished, "the upload is writable again:\n{}", server.log());
    assert!(started.elapsed() < Duration::from_secs(20), "{:?}", started.elapsed());
    assert_served(&tus, &server.url(path), &data, "after kill -9 and resume").await;
}

/// One slot, one unfinished upload: a second creation for the same path replaces the first
/// (its bytes go), so one slot token cannot fill the disk with creations.
async fn a_new_creation_replaces_the_unfinished_upload_of_its_slot(extra: &str) {
    let server = TestServer::start(&format!("{extra}BufferSize = 4096\n"));
    let tus = Tus::new(&server);
    let data = payload(100_000, 45);
    let len = data.len() as u64;
    let path = "slot/one.bin";
    let url = server.signed_v(path, path, len);
    let first = tus.create_ok(&url, len).await;
    assert_eq!(
        tus.patch(&first, 0, data[..30_000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    let mut later = Vec::new();
    for _ in 0..5 {
        later.push(tus.create_ok(&url, len).await);
    }
    assert_eq!(
        tus.head(&first).await.status(),
        StatusCode::NOT_FOUND,
        "the first is replaced"
    );
    for loc in &later[..4] {
        assert_eq!(
            tus.head(loc).await.status(),
            StatusCode::NOT_FOUND,
            "so is each later one"
        );
    }
    assert_eq!(partial_count(&server), 1, "one partial file for the slot");
    let last = &later[4];
    assert_eq!(tus.patch(last, 0, data.clone()).await.status(), StatusCode::NO_CONTENT);
    assert_served(&tus, &server.url(path), &data, "the last creation completes").await;
    assert_eq!(partial_count(&server), 0);
}

/// MaxUnfinishedSize bounds what unfinished uploads hold together: a creation that does not
/// fit gets 507 with Retry-After, as does a broken-off PUT's keeping (its bytes dropped);
/// finishing an upload makes room again.
async fn unfinished_uploads_are_bounded_by_max_unfinished_size(extra: &str) {
    let server = TestServer::start(&format!("{extra}BufferSize = 4096\nMaxUnfinishedSize = 100000\n"));
    let tus = Tus::new(&server);
    let data = payload(80_000, 46);
    let a = tus
        .create_ok(&server.signed_v("bound/a.bin", "bound/a.bin", 80_000), 80_000)
        .await;
    assert_eq!(
        tus.patch(&a, 0, data[..79_999].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    let r = tus
        .create(
            &server.signed_v("bound/b.bin", "bound/b.bin", 30_000),
            Some(30_000),
            &[],
            None,
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::INSUFFICIENT_STORAGE,
        "79,999 + 30,000 > 100,000"
    );
    assert_eq!(header(&r, "retry-after").as_deref(), Some("60"));
    let c = tus
        .create_ok(&server.signed_v("bound/c.bin", "bound/c.bin", 20_000), 20_000)
        .await;
    assert_eq!(partial_count(&server), 2, "the refused creation left nothing");
    // A kept broken-off PUT that does not fit is dropped.
    let url = server.signed_v("bound/d.bin", "bound/d.bin", 80_000);
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 80000\r\nX-Session-Token: bounded-session-0123456789",
        server.target(&url),
        server.addr
    );
    resumable::Streaming::start(server.addr, &head, &data[..30_000]).cut();
    assert!(
        eventually(Duration::from_secs(10), || async {
            server.log().contains("MaxUnfinishedSize reached")
        })
        .await,
        "{}",
        server.log()
    );
    assert_eq!(partial_count(&server), 2, "its bytes were not kept");
    // Finishing uploads makes room.
    assert_eq!(
        tus.patch(&a, 79_999, data[79_999..].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        tus.patch(&c, 0, data[..20_000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    tus.create_ok(&server.signed_v("bound/b.bin", "bound/b.bin", 30_000), 30_000)
        .await;
}
