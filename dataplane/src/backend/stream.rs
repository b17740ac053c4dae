//! A backend connection's bytes: plain TCP, or TLS over TCP with `[backend] tls`.
//!
//! Lanes and subscription connections read and write at once from one task, through the two
//! halves of [`BackendStream::split`]. For TCP those are tokio's borrowed halves (no lock, as
//! before TLS existed). A TLS connection is one state machine for both directions, so its
//! halves share it through a mutex, which one task never contends.
//!
//! **TLS reads flush first.** A TLS write that finds the socket full keeps the encrypted
//! records it could not send and still reports the bytes as written, like a buffered writer.
//! A lane writes only while it has requests to send, so nothing would push those records
//! out; every read of a TLS stream therefore first flushes what is pending (a pending flush
//! also wakes the task when the socket can take more). The reader is always polled while a
//! connection is open, so the records leave as soon as the socket allows.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use redshard_config::NodeAddr;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::tls::BackendTls;

/// One connection to a backend node.
#[derive(Debug)]
pub enum BackendStream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP (boxed: the TLS state is large and the enum is moved around).
    Tls(Box<TlsStream<TcpStream>>),
}

impl BackendStream {
    /// Connects to `node` with `TCP_NODELAY` and a zero linger, then runs the TLS handshake when `tls` is given.
    ///
    /// # Errors
    /// The TCP connect or the TLS handshake failed.
    pub async fn connect(node: &NodeAddr, tls: Option<&BackendTls>) -> io::Result<Self> {
        let tcp = TcpStream::connect(node.as_str()).await?;
        tcp.set_nodelay(true)?;
        // A connection the proxy gives up on (timeout, fencing) is reset, not closed: the
        // node then discards requests it has not read yet instead of running them later (a
        // master that wakes up from a hang after its failover must receive nothing). A zero
        // linger never blocks the dropping thread (the deprecation is about non-zero ones).
        #[allow(deprecated)]
        tcp.set_linger(Some(std::time::Duration::ZERO))?;
        match tls {
            None => Ok(Self::Tcp(tcp)),
            Some(tls) => Ok(Self::Tls(Box::new(tls.connect(node, tcp).await?))),
        }
    }

    /// A reading and a writing half that one task can use at the same time.
    pub fn split(&mut self) -> (BackendReader<'_>, BackendWriter<'_>) {
        match self {
            Self::Tcp(tcp) => {
                let (reader, writer) = tcp.split();
                (BackendReader::Tcp(reader), BackendWriter::Tcp(writer))
            }
            Self::Tls(tls) => {
                let shared = Arc::new(Mutex::new(&mut **tls));
                (
                    BackendReader::Tls(TlsHalf(Arc::clone(&shared))),
                    BackendWriter::Tls(TlsHalf(shared)),
                )
            }
        }
    }
}

/// The reading half of a [`BackendStream`].
#[derive(Debug)]
pub enum BackendReader<'a> {
    /// Of a TCP connection.
    Tcp(ReadHalf<'a>),
    /// Of a TLS connection.
    Tls(TlsHalf<'a>),
}

/// The writing half of a [`BackendStream`].
#[derive(Debug)]
pub enum BackendWriter<'a> {
    /// Of a TCP connection.
    Tcp(WriteHalf<'a>),
    /// Of a TLS connection.
    Tls(TlsHalf<'a>),
}

/// Either half of a TLS connection: the connection, shared with the other half.
#[derive(Debug)]
pub struct TlsHalf<'a>(Arc<Mutex<&'a mut TlsStream<TcpStream>>>);

impl TlsHalf<'_> {
    /// Runs `f` on the connection. One task owns both halves, so the lock is never contended.
    fn with<T>(&self, f: impl FnOnce(Pin<&mut TlsStream<TcpStream>>) -> T) -> T {
        let mut tls = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f(Pin::new(&mut **tls))
    }
}

/// Reads from a TLS connection after flushing the records earlier writes left (see the
/// [module docs](self)).
fn poll_read_tls(
    mut tls: Pin<&mut TlsStream<TcpStream>>,
    cx: &mut Context<'_>,
    buf: &mut ReadBuf<'_>,
) -> Poll<io::Result<()>> {
    if tls.get_ref().1.wants_write() {
        if let Poll::Ready(Err(e)) = tls.as_mut().poll_flush(cx) {
            return Poll::Ready(Err(e));
        }
    }
    tls.poll_read(cx, buf)
}

impl AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls) => poll_read_tls(Pin::new(&mut **tls), cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls) => Pin::new(&mut **tls).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for BackendReader<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(reader) => Pin::new(reader).poll_read(cx, buf),
            Self::Tls(half) => half.with(|tls| poll_read_tls(tls, cx, buf)),
        }
    }
}

impl AsyncWrite for BackendWriter<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(writer) => Pin::new(writer).poll_write(cx, buf),
            Self::Tls(half) => half.with(|tls| tls.poll_write(cx, buf)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(writer) => Pin::new(writer).poll_write_vectored(cx, bufs),
            Self::Tls(half) => half.with(|tls| tls.poll_write_vectored(cx, bufs)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(writer) => Pin::new(writer).poll_flush(cx),
            Self::Tls(half) => half.with(|tls| tls.poll_flush(cx)),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(writer) => Pin::new(writer).poll_shutdown(cx),
            Self::Tls(half) => half.with(|tls| tls.poll_shutdown(cx)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::{Bytes, BytesMut};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpSocket;

    use super::*;
    use crate::outbuf::OutBuf;

    /// A lane writes until its output is empty, then only reads. When the socket is full at
    /// the last write, rustls keeps that write's last records: the read must push them out,
    /// or the node never gets them and both sides wait forever.
    #[tokio::test]
    async fn records_left_by_the_last_write_leave_through_the_read() {
        const TOTAL: usize = 1024 * 1024;
        // More than small socket buffers hold, less than rustls buffers (64 KiB).
        const TAIL: usize = 48 * 1024;
        let dir = tempfile::tempdir().unwrap();
        let (server, client) = crate::tls::test_pki::loopback_pair(dir.path(), "server");
        let listen = TcpSocket::new_v4().unwrap();
        listen.set_recv_buffer_size(4096).unwrap();
        listen.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = listen.listen(16).unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = server.acceptor();
        let (written_tx, written_rx) = tokio::sync::oneshot::channel::<()>();
        let node = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = acceptor.accept(tcp).await.unwrap();
            let mut body = vec![0u8; TOTAL - TAIL];
            tls.read_exact(&mut body).await.unwrap();
            // Stop reading until the proxy's side has handed over everything.
            written_rx.await.unwrap();
            let mut tail = vec![0u8; TAIL];
            tls.read_exact(&mut tail).await.unwrap();
            tls.write_all(b"+OK\r\n").await.unwrap();
            tls.flush().await.unwrap();
        });

        let socket = TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(4096).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let node_addr = NodeAddr::parse(&addr.to_string()).unwrap();
        let mut stream =
            BackendStream::Tls(Box::new(client.connect(&node_addr, tcp).await.unwrap()));
        let (mut reader, mut writer) = stream.split();
        let mut out = OutBuf::new();
        out.push(Bytes::from(vec![b'x'; TOTAL]));
        out.write_all(&mut writer).await.unwrap();
        written_tx.send(()).unwrap();
        let mut answer = BytesMut::new();
        tokio::time::timeout(Duration::from_secs(10), reader.read_buf(&mut answer))
            .await
            .expect("the node got every byte and answered")
            .unwrap();
        assert_eq!(&answer[..], b"+OK\r\n");
        node.await.unwrap();
    }
}
