//! The local store: where files live, the I/O buffer, retries of transient errors, digests.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::keys;
use crate::config::reader::Reader;

/// The store.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Root of the local store.
    pub store_dir: PathBuf,
    /// URL prefix and folder under the store; empty = served at `/`.
    pub upload_sub_dir: String,
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
    pub(in crate::config) fn read(r: &mut Reader<'_>) -> Self {
        let store_dir = PathBuf::from(r.text(&keys::STORE_DIR));
        if store_dir.as_os_str().is_empty() {
            r.fail(&keys::STORE_DIR, "must not be empty", ());
        }
        let upload_sub_dir = r.text(&keys::UPLOAD_SUB_DIR).trim_matches('/').to_string();
        if !upload_sub_dir.is_empty()
            && let Err(e) = crate::store::key::FileKey::parse_decoded(&upload_sub_dir)
        {
            r.fail(
                &keys::UPLOAD_SUB_DIR,
                format!("`{upload_sub_dir}` is not a usable folder name: {e}"),
                (),
            );
        }
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
            store_dir,
            upload_sub_dir,
            buffer_bytes,
            max_retries,
            retry_delay,
            enable_get_retries,
            checksum_verification,
        }
    }
}
