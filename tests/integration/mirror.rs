//! Mirroring: every write reaches the replicas in the master's order, deterministically.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redshard_config::ReplicaState;
use redshard_tests::client::encode_command;
use redshard_tests::cluster::PROXY_MIRRORING;
use redshard_tests::replication::{digest, wait_for_info, wait_until};
pub(crate) use redshard_tests::workload::assert_replicas_equal;
use redshard_tests::{wait_for_progress, Client, RedisServer, Reply, TestCluster};
use tokio::task::JoinSet;

/// Nodes that answer DEBUG DIGEST.
pub(crate) const DEBUG: &[&str] = &["--enable-debug-command", "yes"];

fn ok_or_panic(what: &str, reply: &Reply) {
    assert!(!matches!(reply, Reply::Error(_)), "{what}: {reply:?}");
}

/// One client's share of the mixed workload: every kind of write the issue lists.
async fn mixed_writes(mut client: Client, worker: usize, rounds: usize) {
    for i in 0..rounds {
        let t = format!("{{w{worker}k{}}}", i % 16);
        let cmds: Vec<Vec<String>> = vec![
            vec!["SET".into(), format!("{t}s"), format!("v{i}")],
            vec![
                "SET".into(),
                format!("{t}ex"),
                "v".into(),
                "EX".into(),
                "1000".into(),
            ],
            vec![
                "SET".into(),
                format!("{t}px"),
                "v".into(),
                "PX".into(),
                "900000".into(),
                "GET".into(),
            ],
            vec![
                "SETEX".into(),
                format!("{t}setex"),
                "500".into(),
                "v".into(),
            ],
            vec![
                "PSETEX".into(),
                format!("{t}psetex"),
                "500000".into(),
                "v".into(),
            ],
            vec!["EXPIRE".into(), format!("{t}s"), "700".into()],
            vec![
                "PEXPIRE".into(),
                format!("{t}s"),
                "800000".into(),
                "GT".into(),
            ],
            vec!["GETEX".into(), format!("{t}ex"), "EX".into(), "600".into()],
            vec![
                "HSET".into(),
                format!("{t}h"),
                "f".into(),
                i.to_string(),
                "g".into(),
                "x".into(),
            ],
            vec!["HINCRBY".into(), format!("{t}h"), "n".into(), "3".into()],
            vec![
                "HINCRBYFLOAT".into(),
                format!("{t}h"),
                "fl".into(),
                "0.1".into(),
            ],
            vec![
                "LPUSH".into(),
                format!("{t}l"),
                format!("a{i}"),
                format!("b{i}"),
            ],
            vec!["RPOP".into(), format!("{t}l")],
            vec![
                "SADD".into(),
                format!("{t}set"),
                format!("m{i}"),
                format!("n{i}"),
                format!("o{i}"),
            ],
            vec!["SPOP".into(), format!("{t}set")],
            vec!["SPOP".into(), format!("{t}set"), "2".into()],
            vec![
                "ZADD".into(),
                format!("{t}z"),
                i.to_string(),
                format!("m{i}"),
            ],
            vec!["ZINCRBY".into(), format!("{t}z"), "1.5".into(), "m0".into()],
            vec![
                "XADD".into(),
                format!("{t}x"),
                "*".into(),
                "f".into(),
                i.to_string(),
            ],
            vec![
                "XADD".into(),
                format!("{t}x"),
                "MAXLEN".into(),
                "~".into(),
                "20".into(),
                "*".into(),
                "g".into(),
                "v".into(),
            ],
            vec!["INCRBYFLOAT".into(), format!("{t}f"), "0.1".into()],
            vec![
                "EVAL".into(),
                "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])".into(),
                "2".into(),
                format!("{t}ea"),
                format!("{t}eb"),
                i.to_string(),
            ],
            vec!["MULTI".into()],
            vec!["INCR".into(), format!("{t}c")],
            vec!["LPUSH".into(), format!("{t}l2"), "x".into()],
            vec!["SPOP".into(), format!("{t}set")],
            vec!["EXEC".into()],
        ];
        for reply in client.pipeline(&cmds).await {
            ok_or_panic("mixed workload", &reply);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_workload_leaves_every_replica_equal_to_its_master() {
    let cluster = TestCluster::start_with(3, true, "", DEBUG).await;
    let mut workers = JoinSet::new();
    for worker in 0..8 {
        workers.spawn(mixed_writes(cluster.client().await, worker, 40));
    }
    while let Some(done) = workers.join_next().await {
        done.expect("worker");
    }
    assert_replicas_equal(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_async_mode_also_leaves_replicas_equal_after_wait() {
    // Proxy mirroring's async queue (under Redis replication with `ack = "async"`, WAIT
    // answers 0: see docs/replication.md).
    let cluster = TestCluster::start_with(
        2,
        true,
        &format!("{PROXY_MIRRORING}[mirror]\nmode = \"async\"\n"),
        DEBUG,
    )
    .await;
    let mut client = cluster.client().await;
    for i in 0..200 {
        ok_or_panic("set", &client.cmd(&["SET", &format!("k{i}"), "v"]).await);
        ok_or_panic("incr", &client.cmd(&["INCR", &format!("n{}", i % 7)]).await);
    }
    // WAIT counts the replicas that applied everything this client wrote.
    assert_eq!(client.cmd(&["WAIT", "1", "1000"]).await, Reply::Int(1));
    assert_replicas_equal(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_counts_in_sync_replicas() {
    let with = TestCluster::start_with(2, true, "", &[]).await;
    let mut client = with.client().await;
    client.cmd(&["SET", "a", "1"]).await;
    assert_eq!(client.cmd(&["WAIT", "1", "0"]).await, Reply::Int(1));
    assert_eq!(client.cmd(&["WAIT", "0", "0"]).await, Reply::Int(0));
    let without = TestCluster::start(2).await;
    let mut client = without.client().await;
    assert_eq!(client.cmd(&["WAIT", "1", "100"]).await, Reply::Int(0));
}

/// Writers that count errors until told to stop.
struct Load {
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
    writes: Arc<AtomicU64>,
    tasks: JoinSet<Vec<(String, String)>>,
}

impl Load {
    /// `clients` writers SETting unique keys (and INCRs) through the proxy; each returns the
    /// keys whose SET was acknowledged, with their values.
    async fn start(cluster: &TestCluster, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let writes = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for c in 0..clients {
            let (stop, errors, writes) = (stop.clone(), errors.clone(), writes.clone());
            let mut client = cluster.client().await;
            tasks.spawn(async move {
                let mut acked = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("load:{c}:{i}");
                    let value = format!("v{i}");
                    match client.cmd(&["SET", &key, &value]).await {
                        Reply::Status(s) if s == "OK" => acked.push((key, value)),
                        other => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("load error: {other:?}");
                        }
                    }
                    if let Reply::Error(e) =
                        client.cmd(&["INCR", &format!("load:n{}", i % 5)]).await
                    {
                        errors.fetch_add(1, Ordering::Relaxed);
                        eprintln!("load error: {e}");
                    }
                    writes.fetch_add(2, Ordering::Relaxed);
                    i += 1;
                }
                acked
            });
        }
        Self {
            stop,
            errors,
            writes,
            tasks,
        }
    }

    /// Stops the writers; returns every acknowledged (key, value) and the error count.
    async fn finish(mut self) -> (Vec<(String, String)>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut acked = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            acked.extend(done.expect("writer"));
        }
        (acked, self.errors.load(Ordering::Relaxed))
    }
}

/// The state of the replica at `addr` in the running proxy's topology.
pub(crate) fn replica_state(cluster: &TestCluster, addr: &str) -> Option<ReplicaState> {
    let table = cluster.proxy.as_ref()?.state().router.load();
    table
        .topology()
        .shards
        .iter()
        .flat_map(|s| &s.replicas)
        .find(|r| r.addr.as_str() == addr)
        .map(|r| r.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replica_goes_stale_without_client_errors_and_resyncs_when_back() {
    let mut cluster = TestCluster::start_with(2, true, "", DEBUG).await;
    cluster.wait_probes_up().await;
    let load = Load::start(&cluster, 4).await;
    wait_for_progress(&load.writes, 200, "the load before the kill").await;
    let replica = cluster.replicas[0].addr();
    cluster.replicas[0].kill();
    wait_until(
        Duration::from_secs(5),
        "the replica to be recorded stale",
        || async { replica_state(&cluster, &replica) == Some(ReplicaState::Stale) },
    )
    .await;
    wait_for_progress(&load.writes, 100, "writes to go on without the replica").await;
    cluster.replicas[0].restart();
    wait_until(
        Duration::from_secs(20),
        "the replica to be resynchronised",
        || async { replica_state(&cluster, &replica) == Some(ReplicaState::InSync) },
    )
    .await;
    wait_for_progress(
        &load.writes,
        200,
        "writes mirrored to the resynchronised replica",
    )
    .await;
    let (acked, errors) = load.finish().await;
    assert_eq!(errors, 0, "clients saw errors");
    assert!(acked.len() > 100, "the load ran: {} writes", acked.len());
    assert_replicas_equal(&cluster).await;
    // Nothing acknowledged is missing from the resynchronised replica's shard.
    let mut client = cluster.client().await;
    for (key, value) in acked.iter().step_by(7) {
        assert_eq!(client.cmd(&["GET", key]).await, Reply::bulk(value));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_keeps_every_acknowledged_write_through_a_master_kill() {
    let mut cluster = TestCluster::start_with(2, true, "", &[]).await;
    cluster.wait_probes_up().await;
    let load = Load::start(&cluster, 4).await;
    wait_for_progress(&load.writes, 200, "the load before the kill").await;
    let old = cluster.masters[0].addr();
    cluster.masters[0].kill();
    wait_until(Duration::from_secs(10), "the failover", || async {
        cluster.topology().shards[0].master.as_str() != old
    })
    .await;
    wait_for_progress(&load.writes, 200, "the load after the failover").await;
    let (acked, _errors) = load.finish().await;
    assert!(acked.len() > 100, "the load ran: {} writes", acked.len());
    let mut client = cluster.client().await;
    for (key, value) in &acked {
        assert_eq!(
            &client.cmd(&["GET", key]).await,
            &Reply::bulk(value),
            "acknowledged {key} lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_answers_differently_goes_stale() {
    // About the mirror's own check of each replica's answer.
    let cluster = TestCluster::start_with(1, true, PROXY_MIRRORING, &[]).await;
    let mut client = cluster.client().await;
    // Make the replica diverge behind the proxy's back.
    let mut replica = Client::connect(cluster.replicas[0].addr()).await;
    replica.cmd(&["SET", "counter", "100"]).await;
    assert_eq!(client.cmd(&["INCR", "counter"]).await, Reply::Int(1));
    let addr = cluster.replicas[0].addr();
    wait_until(
        Duration::from_secs(5),
        "the replica to be recorded stale",
        || async { replica_state(&cluster, &addr) != Some(ReplicaState::InSync) },
    )
    .await;
    // The resync brings it back, equal.
    wait_until(
        Duration::from_secs(20),
        "the replica to be resynchronised",
        || async { replica_state(&cluster, &addr) == Some(ReplicaState::InSync) },
    )
    .await;
    assert_eq!(replica.cmd(&["GET", "counter"]).await, Reply::bulk("1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_go_to_in_sync_replicas_when_asked() {
    let cluster =
        TestCluster::start_with(1, true, "[mirror]\nread_from = \"replica\"\n", &[]).await;
    let mut client = cluster.client().await;
    assert!(client.cmd(&["SET", "r", "1"]).await.is_ok());
    for _ in 0..10 {
        // Sync mirroring: the replica has every acknowledged write.
        assert_eq!(client.cmd(&["GET", "r"]).await, Reply::bulk("1"));
    }
    let gets = |addr: String| async move {
        redshard_tests::replication::info_field(&addr, "commandstats", "cmdstat_get").await
    };
    let on_replica = gets(cluster.replicas[0].addr()).await;
    assert!(
        on_replica
            .as_deref()
            .is_some_and(|s| s.starts_with("calls=10,")),
        "{on_replica:?}"
    );
    assert_eq!(
        gets(cluster.masters[0].addr()).await,
        None,
        "reads reached the master"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_transactions_racing_plain_writes_keep_replicas_equal() {
    let cluster = TestCluster::start_with(1, true, "", DEBUG).await;
    let mut workers = JoinSet::new();
    for w in 0..6 {
        let mut client = cluster.client().await;
        workers.spawn(async move {
            for i in 0..150 {
                if w % 2 == 0 {
                    // Optimistic read-modify-write of a key others write too.
                    client.cmd(&["WATCH", "{c}n"]).await;
                    let n = match client.cmd(&["GET", "{c}n"]).await {
                        Reply::Bulk(Some(v)) => String::from_utf8(v).unwrap(),
                        _ => "0".into(),
                    };
                    let next = format!("{n}-{w}");
                    let replies = client
                        .pipeline(&[
                            vec!["MULTI"],
                            vec!["SET", "{c}n", next.as_str()],
                            vec!["RPUSH", "{c}log", next.as_str()],
                            vec!["EXEC"],
                        ])
                        .await;
                    ok_or_panic("watched transaction", &replies[3]);
                } else {
                    let v = format!("p{w}:{i}");
                    ok_or_panic("set", &client.cmd(&["SET", "{c}n", &v]).await);
                    ok_or_panic("rpush", &client.cmd(&["RPUSH", "{c}log", &v]).await);
                }
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("worker");
    }
    assert_replicas_equal(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evalsha_keeps_working_on_a_resynchronised_replica() {
    // About the proxy-mode resync's cut-over (Redis replication carries scripts' effects),
    // with Redis's default 5 s before the full sync: a resync done within ~60 ms of the
    // replica's restart can race its lanes' own restart check, which then makes it stale
    // again (seen with REDSHARD_TEST_REPLICATION=redis, whose nodes sync at once).
    let node = [DEBUG, &["--repl-diskless-sync-delay", "5"]].concat();
    let mut cluster = TestCluster::start_with(1, true, PROXY_MIRRORING, &node).await;
    let mut client = cluster.client().await;
    let script = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])";
    let sha = client.cmd(&["SCRIPT", "LOAD", script]).await.text();
    for i in 0..20 {
        let reply = client
            .cmd(&["EVALSHA", &sha, "2", "{s}a", "{s}n", &i.to_string()])
            .await;
        ok_or_panic("evalsha", &reply);
    }
    // The replica comes back empty and is resynchronised (Redis's full sync drops scripts).
    let addr = cluster.replicas[0].addr();
    cluster.replicas[0].kill();
    ok_or_panic("set", &client.cmd(&["SET", "x", "1"]).await);
    wait_until(
        Duration::from_secs(5),
        "the replica to be recorded stale",
        || async { replica_state(&cluster, &addr) == Some(ReplicaState::Stale) },
    )
    .await;
    cluster.replicas[0].restart();
    wait_until(
        Duration::from_secs(20),
        "the replica to be resynchronised",
        || async { replica_state(&cluster, &addr) == Some(ReplicaState::InSync) },
    )
    .await;
    for i in 20..40 {
        let reply = client
            .cmd(&["EVALSHA", &sha, "2", "{s}a", "{s}n", &i.to_string()])
            .await;
        ok_or_panic("evalsha", &reply);
    }
    assert_eq!(replica_state(&cluster, &addr), Some(ReplicaState::InSync));
    assert_replicas_equal(&cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_pop_served_after_a_replica_joined_reaches_that_replica() {
    // BLPOP waits on a shard without replicas; a replica is added, fully synced and cut over
    // (it holds the list as it is then); the pop is served after that. The new replica must
    // pop the same element: otherwise it keeps one its master handed out, and a failover
    // to it would hand that element out again.
    let mut cluster = TestCluster::start_with(1, false, "", DEBUG).await;
    let admin = cluster.start_admin().await;
    let master = cluster.masters[0].addr();
    let mut c = cluster.client().await;
    assert_eq!(c.cmd(&["RPUSH", "jobs", "old"]).await, Reply::Int(1));
    assert_eq!(c.cmd(&["LPOP", "jobs"]).await, Reply::bulk("old"));
    let mut waiter = cluster.client().await;
    waiter
        .send_raw(&encode_command(&["BLPOP", "jobs", "0"]))
        .await;
    // The BLPOP is blocked on the master.
    wait_for_info(&master, "clients", "blocked_clients", "1").await;

    let node = RedisServer::start_with(DEBUG);
    let node_addr = node.addr();
    let added = Client::connect_addr(admin)
        .await
        .cmd(&["ADDREPLICA", "s1", &node_addr])
        .await;
    assert_eq!(*added.field("state"), Reply::bulk("syncing"), "{added:?}");
    wait_until(Duration::from_secs(20), "the new replica in sync", || {
        let in_sync = replica_state(&cluster, &node_addr) == Some(ReplicaState::InSync);
        async move { in_sync }
    })
    .await;

    assert_eq!(c.cmd(&["RPUSH", "jobs", "j1", "j2"]).await, Reply::Int(2));
    assert_eq!(
        waiter.read().await,
        Reply::Array(vec![Reply::bulk("jobs"), Reply::bulk("j1")])
    );
    // Sync mode: both replies came after the replica applied the writes.
    let mut direct = Client::connect(node_addr.clone()).await;
    assert_eq!(
        direct.cmd(&["LRANGE", "jobs", "0", "-1"]).await,
        Reply::Array(vec![Reply::bulk("j2")])
    );
    assert_eq!(digest(&master).await, digest(&node_addr).await);
    assert_eq!(
        replica_state(&cluster, &node_addr),
        Some(ReplicaState::InSync)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_pops_served_by_later_writes_keep_the_replica_in_sync() {
    // A job queue: a consumer blocks, a producer's write lets it go. The master serves the
    // pop right after that write, but the two replies come back on different connections
    // (the consumer's private one, the producer's shared lane), in either order; the pop's
    // effect must still reach the replica after the write, or the replica's pop finds
    // nothing and the replica goes stale.
    let cluster = TestCluster::start_with(1, true, "", DEBUG).await;
    let master = cluster.masters[0].addr();
    let replica = cluster.replicas[0].addr();
    let mut producer = cluster.client().await;
    let mut consumer = cluster.client().await;
    for i in 0..30 {
        let item = format!("j{i}");
        let (block, serve, served): (Vec<&str>, Vec<&str>, Reply) = match i % 3 {
            0 => (
                vec!["BLPOP", "{q}jobs", "0"],
                vec!["RPUSH", "{q}jobs", &item],
                Reply::Array(vec![Reply::bulk("{q}jobs"), Reply::bulk(&item)]),
            ),
            1 => (
                vec!["BLMOVE", "{q}jobs", "{q}taken", "LEFT", "RIGHT", "0"],
                vec!["LPUSH", "{q}jobs", &item],
                Reply::bulk(&item),
            ),
            _ => (
                vec!["BZPOPMIN", "{q}ranked", "0"],
                vec!["ZADD", "{q}ranked", "1", &item],
                Reply::Array(vec![
                    Reply::bulk("{q}ranked"),
                    Reply::bulk(&item),
                    Reply::bulk("1"),
                ]),
            ),
        };
        consumer.send_raw(&encode_command(&block)).await;
        wait_for_info(&master, "clients", "blocked_clients", "1").await;
        assert_eq!(producer.cmd(&serve).await, Reply::Int(1), "{serve:?}");
        assert_eq!(consumer.read().await, served, "{block:?}");
        assert_eq!(
            replica_state(&cluster, &replica),
            Some(ReplicaState::InSync),
            "after {block:?}"
        );
    }
    assert_eq!(digest(&master).await, digest(&replica).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_a_replica_failed_is_refused_when_its_stale_mark_cannot_be_saved() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("topology.toml");
    let extra = format!(
        "topology_file = \"{}\"\n{PROXY_MIRRORING}ack = \"sync\"\n",
        file.display()
    );
    let cluster = TestCluster::start_with(1, true, &extra, &[]).await;
    let mut client = cluster.client().await;
    assert_eq!(client.cmd(&["INCR", "counter"]).await, Reply::Int(1));
    crate::replication_ack::block_store(&file);
    // The replica diverges behind the proxy's back and fails the next mirrored write; the
    // proxy cannot record it stale, so that write is not acknowledged.
    let mut replica = Client::connect(cluster.replicas[0].addr()).await;
    replica.cmd(&["SET", "counter", "100"]).await;
    assert_eq!(
        client.cmd(&["INCR", "counter"]).await,
        Reply::Error(crate::replication_ack::NOREPLICAS.into())
    );
    // The master ran it.
    let mut master = Client::connect(cluster.masters[0].addr()).await;
    assert_eq!(master.cmd(&["GET", "counter"]).await, Reply::bulk("2"));
}
