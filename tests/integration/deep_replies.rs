//! Deeply nested replies: a Lua script returning a recursive table reaches its client exactly
//! as Redis sends it, and never breaks the node connection other clients share with it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redshard_config::ReplicaState;
use redshard_tests::client::encode_command;
use redshard_tests::cluster::PROXY_MIRRORING;
use redshard_tests::workload::assert_replicas_equal;
use redshard_tests::{wait_for_progress, RedisServer, Reply, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::mirror::DEBUG;

/// A write, then a table nested `ARGV[1]` levels deep as the reply (Redis 7 stops at 7,995
/// arrays with `reached lua stack limit` in the innermost one).
const NESTED: &str = "redis.call('INCR', KEYS[1]) \
    local t = {} for i = 1, tonumber(ARGV[1]) do t = {t} end return t";

/// The same with RESP3 maps (`%1` levels, each with a key).
const NESTED_MAPS: &str = "redis.setresp(3) redis.call('INCR', KEYS[1]) \
    local t = {map={}} for i = 1, tonumber(ARGV[1]) do t = {map={k=t}} end return t";

/// Every key of these tests has this tag: one slot, so one shared lane of the master and one
/// of the replica carry the deep replies and everybody else's writes.
const TAG: &str = "{deep}";

/// Sends `requests` followed by `PING` on a fresh connection to `addr` and returns every byte
/// up to and including the `+PONG` (the replies before it never end in it).
async fn raw_replies(addr: &str, requests: &[Vec<String>]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut out = Vec::new();
    for request in requests {
        out.extend(encode_command(request));
    }
    out.extend(encode_command(&["PING"]));
    stream.write_all(&out).await.expect("write");
    let mut buf = Vec::new();
    while !buf.ends_with(b"+PONG\r\n") {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .expect("the replies in time")
            .expect("read");
        assert!(n > 0, "connection closed after {} bytes", buf.len());
        buf.extend_from_slice(&chunk[..n]);
    }
    buf
}

/// The deep request: the array or map script, `depth` levels.
fn nested(script: &str, depth: usize) -> Vec<String> {
    vec![
        "EVAL".into(),
        script.into(),
        "1".into(),
        format!("{TAG}evals"),
        depth.to_string(),
    ]
}

/// `HELLO 3`, so the map script's reply comes as RESP3 maps.
fn hello3() -> Vec<String> {
    vec!["HELLO".into(), "3".into()]
}

/// Clients sending pipelines of writes on the deep replies' slot until stopped; every reply
/// must be the expected one.
struct Pipelines {
    stop: Arc<AtomicBool>,
    batches: Arc<AtomicU64>,
    tasks: JoinSet<Vec<String>>,
}

impl Pipelines {
    async fn start(cluster: &TestCluster, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let batches = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for c in 0..clients {
            let (stop, batches) = (Arc::clone(&stop), Arc::clone(&batches));
            let mut client = cluster.client().await;
            tasks.spawn(async move {
                let mut wrong = Vec::new();
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let mut commands = Vec::new();
                    for k in 0..25 {
                        commands.push(vec![
                            "SET".to_owned(),
                            format!("{TAG}c{c}:{k}"),
                            round.to_string(),
                        ]);
                        commands.push(vec!["INCR".to_owned(), format!("{TAG}n{c}")]);
                    }
                    let replies = client.pipeline(&commands).await;
                    for (command, reply) in commands.iter().zip(&replies) {
                        let expected = match command[0].as_str() {
                            "SET" => matches!(reply, Reply::Status(s) if s == "OK"),
                            _ => matches!(reply, Reply::Int(_)),
                        };
                        if !expected {
                            wrong.push(format!("{command:?}: {reply:?}"));
                        }
                    }
                    round += 1;
                    batches.fetch_add(1, Ordering::Relaxed);
                }
                wrong
            });
        }
        Self {
            stop,
            batches,
            tasks,
        }
    }

    /// Stops the clients; every unexpected reply they saw.
    async fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        let mut wrong = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            wrong.extend(done.expect("a pipelining client"));
        }
        wrong
    }
}

