//! What every session shares: configuration, routing, the client list.

use std::sync::Arc;
use std::time::Instant;

use redshard_config::{Config, Topology};

use crate::backend::{LaneConfig, NodePool};
use crate::clients::Clients;
use crate::resp::ScanLimits;
use crate::router::Router;

/// The proxy's shared state, one per running proxy.
#[derive(Debug)]
pub struct ProxyState {
    /// The validated configuration the proxy runs with.
    pub config: Arc<Config>,
    /// The live routing table.
    pub router: Router,
    /// Connected clients and connection counters.
    pub clients: Clients,
    /// Start time, for INFO uptime.
    pub started: Instant,
    /// The port clients connect to, for INFO.
    pub port: u16,
}

impl ProxyState {
    /// State for a proxy serving `topology` with `config`. Must run inside a tokio runtime: it
    /// starts the backend lanes.
    #[must_use]
    pub fn new(config: Config, topology: Topology, port: u16) -> Arc<Self> {
        let lanes = LaneConfig::from_config(&config.backend, config.limits.max_reply_depth);
        let router = Router::new(topology, NodePool::new(lanes));
        Arc::new(Self {
            config: Arc::new(config),
            router,
            clients: Clients::default(),
            started: Instant::now(),
            port,
        })
    }

    /// The request scanner's bounds from `[limits]`.
    #[must_use]
    pub fn scan_limits(&self) -> ScanLimits {
        let limits = &self.config.limits;
        ScanLimits {
            max_multibulk_len: limits.max_multibulk_len,
            max_bulk_len: limits.max_bulk_bytes,
            max_inline_len: limits.max_inline_bytes,
        }
    }
}
