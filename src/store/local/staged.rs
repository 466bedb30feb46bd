//! [`StagedFile`]: the bytes of an upload on their way into the store.
//!
//! Chunks are kept as they arrive (hyper's `Bytes`, no copy) until BufferSize of them are
//! pending, then handed to the blocking pool to be written with one `writev` (and hashed on
//! that thread) while the next ones arrive: the write of one batch overlaps the receiving of
//! the next, and at most two batches are in memory. The temporary file is created lazily by
//! the first write, so a small upload that fits in the buffer touches the disk only once, in
//! the commit. Dropped without a commit, the temporary file is removed (partial uploads of
//! resumable sessions are kept).

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use rustix::fs::{Mode, OFlags};
use tokio::task::JoinHandle;

use super::beneath::Origin;
use super::classify_write;
use super::held::{HeldDir, Opened};
use super::unnamed::{self, Linking};
use crate::store::digest::{Digests, Hashers, Hashing};
use crate::store::{StoreError, TakeError};

/// Mode of the files the store creates.
pub(super) const FILE_MODE: u32 = 0o640;

type InFlight = JoinHandle<(Box<FileParts>, Result<(), StoreError>)>;

/// Most bytes gathered for one write when a fast sender has them ready.
pub const WRITE_BATCH_BYTES: usize = 1 << 20;

/// See the module documentation.
#[derive(Debug)]
pub struct StagedFile {
    /// `None` while a write is in flight.
    inner: Option<Box<FileParts>>,
    in_flight: Option<InFlight>,
    /// Taken, not handed to a write yet.
    pending: Vec<Bytes>,
    pending_bytes: usize,
    /// `pending[..hashed]` were hashed already (by [`StagedFile::digests`]).
    hashed: usize,
    received: u64,
    buffer_bytes: usize,
}

/// The part that moves to the blocking pool and back.
#[derive(Debug)]
pub(super) struct FileParts {
    /// Where the temporary file is made, for a staging that has none yet, and whether it is
    /// made unnamed there (how it is then linked into place).
    tmp: Option<(Arc<HeldDir>, Option<Linking>)>,
    /// The file's whole path; `None` for an unnamed temporary.
    pub(super) path: Option<PathBuf>,
    made: Made,
    pub(super) file: Option<File>,
    hashers: Option<Box<Hashers>>,
    keep: bool,
}

/// Who made the file being staged.
#[derive(Debug)]
enum Made {
    /// Not this staging: the file was there (a resumable upload's bytes, at `path`).
    Before,
    /// A named temporary: the folder it was made in, held open, and its name there (the commit
    /// renames it from there without walking the store's path again).
    Named(Arc<Opened>, PathBuf),
    /// An unnamed temporary ([`unnamed`]), linked into place by the commit.
    Unnamed(Linking),
}

impl Drop for FileParts {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // An unnamed temporary goes with its descriptor.
        if let Some(Origin::Named { dir, name, .. }) = self.origin() {
            let _ = rustix::fs::unlinkat(dir, name, rustix::fs::AtFlags::empty());
        }
    }
}

impl FileParts {
    /// Creates the temporary file if it does not exist yet.
    pub(super) fn ensure_file(&mut self) -> Result<&mut File, StoreError> {
        if self.file.is_none() {
            let (tmp, unnamed) = self
                .tmp
                .as_ref()
                .ok_or_else(|| StoreError::other("no folder to stage the upload in"))?;
            crate::fault::point("store.temp.create").map_err(classify_write)?;
            let dir = tmp.open().map_err(|e| classify_write(e.into()))?;
            let fd = if let Some(linking) = *unnamed {
                let fd = unnamed::create(&dir).map_err(|e| classify_write(e.into()))?;
                self.made = Made::Unnamed(linking);
                fd
            } else {
                let mut random = [0u8; 16];
                rand::fill(&mut random);
                let name = PathBuf::from(format!("{}.part", hex::encode(random)));
                let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
                let fd = rustix::fs::openat(&dir, &name, flags, Mode::from_raw_mode(FILE_MODE))
                    .map_err(|e| classify_write(e.into()))?;
                self.path = Some(tmp.path().join(&name));
                self.made = Made::Named(dir, name);
                fd
            };
            self.file = Some(File::from(fd));
        }
        Ok(self.file.as_mut().expect("just created"))
    }

    /// Whether the file was there before this staging (a resumable upload's bytes, which an
    /// earlier commit that failed may have marked), rather than made by it.
    pub(super) fn was_there(&self) -> bool {
        matches!(self.made, Made::Before)
    }

