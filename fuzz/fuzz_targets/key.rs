//! The upload path: percent-decoding and the key rules.
//!
//! Properties: no panic; a key that is accepted never leaves the store (no empty, `.` or `..`
//! segment, no leading slash, no NUL, backslash or control character, not the server's own
//! folder, within the length limits); decoding happens exactly once (the key of an accepted
//! path, percent-encoded again, decodes to the same key, and a key's text is itself a valid
//! decoded path naming the same key).
#![no_main]

use hmac_file_server::key::{FileKey, INTERNAL_DIR, MAX_KEY_BYTES, MAX_SEGMENT_BYTES};
use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    check(FileKey::from_url_path(raw));
    check(FileKey::parse_decoded(raw));
});

fn check(result: Result<FileKey, hmac_file_server::key::KeyError>) {
    let Ok(key) = result else { return };
    let text = key.as_str();
    assert!(!text.is_empty() && text.len() <= MAX_KEY_BYTES, "{text:?}");
    assert!(!text.starts_with('/'), "{text:?}");
    assert!(!text.chars().any(|c| c == '\\' || c.is_control()), "{text:?}");
    for segment in text.split('/') {
        assert!(!segment.is_empty() && segment != "." && segment != "..", "{text:?}");
        assert!(segment.len() <= MAX_SEGMENT_BYTES, "{text:?}");
    }
    assert!(text.split('/').next() != Some(INTERNAL_DIR), "{text:?}");
    // The stored path stays below the store: joining it to a root and normalising lexically
    // never climbs out.
    let joined = std::path::Path::new("/store").join(text);
    assert!(
        joined.starts_with("/store/") && joined.components().count() > 2,
        "{text:?}"
    );
    // Decode once: the decoded text validates to the same key, and encoding it again
    // (every byte that is not unreserved) decodes back to it, not further.
    assert_eq!(FileKey::parse_decoded(text).as_ref(), Ok(&key));
    assert_eq!(FileKey::from_url_path(&common::encode_path(text)).as_ref(), Ok(&key));
    assert_eq!(key.file_name(), text.rsplit('/').next().unwrap());
}
