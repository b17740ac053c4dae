//! What the controller has done since the proxy started: failovers, resyncs, replicas made
//! stale.
//!
//! A leaf below the state, which holds it, so that INFO and `/metrics` read it without
//! importing the controller. The controller (`crate::control`) records into it; everything
//! else reads [`HaStats::snapshot`]. Counts start at 0 with the proxy
//! (like every counter), they are not persisted.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

/// The controller's counts, shared by the controller (writer) and INFO and metrics (readers).
#[derive(Debug, Default)]
pub struct HaStats {
    /// One lock: the counts change a few times an hour at most, and a reader sees a failover
    /// count and its description line together.
    book: Mutex<HaSnapshot>,
}

/// The counts at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HaSnapshot {
    /// Failovers by shard name (sorted), so a shard's count survives its master changing;
    /// a shard that never failed over is absent.
    pub failovers: BTreeMap<String, u64>,
    /// The last failover as one line (shard, old and new master, time to detect and to
    /// promote), so an operator sees what happened without the logs.
    pub last_failover: Option<String>,
    /// Resyncs that ended with the replica in sync (each one a cut-over the shard's clients
    /// felt as a short pause).
    pub resyncs_completed: u64,
    /// Times a replica was recorded stale after a failed or diverging mirrored write (a
    /// replica losing its mirror stream; a fenced old master is not counted here but as a
    /// failover).
    pub replicas_marked_stale: u64,
}

impl HaSnapshot {
    /// Failovers of every shard together.
    #[must_use]
    pub fn failovers_total(&self) -> u64 {
        self.failovers.values().sum()
    }
}

impl HaStats {
    fn book(&self) -> std::sync::MutexGuard<'_, HaSnapshot> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a failover of the shard named `shard`, described by `line`.
    pub fn record_failover(&self, shard: &str, line: String) {
        let mut book = self.book();
        *book.failovers.entry(shard.to_owned()).or_default() += 1;
        book.last_failover = Some(line);
    }

    /// Records a resync that brought a replica in sync.
    pub fn record_resync(&self) {
        self.book().resyncs_completed += 1;
    }

    /// Records a replica made stale by a mirrored write.
    pub fn record_stale(&self) {
        self.book().replicas_marked_stale += 1;
    }

    /// Failovers of every shard, and the last one's line.
    #[must_use]
    pub fn failovers(&self) -> (u64, Option<String>) {
        let book = self.book();
        (book.failovers_total(), book.last_failover.clone())
    }

    /// Every count now.
    #[must_use]
    pub fn snapshot(&self) -> HaSnapshot {
        self.book().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failovers_count_per_shard_and_keep_the_last_line() {
        let stats = HaStats::default();
        assert_eq!(stats.failovers(), (0, None));
        stats.record_failover("s1", "first".into());
        stats.record_failover("s2", "second".into());
        stats.record_failover("s1", "third".into());
        stats.record_resync();
        stats.record_stale();
        stats.record_stale();
        assert_eq!(stats.failovers(), (3, Some("third".into())));
        let snapshot = stats.snapshot();
        assert_eq!(
            snapshot.failovers.into_iter().collect::<Vec<_>>(),
            [("s1".to_owned(), 2), ("s2".to_owned(), 1)]
        );
        assert_eq!(snapshot.resyncs_completed, 1);
        assert_eq!(snapshot.replicas_marked_stale, 2);
    }
}
