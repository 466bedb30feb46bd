//! Tests of the local store: its commit, read, delete and sweep of temporaries, and both
//! seams ([`crate::store::Store`], [`crate::store::Partials`]) on a temporary folder.

use super::*;
use bytes::Bytes;

fn key(s: &str) -> FileKey {
    FileKey::parse_decoded(s).unwrap()
}

/// What a file stored with the defaults has (octet-stream, no digest: no sidecar).
fn default_meta(size: u64) -> FileMeta {
    FileMeta {
        content_type: crate::auth::DEFAULT_CONTENT_TYPE.into(),
        ..meta(size)
    }
}

fn meta(size: u64) -> FileMeta {
    FileMeta {
        content_type: "text/plain".into(),
        size,
        uploaded_unix: 1,
        sha256: None,
    }
}

/// A folder on tmpfs (commits run on the runtime thread there, reads skip RESOLVE_CACHED).
fn memory_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir_in("/dev/shm").expect("/dev/shm (tmpfs on Debian)");
    assert!(in_memory(dir.path()), "/dev/shm is not tmpfs here");
    dir
}

#[tokio::test]
async fn commit_then_read_then_delete() {
    let dir = tempfile::tempdir().unwrap();
    commit_read_delete(dir.path()).await;
}

#[tokio::test]
async fn commit_then_read_then_delete_in_memory() {
    let dir = memory_dir();
    commit_read_delete(dir.path()).await;
}

async fn commit_read_delete(dir: &Path) {
    let store = LocalStore::open(dir, "upload", 4096, RetryPolicy::NONE).unwrap();
    let mut staged = store.stage_local();
    staged.write(Bytes::from_static(b"hello ")).await.unwrap();
    staged.write(Bytes::from(vec![b'x'; 10_000])).await.unwrap();
    assert_eq!(staged.len(), 10_006);
    store.commit(staged, &key("a/b c.txt"), &meta(10_006)).await.unwrap();
    let on_disk = fs::read(dir.join("upload/a/b c.txt")).unwrap();
    assert_eq!(on_disk.len(), 10_006);
    assert!(on_disk.starts_with(b"hello x"));
    let (opened, _, _) = store.open_file(&key("a/b c.txt"), true).await.unwrap();
    assert_eq!(opened.size, 10_006);
    assert_eq!(opened.meta.unwrap().content_type, "text/plain");
    assert_eq!(store.temporaries(), 0, "no temporaries left");

    store.delete(&key("a/b c.txt")).await.unwrap();
    assert!(!dir.join("upload/a").exists(), "emptied folder removed");
    assert!(matches!(
        store.delete(&key("a/b c.txt")).await,
        Err(StoreError::NotFound)
    ));
}

#[tokio::test]
async fn no_replace_and_cleanup() {
    for named in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        no_replace(dir.path(), named).await;
    }
}

#[tokio::test]
async fn no_replace_and_cleanup_in_memory() {
    for named in [false, true] {
        let dir = memory_dir();
        no_replace(dir.path(), named).await;
    }
}

/// A store in `dir`, with named temporaries when `named` (else as the file system allows).
fn store_in(dir: &Path, named: bool) -> LocalStore {
    let store = LocalStore::open(dir, "upload", 4096, RetryPolicy::NONE).unwrap();
    if named { store.with_named_temporaries() } else { store }
}

