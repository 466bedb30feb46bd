//! The local file-system store.
//!
//! Layout under StoreDir:
//! - `<UploadSubDir>/<key>`: finished files, exactly the bytes uploaded (prosody-filer keeps
//!   the same bytes at `storeDir/<key>`: point StoreDir at the parent of its folder);
//! - `.hmac-file-server/tmp/`: uploads in progress, one randomly named file each;
//! - `.hmac-file-server/partial/`: the bytes of unfinished resumable uploads;
//! - `.hmac-file-server/meta/`: a JSON sidecar per finished file whose content type is not
//!   the default or whose SHA-256 is known ([`super::meta`]).
//!
//! A commit is: write what is pending, `fsync` the staged file, write the sidecar (not
//! fsynced: a torn one is ignored), `renameat2(RENAME_NOREPLACE)` into place (link + unlink
//! where the file system lacks it), then `fsync` the folder. A crash at any point leaves
//! either no file or the whole file at the final path, plus at worst a temporary that the
//! sweeper removes.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustix::fs::{Mode, OFlags, RenameFlags, ResolveFlags};
use rustix::io::Errno;

use super::digest::Hashing;
use super::key::INTERNAL_DIR;
use super::meta::{FileMeta, sidecar_name};
use super::staged::{FILE_MODE, Settled, StagedFile};
use super::{FileKey, StoreError};

const DIR_MODE: u32 = 0o750;

/// Files on the local file system, see the module documentation.
#[derive(Debug, Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    files_dir: PathBuf,
    tmp_dir: PathBuf,
    meta_dir: PathBuf,
    partial_dir: PathBuf,
    buffer_bytes: usize,
    retry: RetryPolicy,
}

/// How transient storage errors (EINTR, EAGAIN, EBUSY, ESTALE, ETIMEDOUT: the kind a busy
/// or network file system gives) are retried: MaxRetries times, RetryDelay apart; reads only
/// with EnableGetRetries.
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

/// Runs `f`, retrying transient failures as `policy` says.
fn retrying<T>(policy: RetryPolicy, what: &str, mut f: impl FnMut() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let mut attempt = 0;
    loop {
        match f() {
            Err(e) if attempt < policy.max_retries && e.is_transient() => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, max = policy.max_retries, "transient storage error during {what}; retrying");
                std::thread::sleep(policy.delay);
            }
            other => return other,
        }
    }
}

/// An open stored file, ready to be sent.
#[derive(Debug)]
pub struct StoredFile {
    /// The open file.
    pub file: File,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time (the commit time).
    pub modified: SystemTime,
    /// Its sidecar, when present and consistent with the file.
    pub meta: Option<FileMeta>,
    /// Its inode number (with size and time, it tells apart two files stored in one clock tick).
    pub inode: u64,
    /// The whole content, when it was asked for and is at most [`SMALL_FILE_BYTES`]: read in
    /// the same trip to the blocking pool as the open.
    pub content: Option<bytes::Bytes>,
}

/// Files up to this size are read whole when opened for a download.
pub const SMALL_FILE_BYTES: u64 = 256 * 1024;

