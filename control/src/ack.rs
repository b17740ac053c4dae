//! A shortfall of the replicas' acknowledgement under Redis replication (`[replication] mode =
//! "redis"`, `ack = "sync"`).
//!
//! A lane ends each batch of writes with `WAIT k` (k = the shard's in-sync replicas) and holds
//! the batch's replies until it answers (see [`redshard_dataplane::backend::lane`]). When it counts fewer
//! than k (the replicas did not acknowledge within `ack_timeout_ms`) or fails, the lane sends
//! [`ControlEvent::AckShortfall`](redshard_dataplane::events::ControlEvent::AckShortfall) and keeps holding.
//! The controller then finds which in-sync replicas may lack those writes and records them
//! stale, persisted, before the lane may release the replies: an in-sync replica that is not
//! attached to the master (`INFO replication` of the master lists it `state=online`), or whose
//! offset stays below the master's `master_repl_offset` read at the start of the check (its
//! own `slave_repl_offset`, asked for a short while, since a healthy replica reaches it within
//! milliseconds). A replica that cannot be asked in that time (stopped, unreachable) counts as
//! lacking them. The `master_repl_offset` read after the `WAIT` answered covers every write of
//! the batch, so every replica still in sync afterwards holds them all.
//!
//! The check answers the lane with an [`AckVerdict`]: `Release` once every replica that may
//! lack the writes is recorded stale (persisted) or none does; `Refuse` when that cannot be
//! known or made to hold: the master's offset cannot be read, a stale mark cannot be saved
//! (the topology file's storage fails, etcd is unreachable or keeps winning the race), or the
//! master was replaced meanwhile. The lane then answers the writes `-NOREPLICAS`; the replica
//! stays in sync in the stored topology, so the next shortfall checks it again.
//!
//! Lanes report shortfalls in bursts (every lane of the master, every batch in flight): the
//! shortfalls of one master are checked one round at a time, and a round answers every
//! shortfall reported before it started; those reported meanwhile wait for the next round,
//! which reads the offset anew.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redshard_config::{NodeAddr, ReplicaState, Shard};
use redshard_dataplane::backend::Streaming;
use redshard_dataplane::events::AckVerdict;
use tokio::sync::oneshot;
use tracing::{error, info};

use super::Controller;

/// How often a replica's offset is asked again while it is below the master's.
const OFFSET_POLL: Duration = Duration::from_millis(5);

/// The shortfalls waiting for a check, by master.
#[derive(Debug, Default)]
pub(super) struct AckChecks {
    /// A master is listed while a round of checks runs for it: the shortfalls reported since
    /// the round started wait here for the next one.
    waiting: Mutex<HashMap<NodeAddr, Vec<oneshot::Sender<AckVerdict>>>>,
    /// Replicas (as masters list them: IP and port) that a shortfall's check found below the
    /// master's offset, with that offset and when: until they acknowledge it, for at most
    /// [`MISSED_HOLD`], they are not counted among the streaming replicas a `WAIT` waits for
    /// beyond the in-sync ones (see [`missed_since`]). The master's `lag=` counts whole
    /// seconds, so a replica that has just stopped can still look as if it acknowledged.
    missed: Mutex<Missed>,
    /// What the host names of replicas resolved to at the last replica check of their shard
    /// (see [`Controller::resolve_replica_names`]), to tell which line of a master's list is
    /// which replica. A name that has not resolved yet is not in it.
    resolved: Mutex<Resolved>,
}

/// The largest `lag` (seconds since its last acknowledgement, in whole seconds) of a replica
/// that counts as acknowledging. An idle replica acknowledges once a second, so a healthy
/// one shows 0 or 1 depending on where in the second its acknowledgements fall (measured:
/// 1 in 5–60% of the samples of an idle pair); under writes each `WAIT` asks for one at once.
const ACK_LAG_S: u64 = 1;

/// How long a replica check waits for the replicas' host names to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long at most a replica that missed a `WAIT` is not waited for unless it is in sync
/// (by then a stopped one shows a `lag` above [`ACK_LAG_S`]).
const MISSED_HOLD: Duration = Duration::from_secs(5);

