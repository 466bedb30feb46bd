//! The whole request handler, in process: sequences of requests (plain PUTs, tus creations and
//! appends, session resumes, downloads, deletes, and raw requests of any method, target and
//! headers) against a server over a store in a temporary folder. Requests the fuzzer shapes
//! are signed with the server's secret (or not, or wrongly, as it chooses), so it explores
//! past the token check.
//!
//! Invariants after every request: no panic; nothing is created outside the store's folder;
//! a file is visible at a final URL only after an upload of that path was answered with
//! success (201 for a PUT or a creation, 204 for the PATCH that completed it), and a file
//! stored by a plain PUT holds exactly the body that PUT sent, whatever came later (no
//! overwrite, no partial file); a file answered as deleted is gone.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;

use arbitrary::Arbitrary;
use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use hmac_file_server::app::AppState;
use hmac_file_server::auth::{sign_delete, sign_v, sign_v2, sign_v3};
use hmac_file_server::config::{Config, Secret, Sources};
use hmac_file_server::http::handle;
use hmac_file_server::key::{FileKey, INTERNAL_DIR};
use hmac_file_server::resumable::Engine;
use hmac_file_server::state::UploadState;
use hmac_file_server::state::embedded::EmbeddedState;
use hmac_file_server::store::{LocalStore, RetryPolicy, Store};
use http::{Method, Request, StatusCode};
use http_body::Frame;
use http_body_util::StreamBody;
use libfuzzer_sys::fuzz_target;

mod common;
use common::runtime;
use tokio_util::sync::CancellationToken;

const SECRET: &str = "fuzz-handler-secret-0123456789";
const MAX_UPLOAD: u64 = 4096;
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
/// The slots the fuzzer uploads to (by index), with spellings that need encoding.
const KEYS: &[&str] = &["a/one.txt", "a/two.bin", "b/x y.jpg", "c/\u{fc}.png"];
const SESSIONS: &[&str] = &["session-token-aaaaaaaa", "session-token-bbbbbbbb"];
const HEADERS: &[&str] = &[
    "content-type",
    "range",
    "if-range",
    "if-none-match",
    "if-modified-since",
    "content-digest",
    "repr-digest",
    "want-repr-digest",
    "upload-checksum",
    "upload-metadata",
    "upload-concat",
    "upload-defer-length",
    "upload-length",
    "upload-offset",
    "tus-resumable",
    "x-forwarded-for",
    "origin",
    "transfer-encoding",
    "expect",
];

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    requests: Vec<Req<'a>>,
}

#[derive(Arbitrary, Debug)]
enum Req<'a> {
    Put {
        slot: u8,
        body: Body<'a>,
        /// Content-Length to send, when not the body's length.
        declared: Option<u16>,
        token: Tok,
        session: Option<u8>,
        /// Content-Range `bytes first-(total-1)/total`.
        range: Option<(u16, u16)>,
        headers: Vec<(u8, &'a [u8])>,
    },
    TusCreate {
        slot: u8,
        length: Option<u16>,
        body: Body<'a>,
        token: Tok,
        headers: Vec<(u8, &'a [u8])>,
    },
    TusPatch {
        upload: u8,
        offset: u16,
        body: Body<'a>,
        headers: Vec<(u8, &'a [u8])>,
    },
    TusHead {
        upload: u8,
    },
    TusDelete {
        upload: u8,
    },
    SessionHead {
        slot: u8,
        size: u16,
        session: u8,
        token: Tok,
    },
    Get {
        slot: u8,
        head: bool,
        headers: Vec<(u8, &'a [u8])>,
    },
    Delete {
        slot: u8,
        good: bool,
    },
    Raw {
        method: &'a [u8],
        target: &'a str,
        headers: Vec<(&'a str, &'a [u8])>,
        body: Body<'a>,
    },
}

/// How a request is signed.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Tok {
    V,
    V2,
    V3 {
        expired: bool,
    },
    /// A v token for another size.
    WrongSize(u16),
    /// Not signed with the secret.
    Forged,
    None,
}

#[derive(Arbitrary, Debug)]
struct Body<'a> {
    chunks: Vec<&'a [u8]>,
    /// The client goes away after the chunks.
    broken: bool,
}

type Frames = Pin<Box<dyn Stream<Item = Result<Frame<Bytes>, io::Error>> + Send + Sync>>;

impl Body<'_> {
    fn bytes(&self) -> Vec<u8> {
        self.chunks.concat()
    }

    fn stream(&self) -> StreamBody<Frames> {
        let mut items: Vec<Result<Frame<Bytes>, io::Error>> = self
            .chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        if self.broken {
            items.push(Err(io::Error::new(io::ErrorKind::ConnectionReset, "client went away")));
        }
        StreamBody::new(Box::pin(stream::iter(items)))
    }
}

