//! Pieces of finished files handed to the HTTP layer as [`Bytes`] that are a read-only mapping
//! of the file, and registered here so that the connection's stream can send them with
//! `sendfile(2)` (page references from the page cache into the socket) instead of a `pread`
//! into a buffer and a `writev` out of it: two copies of every byte less
//! ([`crate::server::zero_copy`]). hyper writes only byte slices it is given (its issue 3026);
//! the slice's address is what tells the stream which file and offset it stands for.
//!
//! Reading the bytes is always correct: they are the file's own pages, mapped. A writer that
//! does not know about the registry (a Unix socket test client, a body collected in a test)
//! gets the file's content through page faults. The files mapped are finished files, which
//! nothing in the server changes; one truncated by hand while being sent ends that download
//! (`sendfile` comes up short) rather than the server: the mapping itself is never read on
//! the socket path.

use std::collections::BTreeMap;
use std::ffi::c_void;
use std::fs::File;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rustix::mm::{MapFlags, ProtFlags};

/// A mapped piece of a file, registered while it lives.
struct Region {
    map: NonNull<c_void>,
    map_len: usize,
    /// Where the piece starts inside the mapping (the mapping starts on a page boundary).
    skip: usize,
    len: usize,
}

// SAFETY: the mapping is read-only and shared; nothing writes through it, and it is unmapped
// only by its owner's drop.
unsafe impl Send for Region {}
// SAFETY: as above: only shared, read-only access.
unsafe impl Sync for Region {}

impl AsRef<[u8]> for Region {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `skip + len <= map_len`, the mapping lives as long as `self`, and a file in
        // the store is not changed while mapped (see the module documentation).
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<u8>().add(self.skip), self.len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let start = self.map.as_ptr() as usize + self.skip;
        if let Ok(mut regions) = REGIONS.lock() {
            regions.remove(&start);
        }
        LIVE.fetch_sub(1, Ordering::Relaxed);
        // SAFETY: mapped by `map` with this address and length, unmapped only here.
        unsafe {
            let _ = rustix::mm::munmap(self.map.as_ptr(), self.map_len);
        }
    }
}

/// Which file and where in it a registered piece's bytes come from.
struct Entry {
    end: usize,
    file: Arc<File>,
    offset: u64,
}

static REGIONS: Mutex<BTreeMap<usize, Entry>> = Mutex::new(BTreeMap::new());
/// Registered pieces: no lookup at all while there are none.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// The bytes `offset..offset + len` of `file`, mapped (not read) and registered. With
/// `populate`, the pages are read in now (call it off the runtime: on a disk this waits for
/// the device), so that sending them later does not wait; on a file system in memory there is
/// nothing to wait for.
pub(crate) fn map(file: &Arc<File>, offset: u64, len: usize, populate: bool) -> io::Result<Bytes> {
    debug_assert!(len > 0);
    let page = rustix::param::page_size() as u64;
    let aligned = offset - offset % page;
    let skip = (offset - aligned) as usize;
    let map_len = skip + len;
    let flags = if populate {
        MapFlags::SHARED | MapFlags::POPULATE
    } else {
        MapFlags::SHARED
    };
    // SAFETY: a new read-only mapping at an address the kernel picks; it aliases nothing.
    let ptr = unsafe { rustix::mm::mmap(std::ptr::null_mut(), map_len, ProtFlags::READ, flags, file, aligned)? };
    let map = NonNull::new(ptr).ok_or_else(|| io::Error::other("mmap gave a null address"))?;
    let start = ptr as usize + skip;
    let entry = Entry {
        end: start + len,
        file: Arc::clone(file),
        offset,
    };
    LIVE.fetch_add(1, Ordering::Relaxed);
    let region = Region {
        map,
        map_len,
        skip,
        len,
    };
    REGIONS
        .lock()
        .map_err(|_| io::Error::other("mapped-file registry poisoned"))?
        .insert(start, entry);
    Ok(Bytes::from_owner(region))
}

/// The file and offset whose bytes start at `ptr`, and how many of them follow in the same
/// registered piece; `None` when `ptr` is not inside one.
pub fn find(ptr: *const u8) -> Option<(Arc<File>, u64, usize)> {
    if LIVE.load(Ordering::Relaxed) == 0 {
        return None;
    }
    let addr = ptr as usize;
    let regions = REGIONS.lock().ok()?;
    let (&start, entry) = regions.range(..=addr).next_back()?;
    (addr < entry.end).then(|| {
        (
            Arc::clone(&entry.file),
            entry.offset + (addr - start) as u64,
            entry.end - addr,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_mapped_piece_reads_as_the_file_and_is_found_by_any_address_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let content: Vec<u8> = (0..3 * 4096 + 123).map(|i| (i % 251) as u8).collect();
        File::create(&path).unwrap().write_all(&content).unwrap();
        let file = Arc::new(File::open(&path).unwrap());
        for populate in [false, true] {
            // Not on a page boundary, as a Range request asks.
            let bytes = map(&file, 5000, 4000, populate).unwrap();
            assert_eq!(&bytes[..], &content[5000..9000]);
            let (found, offset, rest) = find(bytes.as_ptr()).unwrap();
            assert!(Arc::ptr_eq(&found, &file));
            assert_eq!((offset, rest), (5000, 4000));
            let (_, offset, rest) = find(bytes[100..].as_ptr()).unwrap();
            assert_eq!((offset, rest), (5100, 3900));
            let ours = |ptr: *const u8| find(ptr).is_some_and(|(f, _, _)| Arc::ptr_eq(&f, &file));
            assert!(!ours(bytes.as_ptr().wrapping_add(4000)), "one past the end");
            let slice = bytes.slice(10..20);
            drop(bytes);
            assert_eq!(find(slice.as_ptr()).map(|f| f.1), Some(5010), "alive while a slice is");
            let addr = slice.as_ptr();
            drop(slice);
            assert!(!ours(addr), "unregistered when the last owner goes");
        }
        let other = [1u8; 16];
        assert!(find(other.as_ptr()).is_none());
    }
}
