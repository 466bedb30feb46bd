//! Operations through the real binary (SPEC §5, §6, §8): metrics, health, bans, trusted
//! proxies, secret rotation, log hygiene, digests, the Unix socket, log files and their
//! reopening on SIGHUP, JSON logs and retention.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::{
    RawResponse, SECRET, TestServer, client, now_unix, parse_response, payload, put_typed, secret, wait_until,
};
use hmac_file_server::auth;
use hmac_file_server::config::Secret;
use reqwest::StatusCode;
use sha2::{Digest, Sha256, Sha512};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// One sample of the Prometheus text exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed `/metrics` answer.
#[derive(Debug, Clone)]
struct Scrape {
    samples: Vec<Sample>,
}

impl Scrape {
    /// The value of the sample with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Like `get`; absent counts as 0 (a counter or histogram that has not been touched).
    fn val(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Every sample of a name.
    fn all(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

/// A tiny parser for `name{label="value",…} value [timestamp]` lines; panics on anything it
/// cannot read (a broken exposition must fail the test).
fn parse_prometheus(text: &str) -> Scrape {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or_else(|| panic!("no value in metrics line {line:?}"));
        let name = line[..name_end].to_string();
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            let mut end = None;
            loop {
                // Skip separators.
                while let Some(&(_, c)) = chars.peek() {
                    if c == ',' || c == ' ' {
                        chars.next();
                    } else {
                        break;
                    }
                }
                match chars.peek() {
                    Some(&(i, '}')) => {
                        end = Some(i);
                        break;
                    }
                    None => break,
                    _ => {}
                }
                let mut key = String::new();
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "bad label in {line:?}");
                let mut value = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some(other) => value.push(other),
                            None => break,
                        },
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                assert!(closed, "unterminated label value in {line:?}");
                labels.insert(key.trim().to_string(), value);
            }
            let end = end.unwrap_or_else(|| panic!("unterminated label set in {line:?}"));
            rest = &inner[end + 1..];
        }
        let value_text = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no value in {line:?}"));
        let value: f64 = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line:?}")),
        };
        samples.push(Sample { name, labels, value });
    }
    Scrape { samples }
}

/// The metrics listener's address, from the start-up log line.
fn metrics_addr(log: &str) -> String {
    let marker = "metrics and health on http://";
    let start = log
        .find(marker)
        .unwrap_or_else(|| panic!("no metrics line in the log:\n{log}"))
        + marker.len();
    let rest = &log[start..];
    rest[..rest.find('/').expect("…/metrics")].to_string()
}

async fn scrape_text(http: &reqwest::Client, addr: &str) -> String {
    let r = http.get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET /metrics");
    r.text().await.unwrap()
}

async fn scrape(http: &reqwest::Client, addr: &str) -> Scrape {
    parse_prometheus(&scrape_text(http, addr).await)
}

/// Polls an async condition every 50 ms until it holds or `within` has passed.
async fn poll<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A `v` URL of `server` signed with a given secret.
fn signed_with(server: &TestServer, secret: &Secret, path: &str, size: u64) -> String {
    format!("{}?v={}", server.url(path), auth::sign_v(secret, path, size))
}

async fn put(http: &reqwest::Client, url: &str, body: Vec<u8>) -> reqwest::Response {
    http.put(url).body(body).send().await.unwrap()
}

/// Writes a config file into `dir`: free loopback ports, bans off, the store at
/// `dir/store`, the test secret unless `extra` sets SecretFile; `extra` overrides.
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let mut table: toml::Table = format!(
        "ListenPort = \"127.0.0.1:0\"\nMetricsPort = \"127.0.0.1:0\"\nBlockAfterFails = 0\nStoreDir = \"{}\"\n",
        dir.join("store").display()
    )
    .parse()
    .unwrap();
    let extra: toml::Table = extra.parse().expect("extra is valid TOML");
    if !extra.contains_key("SecretFile") {
        table.insert("Secret".into(), SECRET.into());
    }
    table.extend(extra);
    let path = dir.join("config.toml");
    std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
    path
}

/// The address in a `listening on ADDR` log line (text or JSON).
fn listen_addr(log: &str) -> Option<String> {
    let start = log.find("listening on ")? + "listening on ".len();
    let addr: String = log[start..]
        .chars()
        .take_while(|c| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']'))
        .collect();
    (!addr.is_empty()).then_some(addr)
}

/// A server process started by the test itself (for Unix sockets, log files, JSON logs and
/// start-up failures, which the fixture cannot read).
struct Spawned {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Spawned {
    /// Starts the binary; `rust_log` None = no RUST_LOG (LogLevel applies).
    fn start(config: &Path, rust_log: Option<&str>) -> Spawned {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hmac-file-server"));
        cmd.arg("-config")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(v) = rust_log {
            cmd.env("RUST_LOG", v);
        }
        let mut child = cmd.spawn().unwrap();
        let pipe = child.stderr.take().unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Spawned {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr contains `needle`.
    #[track_caller]
    fn expect_stderr(&self, needle: &str, within: Duration) {
        assert!(
            wait_until(within, || self.stderr().contains(needle)),
            "stderr never had {needle:?}:\n{}",
            self.stderr()
        );
    }

    fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal}");
    }

