//! MGET, MSET, DEL, UNLINK, EXISTS, TOUCH split across every shard and merged in key order.

use redshard_tests::{Reply, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_key_commands_span_all_shards() {
    let cluster = TestCluster::start(3).await;
    let mut c = cluster.client().await;
    let keys: Vec<String> = (0..60).map(|i| format!("m:{i}")).collect();
    let mut mset = vec!["MSET".to_string()];
    for k in &keys {
        mset.push(k.clone());
        mset.push(format!("val-{k}"));
    }
    assert!(c.cmd(&mset).await.is_ok());
    // Every master got some of the keys.
    for i in 0..3 {
        let Reply::Int(n) = cluster.master(i).await.cmd(&["DBSIZE"]).await else {
            panic!()
        };
        assert!(n > 5, "master {i} holds {n} keys");
    }
    // MGET in the client's order, with missing keys and duplicates.
    let mut mget = vec!["MGET".to_string()];
    mget.extend(keys.iter().rev().cloned());
    mget.push("nope".into());
    mget.push(keys[0].clone());
    let Reply::Array(values) = c.cmd(&mget).await else {
        panic!("MGET must return an array")
    };
    assert_eq!(values.len(), keys.len() + 2);
    for (value, key) in values.iter().zip(keys.iter().rev()) {
        assert_eq!(value, &Reply::bulk(&format!("val-{key}")));
    }
    assert_eq!(values[keys.len()], Reply::Bulk(None));
    assert_eq!(
        values[keys.len() + 1],
        Reply::bulk(&format!("val-{}", keys[0]))
    );

    let mut exists = vec!["EXISTS".to_string()];
    exists.extend(keys.iter().cloned());
    exists.push(keys[1].clone()); // counted twice, like Redis
    exists.push("nope".into());
    assert_eq!(c.cmd(&exists).await, Reply::Int(61));

    let mut touch = vec!["TOUCH".to_string()];
    touch.extend(keys[..30].iter().cloned());
    assert_eq!(c.cmd(&touch).await, Reply::Int(30));

    let mut del = vec!["DEL".to_string()];
    del.extend(keys[..20].iter().cloned());
    del.push("nope".into());
    assert_eq!(c.cmd(&del).await, Reply::Int(20));
    let mut unlink = vec!["UNLINK".to_string()];
    unlink.extend(keys.iter().cloned());
    assert_eq!(c.cmd(&unlink).await, Reply::Int(40));
    for i in 0..3 {
        assert_eq!(
            cluster.master(i).await.cmd(&["DBSIZE"]).await,
            Reply::Int(0)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_commands_keep_read_your_writes_in_a_pipeline() {
    let cluster = TestCluster::start(3).await;
    let mut c = cluster.client().await;
    let mut commands = Vec::new();
    for i in 0..200 {
        commands.push(vec!["SET".to_string(), format!("ryw:{i}"), i.to_string()]);
        commands.push(vec![
            "MGET".to_string(),
            format!("ryw:{i}"),
            format!("ryw:{}", i / 2),
            "x".into(),
        ]);
    }
    let replies = c.pipeline(&commands).await;
    for i in 0..200 {
        assert_eq!(
            replies[2 * i + 1],
            Reply::Array(vec![
                Reply::bulk(&i.to_string()),
                Reply::bulk(&(i / 2).to_string()),
                Reply::Bulk(None)
            ])
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_command_errors_look_like_redis() {
    let cluster = TestCluster::start(3).await;
    let mut c = cluster.client().await;
    assert_eq!(
        c.cmd(&["MSET", "a", "1", "b"]).await,
        Reply::Error("ERR wrong number of arguments for 'mset' command".into())
    );
    assert_eq!(
        c.cmd(&["MGET"]).await,
        Reply::Error("ERR wrong number of arguments for 'mget' command".into())
    );
    // A wrong type on one shard fails the whole DEL? No: DEL of any type works; use a
    // WRONGTYPE-free check: MGET of a list returns nil, as in Redis.
    assert_eq!(c.cmd(&["RPUSH", "list", "x"]).await, Reply::Int(1));
    assert_eq!(
        c.cmd(&["MGET", "list", "a", "b", "c", "d"]).await,
        Reply::Array(vec![Reply::Bulk(None); 5])
    );
}
