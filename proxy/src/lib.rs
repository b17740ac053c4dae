//! # redshard
//!
//! A sharding proxy for the Redis protocol in front of plain (non-cluster) Redis nodes.
//!
//! One request flows through the modules in this order:
//!
//! ```text
//! listener ─▶ session ─▶ command (classify) ─▶ router (slot table) ─▶ backend lane ─▶ master
//!                ▲                                                        │
//!                └────────────── replies, in the client's order ◀─────────┘
//! ```
//!
//! The proxy is six crates, each importing only the ones below it, so the compiler holds the
//! direction (see `docs/development.md`):
//!
//! | Crate | Layer | What |
//! |---|---|---|
//! | `redshard-config` | below all | the configuration file and the topology, and its store |
//! | `redshard-protocol` | protocol | RESP scanners and encoders, the command table, client errors |
//! | `redshard-metrics` | leaf | metric names and the recording API everyone calls |
//! | `redshard-dataplane` | data plane | session → router → backend → replies, mirroring, the shared state |
//! | `redshard-control` | control plane | the controller (the one writer of the topology), reloads |
//! | `redshard-proxy` (this one) | top | the ports and pages that reach everything below, and `main` |
//!
//! This crate:
//!
//! - [`Proxy`]: starts the state, the controller, the accept loops and the pages, and stops
//!   them.
//! - [`admin`]: the admin port (RESP): topology, nodes, migrations, rebalance, failover.
//! - `listener`: the accept loops (plaintext and TLS), max-clients permits, one task per
//!   client (none while a plaintext client idles: it waits in the session's park room).
//! - [`metrics`]: the scrape side of the metrics: the `/metrics` page
//!   ([`metrics::scrape`]), the HTTP endpoint (`/metrics`, `/livez`, `/readyz`,
//!   `POST /-/reload`) on `metrics_listen`, and `redshard healthcheck`.
//!
//! Re-exported for the tests and tools that drive a proxy: the protocol's [`resp`],
//! [`command`] and [`client_error`].
#![forbid(unsafe_code)]

// The protocol layer lives in its own crate (`redshard-protocol`), which imports nothing of the
// proxy; re-exported so `redshard_proxy::resp` and `redshard_proxy::command` name it.
pub use redshard_protocol::{acl, client_error, command, resp};

pub mod admin;
pub mod busy_poll;
pub(crate) mod listener;
pub mod metrics;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redshard_config::{
    choose_initial, Config, FileTopologyStore, InitialSource, ReplicaState, ReplicationMode,
    Topology, TopologyChange, TopologyStore,
};
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;

use redshard_control::fleet::Fleet;
use redshard_control::{reload, Controller};
use redshard_dataplane::{session, shutdown, tls};

