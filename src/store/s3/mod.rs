//! Finished files as objects in an S3-compatible bucket (Garage, MinIO, Ceph RGW, AWS S3),
//! behind the same seam as the local store.
//!
//! - **Keys**: a file at `<path>` is the object `S3Prefix + <path>`; the server's own objects
//!   (digest sidecars, the start-up probe) live under `S3Prefix + .hmac-file-server/`, a name
//!   no upload may take.
//! - **Uploads stream**: a body goes to the bucket as it arrives, never whole in memory nor on
//!   local disk. Up to one part (S3PartSize) in one PutObject, larger ones as a multipart
//!   upload whose parts are streamed too ([`staged`]). The object is visible only when
//!   complete: a PutObject whose body breaks off is refused by the store, a multipart upload
//!   that is not completed is aborted (and, after a crash, swept).
//! - **No overwrite**: where the store honours `If-None-Match: *` (checked at start with a
//!   probe object), a single PutObject carries it. Where it does not (Garage 2.5 reads no such
//!   header on PutObject nor on CompleteMultipartUpload), the commit takes a lock shared by
//!   every instance ([`KeyLocks`], through the upload state: Redis with several instances),
//!   looks whether the key is taken, and only then writes: a small body (kept in memory until
//!   then) in one PutObject, a larger one by completing its multipart upload.
//! - **Metadata**: the content type is the object's Content-Type; the SHA-256 (with
//!   ChecksumVerification) a small JSON sidecar object, written after the commit and read only
//!   for objects whose user metadata says they have one.
//! - **Failures**: an unreachable store or a 5xx answer is [`StoreError::Unavailable`] (the
//!   client gets 503 with Retry-After), with the S3 error code in the log; every request is
//!   counted and timed by operation ([`crate::metrics::s3_request`]).

mod body;
mod partial;
mod staged;

pub use partial::{S3Appender, S3Handle, S3Part, S3Tail};
pub use staged::S3Staged;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use bytes::Bytes;

use super::meta::{FileMeta, sidecar_name};
use super::{
    ByteStream, Capabilities, KeyLocks, ListStream, Listed, LocalStore, NoOverwrite, ObjectInfo, SMALL_FILE_BYTES,
    StageSpec, StoreError, Usage,
};
use crate::config::S3Settings;
use crate::key::{FileKey, INTERNAL_DIR};
use crate::metrics;

/// User metadata of an object whose SHA-256 is in a sidecar object.
const DIGEST_META: &str = "hfs-digest";

/// Objects in a bucket; see the module documentation.
#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: Client,
    bucket: String,
    prefix: String,
    part_bytes: u64,
    /// Whether PutObject honours `If-None-Match: *` (found out at start).
    native_create: bool,
    locks: Arc<dyn KeyLocks>,
    /// Local folders: temporaries of the parts being gathered (under StoreDir).
    local: LocalStore,
    /// The last count of what unfinished uploads hold, and when it was made.
    usage: Mutex<Option<(Instant, Usage)>>,
}

/// Turns an SDK error into a store error, counting it.
fn classify<E>(operation: &'static str, e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &e {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let code = service.err().code().unwrap_or("");
            let message = service.err().message().unwrap_or("");
            match (status, code) {
                (404, _) | (_, "NoSuchKey") | (_, "NoSuchUpload") => StoreError::NotFound,
                (412, _) | (409, "ConditionalRequestConflict") => StoreError::Exists,
                (507, _) | (_, "QuotaExceeded") => {
                    StoreError::Full(std::io::Error::other(format!("{operation}: {code} {message}")))
                }
                (s, _) if s >= 500 => StoreError::Unavailable(format!("{operation}: HTTP {s} {code} {message}")),
                (s, _) => StoreError::other(format!("{operation}: HTTP {s} {code} {message}")),
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            StoreError::Unavailable(format!("{operation}: {}", error_chain(&e)))
        }
        _ => StoreError::other(format!("{operation}: {}", error_chain(&e))),
    }
}

