//! The admin port's replies: a small RESP2 value tree, encoded with [`crate::resp::encode`].
//!
//! Structured replies are arrays of alternating field names and values, like `CONFIG GET` or
//! `XINFO STREAM`, so redis-cli shows them readably and the CLI reads them as maps.

use bytes::BytesMut;

use crate::resp::encode;

/// One reply of the admin port.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// `+text`
    Status(String),
    /// `-text`; the text starts with the error code (`ERR`, `NOAUTH`, ...). The admin port's
    /// own texts (see the module docs of [`crate::admin`]), not `ClientError`'s.
    Error(String),
    /// `:n`
    Int(i64),
    /// `$len text`
    Bulk(String),
    /// `$-1`: a field with no value (a lag of a replica that is not mirrored to, ...).
    Nil,
    /// `*n` followed by the elements.
    Array(Vec<Reply>),
    /// Another proxy's reply, relayed as it came: one complete RESP2 reply, framed by a
    /// [`crate::resp::ReplyScanner`] (the leader's answer to a forwarded command).
    Relayed(Vec<u8>),
}

impl Reply {
    /// `+OK`.
    #[must_use]
    pub fn ok() -> Self {
        Self::Status("OK".into())
    }

    /// `-ERR {text}`.
    #[must_use]
    pub fn err(text: impl std::fmt::Display) -> Self {
        Self::Error(format!("ERR {text}"))
    }

    /// An array of alternating field names and values.
    #[must_use]
    pub fn fields(pairs: Vec<(&str, Reply)>) -> Self {
        Self::Array(
            pairs
                .into_iter()
                .flat_map(|(name, value)| [Self::Bulk(name.to_owned()), value])
                .collect(),
        )
    }

    /// A float as Redis shows them in bulk strings (RESP2 has no double): two decimals.
    #[must_use]
    pub fn float(value: f64) -> Self {
        Self::Bulk(format!("{value:.2}"))
    }

    /// Whether it is an error reply, relayed ones included.
    #[must_use]
    pub fn is_error(&self) -> bool {
        match self {
            Self::Error(_) => true,
            Self::Relayed(bytes) => bytes.first() == Some(&b'-'),
            _ => false,
        }
    }

    /// An error reply's text without its `-` (relayed ones included), for a caller that
    /// passes it on inside its own error; `None` for any other reply.
    #[must_use]
    pub fn error_text(&self) -> Option<String> {
        match self {
            Self::Error(text) => Some(text.clone()),
            Self::Relayed(bytes) => bytes.strip_prefix(b"-").map(|rest| {
                String::from_utf8_lossy(rest.strip_suffix(b"\r\n").unwrap_or(rest)).into_owned()
            }),
            _ => None,
        }
    }

    /// Appends the encoded reply to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            Self::Status(text) => encode::simple(out, text),
            Self::Error(text) => encode::error(out, text),
            Self::Int(n) => encode::integer(out, *n),
            Self::Bulk(text) => encode::bulk(out, text.as_bytes()),
            Self::Nil => encode::null_bulk(out),
            Self::Array(items) => {
                encode::array_header(out, items.len());
                for item in items {
                    item.encode(out);
                }
            }
            Self::Relayed(bytes) => out.extend_from_slice(bytes),
        }
    }
}

impl From<&str> for Reply {
    fn from(text: &str) -> Self {
        Self::Bulk(text.to_owned())
    }
}

impl From<String> for Reply {
    fn from(text: String) -> Self {
        Self::Bulk(text)
    }
}

impl From<u64> for Reply {
    fn from(n: u64) -> Self {
        Self::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl From<usize> for Reply {
    fn from(n: usize) -> Self {
        Self::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}

impl<T: Into<Reply>> From<Option<T>> for Reply {
    fn from(value: Option<T>) -> Self {
        value.map_or(Self::Nil, Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(reply: &Reply) -> Vec<u8> {
        let mut out = BytesMut::new();
        reply.encode(&mut out);
        out.to_vec()
    }

    #[test]
    fn encodes_resp2() {
        assert_eq!(bytes(&Reply::ok()), b"+OK\r\n");
        assert_eq!(bytes(&Reply::err("no\r\nway")), b"-ERR no  way\r\n");
        assert_eq!(bytes(&Reply::from(7u64)), b":7\r\n");
        assert_eq!(bytes(&Reply::from(None::<String>)), b"$-1\r\n");
        assert_eq!(bytes(&Reply::float(1.0 / 3.0)), b"$4\r\n0.33\r\n");
        assert_eq!(
            bytes(&Reply::fields(vec![
                ("epoch", Reply::from(3u64)),
                ("name", "s1".into())
            ])),
            b"*4\r\n$5\r\nepoch\r\n:3\r\n$4\r\nname\r\n$2\r\ns1\r\n"
        );
        assert_eq!(bytes(&Reply::Array(vec![])), b"*0\r\n");
        assert_eq!(bytes(&Reply::Relayed(b":1\r\n".to_vec())), b":1\r\n");
        assert!(Reply::Relayed(b"-ERR x\r\n".to_vec()).is_error());
    }
}
