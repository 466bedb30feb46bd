//! The store: where finished files live and how they get there.
//!
//! Uploads stream into a [`StagedFile`] inside the store's own temporary folder; `commit`
//! fsyncs it and renames it into place with no-replace semantics, so a reader sees a whole
//! file or none, and of two racing uploads to one path exactly one wins.

pub mod digest;
pub mod key;
pub mod local;
pub mod meta;
pub mod staged;

pub use digest::{Digests, Hashing};
pub use key::FileKey;
pub use local::{LocalStore, RetryPolicy, StoredFile};
pub use meta::FileMeta;
pub use staged::StagedFile;

use std::io;

/// Storage failures, as the HTTP layer needs to tell them apart.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file already exists at the key (or a folder is where a file should go, or the other
    /// way round).
    #[error("file exists")]
    Exists,
    /// No such file.
    #[error("not found")]
    NotFound,
    /// The path would leave the store (a symlink in the store that points out).
    #[error("path leaves the store")]
    Escape,
    /// The file system is full or over quota.
    #[error("no space left in the store: {0}")]
    Full(#[source] io::Error),
    /// Any other I/O failure.
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
}

impl StoreError {
    /// Whether trying again may succeed (EINTR, EAGAIN, EBUSY, ESTALE, ETIMEDOUT).
    pub fn is_transient(&self) -> bool {
        use rustix::io::Errno;
        let StoreError::Io(e) = self else { return false };
        matches!(
            e.kind(),
            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) || [Errno::INTR, Errno::AGAIN, Errno::BUSY, Errno::STALE, Errno::TIMEDOUT]
            .iter()
            .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
    }

    /// Classifies an I/O error from a write path.
    pub fn from_write(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(code) if code == libc_enospc() || code == libc_edquot() => StoreError::Full(e),
            _ if e.kind() == io::ErrorKind::StorageFull || e.kind() == io::ErrorKind::QuotaExceeded => {
                StoreError::Full(e)
            }
            _ => StoreError::Io(e),
        }
    }
}

fn libc_enospc() -> i32 {
    rustix::io::Errno::NOSPC.raw_os_error()
}

fn libc_edquot() -> i32 {
    rustix::io::Errno::DQUOT.raw_os_error()
}
