//! What the data path and the controller share about slot migrations: the queue and its
//! progress (read by MIGRATIONS, INFO and `/metrics`), and the key mover with its per-key
//! locks.
//!
//! A request with a key in a migrating slot waits until the key has left its source
//! ([`Migrations::ensure_moved`]); the controller's mover (`control::migrate`) moves every
//! other key through the same function, so a key is never moved twice at once. The queue
//! is written by the controller only (it runs the migrations, see `control/LIFECYCLE.md`);
//! everyone else reads [`Migrations::progress`] and [`Migrations::moved_totals`].
//!
//! In a fleet (`[cluster]`) a key moves with one `MIGRATE` on the source instead
//! ([`AtomicMoves`]): the source restores it on the target and deletes it as one command, so
//! of several proxies moving the same key one moves it and the others find it gone. And a
//! proxy moves a key of a migrating slot only once every live proxy acknowledged an epoch
//! that shows the slot migrating ([`Migrations::settle`]): from then on nobody writes it on
//! the source.
//!
//! Below the state and the session (which hold and call it), above the router it sends
//! through.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use redshard_config::{ShardId, SlotRange, SlotState, Topology};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};

use crate::backend::acl::BackendUser;
use crate::backend::Dest;
use crate::mirror::effect::Effect;
use crate::router::{send_master_as, Router, ShardRoute};
use redshard_protocol::resp::{encode, reply, Protocol};

/// Where a migration stands.
#[derive(Clone, Debug, PartialEq)]
pub enum MigrationState {
    /// Waiting in the queue.
    Queued,
    /// Moving keys.
    Running,
    /// Every slot now belongs to the target.
    Done,
    /// Stopped by an error; the slots stay migrating until it is retried or cancelled.
    Failed(String),
    /// Cancelled: the slots that had not finished went back to the source.
    Cancelled,
}

/// What an operator sees of one migration.
#[derive(Clone, Debug)]
pub struct MigrationProgress {
    /// The source shard's name.
    pub from: String,
    /// The target shard's name.
    pub to: String,
    /// The slots it moves.
    pub slots: Vec<SlotRange>,
    /// Its state.
    pub state: MigrationState,
    /// Keys moved so far.
    pub keys_moved: u64,
    /// Bytes moved so far (DUMP payloads).
    pub bytes_moved: u64,
    /// Estimated keys to move in all (from the source's size at the start).
    pub keys_estimate: u64,
    /// Seconds since it started running.
    pub elapsed_secs: f64,
    /// Keys per second so far.
    pub rate_keys_per_sec: f64,
    /// Seconds left at the current rate, when it can be estimated.
    pub eta_secs: Option<f64>,
}

/// One queued or running migration (made and run by the controller).
#[derive(Debug)]
pub struct Job {
    /// Source shard.
    pub from: ShardId,
    /// Target shard.
    pub to: ShardId,
    /// The slots.
    pub slots: Vec<SlotRange>,
    /// Whether its slots are already migrating (a resumed or reversed migration).
    pub begun: bool,
    /// Its progress, shared with admin status.
    pub progress: Arc<Mutex<MigrationProgress>>,
    /// When it started running.
    pub started: Option<Instant>,
}

/// The migration queue and the per-key locks shared with the data path.
#[derive(Debug, Default)]
pub struct Migrations {
    /// Queued and running migrations, oldest first; finished ones move to `history`.
    queue: Mutex<VecDeque<Job>>,
    /// The last finished migrations, newest last (at most [`HISTORY`]).
    history: Mutex<VecDeque<MigrationProgress>>,
    /// Keys being moved now (database and name), each with the waiters of its move.
    moving: Mutex<HashMap<(u16, Bytes), Arc<Notify>>>,
    /// Set to stop the running mover (a cancel).
    cancel: AtomicBool,
    /// Wakes the mover task when a job is queued.
    wake: Notify,
    /// Keys and bytes moved per (source, target) pair over every migration since start, for
    /// the `migration_*_moved_total` counters: unlike a job's progress they never go back
    /// to 0 when a new migration starts or the history forgets an old one.
    moved: Mutex<Vec<MovedTotals>>,
    /// How keys move in a fleet (`MIGRATE`); `None` when the proxy runs alone (`DUMP`,
    /// `RESTORE`, `DEL` under the per-key lock, which is enough with one proxy).
    atomic: Option<AtomicMoves>,
    /// In a fleet, the newest topology whose epoch every live proxy acknowledged: a key of a
    /// slot migrating there has no writer left on the source, so it may move.
    settled: Mutex<Option<Arc<Topology>>>,
    /// Wakes the requests waiting for [`Migrations::settle`].
    settled_changed: Notify,
}

