//! What the controller remembers between rounds, as explicit per-shard and per-replica states
//! (see `LIFECYCLE.md` next to this file). Nothing here is persisted: a restarted proxy
//! starts every shard `Free`/`Trusted`/`NoLoss` and every replica `Idle`, and the persisted
//! topology (replica `in-sync`/`syncing`/`stale`, slots, queued moves) tells it the rest.
//!
//! A shard has three machines rather than one because their states really overlap: a resync
//! cut-over may hold a shard whose master a lane has just lost (held *and* suspect), and the
//! connection a master loses with mirrored writes in flight makes it both suspect and a
//! write loss to check. Each machine moves on its own; the gate is derived from all three
//! (and the probes) in [`Controller::settle_gate`](super::Controller).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use redshard_config::{NodeAddr, ShardId};

/// Why a cut-over holds a shard's gate paused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum HoldReason {
    /// A resync's cut-over of this replica: the master's lanes drain, the replica catches up.
    Resync(NodeAddr),
    /// A graceful (admin) failover: drain, promote, swap.
    GracefulFailover,
}

/// Whether cut-overs hold a shard's gate paused. Holds nest: a resync's cut-over may begin and
/// end while a graceful failover drains the same shard, and its end must not reopen the gate
/// the failover still holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum Hold {
    /// No cut-over: the gate follows the master's health.
    #[default]
    Free,
    /// These cut-overs (never empty) hold the gate paused until each releases its hold.
    Held(Vec<HoldReason>),
}

/// Whether a shard's master is suspected to be failing before the probes confirm it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum Suspicion {
    /// Nothing beyond what the probes say.
    #[default]
    Trusted,
    /// A lane lost its connection to `master` at `since`: the shard is paused (when it could
    /// fail over) until a probe after that answers, so requests wait instead of failing in
    /// the moment before the probe confirms.
    Suspect {
        /// The master the lane lost (a suspicion of a master since failed over is dropped).
        master: NodeAddr,
        /// When the connection was lost.
        since: Instant,
    },
}

/// Whether a shard's master may hold writes its replicas never got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum WriteLoss {
    /// No lost connection with mirrored writes in flight.
    #[default]
    NoLoss,
    /// `master` lost a connection with mirrored writes in flight at `since`; if it stays up
    /// its in-sync replicas are made stale (it may have applied writes they never got).
    Lost {
        /// The master then.
        master: NodeAddr,
        /// When (the first loss counts).
        since: Instant,
    },
}

/// What a shard's [`WriteLoss`] asks for now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LossVerdict {
    /// Nothing to do (no loss, or not decided yet).
    Wait,
    /// The master it was recorded for is no longer the master (failed over): dropped.
    Forgotten,
    /// The master stayed up: act on it (the loss is cleared).
    Act,
}

/// Where a replica's resync stands (the persisted `ReplicaState` says whether it is in sync;
/// this says what the controller is doing about it).
#[derive(Clone, Debug, Default)]
pub(super) enum ResyncState {
    /// No resync runs; one may start when the replica needs one.
    #[default]
    Idle,
    /// A resync task runs; `stop` tells it the replica was removed (its full sync must not go
    /// on, nor its cut-over pause the shard).
    Running {
        /// Set to stop the task.
        stop: Arc<AtomicBool>,
    },
    /// The last resync failed; the next may start at `retry_at`.
    Failed {
        /// When it may be tried again.
        retry_at: Instant,
    },
}

/// How a resync task ended, as the book records it.
#[derive(Debug)]
pub(super) enum ResyncEnd {
    /// In sync, or stopped because the replica was removed: nothing to retry.
    Finished,
    /// Failed: retry at this instant.
    RetryAt(Instant),
}

/// The three machines of one shard.
#[derive(Debug, Default)]
struct ShardBook {
    hold: Hold,
    suspicion: Suspicion,
    loss: WriteLoss,
}