async fn no_replace(dir: &Path, named: bool) {
    let store = store_in(dir, named);
    let in_folder = || fs::read_dir(store.tmp_dir()).unwrap().count();
    let mut first = store.stage_local();
    first.write(Bytes::from_static(b"first")).await.unwrap();
    store.commit(first, &key("k/f"), &meta(5)).await.unwrap();
    let mut second = store.stage_local();
    second.write(Bytes::from(vec![b's'; 10_000])).await.unwrap();
    second.sync().await.unwrap();
    assert_eq!(store.temporaries(), 1, "named {named}: the upload in progress");
    assert_eq!(in_folder(), usize::from(!store.unnamed_temporaries()), "named {named}");
    assert!(matches!(
        store.commit(second, &key("k/f"), &meta(10_000)).await,
        Err(StoreError::Exists)
    ));
    assert_eq!(fs::read(dir.join("upload/k/f")).unwrap(), b"first");
    // A file where a folder would have to be.
    let third = store.stage_local();
    assert!(matches!(
        store.commit(third, &key("k/f/g"), &meta(0)).await,
        Err(StoreError::Exists)
    ));
    // A folder where the file would go.
    let fourth = store.stage_local();
    assert!(matches!(
        store.commit(fourth, &key("k"), &meta(0)).await,
        Err(StoreError::Exists)
    ));
    assert_eq!(store.temporaries(), 0, "named {named}: losers leave nothing behind");
    // Dropped without commit.
    let mut dropped = store.stage_local();
    dropped.write(Bytes::from_static(b"partial")).await.unwrap();
    dropped.sync().await.unwrap();
    assert_eq!(store.temporaries(), 1, "named {named}");
    drop(dropped);
    assert_eq!(store.temporaries(), 0, "named {named}");
}

/// Unnamed temporaries where this machine's file systems have them (ext4 and tmpfs do).
#[test]
fn uploads_in_progress_are_unnamed_on_ext4_and_tmpfs() {
    for dir in [tempfile::tempdir().unwrap(), memory_dir()] {
        let store = LocalStore::open(dir.path(), "upload", 4096, RetryPolicy::NONE).unwrap();
        assert!(store.unnamed_temporaries(), "{}", dir.path().display());
    }
}

/// A commit that fails after its file was placed (here the sidecar cannot follow it: the
/// sidecars' folder is a file) takes the file back out: nothing at the key, no temporary
/// left, and the key takes a later upload.
#[tokio::test]
async fn a_commit_failed_after_placing_leaves_nothing_at_the_key() {
    for named in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), named);
        let meta_dir = dir.path().join(INTERNAL_DIR).join("meta");
        fs::remove_dir(&meta_dir).unwrap();
        fs::write(&meta_dir, b"not a folder").unwrap();
        let mut staged = store.stage_local();
        staged.write(Bytes::from(vec![b'x'; 10_000])).await.unwrap();
        let committed = store.commit(staged, &key("t/f"), &meta(10_000)).await;
        assert!(committed.is_err(), "named {named}: {committed:?}");
        assert!(!dir.path().join("upload/t/f").exists(), "named {named}: taken back");
        assert_eq!(store.temporaries(), 0, "named {named}");
        let mut again = store.stage_local();
        again.write(Bytes::from_static(b"again")).await.unwrap();
        let defaults = default_meta(5);
        store.commit(again, &key("t/f"), &defaults).await.unwrap();
        assert_eq!(fs::read(dir.path().join("upload/t/f")).unwrap(), b"again");
    }
}

#[tokio::test]
async fn stale_sidecar_is_ignored_and_symlinks_cannot_escape() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path(), "upload", 4096, RetryPolicy::NONE).unwrap();
    let mut staged = store.stage_local();
    staged.write(Bytes::from_static(b"abc")).await.unwrap();
    store.commit(staged, &key("s/f"), &meta(99)).await.unwrap();
    assert!(store.open_file(&key("s/f"), false).await.unwrap().0.meta.is_none());

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

#[tokio::test]
async fn a_commit_never_leaves_the_store_through_a_symlinked_folder() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path(), "upload", 4096, RetryPolicy::NONE).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("upload/link")).unwrap();
    fs::create_dir(dir.path().join("upload/a")).unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("upload/a/link")).unwrap();
    // The folder made first for the key's last segment finds the symlink there: refused.
    for k in ["link/f", "a/link/f", "link/new/f"] {
        let mut staged = store.stage_local();
        staged.write(Bytes::from_static(b"x")).await.unwrap();
        let committed = store.commit(staged, &key(k), &meta(1)).await;
        assert!(matches!(committed, Err(StoreError::Refused)), "{k}: {committed:?}");
    }
    assert_eq!(
        fs::read_dir(outside.path()).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert_eq!(store.temporaries(), 0, "no temporary left");
}

