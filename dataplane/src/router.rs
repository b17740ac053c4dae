//! The routing table: which master serves each slot, swapped atomically as the topology moves.
//!
//! A [`RoutingTable`] is built from one [`Topology`] epoch and never changes; a new epoch builds
//! a new table and [`Router::install`] publishes it with one `ArcSwap::store`. A session loads
//! the table once per batch of requests, so every request sees exactly one epoch.
//!
//! Reading is open to all; changing what requests are routed by (installing a table, setting
//! a gate, fencing a node) takes the router's one [`TopologyWriter`], which the controller
//! holds.

pub mod writer;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use redshard_config::{AckMode, ReplicaState, ShardId, Slot, Topology, SLOT_COUNT};
use tokio::sync::{watch, Notify};

use bytes::Bytes;

use crate::backend::acl::BackendUser;
use crate::backend::{AfterMaster, Dest, LaneRequest, Node, NodePool};
use crate::mirror::effect::Effect;
use crate::mirror::{Job, Mirror, ShardMirror};
use redshard_protocol::resp::Protocol;
use writer::{RouterId, TopologyWriter};

/// Whether a shard takes requests now. Shared by every epoch's table (by shard id), so a
/// session waiting on it sees the change without reloading the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GateState {
    /// Requests flow.
    Open,
    /// Requests wait (a failover or a resync cut-over is under way), at most
    /// `[health] failover_wait_ms`, then get `-CLUSTERDOWN`.
    Paused,
    /// The master is down with no in-sync replica to promote: `-CLUSTERDOWN` at once.
    Down,
}

impl GateState {
    /// The value of the `state` label of the `gate_state` metric (and of INFO's gate field).
    #[must_use]
    pub fn label(self) -> &'static str {
        use redshard_metrics::names::gate_state;
        match self {
            Self::Open => gate_state::OPEN,
            Self::Paused => gate_state::PAUSED,
            Self::Down => gate_state::DOWN,
        }
    }
}

/// The gate of one shard.
#[derive(Debug)]
pub struct ShardGate {
    /// The state; sessions waiting on a paused shard hold receivers.
    state: watch::Sender<GateState>,
    /// Gates not open, over all shards: while 0, requests skip the per-shard check.
    closed: Arc<AtomicUsize>,
    /// Whether the proxy serves nothing at all (shared by every gate; see
    /// [`Router::set_offline`]): a `Down` gate then answers that the proxy lost its etcd
    /// session rather than that the shard has no master.
    offline: Arc<AtomicBool>,
    /// The router whose writer may set it.
    owner: RouterId,
}

impl ShardGate {
    fn new(closed: Arc<AtomicUsize>, offline: Arc<AtomicBool>, owner: RouterId) -> Self {
        let gate = Self {
            state: watch::Sender::new(GateState::Open),
            closed,
            offline,
            owner,
        };
        if gate.offline.load(Ordering::Acquire) {
            gate.state.send_replace(GateState::Down);
            gate.closed.fetch_add(1, Ordering::AcqRel);
        }
        gate
    }

    /// Whether the proxy serves nothing now (it lost its etcd session): see
    /// [`Router::set_offline`].
    #[must_use]
    pub fn offline(&self) -> bool {
        self.offline.load(Ordering::Acquire)
    }

    /// The state now.
    #[must_use]
    pub fn state(&self) -> GateState {
        *self.state.borrow()
    }

    /// Sets the state, waking waiting sessions. Only the holder of the topology's writer (the
    /// controller) opens and closes gates.
    pub fn set(&self, writer: &TopologyWriter, state: GateState) {
        writer.check(self.owner);
        let old = self.state.send_replace(state);
        match (old == GateState::Open, state == GateState::Open) {
            (true, false) => {
                self.closed.fetch_add(1, Ordering::AcqRel);
            }
            (false, true) => {
                self.closed.fetch_sub(1, Ordering::AcqRel);
            }
            _ => {}
        }
    }

    /// A receiver to wait on.
    #[must_use]
    pub fn subscribe(&self) -> watch::Receiver<GateState> {
        self.state.subscribe()
    }
}

