//! The local file-system store: both seams of [`crate::store`] on one folder.
//!
//! Layout under StoreDir:
//! - `<UploadSubDir>/<key>`: finished files, exactly the bytes uploaded (prosody-filer keeps
//!   the same bytes at `storeDir/<key>`: point StoreDir at the parent of its folder);
//! - `.hmac-file-server/tmp/`: uploads in progress, one unnamed file each ([`unnamed`]; one
//!   randomly named file each where the file system has no unnamed files), and sidecars on
//!   their way to the meta folder;
//! - `.hmac-file-server/partial/`: the bytes of unfinished resumable uploads ([`partial`]);
//! - `.hmac-file-server/meta/`: a JSON sidecar per finished file whose content type is not
//!   the default or whose SHA-256 is known ([`crate::store::meta`]); a file stored with the
//!   defaults carries an empty extended attribute instead, that says it has none ([`mark`]).
//!
//! A commit is: write what is pending, stamp the file's modification time (unique per
//! commit, so it serves as the ETag with the size), `fsync` the staged file, write the
//! sidecar (not fsynced: a torn one is ignored), `linkat` the unnamed file into place (which
//! fails when the name is taken; a named temporary, or a resumable upload's bytes, are
//! renamed with `renameat2(RENAME_NOREPLACE)`, or link + unlink where the file system lacks
//! it), then `fsync` the folder. A crash at any point leaves either no file or the whole file
//! at the final path, plus at worst a named temporary or sidecar that the sweeper removes.

mod beneath;
mod cached;
mod held;
pub mod mapped;
mod mark;
mod partial;
mod staged;
mod unnamed;

pub use staged::{StagedFile, WRITE_BATCH_BYTES};

use std::fs::{self, DirBuilder, File};
use std::io::{self, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::meta::{FileMeta, sidecar_name};
use super::{ByteStream, Capabilities, Hashing, ListStream, Listed, NoOverwrite, ObjectInfo, RetryPolicy};
use super::{SMALL_FILE_BYTES, StoreError};
use crate::key::{FileKey, INTERNAL_DIR};
use beneath::{dir_beneath, open_beneath, place_into_store, split_key, take_back};
use held::HeldDir;
use staged::{FILE_MODE, Settled};

const DIR_MODE: u32 = 0o750;
/// Read size when streaming a file out.
const READ_CHUNK_BYTES: usize = 1024 * 1024;

/// Files on the local file system, see the module documentation.
#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug, Clone)]
struct Inner {
    /// The upload folder, where finished files are.
    files: HeldDir,
    internal_dir: PathBuf,
    /// Uploads in progress.
    tmp: Arc<HeldDir>,
    /// How an unnamed temporary is linked into place; `None`: temporaries are named.
    unnamed: Option<unnamed::Linking>,
    /// The sidecars' folder.
    meta: HeldDir,
    partial_dir: PathBuf,
    buffer_bytes: usize,
    retry: RetryPolicy,
    /// The files and their metadata are on a file system in memory (tmpfs, ramfs): no lookup
    /// or read there ever waits for a device.
    memory_backed: bool,
}

/// Whether `path` is on a file system kept in memory (tmpfs, ramfs).
fn in_memory(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    rustix::fs::statfs(path).is_ok_and(|s| {
        #[allow(clippy::unnecessary_cast)] // its type differs between architectures
        let kind = s.f_type as i64;
        kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
    })
}

/// Classifies an I/O error from a write path: ENOSPC and EDQUOT are [`StoreError::Full`].
pub(crate) fn classify_write(e: io::Error) -> StoreError {
    let full = [Errno::NOSPC, Errno::DQUOT]
        .iter()
        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
        || matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded);
    if full { StoreError::Full(e) } else { StoreError::Io(e) }
}

/// Whether trying again may succeed (EINTR, EAGAIN, EBUSY, ESTALE, ETIMEDOUT).
fn is_transient(e: &StoreError) -> bool {
    let StoreError::Io(e) = e else { return false };
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) || [Errno::INTR, Errno::AGAIN, Errno::BUSY, Errno::STALE, Errno::TIMEDOUT]
        .iter()
        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
}

