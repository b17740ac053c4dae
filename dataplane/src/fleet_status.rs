//! What the proxy knows of its fleet (`[cluster] etcd`), kept here for INFO and `/metrics`,
//! which read only the proxy's state; the controller (`redshard_control::fleet`) writes it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// This proxy's place in the fleet, as last seen.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FleetInfo {
    /// This proxy's id.
    pub id: String,
    /// `leader`, `follower`, `frozen` (session lost, serving the last topology: etcd is down
    /// for the whole fleet) or `offline` (session lost, serving nothing).
    pub role: &'static str,
    /// The leader's id, when one leads.
    pub leader: Option<String>,
    /// Live members (proxies with a session).
    pub members: usize,
}

/// The fleet's status and counters; `None` info when the proxy runs alone.
#[derive(Debug, Default)]
pub struct FleetStatus {
    /// The status; `None` without `[cluster]`.
    info: Mutex<Option<FleetInfo>>,
    /// Epoch barriers waited for (before a migration moves keys, before a failed-over
    /// master is reused).
    barrier_waits: AtomicU64,
    /// Time spent in those barriers, in microseconds.
    barrier_micros: AtomicU64,
    /// Barriers that timed out (each retried).
    barrier_timeouts: AtomicU64,
    /// Requests to etcd that failed (saves, acknowledgements, reports, sessions).
    etcd_errors: AtomicU64,
}

impl FleetStatus {
    /// The status now; `None` when the proxy runs alone.
    #[must_use]
    pub fn info(&self) -> Option<FleetInfo> {
        self.info
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the status.
    pub fn set(&self, update: impl FnOnce(&mut FleetInfo)) {
        let mut info = self.info.lock().unwrap_or_else(PoisonError::into_inner);
        update(info.get_or_insert_with(FleetInfo::default));
    }

    /// Counts one barrier that took `took`, and whether it timed out.
    pub fn record_barrier(&self, took: Duration, timed_out: bool) {
        self.barrier_waits.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.barrier_micros.fetch_add(micros, Ordering::Relaxed);
        if timed_out {
            self.barrier_timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one failed request to etcd.
    pub fn record_etcd_error(&self) {
        self.etcd_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Barriers waited for, their total seconds, and how many timed out.
    #[must_use]
    pub fn barriers(&self) -> (u64, f64, u64) {
        (
            self.barrier_waits.load(Ordering::Relaxed),
            self.barrier_micros.load(Ordering::Relaxed) as f64 / 1e6,
            self.barrier_timeouts.load(Ordering::Relaxed),
        )
    }

    /// Failed requests to etcd.
    #[must_use]
    pub fn etcd_errors(&self) -> u64 {
        self.etcd_errors.load(Ordering::Relaxed)
    }
}
