//! What every session shares: configuration, routing, the client list.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use redshard_config::{Config, Topology};

use crate::backend::{LaneConfig, NodePool};
use crate::clients::Clients;
use crate::health::BackendHealth;
use crate::router::writer::TopologyWriter;
use crate::router::Router;
use crate::tls::{Tls, TlsError};
use redshard_protocol::resp::ScanLimits;

/// The proxy's shared state, one per running proxy.
#[derive(Debug)]
pub struct ProxyState {
    /// The validated configuration the proxy runs with.
    pub config: Arc<Config>,
    /// The live routing table.
    pub router: Router,
    /// Connected clients and connection counters.
    pub clients: Clients,
    /// SLOWLOG, shared by every client like Redis's.
    pub slowlog: crate::slowlog::SlowLog,
    /// Start time, for INFO uptime.
    pub started: Instant,
    /// The port clients connect to, for INFO.
    pub port: u16,
    /// The reloadable settings in effect now (see [`LiveSettings`]); `config` holds those
    /// that take a restart.
    pub live: LiveSettings,
    /// What is known of each backend node, for `/readyz` and `backend_up`.
    pub health: Arc<BackendHealth>,
    /// What only a reload uses: the file to re-read, the log level hook, its lock.
    pub reload: ReloadHooks,
    /// Slot migrations: the queue, and the per-key locks the data path shares with the mover.
    pub migrations: crate::migration::Migrations,
    /// Failovers, resyncs and stale replicas counted by the controller; here rather than in
    /// the controller because INFO and `/metrics` read only this state.
    pub ha: crate::ha_stats::HaStats,
    /// The fleet this proxy belongs to (`[cluster] etcd`), for INFO and `/metrics`; empty
    /// when it runs alone.
    pub fleet: crate::fleet_status::FleetStatus,
    /// The certificates of the TLS listener and of backend connections, replaced in place
    /// by a reload.
    pub tls: Tls,
    /// Failed AUTH attempts per source address on the client ports (plaintext and TLS), so
    /// that parallel guessing over many connections is slowed too.
    pub auth_throttle: crate::auth_throttle::AuthThrottle,
    /// The clients in MONITOR mode, fed every client's commands, and while there are any the
    /// masters' MONITOR connections that relay what scripts run there (see [`crate::monitor`]).
    pub monitors: crate::monitor::Monitors,
    /// Where idle clients are parked, once the proxy started it; without one, clients are
    /// not parked. The session layer's type, held here without its name (the state is below
    /// the session): only `session::park` fills and reads it (see `session::park::room_of`).
    pub(crate) park_room: std::sync::OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
    /// CLIENT TRACKING: what tracking clients read, and the masters' tracking connections
    /// while any client tracks (see [`crate::tracking`]).
    pub tracking: crate::tracking::Tracking,
    /// The users clients authenticate as and the rules each request is checked against,
    /// changed at run time by ACL SETUSER / DELUSER and CONFIG SET requirepass; the ACL log.
    pub users: crate::users::Users,
    /// The literal keys of the scripts seen in `EVAL` and `SCRIPT LOAD`, by SHA1, which route
    /// an `EVALSHA` called with no key (see [`crate::script_keys`]).
    pub script_keys: crate::script_keys::ScriptKeys,
}

/// The reloadable settings: the configuration with the `[limits]`, `[log] level` and other
/// reloadable keys of the last successful reload (see `redshard_control::reload`).
///
/// Read them with [`LiveSettings::now`] at each use, never once and kept: a value kept from
/// earlier misses the next reload. Only the reload replaces them.
#[derive(Debug)]
pub struct LiveSettings {
    /// The settings.
    config: ArcSwap<Config>,
    /// The few of them every session reads twice per turn of its loop, copied out of `config`
    /// by each replace: plain loads instead of an `ArcSwap` load (~100 instructions) each time.
    hot: HotCells,
}

impl LiveSettings {
    /// Settings starting as `config`.
    #[must_use]
    pub fn new(config: Arc<Config>) -> Self {
        let hot = HotCells::default();
        hot.store(&config);
        Self {
            config: ArcSwap::new(config),
            hot,
        }
    }

