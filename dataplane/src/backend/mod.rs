//! Backend nodes and their lanes.
//!
//! Each Redis node gets a few **lanes**: long-lived connections that multiplex the requests of
//! every client, pipelined, with a FIFO of in-flight requests (see [`lane`]). The slot of a key
//! picks the lane (`slot % lanes`), so every command on one key flows through one ordered
//! connection, and the requests of many clients leave in one write.
//!
//! Nodes are shared by address in a [`NodePool`], so a new routing table (failover, resharding)
//! reuses the connections it already has.

pub mod acl;
mod connect;
mod error;
pub mod invalidations;
pub mod lane;
pub mod node_monitor;
pub mod queue;
mod ready;
pub mod stream;
pub mod subscriber;
pub mod watch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use redshard_config::{BackendConfig, NodeAddr};
use tokio::sync::mpsc;

use crate::replies::ReplyTo;
use crate::router::writer::{RouterId, TopologyWriter};
use redshard_protocol::client_error::ClientError;
use redshard_protocol::resp::Protocol;

/// How lanes connect and when they give up; taken from `[backend]` and `[limits]`.
#[derive(Clone, Debug)]
pub struct LaneConfig {
    /// ACL user for `AUTH` on connect, if any.
    pub username: Option<String>,
    /// Password for `AUTH` on connect, if any.
    pub password: Option<String>,
    /// Connections per node.
    pub lanes: usize,
    /// `[backend] databases`: each connection checks, when it opens, that the node has that
    /// many, since a lane switches database with a pipelined `SELECT`.
    pub databases: u32,
    /// Bound on TCP connect plus the TLS and AUTH handshakes.
    pub connect_timeout: Duration,
    /// Bound on the wait for the oldest in-flight reply before the connection is declared dead;
    /// `None` on private lanes, where a blocking command may legitimately wait forever.
    pub(crate) response_timeout: Option<Duration>,
    /// First wait before reconnecting after a failed connect.
    pub(crate) backoff_min: Duration,
    /// Longest wait between reconnect attempts.
    pub(crate) backoff_max: Duration,
    /// Nesting bound for replies (a safety limit against a broken backend).
    pub max_reply_depth: usize,
    /// Whether a failed connection is replaced (shared lanes) or ends the lane (private lanes).
    pub reconnect: bool,
    /// How long a shared lane that cannot connect keeps the requests it has not sent, for the
    /// node to come back or the controller to fail it over, before it answers them with its
    /// connect error (`[health] failover_wait_ms`, as long as requests wait at a paused
    /// shard's gate; zero answers them at once).
    pub(crate) hold_unsent: Duration,
    /// TLS for every connection (`[backend] tls`); `None` for plain TCP. Shared with the
    /// health probe, and reloaded in place, so new connections use the current certificates.
    pub tls: Option<Arc<crate::tls::BackendTls>>,
    /// The proxy's own ACL users (`[backend] manage_acl`): every connection creates them and
    /// carries client traffic as one of them; `None` carries it as `username`.
    pub acl: Option<Arc<acl::ManagedUsers>>,
    /// How long a batch's `WAIT` lets the replicas acknowledge its writes (`[replication]
    /// ack_timeout_ms`; used only for requests with [`LaneRequest::acks`]).
    pub ack_timeout: Duration,
    /// `WAIT`s a connection may have out at once (`[replication] waits_in_flight`).
    pub waits_in_flight: u32,
    /// Bytes a connection has copied for its node and not written yet past which it takes
    /// nothing more from its queue (`[backend] max_unwritten_bytes`).
    pub max_unwritten: usize,
    /// Whether each node keeps a connection per protocol open ahead of need for private lanes
    /// and subscriptions (`[backend] ready_connections`; see `ready.rs`).
    pub ready_connections: bool,
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
            databases: backend.databases,
            connect_timeout: backend.connect_timeout,
            response_timeout: Some(backend.response_timeout),
            backoff_min: backend.reconnect_backoff_min,
            backoff_max: backend.reconnect_backoff_max,
            max_reply_depth,
            reconnect: true,
            hold_unsent: Duration::ZERO,
            tls,
            acl: None,
            ack_timeout: redshard_config::ReplicationConfig::default().ack_timeout,
            waits_in_flight: redshard_config::ReplicationConfig::default().waits_in_flight,
            max_unwritten: backend.max_unwritten_bytes,
            ready_connections: backend.ready_connections,
        }
    }

    /// The same settings, carrying client traffic as the proxy's ACL users `acl`.
    #[must_use]
    pub(crate) fn managing(mut self, acl: Option<acl::ManagedUsers>) -> Self {
        self.acl = acl.map(Arc::new);
        self
    }
}