    /// Waits for the exit and for the rest of stderr.
    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(within, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        if status.is_some()
            && let Some(reader) = self.reader.take()
        {
            let _ = reader.join();
        }
        status
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn sha256_field(body: &[u8]) -> String {
    format!("sha-256=:{}:", B64.encode(Sha256::digest(body)))
}

fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

// ---------------------------------------------------------------------------------------
// 1. Metrics
// ---------------------------------------------------------------------------------------

const UPLOADS: &str = "hmac_file_server_uploads_total";
const UPLOAD_ERRORS: &str = "hmac_file_server_upload_errors_total";
const DOWNLOADS: &str = "hmac_file_server_downloads_total";
const UPLOAD_BYTES: &str = "hmac_file_server_upload_bytes_total";
const DOWNLOAD_BYTES: &str = "hmac_file_server_download_bytes_total";
const AUTH_FAILURES: &str = "hmac_file_server_auth_failures_total";
const UPLOAD_DURATION_COUNT: &str = "hmac_file_server_upload_duration_seconds_count";
const UPLOAD_DURATION_BUCKET: &str = "hmac_file_server_upload_duration_seconds_bucket";
const REQUEST_DURATION_COUNT: &str = "hmac_file_server_request_duration_seconds_count";
const STORE_FILES: &str = "hmac_file_server_store_files";
const STORE_BYTES: &str = "hmac_file_server_store_bytes";
const GOROUTINES: &str = "hmac_file_server_goroutines";
const ACTIVE_UPLOADS: &str = "hmac_file_server_active_uploads";
const BANS: &str = "hmac_file_server_bans_total";
const BANNED_CLIENTS: &str = "hmac_file_server_banned_clients";
const RETENTION_DELETIONS: &str = "hmac_file_server_retention_deletions_total";

#[tokio::test]
async fn metrics_count_exactly_what_happened() {
    let server = TestServer::start("MaxUploadSize = 1000");
    let http = client();
    let maddr = metrics_addr(&server.log());

    // The start-up pass counts the (empty) store; wait for it so it cannot race the uploads.
    let deadline = Instant::now() + Duration::from_secs(5);
    let before = loop {
        let s = scrape(&http, &maddr).await;
        if s.get(STORE_FILES, &[]).is_some() || Instant::now() >= deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let counted = before.get(STORE_FILES, &[]).is_some();
    assert!(counted, "store_files gauge never appeared: {before:?}");
    assert_eq!(before.get(STORE_FILES, &[]), Some(0.0), "empty store at start");
    assert_eq!(before.get(STORE_BYTES, &[]), Some(0.0), "empty store at start");
    for name in [
        UPLOADS,
        UPLOAD_ERRORS,
        DOWNLOADS,
        UPLOAD_BYTES,
        DOWNLOAD_BYTES,
        AUTH_FAILURES,
    ] {
        assert_eq!(
            before.get(name, &[]),
            Some(0.0),
            "{name} is exported at 0 from the start"
        );
    }

    // N = 3 uploads.
    let files = [("m/one.bin", 100usize), ("m/two.bin", 200), ("m/three.bin", 300)];
    for (i, (path, len)) in files.iter().enumerate() {
        let r = put(
            &http,
            &server.signed_v(path, path, *len as u64),
            payload(*len, i as u64),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{path}");
    }
    let uploaded: f64 = files.iter().map(|(_, l)| *l as f64).sum();
    let mid = scrape(&http, &maddr).await;
    assert_eq!(mid.get(STORE_FILES, &[]), Some(3.0), "store_files after 3 uploads");
    assert_eq!(mid.get(STORE_BYTES, &[]), Some(uploaded), "store_bytes after 3 uploads");

    // M = 3 failed uploads.
    let bad = format!("{}?v={}", server.url("m/bad.bin"), "ab".repeat(32));
    assert_eq!(put(&http, &bad, payload(50, 9)).await.status(), StatusCode::FORBIDDEN);
    let again = server.signed_v("m/one.bin", "m/one.bin", 100);
    assert_eq!(put(&http, &again, payload(100, 0)).await.status(), StatusCode::CONFLICT);
    let big = server.signed_v("m/big.bin", "m/big.bin", 2000);
    assert_eq!(
        put(&http, &big, payload(2000, 3)).await.status(),
        StatusCode::PAYLOAD_TOO_LARGE
    );

    // K = 3 downloads (two whole, one range), plus a HEAD and a 404 that are not downloads.
    for (path, len) in &files[..2] {
        let r = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.bytes().await.unwrap().len(), *len);
    }
    let r = http
        .get(server.url("m/three.bin"))
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().len(), 10);
    let r = http.head(server.url("m/one.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(server.url("m/missing.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // A DELETE with a wrong token (an auth failure) and a Metronome DELETE that works.
    let wrong = auth::sign_delete(&Secret::new("not-the-secret-000000"), "m/one.bin", &secret());
    let r = http
        .delete(format!("{}?token={wrong}", server.url("m/one.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "DELETE with a wrong token");
    let token = auth::sign_delete(&secret(), "m/one.bin", &secret());
    let r = http
        .delete(format!("{}?token={token}", server.url("m/one.bin")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "Metronome DELETE");

    let text = scrape_text(&http, &maddr).await;
    assert!(!text.contains(SECRET), "no secret in the metrics");
    let after = parse_prometheus(&text);
    let delta = |name: &str, labels: &[(&str, &str)]| after.val(name, labels) - before.val(name, labels);
    assert_eq!(delta(UPLOADS, &[]), 3.0, "{UPLOADS}");
    assert_eq!(delta(UPLOAD_ERRORS, &[]), 3.0, "{UPLOAD_ERRORS}: 403, 409, 413");
    assert_eq!(
        delta(DOWNLOADS, &[]),
        3.0,
        "{DOWNLOADS}: 200, 200, 206 (not HEAD, not 404)"
    );
    // The 409 of a body below BufferSize is found at the no-replace commit, after its 100
    // bytes came in; refused tokens and oversize uploads are answered before the body.
    assert_eq!(
        delta(UPLOAD_BYTES, &[]),
        uploaded + 100.0,
        "{UPLOAD_BYTES}: bodies received (stored ones and the small 409)"
    );
    assert_eq!(delta(DOWNLOAD_BYTES, &[]), 100.0 + 200.0 + 10.0, "{DOWNLOAD_BYTES}");
    assert_eq!(
        delta(AUTH_FAILURES, &[]),
        2.0,
        "{AUTH_FAILURES}: bad PUT and bad DELETE"
    );
    assert_eq!(delta(UPLOAD_DURATION_COUNT, &[]), 6.0, "{UPLOAD_DURATION_COUNT}");
    let by = |m: &str, s: &str| delta(REQUEST_DURATION_COUNT, &[("method", m), ("status", s)]);
    assert_eq!(by("PUT", "201"), 3.0, "request duration PUT 201");
    assert_eq!(by("PUT", "403"), 1.0, "request duration PUT 403");
    assert_eq!(by("PUT", "409"), 1.0, "request duration PUT 409");
    assert_eq!(by("PUT", "413"), 1.0, "request duration PUT 413");
    assert_eq!(by("GET", "200"), 2.0, "request duration GET 200");
    assert_eq!(by("GET", "206"), 1.0, "request duration GET 206");
    assert_eq!(by("GET", "404"), 1.0, "request duration GET 404");
    assert_eq!(by("HEAD", "200"), 1.0, "request duration HEAD 200");
    assert_eq!(by("DELETE", "403"), 1.0, "request duration DELETE 403");
    assert_eq!(by("DELETE", "204"), 1.0, "request duration DELETE 204");

    assert_eq!(after.get(STORE_FILES, &[]), Some(2.0), "store_files after the DELETE");
    assert_eq!(
        after.get(STORE_BYTES, &[]),
        Some(uploaded - 100.0),
        "store_bytes after the DELETE"
    );
    let tasks = after.get(GOROUTINES, &[]).expect("goroutines gauge present");
    assert!(tasks > 0.0, "goroutines = {tasks}");
    assert_eq!(after.get(ACTIVE_UPLOADS, &[]), Some(0.0), "no upload running");

    // Upload duration buckets: 10 ms to 10 min, then +Inf equal to the count.
    let buckets = after.all(UPLOAD_DURATION_BUCKET);
    let finite: Vec<f64> = buckets
        .iter()
        .map(|s| s.labels["le"].as_str())
        .filter(|le| *le != "+Inf")
        .map(|le| le.parse::<f64>().unwrap())
        .collect();
    assert!(finite.len() >= 5, "upload duration buckets: {finite:?}");
    let min = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let max = finite.iter().copied().fold(0.0, f64::max);
    assert_eq!((min, max), (0.01, 600.0), "upload duration buckets: {finite:?}");
    let inf = after
        .get(UPLOAD_DURATION_BUCKET, &[("le", "+Inf")])
        .expect("+Inf bucket");
    assert_eq!(inf, after.val(UPLOAD_DURATION_COUNT, &[]), "+Inf bucket = count");
}

// ---------------------------------------------------------------------------------------
// 2. Health
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn health_follows_the_store() {
    let server = TestServer::start("");
    let http = client();
    let health = format!("http://{}/health", metrics_addr(&server.log()));
    let r = http.get(&health).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap().trim(), "ok");

    // Make the store unwritable. chmod does not stop root, so the temporary folder is
    // replaced by a regular file, which stops everyone.
    let tmp = server.store().join(".hmac-file-server/tmp");
    assert!(tmp.is_dir(), "{} exists", tmp.display());
    std::fs::remove_dir_all(&tmp).unwrap();
    std::fs::write(&tmp, b"in the way").unwrap();
    let r = http.get(&health).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "store not writable");
    let reason = r.text().await.unwrap();
    let lower = reason.to_lowercase();
    assert!(
        lower.trim() != "ok" && (lower.contains("store") || lower.contains("writ")),
        "503 says why: {reason:?}"
    );

    std::fs::remove_file(&tmp).unwrap();
    std::fs::create_dir(&tmp).unwrap();
    let r = http.get(&health).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "writable again");
    assert_eq!(r.text().await.unwrap().trim(), "ok");
    assert_eq!(server.temporaries(), 0, "the probe leaves nothing behind");
}

/// The probe must cover where finished files go, not only the temporary folder: with the
/// upload folder unusable every PUT fails, so the store is not writable.
#[tokio::test]
async fn health_covers_the_upload_folder() {
    let server = TestServer::start("");
    let http = client();
    let health = format!("http://{}/health", metrics_addr(&server.log()));
    assert_eq!(http.get(&health).send().await.unwrap().status(), StatusCode::OK);
    let files = server.files_dir();
    std::fs::remove_dir_all(&files).unwrap();
    std::fs::write(&files, b"in the way").unwrap();
    let put_status = put(&http, &server.signed_v("hc/x.bin", "hc/x.bin", 1), b"x".to_vec())
        .await
        .status();
    assert!(!put_status.is_success(), "uploads fail now: {put_status}");
    let r = http.get(&health).send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "uploads fail ({put_status}) but /health says {:?}",
        r.text().await.unwrap()
    );
    std::fs::remove_file(&files).unwrap();
    std::fs::create_dir(&files).unwrap();
    assert_eq!(http.get(&health).send().await.unwrap().status(), StatusCode::OK);
    let r = put(&http, &server.signed_v("hc/x.bin", "hc/x.bin", 1), b"x".to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED, "uploads work again");
}

// ---------------------------------------------------------------------------------------
// 3. Bans
// ---------------------------------------------------------------------------------------

fn bad_v_url(server: &TestServer, path: &str) -> String {
    format!("{}?v={}", server.url(path), "cd".repeat(32))
}

/// Log lines that announce a ban.
fn ban_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("banned") && l.contains("client="))
        .map(str::to_string)
        .collect()
}

/// The ban lines once at least one has been read from the server's stderr.
fn wait_ban_lines(server: &TestServer) -> Vec<String> {
    wait_until(Duration::from_secs(5), || !ban_lines(&server.log()).is_empty());
    ban_lines(&server.log())
}

#[tokio::test]
async fn bans_after_failures_and_lifts() {
    let server = TestServer::start("BlockAfterFails = 3\nBlockDuration = 60\nAutoUnban = true\nAutoBanTime = 2");
    let http = client();
    let maddr = metrics_addr(&server.log());
    for i in 0..3 {
        let r = put(&http, &bad_v_url(&server, &format!("b/{i}")), b"x".to_vec()).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "bad token {i}");
    }
    let banned_at = Instant::now();
    let r = http.get(server.url("b/anything")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "a GET from a banned client");
    let retry: u64 = header(&r, "retry-after")
        .expect("Retry-After on 429")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry} for a 2 s ban");
    let good = server.signed_v("b/good.bin", "b/good.bin", 3);
    let r = put(&http, &good, b"abc".to_vec()).await;
    assert_eq!(
        r.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "even a good token while banned"
    );

