//! Conditional request headers of downloads (RFC 9110 §13): If-None-Match and
//! If-Modified-Since (→ 304), If-Range (whether a Range applies).

use std::time::SystemTime;

use http::{HeaderMap, header};

/// If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
pub fn not_modified(req: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        return inm
            .split(',')
            .map(str::trim)
            .any(|t| t == "*" || t.trim_start_matches("W/") == etag);
    }
    req.get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok())
        .is_some_and(|since| modified <= since)
}

/// A Range applies when If-Range is absent or names the current validator.
pub fn if_range_holds(req: &HeaderMap, etag: &str, modified: SystemTime) -> bool {
    let Some(value) = req.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let value = value.trim();
    if value.starts_with('"') {
        return value == etag;
    }
    httpdate::parse_http_date(value).is_ok_and(|date| date == modified)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn conditional_headers() {
        let modified = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"a\", \"b\""));
        assert!(not_modified(&h, "\"b\"", modified));
        assert!(!not_modified(&h, "\"c\"", modified));
        let mut h = HeaderMap::new();
        h.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_str(&httpdate::fmt_http_date(modified)).unwrap(),
        );
        assert!(not_modified(&h, "\"x\"", modified));
        assert!(!not_modified(&h, "\"x\"", modified + Duration::from_secs(1)));
        let mut h = HeaderMap::new();
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"x\""));
        assert!(if_range_holds(&h, "\"x\"", modified));
        assert!(!if_range_holds(&h, "\"y\"", modified));
        h.insert(
            header::IF_RANGE,
            HeaderValue::from_str(&httpdate::fmt_http_date(modified)).unwrap(),
        );
        assert!(if_range_holds(&h, "\"y\"", modified));
    }
}
