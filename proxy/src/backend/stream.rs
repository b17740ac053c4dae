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
    /// Connects to `node` with `TCP_NODELAY`, then runs the TLS handshake when `tls` is given.
    ///
    /// # Errors
    /// The TCP connect or the TLS handshake failed.
    pub async fn connect(node: &NodeAddr, tls: Option<&BackendTls>) -> io::Result<Self> {
        let tcp = TcpStream::connect(node.as_str()).await?;
        tcp.set_nodelay(true)?;
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
