//! Health checks and failover: a dead or hung master is replaced within seconds, fenced, and
//! brought back as a replica.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redshard_config::{Config, ReplicaState};
use redshard_dataplane::router::GateState;
use redshard_tests::client::encode_command;
use redshard_tests::cluster::key_on;
use redshard_tests::replication::{digest, info_field, signal, wait_until};
use redshard_tests::{wait_for_progress, Client, Reply, TestCluster};
use tokio::task::JoinSet;

use crate::mirror::{replica_state, DEBUG};

/// The master of shard `index` in the proxy's current topology.
fn master_of(cluster: &TestCluster, index: usize) -> String {
    let table = cluster.proxy.as_ref().expect("proxy").state().router.load();
    table.topology().shards[index].master.to_string()
}

fn epoch(cluster: &TestCluster) -> u64 {
    cluster.proxy.as_ref().expect("proxy").epoch()
}

/// Writes to `key` until one succeeds; returns how long that took.
pub(crate) async fn until_write_succeeds(
    client: &mut Client,
    key: &str,
    limit: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        if client.cmd(&["SET", key, "x"]).await.is_ok() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "writes did not resume within {limit:?}"
        );
        // Polling interval of this wait loop, not synchronisation.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (at most 20 s: a full sync waits out the master's 5 s diskless-sync delay) until
