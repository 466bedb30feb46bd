//! Upload state in Redis (SPEC §7): namespaced expiring keys, RedisDB and RedisPassword, the
//! lock in Redis, several instances on one store acting as one, and Redis going away (503
//! with Retry-After for what needs state, plain uploads and downloads unaffected, recovery
//! without a restart), also at start-up. Each test runs its own redis-server on a free port.

mod common;
#[path = "common/redis.rs"]
mod redis_fixture;
#[path = "common/resumable.rs"]
mod resumable;

use std::time::Duration;

use common::{TestServer, client, payload};
use redis_fixture::{RedisServer, free_port};
use reqwest::StatusCode;
use resumable::{
    Streaming, Tus, assert_served, eventually, header, id_of, partial_count, partial_starts_with, redis_record_key,
    session_id,
};

const PREFIX: &str = "hmac-file-server:";
/// The lease that names the instance leading periodic work (retention, sweeps).
const LEASE_KEY: &str = "hmac-file-server:lease:periodic";

/// The keys of uploads, locks and bans: every key but the leader's lease, which lives as long
/// as the server and expires by itself (checked here too).
#[track_caller]
fn upload_keys(db: &redis_fixture::RedisClient) -> Vec<String> {
    let keys = db.keys("*");
    if keys.iter().any(|k| k == LEASE_KEY) {
        let ttl = db.cmd(&["PTTL", LEASE_KEY]).int();
        assert!((1..=30_000).contains(&ttl), "the lease expires by itself: {ttl} ms");
    }
    keys.into_iter().filter(|k| k != LEASE_KEY).collect()
}

/// The key that names the one unfinished upload of a slot (path).
fn redis_slot_key(path: &str) -> String {
    use sha2::Digest;
    format!("{PREFIX}slot:{}", hex::encode(sha2::Sha256::digest(path.as_bytes())))
}

/// An upload's keys: its record and its slot's claim, sorted as `keys` sorts.
fn record_and_slot(id: &str, path: &str) -> Vec<String> {
    let mut keys = vec![redis_record_key(id), redis_slot_key(path)];
    keys.sort();
    keys
}