    /// The settings in effect now; a cheap guard to read and drop, not to keep.
    #[must_use]
    pub fn now(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// The `[limits]` and `[slowlog]` values a session's round works with, in effect now.
    /// A read that races a replace may return some values of the old settings and some of
    /// the new (each is a valid setting by itself); the next read has all the new ones.
    #[must_use]
    #[inline]
    pub fn hot(&self) -> HotSettings {
        self.hot.load()
    }

    /// The settings in effect now, to keep while comparing with a new file.
    #[must_use]
    pub fn snapshot(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Makes `next` the settings in effect: the reload's step, after it checked `next`.
    /// Callers hold the reload lock ([`ReloadHooks::lock`]), so replaces do not interleave.
    pub fn replace(&self, next: Arc<Config>) {
        self.hot.store(&next);
        self.config.store(next);
    }
}

/// The live settings every session reads on each turn of its loop (see [`LiveSettings::hot`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotSettings {
    /// `[limits] max_pipeline`.
    pub max_pipeline: usize,
    /// `[limits] max_query_buffer_bytes`.
    pub max_query: usize,
    /// `[limits] output_buffer_soft_bytes`.
    pub soft_bytes: usize,
    /// `[limits] output_buffer_hard_bytes`.
    pub hard_bytes: usize,
    /// `[limits] output_buffer_soft_seconds`.
    pub soft_for: std::time::Duration,
    /// `[limits] max_inflight_reply_bytes`.
    pub inflight_bytes: usize,
    /// `[limits] coalesce_replies`.
    pub coalesce_replies: bool,
    /// `[limits] coalesce_max_bytes`.
    pub coalesce_max_bytes: usize,
    /// `[slowlog]`.
    pub slowlog: redshard_config::SlowlogConfig,
}

/// [`HotSettings`] as atomics, written only by [`LiveSettings::replace`].
#[derive(Debug, Default)]
struct HotCells {
    max_pipeline: AtomicUsize,
    max_query: AtomicUsize,
    soft_bytes: AtomicUsize,
    hard_bytes: AtomicUsize,
    /// In nanoseconds (saturated: 584 years).
    soft_for_ns: AtomicU64,
    inflight_bytes: AtomicUsize,
    coalesce_replies: AtomicBool,
    coalesce_max_bytes: AtomicUsize,
    slowlog_slower_than_us: AtomicI64,
    slowlog_max_len: AtomicUsize,
}

impl HotCells {
    fn store(&self, config: &Config) {
        let limits = &config.limits;
        let soft_for = u64::try_from(limits.output_buffer_soft.as_nanos()).unwrap_or(u64::MAX);
        self.max_pipeline
            .store(limits.max_pipeline, Ordering::Relaxed);
        self.max_query
            .store(limits.max_query_buffer_bytes, Ordering::Relaxed);
        self.soft_bytes
            .store(limits.output_buffer_soft_bytes, Ordering::Relaxed);
        self.hard_bytes
            .store(limits.output_buffer_hard_bytes, Ordering::Relaxed);
        self.soft_for_ns.store(soft_for, Ordering::Relaxed);
        self.inflight_bytes
            .store(limits.max_inflight_reply_bytes, Ordering::Relaxed);
        self.coalesce_replies
            .store(limits.coalesce_replies, Ordering::Relaxed);
        self.coalesce_max_bytes
            .store(limits.coalesce_max_bytes, Ordering::Relaxed);
        self.slowlog_slower_than_us
            .store(config.slowlog.log_slower_than_us, Ordering::Relaxed);
        self.slowlog_max_len
            .store(config.slowlog.max_len, Ordering::Relaxed);
    }

    fn load(&self) -> HotSettings {
        HotSettings {
            max_pipeline: self.max_pipeline.load(Ordering::Relaxed),
            max_query: self.max_query.load(Ordering::Relaxed),
            soft_bytes: self.soft_bytes.load(Ordering::Relaxed),
            hard_bytes: self.hard_bytes.load(Ordering::Relaxed),
            soft_for: std::time::Duration::from_nanos(self.soft_for_ns.load(Ordering::Relaxed)),
            inflight_bytes: self.inflight_bytes.load(Ordering::Relaxed),
            coalesce_replies: self.coalesce_replies.load(Ordering::Relaxed),
            coalesce_max_bytes: self.coalesce_max_bytes.load(Ordering::Relaxed),
            slowlog: redshard_config::SlowlogConfig {
                log_slower_than_us: self.slowlog_slower_than_us.load(Ordering::Relaxed),
                max_len: self.slowlog_max_len.load(Ordering::Relaxed),
            },
        }
    }
}

/// What a reload needs and nothing else does.
#[derive(Debug)]
pub struct ReloadHooks {
    /// The file the configuration came from, re-read on reload; `None` when it was not
    /// loaded from a file (tests), which makes reloads fail.
    pub config_path: Option<PathBuf>,
    /// Applies a reloaded `[log] level`; `None` when logging cannot change live.
    pub log_level: Option<LogLevelHook>,
    /// Held during a reload, so SIGHUP and `POST /-/reload` do not interleave.
    pub lock: Mutex<()>,
}

/// What only the controller may hold, made with the state and handed to
/// `Controller::start`: the one writer of the topology and the receiving end of the data
/// plane's reports. Not kept in [`ProxyState`], so holding the state is not enough to change
/// the topology.
#[derive(Debug)]
pub struct ControllerParts {
    /// The capability to install tables, set gates and fence nodes.
    pub writer: TopologyWriter,
    /// The data path's reports to the controller.
    pub events: crate::events::EventReceiver,
}

/// Applies a new `[log] level` filter (called by `redshard_control::reload`; kept here, with the state
/// that holds it, so the state does not import the reload above it). `Ok(true)` when applied, `Ok(false)` when something
/// overrides the file (such as `RUST_LOG`); `Err` with the reason when the filter is invalid.
#[derive(Clone)]
pub struct LogLevelHook(Arc<LogLevelFn>);

/// The function inside a [`LogLevelHook`].
type LogLevelFn = dyn Fn(&str) -> Result<bool, String> + Send + Sync;

impl LogLevelHook {
    /// A hook calling `apply` with the new filter.
    pub fn new(apply: impl Fn(&str) -> Result<bool, String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(apply))
    }

