//! Retention: DeleteFiles (files older than DeleteFilesAfterPeriod) and
//! RetentionPolicyEnabled (files older than MaxRetentionTime, then the oldest until the store
//! is under MaxRetentionSize). One pass lists the finished files only ([`Store::list`]:
//! uploads in progress are never touched) and also counts the store for the `store_files` /
//! `store_bytes` gauges. With several instances, one runs it (the leader of periodic work). Every deletion is logged, counted and, with
//! DeletionReportFile, appended there as `time path size age_seconds reason`, tab-separated.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;

use crate::config::Config;
use crate::metrics;
use crate::store::{Listed as Seen, Store};

/// What a pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PassReport {
    /// Files in the store before the pass.
    pub files: u64,
    /// Bytes in the store before the pass.
    pub bytes: u64,
    /// Files deleted.
    pub deleted: u64,
    /// Bytes freed.
    pub freed: u64,
    /// Unfinished resumable uploads with bytes kept.
    pub unfinished_uploads: u64,
    /// Their bytes: they count against MaxRetentionSize with the finished files.
    pub unfinished_bytes: u64,
}

/// Why a file was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Older than DeleteFilesAfterPeriod.
    DeleteAfterPeriod,
    /// Older than MaxRetentionTime.
    MaxRetentionTime,
    /// The store was over MaxRetentionSize; oldest first.
    MaxRetentionSize,
}

impl Reason {
    /// The label in metrics and reports.
    pub fn label(self) -> &'static str {
        let [after_period, max_time, max_size] = metrics::RETENTION_REASONS;
        match self {
            Reason::DeleteAfterPeriod => after_period,
            Reason::MaxRetentionTime => max_time,
            Reason::MaxRetentionSize => max_size,
        }
    }
}

/// Runs one pass: counts the store and deletes what the settings say must go.
pub async fn pass(store: &Store, config: &Config) -> PassReport {
    let mut seen = Vec::new();
    let mut listing = store.list();
    while let Some(item) = listing.next().await {
        match item {
            Ok(file) => seen.push(file),
            Err(e) => {
                tracing::error!(error = %e, "retention cannot list the store");
                return PassReport::default();
            }
        }
    }
    let unfinished = match store.partials().usage().await {
        Ok(usage) => usage,
        Err(e) => {
            tracing::warn!(error = %e, "retention cannot count the unfinished uploads");
            Default::default()
        }
    };
    metrics::unfinished_counted(unfinished.uploads, unfinished.bytes);
    let mut report = PassReport {
        files: seen.len() as u64,
        bytes: seen.iter().map(|s| s.size).sum(),
        unfinished_uploads: unfinished.uploads,
        unfinished_bytes: unfinished.bytes,
        ..PassReport::default()
    };
    let now = SystemTime::now();
    let plan = plan(seen, config, now, unfinished.bytes);
    for (file, reason) in plan {
        match store.delete(&file.key).await {
            Ok(size) => {
                report.deleted += 1;
                report.freed += size;
                metrics::retention_deleted(reason.label());
                let age = now.duration_since(file.modified).unwrap_or_default();
                tracing::info!(path = %file.key, size, age_seconds = age.as_secs(), reason = reason.label(), "retention deleted a file");
                if let Some(path) = &config.retention.deletion_report_file {
                    append_report(path, &file, age, reason, now);
                }
            }
            Err(crate::store::StoreError::NotFound) => {}
            Err(e) => tracing::warn!(path = %file.key, error = %e, "retention could not delete a file"),
        }
    }
    metrics::store_counted(report.files - report.deleted, report.bytes - report.freed);
    report
}

/// Which files go, and why, in deletion order. `unfinished_bytes`, what unfinished uploads
/// hold, counts against MaxRetentionSize too (they are left to UploadExpiry and
/// MaxUnfinishedSize, not deleted here).
fn plan(mut seen: Vec<Seen>, config: &Config, now: SystemTime, unfinished_bytes: u64) -> Vec<(Seen, Reason)> {
    let age = |s: &Seen| now.duration_since(s.modified).unwrap_or(Duration::ZERO);
    let mut doomed = Vec::new();
    let mut keep = Vec::with_capacity(seen.len());
    for s in seen.drain(..) {
        if config.retention.delete_files && age(&s) > config.retention.delete_files_after {
            doomed.push((s, Reason::DeleteAfterPeriod));
        } else if config.retention.enabled && age(&s) > config.retention.max_retention_time {
            doomed.push((s, Reason::MaxRetentionTime));
        } else {
            keep.push(s);
        }
    }
    if config.retention.enabled && config.retention.max_retention_bytes > 0 {
        let mut total: u64 = keep.iter().map(|s| s.size).sum::<u64>() + unfinished_bytes;
        if total > config.retention.max_retention_bytes {
            keep.sort_by_key(|s| s.modified);
            for s in keep {
                if total <= config.retention.max_retention_bytes {
                    break;
                }
                total -= s.size;
                doomed.push((s, Reason::MaxRetentionSize));
            }
        }
    }
    doomed
}

