//! What a session needs of its client connection: plain TCP (`listen`) or TLS (`tls_listen`).
//!
//! The session waits for readiness and then reads or writes without waiting (see
//! `mod.rs`). For TCP these are tokio's own calls, as before TLS existed: the session is
//! generic over [`ClientStream`], so the TCP session compiles to the same code.
//!
//! TLS adds two things a socket's readiness does not show:
//! - **decrypted bytes already inside rustls**: a read that filled the session's buffer may
//!   leave plaintext behind, so the stream is readable while rustls holds any, whatever the
//!   socket says;
//! - **encrypted records not yet sent**: a write that found the socket full leaves records
//!   inside rustls, so the session keeps waiting for writability (and flushing) until they
//!   are gone, even when its own output is empty.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::outbuf::OutBuf;

/// A client connection as the session uses it.
pub trait ClientStream: AsyncRead + Unpin + Send + 'static {
    /// Whether an idle session over this stream may park (see `super::park`): plain TCP,
    /// not TLS (whose connection state is most of its memory anyway).
    const PARKABLE: bool = false;

    /// The socket, shared, when replies can be written to it as they are (plain TCP, not
    /// TLS): then a reply that arrives while the session waits with nothing else to do is
    /// written by whoever delivers it (see `crate::replies`).
    fn shared_socket(&self) -> Option<Arc<TcpStream>> {
        None
    }

    /// The client's address.
    ///
    /// # Errors
    /// The socket is no longer connected.
    fn peer_addr(&self) -> io::Result<SocketAddr>;

    /// The proxy's address the client connected to.
    ///
    /// # Errors
    /// The socket is no longer connected.
    fn local_addr(&self) -> io::Result<SocketAddr>;

    /// The client socket's file descriptor (CLIENT LIST's `fd`).
    fn raw_fd(&self) -> i32;

    /// Completes when a read may find bytes (readiness can be spurious: the read may still
    /// find none).
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;

    /// Completes when a write may be accepted.
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;

    /// Reads what the connection holds now into `buf`'s spare room without waiting, where
    /// the stream can do that for less than one poll of [`AsyncRead`]: `Some(Ok(n))`
    /// (`Ok(0)` at the end of the stream), `Some(Err(WouldBlock))` when nothing was there
    /// (spurious readiness); `None` sends the caller to the poll. Like tokio's own read, a
    /// read that leaves room in `buf` marks the socket drained, so the next wait is for new
    /// bytes rather than a read that would only return EAGAIN.
    fn read_now(&self, _buf: &mut BytesMut) -> Option<io::Result<usize>> {
        None
    }

    /// Writes what the connection takes now from `out` without waiting, counted as client
    /// output.
    ///
    /// # Errors
    /// The connection's write error (not "would block").
    fn try_write(&mut self, out: &mut OutBuf) -> io::Result<()>;

    /// Whether bytes taken earlier still wait inside the stream for the socket.
    fn has_pending_output(&self) -> bool;

    /// Tells the client the connection ends, when the protocol has a way to (TLS
    /// `close_notify`), without waiting.
    fn close(&mut self) {}

    /// Closes the proxy's sending side after what was written so far (TCP FIN), without
    /// waiting; the client can still send, and the session can still read.
    fn half_close(&mut self);
}

/// A plain TCP client connection, shared by its session and its reply queue (which writes a
/// reply straight to it while the session waits with nothing else to do, see
/// `crate::replies`).
#[derive(Debug)]
pub struct Tcp(Arc<TcpStream>);

impl From<TcpStream> for Tcp {
    fn from(stream: TcpStream) -> Self {
        Self(Arc::new(stream))
    }
}

impl Tcp {
    /// The socket, once the reply queue let go of it (`None` while it has not).
    pub(crate) fn into_inner(self) -> Option<TcpStream> {
        Arc::into_inner(self.0)
    }

    /// The socket.
    #[cfg(test)]
    pub(crate) fn get_ref(&self) -> &TcpStream {
        &self.0
    }
}

// Only for what a session reads after it stopped serving (the close's linger): reads while
// serving go through `read_now`.
impl AsyncRead for Tcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl ClientStream for Tcp {
    const PARKABLE: bool = true;

    fn shared_socket(&self) -> Option<Arc<TcpStream>> {
        Some(Arc::clone(&self.0))
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }

    fn raw_fd(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(&*self.0)
    }

