//! PUT: the XEP-0363 upload. The token is checked before anything else about the file; the
//! body streams into a staged file that becomes visible only when it is whole (and, with
//! ChecksumVerification, matches the digest the client sent).

use std::time::SystemTime;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use http_body_util::BodyExt;

use super::digest::{self, repr_digest_from_hex};
use super::{ApiError, AppState, Response, Target, body, now_unix};
use crate::auth::{Claims, DEFAULT_CONTENT_TYPE, Token};
use crate::config::Config;
use crate::ops::metrics;
use crate::resumable::session::{self, SessionToken};
use crate::store::staged::TakeError;
use crate::store::{FileMeta, Hashing};

/// Stores one upload: 201, or the error that says why not.
pub async fn put<B>(
    state: &AppState,
    config: &Config,
    target: Target,
    request: Request<B>,
    session: &SessionToken,
) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let token = Token::from_query(&target.query)?;
    let (head, mut body) = request.into_parts();
    let headers = &head.headers;
    if let Some(range) = headers.get(header::CONTENT_RANGE) {
        let range = range
            .to_str()
            .map_err(|_| ApiError::BadRequest("malformed Content-Range"))?;
        let (first, total) = session::parse_content_range(range)?;
        let length = content_length(headers)?;
        return session::resume(
            state, config, &target, session, headers, &mut body, first, total, length,
        )
        .await;
    }
    // No Content-Length: a request without Transfer-Encoding has an empty body (0 bytes);
    // a chunked one has an unknown size, which the token cannot be checked against.
    let size = match content_length(headers)? {
        Some(n) => n,
        None if http_body::Body::is_end_stream(&body) => 0,
        None => return Err(ApiError::LengthRequired),
    };
    let content_type = signed_content_type(headers)?;
    verify_put(state, &token, &target, size, content_type)?;
    if size > config.limits.max_upload_bytes {
        return Err(ApiError::TooLarge {
            size,
            max: config.limits.max_upload_bytes,
        });
    }
    let expected = if config.store.checksum_verification {
        digest::expected(headers).map_err(|e| ApiError::BadRequest(e.0))?
    } else {
        digest::Expected::default()
    };
    // Answer 409 before reading a body worth the trip; a small one is refused at the commit
    // (the no-replace rename) without a separate look.
    if size > config.store.buffer_bytes as u64 && state.store().exists(&target.key).await {
        return Err(ApiError::Exists);
    }

    let hashing = Hashing {
        sha256: config.store.checksum_verification,
        sha512: config.store.checksum_verification && expected.sha512.is_some(),
        ..Hashing::NONE
    };
    let mut staged = state.store().stage_hashing(hashing).await?;
    let shutdown = state.resumable().shutdown.clone();
    let broken_off = loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout(config.limits.read_timeout, body.frame()) => frame,
            () = shutdown.cancelled() => break Some(ApiError::Unavailable("server shutting down".into())),
        };
        let frame = match frame {
            Err(_) => {
                tracing::info!(path = %target.key, received = staged.len(), expected = size, "upload stalled; dropped");
                break Some(ApiError::BodyTimeout);
            }
            Ok(None) => break None,
            Ok(Some(Err(e))) => {
                tracing::info!(path = %target.key, received = staged.len(), expected = size, error = %e, "upload broken off");
                break Some(ApiError::BadRequest("request body ended early"));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let before = staged.len();
        let taken = staged.take_frame(frame, &mut body, size).await;
        metrics::upload_bytes(staged.len() - before);
        match taken {
            Ok(()) => {}
            Err(TakeError::TooLong) => return Err(ApiError::BadRequest("body longer than Content-Length")),
            Err(TakeError::Store(e)) => return Err(e.into()),
        }
    };
    if let Some(error) = broken_off {
        session::keep_partial(state, config, session, &target, staged, size, content_type).await;
        return Err(error);
    }
    if staged.len() != size {
        // The connection ended early without an error from hyper (the peer closed): the same
        // as a broken-off body, so the session may resume it.
        tracing::info!(path = %target.key, received = staged.len(), expected = size, "upload broken off");
        session::keep_partial(state, config, session, &target, staged, size, content_type).await;
        return Err(ApiError::BadRequest("body shorter than Content-Length"));
    }
    let digests = staged.digests().await?;
    if let Some(d) = &digests {
        let sha256_ok = expected.sha256.is_none() || expected.sha256 == d.sha256;
        let sha512_ok = expected.sha512.is_none() || expected.sha512 == d.sha512;
        if !(sha256_ok && sha512_ok) {
            return Err(ApiError::BadRequest("content digest does not match the body"));
        }
    }
    let sha256 = digests.and_then(|d| d.sha256).map(hex::encode);
    let meta = FileMeta {
        content_type: content_type.to_string(),
        size,
        uploaded_unix: now_unix(),
        sha256,
    };
    state.store().commit(staged, &target.key, &meta).await?;
    metrics::file_stored(size);
    session::forget_partial(state, session, &target).await;
    tracing::info!(path = %target.key, size, content_type, "file stored");
    let mut response = body::empty(StatusCode::CREATED);
    if let Some(v) = meta.sha256.as_deref().and_then(repr_digest_from_hex)
        && let Ok(v) = HeaderValue::from_str(&v)
    {
        response.headers_mut().insert("repr-digest", v);
    }
    Ok(response)
}

/// Checks a slot token as for the PUT of a whole file of `size` bytes, against every secret
/// valid now.
pub fn verify_put(
    state: &AppState,
    token: &Token,
    target: &Target,
    size: u64,
    content_type: &str,
) -> Result<(), ApiError> {
    let keys = state.keys();
    token.verify(
        &keys.valid_at(SystemTime::now()),
        &Claims {
            path: target.key.as_str(),
            full_path: &target.full_path,
            method: "PUT",
            size,
            content_type,
            now_unix: now_unix(),
        },
    )?;
    Ok(())
}

/// The content type a v2/Metronome token signs: the header as sent (empty stays empty), or
/// `application/octet-stream` when there is none; never guessed.
pub fn signed_content_type(headers: &HeaderMap) -> Result<&str, ApiError> {
    match headers.get(header::CONTENT_TYPE) {
        None => Ok(DEFAULT_CONTENT_TYPE),
        Some(v) => v
            .to_str()
            .map_err(|_| ApiError::BadRequest("Content-Type is not visible ASCII")),
    }
}

/// The Content-Length header, if any; malformed → 400.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_LENGTH) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("malformed Content-Length"))?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::BadRequest("malformed Content-Length"));
    }
    text.parse()
        .map(Some)
        .map_err(|_| ApiError::BadRequest("malformed Content-Length"))
}
