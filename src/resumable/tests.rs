//! Tests of the upload engine over the embedded state and the local store in a temporary
//! folder: what each operation leaves in the state and the store, and how an append ends for
//! each way a request body can end. Bodies are built in the test, so it decides when bytes
//! arrive, when the body fails and when it stalls. Everything is checked through the seams
//! (the engine, [`UploadState`], [`Store`], [`Partials`]): this layer reaches no file itself.

use std::io;
use std::pin::Pin;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use sha2::Digest;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::clock::now_unix;
use crate::state::embedded::EmbeddedState;
use crate::state::random_id;
use crate::store::{LocalStore, RetryPolicy};

const HOUR: Duration = Duration::from_secs(3600);
/// An hour's expiry and no MaxUnfinishedSize.
const KEEP: Keep = Keep {
    expiry: HOUR,
    max_unfinished_bytes: 0,
};
/// The store's write buffer: a frame larger than this is written while the body is read.
const BUFFER_BYTES: usize = 4096;

struct Fixture {
    _dir: tempfile::TempDir,
    local: LocalStore,
    store: Store,
    partials: Partials,
    state: UploadState,
    engine: Engine,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let local = LocalStore::open(dir.path(), "upload", BUFFER_BYTES, RetryPolicy::NONE).unwrap();
    let store = Store::Local(local.clone());
    let state = UploadState::Embedded(EmbeddedState::open(&dir.path().join("state")).unwrap());
    let engine = Engine::new(state.clone(), store.clone(), CancellationToken::new());
    Fixture {
        partials: store.partials(),
        _dir: dir,
        local,
        store,
        state,
        engine,
    }
}

fn key(text: &str) -> FileKey {
    FileKey::parse_decoded(text).unwrap()
}

fn upload(key_text: &str, length: Option<u64>) -> NewUpload {
    NewUpload {
        id: random_id(),
        kind: UploadKind::Tus,
        key: key(key_text),
        length,
        content_type: "text/plain".into(),
        metadata: None,
        concat: Concat::None,
    }
}

fn bounds(max_bytes: u64) -> Append<'static> {
    Append {
        max_bytes,
        checksum: None,
        read_timeout: Duration::from_secs(30),
        expiry: HOUR,
        max_unfinished_bytes: 0,
    }
}

type FrameResult = Result<Frame<Bytes>, io::Error>;
type TestBody = StreamBody<Pin<Box<dyn Stream<Item = FrameResult> + Send>>>;

fn data(bytes: &[u8]) -> FrameResult {
    Ok(Frame::data(Bytes::copy_from_slice(bytes)))
}

/// A body of these frames (data or failures), then its end.
fn frames(items: Vec<FrameResult>) -> TestBody {
    StreamBody::new(Box::pin(stream::iter(items)))
}

/// A body that sends `chunks`, then calls `stalled` and sends nothing more, without ending.
fn stalling(chunks: Vec<Vec<u8>>, stalled: impl FnOnce() + Send + 'static) -> TestBody {
    let sent = stream::iter(chunks.into_iter().map(|c| Ok(Frame::data(Bytes::from(c)))));
    let stall = stream::once(async move {
        stalled();
        std::future::pending::<FrameResult>().await
    });
    StreamBody::new(Box::pin(sent.chain(stall)))
}

/// `len` bytes that differ from one position to the next.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

impl Fixture {
    /// The first `len` bytes of an upload, as the store has them.
    async fn partial(&self, record: &UploadRecord, len: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        let mut bytes = self.partials.read(&record.id, &record.handle, len);
        while let Some(piece) = bytes.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }

    /// Whether the store still has bytes for the upload.
    async fn has_bytes(&self, record: &UploadRecord) -> bool {
        self.partials
            .digests(&record.id, &record.handle, 0, Hashing::NONE)
            .await
            .is_ok()
    }

