//! Redis replication (`[replication] mode = "redis"`): the controller makes every replica
//! `REPLICAOF` its master, repairs what breaks, fails over to the most advanced replica and
//! brings an old master back as a replica. Every test pins the mode, whatever
//! `REDSHARD_TEST_REPLICATION` says.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redshard_config::{Config, ReplicaState};
use redshard_tests::client::encode_command;
use redshard_tests::cluster::{
    config_text, replication_settled, start_proxy, CrashableProxy, REDIS_REPLICATION,
};
use redshard_tests::replication::{info_field, wait_digest_equal, wait_until};
use redshard_tests::{wait_for_progress, Client, RedisServer, Reply, TestCluster};
use tokio::task::JoinSet;

use crate::failover::until_write_succeeds;

/// Nodes that answer DEBUG DIGEST and start a full sync at once (not after Redis's default
/// 5 s), so a repaired replica or a returning master is in sync quickly.
const NODE: &[&str] = &[
    "--enable-debug-command",
    "yes",
    "--repl-diskless-sync-delay",
    "0",
];

/// Whether the node at `addr` is `role:slave` of `master` with its link up.
async fn follows(addr: &str, master: &str) -> bool {
    let port = master.rsplit_once(':').expect("host:port").1.to_owned();
    let mut node = Client::connect(addr.to_owned()).await;
    node.info_field("replication", "role").await.as_deref() == Some("slave")
        && node.info_field("replication", "master_port").await == Some(port)
        && node
            .info_field("replication", "master_link_status")
            .await
            .as_deref()
            == Some("up")
}

/// Waits (at most 10 s) until the node at `addr` [`follows`] `master`.
async fn wait_follows(addr: &str, master: &str) {
    let what = format!("{addr} to follow {master}");
    wait_until(Duration::from_secs(10), &what, || follows(addr, master)).await;
}

/// The proxy's `INFO replication` text.
async fn proxy_info(client: &mut Client) -> String {
    match client.cmd(&["INFO", "replication"]).await {
        Reply::Bulk(Some(text)) => String::from_utf8_lossy(&text).into_owned(),
        other => panic!("INFO replication: {other:?}"),
    }
}

/// The state of replica `addr` in the cluster's topology.
fn state_of(cluster: &TestCluster, addr: &str) -> Option<ReplicaState> {
    cluster
        .topology()
        .shards
        .iter()
        .flat_map(|s| s.replicas.iter())
        .find(|r| r.addr.as_str() == addr)
        .map(|r| r.state)
}

