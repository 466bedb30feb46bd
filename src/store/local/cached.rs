//! The cached fast path of opening a finished file for a download.
//!
//! When everything a download's open needs is in the kernel's caches (the path's dentries, the
//! inode, and for a small file its pages), it is done on the runtime thread: a hand-off to
//! the blocking pool costs two context switches and a wake-up, half of a small GET's CPU.
//! `openat2(RESOLVE_CACHED)` and `preadv2(RWF_NOWAIT)` answer `EAGAIN` instead of waiting for
//! a disk, and the caller then takes the blocking path, which does the same work (and its
//! fallbacks) on the pool. On a file system in memory (tmpfs, ramfs) nothing can wait for a
//! device, and plain lookups and reads are used (tmpfs keeps no negative dentries, so
//! `RESOLVE_CACHED` would call every missing sidecar a miss). Nothing here ever waits for a
//! device.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::{Errno, ReadWriteFlags};

use super::held::HeldDir;
use super::{Inner, OpenFile, object_info};
use crate::key::FileKey;
use crate::store::meta::{FileMeta, sidecar_name};
use crate::store::{ObjectInfo, SMALL_FILE_BYTES, StoreError};

/// Set once the kernel refuses `RESOLVE_CACHED` (before Linux 5.12): no more tries.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// What a cached open found: the file, or that it is not there.
pub(super) type Found = Result<(ObjectInfo, Option<Bytes>, OpenFile), StoreError>;

/// Opens the file at `key` as `LocalStore::open_file` does, when the caches allow it without
/// waiting; `None` when they do not (or on anything unusual: the blocking path deals with it).
pub(super) fn open_file(inner: &Inner, key: &FileKey, read_small: bool) -> Option<Found> {
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return None;
    }
    let memory = inner.memory_backed;
    let root = match inner
        .files
        .open_with(|path| open_cached(memory, rustix::fs::CWD, path, OFlags::DIRECTORY, ResolveFlags::empty()))
    {
        Ok(fd) => fd,
        Err(Errno::INVAL) | Err(Errno::NOSYS) => {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            return None;
        }
        Err(_) => return None,
    };
    let beneath = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    let file = match open_cached(memory, &root, key.as_str(), OFlags::empty(), beneath) {
        Ok(fd) => fd,
        // A lookup that found no file in the cache is an answer, not a miss.
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Some(Err(StoreError::NotFound)),
        Err(_) => return None,
    };
    let stat = rustix::fs::fstat(&file).ok()?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Some(Err(StoreError::NotFound));
    }
    let size = u64::try_from(stat.st_size).ok()?;
    let modified = std::time::UNIX_EPOCH
        + std::time::Duration::new(
            u64::try_from(stat.st_mtime).ok()?,
            u32::try_from(stat.st_mtime_nsec).ok()?,
        );
    let meta = if super::mark::has_defaults(&file) {
        None
    } else {
        sidecar(memory, &inner.meta, key)?.filter(|m| m.size == size)
    };
    let file = std::sync::Arc::new(std::fs::File::from(file));
    let content = if !read_small || size > SMALL_FILE_BYTES {
        None
    } else if memory && size > 0 {
        // Mapped, not read: the connection sends it with sendfile (`super::mapped`).
        Some(super::mapped::map(&file, 0, size as usize, false).ok()?)
    } else {
        Some(read_all_cached(memory, &*file, size)?)
    };
    Some(Ok((
        object_info(size, modified, meta),
        content,
        OpenFile::new(file, memory),
    )))
}

/// `openat2` read-only, with `RESOLVE_CACHED` unless `memory` (a file system in memory):
/// EAGAIN when the lookup would need I/O.
fn open_cached<Fd: AsFd>(
    memory: bool,
    dir: Fd,
    path: impl AsRef<Path>,
    extra: OFlags,
    resolve: ResolveFlags,
) -> Result<OwnedFd, Errno> {
    let cached = if memory {
        ResolveFlags::empty()
    } else {
        ResolveFlags::CACHED
    };
    rustix::fs::openat2(
        dir,
        path.as_ref(),
        OFlags::RDONLY | OFlags::CLOEXEC | extra,
        Mode::empty(),
        resolve | cached,
    )
}