#[tokio::test]
async fn a_commit_removes_the_sidecar_an_earlier_file_left_at_its_key() {
    let dir = memory_dir();
    let store = LocalStore::open(dir.path(), "upload", 4096, RetryPolicy::NONE).unwrap();
    let mut staged = store.stage_local();
    staged.write(Bytes::from_static(b"abc")).await.unwrap();
    store.commit(staged, &key("s/f"), &meta(3)).await.unwrap();
    let typed = store.open_file(&key("s/f"), false).await.unwrap().0.meta;
    assert_eq!(typed.map(|m| m.content_type).as_deref(), Some("text/plain"));
    // The file goes, its sidecar stays (a delete cut short); a new file of the same size and
    // the default type must not be described by it.
    fs::remove_file(dir.path().join("upload/s/f")).unwrap();
    let mut staged = store.stage_local();
    staged.write(Bytes::from_static(b"xyz")).await.unwrap();
    let plain = default_meta(3);
    store.commit(staged, &key("s/f"), &plain).await.unwrap();
    assert!(store.open_file(&key("s/f"), false).await.unwrap().0.meta.is_none());
    let sidecars: usize = fs::read_dir(dir.path().join(".hmac-file-server/meta"))
        .unwrap()
        .flatten()
        .map(|shard| fs::read_dir(shard.path()).unwrap().count())
        .sum();
    assert_eq!(sidecars, 0);
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
    for named in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let store = store_in(dir.path(), named);
        let old = store.tmp_dir().join("old.part");
        fs::write(&old, b"x").unwrap();
        let past = SystemTime::now() - Duration::from_secs(7200);
        File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(past)
            .unwrap();
        let mut fresh = store.stage_local();
        fresh.write(Bytes::from_static(b"x")).await.unwrap();
        fresh.sync().await.unwrap();
        assert_eq!(store.sweep_temporaries(Duration::from_secs(3600)).await.unwrap(), 1);
        assert!(!old.exists());
        assert_eq!(store.temporaries(), 1, "named {named}: the fresh one stays");
    }
}

// ---- The store at its seams: `Store::Local` and `Partials::Local`. ----

use std::collections::BTreeMap;

use futures_util::StreamExt;
use sha2::Digest;

use crate::store::{Partials, Staged, Store};

/// A store under a fresh temporary folder, with finished files under `upload/`.
fn local_store(dir: &Path) -> (LocalStore, Store) {
    let local = LocalStore::open(dir, "upload", 4096, RetryPolicy::NONE).unwrap();
    (local.clone(), Store::Local(local))
}

/// `len` bytes that differ from one position to the next (and from a shifted copy).
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ (i >> 16) as u8).collect()
}

async fn commit_bytes(store: &Store, key_text: &str, bytes: &[u8]) {
    let mut staged = store.stage_local();
    staged.write(Bytes::copy_from_slice(bytes)).await.unwrap();
    store
        .commit(staged, &key(key_text), &meta(bytes.len() as u64))
        .await
        .unwrap();
}

/// Everything a byte stream yields, and the largest piece it came in.
async fn collect(mut stream: crate::store::ByteStream) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut largest = 0;
    while let Some(piece) = stream.next().await {
        let piece = piece.unwrap();
        largest = largest.max(piece.len());
        out.extend_from_slice(&piece);
    }
    (out, largest)
}

/// A new unfinished upload `id` holding `bytes`, persisted: its length and handle.
async fn new_partial(partials: &Partials, id: &str, bytes: &[u8]) -> (u64, crate::store::PartialHandle) {
    let handle = partials.create(id).await.unwrap();
    let mut appender = partials.append_at(id, &handle, 0, Hashing::NONE).await.unwrap();
    appender.write(Bytes::copy_from_slice(bytes)).await.unwrap();
    partials.persist(appender, 0).await.unwrap()
}

