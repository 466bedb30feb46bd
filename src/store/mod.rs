//! The store: where finished files live and how they get there, and where the bytes of
//! unfinished resumable uploads wait. Two seams, shaped by what an object store can do as
//! well as a file system:
//!
//! - [`Store`], finished files: [`Store::stage`] an upload, [`Store::commit`] it without
//!   overwriting (a reader sees the whole file or none; of two racing commits to one key
//!   exactly one wins), [`Store::head`], [`Store::open`] for a download (then stream any byte
//!   range of it), [`Store::delete`], [`Store::list`] as a stream, [`Store::probe`] for
//!   health, and the sweep of stale staged uploads. [`Store::capabilities`] says how the
//!   backend keeps its promises (logged at start).
//! - [`Partials`], the bytes of unfinished resumable uploads: create, append at the durable
//!   offset, keep a broken-off PUT's bytes, read back, complete into the store through the
//!   same no-overwrite commit, remove, sweep. What a backend needs to find an upload's bytes
//!   again travels in its upload record as a [`PartialHandle`].
//!
//! One backend stands behind both today: [`local`] (files under StoreDir). The S3 backend of
//! issue #10 is meant to be a second variant of each enum; nothing above this module knows
//! about file descriptors, `renameat2` or the store's folders.

pub mod digest;
pub mod local;
pub mod meta;
#[cfg(feature = "s3")]
pub mod s3;

pub use digest::{Digests, Hashing};
pub use local::LocalStore;
pub use meta::FileMeta;

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};

use crate::key::FileKey;
use local::StagedFile;

/// Storage failures, as the layers above need to tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Something is already stored at the key (for the local store also: a folder where the
    /// file should go, or a file where a folder is needed).
    #[error("file exists")]
    Exists,
    /// Nothing is stored at the key.
    #[error("not found")]
    NotFound,
    /// The backend refuses the key (the local store: a symlink placed in the store leads out
    /// of it).
    #[error("the store refuses this path")]
    Refused,
    /// The store is full or over quota.
    #[error("no space left in the store: {0}")]
    Full(#[source] io::Error),
    /// The backend cannot be reached now or answers with a server error (an object store
    /// down): try again later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Any other failure of the backend.
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
}

impl StoreError {
    /// A failure of the blocking pool or an internal inconsistency, as an I/O error.
    pub(crate) fn other(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        StoreError::Io(io::Error::other(e))
    }
}

/// How transient storage errors (for the local store EINTR, EAGAIN, EBUSY, ESTALE,
/// ETIMEDOUT: the kind a busy or network file system gives) are retried: MaxRetries times,
/// RetryDelay apart; downloads' reads only with EnableGetRetries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// Pause between attempts.
    pub delay: Duration,
    /// Whether GET's reads are retried too.
    pub on_reads: bool,
}

impl RetryPolicy {
    /// No retries.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_retries: 0,
        delay: Duration::ZERO,
        on_reads: false,
    };
}

/// Why taking a body frame into a [`Staged`] upload stopped.
#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    /// The body went past its limit (Content-Length, Upload-Length).
    #[error("body longer than allowed")]
    TooLong,
    /// The body failed (the client went away) while it was read ahead; what came before it
    /// was taken.
    #[error("request body broken off")]
    BrokenOff,
    /// Writing failed.
    #[error(transparent)]
    Store(StoreError),
}

/// A stream of file bytes (a download, or the bytes of a partial upload read back).
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + Sync>>;

/// A stream of the finished files in the store.
pub type ListStream = Pin<Box<dyn Stream<Item = Result<Listed, StoreError>> + Send>>;

/// What the store knows of a finished file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Size in bytes.
    pub size: u64,
    /// When it was committed.
    pub modified: SystemTime,
    /// A strong validator, quoted, that changes whenever a new file is committed at the key
    /// (also one of the same size in the same second).
    pub etag: String,
    /// Its metadata, when kept and consistent with the file.
    pub meta: Option<FileMeta>,
}

