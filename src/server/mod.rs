//! The listener and connection loop: hyper's HTTP/1.1 connections with a header-read timeout
//! and limits on header size and count, graceful shutdown on SIGTERM/SIGINT, and the
//! periodic sweep of stale temporaries.

pub mod listener;

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{AppState, handle};
use crate::store::{LocalStore, StoreError};

/// Largest request head (request line and headers) accepted, in bytes; larger → 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
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
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// What we tried.
        addr: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// Opens the store, binds the listener and serves until `shutdown` completes.
pub async fn run(config: Arc<Config>, shutdown: impl Future<Output = ()>) -> Result<(), StartupError> {
    let store = LocalStore::open(&config.store_dir, &config.upload_sub_dir, config.buffer_bytes)?;
    let listener = listener::bind_tcp(&config.listen).await?;
    let local = listener.local_addr().map_err(|source| StartupError::Bind {
        addr: "listener".into(),
        source,
    })?;
    tracing::info!("listening on {local}");
    tracing::info!(
        store = %config.store_dir.display(),
        prefix = %config.url_prefix(),
        max_upload_bytes = config.max_upload_bytes,
        "serving uploads"
    );
    let state = AppState {
        config: Arc::clone(&config),
        store: store.clone(),
    };
    let sweeper = tokio::spawn(sweep_loop(store, config.cleanup_interval, config.upload_expiry));
    serve(listener, state, shutdown).await;
    sweeper.abort();
    Ok(())
}

/// Accepts connections until `shutdown`, then drains them up to [`DRAIN_DEADLINE`].
pub async fn serve(listener: TcpListener, state: AppState, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.read_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off, never end the server.
                    tracing::warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let service = service_fn(move |request| {
            let state = state.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(state, peer, request).await) }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(client = %peer.ip(), error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(
        "shutting down: no new connections; waiting up to {}s for running requests",
        DRAIN_DEADLINE.as_secs()
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(DRAIN_DEADLINE) => tracing::warn!("drain deadline passed; dropping the remaining connections"),
    }
}

/// Removes stale temporaries at start and every `interval`.
async fn sweep_loop(store: LocalStore, interval: Duration, max_age: Duration) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        ticker.tick().await;
        match store.sweep_temporaries(max_age).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "swept stale temporaries"),
            Err(e) => tracing::warn!(error = %e, "sweeping temporaries failed"),
        }
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
