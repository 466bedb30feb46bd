//! Limits on requests: size, time, and how long unfinished uploads are kept.

use std::time::Duration;

use crate::config::keys;
use crate::config::reader::Reader;

/// Request limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted upload.
    pub max_upload_bytes: u64,
    /// Header read timeout and idle body read timeout.
    pub read_timeout: Duration,
    /// Idle response write timeout.
    pub write_timeout: Duration,
    /// How long unfinished uploads and temporaries are kept.
    pub upload_expiry: Duration,
    /// Most bytes all unfinished uploads may hold together; 0 = no limit.
    pub max_unfinished_bytes: u64,
}

impl Limits {
    /// Reads and checks the group's keys; problems go to the reader.
    pub(in crate::config) fn read(r: &mut Reader<'_>) -> Self {
        let max_upload_bytes = r.size(&keys::MAX_UPLOAD_SIZE);
        if max_upload_bytes == 0 {
            r.fail(&keys::MAX_UPLOAD_SIZE, "must be more than 0", ());
        }
        let read_timeout = r.duration(&keys::READ_TIMEOUT);
        let write_timeout = r.duration(&keys::WRITE_TIMEOUT);
        for (key, value) in [
            (&keys::READ_TIMEOUT, read_timeout),
            (&keys::WRITE_TIMEOUT, write_timeout),
        ] {
            if value.is_zero() {
                r.fail(key, "must be more than 0", ());
            }
        }
        let upload_expiry = r.duration(&keys::UPLOAD_EXPIRY);
        if upload_expiry < Duration::from_secs(60) {
            r.fail(&keys::UPLOAD_EXPIRY, "must be at least 60s", ());
        }
        Self {
            max_upload_bytes,
            read_timeout,
            write_timeout,
            upload_expiry,
            max_unfinished_bytes: r.size(&keys::MAX_UNFINISHED_SIZE),
        }
    }
}
