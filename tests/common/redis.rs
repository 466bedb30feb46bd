//! Redis fixture for the resumable-upload tests: every test starts its own `redis-server` on a
//! free loopback port (no persistence), never the shared one on 6379, and kills it by PID when
//! done. [`RedisClient`] speaks just enough RESP to look at and change what the server wrote.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    password: Option<String>,
    dir: tempfile::TempDir,
}

/// A port that was free a moment ago.
pub use crate::common::free_port;

impl RedisServer {
    /// Starts one on a free port.
    pub fn start() -> RedisServer {
        Self::start_with_password(None)
    }

    /// Starts one that needs `password` (`requirepass`).
    pub fn start_with_password(password: Option<&str>) -> RedisServer {
        for _ in 0..5 {
            if let Some(r) = Self::try_start(free_port(), password, Duration::from_secs(10)) {
                return r;
            }
        }
        panic!("cannot start redis-server on a free port");
    }

    /// Starts one on `port` (again, after [`RedisServer::stop`]): retries while the port is
    /// still held, up to a deadline.
    pub fn start_on(port: u16) -> RedisServer {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = Self::try_start(port, None, Duration::from_secs(10)) {
                return r;
            }
            assert!(Instant::now() < deadline, "cannot start redis-server on port {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn try_start(port: u16, password: Option<&str>, within: Duration) -> Option<RedisServer> {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(p) = password {
            cmd.args(["--requirepass", p]);
        }
        let mut child = cmd.spawn().expect("redis-server is installed");
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return None; // port taken
            }
            if ping(port) {
                return Some(RedisServer {
                    child: Some(child),
                    port,
                    password: password.map(str::to_string),
                    dir,
                });
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The server setting that points at this Redis.
    pub fn toml(&self) -> String {
        format!("RedisAddr = \"{}\"\n", self.addr())
    }

    /// The PID of the redis-server process.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Kills the process (by its PID) and waits for it; the port is free afterwards.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while ping(self.port) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A client for database `db`.
    pub fn client(&self, db: u32) -> RedisClient {
        RedisClient {
            addr: self.addr(),
            db,
            password: self.password.clone(),
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Whether something on `port` answers a RESP PING (any answer: NOAUTH counts).
fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"*1\r\n$4\r\nPING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if n > 0 && (buf[0] == b'+' || buf[0] == b'-'))
}

/// A RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(String),
    /// `-ERR …`
    Error(String),
    /// `:1`
    Int(i64),
    /// `$…` (None = nil)
    Bulk(Option<Vec<u8>>),
    /// `*…`
    Array(Vec<Reply>),
}

impl Reply {
    /// The reply as text (bulk or status), if it is one.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }

    /// The reply as an integer.
    pub fn int(&self) -> i64 {
        match self {
            Reply::Int(n) => *n,
            other => panic!("not an integer reply: {other:?}"),
        }
    }

    /// The reply as a list of texts (e.g. KEYS).
    pub fn texts(&self) -> Vec<String> {
        match self {
            Reply::Array(items) => items.iter().filter_map(Reply::text).collect(),
            other => panic!("not an array reply: {other:?}"),
        }
    }
}

/// Where to send commands: address, database and password.
#[derive(Debug, Clone)]
pub struct RedisClient {
    /// `host:port`.
    pub addr: String,
    /// Database number.
    pub db: u32,
    /// `AUTH` password.
    pub password: Option<String>,
}

impl RedisClient {
    /// The client for the Redis a server's extra TOML points at (`RedisAddr`, `RedisDB`,
    /// `RedisPassword`), or None for the embedded state.
    pub fn from_toml(extra: &str) -> Option<RedisClient> {
        let table: toml::Table = extra.parse().unwrap();
        let addr = table.get("RedisAddr")?.as_str()?.to_string();
        if addr.is_empty() {
            return None;
        }
        let db = table.get("RedisDB").and_then(|v| v.as_integer()).unwrap_or(0) as u32;
        let password = table
            .get("RedisPassword")
            .and_then(|v| v.as_str())
            .filter(|p| !p.is_empty())
            .map(str::to_string);
        Some(RedisClient { addr, db, password })
    }

    /// Runs one command on a fresh connection (after AUTH and SELECT).
    pub fn cmd(&self, args: &[&str]) -> Reply {
        let s = TcpStream::connect(&self.addr).expect("redis reachable");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let mut w = s;
        let mut send = |args: &[&str]| -> Reply {
            let mut out = format!("*{}\r\n", args.len()).into_bytes();
            for a in args {
                out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                out.extend_from_slice(a.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            w.write_all(&out).unwrap();
            read_reply(&mut reader)
        };
        if let Some(p) = &self.password {
            let r = send(&["AUTH", p]);
            assert_eq!(r, Reply::Status("OK".into()), "AUTH");
        }
        if self.db != 0 {
            let db = self.db.to_string();
            let r = send(&["SELECT", &db]);
            assert_eq!(r, Reply::Status("OK".into()), "SELECT");
        }
        send(args)
    }

    /// Every key matching `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let mut keys = self.cmd(&["KEYS", pattern]).texts();
        keys.sort();
        keys
    }
}

fn read_reply(r: &mut impl BufRead) -> Reply {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" => Reply::Status(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Int(rest.parse().unwrap()),
        "$" => {
            let n: i64 = rest.parse().unwrap();
            if n < 0 {
                return Reply::Bulk(None);
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf).unwrap();
            buf.truncate(n as usize);
            Reply::Bulk(Some(buf))
        }
        "*" => {
            let n: i64 = rest.parse().unwrap();
            Reply::Array((0..n.max(0)).map(|_| read_reply(r)).collect())
        }
        other => panic!("unexpected RESP reply {other:?}{rest}"),
    }
}
