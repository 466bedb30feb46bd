//! The one loop that takes a request body into the store, for whole-file PUTs and for appends
//! to resumable uploads alike: frame by frame into a [`Staged`] upload (which writes in
//! batches while the next frames arrive), bounded by a byte limit, and watched for the things
//! that end a body early: the client going away, no bytes for ReadTimeout, the server shutting
//! down, and (for an upload whose lock is held) another request asking for the upload.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio_util::sync::CancellationToken;

use super::Ended;
use super::lock::Held;
use crate::metrics;
use crate::store::{Staged, StoreError, TakeError};

/// How often a lock holder looks whether someone asked it to stop.
const STOP_POLL: Duration = Duration::from_millis(200);

/// What watches a body while it is received.
#[derive(Debug, Clone, Copy)]
pub struct Watch<'a> {
    /// Longest pause between two frames.
    pub read_timeout: Duration,
    /// Cancelled when the server gives up draining.
    pub shutdown: &'a CancellationToken,
    /// The lock of the upload being appended to, polled for stop requests.
    pub holder: Option<&'a Held>,
}

/// Takes `body` into `staged` until it ends, goes past `limit` bytes in all, or one of the
/// watched things happens. Write failures are errors; everything else is an [`Ended`]. What
/// was taken stays in `staged` for the caller to commit, keep or discard.
pub async fn receive<B>(staged: &mut Staged, body: &mut B, limit: u64, watch: Watch<'_>) -> Result<Ended, StoreError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut idle_since = tokio::time::Instant::now();
    let mut next_poll = idle_since + STOP_POLL;
    loop {
        let wake = match watch.holder {
            Some(_) => next_poll,
            None => idle_since + watch.read_timeout,
        };
        let frame = tokio::select! {
            frame = body.frame() => frame,
            () = tokio::time::sleep_until(wake) => {
                // A quiet client must not hold an upload for ReadTimeout: a holder looks every
                // STOP_POLL whether another request wants it.
                if let Some(held) = watch.holder {
                    next_poll = tokio::time::Instant::now() + STOP_POLL;
                    if held.must_stop().await {
                        return Ok(Ended::Stopped);
                    }
                }
                if idle_since.elapsed() >= watch.read_timeout {
                    return Ok(Ended::TimedOut);
                }
                continue;
            }
            () = watch.shutdown.cancelled() => return Ok(Ended::ShuttingDown),
        };
        idle_since = tokio::time::Instant::now();
        let frame = match frame {
            None => return Ok(Ended::Complete),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "request body broken off");
                return Ok(Ended::BrokenOff);
            }
            Some(Ok(frame)) => frame,
        };
        let before = staged.len();
        let taken = staged.take_frame(frame, body, limit).await;
        metrics::upload_bytes(staged.len() - before);
        match taken {
            Ok(()) => {}
            Err(TakeError::TooLong) => return Ok(Ended::TooLong),
            Err(TakeError::BrokenOff) => {
                tracing::debug!("request body broken off");
                return Ok(Ended::BrokenOff);
            }
            Err(TakeError::Store(e)) => return Err(e),
        }
        if let Some(held) = watch.holder
            && tokio::time::Instant::now() >= next_poll
        {
            next_poll = tokio::time::Instant::now() + STOP_POLL;
            if held.must_stop().await {
                return Ok(Ended::Stopped);
            }
        }
    }
}