/// The replicas that missed a `WAIT` (see [`AckChecks::missed`]): by the master's `ip` and
/// `port` of them, the master's offset they lacked and when.
type Missed = HashMap<(String, u16), (u64, Instant)>;

/// Whether the master's line `line` is a replica that missed a `WAIT` and has not
/// acknowledged the offset it lacked since. Until it does, no `WAIT` sent after the miss
/// can count its acknowledgements (they are below that offset), so leaving it out cannot
/// let it stand in for an in-sync replica; once it does, it is waited for again.
fn missed_since(missed: &Missed, line: &Attached) -> bool {
    missed
        .get(&(line.ip.clone(), line.port))
        .is_some_and(|(lacked, _)| line.offset < *lacked)
}

impl AckChecks {
    /// Queues `done` for `master`; true when no round runs for it (the caller starts one).
    fn queue(&self, master: &NodeAddr, done: oneshot::Sender<AckVerdict>) -> bool {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        match waiting.get_mut(master) {
            Some(queued) => {
                queued.push(done);
                false
            }
            None => {
                waiting.insert(master.clone(), vec![done]);
                true
            }
        }
    }

    /// The shortfalls queued for `master`; when there are none the master's rounds end.
    fn take(&self, master: &NodeAddr) -> Vec<oneshot::Sender<AckVerdict>> {
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        match waiting.get_mut(master) {
            Some(queued) if !queued.is_empty() => std::mem::take(queued),
            _ => {
                waiting.remove(master);
                Vec::new()
            }
        }
    }
}

/// What the master's `INFO replication` says of one replica (a `slaveN:` line).
#[derive(Debug, PartialEq, Eq)]
struct Attached {
    /// `ip=`: the address the replica connected from.
    ip: String,
    /// `port=`: the port it listens on.
    port: u16,
    /// `state=online`: it streams the master's writes (not in a full sync).
    online: bool,
    /// `offset=`: the last offset it acknowledged.
    offset: u64,
    /// `lag=`: seconds since its last acknowledgement (it acknowledges every second, and at
    /// once when a `WAIT` asks); `None` when the line has none.
    lag: Option<u64>,
}

/// The replicas listed in a master's `INFO replication` (its `slaveN:` fields).
fn attached(info: &HashMap<String, String>) -> Vec<Attached> {
    let mut out = Vec::new();
    for (key, value) in info {
        let Some(n) = key.strip_prefix("slave") else {
            continue;
        };
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let field = |name: &str| {
            value
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v)
        };
        let (Some(ip), Some(port)) = (field("ip"), field("port").and_then(|p| p.parse().ok()))
        else {
            continue;
        };
        out.push(Attached {
            ip: ip.to_owned(),
            port,
            online: field("state") == Some("online"),
            offset: field("offset").and_then(|o| o.parse().ok()).unwrap_or(0),
            lag: field("lag").and_then(|l| l.parse().ok()),
        });
    }
    out
}

/// The IP addresses the replicas' host names resolved to, by host name (lower case): a
/// master lists each replica by the address it connected from (or its `replica-announce-ip`).
pub(super) type Resolved = HashMap<String, Vec<IpAddr>>;

/// How a line of the master's list fits a replica of the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fit {
    /// Another replica's line: another port, or another IP address than the one the
    /// topology names.
    No,
    /// Its line: the same port, and the IP address the topology names, or one its host name
    /// resolved to (see [`Resolved`]), or its host name itself (`replica-announce-ip`).
    Address,
    /// Maybe its line: the same port, and a host name that has not resolved, or not to the
    /// address the master lists (behind NAT, or connected through another interface).
    Port,
}

/// How the master's line `line` fits the replica at `addr`, whose host name (if it has one)
/// resolved as `resolved` says.
fn fit(line: &Attached, addr: &NodeAddr, resolved: &Resolved) -> Fit {
    if addr.port() != line.port {
        return Fit::No;
    }
    let seen = line.ip.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
    if let Some(want) = addr.ip() {
        return if seen == Some(want.to_canonical()) {
            Fit::Address
        } else {
            Fit::No
        };
    }
    let resolved_to = resolved.get(addr.host());
    if line.ip.eq_ignore_ascii_case(addr.host())
        || seen.is_some_and(|seen| resolved_to.is_some_and(|ips| ips.contains(&seen)))
    {
        Fit::Address
    } else {
        Fit::Port
    }
}

