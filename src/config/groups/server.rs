//! Where the server listens and how many worker threads it runs.

use std::path::PathBuf;

use crate::config::ListenAddr;
use crate::config::keys;
use crate::config::reader::Reader;

/// Listener and threads.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// TCP listener.
    pub listen: ListenAddr,
    /// Unix socket path, when `UnixSocket = true`.
    pub unix_socket: Option<PathBuf>,
    /// Worker threads; `None` = one per core.
    pub num_cores: Option<usize>,
}

impl ServerSettings {
    /// Reads and checks the group's keys; problems go to the reader.
    pub(in crate::config) fn read(r: &mut Reader<'_>) -> Self {
        let listen = ListenAddr::parse(&r.text(&keys::LISTEN_PORT))
            .unwrap_or_else(|e| r.fail(&keys::LISTEN_PORT, e, ListenAddr::AnyHost(8080)));

        let unix_enabled = r.boolean(&keys::UNIX_SOCKET);
        let unix_path = r.path(&keys::UNIX_SOCKET_PATH);
        let unix_socket = match (unix_enabled, unix_path) {
            (true, Some(p)) => Some(p),
            (true, None) => r.fail(&keys::UNIX_SOCKET_PATH, "UnixSocket = true needs UnixSocketPath", None),
            (false, _) => None,
        };

        Self {
            listen,
            unix_socket,
            num_cores: num_cores(r),
        }
    }
}

fn num_cores(r: &mut Reader<'_>) -> Option<usize> {
    use toml::Value;
    let key = &keys::NUM_CORES;
    match r.raw(key) {
        None => None,
        Some(Value::Integer(n)) if *n >= 1 && *n <= 1024 => Some(*n as usize),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("auto") => None,
        Some(Value::String(s)) => match s.trim().parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Some(n),
            _ => r.fail(key, format!("`{s}` is not \"auto\" or a number of threads"), None),
        },
        Some(other) => r.fail(key, format!("`{other}` is not \"auto\" or a number of threads"), None),
    }
}