impl ShardBook {
    fn is_quiet(&self) -> bool {
        self.hold == Hold::Free
            && self.suspicion == Suspicion::Trusted
            && self.loss == WriteLoss::NoLoss
    }
}

/// What the controller keeps between rounds: per shard a [`Hold`], a [`Suspicion`] and a
/// [`WriteLoss`]; per replica a [`ResyncState`]. Every transition is a method here.
#[derive(Debug, Default)]
pub(super) struct Book {
    /// Shards not in their resting states (absent: `Free`, `Trusted`, `NoLoss`).
    shards: HashMap<ShardId, ShardBook>,
    /// Replicas not `Idle`.
    replicas: HashMap<NodeAddr, ResyncState>,
}

impl Book {
    /// Runs `f` on `shard`'s machines, dropping the entry once every one is at rest.
    fn with_shard<T>(&mut self, shard: ShardId, f: impl FnOnce(&mut ShardBook) -> T) -> T {
        let entry = self.shards.entry(shard).or_default();
        let out = f(entry);
        if entry.is_quiet() {
            self.shards.remove(&shard);
        }
        out
    }

    // --- Hold ---

    /// `Free` → `Held([reason])`, `Held(rs)` → `Held(rs + reason)`: a cut-over pauses the shard.
    pub(super) fn hold(&mut self, shard: ShardId, reason: HoldReason) {
        self.with_shard(shard, |s| match &mut s.hold {
            Hold::Free => s.hold = Hold::Held(vec![reason]),
            Hold::Held(reasons) => reasons.push(reason),
        });
    }

    /// `Held(rs)` → `Held(rs - reason)`, or `Free` when it was the last: the cut-over ended
    /// (done or given up). Returns whether the shard is now free.
    pub(super) fn release(&mut self, shard: ShardId, reason: &HoldReason) -> bool {
        self.with_shard(shard, |s| {
            if let Hold::Held(reasons) = &mut s.hold {
                if let Some(i) = reasons.iter().position(|r| r == reason) {
                    reasons.swap_remove(i);
                }
                if reasons.is_empty() {
                    s.hold = Hold::Free;
                }
            }
            s.hold == Hold::Free
        })
    }

    /// Whether a cut-over holds `shard`.
    pub(super) fn is_held(&self, shard: ShardId) -> bool {
        self.shards
            .get(&shard)
            .is_some_and(|s| matches!(s.hold, Hold::Held(_)))
    }

    // --- Suspicion ---

    /// `Trusted`/`Suspect` → `Suspect { master, since: now }`: a lane lost its connection to
    /// the shard's master.
    pub(super) fn suspect(&mut self, shard: ShardId, master: NodeAddr, now: Instant) {
        self.with_shard(shard, |s| {
            s.suspicion = Suspicion::Suspect { master, since: now };
        });
    }

    /// Whether `shard`'s current `master` is still suspect. `Suspect` → `Trusted` when the
    /// suspicion was of another master (failed over since) or `ends(since)` says it is over.
    pub(super) fn still_suspect(
        &mut self,
        shard: ShardId,
        master: &NodeAddr,
        ends: impl FnOnce(Instant) -> bool,
    ) -> bool {
        if !self.shards.contains_key(&shard) {
            return false;
        }
        self.with_shard(shard, |s| match &s.suspicion {
            Suspicion::Trusted => false,
            Suspicion::Suspect { master: m, since } => {
                if m == master && !ends(*since) {
                    true
                } else {
                    s.suspicion = Suspicion::Trusted;
                    false
                }
            }
        })
    }

    // --- WriteLoss ---

    /// `NoLoss` → `Lost { master, since: now }`; an earlier loss is kept (the first counts).
    pub(super) fn writes_lost(&mut self, shard: ShardId, master: NodeAddr, now: Instant) {
        self.with_shard(shard, |s| {
            if s.loss == WriteLoss::NoLoss {
                s.loss = WriteLoss::Lost { master, since: now };
            }
        });
    }

