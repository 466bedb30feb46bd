//! The seed's X-Session-Token scheme (SPEC §4.1), for clients that PUT:
//! - every PUT answer carries `X-Session-Token` (the client's, or a new one);
//! - a PUT with a client-chosen token that breaks off keeps its bytes as a partial upload of
//!   that session, invisible at the GET URL, for UploadExpiry (a client that sent no token
//!   never saw the server's one, so its bytes are dropped);
//! - `HEAD <slot url + query>` with the token answers `Upload-Offset` and `Upload-Length`;
//! - `PUT <slot url + query>` with the token and `Content-Range: bytes N-(S-1)/S` resumes; the
//!   HMAC is checked against the total S; N other than the stored offset → 409.
//!
//! The upload's id is SHA-256 of token and path, so the token itself is never stored.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};

use super::headers::{self, SESSION_TOKEN, digest};
use super::slot::{Slot, authorize};
use super::{ApiError, Response, body};
use crate::app::AppState;
use crate::auth::Token;
use crate::config::Config;
use crate::resumable::{Append, Ended, EngineError, NewUpload};
use crate::state::{Concat, UploadKind, UploadRecord};
use crate::store::{Hashing, Staged};

/// A session token: the client's (validated) or a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionToken {
    /// The token text.
    pub value: String,
    /// Whether the client sent it.
    pub from_client: bool,
}

impl SessionToken {
    /// Reads `X-Session-Token`, or makes one.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        Ok(match headers::session_token(headers)? {
            Some(text) => Self {
                value: text.to_string(),
                from_client: true,
            },
            None => {
                let mut bytes = [0u8; 24];
                rand::fill(&mut bytes);
                Self {
                    value: hex::encode(bytes),
                    from_client: false,
                }
            }
        })
    }

    /// The upload id of this session's upload to `key`.
    pub fn upload_id(&self, key: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.value.as_bytes());
        h.update([0]);
        h.update(key.as_bytes());
        hex::encode(h.finalize())
    }

    /// The header value for answers.
    pub fn header(&self) -> HeaderValue {
        HeaderValue::from_str(&self.value).unwrap_or(HeaderValue::from_static(""))
    }
}

/// Keeps the bytes of a broken-off PUT for resumption. Failures are logged, never fatal:
/// the upload just cannot be resumed.
pub async fn keep_partial(
    state: &AppState,
    config: &Config,
    session: &SessionToken,
    slot: &Slot,
    staged: Staged,
    size: u64,
    content_type: &str,
) {
    // Only a client that sent its own token can come back for the bytes.
    if staged.is_empty() || !session.from_client {
        return;
    }
    let new = NewUpload {
        id: session.upload_id(slot.key.as_str()),
        kind: UploadKind::Session,
        key: slot.key.clone(),
        length: Some(size),
        content_type: content_type.to_string(),
        metadata: None,
        concat: Concat::None,
    };
    match state
        .engine()
        .keep_broken_off(staged, new, (&config.limits).into())
        .await
    {
        Ok(offset) => tracing::info!(path = %slot.key, offset, size, "broken-off upload kept for resumption"),
        Err(e) => tracing::warn!(error = %e, "cannot keep a broken-off upload; its bytes are dropped"),
    }
}

/// After a whole PUT succeeded: forget an older partial of the same session, if any.
pub async fn forget_partial(state: &AppState, session: &SessionToken, slot: &Slot) {
    if session.from_client {
        let id = session.upload_id(slot.key.as_str());
        if let Err(e) = state.engine().discard(&id).await {
            tracing::debug!(error = %e, "cannot forget an older partial upload");
        }
    }
}

