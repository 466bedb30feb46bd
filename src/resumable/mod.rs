//! Resumable uploads, built only on the store and the upload state: tus 1.0 ([`tus`]) and the
//! seed's X-Session-Token scheme ([`session`]) share this engine.
//!
//! Bytes of an unfinished upload live in the store's `partial/` folder; its record (length,
//! durable offset, target path, expiry) in the [`UploadState`]. A write takes the upload's lock
//! (asking a current holder to save and stop, as tusd does), appends, fsyncs, and only then
//! moves the recorded offset, so the offset is always the durable byte count. A finished
//! upload becomes the file at the slot's path through the store's atomic no-replace commit.

pub mod session;
pub mod tus;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;

use crate::ops::metrics;
use crate::state::{LockToken, StateError, UploadRecord, UploadState};
use crate::store::staged::TakeError;
use crate::store::{FileKey, FileMeta, Hashing, LocalStore, StagedFile, StoreError, digest};

/// How long a writer waits for the current holder of an upload's lock to stop.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// How often a writer checks whether someone asked it to stop (and refreshes a Redis lock).
const STOP_POLL: Duration = Duration::from_millis(200);

/// Why a resumable operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ResumableError {
    /// The state backend is unreachable.
    #[error(transparent)]
    State(#[from] StateError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another request holds the upload and did not let go in time.
    #[error("upload is locked by another request")]
    Locked,
}

/// How one append ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The body was read to its end.
    Complete,
    /// The client went away or the body failed; what arrived is kept.
    BrokenOff,
    /// No bytes for ReadTimeout; what arrived is kept.
    TimedOut,
    /// Another request asked for the upload; what arrived is kept.
    Stopped,
    /// The server is shutting down; what arrived is kept.
    ShuttingDown,
    /// More bytes than allowed: the chunk was discarded.
    TooLong,
    /// The chunk's checksum did not match: the chunk was discarded.
    ChecksumMismatch,
}

/// A tus `Upload-Checksum` to verify over one chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkChecksum {
    /// `sha1`, `sha256` or `md5`.
    pub algorithm: ChecksumAlgorithm,
    /// The expected digest.
    pub expected: Vec<u8>,
}

/// tus checksum algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// MD5.
    Md5,
}

/// The resumable-upload engine.
#[derive(Debug, Clone)]
pub struct Resumable {
    /// Upload records and locks.
    pub state: UploadState,
    /// Where the bytes go.
    pub store: LocalStore,
    /// Cancelled when the server gives up draining: writers save what they have and stop.
    pub shutdown: CancellationToken,
}

/// A held lock; release it with [`Resumable::unlock`].
#[derive(Debug)]
pub struct Held {
    id: String,
    token: LockToken,
}

