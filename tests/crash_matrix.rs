//! The crash matrix (docs/durability.md): every write step of the local store and of the
//! upload state fails once, in the middle of each kind of upload and removal, first with an
//! I/O error (EIO, ENOSPC or EDQUOT) and then with the process dying there (abort), on the
//! embedded state and on a Redis of its own. After each the server restarts and the
//! invariants are checked:
//!
//! - the client got an error or no answer, never a success for a file that is not whole, and
//!   an error answer leaves nothing at the final URL (sending it again is safe);
//! - nothing partial is ever at the final URL (GET and the store agree: whole or nothing);
//! - the slot can be uploaded again, or resumed from an offset whose bytes are right (the
//!   file read back at the end is the one sent);
//! - no upload's temporary is left at all (they have no name), and no other temporary, partial
//!   upload or record once its expiry passed and one cleanup pass ran; the store's file count
//!   (`store_files`) matches the files on disk.
//!
//! Built only with the `failpoints` feature (the failpoints are not in a release build):
//! `cargo nextest run --features failpoints --test crash_matrix`.
#![cfg(feature = "failpoints")]

mod common;
#[path = "common/redis.rs"]
mod redis_fixture;
#[path = "common/resumable.rs"]
#[macro_use]
mod resumable;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{TestServer, client, files_under, now_unix, payload, secret};
use hmac_file_server::auth;
use redis_fixture::{RedisClient, RedisServer};
use reqwest::StatusCode;
use resumable::{Streaming, TUS, header};

/// What the client does when the step fails.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Flow {
    /// A plain PUT (v2 token, a Content-Type, so the sidecar is written too).
    Put,
    /// tus: creation, two PATCHes of half the file (the second completes it).
    Tus,
    /// tus concatenation: two partial uploads, then the final one.
    Concat,
    /// X-Session-Token: a PUT broken off halfway (kept), then the rest with Content-Range.
    Session,
    /// Metronome DELETE of a stored file.
    Delete,
    /// A retention pass (DeleteFiles) removing a stored file.
    Retention,
}

/// How the step fails.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// It returns this error (`eio`, `enospc`, `edquot`).
    Error(&'static str),
    /// The process dies there.
    Abort,
}

const LEN: usize = 200_000;
const PATH: &str = "crash/the file.bin";
const RAW: &str = "crash/the%20file.bin";
const CONTENT_TYPE: &str = "text/plain";

/// Rows of the matrix: `name: Flow, "failpoint", hits to let pass first, error, backends;`.
macro_rules! matrix {
    (@backend $flow:ident $point:literal $skip:literal $err:literal embedded) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn embedded() {
            super::case(super::Flow::$flow, $point, $skip, $err, false).await;
        }
    };
    (@backend $flow:ident $point:literal $skip:literal $err:literal redis) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn redis() {
            super::case(super::Flow::$flow, $point, $skip, $err, true).await;
        }
    };
    ($($name:ident: $flow:ident, $point:literal, $skip:literal, $err:literal, [$($backend:ident),*];)*) => {$(
        mod $name {
            $(matrix!(@backend $flow $point $skip $err $backend);)*
        }
    )*};
}