    /// Applies `level`.
    ///
    /// # Errors
    /// The filter is invalid; the level in effect is unchanged.
    pub fn apply(&self, level: &str) -> Result<bool, String> {
        (self.0)(level)
    }
}

impl fmt::Debug for LogLevelHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogLevelHook")
    }
}

/// What a proxy started by `main` has beyond its configuration.
#[derive(Clone, Debug, Default)]
pub struct StateOptions {
    /// The configuration file, for reloads.
    pub config_path: Option<PathBuf>,
    /// Applies a reloaded `[log] level`.
    pub log_level: Option<LogLevelHook>,
}

impl crate::monitor::MonitorHub for ProxyState {
    fn router(&self) -> &Router {
        &self.router
    }

    fn monitors(&self) -> &crate::monitor::Monitors {
        &self.monitors
    }

    fn monitor_buffer_bytes(&self) -> usize {
        self.live.now().limits.monitor_buffer_bytes
    }
}

impl crate::tracking::Hub for ProxyState {
    fn router(&self) -> &Router {
        &self.router
    }

    fn clients(&self) -> &Clients {
        &self.clients
    }

    fn tracking(&self) -> &crate::tracking::Tracking {
        &self.tracking
    }
}

impl ProxyState {
    /// State for a proxy serving `topology` with `config`, and the parts its controller takes.
    /// Must run inside a tokio runtime: it starts the backend lanes.
    ///
    /// # Errors
    /// A TLS file of `config` cannot be read or used.
    pub fn new(
        config: Config,
        topology: Topology,
        port: u16,
    ) -> Result<(Arc<Self>, ControllerParts), TlsError> {
        Self::with_options(config, topology, port, StateOptions::default())
    }

    /// As [`ProxyState::new`], with a configuration file to reload and a log level hook.
    ///
    /// # Errors
    /// A TLS file of `config` cannot be read or used.
    pub fn with_options(
        config: Config,
        topology: Topology,
        port: u16,
        options: StateOptions,
    ) -> Result<(Arc<Self>, ControllerParts), TlsError> {
        let tls = Tls::load(&config)?;
        let mut lanes = LaneConfig::from_config(
            &config.backend,
            config.limits.max_reply_depth,
            tls.backend.clone(),
        )
        .managing(crate::backend::acl::ManagedUsers::new(&config));
        lanes.hold_unsent = config.health.failover_wait;
        lanes.ack_timeout = config.replication.ack_timeout;
        lanes.waits_in_flight = config.replication.waits_in_flight;
        if !config.backend.manage_acl
            && (!config.allow_flush
                || config
                    .users
                    .iter()
                    .any(|u| u.access != redshard_config::Access::All))
        {
            tracing::warn!("[backend] manage_acl = false: client traffic runs as the backend user, so a Lua script or function can run what allow_flush and the [[user]] access levels refuse (see docs/access-control.md)");
        }
        if lanes.lanes == 0 {
            // `lanes = 0`: one per worker thread, so the workers share each node's traffic.
            lanes.lanes = worker_threads(config.threads);
        }
        let (events, control_rx) = crate::events::channel();
        let mirror = crate::mirror::Mirror::new(
            config.mirror.clone(),
            config.replication.ack,
            config.replication.mode,
            events.clone(),
        );
        let (router, writer) =
            Router::new(topology, NodePool::new(lanes).reporting(events), mirror);
        let migrations = crate::migration::Migrations::new(&config);
        let users = crate::users::Users::from_config(&config);
        // Users changed at run time and persisted with the topology win over the file's.
        users.sync(router.load().topology().users.as_deref());
        let script_keys = crate::script_keys::ScriptKeys::new(config.mirror.max_scripts);
        let config = Arc::new(config);
        let state = Arc::new(Self {
            users,
            live: LiveSettings::new(Arc::clone(&config)),
            config,
            router,
            clients: Clients::default(),
            slowlog: crate::slowlog::SlowLog::default(),
            started: Instant::now(),
            port,
            health: Arc::new(BackendHealth::default()),
            reload: ReloadHooks {
                config_path: options.config_path,
                log_level: options.log_level,
                lock: Mutex::new(()),
            },
            migrations,
            ha: crate::ha_stats::HaStats::default(),
            fleet: crate::fleet_status::FleetStatus::default(),
            tls,
            auth_throttle: crate::auth_throttle::AuthThrottle::new(),
            monitors: crate::monitor::Monitors::default(),
            park_room: std::sync::OnceLock::new(),
            tracking: crate::tracking::Tracking::default(),
            script_keys,
        });
        let parts = ControllerParts {
            writer,
            events: control_rx,
        };
        Ok((state, parts))
    }