/// An error with its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Runs one S3 request, counting and timing it by operation.
///
/// The SDK's request future (10-20 KiB) goes on the heap here, once per request: held inline,
/// it would make every future that may wait for a store request that size, a download from
/// the local store too, and hyper and tokio move such a future by copying it.
fn call<T, E>(
    operation: &'static str,
    request: impl Future<Output = Result<T, SdkError<E, aws_sdk_s3::config::http::HttpResponse>>>,
) -> impl Future<Output = Result<T, StoreError>>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let request = Box::pin(request);
    async move {
        let started = Instant::now();
        let result = request.await;
        let outcome = match &result {
            Ok(_) => "ok",
            // The answer to "is the key taken?" more often than not: no trouble.
            Err(SdkError::ServiceError(s)) if s.raw().status().as_u16() == 404 => "not_found",
            Err(SdkError::ServiceError(s)) if s.raw().status().as_u16() < 500 => "refused",
            Err(_) => "error",
        };
        metrics::s3_request(operation, outcome, started.elapsed());
        result.map_err(|e| {
            let e = classify(operation, e);
            if matches!(e, StoreError::Unavailable(_) | StoreError::Io(_) | StoreError::Full(_)) {
                tracing::warn!(operation, error = %e, "S3 request failed");
            }
            e
        })
    }
}

fn system_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

