//! The tutorial's cluster in miniature: masters (and replicas) on free ports behind an
//! in-process proxy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redshard_config::{Config, Topology};
use redshard_proxy::Proxy;
use tokio::net::TcpListener;

use crate::server::RedisServer;
use crate::Client;

/// Running nodes and the proxy in front of them.
#[derive(Debug)]
pub struct TestCluster {
    /// One master per shard, shard `i` named `s{i+1}`.
    pub masters: Vec<RedisServer>,
    /// One replica per shard when started with replicas.
    pub replicas: Vec<RedisServer>,
    /// The proxy; `None` after [`TestCluster::stop_proxy`].
    pub proxy: Option<Proxy>,
    /// Where clients connect.
    pub addr: SocketAddr,
}

/// The slot ranges of `n` shards splitting 16384 slots like redis-cli --cluster create.
#[must_use]
pub fn even_slots(n: usize) -> Vec<String> {
    let per = 16384 / n;
    (0..n)
        .map(|i| {
            let start = i * per;
            let end = if i + 1 == n { 16383 } else { start + per - 1 };
            format!("{start}-{end}")
        })
        .collect()
}

/// The index of the shard owning `key` when `shards` shards split the slots with
/// [`even_slots`].
#[must_use]
pub fn shard_of(key: &str, shards: usize) -> usize {
    let slot = usize::from(redshard_config::Slot::for_key(key.as_bytes()).get());
    even_slots(shards)
        .iter()
        .position(|range| {
            let (a, b) = range.split_once('-').expect("a range");
            (a.parse::<usize>().expect("start")..=b.parse::<usize>().expect("end")).contains(&slot)
        })
        .expect("every slot has a shard")
}

/// The first of `tag:0`, `tag:1`, ... owned by shard `shard` of `shards`.
#[must_use]
pub fn key_on(shards: usize, shard: usize, tag: &str) -> String {
    (0..)
        .map(|i| format!("{tag}:{i}"))
        .find(|k| shard_of(k, shards) == shard)
        .expect("some key lands on every shard")
}

/// The environment variable that picks `[replication] mode` for every test whose config
/// does not set it: `redis` or `proxy` (unset: the configuration's default).
pub const REPLICATION_MODE_VAR: &str = "REDSHARD_TEST_REPLICATION";

/// Config text pinning `[replication] mode = "proxy"`, for tests about proxy mirroring
/// itself, whatever [`REPLICATION_MODE_VAR`] says.
pub const PROXY_MIRRORING: &str = "[replication]\nmode = \"proxy\"\n";

/// Config text pinning `[replication] mode = "redis"`, whatever [`REPLICATION_MODE_VAR`] says.
pub const REDIS_REPLICATION: &str = "[replication]\nmode = \"redis\"\n";

/// `extra` with `[replication] mode` set from [`REPLICATION_MODE_VAR`] when the variable is
/// set and `extra` does not set the mode itself.
///
/// # Panics
/// When the variable holds something other than `redis` or `proxy`.
#[must_use]
pub fn with_test_mode(extra: &str) -> String {
    let Ok(mode) = std::env::var(REPLICATION_MODE_VAR) else {
        return extra.to_owned();
    };
    assert!(
        mode == "redis" || mode == "proxy",
        "{REPLICATION_MODE_VAR} must be redis or proxy, not {mode:?}"
    );
    mode_into(extra, &mode)
}

/// `extra` with `mode = "<mode>"` in its `[replication]` table (added when absent), unless
/// that table sets a mode already.
fn mode_into(extra: &str, mode: &str) -> String {
    let line = format!("mode = \"{mode}\"\n");
    match extra.find("[replication]\n") {
        Some(at) => {
            let body_at = at + "[replication]\n".len();
            let body = &extra[body_at..];
            let body = &body[..body.find("\n[").map_or(body.len(), |end| end + 1)];
            if body.lines().any(|l| l.trim_start().starts_with("mode")) {
                extra.to_owned()
            } else {
                format!("{}{line}{}", &extra[..body_at], &extra[body_at..])
            }
        }
        None => format!("{extra}\n[replication]\n{line}"),
    }
}

/// A config file's text for these nodes, with `extra` top-level and table text spliced in
/// before the shards, and `[replication] mode` as [`with_test_mode`] says.
#[must_use]
pub fn config_text(masters: &[String], replicas: &[String], extra: &str) -> String {
    let mut text = String::from("listen = \"127.0.0.1:0\"\n");
    text.push_str(&with_test_mode(extra));
    text.push('\n');
    for (i, (master, slots)) in masters.iter().zip(even_slots(masters.len())).enumerate() {
        let replicas = replicas
            .get(i)
            .map(|r| format!("\"{r}\""))
            .unwrap_or_default();
        text.push_str(&format!(
            "[[shard]]\nname = \"s{}\"\nmaster = \"{master}\"\nreplicas = [{replicas}]\nslots = [\"{slots}\"]\n",
            i + 1
        ));
    }
    text
}

