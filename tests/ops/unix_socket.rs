//! Unix socket: serving over UnixSocketPath, removing the socket at exit, refusing to replace
//! a regular file.

use std::path::Path;
use std::time::Duration;

use hmac_file_server::auth;

use crate::common::{RawResponse, parse_response, payload, secret};
use crate::helpers::{Spawned, write_config};

async fn unix_exchange(socket: &Path, request: &[u8]) -> RawResponse {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("the server closes a Connection: close exchange")
        .unwrap();
    parse_response(&out)
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(&out)))
        .0
}

#[tokio::test]
async fn unix_socket_serves_and_cleans_up() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("hfs.sock");
    // A stale socket file from an earlier run.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    assert!(std::fs::symlink_metadata(&sock).unwrap().file_type().is_socket());
    let config = write_config(
        dir.path(),
        &format!("UnixSocket = true\nUnixSocketPath = \"{}\"", sock.display()),
    );
    let mut server = Spawned::start(&config, Some("debug,hyper=warn"));
    server.expect_stderr(
        &format!("listening on unix:{}", sock.display()),
        Duration::from_secs(20),
    );
    let meta = std::fs::symlink_metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket(), "a socket at the path");
    assert_eq!(meta.permissions().mode() & 0o777, 0o660, "socket mode");

    let body = payload(4321, 71);
    let token = auth::sign_v(&secret(), "u/file.bin", body.len() as u64);
    let mut req = format!(
        "PUT /upload/u/file.bin?v={token} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    let r = unix_exchange(&sock, &req).await;
    assert_eq!(r.status, 201, "PUT over the socket");
    let r = unix_exchange(
        &sock,
        b"GET /upload/u/file.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200, "GET over the socket");
    assert_eq!(r.body, body);
    assert_eq!(std::fs::read(dir.path().join("store/upload/u/file.bin")).unwrap(), body);
    server.expect_stderr("client=unix", Duration::from_secs(5));

    server.signal("TERM");
    let status = server.wait_exit(Duration::from_secs(15)).expect("exits on SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        std::fs::symlink_metadata(&sock).is_err(),
        "the socket file is removed at exit"
    );
}

#[tokio::test]
async fn unix_socket_refuses_to_replace_a_regular_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hfs.sock");
    std::fs::write(&path, b"precious data").unwrap();
    let config = write_config(
        dir.path(),
        &format!("UnixSocket = true\nUnixSocketPath = \"{}\"", path.display()),
    );
    let mut server = Spawned::start(&config, None);
    let status = server
        .wait_exit(Duration::from_secs(15))
        .expect("the server does not start");
    assert!(!status.success(), "non-zero exit: {status:?}");
    let stderr = server.stderr();
    assert!(
        stderr.contains(&path.display().to_string()) && stderr.contains("not a socket"),
        "a clear message naming the path:\n{stderr}"
    );
    assert!(!stderr.contains("listening on"), "{stderr}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious data", "the file is untouched");
}
