//! The listener and connection loop: hyper's HTTP/1.1 connections with a header-read timeout,
//! an idle write timeout, limits on header size and count; graceful shutdown on
//! SIGTERM/SIGINT; reload on SIGHUP; the metrics listener; and the periodic jobs ([`jobs`]:
//! retention and sweeps on one leader instance, lifting bans, re-reading the secret).

pub mod interim;
pub mod jobs;
pub mod listener;
pub mod metrics_listener;
pub mod migrate;
pub mod read_share;
pub mod reload;
pub mod zero_copy;

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_io_timeout::TimeoutStream;

use crate::app::AppState;
use crate::config::{Config, Sources};
use crate::http::handle;
use crate::http::interim::Interim;
use crate::ops::logging::LogHandle;
use crate::resumable::Engine;
use crate::state::embedded::EmbeddedState;
use crate::state::redis::RedisState;
use crate::state::{StateError, UploadState};
use crate::store::{LocalStore, RetryPolicy, Store, StoreError};
use interim::InterimStream;
use read_share::ReadShare;
use tokio_util::sync::CancellationToken;
use zero_copy::ZeroCopy;

/// hyper's read buffer: also how much body one read takes. Heads are checked against
/// [`MAX_HEAD_BYTES`](crate::http::MAX_HEAD_BYTES) by the handler (hyper's own limit only bites on heads that arrive in
/// pieces), so this can be large enough for fast uploads; with many connections open, each
/// read is capped lower ([`read_share`]).
pub const READ_BUF_BYTES: usize = 512 * 1024;
/// Most headers in one request; more → 431.
pub const MAX_HEADERS: usize = 100;
/// How long running requests may take to finish after SIGTERM.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The store could not be opened or created.
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    /// The upload state could not be opened.
    #[error("cannot open the upload state: {0}")]
    State(#[from] StateError),
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// What we tried.
        addr: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Everything `run` needs besides the shutdown signal.
#[derive(Debug)]
pub struct Launch {
    /// The settings at start.
    pub config: Arc<Config>,
    /// Where they came from, to read them again on SIGHUP.
    pub sources: Sources,
    /// The logger, to change level and reopen the file on SIGHUP.
    pub log: Option<LogHandle>,
    /// The metrics renderer, when metrics are on.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// Opens the store, binds the listeners and serves until `shutdown` completes.
pub async fn run(launch: Launch, shutdown: impl Future<Output = ()>) -> Result<(), StartupError> {
    let config = launch.config;
    // Registered before anything is bound, so an early SIGHUP reloads instead of killing.
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(|source| {
        StartupError::Bind {
            addr: "SIGHUP handler".into(),
            source,
        }
    })?;
    let local = open_local(&config)?;
    let upload_state = open_upload_state(&config).await?;
    let store = open_store(&config, local, &upload_state).await?;
    tracing::info!(capabilities = %store.capabilities(), "store opened");
    let shutdown_uploads = CancellationToken::new();
    let engine = Engine::new(upload_state.clone(), store.clone(), shutdown_uploads.clone());
    let state = AppState::new(Arc::clone(&config), store, upload_state, engine);

    let metrics_task = match (&launch.metrics, config.metrics.enabled) {
        (Some(handle), true) => {
            let listener = listener::bind_tcp(&config.metrics.listen).await?;
            let addr = listener.local_addr().map_err(|source| StartupError::Bind {
                addr: "metrics".into(),
                source,
            })?;
            tracing::info!("metrics and health on http://{addr}/metrics");
            Some(tokio::spawn(metrics_listener::serve(
                listener,
                handle.clone(),
                state.clone(),
            )))
        }
        _ => None,
    };

    let listener = match &config.server.unix_socket {
        Some(path) => {
            let socket = listener::bind_unix(path)?;
            tracing::info!("listening on unix:{}", path.display());
            Listener::Unix(socket)
        }
        None => {
            let tcp = listener::bind_tcp(&config.server.listen).await?;
            let local = tcp.local_addr().map_err(|source| StartupError::Bind {
                addr: "listener".into(),
                source,
            })?;
            tracing::info!("listening on {local}");
            Listener::Tcp(tcp)
        }
    };
    tracing::info!(
        store = %config.store.dir.display(),
        prefix = %config.url_prefix(),
        max_upload_bytes = config.limits.max_upload_bytes,
        "serving uploads"
    );

    let leadership = jobs::Leadership::new(&state).await;
    let jobs = [
        tokio::spawn(jobs::lead(state.clone(), Arc::clone(&leadership))),
        tokio::spawn(jobs::sweep_loop(state.clone(), Arc::clone(&leadership))),
        tokio::spawn(jobs::ban_loop(state.clone())),
        tokio::spawn(reload::signal_loop(
            hangup,
            state.clone(),
            launch.sources.clone(),
            launch.log.clone(),
        )),
        tokio::spawn(reload::reask_loop(state.clone(), launch.sources)),
    ];
    serve(listener, state.clone(), shutdown, shutdown_uploads).await;
    for job in jobs.iter().chain(metrics_task.iter()) {
        job.abort();
    }
    leadership.resign(&state).await;
    Ok(())
}

/// The local store at StoreDir, with the retry policy of the configuration.
fn open_local(config: &Config) -> Result<LocalStore, StartupError> {
    let retry = RetryPolicy {
        max_retries: config.store.max_retries,
        delay: config.store.retry_delay,
        on_reads: config.store.enable_get_retries,
    };
    Ok(LocalStore::open(
        &config.store.dir,
        &config.store.upload_sub_dir,
        config.store.buffer_bytes,
        retry,
    )?)
}

/// The upload state: embedded under StateDir, or in Redis (reachable or not: it reconnects).
async fn open_upload_state(config: &Config) -> Result<UploadState, StartupError> {
    Ok(match &config.redis {
        None => UploadState::Embedded(EmbeddedState::open(&config.store.state_dir.join("uploads"))?),
        Some(redis) => {
            let r = RedisState::connect(redis)?;
            let state = UploadState::Redis(r);
            match state.ping().await {
                Ok(()) => tracing::info!(addr = %redis.addr_for_logs(), "resumable state in Redis"),
                Err(e) => tracing::error!(
                    addr = %redis.addr_for_logs(),
                    error = %e,
                    "REDIS IS NOT REACHABLE: resumable uploads answer 503 until it is; plain uploads and downloads work; reconnecting by itself"
                ),
            }
            state
        }
    })
}

/// The store of finished files the configuration names.
async fn open_store(config: &Config, local: LocalStore, upload_state: &UploadState) -> Result<Store, StartupError> {
    match (config.store.backend, &config.s3) {
        #[cfg(feature = "s3")]
        (crate::config::StoreBackend::S3, Some(s3)) => {
            if config.redis.is_none() {
                tracing::warn!(
                    "StoreBackend = \"s3\" without RedisAddr: run one instance only; with several, set RedisAddr so resumable uploads, commit locks and bans are shared"
                );
            }
            let locks: Arc<dyn crate::store::KeyLocks> = Arc::new(upload_state.clone());
            let bucket = crate::store::s3::S3Store::connect(s3, locks, local).await?;
            tracing::info!(bucket = %s3.bucket, prefix = %s3.prefix, endpoint = s3.endpoint.as_deref().unwrap_or("AWS"), "files in the bucket");
            Ok(Store::S3(bucket))
        }
        _ => {
            let _ = upload_state;
            Ok(Store::Local(local))
        }
    }
}

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// TCP.
    Tcp(TcpListener),
    /// A Unix socket (removed when dropped).
    Unix(listener::UnixSocket),
}

/// Accepts connections until `shutdown`, then drains them up to [`DRAIN_DEADLINE`].
pub async fn serve(
    listener: Listener,
    state: AppState,
    shutdown: impl Future<Output = ()>,
    abort_uploads: CancellationToken,
) {
    let config = state.config();
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.limits.read_timeout)
        .max_buf_size(READ_BUF_BYTES)
        .max_headers(MAX_HEADERS)
        // A client may shut down its sending side once its request is out (`nc -N`, scripts)
        // and still wait for the answer: without this, hyper takes that EOF for a lost client,
        // drops the answer, and a stored PUT looks failed. A body cut short by EOF is still a
        // broken-off upload, a client that is really gone shows when the answer is written (or
        // after WriteTimeout), and the request's work runs in its own task either way.
        .half_close(true)
        .keep_alive(true);
    let write_timeout = config.limits.write_timeout;
    let reads = Arc::new(ReadShare::default());
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok(Accepted::Tcp(stream, peer)) => {
                let _ = stream.set_nodelay(true);
                let stream = reads.wrap(ZeroCopy::new(stream));
                spawn_connection(&builder, &graceful, stream, Some(peer), state.clone(), write_timeout);
            }
            Ok(Accepted::Unix(stream)) => {
                let stream = reads.wrap(ZeroCopy::new(stream));
                spawn_connection(&builder, &graceful, stream, None, state.clone(), write_timeout)
            }
            Err(e) => {
                // EMFILE and friends: back off, never end the server.
                tracing::warn!(error = %e, "accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    drop(listener);
    tracing::info!(
        "shutting down: no new connections; waiting up to {}s for running requests",
        DRAIN_DEADLINE.as_secs()
    );
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    tokio::select! {
        () = &mut drained => tracing::info!("all connections closed"),
        () = tokio::time::sleep(DRAIN_DEADLINE) => {
            tracing::warn!("drain deadline passed; saving unfinished uploads for resumption");
            abort_uploads.cancel();
            tokio::select! {
                () = &mut drained => tracing::info!("all connections closed"),
                () = tokio::time::sleep(Duration::from_secs(5)) => tracing::warn!("dropping the remaining connections"),
            }
        }
    }
}

enum Accepted {
    Tcp(tokio::net::TcpStream, IpAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, a)| Accepted::Tcp(s, a.ip().to_canonical())),
        Listener::Unix(u) => u.listener.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

fn spawn_connection<I>(
    builder: &http1::Builder,
    graceful: &GracefulShutdown,
    io: I,
    peer: Option<IpAddr>,
    state: AppState,
    write_timeout: Duration,
) where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut io = TimeoutStream::new(io);
    io.set_write_timeout(Some(write_timeout));
    // Interim responses (104 of the resumable-upload draft) that handlers queue.
    let interim = Interim::default();
    let io = InterimStream::new(Box::pin(io), interim.clone());
    let service = service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        let state = state.clone();
        if request.version() == hyper::Version::HTTP_11 {
            request.extensions_mut().insert(interim.clone());
        }
        async move { Ok::<_, Infallible>(handle(state, peer, request).await) }
    });
    let connection = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(client = ?peer, error = %e, "connection ended with an error");
            if let Some(status) = parser_answer(&e) {
                log_parser_answer(peer, status);
            }
        }
    });
}

