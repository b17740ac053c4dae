//! The one channel from the data plane to the controller.
//!
//! Backend lanes and the mirror report what they see (a lost connection, a restarted node, a
//! replica that failed a write) as a [`ControlEvent`]; the controller (see `redshard_control`) is
//! the only receiver and decides what to do. This module sits below both, so the data plane
//! names the controller's inbox without importing the controller.

use redshard_config::{NodeAddr, ShardId};
use tokio::sync::mpsc;

/// The sending end: cloned into every lane pool and mirror that reports.
pub(crate) type EventSender = mpsc::UnboundedSender<ControlEvent>;

/// The receiving end, taken once by the controller task.
pub type EventReceiver = mpsc::UnboundedReceiver<ControlEvent>;

/// A new data plane → controller channel (one per proxy).
#[must_use]
pub fn channel() -> (EventSender, EventReceiver) {
    mpsc::unbounded_channel()
}

/// Which nodes a command the controller sends for a client runs on
/// ([`ControlEvent::EveryNode`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nodes {
    /// Every node of the topology, masters and replicas: server settings and statistics.
    All,
    /// Every shard's master: persistence (the masters hold the data set; a replica that
    /// restarts is resynchronised from its master, so its own files are never the data).
    Masters,
}

/// Which kind of running script a client asks to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptKill {
    /// `SCRIPT KILL`: a script run by `EVAL`/`EVALSHA`.
    Script,
    /// `FUNCTION KILL`: a function run by `FCALL`.
    Function,
}

impl ScriptKill {
    /// The command as sent to a node.
    #[must_use]
    pub fn request(self) -> [&'static [u8]; 2] {
        match self {
            Self::Script => [b"SCRIPT", b"KILL"],
            Self::Function => [b"FUNCTION", b"KILL"],
        }
    }
}

/// The controller's answer to a shortfall of the replicas' acknowledgement
/// ([`ControlEvent::AckShortfall`], or a replica failing a mirrored write under proxy
/// mirroring): whether the writes whose replies wait for it may be acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckVerdict {
    /// Every in-sync replica has the writes, or each one that may lack them is recorded stale
    /// where the topology is kept (so no restart or failover trusts it): the replies go to
    /// their clients as the master gave them.
    Release,
    /// Nothing verified that the in-sync replicas have the writes, or one that may lack them
    /// could not be recorded stale (the topology's storage or etcd failed): a failover could
    /// lose them. Each write's client gets `-NOREPLICAS` (the write's outcome is unknown, as
    /// after a timeout); the other replies held with them go as they are.
    Refuse,
}

/// What the data path tells the controller.
#[derive(Debug)]
pub enum ControlEvent {
    /// A replica failed a mirrored write: it must be recorded stale and resynchronised.
    ReplicaFailed {
        /// Its shard.
        shard: ShardId,
        /// The replica.
        addr: NodeAddr,
        /// Why, for the log.
        reason: String,
    },
    /// A lane's connection to a node failed or could not be made: probe it now.
    ConnectionLost {
        /// The node.
        addr: NodeAddr,
    },
    /// A lane found a node running another process than before (its `run_id` changed): it
    /// restarted and lost what it held in memory. Its lanes serve nothing until the
    /// controller accepts the new process (see [`crate::backend::Incarnation`]).
    NodeRestarted {
        /// The node.
        addr: NodeAddr,
        /// Its new `run_id`.
        run_id: String,
    },
    /// A master connection failed with mirrored writes in flight: whether the master applied
    /// them is unknown.
    MasterWriteLost {
        /// The shard.
        shard: ShardId,
        /// Its master at the time.
        master: NodeAddr,
    },
    /// Under Redis replication with `sync` acknowledgement, a lane's `WAIT` after a batch of
    /// writes counted fewer replicas than the shard's in-sync ones (or failed): some in-sync
    /// replica may lack writes whose replies the lane holds. The controller makes every
    /// in-sync replica that is behind the master (or not attached to it) stale, persisted,
    /// then answers on `done` whether the lane may release those replies (see [`AckVerdict`]).
    AckShortfall {
        /// The master the lane writes to.
        master: NodeAddr,
        /// The replicas the `WAIT` asked for.
        wanted: u32,
        /// What it answered (a count, or an error), for the log.
        answer: String,
        /// The verdict, once the replicas that are behind are recorded stale (or could not
        /// be). Dropped unanswered, it counts as [`AckVerdict::Refuse`].
        done: tokio::sync::oneshot::Sender<AckVerdict>,
    },
    /// A client's `SCRIPT KILL` or `FUNCTION KILL`. The master connections the data path
    /// shares queue behind a running script, so the controller sends it to every master on
    /// a control connection of its own and answers with the client's reply.
    KillScript {
        /// Which command.
        which: ScriptKill,
        /// The reply for the client (dropped when the proxy stops first).
        done: tokio::sync::oneshot::Sender<bytes::Bytes>,
    },
    /// A client's `CONFIG SET` (already checked against what the proxy manages),
    /// `CONFIG RESETSTAT`, `CONFIG REWRITE` or `LATENCY RESET` (to every node, masters and
    /// replicas), or `SAVE` / `BGSAVE` / `BGREWRITEAOF` (to every master): the controller sends it on
    /// control connections, and answers with the client's reply (see `redshard_control`'s
    /// `every_node`).
    EveryNode {
        /// The command's arguments as the client sent them.
        request: Vec<bytes::Bytes>,
        /// Which nodes run it.
        nodes: Nodes,
        /// The reply for the client (dropped when the proxy stops first).
        done: tokio::sync::oneshot::Sender<bytes::Bytes>,
    },
    /// The proxy's users changed (ACL SETUSER / DELUSER, CONFIG SET requirepass): the
    /// controller saves them with the topology (see [`crate::users`]) and answers `+OK`, or
    /// why they could not be saved.
    SaveUsers {
        /// The reply for the client (dropped when the proxy stops first).
        done: tokio::sync::oneshot::Sender<bytes::Bytes>,
    },
}
