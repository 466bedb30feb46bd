//! The keys that sign and check tokens, and their re-reading.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Secret;
use crate::config::keys;
use crate::config::reader::Reader;

/// The shortest ReaskSecretInterval: how often the secret may be re-read, and the shortest
/// grace of the previous secret.
const MIN_REASK_SECRET_INTERVAL: Duration = Duration::from_secs(1);

/// Secrets.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// The HMAC key for upload tokens.
    pub secret: Secret,
    /// Where the secret came from, when read from a file.
    pub secret_file: Option<PathBuf>,
    /// Metronome's `http_file_delete_secret`; `None`: the same as the upload secret.
    pub delete_secret: Option<Secret>,
    /// Re-read the secret periodically.
    pub reask_secret: bool,
    /// How often the secret is re-read (and how long the previous one stays valid).
    pub reask_secret_interval: Duration,
}

impl AuthSettings {
    /// `None` when there is no usable secret (the problem is recorded).
    pub(in crate::config) fn read(r: &mut Reader<'_>) -> Option<Self> {
        let inline = r.text(&keys::SECRET);
        let secret_file = r.path(&keys::SECRET_FILE);
        let secret = match (&inline[..], &secret_file) {
            ("", None) => r.fail(
                &keys::SECRET,
                "no Secret or SecretFile: refusing to run with no HMAC key",
                None,
            ),
            (s, None) => Some(Secret::new(s.as_bytes())),
            ("", Some(path)) => match read_secret_file(path) {
                Ok(s) => Some(s),
                Err(e) => r.fail(&keys::SECRET_FILE, e, None),
            },
            (_, Some(_)) => r.fail(&keys::SECRET_FILE, "set Secret or SecretFile, not both", None),
        };
        if let Some(s) = &secret
            && s.expose().len() < 16
        {
            r.warn(format!(
                "Secret: only {} bytes; use at least 16 random bytes (e.g. `openssl rand -hex 32`)",
                s.expose().len()
            ));
        }
        let delete_text = r.text(&keys::DELETE_SECRET);
        let delete_secret = (!delete_text.is_empty()).then(|| Secret::new(delete_text.as_bytes()));
        let reask_secret = r.boolean(&keys::REASK_SECRET_ENABLED);
        let reask_secret_interval = r.duration(&keys::REASK_SECRET_INTERVAL);
        if reask_secret_interval < MIN_REASK_SECRET_INTERVAL {
            // 0 would re-read the configuration in a tight loop and end the previous secret's
            // grace at once.
            r.fail(&keys::REASK_SECRET_INTERVAL, "must be at least 1s", ());
        }
        Some(Self {
            secret: secret?,
            secret_file,
            delete_secret,
            reask_secret,
            reask_secret_interval,
        })
    }
}

/// The largest SecretFile read: a key is a few dozen bytes; this only stops a wrong path
/// (a log, a device) from being read into memory.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Reads a secret file, stripping one trailing newline. Only a regular file of at most
/// [`MAX_SECRET_FILE_BYTES`] is read: the type is checked before opening, so a FIFO cannot
/// block the open (a start, `check-config` or a reload would hang without a word), and a
/// device such as `/dev/zero` is never read. The file is opened non-blocking and checked again
/// through the open handle, in case it was swapped in between, and the read is capped too
/// (a file may grow after the check).
pub(in crate::config) fn read_secret_file(path: &Path) -> Result<Secret, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    let shown = path.display();
    let regular = |meta: &std::fs::Metadata| -> Result<(), String> {
        if !meta.is_file() {
            return Err(format!("{shown} is not a regular file ({})", file_kind(meta)));
        }
        if meta.len() > MAX_SECRET_FILE_BYTES {
            return Err(format!(
                "{shown} is {} bytes; a secret file may have at most 64 KiB",
                meta.len()
            ));
        }
        Ok(())
    };
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    regular(&meta)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    regular(&file.metadata().map_err(|e| format!("cannot read {shown}: {e}"))?)?;
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(format!(
            "{shown} has more than 64 KiB; a secret file may have at most 64 KiB"
        ));
    }
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(format!("{shown} is empty"));
    }
    Ok(Secret::new(bytes))
}

/// What a file that is not a regular file is, for the message.
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let kind = meta.file_type();
    if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}