/// What follows a write once its master's outcome is known: the proxy's mirroring of it to
/// the shard's replicas (`mirror::Job`, a layer above, is the implementation). The lane calls
/// exactly one of these, once.
pub trait AfterMaster: Send + std::fmt::Debug {
    /// The master answered `reply`: mirror the write, and hand `reply` to `dest` (after the
    /// replicas have it, or at once, as the mode says).
    fn master_answered(self: Box<Self>, reply: Bytes, dest: Dest);
    /// The master connection failed after the write was sent: its outcome is unknown.
    fn master_lost(self: Box<Self>);
    /// The write was never sent to the master: nothing to mirror.
    fn never_sent(self: Box<Self>);
}

/// A reply that something inside the data plane waits for, given to it by the lane: a
/// replica's answer to a mirrored write, or the `PING` a blocking command's mirroring waits on
/// (both in `mirror`, a layer above). Exactly one of these is called, once.
pub trait ReplyHook: Send + std::fmt::Debug {
    /// The node answered `reply`.
    fn answered(self: Box<Self>, reply: Bytes);
    /// The lane could not get the node's answer (the connection failed, or the lane is
    /// closed); `error` is the error it synthesized.
    fn failed(self: Box<Self>, error: Bytes);
}

/// Where a lane hands one reply (or one group of replies).
#[derive(Debug)]
pub enum Dest {
    /// A client's reply queue entry.
    Client(ReplyTo),
    /// A replica's answer to a mirrored write, checked against the master's.
    Mirror(Box<dyn ReplyHook>),
    /// A waiter inside the proxy (barriers, control work); it gets every reply of a group.
    Signal(tokio::sync::oneshot::Sender<Bytes>),
    /// Another destination, then a signal that the request is complete (a fenced request:
    /// its shared lane resumes).
    Then(Box<(Dest, tokio::sync::oneshot::Sender<()>)>),
    /// A blocking command's reply and mirroring, waiting for this `PING`'s answer on the
    /// shared lane of its slot (see `mirror::Job::following`).
    Sequenced(Box<dyn ReplyHook>),
    /// A blocking command's reply: its client counts as blocked until it is handed over.
    Blocked(Box<(Dest, crate::clients::Blocked)>),
    /// Nobody: the reply is dropped.
    Discard,
}

impl Dest {
    /// Hands `reply` over.
    pub(crate) fn deliver(self, reply: Bytes) {
        match self {
            Dest::Client(to) => to.deliver(reply),
            Dest::Mirror(ack) => ack.answered(reply),
            Dest::Signal(tx) => {
                let _ = tx.send(reply);
            }
            Dest::Then(then) => {
                let (dest, done) = *then;
                dest.deliver(reply);
                let _ = done.send(());
            }
            Dest::Sequenced(waiting) => waiting.answered(reply),
            Dest::Blocked(blocked) => blocked.0.deliver(reply),
            Dest::Discard => {}
        }
    }

    /// A destination that hands the reply to `then`, on a task of its own (the lane's error
    /// [`ClientError::LaneClosed`] if the lane dropped the request unanswered): for a client's
    /// reply the proxy looks at, or holds, before the client gets it. As for any
    /// [`Dest::Signal`], a group's replies come whole unless the request is mirrored.
    pub(crate) fn on_reply<F, Fut>(then: F) -> Self
    where
        F: FnOnce(Bytes) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<Bytes>();
        tokio::spawn(async move {
            // Dropped without an answer: only when the lane's task is gone.
            let reply = rx
                .await
                .unwrap_or_else(|_| ClientError::LaneClosed.to_reply());
            then(reply).await;
        });
        Dest::Signal(tx)
    }

    /// Hands over the error a lane synthesized because the request's outcome is unknown (the
    /// connection failed or the lane is closed).
    pub fn fail(self, reply: Bytes) {
        match self {
            Dest::Mirror(ack) => ack.failed(reply),
            Dest::Then(then) => {
                let (dest, done) = *then;
                dest.fail(reply);
                let _ = done.send(());
            }
            Dest::Sequenced(waiting) => waiting.failed(reply),
            Dest::Blocked(blocked) => blocked.0.fail(reply),
            other => other.deliver(reply),
        }
    }
}

