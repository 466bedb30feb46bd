//! The bytes of unfinished resumable uploads in the bucket, so that any instance can continue
//! an upload another one began: each is a multipart upload at
//! `S3Prefix + .hmac-file-server/partial/<id>`, and the upload record keeps what S3 cannot be
//! trusted to list ([`S3Handle`]: the upload id, every part's number, ETag and size, and the
//! tail).
//!
//! S3 takes parts of at least 5 MiB (but the last), and some stores want every part but the
//! last of one size (R2), while a tus client may send 1 MiB chunks. So, as tusd's s3store
//! does, parts are exactly S3PartSize: an append gathers bytes in a local file of at most one
//! part (the previous append's leftover, the *tail*, first), uploads each full part, and at its
//! end stores what is left, less than a part, as a tail object beside the upload. The durable
//! offset is the parts' sizes plus the tail's. During an append, each uploaded part is
//! durable at once (a checkpoint records it); the bytes of a part being gathered are durable
//! only at the end of the append. Completing: the tail goes up as the last part, the multipart
//! upload is completed into its own object, and that object is copied to the file's key
//! through the same no-overwrite commit as a whole-file upload (a server-side copy).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::primitives::Length;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, MetadataDirective};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::{DIGEST_META, Inner, S3Store, call, sdk_stream, system_time};
use crate::key::{FileKey, INTERNAL_DIR};
use crate::store::digest::{Digests, Hashers, Hashing};
use crate::store::meta::FileMeta;
use crate::store::{ByteStream, PartialHandle, StoreError, TakeError, Usage};

/// How long a computed usage of the partial uploads is reused.
const USAGE_FOR: Duration = Duration::from_secs(10);
/// Largest object a single CopyObject copies.
const MAX_COPY_BYTES: u64 = 5 << 30;

/// Where an unfinished upload's bytes are in the bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Handle {
    /// The multipart upload.
    pub upload_id: String,
    /// Its parts, in order.
    #[serde(default)]
    pub parts: Vec<S3Part>,
    /// Bytes after the last part, in a tail object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<S3Tail>,
    /// Tail objects replaced since, to remove at the next append.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stale_tails: Vec<String>,
}

/// One uploaded part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Part {
    /// Its number.
    pub number: i32,
    /// Its ETag.
    pub etag: String,
    /// Its size.
    pub size: u64,
}

/// The bytes after the last part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct S3Tail {
    /// Its object's name suffix.
    pub name: String,
    /// Its size.
    pub size: u64,
}

impl S3Handle {
    /// The durable byte count.
    pub fn durable(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum::<u64>() + self.tail.as_ref().map_or(0, |t| t.size)
    }
}

fn random_name() -> String {
    let mut random = [0u8; 12];
    rand::fill(&mut random);
    hex::encode(random)
}

impl Inner {
    fn partial_prefix(&self) -> String {
        format!("{}{INTERNAL_DIR}/partial/", self.prefix)
    }

    /// The key of upload `id`'s multipart upload (and, once completed, of its object).
    fn partial_key(&self, id: &str) -> String {
        format!("{}{id}", self.partial_prefix())
    }

    fn tail_key(&self, id: &str, name: &str) -> String {
        format!("{}.tail.{name}", self.partial_key(id))
    }

