//! The routing table: which master serves each slot, swapped atomically as the topology moves.
//!
//! A [`RoutingTable`] is built from one [`Topology`] epoch and never changes; a new epoch builds
//! a new table and [`Router::install`] publishes it with one `ArcSwap::store`. A session loads
//! the table once per batch of requests, so every request sees exactly one epoch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use redshard_config::{AckMode, ReplicaState, ShardId, Slot, Topology, SLOT_COUNT};
use tokio::sync::watch;

use bytes::Bytes;

use crate::backend::acl::BackendUser;
use crate::backend::{Dest, LaneRequest, Node, NodePool};
use crate::mirror::effect::Effect;
use crate::mirror::{Job, Mirror, ShardMirror};
use crate::resp::Protocol;

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
        use crate::metrics::names::gate_state;
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
}

impl ShardGate {
    fn new(closed: Arc<AtomicUsize>) -> Self {
        Self {
            state: watch::Sender::new(GateState::Open),
            closed,
        }
    }

    /// The state now.
    #[must_use]
    pub fn state(&self) -> GateState {
        *self.state.borrow()
    }

    /// Sets the state, waking waiting sessions.
    pub fn set(&self, state: GateState) {
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

/// A shard as the data path sees it: where its writes go.
#[derive(Debug)]
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
}

impl ShardRoute {
    /// The replicas known to hold every write of this shard answered before a
    /// [mirrored barrier](barrier) that completed: the in-sync replicas still mirrored to, or
    /// under Redis replication with `sync` acknowledgement every in-sync replica (each write
    /// was acknowledged by all of them before it was answered). Client `WAIT` answers this.
    #[must_use]
    pub fn acknowledging_replicas(&self) -> usize {
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

    /// The nodes a read may go to instead of the master: the in-sync replicas, without the
    /// mirrored ones that failed a write since this table was built.
    pub fn replica_nodes(&self) -> impl Iterator<Item = &Arc<Node>> {
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
        }
    }

    /// Whether some slot is migrating.
    #[must_use]
    #[inline]
    pub fn has_migrations(&self) -> bool {
        self.migrating
    }

    /// Whether `slot` is migrating.
    #[must_use]
    pub fn is_migrating(&self, slot: Slot) -> bool {
        matches!(
            self.topology.slot_state(slot),
            redshard_config::SlotState::Migrating { .. }
        )
    }

    /// Whether some shard's gate is paused or down.
    #[must_use]
    #[inline]
    pub fn any_gate_closed(&self) -> bool {
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
#[derive(Debug, Default)]
pub struct Gates {
    /// Created on first use; a shard id is never reused for another shard.
    gates: Mutex<HashMap<ShardId, Arc<ShardGate>>>,
    /// Gates not open now.
    closed: Arc<AtomicUsize>,
}

impl Gates {
    /// The gate of `shard`.
    #[must_use]
    pub fn of(&self, shard: ShardId) -> Arc<ShardGate> {
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            gates
                .entry(shard)
                .or_insert_with(|| Arc::new(ShardGate::new(Arc::clone(&self.closed)))),
        )
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
}

impl Router {
    /// A router serving `topology`.
    #[must_use]
    pub fn new(topology: Topology, pool: NodePool, mirror: Mirror) -> Self {
        let gates = Gates::default();
        let table = RoutingTable::build(Arc::new(topology), &pool, &mirror, &gates);
        Self {
            table: ArcSwap::from_pointee(table),
            pool,
            mirror,
            gates,
        }
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

    /// The current table.
    #[must_use]
    pub fn load(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Publishes the table for a new topology epoch; connections to nodes that left close once
    /// their last request is answered.
    pub fn install(&self, topology: Topology) {
        let table = RoutingTable::build(Arc::new(topology), &self.pool, &self.mirror, &self.gates);
        let keep: Vec<_> = table.topology.nodes().collect();
        self.pool.retain(&keep);
        self.table.store(Arc::new(table));
    }
}

/// Sends `bytes` to `route`'s master on the lane of `slot`; with `effect` (a write), the
/// replicas get the write once the master answered (proxy mirroring), or its reply waits for
/// the shard's in-sync replicas' acknowledgement (Redis replication, `sync`). Here, below the session and the controller, because
/// both send through it (client requests, and the migration's key moves).
pub(crate) fn send_master(
    route: &ShardRoute,
    slot: u16,
    bytes: Bytes,
    dest: Dest,
    protocol: Protocol,
    effect: Option<Effect>,
    replies: u32,
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
    );
}

/// [`send_master`] run as the backend `user` (on the master and, mirrored, on the replicas).
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
) {
    let lane = usize::from(slot) % route.master.lane_count();
    let acks = match &effect {
        Some(effect) if *effect != Effect::Skip => route.acks,
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
            .as_user(user),
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
    });
}

/// Sends a `PING` through every lane of `route`'s master and waits for the answers: every
/// request sent to the master before it has then run. With `mirrored`, each PING also goes
/// through the replicas' lanes and the wait includes them (whatever the mode), so every write
/// mirrored before it has been applied by each replica still active. Returns whether every
/// answer came within `timeout`. Here with [`send_master`], below the session and the
/// controller that both wait on it.
pub async fn barrier(route: &ShardRoute, mirrored: bool, timeout: std::time::Duration) -> bool {
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
            .waiting()
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
mod tests {
    use super::GateState;
    use crate::metrics::names::gate_state;

    #[test]
    fn gate_labels_cover_every_state() {
        let gate = [GateState::Open, GateState::Paused, GateState::Down].map(GateState::label);
        assert_eq!(gate, gate_state::ALL);
    }
}
