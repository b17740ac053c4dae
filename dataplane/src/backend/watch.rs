//! One long-lived connection per master, for a feature that needs every master's view while
//! some client uses it: client-side caching (`CLIENT TRACKING ON BCAST`, see
//! [`super::invalidations`]) and MONITOR's relay of scripts' commands (`MONITOR`, see
//! [`super::node_monitor`]).
//!
//! Two generic pieces, each feature giving only what is its own:
//!
//! - `run`, one master's connection: connect, send the feature's request
//!   ([`Watched::REQUEST`]), and once the node confirmed it (`+OK`), turn each frame the node
//!   sends into the feature's message ([`Watched::message`]) until the connection fails. It
//!   reports ([`Report`]) when it is ready, its messages, and when it lost the connection;
//!   it reconnects by itself (with the lanes' backoff) until it is aborted, and waits while
//!   its node is fenced;
//! - [`Watchers`], the set of those connections while the feature is in use: one per master of
//!   the routing table, followed as masters are added, promoted and removed
//!   ([`Watchers::follow`]); a task that hands the connections' reports and the routing table's
//!   changes to the feature; and the clients' `+OK`s held until no connection is still
//!   starting ([`Watchers::settle`]). Dropping it closes the connections and answers the `+OK`s
//!   still held (their clients may be waiting for them: one that turned the feature off at
//!   once).

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use redshard_config::NodeAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::debug;

use super::connect::connect;
use super::error::LaneError;
use super::{LaneConfig, Node};
use crate::replies::ReplyTo;
use redshard_protocol::resp::{encode, reply, Protocol, ReplyScanner};

/// What a master's connection reports, with the node's address: the feature's messages
/// between its ups and downs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report<M> {
    /// The node confirmed the request: from now on its messages come.
    Ready,
    /// What one frame of the node says.
    Message(M),
    /// The connection failed, could not be made, or its node is fenced: messages may be
    /// missed until the next [`Report::Ready`].
    Lost(String),
}

/// What one feature's per-master connection is: its request and how it reads the node.
/// Implemented by the feature's message type.
pub trait Watched: Sized + Send + 'static {
    /// The command the connection runs, in its reasons (`refused MONITOR: ...`).
    const COMMAND: &'static str;
    /// The request sent once connected; the node answers it `+OK`.
    const REQUEST: &'static [u8];
    /// The protocol the connection speaks.
    const PROTOCOL: Protocol;
    /// Whether a fenced node is reported lost at once, before waiting for the fence to lift,
    /// so that replies held for the connections are not held by it.
    const LOST_WHILE_FENCED: bool;
    /// What `frame`, one the node sent once ready, says, if anything the feature wants.
    fn message(frame: Bytes) -> Option<Self>;
}

