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

/// When an append stops to make what it took so far durable: once at least `bytes` arrived
/// and `every` passed since it started or last stopped.
#[derive(Debug, Clone, Copy)]
pub struct Checkpoint {
    /// Least bytes between two checkpoints.
    pub bytes: u64,
    /// Least time between two checkpoints.
    pub every: Duration,
}

/// Takes `body` into `staged` until it ends, goes past `limit` bytes in all, or one of the
/// watched things happens. Write failures are errors; everything else is an [`Ended`]. What
/// was taken stays in `staged` for the caller to commit, keep or discard.
pub async fn receive<B>(staged: &mut Staged, body: &mut B, limit: u64, watch: Watch<'_>) -> Result<Ended, StoreError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let ended = receive_until(staged, body, limit, watch, None).await?;
    Ok(ended.unwrap_or(Ended::Complete))
}

/// [`receive`], but returning `None` (the body not ended) when `checkpoint` is due, so the
/// caller can make the bytes durable and call again.
pub(super) async fn receive_until<B>(
    staged: &mut Staged,
    body: &mut B,
    limit: u64,
    watch: Watch<'_>,
    checkpoint: Option<Checkpoint>,
) -> Result<Option<Ended>, StoreError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let started = (tokio::time::Instant::now(), staged.len());
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
                        return Ok(Some(Ended::Stopped));
                    }
                }
                if idle_since.elapsed() >= watch.read_timeout {
                    return Ok(Some(Ended::TimedOut));
                }
                continue;
            }
            () = watch.shutdown.cancelled() => return Ok(Some(Ended::ShuttingDown)),
        };
        idle_since = tokio::time::Instant::now();
        let frame = match frame {
            None => return Ok(Some(Ended::Complete)),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "request body broken off");
                return Ok(Some(Ended::BrokenOff));
            }
            Some(Ok(frame)) => frame,
        };
        let before = staged.len();
        let taken = staged.take_frame(frame, body, limit).await;
        metrics::upload_bytes(staged.len() - before);
        match taken {
            Ok(()) => {}
            Err(TakeError::TooLong) => return Ok(Some(Ended::TooLong)),
            Err(TakeError::BrokenOff) => {
                tracing::debug!("request body broken off");
                return Ok(Some(Ended::BrokenOff));
            }
            Err(TakeError::Store(e)) => return Err(e),
        }
        if let Some(c) = checkpoint
            && staged.len() - started.1 >= c.bytes
            && started.0.elapsed() >= c.every
        {
            return Ok(None);
        }
        if let Some(held) = watch.holder
            && tokio::time::Instant::now() >= next_poll
        {
            next_poll = tokio::time::Instant::now() + STOP_POLL;
            if held.must_stop().await {
                return Ok(Some(Ended::Stopped));
            }
        }
    }
}
