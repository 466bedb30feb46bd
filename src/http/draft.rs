//! The IETF draft "Resumable Uploads for HTTP" (draft-ietf-httpbis-resumable-upload), at the
//! upload URLs the XMPP server signs: a `PUT` or `POST` on a slot URL with
//! `Upload-Draft-Interop-Version` and `Upload-Complete` creates an upload resource,
//! `<prefix>.hmac-file-server/resumable/<id>` (128 random bits: the capability, as for tus),
//! which answers `HEAD` (offset retrieval), `PATCH` (append) and `DELETE` (cancellation).
//! A request without the draft's headers is an ordinary XEP-0363 PUT (or tus POST).
//!
//! It runs on the same engine as tus and the session scheme (one upload state, the same
//! locks, the no-overwrite commit, the expiry sweep) and follows the token rules of SPEC §4:
//! a v, v2 or Metronome token signs the size, so with one the length must be known when the
//! upload is created (`Upload-Length`, or `Content-Length` with `Upload-Complete: ?1`); a v3
//! token signs the method and path.
//!
//! Interop versions 3 to 8 (see [`headers::draft::INTEROP_VERSIONS`]). A creation over
//! HTTP/1.1 gets the `104 (Upload Resumption Supported)` interim response with the upload
//! resource's Location before its content is read (through [`Interim`]: hyper's server has no
//! API for it), so a client whose request breaks off can resume it; not when it came through
//! a proxy, which may not forward interim responses (nginx 1.22 does not).

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode, header};

use super::headers::{self, draft};
use super::interim::Interim;
use super::slot::{Slot, authorize};
use super::{ApiError, Response, body};
use crate::app::AppState;
use crate::auth::DEFAULT_CONTENT_TYPE;
use crate::clock::now_unix;
use crate::config::Config;
use crate::resumable::{Append, Ended, Held, NewUpload};
use crate::state::{Concat, UploadKind, UploadRecord, random_id};

/// Path segment, under the upload prefix, of upload resources.
pub const DRAFT_SEGMENT: &str = ".hmac-file-server/resumable/";
/// The media type of append bodies (interop version 6 onwards).
pub const PARTIAL_UPLOAD: &str = "application/partial-upload";
/// Methods a v3 token may be signed for to create an upload.
const CREATE_METHODS: &[&str] = &["PUT", "POST"];
/// The draft's problem types.
const MISMATCHING_OFFSET: &str = "https://iana.org/assignments/http-problem-types#mismatching-upload-offset";
const INCONSISTENT_LENGTH: &str = "https://iana.org/assignments/http-problem-types#inconsistent-upload-length";

/// What a request does to an upload resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DraftAction {
    /// Offset retrieval (HEAD or GET).
    Offset,
    /// Append (PATCH).
    Append,
    /// Cancellation (DELETE).
    Cancel,
}

/// The `Upload-Limit` value for `interop`: the largest upload, and how long an upload
/// resource lives (`max-age`, `expires` before interop version 7); none before version 6.
pub fn upload_limit(config: &Config, interop: u32, seconds_left: u64) -> Option<HeaderValue> {
    let age = if interop >= 7 { "max-age" } else { "expires" };
    (interop >= 6)
        .then(|| {
            format!(
                "max-size={}, min-size=0, {age}={seconds_left}",
                config.limits.max_upload_bytes
            )
        })
        .and_then(|v| HeaderValue::from_str(&v).ok())
}

/// Adds `Upload-Limit` to an OPTIONS answer (the newest interop version's form).
pub fn options_headers(headers: &mut HeaderMap, config: &Config) {
    if let Some(v) = upload_limit(
        config,
        *draft::INTEROP_VERSIONS.end(),
        config.limits.upload_expiry.as_secs(),
    ) {
        headers.insert("upload-limit", v);
    }
}

fn location_text(config: &Config, id: &str) -> String {
    format!("{}{DRAFT_SEGMENT}{id}", config.url_prefix())
}

fn location(config: &Config, id: &str) -> HeaderValue {
    HeaderValue::from_str(&location_text(config, id)).unwrap_or(HeaderValue::from_static("/"))
}