    /// Keeps the last count of [`S3Store::partials_usage`] up to date with a change made here.
    fn usage_changed(&self, uploads: i64, bytes: i64) {
        if let Some((_, usage)) = self.usage.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            usage.uploads = usage.uploads.saturating_add_signed(uploads);
            usage.bytes = usage.bytes.saturating_add_signed(bytes);
        }
    }

    /// Makes the next [`S3Store::partials_usage`] count from the bucket.
    fn forget_usage(&self) {
        *self.usage.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    async fn delete_quietly(&self, key: &str) {
        let _ = call(
            "DeleteObject",
            self.client.delete_object().bucket(&self.bucket).key(key).send(),
        )
        .await;
    }

    async fn get_bytes(&self, key: &str) -> Result<Bytes, StoreError> {
        let got = call(
            "GetObject",
            self.client.get_object().bucket(&self.bucket).key(key).send(),
        )
        .await?;
        Ok(got
            .body
            .collect()
            .await
            .map_err(|e| StoreError::Unavailable(format!("GetObject body: {e}")))?
            .into_bytes())
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: SdkByteStream,
        len: u64,
    ) -> Result<String, StoreError> {
        let uploaded = call(
            "UploadPart",
            self.client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(len as i64)
                .body(body)
                .customize()
                .disable_payload_signing()
                .send(),
        )
        .await?;
        uploaded
            .e_tag()
            .map(str::to_string)
            .ok_or_else(|| StoreError::other("UploadPart gave no ETag"))
    }

    /// Makes sure upload `id` is one object of `len` bytes at its partial key: its tail goes
    /// up as the last part and the multipart upload is completed (a second call finds the
    /// object and does nothing).
    async fn ensure_object(&self, id: &str, handle: &S3Handle, len: u64) -> Result<String, StoreError> {
        let key = self.partial_key(id);
        if let Ok(head) = self.head(&key).await
            && head.content_length().unwrap_or(-1) == len as i64
        {
            return Ok(key);
        }
        if handle.durable() != len {
            return Err(StoreError::other(format!(
                "partial upload has {} bytes, its record says {len}",
                handle.durable()
            )));
        }
        let mut parts: Vec<CompletedPart> = handle
            .parts
            .iter()
            .map(|p| CompletedPart::builder().part_number(p.number).e_tag(&p.etag).build())
            .collect();
        let last = handle.parts.len() as i32 + 1;
        match &handle.tail {
            Some(tail) => {
                let bytes = self.get_bytes(&self.tail_key(id, &tail.name)).await?;
                let etag = self
                    .upload_part(&key, &handle.upload_id, last, SdkByteStream::from(bytes), tail.size)
                    .await?;
                parts.push(CompletedPart::builder().part_number(last).e_tag(etag).build());
            }
            None if parts.is_empty() => {
                let etag = self
                    .upload_part(&key, &handle.upload_id, 1, SdkByteStream::from_static(b""), 0)
                    .await?;
                parts.push(CompletedPart::builder().part_number(1).e_tag(etag).build());
            }
            None => {}
        }
        call(
            "CompleteMultipartUpload",
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(&handle.upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send(),
        )
        .await?;
        Ok(key)
    }

    /// Copies the object at `from` (of `len` bytes) to `to`, with the file's content type
    /// (and digest marker): one CopyObject up to 5 GiB, a multipart copy above.
    async fn copy(&self, from: &str, to: &str, len: u64, meta: &FileMeta) -> Result<(), StoreError> {
        let source = format!(
            "{}/{}",
            self.bucket,
            percent_encoding::utf8_percent_encode(from, COPY_SOURCE)
        );
        if len <= MAX_COPY_BYTES {
            let mut copy = self
                .client
                .copy_object()
                .bucket(&self.bucket)
                .key(to)
                .copy_source(&source)
                .metadata_directive(MetadataDirective::Replace)
                .content_type(&meta.content_type);
            if meta.sha256.is_some() {
                copy = copy.metadata(DIGEST_META, "sidecar");
            }
            call("CopyObject", copy.send()).await?;
            return Ok(());
        }
        let mut create = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(to)
            .content_type(&meta.content_type);
        if meta.sha256.is_some() {
            create = create.metadata(DIGEST_META, "sidecar");
        }
        let created = call("CreateMultipartUpload", create.send()).await?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::other("CreateMultipartUpload gave no upload id"))?
            .to_string();
        let mut parts = Vec::new();
        let copied = async {
            let mut start = 0;
            while start < len {
                let end = (start + MAX_COPY_BYTES).min(len);
                let number = parts.len() as i32 + 1;
                let part = call(
                    "UploadPartCopy",
                    self.client
                        .upload_part_copy()
                        .bucket(&self.bucket)
                        .key(to)
                        .upload_id(&upload_id)
                        .part_number(number)
                        .copy_source(&source)
                        .copy_source_range(format!("bytes={start}-{}", end - 1))
                        .send(),
                )
                .await?;
                let etag = part
                    .copy_part_result()
                    .and_then(|r| r.e_tag())
                    .ok_or_else(|| StoreError::other("UploadPartCopy gave no ETag"))?;
                parts.push(CompletedPart::builder().part_number(number).e_tag(etag).build());
                start = end;
            }
            call(
                "CompleteMultipartUpload",
                self.client
                    .complete_multipart_upload()
                    .bucket(&self.bucket)
                    .key(to)
                    .upload_id(&upload_id)
                    .multipart_upload(
                        CompletedMultipartUpload::builder()
                            .set_parts(Some(parts.clone()))
                            .build(),
                    )
                    .send(),
            )
            .await
        }
        .await;
        if copied.is_err() {
            let _ = call(
                "AbortMultipartUpload",
                self.client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(to)
                    .upload_id(&upload_id)
                    .send(),
            )
            .await;
        }
        copied.map(|_| ())
    }
}

