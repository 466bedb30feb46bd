//! The HTTP face of the server: one entry point, [`handle`], that checks bans, routes by
//! prefix and method to one module per verb, adds CORS to every answer, counts the request in
//! the metrics and writes one access-log line (never with the query, where the tokens are).

pub mod body;
pub mod cors;
pub mod delete;
pub mod digest;
pub mod error;
pub mod get;
pub mod put;
pub mod range;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use http::{HeaderValue, Method, Request, StatusCode, header};

use crate::auth::KeyRing;
use crate::config::{Config, Secret};
use crate::ops::bans::{BanPolicy, Bans, client_ip};
use crate::ops::metrics;
use crate::resumable::session::{self, SessionToken};
use crate::resumable::{Resumable, tus};
use crate::store::{FileKey, LocalStore};
pub use body::{Body, Response};
pub use error::ApiError;

/// Longest request target (path and query) accepted.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// What every request handler shares: the live settings (swapped on reload), the secrets,
/// the store and the ban list.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

#[derive(Debug)]
struct Shared {
    config: ArcSwap<Config>,
    keys: ArcSwap<KeyRing>,
    store: LocalStore,
    bans: Bans,
    resumable: Resumable,
}

impl AppState {
    /// State for a freshly started server.
    pub fn new(config: Arc<Config>, store: LocalStore, resumable: Resumable) -> Self {
        let keys = KeyRing::new(config.auth.secret.clone());
        // Embedded state keeps its bans beside the store; with Redis they live there.
        let bans = match resumable.state {
            crate::state::UploadState::Embedded(_) => Bans::persistent(ban_file(&config)),
            crate::state::UploadState::Redis(_) => Bans::default(),
        };
        Self(Arc::new(Shared {
            config: ArcSwap::new(config),
            keys: ArcSwap::from_pointee(keys),
            store,
            bans,
            resumable,
        }))
    }

    /// The resumable-upload engine.
    pub fn resumable(&self) -> &Resumable {
        &self.0.resumable
    }

    /// The settings in force now.
    pub fn config(&self) -> Arc<Config> {
        self.0.config.load_full()
    }

    /// Replaces the live settings (reload).
    pub fn set_config(&self, config: Arc<Config>) {
        self.0.config.store(config);
    }

    /// The secrets tokens may be signed with now.
    pub fn keys(&self) -> Arc<KeyRing> {
        self.0.keys.load_full()
    }

    /// Makes `next` the current secret; the previous one stays valid for `grace`. Returns
    /// whether the secret changed.
    pub fn rotate_secret(&self, next: Secret, grace: Duration) -> bool {
        let keys = self.keys();
        if keys.current() == &next {
            return false;
        }
        self.0
            .keys
            .store(Arc::new(keys.rotated(next, SystemTime::now() + grace)));
        true
    }

    /// The store.
    pub fn store(&self) -> &LocalStore {
        &self.0.store
    }

    /// The ban list.
    pub fn bans(&self) -> &Bans {
        &self.0.bans
    }

    /// Counts a failed authentication: across all instances through Redis when it is set
    /// (falling back to this instance's count when Redis does not answer), else here.
    pub async fn record_auth_failure(&self, ip: IpAddr) {
        let policy = self.ban_policy();
        if policy.after_fails == 0 {
            return;
        }
        if let Some(redis) = self.resumable().state.as_redis() {
            let ban_time = policy.auto_unban.then_some(policy.ban_time);
            match redis
                .record_auth_failure(&ip.to_string(), policy.window, policy.after_fails, ban_time)
                .await
            {
                Ok(true) => {
                    metrics::ban_counted();
                    self.bans().adopt(ip, ban_time, Instant::now());
                    return;
                }
                Ok(false) => return,
                Err(e) => tracing::warn!(error = %e, "cannot share a failed authentication; counting it here"),
            }
        }
        self.bans().record_failure(ip, &policy, Instant::now());
    }

    /// The ban policy of the live settings.
    pub fn ban_policy(&self) -> BanPolicy {
        let c = self.config();
        BanPolicy {
            after_fails: c.bans.block_after_fails,
            window: c.bans.block_duration,
            auto_unban: c.bans.auto_unban,
            ban_time: c.bans.auto_ban_time,
        }
    }
}

