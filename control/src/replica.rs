//! Redis replication (`[replication] mode = "redis"`): every replica of a shard, in sync or
//! not, is `REPLICAOF` its master. The controller sets that up, checks it and repairs it.
//!
//! Each round starts, for every shard whose master answers probes and which no cut-over
//! holds, a check (at most every [`CHECK_EVERY`] while all is well, every round while a
//! replica is not in sync). It asks the master and each replica that answers probes for
//! `INFO replication`:
//! - a replica that follows another node or none (a new replica, one whose `REPLICAOF` was
//!   removed by hand, an old master back after a failover, a node restarted empty) is
//!   given the master's credentials (`masteruser`/`masterauth`) and told
//!   `REPLICAOF <master>`; if it was in sync it is recorded stale first (persisted);
//! - an in-sync replica that follows the master but whose link stays down (or in a full
//!   sync) longer than `[health] down_after_ms` while the master answers, or that the probes
//!   call down, is recorded stale;
//! - a replica that is not in sync (`stale`, or `syncing` when just added) and follows the
//!   master with its link down is given the credentials again (they may be what is wrong);
//!   it becomes in sync (persisted) once its link is up, no full sync runs and its offset reached the
//!   master's `master_repl_offset` sampled after the link was seen up; its process is then
//!   accepted and the node unfenced, like a resync's cut-over in proxy mode, but with no write
//!   pause and no `REPLICAOF NO ONE`;
//! - a shard's master that follows another node (a failover interrupted between the
//!   replica's `REPLICAOF NO ONE` and its promotion being persisted leaves the opposite; an
//!   operator may do this one) is told `REPLICAOF NO ONE`: it is the master the topology
//!   serves.
//!
//! What each check saw of a replica (attached, offset, lag in bytes) is kept in
//! [`HaStats`](super::stats::HaStats) for INFO and the admin port's status.
//!
//! The check of a shard, its failovers and the removal of one of its replicas exclude each
//! other (one lock per shard, [`Controller::replication_lock`]), so a check never points a
//! node at a master that has just been replaced, nor re-attaches a replica just removed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redshard_config::{NodeAddr, ReplicaState, ReplicationMode, Shard, ShardId, TopologyChange};
use tracing::{info, warn};

use super::conn::{ConnError, ControlConn};
use super::stats::ReplicaLinkView;
use super::{probe, Controller};

/// How often a shard whose replicas are all in sync and attached is checked.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// How long one check waits for a replica that is attached to reach the master's offset
/// before it leaves it to the next check.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);

/// How often a replica's offset is polled while it catches up.
const POLL: Duration = Duration::from_millis(20);

/// The checks' bookkeeping; nothing here is persisted.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    /// Per shard: its lock, whether a check runs and when the next is due.
    shards: Mutex<HashMap<ShardId, ShardTrack>>,
    /// In-sync replicas seen following the master with their link down, since when.
    detached: Mutex<HashMap<NodeAddr, Instant>>,
    /// Per shard, the replication ID (`master_replid`) its master had at the last check: the
    /// history a replica to promote must share.
    histories: Mutex<HashMap<ShardId, String>>,
    /// The control connection each node's last check gave back, for the next check: a shard
    /// is checked every half second, and a new connection (and TLS handshake and AUTH) to
    /// its master and each replica every time would cost both sides for nothing.
    kept: Mutex<HashMap<NodeAddr, ControlConn>>,
}

/// One shard's checks.
#[derive(Debug, Default)]
struct ShardTrack {
    /// Held by a check, a failover and a replica's removal (see the module docs).
    lock: Arc<tokio::sync::Mutex<()>>,
    /// A check of the shard runs.
    running: bool,
    /// No check before this.
    next: Option<Instant>,
    /// The master the last check began with: a new one (a failover) is checked at once,
    /// whenever the last check was, so that writes to it soon wait for the replicas that
    /// stream from it (its node knows of none before its first check).
    master: Option<NodeAddr>,
}

