//! Health probes: one task per node sends `PING` every `[health] interval_ms` (or at once when
//! a lane reports a failed connection) on a kept control connection, each bounded by
//! `timeout_ms`, and records when the node last answered.
//!
//! A node is **down** when it has failed for `down_after_ms`, or when its connections have
//! been *refused* (nothing listens: the process is gone, not paused) for a third of that. A
//! node that pauses (SIGSTOP, a long fork) for less than half the down-time is never down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redshard_config::{HealthConfig, NodeAddr};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::conn::{ConnError, ControlConn};
use redshard_dataplane::health::BackendHealth;
use redshard_dataplane::tls::BackendTls;

/// What the probe knows of one node.
#[derive(Clone, Debug, Default)]
pub struct ProbeStatus {
    /// When the node last answered a probe.
    pub(crate) last_ok: Option<Instant>,
    /// Since when every probe failed (`None` while the last one succeeded).
    pub(crate) failing_since: Option<Instant>,
    /// Since when every probe was refused (`None` unless the last one was).
    pub refused_since: Option<Instant>,
    /// Why the last probe failed.
    pub(crate) last_error: Option<String>,
}

impl ProbeStatus {
    /// Whether the node is down by the rules of the module docs.
    #[must_use]
    pub fn is_down(&self, health: &HealthConfig) -> bool {
        let failing = self
            .failing_since
            .is_some_and(|t| t.elapsed() >= health.down_after);
        let refused = self
            .refused_since
            .is_some_and(|t| t.elapsed() >= health.down_after / 3);
        failing || refused
    }

    /// Whether the last probe failed (the node may be down).
    #[must_use]
    pub fn is_failing(&self) -> bool {
        self.failing_since.is_some()
    }

    /// Whether the last probe succeeded.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.last_ok.is_some() && self.failing_since.is_none()
    }
}

/// One node's probe task and what it found.
#[derive(Debug)]
struct Entry {
    /// Updated by the task.
    status: Arc<Mutex<ProbeStatus>>,
    /// Makes the task probe at once.
    kick: Arc<Notify>,
    /// The task, aborted when the node leaves.
    task: JoinHandle<()>,
}

/// What every probe task shares.
#[derive(Debug)]
struct Shared {
    /// `[health]`.
    health: HealthConfig,
    /// The control connections' `AUTH`.
    auth: Option<Bytes>,
    /// TLS to backends, when on.
    tls: Option<Arc<BackendTls>>,
    /// Where results are published for `/readyz` and `backend_up`.
    backend: Arc<BackendHealth>,
    /// Woken after each failed probe and each recovery, so the controller reacts at once.
    changed: Arc<Notify>,
}

/// Every node's probe.
#[derive(Debug)]
pub(crate) struct Probes {
    /// Probes by node.
    nodes: Mutex<HashMap<NodeAddr, Entry>>,
    /// Settings and sinks of every probe task.
    shared: Arc<Shared>,
}

impl Probes {
    /// Probes with `health` settings, authenticating with `auth`, publishing to `backend` and
    /// waking `changed` on news.
    #[must_use]
    pub fn new(
        health: HealthConfig,
        auth: Option<Bytes>,
        tls: Option<Arc<BackendTls>>,
        backend: Arc<BackendHealth>,
        changed: Arc<Notify>,
    ) -> Self {
        Self {
            nodes: Mutex::new(HashMap::new()),
            shared: Arc::new(Shared {
                health,
                auth,
                tls,
                backend,
                changed,
            }),
        }
    }

    /// Makes sure exactly the nodes in `nodes` are probed.
    pub(crate) fn track<'a>(&self, nodes: impl IntoIterator<Item = &'a NodeAddr>) {
        let wanted: Vec<&NodeAddr> = nodes.into_iter().collect();
        let mut map = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        map.retain(|addr, entry| {
            let keep = wanted.contains(&addr);
            if !keep {
                entry.task.abort();
            }
            keep
        });
        for addr in wanted {
            if map.contains_key(addr) {
                continue;
            }
            let status = Arc::new(Mutex::new(ProbeStatus::default()));
            let kick = Arc::new(Notify::new());
            let task = tokio::spawn(run(
                addr.clone(),
                Arc::clone(&status),
                Arc::clone(&kick),
                Arc::clone(&self.shared),
            ));
            map.insert(addr.clone(), Entry { status, kick, task });
        }
    }

    /// What is known of `addr` (a node never probed is neither up nor down).
    #[must_use]
    pub fn status(&self, addr: &NodeAddr) -> ProbeStatus {
        let map = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        map.get(addr)
            .map(|e| {
                e.status
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()
            })
            .unwrap_or_default()
    }

    /// Probes `addr` now (a lane lost its connection to it).
    pub(crate) fn kick(&self, addr: &NodeAddr) {
        let map = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = map.get(addr) {
            entry.kick.notify_one();
        }
    }

    /// Stops every probe.
    pub fn stop(&self) {
        let mut map = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, entry) in map.drain() {
            entry.task.abort();
        }
    }
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The probe task of one node.
async fn run(
    addr: NodeAddr,
    status: Arc<Mutex<ProbeStatus>>,
    kick: Arc<Notify>,
    shared: Arc<Shared>,
) {
    let Shared {
        health,
        auth,
        tls,
        backend,
        changed,
    } = &*shared;
    let mut conn: Option<ControlConn> = None;
    let mut tick = tokio::time::interval(health.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = kick.notified() => {}
        }
        let result = probe_once(
            &addr,
            &mut conn,
            auth.as_ref(),
            tls.as_deref(),
            health.timeout,
        )
        .await;
        let now = Instant::now();
        let news = {
            let mut s = status.lock().unwrap_or_else(PoisonError::into_inner);
            match &result {
                Ok(()) => {
                    let news = s.failing_since.is_some() || s.last_ok.is_none();
                    s.last_ok = Some(now);
                    s.failing_since = None;
                    s.refused_since = None;
                    s.last_error = None;
                    news
                }
                Err(e) => {
                    s.failing_since.get_or_insert(now);
                    if matches!(e, ConnError::Refused(_)) {
                        s.refused_since.get_or_insert(now);
                    } else {
                        s.refused_since = None;
                    }
                    s.last_error = Some(e.to_string());
                    true
                }
            }
        };
        match result {
            Ok(()) => backend.set(&addr, true),
            Err(e) => backend.set_down(&addr, e.to_string()),
        }
        if news {
            changed.notify_one();
        }
    }
}

/// One PING on the kept connection, or on a new one.
async fn probe_once(
    addr: &NodeAddr,
    conn: &mut Option<ControlConn>,
    auth: Option<&Bytes>,
    tls: Option<&BackendTls>,
    timeout: Duration,
) -> Result<(), ConnError> {
    if let Some(c) = conn.as_mut() {
        match c.call(&[b"PING"]).await {
            Ok(answer) if answer.as_ref() == b"+PONG\r\n" => return Ok(()),
            _ => *conn = None,
        }
    }
    let mut fresh = ControlConn::open(addr, auth, tls, timeout).await?;
    let answer = fresh.call(&[b"PING"]).await?;
    if answer.as_ref() != b"+PONG\r\n" {
        return Err(ConnError::Failed {
            addr: addr.clone(),
            reason: format!(
                "answered PING with {}",
                String::from_utf8_lossy(&answer).trim_end()
            ),
        });
    }
    *conn = Some(fresh);
    Ok(())
}