fn append_report(path: &Path, file: &Seen, age: Duration, reason: Reason, now: SystemTime) {
    let line = format!(
        "{}\t{}\t{}\t{}\t{}\n",
        humantime::format_rfc3339_seconds(now),
        file.key,
        file.size,
        age.as_secs(),
        reason.label()
    );
    let result = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot append to DeletionReportFile");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Sources;
    use crate::key::FileKey;

    fn config(extra: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        fs::write(&path, format!("Secret = \"0123456789abcdef\"\n{extra}")).unwrap();
        Config::load(&Sources {
            file: Some(path),
            ..Sources::default()
        })
        .unwrap()
    }

    fn seen(name: &str, size: u64, age_secs: u64, now: SystemTime) -> Seen {
        Seen {
            key: FileKey::parse_decoded(name).unwrap(),
            size,
            modified: now - Duration::from_secs(age_secs),
        }
    }

    #[test]
    fn plans_by_age_then_size_oldest_first() {
        let now = SystemTime::now();
        let files = vec![
            seen("a/old", 10, 100 * 86_400, now),
            seen("b/mid", 40, 3 * 86_400, now),
            seen("c/new", 40, 60, now),
            seen("d/older", 40, 5 * 86_400, now),
        ];
        let c = config("RetentionPolicyEnabled = true\nMaxRetentionTime = \"30d\"\nMaxRetentionSize = 50");
        let doomed: Vec<_> = plan(files.clone(), &c, now, 0)
            .into_iter()
            .map(|(s, r)| (s.key.to_string(), r))
            .collect();
        assert_eq!(
            doomed,
            vec![
                ("a/old".to_string(), Reason::MaxRetentionTime),
                ("d/older".to_string(), Reason::MaxRetentionSize),
                ("b/mid".to_string(), Reason::MaxRetentionSize),
            ]
        );
        let c = config("DeleteFiles = true\nDeleteFilesAfterPeriod = \"4d\"");
        let doomed: Vec<_> = plan(files.clone(), &c, now, 0)
            .into_iter()
            .map(|(s, _)| s.key.to_string())
            .collect();
        assert_eq!(doomed, ["a/old", "d/older"]);
        assert!(
            plan(files.clone(), &config(""), now, 0).is_empty(),
            "nothing goes by default"
        );
        // Unfinished uploads' bytes count against the size limit: 45 of them leave room for
        // only "c/new" (40) of the 50.
        let c = config("RetentionPolicyEnabled = true\nMaxRetentionSize = 50");
        let young: Vec<_> = files.into_iter().filter(|s| s.key.as_str() != "a/old").collect();
        let doomed: Vec<_> = plan(young, &c, now, 45)
            .into_iter()
            .map(|(s, _)| s.key.to_string())
            .collect();
        assert_eq!(
            doomed,
            ["d/older", "b/mid", "c/new"],
            "50 - 45 leaves room for nothing of 40"
        );
    }

    #[tokio::test]
    async fn pass_deletes_reports_and_spares_temporaries() {
        use crate::store::{Hashing, LocalStore, RetryPolicy};
        let dir = tempfile::tempdir().unwrap();
        let local = LocalStore::open(dir.path(), "upload", 4096, RetryPolicy::NONE).unwrap();
        let store = Store::Local(local.clone());
        let old = dir.path().join("upload/x/old.bin");
        fs::create_dir_all(old.parent().unwrap()).unwrap();
        fs::write(&old, b"0123456789").unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(40 * 86_400);
        fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        fs::write(dir.path().join("upload/fresh.bin"), b"abc").unwrap();
        let mut staged = local.stage(Hashing::NONE);
        staged.write(bytes::Bytes::from_static(b"in progress")).await.unwrap();
        staged.sync().await.unwrap();
        let report_file = dir.path().join("deletions.log");
        let c = config(&format!(
            "DeleteFiles = true\nDeleteFilesAfterPeriod = \"30d\"\nDeletionReportFile = \"{}\"",
            report_file.display()
        ));
        let report = pass(&store, &c).await;
        assert_eq!(
            report,
            PassReport {
                files: 2,
                bytes: 13,
                deleted: 1,
                freed: 10,
                unfinished_uploads: 0,
                unfinished_bytes: 0,
            }
        );
        assert!(!old.exists() && !dir.path().join("upload/x").exists());
        assert!(dir.path().join("upload/fresh.bin").exists());
        let line = fs::read_to_string(&report_file).unwrap();
        let fields: Vec<&str> = line.trim_end().split('\t').collect();
        assert_eq!(fields[1..], ["x/old.bin", "10", fields[3], "delete_files_after_period"]);
        assert!(fields[3].parse::<u64>().unwrap() >= 40 * 86_400);
        assert_eq!(staged.len(), 11, "the upload in progress is untouched");
        assert_eq!(local.temporaries(), 1, "the upload in progress is still there");
    }

    /// `cargo test --release retention_pass_over_100k -- --ignored --nocapture`
    #[tokio::test]
    #[ignore = "a measurement, not a check: run it by hand"]
    async fn retention_pass_over_100k_files() {
        use crate::store::{LocalStore, RetryPolicy};
        let dir = tempfile::tempdir_in("/dev/shm").unwrap_or_else(|_| tempfile::tempdir().unwrap());
        let store = Store::Local(LocalStore::open(dir.path(), "upload", 4096, RetryPolicy::NONE).unwrap());
        for i in 0..100_000u32 {
            let d = dir.path().join(format!("upload/{:03}", i % 1000));
            if i < 1000 {
                fs::create_dir_all(&d).unwrap();
            }
            fs::write(d.join(format!("f{i}")), b"x").unwrap();
        }
        let c = config("RetentionPolicyEnabled = true\nMaxRetentionTime = \"30d\"\nMaxRetentionSize = \"1GiB\"");
        let started = std::time::Instant::now();
        let report = pass(&store, &c).await;
        println!("retention pass over {} files: {:?}", report.files, started.elapsed());
        assert_eq!(report.files, 100_000);
    }
}
