//! Configuration: defaults < TOML file < `HMAC_FILE_SERVER_<KEY>` environment < `--set`,
//! validated once into an immutable [`Config`].
//!
//! Every problem is collected with the key it belongs to, so `check-config` can print them all
//! at once. Unknown keys are errors naming the closest known key (a typo must not silently drop
//! a limit); keys of later Go servers that we do not implement are warnings.

pub mod cli;
mod groups;
pub mod keys;
mod reader;
mod sources;
pub mod units;

use std::fmt;
use std::net::SocketAddr;

pub use groups::{
    AuthSettings, BanSettings, Limits, LogFormat, LogSettings, MetricsSettings, RedisSettings, RetentionSettings,
    ServerSettings, StoreSettings,
};
use reader::Reader;
pub use sources::Sources;

/// One problem with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key, or `config` for the file as a whole.
    pub key: String,
    /// What is wrong, for a human.
    pub message: String,
}

impl Problem {
    /// A problem with `key`.
    pub fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The configuration could not be loaded: every problem found.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct ConfigError {
    /// Every problem, in key order.
    pub problems: Vec<Problem>,
    /// Warnings found on the way (ignored keys of other versions …), shown with the errors.
    pub warnings: Vec<String>,
}

/// The HMAC key. Its `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Wraps raw key bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self(bytes.into())
    }
    /// The raw key bytes, for the HMAC.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes>)", self.0.len())
    }
}

/// Where a listener binds, in the forms `":8080"`, `"8080"`, `"127.0.0.1:8080"`, `"[::1]:8080"`,
/// `"localhost:8080"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// All interfaces (IPv6 and IPv4 where the system allows).
    AnyHost(u16),
    /// One address.
    Socket(SocketAddr),
    /// A host name to resolve at start.
    Host(String, u16),
}

impl ListenAddr {
    /// Parses the seed's ListenPort notation.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bad = || format!("`{text}` is not a listen address; use \":8080\", \"127.0.0.1:8080\" or \"[::1]:8080\"");
        if let Ok(port) = text.trim_start_matches(':').parse::<u16>() {
            return Ok(Self::AnyHost(port));
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Self::Socket(addr));
        }
        let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || host.contains(['/', ' ', '[', ']']) {
            return Err(bad());
        }
        Ok(Self::Host(host.to_string(), port))
    }
}

/// The validated, immutable server settings, by group.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listener and worker threads.
    pub server: ServerSettings,
    /// The keys that sign tokens.
    pub auth: AuthSettings,
    /// The local store.
    pub store: StoreSettings,
    /// Request limits.
    pub limits: Limits,
    /// Logging.
    pub logging: LogSettings,
    /// Bans and trusted proxies.
    pub bans: BanSettings,
    /// Retention and sweeps.
    pub retention: RetentionSettings,
    /// The metrics listener.
    pub metrics: MetricsSettings,
    /// Shared state in Redis; `None` = embedded.
    pub redis: Option<RedisSettings>,
    /// Warnings found while loading (foreign keys, short secret).
    pub warnings: Vec<String>,
}

impl Config {
    /// Loads and validates from the given sources.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        let merged = sources::merge(sources);
        let mut r = Reader::new(&merged.table);
        let config = build(&mut r);
        let (found, found_warnings) = r.finish();
        let mut problems = merged.problems;
        problems.extend(found);
        problems.sort_by(|a, b| a.key.cmp(&b.key));
        let mut warnings = merged.warnings;
        warnings.extend(found_warnings);
        match config {
            Some(mut config) if problems.is_empty() => {
                config.warnings = warnings;
                Ok(config)
            }
            _ => Err(ConfigError { problems, warnings }),
        }
    }

    /// The URL prefix uploads live under: `/upload/` or `/`.
    pub fn url_prefix(&self) -> String {
        if self.store.upload_sub_dir.is_empty() {
            "/".to_string()
        } else {
            format!("/{}/", self.store.upload_sub_dir)
        }
    }
}

/// Reads every group (all of them, so every problem is found); `None` without a secret.
fn build(r: &mut Reader<'_>) -> Option<Config> {
    let server = ServerSettings::read(r);
    let auth = AuthSettings::read(r);
    let store = StoreSettings::read(r);
    let logging = LogSettings::read(r);
    let limits = Limits::read(r);
    let bans = BanSettings::read(r);
    let retention = RetentionSettings::read(r);
    let metrics = MetricsSettings::read(r);
    let redis = RedisSettings::read(r);
    Some(Config {
        server,
        auth: auth?,
        store,
        limits,
        logging,
        bans,
        retention,
        metrics,
        redis,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests;