/// A shard as the data path sees it: where its writes go. Cloned (rather than its table held)
/// by what waits on a shard for long, such as WAIT.
#[derive(Clone, Debug)]
pub struct ShardRoute {
    /// The topology's id of the shard.
    pub id: ShardId,
    /// The operator's name for the shard, for logs and INFO.
    pub name: String,
    /// The shard's master and its lanes.
    pub master: Arc<Node>,
    /// Where its writes are mirrored (inert under Redis replication).
    pub mirror: Arc<ShardMirror>,
    /// Whether it takes requests now.
    pub gate: Arc<ShardGate>,
    /// Under Redis replication with `sync` acknowledgement, how many replicas must have a
    /// write before its reply is released: the shard's in-sync replicas (see
    /// [`LaneRequest::acks`]). 0 otherwise: no `WAIT`.
    pub acks: u32,
    /// Under Redis replication, the in-sync replicas (reads may go there); under proxy
    /// mirroring, empty (the mirror's active links are the in-sync replicas).
    pub in_sync: Box<[Arc<Node>]>,
    /// [`ShardRoute::wait_for`] as last computed, and for which version of the master's
    /// streaming replicas: every write asks, and the answer changes only with them (or
    /// with a new table).
    waits: WaitCache,
}

/// A `WAIT` count and the [`Node::streaming_version`] it was computed for, in one atomic.
#[derive(Debug)]
struct WaitCache(AtomicU64);

impl Default for WaitCache {
    /// Version 0, which a node's count reaches only after 2^32 changes, and should a version
    /// ever match it, a count no `WAIT` could be answered with early.
    fn default() -> Self {
        Self(AtomicU64::new(u64::from(u32::MAX)))
    }
}

impl WaitCache {
    /// The count cached for `version`, if that is the version it holds.
    #[inline]
    fn get(&self, version: u32) -> Option<u32> {
        let cached = self.0.load(Ordering::Relaxed);
        // The high half is the version, the low half the count.
        #[allow(clippy::cast_possible_truncation)]
        let (held, count) = ((cached >> 32) as u32, cached as u32);
        (held == version).then_some(count)
    }

    /// Caches `count` for `version`.
    fn set(&self, version: u32, count: u32) {
        self.0.store(
            u64::from(version) << 32 | u64::from(count),
            Ordering::Relaxed,
        );
    }
}

impl Clone for WaitCache {
    fn clone(&self) -> Self {
        Self(AtomicU64::new(self.0.load(Ordering::Relaxed)))
    }
}

impl ShardRoute {
    /// The replicas known to hold every write of this shard answered before a
    /// [mirrored barrier](barrier) that completed: the in-sync replicas still mirrored to, or
    /// under Redis replication with `sync` acknowledgement every in-sync replica (each write
    /// was acknowledged by all of them before it was answered). Client `WAIT` answers this.
    #[must_use]
    pub(crate) fn acknowledging_replicas(&self) -> usize {
        if self.mirror.is_inert() {
            if self.acks > 0 {
                self.in_sync.len()
            } else {
                0
            }
        } else {
            self.mirror.active()
        }
    }

    /// How many replicas a write's `WAIT` asks for: the in-sync ones ([`ShardRoute::acks`])
    /// and, when there are any, every other replica streaming from the master (Redis's `WAIT`
    /// counts them too, so without them a stale replica's acknowledgement could stand in for
    /// an in-sync one that lacks the write). 0 when no write waits.
    ///
    /// The streaming replicas come from the controller's last look at the master, the in-sync
    /// ones from this table: a replica that is both is counted once, whichever of the two
    /// changed last (a replica recorded in sync is not waited for twice until the next look,
    /// nor one recorded stale while it streams forgotten).
    #[must_use]
    #[inline]
    pub fn wait_for(&self) -> u32 {
        if self.acks == 0 {
            return 0;
        }
        // The version first: the snapshot loaded after it is that one or a later one, so
        // what is cached under it is never older than what it names.
        let version = self.master.streaming_version();
        match self.waits.get(version) {
            Some(count) => count,
            None => self.count_waits(version),
        }
    }

