//! A control connection: the proxy's own request/reply exchanges with one node (probes,
//! `INFO replication`, `REPLICAOF`, key moves), authenticated with `[backend] control_*`.

use std::collections::HashMap;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use redshard_config::NodeAddr;
use redshard_dataplane::backend::stream::BackendStream;
use redshard_dataplane::tls::BackendTls;
use redshard_protocol::resp::{encode, reply, ReplyScanner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Largest reply read on a control connection (a `DUMP` of a big key fits).
const MAX_REPLY: usize = 512 * 1024 * 1024;

/// Why a control exchange failed; the text is for logs and admin replies.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The node refused the TCP connection (nothing listens: the process is gone).
    #[error("{0}: connection refused")]
    Refused(NodeAddr),
    /// Anything else: I/O error, timeout, bad reply, refused credentials.
    #[error("{addr}: {reason}")]
    Failed {
        /// The node.
        addr: NodeAddr,
        /// What happened.
        reason: String,
    },
}

impl ConnError {
    fn failed(addr: &NodeAddr, reason: impl Into<String>) -> Self {
        Self::Failed {
            addr: addr.clone(),
            reason: reason.into(),
        }
    }
}

/// One authenticated connection to a node, used one exchange at a time.
#[derive(Debug)]
pub struct ControlConn {
    /// The node.
    addr: NodeAddr,
    /// The socket (TLS when `[backend] tls` is on).
    stream: BackendStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// Bound on each exchange.
    timeout: Duration,
}

impl ControlConn {
    /// Connects to `addr` (with `tls` when given) and sends `auth` (a complete `AUTH`
    /// request) if given, all within `timeout`.
    ///
    /// # Errors
    /// The node is unreachable, slow, or refuses the credentials.
    pub async fn open(
        addr: &NodeAddr,
        auth: Option<&Bytes>,
        tls: Option<&BackendTls>,
        timeout: Duration,
    ) -> Result<Self, ConnError> {
        let connect = tokio::time::timeout(timeout, BackendStream::connect(addr, tls)).await;
        let stream = match connect {
            Err(_) => return Err(ConnError::failed(addr, "connect timed out")),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(ConnError::Refused(addr.clone()))
            }
            Ok(Err(e)) => return Err(ConnError::failed(addr, format!("cannot connect: {e}"))),
            Ok(Ok(stream)) => stream,
        };
        let mut conn = Self {
            addr: addr.clone(),
            stream,
            buf: BytesMut::with_capacity(1024),
            timeout,
        };
        if let Some(auth) = auth {
            let answer = conn.raw(auth).await?;
            if !reply::is_ok(&answer) {
                return Err(ConnError::failed(
                    addr,
                    format!(
                        "refused the proxy's control credentials: {}",
                        String::from_utf8_lossy(&answer).trim_end()
                    ),
                ));
            }
        }
        Ok(conn)
    }

    /// The node.
    #[must_use]
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// Whether a connection kept between exchanges can carry the next one: nothing is waiting
    /// to be read on it. A node that closed it, restarted or was killed made it readable (end
    /// of stream or a reset), and a reply nobody asked for would desynchronise it. Does not
    /// wait.
    pub fn still_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        self.buf.reserve(64);
        // One poll: pending means nothing arrived and the peer has not closed.
        self.stream.read_buf(&mut self.buf).now_or_never().is_none()
    }

    /// Sends one request made of `args` and returns its reply (an error reply is returned as
    /// such, not as `Err`).
    ///
    /// # Errors
    /// I/O failure, timeout or an invalid reply: the connection must not be used again.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Bytes, ConnError> {
        let mut request = BytesMut::new();
        encode::request(&mut request, args);
        self.raw(&request).await
    }

    /// As [`ControlConn::call`], but an error reply is an `Err` too.
    ///
    /// # Errors
    /// As [`ControlConn::call`], or the node answered with an error.
    pub async fn call_ok(&mut self, args: &[&[u8]]) -> Result<Bytes, ConnError> {
        let answer = self.call(args).await?;
        if reply::is_error(&answer) {
            return Err(ConnError::failed(
                &self.addr,
                format!(
                    "{} answered {}",
                    String::from_utf8_lossy(args.first().copied().unwrap_or_default()),
                    String::from_utf8_lossy(&answer).trim_end()
                ),
            ));
        }
        Ok(answer)
    }

    /// `INFO section` as field → value.
    ///
    /// # Errors
    /// As [`ControlConn::call_ok`].
    pub async fn info(&mut self, section: &str) -> Result<HashMap<String, String>, ConnError> {
        let answer = self.call_ok(&[b"INFO", section.as_bytes()]).await?;
        let text = String::from_utf8_lossy(&answer);
        Ok(text
            .lines()
            .skip(1)
            .filter_map(|line| line.trim_end().split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect())
    }

    /// Writes `request` (one complete request) and reads one reply.
    async fn raw(&mut self, request: &[u8]) -> Result<Bytes, ConnError> {
        let exchange = async {
            self.stream
                .write_all(request)
                .await
                .map_err(|e| ConnError::failed(&self.addr, format!("write failed: {e}")))?;
            let mut scanner = ReplyScanner::new(64);
            loop {
                match scanner.scan(&self.buf) {
                    Ok(Some(len)) => return Ok(self.buf.split_to(len).freeze()),
                    Ok(None) if self.buf.len() < MAX_REPLY => {}
                    Ok(None) => return Err(ConnError::failed(&self.addr, "reply too large")),
                    Err(e) => {
                        return Err(ConnError::failed(
                            &self.addr,
                            format!("sent an invalid reply ({e})"),
                        ))
                    }
                }
                self.buf.reserve(16 * 1024);
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) => return Err(ConnError::failed(&self.addr, "closed the connection")),
                    Ok(_) => {}
                    Err(e) => {
                        return Err(ConnError::failed(&self.addr, format!("read failed: {e}")))
                    }
                }
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(ConnError::failed(
                &self.addr,
                format!("no answer within {} ms", self.timeout.as_millis()),
            )),
        }
    }
}

/// An `INFO` answer as [`ControlConn::info`] gives it, from `pairs`: for the unit tests of
/// what reads one.
#[cfg(test)]
pub(super) fn info_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}
