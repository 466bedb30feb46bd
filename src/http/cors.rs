//! CORS: every response carries it, so browser clients (Converse.js, Movim, web apps) can
//! upload and read the answers; OPTIONS needs no token.

use http::{HeaderMap, HeaderValue, header};

const ALLOW_ORIGIN: &str = "*";
const ALLOW_METHODS: &str = "OPTIONS, HEAD, GET, PUT, POST, PATCH, DELETE";
const ALLOW_HEADERS: &str = "Authorization, Content-Type, Content-Length, Content-Range, X-Session-Token, \
Tus-Resumable, Upload-Length, Upload-Offset, Upload-Metadata, Upload-Checksum, Upload-Concat, \
Upload-Defer-Length, Upload-Complete, Upload-Incomplete, Upload-Draft-Interop-Version, Content-Digest, Repr-Digest, Range, If-Range, If-None-Match, If-Modified-Since";
const EXPOSE_HEADERS: &str = "Location, Upload-Offset, Upload-Length, Upload-Expires, X-Session-Token, \
Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Tus-Checksum-Algorithm, ETag, Last-Modified, \
Content-Length, Content-Range, Content-Disposition, Accept-Ranges, Repr-Digest, Upload-Complete, Upload-Incomplete, Upload-Limit";
const MAX_AGE: &str = "86400";

/// Adds the CORS headers to a response, unless it has them: one that carries
/// `Access-Control-Allow-Origin` was built from a map made by this function (a download's
/// headers are cloned from such a map, see `get`) and has them all.
pub fn apply(headers: &mut HeaderMap) {
    if headers.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN) {
        return;
    }
    // `http`'s own name constants: no name to parse per answer.
    headers.reserve(5);
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static(ALLOW_ORIGIN),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(ALLOW_METHODS),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(ALLOW_HEADERS),
    );
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(MAX_AGE));
}
