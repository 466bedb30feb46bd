//! Upload state: what the server remembers of unfinished resumable uploads (tus and
//! X-Session-Token), and the per-upload lock that keeps one writer at a time.
//!
//! Two backends behind one type, [`UploadState`]: embedded (the default: one JSON file per
//! upload under StateDir, written atomically, locks in this process) and Redis (records,
//! locks, leases and bans shared by every instance, so several servers behind a balancer act
//! as one). The bytes themselves live in the store's partial-upload seam
//! ([`crate::store::Partials`]), found again through the record's [`PartialHandle`]; the
//! record's `offset` only ever moves forward after those bytes were made durable, so the
//! offset is the durable byte count.
//!
//! Locks expire by themselves (Redis: after [`redis::LOCK_TTL`] by default) unless renewed: a holder
//! renews while it works ([`UploadState::renew_lock`]), so a crashed instance cannot hold an
//! upload for long. A lease ([`UploadState::lease`]) names one instance the leader of
//! periodic work.

pub mod embedded;
mod key_locks;
pub mod redis;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::PartialHandle;

/// Why a state operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state backend cannot be reached now (Redis down): answer 503 and retry later.
    #[error("upload state unavailable: {0}")]
    Unavailable(String),
    /// A local I/O failure of the embedded state.
    #[error("upload state I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A record that cannot be read.
    #[error("corrupt upload record: {0}")]
    Corrupt(String),
}

/// Which protocol created an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UploadKind {
    /// tus 1.0.
    Tus,
    /// The seed's X-Session-Token scheme.
    Session,
    /// The IETF draft "Resumable Uploads for HTTP".
    Draft,
}

/// tus concatenation role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Concat {
    /// A normal upload.
    #[default]
    None,
    /// A part, to be concatenated into a final upload.
    Partial,
    /// Made of these partial uploads (ids), in order.
    Final(Vec<String>),
}

/// One unfinished upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Random id (tus) or a hash of session token and path (session scheme).
    pub id: String,
    /// Which protocol.
    pub kind: UploadKind,
    /// The decoded path it will be stored at when complete.
    pub key: String,
    /// Total size; `None` while a tus creation-defer-length upload has not said it.
    pub length: Option<u64>,
    /// Bytes durably received.
    pub offset: u64,
    /// Content type for the stored file.
    pub content_type: String,
    /// The raw tus Upload-Metadata, returned on HEAD.
    #[serde(default)]
    pub metadata: Option<String>,
    /// Creation time, unix seconds.
    pub created_unix: u64,
    /// When it expires if unfinished, unix seconds.
    pub expires_unix: u64,
    /// Concatenation role.
    #[serde(default)]
    pub concat: Concat,
    /// Where the store keeps the upload's bytes.
    #[serde(default)]
    pub handle: PartialHandle,
    /// Finished and stored: a record kept after the commit (no bytes) so that the upload
    /// resource still answers (the IETF draft's offset retrieval after a lost final answer).
    #[serde(default)]
    pub completed: bool,
}

impl UploadRecord {
    /// Whether the upload has expired at `now_unix`.
    pub fn expired(&self, now_unix: u64) -> bool {
        now_unix > self.expires_unix
    }
}

/// A lock on one upload, held by one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockToken(pub String);

/// The state backend in use.
#[derive(Debug, Clone)]
pub enum UploadState {
    /// Files under the store, locks in this process.
    Embedded(embedded::EmbeddedState),
    /// Redis, shared by all instances.
    Redis(redis::RedisState),
}

macro_rules! dispatch {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            UploadState::Embedded($s) => $e,
            UploadState::Redis($s) => $e,
        }
    };
}

impl UploadState {
    /// The record of `id`, if any.
    pub async fn get(&self, id: &str) -> Result<Option<UploadRecord>, StateError> {
        dispatch!(self, s => s.get(id).await)
    }

    /// Creates or replaces a record; it expires by itself after `ttl` where the backend can.
    pub async fn put(&self, record: &UploadRecord, ttl: Duration) -> Result<(), StateError> {
        self.failpoint("state.put")?;
        dispatch!(self, s => s.put(record, ttl).await)
    }

    /// Removes a record.
    pub async fn delete(&self, id: &str) -> Result<(), StateError> {
        self.failpoint("state.delete")?;
        dispatch!(self, s => s.delete(id).await)
    }

