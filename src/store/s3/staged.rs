//! [`S3Staged`]: an upload streaming into the bucket.
//!
//! A body of at most one part, on a store that honours `If-None-Match: *`, goes up in one
//! PutObject that carries it: the request starts at once and the body's chunks are fed to it
//! as they arrive. On a store that would replace an object (Garage), a body of at most
//! [`BUFFERED_BYTES`] is kept in memory and the commit writes it in one PutObject under the
//! key's shared lock, after looking whether the key is taken. Anything else is a multipart
//! upload: each part is an UploadPart request of
//! exactly its length, fed the same way, one after the other, and the commit completes the
//! upload under the key's shared lock after looking whether the key is taken. Dropped without
//! a commit, the PutObject is cancelled (the store gets a short body and stores nothing) or
//! the multipart upload aborted.

use std::sync::Arc;

use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::body::ChannelBody;
use super::{DIGEST_META, Inner, call};
use crate::store::digest::{Digests, Hashers};
use crate::store::{StageSpec, StoreError, TakeError};

/// The largest body kept in memory until the commit on a store that would replace an object
/// (as large as a file that a download reads whole).
const BUFFERED_BYTES: u64 = crate::store::SMALL_FILE_BYTES;

/// See the module documentation.
#[derive(Debug)]
pub struct S3Staged {
    inner: Arc<Inner>,
    key: String,
    size: u64,
    received: u64,
    hashers: Option<Box<Hashers>>,
    mode: Mode,
    committed: bool,
}

#[derive(Debug)]
enum Mode {
    /// One PutObject with `If-None-Match: *`, under way.
    Single {
        sender: Option<mpsc::Sender<Bytes>>,
        request: Option<JoinHandle<Result<(), StoreError>>>,
    },
    /// A small body, on a store that would replace an object: kept in memory and written by
    /// the commit in one PutObject under the key's lock (two requests, where a multipart
    /// upload takes four; and an empty file, as some stores refuse an empty part).
    Buffered {
        content_type: String,
        sidecar: bool,
        body: BytesMut,
    },
    /// A multipart upload.
    Multipart {
        upload_id: String,
        done: Vec<CompletedPart>,
        part: Option<Part>,
        /// Bytes handed to parts so far.
        sent: u64,
    },
}

/// A part under way.
#[derive(Debug)]
struct Part {
    number: i32,
    sender: mpsc::Sender<Bytes>,
    remaining: u64,
    request: JoinHandle<Result<String, StoreError>>,
}

/// Waits for a request task; a failed task is an I/O error.
async fn joined<T>(task: JoinHandle<Result<T, StoreError>>) -> Result<T, StoreError> {
    task.await.map_err(StoreError::other)?
}

impl S3Staged {
    /// Starts the upload described by `spec`: opens the PutObject or creates the multipart
    /// upload.
    pub(super) async fn start(inner: Arc<Inner>, spec: StageSpec<'_>) -> Result<Self, StoreError> {
        let key = inner.object_key(spec.key);
        let hashers = Hashers::new(spec.hashing);
        // A digest may be checked before the commit: then the object must not be visible
        // before it, which a PutObject would make it.
        let single = inner.native_create && spec.size <= inner.part_bytes && !spec.hashing.any();
        let mode = if !single && spec.size <= BUFFERED_BYTES {
            Mode::Buffered {
                content_type: spec.content_type.to_string(),
                sidecar: spec.hashing.sha256,
                body: BytesMut::with_capacity(spec.size as usize),
            }
        } else if single {
            let (sender, body) = ChannelBody::new(spec.size);
            let request = inner
                .client
                .put_object()
                .bucket(&inner.bucket)
                .key(&key)
                .content_length(spec.size as i64)
                .content_type(spec.content_type)
                .if_none_match("*")
                .body(SdkByteStream::from_body_1_x(body))
                .customize()
                .disable_payload_signing()
                .send();
            let request = tokio::spawn(async move { call("PutObject", request).await.map(|_| ()) });
            Mode::Single {
                sender: Some(sender),
                request: Some(request),
            }
        } else {
            let mut create = inner
                .client
                .create_multipart_upload()
                .bucket(&inner.bucket)
                .key(&key)
                .content_type(spec.content_type);
            if spec.hashing.sha256 {
                create = create.metadata(DIGEST_META, "sidecar");
            }
            let created = call("CreateMultipartUpload", create.send()).await?;
            let upload_id = created
                .upload_id()
                .ok_or_else(|| StoreError::other("CreateMultipartUpload gave no upload id"))?
                .to_string();
            Mode::Multipart {
                upload_id,
                done: Vec::new(),
                part: None,
                sent: 0,
            }
        };
        Ok(Self {
            inner,
            key,
            size: spec.size,
            received: 0,
            hashers,
            mode,
            committed: false,
        })
    }