    let m = scrape(&http, &maddr).await;
    assert_eq!(m.get(BANS, &[]), Some(1.0), "{BANS}");
    assert_eq!(m.get(BANNED_CLIENTS, &[]), Some(1.0), "{BANNED_CLIENTS}");
    assert_eq!(m.get(AUTH_FAILURES, &[]), Some(3.0), "429s are not auth failures");
    let lines = wait_ban_lines(&server);
    assert_eq!(lines.len(), 1, "one ban line: {lines:?}");
    assert!(lines[0].contains("client=127.0.0.1"), "{}", lines[0]);

    // The ban lifts by itself after AutoBanTime (2 s), not only at the next 5 s sweep.
    let lifted = poll(Duration::from_millis(4500).saturating_sub(banned_at.elapsed()), || {
        let (http, url) = (http.clone(), server.url("b/anything"));
        async move { http.get(url).send().await.unwrap().status() != StatusCode::TOO_MANY_REQUESTS }
    })
    .await;
    assert!(lifted, "the 2 s ban still held after {:?}", banned_at.elapsed());
    assert!(
        banned_at.elapsed() >= Duration::from_millis(1500),
        "the ban lasted only {:?}",
        banned_at.elapsed()
    );
    let r = http.get(server.url("b/anything")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = put(&http, &good, b"abc".to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED, "uploads work again");

    // The 5 s sweep logs the lift and updates the gauge.
    let logged = poll(Duration::from_secs(10), || {
        let log = server.log();
        async move { log.contains("ban lifted") }
    })
    .await;
    assert!(logged, "no 'ban lifted' line:\n{}", server.log());
    let gauge = poll(Duration::from_secs(3), || {
        let (http, maddr) = (http.clone(), maddr.clone());
        async move { scrape(&http, &maddr).await.get(BANNED_CLIENTS, &[]) == Some(0.0) }
    })
    .await;
    assert!(gauge, "{BANNED_CLIENTS} back to 0");
    assert_eq!(scrape(&http, &maddr).await.get(BANS, &[]), Some(1.0));
}

/// Retry-After must not send a client back while it is still banned: the remaining time is
/// rounded up, so a fresh 60 s ban says 60, not 59.
#[tokio::test]
async fn retry_after_rounds_the_ban_up() {
    let server = TestServer::start("BlockAfterFails = 3\nBlockDuration = 60\nAutoBanTime = 60");
    let http = client();
    let mut third_sent = Instant::now();
    for i in 0..3 {
        third_sent = Instant::now();
        let r = put(&http, &bad_v_url(&server, &format!("ra/{i}")), b"x".to_vec()).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let r = http.get(server.url("ra/x")).send().await.unwrap();
    let since_third = third_sent.elapsed();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = header(&r, "retry-after").expect("Retry-After").parse().unwrap();
    // The ban began after the third request was sent: more than 60 s − since_third is left.
    let left_at_least = Duration::from_secs(60).saturating_sub(since_third);
    assert!(
        Duration::from_secs(retry) >= left_at_least,
        "Retry-After {retry} s while more than {left_at_least:?} of the ban remain"
    );
    assert!(retry <= 60, "Retry-After {retry} for a 60 s ban");
}

#[tokio::test]
async fn trusted_proxy_forwarded_address_is_banned() {
    let server = TestServer::start(
        "BlockAfterFails = 3\nBlockDuration = 60\nAutoBanTime = 60\nTrustedProxies = [\"127.0.0.1/32\"]",
    );
    let http = client();
    for i in 0..3 {
        let r = http
            .put(bad_v_url(&server, &format!("p/{i}")))
            .header("x-forwarded-for", "203.0.113.7")
            .body(b"x".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let get = |xff: Option<&'static str>| {
        let mut req = http.get(server.url("p/none"));
        if let Some(v) = xff {
            req = req.header("x-forwarded-for", v);
        }
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(
        get(Some("203.0.113.7")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the forwarded client is banned"
    );
    assert_eq!(
        get(Some("203.0.113.8")).await,
        StatusCode::NOT_FOUND,
        "another forwarded client is not"
    );
    assert_eq!(get(None).await, StatusCode::NOT_FOUND, "the proxy itself is not");
    let r = http
        .put(server.signed_v("p/ok.bin", "p/ok.bin", 2))
        .header("x-forwarded-for", "203.0.113.8")
        .body(b"ok".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "203.0.113.8 can still upload");
    let lines = wait_ban_lines(&server);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("client=203.0.113.7"), "{}", lines[0]);
    let m = scrape(&http, &metrics_addr(&server.log())).await;
    assert_eq!(m.get(BANNED_CLIENTS, &[]), Some(1.0));
}

#[tokio::test]
async fn untrusted_forwarded_for_is_ignored() {
    let server = TestServer::start("BlockAfterFails = 3\nBlockDuration = 60\nAutoBanTime = 60");
    let http = client();
    for i in 0..3 {
        let r = http
            .put(bad_v_url(&server, &format!("s/{i}")))
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-real-ip", "203.0.113.7")
            .body(b"x".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    for xff in [None, Some("203.0.113.8"), Some("203.0.113.7")] {
        let mut req = http.get(server.url("s/none"));
        if let Some(v) = xff {
            req = req.header("x-forwarded-for", v);
        }
        assert_eq!(
            req.send().await.unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS,
            "the peer 127.0.0.1 is banned whatever it claims ({xff:?})"
        );
    }
    let lines = wait_ban_lines(&server);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("client=127.0.0.1") && !lines[0].contains("203.0.113"),
        "{}",
        lines[0]
    );
}

// ---------------------------------------------------------------------------------------
// 4. Secret rotation
// ---------------------------------------------------------------------------------------

const OLD_SECRET: &str = "old-rotating-secret-0123456789";
const NEW_SECRET: &str = "new-rotating-secret-9876543210";

fn start_with_secret_file(extra: &str) -> (TestServer, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{OLD_SECRET}\n")).unwrap();
    let config = write_config(
        dir.path(),
        &format!("SecretFile = \"{}\"\n{extra}", secret_file.display()),
    );
    (TestServer::start_with_config(dir, &config), secret_file)
}

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

#[tokio::test]
async fn secret_rotation_on_sighup_with_grace() {
    let (server, secret_file) = start_with_secret_file("ReaskSecretInterval = \"3s\"");
    let http = client();
    let (old, new) = (Secret::new(OLD_SECRET), Secret::new(NEW_SECRET));
    let mut n = 0;
    let mut upload = |s: &Secret| {
        n += 1;
        let path = format!("r/{n}.bin");
        let url = signed_with(&server, s, &path, 4);
        let http = http.clone();
        async move { put(&http, &url, b"data".to_vec()).await.status() }
    };
    assert_eq!(upload(&old).await, StatusCode::CREATED, "the file's secret works");
    assert_eq!(upload(&new).await, StatusCode::FORBIDDEN, "the next one not yet");
    assert_eq!(
        upload(&secret()).await,
        StatusCode::FORBIDDEN,
        "the fixture's default secret is not in use"
    );

    std::fs::write(&secret_file, format!("{NEW_SECRET}\n")).unwrap();
    let reloads = count(&server.log(), "configuration reloaded");
    let sent = Instant::now();
    server.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(5), || count(
            &server.log(),
            "configuration reloaded"
        ) > reloads),
        "no reload logged:\n{}",
        server.log()
    );
    assert_eq!(upload(&new).await, StatusCode::CREATED, "the new secret works at once");
    assert_eq!(
        upload(&old).await,
        StatusCode::CREATED,
        "the old one during the grace period"
    );

    // After one ReaskSecretInterval only the new one works.
    let mut expired = None;
    while sent.elapsed() < Duration::from_secs(12) {
        match upload(&old).await {
            StatusCode::CREATED => tokio::time::sleep(Duration::from_millis(100)).await,
            StatusCode::FORBIDDEN => {
                expired = Some(sent.elapsed());
                break;
            }
            other => panic!("old secret during rotation: {other}"),
        }
    }
    let expired = expired.expect("the old secret never expired");
    assert!(
        expired >= Duration::from_millis(2500),
        "the old secret expired after {expired:?}, before ReaskSecretInterval (3 s)"
    );
    assert_eq!(
        upload(&old).await,
        StatusCode::FORBIDDEN,
        "the old secret stays refused"
    );
    assert_eq!(upload(&new).await, StatusCode::CREATED, "the new one keeps working");
}

#[tokio::test]
async fn secret_is_re_read_periodically() {
    let (server, secret_file) = start_with_secret_file("ReaskSecretEnabled = true\nReaskSecretInterval = \"2s\"");
    let http = client();
    let (old, new) = (Secret::new(OLD_SECRET), Secret::new(NEW_SECRET));
    let mut n = 0;
    let mut upload = |s: &Secret| {
        n += 1;
        let url = signed_with(&server, s, &format!("q/{n}.bin"), 4);
        let http = http.clone();
        async move { put(&http, &url, b"data".to_vec()).await.status() }
    };
    assert_eq!(upload(&new).await, StatusCode::FORBIDDEN, "not yet");
    std::fs::write(&secret_file, format!("{NEW_SECRET}\n")).unwrap();
    let written = Instant::now();
    let mut rotated = None;
    while written.elapsed() < Duration::from_secs(8) {
        if upload(&new).await == StatusCode::CREATED {
            rotated = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rotated = rotated.unwrap_or_else(|| panic!("the new secret was never picked up:\n{}", server.log()));
    assert_eq!(
        upload(&old).await,
        StatusCode::CREATED,
        "the old one during the grace period"
    );
    let mut expired = None;
    while rotated.elapsed() < Duration::from_secs(8) {
        match upload(&old).await {
            StatusCode::CREATED => tokio::time::sleep(Duration::from_millis(100)).await,
            StatusCode::FORBIDDEN => {
                expired = Some(rotated.elapsed());
                break;
            }
            other => panic!("old secret during rotation: {other}"),
        }
    }
    let expired = expired.expect("the old secret never expired");
    assert!(
        expired >= Duration::from_millis(1500),
        "the old secret expired {expired:?} after the new one was seen (interval 2 s)"
    );
    assert_eq!(upload(&new).await, StatusCode::CREATED);
    assert!(
        wait_until(Duration::from_secs(5), || server.log().contains("secret re-read")),
        "the rotation is logged"
    );
    let log = server.log();
    assert!(
        !log.contains(OLD_SECRET) && !log.contains(NEW_SECRET),
        "no secret in the log"
    );
}

#[tokio::test]
async fn unreadable_secret_file_keeps_the_old_secret() {
    let (server, secret_file) = start_with_secret_file("ReaskSecretInterval = \"3s\"");
    let http = client();
    let old = Secret::new(OLD_SECRET);
    let url = signed_with(&server, &old, "k/before.bin", 3);
    assert_eq!(put(&http, &url, b"abc".to_vec()).await.status(), StatusCode::CREATED);

    std::fs::remove_file(&secret_file).unwrap();
    let hups = count(&server.log(), "SIGHUP");
    server.signal("HUP");
    let failed = wait_until(Duration::from_secs(5), || {
        let log = server.log();
        count(&log, "SIGHUP") > hups && log.lines().any(|l| l.contains("ERROR") && l.contains("SecretFile"))
    });
    assert!(failed, "no error about SecretFile logged:\n{}", server.log());
    let url = signed_with(&server, &old, "k/after.bin", 3);
    assert_eq!(
        put(&http, &url, b"abc".to_vec()).await.status(),
        StatusCode::CREATED,
        "the old secret still works"
    );
    assert!(
        !server.log().contains("configuration reloaded"),
        "a failed reload must not claim success"
    );
    assert!(!server.log().contains(OLD_SECRET), "the secret is never logged");
}

/// Metronome DELETE tokens are `HMAC(secret, path + "\0" + delete_secret)` with the delete
/// secret defaulting to the secret: across a rotation both pairs stay valid for the grace
/// period, like upload tokens.
#[tokio::test]
async fn delete_tokens_survive_a_rotation_during_the_grace_period() {
    let (server, secret_file) = start_with_secret_file("ReaskSecretInterval = \"60s\"");
    let http = client();
    let (old, new) = (Secret::new(OLD_SECRET), Secret::new(NEW_SECRET));
    for path in ["d/a.bin", "d/b.bin"] {
        let r = put(&http, &signed_with(&server, &old, path, 1), b"x".to_vec()).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{path}");
    }
    std::fs::write(&secret_file, format!("{NEW_SECRET}\n")).unwrap();
    let reloads = count(&server.log(), "configuration reloaded");
    server.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(5), || count(
            &server.log(),
            "configuration reloaded"
        ) > reloads),
        "no reload logged:\n{}",
        server.log()
    );
    let delete = |path: &str, token: String| {
        let req = http.delete(format!("{}?token={token}", server.url(path)));
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(
        delete("d/a.bin", auth::sign_delete(&new, "d/a.bin", &new)).await,
        StatusCode::NO_CONTENT,
        "a delete token of the new secret"
    );
    assert_eq!(
        delete("d/b.bin", auth::sign_delete(&old, "d/b.bin", &old)).await,
        StatusCode::NO_CONTENT,
        "a delete token minted with the old secret, during the grace period"
    );
}

/// SIGHUP applies live settings (limits) and names the keys that need a restart.
#[tokio::test]
async fn sighup_applies_limits_and_names_restart_only_keys() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "MaxUploadSize = 1000");
    let server = TestServer::start_with_config(dir, &config);
    let http = client();
    let body = payload(500, 91);
    let r = put(&http, &server.signed_v("l/a.bin", "l/a.bin", 500), body.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED, "500 bytes under a 1000-byte limit");

    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("MaxUploadSize = 1000", "MaxUploadSize = 100")
        .replace("ListenPort = \"127.0.0.1:0\"", "ListenPort = \"127.0.0.1:1\"");
    std::fs::write(&config, text).unwrap();
    let reloads = count(&server.log(), "configuration reloaded");
    server.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(5), || count(
            &server.log(),
            "configuration reloaded"
        ) > reloads),
        "no reload logged:\n{}",
        server.log()
    );
    let r = put(&http, &server.signed_v("l/b.bin", "l/b.bin", 500), body).await;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "the new limit applies");
    let warned = server
        .log()
        .lines()
        .any(|l| l.contains("WARN") && l.contains("ListenPort") && l.contains("restart"));
    assert!(
        warned,
        "ListenPort needs a restart and the log says so:\n{}",
        server.log()
    );
    let r = http.get(server.url("l/a.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "still serving on the old port");
}

// ---------------------------------------------------------------------------------------
// 5. Log hygiene
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// 6. ChecksumVerification
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn checksum_verification() {
    let server = TestServer::start("ChecksumVerification = true");
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
        assert!(!server.files_dir().join(path).exists(), "{path}: no file");
        assert_eq!(
            http.get(server.url(path)).send().await.unwrap().status(),
            StatusCode::NOT_FOUND,
            "{path}: not served"
        );
        assert_eq!(server.temporaries(), 0, "{path}: no temporaries");
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

// ---------------------------------------------------------------------------------------
// 7. Unix socket
// ---------------------------------------------------------------------------------------

async fn unix_exchange(socket: &Path, request: &[u8]) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server closes a Connection: close exchange")
        .unwrap();
    parse_response(&out)
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(&out)))
        .0
}

