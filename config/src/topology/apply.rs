//! The one state machine of live topology changes: [`Topology::apply`].

use std::fmt;

use super::TopologyError;
use super::{Migration, Replica, ReplicaState, Shard, ShardId, SlotState, Topology};
use crate::addr::NodeAddr;
use crate::slot::{compact, Slot, SlotRange, SLOT_COUNT};
use crate::validate::check_shard_name;

/// A change to the live topology. Admin commands, failovers and migration steps are all
/// expressed as one of these and go through [`Topology::apply`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopologyChange {
    /// Records the proxy's users (`ACL LIST` lines, checked by the data plane).
    SetUsers {
        /// Every user, sorted by name.
        users: Vec<String>,
    },
    /// A new shard with a master and no slots (it receives slots by migration).
    AddShard {
        /// Unique name, 1-64 characters of `A-Za-z0-9._-`.
        name: String,
        /// Its master, not already a node of the topology.
        master: NodeAddr,
    },
    /// Removes a shard that has no replicas and neither owns nor migrates slots.
    RemoveShard {
        /// The shard.
        shard: ShardId,
    },
    /// Adds a replica to a shard (usually `Syncing`, until its resync finishes).
    AddReplica {
        /// The shard.
        shard: ShardId,
        /// The replica, not already a node of the topology.
        addr: NodeAddr,
        /// Its initial state.
        state: ReplicaState,
    },
    /// Removes a replica from a shard.
    RemoveReplica {
        /// The shard.
        shard: ShardId,
        /// The replica.
        addr: NodeAddr,
    },
    /// Records a replica's new state (in sync after a resync, stale after a failed write).
    SetReplicaState {
        /// The shard.
        shard: ShardId,
        /// The replica.
        addr: NodeAddr,
        /// Its new state.
        state: ReplicaState,
    },
    /// Makes an in-sync replica the master; the old master becomes a `Stale` replica in the
    /// promoted replica's place (fenced until resynchronised).
    Promote {
        /// The shard.
        shard: ShardId,
        /// The replica to promote; must be `InSync`.
        replica: NodeAddr,
    },
    /// Starts moving slots to `to`: each must be owned by a shard other than `to` and not
    /// already migrating. They become `Migrating { from: owner, to }`.
    BeginMigration {
        /// The slots to move.
        slots: Vec<SlotRange>,
        /// The shard that receives them.
        to: ShardId,
    },
    /// Completes the migration of slots: `Migrating { to, .. }` becomes `Owned(to)`.
    FinishMigration {
        /// The slots, all migrating.
        slots: Vec<SlotRange>,
    },
    /// Abandons the migration of slots: `Migrating { from, .. }` becomes `Owned(from)`.
    /// Only for slots none of whose keys moved yet: otherwise reverse them.
    CancelMigration {
        /// The slots, all migrating.
        slots: Vec<SlotRange>,
    },
    /// Turns the migration of slots around: `Migrating { from, to }` becomes
    /// `Migrating { from: to, to: from }`, so the keys already moved go back (a cancel).
    ReverseMigration {
        /// The slots, all migrating.
        slots: Vec<SlotRange>,
    },
    /// Appends migrations to [`Topology::queued`], in order. Each moves slots that its
    /// `from` owns now, none already migrating or queued, to another shard.
    QueueMigrations {
        /// The migrations, in the order they are to run.
        moves: Vec<Migration>,
    },
    /// Begins `migration`: each of its slots must still be owned by `migration.from`, and
    /// becomes `Migrating { from, to }`. The first equal entry of [`Topology::queued`], if
    /// any, leaves the queue in the same change, so a crash never loses or repeats it.
    StartMigration {
        /// The migration.
        migration: Migration,
    },
    /// Removes the first entry of [`Topology::queued`] equal to `migration` (one that can no
    /// longer run and was reported).
    DropQueuedMigration {
        /// The migration.
        migration: Migration,
    },
    /// Empties [`Topology::queued`] (a cancel).
    ClearQueuedMigrations,
}

