//! Adding and removing nodes: the admin port's ADDSHARD, ADDREPLICA, DELREPLICA, DELSHARD.
//!
//! Each is one [`TopologyChange`] through [`Controller::change`], preceded by the checks an
//! operator would want before it and followed by what the data path needs after it:
//! - before any credentials are sent to a new node, it must be one the configuration trusts
//!   with them ([`redshard_config::Config::trusts_node`]: named in a `[[shard]]`, matching
//!   `[backend] allowed_nodes`, or behind verified backend TLS), and it must answer a `PING`
//!   without credentials as redis-server does (`+PONG`, or `-NOAUTH` when it wants a
//!   password): a silent or garbling address is refused without ever seeing the password;
//! - a new node (master or replica) must then answer the proxy's control credentials and run
//!   standalone (not cluster mode);
//! - a new shard's master must also not be a replica and be empty: keys already on it would
//!   be served by no slot, and the migration would overwrite them;
//! - a new replica must hold no keys in any database (`INFO keyspace`): the full sync would
//!   replace them, so a node that still has data is refused and must be emptied first;
//! - a new replica is added `syncing`, so the controller resynchronises it (its data is
//!   replaced by its master's through Redis's full sync) and then cuts it over to `in-sync`;
//! - a removed replica's mirror link is forgotten (re-adding it starts a fresh one), and a
//!   replica removed before it was in sync is told `REPLICAOF NO ONE` so it does not keep
//!   following the master on its own (with Redis replication every removed replica is, as
//!   every replica follows its master), and its resync, if one runs, stops at its next step
//!   (it tells the node the same once more; removed during the full sync, it never pauses
//!   the shard for a cut-over);
//! - a master is removed only once its shard has no replicas and neither owns nor migrates
//!   slots, and the refusal says what to do first: remove the replica, hand the slots back,
//!   then remove the master.

use std::sync::Arc;
use std::time::Duration;

use redshard_config::{
    NodeAddr, NodeRole, ReplicaState, Shard, SlotRange, Topology, TopologyChange,
};
use tracing::{info, warn};

use super::conn::ControlConn;
use super::{ChangeError, Controller};

/// How long the checks on a node being added may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Why a node was not added or removed. The texts name what to do next.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A shard name or master address that matches no shard.
    #[error(
        "no shard {0}: name a shard by its name or its master's address (TOPOLOGY lists them)"
    )]
    NoShard(String),
    /// An address that is not a node of the topology.
    #[error("{0} is not a node of the topology (TOPOLOGY lists them)")]
    NoNode(NodeAddr),
    /// DELREPLICA of a master.
    #[error("{addr} is the master of shard {shard}, not a replica; remove the shard with DELSHARD {shard}")]
    IsMaster {
        /// The node.
        addr: NodeAddr,
        /// Its shard's name.
        shard: String,
    },
    /// DELSHARD of a shard that still has replicas.
    #[error("shard {shard} still has replicas ({replicas}): remove the replica first (DELREPLICA {first}; redshard-admin del-node {first}), hand the slots back, then remove the master")]
    HasReplicas {
        /// The shard's name.
        shard: String,
        /// Its replicas, comma-separated.
        replicas: String,
        /// The first replica, for the example.
        first: NodeAddr,
    },
    /// DELSHARD of a shard that owns slots.
    #[error("shard {shard} still owns {count} slots ({ranges}): hand the slots back first (MIGRATE {shard} <other-shard> {count}; redshard-admin reshard --cluster-from {shard} --cluster-to <other-shard> --cluster-slots {count}), then remove the master")]
    HasSlots {
        /// The shard's name.
        shard: String,
        /// How many slots it owns.
        count: usize,
        /// They, as ranges.
        ranges: String,
    },
    /// DELSHARD of a shard that takes part in a migration.
    #[error("shard {shard} takes part in the migration of slots {ranges}: wait until it is done (MIGRATIONS) or cancel it (MIGRATION CANCEL), hand any slots back, then remove the master")]
    Migrating {
        /// The shard's name.
        shard: String,
        /// The migrating slots it is the source or target of.
        ranges: String,
    },
    /// A node being added does not answer the proxy.
    #[error("{addr} does not answer the proxy: {reason}; start it (or fix the proxy's [backend] credentials on it) and try again")]
    Unreachable {
        /// The node.
        addr: NodeAddr,
        /// What failed.
        reason: String,
    },
    /// A node being added that the configuration does not trust with the backend
    /// credentials; nothing was sent to it.
    #[error("{0} is not a node the configuration trusts with the backend credentials (nothing was sent to it): add it, or its network, to [backend] allowed_nodes and reload the configuration (SIGHUP), then try again")]
    Untrusted(NodeAddr),
    /// A node being added that does not answer like redis-server.
    #[error("{addr} does not answer like a Redis server: {reason}; check the address")]
    NotRedis {
        /// The node.
        addr: NodeAddr,
        /// What it answered.
        reason: String,
    },
    /// A new master that is not fit to be one.
    #[error("{addr} cannot be a new shard's master: {reason}")]
    Unfit {
        /// The node.
        addr: NodeAddr,
        /// Why, and what to do about it.
        reason: String,
    },
    /// A node being added as a replica that holds keys: the full sync would replace them.
    #[error("{addr} holds {keys} ({dbs}); as a replica its data would be replaced by its master's: empty it first (FLUSHALL on the node) if those keys are not needed, or use another node")]
    HoldsKeys {
        /// The node.
        addr: NodeAddr,
        /// How many keys, as "N key(s)".
        keys: String,
        /// Per database, such as "db0=3, db2=1".
        dbs: String,
    },
    /// The topology change was refused or could not be persisted.
    #[error("{0}")]
    Change(#[from] ChangeError),
}

