//! Backend health: which nodes answer, for `/readyz` and the `backend_up` metric.
//!
//! [`BackendHealth`] holds one status per node: unknown until someone reports, then up or
//! down. Two reporters feed it:
//! - the **probe** ([`spawn_probe`]), running beside the HTTP endpoint: every
//!   [`PROBE_INTERVAL`] it sends `PING` to every master on one kept connection (reconnecting,
//!   with TLS when `[backend] tls` is on, and re-authenticating as needed), each exchange
//!   bounded by [`PROBE_TIMEOUT`]. A master
//!   is marked up by one good answer and down after [`PROBE_FALL`] failed rounds in a row,
//!   so one lost packet does not flap readiness;
//! - the **lanes**, through [`BackendHealth::set`] and [`BackendHealth::set_down`], which
//!   know first when a connection breaks or comes back.
//!
//! The last report wins. The proxy is ready when every shard that serves slots has a master
//! known to be up ([`BackendHealth::readiness`]).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use redshard_config::{NodeAddr, Slot, SLOT_COUNT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::{JoinHandle, JoinSet};

use crate::backend::stream::BackendStream;
use crate::tls::BackendTls;

use crate::resp::{encode, reply, ReplyScanner};
use crate::router::RoutingTable;
use crate::shutdown::Shutdown;
use crate::state::ProxyState;

/// Time between two probe rounds.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Bound on one probe: connect (and the TLS handshake), AUTH and PING, or PING alone on a
/// kept connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// Failed probe rounds in a row before a master is marked down.
pub const PROBE_FALL: u32 = 2;
/// Largest reply the probe reads before giving up on a node.
const MAX_PROBE_REPLY: usize = 64 * 1024;

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

/// The probe's memory of one master.
#[derive(Debug, Default)]
struct Probe {
    /// The kept connection, when the last probe succeeded.
    conn: Option<BackendStream>,
    /// Failed rounds in a row.
    failures: u32,
}

/// Starts the probe of every master of the current topology (see the [module docs](self));
/// it stops when `shutdown` fires.
pub fn spawn_probe(state: Arc<ProxyState>, mut shutdown: Shutdown) -> JoinHandle<()> {
    let auth = auth_request(&state);
    let tls = state.tls.backend.clone();
    tokio::spawn(async move {
        let mut probes: HashMap<NodeAddr, Probe> = HashMap::new();
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.wait() => break,
                _ = tick.tick() => {}
            }
            tokio::select! {
                () = shutdown.wait() => break,
                () = probe_round(&state, &mut probes, auth.as_ref(), tls.as_ref()) => {}
            }
        }
    })
}

/// Probes every master of the current table once, at the same time, and records the results.
async fn probe_round(
    state: &ProxyState,
    probes: &mut HashMap<NodeAddr, Probe>,
    auth: Option<&Bytes>,
    tls: Option<&Arc<BackendTls>>,
) {
    let table = state.router.load();
    let nodes: Vec<&NodeAddr> = table.topology().nodes().collect();
    state.health.retain(&nodes);
    let mut masters: Vec<NodeAddr> = table
        .shards()
        .iter()
        .map(|s| s.master.addr().clone())
        .collect();
    masters.sort_unstable();
    masters.dedup();
    probes.retain(|node, _| masters.contains(node));
    let mut round = JoinSet::new();
    for node in masters {
        let conn = probes.entry(node.clone()).or_default().conn.take();
        round.spawn(probe(node, conn, auth.cloned(), tls.cloned()));
    }
    while let Some(done) = round.join_next().await {
        let Ok((node, result)) = done else { continue };
        let entry = probes.entry(node.clone()).or_default();
        match result {
            Ok(conn) => {
                entry.conn = Some(conn);
                entry.failures = 0;
                state.health.set(&node, true);
            }
            Err(reason) => {
                entry.failures = entry.failures.saturating_add(1);
                if entry.failures >= PROBE_FALL {
                    state.health.set_down(&node, reason);
                }
            }
        }
    }
}

/// The `AUTH` of the proxy's control connections: `[backend] control_*` when set, else the
/// client-traffic credentials.
fn auth_request(state: &ProxyState) -> Option<Bytes> {
    let backend = &state.config.backend;
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

/// One probe of `node`: PING on the kept connection, or on a new one if there is none or it
/// failed (a connection the node closed while idle is not a failure of the node).
async fn probe(
    node: NodeAddr,
    conn: Option<BackendStream>,
    auth: Option<Bytes>,
    tls: Option<Arc<BackendTls>>,
) -> (NodeAddr, Result<BackendStream, String>) {
    if let Some(conn) = conn {
        if let Ok(Ok(conn)) = tokio::time::timeout(PROBE_TIMEOUT, ping(conn)).await {
            return (node, Ok(conn));
        }
    }
    let fresh = async {
        let mut conn = BackendStream::connect(&node, tls.as_deref())
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        if let Some(auth) = &auth {
            let answer = exchange(&mut conn, auth).await?;
            if !reply::is_ok(&answer) {
                return Err(format!(
                    "refused the proxy's credentials: {}",
                    String::from_utf8_lossy(&answer).trim_end()
                ));
            }
        }
        ping(conn).await
    };
    let result = match tokio::time::timeout(PROBE_TIMEOUT, fresh).await {
        Ok(result) => result,
        Err(_) => Err(format!("no answer within {} ms", PROBE_TIMEOUT.as_millis())),
    };
    (node, result)
}

/// Sends `PING` and expects `+PONG`.
async fn ping(mut conn: BackendStream) -> Result<BackendStream, String> {
    let answer = exchange(&mut conn, b"*1\r\n$4\r\nPING\r\n").await?;
    if answer.as_ref() == b"+PONG\r\n" {
        Ok(conn)
    } else {
        Err(format!(
            "answered PING with {}",
            String::from_utf8_lossy(&answer).trim_end()
        ))
    }
}

/// Writes `request` and reads one reply.
async fn exchange(conn: &mut BackendStream, request: &[u8]) -> Result<BytesMut, String> {
    conn.write_all(request)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    let mut buf = BytesMut::with_capacity(64);
    let mut scanner = ReplyScanner::new(8);
    loop {
        match conn.read_buf(&mut buf).await {
            Ok(0) => return Err("closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read failed: {e}")),
        }
        match scanner.scan(&buf) {
            Ok(Some(len)) => return Ok(buf.split_to(len)),
            Ok(None) if buf.len() < MAX_PROBE_REPLY => {}
            Ok(None) => return Err("sent an oversized reply".into()),
            Err(e) => return Err(format!("sent an invalid reply ({e})")),
        }
    }
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
