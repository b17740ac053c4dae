//! # redshard-dataplane
//!
//! The data plane of the proxy: what serves a request, from the client's connection to the
//! node and back, and the state the sessions share.
//!
//! ```text
//! session ─▶ command (classify) ─▶ router (slot table) ─▶ backend lane ─▶ master
//!    ▲                                                          │
//!    └──────────────── replies, in the client's order ◀─────────┘
//! ```
//!
//! Its modules import only downward, in the layers of `tests/layers.rs` (which checks it);
//! the control plane (`redshard-control`) and the ports (`redshard-proxy`) are crates above
//! it, so nothing here can name them. Bottom up:
//!
//! - Leaves everyone may call: [`events`], the one channel from the data plane to the
//!   controller (`ControlEvent`); [`tls`], the certificates of the TLS listener and of backend
//!   connections (rustls), reloadable; [`allocator`], jemalloc as the global allocator, set to
//!   return freed memory to the OS; `clients`, the proxy's own client list (CLIENT
//!   LIST/INFO/ID) and connection counters; [`auth_throttle`], failed AUTH attempts per source
//!   address; `slowlog`, SLOWLOG at the proxy; [`outbuf`], output queues written with
//!   vectored writes; [`ha_stats`], the failovers, resyncs and stale replicas the controller
//!   counts; [`router::writer`], the topology-writing capability.
//! - `replies`: each client's reply queue, filled by lanes in any order, emptied in order;
//!   [`shutdown`]: the drain signal shared by every task.
//! - [`backend`]: per-node lanes: long-lived, multiplexed, pipelined connections.
//! - [`mirror`]: the replicas get each write's effect, made deterministic.
//! - [`router`]: the slot table in an `ArcSwap`, and the routing of one request.
//! - [`health`]: what is known of each backend node, readiness; [`migration`]: the
//!   migration queue and progress, and the key mover the data path and the controller share.
//! - [`tracking`]: CLIENT TRACKING's table of reads and the masters' tracking connections
//!   (client-side caching); it reaches the router and the clients through [`tracking::Hub`].
//! - [`state`]: what every session shares (configuration, live limits, router, client list,
//!   the tracking hub).
//! - [`session`]: one client connection (plain TCP or TLS): reads requests, dispatches them,
//!   writes the replies back in order; answers connection-local commands itself.
//!
//! # The one writer of the topology
//!
//! [`router::writer::TopologyWriter`] is minted only inside this crate, once, by
//! `Router::new`; [`state::ProxyState::with_options`] hands it out in
//! [`state::ControllerParts`], which the controller takes. No other crate can make one, so
//! the controller is the only writer of the topology, and the compiler holds that.
#![forbid(unsafe_code)]

pub mod allocator;
pub mod auth_throttle;
pub mod backend;
pub(crate) mod clients;
pub mod events;
pub mod fleet_status;
pub mod ha_stats;
pub mod health;
pub mod migration;
pub mod mirror;
pub(crate) mod monitor;
pub mod outbuf;
pub(crate) mod replies;
#[doc(hidden)]
pub use replies::bench_pipeline;
pub mod router;
pub mod script_keys;
pub mod session;
pub mod shutdown;
pub(crate) mod slowlog;
pub mod state;
pub mod tls;
pub mod tracking;
pub mod users;
