//! The HTTP endpoint: `/metrics` shows the proxy's state, `/livez` and `/readyz` follow the
//! masters, and `POST /-/reload` applies `[limits]` from the file or keeps the running
//! configuration when the file is invalid.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use redshard_config::{Config, Topology};
use redshard_control::migrate::MigrationState;
use redshard_proxy::metrics::healthcheck::{healthcheck, HealthcheckError};
use redshard_proxy::{Proxy, StateOptions};
use redshard_tests::cluster::{config_text, even_slots, key_on};
use redshard_tests::replication::wait_until;
use redshard_tests::{Client, RedisServer, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Masters (and replicas) behind a proxy that serves the HTTP endpoint, started from a
/// config file.
struct HttpCluster {
    masters: Vec<RedisServer>,
    /// One per shard when started with replicas.
    replicas: Vec<RedisServer>,
    proxy: Proxy,
    /// Where the HTTP endpoint listens.
    http: SocketAddr,
    /// The configuration file (in `_dir`).
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl HttpCluster {
    /// `shards` masters and a proxy whose config file holds `extra` before the shards.
    async fn start(shards: usize, extra: &str) -> Self {
        Self::start_with(shards, extra, &[]).await
    }

    /// Like [`HttpCluster::start`], with extra `redis-server` arguments.
    async fn start_with(shards: usize, extra: &str, server_args: &[&str]) -> Self {
        Self::start_nodes(shards, false, extra, server_args).await
    }

    /// `shards` masters, each with one replica, and a proxy with default settings.
    async fn start_replicated(shards: usize) -> Self {
        Self::start_nodes(shards, true, "", &[]).await
    }

    /// `shards` masters (and one replica each `with_replicas`) started with `server_args`,
    /// and a proxy whose config file holds `extra` before the shards.
    async fn start_nodes(
        shards: usize,
        with_replicas: bool,
        extra: &str,
        server_args: &[&str],
    ) -> Self {
        let start = |n: usize| -> Vec<RedisServer> {
            (0..n)
                .map(|_| RedisServer::start_with(server_args))
                .collect()
        };
        let masters = start(shards);
        let replicas = start(if with_replicas { shards } else { 0 });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("redshard.toml");
        let addrs: Vec<String> = masters.iter().map(RedisServer::addr).collect();
        let replica_addrs: Vec<String> = replicas.iter().map(RedisServer::addr).collect();
        std::fs::write(&path, config_text(&addrs, &replica_addrs, extra)).unwrap();
        let config = Config::load(&path).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let topology = Topology::from_config(&config);
        let options = StateOptions {
            config_path: Some(path.clone()),
            log_level: None,
        };
        let proxy = Proxy::serve(listener, Some(http), config, topology, options).unwrap();
        // Under Redis replication the configured replicas are in sync once the controller saw
        // them follow their masters.
        redshard_tests::wait_until(Duration::from_secs(10), "the replicas in sync", || async {
            redshard_tests::cluster::replication_settled(&proxy)
        })
        .await;
        let http = proxy.metrics_addr().unwrap();
        Self {
            masters,
            replicas,
            proxy,
            http,
            path,
            _dir: dir,
        }
    }

    /// Rewrites the config file with `extra` before the same shards.
    fn rewrite(&self, extra: &str) {
        let addrs: Vec<String> = self.masters.iter().map(RedisServer::addr).collect();
        std::fs::write(&self.path, config_text(&addrs, &[], extra)).unwrap();
    }

    async fn get(&self, path: &str) -> Answer {
        http(self.http, "GET", path).await
    }

    /// `INFO sections...` through the proxy, as text.
    async fn info(&self, sections: &[&str]) -> String {
        let mut args = vec!["INFO"];
        args.extend(sections);
        let mut client = Client::connect_addr(self.proxy.local_addr()).await;
        match client.cmd(&args).await {
            Reply::Bulk(Some(text)) => String::from_utf8(text).unwrap(),
            other => panic!("INFO {sections:?}: {other:?}"),
        }
    }

    /// Scrapes `/metrics` until `check` holds for the page, for at most `timeout`; returns
    /// that page.
    async fn scrape_until(
        &self,
        timeout: Duration,
        what: &str,
        check: impl Fn(&Answer) -> bool,
    ) -> Answer {
        let deadline = Instant::now() + timeout;
        loop {
            let page = self.get("/metrics").await;
            if check(&page) {
                return page;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}:\n{}",
                page.body
            );
            // Polling interval of this wait loop, not synchronisation.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `path` until its status is `status`, for at most 5 s.
    async fn wait_for(&self, path: &str, status: u16) -> Answer {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let answer = self.get(path).await;
            if answer.status == status {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never answered {status}: {answer:?}"
            );
            // Polling interval of this wait loop, not synchronisation.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// One HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    /// The value of the sample `series` (`name{labels}`) in a metrics page.
    fn sample(&self, series: &str) -> Option<&str> {
        self.body
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
    }
}

/// Sends one request without a body and reads the whole answer.
async fn http(addr: SocketAddr, method: &str, path: &str) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes))
        .await
        .expect("answer in time")
        .unwrap();
    let text = String::from_utf8(bytes).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    let status = head[9..12].parse().unwrap();
    Answer {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_build_info_topology_slots_and_clients() {
    let cluster = HttpCluster::start(3, "").await;
    let mut client = Client::connect_addr(cluster.proxy.local_addr()).await;
    assert_eq!(client.cmd(&["PING"]).await, Reply::Status("PONG".into()));

    let page = cluster.get("/metrics").await;
    assert_eq!(page.status, 200);
    assert!(
        page.head
            .contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"),
        "{}",
        page.head
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        page.sample(&format!("redshard_build_info{{version=\"{version}\"}}")),
        Some("1")
    );
    assert_eq!(
        page.sample("redshard_topology_epoch"),
        Some(cluster.proxy.epoch().to_string().as_str())
    );
    assert!(page.body.contains("# TYPE redshard_slots gauge\n"));
    let mut total = 0;
    for (i, range) in even_slots(3).iter().enumerate() {
        let (a, b) = range.split_once('-').unwrap();
        let count = b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1;
        let series = format!("redshard_slots{{shard=\"s{}\"}}", i + 1);
        assert_eq!(
            page.sample(&series),
            Some(count.to_string().as_str()),
            "{series}"
        );
        total += count;
    }
    assert_eq!(total, 16384);
    // State metrics are this proxy's own, exact.
    assert_eq!(page.sample("redshard_connected_clients"), Some("1"));
    assert_eq!(page.sample("redshard_parked_clients"), Some("0"));
    assert_eq!(
        page.sample("redshard_connections_received_total"),
        Some("1")
    );
    assert_eq!(
        page.sample("redshard_rejected_connections_total"),
        Some("0")
    );
    // Event metrics are registered from the start.
    assert!(page.sample("redshard_net_input_bytes_total").is_some());
    assert!(page
        .body
        .contains("# TYPE redshard_protocol_errors_total counter\n"));

    // Every master is probed and shows up.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let page = cluster.get("/metrics").await;
        let up = cluster
            .masters
            .iter()
            .filter(|m| {
                page.sample(&format!("redshard_backend_up{{node=\"{}\"}}", m.addr())) == Some("1")
            })
            .count();
        if up == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backends never up:\n{}",
            page.body
        );
        // Polling interval of this wait loop, not synchronisation.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.proxy.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_masters_and_livez_does_not() {
    let mut cluster = HttpCluster::start(3, "").await;
    let live = cluster.get("/livez").await;
    assert_eq!((live.status, live.body.as_str()), (200, "ok\n"));
    let ready = cluster.wait_for("/readyz", 200).await;
    assert_eq!(ready.body, "ready\n");
    let url = format!("http://{}/readyz", cluster.http);
    let check = tokio::task::spawn_blocking({
        let url = url.clone();
        move || healthcheck(&url, Duration::from_secs(2))
    });
    assert_eq!(check.await.unwrap().unwrap(), "ready\n");

    // The only master of s2 dies: not ready, and the answer says which and why.
    cluster.masters[1].kill();
    let dead = cluster.masters[1].addr();
    let not_ready = cluster.wait_for("/readyz", 503).await;
    assert!(not_ready.body.starts_with("not ready\n"), "{not_ready:?}");
    let reasons: Vec<&str> = not_ready.body.lines().skip(1).collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].starts_with(&format!(
            "shard \"s2\" (5461 slots): master {dead} is down: "
        )),
        "{reasons:?}"
    );
    assert_eq!(cluster.get("/livez").await.status, 200);
    let page = cluster.get("/metrics").await;
    assert_eq!(
        page.sample(&format!("redshard_backend_up{{node=\"{dead}\"}}")),
        Some("0")
    );
    let check = tokio::task::spawn_blocking(move || healthcheck(&url, Duration::from_secs(2)));
    match check.await.unwrap() {
        Err(HealthcheckError::NotReady { status, body, .. }) => {
            assert_eq!(status, 503);
            assert!(body.contains(&dead), "{body}");
        }
        other => panic!("{other:?}"),
    }

    // It comes back: ready again.
    cluster.masters[1].restart();
    cluster.wait_for("/readyz", 200).await;
    cluster.proxy.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_limits_and_keeps_the_running_config_on_errors() {
    let cluster = HttpCluster::start(2, "[limits]\nmax_clients = 100\n").await;
    let before = cluster.get("/metrics").await;
    let reloads = |page: &Answer| -> u64 {
        page.sample("redshard_config_reloads_total{result=\"ok\"}")
            .map_or(0, |v| v.parse().unwrap())
    };

    // Unchanged file: nothing to do.
    let answer = http(cluster.http, "POST", "/-/reload").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, "reloaded\napplied: nothing changed\n")
    );

    // A new limit applies; a new flag and log level need a restart (no log hook in tests).
    cluster.rewrite(
        "allow_flush = true\n[limits]\nmax_clients = 1\nmax_bulk_bytes = 1000\n[log]\nlevel = \"debug\"\n",
    );
    let answer = http(cluster.http, "POST", "/-/reload").await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (
            200,
            "reloaded\napplied: limits.max_clients, limits.max_bulk_bytes\n\
             needs a restart: allow_flush, log.level\n"
        )
    );
    let live = cluster.proxy.live_config();
    assert_eq!(live.limits.max_clients, 1);
    assert!(
        !live.allow_flush,
        "needs a restart: still the running value"
    );
    assert_eq!(live.log.level, "info");
    assert_eq!(cluster.proxy.state().config.limits.max_clients, 100);
    // The listener applies the new max_clients to the next client.
    let mut first = Client::connect_addr(cluster.proxy.local_addr()).await;
    assert_eq!(first.cmd(&["PING"]).await, Reply::Status("PONG".into()));
    let mut second = Client::connect_addr(cluster.proxy.local_addr()).await;
    assert_eq!(
        second.read().await,
        Reply::Error("ERR max number of clients reached".into())
    );
    // The request limits apply to connections opened after the reload.
    let big = "x".repeat(2000);
    assert_eq!(
        first.cmd(&["SET", "k", big.as_str()]).await,
        Reply::Error("ERR Protocol error: invalid bulk length".into())
    );
    let after = cluster.get("/metrics").await;
    assert!(reloads(&after) >= reloads(&before) + 2, "{}", after.body);

    // An invalid file is refused, with the file, line and key; the running config stays.
    cluster.rewrite("[limits]\nmax_clients = 0\n");
    let answer = http(cluster.http, "POST", "/-/reload").await;
    assert_eq!(answer.status, 400, "{answer:?}");
    let expected = format!(
        "{}: line 3: limits.max_clients: must be at least 1, not 0\n",
        cluster.path.display()
    );
    assert_eq!(answer.body, expected);
    assert_eq!(cluster.proxy.live_config().limits.max_clients, 1);
    // So is a file that is not TOML (through the API SIGHUP uses).
    std::fs::write(&cluster.path, "[[[ not toml").unwrap();
    let err = cluster.proxy.reload().unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&cluster.path.display().to_string()),
        "{err}"
    );
    assert_eq!(cluster.proxy.live_config().limits.max_clients, 1);
    cluster.proxy.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_binds_metrics_listen_unless_off() {
    let master = RedisServer::start();
    let text = config_text(
        &[master.addr()],
        &[],
        "metrics_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nadmin_password = \"pw\"\nadmin_socket = \"off\"",
    );
    let config = Config::from_toml_str(&text, "test.toml").unwrap();
    let proxy = Proxy::start(config).await.unwrap();
    let http_addr = proxy.metrics_addr().expect("the endpoint runs");
    let admin_addr = proxy.admin_addr().expect("the admin port runs");
    assert_eq!(
        Client::connect_addr(admin_addr).await.cmd(&["PING"]).await,
        Reply::Status("PONG".into())
    );
    assert_ne!(http_addr.port(), 0);
    assert_eq!(http(http_addr, "GET", "/livez").await.status, 200);
    // Without a file, a reload has nothing to read.
    let answer = http(http_addr, "POST", "/-/reload").await;
    assert_eq!(answer.status, 400);
    assert!(
        answer
            .body
            .contains("not started from a configuration file"),
        "{answer:?}"
    );
    assert_eq!(http(http_addr, "GET", "/nope").await.status, 404);
    assert_eq!(http(http_addr, "DELETE", "/metrics").await.status, 405);
    proxy.shutdown(Duration::from_secs(2)).await;
    assert!(
        TcpStream::connect(http_addr).await.is_err(),
        "the endpoint stops with the proxy"
    );

    let text = config_text(
        &[master.addr()],
        &[],
        "metrics_listen = \"off\"\nadmin_listen = \"off\"\nadmin_socket = \"off\"",
    );
    let config = Config::from_toml_str(&text, "test.toml").unwrap();
    let proxy = Proxy::start(config).await.unwrap();
    assert_eq!(proxy.metrics_addr(), None);
    assert_eq!(proxy.admin_addr(), None);
    proxy.shutdown(Duration::from_secs(2)).await;
}