    /// [`ShardRoute::wait_for`] when the master's streaming replicas changed since it was
    /// last computed (or never was with this table).
    #[cold]
    fn count_waits(&self, version: u32) -> u32 {
        let in_sync = self.in_sync.iter().map(|node| node.addr());
        let count = self
            .acks
            .saturating_add(self.master.streaming().besides(in_sync));
        self.waits.set(version, count);
        count
    }

    /// The nodes a read may go to instead of the master: the in-sync replicas, without the
    /// mirrored ones that failed a write since this table was built.
    pub(crate) fn replica_nodes(&self) -> impl Iterator<Item = &Arc<Node>> {
        self.mirror
            .replicas()
            .iter()
            .filter(|link| link.is_active())
            .map(|link| link.node())
            .chain(self.in_sync.iter())
    }
}

/// One epoch's routing: immutable once built.
#[derive(Debug)]
pub struct RoutingTable {
    /// The topology this table serves; its epoch is the table's epoch.
    topology: Arc<Topology>,
    /// The serving shard of each slot, as an index into `shards`.
    slot_to_shard: Box<[u16]>,
    /// Gates not open, over all shards (shared with [`Gates`]).
    closed: Arc<AtomicUsize>,
    /// Whether some slot is migrating (requests then check their keys).
    migrating: bool,
    /// Every shard, in topology order.
    shards: Vec<ShardRoute>,
    /// Its place among its router's tables, for the epoch barrier; `None` for a table built
    /// outside a router (benchmarks).
    tracked: Option<Tracked>,
    /// The scripts loaded on every master of this table (see [`RoutingTable::first_sight`]);
    /// a new table (a new master after a failover, a new shard) starts without any.
    scripts: LoadedScripts,
}

/// The SHA1s of the scripts a table has had loaded on every master, at most `limit`.
#[derive(Debug)]
struct LoadedScripts {
    /// Scripts loaded, by the SHA1 of their body.
    seen: Mutex<HashSet<[u8; 20]>>,
    /// Most SHA1s kept (`[mirror] max_scripts`); past it the record starts again empty, and
    /// each script is loaded again at its next sight.
    limit: usize,
}

/// A table's entry in its router's [`LiveTables`].
#[derive(Debug)]
struct Tracked {
    /// Tables built later have higher generations.
    generation: u64,
    /// The router's record, which the table leaves when it is dropped.
    live: Arc<LiveTables>,
}

impl Drop for RoutingTable {
    fn drop(&mut self) {
        if let Some(tracked) = &self.tracked {
            tracked.live.leave(tracked.generation);
        }
    }
}

/// The tables of one router still held by someone, by generation: what the epoch barrier
/// ([`Router::epoch_barrier`]) waits on. Touched only when a table is built or dropped (once
/// per topology change), never per request.
#[derive(Debug, Default)]
struct LiveTables {
    /// The generation of every table not yet dropped.
    live: Mutex<BTreeSet<u64>>,
    /// The next table's generation.
    next: AtomicU64,
    /// Woken each time a table is dropped.
    dropped: Notify,
}

impl LiveTables {
    /// Registers a new table; returns its generation.
    fn join(&self) -> u64 {
        let generation = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(generation);
        generation
    }

    /// Forgets a dropped table and wakes the barrier's waiters.
    fn leave(&self, generation: u64) {
        self.lock().remove(&generation);
        self.dropped.notify_waiters();
    }

