//! Backend nodes and their lanes.
//!
//! Each Redis node gets a few **lanes**: long-lived connections that multiplex the requests of
//! every client, pipelined, with a FIFO of in-flight requests (see [`lane`]). The slot of a key
//! picks the lane (`slot % lanes`), so every command on one key flows through one ordered
//! connection, and the requests of many clients leave in one write.
//!
//! Nodes are shared by address in a [`NodePool`], so a new routing table (failover, resharding)
//! reuses the connections it already has.

mod connect;
pub mod lane;
pub mod stream;
pub mod subscriber;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use redshard_config::{BackendConfig, NodeAddr};
use tokio::sync::mpsc;

use crate::replies::ReplyTo;
use crate::resp::Protocol;

/// How lanes connect and when they give up; taken from `[backend]` and `[limits]`.
#[derive(Clone, Debug)]
pub struct LaneConfig {
    /// ACL user for `AUTH` on connect, if any.
    pub username: Option<String>,
    /// Password for `AUTH` on connect, if any.
    pub password: Option<String>,
    /// Connections per node.
    pub lanes: usize,
    /// Bound on TCP connect plus the TLS and AUTH handshakes.
    pub connect_timeout: Duration,
    /// Bound on the wait for the oldest in-flight reply before the connection is declared dead;
    /// `None` on private lanes, where a blocking command may legitimately wait forever.
    pub response_timeout: Option<Duration>,
    /// First wait before reconnecting after a failed connect.
    pub backoff_min: Duration,
    /// Longest wait between reconnect attempts.
    pub backoff_max: Duration,
    /// Nesting bound for replies (a safety limit against a broken backend).
    pub max_reply_depth: usize,
    /// Whether a failed connection is replaced (shared lanes) or ends the lane (private lanes).
    pub reconnect: bool,
    /// TLS for every connection (`[backend] tls`); `None` for plain TCP. Shared with the
    /// health probe, and reloaded in place, so new connections use the current certificates.
    pub tls: Option<Arc<crate::tls::BackendTls>>,
}

impl LaneConfig {
    /// Lane settings from the validated configuration, with its loaded backend `tls`.
    #[must_use]
    pub fn from_config(
        backend: &BackendConfig,
        max_reply_depth: usize,
        tls: Option<Arc<crate::tls::BackendTls>>,
    ) -> Self {
        Self {
            username: backend.username.clone(),
            password: backend.password.clone(),
            lanes: backend.lanes,
            connect_timeout: backend.connect_timeout,
            response_timeout: Some(backend.response_timeout),
            backoff_min: backend.reconnect_backoff_min,
            backoff_max: backend.reconnect_backoff_max,
            max_reply_depth,
            reconnect: true,
            tls,
        }
    }
}

/// One request for a lane: the bytes to send and where its reply goes.
#[derive(Debug)]
pub struct LaneRequest {
    /// A complete RESP request, usually the client's original bytes.
    pub bytes: Bytes,
    /// The reply's destination.
    pub reply: ReplyTo,
}

/// The sending side of one lane.
#[derive(Clone, Debug)]
pub struct LaneHandle {
    /// Requests in submission order; the lane task owns the receiver.
    tx: mpsc::UnboundedSender<LaneRequest>,
}

impl LaneHandle {
    /// Queues a request. If the lane task is gone (only while the proxy shuts down), the
    /// request is answered with an error at once so its client never hangs.
    pub fn send(&self, bytes: Bytes, reply: ReplyTo) {
        if let Err(mpsc::error::SendError(req)) = self.tx.send(LaneRequest { bytes, reply }) {
            req.reply
                .deliver(Bytes::from_static(b"-ERR backend lane closed\r\n"));
        }
    }
}

/// One Redis node and its lanes.
#[derive(Debug)]
pub struct Node {
    /// Where the node listens.
    addr: NodeAddr,
    /// RESP2 lanes; `lanes[slot % lanes.len()]` carries the slot's commands.
    lanes: Box<[LaneHandle]>,
    /// RESP3 lanes (connected with `HELLO 3`), started when the first RESP3 client needs one.
    lanes3: OnceLock<Box<[LaneHandle]>>,
    /// Settings for starting `lanes3` later.
    config: Arc<LaneConfig>,
}