impl From<ReplyTo> for Dest {
    fn from(to: ReplyTo) -> Self {
        Dest::Client(to)
    }
}

/// One request for a lane: the bytes to send and where its reply goes.
#[derive(Debug)]
pub struct LaneRequest {
    /// One complete RESP request (usually the client's original bytes), or several that must
    /// leave together (a transaction's `MULTI` ... `EXEC`).
    pub bytes: Bytes,
    /// The reply's destination.
    pub(crate) dest: Dest,
    /// The protocol the reply must be in; the lane switches its connection with `HELLO` when
    /// this differs from the previous request's.
    pub protocol: Protocol,
    /// How many replies `bytes` produce (1, or `n + 2` for `MULTI`, n requests, `EXEC`).
    pub replies: u32,
    /// The mirroring of a write to the shard's replicas once the master has answered.
    pub mirror: Option<Box<dyn AfterMaster>>,
    /// Send it on this other lane (a client's private connection) instead, once everything
    /// sent before it on this lane has been answered, and send nothing more here until it is
    /// answered: the master then runs it in a known place of this lane's order, which the
    /// mirror replays (a transaction after WATCH).
    pub(crate) via: Option<LaneHandle>,
    /// The backend user it runs as (with managed ACL users): a script of a restricted client
    /// runs as its level's user; the lane switches with `AUTH` when this differs from the
    /// previous request's.
    pub user: acl::BackendUser,
    /// For a write under Redis replication with `sync` acknowledgement, how many replicas
    /// must acknowledge it (the shard's in-sync replicas) before its reply is released; the
    /// lane then ends the batch with a `WAIT` (see [`lane`]). 0 for anything else.
    pub acks: u32,
    /// The database it runs in (the client's `SELECT`); the lane switches its connection
    /// with a `SELECT` when this differs from the previous request's.
    pub db: u16,
}

impl LaneRequest {
    /// A plain request with one reply and no mirroring.
    #[must_use]
    pub fn new(bytes: Bytes, dest: impl Into<Dest>, protocol: Protocol) -> Self {
        Self {
            bytes,
            dest: dest.into(),
            protocol,
            replies: 1,
            mirror: None,
            via: None,
            user: acl::BackendUser::Client,
            acks: 0,
            db: 0,
        }
    }
}

/// The sending side of one lane.
#[derive(Clone, Debug)]
pub struct LaneHandle {
    /// Requests in submission order; the lane task owns the receiver.
    tx: queue::Sender<LaneRequest>,
}

impl LaneHandle {
    /// Queues a plain request (one reply, no mirroring).
    pub fn send(&self, bytes: Bytes, reply: ReplyTo, protocol: Protocol) {
        self.submit(LaneRequest::new(bytes, reply, protocol));
    }

    /// Queues `request`. If the lane task is gone (only while the proxy shuts down), the
    /// request is answered with an error at once so its client never hangs.
    pub(crate) fn submit(&self, request: LaneRequest) {
        if let Err(req) = self.tx.send(request) {
            if let Some(job) = req.mirror {
                job.master_lost();
            }
            req.dest.fail(ClientError::LaneClosed.to_reply());
        }
    }

    /// Whether the lane task has ended.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// The replicas a master's `INFO replication` lists streaming from it and acknowledging
/// (`state=online`, a `lag` of 0 or 1 s), as the controller counts them (see
/// [`Node::streaming`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Streaming {
    /// Those its shard lists (in sync or not), by the topology's addresses.
    pub listed: Box<[NodeAddr]>,
    /// Those its shard does not list (attached to it by hand).
    pub others: u32,
}

impl Streaming {
    /// How many of them are not among `in_sync`: what a write's `WAIT` asks for beyond the
    /// in-sync replicas.
    #[must_use]
    pub fn besides<'a>(&self, in_sync: impl Iterator<Item = &'a NodeAddr> + Clone) -> u32 {
        let listed = self
            .listed
            .iter()
            .filter(|addr| !in_sync.clone().any(|in_sync| in_sync == *addr))
            .count();
        self.others
            .saturating_add(u32::try_from(listed).unwrap_or(u32::MAX))
    }
}

