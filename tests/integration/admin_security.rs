//! Who may drive the admin port, and what a stranger can cost it: the owner-only socket, TCP
//! only with a password, unauthenticated connections bounded in number, time and input, and
//! backend credentials sent only to nodes the configuration trusts.

use std::io::{Read, Write};
use std::net::TcpListener as StdListener;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redshard_config::Config;
use redshard_proxy::{Proxy, StartError};
use redshard_tests::cluster::config_text;
use redshard_tests::{Client, RedisServer, Reply, TestCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::admin::error_text;

/// A configuration with one shard on `master` and `extra`, no HTTP endpoint.
fn config(master: &RedisServer, extra: &str) -> Config {
    let text = config_text(
        &[master.addr()],
        &[],
        &format!("metrics_listen = \"off\"\n{extra}"),
    );
    Config::from_toml_str(&text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_socket_is_owner_only_and_needs_no_password() {
    let master = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run").join("admin.sock");
    let extra = format!(
        "admin_socket = \"{}\"\npassword = \"client-pw\"\n",
        path.display()
    );
    let proxy = Proxy::start(config(&master, &extra)).await.unwrap();
    assert_eq!(proxy.admin_addr(), None, "no TCP admin port by default");
    assert_eq!(proxy.admin_socket(), Some(path.as_path()));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode(&path),
        0o600,
        "only the proxy's user may open the socket"
    );
    assert_eq!(
        mode(path.parent().unwrap()),
        0o700,
        "the directory it created"
    );

    let mut admin = Client::over(UnixStream::connect(&path).await.unwrap());
    let topology = admin.cmd(&["TOPOLOGY"]).await;
    assert_eq!(*topology.field("epoch"), Reply::Int(1), "{topology:?}");

    // A second proxy cannot take the socket of a running one.
    let second = Proxy::start(config(&master, &extra)).await;
    assert!(
        matches!(&second, Err(StartError::AdminSocket(e)) if e.to_string().contains("another process is listening")),
        "{second:?}"
    );
    proxy.shutdown(Duration::from_secs(2)).await;
    assert!(!path.exists(), "the socket goes with the proxy");

    // In a shared directory, the default path's directory must be private to the proxy.
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = redshard_proxy::admin::bind_unix(&shared.join("admin.sock"), true);
    let message = refused
        .expect_err("an open directory is refused")
        .to_string();
    assert!(message.contains("has mode 777"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_admin_needs_a_password() {
    let master = RedisServer::start();
    // A configuration file cannot say it ...
    let text = config_text(
        &[master.addr()],
        &[],
        "password = \"client-pw\"\nadmin_listen = \"127.0.0.1:0\"",
    );
    let err = Config::from_toml_str(&text, "test.toml").unwrap_err();
    assert!(
        err.to_string().contains("admin_password: must be set"),
        "{err}"
    );
    // ... nor a configuration built in code.
    let mut config = config(&master, "admin_socket = \"off\"");
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let started = Proxy::start(config).await;
    assert!(
        matches!(started, Err(StartError::AdminWithoutPassword { .. })),
        "{started:?}"
    );
}

/// A cluster with an admin password and a short AUTH deadline, and its TCP admin port.
async fn guarded_cluster() -> (TestCluster, std::net::SocketAddr) {
    let extra = "admin_password = \"adm1n\"\n[limits]\nauth_timeout_ms = 300\n";
    let mut cluster = TestCluster::start_with(1, false, extra, &[]).await;
    let admin = cluster.start_admin().await;
    (cluster, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_strangers_do_not_lock_operators_out() {
    let (_cluster, admin) = guarded_cluster().await;
    let mut strangers = Vec::new();
    for _ in 0..100 {
        let mut stranger = TcpStream::connect(admin).await.unwrap();
        // Each one is really served (not left in the accept queue) before the next.
        stranger.write_all(b"PING\r\n").await.unwrap();
        let mut pong = [0u8; 7];
        stranger.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"+PONG\r\n");
        strangers.push(stranger);
    }
    let mut operator = Client::connect_addr(admin).await;
    assert!(operator.cmd(&["AUTH", "adm1n"]).await.is_ok());
    assert_eq!(
        *operator.cmd(&["TOPOLOGY"]).await.field("epoch"),
        Reply::Int(1)
    );

    // A stranger that stays unauthenticated is closed after auth_timeout_ms.
    let started = Instant::now();
    let mut idle = TcpStream::connect(admin).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_flood_is_cut_off() {
    let (_cluster, admin) = guarded_cluster().await;
    // The shape of an 8 MiB request: 8192 arguments of 1 KiB.
    let mut flood = b"*8192\r\n".to_vec();
    for _ in 0..8192 {
        flood.extend_from_slice(b"$1024\r\n");
        flood.extend_from_slice(&[b'x'; 1024]);
        flood.extend_from_slice(b"\r\n");
    }
    for (request, error) in [
        (
            flood.clone(),
            "-ERR Protocol error: unauthenticated multibulk length\r\n",
        ),
        (
            vec![b'x'; 8 << 20],
            "-ERR Protocol error: too big inline request\r\n",
        ),
    ] {
        let stream = TcpStream::connect(admin).await.unwrap();
        let (mut rx, mut tx) = stream.into_split();
        // The proxy stops reading long before the end: write from the side.
        let writer = tokio::spawn(async move {
            let _ = tx.write_all(&request).await;
            tx
        });
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), async {
            let mut chunk = [0u8; 256];
            loop {
                match rx.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => answer.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "the connection is closed, not left open");
        assert_eq!(String::from_utf8_lossy(&answer), error);
        writer.abort();
    }
    // An operator is still served.
    let mut operator = Client::connect_addr(admin).await;
    assert!(operator.cmd(&["AUTH", "adm1n"]).await.is_ok());
}

/// A fake node on a free loopback port: answers every request with `answer` (nothing when
/// `None`) and keeps every byte it receives.
struct FakeNode {
    addr: String,
    received: Arc<Mutex<Vec<u8>>>,
}

impl FakeNode {
    fn start(answer: Option<&'static [u8]>) -> Self {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let received = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&received);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let kept = Arc::clone(&kept);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = stream.read(&mut buf) {
                        if n == 0 {
                            return;
                        }
                        kept.lock().unwrap().extend_from_slice(&buf[..n]);
                        if let Some(answer) = answer {
                            if stream.write_all(answer).is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        Self { addr, received }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_credentials_go_only_to_trusted_redis_nodes() {
    // A fake that imitates Redis perfectly before AUTH, not in the configuration.
    let imitator = FakeNode::start(Some(b"-NOAUTH Authentication required.\r\n"));
    // Allowed by address, but not a Redis server.
    let garbler = FakeNode::start(Some(b"HTTP/1.1 400 Bad Request\r\n\r\n"));
    let spare = RedisServer::start_with(&["--requirepass", "backend-pw"]);
    let extra = format!(
        "admin_password = \"adm1n\"\n[backend]\npassword = \"backend-pw\"\nallowed_nodes = [\"{}\", \"{}\"]\n",
        garbler.addr,
        spare.addr()
    );
    let mut cluster =
        TestCluster::start_with(1, false, &extra, &["--requirepass", "backend-pw"]).await;
    let admin = cluster.start_admin().await;
    let mut a = Client::connect_addr(admin).await;
    assert!(a.cmd(&["AUTH", "adm1n"]).await.is_ok());

    for command in [
        ["ADDSHARD", "evil", imitator.addr.as_str()],
        ["ADDREPLICA", "s1", imitator.addr.as_str()],
    ] {
        let reply = a.cmd(&command).await;
        assert!(
            error_text(&reply).contains("not a node the configuration trusts"),
            "{command:?}: {reply:?}"
        );
    }
    for command in [
        ["ADDSHARD", "evil", garbler.addr.as_str()],
        ["ADDREPLICA", "s1", garbler.addr.as_str()],
    ] {
        let reply = a.cmd(&command).await;
        assert!(
            error_text(&reply).contains("does not answer like a Redis server"),
            "{command:?}: {reply:?}"
        );
    }
    assert_eq!(imitator.received(), "", "never even contacted");
    assert!(!garbler.received().is_empty(), "the garbler was asked");
    assert!(
        !garbler.received().contains("backend-pw"),
        "{}",
        garbler.received()
    );
    // A real, allowed node is added as before.
    let added = a.cmd(&["ADDSHARD", "s2", &spare.addr()]).await;
    assert!(!matches!(added, Reply::Error(_)), "{added:?}");
    assert_eq!(cluster.topology().shards.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addreplica_refuses_a_node_that_is_silent_or_not_redis() {
    let silent = FakeNode::start(None);
    let garbler = FakeNode::start(Some(b"hello there\r\n"));
    let mut cluster = TestCluster::start(1).await;
    let admin = cluster.start_admin().await;
    let mut a = Client::connect_addr(admin).await;
    let reply = a.cmd(&["ADDREPLICA", "s1", &silent.addr]).await;
    assert!(
        error_text(&reply).contains("does not answer the proxy"),
        "{reply:?}"
    );
    let reply = a.cmd(&["ADDREPLICA", "s1", &garbler.addr]).await;
    assert!(
        error_text(&reply).contains("does not answer like a Redis server"),
        "{reply:?}"
    );
    let topology = cluster.topology();
    assert!(topology.shards[0].replicas.is_empty(), "{topology:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_admin_password_guesses_from_one_address_are_slowed_together() {
    const STEP_MS: u64 = 50;
    let extra =
        format!("admin_password = \"adm1n\"\n[limits]\nauth_failure_delay_ms = {STEP_MS}\n");
    let mut cluster = TestCluster::start_with(1, false, &extra, &[]).await;
    let admin = cluster.start_admin().await;
    let wrongpass =
        Reply::Error("WRONGPASS invalid username-password pair or user is disabled.".into());
    let mut first = Client::connect_addr(admin).await;
    assert_eq!(first.cmd(&["AUTH", "guess-0"]).await, wrongpass);
    // Ten guesses at once, each on its own connection: one connection's own delay would
    // answer them all after one step; the address's turns answer them a step apart or more.
    let mut guessers = Vec::new();
    for _ in 0..10 {
        guessers.push(Client::connect_addr(admin).await);
    }
    let started = Instant::now();
    for (i, c) in guessers.iter_mut().enumerate() {
        c.send_raw(&redshard_tests::client::encode_command(&[
            "AUTH",
            &format!("guess-{}", i + 1),
        ]))
        .await;
    }
    for c in &mut guessers {
        assert_eq!(c.read().await, wrongpass);
    }
    let span = started.elapsed();
    assert!(
        span >= Duration::from_millis(9 * STEP_MS),
        "ten parallel guesses took only {span:?}"
    );
    // The right password still logs in (after its turn).
    let mut operator = Client::connect_addr(admin).await;
    assert!(operator.cmd(&["AUTH", "adm1n"]).await.is_ok());
    assert_eq!(
        *operator.cmd(&["TOPOLOGY"]).await.field("epoch"),
        Reply::Int(1)
    );
}
