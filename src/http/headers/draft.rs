//! The request headers of the IETF draft "Resumable Uploads for HTTP"
//! (draft-ietf-httpbis-resumable-upload): `Upload-Draft-Interop-Version`, `Upload-Complete`
//! (interop version 3, draft -01, said the opposite in `Upload-Incomplete`) and the
//! structured-field booleans they carry.

use http::HeaderMap;

use crate::http::ApiError;

/// The interop versions this server speaks: 3 (draft -01: Apple URLSession on iOS 17 /
/// macOS 14), 4 and 5 (drafts -02, -03: tus-js-client `ietf-draft-03`), 6 (drafts -04, -05:
/// URLSession from iOS 18.1, tus-js-client `ietf-draft-05`), 7 (drafts -06 to -08) and 8
/// (drafts -09 onwards, the newest).
pub const INTEROP_VERSIONS: std::ops::RangeInclusive<u32> = 3..=8;
/// The header naming the interop version a draft client implements.
pub const INTEROP_HEADER: &str = "upload-draft-interop-version";

/// The request's interop version: `None` without the header (not a draft request);
/// unsupported or malformed → 400.
pub fn interop_version(headers: &HeaderMap) -> Result<Option<u32>, ApiError> {
    let Some(v) = headers.get(INTEROP_HEADER) else {
        return Ok(None);
    };
    let version = v
        .to_str()
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
        .ok_or(ApiError::BadRequest("malformed Upload-Draft-Interop-Version"))?;
    if !INTEROP_VERSIONS.contains(&version) {
        return Err(ApiError::BadRequest(
            "unsupported Upload-Draft-Interop-Version (this server speaks 3 to 8)",
        ));
    }
    Ok(Some(version))
}

/// Whether the request creates or appends to a draft upload: it names an interop version and
/// says whether it completes the upload.
pub fn is_draft_request(headers: &HeaderMap) -> bool {
    headers.contains_key(INTEROP_HEADER)
        && (headers.contains_key("upload-complete") || headers.contains_key("upload-incomplete"))
}

/// A structured-field Boolean (`?1` or `?0`, parameters ignored).
fn sf_boolean(value: &[u8]) -> Option<bool> {
    let item = value.split(|&b| b == b';').next()?;
    match item.trim_ascii() {
        b"?1" => Some(true),
        b"?0" => Some(false),
        _ => None,
    }
}

/// Whether the request's content ends the upload: `Upload-Complete` (`Upload-Incomplete`,
/// inverted, for interop version 3). Missing or malformed → 400.
pub fn upload_complete(headers: &HeaderMap, interop: u32) -> Result<bool, ApiError> {
    let (name, inverted) = if interop == 3 {
        ("upload-incomplete", true)
    } else {
        ("upload-complete", false)
    };
    let value = headers
        .get(name)
        .ok_or(ApiError::BadRequest("Upload-Complete required"))?;
    let flag = sf_boolean(value.as_bytes()).ok_or(ApiError::BadRequest("malformed Upload-Complete"))?;
    Ok(flag != inverted)
}

/// The name and value of the header saying whether an answer completes the upload, as the
/// client's interop version spells it.
pub fn complete_header(interop: u32, complete: bool) -> (&'static str, &'static str) {
    match (interop == 3, complete != (interop == 3)) {
        (true, true) => ("upload-incomplete", "?1"),
        (true, false) => ("upload-incomplete", "?0"),
        (false, true) => ("upload-complete", "?1"),
        (false, false) => ("upload-complete", "?0"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn interop_versions_three_to_eight_are_spoken() {
        assert_eq!(interop_version(&headers(&[])).unwrap(), None);
        for v in ["3", "5", "6", "7", "8"] {
            let h = headers(&[(INTEROP_HEADER, v)]);
            assert_eq!(interop_version(&h).unwrap(), v.parse().ok());
        }
        for v in ["2", "9", "x", "", "-6"] {
            let mut h = HeaderMap::new();
            h.insert(INTEROP_HEADER, HeaderValue::from_str(v).unwrap());
            assert!(interop_version(&h).is_err(), "{v:?}");
        }
    }

    #[test]
    fn upload_complete_is_a_boolean_and_version_3_says_it_the_other_way_round() {
        assert!(upload_complete(&headers(&[("upload-complete", "?1")]), 8).unwrap());
        assert!(!upload_complete(&headers(&[("upload-complete", "?0")]), 6).unwrap());
        assert!(upload_complete(&headers(&[("upload-complete", "?1;x=1")]), 7).unwrap());
        assert!(upload_complete(&headers(&[("upload-complete", "1")]), 8).is_err());
        assert!(upload_complete(&headers(&[("upload-complete", "?1")]), 3).is_err());
        assert!(!upload_complete(&headers(&[("upload-incomplete", "?1")]), 3).unwrap());
        assert!(upload_complete(&headers(&[("upload-incomplete", "?0")]), 3).unwrap());
        assert_eq!(complete_header(3, true), ("upload-incomplete", "?0"));
        assert_eq!(complete_header(8, false), ("upload-complete", "?0"));
    }
}