/// Where the embedded state keeps the ban list (in StateDir).
pub fn ban_file(config: &Config) -> std::path::PathBuf {
    config.store.state_dir.join("bans.json")
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

/// Serves one request from `peer` (`None` for a Unix socket).
pub async fn handle<B>(state: AppState, peer: Option<IpAddr>, request: Request<B>) -> Response
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin + Send + Sync + 'static,
    B::Error: std::fmt::Display + Send,
{
    // The request runs in its own task: when the client goes away after its body, hyper drops
    // this future, but the work (fsync, saving a resumable offset, releasing a lock) must
    // finish all the same.
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
    let state = state.clone();
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
    let client = client_ip(peer, request.headers(), &config.bans.trusted_proxies);
    let is_upload = matches!(method, Method::PUT | Method::POST | Method::PATCH);
    let _active = is_upload.then(metrics::ActiveUpload::start);

    let (result, session_header) = match client.and_then(|ip| state.bans().banned_for(ip, Instant::now())) {
        Some(left) => (Err(ApiError::Banned { retry_after: left }), None),
        None => route(&state, &config, request).await,
    };
    if let (Err(ApiError::Auth(_)), Some(ip)) = (&result, client) {
        metrics::auth_failure();
        state.record_auth_failure(ip).await;
    }
    let mut response = result.unwrap_or_else(|e| e.into_response(&method, &raw_path));
    cors::apply(response.headers_mut());
    if is_tus {
        // tus clients read the protocol version on every answer, errors included.
        response
            .headers_mut()
            .insert("tus-resumable", HeaderValue::from_static(tus::TUS_VERSION));
    }
    if let Some(v) = session_header {
        response.headers_mut().insert(session::HEADER, v);
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
        client = %client.map_or_else(|| "unix".to_string(), |ip| ip.to_string()),
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

/// Routes a request; the second value is the X-Session-Token every PUT answer carries.
async fn route<B>(
    state: &AppState,
    config: &Config,
    request: Request<B>,
) -> (Result<Response, ApiError>, Option<HeaderValue>)
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let uri_bytes = request.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_bytes > MAX_URI_BYTES {
        return (Err(ApiError::UriTooLong), None);
    }
    // hyper's buffer limit only bites when a head arrives in pieces: count it here too.
    let head_bytes: usize = uri_bytes
        + request
            .headers()
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 4)
            .sum::<usize>();
    if head_bytes > crate::server::MAX_HEAD_BYTES {
        return (Err(ApiError::HeadTooLarge), None);
    }
    if request.method() == Method::OPTIONS {
        let mut r = body::empty(StatusCode::NO_CONTENT);
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(error::ALLOW));
        tus::options_headers(r.headers_mut(), config.limits.max_upload_bytes);
        return (Ok(r), None);
    }
    let prefix = config.url_prefix();
    let raw_path = request.uri().path();
    let Some(rest) = raw_path.strip_prefix(prefix.as_str()) else {
        return (Err(ApiError::NotFound), None);
    };
    if let Some(id) = rest.strip_prefix(tus::TUS_SEGMENT) {
        let id = id.to_string();
        let result = match *request.method() {
            Method::HEAD => tus::head(state, &id, request.headers()).await,
            Method::PATCH => tus::patch(state, config, &id, request).await,
            Method::DELETE => tus::terminate(state, &id, request.headers()).await,
            _ => Err(ApiError::MethodNotAllowed(error::ALLOW_TUS)),
        };
        return (result, None);
    }
    let key = match FileKey::from_url_path(rest) {
        Ok(k) => k,
        Err(e) => return (Err(e.into()), None),
    };
    let full_path = format!("{prefix}{}", key.as_str());
    let query = request.uri().query().unwrap_or("").to_string();
    let target = Target { key, full_path, query };
    match *request.method() {
        Method::PUT => match SessionToken::from_headers(request.headers()) {
            Ok(session) => {
                let header = session.header();
                (put::put(state, config, target, request, &session).await, Some(header))
            }
            Err(e) => (Err(e), None),
        },
        Method::POST => (tus::create(state, config, target, request).await, None),
        Method::HEAD if request.headers().contains_key(session::HEADER) && !target.query.is_empty() => {
            (session::head(state, &target, request.headers()).await, None)
        }
        Method::GET | Method::HEAD => (get::get(state, target, &request).await, None),
        Method::DELETE => (delete::delete(state, config, target).await, None),
        _ => (Err(ApiError::MethodNotAllowed(error::ALLOW)), None),
    }
}

/// Seconds since the epoch.
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