/// The bytes of an unfinished upload as they are on disk (whatever its record says).
fn partial_on_disk(store: &LocalStore, id: &str) -> Vec<u8> {
    fs::read(store.partial_path(id)).unwrap()
}

/// Two upload ids (the state layer hands out 32 hex digits).
const ID: &str = "0123456789abcdef0123456789abcdef";
const OTHER_ID: &str = "fedcba9876543210fedcba9876543210";

impl LocalStore {
    /// Makes the bytes of upload `id` look untouched since `when` (for the sweeps' tests,
    /// here and in the engine's).
    pub(crate) fn set_partial_modified(&self, id: &str, when: SystemTime) {
        File::options()
            .write(true)
            .open(self.partial_path(id))
            .unwrap()
            .set_modified(when)
            .unwrap();
    }
}

#[tokio::test]
async fn a_new_file_at_a_deleted_key_gets_a_new_etag_even_with_the_same_size_in_the_same_second() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = local_store(dir.path());
    commit_bytes(&store, "e/tag", b"first").await;
    let before = store.head(&key("e/tag")).await.unwrap();
    assert_eq!(store.delete(&key("e/tag")).await.unwrap(), 5);
    commit_bytes(&store, "e/tag", b"other").await;
    let after = store.head(&key("e/tag")).await.unwrap();
    assert_eq!(before.size, after.size);
    assert_ne!(before.etag, after.etag, "same size, new file: new validator");
    assert!(
        before.etag.starts_with('"') && before.etag.ends_with('"'),
        "{}",
        before.etag
    );
}

#[tokio::test]
async fn each_commit_stamps_a_later_modification_time_with_nanoseconds() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = local_store(dir.path());
    let mut times = Vec::new();
    for name in ["t/1", "t/2", "t/3"] {
        commit_bytes(&store, name, b"same").await;
        times.push(store.head(&key(name)).await.unwrap().modified);
    }
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    // The validator is the size and the stamp to the nanosecond.
    let info = store.head(&key("t/3")).await.unwrap();
    let nanos = info.modified.duration_since(UNIX_EPOCH).unwrap().as_nanos();
    assert_eq!(info.etag, format!("\"4-{nanos:x}\""));
}

#[tokio::test]
async fn opened_files_stream_exactly_the_asked_range_in_and_across_read_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = local_store(dir.path());
    let piece = READ_CHUNK_BYTES as u64;
    let bytes = pattern(READ_CHUNK_BYTES * 5 / 2);
    let len = bytes.len() as u64;
    commit_bytes(&store, "big/file", &bytes).await;
    let ranges = [
        (0, len),
        (0, 10),
        (100, piece - 1),
        (piece - 5, piece + 5),
        (piece / 2, 2 * piece + 3),
        (2 * piece + 7, len),
        (len - 1, len),
        (42, 42),
        (len, len),
    ];
    for (start, end) in ranges {
        let opened = store.open(&key("big/file"), false).await.unwrap();
        assert_eq!(opened.info.size, len);
        assert!(opened.content.is_none(), "not asked for");
        let (got, largest) = collect(opened.stream(start, end)).await;
        assert!(
            got == bytes[start as usize..end as usize],
            "range {start}..{end}: {} bytes",
            got.len()
        );
        assert!(largest <= READ_CHUNK_BYTES, "pieces stay bounded");
    }
    let opened = store.open(&key("big/file"), true).await.unwrap();
    assert!(opened.content.is_none(), "a large file is never read whole");
}

#[tokio::test]
async fn a_small_file_opened_with_read_small_carries_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = local_store(dir.path());
    let bytes = pattern(1000);
    commit_bytes(&store, "small", &bytes).await;
    let opened = store.open(&key("small"), true).await.unwrap();
    assert_eq!(opened.content.as_deref(), Some(&bytes[..]));
    assert_eq!(opened.info.size, 1000);
    let (streamed, _) = collect(opened.stream(10, 20)).await;
    assert_eq!(
        streamed,
        &bytes[10..20],
        "the file stays readable after the content was read"
    );
    let limit = SMALL_FILE_BYTES as usize;
    commit_bytes(&store, "at-limit", &pattern(limit)).await;
    let opened = store.open(&key("at-limit"), true).await.unwrap();
    assert_eq!(opened.content.map(|c| c.len()), Some(limit));
}

