//! Test fixture: starts the real binary on a free port with a temporary store, reads the
//! bound address from its log, and signs URLs with the same secret.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use hmac_file_server::auth;
use hmac_file_server::config::Secret;

/// A port that was free a moment ago (for servers that cannot bind port 0 themselves).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The secret every test server uses.
pub const SECRET: &str = "integration-test-secret-0123456789";

/// A running server process with its own store.
pub struct TestServer {
    child: Child,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub base: String,
    log: Arc<Mutex<String>>,
    /// The bucket its files live in, when its config says `StoreBackend = "s3"`.
    s3: Option<S3View>,
}

#[cfg(feature = "s3")]
pub mod garage;

/// Runs each behaviour (an `async fn(store: &str)` taking extra TOML) once per store: local
/// (`""`), and, with the `s3` feature, in the bucket of a Garage of its own.
#[macro_export]
macro_rules! on_each_store {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$name("").await;
            }
            #[cfg(feature = "s3")]
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn s3() {
                let garage = $crate::common::garage::Garage::start();
                super::$name(&garage.toml("files/")).await;
            }
        }
    )*};
}

/// Where a server on `StoreBackend = "s3"` keeps its files, read from its config, so that the
/// store helpers of [`TestServer`] look into the bucket.
#[derive(Clone, Debug)]
pub struct S3View {
    endpoint: String,
    bucket: String,
    /// S3Prefix.
    pub prefix: String,
    key_id: String,
    secret: String,
}

/// Where the server keeps its own objects and files, under the store or S3Prefix.
const INTERNAL: &str = ".hmac-file-server/";

impl S3View {
    fn of(config: &toml::Table) -> Option<S3View> {
        if config.get("StoreBackend").and_then(|v| v.as_str()) != Some("s3") {
            return None;
        }
        let text = |k: &str| config.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
        Some(S3View {
            endpoint: text("S3Endpoint"),
            bucket: text("S3Bucket"),
            prefix: text("S3Prefix"),
            key_id: text("S3AccessKeyId"),
            secret: text("S3SecretAccessKey"),
        })
    }

    /// Runs `f` with an S3 client on a thread of its own (so it works from sync and async
    /// tests alike) and returns its result.
    #[cfg(feature = "s3")]
    pub fn with<T: Send, F>(&self, f: impl FnOnce(aws_sdk_s3::Client, String) -> F + Send) -> T
    where
        F: std::future::Future<Output = T>,
    {
        use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("garage"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(Credentials::new(&self.key_id, &self.secret, None, None, "test"))
            .http_client(
                aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https(),
            )
            .build();
        let client = aws_sdk_s3::Client::from_conf(config);
        let bucket = self.bucket.clone();
        std::thread::scope(|s| {
            s.spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(f(client, bucket))
            })
            .join()
            .unwrap()
        })
    }

    /// The objects under S3Prefix + `under`, as (key without S3Prefix, size), sorted.
    #[cfg(feature = "s3")]
    pub fn objects(&self, under: &str) -> Vec<(String, u64)> {
        let prefix = format!("{}{under}", self.prefix);
        let mut found = self.with(|client, bucket| async move {
            let mut found = Vec::new();
            let mut pages = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(&prefix)
                .into_paginator()
                .send();
            while let Some(page) = pages.next().await {
                for o in page.expect("listing the bucket").contents() {
                    found.push((o.key().unwrap_or_default().to_string(), o.size().unwrap_or(0) as u64));
                }
            }
            found
        });
        for (key, _) in &mut found {
            *key = key[self.prefix.len()..].to_string();
        }
        found.sort();
        found
    }

    /// The keys (without S3Prefix) of the multipart uploads under way under S3Prefix + `under`.
    #[cfg(feature = "s3")]
    pub fn multipart_uploads(&self, under: &str) -> Vec<String> {
        let prefix = format!("{}{under}", self.prefix);
        let keys = self.with(|client, bucket| async move {
            let listed = client
                .list_multipart_uploads()
                .bucket(bucket)
                .prefix(&prefix)
                .send()
                .await
                .expect("listing multipart uploads");
            listed
                .uploads()
                .iter()
                .filter_map(|u| u.key().map(str::to_string))
                .collect::<Vec<_>>()
        });
        keys.into_iter().map(|k| k[self.prefix.len()..].to_string()).collect()
    }

    /// The bytes of the object at S3Prefix + `key`, if there is one.
    #[cfg(feature = "s3")]
    pub fn read(&self, key: &str) -> Option<Vec<u8>> {
        let key = format!("{}{key}", self.prefix);
        self.with(|client, bucket| async move {
            let got = client.get_object().bucket(bucket).key(key).send().await.ok()?;
            Some(got.body.collect().await.ok()?.into_bytes().to_vec())
        })
    }

    /// Writes `bytes` at S3Prefix + `key` (as an operator or another program would).
    #[cfg(feature = "s3")]
    pub fn write(&self, key: &str, bytes: &[u8]) {
        let key = format!("{}{key}", self.prefix);
        let body = aws_sdk_s3::primitives::ByteStream::from(bytes.to_vec());
        self.with(|client, bucket| async move {
            client
                .put_object()
                .bucket(bucket)
                .key(key)
                .body(body)
                .send()
                .await
                .expect("writing an object");
        })
    }

    #[cfg(not(feature = "s3"))]
    pub fn objects(&self, _under: &str) -> Vec<(String, u64)> {
        unreachable!("StoreBackend = \"s3\" needs the s3 feature")
    }

    #[cfg(not(feature = "s3"))]
    pub fn multipart_uploads(&self, _under: &str) -> Vec<String> {
        unreachable!("StoreBackend = \"s3\" needs the s3 feature")
    }

    #[cfg(not(feature = "s3"))]
    pub fn read(&self, _key: &str) -> Option<Vec<u8>> {
        unreachable!("StoreBackend = \"s3\" needs the s3 feature")
    }

    #[cfg(not(feature = "s3"))]
    pub fn write(&self, _key: &str, _bytes: &[u8]) {
        unreachable!("StoreBackend = \"s3\" needs the s3 feature")
    }
}