/// The replicas `attached` to a master that stream from it and acknowledge (`state=online`,
/// a `lag` of at most [`ACK_LAG_S`]), split between those of `listed` (a shard's
/// replicas, in sync or not) and the others: Redis's `WAIT` counts every one of them. One
/// that has stopped acknowledging (a hung process the master still lists online until its
/// `repl-timeout`) cannot stand in for anyone, and counting it would make every `WAIT` run
/// out; so does one that `missed` a `WAIT` lately.
///
/// Each line is one replica, and each listed replica is at most one line. Lines first take
/// the replicas whose address (or resolved host name) they carry; then a replica named by a
/// host name that no line carries may take a line on its port when `by_port` says so (the
/// controller's last check saw it attached to the master, or has not seen it yet): behind
/// NAT or through another interface the master sees another address, and several such
/// replicas on one port cannot be told apart by the master's list (what counts is how many
/// of them stream). One the master lists, even not acknowledging, never takes another's line.
fn streaming_online<'a>(
    attached: &[Attached],
    listed: impl Iterator<Item = &'a NodeAddr> + Clone,
    resolved: &Resolved,
    by_port: impl Fn(&NodeAddr) -> bool,
    missed: impl Fn(&Attached) -> bool,
) -> Streaming {
    let acknowledging: Vec<&Attached> = attached
        .iter()
        .filter(|line| line.online && line.lag.is_none_or(|lag| lag <= ACK_LAG_S) && !missed(line))
        .collect();
    let listed: Vec<&NodeAddr> = listed.collect();
    let may_take_by_port: Vec<bool> = listed
        .iter()
        .map(|addr| {
            !attached
                .iter()
                .any(|line| fit(line, addr, resolved) == Fit::Address)
                && by_port(addr)
        })
        .collect();
    let mut taken = vec![false; listed.len()];
    let mut matched = vec![false; acknowledging.len()];
    for wanted in [Fit::Address, Fit::Port] {
        for (line, done) in acknowledging.iter().zip(matched.iter_mut()) {
            if *done {
                continue;
            }
            let fits = |(i, addr): &(usize, &&NodeAddr)| {
                !taken[*i]
                    && fit(line, addr, resolved) == wanted
                    && (wanted == Fit::Address || may_take_by_port[*i])
            };
            if let Some((i, _)) = listed.iter().enumerate().find(fits) {
                taken[i] = true;
                *done = true;
            }
        }
    }
    let found = listed
        .iter()
        .zip(&taken)
        .filter(|(_, taken)| **taken)
        .map(|(addr, _)| (*addr).clone())
        .collect();
    let others = matched.iter().filter(|done| !**done).count();
    Streaming {
        listed: found,
        others: u32::try_from(others).unwrap_or(u32::MAX),
    }
}

/// The host names and ports of `shard`'s replicas that the topology names by a host name
/// rather than an IP address.
pub(super) fn replica_names(shard: &Shard) -> Vec<(String, u16)> {
    shard
        .replicas
        .iter()
        .filter(|r| r.addr.ip().is_none())
        .map(|r| (r.addr.host().to_owned(), r.addr.port()))
        .collect()
}

/// A number field of an `INFO` answer.
fn number(info: &HashMap<String, String>, field: &str) -> Option<u64> {
    info.get(field).and_then(|v| v.parse().ok())
}

