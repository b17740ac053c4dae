//! One lane: a long-lived, pipelined connection to a node that many clients share.
//!
//! The lane task owns the connection. Its writer takes every queued request at once, records
//! each one's reply destination in the in-flight FIFO, and sends them in one vectored write.
//! Its reader cuts the reply stream at reply boundaries (no decoding) and hands each reply, as
//! bytes, to the oldest in-flight request. A timer fails the connection when the oldest
//! request has waited longer than the response timeout.
//!
//! When the connection fails, every in-flight request gets an error reply (its outcome is
//! unknown), and the lane reconnects at once. When a connect fails, queued and newly arriving
//! requests are answered with an error until the backoff has passed, so no client waits on a
//! dead node. The lane ends when every sender is gone and nothing is in flight.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redshard_config::NodeAddr;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::stream::BackendStream;
use super::{connect::connect, LaneConfig, LaneRequest};
use crate::metrics;
use crate::outbuf::OutBuf;
use crate::replies::ReplyTo;
use crate::resp::{Protocol, ProtocolError, ReplyScanner};

/// Requests taken from the queue per write.
const BATCH: usize = 512;
/// Spare room kept in the read buffer before each read.
const READ_RESERVE: usize = 16 * 1024;

/// Why a lane connection failed. Its display follows `backend ADDR ` in the client's error.
#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    /// TCP connect or the handshake's I/O failed.
    #[error("unavailable: {0}")]
    Connect(#[source] std::io::Error),
    /// Connect plus handshake took too long.
    #[error("unavailable: connect timed out after {} ms", .0.as_millis())]
    ConnectTimeout(Duration),
    /// The node refused our credentials.
    #[error("refused the proxy's credentials: {0}")]
    Auth(String),
    /// The node refused `HELLO 3` (Redis before 6 has no RESP3).
    #[error("does not speak RESP3: {0}")]
    NoResp3(String),
    /// Reading or writing an established connection failed.
    #[error("connection failed: {0}")]
    Io(#[source] std::io::Error),
    /// The node closed the connection.
    #[error("closed the connection")]
    Closed,
    /// The oldest request waited longer than the response timeout.
    #[error("timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    /// The node sent bytes that are not RESP.
    #[error("sent an invalid reply ({0})")]
    Protocol(ProtocolError),
    /// The node sent a reply nobody asked for.
    #[error("sent a reply with no request in flight")]
    Unsolicited,
}

impl LaneError {
    /// The `kind` label of `backend_errors_total` for this failure.
    #[must_use]
    pub fn metric_kind(&self) -> &'static str {
        use crate::metrics::names::error_kind;
        match self {
            Self::Connect(_) | Self::ConnectTimeout(_) | Self::NoResp3(_) => error_kind::CONNECT,
            Self::Auth(_) => error_kind::AUTH,
            Self::Io(_) | Self::Closed => error_kind::CLOSED,
            Self::Timeout(_) => error_kind::TIMEOUT,
            Self::Protocol(_) | Self::Unsolicited => error_kind::PROTOCOL,
        }
    }
}

/// A request written to the node and not yet answered.
#[derive(Debug)]
struct InFlight {
    /// Where its reply goes.
    reply: ReplyTo,
    /// When it was written, for the response timeout.
    sent: Instant,
}

/// How a served connection ended.
enum Ended {
    /// Every sender is gone and nothing is in flight: the lane is no longer used.
    Unused,
    /// The connection failed; reconnect.
    Failed(LaneError),
}

/// The lane task: connect, serve, reconnect, until the lane is no longer used.
pub async fn run(
    addr: NodeAddr,
    index: usize,
    protocol: Protocol,
    config: Arc<LaneConfig>,
    mut rx: mpsc::UnboundedReceiver<LaneRequest>,
) {
    let mut backoff = config.backoff_min;
    loop {
        match connect(&addr, protocol, &config).await {
            Ok(stream) => {
                debug!(node = %addr, lane = index, "lane connected");
                backoff = config.backoff_min;
                metrics::backend_connected(&addr);
                let ended = serve(stream, &mut rx, &addr, &config).await;
                metrics::backend_disconnected(&addr);
                if let Ended::Failed(error) = &ended {
                    metrics::backend_error(&addr, error.metric_kind());
                }
                match ended {
                    Ended::Unused => return,
                    Ended::Failed(error) if !config.reconnect => {
                        // A private lane's connection state (WATCH) must not be silently
                        // replaced: what is queued fails, and the owner opens a new lane.
                        debug!(node = %addr, %error, "private lane connection lost");
                        return close_and_fail(&mut rx, &error_reply(&addr, &error));
                    }
                    Ended::Failed(error) => {
                        warn!(node = %addr, lane = index, %error, "lane connection lost");
                    }
                }
            }
            Err(error) if !config.reconnect => {
                metrics::backend_error(&addr, error.metric_kind());
                return close_and_fail(&mut rx, &error_reply(&addr, &error));
            }
            Err(error) => {
                metrics::backend_error(&addr, error.metric_kind());
                warn!(node = %addr, lane = index, %error, retry_ms = backoff.as_millis() as u64, "lane cannot connect");
                let reply = error_reply(&addr, &error);
                if !refuse_until(&mut rx, Instant::now() + backoff, &reply).await {
                    return;
                }
                backoff = (backoff * 2).min(config.backoff_max);
            }
        }
    }
}

