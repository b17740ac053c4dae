//! Several proxies sharing one cluster through etcd (`[cluster] etcd`): topology changes made
//! by the leader reach every proxy, only the leader fails over, and a proxy that lost its
//! etcd session (and cannot ask the others, without admin ports) answers `-CLUSTERDOWN` until
//! it has one again. Real etcd, real redis-server,
//! proxies in this process (each on its own port) or on runtimes of their own to crash them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redshard_config::Config;
use redshard_control::fleet::FleetRole;
use redshard_proxy::Proxy;
use redshard_tests::cluster::{key_on, CrashableProxy};
use redshard_tests::{wait_until, Client, EtcdServer, RedisServer, Reply};

/// A lease TTL short enough for the tests to wait out.
const TTL_MS: u64 = 2000;

/// Nodes that start a full sync at once (not after Redis's default 5 s).
const NODE: &[&str] = &["--repl-diskless-sync-delay", "0"];

/// The config of one proxy of the fleet at `etcd` (prefix `prefix`) in front of `masters`
/// (with `replicas[i]` the replica of shard i, if any), Redis replication with acknowledged
/// writes, probes fast enough for a failover within a second.
fn fleet_config(
    etcd: &EtcdServer,
    prefix: &str,
    masters: &[String],
    replicas: &[String],
) -> Config {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\nmetrics_listen = \"off\"\nadmin_listen = \"off\"\nadmin_socket = \"off\"\n\
         [replication]\nmode = \"redis\"\nack = \"sync\"\n\
         [health]\ninterval_ms = 100\ntimeout_ms = 200\ndown_after_ms = 500\n\
         [cluster]\netcd = [\"{}\"]\nprefix = \"{prefix}\"\nlease_ttl_ms = {TTL_MS}\n",
        etcd.addr()
    );
    let slots = redshard_tests::cluster::even_slots(masters.len());
    for (i, (master, slots)) in masters.iter().zip(slots).enumerate() {
        let replicas = replicas
            .get(i)
            .map(|r| format!("\"{r}\""))
            .unwrap_or_default();
        text.push_str(&format!(
            "[[shard]]\nname = \"s{}\"\nmaster = \"{master}\"\nreplicas = [{replicas}]\nslots = [\"{slots}\"]\n",
            i + 1
        ));
    }
    Config::from_toml_str(&text, "fleet test").expect("valid config")
}

/// Starts `n` proxies of one fleet, in this process.
async fn start_fleet(config: &Config, n: usize) -> Vec<Proxy> {
    redshard_tests::server::init_logs();
    let mut proxies = Vec::with_capacity(n);
    for _ in 0..n {
        proxies.push(Proxy::start(config.clone()).await.expect("proxy starts"));
    }
    proxies
}

/// Whether the leader saw every replica follow its master, and every proxy has them in sync
/// (only the leader checks the replicas; the others follow its topology).
fn settled(proxies: &[&Proxy]) -> bool {
    proxies.iter().all(|p| {
        let in_sync = p.state().router.load().topology().shards.iter().all(|s| {
            s.replicas
                .iter()
                .all(|r| r.state == redshard_config::ReplicaState::InSync)
        });
        in_sync
            && (role(p) != FleetRole::Leading || redshard_tests::cluster::replication_settled(p))
    })
}

fn role(proxy: &Proxy) -> FleetRole {
    proxy.controller().fleet().expect("in a fleet").role()
}

/// `n` proxies of one fleet (etcd prefix `prefix`) in front of one master and its replica,
/// once one leads and every proxy has the replica in sync.
async fn replicated_fleet(
    prefix: &str,
    n: usize,
) -> (EtcdServer, RedisServer, RedisServer, Vec<Proxy>) {
    let etcd = EtcdServer::start();
    let master = RedisServer::start_with(NODE);
    let replica = RedisServer::start_with(NODE);
    let config = fleet_config(&etcd, prefix, &[master.addr()], &[replica.addr()]);
    let proxies = start_fleet(&config, n).await;
    let refs: Vec<&Proxy> = proxies.iter().collect();
    wait_leader(&refs).await;
    wait_until(
        Duration::from_secs(20),
        "the replica to be in sync everywhere",
        || async { settled(&refs) },
    )
    .await;
    (etcd, master, replica, proxies)
}

