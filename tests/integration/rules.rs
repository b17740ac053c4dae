//! Key routing rules: keys with a configured prefix share the slot of one tag, so an
//! application's transactions and scripts over them run through the proxy; the keys move with
//! that slot; and a proxy refuses to start with rules other than those its stored keys were
//! placed by.

use std::sync::Arc;
use std::time::Duration;

use redshard_config::{Slot, SlotRange};
use redshard_control::migrate::MigrationState;
use redshard_tests::cluster::{shard_of, CrashableProxy};
use redshard_tests::replication::wait_until;
use redshard_tests::{Client, RedisServer, Reply, TestCluster};

/// python-rq's keys (`rq:job:<id>`, `rq:queue:<name>`, ...) in one slot, that of `{rq}`.
const RQ_RULE: &str = "[[rule]]\nprefix = \"rq:\"\ntag = \"rq\"\n";

/// The index of the master (of `shards`, even slot ranges) serving `{tag}`'s slot.
fn shard_of_tag(tag: &str, shards: usize) -> usize {
    shard_of(&format!("{{{tag}}}"), shards)
}

/// Whether master `i` of `cluster` holds `key`, asked directly.
async fn on_master(cluster: &TestCluster, i: usize, key: &str) -> bool {
    cluster.master(i).await.cmd(&["EXISTS", key]).await == Reply::Int(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_and_a_script_over_keys_a_rule_groups_run_on_the_rules_shard() {
    let cluster = TestCluster::start_with(3, false, RQ_RULE, &[]).await;
    let mut client = cluster.client().await;
    let (job, queue) = ("rq:job:42", "rq:queue:default");
    // By Redis Cluster's rules alone these keys are on different shards, so without the rule
    // rq's enqueue transaction would be refused with CROSSSLOT.
    assert_ne!(shard_of(job, 3), shard_of(queue, 3));

    let replies = client
        .pipeline(&[
            vec!["MULTI".to_owned()],
            vec!["HSET".into(), job.into(), "status".into(), "queued".into()],
            vec!["RPUSH".into(), queue.into(), "42".into()],
            vec!["EXEC".into()],
        ])
        .await;
    assert_eq!(
        replies[3],
        Reply::Array(vec![Reply::Int(1), Reply::Int(1)]),
        "{replies:?}"
    );
    let script = "redis.call('LPOP', KEYS[2]); return redis.call('HGET', KEYS[1], 'status')";
    assert_eq!(
        client.cmd(&["EVAL", script, "2", job, queue]).await,
        Reply::bulk("queued")
    );
    assert_eq!(
        client.cmd(&["MSET", "rq:a", "1", "rq:b", "2"]).await,
        Reply::Status("OK".into())
    );

    // Every rq: key is on the master of {rq}'s slot, and only there.
    let home = shard_of_tag("rq", 3);
    for key in [job, "rq:a", "rq:b"] {
        for i in 0..3 {
            assert_eq!(
                on_master(&cluster, i, key).await,
                i == home,
                "{key} on master {i}"
            );
        }
    }
    // A key's own hash tag still wins (the default), and keys no rule matches are untouched.
    let tagged = "rq:{elsewhere}:x";
    client.cmd(&["SET", tagged, "1"]).await;
    assert!(on_master(&cluster, shard_of("{elsewhere}", 3), tagged).await);
    let plain = "job:42";
    client.cmd(&["SET", plain, "1"]).await;
    assert!(on_master(&cluster, shard_of(plain, 3), plain).await);
    // INFO shows the rule, with the slot it gives.
    let Reply::Bulk(Some(info)) = client.cmd(&["INFO", "redshard"]).await else {
        panic!("INFO redshard");
    };
    let info = String::from_utf8(info).unwrap();
    let line = format!(
        "rule0:prefix \"rq:\" -> {{rq}} (slot {}, own tag wins)\r\n",
        Slot::for_key(b"{rq}")
    );
    assert!(
        info.contains("routing_rules:1\r\n") && info.contains(&line),
        "{info}"
    );
    // Other keys still get CROSSSLOT where Redis Cluster would refuse them.
    let (a, b) = ("job:1", "queue:default");
    assert_ne!(shard_of(a, 3), shard_of(b, 3));
    assert!(
        matches!(client.cmd(&["EVAL", "return 1", "2", a, b]).await, Reply::Error(e) if e.starts_with("CROSSSLOT")),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_placed_by_a_rule_move_with_their_slot() {
    const KEYS: usize = 300;
    let cluster = TestCluster::start_with(2, false, RQ_RULE, &[]).await;
    let controller = Arc::clone(cluster.proxy.as_ref().expect("proxy").controller());
    let mut client = cluster.client().await;
    let sets: Vec<Vec<String>> = (0..KEYS)
        .map(|i| vec!["SET".into(), format!("rq:job:{i}"), format!("v{i}")])
        .collect();
    for reply in client.pipeline(&sets).await {
        assert_eq!(reply, Reply::Status("OK".into()));
    }
    let from = shard_of_tag("rq", 2);
    let to = 1 - from;
    let slot = Slot::for_key(b"{rq}");
    controller
        .migrate(
            &format!("s{}", from + 1),
            &format!("s{}", to + 1),
            vec![SlotRange::single(slot)],
        )
        .await
        .expect("queue the move");
    wait_until(Duration::from_secs(60), "the move to finish", || async {
        controller.migrations().iter().all(|m| {
            assert!(!matches!(m.state, MigrationState::Failed(_)), "{m:?}");
            matches!(m.state, MigrationState::Done)
        })
    })
    .await;
    // The mover found the rule's keys by the rule (by Redis Cluster's rules alone they belong
    // to hundreds of other slots), so all of them moved and none stayed behind.
    let mut old = cluster.master(from).await;
    let mut new = cluster.master(to).await;
    assert_eq!(old.cmd(&["DBSIZE"]).await, Reply::Int(0));
    assert_eq!(new.cmd(&["DBSIZE"]).await, Reply::Int(KEYS as i64));
    let gets: Vec<Vec<String>> = (0..KEYS)
        .map(|i| vec!["GET".into(), format!("rq:job:{i}")])
        .collect();
    for (i, reply) in client.pipeline(&gets).await.into_iter().enumerate() {
        assert_eq!(reply, Reply::bulk(&format!("v{i}")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_refuses_rules_other_than_the_ones_its_keys_were_placed_by() {
    let dir = tempfile::tempdir().unwrap();
    let master = RedisServer::start();
    let text = |rules: &str| {
        redshard_tests::cluster::config_text(
            &[master.addr()],
            &[],
            &format!(
                "topology_file = \"{}\"\nmetrics_listen = \"off\"\nadmin_listen = \"off\"\nadmin_socket = \"off\"\n{rules}",
                dir.path().join("topology.toml").display()
            ),
        )
    };
    let config =
        |rules: &str| redshard_config::Config::from_toml_str(&text(rules), "t.toml").unwrap();
    let mut first = CrashableProxy::start(config(RQ_RULE)).await;
    let mut client = Client::connect_addr(first.proxy().local_addr()).await;
    assert_eq!(
        client.cmd(&["SET", "rq:job:1", "x"]).await,
        Reply::Status("OK".into())
    );
    drop(client);
    first.crash().await;

    for other in ["", "[[rule]]\nprefix = \"rq:\"\ntag = \"jobs\"\n"] {
        let refused = redshard_proxy::Proxy::start(config(other)).await;
        let Err(e) = refused else {
            panic!("started with the rules {other:?}");
        };
        let message = e.to_string();
        assert!(
            message.contains("[[rule]]") && message.contains("prefix \"rq:\" -> {rq}"),
            "{message}"
        );
    }
    // The same rules start again, and the key is found where it was put.
    let again = CrashableProxy::start(config(RQ_RULE)).await;
    let mut client = Client::connect_addr(again.proxy().local_addr()).await;
    assert_eq!(client.cmd(&["GET", "rq:job:1"]).await, Reply::bulk("x"));
}