/// How a fleet's proxies move keys: `MIGRATE host port "" db timeout [AUTH..] KEYS k..` on
/// the source, without `COPY` and without `REPLACE`, run as `redshard-mover`.
#[derive(Clone, Debug)]
pub struct AtomicMoves {
    /// The target's credentials as `MIGRATE` takes them: `AUTH2 user pass`, `AUTH pass` or
    /// nothing (the proxy's `[backend]` credentials, valid on every node).
    auth: Vec<Bytes>,
    /// `MIGRATE`'s timeout in milliseconds (`[backend] connect_timeout_ms`), as text.
    timeout_ms: String,
    /// How long a request waits for the fleet to acknowledge its slot's migrating epoch
    /// (`[backend] response_timeout_ms`) before it is refused.
    settle_timeout: Duration,
}

impl AtomicMoves {
    /// The moves of a fleet proxy with `config`; `None` without `[cluster]`.
    #[must_use]
    pub fn new(config: &redshard_config::Config) -> Option<Self> {
        config.cluster.as_ref()?;
        let backend = &config.backend;
        let auth = match (&backend.username, &backend.password) {
            (Some(user), Some(pass)) => vec![
                Bytes::from_static(b"AUTH2"),
                Bytes::from(user.clone()),
                Bytes::from(pass.clone()),
            ],
            (None, Some(pass)) => vec![Bytes::from_static(b"AUTH"), Bytes::from(pass.clone())],
            _ => Vec::new(),
        };
        Some(Self {
            auth,
            timeout_ms: backend.connect_timeout.as_millis().max(1).to_string(),
            settle_timeout: backend.response_timeout,
        })
    }
}

/// What the background mover moved from one shard to another since the proxy started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MovedTotals {
    /// The source shard's name.
    pub from: String,
    /// The target shard's name.
    pub to: String,
    /// Keys moved.
    pub keys: u64,
    /// Bytes moved (DUMP payloads).
    pub bytes: u64,
}

/// Finished migrations kept for status.
const HISTORY: usize = 16;

/// The lock of one key being moved; released (and its waiters woken) on drop.
struct KeyLock<'a> {
    /// The lock table.
    migrations: &'a Migrations,
    /// The key's database and name.
    key: (u16, Bytes),
}

impl Drop for KeyLock<'_> {
    fn drop(&mut self) {
        let mut moving = self
            .migrations
            .moving
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(notify) = moving.remove(&self.key) {
            notify.notify_waiters();
        }
    }
}

impl Migrations {
    /// The migrations of a proxy with `config`: with `[cluster]`, keys move by `MIGRATE`.
    #[must_use]
    pub fn new(config: &redshard_config::Config) -> Self {
        Self {
            atomic: AtomicMoves::new(config),
            ..Self::default()
        }
    }

    /// Whether keys move by `MIGRATE` (a fleet).
    #[must_use]
    pub fn atomic(&self) -> bool {
        self.atomic.is_some()
    }

    /// Records that every live proxy of the fleet acknowledged `topology`'s epoch (or a newer
    /// one): keys of the slots it shows migrating may move now.
    pub fn settle(&self, topology: Arc<Topology>) {
        {
            let mut settled = self.settled.lock().unwrap_or_else(PoisonError::into_inner);
            if settled.as_ref().is_some_and(|t| t.epoch >= topology.epoch) {
                return;
            }
            *settled = Some(topology);
        }
        self.settled_changed.notify_waiters();
    }

    /// The epoch of the newest topology the fleet acknowledged, 0 before any.
    #[must_use]
    pub fn settled_epoch(&self) -> u64 {
        self.settled
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map_or(0, |t| t.epoch)
    }

