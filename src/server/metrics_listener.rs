//! The metrics listener: `GET /metrics` (Prometheus text) and `GET /health` (200 when the
//! store can take a file and the upload state answers, 503 with the reason otherwise).

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::app::AppState;
use crate::metrics;

/// Serves the metrics listener until aborted.
pub async fn serve(listener: TcpListener, handle: PrometheusHandle, state: AppState) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (handle, state) = (handle.clone(), state.clone());
        let service = service_fn(move |request: Request<hyper::body::Incoming>| {
            let (handle, state) = (handle.clone(), state.clone());
            async move { Ok::<_, Infallible>(answer(&handle, &state, &request).await) }
        });
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn answer<B>(handle: &PrometheusHandle, state: &AppState, request: &Request<B>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET only\n".into(),
            "text/plain; charset=utf-8",
        );
    }
    match request.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            metrics::render(handle),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        "/health" => match health(state).await {
            Ok(()) => text(StatusCode::OK, "ok\n".into(), "text/plain; charset=utf-8"),
            Err(reason) => {
                tracing::warn!(%reason, "health check failed");
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("unhealthy: {reason}\n"),
                    "text/plain; charset=utf-8",
                )
            }
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n".into(), "text/plain; charset=utf-8"),
    }
}

/// The upload state answers (Redis, where set) and the store can take a file.
async fn health(state: &AppState) -> Result<(), String> {
    state.upload_state().ping().await.map_err(|e| e.to_string())?;
    state.store().probe().await
}

fn text(status: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}
