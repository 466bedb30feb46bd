//! Interim (1xx) responses before a request's final answer: the IETF resumable-upload draft's
//! `104 (Upload Resumption Supported)`.
//!
//! hyper's HTTP/1 server has no API to send an informational response (only `100 Continue`,
//! which it sends by itself). The server therefore puts an [`Interim`] into every HTTP/1.1
//! request's extensions: a handler queues a complete response head in it, and the
//! connection's stream (`server::interim`) writes it to the socket before any further byte
//! that hyper writes, and only between hyper's writes (never inside a head or body that hyper
//! has begun and not finished writing). A handler queues one only before it returns its
//! answer, so the interim head always precedes the final one.

use std::sync::{Arc, Mutex};
use std::task::Waker;

/// The interim responses queued on one connection (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct Interim {
    inner: Arc<Mutex<Queued>>,
}

#[derive(Debug, Default)]
struct Queued {
    bytes: Vec<u8>,
    /// The connection task, woken to write what was queued while it waited for the client.
    waker: Option<Waker>,
}

impl Interim {
    /// Queues the interim response `status reason` with `headers`.
    pub fn send(&self, status: u16, reason: &str, headers: &[(&str, String)]) {
        debug_assert!(
            (102..200).contains(&status),
            "an interim response is 1xx (not 100, 101)"
        );
        let mut head = format!("HTTP/1.1 {status} {reason}\r\n");
        for (name, value) in headers {
            if value.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b)) {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
        }
        head.push_str("\r\n");
        let mut queued = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        queued.bytes.extend_from_slice(head.as_bytes());
        if let Some(waker) = queued.waker.take() {
            waker.wake();
        }
    }

    /// Calls `write` with the queued bytes, if any, and drops the first bytes it reports
    /// written. For the connection's stream.
    pub fn drain<E>(&self, write: impl FnOnce(&[u8]) -> Result<usize, E>) -> Result<(), E> {
        let mut queued = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if queued.bytes.is_empty() {
            return Ok(());
        }
        let n = write(&queued.bytes)?.min(queued.bytes.len());
        queued.bytes.drain(..n);
        Ok(())
    }

    /// Whether bytes are still queued.
    pub fn is_pending(&self) -> bool {
        !self.inner.lock().unwrap_or_else(|e| e.into_inner()).bytes.is_empty()
    }

    /// Remembers the connection task to wake when a response is queued.
    pub fn set_waker(&self, waker: &Waker) {
        let mut queued = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match &queued.waker {
            Some(w) if w.will_wake(waker) => {}
            _ => queued.waker = Some(waker.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queued_heads_come_out_whole_in_order_and_in_pieces() {
        let interim = Interim::default();
        interim.send(
            104,
            "Upload Resumption Supported",
            &[("Location", "/a".into()), ("Bad", "x\ny".into())],
        );
        interim.send(104, "Upload Resumption Supported", &[]);
        assert!(interim.is_pending());
        let mut out = Vec::new();
        for _ in 0..100 {
            interim
                .drain(|b: &[u8]| {
                    let n = b.len().min(7);
                    out.extend_from_slice(&b[..n]);
                    Ok::<_, ()>(n)
                })
                .unwrap();
        }
        assert!(!interim.is_pending());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 104 Upload Resumption Supported\r\nLocation: /a\r\n\r\n\
             HTTP/1.1 104 Upload Resumption Supported\r\n\r\n"
        );
    }
}
