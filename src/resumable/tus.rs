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

use std::collections::BTreeMap;
use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};

use super::{ChecksumAlgorithm, ChunkChecksum, Ended, Resumable};
use crate::auth::{AuthError, Claims, DEFAULT_CONTENT_TYPE, Token};
use crate::config::Config;
use crate::http::{ApiError, AppState, Response, Target, body, now_unix};
use crate::state::{Concat, UploadKind, UploadRecord, random_id, valid_id};
use crate::store::{FileMeta, StoreError};

/// The protocol version spoken.
pub const TUS_VERSION: &str = "1.0.0";
/// Extensions supported.
pub const TUS_EXTENSIONS: &str =
    "creation,creation-with-upload,creation-defer-length,expiration,checksum,termination,concatenation";
/// Checksum algorithms supported.
pub const TUS_CHECKSUMS: &str = "sha1,sha256,md5";
/// Path segment, under the upload prefix, of upload resources.
pub const TUS_SEGMENT: &str = ".hmac-file-server/tus/";
const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";

/// Adds the tus discovery headers to an OPTIONS answer.
pub fn options_headers(headers: &mut HeaderMap, max_upload_bytes: u64) {
    headers.insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    headers.insert("tus-version", HeaderValue::from_static(TUS_VERSION));
    headers.insert("tus-extension", HeaderValue::from_static(TUS_EXTENSIONS));
    headers.insert("tus-max-size", HeaderValue::from(max_upload_bytes));
    headers.insert("tus-checksum-algorithm", HeaderValue::from_static(TUS_CHECKSUMS));
}

fn require_tus(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get("tus-resumable").and_then(|v| v.to_str().ok()) {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(ApiError::TusVersion),
    }
}

fn tus_response(status: StatusCode) -> Response {
    let mut r = body::empty(status);
    r.headers_mut()
        .insert("tus-resumable", HeaderValue::from_static(TUS_VERSION));
    r
}

fn number(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(name) else { return Ok(None) };
    let text = v
        .to_str()
        .map_err(|_| ApiError::BadRequest("malformed number header"))?
        .trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::BadRequest("malformed number header"));
    }
    text.parse()
        .map(Some)
        .map_err(|_| ApiError::BadRequest("malformed number header"))
}

/// Parses Upload-Metadata: `key base64,key2 base64,key3` (an empty header is no metadata).
pub fn parse_metadata(value: &str) -> Result<BTreeMap<String, Vec<u8>>, ApiError> {
    let mut out = BTreeMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut parts = pair.split(' ').filter(|p| !p.is_empty());
        let key = parts.next().ok_or(ApiError::BadRequest("malformed Upload-Metadata"))?;
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ApiError::BadRequest("malformed Upload-Metadata"));
        }
        let value = match parts.next() {
            None => Vec::new(),
            Some(b64) => STANDARD
                .decode(b64)
                .map_err(|_| ApiError::BadRequest("malformed Upload-Metadata"))?,
        };
        if parts.next().is_some() || out.insert(key.to_string(), value).is_some() {
            return Err(ApiError::BadRequest("malformed Upload-Metadata"));
        }
    }
    Ok(out)
}

/// Parses Upload-Checksum: `<algorithm> <base64>`.
fn parse_checksum(headers: &HeaderMap) -> Result<Option<ChunkChecksum>, ApiError> {
    let Some(v) = headers.get("upload-checksum") else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| ApiError::BadRequest("malformed Upload-Checksum"))?;
    let (algo, b64) = text
        .trim()
        .split_once(' ')
        .ok_or(ApiError::BadRequest("malformed Upload-Checksum"))?;
    let algorithm = match algo.to_ascii_lowercase().as_str() {
        "sha1" => ChecksumAlgorithm::Sha1,
        "sha256" => ChecksumAlgorithm::Sha256,
        "md5" => ChecksumAlgorithm::Md5,
        _ => return Err(ApiError::BadRequest("unsupported Upload-Checksum algorithm")),
    };
    let expected = STANDARD
        .decode(b64.trim())
        .map_err(|_| ApiError::BadRequest("malformed Upload-Checksum"))?;
    Ok(Some(ChunkChecksum { algorithm, expected }))
}

fn expires_header(record: &UploadRecord) -> HeaderValue {
    let when = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(record.expires_unix);
    HeaderValue::from_str(&httpdate::fmt_http_date(when)).unwrap_or(HeaderValue::from_static(""))
}

fn location(config: &Config, id: &str) -> String {
    format!("{}{TUS_SEGMENT}{id}", config.url_prefix())
}

