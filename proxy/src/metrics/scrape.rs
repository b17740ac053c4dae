//! The `/metrics` page: the process's event metrics, then the state metrics of one proxy,
//! read at each scrape (see [`redshard_metrics::names`]). The scrape side sits at the top: it
//! reads the whole proxy state, while the recording API ([`redshard_metrics`]) is a leaf
//! everyone may call.

use std::sync::atomic::Ordering;

use redshard_control::migrate::{MigrationProgress, MigrationState};
use redshard_dataplane::health::{slots_per_shard, NodeStatus};
use redshard_dataplane::router::RoutingTable;
use redshard_dataplane::state::ProxyState;
use redshard_metrics::names::{self, gate_state, mirror_state};
use redshard_metrics::text::Text;

/// The whole `/metrics` page for the proxy `state`: the process's event metrics, then the
/// proxy's state. Uses the installed namespace, or the configured one when nothing is
/// installed.
#[must_use]
pub fn render(state: &ProxyState) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let namespace = match redshard_metrics::installed() {
        Some(exporter) => {
            exporter.render_into(&mut out);
            exporter.namespace().to_owned()
        }
        None => state.config.metrics_namespace.clone(),
    };
    render_state(&mut Text::new(&mut out, &namespace), state);
    out
}

/// Writes the state metrics of `state`.
pub(crate) fn render_state(text: &mut Text<'_>, state: &ProxyState) {
    text.header(&names::BUILD_INFO);
    text.sample(&names::BUILD_INFO, &[env!("CARGO_PKG_VERSION")], 1);
    text.single(&names::UPTIME_IN_SECONDS, state.started.elapsed().as_secs());
    text.single(&names::CONNECTED_CLIENTS, state.clients.connected());
    text.single(
        &names::PARKED_CLIENTS,
        state.clients.parked.load(Ordering::Relaxed),
    );
    text.single(
        &names::CONNECTIONS_RECEIVED_TOTAL,
        state.clients.total_connections.load(Ordering::Relaxed),
    );
    text.single(
        &names::REJECTED_CONNECTIONS_TOTAL,
        state.clients.rejected_connections.load(Ordering::Relaxed),
    );
    text.single(
        &names::AUTH_THROTTLED_TOTAL,
        state.auth_throttle.throttled(),
    );

    let table = state.router.load();
    text.single(&names::TOPOLOGY_EPOCH, table.epoch());
    text.header(&names::SLOTS);
    for (shard, count) in table.shards().iter().zip(slots_per_shard(&table)) {
        text.sample(&names::SLOTS, &[&shard.name], count);
    }

    let nodes = state.health.snapshot();
    if !nodes.is_empty() {
        text.header(&names::BACKEND_UP);
        for (node, status) in nodes {
            let up = u8::from(matches!(status, NodeStatus::Up));
            text.sample(&names::BACKEND_UP, &[node.as_str()], up);
        }
    }

    render_mirror(text, state, &table);
    render_failover(text, state, &table);
    render_migrations(text, state);
    render_fleet(text, state);
}

/// The fleet's gauges and counters (`[cluster]` only: a proxy alone has none).
fn render_fleet(text: &mut Text<'_>, state: &ProxyState) {
    let Some(info) = state.fleet.info() else {
        return;
    };
    text.single(&names::FLEET_LEADER, u8::from(info.role == "leader"));
    text.single(&names::FLEET_FROZEN, u8::from(info.role == "frozen"));
    text.single(&names::FLEET_MEMBERS, info.members);
    let (waits, seconds, timeouts) = state.fleet.barriers();
    text.single(&names::FLEET_BARRIER_WAITS_TOTAL, waits);
    text.single(&names::FLEET_BARRIER_WAIT_SECONDS_TOTAL, seconds);
    text.single(&names::FLEET_BARRIER_TIMEOUTS_TOTAL, timeouts);
    text.single(&names::FLEET_ETCD_ERRORS_TOTAL, state.fleet.etcd_errors());
}

