//! MULTI/EXEC/WATCH and blocking commands on the client's private backend connection.

use std::time::{Duration, Instant};

use redshard_dataplane::router::GateState;
use redshard_tests::cluster::key_on;
use redshard_tests::replication::{signal, wait_for_info, wait_until};
use redshard_tests::{Reply, TestCluster};

fn err(text: &str) -> Reply {
    Reply::Error(text.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_exec_runs_atomically_on_the_slots_master() {
    let cluster = TestCluster::start(3).await;
    let mut c = cluster.client().await;
    assert!(c.cmd(&["SET", "{u}a", "1"]).await.is_ok());
    let replies = c
        .pipeline(&[
            vec!["MULTI"],
            vec!["INCR", "{u}a"],
            vec!["SET", "{u}b", "x"],
            vec!["PING"],
            vec!["MGET", "{u}a", "{u}b"],
            vec!["EXEC"],
            vec!["GET", "{u}a"],
        ])
        .await;
    assert!(replies[0].is_ok());
    for r in &replies[1..5] {
        assert_eq!(r, &Reply::Status("QUEUED".into()));
    }
    assert_eq!(
        replies[5],
        Reply::Array(vec![
            Reply::Int(2),
            Reply::Status("OK".into()),
            Reply::Status("PONG".into()),
            Reply::Array(vec![Reply::bulk("2"), Reply::bulk("x")]),
        ])
    );
    assert_eq!(replies[6], Reply::bulk("2"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_commands_abort_the_transaction_like_redis_cluster() {
    let cluster = TestCluster::start(3).await;
    let mut c = cluster.client().await;
    let crossslot = err("CROSSSLOT Keys in request don't hash to the same slot");
    assert!(c.cmd(&["MULTI"]).await.is_ok());
    assert_eq!(
        c.cmd(&["SET", "a", "1"]).await,
        Reply::Status("QUEUED".into())
    );
    assert_eq!(c.cmd(&["SET", "b", "1"]).await, crossslot);
    assert_eq!(
        c.cmd(&["EXEC"]).await,
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(c.cmd(&["GET", "a"]).await, Reply::Bulk(None), "nothing ran");

    assert!(c.cmd(&["MULTI"]).await.is_ok());
    assert_eq!(
        c.cmd(&["MULTI"]).await,
        err("ERR MULTI calls can not be nested")
    );
    assert_eq!(
        c.cmd(&["WATCH", "a"]).await,
        err("ERR WATCH inside MULTI is not allowed")
    );
    assert!(
        matches!(c.cmd(&["NOSUCH"]).await, Reply::Error(e) if e.starts_with("ERR unknown command"))
    );
    assert_eq!(
        c.cmd(&["EXEC"]).await,
        err("EXECABORT Transaction discarded because of previous errors.")
    );

    assert!(c.cmd(&["MULTI"]).await.is_ok());
    assert_eq!(
        c.cmd(&["SET", "a", "1"]).await,
        Reply::Status("QUEUED".into())
    );
    assert!(c.cmd(&["DISCARD"]).await.is_ok());
    assert_eq!(c.cmd(&["EXEC"]).await, err("ERR EXEC without MULTI"));
    assert_eq!(c.cmd(&["DISCARD"]).await, err("ERR DISCARD without MULTI"));
    assert_eq!(c.cmd(&["GET", "a"]).await, Reply::Bulk(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_detects_a_concurrent_change() {
    let cluster = TestCluster::start(3).await;
    let mut c = cluster.client().await;
    let mut other = cluster.client().await;
    assert!(c.cmd(&["SET", "{acct}balance", "10"]).await.is_ok());
    // Untouched: EXEC runs.
    assert!(c.cmd(&["WATCH", "{acct}balance"]).await.is_ok());
    assert_eq!(c.cmd(&["GET", "{acct}balance"]).await, Reply::bulk("10"));
    assert!(c.cmd(&["MULTI"]).await.is_ok());
    assert_eq!(
        c.cmd(&["DECRBY", "{acct}balance", "3"]).await,
        Reply::Status("QUEUED".into())
    );
    assert_eq!(c.cmd(&["EXEC"]).await, Reply::Array(vec![Reply::Int(7)]));
    // Changed by another client between WATCH and EXEC: EXEC returns nil, nothing ran.
    assert!(c.cmd(&["WATCH", "{acct}balance"]).await.is_ok());
    assert!(other.cmd(&["SET", "{acct}balance", "100"]).await.is_ok());
    assert!(c.cmd(&["MULTI"]).await.is_ok());
    assert_eq!(
        c.cmd(&["DECRBY", "{acct}balance", "3"]).await,
        Reply::Status("QUEUED".into())
    );
    assert_eq!(c.cmd(&["EXEC"]).await, Reply::Bulk(None));
    assert_eq!(c.cmd(&["GET", "{acct}balance"]).await, Reply::bulk("100"));
    // WATCH keys must share the transaction's slot.
    assert!(c.cmd(&["WATCH", "{acct}balance"]).await.is_ok());
    assert!(c.cmd(&["MULTI"]).await.is_ok());
    assert_eq!(
        c.cmd(&["SET", "elsewhere", "1"]).await,
        err("CROSSSLOT Keys in request don't hash to the same slot")
    );
    assert!(matches!(c.cmd(&["EXEC"]).await, Reply::Error(e) if e.starts_with("EXECABORT")));
    assert!(c.cmd(&["UNWATCH"]).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_pops_wait_for_a_push_and_keep_pipeline_order() {
    let cluster = TestCluster::start(3).await;
    let mut waiter = cluster.client().await;
    let mut pusher = cluster.client().await;
    waiter
        .send_raw(&redshard_tests::client::encode_command(&[
            "BLPOP", "jobs", "0",
        ]))
        .await;
    // The proxy counts the client as blocked (INFO blocked_clients, as redis-cli --stat shows).
    let proxy = cluster.addr.to_string();
    wait_for_info(&proxy, "clients", "blocked_clients", "1").await;
    // ... and the node has it blocked (so the push below serves it, not the other way round).
    let jobs_node = cluster.masters[redshard_tests::cluster::shard_of("jobs", 3)].addr();
    wait_for_info(&jobs_node, "clients", "blocked_clients", "1").await;
    assert_eq!(pusher.cmd(&["RPUSH", "jobs", "j1"]).await, Reply::Int(1));
    assert_eq!(
        waiter.read().await,
        Reply::Array(vec![Reply::bulk("jobs"), Reply::bulk("j1")])
    );
    wait_for_info(&proxy, "clients", "blocked_clients", "0").await;
    // Timeout expires: nil, after about the timeout.
    let started = Instant::now();
    assert_eq!(
        waiter.cmd(&["BRPOP", "nothing", "0.3"]).await,
        Reply::Bulk(None)
    );
    assert!(started.elapsed() >= Duration::from_millis(250));
    // In a pipeline, the blocking command sees earlier writes and later commands see its effect.
    let replies = waiter
        .pipeline(&[
            vec!["DEL", "{q}src"],
            vec!["RPUSH", "{q}src", "a", "b"],
            vec!["BLMOVE", "{q}src", "{q}dst", "LEFT", "RIGHT", "0"],
            vec!["LRANGE", "{q}src", "0", "-1"],
        ])
        .await;
    assert_eq!(replies[2], Reply::bulk("a"));
    assert_eq!(replies[3], Reply::Array(vec![Reply::bulk("b")]));
    // XREAD BLOCK waits for XADD.
    waiter
        .send_raw(&redshard_tests::client::encode_command(&[
            "XREAD", "BLOCK", "0", "STREAMS", "s", "$",
        ]))
        .await;
    // XREAD ... $ must be blocked on the node before the XADD, or it would wait forever.
    let s_node = cluster.masters[redshard_tests::cluster::shard_of("s", 3)].addr();
    wait_for_info(&s_node, "clients", "blocked_clients", "1").await;
    assert!(matches!(
        pusher.cmd(&["XADD", "s", "*", "f", "v"]).await,
        Reply::Bulk(Some(_))
    ));
    let Reply::Array(streams) = waiter.read().await else {
        panic!("XREAD returns streams")
    };
    assert_eq!(streams.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_while_blocked_frees_the_backend_connection() {
    let cluster = TestCluster::start(1).await;
    let mut master = cluster.master(0).await;
    let blocked = |info: &str| -> i64 {
        info.lines()
            .find_map(|l| l.strip_prefix("blocked_clients:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(-1)
    };
    let mut waiter = cluster.client().await;
    waiter
        .send_raw(&redshard_tests::client::encode_command(&[
            "BLPOP", "never", "0",
        ]))
        .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while blocked(&master.cmd(&["INFO", "clients"]).await.text()) != 1 {
        assert!(
            Instant::now() < deadline,
            "the BLPOP never reached the master"
        );
        // Polling interval of this wait loop, not synchronisation.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(waiter);
    while blocked(&master.cmd(&["INFO", "clients"]).await.text()) != 0 {
        assert!(
            Instant::now() < deadline,
            "the blocked backend connection was not freed"
        );
        // Polling interval of this wait loop, not synchronisation.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The shared lanes are unaffected.
    let mut c = cluster.client().await;
    assert!(c.cmd(&["SET", "k", "v"]).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_and_quit_leave_a_transaction_and_a_watch_as_in_redis() {
    // Each sequence goes to the proxy and to a redis-server directly: same replies.
    let cluster = TestCluster::start(1).await;
    let master = cluster.masters[0].addr();
    let mut proxy = cluster.client().await;
    let mut direct = redshard_tests::Client::connect(master.clone()).await;
    for c in [&mut proxy, &mut direct] {
        let replies = c
            .pipeline(&[
                vec!["MULTI"],
                vec!["SET", "r", "1"],
                vec!["RESET"],
                vec!["GET", "r"],
                vec!["EXEC"],
                vec!["PING", "a", "b"],
            ])
            .await;
        assert_eq!(
            replies,
            vec![
                Reply::Status("OK".into()),
                Reply::Status("QUEUED".into()),
                Reply::Status("RESET".into()),
                Reply::Bulk(None),
                err("ERR EXEC without MULTI"),
                err("ERR wrong number of arguments for 'ping' command"),
            ]
        );
    }

    // RESET forgets WATCH: a change by someone else no longer aborts the next EXEC.
    let mut other = cluster.client().await;
    assert!(proxy.cmd(&["SET", "w", "1"]).await.is_ok());
    assert!(proxy.cmd(&["WATCH", "w"]).await.is_ok());
    assert_eq!(proxy.cmd(&["RESET"]).await, Reply::Status("RESET".into()));
    assert!(other.cmd(&["SET", "w", "2"]).await.is_ok());
    let replies = proxy
        .pipeline(&[vec!["MULTI"], vec!["SET", "w", "3"], vec!["EXEC"]])
        .await;
    assert_eq!(replies[2], Reply::Array(vec![Reply::Status("OK".into())]));
    assert_eq!(other.cmd(&["GET", "w"]).await, Reply::bulk("3"));

    // QUIT inside MULTI: +OK and the connection closes.
    let mut quitter = cluster.client().await;
    let replies = quitter
        .pipeline(&[vec!["MULTI"], vec!["SET", "q", "1"], vec!["QUIT"]])
        .await;
    assert_eq!(replies[2], Reply::Status("OK".into()));
    assert_eq!(quitter.try_read().await, None);
    assert_eq!(other.cmd(&["EXISTS", "q"]).await, Reply::Int(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_a_protocol_switch() {
    // HELLO does not forget WATCH in Redis: the private connection switches protocol for the
    // EXEC and still watches.
    let cluster = TestCluster::start(1).await;
    let mut c = cluster.client().await;
    let mut other = cluster.client().await;
    assert!(c.cmd(&["SET", "w", "1"]).await.is_ok());
    assert!(c.cmd(&["WATCH", "w"]).await.is_ok());
    let hello = c.cmd_resp3(&["HELLO", "3"]).await;
    assert!(
        hello.starts_with(b"%"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(c.cmd_resp3(&["MULTI"]).await, b"+OK\r\n");
    assert_eq!(c.cmd_resp3(&["SET", "w", "2"]).await, b"+QUEUED\r\n");
    assert_eq!(c.cmd_resp3(&["EXEC"]).await, b"*1\r\n+OK\r\n");
    assert_eq!(other.cmd(&["GET", "w"]).await, Reply::bulk("2"));

    // Watching across the switch back still sees another client's change.
    assert_eq!(c.cmd_resp3(&["WATCH", "w"]).await, b"+OK\r\n");
    let hello = c.cmd_resp3(&["HELLO", "2"]).await;
    assert!(
        hello.starts_with(b"*"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    assert!(other.cmd(&["SET", "w", "3"]).await.is_ok());
    let replies = c
        .pipeline(&[vec!["MULTI"], vec!["SET", "w", "4"], vec!["EXEC"]])
        .await;
    assert_eq!(
        replies[2],
        Reply::Bulk(None),
        "the watched key changed: EXEC aborts"
    );
    assert_eq!(other.cmd(&["GET", "w"]).await, Reply::bulk("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_exec_discards_the_transaction_as_in_redis() {
    let cluster = TestCluster::start(1).await;
    let mut proxy = cluster.client().await;
    let mut direct = redshard_tests::Client::connect(cluster.masters[0].addr()).await;
    for c in [&mut proxy, &mut direct] {
        let replies = c
            .pipeline(&[
                vec!["EXEC", "x"],
                vec!["MULTI"],
                vec!["SET", "t", "1"],
                vec!["EXEC", "now"],
                vec!["EXEC"],
                vec!["GET", "t"],
            ])
            .await;
        let abort = err("EXECABORT Transaction discarded because of: wrong number of arguments for 'exec' command");
        assert_eq!(
            replies,
            vec![
                abort.clone(),
                Reply::Status("OK".into()),
                Reply::Status("QUEUED".into()),
                abort,
                err("ERR EXEC without MULTI"),
                Reply::Bulk(None),
            ]
        );
    }
}

/// Shard `index`'s gate in the proxy's current routing table.
fn gate(cluster: &TestCluster, index: usize) -> GateState {
    let table = cluster.proxy.as_ref().expect("proxy").state().router.load();
    table.shards()[index].gate.state()
}

/// Three keys of one slot on shard `shard` of `shards`, like a bank transfer's.
fn bank_keys(shards: usize, shard: usize) -> [String; 3] {
    let tag = key_on(shards, shard, "bank");
    ["from", "to", "audit"].map(|k| format!("{{{tag}}}{k}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_first_shard_down_transactions_and_keyless_commands_on_others_still_run() {
    // Shard 0 has no replica: its master's death leaves it down (CLUSTERDOWN for its keys).
    // MULTI and keyless commands need none of its data and must not fail with it: a MULTI
    // refused while the commands after it run would run a transaction half outside MULTI.
    let mut cluster = TestCluster::start(3).await;
    let [from, to, audit] = bank_keys(3, 2);
    let mut c = cluster.client().await;
    assert!(c.cmd(&["SET", &from, "100"]).await.is_ok());
    cluster.masters[0].kill();
    wait_until(Duration::from_secs(10), "shard 0's gate down", || async {
        gate(&cluster, 0) == GateState::Down
    })
    .await;

    let replies = c
        .pipeline(&[
            vec!["MULTI"],
            vec!["DECRBY", from.as_str(), "10"],
            vec!["INCRBY", to.as_str(), "10"],
            vec!["SET", audit.as_str(), "x"],
            vec!["EXEC"],
        ])
        .await;
    assert_eq!(
        replies,
        vec![
            Reply::Status("OK".into()),
            Reply::Status("QUEUED".into()),
            Reply::Status("QUEUED".into()),
            Reply::Status("QUEUED".into()),
            Reply::Array(vec![
                Reply::Int(90),
                Reply::Int(10),
                Reply::Status("OK".into())
            ]),
        ]
    );
    // A transaction of keyless commands runs on a master that is up.
    let replies = c
        .pipeline(&[vec!["MULTI"], vec!["PING"], vec!["EXEC"]])
        .await;
    assert_eq!(
        replies[2],
        Reply::Array(vec![Reply::Status("PONG".into())]),
        "{replies:?}"
    );
    for command in [
        vec!["TIME"],
        vec!["EVAL", "return 7", "0"],
        vec!["SCRIPT", "LOAD", "return 8"],
        vec!["COMMAND", "INFO", "get"],
    ] {
        let reply = c.cmd(&command).await;
        assert!(
            !matches!(reply, Reply::Error(_)),
            "{command:?} answered {reply:?}"
        );
    }
    // What needs every master still says which one is missing (LASTSAVE: the oldest of the
    // masters' saves).
    for command in ["DBSIZE", "LASTSAVE"] {
        let reply = c.cmd(&[command]).await;
        assert!(
            matches!(&reply, Reply::Error(e) if e.starts_with("CLUSTERDOWN")),
            "{command}: {reply:?}"
        );
    }
    // An EXEC refused for the down shard ends the transaction, as in Redis Cluster.
    let down = key_on(3, 0, "bank");
    let replies = c
        .pipeline(&[
            vec!["MULTI"],
            vec!["SET", down.as_str(), "1"],
            vec!["EXEC"],
            vec!["SET", audit.as_str(), "after"],
            vec!["GET", audit.as_str()],
        ])
        .await;
    assert!(
        matches!(&replies[2], Reply::Error(e) if e.starts_with("CLUSTERDOWN")),
        "{replies:?}"
    );
    assert_eq!(replies[3], Reply::Status("OK".into()), "{replies:?}");
    assert_eq!(replies[4], Reply::bulk("after"), "{replies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_on_another_shard_does_not_wait_for_a_failover() {
    // Shard 0's master hangs: its gate is paused until its replica is promoted. A
    // transaction on shard 1 has nothing to wait for: its reply comes while shard 0's gate
    // is still paused.
    let cluster = TestCluster::start_with(2, true, "", &[]).await;
    let [from, to, _] = bank_keys(2, 1);
    let mut c = cluster.client().await;
    assert!(c.cmd(&["SET", &from, "100"]).await.is_ok());
    let pid = cluster.masters[0].pid().expect("running");
    signal(pid, "STOP");
    wait_until(Duration::from_secs(10), "shard 0's gate paused", || async {
        gate(&cluster, 0) == GateState::Paused
    })
    .await;
    let replies = c
        .pipeline(&[
            vec!["MULTI"],
            vec!["DECRBY", from.as_str(), "10"],
            vec!["INCRBY", to.as_str(), "10"],
            vec!["EXEC"],
            vec!["TIME"],
        ])
        .await;
    let still_paused = gate(&cluster, 0) == GateState::Paused;
    signal(pid, "CONT");
    assert_eq!(
        replies[3],
        Reply::Array(vec![Reply::Int(90), Reply::Int(10)]),
        "{replies:?}"
    );
    assert!(!matches!(replies[4], Reply::Error(_)), "{replies:?}");
    assert!(
        still_paused,
        "the transaction waited for shard 0's failover"
    );
}

/// A PUBLISH inside MULTI runs with the transaction on the master of its channel's slot, where
/// subscribers get it (Celery's result backend stores a result and announces it under one
/// name in one transaction); a channel of another slot is refused like a key would be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_inside_multi_reaches_the_subscribers_of_its_channel() {
    let cluster = TestCluster::start(3).await;
    let name = "celery-task-meta-1";
    let mut sub = cluster.client().await;
    sub.send_raw(&redshard_tests::client::encode_command(&[
        "SUBSCRIBE",
        name,
    ]))
    .await;
    assert!(matches!(sub.read().await, Reply::Array(_)));
    let mut c = cluster.client().await;
    let replies = c
        .pipeline(&[
            vec!["MULTI"],
            vec!["SET", name, "done"],
            vec!["PUBLISH", name, "done"],
            vec!["EXEC"],
        ])
        .await;
    assert_eq!(
        replies[3],
        Reply::Array(vec![Reply::Status("OK".into()), Reply::Int(1)]),
        "{replies:?}"
    );
    assert_eq!(
        sub.read().await,
        Reply::Array(vec![
            Reply::bulk("message"),
            Reply::bulk(name),
            Reply::bulk("done")
        ])
    );
    let other = key_on(
        3,
        (redshard_tests::cluster::shard_of(name, 3) + 1) % 3,
        "chan",
    );
    let replies = c
        .pipeline(&[
            vec!["MULTI"],
            vec!["SET", name, "again"],
            vec!["PUBLISH", other.as_str(), "x"],
            vec!["EXEC"],
        ])
        .await;
    assert_eq!(
        replies[2],
        err("CROSSSLOT Keys in request don't hash to the same slot")
    );
    assert!(
        matches!(&replies[3], Reply::Error(e) if e.starts_with("EXECABORT")),
        "{replies:?}"
    );
}

/// A command Redis refuses in a transaction (`no-multi`: SAVE, SHUTDOWN, SYNC, PSYNC) gets
/// Redis's own text, and the transaction is discarded at EXEC, as Redis does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_redis_refuses_in_a_transaction_gets_redis_s_error() {
    let cluster = TestCluster::start(1).await;
    let mut c = cluster.client().await;
    let replies = c
        .pipeline(&[
            vec!["MULTI"],
            vec!["SET", "k", "v"],
            vec!["SAVE"],
            vec!["EXEC"],
        ])
        .await;
    assert_eq!(
        replies[2],
        err("ERR Command not allowed inside a transaction")
    );
    assert_eq!(
        replies[3],
        err("EXECABORT Transaction discarded because of previous errors.")
    );
    assert_eq!(c.cmd(&["GET", "k"]).await, Reply::Bulk(None));
}
