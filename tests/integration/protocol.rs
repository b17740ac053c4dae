//! Malformed input gets Redis's errors and a closed connection; limits hold; inline commands;
//! a pipeline's replies leave together.

use redshard_config::Config;
use redshard_tests::cluster::{config_text, key_on, start_proxy};
use redshard_tests::{Client, RedisServer, Reply, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_are_reported_then_the_connection_closes() {
    let cluster = TestCluster::start(1).await;
    for (input, error) in [
        (
            &b"*1\r\n+PING\r\n"[..],
            "ERR Protocol error: expected '$', got '+'",
        ),
        (b"*abc\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
        (
            b"*2000000\r\n",
            "ERR Protocol error: invalid multibulk length",
        ),
        (
            b"*1\r\n$600000000\r\n",
            "ERR Protocol error: invalid bulk length",
        ),
        (
            b"SET \"unbalanced\r\n",
            "ERR Protocol error: unbalanced quotes in request",
        ),
    ] {
        let mut c = cluster.client().await;
        // A good request first: its reply must still arrive, in order.
        c.send_raw(b"PING\r\n").await;
        c.send_raw(input).await;
        assert_eq!(c.read().await, Reply::Status("PONG".into()));
        assert_eq!(c.read().await, Reply::Error(error.into()), "for {input:?}");
        assert_eq!(
            c.try_read().await,
            None,
            "connection closes after {input:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_come_from_the_config() {
    let server = RedisServer::start();
    let text = config_text(
        &[server.addr()],
        &[],
        "[limits]\nmax_bulk_bytes = 1024\nmax_multibulk_len = 8\nmax_inline_bytes = 64\n",
    );
    let proxy = start_proxy(Config::from_toml_str(&text, "t.toml").unwrap()).await;
    let addr = proxy.local_addr();

    let mut c = Client::connect_addr(addr).await;
    let value = "x".repeat(1024);
    assert!(
        c.cmd(&["SET", "k", &value]).await.is_ok(),
        "a bulk at the limit is fine"
    );
    c.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1025\r\n").await;
    assert_eq!(
        c.read().await,
        Reply::Error("ERR Protocol error: invalid bulk length".into())
    );

    let mut c = Client::connect_addr(addr).await;
    c.send_raw(b"*9\r\n").await;
    assert_eq!(
        c.read().await,
        Reply::Error("ERR Protocol error: invalid multibulk length".into())
    );

    let mut c = Client::connect_addr(addr).await;
    c.send_raw(&[b'A'; 100]).await;
    assert_eq!(
        c.read().await,
        Reply::Error("ERR Protocol error: too big inline request".into())
    );
    assert_eq!(c.try_read().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_commands_work_like_redis() {
    let cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    c.send_raw(b"SET inline \"hello world\"\r\nGET inline\r\n\r\nPING\nEXISTS inline nope\r\n")
        .await;
    assert_eq!(c.read().await, Reply::Status("OK".into()));
    assert_eq!(c.read().await, Reply::bulk("hello world"));
    assert_eq!(c.read().await, Reply::Status("PONG".into()));
    assert_eq!(c.read().await, Reply::Int(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_split_at_every_byte_are_reassembled() {
    let cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    let value = "v".repeat(5000);
    let request = redshard_tests::client::encode_command(&["SET", "slow", value.as_str()]);
    for chunk in request.chunks(7) {
        c.send_raw(chunk).await;
        tokio::task::yield_now().await;
    }
    assert!(c.read().await.is_ok());
    assert_eq!(c.cmd(&["STRLEN", "slow"]).await, Reply::Int(5000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_round_trip() {
    let cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    let big: String = (0..4 * 1024 * 1024)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    assert!(c.cmd(&["SET", "big", &big]).await.is_ok());
    assert_eq!(c.cmd(&["GET", "big"]).await, Reply::bulk(&big));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_over_max_clients_are_refused_like_redis() {
    let server = RedisServer::start();
    let text = config_text(&[server.addr()], &[], "[limits]\nmax_clients = 2\n");
    let proxy = start_proxy(Config::from_toml_str(&text, "t.toml").unwrap()).await;
    let mut a = Client::connect_addr(proxy.local_addr()).await;
    let mut b = Client::connect_addr(proxy.local_addr()).await;
    assert_eq!(a.cmd(&["PING"]).await, Reply::Status("PONG".into()));
    assert_eq!(b.cmd(&["PING"]).await, Reply::Status("PONG".into()));
    let mut c = Client::connect_addr(proxy.local_addr()).await;
    assert_eq!(
        c.read().await,
        Reply::Error("ERR max number of clients reached".into())
    );
    assert_eq!(c.try_read().await, None);
    // A slot frees up when a client leaves.
    drop(a);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let mut d = Client::connect_addr(proxy.local_addr()).await;
        d.send_raw(b"PING\r\n").await;
        match d.read().await {
            Reply::Status(s) if s == "PONG" => break,
            other => assert!(
                std::time::Instant::now() < deadline,
                "still refused: {other:?}"
            ),
        }
        // Polling interval of this wait loop, not synchronisation.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let info = b.cmd(&["INFO", "stats"]).await.text();
    let rejected: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("rejected_connections:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rejected_connections in {info}"));
    assert!(rejected >= 1, "{info}");
}

/// Client bytes that an error echoes (CR and LF here) stay on the error line, as Redis maps
/// them to spaces: the reply is Redis's own, byte for byte, and the stream stays in step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoed_client_bytes_stay_on_the_error_line() {
    let cluster = TestCluster::start(1).await;
    let mut proxy = cluster.client().await;
    let mut redis = Client::connect(cluster.masters[0].addr()).await;
    for (args, line) in [
        (
            vec!["CLIENT", "LIST", "TYPE", "a\r\nb"],
            "-ERR Unknown client type 'a  b'\r\n",
        ),
        (
            vec!["HELLO", "2", "SET\nNAME"],
            "-ERR Syntax error in HELLO option 'SET NAME'\r\n",
        ),
    ] {
        let from_proxy = proxy.cmd_resp3(&args).await;
        assert_eq!(String::from_utf8_lossy(&from_proxy), line, "{args:?}");
        let from_redis = redis.cmd_resp3(&args).await;
        assert_eq!(
            from_proxy, from_redis,
            "{args:?}: the proxy answers as Redis"
        );
        assert_eq!(proxy.cmd(&["PING"]).await, Reply::Status("PONG".into()));
    }
}

/// A pipeline's replies come from several nodes at different moments; like Redis, which writes
/// them after running what it read, the proxy writes them together once all are in: here the
/// fast `GET` on one shard waits for a slow script on the other. With `coalesce_replies =
/// false`, the `GET`'s reply leaves at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipeline_s_replies_leave_together_unless_coalescing_is_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Busy for half a second on its node.
    let slow = "local t = redis.call('TIME') local start = t[1] * 1000000 + t[2] \
                repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 500000 \
                return 7";
    let fast_key = key_on(2, 0, "fast");
    let slow_key = key_on(2, 1, "slow");
    let pipeline = format!(
        "*2\r\n$3\r\nGET\r\n${}\r\n{fast_key}\r\n\
         *4\r\n$4\r\nEVAL\r\n${}\r\n{slow}\r\n$1\r\n1\r\n${}\r\n{slow_key}\r\n",
        fast_key.len(),
        slow.len(),
        slow_key.len()
    );
    for coalesce in [true, false] {
        let extra = format!("[limits]\ncoalesce_replies = {coalesce}\n");
        let cluster = TestCluster::start_with(2, false, &extra, &[]).await;
        let mut socket = tokio::net::TcpStream::connect(cluster.addr).await.unwrap();
        socket.write_all(pipeline.as_bytes()).await.unwrap();
        let mut first = vec![0_u8; 64];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut first))
            .await
            .expect("a reply within 10 s")
            .unwrap();
        let first = &first[..n];
        if coalesce {
            assert_eq!(first, b"$-1\r\n:7\r\n", "both replies in the first read");
        } else {
            assert_eq!(first, b"$-1\r\n", "the GET's reply before the script's");
            let mut rest = vec![0_u8; 64];
            let n =
                tokio::time::timeout(std::time::Duration::from_secs(10), socket.read(&mut rest))
                    .await
                    .expect("the script's reply within 10 s")
                    .unwrap();
            assert_eq!(&rest[..n], b":7\r\n");
        }
    }
}
