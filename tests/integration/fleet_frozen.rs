//! etcd entirely down: every proxy of the fleet keeps serving its last topology (`frozen`);
//! one proxy cut off from etcd while the others reach it stops serving (`-CLUSTERDOWN`).
//! Real etcd and redis-server; the proxies in this process, each with a TCP admin port (where
//! the others ask it `FLEETPEER`). The cut is a TCP relay this test owns on 127.0.0.1, between
//! one proxy and etcd.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redshard_config::Config;
use redshard_control::fleet::FleetRole;
use redshard_proxy::Proxy;
use redshard_tests::{wait_until, Client, EtcdServer, RedisServer, Reply};

use crate::fleet::metric;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A lease TTL short enough for the tests to wait out.
const TTL_MS: u64 = 2000;
/// The admin password of every proxy of the fleet.
const PASSWORD: &str = "frozen-admin";

/// One proxy of a fleet at `etcd` (an `host:port`) under `prefix`, in front of `master`, with
/// an admin port on a free loopback port.
fn config(etcd: &str, prefix: &str, master: &str) -> Config {
    config_with(etcd, prefix, master, None)
}

/// [`config`], with `replica` the master's replica when given.
fn config_with(etcd: &str, prefix: &str, master: &str, replica: Option<&str>) -> Config {
    let replicas = replica.map(|r| format!("\"{r}\"")).unwrap_or_default();
    let admin = redshard_tests::server::free_port();
    let text = format!(
        "listen = \"127.0.0.1:0\"\nmetrics_listen = \"off\"\nadmin_socket = \"off\"\n\
         admin_listen = \"127.0.0.1:{admin}\"\nadmin_password = \"{PASSWORD}\"\n\
         [replication]\nmode = \"redis\"\n\
         [health]\ninterval_ms = 100\ntimeout_ms = 200\ndown_after_ms = 500\n\
         [cluster]\netcd = [\"{etcd}\"]\nprefix = \"{prefix}\"\nlease_ttl_ms = {TTL_MS}\n\
         peer_poll_interval_ms = 200\n\
         [[shard]]\nname = \"s1\"\nmaster = \"{master}\"\nreplicas = [{replicas}]\nslots = [\"0-16383\"]\n"
    );
    Config::from_toml_str(&text, "frozen test").expect("valid config")
}

fn role(proxy: &Proxy) -> FleetRole {
    proxy.controller().fleet().expect("in a fleet").role()
}

/// Waits until one proxy leads and every proxy knows all `proxies.len()` members (whom it
/// would ask if etcd went away).
async fn wait_fleet(proxies: &[Proxy]) {
    wait_until(
        Duration::from_secs(15),
        "one leader, every proxy knowing every member",
        || async {
            proxies
                .iter()
                .filter(|p| role(p) == FleetRole::Leading)
                .count()
                == 1
                && proxies.iter().all(|p| {
                    p.controller().fleet().expect("fleet").view().members.len() == proxies.len()
                })
        },
    )
    .await;
}