impl Controller {
    /// Tells `shard`'s master node which replicas stream from it and acknowledge (see
    /// [`Node::streaming`](crate::backend::Node::streaming)), from its `INFO replication`
    /// answer `info`: the acknowledgement of each write then waits for those that are not in
    /// sync too, so none of them stands in for an in-sync replica. A replica a shortfall
    /// found behind is not waited for until it acknowledges what it lacked ([`missed_since`]).
    pub(super) fn note_streaming_replicas(&self, shard: &Shard, info: &HashMap<String, String>) {
        let now = Instant::now();
        let streaming = {
            let mut missed = self
                .acks
                .missed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            missed.retain(|_, (_, at)| now.duration_since(*at) < MISSED_HOLD);
            let resolved = self
                .acks
                .resolved
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let listed = shard.replicas.iter().map(|r| &r.addr);
            let by_port = |addr: &NodeAddr| self.state.ha.link(addr).is_none_or(|v| v.attached);
            streaming_online(&attached(info), listed, &resolved, by_port, |line| {
                missed_since(&missed, line)
            })
        };
        let node = self.state.router.pool().node(&shard.master);
        let before = node.streaming();
        if **before == streaming {
            return;
        }
        // Worth a line of the log: the stale replicas and the nodes outside the topology
        // that stream (those being brought in sync are expected to, at every start).
        let expected = shard
            .replicas
            .iter()
            .filter(|r| matches!(r.state, ReplicaState::InSync | ReplicaState::Syncing))
            .map(|r| &r.addr);
        let (was, count) = (
            before.besides(expected.clone()),
            streaming.besides(expected),
        );
        drop(before);
        if was != count {
            if count == 0 {
                info!(master = %shard.master, shard = %shard.name, "no stale replica or node outside the topology streams from the master any more");
            } else {
                info!(master = %shard.master, shard = %shard.name, count, "stale replicas or nodes outside the topology stream from the master; writes wait for them too");
            }
        }
        node.set_streaming(&self.writer, streaming);
    }

    /// Resolves `names` (the host names of a shard's replicas, with their ports, from
    /// [`replica_names`]; each for at most [`RESOLVE_TIMEOUT`]), so that
    /// [`Controller::note_streaming_replicas`] and a shortfall's check tell which line of the
    /// master's list is which replica even when several share a port: on one port, a
    /// replica that streams could otherwise stand in for an in-sync one cut off from the
    /// master. A name that does not resolve keeps what it resolved to before.
    pub(super) async fn resolve_replica_names(&self, names: Vec<(String, u16)>) {
        let lookups = names.iter().map(|(host, port)| {
            tokio::time::timeout(
                RESOLVE_TIMEOUT,
                tokio::net::lookup_host((host.as_str(), *port)),
            )
        });
        let answers = futures_util::future::join_all(lookups).await;
        let mut resolved = self
            .acks
            .resolved
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for ((host, _), answer) in names.iter().zip(answers) {
            let Ok(Ok(found)) = answer else {
                continue;
            };
            let mut ips: Vec<IpAddr> = found.map(|a| a.ip().to_canonical()).collect();
            ips.sort_unstable();
            ips.dedup();
            if !ips.is_empty() {
                resolved.insert(host.clone(), ips);
            }
        }
    }

    /// A lane's `WAIT` fell short on `master` (see the module docs): `done` is answered once
    /// every in-sync replica that may lack the lane's writes is recorded stale
    /// ([`AckVerdict::Release`]), or once that failed ([`AckVerdict::Refuse`]).
    pub(super) fn ack_shortfall(
        self: &Arc<Self>,
        master: NodeAddr,
        wanted: u32,
        answer: &str,
        done: oneshot::Sender<AckVerdict>,
    ) {
        if !self.acks.queue(&master, done) {
            return;
        }
        let controller = Arc::clone(self);
        let answer = answer.to_owned();
        tokio::spawn(async move {
            loop {
                let waiting = controller.acks.take(&master);
                if waiting.is_empty() {
                    return;
                }
                info!(%master, wanted, %answer, batches = waiting.len(), "the replicas did not acknowledge batches of writes in time: checking them");
                let verdict = match controller.check_acks(&master).await {
                    Ok(()) => AckVerdict::Release,
                    Err(reason) => {
                        error!(%master, batches = waiting.len(), %reason, "the replicas' acknowledgement of batches of writes could not be verified: their writes are answered -NOREPLICAS (they ran on the master, and may or may not survive a failover)");
                        AckVerdict::Refuse
                    }
                };
                for done in waiting {
                    let _ = done.send(verdict);
                }
            }
        });
    }

