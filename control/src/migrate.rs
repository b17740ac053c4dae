//! Online slot migration between shards of plain Redis nodes (no cluster mode).
//!
//! A migration moves a set of slots from one shard to another:
//! 1. **Begin**: the slots become `Migrating { from, to }` in a new epoch. From then on every
//!    request for a key of those slots is served by `to`, after the proxy made sure the key has
//!    moved ([`Migrations::ensure_moved`], in [`redshard_dataplane::migration`]). The proxy waits until no request is still routed
//!    by the old epoch (the router's epoch barrier) and drains the source's lanes, so no
//!    request can reach the source anymore.
//! 2. **Move**: a background mover SCANs the source master, picks the keys of migrating slots,
//!    and moves each under a per-key lock shared with the data path: `PEXPIRETIME` and `DUMP`
//!    on the source, `RESTORE ... REPLACE [ABSTTL]` on the target and `DEL` on the source, the
//!    last two as mirrored writes, so both shards' replicas follow in lane order. In a fleet
//!    the mover sends one `MIGRATE ... KEYS` per batch instead, atomic on the source, and
//!    every proxy's moves wait until the fleet acknowledged the migrating epoch (see
//!    [`redshard_dataplane::migration`]).
//! 3. **Finish**: after one full SCAN pass moved every key it found, a second pass verifies
//!    that none is left; the slots become `Owned(to)` in a new epoch.
//!
//! While it runs, a migration is in one [`Phase`]: `Starting` (step 1), `Moving` and
//! `Verifying` passes (steps 2-3), then `Finishing`, or `Cancelling` (see `LIFECYCLE.md`).
//!
//! Migrations run one after another from a queue (a rebalance queues several). The queue is
//! part of the topology ([`Topology::queued`]), persisted with it: a move leaves it in the
//! same change that begins it. A restart resumes the slots the persisted topology shows
//! migrating, then every queued move in order; a queued move that no longer fits the
//! topology is reported (log, `MIGRATIONS`) as failed and dropped, never silently.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redshard_config::{
    Migration, ShardId, Slot, SlotRange, SlotState, Topology, TopologyChange, TopologyError,
};
use tracing::{debug, info, warn};

use super::Controller;
use redshard_dataplane::migration::{bulk, Job};
use redshard_protocol::resp::reply;

pub use redshard_dataplane::migration::{
    MigrationProgress, MigrationState, Migrations, MovedTotals,
};

/// Why a migration cannot start.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// A shard name or address that matches no shard.
    #[error("no shard {0}")]
    NoShard(String),
    /// Source and target are the same shard.
    #[error("the source and the target are the same shard")]
    SameShard,
    /// A slot is not owned by the source, or already migrating.
    #[error("{0}")]
    Slots(String),
    /// Nothing to cancel.
    #[error("no migration is running")]
    NoneRunning,
    /// The topology with the new queue could not be saved; nothing was queued or cancelled.
    #[error("{0}")]
    Persist(String),
}

impl From<super::ChangeError> for MigrateError {
    fn from(e: super::ChangeError) -> Self {
        match e {
            super::ChangeError::Refused(e) => MigrateError::Slots(e.to_string()),
            e => MigrateError::Persist(e.to_string()),
        }
    }
}

/// Keys per SCAN call of the mover.
const SCAN_COUNT: &str = "500";
/// Failed passes a migration survives (a source or target failing over) before it fails.
const PASS_RETRIES: u32 = 60;
/// Pause before a failed pass is retried.
const PASS_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Keys moved at the same time by the mover.
const PARALLEL_MOVES: usize = 16;
/// Keys per `MIGRATE ... KEYS` of the mover in a fleet: the source is blocked while it
/// sends them, so a batch stays small (a SCAN page is cut into several).
const MIGRATE_BATCH: usize = 64;
/// How long a migration's start waits for the old epochs' requests (the epoch barrier, then
/// the source's lanes) before going on with a warning.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The id of the shard named `name`, or whose master is `name`.
fn find_shard(topology: &Topology, name: &str) -> Result<ShardId, MigrateError> {
    super::find_shard(topology, name)
        .map(|s| s.id)
        .ok_or_else(|| MigrateError::NoShard(name.to_owned()))
}

