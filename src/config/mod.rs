//! Configuration: defaults < TOML file < `HMAC_FILE_SERVER_<KEY>` environment < `--set`,
//! validated once into an immutable [`Config`].
//!
//! Every problem is collected with the key it belongs to, so `check-config` can print them all
//! at once. Unknown keys are errors naming the closest known key (a typo must not silently drop
//! a limit); keys of later Go servers that we do not implement are warnings.

pub mod cli;
pub mod keys;
mod reader;
mod sources;
pub mod units;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml::Value;

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

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Redis connection settings (resumable state shared between instances).
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `host:port`.
    pub addr: String,
    /// Password, if any.
    pub password: Option<Secret>,
    /// Database number.
    pub db: i64,
}

/// The validated, immutable server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// TCP listener.
    pub listen: ListenAddr,
    /// Unix socket path, when `UnixSocket = true`.
    pub unix_socket: Option<PathBuf>,
    /// The HMAC key for upload tokens.
    pub secret: Secret,
    /// Where the secret came from, when read from a file.
    pub secret_file: Option<PathBuf>,
    /// Metronome's `http_file_delete_secret`; `None`: the same as the upload secret.
    pub delete_secret: Option<Secret>,
    /// Root of the local store.
    pub store_dir: PathBuf,
    /// URL prefix and folder under the store; empty = served at `/`.
    pub upload_sub_dir: String,
    /// `debug`, `info`, `warn` or `error`.
    pub log_level: String,
    /// Log file; `None` = standard error.
    pub log_file: Option<PathBuf>,
    /// Log line format.
    pub log_format: LogFormat,
    /// Largest accepted upload.
    pub max_upload_bytes: u64,
    /// Retries of transient storage errors.
    pub max_retries: u32,
    /// Pause between retries.
    pub retry_delay: Duration,
    /// Retry GET's storage reads too.
    pub enable_get_retries: bool,
    /// Failed authentications before a ban.
    pub block_after_fails: u32,
    /// Window in which failures are counted.
    pub block_duration: Duration,
    /// Lift bans by themselves.
    pub auto_unban: bool,
    /// How long a ban lasts.
    pub auto_ban_time: Duration,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Delete files older than `delete_files_after`.
    pub delete_files: bool,
    /// Age after which files are deleted.
    pub delete_files_after: Duration,
    /// Size and age limits on the store.
    pub retention_enabled: bool,
    /// Store size limit (0 = none).
    pub max_retention_bytes: u64,
    /// Store age limit.
    pub max_retention_time: Duration,
    /// Where deletions are reported.
    pub deletion_report_file: Option<PathBuf>,
    /// How often sweeps run.
    pub cleanup_interval: Duration,
    /// Worker threads; `None` = one per core.
    pub num_cores: Option<usize>,
    /// Re-read the secret periodically.
    pub reask_secret: bool,
    /// How often the secret is re-read.
    pub reask_secret_interval: Duration,
    /// Second listener with `/metrics` and `/health`.
    pub metrics_enabled: bool,
    /// Its address.
    pub metrics_listen: ListenAddr,
    /// Verify client digests and record SHA-256.
    pub checksum_verification: bool,
    /// Shared state in Redis; `None` = embedded.
    pub redis: Option<RedisSettings>,
    /// Header read timeout and idle body read timeout.
    pub read_timeout: Duration,
    /// Idle response write timeout.
    pub write_timeout: Duration,
    /// I/O buffer per upload.
    pub buffer_bytes: usize,
    /// How long unfinished uploads and temporaries are kept.
    pub upload_expiry: Duration,
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
        if self.upload_sub_dir.is_empty() {
            "/".to_string()
        } else {
            format!("/{}/", self.upload_sub_dir)
        }
    }
}