    /// One round: records stale every in-sync replica of `master`'s shard that lacks what the
    /// master had when the round started.
    ///
    /// # Errors
    /// Why the writes cannot be acknowledged: the master's offset could not be read, a
    /// replica that lacks them could not be recorded stale, or the master was replaced.
    async fn check_acks(&self, master: &NodeAddr) -> Result<(), String> {
        // Not the table itself across the waits below: the epoch barrier waits for it.
        let shard = {
            let table = self.state.router.load();
            table
                .topology()
                .shards
                .iter()
                .find(|s| &s.master == master)
                .cloned()
        };
        let Some(shard) = shard else {
            // No longer a master (failed over): what it holds may be lost with it. Its lanes
            // are fenced and fail what they hold anyway.
            return Err("it is no longer a shard's master (failed over)".to_owned());
        };
        let timeout = self.state.config.replication.ack_timeout;
        let behind = match self.master_offset(master, timeout).await {
            Ok((offset, info)) => {
                // A replica that attached or went since the last check of the shard may be
                // what the `WAIT` counted wrong.
                {
                    let now = Instant::now();
                    let mut missed = self
                        .acks
                        .missed
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    for line in attached(&info).into_iter().filter(|l| l.offset < offset) {
                        missed.insert((line.ip, line.port), (offset, now));
                    }
                }
                self.note_streaming_replicas(&shard, &info);
                let history = info.get("master_replid").map(String::as_str);
                self.replicas_behind(&shard, offset, history, &attached(&info))
                    .await
            }
            Err(error) => {
                // The master cannot tell which replicas lack the writes: they keep their
                // state, and the master's own failure is the probes' business.
                return Err(format!(
                    "the master's replication offset could not be read: {error}"
                ));
            }
        };
        let mut unrecorded = Vec::new();
        for (addr, reason) in behind {
            if !self.record_stale(shard.id, &addr, &reason).await {
                unrecorded.push(addr.to_string());
            }
        }
        if !unrecorded.is_empty() {
            return Err(format!(
                "replica(s) {} may lack them and could not be recorded stale",
                unrecorded.join(", ")
            ));
        }
        // A failover meanwhile may have promoted a replica that lacks the writes.
        let replaced = self
            .state
            .router
            .load()
            .topology()
            .shards
            .iter()
            .find(|s| s.id == shard.id)
            .is_none_or(|s| &s.master != master);
        if replaced {
            return Err("the master was replaced during the check".to_owned());
        }
        Ok(())
    }

    /// The master's `master_repl_offset` and its whole `INFO replication` answer.
    async fn master_offset(
        &self,
        master: &NodeAddr,
        timeout: Duration,
    ) -> Result<(u64, HashMap<String, String>), super::conn::ConnError> {
        // The connection bounds every exchange by `timeout`.
        let info = self
            .connect(master, timeout)
            .await?
            .info("replication")
            .await?;
        Ok((number(&info, "master_repl_offset").unwrap_or(0), info))
    }

    /// The in-sync replicas of `shard` that lack offset `offset` of the master's replication
    /// history `history` (its `master_replid`), with why.
    async fn replicas_behind(
        &self,
        shard: &Shard,
        offset: u64,
        history: Option<&str>,
        attached: &[Attached],
    ) -> Vec<(NodeAddr, String)> {
        let timeout = self.state.config.replication.ack_timeout;
        let mut behind = Vec::new();
        for replica in shard
            .replicas
            .iter()
            .filter(|r| r.state == ReplicaState::InSync)
        {
            let line = {
                let resolved = self
                    .acks
                    .resolved
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                attached
                    .iter()
                    .find(|a| fit(a, &replica.addr, &resolved) == Fit::Address)
            };
            let named = replica.addr.ip().is_none();
            let reason = match line {
                // A host name whose line is not known for sure (not resolved, or the master
                // saw it at another address): only the replica itself can tell.
                None if named => {
                    self.replica_reaches(&replica.addr, offset, history, timeout)
                        .await
                }
                None => Some("it is not attached to its master".to_owned()),
                Some(line) if !line.online => {
                    Some("it is attached to its master but not streaming (full sync)".to_owned())
                }
                Some(line) if line.offset >= offset => None,
                Some(_) => {
                    self.replica_reaches(&replica.addr, offset, history, timeout)
                        .await
                }
            };
            if let Some(reason) = reason {
                behind.push((replica.addr.clone(), reason));
            }
        }
        behind
    }