impl Controller {
    /// Queues moving `slots` from shard `from` to shard `to` (each a shard name or its
    /// master's address); runs after those queued before.
    ///
    /// # Errors
    /// Unknown shards, the same shard twice, or slots the source does not own.
    pub async fn migrate(
        self: &Arc<Self>,
        from: &str,
        to: &str,
        slots: Vec<SlotRange>,
    ) -> Result<(), MigrateError> {
        // The topology, not the table: the change below replaces the table.
        let topology = Arc::clone(self.state.router.load().topology());
        let (from, to) = (find_shard(&topology, from)?, find_shard(&topology, to)?);
        if from == to {
            return Err(MigrateError::SameShard);
        }
        if slots.is_empty() {
            return Err(MigrateError::Slots("no slots given".into()));
        }
        for range in &slots {
            for slot in range.slots() {
                if topology.slot_state(slot) != SlotState::Owned(from) {
                    return Err(MigrateError::Slots(format!(
                        "slot {} is not owned by the source shard (or already migrating)",
                        slot.get()
                    )));
                }
            }
        }
        self.queue(vec![Migration { from, to, slots }]).await
    }

    /// Queues `moves` to run in order after those queued before, persisting them with the
    /// topology first (one change), so a restart resumes them.
    ///
    /// # Errors
    /// A move does not fit the topology (see [`TopologyChange::QueueMigrations`]), or the
    /// topology could not be saved; nothing is queued then.
    pub async fn queue(self: &Arc<Self>, moves: Vec<Migration>) -> Result<(), MigrateError> {
        let migrations = &self.state.migrations;
        // Held across the change: the queue in memory keeps the persisted order.
        let _queueing = self.queue_lock.lock().await;
        let topology = self
            .change_now(&TopologyChange::QueueMigrations {
                moves: moves.clone(),
            })
            .await?;
        let mut queue = migrations.queue();
        for m in moves {
            queue.push_back(Job::new(&topology, m.from, m.to, m.slots, false));
        }
        drop(queue);
        migrations.wake_mover();
        Ok(())
    }

    /// Queues moving `count` slots owned by `from` (its highest-numbered ones) to `to`;
    /// returns the ranges chosen.
    ///
    /// # Errors
    /// As [`Controller::migrate`], or the source owns fewer than `count` slots.
    pub async fn migrate_count(
        self: &Arc<Self>,
        from: &str,
        to: &str,
        count: usize,
    ) -> Result<Vec<SlotRange>, MigrateError> {
        // The topology, not the table: the change below replaces the table.
        let topology = Arc::clone(self.state.router.load().topology());
        let source = find_shard(&topology, from)?;
        let mut queued = vec![false; redshard_config::SLOT_COUNT];
        for job in self.state.migrations.queue().iter() {
            for slot in job.slots.iter().flat_map(SlotRange::slots) {
                queued[slot.index()] = true;
            }
        }
        let owned: Vec<Slot> = topology
            .slots_of(source)
            .iter()
            .flat_map(SlotRange::slots)
            .filter(|s| !queued[s.index()])
            .collect();
        if count == 0 || owned.len() < count {
            return Err(MigrateError::Slots(format!(
                "shard {from} owns {} slots that are not queued to move; cannot move {count}",
                owned.len()
            )));
        }
        let chosen = redshard_config::slot::compact(owned[owned.len() - count..].iter().copied());
        self.migrate(from, to, chosen.clone()).await?;
        Ok(chosen)
    }

    /// Queued, running and recently finished migrations, oldest first.
    #[must_use]
    pub fn migrations(&self) -> Vec<MigrationProgress> {
        self.state.migrations.progress()
    }

