//! The HTTP face of the server: one entry point, [`handle`], and one pipeline for every
//! request: check bans, parse the request into an [`Endpoint`] (size limits, prefix, path
//! decoded once, method), run that endpoint's handler (one module per verb or protocol:
//! [`put`], [`get`], [`delete`], [`tus`], [`session`]), turn any error into its answer in one
//! place ([`error`]), add CORS, count the request in the metrics and write one access-log
//! line (never with the query, where the tokens are).

pub mod body;
pub mod cors;
pub mod delete;
pub mod draft;
pub mod endpoint;
pub mod error;
pub mod get;
pub mod headers;
pub mod interim;
pub mod put;
pub mod session;
pub mod slot;
pub mod tus;

#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Request, StatusCode, header};

use crate::app::AppState;
use crate::config::Config;
use crate::metrics;
use crate::ops::bans::{self, Client};
pub use body::{Body, Response};
pub use endpoint::{Endpoint, MAX_HEAD_BYTES, MAX_URI_BYTES, TusAction};
pub use error::ApiError;
use session::SessionToken;

/// Serves one request from `peer` (`None` for a Unix socket).
pub async fn handle<B>(state: AppState, peer: Option<IpAddr>, request: Request<B>) -> Response
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin + Send + Sync + 'static,
    B::Error: std::fmt::Display + Send,
{
    // A GET or HEAD without a body changes nothing that must be finished: it runs in the
    // connection's task (no hand-off to another task per download).
    if matches!(*request.method(), Method::GET | Method::HEAD) && http_body::Body::is_end_stream(request.body()) {
        let (parts, mut body) = request.into_parts();
        return handle_parts(&state, peer, Request::from_parts(parts, &mut body)).await;
    }
    // Any other request runs in its own task: when the client goes away after its body, hyper
    // drops this future, but the work (fsync, saving a resumable offset, releasing a lock)
    // must finish all the same.
    let task = tokio::spawn(async move {
        // A client that asked `Expect: 100-continue` has not sent its body: reading it now
        // would make hyper send the 100 after (or before) our final answer. It gets none.
        let expects_continue = request
            .headers()
            .get(header::EXPECT)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        let (parts, mut body) = request.into_parts();
        let response = handle_parts(&state, peer, Request::from_parts(parts, &mut body)).await;
        // A request answered before its body was read (403, 413, 409 …): read the rest in
        // the background, bounded, so the client (or a reverse proxy still sending) gets the
        // answer instead of a connection reset (RFC 9112 §9.3). Not after a stalled or broken
        // body: that connection is closed on purpose.
        let closing = response.headers().get(header::CONNECTION).is_some_and(|v| v == "close");
        if !closing && !expects_continue && !http_body::Body::is_end_stream(&body) {
            let limit = state
                .config()
                .limits
                .max_upload_bytes
                .saturating_mul(2)
                .saturating_add(1 << 20);
            tokio::spawn(drain(body, limit, DRAIN_TIME));
        }
        response
    });
    match task.await {
        Ok(response) => response,
        Err(e) => {
            tracing::error!(error = %e, "request task failed");
            body::text(StatusCode::INTERNAL_SERVER_ERROR, "internal error".into())
        }
    }
}

/// Longest time spent reading the unread rest of an answered request's body.
const DRAIN_TIME: Duration = Duration::from_secs(30);
/// Longest pause in that body before the connection is closed instead.
const DRAIN_IDLE: Duration = Duration::from_secs(5);

async fn drain<B>(mut body: B, limit: u64, max_time: Duration)
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
{
    use http_body_util::BodyExt;
    let deadline = tokio::time::Instant::now() + max_time;
    let mut read = 0u64;
    loop {
        let idle = tokio::time::Instant::now() + DRAIN_IDLE;
        let Ok(Some(Ok(frame))) = tokio::time::timeout_at(deadline.min(idle), body.frame()).await else {
            break;
        };
        if let Ok(data) = frame.into_data() {
            read += data.len() as u64;
            if read > limit {
                break;
            }
        }
    }
}

