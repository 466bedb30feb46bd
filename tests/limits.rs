//! Limits and timeouts (SPEC §6, §2 ReadTimeout) and shutdown (§8): oversized request heads,
//! too many headers, long URLs, slowloris connections, stalled bodies, SIGTERM.
//!
//! Timing checks use generous bounds (a 2 s ReadTimeout must close within 10 s): they check
//! that the behaviour happens, not how fast.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{TestServer, payload, read_response, wait_until};

/// What became of a connection that we stopped writing to.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// The server closed it (EOF or reset), possibly after an answer with this status.
    Closed(Option<u16>),
    /// Still open when we gave up.
    StillOpen,
}

/// Reads until the server closes the connection or `within` passes; returns how it ended and
/// when.
fn wait_for_close(s: &mut TcpStream, within: Duration) -> (Ending, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(started.elapsed());
        if left.is_zero() {
            return (Ending::StillOpen, started.elapsed());
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return (Ending::StillOpen, started.elapsed());
            }
            Err(_) => break,
        }
    }
    let status = common::parse_response(&got).map(|(r, _)| r.status);
    (Ending::Closed(status), started.elapsed())
}

fn get_with_headers(extra: &str) -> Vec<u8> {
    format!("GET /upload/some/file.bin HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n").into_bytes()
}

// ---------------------------------------------------------------------------------------
// Request head, header count, URL length
// ---------------------------------------------------------------------------------------

