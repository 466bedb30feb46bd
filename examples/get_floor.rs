//! The floor of this server's HTTP stack, for the benchmark (`scripts/bench.sh --only floor`):
//! a bare hyper 1 HTTP/1.1 server on a tokio multi-thread runtime, built with the same crates,
//! runtime defaults and connection settings as the server, that answers every GET with 200, a
//! `Content-Length` and the same `body_bytes` bytes held in memory. No file system, no
//! routing, no token, no headers beyond hyper's own `date` and `content-length`, no log: what
//! remains is hyper, tokio and the kernel's TCP. A small download through the real server cannot
//! cost less than this; how far this floor is from nginx shows what a download target measured
//! against nginx asks of the HTTP stack itself.
//!
//!     cargo build --release --example get_floor
//!     target/release/examples/get_floor 65536   # prints "listening on 127.0.0.1:PORT"

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};

fn main() {
    let body_bytes: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(64 * 1024);
    let body = Bytes::from(vec![b'x'; body_bytes]);
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
            let body = body.clone();
            let connection = builder.serve_connection(
                TokioIo::new(stream),
                service_fn(move |_request: Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                }),
            );
            tokio::spawn(connection);
        }
    });
}
