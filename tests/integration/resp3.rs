//! RESP3 clients (`HELLO 3`): replies in RESP3 straight from RESP3 lanes, local replies in
//! RESP3 forms, and switching protocols in the middle of a pipeline without reordering.

use redshard_tests::client::encode_command;
use redshard_tests::TestCluster;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_3_switches_every_reply_to_resp3() {
    let cluster = TestCluster::start(3).await;
    let mut c = cluster.client().await;
    let hello = text(&c.cmd_resp3(&["HELLO", "3"]).await);
    assert!(
        hello.starts_with("%7\r\n$6\r\nserver\r\n$5\r\nredis\r\n"),
        "{hello}"
    );
    assert!(
        hello.contains("$5\r\nproto\r\n:3\r\n") && hello.contains("$4\r\nrole\r\n$6\r\nmaster\r\n"),
        "{hello}"
    );
    assert_eq!(c.cmd_resp3(&["HSET", "h", "f", "v"]).await, b":1\r\n");
    assert_eq!(
        c.cmd_resp3(&["HGETALL", "h"]).await,
        b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );
    assert_eq!(c.cmd_resp3(&["GET", "missing"]).await, b"_\r\n");
    assert_eq!(c.cmd_resp3(&["ZADD", "z", "1.5", "m"]).await, b":1\r\n");
    assert_eq!(c.cmd_resp3(&["ZSCORE", "z", "m"]).await, b",1.5\r\n");
    assert_eq!(c.cmd_resp3(&["SADD", "s", "a"]).await, b":1\r\n");
    assert_eq!(c.cmd_resp3(&["SMEMBERS", "s"]).await, b"~1\r\n$1\r\na\r\n");
    assert_eq!(c.cmd_resp3(&["CLIENT", "GETNAME"]).await, b"_\r\n");
    assert_eq!(
        c.cmd_resp3(&["CONFIG", "GET", "databases"]).await,
        b"%1\r\n$9\r\ndatabases\r\n$2\r\n16\r\n"
    );
    // Split across shards: RESP3 nulls from each master, merged in key order.
    // Text replies are verbatim strings of format txt, as Redis 7 sends them in RESP3, the
    // INFO with the masters' keyspaces merged in included.
    assert_eq!(c.cmd_resp3(&["SET", "a", "1"]).await, b"+OK\r\n");
    for args in [
        &["INFO"][..],
        &["INFO", "keyspace"],
        &["INFO", "server"],
        &["CLIENT", "INFO"],
        &["CLIENT", "LIST"],
    ] {
        let reply = c.cmd_resp3(args).await;
        let header_end = reply.iter().position(|&b| b == b'\n').unwrap() + 1;
        let len: usize = text(&reply[1..header_end - 2]).parse().unwrap();
        assert!(reply.starts_with(b"="), "{args:?}: {}", text(&reply));
        assert_eq!(&reply[header_end..header_end + 4], b"txt:", "{args:?}");
        assert_eq!(reply.len(), header_end + len + 2, "{args:?}");
    }
    let keyspace = text(&c.cmd_resp3(&["INFO", "keyspace"]).await);
    assert!(keyspace.contains("db0:keys="), "{keyspace}");
    let mget = c
        .cmd_resp3(&["MGET", "a", "missing", "h-missing", "a"])
        .await;
    assert_eq!(mget, b"*4\r\n$1\r\n1\r\n_\r\n_\r\n$1\r\n1\r\n");
    // Back to RESP2.
    let hello2 = text(&c.cmd_resp3(&["HELLO", "2"]).await);
    assert!(hello2.starts_with("*14\r\n"), "{hello2}");
    assert_eq!(c.cmd_resp3(&["GET", "missing"]).await, b"$-1\r\n");
    assert_eq!(
        c.cmd_resp3(&["HGETALL", "h"]).await,
        b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_protocol_mid_pipeline_keeps_order() {
    let cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    let mut pipeline = Vec::new();
    for i in 0..200 {
        pipeline.extend(encode_command(&["SET", &format!("k{i}"), &i.to_string()]));
        pipeline.extend(encode_command(&[
            "HELLO",
            if i % 2 == 0 { "3" } else { "2" },
        ]));
        pipeline.extend(encode_command(&["GET", &format!("k{i}")]));
    }
    c.send_raw(&pipeline).await;
    for i in 0..200 {
        assert_eq!(c.read_resp3_raw().await, b"+OK\r\n");
        let _hello = c.read_resp3_raw().await;
        let value = i.to_string();
        assert_eq!(
            text(&c.read_resp3_raw().await),
            format!("${}\r\n{value}\r\n", value.len())
        );
    }
}
