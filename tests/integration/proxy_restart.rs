//! The `redshard` binary killed with `kill -9` under write load, with proxy mirroring and a
//! topology file: the restarted proxy trusts no replica until it has resynchronised it; a
//! clean stop (SIGTERM) is remembered, and the next start resynchronises nothing.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redshard_tests::client::encode_command;
use redshard_tests::cluster::config_text;
use redshard_tests::reap;
use redshard_tests::replication::digest;
use redshard_tests::server::free_port;
use redshard_tests::{binary, wait_for_progress, wait_until, Client, RedisServer, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

use crate::mirror::DEBUG;

/// The proxy binary, run on `port` with a config file.
pub(crate) struct ProxyProcess {
    child: Child,
    port: u16,
    /// Its record, for the next run to kill it if this one is interrupted.
    _record: reap::Tracked,
}

impl ProxyProcess {
    /// Starts `redshard --config path` and waits until it listens on `port`.
    pub(crate) async fn start(config: &std::path::Path, port: u16) -> Self {
        let child = Command::new(binary("redshard"))
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redshard starts");
        let record = reap::track(&child, "redshard", None);
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "redshard did not listen");
            // Polling interval of this wait loop, not synchronisation.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            child,
            port,
            _record: record,
        }
    }

    pub(crate) async fn client(&self) -> Client {
        Client::connect(format!("127.0.0.1:{}", self.port)).await
    }

    /// `kill -9`, and the process reaped.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// SIGTERM; waits for a successful exit.
    pub(crate) async fn stop(mut self) {
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        let exit = loop {
            if let Some(exit) = self.child.try_wait().expect("try_wait") {
                break exit;
            }
            assert!(
                Instant::now() < deadline,
                "redshard did not exit on SIGTERM"
            );
            // Polling interval of this wait loop, not synchronisation.
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(exit.success(), "{exit:?}");
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy's INFO `# Mirror` text.
async fn mirror_info(client: &mut Client) -> String {
    match client.cmd(&["INFO", "mirror"]).await {
        Reply::Bulk(Some(text)) => String::from_utf8_lossy(&text).into_owned(),
        other => panic!("INFO mirror: {other:?}"),
    }
}

/// How many replica lines of `info` have state `state`.
fn replicas_in(info: &str, state: &str) -> usize {
    info.lines()
        .filter(|l| l.starts_with("replica") && l.contains(&format!(",state={state},")))
        .count()
}

/// The value of `field` in `info`.
fn field(info: &str, field: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in {info}"))
}

/// Raw clients writing pipelines of INCRs as fast as the proxy answers, until it goes away
/// (each reply is one line, so counting lines counts replies).
fn write_load(port: u16, clients: usize) -> (Arc<AtomicU64>, Arc<AtomicBool>, JoinSet<()>) {
    let batches = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = JoinSet::new();
    for c in 0..clients {
        let (batches, stop) = (Arc::clone(&batches), Arc::clone(&stop));
        tasks.spawn(async move {
            let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
                return;
            };
            let mut pipeline = Vec::new();
            for k in 0..50 {
                pipeline.extend(encode_command(&["INCR", &format!("load:{c}:{k}")]));
            }
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if stream.write_all(&pipeline).await.is_err() {
                    return;
                }
                let mut lines = 0;
                while lines < 50 {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => lines += buf[..n].iter().filter(|&&b| b == b'\n').count(),
                    }
                }
                batches.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    (batches, stop, tasks)
}

/// Every replica's `DEBUG DIGEST` equals its master's.
async fn assert_digests_equal(masters: &[RedisServer], replicas: &[RedisServer]) {
    for (master, replica) in masters.iter().zip(replicas) {
        assert_eq!(
            digest(&master.addr()).await,
            digest(&replica.addr()).await,
            "replica {} differs from master {}",
            replica.addr(),
            master.addr()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_proxy_resyncs_every_replica_and_a_clean_stop_resyncs_none() {
    let masters: Vec<RedisServer> = (0..2).map(|_| RedisServer::start_with(DEBUG)).collect();
    let replicas: Vec<RedisServer> = (0..2).map(|_| RedisServer::start_with(DEBUG)).collect();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let topology_file = dir.path().join("topology.toml");
    let port = free_port();
    let text = config_text(
        &masters.iter().map(RedisServer::addr).collect::<Vec<_>>(),
        &replicas.iter().map(RedisServer::addr).collect::<Vec<_>>(),
        &format!(
            "metrics_listen = \"off\"\nadmin_listen = \"off\"\nadmin_socket = \"off\"\ntopology_file = \"{}\"\n{}",
            topology_file.display(),
            // The crash hole of proxy mirroring (Redis replication has none).
            redshard_tests::cluster::PROXY_MIRRORING
        ),
    )
    .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let config = dir.path().join("redshard.toml");
    std::fs::write(&config, text).expect("the config file");

    // Running: the topology file carries the run marker.
    let proxy = ProxyProcess::start(&config, port).await;
    let marked = || std::fs::read_to_string(&topology_file).expect("the topology file");
    assert!(marked().contains("running = true"), "{}", marked());
    let (batches, _stop, mut load) = write_load(port, 4);
    wait_for_progress(&batches, 50, "writes before the kill").await;
    proxy.kill();
    while load.join_next().await.is_some() {}
    assert!(marked().contains("running = true"), "{}", marked());
    // What the crash can leave: a write the master applied and its replica never got.
    let mut master = Client::connect(masters[0].addr()).await;
    assert!(master
        .cmd(&["SET", "applied:not:mirrored", "x"])
        .await
        .is_ok());

    // The restarted proxy trusts no replica until it resynchronised it.
    let proxy = ProxyProcess::start(&config, port).await;
    let mut client = proxy.client().await;
    let info = mirror_info(&mut client).await;
    assert_eq!(replicas_in(&info, "in_sync"), 0, "{info}");
    let addr = format!("127.0.0.1:{port}");
    wait_until(
        Duration::from_secs(60),
        "both replicas resynchronised",
        || {
            let addr = addr.clone();
            async move {
                let info = mirror_info(&mut Client::connect(addr).await).await;
                replicas_in(&info, "in_sync") == 2 && field(&info, "resyncs_completed") >= 2
            }
        },
    )
    .await;
    let (batches, stop, mut load) = write_load(port, 4);
    wait_for_progress(&batches, 50, "writes after the resync").await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    assert_digests_equal(&masters, &replicas).await;

    // A clean stop is remembered: the next start trusts the replicas and resyncs none.
    drop(client);
    proxy.stop().await;
    assert!(!marked().contains("running"), "{}", marked());
    let proxy = ProxyProcess::start(&config, port).await;
    let mut client = proxy.client().await;
    let info = mirror_info(&mut client).await;
    assert_eq!(replicas_in(&info, "in_sync"), 2, "{info}");
    let (batches, stop, mut load) = write_load(port, 4);
    wait_for_progress(&batches, 50, "writes after the clean restart").await;
    stop.store(true, Ordering::Relaxed);
    while load.join_next().await.is_some() {}
    let info = mirror_info(&mut client).await;
    assert_eq!(replicas_in(&info, "in_sync"), 2, "{info}");
    assert_eq!(field(&info, "resyncs_completed"), 0, "{info}");
    assert_eq!(field(&info, "replicas_marked_stale"), 0, "{info}");
    assert_digests_equal(&masters, &replicas).await;
}