/// Checks the slot token for a tus creation: like the PUT of the whole file (v3 may be
/// signed for POST or PUT).
fn verify_slot(
    state: &AppState,
    target: &Target,
    token: &Token,
    size: u64,
    content_type: &str,
) -> Result<(), ApiError> {
    let keys = state.keys();
    let secrets = keys.valid_at(SystemTime::now());
    let claims = |method| Claims {
        path: target.key.as_str(),
        full_path: &target.full_path,
        method,
        size,
        content_type,
        now_unix: now_unix(),
    };
    match token.verify(&secrets, &claims("POST")) {
        Err(AuthError::Mismatch) => token.verify(&secrets, &claims("PUT")).map_err(ApiError::from),
        other => other.map_err(ApiError::from),
    }
}

/// `POST` on a slot URL: creates an upload.
pub async fn create<B>(
    state: &AppState,
    config: &Config,
    target: Target,
    request: Request<B>,
) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let engine = state.resumable();
    let token = Token::from_query(&target.query)?;
    let (head, mut body) = request.into_parts();
    let headers = &head.headers;
    require_tus(headers)?;
    let metadata_raw = headers
        .get("upload-metadata")
        .map(|v| v.to_str().unwrap_or("\u{0}").to_string());
    let metadata = match &metadata_raw {
        Some(raw) => parse_metadata(raw)?,
        None => BTreeMap::new(),
    };
    let content_type = match metadata.get("filetype").or_else(|| metadata.get("content-type")) {
        Some(t) => String::from_utf8(t.clone()).map_err(|_| ApiError::BadRequest("malformed filetype"))?,
        None => match headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
            Some(t) if t != OFFSET_OCTET_STREAM => t.to_string(),
            _ => DEFAULT_CONTENT_TYPE.to_string(),
        },
    };
    let concat = match headers.get("upload-concat").and_then(|v| v.to_str().ok()) {
        None => Concat::None,
        Some("partial") => Concat::Partial,
        Some(v) if v.starts_with("final;") => Concat::Final(final_parts(&v["final;".len()..])?),
        Some(_) => return Err(ApiError::BadRequest("malformed Upload-Concat")),
    };
    let length = number(headers, "upload-length")?;
    let deferred = match headers.get("upload-defer-length").and_then(|v| v.to_str().ok()) {
        None => false,
        Some("1") => true,
        Some(_) => return Err(ApiError::BadRequest("Upload-Defer-Length must be 1")),
    };

    if let Concat::Final(parts) = &concat {
        return concatenate(state, config, &target, &token, parts, content_type, metadata_raw).await;
    }
    let length = match (length, deferred) {
        (Some(n), false) => Some(n),
        (None, true) => None,
        _ => return Err(ApiError::BadRequest("send Upload-Length or Upload-Defer-Length: 1")),
    };
    // A token that signs the size (v, v2, token) can only be checked against the size: a
    // deferred length or a part of a concatenation would let anyone with a token-shaped
    // string write to disk. Those need a v3 token (or the size given now).
    match (&concat, length) {
        (Concat::None, Some(n)) => verify_slot(state, &target, &token, n, &content_type)?,
        _ if token.protocol.signs_size() => {
            return Err(ApiError::BadRequest(
                "this slot's token signs the file size: send Upload-Length with it (no deferred length or parts)",
            ));
        }
        (_, n) => verify_slot(state, &target, &token, n.unwrap_or(0), &content_type)?,
    }
    if let Some(n) = length
        && n > config.limits.max_upload_bytes
    {
        return Err(ApiError::TooLarge {
            size: n,
            max: config.limits.max_upload_bytes,
        });
    }
    if concat == Concat::None && state.store().exists(&target.key).await {
        return Err(ApiError::Exists);
    }

    let now = now_unix();
    let mut record = UploadRecord {
        id: random_id(),
        kind: UploadKind::Tus,
        key: target.key.as_str().to_string(),
        length,
        offset: 0,
        content_type,
        metadata: metadata_raw.filter(|m| !m.trim().is_empty()),
        created_unix: now,
        expires_unix: now + config.limits.upload_expiry.as_secs(),
        concat,
    };
    // An empty partial file first: a record never points at bytes that do not exist.
    drop(
        engine
            .store
            .open_partial(&record.id, 0, crate::store::Hashing::NONE)
            .await?,
    );
    if let Err(e) = engine.state.put(&record, config.limits.upload_expiry).await {
        let _ = engine.store.remove_partial(&record.id).await;
        return Err(e.into());
    }
    tracing::info!(path = %record.key, id = %record.id, length = ?record.length, "tus upload created");

    let mut response = tus_response(StatusCode::CREATED);
    let with_upload = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == OFFSET_OCTET_STREAM)
        && !http_body::Body::is_end_stream(&body);
    if with_upload {
        let held = engine.lock(&record.id).await?;
        let result = write_chunk(state, config, &mut record, &held, headers, &mut body).await;
        engine.unlock(held).await;
        match result {
            Ok(()) | Err(ApiError::ChecksumMismatch) => {}
            Err(e) => return Err(e),
        }
    }
    let h = response.headers_mut();
    h.insert(header::LOCATION, header_value(&location(config, &record.id)));
    h.insert("upload-offset", HeaderValue::from(record.offset));
    h.insert("upload-expires", expires_header(&record));
    Ok(response)
}