impl Resumable {
    /// Takes the lock of upload `id`, asking a current holder to stop and waiting up to
    /// [`LOCK_WAIT`] for it to save and let go.
    pub async fn lock(&self, id: &str) -> Result<Held, ResumableError> {
        let deadline = Instant::now() + LOCK_WAIT;
        let mut asked = false;
        loop {
            if let Some(token) = self.state.try_lock(id).await? {
                return Ok(Held {
                    id: id.to_string(),
                    token,
                });
            }
            if !asked {
                self.state.request_stop(id).await?;
                asked = true;
            }
            if Instant::now() >= deadline {
                return Err(ResumableError::Locked);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Releases a lock (errors are logged: the lock expires by itself in Redis).
    pub async fn unlock(&self, held: Held) {
        if let Err(e) = self.state.unlock(&held.id, &held.token).await {
            tracing::warn!(error = %e, "cannot release an upload lock; it will expire");
        }
    }

    /// Appends the body to `record`'s bytes while holding its lock: at most `max_bytes`,
    /// verifying `checksum` over the chunk if given. Whatever the outcome, the bytes kept are
    /// fsynced and `record.offset` (saved in the state, with a fresh expiry) is their count.
    #[allow(clippy::too_many_arguments)]
    pub async fn append<B>(
        &self,
        record: &mut UploadRecord,
        held: &Held,
        body: &mut B,
        max_bytes: u64,
        checksum: Option<&ChunkChecksum>,
        read_timeout: Duration,
        expiry: Duration,
    ) -> Result<Ended, ResumableError>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let hashing = match checksum.map(|c| c.algorithm) {
            None => Hashing::NONE,
            Some(ChecksumAlgorithm::Sha1) => Hashing {
                sha1: true,
                ..Hashing::NONE
            },
            Some(ChecksumAlgorithm::Sha256) => Hashing {
                sha256: true,
                ..Hashing::NONE
            },
            Some(ChecksumAlgorithm::Md5) => Hashing {
                md5: true,
                ..Hashing::NONE
            },
        };
        let start = record.offset;
        let mut file = self.store.open_partial(&record.id, start, hashing).await?;
        let ended = self.receive(&mut file, held, body, max_bytes, read_timeout).await?;
        let mut ended = ended;
        if ended == Ended::Complete
            && let Some(c) = checksum
        {
            let digests = file.digests().await?.unwrap_or_default();
            let got = match c.algorithm {
                ChecksumAlgorithm::Sha1 => digests.sha1,
                ChecksumAlgorithm::Sha256 => digests.sha256,
                ChecksumAlgorithm::Md5 => digests.md5,
            };
            if got.as_deref() != Some(&c.expected[..]) {
                ended = Ended::ChecksumMismatch;
            }
        }
        match ended {
            Ended::TooLong | Ended::ChecksumMismatch => file.truncate(start).await?,
            _ => {
                file.sync().await?;
                record.offset = start + file.len();
            }
        }
        if record.offset != start {
            record.expires_unix = crate::http::now_unix() + expiry.as_secs();
            self.state.put(record, expiry).await?;
        }
        Ok(ended)
    }

    async fn receive<B>(
        &self,
        file: &mut StagedFile,
        held: &Held,
        body: &mut B,
        max_bytes: u64,
        read_timeout: Duration,
    ) -> Result<Ended, ResumableError>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let mut next_poll = tokio::time::Instant::now() + STOP_POLL;
        let mut idle_since = tokio::time::Instant::now();
        loop {
            // Wait for the next frame, but look up every STOP_POLL whether another request
            // wants this upload (a client that went quiet must not hold it for ReadTimeout).
            let frame = tokio::select! {
                frame = body.frame() => frame,
                () = tokio::time::sleep_until(next_poll) => {
                    next_poll = tokio::time::Instant::now() + STOP_POLL;
                    if self.must_stop(held).await {
                        return Ok(Ended::Stopped);
                    }
                    if idle_since.elapsed() >= read_timeout {
                        return Ok(Ended::TimedOut);
                    }
                    continue;
                }
                () = self.shutdown.cancelled() => return Ok(Ended::ShuttingDown),
            };
            idle_since = tokio::time::Instant::now();
            let frame = match frame {
                None => return Ok(Ended::Complete),
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "resumable body broken off");
                    return Ok(Ended::BrokenOff);
                }
                Some(Ok(frame)) => frame,
            };
            let before = file.len();
            let taken = file.take_frame(frame, body, max_bytes).await;
            metrics::upload_bytes(file.len() - before);
            match taken {
                Ok(()) => {}
                Err(TakeError::TooLong) => return Ok(Ended::TooLong),
                Err(TakeError::Store(e)) => return Err(e.into()),
            }
            if tokio::time::Instant::now() >= next_poll {
                next_poll = tokio::time::Instant::now() + STOP_POLL;
                if self.must_stop(held).await {
                    return Ok(Ended::Stopped);
                }
            }
        }
    }

    /// Whether another request asked for the upload (or its lock can no longer be checked:
    /// then save and stop rather than risk two writers).
    async fn must_stop(&self, held: &Held) -> bool {
        match self.state.stop_requested(&held.id, &held.token).await {
            Ok(stop) => stop,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check the upload lock; stopping this write");
                true
            }
        }
    }

    /// Moves a finished upload to its path (atomic, no replace) and forgets it. With
    /// `checksum_verification` the file's SHA-256 is computed first (one read: its bytes came
    /// in over several requests).
    pub async fn finish(&self, record: &UploadRecord, checksum_verification: bool) -> Result<(), ResumableError> {
        let key = FileKey::parse_decoded(&record.key).map_err(|e| StoreError::Io(std::io::Error::other(e)))?;
        let length = record.length.unwrap_or(record.offset);
        let sha256 = if checksum_verification {
            let path = self.store.partial_path(&record.id);
            let digest = tokio::task::spawn_blocking(move || digest::sha256_file(&path))
                .await
                .map_err(|e| StoreError::Io(std::io::Error::other(e)))?
                .map_err(StoreError::Io)?;
            Some(hex::encode(digest))
        } else {
            None
        };
        let meta = FileMeta {
            content_type: record.content_type.clone(),
            size: length,
            uploaded_unix: crate::http::now_unix(),
            sha256,
        };
        let staged = self.store.open_partial(&record.id, length, Hashing::NONE).await?;
        let committed = self.store.commit(staged, &key, &meta).await;
        if matches!(committed, Ok(()) | Err(StoreError::Exists)) {
            // Done, or can never be done (the path is taken): either way the upload is over.
            self.forget(&record.id).await?;
        }
        committed?;
        metrics::file_stored(length);
        tracing::info!(path = %record.key, size = length, "resumable upload completed");
        Ok(())
    }

    /// Removes an upload's bytes and record.
    pub async fn forget(&self, id: &str) -> Result<(), ResumableError> {
        self.state.delete(id).await?;
        self.store.remove_partial(id).await?;
        Ok(())
    }

    /// Removes expired uploads: records past their expiry (with their bytes) and bytes
    /// untouched for `expiry` whose record is gone (Redis expires records by itself).
    pub async fn sweep(&self, expiry: Duration) -> Result<usize, ResumableError> {
        let mut removed = 0;
        for id in self.state.expired(crate::http::now_unix()).await? {
            self.forget(&id).await?;
            removed += 1;
        }
        for id in self.store.sweep_partials(expiry).await? {
            let _ = self.state.delete(&id).await;
            removed += 1;
        }
        Ok(removed)
    }
}