    /// The bytes of the finished file at `key`.
    async fn file(&self, key_text: &str) -> Vec<u8> {
        let opened = self.store.open(&key(key_text), false).await.unwrap();
        let size = opened.info.size;
        let mut out = Vec::new();
        let mut bytes = opened.stream(0, size);
        while let Some(piece) = bytes.next().await {
            out.extend_from_slice(&piece.unwrap());
        }
        out
    }

    /// Checks that the upload's durable bytes are exactly `expected`, that its record in the
    /// state says so, and that nothing lies past them.
    async fn assert_durable(&self, record: &UploadRecord, expected: &[u8]) {
        assert_eq!(record.offset, expected.len() as u64);
        let saved = self.state.get(&record.id).await.unwrap().unwrap();
        assert_eq!(saved.offset, record.offset, "the state agrees");
        assert!(self.partial(record, record.offset).await.unwrap() == expected);
        assert!(
            self.partial(record, record.offset + 1).await.is_err(),
            "no bytes past the offset"
        );
    }

    /// Appends `body` to `record` under its lock.
    async fn append<B>(&self, record: &mut UploadRecord, body: B, bounds: Append<'_>) -> Ended
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let mut body = body;
        let held = self.engine.lock(&record.id).await.unwrap();
        let ended = self.engine.append(record, &held, &mut body, bounds).await.unwrap();
        self.engine.unlock(held).await;
        ended
    }

    /// A new upload to `key_text` with `bytes` already received.
    async fn upload_with(&self, new: NewUpload, bytes: &[u8]) -> UploadRecord {
        let mut record = self.engine.create(new, KEEP).await.unwrap();
        if !bytes.is_empty() {
            let ended = self
                .append(&mut record, Full::new(Bytes::copy_from_slice(bytes)), bounds(u64::MAX))
                .await;
            assert_eq!(ended, Ended::Complete);
        }
        record
    }
}

#[tokio::test]
async fn create_append_twice_finish_stores_exactly_the_bytes_and_forgets_the_upload() {
    let f = fixture();
    let mut record = f.engine.create(upload("a/b.txt", Some(11_000)), KEEP).await.unwrap();
    assert_eq!(record.offset, 0);
    assert_eq!(f.state.get(&record.id).await.unwrap(), Some(record.clone()));
    assert!(
        f.has_bytes(&record).await,
        "the bytes exist before the record points at them"
    );

    let bytes = pattern(11_000);
    let first = frames(vec![data(&bytes[..5000]), data(&bytes[5000..6000])]);
    assert_eq!(f.append(&mut record, first, bounds(11_000)).await, Ended::Complete);
    f.assert_durable(&record, &bytes[..6000]).await;

    let second = Full::new(Bytes::copy_from_slice(&bytes[6000..]));
    assert_eq!(f.append(&mut record, second, bounds(5000)).await, Ended::Complete);
    f.assert_durable(&record, &bytes).await;

    f.engine.finish(&record, true).await.unwrap();
    assert!(f.file("a/b.txt").await == bytes);
    let info = f.store.head(&key("a/b.txt")).await.unwrap();
    let meta = info.meta.unwrap();
    assert_eq!(meta.content_type, "text/plain");
    assert_eq!(meta.sha256, Some(hex::encode(sha2::Sha256::digest(&bytes))));
    assert_eq!(f.state.get(&record.id).await.unwrap(), None, "record gone");
    assert!(!f.has_bytes(&record).await, "partial gone");
}