/// Runs `f`, retrying transient failures as `policy` says.
fn retrying<T>(policy: RetryPolicy, what: &str, mut f: impl FnMut() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let mut attempt = 0;
    loop {
        match f() {
            Err(e) if attempt < policy.max_retries && is_transient(&e) => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, max = policy.max_retries, "transient storage error during {what}; retrying");
                std::thread::sleep(policy.delay);
            }
            other => return other,
        }
    }
}

/// A modification time for a commit: now, with nanoseconds, and later than every one given
/// before in this process. With the size it is the file's ETag, so two files committed at one
/// key (a delete, then a new upload of the same size) never share a validator, whatever the
/// clock's tick (no inode number needed: those are reused, and object stores have none).
fn unique_commit_time() -> SystemTime {
    static LAST_NANOS: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let previous = LAST_NANOS
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(now.max(last + 1)))
        .unwrap_or(now);
    UNIX_EPOCH + Duration::from_nanos(now.max(previous + 1))
}

/// What a download needs to know of a finished file of `size` bytes modified at `modified`.
fn object_info(size: u64, modified: SystemTime, meta: Option<FileMeta>) -> ObjectInfo {
    ObjectInfo {
        size,
        modified,
        etag: etag(size, modified),
        meta,
    }
}

/// The ETag of a local file: its size and modification time in nanoseconds.
fn etag(size: u64, modified: SystemTime) -> String {
    let nanos = modified.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    format!("\"{size:x}-{nanos:x}\"")
}

/// A finished file opened for a download.
#[derive(Debug)]
pub struct OpenFile {
    file: Arc<File>,
    /// On a file system in memory: mapping a piece never waits for a device.
    memory_backed: bool,
}

impl OpenFile {
    fn new(file: Arc<File>, memory_backed: bool) -> Self {
        Self { file, memory_backed }
    }

    /// The bytes `start..end` in READ_CHUNK_BYTES pieces, the next piece always being read
    /// (with `pread`, on the blocking pool) while the current one is sent: disk and socket work
    /// at the same time, and at most two pieces are in memory per download.
    pub fn stream(self, start: u64, end: u64) -> ByteStream {
        let file = self.file;
        pieces(start, end, READ_CHUNK_BYTES as u64, move |offset, len| {
            let file = Arc::clone(&file);
            Piece::Reading(tokio::task::spawn_blocking(move || read_piece(&file, offset, len)))
        })
    }

    /// The bytes `start..end` for a response body written to a client's socket: pieces mapped
    /// from the file ([`mapped`]), which the connection sends with `sendfile` (no copy through
    /// memory of the server's own). On a file system in memory the pieces are mapped as they
    /// are wanted (nothing waits), 4 MiB each; on a disk each is read in on the blocking pool
    /// (1 MiB, the next while the current one is sent), so that sending never waits for the
    /// device on the runtime.
    pub fn stream_to_socket(self, start: u64, end: u64) -> ByteStream {
        let file = self.file;
        if self.memory_backed {
            return pieces(start, end, MAPPED_PIECE_BYTES, move |offset, len| {
                Piece::Ready(mapped::map(&file, offset, len, false).or_else(|_| read_piece(&file, offset, len)))
            });
        }
        pieces(start, end, READ_CHUNK_BYTES as u64, move |offset, len| {
            let file = Arc::clone(&file);
            Piece::Reading(tokio::task::spawn_blocking(move || {
                mapped::map(&file, offset, len, true).or_else(|_| read_piece(&file, offset, len))
            }))
        })
    }
}

