//! The first step of every request: what it is for. [`Endpoint::parse`] checks the request
//! target's and head's size, strips the upload prefix, decodes the path once into a
//! [`FileKey`], and names the handler by method and path; only then does a handler run (the
//! shape garage's API servers have).

use http::{HeaderMap, Method, Uri};

use super::draft::{DRAFT_SEGMENT, DraftAction};
use super::error::{self, ApiError};
use super::headers::{SESSION_TOKEN, draft};
use super::slot::Slot;
use super::tus::TUS_SEGMENT;
use crate::key::FileKey;

/// Longest request target (path and query) accepted.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest request head (request line and headers) accepted, in bytes; larger → 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What a request is for.
#[derive(Debug)]
pub enum Endpoint {
    /// OPTIONS on any path: CORS and tus discovery, no token.
    Options,
    /// A tus upload resource, `<prefix>.hmac-file-server/tus/<id>`.
    TusUpload {
        /// The upload id as sent (checked by the engine).
        id: String,
        /// HEAD, PATCH or DELETE.
        action: TusAction,
    },
    /// An upload resource of the IETF resumable-upload draft,
    /// `<prefix>.hmac-file-server/resumable/<id>`.
    DraftUpload {
        /// The upload id as sent (checked by the engine).
        id: String,
        /// HEAD/GET, PATCH or DELETE.
        action: DraftAction,
    },
    /// PUT or POST on a slot with `Upload-Draft-Interop-Version` and `Upload-Complete`: an
    /// upload creation of the IETF resumable-upload draft.
    DraftCreate {
        /// The slot.
        slot: Slot,
        /// The client's interop version.
        interop: u32,
    },
    /// PUT on a slot: a whole-file upload or a session resume.
    Put(Slot),
    /// POST on a slot: a tus creation.
    TusCreate(Slot),
    /// HEAD on a slot with a token and X-Session-Token: a session upload's offset.
    SessionHead(Slot),
    /// GET or HEAD of a stored file.
    Download(Slot),
    /// DELETE of a stored file (Metronome's token).
    Delete(Slot),
}

/// What a request does to a tus upload resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TusAction {
    /// Its offset and length.
    Head,
    /// Append a chunk.
    Patch,
    /// Terminate it.
    Delete,
}

