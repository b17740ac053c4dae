//! The live cluster model: shards, their nodes, the owner of every slot, and an epoch.
//!
//! A [`Topology`] is immutable once built. Every change (an admin command, a failover, a step
//! of a slot migration) is a [`TopologyChange`] given to [`Topology::apply`], which checks it
//! and returns a new topology with `epoch + 1`; the proxy then persists and publishes it. One
//! request uses one topology (one epoch) for its whole life.
//!
//! Shards are addressed by [`ShardId`], which stays the same for the life of the shard:
//! removing a shard does not renumber the others. `shards` is kept sorted by id and looked up
//! by binary search. A new shard takes the id after the largest in use, so an id is reused
//! only if the shard that had it was the newest one and was removed.

mod apply;
mod error;
pub(crate) mod form;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use apply::TopologyChange;
pub use error::TopologyError;

use crate::addr::NodeAddr;
use crate::config::Config;
use crate::ha::ReplicationMode;
use crate::rules::KeyRules;
use crate::slot::{compact, Slot, SlotRange, SLOT_COUNT};
use crate::validate::check_shard_name;

/// Identifies a shard for its whole life; shown to operators as its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ShardId(pub u16);

impl ShardId {
    /// The id's number.
    #[must_use]
    pub const fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Whether a replica holds every write its master acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReplicaState {
    /// Receives every write before the client's reply is released; may be promoted.
    InSync,
    /// Being filled by a full sync; gets no traffic and is never promoted.
    Syncing,
    /// Missed or diverged on a write (or is a fenced old master); gets no traffic and is never
    /// promoted until resynchronised.
    Stale,
}

impl fmt::Display for ReplicaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplicaState::InSync => "in-sync",
            ReplicaState::Syncing => "syncing",
            ReplicaState::Stale => "stale",
        })
    }
}

/// A replica node of a shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    /// Where the replica listens.
    pub addr: NodeAddr,
    /// Whether it may receive mirrored writes and be promoted.
    pub state: ReplicaState,
}

/// A master and its replicas, serving some slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Stable id; slot states refer to shards by it.
    pub id: ShardId,
    /// Unique name operators use.
    pub name: String,
    /// The node every command of the shard's slots goes to.
    pub master: NodeAddr,
    /// Nodes the proxy mirrors writes to, in the order they were added.
    pub replicas: Vec<Replica>,
}

impl Shard {
    /// The replica at `addr`, if any.
    #[must_use]
    pub fn replica(&self, addr: &NodeAddr) -> Option<&Replica> {
        self.replicas.iter().find(|r| &r.addr == addr)
    }

    /// The replicas that receive mirrored writes and may be promoted.
    pub fn in_sync_replicas(&self) -> impl Iterator<Item = &Replica> + '_ {
        self.replicas
            .iter()
            .filter(|r| r.state == ReplicaState::InSync)
    }
}

/// The role of a node in its shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeRole {
    /// The shard's master.
    Master,
    /// One of the shard's replicas.
    Replica,
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeRole::Master => "master",
            NodeRole::Replica => "replica",
        })
    }
}

/// Who serves a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlotState {
    /// The shard has the slot's keys and serves it.
    Owned(ShardId),
    /// The slot's keys are moving from `from` to `to`; `to` serves the slot, after moving a
    /// key it still finds on `from`.
    Migrating {
        /// The shard the keys come from.
        from: ShardId,
        /// The shard the keys go to, which serves the slot.
        to: ShardId,
    },
}

impl SlotState {
    /// The shard commands on this slot go to: the owner, or the target of a migration.
    #[must_use]
    #[inline]
    pub const fn serving(self) -> ShardId {
        match self {
            SlotState::Owned(id) | SlotState::Migrating { to: id, .. } => id,
        }
    }

    /// Whether `shard` owns the slot or takes part in its migration.
    #[must_use]
    pub fn involves(self, shard: ShardId) -> bool {
        match self {
            SlotState::Owned(id) => id == shard,
            SlotState::Migrating { from, to } => from == shard || to == shard,
        }
    }
}

/// Slots moving between two shards, compacted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The shard the keys come from.
    pub from: ShardId,
    /// The shard the keys go to.
    pub to: ShardId,
    /// The migrating slots, compacted into ranges.
    pub slots: Vec<SlotRange>,
}

