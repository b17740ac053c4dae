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
//! Below the state and the session (which hold and call it), above the router it sends
//! through.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use redshard_config::{ShardId, SlotRange, SlotState, Topology};
use tokio::sync::{oneshot, Notify};

use crate::backend::Dest;
use crate::mirror::effect::Effect;
use crate::router::{send_master, Router, ShardRoute};
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
    /// Keys being moved now, each with the waiters of its move.
    moving: Mutex<HashMap<Bytes, Arc<Notify>>>,
    /// Set to stop the running mover (a cancel).
    cancel: AtomicBool,
    /// Wakes the mover task when a job is queued.
    wake: Notify,
    /// Keys and bytes moved per (source, target) pair over every migration since start, for
    /// the `migration_*_moved_total` counters: unlike a job's progress they never go back
    /// to 0 when a new migration starts or the history forgets an old one.
    moved: Mutex<Vec<MovedTotals>>,
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
    /// The key.
    key: Bytes,
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

    /// Takes the lock of `key`, waiting while another move of it runs.
    async fn lock(&self, key: &Bytes) -> KeyLock<'_> {
        loop {
            let wait = {
                let mut moving = self.moving.lock().unwrap_or_else(PoisonError::into_inner);
                match moving.get(key) {
                    // Created under the table's lock: it sees the holder's notify_waiters.
                    Some(notify) => Arc::clone(notify),
                    None => {
                        moving.insert(key.clone(), Arc::new(Notify::new()));
                        return KeyLock {
                            migrations: self,
                            key: key.clone(),
                        };
                    }
                }
            };
            let notified = wait.notified();
            let still_held = self
                .moving
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(key)
                .is_some_and(|n| Arc::ptr_eq(n, &wait));
            if still_held {
                notified.await;
            }
        }
    }

    /// Makes sure each of `keys` that lies in a migrating slot has left its source: moves it
    /// now if it is still there. The data path calls it before sending a request for such
    /// keys to the target. Returns the bytes moved.
    ///
    /// # Errors
    /// A move failed (a node is unreachable); the key may still be on the source.
    pub async fn ensure_moved(&self, router: &Router, keys: &[Bytes]) -> Result<u64, String> {
        let mut bytes = 0;
        for key in keys {
            let _lock = self.lock(key).await;
            if let Some(n) = move_key(router, key).await? {
                bytes += n;
            }
        }
        Ok(bytes)
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

/// Sends `bytes` (producing `replies` replies) on the lane of `slot` of `route`'s master and
/// waits for the answer (the replies concatenated); `mirrored` writes reach the replicas first.
async fn exchange(
    route: &ShardRoute,
    slot: u16,
    bytes: Bytes,
    replies: u32,
    mirrored: bool,
) -> Result<Bytes, String> {
    let (tx, rx) = oneshot::channel();
    send_master(
        route,
        slot,
        bytes,
        Dest::Signal(tx),
        Protocol::Resp2,
        mirrored.then_some(Effect::Same),
        replies,
    );
    rx.await
        .map_err(|_| format!("no answer from {}", route.master.addr()))
}

/// Moves `key` from its slot's source to its target if its slot is migrating and the key is
/// still on the source. Returns the bytes moved, or `None` when there was nothing to move.
async fn move_key(router: &Router, key: &Bytes) -> Result<Option<u64>, String> {
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
    let answer = exchange(source, slot.get(), read.freeze(), 2, false).await?;
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
    let restored = exchange(target, slot.get(), restore.freeze(), 1, true).await?;
    if !reply::is_ok(&restored) {
        return Err(format!(
            "RESTORE of {} on {}: {}",
            String::from_utf8_lossy(key),
            target.master.addr(),
            String::from_utf8_lossy(&restored).trim_end()
        ));
    }
    let mut del = BytesMut::new();
    encode::request(&mut del, &[b"DEL", key]);
    let deleted = exchange(source, slot.get(), del.freeze(), 1, true).await?;
    if reply::is_error(&deleted) {
        return Err(format!(
            "DEL of {} on {}: {}",
            String::from_utf8_lossy(key),
            source.master.addr(),
            String::from_utf8_lossy(&deleted).trim_end()
        ));
    }
    Ok(Some(payload.len() as u64))
}

/// The payload of a bulk reply; `None` for the null bulk or any other reply.
pub fn bulk(reply: &Bytes) -> Option<Bytes> {
    let rest = reply.strip_prefix(b"$")?;
    let cr = rest.iter().position(|&b| b == b'\r')?;
    let len: usize = std::str::from_utf8(&rest[..cr]).ok()?.parse().ok()?;
    let start = 1 + cr + 2;
    (reply.len() >= start + len + 2).then(|| reply.slice(start..start + len))
}
