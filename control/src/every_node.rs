//! `CONFIG SET`, `CONFIG RESETSTAT`, `CONFIG REWRITE`, `LATENCY RESET`, `SAVE`, `BGSAVE`
//! and `BGREWRITEAOF` for clients.
//!
//! Server settings and statistics belong to every node: one node alone would leave the
//! shards (and a master and its replicas) configured differently, and a failover would change
//! the cluster's behaviour. Persistence belongs to every master: together they hold the data
//! set (a replica that restarts is resynchronised from its master, so its own files are never
//! the data), and `INFO persistence` is theirs, merged. So a session hands the command
//! (already checked against the parameters the proxy manages, see the session's `admin.rs`)
//! to the controller
//! ([`ControlEvent::EveryNode`](redshard_dataplane::events::ControlEvent::EveryNode)), which
//! sends it to every node of the topology (masters and replicas) or to every master, at once,
//! each on a control connection of its own, and answers as one server would: `+OK` (LATENCY
//! RESET: the events reset, summed; BGSAVE: `+Background saving started`, or `scheduled`
//! when some master only scheduled it; SAVE: `+OK` once every master's save ended, see
//! [`save`]) when every node accepted; otherwise
//! [`ClientError::NodesRefused`](redshard_protocol::client_error::ClientError::NodesRefused),
//! naming each node that refused (with its own error) or did not answer, and how many
//! applied it. Nothing is rolled back on the nodes that applied it.
//!
//! The parameters a `CONFIG SET` applied are remembered (by this process, in memory) and set
//! on a node added later with `ADDSHARD` or `ADDREPLICA`, before it joins, and on a node the
//! lanes find restarted (a new `run_id`), when the controller accepts its new process. A
//! proxy that restarts forgets them (`CONFIG REWRITE` keeps them in the nodes' own files).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::join_all;
use redshard_config::NodeAddr;
use redshard_dataplane::events::Nodes;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::conn::{ConnError, ControlConn};
use super::Controller;
use redshard_protocol::client_error::{ClientError, NodeRefusal};
use redshard_protocol::resp::{encode, reply};

/// The parameters applied by `CONFIG SET` through this proxy, in the order set, each once
/// (lowercase name, value): what a node added later is given.
#[derive(Debug, Default)]
pub(crate) struct NodeSettings(std::sync::Mutex<Vec<(Vec<u8>, Bytes)>>);

impl NodeSettings {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Vec<u8>, Bytes)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers the pairs of a `CONFIG SET` request (`CONFIG SET p v [p v ...]`).
    fn remember(&self, request: &[Bytes]) {
        let mut settings = self.lock();
        for pair in request.get(2..).unwrap_or_default().chunks_exact(2) {
            let name = pair[0].to_ascii_lowercase();
            settings.retain(|(n, _)| *n != name);
            settings.push((name, pair[1].clone()));
        }
    }

    /// The remembered pairs, as one `CONFIG SET` request's arguments; `None` when there are
    /// none.
    fn request(&self) -> Option<Vec<Bytes>> {
        let settings = self.lock();
        if settings.is_empty() {
            return None;
        }
        let mut request = vec![Bytes::from_static(b"CONFIG"), Bytes::from_static(b"SET")];
        for (name, value) in settings.iter() {
            request.push(Bytes::copy_from_slice(name));
            request.push(value.clone());
        }
        Some(request)
    }
}

impl Controller {
    /// Sends `request` to every node, or every master (`which`), and answers `done` with the
    /// client's reply (see the module docs).
    pub(super) fn every_node(
        self: &Arc<Self>,
        request: Vec<Bytes>,
        which: Nodes,
        done: oneshot::Sender<Bytes>,
    ) {
        let controller = Arc::clone(self);
        tokio::spawn(async move {
            let nodes: Vec<NodeAddr> = {
                let table = controller.state.router.load();
                let topology = table.topology();
                let mut nodes: Vec<NodeAddr> = match which {
                    Nodes::All => topology.nodes().cloned().collect(),
                    Nodes::Masters => topology.shards.iter().map(|s| s.master.clone()).collect(),
                };
                nodes.sort();
                nodes.dedup();
                nodes
            };
            let timeout = match which {
                Nodes::All => controller.state.config.health.timeout,
                // A fork of a large data set takes a while: as long as the data path waits
                // for a node's answer.
                Nodes::Masters => controller
                    .state
                    .config
                    .backend
                    .response_timeout
                    .max(controller.state.config.health.timeout),
            };
            let args: Vec<&[u8]> = request.iter().map(AsRef::as_ref).collect();
            let is_save = args.len() == 1 && args[0].eq_ignore_ascii_case(b"SAVE");
            let answers = join_all(nodes.iter().map(|node| {
                let controller = &controller;
                let args = &args;
                async move {
                    let answer = async {
                        let mut conn = controller.connect(node, timeout).await?;
                        if is_save {
                            save(&mut conn).await
                        } else {
                            conn.call(args).await
                        }
                    }
                    .await;
                    (node.clone(), answer)
                }
            }))
            .await;
            let applied = answers
                .iter()
                .filter(|(_, a)| a.as_ref().is_ok_and(|a| !reply::is_error(a)))
                .count();
            let is_config_set = args.len() > 1
                && args[0].eq_ignore_ascii_case(b"CONFIG")
                && args[1].eq_ignore_ascii_case(b"SET");
            if is_config_set && applied > 0 {
                controller.node_settings.remember(&request);
            }
            let reply = combine(answers);
            // The command's name only: CONFIG SET's values may be secrets.
            let name = |i: usize| String::from_utf8_lossy(args.get(i).copied().unwrap_or_default());
            info!(command = %name(0), sub = %name(1), to = ?which, applied, nodes = nodes.len(), "a client's command sent to every node");
            let _ = done.send(reply);
        });
    }