fn build(r: &mut Reader<'_>) -> Option<Config> {
    let listen_text = r.text(&keys::LISTEN_PORT);
    let listen =
        ListenAddr::parse(&listen_text).unwrap_or_else(|e| r.fail(&keys::LISTEN_PORT, e, ListenAddr::AnyHost(8080)));

    let unix_enabled = r.boolean(&keys::UNIX_SOCKET);
    let unix_path = r.path(&keys::UNIX_SOCKET_PATH);
    let unix_socket = match (unix_enabled, unix_path) {
        (true, Some(p)) => Some(p),
        (true, None) => r.fail(&keys::UNIX_SOCKET_PATH, "UnixSocket = true needs UnixSocketPath", None),
        (false, _) => None,
    };

    let inline = r.text(&keys::SECRET);
    let secret_file = r.path(&keys::SECRET_FILE);
    let secret = match (&inline[..], &secret_file) {
        ("", None) => r.fail(
            &keys::SECRET,
            "no Secret or SecretFile: refusing to run with no HMAC key",
            None,
        ),
        (s, None) => Some(Secret::new(s.as_bytes())),
        ("", Some(path)) => match read_secret_file(path) {
            Ok(s) => Some(s),
            Err(e) => r.fail(&keys::SECRET_FILE, e, None),
        },
        (_, Some(_)) => r.fail(&keys::SECRET_FILE, "set Secret or SecretFile, not both", None),
    };
    if let Some(s) = &secret
        && s.expose().len() < 16
    {
        r.warn(format!(
            "Secret: only {} bytes; use at least 16 random bytes (e.g. `openssl rand -hex 32`)",
            s.expose().len()
        ));
    }
    let delete_text = r.text(&keys::DELETE_SECRET);
    let delete_secret = (!delete_text.is_empty()).then(|| Secret::new(delete_text.as_bytes()));

    let store_dir = PathBuf::from(r.text(&keys::STORE_DIR));
    if store_dir.as_os_str().is_empty() {
        r.fail(&keys::STORE_DIR, "must not be empty", ());
    }
    let upload_sub_dir = r.text(&keys::UPLOAD_SUB_DIR).trim_matches('/').to_string();
    if !upload_sub_dir.is_empty()
        && let Err(e) = crate::store::key::FileKey::parse_decoded(&upload_sub_dir)
    {
        r.fail(
            &keys::UPLOAD_SUB_DIR,
            format!("`{upload_sub_dir}` is not a usable folder name: {e}"),
            (),
        );
    }

    let log_level = r.text(&keys::LOG_LEVEL).to_ascii_lowercase();
    let log_level = match log_level.as_str() {
        "debug" | "info" | "warn" | "error" | "trace" => log_level,
        "warning" => "warn".to_string(),
        other => r.fail(
            &keys::LOG_LEVEL,
            format!("`{other}` is not debug, info, warn or error"),
            "info".to_string(),
        ),
    };
    let log_file = r.path(&keys::LOG_FILE);
    let log_format = match r.text(&keys::LOG_FORMAT).to_ascii_lowercase().as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => r.fail(
            &keys::LOG_FORMAT,
            format!("`{other}` is not text or json"),
            LogFormat::Text,
        ),
    };

    let max_upload_bytes = r.size(&keys::MAX_UPLOAD_SIZE);
    if max_upload_bytes == 0 {
        r.fail(&keys::MAX_UPLOAD_SIZE, "must be more than 0", ());
    }
    let max_retries = r.integer(&keys::MAX_RETRIES, 0..=100) as u32;
    let retry_delay = r.duration(&keys::RETRY_DELAY);
    let enable_get_retries = r.boolean(&keys::ENABLE_GET_RETRIES);
    let block_after_fails = r.integer(&keys::BLOCK_AFTER_FAILS, 0..=1_000_000) as u32;
    let block_duration = r.duration(&keys::BLOCK_DURATION);
    let auto_unban = r.boolean(&keys::AUTO_UNBAN);
    let auto_ban_time = r.duration(&keys::AUTO_BAN_TIME);
    let mut trusted_proxies = Vec::new();
    for text in r.list(&keys::TRUSTED_PROXIES) {
        let parsed = text
            .parse::<IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed {
            Ok(net) => trusted_proxies.push(net),
            Err(_) => r.fail(
                &keys::TRUSTED_PROXIES,
                format!("`{text}` is not an address or CIDR"),
                (),
            ),
        }
    }

    let delete_files = r.boolean(&keys::DELETE_FILES);
    let delete_files_after = r.duration(&keys::DELETE_FILES_AFTER_PERIOD);
    let retention_enabled = r.boolean(&keys::RETENTION_POLICY_ENABLED);
    let max_retention_bytes = r.size(&keys::MAX_RETENTION_SIZE);
    let max_retention_time = r.duration(&keys::MAX_RETENTION_TIME);
    let deletion_report_file = r.path(&keys::DELETION_REPORT_FILE);
    let cleanup_interval = r.duration(&keys::CLEANUP_INTERVAL);
    if cleanup_interval < Duration::from_secs(1) {
        r.fail(&keys::CLEANUP_INTERVAL, "must be at least 1s", ());
    }

    let num_cores = match r.raw(&keys::NUM_CORES) {
        None => None,
        Some(Value::Integer(n)) if *n >= 1 && *n <= 1024 => Some(*n as usize),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("auto") => None,
        Some(Value::String(s)) => match s.trim().parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Some(n),
            _ => r.fail(
                &keys::NUM_CORES,
                format!("`{s}` is not \"auto\" or a number of threads"),
                None,
            ),
        },
        Some(other) => r.fail(
            &keys::NUM_CORES,
            format!("`{other}` is not \"auto\" or a number of threads"),
            None,
        ),
    };

    let reask_secret = r.boolean(&keys::REASK_SECRET_ENABLED);
    let reask_secret_interval = r.duration(&keys::REASK_SECRET_INTERVAL);
    let metrics_enabled = r.boolean(&keys::METRICS_ENABLED);
    let metrics_text = r.text(&keys::METRICS_PORT);
    let metrics_listen =
        ListenAddr::parse(&metrics_text).unwrap_or_else(|e| r.fail(&keys::METRICS_PORT, e, ListenAddr::AnyHost(9090)));
    let checksum_verification = r.boolean(&keys::CHECKSUM_VERIFICATION);

    let redis_addr = r.text(&keys::REDIS_ADDR);
    let redis_password = r.text(&keys::REDIS_PASSWORD);
    let redis_db = r.integer(&keys::REDIS_DB, 0..=1_000_000);
    let redis = (!redis_addr.is_empty()).then(|| RedisSettings {
        addr: redis_addr,
        password: (!redis_password.is_empty()).then(|| Secret::new(redis_password.as_bytes())),
        db: redis_db,
    });

    let read_timeout = r.duration(&keys::READ_TIMEOUT);
    let write_timeout = r.duration(&keys::WRITE_TIMEOUT);
    for (key, value) in [
        (&keys::READ_TIMEOUT, read_timeout),
        (&keys::WRITE_TIMEOUT, write_timeout),
    ] {
        if value.is_zero() {
            r.fail(key, "must be more than 0", ());
        }
    }
    let buffer_bytes = r.size(&keys::BUFFER_SIZE);
    let buffer_bytes = if !(4096..=64 << 20).contains(&buffer_bytes) {
        r.fail(
            &keys::BUFFER_SIZE,
            format!("{buffer_bytes} is outside 4 KiB ..= 64 MiB"),
            65_536,
        )
    } else {
        buffer_bytes as usize
    };
    let upload_expiry = r.duration(&keys::UPLOAD_EXPIRY);
    if upload_expiry < Duration::from_secs(60) {
        r.fail(&keys::UPLOAD_EXPIRY, "must be at least 60s", ());
    }

    Some(Config {
        listen,
        unix_socket,
        secret: secret?,
        secret_file,
        delete_secret,
        store_dir,
        upload_sub_dir,
        log_level,
        log_file,
        log_format,
        max_upload_bytes,
        max_retries,
        retry_delay,
        enable_get_retries,
        block_after_fails,
        block_duration,
        auto_unban,
        auto_ban_time,
        trusted_proxies,
        delete_files,
        delete_files_after,
        retention_enabled,
        max_retention_bytes,
        max_retention_time,
        deletion_report_file,
        cleanup_interval,
        num_cores,
        reask_secret,
        reask_secret_interval,
        metrics_enabled,
        metrics_listen,
        checksum_verification,
        redis,
        read_timeout,
        write_timeout,
        buffer_bytes,
        upload_expiry,
        warnings: Vec::new(),
    })
}

