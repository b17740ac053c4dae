//! A minimal async RESP2 client for tests, decoding with `redis-protocol`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// A decoded reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+...`
    Status(String),
    /// `-...`
    Error(String),
    /// `:n`
    Int(i64),
    /// `$...` (`None` is the null bulk)
    Bulk(Option<Vec<u8>>),
    /// `*...`
    Array(Vec<Reply>),
}

impl Reply {
    fn from_frame(frame: OwnedFrame) -> Self {
        match frame {
            OwnedFrame::SimpleString(s) => Self::Status(String::from_utf8_lossy(&s).into_owned()),
            OwnedFrame::Error(e) => Self::Error(e),
            OwnedFrame::Integer(i) => Self::Int(i),
            OwnedFrame::BulkString(b) => Self::Bulk(Some(b)),
            OwnedFrame::Array(items) => {
                Self::Array(items.into_iter().map(Self::from_frame).collect())
            }
            OwnedFrame::Null => Self::Bulk(None),
        }
    }

    /// A bulk reply's text.
    ///
    /// # Panics
    /// When the reply is not a non-null bulk.
    #[must_use]
    pub fn text(&self) -> String {
        match self {
            Self::Bulk(Some(b)) => String::from_utf8_lossy(b).into_owned(),
            other => panic!("expected a bulk string, got {other:?}"),
        }
    }

    /// Shorthand for a bulk reply holding `s`.
    #[must_use]
    pub fn bulk(s: &str) -> Self {
        Self::Bulk(Some(s.as_bytes().to_vec()))
    }

    /// Whether this is `+OK`.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Status(s) if s == "OK")
    }

    /// The elements of an array reply.
    ///
    /// # Panics
    /// When the reply is not an array.
    #[must_use]
    pub fn items(&self) -> &[Reply] {
        match self {
            Self::Array(items) => items,
            other => panic!("expected an array, got {other:?}"),
        }
    }

    /// In an array of alternating field names and values (the admin port's structured
    /// replies), the value of `name`.
    ///
    /// # Panics
    /// When the reply is not such an array or has no such field.
    #[must_use]
    pub fn field(&self, name: &str) -> &Reply {
        let items = self.items();
        items
            .chunks(2)
            .find(|pair| pair[0] == Self::bulk(name))
            .and_then(|pair| pair.get(1))
            .unwrap_or_else(|| panic!("no field {name:?} in {self:?}"))
    }

    /// An integer reply's value.
    ///
    /// # Panics
    /// When the reply is not an integer.
    #[must_use]
    pub fn int(&self) -> i64 {
        match self {
            Self::Int(n) => *n,
            other => panic!("expected an integer, got {other:?}"),
        }
    }
}

/// What a [`Client`] talks over: a TCP socket, or a TLS stream the test opened.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug> Stream for T {}

/// One connection.
#[derive(Debug)]
pub struct Client {
    /// The socket (or TLS stream).
    stream: Box<dyn Stream>,
    /// Bytes read and not yet decoded.
    buf: BytesMut,
}

/// How long a test waits for one reply before failing.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Encodes a command as a RESP array of bulk strings.
#[must_use]
pub fn encode_command<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The length of the complete RESP3 value at the start of `buf`, or `None` when more bytes are
/// needed. (redis-protocol 6's RESP3 decoder rejects `*0` nested in a map, which Redis sends.)
/// A loop over an explicit stack, not recursion: a script's reply may nest thousands deep.
///
/// # Panics
/// On bytes that are not RESP3.
#[must_use]
pub fn resp3_len(buf: &[u8]) -> Option<usize> {
    let count = |line: &str| -> i64 {
        line.parse()
            .unwrap_or_else(|_| panic!("bad RESP3 length {line:?}"))
    };
    // Elements still to come in each open aggregate, innermost last.
    let mut open: Vec<i64> = Vec::new();
    let mut at = 0;
    loop {
        let rest = &buf[at..];
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&rest[1..line_end]).expect("RESP3 header is text");
        let mut next = at + line_end + 2;
        let mut items = 0;
        match rest[0] {
            b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => {}
            b'$' | b'!' | b'=' => {
                let n = count(line);
                if n >= 0 {
                    next += n as usize + 2;
                    if buf.len() < next {
                        return None;
                    }
                }
            }
            kind @ (b'*' | b'~' | b'>' | b'%' | b'|') => {
                let n = count(line);
                items = match kind {
                    b'%' => n * 2,
                    // An attribute is followed by the value it describes.
                    b'|' => n * 2 + 1,
                    _ => n.max(0),
                };
            }
            other => panic!("not RESP3: type byte {other:?}"),
        }
        at = next;
        if items > 0 {
            open.push(items);
            continue;
        }
        // One element is complete: close every aggregate it completes.
        loop {
            let Some(left) = open.last_mut() else {
                return Some(at);
            };
            *left -= 1;
            if *left > 0 {
                break;
            }
            open.pop();
        }
    }
}

