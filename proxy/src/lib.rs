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
//! - [`listener`]: the accept loop, max-clients permits, one task per client.
//! - [`session`]: one client connection: reads requests, dispatches them, writes the replies
//!   back in order; answers connection-local commands itself.
//! - [`resp`]: the hand-written, resumable, bounded request and reply scanners, and the
//!   encoders of synthesized replies.
//! - [`command`]: the Redis 7.0 command table (arity, key positions, flags) and how redshard
//!   treats each command.
//! - [`router`]: the slot table in an `ArcSwap`, and the routing of one request.
//! - [`backend`]: per-node lanes: long-lived, multiplexed, pipelined connections.
//! - [`shutdown`]: the drain signal shared by every task.
#![forbid(unsafe_code)]

pub mod backend;
pub mod clients;
pub mod command;
pub mod listener;
pub mod outbuf;
pub mod replies;
pub mod resp;
pub mod router;
pub mod session;
pub mod shutdown;
pub mod state;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use redshard_config::{
    choose_initial, Config, FileTopologyStore, InitialSource, Topology, TopologyStore,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use state::ProxyState;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The client port could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The persisted topology could not be read or written.
    #[error("topology store: {0}")]
    Store(#[from] redshard_config::StoreError),
}

/// A running proxy: its listener task and the trigger that drains it.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect (the bound address, useful when the config said port 0).
    local_addr: SocketAddr,
    /// Shared state (routing table, client list), for inspection.
    state: Arc<ProxyState>,
    /// Starts the drain.
    trigger: shutdown::ShutdownTrigger,
    /// The accept loop; completes when every session has finished after shutdown.
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Restores the topology (persisted one if newer than the config's), binds `config.listen`
    /// and starts serving on the current tokio runtime.
    ///
    /// # Errors
    /// The listen address cannot be bound, or the topology file is unreadable or unwritable.
    pub async fn start(config: Config) -> Result<Self, StartError> {
        let topology = initial_topology(&config)?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Self::start_on(listener, config, topology)
    }

    /// Serves `topology` on an already-bound listener (tests bind `127.0.0.1:0`).
    ///
    /// # Errors
    /// The listener's address cannot be read.
    pub fn start_on(
        listener: TcpListener,
        config: Config,
        topology: Topology,
    ) -> Result<Self, StartError> {
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let state = ProxyState::new(config, topology, local_addr.port());
        let (trigger, watch) = shutdown::channel();
        let accept = tokio::spawn(listener::run(listener, Arc::clone(&state), watch));
        Ok(Self {
            local_addr,
            state,
            trigger,
            accept,
        })
    }

    /// Where clients connect.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
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

    /// Stops accepting, lets sessions finish their in-flight replies, and waits up to `grace`.
    /// Returns whether every session finished in time.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.trigger.trigger();
        tokio::time::timeout(grace, self.accept).await.is_ok()
    }
}

/// The topology to start with: the persisted one when it is newer than the config file's.
fn initial_topology(config: &Config) -> Result<Topology, StartError> {
    let from_config = Topology::from_config(config);
    let Some(path) = &config.topology_file else {
        return Ok(from_config);
    };
    let store = FileTopologyStore::new(path.clone());
    let (topology, source) = choose_initial(from_config, store.load()?);
    match source {
        InitialSource::Persisted { epoch } => tracing::info!(
            epoch,
            file = %path.display(),
            "using the persisted topology: it is newer than the config file's"
        ),
        InitialSource::Config => {
            store.save(&topology)?;
        }
    }
    Ok(topology)
}