impl TestServer {
    /// Starts the server with the default test settings, overridden key by key by
    /// `extra_toml`. The defaults listen on free loopback ports and turn bans off (tests that
    /// send bad tokens on purpose would otherwise ban themselves); ban tests set
    /// `BlockAfterFails`. BufferSize is the minimum, 4 KiB: bytes below it stay in memory, so
    /// tests that watch for the temporary file of an upload under way see it after 4 KiB.
    pub fn start(extra_toml: &str) -> TestServer {
        Self::start_logging(extra_toml, "debug,hyper=warn")
    }

    /// Starts the server with a given config file.
    pub fn start_with_config(dir: tempfile::TempDir, config: &Path) -> TestServer {
        Self::start_with_config_logging(dir, config, "debug,hyper=warn")
    }

    /// Like [`TestServer::start`], with `RUST_LOG` set to `rust_log` (`"trace"` logs everything
    /// the server and its libraries say).
    pub fn start_logging(extra_toml: &str, rust_log: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.toml");
        let mut table: toml::Table = format!(
            "ListenPort = \"127.0.0.1:0\"\nMetricsPort = \"127.0.0.1:0\"\nBlockAfterFails = 0\nBufferSize = 4096\n\
             Secret = \"{SECRET}\"\nStoreDir = \"{}\"\n",
            dir.path().join("store").display()
        )
        .parse()
        .unwrap();
        let extra: toml::Table = extra_toml.parse().expect("extra_toml is valid TOML");
        table.extend(extra);
        std::fs::write(&config, toml::to_string(&table).unwrap()).unwrap();
        Self::start_with_config_logging(dir, &config, rust_log)
    }

    /// Starts the server with a given config file and `RUST_LOG`.
    pub fn start_with_config_logging(dir: tempfile::TempDir, config: &Path, rust_log: &str) -> TestServer {
        Self::spawn(dir, config, &[("RUST_LOG", rust_log)])
    }

