//! The HTTP endpoint: `/metrics` shows the proxy's state, `/livez` and `/readyz` follow the
//! masters, and `POST /-/reload` applies `[limits]` from the file or keeps the running
//! configuration when the file is invalid.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use redshard_config::{Config, Topology};
use redshard_proxy::metrics::healthcheck::{healthcheck, HealthcheckError};
use redshard_proxy::{Proxy, StateOptions};
use redshard_tests::cluster::{config_text, even_slots};
use redshard_tests::{Client, RedisServer, Reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Masters behind a proxy that serves the HTTP endpoint, started from a config file.
struct HttpCluster {
    masters: Vec<RedisServer>,
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
        let masters: Vec<RedisServer> = (0..shards)
            .map(|_| RedisServer::start_with(server_args))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("redshard.toml");
        let addrs: Vec<String> = masters.iter().map(RedisServer::addr).collect();
        std::fs::write(&path, config_text(&addrs, &[], extra)).unwrap();
        let config = Config::load(&path).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let topology = Topology::from_config(&config);
        let options = StateOptions {
            config_path: Some(path.clone()),
            log_level: None,
        };
        let proxy = Proxy::serve(listener, Some(http), config, topology, options).unwrap();
        let http = proxy.metrics_addr().unwrap();
        Self {
            masters,
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
        "metrics_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"",
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
        "metrics_listen = \"off\"\nadmin_listen = \"off\"",
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
    let extra = "[backend]\nusername = \"traffic\"\npassword = \"t-pw\"\n\
                 control_username = \"control\"\ncontrol_password = \"c-pw\"\n";
    let cluster = HttpCluster::start_with(2, extra, &server_args).await;
    // Let the probe run a few rounds (every 500 ms; down after 2 failures) before asking.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.wait_for("/readyz", 200).await;
    let mut c = Client::connect_addr(cluster.proxy.local_addr()).await;
    assert!(c.cmd(&["SET", "k", "v"]).await.is_ok());
    // The backend's own ACL refuses what the client user may not run, whatever the proxy allows.
    let Reply::Error(e) = c.cmd(&["KEYS", "*"]).await else {
        panic!("KEYS must be refused by the backend ACL")
    };
    assert!(e.starts_with("NOPERM"), "{e}");
}
