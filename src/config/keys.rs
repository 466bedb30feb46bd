//! The table of configuration keys: each key is described once, as a [`Key`] (its name in the
//! seed's flat PascalCase, value kind, default, whether SIGHUP applies it, one line of doc).
//! The reader, the reload, the environment variable names, "did you mean", `keys` and the test
//! of `config.example.toml` all follow from [`KEYS`]. Also the keys of later Go servers that we
//! accept with a warning ([`FOREIGN_KEYS`]).

use toml::Value;

use Kind::{Bool, Duration, Integer, List, Size, Text, TextOrInteger};
use Reload::{Live, LiveExcept, Restart};

/// What kind of value a key takes; says how environment and `--set` text (and the defaults,
/// which are written the same way) become a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text.
    Text,
    /// `true` / `false`.
    Bool,
    /// A whole number.
    Integer,
    /// Seconds as an integer, or a duration string.
    Duration,
    /// Bytes as an integer, or a size string.
    Size,
    /// A list of strings (comma separated in the environment).
    List,
    /// `"auto"` or a number (NumCores).
    TextOrInteger,
}

impl Kind {
    /// The name `keys` prints.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Bool => "bool",
            Kind::Integer => "integer",
            Kind::Duration => "duration",
            Kind::Size => "size",
            Kind::List => "list",
            Kind::TextOrInteger => "text|integer",
        }
    }

    /// Turns text (an environment variable, `--set`, a default) into a TOML value of this kind.
    pub fn value_from_text(self, text: &str) -> Result<Value, String> {
        let text = text.trim();
        Ok(match self {
            Kind::Text | Kind::Duration | Kind::Size | Kind::TextOrInteger => Value::String(text.to_string()),
            Kind::Bool => match text.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Value::Boolean(true),
                "false" | "0" | "no" | "off" => Value::Boolean(false),
                _ => return Err(format!("`{text}` is not true or false")),
            },
            Kind::Integer => Value::Integer(text.parse().map_err(|_| format!("`{text}` is not a whole number"))?),
            Kind::List => Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_string()))
                    .collect(),
            ),
        })
    }
}

/// When a change to a key takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// SIGHUP applies it.
    Live,
    /// Only a restart applies it: SIGHUP keeps the running value and logs that the key changed.
    Restart,
    /// SIGHUP applies it, except to what is named here (e.g. "request heads"), which keeps the
    /// value from start until a restart; SIGHUP logs that.
    LiveExcept(&'static str),
}

impl Reload {
    /// How `keys` prints it.
    pub fn label(self) -> String {
        match self {
            Reload::Live => "live".to_string(),
            Reload::Restart => "restart".to_string(),
            Reload::LiveExcept(what) => format!("live (restart for {what})"),
        }
    }
}

/// One configuration key, described once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// The name in the file (PascalCase, as the Go servers spell it).
    pub name: &'static str,
    /// What kind of value it takes.
    pub kind: Kind,
    /// The default, written as an environment variable would give it (`""` = empty / none).
    pub default: &'static str,
    /// Whether SIGHUP applies a change.
    pub reload: Reload,
    /// One line on what it does.
    pub doc: &'static str,
}

impl Key {
    /// The environment variable that overrides this key.
    pub fn env_var(&self) -> String {
        env_var_name(self.name)
    }

    /// The default as a TOML value of the key's kind.
    pub fn default_value(&self) -> Result<Value, String> {
        self.kind.value_from_text(self.default)
    }

    /// The default as one would write it in the file: `":8080"`, `900`, `"100MiB"`, `[]`.
    pub fn default_in_toml(&self) -> String {
        let numeric = !self.default.is_empty() && self.default.bytes().all(|b| b.is_ascii_digit());
        match self.kind {
            Kind::Bool | Kind::Integer => self.default.to_string(),
            Kind::Duration | Kind::Size if numeric => self.default.to_string(),
            Kind::List if self.default.is_empty() => "[]".to_string(),
            Kind::List => format!("{:?}", self.default.split(',').map(str::trim).collect::<Vec<_>>()),
            _ => format!("{:?}", self.default),
        }
    }
}