    /// Sets the parameters applied through this proxy (`CONFIG SET`) again on the node at
    /// `addr`, which restarted (logged when it cannot be reached).
    pub(super) async fn renew_node_settings(&self, addr: &NodeAddr) {
        if self.node_settings.request().is_none() {
            return;
        }
        match self.connect(addr, self.state.config.health.timeout).await {
            Ok(mut conn) => self.give_node_settings(&mut conn).await,
            Err(e) => {
                warn!(node = %addr, error = %e, "could not give a restarted node the parameters set through CONFIG SET");
            }
        }
    }

    /// Sets the parameters applied through this proxy (`CONFIG SET`) on a node being added
    /// or that restarted, over `conn`; a refusal is logged (the node serves all the same, as
    /// one that missed a `CONFIG SET` would).
    pub(super) async fn give_node_settings(&self, conn: &mut ControlConn) {
        let Some(request) = self.node_settings.request() else {
            return;
        };
        let args: Vec<&[u8]> = request.iter().map(AsRef::as_ref).collect();
        match conn.call_ok(&args).await {
            Ok(_) => {
                info!(node = %conn.addr(), settings = (args.len() - 2) / 2, "gave a node the parameters set through CONFIG SET")
            }
            Err(e) => {
                warn!(node = %conn.addr(), error = %e, "a node refused the parameters set through CONFIG SET")
            }
        }
    }
}

/// How often [`save`] asks a master whether its save ended.
const SAVE_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// `SAVE` on one master, without blocking it (a master blocked for the whole save would
/// miss its health checks): `BGSAVE SCHEDULE` (refused, as SAVE is, while a save is running;
/// scheduled behind an AOF rewrite), then `INFO persistence` until that save ended. The
/// answer is SAVE's: `+OK`, or Redis's `-ERR` when the save failed, or the node's refusal.
async fn save(conn: &mut ControlConn) -> Result<Bytes, ConnError> {
    let field = |info: &std::collections::HashMap<String, String>, name: &str| {
        info.get(name).cloned().unwrap_or_default()
    };
    let before = field(&conn.info("persistence").await?, "rdb_saves");
    let answer = conn.call(&[b"BGSAVE", b"SCHEDULE"]).await?;
    if reply::is_error(&answer) {
        return Ok(answer);
    }
    // Started: it runs until `rdb_bgsave_in_progress` drops. Scheduled: it starts once the
    // other child ends, counted in `rdb_saves` (a count CONFIG RESETSTAT may reset: any
    // change), or seen running.
    let mut started = !answer.windows(9).any(|w| w == b"scheduled");
    loop {
        // A poll of the node's state, not a wait for the proxy's own work.
        tokio::time::sleep(SAVE_POLL).await;
        let info = conn.info("persistence").await?;
        let running = field(&info, "rdb_bgsave_in_progress") != "0";
        started |= running || field(&info, "rdb_saves") != before;
        if started && !running {
            return Ok(if field(&info, "rdb_last_bgsave_status") == "ok" {
                Bytes::from_static(encode::OK)
            } else {
                ClientError::SaveFailed.to_reply()
            });
        }
    }
}

