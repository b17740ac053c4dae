//! TOPOLOGY and MIGRATIONS: what the proxy knows of the cluster, as structured replies.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redshard_config::{HealthConfig, NodeAddr, Shard, SlotRange, Topology, SLOT_COUNT};
use tokio::task::JoinSet;

use super::reply::Reply;
use redshard_control::migrate::{MigrationProgress, MigrationState};
use redshard_control::probe::ProbeStatus;
use redshard_control::Controller;
use redshard_dataplane::router::GateState;

/// A node's health in one word: `up` (the last probe answered), `failing` (the last probes
/// failed, not yet for long enough to call it down), `down`, or `unknown` (not probed yet).
#[must_use]
pub fn health_word(status: &ProbeStatus, health: &HealthConfig) -> &'static str {
    if status.is_down(health) {
        "down"
    } else if status.is_up() {
        "up"
    } else if status.is_failing() {
        "failing"
    } else {
        "unknown"
    }
}

fn gate_word(state: GateState) -> &'static str {
    match state {
        GateState::Open => "open",
        GateState::Paused => "paused",
        GateState::Down => "down",
    }
}

/// Ranges as `0-5460,10923-16383`; `-` for none.
fn ranges(slots: &[SlotRange]) -> String {
    if slots.is_empty() {
        return "-".into();
    }
    slots
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// How long TOPOLOGY waits for a master's DBSIZE.
const KEYS_TIMEOUT: Duration = Duration::from_millis(500);

/// `DBSIZE` of each master that is not down, asked in parallel on control connections;
/// masters that do not answer in [`KEYS_TIMEOUT`] are left out.
async fn master_keys(
    controller: &Arc<Controller>,
    masters: Vec<NodeAddr>,
) -> HashMap<NodeAddr, u64> {
    let mut asks = JoinSet::new();
    for addr in masters {
        let controller = Arc::clone(controller);
        asks.spawn(async move {
            let mut conn = controller.connect(&addr, KEYS_TIMEOUT).await.ok()?;
            let answer = conn.call_ok(&[b"DBSIZE"]).await.ok()?;
            let keys = u64::try_from(crate::resp::reply::integer(&answer)?).ok()?;
            Some((addr, keys))
        });
    }
    let mut keys = HashMap::new();
    while let Some(done) = asks.join_next().await {
        if let Ok(Some((addr, n))) = done {
            keys.insert(addr, n);
        }
    }
    keys
}

/// `TOPOLOGY`: the epoch, each shard with its nodes' health, its slots and its master's key
/// count, the slots served now, and the failovers.
///
/// `slots-served` counts the slots whose serving shard takes requests: its master is not
/// down and its gate is not down.
pub async fn topology(controller: &Arc<Controller>) -> Reply {
    let state = controller.state();
    let table = state.router.load();
    let topology = Arc::clone(table.topology());
    drop(table);
    let health = &state.config.health;
    let masters = topology
        .shards
        .iter()
        .filter(|s| !controller.probe(&s.master).is_down(health))
        .map(|s| s.master.clone())
        .collect();
    let keys = master_keys(controller, masters).await;
    let mut served = 0;
    let shards: Vec<Reply> = topology
        .shards
        .iter()
        .map(|shard| {
            let (reply, serving) = shard_entry(controller, &topology, shard, &keys);
            served += serving;
            reply
        })
        .collect();
    let (failovers, last) = controller.failovers();
    Reply::fields(vec![
        ("epoch", topology.epoch.into()),
        ("slots-served", served.into()),
        ("slots-total", SLOT_COUNT.into()),
        ("shards", Reply::Array(shards)),
        ("failovers", failovers.into()),
        ("last-failover", last.into()),
        (
            "rules",
            Reply::Array(
                topology
                    .rules
                    .rules()
                    .iter()
                    .map(|r| Reply::from(r.to_string()))
                    .collect(),
            ),
        ),
    ])
}

/// One shard of TOPOLOGY, and how many slots it serves if it takes requests (0 otherwise).
fn shard_entry(
    controller: &Controller,
    topology: &Topology,
    shard: &Shard,
    keys: &HashMap<NodeAddr, u64>,
) -> (Reply, usize) {
    let state = controller.state();
    let health = &state.config.health;
    let master_health = health_word(&controller.probe(&shard.master), health);
    let gate = state.router.gate(shard.id).state();
    let owned = topology.slots_of(shard.id);
    let count: usize = owned.iter().map(SlotRange::len).sum();
    let mut migrating = Vec::new();
    let mut importing = Vec::new();
    let mut importing_count = 0;
    for m in topology.migrations() {
        let name = |id| topology.shard(id).map_or("?", |s| s.name.as_str());
        if m.from == shard.id {
            migrating.push(Reply::from(format!(
                "{} to {}",
                ranges(&m.slots),
                name(m.to)
            )));
        }
        if m.to == shard.id {
            importing_count += m.slots.iter().map(SlotRange::len).sum::<usize>();
            importing.push(Reply::from(format!(
                "{} from {}",
                ranges(&m.slots),
                name(m.from)
            )));
        }
    }
    let mirror = state.router.mirror();
    let replicas: Vec<Reply> = shard
        .replicas
        .iter()
        .map(|r| {
            let link = mirror
                .link(&r.addr)
                .filter(|_| r.state == redshard_config::ReplicaState::InSync);
            let repl = state.ha.link(&r.addr);
            Reply::fields(vec![
                ("addr", r.addr.to_string().into()),
                ("state", r.state.to_string().into()),
                (
                    "health",
                    health_word(&controller.probe(&r.addr), health).into(),
                ),
                ("lag", link.as_ref().map(|l| l.backlog()).into()),
                ("applied", link.as_ref().map(|l| l.applied()).into()),
                // Redis replication: what the controller's last check saw.
                ("offset", repl.as_ref().map(|l| l.offset).into()),
                ("repl-lag", repl.as_ref().map(|l| l.lag).into()),
                (
                    "link",
                    repl.as_ref()
                        .map(|l| if l.attached { "up" } else { "down" })
                        .into(),
                ),
            ])
        })
        .collect();
    let serving = if master_health != "down" && gate != GateState::Down {
        count + importing_count
    } else {
        0
    };
    let reply = Reply::fields(vec![
        ("id", u64::from(shard.id.get()).into()),
        ("name", shard.name.as_str().into()),
        ("master", shard.master.to_string().into()),
        ("master-health", master_health.into()),
        ("gate", gate_word(gate).into()),
        ("slots", ranges(&owned).into()),
        ("slot-count", count.into()),
        ("keys", keys.get(&shard.master).copied().into()),
        ("replicas", Reply::Array(replicas)),
        ("migrating", Reply::Array(migrating)),
        ("importing", Reply::Array(importing)),
    ]);
    (reply, serving)
}

/// The state of a migration in one word.
#[must_use]
pub fn migration_state_word(state: &MigrationState) -> &'static str {
    match state {
        MigrationState::Queued => "queued",
        MigrationState::Running => "running",
        MigrationState::Done => "done",
        MigrationState::Failed(_) => "failed",
        MigrationState::Cancelled => "cancelled",
    }
}

