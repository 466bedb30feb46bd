//! Configuration: defaults < TOML file < `HMAC_FILE_SERVER_<KEY>` environment < `--set`,
//! validated once into an immutable [`Config`].
//!
//! Every problem is collected with the key it belongs to, so `check-config` can print them all
//! at once. Unknown keys are errors naming the closest known key (a typo must not silently drop
//! a limit); keys of later Go servers that we do not implement are warnings.
//!
//! Each key is described once, in [`keys`]; the rest follows from that table: `sources` merges
//! file, environment and `--set` into one table, `reader` reads it by key, one builder per group
//! (`groups/`) checks and types its keys, and `pinned` keeps what a reload must not change.
//! Adding a key: its line in [`keys`], its field and read in its group, its line in
//! `config.example.toml` (a test checks the example against the table).

pub mod cli;
mod groups;
pub mod keys;
mod pinned;
mod reader;
mod sources;
pub mod units;

use std::fmt;
use std::net::SocketAddr;

pub use groups::{
    AuthSettings, BanSettings, Limits, LogFormat, LogSettings, MetricsSettings, RedactedAddr, RedisSettings,
    RetentionSettings, S3Settings, ServerSettings, StoreBackend, StoreSettings,
};
use pinned::Pinned;
use reader::Reader;
use sources::Merged;
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
    /// The bucket, when `StoreBackend = "s3"`.
    pub s3: Option<S3Settings>,
    /// Shared state in Redis; `None` = embedded.
    pub redis: Option<RedisSettings>,
    /// Warnings found while loading (foreign keys, short secret).
    pub warnings: Vec<String>,
    /// The values of the keys a reload keeps, as read (its `Debug` shows names only).
    pinned: Pinned,
}

impl Config {
    /// Loads and validates from the given sources.
    pub fn load(sources: &Sources) -> Result<Config, ConfigError> {
        Self::from_merged(sources::merge(sources))
    }

    /// Reads the sources again for a running server: the fresh configuration, with the
    /// running values of the restart-only keys, and the keys a restart would change (the
    /// restart-only ones, and those like ReadTimeout that SIGHUP applies only in part).
    ///
    /// The sources must load as they are, restart-only keys included: a mistake that would
    /// stop the next start fails the reload, and the running configuration stays.
    pub fn reload(&self, sources: &Sources) -> Result<(Config, Vec<&'static keys::Key>), ConfigError> {
        let merged = sources::merge(sources);
        let mut kept = merged.clone();
        Self::from_merged(merged)?;
        let changed = self.pinned.changed(&kept.table);
        self.pinned.restore(&mut kept.table);
        Ok((Self::from_merged(kept)?, changed))
    }

    fn from_merged(merged: Merged) -> Result<Config, ConfigError> {
        if merged.file_failed {
            // Reading the keys of the empty table would add "no Secret" and the like: noise
            // next to the one problem that matters. The sources' own problems (environment,
            // `--set`) are kept.
            let mut problems = merged.problems;
            problems.sort_by(|a, b| a.key.cmp(&b.key));
            return Err(ConfigError {
                problems,
                warnings: merged.warnings,
            });
        }
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
                config.pinned = Pinned::from_table(&merged.table);
                Ok(config)
            }
            _ => Err(ConfigError { problems, warnings }),
        }
    }

    /// A warning when the listener is on loopback (`127.0.0.0/8`, `::1`, `localhost`) or a Unix
    /// socket and TrustedProxies is empty: that is how a server behind a reverse proxy on the
    /// same host listens, and then every request comes from the proxy's address, so bans hit
    /// the proxy and everyone behind it. Not among [`Config::warnings`]: the configuration is
    /// fine without a proxy, only the operator knows whether one is in front; start-up logs it
    /// as a WARN and `check-config` prints it.
    pub fn proxy_warning(&self) -> Option<String> {
        if !self.bans.trusted_proxies.is_empty() {
            return None;
        }
        const BOTH: &str = r#"["127.0.0.1/32", "::1/128"]"#;
        let (listener, proxy) = match (&self.server.unix_socket, &self.server.listen) {
            (Some(path), _) => (format!("a Unix socket ({})", path.display()), BOTH),
            (None, ListenAddr::Socket(addr)) if addr.ip().to_canonical().is_loopback() => {
                let proxy = if addr.ip().to_canonical().is_ipv4() {
                    r#"["127.0.0.1/32"]"#
                } else {
                    r#"["::1/128"]"#
                };
                (format!("loopback ({addr})"), proxy)
            }
            (None, ListenAddr::Host(host, port)) if host.eq_ignore_ascii_case("localhost") => {
                (format!("loopback ({host}:{port})"), BOTH)
            }
            _ => return None,
        };
        Some(format!(
            "TrustedProxies is empty and the server listens on {listener}: if a reverse proxy is in \
             front, set TrustedProxies = {proxy} (the proxy's address), or every client has the \
             proxy's address and a ban blocks the proxy, so everyone behind it"
        ))
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
    let s3 = S3Settings::read(r, store.backend);
    let logging = LogSettings::read(r);
    let limits = Limits::read(r);
    if let Some(s3) = &s3 {
        s3.check_fits(r, limits.max_upload_bytes);
    }
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
        s3,
        redis,
        warnings: Vec::new(),
        pinned: Pinned::default(),
    })
}

#[cfg(test)]
mod tests;
