//! One writer per upload at a time. A request that wants an upload takes its lock; when
//! another request holds it, the newcomer asks the holder to save what it has and stop
//! (tusd's `requestUnlock`) and waits up to [`LOCK_WAIT`] for it. While held, a lock that can
//! expire (Redis) is renewed in the background, so a long commit (hashing and renaming a
//! large file) never outlives its lock, while a crashed instance's lock expires soon.

use std::time::{Duration, Instant};

use super::EngineError;
use crate::state::{LockToken, UploadState};

/// How long a writer waits for the current holder of an upload's lock to stop.
const LOCK_WAIT: Duration = Duration::from_secs(5);
/// Pause between two tries to take a lock.
const RETRY_PAUSE: Duration = Duration::from_millis(25);

/// A held upload lock. Release it with [`crate::resumable::Engine::unlock`] (or hold it
/// through [`crate::resumable::Engine::with_lock`]); dropped without that (a cancelled
/// future, a panic), its renewal stops and its release is started in the background.
#[derive(Debug)]
pub struct Held {
    id: String,
    /// `None` once released.
    token: Option<LockToken>,
    state: UploadState,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        if let (Some(token), Ok(runtime)) = (self.token.take(), tokio::runtime::Handle::try_current()) {
            let (state, id) = (self.state.clone(), std::mem::take(&mut self.id));
            runtime.spawn(async move {
                if let Err(e) = state.unlock(&id, &token).await {
                    tracing::warn!(error = %e, "cannot release a dropped upload lock; it will expire");
                }
            });
        }
    }
}

impl Held {
    /// The upload id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether another request asked for the upload (or the lock can no longer be checked:
    /// then save and stop rather than risk two writers).
    pub(super) async fn must_stop(&self) -> bool {
        let Some(token) = &self.token else { return true };
        match self.state.stop_requested(&self.id, token).await {
            Ok(stop) => stop,
            Err(e) => {
                tracing::warn!(error = %e, "cannot check the upload lock; stopping this write");
                true
            }
        }
    }
}

/// Takes the lock of upload `id`, asking a current holder to stop and waiting up to
/// [`LOCK_WAIT`] for it to save and let go.
pub(super) async fn acquire(state: &UploadState, id: &str) -> Result<Held, EngineError> {
    let deadline = Instant::now() + LOCK_WAIT;
    let mut asked = false;
    loop {
        if let Some(token) = state.try_lock(id).await? {
            let renewer = state.lock_renewal().map(|every| {
                let (state, id, token) = (state.clone(), id.to_string(), token.clone());
                tokio::spawn(renew(state, id, token, every))
            });
            return Ok(Held {
                id: id.to_string(),
                token: Some(token),
                state: state.clone(),
                renewer,
            });
        }
        if !asked {
            state.request_stop(id).await?;
            asked = true;
        }
        if Instant::now() >= deadline {
            return Err(EngineError::Locked);
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Releases a lock (errors are logged: the lock expires by itself in Redis).
pub(super) async fn release(mut held: Held) {
    if let Some(renewer) = held.renewer.take() {
        renewer.abort();
    }
    if let Some(token) = held.token.take()
        && let Err(e) = held.state.unlock(&held.id, &token).await
    {
        tracing::warn!(error = %e, "cannot release an upload lock; it will expire");
    }
}

/// Renews a held lock every `every` until aborted (or until it is found lost).
async fn renew(state: UploadState, id: String, token: LockToken, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match state.renew_lock(&id, &token).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(upload = %id, "an upload lock was lost while held; its writer stops at its next check");
                return;
            }
            Err(e) => tracing::warn!(upload = %id, error = %e, "cannot renew an upload lock; retrying"),
        }
    }
}