/// Waits until exactly one of `proxies` leads; returns its index.
pub(crate) async fn wait_leader(proxies: &[&Proxy]) -> usize {
    wait_until(Duration::from_secs(10), "one proxy to lead", || async {
        proxies
            .iter()
            .filter(|p| role(p) == FleetRole::Leading)
            .count()
            == 1
    })
    .await;
    proxies
        .iter()
        .position(|p| role(p) == FleetRole::Leading)
        .expect("a leader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_by_the_leader_reaches_every_proxy() {
    let etcd = EtcdServer::start();
    let masters = [RedisServer::start(), RedisServer::start()];
    let addrs: Vec<String> = masters.iter().map(RedisServer::addr).collect();
    let config = fleet_config(&etcd, "/change", &addrs, &[]);
    let proxies = start_fleet(&config, 3).await;
    let refs: Vec<&Proxy> = proxies.iter().collect();
    let leader = wait_leader(&refs).await;
    let follower = (leader + 1) % proxies.len();

    // A key of shard 1, written through a follower.
    let key = key_on(2, 0, "moved");
    let mut client = Client::connect_addr(proxies[follower].local_addr()).await;
    assert!(client.cmd(&["SET", &key, "v"]).await.is_ok());
    let epoch = proxies[follower].epoch();

    // Only the leader changes the topology.
    let refused = proxies[follower]
        .controller()
        .migrate("s1", "s2", vec!["0-8191".parse().unwrap()])
        .await;
    assert!(refused.is_err(), "a follower changed the topology");
    proxies[leader]
        .controller()
        .migrate("s1", "s2", vec!["0-8191".parse().unwrap()])
        .await
        .expect("the leader queues the migration");

    // Every proxy installs the leader's epochs and routes the slots to s2.
    wait_until(
        Duration::from_secs(20),
        "the migration to reach every proxy",
        || async {
            proxies.iter().all(|p| {
                let table = p.state().router.load();
                table.epoch() > epoch + 1
                    && !table.has_migrations()
                    && table.topology().shards[1].master.as_str() == addrs[1]
                    && table.shard_of(table.slot_of(key.as_bytes())) == 1
            })
        },
    )
    .await;
    let epochs: Vec<u64> = proxies.iter().map(Proxy::epoch).collect();
    assert!(epochs.iter().all(|e| *e == epochs[0]), "{epochs:?}");
    for proxy in &proxies {
        let mut client = Client::connect_addr(proxy.local_addr()).await;
        assert_eq!(client.cmd(&["GET", &key]).await, Reply::bulk("v"));
    }
    let mut target = Client::connect(addrs[1].clone()).await;
    assert_eq!(target.cmd(&["GET", &key]).await, Reply::bulk("v"));
    let mut source = Client::connect(addrs[0].clone()).await;
    assert_eq!(source.cmd(&["EXISTS", &key]).await, Reply::Int(0));
    // INFO shows the fleet.
    let info = client.info_field("redshard", "fleet_members").await;
    assert_eq!(info.as_deref(), Some("3"));
    for proxy in proxies {
        proxy.shutdown(Duration::from_secs(2)).await;
    }
}

/// Every proxy's writes wait for the replicas streaming from the master that the shard does
/// not count in sync (here a node attached by hand), not only the leader's: each proxy sends
/// its own `WAIT`s, and only the leader repairs the replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proxy_waits_for_the_other_replicas_streaming_from_the_master() {
    let (_etcd, master, _replica, proxies) = replicated_fleet("/streaming", 2).await;
    let refs: Vec<&Proxy> = proxies.iter().collect();
    let waits = |proxy: &Proxy| proxy.state().router.load().shards()[0].wait_for();
    assert!(refs.iter().all(|p| waits(p) == 1));
    let port = master.port.to_string();
    let mut by_hand = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port]);
    wait_until(
        Duration::from_secs(10),
        "every proxy's writes to wait for the node attached by hand",
        || async { refs.iter().all(|p| waits(p) == 2) },
    )
    .await;
    // Gone, it stops acknowledging (the master lists it until its repl-timeout): not
    // waited for any more.
    by_hand.kill();
    wait_until(
        Duration::from_secs(10),
        "every proxy to stop waiting for it",
        || async { refs.iter().all(|p| waits(p) == 1) },
    )
    .await;
}