    /// In a fleet, waits until the fleet acknowledged an epoch in which `key`'s slot is in
    /// the state the current table shows (a migration every proxy routes to its target).
    async fn until_settled(
        &self,
        router: &Router,
        key: &Bytes,
        timeout: Duration,
    ) -> Result<(), String> {
        let settled = async {
            loop {
                let changed = self.settled_changed.notified();
                tokio::pin!(changed);
                // Registered before the check, so a settle between the two is not missed.
                changed.as_mut().enable();
                {
                    // Not held across the wait: it would hold up the next epoch's barrier.
                    let table = router.load();
                    let slot = table.slot_of(key);
                    let now = table.topology().slot_state(slot);
                    if !matches!(now, SlotState::Migrating { .. }) {
                        return;
                    }
                    let settled = self.settled.lock().unwrap_or_else(PoisonError::into_inner);
                    if settled.as_ref().is_some_and(|t| t.slot_state(slot) == now) {
                        return;
                    }
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, settled).await.map_err(|_| {
            "the slot's migration is not yet acknowledged by every proxy of the fleet; try again"
                .to_owned()
        })
    }

    /// The progress of every queued, running and recently finished migration, oldest first.
    #[must_use]
    pub fn progress(&self) -> Vec<MigrationProgress> {
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        history
            .iter()
            .cloned()
            .chain(queue.iter().map(Job::snapshot))
            .collect()
    }

    /// Keys and bytes the mover moved per (source, target) pair since start, sorted by pair.
    #[must_use]
    pub fn moved_totals(&self) -> Vec<MovedTotals> {
        let mut all = self
            .moved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        all.sort_unstable_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
        all
    }

    /// Adds one key of `bytes` bytes moved from `from` to `to` to the totals.
    pub fn count_moved(&self, from: &str, to: &str, bytes: u64) {
        let mut moved = self.moved.lock().unwrap_or_else(PoisonError::into_inner);
        // A handful of pairs at most: a scan beats allocating a map key per moved key.
        match moved.iter_mut().find(|t| t.from == from && t.to == to) {
            Some(totals) => {
                totals.keys += 1;
                totals.bytes += bytes;
            }
            None => moved.push(MovedTotals {
                from: from.to_owned(),
                to: to.to_owned(),
                keys: 1,
                bytes,
            }),
        }
    }

    /// Takes the lock of `key` of database `db`, waiting while another move of it runs.
    async fn lock(&self, db: u16, key: &Bytes) -> KeyLock<'_> {
        let key = (db, key.clone());
        loop {
            let wait = {
                let mut moving = self.moving.lock().unwrap_or_else(PoisonError::into_inner);
                match moving.get(&key) {
                    // Created under the table's lock: it sees the holder's notify_waiters.
                    Some(notify) => Arc::clone(notify),
                    None => {
                        moving.insert(key.clone(), Arc::new(Notify::new()));
                        return KeyLock {
                            migrations: self,
                            key,
                        };
                    }
                }
            };
            let notified = wait.notified();
            let still_held = self
                .moving
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(&key)
                .is_some_and(|n| Arc::ptr_eq(n, &wait));
            if still_held {
                notified.await;
            }
        }
    }

    /// Makes sure each of `keys` (database and name) that lies in a migrating slot has left
    /// its source: moves it now if it is still there. The data path calls it before sending
    /// a request for such keys to the target. Returns the bytes moved.
    ///
    /// # Errors
    /// A move failed (a node is unreachable); the key may still be on the source.
    pub async fn ensure_moved(
        &self,
        router: &Router,
        keys: &[(u16, Bytes)],
    ) -> Result<u64, String> {
        let mut bytes = 0;
        for (db, key) in keys {
            let db = *db;
            if let Some(atomic) = &self.atomic {
                self.until_settled(router, key, atomic.settle_timeout)
                    .await?;
                let _lock = self.lock(db, key).await;
                migrate_keys(router, atomic, db, std::slice::from_ref(key)).await?;
                continue;
            }
            let _lock = self.lock(db, key).await;
            if let Some(n) = move_key(router, db, key).await? {
                bytes += n;
            }
        }
        Ok(bytes)
    }

    /// The background mover's batch in a fleet: moves every key of `keys` (of database `db`,
    /// all of slots migrating between the same two shards) still on its source with one
    /// `MIGRATE`.
    /// Without the per-key locks: `MIGRATE` runs as one command on the source, so a move of
    /// the same key by a request (here or on another proxy) finds it moved, or moves it
    /// first. The leader calls it only after the fleet acknowledged the migrating epoch.
    ///
    /// # Errors
    /// A move failed (a node is unreachable); keys may still be on the source.
    pub async fn migrate_batch(
        &self,
        router: &Router,
        db: u16,
        keys: &[Bytes],
    ) -> Result<(), String> {
        match &self.atomic {
            Some(atomic) => migrate_keys(router, atomic, db, keys).await,
            None => {
                let keys: Vec<(u16, Bytes)> = keys.iter().map(|k| (db, k.clone())).collect();
                self.ensure_moved(router, &keys).await.map(|_| ())
            }
        }
    }
}

impl Migrations {
    /// The queue, oldest first, for the controller (which alone changes it).
    pub fn queue(&self) -> MutexGuard<'_, VecDeque<Job>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `progress` in the history of finished migrations.
    pub fn remember(&self, progress: MigrationProgress) {
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        history.push_back(progress);
        while history.len() > HISTORY {
            history.pop_front();
        }
    }

