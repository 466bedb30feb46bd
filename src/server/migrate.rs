//! `migrate-to-s3`: copies the finished files of the local store (`StoreDir`/`UploadSubDir`,
//! as the local backend keeps them) into the bucket that the same configuration names with
//! `StoreBackend = "s3"`, through the two stores' own seams: each file is streamed (memory
//! stays bounded whatever its size) into an upload that the bucket commits only whole and
//! only where no object is, with the content type and SHA-256 its metadata recorded. A file
//! already in the bucket at the same size is left alone, so the command can run again after
//! an interruption, or once more after the old server stopped to pick up the last uploads.
//! The local files stay: removing them is the operator's step after checking the bucket.
//!
//! What does not move: unfinished resumable uploads (their clients start again), bans, and
//! the upload times (an object's time is when it was copied, so retention by age counts
//! from the migration).

use std::sync::Arc;

use futures_util::StreamExt;

use super::{StartupError, open_local, open_store, open_upload_state};
use crate::config::{Config, StoreBackend};
use crate::key::FileKey;
use crate::store::digest::Hashing;
use crate::store::meta::FileMeta;
use crate::store::{Listed, StageSpec, Store, StoreError};

/// Files copied at a time.
const CONCURRENCY: usize = 4;

/// Why the migration cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The configuration does not name a bucket.
    #[error("the configuration does not say StoreBackend = \"s3\": it names no bucket to copy into")]
    NotS3,
    /// A store or the upload state could not be opened.
    #[error(transparent)]
    Open(#[from] StartupError),
    /// The bucket cannot take a file.
    #[error("the bucket cannot take a file: {0}")]
    Unreachable(String),
}

/// What became of one file.
#[derive(Debug)]
enum Outcome {
    /// Copied, this many bytes.
    Copied(u64),
    /// An object of the same size is already at its key.
    Present,
    /// Another object is at its key: left as it is.
    Conflict(u64, u64),
    /// Not copied.
    Failed(StoreError),
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    /// Files copied.
    pub copied: u64,
    /// Their bytes.
    pub copied_bytes: u64,
    /// Files already in the bucket at the same size.
    pub present: u64,
    /// Keys where the bucket holds another object (of another size): not touched.
    pub conflicts: Vec<String>,
    /// Keys not copied, with why.
    pub failed: Vec<(String, String)>,
}

impl Report {
    /// Whether every file of the local store is in the bucket now.
    pub fn complete(&self) -> bool {
        self.conflicts.is_empty() && self.failed.is_empty()
    }
}

/// Copies every finished file of the local store into the bucket; `progress` hears of each
/// file as it is done (its key and what became of it, as a line of text).
pub async fn to_s3(config: &Config, progress: impl Fn(&str)) -> Result<Report, MigrateError> {
    if config.store.backend != StoreBackend::S3 || config.s3.is_none() {
        return Err(MigrateError::NotS3);
    }
    let local = Store::Local(open_local(config)?);
    let upload_state = open_upload_state(config).await?;
    let bucket = open_store(config, open_local(config)?, &upload_state).await?;
    if matches!(bucket, Store::Local(_)) {
        return Err(MigrateError::NotS3);
    }
    bucket.probe().await.map_err(MigrateError::Unreachable)?;

    let mut report = Report::default();
    let (local, bucket) = (Arc::new(local), Arc::new(bucket));
    let mut listed = local.list();
    let mut copies = futures_util::stream::FuturesUnordered::new();
    let mut listing = true;
    loop {
        if listing && copies.len() < CONCURRENCY {
            match listed.next().await {
                Some(Ok(file)) => {
                    let (local, bucket) = (Arc::clone(&local), Arc::clone(&bucket));
                    copies.push(async move {
                        let outcome = copy_one(&local, &bucket, &file).await;
                        (file.key, outcome)
                    });
                }
                Some(Err(e)) => report.failed.push(("(listing the local store)".into(), e.to_string())),
                None => listing = false,
            }
            continue;
        }
        match copies.next().await {
            Some((key, outcome)) => record(&mut report, key, outcome, &progress),
            None => break,
        }
    }
    Ok(report)
}

fn record(report: &mut Report, key: FileKey, outcome: Outcome, progress: &impl Fn(&str)) {
    match outcome {
        Outcome::Copied(bytes) => {
            report.copied += 1;
            report.copied_bytes += bytes;
            progress(&format!("copied  {key} ({bytes} bytes)"));
        }
        Outcome::Present => {
            report.present += 1;
            progress(&format!("present {key}"));
        }
        Outcome::Conflict(local, there) => {
            progress(&format!(
                "CONFLICT {key}: {local} bytes here, another object of {there} bytes in the bucket; left as it is"
            ));
            report.conflicts.push(key.to_string());
        }
        Outcome::Failed(e) => {
            progress(&format!("FAILED  {key}: {e}"));
            report.failed.push((key.to_string(), e.to_string()));
        }
    }
}

/// Copies one file unless the bucket has it.
async fn copy_one(local: &Store, bucket: &Store, file: &Listed) -> Outcome {
    match copy(local, bucket, file).await {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Failed(e),
    }
}

async fn copy(local: &Store, bucket: &Store, file: &Listed) -> Result<Outcome, StoreError> {
    let key = &file.key;
    let source = local.open(key, false).await?;
    let size = source.info.size;
    match bucket.head(key).await {
        Ok(there) if there.size == size => return Ok(Outcome::Present),
        Ok(there) => return Ok(Outcome::Conflict(size, there.size)),
        Err(StoreError::NotFound) => {}
        Err(e) => return Err(e),
    }
    let meta = source.info.meta.clone().unwrap_or_else(|| FileMeta {
        content_type: crate::auth::DEFAULT_CONTENT_TYPE.to_string(),
        size,
        uploaded_unix: 0,
        sha256: None,
    });
    let hashing = Hashing {
        sha256: meta.sha256.is_some(),
        ..Hashing::default()
    };
    let mut staged = bucket
        .stage(StageSpec {
            key,
            size,
            content_type: &meta.content_type,
            hashing,
        })
        .await?;
    let mut bytes = source.stream(0, size);
    while let Some(chunk) = bytes.next().await {
        staged.write(chunk.map_err(StoreError::Io)?).await?;
    }
    if staged.len() != size {
        return Err(StoreError::other("the local file changed size while it was copied"));
    }
    if let Some(expected) = &meta.sha256 {
        let got = staged.digests().await?.and_then(|d| d.sha256).map(hex::encode);
        if got.as_deref() != Some(expected.as_str()) {
            return Err(StoreError::other(
                "the local file does not match the SHA-256 recorded at its upload: not copied",
            ));
        }
    }
    match bucket.commit(staged, key, &meta).await {
        Ok(()) => Ok(Outcome::Copied(size)),
        Err(StoreError::Exists) => Ok(match bucket.head(key).await {
            Ok(there) if there.size == size => Outcome::Present,
            Ok(there) => Outcome::Conflict(size, there.size),
            Err(e) => Outcome::Failed(e),
        }),
        Err(e) => Err(e),
    }
}
