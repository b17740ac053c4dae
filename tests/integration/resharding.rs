//! Online resharding: slots move between shards under live traffic, with no client errors,
//! no lost keys, and replicas equal to their masters throughout.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redshard_config::TopologyStore as _;
use redshard_config::{NodeAddr, ReplicaState, Slot, SlotRange, TopologyChange};
use redshard_control::migrate::MigrationState;
use redshard_control::Controller;
use redshard_tests::cluster::CrashableProxy;
use redshard_tests::replication::wait_until;
use redshard_tests::{Client, RedisServer, Reply, TestCluster};
use tokio::task::JoinSet;

use crate::mirror::DEBUG;
use redshard_tests::workload::{assert_keys_where_they_belong, assert_replicas_equal, Traffic};

fn controller(cluster: &TestCluster) -> Arc<Controller> {
    Arc::clone(cluster.proxy.as_ref().expect("proxy").controller())
}

/// Loads `n` keys of mixed types through the proxy.
async fn load_keys(client: &mut Client, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(100) {
        let mut cmds: Vec<Vec<String>> = Vec::new();
        for &i in chunk {
            cmds.push(match i % 5 {
                0 => vec!["SET".into(), format!("key:{i}"), format!("v{i}")],
                1 => vec![
                    "HSET".into(),
                    format!("key:{i}"),
                    "f".into(),
                    format!("v{i}"),
                ],
                2 => vec!["RPUSH".into(), format!("key:{i}"), format!("v{i}")],
                3 => vec!["SADD".into(), format!("key:{i}"), format!("v{i}")],
                _ => vec![
                    "SET".into(),
                    format!("key:{i}"),
                    format!("v{i}"),
                    "EX".into(),
                    "100000".into(),
                ],
            });
        }
        for reply in client.pipeline(&cmds).await {
            assert!(!matches!(reply, Reply::Error(_)), "{reply:?}");
        }
    }
}

/// Reads key `i` back in the shape `load_keys` gave it, as a string.
async fn read_key(client: &mut Client, i: usize) -> Reply {
    let key = format!("key:{i}");
    match i % 5 {
        1 => client.cmd(&["HGET", &key, "f"]).await,
        2 => client.cmd(&["LINDEX", &key, "-1"]).await,
        3 => client.cmd(&["SRANDMEMBER", &key]).await,
        _ => client.cmd(&["GET", &key]).await,
    }
}

async fn wait_migrations_done(controller: &Controller, timeout: Duration) {
    wait_until(timeout, "the migrations to finish", || async {
        let all = controller.migrations();
        if let Some(failed) = all
            .iter()
            .find(|m| matches!(m.state, MigrationState::Failed(_)))
        {
            panic!("migration failed: {failed:?}");
        }
        all.iter()
            .all(|m| matches!(m.state, MigrationState::Done | MigrationState::Cancelled))
    })
    .await;
}

/// Adds a shard named `name` with a master and an in-sync replica (new redis-servers).
async fn add_shard(controller: &Arc<Controller>, name: &str) -> (RedisServer, RedisServer) {
    let master = RedisServer::start_with(DEBUG);
    let replica = RedisServer::start_with(DEBUG);
    let topology = controller
        .change(TopologyChange::AddShard {
            name: name.into(),
            master: NodeAddr::parse(&master.addr()).unwrap(),
        })
        .await
        .expect("add shard");
    let id = topology.shard_by_name(name).unwrap().id;
    controller
        .change(TopologyChange::AddReplica {
            shard: id,
            addr: NodeAddr::parse(&replica.addr()).unwrap(),
            state: ReplicaState::Syncing,
        })
        .await
        .expect("add replica");
    wait_until(
        Duration::from_secs(20),
        "the new replica to be in sync",
        || async {
            controller
                .state()
                .router
                .load()
                .topology()
                .shard(id)
                .unwrap()
                .replicas[0]
                .state
                == ReplicaState::InSync
        },
    )
    .await;
    (master, replica)
}

