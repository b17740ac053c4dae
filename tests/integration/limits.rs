//! Bounded resources under abuse: unauthenticated connections time out, AUTH guessing is
//! slowed, and a client that never reads its replies is paused (its requests wait, nothing more
//! is read from it) within its memory budget, then disconnected.

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
    // Longer than the auth timeout: the scenario is that it does not fire for this client.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(good.cmd(&["PING"]).await, Reply::Status("PONG".into()));
}

const MIB: usize = 1024 * 1024;

/// A 1 MiB value whose bytes tell their offset apart (a reply cut short or spliced shows).
fn big_value() -> Vec<u8> {
    (0..MIB).map(|i| b'a' + (i % 23) as u8).collect()
}

/// `omem` of the client connected from `addr` in the proxy's CLIENT LIST; `None` once it is
/// no longer listed.
async fn omem_of(admin: &mut redshard_tests::Client, addr: std::net::SocketAddr) -> Option<usize> {
    let Reply::Bulk(Some(list)) = admin.cmd(&["CLIENT", "LIST"]).await else {
        panic!("CLIENT LIST answers a bulk string");
    };
    let needle = format!("addr={addr} ");
    String::from_utf8_lossy(&list).lines().find_map(|line| {
        if !line.contains(&needle) {
            return None;
        }
        line.split(' ')
            .find_map(|f| f.strip_prefix("omem="))
            .and_then(|v| v.parse().ok())
    })
}

/// Calls of `command` on master `i` (its `INFO commandstats`).
async fn calls(cluster: &TestCluster, i: usize, command: &str) -> u64 {
    let stats = cluster.commandstats(i).await;
    let prefix = format!("cmdstat_{command}:calls=");
    stats
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// A client pipelines 200 GETs of a 1 MiB value (each followed by an INCR) and reads nothing.
/// The proxy holds at most about its budget for it (soft limit plus the replies expected in
/// flight), forwards no more of its requests until it reads, so the node does not build up
/// hundreds of MiB of output for it either; another client of the same shard and lane is
/// served meanwhile; and once the client reads, it gets every reply, whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_nothing_is_held_to_its_budget_and_loses_no_reply() {
    const ROUNDS: usize = 200;
    let cluster = TestCluster::start_with(
        1,
        false,
        "[limits]\noutput_buffer_soft_bytes = 4194304\nmax_inflight_reply_bytes = 4194304\n\
         output_buffer_hard_bytes = 268435456\noutput_buffer_soft_seconds = 600\n",
        &[],
    )
    .await;
    let value = big_value();
    let mut other = cluster.client().await;
    assert!(other
        .cmd(&[b"SET".as_slice(), b"{t}big", &value])
        .await
        .is_ok());
    assert!(other.cmd(&["SET", "{t}small", "s"]).await.is_ok());
    let mut master = cluster.master(0).await;
    let peak_field = |text: Option<String>| text.and_then(|v| v.parse::<u64>().ok()).unwrap();
    let peak_before = peak_field(master.info_field("memory", "used_memory_peak").await);

    let slow = tokio::net::TcpStream::connect(cluster.addr).await.unwrap();
    let slow_addr = slow.local_addr().unwrap();
    let mut slow = redshard_tests::Client::over(slow);
    let mut pipeline = Vec::new();
    for _ in 0..ROUNDS {
        pipeline.extend(redshard_tests::client::encode_command(&["GET", "{t}big"]));
        pipeline.extend(redshard_tests::client::encode_command(&["INCR", "{t}n"]));
    }
    slow.send_raw(&pipeline).await;

    // The proxy counts what it holds for the client, up to the soft limit and a little more.
    let mut admin = cluster.client().await;
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let omem = omem_of(&mut admin, slow_addr)
            .await
            .expect("still connected");
        most = most.max(omem);
        if omem >= 4 * MIB {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy never counted the slow reader's replies as held (omem {omem})"
        );
        // Polling interval of this wait loop, not synchronisation.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Its requests in flight come back; then nothing more is forwarded until it reads.
    let forwarded = loop {
        let before = calls(&cluster, 0, "get").await;
        let omem = omem_of(&mut admin, slow_addr)
            .await
            .expect("still connected");
        most = most.max(omem);
        if calls(&cluster, 0, "get").await == before {
            break before;
        }
    };
    // Another client of the same lane is answered while the slow reader still reads nothing.
    assert_eq!(other.cmd(&["GET", "{t}small"]).await, Reply::bulk("s"));
    assert!(
        forwarded < (ROUNDS / 2) as u64,
        "{forwarded} of the slow reader's {ROUNDS} GETs were forwarded although it reads nothing"
    );
    assert!(
        most < 24 * MIB,
        "the proxy held {most} bytes for a client with a 4 MiB + 4 MiB budget"
    );
    let info = admin
        .info_field("clients", "client_recent_max_output_buffer")
        .await
        .and_then(|v| v.parse::<usize>().ok())
        .expect("INFO clients shows the largest client output");
    assert!(
        (4 * MIB..24 * MIB).contains(&info),
        "INFO client_recent_max_output_buffer:{info}"
    );
    let peak_after = peak_field(master.info_field("memory", "used_memory_peak").await);
    let grown = peak_after.saturating_sub(peak_before);
    assert!(
        grown < 100 * MIB as u64,
        "the master's memory peaked {grown} bytes higher serving one slow reader"
    );

    // Reading now, the client gets everything, in order, complete.
    for i in 0..ROUNDS {
        match slow.read().await {
            Reply::Bulk(Some(got)) => assert!(got == value, "GET {i}: a different value"),
            other => panic!("GET {i}: {other:?}"),
        }
        assert_eq!(slow.read().await, Reply::Int(i as i64 + 1), "INCR {i}");
    }
    assert_eq!(calls(&cluster, 0, "get").await, ROUNDS as u64 + 1);
}