    // `poll_*_ready` keep the session's waker in the socket's own reader/writer slot: no
    // entry to insert into (and remove from) the socket's waiter list on every turn of the
    // session's loop, as `readable()`/`writable()` would. One task per socket, so the
    // "last waker wins" rule of these functions costs nothing.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        std::future::poll_fn(move |cx| self.0.poll_read_ready(cx))
    }

    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        std::future::poll_fn(move |cx| self.0.poll_write_ready(cx))
    }

    // The session polled readiness already: no second poll (and waker check, and budget
    // check) inside a read future.
    #[inline]
    fn read_now(&self, buf: &mut BytesMut) -> Option<io::Result<usize>> {
        let spare = buf.capacity() - buf.len();
        let mut got = None;
        let outcome = self.0.try_io(Interest::READABLE, || {
            let n = self.0.try_read_buf(buf)?;
            got = Some(n);
            if n > 0 && n < spare {
                // Drained: `WouldBlock` makes `try_io` clear the readiness; the count is
                // passed on below instead of the error.
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        Some(match got {
            Some(n) => Ok(n),
            None => outcome,
        })
    }

    #[inline]
    fn try_write(&mut self, out: &mut OutBuf) -> io::Result<()> {
        out.try_write_to(&self.0)
    }

    #[inline]
    fn has_pending_output(&self) -> bool {
        false
    }

    fn half_close(&mut self) {
        // The reply queue let go of the socket when the session closed it (else it stays
        // open until both let go: no half close).
        if let Some(stream) = Arc::get_mut(&mut self.0) {
            shutdown_write(stream);
        }
    }
}

impl ClientStream for TlsStream<TcpStream> {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().0.peer_addr()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.get_ref().0.local_addr()
    }

    fn raw_fd(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(self.get_ref().0)
    }

    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        let (tcp, conn) = self.get_ref();
        // rustls stops wanting to read while it holds plaintext (or saw close_notify): then a
        // read returns at once, whatever the socket says.
        let buffered = !conn.wants_read();
        async move {
            if buffered {
                Ok(())
            } else {
                tcp.readable().await
            }
        }
    }

    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.get_ref().0.writable()
    }

    fn try_write(&mut self, out: &mut OutBuf) -> io::Result<()> {
        out.try_write_async(self)
    }

    fn has_pending_output(&self) -> bool {
        self.get_ref().1.wants_write()
    }

    fn close(&mut self) {
        self.get_mut().1.send_close_notify();
        // Best effort: a client that no longer reads does not get it.
        let mut cx = Context::from_waker(Waker::noop());
        let _ = Pin::new(self).poll_flush(&mut cx);
    }

    fn half_close(&mut self) {
        // After `close`: the FIN must follow close_notify, so only once rustls holds no
        // records; a client that no longer reads gets neither.
        if !self.get_ref().1.wants_write() {
            shutdown_write(self.get_mut().0);
        }
    }
}

/// Closes the sending side of `stream` (TCP FIN after what was written).
fn shutdown_write(stream: &mut TcpStream) {
    // A plain socket's shutdown completes at once (shutdown(2) with SHUT_WR).
    let mut cx = Context::from_waker(Waker::noop());
    let _ = Pin::new(stream).poll_shutdown(&mut cx);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use redshard_config::NodeAddr;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpSocket;

    use super::*;

    /// The session's write discipline: wait for writability while there is output or the
    /// stream holds some, write without waiting, and stop only when both are empty. With a
    /// small socket buffer the last records stay inside rustls after the output empties;
    /// `has_pending_output` keeps them from being forgotten.
    #[tokio::test]
    async fn output_left_inside_tls_leaves_once_the_socket_takes_it() {
        const TOTAL: usize = 256 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = crate::tls::test_pki::loopback_pair(dir.path(), "proxy");
        let listen = TcpSocket::new_v4().unwrap();
        listen.set_send_buffer_size(4096).unwrap();
        listen.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listen.listen(16).unwrap();
        let addr = listener.local_addr().unwrap();
        let reader = tokio::spawn(async move {
            let node = NodeAddr::parse(&addr.to_string()).unwrap();
            let tcp = TcpStream::connect(addr).await.unwrap();
            let mut tls = client.connect(&node, tcp).await.unwrap();
            // A client that reads late, in small pieces.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut got = vec![0u8; TOTAL];
            tokio::time::timeout(Duration::from_secs(10), tls.read_exact(&mut got))
                .await
                .expect("every byte arrives")
                .unwrap();
            assert!(got.iter().all(|&b| b == b'r'));
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut stream = server.acceptor().accept(tcp).await.unwrap();
        let mut out = OutBuf::new();
        out.push(Bytes::from(vec![b'r'; TOTAL]));
        stream.try_write(&mut out).unwrap();
        while !out.is_empty() || stream.has_pending_output() {
            stream.writable().await.unwrap();
            stream.try_write(&mut out).unwrap();
        }
        reader.await.unwrap();
    }
}
