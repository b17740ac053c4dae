//! The topology in etcd: one compare-and-swap per change, and a watch of the newest one.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, EventType, Txn, TxnOp, TxnOpResponse, WatchOptions};
use redshard_config::Topology;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{ClusterError, Etcd, Leadership};

/// The topology of one cluster in etcd, at `<prefix>/topology` in the text a
/// `topology_file` holds, with its epoch beside it at `<prefix>/epoch`.
#[derive(Clone, Debug)]
pub struct EtcdTopologyStore {
    /// The etcd connection and key layout.
    etcd: Etcd,
}

impl EtcdTopologyStore {
    pub(crate) fn new(etcd: Etcd) -> EtcdTopologyStore {
        EtcdTopologyStore { etcd }
    }

    /// The stored topology; `None` when none was ever stored.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Etcd`] or [`ClusterError::Timeout`] when etcd cannot be read;
    /// [`ClusterError::Corrupt`] when the stored text is not a valid topology.
    pub async fn load(&self) -> Result<Option<Topology>, ClusterError> {
        Ok(self.load_at().await?.0)
    }

    /// The stored topology and the store revision it was read at.
    async fn load_at(&self) -> Result<(Option<Topology>, i64), ClusterError> {
        let key = self.etcd.keys.topology();
        let response = self
            .etcd
            .call(self.etcd.client().get(key.as_str(), None))
            .await?;
        let revision = response.header().map_or(0, |h| h.revision());
        let topology = match response.kvs().first() {
            Some(kv) => Some(parse(&key, kv.value())?),
            None => None,
        };
        Ok((topology, revision))
    }