#[tokio::test]
async fn list_yields_exactly_the_finished_files_with_their_sizes() {
    let dir = tempfile::tempdir().unwrap();
    // Finished files right under StoreDir: the store's own folder sits among them.
    let local = LocalStore::open(dir.path(), "", 4096, RetryPolicy::NONE).unwrap();
    let store = Store::Local(local.clone());
    commit_bytes(&store, "a/b.txt", b"12345").await;
    commit_bytes(&store, "c", b"1").await;
    commit_bytes(&store, "d/e/f", b"").await;
    // Things that are not finished files: a temporary, a partial upload, a sidecar (the
    // content type is not the default), and a file whose name is no valid key.
    let mut staged = store.stage_local();
    staged.write(Bytes::from_static(b"in progress")).await.unwrap();
    #[allow(irrefutable_let_patterns)]
    let Staged::Local(file) = &mut staged else {
        panic!("a local staging")
    };
    file.sync().await.unwrap();
    store.partials().create(ID).await.unwrap();
    fs::write(dir.path().join("back\\slash"), b"x").unwrap();
    assert!(
        fs::read_dir(dir.path().join(INTERNAL_DIR).join("meta"))
            .unwrap()
            .count()
            > 0
    );

    let mut listed = BTreeMap::new();
    let mut stream = store.list();
    while let Some(item) = stream.next().await {
        let item = item.unwrap();
        let modified = store.head(&item.key).await.unwrap().modified;
        assert_eq!(item.modified, modified);
        assert!(listed.insert(item.key.as_str().to_string(), item.size).is_none());
    }
    let expected = BTreeMap::from([
        ("a/b.txt".to_string(), 5),
        ("c".to_string(), 1),
        ("d/e/f".to_string(), 0),
    ]);
    assert_eq!(listed, expected);
    drop(staged);
}

#[tokio::test]
async fn probe_is_ok_on_a_fresh_store_and_names_an_upload_folder_that_became_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = local_store(dir.path());
    assert_eq!(store.probe().await, Ok(()));
    assert_eq!(
        fs::read_dir(dir.path().join(INTERNAL_DIR).join("tmp")).unwrap().count(),
        0,
        "the probe cleans up"
    );
    let files = dir.path().join("upload");
    fs::remove_dir(&files).unwrap();
    fs::write(&files, b"not a folder").unwrap();
    let problem = store.probe().await.unwrap_err();
    assert!(problem.contains("not a folder"), "{problem}");
    assert!(problem.contains(&files.display().to_string()), "{problem}");
}

#[tokio::test]
async fn partial_bytes_appended_and_persisted_are_durable_at_the_new_offset() {
    let dir = tempfile::tempdir().unwrap();
    let (local, store) = local_store(dir.path());
    let partials = store.partials();
    let handle = partials.create(ID).await.unwrap();
    assert_eq!(partial_on_disk(&local, ID), b"");
    let mut appender = partials.append_at(ID, &handle, 0, Hashing::NONE).await.unwrap();
    appender.write(Bytes::from_static(b"hello ")).await.unwrap();
    appender.write(Bytes::from(pattern(10_000))).await.unwrap();
    let (offset, handle) = partials.persist(appender, 0).await.unwrap();
    assert_eq!(offset, 10_006);
    let mut expected = b"hello ".to_vec();
    expected.extend(pattern(10_000));
    assert_eq!(partial_on_disk(&local, ID), expected);

    let mut appender = partials.append_at(ID, &handle, offset, Hashing::NONE).await.unwrap();
    appender.write(Bytes::from_static(b"!")).await.unwrap();
    let (offset, _) = partials.persist(appender, offset).await.unwrap();
    assert_eq!(offset, 10_007);
    expected.push(b'!');
    assert_eq!(partial_on_disk(&local, ID), expected);
}