/// One finished file, as [`Store::list`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its key.
    pub key: FileKey,
    /// Size in bytes.
    pub size: u64,
    /// When it was committed.
    pub modified: SystemTime,
}

/// How the backend keeps "of two racing commits to one key, exactly one wins".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoOverwrite {
    /// The backend refuses to replace by itself (local: `renameat2(RENAME_NOREPLACE)`, or
    /// `link` + `unlink` where the file system lacks it; S3: `If-None-Match: *`).
    Native(&'static str),
    /// The backend would replace: commits to one key take a lock shared by every instance
    /// ([`KeyLocks`]) and look before they write.
    SharedLock(&'static str),
}

/// Locks on keys, shared by every instance that uses the store (through the upload state), for
/// backends that cannot refuse to replace an object by themselves.
pub trait KeyLocks: Send + Sync + fmt::Debug {
    /// Holds the lock of `key`, waiting for a current holder, until the guard is dropped.
    fn lock<'a>(&'a self, key: &'a str) -> Pin<Box<dyn Future<Output = Result<KeyGuard, StoreError>> + Send + 'a>>;
}

/// A held key lock: released when dropped.
pub struct KeyGuard(#[allow(dead_code)] Box<dyn Send + Sync>);

impl KeyGuard {
    /// A guard that releases the lock when `holder` is dropped.
    pub fn new(holder: impl Send + Sync + 'static) -> Self {
        Self(Box::new(holder))
    }
}

impl fmt::Debug for KeyGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyGuard")
    }
}

/// What a new upload into the store will be. An object store starts sending at once, so it
/// needs to know the key, the size and the type before the first byte.
#[derive(Debug, Clone, Copy)]
pub struct StageSpec<'a> {
    /// Where the file goes.
    pub key: &'a FileKey,
    /// Its exact size (the PUT's Content-Length).
    pub size: u64,
    /// Its content type.
    pub content_type: &'a str,
    /// Which digests to compute while the bytes pass.
    pub hashing: Hashing,
}

/// What a backend can do, logged at start so an operator sees how the guarantees are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// The backend's name.
    pub backend: &'static str,
    /// How commits avoid overwriting.
    pub no_overwrite: NoOverwrite,
    /// How a committed file becomes durable.
    pub durability: &'static str,
    /// Where the bytes of unfinished resumable uploads are kept.
    pub partials: &'static str,
    /// Whether a whole-file upload's bytes can become an unfinished upload's when it breaks
    /// off (the local store moves its temporary file; an object store streamed them away, so
    /// a PUT that asks for resumption takes the unfinished-upload path from its start).
    pub keeps_broken_off: bool,
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, how) = match self.no_overwrite {
            NoOverwrite::Native(how) => ("native", how),
            NoOverwrite::SharedLock(how) => ("shared_lock", how),
        };
        write!(
            f,
            "backend={} no_overwrite={kind} ({how}) durability={} partial_uploads={}",
            self.backend, self.durability, self.partials
        )
    }
}

/// The storage backend for finished files; see the module documentation.
#[derive(Debug, Clone)]
pub enum Store {
    /// Files under StoreDir.
    Local(LocalStore),
    /// Objects in an S3-compatible bucket.
    #[cfg(feature = "s3")]
    S3(s3::S3Store),
}

/// An upload on its way into the store (a whole-file PUT, a concatenation), or new bytes on
/// their way onto a partial upload. Memory stays bounded: bytes go to the backend in batches
/// as they arrive.
#[derive(Debug)]
pub enum Staged {
    /// A temporary file in the local store.
    Local(StagedFile),
    /// An upload streaming into the bucket (one request, or a multipart upload).
    #[cfg(feature = "s3")]
    S3(s3::S3Staged),
    /// New bytes on their way onto an unfinished upload in the bucket.
    #[cfg(feature = "s3")]
    S3Append(s3::S3Appender),
}

