//! The seed's X-Session-Token scheme (SPEC §4.1), for clients that PUT:
//! - every PUT answer carries `X-Session-Token` (the client's, or a new one);
//! - a PUT with a client-chosen token that breaks off keeps its bytes as a partial upload of
//!   that session, invisible at the GET URL, for UploadExpiry (a client that sent no token
//!   never saw the server's one, so its bytes are dropped);
//! - `HEAD <slot url + query>` with the token answers `Upload-Offset` and `Upload-Length`;
//! - `PUT <slot url + query>` with the token and `Content-Range: bytes N-(S-1)/S` resumes; the
//!   HMAC is checked against the total S; N other than the stored offset → 409.
//!
//! The record's id is SHA-256 of token and path, so the token itself is never stored.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};

use super::Ended;
use crate::auth::Token;
use crate::config::Config;
use crate::http::{ApiError, AppState, Response, Target, body, now_unix};
use crate::state::{Concat, UploadKind, UploadRecord};
use crate::store::StagedFile;

/// The header.
pub const HEADER: &str = "x-session-token";

/// A session token: the client's (validated) or a new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionToken {
    /// The token text.
    pub value: String,
    /// Whether the client sent it.
    pub from_client: bool,
}

impl SessionToken {
    /// Reads `X-Session-Token` (16–128 of `[A-Za-z0-9_-]`), or makes one.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, ApiError> {
        match headers.get(HEADER) {
            None => {
                let mut bytes = [0u8; 24];
                rand::fill(&mut bytes);
                Ok(Self {
                    value: hex::encode(bytes),
                    from_client: false,
                })
            }
            Some(v) => {
                let text = v
                    .to_str()
                    .map_err(|_| ApiError::BadRequest("malformed X-Session-Token"))?;
                let ok = (16..=128).contains(&text.len())
                    && text
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !ok {
                    return Err(ApiError::BadRequest("X-Session-Token must be 16-128 of [A-Za-z0-9_-]"));
                }
                Ok(Self {
                    value: text.to_string(),
                    from_client: true,
                })
            }
        }
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
    target: &Target,
    staged: StagedFile,
    size: u64,
    content_type: &str,
) {
    // Only a client that sent its own token can come back for the bytes.
    if staged.is_empty() || !session.from_client {
        return;
    }
    let engine = state.resumable();
    let id = session.upload_id(target.key.as_str());
    let offset = match engine.store.adopt_partial(staged, &id).await {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "cannot keep a broken-off upload");
            return;
        }
    };
    let now = now_unix();
    let record = UploadRecord {
        id: id.clone(),
        kind: UploadKind::Session,
        key: target.key.as_str().to_string(),
        length: Some(size),
        offset,
        content_type: content_type.to_string(),
        metadata: None,
        created_unix: now,
        expires_unix: now + config.limits.upload_expiry.as_secs(),
        concat: Concat::None,
    };
    match engine.state.put(&record, config.limits.upload_expiry).await {
        Ok(()) => tracing::info!(path = %target.key, offset, size, "broken-off upload kept for resumption"),
        Err(e) => {
            tracing::warn!(error = %e, "cannot record a broken-off upload; its bytes are dropped");
            let _ = engine.store.remove_partial(&id).await;
        }
    }
}

/// After a whole PUT succeeded: forget an older partial of the same session, if any.
pub async fn forget_partial(state: &AppState, session: &SessionToken, target: &Target) {
    if session.from_client {
        let id = session.upload_id(target.key.as_str());
        if let Err(e) = state.resumable().forget(&id).await {
            tracing::debug!(error = %e, "cannot forget an older partial upload");
        }
    }
}

/// `bytes N-M/S` with M = S-1: (N, S).
pub fn parse_content_range(value: &str) -> Result<(u64, u64), ApiError> {
    let bad = ApiError::BadRequest("Content-Range must be bytes N-(S-1)/S");
    let rest = value
        .trim()
        .strip_prefix("bytes ")
        .ok_or(ApiError::BadRequest("Content-Range must be bytes N-(S-1)/S"))?;
    let (range, total) = rest
        .split_once('/')
        .ok_or(ApiError::BadRequest("Content-Range must be bytes N-(S-1)/S"))?;
    let (first, last) = range
        .split_once('-')
        .ok_or(ApiError::BadRequest("Content-Range must be bytes N-(S-1)/S"))?;
    let parse = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (Some(first), Some(last), Some(total)) = (parse(first), parse(last), parse(total)) else {
        return Err(bad);
    };
    if total == 0 || last + 1 != total || first > last {
        return Err(bad);
    }
    Ok((first, total))
}