    /// Where the file is, for a rename, a link or a removal; `None` before it is made.
    pub(super) fn origin(&self) -> Option<Origin<'_>> {
        Some(match &self.made {
            Made::Unnamed(linking) => Origin::Unnamed {
                file: self.file.as_ref()?.as_fd(),
                linking: *linking,
            },
            Made::Named(dir, name) => Origin::Named {
                dir: dir.as_fd(),
                name,
                path: self.path.as_deref()?,
            },
            Made::Before => Origin::path(self.path.as_deref()?),
        })
    }

    /// Hashes `chunks[skip_hash..]` and writes all of them (blocking).
    pub(super) fn write_chunks(&mut self, chunks: &[Bytes], skip_hash: usize) -> Result<(), StoreError> {
        if let Some(h) = &mut self.hashers {
            for chunk in &chunks[skip_hash.min(chunks.len())..] {
                h.update(chunk);
            }
        }
        let file = self.ensure_file()?;
        crate::fault::point("store.write").map_err(classify_write)?;
        for group in chunks.chunks(512) {
            let mut slices: Vec<IoSlice<'_>> = group.iter().map(|b| IoSlice::new(b)).collect();
            let mut slices = &mut slices[..];
            while !slices.is_empty() {
                let n = file.write_vectored(slices).map_err(classify_write)?;
                if n == 0 {
                    return Err(classify_write(io::ErrorKind::WriteZero.into()));
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

/// What a commit needs: the file's parts and what is still to be written.
#[derive(Debug)]
pub(super) struct Settled {
    pub(super) staged: Box<FileParts>,
    pub(super) pending: Vec<Bytes>,
    pub(super) hashed: usize,
}

impl StagedFile {
    /// A new upload whose temporary file is created in `tmp` on the first write, unnamed when
    /// `unnamed` says how to link it.
    pub(super) fn lazy(tmp: Arc<HeldDir>, unnamed: Option<Linking>, buffer_bytes: usize, hashing: Hashing) -> Self {
        Self::from_parts(Some((tmp, unnamed)), None, None, buffer_bytes, hashing, false)
    }

    /// An existing file (a resumable upload's bytes), positioned where writing continues;
    /// kept on drop.
    pub(super) fn existing(path: PathBuf, file: File, buffer_bytes: usize, hashing: Hashing) -> Self {
        Self::from_parts(None, Some(path), Some(file), buffer_bytes, hashing, true)
    }

    fn from_parts(
        tmp: Option<(Arc<HeldDir>, Option<Linking>)>,
        path: Option<PathBuf>,
        file: Option<File>,
        buffer_bytes: usize,
        hashing: Hashing,
        keep: bool,
    ) -> Self {
        Self {
            inner: Some(Box::new(FileParts {
                tmp,
                path,
                made: Made::Before,
                file,
                hashers: Hashers::new(hashing),
                keep,
            })),
            in_flight: None,
            pending: Vec::new(),
            pending_bytes: 0,
            hashed: 0,
            received: 0,
            buffer_bytes,
        }
    }

    /// Waits for the write in flight, if any, and returns the file's parts.
    async fn settle(&mut self) -> Result<&mut FileParts, StoreError> {
        if let Some(task) = self.in_flight.take() {
            let (staged, result) = task.await.map_err(StoreError::other)?;
            self.inner = Some(staged);
            result?;
        }
        self.inner
            .as_deref_mut()
            .ok_or_else(|| StoreError::other("staged file lost"))
    }

    /// Runs `f` on the blocking pool with the file's parts (after the write in flight).
    async fn blocking<R: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut FileParts) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        self.settle().await?;
        let mut staged = self.inner.take().ok_or_else(|| StoreError::other("staged file lost"))?;
        let (staged, result) = tokio::task::spawn_blocking(move || {
            let r = f(&mut staged);
            (staged, r)
        })
        .await
        .map_err(StoreError::other)?;
        self.inner = Some(staged);
        result
    }

    fn take_pending(&mut self) -> (Vec<Bytes>, usize) {
        self.pending_bytes = 0;
        (std::mem::take(&mut self.pending), std::mem::take(&mut self.hashed))
    }

    /// Takes a chunk (no I/O). Call [`Self::flush`] when [`Self::wants_flush`] says so.
    pub fn push(&mut self, chunk: Bytes) {
        self.received += chunk.len() as u64;
        if !chunk.is_empty() {
            self.pending_bytes += chunk.len();
            self.pending.push(chunk);
        }
    }

    /// Bytes taken but not handed to a write yet.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    /// Whether BufferSize bytes are pending.
    pub fn wants_flush(&self) -> bool {
        self.pending_bytes >= self.buffer_bytes
    }

    /// Takes a frame of a request body, refusing to go past `limit` bytes in all; when
    /// BufferSize is pending, also takes what `body` has ready (up to [`WRITE_BATCH_BYTES`]:
    /// a fast sender's frames go out in one `writev`, a slow one's at BufferSize, so memory
    /// per upload stays bounded by one burst) and starts the write.
    pub async fn take_frame<B>(
        &mut self,
        frame: http_body::Frame<Bytes>,
        body: &mut B,
        limit: u64,
    ) -> Result<(), TakeError>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
    {
        use futures_util::FutureExt;
        use http_body_util::BodyExt;
        self.take_data(frame, limit)?;
        if !self.wants_flush() {
            return Ok(());
        }
        let mut broken_off = false;
        while self.pending_bytes < WRITE_BATCH_BYTES {
            match body.frame().now_or_never() {
                Some(Some(Ok(frame))) => self.take_data(frame, limit)?,
                // The error is the body's last word (hyper's body ends after it): say so, or
                // the caller would take the end of the body for a complete one.
                Some(Some(Err(_))) => {
                    broken_off = true;
                    break;
                }
                _ => break,
            }
        }
        // The whole body is here: what is pending goes out with the commit (or the sync) that
        // comes next, in the same trip to the blocking pool.
        if !broken_off && http_body::Body::is_end_stream(body) {
            return Ok(());
        }
        self.flush().await.map_err(TakeError::Store)?;
        if broken_off { Err(TakeError::BrokenOff) } else { Ok(()) }
    }

    fn take_data(&mut self, frame: http_body::Frame<Bytes>, limit: u64) -> Result<(), TakeError> {
        if let Ok(data) = frame.into_data() {
            if self.received + data.len() as u64 > limit {
                return Err(TakeError::TooLong);
            }
            self.push(data);
        }
        Ok(())
    }

    /// Takes a chunk and starts a write when BufferSize is pending.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        self.push(chunk);
        if self.wants_flush() { self.flush().await } else { Ok(()) }
    }

    /// Starts writing every pending chunk (one `writev` on the blocking pool) after the
    /// previous write is done; returns without waiting for this one.
    pub async fn flush(&mut self) -> Result<(), StoreError> {
        self.settle().await?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let (chunks, hashed) = self.take_pending();
        let mut staged = self.inner.take().ok_or_else(|| StoreError::other("staged file lost"))?;
        self.in_flight = Some(tokio::task::spawn_blocking(move || {
            let r = staged.write_chunks(&chunks, hashed);
            (staged, r)
        }));
        Ok(())
    }

    /// Writes and fsyncs: everything taken so far is durable.
    pub async fn sync(&mut self) -> Result<(), StoreError> {
        self.settle().await?;
        let (chunks, hashed) = self.take_pending();
        self.blocking(move |s| {
            s.write_chunks(&chunks, hashed)?;
            crate::fault::point("store.fsync").map_err(classify_write)?;
            s.ensure_file()?.sync_data().map_err(classify_write)
        })
        .await
    }

    /// Cuts the file back to `len` bytes (a rejected chunk), dropping what is pending, and
    /// fsyncs.
    pub async fn truncate(&mut self, len: u64) -> Result<(), StoreError> {
        self.settle().await?;
        self.take_pending();
        self.blocking(move |s| {
            use std::io::Seek;
            let f = s.ensure_file()?;
            f.set_len(len)?;
            f.seek(io::SeekFrom::Start(len))?;
            f.sync_data().map_err(classify_write)
        })
        .await
    }

    /// The digests of everything taken (pending chunks are hashed here, without writing
    /// them); `None` when staged without hashing.
    pub async fn digests(&mut self) -> Result<Option<Digests>, StoreError> {
        self.settle().await?;
        let staged = self
            .inner
            .as_deref_mut()
            .ok_or_else(|| StoreError::other("staged file lost"))?;
        let Some(h) = &mut staged.hashers else { return Ok(None) };
        for chunk in &self.pending[self.hashed..] {
            h.update(chunk);
        }
        self.hashed = self.pending.len();
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
    pub(super) async fn into_settled(mut self) -> Result<Settled, StoreError> {
        self.settle().await?;
        let (pending, hashed) = self.take_pending();
        let staged = self.inner.take().ok_or_else(|| StoreError::other("staged file lost"))?;
        Ok(Settled {
            staged,
            pending,
            hashed,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    #[tokio::test]
    async fn lazy_file_overlapped_vectored_writes_and_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let mut staged = StagedFile::lazy(
            Arc::new(HeldDir::new(dir.path().to_path_buf())),
            None,
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
        let digest_early = staged.digests().await.unwrap().unwrap();
        staged.push(Bytes::from_static(b"world, "));
        staged.push(Bytes::from_static(b"in pieces"));
        assert!(staged.wants_flush());
        staged.flush().await.unwrap();
        staged.push(Bytes::from_static(b"!"));
        staged.sync().await.unwrap();
        let path = staged.inner.as_ref().unwrap().path.clone().unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello world, in pieces!");
        let digests = staged.digests().await.unwrap().unwrap();
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

    #[tokio::test]
    async fn many_overlapped_flushes_keep_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut staged = StagedFile::lazy(
            Arc::new(HeldDir::new(dir.path().to_path_buf())),
            None,
            4096,
            Hashing::NONE,
        );
        let mut expected = Vec::new();
        for i in 0..2000u32 {
            let chunk: Vec<u8> = (0..(i % 97 + 1) * 37).map(|j| (i + j) as u8).collect();
            expected.extend_from_slice(&chunk);
            staged.write(Bytes::from(chunk)).await.unwrap();
        }
        staged.sync().await.unwrap();
        let path = staged.inner.as_ref().unwrap().path.clone().unwrap();
        assert_eq!(fs::read(&path).unwrap(), expected);
    }
}
