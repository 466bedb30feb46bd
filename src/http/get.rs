//! GET and HEAD: stored files with their kept content type (for media and plain text) or as
//! attachments, validators (ETag, Last-Modified, 304) and single byte ranges.

use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::TryStreamExt;
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};

use super::headers::conditional::{if_range_holds, not_modified};
use super::headers::range::{self, RangeRequest};
use super::slot::Slot;
use super::{ApiError, Response, body, cors};
use crate::app::AppState;
use crate::store::ObjectInfo;

/// Answers GET or HEAD for a stored file.
pub async fn get<B>(state: &AppState, slot: Slot, request: &Request<B>) -> Result<Response, ApiError> {
    let opened = state.store().open(&slot.key, request.method() == Method::GET).await?;
    let info = &opened.info;
    let size = info.size;
    let modified = truncate_to_seconds(info.modified);
    let etag = info.etag.as_str();
    let req = request.headers();

    let mut headers = DOWNLOAD_HEADERS.clone();
    content_headers(&mut headers, info, slot.key.file_name());
    headers.insert(header::ETAG, header_value(etag));
    headers.insert(header::LAST_MODIFIED, header_value(&httpdate::fmt_http_date(modified)));
    if let Some(v) = info
        .meta
        .as_ref()
        .and_then(|m| m.sha256.as_deref())
        .and_then(super::headers::digest::repr_digest_from_hex)
    {
        headers.insert("repr-digest", header_value(&v));
    }

    if not_modified(req, etag, modified) {
        let mut r = body::empty(StatusCode::NOT_MODIFIED);
        for name in [header::ETAG, header::LAST_MODIFIED, header::CACHE_CONTROL] {
            if let Some(v) = headers.remove(&name) {
                r.headers_mut().insert(name, v);
            }
        }
        return Ok(r);
    }

    let wanted = match req.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(value) if if_range_holds(req, etag, modified) => range::parse(value, size),
        _ => RangeRequest::Full,
    };
    let (status, start, length) = match wanted {
        RangeRequest::Full => (StatusCode::OK, 0, size),
        RangeRequest::Partial { start, end } => {
            headers.insert(
                header::CONTENT_RANGE,
                header_value(&format!("bytes {start}-{end}/{size}")),
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => return Err(ApiError::RangeNotSatisfiable { size }),
    };
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));

    let mut response = if request.method() == Method::HEAD || length == 0 {
        body::empty(status)
    } else if let Some(content) = &opened.content {
        let part = content.slice(start as usize..(start + length) as usize);
        let mut r = http::Response::new(BodyExt::boxed(
            http_body_util::Full::new(part).map_err(|never| match never {}),
        ));
        *r.status_mut() = status;
        r
    } else {
        let stream = opened
            .stream_to_socket(start, start + length)
            .map_ok(http_body::Frame::data);
        let mut r = http::Response::new(BodyExt::boxed(StreamBody::new(stream)));
        *r.status_mut() = status;
        r
    };
    // The response's own map is empty (a new response): taken as a whole, not merged.
    let fresh = std::mem::replace(response.headers_mut(), headers);
    response.headers_mut().extend(fresh);
    Ok(response)
}

/// What every download answer carries whatever the file: CORS, and that a stored file never
/// changes. Cloned per answer, which costs less than inserting (and hashing) each of them.
static DOWNLOAD_HEADERS: LazyLock<HeaderMap> = LazyLock::new(|| {
    // Room for the per-file headers too (content type, disposition, CSP, validators, length).
    let mut headers = HeaderMap::with_capacity(24);
    cors::apply(&mut headers);
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers
});

/// Content-Type and, unless the type is shown inline, Content-Disposition: attachment plus
/// a CSP that keeps an uploaded page from running in the server's origin.
fn content_headers(headers: &mut HeaderMap, info: &ObjectInfo, file_name: &str) {
    let stored_type = info
        .meta
        .as_ref()
        .map(|m| m.content_type.as_str())
        .filter(|t| is_valid_media_type(t));
    match stored_type {
        Some(t) if shown_inline(t) => {
            headers.insert(header::CONTENT_TYPE, header_value(t));
        }
        other => {
            let t = other.unwrap_or("application/octet-stream");
            headers.insert(header::CONTENT_TYPE, header_value(t));
            let encoded = percent_encoding::utf8_percent_encode(file_name, ATTR_CHAR);
            headers.insert(
                header::CONTENT_DISPOSITION,
                header_value(&format!("attachment; filename*=UTF-8''{encoded}")),
            );
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
            );
        }
    }
}

/// `attr-char` of RFC 8187: everything else is percent-encoded in `filename*`.
const ATTR_CHAR: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b'-')
    .remove(b'.')
    .remove(b'^')
    .remove(b'_')
    .remove(b'`')
    .remove(b'|')
    .remove(b'~');

/// Media and plain text stay inline; SVG (which can carry script) does not.
fn shown_inline(media_type: &str) -> bool {
    let essence = media_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    if essence == "image/svg+xml" {
        return false;
    }
    essence.starts_with("image/")
        || essence.starts_with("video/")
        || essence.starts_with("audio/")
        || essence == "text/plain"
}

/// `type/subtype[; params]` with token characters, and nothing a header cannot carry.
fn is_valid_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    value.len() <= 255
        && HeaderValue::from_str(value).is_ok()
        && essence.split_once('/').is_some_and(|(t, s)| token(t) && token(s))
}

fn truncate_to_seconds(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_types() {
        assert!(shown_inline("image/jpeg"));
        assert!(shown_inline("video/mp4"));
        assert!(shown_inline("audio/ogg; codecs=opus"));
        assert!(shown_inline("text/plain; charset=utf-8"));
        assert!(shown_inline("IMAGE/PNG"));
        assert!(!shown_inline("image/svg+xml"));
        assert!(!shown_inline("text/html"));
        assert!(!shown_inline("application/octet-stream"));
        assert!(!shown_inline("application/pdf"));
    }

    #[test]
    fn media_type_validation() {
        assert!(is_valid_media_type("image/jpeg"));
        assert!(is_valid_media_type("text/plain; charset=utf-8"));
        assert!(!is_valid_media_type(""));
        assert!(!is_valid_media_type("jpeg"));
        assert!(!is_valid_media_type("image/jp eg"));
        assert!(!is_valid_media_type("text/html\r\nX: y"));
    }
}