/// A client writing and reading through every proxy in turn until `stop`, counting
/// the requests served and recording each error with the time it came (since `start`).
struct Traffic {
    stop: Arc<AtomicBool>,
    served: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<(Duration, SocketAddr, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Traffic {
    fn start(addrs: Vec<SocketAddr>, start: Instant) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (stop, served, errors) = (stop.clone(), served.clone(), errors.clone());
            async move {
                let mut clients = Vec::new();
                for addr in &addrs {
                    clients.push(Client::connect_addr(*addr).await);
                }
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for (client, addr) in clients.iter_mut().zip(&addrs) {
                        n += 1;
                        let key = format!("t{}", n % 100);
                        let value = n.to_string();
                        let set = client.cmd(&["SET", &key, &value]).await;
                        let get = client.cmd(&["GET", &key]).await;
                        match (set, get) {
                            (Reply::Status(_), Reply::Bulk(_)) => {
                                served.fetch_add(1, Ordering::Relaxed);
                            }
                            (set, get) => errors.lock().unwrap().push((
                                start.elapsed(),
                                *addr,
                                format!("{set:?} / {get:?}"),
                            )),
                        }
                    }
                    // Pacing the load, not synchronising.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        Traffic {
            stop,
            served,
            errors,
            task,
        }
    }

    fn errors(&self) -> Vec<(Duration, SocketAddr, String)> {
        self.errors.lock().unwrap().clone()
    }

    /// Waits until `more` requests more than now were served.
    async fn wait_served(&self, more: u64) {
        let target = self.served.load(Ordering::Relaxed) + more;
        wait_until(Duration::from_secs(5), "requests to be served", || async {
            self.served.load(Ordering::Relaxed) >= target
        })
        .await;
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
    }
}

/// `FLEETPEER` on the admin port at `admin`.
async fn fleet_peer(admin: SocketAddr) -> Reply {
    let mut client = Client::connect_addr(admin).await;
    assert!(client.cmd(&["AUTH", PASSWORD]).await.is_ok());
    client.cmd(&["FLEETPEER"]).await
}

/// Watches a fleet for the unsafe overlap of etcd's return: a proxy still serving frozen
/// while another has installed a topology newer than `epoch` (checked every 5 ms).
struct FrozenOverlap {
    /// The ids of the proxies frozen when it was last seen, if it ever was.
    seen: Arc<Mutex<Option<Vec<String>>>>,
    /// The checking task.
    checker: tokio::task::JoinHandle<()>,
}

impl FrozenOverlap {
    fn watch(proxies: &[Proxy], epoch: u64) -> Self {
        let seen = Arc::new(Mutex::new(None));
        let watched: Vec<_> = proxies
            .iter()
            .map(|p| {
                (
                    Arc::clone(p.state()),
                    Arc::clone(p.controller().fleet().expect("fleet")),
                )
            })
            .collect();
        let checker = tokio::spawn({
            let seen = Arc::clone(&seen);
            async move {
                loop {
                    let newer = watched
                        .iter()
                        .any(|(state, _)| state.router.load().epoch() > epoch);
                    let frozen = watched
                        .iter()
                        .filter(|(_, fleet)| fleet.role() == FleetRole::Frozen)
                        .map(|(_, fleet)| fleet.id().to_owned())
                        .collect::<Vec<_>>();
                    if newer && !frozen.is_empty() {
                        *seen.lock().unwrap() = Some(frozen);
                    }
                    // The polling interval of this check.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        });
        Self { seen, checker }
    }

    /// Stops watching; the proxies seen frozen at such a moment, if any.
    fn stop(self) -> Option<Vec<String>> {
        self.checker.abort();
        self.seen.lock().unwrap().take()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_entirely_down_every_proxy_serves_the_last_topology_frozen() {
    redshard_tests::server::init_logs();
    let mut etcd = EtcdServer::start();
    let master = RedisServer::start();
    let mut proxies = Vec::new();
    for _ in 0..3 {
        let config = config(&etcd.addr(), "/frozen", &master.addr());
        proxies.push(Proxy::start(config).await.expect("proxy starts"));
    }
    wait_fleet(&proxies).await;
    let epoch = proxies[0].epoch();
    let start = Instant::now();
    let traffic = Traffic::start(proxies.iter().map(Proxy::local_addr).collect(), start);
    traffic.wait_served(30).await;

    etcd.stop();
    let stopped = start.elapsed();
    wait_until(
        Duration::from_millis(TTL_MS + 3000),
        "every proxy to freeze once its session is lost",
        || async { proxies.iter().all(|p| role(p) == FleetRole::Frozen) },
    )
    .await;
    let frozen = start.elapsed();
    eprintln!(
        "every proxy frozen {} ms after etcd stopped",
        (frozen - stopped).as_millis()
    );
    // Served through the freeze, and while frozen.
    traffic.wait_served(100).await;
    assert_eq!(traffic.errors(), Vec::new(), "errors while etcd was down");
    for proxy in &proxies {
        assert!(proxies.iter().all(|p| role(p) == FleetRole::Frozen));
        assert_eq!(proxy.epoch(), epoch, "the topology changed while frozen");
        let mut client = Client::connect_addr(proxy.local_addr()).await;
        assert_eq!(
            client.info_field("redshard", "fleet_role").await.as_deref(),
            Some("frozen")
        );
        assert_eq!(metric(proxy, "redshard_fleet_frozen"), 1.0);
        assert_eq!(metric(proxy, "redshard_fleet_leader"), 0.0);
        let peer = fleet_peer(proxy.admin_addr().expect("admin port")).await;
        assert_eq!(peer.field("role"), &Reply::bulk("frozen"), "{peer:?}");
        assert_eq!(peer.field("session"), &Reply::bulk("lost"), "{peer:?}");
        assert_eq!(peer.field("contact"), &Reply::bulk("no"), "{peer:?}");
        assert_eq!(peer.field("epoch"), &Reply::Int(epoch as i64), "{peer:?}");
    }

    etcd.restart();
    let restarted = start.elapsed();
    wait_until(
        Duration::from_secs(20),
        "every proxy to have a session again, one leading",
        || async {
            proxies
                .iter()
                .all(|p| matches!(role(p), FleetRole::Following | FleetRole::Leading))
                && proxies
                    .iter()
                    .filter(|p| role(p) == FleetRole::Leading)
                    .count()
                    == 1
        },
    )
    .await;
    eprintln!(
        "every proxy back with a session {} ms after etcd restarted",
        (start.elapsed() - restarted).as_millis()
    );
    traffic.wait_served(100).await;
    let errors = traffic.errors();
    eprintln!(
        "{} errors while etcd came back, {:?}",
        errors.len(),
        errors
            .iter()
            .map(|(at, addr, _)| (at.as_millis(), *addr))
            .collect::<Vec<_>>()
    );
    assert!(
        errors.iter().all(|(at, _, _)| *at > restarted),
        "errors before etcd returned: {errors:?}"
    );
    traffic.stop().await;
    for proxy in &proxies {
        assert_eq!(metric(proxy, "redshard_fleet_frozen"), 0.0);
        let mut client = Client::connect_addr(proxy.local_addr()).await;
        assert!(client.cmd(&["SET", "after", "1"]).await.is_ok());
        assert_eq!(client.cmd(&["GET", "after"]).await, Reply::bulk("1"));
    }
    for proxy in proxies {
        proxy.shutdown(Duration::from_secs(2)).await;
    }
}

/// A TCP relay on 127.0.0.1 to `target`, which the test can cut: every connection through it
/// is closed and new ones are closed at once, until it is restored.
struct Relay {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(target: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (cut, cut_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *cut_rx.borrow() {
                    continue;
                }
                let target = target.clone();
                let mut cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Relay { addr, cut, task }
    }

    fn set_cut(&self, cut: bool) {
        self.cut.send_replace(cut);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.set_cut(true);
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_cut_off_from_etcd_alone_stops_serving_and_the_others_carry_on() {
    redshard_tests::server::init_logs();
    let etcd = EtcdServer::start();
    let master = RedisServer::start();
    let relay = Relay::start(etcd.addr()).await;
    let mut proxies = Vec::new();
    for i in 0..3 {
        // The last one reaches etcd through the relay.
        let through = if i == 2 {
            relay.addr.to_string()
        } else {
            etcd.addr()
        };
        let config = config(&through, "/cut", &master.addr());
        proxies.push(Proxy::start(config).await.expect("proxy starts"));
    }
    wait_fleet(&proxies).await;
    let cut = &proxies[2];
    let mut client = Client::connect_addr(cut.local_addr()).await;
    assert!(client.cmd(&["SET", "k", "v"]).await.is_ok());
    // Every role the cut proxy takes, to show it never freezes.
    let mut roles = cut.controller().fleet().expect("fleet").subscribe();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let watcher = tokio::spawn({
        let seen = seen.clone();
        async move {
            while roles.changed().await.is_ok() {
                let role = *roles.borrow_and_update();
                seen.lock().unwrap().push(role);
            }
        }
    });
    let start = Instant::now();
    let others = vec![proxies[0].local_addr(), proxies[1].local_addr()];
    let traffic = Traffic::start(others, start);

    relay.set_cut(true);
    let cut_at = Instant::now();
    wait_until(
        Duration::from_millis(TTL_MS + 2000),
        "the cut-off proxy to stop serving",
        || async { role(cut) == FleetRole::Offline },
    )
    .await;
    let stopped = cut_at.elapsed();
    eprintln!(
        "the cut-off proxy stopped serving {} ms after the cut",
        stopped.as_millis()
    );
    assert!(
        stopped <= Duration::from_millis(TTL_MS + 500),
        "stopped after {stopped:?}, beyond its lease"
    );
    match client.cmd(&["GET", "k"]).await {
        Reply::Error(e) => assert!(
            e.starts_with("CLUSTERDOWN The proxy lost its etcd session"),
            "{e}"
        ),
        other => panic!("served without a session: {other:?}"),
    }
    // The others carry on, one of them leading.
    traffic.wait_served(100).await;
    wait_until(
        Duration::from_secs(10),
        "one of the others to lead",
        || async { proxies[..2].iter().any(|p| role(p) == FleetRole::Leading) },
    )
    .await;
    assert!(proxies[..2]
        .iter()
        .all(|p| matches!(role(p), FleetRole::Following | FleetRole::Leading)));
    // Still stopped a poll interval later (it keeps asking the others).
    tokio::time::sleep(Duration::from_millis(600)).await; // longer than two polls, to show nothing changes
    assert_eq!(role(cut), FleetRole::Offline);

    relay.set_cut(false);
    wait_until(
        Duration::from_secs(15),
        "the cut-off proxy to serve again",
        || async { matches!(role(cut), FleetRole::Following | FleetRole::Leading) },
    )
    .await;
    wait_until(Duration::from_secs(5), "GET to be served again", || async {
        let mut client = Client::connect_addr(cut.local_addr()).await;
        client.cmd(&["GET", "k"]).await == Reply::bulk("v")
    })
    .await;
    traffic.wait_served(50).await;
    assert_eq!(traffic.errors(), Vec::new(), "errors through the others");
    traffic.stop().await;
    watcher.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.contains(&FleetRole::Frozen), "it froze: {seen:?}");
    assert!(seen.contains(&FleetRole::Offline), "roles seen: {seen:?}");
    for proxy in proxies {
        proxy.shutdown(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_alone_in_its_fleet_freezes_when_etcd_goes() {
    redshard_tests::server::init_logs();
    let mut etcd = EtcdServer::start();
    let master = RedisServer::start();
    let proxy = Proxy::start(config(&etcd.addr(), "/alone", &master.addr()))
        .await
        .expect("proxy starts");
    wait_until(Duration::from_secs(10), "the proxy to lead", || async {
        role(&proxy) == FleetRole::Leading
    })
    .await;
    let mut client = Client::connect_addr(proxy.local_addr()).await;
    assert!(client.cmd(&["SET", "k", "v"]).await.is_ok());

    etcd.stop();
    wait_until(
        Duration::from_millis(TTL_MS + 3000),
        "the proxy to freeze",
        || async { role(&proxy) == FleetRole::Frozen },
    )
    .await;
    assert!(client.cmd(&["SET", "k", "w"]).await.is_ok());
    assert_eq!(client.cmd(&["GET", "k"]).await, Reply::bulk("w"));

    etcd.restart();
    wait_until(
        Duration::from_secs(20),
        "the proxy to lead again",
        || async { role(&proxy) == FleetRole::Leading },
    )
    .await;
    assert_eq!(client.cmd(&["GET", "k"]).await, Reply::bulk("w"));
    proxy.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_lost_while_frozen_is_failed_over_only_once_etcd_returns() {
    redshard_tests::server::init_logs();
    let mut etcd = EtcdServer::start();
    let node = &["--repl-diskless-sync-delay", "0"];
    let mut master = RedisServer::start_with(node);
    let replica = RedisServer::start_with(node);
    let mut proxies = Vec::new();
    for _ in 0..3 {
        let config = config_with(
            &etcd.addr(),
            "/frozen-failover",
            &master.addr(),
            Some(&replica.addr()),
        );
        proxies.push(Proxy::start(config).await.expect("proxy starts"));
    }
    wait_fleet(&proxies).await;
    wait_until(
        Duration::from_secs(20),
        "the replica to be in sync everywhere",
        || async {
            proxies.iter().all(|p| {
                p.state().router.load().topology().shards[0]
                    .replicas
                    .iter()
                    .all(|r| r.state == redshard_config::ReplicaState::InSync)
                    && (role(p) != FleetRole::Leading
                        || redshard_tests::cluster::replication_settled(p))
            })
        },
    )
    .await;

    etcd.stop();
    wait_until(
        Duration::from_millis(TTL_MS + 3000),
        "every proxy to freeze",
        || async { proxies.iter().all(|p| role(p) == FleetRole::Frozen) },
    )
    .await;
    let epoch = proxies[0].epoch();
    master.kill();
    // Nobody can fail it over: every proxy answers CLUSTERDOWN for the shard at once.
    for proxy in &proxies {
        wait_until(Duration::from_secs(5), "the shard to be down", || async {
            let mut client = Client::connect_addr(proxy.local_addr()).await;
            matches!(client.cmd(&["SET", "k", "v"]).await, Reply::Error(e) if e.starts_with("CLUSTERDOWN"))
        })
        .await;
    }
    // Longer than a failover takes with etcd up (down_after_ms 500), to show none happens.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for proxy in &proxies {
        assert_eq!(role(proxy), FleetRole::Frozen);
        assert_eq!(proxy.epoch(), epoch, "the topology changed while frozen");
    }

    // The safety of etcd's return: no proxy serves frozen once any proxy has installed a
    // newer topology (checked every 5 ms until the failover reached every proxy).
    let overlap = FrozenOverlap::watch(&proxies, epoch);
    etcd.restart();
    let restarted = Instant::now();
    for proxy in &proxies {
        wait_until(
            Duration::from_secs(20),
            "the replica to be promoted once etcd is back",
            || async {
                let mut client = Client::connect_addr(proxy.local_addr()).await;
                client.cmd(&["SET", "k", "v"]).await.is_ok()
            },
        )
        .await;
        let topology = Arc::clone(proxy.state().router.load().topology());
        assert!(topology.epoch > epoch);
        assert_eq!(topology.shards[0].master.to_string(), replica.addr());
    }
    eprintln!(
        "failed over {} ms after etcd restarted",
        restarted.elapsed().as_millis()
    );
    assert_eq!(
        overlap.stop(),
        None,
        "proxies still frozen when a newer topology was installed"
    );
    for proxy in proxies {
        proxy.shutdown(Duration::from_secs(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_proxies_stop_for_a_proxy_they_had_forgotten_that_reaches_etcd_again() {
    redshard_tests::server::init_logs();
    let etcd = EtcdServer::start();
    let node = &["--repl-diskless-sync-delay", "0"];
    let mut master = RedisServer::start_with(node);
    let replica = RedisServer::start_with(node);
    // p0 and p1 reach etcd through one relay, p2 through another.
    let relay_a = Relay::start(etcd.addr()).await;
    let relay_b = Relay::start(etcd.addr()).await;
    let mut proxies = Vec::new();
    for relay in [&relay_a, &relay_a, &relay_b] {
        let config = config_with(
            &relay.addr.to_string(),
            "/forgotten",
            &master.addr(),
            Some(&replica.addr()),
        );
        proxies.push(Proxy::start(config).await.expect("proxy starts"));
    }
    wait_fleet(&proxies).await;
    wait_until(
        Duration::from_secs(20),
        "the replica to be in sync everywhere",
        || async {
            proxies.iter().all(|p| {
                p.state().router.load().topology().shards[0]
                    .replicas
                    .iter()
                    .all(|r| r.state == redshard_config::ReplicaState::InSync)
                    && (role(p) != FleetRole::Leading
                        || redshard_tests::cluster::replication_settled(p))
            })
        },
    )
    .await;
    let view = |p: &Proxy| p.controller().fleet().expect("fleet").view().members.len();

    // p2 is cut off first: it stops, and the others forget it once its lease expires.
    relay_b.set_cut(true);
    wait_until(
        Duration::from_secs(10),
        "p2 to stop and the others to forget it",
        || async {
            role(&proxies[2]) == FleetRole::Offline
                && view(&proxies[0]) == 2
                && view(&proxies[1]) == 2
        },
    )
    .await;
    // Then p0 and p1 lose etcd too: nobody reaches it, they freeze.
    relay_a.set_cut(true);
    wait_until(
        Duration::from_millis(TTL_MS + 3000),
        "p0 and p1 to freeze",
        || async { proxies[..2].iter().all(|p| role(p) == FleetRole::Frozen) },
    )
    .await;
    let epoch = proxies[0].epoch();

    // p2 reaches etcd again, alone: it leads, and fails the killed master over. Meanwhile
    // p0 and p1 must have stopped serving the old topology.
    let overlap = FrozenOverlap::watch(&proxies, epoch);
    relay_b.set_cut(false);
    master.kill();
    wait_until(
        Duration::from_secs(20),
        "p2 to fail the master over",
        || async { proxies[2].epoch() > epoch },
    )
    .await;
    assert_eq!(
        proxies[2].state().router.load().topology().shards[0]
            .master
            .to_string(),
        replica.addr()
    );
    for proxy in &proxies[..2] {
        assert_eq!(role(proxy), FleetRole::Offline);
    }
    assert_eq!(
        overlap.stop(),
        None,
        "proxies still frozen when p2 changed the topology"
    );

    // Their link back: they install the new topology and serve again.
    relay_a.set_cut(false);
    for proxy in &proxies {
        wait_until(Duration::from_secs(20), "every proxy to serve", || async {
            let mut client = Client::connect_addr(proxy.local_addr()).await;
            client.cmd(&["SET", "k", "v"]).await.is_ok()
        })
        .await;
        assert!(proxy.epoch() > epoch);
    }
    for proxy in proxies {
        proxy.shutdown(Duration::from_secs(2)).await;
    }
}
