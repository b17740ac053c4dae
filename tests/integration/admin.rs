//! The admin port: AUTH, TOPOLOGY, adding and removing shards and replicas, graceful failover
//! under load, rebalance plans, and bad input.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redshard_tests::replication::{digest, info_field, wait_for_info, wait_until};
use redshard_tests::server::free_port;
use redshard_tests::{wait_for_progress, Client, RedisServer, Reply, TestCluster};
use tokio::task::JoinSet;

use crate::mirror::DEBUG;

/// `TOPOLOGY` from the admin port at `addr`.
pub(crate) async fn topology(addr: SocketAddr) -> Reply {
    let reply = Client::connect_addr(addr).await.cmd(&["TOPOLOGY"]).await;
    assert!(matches!(reply, Reply::Array(_)), "{reply:?}");
    reply
}

/// The shard named `name` in a TOPOLOGY reply.
pub(crate) fn shard<'a>(topology: &'a Reply, name: &str) -> Option<&'a Reply> {
    topology
        .field("shards")
        .items()
        .iter()
        .find(|s| *s.field("name") == Reply::bulk(name))
}

/// The replica at `addr` of a TOPOLOGY shard entry.
fn replica<'a>(shard: &'a Reply, addr: &str) -> Option<&'a Reply> {
    shard
        .field("replicas")
        .items()
        .iter()
        .find(|r| *r.field("addr") == Reply::bulk(addr))
}