/// A log line that says the server does not run Redis at all would be a lie.
#[track_caller]
fn assert_no_inactive_redis_note(server: &TestServer) {
    let log = server.log();
    let lie = log
        .lines()
        .find(|l| l.contains("Redis") && (l.contains("not built") || l.contains("no effect")));
    assert!(lie.is_none(), "the server says Redis is not in use: {lie:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_namespaced_expire_and_hold_the_lock() {
    let redis = RedisServer::start();
    let server = TestServer::start(&format!(
        "{}RedisDB = 2\nUploadExpiry = \"1h\"\nBufferSize = 4096\nReadTimeout = 120\n",
        redis.toml()
    ));
    assert_no_inactive_redis_note(&server);
    let db = redis.client(2);
    let tus = Tus::new(&server);
    let data = payload(100_000, 40);
    let len = data.len() as u64;
    let path = "keys/a.bin";
    let loc = tus.create_ok(&server.signed_v(path, path, len), len).await;
    let id = id_of(&loc);
    assert_eq!(
        tus.patch(&loc, 0, data[..10_000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );

    let key = redis_record_key(&id);
    assert_eq!(
        upload_keys(&db),
        record_and_slot(&id, path),
        "one namespaced record, and its slot's claim, in RedisDB 2"
    );
    assert_eq!(
        db.cmd(&["GET", &redis_slot_key(path)]).text().as_deref(),
        Some(id.as_str())
    );
    let slot_ttl = db.cmd(&["PTTL", &redis_slot_key(path)]).int();
    assert!(
        (3_500_000..=3_600_000).contains(&slot_ttl),
        "the claim expires with the upload: {slot_ttl} ms"
    );
    assert!(redis.client(0).keys("*").is_empty(), "nothing in database 0");
    let ttl = db.cmd(&["PTTL", &key]).int();
    assert!(
        (3_500_000..=3_600_000).contains(&ttl),
        "the record expires after UploadExpiry: {ttl} ms"
    );
    let record: serde_json::Value = serde_json::from_str(&db.cmd(&["GET", &key]).text().unwrap()).unwrap();
    assert_eq!(record["offset"], 10_000);

    // While a PATCH runs its lock is a Redis key with an expiry; it goes when the PATCH ends.
    let lock = format!("{PREFIX}lock:{id}");
    let a = Streaming::patch(server.addr, &loc, 10_000, len - 10_000, &data[10_000..30_000]);
    let locked = eventually(Duration::from_secs(10), || async {
        let ttl = db.cmd(&["PTTL", &lock]).int();
        ttl > 0 && ttl <= 120_000
    })
    .await;
    assert!(
        locked,
        "a running PATCH holds {lock} with an expiry; keys: {:?}",
        db.keys("*")
    );
    for k in db.keys("*") {
        assert!(k.starts_with(PREFIX), "key {k} outside the namespace");
        assert!(db.cmd(&["PTTL", &k]).int() > 0, "key {k} never expires");
    }
    a.cut();
    assert!(
        eventually(Duration::from_secs(10), || async {
            db.cmd(&["EXISTS", &lock]).int() == 0
        })
        .await,
        "the lock is released when the PATCH ends"
    );
    let offset = tus.offset(&loc).await;
    assert!((10_000..=30_000).contains(&offset));
    assert!(partial_starts_with(&server, &id, &data[..offset as usize]));
    let r = tus.patch(&loc, offset, data[offset as usize..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(
        upload_keys(&db).is_empty(),
        "nothing left in Redis after completion: {:?}",
        db.keys("*")
    );

    // Session partials are records too, with the same expiry.
    let spath = "keys/session.bin";
    let url = server.signed_v(spath, spath, 5000);
    let token = "redis-session-token-0123";
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: 5000\r\nX-Session-Token: {token}",
        server.target(&url),
        server.addr
    );
    Streaming::start(server.addr, &head, &data[..2000]).cut();
    let skey = redis_record_key(&session_id(token, spath));
    assert!(
        eventually(Duration::from_secs(10), || async {
            db.cmd(&["EXISTS", &skey]).int() == 1
        })
        .await,
        "the broken-off PUT is recorded in Redis"
    );
    let ttl = db.cmd(&["PTTL", &skey]).int();
    assert!((3_500_000..=3_600_000).contains(&ttl), "session record TTL {ttl} ms");
    assert!(
        !db.cmd(&["GET", &skey]).text().unwrap().contains(token),
        "the token itself is not stored"
    );

    // When Redis expires a record, the upload is over: not resumable, never stored.
    let loc = tus
        .create_ok(&server.signed_v("keys/b.bin", "keys/b.bin", len), len)
        .await;
    assert_eq!(
        tus.patch(&loc, 0, data[..1000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    db.cmd(&["PEXPIRE", &redis_record_key(&id_of(&loc)), "1"]);
    assert!(
        eventually(Duration::from_secs(5), || async {
            db.cmd(&["EXISTS", &redis_record_key(&id_of(&loc))]).int() == 0
        })
        .await
    );
    let status = tus.head(&loc).await.status();
    assert!(
        status == StatusCode::NOT_FOUND || status == StatusCode::GONE,
        "HEAD: {status}"
    );
    let status = tus.patch(&loc, 1000, data[1000..].to_vec()).await.status();
    assert!(
        status == StatusCode::NOT_FOUND || status == StatusCode::GONE,
        "PATCH: {status}"
    );
    assert_eq!(tus.get(&server.url("keys/b.bin")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_and_database_are_used() {
    let password = "pa55:w@rd/with%odd";
    let redis = RedisServer::start_with_password(Some(password));
    let extra = format!("{}RedisPassword = \"{password}\"\nRedisDB = 5\n", redis.toml());
    let server = TestServer::start(&extra);
    let tus = Tus::new(&server);
    let data = payload(5000, 41);
    let loc = tus
        .create_ok(&server.signed_v("pw/a.bin", "pw/a.bin", 5000), 5000)
        .await;
    assert_eq!(
        tus.patch(&loc, 0, data[..1000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    let db = redis.client(5);
    assert_eq!(upload_keys(&db), record_and_slot(&id_of(&loc), "pw/a.bin"));
    assert_eq!(
        tus.patch(&loc, 1000, data[1000..].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_served(&tus, &server.url("pw/a.bin"), &data, "served").await;

    // A wrong password: state requests answer 503 with Retry-After, never 500 or success.
    let wrong = TestServer::start(&format!("{}RedisPassword = \"wrong-password\"\n", redis.toml()));
    let r = Tus::new(&wrong)
        .create(&wrong.signed_v("pw/b.bin", "pw/b.bin", 10), Some(10), &[], None)
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(header(&r, "retry-after").is_some());
    for s in [&server, &wrong] {
        assert!(!s.log().contains(password), "the Redis password is never logged");
    }
}

/// A password written inside RedisAddr (`redis://:PASSWORD@host:port`) works and is never
/// printed: not in the start-up line that names Redis (with Redis up, and the ERROR with it
/// down), not at any log level (RUST_LOG=trace), not on SIGHUP, not by check-config or unban.
/// The address is still shown, without the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_redis_addr_is_never_printed() {
    let password = "addr-pass-4f9c2d71e8";
    let redis = RedisServer::start_with_password(Some(password));
    for (port, up) in [(redis.port, true), (free_port(), false)] {
        let extra = format!("RedisAddr = \"redis://:{password}@127.0.0.1:{port}\"\n");
        let server = TestServer::start_logging(&extra, "trace");
        let (needle, what) = if up {
            ("resumable state in Redis", "INFO")
        } else {
            ("REDIS IS NOT REACHABLE", "ERROR")
        };
        let shown = format!("redis://127.0.0.1:{port}");
        let named = common::wait_until(Duration::from_secs(5), || {
            server.log().lines().any(|l| l.contains(needle) && l.contains(&shown))
        });
        assert!(named, "the {what} line names {shown}; log:\n{}", server.log());
        if up {
            let tus = Tus::new(&server);
            let loc = tus.create_ok(&server.signed_v("ap/a.bin", "ap/a.bin", 10), 10).await;
            assert_eq!(
                upload_keys(&redis.client(0)),
                record_and_slot(&id_of(&loc), "ap/a.bin"),
                "the password in RedisAddr is used"
            );
        }
        server.signal("HUP");
        assert!(
            common::wait_until(Duration::from_secs(5), || server
                .log()
                .contains("configuration reloaded")),
            "no reload; log:\n{}",
            server.log()
        );
        let config = server.dir.path().join("config.toml");
        for args in [&["check-config"][..], &["unban", "192.0.2.7"][..]] {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_hmac-file-server"))
                .arg("--config")
                .arg(&config)
                .args(args)
                .env("RUST_LOG", "trace")
                .output()
                .unwrap();
            let printed = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!printed.is_empty(), "{args:?} says something");
            assert!(!printed.contains(password), "{args:?} prints the password:\n{printed}");
        }
        let log = server.log();
        assert!(!log.contains(password), "the log has the password:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_act_as_one() {
    let redis = RedisServer::start();
    let a = TestServer::start(&redis.toml());
    let b = TestServer::start_sharing(&a, &redis.toml());
    let (ta, tb) = (Tus::new(&a), Tus::new(&b));
    let data = payload(200_000, 42);
    let len = data.len() as u64;

    // tus: created and begun on A, resumed and finished on B, served by both.
    let path = "multi/tus.bin";
    let loc = ta.create_ok(&a.signed_v(path, path, len), len).await;
    assert_eq!(
        ta.patch(&loc, 0, data[..70_000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(tb.offset(&loc).await, 70_000);
    assert_eq!(tb.patch(&loc, 0, data.clone()).await.status(), StatusCode::CONFLICT);
    let r = tb.patch(&loc, 70_000, data[70_000..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_served(&ta, &a.url(path), &data, "served").await;
    assert_served(&tb, &b.url(path), &data, "served").await;
    assert_eq!(ta.head(&loc).await.status(), StatusCode::NOT_FOUND, "finished for both");

    // Termination on A is seen by B.
    let path = "multi/terminated.bin";
    let loc = ta.create_ok(&a.signed_v(path, path, len), len).await;
    assert_eq!(
        ta.patch(&loc, 0, data[..1000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(tb.delete(&loc).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(ta.head(&loc).await.status(), StatusCode::NOT_FOUND);

    // Session tokens: broken off on A, resumed on B.
    let path = "multi/session.bin";
    let url_a = a.signed_v(path, path, len);
    let url_b = b.signed_v(path, path, len);
    let token = "multi-instance-token-0123";
    let head = format!(
        "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {len}\r\nX-Session-Token: {token}",
        a.target(&url_a),
        a.addr
    );
    Streaming::start(a.addr, &head, &data[..50_000]).cut();
    let http = client();
    let kept = eventually(Duration::from_secs(10), || async {
        let r = http.head(&url_b).header("x-session-token", token).send().await.unwrap();
        r.status() == StatusCode::OK && header(&r, "upload-offset").as_deref() == Some("50000")
    })
    .await;
    assert!(kept, "B sees what A kept; logs:\n{}\n---\n{}", a.log(), b.log());
    let r = http
        .put(&url_b)
        .header("x-session-token", token)
        .header("content-range", format!("bytes 50000-{}/{len}", len - 1))
        .body(data[50_000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_served(&ta, &a.url(path), &data, "served").await;

    // An instance stops (SIGTERM); the other carries on with the upload it began.
    let path = "multi/survivor.bin";
    // (B goes: A's folder holds the shared store.)
    let loc = tb.create_ok(&b.signed_v(path, path, len), len).await;
    assert_eq!(
        tb.patch(&loc, 0, data[..90_000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    b.stop();
    assert_eq!(ta.offset(&loc).await, 90_000);
    assert_eq!(
        ta.patch(&loc, 90_000, data[90_000..].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_served(&ta, &a.url(path), &data, "served").await;
    assert_eq!(partial_count(&a), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_on_one_instance_stops_a_hanging_patch_on_the_other() {
    let redis = RedisServer::start();
    let extra = format!("{}BufferSize = 4096\nReadTimeout = 120\n", redis.toml());
    let a = TestServer::start(&extra);
    let b = TestServer::start_sharing(&a, &extra);
    resumable::second_patch_stops_first(&a, &b, false, 43).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_on_one_instance_stops_a_trickling_patch_on_the_other() {
    let redis = RedisServer::start();
    let extra = format!("{}BufferSize = 4096\nReadTimeout = 120\n", redis.toml());
    let a = TestServer::start(&extra);
    let b = TestServer::start_sharing(&a, &extra);
    resumable::second_patch_stops_first(&a, &b, true, 44).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_patches_through_both_instances_never_interleave() {
    let redis = RedisServer::start();
    let extra = format!("{}BufferSize = 4096\n", redis.toml());
    let a = TestServer::start(&extra);
    let b = TestServer::start_sharing(&a, &extra);
    resumable::contend(&[&a, &b], 4, 300_000, "race/two.bin").await;
}

/// Asserts a 503 with a numeric Retry-After.
#[track_caller]
fn assert_unavailable(r: &reqwest::Response, what: &str) {
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{what}");
    let after = header(r, "retry-after").unwrap_or_else(|| panic!("{what}: no Retry-After"));
    assert!(
        after.parse::<u64>().is_ok_and(|s| s >= 1),
        "{what}: Retry-After {after:?}"
    );
}

/// Plain XEP-0363 uploads and downloads, which need no state.
async fn plain_put_get_head_work(server: &TestServer, name: &str) {
    let http = client();
    let data = payload(30_000, 45);
    let url = server.signed_v(name, name, data.len() as u64);
    let r = http.put(&url).body(data.clone()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "plain PUT; log:\n{}", server.log());
    let got = http.get(server.url(name)).send().await.unwrap();
    assert_eq!(got.status(), StatusCode::OK);
    assert!(got.bytes().await.unwrap() == data);
    let head = http.head(server.url(name)).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(header(&head, "content-length"), Some(data.len().to_string()));
    let name2 = format!("{name}.with-token");
    let url = server.signed_v(&name2, &name2, data.len() as u64);
    let r = http
        .put(&url)
        .header("x-session-token", "plain-put-token-0123456789")
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "plain PUT with a session token");
}

/// A whole tus upload works (polling while the server reconnects).
async fn tus_works_again(server: &TestServer, path: &str) {
    let tus = Tus::new(server);
    let data = payload(20_000, 46);
    let slot = server.signed_v(path, path, 20_000);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let loc = loop {
        let r = tus.create(&slot, Some(20_000), &[], None).await;
        if r.status() == StatusCode::CREATED {
            break resumable::location_of(&r);
        }
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "while reconnecting");
        assert!(
            std::time::Instant::now() < deadline,
            "tus works again once Redis is back; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        tus.patch(&loc, 0, data[..5000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(tus.offset(&loc).await, 5000);
    assert_eq!(
        tus.patch(&loc, 5000, data[5000..].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_served(&tus, &server.url(path), &data, "served").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_mid_run_then_back() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let server = TestServer::start(&redis.toml());
    let tus = Tus::new(&server);
    let http = client();
    let data = payload(10_000, 47);
    let path = "down/tus.bin";
    let slot = server.signed_v(path, path, 10_000);
    let loc = tus.create_ok(&slot, 10_000).await;
    assert_eq!(
        tus.patch(&loc, 0, data[..4000].to_vec()).await.status(),
        StatusCode::NO_CONTENT
    );
    let spath = "down/session.bin";
    let surl = server.signed_v(spath, spath, 10_000);
    let token = "redis-down-token-0123456789";

    redis.stop();
    let partials = partial_count(&server);
    let r = tus.create(&slot, Some(10_000), &[], None).await;
    assert_unavailable(&r, "tus POST");
    assert_unavailable(&tus.head(&loc).await, "tus HEAD");
    assert_unavailable(&tus.patch(&loc, 4000, data[4000..].to_vec()).await, "tus PATCH");
    assert_unavailable(&tus.delete(&loc).await, "tus DELETE");
    let r = http.head(&surl).header("x-session-token", token).send().await.unwrap();
    assert_unavailable(&r, "session HEAD");
    let r = http
        .put(&surl)
        .header("x-session-token", token)
        .header("content-range", "bytes 4000-9999/10000")
        .body(data[4000..].to_vec())
        .send()
        .await
        .unwrap();
    assert_unavailable(&r, "session resume");
    assert_eq!(
        tus.get(&server.url(path)).await.0,
        StatusCode::NOT_FOUND,
        "nothing half-done becomes a file"
    );
    plain_put_get_head_work(&server, "down/plain.bin").await;
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("503") && l.to_ascii_lowercase().contains("unavailable"));
    assert!(
        line.is_some(),
        "a clear log line says why (state unavailable); log:\n{log}"
    );

    // Redis back on the same port: tus works again, no restart.
    let _redis = RedisServer::start_on(port);
    tus_works_again(&server, "down/after.bin").await;
    plain_put_get_head_work(&server, "down/plain-after.bin").await;
    // Checked last (everything above holds without it): requests refused with 503 must not
    // leave bytes behind in the store's partial folder.
    assert_eq!(
        partial_count(&server),
        partials,
        "requests refused with 503 leave partial files behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_up() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = TestServer::start(&format!("RedisAddr = \"{addr}\"\n"));
    let log = server.log();
    let loud = log.lines().find(|l| {
        let lower = l.to_ascii_lowercase();
        l.contains(" ERROR ") && lower.contains("redis") && l.contains(&addr)
    });
    assert!(loud.is_some(), "an ERROR line names Redis and its address; log:\n{log}");
    assert_no_inactive_redis_note(&server);

    let tus = Tus::new(&server);
    let r = tus
        .create(&server.signed_v("boot/a.bin", "boot/a.bin", 10), Some(10), &[], None)
        .await;
    assert_unavailable(&r, "tus POST with Redis down since start-up");
    plain_put_get_head_work(&server, "boot/plain.bin").await;

    let _redis = RedisServer::start_on(port);
    tus_works_again(&server, "boot/after.bin").await;
}

/// The library's state over this test's Redis, database `db`, with locks that live `lock_ttl`.
fn redis_state(redis: &RedisServer, db: i64, lock_ttl: Duration) -> hmac_file_server::state::UploadState {
    let settings = hmac_file_server::config::RedisSettings {
        addr: redis.addr(),
        password: None,
        db,
    };
    let state = hmac_file_server::state::redis::RedisState::connect(&settings).unwrap();
    hmac_file_server::state::UploadState::Redis(state.with_lock_ttl(lock_ttl))
}

/// A lease has one holder at a time, its holder keeps it by renewing, and it passes on when it
/// lapses or is given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_has_one_holder_and_passes_on() {
    let redis = RedisServer::start();
    let state = redis_state(&redis, 0, Duration::from_secs(30));
    let ttl = Duration::from_millis(500);
    assert!(state.lease("job", "a", ttl).await.unwrap(), "a free lease is taken");
    assert!(!state.lease("job", "b", ttl).await.unwrap(), "held by another");
    assert!(
        state.lease("other-job", "b", ttl).await.unwrap(),
        "leases are independent"
    );
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(state.lease("job", "a", ttl).await.unwrap(), "the holder renews");
    }
    assert!(
        !state.lease("job", "b", ttl).await.unwrap(),
        "renewed past its first TTL, still a's"
    );
    let lapsed = eventually(Duration::from_secs(5), || async {
        state.lease("job", "b", ttl).await.unwrap()
    })
    .await;
    assert!(lapsed, "a lease not renewed lapses and another takes it");
    assert!(
        !state.lease("job", "a", ttl).await.unwrap(),
        "and the old holder has lost it"
    );
    state.release_lease("job", "a").await.unwrap();
    assert!(
        !state.lease("job", "a", ttl).await.unwrap(),
        "only the holder can give it up"
    );
    state.release_lease("job", "b").await.unwrap();
    assert!(
        state.lease("job", "a", ttl).await.unwrap(),
        "given up, it is free at once"
    );
    let db = redis.client(0);
    let pttl = db.cmd(&["PTTL", "hmac-file-server:lease:job"]).int();
    assert!((1..=500).contains(&pttl), "namespaced, with its TTL: {pttl} ms");
}

/// A lock held past its TTL stays held while its holder lives (renewed in the background),
/// and goes when released, also when the holder is dropped without a release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_locks_are_renewed_and_always_released() {
    let redis = RedisServer::start();
    let state = redis_state(&redis, 0, Duration::from_millis(600));
    let dir = tempfile::tempdir().unwrap();
    let store = hmac_file_server::store::Store::Local(
        hmac_file_server::store::LocalStore::open(
            dir.path(),
            "upload",
            4096,
            hmac_file_server::store::RetryPolicy::NONE,
        )
        .unwrap(),
    );
    let engine = hmac_file_server::resumable::Engine::new(state.clone(), store, Default::default());
    let id = "0123456789abcdef0123456789abcdef";
    let lock_key = format!("{PREFIX}lock:{id}");
    let db = redis.client(0);

    let held = engine.lock(id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1800)).await;
    let ttl = db.cmd(&["PTTL", &lock_key]).int();
    assert!(
        (1..=600).contains(&ttl),
        "held for three TTLs and still there: {ttl} ms"
    );
    assert!(state.try_lock(id).await.unwrap().is_none(), "nobody else gets it");
    engine.unlock(held).await;
    assert_eq!(db.cmd(&["EXISTS", &lock_key]).int(), 0, "released");

    let held = engine.lock(id).await.unwrap();
    drop(held);
    let released = eventually(Duration::from_secs(2), || async {
        db.cmd(&["EXISTS", &lock_key]).int() == 0
    })
    .await;
    assert!(
        released,
        "a dropped holder's lock is released in the background, not left to expire"
    );
    let again = engine.lock(id).await.unwrap();
    engine.unlock(again).await;
}

/// With several instances one leads periodic work (retention, sweeps): only it lists the
/// store and deletes; when it shuts down it gives the lease up and another takes over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_leads_periodic_work() {
    let redis = RedisServer::start();
    let extra = format!(
        "{}DeleteFiles = true\nDeleteFilesAfterPeriod = \"1s\"\nCleanupInterval = \"1s\"\n",
        redis.toml()
    );
    let a = TestServer::start(&extra);
    let b = TestServer::start_sharing(&a, &extra);
    let leads = |s: &TestServer| s.log().contains("this instance leads periodic work");
    let passes = |s: &TestServer| s.log().matches("retention pass done").count();
    let http = client();
    let data = payload(1000, 43);
    let r = http
        .put(a.signed_v("lead/one.bin", "lead/one.bin", 1000))
        .body(data.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let deleted = eventually(Duration::from_secs(10), || async {
        http.get(a.url("lead/one.bin")).send().await.unwrap().status() == StatusCode::NOT_FOUND
    })
    .await;
    assert!(deleted, "retention ran");
    assert!(
        leads(&a) != leads(&b),
        "exactly one leads:\n{}\n---\n{}",
        a.log(),
        b.log()
    );
    let (leader, other) = if leads(&a) { (a, b) } else { (b, a) };
    assert!(passes(&leader) >= 1);
    assert_eq!(
        passes(&other),
        0,
        "the other instance never lists the store:\n{}",
        other.log()
    );
    assert!(other.log().contains("another instance leads periodic work"));

    // The leader's folder holds the store both share: keep it.
    let _store = leader.stop_keep_dir("TERM");
    let took_over = eventually(Duration::from_secs(20), || async { leads(&other) }).await;
    assert!(took_over, "the lease passes on when the leader stops:\n{}", other.log());
    let r = http
        .put(other.signed_v("lead/two.bin", "lead/two.bin", 1000))
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let deleted = eventually(Duration::from_secs(10), || async {
        http.get(other.url("lead/two.bin")).send().await.unwrap().status() == StatusCode::NOT_FOUND
    })
    .await;
    assert!(deleted, "the new leader runs retention");
}