    /// The object key it goes to.
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    /// Bytes taken so far.
    pub fn len(&self) -> u64 {
        self.received
    }

    /// Whether nothing was taken.
    pub fn is_empty(&self) -> bool {
        self.received == 0
    }

    /// The digests of everything taken, when staged with hashing.
    pub fn digests(&self) -> Option<Digests> {
        self.hashers.as_ref().map(|h| h.digests())
    }

    /// Takes a frame of a request body, refusing to go past `limit` bytes in all.
    pub async fn take_frame<B>(
        &mut self,
        frame: http_body::Frame<Bytes>,
        _body: &mut B,
        limit: u64,
    ) -> Result<(), TakeError>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
    {
        let Ok(data) = frame.into_data() else { return Ok(()) };
        if self.received + data.len() as u64 > limit {
            return Err(TakeError::TooLong);
        }
        self.write(data).await.map_err(TakeError::Store)
    }

    /// Takes a chunk: hashes it and hands it to the request under way.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if chunk.is_empty() {
            return Ok(());
        }
        if self.received + chunk.len() as u64 > self.size {
            return Err(StoreError::other("more bytes than the upload's size"));
        }
        self.received += chunk.len() as u64;
        if let Some(h) = &mut self.hashers {
            h.update(&chunk);
        }
        match &mut self.mode {
            Mode::Single { sender, request } => {
                let sent = match sender {
                    Some(s) => s.send(chunk).await.is_ok(),
                    None => false,
                };
                if !sent {
                    // The request ended before its body: its error says why.
                    sender.take();
                    return match request.take() {
                        Some(task) => Err(joined(task)
                            .await
                            .err()
                            .unwrap_or_else(|| StoreError::other("the PutObject ended before its body"))),
                        None => Err(StoreError::other("the PutObject is over")),
                    };
                }
                Ok(())
            }
            Mode::Buffered { body, .. } => {
                body.extend_from_slice(&chunk);
                Ok(())
            }
            Mode::Multipart { .. } => match self.feed_parts(chunk).await {
                Err(e) => Err(self.lost(e).await),
                fed => fed,
            },
        }
    }

    /// Explains a failed request of the multipart upload. A store that drops a key's
    /// unfinished uploads when another upload of the key completes (Garage does) answers a
    /// part or the completion with NoSuchUpload, or, when it refuses a part before reading its
    /// body, closes the connection under it (the client sees a broken pipe): either way, with
    /// the key taken meanwhile, this upload can never be stored, so [`StoreError::Exists`], as
    /// a lost race is everywhere else. Gone with the key free, the upload was aborted under it
    /// (by the cleanup pass, or by hand): an I/O error, not a 404. Any other failure with the
    /// key free stays what it was.
    async fn lost(&self, error: StoreError) -> StoreError {
        match (self.inner.head(&self.key).await, error) {
            (Ok(_), _) => StoreError::Exists,
            (Err(StoreError::NotFound), StoreError::NotFound) => {
                StoreError::other("the multipart upload is gone from the store")
            }
            (Err(e), StoreError::NotFound) => e,
            (_, error) => error,
        }
    }

    /// Hands a chunk to parts, starting and finishing parts at their boundaries.
    async fn feed_parts(&mut self, mut chunk: Bytes) -> Result<(), StoreError> {
        while !chunk.is_empty() {
            let Mode::Multipart {
                upload_id,
                done,
                part,
                sent,
            } = &mut self.mode
            else {
                return Err(StoreError::other("not a multipart upload"));
            };
            if part.is_none() {
                let len = self.inner.part_bytes.min(self.size - *sent);
                *part = Some(self.inner.start_part(&self.key, upload_id, done.len() as i32 + 1, len));
            }
            let current = part.as_mut().ok_or_else(|| StoreError::other("no part under way"))?;
            let take = chunk.len().min(current.remaining as usize);
            let piece = chunk.split_to(take);
            current.remaining -= take as u64;
            *sent += take as u64;
            if current.sender.send(piece).await.is_err() {
                let failed = part.take().ok_or_else(|| StoreError::other("no part under way"))?;
                return Err(joined(failed.request)
                    .await
                    .err()
                    .unwrap_or_else(|| StoreError::other("UploadPart ended before its body")));
            }
            if current.remaining == 0 {
                let finished = part.take().ok_or_else(|| StoreError::other("no part under way"))?;
                let number = finished.number;
                drop(finished.sender);
                let etag = joined(finished.request).await?;
                done.push(CompletedPart::builder().part_number(number).e_tag(etag).build());
            }
        }
        Ok(())
    }

    /// Makes the upload the object at its key, unless one is there.
    pub(super) async fn commit(mut self) -> Result<(), StoreError> {
        if self.received != self.size {
            return Err(StoreError::other("the upload is shorter than its size"));
        }
        match &mut self.mode {
            Mode::Single { sender, request } => {
                sender.take();
                let task = request
                    .take()
                    .ok_or_else(|| StoreError::other("the PutObject is over"))?;
                joined(task).await?;
                self.committed = true;
                Ok(())
            }
            Mode::Buffered {
                content_type,
                sidecar,
                body,
            } => {
                let _guard = self.inner.locks.lock(&self.key).await?;
                match self.inner.head(&self.key).await {
                    Ok(_) => return Err(StoreError::Exists),
                    Err(StoreError::NotFound) => {}
                    Err(e) => return Err(e),
                }
                let mut put = self
                    .inner
                    .client
                    .put_object()
                    .bucket(&self.inner.bucket)
                    .key(&self.key)
                    .content_length(body.len() as i64)
                    .content_type(content_type.as_str())
                    .if_none_match("*")
                    .body(SdkByteStream::from(std::mem::take(body).freeze()));
                if *sidecar {
                    put = put.metadata(DIGEST_META, "sidecar");
                }
                call("PutObject", put.send()).await?;
                self.committed = true;
                Ok(())
            }
            Mode::Multipart { upload_id, done, .. } => {
                let upload_id = upload_id.clone();
                let parts = std::mem::take(done);
                let _guard = self.inner.locks.lock(&self.key).await?;
                match self.inner.head(&self.key).await {
                    Ok(_) => return Err(StoreError::Exists),
                    Err(StoreError::NotFound) => {}
                    Err(e) => return Err(e),
                }
                let completed = call(
                    "CompleteMultipartUpload",
                    self.inner
                        .client
                        .complete_multipart_upload()
                        .bucket(&self.inner.bucket)
                        .key(&self.key)
                        .upload_id(&upload_id)
                        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                        .if_none_match("*")
                        .send(),
                )
                .await;
                match completed {
                    Ok(_) => {
                        self.committed = true;
                        Ok(())
                    }
                    Err(e) => Err(self.lost(e).await),
                }
            }
        }
    }
}