/// What `x-amz-copy-source` may carry unencoded: everything else of the key is
/// percent-encoded.
const COPY_SOURCE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// New bytes for an unfinished upload in the bucket; see the module documentation.
#[derive(Debug)]
pub struct S3Appender {
    inner: Arc<Inner>,
    id: String,
    handle: S3Handle,
    buffer: PartBuffer,
    /// New bytes taken.
    taken: u64,
    hashers: Option<Box<Hashers>>,
    /// Whether a part went up in this append (then the old tail is in it).
    uploaded: bool,
    /// The durable length when opened.
    opened_at: u64,
}

/// Bytes not yet in a part, in a local file of at most about one part.
#[derive(Debug)]
struct PartBuffer {
    path: PathBuf,
    writer: Option<tokio::io::BufWriter<tokio::fs::File>>,
    len: u64,
}

impl PartBuffer {
    async fn new(dir: &std::path::Path) -> Result<Self, StoreError> {
        let path = dir.join(format!("{}.s3part", random_name()));
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(crate::store::local::classify_write)?;
        Ok(Self {
            path,
            writer: Some(tokio::io::BufWriter::with_capacity(1 << 20, file)),
            len: 0,
        })
    }

    async fn push(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| StoreError::other("part buffer closed"))?;
        writer
            .write_all(chunk)
            .await
            .map_err(crate::store::local::classify_write)?;
        self.len += chunk.len() as u64;
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), StoreError> {
        if let Some(writer) = self.writer.as_mut() {
            writer.flush().await.map_err(crate::store::local::classify_write)?;
        }
        Ok(())
    }

    /// The first `len` bytes, streamed from the file.
    async fn body(&mut self, len: u64) -> Result<SdkByteStream, StoreError> {
        self.flush().await?;
        SdkByteStream::read_from()
            .path(&self.path)
            .offset(0)
            .length(Length::Exact(len))
            .build()
            .await
            .map_err(StoreError::other)
    }

    /// Drops the first `len` bytes (those of an uploaded part).
    async fn shift(&mut self, len: u64) -> Result<(), StoreError> {
        self.flush().await?;
        let path = self.path.clone();
        let rest = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            use std::io::{Read, Seek};
            let mut file = std::fs::File::open(&path)?;
            file.seek(std::io::SeekFrom::Start(len))?;
            let mut rest = Vec::new();
            file.read_to_end(&mut rest)?;
            Ok(rest)
        })
        .await
        .map_err(StoreError::other)??;
        let file = tokio::fs::File::create(&self.path).await?;
        self.writer = Some(tokio::io::BufWriter::with_capacity(1 << 20, file));
        self.len = 0;
        self.push(&rest).await
    }
}

impl Drop for PartBuffer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl S3Appender {
    /// New bytes taken.
    pub fn len(&self) -> u64 {
        self.taken
    }

    /// Whether no new byte was taken.
    pub fn is_empty(&self) -> bool {
        self.taken == 0
    }

    /// The digests of the new bytes, when opened with hashing.
    pub fn digests(&self) -> Option<Digests> {
        self.hashers.as_ref().map(|h| h.digests())
    }

    /// Takes a frame of a request body, refusing to go past `limit` new bytes.
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
        if self.taken + data.len() as u64 > limit {
            return Err(TakeError::TooLong);
        }
        self.write(data).await.map_err(TakeError::Store)
    }

    /// Takes a chunk: into the part being gathered; every full part goes up.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        if let Some(h) = &mut self.hashers {
            h.update(&chunk);
        }
        self.taken += chunk.len() as u64;
        self.buffer.push(&chunk).await?;
        let part_bytes = self.inner.part_bytes;
        while self.buffer.len >= part_bytes {
            let number = self.handle.parts.len() as i32 + 1;
            let body = self.buffer.body(part_bytes).await?;
            let key = self.inner.partial_key(&self.id);
            let etag = self
                .inner
                .upload_part(&key, &self.handle.upload_id, number, body, part_bytes)
                .await?;
            self.handle.parts.push(S3Part {
                number,
                etag,
                size: part_bytes,
            });
            if !self.uploaded {
                // The old tail is in this part now.
                self.uploaded = true;
                if let Some(old) = self.handle.tail.take() {
                    self.handle.stale_tails.push(old.name);
                }
            }
            self.buffer.shift(part_bytes).await?;
        }
        Ok(())
    }

    /// What is durable now: the parts uploaded so far (and, before the first of them, the old
    /// tail).
    pub fn checkpoint(&self) -> (u64, PartialHandle) {
        (self.handle.durable(), PartialHandle::S3(self.handle.clone()))
    }

    /// Makes everything taken durable: what is left after the last full part becomes the
    /// tail object.
    pub async fn persist(mut self) -> Result<(u64, PartialHandle), StoreError> {
        if self.uploaded || self.taken > 0 {
            if let Some(old) = self.handle.tail.take() {
                self.handle.stale_tails.push(old.name);
            }
            if self.buffer.len > 0 {
                let name = random_name();
                let len = self.buffer.len;
                let body = self.buffer.body(len).await?;
                call(
                    "PutObject",
                    self.inner
                        .client
                        .put_object()
                        .bucket(&self.inner.bucket)
                        .key(self.inner.tail_key(&self.id, &name))
                        .content_length(len as i64)
                        .body(body)
                        .customize()
                        .disable_payload_signing()
                        .send(),
                )
                .await?;
                self.handle.tail = Some(S3Tail { name, size: len });
            }
        }
        let durable = self.handle.durable();
        self.inner.usage_changed(0, durable as i64 - self.opened_at as i64);
        Ok(self.checkpoint())
    }
}

