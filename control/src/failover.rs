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
//!
//! With Redis replication (`[replication] mode = "redis"`), under the shard's
//! [replication lock](super::replica): an automatic failover promotes the in-sync replica
//! that answers with the highest replication offset; the promoted node is told `REPLICAOF NO
//! ONE` before the promotion is persisted, and the other replicas `REPLICAOF` it after. A
//! graceful one also waits, after the drain, until the replica's offset equals the master's,
//! and the old master is told to follow the new one. The fenced old master, once back, is
//! pointed at the new master by the replication checks and is in sync once caught up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redshard_config::{NodeAddr, NodeRole, ReplicaState, ShardId, TopologyChange};
use tracing::{info, warn};

use super::book::HoldReason;
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
    /// The replica could not be made a master (`REPLICAOF NO ONE`): nothing changed.
    #[error("the replica could not be made a master: {0}")]
    Replica(#[from] super::conn::ConnError),
}

/// Which failover runs; the two differ in their phases (see `LIFECYCLE.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FailoverKind {
    /// Admin `FAILOVER`, the master up: hold → drain → promote → rejoin → release.
    Graceful,
    /// The master is down (failing since `since`) or restarted empty: promote → fence.
    MasterDown {
        /// When the master began failing (for the log line).
        since: Instant,
    },
}

