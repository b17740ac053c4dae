//! A client's subscription connection to one node (SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE).
//!
//! Standalone Redis delivers a PUBLISH only to subscribers on the same node, so redshard
//! publishes a channel on the master of the channel's slot and subscribes there; patterns are
//! subscribed on every master. Each subscribed client has one such connection per node it
//! needs. The connection's task turns the node's confirmations into the completion of the
//! client's (un)subscribe requests, in order, and appends every message to the client's reply
//! queue. Dropping the [`Subscriber`] closes the connection at once: the client unsubscribed
//! from everything there, so requests still waiting for the node's confirmations are completed
//! as confirmed (their confirmation texts, written by the session, stand: Redis too answers
//! `SUBSCRIBE ch` then `UNSUBSCRIBE` with both confirmations), and no message is forwarded
//! after that.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::{Bytes, BytesMut};
use redshard_config::NodeAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::debug;

use super::connect::connect;
use super::LaneConfig;
use crate::replies::{ReplyQueue, ReplyTo};
use redshard_protocol::client_error::{ClientError, Reached};
use redshard_protocol::resp::{reply, Protocol, ReplyScanner};

/// One (un)subscribe request sent (or about to be), and how many confirmations complete it.
#[derive(Debug)]
struct Pending {
    /// When it was queued, for `[backend] response_timeout_ms`.
    sent: tokio::time::Instant,
    /// One confirmation per channel or pattern named.
    confirmations: usize,
    /// Completed (with an empty reply) once they all arrived.
    reply: ReplyTo,
}

/// What the session's [`Subscriber`] and its connection task share.
#[derive(Debug, Default)]
struct Shared {
    /// Requests waiting for confirmations, oldest first. Queued by [`Subscriber::send`] before
    /// the bytes go to the task, so that dropping the Subscriber finds every one of them, the
    /// ones the task has not written yet included.
    pending: Mutex<VecDeque<Pending>>,
    /// Set when the session dropped the Subscriber: nothing more reaches the client.
    left: AtomicBool,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, VecDeque<Pending>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A client's subscription connection to one node.
#[derive(Debug)]
pub struct Subscriber {
    /// Request bytes for the connection task.
    tx: mpsc::UnboundedSender<Bytes>,
    /// The requests waiting for the node, and whether the client left.
    shared: Arc<Shared>,
    /// The connection task, aborted on drop.
    task: tokio::task::JoinHandle<()>,
}

/// Where a subscription connection goes and how.
#[derive(Debug)]
pub struct Setup {
    /// The node.
    pub addr: NodeAddr,
    /// The client's protocol, which the connection speaks.
    pub protocol: Protocol,
    /// Timeouts, credentials.
    pub config: Arc<LaneConfig>,
    /// The node's fence: a fenced node's subscribers close.
    pub fenced: tokio::sync::watch::Receiver<bool>,
    /// A connection already open in `protocol` to use (see `ready.rs`); `None` connects.
    pub ready: Option<super::stream::BackendStream>,
}

impl Subscriber {
    /// Connects as `setup` says for a client whose replies and messages go to `sink`.
    #[must_use]
    pub fn spawn(setup: Setup, sink: Arc<ReplyQueue>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(run(setup, rx, Arc::clone(&shared), sink));
        Self { tx, shared, task }
    }

