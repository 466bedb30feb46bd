//! The upload engine, built only on the store and the upload state. The HTTP faces of
//! resumable uploads (tus 1.0 and the seed's X-Session-Token scheme, in [`crate::http`]) and
//! the whole-file PUT share it; it knows nothing of HTTP but the request body it reads.
//!
//! An unfinished upload is a record in the [`UploadState`] (target path, length, durable
//! offset, expiry, the store's handle to its bytes) plus its bytes in the store's
//! partial-upload seam ([`Partials`]). A write takes the upload's lock ([`lock`]: asking a
//! current holder to save and stop, as tusd does, and renewing the lock while it works),
//! appends ([`receive`]), makes the bytes durable, and only then moves the recorded offset,
//! so the offset is always the durable byte count. A finished upload becomes the file at its
//! path through the store's atomic no-overwrite commit.

pub mod lock;
pub mod receive;

pub use lock::Held;
pub use receive::{Checkpoint, Watch, receive};

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::clock::now_unix;
use crate::config::Limits;
use crate::key::FileKey;
use crate::metrics;
use crate::state::{Concat, StateError, UploadKind, UploadRecord, UploadState, valid_id};
use crate::store::{FileMeta, Hashing, PartialHandle, Partials, StageSpec, Staged, Store, StoreError};

/// Why an operation of the engine failed, in the terms of the upload protocols.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Another request holds the upload and did not let go in time.
    #[error("upload is locked by another request")]
    Locked,
    /// The upload expired (it is forgotten now).
    #[error("upload expired")]
    Expired,
    /// A part named for a concatenation is unknown, not a part of this slot, or incomplete.
    #[error("{0}")]
    BadParts(&'static str),
    /// Unfinished uploads hold MaxUnfinishedSize already.
    #[error("unfinished uploads hold {held} bytes, the limit is {max}")]
    TooMuchUnfinished {
        /// What they hold now.
        held: u64,
        /// MaxUnfinishedSize.
        max: u64,
    },
    /// The state backend failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// The store failed (or, finishing an upload, found its path taken: [`StoreError::Exists`]).
    #[error(transparent)]
    Store(#[from] StoreError),
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

/// A checksum to verify over one appended chunk (tus `Upload-Checksum`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkChecksum {
    /// The algorithm.
    pub algorithm: ChecksumAlgorithm,
    /// The expected digest.
    pub expected: Vec<u8>,
}

/// Chunk checksum algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    /// SHA-1.
    Sha1,
    /// SHA-256.
    Sha256,
    /// MD5.
    Md5,
}

/// A new upload, as a protocol describes it.
#[derive(Debug, Clone)]
pub struct NewUpload {
    /// Its id: random (tus) or derived from the session token and path.
    pub id: String,
    /// Which protocol.
    pub kind: UploadKind,
    /// Where the file goes when complete.
    pub key: FileKey,
    /// Total size; `None` while deferred.
    pub length: Option<u64>,
    /// Content type of the stored file.
    pub content_type: String,
    /// Raw tus Upload-Metadata, returned on HEAD.
    pub metadata: Option<String>,
    /// Concatenation role.
    pub concat: Concat,
}

/// How often a long append (without a chunk checksum) makes its bytes durable and moves the
/// recorded offset, so a crash (`kill -9`) in the middle of a long PATCH or resumed PUT loses
/// at most the last second or MiB of it: at most once a second, so fast uploads pay nothing.
pub const CHECKPOINT: Checkpoint = Checkpoint {
    bytes: 1 << 20,
    every: Duration::from_secs(1),
};

/// The bounds of one append.
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    /// Most bytes this append may add.
    pub max_bytes: u64,
    /// A checksum over the chunk, if the client sent one.
    pub checksum: Option<&'a ChunkChecksum>,
    /// Longest pause between body frames.
    pub read_timeout: Duration,
    /// How long the upload lives after this append, unfinished.
    pub expiry: Duration,
    /// MaxUnfinishedSize: no append starts while unfinished uploads hold this much (0: no
    /// limit).
    pub max_unfinished_bytes: u64,
}

/// How the engine keeps a new unfinished upload.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    /// How long it lives unfinished after its last write (UploadExpiry).
    pub expiry: Duration,
    /// Most bytes all unfinished uploads may hold together (MaxUnfinishedSize; 0: no limit).
    pub max_unfinished_bytes: u64,
}

impl From<&Limits> for Keep {
    fn from(limits: &Limits) -> Self {
        Keep {
            expiry: limits.upload_expiry,
            max_unfinished_bytes: limits.max_unfinished_bytes,
        }
    }
}