/// The hard limit counts every reply held for the client, those waiting in its reply queue
/// too: here 64 replies of 1 MiB wait behind the reply of a stopped shard, and the client is
/// disconnected at once, as Redis does past `client-output-buffer-limit`, not when the
/// stopped shard answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_the_hard_limit_is_disconnected() {
    const GETS: usize = 64;
    let cluster = TestCluster::start_with(
        2,
        false,
        "[backend]\nresponse_timeout_ms = 60000\n[limits]\noutput_buffer_soft_bytes = 1048576\n\
         output_buffer_hard_bytes = 4194304\nmax_inflight_reply_bytes = 268435456\n\
         output_buffer_soft_seconds = 600\n",
        &[],
    )
    .await;
    let stopped_key = redshard_tests::cluster::key_on(2, 0, "first");
    let big_key = redshard_tests::cluster::key_on(2, 1, "big");
    let value = big_value();
    let mut other = cluster.client().await;
    assert!(other
        .cmd(&[b"SET".as_slice(), big_key.as_bytes(), &value])
        .await
        .is_ok());
    let stopped = cluster.masters[0].pid().expect("master running");
    redshard_tests::replication::signal(stopped, "STOP");

    let slow = tokio::net::TcpStream::connect(cluster.addr).await.unwrap();
    let slow_addr = slow.local_addr().unwrap();
    let mut slow = redshard_tests::Client::over(slow);
    let mut pipeline = redshard_tests::client::encode_command(&["GET", &stopped_key]);
    pipeline.extend(redshard_tests::client::encode_command(&["GET", &big_key]).repeat(GETS));
    slow.send_raw(&pipeline).await;
    redshard_tests::replication::wait_until(
        Duration::from_secs(20),
        "the client over the hard limit to be disconnected",
        || {
            let addr = cluster.addr;
            async move {
                let mut admin = redshard_tests::Client::connect_addr(addr).await;
                omem_of(&mut admin, slow_addr).await.is_none()
            }
        },
    )
    .await;
    redshard_tests::replication::signal(stopped, "CONT");
    // Closed while its first reply was still waiting: nothing was written to it.
    assert_eq!(slow.try_read().await, None);
    // Everyone else is still served.
    assert_eq!(other.cmd(&["PING"]).await, Reply::Status("PONG".into()));
    assert_eq!(other.cmd(&["GET", &stopped_key]).await, Reply::Bulk(None));
}