    /// The oldest generation still held.
    fn oldest(&self) -> Option<u64> {
        self.lock().first().copied()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RoutingTable {
    /// Builds the table for `topology`, taking the nodes' lanes from `pool`, the replica links
    /// from `mirror` and the shards' gates from `gates`.
    #[must_use]
    pub fn build(topology: Arc<Topology>, pool: &NodePool, mirror: &Mirror, gates: &Gates) -> Self {
        let shards: Vec<ShardRoute> = topology
            .shards
            .iter()
            .map(|shard| {
                let in_sync: Vec<_> = shard
                    .replicas
                    .iter()
                    .filter(|r| r.state == ReplicaState::InSync)
                    .map(|r| &r.addr)
                    .collect();
                let redis = mirror.is_inert();
                let acks = if redis && mirror.ack() == AckMode::Sync {
                    u32::try_from(in_sync.len()).unwrap_or(u32::MAX)
                } else {
                    0
                };
                ShardRoute {
                    id: shard.id,
                    name: shard.name.clone(),
                    master: pool.node(&shard.master),
                    mirror: mirror.shard(shard.id, &shard.name, &shard.master, &in_sync, pool),
                    gate: gates.of(shard.id),
                    acks,
                    waits: WaitCache::default(),
                    in_sync: if redis {
                        in_sync.iter().map(|&addr| pool.node(addr)).collect()
                    } else {
                        Box::default()
                    },
                }
            })
            .collect();
        let index_of: HashMap<ShardId, u16> = shards
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id, u16::try_from(i).unwrap_or(u16::MAX)))
            .collect();
        let slot_to_shard = (0..SLOT_COUNT)
            .map(|slot| {
                let slot = Slot::new(slot as u16).unwrap_or(Slot::for_key(b""));
                // Validation guarantees every slot is served by a known shard.
                index_of
                    .get(&topology.serving_shard(slot))
                    .copied()
                    .unwrap_or(0)
            })
            .collect();
        let migrating = topology
            .slots
            .iter()
            .any(|s| matches!(s, redshard_config::SlotState::Migrating { .. }));
        Self {
            topology,
            slot_to_shard,
            shards,
            closed: Arc::clone(&gates.closed),
            migrating,
            tracked: None,
            scripts: LoadedScripts {
                seen: Mutex::new(HashSet::new()),
                limit: mirror.scripts().limit(),
            },
        }
    }

    /// Whether the script `body` is new to this table, which then records it: the caller
    /// loads it on every master (an `EVAL` runs on its keys' master only, and each master
    /// caches only what it ran, so an `EVALSHA` of it on another master would answer
    /// `NOSCRIPT` where one server has it).
    pub(crate) fn first_sight(&self, body: &[u8]) -> bool {
        let sha = sha1_smol::Sha1::from(body).digest().bytes();
        let mut seen = self
            .scripts
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if seen.contains(&sha) {
            return false;
        }
        if seen.len() >= self.scripts.limit {
            seen.clear();
        }
        seen.insert(sha);
        true
    }

    /// Forgets the scripts loaded (`SCRIPT FLUSH` emptied the masters' caches).
    pub(crate) fn forget_scripts(&self) {
        self.scripts
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// The table, entered in `live` so the epoch barrier sees while it is held.
    fn tracked(mut self, live: &Arc<LiveTables>) -> Self {
        self.tracked = Some(Tracked {
            generation: live.join(),
            live: Arc::clone(live),
        });
        self
    }

    /// The table's generation among its router's (0 outside a router).
    fn generation(&self) -> u64 {
        self.tracked.as_ref().map_or(0, |t| t.generation)
    }

    /// Whether some slot is migrating.
    #[must_use]
    #[inline]
    pub fn has_migrations(&self) -> bool {
        self.migrating
    }

    /// The slot of `key` under the topology's routing rules: every key of a request is routed
    /// by this, never by `Slot::for_key` alone.
    #[must_use]
    #[inline]
    pub fn slot_of(&self, key: &[u8]) -> Slot {
        self.topology.slot_of(key)
    }

    /// Whether `slot` is migrating.
    #[must_use]
    pub(crate) fn is_migrating(&self, slot: Slot) -> bool {
        matches!(
            self.topology.slot_state(slot),
            redshard_config::SlotState::Migrating { .. }
        )
    }

    /// Whether some shard's gate is paused or down.
    #[must_use]
    #[inline]
    pub(crate) fn any_gate_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire) != 0
    }

    /// The topology epoch this table was built from.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.topology.epoch
    }

    /// The topology this table serves.
    #[must_use]
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }

    /// Every shard, in topology order.
    #[must_use]
    pub fn shards(&self) -> &[ShardRoute] {
        &self.shards
    }

    /// The route of the shard with id `id`.
    #[must_use]
    pub fn route(&self, id: ShardId) -> Option<&ShardRoute> {
        self.shards.iter().find(|s| s.id == id)
    }

    /// The index (into [`RoutingTable::shards`]) of the shard serving `slot`.
    #[must_use]
    pub fn shard_of(&self, slot: Slot) -> usize {
        usize::from(self.slot_to_shard[slot.index()])
    }

    /// The master that serves `slot`.
    #[must_use]
    pub fn master_of(&self, slot: Slot) -> &Arc<Node> {
        &self.shards[self.shard_of(slot)].master
    }
}