impl Inner {
    /// The upload folder, opened now (not once at start: an operator may replace or remount
    /// it while the server runs).
    fn root(&self) -> Result<OwnedFd, StoreError> {
        rustix::fs::open(
            &self.files_dir,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOENT | Errno::NOTDIR => StoreError::Io(io::Error::other(format!(
                "upload folder {} is missing or not a folder",
                self.files_dir.display()
            ))),
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
        let internal = store_dir.join(INTERNAL_DIR);
        let tmp_dir = internal.join("tmp");
        let meta_dir = internal.join("meta");
        let partial_dir = internal.join("partial");
        for dir in [&files_dir, &tmp_dir, &meta_dir, &partial_dir] {
            DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                files_dir,
                tmp_dir,
                meta_dir,
                partial_dir,
                buffer_bytes,
                retry,
            }),
        })
    }

    /// The folder finished files live in.
    pub fn files_dir(&self) -> &Path {
        &self.inner.files_dir
    }

    /// The folder uploads in progress live in.
    pub fn tmp_dir(&self) -> &Path {
        &self.inner.tmp_dir
    }

    /// The folder the bytes of unfinished resumable uploads live in.
    pub fn partial_dir(&self) -> &Path {
        &self.inner.partial_dir
    }

    /// Where the bytes of resumable upload `id` live (`id` is validated by the caller).
    pub fn partial_path(&self, id: &str) -> PathBuf {
        self.inner.partial_dir.join(format!("{id}.part"))
    }

    /// Opens the bytes of resumable upload `id` to append at `offset`: anything past the
    /// durable offset (written before a crash, never acknowledged) is cut off first. The file
    /// is created when missing and kept when the handle is dropped.
    pub async fn open_partial(&self, id: &str, offset: u64, hashing: Hashing) -> Result<StagedFile, StoreError> {
        let path = self.partial_path(id);
        let buffer_bytes = self.inner.buffer_bytes;
        run_blocking_store(move || {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(FILE_MODE)
                .open(&path)?;
            let len = file.metadata()?.len();
            if len < offset {
                return Err(StoreError::Io(io::Error::other(format!(
                    "partial upload has {len} bytes, its record says {offset}"
                ))));
            }
            if len > offset {
                file.set_len(offset)?;
            }
            use std::io::Seek;
            file.seek(io::SeekFrom::Start(offset))?;
            Ok(StagedFile::existing(path, file, buffer_bytes, hashing))
        })
        .await
    }

    /// Keeps the bytes of a broken-off upload as resumable upload `id`: flushes, fsyncs and
    /// moves the temporary file into the partial folder. Returns the durable byte count.
    pub async fn adopt_partial(&self, mut staged: StagedFile, id: &str) -> Result<u64, StoreError> {
        staged.sync().await?;
        let dest = self.partial_path(id);
        let mut staged = staged.into_settled().await?.staged;
        run_blocking_store(move || {
            let path = staged.path.clone().ok_or_else(|| io::Error::other("nothing written"))?;
            let len = fs::metadata(&path)?.len();
            fs::rename(&path, &dest)?;
            staged.disarm();
            if let Some(parent) = dest.parent() {
                sync_dir(parent)?;
            }
            Ok(len)
        })
        .await
    }

    /// Removes the bytes of resumable upload `id`.
    pub async fn remove_partial(&self, id: &str) -> Result<(), StoreError> {
        let path = self.partial_path(id);
        run_blocking_store(move || match fs::remove_file(path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        })
        .await
    }

    /// Removes partial uploads untouched for longer than `max_age`; returns their ids.
    pub async fn sweep_partials(&self, max_age: Duration) -> Result<Vec<String>, StoreError> {
        let dir = self.inner.partial_dir.clone();
        run_blocking_store(move || {
            Ok(remove_older_than(&dir, max_age)?
                .into_iter()
                .map(|name| name.trim_end_matches(".part").to_string())
                .collect())
        })
        .await
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

    /// Starts a new upload in the temporary folder.
    pub async fn stage(&self) -> Result<StagedFile, StoreError> {
        self.stage_hashing(Hashing::NONE).await
    }

    /// Starts a new upload whose bytes are hashed as they are written (on the I/O thread, so
    /// the file is never read twice).
    pub async fn stage_hashing(&self, hashing: Hashing) -> Result<StagedFile, StoreError> {
        Ok(StagedFile::lazy(&self.inner.tmp_dir, self.inner.buffer_bytes, hashing))
    }

    /// Makes a staged upload the file at `key`, atomically and durably, unless a file is
    /// already there ([`StoreError::Exists`]; the staged file is then removed).
    pub async fn commit(&self, staged: StagedFile, key: &FileKey, meta: &FileMeta) -> Result<(), StoreError> {
        let inner = Arc::clone(&self.inner);
        let key = key.clone();
        // A sidecar that would only repeat the defaults (octet-stream, no digest) is not
        // written: GET answers the same without it (OMEMO uploads are all octet-stream).
        let meta_json = (meta.content_type != crate::auth::DEFAULT_CONTENT_TYPE || meta.sha256.is_some())
            .then(|| serde_json::to_vec(meta))
            .transpose()
            .map_err(io::Error::other)?;
        let Settled {
            mut staged,
            pending,
            hashed,
        } = staged.into_settled().await?;
        // One trip to the blocking pool: write what is pending, fsync, rename, fsync the folder.
        run_blocking_store(move || {
            if !pending.is_empty() || staged.file.is_none() {
                staged.write_chunks(&pending, hashed)?;
            }
            let file = staged
                .file
                .take()
                .ok_or_else(|| io::Error::other("staged file already closed"))?;
            retrying(inner.retry, "fsync", || file.sync_all().map_err(StoreError::from_write))?;
            drop(file);
            let path = staged
                .path
                .clone()
                .ok_or_else(|| io::Error::other("staged file has no path"))?;

            // The sidecar goes first into the temp folder; it is not fsynced: after a crash
            // a torn one is ignored (it must parse and match the size), never trusted.
            let (shard, name) = sidecar_name(&key);
            let shard_dir = inner.meta_dir.join(shard);
            let sidecar = shard_dir.join(name);
            let mut meta_guard = RemoveOnDrop(None);
            if let Some(json) = &meta_json {
                let meta_tmp = inner.tmp_dir.join(format!("{}.meta", random_hex(16)));
                meta_guard = RemoveOnDrop(Some(meta_tmp.clone()));
                let mut f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(FILE_MODE)
                    .open(&meta_tmp)?;
                f.write_all(json).map_err(StoreError::from_write)?;
            }

            retrying(inner.retry, "rename", || rename_into_store(&inner.root()?, &path, &key))?;
            staged.disarm();

            match meta_guard.0.take() {
                Some(meta_tmp) => {
                    if let Err(e) = fs::rename(&meta_tmp, &sidecar) {
                        DirBuilder::new().recursive(true).mode(DIR_MODE).create(&shard_dir)?;
                        fs::rename(&meta_tmp, &sidecar).map_err(|_| e)?;
                    }
                }
                None => {
                    let _ = fs::remove_file(&sidecar);
                }
            }
            Ok(())
        })
        .await
    }

    /// Opens the finished file at `key` for reading, never outside the store.
    pub async fn open_file(&self, key: &FileKey, read_small: bool) -> Result<StoredFile, StoreError> {
        let inner = Arc::clone(&self.inner);
        let key = key.clone();
        run_blocking_store(move || {
            let policy = if inner.retry.on_reads {
                inner.retry
            } else {
                RetryPolicy::NONE
            };
            retrying(policy, "open", || {
                let file = open_beneath(&inner.root()?, &inner.files_dir, key.as_str())?;
                let stat = file.metadata()?;
                if !stat.is_file() {
                    return Err(StoreError::NotFound);
                }
                let size = stat.len();
                let meta = read_sidecar(&inner.meta_dir, &key).filter(|m| m.size == size);
                let content = if read_small && size <= SMALL_FILE_BYTES {
                    use std::io::Read;
                    let mut buf = vec![0u8; size as usize];
                    (&file).read_exact(&mut buf)?;
                    Some(bytes::Bytes::from(buf))
                } else {
                    None
                };
                use std::os::unix::fs::MetadataExt;
                Ok(StoredFile {
                    file,
                    size,
                    modified: stat.modified()?,
                    meta,
                    inode: stat.ino(),
                    content,
                })
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
            rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty()).map_err(io::Error::from)?;
            let (shard, sidecar) = sidecar_name(&key);
            match fs::remove_file(inner.meta_dir.join(shard).join(sidecar)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e.into()),
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

    /// Removes temporaries older than `max_age`; returns how many went.
    pub async fn sweep_temporaries(&self, max_age: Duration) -> Result<usize, StoreError> {
        let tmp = self.inner.tmp_dir.clone();
        run_blocking_store(move || Ok(remove_older_than(&tmp, max_age)?.len())).await
    }
}

struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = fs::remove_file(p);
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

/// Splits a key into its folder (relative, maybe empty) and file name.
fn split_key(key: &FileKey) -> (&str, &str) {
    match key.as_str().rsplit_once('/') {
        Some((dir, name)) => (dir, name),
        None => ("", key.as_str()),
    }
}

/// Opens the folder `rel` beneath the store's root, creating missing folders when `create`,
/// without ever leaving the root: a symlink that points out (or `..` games) fails with
/// [`StoreError::Escape`]; a file where a folder should be with [`StoreError::Exists`].
fn dir_beneath(root_fd: &OwnedFd, rel: &str, create: bool) -> Result<OwnedFd, StoreError> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let mut dir = rustix::fs::openat(root_fd.as_fd(), ".", flags, Mode::empty()).map_err(io::Error::from)?;
    if rel.is_empty() {
        return Ok(dir);
    }
    let mut end = 0;
    for segment in rel.split('/') {
        end += segment.len();
        let prefix = &rel[..end];
        end += 1;
        let mut attempts = 0;
        dir = loop {
            match rustix::fs::openat2(root_fd.as_fd(), prefix, flags, Mode::empty(), resolve) {
                Ok(fd) => break fd,
                Err(Errno::NOENT) if create && attempts < 3 => {
                    attempts += 1;
                    match rustix::fs::mkdirat(&dir, segment, Mode::from_raw_mode(DIR_MODE)) {
                        Ok(()) | Err(Errno::EXIST) => continue,
                        Err(e) => return Err(StoreError::from_write(e.into())),
                    }
                }
                Err(Errno::NOENT) => return Err(StoreError::NotFound),
                Err(Errno::NOTDIR) => return Err(StoreError::Exists),
                Err(Errno::XDEV) | Err(Errno::LOOP) => return Err(StoreError::Escape),
                Err(e) => return Err(StoreError::Io(e.into())),
            }
        };
    }
    Ok(dir)
}

/// Renames `from` into the store at `key` unless something is there already, creating the
/// key's folders beneath the root (never through a symlink that leads out), then fsyncs the
/// folder.
fn rename_into_store(root_fd: &OwnedFd, from: &Path, key: &FileKey) -> Result<(), StoreError> {
    let (dir_rel, name) = split_key(key);
    for attempt in 0..3 {
        let dir = dir_beneath(root_fd, dir_rel, true)?;
        let cwd = rustix::fs::CWD;
        let result = match rustix::fs::renameat_with(cwd, from, &dir, name, RenameFlags::NOREPLACE) {
            // File systems without RENAME_NOREPLACE: `link` fails if the target exists.
            Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                rustix::fs::linkat(cwd, from, &dir, name, rustix::fs::AtFlags::empty()).map(|()| {
                    let _ = rustix::fs::unlink(from);
                })
            }
            other => other,
        };
        match result {
            Ok(()) => return rustix::fs::fsync(&dir).map_err(|e| StoreError::from_write(e.into())),
            Err(Errno::EXIST) | Err(Errno::NOTDIR) | Err(Errno::ISDIR) | Err(Errno::NOTEMPTY) => {
                return Err(StoreError::Exists);
            }
            // A concurrent delete removed the emptied folder between mkdir and rename.
            Err(Errno::NOENT) if attempt < 2 => continue,
            Err(e) => return Err(StoreError::from_write(e.into())),
        }
    }
    Err(StoreError::Io(io::Error::other("rename kept failing")))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)?.sync_all().map_err(StoreError::from_write)
}

/// Opens `relative` beneath the folder `dir_fd` without leaving it, even through symlinks.
fn open_beneath(dir_fd: &OwnedFd, dir: &Path, relative: &str) -> Result<File, StoreError> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(dir_fd.as_fd(), relative, flags, Mode::empty(), resolve) {
        Ok(fd) => Ok(File::from(fd)),
        Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::XDEV) | Err(Errno::LOOP) => Err(StoreError::NotFound),
        Err(Errno::NOSYS) | Err(Errno::PERM) => {
            // Kernels before 5.6 (or a seccomp filter): resolve and check the prefix.
            let path = dir.join(relative);
            let real = fs::canonicalize(&path).map_err(|_| StoreError::NotFound)?;
            let root = fs::canonicalize(dir)?;
            if !real.starts_with(&root) {
                return Err(StoreError::NotFound);
            }
            File::open(real).map_err(|_| StoreError::NotFound)
        }
        Err(e) => Err(StoreError::Io(e.into())),
    }
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
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io(io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn key(s: &str) -> FileKey {
        FileKey::parse_decoded(s).unwrap()
    }

    fn meta(size: u64) -> FileMeta {
        FileMeta {
            content_type: "text/plain".into(),
            size,
            uploaded_unix: 1,
            sha256: None,
        }
    }

    #[tokio::test]
    async fn commit_then_read_then_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), "upload", 4096, RetryPolicy::NONE).unwrap();
        let mut staged = store.stage().await.unwrap();
        staged.write(Bytes::from_static(b"hello ")).await.unwrap();
        staged.write(Bytes::from(vec![b'x'; 10_000])).await.unwrap();
        assert_eq!(staged.len(), 10_006);
        store.commit(staged, &key("a/b c.txt"), &meta(10_006)).await.unwrap();
        let on_disk = fs::read(dir.path().join("upload/a/b c.txt")).unwrap();
        assert_eq!(on_disk.len(), 10_006);
        assert!(on_disk.starts_with(b"hello x"));
        let opened = store.open_file(&key("a/b c.txt"), true).await.unwrap();
        assert_eq!(opened.size, 10_006);
        assert_eq!(opened.meta.unwrap().content_type, "text/plain");
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0, "no temporaries left");

        store.delete(&key("a/b c.txt")).await.unwrap();
        assert!(!dir.path().join("upload/a").exists(), "emptied folder removed");
        assert!(matches!(
            store.delete(&key("a/b c.txt")).await,
            Err(StoreError::NotFound)
        ));
    }

    #[tokio::test]
    async fn no_replace_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), "upload", 4096, RetryPolicy::NONE).unwrap();
        let mut first = store.stage().await.unwrap();
        first.write(Bytes::from_static(b"first")).await.unwrap();
        store.commit(first, &key("k/f"), &meta(5)).await.unwrap();
        let mut second = store.stage().await.unwrap();
        second.write(Bytes::from_static(b"second")).await.unwrap();
        assert!(matches!(
            store.commit(second, &key("k/f"), &meta(6)).await,
            Err(StoreError::Exists)
        ));
        assert_eq!(fs::read(dir.path().join("upload/k/f")).unwrap(), b"first");
        // A file where a folder would have to be.
        let third = store.stage().await.unwrap();
        assert!(matches!(
            store.commit(third, &key("k/f/g"), &meta(0)).await,
            Err(StoreError::Exists)
        ));
        // A folder where the file would go.
        let fourth = store.stage().await.unwrap();
        assert!(matches!(
            store.commit(fourth, &key("k"), &meta(0)).await,
            Err(StoreError::Exists)
        ));
        assert_eq!(
            fs::read_dir(store.tmp_dir()).unwrap().count(),
            0,
            "losers leave nothing behind"
        );
        // Dropped without commit.
        let mut dropped = store.stage().await.unwrap();
        dropped.write(Bytes::from_static(b"partial")).await.unwrap();
        drop(dropped);
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn stale_sidecar_is_ignored_and_symlinks_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), "upload", 4096, RetryPolicy::NONE).unwrap();
        let mut staged = store.stage().await.unwrap();
        staged.write(Bytes::from_static(b"abc")).await.unwrap();
        store.commit(staged, &key("s/f"), &meta(99)).await.unwrap();
        assert!(store.open_file(&key("s/f"), false).await.unwrap().meta.is_none());

        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("upload/link")).unwrap();
        assert!(matches!(
            store.open_file(&key("link/secret"), false).await,
            Err(StoreError::NotFound)
        ));
        assert!(
            matches!(store.open_file(&key("s"), false).await, Err(StoreError::NotFound)),
            "a folder is not a file"
        );
    }

    #[test]
    fn transient_errors_are_retried_others_not() {
        let policy = RetryPolicy {
            max_retries: 3,
            delay: Duration::from_millis(1),
            on_reads: true,
        };
        let mut calls = 0;
        let result = retrying(policy, "test", || {
            calls += 1;
            if calls < 3 {
                Err(StoreError::Io(Errno::AGAIN.into()))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(result.unwrap(), 3);
        let mut calls = 0;
        let result: Result<(), _> = retrying(policy, "test", || {
            calls += 1;
            Err(StoreError::Io(Errno::STALE.into()))
        });
        assert!(result.is_err());
        assert_eq!(calls, 4, "one try and three retries");
        let mut calls = 0;
        let result: Result<(), _> = retrying(policy, "test", || {
            calls += 1;
            Err(StoreError::NotFound)
        });
        assert!(matches!(result, Err(StoreError::NotFound)));
        assert_eq!(calls, 1, "a missing file is not transient");
    }

    #[tokio::test]
    async fn sweeps_only_old_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path(), "", 4096, RetryPolicy::NONE).unwrap();
        let old = store.tmp_dir().join("old.part");
        fs::write(&old, b"x").unwrap();
        let past = SystemTime::now() - Duration::from_secs(7200);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(past)
            .unwrap();
        let mut fresh = store.stage().await.unwrap();
        fresh.write(Bytes::from_static(b"x")).await.unwrap();
        fresh.sync().await.unwrap();
        assert_eq!(store.sweep_temporaries(Duration::from_secs(3600)).await.unwrap(), 1);
        assert!(!old.exists());
        assert_eq!(fs::read_dir(store.tmp_dir()).unwrap().count(), 1);
    }
}