impl Controller {
    /// Promotes `replica` in `shard`, as `kind` says: a graceful failover pauses and drains
    /// first and keeps the old master as an in-sync replica; otherwise the old master is
    /// fenced.
    pub(super) async fn failover(
        &self,
        shard: ShardId,
        replica: &NodeAddr,
        kind: FailoverKind,
    ) -> Result<(), FailoverError> {
        let started = Instant::now();
        let graceful = kind == FailoverKind::Graceful;
        let redis = self.redis_replication();
        // With Redis replication, no check of the shard may point a node at the old master
        // while it is replaced.
        let lock = self.replication_lock(shard);
        let _replacing = if redis { Some(lock.lock().await) } else { None };
        let best;
        let replica = if redis && !graceful {
            best = self.most_advanced(shard, replica).await;
            &best
        } else {
            replica
        };
        let table = self.state.router.load();
        let Some(route) = table.route(shard) else {
            return Err(FailoverError::NoShard(shard.to_string()));
        };
        let old = route.master.addr().clone();
        let name = route.name.clone();
        if graceful {
            self.hold(shard, HoldReason::GracefulFailover);
            let timeout = self.state.config.mirror.cutover_timeout;
            if !redshard_dataplane::router::barrier(route, true, timeout).await {
                self.release(shard, &HoldReason::GracefulFailover);
                return Err(FailoverError::Drain(timeout));
            }
        }
        // Not held across the change: the epoch barrier waits for every old table.
        drop(table);
        if redis {
            if let Err(e) = self.take_over(&old, replica, graceful, started).await {
                if graceful {
                    self.release(shard, &HoldReason::GracefulFailover);
                }
                return Err(e);
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
                self.release(shard, &HoldReason::GracefulFailover);
            }
            return Err(e.into());
        }
        let mirror = self.state.router.mirror();
        mirror.forget(replica);
        mirror.forget(&old);
        let old_node = self.state.router.pool().node(&old);
        // A replica now: its lanes no longer wait for a decision about a master.
        old_node.incarnation().set_hold(false);
        if redis {
            // No proxy of a fleet may still send to the old master when it is turned into
            // a replica of the new one.
            let epoch = self.state.router.load().epoch();
            if self
                .fleet_barrier(epoch, "a failed-over master is reused")
                .await
            {
                self.follow_promoted(shard, replica, &old, graceful).await;
            }
        }
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
            self.release(shard, &HoldReason::GracefulFailover);
        } else {
            old_node.fence(&self.writer);
        }
        let line = match kind {
            FailoverKind::Graceful => format!(
                "shard {name}: {replica} promoted, old master {old} kept as an in-sync replica; drain and swap took {} ms",
                started.elapsed().as_millis(),
            ),
            FailoverKind::MasterDown { since } => format!(
                "shard {name}: {replica} promoted, old master {old} fenced; master failing for {} ms, promotion took {} ms",
                since.elapsed().as_millis(),
                started.elapsed().as_millis(),
            ),
        };
        info!("failover: {line}");
        self.state.ha.record_failover(&name, line);
        self.changed.notify_one();
        Ok(())
    }

    /// A lane found `addr` running a new process (`run_id`): the node restarted and lost what
    /// it held in memory (everything, or what it wrote since its last save), possibly faster
    /// than the probes' down-time, so no failover started. Its lanes serve nothing until this
    /// has decided:
    /// - the shard's master, with an in-sync replica and `auto_failover`: that replica holds
    ///   every acknowledged write, so it is promoted; the restarted node is fenced and comes
    ///   back as a replica through a full resync, like a master that died;
    /// - a master with no replica to promote: it is served as it is now (what it lost is lost:
    ///   nothing else holds it), and its in-sync replicas, which hold more, are resynchronised
    ///   from it so that they match what is served;
    /// - a replica: it is no longer in sync: stale, then resynchronised.
    pub(super) async fn node_restarted(&self, addr: &NodeAddr, run_id: &str) {
        let node = self.state.router.pool().node(addr);
        if node.incarnation().is(run_id) {
            // Another lane's report of the same restart, dealt with already.
            return;
        }
        // It forgot what CONFIG SET gave it through the proxy, unless CONFIG REWRITE saved it.
        self.renew_node_settings(addr).await;
        let topology = Arc::clone(self.state.router.load().topology());
        match topology.find_node(addr) {
            Some((shard, NodeRole::Master)) => {
                let health = &self.state.config.health;
                if !self.decides() {
                    // In a fleet only the leader fails over; until its topology arrives the
                    // lanes keep refusing (the gate pauses), and this report comes again.
                    warn!(shard = %shard.name, master = %addr, "the master restarted; the fleet's leader decides");
                    return;
                }
                if let (true, Some(replica)) = (health.auto_failover, self.candidate(shard)) {
                    warn!(shard = %shard.name, master = %addr, promoted = %replica, "the master restarted and lost its data in memory: failing over to its in-sync replica");
                    match self
                        .failover(
                            shard.id,
                            &replica,
                            FailoverKind::MasterDown {
                                since: Instant::now(),
                            },
                        )
                        .await
                    {
                        Ok(()) => {
                            node.incarnation().accept(run_id);
                            return;
                        }
                        Err(e) => {
                            // Not accepted: the lanes keep refusing and report again, and
                            // the failover is tried again; the replica keeps what it holds.
                            warn!(shard = %shard.name, error = %e, "failover after a master restart failed; retrying");
                            return;
                        }
                    }
                } else if health.auto_failover {
                    warn!(shard = %shard.name, master = %addr, "the master restarted and lost its data in memory, with no in-sync replica to promote: it is served as it is now");
                } else {
                    warn!(shard = %shard.name, master = %addr, "the master restarted and lost its data in memory; auto_failover is off, so it is served as it is now and its replicas are resynchronised from it");
                }
                for replica in shard
                    .replicas
                    .iter()
                    .filter(|r| r.state == ReplicaState::InSync)
                {
                    self.not_in_sync(
                        shard.id,
                        &replica.addr,
                        format!("its master {addr} restarted and is served with what it reloaded"),
                    )
                    .await;
                }
            }
            Some((shard, NodeRole::Replica)) => {
                self.not_in_sync(
                    shard.id,
                    addr,
                    "it restarted and lost its data in memory".to_owned(),
                )
                .await;
            }
            None => {}
        }
        node.incarnation().accept(run_id);
    }

    /// Makes the replica `addr` of `shard` no longer in sync because of `reason`: its mirror
    /// link fails (and reports it), or with Redis replication it is recorded stale at once.
    async fn not_in_sync(&self, shard: ShardId, addr: &NodeAddr, reason: String) {
        if self.redis_replication() {
            self.record_stale(shard, addr, &reason).await;
        } else if let Some(link) = self.state.router.mirror().link(addr) {
            link.fail(reason);
        }
    }

    /// Redis replication: makes `replica` a master (`REPLICAOF NO ONE`) before its promotion
    /// is persisted. A graceful failover first waits, within `[mirror] cutover_timeout_ms`
    /// of `started`, until its offset equals the drained master `old`'s.
    async fn take_over(
        &self,
        old: &NodeAddr,
        replica: &NodeAddr,
        graceful: bool,
        started: Instant,
    ) -> Result<(), FailoverError> {
        let bound = self.state.config.mirror.cutover_timeout;
        // A master is down and requests wait: a replica that does not answer within a
        // probe's timeout fails this attempt (the next round tries again).
        let reach = if graceful {
            bound
        } else {
            self.state.config.health.timeout
        };
        let mut conn = self.connect(replica, reach).await?;
        if graceful {
            let mut master = self.connect(old, bound).await?;
            loop {
                let (at, has) = self.offsets(&mut master, &mut conn).await?;
                if has >= at {
                    break;
                }
                if started.elapsed() >= bound {
                    return Err(FailoverError::Drain(bound));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        conn.call_ok(&[b"REPLICAOF", b"NO", b"ONE"]).await?;
        Ok(())
    }

    /// Redis replication, after `promoted` became `shard`'s master: the other replicas (and
    /// the old master `old` after a graceful failover; a fenced one is pointed at it by the
    /// checks once it answers) are told to follow it. Best effort: the checks repair the rest.
    async fn follow_promoted(
        &self,
        shard: ShardId,
        promoted: &NodeAddr,
        old: &NodeAddr,
        graceful: bool,
    ) {
        let followers: Vec<NodeAddr> = {
            let table = self.state.router.load();
            table
                .topology()
                .shard(shard)
                .map(|s| {
                    s.replicas
                        .iter()
                        .map(|r| r.addr.clone())
                        .filter(|a| graceful || a != old)
                        .collect()
                })
                .unwrap_or_default()
        };
        for addr in &followers {
            self.state.ha.forget_link(addr);
            if let Err(e) = self.follow(addr, promoted).await {
                warn!(replica = %addr, master = %promoted, error = %e, "replica not told to follow the new master; the replication checks retry");
            }
        }
        self.state.ha.forget_link(promoted);
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
        let topology = Arc::clone(self.state.router.load().topology());
        let found = super::find_shard(&topology, shard)
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
        self.failover(found.id, &candidate, FailoverKind::Graceful)
            .await?;
        Ok(candidate)
    }
}
