//! A client's subscription connection to one node (SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE).
//!
//! Standalone Redis delivers a PUBLISH only to subscribers on the same node, so redshard
//! publishes a channel on the master of the channel's slot and subscribes there; patterns are
//! subscribed on every master. Each subscribed client has one such connection per node it
//! needs. The connection's task turns the node's confirmations into the completion of the
//! client's (un)subscribe requests, in order, and appends every message to the client's reply
//! queue. Dropping the [`Subscriber`] closes the connection: the client unsubscribed from
//! everything there, so requests still waiting for the node's confirmations are completed as
//! confirmed (their confirmation texts, written by the session, stand: Redis too answers
//! `SUBSCRIBE ch` then `UNSUBSCRIBE` with both confirmations).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use redshard_config::NodeAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::debug;

use super::connect::connect;
use super::LaneConfig;
use crate::replies::{ReplyQueue, ReplyTo};
use crate::resp::{reply, Protocol, ReplyScanner};

/// One (un)subscribe request for the node, and how many confirmations complete it.
#[derive(Debug)]
struct Pending {
    /// The request's bytes.
    bytes: Bytes,
    /// One confirmation per channel or pattern named.
    confirmations: usize,
    /// Completed (with an empty reply) once they all arrived.
    reply: ReplyTo,
}

/// A client's subscription connection to one node.
#[derive(Debug)]
pub struct Subscriber {
    /// Requests for the connection task; dropped, it tells the task to complete what waits
    /// and close the connection.
    tx: mpsc::UnboundedSender<Pending>,
}

impl Subscriber {
    /// Connects to `addr` in `protocol` for a client whose replies and messages go to `sink`.
    #[must_use]
    pub fn spawn(
        addr: NodeAddr,
        protocol: Protocol,
        config: Arc<LaneConfig>,
        sink: Arc<ReplyQueue>,
        fenced: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(addr, protocol, config, rx, sink, fenced));
        Self { tx }
    }

    /// Sends a (un)subscribe request naming `confirmations` channels or patterns; `reply` is
    /// completed once the node confirmed them all (or with an error if the connection fails).
    pub fn send(&self, bytes: Bytes, confirmations: usize, reply: ReplyTo) {
        if let Err(mpsc::error::SendError(p)) = self.tx.send(Pending {
            bytes,
            confirmations,
            reply,
        }) {
            p.reply.deliver(Bytes::from_static(
                b"-ERR subscription connection closed\r\n",
            ));
        }
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
    addr: NodeAddr,
    protocol: Protocol,
    config: Arc<LaneConfig>,
    mut rx: mpsc::UnboundedReceiver<Pending>,
    sink: Arc<ReplyQueue>,
    mut fenced: tokio::sync::watch::Receiver<bool>,
) {
    let fail =
        |rx: &mut mpsc::UnboundedReceiver<Pending>, pending: VecDeque<Pending>, why: String| {
            let reply = Bytes::from(format!("-ERR backend {addr} {why}\r\n").into_bytes());
            for p in pending {
                p.reply.deliver(reply.clone());
            }
            rx.close();
            while let Ok(p) = rx.try_recv() {
                p.reply.deliver(reply.clone());
            }
        };
    let mut stream = match connect(&addr, protocol, &config).await {
        Ok(stream) => stream,
        Err(e) => {
            fail(&mut rx, VecDeque::new(), e.to_string());
            sink.mark_broken();
            return;
        }
    };
    let (mut reader, mut writer) = stream.split();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    let mut buf = BytesMut::with_capacity(4096);
    let mut scanner = ReplyScanner::new(config.max_reply_depth);
    let why = loop {
        tokio::select! {
            // The node was failed over: its subscribers must resubscribe on the new master.
            _ = super::lane::wait_fenced(Some(&mut fenced)) => {
                break "is fenced after a failover".to_owned();
            }
            request = rx.recv() => {
                let Some(request) = request else {
                    // The client left these subscriptions: done, as confirmed.
                    for p in pending {
                        p.reply.deliver(Bytes::new());
                    }
                    return;
                };
                if let Err(e) = writer.write_all(&request.bytes).await {
                    pending.push_back(request);
                    break format!("connection failed: {e}");
                }
                pending.push_back(request);
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
                            fail(&mut rx, pending, format!("sent an invalid reply ({e})"));
                            sink.mark_broken();
                            return;
                        }
                    };
                    let frame = buf.split_to(len).freeze();
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
    fail(&mut rx, pending, why);
    // Messages on this node would be lost from now on: have the client reconnect.
    sink.mark_broken();
}