    /// The request scanner's bounds from the live `[limits]`: a reload applies to the
    /// connections opened after it.
    #[must_use]
    pub(crate) fn scan_limits(&self) -> ScanLimits {
        let live = self.live.now();
        let limits = &live.limits;
        ScanLimits {
            max_multibulk_len: limits.max_multibulk_len,
            max_bulk_len: limits.max_bulk_bytes,
            max_inline_len: limits.max_inline_bytes,
        }
    }
}

/// The worker threads for `threads` (from the configuration). `threads = 0` means half the
/// cores (at least 1): on a machine shared with Redis, measured on 2 cores, one worker served
/// 1.2-1.4x the requests of two at the same CPU per request, because the kernel's network
/// work and Redis need the other core.
#[must_use]
pub fn worker_threads(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    (cores / 2).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHARD: &str =
        "[[shard]]\nname = \"s1\"\nmaster = \"127.0.0.1:1\"\nslots = [\"0-16383\"]\n";

    fn lanes_of(text: &str) -> usize {
        let config = Config::from_toml_str(text, "test").unwrap();
        let topology = redshard_config::Topology::from_config(&config);
        let (state, _controller) = ProxyState::new(config, topology, 0).unwrap();
        let table = state.router.load();
        table.shards()[0].master.lane_count()
    }

    #[test]
    fn hot_settings_follow_every_replace() {
        let config = Config::from_toml_str(SHARD, "test").unwrap();
        let live = LiveSettings::new(Arc::new(config.clone()));
        let hot = live.hot();
        assert_eq!(hot.max_pipeline, config.limits.max_pipeline);
        assert_eq!(hot.soft_for, config.limits.output_buffer_soft);
        assert_eq!(hot.slowlog, config.slowlog);

        let mut next = config;
        next.limits.max_pipeline = 7;
        next.limits.max_query_buffer_bytes = 11;
        next.limits.output_buffer_soft_bytes = 13;
        next.limits.output_buffer_hard_bytes = 17;
        next.limits.output_buffer_soft = std::time::Duration::from_millis(1500);
        next.limits.max_inflight_reply_bytes = 19;
        next.limits.coalesce_replies = false;
        next.limits.coalesce_max_bytes = 29;
        next.slowlog.log_slower_than_us = -1;
        next.slowlog.max_len = 23;
        live.replace(Arc::new(next));
        assert_eq!(
            live.hot(),
            HotSettings {
                max_pipeline: 7,
                max_query: 11,
                soft_bytes: 13,
                hard_bytes: 17,
                soft_for: std::time::Duration::from_millis(1500),
                inflight_bytes: 19,
                coalesce_replies: false,
                coalesce_max_bytes: 29,
                slowlog: redshard_config::SlowlogConfig {
                    log_slower_than_us: -1,
                    max_len: 23,
                },
            }
        );
        assert_eq!(live.now().limits.max_pipeline, 7);
    }

    #[tokio::test]
    async fn lanes_zero_means_one_per_worker_thread() {
        assert_eq!(lanes_of(&format!("threads = 3\n{SHARD}")), 3);
        assert_eq!(
            lanes_of(&format!("threads = 3\n[backend]\nlanes = 2\n{SHARD}")),
            2,
            "an explicit count wins"
        );
        assert_eq!(
            lanes_of(SHARD),
            worker_threads(0),
            "the defaults: threads = 0 and lanes = 0"
        );
    }

    #[test]
    fn worker_threads_default_to_half_the_cores() {
        assert_eq!(worker_threads(5), 5);
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        assert_eq!(worker_threads(0), (cores / 2).max(1));
    }
}
