//! The HTTP face of the server: one entry point, [`handle`], that routes by prefix and
//! method to one module per verb, adds CORS to every answer and writes one access-log line
//! per request (never with the query, where the tokens are).

pub mod body;
pub mod cors;
pub mod delete;
pub mod error;
pub mod get;
pub mod put;
pub mod range;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, StatusCode, header};

use crate::config::Config;
use crate::store::{FileKey, LocalStore};
pub use body::{Body, Response};
pub use error::ApiError;

/// Longest request target (path and query) accepted.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The settings.
    pub config: Arc<Config>,
    /// Finished files and uploads in progress.
    pub store: LocalStore,
}

/// One request, as the handlers see it.
#[derive(Debug)]
pub struct Target {
    /// The key of the file the request is about.
    pub key: FileKey,
    /// The decoded full path, for v3 tokens.
    pub full_path: String,
    /// The raw query string (tokens: never logged).
    pub query: String,
}

/// Serves one request.
pub async fn handle<B>(state: AppState, client: SocketAddr, request: Request<B>) -> Response
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let started = Instant::now();
    let method = request.method().clone();
    let raw_path = request.uri().path().to_string();
    let mut response = route(&state, request)
        .await
        .unwrap_or_else(|e| e.into_response(&method, &raw_path));
    cors::apply(response.headers_mut());
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .or_else(|| http_body::Body::size_hint(response.body()).exact())
        .unwrap_or(0);
    tracing::info!(
        target: "access",
        client = %client.ip(),
        %method,
        path = %raw_path,
        status = response.status().as_u16(),
        bytes,
        ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    response
}

async fn route<B>(state: &AppState, request: Request<B>) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    if request.uri().path_and_query().map_or(0, |pq| pq.as_str().len()) > MAX_URI_BYTES {
        return Err(ApiError::UriTooLong);
    }
    if request.method() == Method::OPTIONS {
        let mut r = body::empty(StatusCode::NO_CONTENT);
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(error::ALLOW));
        return Ok(r);
    }
    let prefix = state.config.url_prefix();
    let raw_path = request.uri().path();
    let Some(rest) = raw_path.strip_prefix(prefix.as_str()) else {
        return Err(ApiError::NotFound);
    };
    let key = FileKey::from_url_path(rest)?;
    let full_path = format!("{prefix}{}", key.as_str());
    let query = request.uri().query().unwrap_or("").to_string();
    let target = Target { key, full_path, query };
    match *request.method() {
        Method::PUT => put::put(state, target, request).await,
        Method::GET | Method::HEAD => get::get(state, target, &request).await,
        Method::DELETE => delete::delete(state, target).await,
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
