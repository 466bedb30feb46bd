//! [`ApiError`]: every way a request can fail, and the one place that turns it into a status,
//! headers, a short body and a log line. Clients get a stable message; logs get the cause.
//! Neither ever carries a token or the secret.

use http::{HeaderValue, StatusCode, header};

use super::body::{Response, empty, text};
use crate::auth::AuthError;
use crate::store::StoreError;
use crate::store::key::KeyError;

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
    /// A file is already at the path.
    #[error("file already exists")]
    Exists,
    /// Nothing at the path.
    #[error("not found")]
    NotFound,
    /// A method this server does not serve.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A malformed request, with a reason safe to show.
    #[error("{0}")]
    BadRequest(&'static str),
    /// The client sent no body bytes for ReadTimeout.
    #[error("timed out reading the request body")]
    BodyTimeout,
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
    #[error("too many failed attempts; banned for {}s", .retry_after.as_secs().max(1))]
    Banned {
        /// How long the ban still lasts.
        retry_after: std::time::Duration,
    },
    /// The store is full.
    #[error("insufficient storage: {0}")]
    Full(#[source] StoreError),
    /// Anything else on the server's side.
    #[error("storage failure: {0}")]
    Internal(#[source] StoreError),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Exists => ApiError::Exists,
            StoreError::NotFound => ApiError::NotFound,
            StoreError::Full(_) => ApiError::Full(e),
            StoreError::Io(_) => ApiError::Internal(e),
        }
    }
}

/// Methods served on upload paths, for `Allow`.
pub const ALLOW: &str = "OPTIONS, HEAD, GET, PUT, DELETE";

impl ApiError {
    /// The status code for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadPath(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Auth(_) => StatusCode::FORBIDDEN,
            ApiError::LengthRequired => StatusCode::LENGTH_REQUIRED,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Exists => StatusCode::CONFLICT,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::RangeNotSatisfiable { .. } => StatusCode::RANGE_NOT_SATISFIABLE,
            ApiError::Banned { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Full(_) => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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
            ApiError::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static(ALLOW));
            }
            ApiError::RangeNotSatisfiable { size } => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            ApiError::Banned { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
            }
            ApiError::BodyTimeout | ApiError::BadRequest(_) => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
