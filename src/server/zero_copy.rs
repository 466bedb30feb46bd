//! The innermost layer of a connection's stream: it sends the pieces of download bodies that
//! are mapped files ([`crate::store::local::mapped`]) with `sendfile(2)`, from the page cache
//! straight into the socket, where a `writev` would copy them (and the store would have copied
//! them once more with `pread`). hyper hands its writes down as byte slices (head and body
//! pieces in one `writev`); a slice that lies inside a registered mapping is sent from its
//! file instead, everything else is written as it is. What hyper is told it wrote is the same
//! either way. The bytes before a mapped slice in the same write (the response head) go with
//! `MSG_MORE`, so that the kernel sends them together with the file's first bytes: one wake-up
//! of the client per small download instead of two.

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

use crate::store::local::mapped;

/// Pieces from this size on are sent with `TCP_CORK` set around the `sendfile` (as nginx's
/// `tcp_nopush` does for a whole response). A 1 GiB GET on loopback, server and client on
/// different cores: 1.86 against 1.38 GB/s, 0.52 against 0.71 s of the server's CPU. Small
/// files gain nothing from it (two more system calls each), so they are sent without.
const CORK_FROM_BYTES: usize = 512 * 1024;

/// Bytes sent from files by `sendfile` since the start (the tests check that it is used).
static SENT_BY_SENDFILE: AtomicU64 = AtomicU64::new(0);

/// A socket that can wait until it takes more bytes and then run a non-blocking send.
pub trait Socket: AsyncRead + AsyncWrite + AsFd + Unpin {
    /// Ready when the socket may take more bytes.
    fn poll_send_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Runs `send`; a `WouldBlock` from it clears the readiness seen.
    fn try_send(&self, send: impl FnOnce() -> io::Result<usize>) -> io::Result<usize>;
    /// Whether `MSG_MORE` holds bytes back for the next send (TCP).
    fn takes_more(&self) -> bool;
}

impl Socket for TcpStream {
    fn poll_send_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_ready(cx)
    }
    fn try_send(&self, send: impl FnOnce() -> io::Result<usize>) -> io::Result<usize> {
        self.try_io(Interest::WRITABLE, send)
    }
    fn takes_more(&self) -> bool {
        true
    }
}

impl Socket for UnixStream {
    fn poll_send_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_write_ready(cx)
    }
    fn try_send(&self, send: impl FnOnce() -> io::Result<usize>) -> io::Result<usize> {
        self.try_io(Interest::WRITABLE, send)
    }
    fn takes_more(&self) -> bool {
        false
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct ZeroCopy<S> {
    socket: S,
}

impl<S: Socket> ZeroCopy<S> {
    /// Wraps an accepted connection.
    pub fn new(socket: S) -> Self {
        Self { socket }
    }

    /// Sends up to `len` bytes of `file` from `offset`, when the socket takes them.
    fn poll_send_file(&self, cx: &mut Context<'_>, file: &File, offset: u64, len: usize) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.socket.poll_send_ready(cx))?;
            let mut at = offset;
            // A large piece is sent corked (and uncorked right after, so its last segment
            // leaves at once): without it the kernel pushes partial segments inside the call.
            let cork = len >= CORK_FROM_BYTES && self.socket.takes_more();
            if cork {
                let _ = rustix::net::sockopt::set_tcp_cork(self.socket.as_fd(), true);
            }
            let sent = self.socket.try_send(|| {
                rustix::fs::sendfile(self.socket.as_fd(), file, Some(&mut at), len).map_err(io::Error::from)
            });
            if cork {
                let _ = rustix::net::sockopt::set_tcp_cork(self.socket.as_fd(), false);
            }
            return Poll::Ready(match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // The file ended before the piece did: it was cut short while being sent. The
                // body cannot be completed; the connection ends (the client sees a short body).
                Ok(0) => Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file being sent is shorter than when it was opened",
                )),
                Ok(n) => {
                    SENT_BY_SENDFILE.fetch_add(n as u64, Ordering::Relaxed);
                    Ok(n)
                }
                Err(e) => Err(e),
            });
        }
    }
}

