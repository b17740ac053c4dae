//! Idle plaintext clients park (`[limits] idle_park_ms`): their session's memory is freed
//! while the connection, the client's CLIENT LIST entry, its place under `max_clients` and its
//! settings stay; the next request finds everything as it was.

use std::time::{Duration, Instant};

use redshard_tests::{Client, Reply, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` and reads until the reply ends with `end` (or fails after 5 s).
async fn exchange(stream: &mut TcpStream, request: &[u8], end: &[u8]) -> Vec<u8> {
    stream.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    while !got.ends_with(end) {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no reply ending in {:?}: {:?}",
                    String::from_utf8_lossy(end),
                    String::from_utf8_lossy(&got)
                )
            })
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// A number of INFO clients, asked through `client` (of the proxy or of a node).
async fn clients_field(client: &mut Client, name: &str) -> u64 {
    client
        .info_field("clients", name)
        .await
        .unwrap_or_else(|| panic!("no {name} in INFO clients"))
        .parse()
        .unwrap()
}

/// Polls INFO clients until `name` is `want` (within 5 s).
async fn wait_for_field(observer: &mut Client, name: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = clients_field(observer, name).await;
        if value == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} stayed {value}, not {want}"
        );
        // Polling interval of this wait loop, not synchronisation.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_parks_and_comes_back_as_it_was() {
    let cluster = TestCluster::start_with(
        2,
        false,
        "password = \"pw\"\n[limits]\nidle_park_ms = 50\n",
        &[],
    )
    .await;
    let mut observer = cluster.client().await;
    assert!(observer.cmd(&["AUTH", "pw"]).await.is_ok());
    let mut idler = TcpStream::connect(cluster.addr).await.unwrap();
    exchange(&mut idler, b"AUTH pw\r\n", b"+OK\r\n").await;
    // HELLO 3's map, then PING's reply marks the end.
    exchange(&mut idler, b"HELLO 3\r\nPING\r\n", b"+PONG\r\n").await;
    exchange(&mut idler, b"CLIENT SETNAME idler\r\n", b"+OK\r\n").await;
    let id = exchange(&mut idler, b"CLIENT ID\r\n", b"\r\n").await;

    wait_for_field(&mut observer, "parked_clients", 1).await;
    assert_eq!(clients_field(&mut observer, "connected_clients").await, 2);

    // Same connection, same client, same protocol (RESP3's null), still authenticated.
    assert_eq!(
        exchange(&mut idler, b"GET nokey\r\n", b"\r\n").await,
        b"_\r\n"
    );
    assert_eq!(exchange(&mut idler, b"CLIENT ID\r\n", b"\r\n").await, id);
    assert_eq!(
        exchange(&mut idler, b"CLIENT GETNAME\r\n", b"idler\r\n").await,
        b"$5\r\nidler\r\n"
    );
    assert_eq!(
        exchange(&mut idler, b"SET parked v\r\n", b"\r\n").await,
        b"+OK\r\n"
    );
    // And it parks again once idle: no single use.
    wait_for_field(&mut observer, "parked_clients", 1).await;
    assert_eq!(
        exchange(&mut idler, b"GET parked\r\n", b"v\r\n").await,
        b"$1\r\nv\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_client_that_leaves_frees_its_place_and_shutdown_closes_parked_clients() {
    let mut cluster = TestCluster::start_with(
        1,
        false,
        "[limits]\nidle_park_ms = 50\nmax_clients = 3\n",
        &[],
    )
    .await;
    let mut observer = cluster.client().await;
    let mut leaving = TcpStream::connect(cluster.addr).await.unwrap();
    let mut staying = TcpStream::connect(cluster.addr).await.unwrap();
    exchange(&mut leaving, b"PING\r\n", b"+PONG\r\n").await;
    exchange(&mut staying, b"PING\r\n", b"+PONG\r\n").await;
    wait_for_field(&mut observer, "parked_clients", 2).await;

    // Leaving while parked: gone from the list, its place under max_clients free again.
    drop(leaving);
    wait_for_field(&mut observer, "connected_clients", 2).await;
    assert_eq!(clients_field(&mut observer, "parked_clients").await, 1);
    let mut third = TcpStream::connect(cluster.addr).await.unwrap();
    exchange(&mut third, b"PING\r\n", b"+PONG\r\n").await;
    drop(third);

    // Shutdown wakes the parked client's task: the connection ends cleanly, promptly.
    let started = Instant::now();
    assert!(
        cluster.stop_proxy(Duration::from_secs(5)).await,
        "drained within the grace period"
    );
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), staying.read(&mut buf))
        .await
        .expect("the parked client's connection ends");
    assert_eq!(read.unwrap(), 0, "a clean end of stream");
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// How many of the node's connections last ran `EXEC` (`cmd=exec` in its CLIENT LIST): the
/// private connection of a client that ran a WATCHed transaction, whatever else (lanes,
/// probes, connections opened ahead of need) the proxy holds meanwhile.
async fn exec_connections(node: &mut Client) -> usize {
    let list = node.cmd(&["CLIENT", "LIST"]).await.text();
    list.lines().filter(|l| l.contains(" cmd=exec ")).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parking_closes_the_private_backend_connection_and_the_next_transaction_opens_one() {
    let cluster = TestCluster::start_with(1, false, "[limits]\nidle_park_ms = 50\n", &[]).await;
    let mut observer = cluster.client().await;
    let mut master = cluster.master(0).await;
    let mut c = cluster.client().await;
    // WATCH runs on a connection of the client's own (a transaction without one goes over
    // the shared lanes in one batch).
    assert_eq!(c.cmd(&["WATCH", "tx"]).await, Reply::Status("OK".into()));
    assert_eq!(c.cmd(&["MULTI"]).await, Reply::Status("OK".into()));
    assert_eq!(c.cmd(&["INCR", "tx"]).await, Reply::Status("QUEUED".into()));
    assert_eq!(c.cmd(&["EXEC"]).await, Reply::Array(vec![Reply::Int(1)]));
    // The client keeps that connection after EXEC (unless it parked already: 50 ms)...
    let parked = clients_field(&mut observer, "parked_clients").await;
    assert!(
        exec_connections(&mut master).await == 1 || parked == 1,
        "the private connection is there until the client parks"
    );
    // ...until it parks: the private connection is closed.
    wait_for_field(&mut observer, "parked_clients", 1).await;
    redshard_tests::wait_until(
        Duration::from_secs(5),
        "the private connection to close",
        || async {
            exec_connections(&mut Client::connect(cluster.masters[0].addr()).await).await == 0
        },
    )
    .await;
    // The next transaction opens one again; WATCH works on it.
    assert_eq!(c.cmd(&["WATCH", "tx"]).await, Reply::Status("OK".into()));
    assert_eq!(c.cmd(&["MULTI"]).await, Reply::Status("OK".into()));
    assert_eq!(c.cmd(&["INCR", "tx"]).await, Reply::Status("QUEUED".into()));
    assert_eq!(c.cmd(&["EXEC"]).await, Reply::Array(vec![Reply::Int(2)]));
}

/// A crowd in the park room: 200 clients park; 100 of them send at once, each with a request
/// already waiting when it is handed back, and all get their own answer; the others stay
/// parked, and shutdown ends every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crowd_of_parked_clients_comes_back_at_once_and_shutdown_closes_the_rest() {
    const CLIENTS: usize = 200;
    let mut cluster = TestCluster::start_with(1, false, "[limits]\nidle_park_ms = 50\n", &[]).await;
    let mut observer = cluster.client().await;
    let mut crowd = Vec::new();
    for i in 0..CLIENTS {
        let mut stream = TcpStream::connect(cluster.addr).await.unwrap();
        let set = format!("SET crowd:{i} v{i}\r\n");
        exchange(&mut stream, set.as_bytes(), b"+OK\r\n").await;
        crowd.push(stream);
    }
    wait_for_field(&mut observer, "parked_clients", CLIENTS as u64).await;

    // Every other client sends at the same moment; the answers are checked afterwards.
    for (i, stream) in crowd.iter_mut().enumerate().step_by(2) {
        stream
            .write_all(format!("GET crowd:{i}\r\n").as_bytes())
            .await
            .unwrap();
    }
    for (i, stream) in crowd.iter_mut().enumerate().step_by(2) {
        let want = format!("v{i}");
        let reply = exchange(stream, b"", format!("{want}\r\n").as_bytes()).await;
        assert_eq!(reply, format!("${}\r\n{want}\r\n", want.len()).into_bytes());
    }
    // They park again; nobody was lost on the way.
    wait_for_field(&mut observer, "parked_clients", CLIENTS as u64).await;
    assert_eq!(
        clients_field(&mut observer, "connected_clients").await,
        CLIENTS as u64 + 1
    );

    assert!(
        cluster.stop_proxy(Duration::from_secs(5)).await,
        "every parked client drained within the grace period"
    );
    for stream in &mut crowd {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf))
            .await
            .expect("a parked client's connection ends at shutdown");
        assert_eq!(read.unwrap(), 0, "a clean end of stream");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_kill_closes_a_parked_client() {
    let cluster = TestCluster::start_with(1, false, "[limits]\nidle_park_ms = 50\n", &[]).await;
    let mut observer = cluster.client().await;
    let mut parked = TcpStream::connect(cluster.addr).await.unwrap();
    let id = exchange(&mut parked, b"CLIENT ID\r\n", b"\r\n").await;
    let id = String::from_utf8_lossy(&id[1..id.len() - 2]).into_owned();
    wait_for_field(&mut observer, "parked_clients", 1).await;
    assert_eq!(
        observer.cmd(&["CLIENT", "KILL", "ID", &id]).await,
        Reply::Int(1)
    );
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), parked.read(&mut buf))
        .await
        .expect("closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    wait_for_field(&mut observer, "parked_clients", 0).await;
    assert_eq!(clients_field(&mut observer, "connected_clients").await, 1);
}
