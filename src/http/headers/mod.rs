//! Every request header this server reads, parsed in one place: numbers (Content-Length,
//! Upload-Length, Upload-Offset), the content type a token signs, the session scheme's
//! Content-Range and X-Session-Token, tus's Tus-Resumable, Upload-Metadata, Upload-Checksum,
//! Upload-Concat and Upload-Defer-Length; byte ranges ([`range`]), conditional requests
//! ([`conditional`]) and RFC 9530 digests ([`digest`]). A malformed header is a 400 with a reason safe to show.

pub mod conditional;
pub mod digest;
pub mod draft;
pub mod range;

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::{HeaderMap, header};

use super::ApiError;
use crate::auth::DEFAULT_CONTENT_TYPE;
use crate::resumable::{ChecksumAlgorithm, ChunkChecksum};
use crate::state::valid_id;

/// The tus protocol version spoken.
pub const TUS_VERSION: &str = "1.0.0";
/// The content type of tus PATCH bodies (and of creation-with-upload).
pub const OFFSET_OCTET_STREAM: &str = "application/offset+octet-stream";
/// The session scheme's header.
pub const SESSION_TOKEN: &str = "x-session-token";

/// A header holding a non-negative decimal number (`Content-Length`, `Upload-Length`,
/// `Upload-Offset`); `None` when absent.
pub fn number(headers: &HeaderMap, name: impl header::AsHeaderName) -> Result<Option<u64>, ApiError> {
    let Some(v) = headers.get(name) else { return Ok(None) };
    let bad = ApiError::BadRequest("malformed number header");
    let text = v
        .to_str()
        .map_err(|_| ApiError::BadRequest("malformed number header"))?
        .trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad);
    }
    text.parse().map(Some).map_err(|_| bad)
}

/// The Content-Length header, if any; malformed → 400.
pub fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    number(headers, header::CONTENT_LENGTH).map_err(|_| ApiError::BadRequest("malformed Content-Length"))
}

/// The content type a v2/Metronome token signs: the header as sent (empty stays empty), or
/// `application/octet-stream` when there is none; never guessed.
pub fn signed_content_type(headers: &HeaderMap) -> Result<&str, ApiError> {
    match headers.get(header::CONTENT_TYPE) {
        None => Ok(DEFAULT_CONTENT_TYPE),
        Some(v) => v
            .to_str()
            .map_err(|_| ApiError::BadRequest("Content-Type is not visible ASCII")),
    }
}

/// The session scheme's `Content-Range: bytes N-M/S` with M = S-1: `Some((N, S))`; `None`
/// when there is no Content-Range.
pub fn content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| ApiError::BadRequest("malformed Content-Range"))?;
    parse_content_range(value).map(Some)
}

fn parse_content_range(value: &str) -> Result<(u64, u64), ApiError> {
    const BAD: ApiError = ApiError::BadRequest("Content-Range must be bytes N-(S-1)/S");
    let rest = value.trim().strip_prefix("bytes ").ok_or(BAD)?;
    let (range, total) = rest.split_once('/').ok_or(BAD)?;
    let (first, last) = range.split_once('-').ok_or(BAD)?;
    let parse = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (Some(first), Some(last), Some(total)) = (parse(first), parse(last), parse(total)) else {
        return Err(BAD);
    };
    if last.checked_add(1) != Some(total) || first > last {
        return Err(BAD);
    }
    Ok((first, total))
}

/// `X-Session-Token` (16–128 of `[A-Za-z0-9_-]`), when sent.
pub fn session_token(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(v) = headers.get(SESSION_TOKEN) else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| ApiError::BadRequest("malformed X-Session-Token"))?;
    let ok = (16..=128).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(ApiError::BadRequest("X-Session-Token must be 16-128 of [A-Za-z0-9_-]"));
    }
    Ok(Some(text))
}

/// Whether the request speaks tus 1.0.0 (`Tus-Resumable`); 412 otherwise.
pub fn require_tus(headers: &HeaderMap) -> Result<(), ApiError> {
    match headers.get("tus-resumable").and_then(|v| v.to_str().ok()) {
        Some(TUS_VERSION) => Ok(()),
        _ => Err(ApiError::TusVersion),
    }
}

/// Whether the request body is `application/offset+octet-stream`.
pub fn is_offset_octet_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v == OFFSET_OCTET_STREAM)
}

/// The raw Upload-Metadata, when sent (a value that is not text reads as one that fails to
/// parse).
pub fn upload_metadata_raw(headers: &HeaderMap) -> Option<String> {
    headers
        .get("upload-metadata")
        .map(|v| v.to_str().unwrap_or("\u{0}").to_string())
}

/// Parses Upload-Metadata: `key base64,key2 base64,key3` (an empty header is no metadata).
pub fn parse_metadata(value: &str) -> Result<BTreeMap<String, Vec<u8>>, ApiError> {
    const BAD: ApiError = ApiError::BadRequest("malformed Upload-Metadata");
    let mut out = BTreeMap::new();
    for pair in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut parts = pair.split(' ').filter(|p| !p.is_empty());
        let key = parts.next().ok_or(BAD)?;
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BAD);
        }
        let value = match parts.next() {
            None => Vec::new(),
            Some(b64) => STANDARD.decode(b64).map_err(|_| BAD)?,
        };
        if parts.next().is_some() || out.insert(key.to_string(), value).is_some() {
            return Err(BAD);
        }
    }
    Ok(out)
}

