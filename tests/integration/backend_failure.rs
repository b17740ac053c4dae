//! A backend that dies, stalls or breaks mid-reply costs only the requests routed to it an
//! error; the proxy never hangs past the response timeout and reconnects on its own.

use std::time::{Duration, Instant};

use redshard_config::Config;
use redshard_tests::cluster::{config_text, key_on, start_proxy};
use redshard_tests::{Client, Reply, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A client that keeps sending while the proxy drains gets the reply of every command the
/// proxy ran, then a clean end of stream: the proxy closes its side after the last reply and
/// drops what the client still sends, instead of closing with unread input, which makes the
/// kernel reset the connection and the client lose replies still on their way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_a_client_that_keeps_sending_loses_no_replies() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    for round in 0..5 {
        let mut cluster = TestCluster::start(1).await;
        let stream = tokio::net::TcpStream::connect(cluster.addr).await.unwrap();
        let (mut rd, mut wr) = stream.into_split();
        let ended = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicUsize::new(0));
        let writer = tokio::spawn({
            let ended = Arc::clone(&ended);
            async move {
                let batch = b"*2\r\n$4\r\nINCR\r\n$1\r\nn\r\n".repeat(20);
                // Like a client library: sends until it sees the connection end.
                while !ended.load(Ordering::Acquire) && wr.write_all(&batch).await.is_ok() {
                    // Paces this client's writes (the scenario), not synchronisation.
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
        });
        let reader = tokio::spawn({
            let ended = Arc::clone(&ended);
            let received = Arc::clone(&received);
            async move {
                let mut all = Vec::new();
                let mut buf = vec![0u8; 64 * 1024];
                let end = loop {
                    match rd.read(&mut buf).await {
                        Ok(0) => break Ok(()),
                        Ok(n) => {
                            all.extend_from_slice(&buf[..n]);
                            let lines = all.iter().filter(|&&b| b == b'\n').count();
                            received.store(lines, Ordering::Release);
                        }
                        Err(e) => break Err(e),
                    }
                };
                ended.store(true, Ordering::Release);
                (all, end)
            }
        });
        while received.load(Ordering::Acquire) < 300 {
            // Polling interval of this wait loop, not synchronisation.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            cluster.stop_proxy(Duration::from_secs(5)).await,
            "drained within the grace period"
        );
        let (all, end) = reader.await.unwrap();
        writer.await.unwrap();
        assert!(
            end.is_ok(),
            "round {round}: the connection must end cleanly, not {end:?}"
        );
        let text = String::from_utf8(all).unwrap();
        let replies: Vec<&str> = text.split_terminator("\r\n").collect();
        for (i, reply) in replies.iter().enumerate() {
            assert_eq!(*reply, format!(":{}", i + 1), "round {round}: reply {i}");
        }
        let applied = cluster.master(0).await.cmd(&["GET", "n"]).await;
        assert_eq!(
            applied,
            Reply::bulk(&replies.len().to_string()),
            "round {round}: replies delivered = increments applied"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_fails_only_its_requests_and_comes_back() {
    let mut cluster =
        TestCluster::start_with(3, false, "[backend]\nreconnect_backoff_max_ms = 200\n", &[]).await;
    let mut c = cluster.client().await;
    let keys: Vec<String> = (0..3).map(|s| key_on(3, s, "kill")).collect();
    for k in &keys {
        assert!(c.cmd(&["SET", k, "before"]).await.is_ok());
    }
    // Pipeline a lot, kill master 1 in the middle.
    let commands: Vec<Vec<String>> = (0..3000)
        .map(|i| vec!["GET".to_string(), keys[i % 3].clone()])
        .collect();
    let mut bytes = Vec::new();
    for cmd in &commands {
        bytes.extend(redshard_tests::client::encode_command(cmd));
    }
    c.send_raw(&bytes[..bytes.len() / 2]).await;
    cluster.masters[1].kill();
    c.send_raw(&bytes[bytes.len() / 2..]).await;
    let started = Instant::now();
    let mut errors = 0;
    for (i, _) in commands.iter().enumerate() {
        match c.read().await {
            Reply::Bulk(Some(v)) => assert_eq!(v, b"before"),
            Reply::Error(e) => {
                assert_eq!(i % 3, 1, "only shard 1's requests may fail: {e}");
                // The lane's error, or, once the probes have called the shard down (a slow
                // machine reads the replies that late), the gate's.
                assert!(
                    e.starts_with("ERR backend 127.0.0.1:")
                        || e.starts_with("CLUSTERDOWN The cluster is down: shard s2 "),
                    "{e}"
                );
                errors += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(errors > 0, "requests after the kill must fail");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no hang: {:?}",
        started.elapsed()
    );
    // Other shards keep working meanwhile.
    assert_eq!(c.cmd(&["GET", &keys[0]]).await, Reply::bulk("before"));
    // The master returns (empty: no persistence); the proxy reconnects by itself.
    cluster.masters[1].restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match c.cmd(&["SET", &keys[1], "after"]).await {
            r if r.is_ok() => break,
            Reply::Error(e) => assert!(Instant::now() < deadline, "never reconnected: {e}"),
            other => panic!("{other:?}"),
        }
        // Polling interval of this wait loop, not synchronisation.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.cmd(&["GET", &keys[1]]).await, Reply::bulk("after"));
}

/// A fake backend that answers the lane's handshake (`ACL SETUSER` and `AUTH` of the proxy's
/// users, the `SELECT`s of the databases check: `+OK`; `INFO server`: a `run_id`) like Redis, then misbehaves on every request as
/// `script` says.
async fn fake_backend(script: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut handshake = true;
                loop {
                    let n = match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    if buf[..n].starts_with(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n") {
                        handshake = false;
                        let _ = socket.write_all(b"$13\r\nrun_id:fake\r\n\r\n").await;
                        continue;
                    }
                    if handshake {
                        // One `+OK` per ACL SETUSER / AUTH / SELECT (a long SETUSER may
                        // arrive in several reads: only its first part starts a request;
                        // the two SELECTs of the databases check come in one), counted by
                        // their array headers (no argument of theirs starts a line with `*`).
                        let requests = buf[..n]
                            .split(|&b| b == b'\n')
                            .filter(|line| line.starts_with(b"*"))
                            .count();
                        for _ in 0..requests {
                            let _ = socket.write_all(b"+OK\r\n").await;
                        }
                        continue;
                    }
                    match script {
                        // Never answer.
                        "stall" => {}
                        // Half a reply, then close.
                        "half" => {
                            let _ = socket.write_all(b"$10\r\nabc").await;
                            return;
                        }
                        // Garbage that is not RESP.
                        _ => {
                            let _ = socket.write_all(b"?what\r\n").await;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn proxy_in_front_of(addr: String, extra: &str) -> redshard_proxy::Proxy {
    let text = config_text(&[addr], &[], extra);
    start_proxy(Config::from_toml_str(&text, "t.toml").unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_backend_times_out_instead_of_hanging() {
    let addr = fake_backend("stall").await;
    let proxy = proxy_in_front_of(addr.clone(), "[backend]\nresponse_timeout_ms = 300\n").await;
    let mut c = Client::connect_addr(proxy.local_addr()).await;
    let started = Instant::now();
    let replies = c
        .pipeline(&[vec!["GET", "a"], vec!["GET", "b"], vec!["PING"]])
        .await;
    let elapsed = started.elapsed();
    assert_eq!(
        replies[0],
        Reply::Error(format!("ERR backend {addr} timed out after 300 ms"))
    );
    assert_eq!(replies[1], replies[0]);
    assert_eq!(replies[2], Reply::Status("PONG".into()));
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_mid_reply_or_sending_garbage_costs_an_error() {
    for (script, want) in [
        ("half", "closed the connection"),
        ("garbage", "sent an invalid reply"),
    ] {
        let addr = fake_backend(script).await;
        let proxy = proxy_in_front_of(addr.clone(), "").await;
        let mut c = Client::connect_addr(proxy.local_addr()).await;
        let Reply::Error(e) = c.cmd(&["GET", "a"]).await else {
            panic!("{script}: expected an error")
        };
        assert!(
            e.starts_with(&format!("ERR backend {addr} ")) && e.contains(want),
            "{script}: {e}"
        );
        // The client connection itself stays usable.
        assert_eq!(c.cmd(&["PING"]).await, Reply::Status("PONG".into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_never_existed_fails_fast() {
    let port = redshard_tests::server::free_port();
    let proxy = proxy_in_front_of(format!("127.0.0.1:{port}"), "").await;
    let mut c = Client::connect_addr(proxy.local_addr()).await;
    let started = Instant::now();
    let Reply::Error(e) = c.cmd(&["SET", "a", "1"]).await else {
        panic!()
    };
    assert!(
        e.starts_with(&format!("ERR backend 127.0.0.1:{port} unavailable")),
        "{e}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_replies() {
    let mut cluster = TestCluster::start(2).await;
    let mut c = cluster.client().await;
    let commands: Vec<Vec<String>> = (0..2000)
        .map(|i| vec!["SET".to_string(), format!("g:{i}"), "v".into()])
        .collect();
    let mut bytes = Vec::new();
    for cmd in &commands {
        bytes.extend(redshard_tests::client::encode_command(cmd));
    }
    c.send_raw(&bytes).await;
    // Give the proxy a moment to read the pipeline, then drain.
    assert_eq!(c.read().await, Reply::Status("OK".into()));
    let addr = cluster.addr;
    assert!(
        cluster.stop_proxy(Duration::from_secs(5)).await,
        "drained within the grace period"
    );
    let mut ok = 1;
    while let Some(reply) = c.try_read().await {
        assert!(reply.is_ok(), "{reply:?}");
        ok += 1;
    }
    // Every request that reached a backend had its reply delivered before the close.
    let mut applied = 0;
    for i in 0..2 {
        let Reply::Int(n) = cluster.master(i).await.cmd(&["DBSIZE"]).await else {
            panic!()
        };
        applied += n;
    }
    assert_eq!(ok, applied, "replies delivered = writes applied");
    // New connections are refused once the proxy has stopped.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