    /// Decides `shard`'s write loss against its current `master`: `Lost` → `NoLoss` when
    /// that master is another one ([`LossVerdict::Forgotten`]) or `stayed_up(since)`
    /// ([`LossVerdict::Act`]); otherwise it stays.
    pub(super) fn judge_loss(
        &mut self,
        shard: ShardId,
        master: &NodeAddr,
        stayed_up: impl FnOnce(Instant) -> bool,
    ) -> LossVerdict {
        if !self.shards.contains_key(&shard) {
            return LossVerdict::Wait;
        }
        self.with_shard(shard, |s| {
            let verdict = match &s.loss {
                WriteLoss::NoLoss => LossVerdict::Wait,
                WriteLoss::Lost { master: m, .. } if m != master => LossVerdict::Forgotten,
                WriteLoss::Lost { since, .. } if stayed_up(*since) => LossVerdict::Act,
                WriteLoss::Lost { .. } => LossVerdict::Wait,
            };
            if verdict != LossVerdict::Wait {
                s.loss = WriteLoss::NoLoss;
            }
            verdict
        })
    }

    /// Whether any shard has a `Lost` write loss not acted on yet.
    pub(super) fn any_write_loss(&self) -> bool {
        self.shards.values().any(|s| s.loss != WriteLoss::NoLoss)
    }

    // --- ResyncState ---

