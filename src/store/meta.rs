//! [`FileMeta`]: what the store remembers of an upload beside its bytes (content type, size,
//! time, digest), so that GET answers without guessing. Kept as a small JSON file under the
//! store's own folder, named by a hash of the key, so no upload name can collide with it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::FileKey;

/// Metadata of one stored file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta {
    /// The Content-Type the upload was sent with.
    pub content_type: String,
    /// Size in bytes; a sidecar whose size differs from the file's is stale and ignored.
    pub size: u64,
    /// Upload time, unix seconds.
    pub uploaded_unix: u64,
    /// SHA-256 of the content, lowercase hex, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The sidecar's relative location for a key: `ab/abcdef….json`.
pub fn sidecar_name(key: &FileKey) -> (String, String) {
    let digest = hex::encode(Sha256::digest(key.as_str().as_bytes()));
    (digest[..2].to_string(), format!("{digest}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_names_are_distinct_and_stable() {
        let a = sidecar_name(&FileKey::parse_decoded("a/b").unwrap());
        let b = sidecar_name(&FileKey::parse_decoded("a/b.json").unwrap());
        assert_ne!(a, b);
        assert_eq!(a, sidecar_name(&FileKey::parse_decoded("a/b").unwrap()));
        assert_eq!(a.0.len(), 2);
        assert!(a.1.starts_with(&a.0));
    }

    #[test]
    fn json_round_trip_and_tolerance() {
        let m = FileMeta {
            content_type: "image/png".into(),
            size: 3,
            uploaded_unix: 7,
            sha256: None,
        };
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<FileMeta>(&text).unwrap(), m);
        assert!(serde_json::from_str::<FileMeta>("{\"size\":1}").is_err());
    }
}
