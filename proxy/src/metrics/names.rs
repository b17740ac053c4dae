//! Every metric name, defined once.
//!
//! A name here is the part after the namespace (`metrics_namespace`, default `redshard`):
//! [`COMMANDS_TOTAL`] is exported as `redshard_commands_total`. Names follow the Prometheus
//! conventions (base units: seconds and bytes; counters end in `_total`) and reuse
//! redis_exporter's names wherever the meaning is the same, so that with
//! `metrics_namespace = "redis"` its dashboards show the proxy as one big Redis.
//!
//! Two sources feed them:
//! - **events**, recorded by the data path through the functions of [`crate::metrics`]
//!   (commands, bytes, errors), process-wide, into the `metrics-exporter-prometheus` recorder
//!   (except [`COMMANDS_DURATION_SECONDS_TOTAL`], a fractional counter that recorder cannot
//!   hold, which [`crate::metrics`] keeps and renders itself);
//! - **state**, read from the proxy at each scrape (clients, topology, backend health), so it
//!   is exact for this proxy, never stale, and needs no wiring.
//!
//! A name belongs to exactly one source: the two parts of a scrape never repeat a series.
//! Label values come from closed sets only: command names from the command table, node
//! addresses and shard names from the topology, error kinds from [`error_kind`]. Never keys,
//! values or client addresses.

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

/// Every metric recorded from events, process-wide.
pub const EVENTS: &[Metric] = &[
    COMMANDS_TOTAL,
    COMMANDS_DURATION_SECONDS_TOTAL,
    COMMANDS_FAILED_CALLS_TOTAL,
    COMMAND_DURATION_SECONDS,
    NET_INPUT_BYTES_TOTAL,
    NET_OUTPUT_BYTES_TOTAL,
    PROTOCOL_ERRORS_TOTAL,
    TLS_HANDSHAKE_ERRORS_TOTAL,
    BACKEND_ERRORS_TOTAL,
    BACKEND_CONNECTIONS,
    CONFIG_RELOADS_TOTAL,
];

/// Every metric read from the proxy's state at each scrape.
pub const STATE: &[Metric] = &[
    BUILD_INFO,
    UPTIME_IN_SECONDS,
    CONNECTED_CLIENTS,
    CONNECTIONS_RECEIVED_TOTAL,
    REJECTED_CONNECTIONS_TOTAL,
    TOPOLOGY_EPOCH,
    SLOTS,
    BACKEND_UP,
];

/// Names reserved for the mechanisms still to come. Not exported: a metric appears once
/// something updates it.
pub mod planned {
    /// Gauge `{shard, node, state}`: 1 for a replica's mirroring state (`in_sync`, `syncing`,
    /// `broken`).
    pub const MIRROR_STATE: &str = "mirror_state";
    /// Gauge `{node}`: writes sent to the master and not yet acknowledged by the replica.
    pub const MIRROR_LAG_WRITES: &str = "mirror_lag_writes";
    /// Counter `{shard}`: failovers (a replica promoted to master).
    pub const FAILOVERS_TOTAL: &str = "failovers_total";
    /// Gauge `{from, to}`: slots still to move in the running migration.
    pub const MIGRATION_SLOTS_REMAINING: &str = "migration_slots_remaining";
    /// Counter `{from, to}`: keys moved by migrations.
    pub const MIGRATION_KEYS_MOVED_TOTAL: &str = "migration_keys_moved_total";

    /// Every name above, for what may already refer to them (the Grafana dashboard). A name
    /// moves from here to a [`Metric`](super::Metric) in [`EVENTS`](super::EVENTS) or
    /// [`STATE`](super::STATE) when something records it.
    pub const ALL: &[&str] = &[
        MIRROR_STATE,
        MIRROR_LAG_WRITES,
        FAILOVERS_TOTAL,
        MIGRATION_SLOTS_REMAINING,
        MIGRATION_KEYS_MOVED_TOTAL,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions_and_are_unique() {
        let all: Vec<&Metric> = EVENTS.iter().chain(STATE).collect();
        let mut names: Vec<&str> = all.iter().map(|m| m.name).collect();
        names.extend(planned::ALL);
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            all.len() + planned::ALL.len(),
            "a name is defined twice (or still planned once defined)"
        );
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
        }
    }

    #[test]
    fn buckets_increase() {
        assert!(COMMAND_DURATION_BUCKETS.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(COMMAND_DURATION_BUCKETS.first(), Some(&0.000_05));
        assert_eq!(COMMAND_DURATION_BUCKETS.last(), Some(&5.0));
    }
}
