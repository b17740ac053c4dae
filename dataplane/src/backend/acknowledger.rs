//! A master's acknowledger: the one connection that asks its replicas for the lanes' writes
//! (group commit under Redis replication with `sync` acknowledgement, see [`super::lane`]).
//!
//! Redis blocks a client in `WAIT` and processes nothing more from it until the `WAIT`
//! answers, so a lane that sent its `WAIT` on its own connection would stall its next batch
//! for a `REPLCONF GETACK` round trip. Instead each master has one more connection, opened
//! at its first use, whose only job is `PUBLISH` on [`CHANNEL`] followed by `WAIT k
//! ack_timeout_ms`. A lane holds the replies of a batch of writes and, once it has received
//! the master's reply to the batch's last write, asks the acknowledger to cover them
//! ([`Acknowledger::cover`]).
//!
//! Why that `WAIT` covers them: Redis propagates a command to its replicas before it sends
//! the command's reply, and a `PUBLISH` outside Redis Cluster is propagated too, which sets
//! the publishing client's replication offset (the offset its `WAIT` waits for) to the
//! master's offset after the `PUBLISH` (Redis 7.0 `processCommand`, 7.2 `call`). Redis
//! runs commands one at a time, so a write whose reply a lane had received before the
//! acknowledger sent its `PUBLISH` ran before it: the `WAIT` counts the replicas that have it.
//!
//! One `WAIT` is out at a time per master: the covers asked for while it is out are answered
//! together by the next one, which waits for the most replicas any of them asked for. Each
//! cover gets the `WAIT`'s answer as it came (an integer, or an error); the lane judges it
//! against its own count. A `PUBLISH` that fails (an ACL without `PUBLISH`, a node that is a
//! replica now) or a connection that fails twice in a row answers the covers with an error,
//! which the lane treats as a shortfall: the controller then checks the replicas itself.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redshard_config::NodeAddr;
use redshard_protocol::resp::{encode, reply, Protocol, ReplyScanner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::connect::connect;
use super::error::LaneError;
use super::stream::BackendStream;
use super::LaneConfig;

/// The channel the acknowledger publishes on (an empty message): the proxy never shows it to
/// its subscribers (see `subscriber.rs`), so clients cannot use it either.
pub const CHANNEL: &str = "__redshard__:ack";

/// What a cover learns: the `WAIT`'s answer as the master gave it (an integer, or an error
/// reply), or why there is none.
pub(crate) type Answer = Result<Bytes, String>;

/// One lane's request: acknowledge every write whose reply it has received.
#[derive(Debug)]
pub(crate) struct Cover {
    /// The replicas it needs (the most any write of its batch asked for).
    wanted: u32,
    /// Where the `WAIT`'s answer goes.
    done: oneshot::Sender<Answer>,
}

/// The sending side of a master's acknowledger; the task ends once every handle is gone.
#[derive(Clone, Debug)]
pub struct Acknowledger {
    /// Covers in the order asked; the acknowledger task owns the receiver.
    tx: mpsc::UnboundedSender<Cover>,
}

impl Acknowledger {
    /// Starts the acknowledger of the master at `addr` (it connects at its first cover).
    #[must_use]
    pub(crate) fn spawn(addr: NodeAddr, config: std::sync::Arc<LaneConfig>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(addr, config, rx));
        Self { tx }
    }

    /// A handle whose covers go to the returned receiver, answered by hand (unit tests).
    #[cfg(test)]
    pub(crate) fn detached() -> (Self, mpsc::UnboundedReceiver<Cover>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    /// Asks for `wanted` replicas to acknowledge every write whose reply the caller has
    /// received; the receiver gets the `WAIT`'s answer (closed if the acknowledger is gone).
    pub(crate) fn cover(&self, wanted: u32) -> oneshot::Receiver<Answer> {
        let (done, answer) = oneshot::channel();
        let _ = self.tx.send(Cover { wanted, done });
        answer
    }
}

#[cfg(test)]
impl Cover {
    /// Answers the cover with `answer` (unit tests).
    pub(crate) fn answer(self, answer: &'static [u8]) -> u32 {
        let _ = self.done.send(Ok(Bytes::from_static(answer)));
        self.wanted
    }
}

/// The acknowledger task: one `PUBLISH` + `WAIT` at a time for every cover asked meanwhile.
async fn run(
    addr: NodeAddr,
    config: std::sync::Arc<LaneConfig>,
    mut rx: mpsc::UnboundedReceiver<Cover>,
) {
    let mut conn: Option<BackendStream> = None;
    let mut covers = Vec::new();
    let mut publish = BytesMut::new();
    encode::request(&mut publish, &[b"PUBLISH", CHANNEL.as_bytes(), b""]);
    let publish = publish.freeze();
    let mut warned = false;
    while rx.recv_many(&mut covers, usize::MAX).await > 0 {
        // A lane that failed meanwhile no longer waits.
        covers.retain(|c: &Cover| !c.done.is_closed());
        let Some(wanted) = covers.iter().map(|c| c.wanted).max() else {
            continue;
        };
        let answer = match ask(&mut conn, &addr, &config, &publish, wanted).await {
            Ok(answer) => Ok(answer),
            Err(error) => {
                if let Some(text) = error.strip_prefix("PUBLISH ") {
                    if !std::mem::replace(&mut warned, true) {
                        warn!(node = %addr, refused = %text, "the master refused the acknowledger's PUBLISH on {CHANNEL}: every batch of writes is checked by the controller instead; allow the backend user PUBLISH on that channel");
                    }
                } else {
                    debug!(node = %addr, %error, "the acknowledger could not ask the replicas");
                }
                Err(format!("the acknowledger got no answer: {error}"))
            }
        };
        for cover in covers.drain(..) {
            let _ = cover.done.send(answer.clone());
        }
    }
}

/// `PUBLISH` + `WAIT wanted` on the acknowledger's connection (opened if there is none);
/// an established connection that fails gets one fresh try (the new connection's `PUBLISH`
/// covers the same writes). Returns the `WAIT`'s answer, or why there is none (`PUBLISH
/// ...` when the master refused the `PUBLISH`).
async fn ask(
    conn: &mut Option<BackendStream>,
    addr: &NodeAddr,
    config: &LaneConfig,
    publish: &Bytes,
    wanted: u32,
) -> Result<Bytes, String> {
    let wait = super::lane::wait_request(wanted, config.ack_timeout);
    // The WAIT may take its whole timeout; the node then has the response timeout to answer.
    let limit = config.ack_timeout + config.response_timeout.unwrap_or(Duration::from_secs(5));
    loop {
        let fresh = conn.is_none();
        let stream = match conn {
            Some(stream) => stream,
            None => conn.insert(
                connect(addr, Protocol::Resp2, config)
                    .await
                    .map_err(|e| e.to_string())?,
            ),
        };
        let exchanged = tokio::time::timeout(
            limit,
            exchange(stream, publish, &wait, config.max_reply_depth),
        )
        .await
        .unwrap_or(Err(LaneError::Timeout(limit)));
        match exchanged {
            Ok((published, answer)) => {
                if reply::is_error(&published) {
                    let text = String::from_utf8_lossy(&published).trim_end().to_owned();
                    return Err(format!("PUBLISH {text}"));
                }
                return Ok(answer);
            }
            Err(error) => {
                *conn = None;
                if fresh {
                    return Err(error.to_string());
                }
            }
        }
    }
}

/// Writes `PUBLISH` and `WAIT` in one write and reads both replies.
async fn exchange(
    stream: &mut BackendStream,
    publish: &Bytes,
    wait: &Bytes,
    max_depth: usize,
) -> Result<(Bytes, Bytes), LaneError> {
    let mut out = BytesMut::with_capacity(publish.len() + wait.len());
    out.extend_from_slice(publish);
    out.extend_from_slice(wait);
    stream.write_all(&out).await.map_err(LaneError::Io)?;
    let mut buf = BytesMut::with_capacity(64);
    let mut scanner = ReplyScanner::new(max_depth);
    let mut replies = Vec::with_capacity(2);
    while replies.len() < 2 {
        match scanner.scan(&buf).map_err(LaneError::Protocol)? {
            Some(len) => replies.push(buf.split_to(len).freeze()),
            None => {
                if stream.read_buf(&mut buf).await.map_err(LaneError::Io)? == 0 {
                    return Err(LaneError::Closed);
                }
            }
        }
    }
    let answer = replies.pop().unwrap_or_default();
    let published = replies.pop().unwrap_or_default();
    Ok((published, answer))
}
