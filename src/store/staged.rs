//! [`StagedFile`]: the bytes of an upload on their way into the store.
//!
//! Chunks are kept as they arrive (hyper's `Bytes`, no copy) until BufferSize of them are
//! pending, then written with one `writev` on the blocking pool, hashed on the same thread.
//! The temporary file is created lazily by the first write, so a small upload that fits in
//! the buffer touches the disk only once, in the commit. Dropped without a commit, the
//! temporary file is removed (partial uploads of resumable sessions are kept).

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::StoreError;
use super::digest::{Digests, Hashers, Hashing};

/// Mode of the files the store creates.
pub(super) const FILE_MODE: u32 = 0o640;

/// See the module documentation.
#[derive(Debug)]
pub struct StagedFile {
    inner: Option<Box<Staged>>,
    received: u64,
    buffer_bytes: usize,
}

/// The part that moves to the blocking pool and back.
#[derive(Debug)]
pub(super) struct Staged {
    tmp_dir: PathBuf,
    pub(super) path: Option<PathBuf>,
    pub(super) file: Option<File>,
    pending: Vec<Bytes>,
    hashed: usize,
    hashers: Option<Box<Hashers>>,
    keep: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.keep
            && let Some(path) = &self.path
        {
            let _ = fs::remove_file(path);
        }
    }
}

impl Staged {
    /// Creates the temporary file if it does not exist yet.
    fn ensure_file(&mut self) -> Result<&mut File, StoreError> {
        if self.file.is_none() {
            let mut random = [0u8; 16];
            rand::fill(&mut random);
            let path = self.tmp_dir.join(format!("{}.part", hex::encode(random)));
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(FILE_MODE)
                .open(&path)
                .map_err(StoreError::from_write)?;
            self.path = Some(path);
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("just created"))
    }

    /// Hashes what is not hashed yet and writes every pending chunk (blocking).
    pub(super) fn write_pending(&mut self) -> Result<(), StoreError> {
        if let Some(h) = &mut self.hashers {
            for chunk in &self.pending[self.hashed..] {
                h.update(chunk);
            }
        }
        self.hashed = 0;
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() && self.file.is_some() {
            return Ok(());
        }
        let file = self.ensure_file()?;
        for group in pending.chunks(512) {
            let mut slices: Vec<IoSlice<'_>> = group.iter().map(|b| IoSlice::new(b)).collect();
            let mut slices = &mut slices[..];
            while !slices.is_empty() {
                let n = file.write_vectored(slices).map_err(StoreError::from_write)?;
                if n == 0 {
                    return Err(StoreError::from_write(io::ErrorKind::WriteZero.into()));
                }
                IoSlice::advance_slices(&mut slices, n);
            }
        }
        Ok(())
    }

    /// The temporary file stays where it is after the drop (it was renamed or is a partial).
    pub(super) fn disarm(&mut self) {
        self.keep = true;
    }
}

impl StagedFile {
    /// A new upload whose temporary file is created in `tmp_dir` on the first write.
    pub(super) fn lazy(tmp_dir: &Path, buffer_bytes: usize, hashing: Hashing) -> Self {
        Self::from_parts(tmp_dir.to_path_buf(), None, None, buffer_bytes, hashing, false)
    }

    /// An existing file (a resumable upload's bytes), positioned where writing continues;
    /// kept on drop.
    pub(super) fn existing(path: PathBuf, file: File, buffer_bytes: usize, hashing: Hashing) -> Self {
        let tmp_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_parts(tmp_dir, Some(path), Some(file), buffer_bytes, hashing, true)
    }

    fn from_parts(
        tmp_dir: PathBuf,
        path: Option<PathBuf>,
        file: Option<File>,
        buffer_bytes: usize,
        hashing: Hashing,
        keep: bool,
    ) -> Self {
        Self {
            inner: Some(Box::new(Staged {
                tmp_dir,
                path,
                file,
                pending: Vec::new(),
                hashed: 0,
                hashers: Hashers::new(hashing),
                keep,
            })),
            received: 0,
            buffer_bytes,
        }
    }

    fn staged(&mut self) -> Result<&mut Staged, StoreError> {
        self.inner
            .as_deref_mut()
            .ok_or_else(|| StoreError::Io(io::Error::other("staged file lost in a failed write")))
    }