/// Declares one `pub const` per key (its rustdoc is the key's doc line) and [`KEYS`], so no key
/// can be left out of the list.
macro_rules! keys {
    ($($ident:ident: $name:literal, $kind:expr, $default:literal, $reload:expr, $doc:literal;)*) => {
        $(
            #[doc = concat!("`", $name, "`:\n\n```text\n", $doc, "\n```")]
            pub const $ident: Key = Key { name: $name, kind: $kind, default: $default, reload: $reload, doc: $doc };
        )*
        /// Every key this server understands, in the order of `config.example.toml`.
        pub const KEYS: &[&Key] = &[$(&$ident),*];
    };
}

keys! {
    // IDENT: "Name", kind, default (as an environment variable gives it), reload, "doc line";
    LISTEN_PORT: "ListenPort", Text, ":8080", Restart,
        r#"Where to listen: ":8080" (all interfaces), "8080", "127.0.0.1:8080", "[::1]:8080"; port 0 picks a free port."#;
    UNIX_SOCKET: "UnixSocket", Bool, "false", Restart,
        "Listen on UnixSocketPath instead of TCP.";
    UNIX_SOCKET_PATH: "UnixSocketPath", Text, "", Restart,
        "Socket path, required with UnixSocket = true; a stale socket is replaced, mode 0660.";
    SECRET: "Secret", Text, "", Live,
        "The HMAC key shared with the XMPP server; Secret or SecretFile is required.";
    SECRET_FILE: "SecretFile", Text, "", Live,
        "Read the HMAC key from this regular file of at most 64 KiB instead (one trailing newline stripped); not with Secret.";
    DELETE_SECRET: "DeleteSecret", Text, "", Live,
        "Metronome's http_file_delete_secret, for DELETE ?token=; empty = the same as Secret.";
    STORE_DIR: "StoreDir", Text, "./data", Restart,
        "Root of the local store.";
    UPLOAD_SUB_DIR: "UploadSubDir", Text, "upload", Restart,
        r#"URL prefix /<UploadSubDir>/ and the folder under StoreDir that holds the files; "" = served at /."#;
    STORE_BACKEND: "StoreBackend", Text, "local", Restart,
        "Where finished files live: local (StoreDir/UploadSubDir) or s3 (an S3-compatible bucket).";
    S3_ENDPOINT: "S3Endpoint", Text, "", Restart,
        "S3 API address, e.g. http://127.0.0.1:3900 (Garage); empty = AWS S3 in S3Region.";
    S3_REGION: "S3Region", Text, "us-east-1", Restart,
        "Region the requests are signed for (Garage: its s3_region, often garage).";
    S3_BUCKET: "S3Bucket", Text, "", Restart,
        "The bucket; required with StoreBackend = s3.";
    S3_PREFIX: "S3Prefix", Text, "", Restart,
        "Prefix of every object's key (a / is added); empty = the bucket's root.";
    S3_ACCESS_KEY_ID: "S3AccessKeyId", Text, "", Restart,
        "Access key id; AWS_ACCESS_KEY_ID in the environment also works.";
    S3_SECRET_ACCESS_KEY: "S3SecretAccessKey", Text, "", Restart,
        "Secret access key; or S3SecretAccessKeyFile, or AWS_SECRET_ACCESS_KEY in the environment.";
    S3_SECRET_ACCESS_KEY_FILE: "S3SecretAccessKeyFile", Text, "", Restart,
        "Read the secret access key from this file instead (one trailing newline stripped).";
    S3_PATH_STYLE: "S3PathStyle", Bool, "true", Restart,
        "Path-style addresses (endpoint/bucket/key), as Garage and MinIO need; false = bucket.endpoint.";
    S3_PART_SIZE: "S3PartSize", Size, "8MiB", Restart,
        "Part size of multipart uploads, 5 MiB to 5 GiB; bodies up to it go up in one request.";
    STATE_DIR: "StateDir", Text, "", Restart,
        "Folder of the embedded state (unfinished resumable uploads, bans); empty = StoreDir/.hmac-file-server.";
    LOG_LEVEL: "LogLevel", Text, "info", Live,
        "debug, info, warn or error.";
    LOG_FILE: "LogFile", Text, "", Restart,
        "Log file, appended to and reopened on SIGHUP; empty = standard error.";
    LOG_FORMAT: "LogFormat", Text, "text", Restart,
        "text, or json for machines.";
    MAX_UPLOAD_SIZE: "MaxUploadSize", Size, "100MiB", Live,
        "Largest upload; a larger PUT or tus upload gets 413 before any byte is read.";
    MAX_RETRIES: "MaxRetries", Integer, "5", Restart,
        "Retries (0-100) of transient storage errors.";
    RETRY_DELAY: "RetryDelay", Duration, "2", Restart,
        "Pause between those retries.";
    ENABLE_GET_RETRIES: "EnableGetRetries", Bool, "true", Restart,
        "Retry downloads' storage reads too.";
    BLOCK_AFTER_FAILS: "BlockAfterFails", Integer, "3", Live,
        "Failed authentications within BlockDuration that ban a client address; 0 = no bans.";
    BLOCK_DURATION: "BlockDuration", Duration, "300", Live,
        "The window in which failed authentications are counted.";
    AUTO_UNBAN: "AutoUnban", Bool, "true", Live,
        "Lift bans after AutoBanTime; false = until unban or a restart.";
    AUTO_BAN_TIME: "AutoBanTime", Duration, "600", Live,
        "How long a ban lasts.";
    TRUSTED_PROXIES: "TrustedProxies", List, "", Live,
        "Addresses or CIDRs of proxies whose X-Forwarded-For / X-Real-IP is believed.";
    DELETE_FILES: "DeleteFiles", Bool, "false", Live,
        "Delete files older than DeleteFilesAfterPeriod.";
    DELETE_FILES_AFTER_PERIOD: "DeleteFilesAfterPeriod", Duration, "30d", Live,
        "Age after which DeleteFiles deletes a file.";
    RETENTION_POLICY_ENABLED: "RetentionPolicyEnabled", Bool, "false", Live,
        "Enforce MaxRetentionSize and MaxRetentionTime.";
    MAX_RETENTION_SIZE: "MaxRetentionSize", Size, "0", Live,
        "Store size limit, oldest files deleted first; 0 = no limit.";
    MAX_RETENTION_TIME: "MaxRetentionTime", Duration, "30d", Live,
        "Store age limit.";
    DELETION_REPORT_FILE: "DeletionReportFile", Text, "", Live,
        "Append one tab-separated line per deleted file (time, path, size, age, reason); must be writable; empty = none.";
    CLEANUP_INTERVAL: "CleanupInterval", Duration, "1h", Live,
        "How often retention and the sweeps of stale temporaries and expired uploads run (also at start).";
    NUM_CORES: "NumCores", TextOrInteger, "auto", Restart,
        r#"Worker threads: "auto" (one per core) or 1-1024."#;
    REASK_SECRET_ENABLED: "ReaskSecretEnabled", Bool, "false", Live,
        "Also re-read Secret / SecretFile every ReaskSecretInterval, not only on SIGHUP.";
    REASK_SECRET_INTERVAL: "ReaskSecretInterval", Duration, "24h", Live,
        "How often the secret is re-read, and how long the previous one stays valid after a change (at least 1s).";
    METRICS_ENABLED: "MetricsEnabled", Bool, "true", Restart,
        "Second listener with /metrics and /health.";
    METRICS_PORT: "MetricsPort", Text, ":9090", Restart,
        "Where that listener listens, in ListenPort's forms; it has no authentication.";
    CHECKSUM_VERIFICATION: "ChecksumVerification", Bool, "false", Live,
        "Check Content-Digest / Repr-Digest sent with a PUT and record the SHA-256 of every file.";
    REDIS_ADDR: "RedisAddr", Text, "", Restart,
        r#"Empty = embedded state; "host:port" or "unix:/path" = state, locks and bans shared in Redis."#;
    REDIS_PASSWORD: "RedisPassword", Text, "", Restart,
        "Redis password, if any.";
    REDIS_DB: "RedisDB", Integer, "0", Restart,
        "Redis database number.";
    READ_TIMEOUT: "ReadTimeout", Duration, "900", LiveExcept("request heads"),
        "Time allowed to send the request head, and the longest pause inside a body.";
    WRITE_TIMEOUT: "WriteTimeout", Duration, "900", Restart,
        "Longest pause while sending a response.";
    BUFFER_SIZE: "BufferSize", Size, "65536", Restart,
        "I/O buffer per upload, 4 KiB-64 MiB.";
    UPLOAD_EXPIRY: "UploadExpiry", Duration, "24h", Live,
        "How long an unfinished resumable upload is kept after its last write (at least 60s).";
    MAX_UNFINISHED_SIZE: "MaxUnfinishedSize", Size, "10GiB", Live,
        "Most bytes all unfinished resumable uploads may hold together; more gets 507; 0 = no limit.";
}