#[tokio::test]
async fn unix_socket_serves_and_cleans_up() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("hfs.sock");
    // A stale socket file from an earlier run.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(std::fs::symlink_metadata(&sock).unwrap().file_type().is_socket());
    let config = write_config(
        dir.path(),
        &format!("UnixSocket = true\nUnixSocketPath = \"{}\"", sock.display()),
    );
    let mut server = Spawned::start(&config, Some("debug,hyper=warn"));
    server.expect_stderr(
        &format!("listening on unix:{}", sock.display()),
        Duration::from_secs(20),
    );
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket(), "a socket at the path");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "socket mode");

    let body = payload(4321, 71);
    let token = auth::sign_v(&secret(), "u/file.bin", body.len() as u64);
    let mut req = format!(
        "PUT /upload/u/file.bin?v={token} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let r = unix_exchange(&sock, &req).await;
    assert_eq!(r.status, 201, "PUT over the socket");
    let r = unix_exchange(
        &sock,
        b"GET /upload/u/file.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "GET over the socket");
    assert_eq!(r.body, body);
    assert_eq!(std::fs::read(dir.path().join("store/upload/u/file.bin")).unwrap(), body);
    server.expect_stderr("client=unix", Duration::from_secs(5));

    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(15)).expect("exits on SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "the socket file is removed at exit"
    );
}