#[tokio::test]
async fn discard_leaves_the_upload_at_its_old_offset_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (local, store) = local_store(dir.path());
    let partials = store.partials();
    let (offset, handle) = new_partial(&partials, ID, b"kept").await;

    let mut appender = partials.append_at(ID, &handle, offset, Hashing::NONE).await.unwrap();
    // More than the buffer, so some of it reached the file before the discard.
    appender.write(Bytes::from(pattern(20_000))).await.unwrap();
    appender.write(Bytes::from_static(b"rejected")).await.unwrap();
    partials.discard(appender, offset).await.unwrap();
    assert_eq!(partial_on_disk(&local, ID), b"kept");

    let mut appender = partials.append_at(ID, &handle, offset, Hashing::NONE).await.unwrap();
    appender.write(Bytes::from_static(b" and more")).await.unwrap();
    partials.persist(appender, offset).await.unwrap();
    assert_eq!(partial_on_disk(&local, ID), b"kept and more");
}

#[tokio::test]
async fn bytes_past_the_recorded_offset_are_cut_off_by_the_next_append() {
    let dir = tempfile::tempdir().unwrap();
    let (local, store) = local_store(dir.path());
    let partials = store.partials();
    let (offset, handle) = new_partial(&partials, ID, b"durable").await;

    // A crash after the bytes reached the disk but before the record moved.
    let mut appender = partials.append_at(ID, &handle, offset, Hashing::NONE).await.unwrap();
    appender
        .write(Bytes::from_static(b" never acknowledged"))
        .await
        .unwrap();
    #[allow(irrefutable_let_patterns)]
    let Staged::Local(file) = &mut appender else {
        panic!("a local staging")
    };
    file.sync().await.unwrap();
    drop(appender);
    assert_eq!(partial_on_disk(&local, ID), b"durable never acknowledged");

    let mut appender = partials.append_at(ID, &handle, offset, Hashing::NONE).await.unwrap();
    assert_eq!(partial_on_disk(&local, ID), b"durable", "cut off on open");
    appender.write(Bytes::from_static(b"+next")).await.unwrap();
    let (offset, _) = partials.persist(appender, offset).await.unwrap();
    assert_eq!(offset, 12);
    assert_eq!(partial_on_disk(&local, ID), b"durable+next");
}

#[tokio::test]
async fn append_at_an_offset_beyond_the_bytes_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (local, store) = local_store(dir.path());
    let partials = store.partials();
    let (_, handle) = new_partial(&partials, ID, b"four").await;
    assert!(partials.append_at(ID, &handle, 5, Hashing::NONE).await.is_err());
    assert_eq!(partial_on_disk(&local, ID), b"four", "nothing changed");
}

#[tokio::test]
async fn keep_moves_a_staged_upload_into_the_partials_without_a_temporary_left() {
    for named in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let local = store_in(dir.path(), named);
        let store = Store::Local(local.clone());
        let mut staged = store.stage_local();
        let bytes = pattern(50_000);
        staged.write(Bytes::copy_from_slice(&bytes[..30_000])).await.unwrap();
        staged.write(Bytes::copy_from_slice(&bytes[30_000..])).await.unwrap();
        let (offset, handle) = store.partials().keep(staged, ID).await.unwrap();
        assert_eq!(offset, 50_000);
        assert_eq!(handle, crate::store::PartialHandle::Local);
        assert_eq!(partial_on_disk(&local, ID), bytes, "named {named}");
        assert_eq!(local.temporaries(), 0, "named {named}: no temporary left");
    }
}