impl Endpoint {
    /// Names the endpoint of a request under the URL prefix `prefix` (`/upload/` or `/`).
    pub fn parse(method: &Method, uri: &Uri, headers: &HeaderMap, prefix: &str) -> Result<Endpoint, ApiError> {
        let uri_bytes = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
        if uri_bytes > MAX_URI_BYTES {
            return Err(ApiError::UriTooLong);
        }
        // hyper's buffer limit only bites when a head arrives in pieces: count it here too.
        let head_bytes: usize = uri_bytes
            + headers
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len() + 4)
                .sum::<usize>();
        if head_bytes > MAX_HEAD_BYTES {
            return Err(ApiError::HeadTooLarge);
        }
        if method == Method::OPTIONS {
            return Ok(Endpoint::Options);
        }
        let rest = uri.path().strip_prefix(prefix).ok_or(ApiError::NotFound)?;
        if let Some(id) = rest.strip_prefix(TUS_SEGMENT) {
            let action = match *method {
                Method::HEAD => TusAction::Head,
                Method::PATCH => TusAction::Patch,
                Method::DELETE => TusAction::Delete,
                _ => return Err(ApiError::MethodNotAllowed(error::ALLOW_TUS)),
            };
            return Ok(Endpoint::TusUpload {
                id: id.to_string(),
                action,
            });
        }
        if let Some(id) = rest.strip_prefix(DRAFT_SEGMENT) {
            let action = match *method {
                Method::HEAD | Method::GET => DraftAction::Offset,
                Method::PATCH => DraftAction::Append,
                Method::DELETE => DraftAction::Cancel,
                _ => return Err(ApiError::MethodNotAllowed(error::ALLOW_DRAFT)),
            };
            return Ok(Endpoint::DraftUpload {
                id: id.to_string(),
                action,
            });
        }
        let key = FileKey::from_url_path(rest)?;
        let full_path = format!("{prefix}{}", key.as_str());
        let query = uri.query().unwrap_or("").to_string();
        let slot = Slot { key, full_path, query };
        let draft_creation = matches!(*method, Method::PUT | Method::POST)
            && draft::is_draft_request(headers)
            && !headers.contains_key("tus-resumable");
        if draft_creation && let Some(interop) = draft::interop_version(headers)? {
            return Ok(Endpoint::DraftCreate { slot, interop });
        }
        Ok(match *method {
            Method::PUT => Endpoint::Put(slot),
            Method::POST => Endpoint::TusCreate(slot),
            Method::HEAD if headers.contains_key(SESSION_TOKEN) && !slot.query.is_empty() => {
                Endpoint::SessionHead(slot)
            }
            Method::GET | Method::HEAD => Endpoint::Download(slot),
            Method::DELETE => Endpoint::Delete(slot),
            _ => return Err(ApiError::MethodNotAllowed(error::ALLOW)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn parse(method: Method, uri: &str, headers: &HeaderMap) -> Result<Endpoint, ApiError> {
        Endpoint::parse(&method, &uri.parse().unwrap(), headers, "/upload/")
    }

    #[test]
    fn names_each_endpoint() {
        let none = HeaderMap::new();
        let mut session = HeaderMap::new();
        session.insert(SESSION_TOKEN, HeaderValue::from_static("abcdefghijklmnop"));
        assert!(matches!(
            parse(Method::OPTIONS, "/anything", &none),
            Ok(Endpoint::Options)
        ));
        assert!(
            matches!(parse(Method::PUT, "/upload/a/b.jpg?v=1", &none), Ok(Endpoint::Put(s)) if s.key.as_str() == "a/b.jpg" && s.query == "v=1" && s.full_path == "/upload/a/b.jpg")
        );
        assert!(matches!(
            parse(Method::POST, "/upload/a/b", &none),
            Ok(Endpoint::TusCreate(_))
        ));
        assert!(matches!(
            parse(Method::HEAD, "/upload/a/b?v=1", &session),
            Ok(Endpoint::SessionHead(_))
        ));
        assert!(matches!(
            parse(Method::HEAD, "/upload/a/b", &session),
            Ok(Endpoint::Download(_))
        ));
        assert!(
            matches!(parse(Method::GET, "/upload/a/b%20c", &none), Ok(Endpoint::Download(s)) if s.key.as_str() == "a/b c")
        );
        assert!(matches!(
            parse(Method::DELETE, "/upload/a/b?token=1", &none),
            Ok(Endpoint::Delete(_))
        ));
        let tus = "/upload/.hmac-file-server/tus/0123456789abcdef0123456789abcdef";
        assert!(matches!(
            parse(Method::PATCH, tus, &none),
            Ok(Endpoint::TusUpload {
                action: TusAction::Patch,
                ..
            })
        ));
        assert!(matches!(
            parse(Method::HEAD, tus, &none),
            Ok(Endpoint::TusUpload {
                action: TusAction::Head,
                ..
            })
        ));
        assert!(matches!(
            parse(Method::DELETE, tus, &none),
            Ok(Endpoint::TusUpload {
                action: TusAction::Delete,
                ..
            })
        ));
    }

    #[test]
    fn refuses_before_any_handler_runs() {
        let none = HeaderMap::new();
        assert!(matches!(
            parse(Method::GET, "/elsewhere/x", &none),
            Err(ApiError::NotFound)
        ));
        assert!(matches!(
            parse(Method::GET, "/upload/a/../b", &none),
            Err(ApiError::BadPath(_))
        ));
        assert!(matches!(
            parse(Method::PATCH, "/upload/a/b", &none),
            Err(ApiError::MethodNotAllowed(_))
        ));
        assert!(matches!(
            parse(Method::GET, "/upload/.hmac-file-server/tus/x", &none),
            Err(ApiError::MethodNotAllowed(_))
        ));
        let long = format!("/upload/{}", "a".repeat(MAX_URI_BYTES));
        assert!(matches!(parse(Method::GET, &long, &none), Err(ApiError::UriTooLong)));
        let mut big = HeaderMap::new();
        for i in 0..40 {
            big.insert(
                http::HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
                HeaderValue::from_str(&"v".repeat(2000)).unwrap(),
            );
        }
        assert!(matches!(
            parse(Method::GET, "/upload/a", &big),
            Err(ApiError::HeadTooLarge)
        ));
    }
}