/// Every shard's gate, by shard id.
#[derive(Debug)]
pub struct Gates {
    /// Created on first use; a shard id is never reused for another shard.
    gates: Mutex<HashMap<ShardId, Arc<ShardGate>>>,
    /// Gates not open now.
    closed: Arc<AtomicUsize>,
    /// Whether the proxy serves nothing (shared with every gate).
    offline: Arc<AtomicBool>,
    /// The router whose writer may set them.
    owner: RouterId,
}

impl Default for Gates {
    /// Gates of no router (a table built by hand, as a benchmark does): no writer sets them.
    fn default() -> Self {
        Self::new(RouterId::next())
    }
}

impl Gates {
    /// No gate yet, for `owner`'s router.
    fn new(owner: RouterId) -> Self {
        Self {
            gates: Mutex::default(),
            closed: Arc::default(),
            offline: Arc::default(),
            owner,
        }
    }

    /// The gate of `shard`.
    #[must_use]
    pub fn of(&self, shard: ShardId) -> Arc<ShardGate> {
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(gates.entry(shard).or_insert_with(|| {
            Arc::new(ShardGate::new(
                Arc::clone(&self.closed),
                Arc::clone(&self.offline),
                self.owner,
            ))
        }))
    }
}

/// The live routing table and the nodes behind it.
#[derive(Debug)]
pub struct Router {
    /// The current epoch's table; replaced whole.
    table: ArcSwap<RoutingTable>,
    /// Every node's lanes, shared across epochs.
    pool: NodePool,
    /// Replica links and mirroring settings.
    mirror: Mirror,
    /// Shard gates.
    gates: Gates,
    /// The tables still held, for the epoch barrier.
    live: Arc<LiveTables>,
    /// Its number, which its one writer carries.
    id: RouterId,
    /// Bumped by each [`Router::install`], for who follows the masters (the tracking
    /// connections of client-side caching).
    installs: watch::Sender<u64>,
}

impl Router {
    /// A router serving `topology`, and the one [`TopologyWriter`] that can change it (for
    /// the controller).
    #[must_use]
    pub(crate) fn new(
        topology: Topology,
        pool: NodePool,
        mirror: Mirror,
    ) -> (Self, TopologyWriter) {
        let id = RouterId::next();
        let pool = pool.owned_by(id);
        let gates = Gates::new(id);
        let live = Arc::new(LiveTables::default());
        let table = RoutingTable::build(Arc::new(topology), &pool, &mirror, &gates).tracked(&live);
        let router = Self {
            table: ArcSwap::from_pointee(table),
            pool,
            mirror,
            gates,
            live,
            id,
            installs: watch::Sender::new(0),
        };
        (router, TopologyWriter::mint(id))
    }

    /// Replica links and mirroring settings.
    #[must_use]
    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    /// The node pool.
    #[must_use]
    pub fn pool(&self) -> &NodePool {
        &self.pool
    }

    /// The gate of `shard`.
    #[must_use]
    pub fn gate(&self, shard: ShardId) -> Arc<ShardGate> {
        self.gates.of(shard)
    }

    /// Stops (`true`) or resumes (`false`) serving as a whole: while offline every shard's
    /// gate is `Down` and answers `-CLUSTERDOWN` saying the proxy lost its etcd session. Only
    /// the holder of the writer (the controller) does this; resuming opens every gate, and
    /// the controller's next round sets each from its master's health.
    pub fn set_offline(&self, writer: &TopologyWriter, offline: bool) {
        writer.check(self.id);
        self.gates.offline.store(offline, Ordering::Release);
        let gates: Vec<Arc<ShardGate>> = self
            .gates
            .gates
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        let state = if offline {
            GateState::Down
        } else {
            GateState::Open
        };
        for gate in gates {
            gate.set(writer, state);
        }
    }

