//! Folders of the store held open for a moment: a download's lookups start from the upload
//! folder's (and the sidecar folder's) descriptor instead of walking the store's whole path
//! again, an `openat2` and a `close` less per request. The descriptor is opened again once it
//! is older than [`HOLD`], so a folder that an operator replaces or remounts while the server
//! runs is picked up within that time, and one that goes missing is reported as missing.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

/// How long an opened folder is used before it is opened again.
pub(super) const HOLD: Duration = Duration::from_secs(1);

/// A folder, opened at most every [`HOLD`].
#[derive(Debug)]
pub(super) struct HeldDir {
    path: PathBuf,
    held: ArcSwapOption<Opened>,
}

/// The folder's descriptor, and until when it is used.
#[derive(Debug)]
pub(super) struct Opened {
    fd: OwnedFd,
    until: Instant,
}

impl AsFd for Opened {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl HeldDir {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            path,
            held: ArcSwapOption::empty(),
        }
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// The folder: the descriptor held while it is fresh, else one opened now.
    pub(super) fn open(&self) -> Result<Arc<Opened>, Errno> {
        self.open_with(|path| {
            rustix::fs::open(
                path,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        })
    }

    /// As [`Self::open`], opening with `open` when the held descriptor is stale (a caller that
    /// must not wait for a device opens with `RESOLVE_CACHED`).
    pub(super) fn open_with(&self, open: impl FnOnce(&Path) -> Result<OwnedFd, Errno>) -> Result<Arc<Opened>, Errno> {
        let now = Instant::now();
        if let Some(opened) = self.held.load_full()
            && now < opened.until
        {
            return Ok(opened);
        }
        let fd = open(&self.path).inspect_err(|_| self.held.store(None))?;
        let opened = Arc::new(Opened { fd, until: now + HOLD });
        self.held.store(Some(Arc::clone(&opened)));
        Ok(opened)
    }
}

impl Clone for HeldDir {
    /// The same folder, opened anew when first used.
    fn clone(&self) -> Self {
        Self::new(self.path.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_folder_is_seen_after_the_hold_and_a_missing_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("old"), b"1").unwrap();
        let held = HeldDir::new(path.clone());
        let has = |name: &str| {
            let opened = held.open().unwrap();
            rustix::fs::statat(&opened, name, rustix::fs::AtFlags::empty()).is_ok()
        };
        assert!(has("old"));

        std::fs::rename(&path, dir.path().join("upload.before")).unwrap();
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("new"), b"2").unwrap();
        assert!(has("old"), "within the hold, the folder opened before");
        std::thread::sleep(HOLD + Duration::from_millis(50));
        assert!(has("new") && !has("old"), "after it, the folder now at the path");

        std::fs::remove_dir_all(&path).unwrap();
        std::thread::sleep(HOLD + Duration::from_millis(50));
        assert_eq!(held.open().err(), Some(Errno::NOENT));
        assert_eq!(held.open().err(), Some(Errno::NOENT), "not held after a failure");
    }
}
