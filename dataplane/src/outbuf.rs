//! An output queue of byte chunks written with vectored writes.
//!
//! Small chunks (requests to a backend, short replies to a client) are copied into one staging
//! buffer so that many of them leave in one `write`; large chunks are queued as they are
//! (zero-copy) and written with `writev` next to the staged bytes. When only staged bytes are
//! waiting (the common case) they are written straight from the staging buffer, which keeps
//! its memory for the next ones: no allocation per write.

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

    /// Room in the staging buffer: the memory an empty queue holds.
    #[cfg(test)]
    pub(crate) fn staging_room(&self) -> usize {
        self.staging.capacity()
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
    pub(crate) fn push_slice(&mut self, bytes: &[u8]) {
        self.len += bytes.len();
        self.staging.extend_from_slice(bytes);
    }

    /// Moves the staged bytes into the chunk queue, behind the large chunks queued before
    /// them, so they can be written with those.
    fn seal(&mut self) {
        if !self.staging.is_empty() {
            // The whole buffer goes (no shared split): the next staged bytes start a new one,
            // so `staging`'s capacity is always its own allocation's.
            self.chunks
                .push_back(std::mem::take(&mut self.staging).freeze());
        }
    }

    /// Points `iov` at the first queued chunks; returns how many.
    fn gather<'a>(&'a self, iov: &mut [IoSlice<'a>; MAX_IOVECS]) -> usize {
        let mut count = 0;
        for (slot, chunk) in iov.iter_mut().zip(self.chunks.iter()) {
            *slot = IoSlice::new(chunk);
            count += 1;
        }
        count
    }

    /// Writes as much as one vectored write accepts. Cancel-safe: when the future is dropped
    /// before it completes, nothing was written and nothing is lost.
    ///
    /// # Errors
    /// The socket's write error; `WriteZero` when the peer accepts no bytes.
    pub(crate) async fn write_some<W: AsyncWrite + Unpin>(
        &mut self,
        w: &mut W,
    ) -> io::Result<usize> {
        if self.is_empty() {
            return Ok(0);
        }
        let n = if self.chunks.is_empty() {
            w.write(&self.staging).await?
        } else {
            self.seal();
            let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
            let count = self.gather(&mut iov);
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
    pub(crate) fn try_write_to(&mut self, socket: &tokio::net::TcpStream) -> io::Result<()> {
        while !self.is_empty() {
            let written = if self.chunks.is_empty() {
                socket.try_write(&self.staging)
            } else {
                self.seal();
                let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
                let count = self.gather(&mut iov);
                socket.try_write_vectored(&iov[..count])
            };
            match written {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    redshard_metrics::bytes_out(n as u64);
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
    pub(crate) fn try_write_async<W: AsyncWrite + Unpin>(&mut self, w: &mut W) -> io::Result<()> {
        let mut cx = Context::from_waker(Waker::noop());
        while !self.is_empty() {
            let written = if self.chunks.is_empty() {
                Pin::new(&mut *w).poll_write(&mut cx, &self.staging)
            } else {
                self.seal();
                let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
                let count = self.gather(&mut iov);
                Pin::new(&mut *w).poll_write_vectored(&mut cx, &iov[..count])
            };
            match written {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    redshard_metrics::bytes_out(n as u64);
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

    /// Frees the staging buffer once everything is written, if it has more than `keep` bytes
    /// of room: 0 for an idle connection, which then holds no output memory.
    pub(crate) fn release_if_empty(&mut self, keep: usize) {
        if self.is_empty() && self.staging.capacity() > keep {
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

    /// Drops `n` written bytes from the front: the queued chunks first, then staged bytes.
    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front_mut() else {
                // Written straight from the staging buffer, whose memory stays for the next
                // bytes. All of it written (the usual case): emptied where it starts, so its
                // whole room is there again without moving anything. Part of it: the rest
                // moves up; the room before it is taken back by the next push that needs it
                // (`BytesMut` reclaims it without allocating).
                if n >= self.staging.len() {
                    self.staging.clear();
                } else {
                    self.staging.advance(n);
                }
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

    #[test]
    fn written_staged_bytes_leave_their_room_for_the_next_ones() {
        let mut out = OutBuf::new();
        let data: Vec<u8> = (0..100u8).collect();
        out.push_slice(&data);
        let room = out.staging.capacity();
        let base = out.staging.as_ptr();
        // A write that took all of it: the room is there again, from the start.
        out.consume(100);
        assert!(out.is_empty());
        assert_eq!(out.staging.capacity(), room);
        // A write that took part of it: the rest is what is left, in order.
        out.push_slice(&data);
        out.consume(30);
        assert_eq!(out.len(), 70);
        assert_eq!(&out.staging[..], &data[30..]);
        out.consume(70);
        assert!(out.is_empty());
        // The room before the written part comes back when needed, without allocating.
        out.push_slice(&data);
        assert_eq!(&out.staging[..], &data[..]);
        assert_eq!(
            out.staging.as_ptr(),
            base,
            "the same allocation, from its start"
        );
    }

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

    /// A socket pair on loopback: (the proxy's side, the peer's side).
    async fn socket_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        (ours, peer)
    }

    async fn read_exactly(peer: &mut tokio::net::TcpStream, n: usize) -> Vec<u8> {
        use tokio::io::AsyncReadExt;
        let mut got = vec![0; n];
        peer.read_exact(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn staged_bytes_are_written_in_place_and_the_buffer_is_reused() {
        let (ours, mut peer) = socket_pair().await;
        let mut out = OutBuf::new();
        out.push(Bytes::from_static(b"+OK\r\n"));
        out.push_slice(b":1\r\n");
        out.try_write_to(&ours).unwrap();
        assert!(out.is_empty());
        assert_eq!(read_exactly(&mut peer, 9).await, b"+OK\r\n:1\r\n");
        let room = out.staging.capacity();
        assert!(room >= 9, "the staging buffer keeps its memory: {room}");
        for i in 0..100u8 {
            out.push_slice(&[b'a' + i % 26]);
            out.try_write_to(&ours).unwrap();
        }
        let got = read_exactly(&mut peer, 100).await;
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, &b)| b == b'a' + (i % 26) as u8));
        assert_eq!(
            out.staging.capacity(),
            room,
            "written bytes are reclaimed, not reallocated"
        );
        assert!(out.chunks.is_empty(), "nothing was sealed");
    }

    #[tokio::test]
    async fn a_large_chunk_after_partly_written_staged_bytes_keeps_the_order() {
        let mut out = OutBuf::new();
        out.push_slice(b"hello ");
        out.consume(2); // as if a write took "he"
        out.push(Bytes::from(vec![b'x'; COPY_MAX + 1]));
        out.push_slice(b" end");
        let mut sink = Vec::new();
        out.write_all(&mut sink).await.unwrap();
        let mut want = b"llo ".to_vec();
        want.extend(std::iter::repeat_n(b'x', COPY_MAX + 1));
        want.extend_from_slice(b" end");
        assert_eq!(sink, want);
    }

    #[test]
    fn an_empty_buffer_keeps_up_to_keep_bytes_of_room() {
        let mut out = OutBuf::new();
        out.push_slice(&[b'a'; 100]);
        out.consume(100);
        out.release_if_empty(16 * 1024);
        assert!(out.staging.capacity() > 0, "small room is kept");
        out.release_if_empty(0);
        assert_eq!(out.staging.capacity(), 0, "an idle connection keeps none");
        out.push_slice(&[b'a'; 20_000]);
        out.release_if_empty(16 * 1024);
        assert!(out.staging.capacity() > 0, "never while bytes wait");
        out.consume(20_000);
        out.release_if_empty(16 * 1024);
        assert_eq!(out.staging.capacity(), 0, "large room is freed");
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