    /// Starts the server with a given config file and environment variables (`RUST_LOG`
    /// defaults to debug).
    fn spawn(dir: tempfile::TempDir, config: &Path, env: &[(&str, &str)]) -> TestServer {
        let s3 = std::fs::read_to_string(config)
            .ok()
            .and_then(|text| text.parse::<toml::Table>().ok())
            .and_then(|table| S3View::of(&table));
        let mut child = Command::new(env!("CARGO_BIN_EXE_hmac-file-server"))
            .arg("-config")
            .arg(config)
            .env("RUST_LOG", "debug,hyper=warn")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split(" listening on ").nth(1)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.trim().to_string());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr: SocketAddr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start; log:\n{}", log.lock().unwrap());
            }
        };
        TestServer {
            child,
            dir,
            addr,
            base: format!("http://{addr}"),
            log,
            s3,
        }
    }

    /// The bucket its files are in, when it runs on `StoreBackend = "s3"`.
    pub fn s3(&self) -> Option<&S3View> {
        self.s3.as_ref()
    }

    /// The bytes of the finished file at decoded path `name`, from either store.
    pub fn stored(&self, name: &str) -> Option<Vec<u8>> {
        match &self.s3 {
            Some(s3) => s3.read(name),
            None => std::fs::read(self.files_dir().join(name)).ok(),
        }
    }

    /// Puts a file at decoded path `name` behind the server's back (as an operator copying
    /// files into the store would), in either store.
    pub fn place(&self, name: &str, bytes: &[u8]) {
        match &self.s3 {
            Some(s3) => s3.write(name, bytes),
            None => {
                let path = self.files_dir().join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, bytes).unwrap();
            }
        }
    }

    /// The store root.
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The lines of the log that contain every one of `parts`, once there are `n` of them
    /// (waiting up to 10 s, for lines written just after an answer); panics otherwise.
    pub fn wait_for_lines(&self, parts: &[&str], n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines: Vec<String> = self
                .log()
                .lines()
                .filter(|l| parts.iter().all(|p| l.contains(p)))
                .map(str::to_string)
                .collect();
            if lines.len() >= n || Instant::now() > deadline {
                assert_eq!(lines.len(), n, "lines with {parts:?} in:\n{}", self.log());
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL of a path under /upload/ (raw: the caller encodes).
    pub fn url(&self, raw_path: &str) -> String {
        format!("{}/upload/{raw_path}", self.base)
    }

    /// A `v`-signed upload URL for a decoded path; `raw_path` is how it is spelled in the URL.
    pub fn signed_v(&self, raw_path: &str, decoded: &str, size: u64) -> String {
        format!("{}?v={}", self.url(raw_path), auth::sign_v(&secret(), decoded, size))
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.terminate()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe_kill(self.child.id(), "TERM");
        for _ in 0..400 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        self.child.wait().unwrap()
    }

    /// Temporaries: files in the temporary folder and unnamed ones the server holds open; on
    /// S3 also the multipart uploads under way that are not the bytes of an unfinished
    /// resumable upload.
    pub fn temporaries(&self) -> usize {
        let folder = self.store().join(".hmac-file-server/tmp");
        let named = std::fs::read_dir(&folder).map(|d| d.count()).unwrap_or(0);
        // Uploads in progress are unnamed files where the file system has them: open in the
        // server as `<folder>/#<inode> (deleted)`.
        let folder = std::fs::canonicalize(&folder).unwrap_or(folder);
        let unnamed = std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("the server's descriptors in /proc")
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .filter(|to| to.starts_with(&folder) && to.to_string_lossy().ends_with(" (deleted)"))
            .count();
        let local = named + unnamed;
        let staged = self.s3.as_ref().map_or(0, |s3| {
            s3.multipart_uploads("")
                .iter()
                .filter(|k| !k.starts_with(&format!("{INTERNAL}partial/")))
                .count()
        });
        local + staged
    }

    /// Sends raw bytes on a new connection and returns what came back until the server
    /// closed it or `wait` passed.
    pub fn raw(&self, request: &[u8], wait: Duration) -> String {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(wait)).unwrap();
        s.write_all(request).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// The test secret as the library type.
pub fn secret() -> Secret {
    Secret::new(SECRET)
}

/// Percent-encodes a decoded path segment by segment, as XMPP servers do.
pub fn encode_path(decoded: &str) -> String {
    decoded
        .split('/')
        .map(|s| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// Deterministic pseudo-random bytes.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A reqwest client without a connection pool limit.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap()
}

/// A PUT of `body` to `url` with that Content-Type; panics if no answer comes.
pub async fn put_typed(
    http: &reqwest::Client,
    url: impl reqwest::IntoUrl,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    http.put(url)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// Helpers for the answers/downloads/limits tests: more token kinds, raw HTTP/1.1 exchanges,
// polling with a deadline, and looking at what is on disk.
// ---------------------------------------------------------------------------------------

impl TestServer {
    /// A `v2`-signed upload URL (`content_type` as the client will send it; absent →
    /// `application/octet-stream`).
    pub fn signed_v2(&self, raw_path: &str, decoded: &str, size: u64, content_type: &str) -> String {
        format!(
            "{}?v2={}",
            self.url(raw_path),
            auth::sign_v2(&secret(), decoded, size, content_type)
        )
    }

    /// A Metronome `token`-signed upload URL (same message as `v2`).
    pub fn signed_token(&self, raw_path: &str, decoded: &str, size: u64, content_type: &str) -> String {
        format!(
            "{}?token={}",
            self.url(raw_path),
            auth::sign_v2(&secret(), decoded, size, content_type)
        )
    }

    /// A `v3`-signed PUT URL: the signed path is the whole decoded request path.
    pub fn signed_v3(&self, raw_path: &str, decoded: &str, expires: u64) -> String {
        let full = format!("/upload/{decoded}");
        format!(
            "{}?v3={}&expires={expires}",
            self.url(raw_path),
            auth::sign_v3(&secret(), "PUT", expires, &full)
        )
    }

    /// The request target (path and query) of a URL made by `url`/`signed_*`, for raw requests.
    pub fn target(&self, url: &str) -> String {
        url.strip_prefix(&self.base).expect("a URL of this server").to_string()
    }

    /// The folder finished files live in.
    pub fn files_dir(&self) -> PathBuf {
        self.store().join("upload")
    }

    /// Every regular file (or symlink) in the upload folder, relative to it; on S3 every
    /// object under S3Prefix but the server's own.
    pub fn stored_files(&self) -> Vec<PathBuf> {
        if let Some(s3) = &self.s3 {
            return s3
                .objects("")
                .into_iter()
                .filter(|(k, _)| !k.starts_with(INTERNAL))
                .map(|(k, _)| PathBuf::from(k))
                .collect();
        }
        let root = self.files_dir();
        files_under(&root)
            .into_iter()
            .map(|p| p.strip_prefix(&root).unwrap().to_path_buf())
            .collect()
    }

    /// Metadata sidecars present.
    pub fn sidecars(&self) -> usize {
        match &self.s3 {
            Some(s3) => s3.objects(&format!("{INTERNAL}meta/")).len(),
            None => files_under(&self.store().join(".hmac-file-server/meta")).len(),
        }
    }

    /// Asserts that no finished file, sidecar or temporary exists (on S3, after waiting up to
    /// 10 s for the aborts of multipart uploads, which run in the background).
    #[track_caller]
    pub fn assert_nothing_stored(&self, what: &str) {
        if self.s3.is_some() {
            wait_until(Duration::from_secs(10), || self.temporaries() == 0);
        }
        assert_eq!(
            self.stored_files(),
            Vec::<PathBuf>::new(),
            "{what}: no file in the store"
        );
        assert_eq!(self.sidecars(), 0, "{what}: no metadata sidecar");
        assert_eq!(self.temporaries(), 0, "{what}: no temporaries left");
    }

    /// Opens a raw connection with a read timeout.
    pub fn connect(&self, read_timeout: Duration) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(read_timeout)).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Sends one raw request and parses every response that came back before the server
    /// closed the connection or `wait` passed.
    pub fn raw_responses(&self, request: &[u8], wait: Duration) -> Vec<RawResponse> {
        let mut s = self.connect(wait);
        s.write_all(request).unwrap();
        parse_responses(&read_until_closed(&mut s, wait))
    }

    /// Sends one raw request and returns the first response (panics when none came).
    #[track_caller]
    pub fn raw_one(&self, request: &[u8]) -> RawResponse {
        let mut s = self.connect(Duration::from_secs(10));
        s.write_all(request).unwrap();
        read_response(&mut s, Duration::from_secs(10)).unwrap_or_else(|| panic!("no response; log:\n{}", self.log()))
    }

    /// Waits until the access log has a line for `method path` (the path as sent, without
    /// the query); returns that line.
    #[track_caller]
    pub fn wait_for_access(&self, method: &str, path: &str, within: Duration) -> String {
        let needle_m = format!("method={method} ");
        let needle_p = format!("path={path} ");
        let mut line = None;
        let found = wait_until(within, || {
            line = self
                .log()
                .lines()
                .find(|l| l.contains("client=") && l.contains(&needle_m) && l.contains(&needle_p))
                .map(str::to_string);
            line.is_some()
        });
        assert!(found, "no access-log line for {method} {path}; log:\n{}", self.log());
        line.unwrap()
    }

    /// The PID of the server process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"TERM"`, `"HUP"` …) without waiting.
    pub fn signal(&self, signal: &str) {
        unsafe_kill(self.child.id(), signal);
    }

    /// Waits up to `within` for the process to exit.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(within, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }
}

/// One HTTP response read off a raw connection.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body (as framed by Content-Length, or up to the close).
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first header of that name.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// Parses one response at the start of `bytes`; returns it and how many bytes it took, or
/// None when the head is not complete. A body without Content-Length runs to the end.
pub fn parse_response(bytes: &[u8]) -> Option<(RawResponse, usize)> {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&bytes[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let body_len = if (100..200).contains(&status) || status == 204 || status == 304 {
        0
    } else {
        length.unwrap_or(bytes.len() - end)
    };
    let body_end = (end + body_len).min(bytes.len());
    Some((
        RawResponse {
            status,
            headers,
            body: bytes[end..body_end].to_vec(),
        },
        body_end,
    ))
}

/// Parses every response in `bytes`, in order.
pub fn parse_responses(mut bytes: &[u8]) -> Vec<RawResponse> {
    let mut out = Vec::new();
    while let Some((r, used)) = parse_response(bytes) {
        out.push(r);
        bytes = &bytes[used..];
    }
    out
}

/// Reads until EOF, an error (reset) or `wait` has passed in total.
pub fn read_until_closed(s: &mut TcpStream, wait: Duration) -> Vec<u8> {
    let deadline = std::time::Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    out
}

/// Reads until one complete response (head and Content-Length body) is in, EOF, or `wait`
/// has passed; interim 1xx answers are returned like any other.
pub fn read_response(s: &mut TcpStream, wait: Duration) -> Option<RawResponse> {
    let deadline = std::time::Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Some((r, _)) = parse_response(&out) {
            let complete = match r.header("content-length").and_then(|v| v.parse::<usize>().ok()) {
                Some(n) => r.body.len() >= n || (100..200).contains(&r.status) || r.status == 204 || r.status == 304,
                None => true,
            };
            if complete {
                return Some(r);
            }
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return parse_response(&out).map(|(r, _)| r),
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Polls `check` every 20 ms until it holds or `within` has passed; returns whether it held.
pub fn wait_until(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every regular file and symlink under `root` (recursively; nothing when it is missing).
pub fn files_under(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(_) => out.push(path),
                Err(_) => {}
            }
        }
    }
    out.sort();
    out
}

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Asserts the CORS headers of SPEC §3 on a response (names in any case).
#[track_caller]
pub fn assert_cors(get: impl Fn(&str) -> Option<String>, what: &str) {
    let list = |name: &str| -> Vec<String> {
        get(name)
            .unwrap_or_else(|| panic!("{what}: no {name}"))
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .collect()
    };
    assert_eq!(
        get("access-control-allow-origin").as_deref(),
        Some("*"),
        "{what}: Access-Control-Allow-Origin"
    );
    let methods = list("access-control-allow-methods");
    for m in ["OPTIONS", "HEAD", "GET", "PUT", "POST", "PATCH", "DELETE"] {
        assert!(
            methods.contains(&m.to_ascii_lowercase()),
            "{what}: Allow-Methods lacks {m}: {methods:?}"
        );
    }
    let allowed = list("access-control-allow-headers");
    for h in [
        "Authorization",
        "Content-Type",
        "Content-Length",
        "Content-Range",
        "X-Session-Token",
        "Tus-Resumable",
        "Upload-Length",
        "Upload-Offset",
        "Upload-Metadata",
        "Upload-Checksum",
        "Upload-Concat",
        "Upload-Defer-Length",
        "Upload-Complete",
        "Upload-Draft-Interop-Version",
        "Content-Digest",
    ] {
        assert!(
            allowed.contains(&h.to_ascii_lowercase()),
            "{what}: Allow-Headers lacks {h}: {allowed:?}"
        );
    }
    let exposed = list("access-control-expose-headers");
    for h in [
        "Location",
        "Upload-Offset",
        "X-Session-Token",
        "Tus-Resumable",
        "ETag",
        "Upload-Complete",
        "Upload-Limit",
    ] {
        assert!(
            exposed.contains(&h.to_ascii_lowercase()),
            "{what}: Expose-Headers lacks {h}: {exposed:?}"
        );
    }
    let max_age = get("access-control-max-age").unwrap_or_else(|| panic!("{what}: no Access-Control-Max-Age"));
    assert!(
        max_age.trim().parse::<u64>().is_ok_and(|n| n > 0),
        "{what}: Access-Control-Max-Age {max_age:?}"
    );
}

/// [`assert_cors`] for a reqwest response.
#[track_caller]
pub fn assert_cors_reqwest(r: &reqwest::Response, what: &str) {
    assert_cors(|n| r.headers().get(n).map(|v| v.to_str().unwrap().to_string()), what);
}

/// [`assert_cors`] for a raw response.
#[track_caller]
pub fn assert_cors_raw(r: &RawResponse, what: &str) {
    assert_cors(|n| r.header(n).map(str::to_string), what);
}

// ---------------------------------------------------------------------------------------
// Helpers for the resumable-upload tests (tus, session, redis_state): a second server on the
// same store, and stopping a server while keeping its store for a restart.
// ---------------------------------------------------------------------------------------

impl TestServer {
    /// Starts a server in `dir` (its config written there, `StoreDir` = `dir/store`): with the
    /// folder of a stopped server ([`TestServer::stop_keep_dir`]) this is a restart on the
    /// same store. `extra_toml` overrides the defaults as in [`TestServer::start`].
    pub fn start_in(dir: tempfile::TempDir, extra_toml: &str) -> TestServer {
        Self::start_in_env(dir, extra_toml, &[])
    }

    /// [`TestServer::start_in`] with environment variables (`FAILPOINTS` of the crash matrix).
    pub fn start_in_env(dir: tempfile::TempDir, extra_toml: &str, env: &[(&str, &str)]) -> TestServer {
        let store = dir.path().join("store");
        Self::start_on_store(dir, &store, extra_toml, env)
    }

    /// Starts a second server whose `StoreDir` is `other`'s store (as instances behind a
    /// balancer sharing NFS). Its own folder holds its config and a `store` symlink to the
    /// shared store, so [`TestServer::store`] and the other helpers see the same files.
    /// `other` must outlive it: its folder holds the store.
    pub fn start_sharing(other: &TestServer, extra_toml: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let shared = other.store();
        std::os::unix::fs::symlink(&shared, dir.path().join("store")).unwrap();
        Self::start_on_store(dir, &shared, extra_toml, &[])
    }

    fn start_on_store(dir: tempfile::TempDir, store: &Path, extra_toml: &str, env: &[(&str, &str)]) -> TestServer {
        let config = dir.path().join("config.toml");
        let mut table: toml::Table = format!(
            "ListenPort = \"127.0.0.1:0\"\nMetricsPort = \"127.0.0.1:0\"\nBlockAfterFails = 0\n\
             Secret = \"{SECRET}\"\nStoreDir = \"{}\"\n",
            store.display()
        )
        .parse()
        .unwrap();
        let extra: toml::Table = extra_toml.parse().expect("extra_toml is valid TOML");
        table.extend(extra);
        std::fs::write(&config, toml::to_string(&table).unwrap()).unwrap();
        Self::spawn(dir, &config, env)
    }

    /// Stops the server with `signal` (`"TERM"`: graceful; `"KILL"`: kill -9), waits for the
    /// exit and returns its folder (store included) for [`TestServer::start_in`].
    pub fn stop_keep_dir(mut self, signal: &str) -> tempfile::TempDir {
        unsafe_kill(self.child.id(), signal);
        if self.wait_exit(Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

// ---------------------------------------------------------------------------------------
// Helpers for the answers/downloads tests on each store: what a finished file looks like in
// the store beyond its bytes, and the whole bucket (to see that nothing escaped S3Prefix).
// ---------------------------------------------------------------------------------------

impl S3View {
    /// The Content-Type of the object at S3Prefix + `key`, if there is one.
    #[cfg(feature = "s3")]
    pub fn content_type(&self, key: &str) -> Option<String> {
        let key = format!("{}{key}", self.prefix);
        self.with(|client, bucket| async move {
            let head = client.head_object().bucket(bucket).key(key).send().await.ok()?;
            head.content_type().map(str::to_string)
        })
    }

    /// The ETag and last-modified time (to the millisecond, as listed) of the object at
    /// S3Prefix + `key`, if there is one: they change when the object is written again.
    #[cfg(feature = "s3")]
    pub fn stamp(&self, key: &str) -> Option<String> {
        let key = format!("{}{key}", self.prefix);
        self.with(|client, bucket| async move {
            let listed = client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(&key)
                .send()
                .await
                .expect("listing the bucket");
            listed
                .contents()
                .iter()
                .find(|o| o.key() == Some(key.as_str()))
                .map(|o| format!("{:?} {:?}", o.e_tag(), o.last_modified()))
        })
    }

    /// Every key in the whole bucket, S3Prefix or not (with it), sorted.
    #[cfg(feature = "s3")]
    pub fn bucket_keys(&self) -> Vec<String> {
        let mut keys = self.with(|client, bucket| async move {
            let mut keys = Vec::new();
            let mut pages = client.list_objects_v2().bucket(bucket).into_paginator().send();
            while let Some(page) = pages.next().await {
                for o in page.expect("listing the bucket").contents() {
                    keys.push(o.key().unwrap_or_default().to_string());
                }
            }
            keys
        });
        keys.sort();
        keys
    }

    #[cfg(not(feature = "s3"))]
    pub fn content_type(&self, _key: &str) -> Option<String> {
        unreachable!("StoreBackend = \"s3\" needs the s3 feature")
    }

    #[cfg(not(feature = "s3"))]
    pub fn stamp(&self, _key: &str) -> Option<String> {
        unreachable!("StoreBackend = \"s3\" needs the s3 feature")
    }

    #[cfg(not(feature = "s3"))]
    pub fn bucket_keys(&self) -> Vec<String> {
        unreachable!("StoreBackend = \"s3\" needs the s3 feature")
    }
}

impl TestServer {
    /// Something that changes whenever the finished file at decoded path `name` is written
    /// again (locally its mtime; on S3 its object's ETag and last-modified time), if it exists.
    pub fn stored_stamp(&self, name: &str) -> Option<String> {
        match &self.s3 {
            Some(s3) => s3.stamp(name),
            None => std::fs::metadata(self.files_dir().join(name))
                .and_then(|m| m.modified())
                .ok()
                .map(|t| format!("{t:?}")),
        }
    }

    /// The uploads in progress now (the `hmac_file_server_active_uploads` gauge of its metrics
    /// endpoint): shows an upload under way where it leaves no temporary (on S3 a small body
    /// is kept in memory until the commit).
    pub fn uploads_in_progress(&self) -> u64 {
        self.metric("hmac_file_server_active_uploads").map_or(0, |v| v as u64)
    }

    /// The address of its metrics listener (`host:port`), from the start-up log line.
    pub fn metrics_addr(&self) -> String {
        let log = self.log();
        let marker = "metrics and health on http://";
        let start = log.find(marker).expect("a metrics line in the log") + marker.len();
        let rest = &log[start..];
        rest[..rest.find('/').expect("…/metrics")].to_string()
    }

    /// Its `/metrics` text.
    pub fn metrics_text(&self) -> String {
        let mut s = TcpStream::connect(self.metrics_addr()).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
            .unwrap();
        String::from_utf8_lossy(&read_until_closed(&mut s, Duration::from_secs(10))).into_owned()
    }

    /// The value of the unlabelled metric `name` (a gauge or counter), if exported.
    pub fn metric(&self, name: &str) -> Option<f64> {
        self.metrics_text().lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.strip_prefix(' '))
                .map(|v| v.trim().parse::<f64>().expect("a metric value"))
        })
    }
}
