//! Probe reports: each proxy publishes its view of the nodes' health, bound to its lease, so
//! the leader fails over only a node that the live proxies agree is down (a node that one
//! proxy alone cannot reach is that proxy's problem, not the node's).
//!
//! The value at `<prefix>/health/<id>` is one line per node, `host:port up` or
//! `host:port down`.

use std::fmt;

use etcd_client::{GetOptions, PutOptions};
use redshard_config::NodeAddr;

use crate::{ClusterError, Etcd, Session};

/// One proxy's verdict on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeHealth {
    /// The node answers this proxy's probes.
    Up,
    /// The node has failed this proxy's probes for `[health] down_after_ms`.
    Down,
}

impl fmt::Display for NodeHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeHealth::Up => "up",
            NodeHealth::Down => "down",
        })
    }
}

/// One proxy's view of the nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthView {
    /// The proxy that published it.
    pub proxy: String,
    /// Its verdict on each node it probes.
    pub nodes: Vec<(NodeAddr, NodeHealth)>,
}

impl HealthView {
    /// This view's verdict on `node`; `None` when the proxy does not report it.
    #[must_use]
    pub fn of(&self, node: &NodeAddr) -> Option<NodeHealth> {
        self.nodes.iter().find(|(n, _)| n == node).map(|&(_, h)| h)
    }
}

/// Publishing and reading probe reports.
#[derive(Clone, Debug)]
pub struct HealthReports {
    /// The etcd connection and key layout.
    etcd: Etcd,
}

impl HealthReports {
    /// The probe reports of the cluster of `etcd`.
    #[must_use]
    pub fn new(etcd: &Etcd) -> HealthReports {
        HealthReports { etcd: etcd.clone() }
    }

    /// Publishes proxy `id`'s view, bound to `session` (it disappears with the proxy).
    ///
    /// # Errors
    ///
    /// [`ClusterError::SessionLost`] when `session` is not alive; [`ClusterError::Etcd`] or
    /// [`ClusterError::Timeout`] when etcd cannot be written.
    pub async fn publish(
        &self,
        session: &Session,
        id: &str,
        nodes: &[(NodeAddr, NodeHealth)],
    ) -> Result<(), ClusterError> {
        session.check_alive()?;
        let value = encode(nodes);
        let options = PutOptions::new().with_lease(session.lease());
        let key = self.etcd.keys.health_of(id);
        self.etcd
            .call(self.etcd.client().put(key, value, Some(options)))
            .await?;
        Ok(())
    }

    /// Every live proxy's view. A view that cannot be read is skipped with a warning.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Etcd`] or [`ClusterError::Timeout`] when etcd cannot be read.
    pub async fn views(&self) -> Result<Vec<HealthView>, ClusterError> {
        let prefix = self.etcd.keys.health();
        let response = self
            .etcd
            .call(
                self.etcd
                    .client()
                    .get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let mut views = Vec::with_capacity(response.kvs().len());
        for kv in response.kvs() {
            let key = String::from_utf8_lossy(kv.key());
            let proxy = key.strip_prefix(&prefix).unwrap_or(&key).to_owned();
            match decode(kv.value()) {
                Ok(nodes) => views.push(HealthView { proxy, nodes }),
                Err(e) => tracing::warn!("ignoring the invalid probe report {key}: {e}"),
            }
        }
        Ok(views)
    }
}

fn encode(nodes: &[(NodeAddr, NodeHealth)]) -> String {
    let mut text = String::with_capacity(nodes.len() * 24);
    for (node, health) in nodes {
        text.push_str(&format!("{node} {health}\n"));
    }
    text
}

fn decode(value: &[u8]) -> Result<Vec<(NodeAddr, NodeHealth)>, String> {
    let text = std::str::from_utf8(value).map_err(|e| e.to_string())?;
    let mut nodes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let (node, health) = line
            .split_once(' ')
            .ok_or_else(|| format!("line {}: expected \"host:port up|down\"", i + 1))?;
        let node = NodeAddr::parse(node).map_err(|e| format!("line {}: {e}", i + 1))?;
        let health = match health.trim() {
            "up" => NodeHealth::Up,
            "down" => NodeHealth::Down,
            other => return Err(format!("line {}: {other:?} is not up or down", i + 1)),
        };
        nodes.push((node, health));
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_read_back_as_written() {
        let nodes = vec![
            (NodeAddr::parse("127.0.0.1:6381").unwrap(), NodeHealth::Up),
            (NodeAddr::parse("[::1]:6382").unwrap(), NodeHealth::Down),
        ];
        let text = encode(&nodes);
        assert_eq!(text, "127.0.0.1:6381 up\n[::1]:6382 down\n");
        assert_eq!(decode(text.as_bytes()).unwrap(), nodes);
    }

    #[test]
    fn bad_reports_are_refused_naming_the_line() {
        let error = decode(b"127.0.0.1:1 up\n127.0.0.1:2 sideways\n").unwrap_err();
        assert!(error.contains("line 2"), "{error}");
        assert!(decode(b"nonsense").unwrap_err().contains("line 1"));
        assert!(decode(b"\xff").is_err());
        assert_eq!(decode(b"").unwrap(), Vec::new());
    }
}
