//! Retention: which finished files are deleted, how often that runs, where it is reported.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::keys;
use crate::config::reader::Reader;

/// Retention.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// Delete files older than `delete_files_after`.
    pub delete_files: bool,
    /// Age after which files are deleted.
    pub delete_files_after: Duration,
    /// Size and age limits on the store.
    pub enabled: bool,
    /// Store size limit (0 = none).
    pub max_retention_bytes: u64,
    /// Store age limit.
    pub max_retention_time: Duration,
    /// Where deletions are reported.
    pub deletion_report_file: Option<PathBuf>,
    /// How often sweeps run.
    pub cleanup_interval: Duration,
}

impl RetentionSettings {
    /// Reads and checks the group's keys; problems go to the reader.
    pub(in crate::config) fn read(r: &mut Reader<'_>) -> Self {
        let cleanup_interval = r.duration(&keys::CLEANUP_INTERVAL);
        if cleanup_interval < Duration::from_secs(1) {
            r.fail(&keys::CLEANUP_INTERVAL, "must be at least 1s", ());
        }
        Self {
            delete_files: r.boolean(&keys::DELETE_FILES),
            delete_files_after: r.duration(&keys::DELETE_FILES_AFTER_PERIOD),
            enabled: r.boolean(&keys::RETENTION_POLICY_ENABLED),
            max_retention_bytes: r.size(&keys::MAX_RETENTION_SIZE),
            max_retention_time: r.duration(&keys::MAX_RETENTION_TIME),
            deletion_report_file: r.path(&keys::DELETION_REPORT_FILE),
            cleanup_interval,
        }
    }
}