/// Keys (and sections) that later versions of the Go hmac-file-server use and this server
/// does not: a config file that has them still starts, with a warning.
pub const FOREIGN_KEYS: &[&str] = &[
    "EnableVersioning",
    "MaxVersions",
    "VersioningEnabled",
    "DeduplicationEnabled",
    "ClamAVEnabled",
    "ClamAVSocket",
    "NumScanWorkers",
    "NumWorkers",
    "UploadQueueSize",
    "FileTTL",
    "FileTTLEnabled",
    "ResumableUploadsEnabled",
    "ResumableDownloadsEnabled",
    "ChunkedUploadsEnabled",
    "ChunkSize",
    "AllowedExtensions",
    "EnableIPv4",
    "EnableIPv6",
    "ISOEnabled",
    "GracefulShutdownTimeout",
    "VersioningDirectory",
    "VersioningStrategy",
    "MinFreeSpaceThreshold",
    "DeleteFilesReport",
    "DeleteFilesReportPath",
    "network_resilience",
    "client_network_support",
    "audit",
    "validation",
    "quotas",
    "admin",
    "rate_limit",
    "key_rotation",
    "metadata",
    "PreCaching",
    "RedisEnabled",
    "RedisHealthCheckInterval",
    "MinFreeBytes",
    "FileNaming",
    "ForceProtocol",
    "server",
    "timeouts",
    "security",
    "logging",
    "deduplication",
    "iso",
    "versioning",
    "uploads",
    "downloads",
    "clamav",
    "redis",
    "workers",
    "file",
    "build",
];