    /// Runs `f` on the blocking pool with the staged parts, and takes them back.
    async fn blocking<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Staged) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let mut staged = self
            .inner
            .take()
            .ok_or_else(|| StoreError::Io(io::Error::other("staged file lost")))?;
        let (staged, result) = tokio::task::spawn_blocking(move || {
            let r = f(&mut staged);
            (staged, r)
        })
        .await
        .map_err(|e| StoreError::Io(io::Error::other(e)))?;
        self.inner = Some(staged);
        result
    }

    /// Takes a chunk (no I/O). Call [`Self::flush`] when [`Self::wants_flush`] says so.
    pub fn push(&mut self, chunk: Bytes) {
        self.received += chunk.len() as u64;
        if let Some(s) = self.inner.as_deref_mut()
            && !chunk.is_empty()
        {
            s.pending.push(chunk);
        }
    }

    /// Bytes taken but not written yet.
    pub fn pending_bytes(&self) -> usize {
        self.inner
            .as_ref()
            .map_or(0, |s| s.pending.iter().map(Bytes::len).sum())
    }

    /// Whether BufferSize bytes are pending.
    pub fn wants_flush(&self) -> bool {
        self.pending_bytes() >= self.buffer_bytes
    }

    /// Takes a chunk and writes when BufferSize is pending.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        self.push(chunk);
        if self.wants_flush() { self.flush().await } else { Ok(()) }
    }

    /// Writes every pending chunk (one `writev`, one trip to the blocking pool).
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        if self.staged()?.pending.is_empty() {
            return Ok(());
        }
        self.blocking(Staged::write_pending).await
    }

    /// Writes and fsyncs: everything taken so far is durable.
    pub async fn sync(&mut self) -> Result<(), StoreError> {
        self.blocking(|s| {
            s.write_pending()?;
            s.ensure_file()?.sync_data().map_err(StoreError::from_write)
        })
        .await
    }

    /// Cuts the file back to `len` bytes (a rejected chunk), dropping what is pending, and
    /// fsyncs.
    pub async fn truncate(&mut self, len: u64) -> Result<(), StoreError> {
        let staged = self.staged()?;
        staged.pending.clear();
        staged.hashed = 0;
        self.blocking(move |s| {
            use std::io::Seek;
            let f = s.ensure_file()?;
            f.set_len(len)?;
            f.seek(io::SeekFrom::Start(len))?;
            f.sync_data().map_err(StoreError::from_write)
        })
        .await
    }

    /// The digests of everything taken (pending chunks are hashed here, without writing
    /// them); `None` when staged without hashing.
    pub fn digests(&mut self) -> Result<Option<Digests>, StoreError> {
        let s = self.staged()?;
        let Some(h) = &mut s.hashers else { return Ok(None) };
        for chunk in &s.pending[s.hashed..] {
            h.update(chunk);
        }
        s.hashed = s.pending.len();
        Ok(Some(h.digests()))
    }

    /// Bytes taken so far.
    pub fn len(&self) -> u64 {
        self.received
    }

    /// Whether nothing was taken.
    pub fn is_empty(&self) -> bool {
        self.received == 0
    }

    /// The parts, for a commit or a move that happens on the blocking pool.
    pub(super) fn into_staged(mut self) -> Result<Box<Staged>, StoreError> {
        self.inner
            .take()
            .ok_or_else(|| StoreError::Io(io::Error::other("staged file lost")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lazy_file_vectored_writes_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let mut staged = StagedFile::lazy(
            dir.path(),
            16,
            Hashing {
                sha256: true,
                ..Hashing::NONE
            },
        );
        staged.push(Bytes::from_static(b"hello "));
        assert!(!staged.wants_flush());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no file before the first write"
        );
        let digest_early = staged.digests().unwrap().unwrap();
        staged.push(Bytes::from_static(b"world, "));
        staged.push(Bytes::from_static(b"in pieces"));
        assert!(staged.wants_flush());
        staged.flush().await.unwrap();
        staged.push(Bytes::from_static(b"!"));
        staged.sync().await.unwrap();
        let path = staged.inner.as_ref().unwrap().path.clone().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello world, in pieces!");
        let digests = staged.digests().unwrap().unwrap();
        use sha2::Digest;
        assert_eq!(
            digests.sha256.clone().unwrap(),
            sha2::Sha256::digest(b"hello world, in pieces!").to_vec()
        );
        assert_ne!(digest_early, digests);
        staged.truncate(5).await.unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        drop(staged);
        assert!(!path.exists(), "removed on drop");
    }
}