impl Tracker {
    fn shards(&self) -> std::sync::MutexGuard<'_, HashMap<ShardId, ShardTrack>> {
        self.shards.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn detached(&self) -> std::sync::MutexGuard<'_, HashMap<NodeAddr, Instant>> {
        self.detached.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn histories(&self) -> std::sync::MutexGuard<'_, HashMap<ShardId, String>> {
        self.histories
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, HashMap<NodeAddr, ControlConn>> {
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks a check of `shard` running if none runs and one is due.
    fn begin(&self, shard: ShardId, master: &NodeAddr, now: Instant) -> bool {
        let mut shards = self.shards();
        let track = shards.entry(shard).or_default();
        let same_master = track.master.as_ref() == Some(master);
        if track.running || (same_master && track.next.is_some_and(|next| now < next)) {
            return false;
        }
        track.running = true;
        if !same_master {
            track.master = Some(master.clone());
        }
        true
    }

    /// Ends the check of `shard`; the next is due after `pause`.
    fn end(&self, shard: ShardId, pause: Duration) {
        if let Some(track) = self.shards().get_mut(&shard) {
            track.running = false;
            track.next = Some(Instant::now() + pause);
        }
    }
}

/// What one replica's `INFO replication` says about following `master`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Following {
    /// It is `REPLICAOF` `master` (role slave, that host and port).
    pub follows: bool,
    /// Its link to the master is up and no full sync runs.
    pub link_up: bool,
    /// Its replication offset.
    pub offset: u64,
}

impl Following {
    /// Reads `info` (a replica's `INFO replication`) against `master`.
    pub(super) fn read(info: &HashMap<String, String>, master: &NodeAddr) -> Self {
        let field = |name: &str| info.get(name).map(String::as_str);
        let follows = field("role") == Some("slave")
            && field("master_host") == Some(master.host())
            && field("master_port").and_then(|p| p.parse::<u16>().ok()) == Some(master.port());
        let link_up = field("master_link_status") == Some("up")
            && field("master_sync_in_progress") == Some("0");
        Self {
            follows,
            link_up,
            offset: replica_offset(info),
        }
    }
}