#[tokio::test]
async fn a_chunk_with_a_wrong_checksum_is_discarded_and_a_right_one_kept() {
    let f = fixture();
    let mut record = f.upload_with(upload("sums", None), b"abc").await;
    let wrong = ChunkChecksum {
        algorithm: ChecksumAlgorithm::Sha256,
        expected: sha2::Sha256::digest(b"xyz").to_vec(),
    };
    let mut with_wrong = bounds(u64::MAX);
    with_wrong.checksum = Some(&wrong);
    let chunk = pattern(10_000);
    let body = frames(vec![data(&chunk[..6000]), data(&chunk[6000..])]);
    assert_eq!(f.append(&mut record, body, with_wrong).await, Ended::ChecksumMismatch);
    f.assert_durable(&record, b"abc").await;

    let mut expected = b"abc".to_vec();
    let digests = [
        (ChecksumAlgorithm::Sha256, sha2::Sha256::digest(&chunk).to_vec()),
        (ChecksumAlgorithm::Sha1, sha1::Sha1::digest(&chunk).to_vec()),
        (ChecksumAlgorithm::Md5, md5::Md5::digest(&chunk).to_vec()),
    ];
    for (algorithm, digest) in digests {
        let right = ChunkChecksum {
            algorithm,
            expected: digest,
        };
        let mut with_right = bounds(u64::MAX);
        with_right.checksum = Some(&right);
        let body = Full::new(Bytes::copy_from_slice(&chunk));
        assert_eq!(
            f.append(&mut record, body, with_right).await,
            Ended::Complete,
            "{algorithm:?}"
        );
        expected.extend_from_slice(&chunk);
        f.assert_durable(&record, &expected).await;
    }
}

#[tokio::test]
async fn a_body_longer_than_max_bytes_is_discarded() {
    let f = fixture();
    let mut record = f.upload_with(upload("long", Some(20_000)), b"abc").await;
    let before = f.state.get(&record.id).await.unwrap().unwrap();
    // The first frame is written to the file before the second goes past the limit.
    let chunk = pattern(BUFFER_BYTES * 2 + 1);
    let body = frames(vec![data(&chunk[..BUFFER_BYTES * 2]), data(&chunk[BUFFER_BYTES * 2..])]);
    assert_eq!(
        f.append(&mut record, body, bounds(BUFFER_BYTES as u64 * 2)).await,
        Ended::TooLong
    );
    f.assert_durable(&record, b"abc").await;
    assert_eq!(f.state.get(&record.id).await.unwrap(), Some(before), "record untouched");

    let body = Full::new(Bytes::from_static(b"def"));
    assert_eq!(f.append(&mut record, body, bounds(3)).await, Ended::Complete);
    f.assert_durable(&record, b"abcdef").await;
}

#[tokio::test]
async fn a_body_that_fails_midway_keeps_and_counts_what_arrived() {
    let f = fixture();
    let mut record = f.upload_with(upload("broken", Some(100)), b"abc").await;
    let body = frames(vec![
        data(b"def"),
        data(b"ghi"),
        Err(io::Error::other("connection reset")),
    ]);
    assert_eq!(f.append(&mut record, body, bounds(97)).await, Ended::BrokenOff);
    f.assert_durable(&record, b"abcdefghi").await;
}

/// Found by this test: the read-ahead of `StagedFile::take_frame` took the error out of the
/// body and dropped it, so the append ended `Complete` (and a tus chunk with a checksum lost
/// its bytes as a mismatch).
#[tokio::test]
async fn a_body_that_fails_right_after_a_large_frame_ends_broken_off() {
    let f = fixture();
    let mut record = f.upload_with(upload("broken-big", Some(100_000)), b"").await;
    let chunk = pattern(BUFFER_BYTES + 1);
    let body = frames(vec![data(&chunk), Err(io::Error::other("connection reset"))]);
    assert_eq!(f.append(&mut record, body, bounds(100_000)).await, Ended::BrokenOff);
    f.assert_durable(&record, &chunk).await;
}

#[tokio::test]
async fn a_stalled_body_times_out_after_read_timeout_keeping_what_arrived() {
    let f = fixture();
    let mut record = f.upload_with(upload("stalled", Some(100)), b"abc").await;
    let read_timeout = Duration::from_millis(200);
    let mut short = bounds(97);
    short.read_timeout = read_timeout;
    let started = Instant::now();
    let body = stalling(vec![b"def".to_vec()], || {});
    let ended = tokio::time::timeout(Duration::from_secs(10), f.append(&mut record, body, short))
        .await
        .expect("the append ends by itself");
    assert_eq!(ended, Ended::TimedOut);
    assert!(started.elapsed() >= read_timeout, "{:?}", started.elapsed());
    f.assert_durable(&record, b"abcdef").await;
}