    /// Asks the running migration to stop after its pass (a cancel).
    pub fn request_cancel(&self) {
        self.cancel.store(true, Ordering::Release);
    }

    /// Forgets a cancel, as a new migration starts.
    pub fn clear_cancel(&self) {
        self.cancel.store(false, Ordering::Release);
    }

    /// Whether a cancel was asked.
    pub fn cancel_requested(&self) -> bool {
        self.cancel.load(Ordering::Acquire)
    }

    /// Wakes the mover: a job was queued.
    pub fn wake_mover(&self) {
        self.wake.notify_one();
    }

    /// Waits until [`Migrations::wake_mover`].
    pub async fn mover_woken(&self) {
        self.wake.notified().await;
    }
}

impl Job {
    /// A queued job moving `slots` from `from` to `to` (`begun`: they already migrate).
    pub fn new(
        topology: &Topology,
        from: ShardId,
        to: ShardId,
        slots: Vec<SlotRange>,
        begun: bool,
    ) -> Self {
        let name = |id| {
            topology
                .shard(id)
                .map_or_else(|| id.to_string(), |s| s.name.clone())
        };
        let progress = MigrationProgress {
            from: name(from),
            to: name(to),
            slots: slots.clone(),
            state: MigrationState::Queued,
            keys_moved: 0,
            bytes_moved: 0,
            keys_estimate: 0,
            elapsed_secs: 0.0,
            rate_keys_per_sec: 0.0,
            eta_secs: None,
        };
        Self {
            from,
            to,
            slots,
            begun,
            progress: Arc::new(Mutex::new(progress)),
            started: None,
        }
    }

    /// What MIGRATIONS shows of it now.
    pub fn snapshot(&self) -> MigrationProgress {
        let mut p = self
            .progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(started) = self.started {
            p.elapsed_secs = started.elapsed().as_secs_f64();
            if p.elapsed_secs > 0.0 {
                p.rate_keys_per_sec = p.keys_moved as f64 / p.elapsed_secs;
            }
            if p.rate_keys_per_sec > 0.0 {
                let left = p.keys_estimate.saturating_sub(p.keys_moved) as f64;
                p.eta_secs = Some(left / p.rate_keys_per_sec);
            }
        }
        p
    }

