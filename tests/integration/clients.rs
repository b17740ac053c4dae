//! Real client libraries, unmodified and with their default connect paths: redis-py (RESP3
//! by default since version 8) and redis-rs.

use std::process::Command;

use redshard_tests::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_py_works_unmodified() {
    let cluster = TestCluster::start(3).await;
    let port = cluster.addr.port().to_string();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/compat/redis_py_compat.py");
    let out =
        tokio::task::spawn_blocking(move || Command::new("python3").arg(script).arg(port).output())
            .await
            .unwrap()
            .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "redis-py failed (install it with: pip install redis):\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("redis-py compatibility: OK"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_rs_works_unmodified() {
    let cluster = TestCluster::start(3).await;
    let url = format!("redis://{}/", cluster.addr);
    tokio::task::spawn_blocking(move || {
        use redis::Commands;
        let client = redis::Client::open(url).unwrap();
        let mut con = client.get_connection().unwrap();
        let _: () = con.set("rs:s", "v").unwrap();
        let v: String = con.get("rs:s").unwrap();
        assert_eq!(v, "v");
        let _: () = con.hset_multiple("rs:h", &[("a", 1), ("b", 2)]).unwrap();
        let h: std::collections::HashMap<String, i64> = con.hgetall("rs:h").unwrap();
        assert_eq!(h.len(), 2);
        let _: () = con.rpush("rs:l", "x").unwrap();
        let popped: Option<(String, String)> = con.blpop("rs:l", 1.0).unwrap();
        assert_eq!(popped, Some(("rs:l".into(), "x".into())));
        // A pipeline across shards.
        let mut pipe = redis::pipe();
        for i in 0..50 {
            pipe.set(format!("rs:p{i}"), i).ignore();
        }
        for i in 0..50 {
            pipe.get(format!("rs:p{i}"));
        }
        let values: Vec<i64> = pipe.query(&mut con).unwrap();
        assert_eq!(values, (0..50).collect::<Vec<i64>>());
        // A transaction in one slot.
        let (n,): (i64,) = redis::pipe()
            .atomic()
            .incr("{rs}t", 2)
            .query(&mut con)
            .unwrap();
        assert_eq!(n, 2);
        // A script.
        let script = redis::Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])");
        let n: i64 = script.key("rs:script").arg(7).invoke(&mut con).unwrap();
        assert_eq!(n, 7);
        // Pub/sub.
        let mut sub_con = client.get_connection().unwrap();
        let mut pubsub = sub_con.as_pubsub();
        pubsub.subscribe("rs:chan").unwrap();
        let receivers: i64 = con.publish("rs:chan", "hi").unwrap();
        assert_eq!(receivers, 1);
        let msg = pubsub.get_message().unwrap();
        assert_eq!(msg.get_payload::<String>().unwrap(), "hi");
        drop(pubsub);
        // A full SCAN.
        let keys: std::collections::BTreeSet<String> = con
            .scan_match("rs:p*")
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(keys.len(), 50);
    })
    .await
    .unwrap();
}