impl fmt::Display for TopologyChange {
    /// A one-line description for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges = |slots: &[SlotRange]| join_ranges(slots);
        match self {
            TopologyChange::SetUsers { users } => write!(f, "set the {} proxy users", users.len()),
            TopologyChange::AddShard { name, master } => {
                write!(f, "add shard {name:?} with master {master}")
            }
            TopologyChange::RemoveShard { shard } => write!(f, "remove shard {shard}"),
            TopologyChange::AddReplica { shard, addr, state } => {
                write!(f, "add {state} replica {addr} to shard {shard}")
            }
            TopologyChange::RemoveReplica { shard, addr } => {
                write!(f, "remove replica {addr} from shard {shard}")
            }
            TopologyChange::SetReplicaState { shard, addr, state } => {
                write!(f, "mark replica {addr} of shard {shard} {state}")
            }
            TopologyChange::Promote { shard, replica } => {
                write!(f, "promote replica {replica} of shard {shard}")
            }
            TopologyChange::BeginMigration { slots, to } => {
                write!(f, "begin migrating slots {} to shard {to}", ranges(slots))
            }
            TopologyChange::FinishMigration { slots } => {
                write!(f, "finish migrating slots {}", ranges(slots))
            }
            TopologyChange::CancelMigration { slots } => {
                write!(f, "cancel migrating slots {}", ranges(slots))
            }
            TopologyChange::ReverseMigration { slots } => {
                write!(f, "reverse the migration of slots {}", ranges(slots))
            }
            TopologyChange::QueueMigrations { moves } => {
                write!(f, "queue {} migration(s):", moves.len())?;
                for m in moves {
                    write!(
                        f,
                        " [{} from shard {} to shard {}]",
                        ranges(&m.slots),
                        m.from,
                        m.to
                    )?;
                }
                Ok(())
            }
            TopologyChange::StartMigration { migration: m } => write!(
                f,
                "begin migrating slots {} from shard {} to shard {}",
                ranges(&m.slots),
                m.from,
                m.to
            ),
            TopologyChange::DropQueuedMigration { migration: m } => write!(
                f,
                "drop the queued migration of slots {} from shard {} to shard {}",
                ranges(&m.slots),
                m.from,
                m.to
            ),
            TopologyChange::ClearQueuedMigrations => f.write_str("drop every queued migration"),
        }
    }
}

/// `slots 0-99 from shard "s1" to shard "s2"`, for messages.
fn describe(topology: &Topology, m: &Migration) -> String {
    format!(
        "slots {} from shard {:?} to shard {:?}",
        join_ranges(&m.slots),
        topology.name_of(m.from),
        topology.name_of(m.to)
    )
}

