//! Embedded upload state: one JSON file per upload in `StateDir/uploads/`,
//! replaced atomically (write, fsync, rename, fsync the folder), so it survives restarts and
//! `kill -9`. Locks live in this process: the embedded state is for one instance; several
//! instances sharing a store need Redis.

use std::collections::HashMap;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Concat, LockToken, StateError, UploadRecord, random_id, valid_id};

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct EmbeddedState {
    dir: PathBuf,
    locks: Arc<Mutex<HashMap<String, Lock>>>,
    /// Slot (path) → its unfinished upload; rebuilt from the records at open.
    slots: Arc<Mutex<HashMap<String, String>>>,
}

#[derive(Debug)]
struct Lock {
    token: String,
    stop: bool,
}

impl EmbeddedState {
    /// Opens (creating) the state folder, removing the temporaries of writes that a crash
    /// cut short (one instance owns this folder: no write is under way now).
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        DirBuilder::new().recursive(true).mode(0o750).create(dir)?;
        for entry in fs::read_dir(dir)?.flatten() {
            let name = entry.file_name();
            if name.to_str().is_some_and(|n| n.starts_with('.') && n.ends_with(".tmp")) {
                let _ = fs::remove_file(entry.path());
            }
        }
        // The newest upload of each slot holds it, as when they were created.
        let mut records: Vec<UploadRecord> = fs::read_dir(dir)?
            .flatten()
            .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".json")))
            .filter_map(|e| serde_json::from_slice(&fs::read(e.path()).ok()?).ok())
            .filter(|r: &UploadRecord| r.concat == Concat::None)
            .collect();
        records.sort_by_key(|r| r.created_unix);
        let slots = records.into_iter().map(|r| (r.key, r.id)).collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            locks: Arc::default(),
            slots: Arc::new(Mutex::new(slots)),
        })
    }

    fn path(&self, id: &str) -> Result<PathBuf, StateError> {
        if !valid_id(id) {
            return Err(StateError::Corrupt("invalid upload id".into()));
        }
        Ok(self.dir.join(format!("{id}.json")))
    }

    pub(super) async fn get(&self, id: &str) -> Result<Option<UploadRecord>, StateError> {
        let path = self.path(id)?;
        blocking(move || match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StateError::Corrupt(e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        })
        .await
    }

    pub(super) async fn put(&self, record: &UploadRecord, _ttl: Duration) -> Result<(), StateError> {
        let path = self.path(&record.id)?;
        let dir = self.dir.clone();
        let bytes = serde_json::to_vec(record).map_err(|e| StateError::Corrupt(e.to_string()))?;
        blocking(move || {
            let tmp = dir.join(format!(".{}.tmp", random_id()));
            let result = (|| {
                let mut f = OpenOptions::new().write(true).create_new(true).mode(0o640).open(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                crate::fault::point("state.put.rename")?;
                fs::rename(&tmp, &path)?;
                fs::File::open(&dir)?.sync_all()
            })();
            if result.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            result.map_err(StateError::from)
        })
        .await
    }

    pub(super) async fn delete(&self, id: &str) -> Result<(), StateError> {
        let path = self.path(id)?;
        blocking(move || match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        })
        .await
    }

    pub(super) async fn expired(&self, now_unix: u64) -> Result<Vec<String>, StateError> {
        let dir = self.dir.clone();
        blocking(move || {
            let mut out = Vec::new();
            for entry in fs::read_dir(&dir)?.flatten() {
                let name = entry.file_name();
                let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                    continue;
                };
                let Ok(bytes) = fs::read(entry.path()) else { continue };
                match serde_json::from_slice::<UploadRecord>(&bytes) {
                    Ok(r) if r.expired(now_unix) => out.push(id.to_string()),
                    Ok(_) => {}
                    Err(_) => out.push(id.to_string()),
                }
            }
            Ok(out)
        })
        .await
    }

    pub(super) async fn claim_slot(&self, key: &str, id: &str, _ttl: Duration) -> Result<Option<String>, StateError> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        Ok(slots.insert(key.to_string(), id.to_string()))
    }

    pub(super) async fn touch_slot(&self, _key: &str, _id: &str, _ttl: Duration) -> Result<(), StateError> {
        Ok(())
    }

    pub(super) async fn release_slot(&self, key: &str, id: &str) -> Result<(), StateError> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.get(key).is_some_and(|holder| holder == id) {
            slots.remove(key);
        }
        Ok(())
    }

    pub(super) async fn try_lock(&self, id: &str) -> Result<Option<LockToken>, StateError> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks.contains_key(id) {
            return Ok(None);
        }
        let token = random_id();
        locks.insert(
            id.to_string(),
            Lock {
                token: token.clone(),
                stop: false,
            },
        );
        Ok(Some(LockToken(token)))
    }

    pub(super) async fn unlock(&self, id: &str, token: &LockToken) -> Result<(), StateError> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks.get(id).is_some_and(|l| l.token == token.0) {
            locks.remove(id);
        }
        Ok(())
    }

    pub(super) async fn request_stop(&self, id: &str) -> Result<(), StateError> {
        if let Some(lock) = self.locks.lock().unwrap_or_else(|e| e.into_inner()).get_mut(id) {
            lock.stop = true;
        }
        Ok(())
    }

    pub(super) async fn stop_requested(&self, id: &str, token: &LockToken) -> Result<bool, StateError> {
        let locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        Ok(locks.get(id).is_none_or(|l| l.token != token.0 || l.stop))
    }

    pub(super) async fn renew_lock(&self, id: &str, token: &LockToken) -> Result<bool, StateError> {
        let locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        Ok(locks.get(id).is_some_and(|l| l.token == token.0))
    }

    pub(super) async fn ping(&self) -> Result<(), StateError> {
        Ok(())
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StateError> + Send + 'static,
) -> Result<T, StateError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StateError::Io(std::io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    //! The embedded state through [`UploadState::Embedded`]: records on disk, locks in memory.

    use super::*;
    use crate::state::{Concat, UploadKind, UploadState};
    use crate::store::PartialHandle;

    const ID: &str = "0123456789abcdef0123456789abcdef";
    const OTHER_ID: &str = "fedcba9876543210fedcba9876543210";
    const HOUR: Duration = Duration::from_secs(3600);

    fn state(dir: &Path) -> UploadState {
        UploadState::Embedded(EmbeddedState::open(dir).unwrap())
    }

    fn record(id: &str, expires_unix: u64) -> UploadRecord {
        UploadRecord {
            id: id.to_string(),
            kind: UploadKind::Tus,
            key: "a/b c.txt".into(),
            length: Some(1000),
            offset: 400,
            content_type: "text/plain".into(),
            metadata: Some("filename YS50eHQ=".into()),
            created_unix: 1_700_000_000,
            expires_unix,
            concat: Concat::Final(vec![OTHER_ID.to_string(), ID.to_string()]),
            handle: PartialHandle::Local,
            completed: false,
        }
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_record_put_is_got_back_whole_with_handle_and_concat() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        assert_eq!(state.get(ID).await.unwrap(), None);
        let mut r = record(ID, u64::MAX);
        state.put(&r, HOUR).await.unwrap();
        assert_eq!(state.get(ID).await.unwrap(), Some(r.clone()));
        r.offset = 1000;
        r.concat = Concat::Partial;
        r.length = None;
        state.put(&r, HOUR).await.unwrap();
        assert_eq!(state.get(ID).await.unwrap(), Some(r), "replaced");
        assert_eq!(files_in(dir.path()), vec![format!("{ID}.json")], "no temporary left");
    }

    #[tokio::test]
    async fn a_deleted_record_is_gone_and_deleting_again_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        state.put(&record(ID, u64::MAX), HOUR).await.unwrap();
        state.put(&record(OTHER_ID, u64::MAX), HOUR).await.unwrap();
        state.delete(ID).await.unwrap();
        assert_eq!(state.get(ID).await.unwrap(), None);
        assert!(state.get(OTHER_ID).await.unwrap().is_some(), "only that one");
        state.delete(ID).await.unwrap();
    }

    #[tokio::test]
    async fn expired_lists_expired_and_unreadable_records_but_not_fresh_ones() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let now = 1_800_000_000;
        state.put(&record(ID, now - 1), HOUR).await.unwrap();
        state.put(&record(OTHER_ID, now), HOUR).await.unwrap();
        let fresh_later = "00000000000000000000000000000001";
        state.put(&record(fresh_later, now + 3600), HOUR).await.unwrap();
        let unreadable = "00000000000000000000000000000002";
        fs::write(dir.path().join(format!("{unreadable}.json")), b"{\"id\": \"0000").unwrap();
        let mut expired = state.expired(now).await.unwrap();
        expired.sort();
        assert_eq!(expired, vec![unreadable.to_string(), ID.to_string()]);
        assert_eq!(state.expired(now - 10).await.unwrap(), vec![unreadable.to_string()]);
    }

    #[tokio::test]
    async fn an_invalid_id_is_refused_before_it_reaches_a_file_name() {
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("uploads");
        let state = state(&dir);
        let mut evil = record(ID, u64::MAX);
        evil.id = "../x".into();
        assert!(matches!(state.put(&evil, HOUR).await, Err(StateError::Corrupt(_))));
        assert!(matches!(state.get("../x").await, Err(StateError::Corrupt(_))));
        assert!(matches!(state.delete("../x").await, Err(StateError::Corrupt(_))));
        for bad in [
            "",
            "0123456789ABCDEF0123456789ABCDEF",
            "x.json",
            "0123/../../../etc/passwd",
        ] {
            evil.id = bad.into();
            assert!(state.put(&evil, HOUR).await.is_err(), "{bad:?}");
        }
        assert!(files_in(&dir).is_empty());
        assert_eq!(
            files_in(parent.path()),
            vec!["uploads".to_string()],
            "nothing beside it"
        );
    }

    #[tokio::test]
    async fn a_record_survives_reopening_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let r = record(ID, u64::MAX);
        state(dir.path()).put(&r, HOUR).await.unwrap();
        let reopened = state(dir.path());
        assert_eq!(reopened.get(ID).await.unwrap(), Some(r));
    }

    #[tokio::test]
    async fn a_torn_temporary_left_by_a_crash_is_ignored_and_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let r = record(ID, 100);
        state(dir.path()).put(&r, HOUR).await.unwrap();
        // A crash while replacing the record: the temporary is half written, the record whole.
        fs::write(dir.path().join(format!(".{OTHER_ID}.tmp")), b"{\"id\":\"0123").unwrap();
        let reopened = state(dir.path());
        assert_eq!(reopened.get(ID).await.unwrap(), Some(r));
        assert_eq!(reopened.expired(1_000).await.unwrap(), vec![ID.to_string()]);
        assert_eq!(reopened.get(OTHER_ID).await.unwrap(), None);
        assert_eq!(files_in(dir.path()), vec![format!("{ID}.json")]);
    }

    #[tokio::test]
    async fn a_held_lock_cannot_be_taken_twice_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let token = state.try_lock(ID).await.unwrap().unwrap();
        assert_eq!(state.try_lock(ID).await.unwrap(), None);
        assert!(
            state.try_lock(OTHER_ID).await.unwrap().is_some(),
            "locks are per upload"
        );
        state.unlock(ID, &token).await.unwrap();
        let again = state.try_lock(ID).await.unwrap().unwrap();
        assert_ne!(again, token, "a fresh token each time");
    }

    #[tokio::test]
    async fn request_stop_is_seen_by_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let token = state.try_lock(ID).await.unwrap().unwrap();
        assert!(!state.stop_requested(ID, &token).await.unwrap());
        state.request_stop(ID).await.unwrap();
        assert!(state.stop_requested(ID, &token).await.unwrap());
        // A stranger's token, or a lock no longer held, also says stop.
        let stranger = LockToken(random_id());
        assert!(state.stop_requested(ID, &stranger).await.unwrap());
        assert!(state.stop_requested(OTHER_ID, &stranger).await.unwrap());
        // The stop request belongs to that lock: the next holder starts clean.
        state.unlock(ID, &token).await.unwrap();
        let next = state.try_lock(ID).await.unwrap().unwrap();
        assert!(!state.stop_requested(ID, &next).await.unwrap());
    }

    #[tokio::test]
    async fn unlock_with_a_wrong_token_keeps_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let token = state.try_lock(ID).await.unwrap().unwrap();
        state.unlock(ID, &LockToken(random_id())).await.unwrap();
        assert_eq!(state.try_lock(ID).await.unwrap(), None);
        assert!(state.renew_lock(ID, &token).await.unwrap());
    }

    #[tokio::test]
    async fn renew_lock_is_true_for_the_holder_only() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        let token = state.try_lock(ID).await.unwrap().unwrap();
        assert!(state.renew_lock(ID, &token).await.unwrap());
        assert!(!state.renew_lock(ID, &LockToken(random_id())).await.unwrap());
        assert!(!state.renew_lock(OTHER_ID, &token).await.unwrap());
        state.unlock(ID, &token).await.unwrap();
        assert!(!state.renew_lock(ID, &token).await.unwrap(), "released");
        assert_eq!(state.lock_renewal(), None, "embedded locks do not expire");
    }

    #[tokio::test]
    async fn the_single_instance_always_holds_every_lease() {
        let dir = tempfile::tempdir().unwrap();
        let state = state(dir.path());
        assert!(state.lease("sweep", "one", HOUR).await.unwrap());
        assert!(state.lease("sweep", "another", HOUR).await.unwrap());
        assert!(state.lease("retention", "one", Duration::ZERO).await.unwrap());
    }
}
