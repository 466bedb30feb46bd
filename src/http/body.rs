//! The response body type and small constructors.

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// Every response body: empty, a short text, or a file stream.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// A response of this server.
pub type Response = http::Response<Body>;

/// A response with no body.
pub fn empty(status: StatusCode) -> Response {
    let mut r = http::Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r
}

/// A short `text/plain` response.
pub fn text(status: StatusCode, message: String) -> Response {
    let mut r = http::Response::new(
        Full::new(Bytes::from(message + "\n"))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
