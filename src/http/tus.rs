//! tus 1.0.0 (<https://tus.io/protocols/resumable-upload>), authorised by the slot token:
//! `POST <slot url + query>` creates an upload (creation, creation-with-upload,
//! creation-defer-length, concatenation); `HEAD`, `PATCH` and `DELETE` act on the Location
//! it returns, `<prefix>.hmac-file-server/tus/<id>` (the id, 128 random bits, is the
//! capability, as in tusd). Checksums (sha1, sha256, md5), expiration and termination are
//! supported. The finished file appears at the slot's URL through the store's atomic commit.
//!
//! A v, v2 or Metronome token signs the file's size, so with one the upload must say its
//! length at creation (no creation-defer-length, no partial uploads for concatenation): a
//! token that cannot be checked would let anyone write to disk. v3 tokens (which sign the
//! path and an expiry, not the size) allow both; a final upload is checked against the sum
//! of its parts.

use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};

use super::headers::{self, TUS_VERSION, UploadConcat};
use super::slot::{Slot, authorize};
use super::{ApiError, Response, body};
use crate::app::AppState;
use crate::auth::{DEFAULT_CONTENT_TYPE, Token};
use crate::config::Config;
use crate::resumable::{Append, Ended, EngineError, Held, NewUpload};
use crate::state::{Concat, UploadKind, UploadRecord, random_id};

/// Extensions supported.
pub const TUS_EXTENSIONS: &str =
    "creation,creation-with-upload,creation-defer-length,expiration,checksum,termination,concatenation";
/// Checksum algorithms supported.
pub const TUS_CHECKSUMS: &str = "sha1,sha256,md5";
/// Path segment, under the upload prefix, of upload resources.
pub const TUS_SEGMENT: &str = ".hmac-file-server/tus/";
/// tus creations may be signed (v3) for POST or for PUT.
const CREATE_METHODS: &[&str] = &["POST", "PUT"];

/// Adds the tus discovery headers to an OPTIONS answer.
pub fn options_headers(headers: &mut HeaderMap, max_upload_bytes: u64) {
    headers.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    headers.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    headers.insert("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
    headers.insert("tus-max-size", HeaderValue::from(max_upload_bytes));
    headers.insert("tus-checksum-algorithm", HeaderValue::from_static(TUS_CHECKSUMS));
}

fn tus_response(status: StatusCode) -> Response {
    let mut r = body::empty(status);
    r.headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    r
}

fn expires_header(record: &UploadRecord) -> HeaderValue {
    let when = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(record.expires_unix);
    HeaderValue::from_str(&httpdate::fmt_http_date(when)).unwrap_or(HeaderValue::from_static(""))
}

fn location(config: &Config, id: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("{}{TUS_SEGMENT}{id}", config.url_prefix())).unwrap_or(HeaderValue::from_static("/"))
}