#[tokio::test]
async fn read_and_sha256_cover_exactly_the_first_len_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = local_store(dir.path());
    let partials = store.partials();
    let bytes = pattern(READ_CHUNK_BYTES * 5 / 2);
    let (len, handle) = new_partial(&partials, ID, &bytes).await;
    for want in [0, 1, 1000, READ_CHUNK_BYTES, READ_CHUNK_BYTES + 1, len as usize] {
        let (got, largest) = collect(partials.read(ID, &handle, want as u64)).await;
        assert!(got == bytes[..want], "first {want} bytes: got {}", got.len());
        assert!(largest <= READ_CHUNK_BYTES);
        let digest = partials
            .digests(ID, &handle, want as u64, Hashing::sha256())
            .await
            .unwrap()
            .sha256
            .unwrap();
        assert_eq!(digest, sha2::Sha256::digest(&bytes[..want]).to_vec(), "{want}");
    }
}

#[tokio::test]
async fn complete_puts_the_bytes_at_the_key_but_never_over_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let (local, store) = local_store(dir.path());
    let partials = store.partials();
    let bytes = pattern(70_000);
    for id in [ID, OTHER_ID] {
        new_partial(&partials, id, &bytes).await;
    }
    let handle = crate::store::PartialHandle::Local;
    partials
        .complete(ID, &handle, 70_000, &key("done/file"), &meta(70_000))
        .await
        .unwrap();
    assert_eq!(fs::read(dir.path().join("upload/done/file")).unwrap(), bytes);
    assert!(!local.partial_path(ID).exists(), "the bytes moved");
    assert_eq!(store.head(&key("done/file")).await.unwrap().size, 70_000);

    let other = pattern(70_001);
    let mut appender = partials
        .append_at(OTHER_ID, &handle, 70_000, Hashing::NONE)
        .await
        .unwrap();
    appender.write(Bytes::copy_from_slice(&other[70_000..])).await.unwrap();
    partials.persist(appender, 70_000).await.unwrap();
    assert!(matches!(
        partials
            .complete(OTHER_ID, &handle, 70_001, &key("done/file"), &meta(70_001))
            .await,
        Err(StoreError::Exists)
    ));
    assert_eq!(
        fs::read(dir.path().join("upload/done/file")).unwrap(),
        bytes,
        "untouched"
    );
    assert_eq!(
        partial_on_disk(&local, OTHER_ID).len(),
        70_001,
        "the loser's bytes stay"
    );
}

#[tokio::test]
async fn complete_commits_only_the_first_len_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = local_store(dir.path());
    let partials = store.partials();
    let handle = partials.create(ID).await.unwrap();
    let mut appender = partials.append_at(ID, &handle, 0, Hashing::NONE).await.unwrap();
    appender.write(Bytes::from_static(b"whole and a tail")).await.unwrap();
    #[allow(irrefutable_let_patterns)]
    let Staged::Local(file) = &mut appender else {
        panic!("a local staging")
    };
    file.sync().await.unwrap();
    drop(appender);
    partials.complete(ID, &handle, 5, &key("cut"), &meta(5)).await.unwrap();
    assert_eq!(fs::read(dir.path().join("upload/cut")).unwrap(), b"whole");
}

#[tokio::test]
async fn remove_deletes_the_bytes_and_a_second_remove_is_fine() {
    let dir = tempfile::tempdir().unwrap();
    let (local, store) = local_store(dir.path());
    let partials = store.partials();
    let handle = partials.create(ID).await.unwrap();
    assert!(local.partial_path(ID).exists());
    partials.remove(ID, &handle).await.unwrap();
    assert!(!local.partial_path(ID).exists());
    partials.remove(ID, &handle).await.unwrap();
}

#[tokio::test]
async fn sweep_removes_only_partials_older_than_the_age() {
    let dir = tempfile::tempdir().unwrap();
    let (local, store) = local_store(dir.path());
    let partials: Partials = store.partials();
    partials.create(ID).await.unwrap();
    partials.create(OTHER_ID).await.unwrap();
    local.set_partial_modified(ID, SystemTime::now() - Duration::from_secs(7200));
    local.set_partial_modified(OTHER_ID, SystemTime::now() - Duration::from_secs(1800));
    assert_eq!(
        partials.sweep(Duration::from_secs(3600)).await.unwrap(),
        vec![ID.to_string()]
    );
    assert!(!local.partial_path(ID).exists());
    assert!(local.partial_path(OTHER_ID).exists());
    assert!(partials.sweep(Duration::from_secs(3600)).await.unwrap().is_empty());
}

