//! The persisted, human-readable form of a [`Topology`]: slots as ranges, not 16384 entries.
//!
//! ```toml
//! epoch = 7
//!
//! [[shard]]
//! id = 0
//! name = "s1"
//! master = "127.0.0.1:6381"
//! slots = ["0-5460"]
//!
//! [[shard.replicas]]
//! addr = "127.0.0.1:6384"
//! state = "in-sync"
//!
//! [[migration]]
//! from = 0
//! to = 1
//! slots = ["100-199"]
//!
//! [[queued]]
//! from = 0
//! to = 1
//! slots = ["200-299"]
//! ```
//!
//! `[[queued]]` lists the migrations waiting to begin, in the order they run; `[[rule]]` the
//! key routing rules (as in the configuration file, see [`crate::rules`]); `users` the
//! proxy's users as `ACL LIST` lines, once a client changed them.
//!
//! `running = true` at the top is the **run marker**: a proxy writes it at start and with every
//! save while it serves, and removes it when it stops cleanly (see [`crate::store`]). Found at
//! start, it says the last proxy did not stop cleanly. Reading a [`Topology`] ignores it.
//!
//! Reading it back checks every invariant of [`Topology`] (each slot assigned exactly once,
//! unique ids, names and addresses), so a hand-edited file cannot install a broken table.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::TopologyError;
use super::{Migration, Replica, ReplicaState, Shard, ShardId, SlotState, Topology};
use crate::addr::NodeAddr;
use crate::slot::{SlotRange, SLOT_COUNT};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopologyForm {
    epoch: u64,
    /// The run marker (see the module docs); written only when set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    running: bool,
    #[serde(default, rename = "shard")]
    shards: Vec<ShardForm>,
    #[serde(default, rename = "migration", skip_serializing_if = "Vec::is_empty")]
    migrations: Vec<MigrationForm>,
    /// Migrations waiting to begin, in order (`Topology::queued`).
    #[serde(default, rename = "queued", skip_serializing_if = "Vec::is_empty")]
    queued: Vec<MigrationForm>,
    /// Key routing rules (`Topology::rules`), in the configured order.
    #[serde(default, rename = "rule", skip_serializing_if = "Vec::is_empty")]
    rules: Vec<crate::rules::KeyRule>,
    /// The proxy's users (`Topology::users`), as `ACL LIST` lines, once changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    users: Option<Vec<String>>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardForm {
    id: ShardId,
    name: String,
    master: NodeAddr,
    /// Owned slots only; migrating ones are under `[[migration]]`.
    #[serde(default)]
    slots: Vec<SlotRange>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    replicas: Vec<ReplicaForm>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicaForm {
    addr: NodeAddr,
    state: ReplicaState,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct MigrationForm {
    from: ShardId,
    to: ShardId,
    slots: Vec<SlotRange>,
}

impl From<&Topology> for TopologyForm {
    fn from(topology: &Topology) -> TopologyForm {
        TopologyForm {
            epoch: topology.epoch,
            running: false,
            shards: topology
                .shards
                .iter()
                .map(|shard| ShardForm {
                    id: shard.id,
                    name: shard.name.clone(),
                    master: shard.master.clone(),
                    slots: topology.slots_of(shard.id),
                    replicas: shard
                        .replicas
                        .iter()
                        .map(|r| ReplicaForm {
                            addr: r.addr.clone(),
                            state: r.state,
                        })
                        .collect(),
                })
                .collect(),
            migrations: topology
                .migrations()
                .into_iter()
                .map(|m| MigrationForm {
                    from: m.from,
                    to: m.to,
                    slots: m.slots,
                })
                .collect(),
            queued: topology
                .queued
                .iter()
                .map(|m| MigrationForm {
                    from: m.from,
                    to: m.to,
                    slots: m.slots.clone(),
                })
                .collect(),
            rules: topology.rules.rules().to_vec(),
            users: topology.users.clone(),
        }
    }
}

impl TryFrom<TopologyForm> for Topology {
    type Error = TopologyError;

    fn try_from(form: TopologyForm) -> Result<Topology, TopologyError> {
        let mut slots: Vec<Option<SlotState>> = vec![None; SLOT_COUNT];
        let mut assign = |ranges: &[SlotRange], state: SlotState| {
            for range in ranges {
                range
                    .check()
                    .map_err(|_| TopologyError::InvalidSlotRange(*range))?;
                for slot in range.slots() {
                    if slots[slot.index()].replace(state).is_some() {
                        return Err(TopologyError::Inconsistent(format!(
                            "slot {slot} is listed twice"
                        )));
                    }
                }
            }
            Ok(())
        };
        let mut shards: Vec<Shard> = Vec::with_capacity(form.shards.len());
        for shard in form.shards {
            assign(&shard.slots, SlotState::Owned(shard.id))?;
            shards.push(Shard {
                id: shard.id,
                name: shard.name,
                master: shard.master,
                replicas: shard
                    .replicas
                    .into_iter()
                    .map(|r| Replica {
                        addr: r.addr,
                        state: r.state,
                    })
                    .collect(),
            });
        }
        for m in &form.migrations {
            assign(
                &m.slots,
                SlotState::Migrating {
                    from: m.from,
                    to: m.to,
                },
            )?;
        }
        // Written sorted; sorting here also accepts hand-edited files, and `check` below
        // still refuses duplicate ids.
        shards.sort_by_key(|s| s.id);
        let queued = form
            .queued
            .into_iter()
            .map(|m| Migration {
                from: m.from,
                to: m.to,
                slots: m.slots,
            })
            .collect();
        let mut topology = Topology::assemble(
            form.epoch,
            shards,
            slots,
            queued,
            crate::rules::KeyRules::new(form.rules),
        )?;
        topology.users = form.users;
        Ok(topology)
    }
}

impl Serialize for Topology {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        TopologyForm::from(self).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Topology {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Topology, D::Error> {
        Ok(Marked::deserialize(deserializer)?.topology)
    }
}

/// A topology with the run marker, as the topology file holds them.
#[derive(Debug)]
pub(crate) struct Marked {
    /// The topology.
    pub(crate) topology: Topology,
    /// The run marker: written by a proxy that was running (see the module docs).
    pub(crate) running: bool,
}

impl<'de> Deserialize<'de> for Marked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Marked, D::Error> {
        let form = TopologyForm::deserialize(deserializer)?;
        let running = form.running;
        let topology = Topology::try_from(form).map_err(serde::de::Error::custom)?;
        Ok(Marked { topology, running })
    }
}

/// `topology` in its persisted form, with the run marker when `running`.
pub(crate) fn to_toml(topology: &Topology, running: bool) -> Result<String, toml::ser::Error> {
    let mut form = TopologyForm::from(topology);
    form.running = running;
    toml::to_string(&form)
}