/// `POST` on a slot URL: creates an upload.
pub async fn create<B>(state: &AppState, config: &Config, slot: Slot, request: Request<B>) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let engine = state.engine();
    let token = slot.token()?;
    let (head, mut body) = request.into_parts();
    let headers = &head.headers;
    headers::require_tus(headers)?;
    let metadata_raw = headers::upload_metadata_raw(headers);
    let metadata = match &metadata_raw {
        Some(raw) => headers::parse_metadata(raw)?,
        None => Default::default(),
    };
    let content_type = match metadata.get("filetype").or_else(|| metadata.get("content-type")) {
        Some(t) => String::from_utf8(t.clone()).map_err(|_| ApiError::BadRequest("malformed filetype"))?,
        None => match headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
            Some(t) if t != headers::OFFSET_OCTET_STREAM => t.to_string(),
            _ => DEFAULT_CONTENT_TYPE.to_string(),
        },
    };
    let concat = headers::upload_concat(headers)?;
    let length = headers::number(headers, "upload-length")?;
    let deferred = headers::upload_defer_length(headers)?;

    let concat = match concat {
        UploadConcat::Final(parts) => {
            let final_upload = NewUpload {
                id: random_id(),
                kind: UploadKind::Tus,
                key: slot.key.clone(),
                length: None,
                content_type,
                metadata: metadata_raw.filter(|m| !m.trim().is_empty()),
                concat: Concat::None,
            };
            return concatenate(state, config, &slot, &token, &parts, final_upload).await;
        }
        UploadConcat::Partial => Concat::Partial,
        UploadConcat::None => Concat::None,
    };
    let length = match (length, deferred) {
        (Some(n), false) => Some(n),
        (None, true) => None,
        _ => return Err(ApiError::BadRequest("send Upload-Length or Upload-Defer-Length: 1")),
    };
    // A token that signs the size (v, v2, token) can only be checked against the size: a
    // deferred length or a part of a concatenation would let anyone with a token-shaped
    // string write to disk. Those need a v3 token (or the size given now).
    match (&concat, length) {
        (Concat::None, Some(n)) => authorize(state, &slot, &token, n, &content_type, CREATE_METHODS)?,
        _ if token.protocol.signs_size() => {
            return Err(ApiError::BadRequest(
                "this slot's token signs the file size: send Upload-Length with it (no deferred length or parts)",
            ));
        }
        (_, n) => authorize(state, &slot, &token, n.unwrap_or(0), &content_type, CREATE_METHODS)?,
    }
    if let Some(n) = length
        && n > config.limits.max_upload_bytes
    {
        return Err(ApiError::TooLarge {
            size: n,
            max: config.limits.max_upload_bytes,
        });
    }
    if concat == Concat::None && state.store().exists(&slot.key).await {
        return Err(ApiError::Exists);
    }

    let new = NewUpload {
        id: random_id(),
        kind: UploadKind::Tus,
        key: slot.key.clone(),
        length,
        content_type,
        metadata: metadata_raw.filter(|m| !m.trim().is_empty()),
        concat,
    };
    let mut record = engine.create(new, (&config.limits).into()).await?;
    tracing::info!(path = %record.key, id = %record.id, length = ?record.length, "tus upload created");

    let mut response = tus_response(StatusCode::CREATED);
    let with_upload = headers::is_offset_octet_stream(headers) && !http_body::Body::is_end_stream(&body);
    if with_upload {
        let id = record.id.clone();
        let result = engine
            .with_lock(&id, async |held| {
                write_chunk(state, config, &mut record, held, headers, &mut body).await
            })
            .await;
        match result {
            Ok(()) | Err(ApiError::ChecksumMismatch) => {}
            Err(e) => return Err(e),
        }
    }
    let h = response.headers_mut();
    h.insert(header::LOCATION, location(config, &record.id));
    h.insert("upload-offset", HeaderValue::from(record.offset));
    h.insert("upload-expires", expires_header(&record));
    Ok(response)
}

/// A final upload: the parts, all complete, become the slot's file.
async fn concatenate(
    state: &AppState,
    config: &Config,
    slot: &Slot,
    token: &Token,
    parts: &[String],
    final_upload: NewUpload,
) -> Result<Response, ApiError> {
    let engine = state.engine();
    let records = engine.parts(parts, &slot.key).await?;
    let total: u64 = records.iter().map(|r| r.offset).sum();
    authorize(state, slot, token, total, &final_upload.content_type, CREATE_METHODS)?;
    if total > config.limits.max_upload_bytes {
        return Err(ApiError::TooLarge {
            size: total,
            max: config.limits.max_upload_bytes,
        });
    }
    let record = engine
        .concatenate(
            &records,
            final_upload,
            config.store.checksum_verification,
            config.limits.upload_expiry,
        )
        .await?;
    let mut response = tus_response(StatusCode::CREATED);
    let h = response.headers_mut();
    h.insert(header::LOCATION, location(config, &record.id));
    h.insert("upload-offset", HeaderValue::from(total));
    Ok(response)
}

/// Loads an upload's record: 404 when unknown, 410 (and forgotten) when expired.
async fn load(state: &AppState, id: &str) -> Result<UploadRecord, ApiError> {
    match state.engine().load(id, UploadKind::Tus).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(ApiError::NotFound),
        Err(EngineError::Expired) => Err(ApiError::Gone),
        Err(e) => Err(e.into()),
    }
}