    /// Whether a resync of any of `replicas` runs.
    pub(super) fn any_resyncing<'a>(
        &self,
        mut replicas: impl Iterator<Item = &'a NodeAddr>,
    ) -> bool {
        replicas.any(|r| matches!(self.replicas.get(r), Some(ResyncState::Running { .. })))
    }

    /// Whether a resync of `replica` may start at `now`: `Idle`, or `Failed` with its retry
    /// time reached.
    pub(super) fn resync_due(&self, replica: &NodeAddr, now: Instant) -> bool {
        match self.replicas.get(replica) {
            None | Some(ResyncState::Idle) => true,
            Some(ResyncState::Failed { retry_at }) => *retry_at <= now,
            Some(ResyncState::Running { .. }) => false,
        }
    }

    /// `Idle`/due `Failed` → `Running`: returns the task's stop flag, or `None` (refused) when
    /// a resync runs already or its retry time is not reached.
    pub(super) fn start_resync(
        &mut self,
        replica: &NodeAddr,
        now: Instant,
    ) -> Option<Arc<AtomicBool>> {
        if !self.resync_due(replica, now) {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        self.replicas.insert(
            replica.clone(),
            ResyncState::Running {
                stop: Arc::clone(&stop),
            },
        );
        Some(stop)
    }

    /// `Running` → `Idle` ([`ResyncEnd::Finished`]) or `Failed` ([`ResyncEnd::RetryAt`]).
    pub(super) fn end_resync(&mut self, replica: &NodeAddr, end: ResyncEnd) {
        match end {
            ResyncEnd::Finished => {
                self.replicas.remove(replica);
            }
            ResyncEnd::RetryAt(retry_at) => {
                self.replicas
                    .insert(replica.clone(), ResyncState::Failed { retry_at });
            }
        }
    }

    /// Tells `replica`'s running resync, if any, to stop (the replica was removed); the task
    /// then ends it with [`ResyncEnd::Finished`].
    pub(super) fn stop_resync(&self, replica: &NodeAddr) {
        if let Some(ResyncState::Running { stop }) = self.replicas.get(replica) {
            stop.store(true, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn addr(port: u16) -> NodeAddr {
        format!("127.0.0.1:{port}").parse().expect("address")
    }

    #[test]
    fn hold_and_release() {
        let mut book = Book::default();
        let shard = ShardId(0);
        assert!(!book.is_held(shard));
        book.hold(shard, HoldReason::GracefulFailover);
        assert!(book.is_held(shard));
        assert!(book.release(shard, &HoldReason::GracefulFailover));
        assert!(!book.is_held(shard));
        assert!(book.shards.is_empty(), "a shard at rest keeps no entry");
    }

    #[test]
    fn holds_nest_a_resync_ending_during_a_graceful_failover_keeps_the_shard_held() {
        let mut book = Book::default();
        let shard = ShardId(0);
        book.hold(shard, HoldReason::GracefulFailover);
        book.hold(shard, HoldReason::Resync(addr(7003)));
        assert!(!book.release(shard, &HoldReason::Resync(addr(7003))));
        assert!(book.is_held(shard), "the failover still drains");
        assert!(book.release(shard, &HoldReason::GracefulFailover));
        assert!(!book.is_held(shard));
        assert!(book.shards.is_empty());
    }

    #[test]
    fn suspicion_ends_or_moves_with_the_master() {
        let mut book = Book::default();
        let shard = ShardId(1);
        let now = Instant::now();
        book.suspect(shard, addr(7001), now);
        assert!(book.still_suspect(shard, &addr(7001), |_| false));
        // Failed over since: the old master's suspicion does not pause the new one.
        assert!(!book.still_suspect(shard, &addr(7002), |_| false));
        assert!(!book.still_suspect(shard, &addr(7001), |_| false));
        book.suspect(shard, addr(7001), now);
        assert!(!book.still_suspect(shard, &addr(7001), |since| since == now));
        assert!(book.shards.is_empty());
    }

    #[test]
    fn a_held_shard_can_also_be_suspect() {
        let mut book = Book::default();
        let shard = ShardId(2);
        book.hold(shard, HoldReason::Resync(addr(7003)));
        book.suspect(shard, addr(7001), Instant::now());
        assert!(book.is_held(shard));
        assert!(book.still_suspect(shard, &addr(7001), |_| false));
        book.release(shard, &HoldReason::Resync(addr(7003)));
        assert!(book.still_suspect(shard, &addr(7001), |_| false));
    }

    #[test]
    fn write_loss_keeps_the_first_and_is_judged_once() {
        let mut book = Book::default();
        let shard = ShardId(3);
        let first = Instant::now();
        book.writes_lost(shard, addr(7001), first);
        book.writes_lost(shard, addr(7001), first + Duration::from_secs(1));
        assert_eq!(
            book.judge_loss(shard, &addr(7001), |since| {
                assert_eq!(since, first);
                false
            }),
            LossVerdict::Wait
        );
        assert_eq!(
            book.judge_loss(shard, &addr(7001), |_| true),
            LossVerdict::Act
        );
        assert_eq!(
            book.judge_loss(shard, &addr(7001), |_| true),
            LossVerdict::Wait
        );
        book.writes_lost(shard, addr(7001), first);
        assert_eq!(
            book.judge_loss(shard, &addr(7002), |_| true),
            LossVerdict::Forgotten
        );
        assert!(book.shards.is_empty());
    }

    #[test]
    fn resync_runs_once_and_retries_after_a_failure() {
        let mut book = Book::default();
        let (r, other) = (addr(7004), addr(7005));
        let now = Instant::now();
        let stop = book.start_resync(&r, now).expect("idle replica starts");
        assert!(book.start_resync(&r, now).is_none(), "one resync at a time");
        assert!(book.any_resyncing([&other, &r].into_iter()));
        book.stop_resync(&r);
        assert!(stop.load(Ordering::Relaxed));
        let retry = now + Duration::from_secs(2);
        book.end_resync(&r, ResyncEnd::RetryAt(retry));
        assert!(!book.any_resyncing(std::iter::once(&r)));
        assert!(
            book.start_resync(&r, now).is_none(),
            "not before its retry time"
        );
        assert!(book.start_resync(&r, retry).is_some());
        book.end_resync(&r, ResyncEnd::Finished);
        assert!(book.replicas.is_empty());
    }
}
