//! Unnamed temporaries: an upload in progress is a file without a name (`O_TMPFILE`) in the
//! temporary folder's file system, and its commit gives it its final name with one `linkat`,
//! which fails when the name exists (no overwrite, as the no-replace rename).
//!
//! What this saves over a named temporary that is renamed into place: no folder entry is made
//! and removed in the one temporary folder for every upload, so concurrent uploads do not
//! queue on that folder's lock (on ext4 they did: 12% of a small PUT's CPU was spent spinning
//! on it); and a server that dies at any moment leaves nothing to sweep, the kernel frees the
//! bytes of an unnamed file with its last descriptor (after a power cut, the file system does
//! when mounted again: a journal lists such files; without one, `e2fsck` finds them). An
//! upload in progress is seen in `df`, and in `/proc/<pid>/fd` as
//! `.hmac-file-server/tmp/#<inode> (deleted)`, not in the folder.
//!
//! The commit fsyncs the file again after the link, before the folder: the link count is in
//! the file's inode, which must not reach the disk after the folder's new entry.
//!
//! The store tries it once at start in its temporary folder: file systems without
//! `O_TMPFILE` (some network and FUSE mounts), kernels before 3.11, and a process that may
//! not link a file by its descriptor (`AT_EMPTY_PATH` needs `CAP_DAC_READ_SEARCH` before Linux
//! 6.10, and `/proc` may not be mounted) get named temporaries, as before.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::staged::FILE_MODE;

/// How an unnamed file gets a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Linking {
    /// `linkat(fd, "", …, AT_EMPTY_PATH)`.
    EmptyPath,
    /// `linkat(AT_FDCWD, "/proc/self/fd/<fd>", …, AT_SYMLINK_FOLLOW)`, for a process that may
    /// not use `AT_EMPTY_PATH`.
    ProcFd,
}

/// Makes an unnamed file for writing in the file system of the folder `dir`.
pub(super) fn create(dir: impl AsFd) -> Result<OwnedFd, Errno> {
    let flags = OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC;
    rustix::fs::openat(dir, ".", flags, Mode::from_raw_mode(FILE_MODE))
}

/// Gives the unnamed `file` the name `name` in the folder `dir`; `EEXIST` when the name is
/// taken (nothing is replaced). An unnamed file can be linked once: a name taken off it again
/// leaves its bytes only to its descriptor.
pub(super) fn link(
    file: BorrowedFd<'_>,
    linking: Linking,
    dir: impl AsFd,
    name: impl AsRef<Path>,
) -> Result<(), Errno> {
    let name = name.as_ref();
    match linking {
        Linking::EmptyPath => rustix::fs::linkat(file, "", dir, name, AtFlags::EMPTY_PATH),
        Linking::ProcFd => {
            let by_fd = format!("/proc/self/fd/{}", file.as_raw_fd());
            rustix::fs::linkat(rustix::fs::CWD, by_fd.as_str(), dir, name, AtFlags::SYMLINK_FOLLOW)
        }
    }
}

/// Which way unnamed files made in `dir` can be given a name here, tried with a file made and
/// linked in `dir` (and removed); `None` when unnamed files cannot be used there.
pub(super) fn probe(dir: &Path) -> Option<Linking> {
    let folder = rustix::fs::open(dir, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let mut random = [0u8; 8];
    rand::fill(&mut random);
    let name = format!("link-probe-{}-{}", std::process::id(), hex::encode(random));
    for linking in [Linking::EmptyPath, Linking::ProcFd] {
        // A file linked once cannot be linked again: a new one for each way.
        let Ok(file) = create(&folder) else { return None };
        if link(file.as_fd(), linking, &folder, &name).is_ok() {
            let _ = rustix::fs::unlinkat(&folder, &name, AtFlags::empty());
            return Some(linking);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;

    use super::*;

    #[test]
    fn an_unnamed_file_is_linked_once_and_never_over_a_name() {
        let dir = tempfile::tempdir().unwrap();
        // This machine's temporary folders (ext4, tmpfs) have unnamed files.
        let linking = probe(dir.path()).expect("O_TMPFILE and linkat in the temporary folder");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "the probe leaves nothing");
        let folder = fs::File::open(dir.path()).unwrap();
        for way in [Linking::EmptyPath, Linking::ProcFd] {
            if way == Linking::EmptyPath && linking != Linking::EmptyPath {
                continue;
            }
            let fd = create(&folder).unwrap();
            let mut file = fs::File::from(fd);
            file.write_all(b"bytes").unwrap();
            assert_eq!(
                fs::read_dir(dir.path()).unwrap().count(),
                0,
                "{way:?}: no name while written"
            );
            fs::write(dir.path().join("taken"), b"first").unwrap();
            assert_eq!(link(file.as_fd(), way, &folder, "taken"), Err(Errno::EXIST));
            assert_eq!(
                fs::read(dir.path().join("taken")).unwrap(),
                b"first",
                "{way:?}: not replaced"
            );
            let name = format!("{way:?}");
            link(file.as_fd(), way, &folder, &name).unwrap();
            assert_eq!(fs::read(dir.path().join(&name)).unwrap(), b"bytes");
            fs::remove_file(dir.path().join(&name)).unwrap();
            assert!(
                link(file.as_fd(), way, &folder, "again").is_err(),
                "{way:?}: linked once only"
            );
            fs::remove_file(dir.path().join("taken")).unwrap();
        }
    }
}
