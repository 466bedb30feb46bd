//! The table of configuration keys: their names (the seed's flat PascalCase), value kinds,
//! the environment variable that overrides each, and the keys of later Go servers that we
//! accept with a warning.

/// What kind of value a key takes; used to read environment and `--set` overrides, which
/// arrive as text.
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

/// Every key this server understands.
pub const KEYS: &[(&str, Kind)] = &[
    ("ListenPort", Kind::Text),
    ("UnixSocket", Kind::Bool),
    ("UnixSocketPath", Kind::Text),
    ("Secret", Kind::Text),
    ("SecretFile", Kind::Text),
    ("DeleteSecret", Kind::Text),
    ("StoreDir", Kind::Text),
    ("UploadSubDir", Kind::Text),
    ("LogLevel", Kind::Text),
    ("LogFile", Kind::Text),
    ("LogFormat", Kind::Text),
    ("MaxUploadSize", Kind::Size),
    ("MaxRetries", Kind::Integer),
    ("RetryDelay", Kind::Duration),
    ("EnableGetRetries", Kind::Bool),
    ("BlockAfterFails", Kind::Integer),
    ("BlockDuration", Kind::Duration),
    ("AutoUnban", Kind::Bool),
    ("AutoBanTime", Kind::Duration),
    ("TrustedProxies", Kind::List),
    ("DeleteFiles", Kind::Bool),
    ("DeleteFilesAfterPeriod", Kind::Duration),
    ("RetentionPolicyEnabled", Kind::Bool),
    ("MaxRetentionSize", Kind::Size),
    ("MaxRetentionTime", Kind::Duration),
    ("DeletionReportFile", Kind::Text),
    ("CleanupInterval", Kind::Duration),
    ("NumCores", Kind::TextOrInteger),
    ("ReaskSecretEnabled", Kind::Bool),
    ("ReaskSecretInterval", Kind::Duration),
    ("MetricsEnabled", Kind::Bool),
    ("MetricsPort", Kind::Text),
    ("ChecksumVerification", Kind::Bool),
    ("RedisAddr", Kind::Text),
    ("RedisPassword", Kind::Text),
    ("RedisDB", Kind::Integer),
    ("ReadTimeout", Kind::Duration),
    ("WriteTimeout", Kind::Duration),
    ("BufferSize", Kind::Size),
    ("UploadExpiry", Kind::Duration),
];

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

/// The kind of a known key, by its exact name.
pub fn kind_of(key: &str) -> Option<Kind> {
    KEYS.iter().find(|(name, _)| *name == key).map(|(_, kind)| *kind)
}

/// The known key closest to `unknown`, for "did you mean" messages.
pub fn closest(unknown: &str) -> Option<&'static str> {
    let lower = unknown.to_ascii_lowercase();
    KEYS.iter()
        .map(|(name, _)| (*name, strsim::jaro_winkler(&lower, &name.to_ascii_lowercase())))
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
        let mut names: Vec<String> = KEYS.iter().map(|(k, _)| env_var_name(k)).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KEYS.len());
    }

    #[test]
    fn closest_key() {
        assert_eq!(closest("MaxUploadSzie"), Some("MaxUploadSize"));
        assert_eq!(closest("listenport"), Some("ListenPort"));
        assert_eq!(closest("Secrett"), Some("Secret"));
        assert_eq!(closest("zzzzzzzzzzzz"), None);
    }
}