fn key(slot: u8) -> &'static str {
    KEYS[usize::from(slot) % KEYS.len()]
}

/// The URL path of a key, percent-encoded as a client would.
fn url_path(key: &str) -> String {
    format!("/upload/{}", common::encode_path(key))
}

fn signed(key: &str, method: &str, size: u64, content_type: &str, token: Tok) -> String {
    let secret = Secret::new(SECRET);
    let path = url_path(key);
    match token {
        Tok::V => format!("{path}?v={}", sign_v(&secret, key, size)),
        Tok::V2 => format!("{path}?v2={}", sign_v2(&secret, key, size, content_type)),
        Tok::V3 { expired } => {
            let expires = if expired { 1 } else { 4_000_000_000 };
            format!(
                "{path}?v3={}&expires={expires}",
                sign_v3(&secret, method, expires, &format!("/upload/{key}"))
            )
        }
        Tok::WrongSize(other) => format!("{path}?v={}", sign_v(&secret, key, u64::from(other))),
        Tok::Forged => format!("{path}?v={}", sign_v(&Secret::new("not-the-secret"), key, size)),
        Tok::None => path,
    }
}

fn add_headers(mut request: http::request::Builder, headers: &[(u8, &[u8])]) -> http::request::Builder {
    for (name, value) in headers {
        if let Ok(value) = http::HeaderValue::from_bytes(value) {
            request = request.header(HEADERS[usize::from(*name) % HEADERS.len()], value);
        }
    }
    request
}

/// What the uploads so far allow to be stored.
#[derive(Default)]
struct Allowed {
    /// Keys whose upload was answered with success; the bytes when a plain PUT sent them whole.
    stored: BTreeMap<String, Option<Vec<u8>>>,
    /// tus upload resources created so far: Location, key, Upload-Length when given.
    uploads: Vec<Upload>,
}

struct Upload {
    location: String,
    key: &'static str,
    length: Option<u64>,
}

struct Server {
    jail: tempfile::TempDir,
    state: AppState,
    store: Store,
}

fn server() -> Server {
    let jail = tempfile::tempdir().unwrap();
    let root = jail.path().join("store");
    std::fs::create_dir(&root).unwrap();
    let config_path = jail.path().join("config.toml");
    let mut file = std::fs::File::create(&config_path).unwrap();
    write!(
        file,
        "Secret = \"{SECRET}\"\nStoreDir = '{}'\nUploadSubDir = \"upload\"\nMaxUploadSize = {MAX_UPLOAD}\nBufferSize = 4096\nBlockAfterFails = 0\nChecksumVerification = true\nMaxUnfinishedSize = 16384\n",
        root.display()
    )
    .unwrap();
    let config = Config::load(&Sources {
        file: Some(config_path),
        ..Sources::default()
    })
    .unwrap();
    let store = Store::Local(LocalStore::open(&root, "upload", 4096, RetryPolicy::NONE).unwrap());
    let upload_state = UploadState::Embedded(EmbeddedState::open(&root.join(INTERNAL_DIR).join("uploads")).unwrap());
    let engine = Engine::new(upload_state.clone(), store.clone(), CancellationToken::new());
    let state = AppState::new(Arc::new(config), store.clone(), upload_state, engine);
    Server { jail, state, store }
}

fuzz_target!(|input: Input<'_>| {
    if input.requests.len() > 12 {
        return;
    }
    runtime().block_on(async {
        let server = server();
        let mut allowed = Allowed::default();
        for req in &input.requests {
            run(&server, &mut allowed, req).await;
            check(&server, &allowed).await;
        }
    });
});

async fn send(server: &Server, request: Request<StreamBody<Frames>>) -> (StatusCode, http::HeaderMap) {
    let response = handle(server.state.clone(), Some(CLIENT), request).await;
    let status = response.status();
    let headers = response.headers().clone();
    // Read the answer's body, as a client would (a download streams from the store).
    let mut body = response.into_body();
    while let Some(frame) = http_body_util::BodyExt::frame(&mut body).await {
        if frame.is_err() {
            break;
        }
    }
    (status, headers)
}