/// `HEAD` on an upload: its offset and length.
pub async fn head(state: &AppState, id: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    headers::require_tus(headers)?;
    let record = load(state, id).await?;
    // An upload that has all its bytes but was not committed (a crash between its last byte
    // and the commit) is finished now.
    state
        .engine()
        .finish_if_complete(&record, state.config().store.checksum_verification)
        .await?;
    let mut response = tus_response(StatusCode::OK);
    let h = response.headers_mut();
    h.insert("upload-offset", HeaderValue::from(record.offset));
    match record.length {
        Some(n) => h.insert("upload-length", HeaderValue::from(n)),
        None => h.insert("upload-defer-length", HeaderValue::from_static("1")),
    };
    if let Some(m) = record.metadata.as_deref().and_then(|m| HeaderValue::from_str(m).ok()) {
        h.insert("upload-metadata", m);
    }
    match &record.concat {
        Concat::Partial => {
            h.insert("upload-concat", HeaderValue::from_static("partial"));
        }
        Concat::Final(parts) => {
            let config = state.config();
            let urls: Vec<String> = parts
                .iter()
                .map(|id| format!("{}{TUS_SEGMENT}{id}", config.url_prefix()))
                .collect();
            if let Ok(value) = HeaderValue::from_str(&format!("final;{}", urls.join(" "))) {
                h.insert("upload-concat", value);
            }
        }
        Concat::None => {}
    }
    h.insert("upload-expires", expires_header(&record));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `PATCH` on an upload: appends a chunk at Upload-Offset.
pub async fn patch<B>(state: &AppState, config: &Config, id: &str, request: Request<B>) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (head, mut body) = request.into_parts();
    let headers = &head.headers;
    headers::require_tus(headers)?;
    if !headers::is_offset_octet_stream(headers) {
        return Err(ApiError::UnsupportedMediaType);
    }
    headers::number(headers, "upload-offset")?.ok_or(ApiError::BadRequest("Upload-Offset required"))?;
    load(state, id).await?;
    let record = state
        .engine()
        .with_lock(id, async |held| {
            let mut record = load(state, id).await?;
            if let Concat::Final(_) = record.concat {
                return Err(ApiError::FinalUpload);
            }
            write_chunk(state, config, &mut record, held, headers, &mut body).await?;
            Ok(record)
        })
        .await?;
    let mut response = tus_response(StatusCode::NO_CONTENT);
    response
        .headers_mut()
        .insert("upload-offset", HeaderValue::from(record.offset));
    response.headers_mut().insert("upload-expires", expires_header(&record));
    Ok(response)
}

/// Writes one chunk to a locked upload and finishes it when it is complete.
async fn write_chunk<B>(
    state: &AppState,
    config: &Config,
    record: &mut UploadRecord,
    held: &Held,
    headers: &HeaderMap,
    body: &mut B,
) -> Result<(), ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let engine = state.engine();
    let claimed = headers::number(headers, "upload-offset")?.unwrap_or(0);
    if claimed != record.offset {
        return Err(ApiError::OffsetMismatch { offset: record.offset });
    }
    if let Some(n) = headers::number(headers, "upload-length")? {
        match record.length {
            Some(existing) if existing != n => return Err(ApiError::BadRequest("Upload-Length cannot change")),
            Some(_) => {}
            None => {
                if n > config.limits.max_upload_bytes {
                    return Err(ApiError::TooLarge {
                        size: n,
                        max: config.limits.max_upload_bytes,
                    });
                }
                // Only a v3 slot (which signs no size) may defer the length: nothing to check.
                if n < record.offset {
                    return Err(ApiError::BadRequest("Upload-Length is below the offset"));
                }
                engine.set_length(record, n, config.limits.upload_expiry).await?;
            }
        }
    }
    let limit = record.length.unwrap_or(config.limits.max_upload_bytes);
    let room = limit.saturating_sub(record.offset);
    if let Some(n) = headers::number(headers, header::CONTENT_LENGTH)?
        && n > room
    {
        return Err(ApiError::TooLarge {
            size: record.offset + n,
            max: limit,
        });
    }
    let checksum = headers::upload_checksum(headers)?;
    let bounds = Append {
        max_bytes: room,
        checksum: checksum.as_ref(),
        read_timeout: config.limits.read_timeout,
        expiry: config.limits.upload_expiry,
        max_unfinished_bytes: config.limits.max_unfinished_bytes,
    };
    let ended = engine.append(record, held, body, bounds).await?;
    // Whatever ended the chunk, an upload that has all its bytes is finished now: its last
    // byte may have come in a request that broke off or was stopped right after it.
    let complete = record.length == Some(record.offset);
    if complete && record.concat == Concat::None {
        engine.finish(record, config.store.checksum_verification).await?;
    }
    match ended {
        Ended::TooLong => Err(ApiError::TooLarge {
            size: limit + 1,
            max: limit,
        }),
        Ended::ChecksumMismatch => Err(ApiError::ChecksumMismatch),
        // Every byte is in and the upload is done: a body that broke or stalled after its
        // last byte does not undo that, and the answer says so (a client still listening
        // must not retry into a 404 or a 409). Found by the `handler` fuzz target.
        _ if complete => Ok(()),
        Ended::Stopped => Err(ApiError::Locked),
        Ended::BrokenOff => Err(ApiError::BadRequest("request body ended early")),
        Ended::TimedOut => Err(ApiError::BodyTimeout),
        Ended::ShuttingDown | Ended::Complete => Ok(()),
    }
}

/// `DELETE` on an upload (termination).
pub async fn terminate(state: &AppState, id: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    headers::require_tus(headers)?;
    load(state, id).await?;
    state
        .engine()
        .with_lock(id, async |_| {
            let record = load(state, id).await?;
            state.engine().forget(&record).await.map_err(ApiError::from)
        })
        .await?;
    tracing::info!(%id, "tus upload terminated");
    Ok(tus_response(StatusCode::NO_CONTENT))
}