pub use redshard_control::reload::{LogLevelHook, ReloadError, ReloadReport};
pub use redshard_dataplane::state::{ProxyState, StateOptions};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration's `[[rule]]`s differ from the persisted topology's, which routed the
    /// keys stored now.
    #[error("the [[rule]] entries of the configuration differ from those of the persisted topology ({file}: {persisted}); the stored keys were placed by the persisted rules, and other rules would route requests where those keys are not. Write the persisted rules back into the configuration, or start from an empty cluster with a fresh topology_file")]
    RulesChanged {
        /// The topology file.
        file: String,
        /// Its rules, as one line.
        persisted: String,
    },
    /// The client port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The HTTP endpoint's port (`metrics_listen`) could not be bound.
    #[error("cannot listen on {addr} (metrics_listen): {source}")]
    BindMetrics {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The admin port (`admin_listen`) could not be bound.
    #[error("cannot listen on {addr} (admin_listen): {source}")]
    BindAdmin {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// `admin_listen` is set without `admin_password` (a configuration built in code;
    /// validation refuses it in a file).
    #[error("admin_password must be set when admin_listen is ({addr}): anyone who can reach a TCP port could run admin commands; use the admin socket (admin_socket) instead")]
    AdminWithoutPassword {
        /// The configured address.
        addr: SocketAddr,
    },
    /// The admin socket (`admin_socket`) could not be opened.
    #[error(transparent)]
    AdminSocket(#[from] admin::AdminSocketError),
    /// The TLS port (`tls_listen`) could not be bound.
    #[error("cannot listen on {addr} (tls_listen): {source}")]
    BindTls {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A TLS certificate or key file cannot be used.
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    /// The persisted topology could not be read or written.
    #[error("topology store: {0}")]
    Store(#[from] redshard_config::StoreError),
    /// The persisted topology's replicas could not be marked stale after an unclean stop.
    #[error("topology: {0}")]
    Topology(#[from] redshard_config::TopologyError),
    /// `[cluster] etcd` is set and the fleet could not be joined (etcd unreachable, refused
    /// credentials, an invalid proxy id).
    #[error("cannot join the fleet through etcd ({endpoints}): {source}")]
    Cluster {
        /// The configured etcd endpoints.
        endpoints: String,
        /// What failed.
        #[source]
        source: redshard_cluster::ClusterError,
    },
}

/// A running proxy: its listener task and the trigger that drains it.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect (the bound address, useful when the config said port 0).
    local_addr: SocketAddr,
    /// Where TLS clients connect, when `tls_listen` is set (the bound address).
    tls_addr: Option<SocketAddr>,
    /// Shared state (routing table, client list), for inspection.
    state: Arc<ProxyState>,
    /// The controller: topology changes, health, failover, resync.
    controller: Arc<Controller>,
    /// Starts the drain.
    trigger: shutdown::ShutdownTrigger,
    /// The accept loops; complete when every session has finished after shutdown.
    accept: JoinHandle<()>,
    /// Where the HTTP endpoint listens, when it runs.
    http_addr: Option<SocketAddr>,
    /// Where the admin port listens, once started.
    admin_addr: Option<SocketAddr>,
    /// Where the admin socket is, once started.
    admin_socket: Option<std::path::PathBuf>,
    /// The HTTP endpoint, the admin port and the idle sweep; they end promptly on shutdown.
    background: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Restores the topology (persisted one if newer than the config's), binds `config.listen`,
    /// `config.metrics_listen` and `config.admin_listen`, and starts serving on the current
    /// tokio runtime.
    ///
    /// # Errors
    /// A listen address cannot be bound, or the topology file is unreadable or unwritable.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        Self::start_with(config, StateOptions::default()).await
    }

    /// [`Proxy::start`], with the configuration file to re-read on reload and the hook that
    /// applies a new log level (what `main` passes).
    ///
    /// # Errors
    /// As [`Proxy::start`].
    pub async fn start_with(config: Config, options: StateOptions) -> Result<Self, StartError> {
        // In a fleet the topology comes from etcd, once the listeners are bound (the proxy's
        // id and the addresses it registers are the bound ones).
        let topology = if config.cluster.is_some() {
            // What seeds etcd when it holds no topology yet.
            Topology::first_start(&config)
        } else {
            initial_topology(&config)?
        };
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let http = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::BindMetrics { addr, source })?,
            ),
            None => None,
        };
        let admin = match config.admin_listen {
            Some(addr) if config.admin_password.is_none() => {
                return Err(StartError::AdminWithoutPassword { addr })
            }
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::BindAdmin { addr, source })?,
            ),
            None => None,
        };
        let socket = match &config.admin_socket {
            Some(path) => {
                let private = *path == redshard_config::ha::default_admin_socket();
                Some((path.clone(), admin::bind_unix(path, private)?))
            }
            None => None,
        };
        let (topology, fleet) = match &config.cluster {
            Some(cluster) => {
                let local = listener.local_addr().map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
                // What the other proxies forward admin commands to: a reachable address, not 0.0.0.0.
                let admin_addr = admin::fleet::advertised_admin_addr(
                    &config,
                    admin.as_ref().and_then(|a| a.local_addr().ok()),
                );
                let (fleet, topology) =
                    join_fleet(&config, cluster, local, admin_addr, &topology).await?;
                (topology, Some(fleet))
            }
            None => (topology, None),
        };
        let mut proxy = Self::serve_in(listener, http, config, topology, options, fleet)?;
        if let Some(admin) = admin {
            proxy.start_admin(admin)?;
        }
        if let Some((path, (listener, owner))) = socket {
            proxy.start_admin_socket(listener, path, owner);
        }
        Ok(proxy)
    }

    /// Serves `topology` on an already-bound listener (tests bind `127.0.0.1:0`), without
    /// the HTTP endpoint and the admin port (see [`Proxy::start_admin`]); the TLS listener of
    /// `config.tls` is bound here.
    ///
    /// # Errors
    /// The listener's address cannot be read.
    pub fn start_on(
        listener: TcpListener,
        config: Config,
        topology: Topology,
    ) -> Result<Self, StartError> {
        Self::serve(listener, None, config, topology, StateOptions::default())
    }

    /// Serves `topology` to clients on `listener` and, when `http` is given, the HTTP
    /// endpoint on it with the backend probe that feeds `/readyz` (`config.metrics_listen`
    /// is not bound here, nor `config.admin_listen`: see [`Proxy::start_admin`]). With
    /// `tls_listen`, loads the certificates and binds that port too. Installs the process's
    /// metrics recorder if it is not yet.
    ///
    /// # Errors
    /// A listener's address cannot be read, the TLS port cannot be bound, or a TLS file
    /// cannot be used.
    pub fn serve(
        listener: TcpListener,
        http: Option<TcpListener>,
        config: Config,
        topology: Topology,
        options: StateOptions,
    ) -> Result<Self, StartError> {
        Self::serve_in(listener, http, config, topology, options, None)
    }

    /// [`Proxy::serve`], in the fleet `fleet` when given (see [`join_fleet`]).
    fn serve_in(
        listener: TcpListener,
        http: Option<TcpListener>,
        config: Config,
        topology: Topology,
        options: StateOptions,
        fleet: Option<Arc<Fleet>>,
    ) -> Result<Self, StartError> {
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let http_addr = match &http {
            Some(http) => Some(
                http.local_addr()
                    .map_err(|source| StartError::BindMetrics {
                        addr: config.metrics_listen.unwrap_or(local_addr),
                        source,
                    })?,
            ),
            None => None,
        };
        let (tls_listener, tls_addr) = match &config.tls {
            Some(tls) => {
                let listener = bind_tls(tls.listen)?;
                let addr = listener
                    .local_addr()
                    .map_err(|source| StartError::BindTls {
                        addr: tls.listen,
                        source,
                    })?;
                (Some(listener), Some(addr))
            }
            None => (None, None),
        };
        redshard_metrics::install(&config.metrics_namespace);
        let (state, control) =
            ProxyState::with_options(config, topology, local_addr.port(), options)?;
        let (trigger, watch) = shutdown::channel();
        let mut background = Vec::new();
        if let Some(http) = http {
            background.push(tokio::spawn(metrics::http::run(
                http,
                endpoints(&state),
                trigger.subscribe(),
            )));
        }
        background.push(session::park::start(&state, &trigger));
        let controller =
            Controller::start_in(Arc::clone(&state), control, trigger.subscribe(), fleet);
        admin::fleet::forward_users(&controller);
        let plain = listener::run(listener, Arc::clone(&state), watch.clone());
        let accept = match (tls_listener, &state.tls.server) {
            (Some(tls_listener), Some(tls)) => {
                let tls =
                    listener::run_tls(tls_listener, Arc::clone(&state), watch, Arc::clone(tls));
                tokio::spawn(async move {
                    tokio::join!(plain, tls);
                })
            }
            _ => tokio::spawn(plain),
        };
        Ok(Self {
            local_addr,
            controller,
            tls_addr,
            state,
            trigger,
            accept,
            http_addr,
            admin_addr: None,
            admin_socket: None,
            background,
        })
    }

    /// Serves the admin port on an already-bound listener (what [`Proxy::start_with`] does
    /// for `admin_listen`; tests bind `127.0.0.1:0`). Returns its address. With
    /// `admin_password`, clients must AUTH; without one, every client of `listener` is
    /// trusted: only for a listener nobody else can reach (the configuration's
    /// `admin_listen` is refused without a password).
    ///
    /// # Errors
    /// The listener's address cannot be read.
    pub fn start_admin(&mut self, listener: TcpListener) -> Result<SocketAddr, StartError> {
        let addr = listener
            .local_addr()
            .map_err(|source| StartError::BindAdmin {
                addr: self.state.config.admin_listen.unwrap_or(self.local_addr),
                source,
            })?;
        self.background.push(tokio::spawn(admin::run(
            listener,
            Arc::clone(&self.controller),
            self.trigger.subscribe(),
        )));
        self.admin_addr = Some(addr);
        Ok(addr)
    }

    /// Where the admin port listens, once started.
    #[must_use]
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Serves the admin port on the Unix socket `listener` bound at `path` by
    /// [`admin::bind_unix`], for clients of uid `owner` and root.
    pub fn start_admin_socket(
        &mut self,
        listener: tokio::net::UnixListener,
        path: std::path::PathBuf,
        owner: u32,
    ) {
        self.background.push(tokio::spawn(admin::run_unix(
            listener,
            path.clone(),
            owner,
            Arc::clone(&self.controller),
            self.trigger.subscribe(),
        )));
        self.admin_socket = Some(path);
    }

    /// Where the admin socket is, once started.
    #[must_use]
    pub fn admin_socket(&self) -> Option<&std::path::Path> {
        self.admin_socket.as_deref()
    }

    /// Where clients connect.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where TLS clients connect, when `tls_listen` is set.
    #[must_use]
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The current topology epoch.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.state.router.load().epoch()
    }

    /// The shared state.
    #[must_use]
    pub fn state(&self) -> &Arc<ProxyState> {
        &self.state
    }

    /// The controller.
    #[must_use]
    pub fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// Where the HTTP endpoint listens, when it runs.
    #[must_use]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The configuration in effect now (the file's after the last successful reload, for
    /// what can change live).
    #[must_use]
    pub fn live_config(&self) -> Arc<Config> {
        self.state.live.snapshot()
    }

    /// Re-reads the configuration file and applies what can change live, as SIGHUP does.
    ///
    /// # Errors
    /// See [`reload::reload`]: the running configuration is kept.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        reload::reload(&self.state)
    }

    /// Stops accepting, lets sessions finish their in-flight replies, and waits up to `grace`.
    /// Returns whether every session finished in time.
    ///
    /// With `topology_file`, a clean stop (drained in time, every mirrored write settled) is
    /// recorded in it, so the next start trusts the in-sync replicas (see
    /// [`Controller::record_stop`]).
    pub async fn shutdown(self, grace: Duration) -> bool {
        let deadline = std::time::Instant::now() + grace;
        self.trigger.trigger();
        let drained = tokio::time::timeout(grace, self.accept).await.is_ok();
        for task in self.background {
            // Both watch the trigger and end at once; the bound only guards against a bug.
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        self.controller.record_stop(drained, deadline).await;
        drained
    }
}