/// The cluster at one epoch. See the module docs.
///
/// Invariants (checked by [`Topology::check`], kept by [`Topology::apply`]): `slots` has
/// `SLOT_COUNT` entries, each naming existing shards; `shards` is sorted by strictly increasing
/// id; shard names are valid and unique; every node address appears once.
#[derive(Clone, PartialEq, Eq)]
pub struct Topology {
    /// Version of the topology; each change adds one, and the higher epoch wins.
    pub epoch: u64,
    /// The shards, sorted by id.
    pub shards: Vec<Shard>,
    /// The state of every slot, indexed by slot number.
    pub slots: Box<[SlotState]>,
    /// Migrations waiting to begin, in the order they run (a rebalance queues several). They
    /// are part of the topology so that the whole plan is persisted with it and a restart
    /// resumes every queued move, not only the one whose slots were migrating.
    pub queued: Vec<Migration>,
    /// The key routing rules every key's slot is computed with ([`Topology::slot_of`]). Part
    /// of the topology because a key's slot must not change while it is stored: they are
    /// persisted with it and every epoch carries them on.
    pub rules: KeyRules,
    /// The proxy's users as `ACL LIST` lines (passwords as SHA-256 hashes), once a client
    /// changed them (ACL SETUSER / DELUSER, CONFIG SET requirepass); `None` until then, when
    /// the configuration's `password` and `[[user]]` entries are the users. Persisted with
    /// the topology so that a restarted proxy, and every proxy of a fleet, has the same
    /// users; every epoch carries them on. The data plane checks and applies them.
    pub users: Option<Vec<String>>,
}

impl Topology {
    /// The initial topology described by a validated configuration: epoch 1, shard ids in
    /// file order from 0, every replica in sync.
    ///
    /// # Panics
    ///
    /// If `config` breaks what [`Config::from_toml_str`] and [`Config::load`] check (slots
    /// assigned exactly once, unique names and addresses). A `Config` built by hand can be
    /// turned into a topology with [`Topology::try_from_config`] instead.
    #[must_use]
    pub fn from_config(config: &Config) -> Topology {
        match Topology::try_from_config(config) {
            Ok(topology) => topology,
            // Documented above: loading a Config validates exactly what this checks.
            Err(e) => panic!("Topology::from_config on an unvalidated config: {e}"),
        }
    }

    /// The topology a proxy starts from when none was persisted (or the configuration's is
    /// newer): [`Topology::from_config`], except that under Redis replication (`[replication]
    /// mode = "redis"`) every replica starts `syncing`, as one added later does. Nothing has
    /// shown yet that a node the file lists as a replica follows its master and holds its
    /// data: the controller's checks make it follow and record it in sync once it has caught
    /// up (within a few hundred milliseconds when it already replicates that master). Until
    /// then no failover promotes it, and no write waits for it before a check has seen it
    /// stream from the master; a start is not reported as replicas going stale. Under the
    /// proxy's mirroring the file's word is taken: the replicas start in sync.
    ///
    /// # Panics
    ///
    /// As [`Topology::from_config`].
    #[must_use]
    pub fn first_start(config: &Config) -> Topology {
        let mut topology = Topology::from_config(config);
        match config.replication.mode {
            ReplicationMode::Redis => {
                let replicas = topology.shards.iter_mut().flat_map(|s| &mut s.replicas);
                for replica in replicas {
                    replica.state = ReplicaState::Syncing;
                }
            }
            ReplicationMode::Proxy => {}
        }
        topology
    }

    /// As [`Topology::from_config`], for a configuration that may not have been validated.
    ///
    /// # Errors
    ///
    /// [`TopologyError::Inconsistent`] naming the first problem (unassigned or doubly
    /// assigned slot, duplicate name or address), [`TopologyError::TooManyShards`] past 65536
    /// shards.
    pub fn try_from_config(config: &Config) -> Result<Topology, TopologyError> {
        let mut shards = Vec::with_capacity(config.shards.len());
        let mut slots: Vec<Option<SlotState>> = vec![None; SLOT_COUNT];
        for (i, shard) in config.shards.iter().enumerate() {
            let id = ShardId(u16::try_from(i).map_err(|_| TopologyError::TooManyShards)?);
            for range in &shard.slots {
                range
                    .check()
                    .map_err(|_| TopologyError::InvalidSlotRange(*range))?;
                for slot in range.slots() {
                    if slots[slot.index()].replace(SlotState::Owned(id)).is_some() {
                        return Err(TopologyError::Inconsistent(format!(
                            "slot {slot} is assigned twice"
                        )));
                    }
                }
            }
            shards.push(Shard {
                id,
                name: shard.name.clone(),
                master: shard.master.clone(),
                replicas: shard
                    .replicas
                    .iter()
                    .map(|addr| Replica {
                        addr: addr.clone(),
                        state: ReplicaState::InSync,
                    })
                    .collect(),
            });
        }
        Topology::assemble(
            1,
            shards,
            slots,
            Vec::new(),
            KeyRules::new(config.rules.clone()),
        )
    }