/// Readers checking loaded keys until stopped; returns how many reads were wrong.
fn start_readers(
    cluster_addr: std::net::SocketAddr,
    keys: usize,
    stop: Arc<AtomicBool>,
) -> JoinSet<u64> {
    let mut readers = JoinSet::new();
    for r in 0..2 {
        let stop = Arc::clone(&stop);
        readers.spawn(async move {
            let mut client = Client::connect_addr(cluster_addr).await;
            let (mut wrong, mut i) = (0, r * 7919);
            while !stop.load(Ordering::Relaxed) {
                i = (i + 104_729) % keys;
                let got = read_key(&mut client, i).await;
                if got != Reply::bulk(&format!("v{i}")) {
                    wrong += 1;
                    eprintln!("reader: key:{i} read {got:?}");
                }
            }
            wrong
        });
    }
    readers
}

/// The tutorial, end to end: 3 masters + 3 replicas, 50k keys of mixed types; with writers
/// and readers running, add a 4th master and its replica, rebalance to 4 shards; then remove
/// the 4th replica, hand its master's slots back, remove the master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_and_back_in_under_load_loses_nothing() {
    const KEYS: usize = 50_000;
    let cluster = TestCluster::start_with(3, true, "", DEBUG).await;
    let controller = controller(&cluster);
    let mut client = cluster.client().await;
    load_keys(&mut client, KEYS).await;
    let traffic = Traffic::start(&cluster, 4).await;
    let stop_readers = Arc::new(AtomicBool::new(false));
    let mut readers = start_readers(cluster.addr, KEYS, Arc::clone(&stop_readers));

    // Scale out: a 4th master with its replica, then an equal share of the slots.
    let (_m4, _r4) = add_shard(&controller, "s4").await;
    for (from, count) in [("s1", 1365), ("s2", 1366), ("s3", 1365)] {
        controller
            .migrate_count(from, "s4", count)
            .await
            .unwrap_or_else(|e| panic!("queue {from} -> s4: {e}"));
    }
    wait_migrations_done(&controller, Duration::from_secs(180)).await;
    for m in controller.migrations() {
        eprintln!(
            "{} -> {}: {} keys, {} bytes in {:.1} s ({:.0} keys/s)",
            m.from, m.to, m.keys_moved, m.bytes_moved, m.elapsed_secs, m.rate_keys_per_sec
        );
    }
    assert_keys_where_they_belong(controller.state().router.load().topology()).await;

    // Scale in: remove the replica first, hand the slots back, then remove the master.
    let topology = Arc::clone(controller.state().router.load().topology());
    let s4 = topology.shard_by_name("s4").unwrap();
    let (s4, replica) = (s4.id, s4.replicas[0].addr.clone());
    controller
        .change(TopologyChange::RemoveReplica {
            shard: s4,
            addr: replica,
        })
        .await
        .expect("remove the replica");
    let owned: Vec<SlotRange> = topology.slots_of(s4);
    let slots: Vec<Slot> = owned.iter().flat_map(SlotRange::slots).collect();
    for (part, to) in slots
        .chunks(slots.len().div_ceil(3))
        .zip(["s1", "s2", "s3"])
    {
        let ranges = redshard_config::slot::compact(part.iter().copied());
        controller
            .migrate("s4", to, ranges)
            .await
            .unwrap_or_else(|e| panic!("queue s4 -> {to}: {e}"));
    }
    wait_migrations_done(&controller, Duration::from_secs(180)).await;
    controller
        .change(TopologyChange::RemoveShard { shard: s4 })
        .await
        .expect("remove the master");

    let (last, errors) = traffic.finish().await;
    stop_readers.store(true, Ordering::Relaxed);
    let mut wrong = 0;
    while let Some(done) = readers.join_next().await {
        wrong += done.expect("reader");
    }
    assert_eq!(errors, 0, "writers saw errors");
    assert_eq!(wrong, 0, "readers saw wrong values");
    for i in 0..KEYS {
        assert_eq!(read_key(&mut client, i).await, loaded(i), "key:{i}");
    }
    for (key, value) in last {
        assert_eq!(
            client.cmd(&["GET", &key]).await,
            Reply::bulk(&value),
            "{key}"
        );
    }
    assert_keys_where_they_belong(controller.state().router.load().topology()).await;
    assert_replicas_equal(&cluster).await;
}