matrix! {
    put_temp_create: Put, "store.temp.create", 0, "enospc", [embedded, redis];
    put_write: Put, "store.write", 0, "eio", [embedded, redis];
    put_fsync: Put, "store.fsync", 0, "eio", [embedded, redis];
    put_rename: Put, "store.commit.rename", 0, "edquot", [embedded, redis];
    put_dir_fsync: Put, "store.commit.dir_fsync", 0, "eio", [embedded, redis];
    put_sidecar: Put, "store.commit.sidecar", 0, "enospc", [embedded, redis];

    tus_create_bytes: Tus, "store.partial.open", 0, "enospc", [embedded, redis];
    tus_create_record: Tus, "state.put", 0, "eio", [embedded, redis];
    tus_create_record_rename: Tus, "state.put.rename", 0, "eio", [embedded];
    tus_append_open: Tus, "store.partial.open", 1, "eio", [embedded, redis];
    tus_append_write: Tus, "store.write", 1, "enospc", [embedded, redis];
    tus_append_fsync: Tus, "store.fsync", 0, "eio", [embedded, redis];
    tus_offset_move: Tus, "state.put", 1, "eio", [embedded, redis];
    tus_offset_move_rename: Tus, "state.put.rename", 1, "edquot", [embedded];
    tus_completion_fsync: Tus, "store.fsync", 2, "eio", [embedded, redis];
    tus_completion_rename: Tus, "store.commit.rename", 0, "eio", [embedded, redis];
    tus_completion_dir_fsync: Tus, "store.commit.dir_fsync", 0, "edquot", [embedded, redis];
    tus_completion_record: Tus, "state.delete", 0, "eio", [embedded, redis];
    tus_completion_bytes: Tus, "store.partial.remove", 0, "eio", [embedded, redis];

    concat_temp_create: Concat, "store.temp.create", 0, "enospc", [embedded, redis];
    concat_rename: Concat, "store.commit.rename", 0, "eio", [embedded, redis];
    concat_forget_parts: Concat, "state.delete", 0, "eio", [embedded, redis];
    concat_final_record: Concat, "state.put", 4, "eio", [embedded, redis];

    session_keep_fsync: Session, "store.fsync", 0, "eio", [embedded, redis];
    session_keep_move: Session, "store.partial.keep", 0, "enospc", [embedded, redis];
    session_keep_record: Session, "state.put", 0, "eio", [embedded, redis];
    session_resume_open: Session, "store.partial.open", 0, "eio", [embedded, redis];
    session_resume_rename: Session, "store.commit.rename", 0, "eio", [embedded, redis];
    session_resume_record: Session, "state.delete", 0, "eio", [embedded, redis];

    delete_unlink: Delete, "store.delete", 0, "eio", [embedded, redis];
    delete_sidecar: Delete, "store.delete.sidecar", 0, "eio", [embedded, redis];
    retention_unlink: Retention, "store.delete", 0, "eio", [embedded, redis];
}

/// Runs one row: with the error, then with the abort.
async fn case(flow: Flow, point: &str, skip: u32, error: &'static str, redis: bool) {
    for fault in [Fault::Error(error), Fault::Abort] {
        once(flow, point, skip, fault, redis).await;
    }
}

/// What the client knows after the failure.
#[derive(Debug, Default)]
struct Progress {
    /// The answer to the request the step failed in (None: no answer).
    answer: Option<StatusCode>,
    /// tus: the upload's Location.
    location: Option<String>,
    /// tus concatenation: the parts' Locations.
    parts: Vec<String>,
}

impl Progress {
    fn succeeded(&self) -> bool {
        self.answer.is_some_and(|s| s.is_success())
    }
}

