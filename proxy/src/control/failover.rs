//! Failover: an in-sync replica becomes its shard's master in a new epoch.
//!
//! Automatic (the master is down): promote, persist, publish, then **fence** the old master:
//! its lanes reset their connections (so it discards requests it has not read, should it wake
//! up) and refuse everything until it has been resynchronised as a replica. Requests that
//! waited at the shard's gate go to the new master; requests that were in flight got an error
//! (their outcome is unknown). In `sync` mirroring, every acknowledged write is on the
//! promoted replica.
//!
//! Graceful (admin `FAILOVER`): pause the shard, wait until every write sent so far has been
//! applied by the master and mirrored to every replica, swap, resume. The old master is then
//! equal to the new one and stays an in-sync replica: no client sees an error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redshard_config::{NodeAddr, ReplicaState, ShardId, TopologyChange};
use tracing::{info, warn};

use super::{ChangeError, Controller};

/// Why a failover did not happen.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    /// No such shard.
    #[error("no shard {0}")]
    NoShard(String),
    /// The shard has no in-sync replica that answers.
    #[error("shard {0} has no in-sync replica that answers; add one (add-node --cluster-slave) and wait until it is in sync")]
    NoCandidate(String),
    /// The writes in flight did not drain in time (graceful failover): nothing changed.
    #[error("the shard's writes did not drain within {} ms; nothing changed", .0.as_millis())]
    Drain(Duration),
    /// The topology change was refused or not persisted.
    #[error("{0}")]
    Change(#[from] ChangeError),
}

impl Controller {
    /// Promotes `replica` in `shard`. `graceful` pauses and drains first (the master is up);
    /// otherwise the master is down since `since` and is fenced.
    pub(super) async fn failover(
        &self,
        shard: ShardId,
        replica: &NodeAddr,
        graceful: bool,
        since: Instant,
    ) -> Result<(), FailoverError> {
        let started = Instant::now();
        let table = self.state.router.load();
        let Some(route) = table.route(shard) else {
            return Err(FailoverError::NoShard(shard.to_string()));
        };
        let old = route.master.addr().clone();
        let name = route.name.clone();
        if graceful {
            self.hold(shard, true);
            let timeout = self.state.config.mirror.cutover_timeout;
            if !crate::mirror::barrier(route, true, timeout).await {
                self.hold(shard, false);
                return Err(FailoverError::Drain(timeout));
            }
        }
        let promoted = self
            .change(TopologyChange::Promote {
                shard,
                replica: replica.clone(),
            })
            .await;
        if let Err(e) = promoted {
            if graceful {
                self.hold(shard, false);
            }
            return Err(e.into());
        }
        let mirror = self.state.router.mirror();
        mirror.forget(replica);
        mirror.forget(&old);
        let old_node = self.state.router.pool().node(&old);
        if graceful {
            // Drained and mirrored: the old master holds exactly what the new one does.
            let rejoined = self
                .change(TopologyChange::SetReplicaState {
                    shard,
                    addr: old.clone(),
                    state: ReplicaState::InSync,
                })
                .await;
            if let Err(e) = rejoined {
                warn!(node = %old, error = %e, "the old master stays stale after a graceful failover");
            }
            self.hold(shard, false);
        } else {
            old_node.fence();
        }
        let line = format!(
            "shard {name}: {replica} promoted, old master {old} {}; master failing for {} ms, promotion took {} ms",
            if graceful { "kept as an in-sync replica" } else { "fenced" },
            since.elapsed().as_millis(),
            started.elapsed().as_millis(),
        );
        info!("failover: {line}");
        self.state.ha.record_failover(&name, line);
        self.changed.notify_one();
        Ok(())
    }

    /// A graceful failover of the shard named `shard` (or whose master is `shard`) to its
    /// first in-sync replica that answers, or to `to` when given.
    ///
    /// # Errors
    /// No such shard or replica, no candidate, or the drain timed out (nothing changed).
    pub async fn manual_failover(
        self: &Arc<Self>,
        shard: &str,
        to: Option<&NodeAddr>,
    ) -> Result<NodeAddr, FailoverError> {
        let table = self.state.router.load();
        let topology = table.topology();
        let found = super::find_shard(topology, shard)
            .ok_or_else(|| FailoverError::NoShard(shard.to_owned()))?;
        let candidate = match to {
            Some(addr) => found
                .replicas
                .iter()
                .find(|r| &r.addr == addr && r.state == ReplicaState::InSync)
                .map(|r| r.addr.clone()),
            None => self.candidate(found),
        }
        .ok_or_else(|| FailoverError::NoCandidate(found.name.clone()))?;
        self.failover(found.id, &candidate, true, Instant::now())
            .await?;
        Ok(candidate)
    }
}