/// The upload engine; see the module documentation.
#[derive(Debug, Clone)]
pub struct Engine {
    state: UploadState,
    store: Store,
    partials: Partials,
    shutdown: CancellationToken,
}

impl Engine {
    /// An engine over `state` and `store`; `shutdown` is cancelled when the server gives up
    /// draining (writers then save what they have and stop).
    pub fn new(state: UploadState, store: Store, shutdown: CancellationToken) -> Self {
        let partials = store.partials();
        Self {
            state,
            store,
            partials,
            shutdown,
        }
    }

    /// Cancelled when the server gives up draining.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Takes the lock of upload `id` (see [`lock`]).
    pub async fn lock(&self, id: &str) -> Result<Held, EngineError> {
        lock::acquire(&self.state, id).await
    }

    /// Releases a lock.
    pub async fn unlock(&self, held: Held) {
        lock::release(held).await;
    }

    /// Runs `work` while holding upload `id`'s lock, and releases it whatever `work` returns.
    pub async fn with_lock<T, E>(&self, id: &str, work: impl AsyncFnOnce(&Held) -> Result<T, E>) -> Result<T, E>
    where
        E: From<EngineError>,
    {
        let held = self.lock(id).await?;
        let result = work(&held).await;
        self.unlock(held).await;
        result
    }

    /// Starts an upload: it becomes its slot's unfinished upload (replacing an older one),
    /// then, if unfinished uploads have room for its length, its (empty) bytes are made and then
    /// its record, so a record never points at bytes that do not exist.
    pub async fn create(&self, new: NewUpload, keep: Keep) -> Result<UploadRecord, EngineError> {
        self.claim_slot(&new, keep.expiry).await?;
        let created = async {
            self.admit(new.length.unwrap_or(0), keep.max_unfinished_bytes).await?;
            let handle = self.partials.create(&new.id).await?;
            self.record(new.clone(), 0, handle, keep.expiry).await
        }
        .await;
        if created.is_err() {
            self.release_slot(&new).await;
        }
        created
    }

    /// Keeps the bytes of a broken-off whole-file upload as upload `new` (its length is the
    /// whole file's), so the client can resume it; returns the durable offset. Like a
    /// creation, it replaces an older unfinished upload of its slot; when unfinished uploads
    /// have no room for its bytes, they are dropped.
    pub async fn keep_broken_off(&self, staged: Staged, new: NewUpload, keep: Keep) -> Result<u64, EngineError> {
        self.claim_slot(&new, keep.expiry).await?;
        let kept = async {
            self.admit(staged.len(), keep.max_unfinished_bytes).await?;
            let (offset, handle) = self.partials.keep(staged, &new.id).await?;
            self.record(new.clone(), offset, handle, keep.expiry)
                .await
                .map(|r| r.offset)
        }
        .await;
        if kept.is_err() {
            self.release_slot(&new).await;
        }
        kept
    }

    /// Refuses `more` bytes when unfinished uploads would then hold more than `max` (0: no
    /// limit).
    async fn admit(&self, more: u64, max: u64) -> Result<(), EngineError> {
        if max == 0 {
            return Ok(());
        }
        let usage = self.partials.usage().await?;
        metrics::unfinished_counted(usage.uploads, usage.bytes);
        let held = usage.bytes;
        if held.saturating_add(more) > max || held >= max {
            tracing::warn!(
                held,
                more,
                max,
                "MaxUnfinishedSize reached: an unfinished upload is refused"
            );
            return Err(EngineError::TooMuchUnfinished { held, max });
        }
        Ok(())
    }

    /// Makes `new` its slot's one unfinished upload (not for the parts of a concatenation,
    /// which a slot may have several of), and removes the one it replaces: one slot token
    /// cannot pile up unfinished uploads. The replaced upload's writer is asked to stop first.
    async fn claim_slot(&self, new: &NewUpload, expiry: Duration) -> Result<(), EngineError> {
        if new.concat != Concat::None {
            return Ok(());
        }
        let Some(previous) = self.state.claim_slot(new.key.as_str(), &new.id, expiry).await? else {
            return Ok(());
        };
        let replaced = self
            .with_lock(&previous, async |_| match self.state.get(&previous).await? {
                Some(old) => self.forget(&old).await.map(|()| true),
                None => Ok::<_, EngineError>(false),
            })
            .await;
        match replaced {
            Ok(true) => {
                tracing::info!(path = %new.key, replaced = %previous, id = %new.id, "a new upload replaced the unfinished one of its path")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(path = %new.key, error = %e, "cannot remove the unfinished upload a new one replaces; it expires by itself")
            }
        }
        Ok(())
    }