/// Ends a lane: no more requests are accepted, and every queued one is answered with `reply`.
fn close_and_fail(rx: &mut mpsc::UnboundedReceiver<LaneRequest>, reply: &Bytes) {
    rx.close();
    while let Ok(request) = rx.try_recv() {
        request.reply.deliver(reply.clone());
    }
}

/// The error reply a client gets for a request this lane could not complete.
fn error_reply(addr: &NodeAddr, error: &LaneError) -> Bytes {
    let mut text = String::with_capacity(64);
    let _ = write!(text, "-ERR backend {addr} {error}");
    // A reply line must not contain CR or LF.
    let mut line: String = text
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    line.push_str("\r\n");
    Bytes::from(line)
}

/// Answers every request that arrives before `deadline` with `reply`. Returns `false` when
/// every sender is gone (the lane is no longer used).
async fn refuse_until(
    rx: &mut mpsc::UnboundedReceiver<LaneRequest>,
    deadline: Instant,
    reply: &Bytes,
) -> bool {
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            () = &mut sleep => return true,
            request = rx.recv() => match request {
                Some(request) => request.reply.deliver(reply.clone()),
                None => return false,
            },
        }
    }
}

/// Serves one established connection until it fails or the lane is no longer used.
///
/// One loop owns everything: the in-flight FIFO is plain local state, and each `select!`
/// branch borrows only its own half (queue, socket writer, socket reader, timer).
async fn serve(
    mut stream: BackendStream,
    rx: &mut mpsc::UnboundedReceiver<LaneRequest>,
    addr: &NodeAddr,
    config: &LaneConfig,
) -> Ended {
    let (mut reader, mut writer) = stream.split();
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut batch = Vec::with_capacity(BATCH);
    let mut out = OutBuf::new();
    let mut buf = BytesMut::with_capacity(READ_RESERVE);
    let mut scanner = ReplyScanner::new(config.max_reply_depth);
    // Armed for the oldest in-flight request; when it fires early (that request was answered)
    // it is re-armed for the new oldest one. Sent times only grow along the FIFO.
    // Without a response timeout (private lanes) the timer is never armed.
    let timeout = config.response_timeout;
    let timer = tokio::time::sleep(timeout.unwrap_or(Duration::from_secs(3600)));
    tokio::pin!(timer);
    let mut open = true;

    let result: Result<(), LaneError> = loop {
        if !open && in_flight.is_empty() && out.is_empty() {
            break Ok(());
        }
        if buf.capacity() - buf.len() < READ_RESERVE / 4 {
            buf.reserve(READ_RESERVE);
        }
        tokio::select! {
            received = rx.recv_many(&mut batch, BATCH), if open => {
                if received == 0 {
                    // Every sender is gone: finish what is in flight, then end.
                    open = false;
                    continue;
                }
                let now = Instant::now();
                if let (true, Some(timeout)) = (in_flight.is_empty(), timeout) {
                    timer.as_mut().reset(now + timeout);
                }
                for request in batch.drain(..) {
                    out.push(request.bytes);
                    in_flight.push_back(InFlight { reply: request.reply, sent: now });
                }
            }
            written = out.write_some(&mut writer), if !out.is_empty() => {
                if let Err(e) = written {
                    break Err(LaneError::Io(e));
                }
            }
            read = reader.read_buf(&mut buf) => {
                match read {
                    Ok(0) => break Err(LaneError::Closed),
                    Err(e) => break Err(LaneError::Io(e)),
                    Ok(_) => {}
                }
                if let Err(e) = deliver_replies(&mut buf, &mut scanner, &mut in_flight) {
                    break Err(e);
                }
            }
            () = &mut timer, if timeout.is_some() && !in_flight.is_empty() => {
                let timeout = timeout.unwrap_or_default();
                let oldest = in_flight.front().map_or_else(Instant::now, |r| r.sent);
                if oldest.elapsed() >= timeout {
                    break Err(LaneError::Timeout(timeout));
                }
                timer.as_mut().reset(oldest + timeout);
            }
        }
    };
    match result {
        Ok(()) => Ended::Unused,
        Err(error) => {
            let reply = error_reply(addr, &error);
            for request in in_flight {
                request.reply.deliver(reply.clone());
            }
            Ended::Failed(error)
        }
    }
}

/// Cuts every complete reply off the front of `buf` and hands it to the oldest request.
fn deliver_replies(
    buf: &mut BytesMut,
    scanner: &mut ReplyScanner,
    in_flight: &mut VecDeque<InFlight>,
) -> Result<(), LaneError> {
    while let Some(len) = scanner.scan(buf).map_err(LaneError::Protocol)? {
        let reply = buf.split_to(len).freeze();
        let Some(request) = in_flight.pop_front() else {
            return Err(LaneError::Unsolicited);
        };
        request.reply.deliver(reply);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_replies_are_one_line() {
        let addr: NodeAddr = "127.0.0.1:6390".parse().unwrap();
        let reply = error_reply(&addr, &LaneError::Auth("WRONGPASS bad\r\nx".into()));
        assert_eq!(
            &reply[..],
            b"-ERR backend 127.0.0.1:6390 refused the proxy's credentials: WRONGPASS bad  x\r\n"
        );
    }
}