/// The client's reply from every node's answer (see the module docs).
fn combine(answers: Vec<(NodeAddr, Result<Bytes, ConnError>)>) -> Bytes {
    let total = answers.len();
    let mut refused = Vec::new();
    let mut sum: Option<i64> = None;
    // A status other than `+OK` (BGSAVE's `+Background saving started`), the same from every
    // node, or the first that says `scheduled` (some node only scheduled it).
    let mut status: Option<Bytes> = None;
    for (node, answer) in &answers {
        match answer {
            Ok(answer) if !reply::is_error(answer) => {
                if let Some(n) = reply::integer(answer) {
                    *sum.get_or_insert(0) += n;
                } else if answer.first() == Some(&b'+') && !reply::is_ok(answer) {
                    let scheduled = |a: &[u8]| a.windows(9).any(|w| w == b"scheduled");
                    if status
                        .as_deref()
                        .is_none_or(|kept| !scheduled(kept) && scheduled(answer))
                    {
                        status = Some(answer.clone());
                    }
                }
            }
            Ok(answer) => refused.push((
                node.to_string(),
                NodeRefusal::Error(
                    String::from_utf8_lossy(answer.get(1..).unwrap_or_default())
                        .trim_end()
                        .to_owned(),
                ),
            )),
            Err(e) => {
                let why = match e {
                    ConnError::Refused(_) => "connection refused".to_owned(),
                    ConnError::Failed { reason, .. } => reason.clone(),
                };
                refused.push((node.to_string(), NodeRefusal::Unreachable(why)));
            }
        }
    }
    if !refused.is_empty() {
        return ClientError::NodesRefused {
            applied: total - refused.len(),
            refused,
            total,
        }
        .to_reply();
    }
    match (sum, status) {
        // LATENCY RESET answers how many event series it reset.
        (Some(n), _) => {
            let mut out = bytes::BytesMut::new();
            encode::integer(&mut out, n);
            out.freeze()
        }
        (None, Some(status)) => status,
        (None, None) => Bytes::from_static(encode::OK),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> NodeAddr {
        format!("127.0.0.1:{port}").parse().unwrap()
    }

    fn answer(text: &'static [u8]) -> Result<Bytes, ConnError> {
        Ok(Bytes::from_static(text))
    }

    #[test]
    fn every_node_accepting_is_ok_and_latency_counts_are_summed() {
        let answers = vec![(addr(1), answer(b"+OK\r\n")), (addr(2), answer(b"+OK\r\n"))];
        assert_eq!(&combine(answers)[..], b"+OK\r\n");
        let answers = vec![(addr(1), answer(b":2\r\n")), (addr(2), answer(b":3\r\n"))];
        assert_eq!(&combine(answers)[..], b":5\r\n");
    }

    #[test]
    fn a_status_is_one_server_s_and_scheduled_wins() {
        let started = b"+Background saving started\r\n";
        let answers = vec![(addr(1), answer(started)), (addr(2), answer(started))];
        assert_eq!(&combine(answers)[..], started);
        let answers = vec![
            (addr(1), answer(started)),
            (addr(2), answer(b"+Background saving scheduled\r\n")),
            (addr(3), answer(started)),
        ];
        assert_eq!(&combine(answers)[..], b"+Background saving scheduled\r\n");
        let answers = vec![
            (addr(1), answer(started)),
            (
                addr(2),
                answer(b"-ERR Background save already in progress\r\n"),
            ),
        ];
        assert_eq!(
            String::from_utf8_lossy(&combine(answers)),
            "-ERR Background save already in progress (on 127.0.0.1:2; applied on 1 of 2 nodes)\r\n"
        );
    }

    #[test]
    fn refusals_name_the_nodes_and_what_applied_it() {
        let answers = vec![
            (addr(1), answer(b"+OK\r\n")),
            (addr(2), answer(b"-ERR bad value\r\n")),
            (addr(3), Err(ConnError::Refused(addr(3)))),
        ];
        assert_eq!(
            String::from_utf8_lossy(&combine(answers)),
            "-ERR applied on 1 of 3 nodes; 127.0.0.1:2: ERR bad value; 127.0.0.1:3: ERR no answer: connection refused\r\n"
        );
        let answers = vec![
            (addr(1), answer(b"-ERR bad value\r\n")),
            (addr(2), answer(b"-ERR bad value\r\n")),
        ];
        assert_eq!(
            String::from_utf8_lossy(&combine(answers)),
            "-ERR bad value (on 127.0.0.1:1, 127.0.0.1:2; applied on 0 of 2 nodes)\r\n"
        );
    }

    #[test]
    fn settings_are_remembered_once_each_and_replayed_as_one_config_set() {
        let settings = NodeSettings::default();
        assert!(settings.request().is_none());
        let b = |s: &'static str| Bytes::from_static(s.as_bytes());
        settings.remember(&[
            b("config"),
            b("set"),
            b("hz"),
            b("20"),
            b("maxmemory"),
            b("1mb"),
        ]);
        settings.remember(&[b("CONFIG"), b("SET"), b("HZ"), b("30")]);
        let request = settings.request().unwrap();
        assert_eq!(
            request,
            vec![
                b("CONFIG"),
                b("SET"),
                b("maxmemory"),
                b("1mb"),
                b("hz"),
                b("30")
            ]
        );
    }
}
