//! Path resolution that never leaves the store: every folder and file is opened relative to
//! the upload folder with `openat2(RESOLVE_BENEATH)` (on kernels without it, a segment at a
//! time with `O_NOFOLLOW`), so `..` games and symlinks placed in the store cannot lead outside
//! it; and the no-replace placing (link or rename) that makes a staged file final.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, ResolveFlags};
use rustix::io::Errno;

use super::unnamed::{self, Linking};
use super::{DIR_MODE, classify_write};
use crate::key::FileKey;
use crate::store::StoreError;

/// Splits a key into its folder (relative, maybe empty) and file name.
pub(super) fn split_key(key: &FileKey) -> (&str, &str) {
    match key.as_str().rsplit_once('/') {
        Some((dir, name)) => (dir, name),
        None => ("", key.as_str()),
    }
}

/// Opens the folder `rel` beneath the store's root, creating missing folders when `create`,
/// without ever leaving the root: a symlink that points out (or `..` games) fails with
/// [`StoreError::Refused`]; a file where a folder should be with [`StoreError::Exists`].
pub(super) fn dir_beneath(root_fd: &impl AsFd, rel: &str, create: bool) -> Result<OwnedFd, StoreError> {
    dir_beneath_with(root_fd, rel, create, !NO_OPENAT2.load(Ordering::Relaxed))
}

/// Set once the kernel refuses `openat2` (before Linux 5.6, or a seccomp filter that does not
/// know it): folders are then opened a segment at a time.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// [`dir_beneath`], with `openat2` or without it. Without it each segment is opened in the
/// one before with `O_NOFOLLOW`: as safe for the keys of the store (plain names, no `..`),
/// stricter in that a symlinked folder is refused even when it points inside the root.
fn dir_beneath_with(root_fd: &impl AsFd, rel: &str, create: bool, openat2: bool) -> Result<OwnedFd, StoreError> {
    let flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    if rel.is_empty() {
        return Ok(rustix::fs::openat(root_fd.as_fd(), ".", flags, Mode::empty()).map_err(io::Error::from)?);
    }
    // The folder a missing segment is made in: the root, then each segment opened beneath it.
    let mut dir: Option<OwnedFd> = None;
    let mut end = 0;
    for segment in rel.split('/') {
        end += segment.len();
        let prefix = &rel[..end];
        end += 1;
        let mut attempts = 0;
        // The last folder of an upload's key is new more often than not (XMPP servers put
        // every upload in a folder of its own): made first, it saves a lookup that fails. A
        // name that is there already (a folder, a file, a symlink) is left alone and looked
        // up beneath the root as any other.
        if create && end > rel.len() {
            let parent = dir.as_ref().map_or(root_fd.as_fd(), |d| d.as_fd());
            let _ = rustix::fs::mkdirat(parent, segment, Mode::from_raw_mode(DIR_MODE));
        }
        dir = Some(loop {
            let parent = dir.as_ref().map_or(root_fd.as_fd(), |d| d.as_fd());
            let opened = if openat2 {
                rustix::fs::openat2(root_fd.as_fd(), prefix, flags, Mode::empty(), resolve)
            } else {
                rustix::fs::openat(parent, segment, flags | OFlags::NOFOLLOW, Mode::empty())
            };
            match opened {
                Ok(fd) => break fd,
                Err(Errno::NOSYS) | Err(Errno::PERM) if openat2 => {
                    tracing::warn!("the kernel refuses openat2: store folders are opened a segment at a time");
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    return dir_beneath_with(root_fd, rel, create, false);
                }
                Err(Errno::NOENT) if create && attempts < 3 => {
                    attempts += 1;
                    match rustix::fs::mkdirat(parent, segment, Mode::from_raw_mode(DIR_MODE)) {
                        Ok(()) | Err(Errno::EXIST) => continue,
                        Err(e) => return Err(classify_write(e.into())),
                    }
                }
                Err(Errno::NOENT) => return Err(StoreError::NotFound),
                // `O_NOFOLLOW | O_DIRECTORY` calls a symlink "not a folder".
                Err(Errno::NOTDIR) if !openat2 && is_symlink(parent, segment) => return Err(StoreError::Refused),
                Err(Errno::NOTDIR) => return Err(StoreError::Exists),
                Err(Errno::XDEV) | Err(Errno::LOOP) => return Err(StoreError::Refused),
                Err(e) => return Err(StoreError::Io(e.into())),
            }
        });
    }
    dir.ok_or_else(|| StoreError::other("a folder path without segments"))
}

fn is_symlink(dir: BorrowedFd<'_>, name: &str) -> bool {
    rustix::fs::statat(dir, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
        .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink)
}

