//! The floor of this server's HTTP stack, for the benchmark (`scripts/bench.sh --only floor`):
//! a bare hyper 1 HTTP/1.1 server on a tokio multi-thread runtime, built with the same crates,
//! runtime defaults and connection settings as the server, with none of its work: no token,
//! no routing beyond the `/upload/` prefix, no headers beyond hyper's own `date` and
//! `content-length`, no log, no metrics, no limits. What a request costs here is hyper, tokio
//! and the kernel; through the real server it cannot cost less.
//!
//! - `floor get BYTES`: every GET is answered with 200 and the same BYTES held in memory (no
//!   file system). How far this is from nginx shows what a download target measured against
//!   nginx asks of the HTTP stack itself.
//! - `floor get-store DIR`: every `GET /upload/<key>` is answered with 200 and the file at that
//!   key of the server's store at DIR, opened by the server's own store code
//!   (`LocalStore::open_file`: lookups, the defaults mark, the small file's mapping) and sent
//!   through the server's connection layer (`ZeroCopy`: `sendfile`), with nothing else: no
//!   token, routing, response headers beyond hyper's, log or metrics. Between `get` and the
//!   server, this tells what serving a file costs apart from what the server does per request.
//! - `floor put MODE DIR`: every `PUT /upload/<folder>/<name>` body is taken into memory, then
//!   by MODE: `discard` keeps nothing; `write` does what prosody-filer does (makes the folder,
//!   creates the file at its final path and writes it: no fsync, no temporary); `durable` does
//!   the server's own protocol for a file system in memory, on the runtime thread: makes the
//!   folder and opens it, creates an unnamed temporary (`O_TMPFILE`) in a folder held open,
//!   writes, stamps the modification time, `fsync`, links it into the folder (`linkat`, which
//!   never replaces a name), `fsync` of the file again (its link count) and of the folder; where
//!   the file system has no unnamed files, a named temporary and `renameat2(RENAME_NOREPLACE)`,
//!   as the server does. A small PUT through the server cannot cost less than `durable`; what
//!   `durable` costs beside `write` is the price of never showing a partial file, and of the
//!   fsyncs. DIR
//!   must be on a file system in memory (nothing here waits for a device off the runtime).
//! - `floor put-store DIR`: every `PUT /upload/<key>` body is taken into memory and committed
//!   at its key by the server's own store code (`LocalStore::stage` and `commit` with the
//!   default metadata: the key's folder made and opened beneath the root, the unnamed
//!   temporary, the defaults mark, the stale-sidecar guard, the fsyncs and the link), with
//!   nothing else: no token, routing, response headers beyond hyper's, log or metrics. Between
//!   `durable` and the server, this tells what the store's own code costs beside the bare
//!   protocol, and what the server's per-request work costs beside its store.
//!
//! ```text
//! cargo build --release --example floor
//! target/release/examples/floor get 65536            # prints "listening on 127.0.0.1:PORT"
//! target/release/examples/floor get-store /dev/shm/hfs-store
//! target/release/examples/floor put durable /dev/shm/floor
//! target/release/examples/floor put-store /dev/shm/floor-store
//! ```