/// Every replica's state, lag and writes applied, and the resync and stale counts.
fn render_mirror(text: &mut Text<'_>, state: &ProxyState, table: &RoutingTable) {
    let shards = &table.topology().shards;
    let replicas = || {
        shards
            .iter()
            .flat_map(|shard| shard.replicas.iter().map(move |r| (shard, r)))
    };
    if replicas().next().is_some() {
        text.header(&names::MIRROR_STATE);
        for (shard, replica) in replicas() {
            let current = mirror_state::of(replica.state);
            for value in mirror_state::ALL {
                let labels = [shard.name.as_str(), replica.addr.as_str(), value];
                text.sample(&names::MIRROR_STATE, &labels, u8::from(value == current));
            }
        }
        // A replica without a link (syncing, or stale after a failover) has nothing in
        // flight and a fresh count.
        let mirror = state.router.mirror();
        let links: Vec<_> = replicas()
            .map(|(_, r)| (r.addr.as_str(), mirror.link(&r.addr)))
            .collect();
        text.header(&names::MIRROR_LAG_WRITES);
        for (addr, link) in &links {
            let lag = link.as_ref().map_or(0, |l| l.backlog());
            text.sample(&names::MIRROR_LAG_WRITES, &[addr], lag);
        }
        text.header(&names::MIRROR_APPLIED_WRITES_TOTAL);
        for (addr, link) in &links {
            let applied = link.as_ref().map_or(0, |l| l.applied());
            text.sample(&names::MIRROR_APPLIED_WRITES_TOTAL, &[addr], applied);
        }
    }
    let ha = state.ha.snapshot();
    text.single(&names::RESYNCS_TOTAL, ha.resyncs_completed);
    text.single(
        &names::REPLICAS_MARKED_STALE_TOTAL,
        ha.replicas_marked_stale,
    );
}

/// Failovers per shard (every shard of the topology, 0 when it never failed over, so that
/// `increase()` sees the first one) and each shard's gate.
fn render_failover(text: &mut Text<'_>, state: &ProxyState, table: &RoutingTable) {
    let ha = state.ha.snapshot();
    let shards = &table.topology().shards;
    text.header(&names::FAILOVERS_TOTAL);
    for shard in shards {
        let count = ha.failovers.get(&shard.name).copied().unwrap_or(0);
        text.sample(&names::FAILOVERS_TOTAL, &[&shard.name], count);
    }
    // Shards removed since they failed over keep their count (a counter never goes down).
    for (name, count) in &ha.failovers {
        if !shards.iter().any(|s| &s.name == name) {
            text.sample(&names::FAILOVERS_TOTAL, &[name], count);
        }
    }
    text.header(&names::GATE_STATE);
    for shard in shards {
        let current = state.router.gate(shard.id).state().label();
        for value in gate_state::ALL {
            let labels = [shard.name.as_str(), value];
            text.sample(&names::GATE_STATE, &labels, u8::from(value == current));
        }
    }
}

/// Slots left, keys and bytes moved, and time left, per (source, target) pair.
fn render_migrations(text: &mut Text<'_>, state: &ProxyState) {
    let progress = state.migrations.progress();
    let totals = state.migrations.moved_totals();
    // Every pair that moved something or has work queued, sorted; a finished pair stays at
    // 0 slots remaining instead of vanishing.
    let mut pairs: Vec<(&str, &str)> = totals
        .iter()
        .map(|t| (t.from.as_str(), t.to.as_str()))
        .chain(progress.iter().map(|p| (p.from.as_str(), p.to.as_str())))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    if pairs.is_empty() {
        return;
    }
    let unfinished = |p: &&MigrationProgress| {
        matches!(p.state, MigrationState::Queued | MigrationState::Running)
    };
    // A migration's slots change owner together at its end: all of them remain until then.
    text.header(&names::MIGRATION_SLOTS_REMAINING);
    for &(from, to) in &pairs {
        let slots: usize = progress
            .iter()
            .filter(unfinished)
            .filter(|p| p.from == from && p.to == to)
            .flat_map(|p| &p.slots)
            .map(redshard_config::SlotRange::len)
            .sum();
        text.sample(&names::MIGRATION_SLOTS_REMAINING, &[from, to], slots);
    }
    // A pair queued but not moving yet starts its counters at 0.
    let moved = |from: &str, to: &str| {
        totals
            .iter()
            .find(|t| t.from == from && t.to == to)
            .map_or((0, 0), |t| (t.keys, t.bytes))
    };
    text.header(&names::MIGRATION_KEYS_MOVED_TOTAL);
    for &(from, to) in &pairs {
        let keys = moved(from, to).0;
        text.sample(&names::MIGRATION_KEYS_MOVED_TOTAL, &[from, to], keys);
    }
    text.header(&names::MIGRATION_BYTES_MOVED_TOTAL);
    for &(from, to) in &pairs {
        let bytes = moved(from, to).1;
        text.sample(&names::MIGRATION_BYTES_MOVED_TOTAL, &[from, to], bytes);
    }
    let running: Vec<(&MigrationProgress, f64)> = progress
        .iter()
        .filter(|p| p.state == MigrationState::Running)
        .filter_map(|p| Some((p, p.eta_secs?)))
        .collect();
    if !running.is_empty() {
        text.header(&names::MIGRATION_ETA_SECONDS);
        for (p, eta) in running {
            text.sample(&names::MIGRATION_ETA_SECONDS, &[&p.from, &p.to], eta);
        }
    }
}
