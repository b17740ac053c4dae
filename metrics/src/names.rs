//! Every metric name, defined once.
//!
//! A name here is the part after the namespace (`metrics_namespace`, default `redshard`):
//! [`COMMANDS_TOTAL`] is exported as `redshard_commands_total`. Names follow the Prometheus
//! conventions (base units: seconds and bytes; counters end in `_total`) and reuse
//! redis_exporter's names wherever the meaning is the same, so that with
//! `metrics_namespace = "redis"` its dashboards show the proxy as one big Redis.
//!
//! Two sources feed them:
//! - **events**, recorded by the data path through the functions of [`crate`]
//!   (commands, bytes, errors), process-wide: the [`PER_COMMAND`] metrics, recorded for
//!   every request, in atomics that [`crate`] keeps and renders itself, the other
//!   [`EVENTS`] in the `metrics-exporter-prometheus` recorder;
//! - **state**, read from the proxy at each scrape (clients, topology, backend health, the
//!   mirror links, the controller's counts (`redshard_dataplane::ha_stats`), the migration queue),
//!   so it is exact for this proxy, never stale, and needs no wiring.
//!
//! A name belongs to exactly one source: the two parts of a scrape never repeat a series.
//! Label values come from closed sets only: command names from the command table, node
//! addresses and shard names from the topology, error kinds from [`error_kind`], states from
//! [`mirror_state`] and [`gate_state`]. Never keys, values or client addresses.

/// What Prometheus type a metric has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (resets when the proxy restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted in buckets (`_bucket`, `_sum`, `_count`).
    Histogram,
}

impl Kind {
    /// The type's name in the exposition format's `# TYPE` line.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// One metric: its name after the namespace, its type, its labels and its help text.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    /// The name after `<namespace>_`.
    pub name: &'static str,
    /// Its Prometheus type.
    pub kind: Kind,
    /// Its label names, in the order they are written.
    pub labels: &'static [&'static str],
    /// The `# HELP` text.
    pub help: &'static str,
}

/// Label: a command's name as in the command table (`get`, `config|get`).
pub const LABEL_CMD: &str = "cmd";
/// Label: a backend node's `host:port` as written in the topology.
pub const LABEL_NODE: &str = "node";
/// Label: what went wrong, one of [`error_kind`].
pub const LABEL_KIND: &str = "kind";
/// Label: a shard's name.
pub const LABEL_SHARD: &str = "shard";
/// Label: the proxy's version.
pub const LABEL_VERSION: &str = "version";
/// Label: the outcome of a configuration reload, `ok` or `error`.
pub const LABEL_RESULT: &str = "result";
/// Label: a replica's [`mirror_state`] or a shard's [`gate_state`].
pub const LABEL_STATE: &str = "state";
/// Label: the source shard's name of a migration.
pub const LABEL_FROM: &str = "from";
/// Label: the target shard's name of a migration.
pub const LABEL_TO: &str = "to";

/// The values of the `kind` label of [`BACKEND_ERRORS_TOTAL`].
pub mod error_kind {
    /// The connection could not be opened (refused, unreachable, timed out, or its TLS
    /// handshake failed).
    pub const CONNECT: &str = "connect";
    /// The node refused the proxy's `AUTH`.
    pub const AUTH: &str = "auth";
    /// The oldest in-flight request waited longer than `response_timeout_ms`.
    pub const TIMEOUT: &str = "timeout";
    /// The node closed the connection or a read or write on it failed.
    pub const CLOSED: &str = "closed";
    /// The node sent bytes that are not a valid reply.
    pub const PROTOCOL: &str = "protocol";
}

/// The values of the `state` label of [`MIRROR_STATE`]: the topology's replica states, in
/// the label-value spelling (INFO `# Mirror` uses the same words).
pub mod mirror_state {
    use redshard_config::ReplicaState;

    /// Receives every write; may be promoted and read from.
    pub const IN_SYNC: &str = "in_sync";
    /// Being refilled by a full sync; no traffic.
    pub const SYNCING: &str = "syncing";
    /// Missed or diverged on a write, or a fenced old master; no traffic until resynchronised.
    pub const STALE: &str = "stale";
    /// Every value, in the order the series are written.
    pub const ALL: [&str; 3] = [IN_SYNC, SYNCING, STALE];

