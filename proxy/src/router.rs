//! The routing table: which master serves each slot, swapped atomically as the topology moves.
//!
//! A [`RoutingTable`] is built from one [`Topology`] epoch and never changes; a new epoch builds
//! a new table and [`Router::install`] publishes it with one `ArcSwap::store`. A session loads
//! the table once per batch of requests, so every request sees exactly one epoch.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use redshard_config::{ShardId, Slot, Topology, SLOT_COUNT};

use crate::backend::{Node, NodePool};

/// A shard as the data path sees it: where its writes go.
#[derive(Debug)]
pub struct ShardRoute {
    /// The topology's id of the shard.
    pub id: ShardId,
    /// The operator's name for the shard, for logs and INFO.
    pub name: String,
    /// The shard's master and its lanes.
    pub master: Arc<Node>,
}

/// One epoch's routing: immutable once built.
#[derive(Debug)]
pub struct RoutingTable {
    /// The topology this table serves; its epoch is the table's epoch.
    topology: Arc<Topology>,
    /// The serving shard of each slot, as an index into `shards`.
    slot_to_shard: Box<[u16]>,
    /// Every shard, in topology order.
    shards: Vec<ShardRoute>,
}

impl RoutingTable {
    /// Builds the table for `topology`, taking the nodes' lanes from `pool`.
    #[must_use]
    pub fn build(topology: Arc<Topology>, pool: &NodePool) -> Self {
        let shards: Vec<ShardRoute> = topology
            .shards
            .iter()
            .map(|shard| ShardRoute {
                id: shard.id,
                name: shard.name.clone(),
                master: pool.node(&shard.master),
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
        Self {
            topology,
            slot_to_shard,
            shards,
        }
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

/// The live routing table and the nodes behind it.
#[derive(Debug)]
pub struct Router {
    /// The current epoch's table; replaced whole.
    table: ArcSwap<RoutingTable>,
    /// Every node's lanes, shared across epochs.
    pool: NodePool,
}

impl Router {
    /// A router serving `topology`.
    #[must_use]
    pub fn new(topology: Topology, pool: NodePool) -> Self {
        let table = RoutingTable::build(Arc::new(topology), &pool);
        Self {
            table: ArcSwap::from_pointee(table),
            pool,
        }
    }

    /// The current table.
    #[must_use]
    pub fn load(&self) -> Arc<RoutingTable> {
        self.table.load_full()
    }

    /// Publishes the table for a new topology epoch; connections to nodes that left close once
    /// their last request is answered.
    pub fn install(&self, topology: Topology) {
        let table = RoutingTable::build(Arc::new(topology), &self.pool);
        let keep: Vec<_> = table.topology.nodes().collect();
        self.pool.retain(&keep);
        self.table.store(Arc::new(table));
    }
}
