//! In-process tests of the request handlers: requests go through [`super::handle`] (the
//! whole pipeline: endpoint, handler, error answer) into an [`AppState`] over the local store and the embedded state in a temporary folder, loaded from
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

mod put;
mod resumable;

pub(super) const SECRET: &str = "unit-test-secret-0123456789";
pub(super) const MAX_UPLOAD_BYTES: u64 = 64 * 1024;
/// BufferSize: a PUT larger than this is refused with 409 before its body is read.
pub(super) const BUFFER_BYTES: usize = 4096;
pub(super) const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
/// A session token the client chose (X-Session-Token).
pub(super) const SESSION: &str = "client-chosen-session-0123";

pub(super) struct Server {
    _dir: tempfile::TempDir,
    pub(super) state: AppState,
    pub(super) store: Store,
}

/// A server's state as `server::run` builds it, from a TOML file.
pub(super) fn server() -> Server {
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
pub(super) fn slot(key: &str, size: u64) -> String {
    format!("/upload/{key}?v={}", sign_v(&Secret::new(SECRET), key, size))
}

pub(super) type FrameResult = Result<Frame<Bytes>, io::Error>;
pub(super) type TestBody = StreamBody<Pin<Box<dyn Stream<Item = FrameResult> + Send + Sync>>>;

/// A body of these frames (data or failures), then its end.
pub(super) fn frames(items: Vec<FrameResult>) -> TestBody {
    StreamBody::new(Box::pin(stream::iter(items)))
}

pub(super) fn data(bytes: &[u8]) -> FrameResult {
    Ok(Frame::data(Bytes::copy_from_slice(bytes)))
}

/// `len` bytes that differ from one position to the next.
pub(super) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

pub(super) fn put_request<B>(uri: &str, content_length: u64, session: Option<&str>, body: B) -> Request<B> {
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
    pub(super) async fn send<B>(&self, request: Request<B>) -> Response
    where
        B: http_body::Body<Data = Bytes> + Unpin + Send + Sync + 'static,
        B::Error: std::fmt::Display + Send,
    {
        handle(self.state.clone(), Some(CLIENT), request).await
    }

    /// PUTs `bytes` whole, with a token for their size.
    pub(super) async fn put(&self, key: &str, bytes: &[u8]) -> Response {
        let len = bytes.len() as u64;
        let body = Full::new(Bytes::copy_from_slice(bytes));
        self.send(put_request(&slot(key, len), len, None, body)).await
    }

    /// The bytes of the finished file at `key`, if there is one.
    pub(super) async fn file(&self, key: &str) -> Option<Vec<u8>> {
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
    pub(super) async fn assert_nothing_stored(&self) {
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
    pub(super) async fn session_head(&self, key: &str, size: u64) -> Result<(u64, u64), StatusCode> {
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
