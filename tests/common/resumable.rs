//! Helpers shared by the resumable-upload tests (tus, session, redis_state): tus requests,
//! reading and ageing upload records in either state backend, and raw streaming requests
//! that can be left hanging or cut off. Include next to `mod common;` with
//! `#[path = "common/resumable.rs"] mod resumable;` (and `common/redis.rs` as `redis_fixture`).
#![allow(dead_code)]

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::{Response, StatusCode};
use sha2::Digest;

use super::common::{RawResponse, TestServer, now_unix, read_response};
use super::redis_fixture::{RedisClient, Reply};

/// Runs each behaviour (an `async fn name(extra: &str)`) once per state backend and store, as
/// `name::embedded` (embedded state, local store), `name::redis` (Redis state with a
/// redis-server of its own), and with the `s3` feature `name::s3` (embedded state, files in the
/// bucket of a Garage of its own) and `name::s3_redis` (Redis state and Garage: the shape of
/// several instances sharing one bucket). `extra` is the TOML those select (in the including
/// test crate, which names `common/redis.rs` `redis_fixture`). `name: [variants]` runs only
/// those variants (say why next to the behaviour).
#[allow(unused_macros)] // redis_state.rs includes this file but runs one backend at a time
macro_rules! on_both_backends {
    (@variant $name:ident embedded) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn embedded() {
            super::$name("").await;
        }
    };
    (@variant $name:ident redis) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn redis() {
            let redis = crate::redis_fixture::RedisServer::start();
            super::$name(&redis.toml()).await;
        }
    };
    (@variant $name:ident s3) => {
        #[cfg(feature = "s3")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn s3() {
            let garage = crate::common::garage::Garage::start();
            super::$name(&garage.toml("files/")).await;
        }
    };
    (@variant $name:ident s3_redis) => {
        #[cfg(feature = "s3")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn s3_redis() {
            let garage = crate::common::garage::Garage::start();
            let redis = crate::redis_fixture::RedisServer::start();
            super::$name(&format!("{}{}", garage.toml("files/"), redis.toml())).await;
        }
    };
    () => {};
    ($name:ident : [$($variant:ident),* $(,)?] $(, $($rest:tt)*)?) => {
        mod $name {
            $(on_both_backends!(@variant $name $variant);)*
        }
        $(on_both_backends!($($rest)*);)?
    };
    ($name:ident $(, $($rest:tt)*)?) => {
        on_both_backends!($name: [embedded, redis, s3, s3_redis] $(, $($rest)*)?);
    };
}

/// The tus version header value.
pub const TUS: &str = "1.0.0";
/// Where tus upload resources live.
pub const TUS_PREFIX: &str = "/upload/.hmac-file-server/tus/";