/// A finished file opened for a download: what it is, and (when asked for and small) its
/// whole content, read in the same trip as the open.
#[derive(Debug)]
pub struct Opened {
    /// Size, time, validator, metadata.
    pub info: ObjectInfo,
    /// The whole content, when asked for and at most [`SMALL_FILE_BYTES`]: read, or on a file
    /// system in memory mapped (sent with `sendfile`, [`local::mapped`]).
    pub content: Option<Bytes>,
    source: Source,
}

#[derive(Debug)]
enum Source {
    Local(local::OpenFile),
    #[cfg(feature = "s3")]
    S3(s3::S3Source),
}

/// Files up to this size are read whole when opened for a download.
pub const SMALL_FILE_BYTES: u64 = 256 * 1024;

impl Opened {
    /// The bytes `start..end` as a stream. At most a few pieces are in memory at a time: the
    /// next is read while the current one is sent.
    pub fn stream(self, start: u64, end: u64) -> ByteStream {
        match self.source {
            Source::Local(file) => file.stream(start, end),
            #[cfg(feature = "s3")]
            Source::S3(object) => object.stream(start, end),
        }
    }

    /// [`Self::stream`] for a response body on its way to a client's socket: from the local
    /// store, pieces that the connection sends without copying them
    /// ([`local::mapped`], [`crate::server::zero_copy`]).
    pub fn stream_to_socket(self, start: u64, end: u64) -> ByteStream {
        match self.source {
            Source::Local(file) => file.stream_to_socket(start, end),
            #[cfg(feature = "s3")]
            Source::S3(object) => object.stream(start, end),
        }
    }
}

/// What the bytes of unfinished uploads take.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Uploads with bytes kept.
    pub uploads: u64,
    /// Their bytes together.
    pub bytes: u64,
}

/// How a backend finds the bytes of one unfinished upload again; kept in its upload record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case")]
pub enum PartialHandle {
    /// The bytes are one file named by the upload id in the local store: nothing more to
    /// remember. (Records written before handles existed read as this.)
    #[default]
    Local,
    /// A multipart upload in the bucket, its parts and its tail.
    #[cfg(feature = "s3")]
    S3(s3::S3Handle),
}

/// The storage backend for the bytes of unfinished uploads; see the module documentation.
#[derive(Debug, Clone)]
pub enum Partials {
    /// Files in the local store's own folder, on the same file system as the finished files
    /// (so completing one is a rename).
    Local(LocalStore),
    /// Multipart uploads in the bucket, which any instance can continue.
    #[cfg(feature = "s3")]
    S3(s3::S3Store),
}

impl Store {
    /// How this backend keeps its guarantees.
    pub fn capabilities(&self) -> Capabilities {
        match self {
            Store::Local(s) => s.capabilities(),
            #[cfg(feature = "s3")]
            Store::S3(s) => s.capabilities(),
        }
    }

    /// Where the bytes of unfinished uploads go with this backend.
    pub fn partials(&self) -> Partials {
        match self {
            Store::Local(s) => Partials::Local(s.clone()),
            #[cfg(feature = "s3")]
            Store::S3(s) => Partials::S3(s.clone()),
        }
    }

    /// Starts a new upload as `spec` describes it; its bytes are hashed as they are written
    /// when `spec.hashing` asks.
    pub async fn stage(&self, spec: StageSpec<'_>) -> Result<Staged, StoreError> {
        match self {
            Store::Local(s) => Ok(Staged::Local(s.stage(spec.hashing))),
            #[cfg(feature = "s3")]
            Store::S3(s) => Ok(Staged::S3(s.stage(spec).await?)),
        }
    }

    /// Makes a staged upload the file at `key`, atomically and durably, unless something is
    /// already there ([`StoreError::Exists`]; the staged bytes are then dropped).
    pub async fn commit(&self, staged: Staged, key: &FileKey, meta: &FileMeta) -> Result<(), StoreError> {
        match (self, staged) {
            (Store::Local(s), Staged::Local(staged)) => s.commit(staged, key, meta).await,
            #[cfg(feature = "s3")]
            (Store::S3(s), Staged::S3(staged)) => s.commit(staged, key, meta).await,
            #[cfg(feature = "s3")]
            _ => Err(StoreError::other(
                "an upload staged in one store cannot be committed in another",
            )),
        }
    }