    /// Changes its progress.
    pub fn update(&self, f: impl FnOnce(&mut MigrationProgress)) {
        f(&mut self.progress.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// Sends `bytes` (producing `replies` replies) on the lane of `slot` of `route`'s master, in
/// database `db`, and waits for the answer (the replies concatenated); `mirrored` writes
/// reach the replicas first.
async fn exchange(
    route: &ShardRoute,
    (slot, db): (u16, u16),
    bytes: Bytes,
    replies: u32,
    mirrored: bool,
) -> Result<Bytes, String> {
    exchange_as(
        route,
        (slot, db),
        bytes,
        replies,
        mirrored,
        BackendUser::Client,
    )
    .await
}

/// [`exchange`] run as the backend `user`.
async fn exchange_as(
    route: &ShardRoute,
    (slot, db): (u16, u16),
    bytes: Bytes,
    replies: u32,
    mirrored: bool,
    user: BackendUser,
) -> Result<Bytes, String> {
    let (tx, rx) = oneshot::channel();
    send_master_as(
        route,
        slot,
        bytes,
        Dest::Signal(tx),
        Protocol::Resp2,
        mirrored.then_some(Effect::Same),
        replies,
        user,
        db,
    );
    rx.await
        .map_err(|_| format!("no answer from {}", route.master.addr()))
}

/// Moves `key` of database `db` from its slot's source to its target if its slot is
/// migrating and the key is still on the source. Returns the bytes moved, or `None` when
/// there was nothing to move.
async fn move_key(router: &Router, db: u16, key: &Bytes) -> Result<Option<u64>, String> {
    // Held until the key has moved: the epoch barrier waits for a move routed by an older
    // table (a reversal must not race a move in the old direction).
    let table = router.load();
    // By the table's routing rules, as every request routes the key.
    let slot = table.slot_of(key);
    let SlotState::Migrating { from, to } = table.topology().slot_state(slot) else {
        return Ok(None);
    };
    let (Some(source), Some(target)) = (table.route(from), table.route(to)) else {
        return Err("a migrating slot names an unknown shard".into());
    };
    let mut read = BytesMut::new();
    encode::request(&mut read, &[b"PEXPIRETIME", key]);
    encode::request(&mut read, &[b"DUMP", key]);
    let answer = exchange(source, (slot.get(), db), read.freeze(), 2, false).await?;
    let first = reply::element_len(&answer).unwrap_or(answer.len());
    let (expiry, dump) = (answer.slice(..first), answer.slice(first..));
    if reply::is_error(&expiry) || reply::is_error(&dump) {
        return Err(format!(
            "reading {} from {}: {}",
            String::from_utf8_lossy(key),
            source.master.addr(),
            String::from_utf8_lossy(&answer).trim_end()
        ));
    }
    let Some(payload) = bulk(&dump) else {
        return Ok(None); // not (or no longer) on the source
    };
    let expires_at = reply::integer(&expiry).unwrap_or(-1);
    let mut restore = BytesMut::new();
    if expires_at > 0 {
        let at = expires_at.to_string();
        encode::request(
            &mut restore,
            &[
                b"RESTORE",
                key,
                at.as_bytes(),
                &payload,
                b"REPLACE",
                b"ABSTTL",
            ],
        );
    } else {
        encode::request(&mut restore, &[b"RESTORE", key, b"0", &payload, b"REPLACE"]);
    }
    let restored = exchange(target, (slot.get(), db), restore.freeze(), 1, true).await?;
    if !reply::is_ok(&restored) {
        return Err(format!(
            "RESTORE of {} on {}: {}",
            String::from_utf8_lossy(key),
            target.master.addr(),
            String::from_utf8_lossy(&restored).trim_end()
        ));
    }
    delete_on_source(source, (slot.get(), db), key).await?;
    Ok(Some(payload.len() as u64))
}

/// Moves `keys` (of slots migrating between the same two shards, by the current table) from
/// the source to the target with one `MIGRATE ... KEYS` on the source: each key present there
/// is restored on the target, then deleted from the source, as one command (no other command
/// runs on the source meanwhile), so two proxies moving the same key cannot both restore it.
/// A key the target already holds (`BUSYKEY`: a move restored it but failed to answer, or
/// another proxy's move is half-way) is newer there (since the fleet acknowledged the
/// migrating epoch every write went to the target): the source's stale copy is deleted.
async fn migrate_keys(
    router: &Router,
    atomic: &AtomicMoves,
    db: u16,
    keys: &[Bytes],
) -> Result<(), String> {
    let table = router.load();
    let Some(first) = keys.first() else {
        return Ok(());
    };
    let slot = table.slot_of(first);
    let state = table.topology().slot_state(slot);
    let SlotState::Migrating { from, to } = state else {
        return Ok(());
    };
    let keys: Vec<&Bytes> = keys
        .iter()
        .filter(|k| table.topology().slot_state(table.slot_of(k)) == state)
        .collect();
    let (Some(source), Some(target)) = (table.route(from), table.route(to)) else {
        return Err("a migrating slot names an unknown shard".into());
    };
    let answer = exchange_as(
        source,
        (slot.get(), db),
        migrate_request(atomic, target.master.addr(), db, &keys),
        1,
        true,
        BackendUser::Mover,
    )
    .await?;
    if reply::is_ok(&answer) {
        return acknowledged_on(target, slot.get()).await;
    }
    if answer.as_ref() == b"+NOKEY\r\n" {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&answer).trim_end().to_owned();
    if !busy_key(&text) {
        return Err(format!(
            "MIGRATE from {} to {}: {text}",
            source.master.addr(),
            target.master.addr()
        ));
    }
    // The keys restored before the busy one are gone from the source; one at a time, each
    // busy one's stale copy is deleted.
    for key in keys {
        let one = exchange_as(
            source,
            (slot.get(), db),
            migrate_request(atomic, target.master.addr(), db, &[key]),
            1,
            true,
            BackendUser::Mover,
        )
        .await?;
        if reply::is_ok(&one) || one.as_ref() == b"+NOKEY\r\n" {
            continue;
        }
        let text = String::from_utf8_lossy(&one).trim_end().to_owned();
        if !busy_key(&text) {
            return Err(format!(
                "MIGRATE of {} to {}: {text}",
                String::from_utf8_lossy(key),
                target.master.addr()
            ));
        }
        delete_on_source(source, (slot.get(), db), key).await?;
    }
    acknowledged_on(target, slot.get()).await
}

/// `DEL key` on the source's master once the key is on the target (mirrored, as any write).
async fn delete_on_source(
    source: &ShardRoute,
    (slot, db): (u16, u16),
    key: &Bytes,
) -> Result<(), String> {
    let mut del = BytesMut::new();
    encode::request(&mut del, &[b"DEL", key]);
    let deleted = exchange(source, (slot, db), del.freeze(), 1, true).await?;
    if reply::is_error(&deleted) {
        return Err(format!(
            "DEL of {} on {}: {}",
            String::from_utf8_lossy(key),
            source.master.addr(),
            String::from_utf8_lossy(&deleted).trim_end()
        ));
    }
    Ok(())
}

/// The channel of the `PUBLISH` that [`acknowledged_on`] sends.
pub const MOVED_CHANNEL: &[u8] = b"__redshard__:moved";

/// Waits until `target`'s replicas that acknowledge writes hold what `MIGRATE` restored on
/// it (with `[replication] ack = "sync"`; at once otherwise), as a `RESTORE` sent by the
/// proxy itself would: the key left the source, so its only copy must survive a failover of
/// the target. `MIGRATE` restores over a connection of the source's, which the proxy cannot
/// `WAIT` on; so it sends, on the slot's lane, the one command that changes nothing and that
/// Redis still passes to the replicas, a `PUBLISH` (to [`MOVED_CHANNEL`]), as a write: the
/// lane's `WAIT` after it covers everything the target did before.
async fn acknowledged_on(target: &ShardRoute, slot: u16) -> Result<(), String> {
    if target.wait_for() == 0 {
        return Ok(());
    }
    let mut publish = BytesMut::new();
    encode::request(&mut publish, &[b"PUBLISH", MOVED_CHANNEL, b"1"]);
    let answer = exchange(target, (slot, 0), publish.freeze(), 1, true).await?;
    if reply::is_error(&answer) {
        return Err(format!(
            "acknowledging a move on {}: {}",
            target.master.addr(),
            String::from_utf8_lossy(&answer).trim_end()
        ));
    }
    Ok(())
}

/// Whether a `MIGRATE` error says the target already holds a key (Redis's `BUSYKEY`, inside
/// `ERR Target instance replied with error: ...`).
fn busy_key(error: &str) -> bool {
    error.contains("BUSYKEY")
}

/// `MIGRATE host port "" db timeout [AUTH..] KEYS k..` moving `keys` to database `db` of
/// `target` (sent on a connection that selected `db` on the source).
fn migrate_request(
    atomic: &AtomicMoves,
    target: &redshard_config::NodeAddr,
    db: u16,
    keys: &[&Bytes],
) -> Bytes {
    let port = target.port().to_string();
    let db = db.to_string();
    let mut args: Vec<&[u8]> = vec![
        b"MIGRATE",
        target.host().as_bytes(),
        port.as_bytes(),
        b"",
        db.as_bytes(),
        atomic.timeout_ms.as_bytes(),
    ];
    args.extend(atomic.auth.iter().map(|a| a.as_ref()));
    args.push(b"KEYS");
    args.extend(keys.iter().map(|k| k.as_ref()));
    let mut out = BytesMut::new();
    encode::request(&mut out, &args);
    out.freeze()
}

/// The payload of a bulk reply; `None` for the null bulk or any other reply.
pub fn bulk(reply: &Bytes) -> Option<Bytes> {
    let rest = reply.strip_prefix(b"$")?;
    let cr = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..cr]).ok()?.parse().ok()?;
    let start = 1 + cr + 2;
    (reply.len() >= start + len + 2).then(|| reply.slice(start..start + len))
}
