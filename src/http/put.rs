//! PUT: the XEP-0363 upload. The token is checked before anything else about the file; the
//! body streams into a staged file that becomes visible only when it is whole.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;

use super::{ApiError, AppState, Response, Target, body, now_unix};
use crate::auth::{Claims, DEFAULT_CONTENT_TYPE, Token};
use crate::store::FileMeta;

/// Stores one upload: 201, or the error that says why not.
pub async fn put<B>(state: &AppState, target: Target, request: Request<B>) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let config = &state.config;
    let token = Token::from_query(&target.query)?;
    let (head, mut body) = request.into_parts();
    let headers = &head.headers;
    // No Content-Length: a request without Transfer-Encoding has an empty body (0 bytes);
    // a chunked one has an unknown size, which the token cannot be checked against.
    let size = match content_length(headers)? {
        Some(n) => n,
        None if http_body::Body::is_end_stream(&body) => 0,
        None => return Err(ApiError::LengthRequired),
    };
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => DEFAULT_CONTENT_TYPE,
        Some(v) => v
            .to_str()
            .map_err(|_| ApiError::BadRequest("Content-Type is not visible ASCII"))?,
    };
    token.verify(
        &[&config.secret],
        &Claims {
            path: target.key.as_str(),
            full_path: &target.full_path,
            method: "PUT",
            size,
            content_type,
            now_unix: now_unix(),
        },
    )?;
    if size > config.max_upload_bytes {
        return Err(ApiError::TooLarge {
            size,
            max: config.max_upload_bytes,
        });
    }
    if state.store.exists(&target.key).await {
        return Err(ApiError::Exists);
    }
    let meta = FileMeta {
        content_type: content_type.to_string(),
        size,
        uploaded_unix: now_unix(),
        sha256: None,
    };

    let mut staged = state.store.stage().await?;
    loop {
        let frame = match tokio::time::timeout(config.read_timeout, body.frame()).await {
            Err(_) => return Err(ApiError::BodyTimeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::info!(path = %target.key, received = staged.len(), expected = size, error = %e, "upload broken off");
                return Err(ApiError::BadRequest("request body ended early"));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if staged.len() + data.len() as u64 > size {
                return Err(ApiError::BadRequest("body longer than Content-Length"));
            }
            staged.write(data).await?;
        }
    }
    if staged.len() != size {
        tracing::info!(path = %target.key, received = staged.len(), expected = size, "upload broken off");
        return Err(ApiError::BadRequest("body shorter than Content-Length"));
    }
    state.store.commit(staged, &target.key, &meta).await?;
    tracing::info!(path = %target.key, size, content_type, "file stored");
    Ok(body::empty(StatusCode::CREATED))
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