#[tokio::test]
async fn a_newcomer_stops_the_holder_of_a_stalled_append_then_gets_the_lock() {
    let f = fixture();
    let mut record = f.upload_with(upload("contended", Some(100)), b"abc").await;
    let id = record.id.clone();
    let held = f.engine.lock(&id).await.unwrap();
    let (stalled_tx, stalled_rx) = tokio::sync::oneshot::channel();
    let mut body = stalling(vec![b"def".to_vec(), b"gh".to_vec()], move || {
        let _ = stalled_tx.send(());
    });
    let engine = f.engine.clone();
    let writer = tokio::spawn(async move {
        // A read timeout far beyond the test: only the stop request can end this append.
        let ended = engine.append(&mut record, &held, &mut body, bounds(97)).await;
        engine.unlock(held).await;
        (ended.unwrap(), record)
    });
    stalled_rx.await.unwrap();

    let started = Instant::now();
    let newcomer = f.engine.lock(&id).await.expect("the holder lets go");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "well before the lock wait ends"
    );
    let (ended, record) = writer.await.unwrap();
    assert_eq!(ended, Ended::Stopped);
    // Saved before the lock was let go: the newcomer sees the bytes that arrived.
    f.assert_durable(&record, b"abcdefgh").await;
    assert_eq!(newcomer.id(), id);
    f.engine.unlock(newcomer).await;
}

#[tokio::test]
async fn a_shutdown_ends_an_append_keeping_what_arrived() {
    let f = fixture();
    let mut record = f.upload_with(upload("shutdown", Some(100)), b"").await;
    let shutdown = f.engine.shutdown().clone();
    let body = stalling(vec![b"saved".to_vec()], move || shutdown.cancel());
    assert_eq!(f.append(&mut record, body, bounds(100)).await, Ended::ShuttingDown);
    f.assert_durable(&record, b"saved").await;
}

#[tokio::test]
async fn with_lock_holds_the_lock_while_working_and_releases_it_after_an_error() {
    let f = fixture();
    let id = random_id();
    let result: Result<(), EngineError> = f
        .engine
        .with_lock(&id, async |held| {
            assert_eq!(held.id(), id);
            assert_eq!(f.state.try_lock(&id).await.unwrap(), None, "held while working");
            Err(EngineError::BadParts("the work failed"))
        })
        .await;
    assert!(matches!(result, Err(EngineError::BadParts("the work failed"))));
    assert!(f.state.try_lock(&id).await.unwrap().is_some(), "released");
}

#[tokio::test]
async fn loading_an_expired_upload_answers_expired_and_forgets_it() {
    let f = fixture();
    let mut record = f.upload_with(upload("old", Some(10)), b"abc").await;
    assert_eq!(
        f.engine.load(&record.id, UploadKind::Tus).await.unwrap(),
        Some(record.clone())
    );
    record.expires_unix = now_unix() - 1;
    f.state.put(&record, HOUR).await.unwrap();
    assert!(matches!(
        f.engine.load(&record.id, UploadKind::Tus).await,
        Err(EngineError::Expired)
    ));
    assert_eq!(f.state.get(&record.id).await.unwrap(), None, "record gone");
    assert!(!f.has_bytes(&record).await, "bytes gone");
    assert!(matches!(f.engine.load(&record.id, UploadKind::Tus).await, Ok(None)));
}

#[tokio::test]
async fn load_answers_none_for_invalid_unknown_and_other_protocol_ids() {
    let f = fixture();
    let record = f.upload_with(upload("kinds", Some(10)), b"abc").await;
    assert!(matches!(f.engine.load("../x", UploadKind::Tus).await, Ok(None)));
    assert!(matches!(f.engine.load(&random_id(), UploadKind::Tus).await, Ok(None)));
    assert!(matches!(f.engine.load(&record.id, UploadKind::Session).await, Ok(None)));
    assert!(f.has_bytes(&record).await, "another protocol's upload is left alone");
}