impl S3Store {
    /// Connects to the bucket, checks it answers, and finds out whether PutObject honours
    /// `If-None-Match: *`. `locks` serialises commits where it does not; `local` keeps the
    /// bytes of unfinished resumable uploads.
    pub async fn connect(
        settings: &S3Settings,
        locks: Arc<dyn KeyLocks>,
        local: LocalStore,
    ) -> Result<Self, StoreError> {
        let credentials = Credentials::new(
            settings.access_key_id.clone(),
            String::from_utf8_lossy(settings.secret_access_key.expose()).into_owned(),
            None,
            None,
            "hmac-file-server config",
        );
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(settings.path_style)
            // Checksums only where S3 requires them: streamed bodies carry no trailer that a
            // store may not understand.
            .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .build(),
            );
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let client = Client::from_conf(config.build());
        let mut inner = Inner {
            client,
            bucket: settings.bucket.clone(),
            prefix: settings.prefix.clone(),
            part_bytes: settings.part_bytes,
            native_create: false,
            locks,
            local,
            usage: Mutex::new(None),
        };
        inner.native_create = match inner.probe_conditional_create().await {
            Ok(native) => native,
            // A store that is down at start (or starting with us) does not stop the server:
            // uploads answer 503 until it answers, and meanwhile (and until a restart) commits
            // take the shared lock, which is right for every store.
            Err(StoreError::Unavailable(reason)) => {
                tracing::error!(
                    %reason,
                    "THE OBJECT STORE IS NOT REACHABLE: uploads and downloads answer 503 until it is; commits take the shared lock"
                );
                false
            }
            Err(e) => return Err(e),
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The local store that keeps unfinished resumable uploads.
    pub fn local(&self) -> &LocalStore {
        &self.inner.local
    }

    /// How this backend keeps the store's guarantees.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            backend: "s3",
            no_overwrite: if self.inner.native_create {
                NoOverwrite::Native("If-None-Match: * on PutObject; completions also under a shared lock")
            } else {
                NoOverwrite::SharedLock(
                    "the store ignores If-None-Match: *; commits look for the key under a lock shared through the upload state, then write (a small body in one PutObject, a larger one by completing its multipart upload)",
                )
            },
            durability: "the object store's (visible only when whole)",
            partials: "multipart uploads in the bucket (parts of S3PartSize, the rest in a tail object), any instance continues them",
            keeps_broken_off: false,
        }
    }

    /// Starts an upload into the bucket.
    pub async fn stage(&self, spec: StageSpec<'_>) -> Result<S3Staged, StoreError> {
        S3Staged::start(Arc::clone(&self.inner), spec).await
    }

    /// Makes a staged upload the object at `key` unless one is there.
    pub async fn commit(&self, staged: S3Staged, key: &FileKey, meta: &FileMeta) -> Result<(), StoreError> {
        if staged.key() != self.inner.object_key(key) {
            return Err(StoreError::other(
                "an upload committed to another key than it was staged for",
            ));
        }
        staged.commit().await?;
        if let Some(sha256) = &meta.sha256 {
            self.inner.write_sidecar(key, meta, sha256).await;
        }
        Ok(())
    }

    /// Whether an object is at the key.
    pub async fn exists(&self, key: &FileKey) -> bool {
        self.inner.head(&self.inner.object_key(key)).await.is_ok()
    }

    /// Opens the object at `key`: with `read_small`, a GET whose body is read whole when the
    /// object is small (and kept for streaming when it is not); without, a HEAD.
    pub async fn open(
        &self,
        key: &FileKey,
        read_small: bool,
    ) -> Result<(ObjectInfo, Option<Bytes>, S3Source), StoreError> {
        let inner = &self.inner;
        let object_key = inner.object_key(key);
        if !read_small {
            let head = inner.head(&object_key).await?;
            let size = head.content_length().unwrap_or(0).max(0) as u64;
            let info = ObjectInfo {
                size,
                modified: system_time(head.last_modified()),
                etag: head.e_tag().unwrap_or("\"\"").to_string(),
                meta: inner
                    .meta_of(key, size, head.content_type(), head.last_modified(), head.metadata())
                    .await,
            };
            let source = S3Source {
                inner: Arc::clone(inner),
                key: object_key,
                etag: info.etag.clone(),
                size,
                body: None,
            };
            return Ok((info, None, source));
        }
        let got = call(
            "GetObject",
            inner.client.get_object().bucket(&inner.bucket).key(&object_key).send(),
        )
        .await?;
        let size = got.content_length().unwrap_or(0).max(0) as u64;
        let info = ObjectInfo {
            size,
            modified: system_time(got.last_modified()),
            etag: got.e_tag().unwrap_or("\"\"").to_string(),
            meta: inner
                .meta_of(key, size, got.content_type(), got.last_modified(), got.metadata())
                .await,
        };
        let body = got.body;
        if size <= SMALL_FILE_BYTES {
            let content = body
                .collect()
                .await
                .map_err(|e| StoreError::Unavailable(format!("GetObject body: {e}")))?
                .into_bytes();
            let source = S3Source {
                inner: Arc::clone(inner),
                key: object_key,
                etag: info.etag.clone(),
                size,
                body: None,
            };
            return Ok((info, Some(content), source));
        }
        let source = S3Source {
            inner: Arc::clone(inner),
            key: object_key,
            etag: info.etag.clone(),
            size,
            body: Some(body),
        };
        Ok((info, None, source))
    }

    /// Removes the object at `key` (and its sidecar); returns the size it had.
    pub async fn delete(&self, key: &FileKey) -> Result<u64, StoreError> {
        let inner = &self.inner;
        let object_key = inner.object_key(key);
        let head = inner.head(&object_key).await?;
        call(
            "DeleteObject",
            inner
                .client
                .delete_object()
                .bucket(&inner.bucket)
                .key(&object_key)
                .send(),
        )
        .await?;
        if head.metadata().is_some_and(|m| m.contains_key(DIGEST_META)) {
            let sidecar = inner.sidecar_key(key);
            let _ = call(
                "DeleteObject",
                inner.client.delete_object().bucket(&inner.bucket).key(&sidecar).send(),
            )
            .await;
        }
        Ok(head.content_length().unwrap_or(0).max(0) as u64)
    }

    /// Every object under the prefix whose name is a valid key (the server's own objects are
    /// left out), page by page.
    pub fn list(&self) -> ListStream {
        struct Pages {
            inner: Arc<Inner>,
            token: Option<String>,
            page: std::vec::IntoIter<Listed>,
            done: bool,
        }
        let start = Pages {
            inner: Arc::clone(&self.inner),
            token: None,
            page: Vec::new().into_iter(),
            done: false,
        };
        Box::pin(futures_util::stream::unfold(start, |mut p| async move {
            loop {
                if let Some(item) = p.page.next() {
                    return Some((Ok(item), p));
                }
                if p.done {
                    return None;
                }
                let request = p
                    .inner
                    .client
                    .list_objects_v2()
                    .bucket(&p.inner.bucket)
                    .prefix(&p.inner.prefix)
                    .set_continuation_token(p.token.take())
                    .send();
                let listed = match call("ListObjectsV2", request).await {
                    Ok(listed) => listed,
                    Err(e) => {
                        p.done = true;
                        return Some((Err(e), p));
                    }
                };
                p.token = listed.next_continuation_token().map(str::to_string);
                p.done = !listed.is_truncated().unwrap_or(false) || p.token.is_none();
                let prefix = p.inner.prefix.clone();
                p.page = listed
                    .contents()
                    .iter()
                    .filter_map(|object| {
                        let key = FileKey::parse_decoded(object.key()?.strip_prefix(&prefix)?).ok()?;
                        Some(Listed {
                            key,
                            size: object.size().unwrap_or(0).max(0) as u64,
                            modified: system_time(object.last_modified()),
                        })
                    })
                    .collect::<Vec<_>>()
                    .into_iter();
            }
        }))
    }

    /// The bucket answers (a HEAD of the bucket).
    pub async fn probe(&self) -> Result<(), String> {
        let inner = &self.inner;
        call("HeadBucket", inner.client.head_bucket().bucket(&inner.bucket).send())
            .await
            .map(|_| ())
            .map_err(|e| format!("bucket {} does not answer: {e}", inner.bucket))
    }

    /// Aborts the multipart uploads of whole-file uploads under the prefix started more than
    /// `max_age` ago (left by a crash; those of unfinished resumable uploads, under the
    /// server's own prefix, are swept with them), and sweeps the local temporaries; returns how
    /// many went.
    pub async fn sweep_staging(&self, max_age: Duration) -> Result<usize, StoreError> {
        let inner = &self.inner;
        let before = SystemTime::now() - max_age;
        let internal = format!("{}{INTERNAL_DIR}/", inner.prefix);
        let mut removed = 0;
        for (key, upload_id, initiated) in inner.multipart_uploads(&inner.prefix).await? {
            if key.starts_with(&internal) || initiated >= before {
                continue;
            }
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
            if aborted.is_ok() {
                tracing::info!(key, "aborted a stale multipart upload");
                removed += 1;
            }
        }
        Ok(removed + inner.local.sweep_temporaries(max_age).await?)
    }
}