/// Where a file that is placed into the store is.
#[derive(Clone, Copy)]
pub(super) enum Origin<'a> {
    /// A name in a folder: a temporary in the store's temporary folder held open, or a path
    /// (a resumable upload's bytes); renamed into place.
    Named {
        dir: BorrowedFd<'a>,
        /// Relative to `dir`.
        name: &'a Path,
        /// The whole path, for log lines.
        path: &'a Path,
    },
    /// An unnamed temporary ([`unnamed`]), linked into place.
    Unnamed { file: BorrowedFd<'a>, linking: Linking },
}

impl<'a> Origin<'a> {
    /// A file at `path` (absolute, or relative to the working folder).
    pub(super) fn path(path: &'a Path) -> Self {
        Self::Named {
            dir: rustix::fs::CWD,
            name: path,
            path,
        }
    }

    /// Gives the file the name `name` in `dir` unless that name is taken.
    fn place(self, dir: &OwnedFd, name: &str) -> Result<(), Errno> {
        match self {
            Origin::Named {
                dir: from,
                name: from_name,
                ..
            } => {
                match rustix::fs::renameat_with(from, from_name, dir, name, RenameFlags::NOREPLACE) {
                    // File systems without RENAME_NOREPLACE: `link` fails if the target exists.
                    Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                        rustix::fs::linkat(from, from_name, dir, name, AtFlags::empty()).map(|()| {
                            let _ = rustix::fs::unlinkat(from, from_name, AtFlags::empty());
                        })
                    }
                    other => other,
                }
            }
            Origin::Unnamed { file, linking } => unnamed::link(file, linking, dir, name),
        }
    }

    /// Moves the file to `dest` (a resumable upload's bytes kept): renamed, or linked there.
    pub(super) fn keep_as(self, dest: &Path) -> Result<(), Errno> {
        match self {
            Origin::Named { dir, name, .. } => rustix::fs::renameat(dir, name, rustix::fs::CWD, dest),
            Origin::Unnamed { file, linking } => unnamed::link(file, linking, rustix::fs::CWD, dest),
        }
    }

    /// What the file is, for log lines.
    fn describe(&self) -> String {
        match self {
            Origin::Named { path, .. } => path.display().to_string(),
            Origin::Unnamed { .. } => "an unnamed temporary".to_string(),
        }
    }
}

/// Places `from` into the store at `key` unless something is there already, creating the
/// key's folders beneath the root (never through a symlink that leads out), then fsyncs the
/// folder (and first, for an unnamed file, the file again: its link count changed, and its
/// inode must not reach the disk after the folder's entry, which a file system without a
/// journal would otherwise allow). When that fails the file is taken back out
/// ([`move_back`]): an error leaves nothing at the key.
pub(super) fn place_into_store(root_fd: &impl AsFd, from: Origin<'_>, key: &FileKey) -> Result<(), StoreError> {
    let (dir_rel, name) = split_key(key);
    for attempt in 0..3 {
        let dir = dir_beneath(root_fd, dir_rel, true)?;
        crate::fault::point("store.commit.rename").map_err(classify_write)?;
        match from.place(&dir, name) {
            Ok(()) => {
                let synced = crate::fault::point("store.commit.dir_fsync").and_then(|()| {
                    if let Origin::Unnamed { file, .. } = from {
                        rustix::fs::fsync(file)?;
                    }
                    Ok(rustix::fs::fsync(&dir)?)
                });
                if let Err(e) = synced {
                    move_back(&dir, name, from);
                    return Err(match (from, classify_write(e)) {
                        // An unnamed file is linked once only: trying this again cannot work.
                        (Origin::Unnamed { .. }, StoreError::Io(e)) => StoreError::Io(io::Error::other(e)),
                        (_, e) => e,
                    });
                }
                return Ok(());
            }
            Err(Errno::EXIST) | Err(Errno::NOTDIR) | Err(Errno::ISDIR) | Err(Errno::NOTEMPTY) => {
                return Err(StoreError::Exists);
            }
            // A concurrent delete removed the emptied folder between mkdir and rename.
            Err(Errno::NOENT) if attempt < 2 => continue,
            Err(e) => return Err(classify_write(e.into())),
        }
    }
    Err(StoreError::other("rename kept failing"))
}

