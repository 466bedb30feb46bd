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

use super::{LockToken, StateError, UploadRecord, random_id, valid_id};

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct EmbeddedState {
    dir: PathBuf,
    locks: Arc<Mutex<HashMap<String, Lock>>>,
}

#[derive(Debug)]
struct Lock {
    token: String,
    stop: bool,
}

impl EmbeddedState {
    /// Opens (creating) the state folder.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        DirBuilder::new().recursive(true).mode(0o750).create(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            locks: Arc::default(),
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