/// A node's replication offset from its `INFO replication`: `slave_repl_offset` on a
/// replica, else `master_repl_offset` (a master, or a replica that never linked).
pub(super) fn replica_offset(info: &HashMap<String, String>) -> u64 {
    info.get("slave_repl_offset")
        .or_else(|| info.get("master_repl_offset"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Whether a node whose `INFO replication` is `info` holds the history `replid` (its own
/// replication ID, or the one it continued from after a promotion): a replica that has
/// meanwhile been fully synced from another history (say, from its master restarted empty)
/// does not.
fn shares_history(info: &HashMap<String, String>, replid: &str) -> bool {
    info.get("master_replid").is_some_and(|id| id == replid)
        || info.get("master_replid2").is_some_and(|id| id == replid)
}

/// The candidate to promote among `asked` (offset, whether it shares the master's last
/// known history, address): one that shares it before one that does not, then the
/// highest offset.
fn pick<'a>(asked: impl IntoIterator<Item = (u64, bool, &'a NodeAddr)>) -> Option<&'a NodeAddr> {
    asked
        .into_iter()
        .max_by_key(|(offset, shares, _)| (*shares, *offset))
        .map(|(_, _, addr)| addr)
}

/// A master's `master_repl_offset`.
fn master_offset(info: &HashMap<String, String>) -> u64 {
    info.get("master_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Controller {
    /// Whether replicas follow their master by Redis replication (`[replication] mode =
    /// "redis"`) rather than by the proxy's mirroring.
    pub(super) fn redis_replication(&self) -> bool {
        self.state.config.replication.mode == ReplicationMode::Redis
    }

    /// The lock that a check of `shard`, its failover and the removal of one of its replicas
    /// hold (see the module docs).
    pub(super) fn replication_lock(&self, shard: ShardId) -> Arc<tokio::sync::Mutex<()>> {
        Arc::clone(&self.replicas.shards().entry(shard).or_default().lock)
    }

    /// Starts the check of `shard`'s replication unless one runs, it is not due yet, its
    /// master is not answering, or a cut-over holds it. Without `repair` (a proxy of a fleet
    /// that does not lead) the check only notes which replicas stream from the master, for
    /// this proxy's writes' `WAIT` ([`Controller::note_streaming_replicas`]): the leader
    /// sets up and records the replicas, but each proxy sends its own `WAIT`s.
    pub(super) fn start_replica_check(
        self: &Arc<Self>,
        shard: &Shard,
        master: &probe::ProbeStatus,
        repair: bool,
    ) {
        if !master.is_up() || self.book().is_held(shard.id) {
            return;
        }
        if !self.replicas.begin(shard.id, &shard.master, Instant::now()) {
            return;
        }
        let controller = Arc::clone(self);
        let id = shard.id;
        let names = super::ack::replica_names(shard);
        tokio::spawn(async move {
            // Before the check's lock, which a failover waits for: a slow name server must
            // not hold a failover up.
            if !names.is_empty() {
                controller.resolve_replica_names(names).await;
            }
            let pause = match controller.check_replication(id, repair).await {
                Ok(true) => CHECK_EVERY,
                Ok(false) => Duration::ZERO,
                Err(e) => {
                    info!(shard = %id, error = %e, "replication check stopped; next round tries again");
                    Duration::ZERO
                }
            };
            controller.replicas.end(id, pause);
        });
    }

    /// One check of `shard` (see the module docs), or without `repair` only the note of its
    /// master's streaming replicas. Returns whether every replica is in sync and attached
    /// (true without `repair`: the next one is due in [`CHECK_EVERY`]).
    async fn check_replication(&self, shard: ShardId, repair: bool) -> Result<bool, ConnError> {
        let lock = self.replication_lock(shard);
        let _checking = lock.lock().await;
        let (found, replicas) = {
            let table = self.state.router.load();
            let Some(found) = table.topology().shard(shard) else {
                return Ok(true);
            };
            let replicas: Vec<_> = found
                .replicas
                .iter()
                .map(|r| (r.addr.clone(), r.state))
                .collect();
            (found.clone(), replicas)
        };
        let master = found.master.clone();
        if replicas.is_empty() {
            // Nothing to set up or repair; no connection to the master every half second.
            return Ok(true);
        }
        let mut master_conn = self.check_conn(&master).await?;
        let master_info = master_conn.info("replication").await?;
        let follows_another = master_info.get("role").map(String::as_str) == Some("slave");
        if !repair {
            if !follows_another {
                self.note_streaming_replicas(&found, &master_info);
            }
            self.give_back(master_conn);
            return Ok(true);
        }
        if follows_another {
            warn!(shard = %shard, %master, "the shard's master follows another node: telling it REPLICAOF NO ONE");
            master_conn.call_ok(&[b"REPLICAOF", b"NO", b"ONE"]).await?;
            self.give_back(master_conn);
            return Ok(false);
        }
        self.note_streaming_replicas(&found, &master_info);
        let master_at = master_offset(&master_info);
        if let Some(replid) = master_info.get("master_replid") {
            self.replicas.histories().insert(shard, replid.clone());
        }
        let mut settled = true;
        let health = &self.state.config.health;
        for (addr, state) in replicas {
            let probe = self.probes.status(&addr);
            if !probe.is_up() {
                // Not answering: not attached either, whatever the last check saw.
                if let Some(view) = self.state.ha.link(&addr).filter(|v| v.attached) {
                    let detached = ReplicaLinkView {
                        attached: false,
                        ..view
                    };
                    self.state.ha.record_link(&addr, detached);
                }
                if state == ReplicaState::InSync && probe.is_down(health) {
                    self.record_stale(shard, &addr, "it is down").await;
                }
                settled = false;
                continue;
            }
            let checked = match self.check_conn(&addr).await {
                Ok(mut conn) => {
                    let checked = self
                        .check_replica(
                            shard,
                            &master,
                            &mut master_conn,
                            master_at,
                            &mut conn,
                            state,
                        )
                        .await;
                    if checked.is_ok() {
                        self.give_back(conn);
                    }
                    checked
                }
                Err(e) => Err(CheckError::Replica(e)),
            };
            match checked {
                Ok(fine) => settled &= fine,
                Err(CheckError::Replica(e)) => {
                    info!(replica = %addr, error = %e, "replica not checked");
                    settled = false;
                }
                Err(CheckError::Master(e)) => return Err(e),
            }
        }
        self.give_back(master_conn);
        Ok(settled)
    }

    /// A control connection to `addr` for a replication check: the one the last check gave
    /// back while it is still open, else a new one.
    async fn check_conn(&self, addr: &NodeAddr) -> Result<ControlConn, ConnError> {
        let kept = self.replicas.kept().remove(addr);
        if let Some(mut conn) = kept {
            if conn.still_open() {
                return Ok(conn);
            }
        }
        self.connect(addr, self.state.config.health.timeout).await
    }

    /// Keeps `conn`, whose exchanges all went well, for the next check of its node; the
    /// connections of nodes no longer in the topology are let go.
    fn give_back(&self, conn: ControlConn) {
        let table = self.state.router.load();
        let mut kept = self.replicas.kept();
        kept.retain(|addr, _| table.topology().nodes().any(|n| n == addr));
        if table.topology().nodes().any(|n| n == conn.addr()) {
            kept.insert(conn.addr().clone(), conn);
        }
    }

    /// Checks and repairs one replica of `shard`. Returns whether it is in sync and attached.
    async fn check_replica(
        &self,
        shard: ShardId,
        master: &NodeAddr,
        master_conn: &mut ControlConn,
        master_at: u64,
        conn: &mut ControlConn,
        state: ReplicaState,
    ) -> Result<bool, CheckError> {
        let addr = &conn.addr().clone();
        let info = conn
            .info("replication")
            .await
            .map_err(CheckError::Replica)?;
        let seen = Following::read(&info, master);
        self.state.ha.record_link(
            addr,
            ReplicaLinkView {
                attached: seen.follows && seen.link_up,
                offset: seen.offset,
                lag: master_at.saturating_sub(seen.offset),
            },
        );
        if !seen.follows {
            self.replicas.detached().remove(addr);
            if state == ReplicaState::InSync {
                self.record_stale(
                    shard,
                    addr,
                    &format!("it does not follow its master {master}"),
                )
                .await;
            }
            info!(replica = %addr, %master, "replica told to follow its master");
            self.give_master_credentials(conn)
                .await
                .map_err(CheckError::Replica)?;
            conn.call_ok(&[
                b"REPLICAOF",
                master.host().as_bytes(),
                master.port().to_string().as_bytes(),
            ])
            .await
            .map_err(CheckError::Replica)?;
            return Ok(false);
        }
        if state == ReplicaState::InSync {
            if seen.link_up {
                self.replicas.detached().remove(addr);
                return Ok(true);
            }
            let since = *self
                .replicas
                .detached()
                .entry(addr.clone())
                .or_insert_with(Instant::now);
            if since.elapsed() >= self.state.config.health.down_after {
                self.replicas.detached().remove(addr);
                self.record_stale(
                    shard,
                    addr,
                    &format!(
                        "its link to its master {master} has been down for {} ms",
                        since.elapsed().as_millis()
                    ),
                )
                .await;
            }
            return Ok(false);
        }
        if !seen.link_up {
            // Following but not linked: its credentials may be what is wrong (changed by
            // hand, or the node restarted with others); giving them again is cheap.
            self.give_master_credentials(conn)
                .await
                .map_err(CheckError::Replica)?;
            return Ok(false);
        }
        // Attached: it is in sync once it has what the master had after that.
        let target = master_offset(
            &master_conn
                .info("replication")
                .await
                .map_err(CheckError::Master)?,
        );
        let deadline = Instant::now() + CATCH_UP_WAIT;
        loop {
            let info = conn
                .info("replication")
                .await
                .map_err(CheckError::Replica)?;
            let now = Following::read(&info, master);
            if !(now.follows && now.link_up) {
                return Ok(false);
            }
            if now.offset >= target {
                break;
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(POLL).await;
        }
        // Whatever process it runs now holds the master's data: the one to serve.
        let server = conn.info("server").await.map_err(CheckError::Replica)?;
        let node = self.state.router.pool().node(addr);
        if let Some(run_id) = server.get("run_id") {
            node.incarnation().accept(run_id);
        }
        node.unfence(&self.writer);
        if self.set_state(shard, addr, ReplicaState::InSync).await {
            // Brought back in sync; a `syncing` one (new, or listed in the file at a first
            // start) is only coming in.
            if state == ReplicaState::Stale {
                self.state.ha.record_resync();
            }
            info!(replica = %addr, %master, "replica caught up with its master: in sync");
        }
        Ok(true)
    }

    /// Records `addr`'s `state` in `shard` (persisted); returns whether it was recorded (a
    /// replica removed meanwhile, or already in that state, is not).
    async fn set_state(&self, shard: ShardId, addr: &NodeAddr, state: ReplicaState) -> bool {
        let current = {
            let table = self.state.router.load();
            table
                .topology()
                .shard(shard)
                .and_then(|s| s.replica(addr))
                .map(|r| r.state)
        };
        if current.is_none_or(|c| c == state) {
            return false;
        }
        match self
            .change(TopologyChange::SetReplicaState {
                shard,
                addr: addr.clone(),
                state,
            })
            .await
        {
            Ok(_) => true,
            Err(e) => {
                warn!(replica = %addr, %state, error = %e, "replica state not recorded");
                false
            }
        }
    }

    /// The in-sync replica of `shard` that answers with the highest replication offset, or
    /// `fallback` when none answers. One that still holds the history the master had at the
    /// last check comes first: a replica that has just been fully synced from its master
    /// restarted empty (in the moment before the failover) holds nothing worth promoting.
    pub(super) async fn most_advanced(&self, shard: ShardId, fallback: &NodeAddr) -> NodeAddr {
        let candidates: Vec<NodeAddr> = {
            let table = self.state.router.load();
            let Some(found) = table.topology().shard(shard) else {
                return fallback.clone();
            };
            found
                .replicas
                .iter()
                .filter(|r| r.state == ReplicaState::InSync)
                .filter(|r| self.probes.status(&r.addr).is_up())
                .map(|r| r.addr.clone())
                .collect()
        };
        let timeout = self.state.config.health.timeout;
        let history = self.replicas.histories().get(&shard).cloned();
        let asked = futures_util::future::join_all(candidates.iter().map(|addr| {
            let history = history.as_deref();
            async move {
                let mut conn = self.connect(addr, timeout).await.ok()?;
                let info = conn.info("replication").await.ok()?;
                let shares = history.is_none_or(|id| shares_history(&info, id));
                Some((replica_offset(&info), shares, addr))
            }
        }))
        .await;
        pick(asked.into_iter().flatten()).map_or_else(|| fallback.clone(), NodeAddr::clone)
    }

    /// Tells the node at `addr` to follow `master` (with the master's credentials).
    ///
    /// # Errors
    /// The node could not be reached or refused.
    pub(super) async fn follow(&self, addr: &NodeAddr, master: &NodeAddr) -> Result<(), ConnError> {
        let mut conn = self.connect(addr, self.state.config.health.timeout).await?;
        self.give_master_credentials(&mut conn).await?;
        conn.call_ok(&[
            b"REPLICAOF",
            master.host().as_bytes(),
            master.port().to_string().as_bytes(),
        ])
        .await
        .map(drop)
    }

    /// The replication offsets of `master` and of the replica at `replica`, asked now.
    ///
    /// # Errors
    /// Either could not be asked.
    pub(super) async fn offsets(
        &self,
        master: &mut ControlConn,
        replica: &mut ControlConn,
    ) -> Result<(u64, u64), ConnError> {
        let at = master_offset(&master.info("replication").await?);
        let has = replica_offset(&replica.info("replication").await?);
        Ok((at, has))
    }
}

/// Why a replica's check stopped.
#[derive(Debug)]
enum CheckError {
    /// The replica could not be asked or told: the others are still checked.
    Replica(ConnError),
    /// The master could not be asked: the check ends.
    Master(ConnError),
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::conn::info_of as info;

    #[test]
    fn a_replica_follows_only_its_master_with_its_link_up() {
        let master: NodeAddr = "127.0.0.1:7001".parse().unwrap();
        let attached = info(&[
            ("role", "slave"),
            ("master_host", "127.0.0.1"),
            ("master_port", "7001"),
            ("master_link_status", "up"),
            ("master_sync_in_progress", "0"),
            ("slave_repl_offset", "1234"),
            ("master_repl_offset", "1234"),
        ]);
        assert_eq!(
            Following::read(&attached, &master),
            Following {
                follows: true,
                link_up: true,
                offset: 1234
            }
        );
        let other: NodeAddr = "127.0.0.1:7002".parse().unwrap();
        assert!(!Following::read(&attached, &other).follows);

        let mut syncing = attached.clone();
        syncing.insert("master_sync_in_progress".into(), "1".into());
        assert!(!Following::read(&syncing, &master).link_up);
        let mut down = attached;
        down.insert("master_link_status".into(), "down".into());
        assert!(!Following::read(&down, &master).link_up);

        let standalone = info(&[("role", "master"), ("master_repl_offset", "77")]);
        assert_eq!(
            Following::read(&standalone, &master),
            Following {
                follows: false,
                link_up: false,
                offset: 77
            }
        );
    }

    #[test]
    fn ipv6_masters_are_matched_by_their_bare_host() {
        let master: NodeAddr = "[::1]:7001".parse().unwrap();
        let seen = info(&[
            ("role", "slave"),
            ("master_host", "::1"),
            ("master_port", "7001"),
        ]);
        assert!(Following::read(&seen, &master).follows);
    }

    #[test]
    fn the_candidate_shares_the_masters_history_then_has_the_highest_offset() {
        let (a, b, c): (NodeAddr, NodeAddr, NodeAddr) = (
            "127.0.0.1:7001".parse().unwrap(),
            "127.0.0.1:7002".parse().unwrap(),
            "127.0.0.1:7003".parse().unwrap(),
        );
        assert_eq!(
            pick([(10, true, &a), (30, true, &b), (20, true, &c)]),
            Some(&b)
        );
        // Synced from another history (its master restarted empty): last resort only.
        assert_eq!(pick([(10, true, &a), (500, false, &b)]), Some(&a));
        assert_eq!(pick([(500, false, &b)]), Some(&b));
        assert_eq!(pick([]), None);

        let promoted = info(&[("master_replid", "new"), ("master_replid2", "old")]);
        assert!(shares_history(&promoted, "old"));
        assert!(shares_history(&promoted, "new"));
        assert!(!shares_history(&promoted, "other"));
    }

    #[test]
    fn checks_of_a_shard_do_not_overlap_and_wait_their_pause_unless_its_master_changed() {
        let tracker = Tracker::default();
        let now = Instant::now();
        let (old, new): (NodeAddr, NodeAddr) = (
            "127.0.0.1:7000".parse().unwrap(),
            "127.0.0.1:7001".parse().unwrap(),
        );
        assert!(tracker.begin(ShardId(1), &old, now));
        assert!(!tracker.begin(ShardId(1), &old, now), "one check at a time");
        assert!(
            !tracker.begin(ShardId(1), &new, now),
            "even of a new master"
        );
        assert!(
            tracker.begin(ShardId(2), &old, now),
            "shards are checked apart"
        );
        tracker.end(ShardId(1), Duration::from_secs(60));
        assert!(
            !tracker.begin(ShardId(1), &old, Instant::now()),
            "not due yet"
        );
        assert!(
            tracker.begin(ShardId(1), &new, Instant::now()),
            "a failover's new master is checked at once"
        );
        tracker.end(ShardId(1), Duration::from_secs(60));
        assert!(
            !tracker.begin(ShardId(1), &new, Instant::now()),
            "then it waits"
        );
        tracker.end(ShardId(2), Duration::ZERO);
        assert!(tracker.begin(ShardId(2), &old, Instant::now()));
    }
}
