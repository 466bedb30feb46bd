//! Test fixture: starts the real binary on a free port with a temporary store, reads the
//! bound address from its log, and signs URLs with the same secret.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use hmac_file_server::auth;
use hmac_file_server::config::Secret;

/// The secret every test server uses.
pub const SECRET: &str = "integration-test-secret-0123456789";

/// A running server process with its own store.
pub struct TestServer {
    child: Child,
    pub dir: tempfile::TempDir,
    pub addr: SocketAddr,
    pub base: String,
    log: Arc<Mutex<String>>,
}

impl TestServer {
    /// Starts the server with the default test settings plus `extra_toml`.
    pub fn start(extra_toml: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "ListenPort = \"127.0.0.1:0\"\nSecret = \"{SECRET}\"\nStoreDir = \"{}\"\n{extra_toml}\n",
                store.display()
            ),
        )
        .unwrap();
        Self::start_with_config(dir, &config)
    }

    /// Starts the server with a given config file.
    pub fn start_with_config(dir: tempfile::TempDir, config: &Path) -> TestServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hmac-file-server"))
            .arg("-config")
            .arg(config)
            .env("RUST_LOG", "debug,hyper=warn")
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
                if let Some(addr) = line.split("listening on ").nth(1)
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

    /// Files left in the temporary folder.
    pub fn temporaries(&self) -> usize {
        std::fs::read_dir(self.store().join(".hmac-file-server/tmp"))
            .map(|d| d.count())
            .unwrap_or(0)
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