    /// Cancels the running and queued migrations: queued ones are dropped (from the
    /// persisted topology too), the running one is turned around, so its keys already moved
    /// go back to the source.
    ///
    /// # Errors
    /// Nothing is queued or running, or the topology without the queue could not be saved.
    pub async fn cancel_migrations(&self) -> Result<(), MigrateError> {
        let migrations = &self.state.migrations;
        let _queueing = self.queue_lock.lock().await;
        let dropped: Vec<Job> = {
            if migrations.queue().is_empty() {
                return Err(MigrateError::NoneRunning);
            }
            if !self.state.router.load().topology().queued.is_empty() {
                self.change_now(&TopologyChange::ClearQueuedMigrations)
                    .await?;
            }
            let mut queue = migrations.queue();
            let running = queue.pop_front();
            let rest: Vec<Job> = queue.drain(..).collect();
            queue.extend(running);
            rest
        };
        for job in dropped {
            job.update(|p| p.state = MigrationState::Cancelled);
            migrations.remember(job.snapshot());
        }
        migrations.request_cancel();
        Ok(())
    }

    /// Queues, at start, the migrations the topology shows in progress, then the queued
    /// ones in order (a restart resumes the whole plan). A queued move that can no longer run
    /// after those before it is reported as failed and dropped from the persisted queue.
    pub(super) fn resume_migrations(self: &Arc<Self>) {
        let topology = Arc::clone(self.state.router.load().topology());
        let migrations = &self.state.migrations;
        let mut jobs = Vec::new();
        // The topology as it will be once each resumed move is done, to check the next.
        let mut after = (*topology).clone();
        for migration in topology.migrations() {
            info!(from = %migration.from, to = %migration.to, slots = %show(&migration.slots), "resuming a migration");
            if let Ok(next) = after.apply(&TopologyChange::FinishMigration {
                slots: migration.slots.clone(),
            }) {
                after = next;
            }
            jobs.push(Job::new(
                &topology,
                migration.from,
                migration.to,
                migration.slots,
                true,
            ));
        }
        let total = topology.queued.len();
        for (i, m) in topology.queued.iter().enumerate() {
            let fits = after
                .apply(&TopologyChange::StartMigration {
                    migration: m.clone(),
                })
                .and_then(|t| {
                    t.apply(&TopologyChange::FinishMigration {
                        slots: m.slots.clone(),
                    })
                });
            match fits {
                Ok(next) => {
                    info!(from = %m.from, to = %m.to, slots = %show(&m.slots), position = i + 1, queued = total, "resuming a queued migration");
                    after = next;
                    jobs.push(Job::new(&topology, m.from, m.to, m.slots.clone(), false));
                }
                Err(e) => {
                    let job = Job::new(&topology, m.from, m.to, m.slots.clone(), false);
                    self.refuse_queued(&job, m, &e);
                }
            }
        }
        let mut queue = migrations.queue();
        queue.extend(jobs);
        drop(queue);
        migrations.wake_mover();
    }

    /// Reports a queued move that no longer fits the topology (log and `MIGRATIONS`, as
    /// failed) and drops it from the persisted queue.
    fn refuse_queued(self: &Arc<Self>, job: &Job, m: &Migration, e: &TopologyError) {
        let why = format!(
            "this queued move no longer fits the topology and was dropped: {e}; plan it again (REBALANCE or MIGRATE) once TOPOLOGY shows the slots where they should be"
        );
        warn!(from = %job.snapshot().from, to = %job.snapshot().to, slots = %show(&m.slots), error = %e, "a queued migration no longer fits the topology; dropped from the queue, not run");
        job.update(|p| p.state = MigrationState::Failed(why));
        self.state.migrations.remember(job.snapshot());
        let controller = Arc::clone(self);
        let migration = m.clone();
        tokio::spawn(async move {
            let dropped = controller
                .change_now(&TopologyChange::DropQueuedMigration { migration })
                .await;
            if let Err(e) = dropped {
                warn!(error = %e, "could not drop the queued migration from the persisted topology; the next start reports it again");
            }
        });
    }