async fn handle_parts<B>(state: &AppState, peer: Option<IpAddr>, request: Request<B>) -> Response
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let started = Instant::now();
    let method = request.method().clone();
    let raw_path = request.uri().path().to_string();
    let is_tus = request.headers().contains_key("tus-resumable") || raw_path.contains(tus::TUS_SEGMENT);
    let bytes_in: u64 = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let config = state.config();
    let client = Client::identify(peer, request.headers(), &config.bans.trusted_proxies);
    if let Some(peer) = peer.filter(|_| client.untrusted_forwarding) {
        bans::note_untrusted_forwarding(peer);
    }
    let is_upload = matches!(method, Method::PUT | Method::POST | Method::PATCH);
    let _active = is_upload.then(metrics::ActiveUpload::start);

    let banned = client.ip.and_then(|ip| state.bans().banned_for(ip, Instant::now()));
    let (result, session_header) = match banned {
        Some(left) => (Err(ApiError::Banned { retry_after: left }), None),
        None => {
            let prefix = config.url_prefix();
            match Endpoint::parse(request.method(), request.uri(), request.headers(), &prefix) {
                Ok(endpoint) => dispatch(state, &config, endpoint, request).await,
                Err(e) => (Err(e), None),
            }
        }
    };
    if let (Err(ApiError::Auth(_)), Some(_)) = (&result, client.ip) {
        metrics::auth_failure();
        state.record_auth_failure(&client).await;
    }
    let mut response = result.unwrap_or_else(|e| e.into_response(&method, &raw_path));
    cors::apply(response.headers_mut());
    if is_tus {
        // tus clients read the protocol version on every answer, errors included.
        response
            .headers_mut()
            .insert("tus-resumable", HeaderValue::from_static(headers::TUS_VERSION));
    }
    if let Some(v) = session_header {
        response.headers_mut().insert(headers::SESSION_TOKEN, v);
    }

    let status = response.status();
    // Body bytes sent: none for HEAD, whatever its Content-Length says.
    let bytes = if method == Method::HEAD {
        0
    } else {
        response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .or_else(|| http_body::Body::size_hint(response.body()).exact())
            .unwrap_or(0)
    };
    let elapsed = started.elapsed();
    metrics::request_done(method.as_str(), status.as_u16(), elapsed);
    if is_upload {
        metrics::upload_done(status.is_success(), elapsed);
    } else if method == Method::GET && (status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT) {
        metrics::download(bytes);
    }
    tracing::info!(
        target: "access",
        client = %client.ip.map_or_else(|| "unix".to_string(), |ip| ip.to_string()),
        %method,
        path = %raw_path,
        status = status.as_u16(),
        bytes_in,
        bytes_out = bytes,
        ms = (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
        "request"
    );
    response
}

/// Runs the endpoint's handler; the second value is the X-Session-Token every PUT answer
/// carries.
async fn dispatch<B>(
    state: &AppState,
    config: &Config,
    endpoint: Endpoint,
    request: Request<B>,
) -> (Result<Response, ApiError>, Option<HeaderValue>)
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    // Every handler but the download's is boxed: their futures are kilobytes (an upload's
    // state, the store's and Redis's requests), and inline they would make every request's
    // future that size, which hyper and tokio move by copying. Downloads are most requests.
    let result = match endpoint {
        Endpoint::Options => Ok(options(config)),
        Endpoint::TusUpload { id, action } => match action {
            TusAction::Head => Box::pin(tus::head(state, &id, request.headers())).await,
            TusAction::Patch => Box::pin(tus::patch(state, config, &id, request)).await,
            TusAction::Delete => Box::pin(tus::terminate(state, &id, request.headers())).await,
        },
        Endpoint::Put(slot) => {
            return match SessionToken::from_headers(request.headers()) {
                Ok(session) => {
                    let header = session.header();
                    (
                        Box::pin(put::put(state, config, slot, request, &session)).await,
                        Some(header),
                    )
                }
                Err(e) => (Err(e), None),
            };
        }
        Endpoint::TusCreate(slot) => Box::pin(tus::create(state, config, slot, request)).await,
        Endpoint::DraftUpload { id, action } => match action {
            draft::DraftAction::Offset => Box::pin(draft::offset(state, config, &id, request.headers())).await,
            draft::DraftAction::Append => Box::pin(draft::patch(state, config, &id, request)).await,
            draft::DraftAction::Cancel => Box::pin(draft::cancel(state, &id)).await,
        },
        Endpoint::DraftCreate { slot, interop } => Box::pin(draft::create(state, config, slot, interop, request)).await,
        Endpoint::SessionHead(slot) => Box::pin(session::head(state, &slot, request.headers())).await,
        Endpoint::Download(slot) => get::get(state, slot, &request).await,
        Endpoint::Delete(slot) => Box::pin(delete::delete(state, config, slot)).await,
    };
    (result, None)
}

/// OPTIONS: the methods, and tus discovery (CORS is added to every answer).
fn options(config: &Config) -> Response {
    let mut r = body::empty(StatusCode::NO_CONTENT);
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(error::ALLOW));
    tus::options_headers(r.headers_mut(), config.limits.max_upload_bytes);
    draft::options_headers(r.headers_mut(), config);
    r
}