/// A header as text.
pub fn header(r: &Response, name: &str) -> Option<String> {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

/// Upload-Offset of a response (panics when absent or not a number).
#[track_caller]
pub fn offset_of(r: &Response) -> u64 {
    header(r, "upload-offset")
        .unwrap_or_else(|| panic!("no Upload-Offset on {}", r.status()))
        .parse()
        .unwrap()
}

/// The path of a tus Location (relative or absolute), checked to be ours.
#[track_caller]
pub fn location_of(r: &Response) -> String {
    let loc = header(r, "location").unwrap_or_else(|| panic!("no Location on {}", r.status()));
    let path = match loc.find(TUS_PREFIX) {
        Some(i) => loc[i..].to_string(),
        None => panic!("Location {loc} is not under {TUS_PREFIX}"),
    };
    let id = &path[TUS_PREFIX.len()..];
    assert!(
        id.len() >= 32 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "Location id {id:?} is not a long random hex id"
    );
    path
}

/// The upload id at the end of a Location path.
pub fn id_of(location: &str) -> String {
    location.rsplit('/').next().unwrap().to_string()
}

/// A tus client against one server base (`http://127.0.0.1:port`).
#[derive(Clone)]
pub struct Tus {
    /// The HTTP client.
    pub http: reqwest::Client,
    /// `http://addr`.
    pub base: String,
}

impl Tus {
    /// A client for `server`.
    pub fn new(server: &TestServer) -> Tus {
        Tus {
            http: super::common::client(),
            base: server.base.clone(),
        }
    }

    /// `POST` to a signed slot URL with Upload-Length and any extra headers; `body` makes it
    /// creation-with-upload.
    pub async fn create(
        &self,
        slot_url: &str,
        length: Option<u64>,
        extra: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Response {
        let mut req = self.http.post(slot_url).header("tus-resumable", TUS);
        if let Some(n) = length {
            req = req.header("upload-length", n.to_string());
        }
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/offset+octet-stream").body(b);
        }
        req.send().await.unwrap()
    }

    /// Creates an upload that must succeed; returns its Location path.
    pub async fn create_ok(&self, slot_url: &str, length: u64) -> String {
        let r = self.create(slot_url, Some(length), &[], None).await;
        assert_eq!(r.status(), StatusCode::CREATED, "tus creation: {:?}", r.text().await);
        location_of(&r)
    }

    /// `HEAD` on an upload.
    pub async fn head(&self, location: &str) -> Response {
        self.http
            .head(format!("{}{location}", self.base))
            .header("tus-resumable", TUS)
            .send()
            .await
            .unwrap()
    }

    /// The upload's offset from HEAD (asserting 200).
    pub async fn offset(&self, location: &str) -> u64 {
        let r = self.head(location).await;
        assert_eq!(r.status(), StatusCode::OK, "HEAD {location}");
        offset_of(&r)
    }

    /// `PATCH` a chunk at `offset` with extra headers.
    pub async fn patch_with(&self, location: &str, offset: u64, body: Vec<u8>, extra: &[(&str, &str)]) -> Response {
        let mut req = self
            .http
            .patch(format!("{}{location}", self.base))
            .header("tus-resumable", TUS)
            .header("content-type", "application/offset+octet-stream")
            .header("upload-offset", offset.to_string());
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        req.body(body).send().await.unwrap()
    }

    /// `PATCH` a chunk at `offset`.
    pub async fn patch(&self, location: &str, offset: u64, body: Vec<u8>) -> Response {
        self.patch_with(location, offset, body, &[]).await
    }

    /// `DELETE` an upload (termination).
    pub async fn delete(&self, location: &str) -> Response {
        self.http
            .delete(format!("{}{location}", self.base))
            .header("tus-resumable", TUS)
            .send()
            .await
            .unwrap()
    }

    /// `GET` a URL of this server; (status, body).
    pub async fn get(&self, url: &str) -> (StatusCode, Vec<u8>) {
        let r = self.http.get(url).send().await.unwrap();
        (r.status(), r.bytes().await.unwrap().to_vec())
    }
}

/// Polls an async check every 20 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The id of a session-token upload (SPEC §4.1): SHA-256 of token, NUL, decoded path.
pub fn session_id(token: &str, path: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(token.as_bytes());
    h.update([0]);
    h.update(path.as_bytes());
    hex::encode(h.finalize())
}

/// Where the bytes of an unfinished upload live in the local store (not on S3).
pub fn partial_path(server: &TestServer, id: &str) -> PathBuf {
    assert!(
        server.s3().is_none(),
        "on S3 an unfinished upload's bytes are in the bucket"
    );
    server
        .store()
        .join(".hmac-file-server/partial")
        .join(format!("{id}.part"))
}

/// Bytes of an unfinished upload in the store (None when there are none): locally its file;
/// on S3 its parts (as the bucket lists them) and the tail its record names, or, without a
/// record, every tail object of it (or its completed object, before it goes).
pub fn partial_len(server: &TestServer, id: &str) -> Option<u64> {
    if server.s3().is_some() {
        return s3_partials::len(server, id);
    }
    std::fs::metadata(partial_path(server, id)).ok().map(|m| m.len())
}

/// Number of unfinished uploads with bytes in the store: locally partial files; on S3
/// distinct upload ids with a multipart upload or an object (a tail) under the partial prefix.
pub fn partial_count(server: &TestServer) -> usize {
    if server.s3().is_some() {
        return s3_partials::count(server);
    }
    std::fs::read_dir(server.store().join(".hmac-file-server/partial"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Whether `bytes` are, in the store, the first bytes of upload `id`. On S3 (which cannot read
/// the parts of an unfinished multipart upload) the parts its record lists must have the MD5
/// ETags of the matching ranges of `bytes` (so `bytes` may not end inside a part), and the
/// rest must be the start of the tail object its record names.
pub fn partial_starts_with(server: &TestServer, id: &str, bytes: &[u8]) -> bool {
    if server.s3().is_some() {
        return s3_partials::starts_with(server, id, bytes);
    }
    std::fs::read(partial_path(server, id)).is_ok_and(|d| d.len() >= bytes.len() && d[..bytes.len()] == *bytes)
}

/// Bytes an append under way has taken into the store so far, as far as the test can see:
/// locally the partial file of upload `id`; on S3 the largest local file a part is gathered in
/// (under the store's temporary folder, written through a 1 MiB buffer: nothing shows before
/// that much came; a file shows as soon as an append is open).
pub fn received_len(server: &TestServer, id: &str) -> u64 {
    if server.s3().is_some() {
        return gathering_files(server).into_iter().max().unwrap_or(0);
    }
    partial_len(server, id).unwrap_or(0)
}

/// On S3, the sizes of the local files parts of appends under way are gathered in.
pub fn gathering_files(server: &TestServer) -> Vec<u64> {
    std::fs::read_dir(server.store().join(".hmac-file-server/tmp"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".s3part"))
                .filter_map(|e| e.metadata().ok().map(|m| m.len()))
                .collect()
        })
        .unwrap_or_default()
}

/// The partial-upload helpers on S3: what the bucket holds for an unfinished upload.
#[cfg(feature = "s3")]
mod s3_partials {
    use super::super::common::{S3View, TestServer};
    use super::Backend;

    /// Where unfinished uploads are, under S3Prefix.
    const PARTIAL: &str = ".hmac-file-server/partial/";

    fn view(server: &TestServer) -> &S3View {
        server.s3().expect("a server on S3")
    }

    /// The S3 handle in upload `id`'s record, if it has one.
    fn handle(server: &TestServer, id: &str) -> Option<serde_json::Value> {
        let record = Backend::of_server(server).record(server, id)?;
        let handle = record.get("handle")?.clone();
        (handle["backend"] == "s3").then_some(handle)
    }

    /// The ids of the multipart uploads at exactly the key of upload `id`.
    fn uploads(s3: &S3View, id: &str) -> Vec<String> {
        let key = format!("{}{PARTIAL}{id}", s3.prefix);
        s3.with(|client, bucket| async move {
            let listed = client
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(&key)
                .send()
                .await
                .expect("listing multipart uploads");
            listed
                .uploads()
                .iter()
                .filter(|u| u.key() == Some(key.as_str()))
                .filter_map(|u| u.upload_id().map(str::to_string))
                .collect()
        })
    }

    /// The parts of multipart upload `upload_id` of upload `id`: (number, size, ETag without
    /// quotes); none when there is no such upload.
    fn parts(s3: &S3View, id: &str, upload_id: &str) -> Vec<(i32, u64, String)> {
        let key = format!("{}{PARTIAL}{id}", s3.prefix);
        let upload_id = upload_id.to_string();
        s3.with(|client, bucket| async move {
            let Ok(listed) = client
                .list_parts()
                .bucket(bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await
            else {
                return Vec::new();
            };
            listed
                .parts()
                .iter()
                .map(|p| {
                    (
                        p.part_number().unwrap_or(0),
                        p.size().unwrap_or(0).max(0) as u64,
                        p.e_tag().unwrap_or_default().trim_matches('"').to_string(),
                    )
                })
                .collect()
        })
    }

    /// The objects of upload `id`: its completed object (if any) and its tails (name, size).
    fn objects(s3: &S3View, id: &str) -> (Option<u64>, Vec<(String, u64)>) {
        let key = format!("{PARTIAL}{id}");
        let tail = format!("{key}.tail.");
        let mut whole = None;
        let mut tails = Vec::new();
        for (k, size) in s3.objects(&key) {
            if k == key {
                whole = Some(size);
            } else if let Some(name) = k.strip_prefix(&tail) {
                tails.push((name.to_string(), size));
            }
        }
        (whole, tails)
    }

    pub fn len(server: &TestServer, id: &str) -> Option<u64> {
        let s3 = view(server);
        let (whole, tails) = objects(s3, id);
        if whole.is_some() {
            return whole;
        }
        let uploads = uploads(s3, id);
        if uploads.is_empty() && tails.is_empty() {
            return None;
        }
        let listed = |upload_id: &str| parts(s3, id, upload_id).iter().map(|p| p.1).sum::<u64>();
        Some(match handle(server, id) {
            Some(h) => {
                let tail = h["tail"]["name"]
                    .as_str()
                    .map_or(0, |name| tails.iter().find(|t| t.0 == name).map_or(0, |t| t.1));
                listed(h["upload_id"].as_str().expect("an S3 handle has an upload id")) + tail
            }
            None => uploads.iter().map(|u| listed(u)).sum::<u64>() + tails.iter().map(|t| t.1).sum::<u64>(),
        })
    }

    pub fn count(server: &TestServer) -> usize {
        let s3 = view(server);
        let id_of = |key: &str| -> String {
            let rest = key.strip_prefix(PARTIAL).unwrap_or(key);
            rest.split('.').next().unwrap_or(rest).to_string()
        };
        let mut ids: Vec<String> = s3
            .multipart_uploads(PARTIAL)
            .iter()
            .map(|k| id_of(k))
            .chain(s3.objects(PARTIAL).iter().map(|(k, _)| id_of(k)))
            .collect();
        ids.sort();
        ids.dedup();
        ids.len()
    }

    pub fn starts_with(server: &TestServer, id: &str, bytes: &[u8]) -> bool {
        use md5::Digest;
        let s3 = view(server);
        let Some(h) = handle(server, id) else { return false };
        let listed = parts(s3, id, h["upload_id"].as_str().expect("an S3 handle has an upload id"));
        let mut at = 0usize;
        for part in h["parts"].as_array().into_iter().flatten() {
            if at >= bytes.len() {
                return true;
            }
            let number = part["number"].as_i64().unwrap() as i32;
            let end = at + part["size"].as_u64().unwrap() as usize;
            assert!(
                end <= bytes.len(),
                "cannot check a prefix that ends inside part {number} (bytes {at}..{end}) on S3"
            );
            let Some((_, size, etag)) = listed.iter().find(|p| p.0 == number) else {
                return false; // the record lists a part the bucket does not have
            };
            if *size as usize != end - at || *etag != hex::encode(md5::Md5::digest(&bytes[at..end])) {
                return false;
            }
            at = end;
        }
        if at >= bytes.len() {
            return true;
        }
        let Some(name) = h["tail"]["name"].as_str() else {
            return false;
        };
        let Some(tail) = s3.read(&format!("{PARTIAL}{id}.tail.{name}")) else {
            return false;
        };
        let rest = &bytes[at..];
        tail.len() as u64 == h["tail"]["size"].as_u64().unwrap()
            && tail.len() >= rest.len()
            && tail[..rest.len()] == *rest
    }
}

#[cfg(not(feature = "s3"))]
mod s3_partials {
    use super::super::common::TestServer;

    pub fn len(_: &TestServer, _: &str) -> Option<u64> {
        unreachable!("StoreBackend = \"s3\" needs the s3 feature")
    }

    pub fn count(_: &TestServer) -> usize {
        unreachable!("StoreBackend = \"s3\" needs the s3 feature")
    }

    pub fn starts_with(_: &TestServer, _: &str, _: &[u8]) -> bool {
        unreachable!("StoreBackend = \"s3\" needs the s3 feature")
    }
}

/// The state backend a server's extra TOML selects, seen from the test.
pub enum Backend {
    /// JSON records under the store.
    Embedded,
    /// Records in Redis.
    Redis(RedisClient),
}

/// Redis key of an upload record.
pub fn redis_record_key(id: &str) -> String {
    format!("hmac-file-server:upload:{id}")
}

impl Backend {
    /// The backend `extra` selects.
    pub fn of(extra: &str) -> Backend {
        match RedisClient::from_toml(extra) {
            Some(c) => Backend::Redis(c),
            None => Backend::Embedded,
        }
    }

    /// The backend `server` was started with (read from its config file).
    pub fn of_server(server: &TestServer) -> Backend {
        let config = std::fs::read_to_string(server.dir.path().join("config.toml")).unwrap_or_default();
        Backend::of(&config)
    }

    /// Whether this is the embedded state.
    pub fn is_embedded(&self) -> bool {
        matches!(self, Backend::Embedded)
    }

    fn embedded_path(server: &TestServer, id: &str) -> PathBuf {
        server
            .store()
            .join(".hmac-file-server/uploads")
            .join(format!("{id}.json"))
    }

    /// The record of upload `id`, if the backend holds one.
    pub fn record(&self, server: &TestServer, id: &str) -> Option<serde_json::Value> {
        let text = match self {
            Backend::Embedded => std::fs::read_to_string(Self::embedded_path(server, id)).ok()?,
            Backend::Redis(c) => c.cmd(&["GET", &redis_record_key(id)]).text()?,
        };
        Some(serde_json::from_str(&text).expect("a record is JSON"))
    }

    /// Moves the record's expiry into the past (as if UploadExpiry had passed), keeping
    /// everything else (in Redis also its TTL).
    #[track_caller]
    pub fn age_record(&self, server: &TestServer, id: &str) {
        let mut record = self.record(server, id).expect("a record to age");
        record["expires_unix"] = serde_json::json!(now_unix() - 10);
        record["created_unix"] = serde_json::json!(now_unix() - 100_000);
        let text = serde_json::to_string(&record).unwrap();
        match self {
            Backend::Embedded => std::fs::write(Self::embedded_path(server, id), text).unwrap(),
            Backend::Redis(c) => {
                let r = c.cmd(&["SET", &redis_record_key(id), &text, "KEEPTTL"]);
                assert_eq!(r, Reply::Status("OK".into()));
            }
        }
    }

    /// Makes the upload expired as each backend sees it once UploadExpiry has passed:
    /// embedded, its record's expiry is in the past (its bytes untouched, so the sweeper
    /// must go by the record); Redis, the record is gone (its TTL) and its bytes have not
    /// been touched for `age` (so the sweeper must go by the bytes). Not on S3 with Redis: the
    /// bucket's timestamps (of the multipart upload and its parts) cannot be moved back.
    pub fn expire_fully(&self, server: &TestServer, id: &str, age: Duration) {
        match self {
            Backend::Embedded => self.age_record(server, id),
            Backend::Redis(_) if server.s3().is_some() => {
                panic!("cannot make the bytes of an upload in the bucket look untouched for {age:?}")
            }
            Backend::Redis(c) => {
                c.cmd(&["DEL", &redis_record_key(id)]);
                let old = std::time::SystemTime::now() - age;
                std::fs::File::options()
                    .write(true)
                    .open(partial_path(server, id))
                    .unwrap()
                    .set_modified(old)
                    .unwrap();
            }
        }
    }
}

/// A request written by hand on its own connection: head and part of the body now, more
/// later, or a hang or a cut-off.
pub struct Streaming {
    /// The connection.
    pub stream: TcpStream,
}

impl Streaming {
    /// Sends `head` (request line and headers, without the blank line) and `first` body bytes.
    pub fn start(addr: SocketAddr, head: &str, first: &[u8]) -> Streaming {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(b"\r\n\r\n").unwrap();
        stream.write_all(first).unwrap();
        Streaming { stream }
    }

    /// A tus PATCH of `content_length` bytes at `offset` on `location`, starting with `first`.
    pub fn patch(addr: SocketAddr, location: &str, offset: u64, content_length: u64, first: &[u8]) -> Streaming {
        let head = format!(
            "PATCH {location} HTTP/1.1\r\nHost: {addr}\r\nTus-Resumable: {TUS}\r\n\
             Content-Type: application/offset+octet-stream\r\nUpload-Offset: {offset}\r\n\
             Content-Length: {content_length}"
        );
        Self::start(addr, &head, first)
    }

    /// Sends more body bytes; false when the server closed the connection.
    pub fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).is_ok()
    }

    /// Waits up to `within` for the response (None: none came, the connection is open).
    pub fn response(&mut self, within: Duration) -> Option<RawResponse> {
        read_response(&mut self.stream, within)
    }

    /// Closes our side, as a client whose connection broke.
    pub fn cut(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// One writer per upload: a PATCH through `first` sends 8 KiB and then hangs (`trickle` =
/// false: a client whose network went away) or keeps trickling (`trickle` = true). A second
/// PATCH through `second`, claiming offset 0, must make the first stop and save what it got:
/// it answers 409 with the saved offset (never 423 after waiting out the first), the first
/// gets no success, and the upload finishes byte-identical. Servers need BufferSize = 4096
/// (so bytes reach the disk while the first PATCH runs) and a long ReadTimeout. On S3 the
/// first PATCH sends 1 MiB more first, so that its bytes show in the local file a part is
/// gathered in (see [`received_len`]).
pub async fn second_patch_stops_first(first: &TestServer, second: &TestServer, trickle: bool, seed: u64) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (len, head) = match first.s3() {
        None => (200_000usize, 8192),
        Some(_) => (1_500_000usize, (1 << 20) + 8192),
    };
    let data = super::common::payload(len, seed);
    let (tus1, tus2) = (Tus::new(first), Tus::new(second));
    let path = format!("writers/{seed}-{trickle}.bin");
    let loc = tus1
        .create_ok(&first.signed_v(&path, &path, len as u64), len as u64)
        .await;
    let id = id_of(&loc);
    let a = Streaming::patch(first.addr, &loc, 0, len as u64, &data[..head]);
    assert!(
        eventually(Duration::from_secs(10), || async { received_len(first, &id) >= 4096 }).await,
        "the first PATCH's bytes reach the disk; log:\n{}",
        first.log()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = {
        let stop = Arc::clone(&stop);
        let data = data.clone();
        std::thread::spawn(move || {
            let mut a = a;
            let mut sent = head;
            while trickle && !stop.load(Ordering::SeqCst) && sent + 512 < data.len() {
                if !a.send(&data[sent..sent + 512]) {
                    break;
                }
                sent += 512;
                std::thread::sleep(Duration::from_millis(20)); // a slow client, not synchronisation
            }
            a
        })
    };

    let started = Instant::now();
    let b = tus2.patch(&loc, 0, data[..10_000].to_vec()).await;
    let waited = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let mut a = trickler.join().unwrap();
    let b_status = b.status();
    let b_offset = header(&b, "upload-offset");
    assert_eq!(
        b_status,
        StatusCode::CONFLICT,
        "a second PATCH (trickle = {trickle}) must make the first stop and then find its saved \
         offset; got {b_status} (Upload-Offset {b_offset:?}) after {waited:?}; logs:\n{}\n---\n{}",
        first.log(),
        if std::ptr::eq(first, second) {
            String::new()
        } else {
            second.log()
        }
    );
    let n = b_offset.expect("409 carries Upload-Offset").parse::<usize>().unwrap();
    assert!(n >= 4096 && n < len, "saved offset {n}");
    if let Some(r) = a.response(Duration::from_secs(5)) {
        assert!(
            !(200..300).contains(&r.status),
            "the stopped PATCH must not report success: {}",
            r.status
        );
    }
    // What the first PATCH got is saved, durable and a prefix of what it sent: nothing else.
    assert_eq!(tus1.offset(&loc).await, n as u64);
    assert_eq!(tus2.offset(&loc).await, n as u64);
    assert_eq!(partial_len(first, &id), Some(n as u64), "bytes on disk = the offset");
    assert!(partial_starts_with(first, &id, &data[..n]));
    let r = tus2.patch(&loc, n as u64, data[n..].to_vec()).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(offset_of(&r), len as u64);
    let (status, got) = tus1.get(&first.url(&path)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(got == data, "the finished file is byte-identical");
}

/// Byte `x` of contender `w`: the writer in the top two bits, the position (mod 61) below,
/// so every byte of the result says who wrote it and whether it sits where it belongs.
fn contender_byte(w: usize, x: usize) -> u8 {
    ((w as u8) << 6) | (x % 61) as u8
}

/// `writers` clients (round-robin over `servers`) race to finish one upload, each doing what
/// a tus client does: HEAD, then PATCH its own bytes from that offset, streamed slowly, again
/// and again until the upload is done (HEAD answers 404, or an offset equal to the length). With one writer at a time the file is runs of single
/// writers, each starting at an offset that writer claimed; interleaved writes break that.
pub async fn contend(servers: &[&TestServer], writers: usize, len: usize, path: &str) {
    use std::sync::{Arc, Mutex};

    assert!(writers <= 4);
    let tus0 = Tus::new(servers[0]);
    let loc = tus0
        .create_ok(&servers[0].signed_v(path, path, len as u64), len as u64)
        .await;
    let claims: Arc<Mutex<Vec<Vec<usize>>>> = Arc::new(Mutex::new(vec![Vec::new(); writers]));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let tus = Tus::new(servers[w % servers.len()]);
        let loc = loc.clone();
        let claims = Arc::clone(&claims);
        tasks.push(tokio::spawn(async move {
            // Staggered, so that later writers arrive while earlier ones are writing.
            tokio::time::sleep(Duration::from_millis(150 * w as u64)).await;
            let mut attempts = 0;
            loop {
                assert!(Instant::now() < deadline, "writer {w}: upload not finished in time");
                let Ok(head) = tus
                    .http
                    .head(format!("{}{loc}", tus.base))
                    .header("tus-resumable", TUS)
                    .send()
                    .await
                else {
                    continue; // a connection the server closed after refusing a PATCH
                };
                if head.status() == StatusCode::NOT_FOUND {
                    return attempts; // finished (and forgotten)
                }
                assert_eq!(head.status(), StatusCode::OK, "writer {w}: HEAD");
                let o = offset_of(&head) as usize;
                if o == len {
                    return attempts; // complete, as far as a tus client can tell
                }
                claims.lock().unwrap()[w].push(o);
                attempts += 1;
                let chunks: Vec<bytes::Bytes> = (o..len)
                    .step_by(8192)
                    .map(|s| (s..(s + 8192).min(len)).map(|x| contender_byte(w, x)).collect())
                    .collect();
                let stream = futures_util::stream::unfold(chunks.into_iter(), |mut it| async move {
                    let next = it.next()?;
                    tokio::time::sleep(Duration::from_millis(25)).await; // a slow client
                    Some((Ok::<_, std::io::Error>(next), it))
                });
                let sent = tus
                    .http
                    .patch(format!("{}{loc}", tus.base))
                    .header("tus-resumable", TUS)
                    .header("content-type", "application/offset+octet-stream")
                    .header("upload-offset", o.to_string())
                    .body(reqwest::Body::wrap_stream(stream))
                    .send()
                    .await;
                if let Ok(r) = sent {
                    let status = r.status();
                    assert!(
                        [204, 409, 423, 404].contains(&status.as_u16()),
                        "writer {w}: unexpected {status}"
                    );
                    if status == StatusCode::NO_CONTENT && offset_of(&r) == len as u64 {
                        return attempts;
                    }
                }
            }
        }));
    }
    let mut total_attempts = 0;
    for t in tasks {
        total_attempts += t.await.unwrap();
    }
    let (status, file) = tus0.get(&servers[0].url(path)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the contended upload finished (HEAD said so: 404 after completion, or offset = length)"
    );
    assert_eq!(file.len(), len);
    let claims = claims.lock().unwrap().clone();
    let mut runs = 0;
    for (x, &b) in file.iter().enumerate() {
        assert_eq!(
            (b & 63) as usize,
            x % 61,
            "byte {x} is not at its place: bytes were interleaved or shifted"
        );
        let w = (b >> 6) as usize;
        if x == 0 || file[x - 1] >> 6 != b >> 6 {
            runs += 1;
            assert!(
                claims[w].contains(&x),
                "writer {w}'s bytes start at {x}, an offset it never claimed: interleaved writes \
                 (claims {claims:?})"
            );
        }
    }
    eprintln!("contention: {runs} runs from {total_attempts} PATCHes; claims {claims:?}");
    assert!(runs <= total_attempts, "{runs} runs from {total_attempts} PATCHes");
}

/// Asserts that `url` serves exactly `data` (without dumping bytes on failure).
pub async fn assert_served(tus: &Tus, url: &str, data: &[u8], what: &str) {
    let (status, got) = tus.get(url).await;
    assert_eq!(status, StatusCode::OK, "{what}: GET {url}");
    assert_eq!(got.len(), data.len(), "{what}: length");
    assert!(got == data, "{what}: the file is not byte-identical");
}