    /// Sends a (un)subscribe request naming `confirmations` channels or patterns; `reply` is
    /// completed once the node confirmed them all (or with an error if the connection fails).
    pub fn send(&self, bytes: Bytes, confirmations: usize, reply: ReplyTo) {
        let mut pending = self.shared.pending();
        if self.tx.send(bytes).is_err() {
            // The connection failed, and its task answered everything already queued.
            drop(pending);
            reply.deliver(ClientError::SubscriptionClosed.to_reply());
            return;
        }
        pending.push_back(Pending {
            sent: tokio::time::Instant::now(),
            confirmations,
            reply,
        });
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // Under the lock the task takes to forward anything: nothing is forwarded after this.
        let mut pending = self.shared.pending();
        self.shared.left.store(true, Ordering::Release);
        for p in pending.drain(..) {
            p.reply.deliver(Bytes::new());
        }
        drop(pending);
        self.task.abort();
    }
}

/// Whether `frame` (an array or push) is a message rather than a confirmation.
fn is_message(frame: &[u8]) -> bool {
    let Some(elements) = reply::aggregate_elements(frame) else {
        return false;
    };
    let Some(kind) = elements.first() else {
        return false;
    };
    let kind = &frame[kind.clone()];
    kind.starts_with(b"$7\r\nmessage\r\n")
        || kind.starts_with(b"$8\r\npmessage\r\n")
        || kind.starts_with(b"$8\r\nsmessage\r\n")
}

async fn run(
    setup: Setup,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    shared: Arc<Shared>,
    sink: Arc<ReplyQueue>,
) {
    let Setup {
        addr,
        protocol,
        config,
        mut fenced,
        ready,
    } = setup;
    // The connection is gone: what waits gets the error (unless the client left), no more
    // requests are taken, and the client is closed, since its messages would be lost.
    let fail = |rx: &mut mpsc::UnboundedReceiver<Bytes>, why: String| {
        rx.close();
        let mut pending = shared.pending();
        if shared.left.load(Ordering::Acquire) {
            return;
        }
        // Written or not, the client cannot tell: its connection is closed right after.
        let reply = ClientError::Backend {
            addr: addr.clone(),
            why,
            reached: Reached::Unknown,
        }
        .to_reply();
        for p in pending.drain(..) {
            p.reply.deliver(reply.clone());
        }
        sink.mark_broken();
    };
    let opened = match ready {
        Some(stream) => Ok(stream),
        None => connect(&addr, protocol, &config).await,
    };
    let mut stream = match opened {
        Ok(stream) => stream,
        Err(e) => {
            fail(&mut rx, e.to_string());
            return;
        }
    };
    let (mut reader, mut writer) = stream.split();
    let mut buf = BytesMut::with_capacity(4096);
    let mut scanner = ReplyScanner::new(config.max_reply_depth);
    // A node that stops confirming is as dead as one that stops answering a lane.
    let timeout = config.response_timeout;
    let why = loop {
        let oldest = shared.pending().front().map(|p| p.sent);
        let deadline = match (oldest, timeout) {
            (Some(sent), Some(timeout)) => Some(sent + timeout),
            _ => None,
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                let ms = timeout.unwrap_or_default().as_millis();
                break format!("timed out after {ms} ms");
            }
            // The node was failed over: its subscribers must resubscribe on the new master.
            _ = super::lane::wait_fenced(Some(&mut fenced)) => {
                break "is fenced after a failover".to_owned();
            }
            request = rx.recv() => {
                // Closed only by the Subscriber's drop, which also aborts this task.
                let Some(request) = request else { return };
                if let Err(e) = writer.write_all(&request).await {
                    break format!("connection failed: {e}");
                }
            }
            read = reader.read_buf(&mut buf) => {
                match read {
                    Ok(0) => break "closed the connection".to_owned(),
                    Err(e) => break format!("connection failed: {e}"),
                    Ok(_) => {}
                }
                loop {
                    let len = match scanner.scan(&buf) {
                        Ok(Some(len)) => len,
                        Ok(None) => break,
                        Err(e) => {
                            debug!(node = %addr, error = %e, "invalid reply on a subscription connection");
                            fail(&mut rx, format!("sent an invalid reply ({e})"));
                            return;
                        }
                    };
                    let frame = buf.split_to(len).freeze();
                    // Forwarded under the lock the Subscriber's drop takes to set `left`.
                    let mut pending = shared.pending();
                    if shared.left.load(Ordering::Acquire) {
                        return;
                    }
                    if is_message(&frame) {
                        sink.push_ready(frame);
                        continue;
                    }
                    // A confirmation (or an error) for the oldest request.
                    if let Some(front) = pending.front_mut() {
                        front.confirmations = front.confirmations.saturating_sub(1);
                        if front.confirmations == 0 || reply::is_error(&frame) {
                            if let Some(done) = pending.pop_front() {
                                let result = if reply::is_error(&frame) { frame } else { Bytes::new() };
                                done.reply.deliver(result);
                            }
                        }
                    }
                }
            }
        }
    };
    fail(&mut rx, why);
}