    /// Whether the proxy serves nothing now (see [`Router::set_offline`]).
    #[must_use]
    pub fn is_offline(&self) -> bool {
        self.gates.offline.load(Ordering::Acquire)
    }

    /// The current table. Hold it only while routing by it (a batch of requests, until each
    /// is handed to its lane) or reading it: a table held across a wait holds up the epoch
    /// barrier ([`Router::epoch_barrier`]) of the next topology change. To keep the topology,
    /// keep `Arc::clone(table.topology())`.
    #[must_use]
    pub fn load(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Publishes the table for a new topology epoch; connections to nodes that left close once
    /// their last request is answered. Only the holder of the writer (the controller) does.
    pub fn install(&self, writer: &TopologyWriter, topology: Topology) {
        writer.check(self.id);
        let table = RoutingTable::build(Arc::new(topology), &self.pool, &self.mirror, &self.gates)
            .tracked(&self.live);
        let keep: Vec<_> = table.topology.nodes().collect();
        self.pool.retain(&keep);
        self.table.store(Arc::new(table));
        self.installs.send_modify(|n| *n += 1);
    }

    /// Changes each time a new table is installed.
    #[must_use]
    pub fn watch_installs(&self) -> watch::Receiver<u64> {
        self.installs.subscribe()
    }

    /// The epoch barrier: waits until no table older than the current one is held by anyone,
    /// so no request is still being routed by an earlier epoch (a session holds the table
    /// only while it dispatches one batch, until each request is handed to its lane). Returns
    /// whether that happened within `timeout`. Woken by each table's drop; no polling.
    pub async fn epoch_barrier(&self, timeout: Duration) -> bool {
        let current = self.table.load().generation();
        let old_gone = async {
            loop {
                let dropped = self.live.dropped.notified();
                tokio::pin!(dropped);
                // Registered before the check, so a drop between the two is not missed.
                dropped.as_mut().enable();
                if self.live.oldest().is_none_or(|oldest| oldest >= current) {
                    return;
                }
                dropped.await;
            }
        };
        tokio::time::timeout(timeout, old_gone).await.is_ok()
    }
}

/// Sends `bytes` to `route`'s master on the lane of `slot`; with `effect` (a write), the
/// replicas get the write once the master answered (proxy mirroring), or its reply waits for
/// the shard's in-sync replicas' acknowledgement (Redis replication, `sync`). Here, below the session and the controller, because
/// both send through it (client requests, and the migration's key moves).
#[allow(clippy::too_many_arguments)]
pub(crate) fn send_master(
    route: &ShardRoute,
    slot: u16,
    bytes: Bytes,
    dest: Dest,
    protocol: Protocol,
    effect: Option<Effect>,
    replies: u32,
    db: u16,
) {
    send_master_as(
        route,
        slot,
        bytes,
        dest,
        protocol,
        effect,
        replies,
        BackendUser::Client,
        db,
    );
}

/// [`send_master`] run as the backend `user` (on the master and, mirrored, on the replicas),
/// in database `db`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn send_master_as(
    route: &ShardRoute,
    slot: u16,
    bytes: Bytes,
    dest: Dest,
    protocol: Protocol,
    effect: Option<Effect>,
    replies: u32,
    user: BackendUser,
    db: u16,
) {
    let lane = usize::from(slot) % route.master.lane_count();
    let acks = match &effect {
        Some(effect) if *effect != Effect::Skip => route.wait_for(),
        _ => 0,
    };
    let mirror = match effect {
        Some(effect) if !route.mirror.is_empty() && effect != Effect::Skip => Some(
            Job::new(
                Arc::clone(&route.mirror),
                effect,
                bytes.clone(),
                protocol,
                lane,
            )
            .as_user(user)
            .in_db(db) as Box<dyn AfterMaster>,
        ),
        _ => None,
    };
    route.master.lane_at(lane).submit(LaneRequest {
        bytes,
        dest,
        protocol,
        replies,
        mirror,
        via: None,
        user,
        acks,
        db,
    });
}

