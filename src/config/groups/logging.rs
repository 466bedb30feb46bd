//! Log level, file and format.

use std::path::PathBuf;

use crate::config::keys;
use crate::config::reader::Reader;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// Log file; `None` = standard error.
    pub file: Option<PathBuf>,
    /// Log line format.
    pub format: LogFormat,
}

impl LogSettings {
    /// Reads and checks the group's keys; problems go to the reader.
    pub(in crate::config) fn read(r: &mut Reader<'_>) -> Self {
        let level = r.text(&keys::LOG_LEVEL).to_ascii_lowercase();
        let log_level = match level.as_str() {
            "debug" | "info" | "warn" | "error" | "trace" => level,
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
        Self {
            level: log_level,
            file: log_file,
            format: log_format,
        }
    }
}