    /// Failpoint `name` (test builds), failing as this backend fails: Redis unreachable, or
    /// the embedded state's I/O error.
    fn failpoint(&self, name: &str) -> Result<(), StateError> {
        crate::fault::point(name).map_err(|e| match self {
            UploadState::Embedded(_) => StateError::Io(e),
            UploadState::Redis(_) => StateError::Unavailable(e.to_string()),
        })
    }

    /// Ids of records that expired before `now_unix` (the sweeper removes them and their
    /// bytes). Redis expires records by itself and returns none here.
    pub async fn expired(&self, now_unix: u64) -> Result<Vec<String>, StateError> {
        dispatch!(self, s => s.expired(now_unix).await)
    }

    /// Makes `id` the unfinished upload of the slot `key` (the path it will be stored at), for
    /// `ttl` where the backend expires things; returns the slot's previous upload, if another.
    pub async fn claim_slot(&self, key: &str, id: &str, ttl: Duration) -> Result<Option<String>, StateError> {
        let previous = dispatch!(self, s => s.claim_slot(key, id, ttl).await)?;
        Ok(previous.filter(|p| p != id))
    }

    /// Keeps `id`'s claim on the slot `key` for another `ttl`, if it still has it.
    pub async fn touch_slot(&self, key: &str, id: &str, ttl: Duration) -> Result<(), StateError> {
        dispatch!(self, s => s.touch_slot(key, id, ttl).await)
    }

    /// Gives up `id`'s claim on the slot `key`, if it has it.
    pub async fn release_slot(&self, key: &str, id: &str) -> Result<(), StateError> {
        dispatch!(self, s => s.release_slot(key, id).await)
    }

    /// Takes the lock of `id` if it is free.
    pub async fn try_lock(&self, id: &str) -> Result<Option<LockToken>, StateError> {
        dispatch!(self, s => s.try_lock(id).await)
    }

    /// Releases a lock taken with [`Self::try_lock`].
    pub async fn unlock(&self, id: &str, token: &LockToken) -> Result<(), StateError> {
        dispatch!(self, s => s.unlock(id, token).await)
    }

    /// Asks the holder of `id`'s lock to save and stop (tusd's `requestUnlock`).
    pub async fn request_stop(&self, id: &str) -> Result<(), StateError> {
        dispatch!(self, s => s.request_stop(id).await)
    }

    /// Whether someone asked the holder of `id`'s lock to stop (or the lock is no longer
    /// held with `token`).
    pub async fn stop_requested(&self, id: &str, token: &LockToken) -> Result<bool, StateError> {
        dispatch!(self, s => s.stop_requested(id, token).await)
    }

    /// Extends a held lock's life; false when it is no longer held with `token`.
    pub async fn renew_lock(&self, id: &str, token: &LockToken) -> Result<bool, StateError> {
        dispatch!(self, s => s.renew_lock(id, token).await)
    }

    /// How often a lock holder must renew its lock (None: locks do not expire).
    pub fn lock_renewal(&self) -> Option<Duration> {
        match self {
            UploadState::Embedded(_) => None,
            UploadState::Redis(r) => Some(r.lock_ttl() / 3),
        }
    }

    /// Takes or keeps the lease `name` for `holder` for `ttl`: true when `holder` has it now.
    /// The embedded state serves one instance, which always has it.
    pub async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StateError> {
        match self {
            UploadState::Embedded(_) => Ok(true),
            UploadState::Redis(r) => r.lease(name, holder, ttl).await,
        }
    }

    /// Gives up the lease `name` if `holder` has it (so another instance takes over at once).
    pub async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StateError> {
        match self {
            UploadState::Embedded(_) => Ok(()),
            UploadState::Redis(r) => r.release_lease(name, holder).await,
        }
    }

    /// The Redis backend, when state is shared.
    pub fn as_redis(&self) -> Option<&redis::RedisState> {
        match self {
            UploadState::Redis(r) => Some(r),
            UploadState::Embedded(_) => None,
        }
    }

    /// Whether the backend answers now (for /health).
    pub async fn ping(&self) -> Result<(), StateError> {
        dispatch!(self, s => s.ping().await)
    }
}

/// A random id: 32 lowercase hex digits (128 bits: an unguessable capability).
pub fn random_id() -> String {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    hex::encode(bytes)
}

/// Whether `id` looks like one of ours (hex, 32 or 64 digits): anything else is refused
/// before it reaches a file name or a Redis key.
pub fn valid_id(id: &str) -> bool {
    (id.len() == 32 || id.len() == 64) && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        let id = random_id();
        assert!(valid_id(&id));
        assert_ne!(id, random_id());
        for bad in ["", "../x", &"A".repeat(32), &"g".repeat(32), &"a".repeat(31)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