/// Undoes the placing of a file whose commit failed afterwards: the file at `name` in `dir`
/// goes back to `to` (a temporary, or a partial upload's bytes, which must not be lost); an
/// unnamed temporary loses the name again (its bytes stay with its descriptor, and go with
/// the failed upload).
fn move_back(dir: &OwnedFd, name: &str, to: Origin<'_>) {
    let back = match to {
        Origin::Named {
            dir: to_dir,
            name: to_name,
            ..
        } => rustix::fs::renameat_with(dir, name, to_dir, to_name, RenameFlags::NOREPLACE),
        // Only if the name is still this file's (a DELETE and another upload to the key may
        // have come in between).
        Origin::Unnamed { file, .. } => match (
            rustix::fs::fstat(file),
            rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW),
        ) {
            (Ok(ours), Ok(there)) if (ours.st_dev, ours.st_ino) != (there.st_dev, there.st_ino) => Ok(()),
            _ => rustix::fs::unlinkat(dir, name, AtFlags::empty()),
        },
    };
    match back.and_then(|()| rustix::fs::fsync(dir)) {
        Ok(()) => {
            tracing::warn!(file = %to.describe(), name, "a commit failed after the file was placed; it was taken out again")
        }
        Err(e) => {
            tracing::error!(file = %to.describe(), name, error = %e, "a commit failed after the file was placed, and it cannot be taken out")
        }
    }
}

/// Takes the file at `key` back to `to` after a commit that failed past its placing (see
/// [`place_into_store`]).
pub(super) fn take_back(root_fd: &impl AsFd, key: &FileKey, to: Origin<'_>) {
    let (dir_rel, name) = split_key(key);
    match dir_beneath(root_fd, dir_rel, false) {
        Ok(dir) => move_back(&dir, name, to),
        Err(e) => {
            tracing::error!(file = %to.describe(), name, error = %e, "a commit failed after the file was placed, and it cannot be taken out")
        }
    }
}

/// fsyncs a folder (after a rename into it).
pub(super) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)?.sync_all().map_err(classify_write)
}

/// Opens `relative` beneath the folder `dir_fd` without leaving it, even through symlinks.
pub(super) fn open_beneath(dir_fd: &impl AsFd, dir: &Path, relative: &str) -> Result<File, StoreError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Taking an unnamed file back out removes its name, and only while the name is its own.
    #[test]
    fn an_unnamed_file_is_taken_back_only_from_its_own_name() {
        let dir = tempfile::tempdir().unwrap();
        let folder: OwnedFd = File::open(dir.path()).unwrap().into();
        let linking = unnamed::probe(dir.path()).expect("unnamed files in the temporary folder");
        let file = unnamed::create(&folder).unwrap();
        let ours = Origin::Unnamed {
            file: file.as_fd(),
            linking,
        };
        ours.place(&folder, "f").unwrap();
        assert!(dir.path().join("f").exists());
        move_back(&folder, "f", ours);
        assert!(!dir.path().join("f").exists(), "taken back");

        let file = unnamed::create(&folder).unwrap();
        let ours = Origin::Unnamed {
            file: file.as_fd(),
            linking,
        };
        ours.place(&folder, "g").unwrap();
        // A DELETE, and another upload to the same name, before the take-back.
        fs::remove_file(dir.path().join("g")).unwrap();
        fs::write(dir.path().join("g"), b"another upload").unwrap();
        move_back(&folder, "g", ours);
        assert_eq!(fs::read(dir.path().join("g")).unwrap(), b"another upload");
    }

    /// Both ways of opening folders beneath the root give the same answers.
    #[test]
    fn folders_beneath_the_root_with_and_without_openat2() {
        for openat2 in [true, false] {
            let outside = tempfile::tempdir().unwrap();
            let root_dir = tempfile::tempdir().unwrap();
            let root = File::open(root_dir.path()).unwrap();

            let made = dir_beneath_with(&root, "a/b/c", true, openat2).unwrap();
            assert!(root_dir.path().join("a/b/c").is_dir());
            rustix::fs::mkdirat(&made, "d", Mode::from_raw_mode(0o700)).unwrap();
            assert!(root_dir.path().join("a/b/c/d").is_dir(), "the folder opened is a/b/c");
            dir_beneath_with(&root, "a/b", false, openat2).unwrap();
            assert!(matches!(
                dir_beneath_with(&root, "a/x", false, openat2),
                Err(StoreError::NotFound)
            ));
            assert!(!root_dir.path().join("a/x").exists());

            fs::write(root_dir.path().join("a/file"), b"x").unwrap();
            for create in [false, true] {
                let err = dir_beneath_with(&root, "a/file/y", create, openat2).unwrap_err();
                assert!(matches!(err, StoreError::Exists), "{openat2} {create}: {err:?}");
            }

            std::os::unix::fs::symlink(outside.path(), root_dir.path().join("a/out")).unwrap();
            for create in [false, true] {
                let err = dir_beneath_with(&root, "a/out/z", create, openat2).unwrap_err();
                assert!(matches!(err, StoreError::Refused), "{openat2} {create}: {err:?}");
            }
            assert!(!outside.path().join("z").exists(), "nothing made outside the root");
        }
    }
}