    /// Whether the key is taken (a file, or for the local store also a folder).
    pub async fn exists(&self, key: &FileKey) -> bool {
        match self {
            Store::Local(s) => s.exists(key).await,
            #[cfg(feature = "s3")]
            Store::S3(s) => s.exists(key).await,
        }
    }

    /// What is stored at `key`, without its bytes.
    pub async fn head(&self, key: &FileKey) -> Result<ObjectInfo, StoreError> {
        self.open(key, false).await.map(|o| o.info)
    }

    /// Opens the file at `key` for a download; with `read_small`, a file of at most
    /// [`SMALL_FILE_BYTES`] comes with its whole content.
    pub async fn open(&self, key: &FileKey, read_small: bool) -> Result<Opened, StoreError> {
        match self {
            Store::Local(s) => {
                let (info, content, file) = s.open_file(key, read_small).await?;
                Ok(Opened {
                    info,
                    content,
                    source: Source::Local(file),
                })
            }
            #[cfg(feature = "s3")]
            Store::S3(s) => {
                // Boxed: the SDK's answers it keeps across its requests are kilobytes, and
                // every download's future would be that size inline.
                let (info, content, object) = Box::pin(s.open(key, read_small)).await?;
                Ok(Opened {
                    info,
                    content,
                    source: Source::S3(object),
                })
            }
        }
    }

    /// Removes the file at `key` and its metadata; returns the size it had.
    pub async fn delete(&self, key: &FileKey) -> Result<u64, StoreError> {
        match self {
            Store::Local(s) => s.delete(key).await,
            #[cfg(feature = "s3")]
            Store::S3(s) => s.delete(key).await,
        }
    }

    /// Every finished file, as a stream (the store's own files are not in it).
    pub fn list(&self) -> ListStream {
        match self {
            Store::Local(s) => s.list(),
            #[cfg(feature = "s3")]
            Store::S3(s) => s.list(),
        }
    }

    /// Whether the store can take a file now (for `/health`); the reason when not.
    pub async fn probe(&self) -> Result<(), String> {
        match self {
            Store::Local(s) => s.probe().await,
            #[cfg(feature = "s3")]
            Store::S3(s) => s.probe().await,
        }
    }

    /// Removes staged uploads older than `max_age` (left by a crash); returns how many.
    pub async fn sweep_staging(&self, max_age: Duration) -> Result<usize, StoreError> {
        match self {
            Store::Local(s) => s.sweep_temporaries(max_age).await,
            #[cfg(feature = "s3")]
            Store::S3(s) => s.sweep_staging(max_age).await,
        }
    }
}

#[cfg(test)]
impl Store {
    /// A staging in the local store, whose key, size and type come only with the commit.
    #[allow(irrefutable_let_patterns)]
    pub(crate) fn stage_local(&self) -> Staged {
        let Store::Local(s) = self else {
            panic!("not a local store")
        };
        Staged::Local(s.stage(Hashing::NONE))
    }
}

impl Staged {
    /// Takes a frame of a request body, refusing to go past `limit` bytes in all (counting
    /// from the start of this staging); may start a write to the backend.
    pub async fn take_frame<B>(
        &mut self,
        frame: http_body::Frame<Bytes>,
        body: &mut B,
        limit: u64,
    ) -> Result<(), TakeError>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
    {
        match self {
            Staged::Local(s) => s.take_frame(frame, body, limit).await,
            #[cfg(feature = "s3")]
            Staged::S3(s) => s.take_frame(frame, body, limit).await,
            #[cfg(feature = "s3")]
            Staged::S3Append(s) => s.take_frame(frame, body, limit).await,
        }
    }