/// A known key, by its exact name.
pub fn by_name(name: &str) -> Option<&'static Key> {
    KEYS.iter().copied().find(|key| key.name == name)
}

/// A known key, by its name in any case (prosody-filer writes `listenport`, `storeDir`).
pub fn by_name_ignoring_case(name: &str) -> Option<&'static Key> {
    KEYS.iter().copied().find(|key| key.name.eq_ignore_ascii_case(name))
}

/// The known key whose environment variable is `var`.
pub fn by_env_var(var: &str) -> Option<&'static Key> {
    KEYS.iter().copied().find(|key| key.env_var() == var)
}

/// Every key as text for operators (the `keys` command): name, kind, default, when a change
/// takes effect, environment variable, and the doc line beneath.
pub fn describe() -> String {
    let rows: Vec<[String; 5]> = KEYS
        .iter()
        .map(|k| {
            [
                k.name.to_string(),
                k.kind.label().to_string(),
                k.default_in_toml(),
                k.reload.label(),
                k.env_var(),
            ]
        })
        .collect();
    let header = ["KEY", "KIND", "DEFAULT", "CHANGE", "ENVIRONMENT"].map(String::from);
    let mut widths = [0; 5];
    for row in rows.iter().chain([&header]) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |row: &[String; 5]| {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        cells.join("  ").trim_end().to_string()
    };
    let indent = " ".repeat(widths[0] + 2);
    let mut out = line(&header) + "\n";
    for (row, key) in rows.iter().zip(KEYS) {
        out += &line(row);
        out += &format!("\n{indent}{}\n", key.doc);
    }
    out
}