/// `len` bytes of `file` from `offset`, read into a buffer: for readers other than a socket,
/// and where a piece cannot be mapped (the process's limit of mappings, `vm.max_map_count`,
/// reached by very many downloads at once).
fn read_piece(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    // Into the spare capacity: no zeroing of bytes about to be overwritten.
    let mut buf = Vec::with_capacity(len);
    while buf.len() < len {
        let at = offset + buf.len() as u64;
        let spare = rustix::buffer::spare_capacity(&mut buf);
        if rustix::io::pread(file, spare, at)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(Bytes::from(buf))
}

/// Mapped pieces on a file system in memory (pages not touched, so not part of the RSS).
const MAPPED_PIECE_BYTES: u64 = 4 * 1024 * 1024;

/// A piece of a download: made already, or being read on the blocking pool.
enum Piece {
    Ready(io::Result<Bytes>),
    Reading(tokio::task::JoinHandle<io::Result<Bytes>>),
}

impl Piece {
    async fn bytes(self) -> io::Result<Bytes> {
        match self {
            Piece::Ready(result) => result,
            Piece::Reading(read) => read.await.unwrap_or_else(|e| Err(io::Error::other(e))),
        }
    }
}

/// `start..end` in pieces of at most `piece` bytes, each made by `make(offset, len)` when the
/// one before it is handed out (for pieces read on the blocking pool: the next read overlaps
/// the sending of the current piece).
fn pieces<F>(start: u64, end: u64, piece: u64, make: F) -> ByteStream
where
    F: Fn(u64, usize) -> Piece + Send + Sync + 'static,
{
    let next = move |offset: u64| (offset < end).then(|| make(offset, (end - offset).min(piece) as usize));
    let first = next(start);
    Box::pin(futures_util::stream::unfold(
        (next, start, first),
        move |(next, offset, pending)| async move {
            match pending?.bytes().await {
                Ok(chunk) => {
                    let at = offset + chunk.len() as u64;
                    let following = next(at);
                    Some((Ok(chunk), (next, at, following)))
                }
                Err(e) => Some((Err(e), (next, end, None))),
            }
        },
    ))
}

impl Inner {
    /// The sidecars' folder, made again if it went missing.
    fn meta_dir(&self) -> Result<Arc<held::Opened>, StoreError> {
        match self.meta.open() {
            Err(Errno::NOENT) => {
                DirBuilder::new()
                    .recursive(true)
                    .mode(DIR_MODE)
                    .create(self.meta.path())?;
                self.meta.open().map_err(|e| StoreError::Io(e.into()))
            }
            other => other.map_err(|e| StoreError::Io(e.into())),
        }
    }

    /// The upload folder, opened at most [`held::HOLD`] ago (not once at start: an operator
    /// may replace or remount it while the server runs).
    fn root(&self) -> Result<Arc<held::Opened>, StoreError> {
        self.files.open().map_err(|e| match e {
            Errno::NOENT | Errno::NOTDIR => StoreError::other(format!(
                "upload folder {} is missing or not a folder",
                self.files.path().display()
            )),
            e => StoreError::Io(e.into()),
        })
    }
}

impl LocalStore {
    /// Opens (creating where needed) the store under `store_dir`, with finished files under
    /// `store_dir/sub_dir`.
    pub fn open(store_dir: &Path, sub_dir: &str, buffer_bytes: usize, retry: RetryPolicy) -> Result<Self, StoreError> {
        let files_dir = if sub_dir.is_empty() {
            store_dir.to_path_buf()
        } else {
            store_dir.join(sub_dir)
        };
        let internal_dir = store_dir.join(INTERNAL_DIR);
        let tmp_dir = internal_dir.join("tmp");
        let meta_dir = internal_dir.join("meta");
        let partial_dir = internal_dir.join("partial");
        for dir in [&files_dir, &tmp_dir, &meta_dir, &partial_dir] {
            DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
        }
        let memory_backed = in_memory(&files_dir) && in_memory(&meta_dir);
        let unnamed = unnamed::probe(&tmp_dir);
        match unnamed {
            Some(linking) => tracing::debug!(?linking, "uploads in progress are unnamed files"),
            None => tracing::info!(
                folder = %tmp_dir.display(),
                "this file system or process cannot link unnamed files (O_TMPFILE): uploads in progress are named files"
            ),
        }
        Ok(Self {
            inner: Arc::new(Inner {
                files: HeldDir::new(files_dir),
                internal_dir,
                tmp: Arc::new(HeldDir::new(tmp_dir)),
                unnamed,
                meta: HeldDir::new(meta_dir),
                partial_dir,
                buffer_bytes,
                retry,
                memory_backed,
            }),
        })
    }

    /// The temporary folder, for other stores' temporaries (the S3 store's part buffers).
    #[cfg(feature = "s3")]
    pub(crate) fn tmp_dir_path(&self) -> &Path {
        self.inner.tmp.path()
    }

    /// The temporary folder (for tests that look at what is left there).
    #[cfg(test)]
    pub(crate) fn tmp_dir(&self) -> &Path {
        self.inner.tmp.path()
    }

    /// The temporaries: files in the temporary folder, and unnamed ones open in this process
    /// (an unnamed file shows in `/proc/self/fd` as `<folder>/#<inode> (deleted)`).
    #[cfg(test)]
    pub(crate) fn temporaries(&self) -> usize {
        let folder = fs::canonicalize(self.tmp_dir()).unwrap();
        let named = fs::read_dir(&folder).unwrap().count();
        let unnamed = fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .flatten()
            .filter_map(|fd| fs::read_link(fd.path()).ok())
            .filter(|target| target.starts_with(&folder) && target.to_string_lossy().ends_with(" (deleted)"))
            .count();
        named + unnamed
    }

    /// Whether uploads in progress are unnamed files here.
    #[cfg(test)]
    pub(crate) fn unnamed_temporaries(&self) -> bool {
        self.inner.unnamed.is_some()
    }

    /// The store with named temporaries, as on a file system without unnamed files (for tests
    /// of that way; call before any clone).
    #[cfg(test)]
    pub(crate) fn with_named_temporaries(mut self) -> Self {
        Arc::get_mut(&mut self.inner).expect("not shared yet").unnamed = None;
        self
    }

    /// How this backend keeps the store's guarantees.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: "local",
            no_overwrite: NoOverwrite::Native("renameat2(RENAME_NOREPLACE), or link+unlink"),
            durability: "fsync of the file and of its folder",
            partials: "files in the store's own folder, renamed into place when complete",
            keeps_broken_off: true,
        }
    }

    /// Whether a finished file (or folder) exists at the key.
    pub async fn exists(&self, key: &FileKey) -> bool {
        let inner = Arc::clone(&self.inner);
        let key = key.clone();
        run_blocking_store(move || {
            let (dir_rel, name) = split_key(&key);
            let Ok(root) = inner.root() else { return Ok(false) };
            match dir_beneath(&root, dir_rel, false) {
                Ok(dir) => Ok(rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW).is_ok()),
                Err(StoreError::Exists) => Ok(true),
                Err(_) => Ok(false),
            }
        })
        .await
        .unwrap_or(false)
    }

    /// Starts a new upload whose bytes are hashed as they are written (on the I/O thread, so
    /// the file is never read twice); its temporary file is created by the first write.
    pub fn stage(&self, hashing: Hashing) -> StagedFile {
        StagedFile::lazy(
            Arc::clone(&self.inner.tmp),
            self.inner.unnamed,
            self.inner.buffer_bytes,
            hashing,
        )
    }

    /// A staging without hashing, for tests.
    #[cfg(test)]
    pub(crate) fn stage_local(&self) -> StagedFile {
        self.stage(Hashing::NONE)
    }

    /// Makes a staged upload the file at `key`, atomically and durably, unless a file is
    /// already there ([`StoreError::Exists`]; a temporary staged file is then removed, a
    /// partial upload's bytes stay).
    pub async fn commit(&self, staged: StagedFile, key: &FileKey, meta: &FileMeta) -> Result<(), StoreError> {
        let inner = Arc::clone(&self.inner);
        let key = key.clone();
        // A sidecar that would only repeat the defaults (octet-stream, no digest) is not
        // written: GET answers the same without it (OMEMO uploads are all octet-stream).
        let meta_json = (meta.content_type != crate::auth::DEFAULT_CONTENT_TYPE || meta.sha256.is_some())
            .then(|| serde_json::to_vec(meta))
            .transpose()
            .map_err(StoreError::other)?;
        let Settled {
            mut staged,
            pending,
            hashed,
        } = staged.into_settled().await?;
        // One trip to the blocking pool (none on a file system in memory, where nothing waits
        // for a device): write what is pending, stamp, fsync, rename, fsync the folder.
        let memory_backed = self.inner.memory_backed;
        let mut work = move || {
            if !pending.is_empty() || staged.file.is_none() {
                staged.write_chunks(&pending, hashed)?;
            }
            // Open until the commit is done: an unnamed temporary is its descriptor.
            let file = staged
                .file
                .as_ref()
                .ok_or_else(|| StoreError::other("staged file already closed"))?;
            file.set_modified(unique_commit_time())?;
            if meta_json.is_none() {
                mark::set_defaults(file);
            } else if staged.was_there() {
                mark::clear(file).map_err(classify_write)?;
            }
            crate::fault::point("store.fsync").map_err(classify_write)?;
            retrying(inner.retry, "fsync", || file.sync_all().map_err(classify_write))?;
            let from = staged
                .origin()
                .ok_or_else(|| StoreError::other("staged file has no path"))?;

            // The sidecar goes first into the temp folder; it is not fsynced: after a crash
            // a torn one is ignored (it must parse and match the size), never trusted.
            let (shard, name) = sidecar_name(&key);
            let sidecar = Path::new(&shard).join(&name);
            let meta_tmp = match &meta_json {
                Some(json) => {
                    let tmp = TempName {
                        dir: inner.tmp.open().map_err(|e| classify_write(e.into()))?,
                        name: format!("{}.meta", random_hex(16)),
                    };
                    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
                    let fd = rustix::fs::openat(&tmp.dir, &tmp.name, flags, Mode::from_raw_mode(FILE_MODE))
                        .map_err(|e| classify_write(e.into()))?;
                    File::from(fd).write_all(json).map_err(classify_write)?;
                    Some(tmp)
                }
                None => None,
            };

            let root = inner.root()?;
            retrying(inner.retry, "placing", || place_into_store(&root, from, &key))?;

            // The file is at its key; a sidecar that cannot follow it takes it back out (an
            // error answer leaves nothing at the key).
            let placed = match &meta_tmp {
                Some(tmp) => crate::fault::point("store.commit.sidecar")
                    .map_err(StoreError::from)
                    .and_then(|()| {
                        let meta = inner.meta_dir()?;
                        let rename = || rustix::fs::renameat(&tmp.dir, &tmp.name, &meta, &sidecar);
                        match rename() {
                            Ok(()) => Ok(()),
                            Err(e) => {
                                match rustix::fs::mkdirat(&meta, &shard, Mode::from_raw_mode(DIR_MODE)) {
                                    Ok(()) | Err(Errno::EXIST) => {}
                                    Err(e) => return Err(classify_write(e.into())),
                                }
                                rename().map_err(|_| classify_write(e.into()))
                            }
                        }
                    }),
                // A sidecar left by an earlier file at this key (a delete cut short by a
                // crash) must not describe this one.
                None => {
                    if let Ok(meta) = inner.meta.open() {
                        let _ = rustix::fs::unlinkat(&meta, &sidecar, rustix::fs::AtFlags::empty());
                    }
                    Ok(())
                }
            };
            match placed {
                Ok(()) => {
                    if let Some(tmp) = meta_tmp {
                        tmp.keep();
                    }
                    staged.disarm();
                    Ok(())
                }
                Err(e) => {
                    take_back(&root, &key, from);
                    Err(match e {
                        StoreError::Io(e) => classify_write(e),
                        other => other,
                    })
                }
            }
        };
        if memory_backed {
            work()
        } else {
            run_blocking_store(work).await
        }
    }

    /// Opens the finished file at `key` for reading, never outside the store: what it is,
    /// its whole content when `read_small` and it is small, and the open file.
    pub async fn open_file(
        &self,
        key: &FileKey,
        read_small: bool,
    ) -> Result<(ObjectInfo, Option<Bytes>, OpenFile), StoreError> {
        // Everything in the kernel's caches: no hand-off to the blocking pool.
        if let Some(found) = cached::open_file(&self.inner, key, read_small) {
            return found;
        }
        self.open_blocking(key, read_small).await
    }

    /// [`Self::open_file`] on the blocking pool.
    async fn open_blocking(
        &self,
        key: &FileKey,
        read_small: bool,
    ) -> Result<(ObjectInfo, Option<Bytes>, OpenFile), StoreError> {
        let inner = Arc::clone(&self.inner);
        let key = key.clone();
        run_blocking_store(move || {
            let policy = if inner.retry.on_reads {
                inner.retry
            } else {
                RetryPolicy::NONE
            };
            retrying(policy, "open", || {
                let file = open_beneath(&inner.root()?, inner.files.path(), key.as_str())?;
                let stat = file.metadata()?;
                if !stat.is_file() {
                    return Err(StoreError::NotFound);
                }
                let size = stat.len();
                let modified = stat.modified()?;
                let meta = if mark::has_defaults(&file) {
                    None
                } else {
                    read_sidecar(inner.meta.path(), &key).filter(|m| m.size == size)
                };
                let content = if read_small && size <= SMALL_FILE_BYTES {
                    use std::io::Read;
                    let mut buf = vec![0u8; size as usize];
                    (&file).read_exact(&mut buf)?;
                    Some(Bytes::from(buf))
                } else {
                    None
                };
                Ok((
                    object_info(size, modified, meta),
                    content,
                    OpenFile::new(Arc::new(file), inner.memory_backed),
                ))
            })
        })
        .await
    }

    /// Removes the finished file at `key` and its sidecar, and the folders it leaves empty;
    /// returns the size it had.
    pub async fn delete(&self, key: &FileKey) -> Result<u64, StoreError> {
        let inner = Arc::clone(&self.inner);
        let key = key.clone();
        run_blocking_store(move || {
            let (dir_rel, name) = split_key(&key);
            let root = inner.root()?;
            let dir = match dir_beneath(&root, dir_rel, false) {
                Ok(d) => d,
                Err(StoreError::Exists) => return Err(StoreError::NotFound),
                Err(e) => return Err(e),
            };
            let size = match rustix::fs::statat(&dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::RegularFile => {
                    st.st_size as u64
                }
                Ok(_) | Err(Errno::NOENT) => return Err(StoreError::NotFound),
                Err(e) => return Err(StoreError::Io(e.into())),
            };
            crate::fault::point("store.delete")?;
            rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty()).map_err(io::Error::from)?;
            // The file is gone, which is what was asked: a sidecar that stays is only logged
            // (it is never used for another file: it must match a file's size at this key,
            // and the next commit there replaces or removes it).
            let (shard, sidecar) = sidecar_name(&key);
            let removed = crate::fault::point("store.delete.sidecar")
                .and_then(|()| fs::remove_file(inner.meta.path().join(shard).join(sidecar)));
            match removed {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    tracing::warn!(path = %key, error = %e, "file deleted, its metadata sidecar stays");
                }
                _ => {}
            }
            // Remove the folders the file leaves empty, deepest first (beneath the root only).
            let mut rel = dir_rel;
            while !rel.is_empty() {
                let (parent_rel, leaf) = rel.rsplit_once('/').unwrap_or(("", rel));
                let Ok(parent) = dir_beneath(&root, parent_rel, false) else {
                    break;
                };
                if rustix::fs::unlinkat(&parent, leaf, rustix::fs::AtFlags::REMOVEDIR).is_err() {
                    break;
                }
                rel = parent_rel;
            }
            Ok(size)
        })
        .await
    }

    /// Every regular file under the upload folder whose name is a valid key (the store's own
    /// folder and anything else are left out), walked on the blocking pool and handed over
    /// in a bounded channel.
    pub fn list(&self) -> ListStream {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let root = self.inner.files.path().to_path_buf();
        let internal = self.inner.internal_dir.clone();
        tokio::task::spawn_blocking(move || {
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if dir == root => {
                        let _ = tx.blocking_send(Err(StoreError::Io(e)));
                        return;
                    }
                    Err(_) => continue,
                };
                for entry in entries.flatten() {
                    let Ok(kind) = entry.file_type() else { continue };
                    let path = entry.path();
                    if kind.is_dir() {
                        if path != internal {
                            stack.push(path);
                        }
                        continue;
                    }
                    if !kind.is_file() {
                        continue;
                    }
                    let Ok(meta) = entry.metadata() else { continue };
                    let Some(rel) = path.strip_prefix(&root).ok().and_then(|p| p.to_str()) else {
                        continue;
                    };
                    let Ok(key) = FileKey::parse_decoded(rel) else { continue };
                    let listed = Listed {
                        key,
                        size: meta.len(),
                        modified: meta.modified().unwrap_or(UNIX_EPOCH),
                    };
                    if tx.blocking_send(Ok(listed)).is_err() {
                        return;
                    }
                }
            }
        });
        Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }))
    }

    /// The upload folder is a writable folder, and a probe file can be created, written,
    /// synced and removed in the temporary folder (none in the upload folder: GET or
    /// retention would see it).
    pub async fn probe(&self) -> Result<(), String> {
        let files = self.inner.files.path().to_path_buf();
        let tmp = self.inner.tmp.path().to_path_buf();
        tokio::task::spawn_blocking(move || {
            match fs::metadata(&files) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(format!("{} is not a folder", files.display())),
                Err(e) => return Err(format!("upload folder unusable: {e}")),
            }
            rustix::fs::access(&files, rustix::fs::Access::WRITE_OK)
                .map_err(|e| format!("upload folder not writable: {e}"))?;
            let path = tmp.join(format!("health-{}.probe", std::process::id()));
            let result = File::create(&path)
                .and_then(|mut f| f.write_all(b"ok").and_then(|()| f.sync_all()))
                .map_err(|e| format!("store not writable: {e}"));
            let _ = fs::remove_file(&path);
            result
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Removes temporaries older than `max_age`; returns how many went.
    pub async fn sweep_temporaries(&self, max_age: Duration) -> Result<usize, StoreError> {
        let tmp = self.inner.tmp.path().to_path_buf();
        run_blocking_store(move || Ok(remove_older_than(&tmp, max_age)?.len())).await
    }
}

/// A temporary file in a folder held open, removed when dropped unless kept (renamed away).
struct TempName {
    dir: Arc<held::Opened>,
    /// Empty once kept.
    name: String,
}

impl TempName {
    fn keep(mut self) {
        self.name.clear();
    }
}

impl Drop for TempName {
    fn drop(&mut self) {
        if !self.name.is_empty() {
            let _ = rustix::fs::unlinkat(&self.dir, &self.name, rustix::fs::AtFlags::empty());
        }
    }
}

/// Removes the files in `dir` not modified for longer than `max_age`; returns their names.
fn remove_older_than(dir: &Path, max_age: Duration) -> Result<Vec<String>, StoreError> {
    let now = SystemTime::now();
    let mut removed = Vec::new();
    for entry in fs::read_dir(dir)?.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if meta.is_file() && age > max_age && fs::remove_file(entry.path()).is_ok() {
            removed.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(removed)
}

fn read_sidecar(meta_dir: &Path, key: &FileKey) -> Option<FileMeta> {
    let (shard, name) = sidecar_name(key);
    let text = fs::read(meta_dir.join(shard).join(name)).ok()?;
    serde_json::from_slice(&text).ok()
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

async fn run_blocking_store<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(StoreError::other)?
}

#[cfg(test)]
mod tests;
