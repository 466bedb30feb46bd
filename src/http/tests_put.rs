//! Tests of the whole-file PUT ([`super::put`]) in process: requests go through
//! [`super::handle`] (the whole pipeline: endpoint, handler, error answer) into an
//! [`AppState`] over the local store and the embedded state in a temporary folder, loaded from
//! a TOML file like the server's. Bodies are built in the test, so it decides when a body ends
//! early or fails. What is stored is checked through the store's seams (this layer reaches no
//! file itself).

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt, stream};
use http::{Method, Request, StatusCode};
use http_body::Frame;
use http_body_util::{Full, StreamBody};
use tokio_util::sync::CancellationToken;

use super::{Response, handle};
use crate::app::AppState;
use crate::auth::sign_v;
use crate::config::{Config, Secret, Sources};
use crate::key::{FileKey, INTERNAL_DIR};
use crate::resumable::Engine;
use crate::state::UploadState;
use crate::state::embedded::EmbeddedState;
use crate::store::{LocalStore, RetryPolicy, Store};

const SECRET: &str = "unit-test-secret-0123456789";
const MAX_UPLOAD_BYTES: u64 = 64 * 1024;
/// BufferSize: a PUT larger than this is refused with 409 before its body is read.
const BUFFER_BYTES: usize = 4096;
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
/// A session token the client chose (X-Session-Token).
const SESSION: &str = "client-chosen-session-0123";

struct Server {
    _dir: tempfile::TempDir,
    state: AppState,
    store: Store,
}

/// A server's state as `server::run` builds it, from a TOML file.
fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    write!(
        file,
        "Secret = \"{SECRET}\"\nStoreDir = '{}'\nUploadSubDir = \"upload\"\nMaxUploadSize = {MAX_UPLOAD_BYTES}\nBufferSize = {BUFFER_BYTES}\n",
        dir.path().display()
    )
    .unwrap();
    let config = Config::load(&Sources {
        file: Some(file.path().to_path_buf()),
        ..Sources::default()
    })
    .unwrap();
    let store = Store::Local(LocalStore::open(dir.path(), "upload", BUFFER_BYTES, RetryPolicy::NONE).unwrap());
    let upload_state =
        UploadState::Embedded(EmbeddedState::open(&dir.path().join(INTERNAL_DIR).join("uploads")).unwrap());
    let engine = Engine::new(upload_state.clone(), store.clone(), CancellationToken::new());
    let state = AppState::new(Arc::new(config), store.clone(), upload_state, engine);
    Server {
        _dir: dir,
        state,
        store,
    }
}

/// The slot URL for `key`, with a v token for `size` bytes.
fn slot(key: &str, size: u64) -> String {
    format!("/upload/{key}?v={}", sign_v(&Secret::new(SECRET), key, size))
}

type FrameResult = Result<Frame<Bytes>, io::Error>;
type TestBody = StreamBody<Pin<Box<dyn Stream<Item = FrameResult> + Send + Sync>>>;

/// A body of these frames (data or failures), then its end.
fn frames(items: Vec<FrameResult>) -> TestBody {
    StreamBody::new(Box::pin(stream::iter(items)))
}

fn data(bytes: &[u8]) -> FrameResult {
    Ok(Frame::data(Bytes::copy_from_slice(bytes)))
}

/// `len` bytes that differ from one position to the next.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn put_request<B>(uri: &str, content_length: u64, session: Option<&str>, body: B) -> Request<B> {
    let mut request = Request::builder()
        .method(Method::PUT)
        .uri(uri)
        .header("content-length", content_length);
    if let Some(token) = session {
        request = request.header("x-session-token", token);
    }
    request.body(body).unwrap()
}

impl Server {
    async fn send<B>(&self, request: Request<B>) -> Response
    where
        B: http_body::Body<Data = Bytes> + Unpin + Send + Sync + 'static,
        B::Error: std::fmt::Display + Send,
    {
        handle(self.state.clone(), Some(CLIENT), request).await
    }

    /// PUTs `bytes` whole, with a token for their size.
    async fn put(&self, key: &str, bytes: &[u8]) -> Response {
        let len = bytes.len() as u64;
        let body = Full::new(Bytes::copy_from_slice(bytes));
        self.send(put_request(&slot(key, len), len, None, body)).await
    }

    /// The bytes of the finished file at `key`, if there is one.
    async fn file(&self, key: &str) -> Option<Vec<u8>> {
        let opened = self
            .store
            .open(&FileKey::parse_decoded(key).unwrap(), false)
            .await
            .ok()?;
        let size = opened.info.size;
        let mut out = Vec::new();
        let mut bytes = opened.stream(0, size);
        while let Some(piece) = bytes.next().await {
            out.extend_from_slice(&piece.unwrap());
        }
        Some(out)
    }

    /// Checks that nothing is stored: no finished file, no staged upload, no partial upload.
    async fn assert_nothing_stored(&self) {
        let mut listed = self.store.list();
        if let Some(file) = listed.next().await {
            panic!("a file was stored: {file:?}");
        }
        // Everything in the store's temporary and partial folders is older than no time.
        assert_eq!(
            self.store.sweep_staging(Duration::ZERO).await.unwrap(),
            0,
            "no temporary left"
        );
        assert_eq!(
            self.store.partials().sweep(Duration::ZERO).await.unwrap(),
            Vec::<String>::new(),
            "no partial upload kept"
        );
    }