impl S3Store {
    /// Starts the multipart upload of a new unfinished upload.
    pub async fn create_partial(&self, id: &str) -> Result<PartialHandle, StoreError> {
        let inner = &self.inner;
        let created = call(
            "CreateMultipartUpload",
            inner
                .client
                .create_multipart_upload()
                .bucket(&inner.bucket)
                .key(inner.partial_key(id))
                .send(),
        )
        .await?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StoreError::other("CreateMultipartUpload gave no upload id"))?
            .to_string();
        inner.usage_changed(1, 0);
        Ok(PartialHandle::S3(S3Handle {
            upload_id,
            parts: Vec::new(),
            tail: None,
            stale_tails: Vec::new(),
        }))
    }

    /// Opens upload `id` to append at `offset`, its durable length: its tail comes first into
    /// the part being gathered; tails replaced before are removed.
    pub async fn append_partial(
        &self,
        id: &str,
        handle: &S3Handle,
        offset: u64,
        hashing: Hashing,
    ) -> Result<S3Appender, StoreError> {
        let inner = Arc::clone(&self.inner);
        if handle.durable() != offset {
            return Err(StoreError::other(format!(
                "partial upload has {} bytes, its record says {offset}",
                handle.durable()
            )));
        }
        let mut handle = handle.clone();
        for stale in std::mem::take(&mut handle.stale_tails) {
            inner.delete_quietly(&inner.tail_key(id, &stale)).await;
        }
        let mut buffer = PartBuffer::new(inner.local.tmp_dir_path()).await?;
        if let Some(tail) = &handle.tail {
            let bytes = inner.get_bytes(&inner.tail_key(id, &tail.name)).await?;
            if bytes.len() as u64 != tail.size {
                return Err(StoreError::other("a partial upload's tail has not its recorded size"));
            }
            buffer.push(&bytes).await?;
        }
        Ok(S3Appender {
            inner,
            id: id.to_string(),
            handle,
            buffer,
            taken: 0,
            hashers: Hashers::new(hashing),
            uploaded: false,
            opened_at: offset,
        })
    }

    /// The first `len` bytes of upload `id`, once it is one object.
    pub fn read_partial(&self, id: &str, handle: &S3Handle, len: u64) -> ByteStream {
        let (inner, id, handle) = (Arc::clone(&self.inner), id.to_string(), handle.clone());
        let request = tokio::spawn(async move {
            let key = inner.ensure_object(&id, &handle, len).await?;
            call(
                "GetObject",
                inner.client.get_object().bucket(&inner.bucket).key(&key).send(),
            )
            .await
        });
        let body = futures_util::stream::once(async move {
            match request.await {
                Ok(Ok(got)) => sdk_stream(got.body),
                Ok(Err(e)) => super::failed(std::io::Error::other(e)),
                Err(e) => super::failed(std::io::Error::other(e)),
            }
        });
        Box::pin(futures_util::StreamExt::flatten(body))
    }

    /// The digests `hashing` asks for of upload `id`'s `len` bytes (read once, as one object).
    pub async fn digests_partial(
        &self,
        id: &str,
        handle: &S3Handle,
        len: u64,
        hashing: Hashing,
    ) -> Result<Digests, StoreError> {
        let Some(mut hashers) = Hashers::new(hashing) else {
            return Ok(Digests::default());
        };
        let mut bytes = self.read_partial(id, handle, len);
        while let Some(chunk) = bytes.next().await {
            hashers.update(&chunk?);
        }
        Ok(hashers.digests())
    }

    /// Makes upload `id`'s `len` bytes the file at `key`, unless one is there: completes it
    /// into its own object, then copies that under the key's shared lock after looking.
    pub async fn complete_partial(
        &self,
        id: &str,
        handle: &S3Handle,
        len: u64,
        key: &FileKey,
        meta: &FileMeta,
    ) -> Result<(), StoreError> {
        let inner = &self.inner;
        let object = inner.ensure_object(id, handle, len).await?;
        let target = inner.object_key(key);
        {
            let _guard = inner.locks.lock(&target).await?;
            match inner.head(&target).await {
                Ok(_) => return Err(StoreError::Exists),
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
            inner.copy(&object, &target, len, meta).await?;
        }
        if let Some(sha256) = &meta.sha256 {
            inner.write_sidecar(key, meta, sha256).await;
        }
        Ok(())
    }

    /// Removes everything of upload `id`: its multipart upload, tails and object.
    pub async fn remove_partial(&self, id: &str, handle: &S3Handle) -> Result<(), StoreError> {
        let inner = &self.inner;
        let key = inner.partial_key(id);
        match call(
            "AbortMultipartUpload",
            inner
                .client
                .abort_multipart_upload()
                .bucket(&inner.bucket)
                .key(&key)
                .upload_id(&handle.upload_id)
                .send(),
        )
        .await
        {
            Ok(_) | Err(StoreError::NotFound) => {}
            Err(e) => return Err(e),
        }
        for name in handle.tail.iter().map(|t| &t.name).chain(&handle.stale_tails) {
            inner.delete_quietly(&inner.tail_key(id, name)).await;
        }
        inner.delete_quietly(&key).await;
        if !handle.upload_id.is_empty() {
            inner.usage_changed(-1, -(handle.durable() as i64));
        }
        Ok(())
    }

    /// Aborts the multipart uploads of unfinished uploads whose last part (or start) is older
    /// than `max_age`, with their tails; returns their ids.
    pub async fn sweep_partials(&self, max_age: Duration) -> Result<Vec<String>, StoreError> {
        let inner = &self.inner;
        let before = SystemTime::now() - max_age;
        let prefix = inner.partial_prefix();
        let mut removed = Vec::new();
        for (key, upload_id, initiated) in inner.multipart_uploads(&prefix).await? {
            let Some(id) = key.strip_prefix(&prefix).filter(|id| !id.contains('.')) else {
                continue;
            };
            if initiated >= before {
                continue;
            }
            let parts = call(
                "ListParts",
                inner
                    .client
                    .list_parts()
                    .bucket(&inner.bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .send(),
            )
            .await?;
            // An append shorter than a part writes only a tail object: it touches the upload
            // as much as a part does.
            let tails = inner.objects_listed(&format!("{key}.tail.")).await?;
            let last = parts
                .parts()
                .iter()
                .map(|p| system_time(p.last_modified()))
                .chain(tails.iter().map(|(_, _, modified)| *modified))
                .max()
                .unwrap_or(initiated)
                .max(initiated);
            if last >= before {
                continue;
            }
            let _ = call(
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
            for (tail, _, _) in tails {
                inner.delete_quietly(&tail).await;
            }
            removed.push(id.to_string());
        }
        if !removed.is_empty() {
            inner.forget_usage();
        }
        Ok(removed)
    }

    /// What unfinished uploads hold in the bucket (their parts and tails): counted from the
    /// bucket at most every ten seconds, and in between kept up to date with this instance's
    /// own creations, appends and removals (another instance's show at the next count).
    pub async fn partials_usage(&self) -> Result<Usage, StoreError> {
        let inner = &self.inner;
        if let Some((at, usage)) = *inner.usage.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < USAGE_FOR
        {
            return Ok(usage);
        }
        let prefix = inner.partial_prefix();
        let mut usage = Usage::default();
        for (key, upload_id, _) in inner.multipart_uploads(&prefix).await? {
            usage.uploads += 1;
            let parts = call(
                "ListParts",
                inner
                    .client
                    .list_parts()
                    .bucket(&inner.bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .send(),
            )
            .await?;
            usage.bytes += parts
                .parts()
                .iter()
                .map(|p| p.size().unwrap_or(0).max(0) as u64)
                .sum::<u64>();
        }
        for (_, size) in inner.objects_with_sizes(&prefix).await? {
            usage.bytes += size;
        }
        *inner.usage.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), usage));
        Ok(usage)
    }
}
