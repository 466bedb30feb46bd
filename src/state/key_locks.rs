//! [`KeyLocks`] over the upload state: the lock that serialises commits to one key where the
//! object store cannot refuse to replace an object by itself. It is an upload lock (Redis:
//! shared by every instance, renewed while held, gone with its holder's instance; embedded:
//! in this process) on an id derived from the key, so it never meets an upload's own lock.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{LockToken, StateError, UploadState};
use crate::store::{KeyGuard, KeyLocks, StoreError};

/// Longest wait for a key's commit lock (a commit holds it for a HEAD and a completion).
const WAIT: Duration = Duration::from_secs(30);
/// Pause between two tries.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// The lock id of a key: SHA-256 of `commit`, NUL and the key, as hex.
fn lock_id(key: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"commit\0");
    h.update(key.as_bytes());
    hex::encode(h.finalize())
}

fn store_error(e: StateError) -> StoreError {
    match e {
        StateError::Unavailable(reason) => StoreError::Unavailable(reason),
        other => StoreError::other(other.to_string()),
    }
}

/// A held commit lock: renewed while held, released when dropped.
struct Held {
    state: UploadState,
    id: String,
    token: LockToken,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
        let (state, id, token) = (self.state.clone(), std::mem::take(&mut self.id), self.token.clone());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = state.unlock(&id, &token).await {
                    tracing::warn!(error = %e, "cannot release a commit lock; it expires by itself");
                }
            });
        }
    }
}

impl KeyLocks for UploadState {
    fn lock<'a>(&'a self, key: &'a str) -> Pin<Box<dyn Future<Output = Result<KeyGuard, StoreError>> + Send + 'a>> {
        Box::pin(async move {
            let id = lock_id(key);
            let deadline = Instant::now() + WAIT;
            loop {
                if let Some(token) = self.try_lock(&id).await.map_err(store_error)? {
                    let renewer = self.lock_renewal().map(|every| {
                        let (state, id, token) = (self.clone(), id.clone(), token.clone());
                        tokio::spawn(async move {
                            loop {
                                tokio::time::sleep(every).await;
                                if !matches!(state.renew_lock(&id, &token).await, Ok(true)) {
                                    tracing::warn!("a commit lock could not be renewed");
                                }
                            }
                        })
                    });
                    let held = Held {
                        state: self.clone(),
                        id,
                        token,
                        renewer,
                    };
                    return Ok(KeyGuard::new(held));
                }
                if Instant::now() >= deadline {
                    return Err(StoreError::Unavailable(format!(
                        "the commit lock of {key} stayed taken for {}s",
                        WAIT.as_secs()
                    )));
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::embedded::EmbeddedState;

    #[tokio::test]
    async fn one_holder_per_key_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let state = UploadState::Embedded(EmbeddedState::open(dir.path()).unwrap());
        let guard = state.lock("a/b.jpg").await.unwrap();
        let id = lock_id("a/b.jpg");
        assert!(state.try_lock(&id).await.unwrap().is_none(), "held");
        let other = state.lock("a/c.jpg").await.unwrap();
        drop(other);
        let waiter = {
            let state = state.clone();
            tokio::spawn(async move { state.lock("a/b.jpg").await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiter.is_finished(), "a second holder waits");
        drop(guard);
        waiter.await.unwrap().unwrap();
        assert_ne!(lock_id("a/b.jpg"), lock_id("a/c.jpg"));
        assert!(crate::state::valid_id(&id), "a valid lock id");
    }
}
