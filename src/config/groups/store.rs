//! The local store: where files live, the I/O buffer, retries of transient errors, digests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::keys;
use crate::config::reader::Reader;
use crate::key::INTERNAL_DIR;

/// Where finished files live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreBackend {
    /// StoreDir/UploadSubDir on the local file system.
    Local,
    /// An S3-compatible bucket ([`crate::config::S3Settings`]).
    S3,
}

/// The store.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Where finished files live.
    pub backend: StoreBackend,
    /// Root of the local store.
    pub dir: PathBuf,
    /// URL prefix and folder under the store; empty = served at `/`.
    pub upload_sub_dir: String,
    /// Where the embedded state lives (records of unfinished resumable uploads in `uploads/`,
    /// the ban list in `bans.json`); StateDir, by default `<store_dir>/.hmac-file-server`.
    pub state_dir: PathBuf,
    /// I/O buffer per upload.
    pub buffer_bytes: usize,
    /// Retries of transient storage errors.
    pub max_retries: u32,
    /// Pause between retries.
    pub retry_delay: Duration,
    /// Retry GET's storage reads too.
    pub enable_get_retries: bool,
    /// Verify client digests and record SHA-256.
    pub checksum_verification: bool,
}

impl StoreSettings {
    /// Reads and checks the group's keys; problems go to the reader.
    pub(in crate::config) fn read(r: &mut Reader<'_>) -> Self {
        let backend = match r.text(&keys::STORE_BACKEND).to_ascii_lowercase().as_str() {
            "local" => StoreBackend::Local,
            "s3" if cfg!(feature = "s3") => StoreBackend::S3,
            "s3" => r.fail(
                &keys::STORE_BACKEND,
                "this build has no S3 support (built without the `s3` cargo feature)",
                StoreBackend::Local,
            ),
            other => r.fail(
                &keys::STORE_BACKEND,
                format!("`{other}` is not local or s3"),
                StoreBackend::Local,
            ),
        };
        let store_dir = PathBuf::from(r.text(&keys::STORE_DIR));
        if store_dir.as_os_str().is_empty() {
            r.fail(&keys::STORE_DIR, "must not be empty", ());
        }
        let upload_sub_dir = r.text(&keys::UPLOAD_SUB_DIR).trim_matches('/').to_string();
        if !upload_sub_dir.is_empty()
            && let Err(e) = crate::key::FileKey::parse_decoded(&upload_sub_dir)
        {
            r.fail(
                &keys::UPLOAD_SUB_DIR,
                format!("`{upload_sub_dir}` is not a usable folder name: {e}"),
                (),
            );
        }
        let state_dir = state_dir(r, &store_dir, &upload_sub_dir);
        let max_retries = r.integer(&keys::MAX_RETRIES, 0..=100) as u32;
        let retry_delay = r.duration(&keys::RETRY_DELAY);
        let enable_get_retries = r.boolean(&keys::ENABLE_GET_RETRIES);
        let checksum_verification = r.boolean(&keys::CHECKSUM_VERIFICATION);
        let buffer_bytes = r.size(&keys::BUFFER_SIZE);
        let buffer_bytes = if (4096..=64 << 20).contains(&buffer_bytes) {
            buffer_bytes as usize
        } else {
            r.fail(
                &keys::BUFFER_SIZE,
                format!("{buffer_bytes} is outside 4 KiB ..= 64 MiB"),
                65_536,
            )
        };
        Self {
            backend,
            dir: store_dir,
            upload_sub_dir,
            state_dir,
            buffer_bytes,
            max_retries,
            retry_delay,
            enable_get_retries,
            checksum_verification,
        }
    }
}

/// StateDir as given, or the store's own folder. The state must not be downloadable, so a
/// StateDir inside the folder of served files is refused (compared as written: a relative and
/// an absolute spelling of one folder are not recognised as the same).
fn state_dir(r: &mut Reader<'_>, store_dir: &Path, upload_sub_dir: &str) -> PathBuf {
    let internal = store_dir.join(INTERNAL_DIR);
    let Some(state_dir) = r.path(&keys::STATE_DIR) else {
        return internal;
    };
    let served = store_dir.join(upload_sub_dir);
    if state_dir.starts_with(&served) && !state_dir.starts_with(&internal) {
        return r.fail(
            &keys::STATE_DIR,
            format!(
                "`{}` is inside {}, the folder of served files: the state would be downloadable",
                state_dir.display(),
                served.display()
            ),
            internal,
        );
    }
    state_dir
}