    async fn release_slot(&self, new: &NewUpload) {
        if new.concat == Concat::None
            && let Err(e) = self.state.release_slot(new.key.as_str(), &new.id).await
        {
            tracing::debug!(error = %e, "cannot release a slot; it expires by itself");
        }
    }

    /// Saves the record of an upload whose bytes exist; without a record, the bytes go.
    async fn record(
        &self,
        new: NewUpload,
        offset: u64,
        handle: PartialHandle,
        expiry: Duration,
    ) -> Result<UploadRecord, EngineError> {
        let now = now_unix();
        let record = UploadRecord {
            id: new.id,
            kind: new.kind,
            key: new.key.as_str().to_string(),
            length: new.length,
            offset,
            content_type: new.content_type,
            metadata: new.metadata,
            created_unix: now,
            expires_unix: now + expiry.as_secs(),
            concat: new.concat,
            handle,
            completed: false,
        };
        if let Err(e) = self.state.put(&record, expiry).await {
            let _ = self.partials.remove(&record.id, &record.handle).await;
            return Err(e.into());
        }
        Ok(record)
    }

    /// The record of upload `id` when it exists, is valid and of `kind`, expired or not.
    pub async fn peek(&self, id: &str, kind: UploadKind) -> Result<Option<UploadRecord>, EngineError> {
        if !valid_id(id) {
            return Ok(None);
        }
        Ok(self.state.get(id).await?.filter(|r| r.kind == kind))
    }

    /// The record of upload `id` when it exists, is valid and of `kind`; an expired one is
    /// forgotten and answers [`EngineError::Expired`].
    pub async fn load(&self, id: &str, kind: UploadKind) -> Result<Option<UploadRecord>, EngineError> {
        let Some(record) = self.peek(id, kind).await? else {
            return Ok(None);
        };
        if record.expired(now_unix()) {
            self.forget(&record).await?;
            return Err(EngineError::Expired);
        }
        Ok(Some(record))
    }

    /// Sets the length of an upload that deferred it.
    pub async fn set_length(
        &self,
        record: &mut UploadRecord,
        length: u64,
        expiry: Duration,
    ) -> Result<(), EngineError> {
        record.length = Some(length);
        self.state.put(record, expiry).await?;
        Ok(())
    }

    /// Appends the body to `record`'s bytes while holding its lock, within `bounds`. Whatever
    /// the outcome, the bytes kept are durable and `record.offset` (saved in the state, with a
    /// fresh expiry) is their count.
    pub async fn append<B>(
        &self,
        record: &mut UploadRecord,
        held: &Held,
        body: &mut B,
        bounds: Append<'_>,
    ) -> Result<Ended, EngineError>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let hashing = match bounds.checksum.map(|c| c.algorithm) {
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
        self.admit(0, bounds.max_unfinished_bytes).await?;
        let start = record.offset;
        let mut appender = self
            .partials
            .append_at(&record.id, &record.handle, start, hashing)
            .await?;
        let watch = Watch {
            read_timeout: bounds.read_timeout,
            shutdown: &self.shutdown,
            holder: Some(held),
        };
        // A chunk with a checksum is all or nothing: no checkpoints in it.
        let checkpoint = bounds.checksum.is_none().then_some(CHECKPOINT);
        let mut ended = loop {
            match receive::receive_until(&mut appender, body, bounds.max_bytes, watch, checkpoint).await? {
                Some(ended) => break ended,
                None => {
                    let (offset, handle) = self.partials.checkpoint(&mut appender, start).await?;
                    record.offset = offset;
                    record.handle = handle;
                    record.expires_unix = now_unix() + bounds.expiry.as_secs();
                    self.state.put(record, bounds.expiry).await?;
                }
            }
        };
        if ended == Ended::Complete
            && let Some(c) = bounds.checksum
        {
            let digests = appender.digests().await?.unwrap_or_default();
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
            // What came since the last checkpoint goes (with a checksum there is none).
            Ended::TooLong | Ended::ChecksumMismatch => self.partials.discard(appender, record.offset).await?,
            _ => {
                let (offset, handle) = self.partials.persist(appender, start).await?;
                record.offset = offset;
                record.handle = handle;
            }
        }
        if record.offset != start {
            record.expires_unix = now_unix() + bounds.expiry.as_secs();
            self.state.put(record, bounds.expiry).await?;
            if record.concat == Concat::None {
                self.state.touch_slot(&record.key, &record.id, bounds.expiry).await?;
            }
        }
        Ok(ended)
    }

