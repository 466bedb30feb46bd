//! The connection stream that writes the interim responses handlers queue in an
//! [`Interim`](crate::http::interim::Interim) (hyper cannot send them; see that module).
//!
//! Queued bytes go out only at a point where hyper has nothing half-written: after hyper's
//! last write was followed by its flush (hyper flushes only once its write buffer is empty),
//! before hyper's next write, or while hyper waits to read (the request body). A queued
//! response wakes the connection task, so it is sent even while the client is not sending.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::interim::Interim;

/// See the module documentation.
#[derive(Debug)]
pub struct InterimStream<I> {
    io: I,
    interim: Interim,
    /// hyper has flushed everything it wrote: a whole interim head may go out now.
    between_writes: bool,
}

impl<I> InterimStream<I> {
    /// Wraps a connection's stream; `interim` is the queue its requests get.
    pub fn new(io: I, interim: Interim) -> Self {
        Self {
            io,
            interim,
            between_writes: true,
        }
    }
}

impl<I: AsyncWrite + Unpin> InterimStream<I> {
    /// Writes what is queued, when hyper is between writes. Ready once nothing is queued.
    fn write_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if !self.between_writes {
            return Poll::Ready(Ok(()));
        }
        while self.interim.is_pending() {
            let io = &mut self.io;
            let mut pending = false;
            self.interim
                .drain(|bytes| match Pin::new(&mut *io).poll_write(cx, bytes) {
                    Poll::Ready(Ok(0)) => Err(io::Error::from(io::ErrorKind::WriteZero)),
                    Poll::Ready(result) => result,
                    Poll::Pending => {
                        pending = true;
                        Ok(0)
                    }
                })?;
            if pending {
                return Poll::Pending;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin> AsyncRead for InterimStream<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        self.interim.set_waker(cx.waker());
        // A full socket leaves the rest for later; the read goes on either way.
        if let Poll::Ready(Err(e)) = self.write_queued(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for InterimStream<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.write_queued(cx))?;
        self.between_writes = false;
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        ready!(self.write_queued(cx))?;
        self.between_writes = false;
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(Pin::new(&mut self.io).poll_flush(cx))?;
        self.between_writes = true;
        ready!(self.write_queued(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