/// The shard named `name_or_addr`, or whose master is at that address.
#[must_use]
pub fn find_shard<'a>(topology: &'a Topology, name_or_addr: &str) -> Option<&'a Shard> {
    topology.shard_by_name(name_or_addr).or_else(|| {
        NodeAddr::parse(name_or_addr)
            .ok()
            .and_then(|addr| topology.shards.iter().find(|s| s.master == addr))
    })
}

fn join<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// `count` and `noun`, with an `s` unless the count is one: "1 key", "2 keys".
pub(crate) fn plural(count: u64, noun: &str) -> String {
    if count == 1 {
        format!("1 {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// The databases of an `INFO keyspace` answer (`db0:keys=3,expires=0,...`) that hold keys,
/// each with its count, in database order.
pub(crate) fn databases_held(
    keyspace: &std::collections::HashMap<String, String>,
) -> Vec<(u16, u64)> {
    let mut dbs: Vec<(u16, u64)> = keyspace
        .iter()
        .filter_map(|(db, fields)| {
            let index = db.strip_prefix("db")?.parse().ok()?;
            let keys = fields
                .split(',')
                .find_map(|f| f.strip_prefix("keys="))?
                .parse()
                .ok()?;
            (keys > 0).then_some((index, keys))
        })
        .collect();
    dbs.sort_unstable();
    dbs
}

/// The keys in every database of an `INFO keyspace` answer: their total and each non-empty
/// database, such as `db0=3, db2=1`, in database order.
fn keys_held(keyspace: &std::collections::HashMap<String, String>) -> (u64, String) {
    let dbs = databases_held(keyspace);
    let total = dbs.iter().map(|(_, keys)| keys).sum();
    let listed = dbs
        .iter()
        .map(|(db, keys)| format!("db{db}={keys}"))
        .collect::<Vec<_>>()
        .join(", ");
    (total, listed)
}

impl Controller {
    /// Opens a control connection to a node being added, once it has shown it deserves the
    /// credentials (see the [module docs](self)), and checks it runs standalone.
    async fn reach(&self, addr: &NodeAddr) -> Result<ControlConn, NodeError> {
        if !self.state.live.now().trusts_node(addr) {
            return Err(NodeError::Untrusted(addr.clone()));
        }
        let unreachable = |e: super::conn::ConnError| NodeError::Unreachable {
            addr: addr.clone(),
            reason: e.to_string(),
        };
        let not_redis = |reason: String| NodeError::NotRedis {
            addr: addr.clone(),
            reason,
        };
        // No credentials on this first connection: a node that does not answer like Redis
        // never sees them.
        let mut probe =
            ControlConn::open(addr, None, self.state.tls.backend.as_deref(), CHECK_TIMEOUT)
                .await
                .map_err(unreachable)?;
        let pong = match probe.call(&[b"PING"]).await {
            Ok(pong) => pong,
            Err(super::conn::ConnError::Failed { reason, .. })
                if reason.starts_with("sent an invalid reply") || reason == "reply too large" =>
            {
                return Err(not_redis(format!("PING: it {reason}")))
            }
            Err(e) => return Err(unreachable(e)),
        };
        drop(probe);
        if pong.as_ref() != b"+PONG\r\n" && !pong.starts_with(b"-NOAUTH") {
            return Err(not_redis(format!(
                "PING answered {:?}",
                String::from_utf8_lossy(&pong[..pong.len().min(64)]).trim_end()
            )));
        }
        let mut conn = self
            .connect(addr, CHECK_TIMEOUT)
            .await
            .map_err(unreachable)?;
        let server = conn.info("server").await.map_err(unreachable)?;
        if server.get("redis_mode").is_some_and(|m| m != "standalone") {
            return Err(NodeError::Unfit {
                addr: addr.clone(),
                reason: "it runs in cluster mode; redshard needs plain standalone nodes (cluster-enabled no)".into(),
            });
        }
        Ok(conn)
    }

    /// Checks `change` against the current topology without making it.
    fn dry_run(&self, change: &TopologyChange) -> Result<(), NodeError> {
        let table = self.state.router.load();
        table
            .topology()
            .apply(change)
            .map(drop)
            .map_err(|e| NodeError::Change(ChangeError::Refused(e)))
    }

    /// Adds shard `name` with `master` and no slots. Returns the new topology.
    ///
    /// # Errors
    /// The master does not answer, is not an empty standalone master, or the change is
    /// refused (name or address in use).
    pub async fn add_shard(
        &self,
        name: &str,
        master: &NodeAddr,
    ) -> Result<Arc<Topology>, NodeError> {
        let change = TopologyChange::AddShard {
            name: name.to_owned(),
            master: master.clone(),
        };
        // Refuse a bad name or an address in use before contacting the node.
        self.dry_run(&change)?;
        let mut conn = self.reach(master).await?;
        let unfit = |reason: String| NodeError::Unfit {
            addr: master.clone(),
            reason,
        };
        let unreachable = |e: super::conn::ConnError| NodeError::Unreachable {
            addr: master.clone(),
            reason: e.to_string(),
        };
        let replication = conn.info("replication").await.map_err(unreachable)?;
        if let Some(role) = replication.get("role").filter(|r| *r != "master") {
            return Err(unfit(format!(
                "it is a {role} of another node; run REPLICAOF NO ONE on it first"
            )));
        }
        // Every database's keys: a node's `INFO keyspace` lists those that hold any.
        let keyspace = conn.info("keyspace").await.map_err(unreachable)?;
        let (keys, dbs) = keys_held(&keyspace);
        if keys > 0 {
            return Err(unfit(format!(
                "it holds {} ({dbs}); a new shard must start empty: flush it (FLUSHALL on the node) or use another node",
                plural(keys, "key")
            )));
        }
        self.give_node_settings(&mut conn).await;
        let topology = self.change(change).await?;
        info!(shard = name, %master, "shard added");
        Ok(topology)
    }

    /// Adds `addr` as a `syncing` replica of the shard named (or mastered at) `shard`; the
    /// controller then resynchronises it. Returns the shard's name.
    ///
    /// # Errors
    /// No such shard, the node does not answer, or the change is refused (address in use).
    pub async fn add_replica(&self, shard: &str, addr: &NodeAddr) -> Result<String, NodeError> {
        let (id, name) = {
            let table = self.state.router.load();
            let found = find_shard(table.topology(), shard)
                .ok_or_else(|| NodeError::NoShard(shard.to_owned()))?;
            (found.id, found.name.clone())
        };
        let change = TopologyChange::AddReplica {
            shard: id,
            addr: addr.clone(),
            state: ReplicaState::Syncing,
        };
        self.dry_run(&change)?;
        let mut conn = self.reach(addr).await?;
        // The resync's full sync replaces every database of the node: refuse one that holds
        // keys rather than lose them silently.
        let keyspace = conn
            .info("keyspace")
            .await
            .map_err(|e| NodeError::Unreachable {
                addr: addr.clone(),
                reason: e.to_string(),
            })?;
        let (keys, dbs) = keys_held(&keyspace);
        if keys > 0 {
            return Err(NodeError::HoldsKeys {
                addr: addr.clone(),
                keys: plural(keys, "key"),
                dbs,
            });
        }
        self.give_node_settings(&mut conn).await;
        drop(conn);
        // A link left from an earlier life of this address must not be reused.
        self.state.router.mirror().forget(addr);
        self.change(change).await?;
        info!(shard = %name, replica = %addr, "replica added; resync starts");
        self.changed.notify_one();
        Ok(name)
    }

    /// Removes the replica at `addr`. Returns its shard's name.
    ///
    /// # Errors
    /// Not a node, a master, or the change was not persisted.
    pub async fn remove_replica(&self, addr: &NodeAddr) -> Result<String, NodeError> {
        let (id, name, state) = {
            let table = self.state.router.load();
            let topology = table.topology();
            let (shard, role) = topology
                .find_node(addr)
                .ok_or_else(|| NodeError::NoNode(addr.clone()))?;
            if role == NodeRole::Master {
                return Err(NodeError::IsMaster {
                    addr: addr.clone(),
                    shard: shard.name.clone(),
                });
            }
            let state = shard.replica(addr).map(|r| r.state);
            (shard.id, shard.name.clone(), state)
        };
        // With Redis replication, no check may point it at its master again once removed.
        let lock = self.replication_lock(id);
        let _removing = lock.lock().await;
        self.change(TopologyChange::RemoveReplica {
            shard: id,
            addr: addr.clone(),
        })
        .await?;
        self.state.router.mirror().forget(addr);
        self.stop_resync(addr);
        self.state.ha.forget_link(addr);
        if state != Some(ReplicaState::InSync) || self.redis_replication() {
            // It may be following the master after a resync's REPLICAOF: leave it standalone.
            let stopped = async {
                let mut conn = self.connect(addr, CHECK_TIMEOUT).await?;
                conn.call_ok(&[b"REPLICAOF", b"NO", b"ONE"]).await
            };
            if let Err(e) = stopped.await {
                warn!(replica = %addr, error = %e, "removed replica not told REPLICAOF NO ONE");
            }
        }
        info!(shard = %name, replica = %addr, "replica removed");
        Ok(name)
    }

    /// Removes the shard named (or mastered at) `shard`: it must have no replicas and neither
    /// own nor migrate slots. Returns its name and master.
    ///
    /// # Errors
    /// No such shard, or it still has replicas or slots ([`NodeError`] says what to do first).
    pub async fn remove_shard(&self, shard: &str) -> Result<(String, NodeAddr), NodeError> {
        let (id, name, master) = {
            let table = self.state.router.load();
            let topology = table.topology();
            let found =
                find_shard(topology, shard).ok_or_else(|| NodeError::NoShard(shard.to_owned()))?;
            check_removable(topology, found)?;
            (found.id, found.name.clone(), found.master.clone())
        };
        self.change(TopologyChange::RemoveShard { shard: id })
            .await?;
        info!(shard = %name, %master, "shard removed");
        Ok((name, master))
    }
}

/// Refuses the removal of `shard` while it has replicas, owns slots or migrates them.
fn check_removable(topology: &Topology, shard: &Shard) -> Result<(), NodeError> {
    if let Some(first) = shard.replicas.first() {
        return Err(NodeError::HasReplicas {
            shard: shard.name.clone(),
            replicas: join(shard.replicas.iter().map(|r| &r.addr)),
            first: first.addr.clone(),
        });
    }
    let migrating: Vec<SlotRange> = topology
        .migrations()
        .into_iter()
        .filter(|m| m.from == shard.id || m.to == shard.id)
        .flat_map(|m| m.slots)
        .collect();
    if !migrating.is_empty() {
        return Err(NodeError::Migrating {
            shard: shard.name.clone(),
            ranges: join(&migrating),
        });
    }
    let owned = topology.slots_of(shard.id);
    if !owned.is_empty() {
        return Err(NodeError::HasSlots {
            shard: shard.name.clone(),
            count: owned.iter().map(SlotRange::len).sum(),
            ranges: join(&owned),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use redshard_config::{Replica, ShardId, SlotState};

    fn addr(s: &str) -> NodeAddr {
        NodeAddr::parse(s).unwrap()
    }

    /// s1 owns everything with a replica; s2 is empty.
    fn topology() -> Topology {
        let s1 = TopologyChange::AddShard {
            name: "s1".into(),
            master: addr("127.0.0.1:7001"),
        };
        let t = Topology {
            epoch: 1,
            shards: vec![Shard {
                id: ShardId(0),
                name: "s0".into(),
                master: addr("127.0.0.1:7000"),
                replicas: vec![Replica {
                    addr: addr("127.0.0.1:7100"),
                    state: ReplicaState::InSync,
                }],
            }],
            slots: vec![SlotState::Owned(ShardId(0)); redshard_config::SLOT_COUNT]
                .into_boxed_slice(),
            queued: Vec::new(),
            rules: redshard_config::KeyRules::default(),
            users: None,
        };
        t.apply(&s1).unwrap()
    }

    #[test]
    fn shards_are_found_by_name_or_master() {
        let t = topology();
        assert_eq!(find_shard(&t, "s1").unwrap().id, ShardId(1));
        assert_eq!(find_shard(&t, "127.0.0.1:7000").unwrap().id, ShardId(0));
        assert!(find_shard(&t, "127.0.0.1:7100").is_none(), "a replica");
        assert!(find_shard(&t, "nope").is_none());
    }

    #[test]
    fn removal_guidance_follows_the_order_of_the_work() {
        let t = topology();
        let s0 = find_shard(&t, "s0").unwrap();
        let e = check_removable(&t, s0).unwrap_err().to_string();
        assert!(e.contains("remove the replica first (DELREPLICA 127.0.0.1:7100; redshard-admin del-node 127.0.0.1:7100), hand the slots back, then remove the master"), "{e}");

        let t = t
            .apply(&TopologyChange::RemoveReplica {
                shard: ShardId(0),
                addr: addr("127.0.0.1:7100"),
            })
            .unwrap();
        let e = check_removable(&t, find_shard(&t, "s0").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("still owns 16384 slots (0-16383)"), "{e}");
        assert!(e.contains("MIGRATE s0 <other-shard> 16384"), "{e}");

        let t = t
            .apply(&TopologyChange::BeginMigration {
                slots: vec![SlotRange::new(0, 9).unwrap()],
                to: ShardId(1),
            })
            .unwrap();
        let e = check_removable(&t, find_shard(&t, "s1").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("migration of slots 0-9"), "{e}");
        assert!(e.contains("MIGRATION CANCEL"), "{e}");

        let t = t
            .apply(&TopologyChange::CancelMigration {
                slots: vec![SlotRange::new(0, 9).unwrap()],
            })
            .unwrap();
        assert!(check_removable(&t, find_shard(&t, "s1").unwrap()).is_ok());
    }

    #[test]
    fn keys_are_counted_in_every_database() {
        let info = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(keys_held(&info(&[])), (0, String::new()));
        let (keys, dbs) = keys_held(&info(&[
            ("db2", "keys=1,expires=0,avg_ttl=0"),
            ("db0", "keys=3,expires=1,avg_ttl=5"),
            ("db1", "keys=0,expires=0,avg_ttl=0"),
        ]));
        assert_eq!((keys, dbs.as_str()), (4, "db0=3, db2=1"));
        assert_eq!(plural(1, "key"), "1 key");
        assert_eq!(plural(0, "key"), "0 keys");
    }
}