impl Drop for S3Staged {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        match &mut self.mode {
            Mode::Single { sender, request } => {
                // Cancelled mid-body: the store sees a short request and keeps nothing.
                sender.take();
                if let Some(task) = request.take() {
                    task.abort();
                }
            }
            Mode::Buffered { .. } => {}
            Mode::Multipart { upload_id, part, .. } => {
                if let Some(part) = part.take() {
                    part.request.abort();
                }
                let (inner, key, upload_id) = (Arc::clone(&self.inner), self.key.clone(), upload_id.clone());
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let aborted = call(
                            "AbortMultipartUpload",
                            inner
                                .client
                                .abort_multipart_upload()
                                .bucket(&inner.bucket)
                                .key(&key)
                                .upload_id(&upload_id)
                                .send(),
                        )
                        .await;
                        if let Err(e) = aborted {
                            tracing::warn!(key, error = %e, "cannot abort a multipart upload; the cleanup pass will");
                        }
                    });
                }
            }
        }
    }
}

impl Inner {
    /// Starts part `number` of `len` bytes: an UploadPart fed through a channel.
    fn start_part(&self, key: &str, upload_id: &str, number: i32, len: u64) -> Part {
        let (sender, body) = ChannelBody::new(len);
        let request = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .content_length(len as i64)
            .body(SdkByteStream::from_body_1_x(body))
            .customize()
            .disable_payload_signing()
            .send();
        let request = tokio::spawn(async move {
            let uploaded = call("UploadPart", request).await?;
            uploaded
                .e_tag()
                .map(str::to_string)
                .ok_or_else(|| StoreError::other("UploadPart gave no ETag"))
        });
        Part {
            number,
            sender,
            remaining: len,
            request,
        }
    }
}