#[tokio::test]
async fn unix_socket_refuses_to_replace_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hfs.sock");
    std::fs::write(&path, b"precious data").unwrap();
    let config = write_config(
        dir.path(),
        &format!("UnixSocket = true\nUnixSocketPath = \"{}\"", path.display()),
    );
    let mut server = Spawned::start(&config, None);
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("the server does not start");
    assert!(!status.success(), "non-zero exit: {status:?}");
    let stderr = server.stderr();
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("not a socket"),
        "a clear message naming the path:\n{stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious data", "the file is untouched");
}

// ---------------------------------------------------------------------------------------
// 8. LogFile, reopening on SIGHUP, JSON
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn log_file_is_reopened_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("hfs.log");
    let config = write_config(dir.path(), &format!("LogFile = \"{}\"", log_path.display()));
    let server = Spawned::start(&config, None);
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(20), || listen_addr(&read(&log_path)).is_some()),
        "no listening line in the log file; stderr:\n{}",
        server.stderr()
    );
    let base = format!("http://{}", listen_addr(&read(&log_path)).unwrap());
    let http = client();
    let r = http.get(format!("{base}/upload/lf/before")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        wait_until(Duration::from_secs(5), || read(&log_path)
            .contains("path=/upload/lf/before")),
        "access line in the log file:\n{}",
        read(&log_path)
    );

    let rotated = dir.path().join("hfs.log.1");
    std::fs::rename(&log_path, &rotated).unwrap();
    server.signal("HUP");
    assert!(
        wait_until(Duration::from_secs(5), || read(&log_path).contains("reopened")),
        "a new file at the original path after SIGHUP; rotated:\n{}",
        read(&rotated)
    );
    let r = http.get(format!("{base}/upload/lf/after")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(
        wait_until(Duration::from_secs(5), || read(&log_path)
            .contains("path=/upload/lf/after")),
        "the new access line goes to the new file:\n{}",
        read(&log_path)
    );
    assert!(!read(&rotated).contains("/upload/lf/after"), "not to the rotated one");
    assert!(!read(&log_path).contains("/upload/lf/before"));
    assert!(
        !server.stderr().contains("/upload/lf/"),
        "access lines go to the file only:\n{}",
        server.stderr()
    );
}