/// the node at `addr` is an in-sync replica.
async fn wait_in_sync(cluster: &TestCluster, addr: &str, what: &str) {
    wait_until(Duration::from_secs(20), what, || async {
        replica_state(cluster, addr) == Some(ReplicaState::InSync)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_replaced_within_seconds_and_rejoins_as_a_replica() {
    let mut cluster = TestCluster::start_with(2, true, "", DEBUG).await;
    let key = key_on(2, 0, "fo");
    let mut client = cluster.client().await;
    assert!(client.cmd(&["SET", &key, "before"]).await.is_ok());
    cluster.wait_probes_up().await;
    let old = cluster.masters[0].addr();
    let new = cluster.replicas[0].addr();
    cluster.masters[0].kill();
    let took = until_write_succeeds(&mut client, &key, Duration::from_secs(5)).await;
    eprintln!(
        "writes accepted again {} ms after kill -9",
        took.as_millis()
    );
    assert_eq!(master_of(&cluster, 0), new);
    assert_eq!(client.cmd(&["GET", &key]).await, Reply::bulk("x"));

    // The old master comes back empty: it is resynchronised and becomes an in-sync replica.
    cluster.masters[0].restart();
    wait_in_sync(&cluster, &old, "the old master to rejoin in sync").await;
    assert!(client.cmd(&["SET", &key, "after"]).await.is_ok());
    assert_eq!(digest(&old).await, digest(&new).await);
    let mut direct = Client::connect(old.clone()).await;
    assert_eq!(direct.cmd(&["GET", &key]).await, Reply::bulk("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_pause_does_not_fail_over_and_a_long_one_does_with_fencing() {
    let cluster = TestCluster::start_with(2, true, "", &[]).await;
    let key = key_on(2, 0, "stop");
    let mut client = cluster.client().await;
    assert!(client.cmd(&["SET", &key, "0"]).await.is_ok());
    cluster.wait_probes_up().await;
    let master = cluster.masters[0].addr();
    let pid = cluster.masters[0].pid().expect("running");

    // Shorter than half the down-time (1.5 s): no failover, the write just waits. The pause
    // and the wait after it are the scenario (no failover may follow), not synchronisation.
    let before = epoch(&cluster);
    signal(pid, "STOP");
    let writer = {
        let mut client = cluster.client().await;
        let key = key.clone();
        tokio::spawn(async move { client.cmd(&["SET", &key, "1"]).await })
    };
    tokio::time::sleep(Duration::from_millis(600)).await;
    signal(pid, "CONT");
    assert!(writer.await.unwrap().is_ok());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        epoch(&cluster),
        before,
        "a short pause caused a topology change"
    );
    assert_eq!(master_of(&cluster, 0), master);

    // Longer than the down-time: failover. Requests written to its socket before the
    // failover run when it wakes (their clients got errors; the resync discards their
    // effects), but nothing sent after the failover may reach it: writers INCR only then.
    // Under Redis replication the controller makes the woken node a replica of the new
    // master at once, and the INCRs it then replays count in its commandstats too: the
    // controller's user may not run REPLICAOF there, so what it ran came from lanes.
    let mut direct = Client::connect(master.clone()).await;
    let refused = direct
        .cmd(&["ACL", "SETUSER", "default", "-replicaof", "-slaveof"])
        .await;
    assert_eq!(refused, Reply::Status("OK".into()));
    drop(direct);
    signal(pid, "STOP");
    wait_until(Duration::from_secs(6), "the failover", || async {
        master_of(&cluster, 0) != master
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut writers = JoinSet::new();
    for _ in 0..3 {
        let mut client = cluster.client().await;
        let (stop, errors, done, key) = (
            Arc::clone(&stop),
            Arc::clone(&errors),
            Arc::clone(&done),
            key.clone(),
        );
        writers.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if matches!(
                    client.cmd(&["INCR", &format!("{key}:n")]).await,
                    Reply::Error(_)
                ) {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    wait_for_progress(
        &done,
        100,
        "INCRs on the new master while the old one sleeps",
    )
    .await;
    signal(pid, "CONT");
    // Read the woken node's counters at once, before its resync streams writes to it.
    let incr_calls = info_field(&master, "commandstats", "cmdstat_incr").await;
    stop.store(true, Ordering::Relaxed);
    while writers.join_next().await.is_some() {}
    assert_eq!(
        incr_calls, None,
        "the fenced master ran commands sent after its failover"
    );
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "writes after the failover failed"
    );
    assert!(client.cmd(&["SET", &key, "done"]).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_failover_under_load_has_no_client_errors() {
    let cluster = TestCluster::start_with(2, true, "", DEBUG).await;
    cluster.wait_probes_up().await;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    for w in 0..4 {
        let mut client = cluster.client().await;
        let (stop, errors, done) = (Arc::clone(&stop), Arc::clone(&errors), Arc::clone(&done));
        tasks.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("m:{w}:{}", i % 100);
                let set = client.cmd(&["SET", &key, &i.to_string()]).await;
                let get = client.cmd(&["GET", &key]).await;
                if !set.is_ok() || get != Reply::bulk(&i.to_string()) {
                    errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("{set:?} {get:?}");
                }
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        });
    }
    wait_for_progress(&done, 100, "the load before the failover").await;
    let controller = Arc::clone(cluster.proxy.as_ref().unwrap().controller());
    let old = cluster.masters[0].addr();
    let promoted = controller
        .manual_failover("s1", None)
        .await
        .expect("failover");
    assert_eq!(promoted.to_string(), cluster.replicas[0].addr());
    wait_for_progress(&done, 100, "the load after the failover").await;
    stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    assert_eq!(errors.load(Ordering::Relaxed), 0, "clients saw errors");
    assert_eq!(master_of(&cluster, 0), promoted.to_string());
    let table = cluster.proxy.as_ref().unwrap().state().router.load();
    let replica = &table.topology().shards[0].replicas[0];
    assert_eq!(
        (replica.addr.to_string(), replica.state),
        (old.clone(), ReplicaState::InSync)
    );
    assert_eq!(digest(&old).await, digest(promoted.as_ref()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_without_replicas_answers_clusterdown_until_its_master_returns() {
    let mut cluster = TestCluster::start(2).await;
    let (down, up) = (key_on(2, 0, "cd"), key_on(2, 1, "cd"));
    let mut client = cluster.client().await;
    cluster.wait_probes_up().await;
    cluster.masters[0].kill();
    let start = Instant::now();
    loop {
        let reply = client.cmd(&["GET", &down]).await;
        if matches!(&reply, Reply::Error(e) if e.starts_with("CLUSTERDOWN")) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no CLUSTERDOWN: {reply:?}"
        );
        // Polling interval of this wait loop, not synchronisation.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        client.cmd(&["SET", &up, "1"]).await.is_ok(),
        "other shards keep working"
    );
    cluster.masters[0].restart();
    until_write_succeeds(&mut client, &down, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_survives_a_proxy_restart() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "topology_file = \"{}\"\nmetrics_listen = \"off\"\nadmin_listen = \"off\"\nadmin_socket = \"off\"\n",
        dir.path().join("topology.toml").display()
    );
    let mut cluster = TestCluster::start_with(2, true, &extra, &[]).await;
    let mut client = cluster.client().await;
    let key = key_on(2, 0, "persist");
    cluster.wait_probes_up().await;
    cluster.masters[0].kill();
    until_write_succeeds(&mut client, &key, Duration::from_secs(5)).await;
    let promoted = master_of(&cluster, 0);
    let config_text = redshard_tests::cluster::config_text(
        &cluster.masters.iter().map(|m| m.addr()).collect::<Vec<_>>(),
        &cluster
            .replicas
            .iter()
            .map(|m| m.addr())
            .collect::<Vec<_>>(),
        &extra,
    );
    assert!(cluster.stop_proxy(Duration::from_secs(2)).await);
    let config = Config::from_toml_str(&config_text, "test.toml").unwrap();
    let proxy = redshard_proxy::Proxy::start(config).await.expect("restart");
    let table = proxy.state().router.load();
    assert_eq!(table.topology().shards[0].master.to_string(), promoted);
    let mut client = Client::connect_addr(proxy.local_addr()).await;
    assert_eq!(client.cmd(&["GET", &key]).await, Reply::bulk("x"));
    proxy.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_of_a_hung_master_are_told_to_reconnect_after_its_failover() {
    let cluster = TestCluster::start_with(2, true, "", &[]).await;
    let channel = key_on(2, 0, "chan");
    let mut subscriber = cluster.client().await;
    subscriber.cmd(&["SUBSCRIBE", &channel]).await;
    cluster.wait_probes_up().await;
    let master = cluster.masters[0].addr();
    let pid = cluster.masters[0].pid().expect("running");
    signal(pid, "STOP");
    wait_until(Duration::from_secs(6), "the failover", || async {
        master_of(&cluster, 0) != master
    })
    .await;
    // Its subscription would hear nothing more: the proxy closes the client's connection.
    let closed = tokio::time::timeout(Duration::from_secs(3), subscriber.try_read()).await;
    signal(pid, "CONT");
    assert_eq!(closed.expect("the connection closes"), None);
    // A new subscription works on the new master.
    let mut again = cluster.client().await;
    again.cmd(&["SUBSCRIBE", &channel]).await;
    let mut publisher = cluster.client().await;
    assert_eq!(
        publisher.cmd(&["PUBLISH", &channel, "hi"]).await,
        Reply::Int(1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restarted_before_failover_started_is_still_failed_over() {
    // kill -9 and an immediate restart (empty, as a supervisor would do it) come back faster
    // than the probes call the master down. The lanes see its new run_id: the in-sync
    // replica, which holds every acknowledged write, is promoted instead of being resynced
    // from the empty master.
    let mut cluster = TestCluster::start_with(1, true, "", DEBUG).await;
    let mut client = cluster.client().await;
    for i in 0..200 {
        assert!(client.cmd(&["SET", &format!("k{i}"), "v"]).await.is_ok());
    }
    let old = cluster.masters[0].addr();
    let new = cluster.replicas[0].addr();
    cluster.masters[0].kill();
    cluster.masters[0].restart();
    let took = until_write_succeeds(&mut client, "after", Duration::from_secs(5)).await;
    eprintln!(
        "writes accepted again {} ms after the restart",
        took.as_millis()
    );
    assert_eq!(master_of(&cluster, 0), new);
    for i in 0..200 {
        assert_eq!(
            client.cmd(&["GET", &format!("k{i}")]).await,
            Reply::bulk("v"),
            "k{i}"
        );
    }
    // The restarted node comes back as a replica through a full resync.
    wait_in_sync(&cluster, &old, "the restarted node in sync").await;
    assert!(client.cmd(&["SET", "later", "1"]).await.is_ok());
    assert_eq!(digest(&old).await, digest(&new).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_restarted_empty_is_resynchronised_not_trusted() {
    // A replica that restarts (empty) while no write is mirrored would take the next mirrored
    // SETs as if nothing happened and pass for in sync while missing everything before. Its
    // new run_id makes it stale; the resync refills it.
    let mut cluster = TestCluster::start_with(1, true, "", DEBUG).await;
    let mut client = cluster.client().await;
    for i in 0..200 {
        assert!(client.cmd(&["SET", &format!("k{i}"), "v"]).await.is_ok());
    }
    let master = cluster.masters[0].addr();
    let replica = cluster.replicas[0].addr();
    cluster.replicas[0].kill();
    cluster.replicas[0].restart();
    // No write while it was away: nothing mirrored failed, so only its run_id tells. The
    // lanes reconnect to the new process first (a lane's first command is INFO server).
    wait_until(
        Duration::from_secs(5),
        "a lane to reconnect to the replica",
        || async {
            let mut direct = Client::connect(replica.clone()).await;
            direct
                .cmd(&["CLIENT", "LIST"])
                .await
                .text()
                .contains("cmd=info")
        },
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut i = 0;
    loop {
        // Writes go on (each is mirrored only while the replica is in sync).
        assert!(client.cmd(&["SET", &format!("n{i}"), "v"]).await.is_ok());
        i += 1;
        let in_sync = replica_state(&cluster, &replica) == Some(ReplicaState::InSync);
        if in_sync && digest(&master).await == digest(&replica).await {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the replica never matched its master again"
        );
        // Polling interval of this wait loop, not synchronisation.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut direct = Client::connect(replica).await;
    assert_eq!(direct.cmd(&["GET", "k0"]).await, Reply::bulk("v"));
    assert_eq!(direct.cmd(&["DBSIZE"]).await, Reply::Int(200 + i));
}

/// Shard `index`'s gate in the proxy's current routing table.
fn gate(cluster: &TestCluster, index: usize) -> GateState {
    let table = cluster.proxy.as_ref().expect("proxy").state().router.load();
    table.shards()[index].gate.state()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_sent_while_a_fast_restarting_master_is_known_dead_wait_and_succeed() {
    // kill -9 and an immediate restart on the same port, as a supervisor does it, under a
    // steady stream of writes. Writes in flight at the kill may fail (their outcome is
    // unknown), but once the proxy knows the master is gone (its shard's gate is paused),
    // every write sent waits for the outcome, here the promotion of the replica, and
    // succeeds: none may see "Connection refused" or the restarted node.
    // The lanes wait 400 ms before they reconnect after a refused connect: the master is
    // back, and the probes see it, well before they try again.
    let extra = "[backend]\nreconnect_backoff_min_ms = 400\n";
    let mut cluster = TestCluster::start_with(1, true, extra, &[]).await;
    let controller = Arc::clone(cluster.proxy.as_ref().expect("proxy").controller());
    let replica: redshard_config::NodeAddr = cluster.replicas[0].addr().parse().expect("addr");
    wait_until(Duration::from_secs(5), "the replica's probe up", || async {
        controller.probe(&replica).is_up()
    })
    .await;
    let known_dead = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (done, sent_after) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let errors_after = Arc::new(std::sync::Mutex::new(Vec::new()));
    let errors_before = Arc::new(AtomicU64::new(0));
    let mut writers = JoinSet::new();
    for w in 0..4 {
        let mut client = cluster.client().await;
        let (known_dead, stop, done, sent_after, errors_after, errors_before) = (
            Arc::clone(&known_dead),
            Arc::clone(&stop),
            Arc::clone(&done),
            Arc::clone(&sent_after),
            Arc::clone(&errors_after),
            Arc::clone(&errors_before),
        );
        writers.spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let after = known_dead.load(Ordering::SeqCst);
                if after {
                    sent_after.fetch_add(1, Ordering::SeqCst);
                }
                let reply = client.cmd(&["SET", &format!("r:{w}:{i}"), "v"]).await;
                match (after, &reply) {
                    (true, Reply::Error(e)) => errors_after.lock().unwrap().push(e.clone()),
                    (false, Reply::Error(_)) => {
                        errors_before.fetch_add(1, Ordering::SeqCst);
                    }
                    _ => {}
                }
                done.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
        });
    }
    wait_until(Duration::from_secs(5), "writes flowing", || async {
        done.load(Ordering::SeqCst) >= 200
    })
    .await;
    let old = cluster.masters[0].addr();
    cluster.masters[0].kill();
    wait_until(Duration::from_secs(5), "the gate paused", || async {
        gate(&cluster, 0) == GateState::Paused
    })
    .await;
    known_dead.store(true, Ordering::SeqCst);
    // Writes sent now, while the master is certainly dead (the steady writers may all be
    // waiting for replies to writes sent before): they must wait, then succeed.
    let mut waiting = Vec::new();
    for i in 0..4 {
        let mut client = cluster.client().await;
        client
            .send_raw(&encode_command(&["SET", &format!("dead:{i}"), "v"]))
            .await;
        waiting.push(client);
    }
    cluster.masters[0].restart();
    wait_until(Duration::from_secs(10), "the replica promoted", || async {
        master_of(&cluster, 0) != old
    })
    .await;
    let resumed = done.load(Ordering::SeqCst);
    wait_until(Duration::from_secs(10), "writes flowing again", || async {
        done.load(Ordering::SeqCst) >= resumed + 200
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    while writers.join_next().await.is_some() {}
    for client in &mut waiting {
        let reply = client.read().await;
        if let Reply::Error(e) = reply {
            errors_after.lock().unwrap().push(e);
        }
    }
    let errors = errors_after.lock().unwrap().clone();
    eprintln!(
        "writes sent after the proxy knew the master dead: {} ({} failed); failed before (in flight at the kill): {}",
        sent_after.load(Ordering::SeqCst),
        errors.len(),
        errors_before.load(Ordering::SeqCst)
    );
    assert!(
        errors.is_empty(),
        "{} of {} writes sent after the proxy knew the master dead failed: {:?}",
        errors.len(),
        sent_after.load(Ordering::SeqCst),
        &errors[..errors.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_without_replicas_restarted_at_once_makes_writes_wait_not_fail() {
    // Nothing to fail over to: a master restarted at once is served as it comes back, and
    // the writes sent while it was dead wait for it in its lanes instead of getting its
    // "Connection refused". The lanes wait 400 ms before they try again: the master is back
    // well before.
    let extra = "[backend]\nreconnect_backoff_min_ms = 400\n";
    let mut cluster = TestCluster::start_with(1, false, extra, &[]).await;
    let controller = Arc::clone(cluster.proxy.as_ref().expect("proxy").controller());
    let master: redshard_config::NodeAddr = cluster.masters[0].addr().parse().expect("addr");
    let mut c = cluster.client().await;
    assert!(c.cmd(&["SET", "before", "1"]).await.is_ok());
    wait_until(Duration::from_secs(5), "the master's probe up", || async {
        controller.probe(&master).is_up()
    })
    .await;
    cluster.masters[0].kill();
    // The proxy knows it is gone: nothing listens on its port.
    wait_until(Duration::from_secs(5), "the master refused", || async {
        controller.probe(&master).refused_since.is_some()
    })
    .await;
    let mut waiting = Vec::new();
    for i in 0..4 {
        let mut client = cluster.client().await;
        client
            .send_raw(&encode_command(&["SET", &format!("dead:{i}"), "v"]))
            .await;
        waiting.push(client);
    }
    cluster.masters[0].restart();
    for client in &mut waiting {
        assert_eq!(client.read().await, Reply::Status("OK".into()));
    }
    assert_eq!(c.cmd(&["GET", "dead:0"]).await, Reply::bulk("v"));
}