#[tokio::test]
async fn finishing_onto_a_taken_key_answers_exists_and_forgets_the_upload() {
    let f = fixture();
    let mut staged = f.store.stage_local();
    staged.write(Bytes::from_static(b"was here first")).await.unwrap();
    let meta = FileMeta {
        content_type: "text/plain".into(),
        size: 14,
        uploaded_unix: 1,
        sha256: None,
    };
    f.store.commit(staged, &key("taken"), &meta).await.unwrap();
    let record = f.upload_with(upload("taken", Some(3)), b"new").await;
    assert!(matches!(
        f.engine.finish(&record, false).await,
        Err(EngineError::Store(StoreError::Exists))
    ));
    assert_eq!(f.file("taken").await, b"was here first");
    assert_eq!(f.state.get(&record.id).await.unwrap(), None);
    assert!(!f.has_bytes(&record).await);
}

#[tokio::test]
async fn finish_if_complete_stores_an_upload_whose_commit_was_interrupted_and_nothing_else() {
    let f = fixture();
    let incomplete = f.upload_with(upload("half", Some(6)), b"abc").await;
    f.engine.finish_if_complete(&incomplete, false).await.unwrap();
    assert!(!f.store.exists(&key("half")).await);
    assert!(f.state.get(&incomplete.id).await.unwrap().is_some());

    let complete = f.upload_with(upload("whole", Some(3)), b"abc").await;
    f.engine.finish_if_complete(&complete, false).await.unwrap();
    assert_eq!(f.file("whole").await, b"abc");
    assert_eq!(f.state.get(&complete.id).await.unwrap(), None);
}

fn part(key_text: &str, length: u64) -> NewUpload {
    NewUpload {
        concat: Concat::Partial,
        ..upload(key_text, Some(length))
    }
}

#[tokio::test]
async fn parts_refuses_unknown_foreign_and_incomplete_parts() {
    let f = fixture();
    let slot = key("final");
    let first = f.upload_with(part("final", 3), b"abc").await;
    let second = f.upload_with(part("final", 4), b"defg").await;
    let incomplete = f.upload_with(part("final", 5), b"hi").await;
    let other_slot = f.upload_with(part("elsewhere", 1), b"x").await;
    let not_a_part = f.upload_with(upload("final", Some(1)), b"y").await;
    let ids = |records: &[&UploadRecord]| records.iter().map(|r| r.id.clone()).collect::<Vec<_>>();

    let refused = |r: Result<Vec<UploadRecord>, EngineError>| match r {
        Err(EngineError::BadParts(why)) => why,
        other => panic!("not refused: {other:?}"),
    };
    assert_eq!(
        refused(f.engine.parts(&[first.id.clone(), random_id()], &slot).await),
        "unknown partial upload"
    );
    assert_eq!(
        refused(f.engine.parts(&ids(&[&first, &other_slot]), &slot).await),
        "not a partial upload of this slot"
    );
    assert_eq!(
        refused(f.engine.parts(&ids(&[&not_a_part]), &slot).await),
        "not a partial upload of this slot"
    );
    assert_eq!(
        refused(f.engine.parts(&ids(&[&first, &incomplete]), &slot).await),
        "a partial upload is not complete"
    );
    let found = f.engine.parts(&ids(&[&second, &first]), &slot).await.unwrap();
    assert_eq!(found, vec![second, first], "in the order asked");
}