/// A file committed with the default metadata carries the defaults mark, and its downloads
/// ignore a sidecar at its key on both paths; a file without the mark (stored by an earlier
/// version, or copied without extended attributes) is described by its sidecar as before.
#[tokio::test]
async fn the_defaults_mark_stands_for_the_missing_sidecar() {
    for dir in [tempfile::tempdir().unwrap(), memory_dir()] {
        if !mark::tests::supported_in(dir.path()) {
            eprintln!("{}: no user extended attributes here", dir.path().display());
            continue;
        }
        let store = LocalStore::open(dir.path(), "upload", 4096, RetryPolicy::NONE).unwrap();
        let defaults = default_meta(3);
        for (name, meta) in [("m/plain", &defaults), ("m/typed", &meta(3))] {
            let mut staged = store.stage_local();
            staged.write(Bytes::from_static(b"abc")).await.unwrap();
            store.commit(staged, &key(name), meta).await.unwrap();
        }
        let marked = |name: &str| mark::has_defaults(File::open(dir.path().join("upload").join(name)).unwrap());
        assert!(marked("m/plain"));
        assert!(!marked("m/typed"), "a file with a sidecar has no mark");

        // A sidecar of the same size at the marked file's key (as a delete cut short before
        // its sidecar leaves one): the mark wins.
        let (shard, sidecar) = sidecar_name(&key("m/plain"));
        let meta_dir = dir.path().join(".hmac-file-server/meta").join(shard);
        fs::create_dir_all(&meta_dir).unwrap();
        fs::write(
            meta_dir.join(sidecar),
            br#"{"content_type":"text/html","size":3,"uploaded_unix":1}"#,
        )
        .unwrap();
        let both_paths = |store: &LocalStore| {
            let k = key("m/plain");
            let fast = (0..3)
                .find_map(|_| cached::open_file(&store.inner, &k, true))
                .expect("served from the caches")
                .unwrap()
                .0
                .meta;
            (fast, k)
        };
        let (fast, k) = both_paths(&store);
        assert_eq!(fast, None, "fast path");
        assert_eq!(
            store.open_blocking(&k, true).await.unwrap().0.meta,
            None,
            "blocking path"
        );

        rustix::fs::removexattr(dir.path().join("upload/m/plain"), c"user.hmac-file-server.meta").unwrap();
        let (fast, k) = both_paths(&store);
        assert_eq!(fast.unwrap().content_type, "text/html", "fast path, no mark");
        let slow = store.open_blocking(&k, true).await.unwrap().0.meta;
        assert_eq!(slow.unwrap().content_type, "text/html", "blocking path, no mark");
    }
}

/// A resumable upload's bytes that an earlier commit marked (a commit with the defaults that
/// failed after the mark and moved them back) lose the mark when committed with a sidecar:
/// the download reads the sidecar.
#[tokio::test]
async fn a_partial_committed_with_a_sidecar_carries_no_defaults_mark() {
    let dir = tempfile::tempdir().unwrap();
    if !mark::tests::supported_in(dir.path()) {
        eprintln!("{}: no user extended attributes here", dir.path().display());
        return;
    }
    let (local, store) = local_store(dir.path());
    let partials = store.partials();
    let (_, handle) = new_partial(&partials, ID, b"abc").await;
    mark::set_defaults(File::open(local.partial_path(ID)).unwrap());
    assert!(mark::has_defaults(File::open(local.partial_path(ID)).unwrap()));

    partials
        .complete(ID, &handle, 3, &key("r/typed"), &meta(3))
        .await
        .unwrap();
    let stored = File::open(dir.path().join("upload/r/typed")).unwrap();
    assert!(!mark::has_defaults(&stored), "the mark is off");
    let (info, _, _) = local.open_file(&key("r/typed"), true).await.unwrap();
    assert_eq!(info.meta.unwrap().content_type, "text/plain");
}
