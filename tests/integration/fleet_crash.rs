//! A proxy of a fleet that dies (its process stopped at once: every connection closed, its
//! etcd lease left to expire) under write load: its clients reconnect to another proxy, and
//! no write any proxy acknowledged is lost. Real etcd, real redis-server (3 masters with a
//! replica each, Redis replication with acknowledged writes), three proxies each on a runtime
//! of its own that the test shuts down at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redshard_config::{Config, ReplicaState};
use redshard_control::fleet::FleetRole;
use redshard_tests::client::encode_command;
use redshard_tests::cluster::CrashableProxy;
use redshard_tests::workload::assert_replicas_equal_in;
use redshard_tests::{wait_until, Client, EtcdServer, RedisServer, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Nodes that start a full sync at once and answer DEBUG DIGEST.
const NODE: &[&str] = &[
    "--repl-diskless-sync-delay",
    "0",
    "--enable-debug-command",
    "yes",
];

/// One proxy's config: the fleet at `etcd`, shards of `masters` with `replicas[i]`.
fn config(etcd: &EtcdServer, masters: &[String], replicas: &[String]) -> Config {
    let extra = format!(
        "metrics_listen = \"off\"\nadmin_socket = \"off\"\n\
         [replication]\nmode = \"redis\"\nack = \"sync\"\n\
         [cluster]\netcd = [\"{}\"]\nprefix = \"/crash\"\nlease_ttl_ms = 2000\n",
        etcd.addr()
    );
    let text = redshard_tests::cluster::config_text(masters, replicas, &extra);
    Config::from_toml_str(&text, "fleet crash").expect("valid config")
}

/// One `SET key value` on `stream`: `Ok(true)` when acknowledged, `Ok(false)` for an error
/// reply, `Err` when the connection failed (the write's outcome is then unknown).
async fn set(stream: &mut TcpStream, key: &str, value: &str) -> Result<bool, ()> {
    stream
        .write_all(&encode_command(&["SET", key, value]))
        .await
        .map_err(|_| ())?;
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .map_err(|_| ())?
            .map_err(|_| ())?;
        if read == 0 {
            return Err(());
        }
        line.push(byte[0]);
    }
    Ok(line == b"+OK\r\n")
}

/// A client that overwrites its keys `crash:<c>:<k>` in rounds through `proxies[c % 3]`,
/// moving to the next proxy when its connection fails, and writing the same value again
/// until it is acknowledged. Returns the last acknowledged value of each key.
async fn writer(
    c: usize,
    proxies: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    moved: Arc<AtomicU64>,
) -> HashMap<String, String> {
    let mut at = c % proxies.len();
    let mut stream = TcpStream::connect(proxies[at]).await.expect("connect");
    let mut last = HashMap::new();
    let mut round = 0u64;
    while !stop.load(Ordering::Relaxed) {
        round += 1;
        for k in 0..20 {
            let (key, value) = (format!("crash:{c}:{k}"), round.to_string());
            loop {
                match set(&mut stream, &key, &value).await {
                    Ok(true) => break,
                    // An error reply (a shard briefly held): the same write again.
                    Ok(false) => {}
                    Err(()) => {
                        // The proxy is gone: the next one, as a load balancer would.
                        at = (at + 1) % proxies.len();
                        if let Ok(next) = TcpStream::connect(proxies[at]).await {
                            stream = next;
                            moved.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                // The pace of retries, not synchronisation.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            last.insert(key, value);
            acked.fetch_add(1, Ordering::Relaxed);
        }
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_proxy_s_clients_go_on_through_another_and_no_acknowledged_write_is_lost() {
    let etcd = EtcdServer::start();
    let masters: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_with(NODE)).collect();
    let replicas: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_with(NODE)).collect();
    let m: Vec<String> = masters.iter().map(RedisServer::addr).collect();
    let r: Vec<String> = replicas.iter().map(RedisServer::addr).collect();
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(CrashableProxy::start(config(&etcd, &m, &r)).await);
    }
    let leads = |p: &CrashableProxy| {
        p.proxy()
            .controller()
            .fleet()
            .is_some_and(|f| f.role() == FleetRole::Leading)
    };
    wait_until(Duration::from_secs(10), "one proxy to lead", || async {
        proxies.iter().filter(|p| leads(p)).count() == 1
    })
    .await;
    wait_until(Duration::from_secs(20), "every replica in sync", || async {
        proxies.iter().all(|p| {
            p.proxy()
                .state()
                .router
                .load()
                .topology()
                .shards
                .iter()
                .all(|s| s.replicas.iter().all(|r| r.state == ReplicaState::InSync))
        })
    })
    .await;
    let addrs: Vec<SocketAddr> = proxies.iter().map(|p| p.proxy().local_addr()).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let moved = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..6)
        .map(|c| {
            tokio::spawn(writer(
                c,
                addrs.clone(),
                Arc::clone(&stop),
                Arc::clone(&acked),
                Arc::clone(&moved),
            ))
        })
        .collect();
    redshard_tests::wait::wait_for_progress(&acked, 300, "writes before the crash").await;

    // A proxy that does not lead dies: its clients (two of the six) move on.
    let victim = proxies.iter().position(|p| !leads(p)).expect("a follower");
    proxies[victim].crash().await;
    wait_until(Duration::from_secs(10), "its clients to move", || async {
        moved.load(Ordering::Relaxed) >= 2
    })
    .await;
    redshard_tests::wait::wait_for_progress(&acked, 300, "writes after the crash").await;
    stop.store(true, Ordering::Relaxed);
    let mut last = HashMap::new();
    for w in writers {
        last.extend(w.await.expect("writer"));
    }

    // Every acknowledged write reads back through a proxy still running.
    let survivor = proxies
        .iter()
        .position(leads)
        .expect("the leader still runs");
    let mut client = Client::connect_addr(addrs[survivor]).await;
    for (key, value) in &last {
        assert_eq!(
            client.cmd(&["GET", key]).await,
            Reply::bulk(value),
            "{key}: last acknowledged {value}"
        );
    }
    assert_eq!(last.len(), 6 * 20);
    let topology =
        std::sync::Arc::clone(proxies[survivor].proxy().state().router.load().topology());
    assert_replicas_equal_in(&topology).await;
}