#[tokio::test]
async fn concatenate_joins_the_parts_in_order_and_forgets_them() {
    let f = fixture();
    let big = pattern(BUFFER_BYTES * 3);
    let first = f.upload_with(part("joined", 3), b"abc").await;
    let second = f.upload_with(part("joined", big.len() as u64), &big).await;
    let parts = f
        .engine
        .parts(&[second.id.clone(), first.id.clone()], &key("joined"))
        .await
        .unwrap();
    let final_upload = NewUpload {
        content_type: "text/plain".into(),
        ..upload("joined", None)
    };
    let final_id = final_upload.id.clone();
    let record = f
        .engine
        .concatenate(&parts, final_upload, true, KEEP.expiry)
        .await
        .unwrap();
    let mut expected = big.clone();
    expected.extend_from_slice(b"abc");
    let total = expected.len() as u64;
    assert_eq!((record.length, record.offset), (Some(total), total));
    assert_eq!(record.concat, Concat::Final(vec![second.id.clone(), first.id.clone()]));
    assert_eq!(
        f.state.get(&final_id).await.unwrap(),
        Some(record.clone()),
        "the final upload is kept, complete, for HEAD"
    );
    assert!(!f.has_bytes(&record).await, "with no bytes of its own");
    assert!(f.file("joined").await == expected);
    let meta = f.store.head(&key("joined")).await.unwrap().meta.unwrap();
    assert_eq!(meta.sha256, Some(hex::encode(sha2::Sha256::digest(&expected))));
    for part in [&first, &second] {
        assert_eq!(f.state.get(&part.id).await.unwrap(), None);
        assert!(!f.has_bytes(part).await);
    }
}

#[tokio::test]
async fn kept_broken_off_bytes_load_as_a_session_upload_at_their_offset() {
    let f = fixture();
    let bytes = pattern(10_000);
    let mut staged = f.store.stage_local();
    staged.write(Bytes::copy_from_slice(&bytes[..6000])).await.unwrap();
    let new = NewUpload {
        kind: UploadKind::Session,
        ..upload("resumed", Some(10_000))
    };
    let id = new.id.clone();
    assert_eq!(f.engine.keep_broken_off(staged, new, KEEP).await.unwrap(), 6000);

    let mut record = f.engine.load(&id, UploadKind::Session).await.unwrap().unwrap();
    assert_eq!(record.kind, UploadKind::Session);
    assert_eq!(record.key, "resumed");
    assert_eq!(record.length, Some(10_000));
    f.assert_durable(&record, &bytes[..6000]).await;
    assert!(matches!(f.engine.load(&id, UploadKind::Tus).await, Ok(None)));

    let rest = Full::new(Bytes::copy_from_slice(&bytes[6000..]));
    assert_eq!(f.append(&mut record, rest, bounds(4000)).await, Ended::Complete);
    f.engine.finish(&record, false).await.unwrap();
    assert!(f.file("resumed").await == bytes);
}

#[tokio::test]
async fn sweep_removes_expired_uploads_and_old_bytes_without_a_record() {
    let f = fixture();
    let mut expired = f.upload_with(upload("expired", Some(10)), b"abc").await;
    expired.expires_unix = now_unix() - 1;
    f.state.put(&expired, HOUR).await.unwrap();
    let old_orphan = f.upload_with(upload("old-orphan", Some(10)), b"abc").await;
    f.state.delete(&old_orphan.id).await.unwrap();
    f.local
        .set_partial_modified(&old_orphan.id, SystemTime::now() - 2 * HOUR);
    let fresh_orphan = f.upload_with(upload("fresh-orphan", Some(10)), b"abc").await;
    f.state.delete(&fresh_orphan.id).await.unwrap();
    let live = f.upload_with(upload("live", Some(10)), b"abc").await;

    assert_eq!(f.engine.sweep(HOUR).await.unwrap(), 2);
    assert_eq!(f.state.get(&expired.id).await.unwrap(), None);
    assert!(!f.has_bytes(&expired).await);
    assert!(!f.has_bytes(&old_orphan).await);
    assert!(f.has_bytes(&fresh_orphan).await, "younger than the expiry");
    assert_eq!(f.state.get(&live.id).await.unwrap(), Some(live.clone()));
    assert!(f.has_bytes(&live).await);
    assert_eq!(f.engine.sweep(HOUR).await.unwrap(), 0);
}