/// The headers every answer about an upload carries: offset, completeness, length, limits.
fn state_headers(response: &mut Response, config: &Config, interop: u32, record: &UploadRecord) {
    let h = response.headers_mut();
    let (name, value) = draft::complete_header(interop, record.completed);
    h.insert(name, HeaderValue::from_static(value));
    h.insert("upload-offset", HeaderValue::from(record.offset));
    if let Some(n) = record.length {
        h.insert("upload-length", HeaderValue::from(n));
    }
    if let Some(v) = upload_limit(config, interop, record.expires_unix.saturating_sub(now_unix())) {
        h.insert("upload-limit", v);
    }
}

/// A problem-details answer (RFC 9457) for interop versions that define the draft's problem
/// types (6 onwards), plain text before.
fn problem(status: StatusCode, interop: u32, kind: &str, title: &str, extra: serde_json::Value) -> Response {
    if interop < 6 {
        return body::text(status, title.to_string());
    }
    let mut doc = serde_json::json!({ "type": kind, "title": title });
    if let (Some(doc), Some(extra)) = (doc.as_object_mut(), extra.as_object()) {
        doc.extend(extra.clone());
    }
    let mut r = body::text(status, doc.to_string());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

/// The length a request indicates: `Upload-Length`, or the offset plus `Content-Length` when
/// it completes the upload; both must agree (`Err` with the answer when they do not).
fn indicated_length(
    headers: &HeaderMap,
    interop: u32,
    offset: u64,
    complete: bool,
) -> Result<Result<Option<u64>, Response>, ApiError> {
    let declared = headers::number(headers, "upload-length")?;
    let from_body = match (complete, headers::content_length(headers)?) {
        (true, Some(n)) => Some(offset.saturating_add(n)),
        _ => None,
    };
    Ok(match (declared, from_body) {
        (Some(a), Some(b)) if a != b => Err(inconsistent(interop)),
        (a, b) => Ok(a.or(b)),
    })
}

fn inconsistent(interop: u32) -> Response {
    let mut r = problem(
        StatusCode::BAD_REQUEST,
        interop,
        INCONSISTENT_LENGTH,
        "inconsistent length values for upload",
        serde_json::Value::Null,
    );
    let (name, value) = draft::complete_header(interop, false);
    r.headers_mut().insert(name, HeaderValue::from_static(value));
    r
}

/// `PUT` or `POST` on a slot URL with the draft's headers: creates an upload resource and
/// takes the request's content into it.
pub async fn create<B>(
    state: &AppState,
    config: &Config,
    slot: Slot,
    interop: u32,
    request: Request<B>,
) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let engine = state.engine();
    let token = slot.token()?;
    let (head, mut body) = request.into_parts();
    let headers = &head.headers;
    let complete = draft::upload_complete(headers, interop)?;
    let length = match indicated_length(headers, interop, 0, complete)? {
        Ok(n) => n,
        Err(answer) => return Ok(answer),
    };
    let content_type = headers::signed_content_type(headers)?;
    let content_type = if content_type.is_empty() {
        DEFAULT_CONTENT_TYPE
    } else {
        content_type
    };
    match length {
        Some(n) => authorize(state, &slot, &token, n, content_type, CREATE_METHODS)?,
        // A token that signs the size can only be checked against it.
        None if token.protocol.signs_size() => {
            return Err(ApiError::BadRequest(
                "this slot's token signs the file size: send Upload-Length (or Content-Length with Upload-Complete: ?1)",
            ));
        }
        None => authorize(state, &slot, &token, 0, content_type, CREATE_METHODS)?,
    }
    if let Some(n) = length
        && n > config.limits.max_upload_bytes
    {
        return Err(ApiError::TooLarge {
            size: n,
            max: config.limits.max_upload_bytes,
        });
    }
    if state.store().exists(&slot.key).await {
        return Err(ApiError::Exists);
    }
    let new = NewUpload {
        id: random_id(),
        kind: UploadKind::Draft,
        key: slot.key.clone(),
        length,
        content_type: content_type.to_string(),
        metadata: None,
        concat: Concat::None,
    };
    let mut record = engine.create(new, (&config.limits).into()).await?;
    tracing::info!(path = %record.key, id = %record.id, length = ?record.length, interop, "resumable (IETF draft) upload created");
    // The upload resource, before the content: a client whose request breaks off can resume.
    // Not through a proxy: nginx (1.22 at least) takes a 104 from its upstream for the final
    // answer and the real one for its body, which hangs a keep-alive upstream connection.
    if let Some(interim) = head.extensions.get::<Interim>()
        && !through_proxy(headers)
    {
        let mut fields = vec![
            ("Upload-Draft-Interop-Version", interop.to_string()),
            ("Location", location_text(config, &record.id)),
        ];
        if let Some(limit) = upload_limit(config, interop, config.limits.upload_expiry.as_secs())
            && let Ok(limit) = limit.to_str()
        {
            fields.push(("Upload-Limit", limit.to_string()));
        }
        interim.send(104, "Upload Resumption Supported", &fields);
    }
    let id = record.id.clone();
    let outcome = engine
        .with_lock(&id, async |held| {
            append(state, config, &mut record, held, interop, complete, &mut body).await
        })
        .await?;
    // 201 both ways: the file stored (what a PUT answers), or the upload resource made.
    let mut response = match outcome {
        Appended::Done => body::empty(StatusCode::CREATED),
        Appended::Refused(answer) => return Ok(answer),
    };
    response
        .headers_mut()
        .insert(header::LOCATION, location(config, &record.id));
    state_headers(&mut response, config, interop, &record);
    Ok(response)
}