/// The status hyper answered by itself, when it refused to parse a request (malformed
/// request line or header: 400; head over `READ_BUF_BYTES` or `MAX_HEADERS` headers: 431; a
/// target too long for its parser: 414). None when it sent nothing.
fn parser_answer(e: &hyper::Error) -> Option<u16> {
    if e.is_parse_too_large() {
        // Parse::UriTooLong and Parse::TooLarge: told apart only by their text.
        Some(if e.to_string().starts_with("URI too long") {
            414
        } else {
            431
        })
    } else if e.is_parse() && !e.is_parse_version_h2() {
        Some(400)
    } else {
        None
    }
}

/// The access line of an answer hyper made without calling the handler: the request was
/// never parsed, so there is no method or path to log (and no Origin to answer with CORS),
/// and no start time (`ms=0`).
fn log_parser_answer(peer: Option<IpAddr>, status: u16) {
    crate::metrics::request_done("-", status, Duration::ZERO);
    tracing::info!(
        target: "access",
        client = %peer.map_or_else(|| "unix".to_string(), |ip| ip.to_string()),
        method = "-",
        path = "-",
        status,
        bytes_in = 0,
        bytes_out = 0,
        ms = 0,
        "request refused by the HTTP parser"
    );
}

/// Registers for SIGTERM and SIGINT now (so a signal that comes during start-up is not
/// lost to the default action) and returns a future that completes on either.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    })
}
