//! The tutorial operators know, through a fleet of three proxies sharing one cluster through
//! etcd: 3 masters + 3 replicas, kill -9 of master 1 (its replica takes over for every proxy,
//! the old master comes back as its replica), then 3+3 → 4+4 → 3+3 with `redshard-admin`
//! pointed at a different proxy for each step, under traffic spread over all three.
//! Real etcd, real redis-server, three in-process proxies each with a TCP admin port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redshard_config::{Config, ReplicaState, Topology};
use redshard_control::fleet::FleetRole;
use redshard_proxy::Proxy;
use redshard_tests::workload::{assert_keys_where_they_belong, assert_replicas_equal_in, Traffic};
use redshard_tests::{wait_until, Client, EtcdServer, RedisServer, Reply};

use crate::admin_cli::cli;

const PASSWORD: &str = "fleet-tutorial-pw";

/// Nodes that start a full sync at once and answer DEBUG DIGEST.
const NODE: &[&str] = &[
    "--repl-diskless-sync-delay",
    "0",
    "--enable-debug-command",
    "yes",
];

/// One proxy's config: the fleet at `etcd`, shards `s1..` of `masters` with `replicas[i]`,
/// Redis replication with acknowledged writes, probes fast enough for a failover within a
/// second, and a TCP admin port on `admin`.
fn config(etcd: &EtcdServer, masters: &[String], replicas: &[String], admin: u16) -> Config {
    let extra = format!(
        "metrics_listen = \"off\"\nadmin_socket = \"off\"\n\
         admin_listen = \"127.0.0.1:{admin}\"\nadmin_password = \"{PASSWORD}\"\n\
         [replication]\nmode = \"redis\"\nack = \"sync\"\n\
         [health]\ninterval_ms = 100\ntimeout_ms = 200\ndown_after_ms = 500\n\
         [cluster]\netcd = [\"{}\"]\nprefix = \"/tutorial\"\nlease_ttl_ms = 2000\n",
        etcd.addr()
    );
    let text = redshard_tests::cluster::config_text(masters, replicas, &extra);
    Config::from_toml_str(&text, "fleet tutorial").expect("valid config")
}

fn leads(proxy: &Proxy) -> bool {
    proxy
        .controller()
        .fleet()
        .is_some_and(|f| f.role() == FleetRole::Leading)
}

fn topology(proxy: &Proxy) -> Arc<Topology> {
    Arc::clone(proxy.state().router.load().topology())
}

/// Whether every proxy routes shard `name` to `master`, with `replica` in sync behind it.
fn everywhere(proxies: &[Proxy], name: &str, master: &str, replica: &str) -> bool {
    proxies.iter().all(|p| {
        topology(p).shards.iter().any(|s| {
            s.name == name
                && s.master.to_string() == master
                && s.replicas
                    .iter()
                    .any(|r| r.addr.to_string() == replica && r.state == ReplicaState::InSync)
        })
    })
}

/// Whether every replica is in sync for every proxy, and the leader saw each follow its master.
fn settled(proxies: &[Proxy]) -> bool {
    proxies.iter().all(|p| {
        topology(p)
            .shards
            .iter()
            .all(|s| s.replicas.iter().all(|r| r.state == ReplicaState::InSync))
            && (!leads(p) || redshard_tests::cluster::replication_settled(p))
    })
}