/// Without admin ports the proxies cannot ask each other whether etcd is down for all of
/// them (`fleet_frozen` has the fleet that can): each must assume the other still reaches
/// etcd, so each stops serving once its session is lost, as a proxy cut off alone does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_lost_its_session_answers_clusterdown_and_serves_again_after() {
    let mut etcd = EtcdServer::start();
    let master = RedisServer::start();
    let config = fleet_config(&etcd, "/lost", &[master.addr()], &[]);
    let proxies = start_fleet(&config, 2).await;
    // Each knows the other (a proxy alone in its member list would serve on, frozen).
    wait_until(
        Duration::from_secs(5),
        "each proxy to know both",
        || async {
            proxies
                .iter()
                .all(|p| p.controller().fleet().expect("fleet").view().members.len() == 2)
        },
    )
    .await;
    let mut client = Client::connect_addr(proxies[1].local_addr()).await;
    assert!(client.cmd(&["SET", "k", "v"]).await.is_ok());

    etcd.stop();
    let stopped = Instant::now();
    wait_until(
        Duration::from_millis(TTL_MS + 3000),
        "the proxies to stop serving once their sessions are lost",
        || async { proxies.iter().all(|p| role(p) == FleetRole::Offline) },
    )
    .await;
    eprintln!(
        "stopped serving {} ms after etcd went down",
        stopped.elapsed().as_millis()
    );
    match client.cmd(&["GET", "k"]).await {
        Reply::Error(e) => assert!(
            e.starts_with("CLUSTERDOWN The proxy lost its etcd session"),
            "{e}"
        ),
        other => panic!("served without a session: {other:?}"),
    }

    etcd.restart();
    wait_until(
        Duration::from_secs(15),
        "the proxies to serve again",
        || async { proxies.iter().all(|p| role(p) != FleetRole::Offline) },
    )
    .await;
    wait_until(Duration::from_secs(5), "GET to be served again", || async {
        let mut client = Client::connect_addr(proxies[1].local_addr()).await;
        client.cmd(&["GET", "k"]).await == Reply::bulk("v")
    })
    .await;
    for proxy in proxies {
        proxy.shutdown(Duration::from_secs(2)).await;
    }
}