#[tokio::test]
async fn json_log_lines_all_parse() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "LogFormat = \"json\"");
    let mut server = Spawned::start(&config, Some("debug,hyper=warn"));
    assert!(
        wait_until(Duration::from_secs(20), || listen_addr(&server.stderr()).is_some()),
        "did not start:\n{}",
        server.stderr()
    );
    let base = format!("http://{}", listen_addr(&server.stderr()).unwrap());
    let http = client();
    let t = auth::sign_v(&secret(), "j/a.txt", 5);
    let r = put(&http, &format!("{base}/upload/j/a.txt?v={t}"), b"hello".to_vec()).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = put(
        &http,
        &format!("{base}/upload/j/b.txt?v={}", "00".repeat(32)),
        b"hello".to_vec(),
    )
    .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http.get(format!("{base}/upload/j/a.txt")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(format!("{base}/upload/j/none")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    server.signal("TERM");
    assert!(server.wait_exit(Duration::from_secs(15)).expect("exits").success());

    let out = server.stderr();
    let mut statuses = Vec::new();
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}\nall:\n{out}"));
        assert!(v.is_object(), "{line}");
        if v["fields"]["message"] == "request"
            && v["fields"]["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/upload/j/"))
            && let Some(s) = v["fields"]["status"].as_u64()
        {
            for key in ["client", "method", "path", "status", "bytes_in", "bytes_out", "ms"] {
                assert!(!v["fields"][key].is_null(), "access line without {key}: {line}");
            }
            statuses.push(s);
        }
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 201, 403, 404],
        "access lines with structured fields:\n{out}"
    );
}

