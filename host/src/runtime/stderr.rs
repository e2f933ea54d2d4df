//! Captures a plugin's stdout/stderr into a bounded tail buffer: the end of the output is what
//! explains a failure, and a plugin must not be able to grow host memory by printing.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Keeps the last `cap` bytes written and counts the rest.
#[derive(Clone)]
pub(crate) struct TailPipe {
    inner: Arc<Mutex<Tail>>,
}

struct Tail {
    cap: usize,
    buf: Vec<u8>,
    dropped: u64,
}

impl TailPipe {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Tail {
                cap,
                buf: Vec::new(),
                dropped: 0,
            })),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut t = self.inner.lock().unwrap();
        if t.cap == 0 {
            t.dropped += bytes.len() as u64;
            return;
        }
        let bytes = if bytes.len() > t.cap {
            t.dropped += (bytes.len() - t.cap) as u64;
            &bytes[bytes.len() - t.cap..]
        } else {
            bytes
        };
        let overflow = (t.buf.len() + bytes.len()).saturating_sub(t.cap);
        if overflow > 0 {
            t.buf.drain(..overflow);
            t.dropped += overflow as u64;
        }
        t.buf.extend_from_slice(bytes);
    }

    /// The captured tail as text, marked when earlier output was dropped.
    pub(crate) fn contents(&self) -> String {
        let t = self.inner.lock().unwrap();
        let text = String::from_utf8_lossy(&t.buf).trim_end().to_string();
        if t.dropped > 0 {
            format!("[{} earlier bytes dropped]\n{text}", t.dropped)
        } else {
            text
        }
    }
}

impl IsTerminal for TailPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TailPipe {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for TailPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail_and_counts_the_rest() {
        let p = TailPipe::new(8);
        p.push(b"hello ");
        p.push(b"world!!");
        assert_eq!(p.contents(), "[5 earlier bytes dropped]\n world!!");
        p.push(b"0123456789");
        assert_eq!(p.contents(), "[15 earlier bytes dropped]\n23456789");
    }
}