    /// The slot of `key` under this topology's routing rules (Redis Cluster's for keys no rule
    /// matches). Every key of every request is routed by it.
    #[must_use]
    #[inline]
    pub fn slot_of(&self, key: &[u8]) -> Slot {
        self.rules.slot_of(key)
    }

    /// Builds and checks a topology from parts; `None` slots are unassigned (an error).
    fn assemble(
        epoch: u64,
        shards: Vec<Shard>,
        slots: Vec<Option<SlotState>>,
        queued: Vec<Migration>,
        rules: KeyRules,
    ) -> Result<Topology, TopologyError> {
        let mut table = Vec::with_capacity(SLOT_COUNT);
        for (n, state) in slots.into_iter().enumerate() {
            let state = state.ok_or_else(|| {
                TopologyError::Inconsistent(format!("slot {n} is not assigned to any shard"))
            })?;
            table.push(state);
        }
        let topology = Topology {
            epoch,
            shards,
            slots: table.into_boxed_slice(),
            queued,
            rules,
            users: None,
        };
        topology.check()?;
        Ok(topology)
    }

    /// Checks the invariants listed on [`Topology`]; for topologies built or read from
    /// outside this crate.
    ///
    /// # Errors
    ///
    /// [`TopologyError::Inconsistent`] (or [`TopologyError::InvalidShardName`]) naming the
    /// first broken invariant.
    pub fn check(&self) -> Result<(), TopologyError> {
        let bad = |message: String| Err(TopologyError::Inconsistent(message));
        if self.slots.len() != SLOT_COUNT {
            return bad(format!(
                "{} slot states instead of {SLOT_COUNT}",
                self.slots.len()
            ));
        }
        for i in 0..self.rules.rules().len() {
            if let Some(problem) = crate::rules::problem(self.rules.rules(), i) {
                return bad(format!("rule {}: {problem}", i + 1));
            }
        }
        let mut names = std::collections::HashSet::new();
        let mut nodes = std::collections::HashSet::new();
        for (i, shard) in self.shards.iter().enumerate() {
            if i > 0 && self.shards[i - 1].id >= shard.id {
                return bad(format!(
                    "shard id {} is duplicated or out of order",
                    shard.id
                ));
            }
            check_shard_name(&shard.name).map_err(|reason| TopologyError::InvalidShardName {
                name: shard.name.clone(),
                reason,
            })?;
            if !names.insert(shard.name.as_str()) {
                return Err(TopologyError::DuplicateShardName(shard.name.clone()));
            }
            for addr in std::iter::once(&shard.master).chain(shard.replicas.iter().map(|r| &r.addr))
            {
                if !nodes.insert(addr) {
                    return bad(format!("node {addr} appears twice"));
                }
            }
        }
        for (n, state) in self.slots.iter().enumerate() {
            let ids = match *state {
                SlotState::Owned(id) => [id, id],
                SlotState::Migrating { from, to } if from == to => {
                    return bad(format!("slot {n} migrates from shard {from} to itself"));
                }
                SlotState::Migrating { from, to } => [from, to],
            };
            if let Some(id) = ids.into_iter().find(|&id| self.shard(id).is_none()) {
                return bad(format!(
                    "slot {n} refers to shard {id}, which does not exist"
                ));
            }
        }
        for m in &self.queued {
            if m.from == m.to {
                return bad(format!(
                    "a queued migration moves slots from shard {} to itself",
                    m.from
                ));
            }
            if let Some(id) = [m.from, m.to]
                .into_iter()
                .find(|&id| self.shard(id).is_none())
            {
                return bad(format!(
                    "a queued migration refers to shard {id}, which does not exist"
                ));
            }
            if m.slots.is_empty() {
                return bad("a queued migration names no slots".into());
            }
            if let Some(range) = m.slots.iter().find(|r| r.check().is_err()) {
                return Err(TopologyError::InvalidSlotRange(*range));
            }
        }
        Ok(())
    }