/// The value of `key:i` as `load_keys` wrote it.
fn loaded(i: usize) -> Reply {
    Reply::bulk(&format!("v{i}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_resumes_after_a_proxy_restart() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!(
        "topology_file = \"{}\"\nmetrics_listen = \"off\"\nadmin_listen = \"off\"\nadmin_socket = \"off\"\n",
        dir.path().join("topology.toml").display()
    );
    let mut cluster = TestCluster::start_with(2, true, &extra, DEBUG).await;
    let controller = controller(&cluster);
    let mut client = cluster.client().await;
    load_keys(&mut client, 20_000).await;
    controller
        .migrate_count("s1", "s2", 4096)
        .await
        .expect("queue");
    wait_until(Duration::from_secs(30), "some keys to move", || async {
        controller.migrations().iter().any(|m| m.keys_moved > 500)
    })
    .await;
    let config_text = redshard_tests::cluster::config_text(
        &cluster
            .masters
            .iter()
            .map(RedisServer::addr)
            .collect::<Vec<_>>(),
        &cluster
            .replicas
            .iter()
            .map(RedisServer::addr)
            .collect::<Vec<_>>(),
        &extra,
    );
    drop(controller);
    assert!(cluster.stop_proxy(Duration::from_secs(2)).await);

    let config = redshard_config::Config::from_toml_str(&config_text, "test.toml").unwrap();
    let proxy = redshard_proxy::Proxy::start(config).await.expect("restart");
    assert!(
        proxy.state().router.load().has_migrations(),
        "the restarted proxy knows the migration"
    );
    let mut client = Client::connect_addr(proxy.local_addr()).await;
    // Served while it resumes.
    for i in (0..20_000).step_by(97) {
        assert_eq!(read_key(&mut client, i).await, loaded(i), "key:{i}");
    }
    let controller = Arc::clone(proxy.controller());
    wait_migrations_done(&controller, Duration::from_secs(120)).await;
    for i in 0..20_000 {
        assert_eq!(read_key(&mut client, i).await, loaded(i), "key:{i}");
    }
    assert_keys_where_they_belong(controller.state().router.load().topology()).await;
    cluster.proxy = Some(proxy);
    assert_replicas_equal(&cluster).await;
}

/// Each shard's slot count, by name.
fn slot_counts(topology: &redshard_config::Topology) -> Vec<(String, usize)> {
    topology
        .shards
        .iter()
        .map(|s| {
            let count = topology
                .slots
                .iter()
                .filter(|&&st| st == redshard_config::SlotState::Owned(s.id))
                .count();
            (s.name.clone(), count)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_resumes_every_queued_move_after_a_proxy_crash() {
    const KEYS: usize = 40_000;
    let dir = tempfile::tempdir().unwrap();
    let topology_file = dir.path().join("topology.toml");
    let extra = format!(
        "topology_file = \"{}\"\nmetrics_listen = \"off\"\nadmin_listen = \"off\"\nadmin_socket = \"off\"\n",
        topology_file.display()
    );
    let masters: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let fourth = RedisServer::start();
    let config_text = redshard_tests::cluster::config_text(
        &masters.iter().map(RedisServer::addr).collect::<Vec<_>>(),
        &[],
        &extra,
    );
    let config = || redshard_config::Config::from_toml_str(&config_text, "test.toml").unwrap();
    let mut first = CrashableProxy::start(config()).await;
    let controller = Arc::clone(first.proxy().controller());
    let mut client = Client::connect_addr(first.proxy().local_addr()).await;
    load_keys(&mut client, KEYS).await;
    drop(client);
    controller
        .change(TopologyChange::AddShard {
            name: "s4".into(),
            master: NodeAddr::parse(&fourth.addr()).unwrap(),
        })
        .await
        .expect("add s4");

    // The plan REBALANCE USE-EMPTY-MASTERS queues: three moves into s4.
    let before = Arc::clone(controller.state().router.load().topology());
    let plan = redshard_proxy::admin::rebalance::plan(
        &before,
        redshard_proxy::admin::rebalance::Options {
            use_empty_masters: true,
            ..Default::default()
        },
    )
    .expect("a plan");
    assert_eq!(plan.moves.len(), 3, "{plan:?}");
    let mut expected = (*before).clone();
    for m in &plan.moves {
        for slot in m.slots.iter().flat_map(SlotRange::slots) {
            expected.slots[slot.index()] = redshard_config::SlotState::Owned(m.to);
        }
    }
    controller
        .queue(
            plan.moves
                .iter()
                .map(|m| redshard_config::Migration {
                    from: m.from,
                    to: m.to,
                    slots: m.slots.clone(),
                })
                .collect(),
        )
        .await
        .expect("queued");
    // The first move normally is the one running (the file read below shows where the crash
    // landed); were it already done on a fast machine, the assertions hold as well.
    wait_until(Duration::from_secs(30), "a move to run", || async {
        controller
            .migrations()
            .iter()
            .any(|m| m.state == MigrationState::Running && m.keys_moved > 100)
    })
    .await;
    drop(controller);
    first.crash().await;

    // What the crash left on disk: the running move's slots migrating, the others queued.
    let persisted = redshard_config::FileTopologyStore::new(&topology_file)
        .load()
        .expect("readable")
        .expect("saved");
    eprintln!(
        "at the crash: {} migrating, {} queued",
        persisted.migrations().len(),
        persisted.queued.len()
    );
    assert_eq!(
        persisted.migrations().len() + persisted.queued.len(),
        3 - controller_done(&persisted, &plan),
        "every move not done is persisted: {persisted:?}"
    );

    let second = CrashableProxy::start(config()).await;
    let controller = Arc::clone(second.proxy().controller());
    let resumed = controller.migrations();
    assert_eq!(
        resumed.len(),
        persisted.migrations().len() + persisted.queued.len(),
        "the restarted proxy lists every move left: {resumed:?}"
    );
    wait_migrations_done(&controller, Duration::from_secs(120)).await;
    let after = Arc::clone(controller.state().router.load().topology());
    assert_eq!(
        slot_counts(&after),
        vec![
            ("s1".to_owned(), 4096),
            ("s2".to_owned(), 4096),
            ("s3".to_owned(), 4096),
            ("s4".to_owned(), 4096)
        ]
    );
    assert_eq!(
        after.slots, expected.slots,
        "the slots are where the plan put them"
    );
    assert!(
        after.queued.is_empty() && after.migrations().is_empty(),
        "{after:?}"
    );
    let mut client = Client::connect_addr(second.proxy().local_addr()).await;
    for i in 0..KEYS {
        assert_eq!(read_key(&mut client, i).await, loaded(i), "key:{i}");
    }
    // Each key on exactly one master: the one owning its slot.
    assert_keys_where_they_belong(&after).await;
    let mut total = 0;
    for shard in &after.shards {
        let mut node = Client::connect(shard.master.to_string()).await;
        total += node.cmd(&["DBSIZE"]).await.int();
    }
    assert_eq!(total, i64::try_from(KEYS).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_move_that_no_longer_fits_is_reported_at_restart_not_dropped_silently() {
    let dir = tempfile::tempdir().unwrap();
    let topology_file = dir.path().join("topology.toml");
    let extra = format!(
        "topology_file = \"{}\"\nmetrics_listen = \"off\"\nadmin_listen = \"off\"\nadmin_socket = \"off\"\n",
        topology_file.display()
    );
    let masters: Vec<RedisServer> = (0..2).map(|_| RedisServer::start()).collect();
    let text = redshard_tests::cluster::config_text(
        &masters.iter().map(RedisServer::addr).collect::<Vec<_>>(),
        &[],
        &extra,
    );
    let config = || redshard_config::Config::from_toml_str(&text, "test.toml").unwrap();
    let mut first = CrashableProxy::start(config()).await;
    let mut client = Client::connect_addr(first.proxy().local_addr()).await;
    load_keys(&mut client, 2_000).await;
    drop(client);
    first.crash().await;
    // Edited while stopped: two moves queued, the first naming a slot s1 does not own.
    let saved = std::fs::read_to_string(&topology_file).unwrap();
    let edited = saved.replacen("epoch = 1", "epoch = 2", 1)
        + "\n[[queued]]\nfrom = 0\nto = 1\nslots = [\"10000\"]\n\n[[queued]]\nfrom = 0\nto = 1\nslots = [\"0-99\"]\n";
    std::fs::write(&topology_file, edited).unwrap();

    let second = CrashableProxy::start(config()).await;
    let controller = Arc::clone(second.proxy().controller());
    wait_until(
        Duration::from_secs(60),
        "the fitting move to finish",
        || async {
            controller
                .migrations()
                .iter()
                .any(|m| m.state == MigrationState::Done)
        },
    )
    .await;
    let all = controller.migrations();
    assert_eq!(all.len(), 2, "{all:?}");
    let MigrationState::Failed(why) = &all[0].state else {
        panic!("the move that does not fit is reported as failed: {all:?}");
    };
    assert_eq!(
        all[0].slots,
        vec![SlotRange::single(Slot::new(10000).unwrap())]
    );
    assert!(
        why.contains("no longer fits the topology and was dropped")
            && why.contains("slot 10000 is not owned by shard \"s1\" (it is owned by \"s2\")"),
        "{why}"
    );
    assert_eq!(all[1].slots, vec![SlotRange::new(0, 99).unwrap()]);
    let after = Arc::clone(controller.state().router.load().topology());
    assert!(
        after.queued.is_empty(),
        "dropped from the persisted queue: {after:?}"
    );
    let persisted = redshard_config::FileTopologyStore::new(&topology_file)
        .load()
        .unwrap()
        .unwrap();
    assert!(persisted.queued.is_empty(), "{persisted:?}");
    let mut client = Client::connect_addr(second.proxy().local_addr()).await;
    for i in 0..2_000 {
        assert_eq!(read_key(&mut client, i).await, loaded(i), "key:{i}");
    }
    assert_keys_where_they_belong(&after).await;
}

/// How many moves of `plan` `topology` shows done (their slots owned by the target).
fn controller_done(
    topology: &redshard_config::Topology,
    plan: &redshard_proxy::admin::rebalance::Plan,
) -> usize {
    plan.moves
        .iter()
        .filter(|m| {
            m.slots
                .iter()
                .flat_map(SlotRange::slots)
                .all(|slot| topology.slot_state(slot) == redshard_config::SlotState::Owned(m.to))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_goes_on_when_its_source_master_fails_over() {
    let mut cluster = TestCluster::start_with(2, true, "", DEBUG).await;
    let controller = controller(&cluster);
    let mut client = cluster.client().await;
    load_keys(&mut client, 20_000).await;
    cluster.wait_probes_up().await;
    controller
        .migrate_count("s1", "s2", 4096)
        .await
        .expect("queue");
    wait_until(Duration::from_secs(30), "some keys to move", || async {
        controller.migrations().iter().any(|m| m.keys_moved > 500)
    })
    .await;
    cluster.masters[0].kill();
    wait_migrations_done(&controller, Duration::from_secs(120)).await;
    let table = controller.state().router.load();
    assert_eq!(
        table.topology().shards[0].master.to_string(),
        cluster.replicas[0].addr(),
        "the source failed over"
    );
    drop(table);
    for i in 0..20_000 {
        assert_eq!(read_key(&mut client, i).await, loaded(i), "key:{i}");
    }
    assert_keys_where_they_belong(controller.state().router.load().topology()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_migration_brings_its_keys_back() {
    let cluster = TestCluster::start_with(2, false, "", &[]).await;
    let controller = controller(&cluster);
    let mut client = cluster.client().await;
    load_keys(&mut client, 20_000).await;
    let before = controller.state().router.load().topology().slots.clone();
    controller
        .migrate_count("s1", "s2", 4096)
        .await
        .expect("queue");
    wait_until(Duration::from_secs(30), "some keys to move", || async {
        controller.migrations().iter().any(|m| m.keys_moved > 500)
    })
    .await;
    controller.cancel_migrations().await.expect("cancel");
    wait_migrations_done(&controller, Duration::from_secs(60)).await;
    assert_eq!(
        controller.state().router.load().topology().slots,
        before,
        "slots went back"
    );
    for i in 0..20_000 {
        assert_eq!(read_key(&mut client, i).await, loaded(i), "key:{i}");
    }
    assert_keys_where_they_belong(controller.state().router.load().topology()).await;
}

/// A big key moves intact; prints how long other requests to the source shard waited
/// meanwhile (the numbers in docs/replication.md, "Online slot migration", come from this test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_key_moves_intact_and_other_traffic_keeps_flowing() {
    let cluster = TestCluster::start_with(2, false, "", &[]).await;
    let controller = controller(&cluster);
    let big = redshard_tests::cluster::key_on(2, 0, "big");
    let mut client = cluster.client().await;
    const ELEMENTS: usize = 500_000;
    for chunk in (0..ELEMENTS).collect::<Vec<_>>().chunks(10_000) {
        let mut cmd = vec!["RPUSH".to_owned(), big.clone()];
        cmd.extend(chunk.iter().map(|i| format!("element-{i:08}")));
        assert!(matches!(client.cmd(&cmd).await, Reply::Int(_)));
    }
    // Another key of the same source shard, read in a loop while the big key moves.
    let other = redshard_tests::cluster::key_on(2, 0, "small");
    client.cmd(&["SET", &other, "x"]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let stop = Arc::clone(&stop);
        let mut client = cluster.client().await;
        let other = other.clone();
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let start = std::time::Instant::now();
                assert_eq!(client.cmd(&["GET", &other]).await, Reply::bulk("x"));
                worst = worst.max(start.elapsed());
            }
            worst
        })
    };
    let slot = Slot::for_key(big.as_bytes());
    let started = std::time::Instant::now();
    controller
        .migrate("s1", "s2", vec![SlotRange::single(slot)])
        .await
        .expect("queue");
    wait_migrations_done(&controller, Duration::from_secs(60)).await;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let worst = reader.await.expect("reader");
    let moved = controller
        .migrations()
        .last()
        .map(|m| m.bytes_moved)
        .unwrap_or(0);
    eprintln!(
        "moved a {ELEMENTS}-element list ({moved} bytes of DUMP) in {took:?}; slowest GET of another key on the source: {worst:?}"
    );
    assert_eq!(
        client.cmd(&["LLEN", &big]).await,
        Reply::Int(ELEMENTS as i64)
    );
    assert_eq!(
        client.cmd(&["LINDEX", &big, "-1"]).await,
        Reply::bulk(&format!("element-{:08}", ELEMENTS - 1))
    );
    let mut target = cluster.master(1).await;
    assert_eq!(
        target.cmd(&["LLEN", &big]).await,
        Reply::Int(ELEMENTS as i64)
    );
}

/// A script called with no key that names its key as a literal is routed, and locked during
/// a migration, like one that declares it: increments sent while its slot moves all land, in
/// order, on whichever master owns the key at the time, and the count is whole at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyless_script_naming_its_key_follows_a_migrating_slot() {
    let cluster = TestCluster::start_with(2, false, "", &[]).await;
    let controller = controller(&cluster);
    let counter = redshard_tests::cluster::key_on(2, 0, "counter");
    let mut client = cluster.client().await;
    // Other keys of the counter's slot, so that the move takes a while.
    for chunk in (0..20_000).collect::<Vec<_>>().chunks(1_000) {
        let mut cmd = vec!["MSET".to_owned()];
        for i in chunk {
            cmd.push(format!("{{{counter}}}:{i}"));
            cmd.push("x".repeat(64));
        }
        assert!(client.cmd(&cmd).await.is_ok());
    }
    let script = format!("return redis.call('INCR', '{counter}')");
    let incr = {
        let mut client = cluster.client().await;
        let script = script.clone();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                n += 1;
                assert_eq!(
                    client.cmd(&["EVAL", &script, "0"]).await,
                    Reply::Int(n),
                    "increment {n}"
                );
                if n == 2_000 {
                    return n;
                }
            }
        })
    };
    controller
        .migrate(
            "s1",
            "s2",
            vec![SlotRange::single(Slot::for_key(counter.as_bytes()))],
        )
        .await
        .expect("queue");
    wait_migrations_done(&controller, Duration::from_secs(60)).await;
    let n = incr.await.expect("increments");
    assert_eq!(client.cmd(&["EVAL", &script, "0"]).await, Reply::Int(n + 1));
    let mut target = cluster.master(1).await;
    assert_eq!(
        target.cmd(&["GET", &counter]).await,
        Reply::bulk(&(n + 1).to_string())
    );
    let mut source = cluster.master(0).await;
    assert_eq!(source.cmd(&["EXISTS", &counter]).await, Reply::Int(0));
}