impl TestCluster {
    /// `shards` masters, no replicas, default settings.
    pub async fn start(shards: usize) -> Self {
        Self::start_with(shards, false, "", &[]).await
    }

    /// `shards` masters (each started with `server_args`), optionally one replica each, and
    /// `extra` config text.
    pub async fn start_with(
        shards: usize,
        with_replicas: bool,
        extra: &str,
        server_args: &[&str],
    ) -> Self {
        let masters: Vec<RedisServer> = (0..shards)
            .map(|_| RedisServer::start_with(server_args))
            .collect();
        let replicas: Vec<RedisServer> = if with_replicas {
            (0..shards)
                .map(|_| RedisServer::start_with(server_args))
                .collect()
        } else {
            Vec::new()
        };
        let master_addrs: Vec<String> = masters.iter().map(RedisServer::addr).collect();
        let replica_addrs: Vec<String> = replicas.iter().map(RedisServer::addr).collect();
        let text = config_text(&master_addrs, &replica_addrs, extra);
        let config =
            Config::from_toml_str(&text, "test.toml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        let proxy = start_proxy(config).await;
        let addr = proxy.local_addr();
        let cluster = Self {
            masters,
            replicas,
            proxy: Some(proxy),
            addr,
        };
        if with_replicas {
            cluster.wait_replication().await;
        }
        cluster
    }

    /// Whether the proxy runs `[replication] mode = "redis"` (the tests' mode variable or
    /// their own config chose it).
    ///
    /// # Panics
    /// Without a proxy.
    #[must_use]
    pub fn redis_replication(&self) -> bool {
        let proxy = self.proxy.as_ref().expect("the cluster has a proxy");
        proxy.state().config.replication.mode == redshard_config::ReplicationMode::Redis
    }

    /// [`replication_settled`] for this cluster's proxy.
    ///
    /// # Panics
    /// Without a proxy.
    #[must_use]
    pub fn replication_settled(&self) -> bool {
        replication_settled(self.proxy.as_ref().expect("the cluster has a proxy"))
    }

    /// Waits (at most 10 s) until [`TestCluster::replication_settled`]: with Redis
    /// replication, the replicas listed in the config are in sync only once the controller
    /// has made them follow their masters and seen them catch up.
    ///
    /// # Panics
    /// Without a proxy, or when the replicas do not settle in time.
    pub async fn wait_replication(&self) {
        crate::wait_until(
            Duration::from_secs(10),
            "every replica to follow its master, in sync",
            || async { self.replication_settled() },
        )
        .await;
    }

    /// Starts the proxy's admin port on a fresh 127.0.0.1 port and returns its address.
    ///
    /// # Panics
    /// When the proxy was stopped.
    pub async fn start_admin(&mut self) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        self.proxy
            .as_mut()
            .expect("the proxy runs")
            .start_admin(listener)
            .expect("admin port starts")
    }

    /// The running proxy's current topology (panics without a proxy).
    #[must_use]
    pub fn topology(&self) -> Arc<Topology> {
        let proxy = self.proxy.as_ref().expect("the cluster has a proxy");
        Arc::clone(proxy.state().router.load().topology())
    }

    /// Waits (at most 10 s) until the controller's probes have seen every node of the current
    /// topology answer, and every replica is in sync (with Redis replication: and seen
    /// following its master): before that a node that stops
    /// answering is not yet known to have been up, so a test about failing nodes starts here.
    ///
    /// # Panics
    /// Without a proxy, or when a node is not seen up in time.
    pub async fn wait_probes_up(&self) {
        let proxy = self.proxy.as_ref().expect("the cluster has a proxy");
        let controller = proxy.controller();
        crate::wait_until(
            Duration::from_secs(10),
            "the probes to see every node up",
            || {
                let topology = self.topology();
                async move {
                    topology.shards.iter().all(|shard| {
                        controller.probe(&shard.master).is_up()
                            && shard.replicas.iter().all(|r| {
                                r.state == redshard_config::ReplicaState::InSync
                                    && controller.probe(&r.addr).is_up()
                            })
                    }) && self.replication_settled()
                }
            },
        )
        .await;
    }

    /// A new client of the proxy.
    pub async fn client(&self) -> Client {
        Client::connect_addr(self.addr).await
    }

    /// A client connected straight to master `i`.
    pub async fn master(&self, i: usize) -> Client {
        Client::connect(self.masters[i].addr()).await
    }

    /// Master `i`'s `INFO commandstats`.
    pub async fn commandstats(&self, i: usize) -> String {
        match self.master(i).await.cmd(&["INFO", "commandstats"]).await {
            crate::Reply::Bulk(Some(text)) => String::from_utf8_lossy(&text).into_owned(),
            other => panic!("INFO commandstats: {other:?}"),
        }
    }

