//! What the controller has done since the proxy started: failovers, resyncs, replicas made
//! stale.
//!
//! A leaf below the state, which holds it, so that INFO and `/metrics` read it without
//! importing the controller. The controller (`redshard_control`) records into it; everything
//! else reads [`HaStats::snapshot`]. Counts start at 0 with the proxy
//! (like every counter), they are not persisted.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use redshard_config::NodeAddr;

/// The controller's counts, shared by the controller (writer) and INFO and metrics (readers).
#[derive(Debug, Default)]
pub struct HaStats {
    /// One lock: the counts change a few times an hour at most, and a reader sees a failover
    /// count and its description line together.
    book: Mutex<HaSnapshot>,
    /// What the last check of each replica saw of its Redis replication (`[replication] mode
    /// = "redis"`), by address; its own lock, as it changes every check.
    links: Mutex<HashMap<NodeAddr, ReplicaLinkView>>,
}

/// A replica's Redis replication as the controller last saw it (its `INFO replication` and
/// its master's), for INFO and the admin port's status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaLinkView {
    /// It is `REPLICAOF` its shard's master, its link is up and no full sync runs.
    pub attached: bool,
    /// Its replication offset (`slave_repl_offset`): how much of the master's stream it has.
    pub offset: u64,
    /// Bytes of the master's stream it lacks (`master_repl_offset` of the master minus its
    /// offset; 0 when it has everything).
    pub lag: u64,
}

/// The counts at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HaSnapshot {
    /// Failovers by shard name (sorted), so a shard's count survives its master changing;
    /// a shard that never failed over is absent.
    pub failovers: BTreeMap<String, u64>,
    /// The last failover as one line (shard, old and new master, time to detect and to
    /// promote), so an operator sees what happened without the logs.
    pub(crate) last_failover: Option<String>,
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
    pub(crate) fn failovers_total(&self) -> u64 {
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

    fn links(&self) -> std::sync::MutexGuard<'_, HashMap<NodeAddr, ReplicaLinkView>> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records what a check saw of the replica at `addr`.
    pub fn record_link(&self, addr: &NodeAddr, view: ReplicaLinkView) {
        self.links().insert(addr.clone(), view);
    }

    /// Forgets the replica at `addr` (removed, or a master now).
    pub fn forget_link(&self, addr: &NodeAddr) {
        self.links().remove(addr);
    }

    /// What the last check saw of the replica at `addr`; `None` before the first check (and
    /// always with proxy mirroring).
    #[must_use]
    pub fn link(&self, addr: &NodeAddr) -> Option<ReplicaLinkView> {
        self.links().get(addr).cloned()
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

    #[test]
    fn replica_links_are_kept_by_address_until_forgotten() {
        let stats = HaStats::default();
        let addr: NodeAddr = "127.0.0.1:7001".parse().unwrap();
        assert_eq!(stats.link(&addr), None);
        let view = ReplicaLinkView {
            attached: true,
            offset: 42,
            lag: 3,
        };
        stats.record_link(&addr, view.clone());
        assert_eq!(stats.link(&addr), Some(view));
        stats.forget_link(&addr);
        assert_eq!(stats.link(&addr), None);
    }
}
