//! The bytes of unfinished resumable uploads: one file per upload,
//! `.hmac-file-server/partial/<id>.part`, on the same file system as the finished files, so
//! completing an upload is the store's ordinary no-replace rename. The upload record's offset
//! only moves after these bytes were fsynced; anything past it (written before a crash, never
//! acknowledged) is cut off when the upload is next opened.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;

use super::beneath::{Origin, sync_dir};
use super::staged::FILE_MODE;
use super::{LocalStore, StagedFile, classify_write, remove_older_than, run_blocking_store};
use crate::store::digest::{Digests, Hashers};
use crate::store::{ByteStream, Hashing, PartialHandle, StoreError, Usage};

/// Read size when a partial upload is read back (concatenation, checksum).
const READ_BACK_BYTES: usize = 1 << 20;

impl LocalStore {
    /// Where the bytes of resumable upload `id` live (`id` is validated by the state layer,
    /// which never hands out anything but hex).
    pub(super) fn partial_path(&self, id: &str) -> PathBuf {
        self.inner.partial_dir.join(format!("{id}.part"))
    }

    /// Creates the empty bytes of upload `id`.
    pub async fn create_partial(&self, id: &str) -> Result<PartialHandle, StoreError> {
        drop(self.open_partial(id, 0, Hashing::NONE).await?);
        Ok(PartialHandle::Local)
    }

    /// Opens the bytes of resumable upload `id` to append at `offset`: anything past the
    /// durable offset is cut off first. The file is created when missing and kept when the
    /// handle is dropped.
    pub async fn open_partial(&self, id: &str, offset: u64, hashing: Hashing) -> Result<StagedFile, StoreError> {
        let path = self.partial_path(id);
        let buffer_bytes = self.inner.buffer_bytes;
        run_blocking_store(move || {
            let mut file = crate::fault::point("store.partial.open")
                .and_then(|()| {
                    OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .mode(FILE_MODE)
                        .open(&path)
                })
                .map_err(classify_write)?;
            let len = file.metadata()?.len();
            if len < offset {
                return Err(StoreError::other(format!(
                    "partial upload has {len} bytes, its record says {offset}"
                )));
            }
            if len > offset {
                file.set_len(offset)?;
            }
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
            let len = staged
                .file
                .as_ref()
                .ok_or_else(|| StoreError::other("nothing written"))?
                .metadata()?
                .len();
            let from = staged.origin().ok_or_else(|| StoreError::other("nothing written"))?;
            crate::fault::point("store.partial.keep")
                .and_then(|()| Ok(from.keep_as(&dest)?))
                .map_err(classify_write)?;
            if let Origin::Unnamed { file, .. } = from {
                // Its link count changed (see `place_into_store`).
                rustix::fs::fsync(file).map_err(|e| classify_write(e.into()))?;
            }
            staged.disarm();
            if let Some(parent) = dest.parent() {
                sync_dir(parent)?;
            }
            Ok(len)
        })
        .await
    }

    /// The first `len` bytes of upload `id`, read in 1 MiB pieces on the blocking pool.
    pub fn read_partial(&self, id: &str, len: u64) -> ByteStream {
        let path = self.partial_path(id);
        // (the file once opened, bytes read so far); `None` once done or failed.
        let start: Option<(Option<fs::File>, u64)> = Some((None, 0));
        Box::pin(futures_util::stream::unfold(start, move |state| {
            let path = path.clone();
            async move {
                let (file, done) = state?;
                if done >= len {
                    return None;
                }
                let want = (len - done).min(READ_BACK_BYTES as u64) as usize;
                let read = tokio::task::spawn_blocking(move || {
                    let mut file = match file {
                        Some(f) => f,
                        None => fs::File::open(&path)?,
                    };
                    let mut buf = vec![0u8; want];
                    file.read_exact(&mut buf).map(|()| (file, buf))
                })
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e)));
                match read {
                    Ok((file, buf)) => Some((Ok(Bytes::from(buf)), Some((Some(file), done + want as u64)))),
                    Err(e) => Some((Err(e), None)),
                }
            }
        }))
    }

    /// The digests `hashing` asks for of the first `len` bytes of upload `id` (read once:
    /// its bytes came in over several requests, maybe across restarts).
    pub async fn digests_partial(&self, id: &str, len: u64, hashing: Hashing) -> Result<Digests, StoreError> {
        let path = self.partial_path(id);
        run_blocking_store(move || {
            // Opened first: missing bytes are an error even when no digest is asked for.
            let mut file = fs::File::open(path)?.take(len);
            let Some(mut hashers) = Hashers::new(hashing) else {
                return Ok(Digests::default());
            };
            let mut buf = vec![0u8; READ_BACK_BYTES];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hashers.update(&buf[..n]);
            }
            Ok(hashers.digests())
        })
        .await
    }

    /// Removes the bytes of resumable upload `id`.
    pub async fn remove_partial(&self, id: &str) -> Result<(), StoreError> {
        let path = self.partial_path(id);
        run_blocking_store(move || {
            match crate::fault::point("store.partial.remove").and_then(|()| fs::remove_file(path)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            }
        })
        .await
    }

    /// How many partial uploads there are and their bytes together (one listing of the folder).
    pub async fn partials_usage(&self) -> Result<Usage, StoreError> {
        let dir = self.inner.partial_dir.clone();
        run_blocking_store(move || {
            let mut usage = Usage::default();
            for entry in fs::read_dir(&dir)?.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_file() && entry.file_name().to_string_lossy().ends_with(".part") {
                    usage.uploads += 1;
                    usage.bytes += meta.len();
                }
            }
            Ok(usage)
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
}