async fn run(server: &Server, allowed: &mut Allowed, req: &Req<'_>) {
    match req {
        Req::Put {
            slot,
            body,
            declared,
            token,
            session,
            range,
            headers,
        } => {
            let key = key(*slot);
            let bytes = body.bytes();
            let length = declared.map_or(bytes.len() as u64, u64::from);
            let size = match range {
                Some((_, total)) => u64::from(*total),
                None => length,
            };
            let content_type = "application/octet-stream";
            let mut request = Request::builder()
                .method(Method::PUT)
                .uri(signed(key, "PUT", size, content_type, *token))
                .header("content-length", length)
                .header("content-type", content_type);
            if let Some(s) = session {
                request = request.header("x-session-token", SESSIONS[usize::from(*s) % SESSIONS.len()]);
            }
            if let Some((first, total)) = range {
                request = request.header(
                    "content-range",
                    format!("bytes {first}-{}/{total}", u64::from(*total).saturating_sub(1)),
                );
            }
            let request = add_headers(request, headers).body(body.stream()).unwrap();
            let (status, _) = send(server, request).await;
            if status.is_success() {
                let whole = range.is_none() && session.is_none() && !body.broken && bytes.len() as u64 == length;
                note_stored(allowed, key, whole.then_some(bytes));
            }
        }
        Req::TusCreate {
            slot,
            length,
            body,
            token,
            headers,
        } => {
            let key = key(*slot);
            let size = length.map_or(0, u64::from);
            let mut request = Request::builder()
                .method(Method::POST)
                .uri(signed(key, "POST", size, "application/octet-stream", *token))
                .header("tus-resumable", "1.0.0");
            match length {
                Some(l) => request = request.header("upload-length", *l),
                None => request = request.header("upload-defer-length", "1"),
            }
            let bytes = body.bytes();
            if !bytes.is_empty() {
                request = request
                    .header("content-type", "application/offset+octet-stream")
                    .header("content-length", bytes.len());
            }
            let request = add_headers(request, headers).body(body.stream()).unwrap();
            let (status, answer) = send(server, request).await;
            if !status.is_success() {
                return;
            }
            let length = length.map(u64::from).or_else(|| {
                header_value(headers, "upload-length").and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            });
            let concat_final = header_value(headers, "upload-concat").is_some_and(|v| v.starts_with(b"final"));
            // A final concatenation is stored at once; any other upload when its body made it whole.
            if concat_final || (length.is_some() && offset(&answer) == length) {
                note_stored(allowed, key, None);
            }
            if let Some(location) = answer.get("location").and_then(|v| v.to_str().ok()) {
                allowed.uploads.push(Upload {
                    location: location.to_string(),
                    key,
                    length,
                });
            }
        }
        Req::TusPatch {
            upload,
            offset: at,
            body,
            headers,
        } => {
            let Some((location, key, length)) = pick(allowed, *upload) else {
                return;
            };
            let bytes = body.bytes();
            let request = Request::builder()
                .method(Method::PATCH)
                .uri(location)
                .header("tus-resumable", "1.0.0")
                .header("content-type", "application/offset+octet-stream")
                .header("upload-offset", *at)
                .header("content-length", bytes.len());
            let request = add_headers(request, headers).body(body.stream()).unwrap();
            let (status, answer) = send(server, request).await;
            // A deferred length is given by the PATCH that says it.
            let length = length.or_else(|| {
                header_value(headers, "upload-length").and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
            });
            if status.is_success() && length.is_some() && offset(&answer) == length {
                note_stored(allowed, key, None);
            }
        }
        Req::TusHead { upload } => {
            let Some((location, ..)) = pick(allowed, *upload) else {
                return;
            };
            let request = Request::builder()
                .method(Method::HEAD)
                .uri(location)
                .header("tus-resumable", "1.0.0");
            send(server, request.body(empty()).unwrap()).await;
        }
        Req::TusDelete { upload } => {
            let Some((location, ..)) = pick(allowed, *upload) else {
                return;
            };
            let request = Request::builder()
                .method(Method::DELETE)
                .uri(location)
                .header("tus-resumable", "1.0.0");
            send(server, request.body(empty()).unwrap()).await;
        }
        Req::SessionHead {
            slot,
            size,
            session,
            token,
        } => {
            let key = key(*slot);
            let request = Request::builder()
                .method(Method::HEAD)
                .uri(signed(
                    key,
                    "HEAD",
                    u64::from(*size),
                    "application/octet-stream",
                    *token,
                ))
                .header("x-session-token", SESSIONS[usize::from(*session) % SESSIONS.len()]);
            send(server, request.body(empty()).unwrap()).await;
        }
        Req::Get { slot, head, headers } => {
            let method = if *head { Method::HEAD } else { Method::GET };
            let request = add_headers(Request::builder().method(method).uri(url_path(key(*slot))), headers);
            send(server, request.body(empty()).unwrap()).await;
        }
        Req::Delete { slot, good } => {
            let key = key(*slot);
            let secret = Secret::new(if *good { SECRET } else { "not-the-secret" });
            let token = sign_delete(&secret, key, &secret);
            let request = Request::builder()
                .method(Method::DELETE)
                .uri(format!("{}?token={token}", url_path(key)));
            let (status, _) = send(server, request.body(empty()).unwrap()).await;
            if status.is_success() {
                allowed.stored.remove(key);
                assert!(
                    stored_keys(server).await.iter().all(|k| k != key),
                    "{key} answered {status} to DELETE and is still there"
                );
            }
        }
        Req::Raw {
            method,
            target,
            headers,
            body,
        } => {
            let Ok(method) = Method::from_bytes(method) else { return };
            let mut request = Request::builder().method(method).uri(*target);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let Ok(request) = request.body(body.stream()) else {
                return;
            };
            // Any key it reaches may hold what it sent: it is not checked for content.
            let (status, _) = send(server, request).await;
            if status.is_success() {
                // A raw PATCH may complete any tus upload.
                let reached: Vec<&str> = allowed.uploads.iter().map(|u| u.key).collect();
                for key in reached {
                    note_stored(allowed, key, None);
                }
                for key in KEYS {
                    if target.contains(&url_path(key)) || target.contains(key) {
                        note_stored(allowed, key, None);
                    }
                }
                if let Ok(uri) = target.parse::<http::Uri>()
                    && let Some(rest) = uri.path().strip_prefix("/upload/")
                    && let Ok(k) = FileKey::from_url_path(rest)
                {
                    note_stored(allowed, k.as_str(), None);
                }
            }
        }
    }
}