fn final_parts(list: &str) -> Result<Vec<String>, ApiError> {
    let ids: Vec<String> = list
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(|url| url.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string())
        .collect();
    if ids.is_empty() || !ids.iter().all(|id| valid_id(id)) {
        return Err(ApiError::BadRequest("malformed Upload-Concat"));
    }
    Ok(ids)
}

/// A final upload: the parts, all complete, become the slot's file.
async fn concatenate(
    state: &AppState,
    config: &Config,
    target: &Target,
    token: &Token,
    parts: &[String],
    content_type: String,
    metadata: Option<String>,
) -> Result<Response, ApiError> {
    let engine = state.resumable();
    let mut records = Vec::with_capacity(parts.len());
    for id in parts {
        let record = engine
            .state
            .get(id)
            .await?
            .ok_or(ApiError::BadRequest("unknown partial upload"))?;
        if record.concat != Concat::Partial || record.key != target.key.as_str() {
            return Err(ApiError::BadRequest("not a partial upload of this slot"));
        }
        if record.length != Some(record.offset) {
            return Err(ApiError::BadRequest("a partial upload is not complete"));
        }
        records.push(record);
    }
    let total: u64 = records.iter().map(|r| r.offset).sum();
    verify_slot(state, target, token, total, &content_type)?;
    if total > config.limits.max_upload_bytes {
        return Err(ApiError::TooLarge {
            size: total,
            max: config.limits.max_upload_bytes,
        });
    }
    let mut staged = state.store().stage().await?;
    for r in &records {
        let path = engine.store.partial_path(&r.id);
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| ApiError::Internal(StoreError::Io(e)))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            use tokio::io::AsyncReadExt;
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| ApiError::Internal(StoreError::Io(e)))?;
            if n == 0 {
                break;
            }
            staged.write(Bytes::copy_from_slice(&buf[..n])).await?;
        }
    }
    let sha256 = match config.store.checksum_verification {
        true => staged.digests().await?.and_then(|d| d.sha256).map(hex::encode),
        false => None,
    };
    let meta = FileMeta {
        content_type,
        size: total,
        uploaded_unix: now_unix(),
        sha256,
    };
    state.store().commit(staged, &target.key, &meta).await?;
    for r in &records {
        engine.forget(&r.id).await?;
    }
    crate::ops::metrics::file_stored(total);
    tracing::info!(path = %target.key, size = total, parts = records.len(), "tus final upload concatenated");
    let _ = metadata;
    let mut response = tus_response(StatusCode::CREATED);
    response
        .headers_mut()
        .insert(header::LOCATION, header_value(&location(config, &random_id())));
    response.headers_mut().insert("upload-offset", HeaderValue::from(total));
    Ok(response)
}

/// Loads an upload's record: 404 when unknown, 410 (and forgotten) when expired.
async fn load(engine: &Resumable, id: &str) -> Result<UploadRecord, ApiError> {
    if !valid_id(id) {
        return Err(ApiError::NotFound);
    }
    let record = engine.state.get(id).await?.ok_or(ApiError::NotFound)?;
    if record.kind != UploadKind::Tus {
        return Err(ApiError::NotFound);
    }
    if record.expired(now_unix()) {
        engine.forget(id).await?;
        return Err(ApiError::Gone);
    }
    Ok(record)
}

/// Finishes an upload that has all its bytes but was not committed (a crash between the last
/// byte and the commit): the next HEAD or PATCH completes it.
async fn rescue(engine: &Resumable, config: &Config, record: &UploadRecord) -> Result<(), ApiError> {
    if record.length == Some(record.offset) && record.concat == Concat::None {
        let held = engine.lock(&record.id).await?;
        let result = match engine.state.get(&record.id).await {
            Ok(Some(fresh)) if fresh.length == Some(fresh.offset) => {
                engine.finish(&fresh, config.store.checksum_verification).await
            }
            Ok(_) => Ok(()),
            Err(e) => Err(e.into()),
        };
        engine.unlock(held).await;
        result?;
    }
    Ok(())
}