    /// Stores `topology` when etcd holds none yet (the first proxy of a new fleet), in one
    /// transaction so that of several proxies starting together exactly one writes. Returns
    /// the topology etcd holds afterwards: `topology`, or the one stored before.
    ///
    /// # Errors
    ///
    /// As [`EtcdTopologyStore::load`].
    pub async fn seed(&self, topology: &Topology) -> Result<Topology, ClusterError> {
        let keys = &self.etcd.keys;
        let text = encode(topology)?;
        let txn = Txn::new()
            .when([Compare::create_revision(
                keys.topology(),
                CompareOp::Equal,
                0,
            )])
            .and_then([
                TxnOp::put(keys.topology(), text, None),
                TxnOp::put(keys.epoch(), topology.epoch.to_string(), None),
            ])
            .or_else([TxnOp::get(keys.topology(), None)]);
        let response = self.etcd.call(self.etcd.client().txn(txn)).await?;
        if response.succeeded() {
            return Ok(topology.clone());
        }
        let key = keys.topology();
        for op in response.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                if let Some(kv) = get.kvs().first() {
                    return parse(&key, kv.value());
                }
            }
        }
        Err(ClusterError::NoTopology { key })
    }

    /// Replaces the topology at `expected_epoch` by `topology`, in one etcd transaction that
    /// writes only while the stored epoch is `expected_epoch` and `leadership` is still the
    /// current leadership (its fencing token): an old leader can never overwrite a newer
    /// topology, and two saves based on one epoch cannot both succeed.
    ///
    /// # Errors
    ///
    /// [`ClusterError::EpochNotIncreasing`] when `topology.epoch` is not above
    /// `expected_epoch`; [`ClusterError::NotLeader`] when `leadership` ended;
    /// [`ClusterError::Conflict`] when another epoch is stored; [`ClusterError::Etcd`] or
    /// [`ClusterError::Timeout`] when etcd cannot be reached (then the save may or may not
    /// have happened: read the topology again). Nothing is written on any error but the last.
    pub async fn save(
        &self,
        leadership: &Leadership,
        expected_epoch: u64,
        topology: &Topology,
    ) -> Result<(), ClusterError> {
        if topology.epoch <= expected_epoch {
            return Err(ClusterError::EpochNotIncreasing {
                expected: expected_epoch,
                new: topology.epoch,
            });
        }
        let token = leadership.token();
        if !leadership.is_leading() {
            return Err(ClusterError::NotLeader { token });
        }
        let keys = &self.etcd.keys;
        let text = encode(topology)?;
        let txn = Txn::new()
            .when([
                Compare::value(keys.epoch(), CompareOp::Equal, expected_epoch.to_string()),
                Compare::create_revision(keys.leader(), CompareOp::Equal, token),
            ])
            .and_then([
                TxnOp::put(keys.topology(), text, None),
                TxnOp::put(keys.epoch(), topology.epoch.to_string(), None),
            ])
            .or_else([
                TxnOp::get(keys.epoch(), None),
                TxnOp::get(keys.leader(), None),
            ]);
        let response = self.etcd.call(self.etcd.client().txn(txn)).await?;
        if response.succeeded() {
            return Ok(());
        }
        let mut gets = response
            .op_responses()
            .into_iter()
            .filter_map(|op| match op {
                TxnOpResponse::Get(get) => Some(get),
                _ => None,
            });
        let epoch = gets.next();
        let leader = gets.next();
        let leads = leader
            .as_ref()
            .and_then(|l| l.kvs().first())
            .is_some_and(|kv| kv.create_revision() == token);
        if !leads {
            return Err(ClusterError::NotLeader { token });
        }
        let epoch_key = keys.epoch();
        let found = match epoch.as_ref().and_then(|e| e.kvs().first()) {
            Some(kv) => Some(parse_epoch(&epoch_key, kv.value())?),
            None => None,
        };
        Err(ClusterError::Conflict {
            expected: expected_epoch,
            found,
        })
    }

    /// Replaces the topology at `expected_epoch` by `topology` like [`EtcdTopologyStore::save`]
    /// but without the leadership check: only for a change that any proxy may make because
    /// it only takes trust away (a replica recorded stale after it missed an acknowledged
    /// write). The epoch is still compared, so it never overwrites a newer topology, and a
    /// leader's save based on the older epoch fails and reads this one first.
    ///
    /// # Errors
    ///
    /// [`ClusterError::EpochNotIncreasing`]; [`ClusterError::Conflict`] when another epoch is
    /// stored; [`ClusterError::Etcd`] or [`ClusterError::Timeout`] as for `save`.
    pub async fn save_unfenced(
        &self,
        expected_epoch: u64,
        topology: &Topology,
    ) -> Result<(), ClusterError> {
        if topology.epoch <= expected_epoch {
            return Err(ClusterError::EpochNotIncreasing {
                expected: expected_epoch,
                new: topology.epoch,
            });
        }
        let keys = &self.etcd.keys;
        let text = encode(topology)?;
        let txn = Txn::new()
            .when([Compare::value(
                keys.epoch(),
                CompareOp::Equal,
                expected_epoch.to_string(),
            )])
            .and_then([
                TxnOp::put(keys.topology(), text, None),
                TxnOp::put(keys.epoch(), topology.epoch.to_string(), None),
            ])
            .or_else([TxnOp::get(keys.epoch(), None)]);
        let response = self.etcd.call(self.etcd.client().txn(txn)).await?;
        if response.succeeded() {
            return Ok(());
        }
        let epoch_key = keys.epoch();
        let mut found = None;
        for op in response.op_responses() {
            if let TxnOpResponse::Get(get) = op {
                if let Some(kv) = get.kvs().first() {
                    found = Some(parse_epoch(&epoch_key, kv.value())?);
                }
            }
        }
        Err(ClusterError::Conflict {
            expected: expected_epoch,
            found,
        })
    }

    /// Follows the stored topology: the returned watch holds the newest one and is told of
    /// every newer epoch. A broken watch (etcd restarting, a lost connection, a compacted
    /// history) is opened again after the topology is read anew; a topology whose epoch is
    /// not above the one held is never published, so the watch never goes back.
    ///
    /// # Errors
    ///
    /// [`ClusterError::NoTopology`] when etcd holds none yet (seed it first); otherwise as
    /// [`EtcdTopologyStore::load`].
    pub async fn watch_topology(&self) -> Result<TopologyWatch, ClusterError> {
        let (topology, revision) = self.load_at().await?;
        let Some(topology) = topology else {
            return Err(ClusterError::NoTopology {
                key: self.etcd.keys.topology(),
            });
        };
        let (tx, rx) = watch::channel(Arc::new(topology));
        let task = tokio::spawn(follow(self.clone(), tx, revision));
        Ok(TopologyWatch { rx, task })
    }
}

/// The newest topology in etcd, kept up to date by a background task that stops when this
/// is dropped.
#[derive(Debug)]
pub struct TopologyWatch {
    /// Holds the newest topology.
    rx: watch::Receiver<Arc<Topology>>,
    /// The task following etcd.
    task: JoinHandle<()>,
}