    /// `None` when the replica at `addr` has processed the master's stream up to `offset`
    /// of the master's replication history `history` (asked again for up to `timeout` while
    /// it is below or on another history), else why not.
    async fn replica_reaches(
        &self,
        addr: &NodeAddr,
        offset: u64,
        history: Option<&str>,
        timeout: Duration,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let asked = async {
            let mut conn = self
                .connect(addr, timeout)
                .await
                .map_err(|e| e.to_string())?;
            loop {
                let info = conn.info("replication").await.map_err(|e| e.to_string())?;
                let reached = number(&info, "slave_repl_offset").unwrap_or(0);
                // An offset counts only in the master's own history: a node that follows
                // another master has offsets of its own.
                let theirs = info.get("master_replid").map(String::as_str);
                let same_history = history.is_none() || theirs == history;
                if reached >= offset && same_history {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(if same_history {
                        format!("its offset {reached} is below the master's {offset}")
                    } else {
                        format!(
                            "its replication history {} is not the master's {}",
                            theirs.unwrap_or("(none)"),
                            history.unwrap_or("(none)")
                        )
                    });
                }
                // A replica streaming its master's writes is there within milliseconds.
                tokio::time::sleep(OFFSET_POLL).await;
            }
        };
        match tokio::time::timeout(timeout + OFFSET_POLL, asked).await {
            Ok(Ok(())) => None,
            Ok(Err(why)) => Some(format!("it did not acknowledge in time: {why}")),
            Err(_) => Some(format!(
                "it did not acknowledge in time and did not answer within {} ms",
                timeout.as_millis()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::conn::info_of as info;

    #[test]
    fn reads_the_attached_replicas_of_a_master() {
        let info = info(&[
            ("role", "master"),
            ("connected_slaves", "2"),
            (
                "slave0",
                "ip=127.0.0.1,port=7001,state=online,offset=420,lag=0",
            ),
            (
                "slave1",
                "ip=::1,port=7002,state=wait_bgsave,offset=0,lag=1",
            ),
            ("slave_read_only", "1"),
            ("master_repl_offset", "430"),
        ]);
        let mut seen = attached(&info);
        seen.sort_by_key(|a| a.port);
        assert_eq!(
            seen,
            [
                Attached {
                    ip: "127.0.0.1".into(),
                    port: 7001,
                    online: true,
                    offset: 420,
                    lag: Some(0),
                },
                Attached {
                    ip: "::1".into(),
                    port: 7002,
                    online: false,
                    offset: 0,
                    lag: Some(1),
                },
            ]
        );
        assert_eq!(number(&info, "master_repl_offset"), Some(430));
    }

    #[test]
    fn matches_a_replica_by_its_address_or_resolved_host_name() {
        let line = Attached {
            ip: "127.0.0.1".into(),
            port: 7001,
            online: true,
            offset: 0,
            lag: Some(0),
        };
        let addr = |s: &str| s.parse::<NodeAddr>().unwrap();
        let none = Resolved::new();
        assert_eq!(fit(&line, &addr("127.0.0.1:7001"), &none), Fit::Address);
        assert_eq!(fit(&line, &addr("127.0.0.2:7001"), &none), Fit::No);
        assert_eq!(fit(&line, &addr("127.0.0.1:7002"), &none), Fit::No);
        // A host name not resolved yet may be any line on its port.
        assert_eq!(fit(&line, &addr("redis-1b:7001"), &none), Fit::Port);
        assert_eq!(fit(&line, &addr("redis-1b:7002"), &none), Fit::No);
        // Resolved, it is the line of one of its addresses; another on its port only may be.
        let resolved: Resolved = [
            ("redis-1b".to_owned(), vec!["127.0.0.1".parse().unwrap()]),
            ("redis-1c".to_owned(), vec!["10.0.0.3".parse().unwrap()]),
        ]
        .into();
        assert_eq!(fit(&line, &addr("redis-1b:7001"), &resolved), Fit::Address);
        assert_eq!(fit(&line, &addr("REDIS-1B:7001"), &resolved), Fit::Address);
        assert_eq!(fit(&line, &addr("redis-1c:7001"), &resolved), Fit::Port);
        // A replica that announces its host name (`replica-announce-ip`).
        let announced = Attached {
            ip: "redis-1c".into(),
            ..line
        };
        assert_eq!(fit(&announced, &addr("redis-1c:7001"), &none), Fit::Address);
        let v6 = Attached {
            ip: "::1".into(),
            ..announced
        };
        assert_eq!(fit(&v6, &addr("[::1]:7001"), &none), Fit::Address);
        let mapped = Attached {
            ip: "::ffff:127.0.0.1".into(),
            ..v6
        };
        assert_eq!(fit(&mapped, &addr("127.0.0.1:7001"), &none), Fit::Address);
    }

    #[test]
    fn the_replicas_waited_for_are_those_streaming_and_acknowledging() {
        let line = |port: u16, online: bool, offset: u64, lag: Option<u64>| Attached {
            ip: "127.0.0.1".into(),
            port,
            online,
            offset,
            lag,
        };
        let addr = |port: u16| -> NodeAddr { format!("127.0.0.1:{port}").parse().unwrap() };
        let listed = [addr(7001), addr(7002), addr(7003), addr(7004)];
        let none = Resolved::new();
        let attached = [
            line(7001, true, 500, Some(0)), // listed, streaming: counted
            line(7002, true, 500, Some(0)), // listed, streaming: counted
            line(7003, true, 400, Some(7)), // hung: no acknowledgement for 7 s
            line(7004, false, 0, Some(0)),  // in a full sync
            line(7005, true, 450, None),    // attached by hand, no lag field: counted
            line(7006, true, 500, Some(1)), // idle, between two acknowledgements: counted
            line(7007, true, 400, Some(2)), // two seconds without one: not
        ];
        let streaming = streaming_online(&attached, listed.iter(), &none, |_| true, |_| false);
        assert_eq!(
            streaming,
            Streaming {
                listed: vec![addr(7001), addr(7002)].into(),
                others: 2,
            }
        );
        // Beyond the in-sync replicas: each streaming one that is not, once.
        assert_eq!(streaming.besides([addr(7001)].iter()), 3);
        assert_eq!(streaming.besides([addr(7001), addr(7002)].iter()), 2);
        assert_eq!(streaming.besides([addr(7003)].iter()), 4);
        // One that missed a WAIT lately is not waited for.
        let streaming = streaming_online(
            &attached,
            listed.iter(),
            &none,
            |_| true,
            |l| l.port == 7005,
        );
        assert_eq!(streaming.others, 1);
        assert_eq!(streaming.besides([addr(7001)].iter()), 2);
        // Replicas named by host names on one port: each line is one of them, whichever.
        let named = |host: &str| -> NodeAddr { format!("{host}:6379").parse().unwrap() };
        let listed = [named("redis-1"), named("redis-2"), named("redis-3")];
        let on = |ip: &str| Attached {
            ip: ip.into(),
            port: 6379,
            online: true,
            offset: 500,
            lag: Some(0),
        };
        let lines = [on("10.0.0.1"), on("10.0.0.2")];
        let streaming = streaming_online(&lines, listed.iter(), &none, |_| true, |_| false);
        assert_eq!(streaming.listed.len(), 2, "{streaming:?}");
        assert_eq!(streaming.others, 0);
        assert_eq!(
            streaming.besides([named("redis-1")].iter()),
            1,
            "the other streaming one is waited for too"
        );
        // A listed IP address takes its own line before a host name on its port takes it.
        let listed = [named("redis-1"), addr(6379)];
        let mut mine = on("127.0.0.1");
        mine.port = 6379;
        let streaming = streaming_online(
            &[mine, on("10.0.0.9")],
            listed.iter(),
            &none,
            |_| true,
            |_| false,
        );
        assert_eq!(
            streaming,
            Streaming {
                listed: vec![named("redis-1"), addr(6379)].into(),
                others: 0,
            }
        );
        // Resolved, each name takes its own line: with redis-1 (in sync) cut off and
        // redis-2 (not in sync) streaming, redis-2's line no longer stands in for redis-1.
        let resolved: Resolved = [
            ("redis-1".to_owned(), vec!["10.0.0.1".parse().unwrap()]),
            ("redis-2".to_owned(), vec!["10.0.0.2".parse().unwrap()]),
        ]
        .into();
        let listed = [named("redis-1"), named("redis-2")];
        let lines = [on("10.0.0.2")];
        let streaming = streaming_online(&lines, listed.iter(), &resolved, |_| true, |_| false);
        assert_eq!(
            streaming,
            Streaming {
                listed: vec![named("redis-2")].into(),
                others: 0,
            }
        );
        assert_eq!(streaming.besides([named("redis-1")].iter()), 1);
        // Unresolved, the same line is taken for redis-1, the first on its port.
        let streaming = streaming_online(&lines, listed.iter(), &none, |_| true, |_| false);
        assert_eq!(streaming.besides([named("redis-1")].iter()), 0);
        // Nor does a node attached by hand on the same port stand in for redis-1 while the
        // master lists redis-1 itself, even no longer acknowledging.
        let mut hung = on("10.0.0.1");
        hung.lag = Some(7);
        let lines = [hung, on("10.0.0.9")];
        let alone = [named("redis-1")];
        let streaming = streaming_online(&lines, alone.iter(), &resolved, |_| true, |_| false);
        assert_eq!(
            streaming,
            Streaming {
                listed: Vec::new().into(),
                others: 1,
            }
        );
        assert_eq!(streaming.besides([named("redis-1")].iter()), 1);
        // A name the master lists at none of its addresses (NAT, another interface) takes a
        // line on its port while the last check saw it attached, not once it saw it detached.
        let lines = [on("10.0.0.9")];
        let streaming = streaming_online(&lines, listed.iter(), &resolved, |_| true, |_| false);
        assert_eq!(streaming.listed, vec![named("redis-1")].into());
        let attached_one = |a: &NodeAddr| a == &named("redis-2");
        let streaming = streaming_online(&lines, listed.iter(), &resolved, attached_one, |_| false);
        assert_eq!(streaming.listed, vec![named("redis-2")].into());
        let streaming = streaming_online(&lines, listed.iter(), &resolved, |_| false, |_| false);
        assert_eq!(
            streaming,
            Streaming {
                listed: Vec::new().into(),
                others: 1,
            }
        );
    }

    #[test]
    fn a_replica_that_missed_a_wait_counts_again_once_it_acknowledges_what_it_lacked() {
        let line = |ip: &str, offset: u64| Attached {
            ip: ip.into(),
            port: 7001,
            online: true,
            offset,
            lag: Some(0),
        };
        // It had acknowledged 400 when the master was at 500.
        let missed: Missed = [(("127.0.0.1".to_owned(), 7001), (500, Instant::now()))].into();
        assert!(
            missed_since(&missed, &line("127.0.0.1", 400)),
            "nothing since"
        );
        assert!(
            missed_since(&missed, &line("127.0.0.1", 499)),
            "catching up"
        );
        assert!(
            !missed_since(&missed, &line("127.0.0.1", 500)),
            "it has what it lacked: Redis's WAIT may count it again, so must the proxy"
        );
        assert!(
            !missed_since(&missed, &line("127.0.0.2", 400)),
            "another one"
        );
    }

    #[tokio::test]
    async fn shortfalls_of_one_master_are_checked_one_round_at_a_time() {
        let checks = AckChecks::default();
        let master: NodeAddr = "127.0.0.1:7000".parse().unwrap();
        let (first, _r1) = oneshot::channel();
        let (second, _r2) = oneshot::channel();
        assert!(checks.queue(&master, first), "the first starts a round");
        assert_eq!(checks.take(&master).len(), 1);
        assert!(
            !checks.queue(&master, second),
            "one reported during the round waits for the next"
        );
        assert_eq!(checks.take(&master).len(), 1);
        assert!(checks.take(&master).is_empty(), "then the rounds end");
        let (third, _r3) = oneshot::channel();
        assert!(
            checks.queue(&master, third),
            "and a new shortfall starts them again"
        );
    }
}