fn join_ranges(ranges: &[SlotRange]) -> String {
    ranges
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Topology {
    /// Checks `change` against this topology and returns the topology after it, with
    /// `epoch + 1`. `self` is not modified: on error nothing has changed.
    ///
    /// # Errors
    ///
    /// A [`TopologyError`] saying why the change is refused: unknown shard or replica, a
    /// name or address already in use, a shard that still has replicas or slots, a replica
    /// that is not in sync, invalid or repeated slot ranges, slots in the wrong state for the
    /// migration step.
    pub fn apply(&self, change: &TopologyChange) -> Result<Topology, TopologyError> {
        let epoch = self
            .epoch
            .checked_add(1)
            .ok_or(TopologyError::EpochExhausted(self.epoch))?;
        let mut next = self.clone();
        next.epoch = epoch;
        match change {
            TopologyChange::SetUsers { users } => next.users = Some(users.clone()),
            TopologyChange::AddShard { name, master } => next.add_shard(name, master)?,
            TopologyChange::RemoveShard { shard } => next.remove_shard(*shard)?,
            TopologyChange::AddReplica { shard, addr, state } => {
                self.ensure_unused(addr)?;
                next.shard_mut(*shard)?.replicas.push(Replica {
                    addr: addr.clone(),
                    state: *state,
                });
            }
            TopologyChange::RemoveReplica { shard, addr } => {
                let shard = next.shard_mut(*shard)?;
                let i = replica_index(shard, addr)?;
                shard.replicas.remove(i);
            }
            TopologyChange::SetReplicaState { shard, addr, state } => {
                let shard = next.shard_mut(*shard)?;
                let i = replica_index(shard, addr)?;
                shard.replicas[i].state = *state;
            }
            TopologyChange::Promote { shard, replica } => next.promote(*shard, replica)?,
            TopologyChange::BeginMigration { slots, to } => {
                next.shard_mut(*to)?;
                for slot in slot_list(slots)? {
                    let state = &mut next.slots[slot.index()];
                    *state = match *state {
                        SlotState::Owned(owner) if owner == *to => {
                            return Err(TopologyError::SlotAlreadyOwned {
                                slot: slot.get(),
                                shard: self.name_of(owner),
                            });
                        }
                        SlotState::Owned(from) => SlotState::Migrating { from, to: *to },
                        SlotState::Migrating { from, to } => {
                            return Err(TopologyError::SlotMigrating {
                                slot: slot.get(),
                                from: self.name_of(from),
                                to: self.name_of(to),
                            });
                        }
                    };
                }
            }
            TopologyChange::FinishMigration { slots } => next.end_migration(slots, true)?,
            TopologyChange::CancelMigration { slots } => next.end_migration(slots, false)?,
            TopologyChange::ReverseMigration { slots } => next.reverse_migration(slots)?,
            TopologyChange::QueueMigrations { moves } => next.queue_migrations(moves)?,
            TopologyChange::StartMigration { migration } => next.start_migration(migration)?,
            TopologyChange::DropQueuedMigration { migration } => {
                let i = next
                    .queued
                    .iter()
                    .position(|q| q == migration)
                    .ok_or_else(|| TopologyError::NotQueued(describe(self, migration)))?;
                next.queued.remove(i);
            }
            TopologyChange::ClearQueuedMigrations => next.queued.clear(),
        }
        Ok(next)
    }

    fn shard_mut(&mut self, id: ShardId) -> Result<&mut Shard, TopologyError> {
        match self.shards.binary_search_by_key(&id, |s| s.id) {
            Ok(i) => Ok(&mut self.shards[i]),
            Err(_) => Err(TopologyError::UnknownShard(id)),
        }
    }

    /// Refuses an address that is already a node of the topology.
    fn ensure_unused(&self, addr: &NodeAddr) -> Result<(), TopologyError> {
        match self.find_node(addr) {
            Some((shard, role)) => Err(TopologyError::AddressInUse {
                addr: addr.clone(),
                shard: shard.name.clone(),
                role,
            }),
            None => Ok(()),
        }
    }

    fn add_shard(&mut self, name: &str, master: &NodeAddr) -> Result<(), TopologyError> {
        check_shard_name(name).map_err(|reason| TopologyError::InvalidShardName {
            name: name.to_owned(),
            reason,
        })?;
        if self.shard_by_name(name).is_some() {
            return Err(TopologyError::DuplicateShardName(name.to_owned()));
        }
        self.ensure_unused(master)?;
        let id = match self.shards.last() {
            None => Some(0),
            Some(last) => last.id.0.checked_add(1),
        };
        // After the largest id, or else the smallest free one (ids are sorted).
        let id = id
            .or_else(|| {
                (0..=u16::MAX)
                    .zip(&self.shards)
                    .find(|(n, s)| s.id.0 != *n)
                    .map(|(n, _)| n)
            })
            .ok_or(TopologyError::TooManyShards)?;
        let shard = Shard {
            id: ShardId(id),
            name: name.to_owned(),
            master: master.clone(),
            replicas: Vec::new(),
        };
        let at = self.shards.partition_point(|s| s.id.0 < id);
        self.shards.insert(at, shard);
        Ok(())
    }

    fn remove_shard(&mut self, id: ShardId) -> Result<(), TopologyError> {
        let shard = self.shard(id).ok_or(TopologyError::UnknownShard(id))?;
        if !shard.replicas.is_empty() {
            return Err(TopologyError::ShardHasReplicas {
                shard: shard.name.clone(),
                count: shard.replicas.len(),
            });
        }
        let involved = compact(
            SlotRange::all()
                .slots()
                .filter(|slot| self.slots[slot.index()].involves(id)),
        );
        if !involved.is_empty() {
            return Err(TopologyError::ShardHasSlots {
                shard: shard.name.clone(),
                ranges: join_ranges(&involved),
            });
        }
        if self.queued.iter().any(|m| m.from == id || m.to == id) {
            return Err(TopologyError::ShardHasQueuedMigrations(shard.name.clone()));
        }
        self.shards.retain(|s| s.id != id);
        Ok(())
    }

    fn promote(&mut self, id: ShardId, addr: &NodeAddr) -> Result<(), TopologyError> {
        let shard = self.shard_mut(id)?;
        let i = replica_index(shard, addr)?;
        let state = shard.replicas[i].state;
        if state != ReplicaState::InSync {
            return Err(TopologyError::ReplicaNotInSync {
                shard: shard.name.clone(),
                addr: addr.clone(),
                state,
            });
        }
        let old_master = std::mem::replace(&mut shard.master, addr.clone());
        shard.replicas[i] = Replica {
            addr: old_master,
            state: ReplicaState::Stale,
        };
        Ok(())
    }

    /// Finish (`finish`) or cancel a migration of every slot in `ranges`.
    fn end_migration(&mut self, ranges: &[SlotRange], finish: bool) -> Result<(), TopologyError> {
        for slot in slot_list(ranges)? {
            let state = self.slots[slot.index()];
            self.slots[slot.index()] = match state {
                SlotState::Migrating { to, .. } if finish => SlotState::Owned(to),
                SlotState::Migrating { from, .. } => SlotState::Owned(from),
                SlotState::Owned(owner) => {
                    return Err(TopologyError::SlotNotMigrating {
                        slot: slot.get(),
                        owner: self.name_of(owner),
                    });
                }
            };
        }
        Ok(())
    }
}

impl Topology {
    /// `QueueMigrations`: see [`TopologyChange::QueueMigrations`].
    fn queue_migrations(&mut self, moves: &[Migration]) -> Result<(), TopologyError> {
        if moves.is_empty() {
            return Err(TopologyError::NoSlots);
        }
        let mut queued = vec![false; SLOT_COUNT];
        for slot in self
            .queued
            .iter()
            .flat_map(|m| m.slots.iter().flat_map(SlotRange::slots))
        {
            queued[slot.index()] = true;
        }
        for m in moves {
            self.check_move(m)?;
            for slot in slot_list(&m.slots)? {
                if std::mem::replace(&mut queued[slot.index()], true) {
                    return Err(TopologyError::SlotQueued(slot.get()));
                }
                self.check_owner(slot, m.from)?;
            }
            self.queued.push(m.clone());
        }
        Ok(())
    }

    /// `StartMigration`: see [`TopologyChange::StartMigration`].
    fn start_migration(&mut self, m: &Migration) -> Result<(), TopologyError> {
        self.check_move(m)?;
        for slot in slot_list(&m.slots)? {
            self.check_owner(slot, m.from)?;
            self.slots[slot.index()] = SlotState::Migrating {
                from: m.from,
                to: m.to,
            };
        }
        if let Some(i) = self.queued.iter().position(|q| q == m) {
            self.queued.remove(i);
        }
        Ok(())
    }

    /// Refuses a migration between unknown shards or from a shard to itself.
    fn check_move(&self, m: &Migration) -> Result<(), TopologyError> {
        self.shard(m.from)
            .ok_or(TopologyError::UnknownShard(m.from))?;
        self.shard(m.to).ok_or(TopologyError::UnknownShard(m.to))?;
        if m.from == m.to {
            return Err(TopologyError::MigrationToItself(self.name_of(m.from)));
        }
        Ok(())
    }

    /// Refuses `slot` unless `from` owns it (and it is not migrating).
    fn check_owner(&self, slot: Slot, from: ShardId) -> Result<(), TopologyError> {
        match self.slots[slot.index()] {
            SlotState::Owned(owner) if owner == from => Ok(()),
            SlotState::Owned(owner) => Err(TopologyError::SlotNotOwnedBy {
                slot: slot.get(),
                shard: self.name_of(from),
                owner: self.name_of(owner),
            }),
            SlotState::Migrating { from, to } => Err(TopologyError::SlotMigrating {
                slot: slot.get(),
                from: self.name_of(from),
                to: self.name_of(to),
            }),
        }
    }

    fn reverse_migration(&mut self, ranges: &[SlotRange]) -> Result<(), TopologyError> {
        for slot in slot_list(ranges)? {
            self.slots[slot.index()] = match self.slots[slot.index()] {
                SlotState::Migrating { from, to } => SlotState::Migrating { from: to, to: from },
                SlotState::Owned(owner) => {
                    return Err(TopologyError::SlotNotMigrating {
                        slot: slot.get(),
                        owner: self.name_of(owner),
                    });
                }
            };
        }
        Ok(())
    }
}

fn replica_index(shard: &Shard, addr: &NodeAddr) -> Result<usize, TopologyError> {
    shard
        .replicas
        .iter()
        .position(|r| &r.addr == addr)
        .ok_or_else(|| TopologyError::NotAReplica {
            shard: shard.name.clone(),
            addr: addr.clone(),
        })
}

/// The slots of `ranges`, in the order given; refuses an empty list, invalid ranges and
/// slots named twice.
fn slot_list(ranges: &[SlotRange]) -> Result<Vec<Slot>, TopologyError> {
    if ranges.is_empty() {
        return Err(TopologyError::NoSlots);
    }
    let mut seen = vec![false; SLOT_COUNT];
    let mut slots = Vec::new();
    for range in ranges {
        range
            .check()
            .map_err(|_| TopologyError::InvalidSlotRange(*range))?;
        for slot in range.slots() {
            if std::mem::replace(&mut seen[slot.index()], true) {
                return Err(TopologyError::SlotNamedTwice(slot.get()));
            }
            slots.push(slot);
        }
    }
    Ok(slots)
}