/// The session's upload to this slot, if there is one and it has not expired.
async fn find(state: &AppState, session: &SessionToken, slot: &Slot) -> Result<Option<UploadRecord>, ApiError> {
    let id = session.upload_id(slot.key.as_str());
    match state.engine().load(&id, UploadKind::Session).await {
        Ok(found) => Ok(found),
        Err(EngineError::Expired) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// `HEAD <slot url + query>` with X-Session-Token: the partial upload's offset and length.
///
/// The token is checked before anything is said about the upload, and before an expired one
/// is removed: a v3 token (which signs no size) always, a v, v2 or Metronome token against
/// the kept upload's size (with no upload kept there is no size to check it against: 404).
pub async fn head(state: &AppState, slot: &Slot, headers: &HeaderMap) -> Result<Response, ApiError> {
    let session = SessionToken::from_headers(headers)?;
    let token = slot.token()?;
    let engine = state.engine();
    let id = session.upload_id(slot.key.as_str());
    let Some(record) = engine.peek(&id, UploadKind::Session).await? else {
        if !token.protocol.signs_size() {
            authorize(state, slot, &token, 0, headers::signed_content_type(headers)?, &["PUT"])?;
        }
        return Err(ApiError::NotFound);
    };
    let length = record.length.unwrap_or(0);
    authorize(state, slot, &token, length, &record.content_type, &["PUT"])?;
    if record.expired(crate::clock::now_unix()) {
        engine.forget(&record).await?;
        return Err(ApiError::NotFound);
    }
    // An upload that has all its bytes but was not committed (a failure or a crash between
    // its last byte and the commit) is finished now, as tus HEAD does: offset = length then
    // means the file is stored.
    engine
        .finish_if_complete(&record, state.config().store.checksum_verification)
        .await?;
    let mut response = body::empty(StatusCode::OK);
    let h = response.headers_mut();
    h.insert("upload-offset", HeaderValue::from(record.offset));
    h.insert("upload-length", HeaderValue::from(length));
    h.insert(SESSION_TOKEN, session.header());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// A whole PUT that asks to be resumable (X-Session-Token), on a store that cannot keep a
/// broken-off upload's bytes.
#[derive(Debug, Clone, Copy)]
pub struct ResumablePut<'a> {
    /// Its Content-Length.
    pub size: u64,
    /// The content type it was signed with.
    pub content_type: &'a str,
    /// The digests the client sent, to check before the file is stored.
    pub expected: &'a digest::Expected,
}

/// A whole PUT with the client's X-Session-Token, taken through the unfinished-upload path:
/// the session's upload is made (an older one of this session and slot goes), the body is
/// appended (durable at checkpoints), and when all of it came the upload is checked and
/// finished into the store: 201. When the body breaks off, what came is kept for a resume.
pub async fn put_resumable<B>(
    state: &AppState,
    config: &Config,
    slot: &Slot,
    session: &SessionToken,
    body: &mut B,
    put: ResumablePut<'_>,
) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let engine = state.engine();
    let id = session.upload_id(slot.key.as_str());
    engine.discard(&id).await?;
    let new = NewUpload {
        id: id.clone(),
        kind: UploadKind::Session,
        key: slot.key.clone(),
        length: Some(put.size),
        content_type: put.content_type.to_string(),
        metadata: None,
        concat: Concat::None,
    };
    let mut record = engine.create(new, (&config.limits).into()).await?;
    let meta = engine
        .with_lock(&id, async |held| {
            let bounds = Append {
                max_bytes: put.size,
                checksum: None,
                read_timeout: config.limits.read_timeout,
                expiry: config.limits.upload_expiry,
                max_unfinished_bytes: config.limits.max_unfinished_bytes,
            };
            let ended = engine.append(&mut record, held, body, bounds).await?;
            let kept = |why| {
                tracing::info!(path = %slot.key, offset = record.offset, size = put.size, "broken-off upload kept for resumption ({why})");
            };
            match ended {
                Ended::Complete if record.offset == put.size => {}
                Ended::TooLong => return Err(ApiError::BadRequest("body longer than Content-Length")),
                Ended::TimedOut => {
                    kept("stalled");
                    return Err(ApiError::BodyTimeout);
                }
                Ended::ShuttingDown => {
                    kept("shutting down");
                    return Err(ApiError::Unavailable("server shutting down".into()));
                }
                Ended::Complete => {
                    kept("ended early");
                    return Err(ApiError::BadRequest("body shorter than Content-Length"));
                }
                Ended::BrokenOff | Ended::Stopped | Ended::ChecksumMismatch => {
                    kept("broken off");
                    return Err(ApiError::BadRequest("request body ended early"));
                }
            }
            let hashing = Hashing {
                sha256: put.expected.sha256.is_some(),
                sha512: put.expected.sha512.is_some(),
                ..Hashing::NONE
            };
            if hashing.any() {
                let digests = engine.digests(&record, hashing).await?;
                if put.expected.sha256.as_ref().is_some_and(|e| digests.sha256.as_ref() != Some(e))
                    || put.expected.sha512.as_ref().is_some_and(|e| digests.sha512.as_ref() != Some(e))
                {
                    engine.forget(&record).await?;
                    return Err(ApiError::BadRequest("content digest does not match the body"));
                }
            }
            Ok(engine.finish(&record, config.store.checksum_verification).await?)
        })
        .await?;
    tracing::info!(path = %slot.key, size = put.size, content_type = put.content_type, "file stored");
    let mut response = body::empty(StatusCode::CREATED);
    if let Some(v) = meta.sha256.as_deref().and_then(digest::repr_digest_from_hex)
        && let Ok(v) = HeaderValue::from_str(&v)
    {
        response.headers_mut().insert("repr-digest", v);
    }
    Ok(response)
}

/// What a resuming PUT's Content-Range and Content-Length say.
#[derive(Debug, Clone, Copy)]
pub struct Resume {
    /// The first byte it carries.
    pub first: u64,
    /// The whole file's size.
    pub total: u64,
    /// Its Content-Length, if sent.
    pub content_length: Option<u64>,
}

/// `PUT` with X-Session-Token and Content-Range: resumes a partial upload.
#[allow(clippy::too_many_arguments)]
pub async fn resume<B>(
    state: &AppState,
    config: &Config,
    slot: &Slot,
    token: &Token,
    session: &SessionToken,
    headers: &HeaderMap,
    body: &mut B,
    resume: Resume,
) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let Resume {
        first,
        total,
        content_length,
    } = resume;
    let content_type = headers::signed_content_type(headers)?;
    authorize(state, slot, token, total, content_type, &["PUT"])?;
    if total > config.limits.max_upload_bytes {
        return Err(ApiError::TooLarge {
            size: total,
            max: config.limits.max_upload_bytes,
        });
    }
    if content_length.is_some_and(|n| n != total - first) {
        return Err(ApiError::BadRequest(
            "Content-Length must be the rest of the Content-Range",
        ));
    }
    let engine = state.engine();
    let id = session.upload_id(slot.key.as_str());
    engine
        .with_lock(&id, async |held| {
            let Some(mut record) = find(state, session, slot).await? else {
                return Err(ApiError::OffsetMismatch { offset: 0 });
            };
            if record.length != Some(total) {
                return Err(ApiError::BadRequest(
                    "Content-Range total differs from the upload's length",
                ));
            }
            if record.offset != first {
                return Err(ApiError::OffsetMismatch { offset: record.offset });
            }
            let bounds = Append {
                max_bytes: total - first,
                checksum: None,
                read_timeout: config.limits.read_timeout,
                expiry: config.limits.upload_expiry,
                max_unfinished_bytes: config.limits.max_unfinished_bytes,
            };
            match engine.append(&mut record, held, body, bounds).await? {
                Ended::Complete if record.offset == total => {}
                Ended::Complete => return Err(ApiError::BadRequest("body shorter than Content-Range")),
                Ended::TooLong => return Err(ApiError::BadRequest("body longer than Content-Range")),
                Ended::TimedOut => return Err(ApiError::BodyTimeout),
                Ended::Stopped => return Err(ApiError::Locked),
                Ended::BrokenOff | Ended::ShuttingDown | Ended::ChecksumMismatch => {
                    return Err(ApiError::BadRequest("request body ended early"));
                }
            }
            engine.finish(&record, config.store.checksum_verification).await?;
            Ok(())
        })
        .await?;
    Ok(body::empty(StatusCode::CREATED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_tokens() {
        let mut h = HeaderMap::new();
        let made = SessionToken::from_headers(&h).unwrap();
        assert!(!made.from_client && made.value.len() >= 16);
        h.insert(SESSION_TOKEN, HeaderValue::from_static("abcdefghij_-012345"));
        let given = SessionToken::from_headers(&h).unwrap();
        assert!(given.from_client);
        assert_eq!(given.upload_id("a/b").len(), 64);
        assert_ne!(given.upload_id("a/b"), given.upload_id("a/c"));
    }
}