    /// The label value of `state`.
    #[must_use]
    pub fn of(state: ReplicaState) -> &'static str {
        match state {
            ReplicaState::InSync => IN_SYNC,
            ReplicaState::Syncing => SYNCING,
            ReplicaState::Stale => STALE,
        }
    }
}

/// The values of the `state` label of [`GATE_STATE`]: whether a shard takes requests. Mapped
/// from `redshard_dataplane::router::GateState` by its `label` (the router names the metric, not the other
/// way round: metrics are a leaf).
pub mod gate_state {
    /// Requests flow.
    pub const OPEN: &str = "open";
    /// Requests wait (a failover or a resync cut-over is under way).
    pub const PAUSED: &str = "paused";
    /// The master is down with no replica to promote: `-CLUSTERDOWN`.
    pub const DOWN: &str = "down";
    /// Every value, in the order the series are written.
    pub const ALL: [&str; 3] = [OPEN, PAUSED, DOWN];
}

// ---- State, read at each scrape ------------------------------------------------------------

/// Constant 1, labelled with the proxy's version.
pub const BUILD_INFO: Metric = Metric {
    name: "build_info",
    kind: Kind::Gauge,
    labels: &[LABEL_VERSION],
    help: "Always 1; the version label says which redshard is running.",
};
/// Seconds since the proxy started (redis_exporter's name).
pub const UPTIME_IN_SECONDS: Metric = Metric {
    name: "uptime_in_seconds",
    kind: Kind::Gauge,
    labels: &[],
    help: "Seconds since the proxy started.",
};
/// Clients connected now (redis_exporter's name).
pub const CONNECTED_CLIENTS: Metric = Metric {
    name: "connected_clients",
    kind: Kind::Gauge,
    labels: &[],
    help: "Client connections open now.",
};
/// Idle clients whose connection is parked (see `redshard_dataplane::session::park`).
pub const PARKED_CLIENTS: Metric = Metric {
    name: "parked_clients",
    kind: Kind::Gauge,
    labels: &[],
    help: "Idle client connections parked now (counted in connected_clients too).",
};
/// Client connections accepted since start (redis_exporter's name).
pub const CONNECTIONS_RECEIVED_TOTAL: Metric = Metric {
    name: "connections_received_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Client connections accepted since start.",
};
/// Client connections refused because `max_clients` were connected (redis_exporter's name).
pub const REJECTED_CONNECTIONS_TOTAL: Metric = Metric {
    name: "rejected_connections_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Client connections refused because max_clients were connected.",
};
/// AUTH attempts answered late because their source address failed AUTH recently.
pub const AUTH_THROTTLED_TOTAL: Metric = Metric {
    name: "auth_throttled_total",
    kind: Kind::Counter,
    labels: &[],
    help: "AUTH attempts (any connection) whose answer waited for their source address's turn after failed attempts from it.",
};
/// The epoch of the topology being served.
pub const TOPOLOGY_EPOCH: Metric = Metric {
    name: "topology_epoch",
    kind: Kind::Gauge,
    labels: &[],
    help: "Epoch of the topology being served; it grows with every topology change.",
};
/// Slots each shard serves.
pub const SLOTS: Metric = Metric {
    name: "slots",
    kind: Kind::Gauge,
    labels: &[LABEL_SHARD],
    help: "Hash slots served by each shard (all shards together serve 16384).",
};
/// Whether each master answers.
pub const BACKEND_UP: Metric = Metric {
    name: "backend_up",
    kind: Kind::Gauge,
    labels: &[LABEL_NODE],
    help: "1 when the node is known to answer, 0 when it is down or not checked yet.",
};
/// Each replica's mirroring state: one series per state, 1 for the current one and 0 for
/// the others, so a dashboard can count replicas per state and a state that ends shows 0
/// instead of vanishing.
pub const MIRROR_STATE: Metric = Metric {
    name: "mirror_state",
    kind: Kind::Gauge,
    labels: &[LABEL_SHARD, LABEL_NODE, LABEL_STATE],
    help: "1 for each replica's current mirroring state (in_sync, syncing, stale), 0 for the other two.",
};
/// Writes mirrored to a replica and not yet answered by it.
pub const MIRROR_LAG_WRITES: Metric = Metric {
    name: "mirror_lag_writes",
    kind: Kind::Gauge,
    labels: &[LABEL_NODE],
    help: "Mirrored writes sent to each replica and not yet acknowledged (0 when nothing is mirrored to it).",
};
/// Writes each replica applied as the master's effect expected. Read from the replica's
/// mirror link, which a resync replaces with a fresh one: the counter then restarts at 0,
/// which `rate()` and `increase()` handle as a counter reset.
pub const MIRROR_APPLIED_WRITES_TOTAL: Metric = Metric {
    name: "mirror_applied_writes_total",
    kind: Kind::Counter,
    labels: &[LABEL_NODE],
    help: "Mirrored writes each replica applied as expected; restarts at 0 when a resync gives the replica a new mirror stream.",
};
/// Resyncs that ended with the replica in sync.
pub const RESYNCS_TOTAL: Metric = Metric {
    name: "resyncs_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Replicas brought back in sync by a full sync and cut-over.",
};
/// Replicas recorded stale after a failed or diverging mirrored write.
pub const REPLICAS_MARKED_STALE_TOTAL: Metric = Metric {
    name: "replicas_marked_stale_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Times a replica was recorded stale after a mirrored write failed, timed out, fell behind or diverged.",
};
/// Failovers per shard.
pub const FAILOVERS_TOTAL: Metric = Metric {
    name: "failovers_total",
    kind: Kind::Counter,
    labels: &[LABEL_SHARD],
    help: "Replicas promoted to master, by shard (automatic failovers and admin failovers).",
};
/// Whether each shard takes requests: one series per state, 1 for the current one.
pub const GATE_STATE: Metric = Metric {
    name: "gate_state",
    kind: Kind::Gauge,
    labels: &[LABEL_SHARD, LABEL_STATE],
    help: "1 for each shard's current gate state (open; paused: requests wait for a failover or cut-over; down: CLUSTERDOWN), 0 for the others.",
};
/// Slots of queued and running migrations that have not moved yet.
pub const MIGRATION_SLOTS_REMAINING: Metric = Metric {
    name: "migration_slots_remaining",
    kind: Kind::Gauge,
    labels: &[LABEL_FROM, LABEL_TO],
    help: "Slots of queued and running migrations still to move, by source and target shard.",
};
/// Keys moved by migrations, cumulative over every migration since start.
pub const MIGRATION_KEYS_MOVED_TOTAL: Metric = Metric {
    name: "migration_keys_moved_total",
    kind: Kind::Counter,
    labels: &[LABEL_FROM, LABEL_TO],
    help: "Keys the background mover moved, by source and target shard, over every migration since start.",
};
/// Bytes moved by migrations, cumulative over every migration since start.
pub const MIGRATION_BYTES_MOVED_TOTAL: Metric = Metric {
    name: "migration_bytes_moved_total",
    kind: Kind::Counter,
    labels: &[LABEL_FROM, LABEL_TO],
    help: "Bytes (DUMP payloads) the background mover moved, by source and target shard, over every migration since start.",
};
/// Time left of the running migration.
pub const MIGRATION_ETA_SECONDS: Metric = Metric {
    name: "migration_eta_seconds",
    kind: Kind::Gauge,
    labels: &[LABEL_FROM, LABEL_TO],
    help: "Seconds the running migration needs at its rate so far (keys left of the estimate over keys per second); absent until it can be estimated.",
};
/// Whether this proxy leads its fleet.
pub const FLEET_LEADER: Metric = Metric {
    name: "fleet_leader",
    kind: Kind::Gauge,
    labels: &[],
    help: "1 while this proxy leads its fleet (failovers, migrations, replica repair), 0 otherwise; only with [cluster].",
};
/// Whether this proxy serves a frozen topology (etcd down for the whole fleet).
pub const FLEET_FROZEN: Metric = Metric {
    name: "fleet_frozen",
    kind: Kind::Gauge,
    labels: &[],
    help: "1 while this proxy serves its last topology without an etcd session because no proxy of its fleet reaches etcd (no topology change until etcd returns), 0 otherwise; only with [cluster].",
};
/// Live proxies of the fleet.
pub const FLEET_MEMBERS: Metric = Metric {
    name: "fleet_members",
    kind: Kind::Gauge,
    labels: &[],
    help: "Proxies of the fleet with a live etcd session, as this proxy last read them; only with [cluster].",
};
/// Epoch barriers waited for.
pub const FLEET_BARRIER_WAITS_TOTAL: Metric = Metric {
    name: "fleet_barrier_waits_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Epoch barriers (every live proxy acknowledging an epoch) this proxy waited for as the leader, each try counted; only with [cluster].",
};
/// Time spent in those barriers.
pub const FLEET_BARRIER_WAIT_SECONDS_TOTAL: Metric = Metric {
    name: "fleet_barrier_wait_seconds_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Seconds spent waiting in epoch barriers; only with [cluster].",
};
/// Barriers that timed out.
pub const FLEET_BARRIER_TIMEOUTS_TOTAL: Metric = Metric {
    name: "fleet_barrier_timeouts_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Epoch barrier tries that timed out (each waited for again, never skipped); only with [cluster].",
};
/// Failed requests to etcd.
pub const FLEET_ETCD_ERRORS_TOTAL: Metric = Metric {
    name: "fleet_etcd_errors_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Requests to etcd that failed (saves, acknowledgements, reports, sessions, watches); only with [cluster].",
};

