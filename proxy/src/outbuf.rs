//! An output queue of byte chunks written with vectored writes.
//!
//! Small chunks (requests to a backend, short replies to a client) are copied into one staging
//! buffer so that many of them leave in one `write`; large chunks are queued as they are
//! (zero-copy) and written with `writev` next to the staged bytes.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Chunks up to this size are copied into the staging buffer instead of queued by reference.
const COPY_MAX: usize = 4 * 1024;
/// At most this many chunks are handed to one `writev`.
const MAX_IOVECS: usize = 64;

/// Bytes waiting to be written to one socket, in order.
#[derive(Debug, Default)]
pub struct OutBuf {
    /// Sealed chunks, oldest first; the front one may be partly written (advanced).
    chunks: VecDeque<Bytes>,
    /// Small chunks accumulated since the last sealed chunk; always logically after `chunks`.
    staging: BytesMut,
    /// Total bytes not yet written, for back-pressure decisions.
    len: usize,
}

impl OutBuf {
    /// An empty queue, with room for one sealed chunk: a client with one request at a time
    /// never needs more, where a first push into an empty deque makes room for four, which
    /// every idle client would then keep.
    #[must_use]
    pub fn new() -> Self {
        Self {
            chunks: VecDeque::with_capacity(1),
            ..Self::default()
        }
    }

    /// Bytes not yet written.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is waiting.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Queues a chunk: copied when small, referenced when large.
    pub fn push(&mut self, chunk: Bytes) {
        if chunk.len() <= COPY_MAX {
            self.push_slice(&chunk);
        } else {
            self.seal();
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Queues a copy of `bytes`.
    pub fn push_slice(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        self.staging.extend_from_slice(bytes);
    }

    /// Moves the staged bytes into the chunk queue so they can be written.
    fn seal(&mut self) {
        if !self.staging.is_empty() {
            self.chunks.push_back(self.staging.split().freeze());
        }
    }

    /// Writes as much as one vectored write accepts. Cancel-safe: when the future is dropped
    /// before it completes, nothing was written and nothing is lost.
    ///
    /// # Errors
    /// The socket's write error; `WriteZero` when the peer accepts no bytes.
    pub async fn write_some<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<usize> {
        self.seal();
        let n = {
            let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (slot, chunk) in iov.iter_mut().zip(self.chunks.iter()) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            if count == 0 {
                return Ok(0);
            }
            w.write_vectored(&iov[..count]).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.consume(n);
        Ok(n)
    }

    /// Writes what a client socket accepts now without waiting (`WouldBlock` ends it early);
    /// counted as client output in the metrics.
    ///
    /// # Errors
    /// The socket's write error (not `WouldBlock`); `WriteZero` when the peer accepts no bytes.
    pub fn try_write_to(&mut self, socket: &tokio::net::TcpStream) -> io::Result<()> {
        while !self.is_empty() {
            self.seal();
            let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (slot, chunk) in iov.iter_mut().zip(self.chunks.iter()) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            match socket.try_write_vectored(&iov[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    crate::metrics::bytes_out(n as u64);
                    self.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// [`OutBuf::try_write_to`] for a stream without readiness-based writes (a TLS stream):
    /// writes what `w` takes now, then flushes what it buffered, without waiting; counted as
    /// client output. It polls with a waker that does nothing: the caller waits for the
    /// socket's writability itself and calls again.
    ///
    /// # Errors
    /// The stream's write error; `WriteZero` when the peer accepts no bytes.
    pub fn try_write_async<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<()> {
        let mut cx = Context::from_waker(Waker::noop());
        while !self.is_empty() {
            self.seal();
            let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (slot, chunk) in iov.iter_mut().zip(self.chunks.iter()) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            match Pin::new(&mut *w).poll_write_vectored(&mut cx, &iov[..count]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    crate::metrics::bytes_out(n as u64);
                    self.consume(n);
                }
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => break,
            }
        }
        match Pin::new(w).poll_flush(&mut cx) {
            Poll::Ready(Err(e)) if e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(()),
        }
    }

    /// Frees the staging buffer once everything is written, so an idle connection holds no
    /// output memory.
    pub fn release_if_empty(&mut self) {
        if self.is_empty() && self.staging.capacity() > 0 {
            self.staging = BytesMut::new();
        }
    }

    /// Writes everything that is queued.
    ///
    /// # Errors
    /// The socket's write error.
    pub async fn write_all<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<()> {
        while !self.is_empty() {
            self.write_some(w).await?;
        }
        Ok(())
    }

    /// Drops `n` written bytes from the front.
    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                return;
            };
            if front.len() <= n {
                n -= front.len();
                self.chunks.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_order_across_small_and_large_chunks() {
        let mut out = OutBuf::new();
        out.push(Bytes::from_static(b"a"));
        out.push(Bytes::from(vec![b'b'; COPY_MAX + 1]));
        out.push_slice(b"c");
        out.push(Bytes::from_static(b"d"));
        let mut sink = Vec::new();
        out.write_all(&mut sink).await.unwrap();
        let mut want = b"a".to_vec();
        want.extend(std::iter::repeat_n(b'b', COPY_MAX + 1));
        want.extend_from_slice(b"cd");
        assert_eq!(sink, want);
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn partial_writes_resume_where_they_stopped() {
        // A writer that accepts at most 3 bytes a call.
        struct Trickle(Vec<u8>);
        impl AsyncWrite for Trickle {
            fn poll_write(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                buf: &[u8],
            ) -> std::task::Poll<io::Result<usize>> {
                let n = buf.len().min(3);
                self.0.extend_from_slice(&buf[..n]);
                std::task::Poll::Ready(Ok(n))
            }
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
        }
        let mut out = OutBuf::new();
        for part in [&b"hello "[..], b"big ", b"world"] {
            out.push(Bytes::copy_from_slice(part));
        }
        let mut w = Trickle(Vec::new());
        out.write_all(&mut w).await.unwrap();
        assert_eq!(w.0, b"hello big world");
    }
}
