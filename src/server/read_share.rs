//! One budget for the bytes that connections read at a time.
//!
//! hyper sizes each connection's read buffer by what its reads bring (doubling up to
//! [`READ_BUF_BYTES`](super::READ_BUF_BYTES)), and every body frame it hands out keeps its
//! piece of that buffer alive until the frame is written. A few fast uploads want big reads
//! (fewer syscalls and wake-ups per GiB); hundreds of uploads at once would make that hundreds
//! of big buffers. [`SharedReads`] caps each read at [`READ_BUDGET_BYTES`] divided among the
//! open connections (never below [`MIN_READ_BYTES`]), so hyper's buffers, and the memory
//! they cost, shrink as connections are added.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::READ_BUF_BYTES;

/// What all connections may read at once, before hyper's doubling: 32 connections still read
/// 512 KiB at a time; 500 slow uploads read 32 KiB each (their peak RSS: 101 → 66 MiB).
pub const READ_BUDGET_BYTES: usize = 16 << 20;
/// The smallest read cap, however many connections are open.
pub const MIN_READ_BYTES: usize = 16 << 10;

/// Open connections, shared by their [`SharedReads`].
#[derive(Debug, Default)]
pub struct ReadShare {
    open: AtomicUsize,
}

impl ReadShare {
    /// Largest read for a connection now.
    pub fn cap(&self) -> usize {
        let open = self.open.load(Ordering::Relaxed).max(1);
        (READ_BUDGET_BYTES / open).clamp(MIN_READ_BYTES, READ_BUF_BYTES)
    }

    /// Wraps a new connection's stream; it counts as open until dropped.
    pub fn wrap<I>(self: &Arc<Self>, io: I) -> SharedReads<I> {
        self.open.fetch_add(1, Ordering::Relaxed);
        SharedReads {
            io,
            share: Arc::clone(self),
        }
    }
}

/// A connection's stream whose reads are capped by its [`ReadShare`]; writes pass through.
#[derive(Debug)]
pub struct SharedReads<I> {
    io: I,
    share: Arc<ReadShare>,
}

impl<I> Drop for SharedReads<I> {
    fn drop(&mut self) {
        self.share.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for SharedReads<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let cap = self.share.cap();
        if cap >= READ_BUF_BYTES || buf.remaining() <= cap {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        // Only a capped read zeroes its part of the buffer (ReadBuf needs initialized bytes to
        // lend out a smaller one); an uncapped read goes straight through above.
        let mut capped = ReadBuf::new(buf.initialize_unfilled_to(cap));
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut capped))?;
        let n = capped.filled().len();
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for SharedReads<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn the_cap_shrinks_as_connections_open_and_grows_as_they_close() {
        let share = Arc::new(ReadShare::default());
        assert_eq!(
            share.cap(),
            READ_BUF_BYTES,
            "one connection reads as much as hyper allows"
        );
        let mut open: Vec<_> = (0..500).map(|_| share.wrap(())).collect();
        assert_eq!(share.cap(), READ_BUDGET_BYTES / 500);
        open.extend((0..5000).map(|_| share.wrap(())));
        assert_eq!(share.cap(), MIN_READ_BYTES);
        open.clear();
        assert_eq!(share.cap(), READ_BUF_BYTES);
    }

    #[tokio::test]
    async fn capped_reads_bring_every_byte_in_order() {
        let share = Arc::new(ReadShare::default());
        let _others: Vec<_> = (0..5000).map(|_| share.wrap(())).collect();
        let (client, server) = tokio::io::duplex(1 << 20);
        let mut reader = share.wrap(server);
        let sent: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut client = client;
                client.write_all(&sent).await.unwrap();
            })
        };
        let mut got = Vec::new();
        let mut buf = vec![0u8; 256 << 10];
        loop {
            let n = reader.read(&mut buf).await.unwrap();
            assert!(n <= MIN_READ_BYTES, "a read of {n} bytes went past the cap");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        writer.await.unwrap();
        assert_eq!(got, sent);
    }
}