fn verify(state: &AppState, target: &Target, size: u64, content_type: &str) -> Result<(), ApiError> {
    let token = Token::from_query(&target.query)?;
    crate::http::put::verify_put(state, &token, target, size, content_type)
}

/// `HEAD <slot url + query>` with X-Session-Token: the partial upload's offset and length.
pub async fn head(state: &AppState, target: &Target, headers: &HeaderMap) -> Result<Response, ApiError> {
    let session = SessionToken::from_headers(headers)?;
    Token::from_query(&target.query)?;
    let engine = state.resumable();
    let record = engine
        .state
        .get(&session.upload_id(target.key.as_str()))
        .await?
        .ok_or(ApiError::NotFound)?;
    if record.expired(now_unix()) {
        engine.forget(&record.id).await?;
        return Err(ApiError::NotFound);
    }
    let length = record.length.unwrap_or(0);
    verify(state, target, length, &record.content_type)?;
    let mut response = body::empty(StatusCode::OK);
    let h = response.headers_mut();
    h.insert("upload-offset", HeaderValue::from(record.offset));
    h.insert("upload-length", HeaderValue::from(length));
    h.insert(HEADER, session.header());
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `PUT` with X-Session-Token and Content-Range: resumes a partial upload.
#[allow(clippy::too_many_arguments)]
pub async fn resume<B>(
    state: &AppState,
    config: &Config,
    target: &Target,
    session: &SessionToken,
    headers: &HeaderMap,
    body: &mut B,
    first: u64,
    total: u64,
    content_length: Option<u64>,
) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let content_type = crate::http::put::signed_content_type(headers)?;
    verify(state, target, total, content_type)?;
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
    let engine = state.resumable();
    let id = session.upload_id(target.key.as_str());
    let held = engine.lock(&id).await?;
    let result = async {
        let Some(mut record) = engine.state.get(&id).await? else {
            return Err(ApiError::OffsetMismatch { offset: 0 });
        };
        if record.expired(now_unix()) {
            engine.forget(&id).await?;
            return Err(ApiError::OffsetMismatch { offset: 0 });
        }
        if record.length != Some(total) {
            return Err(ApiError::BadRequest(
                "Content-Range total differs from the upload's length",
            ));
        }
        if record.offset != first {
            return Err(ApiError::OffsetMismatch { offset: record.offset });
        }
        let ended = engine
            .append(
                &mut record,
                &held,
                body,
                total - first,
                None,
                config.limits.read_timeout,
                config.limits.upload_expiry,
            )
            .await?;
        match ended {
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
    }
    .await;
    engine.unlock(held).await;
    result?;
    Ok(body::empty(StatusCode::CREATED))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 0-99/100").unwrap(), (0, 100));
        assert_eq!(parse_content_range("bytes 40-99/100").unwrap(), (40, 100));
        for bad in [
            "bytes 0-98/100",
            "bytes 50-40/100",
            "bytes */100",
            "0-99/100",
            "bytes a-b/c",
            "bytes 0-0/0",
        ] {
            assert!(parse_content_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn session_tokens() {
        let mut h = HeaderMap::new();
        let made = SessionToken::from_headers(&h).unwrap();
        assert!(!made.from_client && made.value.len() >= 16);
        h.insert(HEADER, HeaderValue::from_static("abcdefghij_-012345"));
        let given = SessionToken::from_headers(&h).unwrap();
        assert!(given.from_client);
        assert_eq!(given.upload_id("a/b").len(), 64);
        assert_ne!(given.upload_id("a/b"), given.upload_id("a/c"));
        for bad in ["short", "has space in it 0123", &"x".repeat(129)] {
            h.insert(HEADER, HeaderValue::from_str(bad).unwrap());
            assert!(SessionToken::from_headers(&h).is_err(), "{bad}");
        }
    }
}
