//! Test support: real `redis-server` (and `etcd`) processes on free loopback ports, the real
//! proxy started in-process, and a small RESP client decoding with `redis-protocol` (an implementation
//! independent of the proxy's own scanner).

pub mod client;
pub mod cluster;
pub mod etcd;
pub mod reap;
pub mod replication;
pub mod server;
pub mod wait;
pub mod workload;

pub use client::{Client, Reply};
pub use cluster::TestCluster;
pub use etcd::{EtcdServer, EtcdTls};
pub use server::binary;
pub use server::RedisServer;
pub use wait::{wait_for_progress, wait_until};