/// `HEAD` on an upload: its offset and length.
pub async fn head(state: &AppState, id: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    require_tus(headers)?;
    let record = load(state.resumable(), id).await?;
    rescue(state.resumable(), &state.config(), &record).await?;
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
    if record.concat == Concat::Partial {
        h.insert("upload-concat", HeaderValue::from_static("partial"));
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
    let engine = state.resumable();
    let (head, mut body) = request.into_parts();
    let headers = &head.headers;
    require_tus(headers)?;
    if headers
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v != OFFSET_OCTET_STREAM)
    {
        return Err(ApiError::UnsupportedMediaType);
    }
    number(headers, "upload-offset")?.ok_or(ApiError::BadRequest("Upload-Offset required"))?;
    load(engine, id).await?;
    let held = engine.lock(id).await?;
    let result = async {
        let mut record = load(engine, id).await?;
        if let Concat::Final(_) = record.concat {
            return Err(ApiError::BadRequest("a final upload cannot be patched"));
        }
        write_chunk(state, config, &mut record, &held, headers, &mut body).await?;
        Ok(record)
    }
    .await;
    engine.unlock(held).await;
    let record = result?;
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
    held: &super::Held,
    headers: &HeaderMap,
    body: &mut B,
) -> Result<(), ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let engine = state.resumable();
    let claimed = number(headers, "upload-offset")?.unwrap_or(0);
    if claimed != record.offset {
        return Err(ApiError::OffsetMismatch { offset: record.offset });
    }
    if let Some(n) = number(headers, "upload-length")? {
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
                record.length = Some(n);
                engine.state.put(record, config.limits.upload_expiry).await?;
            }
        }
    }
    let limit = record.length.unwrap_or(config.limits.max_upload_bytes);
    let room = limit.saturating_sub(record.offset);
    if number(headers, header::CONTENT_LENGTH.as_str())?.is_some_and(|n| n > room) {
        return Err(ApiError::TooLarge {
            size: record.offset + number(headers, "content-length")?.unwrap_or(0),
            max: limit,
        });
    }
    let checksum = parse_checksum(headers)?;
    let ended = engine
        .append(
            record,
            held,
            body,
            room,
            checksum.as_ref(),
            config.limits.read_timeout,
            config.limits.upload_expiry,
        )
        .await?;
    // Whatever ended the chunk, an upload that has all its bytes is finished now: its last
    // byte may have come in a request that broke off or was stopped right after it.
    if record.length == Some(record.offset) && record.concat == Concat::None {
        engine.finish(record, config.store.checksum_verification).await?;
    }
    match ended {
        Ended::TooLong => Err(ApiError::TooLarge {
            size: limit + 1,
            max: limit,
        }),
        Ended::ChecksumMismatch => Err(ApiError::ChecksumMismatch),
        Ended::Stopped => Err(ApiError::Locked),
        Ended::BrokenOff => Err(ApiError::BadRequest("request body ended early")),
        Ended::TimedOut => Err(ApiError::BodyTimeout),
        Ended::ShuttingDown | Ended::Complete => Ok(()),
    }
}

/// `DELETE` on an upload (termination).
pub async fn terminate(state: &AppState, id: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    require_tus(headers)?;
    let engine = state.resumable();
    load(engine, id).await?;
    let held = engine.lock(id).await?;
    let result = engine.forget(id).await;
    engine.unlock(held).await;
    result?;
    tracing::info!(%id, "tus upload terminated");
    Ok(tus_response(StatusCode::NO_CONTENT))
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or(HeaderValue::from_static("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata() {
        assert!(parse_metadata("").unwrap().is_empty());
        assert!(parse_metadata("  ").unwrap().is_empty());
        let m = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential,filetype aW1hZ2UvcG5n")
            .unwrap();
        assert_eq!(m["filename"], b"world_domination_plan.pdf");
        assert_eq!(m["is_confidential"], b"");
        assert_eq!(m["filetype"], b"image/png");
        for bad in ["filename !!!", "a b c", "a YQ==,a YQ==", "k\u{1} YQ=="] {
            assert!(parse_metadata(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn concat_lists() {
        let a = "0123456789abcdef0123456789abcdef";
        let b = "fedcba9876543210fedcba9876543210";
        let ids = final_parts(&format!(
            "/upload/.hmac-file-server/tus/{a} http://h/upload/.hmac-file-server/tus/{b}"
        ))
        .unwrap();
        assert_eq!(ids, [a, b]);
        assert!(final_parts("").is_err());
        assert!(final_parts("/x/../../etc").is_err());
    }
}