/// Writes `w<n>` keys through `proxy` until `stop`, recording those acknowledged.
async fn writer(
    addr: std::net::SocketAddr,
    tag: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<String>>>,
    last_ok: Arc<AtomicU64>,
    started: Instant,
) {
    let mut client = Client::connect_addr(addr).await;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("w{tag}:{n}");
        match client.cmd(&["SET", &key, "v"]).await {
            Reply::Status(_) => {
                acked.lock().unwrap().push(key);
                last_ok.store(
                    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    Ordering::Relaxed,
                );
            }
            _ => {
                // The pace of retries while the shard fails over, not synchronisation.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_master_is_failed_over_once_for_every_proxy_without_losing_writes() {
    let (_etcd, mut master, replica, proxies) = replicated_fleet("/kill", 3).await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut writers = Vec::new();
    let mut last_ok = Vec::new();
    for (i, proxy) in proxies.iter().enumerate() {
        let ok = Arc::new(AtomicU64::new(0));
        last_ok.push(Arc::clone(&ok));
        writers.push(tokio::spawn(writer(
            proxy.local_addr(),
            i,
            Arc::clone(&stop),
            Arc::clone(&acked),
            ok,
            started,
        )));
    }
    wait_until(
        Duration::from_secs(5),
        "writes through every proxy",
        || async { last_ok.iter().all(|t| t.load(Ordering::Relaxed) > 0) },
    )
    .await;
    master.kill();
    let killed = u64::try_from(started.elapsed().as_millis()).unwrap();
    // Each proxy's writes resume once it routes to the promoted replica.
    let mut resumed = Vec::new();
    for (i, proxy) in proxies.iter().enumerate() {
        let mut client = Client::connect_addr(proxy.local_addr()).await;
        let took = crate::failover::until_write_succeeds(
            &mut client,
            &format!("probe{i}"),
            Duration::from_secs(10),
        )
        .await;
        resumed.push(u64::try_from(started.elapsed().as_millis()).unwrap() - killed);
        let _ = took;
    }
    wait_until(
        Duration::from_secs(5),
        "writes through every proxy after the failover",
        || async { last_ok.iter().all(|t| t.load(Ordering::Relaxed) > killed) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.expect("writer");
    }
    resumed.sort_unstable();
    eprintln!("writes accepted again after kill -9, per proxy (ms): {resumed:?}");
    assert!(resumed[1] <= 1000 + 500, "p50 {} ms", resumed[1]);
    // Exactly one failover, made by the leader, and every proxy routes to the new master.
    for proxy in &proxies {
        let table = proxy.state().router.load();
        assert_eq!(table.topology().shards[0].master.as_str(), replica.addr());
    }
    let failovers: u64 = proxies.iter().map(|p| p.controller().failovers().0).sum();
    assert_eq!(failovers, 1);
    // No acknowledged write lost.
    let keys = acked.lock().unwrap().clone();
    assert!(!keys.is_empty());
    let mut direct = Client::connect(replica.addr()).await;
    let mut missing = 0;
    for key in &keys {
        if direct.cmd(&["EXISTS", key]).await != Reply::Int(1) {
            missing += 1;
        }
    }
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged writes lost",
        keys.len()
    );
    for proxy in proxies {
        proxy.shutdown(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_leader_crashes_another_leads_within_the_ttl_and_fails_over() {
    let etcd = EtcdServer::start();
    let mut master = RedisServer::start_with(NODE);
    let replica = RedisServer::start_with(NODE);
    let config = fleet_config(&etcd, "/crash", &[master.addr()], &[replica.addr()]);
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(CrashableProxy::start(config.clone()).await);
    }
    let refs: Vec<&Proxy> = proxies.iter().map(CrashableProxy::proxy).collect();
    let leader = wait_leader(&refs).await;
    wait_until(
        Duration::from_secs(20),
        "the replica to be in sync",
        || async { settled(&refs) },
    )
    .await;
    drop(refs);

    proxies[leader].crash().await;
    let crashed = Instant::now();
    let rest: Vec<&CrashableProxy> = proxies
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, p)| p)
        .collect();
    let refs: Vec<&Proxy> = rest.iter().map(|p| p.proxy()).collect();
    wait_leader(&refs).await;
    let took = crashed.elapsed();
    eprintln!(
        "a new leader {} ms after the leader crashed",
        took.as_millis()
    );
    assert!(took < Duration::from_millis(TTL_MS + 2000), "{took:?}");

    // The new leader fails over.
    master.kill();
    let mut client = Client::connect_addr(refs[0].local_addr()).await;
    crate::failover::until_write_succeeds(&mut client, "after", Duration::from_secs(10)).await;
    for proxy in &refs {
        wait_until(
            Duration::from_secs(5),
            "the promoted replica everywhere",
            || async {
                proxy.state().router.load().topology().shards[0]
                    .master
                    .as_str()
                    == replica.addr()
            },
        )
        .await;
    }
}

/// `INCR`s keys of `keys` (round robin from `offset`) through `addr` until `stop`, counting in
/// `acked[i]` every increment of `keys[i]` the proxy acknowledged; returns the errors seen.
async fn incrementer(
    addr: std::net::SocketAddr,
    keys: Arc<Vec<String>>,
    offset: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Vec<AtomicU64>>,
) -> Vec<String> {
    let mut client = Client::connect_addr(addr).await;
    let mut errors = Vec::new();
    let mut i = offset;
    while !stop.load(Ordering::Relaxed) {
        let n = i % keys.len();
        match client.cmd(&["INCR", &keys[n]]).await {
            Reply::Int(_) => {
                acked[n].fetch_add(1, Ordering::Relaxed);
            }
            other => errors.push(format!("{other:?}")),
        }
        i += 7;
    }
    errors
}

/// The value of the unlabelled series `name` on `proxy`'s `/metrics` page.
pub(crate) fn metric(proxy: &Proxy, name: &str) -> f64 {
    let page = redshard_proxy::metrics::scrape::render(proxy.state());
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{name} on the page:\n{page}"))
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_writing_during_a_migration_lose_no_increment_and_leave_no_key_twice() {
    let etcd = EtcdServer::start();
    let masters = [RedisServer::start(), RedisServer::start()];
    let addrs: Vec<String> = masters.iter().map(RedisServer::addr).collect();
    let config = fleet_config(&etcd, "/incr", &addrs, &[]);
    let proxies = start_fleet(&config, 2).await;
    let refs: Vec<&Proxy> = proxies.iter().collect();
    let leader = wait_leader(&refs).await;
    let follower = 1 - leader;

    // Keys of s1 that both proxies increment, and filler keys for the mover to move
    // meanwhile (populated on s1's master; those of s2's slots stay where they are).
    let counters: Arc<Vec<String>> = Arc::new(
        (0..)
            .map(|i| format!("c:{i}"))
            .filter(|k| redshard_tests::cluster::shard_of(k, 2) == 0)
            .take(300)
            .collect(),
    );
    let mut source = Client::connect(addrs[0].clone()).await;
    assert!(source
        .cmd(&["DEBUG", "POPULATE", "20000", "fill", "8"])
        .await
        .is_ok());
    let fill_moving = (0..20000)
        .filter(|i| redshard_tests::cluster::shard_of(&format!("fill:{i}"), 2) == 0)
        .count();
    // And keys in database 5, which MIGRATE moves into database 5 of the target.
    assert!(source.cmd(&["SELECT", "5"]).await.is_ok());
    assert!(source
        .cmd(&["DEBUG", "POPULATE", "2000", "five", "8"])
        .await
        .is_ok());
    assert!(source.cmd(&["SELECT", "0"]).await.is_ok());
    let five_moving = (0..2000)
        .filter(|i| redshard_tests::cluster::shard_of(&format!("five:{i}"), 2) == 0)
        .count();

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Vec<AtomicU64>> =
        Arc::new((0..counters.len()).map(|_| AtomicU64::new(0)).collect());
    let mut tasks = Vec::new();
    for (i, proxy) in proxies.iter().chain(proxies.iter()).enumerate() {
        tasks.push(tokio::spawn(incrementer(
            proxy.local_addr(),
            Arc::clone(&counters),
            i,
            Arc::clone(&stop),
            Arc::clone(&acked),
        )));
    }
    wait_until(
        Duration::from_secs(5),
        "increments acknowledged",
        || async { acked.iter().map(|a| a.load(Ordering::Relaxed)).sum::<u64>() > 200 },
    )
    .await;
    let epoch = proxies[leader].epoch();
    let migrating = Instant::now();
    proxies[leader]
        .controller()
        .migrate("s1", "s2", vec!["0-8191".parse().unwrap()])
        .await
        .expect("the leader queues the migration");
    wait_until(
        Duration::from_secs(60),
        "the migration to finish on every proxy",
        || async {
            proxies.iter().all(|p| {
                let table = p.state().router.load();
                table.epoch() > epoch + 1 && !table.has_migrations()
            })
        },
    )
    .await;
    let took = migrating.elapsed();
    // Increments go on after the slots changed owner too.
    let before: u64 = acked.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    wait_until(
        Duration::from_secs(5),
        "increments after the migration",
        || async { acked.iter().map(|a| a.load(Ordering::Relaxed)).sum::<u64>() > before + 100 },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = Vec::new();
    for task in tasks {
        errors.extend(task.await.expect("incrementer"));
    }
    assert!(errors.is_empty(), "increments refused: {errors:?}");

    // Every key on the target only, every acknowledged increment counted.
    let mut target = Client::connect(addrs[1].clone()).await;
    let mut wrong = Vec::new();
    for (key, count) in counters.iter().zip(acked.iter()) {
        let count = count.load(Ordering::Relaxed);
        let want = if count == 0 {
            Reply::Bulk(None)
        } else {
            Reply::bulk(&count.to_string())
        };
        let got = target.cmd(&["GET", key]).await;
        if got != want {
            wrong.push(format!(
                "{key}: {got:?} on the target, {count} acknowledged"
            ));
        }
        if source.cmd(&["EXISTS", key]).await != Reply::Int(0) {
            wrong.push(format!("{key} still on the source"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:?}");
    let touched = acked
        .iter()
        .filter(|a| a.load(Ordering::Relaxed) > 0)
        .count();
    assert_eq!(
        source.cmd(&["DBSIZE"]).await,
        Reply::Int(i64::try_from(20000 - fill_moving).unwrap()),
        "only the keys of s2's slots left on s1's master"
    );
    assert_eq!(
        target.cmd(&["DBSIZE"]).await,
        Reply::Int(i64::try_from(fill_moving + touched).unwrap())
    );
    for (node, keys) in [
        (&mut source, 2000 - five_moving),
        (&mut target, five_moving),
    ] {
        assert!(node.cmd(&["SELECT", "5"]).await.is_ok());
        assert_eq!(
            node.cmd(&["DBSIZE"]).await,
            Reply::Int(i64::try_from(keys).unwrap()),
            "database 5 split by the slots"
        );
    }
    let total: u64 = acked.iter().map(|a| a.load(Ordering::Relaxed)).sum();
    eprintln!(
        "{total} increments acknowledged through 2 proxies; the migration of {fill_moving} keys took {} ms",
        took.as_millis()
    );

    // The fleet's metrics.
    assert_eq!(metric(&proxies[leader], "redshard_fleet_leader"), 1.0);
    assert_eq!(metric(&proxies[follower], "redshard_fleet_leader"), 0.0);
    for proxy in &proxies {
        assert_eq!(metric(proxy, "redshard_fleet_members"), 2.0);
        assert_eq!(metric(proxy, "redshard_fleet_barrier_timeouts_total"), 0.0);
        assert_eq!(metric(proxy, "redshard_fleet_etcd_errors_total"), 0.0);
    }
    assert!(metric(&proxies[leader], "redshard_fleet_barrier_waits_total") >= 1.0);
    assert!(
        metric(
            &proxies[leader],
            "redshard_fleet_barrier_wait_seconds_total"
        ) > 0.0
    );
    for proxy in proxies {
        proxy.shutdown(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_whose_leader_crashes_is_finished_by_the_next_leader_without_loss() {
    let etcd = EtcdServer::start();
    let masters = [RedisServer::start_with(NODE), RedisServer::start_with(NODE)];
    let replicas = [RedisServer::start_with(NODE), RedisServer::start_with(NODE)];
    let addrs: Vec<String> = masters.iter().map(RedisServer::addr).collect();
    let replica_addrs: Vec<String> = replicas.iter().map(RedisServer::addr).collect();
    let config = fleet_config(&etcd, "/crashmove", &addrs, &replica_addrs);
    let mut proxies = Vec::new();
    for _ in 0..3 {
        proxies.push(CrashableProxy::start(config.clone()).await);
    }
    let refs: Vec<&Proxy> = proxies.iter().map(CrashableProxy::proxy).collect();
    let leader = wait_leader(&refs).await;
    wait_until(
        Duration::from_secs(20),
        "the replicas to be in sync",
        || async { settled(&refs) },
    )
    .await;
    drop(refs);

    const KEYS: usize = 60000;
    let mut source = Client::connect(addrs[0].clone()).await;
    // A script, not DEBUG POPULATE: its writes reach the replica.
    let fill =
        "for i = 0, tonumber(ARGV[1]) - 1 do redis.call('SET', 'k:' .. i, string.rep('v', 16)) end";
    assert_eq!(
        source.cmd(&["EVAL", fill, "0", &KEYS.to_string()]).await,
        Reply::Bulk(None)
    );
    let moving = (0..KEYS)
        .filter(|i| redshard_tests::cluster::shard_of(&format!("k:{i}"), 2) == 0)
        .count();
    let epoch = proxies[leader].proxy().epoch();
    proxies[leader]
        .proxy()
        .controller()
        .migrate("s1", "s2", vec!["0-8191".parse().unwrap()])
        .await
        .expect("the leader queues the migration");
    wait_until(
        Duration::from_secs(10),
        "the leader to move keys",
        || async {
            proxies[leader]
                .proxy()
                .state()
                .migrations
                .progress()
                .iter()
                .any(|p| p.keys_moved > 0)
        },
    )
    .await;
    proxies[leader].crash().await;
    let crashed = Instant::now();
    let rest: Vec<&Proxy> = proxies
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, p)| p.proxy())
        .collect();
    let mut target = Client::connect(addrs[1].clone()).await;
    let Reply::Int(moved_before) = target.cmd(&["DBSIZE"]).await else {
        panic!("DBSIZE");
    };
    assert!(
        usize::try_from(moved_before).unwrap() < moving,
        "the crash came after the migration ({moved_before} of {moving} keys moved)"
    );
    wait_leader(&rest).await;
    let took = crashed.elapsed();
    eprintln!(
        "a new leader {} ms after the leader crashed with {moved_before} of {moving} keys moved",
        took.as_millis()
    );
    assert!(took < Duration::from_millis(TTL_MS + 2000), "{took:?}");
    wait_until(
        Duration::from_secs(60),
        "the next leader to finish the migration",
        || async {
            rest.iter().all(|p| {
                let table = p.state().router.load();
                table.epoch() > epoch + 1 && !table.has_migrations()
            })
        },
    )
    .await;
    // No key lost, none on two masters, replicas equal to their masters.
    assert_eq!(
        source.cmd(&["DBSIZE"]).await,
        Reply::Int(i64::try_from(KEYS - moving).unwrap())
    );
    assert_eq!(
        target.cmd(&["DBSIZE"]).await,
        Reply::Int(i64::try_from(moving).unwrap())
    );
    // With ack = "sync" the moves waited for the target's replica.
    let mut target_replica = Client::connect(replica_addrs[1].clone()).await;
    assert_eq!(
        target_replica.cmd(&["DBSIZE"]).await,
        Reply::Int(i64::try_from(moving).unwrap())
    );
    for (master, replica) in addrs.iter().zip(&replica_addrs) {
        redshard_tests::replication::wait_digest_equal(master, replica).await;
    }
    // And served from there.
    let moved = redshard_tests::cluster::key_on(2, 0, "k");
    for proxy in &rest {
        let mut client = Client::connect_addr(proxy.local_addr()).await;
        assert_eq!(
            client.cmd(&["GET", &moved]).await,
            Reply::bulk(&"v".repeat(16))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_on_both_masters_keeps_the_targets_copy() {
    let etcd = EtcdServer::start();
    let masters = [RedisServer::start(), RedisServer::start()];
    let addrs: Vec<String> = masters.iter().map(RedisServer::addr).collect();
    let config = fleet_config(&etcd, "/busy", &addrs, &[]);
    let proxies = start_fleet(&config, 2).await;
    let refs: Vec<&Proxy> = proxies.iter().collect();
    let leader = wait_leader(&refs).await;
    // What a MIGRATE that restored the key but lost its answer leaves: the key on both, the
    // target's copy the newer (every write since the barrier went there).
    let both = key_on(2, 0, "both");
    let only = key_on(2, 0, "only");
    let mut source = Client::connect(addrs[0].clone()).await;
    let mut target = Client::connect(addrs[1].clone()).await;
    assert!(source.cmd(&["SET", &both, "old"]).await.is_ok());
    assert!(source.cmd(&["SET", &only, "v"]).await.is_ok());
    assert!(target.cmd(&["SET", &both, "new"]).await.is_ok());
    let epoch = proxies[leader].epoch();
    proxies[leader]
        .controller()
        .migrate("s1", "s2", vec!["0-8191".parse().unwrap()])
        .await
        .expect("the leader queues the migration");
    wait_until(
        Duration::from_secs(20),
        "the migration to finish on every proxy",
        || async {
            proxies.iter().all(|p| {
                let table = p.state().router.load();
                table.epoch() > epoch + 1 && !table.has_migrations()
            })
        },
    )
    .await;
    assert_eq!(target.cmd(&["GET", &both]).await, Reply::bulk("new"));
    assert_eq!(target.cmd(&["GET", &only]).await, Reply::bulk("v"));
    assert_eq!(source.cmd(&["DBSIZE"]).await, Reply::Int(0));
    for proxy in proxies {
        let mut client = Client::connect_addr(proxy.local_addr()).await;
        assert_eq!(client.cmd(&["GET", &both]).await, Reply::bulk("new"));
        proxy.shutdown(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_joining_during_a_migration_serves_the_migrating_slots() {
    let etcd = EtcdServer::start();
    let masters = [RedisServer::start(), RedisServer::start()];
    let addrs: Vec<String> = masters.iter().map(RedisServer::addr).collect();
    let config = fleet_config(&etcd, "/join", &addrs, &[]);
    let proxies = start_fleet(&config, 2).await;
    let refs: Vec<&Proxy> = proxies.iter().collect();
    let leader = wait_leader(&refs).await;
    // Enough keys that the migration still runs when the third proxy has started.
    let mut source = Client::connect(addrs[0].clone()).await;
    assert!(source
        .cmd(&["DEBUG", "POPULATE", "200000", "j"])
        .await
        .is_ok());
    proxies[leader]
        .controller()
        .migrate("s1", "s2", vec!["0-8191".parse().unwrap()])
        .await
        .expect("the leader queues the migration");
    wait_until(Duration::from_secs(10), "keys to move", || async {
        proxies[leader]
            .state()
            .migrations
            .progress()
            .iter()
            .any(|p| p.keys_moved > 0)
    })
    .await;
    let joined = Proxy::start(config.clone()).await.expect("proxy starts");
    assert!(joined.state().router.load().has_migrations());
    // Keys of the migrating slots, through the proxy that started with them migrating.
    let mut client = Client::connect_addr(joined.local_addr()).await;
    for i in (0..200_000).step_by(20_000) {
        let key = format!("j:{i}");
        if redshard_tests::cluster::shard_of(&key, 2) == 0 {
            assert_eq!(
                client.cmd(&["GET", &key]).await,
                Reply::bulk(&format!("value:{i}")),
                "{key}"
            );
            // Served while the slots still migrate, not held until they stopped.
            assert!(
                joined.state().router.load().has_migrations(),
                "{key} was served only once the migration had ended"
            );
        }
    }
    joined.shutdown(Duration::from_secs(2)).await;
    for proxy in proxies {
        proxy.shutdown(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_changed_through_the_leader_reach_every_proxy() {
    let etcd = EtcdServer::start();
    let masters = [RedisServer::start()];
    let addrs: Vec<String> = masters.iter().map(RedisServer::addr).collect();
    let config = fleet_config(&etcd, "/users", &addrs, &[]);
    let proxies = start_fleet(&config, 2).await;
    let refs: Vec<&Proxy> = proxies.iter().collect();
    let leader = wait_leader(&refs).await;
    let follower = 1 - leader;

    let mut on_leader = Client::connect_addr(proxies[leader].local_addr()).await;
    assert!(on_leader
        .cmd(&["ACL", "SETUSER", "app", "on", ">app-pw", "~app:*", "+get", "+set"])
        .await
        .is_ok());
    wait_until(
        Duration::from_secs(10),
        "the follower to have the user",
        || async { proxies[follower].state().users.get("app").is_some() },
    )
    .await;
    let mut app = Client::connect_addr(proxies[follower].local_addr()).await;
    assert!(app.cmd(&["AUTH", "app", "app-pw"]).await.is_ok());
    assert_eq!(
        app.cmd(&["GET", "other"]).await,
        Reply::Error("NOPERM No permissions to access a key".into())
    );

    // A follower cannot save a change: it is refused, and undone there.
    let mut on_follower = Client::connect_addr(proxies[follower].local_addr()).await;
    let refused = on_follower.cmd(&["ACL", "SETUSER", "other", "on"]).await;
    assert!(
        matches!(&refused, Reply::Error(e) if e.starts_with("ERR redshard: the users could not be saved")),
        "{refused:?}"
    );
    assert_eq!(
        on_follower.cmd(&["ACL", "USERS"]).await,
        Reply::Array(vec![Reply::bulk("app"), Reply::bulk("default")])
    );
    for proxy in proxies {
        proxy.shutdown(Duration::from_secs(2)).await;
    }
}
