//! Helpers shared by several features: the Prometheus scraper, shared metric names, plain PUTs,
//! config files and self-spawned servers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use reqwest::StatusCode;

use crate::common::{SECRET, wait_until};

/// One sample of the Prometheus text exposition.
#[derive(Debug, Clone)]
pub struct Sample {
    name: String,
    pub labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed `/metrics` answer.
#[derive(Debug, Clone)]
pub struct Scrape {
    samples: Vec<Sample>,
}

impl Scrape {
    /// The value of the sample with exactly these labels.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples
            .iter()
            .find(|s| s.name == name && s.labels == want)
            .map(|s| s.value)
    }

    /// Like `get`; absent counts as 0 (a counter or histogram that has not been touched).
    pub fn val(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }

    /// Every sample of a name.
    pub fn all(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }
}

/// A tiny parser for `name{label="value",…} value [timestamp]` lines; panics on anything it
/// cannot read (a broken exposition must fail the test).
pub fn parse_prometheus(text: &str) -> Scrape {
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
pub fn metrics_addr(log: &str) -> String {
    let marker = "metrics and health on http://";
    let start = log
        .find(marker)
        .unwrap_or_else(|| panic!("no metrics line in the log:\n{log}"))
        + marker.len();
    let rest = &log[start..];
    rest[..rest.find('/').expect("…/metrics")].to_string()
}

pub async fn scrape_text(http: &reqwest::Client, addr: &str) -> String {
    let r = http.get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "GET /metrics");
    r.text().await.unwrap()
}

pub async fn scrape(http: &reqwest::Client, addr: &str) -> Scrape {
    parse_prometheus(&scrape_text(http, addr).await)
}

// Metric names read by more than one feature.
pub const AUTH_FAILURES: &str = "hmac_file_server_auth_failures_total";
pub const STORE_FILES: &str = "hmac_file_server_store_files";
pub const STORE_BYTES: &str = "hmac_file_server_store_bytes";

pub async fn put(http: &reqwest::Client, url: &str, body: Vec<u8>) -> reqwest::Response {
    http.put(url).body(body).send().await.unwrap()
}

/// Writes a config file into `dir`: free loopback ports, bans off, the store at
/// `dir/store`, the test secret unless `extra` sets SecretFile; `extra` overrides.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
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

/// A server process started by the test itself (for Unix sockets, log files, JSON logs and
/// start-up failures, which the fixture cannot read).
pub struct Spawned {
    child: Child,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
}

impl Spawned {
    /// Starts the binary; `rust_log` None = no RUST_LOG (LogLevel applies).
    pub fn start(config: &Path, rust_log: Option<&str>) -> Spawned {
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

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until stderr contains `needle`.
    #[track_caller]
    pub fn expect_stderr(&self, needle: &str, within: Duration) {
        assert!(
            wait_until(within, || self.stderr().contains(needle)),
            "stderr never had {needle:?}:\n{}",
            self.stderr()
        );
    }

    pub fn signal(&self, signal: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{signal}");
    }

    /// Waits for the exit and for the rest of stderr.
    pub fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
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

pub fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

/// How many times `needle` occurs in `log`.
pub fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}
