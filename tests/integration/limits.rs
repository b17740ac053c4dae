//! Bounded resources under abuse: unauthenticated connections time out, AUTH guessing is
//! slowed, and a client that never reads its replies is paused, then disconnected.

use std::time::{Duration, Instant};

use redshard_tests::{Reply, TestCluster};

/// VmRSS of process `pid`.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_connections_time_out_and_guessing_is_slowed() {
    let cluster = TestCluster::start_with(
        1,
        false,
        "password = \"pw\"\n[limits]\nauth_timeout_ms = 1500\nauth_failure_delay_ms = 100\n",
        &[],
    )
    .await;
    // Never authenticates: closed after the timeout.
    let mut idle = cluster.client().await;
    let started = Instant::now();
    assert_eq!(idle.try_read().await, None);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    // Each failure answers later than the one before.
    let mut guesser = cluster.client().await;
    let wrong =
        Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into());
    let started = Instant::now();
    assert_eq!(guesser.cmd(&["AUTH", "a"]).await, wrong);
    assert_eq!(guesser.cmd(&["AUTH", "b"]).await, wrong);
    assert_eq!(guesser.cmd(&["AUTH", "c"]).await, wrong);
    assert!(
        started.elapsed() >= Duration::from_millis(550),
        "100 + 200 + 300 ms: {:?}",
        started.elapsed()
    );
    // A client that authenticates is not timed out.
    let mut good = cluster.client().await;
    assert!(good.cmd(&["AUTH", "pw"]).await.is_ok());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(good.cmd(&["PING"]).await, Reply::Status("PONG".into()));
}