async fn once(flow: Flow, point: &str, skip: u32, fault: Fault, redis: bool) {
    let what = format!("{flow:?} with {point} (after {skip}) failing by {fault:?}, redis {redis}");
    let redis = redis.then(RedisServer::start);
    let mut extra = format!(
        "BufferSize = 4096\nUploadExpiry = \"60s\"\n{}",
        redis.as_ref().map(RedisServer::toml).unwrap_or_default()
    );
    if flow == Flow::Retention {
        extra.push_str("DeleteFiles = true\nDeleteFilesAfterPeriod = \"1h\"\n");
    }
    let body = payload(LEN, 7);
    let mut dir = tempfile::tempdir().unwrap();

    // Delete and retention remove a file stored before (without failpoints).
    if matches!(flow, Flow::Delete | Flow::Retention) {
        let before = if flow == Flow::Retention { "" } else { extra.as_str() };
        let server = TestServer::start_in(dir, before);
        assert_eq!(put(&server, &body).await, Some(StatusCode::CREATED), "{what}: setup");
        dir = server.stop_keep_dir("TERM");
        if flow == Flow::Retention {
            let file = std::fs::File::options()
                .write(true)
                .open(dir.path().join("store/upload").join(PATH))
                .unwrap();
            file.set_modified(SystemTime::now() - Duration::from_secs(7200))
                .unwrap();
        }
    }

    // The failing run.
    let action = match fault {
        Fault::Error(e) => e,
        Fault::Abort => "abort",
    };
    let spec = if skip == 0 {
        format!("{point}=1*return({action})")
    } else {
        format!("{point}={skip}*off->1*return({action})")
    };
    let mut server = TestServer::start_in_env(dir, &extra, &[("FAILPOINTS", &spec)]);
    let progress = act(flow, &server, &body).await;
    let fired = format!("failpoint {point} fires");
    assert!(
        common::wait_until(Duration::from_secs(10), || server.log().contains(&fired)),
        "{what}: the step was never reached; progress {progress:?}; log:\n{}",
        server.log()
    );
    if let Fault::Abort = fault {
        assert!(
            server.wait_exit(Duration::from_secs(10)).is_some(),
            "{what}: the server did not die at the failpoint"
        );
    }
    let log = server.log();
    dir = server.stop_keep_dir("TERM");
    // An upload's temporary has no name (O_TMPFILE): neither the crash nor the error leaves
    // one to sweep (a sidecar on its way to the meta folder may stay, named `*.meta`).
    let temporaries: Vec<_> = files_under(&dir.path().join("store/.hmac-file-server/tmp"))
        .into_iter()
        .filter(|p| p.extension().is_none_or(|e| e != "meta"))
        .collect();
    assert!(temporaries.is_empty(), "{what}: temporaries left: {temporaries:?}");
    if let (Fault::Abort, Some(redis)) = (fault, &redis) {
        outlive_dead_instance(&redis.client(0), &what);
    }

    // After a restart: whole or nothing at the final URL, whatever was answered.
    let server = TestServer::start_in(dir, &extra);
    let visible = if flow == Flow::Retention {
        // The restarted server's own pass may be deleting it right now: one look at the disk.
        let on_disk = server.stored(PATH);
        assert!(
            on_disk.is_none() || on_disk.as_deref() == Some(&body[..]),
            "{what}: a torn file"
        );
        on_disk.is_some()
    } else {
        whole_or_nothing(&server, &body, &what).await
    };
    if progress.succeeded() {
        assert!(
            visible || matches!(flow, Flow::Delete),
            "{what}: answered {:?} but the file is not whole; log of the failing run:\n{log}",
            progress.answer
        );
    }
    // An error answer leaves nothing at the final URL: the client may safely send it again.
    let uploads = !matches!(flow, Flow::Delete | Flow::Retention);
    if uploads && progress.answer.is_some() && !progress.succeeded() {
        assert!(
            !visible,
            "{what}: answered {:?} but the file is stored; log of the failing run:\n{log}",
            progress.answer
        );
    }
    // A DELETE answers success only when the file is gone, an error only when it is not.
    if flow == Flow::Delete && progress.answer.is_some() {
        assert_eq!(
            !visible,
            progress.succeeded(),
            "{what}: the DELETE was answered {:?}; the file is there: {visible}",
            progress.answer
        );
    }

    // The client (or the next pass) finishes what it started.
    let recovery = recover(flow, &server, &body, &progress, visible, &what).await;
    let after = whole_or_nothing(&server, &body, &what).await;
    let stays = !matches!(flow, Flow::Delete | Flow::Retention);
    assert_eq!(
        after,
        stays,
        "{what}: after recovery the file should be {}",
        if stays { "whole" } else { "gone" }
    );

    // Past the expiry, one cleanup pass leaves nothing behind.
    let dir = server.stop_keep_dir("TERM");
    expire_everything(dir.path(), redis.as_ref().map(|r| r.client(0)).as_ref(), &what);
    let server = TestServer::start_in(dir, &extra);
    let internal = server.store().join(".hmac-file-server");
    let leftovers = || {
        let mut left: Vec<String> = ["tmp", "partial", "uploads"]
            .iter()
            .flat_map(|d| files_under(&internal.join(d)))
            .map(|p| p.display().to_string())
            .collect();
        if let Some(r) = &redis {
            left.extend(r.client(0).keys("hmac-file-server:upload:*"));
        }
        left
    };
    assert!(
        common::wait_until(Duration::from_secs(10), || leftovers().is_empty()),
        "{what}: left after a cleanup pass: {:?}; log:\n{}",
        leftovers(),
        server.log()
    );
    let on_disk = files_under(&server.files_dir())
        .iter()
        .filter(|p| !p.starts_with(&internal))
        .count();
    let counted = store_files(&server);
    assert_eq!(
        counted,
        Some(on_disk as u64),
        "{what}: store_files against the files on disk"
    );
    // For the table in docs/durability.md (`--no-capture`).
    println!(
        "outcome | {flow:?} | {point} (after {skip}) | {fault:?} | redis {} | answer {} | after restart: {} | {recovery}",
        redis.is_some(),
        progress.answer.map_or("none".to_string(), |s| s.as_u16().to_string()),
        if visible { "whole file" } else { "nothing" },
    );
}

