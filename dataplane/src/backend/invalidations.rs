//! The proxy's own tracking connection to one master, for its clients' client-side caches
//! (CLIENT TRACKING at the proxy, see `crate::tracking`).
//!
//! The connection speaks RESP3 and runs `CLIENT TRACKING ON BCAST` with no prefix: the node
//! then pushes `invalidate [keys]` for every key that changes on it, whoever changed it (a
//! client through any proxy, a script, an expiry, an eviction), and `invalidate null` when it
//! is flushed. The task forwards those as [`Invalidation`]s, and reports when it is ready
//! (tracking confirmed by the node) and when it lost the connection; it reconnects by itself
//! (with the lanes' backoff) until it is aborted, and waits while its node is fenced.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use redshard_config::NodeAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::connect::{connect, read_one_reply};
use super::LaneConfig;
use redshard_protocol::resp::{reply, Protocol, ReplyScanner};

/// What a master's tracking connection reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// The node confirmed `CLIENT TRACKING ON BCAST`: from now on it reports every change.
    Ready,
    /// These keys changed.
    Keys(Vec<Bytes>),
    /// The node was flushed (FLUSHALL / FLUSHDB): every key may have changed.
    Flush,
    /// The connection failed (or could not be made): changes may be missed until the next
    /// [`Invalidation::Ready`].
    Lost(String),
}

/// The request that turns tracking on: every key of the node, RESP3 pushes.
const TRACKING_ON: &[u8] = b"*4\r\n$6\r\nCLIENT\r\n$8\r\nTRACKING\r\n$2\r\nON\r\n$5\r\nBCAST\r\n";

/// Runs the tracking connection to `addr` until aborted, sending what it learns to `tx` with
/// the node's address. Ends when `tx` is closed.
pub(super) async fn run(
    addr: NodeAddr,
    config: Arc<LaneConfig>,
    mut fenced: watch::Receiver<bool>,
    tx: mpsc::UnboundedSender<(NodeAddr, Invalidation)>,
) {
    let mut backoff = config.backoff_min;
    loop {
        // A fenced node (a failed-over master) serves nothing: the routing table will soon
        // name its successor, whose own connection replaces this one.
        if fenced.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let (why, was_ready) = serve(&addr, &config, &mut fenced, &tx).await;
        if tx.send((addr.clone(), Invalidation::Lost(why))).is_err() {
            return;
        }
        if was_ready {
            backoff = config.backoff_min;
        }
        // A retry delay, not a synchronisation: the node is unreachable now.
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(config.backoff_max);
    }
}

/// One connection's life: connect, turn tracking on, forward pushes until it fails. Returns
/// why it ended and whether it had been ready.
async fn serve(
    addr: &NodeAddr,
    config: &LaneConfig,
    fenced: &mut watch::Receiver<bool>,
    tx: &mpsc::UnboundedSender<(NodeAddr, Invalidation)>,
) -> (String, bool) {
    let setup = async {
        let mut stream = connect(addr, Protocol::Resp3, config).await?;
        stream
            .write_all(TRACKING_ON)
            .await
            .map_err(super::error::LaneError::Connect)?;
        let answer = read_one_reply(&mut stream, config.max_reply_depth).await?;
        Ok::<_, super::error::LaneError>((stream, answer))
    };
    let (mut stream, answer) = match tokio::time::timeout(config.connect_timeout, setup).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return (e.to_string(), false),
        Err(_) => return ("timed out turning tracking on".to_owned(), false),
    };
    if !reply::is_ok(&answer) {
        return (
            format!(
                "refused CLIENT TRACKING: {}",
                String::from_utf8_lossy(&answer).trim_end()
            ),
            false,
        );
    }
    if tx.send((addr.clone(), Invalidation::Ready)).is_err() {
        return ("the proxy stopped tracking".to_owned(), true);
    }
    let mut buf = BytesMut::with_capacity(4096);
    let mut scanner = ReplyScanner::new(config.max_reply_depth);
    loop {
        tokio::select! {
            _ = super::lane::wait_fenced(Some(fenced)) => {
                return ("is fenced after a failover".to_owned(), true);
            }
            read = stream.read_buf(&mut buf) => match read {
                Ok(0) => return ("closed the connection".to_owned(), true),
                Err(e) => return (format!("connection failed: {e}"), true),
                Ok(_) => {}
            },
        }
        loop {
            let len = match scanner.scan(&buf) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => return (format!("sent an invalid reply ({e})"), true),
            };
            let frame = buf.split_to(len).freeze();
            if let Some(what) = parse(&frame) {
                if tx.send((addr.clone(), what)).is_err() {
                    return ("the proxy stopped tracking".to_owned(), true);
                }
            }
        }
    }
}

/// The invalidation a push frame carries: `>2 invalidate [keys]` or `>2 invalidate null`;
/// `None` for anything else.
fn parse(frame: &Bytes) -> Option<Invalidation> {
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
        return Some(Invalidation::Flush);
    }
    let keys = reply::aggregate_elements(&value)?
        .into_iter()
        .filter_map(|range| {
            let element = value.slice(range);
            let (start, len) = bulk_payload(&element)?;
            Some(element.slice(start..start + len))
        })
        .collect();
    Some(Invalidation::Keys(keys))
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
            Some(Invalidation::Keys(vec![
                Bytes::from_static(b"a"),
                Bytes::from_static(b"b\rc")
            ]))
        );
        let flush = Bytes::from_static(b">2\r\n$10\r\ninvalidate\r\n_\r\n");
        assert_eq!(parse(&flush), Some(Invalidation::Flush));
        let other = Bytes::from_static(b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n");
        assert_eq!(parse(&other), None);
        assert_eq!(parse(&Bytes::from_static(b"+OK\r\n")), None);
    }
}
