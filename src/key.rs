//! [`FileKey`]: the relative path of one stored file, decoded once and proven safe.
//!
//! Every spelling of one path (`%2F` or `/`, upper- or lower-case hex, `(` or `%28`) decodes to
//! the same key, so it names the same file and carries the same signature. A key never
//! leaves the store: no empty, `.` or `..` segment, no NUL, backslash or control character, no
//! leading slash, no invalid UTF-8.

use std::fmt;

/// The store's own folder under StoreDir; no upload may be named into it.
pub const INTERNAL_DIR: &str = ".hmac-file-server";

/// Longest decoded path accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest single segment, in bytes (NAME_MAX).
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Why a path is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Nothing after the prefix.
    #[error("empty path")]
    Empty,
    /// Longer than [`MAX_KEY_BYTES`] or a segment longer than [`MAX_SEGMENT_BYTES`].
    #[error("path too long")]
    TooLong,
    /// A `%` not followed by two hex digits.
    #[error("malformed percent-encoding")]
    BadEncoding,
    /// Decoded bytes are not UTF-8 (overlong encodings land here).
    #[error("path is not valid UTF-8")]
    NotUtf8,
    /// An empty, `.` or `..` segment (also a leading, trailing or doubled slash).
    #[error("empty, `.` or `..` path segment")]
    BadSegment,
    /// NUL, backslash or another control character.
    #[error("forbidden character in path")]
    BadCharacter,
    /// A path into the server's own folder.
    #[error("reserved path")]
    Reserved,
}

/// A validated, decoded, relative path of a stored file: `abc123/photo.jpg`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileKey(String);

impl FileKey {
    /// Decodes the percent-encoded part of a URL path after the upload prefix, exactly once
    /// (`+` stays `+`), and validates it.
    pub fn from_url_path(raw: &str) -> Result<Self, KeyError> {
        let bytes = raw.as_bytes();
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'%'
                && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            {
                return Err(KeyError::BadEncoding);
            }
        }
        let decoded: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
        let decoded = String::from_utf8(decoded).map_err(|_| KeyError::NotUtf8)?;
        Self::parse_decoded(&decoded)
    }

    /// Validates an already decoded relative path.
    pub fn parse_decoded(path: &str) -> Result<Self, KeyError> {
        if path.is_empty() {
            return Err(KeyError::Empty);
        }
        if path.len() > MAX_KEY_BYTES {
            return Err(KeyError::TooLong);
        }
        if path.chars().any(|c| c == '\\' || c.is_control()) {
            return Err(KeyError::BadCharacter);
        }
        for segment in path.split('/') {
            if segment.is_empty() || segment == "." || segment == ".." {
                return Err(KeyError::BadSegment);
            }
            if segment.len() > MAX_SEGMENT_BYTES {
                return Err(KeyError::TooLong);
            }
        }
        if path == INTERNAL_DIR || path.starts_with(&format!("{INTERNAL_DIR}/")) {
            return Err(KeyError::Reserved);
        }
        Ok(Self(path.to_string()))
    }

    /// The decoded path, as signed by the XMPP server.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last segment: the file's name.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for FileKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        FileKey::from_url_path(raw).unwrap_or_else(|e| panic!("{raw}: {e}")).0
    }

    #[test]
    fn decodes_once() {
        assert_eq!(ok("abc123/photo.jpg"), "abc123/photo.jpg");
        assert_eq!(ok("abc/my%20photo.jpg"), "abc/my photo.jpg");
        assert_eq!(ok("abc/a+b.jpg"), "abc/a+b.jpg");
        assert_eq!(ok("abc/%2541"), "abc/%41", "decoded exactly once");
        assert_eq!(ok("abc/%C3%A9t%C3%A9.txt"), "abc/été.txt");
        assert_eq!(ok("abc/été.txt"), "abc/été.txt");
        assert_eq!(ok("a/b/c/d/e.bin"), "a/b/c/d/e.bin");
    }

    #[test]
    fn spellings_are_one_key() {
        let spellings = [
            "abc/x(1).jpg",
            "abc/x%281%29.jpg",
            "abc%2Fx%281%29.jpg",
            "abc%2fx%28%31%29.jpg",
        ];
        for s in spellings {
            assert_eq!(ok(s), "abc/x(1).jpg", "{s}");
        }
    }

    #[test]
    fn traversal_corpus_is_refused() {
        let corpus = [
            "",
            "..",
            ".",
            "../etc/passwd",
            "abc/../../etc/passwd",
            "abc/..",
            "abc/./x",
            "%2e%2e/etc/passwd",
            "%2E%2e/x",
            "abc%2F..%2Fx",
            "abc%2f%2e%2e%2fx",
            "abc/%2e",
            "..%5cwindows",
            "abc\\x",
            "abc/x%00.jpg",
            "/etc/passwd",
            "%2Fetc%2Fpasswd",
            "abc//x",
            "abc/",
            "abc%2F",
            "abc/%c0%ae%c0%ae/x",
            "abc/%e0%80%ae",
            "abc/%ff",
            "abc/%zz",
            "abc/%2",
            "abc/x%0a",
            "abc/x%7f",
            ".hmac-file-server/tmp/x",
            ".hmac-file-server",
        ];
        for raw in corpus {
            assert!(FileKey::from_url_path(raw).is_err(), "{raw:?} must be refused");
        }
    }

    #[test]
    fn length_limits() {
        let long_segment = "a".repeat(256);
        assert_eq!(FileKey::parse_decoded(&long_segment), Err(KeyError::TooLong));
        let long_path = vec!["a".repeat(200); 6].join("/");
        assert_eq!(FileKey::parse_decoded(&long_path), Err(KeyError::TooLong));
        assert!(FileKey::parse_decoded(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn names_with_odd_characters() {
        for raw in [
            "abc/a b&c=d;e!.txt",
            "abc/%23hash%3Fq.txt",
            "abc/100%25.txt",
            "abc/ünïcødé 文件.bin",
        ] {
            assert!(FileKey::from_url_path(raw).is_ok(), "{raw}");
        }
        assert_eq!(FileKey::parse_decoded("a/b.jpg").unwrap().file_name(), "b.jpg");
    }
}