// ---- Events, recorded by the data path --------------------------------------------------------

/// Commands served, by command (redis_exporter's name).
pub const COMMANDS_TOTAL: Metric = Metric {
    name: "commands_total",
    kind: Kind::Counter,
    labels: &[LABEL_CMD],
    help: "Commands served, by command name.",
};
/// Total time spent in each command (redis_exporter's name; the histogram's `_sum` per
/// command holds the same).
pub const COMMANDS_DURATION_SECONDS_TOTAL: Metric = Metric {
    name: "commands_duration_seconds_total",
    kind: Kind::Counter,
    labels: &[LABEL_CMD],
    help: "Seconds spent serving each command, from its arrival to its reply being ready.",
};
/// Commands answered with an error, by command (redis_exporter's name).
pub const COMMANDS_FAILED_CALLS_TOTAL: Metric = Metric {
    name: "commands_failed_calls_total",
    kind: Kind::Counter,
    labels: &[LABEL_CMD],
    help: "Commands answered with an error reply, by command name.",
};
/// Latency of each command, in [`COMMAND_DURATION_BUCKETS`].
pub const COMMAND_DURATION_SECONDS: Metric = Metric {
    name: "command_duration_seconds",
    kind: Kind::Histogram,
    labels: &[LABEL_CMD],
    help: "Latency of each command through the proxy, from its arrival to its reply being ready.",
};
/// Bytes read from clients (redis_exporter's name).
pub const NET_INPUT_BYTES_TOTAL: Metric = Metric {
    name: "net_input_bytes_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Bytes read from clients.",
};
/// Bytes written to clients (redis_exporter's name).
pub const NET_OUTPUT_BYTES_TOTAL: Metric = Metric {
    name: "net_output_bytes_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Bytes written to clients.",
};
/// Client connections closed for a protocol error.
pub const PROTOCOL_ERRORS_TOTAL: Metric = Metric {
    name: "protocol_errors_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Client requests that were not valid RESP (the connection is closed, like Redis).",
};
/// Client TLS handshakes that failed.
pub const TLS_HANDSHAKE_ERRORS_TOTAL: Metric = Metric {
    name: "tls_handshake_errors_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Client connections to tls_listen closed because the TLS handshake failed or timed out (plaintext on the TLS port, a missing or untrusted client certificate).",
};
/// Failures of backend connections, by node and [`error_kind`].
pub const BACKEND_ERRORS_TOTAL: Metric = Metric {
    name: "backend_errors_total",
    kind: Kind::Counter,
    labels: &[LABEL_NODE, LABEL_KIND],
    help:
        "Backend connection failures by node and kind (connect, auth, timeout, closed, protocol).",
};
/// Open backend connections (lanes), by node.
pub const BACKEND_CONNECTIONS: Metric = Metric {
    name: "backend_connections",
    kind: Kind::Gauge,
    labels: &[LABEL_NODE],
    help: "Backend connections (lanes) open now, by node.",
};
/// Writes answered `-NOREPLICAS`: the master ran them, but their acknowledgement by the
/// in-sync replicas could not be verified, nor a replica that may lack them recorded stale.
pub const WRITE_ACKS_REFUSED_TOTAL: Metric = Metric {
    name: "write_acks_refused_total",
    kind: Kind::Counter,
    labels: &[],
    help: "Writes answered -NOREPLICAS because the in-sync replicas' acknowledgement could not be verified and the replicas that may lack them could not be recorded stale (the topology's storage or etcd failed); their outcome is unknown to the client.",
};
/// Configuration reloads (SIGHUP, `POST /-/reload`), by result.
pub const CONFIG_RELOADS_TOTAL: Metric = Metric {
    name: "config_reloads_total",
    kind: Kind::Counter,
    labels: &[LABEL_RESULT],
    help: "Configuration reloads by result (ok, error).",
};