/// The sidecar of `key`: `Some(None)` when there is none (or it does not parse),
/// `None` when finding out would wait.
fn sidecar(memory: bool, meta_dir: &HeldDir, key: &FileKey) -> Option<Option<FileMeta>> {
    let dir = meta_dir
        .open_with(|path| open_cached(memory, rustix::fs::CWD, path, OFlags::DIRECTORY, ResolveFlags::empty()))
        .ok()?;
    let (shard, name) = sidecar_name(key);
    let fd = match open_cached(
        memory,
        &dir,
        format!("{shard}/{name}"),
        OFlags::empty(),
        ResolveFlags::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Some(None),
        Err(_) => return None,
    };
    // A sidecar is about a hundred bytes: one read into this buffer, no fstat first. One
    // that fills it is read the long way.
    let mut small = [0u8; 1024];
    let flags = if memory {
        ReadWriteFlags::empty()
    } else {
        ReadWriteFlags::NOWAIT
    };
    let read = loop {
        match rustix::io::preadv2(&fd, &mut [std::io::IoSliceMut::new(&mut small)], 0, flags) {
            Err(Errno::INTR) => {}
            other => break other.ok()?,
        }
    };
    if read < small.len() {
        return Some(serde_json::from_slice(&small[..read]).ok());
    }
    let size = u64::try_from(rustix::fs::fstat(&fd).ok()?.st_size).ok()?;
    if size > 64 * 1024 {
        return Some(None);
    }
    let bytes = read_all_cached(memory, &fd, size)?;
    Some(serde_json::from_slice(&bytes).ok())
}

/// The first `size` bytes of `fd` when all of them are in the page cache (or in memory).
fn read_all_cached<Fd: AsFd>(memory: bool, fd: Fd, size: u64) -> Option<Bytes> {
    let flags = if memory {
        ReadWriteFlags::empty()
    } else {
        ReadWriteFlags::NOWAIT
    };
    let mut buf = vec![0u8; usize::try_from(size).ok()?];
    let mut done = 0;
    while done < buf.len() {
        let mut slices = [std::io::IoSliceMut::new(&mut buf[done..])];
        match rustix::io::preadv2(&fd, &mut slices, done as u64, flags) {
            Ok(0) => return None, // shorter than its size said: let the blocking path decide
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(_) => return None, // EAGAIN: not all cached; anything else: blocking path
        }
    }
    Some(Bytes::from(buf))
}

#[cfg(test)]
mod tests {
    //! The fast path answers what the blocking path answers, with the kernel's caches warm
    //! (files just written), both as on a disk (`RESOLVE_CACHED`, `RWF_NOWAIT`) and as on
    //! a file system in memory.

    use super::*;
    use crate::store::local::LocalStore;
    use crate::store::{FileMeta, RetryPolicy};

    async fn store_with_files(dir: &Path) -> LocalStore {
        let store = LocalStore::open(dir, "upload", 4096, RetryPolicy::NONE).unwrap();
        for (name, bytes, content_type) in [
            ("a/plain.bin", vec![1u8; 1000], crate::auth::DEFAULT_CONTENT_TYPE),
            ("a/typed.txt", vec![2u8; 3000], "text/plain"),
            (
                "big.bin",
                vec![3u8; SMALL_FILE_BYTES as usize + 1],
                crate::auth::DEFAULT_CONTENT_TYPE,
            ),
        ] {
            let mut staged = store.stage(crate::store::Hashing::NONE);
            staged.write(Bytes::from(bytes.clone())).await.unwrap();
            let meta = FileMeta {
                content_type: content_type.to_string(),
                size: bytes.len() as u64,
                uploaded_unix: 0,
                sha256: None,
            };
            store
                .commit(staged, &FileKey::parse_decoded(name).unwrap(), &meta)
                .await
                .unwrap();
        }
        std::fs::create_dir_all(dir.join("upload/a/folder")).unwrap();
        store
    }

    #[tokio::test]
    async fn the_fast_path_answers_as_the_blocking_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with_files(dir.path()).await;
        for memory in [false, true] {
            let mut inner = Inner::clone(&store.inner);
            inner.memory_backed = memory;
            for (name, read_small) in [
                ("a/plain.bin", true),
                ("a/typed.txt", true),
                ("a/typed.txt", false),
                ("big.bin", true),
                ("a/missing.bin", true),
                ("missing/x.bin", true),
                ("a/folder", true),
            ] {
                let key = FileKey::parse_decoded(name).unwrap();
                let slow = store.open_blocking(&key, read_small).await;
                // Looked up again until the caches hold what the fast path needs.
                let fast = (0..3).find_map(|_| open_file(&inner, &key, read_small));
                let what = format!("{name}, read_small {read_small}, memory {memory}");
                match (fast, slow) {
                    (Some(Ok((fi, fc, _))), Ok((si, sc, _))) => {
                        assert_eq!(
                            (fi.size, fi.modified, &fi.etag),
                            (si.size, si.modified, &si.etag),
                            "{what}"
                        );
                        assert_eq!(fi.meta, si.meta, "{what}");
                        assert_eq!(fc, sc, "{what}");
                    }
                    (Some(Err(StoreError::NotFound)), Err(StoreError::NotFound)) => {}
                    (None, _) => panic!("{what}: never served from the caches"),
                    (fast, slow) => panic!(
                        "{what}: fast {:?}, blocking {:?}",
                        fast.map(|r| r.map(|t| t.0)),
                        slow.map(|t| t.0)
                    ),
                }
            }
        }
    }
}
