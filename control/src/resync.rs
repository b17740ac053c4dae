//! Resync: a replica that is new, stale, or a returning old master is refilled with Redis's own
//! full sync, then cut over to mirroring.
//!
//! 1. Record it `syncing` (it gets no traffic), give it the credentials to reach the master
//!    (`masteruser`/`masterauth`: the proxy's control credentials, or its client credentials),
//!    and send `REPLICAOF <master>`.
//! 2. Wait (at most `[mirror] resync_timeout_ms`) until its link is up and the sync is done.
//!    A replica removed meanwhile (DELREPLICA) stops it: the resync tells the node
//!    `REPLICAOF NO ONE` (again: its own `REPLICAOF` may have reached the node after the
//!    removal's) and ends without a cut-over.
//! 3. Cut over within `[mirror] cutover_timeout_ms`: pause the shard's gate (requests wait,
//!    nothing fails), drain every master lane, wait until the replica's replication offset
//!    reaches the master's, `REPLICAOF NO ONE`, record it `in-sync` (new epoch: from now on
//!    it gets every write through the mirror), open the gate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redshard_config::{NodeAddr, ReplicaState, ShardId, TopologyChange};
use tracing::{info, warn};

use super::book::HoldReason;
use super::conn::{ConnError, ControlConn};
use super::{ChangeError, Controller};