    /// The mover: runs queued migrations one after another, forever.
    pub(super) async fn run_migrations(
        self: Arc<Self>,
        mut shutdown: redshard_dataplane::shutdown::Shutdown,
    ) {
        let migrations = &self.state.migrations;
        loop {
            let next = {
                let mut queue = migrations.queue();
                queue.front_mut().map(|job| {
                    job.started = Some(Instant::now());
                    job.update(|p| p.state = MigrationState::Running);
                    (
                        job.from,
                        job.to,
                        job.slots.clone(),
                        job.begun,
                        Arc::clone(&job.progress),
                    )
                })
            };
            let Some((from, to, slots, begun, progress)) = next else {
                tokio::select! {
                    () = migrations.mover_woken() => continue,
                    () = shutdown.wait() => return,
                }
            };
            migrations.clear_cancel();
            // A shutdown stops the move where it is: a key whose copy reached the target but
            // not yet left the source is moved again (from the same, unchanged copy) by the
            // first request for it or by the resumed migration. So does the end of this
            // proxy's leadership in a fleet: the new leader resumes from etcd's topology.
            let outcome = tokio::select! {
                outcome = self.run_one(from, to, &slots, begun, &progress) => outcome,
                () = shutdown.wait() => return,
                () = self.until_not_leading() => continue,
            };
            let topology = Arc::clone(self.state.router.load().topology());
            // One critical section (queue, then history): a status read never sees the job in
            // neither place, nor a cancel without its reversal.
            let mut queue = migrations.queue();
            let Some(job) = queue.pop_front() else {
                continue;
            };
            let (from_name, to_name) = (name_of(&topology, from), name_of(&topology, to));
            match outcome {
                Ok(Outcome::Done) => {
                    job.update(|p| p.state = MigrationState::Done);
                    info!(from = from_name, to = to_name, "migration done");
                }
                Ok(Outcome::Cancelled) => {
                    job.update(|p| p.state = MigrationState::Cancelled);
                    // Bring back what moved: the reversed migration runs next.
                    queue.push_front(Job::new(&topology, to, from, slots.clone(), true));
                }
                Err(e) => {
                    warn!(from = from_name, to = to_name, error = %e, "migration failed; its slots stay migrating (requests are still served); retry with a new migration or cancel");
                    job.update(|p| p.state = MigrationState::Failed(e));
                }
            }
            migrations.remember(job.snapshot());
            drop(queue);
        }
    }

    /// Runs one migration to its end, phase by phase (see [`Phase`]).
    async fn run_one(
        &self,
        from: ShardId,
        to: ShardId,
        slots: &[SlotRange],
        begun: bool,
        progress: &Arc<Mutex<MigrationProgress>>,
    ) -> Result<Outcome, String> {
        let migrations = &self.state.migrations;
        let mut phase = Phase::Starting;
        // Failed passes over the whole migration, against PASS_RETRIES.
        let mut failures = 0;
        loop {
            let next = match phase {
                Phase::Starting => {
                    self.begin(from, to, slots, begun).await?;
                    let estimate = self.estimate_keys(from, slots).await;
                    progress
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .keys_estimate = estimate;
                    Phase::Moving { pass: 1 }
                }
                Phase::Moving { .. } | Phase::Verifying { .. } => {
                    match self.one_pass(from, to, progress).await {
                        Ok(found) => phase.after_pass(found, migrations.cancel_requested()),
                        // A node failing (its shard failing over) stops a pass, not the
                        // migration: the same phase runs again.
                        Err(e) if failures < PASS_RETRIES => {
                            failures += 1;
                            let topology = Arc::clone(self.state.router.load().topology());
                            warn!(from = name_of(&topology, from), to = name_of(&topology, to), error = %e, attempt = failures, "migration pass failed; retrying");
                            tokio::time::sleep(PASS_RETRY_PAUSE).await;
                            phase
                        }
                        Err(e) => return Err(e),
                    }
                }
                Phase::Finishing => {
                    self.change(TopologyChange::FinishMigration {
                        slots: slots.to_vec(),
                    })
                    .await
                    .map_err(|e| e.to_string())?;
                    Phase::Done
                }
                Phase::Cancelling => return Ok(Outcome::Cancelled),
                Phase::Done => return Ok(Outcome::Done),
            };
            if next != phase {
                let topology = Arc::clone(self.state.router.load().topology());
                debug!(from = name_of(&topology, from), to = name_of(&topology, to), phase = ?next, "migration phase");
            }
            phase = next;
        }
    }