/// Whether the request came through a proxy (one that says so: `Via`, `Forwarded`,
/// `X-Forwarded-For` or `X-Real-IP`).
fn through_proxy(headers: &HeaderMap) -> bool {
    ["via", "forwarded", "x-forwarded-for", "x-real-ip"]
        .iter()
        .any(|name| headers.contains_key(*name))
}

/// How an append ended when it did not fail.
enum Appended {
    /// The content is in (and the upload finished, when it said so).
    Done,
    /// An answer the draft prescribes (inconsistent length).
    Refused(Response),
}

/// Appends the request's content to a locked upload; when the request completes the upload,
/// checks the length and finishes it into the store.
async fn append<B>(
    state: &AppState,
    config: &Config,
    record: &mut UploadRecord,
    held: &Held,
    interop: u32,
    complete: bool,
    body: &mut B,
) -> Result<Appended, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let engine = state.engine();
    let limit = record.length.unwrap_or(config.limits.max_upload_bytes);
    let room = limit.saturating_sub(record.offset);
    let bounds = Append {
        max_bytes: room,
        checksum: None,
        read_timeout: config.limits.read_timeout,
        expiry: config.limits.upload_expiry,
        max_unfinished_bytes: config.limits.max_unfinished_bytes,
    };
    let ended = engine.append(record, held, body, bounds).await?;
    match ended {
        Ended::TooLong => {
            return Err(ApiError::TooLarge {
                size: limit.saturating_add(1),
                max: limit,
            });
        }
        Ended::Complete => {}
        Ended::Stopped => return Err(ApiError::Locked),
        Ended::BrokenOff => return Err(ApiError::BadRequest("request body ended early")),
        Ended::TimedOut => return Err(ApiError::BodyTimeout),
        Ended::ShuttingDown => return Err(ApiError::Unavailable("shutting down".into())),
        Ended::ChecksumMismatch => return Err(ApiError::ChecksumMismatch),
    }
    // The upload ends when a request says so, or when its offset reaches the length declared
    // for it (no byte can follow: the offset may never pass it). The second is what
    // tus-js-client's draft modes need: their last append of a file read as a stream says
    // `Upload-Complete: ?0`, and they count the upload done at offset = length.
    let reached = record.length == Some(record.offset);
    if !complete && !reached {
        return Ok(Appended::Done);
    }
    // The request ends the upload: its length is what came, and must be what was said.
    match record.length {
        Some(n) if n != record.offset => return Ok(Appended::Refused(inconsistent(interop))),
        Some(_) => {}
        None => {
            engine
                .set_length(record, record.offset, config.limits.upload_expiry)
                .await?
        }
    }
    engine.finish(record, config.store.checksum_verification).await?;
    engine.remember_completed(record, config.limits.upload_expiry).await;
    record.completed = true;
    Ok(Appended::Done)
}