/// Why a resync stopped; it is retried.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResyncError {
    /// A control exchange failed.
    #[error("{0}")]
    Conn(#[from] ConnError),
    /// The topology could not record a step.
    #[error("{0}")]
    Change(#[from] ChangeError),
    /// The shard, master or replica changed meanwhile.
    #[error("the shard changed during the resync")]
    Moved,
    /// A wait passed its bound.
    #[error("{0}")]
    Timeout(String),
    /// The replica was removed from its shard; not retried.
    #[error("the replica was removed")]
    Removed,
}

/// How often replication progress is polled.
const POLL: Duration = Duration::from_millis(50);

impl Controller {
    /// Resynchronises `addr`, a replica of `shard`, unless `stop` is set before the cut-over
    /// (the replica was removed). Returns how long it took.
    pub(super) async fn resync(
        &self,
        shard: ShardId,
        addr: &NodeAddr,
        stop: &AtomicBool,
    ) -> Result<Duration, ResyncError> {
        let started = Instant::now();
        let settings = self.state.config.mirror.clone();
        let master = {
            let table = self.state.router.load();
            let found = table.topology().shard(shard).ok_or(ResyncError::Moved)?;
            match found.replica(addr) {
                Some(r) if r.state == ReplicaState::InSync => return Ok(started.elapsed()),
                Some(r) if r.state == ReplicaState::Stale => {
                    drop(table);
                    self.change(TopologyChange::SetReplicaState {
                        shard,
                        addr: addr.clone(),
                        state: ReplicaState::Syncing,
                    })
                    .await?;
                    self.master_of(shard)?
                }
                Some(_) => found.master.clone(),
                None => return Err(ResyncError::Moved),
            }
        };
        info!(replica = %addr, master = %master, "resync: full sync from the master");
        let mut replica = self.connect(addr, Duration::from_secs(5)).await?;
        if stop.load(Ordering::Relaxed) {
            return Err(ResyncError::Removed);
        }
        self.give_master_credentials(&mut replica).await?;
        replica
            .call_ok(&[
                b"REPLICAOF",
                master.host().as_bytes(),
                master.port().to_string().as_bytes(),
            ])
            .await?;
        let deadline = Instant::now() + settings.resync_timeout;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Err(stopped(&mut replica, addr).await);
            }
            let info = replica.info("replication").await?;
            if info.get("master_link_status").map(String::as_str) == Some("up")
                && info.get("master_sync_in_progress").map(String::as_str) == Some("0")
            {
                break;
            }
            pace(deadline, "the full sync").await?;
        }
        if stop.load(Ordering::Relaxed) {
            return Err(stopped(&mut replica, addr).await);
        }
        if self.master_of(shard)? != master {
            return Err(ResyncError::Moved);
        }
        self.hold(shard, HoldReason::Resync(addr.clone()));
        let cut = self
            .cut_over(
                shard,
                addr,
                &master,
                &mut replica,
                settings.cutover_timeout,
                stop,
            )
            .await;
        self.release(shard, &HoldReason::Resync(addr.clone()));
        cut?;
        Ok(started.elapsed())
    }

    /// The master of `shard` now.
    fn master_of(&self, shard: ShardId) -> Result<NodeAddr, ResyncError> {
        let table = self.state.router.load();
        table
            .topology()
            .shard(shard)
            .map(|s| s.master.clone())
            .ok_or(ResyncError::Moved)
    }

    /// Sets `masteruser`/`masterauth` on a replica when the proxy uses credentials.
    pub(super) async fn give_master_credentials(
        &self,
        replica: &mut ControlConn,
    ) -> Result<(), ConnError> {
        let backend = &self.state.config.backend;
        let (user, password) = match &backend.control_password {
            Some(p) => (backend.control_username.as_ref(), Some(p)),
            None => (backend.username.as_ref(), backend.password.as_ref()),
        };
        if let Some(password) = password {
            if let Some(user) = user {
                replica
                    .call_ok(&[b"CONFIG", b"SET", b"masteruser", user.as_bytes()])
                    .await?;
            }
            replica
                .call_ok(&[b"CONFIG", b"SET", b"masterauth", password.as_bytes()])
                .await?;
        }
        Ok(())
    }

    /// The write pause of a resync (the gate is held by the caller).
    async fn cut_over(
        &self,
        shard: ShardId,
        addr: &NodeAddr,
        master: &NodeAddr,
        replica: &mut ControlConn,
        bound: Duration,
        stop: &AtomicBool,
    ) -> Result<(), ResyncError> {
        let paused = Instant::now();
        let table = self.state.router.load();
        let route = table.route(shard).ok_or(ResyncError::Moved)?;
        if !redshard_dataplane::router::barrier(route, false, bound).await {
            return Err(ResyncError::Timeout(format!(
                "the master's lanes did not drain within {} ms",
                bound.as_millis()
            )));
        }
        // Not held for the rest of the cut-over: the epoch barrier waits for every old table.
        drop(table);
        let mut master_conn = self.connect(master, bound).await?;
        let info = master_conn.info("replication").await?;
        let target: u64 = info
            .get("master_repl_offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let deadline = paused + bound;
        loop {
            let info = replica.info("replication").await?;
            let offset: u64 = info
                .get("slave_repl_offset")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if offset >= target {
                break;
            }
            pace(deadline, "the replica to reach the master's offset").await?;
        }
        // Removed during the pause: it ends here, before it is made a mirror target.
        if stop.load(Ordering::Relaxed) {
            return Err(stopped(replica, addr).await);
        }
        replica.call_ok(&[b"REPLICAOF", b"NO", b"ONE"]).await?;
        // Redis does not carry its script cache through a full sync.
        for body in self.state.router.mirror().scripts().bodies() {
            replica.call_ok(&[b"SCRIPT", b"LOAD", &body]).await?;
        }
        self.state.router.mirror().forget(addr);
        // Whatever process it runs now holds exactly the master's data: the one to serve (a
        // replica that restarted before its resync would otherwise be refused as restarted).
        let info = replica.info("server").await?;
        let node = self.state.router.pool().node(addr);
        if let Some(run_id) = info.get("run_id") {
            node.incarnation().accept(run_id);
        }
        node.unfence(&self.writer);
        self.change(TopologyChange::SetReplicaState {
            shard,
            addr: addr.clone(),
            state: ReplicaState::InSync,
        })
        .await?;
        self.state.ha.record_resync();
        info!(replica = %addr, pause_ms = paused.elapsed().as_millis() as u64, "resync: cut over to mirroring");
        Ok(())
    }
}

/// Ends the resync of a removed replica: the node stops following the master (the resync's
/// own `REPLICAOF` may have reached it after the removal's `REPLICAOF NO ONE`).
async fn stopped(replica: &mut ControlConn, addr: &NodeAddr) -> ResyncError {
    if let Err(e) = replica.call_ok(&[b"REPLICAOF", b"NO", b"ONE"]).await {
        warn!(replica = %addr, error = %e, "removed replica not told REPLICAOF NO ONE");
    }
    ResyncError::Removed
}

/// Sleeps one [`POLL`] before the next check, or fails once `deadline` has passed.
async fn pace(deadline: Instant, what: &str) -> Result<(), ResyncError> {
    if Instant::now() >= deadline {
        return Err(ResyncError::Timeout(format!(
            "timed out waiting for {what}"
        )));
    }
    tokio::time::sleep(POLL).await;
    Ok(())
}