impl Inner {
    /// Every multipart upload under way under `prefix`: (key, upload id, when started).
    async fn multipart_uploads(&self, prefix: &str) -> Result<Vec<(String, String, SystemTime)>, StoreError> {
        let mut out = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        loop {
            let listed = call(
                "ListMultipartUploads",
                self.client
                    .list_multipart_uploads()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .set_key_marker(key_marker.take())
                    .set_upload_id_marker(id_marker.take())
                    .send(),
            )
            .await?;
            for upload in listed.uploads() {
                if let (Some(key), Some(id)) = (upload.key(), upload.upload_id()) {
                    out.push((key.to_string(), id.to_string(), system_time(upload.initiated())));
                }
            }
            key_marker = listed.next_key_marker().map(str::to_string);
            id_marker = listed.next_upload_id_marker().map(str::to_string);
            if !listed.is_truncated().unwrap_or(false) || (key_marker.is_none() && id_marker.is_none()) {
                return Ok(out);
            }
        }
    }

    /// The keys, sizes and modification times of the objects under `prefix`.
    async fn objects_listed(&self, prefix: &str) -> Result<Vec<(String, u64, SystemTime)>, StoreError> {
        let mut out = Vec::new();
        let mut token = None::<String>;
        loop {
            let listed = call(
                "ListObjectsV2",
                self.client
                    .list_objects_v2()
                    .bucket(&self.bucket)
                    .prefix(prefix)
                    .set_continuation_token(token.take())
                    .send(),
            )
            .await?;
            for object in listed.contents() {
                if let Some(key) = object.key() {
                    let size = object.size().unwrap_or(0).max(0) as u64;
                    out.push((key.to_string(), size, system_time(object.last_modified())));
                }
            }
            token = listed.next_continuation_token().map(str::to_string);
            if !listed.is_truncated().unwrap_or(false) || token.is_none() {
                return Ok(out);
            }
        }
    }

    /// The keys and sizes of the objects under `prefix`.
    async fn objects_with_sizes(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let listed = self.objects_listed(prefix).await?;
        Ok(listed.into_iter().map(|(k, size, _)| (k, size)).collect())
    }

    /// The object key of a file.
    fn object_key(&self, key: &FileKey) -> String {
        format!("{}{}", self.prefix, key.as_str())
    }

    /// The object key of a file's digest sidecar.
    fn sidecar_key(&self, key: &FileKey) -> String {
        let (shard, name) = sidecar_name(key);
        format!("{}{INTERNAL_DIR}/meta/{shard}/{name}", self.prefix)
    }

    async fn head(&self, object_key: &str) -> Result<aws_sdk_s3::operation::head_object::HeadObjectOutput, StoreError> {
        call(
            "HeadObject",
            self.client.head_object().bucket(&self.bucket).key(object_key).send(),
        )
        .await
    }