impl Drop for TopologyWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TopologyWatch {
    /// The newest topology seen.
    #[must_use]
    pub fn current(&self) -> Arc<Topology> {
        self.rx.borrow().clone()
    }

    /// A receiver of the newest topology, for a task that swaps its routing table on each.
    /// It sees changes only while this watch lives.
    #[must_use]
    pub fn receiver(&self) -> watch::Receiver<Arc<Topology>> {
        self.rx.clone()
    }

    /// Waits for a topology newer than the last one this watch returned or was created
    /// with, and returns it.
    pub async fn changed(&mut self) -> Arc<Topology> {
        // The sender lives in the task, which lives as long as `self`; it never drops it.
        let _ = self.rx.changed().await;
        self.rx.borrow_and_update().clone()
    }
}

/// The watch task: publishes each newer topology; after any break, reads it anew and watches
/// again from there.
async fn follow(store: EtcdTopologyStore, tx: watch::Sender<Arc<Topology>>, mut revision: i64) {
    let key = store.etcd.keys.topology();
    let mut backoff = Duration::ZERO;
    // Whether the last read failed too: one warning per outage, not one per retry.
    let mut failing = false;
    loop {
        watch_from(&store, &key, &tx, &mut revision).await;
        backoff = crate::next_backoff(backoff);
        // A pause before trying etcd again, not a wait for an event.
        tokio::time::sleep(backoff).await;
        match store.load_at().await {
            Ok((topology, at)) => {
                if failing {
                    tracing::info!("reading the topology from etcd again");
                }
                failing = false;
                if let Some(topology) = topology {
                    publish(&tx, topology);
                }
                revision = at;
                backoff = Duration::ZERO;
            }
            Err(e) if failing => tracing::debug!("reading the topology from etcd: {e}"),
            Err(e) => {
                failing = true;
                tracing::warn!("reading the topology from etcd: {e}; retrying");
            }
        }
    }
}

/// Watches the topology key after `revision` until the watch breaks, publishing each newer
/// topology and advancing `revision`.
async fn watch_from(
    store: &EtcdTopologyStore,
    key: &str,
    tx: &watch::Sender<Arc<Topology>>,
    revision: &mut i64,
) {
    let options = WatchOptions::new().with_start_revision(*revision + 1);
    let mut client = store.etcd.client();
    let Ok(Ok(mut stream)) =
        crate::bounded(store.etcd.lease_ttl, client.watch(key, Some(options))).await
    else {
        return;
    };
    loop {
        let message = match stream.message().await {
            Ok(Some(message)) => message,
            Ok(None) | Err(_) => return,
        };
        if message.canceled() {
            // Compacted past our revision, or etcd cancelled the watch: read anew.
            return;
        }
        for event in message.events() {
            let Some(kv) = event.kv() else { continue };
            *revision = (*revision).max(kv.mod_revision());
            if event.event_type() != EventType::Put {
                continue;
            }
            match parse(key, kv.value()) {
                Ok(topology) => publish(tx, topology),
                Err(e) => tracing::warn!("ignoring an invalid topology in etcd: {e}"),
            }
        }
    }
}

/// Publishes `topology` if its epoch is above the one held.
fn publish(tx: &watch::Sender<Arc<Topology>>, topology: Topology) {
    tx.send_if_modified(|held| {
        if topology.epoch > held.epoch {
            *held = Arc::new(topology);
            true
        } else {
            false
        }
    });
}

fn encode(topology: &Topology) -> Result<String, ClusterError> {
    toml::to_string(topology).map_err(|e| ClusterError::Corrupt {
        key: "(the topology to store)".to_owned(),
        message: e.to_string(),
    })
}

fn parse(key: &str, value: &[u8]) -> Result<Topology, ClusterError> {
    let corrupt = |message: String| ClusterError::Corrupt {
        key: key.to_owned(),
        message,
    };
    let text = std::str::from_utf8(value).map_err(|e| corrupt(e.to_string()))?;
    toml::from_str(text).map_err(|e| corrupt(e.message().trim_end().to_owned()))
}

fn parse_epoch(key: &str, value: &[u8]) -> Result<u64, ClusterError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClusterError::Corrupt {
            key: key.to_owned(),
            message: "not a decimal epoch".to_owned(),
        })
}