use std::convert::Infallible;
use std::fs::File;
use std::io::{IoSlice, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use hmac_file_server::key::FileKey;
use hmac_file_server::server::zero_copy::ZeroCopy;
use hmac_file_server::store::{FileMeta, Hashing, LocalStore, RetryPolicy, StoreError};
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

#[derive(Clone, Copy, PartialEq)]
enum Keep {
    Discard,
    Write,
    Durable,
}

struct Store {
    mode: Keep,
    root: PathBuf,
    root_fd: OwnedFd,
    tmp_fd: OwnedFd,
    counter: AtomicU64,
}

impl Store {
    fn open(mode: Keep, root: PathBuf) -> Self {
        let tmp = root.join(".tmp");
        std::fs::create_dir_all(&tmp).expect("the store folder");
        let open_dir = |path: &PathBuf| {
            rustix::fs::open(
                path,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .expect("a folder")
        };
        Self {
            mode,
            root_fd: open_dir(&root),
            tmp_fd: open_dir(&tmp),
            root,
            counter: AtomicU64::new(0),
        }
    }

    /// Keeps `body` at `rel` (`folder/name`); the status to answer.
    fn keep(&self, rel: &str, body: &[Bytes]) -> StatusCode {
        let Some((folder, name)) = rel.split_once('/') else {
            return StatusCode::BAD_REQUEST;
        };
        if folder.is_empty() || name.is_empty() || name.contains('/') || rel.contains("..") {
            return StatusCode::BAD_REQUEST;
        }
        let result = match self.mode {
            Keep::Discard => Ok(()),
            Keep::Write => self.write(folder, name, body),
            Keep::Durable => self.durable(folder, name, body),
        };
        match result {
            Ok(()) => StatusCode::CREATED,
            Err(Errno::EXIST) => StatusCode::CONFLICT,
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn write(&self, folder: &str, name: &str, body: &[Bytes]) -> Result<(), Errno> {
        let dir = self.root.join(folder);
        std::fs::create_dir_all(&dir).map_err(errno)?;
        let mut file = File::create(dir.join(name)).map_err(errno)?;
        write_all(&mut file, body)
    }

    fn durable(&self, folder: &str, name: &str, body: &[Bytes]) -> Result<(), Errno> {
        match rustix::fs::mkdirat(&self.root_fd, folder, Mode::from_raw_mode(0o750)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(e),
        }
        let dir = rustix::fs::openat(
            &self.root_fd,
            folder,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let unnamed = rustix::fs::openat(
            &self.tmp_fd,
            ".",
            OFlags::TMPFILE | OFlags::WRONLY | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o640),
        );
        let Ok(file) = unnamed else {
            return self.durable_named(&dir, name, body);
        };
        let mut file = File::from(file);
        write_all(&mut file, body)
            .and_then(|()| file.set_modified(SystemTime::now()).map_err(errno))
            .and_then(|()| file.sync_all().map_err(errno))
            .and_then(|()| rustix::fs::linkat(&file, "", &dir, name, AtFlags::EMPTY_PATH))
            // Its link count is in the file's inode: on disk before the folder's new entry.
            .and_then(|()| file.sync_all().map_err(errno))?;
        rustix::fs::fsync(&dir)
    }

    /// [`Self::durable`] where the file system has no unnamed files: a named temporary,
    /// renamed into place without replacing.
    fn durable_named(&self, dir: &OwnedFd, name: &str, body: &[Bytes]) -> Result<(), Errno> {
        let tmp = format!("{:016x}.part", self.counter.fetch_add(1, Ordering::Relaxed));
        let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
        let mut file = File::from(rustix::fs::openat(
            &self.tmp_fd,
            tmp.as_str(),
            flags,
            Mode::from_raw_mode(0o640),
        )?);
        let written = write_all(&mut file, body)
            .and_then(|()| file.set_modified(SystemTime::now()).map_err(errno))
            .and_then(|()| file.sync_all().map_err(errno))
            .and_then(|()| rustix::fs::renameat_with(&self.tmp_fd, tmp.as_str(), dir, name, RenameFlags::NOREPLACE));
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(&self.tmp_fd, tmp.as_str(), AtFlags::empty());
            return Err(e);
        }
        rustix::fs::fsync(dir)
    }
}

fn errno(e: std::io::Error) -> Errno {
    Errno::from_io_error(&e).unwrap_or(Errno::IO)
}

fn write_all(file: &mut File, body: &[Bytes]) -> Result<(), Errno> {
    let mut slices: Vec<IoSlice<'_>> = body.iter().map(|b| IoSlice::new(b)).collect();
    let mut slices = &mut slices[..];
    while !slices.is_empty() {
        let n = file.write_vectored(slices).map_err(errno)?;
        if n == 0 {
            return Err(Errno::IO);
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

enum Serve {
    Get(Bytes),
    GetStore(LocalStore),
    Put(Arc<Store>),
    PutStore(LocalStore),
}

fn usage() -> ! {
    eprintln!(
        "usage: floor get BYTES | floor get-store DIR | floor put discard|write|durable DIR | floor put-store DIR"
    );
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let serve = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["get", bytes] => Serve::Get(Bytes::from(vec![b'x'; bytes.parse().unwrap_or_else(|_| usage())])),
        ["get-store", dir] => Serve::GetStore(open_store(dir)),
        ["put-store", dir] => Serve::PutStore(open_store(dir)),
        ["put", mode, dir] => {
            let mode = match mode {
                "discard" => Keep::Discard,
                "write" => Keep::Write,
                "durable" => Keep::Durable,
                _ => usage(),
            };
            Serve::Put(Arc::new(Store::open(mode, PathBuf::from(dir))))
        }
        _ => usage(),
    };
    let serve = Arc::new(serve);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        println!("listening on {}", listener.local_addr().expect("its address"));
        let mut builder = http1::Builder::new();
        builder.timer(TokioTimer::new()).half_close(true).keep_alive(true);
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let serve = Arc::clone(&serve);
            let connection = builder.serve_connection(
                TokioIo::new(ZeroCopy::new(stream)),
                service_fn(move |request: Request<hyper::body::Incoming>| {
                    let serve = Arc::clone(&serve);
                    async move {
                        let response = match &*serve {
                            Serve::Get(body) => Response::new(Full::new(body.clone())),
                            Serve::GetStore(store) => get_file(store, request.uri().path()).await,
                            Serve::Put(store) => {
                                let mut response = Response::new(Full::new(Bytes::new()));
                                *response.status_mut() = put(store, request).await;
                                response
                            }
                            Serve::PutStore(store) => {
                                let mut response = Response::new(Full::new(Bytes::new()));
                                *response.status_mut() = put_store(store, request).await;
                                response
                            }
                        };
                        Ok::<_, Infallible>(response)
                    }
                }),
            );
            tokio::spawn(connection);
        }
    });
}

/// The server's store at `dir`, with its files under `upload/` as the server keeps them.
fn open_store(dir: &str) -> LocalStore {
    LocalStore::open(std::path::Path::new(dir), "upload", 64 * 1024, RetryPolicy::NONE).expect("the store")
}

/// The file at the path's key, as the server's store opens it for a download.
async fn get_file(store: &LocalStore, path: &str) -> Response<Full<Bytes>> {
    let key = path
        .strip_prefix("/upload/")
        .and_then(|rel| FileKey::parse_decoded(rel).ok());
    let opened = match key {
        Some(key) => store.open_file(&key, true).await,
        None => Err(StoreError::NotFound),
    };
    let (status, body) = match opened {
        Ok((_, Some(content), _)) => (StatusCode::OK, content),
        // Larger than the server reads whole: not what this floor is for.
        Ok((_, None, _)) => (StatusCode::NOT_IMPLEMENTED, Bytes::new()),
        Err(StoreError::NotFound) => (StatusCode::NOT_FOUND, Bytes::new()),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, Bytes::new()),
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
}

/// Takes a PUT's body into memory and keeps it as the store's mode says.
async fn put(store: &Store, request: Request<hyper::body::Incoming>) -> StatusCode {
    let rel = request.uri().path().strip_prefix("/upload/").map(str::to_owned);
    let Some(chunks) = whole_body(request.into_body()).await else {
        return StatusCode::BAD_REQUEST;
    };
    match rel {
        Some(rel) => store.keep(&rel, &chunks),
        None => StatusCode::NOT_FOUND,
    }
}

/// Takes a PUT's body into memory and commits it at its key through the server's store code.
async fn put_store(store: &LocalStore, request: Request<hyper::body::Incoming>) -> StatusCode {
    let key = request
        .uri()
        .path()
        .strip_prefix("/upload/")
        .and_then(|rel| FileKey::parse_decoded(rel).ok());
    let Some(chunks) = whole_body(request.into_body()).await else {
        return StatusCode::BAD_REQUEST;
    };
    let Some(key) = key else {
        return StatusCode::NOT_FOUND;
    };
    let mut staged = store.stage(Hashing::NONE);
    let mut size = 0;
    for chunk in chunks {
        size += chunk.len() as u64;
        staged.push(chunk);
    }
    let meta = FileMeta {
        content_type: hmac_file_server::auth::DEFAULT_CONTENT_TYPE.to_string(),
        size,
        uploaded_unix: 0,
        sha256: None,
    };
    match store.commit(staged, &key, &meta).await {
        Ok(()) => StatusCode::CREATED,
        Err(StoreError::Exists) => StatusCode::CONFLICT,
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A request body's chunks, or None when it broke off.
async fn whole_body(mut body: hyper::body::Incoming) -> Option<Vec<Bytes>> {
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            chunks.push(data);
        }
    }
    Some(chunks)
}