/// One Redis node and its lanes.
#[derive(Debug)]
pub struct Node {
    /// Where the node listens.
    addr: NodeAddr,
    /// `lanes[slot % lanes.len()]` carries the slot's commands, for clients of both protocols:
    /// one ordered connection per slot is what lets mirroring replay the master's order.
    lanes: Box<[LaneHandle]>,
    /// Settings for private lanes and subscriber connections.
    config: Arc<LaneConfig>,
    /// Set while the node is fenced (a master that was failed over): its lanes drop their
    /// connections and refuse every request until the controller lifts it.
    fenced: tokio::sync::watch::Sender<bool>,
    /// Reports of failed connections to the controller.
    events: Option<mpsc::UnboundedSender<crate::events::ControlEvent>>,
    /// The node's process as the lanes know it (see [`Incarnation`]).
    incarnation: Arc<Incarnation>,
    /// While the node is a shard's master under Redis replication: the replicas streaming
    /// from it and acknowledging, in sync or not (stale or catching-up replicas of the shard,
    /// nodes an operator attached by hand). Redis's `WAIT` counts every one of them, so a
    /// write's `WAIT` asks for them as well as for the in-sync ones
    /// ([`ShardRoute::wait_for`](crate::router::ShardRoute::wait_for)): else one of them
    /// could stand in for an in-sync replica that lacks the write. Set by the controller from
    /// the master's `INFO replication`; one snapshot, so that a reader never sees half of an
    /// update.
    streaming: ArcSwap<Streaming>,
    /// Counts the stores of `streaming`, each bumped after its store: what a routing table's
    /// cached `WAIT` count is checked against, so that a write reads one number, not the
    /// snapshot ([`ShardRoute::wait_for`](crate::router::ShardRoute::wait_for)).
    streaming_version: AtomicU32,
    /// Writes its lanes answered `-NOREPLICAS` since the proxy started (the controller could
    /// not verify their acknowledgement, nor record stale the replicas that may lack them;
    /// see [`crate::events::AckVerdict`]): shared with the lanes, which count, for INFO.
    acks_refused: Arc<AtomicU64>,
    /// The router whose writer may fence it.
    owner: RouterId,
    /// Connections opened ahead of need for private lanes and subscriptions (see `ready.rs`);
    /// unused without `[backend] ready_connections`.
    ready: Arc<ready::Ready>,
}

/// Which process of a node the proxy serves: its `run_id`, as the first lane connection found
/// it. A lane that reconnects to a node with another `run_id` knows the node restarted and lost
/// what it held in memory (all of it, or what it wrote since its last save): a master that
/// comes back that way within the failover delay must not be served as if nothing happened,
/// and a replica that does is no longer in sync. The lane reports it and serves nothing until
/// the controller has decided and [accepted](Incarnation::accept) the new process.
#[derive(Debug, Default)]
pub struct Incarnation {
    /// The `run_id` the proxy serves; `None` until a lane first connected.
    run_id: Mutex<Option<String>>,
    /// Whether the log said already that this node's run_id cannot be read (said once).
    unwatched: std::sync::atomic::AtomicBool,
    /// A lane found another process than the one served, and the controller has not dealt
    /// with it yet: the shard waits at its gate meanwhile.
    restarted: std::sync::atomic::AtomicBool,
    /// Shared lanes whose connection failed and that are not connected again to the process
    /// served.
    lanes_down: std::sync::atomic::AtomicUsize,
    /// Whether lanes that cannot connect keep what they have not sent (see
    /// [`LaneConfig::hold_unsent`]): set by the controller while the node is a master whose
    /// shard is not down, so that a request waits where a decision is coming (the node
    /// returns, or is failed over), and is answered at once where none is.
    hold: tokio::sync::watch::Sender<bool>,
}

impl Incarnation {
    /// Whether `run_id` is the process the proxy serves (the first one seen is).
    fn admits(&self, run_id: &str) -> bool {
        let mut known = self.run_id.lock().unwrap_or_else(PoisonError::into_inner);
        match known.as_deref() {
            Some(known) => known == run_id,
            None => {
                *known = Some(run_id.to_owned());
                true
            }
        }
    }