/// A connection of one client's own, for what cannot share a lane: transactions (WATCH,
/// MULTI ... EXEC) and blocking commands. It is a lane with no response timeout whose task
/// is aborted, closing the connection, when the client's session drops it, so a client that
/// leaves while blocked frees its backend connection at once.
#[derive(Debug)]
pub struct PrivateLane {
    /// Where the connection goes.
    addr: NodeAddr,
    /// The protocol it speaks.
    protocol: Protocol,
    /// The sending side.
    handle: LaneHandle,
    /// The lane task, aborted on drop.
    task: tokio::task::JoinHandle<()>,
}

impl PrivateLane {
    /// Whether this lane goes to `addr` in `protocol`.
    #[must_use]
    pub fn serves(&self, addr: &NodeAddr, protocol: Protocol) -> bool {
        &self.addr == addr && self.protocol == protocol
    }

    /// The sending side.
    #[must_use]
    pub fn handle(&self) -> &LaneHandle {
        &self.handle
    }

    /// Whether the lane has ended (its connection failed); a new one is needed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.handle.tx.is_closed()
    }
}

impl Drop for PrivateLane {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts `config.lanes` lane tasks speaking `protocol` to `addr`.
fn spawn_lanes(addr: &NodeAddr, config: &Arc<LaneConfig>, protocol: Protocol) -> Box<[LaneHandle]> {
    (0..config.lanes.max(1))
        .map(|index| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(lane::run(
                addr.clone(),
                index,
                protocol,
                Arc::clone(config),
                rx,
            ));
            LaneHandle { tx }
        })
        .collect()
}

impl Node {
    /// Starts `config.lanes` RESP2 lane tasks for `addr` on the current tokio runtime.
    #[must_use]
    pub fn spawn(addr: NodeAddr, config: &Arc<LaneConfig>) -> Arc<Self> {
        let lanes = spawn_lanes(&addr, config, Protocol::Resp2);
        Arc::new(Self {
            addr,
            lanes,
            lanes3: OnceLock::new(),
            config: Arc::clone(config),
        })
    }

    /// The node's address.
    #[must_use]
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// The lane that carries `slot`'s commands for clients speaking `protocol`.
    #[must_use]
    pub fn lane(&self, slot: u16, protocol: Protocol) -> &LaneHandle {
        let lanes = match protocol {
            Protocol::Resp2 => &self.lanes,
            Protocol::Resp3 => self
                .lanes3
                .get_or_init(|| spawn_lanes(&self.addr, &self.config, Protocol::Resp3)),
        };
        &lanes[usize::from(slot) % lanes.len()]
    }

    /// A new private lane to this node for one client.
    #[must_use]
    pub fn private_lane(&self, protocol: Protocol) -> PrivateLane {
        let mut config = (*self.config).clone();
        config.response_timeout = None;
        config.reconnect = false;
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(lane::run(
            self.addr.clone(),
            0,
            protocol,
            Arc::new(config),
            rx,
        ));
        PrivateLane {
            addr: self.addr.clone(),
            protocol,
            handle: LaneHandle { tx },
            task,
        }
    }

    /// A new subscription connection to this node for a client whose queue is `sink`.
    #[must_use]
    pub fn subscriber(
        &self,
        protocol: Protocol,
        sink: Arc<crate::replies::ReplyQueue>,
    ) -> subscriber::Subscriber {
        subscriber::Subscriber::spawn(self.addr.clone(), protocol, Arc::clone(&self.config), sink)
    }

    /// How many lanes this node has.
    #[must_use]
    pub fn lane_count(&self) -> usize {
        self.lanes.len()
    }
}

/// Every node the proxy talks to, by address, so routing tables share connections.
#[derive(Debug)]
pub struct NodePool {
    /// Lane settings for new nodes.
    config: Arc<LaneConfig>,
    /// Nodes by address. A node dropped from every routing table stays here until
    /// [`NodePool::retain`] removes it.
    nodes: Mutex<HashMap<NodeAddr, Arc<Node>>>,
}

impl NodePool {
    /// An empty pool whose nodes use `config`.
    #[must_use]
    pub fn new(config: LaneConfig) -> Self {
        Self {
            config: Arc::new(config),
            nodes: Mutex::new(HashMap::new()),
        }
    }

    /// The node at `addr`, started on first use.
    #[must_use]
    pub fn node(&self, addr: &NodeAddr) -> Arc<Node> {
        let mut nodes = self
            .nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(
            nodes
                .entry(addr.clone())
                .or_insert_with(|| Node::spawn(addr.clone(), &self.config)),
        )
    }

    /// Forgets nodes not in `keep`; their lanes close once the last request using them is done.
    pub fn retain(&self, keep: &[&NodeAddr]) {
        let mut nodes = self
            .nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        nodes.retain(|addr, _| keep.contains(&addr));
    }
}