/// SETs `t<tag>:<n>` through `addr` until `stop`, recording the acknowledged keys; errors
/// (a write in flight on the killed master) are counted, not fatal.
async fn writer(
    addr: SocketAddr,
    tag: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
) {
    let mut client = Client::connect_addr(addr).await;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("t{tag}:{n}");
        if client.cmd(&["SET", &key, "v"]).await.is_ok() {
            acked.lock().unwrap().push(key);
        } else {
            // The pace of retries while the shard fails over, not synchronisation.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorial_through_three_proxies() {
    redshard_tests::server::init_logs();
    let etcd = EtcdServer::start();
    let mut masters: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_with(NODE)).collect();
    let replicas: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_with(NODE)).collect();
    let m: Vec<String> = masters.iter().map(RedisServer::addr).collect();
    let r: Vec<String> = replicas.iter().map(RedisServer::addr).collect();
    let mut proxies = Vec::new();
    let mut admins = Vec::new();
    for _ in 0..3 {
        let port = redshard_tests::server::free_port();
        let proxy = Proxy::start(config(&etcd, &m, &r, port))
            .await
            .expect("proxy starts");
        admins.push(proxy.admin_addr().expect("admin port"));
        proxies.push(proxy);
    }
    let addrs: Vec<SocketAddr> = proxies.iter().map(Proxy::local_addr).collect();
    let env = [("REDISCLI_AUTH", PASSWORD)];
    wait_until(Duration::from_secs(10), "one proxy to lead", || async {
        proxies.iter().filter(|p| leads(p)).count() == 1
    })
    .await;
    wait_until(Duration::from_secs(20), "every replica in sync", || async {
        settled(&proxies)
    })
    .await;

    // Keys of three types, each written through one of the proxies.
    let keys = 3_000;
    for i in 0..keys {
        let mut c = Client::connect_addr(addrs[i % 3]).await;
        let key = format!("key:{i}");
        let value = format!("v{i}");
        let reply = match i % 3 {
            0 => c.cmd(&["SET", &key, &value]).await,
            1 => c.cmd(&["HSET", &key, "f", &value]).await,
            _ => c.cmd(&["RPUSH", &key, &value]).await,
        };
        assert!(!matches!(reply, Reply::Error(_)), "{key}: {reply:?}");
    }

    // Master 1 dies under writes through every proxy: its replica takes over for all three,
    // and the old master, started again, follows it.
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| tokio::spawn(writer(*a, i, Arc::clone(&stop), Arc::clone(&acked))))
        .collect();
    wait_until(
        Duration::from_secs(5),
        "writes through every proxy",
        || async { acked.lock().unwrap().len() >= 300 },
    )
    .await;
    masters[0].kill();
    let before = acked.lock().unwrap().len();
    wait_until(
        Duration::from_secs(10),
        "every proxy to route s1 to its former replica",
        || async {
            proxies.iter().all(|p| {
                topology(p)
                    .shards
                    .iter()
                    .any(|s| s.name == "s1" && s.master.to_string() == r[0])
            })
        },
    )
    .await;
    for (i, addr) in addrs.iter().enumerate() {
        let mut c = Client::connect_addr(*addr).await;
        crate::failover::until_write_succeeds(
            &mut c,
            &format!("probe{i}"),
            Duration::from_secs(10),
        )
        .await;
    }
    masters[0].restart();
    wait_until(
        Duration::from_secs(30),
        "the old master 1 to follow its replica, in sync, for every proxy",
        || async { everywhere(&proxies, "s1", &r[0], &m[0]) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    let written = acked.lock().unwrap().clone();
    assert!(
        written.len() > before,
        "no write acknowledged after the kill"
    );
    let mut c = Client::connect_addr(addrs[1]).await;
    let mut lost = 0;
    for key in &written {
        if c.cmd(&["EXISTS", key]).await != Reply::Int(1) {
            lost += 1;
        }
    }
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged writes lost",
        written.len()
    );

    // Scale out to 4+4 and back to 3+3, each step through another proxy's admin port, under
    // traffic spread over the three.
    let traffic = Traffic::start_on(&addrs, 3).await;
    let m4 = RedisServer::start_with(NODE);
    let r4 = RedisServer::start_with(NODE);
    let run = cli(admins[0], &["add-node", &m4.addr()], "", &env).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.out.contains("New shard s4"), "{run:?}");
    let run = cli(
        admins[1],
        &[
            "add-node",
            &r4.addr(),
            "--cluster-slave",
            "--cluster-master-id",
            "s4",
        ],
        "",
        &env,
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = cli(
        admins[2],
        &["rebalance", "--cluster-use-empty-masters", "--cluster-yes"],
        "",
        &env,
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.out.matches("[OK] Moved ").count(), 3, "{run:?}");
    wait_until(
        Duration::from_secs(20),
        "s4's replica in sync everywhere",
        || async { everywhere(&proxies, "s4", &m4.addr(), &r4.addr()) },
    )
    .await;
    wait_until(Duration::from_secs(20), "check to pass on 4+4", || async {
        cli(admins[0], &["check"], "", &env).await.code == 0
    })
    .await;
    let run = cli(admins[0], &["check"], "", &env).await;
    assert_eq!(run.out.matches("(4096 slots) master").count(), 4, "{run:?}");
    assert_keys_where_they_belong(&topology(&proxies[0])).await;

    let run = cli(admins[1], &["del-node", &r4.addr()], "", &env).await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = cli(
        admins[2],
        &[
            "reshard",
            "--cluster-from",
            &m4.addr(),
            "--cluster-to",
            "s1",
            "--cluster-slots",
            "4096",
            "--cluster-yes",
        ],
        "",
        &env,
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = cli(admins[0], &["del-node", &m4.addr()], "", &env).await;
    assert_eq!(run.code, 0, "{run:?}");
    let run = cli(admins[1], &["rebalance", "--cluster-yes"], "", &env).await;
    assert_eq!(run.code, 0, "{run:?}");
    wait_until(Duration::from_secs(20), "check to pass on 3+3", || async {
        let run = cli(admins[2], &["check"], "", &env).await;
        run.code == 0 && !run.out.contains("s4")
    })
    .await;
    wait_until(
        Duration::from_secs(10),
        "every proxy to drop s4",
        || async {
            proxies.iter().all(|p| {
                topology(p).shards.len() == 3 && topology(p).shards.iter().all(|s| s.name != "s4")
            })
        },
    )
    .await;

    let (last, errors) = traffic.finish().await;
    assert_eq!(errors, 0, "clients saw errors while the fleet scaled");
    for i in 0..keys {
        let mut c = Client::connect_addr(addrs[(i + 1) % 3]).await;
        let key = format!("key:{i}");
        let got = match i % 3 {
            0 => c.cmd(&["GET", &key]).await,
            1 => c.cmd(&["HGET", &key, "f"]).await,
            _ => c.cmd(&["LINDEX", &key, "0"]).await,
        };
        assert_eq!(got, Reply::bulk(&format!("v{i}")), "{key}");
    }
    let mut c = Client::connect_addr(addrs[2]).await;
    for (key, value) in last {
        assert_eq!(c.cmd(&["GET", &key]).await, Reply::bulk(&value), "{key}");
    }
    let leader = proxies.iter().position(leads).expect("a leader");
    let settled_topology = topology(&proxies[leader]);
    assert_keys_where_they_belong(&settled_topology).await;
    assert_replicas_equal_in(&settled_topology).await;
    for proxy in proxies {
        proxy.shutdown(Duration::from_secs(2)).await;
    }
}
