//! Retention: which finished files are deleted, how often that runs, where it is reported.

use std::path::{Path, PathBuf};
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
        let deletion_report_file = r.path(&keys::DELETION_REPORT_FILE);
        if let Some(path) = &deletion_report_file
            && let Err(e) = appendable(path)
        {
            r.fail(&keys::DELETION_REPORT_FILE, e, ());
        }
        Self {
            delete_files: r.boolean(&keys::DELETE_FILES),
            delete_files_after: r.duration(&keys::DELETE_FILES_AFTER_PERIOD),
            enabled: r.boolean(&keys::RETENTION_POLICY_ENABLED),
            max_retention_bytes: r.size(&keys::MAX_RETENTION_SIZE),
            max_retention_time: r.duration(&keys::MAX_RETENTION_TIME),
            deletion_report_file,
            cleanup_interval,
        }
    }
}

/// Whether the report file can be appended to, without creating it (`check-config` must not
/// leave files behind): an existing one must not be a folder and must be writable; a new one
/// needs a folder we may create files in. Checked with `access(2)`, so for the user who runs
/// the check (run `check-config` as the service's user); a mistake found here would otherwise
/// show only as a WARN per deleted file, with the deletions unreported.
fn appendable(path: &Path) -> Result<(), String> {
    use rustix::fs::{Access, access};
    let shown = path.display();
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(format!("{shown} is a folder; name a file in it")),
        Ok(_) => {
            access(path, Access::WRITE_OK).map_err(|e| format!("cannot write {shown}: {}", std::io::Error::from(e)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let folder = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let shown_folder = folder.display();
            match std::fs::metadata(folder) {
                Ok(meta) if meta.is_dir() => access(folder, Access::WRITE_OK | Access::EXEC_OK).map_err(|e| {
                    format!(
                        "cannot create {shown}: no write access to {shown_folder}: {}",
                        std::io::Error::from(e)
                    )
                }),
                Ok(_) => Err(format!("cannot create {shown}: {shown_folder} is not a folder")),
                Err(e) => Err(format!("cannot create {shown}: {shown_folder}: {e}")),
            }
        }
        Err(e) => Err(format!("cannot reach {shown}: {e}")),
    }
}