/// Upper bounds of the [`COMMAND_DURATION_SECONDS`] buckets, in seconds: 50 µs to 5 s, about
/// three per decade. A proxied command on loopback takes 50-200 µs.
pub const COMMAND_DURATION_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// The metrics recorded for every command, process-wide (kept and rendered by the metrics
/// module itself).
pub const PER_COMMAND: &[Metric] = &[
    COMMANDS_TOTAL,
    COMMANDS_FAILED_CALLS_TOTAL,
    COMMANDS_DURATION_SECONDS_TOTAL,
    COMMAND_DURATION_SECONDS,
];

/// The other metrics recorded from events, process-wide (kept by the Prometheus recorder).
pub const EVENTS: &[Metric] = &[
    NET_INPUT_BYTES_TOTAL,
    NET_OUTPUT_BYTES_TOTAL,
    PROTOCOL_ERRORS_TOTAL,
    TLS_HANDSHAKE_ERRORS_TOTAL,
    BACKEND_ERRORS_TOTAL,
    BACKEND_CONNECTIONS,
    CONFIG_RELOADS_TOTAL,
    WRITE_ACKS_REFUSED_TOTAL,
];

/// Every metric read from the proxy's state at each scrape.
pub const STATE: &[Metric] = &[
    BUILD_INFO,
    UPTIME_IN_SECONDS,
    CONNECTED_CLIENTS,
    PARKED_CLIENTS,
    CONNECTIONS_RECEIVED_TOTAL,
    REJECTED_CONNECTIONS_TOTAL,
    AUTH_THROTTLED_TOTAL,
    TOPOLOGY_EPOCH,
    SLOTS,
    BACKEND_UP,
    MIRROR_STATE,
    MIRROR_LAG_WRITES,
    MIRROR_APPLIED_WRITES_TOTAL,
    RESYNCS_TOTAL,
    REPLICAS_MARKED_STALE_TOTAL,
    FAILOVERS_TOTAL,
    GATE_STATE,
    MIGRATION_SLOTS_REMAINING,
    MIGRATION_KEYS_MOVED_TOTAL,
    MIGRATION_BYTES_MOVED_TOTAL,
    MIGRATION_ETA_SECONDS,
    FLEET_LEADER,
    FLEET_FROZEN,
    FLEET_MEMBERS,
    FLEET_BARRIER_WAITS_TOTAL,
    FLEET_BARRIER_WAIT_SECONDS_TOTAL,
    FLEET_BARRIER_TIMEOUTS_TOTAL,
    FLEET_ETCD_ERRORS_TOTAL,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions_and_are_unique() {
        let all: Vec<&Metric> = PER_COMMAND.iter().chain(EVENTS).chain(STATE).collect();
        let mut names: Vec<&str> = all.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len(), "a name is defined twice");
        for m in all {
            assert!(
                m.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "counters and only counters end in _total: {}",
                m.name
            );
            assert!(!m.help.is_empty() && !m.help.contains('\n'));
            assert!(
                m.labels.iter().all(|l| !l.is_empty()),
                "{}: empty label name",
                m.name
            );
        }
    }

    #[test]
    fn state_label_values_cover_every_state() {
        use redshard_config::ReplicaState;
        let replica = [
            ReplicaState::InSync,
            ReplicaState::Syncing,
            ReplicaState::Stale,
        ]
        .map(mirror_state::of);
        assert_eq!(replica, mirror_state::ALL);
    }

    #[test]
    fn buckets_increase() {
        assert!(COMMAND_DURATION_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(COMMAND_DURATION_BUCKETS.first(), Some(&0.000_05));
        assert_eq!(COMMAND_DURATION_BUCKETS.last(), Some(&5.0));
    }
}