/// Reads a secret file, stripping one trailing newline.
fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let mut bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_str(toml: &str, env: &[(&str, &str)], overrides: &[&str]) -> Result<Config, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(toml.as_bytes()).unwrap();
        Config::load(&Sources {
            file: Some(file.path().to_path_buf()),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            overrides: overrides.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn keys_of(err: ConfigError) -> Vec<String> {
        err.problems.into_iter().map(|p| p.key).collect()
    }

    #[test]
    fn defaults() {
        let c = load_str("Secret = \"0123456789abcdef\"", &[], &[]).unwrap();
        assert_eq!(c.listen, ListenAddr::AnyHost(8080));
        assert_eq!(c.upload_sub_dir, "upload");
        assert_eq!(c.max_upload_bytes, 100 << 20);
        assert_eq!(c.read_timeout, Duration::from_secs(900));
        assert_eq!(c.buffer_bytes, 65_536);
        assert_eq!(c.upload_expiry, Duration::from_secs(86_400));
        assert!(c.metrics_enabled);
        assert!(c.warnings.is_empty());
        assert_eq!(c.url_prefix(), "/upload/");
    }

    #[test]
    fn seed_config_loads() {
        let seed = r#"
ListenPort = ":8080"
UnixSocket = false
Secret = "mysecret"
StoreDir = "/data/uploads"
UploadSubDir = "uploads"
LogLevel = "info"
LogFile = "/var/log/hmac-file-server.log"
MaxRetries = 5
RetryDelay = 2
EnableGetRetries = true
BlockAfterFails = 3
BlockDuration = 300
AutoUnban = true
AutoBanTime = 600
DeleteFiles = true
DeleteFilesAfterPeriod = "30d"
NumCores = "auto"
ReaskSecretEnabled = true
ReaskSecretInterval = "24h"
MetricsEnabled = true
MetricsPort = ":9090"
ChecksumVerification = true
RetentionPolicyEnabled = true
MaxRetentionSize = 10737418240
MaxRetentionTime = "30d"
RedisAddr = "localhost:6379"
RedisPassword = ""
RedisDB = 0
ReadTimeout = 900
WriteTimeout = 900
BufferSize = 65536
"#;
        let c = load_str(seed, &[], &[]).unwrap();
        assert_eq!(c.max_retention_bytes, 10 << 30);
        assert_eq!(c.delete_files_after, Duration::from_secs(30 * 86_400));
        assert_eq!(c.block_duration, Duration::from_secs(300));
        assert_eq!(c.upload_sub_dir, "uploads");
        assert_eq!(c.redis.as_ref().unwrap().addr, "localhost:6379");
        assert!(c.redis.as_ref().unwrap().password.is_none());
        assert_eq!(c.warnings.len(), 1, "short secret warns: {:?}", c.warnings);
    }

    #[test]
    fn unknown_key_names_the_closest() {
        let err = load_str("Secret = \"0123456789abcdef\"\nMaxUploadSzie = \"1GB\"", &[], &[]).unwrap_err();
        assert_eq!(err.problems.len(), 1);
        assert_eq!(err.problems[0].key, "MaxUploadSzie");
        assert!(
            err.problems[0].message.contains("MaxUploadSize"),
            "{}",
            err.problems[0].message
        );
    }

    #[test]
    fn prosody_filer_spelling_is_accepted() {
        let c = load_str(
            "listenport = \"127.0.0.1:5050\"\nsecret = \"0123456789abcdef\"\nstoreDir = \"/srv/x\"\nuploadSubDir = \"up\"",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(c.listen, ListenAddr::Socket("127.0.0.1:5050".parse().unwrap()));
        assert_eq!(c.store_dir, PathBuf::from("/srv/x"));
        assert_eq!(c.upload_sub_dir, "up");
        let err = load_str("Secret = \"0123456789abcdef\"\nsecret = \"x\"", &[], &[]).unwrap_err();
        assert_eq!(err.problems.len(), 1);
    }

    #[test]
    fn unknown_environment_variables_are_errors() {
        let err = load_str(
            "Secret = \"0123456789abcdef\"",
            &[("HMAC_FILE_SERVER_MAX_UPLOAD_SIZ", "1")],
            &[],
        )
        .unwrap_err();
        assert_eq!(err.problems[0].key, "HMAC_FILE_SERVER_MAX_UPLOAD_SIZ");
        assert!(
            err.problems[0].message.contains("HMAC_FILE_SERVER_MAX_UPLOAD_SIZE"),
            "{}",
            err.problems[0].message
        );
        load_str("Secret = \"0123456789abcdef\"", &[("OTHER_VAR", "1")], &[]).unwrap();
    }

    #[test]
    fn warnings_come_with_errors() {
        let err = load_str("EnableVersioning = true\n[server]\nlisten_address = \"8080\"", &[], &[]).unwrap_err();
        assert_eq!(err.problems[0].key, "Secret");
        assert_eq!(err.warnings.len(), 2, "{:?}", err.warnings);
    }

    #[test]
    fn foreign_keys_warn() {
        let c = load_str(
            "Secret = \"0123456789abcdef\"\nEnableVersioning = true\n[clamav]\nx = 1",
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    }

    #[test]
    fn every_problem_is_reported() {
        let err = load_str(
            "ListenPort = \"nope\"\nMaxUploadSize = \"lots\"\nReadTimeout = \"soon\"\nLogFormat = \"xml\"\nBufferSize = 1",
            &[],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            keys_of(err),
            [
                "BufferSize",
                "ListenPort",
                "LogFormat",
                "MaxUploadSize",
                "ReadTimeout",
                "Secret"
            ]
        );
    }

    #[test]
    fn precedence_file_env_cli() {
        let toml = "Secret = \"0123456789abcdef\"\nListenPort = \":1000\"\nMaxUploadSize = 10";
        let c = load_str(toml, &[("HMAC_FILE_SERVER_LISTEN_PORT", "127.0.0.1:2000")], &[]).unwrap();
        assert_eq!(c.listen, ListenAddr::Socket("127.0.0.1:2000".parse().unwrap()));
        let c = load_str(
            toml,
            &[
                ("HMAC_FILE_SERVER_LISTEN_PORT", "127.0.0.1:2000"),
                ("HMAC_FILE_SERVER_MAX_UPLOAD_SIZE", "2KiB"),
            ],
            &["ListenPort=[::1]:3000"],
        )
        .unwrap();
        assert_eq!(c.listen, ListenAddr::Socket("[::1]:3000".parse().unwrap()));
        assert_eq!(c.max_upload_bytes, 2048);
        let err = load_str(toml, &[("HMAC_FILE_SERVER_UNIX_SOCKET", "maybe")], &[]).unwrap_err();
        assert_eq!(keys_of(err), ["UnixSocket"]);
    }

    #[test]
    fn listen_forms() {
        assert_eq!(ListenAddr::parse(":8080").unwrap(), ListenAddr::AnyHost(8080));
        assert_eq!(ListenAddr::parse("8080").unwrap(), ListenAddr::AnyHost(8080));
        assert_eq!(
            ListenAddr::parse("127.0.0.1:0").unwrap(),
            ListenAddr::Socket("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(
            ListenAddr::parse("[::1]:8080").unwrap(),
            ListenAddr::Socket("[::1]:8080".parse().unwrap())
        );
        assert_eq!(
            ListenAddr::parse("localhost:80").unwrap(),
            ListenAddr::Host("localhost".into(), 80)
        );
        assert!(ListenAddr::parse("8080000").is_err());
        assert!(ListenAddr::parse("host").is_err());
    }

    #[test]
    fn secret_file_strips_newline() {
        let mut secret = tempfile::NamedTempFile::new().unwrap();
        secret.write_all(b"from-a-file-0123456789\n").unwrap();
        let toml = format!("SecretFile = \"{}\"", secret.path().display());
        let c = load_str(&toml, &[], &[]).unwrap();
        assert_eq!(c.secret.expose(), b"from-a-file-0123456789");
        assert!(
            !format!("{c:?}").contains("from-a-file"),
            "Debug must not print the secret"
        );
        let both = format!("{toml}\nSecret = \"x\"");
        assert_eq!(keys_of(load_str(&both, &[], &[]).unwrap_err()), ["SecretFile"]);
    }

    /// Keys that `config.example.toml` sets to something else than the default, on purpose.
    const EXAMPLE_DIFFERS: &[(&str, &str)] = &[
        (
            "ListenPort",
            "a first try listens on loopback only, not on every interface",
        ),
        (
            "MetricsPort",
            "the metrics listener has no authentication: loopback in the example",
        ),
        ("Secret", "a placeholder the operator must replace; the default is none"),
    ];

    #[test]
    fn example_config_lists_every_key_and_loads() {
        let example = include_str!("../../config.example.toml");
        for key in keys::KEYS.iter().map(|k| k.name) {
            let listed = example.lines().any(|l| {
                let l = l.trim_start_matches("# ");
                l.starts_with(&format!("{key} =")) || l.starts_with(&format!("{key}="))
            });
            assert!(listed, "config.example.toml does not list {key}");
        }
        let c = load_str(example, &[], &[]).unwrap();
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn example_config_gives_the_defaults() {
        let example: toml::Table = include_str!("../../config.example.toml").parse().unwrap();
        for key in keys::KEYS {
            let Some(value) = example.get(key.name) else {
                continue; // commented out: the default applies
            };
            let given = reader::typed(key, value).unwrap();
            let default = reader::typed(key, &key.default_value().unwrap()).unwrap();
            let on_purpose = EXAMPLE_DIFFERS.iter().any(|(name, _)| *name == key.name);
            if on_purpose {
                assert_ne!(given, default, "{} is listed as differing but does not", key.name);
            } else {
                assert_eq!(
                    given, default,
                    "config.example.toml sets {} to {value}, its default is {}",
                    key.name, key.default
                );
            }
        }
    }

    #[test]
    fn bad_upload_sub_dir() {
        let err = load_str("Secret = \"0123456789abcdef\"\nUploadSubDir = \"../up\"", &[], &[]).unwrap_err();
        assert_eq!(keys_of(err), ["UploadSubDir"]);
        let c = load_str("Secret = \"0123456789abcdef\"\nUploadSubDir = \"\"", &[], &[]).unwrap();
        assert_eq!(c.url_prefix(), "/");
    }
}