    /// Takes a chunk of bytes.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        match self {
            Staged::Local(s) => s.write(chunk).await,
            #[cfg(feature = "s3")]
            Staged::S3(s) => s.write(chunk).await,
            #[cfg(feature = "s3")]
            Staged::S3Append(s) => s.write(chunk).await,
        }
    }

    /// Bytes taken so far.
    pub fn len(&self) -> u64 {
        match self {
            Staged::Local(s) => s.len(),
            #[cfg(feature = "s3")]
            Staged::S3(s) => s.len(),
            #[cfg(feature = "s3")]
            Staged::S3Append(s) => s.len(),
        }
    }

    /// Whether nothing was taken.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The digests of everything taken, when staged with hashing.
    pub async fn digests(&mut self) -> Result<Option<Digests>, StoreError> {
        match self {
            Staged::Local(s) => s.digests().await,
            #[cfg(feature = "s3")]
            Staged::S3(s) => Ok(s.digests()),
            #[cfg(feature = "s3")]
            Staged::S3Append(s) => Ok(s.digests()),
        }
    }
}

/// A handle that does not belong to the partial store it is used with (a record written
/// with another StoreBackend).
#[cfg(feature = "s3")]
fn foreign_handle() -> StoreError {
    StoreError::other("the upload was made with another StoreBackend")
}

impl Partials {
    /// Creates the (empty) bytes of a new upload.
    pub async fn create(&self, id: &str) -> Result<PartialHandle, StoreError> {
        match self {
            Partials::Local(s) => s.create_partial(id).await,
            #[cfg(feature = "s3")]
            Partials::S3(s) => s.create_partial(id).await,
        }
    }

    /// Opens upload `id` to append at `offset`, its durable length (anything past it, written
    /// before a crash and never acknowledged, is cut off).
    pub async fn append_at(
        &self,
        id: &str,
        handle: &PartialHandle,
        offset: u64,
        hashing: Hashing,
    ) -> Result<Staged, StoreError> {
        match (self, handle) {
            (Partials::Local(s), PartialHandle::Local) => Ok(Staged::Local(s.open_partial(id, offset, hashing).await?)),
            #[cfg(feature = "s3")]
            (Partials::S3(s), PartialHandle::S3(h)) => {
                Ok(Staged::S3Append(s.append_partial(id, h, offset, hashing).await?))
            }
            #[cfg(feature = "s3")]
            _ => Err(foreign_handle()),
        }
    }

    /// Makes what `appender` (opened at `offset`) took so far durable, and goes on taking;
    /// returns the upload's new durable length and handle.
    pub async fn checkpoint(&self, appender: &mut Staged, offset: u64) -> Result<(u64, PartialHandle), StoreError> {
        match appender {
            Staged::Local(file) => {
                file.sync().await?;
                Ok((offset + file.len(), PartialHandle::Local))
            }
            #[cfg(feature = "s3")]
            Staged::S3Append(appender) => Ok(appender.checkpoint()),
            #[cfg(feature = "s3")]
            Staged::S3(_) => Err(StoreError::other("an upload to the bucket is not a partial upload")),
        }
    }

    /// Makes what `appender` (opened at `offset`) took durable, and closes it; returns the
    /// upload's new durable length and handle.
    pub async fn persist(&self, mut appender: Staged, offset: u64) -> Result<(u64, PartialHandle), StoreError> {
        match appender {
            #[cfg(feature = "s3")]
            Staged::S3Append(appender) => appender.persist().await,
            _ => self.checkpoint(&mut appender, offset).await,
        }
    }

    /// Drops everything `appender` took since its last checkpoint: the upload stays at
    /// `offset`, durably.
    pub async fn discard(&self, appender: Staged, offset: u64) -> Result<(), StoreError> {
        match appender {
            Staged::Local(mut file) => file.truncate(offset).await,
            // Parts it uploaded that no record names are left out of the completion (and
            // replaced by the next append's parts of the same numbers).
            #[cfg(feature = "s3")]
            Staged::S3Append(_) => Ok(()),
            #[cfg(feature = "s3")]
            Staged::S3(_) => Err(StoreError::other("an upload to the bucket is not a partial upload")),
        }
    }

