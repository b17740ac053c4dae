//! The proxy's MONITOR connection to one master, for the commands scripts run there (see
//! `crate::monitor`).
//!
//! A Lua script or a function runs its `redis.call()`s on the node, where the proxy does not
//! see them; the node's own MONITOR does, and writes them as `+<time> [<db> lua] "GET" "k"`.
//! While some client monitors the proxy, this connection runs `MONITOR` on the master and
//! forwards those lines, and only those: the lines of the node's other clients (the proxy's
//! own lanes, whose commands the proxy shows itself with their client's address) are dropped.
//!
//! It connects with the configured backend credentials and TLS, without switching to the
//! proxy's managed ACL users (`[backend] manage_acl`), which may not run `MONITOR`. The task
//! reports when the node confirmed `MONITOR` and when it lost the connection; it reconnects
//! by itself (with the lanes' backoff) until it is aborted, and waits while its node is fenced.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use redshard_config::NodeAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::connect::connect;
use super::error::LaneError;
use super::LaneConfig;
use redshard_protocol::resp::{reply, Protocol, ReplyScanner};

/// What a master's MONITOR connection reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeMonitor {
    /// The node confirmed `MONITOR`: from now on its scripts' commands are forwarded.
    Ready,
    /// One line of a command a script or function ran, as the node wrote it (`+...\r\n`).
    Line(Bytes),
    /// The connection failed, could not be made, or the node is fenced: lines may be missed
    /// until the next [`NodeMonitor::Ready`].
    Lost(String),
}

/// The request.
const MONITOR: &[u8] = b"*1\r\n$7\r\nMONITOR\r\n";

/// Runs the MONITOR connection to `addr` until aborted, sending what it reports to `tx` with
/// the node's address. Ends when `tx` is closed. `config` is the node's lane settings without
/// managed ACL users.
pub(super) async fn run(
    addr: NodeAddr,
    config: Arc<LaneConfig>,
    mut fenced: watch::Receiver<bool>,
    tx: mpsc::UnboundedSender<(NodeAddr, NodeMonitor)>,
) {
    let mut backoff = config.backoff_min;
    loop {
        // A fenced node (a failed-over master) serves nothing: the routing table will soon
        // name its successor, whose own connection replaces this one. Said at once, so that
        // a MONITOR waiting for the masters' connections is not held by it.
        if *fenced.borrow() {
            let lost = NodeMonitor::Lost("is fenced after a failover".to_owned());
            if tx.send((addr.clone(), lost)).is_err() {
                return;
            }
        }
        if fenced.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let (why, was_ready) = serve(&addr, &config, &mut fenced, &tx).await;
        if tx.send((addr.clone(), NodeMonitor::Lost(why))).is_err() {
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

/// One connection's life: connect, `MONITOR`, forward the scripts' lines until it fails.
/// Returns why it ended and whether it had been ready.
async fn serve(
    addr: &NodeAddr,
    config: &LaneConfig,
    fenced: &mut watch::Receiver<bool>,
    tx: &mpsc::UnboundedSender<(NodeAddr, NodeMonitor)>,
) -> (String, bool) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut scanner = ReplyScanner::new(config.max_reply_depth);
    // The confirmation is read into `buf`, which keeps what follows it: lines may come in the
    // same read.
    let setup = async {
        let mut stream = connect(addr, Protocol::Resp2, config).await?;
        stream
            .write_all(MONITOR)
            .await
            .map_err(LaneError::Connect)?;
        loop {
            if let Some(len) = scanner.scan(&buf).map_err(LaneError::Protocol)? {
                return Ok::<_, LaneError>((stream, buf.split_to(len)));
            }
            if stream
                .read_buf(&mut buf)
                .await
                .map_err(LaneError::Connect)?
                == 0
            {
                return Err(LaneError::Connect(std::io::ErrorKind::UnexpectedEof.into()));
            }
        }
    };
    let (mut stream, answer) = match tokio::time::timeout(config.connect_timeout, setup).await {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => return (e.to_string(), false),
        Err(_) => return ("timed out starting MONITOR".to_owned(), false),
    };
    if !reply::is_ok(&answer) {
        return (
            format!(
                "refused MONITOR: {}",
                String::from_utf8_lossy(&answer).trim_end()
            ),
            false,
        );
    }
    if tx.send((addr.clone(), NodeMonitor::Ready)).is_err() {
        return ("nobody monitors".to_owned(), true);
    }
    loop {
        loop {
            let len = match scanner.scan(&buf) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => return (format!("sent an invalid reply ({e})"), true),
            };
            let frame = buf.split_to(len).freeze();
            if is_script_line(&frame) && tx.send((addr.clone(), NodeMonitor::Line(frame))).is_err()
            {
                return ("nobody monitors".to_owned(), true);
            }
        }
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
    }
}

/// Whether `frame` is a MONITOR line of a command a script or function ran: Redis writes
/// `+<seconds>.<micros> [<db> lua] ...` for those, and `[<db> <addr>]` (or `[<db> unix:...]`)
/// for a client's.
fn is_script_line(frame: &[u8]) -> bool {
    let Some(line) = frame.strip_prefix(b"+") else {
        return false;
    };
    let Some(space) = line.iter().position(|&b| b == b' ') else {
        return false;
    };
    let Some(client) = line[space + 1..].strip_prefix(b"[") else {
        return false;
    };
    let digits = client.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && client[digits..].starts_with(b" lua] ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_script_lines_are_kept() {
        assert!(is_script_line(
            b"+1700000000.123456 [0 lua] \"GET\" \"foo\"\r\n"
        ));
        assert!(is_script_line(
            b"+1700000000.123456 [12 lua] \"SET\" \"a\" \"b\"\r\n"
        ));
        assert!(!is_script_line(
            b"+1700000000.123456 [0 127.0.0.1:51234] \"GET\" \"lua] \"\r\n"
        ));
        assert!(!is_script_line(
            b"+1700000000.123456 [0 unix:/tmp/redis.sock] \"GET\" \"k\"\r\n"
        ));
        assert!(!is_script_line(b"+1700000000.123456 [ lua] \"GET\"\r\n"));
        assert!(!is_script_line(b"+OK\r\n"));
        assert!(!is_script_line(b"-ERR no\r\n"));
    }
}