/// The HTTP routes of the proxy `state`.
fn endpoints(state: &Arc<ProxyState>) -> metrics::http::Endpoints {
    let for_metrics = Arc::clone(state);
    let for_ready = Arc::clone(state);
    let for_reload = Arc::clone(state);
    metrics::http::Endpoints {
        metrics: Arc::new(move || metrics::scrape::render(&for_metrics)),
        ready: Arc::new(move || for_ready.health.readiness(&for_ready.router.load())),
        reload: Arc::new(move || {
            reload::reload(&for_reload)
                .map(|report| report.to_string())
                .map_err(|e| e.to_string())
        }),
    }
}

/// Binds the TLS port like `TcpListener::bind` does (address reuse on Unix), without
/// waiting, so [`Proxy::serve`] stays synchronous.
fn bind_tls(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let error = |source| StartError::BindTls { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(error)?;
    #[cfg(unix)]
    socket.set_reuseaddr(true).map_err(error)?;
    socket.bind(addr).map_err(error)?;
    socket.listen(1024).map_err(error)
}

/// Joins the fleet of `cluster`: etcd's topology (seeded with `topology`, the configuration's,
/// when etcd holds none) and this proxy registered with the addresses it listens on. The
/// configuration's `[[rule]]`s must be etcd's, as with a `topology_file`.
///
/// # Errors
///
/// [`StartError::Cluster`] when etcd cannot be reached or refuses a step;
/// [`StartError::RulesChanged`].
async fn join_fleet(
    config: &Config,
    cluster: &redshard_config::ClusterConfig,
    local: SocketAddr,
    admin: Option<String>,
    topology: &Topology,
) -> Result<(Arc<Fleet>, Topology), StartError> {
    let failed = |source| StartError::Cluster {
        endpoints: cluster
            .etcd
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(","),
        source,
    };
    if config.topology_file.is_some() {
        tracing::warn!(
            "[cluster] etcd is set: the topology is kept in etcd, topology_file is not used"
        );
    }
    let id = redshard_cluster::proxy_id(cluster, local).map_err(failed)?;
    let (fleet, topology) = Fleet::join(cluster, id, local.to_string(), admin, topology)
        .await
        .map_err(failed)?;
    if topology.rules.rules() != config.rules {
        return Err(rules_changed(
            format!("etcd {}", cluster.prefix),
            topology.rules.rules(),
        ));
    }
    tracing::info!(id = fleet.id(), epoch = topology.epoch, "joined the fleet");
    Ok((fleet, topology))
}

/// The refusal to start with other routing rules than `persisted`, the ones the stored
/// topology at `file` placed its keys by.
fn rules_changed(file: String, persisted: &[redshard_config::KeyRule]) -> StartError {
    StartError::RulesChanged {
        file,
        persisted: if persisted.is_empty() {
            "none".to_owned()
        } else {
            persisted
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        },
    }
}

/// The topology to start with: the persisted one when it is newer than the config file's.
///
/// It is saved with the run marker before anything is served (see `redshard_config::store`).
/// When the file already had the marker, the last proxy did not stop cleanly: with proxy
/// mirroring its masters may hold writes the replicas never got, so every in-sync replica is
/// recorded stale first, and the controller resynchronises them.
fn initial_topology(config: &Config) -> Result<Topology, StartError> {
    let from_config = Topology::first_start(config);
    let Some(path) = &config.topology_file else {
        return Ok(from_config);
    };
    let store = FileTopologyStore::new(path.clone());
    let persisted = store.load_marked()?;
    let unclean = persisted.as_ref().is_some_and(|(_, running)| *running);
    // Whichever topology wins below, the keys stored now were placed by the persisted rules
    // (even at epoch 1, when the configuration's shards are taken as they are).
    if let Some((persisted, _)) = persisted
        .as_ref()
        .filter(|(p, _)| p.rules.rules() != config.rules)
    {
        return Err(rules_changed(
            path.display().to_string(),
            persisted.rules.rules(),
        ));
    }
    let (mut topology, source) = choose_initial(from_config, persisted.map(|(t, _)| t));
    if let InitialSource::Persisted { epoch } = source {
        tracing::info!(
            epoch,
            file = %path.display(),
            "using the persisted topology: it is newer than the config file's"
        );
    }
    if unclean && config.replication.mode == ReplicationMode::Proxy {
        topology = distrust_replicas(topology)?;
    }
    store.set_running(true);
    store.save(&topology)?;
    Ok(topology)
}

/// `topology` with every in-sync replica stale: after an unclean stop none can be trusted to
/// hold every write its master applied.
fn distrust_replicas(mut topology: Topology) -> Result<Topology, StartError> {
    let in_sync: Vec<_> = topology
        .shards
        .iter()
        .flat_map(|s| s.in_sync_replicas().map(move |r| (s.id, r.addr.clone())))
        .collect();
    for (shard, addr) in in_sync {
        let change = TopologyChange::SetReplicaState {
            shard,
            addr: addr.clone(),
            state: ReplicaState::Stale,
        };
        topology = topology.apply(&change)?;
        tracing::warn!(replica = %addr, "the proxy did not stop cleanly last time: the replica may lack writes its master applied, so it is stale until resynchronised");
    }
    Ok(topology)
}
