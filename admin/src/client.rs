//! A blocking RESP2 client for the proxy's admin port, decoding with `redis-protocol`.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use redis_protocol::resp2::decode::decode;
use redis_protocol::resp2::types::OwnedFrame;

/// Largest reply accepted (a TOPOLOGY of thousands of shards fits many times over).
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// How long a command may take: FAILOVER waits for a drain, ADDSHARD checks the node.
const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// The proxy closed the connection or reset it: it went away (a restart, a stop, a crash).
/// Callers that know what the proxy was doing find it with `downcast_ref` and say what
/// happens to that work.
#[derive(Debug)]
pub struct ConnectionLost {
    /// `host:port` of the proxy.
    pub addr: String,
    /// What the socket said.
    pub detail: String,
}

impl std::fmt::Display for ConnectionLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.addr, self.detail)
    }
}

impl std::error::Error for ConnectionLost {}

impl ConnectionLost {
    /// `ConnectionLost` for a failed read or write, or `None` when `e` does not mean the
    /// peer went away (a timeout, for one).
    fn from_io(addr: &str, e: &std::io::Error) -> Option<Self> {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
        matches!(
            e.kind(),
            BrokenPipe | ConnectionAborted | ConnectionReset | UnexpectedEof
        )
        .then(|| Self {
            addr: addr.to_owned(),
            detail: format!("closed the connection ({e})"),
        })
    }
}

/// A decoded reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `+text`
    Status(String),
    /// `-text`
    Error(String),
    /// `:n`
    Int(i64),
    /// `$text`; `None` is the null bulk (a field without a value).
    Bulk(Option<String>),
    /// `*n`
    Array(Vec<Value>),
}

impl Value {
    fn from_frame(frame: OwnedFrame) -> Self {
        match frame {
            OwnedFrame::SimpleString(s) => Self::Status(String::from_utf8_lossy(&s).into_owned()),
            OwnedFrame::Error(e) => Self::Error(e),
            OwnedFrame::Integer(n) => Self::Int(n),
            OwnedFrame::BulkString(b) => Self::Bulk(Some(String::from_utf8_lossy(&b).into_owned())),
            OwnedFrame::Array(items) => {
                Self::Array(items.into_iter().map(Self::from_frame).collect())
            }
            OwnedFrame::Null => Self::Bulk(None),
        }
    }

    /// The elements of an array.
    ///
    /// # Errors
    /// The value is not an array.
    pub fn items(&self) -> Result<&[Value]> {
        match self {
            Self::Array(items) => Ok(items),
            other => bail!("the proxy answered {other:?} where a list was expected"),
        }
    }

    /// In an array of alternating field names and values, the value of `name`.
    ///
    /// # Errors
    /// Not such an array, or no such field.
    pub fn field(&self, name: &str) -> Result<&Value> {
        self.items()?
            .chunks(2)
            .find(|pair| matches!(&pair[0], Self::Bulk(Some(n)) if n == name))
            .and_then(|pair| pair.get(1))
            .ok_or_else(|| anyhow!("the proxy's reply has no field {name:?}"))
    }

    /// The text of field `name` (`None` when it is null).
    ///
    /// # Errors
    /// As [`Value::field`], or the field is not text.
    pub fn text(&self, name: &str) -> Result<Option<String>> {
        match self.field(name)? {
            Self::Bulk(text) => Ok(text.clone()),
            Self::Status(text) => Ok(Some(text.clone())),
            other => bail!("field {name:?} is {other:?}, not text"),
        }
    }

    /// The text of field `name`, which must not be null.
    ///
    /// # Errors
    /// As [`Value::text`], or the field is null.
    pub fn string(&self, name: &str) -> Result<String> {
        self.text(name)?
            .ok_or_else(|| anyhow!("field {name:?} is empty"))
    }

    /// The integer of field `name` (`None` when it is null).
    ///
    /// # Errors
    /// As [`Value::field`], or the field is not an integer.
    pub fn int(&self, name: &str) -> Result<Option<i64>> {
        match self.field(name)? {
            Self::Int(n) => Ok(Some(*n)),
            Self::Bulk(None) => Ok(None),
            other => bail!("field {name:?} is {other:?}, not an integer"),
        }
    }

    /// The number in field `name`, whether an integer or a decimal in text (`None` when null).
    ///
    /// # Errors
    /// As [`Value::field`], or the field is not a number.
    pub fn number(&self, name: &str) -> Result<Option<f64>> {
        match self.field(name)? {
            Self::Int(n) => Ok(Some(*n as f64)),
            Self::Bulk(None) => Ok(None),
            Self::Bulk(Some(text)) => text
                .parse()
                .map(Some)
                .with_context(|| format!("field {name:?} is {text:?}, not a number")),
            other => bail!("field {name:?} is {other:?}, not a number"),
        }
    }
}

/// What the proxy answers, like Redis, to a client over its connection budget.
const FULL: &str = "max number of clients reached";

