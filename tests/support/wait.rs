//! Waiting for a condition instead of sleeping: a test waits for what it needs (a node seen
//! up, a replica in sync, a client blocked) and fails naming it when it does not happen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns true; panics with `what` after `timeout`.
///
/// # Panics
/// When `check` is still false after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        // The polling interval: how often the condition is checked, not a wait for it.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (at most 10 s) until `counter` has grown by `by` from what it reads now: a load
/// has done that much work (so a change happens under load, and the load goes on after it).
///
/// # Panics
/// When the counter does not grow that much in time.
pub async fn wait_for_progress(counter: &AtomicU64, by: u64, what: &str) {
    let target = counter.load(Ordering::Relaxed) + by;
    wait_until(Duration::from_secs(10), what, || async {
        counter.load(Ordering::Relaxed) >= target
    })
    .await;
}