impl<S: Socket> ZeroCopy<S> {
    /// Sends `bufs` with `MSG_MORE` (the kernel holds them back for the `sendfile` that comes
    /// next, which sends them along); on a socket without it (a Unix socket), as they are.
    fn poll_send_before_file(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        if !self.socket.takes_more() {
            return Pin::new(&mut self.socket).poll_write_vectored(cx, bufs);
        }
        loop {
            ready!(self.socket.poll_send_ready(cx))?;
            let sent = self.socket.try_send(|| {
                rustix::net::sendmsg(
                    self.socket.as_fd(),
                    bufs,
                    &mut rustix::net::SendAncillaryBuffer::default(),
                    rustix::net::SendFlags::MORE | rustix::net::SendFlags::NOSIGNAL,
                )
                .map_err(io::Error::from)
            });
            match sent {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                sent => return Poll::Ready(sent),
            }
        }
    }
}

impl<S: Socket> AsyncRead for ZeroCopy<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl<S: Socket> AsyncWrite for ZeroCopy<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match mapped::find(data.as_ptr()) {
            Some((file, offset, rest)) if !data.is_empty() => {
                self.poll_send_file(cx, &file, offset, rest.min(data.len()))
            }
            _ => Pin::new(&mut self.socket).poll_write(cx, data),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // The slices before the first mapped one go out as they are; a mapped one leading the
        // list goes out by itself, from its file.
        let mut plain = 0;
        for buf in bufs {
            if !buf.is_empty() {
                if let Some((file, offset, rest)) = mapped::find(buf.as_ptr()) {
                    if plain == 0 {
                        return self.poll_send_file(cx, &file, offset, rest.min(buf.len()));
                    }
                    // A response head followed by a file: the head waits for it (MSG_MORE)
                    // so that both leave in the same segments and the client wakes once.
                    return self.poll_send_before_file(cx, &bufs[..plain]);
                }
            }
            plain += 1;
        }
        Pin::new(&mut self.socket).poll_write_vectored(cx, &bufs[..plain])
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A head, a mapped piece and a tail written through the stream arrive in order, byte for
    /// byte, and the piece went by `sendfile` (the reader sees the file's bytes even though
    /// the mapping is never read by the writer).
    #[tokio::test]
    async fn mapped_pieces_go_out_from_their_file_between_plain_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        std::fs::File::create(&path).unwrap().write_all(&content).unwrap();
        let file = Arc::new(std::fs::File::open(&path).unwrap());
        let piece = mapped::map(&file, 1000, 2_500_000, false).unwrap();
        let sent_before = SENT_BY_SENDFILE.load(Ordering::Relaxed);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut stream = ZeroCopy::new(TcpStream::connect(addr).await.unwrap());
        let head = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        let tail = b"tail".to_vec();
        let mut pieces = [&head[..], &piece[..], &tail[..]];
        let mut index = 0;
        while index < pieces.len() {
            let slices: Vec<IoSlice<'_>> = pieces[index..].iter().map(|p| IoSlice::new(p)).collect();
            let mut n = stream.write_vectored(&slices).await.unwrap();
            while n > 0 {
                let take = n.min(pieces[index].len());
                pieces[index] = &pieces[index][take..];
                n -= take;
                if pieces[index].is_empty() {
                    index += 1;
                }
            }
        }
        assert_eq!(
            rustix::net::sockopt::tcp_cork(stream.socket.as_fd()).ok(),
            Some(false),
            "left corked: a response's last segment would wait up to 200 ms"
        );
        stream.shutdown().await.unwrap();
        drop(stream);
        let got = reader.await.unwrap();
        let mut want = head.clone();
        want.extend_from_slice(&content[1000..2_501_000]);
        want.extend_from_slice(&tail);
        assert_eq!(got.len(), want.len());
        assert!(got == want, "bytes differ");
        assert!(
            SENT_BY_SENDFILE.load(Ordering::Relaxed) - sent_before >= 2_500_000,
            "the mapped piece did not go by sendfile"
        );
    }
}