    /// Moves a finished upload to its path (atomic, no overwrite) and forgets it; returns the
    /// metadata stored with the file. With `checksum_verification` its SHA-256 is computed
    /// first (one read: its bytes came in over several requests).
    pub async fn finish(&self, record: &UploadRecord, checksum_verification: bool) -> Result<FileMeta, EngineError> {
        let key = FileKey::parse_decoded(&record.key)
            .map_err(|e| StateError::Corrupt(format!("upload {} has a bad path: {e}", record.id)))?;
        let length = record.length.unwrap_or(record.offset);
        let sha256 = if checksum_verification {
            self.digests(record, Hashing::sha256()).await?.sha256.map(hex::encode)
        } else {
            None
        };
        let meta = FileMeta {
            content_type: record.content_type.clone(),
            size: length,
            uploaded_unix: now_unix(),
            sha256,
        };
        let committed = self
            .partials
            .complete(&record.id, &record.handle, length, &key, &meta)
            .await;
        match committed {
            // Stored, which is what the client asked for: a record that cannot be removed
            // now is complete and goes at its expiry.
            Ok(()) => self.forget_stored(record).await,
            // Can never be done (the path is taken): the upload is over.
            Err(StoreError::Exists) => {
                self.forget(record).await?;
                return Err(StoreError::Exists.into());
            }
            Err(e) => return Err(e.into()),
        }
        metrics::file_stored(length);
        tracing::info!(path = %record.key, size = length, "resumable upload completed");
        Ok(meta)
    }

    /// The digests `hashing` asks for of a complete upload's bytes (read once).
    pub async fn digests(&self, record: &UploadRecord, hashing: Hashing) -> Result<crate::store::Digests, EngineError> {
        let length = record.length.unwrap_or(record.offset);
        Ok(self
            .partials
            .digests(&record.id, &record.handle, length, hashing)
            .await?)
    }

    /// Finishes upload `record` if it has all its bytes but was not committed (a crash
    /// between its last byte and the commit); a no-op otherwise.
    pub async fn finish_if_complete(
        &self,
        record: &UploadRecord,
        checksum_verification: bool,
    ) -> Result<(), EngineError> {
        if record.length != Some(record.offset) || record.concat != Concat::None || record.completed {
            return Ok(());
        }
        self.with_lock(&record.id, async |_| match self.state.get(&record.id).await? {
            Some(fresh) if fresh.length == Some(fresh.offset) => {
                match self.finish(&fresh, checksum_verification).await {
                    // The path was taken meanwhile, maybe by this very upload, committed just
                    // before a crash that kept its record: either way it is over, and to its
                    // client complete.
                    Err(EngineError::Store(StoreError::Exists)) => {
                        tracing::info!(path = %fresh.key, id = %fresh.id, "a complete upload found its path taken; it is over");
                        Ok(())
                    }
                    other => other.map(|_| ()),
                }
            }
            _ => Ok(()),
        })
        .await
    }

    /// The partial uploads `ids`, all complete and made for `key`, in order.
    pub async fn parts(&self, ids: &[String], key: &FileKey) -> Result<Vec<UploadRecord>, EngineError> {
        let mut records = Vec::with_capacity(ids.len());
        for id in ids {
            let record = self
                .state
                .get(id)
                .await?
                .ok_or(EngineError::BadParts("unknown partial upload"))?;
            if record.concat != Concat::Partial || record.key != key.as_str() {
                return Err(EngineError::BadParts("not a partial upload of this slot"));
            }
            if record.length != Some(record.offset) {
                return Err(EngineError::BadParts("a partial upload is not complete"));
            }
            records.push(record);
        }
        Ok(records)
    }

