//! Keys land on the master that owns their slot; hash tags; CROSSSLOT; pipelines in order.

use redshard_config::Slot;
use redshard_tests::cluster::shard_of;
use redshard_tests::{Reply, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_lands_on_its_slots_master_only() {
    let cluster = TestCluster::start(3).await;
    let mut client = cluster.client().await;
    let keys: Vec<String> = (0..300).map(|i| format!("key:{i}")).collect();
    for key in &keys {
        assert!(client.cmd(&["SET", key, &format!("v-{key}")]).await.is_ok());
    }
    let mut direct = Vec::new();
    for i in 0..3 {
        direct.push(cluster.master(i).await);
    }
    let mut per_shard = [0usize; 3];
    for key in &keys {
        let home = shard_of(key, 3);
        per_shard[home] += 1;
        for (i, node) in direct.iter_mut().enumerate() {
            let got = node.cmd(&["GET", key]).await;
            if i == home {
                assert_eq!(
                    got,
                    Reply::bulk(&format!("v-{key}")),
                    "{key} missing on its master {i}"
                );
            } else {
                assert_eq!(got, Reply::Bulk(None), "{key} leaked to master {i}");
            }
        }
        assert_eq!(
            client.cmd(&["GET", key]).await,
            Reply::bulk(&format!("v-{key}"))
        );
    }
    assert!(
        per_shard.iter().all(|&n| n > 50),
        "keys spread over every shard: {per_shard:?}"
    );
    for (i, node) in direct.iter_mut().enumerate() {
        assert_eq!(node.cmd(&["DBSIZE"]).await, Reply::Int(per_shard[i] as i64));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_tags_keep_keys_together_and_crossslot_refuses_the_rest() {
    let cluster = TestCluster::start(3).await;
    let mut c = cluster.client().await;
    // Same tag: one slot, so multi-key commands that cannot be split work.
    assert_eq!(c.cmd(&["SADD", "{user1}:a", "x", "y"]).await, Reply::Int(2));
    assert_eq!(c.cmd(&["SADD", "{user1}:b", "y", "z"]).await, Reply::Int(2));
    assert_eq!(
        c.cmd(&["SINTERSTORE", "{user1}:c", "{user1}:a", "{user1}:b"])
            .await,
        Reply::Int(1)
    );
    assert_eq!(
        c.cmd(&["RENAME", "{user1}:c", "{user1}:d"]).await,
        Reply::Status("OK".into())
    );
    assert_eq!(
        c.cmd(&["SMEMBERS", "{user1}:d"]).await,
        Reply::Array(vec![Reply::bulk("y")])
    );
    // Keys in different slots (even when a shard might hold both): CROSSSLOT, nothing sent.
    let crossslot = Reply::Error("CROSSSLOT Keys in request don't hash to the same slot".into());
    assert_eq!(
        c.cmd(&["SINTERSTORE", "dst", "{user1}:a", "{user1}:b"])
            .await,
        crossslot
    );
    assert_eq!(
        c.cmd(&["RENAME", "{user1}:d", "elsewhere"]).await,
        crossslot
    );
    assert_eq!(c.cmd(&["MSETNX", "a", "1", "b", "2"]).await, crossslot);
    assert_eq!(c.cmd(&["EVAL", "return 1", "2", "a", "b"]).await, crossslot);
    assert_eq!(c.cmd(&["EXISTS", "dst", "elsewhere"]).await, Reply::Int(0));
    // An empty tag hashes the whole key: `{}a` and `{}b` are (almost surely) different slots.
    assert_ne!(Slot::for_key(b"{}a"), Slot::for_key(b"{}b"));
    assert_eq!(c.cmd(&["SUNIONSTORE", "{}a", "{}b"]).await, crossslot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_pipelined_mixed_commands_are_answered_in_order() {
    let cluster = TestCluster::start(3).await;
    let mut c = cluster.client().await;
    let mut commands: Vec<Vec<String>> = Vec::new();
    let mut expected: Vec<Reply> = Vec::new();
    for i in 0..3000 {
        let key = format!("p:{i}");
        match i % 6 {
            0 => {
                commands.push(vec!["SET".into(), key.clone(), i.to_string()]);
                expected.push(Reply::Status("OK".into()));
            }
            1 => {
                commands.push(vec!["INCR".into(), format!("p:{}", i - 1)]);
                expected.push(Reply::Int(i as i64));
            }
            2 => {
                commands.push(vec!["GET".into(), format!("p:{}", i - 2)]);
                expected.push(Reply::bulk(&(i - 1).to_string()));
            }
            3 => {
                commands.push(vec!["RPUSH".into(), key.clone(), "a".into(), "b".into()]);
                expected.push(Reply::Int(2));
            }
            4 => {
                commands.push(vec!["PING".into()]);
                expected.push(Reply::Status("PONG".into()));
            }
            _ => {
                commands.push(vec![
                    "MGET".into(),
                    format!("p:{}", i - 5),
                    "missing".into(),
                    format!("p:{}", i - 5),
                ]);
                let v = Reply::bulk(&(i - 4).to_string());
                expected.push(Reply::Array(vec![v.clone(), Reply::Bulk(None), v]));
            }
        }
    }
    let replies = c.pipeline(&commands).await;
    for (i, (got, want)) in replies.iter().zip(&expected).enumerate() {
        assert_eq!(got, want, "reply {i} to {:?}", commands[i]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_interleave_without_mixing_replies() {
    let cluster = TestCluster::start(3).await;
    let mut tasks = Vec::new();
    for client_id in 0..20 {
        let mut c = cluster.client().await;
        tasks.push(tokio::spawn(async move {
            for round in 0..20 {
                let commands: Vec<Vec<String>> = (0..50)
                    .map(|i| {
                        vec![
                            "SET".into(),
                            format!("c{client_id}:{i}"),
                            format!("{client_id}-{round}-{i}"),
                        ]
                    })
                    .chain((0..50).map(|i| vec!["GET".into(), format!("c{client_id}:{i}")]))
                    .collect();
                let replies = c.pipeline(&commands).await;
                for i in 0..50 {
                    assert_eq!(
                        replies[50 + i],
                        Reply::bulk(&format!("{client_id}-{round}-{i}"))
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}