/// GET at the final URL: true when the whole file is served; false when nothing is (404).
/// Anything else (a partial file, another status) fails the test. The store agrees.
async fn whole_or_nothing(server: &TestServer, body: &[u8], what: &str) -> bool {
    let r = client().get(server.url(RAW)).send().await.unwrap();
    let status = r.status();
    let got = r.bytes().await.unwrap();
    let on_disk = server.stored(PATH);
    match status {
        StatusCode::OK => {
            assert!(
                got == body,
                "{what}: GET serves {} bytes that are not the file",
                got.len()
            );
            assert!(on_disk.as_deref() == Some(body), "{what}: the stored file differs");
            true
        }
        StatusCode::NOT_FOUND => {
            assert!(on_disk.is_none(), "{what}: 404 but a file is stored");
            false
        }
        other => panic!("{what}: GET answered {other}"),
    }
}

/// The requests of `flow` up to the failure (each one's answer, or None when none came).
async fn act(flow: Flow, server: &TestServer, body: &[u8]) -> Progress {
    let half = body.len() / 2;
    let mut p = Progress::default();
    match flow {
        Flow::Put => p.answer = put(server, body).await,
        Flow::Tus => {
            let (answer, location) = tus_create(server, &server.signed_v(RAW, PATH, LEN as u64), &[]).await;
            p.answer = answer;
            p.location = location;
            let Some(location) = p.location.clone() else { return p };
            for (from, to) in [(0, half), (half, body.len())] {
                p.answer = tus_patch(server, &location, from, &body[from..to]).await;
                if p.answer != Some(StatusCode::NO_CONTENT) {
                    return p;
                }
            }
        }
        Flow::Concat => {
            let part_slot = server.signed_v3(RAW, PATH, now_unix() + 3600);
            for range in [0..half, half..body.len()] {
                let length = range.len().to_string();
                let (answer, location) = tus_create(
                    server,
                    &part_slot,
                    &[("upload-concat", "partial"), ("upload-length", &length)],
                )
                .await;
                p.answer = answer;
                let Some(location) = location else { return p };
                p.answer = tus_patch(server, &location, 0, &body[range]).await;
                p.parts.push(location);
                if p.answer != Some(StatusCode::NO_CONTENT) {
                    return p;
                }
            }
            p.answer = tus_final(server, &p.parts).await;
        }
        Flow::Session => {
            let head = format!(
                "PUT {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {LEN}\r\nX-Session-Token: {SESSION}\r\n\
                 Content-Type: application/octet-stream",
                server.target(&server.signed_v(RAW, PATH, LEN as u64)),
                server.addr
            );
            Streaming::start(server.addr, &head, &body[..half]).cut();
            // Kept when HEAD with the token knows it (the keeping runs after the cut).
            let mut offset = None;
            for _ in 0..100 {
                match session_offset(server).await {
                    Err(()) => break,
                    Ok(Some(o)) => {
                        offset = Some(o);
                        break;
                    }
                    Ok(None) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            let Some(offset) = offset else { return p };
            p.answer = session_resume(server, offset as usize, body).await;
        }
        Flow::Delete => p.answer = delete(server).await,
        // The pass runs at start.
        Flow::Retention => {}
    }
    p
}

/// What a client (or the next pass) does after the restart to get what it wanted.
async fn recover(flow: Flow, server: &TestServer, body: &[u8], p: &Progress, visible: bool, what: &str) -> String {
    match flow {
        Flow::Put => {
            let again = put(server, body).await;
            // A file committed before the crash took its answer with it: the path is taken.
            let expected = if visible {
                StatusCode::CONFLICT
            } else {
                StatusCode::CREATED
            };
            assert_eq!(again, Some(expected), "{what}: the PUT again");
            format!("PUT again: {expected}")
        }
        Flow::Tus => {
            if visible {
                return "none needed".into();
            }
            if let Some(location) = &p.location {
                let r = tus_head(server, location).await;
                if r.status() == StatusCode::OK {
                    let offset: usize = header(&r, "upload-offset").unwrap().parse().unwrap();
                    assert!(offset <= body.len(), "{what}: offset {offset} past the length");
                    if offset < body.len() {
                        let answer = tus_patch(server, location, offset, &body[offset..]).await;
                        assert_eq!(answer, Some(StatusCode::NO_CONTENT), "{what}: resuming at {offset}");
                        return format!("resumed at {offset}");
                    }
                    return "HEAD finished it".into();
                }
            }
            {
                // Nothing to resume: a new upload.
                let (answer, location) = tus_create(server, &server.signed_v(RAW, PATH, LEN as u64), &[]).await;
                assert_eq!(answer, Some(StatusCode::CREATED), "{what}: a new upload");
                let answer = tus_patch(server, &location.unwrap(), 0, body).await;
                assert_eq!(answer, Some(StatusCode::NO_CONTENT), "{what}: the new upload's bytes");
                "a new upload".into()
            }
        }
        Flow::Concat => {
            if visible {
                return "none needed".into();
            }
            let mut parts_whole = p.parts.len() == 2;
            for part in &p.parts {
                let r = tus_head(server, part).await;
                parts_whole &=
                    r.status() == StatusCode::OK && header(&r, "upload-offset") == header(&r, "upload-length");
            }
            if parts_whole {
                assert_eq!(
                    tus_final(server, &p.parts).await,
                    Some(StatusCode::CREATED),
                    "{what}: the final upload again"
                );
                "final upload again".into()
            } else {
                assert_eq!(
                    put(server, body).await,
                    Some(StatusCode::CREATED),
                    "{what}: a PUT instead"
                );
                "a new upload".into()
            }
        }
        Flow::Session => {
            if visible {
                return "none needed".into();
            }
            let (answer, how) = match session_offset(server).await {
                // All bytes there: HEAD finished the upload (checked by the caller).
                Ok(Some(offset)) if offset as usize == body.len() => return "HEAD finished it".into(),
                Ok(Some(offset)) => {
                    assert!(offset as usize <= body.len(), "{what}: offset {offset} past the length");
                    (
                        session_resume(server, offset as usize, body).await,
                        format!("resumed at {offset}"),
                    )
                }
                // Nothing kept: the whole PUT again.
                _ => (session_put(server, body).await, "a new upload".into()),
            };
            assert_eq!(answer, Some(StatusCode::CREATED), "{what}: resuming");
            how
        }
        Flow::Delete => {
            let again = delete(server).await;
            assert!(
                matches!(again, Some(StatusCode::NO_CONTENT | StatusCode::NOT_FOUND)),
                "{what}: the DELETE again: {again:?}"
            );
            format!("DELETE again: {}", again.unwrap())
        }
        Flow::Retention => {
            let gone = common::wait_until(Duration::from_secs(10), || !server.files_dir().join(PATH).exists());
            assert!(gone, "{what}: the next pass deletes the file; log:\n{}", server.log());
            "the next pass deletes it".into()
        }
    }
}

/// What a dead instance held in Redis (the locks of its uploads, the lease of periodic work)
/// must carry a TTL; it goes here as the TTL would make it go, so the restarted instance
/// need not wait for it.
fn outlive_dead_instance(redis: &RedisClient, what: &str) {
    for pattern in [
        "hmac-file-server:lock:*",
        "hmac-file-server:lease:*",
        "hmac-file-server:stop:*",
    ] {
        for key in redis.keys(pattern) {
            let ttl = redis.cmd(&["PTTL", &key]).int();
            assert!(
                ttl > 0,
                "{what}: {key} left by the dead instance has no expiry (PTTL {ttl})"
            );
            redis.cmd(&["DEL", &key]);
        }
    }
}

/// Makes everything unfinished look expired, as it will once UploadExpiry has passed:
/// embedded records get an expiry in the past, Redis records (which must carry a TTL) go as
/// their TTL would make them, and the files of temporaries and partial uploads get old.
fn expire_everything(dir: &Path, redis: Option<&RedisClient>, what: &str) {
    let internal = dir.join("store/.hmac-file-server");
    for path in files_under(&internal.join("uploads")) {
        if path.extension().is_some_and(|e| e == "json") {
            let mut record: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            record["expires_unix"] = serde_json::json!(now_unix() - 10);
            std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        }
    }
    if let Some(redis) = redis {
        for key in redis.keys("hmac-file-server:upload:*") {
            let ttl = redis.cmd(&["TTL", &key]).int();
            assert!(ttl > 0, "{what}: Redis record {key} has no expiry (TTL {ttl})");
            redis.cmd(&["DEL", &key]);
        }
    }
    let old = SystemTime::now() - Duration::from_secs(7200);
    for folder in ["tmp", "partial"] {
        for path in files_under(&internal.join(folder)) {
            if let Ok(f) = std::fs::File::options().write(true).open(&path) {
                let _ = f.set_modified(old);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Requests that report a missing answer instead of panicking (the server may die in them).
// ---------------------------------------------------------------------------------------

const SESSION: &str = "crash-matrix-session-token-0123";

async fn put(server: &TestServer, body: &[u8]) -> Option<StatusCode> {
    let url = server.signed_v2(RAW, PATH, body.len() as u64, CONTENT_TYPE);
    let r = client()
        .put(url)
        .header("content-type", CONTENT_TYPE)
        .body(body.to_vec())
        .send()
        .await;
    r.ok().map(|r| r.status())
}

async fn delete(server: &TestServer) -> Option<StatusCode> {
    let token = auth::sign_delete(&secret(), PATH, &secret());
    let r = client()
        .delete(format!("{}?token={token}", server.url(RAW)))
        .send()
        .await;
    r.ok().map(|r| r.status())
}

async fn tus_create(server: &TestServer, slot: &str, headers: &[(&str, &str)]) -> (Option<StatusCode>, Option<String>) {
    let mut req = client().post(slot).header("tus-resumable", TUS);
    if !headers.iter().any(|(k, _)| *k == "upload-length") && !headers.iter().any(|(k, _)| *k == "upload-concat") {
        req = req.header("upload-length", LEN.to_string());
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match req.send().await {
        Ok(r) => {
            let location = (r.status() == StatusCode::CREATED)
                .then(|| header(&r, "location"))
                .flatten()
                .map(|l| l.strip_prefix(&server.base).map(str::to_string).unwrap_or(l));
            (Some(r.status()), location)
        }
        Err(_) => (None, None),
    }
}

async fn tus_patch(server: &TestServer, location: &str, offset: usize, bytes: &[u8]) -> Option<StatusCode> {
    let r = client()
        .patch(format!("{}{location}", server.base))
        .header("tus-resumable", TUS)
        .header("content-type", "application/offset+octet-stream")
        .header("upload-offset", offset.to_string())
        .body(bytes.to_vec())
        .send()
        .await;
    r.ok().map(|r| r.status())
}

async fn tus_head(server: &TestServer, location: &str) -> reqwest::Response {
    client()
        .head(format!("{}{location}", server.base))
        .header("tus-resumable", TUS)
        .send()
        .await
        .unwrap()
}

async fn tus_final(server: &TestServer, parts: &[String]) -> Option<StatusCode> {
    let list = format!("final;{}", parts.join(" "));
    let slot = server.signed_v(RAW, PATH, LEN as u64);
    tus_create(server, &slot, &[("upload-concat", &list)]).await.0
}

/// The offset HEAD with the session token gives: Ok(None) when the upload is not known,
/// Err when no answer came.
async fn session_offset(server: &TestServer) -> Result<Option<u64>, ()> {
    let r = client()
        .head(server.signed_v(RAW, PATH, LEN as u64))
        .header("x-session-token", SESSION)
        .send()
        .await
        .map_err(|_| ())?;
    Ok((r.status() == StatusCode::OK)
        .then(|| header(&r, "upload-offset").and_then(|v| v.parse().ok()))
        .flatten())
}

async fn session_put(server: &TestServer, body: &[u8]) -> Option<StatusCode> {
    let r = client()
        .put(server.signed_v(RAW, PATH, body.len() as u64))
        .header("x-session-token", SESSION)
        .body(body.to_vec())
        .send()
        .await;
    r.ok().map(|r| r.status())
}

async fn session_resume(server: &TestServer, from: usize, body: &[u8]) -> Option<StatusCode> {
    let total = body.len();
    let r = client()
        .put(server.signed_v(RAW, PATH, total as u64))
        .header("x-session-token", SESSION)
        .header("content-range", format!("bytes {from}-{}/{total}", total - 1))
        .body(body[from..].to_vec())
        .send()
        .await;
    r.ok().map(|r| r.status())
}

/// The `store_files` gauge, once the start-up pass set it (waits up to 10 s).
fn store_files(server: &TestServer) -> Option<u64> {
    common::wait_until(Duration::from_secs(10), || server.log().contains("retention pass done"));
    server.metric("hmac_file_server_store_files").map(|v| v as u64)
}