    /// Stores the concatenation of `parts` (from [`Self::parts`]) at `final_upload.key`
    /// through the store's no-overwrite commit, then forgets the parts.
    ///
    /// The final upload gets a record of its own, returned (complete, its parts' ids in
    /// `concat`, no bytes), so its Location answers HEAD as tus 1.0 wants (offset = length,
    /// `Upload-Concat: final;…`) until it expires like any upload.
    pub async fn concatenate(
        &self,
        parts: &[UploadRecord],
        final_upload: NewUpload,
        checksum_verification: bool,
        expiry: Duration,
    ) -> Result<UploadRecord, EngineError> {
        let key = &final_upload.key;
        let content_type = final_upload.content_type.clone();
        let total: u64 = parts.iter().map(|r| r.offset).sum();
        let hashing = Hashing {
            sha256: checksum_verification,
            ..Hashing::NONE
        };
        let spec = StageSpec {
            key,
            size: total,
            content_type: &content_type,
            hashing,
        };
        let mut staged = self.store.stage(spec).await?;
        for part in parts {
            let mut bytes = self.partials.read(&part.id, &part.handle, part.offset);
            while let Some(chunk) = bytes.next().await {
                staged.write(chunk.map_err(StoreError::Io)?).await?;
            }
        }
        let sha256 = staged.digests().await?.and_then(|d| d.sha256).map(hex::encode);
        let meta = FileMeta {
            content_type,
            size: total,
            uploaded_unix: now_unix(),
            sha256,
        };
        self.store.commit(staged, key, &meta).await?;
        for part in parts {
            self.forget_stored(part).await;
        }
        metrics::file_stored(total);
        tracing::info!(path = %key, size = total, parts = parts.len(), "tus final upload concatenated");
        let now = now_unix();
        let record = UploadRecord {
            id: final_upload.id,
            kind: final_upload.kind,
            key: key.as_str().to_string(),
            length: Some(total),
            offset: total,
            content_type: final_upload.content_type,
            metadata: final_upload.metadata,
            created_unix: now,
            expires_unix: now + expiry.as_secs(),
            concat: Concat::Final(parts.iter().map(|p| p.id.clone()).collect()),
            handle: PartialHandle::default(),
            completed: true,
        };
        // The file is stored, which is what the client asked for: without its record only
        // HEAD on the final upload's URL does not know it (404).
        if let Err(e) = self.state.put(&record, expiry).await {
            tracing::warn!(id = %record.id, path = %key, error = %e, "cannot keep the record of a final upload");
        }
        Ok(record)
    }

    /// Keeps the record of upload `record`, finished and stored (its bytes are gone), until
    /// `expiry`: its resource goes on answering offset retrieval (offset = length, complete).
    /// A failure is logged: the file is stored all the same.
    pub async fn remember_completed(&self, record: &UploadRecord, expiry: Duration) {
        let now = now_unix();
        let done = UploadRecord {
            offset: record.length.unwrap_or(record.offset),
            length: Some(record.length.unwrap_or(record.offset)),
            handle: PartialHandle::default(),
            expires_unix: now + expiry.as_secs(),
            completed: true,
            ..record.clone()
        };
        if let Err(e) = self.state.put(&done, expiry).await {
            tracing::warn!(id = %record.id, error = %e, "cannot keep the record of a completed upload");
        }
    }

    /// Forgets an upload whose file is stored: a failure is logged, not answered (the record
    /// and bytes left go at their expiry).
    async fn forget_stored(&self, record: &UploadRecord) {
        if let Err(e) = self.forget(record).await {
            tracing::warn!(id = %record.id, path = %record.key, error = %e, "the file is stored but its upload cannot be forgotten now; it goes at its expiry");
        }
    }

    /// Removes an upload's bytes and record.
    pub async fn forget(&self, record: &UploadRecord) -> Result<(), EngineError> {
        self.state.delete(&record.id).await?;
        self.partials.remove(&record.id, &record.handle).await?;
        if record.concat == Concat::None {
            self.state.release_slot(&record.key, &record.id).await?;
        }
        Ok(())
    }

    /// Removes upload `id`, whatever state its record is in (a missing or unreadable record
    /// leaves the bytes to find by the default handle).
    pub async fn discard(&self, id: &str) -> Result<(), EngineError> {
        let handle = match self.state.get(id).await {
            Ok(Some(record)) => record.handle,
            Ok(None) | Err(StateError::Corrupt(_)) => Default::default(),
            Err(e) => return Err(e.into()),
        };
        self.state.delete(id).await?;
        self.partials.remove(id, &handle).await?;
        Ok(())
    }

    /// Removes expired uploads: records past their expiry (with their bytes) and bytes
    /// untouched for `expiry` whose record is gone (Redis expires records by itself).
    pub async fn sweep(&self, expiry: Duration) -> Result<usize, EngineError> {
        let mut removed = 0;
        for id in self.state.expired(now_unix()).await? {
            self.discard(&id).await?;
            removed += 1;
        }
        for id in self.partials.sweep(expiry).await? {
            let _ = self.state.delete(&id).await;
            removed += 1;
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests;