    /// The session HEAD: the partial upload's offset and length, or the status.
    async fn session_head(&self, key: &str, size: u64) -> Result<(u64, u64), StatusCode> {
        let request = Request::builder()
            .method(Method::HEAD)
            .uri(slot(key, size))
            .header("x-session-token", SESSION)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = self.send(request).await;
        if response.status() != StatusCode::OK {
            return Err(response.status());
        }
        let number = |name: &str| -> u64 { response.headers()[name].to_str().unwrap().parse().unwrap() };
        Ok((number("upload-offset"), number("upload-length")))
    }
}

#[tokio::test]
async fn a_whole_put_answers_201_and_stores_exactly_the_body() {
    let server = server();
    let bytes = pattern(10_000);
    let response = server.put("a/photo.jpg", &bytes).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(
        response.headers().contains_key("x-session-token"),
        "every PUT answer has one"
    );
    assert_eq!(server.file("a/photo.jpg").await, Some(bytes));
    assert_eq!(
        server.store.sweep_staging(Duration::ZERO).await.unwrap(),
        0,
        "no temporary left"
    );
}

#[tokio::test]
async fn a_second_put_to_a_key_answers_409_and_leaves_the_first_file() {
    let server = server();
    // Small bodies are refused by the commit, large ones before their body is read.
    for (key, len) in [("small", 100), ("large", BUFFER_BYTES + 1)] {
        let first = pattern(len);
        assert_eq!(server.put(key, &first).await.status(), StatusCode::CREATED);
        let second = vec![b'x'; len];
        assert_eq!(server.put(key, &second).await.status(), StatusCode::CONFLICT, "{key}");
        assert_eq!(server.file(key).await, Some(first), "{key}");
    }
    assert_eq!(
        server.store.sweep_staging(Duration::ZERO).await.unwrap(),
        0,
        "no temporary left"
    );
}

#[tokio::test]
async fn a_wrong_token_answers_403_and_stores_nothing() {
    let server = server();
    let bytes = pattern(1000);
    let v = |secret: &str, key: &str, size: u64| sign_v(&Secret::new(secret), key, size);
    let wrong = [
        ("size", v(SECRET, "secret/file", 999)),
        ("path", v(SECRET, "other/file", 1000)),
        ("secret", v("another-secret-0123456789", "secret/file", 1000)),
    ];
    for (what, token) in wrong {
        let uri = format!("/upload/secret/file?v={token}");
        let body = Full::new(Bytes::copy_from_slice(&bytes));
        let response = server.send(put_request(&uri, 1000, Some(SESSION), body)).await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "wrong {what}");
    }
    server.assert_nothing_stored().await;
}

#[tokio::test]
async fn a_put_over_max_upload_size_answers_413_and_stores_nothing() {
    let server = server();
    let bytes = pattern(MAX_UPLOAD_BYTES as usize + 1);
    let response = server.put("too/big", &bytes).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    server.assert_nothing_stored().await;
    let at_limit = pattern(MAX_UPLOAD_BYTES as usize);
    assert_eq!(server.put("at/limit", &at_limit).await.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_body_shorter_than_content_length_answers_400_and_stores_nothing() {
    let server = server();
    let bytes = pattern(5000);
    let ends_early = frames(vec![data(&bytes[..3000])]);
    let fails = frames(vec![data(&bytes[..3000]), Err(io::Error::other("connection reset"))]);
    for body in [ends_early, fails] {
        let response = server.send(put_request(&slot("short", 5000), 5000, None, body)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        // Without a token of its own the client cannot come back for the bytes.
        server.assert_nothing_stored().await;
    }
}

#[tokio::test]
async fn a_broken_off_put_with_a_session_token_is_kept_and_resumed_with_content_range() {
    let server = server();
    let bytes = pattern(20_000);
    let body = frames(vec![
        data(&bytes[..6000]),
        data(&bytes[6000..7000]),
        Err(io::Error::other("connection reset")),
    ]);
    let response = server
        .send(put_request(&slot("resumed/file", 20_000), 20_000, Some(SESSION), body))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()["x-session-token"], SESSION);
    assert_eq!(server.file("resumed/file").await, None, "nothing at the key");
    assert_eq!(
        server.store.sweep_staging(Duration::ZERO).await.unwrap(),
        0,
        "no temporary left"
    );
    assert_eq!(server.session_head("resumed/file", 20_000).await, Ok((7000, 20_000)));

    let rest = Full::new(Bytes::copy_from_slice(&bytes[7000..]));
    let mut resume = put_request(&slot("resumed/file", 20_000), 13_000, Some(SESSION), rest);
    resume
        .headers_mut()
        .insert("content-range", "bytes 7000-19999/20000".parse().unwrap());
    assert_eq!(server.send(resume).await.status(), StatusCode::CREATED);
    assert_eq!(server.file("resumed/file").await, Some(bytes));
    assert_eq!(
        server.session_head("resumed/file", 20_000).await,
        Err(StatusCode::NOT_FOUND),
        "the partial upload is forgotten"
    );
    assert_eq!(
        server.store.partials().sweep(Duration::ZERO).await.unwrap(),
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn a_put_that_ends_early_with_a_session_token_keeps_its_bytes_for_resumption() {
    let server = server();
    let bytes = pattern(5000);
    let body = frames(vec![data(&bytes[..1234])]);
    let response = server
        .send(put_request(&slot("early", 5000), 5000, Some(SESSION), body))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(server.session_head("early", 5000).await, Ok((1234, 5000)));
    // A whole PUT of the same session replaces the partial upload.
    let whole = Full::new(Bytes::copy_from_slice(&bytes));
    let response = server
        .send(put_request(&slot("early", 5000), 5000, Some(SESSION), whole))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(server.file("early").await, Some(bytes));
    assert_eq!(server.session_head("early", 5000).await, Err(StatusCode::NOT_FOUND));
}