    /// The shard with this id.
    #[must_use]
    #[inline]
    pub fn shard(&self, id: ShardId) -> Option<&Shard> {
        self.shards
            .binary_search_by_key(&id, |s| s.id)
            .ok()
            .map(|i| &self.shards[i])
    }

    /// The shard with this name.
    #[must_use]
    pub fn shard_by_name(&self, name: &str) -> Option<&Shard> {
        self.shards.iter().find(|s| s.name == name)
    }

    /// The state of `slot`.
    ///
    /// # Panics
    ///
    /// If `slots` was replaced by a table shorter than `SLOT_COUNT` (see [`Topology::check`]).
    #[must_use]
    #[inline]
    pub fn slot_state(&self, slot: Slot) -> SlotState {
        self.slots[slot.index()]
    }

    /// The shard that serves `slot` (the target, while it migrates). On every request's path.
    ///
    /// # Panics
    ///
    /// If `slots` was replaced by a table shorter than `SLOT_COUNT` (see [`Topology::check`]).
    #[must_use]
    #[inline]
    pub fn serving_shard(&self, slot: Slot) -> ShardId {
        self.slots[slot.index()].serving()
    }

    /// The slots `shard` owns (not counting migrating ones, see [`Topology::migrations`]),
    /// compacted into ranges.
    #[must_use]
    pub fn slots_of(&self, shard: ShardId) -> Vec<SlotRange> {
        compact(
            self.all_slots()
                .filter(|&slot| self.slots[slot.index()] == SlotState::Owned(shard)),
        )
    }

    /// The migrations in progress, one entry per `(from, to)` pair, ordered by first slot.
    #[must_use]
    pub fn migrations(&self) -> Vec<Migration> {
        let mut migrations: Vec<Migration> = Vec::new();
        for slot in self.all_slots() {
            let SlotState::Migrating { from, to } = self.slots[slot.index()] else {
                continue;
            };
            let range = SlotRange::single(slot);
            match migrations.iter_mut().find(|m| m.from == from && m.to == to) {
                Some(m) => match m.slots.last_mut() {
                    Some(last) if last.end + 1 == slot.get() => last.end = slot.get(),
                    _ => m.slots.push(range),
                },
                None => migrations.push(Migration {
                    from,
                    to,
                    slots: vec![range],
                }),
            }
        }
        migrations
    }

    /// Every node address: each shard's master, then its replicas.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeAddr> + '_ {
        self.shards
            .iter()
            .flat_map(|s| std::iter::once(&s.master).chain(s.replicas.iter().map(|r| &r.addr)))
    }

    /// The shard and role of the node at `addr`.
    #[must_use]
    pub fn find_node(&self, addr: &NodeAddr) -> Option<(&Shard, NodeRole)> {
        self.shards.iter().find_map(|s| {
            if &s.master == addr {
                Some((s, NodeRole::Master))
            } else {
                s.replica(addr).map(|_| (s, NodeRole::Replica))
            }
        })
    }

    fn all_slots(&self) -> impl Iterator<Item = Slot> {
        SlotRange::all().slots()
    }

    /// The shard's name for messages; `#id` if it does not exist.
    fn name_of(&self, id: ShardId) -> String {
        self.shard(id)
            .map_or_else(|| format!("#{id}"), |s| s.name.clone())
    }
}

impl fmt::Debug for Topology {
    /// Slots as ranges, not 16384 entries, so a topology can be logged.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges = |ranges: &[SlotRange]| {
            ranges
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let owned: Vec<String> = self
            .shards
            .iter()
            .map(|s| format!("{}: {}", s.id, ranges(&self.slots_of(s.id))))
            .collect();
        let migrating: Vec<String> = self
            .migrations()
            .iter()
            .map(|m| format!("{} -> {}: {}", m.from, m.to, ranges(&m.slots)))
            .collect();
        let queued: Vec<String> = self
            .queued
            .iter()
            .map(|m| format!("{} -> {}: {}", m.from, m.to, ranges(&m.slots)))
            .collect();
        f.debug_struct("Topology")
            .field("epoch", &self.epoch)
            .field("shards", &self.shards)
            .field("owned", &owned)
            .field("migrating", &migrating)
            .field("queued", &queued)
            .field("rules", &self.rules)
            .finish()
    }
}

#[cfg(test)]
mod tests;
