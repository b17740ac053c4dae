//! Backend health: which nodes answer, for `/readyz` and the `backend_up` metric.
//!
//! [`BackendHealth`] holds one status per node: unknown until someone reports, then up or
//! down. The controller's probes (`redshard_control::probe`) feed it after every probe of
//! every node of the topology (masters and replicas), every `[health] interval_ms`.
//! The proxy is ready when every shard that serves slots has a master
//! known to be up ([`BackendHealth::readiness`]).

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use bytes::{Bytes, BytesMut};
use redshard_config::{BackendConfig, NodeAddr, Slot, SLOT_COUNT};

use crate::router::RoutingTable;
use redshard_protocol::resp::encode;

/// What is known of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    /// Nobody has reported on it yet.
    Unknown,
    /// It answered the last check, or a connection to it works.
    Up,
    /// It did not answer; why.
    Down(String),
}

/// The status of every node the proxy cares about, by address.
#[derive(Debug, Default)]
pub struct BackendHealth {
    /// Statuses by node; a node missing here is [`NodeStatus::Unknown`].
    nodes: RwLock<HashMap<NodeAddr, NodeStatus>>,
}

impl BackendHealth {
    /// Records that `node` works (`up`) or does not. Call it on transitions (a lane connected,
    /// a lane failed), not for every request.
    pub fn set(&self, node: &NodeAddr, up: bool) {
        if up {
            self.put(node, NodeStatus::Up);
        } else {
            self.put(node, NodeStatus::Down("a backend connection failed".into()));
        }
    }

    /// Records that `node` does not work, and why (shown by `/readyz`).
    pub fn set_down(&self, node: &NodeAddr, reason: impl Into<String>) {
        self.put(node, NodeStatus::Down(reason.into()));
    }

    fn put(&self, node: &NodeAddr, status: NodeStatus) {
        {
            let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
            if nodes.get(node) == Some(&status) {
                return;
            }
        }
        let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
        let previous = nodes.insert(node.clone(), status.clone());
        match (&previous, &status) {
            (Some(NodeStatus::Up), NodeStatus::Down(reason)) => {
                tracing::warn!(node = %node, reason = %reason, "backend is down");
            }
            (Some(NodeStatus::Down(_)), NodeStatus::Up) => {
                tracing::info!(node = %node, "backend is up again");
            }
            _ => {}
        }
    }

    /// What is known of `node`.
    #[must_use]
    pub fn status(&self, node: &NodeAddr) -> NodeStatus {
        let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
        nodes.get(node).cloned().unwrap_or(NodeStatus::Unknown)
    }

    /// Every node reported on, sorted by address.
    #[must_use]
    pub fn snapshot(&self) -> Vec<(NodeAddr, NodeStatus)> {
        let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = nodes.iter().map(|(n, s)| (n.clone(), s.clone())).collect();
        all.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Forgets the nodes not in `keep` (they left the topology).
    pub fn retain(&self, keep: &[&NodeAddr]) {
        let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
        nodes.retain(|node, _| keep.contains(&node));
    }

    /// Whether `table` can be served: every shard serving slots has a master known to be up.
    ///
    /// # Errors
    /// One line per shard that cannot be served, naming it, its master and why.
    pub fn readiness(&self, table: &RoutingTable) -> Result<(), Vec<String>> {
        let reasons: Vec<String> = table
            .shards()
            .iter()
            .zip(slots_per_shard(table))
            .filter(|&(_, slots)| slots > 0)
            .filter_map(|(shard, slots)| {
                let master = shard.master.addr();
                let why = match self.status(master) {
                    NodeStatus::Up => return None,
                    NodeStatus::Down(reason) => format!("is down: {reason}"),
                    NodeStatus::Unknown => "has not been checked yet".to_owned(),
                };
                Some(format!(
                    "shard {:?} ({slots} slots): master {master} {why}",
                    shard.name
                ))
            })
            .collect();
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

/// How many slots each shard of `table` serves, in table order.
#[must_use]
pub fn slots_per_shard(table: &RoutingTable) -> Vec<usize> {
    let mut counts = vec![0; table.shards().len()];
    for slot in (0..SLOT_COUNT).filter_map(|s| u16::try_from(s).ok().and_then(Slot::new)) {
        if let Some(count) = counts.get_mut(table.shard_of(slot)) {
            *count += 1;
        }
    }
    counts
}

/// The `AUTH` of the proxy's control connections: `[backend] control_*` when set, else the
/// client-traffic credentials.
pub fn auth_request(backend: &BackendConfig) -> Option<Bytes> {
    let (username, password) = match &backend.control_password {
        Some(password) => (&backend.control_username, password),
        None => (&backend.username, backend.password.as_ref()?),
    };
    let mut out = BytesMut::new();
    match username {
        Some(user) => encode::request(&mut out, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
        None => encode::request(&mut out, &[b"AUTH", password.as_bytes()]),
    }
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> NodeAddr {
        NodeAddr::parse(s).unwrap()
    }

    #[test]
    fn statuses_are_set_and_forgotten() {
        let health = BackendHealth::default();
        let (a, b) = (addr("127.0.0.1:1"), addr("127.0.0.1:2"));
        assert_eq!(health.status(&a), NodeStatus::Unknown);
        health.set(&a, true);
        health.set_down(&b, "refused");
        assert_eq!(health.status(&a), NodeStatus::Up);
        assert_eq!(health.status(&b), NodeStatus::Down("refused".into()));
        health.set(&a, false);
        assert!(matches!(health.status(&a), NodeStatus::Down(_)));
        assert_eq!(health.snapshot().len(), 2);
        health.retain(&[&b]);
        assert_eq!(health.status(&a), NodeStatus::Unknown);
        assert_eq!(
            health.snapshot(),
            vec![(b, NodeStatus::Down("refused".into()))]
        );
    }
}