    /// Asserts that no master ever executed any of `commands` (names as in commandstats,
    /// such as `config|set`): what the proxy refuses must never reach a backend.
    pub async fn assert_never_ran(&self, commands: &[&str]) {
        for i in 0..self.masters.len() {
            let stats = self.commandstats(i).await;
            for name in commands {
                assert!(
                    !stats.contains(&format!("cmdstat_{name}:")),
                    "{name} reached master {i}: {stats}"
                );
            }
        }
    }

    /// Drains the proxy; returns whether it finished within `grace`.
    pub async fn stop_proxy(&mut self, grace: Duration) -> bool {
        match self.proxy.take() {
            Some(proxy) => proxy.shutdown(grace).await,
            None => true,
        }
    }
}

/// Whether, with Redis replication, every replica of `proxy`'s topology is in sync and the
/// controller's last check saw it follow its master with its link up (always true with proxy
/// mirroring: its replicas start in sync).
#[must_use]
pub fn replication_settled(proxy: &Proxy) -> bool {
    let state = proxy.state();
    if state.config.replication.mode != redshard_config::ReplicationMode::Redis {
        return true;
    }
    let table = state.router.load();
    table.topology().shards.iter().all(|shard| {
        shard.replicas.iter().all(|r| {
            r.state == redshard_config::ReplicaState::InSync
                && state.ha.link(&r.addr).is_some_and(|l| l.attached)
        })
    })
}

/// `config` without the default admin socket (`/tmp/redshard-<uid>/admin.sock`): a
/// developer's own proxy, another test's or a benchmark's may hold it, and a test proxy must
/// neither fail to start nor take it over. A test that sets a path of its own keeps it.
fn off_the_default_admin_socket(mut config: Config) -> Config {
    if config.admin_socket.as_deref() == Some(redshard_config::ha::default_admin_socket().as_path())
    {
        config.admin_socket = None;
    }
    config
}

/// Starts a proxy for `config` on a fresh 127.0.0.1 port, from the topology the binary's
/// first start has ([`Topology::first_start`]).
pub async fn start_proxy(config: Config) -> Proxy {
    crate::server::init_logs();
    let config = off_the_default_admin_socket(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let topology = Topology::first_start(&config);
    Proxy::start_on(listener, config, topology).expect("proxy starts")
}

/// A proxy on a runtime of its own, so a test can stop it the way a crash does: every task
/// dropped where it waits, no drain, no shutdown step of any kind (what `kill -9` leaves,
/// short of a write half done: the topology file is replaced by rename, never half written).
#[derive(Debug)]
pub struct CrashableProxy {
    /// The proxy's runtime; `None` once crashed.
    runtime: Option<tokio::runtime::Runtime>,
    /// The proxy.
    proxy: Option<Proxy>,
}

impl CrashableProxy {
    /// Starts a proxy for `config` like `main` does ([`Proxy::start`]: the persisted topology
    /// when it is newer), on its own two-thread runtime.
    ///
    /// # Panics
    /// When the proxy does not start.
    pub async fn start(config: Config) -> Self {
        crate::server::init_logs();
        let config = off_the_default_admin_socket(config);
        let started = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            let proxy = runtime
                .block_on(Proxy::start(config))
                .expect("proxy starts");
            (runtime, proxy)
        })
        .await
        .expect("the starting thread");
        Self {
            runtime: Some(started.0),
            proxy: Some(started.1),
        }
    }

    /// The running proxy.
    ///
    /// # Panics
    /// After [`CrashableProxy::crash`].
    #[must_use]
    pub fn proxy(&self) -> &Proxy {
        self.proxy.as_ref().expect("the proxy runs")
    }

    /// Stops the proxy at once: its runtime is shut down, dropping every task where it
    /// waits; returns once its threads are gone.
    pub async fn crash(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            tokio::task::spawn_blocking(move || runtime.shutdown_timeout(Duration::from_secs(10)))
                .await
                .expect("the runtime stops");
        }
        self.proxy = None;
    }
}

impl Drop for CrashableProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::mode_into;

    #[test]
    fn the_test_mode_fills_in_the_replication_table_unless_it_names_a_mode() {
        assert_eq!(
            mode_into("allow_flush = true\n", "redis"),
            "allow_flush = true\n\n[replication]\nmode = \"redis\"\n"
        );
        assert_eq!(
            mode_into("[replication]\nack = \"async\"\n[health]\nx = 1\n", "redis"),
            "[replication]\nmode = \"redis\"\nack = \"async\"\n[health]\nx = 1\n"
        );
        let pinned = "[replication]\nmode = \"proxy\"\n[health]\nmode_x = 1\n";
        assert_eq!(mode_into(pinned, "redis"), pinned);
        // A `mode` key of another table is not the replication mode.
        assert_eq!(
            mode_into(
                "[replication]\nack = \"sync\"\n[mirror]\nmode = \"sync\"\n",
                "redis"
            ),
            "[replication]\nmode = \"redis\"\nack = \"sync\"\n[mirror]\nmode = \"sync\"\n"
        );
    }
}