pub(crate) fn error_text(reply: &Reply) -> &str {
    match reply {
        Reply::Error(e) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

/// Waits (at most 20 s: a full sync waits out the master's 5 s diskless-sync delay) until
/// the replica at `addr` of shard `name` is in sync.
async fn wait_in_sync(admin: SocketAddr, name: &str, addr: &str) {
    let what = format!("{addr} in sync in {name}");
    wait_until(Duration::from_secs(20), &what, || async move {
        let t = topology(admin).await;
        shard(&t, name)
            .and_then(|s| replica(s, addr))
            .is_some_and(|r| *r.field("state") == Reply::bulk("in-sync"))
    })
    .await;
}

/// Waits until every node of the cluster is probed `up`.
async fn wait_all_up(admin: SocketAddr) {
    wait_until(
        Duration::from_secs(10),
        "every node probed up",
        || async move {
            let t = topology(admin).await;
            t.field("shards").items().iter().all(|s| {
                *s.field("master-health") == Reply::bulk("up")
                    && s.field("replicas")
                        .items()
                        .iter()
                        .all(|r| *r.field("health") == Reply::bulk("up"))
            })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_is_required_and_wrong_passwords_are_refused() {
    let extra = "password = \"client-pw\"\nadmin_password = \"adm1n\"\n[limits]\nauth_failure_delay_ms = 10\n";
    let mut cluster = TestCluster::start_with(2, false, extra, &[]).await;
    let admin = cluster.start_admin().await;
    let mut c = Client::connect_addr(admin).await;
    assert_eq!(c.cmd(&["PING"]).await, Reply::Status("PONG".into()));
    for command in [
        &["TOPOLOGY"][..],
        &["HELP"],
        &["DELNODE", "127.0.0.1:1"],
        &["NOPE"],
    ] {
        assert_eq!(
            c.cmd(command).await,
            Reply::Error("NOAUTH Authentication required.".into()),
            "{command:?}"
        );
    }
    let wrong =
        Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into());
    assert_eq!(c.cmd(&["AUTH", "nope"]).await, wrong);
    // The client port's password is not the admin port's.
    assert_eq!(c.cmd(&["AUTH", "client-pw"]).await, wrong);
    assert_eq!(c.cmd(&["AUTH", "someone", "adm1n"]).await, wrong);
    assert_eq!(
        c.cmd(&["TOPOLOGY"]).await,
        Reply::Error("NOAUTH Authentication required.".into())
    );
    assert!(c.cmd(&["AUTH", "adm1n"]).await.is_ok());
    assert_eq!(topology_epoch(&c.cmd(&["TOPOLOGY"]).await), 1);

    // HELLO 2 AUTH, as redis-cli -2 and client libraries do; RESP3 is refused.
    let mut c = Client::connect_addr(admin).await;
    assert!(matches!(c.cmd(&["HELLO", "3"]).await, Reply::Error(e) if e.starts_with("NOPROTO")));
    let hello = c.cmd(&["HELLO", "2", "AUTH", "default", "adm1n"]).await;
    assert_eq!(*hello.field("proto"), Reply::Int(2));
    assert!(c.cmd(&["AUTH", "default", "adm1n"]).await.is_ok());
    assert_eq!(topology_epoch(&c.cmd(&["TOPOLOGY"]).await), 1);
    assert!(c.cmd(&["QUIT"]).await.is_ok());
    assert_eq!(c.try_read().await, None, "QUIT closes the connection");
}

fn topology_epoch(reply: &Reply) -> i64 {
    reply.field("epoch").int()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_shows_shards_slots_nodes_and_health() {
    let mut cluster = TestCluster::start_with(3, true, "", &[]).await;
    let admin = cluster.start_admin().await;
    wait_all_up(admin).await;
    let t = topology(admin).await;
    // 1, or later with Redis replication: the replicas are in sync once seen following.
    let started = i64::try_from(cluster.topology().epoch).unwrap();
    assert_eq!(t.field("epoch").int(), started);
    let redis = cluster.redis_replication();
    assert_eq!(t.field("slots-served").int(), 16384);
    assert_eq!(t.field("slots-total").int(), 16384);
    assert_eq!(t.field("failovers").int(), 0);
    assert_eq!(*t.field("last-failover"), Reply::Bulk(None));
    assert_eq!(t.field("shards").items().len(), 3);
    for (i, (name, slots, count)) in [
        ("s1", "0-5460", 5461),
        ("s2", "5461-10921", 5461),
        ("s3", "10922-16383", 5462),
    ]
    .into_iter()
    .enumerate()
    {
        let s = shard(&t, name).expect("shard listed");
        assert_eq!(s.field("id").int(), i as i64);
        assert_eq!(*s.field("master"), Reply::bulk(&cluster.masters[i].addr()));
        assert_eq!(*s.field("gate"), Reply::bulk("open"));
        assert_eq!(*s.field("slots"), Reply::bulk(slots));
        assert_eq!(s.field("slot-count").int(), count);
        assert!(s.field("migrating").items().is_empty());
        assert!(s.field("importing").items().is_empty());
        let r = replica(s, &cluster.replicas[i].addr()).expect("replica listed");
        assert_eq!(*r.field("state"), Reply::bulk("in-sync"));
        if redis {
            assert_eq!(*r.field("link"), Reply::bulk("up"));
        } else {
            assert_eq!(r.field("lag").int(), 0);
        }
    }
    // A write is mirrored (its replica's applied count moves), or replicated by Redis (its
    // replica's offset, as the controller's next check sees it, moves).
    let per_replica = |t: &Reply, field: &str| -> i64 {
        t.field("shards")
            .items()
            .iter()
            .flat_map(|s| {
                s.field("replicas")
                    .items()
                    .iter()
                    .map(|r| match r.field(field) {
                        Reply::Int(n) => *n,
                        _ => 0,
                    })
                    .collect::<Vec<_>>()
            })
            .sum()
    };
    let offsets = per_replica(&t, "offset");
    let mut c = cluster.client().await;
    assert!(c.cmd(&["SET", "k", "v"]).await.is_ok());
    let t = topology(admin).await;
    if redis {
        wait_until(
            Duration::from_secs(5),
            "a replica's offset to move",
            || async { per_replica(&topology(admin).await, "offset") > offsets },
        )
        .await;
    } else {
        assert!(per_replica(&t, "applied") >= 1, "{t:?}");
    }
    let keys: i64 = t
        .field("shards")
        .items()
        .iter()
        .map(|s| s.field("keys").int())
        .sum();
    assert_eq!(keys, 1, "each master's DBSIZE: {t:?}");

    // A master that dies shows as down, and its slots as not served (no failover without
    // an in-sync replica that answers: kill the replica first).
    cluster.replicas[2].kill();
    cluster.masters[2].kill();
    wait_until(Duration::from_secs(10), "s3 down", || async move {
        let t = topology(admin).await;
        *shard(&t, "s3").unwrap().field("master-health") == Reply::bulk("down")
            && t.field("slots-served").int() == 16384 - 5462
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_added_resynced_and_removed_in_order() {
    let mut cluster = TestCluster::start_with(2, true, "", DEBUG).await;
    let admin = cluster.start_admin().await;
    let started = i64::try_from(cluster.topology().epoch).unwrap();
    let mut a = Client::connect_addr(admin).await;
    let mut c = cluster.client().await;
    for i in 0..300 {
        assert!(c
            .cmd(&["SET", &format!("k{i}"), &format!("v{i}")])
            .await
            .is_ok());
    }

    // A new shard: its master must answer and be empty.
    let new_master = RedisServer::start_with(DEBUG);
    let new_replica = RedisServer::start_with(DEBUG);
    let nowhere = format!("127.0.0.1:{}", free_port());
    let e = a.cmd(&["ADDSHARD", "s3", &nowhere]).await;
    assert!(error_text(&e).contains("does not answer"), "{e:?}");
    let mut direct = Client::connect(new_master.addr()).await;
    // A key in any database counts.
    assert!(direct.cmd(&["SELECT", "3"]).await.is_ok());
    assert!(direct.cmd(&["SET", "stray", "x"]).await.is_ok());
    let e = a.cmd(&["ADDSHARD", "s3", &new_master.addr()]).await;
    assert!(error_text(&e).contains("holds 1 key (db3=1);"), "{e:?}");
    assert!(direct.cmd(&["FLUSHALL"]).await.is_ok());
    let e = a.cmd(&["ADDSHARD", "s1", &new_master.addr()]).await;
    assert!(error_text(&e).contains("s1"), "a duplicate name: {e:?}");
    let e = a
        .cmd(&["ADDSHARD", "s3", &cluster.replicas[0].addr()])
        .await;
    assert!(
        error_text(&e).contains("is already the replica of shard \"s1\""),
        "{e:?}"
    );

    let added = a.cmd(&["addshard", "s3", &new_master.addr()]).await;
    assert_eq!(*added.field("shard"), Reply::bulk("s3"));
    assert_eq!(added.field("epoch").int(), started + 1);
    let t = topology(admin).await;
    let s3 = shard(&t, "s3").expect("s3 listed");
    assert_eq!(s3.field("slot-count").int(), 0);
    assert_eq!(*s3.field("slots"), Reply::bulk("-"));

    // A replica for it, named by the master's address: syncing, then in sync.
    let added = a
        .cmd(&["ADDREPLICA", &new_master.addr(), &new_replica.addr()])
        .await;
    assert_eq!(*added.field("shard"), Reply::bulk("s3"));
    assert_eq!(*added.field("state"), Reply::bulk("syncing"));
    wait_in_sync(admin, "s3", &new_replica.addr()).await;

    // A second replica for a shard holding data: filled by the full sync, equal to its master.
    let extra = RedisServer::start_with(DEBUG);
    let added = a.cmd(&["ADDREPLICA", "s1", &extra.addr()]).await;
    assert_eq!(*added.field("shard"), Reply::bulk("s1"));
    wait_in_sync(admin, "s1", &extra.addr()).await;
    for i in 300..400 {
        assert!(c
            .cmd(&["SET", &format!("k{i}"), &format!("v{i}")])
            .await
            .is_ok());
    }
    assert_eq!(
        digest(&cluster.masters[0].addr()).await,
        digest(&extra.addr()).await
    );

    // Removal in order: the shard's replica first, then the master (it owns no slots).
    let e = a.cmd(&["DELSHARD", "s3"]).await;
    assert!(
        error_text(&e).contains(&format!(
            "remove the replica first (DELREPLICA {0}; redshard-admin del-node {0}), hand the slots back, then remove the master",
            new_replica.addr()
        )),
        "{e:?}"
    );
    let e = a.cmd(&["DELREPLICA", &new_master.addr()]).await;
    assert!(error_text(&e).contains("DELSHARD s3"), "{e:?}");
    let removed = a.cmd(&["DELREPLICA", &new_replica.addr()]).await;
    assert_eq!(*removed.field("role"), Reply::bulk("replica"));
    let removed = a.cmd(&["DELNODE", &new_master.addr()]).await;
    assert_eq!(*removed.field("shard"), Reply::bulk("s3"));
    assert_eq!(*removed.field("role"), Reply::bulk("master"));
    assert!(shard(&topology(admin).await, "s3").is_none());

    // A master that owns slots is refused with the next steps.
    let e = a.cmd(&["DELNODE", &extra.addr()]).await;
    assert_eq!(*e.field("role"), Reply::bulk("replica"));
    let e = a.cmd(&["DELNODE", &cluster.replicas[0].addr()]).await;
    assert_eq!(*e.field("role"), Reply::bulk("replica"));
    let e = a.cmd(&["DELSHARD", &cluster.masters[0].addr()]).await;
    assert!(
        error_text(&e)
            .contains("shard s1 still owns 8192 slots (0-8191): hand the slots back first"),
        "{e:?}"
    );
    let e = a.cmd(&["DELNODE", "127.0.0.1:1"]).await;
    assert!(
        error_text(&e).contains("not a node of the topology"),
        "{e:?}"
    );

    // Traffic still flows to the shard that lost its replicas, and nothing was lost.
    for i in 0..400 {
        assert_eq!(
            c.cmd(&["GET", &format!("k{i}")]).await,
            Reply::bulk(&format!("v{i}"))
        );
    }
    assert!(c.cmd(&["SET", "after", "1"]).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_removed_during_its_full_sync_is_let_go_and_can_be_added_again() {
    // Redis's default delay before a full sync (the test nodes start without it), so the
    // removal lands before the node has received any data.
    let slow_sync = [DEBUG, &["--repl-diskless-sync-delay", "5"]].concat();
    let mut cluster = TestCluster::start_with(1, false, "", &slow_sync).await;
    let admin = cluster.start_admin().await;
    let mut a = Client::connect_addr(admin).await;
    let mut c = cluster.client().await;
    for i in 0..100 {
        assert!(c.cmd(&["SET", &format!("k{i}"), "v"]).await.is_ok());
    }
    let node = RedisServer::start_with(DEBUG);
    let node_addr = node.addr();
    let role = || async { info_field(&node_addr, "replication", "role").await };

    // The resync has sent REPLICAOF; the master's full sync waits out its
    // repl-diskless-sync-delay (5 s, set below) before it starts.
    let added = a.cmd(&["ADDREPLICA", "s1", &node_addr]).await;
    assert_eq!(*added.field("state"), Reply::bulk("syncing"));
    wait_for_info(&node_addr, "replication", "role", "slave").await;
    let removed = a.cmd(&["DELREPLICA", &node_addr]).await;
    assert_eq!(*removed.field("role"), Reply::bulk("replica"));
    assert_eq!(role().await.as_deref(), Some("master"));
    assert!(c.cmd(&["SET", "during", "1"]).await.is_ok());

    // Added again at once: the first resync has let go of the node (it does not wait for a
    // sync that will never come, for `resync_timeout_ms`, ten minutes), so the second one
    // starts and brings it in sync.
    let added = a.cmd(&["ADDREPLICA", "s1", &node_addr]).await;
    assert_eq!(*added.field("state"), Reply::bulk("syncing"));
    wait_in_sync(admin, "s1", &node_addr).await;
    // A mirror target stands alone; with Redis replication it follows its master.
    let redis = cluster.redis_replication();
    let expected = if redis { "slave" } else { "master" };
    assert_eq!(role().await.as_deref(), Some(expected));
    assert!(c.cmd(&["SET", "after", "1"]).await.is_ok());
    assert_eq!(
        digest(&cluster.masters[0].addr()).await,
        digest(&node_addr).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holding_keys_is_not_added_as_a_replica() {
    let mut cluster = TestCluster::start_with(1, false, "", DEBUG).await;
    let admin = cluster.start_admin().await;
    let mut a = Client::connect_addr(admin).await;
    let mut c = cluster.client().await;
    assert!(c.cmd(&["SET", "k", "v"]).await.is_ok());

    // Keys in database 0 and in another one: the full sync would replace them all.
    let node = RedisServer::start_with(DEBUG);
    let mut direct = Client::connect(node.addr()).await;
    assert!(direct.cmd(&["SET", "precious", "1"]).await.is_ok());
    assert!(direct.cmd(&["SELECT", "3"]).await.is_ok());
    assert!(direct.cmd(&["SET", "other", "1"]).await.is_ok());
    let e = a.cmd(&["ADDREPLICA", "s1", &node.addr()]).await;
    assert!(
        error_text(&e).contains(&format!(
            "{} holds 2 keys (db0=1, db3=1); as a replica its data would be replaced by its master's: empty it first (FLUSHALL on the node)",
            node.addr()
        )),
        "{e:?}"
    );
    assert!(replica(shard(&topology(admin).await, "s1").unwrap(), &node.addr()).is_none());
    assert_eq!(direct.cmd(&["DBSIZE"]).await, Reply::Int(1));
    assert!(direct.cmd(&["SELECT", "0"]).await.is_ok());
    assert_eq!(direct.cmd(&["GET", "precious"]).await, Reply::bulk("1"));
    assert_eq!(
        info_field(&node.addr(), "replication", "role")
            .await
            .as_deref(),
        Some("master")
    );

    // Emptied, it is accepted and synced.
    assert!(direct.cmd(&["FLUSHALL"]).await.is_ok());
    let added = a.cmd(&["ADDREPLICA", "s1", &node.addr()]).await;
    assert_eq!(*added.field("state"), Reply::bulk("syncing"));
    wait_in_sync(admin, "s1", &node.addr()).await;
    assert_eq!(direct.cmd(&["GET", "k"]).await, Reply::bulk("v"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_under_load_has_no_client_errors() {
    let mut cluster = TestCluster::start_with(2, true, "", DEBUG).await;
    let admin = cluster.start_admin().await;
    wait_all_up(admin).await;
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for w in 0..4 {
        let mut c = cluster.client().await;
        let (stop, errors, done) = (Arc::clone(&stop), Arc::clone(&errors), Arc::clone(&done));
        workers.spawn(async move {
            let mut last = std::collections::HashMap::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("w{w}:{}", i % 64);
                let value = i.to_string();
                let set = c.cmd(&["SET", &key, &value]).await;
                let got = c.cmd(&["GET", &key]).await;
                if !set.is_ok() || got != Reply::bulk(&value) {
                    errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("worker {w}: SET {set:?}, GET {got:?} (wanted {value})");
                }
                last.insert(key, value);
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            (c, last)
        });
    }
    wait_for_progress(&done, 100, "the load before the failovers").await;
    let mut a = Client::connect_addr(admin).await;
    let e = a
        .cmd(&["FAILOVER", "s1", "TO", &cluster.replicas[1].addr()])
        .await;
    assert!(
        error_text(&e).contains("is not a replica of shard s1"),
        "{e:?}"
    );
    let e = a.cmd(&["FAILOVER", "s9"]).await;
    assert!(error_text(&e).contains("no shard s9"), "{e:?}");
    let before = done.load(Ordering::Relaxed);
    let switched = a.cmd(&["FAILOVER", "s1"]).await;
    assert_eq!(
        *switched.field("old-master"),
        Reply::bulk(&cluster.masters[0].addr())
    );
    assert_eq!(
        *switched.field("new-master"),
        Reply::bulk(&cluster.replicas[0].addr())
    );
    // And back, naming the shard by its (new) master's address and the replica to promote.
    let back = a
        .cmd(&[
            "FAILOVER",
            &cluster.replicas[0].addr(),
            "TO",
            &cluster.masters[0].addr(),
        ])
        .await;
    assert_eq!(
        *back.field("new-master"),
        Reply::bulk(&cluster.masters[0].addr())
    );
    wait_for_progress(&done, 100, "the load after the failovers").await;
    stop.store(true, Ordering::Relaxed);
    let mut finals = Vec::new();
    while let Some(result) = workers.join_next().await {
        finals.push(result.expect("worker"));
    }
    assert!(
        done.load(Ordering::Relaxed) > before,
        "traffic flowed during the failovers"
    );
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "client errors during the failovers"
    );
    for (mut c, last) in finals {
        for (key, value) in last {
            assert_eq!(c.cmd(&["GET", &key]).await, Reply::bulk(&value));
        }
    }
    let t = topology(admin).await;
    assert_eq!(t.field("failovers").int(), 2);
    assert!(matches!(t.field("last-failover"), Reply::Bulk(Some(_))));
    let s1 = shard(&t, "s1").unwrap();
    assert_eq!(*s1.field("master"), Reply::bulk(&cluster.masters[0].addr()));
    let r = replica(s1, &cluster.replicas[0].addr()).expect("the old master stays a replica");
    assert_eq!(*r.field("state"), Reply::bulk("in-sync"));
    assert_eq!(
        digest(&cluster.masters[0].addr()).await,
        digest(&cluster.replicas[0].addr()).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_dry_run_plans_equal_shares_and_changes_nothing() {
    let mut cluster = TestCluster::start_with(3, false, "", &[]).await;
    let admin = cluster.start_admin().await;
    let mut a = Client::connect_addr(admin).await;
    let fourth = RedisServer::start();
    assert_eq!(
        a.cmd(&["ADDSHARD", "s4", &fourth.addr()])
            .await
            .field("epoch")
            .int(),
        2
    );

    // Without empty masters the three that own slots are balanced already.
    let plan = a.cmd(&["REBALANCE", "DRY-RUN"]).await;
    assert_eq!(*plan.field("status"), Reply::bulk("balanced"));
    assert_eq!(*plan.field("threshold-pct"), Reply::bulk("2.00"));
    assert!(plan.field("moves").items().is_empty());
    assert_eq!(plan.field("shards").items().len(), 3);

    let plan = a.cmd(&["rebalance", "use-empty-masters", "dry-run"]).await;
    assert_eq!(*plan.field("status"), Reply::bulk("planned"));
    let moves = plan.field("moves").items();
    assert_eq!(moves.len(), 3);
    assert!(moves.iter().all(|m| *m.field("to") == Reply::bulk("s4")));
    let moved: i64 = moves.iter().map(|m| m.field("slot-count").int()).sum();
    assert_eq!(moved, 4096);
    let s1 = moves
        .iter()
        .find(|m| *m.field("from") == Reply::bulk("s1"))
        .unwrap();
    assert_eq!(*s1.field("slots"), Reply::bulk("4096-5460"));
    for share in plan.field("shards").items() {
        assert_eq!(share.field("slots-after").int(), 4096);
    }
    let s4 = plan
        .field("shards")
        .items()
        .iter()
        .find(|s| *s.field("shard") == Reply::bulk("s4"))
        .unwrap();
    assert_eq!(s4.field("slots-now").int(), 0);

    // A dry run changes nothing.
    let t = topology(admin).await;
    assert_eq!(t.field("epoch").int(), 2);
    assert_eq!(shard(&t, "s4").unwrap().field("slot-count").int(), 0);
    assert!(a.cmd(&["MIGRATIONS"]).await.items().is_empty());

    let e = a.cmd(&["REBALANCE", "THRESHOLD", "x"]).await;
    assert!(
        error_text(&e).contains("THRESHOLD needs a percentage"),
        "{e:?}"
    );
    let e = a.cmd(&["REBALANCE", "NOW"]).await;
    assert!(error_text(&e).contains("usage: REBALANCE"), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_lists_every_command_the_port_answers() {
    let mut cluster = TestCluster::start(2).await;
    let admin = cluster.start_admin().await;
    let mut a = Client::connect_addr(admin).await;
    // redis-cli answers HELP itself; COMMANDS is the same list under a name it sends on.
    let listed = a.cmd(&["commands"]).await;
    assert_eq!(listed, a.cmd(&["HELP"]).await);
    let lines: Vec<String> = listed
        .items()
        .iter()
        .map(|line| match line {
            Reply::Status(text) => text.clone(),
            other => panic!("not a status line: {other:?}"),
        })
        .collect();
    assert!(lines[0].starts_with("redshard admin port."), "{lines:?}");
    // The first word of each unindented line is a command's name.
    let mut names: Vec<&str> = lines[1..]
        .iter()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    names.dedup();
    for expected in [
        "PING",
        "AUTH",
        "HELLO",
        "QUIT",
        "HELP",
        "COMMANDS",
        "TOPOLOGY",
        "ADDSHARD",
        "ADDREPLICA",
        "DELREPLICA",
        "DELSHARD",
        "DELNODE",
        "MIGRATE",
        "MIGRATIONS",
        "MIGRATION",
        "REBALANCE",
        "FAILOVER",
    ] {
        assert!(names.contains(&expected), "{expected} not in {names:?}");
    }
    // Every listed command is one the port runs (alone, each is harmless: a usage error,
    // a listing, or REBALANCE of an already balanced cluster); QUIT last, as it closes.
    for name in names.iter().filter(|n| **n != "QUIT") {
        let reply = a.cmd(&[name]).await;
        if let Reply::Error(text) = &reply {
            assert!(!text.contains("unknown command"), "{name}: {reply:?}");
        }
    }
    assert_eq!(a.cmd(&["QUIT"]).await, Reply::Status("OK".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_errors_that_say_what_to_do() {
    let mut cluster = TestCluster::start(2).await;
    let admin = cluster.start_admin().await;
    let mut a = Client::connect_addr(admin).await;
    let help = a.cmd(&["HELP"]).await;
    assert!(help.items().len() > 10);
    let e = a.cmd(&["FROB", "x"]).await;
    assert!(
        error_text(&e).starts_with("ERR unknown command 'FROB', with args beginning with: 'x'"),
        "{e:?}"
    );
    assert!(error_text(&e).contains("HELP"), "{e:?}");
    for (command, words) in [
        (
            &["ADDSHARD", "s3"][..],
            "usage: ADDSHARD <name> <master-addr>",
        ),
        (&["ADDSHARD", "s3", "nohost"], "write it as host:port"),
        (
            &["ADDSHARD", "bad name!", "127.0.0.1:1"],
            "shard name \"bad name!\" is invalid",
        ),
        (
            &["ADDREPLICA", "s9", "127.0.0.1:1"],
            "no shard s9: name a shard by its name or its master's address",
        ),
        (&["DELREPLICA"], "usage: DELREPLICA <addr>"),
        (&["MIGRATE", "s1", "s2"], "usage: MIGRATE"),
        (
            &["MIGRATE", "s1", "s2", "0"],
            "give a number of slots from 1 to 16384",
        ),
        (
            &["MIGRATE", "s1", "s2", "SLOTS", "9-2"],
            "write slots as 0-99 or 7000",
        ),
        (
            &["MIGRATE", "s1", "s2", "SLOTS", "20000"],
            "write slots as 0-99 or 7000",
        ),
        (&["MIGRATION", "STOP"], "usage: MIGRATION CANCEL"),
        (&["FAILOVER", "s1", "TO"], "usage: FAILOVER"),
        (&["FAILOVER", "s1"], "no in-sync replica"),
        (&["TOPOLOGY", "x"], "usage: TOPOLOGY"),
    ] {
        let reply = a.cmd(command).await;
        assert!(error_text(&reply).contains(words), "{command:?}: {reply:?}");
    }
    // Arguments that are not text, inline commands, pipelines.
    assert!(error_text(&a.cmd(&[&b"DELNODE"[..], b"\xff\xfe"]).await).contains("UTF-8"));
    a.send_raw(b"PING\r\nTOPOLOGY\r\n").await;
    assert_eq!(a.read().await, Reply::Status("PONG".into()));
    assert_eq!(a.read().await.field("epoch").int(), 1);
    // An oversized argument is a protocol error that closes the connection.
    a.send_raw(b"*2\r\n$7\r\nDELNODE\r\n$100000\r\n").await;
    assert!(matches!(a.read().await, Reply::Error(e) if e.contains("invalid bulk length")));
    assert_eq!(a.try_read().await, None);
    // The port still serves others.
    let mut b = Client::connect_addr(admin).await;
    assert_eq!(b.cmd(&["PING", "hi"]).await, Reply::bulk("hi"));
}