    /// The [`Phase::Starting`] of a migration: its slots become `Migrating` in a new epoch
    /// (or, for a reversed job, turn around), then no request of an older epoch may still
    /// reach the source. A job resumed at start whose slots migrate already has nothing to
    /// do.
    ///
    /// # Errors
    /// The change was refused or not persisted; a queued move that no longer fits is also
    /// dropped from the persisted queue.
    async fn begin(
        &self,
        from: ShardId,
        to: ShardId,
        slots: &[SlotRange],
        begun: bool,
    ) -> Result<(), String> {
        if begun {
            // A reversed migration turns the slots around first.
            let reversed = {
                let table = self.state.router.load();
                slots.iter().flat_map(SlotRange::slots).any(|s| {
                    table.topology().slot_state(s) == SlotState::Migrating { from: to, to: from }
                })
            };
            if reversed {
                self.change(TopologyChange::ReverseMigration {
                    slots: slots.to_vec(),
                })
                .await
                .map_err(|e| e.to_string())?;
                self.drain_old_epochs(from).await;
            }
            return Ok(());
        }
        let migration = Migration {
            from,
            to,
            slots: slots.to_vec(),
        };
        let started = self
            .change_now(&TopologyChange::StartMigration {
                migration: migration.clone(),
            })
            .await;
        match started {
            Ok(_) => {}
            Err(super::ChangeError::Refused(e)) => {
                // The topology changed since it was queued: the move cannot run, and must
                // not stay queued to be tried again at every start.
                match self
                    .change_now(&TopologyChange::DropQueuedMigration { migration })
                    .await
                {
                    // Not queued: a cancel emptied the queue meanwhile.
                    Ok(_) | Err(super::ChangeError::Refused(TopologyError::NotQueued(_))) => {}
                    Err(e) => {
                        warn!(error = %e, "could not drop a queued migration that no longer fits");
                    }
                }
                return Err(format!(
                    "this queued move no longer fits the topology and was dropped: {e}"
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
        self.drain_old_epochs(from).await;
        // Every proxy of a fleet routes the slots to the target before a key moves.
        let epoch = self.state.router.load().epoch();
        if !self
            .fleet_barrier(epoch, "a migration's keys start moving")
            .await
        {
            return Err("this proxy stopped leading the fleet".to_owned());
        }
        Ok(())
    }

    /// Waits until no request is still routed by an epoch older than the current one (the
    /// router's epoch barrier: every older routing table dropped), then drains the source
    /// master's lanes: no request sent before the slots began migrating can run on the
    /// source after this. Each wait is bounded by [`DRAIN_TIMEOUT`]; past it the migration
    /// goes on, with a warning.
    async fn drain_old_epochs(&self, from: ShardId) {
        let started = Instant::now();
        if self.state.router.epoch_barrier(DRAIN_TIMEOUT).await {
            debug!(
                took_us = started.elapsed().as_micros() as u64,
                "no request is routed by an earlier epoch any more"
            );
        } else {
            warn!(
                timeout_ms = DRAIN_TIMEOUT.as_millis() as u64,
                "a routing table of an earlier epoch was still held after the timeout; going on"
            );
        }
        let table = self.state.router.load();
        if let Some(source) = table.route(from) {
            if !redshard_dataplane::router::barrier(source, false, DRAIN_TIMEOUT).await {
                warn!(shard = %source.name, "the source's lanes did not drain within 5 s");
            }
        }
    }

    /// Keys of the source expected in `slots`: its size times their share of its slots.
    async fn estimate_keys(&self, from: ShardId, slots: &[SlotRange]) -> u64 {
        let table = self.state.router.load();
        let Some(source) = table.route(from) else {
            return 0;
        };
        let moving: usize = slots.iter().map(SlotRange::len).sum();
        let owned: usize = table
            .topology()
            .slots_of(from)
            .iter()
            .map(SlotRange::len)
            .sum::<usize>()
            + moving;
        let Ok(mut conn) = self
            .connect(source.master.addr(), Duration::from_secs(5))
            .await
        else {
            return 0;
        };
        let size: u64 = match conn.info("keyspace").await {
            Ok(keyspace) => super::nodes::databases_held(&keyspace)
                .iter()
                .map(|&(_, keys)| keys)
                .sum(),
            Err(_) => 0,
        };
        (size * moving as u64) / owned.max(1) as u64
    }

    /// One full SCAN of the source master (of each database that has keys, as its
    /// `INFO keyspace` says when the pass starts: from the migration's start no new key of
    /// the slots is written there), moving every key of a slot migrating from `from` to
    /// `to`. Returns how many such keys it found. Restarts if the source master changes.
    async fn one_pass(
        &self,
        from: ShardId,
        to: ShardId,
        progress: &Arc<Mutex<MigrationProgress>>,
    ) -> Result<u64, String> {
        let migrations = &self.state.migrations;
        let mut found = 0;
        'restart: loop {
            let table = self.state.router.load();
            let source = table.route(from).ok_or("the source shard is gone")?;
            let master = source.master.addr().clone();
            drop(table);
            let mut conn = self
                .connect(&master, Duration::from_secs(5))
                .await
                .map_err(|e| e.to_string())?;
            let keyspace = conn.info("keyspace").await.map_err(|e| e.to_string())?;
            for (db, _) in super::nodes::databases_held(&keyspace) {
                let number = db.to_string();
                conn.call_ok(&[b"SELECT", number.as_bytes()])
                    .await
                    .map_err(|e| e.to_string())?;
                match self
                    .scan_db(&mut conn, (from, to), &master, db, progress)
                    .await?
                {
                    Some(n) => found += n,
                    None => continue 'restart,
                }
                if migrations.cancel_requested() {
                    return Ok(found);
                }
            }
            return Ok(found);
        }
    }

    /// One full SCAN of database `db` of the source master `master` on `conn` (which selected
    /// it), moving every key of a slot migrating from `from` to `to`. Returns how many such
    /// keys it found, or `None` when the source master changed (the pass restarts).
    async fn scan_db(
        &self,
        conn: &mut super::conn::ControlConn,
        (from, to): (ShardId, ShardId),
        master: &redshard_config::NodeAddr,
        db: u16,
        progress: &Arc<Mutex<MigrationProgress>>,
    ) -> Result<Option<u64>, String> {
        let migrations = &self.state.migrations;
        let mut found = 0;
        {
            let mut cursor = Bytes::from_static(b"0");
            loop {
                if migrations.cancel_requested() {
                    return Ok(Some(found));
                }
                let table = self.state.router.load();
                if table.route(from).map(|r| r.master.addr()) != Some(master) {
                    // Failed over: scan the new master from the start.
                    return Ok(None);
                }
                let answer = conn
                    .call_ok(&[b"SCAN", &cursor, b"COUNT", SCAN_COUNT.as_bytes()])
                    .await
                    .map_err(|e| e.to_string())?;
                let (next, keys) = scan_reply(&answer).ok_or("SCAN sent an unexpected reply")?;
                let mut mine: Vec<Bytes> = keys
                    .into_iter()
                    .filter(|k| {
                        table.topology().slot_state(table.slot_of(k))
                            == SlotState::Migrating { from, to }
                    })
                    .collect();
                drop(table);
                found += mine.len() as u64;
                if migrations.atomic() {
                    // A fleet: one MIGRATE ... KEYS per batch, atomic on the source.
                    for chunk in mine.chunks(MIGRATE_BATCH) {
                        migrations
                            .migrate_batch(&self.state.router, db, chunk)
                            .await?;
                        let mut p = progress.lock().unwrap_or_else(PoisonError::into_inner);
                        p.keys_moved += chunk.len() as u64;
                        for _ in chunk {
                            migrations.count_moved(&p.from, &p.to, 0);
                        }
                    }
                    mine.clear();
                }
                for chunk in mine.chunks(PARALLEL_MOVES) {
                    let moves = chunk.iter().map(|key| {
                        let key = [(db, key.clone())];
                        async move { migrations.ensure_moved(&self.state.router, &key).await }
                    });
                    for result in futures_util::future::join_all(moves).await {
                        let bytes = result?;
                        let mut p = progress.lock().unwrap_or_else(PoisonError::into_inner);
                        p.keys_moved += 1;
                        p.bytes_moved += bytes;
                        migrations.count_moved(&p.from, &p.to, bytes);
                    }
                }
                cursor = next;
                if cursor.as_ref() == b"0" {
                    return Ok(Some(found));
                }
            }
        }
    }
}

/// Where a running migration is (its `MigrationState` is `Running` throughout); the moves
/// between phases are in `LIFECYCLE.md`. Moved by the mover task only; not persisted: a
/// restart resumes a migration from [`Phase::Starting`], its slots already migrating.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// The slots become migrating (or turn around), then the epoch barrier and the source's
    /// lanes are waited for, and the keys to move are estimated.
    Starting,
    /// The first SCAN pass over the source master, moving every key of the slots it finds.
    Moving {
        /// The pass, from 1.
        pass: u32,
    },
    /// A later pass, which should find no key left; one that still finds some (moved now)
    /// is followed by another.
    Verifying {
        /// The pass.
        pass: u32,
    },
    /// A pass found none: the slots become owned by the target (`FinishMigration`).
    Finishing,
    /// A cancel was seen after a pass: the mover queues the reversed job next.
    Cancelling,
    /// The slots are the target's.
    Done,
}

impl Phase {
    /// The phase after a pass of this one that found `found` keys of the migrating slots,
    /// with `cancelled` when a cancel was asked meanwhile.
    fn after_pass(self, found: u64, cancelled: bool) -> Self {
        let pass = match self {
            Self::Moving { pass } | Self::Verifying { pass } => pass,
            other => return other,
        };
        if cancelled {
            Self::Cancelling
        } else if found == 0 {
            Self::Finishing
        } else {
            Self::Verifying { pass: pass + 1 }
        }
    }
}

/// How a migration ended without error.
enum Outcome {
    /// Every slot moved.
    Done,
    /// Stopped by a cancel; its slots must be turned around.
    Cancelled,
}

/// Slot ranges as `0-99,200`, for logs.
fn show(slots: &[SlotRange]) -> String {
    slots
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The next cursor and the keys of a SCAN reply.
fn scan_reply(answer: &Bytes) -> Option<(Bytes, Vec<Bytes>)> {
    let parts = reply::aggregate_elements(answer)?;
    let cursor = bulk(&answer.slice(parts.first()?.clone()))?;
    let keys_reply = answer.slice(parts.get(1)?.clone());
    let keys = reply::aggregate_elements(&keys_reply)?
        .into_iter()
        .filter_map(|r| bulk(&keys_reply.slice(r)))
        .collect();
    Some((cursor, keys))
}

/// Shard `id`'s name, for logs: operators know shards by name, not by index.
fn name_of(topology: &Topology, id: ShardId) -> &str {
    topology
        .shard(id)
        .map_or("(removed shard)", |s| s.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::Phase;

    #[test]
    fn phases_after_a_pass() {
        let first = Phase::Moving { pass: 1 };
        assert_eq!(first.after_pass(5, false), Phase::Verifying { pass: 2 });
        assert_eq!(
            first.after_pass(0, false),
            Phase::Finishing,
            "nothing to move"
        );
        let verify = Phase::Verifying { pass: 2 };
        assert_eq!(verify.after_pass(0, false), Phase::Finishing);
        assert_eq!(
            verify.after_pass(1, false),
            Phase::Verifying { pass: 3 },
            "a key found while verifying is moved, then verified again"
        );
        assert_eq!(first.after_pass(3, true), Phase::Cancelling);
        assert_eq!(
            verify.after_pass(0, true),
            Phase::Cancelling,
            "a cancel wins"
        );
        for settled in [
            Phase::Starting,
            Phase::Finishing,
            Phase::Cancelling,
            Phase::Done,
        ] {
            assert_eq!(
                settled.after_pass(0, false),
                settled,
                "only passes end in a pass"
            );
        }
    }
}
