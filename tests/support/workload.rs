//! Workloads and end-state checks shared by the integration tests and the CLI tests: clients
//! that write and read under live changes, key placement, replica equality.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use redshard_config::{ReplicaState, Slot, SlotState, Topology};
use tokio::task::JoinSet;

use crate::replication::{digest, expiry_times};
use crate::{Client, Reply, TestCluster};

/// Clients overwriting and reading `live:*` keys (each writer its own keys, so the last
/// value written is known) until stopped; errors are counted.
#[derive(Debug)]
pub struct Traffic {
    /// Tells the clients to stop.
    stop: Arc<AtomicBool>,
    /// Errors seen (a SET not acknowledged, a GET not reading the last value).
    errors: Arc<AtomicU64>,
    /// The clients; each returns the (key, value) it last had acknowledged.
    tasks: JoinSet<Vec<(String, String)>>,
}

impl Traffic {
    /// Starts `clients` clients on `cluster`.
    pub async fn start(cluster: &TestCluster, clients: usize) -> Self {
        Self::start_on(&[cluster.addr], clients).await
    }

    /// Starts `clients` clients spread over the proxies at `proxies` (client `c` on
    /// `proxies[c % len]`), as a fleet behind a load balancer has them.
    pub async fn start_on(proxies: &[SocketAddr], clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let errors = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for c in 0..clients {
            let (stop, errors) = (Arc::clone(&stop), Arc::clone(&errors));
            let mut client = Client::connect_addr(proxies[c % proxies.len()]).await;
            tasks.spawn(async move {
                let mut last = std::collections::HashMap::new();
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for k in 0..50 {
                        let key = format!("live:{c}:{k}");
                        let value = format!("{round}");
                        match client.cmd(&["SET", &key, &value]).await {
                            Reply::Status(s) if s == "OK" => {
                                last.insert(key.clone(), value.clone());
                            }
                            other => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                eprintln!("traffic error on SET {key}: {other:?}");
                            }
                        }
                        let got = client.cmd(&["GET", &key]).await;
                        if got != Reply::bulk(&value) {
                            errors.fetch_add(1, Ordering::Relaxed);
                            eprintln!("traffic read {key}: {got:?}, wrote {value}");
                        }
                    }
                    round += 1;
                }
                last.into_iter().collect()
            });
        }
        Self {
            stop,
            errors,
            tasks,
        }
    }

    /// Stops the clients; returns the last acknowledged value of every key, and the errors.
    pub async fn finish(mut self) -> (Vec<(String, String)>, u64) {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        while let Some(done) = self.tasks.join_next().await {
            all.extend(done.expect("traffic task"));
        }
        (all, self.errors.load(Ordering::Relaxed))
    }
}

/// Every key on every master belongs to a slot that master's shard owns.
pub async fn assert_keys_where_they_belong(topology: &Topology) {
    for shard in &topology.shards {
        let mut client = Client::connect(shard.master.to_string()).await;
        let Reply::Array(keys) = client.cmd(&["KEYS", "*"]).await else {
            panic!("KEYS");
        };
        for key in keys {
            let Reply::Bulk(Some(key)) = key else {
                continue;
            };
            let slot = Slot::for_key(&key);
            assert_eq!(
                topology.slot_state(slot),
                SlotState::Owned(shard.id),
                "{} sits on {} ({}), which does not own slot {}",
                String::from_utf8_lossy(&key),
                shard.master,
                shard.name,
                slot.get()
            );
        }
    }
}

/// Asserts every replica holds exactly its master's data and expiry times.
pub async fn assert_replicas_equal(cluster: &TestCluster) {
    assert_replicas_equal_in(&cluster.topology()).await;
}

/// Asserts every replica of `topology` is in sync and holds exactly its master's data and
/// expiry times.
pub async fn assert_replicas_equal_in(topology: &Topology) {
    for shard in &topology.shards {
        for replica in &shard.replicas {
            assert_eq!(
                replica.state,
                ReplicaState::InSync,
                "{} of {}",
                replica.addr,
                shard.name
            );
            let (m, r) = (shard.master.to_string(), replica.addr.to_string());
            // Proxy mirroring has them all once replies are back; Redis replication may
            // still be applying the master's last writes.
            crate::replication::wait_digest_equal(&m, &r).await;
            assert_eq!(
                digest(&m).await,
                digest(&r).await,
                "digest of {r} differs from its master {m}"
            );
            assert_eq!(
                expiry_times(&m).await,
                expiry_times(&r).await,
                "expiry times of {r} differ from {m}"
            );
        }
    }
}