/// Runs the connection of messages `M` to `addr` until aborted, sending what it reports to
/// `tx` with the node's address. Ends when `tx` is closed.
pub(super) async fn run<M: Watched>(
    addr: NodeAddr,
    config: Arc<LaneConfig>,
    mut fenced: watch::Receiver<bool>,
    tx: mpsc::UnboundedSender<(NodeAddr, Report<M>)>,
) {
    let mut backoff = config.backoff_min;
    loop {
        // A fenced node (a failed-over master) serves nothing: the routing table will soon
        // name its successor, whose own connection replaces this one.
        if M::LOST_WHILE_FENCED && *fenced.borrow() {
            let lost = Report::Lost("is fenced after a failover".to_owned());
            if tx.send((addr.clone(), lost)).is_err() {
                return;
            }
        }
        if fenced.wait_for(|f| !*f).await.is_err() {
            return;
        }
        let (why, was_ready) = serve(&addr, &config, &mut fenced, &tx).await;
        if tx.send((addr.clone(), Report::Lost(why))).is_err() {
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

/// Why a connection ends when nobody takes its reports any more (never seen: nobody reads it).
const UNWANTED: &str = "nobody needs the connection";

/// One connection's life: connect, send the request, forward the reports until it fails.
/// Returns why it ended and whether it had been ready.
async fn serve<M: Watched>(
    addr: &NodeAddr,
    config: &LaneConfig,
    fenced: &mut watch::Receiver<bool>,
    tx: &mpsc::UnboundedSender<(NodeAddr, Report<M>)>,
) -> (String, bool) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut scanner = ReplyScanner::new(config.max_reply_depth);
    // The confirmation is read into `buf`, which keeps what follows it: frames may come in
    // the same read.
    let setup = async {
        let mut stream = connect(addr, M::PROTOCOL, config).await?;
        stream
            .write_all(M::REQUEST)
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
        Err(_) => return (format!("timed out starting {}", M::COMMAND), false),
    };
    if !reply::is_ok(&answer) {
        return (
            format!(
                "refused {}: {}",
                M::COMMAND,
                String::from_utf8_lossy(&answer).trim_end()
            ),
            false,
        );
    }
    if tx.send((addr.clone(), Report::Ready)).is_err() {
        return (UNWANTED.to_owned(), true);
    }
    loop {
        loop {
            let len = match scanner.scan(&buf) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => return (format!("sent an invalid reply ({e})"), true),
            };
            let frame = buf.split_to(len).freeze();
            if let Some(message) = M::message(frame) {
                if tx.send((addr.clone(), Report::Message(message))).is_err() {
                    return (UNWANTED.to_owned(), true);
                }
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

/// Where one master's connection is, as its [`Watchers`] know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Started; the node has not confirmed the request yet.
    Starting,
    /// The node confirmed it: its reports come.
    Ready,
    /// The connection failed (or the node is fenced); it retries by itself.
    Failed,
}

/// What the [`Watchers`]' task hands to its feature.
#[derive(Debug)]
pub enum Event<M> {
    /// A master's connection reports this.
    Report(NodeAddr, Report<M>),
    /// A new routing table was installed: the feature calls [`Watchers::follow`].
    Topology,
}

/// The starter of a master's connection of messages `M`: a [`Node`] method, such as
/// [`Node::track_invalidations`].
pub type Start<M> = fn(&Node, mpsc::UnboundedSender<(NodeAddr, Report<M>)>) -> JoinHandle<()>;

/// One feature's per-master connections while it is in use (see the module docs).
#[derive(Debug)]
pub struct Watchers<M> {
    /// What the logs call the feature.
    feature: &'static str,
    /// Starts a master's connection.
    start: Start<M>,
    /// Hands the connections' reports and the routing table's changes to the feature.
    task: JoinHandle<()>,
    /// Where the connections report (cloned into each new one).
    tx: mpsc::UnboundedSender<(NodeAddr, Report<M>)>,
    /// One per master of the routing table last followed.
    nodes: HashMap<NodeAddr, Connection>,
    /// The `+OK`s held until no connection is still starting, with their clients' ids.
    waiting: Vec<(u64, ReplyTo)>,
}

/// One master's connection.
#[derive(Debug)]
struct Connection {
    /// Its task (aborted, closing the connection, when the node stops being a master or the
    /// feature is no longer in use).
    task: JoinHandle<()>,
    /// Where it is.
    state: State,
}

impl<M: Watched> Watchers<M> {
    /// Opens the set, with no connection yet ([`Watchers::follow`] starts them), for
    /// `feature` (its name in the logs). Each connection's report, and each change of
    /// `installs` (the routing table's), is handed to `handle` (on a task), until it returns
    /// `false` or the set is dropped.
    pub fn open(
        feature: &'static str,
        start: Start<M>,
        mut installs: watch::Receiver<u64>,
        mut handle: impl FnMut(Event<M>) -> bool + Send + 'static,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    report = rx.recv() => match report {
                        Some((addr, what)) => Event::Report(addr, what),
                        None => return,
                    },
                    changed = installs.changed() => match changed {
                        Ok(()) => Event::Topology,
                        Err(_) => return,
                    },
                };
                if !handle(event) {
                    return;
                }
            }
        });
        Self {
            feature,
            start,
            task,
            tx,
            nodes: HashMap::new(),
            waiting: Vec::new(),
        }
    }

    /// Starts a connection to each of `masters` that has none, and closes those of nodes not
    /// among them. Returns whether one was closed.
    pub fn follow(&mut self, masters: impl IntoIterator<Item = Arc<Node>>) -> bool {
        let masters: Vec<Arc<Node>> = masters.into_iter().collect();
        let before = self.nodes.len();
        let feature = self.feature;
        self.nodes.retain(|addr, node| {
            let keep = masters.iter().any(|m| m.addr() == addr);
            if !keep {
                debug!(node = %addr, feature, "no longer a master: its connection closed");
                node.task.abort();
            }
            keep
        });
        let dropped = before != self.nodes.len();
        for master in &masters {
            if !self.nodes.contains_key(master.addr()) {
                debug!(node = %master.addr(), feature, "a master's connection started");
                let task = (self.start)(master, self.tx.clone());
                self.nodes.insert(
                    master.addr().clone(),
                    Connection {
                        task,
                        state: State::Starting,
                    },
                );
            }
        }
        dropped
    }

    /// Moves `addr`'s connection where `what`, its report, says. Returns where it was; `None`
    /// for a node no longer followed (a master of an older routing table, whose connection is
    /// being aborted), whose reports are not the feature's any more.
    pub fn note(&mut self, addr: &NodeAddr, what: &Report<M>) -> Option<State> {
        let node = self.nodes.get_mut(addr)?;
        let was = node.state;
        match what {
            Report::Ready => node.state = State::Ready,
            Report::Lost(_) => node.state = State::Failed,
            Report::Message(_) => {}
        }
        Some(was)
    }

    /// Whether `addr`'s connection is followed and ready (the node confirmed the request and
    /// the connection has not failed since).
    #[must_use]
    pub fn is_ready(&self, addr: &NodeAddr) -> bool {
        self.nodes
            .get(addr)
            .is_some_and(|node| node.state == State::Ready)
    }

    /// Holds client `id`'s `ok` until [`Watchers::settle`] answers it.
    pub fn hold(&mut self, id: u64, ok: ReplyTo) {
        self.waiting.push((id, ok));
    }

    /// Once no connection is still starting, answers the held `+OK`s, each after
    /// `answered(id)` of its client.
    pub fn settle(&mut self, mut answered: impl FnMut(u64)) {
        if self
            .nodes
            .values()
            .any(|node| node.state == State::Starting)
        {
            return;
        }
        for (id, ok) in self.waiting.drain(..) {
            answered(id);
            ok.deliver(Bytes::from_static(encode::OK));
        }
    }
}

impl<M> Drop for Watchers<M> {
    fn drop(&mut self) {
        self.task.abort();
        for node in self.nodes.values() {
            node.task.abort();
        }
        // Their sessions may still wait for them (a client that turned the feature off at
        // once).
        for (_, ok) in self.waiting.drain(..) {
            ok.deliver(Bytes::from_static(encode::OK));
        }
    }
}