// ---------------------------------------------------------------------------------------
// 9. Retention
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn retention_deletes_old_files_and_reports() {
    let reports = tempfile::tempdir().unwrap();
    let report = reports.path().join("deletions.log");
    let server = TestServer::start(&format!(
        "DeleteFiles = true\nDeleteFilesAfterPeriod = \"1h\"\nCleanupInterval = \"1s\"\nDeletionReportFile = \"{}\"",
        report.display()
    ));
    let http = client();
    let maddr = metrics_addr(&server.log());
    for (path, len, seed) in [("old/file.bin", 123usize, 81u64), ("fresh/file.bin", 45, 82)] {
        let r = put_typed(
            &http,
            server.signed_v(path, path, len as u64),
            "text/plain",
            payload(len, seed),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{path}");
    }
    let old = server.files_dir().join("old/file.bin");
    let two_hours_ago = SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();

    assert!(
        wait_until(Duration::from_secs(10), || !old.exists()),
        "the old file was never deleted:\n{}",
        server.log()
    );
    // Two more passes must leave the fresh file alone.
    let passes = count(&server.log(), "retention pass done");
    assert!(
        wait_until(Duration::from_secs(10), || count(&server.log(), "retention pass done")
            >= passes + 2),
        "no further retention passes:\n{}",
        server.log()
    );
    assert!(
        server.files_dir().join("fresh/file.bin").exists(),
        "the fresh file stays"
    );
    let r = http.get(server.url("fresh/file.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http.get(server.url("old/file.bin")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(server.sidecars(), 1, "the old file's metadata went too");

    let text = std::fs::read_to_string(&report).expect("a deletion report");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one report line: {text:?}");
    let fields: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(fields.len(), 5, "time path size age reason: {:?}", lines[0]);
    let when = humantime::parse_rfc3339_weak(fields[0]).unwrap_or_else(|e| panic!("time {:?}: {e}", fields[0]));
    let skew = SystemTime::now().duration_since(when).unwrap_or_else(|e| e.duration());
    assert!(skew < Duration::from_secs(60), "report time {:?}", fields[0]);
    assert_eq!(fields[1], "old/file.bin");
    assert_eq!(fields[2], "123");
    let age: u64 = fields[3].parse().expect("age in seconds");
    assert!((7200..7300).contains(&age), "age {age}");
    assert_eq!(fields[4], "delete_files_after_period");

    let m = scrape(&http, &maddr).await;
    assert_eq!(
        m.get(RETENTION_DELETIONS, &[("reason", "delete_files_after_period")]),
        Some(1.0)
    );
    assert_eq!(m.get(STORE_FILES, &[]), Some(1.0), "store_files after retention");
    assert_eq!(m.get(STORE_BYTES, &[]), Some(45.0), "store_bytes after retention");
    assert!(server.log().contains("retention deleted a file"));
}