/// Sends a `PING` through every lane of `route`'s master and waits for the answers: every
/// request sent to the master before it has then run. With `mirrored`, each PING also goes
/// through the replicas' lanes and the wait includes them (whatever the mode), so every write
/// mirrored before it has been applied by each replica still active. Returns whether every
/// answer came within `timeout`. Here with [`send_master`], below the session and the
/// controller that both wait on it.
pub async fn barrier(route: &ShardRoute, mirrored: bool, timeout: Duration) -> bool {
    let mut waits = Vec::with_capacity(route.master.lane_count());
    for lane in 0..route.master.lane_count() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let bytes = Bytes::from_static(crate::mirror::PING);
        let mirror = (mirrored && !route.mirror.is_empty()).then(|| {
            Job::new(
                Arc::clone(&route.mirror),
                Effect::Same,
                bytes.clone(),
                Protocol::Resp2,
                lane,
            )
            .waiting() as Box<dyn AfterMaster>
        });
        route.master.lane_at(lane).submit(LaneRequest {
            bytes,
            dest: Dest::Signal(tx),
            protocol: Protocol::Resp2,
            replies: 1,
            mirror,
            via: None,
            user: BackendUser::Client,
            acks: 0,
            db: 0,
        });
        waits.push(rx);
    }
    let all = async {
        let mut ok = true;
        for rx in waits {
            ok &= matches!(rx.await, Ok(reply) if reply.as_ref() == b"+PONG\r\n");
        }
        ok
    };
    tokio::time::timeout(timeout, all).await.unwrap_or(false)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{GateState, Gates, RouterId, TopologyWriter};
    use futures_util::FutureExt;
    use redshard_config::ShardId;
    use redshard_metrics::names::gate_state;
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    /// A router serving one shard whose master (port 1) is never contacted; other modules'
    /// tests build on it too.
    pub(crate) fn router() -> (super::Router, TopologyWriter) {
        router_with_replicas("")
    }

    /// [`router`], the shard with the replicas `replicas` (TOML strings, comma-separated).
    fn router_with_replicas(replicas: &str) -> (super::Router, TopologyWriter) {
        let config = redshard_config::Config::from_toml_str(
            &format!("[[shard]]\nname = \"s1\"\nmaster = \"127.0.0.1:1\"\nreplicas = [{replicas}]\nslots = [\"0-16383\"]\n"),
            "test",
        )
        .unwrap();
        let pool = crate::backend::NodePool::new(crate::backend::LaneConfig::from_config(
            &config.backend,
            128,
            None,
        ));
        let (events, _control) = crate::events::channel();
        let mirror = crate::mirror::Mirror::new(
            config.mirror.clone(),
            config.replication.ack,
            config.replication.mode,
            events,
        );
        super::Router::new(
            redshard_config::Topology::from_config(&config),
            pool,
            mirror,
        )
    }

    #[tokio::test]
    async fn a_write_waits_for_each_in_sync_or_streaming_replica_once() {
        let (router, writer) = router_with_replicas("\"127.0.0.1:2\", \"127.0.0.1:3\"");
        let addr = |port: u16| -> redshard_config::NodeAddr {
            format!("127.0.0.1:{port}").parse().unwrap()
        };
        let stream = |listed: &[u16], others: u32| {
            let master = router.load().shards()[0].master.clone();
            let listed = listed.iter().map(|&p| addr(p)).collect();
            master.set_streaming(&writer, crate::backend::Streaming { listed, others });
        };
        let waits = || router.load().shards()[0].wait_for();
        // Both in sync (Redis replication, sync acknowledgement: the defaults).
        assert_eq!(waits(), 2);
        stream(&[2, 3], 0);
        assert_eq!(
            waits(),
            2,
            "an in-sync replica that streams is counted once"
        );
        stream(&[2, 3], 1);
        assert_eq!(waits(), 3, "and one attached by hand besides");
        let mark = |state| {
            let current = (**router.load().topology()).clone();
            let change = redshard_config::TopologyChange::SetReplicaState {
                shard: ShardId(0),
                addr: addr(3),
                state,
            };
            router.install(&writer, current.apply(&change).unwrap());
        };
        // Replica 3 recorded stale while it streams: still waited for.
        mark(redshard_config::ReplicaState::Stale);
        assert_eq!(waits(), 3);
        stream(&[2], 1);
        assert_eq!(waits(), 2, "no longer once it stops streaming");
        // Back in sync while the last look saw it stream: not waited for twice.
        stream(&[2, 3], 0);
        assert_eq!(waits(), 2);
        mark(redshard_config::ReplicaState::InSync);
        assert_eq!(waits(), 2);
    }

    #[tokio::test]
    async fn a_writer_changes_only_the_router_it_was_minted_for() {
        let (first, first_writer) = router();
        let (second, second_writer) = router();
        let topology = (**first.load().topology()).clone();
        let epoch = topology.epoch;
        let refused = |f: &mut dyn FnMut()| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_err()
        };
        assert!(refused(
            &mut || first.install(&second_writer, topology.clone())
        ));
        assert!(refused(&mut || {
            first.gate(ShardId(1)).set(&second_writer, GateState::Down);
        }));
        assert!(refused(&mut || first.set_offline(&second_writer, true)));
        let master = first.load().shards()[0].master.clone();
        assert!(refused(&mut || master.fence(&second_writer)));
        assert!(!master.is_fenced());
        assert_eq!(first.gate(ShardId(1)).state(), GateState::Open);
        assert_eq!(first.load().topology().epoch, epoch);
        // Each router's own writer works.
        first.install(&first_writer, topology.clone());
        first.gate(ShardId(1)).set(&first_writer, GateState::Paused);
        second
            .gate(ShardId(1))
            .set(&second_writer, GateState::Paused);
        master.fence(&first_writer);
        assert!(master.is_fenced());
    }

    /// Whether the barrier is through at once (`None`: it waits).
    fn barrier_now(router: &super::Router) -> Option<bool> {
        router
            .epoch_barrier(Duration::from_secs(3600))
            .now_or_never()
    }

    #[tokio::test]
    async fn epoch_barrier_waits_for_the_old_table() {
        let (router, writer) = router();
        let topology = (**router.load().topology()).clone();
        assert_eq!(
            barrier_now(&router),
            Some(true),
            "one table: nothing to wait for"
        );
        // A session in the middle of a batch routes by the table it loaded.
        let held = router.load();
        router.install(&writer, topology.clone());
        assert_eq!(
            barrier_now(&router),
            None,
            "a held old table keeps the barrier waiting"
        );
        let router = std::sync::Arc::new(router);
        let waiting = tokio::spawn({
            let router = std::sync::Arc::clone(&router);
            async move { router.epoch_barrier(Duration::from_secs(3600)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(held);
        assert!(
            waiting.await.unwrap(),
            "dropping the old table releases the barrier"
        );
        // Two changes in a row: a table two epochs old, still held, counts too.
        let older = router.load();
        router.install(&writer, topology.clone());
        router.install(&writer, topology);
        assert_eq!(barrier_now(&router), None);
        drop(older);
        assert_eq!(barrier_now(&router), Some(true));
        // Holding the current table does not hold the barrier.
        let _current = router.load();
        assert_eq!(barrier_now(&router), Some(true));
    }

    #[test]
    fn gates_count_the_closed_ones() {
        let id = RouterId::next();
        let writer = TopologyWriter::for_tests(id);
        let gates = Gates::new(id);
        let (a, b) = (gates.of(ShardId(1)), gates.of(ShardId(2)));
        a.set(&writer, GateState::Paused);
        b.set(&writer, GateState::Down);
        a.set(&writer, GateState::Down);
        assert_eq!(gates.closed.load(Ordering::Acquire), 2);
        a.set(&writer, GateState::Open);
        b.set(&writer, GateState::Open);
        assert_eq!(gates.closed.load(Ordering::Acquire), 0);
        assert_eq!(a.state(), GateState::Open);
    }

    #[test]
    fn gate_labels_cover_every_state() {
        let gate = [GateState::Open, GateState::Paused, GateState::Down].map(GateState::label);
        assert_eq!(gate, gate_state::ALL);
    }
}
