//! [`ChannelBody`]: a request body for the SDK that is fed, chunk by chunk, as the client's
//! body arrives, so an upload streams through and never sits whole in memory.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::mpsc;

/// A body of exactly `remaining` bytes, taken from a channel. A channel closed before all of
/// them came is an error, so the object store refuses the short request and stores nothing.
#[derive(Debug)]
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    remaining: u64,
}

impl ChannelBody {
    /// A body of `len` bytes, and the sender that feeds it.
    pub fn new(len: u64) -> (mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = mpsc::channel(8);
        (tx, Self { rx, remaining: len })
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => {
                let len = chunk.len() as u64;
                if len > self.remaining {
                    return Poll::Ready(Some(Err(io::Error::other("more bytes than the body's length"))));
                }
                self.remaining -= len;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(None) => Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the upload ended before its length",
            )))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn delivers_exactly_its_length_or_fails() {
        let (tx, body) = ChannelBody::new(5);
        tokio::spawn(async move {
            tx.send(Bytes::from_static(b"hel")).await.unwrap();
            tx.send(Bytes::from_static(b"lo")).await.unwrap();
        });
        assert_eq!(body.collect().await.unwrap().to_bytes(), Bytes::from_static(b"hello"));

        let (tx, body) = ChannelBody::new(5);
        tokio::spawn(async move {
            tx.send(Bytes::from_static(b"hel")).await.unwrap();
        });
        assert!(
            body.collect().await.is_err(),
            "closed short: an error, not a short body"
        );
    }
}