/// The pipelines went on after the deep replies and saw no error, every script ran (`evals`
/// of them), no replica was marked stale (by the topology and by INFO `# Mirror`), and each
/// replica holds its master's data.
async fn assert_nothing_else_failed(cluster: &TestCluster, load: Pipelines, evals: u32) {
    wait_for_progress(&load.batches, 20, "pipelines after the deep replies").await;
    let wrong = load.finish().await;
    assert!(wrong.is_empty(), "pipelined clients saw: {wrong:?}");
    let mut client = cluster.client().await;
    assert_eq!(
        client.cmd(&["GET", &format!("{TAG}evals")]).await,
        Reply::bulk(&evals.to_string())
    );
    let Reply::Bulk(Some(info)) = client.cmd(&["INFO", "mirror"]).await else {
        panic!("INFO mirror");
    };
    let info = String::from_utf8_lossy(&info).into_owned();
    assert!(info.contains("replicas_marked_stale:0\r\n"), "{info}");
    assert!(info.contains("resyncs_completed:0\r\n"), "{info}");
    assert!(info.contains(",state=in_sync,"), "{info}");
    for shard in &cluster.topology().shards {
        for replica in &shard.replicas {
            assert_eq!(replica.state, ReplicaState::InSync, "{}", replica.addr);
        }
    }
    assert_replicas_equal(cluster).await;
}

/// A shortened view of a reply stream for assertion messages.
fn shown(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() > 200 {
        format!(
            "{}...{} ({} bytes)",
            &text[..100],
            &text[text.len() - 100..],
            bytes.len()
        )
    } else {
        text.into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deepest_lua_reply_reaches_its_client_and_the_lane_keeps_serving() {
    // What plain Redis answers, byte for byte: the deepest array reply it can produce, one
    // deeper request cut at its limit, and the deepest map reply.
    let plain = RedisServer::start();
    let requests = [
        vec![nested(NESTED, 7_995)],
        vec![nested(NESTED, 8_000)],
        vec![hello3(), nested(NESTED_MAPS, 3_000)],
    ];
    let mut expected = Vec::new();
    for request in &requests {
        expected.push(raw_replies(&plain.addr(), request).await);
    }
    assert!(expected[0].starts_with(&b"*1\r\n".repeat(7_995)));
    assert!(expected[1].ends_with(b"-ERR reached lua stack limit\r\n+PONG\r\n"));
    assert!(expected[2].windows(4).filter(|w| w == b"%1\r\n").count() > 2_000);

    let cluster = TestCluster::start_with(1, true, PROXY_MIRRORING, DEBUG).await;
    cluster.wait_probes_up().await;
    let load = Pipelines::start(&cluster, 4).await;
    wait_for_progress(&load.batches, 20, "pipelines before the deep replies").await;
    let proxy = cluster.addr.to_string();
    for round in 0..3 {
        for (request, expected) in requests.iter().zip(&expected) {
            let got = raw_replies(&proxy, request).await;
            // HELLO's reply is the proxy's own: compare from the deep reply on.
            let (got_tail, expected_tail) = if request.len() == 2 {
                let deep = &expected[hello_len(expected)..];
                (&got[got.len().saturating_sub(deep.len())..], deep)
            } else {
                (&got[..], &expected[..])
            };
            assert!(
                got_tail == expected_tail,
                "round {round}, {}: got {}, Redis sends {}",
                request.last().map_or("", |r| r[4].as_str()),
                shown(got_tail),
                shown(expected_tail)
            );
        }
    }
    assert_nothing_else_failed(&cluster, load, 9).await;
}

/// Length of a plain Redis's `HELLO 3` reply at the front of `replies` (a map whose last
/// entry is `modules` with an empty array).
fn hello_len(replies: &[u8]) -> usize {
    let marker = b"$7\r\nmodules\r\n*0\r\n";
    replies
        .windows(marker.len())
        .position(|w| w == marker)
        .map(|at| at + marker.len())
        .expect("a HELLO 3 reply")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_deeper_than_the_limit_fails_only_its_own_request() {
    let cluster = TestCluster::start_with(
        1,
        true,
        &format!("{PROXY_MIRRORING}[limits]\nmax_reply_depth = 1000\n"),
        DEBUG,
    )
    .await;
    cluster.wait_probes_up().await;
    let load = Pipelines::start(&cluster, 4).await;
    wait_for_progress(&load.batches, 20, "pipelines before the deep replies").await;
    let proxy = cluster.addr.to_string();
    let refused: &[u8] =
        b"-ERR reply nested deeper than 1000 levels refused by the proxy (limits.max_reply_depth)\r\n";
    for _ in 0..3 {
        let got = raw_replies(&proxy, &[nested(NESTED, 1_000), nested(NESTED, 1_001)]).await;
        let mut expected = b"*1\r\n".repeat(1_000);
        expected.extend_from_slice(b"*0\r\n");
        expected.extend_from_slice(refused);
        expected.extend_from_slice(b"+PONG\r\n");
        assert!(got == expected, "got {}", shown(&got));
    }
    // The refused scripts ran too (on the master and, mirrored, on the replica).
    assert_nothing_else_failed(&cluster, load, 6).await;
}
