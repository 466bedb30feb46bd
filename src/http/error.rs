//! [`ApiError`]: every way a request can fail, and the one place that turns it into a status,
//! headers, a short body and a log line. Clients get a stable message; logs get the cause.
//! Neither ever carries a token or the secret.

use http::{HeaderValue, StatusCode, header};

use super::body::{Response, empty, text};
use crate::auth::AuthError;
use crate::key::KeyError;
use crate::resumable::EngineError;
use crate::state::StateError;
use crate::store::StoreError;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The path after the prefix is unusable.
    #[error("bad path: {0}")]
    BadPath(#[from] KeyError),
    /// The token is missing, malformed, wrong or expired.
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    /// A PUT without Content-Length.
    #[error("Content-Length required")]
    LengthRequired,
    /// Over MaxUploadSize.
    #[error("upload of {size} bytes is over the limit of {max} bytes")]
    TooLarge {
        /// Announced size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The store refuses the path (the local store: a symlink placed in it leads out).
    #[error("path leaves the store")]
    PathEscape,
    /// A file is already at the path.
    #[error("file already exists")]
    Exists,
    /// A PATCH on a tus final upload (tus 1.0 concatenation: 403).
    #[error("a final upload cannot be patched")]
    FinalUpload,
    /// Nothing at the path.
    #[error("not found")]
    NotFound,
    /// A method this resource does not serve; the methods it does, for `Allow`.
    #[error("method not allowed")]
    MethodNotAllowed(&'static str),
    /// A malformed request, with a reason safe to show.
    #[error("{0}")]
    BadRequest(&'static str),
    /// The client sent no body bytes for ReadTimeout.
    #[error("timed out reading the request body")]
    BodyTimeout,
    /// The request head is too large.
    #[error("request header fields too large")]
    HeadTooLarge,
    /// The request target is too long.
    #[error("URI too long")]
    UriTooLong,
    /// A Range that the file cannot satisfy.
    #[error("range not satisfiable")]
    RangeNotSatisfiable {
        /// The file's size, for `Content-Range: bytes */size`.
        size: u64,
    },
    /// The client is banned for repeated authentication failures.
    #[error("too many failed attempts; banned for {}s", .retry_after.as_millis().div_ceil(1000).max(1))]
    Banned {
        /// How long the ban still lasts.
        retry_after: std::time::Duration,
    },
    /// tus: missing or unsupported Tus-Resumable.
    #[error("unsupported or missing Tus-Resumable; this server speaks tus 1.0.0")]
    TusVersion,
    /// tus PATCH without `application/offset+octet-stream`.
    #[error("PATCH needs Content-Type: application/offset+octet-stream")]
    UnsupportedMediaType,
    /// The upload's offset is not what the request says.
    #[error("offset mismatch: the upload has {offset} bytes")]
    OffsetMismatch {
        /// The durable offset.
        offset: u64,
    },
    /// An expired resumable upload.
    #[error("upload expired")]
    Gone,
    /// Another request holds the upload.
    #[error("upload is busy; retry")]
    Locked,
    /// tus Upload-Checksum mismatch: the chunk was discarded.
    #[error("checksum mismatch; chunk discarded")]
    ChecksumMismatch,
    /// The upload state (Redis) is unreachable.
    #[error("upload state unavailable: {0}")]
    Unavailable(String),
    /// The store is full.
    #[error("insufficient storage: {0}")]
    Full(#[source] StoreError),
    /// Unfinished uploads hold MaxUnfinishedSize.
    #[error("too much unfinished upload data on this server ({held} of {max} bytes); try again later")]
    TooMuchUnfinished {
        /// What unfinished uploads hold now.
        held: u64,
        /// MaxUnfinishedSize.
        max: u64,
    },
    /// The store failed.
    #[error("storage failure: {0}")]
    Internal(#[source] StoreError),
    /// The upload state failed (other than being unreachable).
    #[error("upload state failure: {0}")]
    State(#[source] StateError),
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Locked => ApiError::Locked,
            EngineError::Expired => ApiError::Gone,
            EngineError::BadParts(reason) => ApiError::BadRequest(reason),
            EngineError::TooMuchUnfinished { held, max } => ApiError::TooMuchUnfinished { held, max },
            EngineError::State(s) => s.into(),
            EngineError::Store(s) => s.into(),
        }
    }
}

impl From<StateError> for ApiError {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Unavailable(reason) => ApiError::Unavailable(reason),
            other => ApiError::State(other),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists => ApiError::Exists,
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Refused => ApiError::PathEscape,
            StoreError::Full(_) => ApiError::Full(e),
            StoreError::Unavailable(reason) => ApiError::Unavailable(reason),
            StoreError::Io(_) => ApiError::Internal(e),
        }
    }
}

/// Methods served on upload paths, for `Allow`.
pub const ALLOW: &str = "OPTIONS, HEAD, GET, PUT, POST, DELETE";
/// Methods served on tus upload resources.
pub const ALLOW_TUS: &str = "OPTIONS, HEAD, PATCH, DELETE";
/// Methods served on upload resources of the IETF resumable-upload draft.
pub const ALLOW_DRAFT: &str = "OPTIONS, HEAD, GET, PATCH, DELETE";

impl ApiError {
    /// The status code for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadPath(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Auth(_) | ApiError::PathEscape | ApiError::FinalUpload => StatusCode::FORBIDDEN,
            ApiError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Exists => StatusCode::CONFLICT,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Banned { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TusVersion => StatusCode::PRECONDITION_FAILED,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::OffsetMismatch { .. } => StatusCode::CONFLICT,
            ApiError::Gone => StatusCode::GONE,
            ApiError::Locked => StatusCode::LOCKED,
            ApiError::ChecksumMismatch => StatusCode::from_u16(460).unwrap_or(StatusCode::BAD_REQUEST),
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Full(_) | ApiError::TooMuchUnfinished { .. } => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) | ApiError::State(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response, logging the cause: server faults at error, client faults at info.
    pub fn into_response(self, method: &http::Method, path: &str) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(%method, path, status = status.as_u16(), error = %self, "request failed");
        } else if status != StatusCode::NOT_FOUND {
            tracing::info!(%method, path, status = status.as_u16(), reason = %self, "request refused");
        }
        let mut response = if *method == http::Method::HEAD {
            empty(status)
        } else if status.is_server_error() {
            text(status, status.canonical_reason().unwrap_or("error").to_string())
        } else {
            text(status, self.to_string())
        };
        let headers = response.headers_mut();
        match self {
            ApiError::MethodNotAllowed(allow) => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            ApiError::TusVersion => {
                headers.insert("tus-version", HeaderValue::from_static("1.0.0"));
            }
            ApiError::OffsetMismatch { offset } => {
                headers.insert("upload-offset", HeaderValue::from(offset));
            }
            ApiError::TooMuchUnfinished { .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
            }
            ApiError::Locked | ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Banned { retry_after } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after.as_millis().div_ceil(1000).max(1) as u64),
                );
            }
            ApiError::BodyTimeout | ApiError::BadRequest(_) | ApiError::HeadTooLarge => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
