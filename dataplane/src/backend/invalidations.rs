//! The proxy's own tracking connection to one master, for its clients' client-side caches
//! (CLIENT TRACKING at the proxy, see `crate::tracking`).
//!
//! The connection speaks RESP3 and runs `CLIENT TRACKING ON BCAST` with no prefix: the node
//! then pushes `invalidate [keys]` for every key that changes on it, whoever changed it (a
//! client through any proxy, a script, an expiry, an eviction), and `invalidate null` when it
//! is flushed. The task forwards those as [`Change`]s, and reports when it is ready
//! (tracking confirmed by the node) and when it lost the connection; it reconnects by itself
//! (with the lanes' backoff) until it is aborted, and waits while its node is fenced (the
//! connection is [`super::watch`]'s, given the request and the reading of the pushes here).

use bytes::Bytes;

use super::watch::{Report, Watched};
use redshard_protocol::resp::{reply, Protocol};

/// What a master's tracking connection reports: `Ready` once the node confirmed
/// `CLIENT TRACKING ON BCAST` (from then on it reports every change), the [`Change`]s, and
/// `Lost` when changes may be missed until the next `Ready`.
pub type Invalidation = Report<Change>;

/// A change a master reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// These keys changed.
    Keys(Vec<Bytes>),
    /// The node was flushed (FLUSHALL / FLUSHDB): every key may have changed.
    Flush,
}

/// The request that turns tracking on: every key of the node, RESP3 pushes.
const TRACKING_ON: &[u8] = b"*4\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\nON\r\n$5\r\nBCAST\r\n";

impl Watched for Change {
    const COMMAND: &'static str = "CLIENT TRACKING";
    const REQUEST: &'static [u8] = TRACKING_ON;
    const PROTOCOL: Protocol = Protocol::Resp3;
    // Its node's successor's connection settles the replies held.
    const LOST_WHILE_FENCED: bool = false;

    fn message(frame: Bytes) -> Option<Self> {
        parse(&frame)
    }
}

/// Runs the tracking connection to `addr` until aborted, sending what it learns to `tx` with
/// the node's address. Ends when `tx` is closed.
pub(super) use super::watch::run;

/// The change a push frame carries: `>2 invalidate [keys]` or `>2 invalidate null`; `None`
/// for anything else.
fn parse(frame: &Bytes) -> Option<Change> {
    if !frame.starts_with(b">") {
        return None;
    }
    let elements = reply::aggregate_elements(frame)?;
    let (kind, value) = match elements.as_slice() {
        [kind, value] => (kind.clone(), value.clone()),
        _ => return None,
    };
    if &frame[kind] != b"$10\r\ninvalidate\r\n" {
        return None;
    }
    let value = frame.slice(value);
    if value.starts_with(b"_") || value.starts_with(b"$-1") || value.starts_with(b"*-1") {
        return Some(Change::Flush);
    }
    let keys = reply::aggregate_elements(&value)?
        .into_iter()
        .filter_map(|range| {
            let element = value.slice(range);
            let (start, len) = bulk_payload(&element)?;
            Some(element.slice(start..start + len))
        })
        .collect();
    Some(Change::Keys(keys))
}

/// Where the data of the bulk string `element` (`$<len>\r\n<data>\r\n`) starts, and its length.
fn bulk_payload(element: &[u8]) -> Option<(usize, usize)> {
    let rest = element.strip_prefix(b"$")?;
    let cr = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..cr]).ok()?.parse().ok()?;
    let start = 1 + cr + 2;
    (element.len() >= start + len).then_some((start, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_become_invalidations() {
        let keys =
            Bytes::from_static(b">2\r\n$10\r\ninvalidate\r\n*2\r\n$1\r\na\r\n$3\r\nb\rc\r\n");
        assert_eq!(
            parse(&keys),
            Some(Change::Keys(vec![
                Bytes::from_static(b"a"),
                Bytes::from_static(b"b\rc")
            ]))
        );
        let flush = Bytes::from_static(b">2\r\n$10\r\ninvalidate\r\n_\r\n");
        assert_eq!(parse(&flush), Some(Change::Flush));
        let other = Bytes::from_static(b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n");
        assert_eq!(parse(&other), None);
        assert_eq!(parse(&Bytes::from_static(b"+OK\r\n")), None);
    }
}