/// Parses Upload-Checksum: `<algorithm> <base64>`.
pub fn upload_checksum(headers: &HeaderMap) -> Result<Option<ChunkChecksum>, ApiError> {
    const BAD: ApiError = ApiError::BadRequest("malformed Upload-Checksum");
    let Some(v) = headers.get("upload-checksum") else {
        return Ok(None);
    };
    let text = v.to_str().map_err(|_| BAD)?;
    let (algo, b64) = text.trim().split_once(' ').ok_or(BAD)?;
    let algorithm = match algo.to_ascii_lowercase().as_str() {
        "sha1" => ChecksumAlgorithm::Sha1,
        "sha256" => ChecksumAlgorithm::Sha256,
        "md5" => ChecksumAlgorithm::Md5,
        _ => return Err(ApiError::BadRequest("unsupported Upload-Checksum algorithm")),
    };
    let expected = STANDARD.decode(b64.trim()).map_err(|_| BAD)?;
    Ok(Some(ChunkChecksum { algorithm, expected }))
}

/// Upload-Concat: what a tus creation asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UploadConcat {
    /// No header: a normal upload.
    None,
    /// `partial`.
    Partial,
    /// `final;<url> <url> …`: the ids of the parts, in order.
    Final(Vec<String>),
}

/// Parses Upload-Concat.
pub fn upload_concat(headers: &HeaderMap) -> Result<UploadConcat, ApiError> {
    match headers.get("upload-concat").and_then(|v| v.to_str().ok()) {
        None => Ok(UploadConcat::None),
        Some("partial") => Ok(UploadConcat::Partial),
        Some(v) if v.starts_with("final;") => Ok(UploadConcat::Final(final_parts(&v["final;".len()..])?)),
        Some(_) => Err(ApiError::BadRequest("malformed Upload-Concat")),
    }
}

fn final_parts(list: &str) -> Result<Vec<String>, ApiError> {
    let ids: Vec<String> = list
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(|url| url.trim_end_matches('/').rsplit('/').next().unwrap_or("").to_string())
        .collect();
    if ids.is_empty() || !ids.iter().all(|id| valid_id(id)) {
        return Err(ApiError::BadRequest("malformed Upload-Concat"));
    }
    Ok(ids)
}

/// Upload-Defer-Length: `1` defers; anything else is malformed.
pub fn upload_defer_length(headers: &HeaderMap) -> Result<bool, ApiError> {
    match headers.get("upload-defer-length").and_then(|v| v.to_str().ok()) {
        None => Ok(false),
        Some("1") => Ok(true),
        Some(_) => Err(ApiError::BadRequest("Upload-Defer-Length must be 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn content_ranges() {
        assert_eq!(parse_content_range("bytes 0-99/100").unwrap(), (0, 100));
        assert_eq!(parse_content_range("bytes 40-99/100").unwrap(), (40, 100));
        assert_eq!(
            parse_content_range("bytes 0-18446744073709551614/18446744073709551615").unwrap(),
            (0, u64::MAX)
        );
        for bad in [
            "bytes 0-98/100",
            "bytes 50-40/100",
            "bytes */100",
            "0-99/100",
            "bytes a-b/c",
            "bytes 0-0/0",
            // The last byte at u64::MAX: `last + 1` overflowed (a panic in debug builds).
            "bytes 0-18446744073709551615/0",
            "bytes 0-18446744073709551615/18446744073709551615",
        ] {
            assert!(parse_content_range(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers() {
        let mut h = HeaderMap::new();
        assert_eq!(number(&h, "upload-offset").unwrap(), None);
        h.insert("upload-offset", HeaderValue::from_static(" 42 "));
        assert_eq!(number(&h, "upload-offset").unwrap(), Some(42));
        for bad in ["-1", "+1", "1.0", "", "99999999999999999999999"] {
            h.insert("upload-offset", HeaderValue::from_str(bad).unwrap());
            assert!(number(&h, "upload-offset").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn session_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(session_token(&h).unwrap(), None);
        h.insert(SESSION_TOKEN, HeaderValue::from_static("abcdefghij_-012345"));
        assert_eq!(session_token(&h).unwrap(), Some("abcdefghij_-012345"));
        for bad in ["short", "has space in it 0123", &"x".repeat(129)] {
            h.insert(SESSION_TOKEN, HeaderValue::from_str(bad).unwrap());
            assert!(session_token(&h).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata() {
        assert!(parse_metadata("").unwrap().is_empty());
        assert!(parse_metadata("  ").unwrap().is_empty());
        let m = parse_metadata("filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential,filetype aW1hZ2UvcG5n")
            .unwrap();
        assert_eq!(m["filename"], b"world_domination_plan.pdf");
        assert_eq!(m["is_confidential"], b"");
        assert_eq!(m["filetype"], b"image/png");
        for bad in ["filename !!!", "a b c", "a YQ==,a YQ==", "k\u{1} YQ=="] {
            assert!(parse_metadata(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn concat_lists() {
        let a = "0123456789abcdef0123456789abcdef";
        let b = "fedcba9876543210fedcba9876543210";
        let ids = final_parts(&format!(
            "/upload/.hmac-file-server/tus/{a} http://h/upload/.hmac-file-server/tus/{b}"
        ))
        .unwrap();
        assert_eq!(ids, [a, b]);
        assert!(final_parts("").is_err());
        assert!(final_parts("/x/../../etc").is_err());
    }
}