/// The value of `series` in a scrape, 0 when absent (counters start at 0).
fn value(answer: &Answer, series: &str) -> f64 {
    answer.sample(series).map_or(0.0, |v| v.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_and_traffic_series_move_with_traffic() {
    let cluster = HttpCluster::start(2, "").await;
    let before = cluster.get("/metrics").await;
    let mut c = Client::connect_addr(cluster.proxy.local_addr()).await;
    for i in 0..10 {
        assert!(c.cmd(&["SET", &format!("m:{i}"), "v"]).await.is_ok());
    }
    assert!(matches!(c.cmd(&["INCR", "m:0"]).await, Reply::Error(_)));
    assert!(matches!(
        c.cmd(&["MGET", "m:1", "m:2", "m:3"]).await,
        Reply::Array(_)
    ));
    let mut bad = Client::connect_addr(cluster.proxy.local_addr()).await;
    bad.send_raw(b"*1\r\n+PING\r\n").await;
    assert!(matches!(bad.read().await, Reply::Error(_)));
    let after = cluster.get("/metrics").await;
    let delta = |series: &str| value(&after, series) - value(&before, series);
    assert!(
        delta("redshard_commands_total{cmd=\"set\"}") >= 10.0,
        "{}",
        after.body
    );
    assert!(delta("redshard_commands_total{cmd=\"incr\"}") >= 1.0);
    assert!(delta("redshard_commands_failed_calls_total{cmd=\"incr\"}") >= 1.0);
    assert!(delta("redshard_commands_total{cmd=\"mget\"}") >= 1.0);
    assert!(delta("redshard_commands_duration_seconds_total{cmd=\"set\"}") > 0.0);
    assert!(
        delta("redshard_command_duration_seconds_count{cmd=\"set\"}") >= 10.0,
        "{}",
        after.body
    );
    assert!(delta("redshard_command_duration_seconds_bucket{cmd=\"set\",le=\"+Inf\"}") >= 10.0);
    assert!(delta("redshard_net_input_bytes_total") > 300.0);
    assert!(delta("redshard_net_output_bytes_total") > 50.0);
    assert!(delta("redshard_protocol_errors_total") >= 1.0);
    let lanes = after
        .body
        .lines()
        .filter(|l| l.starts_with("redshard_backend_connections{"))
        .count();
    assert!(
        lanes >= 2,
        "backend connection gauges per node: {}",
        after.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_connections_use_their_own_backend_user() {
    // Client traffic runs as a restricted ACL user (which may not even PING); the proxy's
    // probes PING as another one, so /readyz turning 200 shows the control user is used.
    let server_args = [
        "--user",
        "default",
        "off",
        "--user",
        "traffic",
        "on",
        ">t-pw",
        "~*",
        "&*",
        "+@all",
        "-@dangerous",
        "-ping",
        "--user",
        "control",
        "on",
        ">c-pw",
        "+ping",
        "+auth",
    ];
    let extra = "[backend]\nusername = \"traffic\"\npassword = \"t-pw\"\nmanage_acl = false\n\
                 control_username = \"control\"\ncontrol_password = \"c-pw\"\n";
    let cluster = HttpCluster::start_with(2, extra, &server_args).await;
    // Ready only once the probes found every master up (never before the first probe), so
    // this fails if they cannot PING.
    cluster.wait_for("/readyz", 200).await;
    let mut c = Client::connect_addr(cluster.proxy.local_addr()).await;
    assert!(c.cmd(&["SET", "k", "v"]).await.is_ok());
    // The backend's own ACL refuses what the client user may not run, whatever the proxy allows.
    let Reply::Error(e) = c.cmd(&["KEYS", "*"]).await else {
        panic!("KEYS must be refused by the backend ACL")
    };
    assert!(e.starts_with("NOPERM"), "{e}");
}

/// The line of `text` (an INFO reply) that starts with `prefix`.
fn info_line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    text.lines().find(|line| line.starts_with(prefix))
}

/// The `field=value` of an INFO line such as `replica0:shard=s1,addr=...`.
fn info_field<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    let (_, fields) = line.split_once(':')?;
    fields
        .split(',')
        .find_map(|f| f.strip_prefix(field)?.strip_prefix('='))
}

/// `mirror_state` of replica `node` of `shard` for each state, in_sync/syncing/stale.
fn mirror_states(page: &Answer, shard: &str, node: &str) -> [Option<String>; 3] {
    ["in_sync", "syncing", "stale"].map(|state| {
        page.sample(&format!(
            "redshard_mirror_state{{shard=\"{shard}\",node=\"{node}\",state=\"{state}\"}}"
        ))
        .map(str::to_owned)
    })
}

fn states(values: [&str; 3]) -> [Option<String>; 3] {
    values.map(|v| Some(v.to_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_series_and_info_show_each_replica_and_a_stale_one() {
    // About proxy mirroring's own links and series.
    let mut cluster =
        HttpCluster::start_nodes(2, true, redshard_tests::cluster::PROXY_MIRRORING, &[]).await;
    let mut client = Client::connect_addr(cluster.proxy.local_addr()).await;
    let keys = [key_on(2, 0, "mirror"), key_on(2, 1, "mirror")];
    for round in 0..5 {
        for key in &keys {
            assert!(client.cmd(&["SET", key, &round.to_string()]).await.is_ok());
        }
    }
    let replicas: Vec<String> = cluster.replicas.iter().map(RedisServer::addr).collect();

    // Every replica in sync, with its lag and the writes it applied (sync mode: every
    // acknowledged write was applied, so at least the 5 SETs of its shard).
    let page = cluster.get("/metrics").await;
    for (i, replica) in replicas.iter().enumerate() {
        let shard = format!("s{}", i + 1);
        assert_eq!(
            mirror_states(&page, &shard, replica),
            states(["1", "0", "0"]),
            "{}",
            page.body
        );
        assert_eq!(
            page.sample(&format!("redshard_mirror_lag_writes{{node=\"{replica}\"}}")),
            Some("0")
        );
        let applied = value(
            &page,
            &format!("redshard_mirror_applied_writes_total{{node=\"{replica}\"}}"),
        );
        assert!(applied >= 5.0, "{}", page.body);
        assert_eq!(
            page.sample(&format!(
                "redshard_gate_state{{shard=\"{shard}\",state=\"open\"}}"
            )),
            Some("1")
        );
        assert_eq!(
            page.sample(&format!("redshard_failovers_total{{shard=\"{shard}\"}}")),
            Some("0")
        );
    }
    assert!(page.body.contains("# TYPE redshard_mirror_state gauge\n"));
    assert!(page
        .body
        .contains("# TYPE redshard_mirror_applied_writes_total counter\n"));
    assert_eq!(
        page.sample("redshard_replicas_marked_stale_total"),
        Some("0")
    );

    // INFO: not in the default set, shown by name and by `all`.
    assert!(!cluster.info(&[]).await.contains("# Mirror\r\n"));
    assert!(cluster.info(&["all"]).await.contains("# Mirror\r\n"));
    let info = cluster.info(&["mirror"]).await;
    assert!(
        info.starts_with("# Mirror\r\nmirror_mode:sync\r\n"),
        "{info}"
    );
    let line = info_line(&info, "replica0:").expect("a line per replica");
    assert_eq!(info_field(line, "shard"), Some("s1"), "{line}");
    assert_eq!(info_field(line, "addr"), Some(replicas[0].as_str()));
    assert_eq!(info_field(line, "state"), Some("in_sync"));
    assert_eq!(info_field(line, "lag"), Some("0"));
    assert!(info_field(line, "applied").unwrap().parse::<u64>().unwrap() >= 5);
    let replication = cluster.info(&["replication"]).await;
    assert!(
        replication.starts_with("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"),
        "{replication}"
    );
    let shard1 = info_line(&replication, "shard1:").expect("a line per shard");
    assert_eq!(info_field(shard1, "name"), Some("s2"));
    assert_eq!(info_field(shard1, "in_sync"), Some("1"));
    assert_eq!(info_field(shard1, "stale"), Some("0"));

    // s2's replica dies: the next write to s2 makes it stale.
    cluster.replicas[1].kill();
    assert!(client.cmd(&["SET", &keys[1], "after"]).await.is_ok());
    let page = cluster
        .scrape_until(Duration::from_secs(10), "the replica to be stale", |page| {
            mirror_states(page, "s2", &replicas[1]) == states(["0", "0", "1"])
        })
        .await;
    assert_eq!(
        mirror_states(&page, "s1", &replicas[0]),
        states(["1", "0", "0"]),
        "the other shard's replica stays in sync"
    );
    assert_eq!(
        page.sample("redshard_replicas_marked_stale_total"),
        Some("1")
    );
    let info = cluster.info(&["mirror", "replication"]).await;
    let line = info_line(&info, "replica1:").expect("the stale replica");
    assert_eq!(info_field(line, "state"), Some("stale"), "{info}");
    assert!(info.contains("replicas_marked_stale:1\r\n"), "{info}");
    let shard1 = info_line(&info, "shard1:").expect("a line per shard");
    assert_eq!(info_field(shard1, "stale"), Some("1"), "{info}");
    cluster.proxy.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_is_counted_in_metrics_info_and_the_controller() {
    let mut cluster = HttpCluster::start_replicated(2).await;
    let mut client = Client::connect_addr(cluster.proxy.local_addr()).await;
    let key = key_on(2, 0, "failover");
    assert!(client.cmd(&["SET", &key, "v"]).await.is_ok());
    let old = cluster.masters[0].addr();
    let new = cluster.replicas[0].addr();
    // Let the probes see every node up once.
    cluster.wait_for("/readyz", 200).await;
    let info = cluster.info(&["failover"]).await;
    assert!(
        info.starts_with("# Failover\r\nauto_failover:yes\r\nfailovers:0\r\nlast_failover:\r\n"),
        "{info}"
    );
    let shard0 = info_line(&info, "health0:").expect("a line per shard");
    assert_eq!(info_field(shard0, "master"), Some(old.as_str()));
    assert_eq!(info_field(shard0, "master_health"), Some("up"), "{info}");
    assert_eq!(info_field(shard0, "gate"), Some("open"));

    cluster.masters[0].kill();
    let page = cluster
        .scrape_until(Duration::from_secs(10), "the failover", |page| {
            page.sample("redshard_failovers_total{shard=\"s1\"}") == Some("1")
        })
        .await;
    assert_eq!(
        page.sample("redshard_failovers_total{shard=\"s2\"}"),
        Some("0")
    );
    // The fenced old master is listed as a stale replica of s1.
    assert_eq!(
        mirror_states(&page, "s1", &old),
        states(["0", "0", "1"]),
        "{}",
        page.body
    );
    let (count, line) = cluster.proxy.controller().failovers();
    assert_eq!(count, 1);
    let line = line.expect("a line on the last failover");
    assert!(
        line.starts_with(&format!(
            "shard s1: {new} promoted, old master {old} fenced"
        )),
        "{line}"
    );

    let info = cluster.info(&["failover"]).await;
    assert!(info.contains("\r\nfailovers:1\r\n"), "{info}");
    assert!(
        info.contains(&format!("\r\nlast_failover:{line}\r\n")),
        "{info}"
    );
    let shard0 = info_line(&info, "health0:").expect("a line per shard");
    assert_eq!(info_field(shard0, "master"), Some(new.as_str()), "{info}");
    assert_eq!(info_field(shard0, "failovers"), Some("1"));
    assert_eq!(
        info_field(info_line(&info, "health1:").unwrap(), "failovers"),
        Some("0")
    );
    assert!(client.cmd(&["SET", &key, "after"]).await.is_ok());
    cluster.proxy.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_shows_its_keys_bytes_and_slots_in_metrics_and_info() {
    let cluster = HttpCluster::start(2, "").await;
    let mut client = Client::connect_addr(cluster.proxy.local_addr()).await;
    let commands: Vec<Vec<String>> = (0..2000)
        .map(|i| vec!["SET".into(), format!("mig:{i}"), format!("value-{i}")])
        .collect();
    for reply in client.pipeline(&commands).await {
        assert!(reply.is_ok(), "{reply:?}");
    }
    // No migration yet: no migration series.
    let page = cluster.get("/metrics").await;
    assert!(!page.body.contains("redshard_migration_"), "{}", page.body);
    let info = cluster.info(&["migration"]).await;
    assert_eq!(
        info,
        "# Migration\r\nmigrations_running:0\r\nmigrations_queued:0\r\n"
    );

    let controller = std::sync::Arc::clone(cluster.proxy.controller());
    let ranges = controller
        .migrate_count("s1", "s2", 1024)
        .await
        .expect("queued");
    wait_until(
        Duration::from_secs(60),
        "the migration to finish",
        || async {
            let all = controller.migrations();
            assert!(
                !all.iter()
                    .any(|m| matches!(m.state, MigrationState::Failed(_))),
                "{all:?}"
            );
            all.iter().all(|m| m.state == MigrationState::Done)
        },
    )
    .await;
    let progress = controller.migrations();
    let keys_moved = progress[0].keys_moved;
    assert!(keys_moved > 0, "{progress:?}");

    let page = cluster.get("/metrics").await;
    let pair = "{from=\"s1\",to=\"s2\"}";
    let moved = value(&page, &format!("redshard_migration_keys_moved_total{pair}"));
    assert_eq!(moved, keys_moved as f64, "{}", page.body);
    assert!(
        value(
            &page,
            &format!("redshard_migration_bytes_moved_total{pair}")
        ) >= 7.0 * moved
    );
    assert_eq!(
        page.sample(&format!("redshard_migration_slots_remaining{pair}")),
        Some("0")
    );
    assert_eq!(page.sample("redshard_slots{shard=\"s1\"}"), Some("7168"));
    assert!(
        !page.body.contains("redshard_migration_eta_seconds{"),
        "no migration runs: {}",
        page.body
    );

    let info = cluster.info(&["migration"]).await;
    let line = info_line(&info, "migration0:").expect("the finished migration");
    assert_eq!(info_field(line, "from"), Some("s1"), "{info}");
    assert_eq!(info_field(line, "to"), Some("s2"));
    assert_eq!(info_field(line, "slots"), Some("1024"));
    assert_eq!(
        info_field(line, "ranges"),
        Some(ranges[0].to_string().as_str())
    );
    assert_eq!(info_field(line, "state"), Some("done"));
    assert_eq!(
        info_field(line, "keys_moved"),
        Some(keys_moved.to_string().as_str())
    );
    assert!(info_field(line, "rate_keys_per_sec").is_some());
    assert_eq!(info_field(line, "eta_seconds"), Some("0.0"));
    let totals = info_line(&info, "moved0:").expect("the totals per pair");
    assert_eq!(
        info_field(totals, "keys"),
        Some(keys_moved.to_string().as_str())
    );
    // A second migration between the same shards adds to the counters: they never go back.
    controller
        .migrate_count("s1", "s2", 1024)
        .await
        .expect("queued");
    wait_until(Duration::from_secs(60), "the second migration", || async {
        let all = controller.migrations();
        all.len() == 2 && all.iter().all(|m| m.state == MigrationState::Done)
    })
    .await;
    let both: u64 = controller.migrations().iter().map(|m| m.keys_moved).sum();
    assert!(both > keys_moved);
    let page = cluster.get("/metrics").await;
    assert_eq!(
        value(&page, &format!("redshard_migration_keys_moved_total{pair}")),
        both as f64
    );
    assert_eq!(page.sample("redshard_slots{shard=\"s1\"}"), Some("6144"));
    // Every key is still readable through the proxy.
    for i in (0..2000).step_by(97) {
        assert_eq!(
            client.cmd(&["GET", &format!("mig:{i}")]).await,
            Reply::bulk(&format!("value-{i}"))
        );
    }
    cluster.proxy.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_field_names_are_unique_across_sections() {
    // Clients such as redis-py merge INFO's sections into one map: a field name used by two
    // sections would hide one of them.
    let cluster = redshard_tests::TestCluster::start(2).await;
    let mut c = cluster.client().await;
    let info = c.cmd(&["INFO", "everything"]).await.text();
    let mut seen = std::collections::HashSet::new();
    for line in info
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let name = line.split(':').next().unwrap();
        assert!(
            seen.insert(name.to_owned()),
            "{name} appears twice:\n{info}"
        );
    }
    assert!(
        seen.contains("shard1") && seen.contains("route1") && seen.contains("health1"),
        "{info}"
    );
}