/// Loads an upload resource's record: 404 when unknown or expired.
async fn load(state: &AppState, id: &str) -> Result<UploadRecord, ApiError> {
    match state.engine().load(id, UploadKind::Draft).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) | Err(crate::resumable::EngineError::Expired) => Err(ApiError::NotFound),
        Err(e) => Err(e.into()),
    }
}

/// `HEAD` (or `GET`) on an upload resource: its offset, completeness, length and limits.
pub async fn offset(state: &AppState, config: &Config, id: &str, headers: &HeaderMap) -> Result<Response, ApiError> {
    let interop = draft::interop_version(headers)?.unwrap_or(*draft::INTEROP_VERSIONS.end());
    let record = load(state, id).await?;
    let mut response = body::empty(StatusCode::NO_CONTENT);
    state_headers(&mut response, config, interop, &record);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `PATCH` on an upload resource: appends at `Upload-Offset`.
pub async fn patch<B>(state: &AppState, config: &Config, id: &str, request: Request<B>) -> Result<Response, ApiError>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let (head, mut body) = request.into_parts();
    let headers = &head.headers;
    let interop = draft::interop_version(headers)?.unwrap_or(*draft::INTEROP_VERSIONS.end());
    if interop >= 6
        && !headers
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(PARTIAL_UPLOAD.as_bytes()))
    {
        return Err(ApiError::UnsupportedMediaType);
    }
    let claimed = headers::number(headers, "upload-offset")?.ok_or(ApiError::BadRequest("Upload-Offset required"))?;
    let complete = draft::upload_complete(headers, interop)?;
    load(state, id).await?;
    let (record, outcome) = state
        .engine()
        .with_lock(id, async |held| {
            let mut record = load(state, id).await?;
            // Completing a completed upload again, with no content: its answer once more
            // (the client may have lost it).
            let empty = headers::content_length(headers)? == Some(0) || http_body::Body::is_end_stream(&body);
            if record.completed && complete && claimed == record.offset && empty {
                return Ok((record, Some(Appended::Done)));
            }
            if record.completed || claimed != record.offset {
                return Ok((record, None));
            }
            let length = match indicated_length(headers, interop, record.offset, complete)? {
                Ok(n) => n,
                Err(answer) => return Ok((record, Some(Appended::Refused(answer)))),
            };
            match (record.length, length) {
                (Some(a), Some(b)) if a != b => return Ok((record, Some(Appended::Refused(inconsistent(interop))))),
                (None, Some(n)) => {
                    if n > config.limits.max_upload_bytes {
                        return Err(ApiError::TooLarge {
                            size: n,
                            max: config.limits.max_upload_bytes,
                        });
                    }
                    if n < record.offset {
                        return Ok((record, Some(Appended::Refused(inconsistent(interop)))));
                    }
                    state
                        .engine()
                        .set_length(&mut record, n, config.limits.upload_expiry)
                        .await?;
                }
                _ => {}
            }
            let appended = append(state, config, &mut record, held, interop, complete, &mut body).await?;
            Ok::<_, ApiError>((record, Some(appended)))
        })
        .await?;
    let mut response = match outcome {
        // A wrong offset, or an upload that is complete already.
        None => {
            let mut r = problem(
                StatusCode::CONFLICT,
                interop,
                MISMATCHING_OFFSET,
                "offset from request does not match offset of resource",
                serde_json::json!({ "expected-offset": record.offset, "provided-offset": claimed }),
            );
            state_headers(&mut r, config, interop, &record);
            return Ok(r);
        }
        Some(Appended::Refused(answer)) => return Ok(answer),
        Some(Appended::Done) if record.completed => body::empty(StatusCode::CREATED),
        Some(Appended::Done) => body::empty(StatusCode::NO_CONTENT),
    };
    state_headers(&mut response, config, interop, &record);
    Ok(response)
}

/// `DELETE` on an upload resource: cancels it.
pub async fn cancel(state: &AppState, id: &str) -> Result<Response, ApiError> {
    load(state, id).await?;
    state
        .engine()
        .with_lock(id, async |_| {
            let record = load(state, id).await?;
            state.engine().forget(&record).await.map_err(ApiError::from)
        })
        .await?;
    tracing::info!(%id, "resumable (IETF draft) upload cancelled");
    Ok(body::empty(StatusCode::NO_CONTENT))
}