    /// Keeps the bytes of a broken-off whole-file upload as upload `id`; returns their durable
    /// count and the handle.
    pub async fn keep(&self, staged: Staged, id: &str) -> Result<(u64, PartialHandle), StoreError> {
        match (self, staged) {
            (Partials::Local(s), Staged::Local(staged)) => {
                Ok((s.adopt_partial(staged, id).await?, PartialHandle::Local))
            }
            // Its bytes went to the bucket as they came: a whole-file upload to the bucket
            // cannot be kept (its multipart upload is aborted when the staging is dropped).
            #[cfg(feature = "s3")]
            _ => Err(StoreError::other(
                "a broken-off upload to the bucket cannot be kept for resumption",
            )),
        }
    }

    /// The first `len` bytes of upload `id`, as a stream.
    pub fn read(&self, id: &str, handle: &PartialHandle, len: u64) -> ByteStream {
        match (self, handle) {
            (Partials::Local(s), PartialHandle::Local) => s.read_partial(id, len),
            #[cfg(feature = "s3")]
            (Partials::S3(s), PartialHandle::S3(h)) => s.read_partial(id, h, len),
            #[cfg(feature = "s3")]
            _ => Box::pin(futures_util::stream::once(async {
                Err(io::Error::other("the upload was made with another StoreBackend"))
            })),
        }
    }

    /// The digests `hashing` asks for of the first `len` bytes of upload `id` (read once).
    pub async fn digests(
        &self,
        id: &str,
        handle: &PartialHandle,
        len: u64,
        hashing: Hashing,
    ) -> Result<Digests, StoreError> {
        match (self, handle) {
            (Partials::Local(s), PartialHandle::Local) => s.digests_partial(id, len, hashing).await,
            #[cfg(feature = "s3")]
            (Partials::S3(s), PartialHandle::S3(h)) => s.digests_partial(id, h, len, hashing).await,
            #[cfg(feature = "s3")]
            _ => Err(foreign_handle()),
        }
    }

    /// Makes the first `len` bytes of upload `id` the file at `key`, through the store's
    /// no-overwrite commit ([`StoreError::Exists`] when the key is taken; the bytes stay).
    pub async fn complete(
        &self,
        id: &str,
        handle: &PartialHandle,
        len: u64,
        key: &FileKey,
        meta: &FileMeta,
    ) -> Result<(), StoreError> {
        match (self, handle) {
            (Partials::Local(s), PartialHandle::Local) => {
                let staged = s.open_partial(id, len, Hashing::NONE).await?;
                s.commit(staged, key, meta).await
            }
            #[cfg(feature = "s3")]
            (Partials::S3(s), PartialHandle::S3(h)) => s.complete_partial(id, h, len, key, meta).await,
            #[cfg(feature = "s3")]
            _ => Err(foreign_handle()),
        }
    }

    /// Removes the bytes of upload `id` (none is fine).
    pub async fn remove(&self, id: &str, handle: &PartialHandle) -> Result<(), StoreError> {
        match (self, handle) {
            (Partials::Local(s), PartialHandle::Local) => s.remove_partial(id).await,
            #[cfg(feature = "s3")]
            (Partials::S3(s), PartialHandle::S3(h)) => s.remove_partial(id, h).await,
            // A record of another backend (or an unreadable one): nothing here to remove.
            #[cfg(feature = "s3")]
            _ => Ok(()),
        }
    }

    /// How many unfinished uploads have bytes, and how many bytes they hold together.
    pub async fn usage(&self) -> Result<Usage, StoreError> {
        match self {
            Partials::Local(s) => s.partials_usage().await,
            #[cfg(feature = "s3")]
            Partials::S3(s) => s.partials_usage().await,
        }
    }

    /// Removes the bytes of uploads untouched for longer than `max_age`; returns their ids.
    pub async fn sweep(&self, max_age: Duration) -> Result<Vec<String>, StoreError> {
        match self {
            Partials::Local(s) => s.sweep_partials(max_age).await,
            #[cfg(feature = "s3")]
            Partials::S3(s) => s.sweep_partials(max_age).await,
        }
    }
}