    /// True the first time a lane finds the node's run_id unreadable, false after.
    pub(crate) fn first_unwatched(&self) -> bool {
        !self
            .unwatched
            .swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    /// A lane found another process: until [`Incarnation::accept`], it is
    /// [`Incarnation::restart_pending`].
    fn restart_seen(&self) {
        self.restarted
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether a lane found the node restarted and the controller has not decided yet what
    /// to do (fail it over, or serve it as it is).
    #[must_use]
    pub fn restart_pending(&self) -> bool {
        self.restarted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A shared lane lost its connection (`down`) or connected again to the process served
    /// (or to a node whose run_id is not read).
    fn lane_down(&self, down: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        if down {
            self.lanes_down.fetch_add(1, Relaxed);
        } else {
            self.lanes_down.fetch_sub(1, Relaxed);
        }
    }

    /// Whether every shared lane that lost its connection is connected again to the process
    /// served: the node is back as the same process, not only answering a probe (a node
    /// restarted empty answers probes too).
    #[must_use]
    pub fn lanes_connected(&self) -> bool {
        self.lanes_down.load(std::sync::atomic::Ordering::Relaxed) == 0
    }

    /// Whether the proxy knows the node's process and `run_id` is another one.
    #[must_use]
    pub fn differs(&self, run_id: &str) -> bool {
        self.run_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_deref()
            .is_some_and(|known| known != run_id)
    }

    /// Whether `run_id` is the process the proxy serves now.
    #[must_use]
    pub fn is(&self, run_id: &str) -> bool {
        self.run_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_deref()
            == Some(run_id)
    }

    /// Sets whether lanes that cannot connect keep the requests they have not sent.
    pub fn set_hold(&self, hold: bool) {
        self.hold
            .send_if_modified(|held| std::mem::replace(held, hold) != hold);
    }

    /// Whether lanes that cannot connect keep the requests they have not sent.
    fn holds(&self) -> bool {
        *self.hold.borrow()
    }

    /// Completes when lanes may no longer keep unsent requests.
    async fn released(&self) {
        let mut hold = self.hold.subscribe();
        let _ = hold.wait_for(|held| !*held).await;
    }

    /// The controller has dealt with the restart: `run_id` is the process to serve now.
    pub fn accept(&self, run_id: &str) {
        *self.run_id.lock().unwrap_or_else(PoisonError::into_inner) = Some(run_id.to_owned());
        self.restarted
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A connection of one client's own, for what cannot share a lane: transactions (WATCH,
/// MULTI ... EXEC) and blocking commands. It is a lane with no response timeout whose task
/// is aborted, closing the connection, when the client's session drops it, so a client that
/// leaves while blocked frees its backend connection at once.
#[derive(Debug)]
pub(crate) struct PrivateLane {
    /// Where the connection goes. (It serves both protocols: like every lane, it switches
    /// with `HELLO` when a request needs the other one, which keeps what the connection
    /// WATCHes.)
    addr: NodeAddr,
    /// The sending side.
    handle: LaneHandle,
    /// The lane task, aborted on drop.
    task: tokio::task::JoinHandle<()>,
}

impl PrivateLane {
    /// Whether this lane goes to `addr`.
    #[must_use]
    pub fn serves(&self, addr: &NodeAddr) -> bool {
        &self.addr == addr
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

/// Starts `config.lanes` lane tasks to `addr` (connected in RESP2; each switches per request).
fn spawn_lanes(
    addr: &NodeAddr,
    config: &Arc<LaneConfig>,
    fenced: &tokio::sync::watch::Sender<bool>,
    events: Option<&mpsc::UnboundedSender<crate::events::ControlEvent>>,
    incarnation: &Arc<Incarnation>,
    acks_refused: &Arc<AtomicU64>,
) -> Box<[LaneHandle]> {
    (0..config.lanes.max(1))
        .map(|index| {
            let (tx, rx) = queue::channel();
            tokio::spawn(lane::run(
                lane::LaneSetup {
                    addr: addr.clone(),
                    index,
                    protocol: Protocol::Resp2,
                    config: Arc::clone(config),
                    fenced: Some(fenced.subscribe()),
                    events: events.cloned(),
                    // Only a controller (it hears `events`) can decide about a restart.
                    incarnation: events.is_some().then(|| Arc::clone(incarnation)),
                    ready: None,
                    acks_refused: Arc::clone(acks_refused),
                },
                rx,
            ));
            LaneHandle { tx }
        })
        .collect()
}

impl Node {
    /// Starts `config.lanes` lane tasks for `addr` on the current tokio runtime; failed
    /// connections are reported to `events`.
    #[must_use]
    pub fn spawn(
        addr: NodeAddr,
        config: &Arc<LaneConfig>,
        events: Option<mpsc::UnboundedSender<crate::events::ControlEvent>>,
        owner: RouterId,
    ) -> Arc<Self> {
        let fenced = tokio::sync::watch::Sender::new(false);
        let incarnation = Arc::new(Incarnation::default());
        let acks_refused = Arc::new(AtomicU64::new(0));
        let lanes = spawn_lanes(
            &addr,
            config,
            &fenced,
            events.as_ref(),
            &incarnation,
            &acks_refused,
        );
        let ready = Arc::new(ready::Ready::default());
        if config.ready_connections {
            // Most clients speak RESP2; the other protocol's is opened at its first use.
            ready.fill(&addr, Protocol::Resp2, config);
        }
        Arc::new(Self {
            addr,
            lanes,
            config: Arc::clone(config),
            fenced,
            events,
            incarnation,
            streaming: ArcSwap::default(),
            streaming_version: AtomicU32::new(1),
            acks_refused,
            owner,
            ready,
        })
    }

    /// The node's process as the lanes know it.
    #[must_use]
    pub fn incarnation(&self) -> &Incarnation {
        &self.incarnation
    }

    /// Fences the node: its lanes reset their connections (the node discards what it has not
    /// read), fail what is in flight or queued, and refuse requests until [`Node::unfence`].
    /// A topology change: only the holder of the writer (the controller) fences.
    pub fn fence(&self, writer: &TopologyWriter) {
        writer.check(self.owner);
        self.fenced.send_replace(true);
    }

    /// Lifts the fence: the lanes connect again.
    pub fn unfence(&self, writer: &TopologyWriter) {
        writer.check(self.owner);
        self.fenced.send_replace(false);
    }

    /// Records which replicas stream from this master and acknowledge (see
    /// [`Node::streaming`]); what the acknowledgement of a write waits for is the
    /// controller's to say.
    pub fn set_streaming(&self, writer: &TopologyWriter, streaming: Streaming) {
        writer.check(self.owner);
        self.streaming.store(Arc::new(streaming));
        // After the store: whoever reads the new version then loads this snapshot or a later
        // one.
        self.streaming_version.fetch_add(1, Ordering::Release);
    }

    /// The replicas streaming from this master and acknowledging, as the controller last saw
    /// them.
    #[must_use]
    pub fn streaming(&self) -> arc_swap::Guard<Arc<Streaming>> {
        self.streaming.load()
    }

    /// How many times [`Node::set_streaming`] stored a snapshot (plus one): read before
    /// [`Node::streaming`], it tells whether what was computed from that snapshot still holds.
    #[must_use]
    #[inline]
    pub fn streaming_version(&self) -> u32 {
        self.streaming_version.load(Ordering::Acquire)
    }

    /// Writes this node's lanes answered `-NOREPLICAS` since the proxy started (see
    /// [`crate::events::AckVerdict::Refuse`]).
    #[must_use]
    pub fn acks_refused(&self) -> u64 {
        self.acks_refused.load(Ordering::Relaxed)
    }

    /// Whether the node is fenced.
    #[must_use]
    pub fn is_fenced(&self) -> bool {
        *self.fenced.borrow()
    }

    /// The node's address.
    #[must_use]
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// The lane that carries `slot`'s commands.
    #[must_use]
    pub fn lane(&self, slot: u16) -> &LaneHandle {
        &self.lanes[usize::from(slot) % self.lanes.len()]
    }

    /// Lane number `index` (mirrored writes use the replica's lane of the master's number).
    #[must_use]
    pub(crate) fn lane_at(&self, index: usize) -> &LaneHandle {
        &self.lanes[index % self.lanes.len()]
    }

    /// A new private lane to this node for one client.
    #[must_use]
    pub(crate) fn private_lane(&self, protocol: Protocol) -> PrivateLane {
        let mut config = (*self.config).clone();
        config.response_timeout = None;
        config.reconnect = false;
        let (tx, rx) = queue::channel();
        let task = tokio::spawn(lane::run(
            lane::LaneSetup {
                addr: self.addr.clone(),
                index: 0,
                protocol,
                config: Arc::new(config),
                fenced: Some(self.fenced.subscribe()),
                events: self.events.clone(),
                // Private lanes do not reconnect; the node's shared lanes watch its process.
                incarnation: None,
                ready: self.take_ready(protocol),
                acks_refused: Arc::clone(&self.acks_refused),
            },
            rx,
        ));
        PrivateLane {
            addr: self.addr.clone(),
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
        subscriber::Subscriber::spawn(
            subscriber::Setup {
                addr: self.addr.clone(),
                protocol,
                config: Arc::clone(&self.config),
                fenced: self.fenced.subscribe(),
                ready: self.take_ready(protocol),
            },
            sink,
        )
    }

    /// Whether a connection to this node is open ahead of need for the next client of
    /// `protocol` that needs one of its own (`[backend] ready_connections`).
    #[must_use]
    pub fn has_ready_connection(&self, protocol: Protocol) -> bool {
        self.ready.has(protocol)
    }

    /// A connection to this node opened ahead of need for `protocol`, if one is ready (see
    /// `ready.rs`); `None` when none is (the caller connects) or the node is fenced.
    fn take_ready(&self, protocol: Protocol) -> Option<stream::BackendStream> {
        if !self.config.ready_connections || self.is_fenced() {
            return None;
        }
        self.ready.take(&self.addr, protocol, &self.config)
    }

    /// Starts this node's tracking connection (client-side caching): what it learns goes to
    /// `tx`, until the task is aborted or `tx` closed (see [`invalidations`]).
    #[must_use]
    pub fn track_invalidations(
        &self,
        tx: mpsc::UnboundedSender<(NodeAddr, invalidations::Invalidation)>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(invalidations::run(
            self.addr.clone(),
            Arc::clone(&self.config),
            self.fenced.subscribe(),
            tx,
        ))
    }

    /// Starts this node's MONITOR connection, which forwards the commands its scripts and
    /// functions run to `tx` until the task is aborted or `tx` closed (see [`node_monitor`]).
    /// It authenticates with the configured backend credentials, not as a managed ACL user.
    #[must_use]
    pub fn monitor_scripts(
        &self,
        tx: mpsc::UnboundedSender<(NodeAddr, node_monitor::NodeMonitor)>,
    ) -> tokio::task::JoinHandle<()> {
        let mut config = (*self.config).clone();
        config.acl = None;
        tokio::spawn(node_monitor::run(
            self.addr.clone(),
            Arc::new(config),
            self.fenced.subscribe(),
            tx,
        ))
    }

    /// How many lanes this node has.
    #[must_use]
    pub(crate) fn lane_count(&self) -> usize {
        self.lanes.len()
    }
}

/// Every node the proxy talks to, by address, so routing tables share connections.
#[derive(Debug)]
pub struct NodePool {
    /// Lane settings for new nodes.
    config: Arc<LaneConfig>,
    /// Where lanes report failed connections (the controller).
    events: Option<mpsc::UnboundedSender<crate::events::ControlEvent>>,
    /// Nodes by address. A node dropped from every routing table stays here until
    /// [`NodePool::retain`] removes it.
    nodes: Mutex<HashMap<NodeAddr, Arc<Node>>>,
    /// The router whose writer may fence its nodes (one of its own until a router takes it).
    owner: RouterId,
}

impl NodePool {
    /// An empty pool whose nodes use `config`.
    #[must_use]
    pub fn new(config: LaneConfig) -> Self {
        Self {
            config: Arc::new(config),
            events: None,
            nodes: Mutex::new(HashMap::new()),
            owner: RouterId::next(),
        }
    }

    /// The same pool, its nodes fenced only by the writer of router `owner` (before any
    /// node started: `Router::new`).
    #[must_use]
    pub(crate) fn owned_by(mut self, owner: RouterId) -> Self {
        self.owner = owner;
        self
    }

    /// The same pool, reporting failed connections to `events`.
    #[must_use]
    pub(crate) fn reporting(
        mut self,
        events: mpsc::UnboundedSender<crate::events::ControlEvent>,
    ) -> Self {
        self.events = Some(events);
        self
    }

    /// Sends `event` to the controller; false when the pool reports to none (tests, tools)
    /// or the controller is gone.
    pub fn report(&self, event: crate::events::ControlEvent) -> bool {
        self.events
            .as_ref()
            .is_some_and(|events| events.send(event).is_ok())
    }

    /// The node at `addr`, started on first use.
    #[must_use]
    pub fn node(&self, addr: &NodeAddr) -> Arc<Node> {
        let mut nodes = self
            .nodes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(nodes.entry(addr.clone()).or_insert_with(|| {
            Node::spawn(addr.clone(), &self.config, self.events.clone(), self.owner)
        }))
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
