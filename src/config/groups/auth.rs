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

/// Reads a secret file, stripping one trailing newline.
fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let mut bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    if bytes.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(bytes))
}