/// Waits (at most 10 s) until every replica of `cluster` holds its master's data.
async fn wait_replicas_equal(cluster: &TestCluster) {
    for shard in &cluster.topology().shards {
        for replica in &shard.replicas {
            wait_digest_equal(shard.master.as_str(), replica.addr.as_str()).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_follow_their_master_and_info_shows_their_offsets() {
    let cluster = TestCluster::start_with(2, true, REDIS_REPLICATION, NODE).await;
    for (master, replica) in cluster.masters.iter().zip(&cluster.replicas) {
        wait_follows(&replica.addr(), &master.addr()).await;
        assert_eq!(
            state_of(&cluster, &replica.addr()),
            Some(ReplicaState::InSync)
        );
    }
    let mut client = cluster.client().await;
    for i in 0..100 {
        assert!(client.cmd(&["SET", &format!("k{i}"), "v"]).await.is_ok());
    }
    wait_replicas_equal(&cluster).await;
    // The controller's next check sees the replicas' offsets move with the writes.
    wait_until(
        Duration::from_secs(5),
        "INFO replication to show each replica attached with an offset",
        || async {
            let text = proxy_info(&mut cluster.client().await).await;
            cluster.replicas.iter().all(|r| {
                text.lines().any(|line| {
                    line.contains(&format!("addr={},state=in-sync,link=up,", r.addr()))
                        && !line.contains("offset=0,")
                })
            })
        },
    )
    .await;
}

/// A first start with replicas that follow nobody yet: each is `syncing` until the controller
/// has made it follow its master and seen it catch up. None counts in sync (a write would wait
/// for it, a failover could promote it) while it does not follow, and none is recorded stale.
/// A write's `WAIT` never asks for more replicas than the shard has (one that did would wait
/// `ack_timeout_ms`): the replica that comes in sync is not also counted among the other
/// replicas streaming from the master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_start_counts_no_replica_in_sync_before_it_follows_and_marks_none_stale() {
    let masters: Vec<RedisServer> = (0..2).map(|_| RedisServer::start_with(NODE)).collect();
    let replicas: Vec<RedisServer> = (0..2).map(|_| RedisServer::start_with(NODE)).collect();
    let addrs = |nodes: &[RedisServer]| nodes.iter().map(RedisServer::addr).collect::<Vec<_>>();
    let text = config_text(&addrs(&masters), &addrs(&replicas), REDIS_REPLICATION);
    let proxy = start_proxy(Config::from_toml_str(&text, "test.toml").unwrap()).await;
    let mut samples = 0;
    wait_until(
        Duration::from_secs(10),
        "the replicas in sync, following their masters",
        || {
            samples += 1;
            let table = proxy.state().router.load();
            let topology = Arc::clone(table.topology());
            for (shard, route) in topology.shards.iter().zip(table.shards()) {
                let waits = route.wait_for() as usize;
                let replicas = shard.replicas.len();
                assert!(
                    waits <= replicas,
                    "writes to {} wait for {waits} replicas of {replicas} at epoch {}",
                    shard.name,
                    topology.epoch
                );
            }
            let settled = replication_settled(&proxy);
            async move {
                for shard in &topology.shards {
                    for replica in &shard.replicas {
                        let (addr, master) = (replica.addr.to_string(), shard.master.to_string());
                        match replica.state {
                            ReplicaState::Syncing => {}
                            ReplicaState::InSync => assert!(
                                follows(&addr, &master).await,
                                "{addr} counts in sync at epoch {} but does not follow {master}",
                                topology.epoch
                            ),
                            ReplicaState::Stale => {
                                panic!("{addr} stale at epoch {}", topology.epoch)
                            }
                        }
                    }
                }
                settled
            }
        },
    )
    .await;
    assert!(
        samples > 1,
        "the states before the replicas settled were seen"
    );
    assert_eq!(proxy.state().ha.snapshot().replicas_marked_stale, 0);
    assert_eq!(proxy.state().ha.snapshot().resyncs_completed, 0);
}

/// `INFO stats total_connections_received` of the node `node` is connected to.
async fn connections_received(node: &mut Client) -> u64 {
    node.info_field("stats", "total_connections_received")
        .await
        .and_then(|n| n.parse().ok())
        .expect("total_connections_received")
}

/// Writes through the proxy, then waits until a replication check saw the replica at `addr`
/// reach the offset of the master (`master`, a connection to it) after that write: one more
/// check has run.
async fn one_more_check(cluster: &TestCluster, master: &mut Client, addr: &str, n: usize) {
    let mut client = cluster.client().await;
    assert!(client
        .cmd(&["SET", &format!("check{n}"), "v"])
        .await
        .is_ok());
    let at: u64 = master
        .info_field("replication", "master_repl_offset")
        .await
        .and_then(|o| o.parse().ok())
        .expect("master_repl_offset");
    let proxy = cluster.proxy.as_ref().expect("proxy");
    let node: redshard_config::NodeAddr = addr.parse().expect("address");
    wait_until(
        Duration::from_secs(10),
        "a check to see the write",
        || async {
            proxy
                .state()
                .ha
                .link(&node)
                .is_some_and(|l| l.attached && l.offset >= at)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_checks_keep_their_connections_and_reconnect_after_a_restart() {
    let mut cluster = TestCluster::start_with(1, true, REDIS_REPLICATION, NODE).await;
    let replica = cluster.replicas[0].addr();
    let master = cluster.masters[0].addr();
    wait_until(Duration::from_secs(20), "replication settled", || async {
        replication_settled(cluster.proxy.as_ref().expect("proxy"))
    })
    .await;
    // The test's own connections, opened once.
    let mut on_master = Client::connect(master.clone()).await;
    let mut on_replica = Client::connect(replica.clone()).await;
    one_more_check(&cluster, &mut on_master, &replica, 0).await;
    let replica_before = connections_received(&mut on_replica).await;
    let master_before = connections_received(&mut on_master).await;
    for n in 1..=5 {
        one_more_check(&cluster, &mut on_master, &replica, n).await;
    }
    // Five checks, each asking both nodes: at most one new connection each (had a kept one
    // been lost meanwhile); a new connection per check would be five or more.
    let replica_new = connections_received(&mut on_replica).await - replica_before;
    let master_new = connections_received(&mut on_master).await - master_before;
    assert!(
        replica_new <= 1,
        "{replica_new} new connections to the replica"
    );
    assert!(
        master_new <= 1,
        "{master_new} new connections to the master"
    );

    // A restarted replica closed the kept connection: the checks notice and connect again.
    cluster.replicas[0].restart();
    wait_follows(&replica, &master).await;
    for n in 6..=7 {
        one_more_check(&cluster, &mut on_master, &replica, n).await;
    }
    assert_eq!(state_of(&cluster, &replica), Some(ReplicaState::InSync));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_detached_by_hand_is_made_stale_and_repaired() {
    let cluster = TestCluster::start_with(1, true, REDIS_REPLICATION, NODE).await;
    let (master, replica) = (cluster.masters[0].addr(), cluster.replicas[0].addr());
    let mut client = cluster.client().await;
    for i in 0..100 {
        assert!(client.cmd(&["SET", &format!("k{i}"), "v"]).await.is_ok());
    }
    let stale_marks = || {
        let proxy = cluster.proxy.as_ref().expect("the proxy runs");
        proxy.state().ha.snapshot().replicas_marked_stale
    };
    let stale_before = stale_marks();
    let mut direct = Client::connect(replica.clone()).await;
    assert!(direct.cmd(&["REPLICAOF", "NO", "ONE"]).await.is_ok());
    // A replica standing alone takes writes nobody else sees: it is no longer in sync.
    assert!(direct.cmd(&["SET", "stray", "1"]).await.is_ok());
    wait_until(
        Duration::from_secs(5),
        "the detached replica to be recorded stale",
        || async { stale_marks() > stale_before },
    )
    .await;
    wait_follows(&replica, &master).await;
    cluster.wait_replication().await;
    assert_eq!(state_of(&cluster, &replica), Some(ReplicaState::InSync));
    assert!(client.cmd(&["SET", "after", "1"]).await.is_ok());
    wait_replicas_equal(&cluster).await;
    assert_eq!(
        info_field(&replica, "keyspace", "db0").await.as_deref(),
        Some("keys=101,expires=0,avg_ttl=0"),
        "the stray key is gone with the full sync"
    );
}

/// What a [`write_load`] saw.
#[derive(Clone, Default)]
struct Counts {
    /// Acknowledged writes.
    writes: Arc<AtomicU64>,
    /// Error replies.
    errors: Arc<AtomicU64>,
    /// The keys whose SET was acknowledged (`+OK`), to look for after failovers.
    acknowledged: Arc<std::sync::Mutex<Vec<String>>>,
}

/// Clients SETting their own keys through `addr` until `stop` or until the proxy goes away
/// (a crash: plain sockets, so a reset ends a client rather than panicking it); `counts`
/// counts the acknowledged ones and the error replies.
fn write_load(
    addr: std::net::SocketAddr,
    clients: usize,
    stop: &Arc<AtomicBool>,
    counts: &Counts,
) -> JoinSet<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tasks = JoinSet::new();
    for c in 0..clients {
        let (stop, counts) = (Arc::clone(stop), counts.clone());
        tasks.spawn(async move {
            let Ok(mut socket) = tokio::net::TcpStream::connect(addr).await else {
                return;
            };
            let mut buf = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("load:{c}:{i}");
                let request = encode_command(&["SET", &key, "v"]);
                if socket.write_all(&request).await.is_err() {
                    return;
                }
                // Every reply to SET is one line: +OK or -ERR...
                buf.clear();
                while !buf.ends_with(b"\r\n") {
                    let mut byte = [0u8; 64];
                    match socket.read(&mut byte).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&byte[..n]),
                    }
                }
                if buf.starts_with(b"+OK") {
                    counts
                        .acknowledged
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(key);
                    counts.writes.fetch_add(1, Ordering::Relaxed);
                } else {
                    counts.errors.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        });
    }
    tasks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_under_load_is_replaced_fast_and_returns_as_a_replica() {
    let mut cluster = TestCluster::start_with(1, true, REDIS_REPLICATION, NODE).await;
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Counts::default();
    let mut load = write_load(cluster.addr, 4, &stop, &counts);
    let mut probe = cluster.client().await;
    let mut took = Vec::new();
    for trial in 0..3 {
        cluster.wait_probes_up().await;
        wait_for_progress(&counts.writes, 200, "the write load").await;
        // Trials alternate: the node killed last time is the replica now.
        let master = cluster.topology().shards[0].master.to_string();
        let node = if cluster.masters[0].addr() == master {
            &mut cluster.masters[0]
        } else {
            &mut cluster.replicas[0]
        };
        node.kill();
        took.push(until_write_succeeds(&mut probe, "probe", Duration::from_secs(5)).await);
        let new = cluster.topology().shards[0].master.to_string();
        assert_ne!(new, master, "trial {trial}: a failover");
        // Back empty (kill -9, no persistence): it follows the new master and is in sync
        // once it caught up.
        let node = if cluster.masters[0].addr() == master {
            &mut cluster.masters[0]
        } else {
            &mut cluster.replicas[0]
        };
        node.restart();
        wait_follows(&master, &new).await;
        cluster.wait_replication().await;
        assert_eq!(state_of(&cluster, &master), Some(ReplicaState::InSync));
    }
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = load.join_next().await {
        done.expect("load task");
    }
    took.sort();
    eprintln!("writes accepted again after kill -9 of the master: {took:?}");
    assert!(
        took[took.len() / 2] <= Duration::from_secs(1),
        "p50 {:?} over {took:?}",
        took[took.len() / 2]
    );
    wait_replicas_equal(&cluster).await;
    // With sync acknowledgement no acknowledged write is lost through three failovers (each
    // killed master came back empty).
    let acknowledged = counts
        .acknowledged
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert!(!acknowledged.is_empty());
    let mut missing = 0;
    for chunk in acknowledged.chunks(1000) {
        let exists: Vec<Vec<String>> = chunk
            .iter()
            .map(|k| vec!["EXISTS".to_owned(), k.clone()])
            .collect();
        missing += probe
            .pipeline(&exists)
            .await
            .iter()
            .filter(|r| **r != Reply::Int(1))
            .count();
    }
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged writes lost",
        acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_killed_under_load_leaves_replicas_equal_to_their_masters() {
    let dir = tempfile::tempdir().unwrap();
    // Top-level keys first: the `[replication]` table would otherwise take them.
    let extra = format!(
        "topology_file = \"{}\"\nmetrics_listen = \"off\"\nadmin_listen = \"off\"\nadmin_socket = \"off\"\n{REDIS_REPLICATION}",
        dir.path().join("topology.toml").display()
    );
    let masters: Vec<RedisServer> = (0..2).map(|_| RedisServer::start_with(NODE)).collect();
    let replicas: Vec<RedisServer> = (0..2).map(|_| RedisServer::start_with(NODE)).collect();
    let text = config_text(
        &masters.iter().map(RedisServer::addr).collect::<Vec<_>>(),
        &replicas.iter().map(RedisServer::addr).collect::<Vec<_>>(),
        &extra,
    );
    let config = || Config::from_toml_str(&text, "test.toml").unwrap();
    let mut first = CrashableProxy::start(config()).await;
    wait_until(
        Duration::from_secs(10),
        "the replicas to follow",
        || async { replication_settled(first.proxy()) },
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Counts::default();
    let mut load = write_load(first.proxy().local_addr(), 4, &stop, &counts);
    wait_for_progress(&counts.writes, 2_000, "the write load").await;
    first.crash().await;
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = load.join_next().await {
        done.expect("load task");
    }

    let second = CrashableProxy::start(config()).await;
    wait_until(
        Duration::from_secs(10),
        "the replicas in sync again",
        || async { replication_settled(second.proxy()) },
    )
    .await;
    // Whatever the masters applied, acknowledged or not, Redis replication carried.
    for (master, replica) in masters.iter().zip(&replicas) {
        let m = master.addr();
        wait_digest_equal(&m, &replica.addr()).await;
        let keys = info_field(&m, "keyspace", "db0").await;
        assert!(keys.is_some(), "the load reached {m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_failover_swaps_the_roles_without_client_errors() {
    let cluster = TestCluster::start_with(1, true, REDIS_REPLICATION, NODE).await;
    cluster.wait_probes_up().await;
    let (old, new) = (cluster.masters[0].addr(), cluster.replicas[0].addr());
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Counts::default();
    let mut load = write_load(cluster.addr, 4, &stop, &counts);
    wait_for_progress(&counts.writes, 200, "the load before the failover").await;
    let controller = Arc::clone(cluster.proxy.as_ref().unwrap().controller());
    let promoted = controller
        .manual_failover("s1", None)
        .await
        .expect("failover");
    assert_eq!(promoted.to_string(), new);
    wait_for_progress(&counts.writes, 200, "the load after the failover").await;
    let mut direct = Client::connect(new.clone()).await;
    assert_eq!(
        direct.info_field("replication", "role").await.as_deref(),
        Some("master")
    );
    // The old master follows the new one and stays in sync: a graceful failover loses
    // nothing, so it needs no full sync.
    wait_follows(&old, &new).await;
    assert_eq!(state_of(&cluster, &old), Some(ReplicaState::InSync));
    let mut probe = cluster.client().await;
    assert!(probe.cmd(&["SET", "after", "1"]).await.is_ok());
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = load.join_next().await {
        done.expect("load task");
    }
    assert_eq!(
        counts.errors.load(Ordering::Relaxed),
        0,
        "clients saw errors"
    );
    wait_replicas_equal(&cluster).await;
    // The new master served the old one a partial resync, never a full one.
    assert_eq!(
        info_field(&new, "stats", "sync_full").await.as_deref(),
        Some("0"),
        "the old master was fully resynchronised"
    );
    assert_ne!(
        info_field(&new, "stats", "sync_partial_ok")
            .await
            .as_deref(),
        Some("0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_password_protected_nodes_are_given_the_masters_credentials() {
    let extra = format!("[backend]\npassword = \"backend-pw\"\n{REDIS_REPLICATION}");
    let node = [NODE, &["--requirepass", "backend-pw"]].concat();
    // Started only once every replica follows its master with its link up, which takes
    // `masterauth`.
    let cluster = TestCluster::start_with(1, true, &extra, &node).await;
    let mut client = cluster.client().await;
    assert!(client.cmd(&["SET", "k", "v"]).await.is_ok());
    let replica = cluster.replicas[0].addr();
    let mut direct = Client::connect(replica.clone()).await;
    assert!(direct.cmd(&["AUTH", "backend-pw"]).await.is_ok());
    assert_eq!(
        direct
            .cmd(&["CONFIG", "GET", "masterauth"])
            .await
            .items()
            .get(1),
        Some(&Reply::bulk("backend-pw"))
    );
    wait_until(Duration::from_secs(5), "the write on the replica", || {
        let replica = replica.clone();
        async move {
            let mut direct = Client::connect(replica).await;
            direct.cmd(&["AUTH", "backend-pw"]).await;
            direct.cmd(&["GET", "k"]).await == Reply::bulk("v")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_modes_brings_every_replica_back_in_sync() {
    let masters: Vec<RedisServer> = (0..2).map(|_| RedisServer::start_with(NODE)).collect();
    let replicas: Vec<RedisServer> = (0..2).map(|_| RedisServer::start_with(NODE)).collect();
    let text = |mode: &str| {
        config_text(
            &masters.iter().map(RedisServer::addr).collect::<Vec<_>>(),
            &replicas.iter().map(RedisServer::addr).collect::<Vec<_>>(),
            &format!("metrics_listen = \"off\"\n[replication]\nmode = \"{mode}\"\n"),
        )
    };
    let roles = || async {
        let mut roles = Vec::new();
        for r in &replicas {
            roles.push(info_field(&r.addr(), "replication", "role").await.unwrap());
        }
        roles
    };
    for (mode, role) in [("redis", "slave"), ("proxy", "master"), ("redis", "slave")] {
        let config = Config::from_toml_str(&text(mode), "test.toml").unwrap();
        let mut proxy = CrashableProxy::start(config).await;
        let mut client = Client::connect_addr(proxy.proxy().local_addr()).await;
        // The first writes find the replicas as the other mode left them.
        for i in 0..50 {
            assert!(client
                .cmd(&["SET", &format!("{mode}:{i}"), "v"])
                .await
                .is_ok());
        }
        let what = format!("every replica in sync in {mode} mode");
        wait_until(Duration::from_secs(20), &what, || async {
            let table = proxy.proxy().state().router.load();
            table
                .topology()
                .shards
                .iter()
                .all(|s| s.replicas.iter().all(|r| r.state == ReplicaState::InSync))
                && replication_settled(proxy.proxy())
        })
        .await;
        assert!(client.cmd(&["SET", "last", mode]).await.is_ok());
        assert_eq!(roles().await, [role, role], "in {mode} mode");
        for (m, r) in masters.iter().zip(&replicas) {
            wait_digest_equal(&m.addr(), &r.addr()).await;
        }
        proxy.crash().await;
    }
}