/// The admin port's connection: TCP (`admin_listen`) or the Unix socket (`admin_socket`).
#[derive(Debug)]
enum Stream {
    /// `-h`/`-p`.
    Tcp(TcpStream),
    /// `-s`, or the default socket.
    Unix(UnixStream),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// One connection to the admin port.
#[derive(Debug)]
pub struct AdminClient {
    /// The socket.
    stream: Stream,
    /// Bytes read and not yet decoded.
    buf: Vec<u8>,
    /// `host:port`, for messages.
    addr: String,
}

impl AdminClient {
    /// Connects to `host:port` and authenticates with `password` when given.
    ///
    /// # Errors
    /// The port cannot be reached, or AUTH is refused.
    pub fn connect(host: &str, port: u16, password: Option<&str>) -> Result<Self> {
        let addr = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let target = addr
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {addr}"))?
            .next()
            .ok_or_else(|| anyhow!("{addr} resolves to no address"))?;
        let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5)).with_context(|| {
            format!(
                "could not connect to the redshard admin port at {addr}; is the proxy running with admin_listen = \"{addr}\"? (-h HOST -p PORT point elsewhere)"
            )
        })?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_nodelay(true)?;
        let mut client = Self {
            stream: Stream::Tcp(stream),
            buf: Vec::new(),
            addr,
        };
        if let Some(password) = password {
            match client.call(&["AUTH", password])? {
                Value::Status(s) if s == "OK" => {}
                Value::Error(e) if e.contains(FULL) => bail!(
                    "the admin port at {} is full ({FULL}): close idle admin connections, or use the admin socket (-s), and try again",
                    client.addr
                ),
                Value::Error(e) => {
                    bail!("AUTH failed: {e} (check -a PASSWORD against the proxy's admin_password)")
                }
                other => bail!("AUTH answered {other:?}"),
            }
        }
        Ok(client)
    }

    /// Connects to the admin socket at `path` (no AUTH: the kernel vouches for the user).
    /// At the default path (`private`), refuses a directory another user owns or can enter,
    /// which could hold someone else's socket.
    ///
    /// # Errors
    /// The socket cannot be opened, or its directory is not private.
    pub fn connect_unix(path: &Path, private: bool) -> Result<Self> {
        if private {
            check_private_dir(path)?;
        }
        let stream = UnixStream::connect(path).with_context(|| {
            format!(
                "could not connect to the redshard admin socket {}; is the proxy running as this user (admin_socket)? (-s PATH or REDSHARD_ADMIN_SOCKET name another socket, -h HOST -p PORT a TCP admin_listen)",
                path.display()
            )
        })?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Self {
            stream: Stream::Unix(stream),
            buf: Vec::new(),
            addr: path.display().to_string(),
        })
    }

    /// Where it is connected.
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one command and reads its reply (an error reply is a [`Value::Error`]).
    ///
    /// # Errors
    /// The connection failed or the reply is not RESP.
    pub fn call(&mut self, args: &[&str]) -> Result<Value> {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            request.extend_from_slice(arg.as_bytes());
            request.extend_from_slice(b"\r\n");
        }
        if let Err(e) = self.stream.write_all(&request) {
            if let Some(lost) = ConnectionLost::from_io(&self.addr, &e) {
                return Err(lost.into());
            }
            return Err(e).with_context(|| format!("lost the connection to {}", self.addr));
        }
        loop {
            if let Some((frame, len)) = decode(&self.buf)
                .map_err(|e| anyhow!("{} sent an invalid reply: {e:?}", self.addr))?
            {
                self.buf.drain(..len);
                return Ok(Value::from_frame(frame));
            }
            if self.buf.len() > MAX_REPLY_BYTES {
                bail!(
                    "{} sent a reply larger than {MAX_REPLY_BYTES} bytes",
                    self.addr
                );
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) => {
                    if let Some(lost) = ConnectionLost::from_io(&self.addr, &e) {
                        return Err(lost.into());
                    }
                    return Err(e).with_context(|| format!("no answer from {}", self.addr));
                }
            };
            if n == 0 {
                return Err(ConnectionLost {
                    addr: self.addr.clone(),
                    detail: "closed the connection".into(),
                }
                .into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// As [`AdminClient::call`], with an error reply turned into an `Err` carrying its text.
    ///
    /// # Errors
    /// As [`AdminClient::call`], or the proxy refused the command.
    pub fn ok(&mut self, args: &[&str]) -> Result<Value> {
        match self.call(args)? {
            Value::Error(e) if e.contains(FULL) => Err(anyhow!(
                "the admin port at {} is full ({FULL}): close idle admin connections and try again",
                self.addr
            )),
            Value::Error(e) => Err(anyhow!("{}", e.strip_prefix("ERR ").unwrap_or(&e))),
            value => Ok(value),
        }
    }
}

/// Refuses the default socket's directory when another user owns it or others may enter it.
fn check_private_dir(path: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        // Missing: the connect fails with its own message.
        return Ok(());
    };
    let me = redshard_config::ha::effective_uid();
    if !meta.is_dir() || me.is_some_and(|me| meta.uid() != me) || meta.mode() & 0o077 != 0 {
        bail!(
            "{} is not a private directory of this user (owner uid {}, mode {:o}); refusing to talk to a socket someone else may have put there",
            dir.display(),
            meta.uid(),
            meta.mode() & 0o777
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_alternating_arrays() {
        let v = Value::Array(vec![
            Value::Bulk(Some("epoch".into())),
            Value::Int(3),
            Value::Bulk(Some("rate".into())),
            Value::Bulk(Some("2.50".into())),
            Value::Bulk(Some("last".into())),
            Value::Bulk(None),
        ]);
        assert_eq!(v.int("epoch").unwrap(), Some(3));
        assert_eq!(v.number("rate").unwrap(), Some(2.5));
        assert_eq!(v.number("epoch").unwrap(), Some(3.0));
        assert_eq!(v.text("last").unwrap(), None);
        assert!(v.string("last").is_err());
        assert!(v.field("nope").is_err());
        assert!(Value::Int(1).items().is_err());
    }
}
