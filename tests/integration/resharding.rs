//! Online resharding: slots move between shards under live traffic, with no client errors,
//! no lost keys, and replicas equal to their masters throughout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redshard_config::{NodeAddr, ReplicaState, Slot, SlotState, TopologyChange};
use redshard_proxy::control::migrate::MigrationState;
use redshard_proxy::control::Controller;
use redshard_tests::replication::wait_until;
use redshard_tests::{Client, RedisServer, Reply, TestCluster};
use tokio::task::JoinSet;

use crate::mirror::{assert_replicas_equal, DEBUG};

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

/// Clients overwriting and reading `counters:*` keys (each writer its own keys, so the last
/// value written is known) until stopped; errors are counted.
struct Traffic {
    stop: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
    tasks: JoinSet<Vec<(String, String)>>,
}

impl Traffic {
    async fn start(cluster: &TestCluster, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for c in 0..clients {
            let (stop, errors) = (Arc::clone(&stop), Arc::clone(&errors));
            let mut client = cluster.client().await;
            tasks.spawn(async move {
                let mut last = std::collections::HashMap::new();
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for k in 0..50 {
                        let key = format!("live:{c}:{k}");
                        let value = format!("{round}");
                        match client.cmd(&["SET", &key, &value]).await {
                            Reply::Status(s) if s == "OK" => {
                                last.insert(key.clone(), value.clone());
                            }
                            other => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                eprintln!("traffic error on SET {key}: {other:?}");
                            }
                        }
                        let got = client.cmd(&["GET", &key]).await;
                        if got != Reply::bulk(&value) {
                            errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("traffic read {key}: {got:?}, wrote {value}");
                        }
                    }
                    round += 1;
                }
                last.into_iter().collect()
            });
        }
        Self {
            stop,
            errors,
            tasks,
        }
    }

    async fn finish(mut self) -> (Vec<(String, String)>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            all.extend(done.expect("traffic task"));
        }
        (all, self.errors.load(Ordering::Relaxed))
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

/// Every key on every master belongs to a slot that master's shard owns.
async fn assert_keys_where_they_belong(controller: &Controller) {
    let topology = Arc::clone(controller.state().router.load().topology());
    for shard in &topology.shards {
        let mut client = Client::connect(shard.master.to_string()).await;
        let Reply::Array(keys) = client.cmd(&["KEYS", "*"]).await else {
            panic!("KEYS");
        };
        for key in keys {
            let Reply::Bulk(Some(key)) = key else {
                continue;
            };
            let slot = Slot::for_key(&key);
            assert_eq!(
                topology.slot_state(slot),
                SlotState::Owned(shard.id),
                "{} sits on {} ({}), which does not own slot {}",
                String::from_utf8_lossy(&key),
                shard.master,
                shard.name,
                slot.get()
            );
        }
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_out_and_back_in_under_load_loses_nothing() {
    let cluster = TestCluster::start_with(2, true, "", DEBUG).await;
    let controller = controller(&cluster);
    let mut client = cluster.client().await;
    load_keys(&mut client, 5000).await;
    let traffic = Traffic::start(&cluster, 4).await;

    // Scale out: a third shard, then a third of the slots to it.
    let (_m3, _r3) = add_shard(&controller, "s3").await;
    controller
        .migrate_count("s1", "s3", 2730)
        .expect("queue s1 -> s3");
    controller
        .migrate_count("s2", "s3", 2731)
        .expect("queue s2 -> s3");
    wait_migrations_done(&controller, Duration::from_secs(120)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_keys_where_they_belong(&controller).await;

    // Scale in: hand the slots back, remove the replica, then the master.
    let s3 = controller
        .state()
        .router
        .load()
        .topology()
        .shard_by_name("s3")
        .unwrap()
        .id;
    let owned = controller.state().router.load().topology().slots_of(s3);
    let (first, second) = owned.split_at(owned.len() / 2);
    controller
        .migrate("s3", "s1", first.to_vec())
        .expect("queue back to s1");
    controller
        .migrate("s3", "s2", second.to_vec())
        .expect("queue back to s2");
    wait_migrations_done(&controller, Duration::from_secs(120)).await;
    let (last, errors) = traffic.finish().await;
    assert_eq!(errors, 0, "clients saw errors");

    let topology = controller.state().router.load().topology().clone();
    let replica = topology.shard(s3).unwrap().replicas[0].addr.clone();
    controller
        .change(TopologyChange::RemoveReplica {
            shard: s3,
            addr: replica,
        })
        .await
        .expect("remove the replica");
    controller
        .change(TopologyChange::RemoveShard { shard: s3 })
        .await
        .expect("remove the master");

    for i in 0..5000 {
        let expected = Reply::bulk(&format!("v{i}"));
        assert_eq!(read_key(&mut client, i).await, expected, "key:{i}");
    }
    for (key, value) in last {
        assert_eq!(
            client.cmd(&["GET", &key]).await,
            Reply::bulk(&value),
            "{key}"
        );
    }
    assert_keys_where_they_belong(&controller).await;
    assert_replicas_equal(&cluster).await;
}