    /// A file's metadata from its object's answer (and sidecar, if it has one).
    async fn meta_of(
        &self,
        key: &FileKey,
        size: u64,
        content_type: Option<&str>,
        modified: Option<&aws_sdk_s3::primitives::DateTime>,
        user: Option<&std::collections::HashMap<String, String>>,
    ) -> Option<FileMeta> {
        let sha256 = match user.is_some_and(|m| m.contains_key(DIGEST_META)) {
            true => self.read_sidecar(key, size).await,
            false => None,
        };
        Some(FileMeta {
            content_type: content_type.unwrap_or(crate::auth::DEFAULT_CONTENT_TYPE).to_string(),
            size,
            uploaded_unix: modified.map_or(0, |t| t.secs().max(0) as u64),
            sha256,
        })
    }

    async fn read_sidecar(&self, key: &FileKey, size: u64) -> Option<String> {
        let got = call(
            "GetObject",
            self.client
                .get_object()
                .bucket(&self.bucket)
                .key(self.sidecar_key(key))
                .send(),
        )
        .await
        .ok()?;
        let bytes = got.body.collect().await.ok()?.into_bytes();
        let meta: FileMeta = serde_json::from_slice(&bytes).ok()?;
        (meta.size == size).then_some(meta.sha256).flatten()
    }

    /// Writes a file's digest sidecar; a failure only costs the Repr-Digest of downloads.
    async fn write_sidecar(&self, key: &FileKey, meta: &FileMeta, _sha256: &str) {
        let Ok(json) = serde_json::to_vec(meta) else { return };
        let written = call(
            "PutObject",
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(self.sidecar_key(key))
                .content_type("application/json")
                .body(SdkByteStream::from(json))
                .send(),
        )
        .await;
        if let Err(e) = written {
            tracing::warn!(path = %key, error = %e, "cannot write the digest sidecar; downloads go without Repr-Digest");
        }
    }

    /// Puts a probe object twice with `If-None-Match: *`: a store that honours it refuses the
    /// second. The probe is removed again.
    async fn probe_conditional_create(&self) -> Result<bool, StoreError> {
        let mut random = [0u8; 16];
        rand::fill(&mut random);
        let key = format!("{}{INTERNAL_DIR}/probe/{}", self.prefix, hex::encode(random));
        let put = || {
            call(
                "PutObject",
                self.client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .if_none_match("*")
                    .body(SdkByteStream::from_static(b"probe"))
                    .send(),
            )
        };
        put().await?;
        let native = match put().await {
            Err(StoreError::Exists) => true,
            Ok(_) => false,
            Err(e) => {
                let _ = self.client.delete_object().bucket(&self.bucket).key(&key).send().await;
                return Err(e);
            }
        };
        let _ = call(
            "DeleteObject",
            self.client.delete_object().bucket(&self.bucket).key(&key).send(),
        )
        .await;
        Ok(native)
    }
}

/// An object opened for a download.
#[derive(Debug)]
pub struct S3Source {
    inner: Arc<Inner>,
    key: String,
    etag: String,
    size: u64,
    /// The body of a whole-object GET, when the open made one and did not read it.
    body: Option<SdkByteStream>,
}

impl S3Source {
    /// The bytes `start..end`: the body already under way when that is the whole object,
    /// else a ranged GET that must match the object's ETag (a file replaced meanwhile is an
    /// error, never a mix of two).
    pub fn stream(self, start: u64, end: u64) -> ByteStream {
        if start == 0
            && end == self.size
            && let Some(body) = self.body
        {
            return sdk_stream(body);
        }
        let Self { inner, key, etag, .. } = self;
        // In a task of its own: the SDK's request future is not `Sync`, a task handle is.
        let request = tokio::spawn(async move {
            call(
                "GetObject",
                inner
                    .client
                    .get_object()
                    .bucket(&inner.bucket)
                    .key(&key)
                    .range(format!("bytes={start}-{}", end.saturating_sub(1)))
                    .if_match(etag)
                    .send(),
            )
            .await
        });
        let body = futures_util::stream::once(async move {
            match request.await {
                Ok(Ok(got)) => sdk_stream(got.body),
                Ok(Err(e)) => failed(std::io::Error::other(e)),
                Err(e) => failed(std::io::Error::other(e)),
            }
        });
        Box::pin(futures_util::StreamExt::flatten(body))
    }
}

/// A stream of one error.
fn failed(e: std::io::Error) -> ByteStream {
    Box::pin(futures_util::stream::once(async move { Err(e) }))
}

/// An SDK body as a stream of chunks.
fn sdk_stream(body: SdkByteStream) -> ByteStream {
    Box::pin(futures_util::stream::unfold(body, |mut body| async move {
        body.next()
            .await
            .map(|chunk| (chunk.map_err(std::io::Error::other), body))
    }))
}