/// One migration of MIGRATIONS.
pub fn migration_entry(progress: &MigrationProgress) -> Reply {
    let error = match &progress.state {
        MigrationState::Failed(reason) => Reply::from(reason.as_str()),
        _ => Reply::Nil,
    };
    Reply::fields(vec![
        ("from", progress.from.as_str().into()),
        ("to", progress.to.as_str().into()),
        ("slots", ranges(&progress.slots).into()),
        (
            "slot-count",
            progress
                .slots
                .iter()
                .map(SlotRange::len)
                .sum::<usize>()
                .into(),
        ),
        ("state", migration_state_word(&progress.state).into()),
        ("error", error),
        ("keys-moved", progress.keys_moved.into()),
        ("bytes-moved", progress.bytes_moved.into()),
        ("keys-estimate", progress.keys_estimate.into()),
        ("elapsed-secs", Reply::float(progress.elapsed_secs)),
        (
            "rate-keys-per-sec",
            Reply::float(progress.rate_keys_per_sec),
        ),
        // Time left means something only while it runs.
        (
            "eta-secs",
            progress
                .eta_secs
                .filter(|_| progress.state == MigrationState::Running)
                .map_or(Reply::Nil, Reply::float),
        ),
    ])
}

/// `MIGRATIONS`: queued, running and recently finished migrations, oldest first.
pub fn migrations(controller: &Controller) -> Reply {
    Reply::Array(
        controller
            .migrations()
            .iter()
            .map(migration_entry)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_migration_carries_its_reason() {
        let progress = MigrationProgress {
            from: "s1".into(),
            to: "s4".into(),
            slots: vec![
                SlotRange::new(0, 9).unwrap(),
                SlotRange::new(20, 20).unwrap(),
            ],
            state: MigrationState::Failed("source gone".into()),
            keys_moved: 5,
            bytes_moved: 100,
            keys_estimate: 10,
            elapsed_secs: 1.5,
            rate_keys_per_sec: 3.333,
            eta_secs: None,
        };
        let Reply::Array(items) = migration_entry(&progress) else {
            panic!("an array");
        };
        let field = |name: &str| {
            let i = items.iter().position(|r| *r == Reply::from(name)).unwrap();
            items[i + 1].clone()
        };
        assert_eq!(field("slots"), Reply::from("0-9,20"));
        assert_eq!(field("slot-count"), Reply::Int(11));
        assert_eq!(field("state"), Reply::from("failed"));
        assert_eq!(field("error"), Reply::from("source gone"));
        assert_eq!(field("rate-keys-per-sec"), Reply::from("3.33"));
        assert_eq!(field("eta-secs"), Reply::Nil);
    }
}