/// The Upload-Offset of a tus answer.
fn offset(answer: &http::HeaderMap) -> Option<u64> {
    answer.get("upload-offset")?.to_str().ok()?.parse().ok()
}

/// The value the fuzzer gave a header, if it gave one.
fn header_value<'a>(headers: &[(u8, &'a [u8])], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .rev()
        .find(|(n, _)| HEADERS[usize::from(*n) % HEADERS.len()] == name)
        .map(|(_, v)| *v)
}

fn note_stored(allowed: &mut Allowed, key: &str, bytes: Option<Vec<u8>>) {
    // The first success wins: a later upload of the same path must not replace it.
    let entry = allowed.stored.entry(key.to_string()).or_insert(None);
    if entry.is_none() {
        *entry = bytes;
    }
}

fn pick(allowed: &Allowed, index: u8) -> Option<(String, &'static str, Option<u64>)> {
    if allowed.uploads.is_empty() {
        return None;
    }
    let upload = &allowed.uploads[usize::from(index) % allowed.uploads.len()];
    Some((upload.location.clone(), upload.key, upload.length))
}

fn empty() -> StreamBody<Frames> {
    StreamBody::new(Box::pin(stream::empty()))
}

async fn stored_keys(server: &Server) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut listed = server.store.list();
    while let Some(file) = listed.next().await {
        out.insert(file.expect("the store lists").key.as_str().to_string());
    }
    out
}

async fn check(server: &Server, allowed: &Allowed) {
    // Nothing outside the store's folder (the config file is the harness's own).
    for entry in std::fs::read_dir(server.jail.path()).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(
            name == "store" || name == "config.toml",
            "created outside the store: {name:?}"
        );
    }
    for key in stored_keys(server).await {
        let Some(expected) = allowed.stored.get(&key) else {
            panic!("{key} is visible but no upload of it was answered with success");
        };
        if let Some(expected) = expected {
            let opened = server
                .store
                .open(&FileKey::parse_decoded(&key).unwrap(), false)
                .await
                .unwrap();
            let mut bytes = Vec::new();
            let size = opened.info.size;
            let mut stream = opened.stream(0, size);
            while let Some(piece) = stream.next().await {
                bytes.extend_from_slice(&piece.unwrap());
            }
            assert_eq!(&bytes, expected, "{key} does not hold what its 201 PUT sent");
        }
    }
}
