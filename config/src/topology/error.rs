//! Why a topology change cannot be applied.

use crate::addr::NodeAddr;
use crate::slot::SlotRange;

use super::{NodeRole, ReplicaState, ShardId};

/// A topology change that cannot be applied; the topology is left as it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    /// No shard has this id.
    #[error("shard {0} does not exist")]
    UnknownShard(ShardId),
    /// A shard name that is empty, too long or has characters other than `A-Za-z0-9._-`.
    #[error("shard name {name:?} is invalid: {reason}")]
    InvalidShardName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Another shard already has this name.
    #[error("a shard named {0:?} already exists")]
    DuplicateShardName(String),
    /// The address is already a node of the topology.
    #[error("node {addr} is already the {role} of shard {shard:?}")]
    AddressInUse {
        /// The address given.
        addr: NodeAddr,
        /// Name of the shard that has it.
        shard: String,
        /// Its role there.
        role: NodeRole,
    },
    /// Every shard id is taken.
    #[error("no shard id is free: a topology holds at most 65536 shards")]
    TooManyShards,
    /// The address is not a replica of the shard.
    #[error("node {addr} is not a replica of shard {shard:?}")]
    NotAReplica {
        /// Name of the shard.
        shard: String,
        /// The address given.
        addr: NodeAddr,
    },
    /// Removing a shard that still has replicas.
    #[error(
        "shard {shard:?} still has {count} replica(s): remove the replica first, \
         hand the slots back, then remove the master"
    )]
    ShardHasReplicas {
        /// Name of the shard.
        shard: String,
        /// How many replicas it has.
        count: usize,
    },
    /// Removing a shard that still serves slots or is part of a migration.
    #[error(
        "shard {shard:?} still owns or migrates slots {ranges}: remove the replica first, \
         hand the slots back, then remove the master"
    )]
    ShardHasSlots {
        /// Name of the shard.
        shard: String,
        /// The slots concerned, compacted, as `0-99, 200`.
        ranges: String,
    },
    /// Promoting a replica that may lack acknowledged writes.
    #[error(
        "replica {addr} of shard {shard:?} is {state} and cannot be promoted; to force a \
         failover (accepting lost writes) mark it in-sync first"
    )]
    ReplicaNotInSync {
        /// Name of the shard.
        shard: String,
        /// The replica.
        addr: NodeAddr,
        /// Its state.
        state: ReplicaState,
    },
    /// A slot range with a bound past 16383 or `start > end`.
    #[error("invalid slot range {0}: slots are numbered 0-16383 and a range is start-end")]
    InvalidSlotRange(SlotRange),
    /// A migration step that names no slots.
    #[error("no slots given")]
    NoSlots,
    /// The ranges of one change overlap.
    #[error("slot {0} is named twice in the change")]
    SlotNamedTwice(u16),
    /// Beginning a migration of a slot that is already migrating.
    #[error("slot {slot} is already migrating from shard {from:?} to shard {to:?}")]
    SlotMigrating {
        /// The slot.
        slot: u16,
        /// Name of the source shard.
        from: String,
        /// Name of the target shard.
        to: String,
    },
    /// Beginning a migration of a slot to the shard that already owns it.
    #[error("slot {slot} is already owned by shard {shard:?}")]
    SlotAlreadyOwned {
        /// The slot.
        slot: u16,
        /// Name of the shard.
        shard: String,
    },
    /// Finishing or cancelling the migration of a slot that is not migrating.
    #[error("slot {slot} is not migrating (it is owned by shard {owner:?})")]
    SlotNotMigrating {
        /// The slot.
        slot: u16,
        /// Name of its owner.
        owner: String,
    },
    /// A queued migration whose slot is now owned by another shard than its source.
    #[error("slot {slot} is not owned by shard {shard:?} (it is owned by {owner:?})")]
    SlotNotOwnedBy {
        /// The slot.
        slot: u16,
        /// Name of the shard that should own it.
        shard: String,
        /// Name of the shard that owns it.
        owner: String,
    },
    /// Queuing a migration of a slot that another queued migration already moves.
    #[error("slot {0} is already queued to move")]
    SlotQueued(u16),
    /// A migration from a shard to itself.
    #[error("a migration from shard {0:?} to itself")]
    MigrationToItself(String),
    /// Dropping a queued migration that is not queued.
    #[error("no queued migration of {0}")]
    NotQueued(String),
    /// Removing a shard that a queued migration names.
    #[error(
        "shard {0:?} is named by queued migrations: wait until they ran (MIGRATIONS) or \
         cancel them (MIGRATION CANCEL)"
    )]
    ShardHasQueuedMigrations(String),
    /// The epoch counter is exhausted.
    #[error("the topology epoch cannot grow past {0}")]
    EpochExhausted(u64),
    /// A topology (from a file or built by hand) that breaks an invariant.
    #[error("inconsistent topology: {0}")]
    Inconsistent(String),
}