/// The known key closest to `unknown`, for "did you mean" messages.
pub fn closest(unknown: &str) -> Option<&'static str> {
    let lower = unknown.to_ascii_lowercase();
    KEYS.iter()
        .map(|key| (key.name, strsim::jaro_winkler(&lower, &key.name.to_ascii_lowercase())))
        .filter(|(_, score)| *score > 0.7)
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(name, _)| name)
}

/// `ListenPort` → `HMAC_FILE_SERVER_LISTEN_PORT`; `RedisDB` → `HMAC_FILE_SERVER_REDIS_DB`.
pub fn env_var_name(key: &str) -> String {
    let mut out = String::from("HMAC_FILE_SERVER_");
    let chars: Vec<char> = key.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            let prev_lower = chars[i - 1].is_ascii_lowercase();
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
            if prev_lower || (chars[i - 1].is_ascii_uppercase() && next_lower) {
                out.push('_');
            }
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        assert_eq!(env_var_name("ListenPort"), "HMAC_FILE_SERVER_LISTEN_PORT");
        assert_eq!(env_var_name("RedisDB"), "HMAC_FILE_SERVER_REDIS_DB");
        assert_eq!(env_var_name("MaxUploadSize"), "HMAC_FILE_SERVER_MAX_UPLOAD_SIZE");
        assert_eq!(env_var_name("Secret"), "HMAC_FILE_SERVER_SECRET");
        assert_eq!(env_var_name("NumCores"), "HMAC_FILE_SERVER_NUM_CORES");
    }

    #[test]
    fn env_names_are_unique() {
        let mut names: Vec<String> = KEYS.iter().map(|k| k.env_var()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KEYS.len());
    }

    #[test]
    fn every_key_is_documented_and_its_default_parses() {
        for key in KEYS {
            assert!(!key.doc.trim().is_empty(), "{} has no doc line", key.name);
            assert!(key.doc.lines().count() == 1, "{}: the doc is one line", key.name);
            let value = key
                .default_value()
                .unwrap_or_else(|e| panic!("{}: default {:?}: {e}", key.name, key.default));
            crate::config::reader::typed(key, &value)
                .unwrap_or_else(|e| panic!("{}: default {:?}: {e}", key.name, key.default));
        }
    }

    #[test]
    fn names_are_unique_in_any_case() {
        for key in KEYS {
            assert_eq!(by_name_ignoring_case(&key.name.to_ascii_lowercase()), Some(*key));
            assert_eq!(by_name(key.name), Some(*key));
            assert_eq!(by_env_var(&key.env_var()), Some(*key));
        }
    }

    #[test]
    fn defaults_in_toml() {
        assert_eq!(LISTEN_PORT.default_in_toml(), "\":8080\"");
        assert_eq!(READ_TIMEOUT.default_in_toml(), "900");
        assert_eq!(MAX_UPLOAD_SIZE.default_in_toml(), "\"100MiB\"");
        assert_eq!(TRUSTED_PROXIES.default_in_toml(), "[]");
        assert_eq!(UNIX_SOCKET.default_in_toml(), "false");
        assert_eq!(MAX_RETRIES.default_in_toml(), "5");
    }

    #[test]
    fn describe_lists_every_key() {
        let text = describe();
        assert!(text.starts_with("KEY "));
        for key in KEYS {
            let line = text
                .lines()
                .find(|l| l.split_whitespace().next() == Some(key.name))
                .unwrap_or_else(|| panic!("{} is not described", key.name));
            assert!(line.contains(&key.default_in_toml()), "{line}");
            assert!(line.contains(&key.reload.label()), "{line}");
            assert!(line.ends_with(&key.env_var()), "{line}");
            assert!(text.contains(key.doc), "{}", key.name);
        }
    }

    #[test]
    fn closest_key() {
        assert_eq!(closest("MaxUploadSzie"), Some("MaxUploadSize"));
        assert_eq!(closest("listenport"), Some("ListenPort"));
        assert_eq!(closest("Secrett"), Some("Secret"));
        assert_eq!(closest("zzzzzzzzzzzz"), None);
    }
}
