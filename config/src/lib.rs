//! # redshard-config
//!
//! Everything redshard knows before it opens a socket, pure and synchronous:
//!
//! - [`slot`]: hash slots, [`Slot::for_key`] (Redis Cluster's CRC16 and hash-tag rules) and
//!   [`SlotRange`].
//! - [`rules`]: key routing rules ([`KeyRules`]): keys with a configured prefix share the slot
//!   of one tag.
//! - [`addr`]: [`NodeAddr`], a validated `host:port` of a backend redis-server.
//! - [`file`](mod@file): the configuration file as written (TOML), every key with its `DEFAULT_*`.
//! - [`config`]: [`Config`], the validated, typed configuration, from
//!   [`Config::load`] / [`Config::from_toml_str`]; `validate` holds the checks, each error
//!   naming the file, line and key.
//! - [`cluster`](mod@cluster): `[cluster]`, the etcd endpoints and key prefix of a fleet of
//!   proxies ([`ClusterConfig`]).
//! - [`topology`]: the live cluster model, [`Topology`] (shards, the state of every slot, an
//!   epoch), changed only through [`Topology::apply`] of a [`TopologyChange`].
//! - [`store`]: persistence of the topology ([`FileTopologyStore`]: temp file, fsync,
//!   rename) and [`choose_initial`] between the configured and the persisted topology.
//! - [`error`]: the error types; their `Display` is what an operator reads.

#![forbid(unsafe_code)]

pub mod addr;
pub mod cluster;
pub mod config;
mod crc;
pub mod error;
pub mod file;
pub mod ha;
pub mod rules;
pub mod slot;
pub mod store;
pub mod topology;
pub mod trust;
mod validate;

pub use addr::NodeAddr;
pub use cluster::{ClusterConfig, EtcdAuth, EtcdTlsConfig};
pub use config::{
    BackendConfig, BackendTlsConfig, CertFiles, Config, Limits, LogConfig, LogFormat, ShardConfig,
    SlowlogConfig, TlsConfig, UserConfig,
};
pub use error::{ConfigError, NodeAddrError, SlotRangeError, StoreError};
pub use file::{Access, KeylessScripts};
pub use ha::{AckMode, HealthConfig, MirrorConfig, ReadFrom, ReplicationConfig, ReplicationMode};
pub use rules::{KeyRule, KeyRules, OwnTag};
pub use slot::{Slot, SlotRange, SLOT_COUNT};
pub use store::{
    choose_initial, FileTopologyStore, InitialSource, MemoryTopologyStore, TopologyStore,
};
pub use topology::{
    Migration, NodeRole, Replica, ReplicaState, Shard, ShardId, SlotState, Topology,
    TopologyChange, TopologyError,
};
pub use trust::NodePattern;