/// Sends `request` in pieces of `piece` bytes (all at once when 0) and returns the status of
/// the answer (None when the connection closed without one).
fn send_in_pieces(server: &TestServer, request: &[u8], piece: usize) -> Option<u16> {
    let mut s = server.connect(Duration::from_secs(10));
    let mut writer = s.try_clone().unwrap();
    let request = request.to_vec();
    let sender = std::thread::spawn(move || {
        let piece = if piece == 0 { request.len() } else { piece };
        for chunk in request.chunks(piece) {
            if writer.write_all(chunk).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let status = read_response(&mut s, Duration::from_secs(10)).map(|r| r.status);
    drop(s);
    let _ = sender.join();
    status
}

#[test]
fn request_head_over_64_kib_is_431() {
    let server = TestServer::start("");
    let one_big = get_with_headers(&format!("X-Big: {}\r\n", "a".repeat(70 * 1024)));
    let many: String = (0..40).map(|i| format!("X-H{i}: {}\r\n", "b".repeat(2000))).collect();
    let many = get_with_headers(&many);
    let huge = get_with_headers(&format!("X-Big: {}\r\n", "a".repeat(100 * 1024)));
    // The limit holds however the head arrives: in one burst or in small pieces.
    let mut results = Vec::new();
    for (name, request) in [
        ("one 70 KiB header", &one_big),
        ("40 headers of 2 KB", &many),
        ("one 100 KiB header", &huge),
    ] {
        for piece in [0, 4096] {
            let how = if piece == 0 { "at once" } else { "in 4 KiB pieces" };
            results.push((format!("{name}, sent {how}"), send_in_pieces(&server, request, piece)));
        }
    }
    let wrong: Vec<_> = results.iter().filter(|(_, status)| *status != Some(431)).collect();
    assert!(wrong.is_empty(), "heads over 64 KiB not answered 431: {wrong:?}");
    // A big but acceptable head is served.
    let r = server.raw_one(&get_with_headers(&format!("X-Big: {}\r\n", "a".repeat(16 * 1024))));
    assert_eq!(r.status, 404, "a 16 KiB head is under the limit");
    server.assert_nothing_stored("431");
}

#[test]
fn more_than_100_headers_is_431() {
    let server = TestServer::start("");
    // Host + Connection + 99 = 101 headers.
    let over: String = (0..99).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = server.raw_one(&get_with_headers(&over));
    assert_eq!(r.status, 431, "101 headers");
    let way_over: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = server.raw_one(&get_with_headers(&way_over));
    assert_eq!(r.status, 431, "502 headers");
    // Host + Connection + 98 = 100 headers: fine.
    let at: String = (0..98).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = server.raw_one(&get_with_headers(&at));
    assert_eq!(r.status, 404, "exactly 100 headers");
    // hyper answers these by itself; each still has its access line.
    server.wait_for_lines(&["request refused by the HTTP parser", "status=431"], 2);
}

#[test]
fn malformed_requests_get_400_and_an_access_line() {
    let server = TestServer::start("");
    for request in [
        &b"GET /upload/a b c HTTP/1.1\r\nHost: test\r\n\r\n"[..],
        b"GET /upload/a HTTP/1.1\r\nHost: test\r\nX-Folded: a\r\n b\r\n\r\n",
        b"GET /upload/a HTTP/1.1\r\nHost: test\r\nBad Header: x\r\n\r\n",
    ] {
        let r = server.raw_one(request);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(request));
    }
    // One access line each, written when hyper hands the connection's error back.
    for line in server.wait_for_lines(&["request refused by the HTTP parser"], 3) {
        assert!(
            line.contains("status=400") && line.contains("client=127.0.0.1"),
            "{line}"
        );
    }
}

#[test]
fn url_over_8_kib_is_414() {
    let server = TestServer::start("");
    let long_query = format!(
        "GET /upload/a/b.bin?x={} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        "q".repeat(9000)
    );
    let r = server.raw_one(long_query.as_bytes());
    assert_eq!(r.status, 414, "9 KB query");
    common::assert_cors_raw(&r, "414");
    let segments = vec!["seg"; 2500].join("/");
    let long_path =
        format!("PUT /upload/{segments} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    let r = server.raw_one(long_path.as_bytes());
    assert_eq!(r.status, 414, "10 KB path");
    let ok_query = format!(
        "GET /upload/a/b.bin?x={} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n",
        "q".repeat(7000)
    );
    let r = server.raw_one(ok_query.as_bytes());
    assert_eq!(r.status, 404, "a 7 KB URL is under the limit");
    server.assert_nothing_stored("414");
}

// ---------------------------------------------------------------------------------------
// Slowloris and stalled bodies
// ---------------------------------------------------------------------------------------

#[test]
fn slowloris_partial_head_is_closed_after_read_timeout() {
    let server = TestServer::start("ReadTimeout = 2");
    let mut s = server.connect(Duration::from_secs(10));
    s.write_all(b"GET /upload/some/file.bin HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        .unwrap();
    let (ending, after) = wait_for_close(&mut s, Duration::from_secs(10));
    assert!(
        matches!(ending, Ending::Closed(None | Some(408))),
        "partial head: {ending:?} after {after:?}"
    );
    assert!(
        after >= Duration::from_millis(1500),
        "closed only once ReadTimeout passed: {after:?}"
    );
}

#[test]
fn slowloris_dripping_head_is_closed_after_read_timeout() {
    let server = TestServer::start("ReadTimeout = 2");
    let mut s = server.connect(Duration::from_secs(10));
    s.write_all(b"GET /upload/some/file.bin HTTP/1.1\r\nHost: test\r\n")
        .unwrap();
    // One header byte every 300 ms: never idle for ReadTimeout, never finished.
    let mut writer = s.try_clone().unwrap();
    let dripper = std::thread::spawn(move || {
        for _ in 0..40 {
            if writer.write_all(b"X").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let (ending, after) = wait_for_close(&mut s, Duration::from_secs(10));
    assert!(
        matches!(ending, Ending::Closed(None | Some(408))),
        "dripping head: {ending:?} after {after:?}"
    );
    drop(s);
    let _ = dripper.join();
}

#[test]
fn silent_connection_is_closed_after_read_timeout() {
    let server = TestServer::start("ReadTimeout = 2");
    let mut s = server.connect(Duration::from_secs(10));
    let (ending, after) = wait_for_close(&mut s, Duration::from_secs(10));
    assert!(
        matches!(ending, Ending::Closed(None | Some(408))),
        "connect and say nothing: {ending:?} after {after:?}"
    );
}

#[test]
fn stalled_body_is_dropped_after_read_timeout_and_leaves_nothing() {
    let server = TestServer::start("ReadTimeout = 2");
    let size = 10_000usize;
    let body = payload(size, 1);
    let target = server.target(&server.signed_v("stall/x.bin", "stall/x.bin", size as u64));
    let mut s = server.connect(Duration::from_secs(10));
    s.write_all(format!("PUT {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {size}\r\n\r\n").as_bytes())
        .unwrap();
    s.write_all(&body[..6000]).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || server.temporaries() == 1),
        "upload under way"
    );
    let (ending, after) = wait_for_close(&mut s, Duration::from_secs(10));
    assert!(
        matches!(ending, Ending::Closed(None | Some(408))),
        "stalled body: {ending:?} after {after:?}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || server.temporaries() == 0),
        "temporary left behind"
    );
    server.assert_nothing_stored("stalled body");
}

#[test]
fn slow_but_steady_body_is_not_dropped() {
    // ReadTimeout is an idle timeout for bodies: a body that keeps coming is fine even when
    // the whole upload takes longer than ReadTimeout.
    let server = TestServer::start("ReadTimeout = 1");
    let size = 6000usize;
    let body = payload(size, 2);
    let target = server.target(&server.signed_v("steady/x.bin", "steady/x.bin", size as u64));
    let mut s = server.connect(Duration::from_secs(10));
    s.write_all(format!("PUT {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {size}\r\n\r\n").as_bytes())
        .unwrap();
    for chunk in body.chunks(1000) {
        s.write_all(chunk).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let r = read_response(&mut s, Duration::from_secs(10)).expect("an answer");
    assert_eq!(r.status, 201, "1.8 s of steady body with a 1 s ReadTimeout");
    assert_eq!(std::fs::read(server.files_dir().join("steady/x.bin")).unwrap(), body);
}

// ---------------------------------------------------------------------------------------
// SIGTERM
// ---------------------------------------------------------------------------------------

#[test]
fn sigterm_exits_0_and_leaves_only_complete_files() {
    let mut server = TestServer::start("ReadTimeout = 2");
    // A finished upload.
    let done = payload(5000, 3);
    let target = server.target(&server.signed_v("term/done.bin", "term/done.bin", 5000));
    let mut request = format!("PUT {target} HTTP/1.1\r\nHost: test\r\nContent-Length: 5000\r\n\r\n").into_bytes();
    request.extend_from_slice(&done);
    assert_eq!(server.raw_one(&request).status, 201);

    // An upload running when SIGTERM comes, that then finishes.
    let running = payload(20_000, 4);
    let target = server.target(&server.signed_v("term/running.bin", "term/running.bin", 20_000));
    let mut s_running = server.connect(Duration::from_secs(10));
    s_running
        .write_all(format!("PUT {target} HTTP/1.1\r\nHost: test\r\nContent-Length: 20000\r\n\r\n").as_bytes())
        .unwrap();
    s_running.write_all(&running[..8000]).unwrap();
    // It keeps trickling (so ReadTimeout never fires on it) until told to finish.
    let (finish, finish_rx) = std::sync::mpsc::channel::<()>();
    let mut writer = s_running.try_clone().unwrap();
    let rest = running[8000..].to_vec();
    let trickler = std::thread::spawn(move || {
        let mut sent = 0;
        loop {
            match finish_rx.recv_timeout(Duration::from_millis(200)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if sent + 1 < rest.len() => {
                    writer.write_all(&rest[sent..sent + 1]).unwrap();
                    sent += 1;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                _ => break,
            }
        }
        writer.write_all(&rest[sent..]).unwrap();
    });
    // An upload that stalls and never finishes.
    let target = server.target(&server.signed_v("term/stalled.bin", "term/stalled.bin", 20_000));
    let mut s_stalled = server.connect(Duration::from_secs(10));
    s_stalled
        .write_all(format!("PUT {target} HTTP/1.1\r\nHost: test\r\nContent-Length: 20000\r\n\r\n").as_bytes())
        .unwrap();
    s_stalled.write_all(&payload(5000, 5)).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || server.temporaries() == 2),
        "both uploads under way"
    );

    server.signal("TERM");
    assert!(
        wait_until(Duration::from_secs(10), || server.log().contains("SIGTERM")),
        "SIGTERM not seen; log:\n{}",
        server.log()
    );
    // No new connections once shutting down.
    assert!(
        wait_until(Duration::from_secs(5), || TcpStream::connect(server.addr).is_err()),
        "still accepting after SIGTERM"
    );
    // The running upload may finish.
    assert!(
        !server.files_dir().join("term/running.bin").exists(),
        "still running at SIGTERM"
    );
    finish.send(()).unwrap();
    trickler.join().unwrap();
    let r = read_response(&mut s_running, Duration::from_secs(10)).expect("an answer to the running upload");
    assert_eq!(r.status, 201, "the upload running at SIGTERM finishes");

    let status = server
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("no exit; log:\n{}", server.log()));
    assert_eq!(status.code(), Some(0), "exit status; log:\n{}", server.log());
    drop(s_stalled);

    let mut stored = server.stored_files();
    stored.sort();
    assert_eq!(
        stored,
        vec![PathBuf::from("term/done.bin"), PathBuf::from("term/running.bin")]
    );
    assert_eq!(std::fs::read(server.files_dir().join("term/done.bin")).unwrap(), done);
    assert_eq!(
        std::fs::read(server.files_dir().join("term/running.bin")).unwrap(),
        running
    );
}

#[test]
fn sigterm_on_an_idle_server_exits_0_promptly() {
    let mut server = TestServer::start("");
    // An idle keep-alive connection must not hold up the exit.
    let mut idle = server.connect(Duration::from_secs(10));
    idle.write_all(b"GET /upload/x/y HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut idle, Duration::from_secs(10)).map(|r| r.status),
        Some(404)
    );
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit; log:\n{}", server.log()));
    assert_eq!(status.code(), Some(0));
}

/// Once the server has logged `listening on`, SIGTERM is a graceful shutdown (exit 0), not
/// the default action of the signal (killed by SIGTERM): scripts and service managers stop
/// a server right after it has come up.
#[test]
fn sigterm_right_after_start_exits_0() {
    let mut server = TestServer::start("");
    server.signal("TERM");
    let status = server
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit; log:\n{}", server.log()));
    assert_eq!(status.code(), Some(0), "{status}; log:\n{}", server.log());
}

/// WriteTimeout: a client that stops reading a download is dropped after the timeout, so it
/// cannot hold a connection (and a file) open forever; one that reads gets everything.
#[test]
fn download_that_stops_being_read_is_dropped_after_write_timeout() {
    let server = TestServer::start("WriteTimeout = 2\nMaxUploadSize = \"64MiB\"");
    let size = 48usize << 20;
    let body = payload(size, 77);
    let mut s = server.connect(Duration::from_secs(30));
    let target = server.target(&server.signed_v("wt/big.bin", "wt/big.bin", size as u64));
    s.write_all(format!("PUT {target} HTTP/1.1\r\nHost: test\r\nContent-Length: {size}\r\n\r\n").as_bytes())
        .unwrap();
    s.write_all(&body).unwrap();
    let r = read_response(&mut s, Duration::from_secs(30)).expect("an answer to the PUT");
    assert_eq!(r.status, 201);

    // A reader that takes everything at once gets every byte.
    let mut full = server.connect(Duration::from_secs(30));
    full.write_all(b"GET /upload/wt/big.bin HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    full.read_to_end(&mut got).unwrap();
    assert!(got.len() > size, "whole answer read ({} bytes)", got.len());

    // A reader that stops: the socket buffers fill, the server's writes stall, and after
    // WriteTimeout the server gives up on the connection.
    let mut stalled = server.connect(Duration::from_secs(30));
    stalled
        .write_all(b"GET /upload/wt/big.bin HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let mut got = Vec::new();
    let _ = stalled.read_to_end(&mut got);
    assert!(
        got.len() < size,
        "the server kept writing to a client that stopped reading ({} of {size} bytes)",
        got.len()
    );
}
