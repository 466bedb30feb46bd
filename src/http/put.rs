//! PUT: the XEP-0363 upload. The token is checked before anything else about the file; the
//! body streams into a staged upload that becomes visible only when it is whole (and, with
//! ChecksumVerification, matches the digest the client sent). A PUT with `Content-Range`
//! resumes a session upload ([`super::session`]); a whole PUT that breaks off keeps its bytes
//! for that when the client sent its own X-Session-Token.

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode};

use super::headers::{self, digest};
use super::session::{self, SessionToken};
use super::slot::{Slot, authorize};
use super::{ApiError, Response, body};
use crate::app::AppState;
use crate::clock::now_unix;
use crate::config::Config;
use crate::metrics;
use crate::resumable::{Ended, Watch, receive};
use crate::store::{FileMeta, Hashing, StageSpec};

/// Stores one upload: 201, or the error that says why not.
pub async fn put<B>(
    state: &AppState,
    config: &Config,
    slot: Slot,
    request: Request<B>,
    session: &SessionToken,
) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let token = slot.token()?;
    let (head, mut body) = request.into_parts();
    let headers = &head.headers;
    if let Some((first, total)) = headers::content_range(headers)? {
        let length = headers::content_length(headers)?;
        let resume = session::Resume {
            first,
            total,
            content_length: length,
        };
        return session::resume(state, config, &slot, &token, session, headers, &mut body, resume).await;
    }
    // No Content-Length: a request without Transfer-Encoding has an empty body (0 bytes);
    // a chunked one has an unknown size, which the token cannot be checked against.
    let size = match headers::content_length(headers)? {
        Some(n) => n,
        None if http_body::Body::is_end_stream(&body) => 0,
        None => return Err(ApiError::LengthRequired),
    };
    let content_type = headers::signed_content_type(headers)?;
    authorize(state, &slot, &token, size, content_type, &["PUT"])?;
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
    // (the no-overwrite commit) without a separate look.
    if size > config.store.buffer_bytes as u64 && state.store().exists(&slot.key).await {
        return Err(ApiError::Exists);
    }
    // A store that streams a whole upload away cannot keep its bytes when it breaks off: a
    // PUT that asks to be resumable takes the unfinished-upload path from its first byte.
    if session.from_client && !state.store().capabilities().keeps_broken_off {
        let put = session::ResumablePut {
            size,
            content_type,
            expected: &expected,
        };
        return session::put_resumable(state, config, &slot, session, &mut body, put).await;
    }

    let hashing = Hashing {
        sha256: config.store.checksum_verification,
        sha512: config.store.checksum_verification && expected.sha512.is_some(),
        ..Hashing::NONE
    };
    let spec = StageSpec {
        key: &slot.key,
        size,
        content_type,
        hashing,
    };
    let mut staged = state.store().stage(spec).await?;
    let watch = Watch {
        read_timeout: config.limits.read_timeout,
        shutdown: state.engine().shutdown(),
        holder: None,
    };
    let ended = receive(&mut staged, &mut body, size, watch).await?;
    let broken_off = match ended {
        Ended::Complete if staged.len() == size => None,
        Ended::TooLong => return Err(ApiError::BadRequest("body longer than Content-Length")),
        Ended::TimedOut => {
            tracing::info!(path = %slot.key, received = staged.len(), expected = size, "upload stalled; dropped");
            Some(ApiError::BodyTimeout)
        }
        Ended::ShuttingDown => Some(ApiError::Unavailable("server shutting down".into())),
        // The connection ended early, with an error from hyper or without one (the peer
        // closed): the session may resume it.
        Ended::Complete => {
            tracing::info!(path = %slot.key, received = staged.len(), expected = size, "upload broken off");
            Some(ApiError::BadRequest("body shorter than Content-Length"))
        }
        Ended::BrokenOff | Ended::Stopped | Ended::ChecksumMismatch => {
            tracing::info!(path = %slot.key, received = staged.len(), expected = size, "upload broken off");
            Some(ApiError::BadRequest("request body ended early"))
        }
    };
    if let Some(error) = broken_off {
        session::keep_partial(state, config, session, &slot, staged, size, content_type).await;
        return Err(error);
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
    state.store().commit(staged, &slot.key, &meta).await?;
    metrics::file_stored(size);
    session::forget_partial(state, session, &slot).await;
    tracing::info!(path = %slot.key, size, content_type, "file stored");
    let mut response = body::empty(StatusCode::CREATED);
    if let Some(v) = meta.sha256.as_deref().and_then(digest::repr_digest_from_hex)
        && let Ok(v) = HeaderValue::from_str(&v)
    {
        response.headers_mut().insert("repr-digest", v);
    }
    Ok(response)
}