impl Client {
    /// Connects to `addr`.
    ///
    /// # Panics
    /// When the connection is refused.
    pub async fn connect(addr: impl Into<String>) -> Self {
        let addr = addr.into();
        let stream = TcpStream::connect(&addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).expect("nodelay");
        Self::over(stream)
    }

    /// A client over an already open connection (such as a TLS stream).
    pub fn over(stream: impl Stream + 'static) -> Self {
        Self {
            stream: Box::new(stream),
            buf: BytesMut::new(),
        }
    }

    /// Connects to a socket address.
    pub async fn connect_addr(addr: SocketAddr) -> Self {
        Self::connect(addr.to_string()).await
    }

    /// Sends raw bytes.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
        // A TLS stream may still hold records the socket had no room for.
        self.stream.flush().await.expect("flush");
    }

    /// Reads one reply; `None` when the server closed the connection.
    ///
    /// # Panics
    /// On a timeout or undecodable bytes.
    pub async fn try_read(&mut self) -> Option<Reply> {
        loop {
            if let Some((frame, len)) = decode(&self.buf).expect("server sent invalid RESP") {
                let _ = self.buf.split_to(len);
                return Some(Reply::from_frame(frame));
            }
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("timed out waiting for a reply")
                .expect("read");
            if n == 0 {
                return None;
            }
        }
    }

    /// Reads one RESP3 reply and returns its exact bytes (framed by [`resp3_len`], a small
    /// parser independent of the proxy's scanner).
    ///
    /// # Panics
    /// On a timeout, a closed connection or undecodable bytes.
    pub async fn read_resp3_raw(&mut self) -> Vec<u8> {
        loop {
            if let Some(len) = resp3_len(&self.buf) {
                return self.buf.split_to(len).to_vec();
            }
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("timed out waiting for a reply")
                .expect("read");
            assert!(n > 0, "connection closed before a reply");
        }
    }

    /// Sends one command and returns its RESP3 reply's bytes.
    pub async fn cmd_resp3<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Vec<u8> {
        self.send_raw(&encode_command(args)).await;
        self.read_resp3_raw().await
    }

    /// Reads one reply.
    ///
    /// # Panics
    /// When the connection closed first.
    pub async fn read(&mut self) -> Reply {
        self.try_read()
            .await
            .expect("connection closed before a reply")
    }

    /// Sends one command and reads its reply.
    pub async fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Reply {
        self.send_raw(&encode_command(args)).await;
        self.read().await
    }

    /// `INFO` field `field` of section `section`, asked on this connection.
    pub async fn info_field(&mut self, section: &str, field: &str) -> Option<String> {
        let Reply::Bulk(Some(text)) = self.cmd(&["INFO", section]).await else {
            return None;
        };
        String::from_utf8_lossy(&text).lines().find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')
                .map(|v| v.trim().to_owned())
        })
    }

    /// Sends all commands in one write, then reads every reply in order.
    pub async fn pipeline<A: AsRef<[u8]>>(&mut self, commands: &[Vec<A>]) -> Vec<Reply> {
        let mut bytes = Vec::new();
        for c in commands {
            bytes.extend(encode_command(c));
        }
        self.send_raw(&bytes).await;
        let mut replies = Vec::with_capacity(commands.len());
        for _ in commands {
            replies.push(self.read().await);
        }
        replies
    }
}
